//! The plumbing of the preset's setters: what a slot holds until
//! [`build`](super::ResilienceBuilder::build), and how a setter opens it.
//!
//! A slot holds a part: `Identity` (empty), one of palisade's builders,
//! or [`Ready`] (a layer given whole through a `*_slot` setter). A setter
//! such as [`retry`](super::ResilienceBuilder::retry) opens the slot for its
//! [`role`]: an empty slot opens as a fresh builder that already holds the
//! stack's classifier; a slot that holds a builder (as the standard stacks'
//! do) opens as that builder, with everything set so far. Nothing here is
//! needed to use the preset; it is public because the setters' signatures
//! name it.

use std::sync::Arc;
use std::time::Duration;

use tower::layer::util::Identity;

use crate::adaptive::{AdaptiveLimitBuilder, AdaptiveLimitLayer, ThrottleBuilder, ThrottleLayer};
use crate::bulkhead::{BulkheadBuilder, BulkheadLayer};
use crate::circuit_breaker::{CircuitBreakerBuilder, CircuitBreakerLayer};
use crate::error::ConfigError;
use crate::event::Listener;
use crate::fallback::FallbackBuilder;
use crate::hedge::{HedgeBuilder, HedgeLayer};
use crate::rate_limit::{RateLimitBuilder, RateLimitLayer};
use crate::retry::{RetryBuilder, RetryLayer};
use crate::timeout::{TimeoutBuilder, TimeoutLayer};

/// What a slot holds until the preset is built: its layer, or a builder
/// that is validated then.
pub trait Part {
    /// The layer the part becomes.
    type Layer;

    /// Validates the part and makes its layer.
    ///
    /// # Errors
    /// The part's own builder's errors.
    fn build(self) -> Result<Self::Layer, ConfigError>;

    /// What the part is called in a [`ConfigError`] of the preset's, if
    /// not its slot's name: `"hedge"` for a hedge in the repeat slot,
    /// whose name is `"retry"`.
    fn name(&self) -> Option<&'static str> {
        None
    }

    /// The part with `listener` registered too, if it is one of palisade's
    /// builders; a layer given whole, or an empty slot, is left as it is.
    #[must_use]
    fn listen(self, listener: &Arc<dyn Listener>) -> Self
    where
        Self: Sized,
    {
        let _ = listener;
        self
    }
}

/// A layer given whole (through a `*_slot` setter): used as it is.
#[derive(Debug, Clone)]
pub struct Ready<L>(pub L);

impl<L> Part for Ready<L> {
    type Layer = GivenWhole<L>;

    fn build(self) -> Result<GivenWhole<L>, ConfigError> {
        Ok(GivenWhole(self.0))
    }
}

/// A layer given whole to a slot (by a `*_slot` setter of the preset's
/// builder), as the preset runs it: on a clock of its own. The preset's parts share one reading of the clock per call (see
/// [`SharedReading`](super::SharedReading)); a layer of any kind may do
/// anything in its `call`, so it is not lent that reading (nor is what it
/// calls), and the parts below it share a reading of their own, taken
/// after it. Derefs to the layer.
#[derive(Debug, Clone)]
pub struct GivenWhole<L>(pub L);

impl<L> std::ops::Deref for GivenWhole<L> {
    type Target = L;

    fn deref(&self) -> &L {
        &self.0
    }
}

impl<S, L: tower::Layer<super::SharedReading<S>>> tower::Layer<S> for GivenWhole<L> {
    type Service = super::OwnReading<L::Service>;

    fn layer(&self, inner: S) -> Self::Service {
        super::OwnReading::new(self.0.layer(super::SharedReading::new(inner)))
    }
}

impl Part for Identity {
    type Layer = Identity;

    fn build(self) -> Result<Identity, ConfigError> {
        Ok(self)
    }
}

impl<C, B, K> Part for RetryBuilder<C, B, K> {
    type Layer = RetryLayer<C, B, K>;

    fn build(self) -> Result<Self::Layer, ConfigError> {
        RetryBuilder::build(self)
    }

