//! A rate limiter: at most N calls per period, with a burst, shared by every
//! clone.
//!
//! [`RateLimitLayer`] admits calls at a [`rate`](RateLimitBuilder::rate)
//! of `count` per `per`, up to [`burst`](RateLimitBuilder::burst) of them
//! at once from rest, by the generic cell rate algorithm (GCRA, governor's
//! design): the whole state is one atomic instant, moved by a
//! compare-and-swap. Over any span `t` from rest it admits at most
//! `burst + t / interval` cells, where the interval is `per / count`.
//! A request may [`cost`](RateLimitBuilder::cost) more than one cell.
//!
//! # Two modes
//!
//! By default, a call over the rate fails at once with
//! [`RateLimited`](crate::error::RateLimited), whose
//! [`retry_after`](crate::error::RateLimited::retry_after) says when that
//! call's cost would conform. With [`max_wait`](RateLimitBuilder::max_wait),
//! a call over the rate reserves its cells as it is made and waits until
//! they are due, so waiting calls go in the order they were made, without a
//! queue; a call that would wait longer than the maximum is rejected at
//! once (never after waiting), reserving nothing. A call whose cost is
//! above the burst can never pass: it is rejected at once in both modes,
//! with a `retry_after` of [`Duration::MAX`](std::time::Duration::MAX).
//!
//! # Cancellation
//!
//! A waiting call that is dropped before its turn gives its cells back if
//! no call reserved cells after it (a compare-and-swap that undoes its
//! reservation); if one did, its cells stay spent, and the limiter admits
//! that much less for a moment, never more than its rate. A call dropped
//! after its wait, or after it went in, has used its cells.
//!
//! # Readiness
//!
//! The decision is made in `call`, as the cost needs the request;
//! `poll_ready` is the inner service's. A call admitted at once calls the
//! inner service there and then. A waiting call takes the readied inner
//! service with it and leaves a clone in its place (hence `S: Clone`), and
//! readies it again when its wait is over, as tower's `Oneshot` does.
//!
//! One limiter is shared by every clone of a service and every service its
//! layer builds.
//!
//! # Cost
//!
//! A call admitted at once costs a clock read and a compare-and-swap; no
//! lock, no allocation.
//!
//! # Examples
//!
//! ```
//! use palisade::error::{BoxError, RateLimited};
//! use palisade::rate_limit::RateLimitLayer;
//! use std::time::Duration;
//! use tower::{Layer, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() {
//! let limiter = RateLimitLayer::builder()
//!     .name("api")
//!     .rate(10, Duration::from_secs(1)) // one call every 100 ms...
//!     .burst(2) // ...and two at once from rest
//!     .build()
//!     .unwrap();
//! let svc = limiter.layer(service_fn(|n: u32| async move { Ok::<_, BoxError>(n) }));
//!
//! assert_eq!(svc.clone().oneshot(1).await.unwrap(), 1);
//! assert_eq!(svc.clone().oneshot(2).await.unwrap(), 2);
//! let err = svc.clone().oneshot(3).await.unwrap_err();
//! let limited = err.downcast_ref::<RateLimited>().unwrap();
//! assert_eq!(limited.retry_after(), Duration::from_millis(100));
//! assert_eq!(
//!     err.to_string(),
//!     r#"rate limiter "api" is over its rate of 10 per 1s (burst 2); retry after 100ms"#
//! );
//!
//! tokio::time::sleep(limited.retry_after()).await;
//! assert_eq!(svc.oneshot(4).await.unwrap(), 4);
//! # }
//! ```

mod event;
mod future;
mod gcra;
mod layer;
mod settings;

pub use self::event::RateLimitEvent;
pub use self::future::ResponseFuture;
pub use self::layer::{Cost, CostFn, One, RateLimitBuilder, RateLimitLayer, RateLimitMetrics};
pub use self::settings::RateLimitSettings;

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tower::Service;

use self::future::Reservation;
use self::gcra::Decision;
use self::layer::Shared;
use crate::BoxError;
use crate::clock;

/// A service that admits calls at a rate; see the [module docs](self).
///
/// `C` says what each request costs ([`One`] by default).
pub struct RateLimit<S, C = One> {
    inner: S,
    shared: Arc<Shared>,
    cost: C,
}

impl<S, C> RateLimit<S, C> {
    pub(crate) fn from_shared(inner: S, shared: Arc<Shared>, cost: C) -> Self {
        Self {
            inner,
            shared,
            cost,
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

impl<S: Clone, C: Clone> Clone for RateLimit<S, C> {
    /// A clone shares the limiter.
    fn clone(&self) -> Self {
        Self::from_shared(self.inner.clone(), self.shared.clone(), self.cost.clone())
    }
}

impl<S: fmt::Debug, C> fmt::Debug for RateLimit<S, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimit")
            .field("inner", &self.inner)
            .field("name", &self.shared.name)
            .finish()
    }
}

impl<S, C, Req> Service<Req> for RateLimit<S, C>
where
    S: Service<Req> + Clone,
    S::Error: Into<BoxError>,
    C: layer::Cost<Req>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S, Req>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    #[inline]
    fn call(&mut self, req: Req) -> Self::Future {
        let shared = &self.shared;
        let cost = self.cost.cost(&req);
        let now = clock::call_time();
        match shared
            .gcra
            .acquire(shared.epoch.nanos_at(now), cost, shared.max_wait)
        {
            Decision::Admit { wait: 0, .. } => ResponseFuture::called(self.inner.call(req)),
            Decision::Admit { wait, tat } => {
                let wait = Duration::from_nanos(wait);
                shared
                    .listeners
                    .emit(&shared.name, || RateLimitEvent::Waited { wait });
                // The readied service goes with the call; this one gets a
                // clone, readied by the caller's next `poll_ready`.
                let clone = self.inner.clone();
                let readied = std::mem::replace(&mut self.inner, clone);
                let reservation = Reservation::new(shared.clone(), tat, cost);
                ResponseFuture::waiting(readied, req, now + wait, reservation)
            }
            Decision::Reject { retry_after } => {
                self.reject(cost, Duration::from_nanos(retry_after))
            }
            Decision::Never => self.reject(cost, Duration::MAX),
        }
    }
}

impl<S, C> RateLimit<S, C> {
    #[cold]
    fn reject<Req>(&self, cost: u32, retry_after: Duration) -> ResponseFuture<S, Req>
    where
        S: Service<Req>,
    {
        let shared = &self.shared;
        shared
            .listeners
            .emit(&shared.name, || RateLimitEvent::Rejected { retry_after });
        ResponseFuture::rejected(shared.rejection(cost, retry_after))
    }
}
