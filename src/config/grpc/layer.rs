//! The layer that applies a service config to a channel: each call goes
//! out under its method's policy.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::mem;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use pin_project::pin_project;
use tower::{Layer, Service};

use super::parse::{HedgingPolicy, MethodName, Policy, RetryPolicy, ServiceConfig, split_path};
use crate::BoxError;
use crate::backoff::{Backoff, Jitter};
use crate::budget::RetryBudget;
use crate::classify::{Classify, GrpcClassifier, GrpcCode};
use crate::error::ConfigError;
use crate::event::Listener;
use crate::hedge::{self, HedgeLayer, HedgeMode};
use crate::replay::{PreviousAttempts, Replay, ReplaySource, TonicBodies};
use crate::retry::{self, RetryLayer};

/// How long a server's `grpc-retry-pushback-ms` may ask to wait: its
/// largest value (A6 sets no cap: the retry waits exactly what it says).
const LONGEST_PUSHBACK: Duration = Duration::from_millis(i32::MAX as u64);

/// Gives a retry's or a hedge's builder the throttling tokens (or no
/// budget: A6 throttles only when the config says so) and the listeners.
macro_rules! budget_and_listeners {
    ($builder:expr, $budget:expr, $listeners:expr) => {{
        let mut builder = match $budget {
            Some(budget) => $builder.budget(budget),
            None => $builder.no_budget(),
        };
        for listener in $listeners {
            builder = builder.add_listener(Arc::clone(listener));
        }
        builder
    }};
}

/// Applies a gRPC [`ServiceConfig`] to a channel: each call is sent under
/// the retry or hedging policy of its method, as gRPC's own clients do
/// (proposal A6).
///
/// Built with [`builder`](Self::builder) from a parsed config; see the
/// [module docs](super) for what each policy does and an example. Clones
/// share everything: the layers of every method and the throttling
/// tokens.
pub struct ServiceConfigLayer<K = TonicBodies> {
    table: Arc<Table<K>>,
}

impl<K> Clone for ServiceConfigLayer<K> {
    fn clone(&self) -> Self {
        Self {
            table: Arc::clone(&self.table),
        }
    }
}

impl<K> fmt::Debug for ServiceConfigLayer<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServiceConfigLayer")
            .field("name", &self.table.name)
            .field("method_configs", &self.table.policies.len())
            .field("throttling", &self.table.budget)
            .finish()
    }
}

/// Every method's policy, and how a call's path finds it.
struct Table<K> {
    name: Arc<str>,
    config: ServiceConfig,
    /// One per method config, in the config's order.
    policies: Vec<MethodPolicy<K>>,
    /// For a method no config names, or a config without a policy: sent
    /// once (and counted by the throttling tokens, if any).
    once: MethodPolicy<K>,
    /// Service → its own config (`None`: only some of its methods have
    /// one) and its methods'.
    services: HashMap<String, ServiceRoutes>,
    /// The config that names neither a service nor a method.
    default: Option<usize>,
    budget: Option<RetryBudget>,
}

#[derive(Default)]
struct ServiceRoutes {
    whole: Option<usize>,
    methods: HashMap<String, usize>,
}

enum MethodPolicy<K> {
    Retry(RetryLayer<GrpcClassifier, Backoff, PreviousAttempts<K>>),
    Hedge(HedgeLayer<GrpcClassifier, PreviousAttempts<K>>),
}

impl<K> Table<K> {
    /// The policy for a call to `path`: as [`ServiceConfig::method_config`]
    /// finds it, with no allocation.
    fn route(&self, path: &str) -> &MethodPolicy<K> {
        let (service, method) = split_path(path);
        let routes = service.and_then(|service| self.services.get(service));
        let index = routes
            .and_then(|routes| {
                method
                    .and_then(|method| routes.methods.get(method).copied())
                    .or(routes.whole)
            })
            .or(self.default);
        index.map_or(&self.once, |i| &self.policies[i])
    }
}

impl ServiceConfigLayer {
    /// Starts configuring the layer for `config`.
    pub fn builder(config: ServiceConfig) -> ServiceConfigBuilder {
        ServiceConfigBuilder {
            config,
            name: Arc::from("grpc"),
            listeners: Vec::new(),
            max_attempts: 5,
            replay: TonicBodies::default(),
        }
    }
}

