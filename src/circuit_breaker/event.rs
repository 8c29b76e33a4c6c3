//! The breaker's events: what they say, how they are traced and counted.

use std::fmt;
use std::time::Duration;

use super::{CircuitState, TransitionReason};
use crate::classify::Outcome;
use crate::event::EventKind;

/// What happened in a circuit breaker; see [`Event`](crate::event::Event).
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub enum BreakerEvent {
    /// The breaker changed state.
    StateTransition {
        /// The state it left.
        from: CircuitState,
        /// The state it entered.
        to: CircuitState,
        /// Why.
        reason: TransitionReason,
    },
    /// The breaker refused a call.
    CallRejected {
        /// How long until it may admit a call again (`Duration::MAX`:
        /// held open by hand).
        retry_after: Duration,
    },
    /// The failure rate reached its threshold (once per crossing; in
    /// `MetricsOnly` state this is all that happens).
    FailureRateExceeded {
        /// The failure rate over the window, in `[0, 1]`.
        rate: f64,
        /// The configured threshold.
        threshold: f64,
    },
    /// The slow-call rate reached its threshold (once per crossing).
    SlowCallRateExceeded {
        /// The slow-call rate over the window, in `[0, 1]`.
        rate: f64,
        /// The configured threshold.
        threshold: f64,
    },
    /// The breaker saw a call finish (built only when someone listens;
    /// metrics count calls by outcome from it).
    CallFinished {
        /// How the classifier judged it.
        outcome: Outcome,
        /// Whether it took longer than the slow-call duration.
        slow: bool,
    },
}

impl CircuitState {
    /// Every state, in the order of their numbers.
    pub(super) const ALL: [CircuitState; 6] = [
        CircuitState::Closed,
        CircuitState::Open,
        CircuitState::HalfOpen,
        CircuitState::ForcedOpen,
        CircuitState::Disabled,
        CircuitState::MetricsOnly,
    ];

    /// The state's name, as in labels and logs.
    pub const fn as_str(self) -> &'static str {
        match self {
            CircuitState::Closed => "Closed",
            CircuitState::Open => "Open",
            CircuitState::HalfOpen => "HalfOpen",
            CircuitState::ForcedOpen => "ForcedOpen",
            CircuitState::Disabled => "Disabled",
            CircuitState::MetricsOnly => "MetricsOnly",
        }
    }
}

impl fmt::Display for BreakerEvent {
    /// The event without the breaker's name.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            BreakerEvent::StateTransition { from, to, reason } => {
                write!(f, "{from:?} -> {to:?} ({reason})")
            }
            BreakerEvent::CallRejected { retry_after } if retry_after == Duration::MAX => {
                f.write_str("call rejected, held open by hand")
            }
            BreakerEvent::CallRejected { retry_after } => {
                write!(f, "call rejected, retry in {retry_after:?}")
            }
            BreakerEvent::FailureRateExceeded { rate, threshold } => write!(
                f,
                "failure rate {:.1}% reached threshold {:.1}%",
                rate * 100.0,
                threshold * 100.0
            ),
            BreakerEvent::SlowCallRateExceeded { rate, threshold } => write!(
                f,
                "slow-call rate {:.1}% reached threshold {:.1}%",
                rate * 100.0,
                threshold * 100.0
            ),
            BreakerEvent::CallFinished { outcome, slow } => write!(
                f,
                "call finished, {outcome:?}{}",
                if slow { " (slow)" } else { "" }
            ),
        }
    }
}

/// The `from` and `to` labels of every transition, built once.
#[cfg(feature = "metrics")]
static TRANSITIONS: [[[(&str, &str); 2]; 6]; 6] = {
    let mut table = [[[("", ""); 2]; 6]; 6];
    let mut from = 0;
    while from < 6 {
        let mut to = 0;
        while to < 6 {
            table[from][to] = [
                ("from", CircuitState::ALL[from].as_str()),
                ("to", CircuitState::ALL[to].as_str()),
            ];
            to += 1;
        }
        from += 1;
    }
    table
};

impl EventKind for BreakerEvent {
    fn describe(&self, name: &str, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "circuit `{name}`: {self}")
    }

    #[cfg(feature = "tracing")]
    fn trace(&self, name: &str) {
        use tracing::{debug, info, trace, warn};
        match *self {
            BreakerEvent::StateTransition { from, to, reason } => {
                if matches!(to, CircuitState::Open | CircuitState::ForcedOpen) {
                    warn!(target: "palisade", layer = name, from = ?from, to = ?to, reason = %reason, "circuit breaker opened");
                } else {
                    info!(target: "palisade", layer = name, from = ?from, to = ?to, reason = %reason, "circuit breaker changed state");
                }
            }
            BreakerEvent::CallRejected { retry_after } => {
                debug!(target: "palisade", layer = name, retry_after_ms = retry_after.as_millis() as u64, "call rejected: circuit open");
            }
            BreakerEvent::FailureRateExceeded { rate, threshold } => {
                debug!(target: "palisade", layer = name, rate, threshold, "failure rate reached its threshold");
            }
            BreakerEvent::SlowCallRateExceeded { rate, threshold } => {
                debug!(target: "palisade", layer = name, rate, threshold, "slow-call rate reached its threshold");
            }
            BreakerEvent::CallFinished { outcome, slow } => {
                trace!(target: "palisade", layer = name, outcome = ?outcome, slow, "call finished");
            }
        }
    }

    #[cfg(feature = "metrics")]
    fn measure(&self, record: &mut dyn FnMut(crate::event::Measure)) {
        use crate::event::Measure;
        if let BreakerEvent::StateTransition { to, .. } = *self {
            record(Measure::set(
                "palisade_circuit_state",
                &[],
                f64::from(to as u8),
            ));
        }
        record(match *self {
            BreakerEvent::StateTransition { from, to, .. } => Measure::count(
                "palisade_circuit_transitions_total",
                &TRANSITIONS[from as usize][to as usize],
            ),
            BreakerEvent::CallFinished { outcome, slow } => Measure::count(
                "palisade_calls_total",
                match (outcome, slow) {
                    (Outcome::Success, false) => &[("outcome", "Success"), ("slow", "false")],
                    (Outcome::Success, true) => &[("outcome", "Success"), ("slow", "true")],
                    (Outcome::Failure, false) => &[("outcome", "Failure"), ("slow", "false")],
                    (Outcome::Failure, true) => &[("outcome", "Failure"), ("slow", "true")],
                    (Outcome::Ignored, false) => &[("outcome", "Ignored"), ("slow", "false")],
                    (Outcome::Ignored, true) => &[("outcome", "Ignored"), ("slow", "true")],
                },
            ),
            BreakerEvent::CallRejected { .. } => Measure::count(
                "palisade_calls_rejected_total",
                &[("by", "circuit_breaker")],
            ),
            BreakerEvent::FailureRateExceeded { .. } => {
                Measure::count("palisade_rate_exceeded_total", &[("rate", "failure")])
            }
            BreakerEvent::SlowCallRateExceeded { .. } => {
                Measure::count("palisade_rate_exceeded_total", &[("rate", "slow_call")])
            }
        });
    }
}
