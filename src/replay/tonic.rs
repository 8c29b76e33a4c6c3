//! Replaying tonic request bodies into a `tonic::transport::Channel`.

use std::fmt;

use bytes::Bytes;
use http_body::Body;

use super::body::{HttpSource, ReplayBodies};
use super::{Replay, ReplaySource};
use crate::BoxError;

/// Makes tonic requests retryable and hands each attempt to a
/// `tonic::transport::Channel` as the `http::Request<tonic::body::Body>` it
/// takes: [`ReplayBodies`]' recording, with each attempt's
/// [`ReplayBody`](super::ReplayBody) wrapped in a `tonic::body::Body`.
///
/// Everything [`ReplayBodies`] says holds: bodies up to the limit
/// ([`DEFAULT_REPLAY_LIMIT`](super::DEFAULT_REPLAY_LIMIT) by default) are
/// recorded as the attempts read them and replayed byte for byte; a
/// larger one is sent once. A gRPC request is a `POST`: the retry sends it
/// again only when its classifier says the call may be retried (the
/// [`GrpcClassifier`](crate::classify::GrpcClassifier) does), or when it
/// never left the client.
///
/// # Cost
///
/// Wrapping a body in a `tonic::body::Body` boxes it: one allocation per
/// attempt, the one a `map_request(|r| r.map(Body::new))` below the retry
/// would make.
///
/// # Examples
///
/// ```
/// use palisade::classify::GrpcClassifier;
/// use palisade::retry::{RetryLayer, TonicBodies};
/// use tonic_health::pb::health_client::HealthClient;
/// use tower::ServiceBuilder;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), palisade::BoxError> {
/// let channel = tonic::transport::Endpoint::from_static("http://127.0.0.1:50051").connect_lazy();
/// let retry = RetryLayer::builder()
///     .classifier(GrpcClassifier::new())
///     .requests(TonicBodies::default())
///     .build()?;
/// // No `map_request`: the retry's copies are what the Channel takes.
/// let client = HealthClient::new(ServiceBuilder::new().layer(retry).service(channel));
/// # let _ = client;
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct TonicBodies {
    bodies: ReplayBodies,
}

impl TonicBodies {
    /// Records bodies up to `limit` bytes.
    pub fn with_limit(limit: usize) -> Self {
        Self {
            bodies: ReplayBodies::with_limit(limit),
        }
    }

    /// The most bytes recorded.
    pub fn limit(&self) -> usize {
        self.bodies.limit()
    }
}

/// What a retry under [`TonicBodies`] keeps of a request: an
/// [`HttpSource`] whose copies are wrapped for tonic.
pub struct TonicSource<B>(HttpSource<B>);

impl<B> fmt::Debug for TonicSource<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("TonicSource").field(&self.0).finish()
    }
}

impl<B> Replay<http::Request<B>> for TonicBodies
where
    B: Body<Data = Bytes> + Unpin + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Request = http::Request<tonic::body::Body>;
    type Source = TonicSource<B>;

    fn first(
        &self,
        req: http::Request<B>,
        retryable: bool,
    ) -> (Self::Request, Option<Self::Source>) {
        let (req, source) = self.bodies.first(req, retryable);
        (req.map(tonic::body::Body::new), source.map(TonicSource))
    }
}

impl<B> ReplaySource for TonicSource<B>
where
    B: Body<Data = Bytes> + Unpin + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Request = http::Request<tonic::body::Body>;

    fn again(&mut self) -> Option<Self::Request> {
        self.0.again().map(|req| req.map(tonic::body::Body::new))
    }

    fn alongside(&mut self) -> Option<Self::Request> {
        self.0
            .alongside()
            .map(|req| req.map(tonic::body::Body::new))
    }

    fn poll_alongside(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Request>> {
        self.0
            .poll_alongside(cx)
            .map(|req| req.map(|req| req.map(tonic::body::Body::new)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    /// A health check's first attempt, and the source of its copies.
    fn health_check_and_its_copies() -> (
        http::Request<tonic::body::Body>,
        TonicSource<tonic::body::Body>,
    ) {
        let req = http::Request::post("/grpc.health.v1.Health/Check")
            .body(tonic::body::Body::new(http_body_util::Full::new(
                Bytes::from_static(b"\0\0\0\0\x03abc"),
            )))
            .unwrap();
        let (first, source) = TonicBodies::default().first(req, true);
        (first, source.expect("a health check may be sent again"))
    }

    /// Each copy carries the caller's whole body, however much of it the
    /// attempt before read.
    #[tokio::test]
    async fn every_copy_carries_the_whole_body() {
        let (first, mut source) = health_check_and_its_copies();
        let first = first.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&first[..], b"\0\0\0\0\x03abc");
        let second = source.again().unwrap();
        assert_eq!(second.uri(), "/grpc.health.v1.Health/Check");
        let second = second.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(second, first);
    }

    /// A copy beside a running attempt (a hedge's) exists once the body
    /// has been recorded whole, and carries all of it.
    #[tokio::test]
    async fn a_copy_alongside_waits_for_the_whole_body() {
        let (first, mut source) = health_check_and_its_copies();
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        assert!(source.alongside().is_none(), "nothing sent yet");
        assert!(source.poll_alongside(&mut cx).is_pending(), "not yet");
        assert!(format!("{source:?}").starts_with("TonicSource("));
        let first = first.into_body().collect().await.unwrap().to_bytes();
        let beside = source.alongside().expect("the body was recorded");
        assert_eq!(beside.uri(), "/grpc.health.v1.Health/Check");
        let beside = beside.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(beside, first);
        let std::task::Poll::Ready(Some(hedge)) = source.poll_alongside(&mut cx) else {
            panic!("the body was recorded: a copy is ready");
        };
        let hedge = hedge.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(hedge, first);
    }

    #[test]
    fn the_limit_is_kept() {
        assert_eq!(TonicBodies::with_limit(7).limit(), 7);
        assert_eq!(
            TonicBodies::default().limit(),
            super::super::DEFAULT_REPLAY_LIMIT
        );
    }
}
