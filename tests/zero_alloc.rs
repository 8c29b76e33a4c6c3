//! The happy path of each layer allocates nothing per call.

#[path = "support/counting_alloc.rs"]
mod counting_alloc;

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll};
use std::time::Duration;

use counting_alloc::{CountingAlloc, allocations_during};
use palisade::bulkhead::BulkheadLayer;
use palisade::error::BoxError;
use palisade::retry::RetryLayer;
use palisade::timeout::TimeoutLayer;
use tower::{Layer, Service, service_fn};

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

/// Polls a future that must be ready at once.
fn now<F: Future>(f: F) -> F::Output {
    let mut cx = Context::from_waker(std::task::Waker::noop());
    match pin!(f).poll(&mut cx) {
        Poll::Ready(out) => out,
        Poll::Pending => panic!("not ready at once"),
    }
}

type Ready = std::future::Ready<Result<u64, BoxError>>;

/// The bare service: answers at once; `Clone` (and `Copy`), as the retry
/// needs.
fn bare() -> tower::util::ServiceFn<fn(u64) -> Ready> {
    service_fn((|n| std::future::ready(Ok(n))) as fn(u64) -> Ready)
}

/// Drives 10,000 calls through `svc` (after a warm-up) and counts the
/// allocations.
fn allocations_per_10k<S>(mut svc: S) -> u64
where
    S: Service<u64, Response = u64>,
    S::Error: std::fmt::Debug,
{
    let mut cx = Context::from_waker(std::task::Waker::noop());
    for n in 0..10 {
        assert!(svc.poll_ready(&mut cx).is_ready());
        now(svc.call(n)).unwrap();
    }
    let (allocs, sum) = allocations_during(|| {
        let mut sum = 0;
        for n in 0..10_000 {
            assert!(svc.poll_ready(&mut cx).is_ready());
            sum += now(svc.call(n)).unwrap();
        }
        sum
    });
    assert_eq!(sum, (0..10_000).sum::<u64>());
    allocs
}

#[test]
fn closed_breaker() {
    let layer = palisade::circuit_breaker::CircuitBreakerLayer::builder()
        .build()
        .unwrap();
    assert_eq!(allocations_per_10k(layer.layer(bare())), 0);
    assert_eq!(
        layer.handle().metrics().calls,
        100,
        "the window recorded the calls"
    );
}

#[test]
fn free_bulkhead() {
    let layer = BulkheadLayer::builder()
        .max_concurrent(10)
        .max_queue(10)
        .build()
        .unwrap();
    assert_eq!(allocations_per_10k(layer.layer(bare())), 0);
    assert_eq!(layer.handle().in_flight(), 0);
}

#[test]
fn rate_limiter_with_room() {
    // A rate no test run reaches: every call conforms, and is decided by
    // a clock read and a compare-and-swap.
    let layer = palisade::rate_limit::RateLimitLayer::builder()
        .rate(1_000_000_000, Duration::from_secs(1))
        .burst(100_000)
        .build()
        .unwrap();
    assert_eq!(allocations_per_10k(layer.layer(bare())), 0);
}

#[test]
fn adaptive_limit_with_room() {
    // Vegas learning from every call (windows of one sample), and from
    // windows: neither allocates.
    for layer in [
        palisade::adaptive::AdaptiveLimitLayer::builder()
            .per_sample()
            .build()
            .unwrap(),
        palisade::adaptive::AdaptiveLimitLayer::builder()
            .window(Duration::ZERO, Duration::from_nanos(1))
            .min_samples(3)
            .build()
            .unwrap(),
    ] {
        assert_eq!(allocations_per_10k(layer.layer(bare())), 0);
        assert_eq!(layer.handle().in_flight(), 0);
    }
}

#[test]
fn throttle_of_a_healthy_service() {
    let layer = palisade::adaptive::ThrottleLayer::builder()
        .build()
        .unwrap();
    assert_eq!(allocations_per_10k(layer.layer(bare())), 0);
    let handle = layer.handle();
    assert_eq!((handle.requests(), handle.accepts()), (10_010, 10_010));
}

/// A keyed layer's call whose key has an instance: the lookup, the
/// instance's `Arc` and the call through it allocate nothing (the warm-up
/// makes the eight instances).
#[test]
fn keyed_breakers_with_known_keys() {
    let keyed = palisade::keyed::KeyedLayer::builder(
        palisade::circuit_breaker::CircuitBreakerLayer::builder()
            .build()
            .unwrap(),
    )
    .key(|n: &u64| *n % 8)
    .build()
    .unwrap();
    assert_eq!(allocations_per_10k(keyed.layer(bare())), 0);
    assert_eq!(keyed.handle().len(), 8);
}