    fn listen(self, listener: &Arc<dyn Listener>) -> Self {
        self.add_listener(Arc::clone(listener))
    }
}

impl<C, K> Part for HedgeBuilder<C, K> {
    type Layer = HedgeLayer<C, K>;

    fn build(self) -> Result<Self::Layer, ConfigError> {
        HedgeBuilder::build(self)
    }

    fn name(&self) -> Option<&'static str> {
        Some("hedge")
    }

    fn listen(self, listener: &Arc<dyn Listener>) -> Self {
        self.add_listener(Arc::clone(listener))
    }
}

impl<C> Part for CircuitBreakerBuilder<C> {
    type Layer = CircuitBreakerLayer<C>;

    fn build(self) -> Result<Self::Layer, ConfigError> {
        CircuitBreakerBuilder::build(self)
    }

    fn listen(self, listener: &Arc<dyn Listener>) -> Self {
        self.add_listener(Arc::clone(listener))
    }
}

impl<M> Part for BulkheadBuilder<M> {
    type Layer = BulkheadLayer<M>;

    fn build(self) -> Result<Self::Layer, ConfigError> {
        BulkheadBuilder::build(self)
    }

    fn listen(self, listener: &Arc<dyn Listener>) -> Self {
        self.add_listener(Arc::clone(listener))
    }
}

impl<C> Part for AdaptiveLimitBuilder<C> {
    type Layer = AdaptiveLimitLayer<C>;

    fn build(self) -> Result<Self::Layer, ConfigError> {
        AdaptiveLimitBuilder::build(self)
    }

    fn name(&self) -> Option<&'static str> {
        Some("adaptive_limit")
    }

    fn listen(self, listener: &Arc<dyn Listener>) -> Self {
        self.add_listener(Arc::clone(listener))
    }
}

impl<C> Part for ThrottleBuilder<C> {
    type Layer = ThrottleLayer<C>;

    fn build(self) -> Result<Self::Layer, ConfigError> {
        ThrottleBuilder::build(self)
    }

    fn name(&self) -> Option<&'static str> {
        Some("throttle")
    }

    fn listen(self, listener: &Arc<dyn Listener>) -> Self {
        self.add_listener(Arc::clone(listener))
    }
}

impl<X> Part for RateLimitBuilder<X> {
    type Layer = RateLimitLayer<X>;

    fn build(self) -> Result<Self::Layer, ConfigError> {
        RateLimitBuilder::build(self)
    }

    fn listen(self, listener: &Arc<dyn Listener>) -> Self {
        self.add_listener(Arc::clone(listener))
    }
}

impl<M> Part for TimeoutBuilder<M> {
    type Layer = TimeoutLayer<M>;

    fn build(self) -> Result<Self::Layer, ConfigError> {
        TimeoutBuilder::build(self)
    }

    fn listen(self, listener: &Arc<dyn Listener>) -> Self {
        self.add_listener(Arc::clone(listener))
    }
}

impl<H, C, K> Part for FallbackBuilder<H, C, K> {
    type Layer = crate::fallback::FallbackLayer<H, C, K>;

    fn build(self) -> Result<Self::Layer, ConfigError> {
        FallbackBuilder::build(self)
    }

    fn listen(self, listener: &Arc<dyn Listener>) -> Self {
        self.add_listener(Arc::clone(listener))
    }
}

/// The roles a setter opens a slot for.
pub mod role {
    /// The repeat slot, opened by [`retry`](crate::preset::ResilienceBuilder::retry).
    #[derive(Debug)]
    pub enum Retry {}
    /// The repeat slot, opened by [`hedge`](crate::preset::ResilienceBuilder::hedge).
    #[derive(Debug)]
    pub enum Hedge {}
    /// The circuit-breaker slot.
    #[derive(Debug)]
    pub enum CircuitBreaker {}
    /// The concurrency slot, opened by [`bulkhead`](crate::preset::ResilienceBuilder::bulkhead).
    #[derive(Debug)]
    pub enum Bulkhead {}
    /// The concurrency slot, opened by [`adaptive_limit`](crate::preset::ResilienceBuilder::adaptive_limit).
    #[derive(Debug)]
    pub enum AdaptiveLimit {}
    /// The circuit-breaker slot, opened by [`throttle`](crate::preset::ResilienceBuilder::throttle).
    #[derive(Debug)]
    pub enum Throttle {}
    /// The rate-limit slot, opened by [`rate_limit`](crate::preset::ResilienceBuilder::rate_limit).
    #[derive(Debug)]
    pub enum RateLimit {}
    /// The total-timeout slot.
    #[derive(Debug)]
    pub enum TotalTimeout {}
    /// The per-attempt timeout slot.
    #[derive(Debug)]
    pub enum AttemptTimeout {}
}

