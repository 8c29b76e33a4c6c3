//! Deciding what a finished call means: success, failure, or neither.
//!
//! Every layer that judges a result (the circuit breaker, the retry, the
//! fallback) reads it through one trait, [`Classify`], so that "what is a
//! failure" is written once and shared. A classifier answers, of a result:
//!
//! * [`classify`](Classify::classify): was the call a [`Success`](Outcome::Success),
//!   a [`Failure`](Outcome::Failure), or [`Ignored`](Outcome::Ignored) (it counts
//!   neither way, for example a cancelled call or a client error that says
//!   nothing about the server's health)?
//! * [`is_retryable_failure`](Classify::is_retryable_failure): is this
//!   failure worth another try (gRPC: only Unavailable by default)?
//! * [`is_not_sent`](Classify::is_not_sent): did the request certainly never
//!   reach the server (a refused connection)?
//! * [`delay_hint`](Classify::delay_hint): did the server say when to come
//!   back (`Retry-After`, `grpc-retry-pushback-ms`)?
//!
//! and, of a request, for the retry only, through [`ClassifyRequest`]:
//!
//! * [`is_retryable`](ClassifyRequest::is_retryable): may this request be
//!   sent again at all (HTTP: only idempotent methods, unless told
//!   otherwise)?
//!
//! Built in:
//!
//! | classifier | failure | feature |
//! |---|---|---|
//! | [`DefaultClassifier`] | every `Err` | |
//! | [`ClassifyFn`] (from [`classify_fn`]) | whatever the closure says | |
//! | [`HttpClassifier`] | transport errors, 5xx, 408, 429 | `http` |
//! | [`GrpcClassifier`] | transport errors, Unknown, Internal, Unavailable, DeadlineExceeded, ResourceExhausted, DataLoss (retried: Unavailable and transport errors) | `grpc` |
//!
//! Server delay hints are parsed by the functions in [`hint`]; a hint larger
//! than the cap the caller gives is discarded, never obeyed blindly.
//!
//! # A classifier of your own
//!
//! It implements [`Classify`] for the results it judges, and says the rest
//! in empty `impl`s: [`ClassifyRequest`] for the retry (which requests may
//! be sent twice; the default says all), [`JudgesAtHead`] for the circuit
//! breaker (its verdict is complete at the response head). Without them,
//! the compiler names the missing trait and the `impl` to add:
//!
//! ```compile_fail,E0277
//! use palisade::circuit_breaker::CircuitBreakerLayer;
//! use palisade::classify::{Classify, Outcome};
//! use palisade::error::BoxError;
//! use tower::{Layer, Service, service_fn};
//!
//! #[derive(Clone)]
//! struct Mine;
//! impl<Res, E> Classify<Res, E> for Mine {
//!     fn classify(&self, r: &Result<Res, E>) -> Outcome {
//!         if r.is_ok() { Outcome::Success } else { Outcome::Failure }
//!     }
//! }
//!
//! fn serve<S: Service<u32>>(svc: S) { /* ... */ }
//!
//! let breaker = CircuitBreakerLayer::builder().classifier(Mine).build().unwrap();
//! serve(breaker.layer(service_fn(|n: u32| async move { Ok::<_, BoxError>(n) })));
//! // error[E0277]: `Mine` does not say when its verdict is complete, which the circuit breaker needs
//! // note: for a classifier that judges at the response head, add `impl palisade::classify::JudgesAtHead for Mine {}`; ...
//! ```
//!
//! ```compile_fail,E0277
//! # use palisade::classify::{Classify, Outcome};
//! # use palisade::error::BoxError;
//! # use tower::{Layer, Service, service_fn};
//! # #[derive(Clone)]
//! # struct Mine;
//! # impl<Res, E> Classify<Res, E> for Mine {
//! #     fn classify(&self, r: &Result<Res, E>) -> Outcome { Outcome::Success }
//! # }
//! # fn serve<S: Service<u32>>(svc: S) {}
//! use palisade::retry::RetryLayer;
//!
//! let retry = RetryLayer::builder().classifier(Mine).build().unwrap();
//! serve(retry.layer(service_fn(|n: u32| async move { Ok::<_, BoxError>(n) })));
//! // error[E0277]: `Mine` does not say whether a `u32` may be sent twice
//! // note: to retry every request, add `impl<Req> palisade::classify::ClassifyRequest<Req> for Mine {}`
//! ```
//!
//! With both `impl`s, it compiles:
//!
//! ```
//! # use palisade::circuit_breaker::CircuitBreakerLayer;
//! # use palisade::classify::{Classify, Outcome};
//! # use palisade::error::BoxError;
//! # use palisade::retry::RetryLayer;
//! # use tower::{Layer, Service, service_fn};
//! # #[derive(Clone)]
//! # struct Mine;
//! # impl<Res, E> Classify<Res, E> for Mine {
//! #     fn classify(&self, r: &Result<Res, E>) -> Outcome { Outcome::Success }
//! # }
//! # fn serve<S: Service<u32>>(svc: S) {}
//! use palisade::classify::{ClassifyRequest, JudgesAtHead};
//!
//! impl JudgesAtHead for Mine {}
//! impl<Req> ClassifyRequest<Req> for Mine {}
//!
//! let inner = service_fn(|n: u32| async move { Ok::<_, BoxError>(n) });
//! let breaker = CircuitBreakerLayer::builder().classifier(Mine).build().unwrap();
//! let retry = RetryLayer::builder().classifier(Mine).build().unwrap();
//! serve(retry.layer(breaker.layer(inner)));
//! ```

