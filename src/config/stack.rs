//! [`StackLayer`]: the layers a [`StackSettings`] describes, in the
//! preset's order, under one type whatever the document chose, and
//! replaced under running services when the configuration is reloaded.

use std::fmt;
use std::marker::PhantomData;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::{Acquire, Release};
use std::sync::{Arc, PoisonError, RwLock};
use std::task::{Context, Poll};

use tower::layer::util::Identity;
use tower::{Layer, Service};

use super::document::{PartName, StackSettings};
#[cfg(feature = "http")]
use super::slot::BodySlotService;
use super::slot::{Slot, SlotService};
use crate::adaptive::{AdaptiveLimit, AdaptiveLimitLayer, Throttle, ThrottleLayer};
use crate::backoff::Backoff;
use crate::bulkhead::{Bulkhead, BulkheadLayer, BulkheadSettings};
use crate::circuit_breaker::{CircuitBreaker, CircuitBreakerLayer};
use crate::error::{BoxError, ConfigError};
use crate::event::Listeners;
use crate::hedge::{Hedge, HedgeLayer};
use crate::preset::OwnReading;
use crate::rate_limit::{RateLimit, RateLimitLayer};
use crate::replay::Replay;
use crate::retry::{Retry, RetryBudget, RetryLayer};
use crate::timeout::{Timeout, TimeoutLayer};

/// The layers of one generation of a stack: a [`Slot`] for each of the
/// preset's places, holding the part the settings chose or nothing. Read
/// the current ones from [`StackLayer::parts`].
#[derive(Debug, Clone)]
pub struct StackParts<C, K> {
    /// How requests are handed on when no retry or hedge fills the repeat
    /// slot: as they would be for one attempt ([`SentOnce`]).
    replay: K,
    total_timeout: Slot<TimeoutLayer, Identity>,
    repeat: Slot<RetryLayer<C, Backoff, K>, HedgeLayer<C, K>>,
    circuit_breaker: Slot<CircuitBreakerLayer<C>, ThrottleLayer<C>>,
    rate_limit: Slot<RateLimitLayer, Identity>,
    concurrency: Slot<BulkheadLayer, AdaptiveLimitLayer<C>>,
    attempt_timeout: Slot<TimeoutLayer, Identity>,
}

/// The service a [`StackParts<C, K>`] makes of `S`.
pub type PartsService<S, C, K> =
    SlotService<Timeout<Repeated<S, C, K>>, Repeated<S, C, K>, Repeated<S, C, K>>;

/// The stack below the total timeout.
type Repeated<S, C, K> = SlotService<
    Retry<Broken<S, C>, C, Backoff, K>,
    Hedge<Broken<S, C>, C, K>,
    SentOnce<Broken<S, C>, K>,
>;

/// The stack below the repeat slot.
type Broken<S, C> =
    SlotService<CircuitBreaker<Limited<S, C>, C>, Throttle<Limited<S, C>, C>, Limited<S, C>>;

/// The stack below the breaker's slot.
type Limited<S, C> = SlotService<RateLimit<Bounded<S, C>>, Bounded<S, C>, Bounded<S, C>>;

/// The stack below the rate limit.
type Bounded<S, C> =
    SlotService<Bulkhead<Attempted<S>>, AdaptiveLimit<Attempted<S>, C>, Attempted<S>>;

/// The per-attempt timeout over the service, which reads its own clock
/// (the parts share one reading: see [`Stacked`]).
type Attempted<S> = SlotService<Timeout<OwnReading<S>>, OwnReading<S>, OwnReading<S>>;

#[cfg(feature = "http")]
/// The service a [`StackParts<C, K>`] makes of `S` for a classifier that
/// reads the end of a body (gRPC's): as [`PartsService`], but the
/// breaker's and the concurrency slots join their parts' bodies
/// ([`BodySlotService`]).
pub type BodiesPartsService<S, C, K> =
    SlotService<Timeout<BodiesRepeated<S, C, K>>, BodiesRepeated<S, C, K>, BodiesRepeated<S, C, K>>;

