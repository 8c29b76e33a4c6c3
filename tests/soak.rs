//! A bounded soak: the full preset over a chaotic service, many concurrent
//! tasks on a multi-thread runtime, 100,000+ calls, a phase of total outage,
//! and a random tenth of the calls cancelled at random moments. At the end,
//! nothing is stuck, nothing leaked, and the budget held.
//!
//! Real time (a multi-thread runtime cannot pause it); every wait in it is
//! milliseconds long, and the whole run is bounded.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::SeqCst};
use std::time::Duration;

use palisade::Resilience;
use palisade::backoff::{Backoff, Jitter};
use palisade::bulkhead::BulkheadEvent;
use palisade::bulkhead::BulkheadLayer;
use palisade::chaos::ChaosLayer;
use palisade::circuit_breaker::BreakerEvent;
use palisade::circuit_breaker::{CircuitBreakerLayer, CircuitState};
use palisade::classify::{Outcome, classify_fn};
use palisade::error::{BoxError, ErrorKind};
use palisade::event::Event;
use palisade::fallback::{Failed, FallbackLayer, from_sync_fn};
use palisade::retry::RetryEvent;
use palisade::retry::{RetryBudget, RetryLayer};
use palisade::timeout::TimeoutEvent;
use palisade::timeout::TimeoutLayer;
use rand::rngs::Xoshiro256PlusPlus;
use rand::{RngExt, SeedableRng};
use tower::{Layer, Service, ServiceExt, service_fn};

/// Counts the bytes allocated and not yet freed, across all threads.
struct LiveBytes;

static LIVE: AtomicI64 = AtomicI64::new(0);

unsafe impl GlobalAlloc for LiveBytes {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as i64, SeqCst);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as i64, SeqCst);
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOC: LiveBytes = LiveBytes;

const TASKS: u64 = 32;
const CALLS_PER_TASK: u64 = 3200;
const TOTAL: u64 = TASKS * CALLS_PER_TASK;
const TTL: Duration = Duration::from_secs(1);
const MIN_PER_SEC: u32 = 20;
const PERCENT: f64 = 0.2;

#[derive(Default)]
struct Counts {
    ok: AtomicU64,
    err: AtomicU64,
    cancelled: AtomicU64,
    requests: AtomicU64,
    retries: AtomicU64,
    served: AtomicU64,
    /// What the breaker saw finish.
    breaker_success: AtomicU64,
    breaker_failure: AtomicU64,
    breaker_ignored: AtomicU64,
    /// What the layers below it produced: answers and errors of the
    /// (chaotic) service, bulkhead rejections, attempt timeouts.
    below_ok: AtomicU64,
    below_err: AtomicU64,
    bulkhead_rejected: AtomicU64,
    attempt_timeouts: AtomicU64,
}

