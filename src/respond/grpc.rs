//! Rejections as `tonic::Status`es, for tonic clients and servers.
//!
//! See the [parent module](super) for which code each rejection becomes,
//! and why.

use std::error::Error as StdError;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use pin_project::pin_project;
use tonic::metadata::MetadataValue;
use tonic::{Code, Status};
use tower::{Layer, Service};

use super::{Answer, Failed, Rejection, rejection};
use crate::error::BoxError;

/// The metadata key of gRPC's server pushback (A6).
const PUSHBACK: &str = "grpc-retry-pushback-ms";

/// The `Status` a gRPC caller should see for a palisade rejection in
/// `err`'s chain, or `None` if there is none.
///
/// `CircuitOpen` and `Throttled` become `UNAVAILABLE`; `BulkheadFull`,
/// `ConcurrencyLimited`, `RateLimited` and `TooManyKeys`
/// `RESOURCE_EXHAUSTED`; `Elapsed` `DEADLINE_EXCEEDED`. The message is the
/// rejection's `Display`, and the rejection is the status's
/// [`source`](StdError::source), so
/// [`ErrorKind::of_dyn`](crate::error::ErrorKind::of_dyn) still finds it.
/// An open breaker that knows when it may admit calls again (not one held
/// open by hand, nor a half-open one waiting for its probes) adds
/// `grpc-retry-pushback-ms`: that wait in milliseconds, rounded up, and at
/// most `i32::MAX` (about 24 days), the most every gRPC implementation
/// reads. A rate limiter's rejection adds it the same way, from its
/// `retry_after` (none for a cost above the burst).
///
/// # Examples
///
/// ```
/// use palisade::error::{BoxError, ErrorKind};
/// use palisade::respond::to_status;
/// use palisade::timeout::TimeoutLayer;
/// use std::time::Duration;
/// use tower::{Layer, ServiceExt, service_fn};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() -> Result<(), BoxError> {
/// let slow = service_fn(|_: ()| async {
///     tokio::time::sleep(Duration::from_secs(5)).await;
///     Ok::<_, BoxError>(())
/// });
/// let svc = TimeoutLayer::new(Duration::from_secs(1))?.layer(slow);
/// let err = svc.oneshot(()).await.unwrap_err();
///
/// let status = to_status(&*err).unwrap();
/// assert_eq!(status.code(), tonic::Code::DeadlineExceeded);
/// assert_eq!(ErrorKind::of_dyn(&status), ErrorKind::Elapsed);
/// assert!(to_status(&*BoxError::from("connection reset")).is_none());
/// # Ok(())
/// # }
/// ```
pub fn to_status(err: &(dyn StdError + 'static)) -> Option<Status> {
    Some(match rejection(err)? {
        Rejection::CircuitOpen(open) => {
            let mut status = status_of(Code::Unavailable, open);
            if let Some(ms) = pushback_ms(open.retry_after()) {
                status
                    .metadata_mut()
                    .insert(PUSHBACK, MetadataValue::from(ms));
            }
            status
        }
        Rejection::BulkheadFull(full) => status_of(Code::ResourceExhausted, full),
        Rejection::TooManyKeys(refused) => status_of(Code::ResourceExhausted, refused),
        Rejection::ConcurrencyLimited(limited) => status_of(Code::ResourceExhausted, limited),
        Rejection::Throttled(throttled) => status_of(Code::Unavailable, throttled),
        Rejection::RateLimited(limited) => {
            let mut status = status_of(Code::ResourceExhausted, limited);
            if let Some(ms) = pushback_ms(limited.retry_after()) {
                status
                    .metadata_mut()
                    .insert(PUSHBACK, MetadataValue::from(ms));
            }
            status
        }
        Rejection::Elapsed(elapsed) => status_of(Code::DeadlineExceeded, elapsed),
    })
}

fn status_of<E>(code: Code, rejection: &E) -> Status
where
    E: StdError + Clone + Send + Sync + 'static,
{
    let mut status = Status::new(code, rejection.to_string());
    status.set_source(Arc::new(rejection.clone()));
    status
}

/// A breaker's wait as a pushback: none for a breaker held open by hand
/// (`Duration::MAX`: no time to give) or one that may admit a call any
/// moment (zero: a pushback of 0 says nothing a retry does not do anyway).
fn pushback_ms(wait: Duration) -> Option<u32> {
    if wait.is_zero() || wait == Duration::MAX {
        return None;
    }
    // gRPC Java reads the value as an `int`: anything larger would be
    // read as "do not retry".
    let ms = wait.as_nanos().div_ceil(1_000_000);
    Some(u32::try_from(ms).map_or(i32::MAX as u32, |ms| ms.min(i32::MAX as u32)))
}

/// Turns palisade rejections into `tonic::Status`es (see [`to_status`]),
/// for tonic clients and tonic servers; builds [`GrpcRejection`].
///
/// Every other error passes through unchanged.
///
/// # Order
///
/// Outermost: it must see the rejections of every palisade layer below.
///
/// - **Client**: over a palisade stack over a `Channel`, under tonic's
///   generated client, which turns a boxed `Status` error into that very
///   `Status` (`Status::from_error` downcasts it): the caller sees
///   `UNAVAILABLE`, `RESOURCE_EXHAUSTED` or `DEADLINE_EXCEEDED`, not
///   `UNKNOWN`.
/// - **Server**: first in `Server::builder().layer(...)`, above the palisade
///   layers: tonic's server answers a boxed `Status` error as that status
///   (its `RecoverError` middleware), where any other error would reset
///   the stream.
///
/// # Readiness
///
/// A rejection returned by the inner service's `poll_ready` is held and
/// answered by the next `call` (tonic's generated clients would otherwise
/// report it as "Service was not ready", `UNKNOWN`, and tonic's server would
/// reset the stream). Any other `poll_ready` error is returned as it is.
///
/// # Examples
///
/// A client: the timeout's `Elapsed` reaches the caller as
/// `DEADLINE_EXCEEDED`.
///
/// ```
/// use palisade::error::{BoxError, ErrorKind};
/// use palisade::respond::GrpcRejectionLayer;
/// use palisade::timeout::TimeoutLayer;
/// use std::time::Duration;
/// use tower::{ServiceBuilder, ServiceExt, service_fn};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() -> Result<(), BoxError> {
/// let slow = service_fn(|_: ()| async {
///     tokio::time::sleep(Duration::from_secs(5)).await;
///     Ok::<_, BoxError>(())
/// });
/// let svc = ServiceBuilder::new()
///     .layer(GrpcRejectionLayer::new())
///     .layer(TimeoutLayer::new(Duration::from_secs(1))?)
///     .service(slow); // a `tonic::transport::Channel`, in real life
///
/// let err = svc.oneshot(()).await.unwrap_err();
/// let status = err.downcast::<tonic::Status>().unwrap();
/// assert_eq!(status.code(), tonic::Code::DeadlineExceeded);
/// assert_eq!(ErrorKind::of_dyn(&*status), ErrorKind::Elapsed);
/// # Ok(())
/// # }
/// ```
///
/// A server that sheds load: more than 64 calls at once are answered
/// `RESOURCE_EXHAUSTED`, calls over 2 s `DEADLINE_EXCEEDED`.
///
/// ```
/// use palisade::bulkhead::BulkheadLayer;
/// use palisade::respond::GrpcRejectionLayer;
/// use palisade::timeout::TimeoutLayer;
/// use std::time::Duration;
///
/// # fn main() -> Result<(), palisade::BoxError> {
/// let (_reporter, health) = tonic_health::server::health_reporter();
/// let router = tonic::transport::Server::builder()
///     .layer(GrpcRejectionLayer::new())
///     .layer(BulkheadLayer::builder().max_concurrent(64).build()?)
///     .layer(TimeoutLayer::new(Duration::from_secs(2))?)
///     .add_service(health);
/// // router.serve(addr).await?;
/// # let _ = router;
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct GrpcRejectionLayer {
    _private: (),
}

impl GrpcRejectionLayer {
    /// The layer; it has no settings.
    pub const fn new() -> Self {
        Self { _private: () }
    }
}

impl<S> Layer<S> for GrpcRejectionLayer {
    type Service = GrpcRejection<S>;

    fn layer(&self, inner: S) -> GrpcRejection<S> {
        GrpcRejection::new(inner)
    }
}

/// A service whose palisade rejections are `tonic::Status`es; see
/// [`GrpcRejectionLayer`].
pub struct GrpcRejection<S> {
    inner: S,
    /// A rejection from the inner `poll_ready`, answered by the next call.
    refused: Option<Status>,
}

impl<S> GrpcRejection<S> {
    /// Wraps `inner`.
    pub const fn new(inner: S) -> Self {
        Self {
            inner,
            refused: None,
        }
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S: Clone> Clone for GrpcRejection<S> {
    /// A clone has not polled its inner service: it holds no refusal.
    fn clone(&self) -> Self {
        Self::new(self.inner.clone())
    }
}

impl<S: fmt::Debug> fmt::Debug for GrpcRejection<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GrpcRejection")
            .field("inner", &self.inner)
            .field("refused", &self.refused)
            .finish()
    }
}

impl<S, Req> Service<Req> for GrpcRejection<S>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        if self.refused.is_some() {
            return Poll::Ready(Ok(()));
        }
        match ready!(self.inner.poll_ready(cx)) {
            Ok(()) => Poll::Ready(Ok(())),
            Err(err) => {
                let err = err.into();
                match to_status(&*err) {
                    Some(status) => {
                        self.refused = Some(status);
                        Poll::Ready(Ok(()))
                    }
                    None => Poll::Ready(Err(err)),
                }
            }
        }
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let inner = &mut self.inner;
        ResponseFuture {
            answer: Answer::new(&mut self.refused, || inner.call(req)),
        }
    }
}

