use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use pin_project::pin_project;
use tower::Service;
use tower::util::Oneshot;

use crate::BoxError;
use crate::error::TooManyKeys;

/// The future of a [`Keyed`](super::Keyed) call: the key's instance
/// around the inner service, made ready and called (tower's `Oneshot`), or
/// a refusal that is ready at once.
#[pin_project]
pub struct ResponseFuture<S: Service<Req>, Req> {
    #[pin]
    kind: Kind<S, Req>,
}

#[pin_project(project = KindProj)]
enum Kind<S: Service<Req>, Req> {
    Called {
        #[pin]
        call: Oneshot<S, Req>,
    },
    Rejected {
        error: Option<TooManyKeys>,
    },
}

impl<S: Service<Req>, Req> ResponseFuture<S, Req> {
    pub(crate) fn called(service: S, req: Req) -> Self {
        Self {
            kind: Kind::Called {
                call: Oneshot::new(service, req),
            },
        }
    }

    pub(crate) fn rejected(error: TooManyKeys) -> Self {
        Self {
            kind: Kind::Rejected { error: Some(error) },
        }
    }
}

impl<S: Service<Req>, Req> fmt::Debug for ResponseFuture<S, Req> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match &self.kind {
            Kind::Called { .. } => "called",
            Kind::Rejected { .. } => "rejected",
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
            KindProj::Called { call } => call.poll(cx).map_err(Into::into),
            KindProj::Rejected { error } => Poll::Ready(Err(error
                .take()
                .expect("ResponseFuture polled after completion")
                .into())),
        }
    }
}