#[cfg(feature = "http")]
type BodiesRepeated<S, C, K> = SlotService<
    Retry<BodiesBroken<S, C>, C, Backoff, K>,
    Hedge<BodiesBroken<S, C>, C, K>,
    SentOnce<BodiesBroken<S, C>, K>,
>;

#[cfg(feature = "http")]
type BodiesBroken<S, C> = BodySlotService<
    CircuitBreaker<BodiesLimited<S, C>, C>,
    Throttle<BodiesLimited<S, C>, C>,
    BodiesLimited<S, C>,
>;

#[cfg(feature = "http")]
type BodiesLimited<S, C> =
    SlotService<RateLimit<BodiesBounded<S, C>>, BodiesBounded<S, C>, BodiesBounded<S, C>>;

#[cfg(feature = "http")]
type BodiesBounded<S, C> =
    BodySlotService<Bulkhead<Attempted<S>>, AdaptiveLimit<Attempted<S>, C>, Attempted<S>>;

/// How a stack's slots give one response type for the parts they may
/// hold: the third parameter of [`StackLayer`] and [`Stacked`].
pub trait Shape<S, C, K> {
    /// The service the parts make of `S`.
    type Service;

    /// Layers the parts over `inner`.
    fn make(parts: &StackParts<C, K>, inner: S) -> Self::Service
    where
        K: Clone;
}

/// Every part answers with the same response type, as with a classifier
/// that judges at the response head: the default shape.
#[derive(Debug, Clone, Copy, Default)]
pub struct SameResponses;

#[cfg(feature = "http")]
/// The breaker's and the concurrency slots join their parts' bodies into
/// a [`SlotBody`](super::SlotBody), as a classifier that reads the end of
/// a body needs (gRPC's: the breaker's, the throttle's and the adaptive
/// limit's bodies each wait for the trailers): [`Config::grpc_stack`](super::Config::grpc_stack).
/// No allocation.
#[derive(Debug, Clone, Copy, Default)]
pub struct JoinedBodies;

/// The parts over `inner`, the breaker's and the concurrency slots made by
/// `$join` (`layer`, or `layer_bodies`).
macro_rules! stack_up {
    ($parts:expr, $inner:expr, $join:ident) => {{
        let parts = $parts;
        let attempted = parts.attempt_timeout.layer(OwnReading::new($inner));
        let bounded = parts.concurrency.$join(attempted);
        let limited = parts.rate_limit.layer(bounded);
        let broken = parts.circuit_breaker.$join(limited);
        let repeated = match &parts.repeat {
            Slot::Empty => SlotService::Empty(SentOnce {
                inner: broken,
                replay: parts.replay.clone(),
            }),
            Slot::First(retry) => SlotService::First(retry.layer(broken)),
            Slot::Second(hedge) => SlotService::Second(hedge.layer(broken)),
        };
        parts.total_timeout.layer(repeated)
    }};
}

impl<S, C, K> Shape<S, C, K> for SameResponses {
    type Service = PartsService<S, C, K>;

    fn make(parts: &StackParts<C, K>, inner: S) -> Self::Service
    where
        K: Clone,
    {
        stack_up!(parts, inner, layer)
    }
}

#[cfg(feature = "http")]
impl<S, C, K> Shape<S, C, K> for JoinedBodies {
    type Service = BodiesPartsService<S, C, K>;

    fn make(parts: &StackParts<C, K>, inner: S) -> Self::Service
    where
        K: Clone,
    {
        stack_up!(parts, inner, layer_bodies)
    }
}

impl<C, K> StackParts<C, K> {
    /// The total timeout's slot.
    pub fn total_timeout(&self) -> &Slot<TimeoutLayer, Identity> {
        &self.total_timeout
    }