impl<K> ServiceConfigLayer<K> {
    /// The service config the layer applies.
    pub fn config(&self) -> &ServiceConfig {
        &self.table.config
    }

    /// The throttling tokens (`retryThrottling`), shared by every method.
    pub fn throttling(&self) -> Option<&RetryBudget> {
        self.table.budget.as_ref()
    }
}

impl<S, K> Layer<S> for ServiceConfigLayer<K> {
    type Service = ServiceConfigService<S, K>;

    fn layer(&self, inner: S) -> Self::Service {
        ServiceConfigService {
            inner,
            table: Arc::clone(&self.table),
        }
    }
}

/// Configures a [`ServiceConfigLayer`]; [`build`](Self::build) validates it.
///
/// # Default
///
/// | setting | default |
/// |---|---|
/// | [`name`](Self::name) | `"grpc"`: events are named `grpc/<service>/<method>`, `grpc/<service>` or `grpc/*` after the method config's first name |
/// | [`max_attempts`](Self::max_attempts) | 5: A6's cap on `maxAttempts` |
/// | [`requests`](Self::requests) | [`TonicBodies`]: a tonic `Channel`'s requests, recorded and replayed |
#[must_use = "a builder does nothing until `build` is called"]
pub struct ServiceConfigBuilder<K = TonicBodies> {
    config: ServiceConfig,
    name: Arc<str>,
    listeners: Vec<Arc<dyn Listener>>,
    max_attempts: u32,
    replay: K,
}

impl<K> fmt::Debug for ServiceConfigBuilder<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServiceConfigBuilder")
            .field("name", &self.name)
            .field("max_attempts", &self.max_attempts)
            .field("method_configs", &self.config.method_configs.len())
            .finish_non_exhaustive()
    }
}

impl<K> ServiceConfigBuilder<K> {
    crate::event::name_and_listeners!(
        "service config's retries and hedges",
        "The start of the names the retries' and hedges' events carry."
    );

    /// The most attempts any call makes, the first included, whatever its
    /// policy's `maxAttempts` says (1 to 5). A6 caps them at 5 "without
    /// being considered a validation error", as a client's protection
    /// against a config that came from DNS; palisade's hedge cannot send
    /// more than 5.
    pub fn max_attempts(mut self, cap: u32) -> Self {
        self.max_attempts = cap;
        self
    }

    /// How requests are copied for further attempts: [`TonicBodies`] for a
    /// tonic `Channel` (the default), [`ReplayBodies`](crate::retry::ReplayBodies)
    /// for an HTTP/2 client of `http::Request`s. Each copy also carries
    /// `grpc-previous-rpc-attempts` ([`PreviousAttempts`]).
    pub fn requests<K2>(self, replay: K2) -> ServiceConfigBuilder<K2> {
        ServiceConfigBuilder {
            config: self.config,
            name: self.name,
            listeners: self.listeners,
            max_attempts: self.max_attempts,
            replay,
        }
    }

    /// Validates the settings and makes every method's layer.
    ///
    /// # Errors
    /// A cap outside 1 to 5 (parameter `max_attempts`); a policy no
    /// palisade layer would take (a config built by hand, not read by
    /// [`ServiceConfig::from_json`], may hold one), named by its place
    /// (`method_configs[2].retryPolicy.initialBackoff`); two configs that
    /// name one method.
    pub fn build(self) -> Result<ServiceConfigLayer<K>, ConfigError>
    where
        K: Clone,
    {
        crate::validate::within("max_attempts", self.max_attempts, 1..=hedge::MAX_ATTEMPTS)?;
        let budget = match &self.config.retry_throttling {
            Some(t) => Some(
                RetryBudget::tokens(t.max_tokens, t.token_ratio).map_err(|e| {
                    let key = match e.parameter() {
                        "max_tokens" => "maxTokens",
                        _ => "tokenRatio",
                    };
                    ConfigError::new(key, e.reason().to_owned()).under("retryThrottling")
                })?,
            ),
            None => None,
        };
        let mut policies = Vec::with_capacity(self.config.method_configs.len());
        let mut services: HashMap<String, ServiceRoutes> = HashMap::new();
        let mut default = None;
        for (i, method) in self.config.method_configs.iter().enumerate() {
            let at = |e: ConfigError| e.under(format!("method_configs[{i}]"));
            let name = match method.names.first() {
                Some(first) => event_name(&self.name, first),
                None => format!("{}/*", self.name),
            };
            let policy = match &method.policy {
                Some(Policy::Retry(policy)) => self
                    .retry(policy, name, budget.clone())
                    .map_err(|e| at(e.under("retryPolicy")))?,
                Some(Policy::Hedging(policy)) => self
                    .hedge(policy, name, budget.clone())
                    .map_err(|e| at(e.under("hedgingPolicy")))?,
                None => self.once(name, budget.clone())?,
            };
            policies.push(policy);
            for (j, name) in method.names.iter().enumerate() {
                let taken = match (&name.service, &name.method) {
                    (None, None) => default.replace(i),
                    (Some(service), None) => services
                        .entry(service.clone())
                        .or_default()
                        .whole
                        .replace(i),
                    (Some(service), Some(method)) => services
                        .entry(service.clone())
                        .or_default()
                        .methods
                        .insert(method.clone(), i),
                    (None, Some(_)) => {
                        return Err(at(ConfigError::new(
                            "method",
                            "a method needs its service (a name with neither is the default)",
                        )
                        .under(format!("names[{j}]"))));
                    }
                };
                if taken.is_some() {
                    return Err(at(ConfigError::new(
                        "service",
                        "named by two method configs",
                    )
                    .under(format!("names[{j}]"))));
                }
            }
        }
        let once = self.once(format!("{}/*", self.name), budget.clone())?;
        Ok(ServiceConfigLayer {
            table: Arc::new(Table {
                name: self.name,
                config: self.config,
                policies,
                once,
                services,
                default,
                budget,
            }),
        })
    }