/// The built-in key sources find the instance by a borrowed key: a call
/// with a known host builds no owned key.
#[test]
fn keyed_limiters_by_host_and_port() {
    let keyed = palisade::keyed::KeyedLayer::builder(
        palisade::rate_limit::RateLimitLayer::builder()
            .rate(1_000_000_000, Duration::from_secs(1))
            .burst(100_000)
            .build()
            .unwrap(),
    )
    .key_source(palisade::keyed::HostAndPort)
    .build()
    .unwrap();
    let mut svc = keyed.layer(service_fn(|req: http::Request<()>| {
        std::future::ready(Ok::<_, BoxError>(req.uri().port_u16()))
    }));
    let requests: Vec<http::Request<()>> = (0..10_010)
        .map(|n| {
            let uri = format!("http://Host-{}.example:{}/", n % 4, 8000 + n % 4);
            http::Request::get(uri).body(()).unwrap()
        })
        .collect();
    let mut requests = requests.into_iter();
    let mut cx = Context::from_waker(std::task::Waker::noop());
    for req in requests.by_ref().take(10) {
        assert!(svc.poll_ready(&mut cx).is_ready());
        now(svc.call(req)).unwrap();
    }
    let (allocs, ()) = allocations_during(|| {
        for req in requests {
            assert!(svc.poll_ready(&mut cx).is_ready());
            now(svc.call(req)).unwrap();
        }
    });
    assert_eq!(allocs, 0);
    assert_eq!(
        keyed.handle().len(),
        4,
        "one per host and port, whatever the case"
    );
}

#[test]
fn retry_whose_first_attempt_succeeds() {
    // Over enough calls that the budget flushes its deposits (every 64th).
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let _guard = rt.enter();
    let layer = RetryLayer::builder().build().unwrap();
    assert_eq!(allocations_per_10k(layer.layer(bare())), 0);
}

/// A hedge whose first attempt answers at its first poll: no timer, no
/// boxed attempt; with the percentile delay too (its latency recorded in
/// the histogram's counters).
#[test]
fn hedge_whose_first_attempt_answers_at_once() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let _guard = rt.enter();
    let layer = palisade::hedge::HedgeLayer::builder()
        .max_attempts(5)
        .build()
        .unwrap();
    assert_eq!(allocations_per_10k(layer.layer(bare())), 0);
    let layer = palisade::hedge::HedgeLayer::builder()
        .delay_percentile(99.0, 10, Duration::from_secs(10))
        .build()
        .unwrap();
    assert_eq!(allocations_per_10k(layer.layer(bare())), 0);
}

/// Attempt spans on, and no subscriber: `tracing` hands back disabled
/// spans without allocating.
#[cfg(feature = "tracing")]
#[test]
fn retry_with_attempt_spans_and_no_subscriber() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let _guard = rt.enter();
    let layer = RetryLayer::builder().attempt_spans(true).build().unwrap();
    assert_eq!(allocations_per_10k(layer.layer(bare())), 0);
}

#[test]
fn full_preset_with_every_part_on() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let _guard = rt.enter();
    let stack = palisade::Resilience::builder()
        .fallback_slot(
            palisade::fallback::FallbackLayer::builder(palisade::fallback::from_sync_fn(
                |_: palisade::fallback::Failed<u64, u64>| Ok(0),
            ))
            .build()
            .unwrap(),
        )
        .total_timeout_slot(TimeoutLayer::new(Duration::from_secs(5)).unwrap())
        .repeat_slot(RetryLayer::builder().build().unwrap())
        .circuit_breaker_slot(
            palisade::circuit_breaker::CircuitBreakerLayer::builder()
                .build()
                .unwrap(),
        )
        .concurrency_slot(BulkheadLayer::builder().build().unwrap())
        .attempt_timeout_slot(TimeoutLayer::new(Duration::from_secs(1)).unwrap())
        .build()
        .unwrap();
    assert_eq!(allocations_per_10k(stack.layer(bare())), 0);
}

