//! Fallback: answer a failed call from somewhere else.
//!
//! [`FallbackLayer`] lets a call whose result is a failure (for its
//! [`Classify`]er: by default any `Err`) be answered by a handler instead: a
//! cached value, a default, a degraded answer from another service. With
//! [`only_on`](FallbackBuilder::only_on) it answers only chosen
//! [`ErrorKind`]s, for example only [`CircuitOpen`](crate::error::CircuitOpen),
//! and lets other failures through.
//!
//! A handler receives a [`Failed`]: the failed outcome (the error, or the
//! response the classifier rejected) and, if
//! [`keep_request`](FallbackBuilder::keep_request) was asked for, the request. Make
//! one with [`from_sync_fn`] (a closure returning a result), [`from_fn`] (a
//! closure returning a future) or [`from_service`] (another service).
//!
//! # Cost
//!
//! Without a failure: a clone of the handler and classifier (usually
//! nothing: closures without captures, unit structs), and a match when the
//! call ends. No allocation, no `Arc` clone unless an event listener is
//! registered.
//!
//! # Order
//!
//! Outermost: the fallback sees the final outcome, after retries and
//! timeouts, and is the caller's last line.
//!
//! # Examples
//!
//! ```
//! use palisade::error::{BoxError, ErrorKind};
//! use palisade::fallback::{Failed, FallbackLayer, from_sync_fn};
//! use tower::{ServiceBuilder, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let fallback = FallbackLayer::builder(from_sync_fn(|failed: Failed<(), &str>| {
//!     // The failed outcome is there to look at.
//!     assert!(failed.outcome.is_err());
//!     Ok::<_, BoxError>("from cache")
//! }))
//! .build()
//! .unwrap();
//!
//! let svc = ServiceBuilder::new()
//!     .layer(fallback)
//!     .service(service_fn(|_: ()| async { Err::<&str, BoxError>("down".into()) }));
//! assert_eq!(svc.oneshot(()).await.unwrap(), "from cache");
//! # }
//! ```

mod event;
mod future;
mod layer;

pub use self::event::FallbackEvent;
pub use self::future::ResponseFuture;
pub use self::layer::{CloneRequest, DropRequest, FallbackBuilder, FallbackLayer, KeepRequest};

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use pin_project::pin_project;
use tower::Service;
use tower::util::Oneshot;

use crate::BoxError;
use crate::classify::{Classify, DefaultClassifier};
#[allow(unused_imports)] // for the docs
use crate::error::ErrorKind;

/// A failed call, as a fallback handler receives it.
#[derive(Debug)]
#[non_exhaustive]
pub struct Failed<Req, Res> {
    /// The request, if the layer keeps requests.
    pub request: Option<Req>,
    /// What the call came to: an error, or a response the classifier called
    /// a failure.
    pub outcome: Result<Res, BoxError>,
}

impl<Req, Res> Failed<Req, Res> {
    /// The kind of the error, if the outcome is one.
    pub fn error_kind(&self) -> Option<ErrorKind> {
        self.outcome.as_ref().err().map(ErrorKind::of)
    }
}

/// Answers failed calls.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot answer a failed call whose request is `{Req}` and response `{Res}`",
    label = "not a fallback handler for this service",
    note = "a handler takes a `palisade::fallback::Failed<{Req}, {Res}>` and answers with a `Result<{Res}, BoxError>`: `from_sync_fn(|failed: Failed<{Req}, {Res}>| ...)` returns it, `from_fn` returns a future of it, `from_service` wraps a `Service<Failed<{Req}, {Res}>, Response = {Res}>`",
    note = "`{Req}` is the fallback's request; the `Failed` keeps it only with `.keep_request()`"
)]
pub trait Handler<Req, Res> {
    /// The handler's answer.
    type Future: Future<Output = Result<Res, BoxError>>;

    /// Answers a failed call.
    fn handle(&self, failed: Failed<Req, Res>) -> Self::Future;
}

/// A handler from a closure returning a result; see [`from_sync_fn`].
#[derive(Clone, Copy)]
pub struct FromSyncFn<F>(F);

/// A handler from a closure returning a future; see [`from_fn`].
#[derive(Clone, Copy)]
pub struct FromFn<F>(F);

/// A handler from another service; see [`from_service`].
#[derive(Clone)]
pub struct FromService<S>(S);

impl<F> fmt::Debug for FromSyncFn<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("FromSyncFn")
    }
}

impl<F> fmt::Debug for FromFn<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("FromFn")
    }
}

