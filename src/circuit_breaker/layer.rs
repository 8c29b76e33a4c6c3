use std::fmt;
use std::sync::Arc;

use tower::Layer;

use tokio::time::Instant;

use super::config::CircuitBreakerBuilder;
use super::handle::CircuitBreakerHandle;
use super::state::Core;
use super::{CircuitBreaker, CircuitMetrics};
use crate::registry::{Ejection, Fork, Instance};

/// What a breaker's services and futures share: the state machine and the
/// classifier, behind one `Arc`.
#[derive(Debug)]
pub(crate) struct Shared<C> {
    pub(crate) core: Core,
    pub(crate) classifier: C,
}

/// Applies a [`CircuitBreaker`] to a service.
///
/// One layer is one breaker: every service it wraps and every clone of it
/// (and of those services) share the same state, window and counters. Build a
/// second layer for a second breaker.
///
/// Made by [`CircuitBreakerLayer::builder`]; see the [module docs](super)
/// for the semantics.
pub struct CircuitBreakerLayer<C = crate::classify::DefaultClassifier> {
    shared: Arc<Shared<C>>,
}

impl<C> Clone for CircuitBreakerLayer<C> {
    fn clone(&self) -> Self {
        Self {
            shared: self.shared.clone(),
        }
    }
}

impl<C> fmt::Debug for CircuitBreakerLayer<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreakerLayer")
            .field("name", &self.shared.core.name())
            .field("state", &self.shared.core.load().state())
            .finish()
    }
}

impl CircuitBreakerLayer {
    /// Starts configuring a breaker.
    pub fn builder() -> CircuitBreakerBuilder {
        CircuitBreakerBuilder::new()
    }
}

impl<C> CircuitBreakerLayer<C> {
    pub(crate) fn from_parts(core: Core, classifier: C) -> Self {
        Self {
            shared: Arc::new(Shared { core, classifier }),
        }
    }

    /// Takes `other`'s thresholds and waits, keeping this breaker's state
    /// and window (a reloaded configuration): `false`, and nothing
    /// changed, if their names, seeds or windows differ.
    pub(crate) fn retune(&self, other: &CircuitBreakerLayer<C>) -> bool {
        self.shared.core.retune(&other.shared.core)
    }

    /// Whether [`retune`](Self::retune) would take `other`'s settings.
    pub(crate) fn retunable(&self, other: &CircuitBreakerLayer<C>) -> bool {
        self.shared.core.retunable(&other.shared.core)
    }

    /// A handle to read and steer this breaker.
    pub fn handle(&self) -> CircuitBreakerHandle
    where
        C: Send + Sync + 'static,
    {
        CircuitBreakerHandle::new(self.shared.clone())
    }
}

/// A [keyed](crate::keyed) layer makes one breaker per key from this one.
impl<C> Instance for CircuitBreakerLayer<C>
where
    C: Clone + Send + Sync + 'static,
{
    type Snapshot = CircuitMetrics;

    /// A closed breaker with an empty window, this one's settings,
    /// classifier and listeners; one of the keyed set's ejecting breakers
    /// if this one ejects when open.
    fn fork(&self, fork: &Fork) -> Self {
        let core = &self.shared.core;
        let mut fresh = core.fresh(core.listeners.for_key(fork.key().clone()));
        if core.eject.is_some() {
            let set = fork
                .ejection()
                .cloned()
                .unwrap_or_else(|| Arc::new(Ejection::new(100)));
            fresh = fresh.ejecting(set);
        }
        Self::from_parts(fresh, self.shared.classifier.clone())
    }

    /// Services, calls in flight (and bodies judged at their end) and
    /// handles hold the breaker.
    fn in_use(&self) -> bool {
        Arc::strong_count(&self.shared) > 1
    }

    /// Closed, with an empty window and no failure in a row.
    fn is_fresh(&self, now: Instant) -> bool {
        self.shared.core.is_fresh(now)
    }

    fn snapshot(&self) -> CircuitMetrics {
        self.shared.core.metrics()
    }
}

impl<S, C> Layer<S> for CircuitBreakerLayer<C> {
    type Service = CircuitBreaker<S, C>;

    fn layer(&self, inner: S) -> Self::Service {
        CircuitBreaker::new(inner, self.shared.clone())
    }
}
