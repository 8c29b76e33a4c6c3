//! The preset stack over a scripted failing service: attempts, retries,
//! rejections and fallbacks in the order they must come.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use palisade::Resilience;
use palisade::backoff::{Backoff, Jitter};
use palisade::bulkhead::BulkheadLayer;
use palisade::circuit_breaker::BreakerEvent;
use palisade::circuit_breaker::{CircuitBreakerLayer, CircuitState};
use palisade::error::{BoxError, ErrorKind};
use palisade::event::Event;
use palisade::fallback::{Failed, FallbackLayer, from_sync_fn};
use palisade::retry::RetryLayer;
use palisade::timeout::TimeoutLayer;
use tokio::time::advance;
use tower::{Layer, ServiceExt, service_fn};

#[tokio::test(start_paused = true)]
async fn preset_sequence_of_attempts_rejections_and_fallbacks() {
    let log = Arc::new(Mutex::new(Vec::<String>::new()));
    let listener = |log: &Arc<Mutex<Vec<String>>>| {
        let log = log.clone();
        move |e: &Event<'_>| {
            if !matches!(e.kind(), Some(BreakerEvent::CallFinished { .. })) {
                log.lock().unwrap().push(e.to_string());
            }
        }
    };
    let healthy = Arc::new(AtomicBool::new(false));
    let calls = Arc::new(AtomicUsize::new(0));
    let backend = {
        let healthy = healthy.clone();
        let calls = calls.clone();
        service_fn(move |_: ()| {
            calls.fetch_add(1, SeqCst);
            let healthy = healthy.load(SeqCst);
            async move {
                if healthy {
                    Ok("fresh")
                } else {
                    Err::<&str, BoxError>("down".into())
                }
            }
        })
    };
    let breaker = CircuitBreakerLayer::builder()
        .name("cb")
        .count_window(4)
        .minimum_calls(4)
        .wait_duration(Duration::from_secs(10))
        .half_open_calls(1)
        .on_event(listener(&log))
        .build()
        .unwrap();
    let handle = breaker.handle();
    let stack = Resilience::builder()
        .fallback_slot(
            FallbackLayer::builder(from_sync_fn(|_: Failed<(), &str>| Ok("stale")))
                .name("fb")
                .on_event(listener(&log))
                .build()
                .unwrap(),
        )
        .total_timeout_slot(TimeoutLayer::new(Duration::from_secs(5)).unwrap())
        .repeat_slot(
            RetryLayer::builder()
                .name("r")
                .max_attempts(3)
                .backoff(
                    Backoff::constant(Duration::from_millis(100))
                        .jitter(Jitter::None)
                        .build()
                        .unwrap(),
                )
                .no_budget()
                .on_event(listener(&log))
                .build()
                .unwrap(),
        )
        .circuit_breaker_slot(breaker)
        .concurrency_slot(BulkheadLayer::builder().max_concurrent(2).build().unwrap())
        .attempt_timeout_slot(TimeoutLayer::new(Duration::from_secs(1)).unwrap())
        .build()
        .unwrap();
    let svc = stack.layer(backend);

    let mut answers = Vec::new();
    for call in 1..=3 {
        log.lock().unwrap().push(format!("-- call {call}"));
        answers.push(svc.clone().oneshot(()).await.unwrap());
    }
    advance(Duration::from_secs(10)).await;
    healthy.store(true, SeqCst);
    log.lock().unwrap().push("-- call 4".into());
    answers.push(svc.clone().oneshot(()).await.unwrap());

    assert_eq!(answers, ["stale", "stale", "stale", "fresh"]);
    assert_eq!(
        calls.load(SeqCst),
        3 + 1 + 1,
        "no call reached the service while open"
    );
    assert_eq!(handle.state(), CircuitState::Closed);
    let log = log.lock().unwrap().clone();
    assert_eq!(
        log,
        [
            "-- call 1",
            "retry `r`: attempt 1",
            "retry `r`: attempt 1 failed; retrying in 100ms",
            "retry `r`: attempt 2",
            "retry `r`: attempt 2 failed; retrying in 100ms",
            "retry `r`: attempt 3",
            "retry `r`: gave up after 3 attempt(s): no attempts left",
            "fallback `fb`: answered a failure (Inner)",
            "-- call 2",
            "retry `r`: attempt 1",
            "circuit `cb`: failure rate 100.0% reached threshold 50.0%",
            "circuit `cb`: Closed -> Open (failure rate reached its threshold)",
            "retry `r`: attempt 1 failed; retrying in 100ms",
            // The breaker decides in poll_ready, before the attempt is sent.
            "circuit `cb`: call rejected, retry in 9.9s",
            "retry `r`: attempt 2",
            "retry `r`: gave up after 2 attempt(s): this rejection is not retried",
            "fallback `fb`: answered a failure (CircuitOpen)",
            "-- call 3",
            "circuit `cb`: call rejected, retry in 9.9s",
            "retry `r`: attempt 1",
            "retry `r`: gave up after 1 attempt(s): this rejection is not retried",
            "fallback `fb`: answered a failure (CircuitOpen)",
            "-- call 4",
            "circuit `cb`: Open -> HalfOpen (open wait elapsed)",
            "retry `r`: attempt 1",
            "circuit `cb`: HalfOpen -> Closed (probes succeeded)",
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn a_hung_attempt_is_cut_off_retried_and_bounded_in_total() {
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = calls.clone();
    let hung = service_fn(move |_: ()| {
        counted.fetch_add(1, SeqCst);
        async {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            Ok::<_, BoxError>("never")
        }
    });
    let stack = Resilience::builder()
        .total_timeout_slot(TimeoutLayer::new(Duration::from_millis(2500)).unwrap())
        .repeat_slot(
            RetryLayer::builder()
                .max_attempts(10)
                .backoff(
                    Backoff::constant(Duration::from_millis(100))
                        .jitter(Jitter::None)
                        .build()
                        .unwrap(),
                )
                .no_budget()
                .build()
                .unwrap(),
        )
        .attempt_timeout_slot(TimeoutLayer::new(Duration::from_secs(1)).unwrap())
        .build()
        .unwrap();
    let start = tokio::time::Instant::now();
    let err = stack.layer(hung).oneshot(()).await.unwrap_err();
    assert_eq!(ErrorKind::of(&err), ErrorKind::Elapsed);
    assert_eq!(
        start.elapsed(),
        Duration::from_millis(2500),
        "the total timeout wins"
    );
    // Attempts at 0, 1.1 s and 2.2 s; the third is cut off by the total.
    assert_eq!(calls.load(SeqCst), 3);
}

#[tokio::test(start_paused = true)]
async fn an_empty_preset_is_the_service_itself() {
    let svc = Resilience::builder()
        .build()
        .unwrap()
        .layer(service_fn(|x: u32| async move {
            Ok::<_, std::io::Error>(x + 1)
        }));
    assert_eq!(svc.oneshot(1).await.unwrap(), 2);
}