    /// The repeat slot: a retry or a hedge.
    pub fn repeat(&self) -> &Slot<RetryLayer<C, Backoff, K>, HedgeLayer<C, K>> {
        &self.repeat
    }

    /// The breaker's slot: a circuit breaker or a throttle.
    pub fn circuit_breaker(&self) -> &Slot<CircuitBreakerLayer<C>, ThrottleLayer<C>> {
        &self.circuit_breaker
    }

    /// The rate limit's slot.
    pub fn rate_limit(&self) -> &Slot<RateLimitLayer, Identity> {
        &self.rate_limit
    }

    /// The concurrency slot: a bulkhead or an adaptive limit.
    pub fn concurrency(&self) -> &Slot<BulkheadLayer, AdaptiveLimitLayer<C>> {
        &self.concurrency
    }

    /// The per-attempt timeout's slot.
    pub fn attempt_timeout(&self) -> &Slot<TimeoutLayer, Identity> {
        &self.attempt_timeout
    }
}

impl<S, C, K: Clone> Layer<S> for StackParts<C, K> {
    type Service = PartsService<S, C, K>;

    fn layer(&self, inner: S) -> Self::Service {
        SameResponses::make(self, inner)
    }
}

/// An empty repeat slot: each request is handed on as a retry or a hedge
/// would hand on its only attempt ([`Replay::only`]), so that the service
/// below takes one request type whatever fills the slot (an
/// `http::Request<B>` reaches it as `http::Request<ReplayBody<B>>` with
/// [`ReplayBodies`](crate::replay::ReplayBodies), recorded nowhere).
#[derive(Debug, Clone)]
pub struct SentOnce<S, K> {
    inner: S,
    replay: K,
}

impl<S, K, Req> Service<Req> for SentOnce<S, K>
where
    K: Replay<Req>,
    S: Service<K::Request>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    #[inline]
    fn call(&mut self, request: Req) -> S::Future {
        self.inner.call(self.replay.only(request))
    }
}

/// What a reload did to one part of one stack, in a [`Reloaded`](super::Reloaded).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Change {
    /// The part is new in the stack.
    Added,
    /// The part left the stack.
    Removed,
    /// The part's new settings were taken by the running part, which kept
    /// its state: a breaker's state and window, a throttle's counts, a
    /// bulkhead's calls in flight.
    Retuned,
    /// A new part replaced the old one; state that still makes sense came
    /// with it (a retry's or a hedge's budget keeps its balance when its
    /// `ttl` is unchanged).
    Rebuilt,
}

/// A part and what a reload did to it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PartChange {
    /// The instance whose stack it is.
    pub instance: String,
    /// The part, by the document's name for it.
    pub part: PartName,
    /// What became of it.
    pub change: Change,
}

/// One stack's parts, the generation they belong to, and what they are
/// built with: shared by the [`StackLayer`], its clones, every service
/// made from it, and (weakly) by the [`Config`](super::Config) that
/// reloads it.
pub(crate) struct Live<C, K> {
    name: String,
    classifier: C,
    replay: K,
    listeners: Listeners,
    /// Bumped after each new generation is in `current`: the only thing a
    /// call reads to know that its service is up to date.
    generation: AtomicU64,
    current: RwLock<Current<C, K>>,
}

struct Current<C, K> {
    generation: u64,
    settings: StackSettings,
    parts: Arc<StackParts<C, K>>,
}

impl<C, K> Live<C, K> {
    fn current(&self) -> (u64, Arc<StackParts<C, K>>) {
        let current = self.current.read().unwrap_or_else(PoisonError::into_inner);
        (current.generation, current.parts.clone())
    }
}

/// A reloadable stack, as the [`Config`](super::Config) holds it.
pub(crate) trait Reload: Send + Sync {
    /// The instance it was made for.
    fn instance(&self) -> &str;

    /// Builds the parts for `settings` without touching the running ones;
    /// the returned commit puts them in place.
    fn plan(&self, settings: &StackSettings) -> Result<Box<dyn Commit + '_>, ConfigError>;
}

