//! Putting the layers together: [`ServiceBuilderExt`] and the preset stack,
//! [`Resilience`].
//!
//! # The recommended order
//!
//! Outermost first, as `ServiceBuilder` lists layers:
//!
//! ```text
//! fallback → total timeout → retry → circuit breaker → bulkhead → per-attempt timeout → service
//! ```
//!
//! * **Fallback** outermost: it sees the final outcome, after every retry
//!   and timeout, and is the caller's last answer.
//! * **Total timeout** outside the retry: it bounds what the caller waits,
//!   backoffs included.
//! * **Retry** outside the breaker: each attempt passes the breaker, so an
//!   open breaker stops a retry at once (`CircuitOpen` is not retried by
//!   default), and every attempt is counted.
//! * **Circuit breaker** outside the bulkhead: a call the breaker rejects
//!   never takes a bulkhead place; and a `BulkheadFull` (our own overload,
//!   not the service's) is classified by the breaker like any error, so
//!   give the breaker a classifier that ignores it if that matters to you.
//! * **Bulkhead** outside the per-attempt timeout: the attempt's clock runs
//!   only once the call holds a place, so waiting in the bulkhead's queue
//!   does not eat the attempt's time (the total timeout still bounds it).
//! * **Per-attempt timeout** innermost: a hung attempt is cut off, the
//!   breaker counts it as a failure (and as slow), and the retry may try
//!   again.

use tower::layer::util::{Identity, Stack};
use tower::{Layer, ServiceBuilder};

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
    /// Adds the whole preset stack, with any of its parts.
    ///
    /// ```
    /// use palisade::{Resilience, ServiceBuilderExt};
    /// use palisade::bulkhead::BulkheadLayer;
    /// use palisade::circuit_breaker::CircuitBreakerLayer;
    /// use palisade::error::BoxError;
    /// use palisade::fallback::{Failed, FallbackLayer, from_sync_fn};
    /// use palisade::retry::RetryLayer;
    /// use palisade::timeout::TimeoutLayer;
    /// use std::time::Duration;
    /// use tower::{ServiceBuilder, ServiceExt, service_fn};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), BoxError> {
    /// let preset = Resilience::builder()
    ///     .fallback(FallbackLayer::builder(from_sync_fn(|_: Failed<u32, u32>| Ok(0))).build()?)
    ///     .total_timeout(TimeoutLayer::new(Duration::from_secs(2))?)
    ///     .retry(RetryLayer::builder().build()?)
    ///     .circuit_breaker(CircuitBreakerLayer::builder().build()?)
    ///     .bulkhead(BulkheadLayer::builder().max_concurrent(8).build()?)
    ///     .attempt_timeout(TimeoutLayer::new(Duration::from_millis(250))?)
    ///     .build();
    /// let svc = ServiceBuilder::new()
    ///     .resilience(preset)
    ///     .service(service_fn(|x: u32| async move { Ok::<_, BoxError>(x + 1) }));
    /// assert_eq!(svc.oneshot(41).await?, 42);
    /// # Ok(())
    /// # }
    /// ```
    // The preset's six parts are its type: naming them is the point.
    #[allow(clippy::type_complexity)]
    fn resilience<F, TT, R, CB, BH, AT>(
        self,
        layer: ResilienceLayer<F, TT, R, CB, BH, AT>,
    ) -> ServiceBuilder<Stack<ResilienceLayer<F, TT, R, CB, BH, AT>, L>>;
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
    fn resilience<F, TT, R, CB, BH, AT>(
        self,
        layer: ResilienceLayer<F, TT, R, CB, BH, AT>,
    ) -> ServiceBuilder<Stack<ResilienceLayer<F, TT, R, CB, BH, AT>, L>> {
        self.layer(layer)
    }
}

/// The preset stack: fallback → total timeout → retry → circuit breaker →
/// bulkhead → per-attempt timeout, each part optional, from one builder.
/// See the [module docs](self) for why that order.
///
/// # Examples
///
/// ```
/// use palisade::Resilience;
/// use palisade::bulkhead::BulkheadLayer;
/// use palisade::circuit_breaker::CircuitBreakerLayer;
/// use palisade::error::BoxError;
/// use palisade::fallback::{FallbackLayer, from_sync_fn};
/// use palisade::retry::RetryLayer;
/// use palisade::timeout::TimeoutLayer;
/// use std::time::Duration;
/// use tower::{Layer, ServiceExt, service_fn};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let stack = Resilience::builder()
///     .fallback(FallbackLayer::builder(from_sync_fn(|_| Ok("cached"))).build().unwrap())
///     .total_timeout(TimeoutLayer::new(Duration::from_secs(2)).unwrap())
///     .retry(RetryLayer::builder().max_attempts(3).build().unwrap())
///     .circuit_breaker(CircuitBreakerLayer::builder().build().unwrap())
///     .bulkhead(BulkheadLayer::builder().max_concurrent(64).build().unwrap())
///     .attempt_timeout(TimeoutLayer::new(Duration::from_millis(300)).unwrap())
///     .build();
///
/// let down = service_fn(|_: ()| async { Err::<&str, BoxError>("down".into()) });
/// assert_eq!(stack.layer(down).oneshot(()).await.unwrap(), "cached");
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct Resilience;

impl Resilience {
    /// Starts a preset with no part; add the parts you want. A missing
    /// part is tower's `Identity` layer: it costs nothing at all.
    pub fn builder() -> ResilienceBuilder {
        ResilienceBuilder {
            fallback: Identity::new(),
            total_timeout: Identity::new(),
            retry: Identity::new(),
            circuit_breaker: Identity::new(),
            bulkhead: Identity::new(),
            attempt_timeout: Identity::new(),
        }
    }
}

