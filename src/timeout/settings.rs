//! [`TimeoutSettings`]: a timeout's configuration as plain data.

use std::time::Duration;

use super::TimeoutBuilder;
use crate::settings::settings_struct;

settings_struct! {
    /// A [timeout](super)'s settings as plain data, for
    /// [`TimeoutBuilder::settings`]. (A [configuration document](crate::config)
    /// writes a stack's timeouts as bare durations: `attempt_timeout = "2s"`.)
    pub struct TimeoutSettings {
        /// [`name`](TimeoutBuilder::name).
        name: String,
        /// [`timeout`](TimeoutBuilder::timeout).
        timeout: Duration as "crate::settings::duration::option",
    }
}

impl<M> TimeoutBuilder<M> {
    /// Applies `settings`: each field that is set, through its setter;
    /// [`build`](Self::build) validates the result as ever.
    ///
    /// ```
    /// use palisade::timeout::{TimeoutLayer, TimeoutSettings};
    /// use std::time::Duration;
    ///
    /// let mut settings = TimeoutSettings::default();
    /// settings.timeout = Some(Duration::ZERO);
    /// let refused = TimeoutLayer::builder().settings(&settings).build().unwrap_err();
    /// assert_eq!(refused.parameter(), "timeout");
    /// ```
    pub fn settings(mut self, settings: &TimeoutSettings) -> Self {
        if let Some(name) = &settings.name {
            self = self.name(name.as_str());
        }
        if let Some(timeout) = settings.timeout {
            self = self.timeout(timeout);
        }
        self
    }
}