/// A planned reload of one stack.
pub(crate) trait Commit {
    /// Retunes what is kept, puts the new parts in place, and says what
    /// changed.
    fn commit(self: Box<Self>) -> Vec<PartChange>;
}

/// A stack built from a [`StackSettings`], which a reload of its
/// [`Config`](super::Config) changes under running services: each
/// service sees the new parts at its next `poll_ready`, and calls in
/// flight finish with the parts they started with. Made by
/// [`Config::stack`](super::Config::stack) and its siblings.
///
/// Every stack of a classifier `C` and a request replay `K` has this
/// type, whatever parts its document chose, so a client's type does not
/// change with its configuration: [`Stacked`] is the service.
///
/// The current parts can be read back, for their handles:
/// `stack.parts().circuit_breaker().first().map(|breaker| breaker.handle())`.
///
/// `H`, the [`Shape`], says how the slots give one response type:
/// [`SameResponses`] (the default) or [`JoinedBodies`]
/// ([`Config::grpc_stack`](super::Config::grpc_stack)).
pub struct StackLayer<C, K, H = SameResponses> {
    live: Arc<Live<C, K>>,
    _shape: PhantomData<fn() -> H>,
}

impl<C, K, H> Clone for StackLayer<C, K, H> {
    fn clone(&self) -> Self {
        Self {
            live: self.live.clone(),
            _shape: PhantomData,
        }
    }
}

impl<C, K, H> fmt::Debug for StackLayer<C, K, H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StackLayer")
            .field("instance", &self.live.name)
            .field("generation", &self.live.generation.load(Acquire))
            .finish_non_exhaustive()
    }
}

impl<C, K, H> StackLayer<C, K, H> {
    /// The same stack, its slots giving one response type as the
    /// [`Shape`] `H2` says: [`JoinedBodies`] for a classifier of your own
    /// that reads the end of a body, as
    /// `config.stack_with(name, GrpcClassifier::new(), ReplayBodies::default())?.shaped::<JoinedBodies>()`
    /// for gRPC over hyper's client ([`Config::grpc_stack`](super::Config::grpc_stack)
    /// does this for a tonic `Channel`).
    pub fn shaped<H2>(self) -> StackLayer<C, K, H2> {
        StackLayer {
            live: self.live,
            _shape: PhantomData,
        }
    }

    /// The instance this stack was made for.
    pub fn instance(&self) -> &str {
        &self.live.name
    }

    /// The parts in use now (a reload may replace them at any time).
    pub fn parts(&self) -> Arc<StackParts<C, K>> {
        self.live.current().1
    }

    /// The settings the current parts were built from.
    pub fn settings(&self) -> StackSettings {
        let current = self
            .live
            .current
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        current.settings.clone()
    }
}

impl<C: Clone + 'static, K: Clone + 'static> StackLayer<C, K> {
    pub(crate) fn new(
        name: &str,
        settings: &StackSettings,
        classifier: C,
        replay: K,
        listeners: Listeners,
    ) -> Result<Self, ConfigError> {
        let live = Live {
            name: name.to_string(),
            classifier,
            replay: replay.clone(),
            listeners,
            generation: AtomicU64::new(0),
            current: RwLock::new(Current {
                generation: 0,
                settings: StackSettings::default(),
                parts: Arc::new(StackParts {
                    replay,
                    total_timeout: Slot::Empty,
                    repeat: Slot::Empty,
                    circuit_breaker: Slot::Empty,
                    rate_limit: Slot::Empty,
                    concurrency: Slot::Empty,
                    attempt_timeout: Slot::Empty,
                }),
            }),
        };
        let (parts, _) = live.build(settings, None)?;
        {
            let mut current = live.current.write().unwrap_or_else(PoisonError::into_inner);
            current.settings = settings.clone();
            current.parts = Arc::new(parts);
        }
        Ok(Self {
            live: Arc::new(live),
            _shape: PhantomData,
        })
    }