    fn retry(
        &self,
        policy: &RetryPolicy,
        name: String,
        budget: Option<RetryBudget>,
    ) -> Result<MethodPolicy<K>, ConfigError>
    where
        K: Clone,
    {
        let backoff = if policy.max_backoff < policy.initial_backoff {
            // A6's min(initial × multiplier^n, max) is max from the start.
            Backoff::constant(policy.max_backoff)
        } else {
            Backoff::exponential(policy.initial_backoff).factor(policy.backoff_multiplier)
        }
        .max_delay(policy.max_backoff)
        .jitter(Jitter::Grpc)
        .build()
        .map_err(|e| match e.parameter() {
            // The constant backoff's only delay is `maxBackoff`.
            "delay" => ConfigError::new("maxBackoff", e.reason().to_owned()),
            _ => a6_names(e),
        })?;
        let mut builder = RetryLayer::builder()
            .name(name)
            .max_attempts(policy.max_attempts.min(self.max_attempts))
            .backoff(backoff)
            .classifier(a6_classifier(&policy.retryable_status_codes))
            .requests(PreviousAttempts::new(self.replay.clone()))
            .max_hint(LONGEST_PUSHBACK);
        builder = budget_and_listeners!(builder, budget, &self.listeners);
        builder.build().map(MethodPolicy::Retry).map_err(a6_names)
    }

    fn hedge(
        &self,
        policy: &HedgingPolicy,
        name: String,
        budget: Option<RetryBudget>,
    ) -> Result<MethodPolicy<K>, ConfigError>
    where
        K: Clone,
    {
        let mut builder = HedgeLayer::builder()
            .name(name)
            .max_attempts(policy.max_attempts.min(self.max_attempts))
            .classifier(a6_classifier(&policy.non_fatal_status_codes))
            .requests(PreviousAttempts::new(self.replay.clone()))
            .max_hint(LONGEST_PUSHBACK);
        builder = if policy.hedging_delay.is_zero() {
            builder.mode(HedgeMode::Parallel)
        } else {
            builder.delay(policy.hedging_delay)
        };
        builder = budget_and_listeners!(builder, budget, &self.listeners);
        builder.build().map(MethodPolicy::Hedge).map_err(a6_names)
    }

    /// A call sent once: a retry of one attempt, which still tells the
    /// throttling tokens how it ended.
    fn once(
        &self,
        name: String,
        budget: Option<RetryBudget>,
    ) -> Result<MethodPolicy<K>, ConfigError>
    where
        K: Clone,
    {
        let mut builder = RetryLayer::builder()
            .name(name)
            .max_attempts(1)
            .classifier(a6_classifier(&[]))
            .requests(PreviousAttempts::new(self.replay.clone()));
        builder = budget_and_listeners!(builder, budget, &self.listeners);
        builder.build().map(MethodPolicy::Retry)
    }
}

