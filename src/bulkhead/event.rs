//! The bulkhead's events: what they say, how they are traced and counted.

use std::fmt;

use crate::event::EventKind;

/// What happened in a bulkhead; see [`Event`](crate::event::Event).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum BulkheadEvent {
    /// The number of calls in flight changed.
    InFlight {
        /// Calls holding a permit now.
        in_flight: u32,
    },
    /// The bulkhead refused a call.
    Rejected {
        /// `true` if the call waited in the queue until its maximum wait
        /// expired; `false` if every permit and queue place was taken.
        timed_out_in_queue: bool,
    },
}

impl fmt::Display for BulkheadEvent {
    /// The event without the bulkhead's name.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            BulkheadEvent::InFlight { in_flight } => write!(f, "{in_flight} in flight"),
            BulkheadEvent::Rejected {
                timed_out_in_queue: true,
            } => f.write_str("call rejected after waiting in the queue"),
            BulkheadEvent::Rejected {
                timed_out_in_queue: false,
            } => f.write_str("call rejected, bulkhead full"),
        }
    }
}

impl EventKind for BulkheadEvent {
    fn describe(&self, name: &str, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "bulkhead `{name}`: {self}")
    }

    #[cfg(feature = "tracing")]
    fn trace(&self, name: &str) {
        match *self {
            BulkheadEvent::InFlight { in_flight } => {
                tracing::trace!(target: "palisade", layer = name, in_flight, "bulkhead in flight");
            }
            BulkheadEvent::Rejected { timed_out_in_queue } => {
                tracing::warn!(target: "palisade", layer = name, timed_out_in_queue, "call rejected: bulkhead full");
            }
        }
    }

    #[cfg(feature = "metrics")]
    fn measure(&self, record: &mut dyn FnMut(crate::event::Measure)) {
        use crate::event::Measure;
        use metrics::Unit;
        const REJECTED: &str = "palisade.bulkhead.rejected_calls";
        const REJECTED_HELP: &str = "Calls the bulkhead refused";
        const REASON: &str = "palisade.bulkhead.rejection_reason";
        record(match *self {
            BulkheadEvent::InFlight { in_flight } => {
                Measure::set("palisade.bulkhead.active_calls", &[], f64::from(in_flight))
                    .described(Unit::Count, "Calls holding a bulkhead permit")
            }
            BulkheadEvent::Rejected {
                timed_out_in_queue: false,
            } => {
                Measure::count(REJECTED, &[(REASON, "full")]).described(Unit::Count, REJECTED_HELP)
            }
            BulkheadEvent::Rejected {
                timed_out_in_queue: true,
            } => Measure::count(REJECTED, &[(REASON, "queue_timeout")])
                .described(Unit::Count, REJECTED_HELP),
        });
    }
}
