use std::fmt;
use std::sync::Arc;

use tower::Layer;

use super::CircuitBreaker;
use super::config::CircuitBreakerBuilder;
use super::handle::CircuitBreakerHandle;
use super::state::Core;

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

    /// A handle to read and steer this breaker.
    pub fn handle(&self) -> CircuitBreakerHandle
    where
        C: Send + Sync + 'static,
    {
        CircuitBreakerHandle::new(self.shared.clone())
    }
}

impl<S, C> Layer<S> for CircuitBreakerLayer<C> {
    type Service = CircuitBreaker<S, C>;

    fn layer(&self, inner: S) -> Self::Service {
        CircuitBreaker::new(inner, self.shared.clone())
    }
}
