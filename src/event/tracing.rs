use tracing::{debug, info, trace, warn};

use super::{Event, Listener};
use crate::circuit_breaker::CircuitState;

/// Forwards every event to [`tracing`](https://docs.rs/tracing), target
/// `palisade`, with structured fields (feature `tracing`).
///
/// Levels: a breaker opening, a spent retry budget, a retry giving up on a
/// failure and a full bulkhead are `warn`; other transitions and fallbacks
/// `info`; retries, rejections, timeouts and threshold crossings `debug`;
/// each attempt, finished call and bulkhead count `trace`. Every event has a `layer` field with the layer's
/// name.
///
/// # Examples
///
/// ```
/// use palisade::circuit_breaker::CircuitBreakerLayer;
/// use palisade::event::TracingEvents;
///
/// let breaker = CircuitBreakerLayer::builder()
///     .name("payments")
///     .on_event(TracingEvents)
///     .build()
///     .unwrap();
/// # let _ = breaker;
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct TracingEvents;

impl Listener for TracingEvents {
    fn on_event(&self, event: &Event<'_>) {
        match *event {
            Event::StateTransition {
                name,
                from,
                to,
                reason,
            } => {
                if matches!(to, CircuitState::Open | CircuitState::ForcedOpen) {
                    warn!(target: "palisade", layer = name, from = ?from, to = ?to, reason = %reason, "circuit breaker opened");
                } else {
                    info!(target: "palisade", layer = name, from = ?from, to = ?to, reason = %reason, "circuit breaker changed state");
                }
            }
            Event::CallRejected { name, retry_after } => {
                debug!(target: "palisade", layer = name, retry_after_ms = retry_after.as_millis() as u64, "call rejected: circuit open");
            }
            Event::FailureRateExceeded {
                name,
                rate,
                threshold,
            } => {
                debug!(target: "palisade", layer = name, rate, threshold, "failure rate reached its threshold");
            }
            Event::SlowCallRateExceeded {
                name,
                rate,
                threshold,
            } => {
                debug!(target: "palisade", layer = name, rate, threshold, "slow-call rate reached its threshold");
            }
            Event::CallFinished {
                name,
                outcome,
                slow,
            } => {
                trace!(target: "palisade", layer = name, outcome = ?outcome, slow, "call finished");
            }
            Event::BulkheadInFlight { name, in_flight } => {
                trace!(target: "palisade", layer = name, in_flight, "bulkhead in flight");
            }
            Event::BulkheadRejected {
                name,
                timed_out_in_queue,
            } => {
                warn!(target: "palisade", layer = name, timed_out_in_queue, "call rejected: bulkhead full");
            }
            Event::Attempt { name, attempt } => {
                trace!(target: "palisade", layer = name, attempt, "attempt");
            }
            Event::Retry {
                name,
                attempt,
                delay,
                reason,
                hinted,
            } => {
                debug!(target: "palisade", layer = name, attempt, delay_ms = delay.as_millis() as u64, reason = %reason, hinted, "retrying");
            }
            Event::RetryBudgetExhausted { name, attempt } => {
                warn!(target: "palisade", layer = name, attempt, "retry budget exhausted");
            }
            Event::GaveUp {
                name,
                attempts,
                reason,
            } => {
                warn!(target: "palisade", layer = name, attempts, reason = %reason, "gave up retrying");
            }
            Event::FellBack { name, kind } => {
                info!(target: "palisade", layer = name, kind = ?kind, "fallback answered");
            }
            Event::TimedOut { name, after } => {
                debug!(target: "palisade", layer = name, after_ms = after.as_millis() as u64, "timed out");
            }
        }
    }
}
