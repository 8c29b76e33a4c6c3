//! [`ServiceBuilderExt`]: palisade's layers on tower's `ServiceBuilder`.

use tower::ServiceBuilder;
use tower::layer::util::Stack;

use super::ResilienceLayer;
use crate::bulkhead::BulkheadLayer;
use crate::circuit_breaker::CircuitBreakerLayer;
use crate::fallback::FallbackLayer;
use crate::retry::RetryLayer;
use crate::timeout::TimeoutLayer;

mod sealed {
    pub trait Sealed {}
}

impl<L> sealed::Sealed for ServiceBuilder<L> {}

/// Adds palisade's layers to tower's `ServiceBuilder`.
///
/// The names avoid `ServiceBuilder`'s own `retry` and `timeout`, which
/// would win (inherent methods come first) and fail with a confusing error.
///
/// # Examples
///
/// ```
/// use palisade::ServiceBuilderExt;
/// use palisade::circuit_breaker::CircuitBreakerLayer;
/// use palisade::error::BoxError;
/// use palisade::timeout::TimeoutLayer;
/// use std::time::Duration;
/// use tower::{ServiceBuilder, ServiceExt, service_fn};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let svc = ServiceBuilder::new()
///     .circuit_breaker(CircuitBreakerLayer::builder().build().unwrap())
///     .time_limit(TimeoutLayer::new(Duration::from_secs(1)).unwrap())
///     .service(service_fn(|x: u32| async move { Ok::<_, BoxError>(x * 2) }));
/// assert_eq!(svc.oneshot(21).await.unwrap(), 42);
/// # }
/// ```
pub trait ServiceBuilderExt<L>: sealed::Sealed + Sized {
    /// Adds a [`CircuitBreakerLayer`].
    fn circuit_breaker<C>(
        self,
        layer: CircuitBreakerLayer<C>,
    ) -> ServiceBuilder<Stack<CircuitBreakerLayer<C>, L>>;
    /// Adds a [`RetryLayer`].
    fn retries<C, B, K>(
        self,
        layer: RetryLayer<C, B, K>,
    ) -> ServiceBuilder<Stack<RetryLayer<C, B, K>, L>>;
    /// Adds a [`TimeoutLayer`], in either mode.
    fn time_limit<M>(self, layer: TimeoutLayer<M>) -> ServiceBuilder<Stack<TimeoutLayer<M>, L>>;
    /// Adds a [`BulkheadLayer`], in either mode.
    fn bulkhead<M>(self, layer: BulkheadLayer<M>) -> ServiceBuilder<Stack<BulkheadLayer<M>, L>>;
    /// Adds a [`FallbackLayer`].
    fn fallback<H, C, K>(
        self,
        layer: FallbackLayer<H, C, K>,
    ) -> ServiceBuilder<Stack<FallbackLayer<H, C, K>, L>>;
    /// Adds the whole preset stack, with any of its parts. Here with every
    /// slot filled; the rate-limit slot takes any layer (tower's own
    /// `RateLimit` is not `Clone`, so it cannot sit under a retry; this one
    /// counts the attempts that pass):
    ///
    /// ```
    /// use palisade::{Resilience, ServiceBuilderExt};
    /// use palisade::error::BoxError;
    /// use palisade::fallback::{Failed, from_sync_fn};
    /// use std::sync::atomic::{AtomicU32, Ordering};
    /// use std::time::Duration;
    /// use tower::{ServiceBuilder, ServiceExt, service_fn};
    ///
    /// static ATTEMPTS: AtomicU32 = AtomicU32::new(0);
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), BoxError> {
    /// let preset = Resilience::builder()
    ///     .fallback(from_sync_fn(|_: Failed<u32, u32>| Ok(0)))
    ///     .total_timeout(Duration::from_secs(2))
    ///     .retry(|retry| retry)
    ///     .circuit_breaker(|breaker| breaker)
    ///     .rate_limit_slot(tower::util::MapRequestLayer::new(|x: u32| {
    ///         ATTEMPTS.fetch_add(1, Ordering::Relaxed);
    ///         x
    ///     }))
    ///     .bulkhead(|bulkhead| bulkhead.max_concurrent(8))
    ///     .attempt_timeout(Duration::from_millis(250))
    ///     .build()?;
    /// let svc = ServiceBuilder::new()
    ///     .resilience(preset)
    ///     .service(service_fn(|x: u32| async move { Ok::<_, BoxError>(x + 1) }));
    /// assert_eq!(svc.oneshot(41).await?, 42);
    /// assert_eq!(ATTEMPTS.load(Ordering::Relaxed), 1);
    /// # Ok(())
    /// # }
    /// ```
    // The preset's parts are its type: naming them is the point.
    #[allow(clippy::type_complexity)]
    fn resilience<RS, F, TT, R, CB, RL, CC, AT>(
        self,
        layer: ResilienceLayer<RS, F, TT, R, CB, RL, CC, AT>,
    ) -> ServiceBuilder<Stack<ResilienceLayer<RS, F, TT, R, CB, RL, CC, AT>, L>>;
}

impl<L> ServiceBuilderExt<L> for ServiceBuilder<L> {
    fn circuit_breaker<C>(
        self,
        layer: CircuitBreakerLayer<C>,
    ) -> ServiceBuilder<Stack<CircuitBreakerLayer<C>, L>> {
        self.layer(layer)
    }
    fn retries<C, B, K>(
        self,
        layer: RetryLayer<C, B, K>,
    ) -> ServiceBuilder<Stack<RetryLayer<C, B, K>, L>> {
        self.layer(layer)
    }
    fn time_limit<M>(self, layer: TimeoutLayer<M>) -> ServiceBuilder<Stack<TimeoutLayer<M>, L>> {
        self.layer(layer)
    }
    fn bulkhead<M>(self, layer: BulkheadLayer<M>) -> ServiceBuilder<Stack<BulkheadLayer<M>, L>> {
        self.layer(layer)
    }
    fn fallback<H, C, K>(
        self,
        layer: FallbackLayer<H, C, K>,
    ) -> ServiceBuilder<Stack<FallbackLayer<H, C, K>, L>> {
        self.layer(layer)
    }
    fn resilience<RS, F, TT, R, CB, RL, CC, AT>(
        self,
        layer: ResilienceLayer<RS, F, TT, R, CB, RL, CC, AT>,
    ) -> ServiceBuilder<Stack<ResilienceLayer<RS, F, TT, R, CB, RL, CC, AT>, L>> {
        self.layer(layer)
    }
}
