use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use tower::Layer;

use super::semaphore::Semaphore;
use super::{Bulkhead, BulkheadHandle};
use crate::error::ConfigError;
use crate::event::{Listener, Listeners};

/// What every service of one bulkhead layer shares.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) name: Arc<str>,
    pub(crate) max_concurrent: u32,
    pub(crate) max_queue: u32,
    pub(crate) max_wait: Option<Duration>,
    pub(crate) semaphore: Semaphore,
    pub(crate) listeners: Listeners,
}

impl Shared {
    /// Tells listeners how many calls are in flight now.
    #[inline]
    pub(crate) fn report_in_flight(&self) {
        self.listeners
            .emit(|| crate::event::Event::BulkheadInFlight {
                name: &self.name,
                in_flight: self.semaphore.in_use(self.max_concurrent),
            });
    }
}

/// Applies a [`Bulkhead`] to a service.
///
/// One layer is one bulkhead: every service it wraps and every clone of them
/// draw from the same permits and queue. (tower's `ConcurrencyLimitLayer`
/// makes a new semaphore for each `layer()` call; this one does not.)
///
/// Made by [`BulkheadLayer::builder`]; see the [module docs](super).
#[derive(Clone)]
pub struct BulkheadLayer {
    shared: Arc<Shared>,
}

impl fmt::Debug for BulkheadLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BulkheadLayer")
            .field("name", &self.shared.name)
            .field("max_concurrent", &self.shared.max_concurrent)
            .field("max_queue", &self.shared.max_queue)
            .field("max_wait", &self.shared.max_wait)
            .finish()
    }
}

impl BulkheadLayer {
    /// Starts configuring a bulkhead.
    pub fn builder() -> BulkheadBuilder {
        BulkheadBuilder::default()
    }

    /// A handle to read this bulkhead's counts.
    pub fn handle(&self) -> BulkheadHandle {
        BulkheadHandle::new(self.shared.clone())
    }
}

impl<S> Layer<S> for BulkheadLayer {
    type Service = Bulkhead<S>;

    fn layer(&self, inner: S) -> Bulkhead<S> {
        Bulkhead::from_shared(inner, self.shared.clone())
    }
}

/// The most calls a bulkhead may admit or queue.
pub const MAX_BULKHEAD_PERMITS: u32 = 1 << 30;

/// Configures a [`BulkheadLayer`].
///
/// # Default
///
/// | setting | default |
/// |---|---|
/// | [`name`](Self::name) | `"bulkhead"` |
/// | [`max_concurrent`](Self::max_concurrent) | 100 |
/// | [`max_queue`](Self::max_queue) | 0: a call that finds every permit taken is refused at once |
/// | [`max_wait`](Self::max_wait) | none: a queued call waits until a permit frees up (bound it with a timeout above, or here) |
#[must_use = "a builder does nothing until `build` is called"]
pub struct BulkheadBuilder {
    name: Arc<str>,
    max_concurrent: u32,
    max_queue: u32,
    max_wait: Option<Duration>,
    listeners: Listeners,
}

impl Default for BulkheadBuilder {
    fn default() -> Self {
        Self {
            name: Arc::from("bulkhead"),
            max_concurrent: 100,
            max_queue: 0,
            max_wait: None,
            listeners: Listeners::default(),
        }
    }
}

impl fmt::Debug for BulkheadBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BulkheadBuilder")
            .field("name", &self.name)
            .field("max_concurrent", &self.max_concurrent)
            .field("max_queue", &self.max_queue)
            .field("max_wait", &self.max_wait)
            .field("listeners", &self.listeners)
            .finish()
    }
}

impl BulkheadBuilder {
    /// The name carried by this bulkhead's events.
    pub fn name(mut self, name: impl Into<Arc<str>>) -> Self {
        self.name = name.into();
        self
    }

    /// At most this many calls in flight at once (1 to 2^30).
    pub fn max_concurrent(mut self, calls: u32) -> Self {
        self.max_concurrent = calls;
        self
    }

    /// At most this many calls waiting for a permit, first come first served
    /// (0 to 2^30).
    pub fn max_queue(mut self, calls: u32) -> Self {
        self.max_queue = calls;
        self
    }

    /// A queued call waits at most this long, then fails with
    /// [`BulkheadFull`](crate::error::BulkheadFull).
    pub fn max_wait(mut self, wait: Duration) -> Self {
        self.max_wait = Some(wait);
        self
    }

    /// Registers a listener for this bulkhead's [events](crate::event).
    pub fn on_event(mut self, listener: impl Listener) -> Self {
        self.listeners.push(Arc::new(listener));
        self
    }

    /// Validates the configuration and makes the layer.
    ///
    /// # Errors
    /// Zero or more than 2^30 concurrent calls, a queue longer than 2^30, a
    /// zero or unrepresentable maximum wait, a maximum wait without a queue.
    pub fn build(self) -> Result<BulkheadLayer, ConfigError> {
        if !(1..=MAX_BULKHEAD_PERMITS).contains(&self.max_concurrent) {
            return Err(ConfigError::new(
                "max_concurrent",
                format!(
                    "must be from 1 to {MAX_BULKHEAD_PERMITS}, got {}",
                    self.max_concurrent
                ),
            ));
        }
        if self.max_queue > MAX_BULKHEAD_PERMITS {
            return Err(ConfigError::new(
                "max_queue",
                format!(
                    "must be at most {MAX_BULKHEAD_PERMITS}, got {}",
                    self.max_queue
                ),
            ));
        }
        if let Some(wait) = self.max_wait {
            if wait.is_zero() {
                return Err(ConfigError::new("max_wait", "must be longer than zero"));
            }
            if wait.as_nanos() > u128::from(u64::MAX) {
                return Err(ConfigError::new(
                    "max_wait",
                    format!("{wait:?} is longer than the longest supported (about 584 years)"),
                ));
            }
            if self.max_queue == 0 {
                return Err(ConfigError::new(
                    "max_wait",
                    "has no effect without a queue; set max_queue too",
                ));
            }
        }
        Ok(BulkheadLayer {
            shared: Arc::new(Shared {
                name: self.name,
                max_concurrent: self.max_concurrent,
                max_queue: self.max_queue,
                max_wait: self.max_wait,
                semaphore: Semaphore::new(self.max_concurrent, self.max_queue),
                listeners: self.listeners,
            }),
        })
    }
}
