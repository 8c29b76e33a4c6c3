use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use pin_project::pin_project;

use super::layer::Shared;
use crate::BoxError;
use crate::cover::Head;
use crate::error::BulkheadFull;

/// A bulkhead permit: released when dropped.
pub(crate) struct Permit {
    shared: Arc<Shared>,
}

impl Permit {
    /// Wraps a permit already taken from `shared`'s semaphore.
    pub(crate) fn taken(shared: Arc<Shared>) -> Self {
        Self { shared }
    }
}

impl Drop for Permit {
    #[inline]
    fn drop(&mut self) {
        self.shared.semaphore.release();
        self.shared.report_in_flight();
    }
}

impl fmt::Debug for Permit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Permit")
            .field("bulkhead", &self.shared.name)
            .finish()
    }
}

/// The future of a [`Bulkhead`](super::Bulkhead) call: the inner call holding
/// its permit until it finishes or is dropped, or a rejection ready at once.
///
/// In [`Body`](crate::cover::Body) mode, the permit then goes to the
/// response's [`ResponseBody`](super::ResponseBody).
#[pin_project]
pub struct ResponseFuture<F, M = Head> {
    #[pin]
    state: State<F>,
    permit: Option<Permit>,
    _mode: PhantomData<fn() -> M>,
}

/// The inner call, or the refusal in its place: the rejection is boxed,
/// so a refused call's future is no bigger than an admitted one's.
#[pin_project(project = StateProj)]
enum State<F> {
    Called {
        #[pin]
        inner: F,
    },
    Refused {
        rejection: Option<Box<BulkheadFull>>,
    },
}

impl<F, M> ResponseFuture<F, M> {
    pub(crate) fn called(inner: F, permit: Permit) -> Self {
        Self {
            state: State::Called { inner },
            permit: Some(permit),
            _mode: PhantomData,
        }
    }

    pub(crate) fn rejected(rejection: BulkheadFull) -> Self {
        Self {
            state: State::Refused {
                rejection: Some(Box::new(rejection)),
            },
            permit: None,
            _mode: PhantomData,
        }
    }
}

/// The refused call's error, boxed already.
///
/// # Panics
/// When polled again after it returned the error.
#[cold]
fn rejection(rejection: &mut Option<Box<BulkheadFull>>) -> BoxError {
    rejection
        .take()
        .expect("bulkhead::ResponseFuture polled after completion")
}

impl<F, M> fmt::Debug for ResponseFuture<F, M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("rejected", &matches!(self.state, State::Refused { .. }))
            .field("permit", &self.permit)
            .finish()
    }
}

impl<F, T, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
{
    type Output = Result<T, BoxError>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        match this.state.project() {
            StateProj::Called { inner } => {
                let result = ready!(inner.poll(cx));
                // The call is over: free the place at once, not when the
                // caller gets round to dropping this future.
                *this.permit = None;
                Poll::Ready(result.map_err(Into::into))
            }
            StateProj::Refused { rejection: refused } => Poll::Ready(Err(rejection(refused))),
        }
    }
}

#[cfg(feature = "http")]
impl<F, B, E> Future for ResponseFuture<F, crate::cover::Body>
where
    F: Future<Output = Result<http::Response<B>, E>>,
    E: Into<BoxError>,
    B: http_body::Body,
{
    type Output = Result<http::Response<super::ResponseBody<B>>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        match this.state.project() {
            StateProj::Called { inner } => {
                let result = ready!(inner.poll(cx));
                // The head is here: the permit moves to the body, or, if the
                // call failed, is given back now.
                let permit = this.permit.take();
                Poll::Ready(match result {
                    Ok(response) => Ok(response.map(|body| super::ResponseBody::new(body, permit))),
                    Err(err) => Err(err.into()),
                })
            }
            StateProj::Refused { rejection: refused } => Poll::Ready(Err(rejection(refused))),
        }
    }
}
