//! The rate limiter's events: what they say, how they are traced and
//! counted.

use std::fmt;
use std::time::Duration;

use crate::event::EventKind;

/// What happened in a rate limiter; see [`Event`](crate::event::Event).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RateLimitEvent {
    /// The limiter refused a call without calling the inner service.
    Rejected {
        /// How long until the call's cost would conform; [`Duration::MAX`]
        /// for a cost above the burst, which never does.
        retry_after: Duration,
    },
    /// The limiter admitted a call after a wait (in the waiting mode; a
    /// call admitted at once emits nothing).
    Waited {
        /// How long the call was told to wait before it goes in.
        wait: Duration,
    },
}

impl fmt::Display for RateLimitEvent {
    /// The event without the limiter's name.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            RateLimitEvent::Rejected {
                retry_after: Duration::MAX,
            } => f.write_str("call rejected, its cost is above the burst"),
            RateLimitEvent::Rejected { retry_after } => {
                write!(f, "call rejected, retry after {retry_after:?}")
            }
            RateLimitEvent::Waited { wait } => write!(f, "call admitted after waiting {wait:?}"),
        }
    }
}

impl EventKind for RateLimitEvent {
    fn describe(&self, name: &str, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "rate limiter `{name}`: {self}")
    }

    #[cfg(feature = "tracing")]
    fn trace(&self, name: &str) {
        match *self {
            RateLimitEvent::Rejected { retry_after } => {
                tracing::warn!(target: "palisade", layer = name, ?retry_after, "call rejected: rate limited");
            }
            RateLimitEvent::Waited { wait } => {
                tracing::debug!(target: "palisade", layer = name, ?wait, "call delayed by the rate limiter");
            }
        }
    }

    #[cfg(feature = "metrics")]
    fn measure(&self, record: &mut dyn FnMut(crate::event::Measure)) {
        use crate::event::Measure;
        use metrics::Unit;
        const REJECTED: &str = "palisade.rate_limiter.rejected_calls";
        const REJECTED_HELP: &str = "Calls the rate limiter refused";
        const REASON: &str = "palisade.rate_limiter.rejection_reason";
        record(match *self {
            RateLimitEvent::Rejected {
                retry_after: Duration::MAX,
            } => Measure::count(REJECTED, &[(REASON, "cost_above_burst")])
                .described(Unit::Count, REJECTED_HELP),
            RateLimitEvent::Rejected { .. } => Measure::count(REJECTED, &[(REASON, "over_rate")])
                .described(Unit::Count, REJECTED_HELP),
            RateLimitEvent::Waited { .. } => {
                Measure::count("palisade.rate_limiter.delayed_calls", &[])
                    .described(Unit::Count, "Calls the rate limiter admitted after a wait")
            }
        });
    }
}
