use std::fmt;
use std::sync::Arc;

use super::layer::Shared;
use super::state::Core;
use super::{CircuitMetrics, CircuitState};

/// Type-erases the classifier, so that one handle type fits every breaker.
trait HasCore: Send + Sync {
    fn core(&self) -> &Core;
}

impl<C: Send + Sync> HasCore for Shared<C> {
    fn core(&self) -> &Core {
        &self.core
    }
}

/// Reads and steers one circuit breaker, from anywhere: an admin endpoint, a
/// health check, a test.
///
/// Cloning a handle is cheap; every clone steers the same breaker. Made by
/// [`CircuitBreakerLayer::handle`](super::CircuitBreakerLayer::handle).
///
/// # Examples
///
/// ```
/// use palisade::circuit_breaker::{CircuitBreakerLayer, CircuitState};
///
/// let layer = CircuitBreakerLayer::builder().name("search").build().unwrap();
/// let handle = layer.handle();
/// assert_eq!(handle.state(), CircuitState::Closed);
///
/// handle.force_open(); // e.g. during maintenance of the service behind it
/// assert_eq!(handle.state(), CircuitState::ForcedOpen);
/// handle.reset();
/// assert_eq!(handle.metrics().calls, 0);
/// ```
#[derive(Clone)]
pub struct CircuitBreakerHandle {
    shared: Arc<dyn HasCore>,
}

impl fmt::Debug for CircuitBreakerHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreakerHandle")
            .field("name", &self.name())
            .field("state", &self.state())
            .finish()
    }
}

impl CircuitBreakerHandle {
    pub(crate) fn new<C: Send + Sync + 'static>(shared: Arc<Shared<C>>) -> Self {
        Self { shared }
    }

    fn core(&self) -> &Core {
        self.shared.core()
    }

    /// The breaker's name.
    pub fn name(&self) -> &str {
        self.core().name()
    }

    /// The current state.
    pub fn state(&self) -> CircuitState {
        self.core().load().state()
    }

    /// A snapshot of the breaker's window and counters.
    pub fn metrics(&self) -> CircuitMetrics {
        self.core().metrics()
    }

    /// Rejects every call until [`reset`](Self::reset) (or another state is
    /// set by hand).
    pub fn force_open(&self) {
        self.core().force(CircuitState::ForcedOpen);
    }

    /// Admits every call and records nothing, until another state is set by
    /// hand.
    pub fn disable(&self) {
        self.core().force(CircuitState::Disabled);
    }

    /// Admits every call, records outcomes and emits the "rate exceeded"
    /// events, but never opens: for trying thresholds out in production.
    pub fn metrics_only(&self) {
        self.core().force(CircuitState::MetricsOnly);
    }

    /// Closes the breaker with an empty window, and restarts the open-wait
    /// backoff.
    pub fn reset(&self) {
        self.core().force(CircuitState::Closed);
    }
}
