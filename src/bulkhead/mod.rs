//! A bulkhead: at most N calls in flight, a bounded queue, and a clear "no"
//! beyond that.
//!
//! [`BulkheadLayer`] keeps a slow or failing dependency from taking every
//! task, connection and socket of the caller with it. At most
//! [`max_concurrent`](BulkheadBuilder::max_concurrent) calls are in flight;
//! up to [`max_queue`](BulkheadBuilder::max_queue) more wait for a permit,
//! first come first served, each for at most
//! [`max_wait`](BulkheadBuilder::max_wait). A call beyond that, or one whose
//! wait expires, fails at once with [`BulkheadFull`](crate::error::BulkheadFull)
//! without touching the inner service.
//!
//! The permit is held by the response future and released when the call
//! finishes or the future is dropped: a cancelled call, queued or in
//! flight, frees its place. One bulkhead is shared by every clone of a
//! service and every service its layer builds.
//!
//! # Which part of the call it covers
//!
//! By default ([`Head`]), the call up to its response,
//! as tower's `ConcurrencyLimit` does: for an `http::Response`, the permit
//! is given back when the *head* arrives, and the body may stream for as
//! long as it likes while the permit serves the next call. A bulkhead of 2
//! in front of an HTTP client admits 2 requests at once, but not 2 bodies.
//!
//! With [`cover_body`](BulkheadBuilder::cover_body) (feature `http`), the
//! response's body holds the permit, as a [`ResponseBody`], until the body
//! ends or is dropped: at most N calls *and their bodies* at once. See
//! [which part of a call a layer covers](crate::cover).
//!
//! # Readiness
//!
//! The permit is taken in `poll_ready`, as tower's `ConcurrencyLimit` does:
//! `poll_ready` is `Pending` while the call waits in the queue, then, with
//! the permit in hand, as ready as the inner service. A refused call's
//! `poll_ready` is ready at once, and its `call` fails with `BulkheadFull`
//! without calling the inner service. A permit taken by `poll_ready` and
//! never used by a `call` is released when the service is dropped; a queued
//! place is given up the same way. With a `Clone` inner service (reqwest,
//! tonic), clone the bulkhead service per request, as usual in tower: each
//! clone waits for its own permit.
//!
//! # Cost
//!
//! A free bulkhead costs a compare-and-swap to take the permit and one to
//! give it back; no lock, no allocation. The queue's lock is taken only when
//! a call must wait or a permit is released to a waiting call.
//!
//! # Examples
//!
//! ```
//! use palisade::bulkhead::BulkheadLayer;
//! use palisade::error::{BoxError, ErrorKind};
//! use std::time::Duration;
//! use tower::{Service, ServiceBuilder, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() {
//! let bulkhead = BulkheadLayer::builder()
//!     .max_concurrent(1)
//!     .max_queue(1)
//!     .max_wait(Duration::from_millis(50))
//!     .build()
//!     .unwrap();
//! let handle = bulkhead.handle();
//! let svc = ServiceBuilder::new().layer(bulkhead).service(service_fn(|ms: u64| async move {
//!     tokio::time::sleep(Duration::from_millis(ms)).await;
//!     Ok::<_, BoxError>(ms)
//! }));
//!
//! let first = tokio::spawn(svc.clone().oneshot(1_000)); // takes the only permit
//! let second = tokio::spawn(svc.clone().oneshot(10)); // waits in the queue...
//! tokio::task::yield_now().await;
//! assert_eq!((handle.in_flight(), handle.queued()), (1, 1));
//! let third = svc.clone().oneshot(10).await; // ...so this one is refused at once
//! assert_eq!(ErrorKind::of(&third.unwrap_err()), ErrorKind::BulkheadFull);
//! let second = second.await.unwrap(); // and the queued one gives up after 50 ms
//! assert_eq!(ErrorKind::of(&second.unwrap_err()), ErrorKind::BulkheadFull);
//! assert_eq!(first.await.unwrap().unwrap(), 1_000);
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
pub use self::event::BulkheadEvent;
pub use self::future::ResponseFuture;
pub use self::layer::{BulkheadBuilder, BulkheadLayer, BulkheadMetrics, MAX_BULKHEAD_PERMITS};
pub use self::settings::BulkheadSettings;

