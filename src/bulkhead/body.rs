use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};

use http_body::{Body, Frame, SizeHint};
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

impl<B> Body for ResponseBody<B>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    type Data = B::Data;
    type Error = BoxError;

    #[inline]
    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        self.project().inner.poll_frame(cx)
    }

    #[inline]
    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    #[inline]
    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl<B> fmt::Debug for ResponseBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseBody")
            .field("inner", &self.inner)
            .finish()
    }
}
