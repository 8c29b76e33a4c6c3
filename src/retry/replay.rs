//! Replaying `http::Request` bodies as real clients send them.
//!
//! Every attempt gets a [`ReplayBody`]. The attempts share one recording and
//! the caller's original body, which only one attempt holds at a time: an
//! attempt first plays back what earlier attempts read, then goes on reading
//! the original body, recording as it goes. An attempt that ends before its
//! body was read (the connection was refused, the server answered early)
//! gives the unread rest back, and the next attempt continues from there.
//! This is the design of Linkerd's `ReplayBody`.

use std::fmt;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};

use super::policy::Replay;
use crate::BoxError;

/// The default limit of a recorded body: 64 KiB.
pub const DEFAULT_REPLAY_LIMIT: usize = 64 * 1024;

/// Makes `http::Request<B>` retryable by recording the request body as the
/// attempts read it, up to `limit` bytes, and replaying it byte for byte.
///
/// Works with the way real clients send bodies: hyper never polls a body
/// whose `is_end_stream()` is true (an empty body, or after the last data
/// frame), and a request whose connection failed leaves its body unread.
/// What an attempt did not read is given back, and the next attempt sends it
/// after the recorded part.
///
/// A body larger than the limit is sent once, whole, never truncated; once
/// more than `limit` bytes were read, the recording is freed and the call is
/// not retried. A request that is not retryable (see
/// [`Classify::is_retryable`](crate::classify::Classify::is_retryable)) is
/// recorded with a limit of zero: it can be sent again only if its body was
/// never read, which is what a connection failure leaves.
///
/// Trailers are replayed after the data; `size_hint` and `is_end_stream`
/// are exact in every state.
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

/// The body shared by all attempts of one call, held by one attempt at a
/// time.
struct BodyState<B> {
    /// What attempts have read of the original body, in order.
    recorded: Vec<Bytes>,
    recorded_len: usize,
    trailers: Option<HeaderMap>,
    /// The original body: what no attempt has read yet.
    rest: B,
    /// The original body has ended: it returned `None` or trailers, or
    /// reported `is_end_stream()`. It is never polled again.
    rest_ended: bool,
    /// More than the limit was read, or the body failed: what was read is
    /// not all kept, so no later attempt can send the body again.
    lost: bool,
}

impl<B: Body> BodyState<B> {
    fn rest_is_done(&self) -> bool {
        self.rest_ended || self.rest.is_end_stream()
    }
}

struct Slot<B> {
    /// `None` while an attempt's body holds it.
    state: Option<BodyState<B>>,
    /// The attempt waiting for an earlier attempt to give the body back.
    waiting: Option<Waker>,
}

/// The recording shared between a call's attempts. Opaque: it exists only
/// to be named in [`ReplayBody`] and [`HttpSource`].
pub struct Recording<B> {
    slot: Mutex<Slot<B>>,
    limit: usize,
    /// The original body's size hint: what every attempt sends in all.
    size_hint: SizeHint,
}

impl<B> Recording<B> {
    fn lock(&self) -> MutexGuard<'_, Slot<B>> {
        // A panic while the lock was held left at worst a recording that
        // says less than it could: never an unsound one.
        self.slot.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl<B> fmt::Debug for Recording<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let slot = self.lock();
        let mut d = f.debug_struct("Recording");
        d.field("limit", &self.limit);
        match &slot.state {
            Some(state) => d
                .field("recorded_len", &state.recorded_len)
                .field("rest_ended", &state.rest_ended)
                .field("lost", &state.lost),
            None => d.field("held_by_an_attempt", &true),
        };
        d.finish()
    }
}

/// The request body of one attempt under [`ReplayBodies`]: the recorded
/// part first, then the rest of the caller's body.
pub struct ReplayBody<B> {
    recording: Arc<Recording<B>>,
    /// Taken from the shared slot at the first poll, given back on drop.
    state: Option<BodyState<B>>,
    /// How many recorded chunks (and bytes) this attempt has sent.
    sent_chunks: usize,
    sent_bytes: usize,
    sent_trailers: bool,
}

impl<B> fmt::Debug for ReplayBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReplayBody")
            .field("holds_body", &self.state.is_some())
            .field("sent_bytes", &self.sent_bytes)
            .finish()
    }
}

/// Why a later attempt's body could not be sent: an earlier attempt read
/// more than the limit before this one started.
#[derive(Debug)]
struct NotReplayable;

