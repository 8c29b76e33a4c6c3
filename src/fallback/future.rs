use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use pin_project::pin_project;

use super::FallbackEvent;
use super::layer::{Shared, Trigger};
use super::{Failed, Handler};
use crate::BoxError;
use crate::classify::{Classify, Outcome};
use crate::error::ErrorKind;

/// The future of a [`Fallback`](super::Fallback) call: the inner call `F`,
/// then, if it failed, the handler's answer `G`.
///
/// `G` is a parameter rather than `H::Future`: a projection in a field
/// makes rustc's `Send` check of a spawned future fail with "`From` is not
/// general enough" (rust-lang/rust#64552).
#[pin_project]
pub struct ResponseFuture<F, G, H, C, Req> {
    #[pin]
    state: State<F, G>,
    handler: H,
    classifier: C,
    trigger: Trigger,
    request: Option<Req>,
    /// Present only when someone listens.
    events: Option<Arc<Shared>>,
}

#[pin_project(project = StateProj)]
enum State<F, G> {
    Calling {
        #[pin]
        future: F,
    },
    FallingBack {
        #[pin]
        future: G,
    },
}

impl<F, G, H, C, Req> ResponseFuture<F, G, H, C, Req> {
    pub(crate) fn new(
        future: F,
        handler: H,
        classifier: C,
        trigger: Trigger,
        request: Option<Req>,
        events: Option<Arc<Shared>>,
    ) -> Self {
        Self {
            state: State::Calling { future },
            handler,
            classifier,
            trigger,
            request,
            events,
        }
    }
}

impl<F, G, H, C, Req> fmt::Debug for ResponseFuture<F, G, H, C, Req> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::Calling { .. } => "calling",
            State::FallingBack { .. } => "falling back",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .finish()
    }
}

impl<F, G, H, C, Req, Res, E> Future for ResponseFuture<F, G, H, C, Req>
where
    F: Future<Output = Result<Res, E>>,
    E: Into<BoxError>,
    H: Handler<Req, Res, Future = G>,
    G: Future<Output = Result<Res, BoxError>>,
    C: Classify<Res, E>,
{
    type Output = Result<Res, BoxError>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Calling { future } => {
                    let result = ready!(future.poll(cx));
                    let falls_back = match *this.trigger {
                        Trigger::Failure => this.classifier.classify(&result) == Outcome::Failure,
                        Trigger::Kinds(_) => result.is_err(),
                    };
                    if !falls_back {
                        return Poll::Ready(result.map_err(Into::into));
                    }
                    let outcome = result.map_err(Into::into);
                    let kind = outcome.as_ref().err().map(ErrorKind::of);
                    if let (Trigger::Kinds(kinds), Some(kind)) = (*this.trigger, kind)
                        && !kinds.contains(kind)
                    {
                        return Poll::Ready(outcome);
                    }
                    if let Some(shared) = this.events.as_ref() {
                        shared
                            .listeners
                            .emit(&shared.name, || FallbackEvent::FellBack { kind });
                    }
                    let failed = Failed {
                        request: this.request.take(),
                        outcome,
                    };
                    let future = this.handler.handle(failed);
                    this.state.set(State::FallingBack { future });
                }
                StateProj::FallingBack { future } => return future.poll(cx),
            }
        }
    }
}
