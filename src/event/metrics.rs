//! Events counted through the [`metrics`](https://docs.rs/metrics) facade
//! (feature `metrics`): [`MetricsEvents`], and the [`Measure`] each event
//! kind records.
//!
//! # The metrics
//!
//! Names and labels follow OpenTelemetry's naming guidance: one namespace
//! per pattern under `palisade.`, dot-separated, lower case, no `_total`
//! on counters and no unit in the name (an exporter adds what its format
//! wants: Prometheus's, `metrics-exporter-prometheus`, turns dots into
//! underscores, and with its recommended naming
//! (`PrometheusBuilder::with_recommended_naming(true)`, as
//! `examples/metrics.rs` sets it up) adds `_total` to counters, so
//! `palisade.retry.attempts` is scraped as `palisade_retry_attempts_total`,
//! and the label `palisade.layer.name` as `palisade_layer_name`; without
//! it, counters keep their name, `palisade_retry_attempts`). Every metric has the
//! label `palisade.layer.name`, the name given to the layer's builder.
//!
//! | metric | instrument | unit | labels | meaning |
//! |---|---|---|---|---|
//! | `palisade.circuit_breaker.state` | gauge | `1` | `palisade.layer.name`; `palisade.circuit_breaker.state`: `closed` `open` `half_open` `forced_open` `disabled` `metrics_only` | 1 for the state the breaker is in, 0 for the other five; set at each transition (no series before the first) |
//! | `palisade.circuit_breaker.transitions` | counter | `{transition}` | `palisade.layer.name`; `palisade.circuit_breaker.from_state`: `closed` `open` `half_open` `forced_open` `disabled` `metrics_only`; `palisade.circuit_breaker.to_state`: `closed` `open` `half_open` `forced_open` `disabled` `metrics_only` | state changes |
//! | `palisade.circuit_breaker.calls` | counter | `{call}` | `palisade.layer.name`; `palisade.circuit_breaker.outcome`: `success` `failure` `ignored` `rejected`; `palisade.circuit_breaker.slow`: `true` `false` | calls the breaker saw finish, as the classifier judged them (`slow`: longer than the slow-call duration), and calls it refused (`rejected`, never slow) |
//! | `palisade.circuit_breaker.threshold_crossings` | counter | `{crossing}` | `palisade.layer.name`; `palisade.circuit_breaker.rate`: `failure` `slow_call` | times the failure or slow-call rate reached its threshold |
//! | `palisade.bulkhead.active_calls` | gauge | `{call}` | `palisade.layer.name` | calls holding a permit |
//! | `palisade.bulkhead.rejected_calls` | counter | `{call}` | `palisade.layer.name`; `palisade.bulkhead.rejection_reason`: `full` `queue_timeout` | calls refused: every permit and queue place taken, or the maximum wait in the queue passed |
//! | `palisade.rate_limiter.rejected_calls` | counter | `{call}` | `palisade.layer.name`; `palisade.rate_limiter.rejection_reason`: `over_rate` `cost_above_burst` | calls refused: over the rate (or, waiting, over the maximum wait), or costing more than the burst |
//! | `palisade.rate_limiter.delayed_calls` | counter | `{call}` | `palisade.layer.name` | calls admitted after a wait (the waiting mode) |
//! | `palisade.adaptive_limit.limit` | gauge | `{call}` | `palisade.layer.name` | the adaptive limit's current limit of calls in flight, set each time the algorithm moves it |
//! | `palisade.adaptive_limit.rejected_calls` | counter | `{call}` | `palisade.layer.name`; `palisade.adaptive_limit.rejection_reason`: `full` `queue_timeout` | calls refused: the limit reached and the queue full, or the maximum wait in the queue passed |
//! | `palisade.throttle.throttled_calls` | counter | `{call}` | `palisade.layer.name` | calls the throttle rejected locally |
//! | `palisade.keyed.keys` | gauge | `{key}` | `palisade.layer.name` | keys that have an instance, set each time one is made or goes |
//! | `palisade.keyed.instances_created` | counter | `{instance}` | `palisade.layer.name` | instances made for keys seen for the first time (or again after theirs went) |
//! | `palisade.keyed.evictions` | counter | `{instance}` | `palisade.layer.name`; `palisade.keyed.eviction_reason`: `fresh` `idle` `least_recently_used` | instances that went, by why ([`Eviction`](crate::keyed::Eviction)) |
//! | `palisade.keyed.rejected_calls` | counter | `{call}` | `palisade.layer.name` | calls refused with `TooManyKeys`: no room for their key |
//! | `palisade.keyed.shared_calls` | counter | `{call}` | `palisade.layer.name` | calls served by the shared instance for want of room for their key |
//! | `palisade.retry.attempts` | counter | `{attempt}` | `palisade.layer.name` | attempts sent, first ones included |
//! | `palisade.retry.retries` | counter | `{retry}` | `palisade.layer.name`; `palisade.retry.reason`: `failure` `timeout` `circuit_open` `bulkhead_full` `not_sent` `rate_limited` `too_many_keys` `concurrency_limited` `throttled` | retries scheduled, by what the failed attempt came to |
//! | `palisade.retry.failed_calls` | counter | `{call}` | `palisade.layer.name`; `palisade.retry.give_up_reason`: `max_attempts` `deadline` `server_said_no` `hint_above_cap` `backoff_ended` `not_replayable` `budget_exhausted` `not_retryable` `failure_not_retryable` `request_not_retryable` | failures returned without a further attempt, by why no further attempt was made |
//! | `palisade.hedge.hedges` | counter | `{attempt}` | `palisade.layer.name`; `palisade.hedge.trigger`: `delay` `failure` `parallel` | attempts after the first sent, by what started them ([`HedgeTrigger`](crate::hedge::HedgeTrigger)) |
//! | `palisade.hedge.skipped` | counter | `{attempt}` | `palisade.layer.name`; `palisade.hedge.skip_reason`: `budget_exhausted` `server_said_no` `hint_above_cap` `not_copyable` `not_ready` `refused` | hedges due and not sent, by why ([`SkipReason`](crate::hedge::SkipReason)) |
//! | `palisade.hedge.wins` | counter | `{call}` | `palisade.layer.name`; `palisade.hedge.winner`: `first` `hedge` | calls answered (not a failure), by whether the first attempt or a hedge won |
//! | `palisade.hedge.failed_calls` | counter | `{call}` | `palisade.layer.name`; `palisade.hedge.failure`: `fatal` `all_failed` | calls that returned a failure: a fatal one, or the first attempt's once every attempt failed |
//! | `palisade.hedge.cancelled_attempts` | counter | `{attempt}` | `palisade.layer.name` | losing attempts cancelled when the call ended |
//! | `palisade.timeout.timed_out_calls` | counter | `{call}` | `palisade.layer.name` | calls cut off |
//! | `palisade.fallback.answered_calls` | counter | `{call}` | `palisade.layer.name` | failures answered by the fallback |
//!
//! **Label values.** Each label's values are the variants of an enum of
//! palisade's, in snake case, and that enum's docs say when each applies:
//! [`CircuitState`](crate::circuit_breaker::CircuitState) for the breaker's
//! states, [`RetryReason`](crate::retry::RetryReason) for
//! `palisade.retry.reason` and [`GiveUpReason`](crate::retry::GiveUpReason)
//! for `palisade.retry.give_up_reason` (`not_retryable`: a rejection by a
//! layer below that `retry_on` does not hold; `failure_not_retryable`: a
//! failure the classifier does not retry; `request_not_retryable`: a
//! request that may not be sent twice and may have reached the server).
//!
//! **Units.** The units above are OpenTelemetry's (a count of things is
//! written `{thing}`, a ratio or state flag `1`). `metrics::Unit` has no
//! such annotations, so each metric is described to the recorder (its
//! `describe_counter` or `describe_gauge`, with a sentence saying the
//! meaning above as its help text) with [`Unit::Count`], for which the
//! Prometheus exporter adds no suffix.
//!
//! **Keyed instances.** The instances of a [keyed](crate::keyed) layer
//! record in their template's series: every key of a layer named `hosts`
//! counts in `palisade.layer.name="hosts"`, so the series do not grow with
//! the keys. [`MetricsEvents::key_label`] adds the label `palisade.key` to
//! them, with a value from a mapping you give (one of a set you bound, or
//! `other`); it is not in the table above, which lists what every listener
//! records.
//!
//! **Cardinality.** Every label is bounded: `palisade.layer.name` takes the
//! names given in configuration (one per layer), and every other label a
//! value from the fixed lists above, which are the variants of an enum of
//! palisade's. No label ever carries a per-request value (no URL, no
//! status code, no error text). So a breaker has at most 6 state series,
//! 36 transition series and 8 call series; a retry at most 1 + 9 + 10
//! series; a hedge at most 3 + 6 + 2 + 2 + 1; an adaptive limit 1 + 2; a
//! throttle 1.
//!
//! **The retry budget.** A spent budget is counted as
//! `palisade.retry.failed_calls` with `palisade.retry.give_up_reason` =
//! `budget_exhausted` (the [`RetryEvent::BudgetExhausted`](crate::retry::RetryEvent::BudgetExhausted)
//! event that comes just before it records nothing of its own).
//!
//! A layer of your own records through the same listener by implementing
//! [`EventKind::measure`](super::EventKind::measure); the table above is
//! palisade's, and a test (`tests/observability.rs`) drives every event
//! kind of palisade's through [`MetricsEvents`] and checks what it records
//! against it, row by row, label value by label value.