impl<S: fmt::Debug> fmt::Debug for FromService<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("FromService").field(&self.0).finish()
    }
}

/// A handler that answers at once: `f` returns the result.
pub fn from_sync_fn<F>(f: F) -> FromSyncFn<F> {
    FromSyncFn(f)
}

/// A handler that answers with a future: `f` returns it.
pub fn from_fn<F>(f: F) -> FromFn<F> {
    FromFn(f)
}

/// A handler that asks another service, which receives the [`Failed`] call.
/// The service is cloned for each fallback and driven to readiness.
pub fn from_service<S>(service: S) -> FromService<S> {
    FromService(service)
}

// Where a handler does not fit, rustc names `Handler` and its notes (the
// shape a handler must have) rather than the bound below that failed; a
// closure whose argument type is wrong still gets rustc's own E0631.
#[diagnostic::do_not_recommend]
impl<F, Req, Res> Handler<Req, Res> for FromSyncFn<F>
where
    F: Fn(Failed<Req, Res>) -> Result<Res, BoxError>,
{
    type Future = std::future::Ready<Result<Res, BoxError>>;

    fn handle(&self, failed: Failed<Req, Res>) -> Self::Future {
        std::future::ready((self.0)(failed))
    }
}

// Where a handler does not fit, rustc names `Handler` and its notes (the
// shape a handler must have) rather than the bound below that failed; a
// closure whose argument type is wrong still gets rustc's own E0631.
#[diagnostic::do_not_recommend]
impl<F, Fut, Req, Res> Handler<Req, Res> for FromFn<F>
where
    F: Fn(Failed<Req, Res>) -> Fut,
    Fut: Future<Output = Result<Res, BoxError>>,
{
    type Future = Fut;

    fn handle(&self, failed: Failed<Req, Res>) -> Fut {
        (self.0)(failed)
    }
}

/// The answer of a [`from_service`] handler.
#[pin_project]
pub struct ServiceAnswer<S: Service<R>, R> {
    #[pin]
    inner: Oneshot<S, R>,
}

impl<S: Service<R>, R> fmt::Debug for ServiceAnswer<S, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ServiceAnswer")
    }
}

impl<S, R> Future for ServiceAnswer<S, R>
where
    S: Service<R>,
    S::Error: Into<BoxError>,
{
    type Output = Result<S::Response, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.project().inner.poll(cx).map_err(Into::into)
    }
}

// Where a handler does not fit, rustc names `Handler` and its notes (the
// shape a handler must have) rather than the bound below that failed; a
// closure whose argument type is wrong still gets rustc's own E0631.
#[diagnostic::do_not_recommend]
impl<S, Req, Res> Handler<Req, Res> for FromService<S>
where
    S: Service<Failed<Req, Res>, Response = Res> + Clone,
    S::Error: Into<BoxError>,
{
    type Future = ServiceAnswer<S, Failed<Req, Res>>;

    fn handle(&self, failed: Failed<Req, Res>) -> Self::Future {
        ServiceAnswer {
            inner: Oneshot::new(self.0.clone(), failed),
        }
    }
}

/// A service whose failed calls are answered by a handler; see the
/// [module docs](self).
pub struct Fallback<S, H, C = DefaultClassifier, K = DropRequest> {
    inner: S,
    layer: FallbackLayer<H, C, K>,
}

impl<S, H, C, K> Fallback<S, H, C, K> {
    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S: Clone, H: Clone, C: Clone, K: Copy> Clone for Fallback<S, H, C, K> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            layer: self.layer.clone(),
        }
    }
}

impl<S: fmt::Debug, H, C, K: fmt::Debug> fmt::Debug for Fallback<S, H, C, K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Fallback")
            .field("inner", &self.inner)
            .field("layer", &self.layer)
            .finish()
    }
}

impl<S, H, C, K, Req> Service<Req> for Fallback<S, H, C, K>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    H: Handler<Req, S::Response> + Clone,
    C: Classify<S::Response, S::Error> + Clone,
    K: KeepRequest<Req>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future, H::Future, H, C, Req>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    #[inline]
    fn call(&mut self, req: Req) -> Self::Future {
        let layer = &self.layer;
        let request = layer.keep.keep(&req);
        let events = (!layer.shared.listeners.is_empty()).then(|| layer.shared.clone());
        ResponseFuture::new(
            self.inner.call(req),
            layer.handler.clone(),
            layer.classifier.clone(),
            layer.trigger,
            request,
            events,
        )
    }
}
