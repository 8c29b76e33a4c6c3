//! The table of metrics in `palisade::event::metrics` is what's recorded, and
//! what's recorded is the table: every event kind of palisade's, with every
//! value that changes a label, is driven through `MetricsEvents`, and the
//! names, instruments, labels, label values and descriptions are compared
//! with the rows of the table in the module's docs.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use metrics::{Counter, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit};

use palisade::adaptive::{AdaptiveLimitEvent, ThrottleEvent};
use palisade::bulkhead::BulkheadEvent;
use palisade::circuit_breaker::{BreakerEvent, CircuitState, TransitionReason};
use palisade::classify::Outcome;
use palisade::error::ErrorKind;
use palisade::event::MetricsEvents;
use palisade::event::{Event, EventKind, Listener};
use palisade::fallback::FallbackEvent;
use palisade::hedge::{HedgeEvent, HedgeTrigger, SkipReason};
use palisade::keyed::{Eviction, KeyedEvent};
use palisade::rate_limit::RateLimitEvent;
use palisade::retry::{GiveUpReason, RetryEvent, RetryReason};
use palisade::timeout::TimeoutEvent;

/// Label name → the values seen, per metric name.
type Seen = BTreeMap<String, BTreeMap<String, BTreeSet<String>>>;

/// Keeps what was registered and described.
#[derive(Default)]
struct Catalogue {
    seen: Mutex<Seen>,
    kinds: Mutex<BTreeMap<String, &'static str>>,
    described: Mutex<BTreeMap<String, (Option<Unit>, String)>>,
}

impl Catalogue {
    fn note(&self, key: &Key, kind: &'static str) {
        let mut seen = self.seen.lock().unwrap();
        let labels = seen.entry(key.name().to_string()).or_default();
        for label in key.labels() {
            labels
                .entry(label.key().to_string())
                .or_default()
                .insert(label.value().to_string());
        }
        self.kinds
            .lock()
            .unwrap()
            .insert(key.name().to_string(), kind);
    }

    fn describe(&self, name: KeyName, unit: Option<Unit>, text: SharedString) {
        self.described
            .lock()
            .unwrap()
            .insert(name.as_str().to_string(), (unit, text.to_string()));
    }
}

impl Recorder for Catalogue {
    fn describe_counter(&self, name: KeyName, unit: Option<Unit>, text: SharedString) {
        self.describe(name, unit, text);
    }
    fn describe_gauge(&self, name: KeyName, unit: Option<Unit>, text: SharedString) {
        self.describe(name, unit, text);
    }
    fn describe_histogram(&self, name: KeyName, unit: Option<Unit>, text: SharedString) {
        self.describe(name, unit, text);
    }
    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        self.note(key, "counter");
        Counter::noop()
    }
    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        self.note(key, "gauge");
        Gauge::noop()
    }
    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        self.note(key, "histogram");
        Histogram::noop()
    }
}

/// Every event of palisade's, with every value that could change what
/// is recorded.
fn every_event() -> Vec<Box<dyn EventKind>> {
    let mut all: Vec<Box<dyn EventKind>> = Vec::new();
    for from in CircuitState::ALL {
        for to in CircuitState::ALL {
            all.push(Box::new(BreakerEvent::StateTransition {
                from,
                to,
                reason: TransitionReason::FailureRate,
            }));
        }
    }
    all.push(Box::new(BreakerEvent::CallRejected {
        retry_after: Duration::from_secs(1),
    }));
    all.push(Box::new(BreakerEvent::FailureRateExceeded {
        rate: 0.6,
        threshold: 0.5,
    }));
    all.push(Box::new(BreakerEvent::SlowCallRateExceeded {
        rate: 0.6,
        threshold: 0.5,
    }));
    for outcome in [Outcome::Success, Outcome::Failure, Outcome::Ignored] {
        for slow in [false, true] {
            all.push(Box::new(BreakerEvent::CallFinished { outcome, slow }));
        }
    }
    all.push(Box::new(BulkheadEvent::InFlight { in_flight: 3 }));
    for timed_out_in_queue in [false, true] {
        all.push(Box::new(BulkheadEvent::Rejected { timed_out_in_queue }));
    }
    for retry_after in [Duration::from_millis(35), Duration::MAX] {
        all.push(Box::new(RateLimitEvent::Rejected { retry_after }));
    }
    all.push(Box::new(RateLimitEvent::Waited {
        wait: Duration::from_millis(35),
    }));
    all.push(Box::new(AdaptiveLimitEvent::LimitChanged {
        from: 20,
        to: 21,
    }));
    for timed_out_in_queue in [false, true] {
        all.push(Box::new(AdaptiveLimitEvent::Rejected {
            timed_out_in_queue,
        }));
    }
    all.push(Box::new(ThrottleEvent::Throttled { probability: 0.5 }));
    all.push(Box::new(RetryEvent::Attempt { attempt: 1 }));
    for reason in RetryReason::ALL {
        all.push(Box::new(RetryEvent::Retry {
            attempt: 1,
            delay: Duration::ZERO,
            reason,
            hinted: false,
        }));
    }
    all.push(Box::new(RetryEvent::BudgetExhausted { attempt: 1 }));
    for reason in GiveUpReason::ALL {
        all.push(Box::new(RetryEvent::GaveUp {
            attempts: 1,
            reason,
        }));
    }
    all.push(Box::new(KeyedEvent::InstanceCreated { keys: 1 }));
    for reason in Eviction::ALL {
        all.push(Box::new(KeyedEvent::InstanceEvicted { reason, keys: 0 }));
    }
    all.push(Box::new(KeyedEvent::Rejected));
    all.push(Box::new(KeyedEvent::Shared));
    for trigger in HedgeTrigger::ALL {
        all.push(Box::new(HedgeEvent::Hedged {
            attempt: 2,
            trigger,
        }));
    }
    for reason in SkipReason::ALL {
        all.push(Box::new(HedgeEvent::Skipped { attempt: 2, reason }));
    }
    for attempt in [1, 2] {
        all.push(Box::new(HedgeEvent::Won {
            attempt,
            attempts: 2,
        }));
    }
    for fatal in [false, true] {
        all.push(Box::new(HedgeEvent::Failed {
            attempt: 1,
            attempts: 2,
            fatal,
        }));
    }
    all.push(Box::new(HedgeEvent::Cancelled { attempts: 2 }));
    all.push(Box::new(TimeoutEvent::TimedOut {
        after: Duration::from_secs(1),
    }));
    for kind in [
        None,
        Some(ErrorKind::CircuitOpen),
        Some(ErrorKind::BulkheadFull),
        Some(ErrorKind::RateLimited),
        Some(ErrorKind::TooManyKeys),
        Some(ErrorKind::Elapsed),
        Some(ErrorKind::Inner),
    ] {
        all.push(Box::new(FallbackEvent::FellBack { kind }));
    }
    all
}

