//! [`BulkheadSettings`]: a bulkhead's configuration as plain data.

use std::time::Duration;

use super::BulkheadBuilder;
use crate::settings::settings_struct;

settings_struct! {
    /// A [bulkhead](super)'s settings as plain data, for
    /// [`BulkheadBuilder::settings`] and for
    /// [configuration documents](crate::config); each field a setter of
    /// the builder by the same name, unset fields keep its defaults.
    pub struct BulkheadSettings {
        /// [`name`](BulkheadBuilder::name).
        name: String,
        /// [`max_concurrent`](BulkheadBuilder::max_concurrent).
        max_concurrent: u32,
        /// [`max_queue`](BulkheadBuilder::max_queue).
        max_queue: u32,
        /// [`max_wait`](BulkheadBuilder::max_wait).
        max_wait: Duration as "crate::settings::duration::option",
    }
}

impl<M> BulkheadBuilder<M> {
    /// Applies `settings`: each field that is set, through its setter;
    /// [`build`](Self::build) validates the result as ever.
    ///
    /// ```
    /// use palisade::bulkhead::{BulkheadLayer, BulkheadSettings};
    ///
    /// let mut settings = BulkheadSettings::default();
    /// settings.max_concurrent = Some(16);
    /// let bulkhead = BulkheadLayer::builder().settings(&settings).build().unwrap();
    /// assert_eq!(bulkhead.handle().max_concurrent(), 16);
    /// ```
    pub fn settings(mut self, settings: &BulkheadSettings) -> Self {
        if let Some(name) = &settings.name {
            self = self.name(name.as_str());
        }
        if let Some(calls) = settings.max_concurrent {
            self = self.max_concurrent(calls);
        }
        if let Some(calls) = settings.max_queue {
            self = self.max_queue(calls);
        }
        if let Some(wait) = settings.max_wait {
            self = self.max_wait(wait);
        }
        self
    }
}
