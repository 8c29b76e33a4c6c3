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
    pub const ALL: [CircuitState; 6] = [
        CircuitState::Closed,
        CircuitState::Open,
        CircuitState::HalfOpen,
        CircuitState::ForcedOpen,
        CircuitState::Disabled,
        CircuitState::MetricsOnly,
    ];

    /// The state's name, as in the metrics' labels: `half_open`.
    pub const fn as_str(self) -> &'static str {
        match self {
            CircuitState::Closed => "closed",
            CircuitState::Open => "open",
            CircuitState::HalfOpen => "half_open",
            CircuitState::ForcedOpen => "forced_open",
            CircuitState::Disabled => "disabled",
            CircuitState::MetricsOnly => "metrics_only",
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

/// The `palisade.circuit_breaker.state` label of each state, built once.
#[cfg(feature = "metrics")]
static STATES: [[(&str, &str); 1]; 6] = {
    let mut table = [[("", "")]; 6];
    let mut state = 0;
    while state < 6 {
        table[state] = [(
            "palisade.circuit_breaker.state",
            CircuitState::ALL[state].as_str(),
        )];
        state += 1;
    }
    table
};

/// The `from_state` and `to_state` labels of every transition, built once.
#[cfg(feature = "metrics")]
static TRANSITIONS: [[[(&str, &str); 2]; 6]; 6] = {
    let mut table = [[[("", ""); 2]; 6]; 6];
    let mut from = 0;
    while from < 6 {
        let mut to = 0;
        while to < 6 {
            table[from][to] = [
                (
                    "palisade.circuit_breaker.from_state",
                    CircuitState::ALL[from].as_str(),
                ),
                (
                    "palisade.circuit_breaker.to_state",
                    CircuitState::ALL[to].as_str(),
                ),
            ];
            to += 1;
        }
        from += 1;
    }
    table
};

/// The labels of `palisade.circuit_breaker.calls`: a finished call's
/// outcome and whether it was slow, or a rejection.
#[cfg(feature = "metrics")]
const fn call_labels(
    outcome: Option<Outcome>,
    slow: bool,
) -> &'static [(&'static str, &'static str)] {
    const O: &str = "palisade.circuit_breaker.outcome";
    const S: &str = "palisade.circuit_breaker.slow";
    match (outcome, slow) {
        (Some(Outcome::Success), false) => &[(O, "success"), (S, "false")],
        (Some(Outcome::Success), true) => &[(O, "success"), (S, "true")],
        (Some(Outcome::Failure), false) => &[(O, "failure"), (S, "false")],
        (Some(Outcome::Failure), true) => &[(O, "failure"), (S, "true")],
        (Some(Outcome::Ignored), false) => &[(O, "ignored"), (S, "false")],
        (Some(Outcome::Ignored), true) => &[(O, "ignored"), (S, "true")],
        (None, _) => &[(O, "rejected"), (S, "false")],
    }
}

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
        use metrics::Unit;
        const CALLS: &str = "palisade.circuit_breaker.calls";
        const CALLS_HELP: &str =
            "Calls the breaker saw finish, as the classifier judged them, and calls it refused";
        const CROSSINGS: &str = "palisade.circuit_breaker.threshold_crossings";
        const CROSSINGS_HELP: &str = "Times the failure or slow-call rate reached its threshold";
        match *self {
            BreakerEvent::StateTransition { from, to, .. } => {
                // Every state's series, so that each exists from the first
                // transition on and they sum to 1.
                for (state, labels) in STATES.iter().enumerate() {
                    record(
                        Measure::set(
                            "palisade.circuit_breaker.state",
                            labels,
                            if state == to as usize { 1.0 } else { 0.0 },
                        )
                        .described(
                            Unit::Count,
                            "1 for the state the circuit breaker is in, 0 for the others",
                        ),
                    );
                }
                record(
                    Measure::count(
                        "palisade.circuit_breaker.transitions",
                        &TRANSITIONS[from as usize][to as usize],
                    )
                    .described(Unit::Count, "Circuit breaker state changes"),
                );
            }
            BreakerEvent::CallFinished { outcome, slow } => record(
                Measure::count(CALLS, call_labels(Some(outcome), slow))
                    .described(Unit::Count, CALLS_HELP),
            ),
            BreakerEvent::CallRejected { .. } => record(
                Measure::count(CALLS, call_labels(None, false)).described(Unit::Count, CALLS_HELP),
            ),
            BreakerEvent::FailureRateExceeded { .. } => record(
                Measure::count(CROSSINGS, &[("palisade.circuit_breaker.rate", "failure")])
                    .described(Unit::Count, CROSSINGS_HELP),
            ),
            BreakerEvent::SlowCallRateExceeded { .. } => record(
                Measure::count(CROSSINGS, &[("palisade.circuit_breaker.rate", "slow_call")])
                    .described(Unit::Count, CROSSINGS_HELP),
            ),
        }
    }
}
