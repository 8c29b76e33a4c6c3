//! gRPC's status at the end of a streamed answer.

use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use pin_project::{pin_project, pinned_drop};

use super::{Classify, GrpcClassifier, GrpcCode, Outcome, Settle, Tracker, Verdict};

/// A gRPC response body that tells a [`Tracker`] the call's outcome when
/// its status arrives in the trailers, or when it ends without one, fails,
/// or is dropped, as tower-http's `ClassifyEos` does.
///
/// - trailers: their `grpc-status` is judged by the [`GrpcClassifier`];
///   trailers without one, or a body that ends with no trailers at all, are
///   Unknown (a failure by default);
/// - an error from the body (the stream was reset, the connection lost) is
///   a failure;
/// - dropped before any of these: [`GrpcClassifier::when_dropped`],
///   `Ignored` by default, because the caller ended the call.
///
/// A body whose outcome was known at the head passes frames through.
#[pin_project(PinnedDrop)]
pub struct StatusBody<B, T: Tracker> {
    #[pin]
    inner: B,
    pending: Option<(GrpcClassifier, T)>,
}

impl<B: Body, T: Tracker> StatusBody<B, T> {
    fn new(inner: B, mut pending: Option<(GrpcClassifier, T)>) -> Self {
        if inner.is_end_stream() {
            // Ended at the head, with no status: nobody will poll it for
            // trailers that cannot come.
            finish(&mut pending, |c| c.outcome_of(GrpcCode::Unknown));
        }
        Self { inner, pending }
    }
}

impl<B, T: Tracker> StatusBody<B, T> {
    /// The inner body.
    pub fn get_ref(&self) -> &B {
        &self.inner
    }
}

impl<B, T: Tracker> fmt::Debug for StatusBody<B, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StatusBody")
            .field("pending", &self.pending.is_some())
            .finish()
    }
}

fn code_of_trailers(trailers: &HeaderMap) -> GrpcCode {
    trailers
        .get("grpc-status")
        .and_then(|v| GrpcCode::parse(v.as_bytes()))
        .unwrap_or(GrpcCode::Unknown)
}

fn finish<T: Tracker>(
    pending: &mut Option<(GrpcClassifier, T)>,
    judge: impl FnOnce(&GrpcClassifier) -> Outcome,
) {
    if let Some((classifier, tracker)) = pending.take() {
        tracker.finish(judge(&classifier));
    }
}

impl<B: Body, T: Tracker> Body for StatusBody<B, T> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        let mut this = self.project();
        let frame = ready!(this.inner.as_mut().poll_frame(cx));
        if this.pending.is_some() {
            match &frame {
                Some(Ok(frame)) => {
                    if let Some(trailers) = frame.trailers_ref() {
                        finish(this.pending, |c| c.outcome_of(code_of_trailers(trailers)));
                    } else if this.inner.is_end_stream() {
                        // The last data frame, and no trailers will follow.
                        finish(this.pending, |c| c.outcome_of(GrpcCode::Unknown));
                    }
                }
                Some(Err(_)) => finish(this.pending, |_| Outcome::Failure),
                None => finish(this.pending, |c| c.outcome_of(GrpcCode::Unknown)),
            }
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[pinned_drop]
impl<B, T: Tracker> PinnedDrop for StatusBody<B, T> {
    fn drop(self: Pin<&mut Self>) {
        let this = self.project();
        finish(this.pending, |c| c.dropped_outcome());
    }
}

impl<B: Body, E: 'static> Settle<http::Response<B>, E> for GrpcClassifier {
    type Judge = GrpcClassifier;
    type Response<T: Tracker> = http::Response<StatusBody<B, T>>;

    fn verdict(&self, result: &Result<http::Response<B>, E>) -> Verdict<GrpcClassifier> {
        match result {
            // A 200 head without a status: it comes in the trailers.
            Ok(res)
                if res.status() == http::StatusCode::OK
                    && !res.headers().contains_key("grpc-status") =>
            {
                Verdict::AtEnd(*self)
            }
            _ => Verdict::Now(self.classify(result)),
        }
    }

    fn wrap<T: Tracker>(
        result: Result<http::Response<B>, E>,
        pending: Option<(GrpcClassifier, T)>,
    ) -> Result<Self::Response<T>, E> {
        result.map(|res| res.map(|body| StatusBody::new(body, pending)))
    }
}

#[cfg(feature = "tonic")]
impl<T> Settle<tonic::Response<T>, tonic::Status> for GrpcClassifier {
    type Judge = std::convert::Infallible;
    type Response<K: Tracker> = tonic::Response<T>;

    fn verdict(&self, result: &Result<tonic::Response<T>, tonic::Status>) -> Verdict<Self::Judge> {
        Verdict::Now(self.classify(result))
    }

    fn wrap<K: Tracker>(
        result: Result<tonic::Response<T>, tonic::Status>,
        _pending: Option<(Self::Judge, K)>,
    ) -> Result<tonic::Response<T>, tonic::Status> {
        result
    }
}