    /// The stack's shared state, for the [`Config`](super::Config) to
    /// reload it.
    pub(crate) fn reloadable(&self) -> std::sync::Weak<dyn Reload>
    where
        C: Send + Sync + 'static,
        K: Send + Sync + 'static,
    {
        let live: Arc<dyn Reload> = self.live.clone();
        Arc::downgrade(&live)
    }
}

/// A retune to run when a reload commits.
type Retune = Box<dyn FnOnce()>;

impl<C: Clone + 'static, K: Clone + 'static> Live<C, K> {
    /// The parts for `settings`; with `old` (the running settings and
    /// parts), the parts whose settings did not change are the old ones,
    /// and those that can take new settings in place are retuned (the
    /// returned closures, run at commit) rather than rebuilt.
    #[allow(clippy::type_complexity)]
    fn build(
        &self,
        settings: &StackSettings,
        old: Option<(&StackSettings, &StackParts<C, K>)>,
    ) -> Result<(StackParts<C, K>, Vec<(PartName, Change, Option<Retune>)>), ConfigError> {
        let name = self.name.as_str();
        let under = |part: PartName| {
            move |e: ConfigError| {
                e.under(part.as_str())
                    .under(name.to_string())
                    .under("instances")
            }
        };
        let listeners = &self.listeners;
        macro_rules! listened {
            ($builder:expr) => {
                listeners.iter().fold($builder, |builder, listener| {
                    builder.add_listener(listener.clone())
                })
            };
        }
        let old_settings = old.map(|(s, _)| s);
        let old_parts = old.map(|(_, p)| p);

        let timeout =
            |timeout: Option<std::time::Duration>, suffix: &str, part: PartName| match timeout {
                None => Ok(Slot::Empty),
                Some(timeout) => {
                    listened!(TimeoutLayer::builder().name(format!("{name}.{suffix}")))
                        .timeout(timeout)
                        .build()
                        .map(Slot::First)
                        .map_err(|e| {
                            ConfigError::new(part.as_str(), e.reason().to_string())
                                .under(name.to_string())
                                .under("instances")
                        })
                }
            };
        let total_timeout = match old {
            Some((was, parts)) if was.total_timeout == settings.total_timeout => {
                parts.total_timeout.clone()
            }
            _ => timeout(settings.total_timeout, "total", PartName::TotalTimeout)?,
        };
        let attempt_timeout = match old {
            Some((was, parts)) if was.attempt_timeout == settings.attempt_timeout => {
                parts.attempt_timeout.clone()
            }
            _ => timeout(
                settings.attempt_timeout,
                "attempt",
                PartName::AttemptTimeout,
            )?,
        };

        // A new retry or hedge keeps the old one's budget (and so its
        // balance) when the budget's `ttl` is the same, taking the new
        // share at commit.
        let old_budget: Option<RetryBudget> = old_parts.and_then(|p| match &p.repeat {
            Slot::First(retry) => retry.budget().cloned(),
            Slot::Second(hedge) => hedge.budget().cloned(),
            Slot::Empty => None,
        });
        let mut budget_retune: Option<Retune> = None;
        let mut keep_budget = |fresh: Option<&RetryBudget>| -> Option<RetryBudget> {
            let (old, fresh) = (old_budget.as_ref()?, fresh?);
            if !old.retunable(fresh) {
                return None;
            }
            let (old, fresh) = (old.clone(), fresh.clone());
            let kept = old.clone();
            budget_retune = Some(Box::new(move || {
                old.retune(&fresh);
            }));
            Some(kept)
        };
        let repeat = match (old, &settings.retry, &settings.hedge) {
            (Some((was, parts)), Some(retry), _)
                if was.retry.as_ref() == Some(retry) && parts.repeat.first().is_some() =>
            {
                parts.repeat.clone()
            }
            (Some((was, parts)), None, Some(hedge))
                if was.hedge.as_ref() == Some(hedge) && parts.repeat.second().is_some() =>
            {
                parts.repeat.clone()
            }
            (_, Some(retry), _) => {
                let make = || {
                    listened!(RetryLayer::builder().name(name))
                        .classifier(self.classifier.clone())
                        .requests(self.replay.clone())
                        .settings(retry)
                };
                let fresh = make().build().map_err(under(PartName::Retry))?;
                Slot::First(match keep_budget(fresh.budget()) {
                    Some(kept) => make()
                        .budget(kept)
                        .build()
                        .map_err(under(PartName::Retry))?,
                    None => fresh,
                })
            }
            (_, None, Some(hedge)) => {
                let make = || {
                    listened!(HedgeLayer::builder().name(name))
                        .classifier(self.classifier.clone())
                        .requests(self.replay.clone())
                        .settings(hedge)
                };
                let fresh = make().build().map_err(under(PartName::Hedge))?;
                Slot::Second(match keep_budget(fresh.budget()) {
                    Some(kept) => make()
                        .budget(kept)
                        .build()
                        .map_err(under(PartName::Hedge))?,
                    None => fresh,
                })
            }
            (_, None, None) => Slot::Empty,
        };
        let mut retunes: Vec<(PartName, Retune)> = Vec::new();
        let circuit_breaker = match (&settings.circuit_breaker, &settings.throttle) {
            (Some(breaker), _) => {
                let fresh = listened!(CircuitBreakerLayer::builder().name(name))
                    .classifier(self.classifier.clone())
                    .settings(breaker)
                    .build()
                    .map_err(under(PartName::CircuitBreaker))?;
                match old {
                    Some((was, parts)) if was.circuit_breaker.as_ref() == Some(breaker) => {
                        parts.circuit_breaker.clone()
                    }
                    Some((_, parts)) => match parts.circuit_breaker.first() {
                        Some(running) if running.retunable(&fresh) => {
                            let running = running.clone();
                            let kept = running.clone();
                            retunes.push((
                                PartName::CircuitBreaker,
                                Box::new(move || {
                                    running.retune(&fresh);
                                }),
                            ));
                            Slot::First(kept)
                        }
                        _ => Slot::First(fresh),
                    },
                    None => Slot::First(fresh),
                }
            }
            (None, Some(throttle)) => {
                let fresh = listened!(ThrottleLayer::builder().name(name))
                    .classifier(self.classifier.clone())
                    .settings(throttle)
                    .build()
                    .map_err(under(PartName::Throttle))?;
                match old {
                    Some((was, parts)) if was.throttle.as_ref() == Some(throttle) => {
                        parts.circuit_breaker.clone()
                    }
                    Some((_, parts)) => match parts.circuit_breaker.second() {
                        Some(running) if running.retunable(&fresh) => {
                            let running = running.clone();
                            let kept = running.clone();
                            retunes.push((
                                PartName::Throttle,
                                Box::new(move || {
                                    running.retune(&fresh);
                                }),
                            ));
                            Slot::Second(kept)
                        }
                        _ => Slot::Second(fresh),
                    },
                    None => Slot::Second(fresh),
                }
            }
            (None, None) => Slot::Empty,
        };

        let rate_limit = match (old, &settings.rate_limit) {
            (Some((was, parts)), Some(limit)) if was.rate_limit.as_ref() == Some(limit) => {
                parts.rate_limit.clone()
            }
            (_, Some(limit)) => Slot::First(
                listened!(RateLimitLayer::builder().name(name))
                    .settings(limit)
                    .build()
                    .map_err(under(PartName::RateLimit))?,
            ),
            (_, None) => Slot::Empty,
        };
        let concurrency = match (&settings.bulkhead, &settings.adaptive_limit) {
            (Some(bulkhead), _) => {
                let fresh = listened!(BulkheadLayer::builder().name(name))
                    .settings(bulkhead)
                    .build()
                    .map_err(under(PartName::Bulkhead))?;
                match old {
                    Some((was, parts)) if was.bulkhead.as_ref() == Some(bulkhead) => {
                        parts.concurrency.clone()
                    }
                    // Only the limit moved: the running bulkhead takes it,
                    // keeping its calls in flight and its queue.
                    Some((was, parts))
                        if parts.concurrency.first().is_some()
                            && was.bulkhead.as_ref().map(without_limit)
                                == Some(without_limit(bulkhead)) =>
                    {
                        let running = parts.concurrency.first().unwrap().handle();
                        let limit = fresh.handle().max_concurrent();
                        retunes.push((
                            PartName::Bulkhead,
                            Box::new(move || {
                                let _ = running.set_max_concurrent(limit);
                            }),
                        ));
                        parts.concurrency.clone()
                    }
                    _ => Slot::First(fresh),
                }
            }
            (None, Some(limit)) => match old {
                Some((was, parts)) if was.adaptive_limit.as_ref() == Some(limit) => {
                    parts.concurrency.clone()
                }
                _ => Slot::Second(
                    listened!(AdaptiveLimitLayer::builder().name(name))
                        .classifier(self.classifier.clone())
                        .settings(limit)
                        .build()
                        .map_err(under(PartName::AdaptiveLimit))?,
                ),
            },
            (None, None) => Slot::Empty,
        };
        let mut changes = Vec::new();
        if let Some(was) = old_settings {
            for part in PartName::ALL {
                let change = match (was.has(part), settings.has(part)) {
                    (false, false) => continue,
                    (false, true) => Change::Added,
                    (true, false) => Change::Removed,
                    (true, true) if was.same_part(settings, part) => continue,
                    (true, true) if retunes.iter().any(|(p, _)| *p == part) => Change::Retuned,
                    (true, true) => Change::Rebuilt,
                };
                let retune = retunes
                    .iter()
                    .position(|(p, _)| *p == part)
                    .map(|i| retunes.swap_remove(i).1);
                changes.push((part, change, retune));
            }
        }
        // The kept budget takes its new share when the new retry or hedge
        // goes in.
        if let Some(retune) = budget_retune {
            let part = if settings.retry.is_some() {
                PartName::Retry
            } else {
                PartName::Hedge
            };
            if let Some(entry) = changes.iter_mut().find(|(p, _, _)| *p == part) {
                entry.2 = Some(retune);
            }
        }
        Ok((
            StackParts {
                replay: self.replay.clone(),
                total_timeout,
                repeat,
                circuit_breaker,
                rate_limit,
                concurrency,
                attempt_timeout,
            },
            changes,
        ))
    }
}

