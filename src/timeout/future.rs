use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use pin_project::pin_project;
use tokio::task::coop;
use tokio::time::{Instant, Sleep, sleep_until};

use super::TimeoutEvent;
use super::layer::Shared;
use crate::BoxError;
use crate::cover::Head;
use crate::error::Elapsed;

/// About thirty years: a deadline past what `Instant` can hold is treated
/// as this far away.
const FAR_FUTURE: Duration = Duration::from_secs(86_400 * 365 * 30);

/// One call's deadline: its start, its layer (for the limit, the name an
/// [`Elapsed`] carries and the listeners), and the timer, armed only when
/// something must wait for it.
///
/// Not generic, so that its polling is compiled once, not for every stack.
pub(crate) struct Timer {
    /// Boxed: created only for a call that is still running after its
    /// first poll, it would otherwise make every future (and every future
    /// wrapping it) a hundred bytes bigger.
    sleep: Option<Pin<Box<Sleep>>>,
    started: Instant,
    /// The layer's settings, shared: an `Arc` clone per call (no
    /// allocation), so that a call that times out can say which layer and
    /// which limit without copying either. `None` once handed on.
    shared: Option<Arc<Shared>>,
}

impl Timer {
    /// Hands the deadline on (to a response body), leaving this one spent.
    #[cfg(feature = "http")]
    pub(crate) fn take(&mut self) -> Timer {
        Timer {
            sleep: self.sleep.take(),
            started: self.started,
            shared: self.shared.take(),
        }
    }

    fn timeout(&self) -> Option<Duration> {
        self.shared.as_ref().map(|shared| shared.timeout)
    }

    /// `Ready` with [`Elapsed`] once the deadline has passed; arms the timer
    /// on first use.
    pub(crate) fn poll_elapsed(&mut self, cx: &mut Context<'_>) -> Poll<BoxError> {
        let Some(shared) = &self.shared else {
            // Handed on to the body: the future that held it is done.
            return Poll::Pending;
        };
        let sleep = self.sleep.get_or_insert_with(|| {
            let deadline = self
                .started
                .checked_add(shared.timeout)
                .unwrap_or_else(|| self.started + FAR_FUTURE);
            Box::pin(sleep_until(deadline))
        });
        let sleep = sleep.as_mut();
        // An inner future that used up the task's cooperative budget must not
        // starve the timer, or a busy call could outlive its deadline. (The
        // budget is looked at only here, off the ready path; if it was spent
        // before this poll, the timer is polled unconstrained too, which at
        // worst reports a deadline that has passed.)
        let fired = if !coop::has_budget_remaining() {
            pin!(coop::unconstrained(sleep)).poll(cx)
        } else {
            sleep.poll(cx)
        };
        if fired.is_pending() {
            return Poll::Pending;
        }
        shared
            .listeners
            .emit(&shared.name, || TimeoutEvent::TimedOut {
                after: shared.timeout,
            });
        Poll::Ready(Elapsed::by_timeout(shared.name.clone(), shared.timeout).into())
    }
}

impl fmt::Debug for Timer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Timer")
            .field("started", &self.started)
            .field("timeout", &self.timeout())
            .field("armed", &self.sleep.is_some())
            .finish()
    }
}

/// The future of a [`Timeout`](super::Timeout) call.
///
/// The timer is not created until the inner future returns `Pending` for the
/// first time: a call that finishes on its first poll never touches the
/// timer wheel. (Then it is boxed: one allocation for a call that waits.)
///
/// In [`Body`](crate::cover::Body) mode, the deadline then goes to the
/// response's [`ResponseBody`](super::ResponseBody).
#[pin_project]
pub struct ResponseFuture<F, M = Head> {
    #[pin]
    inner: F,
    timer: Timer,
    _mode: PhantomData<fn() -> M>,
}

impl<F, M> ResponseFuture<F, M> {
    pub(crate) fn new(inner: F, started: Instant, shared: Arc<Shared>) -> Self {
        Self {
            inner,
            timer: Timer {
                sleep: None,
                started,
                shared: Some(shared),
            },
            _mode: PhantomData,
        }
    }
}

impl<F, M> fmt::Debug for ResponseFuture<F, M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("started", &self.timer.started)
            .field("timeout", &self.timer.timeout())
            .field("armed", &self.timer.sleep.is_some())
            .finish()
    }
}

impl<F, T, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
{
    type Output = Result<T, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Poll::Ready(result) = this.inner.poll(cx) {
            return Poll::Ready(result.map_err(Into::into));
        }
        this.timer.poll_elapsed(cx).map(Err)
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
        if let Poll::Ready(result) = this.inner.poll(cx) {
            // The head is here in time: the deadline goes on to the body.
            return Poll::Ready(match result {
                Ok(response) => {
                    let timer = this.timer.take();
                    Ok(response.map(|body| super::ResponseBody::new(body, timer)))
                }
                Err(err) => Err(err.into()),
            });
        }
        this.timer.poll_elapsed(cx).map(Err)
    }
}
