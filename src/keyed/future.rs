use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use pin_project::pin_project;
use tower::Service;
use tower::util::Oneshot;

use crate::BoxError;

/// The future of a [`Keyed`](super::Keyed) call: the call through its key's
/// instance, or a refusal that is ready at once.
///
/// The instance's service is made ready in `call` when it can be at once
/// (a closed breaker, a bulkhead with a free permit, a limiter: the common
/// case), and called there; otherwise the future drives its readiness
/// (a bulkhead's queue, say) as tower's `Oneshot` does.
#[pin_project]
pub struct ResponseFuture<S: Service<Req>, Req> {
    #[pin]
    kind: Kind<S, Req>,
}

#[pin_project(project = KindProj)]
enum Kind<S: Service<Req>, Req> {
    Called {
        #[pin]
        future: S::Future,
    },
    Readying {
        #[pin]
        call: Oneshot<S, Req>,
    },
    Failed {
        error: Option<BoxError>,
    },
}

impl<S, Req> ResponseFuture<S, Req>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
{
    /// Calls `service` with `req` if it is ready at once, else leaves both
    /// to the future. (Polled here with a waker that does nothing: a
    /// service that is not ready registers the future's real waker when
    /// the future polls it again.)
    pub(crate) fn called(mut service: S, req: Req) -> Self {
        let mut cx = Context::from_waker(Waker::noop());
        let kind = match service.poll_ready(&mut cx) {
            Poll::Ready(Ok(())) => Kind::Called {
                future: service.call(req),
            },
            Poll::Ready(Err(error)) => Kind::Failed {
                error: Some(error.into()),
            },
            Poll::Pending => Kind::Readying {
                call: Oneshot::new(service, req),
            },
        };
        Self { kind }
    }

    pub(crate) fn rejected(error: BoxError) -> Self {
        Self {
            kind: Kind::Failed { error: Some(error) },
        }
    }
}

impl<S: Service<Req>, Req> fmt::Debug for ResponseFuture<S, Req> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match &self.kind {
            Kind::Called { .. } => "called",
            Kind::Readying { .. } => "readying",
            Kind::Failed { .. } => "failed",
        };
        f.debug_struct("ResponseFuture")
            .field("kind", &kind)
            .finish()
    }
}

impl<S, Req> Future for ResponseFuture<S, Req>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
{
    type Output = Result<S::Response, BoxError>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Called { future } => future.poll(cx).map_err(Into::into),
            KindProj::Readying { call } => call.poll(cx).map_err(Into::into),
            KindProj::Failed { error } => Poll::Ready(Err(error
                .take()
                .expect("ResponseFuture polled after completion"))),
        }
    }
}
