//! The event stream forwarded to `tracing` and to `metrics`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex};

use palisade::circuit_breaker::CircuitBreakerLayer;
use palisade::error::BoxError;
use palisade::event::{MetricsEvents, TracingEvents};
use palisade::retry::RetryLayer;
use tower::{Layer, ServiceExt, service_fn};

/// A `tracing` subscriber that keeps each event as "LEVEL message field=value ...".
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<String>>>);

struct Fields(String);

impl tracing::field::Visit for Fields {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.0 = format!("{value:?}{}", self.0);
        } else {
            self.0.push_str(&format!(" {}={value:?}", field.name()));
        }
    }
}

impl tracing::Subscriber for Capture {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        let mut fields = Fields(String::new());
        event.record(&mut fields);
        let meta = event.metadata();
        self.0
            .lock()
            .unwrap()
            .push(format!("{} {} {}", meta.level(), meta.target(), fields.0));
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

fn failing() -> impl tower::Service<(), Response = (), Error = BoxError> + Clone {
    service_fn(|_: ()| async { Err::<(), BoxError>("down".into()) })
}

#[tokio::test(start_paused = true)]
async fn every_event_becomes_a_structured_tracing_event() {
    let capture = Capture::default();
    let _guard = tracing::subscriber::set_default(capture.clone());
    let breaker = CircuitBreakerLayer::builder()
        .name("db")
        .count_window(2)
        .minimum_calls(2)
        .on_event(TracingEvents)
        .build()
        .unwrap();
    let retry = RetryLayer::builder()
        .name("r")
        .max_attempts(2)
        .no_budget()
        .on_event(TracingEvents)
        .build()
        .unwrap();
    let svc = retry.layer(breaker.layer(failing()));
    svc.oneshot(()).await.unwrap_err();
    let lines = capture.0.lock().unwrap().clone();
    assert!(
        lines.contains(&"TRACE palisade attempt layer=\"r\" attempt=1".to_string()),
        "{lines:#?}"
    );
    assert!(
        lines.iter().any(|l| l
            .starts_with("WARN palisade circuit breaker opened layer=\"db\" from=Closed to=Open")),
        "{lines:#?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("DEBUG palisade retrying layer=\"r\" attempt=1")),
        "{lines:#?}"
    );
}

/// A `metrics` recorder that sums counters and keeps the last gauge values.
#[derive(Default)]
struct Recorder {
    values: Arc<Mutex<BTreeMap<String, Arc<Value>>>>,
}

#[derive(Default)]
struct Value(AtomicU64);

impl metrics::CounterFn for Value {
    fn increment(&self, value: u64) {
        self.0.fetch_add(value, SeqCst);
    }
    fn absolute(&self, value: u64) {
        self.0.store(value, SeqCst);
    }
}

impl metrics::GaugeFn for Value {
    fn increment(&self, _: f64) {}
    fn decrement(&self, _: f64) {}
    fn set(&self, value: f64) {
        self.0.store(value as u64, SeqCst);
    }
}

impl Recorder {
    fn slot(&self, key: &metrics::Key) -> Arc<Value> {
        let mut labels: Vec<String> = key
            .labels()
            .map(|l| format!("{}={}", l.key(), l.value()))
            .collect();
        labels.sort();
        let name = format!("{}{{{}}}", key.name(), labels.join(","));
        self.values.lock().unwrap().entry(name).or_default().clone()
    }

    fn get(&self, name: &str) -> u64 {
        self.values
            .lock()
            .unwrap()
            .get(name)
            .map_or(0, |v| v.0.load(SeqCst))
    }
}

impl metrics::Recorder for Recorder {
    fn describe_counter(
        &self,
        _: metrics::KeyName,
        _: Option<metrics::Unit>,
        _: metrics::SharedString,
    ) {
    }
    fn describe_gauge(
        &self,
        _: metrics::KeyName,
        _: Option<metrics::Unit>,
        _: metrics::SharedString,
    ) {
    }
    fn describe_histogram(
        &self,
        _: metrics::KeyName,
        _: Option<metrics::Unit>,
        _: metrics::SharedString,
    ) {
    }
    fn register_counter(&self, key: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Counter {
        metrics::Counter::from_arc(self.slot(key))
    }
    fn register_gauge(&self, key: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Gauge {
        metrics::Gauge::from_arc(self.slot(key))
    }
    fn register_histogram(
        &self,
        _: &metrics::Key,
        _: &metrics::Metadata<'_>,
    ) -> metrics::Histogram {
        metrics::Histogram::noop()
    }
}

#[test]
fn events_are_counted_through_the_metrics_facade() {
    let recorder = Recorder::default();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    metrics::with_local_recorder(&recorder, || {
        rt.block_on(async {
            let breaker = CircuitBreakerLayer::builder()
                .name("db")
                .count_window(2)
                .minimum_calls(2)
                .on_event(MetricsEvents::new())
                .build()
                .unwrap();
            let retry = RetryLayer::builder()
                .name("r")
                .max_attempts(3)
                .no_budget()
                .on_event(MetricsEvents::new())
                .build()
                .unwrap();
            let svc = retry.layer(breaker.layer(failing()));
            svc.clone().oneshot(()).await.unwrap_err();
            svc.oneshot(()).await.unwrap_err();
        })
    });
    // Call 1: attempts 1 and 2 fail (the breaker opens), attempt 3 is
    // rejected. Call 2: attempt 1 is rejected.
    assert_eq!(
        recorder.get("palisade.retry.attempts{palisade.layer.name=r}"),
        4
    );
    assert_eq!(
        recorder.get("palisade.retry.retries{palisade.layer.name=r,palisade.retry.reason=failure}"),
        2
    );
    assert_eq!(
        recorder.get("palisade.circuit_breaker.calls{palisade.circuit_breaker.outcome=rejected,palisade.circuit_breaker.slow=false,palisade.layer.name=db}"),
        2
    );
    assert_eq!(
        recorder.get("palisade.circuit_breaker.transitions{palisade.circuit_breaker.from_state=closed,palisade.circuit_breaker.to_state=open,palisade.layer.name=db}"),
        1
    );
    assert_eq!(
        recorder.get("palisade.circuit_breaker.state{palisade.circuit_breaker.state=open,palisade.layer.name=db}"),
        1
    );
    assert_eq!(
        recorder.get("palisade.circuit_breaker.state{palisade.circuit_breaker.state=closed,palisade.layer.name=db}"),
        0
    );
    assert_eq!(
        recorder.get("palisade.retry.failed_calls{palisade.layer.name=r,palisade.retry.give_up_reason=not_retryable}"),
        2
    );
}