/// A layer's refusal, under the name A6 gives the value.
fn a6_names(e: ConfigError) -> ConfigError {
    let key = match e.parameter() {
        "max_attempts" => "maxAttempts",
        "delay" => "hedgingDelay",
        "factor" => "backoffMultiplier",
        "initial" => "initialBackoff",
        "max_delay" => "maxBackoff",
        _ => return e,
    };
    ConfigError::new(key, e.reason().to_owned())
}

fn event_name(prefix: &str, name: &MethodName) -> String {
    match (&name.service, &name.method) {
        (Some(service), Some(method)) => format!("{prefix}/{service}/{method}"),
        (Some(service), None) => format!("{prefix}/{service}"),
        _ => format!("{prefix}/*"),
    }
}

/// A6's view of a status: every code but OK is a failure (a success, for
/// the throttling tokens, is an OK call); only `codes` are sent again.
fn a6_classifier(codes: &[GrpcCode]) -> GrpcClassifier {
    let mut classifier = GrpcClassifier::new().not_retryable_code(GrpcCode::Unavailable);
    for code in GrpcCode::ALL {
        if code != GrpcCode::Ok {
            classifier = classifier.failure_code(code);
        }
    }
    for &code in codes {
        classifier = classifier.retryable_code(code);
    }
    classifier
}

/// A channel under a [`ServiceConfigLayer`]: each call goes out under its
/// method's policy.
pub struct ServiceConfigService<S, K = TonicBodies> {
    inner: S,
    table: Arc<Table<K>>,
}

impl<S: Clone, K> Clone for ServiceConfigService<S, K> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            table: Arc::clone(&self.table),
        }
    }
}

impl<S: fmt::Debug, K> fmt::Debug for ServiceConfigService<S, K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServiceConfigService")
            .field("inner", &self.inner)
            .field("name", &self.table.name)
            .finish()
    }
}

type Copied<K, B> = <PreviousAttempts<K> as Replay<http::Request<B>>>::Request;
type Source<K, B> = <PreviousAttempts<K> as Replay<http::Request<B>>>::Source;

impl<S, K, B> Service<http::Request<B>> for ServiceConfigService<S, K>
where
    K: Clone,
    PreviousAttempts<K>: Replay<http::Request<B>>,
    S: Service<Copied<K, B>> + Clone,
    S::Error: Into<BoxError> + 'static,
    GrpcClassifier: Classify<S::Response, S::Error>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future, S, Source<K, B>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        // The service polled ready makes the first attempt; its clone
        // waits for the next call.
        let clone = self.inner.clone();
        let ready = mem::replace(&mut self.inner, clone);
        let kind = match self.table.route(req.uri().path()) {
            MethodPolicy::Retry(layer) => Kind::Retry {
                future: layer.layer(ready).call(req),
            },
            MethodPolicy::Hedge(layer) => Kind::Hedge {
                future: layer.layer(ready).call(req),
            },
        };
        ResponseFuture { kind }
    }
}

/// The future of a [`ServiceConfigService`] call: its method's retry or
/// hedge.
#[pin_project]
pub struct ResponseFuture<F: Future, S, Src: ReplaySource> {
    #[pin]
    kind: Kind<F, S, Src>,
}

#[pin_project(project = KindProj)]
enum Kind<F: Future, S, Src: ReplaySource> {
    Retry {
        #[pin]
        future: retry::ResponseFuture<F, S, GrpcClassifier, Backoff, Src>,
    },
    Hedge {
        #[pin]
        future: hedge::ResponseFuture<F, S, GrpcClassifier, Src>,
    },
}

impl<F: Future, S, Src: ReplaySource> fmt::Debug for ResponseFuture<F, S, Src> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            Kind::Retry { future } => f.debug_tuple("ResponseFuture").field(future).finish(),
            Kind::Hedge { future } => f.debug_tuple("ResponseFuture").field(future).finish(),
        }
    }
}

impl<F, S, Src, Res, E> Future for ResponseFuture<F, S, Src>
where
    F: Future<Output = Result<Res, E>>,
    Src: ReplaySource,
    S: Service<Src::Request, Response = Res, Error = E, Future = F>,
    E: Into<BoxError> + 'static,
    GrpcClassifier: Classify<Res, E>,
{
    type Output = Result<Res, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Retry { future } => future.poll(cx),
            KindProj::Hedge { future } => future.poll(cx),
        }
    }
}
