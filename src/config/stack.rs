//! [`StackLayer`]: the layers a [`StackSettings`] describes, in the
//! preset's order, under one type whatever the document chose.

use std::sync::Arc;

use tower::Layer;
use tower::layer::util::Identity;

use super::document::{PartName, StackSettings};
use super::slot::{Slot, SlotService};
use crate::adaptive::{AdaptiveLimit, AdaptiveLimitLayer, Throttle, ThrottleLayer};
use crate::backoff::Backoff;
use crate::bulkhead::{Bulkhead, BulkheadLayer};
use crate::circuit_breaker::{CircuitBreaker, CircuitBreakerLayer};
use crate::error::ConfigError;
use crate::event::Listeners;
use crate::hedge::{Hedge, HedgeLayer};
use crate::rate_limit::{RateLimit, RateLimitLayer};
use crate::retry::{Retry, RetryLayer};
use crate::timeout::{Timeout, TimeoutLayer};

/// A stack built from a [`StackSettings`]: a [`Slot`] for each of the
/// preset's places, holding the part the settings chose or nothing.
/// Made by [`Config::stack`](super::Config::stack) and its siblings.
///
/// Every stack of a classifier `C` and a request replay `K` has this
/// type, whatever parts its document chose, so a client's type does not
/// change with its configuration: [`Stacked`] names the service.
///
/// Each slot's layer can be read back, for its handle:
/// `stack.circuit_breaker().first().map(|breaker| breaker.handle())`.
#[derive(Debug, Clone)]
pub struct StackLayer<C, K> {
    total_timeout: Slot<TimeoutLayer, Identity>,
    repeat: Slot<RetryLayer<C, Backoff, K>, HedgeLayer<C, K>>,
    circuit_breaker: Slot<CircuitBreakerLayer<C>, ThrottleLayer<C>>,
    rate_limit: Slot<RateLimitLayer, Identity>,
    concurrency: Slot<BulkheadLayer, AdaptiveLimitLayer<C>>,
    attempt_timeout: Slot<TimeoutLayer, Identity>,
}

/// The service a [`StackLayer<C, K>`] makes of `S`.
pub type Stacked<S, C, K> =
    SlotService<Timeout<Repeated<S, C, K>>, Repeated<S, C, K>, Repeated<S, C, K>>;

/// The stack below the total timeout.
type Repeated<S, C, K> =
    SlotService<Retry<Broken<S, C>, C, Backoff, K>, Hedge<Broken<S, C>, C, K>, Broken<S, C>>;

/// The stack below the repeat slot.
type Broken<S, C> =
    SlotService<CircuitBreaker<Limited<S, C>, C>, Throttle<Limited<S, C>, C>, Limited<S, C>>;

/// The stack below the breaker's slot.
type Limited<S, C> = SlotService<RateLimit<Bounded<S, C>>, Bounded<S, C>, Bounded<S, C>>;

/// The stack below the rate limit.
type Bounded<S, C> =
    SlotService<Bulkhead<Attempted<S>>, AdaptiveLimit<Attempted<S>, C>, Attempted<S>>;

/// The per-attempt timeout over the service.
type Attempted<S> = SlotService<Timeout<S>, S, S>;

