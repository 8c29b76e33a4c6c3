use metrics::{counter, gauge};

use super::{Event, Listener};
use crate::circuit_breaker::CircuitState;

/// Counts events through the [`metrics`](https://docs.rs/metrics) facade
/// (feature `metrics`). Every metric has a `layer` label with the layer's
/// name.
///
/// | metric | kind | labels | counts |
/// |---|---|---|---|
/// | `palisade_circuit_state` | gauge | `layer` | the breaker's state: 0 closed, 1 open, 2 half-open, 3 forced open, 4 disabled, 5 metrics only |
/// | `palisade_circuit_transitions_total` | counter | `layer`, `from`, `to` | state changes |
/// | `palisade_calls_total` | counter | `layer`, `outcome` (`Success`, `Failure`, `Ignored`), `slow` | calls a breaker saw finish |
/// | `palisade_bulkhead_in_flight` | gauge | `layer` | calls holding a bulkhead permit |
/// | `palisade_calls_rejected_total` | counter | `layer`, `by` (`circuit_breaker`, `bulkhead`) | calls refused without reaching the service |
/// | `palisade_rate_exceeded_total` | counter | `layer`, `rate` (`failure`, `slow_call`) | threshold crossings |
/// | `palisade_attempts_total` | counter | `layer` | attempts sent by a retry layer, first ones included |
/// | `palisade_retries_total` | counter | `layer`, `reason` | retries scheduled |
/// | `palisade_retry_budget_exhausted_total` | counter | `layer` | retries refused by the budget |
/// | `palisade_retry_gave_up_total` | counter | `layer`, `reason` | failures returned without a further retry |
/// | `palisade_timeouts_total` | counter | `layer` | calls cut off |
/// | `palisade_fallbacks_total` | counter | `layer` | failures answered by a fallback |
///
/// Labels are built per event, so each event allocates a little: with this
/// listener registered, the happy path pays for `palisade_calls_total`,
/// `palisade_attempts_total` and the in-flight gauge. Without a listener
/// nothing is built.
///
/// # Examples
///
/// ```
/// use palisade::bulkhead::BulkheadLayer;
/// use palisade::event::MetricsEvents;
///
/// let bulkhead = BulkheadLayer::builder()
///     .name("db")
///     .max_concurrent(16)
///     .on_event(MetricsEvents)
///     .build()
///     .unwrap();
/// # let _ = bulkhead;
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct MetricsEvents;

fn state_code(state: CircuitState) -> f64 {
    f64::from(state as u8)
}

impl Listener for MetricsEvents {
    fn on_event(&self, event: &Event<'_>) {
        match *event {
            Event::StateTransition { name, from, to, .. } => {
                gauge!("palisade_circuit_state", "layer" => name.to_owned()).set(state_code(to));
                counter!(
                    "palisade_circuit_transitions_total",
                    "layer" => name.to_owned(),
                    "from" => format!("{from:?}"),
                    "to" => format!("{to:?}")
                )
                .increment(1);
            }
            Event::CallFinished {
                name,
                outcome,
                slow,
            } => {
                counter!(
                    "palisade_calls_total",
                    "layer" => name.to_owned(),
                    "outcome" => format!("{outcome:?}"),
                    "slow" => if slow { "true" } else { "false" }
                )
                .increment(1);
            }
            Event::BulkheadInFlight { name, in_flight } => {
                gauge!("palisade_bulkhead_in_flight", "layer" => name.to_owned())
                    .set(f64::from(in_flight));
            }
            Event::CallRejected { name, .. } => {
                counter!("palisade_calls_rejected_total", "layer" => name.to_owned(), "by" => "circuit_breaker")
                    .increment(1);
            }
            Event::BulkheadRejected { name, .. } => {
                counter!("palisade_calls_rejected_total", "layer" => name.to_owned(), "by" => "bulkhead")
                    .increment(1);
            }
            Event::FailureRateExceeded { name, .. } => {
                counter!("palisade_rate_exceeded_total", "layer" => name.to_owned(), "rate" => "failure")
                    .increment(1);
            }
            Event::SlowCallRateExceeded { name, .. } => {
                counter!("palisade_rate_exceeded_total", "layer" => name.to_owned(), "rate" => "slow_call")
                    .increment(1);
            }
            Event::Attempt { name, .. } => {
                counter!("palisade_attempts_total", "layer" => name.to_owned()).increment(1);
            }
            Event::Retry { name, reason, .. } => {
                counter!("palisade_retries_total", "layer" => name.to_owned(), "reason" => format!("{reason:?}"))
                    .increment(1);
            }
            Event::RetryBudgetExhausted { name, .. } => {
                counter!("palisade_retry_budget_exhausted_total", "layer" => name.to_owned())
                    .increment(1);
            }
            Event::GaveUp { name, reason, .. } => {
                counter!("palisade_retry_gave_up_total", "layer" => name.to_owned(), "reason" => format!("{reason:?}"))
                    .increment(1);
            }
            Event::TimedOut { name, .. } => {
                counter!("palisade_timeouts_total", "layer" => name.to_owned()).increment(1);
            }
            Event::FellBack { name, .. } => {
                counter!("palisade_fallbacks_total", "layer" => name.to_owned()).increment(1);
            }
        }
    }
}