/// How a slot opens for a setter of role `R` in a stack whose classifier
/// is `C`: as the builder it holds, or, empty, as a fresh builder given
/// `C`.
#[diagnostic::on_unimplemented(
    message = "this slot holds a layer given whole, which `{Role}`'s setter cannot adjust",
    label = "filled with a `*_slot` setter (or left empty)",
    note = "fill the slot with its own setter (`.retry(|retry| ...)`, ...) to adjust it, or replace it whole with its `*_slot` setter"
)]
pub trait Open<Role, C> {
    /// The builder the setter's closure receives.
    type Builder;

    /// The slot's builder.
    fn open(self, classifier: &C) -> Self::Builder;
}

/// Sets a timeout builder's limit, whatever its mode: what the preset's
/// `total_timeout(duration)` and `attempt_timeout(duration)` call.
pub trait SetTimeout {
    /// The builder with its limit set to `timeout`.
    fn set_timeout(self, timeout: Duration) -> Self;
}

impl<M> SetTimeout for TimeoutBuilder<M> {
    fn set_timeout(self, timeout: Duration) -> Self {
        self.timeout(timeout)
    }
}

/// The name of the preset's total timeout: its events and its `Elapsed`
/// say `"total"`.
pub const TOTAL_TIMEOUT_NAME: &str = "total";
/// The name of the preset's per-attempt timeout.
pub const ATTEMPT_TIMEOUT_NAME: &str = "attempt";

impl<C: Clone> Open<role::Retry, C> for Identity {
    type Builder = RetryBuilder<C>;

    fn open(self, classifier: &C) -> Self::Builder {
        RetryLayer::builder().classifier(classifier.clone())
    }
}

impl<C, X, B, K> Open<role::Retry, C> for RetryBuilder<X, B, K> {
    type Builder = Self;

    fn open(self, _: &C) -> Self {
        self
    }
}

/// A hedge in the repeat slot, opened for the retry: a retry with the
/// hedge's classifier, request copying and budget.
impl<C, X, K> Open<role::Retry, C> for HedgeBuilder<X, K> {
    type Builder = RetryBuilder<X, crate::backoff::Backoff, K>;

    fn open(self, _: &C) -> Self::Builder {
        let (classifier, replay, budget) = self.into_retry_parts();
        let retry = RetryLayer::builder()
            .classifier(classifier)
            .requests(replay);
        match budget {
            Some(budget) => retry.budget(budget),
            None => retry.no_budget(),
        }
    }
}

impl<C: Clone> Open<role::Hedge, C> for Identity {
    type Builder = HedgeBuilder<C>;

    fn open(self, classifier: &C) -> Self::Builder {
        HedgeLayer::builder().classifier(classifier.clone())
    }
}

impl<C, X, K> Open<role::Hedge, C> for HedgeBuilder<X, K> {
    type Builder = Self;

    fn open(self, _: &C) -> Self {
        self
    }
}

/// A retry in the repeat slot (a standard stack's), opened for the hedge:
/// a hedge with the retry's classifier, request copying and budget; the
/// retry's other settings go with it.
impl<C, X, B, K> Open<role::Hedge, C> for RetryBuilder<X, B, K> {
    type Builder = HedgeBuilder<X, K>;

