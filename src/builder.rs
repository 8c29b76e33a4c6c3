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

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use pin_project::pin_project;
use tower::layer::util::{Identity, Stack};
use tower::{Layer, Service, ServiceBuilder};

use crate::BoxError;
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
    /// Adds a [`TimeoutLayer`].
    fn time_limit(self, layer: TimeoutLayer) -> ServiceBuilder<Stack<TimeoutLayer, L>>;
    /// Adds a [`BulkheadLayer`].
    fn bulkhead(self, layer: BulkheadLayer) -> ServiceBuilder<Stack<BulkheadLayer, L>>;
    /// Adds a [`FallbackLayer`].
    fn fallback<H, C, K>(
        self,
        layer: FallbackLayer<H, C, K>,
    ) -> ServiceBuilder<Stack<FallbackLayer<H, C, K>, L>>;
    /// Adds the whole preset stack.
    fn resilience<F, R, CB>(
        self,
        layer: ResilienceLayer<F, R, CB>,
    ) -> ServiceBuilder<Stack<ResilienceLayer<F, R, CB>, L>>;
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
    fn time_limit(self, layer: TimeoutLayer) -> ServiceBuilder<Stack<TimeoutLayer, L>> {
        self.layer(layer)
    }
    fn bulkhead(self, layer: BulkheadLayer) -> ServiceBuilder<Stack<BulkheadLayer, L>> {
        self.layer(layer)
    }
    fn fallback<H, C, K>(
        self,
        layer: FallbackLayer<H, C, K>,
    ) -> ServiceBuilder<Stack<FallbackLayer<H, C, K>, L>> {
        self.layer(layer)
    }
    fn resilience<F, R, CB>(
        self,
        layer: ResilienceLayer<F, R, CB>,
    ) -> ServiceBuilder<Stack<ResilienceLayer<F, R, CB>, L>> {
        self.layer(layer)
    }
}

/// A service that may or may not be wrapped in a layer: the preset's way of
/// leaving a part out. Its error is [`BoxError`].
#[derive(Clone, Debug)]
pub enum Optional<A, B> {
    /// The layer is there.
    Layered(A),
    /// It is not: the service itself.
    Bare(B),
}

impl<A, B, Req> Service<Req> for Optional<A, B>
where
    A: Service<Req>,
    A::Error: Into<BoxError>,
    B: Service<Req, Response = A::Response>,
    B::Error: Into<BoxError>,
{
    type Response = A::Response;
    type Error = BoxError;
    type Future = OptionalFuture<A::Future, B::Future>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        match self {
            Optional::Layered(a) => a.poll_ready(cx).map_err(Into::into),
            Optional::Bare(b) => b.poll_ready(cx).map_err(Into::into),
        }
    }

    #[inline]
    fn call(&mut self, req: Req) -> Self::Future {
        match self {
            Optional::Layered(a) => OptionalFuture::Layered {
                future: a.call(req),
            },
            Optional::Bare(b) => OptionalFuture::Bare {
                future: b.call(req),
            },
        }
    }
}

/// The future of an [`Optional`] service.
#[pin_project(project = OptionalProj)]
#[derive(Debug)]
pub enum OptionalFuture<A, B> {
    /// The layered service's future.
    Layered {
        /// The future.
        #[pin]
        future: A,
    },
    /// The bare service's future.
    Bare {
        /// The future.
        #[pin]
        future: B,
    },
}

impl<A, B, T, EA, EB> Future for OptionalFuture<A, B>
where
    A: Future<Output = Result<T, EA>>,
    B: Future<Output = Result<T, EB>>,
    EA: Into<BoxError>,
    EB: Into<BoxError>,
{
    type Output = Result<T, BoxError>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            OptionalProj::Layered { future } => future.poll(cx).map_err(Into::into),
            OptionalProj::Bare { future } => future.poll(cx).map_err(Into::into),
        }
    }
}

