//! Replaying `http::Request` bodies as real clients send them.
//!
//! Every attempt gets a [`ReplayBody`]. The attempts share one recording
//! and the caller's original body: an attempt first plays back what earlier
//! attempts read, then goes on reading the original body, recording as it
//! goes. What an attempt did not read (the connection was refused, the
//! server answered early) is read by the next one. This is the design of
//! Linkerd's `ReplayBody`, with one change: the newest attempt takes the
//! original body over at its first poll. A client may keep an abandoned
//! attempt's body for as long as its connection lives (hyper does, while a
//! server that answered early leaves the rest unread); waiting for it to be
//! dropped could wait forever, so the abandoned attempt's body fails
//! instead, if it is ever polled again.

use std::fmt;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};

use super::{Replay, ReplaySource};
use crate::BoxError;

/// The default limit of a recorded body: 64 KiB.
pub const DEFAULT_REPLAY_LIMIT: usize = 64 * 1024;

/// Makes `http::Request<B>` retryable by recording the request body as the
/// attempts read it, up to `limit` bytes, and replaying it byte for byte.
///
/// Works with the way real clients send bodies: hyper never polls a body
/// whose `is_end_stream()` is true (an empty body, or after the last data
/// frame), and a request whose connection failed leaves its body unread.
/// What an attempt did not read is read by the next, after the recorded
/// part. The newest attempt takes the body over at its first poll: a retry
/// never waits for the client to drop an earlier attempt's body (hyper may keep it while a
/// server that answered early leaves the rest unread), and that earlier
/// body fails if it is polled again.
///
/// A body larger than the limit is sent once, whole, never truncated; once
/// more than `limit` bytes were read, the recording is freed and the call is
/// not retried. A body that fails mid-stream is not retried either. A
/// request that is not retryable (see
/// [`ClassifyRequest::is_retryable`](crate::classify::ClassifyRequest::is_retryable)) is
/// recorded with a limit of zero: it can be sent again only if its body was
/// never read, which is what a connection failure leaves.
///
/// Trailers are replayed after the data. (hyper's HTTP/1.1 client sends
/// only the trailer fields that the request's `Trailer` header announces,
/// on every attempt alike.) `is_end_stream` is exact in every state, and
/// `size_hint` is exact whenever the size is known, except that a body
/// whose trailers are still to come is not sized exactly: an HTTP/1.1
/// client would send a `content-length` and drop them. So framing may
/// differ between attempts: a stream of unknown size goes chunked on the
/// first attempt and, once recorded whole, with a `content-length` on the
/// next.
///
/// The caller's body must be `Unpin` (box it otherwise, for example with
/// `http_body_util::BodyExt::boxed`). The inner service receives
/// `http::Request<ReplayBody<B>>`. A tonic `Channel` takes
/// `tonic::body::Body`: use [`TonicBodies`](super::TonicBodies) (feature
/// `tonic`) for it, which wraps each copy.
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

/// The body shared by all attempts of one call.
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
    /// The attempt that owns the original body: the newest that has been
    /// polled.
    owner: u32,
    /// The newest attempt made.
    issued: u32,
    /// A hedge waiting for the body to be recorded whole
    /// ([`HttpSource::poll_alongside`]): woken when the body moves on.
    waiting: Option<Waker>,
}

impl<B: Body> BodyState<B> {
    fn rest_is_done(&self) -> bool {
        self.rest_ended || self.rest.is_end_stream()
    }
}

/// The recording shared between a call's attempts. Opaque: it exists only
/// to be named in [`ReplayBody`] and [`HttpSource`].
pub struct Recording<B> {
    state: Mutex<BodyState<B>>,
    limit: usize,
}

impl<B> Recording<B> {
    fn lock(&self) -> MutexGuard<'_, BodyState<B>> {
        // A panic while the lock was held left at worst a recording that
        // says less than it could: never an unsound one.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl<B> fmt::Debug for Recording<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.lock();
        f.debug_struct("Recording")
            .field("limit", &self.limit)
            .field("recorded_len", &state.recorded_len)
            .field("rest_ended", &state.rest_ended)
            .field("lost", &state.lost)
            .field("attempts", &(state.issued + 1))
            .finish()
    }
}

