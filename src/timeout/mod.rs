//! A time limit on each call.
//!
//! [`TimeoutLayer`] fails a call with [`Elapsed`](crate::error::Elapsed) if it
//! has not finished within the limit; the inner future is dropped, which
//! cancels it. The inner service's own errors pass through unchanged.
//!
//! # Cost
//!
//! The call reads the clock once, and layers below it in the same call (a
//! per-attempt timeout under a total one) reuse that reading. The timer
//! itself is created only if the inner future returns `Pending` on its first
//! poll, with its deadline measured from the call: a call that completes at
//! once never touches tokio's timer wheel, and allocates nothing. The timer is polled even when the inner future has
//! used up the task's cooperative budget, as `tokio::time::timeout` does.
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

mod future;
mod layer;

pub use self::future::ResponseFuture;
pub use self::layer::{TimeoutBuilder, TimeoutLayer};

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use tower::Service;

use self::layer::Shared;
use crate::BoxError;
use crate::clock;

/// A service whose calls fail with [`Elapsed`](crate::error::Elapsed) past a
/// time limit; see the [module docs](self).
#[derive(Clone)]
pub struct Timeout<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S> Timeout<S> {
    pub(crate) fn from_shared(inner: S, shared: Arc<Shared>) -> Self {
        Self { inner, shared }
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

impl<S: fmt::Debug> fmt::Debug for Timeout<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Timeout")
            .field("inner", &self.inner)
            .field("timeout", &self.shared.timeout)
            .finish()
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
        let (started, read_here) = clock::call_started();
        let inner = if read_here {
            // Layers below (another timeout, a retry deadline) reuse this
            // reading instead of taking their own.
            clock::within_call(started, || self.inner.call(req))
        } else {
            self.inner.call(req)
        };
        let events = (!self.shared.listeners.is_empty()).then(|| self.shared.clone());
        ResponseFuture::new(inner, started, self.shared.timeout, events)
    }
}