/// A row of the module docs' table: instrument, and label → values
/// (empty for the layer's name, which comes from configuration).
type Row = (String, BTreeMap<String, BTreeSet<String>>);

/// Reads the table in this file's module docs.
fn table() -> BTreeMap<String, Row> {
    let code = |cell: &str| -> Vec<String> {
        cell.split('`')
            .skip(1)
            .step_by(2)
            .map(str::to_string)
            .collect()
    };
    let mut rows = BTreeMap::new();
    for line in include_str!("../src/event/metrics.rs").lines() {
        let Some(row) = line.strip_prefix("//! | `palisade.") else {
            continue;
        };
        let cells: Vec<&str> = row.split(" | ").collect();
        assert_eq!(cells.len(), 5, "{line}");
        let name = format!("palisade.{}", cells[0].trim_end_matches('`'));
        let mut labels = BTreeMap::new();
        for label in cells[3].split("; ") {
            let (key, values) = label.split_once(": ").unwrap_or((label, ""));
            let key = code(key).pop().expect("a label name in backquotes");
            labels.insert(key, code(values).into_iter().collect());
        }
        let old = rows.insert(name.clone(), (cells[1].to_string(), labels));
        assert!(old.is_none(), "{name} is in the table twice");
    }
    rows
}

#[test]
fn what_is_recorded_is_the_table_and_the_table_is_what_is_recorded() {
    let recorder = Arc::new(Catalogue::default());
    let listener = MetricsEvents::new();
    let layer: Arc<str> = Arc::from("layer-name");
    metrics::with_local_recorder(&*recorder, || {
        for kind in every_event() {
            listener.on_event(&Event::new(&layer, &*kind));
        }
    });
    let seen = recorder.seen.lock().unwrap().clone();
    let kinds = recorder.kinds.lock().unwrap().clone();
    let described = recorder.described.lock().unwrap().clone();
    let table = table();
    assert_eq!(
        seen.keys().collect::<Vec<_>>(),
        table.keys().collect::<Vec<_>>(),
        "the metrics recorded, and the metrics in the table"
    );
    for (name, (instrument, labels)) in &table {
        assert_eq!(kinds[name], instrument, "{name}'s instrument");
        let recorded = &seen[name];
        assert_eq!(
            recorded.keys().collect::<Vec<_>>(),
            labels.keys().collect::<Vec<_>>(),
            "{name}'s labels"
        );
        for (key, values) in labels {
            if key == "palisade.layer.name" {
                assert!(values.is_empty(), "{name}: the layer's name is configured");
                assert_eq!(recorded[key], BTreeSet::from(["layer-name".to_string()]));
            } else {
                assert_eq!(&recorded[key], values, "{name}'s {key} values");
            }
        }
        let (unit, text) = described
            .get(name)
            .unwrap_or_else(|| panic!("{name} is described"));
        assert_eq!(*unit, Some(Unit::Count), "{name}'s unit");
        assert!(!text.is_empty(), "{name}'s description");
    }
}