    fn open(self, _: &C) -> Self::Builder {
        let (classifier, replay, budget) = self.into_hedge_parts();
        HedgeBuilder::from_retry_parts(classifier, replay, budget)
    }
}

impl<C: Clone> Open<role::CircuitBreaker, C> for Identity {
    type Builder = CircuitBreakerBuilder<C>;

    fn open(self, classifier: &C) -> Self::Builder {
        CircuitBreakerLayer::builder().classifier(classifier.clone())
    }
}

impl<C, X> Open<role::CircuitBreaker, C> for CircuitBreakerBuilder<X> {
    type Builder = Self;

    fn open(self, _: &C) -> Self {
        self
    }
}

impl<C> Open<role::Bulkhead, C> for Identity {
    type Builder = BulkheadBuilder;

    fn open(self, _: &C) -> Self::Builder {
        BulkheadLayer::builder()
    }
}

impl<C, M> Open<role::Bulkhead, C> for BulkheadBuilder<M> {
    type Builder = Self;

    fn open(self, _: &C) -> Self {
        self
    }
}

impl<C: Clone> Open<role::AdaptiveLimit, C> for Identity {
    type Builder = AdaptiveLimitBuilder<C>;

    fn open(self, classifier: &C) -> Self::Builder {
        AdaptiveLimitLayer::builder().classifier(classifier.clone())
    }
}

impl<C, X> Open<role::AdaptiveLimit, C> for AdaptiveLimitBuilder<X> {
    type Builder = Self;

    fn open(self, _: &C) -> Self {
        self
    }
}

/// A bulkhead in the concurrency slot (a standard stack's), opened for an
/// adaptive limit: the adaptive limit takes its place.
impl<C: Clone, M> Open<role::AdaptiveLimit, C> for BulkheadBuilder<M> {
    type Builder = AdaptiveLimitBuilder<C>;

    fn open(self, classifier: &C) -> Self::Builder {
        AdaptiveLimitLayer::builder().classifier(classifier.clone())
    }
}

impl<C: Clone> Open<role::Throttle, C> for Identity {
    type Builder = ThrottleBuilder<C>;

    fn open(self, classifier: &C) -> Self::Builder {
        ThrottleLayer::builder().classifier(classifier.clone())
    }
}

impl<C, X> Open<role::Throttle, C> for ThrottleBuilder<X> {
    type Builder = Self;

    fn open(self, _: &C) -> Self {
        self
    }
}

/// A breaker in the circuit-breaker slot (a standard stack's), opened for
/// a throttle: the throttle takes its place, with the stack's classifier.
impl<C: Clone, X> Open<role::Throttle, C> for CircuitBreakerBuilder<X> {
    type Builder = ThrottleBuilder<C>;

    fn open(self, classifier: &C) -> Self::Builder {
        ThrottleLayer::builder().classifier(classifier.clone())
    }
}

impl<C> Open<role::RateLimit, C> for Identity {
    type Builder = RateLimitBuilder;

    fn open(self, _: &C) -> Self::Builder {
        RateLimitLayer::builder()
    }
}

impl<C, X> Open<role::RateLimit, C> for RateLimitBuilder<X> {
    type Builder = Self;

    fn open(self, _: &C) -> Self {
        self
    }
}

impl<C> Open<role::TotalTimeout, C> for Identity {
    type Builder = TimeoutBuilder;

    fn open(self, _: &C) -> Self::Builder {
        TimeoutLayer::builder().name(TOTAL_TIMEOUT_NAME)
    }
}

impl<C, M> Open<role::TotalTimeout, C> for TimeoutBuilder<M> {
    type Builder = Self;

    fn open(self, _: &C) -> Self {
        self
    }
}

impl<C> Open<role::AttemptTimeout, C> for Identity {
    type Builder = TimeoutBuilder;

    fn open(self, _: &C) -> Self::Builder {
        TimeoutLayer::builder().name(ATTEMPT_TIMEOUT_NAME)
    }
}

impl<C, M> Open<role::AttemptTimeout, C> for TimeoutBuilder<M> {
    type Builder = Self;

    fn open(self, _: &C) -> Self {
        self
    }
}