impl<C, K> StackLayer<C, K> {
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

impl<C: Clone, K: Clone> StackLayer<C, K> {
    /// Builds the parts of `settings` (already resolved and validated by
    /// the [`Config`](super::Config)), each named after the instance
    /// unless its settings name it, the timeouts `<name>.total` and
    /// `<name>.attempt`.
    pub(crate) fn build(
        name: &str,
        settings: &StackSettings,
        classifier: C,
        replay: K,
        listeners: &Listeners,
    ) -> Result<Self, ConfigError> {
        let under = |part: PartName| {
            move |e: ConfigError| {
                e.under(part.as_str())
                    .under(name.to_string())
                    .under("instances")
            }
        };
        let named: Arc<str> = Arc::from(name);
        macro_rules! listened {
            ($builder:expr) => {
                listeners.iter().fold($builder, |builder, listener| {
                    builder.add_listener(listener.clone())
                })
            };
        }
        let timeout = |timeout, suffix: &str, part: PartName| match timeout {
            None => Ok(Slot::Empty),
            Some(timeout) => listened!(TimeoutLayer::builder().name(format!("{name}.{suffix}")))
                .timeout(timeout)
                .build()
                .map(Slot::First)
                .map_err(|e| ConfigError::new(part.as_str(), e.reason().to_string())),
        };
        let total_timeout = timeout(settings.total_timeout, "total", PartName::TotalTimeout)
            .map_err(|e| e.under(name.to_string()).under("instances"))?;
        let attempt_timeout = timeout(
            settings.attempt_timeout,
            "attempt",
            PartName::AttemptTimeout,
        )
        .map_err(|e| e.under(name.to_string()).under("instances"))?;
        let repeat = match (&settings.retry, &settings.hedge) {
            (Some(retry), _) => Slot::First(
                listened!(RetryLayer::builder().name(named.clone()))
                    .classifier(classifier.clone())
                    .requests(replay.clone())
                    .settings(retry)
                    .build()
                    .map_err(under(PartName::Retry))?,
            ),
            (None, Some(hedge)) => Slot::Second(
                listened!(HedgeLayer::builder().name(named.clone()))
                    .classifier(classifier.clone())
                    .requests(replay)
                    .settings(hedge)
                    .build()
                    .map_err(under(PartName::Hedge))?,
            ),
            (None, None) => Slot::Empty,
        };
        let circuit_breaker = match (&settings.circuit_breaker, &settings.throttle) {
            (Some(breaker), _) => Slot::First(
                listened!(CircuitBreakerLayer::builder().name(named.clone()))
                    .classifier(classifier.clone())
                    .settings(breaker)
                    .build()
                    .map_err(under(PartName::CircuitBreaker))?,
            ),
            (None, Some(throttle)) => Slot::Second(
                listened!(ThrottleLayer::builder().name(named.clone()))
                    .classifier(classifier.clone())
                    .settings(throttle)
                    .build()
                    .map_err(under(PartName::Throttle))?,
            ),
            (None, None) => Slot::Empty,
        };
        let rate_limit = match &settings.rate_limit {
            Some(limit) => Slot::First(
                listened!(RateLimitLayer::builder().name(named.clone()))
                    .settings(limit)
                    .build()
                    .map_err(under(PartName::RateLimit))?,
            ),
            None => Slot::Empty,
        };
        let concurrency = match (&settings.bulkhead, &settings.adaptive_limit) {
            (Some(bulkhead), _) => Slot::First(
                listened!(BulkheadLayer::builder().name(named.clone()))
                    .settings(bulkhead)
                    .build()
                    .map_err(under(PartName::Bulkhead))?,
            ),
            (None, Some(limit)) => Slot::Second(
                listened!(AdaptiveLimitLayer::builder().name(named.clone()))
                    .classifier(classifier)
                    .settings(limit)
                    .build()
                    .map_err(under(PartName::AdaptiveLimit))?,
            ),
            (None, None) => Slot::Empty,
        };
        Ok(StackLayer {
            total_timeout,
            repeat,
            circuit_breaker,
            rate_limit,
            concurrency,
            attempt_timeout,
        })
    }
}

impl<S, C, K: Clone> Layer<S> for StackLayer<C, K> {
    type Service = Stacked<S, C, K>;

    fn layer(&self, inner: S) -> Self::Service {
        let attempted = self.attempt_timeout.layer(inner);
        let bounded = self.concurrency.layer(attempted);
        let limited = self.rate_limit.layer(bounded);
        let broken = self.circuit_breaker.layer(limited);
        let repeated = self.repeat.layer(broken);
        self.total_timeout.layer(repeated)
    }
}
