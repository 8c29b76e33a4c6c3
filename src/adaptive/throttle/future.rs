use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use pin_project::pin_project;

use super::layer::Shared;
use crate::BoxError;
use crate::classify::{Outcome, Settle, Tracker, Verdict};
use crate::error::Throttled;

/// A sent request's place in the throttle's window, until its outcome is
/// known: at the response head, or at the end of a streamed body whose
/// status a [`Settle`] classifier reads there (it is then part of the
/// body's type).
///
/// Told a success, it counts an accept; a failure, no accept (the request
/// was counted when it was sent); either way the request is no longer in
/// flight. Ignored, or dropped without an outcome (the call was
/// cancelled), it takes the request back out.
pub struct ThrottleGuard<C> {
    shared: Arc<Shared<C>>,
    /// When the request was counted: its outcome goes in the same bucket.
    at: u64,
    settled: bool,
}

impl<C> ThrottleGuard<C> {
    pub(crate) fn new(shared: Arc<Shared<C>>, at: u64) -> Self {
        Self {
            shared,
            at,
            settled: false,
        }
    }
}

impl<C> Tracker for ThrottleGuard<C> {
    #[inline]
    fn finish(mut self, outcome: Outcome) {
        let core = &self.shared.core;
        match outcome {
            Outcome::Success => core.answered(self.at, true),
            Outcome::Failure => core.answered(self.at, false),
            Outcome::Ignored => core.uncount(self.at),
        }
        self.settled = true;
    }
}

impl<C> Drop for ThrottleGuard<C> {
    fn drop(&mut self) {
        if !self.settled {
            self.shared.core.uncount(self.at);
        }
    }
}

impl<C> fmt::Debug for ThrottleGuard<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ThrottleGuard")
            .field("throttle", &self.shared.core.name)
            .finish()
    }
}

/// The future of a [`Throttle`](super::Throttle) call: the inner call,
/// whose outcome it counts, or a rejection ready at once.
#[pin_project]
pub struct ResponseFuture<F, C> {
    #[pin]
    kind: Kind<F>,
    guard: Option<ThrottleGuard<C>>,
}

/// The refusal is boxed, so a refused call's future is no bigger than an
/// admitted one's.
#[pin_project(project = KindProj)]
enum Kind<F> {
    Called {
        #[pin]
        future: F,
    },
    Rejected {
        error: Option<Box<Throttled>>,
    },
}

impl<F, C> ResponseFuture<F, C> {
    pub(crate) fn called(future: F, guard: ThrottleGuard<C>) -> Self {
        Self {
            kind: Kind::Called { future },
            guard: Some(guard),
        }
    }

    pub(crate) fn rejected(error: Throttled) -> Self {
        Self {
            kind: Kind::Rejected {
                error: Some(Box::new(error)),
            },
            guard: None,
        }
    }
}

impl<F, C> fmt::Debug for ResponseFuture<F, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("rejected", &matches!(self.kind, Kind::Rejected { .. }))
            .field("guard", &self.guard)
            .finish()
    }
}

#[cold]
fn rejection(error: &mut Option<Box<Throttled>>) -> BoxError {
    error
        .take()
        .expect("throttle's ResponseFuture polled after completion")
}

impl<F, C, Res, E> Future for ResponseFuture<F, C>
where
    F: Future<Output = Result<Res, E>>,
    E: Into<BoxError>,
    C: Settle<Res, E>,
{
    type Output = Result<C::Response<ThrottleGuard<C>>, BoxError>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        match this.kind.project() {
            KindProj::Called { future } => {
                let result = ready!(future.poll(cx));
                let guard = this
                    .guard
                    .take()
                    .expect("throttle's ResponseFuture polled after completion");
                let result = match guard.shared.classifier.verdict(&result) {
                    Verdict::Now(outcome) => {
                        guard.finish(outcome);
                        C::wrap(result, None)
                    }
                    Verdict::AtEnd(judge) => C::wrap(result, Some((judge, guard))),
                };
                Poll::Ready(result.map_err(Into::into))
            }
            KindProj::Rejected { error } => Poll::Ready(Err(rejection(error))),
        }
    }
}
