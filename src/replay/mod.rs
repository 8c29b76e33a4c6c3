//! How a request is sent more than once: the strategies by which the retry
//! and the hedge copy a request for each attempt.
//!
//! [`ByClone`] for any `Clone` request, [`ReqwestRequests`] for
//! `reqwest::Request` (feature `reqwest`), [`ReplayBodies`] for
//! `http::Request<B>` with a streamed body, recorded up to a limit and
//! replayed as hyper and tonic send bodies (feature `http`), and
//! [`TonicBodies`], the same recording handed to a tonic `Channel` as the
//! `tonic::body::Body` it takes (feature `tonic`).
//!
//! # When the default does not fit
//!
//! The retry copies requests with [`ByClone`] unless told otherwise, and
//! neither `reqwest::Request` nor an `http::Request` with a streamed body is
//! `Clone`. Where the stack must be a `Service` of such requests (a
//! function that takes a client, tonic's generated client), the compiler
//! then says that `ByClone` cannot copy the request, and which
//! [`requests`](crate::retry::RetryBuilder::requests) setting fixes it. A
//! `reqwest::Client` under the default retry:
//!
//! ```compile_fail,E0277
//! use palisade::retry::RetryLayer;
//! use tower::{Layer, Service};
//!
//! fn send_with<S: Service<reqwest::Request>>(client: S) { /* ... */ }
//!
//! let retry = RetryLayer::builder().build().unwrap();
//! send_with(retry.layer(reqwest::Client::new()));
//! // error[E0277]: `ByClone` cannot copy a `reqwest::Request` for the retry's next attempt
//! // note: for `reqwest::Request`: `.requests(palisade::retry::ReqwestRequests)` (feature `reqwest`)
//! ```
//!
//! and a tonic `Channel`, whose `http::Request<tonic::body::Body>` has a
//! streamed body:
//!
//! ```compile_fail,E0277
//! use palisade::retry::RetryLayer;
//! use tonic_health::pb::health_client::HealthClient;
//! use tower::Layer;
//!
//! # async fn f() {
//! let channel = tonic::transport::Channel::from_static("http://127.0.0.1:50051").connect_lazy();
//! let retry = RetryLayer::builder().build().unwrap();
//! let mut client = HealthClient::new(retry.layer(channel));
//! // error[E0277]: `ByClone` cannot copy a `http::Request<tonic::body::Body>` for the retry's next attempt
//! // note: for a tonic `Channel`: `.requests(palisade::retry::TonicBodies::default())` (feature `tonic`)
//! let _ = client.check(tonic_health::pb::HealthCheckRequest::default()).await;
//! # }
//! ```
//!
//! The fixes, which compile:
//!
//! ```
//! use palisade::retry::{ReqwestRequests, RetryLayer, TonicBodies};
//! use tonic_health::pb::health_client::HealthClient;
//! use tower::{Layer, Service};
//!
//! fn send_with<S: Service<reqwest::Request>>(client: S) {}
//!
//! # async fn f() {
//! let retry = RetryLayer::builder().requests(ReqwestRequests).build().unwrap();
//! send_with(retry.layer(reqwest::Client::new()));
//!
//! let channel = tonic::transport::Channel::from_static("http://127.0.0.1:50051").connect_lazy();
//! let retry = RetryLayer::builder().requests(TonicBodies::default()).build().unwrap();
//! let mut client = HealthClient::new(retry.layer(channel));
//! # let _ = client.check(tonic_health::pb::HealthCheckRequest::default()).await;
//! # }
//! ```
//!
//! Called as a method on the retry itself (`svc.oneshot(request)`), the
//! same mistake is reported by rustc as `Retry<..>: Service<_>` not being
//! satisfied, without these notes: see `TESTING.md`.

#[cfg(feature = "grpc")]
mod attempts;
#[cfg(feature = "http")]
mod body;

#[cfg(feature = "grpc")]
pub use self::attempts::{GRPC_PREVIOUS_RPC_ATTEMPTS, PreviousAttempts, PreviousAttemptsSource};

#[cfg(feature = "http")]
pub use self::body::{DEFAULT_REPLAY_LIMIT, HttpSource, Recording, ReplayBodies, ReplayBody};