/// The request body of one attempt under [`ReplayBodies`]: the recorded
/// part first, then the rest of the caller's body.
///
/// The body of an attempt that a retry has moved on from fails if it is
/// polled again (see [`ReplayBodies`]).
pub struct ReplayBody<B> {
    recording: Arc<Recording<B>>,
    /// Which attempt this is, from 0.
    attempt: u32,
    /// How many recorded chunks (and bytes) this attempt has sent.
    sent_chunks: usize,
    sent_bytes: usize,
    sent_trailers: bool,
    /// A copy made beside running attempts (a hedge), once the recording
    /// was complete: it only plays the recording back, so it neither takes
    /// the body over nor is superseded.
    beside: bool,
}

impl<B> fmt::Debug for ReplayBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReplayBody")
            .field("attempt", &self.attempt)
            .field("sent_bytes", &self.sent_bytes)
            .finish()
    }
}

/// The body of an attempt that a retry has moved on from.
#[derive(Debug)]
struct Superseded;

impl fmt::Display for Superseded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the request body belongs to a later attempt of the retry now")
    }
}

impl std::error::Error for Superseded {}

/// The body of an attempt made before an earlier one read past the limit.
#[derive(Debug)]
struct Lost;

impl fmt::Display for Lost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the request body was read past the replay limit by an earlier attempt")
    }
}

impl std::error::Error for Lost {}

