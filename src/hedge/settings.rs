//! [`HedgeSettings`]: a hedge's configuration as plain data.

use std::time::Duration;

use super::{HedgeBuilder, HedgeMode};
use crate::budget::BudgetSettings;
use crate::error::ConfigError;
use crate::settings::settings_struct;

impl crate::settings::Merge for HedgeMode {
    fn over(self, _: &Self) -> Self {
        self
    }
}

settings_struct! {
    /// The delay as a percentile of recent latencies: the three arguments
    /// of [`HedgeBuilder::delay_percentile`], by their names.
    pub struct PercentileSettings {
        /// The percentile, in (0, 100): `95.0` is p95. Required.
        percent: f64,
        /// Latencies needed before the percentile is used (default 100).
        min_samples: u64,
        /// How far back latencies count (default 10 s).
        window: Duration as "crate::settings::duration::option",
    }
}

settings_struct! {
    /// A [hedge](super)'s settings as plain data, for
    /// [`HedgeBuilder::settings`] and for
    /// [configuration documents](crate::config); each field a setter of
    /// the builder by the same name, unset fields keep its defaults.
    ///
    /// A per-attempt delay function is code, not a setting.
    pub struct HedgeSettings {
        /// [`name`](HedgeBuilder::name).
        name: String,
        /// [`max_attempts`](HedgeBuilder::max_attempts), the first included.
        max_attempts: u32,
        /// [`mode`](HedgeBuilder::mode): `"latency"`, `"parallel"` or `"fallback"`.
        mode: HedgeMode,
        /// [`delay`](HedgeBuilder::delay).
        delay: Duration as "crate::settings::duration::option",
        /// [`delay_percentile`](HedgeBuilder::delay_percentile):
        /// `{ percent = 95.0, min_samples = 100, window = "10s" }`.
        delay_percentile: PercentileSettings,
        /// [`max_hint`](HedgeBuilder::max_hint).
        max_hint: Duration as "crate::settings::duration::option",
        /// [`budget`](HedgeBuilder::budget).
        budget: BudgetSettings,
        /// `true`: [`no_budget`](HedgeBuilder::no_budget), whatever `budget` says.
        no_budget: bool,
    }
}

impl<C, K> HedgeBuilder<C, K> {
    /// Applies `settings`: each field that is set, through its setter;
    /// [`build`](Self::build) validates the result as ever.
    ///
    /// ```
    /// use palisade::hedge::{HedgeLayer, HedgeSettings};
    ///
    /// let settings: HedgeSettings = serde_json::from_str(
    ///     r#"{ "max_attempts": 3, "delay_percentile": { "percent": 95.0, "window": "30s" } }"#,
    /// ).unwrap();
    /// assert!(HedgeLayer::builder().settings(&settings).build().is_ok());
    ///
    /// let unsure: HedgeSettings = serde_json::from_str(r#"{ "delay_percentile": { "min_samples": 10 } }"#).unwrap();
    /// let refused = HedgeLayer::builder().settings(&unsure).build().unwrap_err();
    /// assert_eq!(refused.path(), "delay_percentile.percent");
    /// ```
    pub fn settings(mut self, settings: &HedgeSettings) -> Self {
        let s = settings;
        if let Some(name) = &s.name {
            self = self.name(name.as_str());
        }
        if let Some(attempts) = s.max_attempts {
            self = self.max_attempts(attempts);
        }
        if let Some(mode) = s.mode {
            self = self.mode(mode);
        }
        if let Some(delay) = s.delay {
            self = self.delay(delay);
        }
        match &s.delay_percentile {
            Some(PercentileSettings {
                percent: Some(percent),
                min_samples,
                window,
            }) => {
                self = self.delay_percentile(
                    *percent,
                    min_samples.unwrap_or(100),
                    window.unwrap_or(Duration::from_secs(10)),
                );
            }
            Some(_) => {
                self = self.refuse(ConfigError::new(
                    "delay_percentile.percent",
                    "the percentile is required: `percent = 95.0` is p95",
                ));
            }
            None => {}
        }
        if let Some(cap) = s.max_hint {
            self = self.max_hint(cap);
        }
        if let Some(budget) = &s.budget {
            match budget.build() {
                Ok(budget) => self = self.budget(budget),
                Err(e) => self = self.refuse(e.under("budget")),
            }
        }
        if s.no_budget == Some(true) {
            self = self.no_budget();
        }
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::Merge;

    #[test]
    fn a_set_mode_replaces_the_bases() {
        let mine = Some(HedgeMode::Fallback);
        assert_eq!(mine.over(&Some(HedgeMode::Parallel)), mine);
    }
}
