use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use pin_project::pin_project;
use tokio::time::Instant;

use super::layer::Shared;
use super::state::Admission;
use crate::BoxError;
use crate::classify::{Outcome, Settle, Tracker, Verdict};
use crate::error::CircuitOpen;

/// An admitted call's hold on its breaker, until the call's outcome is
/// known: at the response head, or at the end of a streamed body that a
/// [`Settle`] classifier wraps (it is then part of the body's type).
///
/// Dropped without an outcome, a probe gives its permit back, so that a
/// cancelled probe can never leave the breaker stuck half-open.
pub struct CallGuard<C> {
    pub(crate) shared: Arc<Shared<C>>,
    pub(crate) admission: Admission,
    pub(crate) started: Option<Instant>,
    /// When the head came, where the end is timed: the slow-call timing
    /// stops at the head, so a long stream is not a slow call.
    head: Option<Instant>,
    deferred: bool,
    reported: bool,
}

impl<C> CallGuard<C> {
    pub(crate) fn new(shared: Arc<Shared<C>>, admission: Admission) -> Self {
        Self {
            shared,
            admission,
            started: None,
            head: None,
            deferred: false,
            reported: false,
        }
    }

    /// The response head arrived.
    #[inline]
    fn at_head(&mut self) {
        if self.shared.core.needs_end_time() {
            self.head = Some(Instant::now());
        }
    }
}

impl<C> CallGuard<C> {
    /// Records the outcome; the guard then gives nothing back on drop.
    #[inline]
    fn report(&mut self, outcome: Outcome) {
        let (elapsed, now) = match self.head {
            Some(head) => {
                let elapsed = self.started.map(|s| head.saturating_duration_since(s));
                // A deferred call ends now: its window entry goes where the
                // window is now, not where it was when the head came.
                let at = if self.deferred { Instant::now() } else { head };
                (elapsed, Some(at))
            }
            None => (None, None),
        };
        self.shared
            .core
            .record(self.admission, outcome, elapsed, now);
        self.reported = true;
    }
}

impl<C> Tracker for CallGuard<C> {
    #[inline]
    fn finish(mut self, outcome: Outcome) {
        self.report(outcome);
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
pub struct ResponseFuture<F, C> {
    #[pin]
    kind: Kind<F>,
    guard: Option<CallGuard<C>>,
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

impl<F, C> ResponseFuture<F, C> {
    pub(crate) fn called(future: F, guard: Option<CallGuard<C>>) -> Self {
        Self {
            kind: Kind::Called { future },
            guard,
        }
    }

    pub(crate) fn rejected(error: CircuitOpen) -> Self {
        Self {
            kind: Kind::Rejected { error: Some(error) },
            guard: None,
        }
    }
}

impl<F, C> fmt::Debug for ResponseFuture<F, C> {
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

impl<F, C, Res, E> Future for ResponseFuture<F, C>
where
    F: Future<Output = Result<Res, E>>,
    E: Into<BoxError>,
    C: Settle<Res, E>,
{
    type Output = Result<C::Response<CallGuard<C>>, BoxError>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        match this.kind.project() {
            KindProj::Called { future } => {
                let result = ready!(future.poll(cx));
                let Some(guard) = this.guard.as_mut() else {
                    return Poll::Ready(C::wrap(result, None).map_err(Into::into));
                };
                guard.at_head();
                let result = match guard.shared.classifier.verdict(&result) {
                    Verdict::Now(outcome) => {
                        // Reported in place: the guard (and its `Arc`) goes
                        // with the future, which saves moving it out.
                        guard.report(outcome);
                        C::wrap(result, None)
                    }
                    Verdict::AtEnd(judge) => {
                        guard.deferred = true;
                        let guard = this.guard.take().expect("matched above");
                        C::wrap(result, Some((judge, guard)))
                    }
                };
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