impl<B> ReplayBody<B> {
    fn new(recording: Arc<Recording<B>>, attempt: u32) -> Self {
        Self {
            recording,
            attempt,
            sent_chunks: 0,
            sent_bytes: 0,
            sent_trailers: false,
            beside: false,
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
        let limit = this.recording.limit;
        let mut state = this.recording.lock();
        // The newest attempt takes the body over at its first poll (not
        // when it is made: a retry that then gives up, say for its budget,
        // must not cut off the attempt whose answer it returns). A copy
        // made beside running attempts has the whole recording to play and
        // needs nothing taken over.
        if !this.beside {
            if state.owner < this.attempt {
                if state.lost {
                    // An earlier attempt read past the limit after this one
                    // was made: what it read is gone, and a body with a
                    // hole in it must never be sent.
                    return Poll::Ready(Some(Err(Lost.into())));
                }
                state.owner = this.attempt;
            } else if state.owner > this.attempt {
                return Poll::Ready(Some(Err(Superseded.into())));
            }
        }
        if let Some(chunk) = state.recorded.get(this.sent_chunks) {
            let chunk = chunk.clone();
            this.sent_chunks += 1;
            this.sent_bytes += chunk.len();
            return Poll::Ready(Some(Ok(Frame::data(chunk))));
        }
        if !state.rest_is_done() {
            let frame = match Pin::new(&mut state.rest).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(frame) => frame,
            };
            // The body moved on: it may be whole now, or lost.
            if let Some(hedge) = state.waiting.take() {
                hedge.wake();
            }
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
        let state = self.recording.lock();
        (self.beside || state.owner <= self.attempt)
            && self.sent_chunks >= state.recorded.len()
            && state.rest_is_done()
            && (self.sent_trailers || state.trailers.is_none())
    }

    fn size_hint(&self) -> SizeHint {
        let state = self.recording.lock();
        let recorded = (state.recorded_len - self.sent_bytes.min(state.recorded_len)) as u64;
        if state.rest_is_done() {
            if state.trailers.is_some() && !self.sent_trailers {
                // Exact would make an HTTP/1.1 client send a content-length,
                // and drop the trailers.
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
            state: Mutex::new(BodyState {
                recorded: Vec::new(),
                recorded_len: 0,
                trailers: None,
                rest: body,
                rest_ended: false,
                lost: false,
                owner: 0,
                issued: 0,
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
        let body = ReplayBody::new(recording, 0);
        (http::Request::from_parts(parts, body), Some(source))
    }
}

impl<B: Body> ReplaySource for HttpSource<B> {
    type Request = http::Request<ReplayBody<B>>;
    const HTTP: bool = true;

    fn again(&mut self) -> Option<Self::Request> {
        let attempt = {
            let mut state = self.recording.lock();
            if state.lost {
                return None;
            }
            state.issued = state.issued.checked_add(1)?;
            state.issued
        };
        let body = ReplayBody::new(Arc::clone(&self.recording), attempt);
        Some(http::Request::from_parts(self.parts.clone(), body))
    }

    /// A copy only once the caller's body has ended, whole within the
    /// limit: the copy plays the recording back and leaves the running
    /// attempts' bodies alone. Before that, `None` (the hedge asks
    /// [`poll_alongside`](Self::poll_alongside), which waits).
    fn alongside(&mut self) -> Option<Self::Request> {
        let attempt = {
            let mut state = self.recording.lock();
            if state.lost || !state.rest_is_done() {
                return None;
            }
            state.issued = state.issued.checked_add(1)?;
            state.issued
        };
        let mut body = ReplayBody::new(Arc::clone(&self.recording), attempt);
        body.beside = true;
        Some(http::Request::from_parts(self.parts.clone(), body))
    }

    /// [`alongside`](Self::alongside), waiting while the running attempt
    /// is still sending the body: woken each time it reads more, ready
    /// once the body is whole (a copy) or over the limit (`None`).
    fn poll_alongside(&mut self, cx: &mut Context<'_>) -> Poll<Option<Self::Request>> {
        {
            let mut state = self.recording.lock();
            if !state.lost && !state.rest_is_done() {
                state.waiting = Some(cx.waker().clone());
                return Poll::Pending;
            }
        }
        Poll::Ready(self.alongside())
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
                    match source.again() {
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
                let again = source.again();
                prop_assert_eq!(again.is_some(), all.len() <= limit);
                Ok(())
            })?;
        }
    }

    /// A body read past the limit is sent whole by its attempt, and then
    /// not again.
    #[tokio::test]
    async fn a_body_read_past_the_limit_is_not_sent_again() {
        let data = vec![b"0123".to_vec(), b"4567".to_vec()];
        let req = http::Request::put("/").body(chunks(&data, false)).unwrap();
        let replay = ReplayBodies::with_limit(4);
        let (first, source) = replay.first(req, true);
        let mut source = source.unwrap();
        let mut first = first.into_body();
        let (read, _) = read(&mut first, None, b"01234567", false).await.unwrap();
        assert_eq!(read, b"01234567", "the first attempt is sent whole");
        assert!(source.again().is_none());
    }

    /// The limit is what was asked, 64 KiB by default; the recording and
    /// each attempt's body say where they stand.
    #[tokio::test]
    async fn limits_and_states_read_back() {
        assert_eq!(ReplayBodies::default().limit(), 65_536);
        assert_eq!(ReplayBodies::with_limit(10).limit(), 10);
        let data = vec![b"0123".to_vec(), b"4567".to_vec()];
        let req = http::Request::put("/").body(chunks(&data, false)).unwrap();
        let (first, source) = ReplayBodies::with_limit(16).first(req, true);
        let mut source = source.unwrap();
        let mut body = first.into_body();
        let (read_bytes, _) = read(&mut body, None, b"01234567", false).await.unwrap();
        assert_eq!(read_bytes, b"01234567");
        assert_eq!(
            format!("{body:?}"),
            "ReplayBody { attempt: 0, sent_bytes: 8 }"
        );
        let second = source.again().unwrap().into_body();
        assert_eq!(
            format!("{:?}", source.recording),
            "Recording { limit: 16, recorded_len: 8, rest_ended: false, lost: false, attempts: 2 }"
        );
        assert_eq!(
            format!("{second:?}"),
            "ReplayBody { attempt: 1, sent_bytes: 0 }"
        );
        assert!(format!("{source:?}").starts_with("HttpSource { method: PUT, uri: /, "));
    }

    /// A retry moves on while the client still holds the earlier attempt's
    /// body (a server that answered early and stopped reading): the new
    /// attempt sends the whole body at once, without waiting, and the
    /// abandoned one fails if it is polled again.
    #[tokio::test]
    async fn a_retry_does_not_wait_for_an_abandoned_attempt() {
        let data = vec![b"0123".to_vec(), b"4567".to_vec()];
        let req = http::Request::put("/").body(chunks(&data, false)).unwrap();
        let replay = ReplayBodies::default();
        let (first, source) = replay.first(req, true);
        let mut source = source.unwrap();
        let mut first = first.into_body();
        let (sent, _) = read(&mut first, Some(1), b"01234567", false).await.unwrap();
        assert_eq!(sent, b"0123");
        let mut second = source.again().unwrap().into_body();
        let (sent, _) = read(&mut second, None, b"01234567", false).await.unwrap();
        assert_eq!(sent, b"01234567");
        let err = poll_fn(|cx| Pin::new(&mut first).poll_frame(cx))
            .await
            .unwrap()
            .unwrap_err();
        assert!(err.to_string().contains("later attempt"), "{err}");
        assert!(!first.is_end_stream());
        drop(first);
        // The call's body is still replayable.
        assert!(source.again().is_some());
    }

    /// A hedge's copy (`alongside`) is made only once the body has been
    /// read whole; it plays the recording (trailers included) and takes
    /// nothing from the running attempt, which goes on undisturbed; a
    /// retry's copy made after it still takes the body over as usual.
    #[tokio::test]
    async fn a_copy_beside_a_running_attempt_waits_for_the_whole_body_and_takes_nothing() {
        let data = vec![b"0123".to_vec(), b"4567".to_vec()];
        let req = http::Request::put("/").body(chunks(&data, true)).unwrap();
        let (first, source) = ReplayBodies::default().first(req, true);
        let mut source = source.unwrap();
        let mut first = first.into_body();
        assert!(source.alongside().is_none(), "nothing read yet");
        let (sent, _) = read(&mut first, Some(1), b"01234567", true).await.unwrap();
        assert_eq!(sent, b"0123");
        assert!(source.alongside().is_none(), "half read");
        let (rest, trailers) = read(&mut first, Some(2), b"4567", true).await.unwrap();
        assert_eq!((rest.as_slice(), trailers), (&b"4567"[..], true));
        let mut beside = source.alongside().expect("read whole").into_body();
        let (sent, trailers) = read(&mut beside, None, b"01234567", true).await.unwrap();
        assert_eq!((sent.as_slice(), trailers), (&b"01234567"[..], true));
        // The first attempt is not superseded: it ends as it would have.
        assert!(first.is_end_stream());
        assert!(
            poll_fn(|cx| Pin::new(&mut first).poll_frame(cx))
                .await
                .is_none()
        );
        // A later retry's copy sends the whole body too.
        let mut retry = source.again().unwrap().into_body();
        let (sent, _) = read(&mut retry, None, b"01234567", true).await.unwrap();
        assert_eq!(sent, b"01234567");

        // A body over the limit is never copied beside.
        let req = http::Request::put("/").body(chunks(&data, false)).unwrap();
        let (first, source) = ReplayBodies::with_limit(4).first(req, true);
        let mut source = source.unwrap();
        let mut first = first.into_body();
        let _ = read(&mut first, None, b"01234567", false).await.unwrap();
        assert!(source.alongside().is_none(), "over the limit");
        // An empty body can be copied at once.
        let req = http::Request::get("/").body(chunks(&[], false)).unwrap();
        let (_first, source) = ReplayBodies::default().first(req, true);
        assert!(source.unwrap().alongside().is_some());
    }

    /// An attempt made while the earlier one still reads, which then reads
    /// past the limit, fails rather than send a body with a hole in it.
    #[tokio::test]
    async fn an_attempt_made_before_the_limit_was_passed_is_never_truncated() {
        let data = vec![b"0123".to_vec(), b"4567".to_vec()];
        let req = http::Request::put("/").body(chunks(&data, false)).unwrap();
        let replay = ReplayBodies::with_limit(4);
        let (first, source) = replay.first(req, true);
        let mut source = source.unwrap();
        let mut first = first.into_body();
        let (sent, _) = read(&mut first, Some(1), b"01234567", false).await.unwrap();
        assert_eq!(sent, b"0123");
        let mut second = source.again().unwrap().into_body();
        // The first goes on (it was not superseded: the second has not
        // been polled), past the limit.
        let (sent, _) = read(&mut first, None, b"4567", false).await.unwrap();
        assert_eq!(sent, b"4567");
        let err = poll_fn(|cx| Pin::new(&mut second).poll_frame(cx))
            .await
            .unwrap()
            .unwrap_err();
        assert!(err.to_string().contains("replay limit"), "{err}");
    }

    /// A retry that makes the next attempt and then gives up (its budget
    /// is spent, say) returns the earlier attempt's answer: that attempt's
    /// body must go on undisturbed.
    #[tokio::test]
    async fn an_attempt_made_but_never_sent_takes_nothing_over() {
        let data = vec![b"0123".to_vec(), b"4567".to_vec()];
        let req = http::Request::put("/").body(chunks(&data, false)).unwrap();
        let replay = ReplayBodies::default();
        let (first, source) = replay.first(req, true);
        let mut source = source.unwrap();
        let mut first = first.into_body();
        let (sent, _) = read(&mut first, Some(1), b"01234567", false).await.unwrap();
        assert_eq!(sent, b"0123");
        drop(source.again().unwrap());
        let (sent, _) = read(&mut first, None, b"4567", false).await.unwrap();
        assert_eq!(sent, b"4567");
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
        let mut body = source.again().unwrap().into_body();
        let (read, _) = read(&mut body, None, b"order", false).await.unwrap();
        assert_eq!(read, b"order");
        drop(body);
        assert!(source.again().is_none(), "it was read now");
    }
}
