use std::sync::{Arc, PoisonError, RwLock};

use metrics::{Counter, Gauge, Key, Label};

use super::{Event, Listener};

/// What one event records through the [`metrics`](https://docs.rs/metrics)
/// facade: a counter to increase or a gauge to set, with labels besides
/// the layer's (static, so that recording allocates nothing). Made by an
/// [`EventKind`](super::EventKind)'s
/// [`measure`](super::EventKind::measure).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Measure {
    metric: &'static str,
    labels: &'static [(&'static str, &'static str)],
    value: Value,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Value {
    Increment(u64),
    Set(f64),
}

impl Measure {
    /// Adds one to the counter `metric` with these `labels`.
    pub const fn count(
        metric: &'static str,
        labels: &'static [(&'static str, &'static str)],
    ) -> Self {
        Self {
            metric,
            labels,
            value: Value::Increment(1),
        }
    }

    /// Sets the gauge `metric` with these `labels` to `value`.
    pub const fn set(
        metric: &'static str,
        labels: &'static [(&'static str, &'static str)],
        value: f64,
    ) -> Self {
        Self {
            metric,
            labels,
            value: Value::Set(value),
        }
    }
}

/// A registered counter or gauge, found again by its layer, metric and
/// labels (static, so compared by address).
#[derive(Debug)]
struct Handle {
    layer: Arc<str>,
    metric: &'static str,
    labels: &'static [(&'static str, &'static str)],
    counter: Option<Counter>,
    gauge: Option<Gauge>,
}

impl Handle {
    fn is(&self, layer: &Arc<str>, m: &Measure) -> bool {
        Arc::ptr_eq(&self.layer, layer)
            && std::ptr::eq(self.metric, m.metric)
            && std::ptr::eq(self.labels, m.labels)
    }
}

/// Counts events through the [`metrics`](https://docs.rs/metrics) facade
/// (feature `metrics`). Every metric has a `layer` label with the layer's
/// name.
///
/// | metric | kind | labels | counts |
/// |---|---|---|---|
/// | `palisade_circuit_state` | gauge | `layer` | the breaker's state: 0 closed, 1 open, 2 half-open, 3 forced open, 4 disabled, 5 metrics only |
/// | `palisade_circuit_transitions_total` | counter | `layer`, `from`, `to` | state changes |
/// | `palisade_calls_total` | counter | `layer`, `outcome` (`Success`, `Failure`, `Ignored`), `slow` | calls a breaker saw finish |
/// | `palisade_bulkhead_in_flight` | gauge | `layer` | calls holding a bulkhead permit |
/// | `palisade_calls_rejected_total` | counter | `layer`, `by` (`circuit_breaker`, `bulkhead`) | calls refused without reaching the service |
/// | `palisade_rate_exceeded_total` | counter | `layer`, `rate` (`failure`, `slow_call`) | threshold crossings |
/// | `palisade_attempts_total` | counter | `layer` | attempts sent by a retry layer, first ones included |
/// | `palisade_retries_total` | counter | `layer`, `reason` | retries scheduled |
/// | `palisade_retry_budget_exhausted_total` | counter | `layer` | retries refused by the budget |
/// | `palisade_retry_gave_up_total` | counter | `layer`, `reason` | failures returned without a further retry |
/// | `palisade_timeouts_total` | counter | `layer` | calls cut off |
/// | `palisade_fallbacks_total` | counter | `layer` | failures answered by a fallback |
///
/// Each counter and gauge is registered with the recorder once per
/// listener, at its first event, and kept: later events find it under a
/// read lock and allocate nothing (the `layer` label shares the layer's
/// name). So register the listener where the recorder it should report to
/// is installed. Without a listener nothing is built.
///
/// # Examples
///
/// ```
/// use palisade::bulkhead::BulkheadLayer;
/// use palisade::event::MetricsEvents;
///
/// let bulkhead = BulkheadLayer::builder()
///     .name("db")
///     .max_concurrent(16)
///     .on_event(MetricsEvents::new())
///     .build()
///     .unwrap();
/// # let _ = bulkhead;
/// ```
#[derive(Debug, Default)]
pub struct MetricsEvents {
    handles: RwLock<Vec<Handle>>,
}

impl MetricsEvents {
    /// A listener with no metric registered yet.
    pub fn new() -> Self {
        Self::default()
    }

    fn record(handle: &Handle, value: Value) {
        match (value, &handle.counter, &handle.gauge) {
            (Value::Increment(n), Some(counter), _) => counter.increment(n),
            (Value::Set(v), _, Some(gauge)) => gauge.set(v),
            _ => {}
        }
    }

    #[cold]
    fn register(&self, layer: &Arc<str>, m: Measure) {
        let mut labels = Vec::with_capacity(m.labels.len() + 1);
        labels.push(Label::new("layer", Arc::clone(layer)));
        labels.extend(
            m.labels
                .iter()
                .map(|&(k, v)| Label::from_static_parts(k, v)),
        );
        let key = Key::from_parts(m.metric, labels);
        let metadata = metrics::Metadata::new(module_path!(), metrics::Level::INFO, None);
        let (counter, gauge) = metrics::with_recorder(|recorder| match m.value {
            Value::Increment(_) => (Some(recorder.register_counter(&key, &metadata)), None),
            Value::Set(_) => (None, Some(recorder.register_gauge(&key, &metadata))),
        });
        let handle = Handle {
            layer: Arc::clone(layer),
            metric: m.metric,
            labels: m.labels,
            counter,
            gauge,
        };
        Self::record(&handle, m.value);
        let mut handles = self.handles.write().unwrap_or_else(PoisonError::into_inner);
        handles.push(handle);
    }
}

impl Clone for MetricsEvents {
    /// A clone registers its own handles.
    fn clone(&self) -> Self {
        Self::new()
    }
}

impl Listener for MetricsEvents {
    fn on_event(&self, event: &Event<'_>) {
        let layer = event.shared_name();
        event.what().measure(&mut |m| {
            {
                let handles = self.handles.read().unwrap_or_else(PoisonError::into_inner);
                if let Some(handle) = handles.iter().find(|h| h.is(layer, &m)) {
                    Self::record(handle, m.value);
                    return;
                }
            }
            self.register(layer, m);
        });
    }
}
