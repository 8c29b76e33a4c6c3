//! The future both adaptive layers return: the inner call holding a guard
//! that is told the call's outcome once it is known, or a rejection
//! ready at once.

use std::error::Error as StdError;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use pin_project::pin_project;

use crate::BoxError;
use crate::classify::{Settle, Tracker, Verdict};

mod sealed {
    pub trait Sealed {}
}

/// A call's hold on an adaptive layer: its permit and sample
/// ([`LimitGuard`](super::limit::LimitGuard)) or its place in the
/// throttle's window ([`ThrottleGuard`](super::throttle::ThrottleGuard)).
/// Sealed: it names the classifier that judges the call.
pub trait Guard: Tracker + sealed::Sealed {
    /// The layer's classifier.
    type Classifier;

    #[doc(hidden)]
    fn classifier(&self) -> &Self::Classifier;
}

impl<C> sealed::Sealed for super::limit::LimitGuard<C> {}
impl<C> sealed::Sealed for super::throttle::ThrottleGuard<C> {}

/// The future of an [`AdaptiveLimit`](super::AdaptiveLimit) or a
/// [`Throttle`](super::Throttle) call (named by each as its own
/// `ResponseFuture`): the inner call with its guard `G`, told the outcome
/// at the response head or, through the body a [`Settle`] classifier
/// wraps, at the end of the body; or the rejection `R`, boxed, so that a
/// refused call's future is no bigger than an admitted one's.
#[pin_project]
pub struct ResponseFuture<F, G, R> {
    #[pin]
    kind: Kind<F, R>,
    guard: Option<G>,
}

#[pin_project(project = KindProj)]
enum Kind<F, R> {
    Called {
        #[pin]
        future: F,
    },
    Rejected {
        error: Option<Box<R>>,
    },
}

impl<F, G, R> ResponseFuture<F, G, R> {
    pub(crate) fn called(future: F, guard: G) -> Self {
        Self {
            kind: Kind::Called { future },
            guard: Some(guard),
        }
    }

    pub(crate) fn rejected(error: R) -> Self {
        Self {
            kind: Kind::Rejected {
                error: Some(Box::new(error)),
            },
            guard: None,
        }
    }
}

impl<F, G: fmt::Debug, R> fmt::Debug for ResponseFuture<F, G, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("rejected", &matches!(self.kind, Kind::Rejected { .. }))
            .field("guard", &self.guard)
            .finish()
    }
}

/// The refused call's error, boxed already.
#[cold]
fn rejection<R: StdError + Send + Sync + 'static>(error: &mut Option<Box<R>>) -> BoxError {
    error
        .take()
        .expect("ResponseFuture polled after completion")
}

impl<F, G, R, Res, E> Future for ResponseFuture<F, G, R>
where
    F: Future<Output = Result<Res, E>>,
    E: Into<BoxError>,
    G: Guard,
    G::Classifier: Settle<Res, E>,
    R: StdError + Send + Sync + 'static,
{
    type Output = Result<<G::Classifier as Settle<Res, E>>::Response<G>, BoxError>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        match this.kind.project() {
            KindProj::Called { future } => {
                let result = ready!(future.poll(cx));
                let guard = this
                    .guard
                    .take()
                    .expect("ResponseFuture polled after completion");
                let result = match guard.classifier().verdict(&result) {
                    Verdict::Now(outcome) => {
                        guard.finish(outcome);
                        <G::Classifier as Settle<Res, E>>::wrap(result, None)
                    }
                    Verdict::AtEnd(judge) => {
                        <G::Classifier as Settle<Res, E>>::wrap(result, Some((judge, guard)))
                    }
                };
                Poll::Ready(result.map_err(Into::into))
            }
            KindProj::Rejected { error } => Poll::Ready(Err(rejection(error))),
        }
    }
}