/// A bulkhead's settings but its limit: what a change of the limit alone
/// leaves equal.
fn without_limit(settings: &BulkheadSettings) -> BulkheadSettings {
    let mut settings = settings.clone();
    settings.max_concurrent = None;
    settings
}

impl<C, K> Reload for Live<C, K>
where
    C: Clone + Send + Sync + 'static,
    K: Clone + Send + Sync + 'static,
{
    fn instance(&self) -> &str {
        &self.name
    }

    fn plan(&self, settings: &StackSettings) -> Result<Box<dyn Commit + '_>, ConfigError> {
        let current = self.current.read().unwrap_or_else(PoisonError::into_inner);
        let old_settings = current.settings.clone();
        let old_parts = current.parts.clone();
        drop(current);
        let (parts, changes) = self.build(settings, Some((&old_settings, &old_parts)))?;
        Ok(Box::new(Plan {
            live: self,
            settings: settings.clone(),
            parts,
            changes,
        }))
    }
}

struct Plan<'a, C, K> {
    live: &'a Live<C, K>,
    settings: StackSettings,
    parts: StackParts<C, K>,
    changes: Vec<(PartName, Change, Option<Retune>)>,
}

impl<C, K> Commit for Plan<'_, C, K> {
    fn commit(self: Box<Self>) -> Vec<PartChange> {
        let mut report = Vec::new();
        for (part, change, retune) in self.changes {
            if let Some(retune) = retune {
                retune();
            }
            report.push(PartChange {
                instance: self.live.name.clone(),
                part,
                change,
            });
        }
        if report.is_empty() {
            return report;
        }
        let mut current = self
            .live
            .current
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        current.generation += 1;
        current.settings = self.settings;
        current.parts = Arc::new(self.parts);
        // Published after the parts: a service that sees the number finds
        // the parts it stands for.
        self.live.generation.store(current.generation, Release);
        report
    }
}