use std::sync::{Arc, PoisonError, RwLock};

use metrics::{Counter, Gauge, Key, KeyName, Label, SharedString, Unit};

use super::{Event, Listener};

/// The label every metric has: the layer's name.
const LAYER_LABEL: &str = "palisade.layer.name";

/// The label of a keyed instance's key, with [`MetricsEvents::key_label`].
const KEY_LABEL: &str = "palisade.key";

/// The key label's value for a key the mapping leaves out.
const OTHER_KEY: &str = "other";

/// What one event records through the [`metrics`](https://docs.rs/metrics)
/// facade: a counter to increase or a gauge to set, with labels besides
/// the layer's (static, so that recording allocates nothing), and the unit
/// and description given to the recorder when the metric is first
/// registered. Made by an [`EventKind`](super::EventKind)'s
/// [`measure`](super::EventKind::measure).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Measure {
    metric: &'static str,
    labels: &'static [(&'static str, &'static str)],
    value: Value,
    described: Option<(Unit, &'static str)>,
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
            described: None,
        }
    }

    /// Adds `n` rather than one to the counter.
    pub const fn by(mut self, n: u64) -> Self {
        self.value = Value::Increment(n);
        self
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
            described: None,
        }
    }

    /// The metric's unit and meaning, given to the recorder
    /// (`describe_counter` or `describe_gauge`) when [`MetricsEvents`]
    /// first registers it: the Prometheus exporter writes them as the
    /// `# HELP` line and, for a unit other than [`Unit::Count`], a name
    /// suffix.
    pub const fn described(mut self, unit: Unit, description: &'static str) -> Self {
        self.described = Some((unit, description));
        self
    }
}

