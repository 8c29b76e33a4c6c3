//! The timeout's events: what they say, how they are traced and counted.

use std::fmt;
use std::time::Duration;

use crate::event::EventKind;

/// What happened in a timeout layer; see [`Event`](crate::event::Event).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum TimeoutEvent {
    /// A call ran out of time.
    TimedOut {
        /// The limit it reached.
        after: Duration,
    },
}

impl fmt::Display for TimeoutEvent {
    /// The event without the layer's name.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            TimeoutEvent::TimedOut { after } => write!(f, "timed out after {after:?}"),
        }
    }
}

impl EventKind for TimeoutEvent {
    fn describe(&self, name: &str, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "`{name}`: {self}")
    }

    #[cfg(feature = "tracing")]
    fn trace(&self, name: &str) {
        match *self {
            TimeoutEvent::TimedOut { after } => {
                tracing::debug!(target: "palisade", layer = name, after_ms = after.as_millis() as u64, "timed out");
            }
        }
    }

    #[cfg(feature = "metrics")]
    fn measure(&self, record: &mut dyn FnMut(crate::event::Measure)) {
        record(
            crate::event::Measure::count("palisade.timeout.timed_out_calls", &[])
                .described(metrics::Unit::Count, "Calls cut off by the timeout"),
        );
    }
}
