//! What the handle reads: the breaker's metrics.

use std::sync::atomic::Ordering::*;
use std::time::Duration;

use super::state::Core;
use super::window::Totals;
use super::{CircuitMetrics, CircuitState};

impl Core {
    /// How long until an open breaker may admit a probe (zero otherwise).
    fn remaining_open(&self) -> Duration {
        let now = self.epoch.nanos_now();
        Duration::from_nanos(self.open_until.load(Acquire).saturating_sub(now))
    }

    pub(crate) fn metrics(&self) -> CircuitMetrics {
        let state = self.load().state();
        let now = if self.window.needs_clock() {
            self.epoch.nanos_now()
        } else {
            0
        };
        let Totals {
            calls,
            failures,
            slow,
        } = self.window.totals(now);
        let rate = |n: u64| {
            if calls == 0 {
                0.0
            } else {
                n as f64 / calls as f64
            }
        };
        CircuitMetrics {
            state,
            calls,
            failures,
            slow_calls: slow,
            failure_rate: rate(failures),
            slow_call_rate: rate(slow),
            consecutive_failures: self.consecutive_failures.load(Relaxed),
            not_permitted: self.not_permitted.load(Relaxed),
            open_remaining: if state == CircuitState::Open {
                self.remaining_open()
            } else {
                Duration::ZERO
            },
            probes_in_flight: if state == CircuitState::HalfOpen {
                let p = self.probes();
                p.admitted - p.finished
            } else {
                0
            },
            ejected: self.eject.as_ref().is_some_and(|e| e.is_ejected()),
        }
    }
}
