use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use pin_project::pin_project;
use tokio::time::Instant;

use super::layer::Shared;
use super::state::Admission;
use crate::BoxError;
use crate::classify::Classify;
use crate::error::CircuitOpen;

/// An admitted call's link to its breaker. Dropped without reporting, a
/// probe gives its permit back, so that a cancelled probe can never leave the
/// breaker stuck half-open.
pub(crate) struct CallGuard<C> {
    pub(crate) shared: Arc<Shared<C>>,
    pub(crate) admission: Admission,
    pub(crate) started: Option<Instant>,
    reported: bool,
}

impl<C> CallGuard<C> {
    pub(crate) fn new(shared: Arc<Shared<C>>, admission: Admission) -> Self {
        Self {
            shared,
            admission,
            started: None,
            reported: false,
        }
    }

    #[inline]
    fn report<Req, Res, E>(&mut self, result: &Result<Res, E>)
    where
        C: Classify<Req, Res, E>,
    {
        if self.reported {
            return;
        }
        let core = &self.shared.core;
        let outcome = self.shared.classifier.classify(result);
        let (elapsed, now) = if core.needs_end_time() {
            let now = Instant::now();
            (
                self.started.map(|s| now.saturating_duration_since(s)),
                Some(now),
            )
        } else {
            (None, None)
        };
        core.record(self.admission, outcome, elapsed, now);
        self.reported = true;
    }
}

impl<C> Drop for CallGuard<C> {
    fn drop(&mut self) {
        if !self.reported && self.admission.is_probe() {
            self.shared.core.release_probe(self.admission);
        }
    }
}

impl<C> fmt::Debug for CallGuard<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CallGuard")
            .field("admission", &self.admission)
            .field("started", &self.started)
            .finish()
    }
}

/// The future of a [`CircuitBreaker`](super::CircuitBreaker) call: the inner
/// service's future, whose outcome it records when it finishes, or a
/// rejection that is ready at once.
#[pin_project]
pub struct ResponseFuture<F, C, Req> {
    #[pin]
    kind: Kind<F>,
    guard: Option<CallGuard<C>>,
    _request: PhantomData<fn(Req)>,
}

#[pin_project(project = KindProj)]
enum Kind<F> {
    Called {
        #[pin]
        future: F,
    },
    Rejected {
        error: Option<CircuitOpen>,
    },
}

impl<F, C, Req> ResponseFuture<F, C, Req> {
    pub(crate) fn called(future: F, guard: Option<CallGuard<C>>) -> Self {
        Self {
            kind: Kind::Called { future },
            guard,
            _request: PhantomData,
        }
    }

    pub(crate) fn rejected(error: CircuitOpen) -> Self {
        Self {
            kind: Kind::Rejected { error: Some(error) },
            guard: None,
            _request: PhantomData,
        }
    }
}

impl<F, C, Req> fmt::Debug for ResponseFuture<F, C, Req> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match &self.kind {
            Kind::Called { .. } => "called",
            Kind::Rejected { .. } => "rejected",
        };
        f.debug_struct("ResponseFuture")
            .field("kind", &kind)
            .field("guard", &self.guard)
            .finish()
    }
}

impl<F, C, Req, Res, E> Future for ResponseFuture<F, C, Req>
where
    F: Future<Output = Result<Res, E>>,
    E: Into<BoxError>,
    C: Classify<Req, Res, E>,
{
    type Output = Result<Res, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        match this.kind.project() {
            KindProj::Called { future } => {
                let result = ready!(future.poll(cx));
                // Reported in place: the guard (and its `Arc`) goes with the
                // future, which saves moving it out.
                if let Some(guard) = this.guard {
                    guard.report(&result);
                }
                Poll::Ready(result.map_err(Into::into))
            }
            KindProj::Rejected { error } => {
                let error = error
                    .take()
                    .expect("ResponseFuture polled after completion");
                Poll::Ready(Err(error.into()))
            }
        }
    }
}