pub mod hint;

#[cfg(feature = "http")]
mod connect;
#[cfg(feature = "http")]
pub use self::connect::is_connect_error;

#[cfg(feature = "http")]
mod http;
#[cfg(feature = "http")]
pub use self::http::{HttpClassifier, HttpRequest, HttpResponse};

#[cfg(feature = "grpc")]
mod eos;
#[cfg(feature = "grpc")]
mod grpc;
#[cfg(feature = "grpc")]
pub use self::eos::StatusBody;
#[cfg(feature = "grpc")]
pub use self::grpc::{GrpcClassifier, GrpcCode};

mod settle;
pub use self::settle::{JudgesAtHead, Settle, Tracker, Verdict};

pub use self::hint::DelayHint;

use std::any::Any;
use std::fmt;

use crate::BoxError;
use crate::error::ErrorKind;

/// The palisade rejection an error is, if it is one.
pub(crate) fn rejection_kind<E: 'static>(err: &E) -> Option<ErrorKind> {
    let boxed = (err as &dyn Any).downcast_ref::<BoxError>()?;
    Some(ErrorKind::of(boxed)).filter(|k| k.is_rejection())
}

/// What a finished attempt needs decided by a layer that may send another
/// (the retry, the hedge): `None` for an answer returned as it is (neither
/// a failure nor a palisade rejection); `Some(None)` for a failure as the
/// classifier judged it; `Some(Some(kind))` for a palisade rejection of
/// `kind`.
#[inline]
pub(crate) fn to_decide<C, Res, E>(
    classifier: &C,
    result: &Result<Res, E>,
) -> Option<Option<ErrorKind>>
where
    C: Classify<Res, E>,
    E: 'static,
{
    let kind = result.as_ref().err().and_then(rejection_kind);
    if kind.is_some() {
        return Some(kind);
    }
    match classifier.classify(result) {
        Outcome::Success | Outcome::Ignored => None,
        Outcome::Failure => Some(None),
    }
}

/// What a finished call means for the layers that judge it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// The call worked.
    Success,
    /// The call failed in a way that says something about the callee's health,
    /// and may be worth retrying.
    Failure,
    /// The call counts neither way: the breaker does not record it and the
    /// retry does not retry it.
    Ignored,
}

impl Outcome {
    /// Whether this is [`Outcome::Failure`].
    pub fn is_failure(self) -> bool {
        matches!(self, Outcome::Failure)
    }
}

