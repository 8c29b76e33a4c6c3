//! The event stream forwarded to `tracing` and to `metrics`, and the
//! retry's attempt spans.

#[path = "support/http_server.rs"]
mod http_server;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex};

use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use http_server::{Reply, Server};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use palisade::backoff::{Backoff, Jitter};
use palisade::circuit_breaker::CircuitBreakerLayer;
use palisade::classify::HttpClassifier;
use palisade::error::BoxError;
use palisade::event::{MetricsEvents, TracingEvents};
use palisade::retry::{ReplayBodies, ReplayBody, ReqwestRequests, RetryLayer};
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

#[tokio::test(start_paused = true)]
async fn hedge_events_become_structured_tracing_events() {
    use palisade::hedge::HedgeLayer;
    let capture = Capture::default();
    let _guard = tracing::subscriber::set_default(capture.clone());
    let calls = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let slow_then_fast = service_fn(move |_: ()| {
        let n = calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        async move {
            if n == 0 {
                tokio::time::sleep(Duration::from_secs(1)).await;
                return Err::<(), BoxError>("slow".into());
            }
            Ok(())
        }
    });
    let hedge = HedgeLayer::builder()
        .name("h")
        .delay(Duration::from_millis(10))
        .on_event(TracingEvents)
        .build()
        .unwrap();
    hedge.layer(slow_then_fast).oneshot(()).await.unwrap();
    let lines = capture.0.lock().unwrap().clone();
    assert_eq!(
        lines,
        [
            "DEBUG palisade hedge sent layer=\"h\" attempt=2 trigger=\"delay\"",
            "TRACE palisade attempt won layer=\"h\" attempt=2 attempts=2",
            "TRACE palisade losing attempts cancelled layer=\"h\" attempts=1",
        ]
    );
    let fallback_mode = HedgeLayer::builder()
        .name("h")
        .mode(palisade::hedge::HedgeMode::Fallback)
        .no_budget()
        .on_event(TracingEvents)
        .build()
        .unwrap();
    capture.0.lock().unwrap().clear();
    fallback_mode
        .layer(failing())
        .oneshot(())
        .await
        .unwrap_err();
    let lines = capture.0.lock().unwrap().clone();
    assert_eq!(
        lines,
        [
            "DEBUG palisade hedge sent layer=\"h\" attempt=2 trigger=\"failure\"",
            "WARN palisade hedged call failed layer=\"h\" attempt=1 attempts=2 fatal=false",
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn rate_limit_events_become_structured_tracing_events() {
    use palisade::rate_limit::RateLimitLayer;
    let capture = Capture::default();
    let _guard = tracing::subscriber::set_default(capture.clone());
    let limiter = RateLimitLayer::builder()
        .name("l")
        .rate(10, Duration::from_secs(1))
        .burst(1)
        .max_wait(Duration::from_millis(150))
        .on_event(TracingEvents)
        .build()
        .unwrap();
    let svc = limiter.layer(service_fn(|_: ()| async { Ok::<_, BoxError>(()) }));
    svc.clone().oneshot(()).await.unwrap();
    let waiting = tokio::spawn(svc.clone().oneshot(())); // waits 100 ms
    tokio::task::yield_now().await;
    svc.clone().oneshot(()).await.unwrap_err(); // would wait 200 ms
    waiting.await.unwrap().unwrap();
    let lines = capture.0.lock().unwrap().clone();
    assert_eq!(
        lines,
        [
            "DEBUG palisade call delayed by the rate limiter layer=\"l\" wait=100ms",
            "WARN palisade call rejected: rate limited layer=\"l\" retry_after=200ms",
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn adaptive_events_become_structured_tracing_events() {
    use palisade::adaptive::{AdaptiveLimitLayer, Aimd, ThrottleLayer};
    let capture = Capture::default();
    let _guard = tracing::subscriber::set_default(capture.clone());
    let limit = AdaptiveLimitLayer::builder()
        .name("a")
        .algorithm(
            Aimd::builder()
                .initial_limit(2)
                .min_limit(1)
                .build()
                .unwrap(),
        )
        .per_sample()
        .on_event(TracingEvents)
        .build()
        .unwrap();
    let svc = limit.layer(failing());
    svc.clone().oneshot(()).await.unwrap_err(); // 2 → 1
    let mut held = svc.clone();
    held.ready().await.unwrap();
    svc.clone().oneshot(()).await.unwrap_err(); // refused
    drop(held);
    let throttle = ThrottleLayer::builder()
        .name("t")
        .min_answered(0)
        .seed(1)
        .on_event(TracingEvents)
        .build()
        .unwrap();
    let svc = throttle.layer(failing());
    while capture.0.lock().unwrap().len() < 3 {
        svc.clone().oneshot(()).await.unwrap_err();
    }
    let lines = capture.0.lock().unwrap().clone();
    assert_eq!(
        lines[0],
        "DEBUG palisade adaptive limit moved layer=\"a\" from=2 to=1"
    );
    assert_eq!(
        lines[1],
        "WARN palisade call rejected: concurrency limited layer=\"a\" timed_out_in_queue=false"
    );
    assert!(
        lines[2].starts_with("WARN palisade call rejected: throttled layer=\"t\" probability=0."),
        "{lines:#?}"
    );
}

#[test]
fn adaptive_events_are_counted_through_the_metrics_facade() {
    use palisade::adaptive::{AdaptiveLimitLayer, Aimd, ThrottleLayer};
    let recorder = Recorder::default();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    let throttled = metrics::with_local_recorder(&recorder, || {
        rt.block_on(async {
            let limit = AdaptiveLimitLayer::builder()
                .name("a")
                .algorithm(
                    Aimd::builder()
                        .initial_limit(3)
                        .min_limit(1)
                        .build()
                        .unwrap(),
                )
                .per_sample()
                .on_event(MetricsEvents::new())
                .build()
                .unwrap();
            let svc = limit.layer(failing());
            svc.clone().oneshot(()).await.unwrap_err(); // 3 → 2
            svc.clone().oneshot(()).await.unwrap_err(); // 2 → 1
            let mut held = svc.clone();
            held.ready().await.unwrap();
            svc.clone().oneshot(()).await.unwrap_err(); // refused
            let throttle = ThrottleLayer::builder()
                .name("t")
                .min_answered(0)
                .seed(1)
                .on_event(MetricsEvents::new())
                .build()
                .unwrap();
            let svc = throttle.layer(failing());
            let mut throttled = 0;
            for _ in 0..20 {
                let err = svc.clone().oneshot(()).await.unwrap_err();
                throttled += u64::from(
                    palisade::error::ErrorKind::of(&err) == palisade::error::ErrorKind::Throttled,
                );
            }
            throttled
        })
    });
    assert_eq!(
        recorder.get("palisade.adaptive_limit.limit{palisade.layer.name=a}"),
        1
    );
    assert_eq!(
        recorder.get("palisade.adaptive_limit.rejected_calls{palisade.adaptive_limit.rejection_reason=full,palisade.layer.name=a}"),
        1
    );
    assert!(throttled > 0);
    assert_eq!(
        recorder.get("palisade.throttle.throttled_calls{palisade.layer.name=t}"),
        throttled
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

/// One span as the subscriber saw it.
#[derive(Debug, Clone)]
struct SpanSeen {
    id: u64,
    name: &'static str,
    fields: BTreeMap<String, String>,
    parent: Option<u64>,
}

#[derive(Default)]
struct SpanLog {
    spans: Vec<SpanSeen>,
    /// The spans entered, innermost last (the tests run on one thread).
    stack: Vec<u64>,
    /// "new N" and "close N", in order.
    lifecycle: Vec<String>,
}

/// A `tracing` subscriber that keeps every span with its fields and its
/// parent (the span entered when it was made).
#[derive(Clone, Default)]
struct Spans(Arc<Mutex<SpanLog>>);

struct SpanFields<'a>(&'a mut BTreeMap<String, String>);

impl tracing::field::Visit for SpanFields<'_> {
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        self.0.insert(field.name().to_string(), value.to_string());
    }
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.0
            .insert(field.name().to_string(), format!("{value:?}"));
    }
}

impl Spans {
    fn named(&self, name: &str) -> Vec<SpanSeen> {
        let log = self.0.lock().unwrap();
        log.spans
            .iter()
            .filter(|s| s.name == name)
            .cloned()
            .collect()
    }

    fn lifecycle(&self) -> Vec<String> {
        self.0.lock().unwrap().lifecycle.clone()
    }
}

impl tracing::Subscriber for Spans {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, attrs: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        let mut log = self.0.lock().unwrap();
        let id = log.spans.len() as u64 + 1;
        let parent = if attrs.is_contextual() {
            log.stack.last().copied()
        } else {
            attrs.parent().map(tracing::span::Id::into_u64)
        };
        let mut fields = BTreeMap::new();
        attrs.record(&mut SpanFields(&mut fields));
        log.spans.push(SpanSeen {
            id,
            name: attrs.metadata().name(),
            fields,
            parent,
        });
        log.lifecycle.push(format!("new {id}"));
        tracing::span::Id::from_u64(id)
    }
    fn record(&self, id: &tracing::span::Id, values: &tracing::span::Record<'_>) {
        let mut log = self.0.lock().unwrap();
        let span = &mut log.spans[id.into_u64() as usize - 1];
        values.record(&mut SpanFields(&mut span.fields));
    }
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, _: &tracing::Event<'_>) {}
    fn enter(&self, id: &tracing::span::Id) {
        self.0.lock().unwrap().stack.push(id.into_u64());
    }
    fn exit(&self, id: &tracing::span::Id) {
        let mut log = self.0.lock().unwrap();
        let top = log.stack.pop();
        assert_eq!(
            top,
            Some(id.into_u64()),
            "spans exit in the order they were entered"
        );
    }
    fn try_close(&self, id: tracing::span::Id) -> bool {
        self.0
            .lock()
            .unwrap()
            .lifecycle
            .push(format!("close {}", id.into_u64()));
        true
    }
}

/// Wraps a service so that its `call` and the first poll of its future
/// each make a span (`test.call`, `test.poll`): children of whatever span
/// is entered at that moment.
fn spanning<S, Req>(
    inner: S,
) -> impl tower::Service<Req, Response = S::Response, Error = S::Error> + Clone
where
    S: tower::Service<Req> + Clone + 'static,
    Req: 'static,
{
    tower::service_fn(move |req: Req| {
        let _call = tracing::info_span!("test.call");
        let mut inner = inner.clone();
        async move {
            let _poll = tracing::info_span!("test.poll");
            inner.ready().await?.call(req).await
        }
    })
}

/// The attempt spans of a retry named "web" that made two attempts, each
/// the parent of what the inner service did in `call` and when polled.
fn assert_two_http_attempts(spans: &Spans) {
    let attempts = spans.named("palisade.attempt");
    assert_eq!(attempts.len(), 2, "{attempts:#?}");
    assert_eq!(
        attempts[0].fields,
        BTreeMap::from([("palisade.layer.name".into(), "web".into())]),
        "the first send has no resend count"
    );
    assert_eq!(
        attempts[1].fields,
        BTreeMap::from([
            ("palisade.layer.name".into(), "web".into()),
            ("http.request.resend_count".into(), "1".into()),
        ])
    );
    for (kind, children) in [
        ("call", spans.named("test.call")),
        ("poll", spans.named("test.poll")),
    ] {
        let parents: Vec<_> = children.iter().map(|c| c.parent).collect();
        assert_eq!(
            parents,
            [Some(attempts[0].id), Some(attempts[1].id)],
            "each attempt's {kind} runs in its span"
        );
    }
    // An attempt's span ends with the attempt, before the next begins.
    let lifecycle = spans.lifecycle();
    let closed = lifecycle
        .iter()
        .position(|l| *l == format!("close {}", attempts[0].id));
    let opened = lifecycle
        .iter()
        .position(|l| *l == format!("new {}", attempts[1].id));
    assert!(closed.is_some() && closed < opened, "{lifecycle:?}");
}

fn http_retry<K>(requests: K) -> RetryLayer<HttpClassifier, Backoff, K> {
    RetryLayer::builder()
        .name("web")
        .classifier(HttpClassifier::new())
        .requests(requests)
        .max_attempts(3)
        .attempt_spans(true)
        .backoff(
            Backoff::constant(Duration::from_millis(10))
                .jitter(Jitter::None)
                .build()
                .unwrap(),
        )
        .no_budget()
        .build()
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn each_reqwest_attempt_runs_in_a_span_with_the_resend_count() {
    let spans = Spans::default();
    let _guard = tracing::subscriber::set_default(spans.clone());
    let server = Server::start(vec![Reply::status(503)], Reply::status(200)).await;
    let svc = http_retry(ReqwestRequests).layer(spanning(reqwest::Client::new()));
    let req = reqwest::Request::new(reqwest::Method::GET, server.url("/").parse().unwrap());
    let res = svc.oneshot(req).await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(server.seen().len(), 2);
    assert_two_http_attempts(&spans);
}

#[tokio::test(start_paused = true)]
async fn each_replayed_http_request_attempt_runs_in_a_span_with_the_resend_count() {
    let spans = Spans::default();
    let _guard = tracing::subscriber::set_default(spans.clone());
    let server = Server::start(vec![Reply::status(503)], Reply::status(200)).await;
    let mut connector = HttpConnector::new();
    // Under paused time, Nagle's delay would hold a small write back.
    connector.set_nodelay(true);
    let client: Client<_, ReplayBody<Full<Bytes>>> =
        Client::builder(TokioExecutor::new()).build(connector);
    let svc = http_retry(ReplayBodies::default()).layer(spanning(client));
    let req = http::Request::put(server.url("/item"))
        .body(Full::new(Bytes::from_static(b"body")))
        .unwrap();
    let res = svc.oneshot(req).await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(server.seen().len(), 2);
    assert_two_http_attempts(&spans);
}

#[tokio::test(start_paused = true)]
async fn attempts_of_other_requests_carry_their_number() {
    let spans = Spans::default();
    let _guard = tracing::subscriber::set_default(spans.clone());
    let retry = RetryLayer::builder()
        .name("jobs")
        .max_attempts(3)
        .attempt_spans(true)
        .no_budget()
        .build()
        .unwrap();
    let svc = retry.layer(spanning(failing()));
    svc.oneshot(()).await.unwrap_err();
    let attempts = spans.named("palisade.attempt");
    let fields: Vec<_> = attempts.iter().map(|a| a.fields.clone()).collect();
    let expected: Vec<BTreeMap<String, String>> = (1..=3)
        .map(|n| {
            BTreeMap::from([
                ("palisade.layer.name".into(), "jobs".into()),
                ("palisade.attempt.number".into(), n.to_string()),
            ])
        })
        .collect();
    assert_eq!(fields, expected);
    let parents: Vec<_> = spans.named("test.poll").iter().map(|c| c.parent).collect();
    assert_eq!(
        parents,
        attempts.iter().map(|a| Some(a.id)).collect::<Vec<_>>()
    );
}

#[tokio::test(start_paused = true)]
async fn attempt_spans_are_off_by_default() {
    let spans = Spans::default();
    let _guard = tracing::subscriber::set_default(spans.clone());
    let retry = RetryLayer::builder()
        .max_attempts(2)
        .no_budget()
        .build()
        .unwrap();
    retry
        .layer(spanning(failing()))
        .oneshot(())
        .await
        .unwrap_err();
    assert_eq!(spans.named("test.poll").len(), 2, "the subscriber listens");
    assert!(spans.named("palisade.attempt").is_empty());
}

/// What Prometheus scrapes, through `metrics-exporter-prometheus` as
/// `examples/metrics.rs` sets it up: the names and labels of the table in
/// `palisade::event::metrics`, dots as underscores, `_total` on counters.
#[test]
fn prometheus_scrapes_the_names_of_the_table() {
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new()
        .with_recommended_naming(true)
        .build_recorder();
    let handle = recorder.handle();
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
            retry
                .layer(breaker.layer(failing()))
                .oneshot(())
                .await
                .unwrap_err();
        })
    });
    let text = handle.render();
    let lines: Vec<&str> = text.lines().collect();
    for expected in [
        "# TYPE palisade_retry_attempts_total counter",
        "palisade_retry_attempts_total{palisade_layer_name=\"r\"} 3",
        "palisade_retry_retries_total{palisade_layer_name=\"r\",palisade_retry_reason=\"failure\"} 2",
        "palisade_retry_failed_calls_total{palisade_layer_name=\"r\",palisade_retry_give_up_reason=\"not_retryable\"} 1",
        "# HELP palisade_circuit_breaker_calls_total Calls the breaker saw finish, as the classifier judged them, and calls it refused",
        "palisade_circuit_breaker_calls_total{palisade_layer_name=\"db\",palisade_circuit_breaker_outcome=\"failure\",palisade_circuit_breaker_slow=\"false\"} 2",
        "palisade_circuit_breaker_calls_total{palisade_layer_name=\"db\",palisade_circuit_breaker_outcome=\"rejected\",palisade_circuit_breaker_slow=\"false\"} 1",
        "palisade_circuit_breaker_transitions_total{palisade_layer_name=\"db\",palisade_circuit_breaker_from_state=\"closed\",palisade_circuit_breaker_to_state=\"open\"} 1",
        "# TYPE palisade_circuit_breaker_state gauge",
        "palisade_circuit_breaker_state{palisade_layer_name=\"db\",palisade_circuit_breaker_state=\"open\"} 1",
        "palisade_circuit_breaker_state{palisade_layer_name=\"db\",palisade_circuit_breaker_state=\"closed\"} 0",
    ] {
        assert!(
            lines.contains(&expected),
            "missing {expected:?} in:\n{text}"
        );
    }
}

