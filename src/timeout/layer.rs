use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use tower::Layer;

use super::Timeout;
use crate::error::ConfigError;
use crate::event::{Listener, Listeners};

/// What every service of one timeout layer shares.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) name: Arc<str>,
    pub(crate) timeout: Duration,
    pub(crate) listeners: Listeners,
}

/// Applies a [`Timeout`] to a service: each call must finish within the
/// limit or fail with [`Elapsed`](crate::error::Elapsed).
///
/// Made by [`TimeoutLayer::new`] or [`TimeoutLayer::builder`]; see the
/// [module docs](super).
#[derive(Clone)]
pub struct TimeoutLayer {
    shared: Arc<Shared>,
}

impl fmt::Debug for TimeoutLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TimeoutLayer")
            .field("name", &self.shared.name)
            .field("timeout", &self.shared.timeout)
            .finish()
    }
}

impl TimeoutLayer {
    /// A timeout of `timeout` per call, with no name and no listener.
    ///
    /// # Errors
    /// A zero or unrepresentable (longer than about 584 years) timeout.
    pub fn new(timeout: Duration) -> Result<Self, ConfigError> {
        Self::builder().timeout(timeout).build()
    }

    /// Starts configuring a timeout.
    pub fn builder() -> TimeoutBuilder {
        TimeoutBuilder::default()
    }

    /// The limit each call has.
    pub fn timeout(&self) -> Duration {
        self.shared.timeout
    }
}

impl<S> Layer<S> for TimeoutLayer {
    type Service = Timeout<S>;

    fn layer(&self, inner: S) -> Timeout<S> {
        Timeout::from_shared(inner, self.shared.clone())
    }
}

/// Configures a [`TimeoutLayer`].
///
/// # Default
/// Name `"timeout"`, timeout 10 s, no listener.
#[must_use = "a builder does nothing until `build` is called"]
pub struct TimeoutBuilder {
    name: Arc<str>,
    timeout: Duration,
    listeners: Listeners,
}

impl Default for TimeoutBuilder {
    fn default() -> Self {
        Self {
            name: Arc::from("timeout"),
            timeout: Duration::from_secs(10),
            listeners: Listeners::default(),
        }
    }
}

impl fmt::Debug for TimeoutBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TimeoutBuilder")
            .field("name", &self.name)
            .field("timeout", &self.timeout)
            .field("listeners", &self.listeners)
            .finish()
    }
}

impl TimeoutBuilder {
    /// The name carried by this layer's events, such as `"per-attempt"` or
    /// `"total"`.
    pub fn name(mut self, name: impl Into<Arc<str>>) -> Self {
        self.name = name.into();
        self
    }

    /// The limit of each call.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Registers a listener for this layer's [events](crate::event).
    pub fn on_event(mut self, listener: impl Listener) -> Self {
        self.listeners.push(Arc::new(listener));
        self
    }

    /// Validates the configuration and makes the layer.
    ///
    /// # Errors
    /// A zero or unrepresentable (longer than about 584 years) timeout.
    pub fn build(self) -> Result<TimeoutLayer, ConfigError> {
        if self.timeout.is_zero() {
            return Err(ConfigError::new("timeout", "must be longer than zero"));
        }
        if self.timeout.as_nanos() > u128::from(u64::MAX) {
            return Err(ConfigError::new(
                "timeout",
                format!(
                    "{:?} is longer than the longest supported (about 584 years)",
                    self.timeout
                ),
            ));
        }
        Ok(TimeoutLayer {
            shared: Arc::new(Shared {
                name: self.name,
                timeout: self.timeout,
                listeners: self.listeners,
            }),
        })
    }
}