/// Builds a [`ResilienceLayer`]; each part is optional, and each was
/// validated by its own builder. The type records which parts are present,
/// so an absent part leaves no trace in the service.
#[derive(Debug, Clone)]
#[must_use = "a builder does nothing until `build` is called"]
pub struct ResilienceBuilder<
    F = Identity,
    TT = Identity,
    R = Identity,
    CB = Identity,
    BH = Identity,
    AT = Identity,
> {
    fallback: F,
    total_timeout: TT,
    retry: R,
    circuit_breaker: CB,
    bulkhead: BH,
    attempt_timeout: AT,
}

impl<F, TT, R, CB, BH, AT> ResilienceBuilder<F, TT, R, CB, BH, AT> {
    /// The outermost part: answers what fails in the end.
    pub fn fallback<H, C, K>(
        self,
        layer: FallbackLayer<H, C, K>,
    ) -> ResilienceBuilder<FallbackLayer<H, C, K>, TT, R, CB, BH, AT> {
        ResilienceBuilder {
            fallback: layer,
            total_timeout: self.total_timeout,
            retry: self.retry,
            circuit_breaker: self.circuit_breaker,
            bulkhead: self.bulkhead,
            attempt_timeout: self.attempt_timeout,
        }
    }

    /// Bounds the whole call, retries and backoffs included.
    pub fn total_timeout<M>(
        self,
        layer: TimeoutLayer<M>,
    ) -> ResilienceBuilder<F, TimeoutLayer<M>, R, CB, BH, AT> {
        ResilienceBuilder {
            fallback: self.fallback,
            total_timeout: layer,
            retry: self.retry,
            circuit_breaker: self.circuit_breaker,
            bulkhead: self.bulkhead,
            attempt_timeout: self.attempt_timeout,
        }
    }

    /// Retries failed attempts.
    pub fn retry<C, B, K>(
        self,
        layer: RetryLayer<C, B, K>,
    ) -> ResilienceBuilder<F, TT, RetryLayer<C, B, K>, CB, BH, AT> {
        ResilienceBuilder {
            fallback: self.fallback,
            total_timeout: self.total_timeout,
            retry: layer,
            circuit_breaker: self.circuit_breaker,
            bulkhead: self.bulkhead,
            attempt_timeout: self.attempt_timeout,
        }
    }

    /// Stops calling a failing service.
    pub fn circuit_breaker<C>(
        self,
        layer: CircuitBreakerLayer<C>,
    ) -> ResilienceBuilder<F, TT, R, CircuitBreakerLayer<C>, BH, AT> {
        ResilienceBuilder {
            fallback: self.fallback,
            total_timeout: self.total_timeout,
            retry: self.retry,
            circuit_breaker: layer,
            bulkhead: self.bulkhead,
            attempt_timeout: self.attempt_timeout,
        }
    }

    /// Bounds the calls in flight (until the response head, or with
    /// [`cover_body`](crate::bulkhead::BulkheadBuilder::cover_body) until
    /// its body ends).
    pub fn bulkhead<M>(
        self,
        layer: BulkheadLayer<M>,
    ) -> ResilienceBuilder<F, TT, R, CB, BulkheadLayer<M>, AT> {
        ResilienceBuilder {
            fallback: self.fallback,
            total_timeout: self.total_timeout,
            retry: self.retry,
            circuit_breaker: self.circuit_breaker,
            bulkhead: layer,
            attempt_timeout: self.attempt_timeout,
        }
    }

    /// Bounds each attempt.
    pub fn attempt_timeout<M>(
        self,
        layer: TimeoutLayer<M>,
    ) -> ResilienceBuilder<F, TT, R, CB, BH, TimeoutLayer<M>> {
        ResilienceBuilder {
            fallback: self.fallback,
            total_timeout: self.total_timeout,
            retry: self.retry,
            circuit_breaker: self.circuit_breaker,
            bulkhead: self.bulkhead,
            attempt_timeout: layer,
        }
    }

    /// Makes the layer.
    pub fn build(self) -> ResilienceLayer<F, TT, R, CB, BH, AT> {
        ResilienceLayer {
            fallback: self.fallback,
            total_timeout: self.total_timeout,
            retry: self.retry,
            circuit_breaker: self.circuit_breaker,
            bulkhead: self.bulkhead,
            attempt_timeout: self.attempt_timeout,
        }
    }
}

/// The preset stack as one layer; made by [`Resilience::builder`].
#[derive(Debug, Clone)]
pub struct ResilienceLayer<
    F = Identity,
    TT = Identity,
    R = Identity,
    CB = Identity,
    BH = Identity,
    AT = Identity,
> {
    fallback: F,
    total_timeout: TT,
    retry: R,
    circuit_breaker: CB,
    bulkhead: BH,
    attempt_timeout: AT,
}

impl<S, F, TT, R, CB, BH, AT> Layer<S> for ResilienceLayer<F, TT, R, CB, BH, AT>
where
    AT: Layer<S>,
    BH: Layer<AT::Service>,
    CB: Layer<BH::Service>,
    R: Layer<CB::Service>,
    TT: Layer<R::Service>,
    F: Layer<TT::Service>,
{
    type Service = F::Service;

    fn layer(&self, inner: S) -> Self::Service {
        let attempted = self.attempt_timeout.layer(inner);
        let guarded = self.bulkhead.layer(attempted);
        let broken = self.circuit_breaker.layer(guarded);
        let retried = self.retry.layer(broken);
        let timed = self.total_timeout.layer(retried);
        self.fallback.layer(timed)
    }
}
