//! Rejections as HTTP responses, for servers (axum, hyper, tower-http).
//!
//! See the [parent module](super) for which status each rejection
//! becomes, and why.

use std::convert::Infallible;
use std::error::Error as StdError;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use http::{HeaderValue, Response, StatusCode, header::RETRY_AFTER};
use pin_project::pin_project;
use tower::{Layer, Service};

use super::{Answer, Failed, Rejection, rejection};
use crate::error::{BoxError, ConfigError};

/// How long a client is asked to wait after a full bulkhead, unless the
/// layer says otherwise: 1 s.
pub const DEFAULT_RETRY_AFTER_WHEN_BUSY: Duration = Duration::from_secs(1);

/// The longest [`retry_after_when_busy`](HttpRejectionBuilder::retry_after_when_busy):
/// a day. A bulkhead frees a place when a call ends; asking clients to stay
/// away longer than that is a mistake, not a setting.
const LONGEST_RETRY_AFTER_WHEN_BUSY: Duration = Duration::from_secs(86_400);

/// The response a client should get for a palisade rejection in `err`'s
/// chain, or `None` if there is none; its body is `B::default()`.
///
/// - `CircuitOpen`: 503 Service Unavailable, with `Retry-After` set to the
///   breaker's wait in whole seconds, rounded up and at least 1 (a
///   half-open breaker whose probes are all out may admit a call any
///   moment: 1 s); without `Retry-After` when the breaker is held open by
///   hand, since no one knows for how long.
/// - `BulkheadFull`: 503, with `Retry-After: 1`
///   ([`DEFAULT_RETRY_AFTER_WHEN_BUSY`]; [`HttpRejectionLayer`] can be told
///   otherwise).
/// - `RateLimited`: 429 Too Many Requests, with `Retry-After` set to the
///   limiter's `retry_after` in whole seconds, rounded up and at least 1;
///   without it for a call whose cost is above the limiter's burst, which
///   no wait lets through.
/// - `TooManyKeys`: 503, with `Retry-After` as for a full bulkhead: the
///   keyed layer has no room for the request's key now, and may have once
///   an instance goes.
/// - `ConcurrencyLimited` and `Throttled`: 503, with `Retry-After` as for a
///   full bulkhead (neither knows when it will admit the call).
/// - `Elapsed`: 504 Gateway Timeout.
///
/// For a server whose errors go through a `HandleErrorLayer` of your own:
/// call this first, and handle what it returns `None` for as you like.
///
/// # Examples
///
/// ```
/// use palisade::error::BoxError;
/// use palisade::respond::to_response;
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
/// let res = to_response::<String>(&*err).unwrap();
/// assert_eq!(res.status(), http::StatusCode::GATEWAY_TIMEOUT);
/// assert!(to_response::<String>(&*BoxError::from("disk full")).is_none());
/// # Ok(())
/// # }
/// ```
pub fn to_response<B: Default>(err: &(dyn StdError + 'static)) -> Option<Response<B>> {
    response(err, DEFAULT_RETRY_AFTER_WHEN_BUSY)
}

fn response<B: Default>(
    err: &(dyn StdError + 'static),
    when_busy: Duration,
) -> Option<Response<B>> {
    let (status, retry_after) = match rejection(err)? {
        Rejection::CircuitOpen(open) => (
            StatusCode::SERVICE_UNAVAILABLE,
            breaker_retry_after(open.retry_after()),
        ),
        Rejection::BulkheadFull(_)
        | Rejection::TooManyKeys(_)
        | Rejection::ConcurrencyLimited(_)
        | Rejection::Throttled(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            (!when_busy.is_zero()).then(|| whole_seconds(when_busy)),
        ),
        Rejection::RateLimited(limited) => (
            StatusCode::TOO_MANY_REQUESTS,
            breaker_retry_after(limited.retry_after()),
        ),
        Rejection::Elapsed(_) => (StatusCode::GATEWAY_TIMEOUT, None),
    };
    let mut res = Response::new(B::default());
    *res.status_mut() = status;
    if let Some(secs) = retry_after {
        res.headers_mut()
            .insert(RETRY_AFTER, HeaderValue::from(secs));
    }
    Some(res)
}

/// A breaker's or a limiter's wait as `Retry-After` seconds: none when it
/// has no end (a breaker held open by hand, a cost above the burst).
fn breaker_retry_after(wait: Duration) -> Option<u64> {
    (wait != Duration::MAX).then(|| whole_seconds(wait))
}

/// Whole seconds, rounded up, at least 1: a client told less than it must
/// wait comes back too early, and `Retry-After: 0` invites it back at once.
fn whole_seconds(wait: Duration) -> u64 {
    let secs = wait
        .as_secs()
        .saturating_add(u64::from(wait.subsec_nanos() > 0));
    secs.max(1)
}

/// The answer to an error that is not a rejection: a bare 500, which says
/// nothing of the error to the client.
fn internal_error<B: Default>() -> Response<B> {
    let mut res = Response::new(B::default());
    *res.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
    res
}

/// Answers palisade rejections with HTTP responses (see [`to_response`]),
/// and any other error with a bare 500, for servers; builds
/// [`HttpRejection`].
///
/// Its service never fails (its `Error` is [`Infallible`]), so a palisade
/// stack under it drops straight into axum's `Router::layer` or
/// `Router::route_layer`. To handle other errors differently, use axum's
/// `HandleErrorLayer` with a function of your own that calls
/// [`to_response`] first, instead of this layer.
///
/// # Default
///
/// `Retry-After: 1` after a full bulkhead
/// ([`retry_after_when_busy`](HttpRejectionBuilder::retry_after_when_busy)).
///
/// # Order
///
/// Outermost, above every palisade layer whose rejections it answers.
///
/// # Readiness
///
/// An error from the inner service's `poll_ready` is held and answered by
/// the next `call`: `poll_ready` is ready as soon as the inner service is
/// ready or has failed.
///
/// # Examples
///
/// An axum router that answers calls over 2 s with 504, and more than 64
/// at once with 503 and `Retry-After: 1`.
///
/// ```
/// use axum::{Router, routing::get};
/// use palisade::bulkhead::BulkheadLayer;
/// use palisade::respond::HttpRejectionLayer;
/// use palisade::timeout::TimeoutLayer;
/// use std::time::Duration;
/// use tower::{ServiceBuilder, ServiceExt};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() -> Result<(), palisade::BoxError> {
/// let app = Router::new()
///     .route("/slow", get(|| async {
///         tokio::time::sleep(Duration::from_secs(5)).await;
///         "done"
///     }))
///     .layer(
///         ServiceBuilder::new()
///             .layer(HttpRejectionLayer::new())
///             .layer(BulkheadLayer::builder().max_concurrent(64).build()?)
///             .layer(TimeoutLayer::new(Duration::from_secs(2))?),
///     );
///
/// let req = http::Request::get("/slow").body(axum::body::Body::empty())?;
/// let res = app.oneshot(req).await?;
/// assert_eq!(res.status(), http::StatusCode::GATEWAY_TIMEOUT);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, Copy)]
pub struct HttpRejectionLayer {
    retry_after_when_busy: Duration,
}

impl Default for HttpRejectionLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl HttpRejectionLayer {
    /// The layer with its defaults.
    pub const fn new() -> Self {
        Self {
            retry_after_when_busy: DEFAULT_RETRY_AFTER_WHEN_BUSY,
        }
    }

    /// A builder, to change the defaults.
    pub const fn builder() -> HttpRejectionBuilder {
        HttpRejectionBuilder {
            retry_after_when_busy: DEFAULT_RETRY_AFTER_WHEN_BUSY,
        }
    }

    /// [`to_response`] with this layer's settings.
    pub fn to_response<B: Default>(&self, err: &(dyn StdError + 'static)) -> Option<Response<B>> {
        response(err, self.retry_after_when_busy)
    }
}

impl<S> Layer<S> for HttpRejectionLayer {
    type Service = HttpRejection<S>;

    fn layer(&self, inner: S) -> HttpRejection<S> {
        HttpRejection {
            inner,
            retry_after_when_busy: self.retry_after_when_busy,
            refused: None,
        }
    }
}

/// Builds an [`HttpRejectionLayer`].
#[derive(Debug, Clone, Copy)]
pub struct HttpRejectionBuilder {
    retry_after_when_busy: Duration,
}

impl Default for HttpRejectionBuilder {
    fn default() -> Self {
        HttpRejectionLayer::builder()
    }
}

impl HttpRejectionBuilder {
    /// How long a client is asked to wait after a full bulkhead: the
    /// `Retry-After` of its 503, in whole seconds, rounded up. Zero sends
    /// no `Retry-After`, leaving the wait to the client's own backoff.
    ///
    /// # Default
    ///
    /// 1 s ([`DEFAULT_RETRY_AFTER_WHEN_BUSY`]): a bulkhead frees a place
    /// as soon as a call ends, so a short wait is enough. At most a day.
    pub const fn retry_after_when_busy(mut self, wait: Duration) -> Self {
        self.retry_after_when_busy = wait;
        self
    }

    /// The layer, or which setting cannot work.
    pub fn build(self) -> Result<HttpRejectionLayer, ConfigError> {
        if self.retry_after_when_busy > LONGEST_RETRY_AFTER_WHEN_BUSY {
            return Err(ConfigError::new(
                "retry_after_when_busy",
                format!(
                    "{:?} is longer than a day: a bulkhead frees a place when a call ends",
                    self.retry_after_when_busy
                ),
            ));
        }
        Ok(HttpRejectionLayer {
            retry_after_when_busy: self.retry_after_when_busy,
        })
    }
}

/// A server's service whose errors are answered as HTTP responses; see
/// [`HttpRejectionLayer`].
pub struct HttpRejection<S> {
    inner: S,
    retry_after_when_busy: Duration,
    /// An error from the inner `poll_ready`, answered by the next call.
    refused: Option<BoxError>,
}

impl<S> HttpRejection<S> {
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

impl<S: Clone> Clone for HttpRejection<S> {
    /// A clone has not polled its inner service: it holds no refusal.
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            retry_after_when_busy: self.retry_after_when_busy,
            refused: None,
        }
    }
}

impl<S: fmt::Debug> fmt::Debug for HttpRejection<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpRejection")
            .field("inner", &self.inner)
            .field("retry_after_when_busy", &self.retry_after_when_busy)
            .field("refused", &self.refused)
            .finish()
    }
}