/// A registered counter or gauge, found again by its layer, metric and
/// labels (static, so compared by address).
#[derive(Debug)]
struct Handle {
    layer: Arc<str>,
    key: Option<SharedString>,
    metric: &'static str,
    labels: &'static [(&'static str, &'static str)],
    counter: Option<Counter>,
    gauge: Option<Gauge>,
}

impl Handle {
    fn is(&self, layer: &Arc<str>, key: Option<&SharedString>, m: &Measure) -> bool {
        Arc::ptr_eq(&self.layer, layer)
            && std::ptr::eq(self.metric, m.metric)
            && std::ptr::eq(self.labels, m.labels)
            && self.key.as_ref() == key
    }
}

/// Maps a keyed instance's key to its label value.
type KeyLabel = dyn Fn(&str) -> Option<SharedString> + Send + Sync;

/// Counts events through the [`metrics`](https://docs.rs/metrics) facade
/// (feature `metrics`): the metrics, their labels and units are in
/// [the table](self#the-metrics) (`palisade::event::metrics`).
///
/// Each counter and gauge is registered with the recorder once per
/// listener, at its first event, and kept: later events find it under a
/// read lock and allocate nothing (the `palisade.layer.name` label shares
/// the layer's name). So register the listener where the recorder it
/// should report to is installed. Without a listener nothing is built.
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
#[derive(Default)]
pub struct MetricsEvents {
    handles: RwLock<Vec<Handle>>,
    key_label: Option<Arc<KeyLabel>>,
}

