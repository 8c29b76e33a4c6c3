use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use pin_project::pin_project;
use tokio::time::Instant;

use super::layer::Shared;
use crate::BoxError;
use crate::adaptive::Sample;
use crate::classify::{Outcome, Settle, Tracker, Verdict};
use crate::error::ConcurrencyLimited;

/// An admitted call's permit, until the call's outcome is known: at the
/// response head, or at the end of a streamed body whose status a
/// [`Settle`] classifier reads there (it is then part of the body's type).
///
/// Told the outcome, it teaches the algorithm the call's sample; dropped
/// without one (the call was cancelled), it teaches nothing. Either way it
/// gives the permit back.
pub struct LimitGuard<C> {
    shared: Arc<Shared<C>>,
    started: Instant,
    in_flight: u32,
}

impl<C> LimitGuard<C> {
    /// Holds a permit already taken from `shared`'s semaphore.
    pub(crate) fn new(shared: Arc<Shared<C>>, started: Instant) -> Self {
        let in_flight = shared.core.semaphore.in_use();
        Self {
            shared,
            started,
            in_flight,
        }
    }
}

impl<C> Tracker for LimitGuard<C> {
    #[inline]
    fn finish(self, outcome: Outcome) {
        let dropped = match outcome {
            Outcome::Success => false,
            Outcome::Failure => true,
            Outcome::Ignored => return,
        };
        let ended = crate::clock::now();
        let rtt = ended.saturating_duration_since(self.started);
        self.shared
            .core
            .learn(Sample::new(rtt, self.in_flight, dropped), ended);
    }
}

impl<C> Drop for LimitGuard<C> {
    #[inline]
    fn drop(&mut self) {
        self.shared.core.semaphore.release();
    }
}

impl<C> fmt::Debug for LimitGuard<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LimitGuard")
            .field("limit", &self.shared.core.name)
            .field("started", &self.started)
            .field("in_flight", &self.in_flight)
            .finish()
    }
}

/// The future of an [`AdaptiveLimit`](super::AdaptiveLimit) call: the inner
/// call holding its permit until its outcome is known, or a rejection
/// ready at once.
#[pin_project]
pub struct ResponseFuture<F, C> {
    #[pin]
    kind: Kind<F>,
    guard: Option<LimitGuard<C>>,
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
        error: Option<Box<ConcurrencyLimited>>,
    },
}

impl<F, C> ResponseFuture<F, C> {
    pub(crate) fn called(future: F, guard: LimitGuard<C>) -> Self {
        Self {
            kind: Kind::Called { future },
            guard: Some(guard),
        }
    }

    pub(crate) fn rejected(error: ConcurrencyLimited) -> Self {
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

/// The refused call's error, boxed already.
#[cold]
fn rejection(error: &mut Option<Box<ConcurrencyLimited>>) -> BoxError {
    error
        .take()
        .expect("adaptive limit's ResponseFuture polled after completion")
}

impl<F, C, Res, E> Future for ResponseFuture<F, C>
where
    F: Future<Output = Result<Res, E>>,
    E: Into<BoxError>,
    C: Settle<Res, E>,
{
    type Output = Result<C::Response<LimitGuard<C>>, BoxError>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        match this.kind.project() {
            KindProj::Called { future } => {
                let result = ready!(future.poll(cx));
                let guard = this
                    .guard
                    .take()
                    .expect("adaptive limit's ResponseFuture polled after completion");
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
