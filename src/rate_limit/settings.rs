//! [`RateLimitSettings`]: a rate limiter's configuration as plain data.

use std::time::Duration;

use super::RateLimitBuilder;
use crate::error::ConfigError;
use crate::settings::settings_struct;

settings_struct! {
    /// A [rate limiter](super)'s settings as plain data, for
    /// [`RateLimitBuilder::settings`] and for
    /// [configuration documents](crate::config): `rate = 100, per = "1s"`
    /// is [`rate(100, 1 s)`](RateLimitBuilder::rate), and the two are
    /// inherited together. The cost of a request is code, not a setting.
    pub struct RateLimitSettings {
        /// [`name`](RateLimitBuilder::name).
        name: String,
        /// The calls allowed per `per` ([`rate`](RateLimitBuilder::rate)).
        rate: u32,
        /// The period of `rate`.
        per: Duration as "crate::settings::duration::option",
        /// [`burst`](RateLimitBuilder::burst).
        burst: u32,
        /// [`max_wait`](RateLimitBuilder::max_wait).
        max_wait: Duration as "crate::settings::duration::option",
    }
    inherited_whole [rate, per]
}

impl<C> RateLimitBuilder<C> {
    /// Applies `settings`: each field that is set, through its setter;
    /// [`build`](Self::build) validates the result as ever (a `rate`
    /// without its `per`, or the other way round, is refused there).
    ///
    /// ```
    /// use palisade::rate_limit::{RateLimitLayer, RateLimitSettings};
    ///
    /// let settings: RateLimitSettings = serde_json::from_str(r#"{ "rate": 100, "per": "1s", "burst": 10 }"#).unwrap();
    /// assert!(RateLimitLayer::builder().settings(&settings).build().is_ok());
    ///
    /// let half: RateLimitSettings = serde_json::from_str(r#"{ "rate": 100 }"#).unwrap();
    /// assert_eq!(RateLimitLayer::builder().settings(&half).build().unwrap_err().parameter(), "per");
    /// ```
    pub fn settings(mut self, settings: &RateLimitSettings) -> Self {
        if let Some(name) = &settings.name {
            self = self.name(name.as_str());
        }
        match (settings.rate, settings.per) {
            (Some(count), Some(per)) => self = self.rate(count, per),
            (Some(_), None) => {
                self = self.refuse(ConfigError::new("per", "a rate needs its period"));
            }
            (None, Some(_)) => {
                self = self.refuse(ConfigError::new("rate", "a period needs its rate"));
            }
            (None, None) => {}
        }
        if let Some(burst) = settings.burst {
            self = self.burst(burst);
        }
        if let Some(wait) = settings.max_wait {
            self = self.max_wait(wait);
        }
        self
    }
}
