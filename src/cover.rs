//! Which part of a call a layer covers: up to the response head, or to the
//! end of the response body.
//!
//! A `tower::Service` call ends when its future yields the response. For a
//! streamed `http::Response`, that is the head: status and headers. The
//! body may still be arriving for seconds afterwards, and the connection,
//! the server's work and the caller's memory stay in use until it ends.
//! tower's own layers, and palisade's by default ([`Head`]), stop there: a
//! bulkhead's permit is given back, and a timeout's deadline stops counting,
//! when the head arrives.
//!
//! The bulkhead and the timeout have a second mode, [`Body`] (feature
//! `http`), chosen with `cover_body()` on their builders
//! ([`BulkheadBuilder::cover_body`](crate::bulkhead::BulkheadBuilder::cover_body),
//! [`TimeoutBuilder::cover_body`](crate::timeout::TimeoutBuilder::cover_body)):
//! the response's body is wrapped, and the permit is held, or the deadline
//! checked, until the body ends or is dropped.
//!
//! A body has ended when it reports
//! [`is_end_stream`](http_body::Body::is_end_stream) (hyper stops polling a
//! body then, and never polls an empty one), yields its last frame (`None`)
//! or an error, or is dropped. A body that has nothing to read when the head
//! arrives (a `HEAD` answer, a 204, `content-length: 0`) ends with the head.
//!
//! The two modes are types, never values: a layer's mode is its type
//! parameter (`BulkheadLayer<Body>`, `Timeout<S, Body>`), whose default is
//! [`Head`].

#[cfg(feature = "http")]
use std::fmt;
#[cfg(feature = "http")]
use std::pin::Pin;
#[cfg(feature = "http")]
use std::task::{Context, Poll, ready};

#[cfg(feature = "http")]
use http_body::{Frame, SizeHint};
#[cfg(feature = "http")]
use pin_project::pin_project;

#[cfg(feature = "http")]
use crate::BoxError;

/// The default mode: a layer covers its call up to the response head, as
/// tower's layers do. See the [module docs](self).
#[derive(Debug, Clone, Copy)]
pub enum Head {}

/// A layer covers its call up to the end of the `http::Response` body (or
/// until the body is dropped). See the [module docs](self).
#[cfg(feature = "http")]
#[derive(Debug, Clone, Copy)]
pub enum Body {}

/// The mode's name, for `Debug` output: `"Head"` or `"Body"`.
pub(crate) fn name<M>() -> &'static str {
    let path = std::any::type_name::<M>();
    path.rsplit("::").next().unwrap_or(path)
}

/// What a [`GuardedBody`] holds until its body ends.
#[cfg(feature = "http")]
pub(crate) trait Guard {
    /// Polled before each poll of the body: `Ready` with an error to end the
    /// body now (a deadline that passed). A guard that never ends a body
    /// returns `Pending` and registers nothing.
    fn poll_cut(&mut self, cx: &mut Context<'_>) -> Poll<BoxError>;
}

/// A body that holds a guard (a bulkhead permit, a deadline) until it ends,
/// fails, or is dropped; the guard may also cut it short with an error.
///
/// The body's frames, [`is_end_stream`](http_body::Body::is_end_stream) and
/// [`size_hint`](http_body::Body::size_hint) pass through unchanged until it
/// is cut; its error becomes a [`BoxError`].
#[cfg(feature = "http")]
#[pin_project]
pub(crate) struct GuardedBody<B, G> {
    #[pin]
    inner: B,
    /// `None` once the body has ended.
    guard: Option<G>,
    /// The guard ended the body: it yields nothing more.
    cut: bool,
}

#[cfg(feature = "http")]
impl<B: http_body::Body, G> GuardedBody<B, G> {
    /// Wraps `inner`; a body with nothing to read lets `guard` go at once.
    pub(crate) fn new(inner: B, guard: Option<G>) -> Self {
        let guard = guard.filter(|_| !inner.is_end_stream());
        Self {
            inner,
            guard,
            cut: false,
        }
    }
}

/// The `Body` and `Debug` impls of a layer's public body type, a newtype
/// over a [`GuardedBody`] in a field named `inner`: written once here, not
/// in each layer.
#[cfg(feature = "http")]
macro_rules! delegate_guarded_body {
    ($name:ident) => {
        impl<B> http_body::Body for $name<B>
        where
            B: http_body::Body,
            B::Error: Into<$crate::BoxError>,
        {
            type Data = B::Data;
            type Error = $crate::BoxError;

            #[inline]
            fn poll_frame(
                self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
            ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
                self.project().inner.poll_frame(cx)
            }

            #[inline]
            fn is_end_stream(&self) -> bool {
                self.inner.is_end_stream()
            }

            #[inline]
            fn size_hint(&self) -> http_body::SizeHint {
                self.inner.size_hint()
            }
        }

        impl<B> std::fmt::Debug for $name<B> {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.debug_struct(stringify!($name))
                    .field("inner", &self.inner)
                    .finish()
            }
        }
    };
}
#[cfg(feature = "http")]
pub(crate) use delegate_guarded_body;

#[cfg(feature = "http")]
impl<B, G> fmt::Debug for GuardedBody<B, G> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GuardedBody")
            .field("guarded", &self.guard.is_some())
            .field("cut", &self.cut)
            .finish_non_exhaustive()
    }
}

