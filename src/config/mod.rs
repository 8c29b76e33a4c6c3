//! Configuration from files: every layer's settings as plain data, and
//! documents of named stacks that inherit from each other.
//!
//! Operators tune a service's resilience without a rebuild, as
//! Resilience4j's `configs` and `instances` or Polly's options do. Three
//! levels:
//!
//! * **Settings.** Every layer's builder takes a plain settings struct,
//!   [`CircuitBreakerSettings`](crate::circuit_breaker::CircuitBreakerSettings),
//!   [`RetrySettings`](crate::retry::RetrySettings) and the rest, whose
//!   fields are the builder's setters by the same names, each optional
//!   (unset: the builder's default). With feature `serde` they
//!   (de)serialise: durations as people write them (`"250ms"`, `"30s"`,
//!   `"1m30s"`; a bare number is refused, as its unit would be a guess),
//!   unknown fields refused, enums in snake case. `build()` validates them
//!   as it validates setters, so a file can set nothing a program could not.
//! * **Documents.** A [`Document`] has `defaults` and `instances`; each
//!   instance is a stack ([`StackSettings`]) in the preset's order, that
//!   starts from the defaults, or from the instance it `inherits`, and lays
//!   its own settings over it field by field.
//! * **Stacks.** [`Config::new`] resolves and validates every instance at
//!   once; an error names the path of the value refused
//!   (`instances.inventory.circuit_breaker.failure_rate_threshold`).
//!   [`Config::stack`] (or [`http_stack`](Config::http_stack),
//!   [`grpc_stack`](Config::grpc_stack), or
//!   [`stack_with`](Config::stack_with) for a classifier and request
//!   replay of your own) makes an instance's [`StackLayer`], whose type is
//!   the same whatever parts the document chose.
//! * **Reload.** [`Config::reload`] applies a new document to every stack
//!   made from the configuration while they run: all or nothing, keeping
//!   the state that still makes sense (see below).
//!
//! # Example
//!
//! ```
//! use palisade::config::{Config, Document};
//! use palisade::error::BoxError;
//! use tower::{Layer, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), BoxError> {
//! let document: Document = toml::from_str(
//!     r#"
//!     [defaults]
//!     total_timeout = "5s"
//!     attempt_timeout = "1s"
//!     retry = { max_attempts = 3, backoff = { initial = "50ms", max_delay = "1s" } }
//!     circuit_breaker = { count_window = 50, failure_rate_threshold = 0.5 }
//!
//!     [instances.inventory]
//!     bulkhead = { max_concurrent = 32 }
//!
//!     [instances.search]
//!     inherits = "inventory"
//!     circuit_breaker = { failure_rate_threshold = 0.25 }
//!     without = ["retry"]
//!     "#,
//! )?;
//! let config = Config::new(document)?;
//!
//! let search = config.settings("search").unwrap();
//! assert!(search.retry.is_none());
//! let breaker = search.circuit_breaker.as_ref().unwrap();
//! assert_eq!(breaker.count_window, Some(50)); // from the defaults
//! assert_eq!(breaker.failure_rate_threshold, Some(0.25)); // its own
//! assert_eq!(search.bulkhead.as_ref().unwrap().max_concurrent, Some(32)); // from inventory
//!
//! let stack = config.stack("search")?;
//! let svc = stack.layer(service_fn(|n: u32| async move { Ok::<_, BoxError>(n * 2) }));
//! assert_eq!(svc.oneshot(21).await?, 42);
//!
//! // A value no builder would take is refused, with its path.
//! let bad: Document = toml::from_str(
//!     "[instances.inventory]\ncircuit_breaker = { failure_rate_threshold = 1.5 }",
//! )?;
//! let error = Config::new(bad).unwrap_err();
//! assert_eq!(error.path(), "instances.inventory.circuit_breaker.failure_rate_threshold");
//! assert_eq!(
//!     error.to_string(),
//!     "invalid `instances.inventory.circuit_breaker.failure_rate_threshold`: must be a fraction in (0, 1], got 1.5",
//! );
//! # Ok(())
//! # }
//! ```
//!
//! # Reload
//!
//! ```
//! use palisade::circuit_breaker::CircuitState;
//! use palisade::config::{Change, Config, Document, PartName};
//! use palisade::error::BoxError;
//! use tower::{Layer, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), BoxError> {
//! let config = Config::new(toml::from_str::<Document>(
//!     "[instances.db]\ncircuit_breaker = { consecutive_failures = 2, wait_duration = \"10s\" }",
//! )?)?;
//! let stack = config.stack("db")?;
//! let svc = stack.layer(service_fn(|_: u32| async { Err::<u32, BoxError>("down".into()) }));
//! for _ in 0..2 {
//!     let _ = svc.clone().oneshot(1).await;
//! }
//! let breaker = stack.parts().circuit_breaker().first().unwrap().handle();
//! assert_eq!(breaker.state(), CircuitState::Open);
//!
//! // New thresholds: the running breaker takes them and stays open.
//! let reloaded = config.reload(toml::from_str(
//!     "[instances.db]\ncircuit_breaker = { consecutive_failures = 5, wait_duration = \"1m\" }",
//! )?)?;
//! assert_eq!(reloaded.changes[0].part, PartName::CircuitBreaker);
//! assert_eq!(reloaded.changes[0].change, Change::Retuned);
//! assert_eq!(breaker.state(), CircuitState::Open);
//!
//! // A document that cannot work changes nothing.
//! let refused = config.reload(toml::from_str(
//!     "[instances.db]\ncircuit_breaker = { consecutive_failures = 0 }",
//! )?);
//! assert_eq!(refused.unwrap_err().path(), "instances.db.circuit_breaker.consecutive_failures");
//! # Ok(())
//! # }
//! ```
//!
//! What a reload keeps, part by part (see [`Config::reload`]):
//!
//! | part | settings unchanged | settings changed |
//! |---|---|---|
//! | any | the same part, state and all | |
//! | circuit breaker | | retuned in place (state, window and counters kept) unless its name, seed or window (kind or size) changed, then a fresh breaker |
//! | throttle | | retuned in place (counts kept) unless its name or window changed |
//! | bulkhead | | only `max_concurrent` changed: the running bulkhead takes the limit (calls in flight and queue kept); otherwise a new bulkhead (calls in flight on the old one are not counted by the new one) |
//! | retry, hedge | | a new part that keeps the old budget and its balance when the budget's `ttl` is unchanged, taking its new `percent` and `min_per_sec`; a hedge's latency histogram starts afresh |
//! | adaptive limit, rate limit, timeouts | | a new part: a learned limit, a limiter's debt start afresh |
//!
//! Reading the settings costs a call nothing new: a stack's parts are
//! plain layers, and a service learns of a reload from one atomic load in
//! its `poll_ready` (BENCHMARKS.md, "Configuration").
//!
//! # What a document cannot say
//!
//! What is code stays code: the classifier, how requests are copied for a
//! retry, a fallback's answer, a rate limiter's cost function, a hedge's
//! delay function, `cover_body` (which changes the response's type) and
//! listeners (given to [`Config::on_event`]).
//!
//! # gRPC
//!
//! [`Config::grpc_stack`] makes an instance's stack for a tonic `Channel`
//! with gRPC's classifier: the breaker, the throttle and the adaptive
//! limit judge a stream by the status in its trailers, as
//! [`Resilience::grpc`](crate::Resilience::grpc)'s do. Their bodies, each
//! of its own type, are joined into one ([`JoinedBodies`], no
//! allocation). [`stack_with`](Config::stack_with) and
//! [`StackLayer`]'s other shape, [`SameResponses`], need a classifier that
//! judges at the response head. The service config that gRPC's own
//! clients read (proposal A6: retry and hedging policies per method,
//! retry throttling) is in `config::grpc` (feature `grpc-service-config`).

