//! [`CircuitBreakerSettings`]: a breaker's configuration as plain data.

use std::time::Duration;

use super::CircuitBreakerBuilder;
use crate::backoff::BackoffSettings;
use crate::error::ConfigError;
use crate::settings::settings_struct;

settings_struct! {
    /// A [circuit breaker](super)'s settings as plain data, for
    /// [`CircuitBreakerBuilder::settings`] and for
    /// [configuration documents](crate::config). Each field is a setter of
    /// the builder, by the same name; an unset field keeps the builder's
    /// default. With feature `serde` it (de)serialises, durations as
    /// `"30s"`, unknown fields refused.
    ///
    /// A window is one of `count_window` and `time_window` (with
    /// `time_window_buckets` if the default buckets of 100 ms do not
    /// suit), and is inherited whole: an instance that sets any of the
    /// three takes none of them from its base.
    pub struct CircuitBreakerSettings {
        /// The breaker's name ([`name`](CircuitBreakerBuilder::name)).
        name: String,
        /// [`count_window`](CircuitBreakerBuilder::count_window).
        count_window: u32,
        /// [`time_window`](CircuitBreakerBuilder::time_window).
        time_window: Duration as "crate::settings::duration::option",
        /// The buckets of the `time_window`
        /// ([`time_window_buckets`](CircuitBreakerBuilder::time_window_buckets)).
        time_window_buckets: u32,
        /// [`failure_rate_threshold`](CircuitBreakerBuilder::failure_rate_threshold).
        failure_rate_threshold: f64,
        /// [`slow_call_rate_threshold`](CircuitBreakerBuilder::slow_call_rate_threshold).
        slow_call_rate_threshold: f64,
        /// [`slow_call_duration`](CircuitBreakerBuilder::slow_call_duration).
        slow_call_duration: Duration as "crate::settings::duration::option",
        /// [`consecutive_failures`](CircuitBreakerBuilder::consecutive_failures).
        consecutive_failures: u32,
        /// [`minimum_calls`](CircuitBreakerBuilder::minimum_calls).
        minimum_calls: u32,
        /// [`wait_duration`](CircuitBreakerBuilder::wait_duration).
        wait_duration: Duration as "crate::settings::duration::option",
        /// [`wait_backoff`](CircuitBreakerBuilder::wait_backoff): its
        /// `initial` (or `delay`) must be given.
        wait_backoff: BackoffSettings,
        /// [`half_open_calls`](CircuitBreakerBuilder::half_open_calls).
        half_open_calls: u32,
        /// [`max_half_open_duration`](CircuitBreakerBuilder::max_half_open_duration).
        max_half_open_duration: Duration as "crate::settings::duration::option",
        /// [`seed`](CircuitBreakerBuilder::seed).
        seed: u64,
    }
    inherited_whole [count_window, time_window, time_window_buckets]
}

impl<C> CircuitBreakerBuilder<C> {
    /// Applies `settings`: each field that is set, through its setter.
    /// [`build`](Self::build) then validates the result as ever; settings
    /// that contradict each other (two windows, buckets without a time
    /// window) are refused there too.
    ///
    /// ```
    /// use palisade::circuit_breaker::{CircuitBreakerLayer, CircuitBreakerSettings};
    /// use std::time::Duration;
    ///
    /// let mut settings = CircuitBreakerSettings::default();
    /// settings.name = Some("inventory".into());
    /// settings.time_window = Some(Duration::from_secs(30));
    /// settings.failure_rate_threshold = Some(0.25);
    /// let breaker = CircuitBreakerLayer::builder().settings(&settings).build().unwrap();
    /// assert_eq!(breaker.handle().name(), "inventory");
    ///
    /// settings.failure_rate_threshold = Some(1.5);
    /// let refused = CircuitBreakerLayer::builder().settings(&settings).build().unwrap_err();
    /// assert_eq!(refused.parameter(), "failure_rate_threshold");
    /// ```
    pub fn settings(mut self, settings: &CircuitBreakerSettings) -> Self {
        let s = settings;
        if let Some(name) = &s.name {
            self = self.name(name.as_str());
        }
        match (s.count_window, s.time_window, s.time_window_buckets) {
            (Some(_), Some(_), _) => {
                self = self.refuse(ConfigError::new(
                    "time_window",
                    "count_window is set too; a breaker has one window",
                ));
            }
            (Some(_), None, Some(_)) | (None, None, Some(_)) => {
                self = self.refuse(ConfigError::new(
                    "time_window_buckets",
                    "only a time_window has buckets",
                ));
            }
            (Some(calls), None, None) => self = self.count_window(calls),
            (None, Some(length), None) => self = self.time_window(length),
            (None, Some(length), Some(buckets)) => {
                self = self.time_window_buckets(length, buckets);
            }
            (None, None, None) => {}
        }
        if let Some(fraction) = s.failure_rate_threshold {
            self = self.failure_rate_threshold(fraction);
        }
        if let Some(fraction) = s.slow_call_rate_threshold {
            self = self.slow_call_rate_threshold(fraction);
        }
        if let Some(duration) = s.slow_call_duration {
            self = self.slow_call_duration(duration);
        }
        if let Some(failures) = s.consecutive_failures {
            self = self.consecutive_failures(failures);
        }
        if let Some(calls) = s.minimum_calls {
            self = self.minimum_calls(calls);
        }
        if let Some(wait) = s.wait_duration {
            self = self.wait_duration(wait);
        }
        if let Some(backoff) = &s.wait_backoff {
            match backoff.build() {
                Ok(backoff) => self = self.wait_backoff(backoff),
                Err(e) => self = self.refuse(e.under("wait_backoff")),
            }
        }
        if let Some(calls) = s.half_open_calls {
            self = self.half_open_calls(calls);
        }
        if let Some(duration) = s.max_half_open_duration {
            self = self.max_half_open_duration(duration);
        }
        if let Some(seed) = s.seed {
            self = self.seed(seed);
        }
        self
    }
}
