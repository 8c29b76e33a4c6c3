//! Replaying `http::Request` bodies: the first attempt's body is recorded as
//! it is sent, up to a limit, and played back for the retries.

use std::fmt;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use pin_project::pin_project;

use super::policy::Replay;
use crate::BoxError;

/// The default limit of a recorded body: 64 KiB.
pub const DEFAULT_REPLAY_LIMIT: usize = 64 * 1024;

/// Makes `http::Request<B>` retryable by recording the body of the first
/// attempt as it is streamed, up to `limit` bytes, and replaying it byte for
/// byte on each retry.
///
/// A body larger than the limit stops being recorded (what was recorded is
/// freed) and its call is not retried. A retry is possible only once the
/// first attempt has sent the whole body: when a server answers before
/// reading it all, the rest was never seen and cannot be replayed, so the
/// answer is returned as is.
///
/// # Examples
///
/// ```
/// use palisade::retry::{ReplayBodies, RetryLayer};
///
/// let layer = RetryLayer::builder()
///     .requests(ReplayBodies::with_limit(1 << 20)) // bodies up to 1 MiB
///     .build()
///     .unwrap();
/// # let _ = layer;
/// ```
#[derive(Debug, Clone, Copy)]
pub struct ReplayBodies {
    limit: usize,
}

impl Default for ReplayBodies {
    fn default() -> Self {
        Self {
            limit: DEFAULT_REPLAY_LIMIT,
        }
    }
}

impl ReplayBodies {
    /// Records bodies up to `limit` bytes.
    pub fn with_limit(limit: usize) -> Self {
        Self { limit }
    }

    /// The most bytes recorded.
    pub fn limit(&self) -> usize {
        self.limit
    }
}

/// What the first attempt's body has sent so far.
#[derive(Debug, Default)]
struct Recording {
    chunks: Vec<Bytes>,
    len: usize,
    over_limit: bool,
    complete: bool,
    trailers: Option<HeaderMap>,
}

/// The request body the inner service sees under [`ReplayBodies`]: the
/// caller's body being recorded, or a recording being played back.
#[pin_project(project = ReplayBodyProj)]
pub enum ReplayBody<B> {
    /// The first attempt: the caller's body, recorded as it streams.
    Recording {
        /// The caller's body.
        #[pin]
        inner: B,
        /// Shared with the retry that may replay it.
        recording: Arc<Mutex<RecordingHandle>>,
    },
    /// A retry: the recorded chunks again.
    Replaying {
        /// The chunks left to send.
        chunks: std::vec::IntoIter<Bytes>,
        /// The trailers, sent last.
        trailers: Option<HeaderMap>,
    },
}

/// The recording shared between a first attempt's body and its retry.
/// Opaque: it exists only to be named in [`ReplayBody`].
pub struct RecordingHandle {
    state: Recording,
    limit: usize,
}

impl fmt::Debug for RecordingHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RecordingHandle")
            .field("len", &self.state.len)
            .field("complete", &self.state.complete)
            .field("over_limit", &self.state.over_limit)
            .finish()
    }
}

impl<B> fmt::Debug for ReplayBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReplayBody::Recording { recording, .. } => f
                .debug_struct("ReplayBody::Recording")
                .field("recording", recording)
                .finish(),
            ReplayBody::Replaying { chunks, .. } => f
                .debug_struct("ReplayBody::Replaying")
                .field("chunks_left", &chunks.len())
                .finish(),
        }
    }
}

impl<B> Body for ReplayBody<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.project() {
            ReplayBodyProj::Recording { inner, recording } => {
                let frame = ready!(inner.poll_frame(cx));
                let mut rec = recording.lock().unwrap_or_else(|e| e.into_inner());
                let limit = rec.limit;
                let state = &mut rec.state;
                match &frame {
                    None => state.complete = true,
                    Some(Ok(frame)) => {
                        if let Some(data) = frame.data_ref() {
                            if !state.over_limit && state.len + data.len() <= limit {
                                state.len += data.len();
                                state.chunks.push(data.clone());
                            } else {
                                state.over_limit = true;
                                state.chunks = Vec::new();
                            }
                        } else if let Some(trailers) = frame.trailers_ref() {
                            state.trailers = Some(trailers.clone());
                        }
                    }
                    // A body that failed cannot be replayed faithfully.
                    Some(Err(_)) => state.over_limit = true,
                }
                Poll::Ready(frame.map(|f| f.map_err(Into::into)))
            }
            ReplayBodyProj::Replaying { chunks, trailers } => {
                if let Some(chunk) = chunks.next() {
                    return Poll::Ready(Some(Ok(Frame::data(chunk))));
                }
                Poll::Ready(trailers.take().map(|t| Ok(Frame::trailers(t))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ReplayBody::Recording { inner, .. } => inner.is_end_stream(),
            ReplayBody::Replaying { chunks, trailers } => chunks.len() == 0 && trailers.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ReplayBody::Recording { inner, .. } => inner.size_hint(),
            ReplayBody::Replaying { chunks, .. } => {
                SizeHint::with_exact(chunks.as_slice().iter().map(|c| c.len() as u64).sum())
            }
        }
    }
}

/// What a retry keeps of an `http::Request`: its head and the recording.
#[derive(Debug)]
pub struct HttpSource {
    parts: http::request::Parts,
    recording: Arc<Mutex<RecordingHandle>>,
}

impl<B> Replay<http::Request<B>> for ReplayBodies
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Request = http::Request<ReplayBody<B>>;
    type Source = HttpSource;

    fn first(&self, req: http::Request<B>, retryable: bool) -> (Self::Request, Option<HttpSource>) {
        let (parts, body) = req.into_parts();
        let recording = Arc::new(Mutex::new(RecordingHandle {
            state: Recording::default(),
            limit: if retryable { self.limit } else { 0 },
        }));
        let source = retryable.then(|| HttpSource {
            parts: parts.clone(),
            recording: recording.clone(),
        });
        let body = ReplayBody::Recording {
            inner: body,
            recording,
        };
        (http::Request::from_parts(parts, body), source)
    }

    fn again(&self, source: &mut HttpSource) -> Option<Self::Request> {
        let rec = source.recording.lock().unwrap_or_else(|e| e.into_inner());
        let state = &rec.state;
        if !state.complete || state.over_limit {
            return None;
        }
        let body = ReplayBody::Replaying {
            chunks: state.chunks.clone().into_iter(),
            trailers: state.trailers.clone(),
        };
        Some(http::Request::from_parts(source.parts.clone(), body))
    }
}