use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;
use std::task::{Context, Poll};

use tower::Service;

use self::future::Permit;
use self::layer::Shared;
use crate::BoxError;
use crate::cover::Head;
use crate::semaphore::{Admission, Ticket};

/// A service's stake in the bulkhead; gives back a reserved permit or a
/// queued place when the service is dropped.
struct Slot {
    shared: Arc<Shared>,
    ticket: Ticket,
}

impl Drop for Slot {
    fn drop(&mut self) {
        if self.ticket.give_back(&self.shared.semaphore) {
            self.shared.report_in_flight();
        }
    }
}

/// A service that admits at most N calls at once; see the [module docs](self).
///
/// `M` is the part of the call a permit covers: up to the response head
/// ([`Head`], the default), or to the end of the response body
/// ([`cover::Body`](crate::cover::Body)).
pub struct Bulkhead<S, M = Head> {
    inner: S,
    slot: Slot,
    _mode: PhantomData<fn() -> M>,
}

impl<S, M> Bulkhead<S, M> {
    pub(crate) fn from_shared(inner: S, shared: Arc<Shared>) -> Self {
        Self {
            inner,
            slot: Slot {
                shared,
                ticket: Ticket::Idle,
            },
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

    /// Unwraps the inner service (giving back any permit it reserved).
    pub fn into_inner(self) -> S {
        self.inner
    }

    /// A handle to this service's bulkhead.
    pub fn handle(&self) -> BulkheadHandle {
        BulkheadHandle::new(self.slot.shared.clone())
    }

    /// Moves this service towards a permit; `Ready` once it has one or is
    /// refused (and then tells the listeners).
    #[inline]
    fn poll_permit(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let shared = &self.slot.shared;
        match self.slot.ticket.poll_acquire(&shared.semaphore, cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Admission::Held) => Poll::Ready(()),
            Poll::Ready(Admission::Permit) => {
                shared.report_in_flight();
                Poll::Ready(())
            }
            Poll::Ready(refusal) => {
                shared
                    .listeners
                    .emit(&shared.name, || BulkheadEvent::Rejected {
                        timed_out_in_queue: refusal == Admission::TimedOut,
                    });
                Poll::Ready(())
            }
        }
    }
}

impl<S: Clone, M> Clone for Bulkhead<S, M> {
    /// A clone shares the bulkhead, but not a permit or queued place.
    fn clone(&self) -> Self {
        Self::from_shared(self.inner.clone(), self.slot.shared.clone())
    }
}

impl<S: fmt::Debug, M> fmt::Debug for Bulkhead<S, M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Bulkhead")
            .field("inner", &self.inner)
            .field("name", &self.slot.shared.name)
            .field("covers", &crate::cover::name::<M>())
            .finish()
    }
}

/// `poll_ready` and `call`, the same in every mode.
impl<S, M> Bulkhead<S, M> {
    #[inline]
    fn ready<Req>(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>>
    where
        S: Service<Req>,
        S::Error: Into<BoxError>,
    {
        // A refusal holds nothing: it is decided again, as a place may have
        // come free since.
        if self.poll_permit(cx).is_pending() {
            return Poll::Pending;
        }
        if self.slot.ticket.is_refused() {
            return Poll::Ready(Ok(()));
        }
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    #[inline]
    fn start<Req>(&mut self, req: Req) -> ResponseFuture<S::Future, M>
    where
        S: Service<Req>,
    {
        if self.slot.ticket.take_permit() {
            // The guard exists before the inner call, so that a panicking
            // inner `call` still gives the permit back.
            let permit = Permit::taken(self.slot.shared.clone());
            return ResponseFuture::called(self.inner.call(req), permit);
        }
        let Some(after_wait) = self.slot.ticket.refused_after_wait() else {
            panic!("Bulkhead::call without a successful poll_ready");
        };
        self.slot.ticket = Ticket::Idle;
        ResponseFuture::rejected(self.slot.shared.rejection(after_wait))
    }
}

impl<S, Req> Service<Req> for Bulkhead<S>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.ready::<Req>(cx)
    }

    #[inline]
    fn call(&mut self, req: Req) -> Self::Future {
        self.start(req)
    }
}

