//! The throttle's events: what they say, how they are traced and counted.

use std::fmt;

use crate::event::EventKind;

/// What happened in a throttle; see [`Event`](crate::event::Event).
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub enum ThrottleEvent {
    /// The throttle rejected a call without calling the inner service.
    Throttled {
        /// The share of calls it was rejecting, in (0, 1).
        probability: f64,
    },
}

impl fmt::Display for ThrottleEvent {
    /// The event without the layer's name.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            ThrottleEvent::Throttled { probability } => write!(
                f,
                "call rejected locally, {:.1}% of calls are",
                probability * 100.0
            ),
        }
    }
}

impl EventKind for ThrottleEvent {
    fn describe(&self, name: &str, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "throttle `{name}`: {self}")
    }

    #[cfg(feature = "tracing")]
    fn trace(&self, name: &str) {
        match *self {
            ThrottleEvent::Throttled { probability } => {
                tracing::warn!(target: "palisade", layer = name, probability, "call rejected: throttled");
            }
        }
    }

    #[cfg(feature = "metrics")]
    fn measure(&self, record: &mut dyn FnMut(crate::event::Measure)) {
        use crate::event::Measure;
        use metrics::Unit;
        record(match *self {
            ThrottleEvent::Throttled { .. } => {
                Measure::count("palisade.throttle.throttled_calls", &[])
                    .described(Unit::Count, "Calls the throttle rejected locally")
            }
        });
    }
}
