//! gRPC's `grpc-previous-rpc-attempts` request header (proposal A6).

use std::task::{Context, Poll};

use http::HeaderValue;
use http::header::HeaderName;

use super::{Replay, ReplaySource};

/// The header a gRPC client puts on every attempt after the first: how many
/// attempts of the call came before this one.
pub const GRPC_PREVIOUS_RPC_ATTEMPTS: HeaderName =
    HeaderName::from_static("grpc-previous-rpc-attempts");

/// A [`Replay`] strategy that copies requests with `K` and tells the server
/// which attempt each copy is, as gRPC's own clients do (proposal A6): the
/// header `grpc-previous-rpc-attempts` is absent on the first attempt, 1 on
/// the second, and so on, for the retry's attempts and the hedge's alike (a
/// hedge counts the attempts started before it).
///
/// A header the caller set is removed from every attempt, as gRPC's C core
/// does: only the client that makes the attempts knows how many came
/// before. Servers see it as ordinary metadata (grpc-go hands it to the
/// handler), for their logs and metrics.
///
/// # Examples
///
/// ```
/// use palisade::retry::{PreviousAttempts, RetryLayer, TonicBodies};
/// use tonic_health::pb::health_client::HealthClient;
/// use tower::Layer;
///
/// # async fn f() {
/// let channel = tonic::transport::Channel::from_static("http://127.0.0.1:50051").connect_lazy();
/// let retry = RetryLayer::builder()
///     .requests(PreviousAttempts::new(TonicBodies::default()))
///     .build()
///     .unwrap();
/// let mut client = HealthClient::new(retry.layer(channel));
/// # let _ = client.check(tonic_health::pb::HealthCheckRequest::default()).await;
/// # }
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct PreviousAttempts<K> {
    copies: K,
}

impl<K> PreviousAttempts<K> {
    /// Copies requests with `copies`, stamping each copy's attempt.
    pub fn new(copies: K) -> Self {
        Self { copies }
    }

    /// The strategy that copies the requests.
    pub fn copies(&self) -> &K {
        &self.copies
    }
}

/// The [`ReplaySource`] of [`PreviousAttempts`]: the copies of `Src`, each
/// stamped with the number of attempts before it.
#[derive(Debug)]
pub struct PreviousAttemptsSource<Src> {
    source: Src,
    /// Attempts made so far, the first included.
    made: u32,
}

impl<K, B, B2> Replay<http::Request<B>> for PreviousAttempts<K>
where
    K: Replay<http::Request<B>, Request = http::Request<B2>>,
{
    type Request = http::Request<B2>;
    type Source = PreviousAttemptsSource<K::Source>;

    fn first(
        &self,
        mut req: http::Request<B>,
        retryable: bool,
    ) -> (Self::Request, Option<Self::Source>) {
        req.headers_mut().remove(GRPC_PREVIOUS_RPC_ATTEMPTS);
        let (first, source) = self.copies.first(req, retryable);
        (
            first,
            source.map(|source| PreviousAttemptsSource { source, made: 1 }),
        )
    }

    fn only(&self, mut req: http::Request<B>) -> Self::Request {
        req.headers_mut().remove(GRPC_PREVIOUS_RPC_ATTEMPTS);
        self.copies.only(req)
    }
}

impl<Src> PreviousAttemptsSource<Src> {
    fn stamp<B>(&mut self, mut req: http::Request<B>) -> http::Request<B> {
        req.headers_mut()
            .insert(GRPC_PREVIOUS_RPC_ATTEMPTS, HeaderValue::from(self.made));
        self.made = self.made.saturating_add(1);
        req
    }
}

impl<Src, B> ReplaySource for PreviousAttemptsSource<Src>
where
    Src: ReplaySource<Request = http::Request<B>>,
{
    type Request = http::Request<B>;
    const HTTP: bool = Src::HTTP;

    fn again(&mut self) -> Option<Self::Request> {
        let req = self.source.again()?;
        Some(self.stamp(req))
    }

    fn alongside(&mut self) -> Option<Self::Request> {
        let req = self.source.alongside()?;
        Some(self.stamp(req))
    }

    fn poll_alongside(&mut self, cx: &mut Context<'_>) -> Poll<Option<Self::Request>> {
        self.source
            .poll_alongside(cx)
            .map(|req| req.map(|req| self.stamp(req)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replay::ByClone;

    fn attempts<B>(req: &http::Request<B>) -> Option<&str> {
        req.headers()
            .get(GRPC_PREVIOUS_RPC_ATTEMPTS)
            .map(|v| v.to_str().unwrap())
    }

    #[test]
    fn each_copy_counts_the_attempts_before_it() {
        let req = http::Request::post("/svc/Method")
            .header(GRPC_PREVIOUS_RPC_ATTEMPTS, "7")
            .body(())
            .unwrap();
        let (first, source) = PreviousAttempts::new(ByClone).first(req, true);
        assert_eq!(attempts(&first), None, "the caller's value is removed");
        let mut source = source.unwrap();
        assert_eq!(attempts(&source.again().unwrap()), Some("1"));
        assert_eq!(attempts(&source.alongside().unwrap()), Some("2"));
        assert_eq!(attempts(&source.again().unwrap()), Some("3"));
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let Poll::Ready(Some(hedge)) = source.poll_alongside(&mut cx) else {
            panic!("a cloned request is ready at once");
        };
        assert_eq!(
            attempts(&hedge),
            Some("4"),
            "the hedge's copy is counted too"
        );
    }

    #[test]
    fn a_request_sent_once_carries_no_count() {
        let req = http::Request::post("/svc/Method")
            .header(GRPC_PREVIOUS_RPC_ATTEMPTS, "2")
            .body(())
            .unwrap();
        let only = PreviousAttempts::new(ByClone).only(req);
        assert_eq!(attempts(&only), None);
        assert_eq!(only.uri(), "/svc/Method");
    }

    /// A source that has nothing to send beside a running attempt (a body
    /// still being sent) does not use up a count.
    #[test]
    fn a_copy_not_made_is_not_counted() {
        struct NotBeside(u32);
        impl ReplaySource for NotBeside {
            type Request = http::Request<()>;
            fn again(&mut self) -> Option<Self::Request> {
                self.0 += 1;
                Some(http::Request::new(()))
            }
            fn alongside(&mut self) -> Option<Self::Request> {
                None
            }
        }
        let mut source = PreviousAttemptsSource {
            source: NotBeside(0),
            made: 1,
        };
        assert!(source.alongside().is_none());
        assert_eq!(attempts(&source.again().unwrap()), Some("1"));
        assert_eq!(source.source.0, 1);
    }
}
