use std::task::{Context, Poll};

use http_body::Body;
use pin_project::pin_project;

use super::future::Timer;
use crate::BoxError;
use crate::cover::{Guard, GuardedBody};

/// The body of a response from a timeout in [`Body`](crate::cover::Body)
/// mode: it keeps the call's deadline, measured from `call`, until it ends.
///
/// Polled after the deadline, before it has ended, the body yields one
/// [`Elapsed`](crate::error::Elapsed) error (as a [`BoxError`]) and then
/// nothing more; a body being read is woken at the deadline. The deadline
/// is looked at before the inner body, so that a body whose frames are
/// always ready cannot outrun it. Once the body reports
/// [`is_end_stream`](Body::is_end_stream), yields its last frame or an
/// error, the timer is dropped. Frames, `is_end_stream` and `size_hint` are
/// the inner body's until the deadline cuts it; its error becomes a
/// [`BoxError`].
///
/// Made by a timeout built with
/// [`cover_body`](super::TimeoutBuilder::cover_body); see its example.
#[pin_project]
pub struct ResponseBody<B> {
    #[pin]
    inner: GuardedBody<B, Timer>,
}

impl<B: Body> ResponseBody<B> {
    pub(crate) fn new(inner: B, deadline: Timer) -> Self {
        Self {
            inner: GuardedBody::new(inner, Some(deadline)),
        }
    }
}

impl Guard for Timer {
    #[inline]
    fn poll_cut(&mut self, cx: &mut Context<'_>) -> Poll<BoxError> {
        self.poll_elapsed(cx)
    }
}

crate::cover::delegate_guarded_body!(ResponseBody);
