use std::fmt;
use std::sync::Arc;

use super::key::KeySource;
use super::layer::Shared;
use crate::registry::Instance;

/// Reads a keyed layer's instances and lets idle ones go, from anywhere:
/// an admin endpoint, a test. Made by
/// [`KeyedLayer::handle`](super::KeyedLayer::handle); clones share the
/// layer.
pub struct KeyedHandle<X: KeySource, I> {
    shared: Arc<Shared<X, I>>,
}

/// How many of a keyed layer's breakers are ejected from a load balancer;
/// from [`KeyedHandle::ejection`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct EjectionCount {
    /// Breakers ejected now.
    pub ejected: usize,
    /// Breakers in the set (the layer's instances that eject when open).
    pub breakers: usize,
    /// The most that may be ejected, in percent of `breakers`.
    pub max_percent: u32,
}

impl<X: KeySource, I> Clone for KeyedHandle<X, I> {
    fn clone(&self) -> Self {
        Self {
            shared: self.shared.clone(),
        }
    }
}

impl<X: KeySource, I: Instance> fmt::Debug for KeyedHandle<X, I> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyedHandle")
            .field("name", &self.name())
            .field("keys", &self.len())
            .field("max_keys", &self.max_keys())
            .finish()
    }
}

impl<X: KeySource, I: Instance> KeyedHandle<X, I> {
    pub(crate) fn new(shared: Arc<Shared<X, I>>) -> Self {
        Self { shared }
    }

    /// The layer's name.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// How many keys have an instance now.
    pub fn len(&self) -> usize {
        self.shared.registry.len()
    }

    /// Whether no key has an instance.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The most keys the layer holds.
    pub fn max_keys(&self) -> usize {
        self.shared.registry.max()
    }

    /// Every key with its instance's state (for a breaker its
    /// [`CircuitMetrics`](crate::circuit_breaker::CircuitMetrics), for a
    /// bulkhead its [`BulkheadMetrics`](crate::bulkhead::BulkheadMetrics),
    /// for a limiter its [`RateLimitMetrics`](crate::rate_limit::RateLimitMetrics)),
    /// in no particular order.
    pub fn instances(&self) -> Vec<(X::Key, I::Snapshot)> {
        self.shared
            .registry
            .entries()
            .into_iter()
            .map(|(key, instance)| (key, instance.snapshot()))
            .collect()
    }

    /// The instance of `key`, if it has one: for a breaker, say, its
    /// `handle()` to force it open. An instance held stays in the layer
    /// until it is let go.
    pub fn get(&self, key: &X::Key) -> Option<I> {
        self.shared.registry.get(key)
    }

    /// The instance every key without room shares, with
    /// [`WhenFull::Share`](super::WhenFull::Share).
    pub fn shared_instance(&self) -> Option<I> {
        self.shared.shared.clone()
    }

    /// Lets go every instance that nothing holds and that is idle (with an
    /// [`idle_timeout`](super::KeyedBuilder::idle_timeout)) or fresh,
    /// wherever it is in the recency order; returns how many went. The
    /// layer does this a few at a time by itself; call it to free the
    /// memory at once (after a burst of keys, say).
    pub fn evict_idle(&self) -> usize {
        let shared = &self.shared;
        shared
            .registry
            .evict_idle(&mut |key, change| shared.report(key, change))
    }

    /// How many of the layer's breakers are ejected, with
    /// [`max_ejection_percent`](super::KeyedBuilder::max_ejection_percent).
    pub fn ejection(&self) -> Option<EjectionCount> {
        self.shared.ejection.as_ref().map(|set| EjectionCount {
            ejected: set.ejected(),
            breakers: set.members(),
            max_percent: set.max_percent(),
        })
    }
}
