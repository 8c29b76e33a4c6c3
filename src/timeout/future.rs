use std::fmt;
use std::future::Future;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use pin_project::pin_project;
use tokio::task::coop;
use tokio::time::{Instant, Sleep, sleep_until};

use super::layer::Shared;
use crate::BoxError;
use crate::error::Elapsed;
use crate::event::Event;

/// About thirty years: a deadline past what `Instant` can hold is treated
/// as this far away.
const FAR_FUTURE: Duration = Duration::from_secs(86_400 * 365 * 30);

/// The future of a [`Timeout`](super::Timeout) call.
///
/// The timer is not created until the inner future returns `Pending` for the
/// first time: a call that finishes on its first poll never touches the
/// timer wheel. (Then it is boxed: one allocation for a call that waits.)
#[pin_project]
pub struct ResponseFuture<F> {
    #[pin]
    inner: F,
    /// Boxed: created only for a call that is still running after its
    /// first poll, it would otherwise make every future (and every future
    /// wrapping it) a hundred bytes bigger.
    sleep: Option<Pin<Box<Sleep>>>,
    started: Instant,
    timeout: Duration,
    /// Present only when someone listens for the timeout event.
    events: Option<Arc<Shared>>,
}

impl<F> ResponseFuture<F> {
    pub(crate) fn new(
        inner: F,
        started: Instant,
        timeout: Duration,
        events: Option<Arc<Shared>>,
    ) -> Self {
        Self {
            inner,
            sleep: None,
            started,
            timeout,
            events,
        }
    }
}

impl<F> fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("started", &self.started)
            .field("timeout", &self.timeout)
            .field("armed", &self.sleep.is_some())
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
        let sleep = this.sleep.get_or_insert_with(|| {
            let deadline = this
                .started
                .checked_add(*this.timeout)
                .unwrap_or_else(|| *this.started + FAR_FUTURE);
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
        if let Some(shared) = this.events {
            shared.listeners.emit(|| Event::TimedOut {
                name: &shared.name,
                after: shared.timeout,
            });
        }
        Poll::Ready(Err(Elapsed(()).into()))
    }
}