/// A keyed layer's own events, traced: what happened, with the layer's
/// name and the key count (and why an instance went); an instance's
/// events are traced inside a `palisade.keyed` span naming the key.
#[tokio::test(start_paused = true)]
async fn keyed_events_become_tracing_events() {
    use palisade::keyed::{KeyedLayer, WhenFull};
    let capture = Capture::default();
    let _guard = tracing::subscriber::set_default(capture.clone());
    let keyed = |policy| {
        KeyedLayer::builder(CircuitBreakerLayer::builder().build().unwrap())
            .name("k")
            .key(|n: &u32| *n)
            .max_keys(1)
            .when_full(policy)
            .on_event(TracingEvents)
            .build()
            .unwrap()
    };
    let lru = keyed(WhenFull::EvictLeastRecentlyUsed);
    drop(lru.instance(&1).unwrap());
    drop(lru.instance(&2).unwrap());
    let reject = keyed(WhenFull::Reject);
    let held = reject.instance(&1).unwrap();
    reject.instance(&2).unwrap_err();
    let share = keyed(WhenFull::Share);
    let held_too = share.instance(&1).unwrap();
    share.instance(&2).unwrap();
    drop((held, held_too));
    let lines = capture.0.lock().unwrap().clone();
    for expected in [
        "TRACE palisade keyed instance created layer=\"k\" keys=1",
        "DEBUG palisade keyed instance evicted layer=\"k\" reason=\"fresh\" keys=1",
        "WARN palisade call rejected: no room for its key layer=\"k\"",
        "DEBUG palisade no room for its key: served by the shared instance layer=\"k\"",
    ] {
        assert!(
            lines.contains(&expected.to_string()),
            "{expected} in {lines:#?}"
        );
    }
}