/// A stack from a configuration document: the same parts in slots chosen
/// at run time, and a reload check in each `poll_ready`. Between two
/// reloads, a call allocates nothing; the first call after one rebuilds
/// the service's stack (which clones `Arc`s, and allocates nothing
/// either).
#[test]
fn stack_from_a_document_with_every_kind_of_slot() {
    use palisade::config::{Config, Document};
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let _guard = rt.enter();
    let text = r#"
        [instances.all]
        total_timeout = "5s"
        retry = {}
        circuit_breaker = {}
        rate_limit = { rate = 1000000, per = "1s" }
        bulkhead = { max_concurrent = 10 }
        attempt_timeout = "1s"
        [instances.others]
        hedge = { delay = "1s" }
        throttle = {}
        adaptive_limit = {}
    "#;
    let config = Config::new(toml::from_str::<Document>(text).unwrap()).unwrap();
    let all = config.stack("all").unwrap().layer(bare());
    assert_eq!(allocations_per_10k(all), 0);
    let others = config.stack("others").unwrap().layer(bare());
    assert_eq!(allocations_per_10k(others), 0);
    let empty = Config::new(toml::from_str::<Document>("[instances.none]").unwrap()).unwrap();
    assert_eq!(
        allocations_per_10k(empty.stack("none").unwrap().layer(bare())),
        0
    );

    // The first call after a reload rebuilds its service's stack.
    let mut svc = config.stack("all").unwrap().layer(bare());
    assert_eq!(allocations_per_10k(&mut svc), 0);
    config
        .reload(toml::from_str::<Document>(&text.replace("\"5s\"", "\"6s\"")).unwrap())
        .unwrap();
    let mut cx = Context::from_waker(std::task::Waker::noop());
    let (allocs, answer) = allocations_during(|| {
        assert!(svc.poll_ready(&mut cx).is_ready());
        now(svc.call(7)).unwrap()
    });
    assert_eq!((allocs, answer), (0, 7));
}

#[test]
fn timeout_with_a_ready_inner_future() {
    // Inside a runtime: the timeout reads tokio's clock.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let _guard = rt.enter();
    let layer = TimeoutLayer::new(Duration::from_secs(1)).unwrap();
    assert_eq!(allocations_per_10k(layer.layer(bare())), 0);
}

/// A `metrics` recorder whose counters and gauges are atomics, registered
/// once; it allocates nothing to record.
#[cfg(feature = "metrics")]
mod recorder {
    use std::collections::HashMap;
    use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
    use std::sync::{Arc, Mutex};

    use metrics::{Counter, CounterFn, Gauge, GaugeFn, Histogram, Key, KeyName, Metadata};
    use metrics::{Recorder, SharedString, Unit};

    #[derive(Default)]
    pub struct Atomics(Mutex<HashMap<String, Arc<Value>>>);

    #[derive(Default)]
    pub struct Value(AtomicU64);

    impl CounterFn for Value {
        fn increment(&self, n: u64) {
            self.0.fetch_add(n, Relaxed);
        }
        fn absolute(&self, n: u64) {
            self.0.store(n, Relaxed);
        }
    }

    impl GaugeFn for Value {
        fn increment(&self, _: f64) {}
        fn decrement(&self, _: f64) {}
        fn set(&self, v: f64) {
            self.0.store(v as u64, Relaxed);
        }
    }

    impl Atomics {
        fn slot(&self, key: &Key) -> Arc<Value> {
            let mut labels: Vec<_> = key
                .labels()
                .map(|l| format!("{}={}", l.key(), l.value()))
                .collect();
            labels.sort();
            let name = format!("{}{{{}}}", key.name(), labels.join(","));
            self.0.lock().unwrap().entry(name).or_default().clone()
        }

        pub fn get(&self, name: &str) -> u64 {
            self.0
                .lock()
                .unwrap()
                .get(name)
                .map_or(0, |v| v.0.load(Relaxed))
        }
    }

    impl Recorder for Atomics {
        fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
            Counter::from_arc(self.slot(key))
        }
        fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
            Gauge::from_arc(self.slot(key))
        }
        fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> Histogram {
            Histogram::noop()
        }
    }
}

/// With `MetricsEvents` listening, each event is recorded without an
/// allocation: the counters are registered once, and the layer label
/// shares the layer's name.
#[cfg(feature = "metrics")]
#[test]
fn metrics_events_allocate_nothing_per_event() {
    use palisade::event::MetricsEvents;

    let recorder = recorder::Atomics::default();
    metrics::with_local_recorder(&recorder, || {
        let breaker = palisade::circuit_breaker::CircuitBreakerLayer::builder()
            .name("db")
            .on_event(MetricsEvents::new())
            .build()
            .unwrap();
        let retry = RetryLayer::builder()
            .name("r")
            .on_event(MetricsEvents::new())
            .build()
            .unwrap();
        let bulkhead = BulkheadLayer::builder()
            .name("pool")
            .on_event(MetricsEvents::new())
            .build()
            .unwrap();
        let svc = retry.layer(breaker.layer(bulkhead.layer(bare())));
        assert_eq!(allocations_per_10k(svc), 0);
    });
    // 10 warm-up calls and 10,000 measured, each one attempt and one call
    // finished, each taking and giving back a bulkhead permit.
    assert_eq!(
        recorder.get("palisade.retry.attempts{palisade.layer.name=r}"),
        10_010
    );
    assert_eq!(
        recorder.get("palisade.circuit_breaker.calls{palisade.circuit_breaker.outcome=success,palisade.circuit_breaker.slow=false,palisade.layer.name=db}"),
        10_010
    );
    assert_eq!(
        recorder.get("palisade.bulkhead.active_calls{palisade.layer.name=pool}"),
        0
    );
}

