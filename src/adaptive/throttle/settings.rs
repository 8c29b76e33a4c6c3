//! [`ThrottleSettings`]: a throttle's configuration as plain data.

use std::time::Duration;

use super::ThrottleBuilder;
use crate::settings::settings_struct;

settings_struct! {
    /// A [throttle](super)'s settings as plain data, for
    /// [`ThrottleBuilder::settings`] and for
    /// [configuration documents](crate::config); each field a setter of
    /// the builder by the same name, unset fields keep its defaults.
    pub struct ThrottleSettings {
        /// [`name`](ThrottleBuilder::name).
        name: String,
        /// [`k`](ThrottleBuilder::k).
        k: f64,
        /// [`window`](ThrottleBuilder::window).
        window: Duration as "crate::settings::duration::option",
        /// [`min_answered`](ThrottleBuilder::min_answered).
        min_answered: u32,
        /// [`seed`](ThrottleBuilder::seed).
        seed: u64,
    }
}

impl<C> ThrottleBuilder<C> {
    /// Applies `settings`: each field that is set, through its setter;
    /// [`build`](Self::build) validates the result as ever.
    ///
    /// ```
    /// use palisade::adaptive::{ThrottleLayer, ThrottleSettings};
    ///
    /// let settings: ThrottleSettings = serde_json::from_str(r#"{ "k": 0.5 }"#).unwrap();
    /// let refused = ThrottleLayer::builder().settings(&settings).build().unwrap_err();
    /// assert_eq!(refused.parameter(), "k");
    /// ```
    pub fn settings(mut self, settings: &ThrottleSettings) -> Self {
        if let Some(name) = &settings.name {
            self = self.name(name.as_str());
        }
        if let Some(k) = settings.k {
            self = self.k(k);
        }
        if let Some(window) = settings.window {
            self = self.window(window);
        }
        if let Some(requests) = settings.min_answered {
            self = self.min_answered(requests);
        }
        if let Some(seed) = settings.seed {
            self = self.seed(seed);
        }
        self
    }
}