mod document;
#[cfg(feature = "grpc-service-config")]
pub mod grpc;
mod slot;
mod stack;

pub use self::document::{Document, PartName, StackSettings};
#[cfg(feature = "http")]
pub use self::slot::{BodySlotFuture, BodySlotService, SlotBody};
pub use self::slot::{Slot, SlotFuture, SlotService};
#[cfg(feature = "http")]
pub use self::stack::{BodiesPartsService, JoinedBodies};
pub use self::stack::{
    Change, PartChange, PartsService, SameResponses, SentOnce, Shape, StackLayer, StackParts,
    Stacked,
};

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};

use self::stack::Reload;

use crate::classify::DefaultClassifier;
use crate::error::ConfigError;
use crate::event::{Listener, Listeners};
use crate::replay::ByClone;

/// What a [`Config::reload`] changed: each part of each running stack
/// that was added, removed, retuned in place or rebuilt (a part whose
/// settings did not change is not listed: it is the same part, state and
/// all).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Reloaded {
    /// The parts, stack by stack in the order the stacks were made.
    pub changes: Vec<PartChange>,
}

/// A validated [`Document`]: every instance resolved over its bases; makes
/// each instance's [`StackLayer`], and [reloads](Self::reload) them all
/// from a new document. A handle: its clones are the same configuration.
#[derive(Clone)]
pub struct Config {
    shared: Arc<Mutex<State>>,
}