impl fmt::Display for NotReplayable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the request body was read past the replay limit by an earlier attempt")
    }
}

impl std::error::Error for NotReplayable {}

impl<B> ReplayBody<B> {
    fn new(recording: Arc<Recording<B>>) -> Self {
        Self {
            recording,
            state: None,
            sent_chunks: 0,
            sent_bytes: 0,
            sent_trailers: false,
        }
    }
}

impl<B> Drop for ReplayBody<B> {
    fn drop(&mut self) {
        if let Some(state) = self.state.take() {
            let mut slot = self.recording.lock();
            slot.state = Some(state);
            if let Some(waker) = slot.waiting.take() {
                waker.wake();
            }
        }
    }
}

impl<B> Body for ReplayBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        if this.state.is_none() {
            let mut slot = this.recording.lock();
            match slot.state.take() {
                // An earlier attempt read more than was kept: this one
                // cannot send the whole body, and must not send part of it.
                Some(state) if state.lost => {
                    slot.state = Some(state);
                    return Poll::Ready(Some(Err(NotReplayable.into())));
                }
                Some(state) => {
                    drop(slot);
                    this.state = Some(state);
                }
                None => {
                    // An earlier attempt's body has not been dropped yet.
                    slot.waiting = Some(cx.waker().clone());
                    return Poll::Pending;
                }
            }
        }
        let limit = this.recording.limit;
        let state = this.state.as_mut().expect("acquired above");
        if let Some(chunk) = state.recorded.get(this.sent_chunks) {
            this.sent_chunks += 1;
            this.sent_bytes += chunk.len();
            return Poll::Ready(Some(Ok(Frame::data(chunk.clone()))));
        }
        if !state.rest_is_done() {
            let frame = match Pin::new(&mut state.rest).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(frame) => frame,
            };
            match frame {
                None => state.rest_ended = true,
                Some(Ok(frame)) => {
                    let frame = match frame.into_data() {
                        Ok(data) => {
                            if !state.lost && state.recorded_len + data.len() <= limit {
                                state.recorded_len += data.len();
                                state.recorded.push(data.clone());
                                this.sent_chunks = state.recorded.len();
                                this.sent_bytes = state.recorded_len;
                            } else if !state.lost {
                                state.lost = true;
                                state.recorded = Vec::new();
                            }
                            return Poll::Ready(Some(Ok(Frame::data(data))));
                        }
                        Err(frame) => frame,
                    };
                    state.rest_ended = true;
                    if let Some(trailers) = frame.trailers_ref() {
                        state.trailers = Some(trailers.clone());
                        this.sent_trailers = true;
                    }
                    return Poll::Ready(Some(Ok(frame)));
                }
                Some(Err(err)) => {
                    state.lost = true;
                    state.recorded = Vec::new();
                    return Poll::Ready(Some(Err(err.into())));
                }
            }
        }
        if !this.sent_trailers {
            this.sent_trailers = true;
            if let Some(trailers) = &state.trailers {
                return Poll::Ready(Some(Ok(Frame::trailers(trailers.clone()))));
            }
        }
        Poll::Ready(None)
    }

    fn is_end_stream(&self) -> bool {
        let ended = |state: &BodyState<B>, sent_chunks: usize, sent_trailers: bool| {
            sent_chunks >= state.recorded.len()
                && state.rest_is_done()
                && (sent_trailers || state.trailers.is_none())
        };
        match &self.state {
            Some(state) => ended(state, self.sent_chunks, self.sent_trailers),
            None => match &self.recording.lock().state {
                Some(state) => ended(state, 0, false),
                // Held by an earlier attempt: not known yet, so not ended.
                None => false,
            },
        }
    }

    fn size_hint(&self) -> SizeHint {
        let remaining = |state: &BodyState<B>, sent_bytes: usize, sent_trailers: bool| {
            let recorded = (state.recorded_len - sent_bytes.min(state.recorded_len)) as u64;
            if state.rest_is_done() {
                if state.trailers.is_some() && !sent_trailers {
                    // Exact would make an HTTP/1.1 client send a
                    // content-length, and drop the trailers.
                    let mut hint = SizeHint::new();
                    hint.set_lower(recorded);
                    return hint;
                }
                return SizeHint::with_exact(recorded);
            }
            let rest = state.rest.size_hint();
            let mut hint = SizeHint::new();
            hint.set_lower(rest.lower().saturating_add(recorded));
            if let Some(upper) = rest.upper() {
                hint.set_upper(upper.saturating_add(recorded));
            }
            hint
        };
        match &self.state {
            Some(state) => remaining(state, self.sent_bytes, self.sent_trailers),
            None => match &self.recording.lock().state {
                Some(state) => remaining(state, 0, false),
                // Held by an earlier attempt: this one will send the whole
                // body, whatever the other has read of it so far.
                None => self.recording.size_hint,
            },
        }
    }
}

