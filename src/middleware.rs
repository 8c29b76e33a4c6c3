//! A palisade stack as a [`reqwest_middleware::Middleware`] (feature
//! `reqwest-middleware`): a `ClientWithMiddleware` keeps
//! `client.get(url).send()` and gains the stack in one line.
//!
//! ```
//! use palisade::Resilience;
//! use palisade::middleware::StackMiddleware;
//!
//! # fn main() -> Result<(), palisade::error::ConfigError> {
//! let client = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
//!     .with(StackMiddleware::new(Resilience::http().build()?))
//!     .build();
//! // client.get("http://inventory/items").send().await
//! # let _ = client;
//! # Ok(())
//! # }
//! ```
//!
//! # How it runs
//!
//! For each request, the stack is laid over the rest of the chain (the
//! middlewares after this one, then the client): each attempt the retry
//! makes runs them again, with a copy of the request's extensions as they
//! were when the request reached this middleware (a middleware below sees
//! each attempt as a request of its own). Laying the stack over the chain
//! clones its layers' handles, `Arc`s: no state is made per request, so
//! one breaker, bulkhead and budget serve every request of the client.
//!
//! Put retrying middlewares in one place: this one retries, so another
//! retry middleware in the same chain multiplies the attempts.
//!
//! # Errors
//!
//! The client's own errors come back as
//! [`reqwest_middleware::Error::Reqwest`], and a middleware's below as the
//! [`Error::Middleware`](reqwest_middleware::Error::Middleware) it
//! returned. Anything the stack itself produced (a [`CircuitOpen`], an
//! [`Elapsed`], ...) comes back as `Error::Middleware` holding a
//! [`StackError`], whose source is the rejection:
//! [`ErrorKind::of_dyn`](crate::error::ErrorKind::of_dyn) on the error
//! finds it.
//!
//! [`CircuitOpen`]: crate::error::CircuitOpen
//! [`Elapsed`]: crate::error::Elapsed

use std::error::Error as StdError;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::Extensions;
use reqwest_middleware::{Middleware, Next};
use tower::{Layer, Service, ServiceExt};

use crate::error::BoxError;

/// Runs a palisade stack (or any tower layer whose services take and give
/// what reqwest does) as a [`reqwest_middleware::Middleware`]. See the
/// [module docs](self).
#[derive(Debug, Clone)]
pub struct StackMiddleware<L> {
    layer: L,
}

impl<L> StackMiddleware<L> {
    /// The middleware that lays `layer` over the rest of the chain.
    pub fn new(layer: L) -> Self {
        Self { layer }
    }

    /// The stack, for its parts' handles.
    pub fn layer(&self) -> &L {
        &self.layer
    }
}

/// The rest of a middleware chain, as the `tower::Service` a palisade
/// stack wraps: each call runs the next middlewares and the client.
#[derive(Clone)]
pub struct RestOfChain<'a> {
    next: Next<'a>,
    extensions: Extensions,
}

impl fmt::Debug for RestOfChain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RestOfChain").finish_non_exhaustive()
    }
}

type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

impl<'a> Service<reqwest::Request> for RestOfChain<'a> {
    type Response = reqwest::Response;
    type Error = BoxError;
    type Future = BoxFuture<'a, Result<reqwest::Response, BoxError>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: reqwest::Request) -> Self::Future {
        let next = self.next.clone();
        let mut extensions = self.extensions.clone();
        Box::pin(async move {
            next.run(request, &mut extensions)
                .await
                .map_err(into_box_error)
        })
    }
}

/// A client error goes into the stack as the `reqwest::Error` itself, so
/// the classifiers see a refused connection for what it is.
fn into_box_error(err: reqwest_middleware::Error) -> BoxError {
    match err {
        reqwest_middleware::Error::Reqwest(err) => Box::new(err),
        reqwest_middleware::Error::Middleware(err) => Box::new(Below(err)),
    }
}

fn from_box_error(err: BoxError) -> reqwest_middleware::Error {
    let err = match err.downcast::<reqwest::Error>() {
        Ok(err) => return reqwest_middleware::Error::Reqwest(*err),
        Err(err) => err,
    };
    match err.downcast::<Below>() {
        Ok(below) => reqwest_middleware::Error::Middleware(below.0),
        Err(err) => reqwest_middleware::Error::middleware(StackError(err)),
    }
}

/// A middleware's error from below, carried through the stack unchanged.
#[derive(Debug)]
struct Below(anyhow::Error);

impl fmt::Display for Below {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl StdError for Below {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        Some(self.0.as_ref())
    }
}

/// An error the stack produced (a rejection such as
/// [`CircuitOpen`](crate::error::CircuitOpen), or a fallback's error),
/// returned as `reqwest_middleware::Error::Middleware`. Its `source` is
/// the error itself, so [`ErrorKind::of_dyn`](crate::error::ErrorKind::of_dyn)
/// finds a rejection.
#[derive(Debug)]
pub struct StackError(BoxError);

impl StackError {
    /// The error the stack produced.
    pub fn get_ref(&self) -> &(dyn StdError + Send + Sync + 'static) {
        &*self.0
    }

    /// The error the stack produced, owned.
    pub fn into_inner(self) -> BoxError {
        self.0
    }
}

impl fmt::Display for StackError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl StdError for StackError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        Some(&*self.0)
    }
}

#[async_trait::async_trait]
impl<L> Middleware for StackMiddleware<L>
where
    L: for<'a> Layer<RestOfChain<'a>> + Send + Sync + 'static,
    for<'a> <L as Layer<RestOfChain<'a>>>::Service:
        Service<reqwest::Request, Response = reqwest::Response, Error = BoxError> + Send,
    for<'a> <<L as Layer<RestOfChain<'a>>>::Service as Service<reqwest::Request>>::Future: Send,
{
    async fn handle(
        &self,
        request: reqwest::Request,
        extensions: &mut Extensions,
        next: Next<'_>,
    ) -> reqwest_middleware::Result<reqwest::Response> {
        let rest = RestOfChain {
            next,
            extensions: extensions.clone(),
        };
        self.layer
            .layer(rest)
            .oneshot(request)
            .await
            .map_err(from_box_error)
    }
}
