use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use pin_project::pin_project;
use tokio::time::{Instant, Sleep};
use tower::Service;

use super::layer::Shared;
use crate::BoxError;
use crate::error::RateLimited;

/// A waiting call's reserved cells: given back if the call is dropped
/// before its wait is over and nobody reserved after it.
pub(crate) struct Reservation {
    shared: Arc<Shared>,
    tat: u64,
    cost: u32,
}

impl Reservation {
    pub(crate) fn new(shared: Arc<Shared>, tat: u64, cost: u32) -> Self {
        Self { shared, tat, cost }
    }
}

impl Reservation {
    /// The wait is over: the cells are used, whatever happens next.
    fn spend(mut self) {
        self.cost = 0;
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if self.cost != 0 {
            self.shared.gcra.give_back(self.tat, self.cost);
        }
    }
}

/// The future of a [`RateLimit`](super::RateLimit) call: the inner call, a
/// rejection ready at once, or (in the waiting mode) a call waiting for its
/// turn, holding its request and a clone of the inner service.
#[pin_project]
pub struct ResponseFuture<S, Req>
where
    S: Service<Req>,
{
    #[pin]
    state: State<S, Req>,
}

/// The waiting and refused states are boxed (allocated only off the happy
/// path), so the future of a call admitted at once is its inner future and
/// a tag: a future as big as a `Sleep` cost the happy path more in copies
/// than the whole decision.
#[pin_project(project = StateProj)]
enum State<S: Service<Req>, Req> {
    Called {
        #[pin]
        inner: S::Future,
    },
    Waiting {
        waiting: Pin<Box<Waiting<S, Req>>>,
    },
    Refused {
        rejection: Option<Box<RateLimited>>,
    },
}

/// A call waiting for its turn.
#[pin_project(project = WaitingProj)]
struct Waiting<S, Req> {
    #[pin]
    sleep: Sleep,
    service: S,
    request: Option<Req>,
    /// `Some` until the wait is over: the cells are then spent.
    reservation: Option<Reservation>,
}

impl<S: Service<Req>, Req> ResponseFuture<S, Req> {
    pub(crate) fn called(inner: S::Future) -> Self {
        Self {
            state: State::Called { inner },
        }
    }

    pub(crate) fn waiting(
        service: S,
        request: Req,
        until: Instant,
        reservation: Reservation,
    ) -> Self {
        Self {
            state: State::Waiting {
                waiting: Box::pin(Waiting {
                    sleep: tokio::time::sleep_until(until),
                    service,
                    request: Some(request),
                    reservation: Some(reservation),
                }),
            },
        }
    }

    pub(crate) fn rejected(rejection: RateLimited) -> Self {
        Self {
            state: State::Refused {
                rejection: Some(Box::new(rejection)),
            },
        }
    }
}

impl<S: Service<Req>, Req> fmt::Debug for ResponseFuture<S, Req> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match self.state {
            State::Called { .. } => "called",
            State::Waiting { .. } => "waiting",
            State::Refused { .. } => "rejected",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .finish()
    }
}

/// The refused call's error, boxed already.
///
/// # Panics
/// When polled again after it returned the error.
#[cold]
fn rejection(rejection: &mut Option<Box<RateLimited>>) -> BoxError {
    rejection
        .take()
        .expect("rate_limit::ResponseFuture polled after completion")
}

impl<S, Req> Future for ResponseFuture<S, Req>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
{
    type Output = Result<S::Response, BoxError>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut state = self.project().state;
        loop {
            let called = match state.as_mut().project() {
                StateProj::Called { inner } => {
                    return inner.poll(cx).map_err(Into::into);
                }
                StateProj::Refused { rejection: refused } => {
                    return Poll::Ready(Err(rejection(refused)));
                }
                StateProj::Waiting { waiting } => {
                    let WaitingProj {
                        sleep,
                        service,
                        request,
                        reservation,
                    } = waiting.as_mut().project();
                    if reservation.is_some() {
                        ready!(sleep.poll(cx));
                        if let Some(reservation) = reservation.take() {
                            reservation.spend();
                        }
                    }
                    // Readied now, as tower's `Oneshot` does: the readiness
                    // the caller saw before the wait may be gone.
                    ready!(service.poll_ready(cx)).map_err(Into::<BoxError>::into)?;
                    let request = request
                        .take()
                        .expect("rate_limit::ResponseFuture polled after completion");
                    service.call(request)
                }
            };
            state.set(State::Called { inner: called });
        }
    }
}