#[cfg(feature = "tonic")]
mod tonic;

#[cfg(feature = "tonic")]
pub use self::tonic::{TonicBodies, TonicSource};

#[cfg(feature = "reqwest")]
use std::fmt;
use std::task::{Context, Poll};

/// Turns a caller's request into the first attempt's, and keeps a
/// [`ReplaySource`] to make the next ones.
///
/// Built in: [`ByClone`] for any `Clone` request, [`ReqwestRequests`] for
/// `reqwest::Request` (feature `reqwest`), [`ReplayBodies`] for
/// `http::Request<B>` with a streamed body (feature `http`), and
/// [`TonicBodies`] for a tonic client's requests (feature `tonic`).
///
/// The retry's default is [`ByClone`]; a request that is not `Clone` needs
/// another strategy, set with
/// [`RetryBuilder::requests`](crate::retry::RetryBuilder::requests).
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot copy a `{Req}` for the retry's next attempt",
    label = "the retry copies each request with `{Self}`",
    note = "the retry's default, `ByClone`, needs a `Clone` request; choose another with `RetryBuilder::requests`:",
    note = "for `reqwest::Request`: `.requests(palisade::retry::ReqwestRequests)` (feature `reqwest`)",
    note = "for `http::Request<B>` whose body is not `Clone` (hyper, axum bodies): `.requests(palisade::retry::ReplayBodies::default())` (feature `http`)",
    note = "for a tonic `Channel`: `.requests(palisade::retry::TonicBodies::default())` (feature `tonic`)",
    note = "or start from a standard stack: `Resilience::http()`, `Resilience::grpc()`",
    note = "for a request of your own: derive `Clone`, or implement `palisade::retry::Replay<{Req}>` for a strategy"
)]
pub trait Replay<Req> {
    /// What the inner service receives.
    type Request;
    /// What is kept to make another copy.
    type Source: ReplaySource<Request = Self::Request>;

    /// The first attempt's request, and a source for more. A request that
    /// cannot be copied is still sent: with no source.
    ///
    /// When `retryable` is false the classifier said the request may not be
    /// sent twice (a POST, say); a source is still worth keeping if it is
    /// cheap, since a request that never reached the server (its connection
    /// was refused) is sent again whatever its method.
    fn first(&self, req: Req, retryable: bool) -> (Self::Request, Option<Self::Source>);

    /// The request of a call that will be sent once (a retry allowed one
    /// attempt): nothing is kept. The default makes the first attempt's
    /// request and drops the source; `ByClone` and `ReqwestRequests` copy
    /// nothing.
    fn only(&self, req: Req) -> Self::Request {
        self.first(req, false).0
    }
}

/// What a retry keeps of a request: it makes each further attempt's copy.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot make copies of a request for the retry",
    note = "a `Replay` strategy's `Source` makes each further attempt's request: implement `palisade::retry::ReplaySource` for it"
)]
pub trait ReplaySource {
    /// The copy, as the inner service receives it.
    type Request;

    /// Whether the copies are HTTP requests, each sent again as HTTP
    /// defines a resend. A retry's attempt spans (feature `tracing`) then
    /// carry OpenTelemetry's `http.request.resend_count` (on a resend
    /// only: 1 on the first retry), and otherwise the attempt's number as
    /// `palisade.attempt.number`. `true` for [`HttpSource`]
    /// ([`ReplayBodies`]) and `reqwest::Request` ([`ReqwestRequests`]);
    /// `false` by default, [`Cloned`] ([`ByClone`]) included, which cannot
    /// tell an `http::Request` from any other `Clone` request, and
    /// `TonicSource` ([`TonicBodies`]): a gRPC call is an RPC, whose
    /// attempts OpenTelemetry's RPC conventions number rather than count as
    /// HTTP resends.
    const HTTP: bool = false;

    /// Another copy for a retry, or `None` if there can be none.
    fn again(&mut self) -> Option<Self::Request>;