/// Copies an `http::Request` with an empty body, allocating nothing (its
/// header map and extensions are empty): the replay of the next test.
#[derive(Clone, Copy)]
struct FreshRequests;

type EmptyRequest = http::Request<http_body_util::Empty<bytes::Bytes>>;

impl palisade::retry::Replay<EmptyRequest> for FreshRequests {
    type Request = EmptyRequest;
    type Source = FreshRequests;

    fn first(&self, req: EmptyRequest, _retryable: bool) -> (EmptyRequest, Option<FreshRequests>) {
        (req, Some(FreshRequests))
    }
}

impl palisade::retry::ReplaySource for FreshRequests {
    type Request = EmptyRequest;

    fn again(&mut self) -> Option<EmptyRequest> {
        Some(http::Request::new(http_body_util::Empty::new()))
    }
}

/// Allocations of 1,000 calls (after a warm-up of 10), each response's
/// body read to its end.
fn allocations_of_1000_calls<S, B>(svc: &mut S) -> u64
where
    S: Service<EmptyRequest, Response = http::Response<B>>,
    S::Error: std::fmt::Debug,
    B: http_body::Body + Unpin,
    B::Error: std::fmt::Debug,
{
    for _ in 0..10 {
        call_and_read(svc);
    }
    allocations_during(|| {
        for _ in 0..1000 {
            call_and_read(svc);
        }
    })
    .0
}

/// One call, its response body read to the end.
fn call_and_read<S, B>(svc: &mut S)
where
    S: Service<EmptyRequest, Response = http::Response<B>>,
    S::Error: std::fmt::Debug,
    B: http_body::Body + Unpin,
    B::Error: std::fmt::Debug,
{
    use http_body_util::BodyExt;
    let mut cx = Context::from_waker(std::task::Waker::noop());
    assert!(svc.poll_ready(&mut cx).is_ready());
    let response = now(svc.call(http::Request::new(http_body_util::Empty::new()))).unwrap();
    let mut body = response.into_body();
    assert!(now(body.frame()).is_none(), "an empty body");
}

/// A stack from a document with gRPC's classifier joins its parts' bodies
/// (`JoinedBodies`: the breaker's and the adaptive limit's bodies wait for
/// the trailers) and allocates nothing per call, the body read to its end
/// included.
#[test]
fn grpc_stack_from_a_document_joins_bodies_without_allocating() {
    use palisade::classify::GrpcClassifier;
    use palisade::config::{Config, Document, JoinedBodies};
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let _guard = rt.enter();
    let text = r#"
        [instances.all]
        total_timeout = "5s"
        retry = {}
        circuit_breaker = {}
        rate_limit = { rate = 1000000, per = "1s" }
        adaptive_limit = {}
        attempt_timeout = "1s"
        [instances.others]
        hedge = { delay = "1s" }
        throttle = {}
        bulkhead = { max_concurrent = 10 }
    "#;
    let config = Config::new(toml::from_str::<Document>(text).unwrap()).unwrap();
    // A trailers-only OK: the status in the head. Making its header map
    // allocates in the server itself, which the stack must not add to.
    let server = service_fn(|_: EmptyRequest| {
        std::future::ready(
            http::Response::builder()
                .header("grpc-status", "0")
                .body(http_body_util::Empty::<bytes::Bytes>::new())
                .map_err(BoxError::from),
        )
    });
    let mut bare = server;
    let server_alone = allocations_of_1000_calls(&mut bare);
    assert!(server_alone > 0, "the server's own header maps");
    for name in ["all", "others"] {
        let mut svc = config
            .stack_with(name, GrpcClassifier::new(), FreshRequests)
            .unwrap()
            .shaped::<JoinedBodies>()
            .layer(server);
        assert_eq!(
            allocations_of_1000_calls(&mut svc),
            server_alone,
            "{name}: the stack adds no allocation"
        );
    }
}