/// The service a [`StackLayer`] makes: the current parts over `S`,
/// rebuilt from the new parts at the first `poll_ready` after a reload
/// (the only cost on the way of a call: one atomic load). Calls already
/// made keep the parts they started with. A clone made after a reload is
/// built from the new parts, so that a template service that is cloned
/// for each call (`svc.clone().oneshot(request)`) and never polled itself
/// costs one rebuild per clone, not a stale stack.
///
/// As in the preset, the parts share one reading of the clock per call
/// (see [`SharedReading`](crate::preset::SharedReading)): `call` lends it
/// to them, and `S` is called through an
/// [`OwnReading`](crate::preset::OwnReading), reading its own.
pub struct Stacked<S, C, K, H = SameResponses>
where
    H: Shape<S, C, K>,
{
    inner: S,
    live: Arc<Live<C, K>>,
    generation: u64,
    stack: H::Service,
}

impl<S: fmt::Debug, C, K, H: Shape<S, C, K>> fmt::Debug for Stacked<S, C, K, H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Stacked")
            .field("instance", &self.live.name)
            .field("generation", &self.generation)
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<S: Clone, C, K: Clone, H: Shape<S, C, K>> Stacked<S, C, K, H> {
    fn new(inner: S, live: Arc<Live<C, K>>) -> Self {
        let (generation, parts) = live.current();
        let stack = H::make(&parts, inner.clone());
        Self {
            inner,
            live,
            generation,
            stack,
        }
    }

    /// Whether a reload made new parts since this service was built.
    #[inline]
    fn is_stale(&self) -> bool {
        self.live.generation.load(Acquire) != self.generation
    }

    #[cold]
    fn refresh(&mut self) {
        let (generation, parts) = self.live.current();
        self.stack = H::make(&parts, self.inner.clone());
        self.generation = generation;
    }
}

