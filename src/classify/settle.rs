//! When a call's outcome is known: at the response head, or when a streamed
//! answer ends.

use super::{Classify, Outcome};

/// Told a call's outcome once it is known. The circuit breaker's hold on an
/// admitted call implements it (its window entry and a half-open probe
/// permit end then).
///
/// Dropped without [`finish`](Self::finish), it counts the call neither way
/// and gives back what it holds.
pub trait Tracker {
    /// The outcome is known.
    fn finish(self, outcome: Outcome);
}

/// What a classifier says of a response head: the outcome, or that the
/// end of the body will tell, judged by `J`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict<J> {
    /// The outcome is known now.
    Now(Outcome),
    /// The body's end will tell; `J` judges it.
    AtEnd(J),
}
/// A classifier whose verdict is complete at the response head: every
/// classifier but gRPC's on `http::Response`, whose status usually comes in
/// the trailers.
///
/// It has no items. Implement it for your own classifier to use it with the
/// circuit breaker:
///
/// ```
/// use palisade::classify::{Classify, JudgesAtHead, Outcome};
///
/// struct OnlyTimeouts;
///
/// impl<Res> Classify<Res, std::io::Error> for OnlyTimeouts {
///     fn classify(&self, result: &Result<Res, std::io::Error>) -> Outcome {
///         match result {
///             Err(e) if e.kind() == std::io::ErrorKind::TimedOut => Outcome::Failure,
///             _ => Outcome::Success,
///         }
///     }
/// }
///
/// impl JudgesAtHead for OnlyTimeouts {}
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` does not say when its verdict is complete, which the circuit breaker needs",
    note = "for a classifier that judges at the response head, add `impl palisade::classify::JudgesAtHead for {Self} {{}}`; for one that must see the end of a streamed body, implement `palisade::classify::Settle`"
)]
pub trait JudgesAtHead {}

impl<C: JudgesAtHead + ?Sized> JudgesAtHead for &C {}
impl<C: JudgesAtHead + ?Sized> JudgesAtHead for std::sync::Arc<C> {}

/// How a layer that judges outcomes ends a call: at once from the response
/// head, or, for an answer whose outcome is only known at the end of its
/// body, by wrapping the body so that it tells a [`Tracker`] when it ends.
///
/// Every classifier that implements [`JudgesAtHead`] has it, with the
/// inner service's response passed through unchanged. [`GrpcClassifier`]
/// has its own for `http::Response<B>`: a head without `grpc-status` is
/// judged from the trailers (see [`StatusBody`]).
///
/// [`GrpcClassifier`]: super::GrpcClassifier
/// [`StatusBody`]: super::StatusBody
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot tell the circuit breaker when a call's outcome is known",
    label = "not `Settle`",
    note = "for a classifier that judges at the response head, add `impl palisade::classify::JudgesAtHead for {Self} {{}}`"
)]
pub trait Settle<Res, E>: Classify<Res, E> {
    /// What the wrapped body keeps to judge its end.
    type Judge;
    /// The response the caller gets: `Res`, or `Res` with its body wrapped.
    type Response<T: Tracker>;

    /// Judges the response head, or defers to the end of its body.
    fn verdict(&self, result: &Result<Res, E>) -> Verdict<Self::Judge>;

    /// The caller's response: with `pending`, a body that finishes the
    /// tracker at its end; without, the answer as it is.
    fn wrap<T: Tracker>(
        result: Result<Res, E>,
        pending: Option<(Self::Judge, T)>,
    ) -> Result<Self::Response<T>, E>;
}

impl<C, Res, E> Settle<Res, E> for C
where
    C: Classify<Res, E> + JudgesAtHead + ?Sized,
{
    type Judge = std::convert::Infallible;
    type Response<T: Tracker> = Res;

    #[inline]
    fn verdict(&self, result: &Result<Res, E>) -> Verdict<Self::Judge> {
        Verdict::Now(self.classify(result))
    }

    #[inline]
    fn wrap<T: Tracker>(
        result: Result<Res, E>,
        _pending: Option<(Self::Judge, T)>,
    ) -> Result<Res, E> {
        result
    }
}