/// The body-covering mode: the permit goes on to the response's body.
#[cfg(feature = "http")]
impl<S, Req, B> Service<Req> for Bulkhead<S, crate::cover::Body>
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
        self.ready::<Req>(cx)
    }

    #[inline]
    fn call(&mut self, req: Req) -> Self::Future {
        self.start(req)
    }
}

/// Reads a bulkhead's counts. Cheap to clone; made by
/// [`BulkheadLayer::handle`].
#[derive(Clone)]
pub struct BulkheadHandle {
    shared: Arc<Shared>,
}

impl BulkheadHandle {
    fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }

    /// The bulkhead's name.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// Calls holding a permit: in flight, or reserved by a `poll_ready`
    /// whose `call` has not come yet.
    pub fn in_flight(&self) -> u32 {
        self.shared.semaphore.in_use()
    }

    /// Calls waiting in the queue.
    pub fn queued(&self) -> u32 {
        self.shared.semaphore.queued()
    }

    /// The most calls in flight at once.
    pub fn max_concurrent(&self) -> u32 {
        self.shared.semaphore.limit()
    }

    /// Moves the bulkhead's limit while it runs, for every service of its
    /// layer. A higher limit admits queued calls at once; a lower one cuts
    /// no call in flight off, and admits nobody until enough of them have
    /// finished to be under it. A raise hands one permit to each queued
    /// call and adds the rest at once, however large it is.
    ///
    /// # Errors
    /// A limit of zero or above [`MAX_BULKHEAD_PERMITS`]; the bulkhead is
    /// left as it was.
    ///
    /// # Examples
    ///
    /// ```
    /// use palisade::bulkhead::BulkheadLayer;
    ///
    /// let layer = BulkheadLayer::builder().max_concurrent(8).build().unwrap();
    /// let handle = layer.handle();
    /// handle.set_max_concurrent(32).unwrap();
    /// assert_eq!(handle.max_concurrent(), 32);
    /// assert!(handle.set_max_concurrent(0).is_err());
    /// ```
    pub fn set_max_concurrent(&self, calls: u32) -> Result<(), crate::error::ConfigError> {
        crate::validate::within("max_concurrent", calls, 1..=MAX_BULKHEAD_PERMITS)?;
        self.shared.semaphore.set_limit(calls);
        self.shared.report_in_flight();
        Ok(())
    }
}

impl fmt::Debug for BulkheadHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BulkheadHandle")
            .field("name", &self.name())
            .field("in_flight", &self.in_flight())
            .field("queued", &self.queued())
            .finish()
    }
}

#[cfg(all(test, palisade_loom))]
mod loom_tests {
    use super::*;
    use std::task::Waker;
    use tower::Layer;

    #[derive(Clone)]
    struct AlwaysReady;

    impl Service<()> for AlwaysReady {
        type Response = ();
        type Error = BoxError;
        type Future = std::future::Ready<Result<(), BoxError>>;
        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
            Poll::Ready(Ok(()))
        }
        fn call(&mut self, _: ()) -> Self::Future {
            std::future::ready(Ok(()))
        }
    }

    /// Issue 12, defect 5: a service refused while another held the only
    /// place races that place being freed. Whatever the interleaving, once
    /// the place is free, its next `poll_ready` takes it: a refusal does not
    /// stick. (Fails if `ready` keeps a `Rejected` state.)
    #[test]
    fn loom_a_refusal_does_not_outlive_the_full_bulkhead() {
        loom::model(|| {
            let layer = BulkheadLayer::builder().max_concurrent(1).build().unwrap();
            let handle = layer.handle();
            let mut cx = Context::from_waker(Waker::noop());
            let mut holder = layer.layer(AlwaysReady);
            assert!(holder.poll_ready(&mut cx).is_ready());
            let freer = loom::thread::spawn(move || drop(holder));
            let mut caller = layer.layer(AlwaysReady);
            assert!(caller.poll_ready(&mut cx).is_ready());
            freer.join().unwrap();
            assert!(caller.poll_ready(&mut cx).is_ready());
            assert!(caller.slot.ticket.is_held());
            assert_eq!(handle.in_flight(), 1);
        });
    }
}
