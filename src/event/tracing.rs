use super::{Event, Listener};

/// Forwards every event to [`tracing`](https://docs.rs/tracing), target
/// `palisade`, with structured fields (feature `tracing`). Each pattern
/// chooses its events' levels and fields
/// ([`EventKind::trace`](super::EventKind::trace)); every event has a
/// `layer` field with the layer's name.
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
        event.what().trace(event.name());
    }
}