/// What a retry keeps of an `http::Request`: its head and the recording.
pub struct HttpSource<B> {
    parts: http::request::Parts,
    recording: Arc<Recording<B>>,
}

impl<B> fmt::Debug for HttpSource<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpSource")
            .field("method", &self.parts.method)
            .field("uri", &self.parts.uri)
            .field("recording", &self.recording)
            .finish()
    }
}

impl<B> Replay<http::Request<B>> for ReplayBodies
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Request = http::Request<ReplayBody<B>>;
    type Source = HttpSource<B>;

    fn first(
        &self,
        req: http::Request<B>,
        retryable: bool,
    ) -> (Self::Request, Option<Self::Source>) {
        let (parts, body) = req.into_parts();
        let recording = Arc::new(Recording {
            size_hint: body.size_hint(),
            slot: Mutex::new(Slot {
                state: Some(BodyState {
                    recorded: Vec::new(),
                    recorded_len: 0,
                    trailers: None,
                    rest: body,
                    rest_ended: false,
                    lost: false,
                }),
                waiting: None,
            }),
            // Not retryable: kept only for an attempt that never read its
            // body (a connection failure), which needs no recording.
            limit: if retryable { self.limit } else { 0 },
        });
        let source = HttpSource {
            parts: parts.clone(),
            recording: Arc::clone(&recording),
        };
        let body = ReplayBody::new(recording);
        (http::Request::from_parts(parts, body), Some(source))
    }

    fn again(&self, source: &mut Self::Source) -> Option<Self::Request> {
        if let Some(state) = &source.recording.lock().state
            && state.lost
        {
            return None;
        }
        let body = ReplayBody::new(Arc::clone(&source.recording));
        Some(http::Request::from_parts(source.parts.clone(), body))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::VecDeque;
    use std::future::poll_fn;

    /// A body that knows its exact size, ends as soon as its frames run out
    /// (`is_end_stream`), and may carry trailers: as hyper's own bodies do.
    #[derive(Debug)]
    struct Chunks {
        frames: VecDeque<Frame<Bytes>>,
    }

    impl Body for Chunks {
        type Data = Bytes;
        type Error = std::convert::Infallible;
        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            Poll::Ready(self.frames.pop_front().map(Ok))
        }
        fn is_end_stream(&self) -> bool {
            self.frames.is_empty()
        }
        fn size_hint(&self) -> SizeHint {
            let data = self
                .frames
                .iter()
                .filter_map(|f| f.data_ref())
                .map(|d| d.len());
            SizeHint::with_exact(data.sum::<usize>() as u64)
        }
    }

    fn chunks(data: &[Vec<u8>], trailers: bool) -> Chunks {
        let mut frames: VecDeque<_> = data
            .iter()
            .map(|d| Frame::data(Bytes::from(d.clone())))
            .collect();
        if trailers {
            let mut t = HeaderMap::new();
            t.insert("x-end", "1".parse().unwrap());
            frames.push_back(Frame::trailers(t));
        }
        Chunks { frames }
    }

    /// Reads up to `frames` frames (all if `None`), checking before each
    /// poll that the body's size hint and end-of-stream flag tell the
    /// truth about what is left. Returns the data and trailers read.
    async fn read(
        body: &mut ReplayBody<Chunks>,
        frames: Option<usize>,
        left: &[u8],
        trailers_left: bool,
    ) -> Result<(Vec<u8>, bool), BoxError> {
        let mut data = Vec::new();
        let mut trailers = false;
        let mut n = 0;
        while frames.is_none_or(|f| n < f) {
            let remaining = (left.len() - data.len()) as u64;
            let hint = body.size_hint();
            let ended = remaining == 0 && (trailers || !trailers_left);
            assert_eq!(body.is_end_stream(), ended, "is_end_stream");
            assert!(hint.lower() <= remaining, "{hint:?} vs {remaining}");
            assert!(hint.upper().is_none_or(|u| u >= remaining), "{hint:?}");
            // With trailers still to come, a recorded body is not sized
            // exactly (an HTTP/1.1 client would send a content-length and
            // drop them); the bounds above still hold.
            if !trailers_left || trailers {
                assert_eq!(hint.exact(), Some(remaining), "exact when known");
            }
            match poll_fn(|cx| Pin::new(&mut *body).poll_frame(cx)).await {
                None => break,
                Some(frame) => {
                    let frame = frame?;
                    if let Some(d) = frame.data_ref() {
                        data.extend_from_slice(d);
                    } else {
                        trailers = frame.trailers_ref().is_some();
                    }
                }
            }
            n += 1;
        }
        Ok((data, trailers))
    }

    proptest! {
        /// Attempts that each read part of the body, then are dropped, and
        /// a last attempt that reads it all: the last one sends exactly the
        /// original body, whatever the earlier ones read, as long as no
        /// more than the limit was read.
        #[test]
        fn every_attempt_sends_the_whole_body(
            data in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 1..8), 0..6),
            trailers in any::<bool>(),
            partial in proptest::collection::vec(0usize..8, 0..4),
            limit in 0usize..64,
        ) {
            let all: Vec<u8> = data.concat();
            tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
                let req = http::Request::put("/").body(chunks(&data, trailers)).unwrap();
                let (first, source) = ReplayBodies::with_limit(limit).first(req, true);
                let mut source = source.unwrap();
                let mut body = first.into_body();
                let mut most_read = 0;
                for frames in partial {
                    let (read, _) = read(&mut body, Some(frames), &all, trailers).await.unwrap();
                    most_read = most_read.max(read.len());
                    drop(body);
                    match ReplayBodies::with_limit(limit).again(&mut source) {
                        Some(req) => body = req.into_body(),
                        None => {
                            // Only a body read past the limit is lost.
                            prop_assert!(most_read > limit);
                            return Ok(());
                        }
                    }
                }
                let (read, sent_trailers) = read(&mut body, None, &all, trailers).await.unwrap();
                prop_assert_eq!(read, all.clone());
                prop_assert_eq!(sent_trailers, trailers);
                drop(body);
                // Read to the end within the limit: replayable once more.
                let again = ReplayBodies::with_limit(limit).again(&mut source);
                prop_assert_eq!(again.is_some(), all.len() <= limit);
                Ok(())
            })?;
        }
    }

    /// A later attempt that starts after an earlier one read past the limit
    /// fails rather than send part of the body.
    #[tokio::test]
    async fn a_body_read_past_the_limit_is_not_sent_again() {
        let data = vec![b"0123".to_vec(), b"4567".to_vec()];
        let req = http::Request::put("/").body(chunks(&data, false)).unwrap();
        let replay = ReplayBodies::with_limit(4);
        let (first, source) = replay.first(req, true);
        let mut source = source.unwrap();
        // A retry prepared while the first attempt still holds the body.
        let mut second = replay.again(&mut source).unwrap().into_body();
        let mut first = first.into_body();
        let (read, _) = read(&mut first, None, b"01234567", false).await.unwrap();
        assert_eq!(read, b"01234567", "the first attempt is sent whole");
        // Waiting for the first to give the body back...
        let mut cx = Context::from_waker(Waker::noop());
        assert!(Pin::new(&mut second).poll_frame(&mut cx).is_pending());
        drop(first);
        let err = poll_fn(|cx| Pin::new(&mut second).poll_frame(cx))
            .await
            .unwrap()
            .unwrap_err();
        assert!(err.to_string().contains("replay limit"), "{err}");
        assert!(replay.again(&mut source).is_none());
    }

    /// A request that may not be retried keeps no recording, but a body
    /// that was never read can still be sent again.
    #[tokio::test]
    async fn not_retryable_unread_body_can_be_sent_again() {
        let data = vec![b"order".to_vec()];
        let req = http::Request::post("/").body(chunks(&data, false)).unwrap();
        let replay = ReplayBodies::default();
        let (first, source) = replay.first(req, false);
        let mut source = source.unwrap();
        drop(first); // the connection was refused: never polled
        let mut body = replay.again(&mut source).unwrap().into_body();
        let (read, _) = read(&mut body, None, b"order", false).await.unwrap();
        assert_eq!(read, b"order");
        drop(body);
        assert!(replay.again(&mut source).is_none(), "it was read now");
    }
}