impl<S, Req, B> Service<Req> for HttpRejection<S>
where
    S: Service<Req, Response = Response<B>>,
    S::Error: Into<BoxError>,
    B: Default,
{
    type Response = Response<B>;
    type Error = Infallible;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        if self.refused.is_none()
            && let Err(err) = ready!(self.inner.poll_ready(cx))
        {
            self.refused = Some(err.into());
        }
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let inner = &mut self.inner;
        ResponseFuture {
            answer: Answer::new(&mut self.refused, || inner.call(req)),
            retry_after_when_busy: self.retry_after_when_busy,
        }
    }
}

/// The future of [`HttpRejection`].
#[pin_project]
pub struct ResponseFuture<F> {
    #[pin]
    answer: Answer<F, BoxError>,
    retry_after_when_busy: Duration,
}

impl<F> fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("state", &self.answer.state())
            .finish()
    }
}

impl<F, B, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
    E: Into<BoxError>,
    B: Default,
{
    type Output = Result<Response<B>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let err = match ready!(this.answer.poll_answer(cx)) {
            Ok(res) => return Poll::Ready(Ok(res)),
            Err(Failed::Inner(err) | Failed::Held(err)) => err,
        };
        let res = response(&*err, *this.retry_after_when_busy).unwrap_or_else(internal_error);
        Poll::Ready(Ok(res))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_is_whole_seconds_rounded_up_and_at_least_one() {
        let cases = [
            (Duration::ZERO, Some(1)),
            (Duration::from_nanos(1), Some(1)),
            (Duration::from_millis(999), Some(1)),
            (Duration::from_secs(1), Some(1)),
            (Duration::from_millis(1_001), Some(2)),
            (Duration::from_millis(1_500), Some(2)),
            (Duration::from_secs(30), Some(30)),
            (Duration::new(u64::MAX, 1), Some(u64::MAX)),
            (Duration::MAX, None),
        ];
        for (wait, secs) in cases {
            assert_eq!(breaker_retry_after(wait), secs, "{wait:?}");
        }
    }

    #[test]
    fn retry_after_when_busy_is_at_most_a_day() {
        let day = Duration::from_secs(86_400);
        assert!(
            HttpRejectionLayer::builder()
                .retry_after_when_busy(day)
                .build()
                .is_ok()
        );
        assert!(
            HttpRejectionLayer::builder()
                .retry_after_when_busy(Duration::ZERO)
                .build()
                .is_ok()
        );
        let err = HttpRejectionLayer::builder()
            .retry_after_when_busy(day + Duration::from_nanos(1))
            .build()
            .unwrap_err();
        assert_eq!(err.parameter(), "retry_after_when_busy");
    }
}