/// Classifies the results of a service: `Res` and `E` are its response and
/// error. Only [`classify`](Classify::classify) is required.
///
/// Whether a *request* may be sent twice is the other half of a retry's
/// policy, asked before the call by the retry only: [`ClassifyRequest`].
///
/// # Examples
///
/// A classifier for a service whose error is a number, where only 503 is a
/// failure and 404 counts neither way:
///
/// ```
/// use palisade::classify::{Classify, Outcome};
///
/// struct OnlyUnavailable;
///
/// impl<Res> Classify<Res, u16> for OnlyUnavailable {
///     fn classify(&self, result: &Result<Res, u16>) -> Outcome {
///         match result {
///             Ok(_) => Outcome::Success,
///             Err(503) => Outcome::Failure,
///             Err(404) => Outcome::Ignored,
///             Err(_) => Outcome::Success,
///         }
///     }
/// }
///
/// let c = OnlyUnavailable;
/// let unavailable: Result<(), u16> = Err(503);
/// assert_eq!(c.classify(&unavailable), Outcome::Failure);
/// ```
///
/// To use a classifier of your own with the circuit breaker, also say when
/// its verdict is complete: [`JudgesAtHead`] for one that judges at the
/// response head (one empty `impl`), or [`Settle`] for one that must see
/// the end of a streamed body.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot classify a service's `Result<{Res}, {E}>`",
    label = "not `Classify<{Res}, {E}>`",
    note = "a layer's classifier must judge the results of the service below it: `HttpClassifier` reads `http::Response` and `reqwest::Response`, `GrpcClassifier` gRPC answers and `tonic::Status`, `DefaultClassifier` any `Result`",
    note = "a classifier of your own implements `palisade::classify::Classify<{Res}, {E}>`, and also `ClassifyRequest<Req>` for the retry and `JudgesAtHead` for the circuit breaker"
)]
pub trait Classify<Res, E> {
    /// Judges a finished call.
    fn classify(&self, result: &Result<Res, E>) -> Outcome;

    /// When the server asked the client to come back, if it did.
    ///
    /// The default finds no hint.
    fn delay_hint(&self, result: &Result<Res, E>) -> Option<DelayHint> {
        let _ = result;
        None
    }

    /// Whether a finished attempt is worth another try, if the request may
    /// be sent again. A failure need not be: gRPC's INTERNAL counts against
    /// the server's health, but sending the call again may run it twice.
    ///
    /// The default retries every [`Failure`](Outcome::Failure).
    fn is_retryable_failure(&self, result: &Result<Res, E>) -> bool {
        self.classify(result).is_failure()
    }

    /// Whether the request certainly never reached the server: the
    /// connection was refused, the name did not resolve, the TLS handshake
    /// failed. Such a request is safe to send again whatever its method
    /// (Envoy's `connect-failure` retry policy), so the retry sends it again
    /// even when [`ClassifyRequest::is_retryable`] said no.
    ///
    /// The default says no.
    fn is_not_sent(&self, result: &Result<Res, E>) -> bool {
        let _ = result;
        false
    }
}

/// Whether a request may be sent more than once: the half of a retry's
/// policy that is decided before the call. Asked by the retry and the
/// hedge before the first attempt; a request that may not be sent twice
/// is sent once and its result returned as is, unless it never reached the
/// server ([`Classify::is_not_sent`]), which the retry sends again (the
/// hedge does not: see [`hedge`](crate::hedge#which-calls-are-hedged)).
///
/// Every built-in classifier has it: [`DefaultClassifier`] and closures
/// ([`classify_fn`]) retry every request, [`HttpClassifier`] only the
/// idempotent methods, [`GrpcClassifier`] every call (gRPC judges by the
/// status). A classifier of your own that retries every request needs one
/// empty `impl`:
///
/// ```
/// use palisade::classify::{Classify, ClassifyRequest, Outcome};
///
/// struct Mine;
///
/// impl<Res, E> Classify<Res, E> for Mine {
///     fn classify(&self, result: &Result<Res, E>) -> Outcome {
///         if result.is_ok() { Outcome::Success } else { Outcome::Failure }
///     }
/// }
/// impl<Req> ClassifyRequest<Req> for Mine {}
///
/// assert!(Mine.is_retryable(&"any request"));
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` does not say whether a `{Req}` may be sent twice",
    label = "not `ClassifyRequest<{Req}>`",
    note = "to retry every request, add `impl<Req> palisade::classify::ClassifyRequest<Req> for {Self} {{}}`"
)]
pub trait ClassifyRequest<Req> {
    /// Whether `req` may be sent more than once.
    ///
    /// The default says yes.
    fn is_retryable(&self, req: &Req) -> bool {
        let _ = req;
        true
    }
}

impl<C: ClassifyRequest<Req> + ?Sized, Req> ClassifyRequest<Req> for &C {
    fn is_retryable(&self, req: &Req) -> bool {
        (**self).is_retryable(req)
    }
}

impl<C: ClassifyRequest<Req> + ?Sized, Req> ClassifyRequest<Req> for std::sync::Arc<C> {
    fn is_retryable(&self, req: &Req) -> bool {
        (**self).is_retryable(req)
    }
}

impl<C, Res, E> Classify<Res, E> for &C
where
    C: Classify<Res, E> + ?Sized,
{
    fn classify(&self, result: &Result<Res, E>) -> Outcome {
        (**self).classify(result)
    }
    fn delay_hint(&self, result: &Result<Res, E>) -> Option<DelayHint> {
        (**self).delay_hint(result)
    }
    fn is_retryable_failure(&self, result: &Result<Res, E>) -> bool {
        (**self).is_retryable_failure(result)
    }
    fn is_not_sent(&self, result: &Result<Res, E>) -> bool {
        (**self).is_not_sent(result)
    }
}

impl<C, Res, E> Classify<Res, E> for std::sync::Arc<C>
where
    C: Classify<Res, E> + ?Sized,
{
    fn classify(&self, result: &Result<Res, E>) -> Outcome {
        (**self).classify(result)
    }
    fn delay_hint(&self, result: &Result<Res, E>) -> Option<DelayHint> {
        (**self).delay_hint(result)
    }
    fn is_retryable_failure(&self, result: &Result<Res, E>) -> bool {
        (**self).is_retryable_failure(result)
    }
    fn is_not_sent(&self, result: &Result<Res, E>) -> bool {
        (**self).is_not_sent(result)
    }
}

/// The classifier used when none is given: every `Ok` is a success, every
/// `Err` a failure, every request retryable, no hints.
///
/// # Examples
///
/// ```
/// use palisade::classify::{Classify, DefaultClassifier, Outcome};
///
/// let r: Result<u32, &str> = Err("boom");
/// assert_eq!(DefaultClassifier.classify(&r), Outcome::Failure);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DefaultClassifier;

