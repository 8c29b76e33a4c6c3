//! The adaptive concurrency limit: a bulkhead whose limit an algorithm
//! moves. See [`AdaptiveLimitLayer`] and the [family's docs](super).

mod event;
mod future;
mod layer;
mod learn;
mod settings;

pub use self::event::AdaptiveLimitEvent;
pub use self::future::{LimitGuard, ResponseFuture};
pub use self::layer::{AdaptiveLimitBuilder, AdaptiveLimitLayer};
pub use self::settings::{AdaptiveLimitSettings, AlgorithmKind, AlgorithmSettings};

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use tower::Service;

use self::layer::{Core, Shared};
use crate::BoxError;
use crate::classify::Settle;
use crate::semaphore::{Admission, Ticket};

/// A service's stake in the limit: gives back a reserved permit or a
/// queued place when the service is dropped.
struct Slot<C> {
    shared: Arc<Shared<C>>,
    ticket: Ticket,
}

impl<C> Drop for Slot<C> {
    fn drop(&mut self) {
        self.ticket.give_back(&self.shared.core.semaphore);
    }
}

/// A service that admits at most the adaptive limit's current number of
/// calls at once; see the [family's docs](super).
pub struct AdaptiveLimit<S, C = crate::classify::DefaultClassifier> {
    inner: S,
    slot: Slot<C>,
}

impl<S, C> AdaptiveLimit<S, C> {
    pub(crate) fn from_shared(inner: S, shared: Arc<Shared<C>>) -> Self {
        Self {
            inner,
            slot: Slot {
                shared,
                ticket: Ticket::Idle,
            },
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
}

impl<S, C: Send + Sync + 'static> AdaptiveLimit<S, C> {
    /// A handle to this service's limit.
    pub fn handle(&self) -> AdaptiveLimitHandle {
        AdaptiveLimitHandle::new(self.slot.shared.clone())
    }
}

impl<S: Clone, C> Clone for AdaptiveLimit<S, C> {
    /// A clone shares the limit, but not a permit or queued place.
    fn clone(&self) -> Self {
        Self::from_shared(self.inner.clone(), self.slot.shared.clone())
    }
}

impl<S: fmt::Debug, C> fmt::Debug for AdaptiveLimit<S, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdaptiveLimit")
            .field("inner", &self.inner)
            .field("name", &self.slot.shared.core.name)
            .field("limit", &self.slot.shared.core.semaphore.limit())
            .finish()
    }
}

impl<S, C, Req, Res> Service<Req> for AdaptiveLimit<S, C>
where
    S: Service<Req, Response = Res>,
    S::Error: Into<BoxError>,
    C: Settle<Res, S::Error>,
{
    type Response = C::Response<LimitGuard<C>>;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future, C>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        let core = &self.slot.shared.core;
        match self.slot.ticket.poll_acquire(&core.semaphore, cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Admission::Permit | Admission::Held) => {}
            Poll::Ready(refusal) => {
                core.listeners
                    .emit(&core.name, || AdaptiveLimitEvent::Rejected {
                        timed_out_in_queue: refusal == Admission::TimedOut,
                    });
                // Refused: `call` says so without calling the inner service.
                return Poll::Ready(Ok(()));
            }
        }
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    #[inline]
    fn call(&mut self, req: Req) -> Self::Future {
        if self.slot.ticket.take_permit() {
            // The guard exists before the inner call, so that a panicking
            // inner `call` still gives the permit back.
            let guard = LimitGuard::new(self.slot.shared.clone(), crate::clock::call_time());
            return ResponseFuture::called(self.inner.call(req), guard);
        }
        let Some(after_wait) = self.slot.ticket.refused_after_wait() else {
            panic!("AdaptiveLimit::call without a successful poll_ready");
        };
        self.slot.ticket = Ticket::Idle;
        ResponseFuture::rejected(self.slot.shared.core.rejection(after_wait))
    }
}

/// Type-erases the classifier, so that one handle type fits every limit.
trait HasCore: Send + Sync {
    fn core(&self) -> &Core;
}

impl<C: Send + Sync> HasCore for Shared<C> {
    fn core(&self) -> &Core {
        &self.core
    }
}

/// Reads an adaptive limit: its current limit and counts. Cheap to clone;
/// made by [`AdaptiveLimitLayer::handle`].
#[derive(Clone)]
pub struct AdaptiveLimitHandle {
    shared: Arc<dyn HasCore>,
}

impl AdaptiveLimitHandle {
    fn new(shared: Arc<dyn HasCore>) -> Self {
        Self { shared }
    }

    /// The limit's name.
    pub fn name(&self) -> &str {
        &self.shared.core().name
    }

    /// The limit now: the most calls admitted at once.
    pub fn limit(&self) -> u32 {
        self.shared.core().semaphore.limit()
    }

    /// Calls holding a permit: in flight, or reserved by a `poll_ready`
    /// whose `call` has not come yet. Above the limit for a while after
    /// the algorithm lowered it: no call in flight is cut off.
    pub fn in_flight(&self) -> u32 {
        self.shared.core().semaphore.in_use()
    }

    /// Calls waiting in the queue.
    pub fn queued(&self) -> u32 {
        self.shared.core().semaphore.queued()
    }
}

impl fmt::Debug for AdaptiveLimitHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdaptiveLimitHandle")
            .field("name", &self.name())
            .field("limit", &self.limit())
            .field("in_flight", &self.in_flight())
            .field("queued", &self.queued())
            .finish()
    }
}
