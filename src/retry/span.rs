//! The span each attempt runs in (feature `tracing`); without the
//! feature, a type of size zero and functions that compile to nothing.

/// The running attempt's span; `None` between attempts and when spans are
/// off, so that a retry without spans only tests a discriminant (a
/// disabled `tracing::Span` still costs its enter, exit and drop).
#[cfg(feature = "tracing")]
#[derive(Debug, Default)]
pub(crate) struct AttemptSpan(Option<tracing::Span>);

/// Without the feature there is no span.
#[cfg(not(feature = "tracing"))]
#[derive(Debug, Default)]
pub(crate) struct AttemptSpan;

/// The span of attempt number `attempt` (from 1) of the retry layer named
/// `name`, if `enabled` ([`attempt_spans`](super::RetryBuilder::attempt_spans)): `palisade.attempt`, at level `INFO`, target `palisade`, with
/// `palisade.layer.name`, and either OpenTelemetry's
/// `http.request.resend_count` (HTTP requests, `http`: set only on a
/// resend, to the resend's number) or `palisade.attempt.number`. With no
/// subscriber interested, `tracing` hands back a disabled span without
/// allocating.
#[cfg(feature = "tracing")]
#[inline]
pub(crate) fn attempt_span(enabled: bool, name: &str, attempt: u32, http: bool) -> AttemptSpan {
    if !enabled {
        return AttemptSpan(None);
    }
    AttemptSpan(Some(if !http {
        tracing::info_span!(
            target: "palisade",
            "palisade.attempt",
            palisade.layer.name = name,
            palisade.attempt.number = attempt,
        )
    } else if attempt <= 1 {
        tracing::info_span!(target: "palisade", "palisade.attempt", palisade.layer.name = name)
    } else {
        tracing::info_span!(
            target: "palisade",
            "palisade.attempt",
            palisade.layer.name = name,
            http.request.resend_count = attempt - 1,
        )
    }))
}

#[cfg(not(feature = "tracing"))]
#[inline(always)]
pub(crate) fn attempt_span(_enabled: bool, _name: &str, _attempt: u32, _http: bool) -> AttemptSpan {
    AttemptSpan
}

/// Runs `f` inside `span`: what the inner service does in `call` and in
/// each poll of its future is a child of the attempt.
#[inline(always)]
pub(crate) fn in_scope<R>(span: &AttemptSpan, f: impl FnOnce() -> R) -> R {
    #[cfg(feature = "tracing")]
    if let Some(span) = &span.0 {
        return entered(span, f);
    }
    #[cfg(not(feature = "tracing"))]
    let _ = span;
    f()
}

/// Out of line: a retry without spans keeps only the test above inlined.
#[cfg(feature = "tracing")]
#[inline(never)]
fn entered<R>(span: &tracing::Span, f: impl FnOnce() -> R) -> R {
    span.in_scope(f)
}

/// Ends the attempt's span when the attempt ends (not when the call's
/// future is dropped), so that its duration is the attempt's.
#[inline(always)]
pub(crate) fn close(span: &mut AttemptSpan) {
    #[cfg(feature = "tracing")]
    if span.0.is_some() {
        span.0 = None;
    }
    #[cfg(not(feature = "tracing"))]
    let _ = span;
}
