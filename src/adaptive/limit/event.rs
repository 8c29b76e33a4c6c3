//! The adaptive limit's events: what they say, how they are traced and
//! counted.

use std::fmt;

use crate::event::EventKind;

/// What happened in an adaptive limit; see [`Event`](crate::event::Event).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum AdaptiveLimitEvent {
    /// The algorithm moved the limit.
    LimitChanged {
        /// The limit before.
        from: u32,
        /// The limit now.
        to: u32,
    },
    /// The limit refused a call without calling the inner service.
    Rejected {
        /// Whether the call waited in the queue for the maximum wait first
        /// (else every permit and queue place was taken).
        timed_out_in_queue: bool,
    },
}

impl fmt::Display for AdaptiveLimitEvent {
    /// The event without the layer's name.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            AdaptiveLimitEvent::LimitChanged { from, to } => {
                write!(f, "limit moved from {from} to {to}")
            }
            AdaptiveLimitEvent::Rejected {
                timed_out_in_queue: false,
            } => f.write_str("call rejected, the limit is reached"),
            AdaptiveLimitEvent::Rejected {
                timed_out_in_queue: true,
            } => f.write_str("call rejected after waiting its longest in the queue"),
        }
    }
}

impl EventKind for AdaptiveLimitEvent {
    fn describe(&self, name: &str, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "adaptive limit `{name}`: {self}")
    }

    #[cfg(feature = "tracing")]
    fn trace(&self, name: &str) {
        match *self {
            AdaptiveLimitEvent::LimitChanged { from, to } => {
                tracing::debug!(target: "palisade", layer = name, from, to, "adaptive limit moved");
            }
            AdaptiveLimitEvent::Rejected { timed_out_in_queue } => {
                tracing::warn!(target: "palisade", layer = name, timed_out_in_queue, "call rejected: concurrency limited");
            }
        }
    }

    #[cfg(feature = "metrics")]
    fn measure(&self, record: &mut dyn FnMut(crate::event::Measure)) {
        use crate::event::Measure;
        use metrics::Unit;
        const REJECTED: &str = "palisade.adaptive_limit.rejected_calls";
        const REJECTED_HELP: &str = "Calls the adaptive limit refused";
        const REASON: &str = "palisade.adaptive_limit.rejection_reason";
        record(match *self {
            AdaptiveLimitEvent::LimitChanged { to, .. } => {
                Measure::set("palisade.adaptive_limit.limit", &[], f64::from(to)).described(
                    Unit::Count,
                    "The adaptive limit's current limit of calls in flight",
                )
            }
            AdaptiveLimitEvent::Rejected {
                timed_out_in_queue: false,
            } => {
                Measure::count(REJECTED, &[(REASON, "full")]).described(Unit::Count, REJECTED_HELP)
            }
            AdaptiveLimitEvent::Rejected {
                timed_out_in_queue: true,
            } => Measure::count(REJECTED, &[(REASON, "queue_timeout")])
                .described(Unit::Count, REJECTED_HELP),
        });
    }
}