fn optional<L: Layer<S>, S>(layer: Option<&L>, inner: S) -> Optional<L::Service, S> {
    match layer {
        Some(layer) => Optional::Layered(layer.layer(inner)),
        None => Optional::Bare(inner),
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
    /// Starts a preset with no part; add the parts you want. (A missing
    /// part's place is held by tower's `Identity` layer.)
    pub fn builder() -> ResilienceBuilder<Identity, Identity, Identity> {
        ResilienceBuilder {
            fallback: None,
            total_timeout: None,
            retry: None,
            circuit_breaker: None,
            bulkhead: None,
            attempt_timeout: None,
        }
    }
}

/// Builds a [`ResilienceLayer`]; each part is optional. Every part was
/// validated by its own builder.
#[derive(Debug, Clone)]
#[must_use = "a builder does nothing until `build` is called"]
pub struct ResilienceBuilder<F, R, CB> {
    fallback: Option<F>,
    total_timeout: Option<TimeoutLayer>,
    retry: Option<R>,
    circuit_breaker: Option<CB>,
    bulkhead: Option<BulkheadLayer>,
    attempt_timeout: Option<TimeoutLayer>,
}

impl<F, R, CB> ResilienceBuilder<F, R, CB> {
    /// The outermost part: answers what fails in the end.
    pub fn fallback<H, C, K>(
        self,
        layer: FallbackLayer<H, C, K>,
    ) -> ResilienceBuilder<FallbackLayer<H, C, K>, R, CB> {
        ResilienceBuilder {
            fallback: Some(layer),
            total_timeout: self.total_timeout,
            retry: self.retry,
            circuit_breaker: self.circuit_breaker,
            bulkhead: self.bulkhead,
            attempt_timeout: self.attempt_timeout,
        }
    }

    /// Bounds the whole call, retries and backoffs included.
    pub fn total_timeout(mut self, layer: TimeoutLayer) -> Self {
        self.total_timeout = Some(layer);
        self
    }

    /// Retries failed attempts.
    pub fn retry<C, B, K>(
        self,
        layer: RetryLayer<C, B, K>,
    ) -> ResilienceBuilder<F, RetryLayer<C, B, K>, CB> {
        ResilienceBuilder {
            fallback: self.fallback,
            total_timeout: self.total_timeout,
            retry: Some(layer),
            circuit_breaker: self.circuit_breaker,
            bulkhead: self.bulkhead,
            attempt_timeout: self.attempt_timeout,
        }
    }

    /// Stops calling a failing service.
    pub fn circuit_breaker<C>(
        self,
        layer: CircuitBreakerLayer<C>,
    ) -> ResilienceBuilder<F, R, CircuitBreakerLayer<C>> {
        ResilienceBuilder {
            fallback: self.fallback,
            total_timeout: self.total_timeout,
            retry: self.retry,
            circuit_breaker: Some(layer),
            bulkhead: self.bulkhead,
            attempt_timeout: self.attempt_timeout,
        }
    }

    /// Bounds the calls in flight.
    pub fn bulkhead(mut self, layer: BulkheadLayer) -> Self {
        self.bulkhead = Some(layer);
        self
    }

    /// Bounds each attempt.
    pub fn attempt_timeout(mut self, layer: TimeoutLayer) -> Self {
        self.attempt_timeout = Some(layer);
        self
    }

    /// Makes the layer.
    pub fn build(self) -> ResilienceLayer<F, R, CB> {
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
pub struct ResilienceLayer<F, R, CB> {
    fallback: Option<F>,
    total_timeout: Option<TimeoutLayer>,
    retry: Option<R>,
    circuit_breaker: Option<CB>,
    bulkhead: Option<BulkheadLayer>,
    attempt_timeout: Option<TimeoutLayer>,
}

/// The service the preset makes of `S`.
pub type ResilienceService<S, F, R, CB> =
    Optional<<F as Layer<TotalTimeout<S, R, CB>>>::Service, TotalTimeout<S, R, CB>>;

/// The preset's layers below the fallback.
pub type TotalTimeout<S, R, CB> =
    Optional<crate::timeout::Timeout<Retried<S, R, CB>>, Retried<S, R, CB>>;

/// The preset's layers below the total timeout.
pub type Retried<S, R, CB> = Optional<<R as Layer<Broken<S, CB>>>::Service, Broken<S, CB>>;

/// The preset's layers below the retry.
pub type Broken<S, CB> = Optional<<CB as Layer<Guarded<S>>>::Service, Guarded<S>>;

/// The preset's layers below the circuit breaker.
pub type Guarded<S> = Optional<crate::bulkhead::Bulkhead<Attempted<S>>, Attempted<S>>;

/// The preset's innermost layer.
pub type Attempted<S> = Optional<crate::timeout::Timeout<S>, S>;

impl<S, F, R, CB> Layer<S> for ResilienceLayer<F, R, CB>
where
    CB: Layer<Guarded<S>>,
    R: Layer<Broken<S, CB>>,
    F: Layer<TotalTimeout<S, R, CB>>,
{
    type Service = ResilienceService<S, F, R, CB>;

    fn layer(&self, inner: S) -> Self::Service {
        let attempted = optional(self.attempt_timeout.as_ref(), inner);
        let guarded = optional(self.bulkhead.as_ref(), attempted);
        let broken = optional(self.circuit_breaker.as_ref(), guarded);
        let retried = optional(self.retry.as_ref(), broken);
        let timed = optional(self.total_timeout.as_ref(), retried);
        optional(self.fallback.as_ref(), timed)
    }
}
