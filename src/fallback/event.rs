//! The fallback's events: what they say, how they are traced and counted.

use std::fmt;

use crate::error::ErrorKind;
use crate::event::EventKind;

/// What happened in a fallback layer; see [`Event`](crate::event::Event).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum FallbackEvent {
    /// The fallback answered a failed call.
    FellBack {
        /// The kind of the error it answered, if the failure was an error.
        kind: Option<ErrorKind>,
    },
}

impl fmt::Display for FallbackEvent {
    /// The event without the layer's name.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            FallbackEvent::FellBack { kind: Some(kind) } => {
                write!(f, "answered a failure ({kind:?})")
            }
            FallbackEvent::FellBack { kind: None } => f.write_str("answered a failed response"),
        }
    }
}

impl EventKind for FallbackEvent {
    fn describe(&self, name: &str, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "fallback `{name}`: {self}")
    }

    #[cfg(feature = "tracing")]
    fn trace(&self, name: &str) {
        match *self {
            FallbackEvent::FellBack { kind } => {
                tracing::info!(target: "palisade", layer = name, kind = ?kind, "fallback answered");
            }
        }
    }

    #[cfg(feature = "metrics")]
    fn measure(&self, record: &mut dyn FnMut(crate::event::Measure)) {
        record(
            crate::event::Measure::count("palisade.fallback.answered_calls", &[])
                .described(metrics::Unit::Count, "Failures answered by the fallback"),
        );
    }
}
