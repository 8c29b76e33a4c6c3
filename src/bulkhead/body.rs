use std::task::{Context, Poll};

use http_body::Body;
use pin_project::pin_project;

use super::future::Permit;
use crate::BoxError;
use crate::cover::{Guard, GuardedBody};

/// The body of a response from a bulkhead in [`Body`](crate::cover::Body)
/// mode: it holds the call's permit until it ends or is dropped.
///
/// The permit is given back as soon as the body reports
/// [`is_end_stream`](Body::is_end_stream), yields its last frame (`None`) or
/// an error, or is dropped. Frames, `is_end_stream` and `size_hint` are
/// the inner body's; its error becomes a [`BoxError`].
///
/// Made by a bulkhead built with
/// [`cover_body`](super::BulkheadBuilder::cover_body); see its example.
#[pin_project]
pub struct ResponseBody<B> {
    #[pin]
    inner: GuardedBody<B, Permit>,
}

impl<B: Body> ResponseBody<B> {
    pub(crate) fn new(inner: B, permit: Option<Permit>) -> Self {
        Self {
            inner: GuardedBody::new(inner, permit),
        }
    }
}

impl Guard for Permit {
    /// A permit never ends a body early.
    #[inline]
    fn poll_cut(&mut self, _: &mut Context<'_>) -> Poll<BoxError> {
        Poll::Pending
    }
}

crate::cover::delegate_guarded_body!(ResponseBody);
