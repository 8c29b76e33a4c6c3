//! Rejections as each protocol's callers expect them: a tonic `Status`
//! with the right code, an HTTP 503, 429 or 504 with `Retry-After`.
//!
//! A palisade layer refuses a call with an error of its own
//! ([`CircuitOpen`], [`BulkheadFull`], [`RateLimited`], [`ConcurrencyLimited`], [`Throttled`],
//! [`TooManyKeys`], [`Elapsed`]). Left as it is, that
//! error reaches a gRPC caller as `UNKNOWN`, and an HTTP server cannot
//! answer it at all (axum refuses a layer whose error is not
//! `Infallible`). This module turns each rejection into the answer the
//! protocol has a word for:
//!
//! | rejection | gRPC ([`to_status`], [`GrpcRejectionLayer`]; feature `tonic`) | HTTP ([`to_response`], [`HttpRejectionLayer`]) |
//! |---|---|---|
//! | [`CircuitOpen`] | `UNAVAILABLE`, with `grpc-retry-pushback-ms` when the breaker says when it may admit calls again | 503, with `Retry-After` in whole seconds (rounded up, at least 1), none when forced open |
//! | [`BulkheadFull`] | `RESOURCE_EXHAUSTED` | 503, with `Retry-After` (1 s by default, see [`retry_after_when_busy`](HttpRejectionBuilder::retry_after_when_busy)) |
//! | [`RateLimited`] | `RESOURCE_EXHAUSTED`, with `grpc-retry-pushback-ms`: when the call's cost would conform | 429, with `Retry-After` in whole seconds (rounded up, at least 1), none for a cost above the burst |
//! | [`ConcurrencyLimited`] | `RESOURCE_EXHAUSTED` | 503, with `Retry-After` as for a full bulkhead |
//! | [`Throttled`] | `UNAVAILABLE`, as an open breaker: the service behind has been failing | 503, with `Retry-After` as for a full bulkhead |
//! | [`TooManyKeys`] | `RESOURCE_EXHAUSTED` | 503, with `Retry-After` as for a full bulkhead |
//! | [`Elapsed`] | `DEADLINE_EXCEEDED` | 504 |
//!
//! A rejection is found anywhere in the error's chain of
//! [`source`](std::error::Error::source)s, as
//! [`ErrorKind::of_dyn`] finds it. Any other error is not a rejection: the
//! free functions return `None`, and the layers pass it through (gRPC)
//! or answer it with a bare 500 (HTTP).
//!
//! # Why these codes
//!
//! gRPC's status code guide
//! (<https://grpc.github.io/grpc/core/md_doc_statuscodes.html>, and the
//! comments of `google.rpc.Code`) says `UNAVAILABLE` is "most likely a
//! transient condition, which can be corrected by retrying with a backoff",
//! and tells servers to use it when "the client can retry just the failing
//! call". That is an open breaker: the call was never sent, and another
//! attempt later, or at another backend, may succeed. gRPC's retry design
//! (A6) retries only `UNAVAILABLE` by default, and honours
//! `grpc-retry-pushback-ms`, so a caller's retry waits as long as the
//! breaker asked.
//!
//! `RESOURCE_EXHAUSTED` is the guide's code for a limit that was reached
//! (a quota, a concurrency or flow-control limit: tonic's own load
//! shedding answers with it). A full bulkhead is such a local limit: the
//! caller is told the server is busy, not that it is gone, and a default
//! retry policy does not pile more calls onto it. `DEADLINE_EXCEEDED` is the
//! code for a call that took longer than it was allowed.
//!
//! In HTTP, 503 Service Unavailable is "a temporary overload or scheduled
//! maintenance, which will likely be alleviated after some delay" (RFC 9110
//! §15.6.4), with `Retry-After` saying how long; it fits both an open
//! breaker and a full bulkhead. (429 Too Many Requests is for a limit on
//! one client, which a rate limiter keyed by client would answer.) A
//! timeout is 504 Gateway Timeout: the server did not get its answer in
//! time from what it called. 408 would blame the client's request.
//!
//! # The source stays reachable
//!
//! The `Status` made by [`to_status`] carries the rejection as its
//! [`source`](std::error::Error::source), so [`ErrorKind::of_dyn`] on the
//! `Status` a generated client returns still tells a `CircuitOpen` from a
//! server's own `UNAVAILABLE`.
//!
//! [`CircuitOpen`]: crate::error::CircuitOpen
//! [`BulkheadFull`]: crate::error::BulkheadFull
//! [`RateLimited`]: crate::error::RateLimited
//! [`TooManyKeys`]: crate::error::TooManyKeys
//! [`ConcurrencyLimited`]: crate::error::ConcurrencyLimited
//! [`Throttled`]: crate::error::Throttled
//! [`Elapsed`]: crate::error::Elapsed
//! [`ErrorKind::of_dyn`]: crate::error::ErrorKind::of_dyn