#[test]
fn soak_under_faults_outage_and_cancellation() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let counts = Arc::new(Counts::default());

    let served = counts.clone();
    let backend = service_fn(move |n: u64| {
        served.served.fetch_add(1, SeqCst);
        async move { Ok::<_, BoxError>(n) }
    });
    let chaos = ChaosLayer::<u64, u64>::builder()
        .error_rate(0.2)
        .latency(0.05, Duration::from_millis(20))
        .seed(2026)
        .build()
        .unwrap();
    let chaos_handle = chaos.handle();
    let seen = counts.clone();
    let breaker = CircuitBreakerLayer::builder()
        .on_event(move |e: &Event<'_>| {
            if let Some(BreakerEvent::CallFinished { outcome, .. }) = e.kind() {
                match outcome {
                    Outcome::Success => seen.breaker_success.fetch_add(1, SeqCst),
                    Outcome::Failure => seen.breaker_failure.fetch_add(1, SeqCst),
                    Outcome::Ignored => seen.breaker_ignored.fetch_add(1, SeqCst),
                };
            }
        })
        // A full bulkhead below says nothing of the service's health.
        .classifier(classify_fn(|r: &Result<u64, BoxError>| match r {
            Ok(_) => Outcome::Success,
            Err(e) if ErrorKind::of(e) == ErrorKind::BulkheadFull => Outcome::Ignored,
            Err(_) => Outcome::Failure,
        }))
        .count_window(50)
        .minimum_calls(20)
        .failure_rate_threshold(0.6)
        .wait_duration(Duration::from_millis(50))
        .half_open_calls(3)
        .build()
        .unwrap();
    let breaker_handle = breaker.handle();
    let seen = counts.clone();
    let bulkhead = BulkheadLayer::builder()
        .on_event(move |e: &Event<'_>| {
            if let Some(BulkheadEvent::Rejected { .. }) = e.kind() {
                seen.bulkhead_rejected.fetch_add(1, SeqCst);
            }
        })
        // Small enough that 32 tasks fill it: the soak must see rejections.
        .max_concurrent(16)
        .max_queue(8)
        .max_wait(Duration::from_millis(2))
        .build()
        .unwrap();
    let bulkhead_handle = bulkhead.handle();
    let tally = counts.clone();
    let retry = RetryLayer::builder()
        .max_attempts(3)
        .backoff(
            Backoff::exponential(Duration::from_millis(1))
                .max_delay(Duration::from_millis(5))
                .jitter(Jitter::Full)
                .build()
                .unwrap(),
        )
        .budget(RetryBudget::new(TTL, MIN_PER_SEC, PERCENT).unwrap())
        .on_event(move |e: &Event<'_>| match e.kind() {
            Some(RetryEvent::Attempt { attempt: 1 }) => {
                tally.requests.fetch_add(1, SeqCst);
            }
            Some(RetryEvent::Retry { .. }) => {
                tally.retries.fetch_add(1, SeqCst);
            }
            _ => {}
        })
        .build()
        .unwrap();
    let stack = Resilience::builder()
        .fallback_slot(
            FallbackLayer::builder(from_sync_fn(|_: Failed<u64, u64>| Ok(u64::MAX)))
                .only_on([ErrorKind::CircuitOpen])
                .build()
                .unwrap(),
        )
        .total_timeout_slot(TimeoutLayer::new(Duration::from_millis(200)).unwrap())
        .repeat_slot(retry)
        .circuit_breaker_slot(breaker)
        .concurrency_slot(bulkhead)
        .attempt_timeout_slot({
            let seen = counts.clone();
            TimeoutLayer::builder()
                .timeout(Duration::from_millis(10))
                .on_event(move |e: &Event<'_>| {
                    if let Some(TimeoutEvent::TimedOut { .. }) = e.kind() {
                        seen.attempt_timeouts.fetch_add(1, SeqCst);
                    }
                })
                .build()
                .unwrap()
        })
        .build()
        .unwrap();
    // Counts what the chaotic service produced, as its futures finish.
    let below = counts.clone();
    let counted = tower::ServiceBuilder::new()
        .map_future(move |fut| {
            let below = below.clone();
            async move {
                let result: Result<u64, BoxError> = fut.await;
                match &result {
                    Ok(_) => below.below_ok.fetch_add(1, SeqCst),
                    Err(_) => below.below_err.fetch_add(1, SeqCst),
                };
                result
            }
        })
        .service(chaos.layer(backend));
    let svc = stack.layer(counted);

    let live_before = LIVE.load(SeqCst);
    let started = std::time::Instant::now();
    rt.block_on(async {
        let done = Arc::new(AtomicU64::new(0));
        // The outage: from a third of the calls to a half, everything fails.
        let phases = {
            let done = done.clone();
            let chaos = chaos_handle.clone();
            tokio::spawn(async move {
                while done.load(SeqCst) < TOTAL / 3 {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                chaos.set_error_rate(1.0);
                while done.load(SeqCst) < TOTAL / 2 {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                chaos.set_error_rate(0.2);
            })
        };
        let tasks: Vec<_> = (0..TASKS)
            .map(|t| {
                let svc = svc.clone();
                let counts = counts.clone();
                let done = done.clone();
                tokio::spawn(async move {
                    let mut rng = Xoshiro256PlusPlus::seed_from_u64(t);
                    for n in 0..CALLS_PER_TASK {
                        let mut svc = svc.clone();
                        let call = async move { svc.ready().await?.call(n).await };
                        if rng.random_range(0..10) == 0 {
                            // Cancelled at a random moment, maybe before its
                            // first poll, maybe mid-flight, maybe never.
                            let after = Duration::from_micros(rng.random_range(0..5000));
                            match tokio::time::timeout(after, call).await {
                                Ok(Ok(_)) => counts.ok.fetch_add(1, SeqCst),
                                Ok(Err(_)) => counts.err.fetch_add(1, SeqCst),
                                Err(_) => counts.cancelled.fetch_add(1, SeqCst),
                            };
                        } else {
                            match call.await {
                                Ok(u64::MAX) => {
                                    counts.ok.fetch_add(1, SeqCst);
                                    // The fallback answered for an open
                                    // breaker: a client pauses, rather than
                                    // spend the whole soak in one open wait.
                                    tokio::time::sleep(Duration::from_millis(1)).await;
                                }
                                Ok(_) => {
                                    counts.ok.fetch_add(1, SeqCst);
                                }
                                Err(_) => {
                                    counts.err.fetch_add(1, SeqCst);
                                }
                            };
                        }
                        done.fetch_add(1, SeqCst);
                    }
                })
            })
            .collect();
        let all = async {
            for task in tasks {
                task.await.unwrap();
            }
        };
        tokio::time::timeout(Duration::from_secs(50), all)
            .await
            .expect("the soak must finish: a call is stuck");
        phases.await.unwrap();

        // Every call was answered or cancelled, once.
        let (ok, err, cancelled) = (
            counts.ok.load(SeqCst),
            counts.err.load(SeqCst),
            counts.cancelled.load(SeqCst),
        );
        assert_eq!(ok + err + cancelled, TOTAL);
        assert!(
            cancelled > 0 && ok > TOTAL / 2,
            "ok {ok}, err {err}, cancelled {cancelled}"
        );

        // Nothing holds a bulkhead place any more.
        assert_eq!(
            (bulkhead_handle.in_flight(), bulkhead_handle.queued()),
            (0, 0)
        );

        // No probe permit was lost: with the faults gone, the breaker closes.
        chaos_handle.disable();
        let mut probe = svc.clone();
        for _ in 0..200 {
            if breaker_handle.state() == CircuitState::Closed {
                break;
            }
            let _ = probe.ready().await.unwrap().call(0).await;
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(
            breaker_handle.state(),
            CircuitState::Closed,
            "{:?}",
            breaker_handle.metrics()
        );
    });
    let elapsed = started.elapsed();

    // The breaker counted exactly the outcomes produced below it: every
    // success is an answer of the service, every failure an error of the
    // service or an attempt timeout, every ignored call a bulkhead
    // rejection (calls cancelled in flight count nowhere, on either side).
    let below_failures = counts.below_err.load(SeqCst) + counts.attempt_timeouts.load(SeqCst);
    assert_eq!(
        counts.breaker_success.load(SeqCst),
        counts.below_ok.load(SeqCst)
    );
    assert_eq!(counts.breaker_failure.load(SeqCst), below_failures);
    assert_eq!(
        counts.breaker_ignored.load(SeqCst),
        counts.bulkhead_rejected.load(SeqCst)
    );
    assert!(
        counts.bulkhead_rejected.load(SeqCst) > 0,
        "the soak must fill the bulkhead"
    );

    // The budget never let more retries through than its formula allows:
    // per TTL window, PERCENT of the requests plus MIN_PER_SEC × TTL.
    let requests = counts.requests.load(SeqCst) as f64;
    let retries = counts.retries.load(SeqCst) as f64;
    let windows = (elapsed.as_secs_f64() / TTL.as_secs_f64()).ceil() + 1.0;
    let allowed = PERCENT * requests + f64::from(MIN_PER_SEC) * TTL.as_secs_f64() * windows;
    assert!(retries > 0.0);
    assert!(
        retries <= allowed,
        "{retries} retries over {requests} requests; allowed {allowed}"
    );

    // Memory is flat: what the run allocated, it freed (bar the runtime's
    // and the layers' own steady state).
    drop(svc);
    drop(rt);
    let growth = LIVE.load(SeqCst) - live_before;
    assert!(
        growth < 1 << 20,
        "{growth} bytes still allocated after the run"
    );
    println!(
        "soak: {TOTAL} calls in {elapsed:?}; {} reached the service; {} retries over {} requests; \
         {} bulkhead rejections, {} attempt timeouts",
        counts.served.load(SeqCst),
        retries,
        requests,
        counts.bulkhead_rejected.load(SeqCst),
        counts.attempt_timeouts.load(SeqCst),
    );
}
