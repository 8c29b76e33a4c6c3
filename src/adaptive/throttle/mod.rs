//! Client-side adaptive throttling (Google SRE): reject locally the share
//! of calls the service would reject anyway. See [`ThrottleLayer`] and the
//! [family's docs](super).

mod event;
mod future;
mod layer;
mod settings;

pub use self::event::ThrottleEvent;
pub use self::future::{ResponseFuture, ThrottleGuard};
pub use self::layer::{ThrottleBuilder, ThrottleLayer};
pub use self::settings::ThrottleSettings;

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use tower::Service;

use self::layer::{ACCEPTS, Core, PENDING, REQUESTS, Shared};
use crate::BoxError;
use crate::classify::Settle;

/// A service that rejects, locally, a share of calls that grows as its
/// service stops accepting them; see the [family's docs](super).
pub struct Throttle<S, C = crate::classify::DefaultClassifier> {
    inner: S,
    shared: Arc<Shared<C>>,
}

impl<S, C> Throttle<S, C> {
    pub(crate) fn from_shared(inner: S, shared: Arc<Shared<C>>) -> Self {
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

impl<S, C: Send + Sync + 'static> Throttle<S, C> {
    /// A handle to this service's throttle.
    pub fn handle(&self) -> ThrottleHandle {
        ThrottleHandle::new(self.shared.clone())
    }
}

impl<S: Clone, C> Clone for Throttle<S, C> {
    fn clone(&self) -> Self {
        Self::from_shared(self.inner.clone(), self.shared.clone())
    }
}

impl<S: fmt::Debug, C> fmt::Debug for Throttle<S, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Throttle")
            .field("inner", &self.inner)
            .field("name", &self.shared.core.name)
            .finish()
    }
}

impl<S, C, Req, Res> Service<Req> for Throttle<S, C>
where
    S: Service<Req, Response = Res>,
    S::Error: Into<BoxError>,
    C: Settle<Res, S::Error>,
{
    type Response = C::Response<ThrottleGuard<C>>;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future, C>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    #[inline]
    fn call(&mut self, req: Req) -> Self::Future {
        match self.shared.core.admit() {
            Ok(at) => {
                // The guard exists before the inner call, so that a
                // panicking inner `call` takes its request back out.
                let guard = ThrottleGuard::new(self.shared.clone(), at);
                ResponseFuture::called(self.inner.call(req), guard)
            }
            Err(throttled) => ResponseFuture::rejected(throttled),
        }
    }
}

/// Type-erases the classifier, so that one handle type fits every throttle.
trait HasCore: Send + Sync {
    fn core(&self) -> &Core;
}

impl<C: Send + Sync> HasCore for Shared<C> {
    fn core(&self) -> &Core {
        &self.core
    }
}

/// Reads a throttle's window: its requests, accepts and the share of
/// calls it rejects now. Cheap to clone; made by [`ThrottleLayer::handle`].
#[derive(Clone)]
pub struct ThrottleHandle {
    shared: Arc<dyn HasCore>,
}

impl ThrottleHandle {
    fn new(shared: Arc<dyn HasCore>) -> Self {
        Self { shared }
    }

    /// The throttle's name.
    pub fn name(&self) -> &str {
        &self.shared.core().name
    }

    /// The requests counted in the window: sent or rejected locally, and
    /// not ignored.
    pub fn requests(&self) -> u64 {
        self.shared.core().totals()[REQUESTS]
    }

    /// The requests in the window that the service accepted.
    pub fn accepts(&self) -> u64 {
        self.shared.core().totals()[ACCEPTS]
    }

    /// The requests in the window sent and not yet answered: counted as
    /// requests, not (yet) as accepts.
    pub fn in_flight(&self) -> u64 {
        self.shared.core().totals()[PENDING]
    }

    /// The share of calls the throttle rejects now, in [0, 1).
    pub fn probability(&self) -> f64 {
        let core = self.shared.core();
        core.probability(core.totals())
    }
}

impl fmt::Debug for ThrottleHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let totals = self.shared.core().totals();
        f.debug_struct("ThrottleHandle")
            .field("name", &self.name())
            .field("requests", &totals[REQUESTS])
            .field("accepts", &totals[ACCEPTS])
            .field("in_flight", &totals[PENDING])
            .field("probability", &self.shared.core().probability(totals))
            .finish()
    }
}