struct State {
    instances: BTreeMap<String, StackSettings>,
    listeners: Listeners,
    /// Every stack made and still alive, to reload.
    stacks: Vec<Weak<dyn Reload>>,
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.state();
        f.debug_struct("Config")
            .field("instances", &state.instances)
            .field(
                "stacks",
                &state.stacks.iter().filter(|s| s.strong_count() > 0).count(),
            )
            // Dropped stacks are swept when a stack is made or a reload runs.
            .field("tracked", &state.stacks.len())
            .finish_non_exhaustive()
    }
}

impl Config {
    /// Resolves every instance of `document` over its bases and validates
    /// each part as its builder's `build()` would.
    ///
    /// # Errors
    /// The first value refused, in instance-name order, with its path
    /// ([`ConfigError::path`]): an `inherits` that names no instance or
    /// goes round in a circle, two parts in one slot, `without` a part the
    /// instance sets, or a setting a builder refuses.
    pub fn new(document: Document) -> Result<Self, ConfigError> {
        Ok(Self {
            shared: Arc::new(Mutex::new(State {
                instances: document.resolve()?,
                listeners: Listeners::default(),
                stacks: Vec::new(),
            })),
        })
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.shared.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Registers `listener` on every part of every stack made from here
    /// on (and on the parts a reload builds for them): one event stream
    /// for all instances, each event carrying its part's name: the
    /// instance's, unless the settings name it, and `<instance>.total` and
    /// `<instance>.attempt` for the two timeouts.
    pub fn on_event(self, listener: impl Listener) -> Self {
        self.state().listeners.push(Arc::new(listener));
        self
    }

    /// The instances' names, in order.
    pub fn names(&self) -> Vec<String> {
        self.state().instances.keys().cloned().collect()
    }

    /// An instance's settings, resolved: what its stack is built from.
    pub fn settings(&self, instance: &str) -> Option<StackSettings> {
        self.state().instances.get(instance).cloned()
    }

    /// The instance's stack, for any request and response: every `Err`
    /// is a failure ([`DefaultClassifier`]) and requests are copied by
    /// `Clone` ([`ByClone`]) for a retry.
    ///
    /// # Errors
    /// No instance of that name (parameter `instances`).
    pub fn stack(
        &self,
        instance: &str,
    ) -> Result<StackLayer<DefaultClassifier, ByClone>, ConfigError> {
        self.stack_with(instance, DefaultClassifier, ByClone)
    }

    /// The instance's stack for an HTTP client: the
    /// [`HttpClassifier`](crate::classify::HttpClassifier) and
    /// [`ReplayBodies`](crate::replay::ReplayBodies), as in
    /// [`Resilience::http`](crate::Resilience::http). The numbers are the
    /// document's (the builders' defaults where it says nothing), not the
    /// standard stack's. A `reqwest::Client` takes its requests as they
    /// come; hyper's client gets an `http::Request<B>` as
    /// `http::Request<ReplayBody<B>>` whatever fills the repeat slot (so
    /// build it as `Client<_, ReplayBody<B>>`; see [`SentOnce`]).
    ///
    /// # Errors
    /// No instance of that name (parameter `instances`).
    #[cfg(feature = "http")]
    pub fn http_stack(
        &self,
        instance: &str,
    ) -> Result<StackLayer<crate::classify::HttpClassifier, crate::replay::ReplayBodies>, ConfigError>
    {
        self.stack_with(
            instance,
            crate::classify::HttpClassifier::new(),
            crate::replay::ReplayBodies::default(),
        )
    }

    /// The instance's stack for a gRPC client over a tonic `Channel`: the
    /// [`GrpcClassifier`](crate::classify::GrpcClassifier) (for the breaker,
    /// the throttle and the adaptive limit, the status in the trailers at
    /// the end of a stream; for the retry and the hedge, A6's rules) and
    /// [`TonicBodies`](crate::replay::TonicBodies), as in
    /// [`Resilience::grpc`](crate::Resilience::grpc), with the numbers of
    /// the document. Its breaker's and concurrency slots join their parts'
    /// bodies ([`JoinedBodies`]: no allocation). Put
    /// [`GrpcRejectionLayer`](crate::respond::GrpcRejectionLayer) around it
    /// so that its rejections reach the generated client as `Status`es:
    ///
    /// ```
    /// use palisade::config::{Config, Document};
    /// use palisade::respond::GrpcRejectionLayer;
    /// use tonic_health::pb::health_client::HealthClient;
    /// use tower::ServiceBuilder;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), palisade::error::BoxError> {
    /// let config = Config::new(toml::from_str::<Document>(
    ///     "[instances.inventory]\nretry = {}\ncircuit_breaker = {}\nadaptive_limit = {}",
    /// )?)?;
    /// let channel = tonic::transport::Endpoint::from_static("http://127.0.0.1:50051").connect_lazy();
    /// let client = HealthClient::new(
    ///     ServiceBuilder::new()
    ///         .layer(GrpcRejectionLayer::new())
    ///         .layer(config.grpc_stack("inventory")?)
    ///         .service(channel),
    /// );
    /// # let _ = client;
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    /// No instance of that name (parameter `instances`).
    #[cfg(feature = "tonic")]
    pub fn grpc_stack(
        &self,
        instance: &str,
    ) -> Result<
        StackLayer<crate::classify::GrpcClassifier, crate::replay::TonicBodies, JoinedBodies>,
        ConfigError,
    > {
        Ok(self
            .stack_with(
                instance,
                crate::classify::GrpcClassifier::new(),
                crate::replay::TonicBodies::default(),
            )?
            .shaped())
    }

    /// The instance's stack with a classifier and a request replay of
    /// your own. A classifier that judges at the response head
    /// ([`JudgesAtHead`](crate::classify::JudgesAtHead)) gives every part
    /// the same response type, which a stack whose parts a file chooses
    /// needs.
    ///
    /// # Errors
    /// No instance of that name (parameter `instances`).
    pub fn stack_with<C, K>(
        &self,
        instance: &str,
        classifier: C,
        replay: K,
    ) -> Result<StackLayer<C, K>, ConfigError>
    where
        C: Clone + Send + Sync + 'static,
        K: Clone + Send + Sync + 'static,
    {
        let mut state = self.state();
        let settings = state.instances.get(instance).ok_or_else(|| {
            ConfigError::new(
                "instances",
                format!(
                    "there is no instance {instance:?}; the document has {:?}",
                    state.instances.keys().collect::<Vec<_>>()
                ),
            )
        })?;
        let stack = StackLayer::new(
            instance,
            settings,
            classifier,
            replay,
            state.listeners.clone(),
        )?;
        state.stacks.retain(|s| s.strong_count() > 0);
        state.stacks.push(stack.reloadable());
        Ok(stack)
    }

    /// Applies a new document to every stack made from this configuration,
    /// while they run.
    ///
    /// All or nothing: the document is resolved and validated first, and
    /// every stack's new parts are built before any is put in place; an
    /// error changes nothing. In place:
    ///
    /// * a part whose settings did not change stays, state and all;
    /// * a circuit breaker whose name, seed and window are unchanged takes
    ///   its new thresholds and waits in place, keeping its state (open
    ///   stays open) and its window; a throttle whose name and window are
    ///   unchanged takes its new `k` and `min_answered`, keeping its
    ///   counts; a bulkhead whose other settings are unchanged takes its
    ///   new limit as [`BulkheadHandle::set_max_concurrent`](crate::bulkhead::BulkheadHandle::set_max_concurrent)
    ///   does, keeping its calls in flight;
    /// * any other changed part is built anew, and a new retry or hedge
    ///   keeps the old one's budget, balance included, when the budget's
    ///   `ttl` is unchanged (taking the new `percent` and `min_per_sec`);
    ///   an adaptive limit, a rate limiter or a breaker with a new window
    ///   starts afresh.
    ///
    /// Each service sees the new parts at its next `poll_ready` (one atomic
    /// load tells it); calls already made finish with the parts, and so the
    /// settings, they started with.
    ///
    /// # Errors
    /// What [`Config::new`] refuses, or a document without an instance
    /// that a running stack was made for (parameter `instances`).
    pub fn reload(&self, document: Document) -> Result<Reloaded, ConfigError> {
        let instances = document.resolve()?;
        let mut state = self.state();
        state.stacks.retain(|s| s.strong_count() > 0);
        let stacks: Vec<Arc<dyn Reload>> = state.stacks.iter().filter_map(Weak::upgrade).collect();
        for stack in &stacks {
            if !instances.contains_key(stack.instance()) {
                return Err(ConfigError::new(
                    "instances",
                    format!(
                        "{:?} is gone from the document, but a running stack was made from it; keep it until the stack is dropped",
                        stack.instance()
                    ),
                ));
            }
        }
        let mut plans = Vec::with_capacity(stacks.len());
        for stack in &stacks {
            plans.push(stack.plan(&instances[stack.instance()])?);
        }
        let mut changes = Vec::new();
        for plan in plans {
            changes.extend(plan.commit());
        }
        state.instances = instances;
        Ok(Reloaded { changes })
    }
}