impl std::fmt::Debug for MetricsEvents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetricsEvents")
            .field("handles", &self.handles)
            .field("key_label", &self.key_label.is_some())
            .finish()
    }
}

impl MetricsEvents {
    /// A listener with no metric registered yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Labels the metrics of a [keyed](crate::keyed) layer's instances
    /// with `palisade.key`, whose value is what `label` makes of the
    /// instance's key, or `other` where it returns `None`. Every event that
    /// carries a key ([`Event::key`](super::Event::key)) is labelled so, the
    /// keyed layer's own (`palisade.keyed.*`) included, if this listener
    /// hears them.
    ///
    /// Without this, every instance of a keyed layer counts in its layer's
    /// series, however many keys there are. With it, the number of series
    /// grows with the values `label` returns, and a metrics backend keeps
    /// each series long after its key is gone: return values from a set
    /// you bound (the hosts you know of, the tenants of a plan), never the
    /// key itself when keys come from outside (a header a client sets).
    /// The registered series are kept here as well, one per value.
    ///
    /// # Examples
    ///
    /// ```
    /// use palisade::event::MetricsEvents;
    ///
    /// // Only the two hosts we know of get a series of their own.
    /// let known = ["api.internal:443", "auth.internal:443"];
    /// let listener = MetricsEvents::new()
    ///     .key_label(move |key| known.iter().find(|k| **k == key).map(|k| (*k).into()));
    /// # let _ = listener;
    /// ```
    pub fn key_label(
        mut self,
        label: impl Fn(&str) -> Option<SharedString> + Send + Sync + 'static,
    ) -> Self {
        self.key_label = Some(Arc::new(label));
        self
    }

    fn record(handle: &Handle, value: Value) {
        match (value, &handle.counter, &handle.gauge) {
            (Value::Increment(n), Some(counter), _) => counter.increment(n),
            (Value::Set(v), _, Some(gauge)) => gauge.set(v),
            _ => {}
        }
    }

    #[cold]
    fn register(&self, layer: &Arc<str>, key_value: Option<SharedString>, m: Measure) {
        let mut labels = Vec::with_capacity(m.labels.len() + 2);
        labels.push(Label::new(LAYER_LABEL, Arc::clone(layer)));
        if let Some(value) = &key_value {
            labels.push(Label::new(KEY_LABEL, value.clone()));
        }
        labels.extend(
            m.labels
                .iter()
                .map(|&(k, v)| Label::from_static_parts(k, v)),
        );
        let key = Key::from_parts(m.metric, labels);
        let metadata = metrics::Metadata::new(module_path!(), metrics::Level::INFO, None);
        let (counter, gauge) = metrics::with_recorder(|recorder| {
            let described = m.described.map(|(unit, description)| {
                (
                    KeyName::from_const_str(m.metric),
                    Some(unit),
                    SharedString::const_str(description),
                )
            });
            match m.value {
                Value::Increment(_) => {
                    if let Some((name, unit, description)) = described {
                        recorder.describe_counter(name, unit, description);
                    }
                    (Some(recorder.register_counter(&key, &metadata)), None)
                }
                Value::Set(_) => {
                    if let Some((name, unit, description)) = described {
                        recorder.describe_gauge(name, unit, description);
                    }
                    (None, Some(recorder.register_gauge(&key, &metadata)))
                }
            }
        });
        let handle = Handle {
            layer: Arc::clone(layer),
            key: key_value,
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
    /// A clone registers its own handles, with the same key labels.
    fn clone(&self) -> Self {
        Self {
            handles: RwLock::default(),
            key_label: self.key_label.clone(),
        }
    }
}

impl Listener for MetricsEvents {
    fn on_event(&self, event: &Event<'_>) {
        let layer = event.shared_name();
        let key = match (&self.key_label, event.key()) {
            (Some(label), Some(key)) => {
                Some(label(key).unwrap_or_else(|| SharedString::const_str(OTHER_KEY)))
            }
            _ => None,
        };
        event.what().measure(&mut |m| {
            {
                let handles = self.handles.read().unwrap_or_else(PoisonError::into_inner);
                if let Some(handle) = handles.iter().find(|h| h.is(layer, key.as_ref(), &m)) {
                    Self::record(handle, m.value);
                    return;
                }
            }
            self.register(layer, key.clone(), m);
        });
    }
}
