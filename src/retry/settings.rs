//! [`RetrySettings`]: a retry's configuration as plain data.

use std::time::Duration;

use super::RetryBuilder;
use crate::backoff::{Backoff, BackoffSettings};
use crate::budget::BudgetSettings;
use crate::error::ErrorKind;
use crate::settings::settings_struct;

settings_struct! {
    /// A [retry](super)'s settings as plain data, for
    /// [`RetryBuilder::settings`] and for
    /// [configuration documents](crate::config). Each field is a setter of
    /// the builder, by the same name; an unset field keeps what the
    /// builder has. With feature `serde` it (de)serialises, durations as
    /// `"250ms"`, the kinds of `retry_on` in snake case
    /// (`["elapsed", "circuit_open"]`), unknown fields refused.
    ///
    /// The classifier and the request copying are code, not settings: they
    /// come from the builder (or the [stack](crate::config) the settings
    /// are for).
    pub struct RetrySettings {
        /// [`name`](RetryBuilder::name).
        name: String,
        /// [`max_attempts`](RetryBuilder::max_attempts), the first included.
        max_attempts: u32,
        /// [`backoff`](RetryBuilder::backoff), laid over the default
        /// backoff (exponential from 100 ms, ×2, capped at 10 s, full
        /// jitter): `{ max_delay = "2s" }` changes only the cap.
        backoff: BackoffSettings,
        /// [`max_hint`](RetryBuilder::max_hint).
        max_hint: Duration as "crate::settings::duration::option",
        /// [`shorten_long_hints`](RetryBuilder::shorten_long_hints).
        shorten_long_hints: bool,
        /// [`budget`](RetryBuilder::budget).
        budget: BudgetSettings,
        /// `true`: [`no_budget`](RetryBuilder::no_budget), whatever `budget` says.
        no_budget: bool,
        /// [`deadline`](RetryBuilder::deadline).
        deadline: Duration as "crate::settings::duration::option",
        /// [`retry_on`](RetryBuilder::retry_on): the refusals of the
        /// layers below that are retried.
        retry_on: Vec<ErrorKind>,
        /// [`seed`](RetryBuilder::seed).
        seed: u64,
    }
}

impl<C, K> RetryBuilder<C, Backoff, K> {
    /// Applies `settings`: each field that is set, through its setter.
    /// [`build`](Self::build) then validates the result as ever; a backoff
    /// or a budget the settings describe is validated there too, its
    /// error under `backoff` or `budget` ([`ConfigError::path`](crate::error::ConfigError::path)).
    ///
    /// ```
    /// use palisade::retry::{RetryLayer, RetrySettings};
    ///
    /// let settings: RetrySettings = serde_json::from_str(
    ///     r#"{ "max_attempts": 4, "backoff": { "max_delay": "2s" }, "retry_on": ["elapsed", "bulkhead_full"] }"#,
    /// ).unwrap();
    /// let retry = RetryLayer::builder().settings(&settings).build().unwrap();
    /// # let _ = retry;
    ///
    /// let bad: RetrySettings = serde_json::from_str(r#"{ "backoff": { "initial": "0s" } }"#).unwrap();
    /// let refused = RetryLayer::builder().settings(&bad).build().unwrap_err();
    /// assert_eq!(refused.path(), "backoff.initial");
    /// ```
    pub fn settings(mut self, settings: &RetrySettings) -> Self {
        let s = settings;
        if let Some(name) = &s.name {
            self = self.name(name.as_str());
        }
        if let Some(attempts) = s.max_attempts {
            self = self.max_attempts(attempts);
        }
        if let Some(backoff) = &s.backoff {
            match backoff.build_over(Some(&self.backoff)) {
                Ok(backoff) => self = self.backoff(backoff),
                Err(e) => self = self.refuse(e.under("backoff")),
            }
        }
        if let Some(cap) = s.max_hint {
            self = self.max_hint(cap);
        }
        if let Some(yes) = s.shorten_long_hints {
            self = self.shorten_long_hints(yes);
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
        if let Some(deadline) = s.deadline {
            self = self.deadline(deadline);
        }
        if let Some(kinds) = &s.retry_on {
            self = self.retry_on(kinds.iter().copied().collect::<crate::error::ErrorKinds>());
        }
        if let Some(seed) = s.seed {
            self = self.seed(seed);
        }
        self
    }
}