impl JudgesAtHead for DefaultClassifier {}

impl<Req> ClassifyRequest<Req> for DefaultClassifier {}

impl<Res, E> Classify<Res, E> for DefaultClassifier {
    fn classify(&self, result: &Result<Res, E>) -> Outcome {
        match result {
            Ok(_) => Outcome::Success,
            Err(_) => Outcome::Failure,
        }
    }
}

/// A classifier made from a closure over the result; see [`classify_fn`].
#[derive(Clone, Copy)]
pub struct ClassifyFn<F> {
    f: F,
}

impl<F> fmt::Debug for ClassifyFn<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClassifyFn").finish_non_exhaustive()
    }
}

/// Makes a classifier from a closure that judges a result.
///
/// Every request is retryable and no delay hint is read; implement
/// [`Classify`] by hand for more.
///
/// # Examples
///
/// ```
/// use palisade::classify::{classify_fn, Classify, Outcome};
///
/// // An HTTP-like status in the response: 5xx fails, everything else succeeds.
/// let c = classify_fn(|r: &Result<u16, std::io::Error>| match r {
///     Ok(status) if *status >= 500 => Outcome::Failure,
///     Ok(_) => Outcome::Success,
///     Err(_) => Outcome::Failure,
/// });
/// assert_eq!(c.classify(&Ok(503)), Outcome::Failure);
/// assert_eq!(c.classify(&Ok(200)), Outcome::Success);
/// ```
pub fn classify_fn<F>(f: F) -> ClassifyFn<F> {
    ClassifyFn { f }
}

impl<F> JudgesAtHead for ClassifyFn<F> {}

impl<F, Req> ClassifyRequest<Req> for ClassifyFn<F> {}

impl<F, Res, E> Classify<Res, E> for ClassifyFn<F>
where
    F: Fn(&Result<Res, E>) -> Outcome,
{
    fn classify(&self, result: &Result<Res, E>) -> Outcome {
        (self.f)(result)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_classifier_fails_every_err() {
        let ok: Result<(), ()> = Ok(());
        let err: Result<(), ()> = Err(());
        assert_eq!(
            Classify::classify(&DefaultClassifier, &ok),
            Outcome::Success
        );
        assert_eq!(
            Classify::classify(&DefaultClassifier, &err),
            Outcome::Failure
        );
        assert!(DefaultClassifier.is_retryable(&1u8));
        assert_eq!(Classify::delay_hint(&DefaultClassifier, &err), None);
    }

    #[test]
    fn closures_and_references_classify() {
        let c = classify_fn(|r: &Result<i32, ()>| match r {
            Ok(n) if *n < 0 => Outcome::Ignored,
            Ok(_) => Outcome::Success,
            Err(()) => Outcome::Failure,
        });
        let by_ref = &c;
        assert_eq!(Classify::classify(&by_ref, &Ok(-1)), Outcome::Ignored);
        let shared = std::sync::Arc::new(c);
        assert_eq!(Classify::classify(&shared, &Err(())), Outcome::Failure);
        assert!(Outcome::Failure.is_failure());
        assert!(!Outcome::Ignored.is_failure());
    }
}