    /// Another copy to send while earlier attempts may still be running
    /// (a hedge), or `None` if there can be none yet. It must not take
    /// anything from the earlier attempts' copies. The default is
    /// [`again`](Self::again), right for a source whose copies are
    /// independent ([`Cloned`], `reqwest::Request`); [`HttpSource`] gives a
    /// copy only once the whole body has been recorded, since an attempt
    /// still sending its body cannot share it.
    fn alongside(&mut self) -> Option<Self::Request> {
        self.again()
    }

    /// [`alongside`](Self::alongside), for a source that can tell "not
    /// yet" from "never": `Pending` while a copy cannot be made yet but
    /// may be (a body still being sent), waking the task when that may
    /// have changed. The hedge asks this. The default is
    /// `Ready(self.alongside())`; [`HttpSource`] waits for the body to be
    /// recorded whole, so that a hedge due while the first attempt still
    /// sends the body is sent as soon as it has been.
    fn poll_alongside(&mut self, cx: &mut Context<'_>) -> Poll<Option<Self::Request>> {
        let _ = cx;
        Poll::Ready(self.alongside())
    }
}

/// Copies requests with `Clone`: one clone is kept when the first attempt
/// is sent (also for a request that may not be retried, which is sent again
/// only if it never reached the server), and each retry sends a clone of
/// it. A `Copy` request costs nothing.
#[derive(Debug, Clone, Copy, Default)]
pub struct ByClone;

// Not recommended in errors: for a request that is not `Clone`, rustc then
// says that `ByClone` cannot copy it and shows `Replay`'s notes (which name
// the strategy to choose), rather than only that the request is not `Clone`.
#[diagnostic::do_not_recommend]
impl<Req: Clone> Replay<Req> for ByClone {
    type Request = Req;
    type Source = Cloned<Req>;

    #[inline]
    fn first(&self, req: Req, _retryable: bool) -> (Req, Option<Cloned<Req>>) {
        (req.clone(), Some(Cloned(req)))
    }

    #[inline]
    fn only(&self, req: Req) -> Req {
        req
    }
}

/// [`ByClone`]'s source: the request, cloned for each retry.
#[derive(Debug, Clone)]
pub struct Cloned<Req>(Req);

impl<Req: Clone> ReplaySource for Cloned<Req> {
    type Request = Req;

    #[inline]
    fn again(&mut self) -> Option<Req> {
        Some(self.0.clone())
    }
}

/// Copies `reqwest::Request`s with `try_clone`: a request whose body is a
/// stream cannot be copied, and is sent once.
#[cfg(feature = "reqwest")]
#[derive(Clone, Copy, Default)]
pub struct ReqwestRequests;

#[cfg(feature = "reqwest")]
impl fmt::Debug for ReqwestRequests {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ReqwestRequests")
    }
}

#[cfg(feature = "reqwest")]
impl Replay<reqwest::Request> for ReqwestRequests {
    type Request = reqwest::Request;
    type Source = reqwest::Request;

    fn first(
        &self,
        req: reqwest::Request,
        retryable: bool,
    ) -> (reqwest::Request, Option<reqwest::Request>) {
        // Kept for a request that may not be retried too: one that never
        // reached the server is sent again whatever its method.
        let _ = retryable;
        let source = req.try_clone();
        (req, source)
    }

    fn only(&self, req: reqwest::Request) -> reqwest::Request {
        req
    }
}

/// `reqwest::Request`s copied as [`ReqwestRequests`] copies them, so that
/// one HTTP stack (say [`Resilience::http`](crate::Resilience::http))
/// wraps a hyper client and a `reqwest::Client` alike.
#[cfg(feature = "reqwest")]
impl Replay<reqwest::Request> for ReplayBodies {
    type Request = reqwest::Request;
    type Source = reqwest::Request;

    fn first(
        &self,
        req: reqwest::Request,
        retryable: bool,
    ) -> (reqwest::Request, Option<reqwest::Request>) {
        ReqwestRequests.first(req, retryable)
    }

    fn only(&self, req: reqwest::Request) -> reqwest::Request {
        req
    }
}

/// A `reqwest::Request` is its own source: copied with `try_clone`.
#[cfg(feature = "reqwest")]
impl ReplaySource for reqwest::Request {
    type Request = reqwest::Request;
    const HTTP: bool = true;

    fn again(&mut self) -> Option<reqwest::Request> {
        self.try_clone()
    }
}
