//! How a request is sent more than once: the strategies by which the retry
//! (and, later, hedging) copies a request for each attempt.
//!
//! [`ByClone`] for any `Clone` request, [`ReqwestRequests`] for
//! `reqwest::Request` (feature `reqwest`), and [`ReplayBodies`] for
//! `http::Request<B>` with a streamed body, recorded up to a limit and
//! replayed as hyper and tonic send bodies (feature `http`).

#[cfg(feature = "http")]
mod body;

#[cfg(feature = "http")]
pub use self::body::{DEFAULT_REPLAY_LIMIT, HttpSource, Recording, ReplayBodies, ReplayBody};

#[cfg(feature = "reqwest")]
use std::fmt;

/// Turns a caller's request into the first attempt's, and keeps a
/// [`ReplaySource`] to make the next ones.
///
/// Built in: [`ByClone`] for any `Clone` request, [`ReqwestRequests`] for
/// `reqwest::Request` (feature `reqwest`), and [`ReplayBodies`] for
/// `http::Request<B>` with a streamed body (feature `http`).
///
/// The retry's default is [`ByClone`]; a request that is not `Clone` needs
/// another strategy, set with
/// [`RetryBuilder::requests`](crate::retry::RetryBuilder::requests).
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot copy a `{Req}` for the retry's next attempt",
    label = "the retry copies each request with `{Self}`",
    note = "the retry's default, `ByClone`, needs a `Clone` request; choose another with `RetryBuilder::requests`:",
    note = "for `reqwest::Request`: `.requests(palisade::retry::ReqwestRequests)` (feature `reqwest`)",
    note = "for `http::Request<B>` whose body is not `Clone` (hyper, tonic, axum bodies): `.requests(palisade::retry::ReplayBodies::default())` (feature `http`)",
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

    /// Another copy for a retry, or `None` if there can be none.
    fn again(&mut self) -> Option<Self::Request>;
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

/// A `reqwest::Request` is its own source: copied with `try_clone`.
#[cfg(feature = "reqwest")]
impl ReplaySource for reqwest::Request {
    type Request = reqwest::Request;

    fn again(&mut self) -> Option<reqwest::Request> {
        self.try_clone()
    }
}