#[cfg(feature = "http")]
impl<B, G> http_body::Body for GuardedBody<B, G>
where
    B: http_body::Body,
    B::Error: Into<BoxError>,
    G: Guard,
{
    type Data = B::Data;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let mut this = self.project();
        if *this.cut {
            return Poll::Ready(None);
        }
        if let Some(guard) = this.guard
            && let Poll::Ready(err) = guard.poll_cut(cx)
        {
            *this.guard = None;
            *this.cut = true;
            return Poll::Ready(Some(Err(err)));
        }
        let frame = ready!(this.inner.as_mut().poll_frame(cx));
        // The end: no more frames, an error, or a frame after which the body
        // says it is done (hyper will not poll it again).
        let ended = match &frame {
            None | Some(Err(_)) => true,
            Some(Ok(_)) => this.inner.is_end_stream(),
        };
        if ended {
            *this.guard = None;
        }
        Poll::Ready(frame.map(|f| f.map_err(Into::into)))
    }

    #[inline]
    fn is_end_stream(&self) -> bool {
        self.cut || self.inner.is_end_stream()
    }

    #[inline]
    fn size_hint(&self) -> SizeHint {
        if self.cut {
            SizeHint::with_exact(0)
        } else {
            self.inner.size_hint()
        }
    }
}

#[cfg(all(test, feature = "http"))]
mod tests {
    use super::*;
    use bytes::Bytes;
    use http_body::Body as _;
    use std::collections::VecDeque;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
    use std::task::Waker;

    type Polled = Poll<Option<Result<Frame<Bytes>, BoxError>>>;

    /// Records whether it is still held; cuts the body when told to.
    struct Flag {
        held: Arc<AtomicBool>,
        cut: Arc<AtomicBool>,
    }

    impl Drop for Flag {
        fn drop(&mut self) {
            self.held.store(false, SeqCst);
        }
    }

    impl Guard for Flag {
        fn poll_cut(&mut self, _: &mut Context<'_>) -> Poll<BoxError> {
            if self.cut.load(SeqCst) {
                Poll::Ready("cut".into())
            } else {
                Poll::Pending
            }
        }
    }

    /// A body of scripted polls that says it has ended only if asked to
    /// (`eos_early`: right after its last frame, as hyper's bodies of known
    /// length do).
    struct Script {
        polls: VecDeque<Polled>,
        eos_early: bool,
    }

    impl http_body::Body for Script {
        type Data = Bytes;
        type Error = BoxError;
        fn poll_frame(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Polled {
            self.polls.pop_front().unwrap_or(Poll::Ready(None))
        }
        fn is_end_stream(&self) -> bool {
            self.eos_early && self.polls.is_empty()
        }
        fn size_hint(&self) -> SizeHint {
            SizeHint::with_exact(7)
        }
    }

    fn data(s: &'static str) -> Polled {
        Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(s.as_bytes())))))
    }

    struct Case {
        body: Pin<Box<GuardedBody<Script, Flag>>>,
        held: Arc<AtomicBool>,
        cut: Arc<AtomicBool>,
    }

    impl Case {
        fn new(polls: Vec<Polled>, eos_early: bool) -> Self {
            let held = Arc::new(AtomicBool::new(true));
            let cut = Arc::new(AtomicBool::new(false));
            let flag = Flag {
                held: held.clone(),
                cut: cut.clone(),
            };
            let script = Script {
                polls: polls.into(),
                eos_early,
            };
            let body = Box::pin(GuardedBody::new(script, Some(flag)));
            Self { body, held, cut }
        }

        fn poll(&mut self) -> Polled {
            let mut cx = Context::from_waker(Waker::noop());
            self.body.as_mut().poll_frame(&mut cx)
        }

        fn held(&self) -> bool {
            self.held.load(SeqCst)
        }
    }

    #[test]
    fn held_until_the_body_says_it_ended() {
        let mut case = Case::new(vec![data("a"), Poll::Pending, data("b")], true);
        assert_eq!(case.body.size_hint().exact(), Some(7), "forwarded");
        assert!(matches!(case.poll(), Poll::Ready(Some(Ok(_)))));
        assert!(case.poll().is_pending());
        assert!(case.held() && !case.body.is_end_stream());
        assert!(matches!(case.poll(), Poll::Ready(Some(Ok(_)))));
        assert!(case.body.is_end_stream());
        assert!(!case.held(), "released with the last frame");
    }

    #[test]
    fn held_until_none_when_the_body_does_not_say() {
        let mut case = Case::new(vec![data("a")], false);
        assert!(matches!(case.poll(), Poll::Ready(Some(Ok(_)))));
        assert!(case.held());
        assert!(matches!(case.poll(), Poll::Ready(None)));
        assert!(!case.held());
    }

    #[test]
    fn released_on_error_and_on_drop() {
        let mut case = Case::new(vec![Poll::Ready(Some(Err("reset".into())))], false);
        assert!(matches!(case.poll(), Poll::Ready(Some(Err(_)))));
        assert!(!case.held());

        let case = Case::new(vec![data("a")], false);
        let held = case.held.clone();
        drop(case);
        assert!(!held.load(SeqCst));
    }

    #[test]
    fn an_empty_body_releases_at_once() {
        let case = Case::new(vec![], true);
        assert!(!case.held() && case.body.is_end_stream());
    }

    #[test]
    fn a_cut_body_fails_once_then_ends() {
        let mut case = Case::new(vec![data("a"), data("b")], true);
        assert!(matches!(case.poll(), Poll::Ready(Some(Ok(_)))));
        case.cut.store(true, SeqCst);
        match case.poll() {
            Poll::Ready(Some(Err(e))) => assert_eq!(e.to_string(), "cut"),
            other => panic!("expected the guard's error, got {other:?}"),
        }
        assert!(!case.held());
        assert!(case.body.is_end_stream());
        assert_eq!(case.body.size_hint().exact(), Some(0));
        assert!(matches!(case.poll(), Poll::Ready(None)));
    }
}
