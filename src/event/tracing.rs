use super::{Event, Listener};

/// Forwards every event to [`tracing`](https://docs.rs/tracing), target
/// `palisade`, with structured fields (feature `tracing`). Each pattern
/// chooses its events' levels and fields
/// ([`EventKind::trace`](super::EventKind::trace)); every event has a
/// `layer` field with the layer's name, and the event of a
/// [keyed](crate::keyed) layer's instance is emitted inside a span
/// `palisade.keyed` with a `key` field.
///
/// Levels: a breaker opening, a spent retry budget, a retry giving up on a
/// failure and a full bulkhead are `warn`; other transitions and fallbacks
/// `info`; retries, rejections, timeouts and threshold crossings `debug`;
/// each attempt, finished call and bulkhead count `trace`.
///
/// # Examples
///
/// ```
/// use palisade::circuit_breaker::CircuitBreakerLayer;
/// use palisade::event::TracingEvents;
///
/// let breaker = CircuitBreakerLayer::builder()
///     .name("payments")
///     .on_event(TracingEvents)
///     .build()
///     .unwrap();
/// # let _ = breaker;
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct TracingEvents;

impl Listener for TracingEvents {
    fn on_event(&self, event: &Event<'_>) {
        match event.key() {
            // A keyed instance's event is traced inside a span that names
            // its key, so that the pattern's own fields stay as they are.
            Some(key) => ::tracing::debug_span!(target: "palisade", "palisade.keyed", key)
                .in_scope(|| event.what().trace(event.name())),
            None => event.what().trace(event.name()),
        }
    }
}
