//! A time limit on each call.
//!
//! [`TimeoutLayer`] fails a call with [`Elapsed`](crate::error::Elapsed) if it
//! has not finished within the limit; the inner future is dropped, which
//! cancels it. The inner service's own errors pass through unchanged.
//!
//! # Which part of the call it covers
//!
//! By default ([`Head`]), the call up to its response,
//! as tower's `Timeout` does: for an `http::Response`, the limit bounds the
//! wait for the *head*, and a body that streams for longer than the limit
//! gets through.
//!
//! With [`cover_body`](TimeoutBuilder::cover_body) (feature `http`), the
//! deadline, still measured from `call`, bounds the response's body too:
//! the body, a [`ResponseBody`], yields `Elapsed` if it has not ended by
//! then. See [which part of a call a layer covers](crate::cover).
//!
//! # Cost
//!
//! The call reads the clock once, at its own `call` (a total and a
//! per-attempt timeout each read it), except in the
//! [preset](crate::Resilience), whose parts share one reading per call
//! (see [`SharedReading`](crate::preset::SharedReading)). The timer itself is created only if
//! the inner future returns `Pending` on its first poll, with its deadline
//! measured from the call: a call that completes at once never touches
//! tokio's timer wheel, and allocates nothing. The future holds its
//! layer's shared settings (an `Arc` clone, an atomic add), so that an
//! [`Elapsed`](crate::error::Elapsed) can name the layer. The timer is polled even
//! when the inner future has used up the task's cooperative budget, as
//! `tokio::time::timeout` does.
//!
//! # Total and per-attempt timeouts
//!
//! One layer, two placements. Outside a retry, it bounds the whole call,
//! backoffs included: a *total* timeout. Inside it, each attempt gets its own
//! limit: a *per-attempt* timeout, which the retry may follow with another
//! attempt and which a circuit breaker above counts as a failure.
//!
//! ```text
//! ServiceBuilder::new()
//!     .layer(total_timeout)        // the caller waits at most this long
//!     .layer(retry)
//!     .layer(circuit_breaker)
//!     .layer(per_attempt_timeout)  // each attempt is cut off after this
//!     .service(client)
//! ```
//!
//! # Order
//!
//! The clock starts at `call`. Time spent in the inner service's
//! `poll_ready` (a full bulkhead below, a connection pool) is not counted:
//! put the timeout outside whatever may make callers wait for readiness if
//! that wait should count.
//!
//! # Examples
//!
//! ```
//! use palisade::error::{BoxError, ErrorKind};
//! use palisade::timeout::TimeoutLayer;
//! use std::time::Duration;
//! use tower::{Service, ServiceBuilder, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() {
//! let mut svc = ServiceBuilder::new()
//!     .layer(TimeoutLayer::new(Duration::from_millis(100)).unwrap())
//!     .service(service_fn(|wait_ms: u64| async move {
//!         tokio::time::sleep(Duration::from_millis(wait_ms)).await;
//!         Ok::<_, BoxError>("done")
//!     }));
//!
//! assert_eq!(svc.ready().await.unwrap().call(10).await.unwrap(), "done");
//! let err = svc.ready().await.unwrap().call(500).await.unwrap_err();
//! assert_eq!(ErrorKind::of(&err), ErrorKind::Elapsed);
//! # }
//! ```

#[cfg(feature = "http")]
mod body;
mod event;
mod future;
mod layer;
mod settings;

#[cfg(feature = "http")]
pub use self::body::ResponseBody;
pub use self::event::TimeoutEvent;
pub use self::future::ResponseFuture;
pub use self::layer::{TimeoutBuilder, TimeoutLayer};
pub use self::settings::TimeoutSettings;

use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;
use std::task::{Context, Poll};

use tower::Service;

use self::layer::Shared;
use crate::BoxError;
use crate::clock;
use crate::cover::Head;

/// A service whose calls fail with [`Elapsed`](crate::error::Elapsed) past a
/// time limit; see the [module docs](self).
///
/// `M` is the part of the call the limit covers: up to the response head
/// ([`Head`], the default), or to the end of the response body
/// ([`cover::Body`](crate::cover::Body)).
pub struct Timeout<S, M = Head> {
    inner: S,
    shared: Arc<Shared>,
    _mode: PhantomData<fn() -> M>,
}

impl<S: Clone, M> Clone for Timeout<S, M> {
    fn clone(&self) -> Self {
        Self::from_shared(self.inner.clone(), self.shared.clone())
    }
}

impl<S, M> Timeout<S, M> {
    pub(crate) fn from_shared(inner: S, shared: Arc<Shared>) -> Self {
        Self {
            inner,
            shared,
            _mode: PhantomData,
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

impl<S: fmt::Debug, M> fmt::Debug for Timeout<S, M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Timeout")
            .field("inner", &self.inner)
            .field("timeout", &self.shared.timeout)
            .field("covers", &crate::cover::name::<M>())
            .finish()
    }
}

impl<S, M> Timeout<S, M> {
    /// `call`, the same in every mode.
    #[inline]
    fn start<Req>(&mut self, req: Req) -> ResponseFuture<S::Future, M>
    where
        S: Service<Req>,
    {
        let started = clock::call_time();
        let inner = self.inner.call(req);
        ResponseFuture::new(inner, started, self.shared.clone())
    }
}

impl<S, Req> Service<Req> for Timeout<S>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    #[inline]
    fn call(&mut self, req: Req) -> Self::Future {
        self.start(req)
    }
}

/// The body-covering mode: the deadline goes on to the response's body.
#[cfg(feature = "http")]
impl<S, Req, B> Service<Req> for Timeout<S, crate::cover::Body>
where
    S: Service<Req, Response = http::Response<B>>,
    S::Error: Into<BoxError>,
    B: http_body::Body,
{
    type Response = http::Response<ResponseBody<B>>;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future, crate::cover::Body>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    #[inline]
    fn call(&mut self, req: Req) -> Self::Future {
        self.start(req)
    }
}