impl<S, C, K, H> Clone for Stacked<S, C, K, H>
where
    S: Clone,
    K: Clone,
    H: Shape<S, C, K>,
    H::Service: Clone,
{
    fn clone(&self) -> Self {
        if self.is_stale() {
            return Self::new(self.inner.clone(), self.live.clone());
        }
        Self {
            inner: self.inner.clone(),
            live: self.live.clone(),
            generation: self.generation,
            stack: self.stack.clone(),
        }
    }
}

impl<S, C, K, H, Req> Service<Req> for Stacked<S, C, K, H>
where
    S: Clone,
    K: Clone,
    H: Shape<S, C, K>,
    H::Service: Service<Req, Error = BoxError>,
{
    type Response = <H::Service as Service<Req>>::Response;
    type Error = BoxError;
    type Future = <H::Service as Service<Req>>::Future;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        if self.is_stale() {
            self.refresh();
        }
        self.stack.poll_ready(cx)
    }

    #[inline]
    fn call(&mut self, request: Req) -> Self::Future {
        let _lent = crate::clock::lend();
        self.stack.call(request)
    }
}

impl<S: Clone, C, K: Clone, H: Shape<S, C, K>> Layer<S> for StackLayer<C, K, H> {
    type Service = Stacked<S, C, K, H>;

    fn layer(&self, inner: S) -> Self::Service {
        Stacked::new(inner, self.live.clone())
    }
}