/// The future of [`GrpcRejection`].
#[pin_project]
pub struct ResponseFuture<F> {
    #[pin]
    answer: Answer<F, Status>,
}

impl<F> fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("state", &self.answer.state())
            .finish()
    }
}

impl<F, T, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
{
    type Output = Result<T, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Poll::Ready(
            ready!(self.project().answer.poll_answer(cx)).map_err(|failed| match failed {
                Failed::Inner(err) => to_status_or_same(err),
                Failed::Held(status) => Box::new(status) as BoxError,
            }),
        )
    }
}

/// Not generic: compiled once, not for every stack.
fn to_status_or_same(err: BoxError) -> BoxError {
    match to_status(&*err) {
        Some(status) => Box::new(status),
        None => err,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pushback_is_rounded_up_to_the_millisecond_and_bounded() {
        let cases = [
            (Duration::ZERO, None),
            (Duration::MAX, None),
            (Duration::from_nanos(1), Some(1)),
            (Duration::from_millis(1), Some(1)),
            (Duration::from_micros(1_001), Some(2)),
            (Duration::from_millis(1_500), Some(1_500)),
            (Duration::from_secs(86_400 * 365), Some(i32::MAX as u32)),
            (Duration::new(u64::MAX, 0), Some(i32::MAX as u32)),
        ];
        for (wait, ms) in cases {
            assert_eq!(pushback_ms(wait), ms, "{wait:?}");
        }
    }
}