#[cfg(feature = "tonic")]
pub mod grpc;
pub mod http;

#[cfg(feature = "tonic")]
pub use self::grpc::{GrpcRejection, GrpcRejectionLayer, to_status};
pub use self::http::{
    DEFAULT_RETRY_AFTER_WHEN_BUSY, HttpRejection, HttpRejectionBuilder, HttpRejectionLayer,
    to_response,
};

use std::error::Error as StdError;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use pin_project::pin_project;

use crate::error::{
    BoxError, BulkheadFull, CircuitOpen, ConcurrencyLimited, Elapsed, ErrorKind, RateLimited,
    Throttled, TooManyKeys,
};

/// What both layers' futures hold: the inner call, or the refusal the
/// inner `poll_ready` returned, held by the service for this call (tonic's
/// generated client and an `Infallible` server can only be answered from
/// a call, not from `poll_ready`).
#[pin_project(project = AnswerProj)]
enum Answer<F, R> {
    Called {
        #[pin]
        future: F,
    },
    Refused {
        refusal: Option<R>,
    },
}

/// How a call that did not succeed failed.
enum Failed<R> {
    /// The inner call's error.
    Inner(BoxError),
    /// The refusal held from `poll_ready`.
    Held(R),
}

impl<F, R> Answer<F, R> {
    /// The refusal `held` from `poll_ready` if there is one (taken: it
    /// answers this call only), or else the inner call.
    fn new(held: &mut Option<R>, call: impl FnOnce() -> F) -> Self {
        match held.take() {
            Some(refusal) => Answer::Refused {
                refusal: Some(refusal),
            },
            None => Answer::Called { future: call() },
        }
    }

    /// `"called"` or `"refused"`, for `Debug`.
    fn state(&self) -> &'static str {
        match self {
            Answer::Called { .. } => "called",
            Answer::Refused { .. } => "refused",
        }
    }
}

impl<F, R, T, E> Answer<F, R>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
{
    fn poll_answer(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<T, Failed<R>>> {
        Poll::Ready(match self.project() {
            AnswerProj::Called { future } => {
                ready!(future.poll(cx)).map_err(|err| Failed::Inner(err.into()))
            }
            AnswerProj::Refused { refusal } => Err(Failed::Held(
                refusal.take().expect("polled after completion"),
            )),
        })
    }
}

/// A palisade rejection found in an error's chain.
// gRPC reads every rejection (for its message); HTTP only the breaker's.
#[cfg_attr(not(feature = "tonic"), allow(dead_code))]
#[derive(Debug, Clone, Copy)]
enum Rejection<'a> {
    CircuitOpen(&'a CircuitOpen),
    BulkheadFull(&'a BulkheadFull),
    RateLimited(&'a RateLimited),
    TooManyKeys(&'a TooManyKeys),
    ConcurrencyLimited(&'a ConcurrencyLimited),
    Throttled(&'a Throttled),
    Elapsed(&'a Elapsed),
}

/// The rejection `err` is, or wraps: the one [`ErrorKind::of_dyn`] names.
fn rejection<'a>(err: &'a (dyn StdError + 'static)) -> Option<Rejection<'a>> {
    match ErrorKind::of_dyn(err) {
        ErrorKind::CircuitOpen => find(err).map(Rejection::CircuitOpen),
        ErrorKind::BulkheadFull => find(err).map(Rejection::BulkheadFull),
        ErrorKind::RateLimited => find(err).map(Rejection::RateLimited),
        ErrorKind::TooManyKeys => find(err).map(Rejection::TooManyKeys),
        ErrorKind::ConcurrencyLimited => find(err).map(Rejection::ConcurrencyLimited),
        ErrorKind::Throttled => find(err).map(Rejection::Throttled),
        ErrorKind::Elapsed => find(err).map(Rejection::Elapsed),
        // Other rejections have no protocol answer of their own: they pass
        // through as any error would.
        _ => None,
    }
}

/// The first `E` in `err`'s chain of sources.
fn find<'a, E: StdError + 'static>(err: &'a (dyn StdError + 'static)) -> Option<&'a E> {
    let mut current = Some(err);
    while let Some(e) = current {
        if let Some(found) = e.downcast_ref::<E>() {
            return Some(found);
        }
        current = e.source();
    }
    None
}
