//! The "ground floor" APIs (issue 13 in the changelog), tested against what
//! their public documentation promises, the way a new user reads it:
//! `error::ErrorKinds` with `only_on` / `retry_on`, `classify::{Classify,
//! ClassifyRequest}`, `BulkheadHandle::set_max_concurrent`, events by kind,
//! the `Resilience` preset's slots, and `palisade::replay`.
//!
//! Every test runs on tokio's paused clock: no wall-clock sleep, no network.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use palisade::backoff::{Backoff, Jitter};
use palisade::bulkhead::{BulkheadEvent, BulkheadLayer, MAX_BULKHEAD_PERMITS};
use palisade::circuit_breaker::{
    BreakerEvent, CircuitBreakerLayer, CircuitState, TransitionReason,
};
use palisade::classify::{
    Classify, ClassifyRequest, DefaultClassifier, DelayHint, GrpcClassifier, GrpcCode,
    HttpClassifier, JudgesAtHead, Outcome, classify_fn,
};
use palisade::error::{BoxError, ErrorKind, ErrorKinds};
use palisade::event::{Event, EventKind, Listener, Measure};
use palisade::fallback::{Failed, FallbackEvent, FallbackLayer, from_fn, from_sync_fn};
use palisade::preset::{Resilience, ServiceBuilderExt};
use palisade::replay::{ByClone, Cloned, DEFAULT_REPLAY_LIMIT, Replay, ReplayBodies, ReplaySource};
use palisade::retry::{GiveUpReason, RetryEvent, RetryLayer, RetryReason};
use palisade::timeout::{TimeoutEvent, TimeoutLayer};
use std::collections::{HashSet, VecDeque};
use std::fmt;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::oneshot;
use tokio::time::Instant;
use tower::util::{BoxCloneService, MapRequestLayer};
use tower::{Layer, Service, ServiceBuilder, ServiceExt, service_fn};

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// A backoff without randomness: every delay is exactly `n` ms.
fn fixed(n: u64) -> Backoff {
    Backoff::constant(ms(n))
        .jitter(Jitter::None)
        .build()
        .unwrap()
}

/// Lets spawned tasks run until they park (the runtime is current-thread).
async fn settle() {
    for _ in 0..20 {
        tokio::task::yield_now().await;
    }
}

type Seen<K> = Arc<Mutex<Vec<K>>>;

/// A listener that keeps every event of kind `K`.
fn kinds<K: EventKind + Clone>() -> (Seen<K>, impl Fn(&Event<'_>) + Send + Sync + 'static) {
    let seen: Seen<K> = Arc::default();
    let keep = seen.clone();
    (seen, move |e: &Event<'_>| {
        if let Some(k) = e.kind::<K>() {
            keep.lock().unwrap().push(k.clone());
        }
    })
}

/// A listener that keeps, for every event of kind `K`: the layer's name, the
/// kind, the kind's own text and the event's text.
#[allow(clippy::type_complexity)]
fn texts<K: EventKind + Clone + fmt::Display>() -> (
    Seen<(String, K, String, String)>,
    impl Fn(&Event<'_>) + Send + Sync + 'static,
) {
    let seen: Seen<(String, K, String, String)> = Arc::default();
    let keep = seen.clone();
    (seen, move |e: &Event<'_>| {
        if let Some(k) = e.kind::<K>() {
            keep.lock().unwrap().push((
                e.name().to_string(),
                k.clone(),
                k.to_string(),
                e.to_string(),
            ));
        }
    })
}

/// What a scripted service does on one call.
#[derive(Clone, Copy, Debug)]
enum Step {
    /// Answers with this code.
    Code(u16),
    /// Fails with this text.
    Fail(&'static str),
}

/// A service that plays `steps` in order (then answers 200), counting calls.
fn scripted<Req: Send + 'static>(
    steps: &[Step],
) -> (BoxCloneService<Req, u16, BoxError>, Arc<AtomicU32>) {
    let queue = Arc::new(Mutex::new(steps.iter().copied().collect::<VecDeque<_>>()));
    let calls = Arc::new(AtomicU32::new(0));
    let counter = calls.clone();
    let svc = service_fn(move |_: Req| {
        counter.fetch_add(1, Ordering::SeqCst);
        let step = queue.lock().unwrap().pop_front().unwrap_or(Step::Code(200));
        async move {
            match step {
                Step::Code(c) => Ok(c),
                Step::Fail(t) => Err::<u16, BoxError>(t.into()),
            }
        }
    });
    (BoxCloneService::new(svc), calls)
}

/// A service that sleeps the requested number of ms, counting calls.
fn sleeper() -> (BoxCloneService<u64, u64, BoxError>, Arc<AtomicU32>) {
    let calls = Arc::new(AtomicU32::new(0));
    let counter = calls.clone();
    let svc = service_fn(move |wait: u64| {
        counter.fetch_add(1, Ordering::SeqCst);
        async move {
            tokio::time::sleep(ms(wait)).await;
            Ok::<_, BoxError>(wait)
        }
    });
    (BoxCloneService::new(svc), calls)
}

/// A service whose call finishes when the caller sends on the request's
/// channel; it counts the calls that reached it.
fn gated() -> (
    impl Service<oneshot::Receiver<u32>, Response = u32, Error = BoxError, Future: Send>
    + Clone
    + Send
    + 'static,
    Arc<AtomicU32>,
) {
    let started = Arc::new(AtomicU32::new(0));
    let counter = started.clone();
    let svc = service_fn(move |rx: oneshot::Receiver<u32>| {
        counter.fetch_add(1, Ordering::SeqCst);
        async move { rx.await.map_err(|e| -> BoxError { e.into() }) }
    });
    (svc, started)
}

/// A custom classifier over `u16` answers, for requests that are `"GET"` or
/// `"POST"`: 5xx fail, 4xx count neither way, 501 is not worth a retry, 503
/// hints 250 ms, 529 hints an hour, 530 says "do not retry", and an error
/// reading "refused" never left the client.
#[derive(Clone, Copy, Debug)]
struct Picky;

impl Classify<u16, BoxError> for Picky {
    fn classify(&self, result: &Result<u16, BoxError>) -> Outcome {
        match result {
            Ok(c) if *c >= 500 => Outcome::Failure,
            Ok(c) if *c >= 400 => Outcome::Ignored,
            Ok(_) => Outcome::Success,
            Err(_) => Outcome::Failure,
        }
    }
    fn is_retryable_failure(&self, result: &Result<u16, BoxError>) -> bool {
        !matches!(result, Ok(501))
    }
    fn delay_hint(&self, result: &Result<u16, BoxError>) -> Option<DelayHint> {
        match result {
            Ok(503) => Some(DelayHint::After(ms(250))),
            Ok(529) => Some(DelayHint::After(Duration::from_secs(3600))),
            Ok(530) => Some(DelayHint::DoNotRetry),
            _ => None,
        }
    }
    fn is_not_sent(&self, result: &Result<u16, BoxError>) -> bool {
        matches!(result, Err(e) if e.to_string() == "refused")
    }
}

impl JudgesAtHead for Picky {}

impl ClassifyRequest<&'static str> for Picky {
    fn is_retryable(&self, req: &&'static str) -> bool {
        *req != "POST"
    }
}

// ---------------------------------------------------------------------------
// 1. ErrorKinds, and how only_on / retry_on use it
// ---------------------------------------------------------------------------

#[test]
fn error_kinds_is_a_set_of_kinds() {
    use ErrorKind::*;
    let kinds = ErrorKinds::from([CircuitOpen, BulkheadFull]);
    assert!(kinds.contains(CircuitOpen));
    assert!(kinds.contains(BulkheadFull));
    assert!(!kinds.contains(Elapsed));
    assert!(!kinds.contains(Inner));
    assert!(!kinds.is_empty());

    // with / without, and their idempotence.
    assert!(kinds.with(Elapsed).contains(Elapsed));
    assert_eq!(kinds.with(CircuitOpen), kinds);
    assert_eq!(kinds.without(Elapsed), kinds);
    assert_eq!(kinds.without(CircuitOpen), ErrorKinds::from(BulkheadFull));
    assert_eq!(
        kinds.without(CircuitOpen).without(BulkheadFull),
        ErrorKinds::NONE
    );
    // `kinds` is Copy: it is still usable after being passed by value.
    assert!(kinds.contains(CircuitOpen));

    // NONE.
    assert!(ErrorKinds::NONE.is_empty());
    assert_eq!(ErrorKinds::NONE.iter().count(), 0);
    assert_eq!(ErrorKinds::from([] as [ErrorKind; 0]), ErrorKinds::NONE);

    // iter gives exactly the members, once each.
    let members: HashSet<ErrorKind> = kinds.iter().collect();
    assert_eq!(members, HashSet::from([CircuitOpen, BulkheadFull]));
    assert_eq!(
        ErrorKinds::from([Elapsed, Elapsed, Elapsed]).iter().count(),
        1
    );
    let all = ErrorKinds::from([CircuitOpen, BulkheadFull, Elapsed, Inner]);
    assert_eq!(all.iter().count(), 4);

    // From<ErrorKind>, FromIterator, and const construction.
    assert_eq!(ErrorKinds::from(Elapsed), ErrorKinds::NONE.with(Elapsed));
    let collected: ErrorKinds = [BulkheadFull, CircuitOpen].into_iter().collect();
    assert_eq!(collected, kinds);
    const ONLY_TIMEOUTS: ErrorKinds = ErrorKinds::NONE.with(ErrorKind::Elapsed);
    assert!(ONLY_TIMEOUTS.contains(Elapsed));
    assert!(!ONLY_TIMEOUTS.contains(Inner));
}

#[tokio::test(start_paused = true)]
async fn error_kind_of_tells_real_rejections_apart() {
    // CircuitOpen from a breaker forced open.
    let breaker = CircuitBreakerLayer::builder().name("cb").build().unwrap();
    breaker.handle().force_open();
    let (inner, calls) = scripted::<u32>(&[]);
    let err = breaker.layer(inner).oneshot(1).await.unwrap_err();
    assert_eq!(ErrorKind::of(&err), ErrorKind::CircuitOpen);
    assert_eq!(
        calls.load(Ordering::SeqCst),
        0,
        "an open breaker does not call"
    );
    let open = err.downcast_ref::<palisade::error::CircuitOpen>().unwrap();
    assert_eq!(open.name(), "cb");
    assert_eq!(
        open.retry_after(),
        Duration::MAX,
        "forced open: Duration::MAX"
    );

    // BulkheadFull from a full bulkhead.
    let bulkhead = BulkheadLayer::builder().max_concurrent(1).build().unwrap();
    let (inner, _) = sleeper();
    let svc = bulkhead.layer(inner);
    let holder = tokio::spawn(svc.clone().oneshot(1_000));
    settle().await;
    let err = svc.clone().oneshot(1).await.unwrap_err();
    assert_eq!(ErrorKind::of(&err), ErrorKind::BulkheadFull);
    assert_eq!(holder.await.unwrap().unwrap(), 1_000);

    // Elapsed from a timeout.
    let (inner, _) = sleeper();
    let err = TimeoutLayer::new(ms(10))
        .unwrap()
        .layer(inner)
        .oneshot(1_000)
        .await
        .unwrap_err();
    assert_eq!(ErrorKind::of(&err), ErrorKind::Elapsed);

    // The inner service's own error.
    let err: BoxError = "boom".into();
    assert_eq!(ErrorKind::of(&err), ErrorKind::Inner);

    assert!(ErrorKind::CircuitOpen.is_rejection());
    assert!(ErrorKind::BulkheadFull.is_rejection());
    assert!(ErrorKind::Elapsed.is_rejection());
    assert!(!ErrorKind::Inner.is_rejection());
}

#[test]
fn retry_on_refuses_inner() {
    for bad in [
        ErrorKinds::from(ErrorKind::Inner),
        ErrorKinds::from([ErrorKind::Elapsed, ErrorKind::Inner]),
        ErrorKinds::from([ErrorKind::CircuitOpen, ErrorKind::Inner]),
    ] {
        let err = RetryLayer::builder().retry_on(bad).build().unwrap_err();
        assert_eq!(err.parameter(), "retry_on", "{err}");
    }
    // Every rejection kind, an array, a single kind and the empty set are fine.
    assert!(
        RetryLayer::builder()
            .retry_on([
                ErrorKind::Elapsed,
                ErrorKind::CircuitOpen,
                ErrorKind::BulkheadFull
            ])
            .build()
            .is_ok()
    );
    assert!(
        RetryLayer::builder()
            .retry_on(ErrorKind::BulkheadFull)
            .build()
            .is_ok()
    );
    assert!(
        RetryLayer::builder()
            .retry_on(ErrorKinds::NONE)
            .build()
            .is_ok()
    );
}

#[test]
fn only_on_refuses_an_empty_set() {
    let handler = from_sync_fn(|_: Failed<u32, u32>| Ok::<_, BoxError>(0));
    let err = FallbackLayer::builder(handler)
        .only_on(ErrorKinds::NONE)
        .build()
        .unwrap_err();
    assert_eq!(err.parameter(), "only_on", "{err}");
    let err = FallbackLayer::builder(handler)
        .only_on([] as [ErrorKind; 0])
        .build()
        .unwrap_err();
    assert_eq!(err.parameter(), "only_on", "{err}");
    // Not calling only_on at all is the default, and fine.
    assert!(FallbackLayer::builder(handler).build().is_ok());
    assert!(
        FallbackLayer::builder(handler)
            .only_on(ErrorKind::Inner)
            .build()
            .is_ok()
    );
}

#[tokio::test(start_paused = true)]
async fn retry_by_default_retries_elapsed_from_a_timeout_below() {
    // The first attempt hangs and is cut off by the per-attempt timeout; the
    // second answers.
    let calls = Arc::new(AtomicU32::new(0));
    let counter = calls.clone();
    let inner = service_fn(move |_: ()| {
        let n = counter.fetch_add(1, Ordering::SeqCst);
        async move {
            if n == 0 {
                tokio::time::sleep(Duration::from_secs(60)).await;
            }
            Ok::<_, BoxError>(n)
        }
    });
    let (events, listener) = kinds::<RetryEvent>();
    let retry = RetryLayer::builder()
        .backoff(fixed(10))
        .on_event(listener)
        .build()
        .unwrap();
    let svc = ServiceBuilder::new()
        .layer(retry)
        .layer(TimeoutLayer::new(ms(100)).unwrap())
        .service(inner);

    let start = Instant::now();
    assert_eq!(svc.oneshot(()).await.unwrap(), 1);
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    assert_eq!(start.elapsed(), ms(110));
    assert!(events.lock().unwrap().contains(&RetryEvent::Retry {
        attempt: 1,
        delay: ms(10),
        reason: RetryReason::Timeout,
        hinted: false,
    }));
}

#[tokio::test(start_paused = true)]
async fn retry_on_none_returns_elapsed_at_once() {
    let (inner, calls) = sleeper();
    let retry = RetryLayer::builder()
        .backoff(fixed(10))
        .retry_on(ErrorKinds::NONE)
        .build()
        .unwrap();
    let svc = ServiceBuilder::new()
        .layer(retry)
        .layer(TimeoutLayer::new(ms(100)).unwrap())
        .service(inner);
    let start = Instant::now();
    let err = svc.oneshot(60_000).await.unwrap_err();
    assert_eq!(ErrorKind::of(&err), ErrorKind::Elapsed);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(start.elapsed(), ms(100));
}

#[tokio::test(start_paused = true)]
async fn retry_by_default_returns_bulkhead_full_at_once() {
    let (inner, calls) = sleeper();
    let bulkhead = BulkheadLayer::builder().max_concurrent(1).build().unwrap();
    let guarded = bulkhead.layer(inner);
    let holder = tokio::spawn(guarded.clone().oneshot(10_000));
    settle().await;

    let (events, listener) = kinds::<RetryEvent>();
    let retry = RetryLayer::builder()
        .backoff(fixed(10))
        .on_event(listener)
        .build()
        .unwrap();
    let start = Instant::now();
    let err = retry.layer(guarded).oneshot(1).await.unwrap_err();
    assert_eq!(ErrorKind::of(&err), ErrorKind::BulkheadFull);
    assert_eq!(start.elapsed(), Duration::ZERO, "returned at once");
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "only the holder reached the service"
    );
    assert_eq!(
        events.lock().unwrap().last(),
        Some(&RetryEvent::GaveUp {
            attempts: 1,
            reason: GiveUpReason::NotRetryable
        })
    );
    holder.abort();
}

#[tokio::test(start_paused = true)]
async fn retry_on_bulkhead_full_retries_after_the_backoff() {
    let (inner, calls) = sleeper();
    let bulkhead = BulkheadLayer::builder().max_concurrent(1).build().unwrap();
    let guarded = bulkhead.layer(inner);
    let holder = tokio::spawn(guarded.clone().oneshot(150));
    settle().await;

    let (events, listener) = kinds::<RetryEvent>();
    let retry = RetryLayer::builder()
        .backoff(fixed(100))
        .retry_on([ErrorKind::Elapsed, ErrorKind::BulkheadFull])
        .on_event(listener)
        .build()
        .unwrap();
    let start = Instant::now();
    // Refused at 0 ms and at 100 ms; the holder leaves at 150 ms; admitted at 200 ms.
    assert_eq!(retry.layer(guarded).oneshot(1).await.unwrap(), 1);
    assert_eq!(start.elapsed(), ms(201));
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    let retries: Vec<_> = events
        .lock()
        .unwrap()
        .iter()
        .filter(|e| matches!(e, RetryEvent::Retry { .. }))
        .copied()
        .collect();
    assert_eq!(
        retries,
        [
            RetryEvent::Retry {
                attempt: 1,
                delay: ms(100),
                reason: RetryReason::BulkheadFull,
                hinted: false
            },
            RetryEvent::Retry {
                attempt: 2,
                delay: ms(100),
                reason: RetryReason::BulkheadFull,
                hinted: false
            },
        ]
    );
    assert_eq!(holder.await.unwrap().unwrap(), 150);
}

/// A breaker that opens after one failure, for 1 s, with one probe.
fn touchy_breaker() -> palisade::circuit_breaker::CircuitBreakerLayer {
    CircuitBreakerLayer::builder()
        .name("touchy")
        .count_window(1)
        .minimum_calls(1)
        .wait_duration(Duration::from_secs(1))
        .half_open_calls(1)
        .build()
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn retry_by_default_returns_circuit_open_at_once() {
    let breaker = touchy_breaker();
    let (inner, calls) = scripted::<u32>(&[Step::Fail("down")]);
    let (events, listener) = kinds::<RetryEvent>();
    let retry = RetryLayer::builder()
        .backoff(fixed(10))
        .on_event(listener)
        .build()
        .unwrap();
    let svc = retry.layer(breaker.layer(inner));

    let start = Instant::now();
    let err = svc.oneshot(1).await.unwrap_err();
    // Attempt 1 failed (and opened the breaker); attempt 2 was refused.
    assert_eq!(ErrorKind::of(&err), ErrorKind::CircuitOpen);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(start.elapsed(), ms(10));
    assert_eq!(
        events.lock().unwrap().last(),
        Some(&RetryEvent::GaveUp {
            attempts: 2,
            reason: GiveUpReason::NotRetryable
        })
    );
}

#[tokio::test(start_paused = true)]
async fn retry_on_circuit_open_waits_for_the_breakers_retry_after() {
    let breaker = touchy_breaker();
    let (inner, calls) = scripted::<u32>(&[Step::Fail("down")]);
    let (events, listener) = kinds::<RetryEvent>();
    let retry = RetryLayer::builder()
        .backoff(fixed(10))
        .retry_on([ErrorKind::Elapsed, ErrorKind::CircuitOpen])
        .on_event(listener)
        .build()
        .unwrap();
    let svc = retry.layer(breaker.layer(inner));

    let start = Instant::now();
    // 0 ms: fails, breaker opens for 1 s. 10 ms: refused, retry_after 990 ms,
    // longer than the backoff: wait it. 1000 ms: the probe answers.
    assert_eq!(svc.oneshot(1).await.unwrap(), 200);
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    assert_eq!(start.elapsed(), Duration::from_secs(1));
    let events = events.lock().unwrap();
    assert!(events.contains(&RetryEvent::Retry {
        attempt: 1,
        delay: ms(10),
        reason: RetryReason::Failure,
        hinted: false
    }));
    assert!(
        events.iter().any(|e| matches!(
            e,
            RetryEvent::Retry { attempt: 2, reason: RetryReason::CircuitOpen, delay, .. }
                if *delay == ms(990)
        )),
        "{events:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn retry_on_circuit_open_gives_up_on_a_breaker_held_open_by_hand() {
    let breaker = touchy_breaker();
    breaker.handle().force_open();
    let (inner, calls) = scripted::<u32>(&[]);
    let (events, listener) = kinds::<RetryEvent>();
    let retry = RetryLayer::builder()
        .backoff(fixed(10))
        .retry_on(ErrorKind::CircuitOpen)
        .on_event(listener)
        .build()
        .unwrap();
    let start = Instant::now();
    let err = retry
        .layer(breaker.layer(inner))
        .oneshot(1)
        .await
        .unwrap_err();
    assert_eq!(ErrorKind::of(&err), ErrorKind::CircuitOpen);
    assert_eq!(start.elapsed(), Duration::ZERO);
    assert_eq!(calls.load(Ordering::SeqCst), 0);
    assert_eq!(
        events.lock().unwrap().last(),
        Some(&RetryEvent::GaveUp {
            attempts: 1,
            reason: GiveUpReason::HintAboveCap
        })
    );
}

#[tokio::test(start_paused = true)]
async fn refusals_are_retried_whatever_the_request_but_elapsed_is_not() {
    // "A refusal never reached the server, so it is retried whatever the
    // request"; "Elapsed: the attempt may have reached the server, so a
    // request that may not be sent twice is not retried."
    let bulkhead = BulkheadLayer::builder().max_concurrent(1).build().unwrap();
    let (holder_svc, _) = sleeper();
    let holder = tokio::spawn(bulkhead.layer(holder_svc).oneshot(50));
    settle().await;

    let (inner, calls) = scripted::<&'static str>(&[]);
    let retry = RetryLayer::builder()
        .classifier(Picky)
        .backoff(fixed(100))
        .retry_on([ErrorKind::Elapsed, ErrorKind::BulkheadFull])
        .build()
        .unwrap();
    let svc = retry.clone().layer(bulkhead.layer(inner));
    assert_eq!(
        svc.oneshot("POST").await.unwrap(),
        200,
        "a refused POST is retried"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    holder.await.unwrap().unwrap();

    // A POST cut off by a timeout below is not retried; a GET is.
    let hang_first = |calls: Arc<AtomicU32>| {
        service_fn(move |_: &'static str| {
            let n = calls.fetch_add(1, Ordering::SeqCst);
            async move {
                if n == 0 {
                    tokio::time::sleep(Duration::from_secs(60)).await;
                }
                Ok::<u16, BoxError>(200)
            }
        })
    };
    let post_calls = Arc::new(AtomicU32::new(0));
    let svc = retry.clone().layer(
        TimeoutLayer::new(ms(100))
            .unwrap()
            .layer(hang_first(post_calls.clone())),
    );
    let err = svc.oneshot("POST").await.unwrap_err();
    assert_eq!(ErrorKind::of(&err), ErrorKind::Elapsed);
    assert_eq!(post_calls.load(Ordering::SeqCst), 1);

    let get_calls = Arc::new(AtomicU32::new(0));
    let svc = retry.layer(
        TimeoutLayer::new(ms(100))
            .unwrap()
            .layer(hang_first(get_calls.clone())),
    );
    assert_eq!(svc.oneshot("GET").await.unwrap(), 200);
    assert_eq!(get_calls.load(Ordering::SeqCst), 2);
}

#[tokio::test(start_paused = true)]
async fn fallback_by_default_answers_every_error() {
    let (events, listener) = kinds::<FallbackEvent>();
    let fallback = FallbackLayer::builder(from_sync_fn(|failed: Failed<u32, u16>| {
        assert_eq!(failed.error_kind(), Some(ErrorKind::Inner));
        assert!(failed.request.is_none(), "requests are not kept by default");
        assert_eq!(failed.outcome.as_ref().unwrap_err().to_string(), "down");
        Ok::<_, BoxError>(999)
    }))
    .on_event(listener)
    .build()
    .unwrap();
    let (inner, _) = scripted::<u32>(&[Step::Fail("down"), Step::Code(200)]);
    let svc = fallback.layer(inner);
    assert_eq!(svc.clone().oneshot(1).await.unwrap(), 999);
    assert_eq!(svc.oneshot(1).await.unwrap(), 200);
    assert_eq!(
        *events.lock().unwrap(),
        [FallbackEvent::FellBack {
            kind: Some(ErrorKind::Inner)
        }]
    );
}

#[tokio::test(start_paused = true)]
async fn fallback_only_on_circuit_open_lets_other_errors_through() {
    let breaker = touchy_breaker();
    let handle = breaker.handle();
    let (events, listener) = kinds::<FallbackEvent>();
    let fallback = FallbackLayer::builder(from_sync_fn(|failed: Failed<u32, u16>| {
        assert_eq!(failed.error_kind(), Some(ErrorKind::CircuitOpen));
        Ok::<_, BoxError>(999)
    }))
    .only_on(ErrorKind::CircuitOpen)
    .on_event(listener)
    .build()
    .unwrap();
    let (inner, calls) = scripted::<u32>(&[Step::Fail("down")]);
    let svc = fallback.layer(breaker.layer(inner));

    // The inner error passes through, unchanged.
    let err = svc.clone().oneshot(1).await.unwrap_err();
    assert_eq!(ErrorKind::of(&err), ErrorKind::Inner);
    assert_eq!(err.to_string(), "down");
    assert_eq!(handle.state(), CircuitState::Open);
    // The breaker's refusal is answered.
    assert_eq!(svc.oneshot(1).await.unwrap(), 999);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(
        *events.lock().unwrap(),
        [FallbackEvent::FellBack {
            kind: Some(ErrorKind::CircuitOpen)
        }]
    );
}

#[tokio::test(start_paused = true)]
async fn fallback_only_on_elapsed_and_bulkhead_full() {
    let fallback = FallbackLayer::builder(from_fn(|failed: Failed<u64, u64>| async move {
        Ok::<_, BoxError>(match failed.error_kind() {
            Some(ErrorKind::Elapsed) => 1,
            Some(ErrorKind::BulkheadFull) => 2,
            _ => 3,
        })
    }))
    .only_on([ErrorKind::Elapsed, ErrorKind::BulkheadFull])
    .build()
    .unwrap();
    let bulkhead = BulkheadLayer::builder().max_concurrent(1).build().unwrap();
    let (inner, _) = sleeper();
    let svc = ServiceBuilder::new()
        .layer(fallback)
        .layer(bulkhead)
        .layer(TimeoutLayer::new(ms(100)).unwrap())
        .service(inner);

    // Elapsed: answered.
    assert_eq!(svc.clone().oneshot(1_000).await.unwrap(), 1);
    // BulkheadFull: answered.
    let holder = tokio::spawn(svc.clone().oneshot(50));
    settle().await;
    assert_eq!(svc.clone().oneshot(1).await.unwrap(), 2);
    assert_eq!(holder.await.unwrap().unwrap(), 50);
    // A success passes.
    assert_eq!(svc.oneshot(7).await.unwrap(), 7);
}

#[tokio::test(start_paused = true)]
async fn fallback_only_on_does_not_answer_failed_responses() {
    // "Falls back only on errors of these kinds ...: other failures pass
    // through": a response that the classifier calls a failure is not an
    // error of any kind.
    let classifier = classify_fn(|r: &Result<u16, BoxError>| match r {
        Ok(c) if *c >= 500 => Outcome::Failure,
        Ok(_) => Outcome::Success,
        Err(_) => Outcome::Failure,
    });
    let handler = from_sync_fn(|_: Failed<u32, u16>| Ok::<_, BoxError>(999));
    let (inner, _) = scripted::<u32>(&[Step::Code(503), Step::Fail("x")]);
    let only_inner = FallbackLayer::builder(handler)
        .classifier(classifier)
        .only_on(ErrorKind::Inner)
        .build()
        .unwrap();
    let svc = only_inner.layer(inner);
    assert_eq!(svc.clone().oneshot(1).await.unwrap(), 503);
    assert_eq!(
        svc.oneshot(1).await.unwrap(),
        999,
        "an inner error is answered"
    );

    // Without only_on, the failed response is answered, and the handler sees it.
    let (events, listener) = kinds::<FallbackEvent>();
    let any = FallbackLayer::builder(from_sync_fn(|failed: Failed<u32, u16>| {
        assert_eq!(failed.error_kind(), None);
        assert_eq!(*failed.outcome.as_ref().unwrap(), 503);
        Ok::<_, BoxError>(999)
    }))
    .classifier(classifier)
    .on_event(listener)
    .build()
    .unwrap();
    let (inner, _) = scripted::<u32>(&[Step::Code(503), Step::Code(404)]);
    let svc = any.layer(inner);
    assert_eq!(svc.clone().oneshot(1).await.unwrap(), 999);
    assert_eq!(svc.oneshot(1).await.unwrap(), 404);
    assert_eq!(
        *events.lock().unwrap(),
        [FallbackEvent::FellBack { kind: None }]
    );
}

// ---------------------------------------------------------------------------
// 2. Classify and ClassifyRequest
// ---------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn a_custom_classifier_drives_the_circuit_breaker() {
    let (events, listener) = kinds::<BreakerEvent>();
    let breaker = CircuitBreakerLayer::builder()
        .classifier(Picky)
        .count_window(10)
        .minimum_calls(4)
        .failure_rate_threshold(0.5)
        .on_event(listener)
        .build()
        .unwrap();
    let handle = breaker.handle();
    let inner = service_fn(|code: u16| async move {
        if code == 0 {
            Err::<u16, BoxError>("boom".into())
        } else {
            Ok(code)
        }
    });
    let svc = breaker.layer(inner);

    // Ignored answers count neither way.
    for _ in 0..6 {
        assert_eq!(svc.clone().oneshot(404).await.unwrap(), 404);
    }
    assert_eq!(handle.metrics().calls, 0);
    assert_eq!(handle.state(), CircuitState::Closed);

    assert_eq!(svc.clone().oneshot(200).await.unwrap(), 200);
    assert_eq!(
        svc.clone().oneshot(500).await.unwrap(),
        500,
        "the response passes unchanged"
    );
    let err = svc.clone().oneshot(0).await.unwrap_err();
    assert_eq!(err.to_string(), "boom");
    let m = handle.metrics();
    assert_eq!((m.calls, m.failures), (3, 2));
    assert_eq!(handle.state(), CircuitState::Closed, "below minimum_calls");

    assert_eq!(svc.clone().oneshot(503).await.unwrap(), 503);
    assert_eq!(handle.state(), CircuitState::Open);
    let err = svc.oneshot(200).await.unwrap_err();
    assert_eq!(ErrorKind::of(&err), ErrorKind::CircuitOpen);

    let finished: Vec<Outcome> = events
        .lock()
        .unwrap()
        .iter()
        .filter_map(|e| match e {
            BreakerEvent::CallFinished { outcome, .. } => Some(*outcome),
            _ => None,
        })
        .collect();
    use Outcome::*;
    assert_eq!(
        finished,
        [
            Ignored, Ignored, Ignored, Ignored, Ignored, Ignored, Success, Failure, Failure,
            Failure
        ]
    );
    assert!(
        events
            .lock()
            .unwrap()
            .contains(&BreakerEvent::StateTransition {
                from: CircuitState::Closed,
                to: CircuitState::Open,
                reason: TransitionReason::FailureRate,
            })
    );
}

/// Runs `method` through a retry with `Picky` over `steps`; returns the
/// answer, the calls made, the retry events and the time taken.
async fn picky_retry(
    method: &'static str,
    steps: &[Step],
) -> (Result<u16, BoxError>, u32, Vec<RetryEvent>, Duration) {
    let (inner, calls) = scripted::<&'static str>(steps);
    let (events, listener) = kinds::<RetryEvent>();
    let retry = RetryLayer::builder()
        .classifier(Picky)
        .backoff(fixed(10))
        .on_event(listener)
        .build()
        .unwrap();
    let start = Instant::now();
    let result = retry.layer(inner).oneshot(method).await;
    let events = events.lock().unwrap().clone();
    (
        result,
        calls.load(Ordering::SeqCst),
        events,
        start.elapsed(),
    )
}

#[tokio::test(start_paused = true)]
async fn a_custom_classifier_drives_the_retry() {
    use Step::*;
    // A failure is retried after the backoff.
    let (r, calls, ev, t) = picky_retry("GET", &[Code(500), Code(200)]).await;
    assert_eq!((r.unwrap(), calls, t), (200, 2, ms(10)));
    assert!(ev.contains(&RetryEvent::Retry {
        attempt: 1,
        delay: ms(10),
        reason: RetryReason::Failure,
        hinted: false
    }));

    // A request that may not be sent twice: its result is returned as is.
    let (r, calls, ev, _) = picky_retry("POST", &[Code(500), Code(200)]).await;
    assert_eq!((r.unwrap(), calls), (500, 1));
    assert_eq!(
        ev.last(),
        Some(&RetryEvent::GaveUp {
            attempts: 1,
            reason: GiveUpReason::RequestNotRetryable
        })
    );

    // A failure not worth another try.
    let (r, calls, ev, _) = picky_retry("GET", &[Code(501), Code(200)]).await;
    assert_eq!((r.unwrap(), calls), (501, 1));
    assert_eq!(
        ev.last(),
        Some(&RetryEvent::GaveUp {
            attempts: 1,
            reason: GiveUpReason::FailureNotRetryable
        })
    );

    // Ignored: "the retry does not retry it".
    let (r, calls, _, _) = picky_retry("GET", &[Code(404), Code(200)]).await;
    assert_eq!((r.unwrap(), calls), (404, 1));

    // A server hint within the cap replaces the backoff.
    let (r, calls, ev, t) = picky_retry("GET", &[Code(503), Code(200)]).await;
    assert_eq!((r.unwrap(), calls, t), (200, 2, ms(250)));
    assert!(ev.contains(&RetryEvent::Retry {
        attempt: 1,
        delay: ms(250),
        reason: RetryReason::Failure,
        hinted: true
    }));

    // A hint above the cap (30 s) ends the retries with the server's answer.
    let (r, calls, ev, t) = picky_retry("GET", &[Code(529), Code(200)]).await;
    assert_eq!((r.unwrap(), calls, t), (529, 1, Duration::ZERO));
    assert_eq!(
        ev.last(),
        Some(&RetryEvent::GaveUp {
            attempts: 1,
            reason: GiveUpReason::HintAboveCap
        })
    );

    // "Do not retry".
    let (r, calls, ev, _) = picky_retry("GET", &[Code(530), Code(200)]).await;
    assert_eq!((r.unwrap(), calls), (530, 1));
    assert_eq!(
        ev.last(),
        Some(&RetryEvent::GaveUp {
            attempts: 1,
            reason: GiveUpReason::ServerSaidNo
        })
    );

    // Never sent: retried even for a POST.
    let (r, calls, ev, _) = picky_retry("POST", &[Fail("refused"), Code(200)]).await;
    assert_eq!((r.unwrap(), calls), (200, 2));
    assert!(
        ev.iter().any(|e| matches!(
            e,
            RetryEvent::Retry {
                attempt: 1,
                reason: RetryReason::NotSent,
                ..
            }
        )),
        "{ev:?}"
    );

    // An error that may have reached the server: a POST is not retried.
    let (r, calls, _, _) = picky_retry("POST", &[Fail("reset"), Code(200)]).await;
    assert_eq!(
        (r.unwrap_err().to_string(), calls),
        ("reset".to_string(), 1)
    );

    // Every failure, up to max_attempts (3 by default).
    let (r, calls, ev, t) = picky_retry("GET", &[Code(500), Code(502), Code(504), Code(200)]).await;
    assert_eq!((r.unwrap(), calls, t), (504, 3, ms(20)));
    assert_eq!(
        ev.last(),
        Some(&RetryEvent::GaveUp {
            attempts: 3,
            reason: GiveUpReason::MaxAttempts
        })
    );
}

#[tokio::test(start_paused = true)]
async fn a_custom_classifier_drives_the_fallback() {
    let fallback = FallbackLayer::builder(from_sync_fn(|failed: Failed<u16, u16>| {
        Ok::<_, BoxError>(1_000 + *failed.outcome.as_ref().unwrap_or(&0))
    }))
    .classifier(Picky)
    .build()
    .unwrap();
    let inner = service_fn(|code: u16| async move {
        if code == 0 {
            Err::<u16, BoxError>("boom".into())
        } else {
            Ok(code)
        }
    });
    let svc = fallback.layer(inner);
    assert_eq!(svc.clone().oneshot(200).await.unwrap(), 200);
    assert_eq!(
        svc.clone().oneshot(503).await.unwrap(),
        1_503,
        "a failed response is answered"
    );
    assert_eq!(
        svc.clone().oneshot(404).await.unwrap(),
        404,
        "an ignored one is not"
    );
    assert_eq!(svc.oneshot(0).await.unwrap(), 1_000, "an error is answered");
}

#[test]
fn built_in_classifiers_say_which_requests_may_be_sent_twice() {
    use http::{Method, Request};
    let req = |m: Method| Request::builder().method(m).uri("/x").body(()).unwrap();

    let http = HttpClassifier::new();
    for m in [
        Method::GET,
        Method::HEAD,
        Method::OPTIONS,
        Method::TRACE,
        Method::PUT,
        Method::DELETE,
    ] {
        assert!(http.is_retryable(&req(m.clone())), "{m}");
        assert!(http.is_retryable_method(&m), "{m}");
    }
    let purge = Method::from_bytes(b"PURGE").unwrap();
    for m in [Method::POST, Method::PATCH, Method::CONNECT, purge.clone()] {
        assert!(!http.is_retryable(&req(m.clone())), "{m}");
        assert!(!http.is_retryable_method(&m), "{m}");
    }
    let lenient = HttpClassifier::new().retry_non_idempotent(true);
    for m in [Method::POST, Method::PATCH, purge, Method::GET] {
        assert!(lenient.is_retryable(&req(m.clone())), "{m}");
    }
    // reqwest requests follow the same rules.
    let post = reqwest::Request::new(Method::POST, "http://example.invalid/".parse().unwrap());
    let get = reqwest::Request::new(Method::GET, "http://example.invalid/".parse().unwrap());
    assert!(!http.is_retryable(&post));
    assert!(http.is_retryable(&get));
    assert!(lenient.is_retryable(&post));

    // gRPC: every call; the status decides.
    let grpc = GrpcClassifier::new();
    assert!(grpc.is_retryable(&req(Method::POST)));
    assert!(grpc.is_retryable(&7u32));
    assert!(grpc.is_retryable(&"anything"));

    // Default and closures: every request.
    assert!(DefaultClassifier.is_retryable(&req(Method::POST)));
    assert!(DefaultClassifier.is_retryable(&()));
    let c = classify_fn(|_: &Result<u8, u8>| Outcome::Success);
    assert!(c.is_retryable(&req(Method::POST)));
    assert!(ClassifyRequest::<&str>::is_retryable(&Picky, &"GET"));
    assert!(!Picky.is_retryable(&"POST"));
    // Through a reference and an Arc.
    let by_ref = &http;
    assert!(
        !<&HttpClassifier as ClassifyRequest<http::Request<()>>>::is_retryable(
            &by_ref,
            &req(Method::POST)
        )
    );
    assert!(!Arc::new(http).is_retryable(&req(Method::POST)));
}

#[test]
fn default_classifier_judges_results() {
    let ok: Result<u32, &str> = Ok(1);
    let err: Result<u32, &str> = Err("boom");
    let c = DefaultClassifier;
    assert_eq!(c.classify(&ok), Outcome::Success);
    assert_eq!(c.classify(&err), Outcome::Failure);
    assert!(c.is_retryable_failure(&err));
    assert_eq!(c.delay_hint(&err), None);
    assert!(!c.is_not_sent(&err));

    let http = HttpClassifier::new();
    let status = |s: u16| -> Result<http::Response<()>, std::io::Error> {
        Ok(http::Response::builder().status(s).body(()).unwrap())
    };
    for s in [500, 502, 503, 408, 429] {
        assert_eq!(http.classify(&status(s)), Outcome::Failure, "{s}");
    }
    for s in [200, 201, 301, 400, 404] {
        assert_eq!(http.classify(&status(s)), Outcome::Success, "{s}");
    }
    let refused: Result<http::Response<()>, BoxError> = Err(Box::new(std::io::Error::from(
        std::io::ErrorKind::ConnectionRefused,
    )));
    let reset: Result<http::Response<()>, BoxError> = Err(Box::new(std::io::Error::from(
        std::io::ErrorKind::ConnectionReset,
    )));
    assert!(http.is_not_sent(&refused));
    assert!(!http.is_not_sent(&reset));
    assert_eq!(http.classify(&refused), Outcome::Failure);
}

type HttpReq = http::Request<Full<Bytes>>;

/// An HTTP service that answers the scripted statuses (then 200), recording
/// each attempt's method and body. A status of 0 is a refused connection.
type ReplayedService = BoxCloneService<
    http::Request<palisade::replay::ReplayBody<Full<Bytes>>>,
    http::Response<()>,
    BoxError,
>;

fn http_script(statuses: &[u16]) -> (ReplayedService, Seen<(String, Bytes)>) {
    let queue = Arc::new(Mutex::new(
        statuses.iter().copied().collect::<VecDeque<_>>(),
    ));
    let seen: Seen<(String, Bytes)> = Arc::default();
    let keep = seen.clone();
    let svc = service_fn(
        move |req: http::Request<palisade::replay::ReplayBody<Full<Bytes>>>| {
            let status = queue.lock().unwrap().pop_front().unwrap_or(200);
            let keep = keep.clone();
            async move {
                let method = req.method().to_string();
                if status == 0 {
                    keep.lock().unwrap().push((method, Bytes::new()));
                    return Err::<http::Response<()>, BoxError>(Box::new(std::io::Error::from(
                        std::io::ErrorKind::ConnectionRefused,
                    )));
                }
                let body = req
                    .into_body()
                    .collect()
                    .await
                    .map_err(|e: BoxError| e)?
                    .to_bytes();
                keep.lock().unwrap().push((method, body));
                Ok(http::Response::builder().status(status).body(()).unwrap())
            }
        },
    );
    (BoxCloneService::new(svc), seen)
}

async fn http_retry(
    classifier: HttpClassifier,
    method: http::Method,
    statuses: &[u16],
) -> (Result<u16, BoxError>, Vec<(String, Bytes)>) {
    let (inner, seen) = http_script(statuses);
    let retry = RetryLayer::builder()
        .classifier(classifier)
        .requests(ReplayBodies::default())
        .backoff(fixed(10))
        .build()
        .unwrap();
    let req: HttpReq = http::Request::builder()
        .method(method)
        .uri("/orders")
        .body(Full::new(Bytes::from_static(b"payload")))
        .unwrap();
    let result = retry
        .layer(inner)
        .oneshot(req)
        .await
        .map(|r| r.status().as_u16());
    let seen = seen.lock().unwrap().clone();
    (result, seen)
}

#[tokio::test(start_paused = true)]
async fn http_classifier_with_the_retry() {
    let payload = Bytes::from_static(b"payload");
    // GET 503: retried, with the same body.
    let (r, seen) = http_retry(HttpClassifier::new(), http::Method::GET, &[503]).await;
    assert_eq!(r.unwrap(), 200);
    assert_eq!(
        seen,
        [
            ("GET".into(), payload.clone()),
            ("GET".into(), payload.clone())
        ]
    );
    // PUT 429: retried.
    let (r, seen) = http_retry(HttpClassifier::new(), http::Method::PUT, &[429]).await;
    assert_eq!((r.unwrap(), seen.len()), (200, 2));
    // POST 503: sent once, its answer returned.
    let (r, seen) = http_retry(HttpClassifier::new(), http::Method::POST, &[503]).await;
    assert_eq!((r.unwrap(), seen.len()), (503, 1));
    // GET 404: not a failure, sent once.
    let (r, seen) = http_retry(HttpClassifier::new(), http::Method::GET, &[404]).await;
    assert_eq!((r.unwrap(), seen.len()), (404, 1));
    // POST whose connection was refused: sent again, body whole.
    let (r, seen) = http_retry(HttpClassifier::new(), http::Method::POST, &[0]).await;
    assert_eq!(r.unwrap(), 200);
    assert_eq!(
        seen,
        [
            ("POST".into(), Bytes::new()),
            ("POST".into(), payload.clone())
        ]
    );
    // POST with retry_non_idempotent: retried.
    let lenient = HttpClassifier::new().retry_non_idempotent(true);
    let (r, seen) = http_retry(lenient, http::Method::POST, &[503]).await;
    assert_eq!(r.unwrap(), 200);
    assert_eq!(
        seen,
        [("POST".into(), payload.clone()), ("POST".into(), payload)]
    );
    // 501 counted as a success: not retried.
    let c = HttpClassifier::new().success_status(http::StatusCode::NOT_IMPLEMENTED);
    let (r, seen) = http_retry(c, http::Method::GET, &[501]).await;
    assert_eq!((r.unwrap(), seen.len()), (501, 1));
}

async fn grpc_retry(classifier: GrpcClassifier, codes: &[u8]) -> (String, u32, Vec<RetryEvent>) {
    let queue = Arc::new(Mutex::new(codes.iter().copied().collect::<VecDeque<_>>()));
    let calls = Arc::new(AtomicU32::new(0));
    let counter = calls.clone();
    let inner = service_fn(move |_: u32| {
        counter.fetch_add(1, Ordering::SeqCst);
        let code = queue.lock().unwrap().pop_front().unwrap_or(0);
        async move {
            Ok::<_, BoxError>(
                http::Response::builder()
                    .header("grpc-status", code.to_string())
                    .body(())
                    .unwrap(),
            )
        }
    });
    let (events, listener) = kinds::<RetryEvent>();
    let retry = RetryLayer::builder()
        .classifier(classifier)
        .backoff(fixed(10))
        .on_event(listener)
        .build()
        .unwrap();
    let res = retry.layer(inner).oneshot(1).await.unwrap();
    let status = res.headers()["grpc-status"].to_str().unwrap().to_string();
    let events = events.lock().unwrap().clone();
    (status, calls.load(Ordering::SeqCst), events)
}

#[tokio::test(start_paused = true)]
async fn grpc_classifier_with_the_retry() {
    // UNAVAILABLE: retried.
    let (status, calls, _) = grpc_retry(GrpcClassifier::new(), &[14, 0]).await;
    assert_eq!((status.as_str(), calls), ("0", 2));
    // INTERNAL: a failure, but not retried by default.
    let (status, calls, ev) = grpc_retry(GrpcClassifier::new(), &[13, 0]).await;
    assert_eq!((status.as_str(), calls), ("13", 1));
    assert_eq!(
        ev.last(),
        Some(&RetryEvent::GaveUp {
            attempts: 1,
            reason: GiveUpReason::FailureNotRetryable
        })
    );
    // ... unless listed.
    let (status, calls, _) = grpc_retry(
        GrpcClassifier::new().retryable_code(GrpcCode::Internal),
        &[13, 0],
    )
    .await;
    assert_eq!((status.as_str(), calls), ("0", 2));
    // UNAVAILABLE taken off the list.
    let (status, calls, _) = grpc_retry(
        GrpcClassifier::new().not_retryable_code(GrpcCode::Unavailable),
        &[14, 0],
    )
    .await;
    assert_eq!((status.as_str(), calls), ("14", 1));
    // NOT_FOUND: a success for the classifier; not retried.
    let (status, calls, _) = grpc_retry(GrpcClassifier::new(), &[5, 0]).await;
    assert_eq!((status.as_str(), calls), ("5", 1));
}

// ---------------------------------------------------------------------------
// 3. BulkheadHandle::set_max_concurrent
// ---------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn raising_the_limit_admits_queued_calls_at_once() {
    let layer = BulkheadLayer::builder()
        .max_concurrent(1)
        .max_queue(10)
        .build()
        .unwrap();
    let handle = layer.handle();
    let (inner, started) = gated();
    let svc = layer.layer(inner);

    let mut gates = Vec::new();
    let mut calls = Vec::new();
    for n in 0..3u32 {
        let (tx, rx) = oneshot::channel();
        gates.push((n, tx));
        calls.push(tokio::spawn(svc.clone().oneshot(rx)));
        settle().await;
    }
    assert_eq!((handle.in_flight(), handle.queued()), (1, 2));
    assert_eq!(started.load(Ordering::SeqCst), 1);

    handle.set_max_concurrent(3).unwrap();
    assert_eq!(handle.max_concurrent(), 3);
    // "at once": the queued calls hold their permits before anyone yields.
    assert_eq!((handle.in_flight(), handle.queued()), (3, 0));
    settle().await;
    assert_eq!((handle.in_flight(), handle.queued()), (3, 0));
    assert_eq!(started.load(Ordering::SeqCst), 3);

    for (n, tx) in gates {
        tx.send(n).unwrap();
    }
    for (n, call) in calls.into_iter().enumerate() {
        assert_eq!(call.await.unwrap().unwrap(), n as u32);
    }
    assert_eq!(handle.in_flight(), 0);
}

#[tokio::test(start_paused = true)]
async fn lowering_the_limit_cuts_nobody_and_admits_nobody_until_under_it() {
    let layer = BulkheadLayer::builder()
        .max_concurrent(3)
        .max_queue(10)
        .build()
        .unwrap();
    let handle = layer.handle();
    let (inner, started) = gated();
    let svc = layer.layer(inner);

    let mut gates = VecDeque::new();
    let mut calls = VecDeque::new();
    for n in 0..3u32 {
        let (tx, rx) = oneshot::channel();
        gates.push_back((n, tx));
        calls.push_back(tokio::spawn(svc.clone().oneshot(rx)));
    }
    settle().await;
    assert_eq!(handle.in_flight(), 3);

    handle.set_max_concurrent(1).unwrap();
    assert_eq!(handle.max_concurrent(), 1);
    assert_eq!(handle.in_flight(), 3, "no call in flight is cut off");

    // A newcomer waits.
    let (late_tx, late_rx) = oneshot::channel();
    let late = tokio::spawn(svc.clone().oneshot(late_rx));
    settle().await;
    assert_eq!((handle.in_flight(), handle.queued()), (3, 1));
    assert_eq!(started.load(Ordering::SeqCst), 3);

    // Two finish: 1 in flight, not under the limit of 1 yet.
    for _ in 0..2 {
        let (n, tx) = gates.pop_front().unwrap();
        tx.send(n).unwrap();
        assert_eq!(
            calls.pop_front().unwrap().await.unwrap().unwrap(),
            n,
            "finished normally"
        );
        settle().await;
    }
    assert_eq!((handle.in_flight(), handle.queued()), (1, 1));
    assert_eq!(started.load(Ordering::SeqCst), 3);

    // The third finishes: the newcomer goes in.
    let (n, tx) = gates.pop_front().unwrap();
    tx.send(n).unwrap();
    assert_eq!(calls.pop_front().unwrap().await.unwrap().unwrap(), 2);
    settle().await;
    assert_eq!((handle.in_flight(), handle.queued()), (1, 0));
    assert_eq!(started.load(Ordering::SeqCst), 4);
    late_tx.send(42).unwrap();
    assert_eq!(late.await.unwrap().unwrap(), 42);
    assert_eq!(handle.in_flight(), 0);
}

#[tokio::test(start_paused = true)]
async fn lowering_the_limit_without_a_queue_refuses_until_under_it() {
    let (events, listener) = kinds::<BulkheadEvent>();
    let layer = BulkheadLayer::builder()
        .max_concurrent(2)
        .on_event(listener)
        .build()
        .unwrap();
    let (inner, started) = gated();
    let svc = layer.layer(inner);
    let handle = svc.handle();

    let (tx_a, rx_a) = oneshot::channel();
    let (tx_b, rx_b) = oneshot::channel();
    let a = tokio::spawn(svc.clone().oneshot(rx_a));
    let b = tokio::spawn(svc.clone().oneshot(rx_b));
    settle().await;
    assert_eq!(handle.in_flight(), 2);

    handle.set_max_concurrent(1).unwrap();
    let (_tx, rx) = oneshot::channel();
    let err = svc.clone().oneshot(rx).await.unwrap_err();
    assert_eq!(ErrorKind::of(&err), ErrorKind::BulkheadFull);

    tx_a.send(1).unwrap();
    assert_eq!(a.await.unwrap().unwrap(), 1);
    assert_eq!(handle.in_flight(), 1);
    let (_tx, rx) = oneshot::channel();
    let err = svc.clone().oneshot(rx).await.unwrap_err();
    assert_eq!(
        ErrorKind::of(&err),
        ErrorKind::BulkheadFull,
        "1 in flight is not under 1"
    );

    tx_b.send(2).unwrap();
    assert_eq!(b.await.unwrap().unwrap(), 2);
    let (tx, rx) = oneshot::channel();
    tx.send(3).unwrap();
    assert_eq!(svc.oneshot(rx).await.unwrap(), 3);
    assert_eq!(started.load(Ordering::SeqCst), 3);
    let rejected = events
        .lock()
        .unwrap()
        .iter()
        .filter(|e| {
            **e == BulkheadEvent::Rejected {
                timed_out_in_queue: false,
            }
        })
        .count();
    assert_eq!(rejected, 2);
}

#[tokio::test(start_paused = true)]
async fn lowering_then_raising_the_limit_counts_the_calls_still_over_it() {
    let layer = BulkheadLayer::builder()
        .max_concurrent(3)
        .max_queue(10)
        .build()
        .unwrap();
    let handle = layer.handle();
    let (inner, started) = gated();
    let svc = layer.layer(inner);
    let mut gates = VecDeque::new();
    let mut calls = VecDeque::new();
    for n in 0..3u32 {
        let (tx, rx) = oneshot::channel();
        gates.push_back((n, tx));
        calls.push_back(tokio::spawn(svc.clone().oneshot(rx)));
    }
    settle().await;
    handle.set_max_concurrent(1).unwrap();
    handle.set_max_concurrent(2).unwrap();
    assert_eq!(handle.max_concurrent(), 2);
    let (late_tx, late_rx) = oneshot::channel();
    let late = tokio::spawn(svc.clone().oneshot(late_rx));
    settle().await;
    assert_eq!((handle.in_flight(), handle.queued()), (3, 1));

    // One finishes: 2 in flight, not under 2.
    let (n, tx) = gates.pop_front().unwrap();
    tx.send(n).unwrap();
    calls.pop_front().unwrap().await.unwrap().unwrap();
    settle().await;
    assert_eq!((handle.in_flight(), handle.queued()), (2, 1));
    assert_eq!(started.load(Ordering::SeqCst), 3);

    // Another: the newcomer goes in.
    let (n, tx) = gates.pop_front().unwrap();
    tx.send(n).unwrap();
    calls.pop_front().unwrap().await.unwrap().unwrap();
    settle().await;
    assert_eq!((handle.in_flight(), handle.queued()), (2, 0));
    assert_eq!(started.load(Ordering::SeqCst), 4);

    let (n, tx) = gates.pop_front().unwrap();
    tx.send(n).unwrap();
    late_tx.send(9).unwrap();
    assert_eq!(calls.pop_front().unwrap().await.unwrap().unwrap(), 2);
    assert_eq!(late.await.unwrap().unwrap(), 9);
    assert_eq!(handle.in_flight(), 0);
}

#[tokio::test(start_paused = true)]
async fn invalid_limits_are_refused_and_leave_the_bulkhead_as_it_was() {
    let layer = BulkheadLayer::builder().max_concurrent(2).build().unwrap();
    let handle = layer.handle();
    let (inner, _) = gated();
    let svc = layer.layer(inner);

    for bad in [0, MAX_BULKHEAD_PERMITS + 1, u32::MAX] {
        let err = handle.set_max_concurrent(bad).unwrap_err();
        assert_eq!(err.parameter(), "max_concurrent", "{err}");
        assert_eq!(handle.max_concurrent(), 2);
    }
    // Still admits 2 and refuses the third.
    let (tx_a, rx_a) = oneshot::channel();
    let (tx_b, rx_b) = oneshot::channel();
    let a = tokio::spawn(svc.clone().oneshot(rx_a));
    let b = tokio::spawn(svc.clone().oneshot(rx_b));
    settle().await;
    assert_eq!(handle.in_flight(), 2);
    let (_tx, rx) = oneshot::channel();
    assert_eq!(
        ErrorKind::of(&svc.clone().oneshot(rx).await.unwrap_err()),
        ErrorKind::BulkheadFull
    );
    tx_a.send(1).unwrap();
    tx_b.send(2).unwrap();
    assert_eq!(a.await.unwrap().unwrap() + b.await.unwrap().unwrap(), 3);

    // The bounds themselves are accepted. (Raising a limit costs time in
    // proportion to the increase: 2 -> 2^30 takes about 26 s in a debug
    // build, so the upper bound is reached from a layer built next to it.)
    assert_eq!(MAX_BULKHEAD_PERMITS, 1 << 30);
    handle.set_max_concurrent(1).unwrap();
    assert_eq!(handle.max_concurrent(), 1);
    let near = BulkheadLayer::builder()
        .max_concurrent(MAX_BULKHEAD_PERMITS - 1)
        .build()
        .unwrap();
    near.handle()
        .set_max_concurrent(MAX_BULKHEAD_PERMITS)
        .unwrap();
    assert_eq!(near.handle().max_concurrent(), MAX_BULKHEAD_PERMITS);
    assert!(
        near.handle()
            .set_max_concurrent(MAX_BULKHEAD_PERMITS + 1)
            .is_err()
    );
    assert_eq!(near.handle().max_concurrent(), MAX_BULKHEAD_PERMITS);
}

#[tokio::test(start_paused = true)]
async fn the_limit_moves_for_every_service_of_the_layer() {
    let layer = BulkheadLayer::builder()
        .name("shared")
        .max_concurrent(1)
        .build()
        .unwrap();
    let (inner, _) = gated();
    let one = layer.layer(inner.clone());
    let two = layer.layer(inner);
    one.handle().set_max_concurrent(2).unwrap();
    assert_eq!(layer.handle().max_concurrent(), 2);
    assert_eq!(two.handle().max_concurrent(), 2);
    assert_eq!(two.handle().name(), "shared");

    let (tx_a, rx_a) = oneshot::channel();
    let (tx_b, rx_b) = oneshot::channel();
    let a = tokio::spawn(one.clone().oneshot(rx_a));
    let b = tokio::spawn(two.clone().oneshot(rx_b));
    settle().await;
    assert_eq!(
        layer.handle().in_flight(),
        2,
        "both services share the raised limit"
    );
    let (_tx, rx) = oneshot::channel();
    assert_eq!(
        ErrorKind::of(&two.oneshot(rx).await.unwrap_err()),
        ErrorKind::BulkheadFull
    );
    tx_a.send(1).unwrap();
    tx_b.send(2).unwrap();
    a.await.unwrap().unwrap();
    b.await.unwrap().unwrap();
}

// ---------------------------------------------------------------------------
// 4. Events
// ---------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn breaker_events_by_kind_and_their_text() {
    let (seen, listener) = texts::<BreakerEvent>();
    let (others, other_listener) = kinds::<RetryEvent>();
    let breaker = CircuitBreakerLayer::builder()
        .name("db")
        .count_window(2)
        .minimum_calls(2)
        .wait_duration(Duration::from_secs(5))
        .on_event(listener)
        .on_event(other_listener)
        .build()
        .unwrap();
    let handle = breaker.handle();
    let (inner, _) = scripted::<u32>(&[Step::Fail("a"), Step::Fail("b")]);
    let svc = breaker.layer(inner);
    for _ in 0..2 {
        svc.clone().oneshot(1).await.unwrap_err();
    }
    assert_eq!(handle.state(), CircuitState::Open);
    let err = svc.clone().oneshot(1).await.unwrap_err();
    assert_eq!(ErrorKind::of(&err), ErrorKind::CircuitOpen);

    handle.force_open();
    handle.reset();

    let seen = seen.lock().unwrap();
    for (name, kind, kind_text, text) in seen.iter() {
        assert_eq!(name, "db");
        assert_eq!(*text, format!("circuit `db`: {kind_text}"), "{kind:?}");
    }
    let finished = seen
        .iter()
        .filter(|s| matches!(s.1, BreakerEvent::CallFinished { .. }))
        .count();
    assert_eq!(finished, 2);
    assert!(seen.iter().all(|s| !matches!(
        s.1,
        BreakerEvent::CallFinished {
            outcome: Outcome::Success,
            ..
        }
    )));
    let others_than_finished: Vec<BreakerEvent> = seen
        .iter()
        .map(|s| s.1)
        .filter(|k| !matches!(k, BreakerEvent::CallFinished { .. }))
        .collect();
    assert_eq!(
        others_than_finished,
        [
            // "once per crossing; in MetricsOnly state this is all that happens":
            // in the closed state it comes before the trip.
            BreakerEvent::FailureRateExceeded {
                rate: 1.0,
                threshold: 0.5
            },
            BreakerEvent::StateTransition {
                from: CircuitState::Closed,
                to: CircuitState::Open,
                reason: TransitionReason::FailureRate
            },
            BreakerEvent::CallRejected {
                retry_after: Duration::from_secs(5)
            },
            BreakerEvent::StateTransition {
                from: CircuitState::Open,
                to: CircuitState::ForcedOpen,
                reason: TransitionReason::Manual
            },
            BreakerEvent::StateTransition {
                from: CircuitState::ForcedOpen,
                to: CircuitState::Closed,
                reason: TransitionReason::Manual
            },
        ]
    );
    // The texts the docs quote.
    let rejected = seen
        .iter()
        .find(|s| matches!(s.1, BreakerEvent::CallRejected { .. }))
        .unwrap();
    assert_eq!(rejected.3, "circuit `db`: call rejected, retry in 5s");
    let forced = seen
        .iter()
        .find(|s| {
            matches!(
                s.1,
                BreakerEvent::StateTransition {
                    to: CircuitState::ForcedOpen,
                    ..
                }
            )
        })
        .unwrap();
    assert_eq!(forced.3, "circuit `db`: Open -> ForcedOpen (set by hand)");
    assert_eq!(forced.2, "Open -> ForcedOpen (set by hand)");
    // No event of the breaker is a RetryEvent.
    assert!(others.lock().unwrap().is_empty());
}

#[tokio::test(start_paused = true)]
async fn breaker_rate_exceeded_in_metrics_only() {
    let (seen, listener) = kinds::<BreakerEvent>();
    let breaker = CircuitBreakerLayer::builder()
        .count_window(2)
        .minimum_calls(2)
        .failure_rate_threshold(0.5)
        .on_event(listener)
        .build()
        .unwrap();
    let handle = breaker.handle();
    handle.metrics_only();
    let (inner, calls) = scripted::<u32>(&[Step::Fail("a"), Step::Fail("b"), Step::Fail("c")]);
    let svc = breaker.layer(inner);
    for _ in 0..3 {
        assert_eq!(
            ErrorKind::of(&svc.clone().oneshot(1).await.unwrap_err()),
            ErrorKind::Inner
        );
    }
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    assert_eq!(handle.state(), CircuitState::MetricsOnly);
    let exceeded: Vec<BreakerEvent> = seen
        .lock()
        .unwrap()
        .iter()
        .filter(|e| matches!(e, BreakerEvent::FailureRateExceeded { .. }))
        .copied()
        .collect();
    assert_eq!(
        exceeded,
        [BreakerEvent::FailureRateExceeded {
            rate: 1.0,
            threshold: 0.5
        }],
        "once per crossing"
    );
}

#[tokio::test(start_paused = true)]
async fn bulkhead_events_by_kind_and_their_text() {
    let (seen, listener) = texts::<BulkheadEvent>();
    let layer = BulkheadLayer::builder()
        .name("pool-7")
        .max_concurrent(1)
        .max_queue(1)
        .max_wait(ms(50))
        .on_event(listener)
        .build()
        .unwrap();
    let (inner, _) = sleeper();
    let svc = layer.layer(inner);
    let first = tokio::spawn(svc.clone().oneshot(1_000));
    settle().await;
    let second = tokio::spawn(svc.clone().oneshot(1));
    settle().await;
    // Every place taken: refused at once.
    let third = svc.clone().oneshot(1).await.unwrap_err();
    assert_eq!(ErrorKind::of(&third), ErrorKind::BulkheadFull);
    // The queued one gives up after 50 ms.
    let second = second.await.unwrap().unwrap_err();
    assert_eq!(ErrorKind::of(&second), ErrorKind::BulkheadFull);
    assert_eq!(first.await.unwrap().unwrap(), 1_000);

    let seen = seen.lock().unwrap();
    let kinds: Vec<BulkheadEvent> = seen.iter().map(|s| s.1).collect();
    assert_eq!(
        kinds,
        [
            BulkheadEvent::InFlight { in_flight: 1 },
            BulkheadEvent::Rejected {
                timed_out_in_queue: false
            },
            BulkheadEvent::Rejected {
                timed_out_in_queue: true
            },
            BulkheadEvent::InFlight { in_flight: 0 },
        ]
    );
    for (name, kind, kind_text, text) in seen.iter() {
        assert_eq!(name, "pool-7");
        assert!(!kind_text.is_empty(), "{kind:?}");
        assert!(
            !kind_text.contains("pool-7"),
            "the kind's text has no name: {kind_text}"
        );
        assert!(text.contains("pool-7"), "{text}");
        assert!(text.ends_with(kind_text.as_str()), "{text} / {kind_text}");
    }
    // Two different events read differently.
    assert_ne!(seen[1].2, seen[2].2);
}

#[tokio::test(start_paused = true)]
async fn retry_events_by_kind_and_their_text() {
    let (seen, listener) = texts::<RetryEvent>();
    let retry = RetryLayer::builder()
        .name("orders-retry")
        .backoff(fixed(100))
        .on_event(listener)
        .build()
        .unwrap();
    let (inner, calls) = scripted::<u32>(&[Step::Fail("a"), Step::Fail("b"), Step::Fail("c")]);
    let err = retry.layer(inner).oneshot(1).await.unwrap_err();
    assert_eq!(err.to_string(), "c", "the last error is returned");
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    let seen = seen.lock().unwrap();
    let kinds: Vec<RetryEvent> = seen.iter().map(|s| s.1).collect();
    let retry_after = |attempt| RetryEvent::Retry {
        attempt,
        delay: ms(100),
        reason: RetryReason::Failure,
        hinted: false,
    };
    assert_eq!(
        kinds,
        [
            RetryEvent::Attempt { attempt: 1 },
            retry_after(1),
            RetryEvent::Attempt { attempt: 2 },
            retry_after(2),
            RetryEvent::Attempt { attempt: 3 },
            RetryEvent::GaveUp {
                attempts: 3,
                reason: GiveUpReason::MaxAttempts
            },
        ]
    );
    for (name, kind, kind_text, text) in seen.iter() {
        assert_eq!(name, "orders-retry");
        assert!(!kind_text.is_empty(), "{kind:?}");
        assert!(!kind_text.contains("orders-retry"), "{kind_text}");
        assert!(text.contains("orders-retry"), "{text}");
        assert!(text.ends_with(kind_text.as_str()), "{text} / {kind_text}");
    }
    // as_str ("as in metric labels") and Display are both non-empty names.
    assert!(!RetryReason::Failure.as_str().is_empty());
    assert!(!RetryReason::Failure.to_string().is_empty());
    assert_ne!(RetryReason::Failure.as_str(), RetryReason::Timeout.as_str());
    assert_ne!(
        GiveUpReason::MaxAttempts.as_str(),
        GiveUpReason::Deadline.as_str()
    );
}

#[tokio::test(start_paused = true)]
async fn timeout_and_fallback_events_by_kind_and_their_text() {
    let (timeouts, t_listener) = texts::<TimeoutEvent>();
    let (fallbacks, f_listener) = texts::<FallbackEvent>();
    let (wrong, w_listener) = kinds::<BreakerEvent>();
    let timeout = TimeoutLayer::builder()
        .name("per-attempt")
        .timeout(ms(100))
        .on_event(t_listener)
        .on_event(w_listener)
        .build()
        .unwrap();
    let fallback = FallbackLayer::builder(from_sync_fn(|_: Failed<u64, u64>| Ok::<_, BoxError>(0)))
        .name("cache")
        .on_event(f_listener)
        .build()
        .unwrap();
    let (inner, _) = sleeper();
    let svc = ServiceBuilder::new()
        .layer(fallback)
        .layer(timeout)
        .service(inner);
    let start = Instant::now();
    assert_eq!(svc.oneshot(5_000).await.unwrap(), 0);
    assert_eq!(start.elapsed(), ms(100));

    let timeouts = timeouts.lock().unwrap();
    assert_eq!(timeouts.len(), 1);
    let (name, kind, kind_text, text) = &timeouts[0];
    assert_eq!(
        (name.as_str(), *kind),
        ("per-attempt", TimeoutEvent::TimedOut { after: ms(100) })
    );
    assert!(
        text.contains("per-attempt") && text.ends_with(kind_text.as_str()),
        "{text}"
    );
    assert!(!kind_text.contains("per-attempt"));

    let fallbacks = fallbacks.lock().unwrap();
    assert_eq!(fallbacks.len(), 1);
    let (name, kind, kind_text, text) = &fallbacks[0];
    assert_eq!(
        (name.as_str(), *kind),
        (
            "cache",
            FallbackEvent::FellBack {
                kind: Some(ErrorKind::Elapsed)
            }
        )
    );
    assert!(
        text.contains("cache") && text.ends_with(kind_text.as_str()),
        "{text}"
    );
    assert!(
        wrong.lock().unwrap().is_empty(),
        "kind::<BreakerEvent>() of a timeout event is None"
    );
}

#[tokio::test(start_paused = true)]
async fn events_carry_the_default_layer_names() {
    let names: Seen<String> = Arc::default();
    let listener = |names: &Seen<String>| {
        let names = names.clone();
        move |e: &Event<'_>| {
            let n = e.name().to_string();
            let mut names = names.lock().unwrap();
            if !names.contains(&n) {
                names.push(n);
            }
        }
    };
    let svc = ServiceBuilder::new()
        .layer(
            FallbackLayer::builder(from_sync_fn(|_: Failed<u64, u64>| Ok::<_, BoxError>(0)))
                .on_event(listener(&names))
                .build()
                .unwrap(),
        )
        .layer(
            RetryLayer::builder()
                .max_attempts(1)
                .on_event(listener(&names))
                .build()
                .unwrap(),
        )
        .layer(
            CircuitBreakerLayer::builder()
                .on_event(listener(&names))
                .build()
                .unwrap(),
        )
        .layer(
            BulkheadLayer::builder()
                .on_event(listener(&names))
                .build()
                .unwrap(),
        )
        .layer(
            TimeoutLayer::builder()
                .timeout(ms(10))
                .on_event(listener(&names))
                .build()
                .unwrap(),
        )
        .service(sleeper().0);
    assert_eq!(svc.oneshot(1_000).await.unwrap(), 0);
    let mut names = names.lock().unwrap().clone();
    names.sort();
    assert_eq!(
        names,
        [
            "bulkhead",
            "circuit-breaker",
            "fallback",
            "retry",
            "timeout"
        ]
    );
}

/// An event kind of our own, for a layer of our own.
#[derive(Debug, Clone, Copy, PartialEq)]
struct CacheEvent {
    hit: bool,
}

impl EventKind for CacheEvent {
    fn describe(&self, name: &str, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "cache `{name}`: {}",
            if self.hit { "hit" } else { "miss" }
        )
    }
}

/// A listener of our own.
struct CountEvents(Arc<AtomicU32>);

impl Listener for CountEvents {
    fn on_event(&self, _: &Event<'_>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

#[test]
fn a_custom_event_kind_through_event_new() {
    let name: Arc<str> = Arc::from("lru");
    let what = CacheEvent { hit: true };
    let event = Event::new(&name, &what);
    assert_eq!(event.name(), "lru");
    assert!(Arc::ptr_eq(event.shared_name(), &name));
    assert_eq!(event.to_string(), "cache `lru`: hit");
    assert_eq!(event.kind::<CacheEvent>(), Some(&CacheEvent { hit: true }));
    assert!(event.kind::<BreakerEvent>().is_none());
    assert!(event.kind::<RetryEvent>().is_none());
    assert!(format!("{:?}", event.what()).contains("CacheEvent"));
    // Event is Copy.
    let copy = event;
    assert_eq!(copy.to_string(), event.to_string());

    // The provided methods: trace does nothing harmful, measure records nothing.
    what.trace("lru");
    let mut measures: Vec<Measure> = Vec::new();
    what.measure(&mut |m| measures.push(m));
    assert!(measures.is_empty());

    // Closures and structs are listeners; so are the ready-made ones.
    let (seen, listener) = kinds::<CacheEvent>();
    listener.on_event(&event);
    listener.on_event(&Event::new(&name, &CacheEvent { hit: false }));
    assert_eq!(
        *seen.lock().unwrap(),
        [CacheEvent { hit: true }, CacheEvent { hit: false }]
    );
    let count = Arc::new(AtomicU32::new(0));
    CountEvents(count.clone()).on_event(&event);
    assert_eq!(count.load(Ordering::SeqCst), 1);
    palisade::event::MetricsEvents::new().on_event(&event);
    palisade::event::TracingEvents.on_event(&event);

    // A pattern's kind can be sent through Event::new as well.
    let breaker_name: Arc<str> = Arc::from("db");
    let rejected = BreakerEvent::CallRejected {
        retry_after: Duration::from_secs(5),
    };
    let event = Event::new(&breaker_name, &rejected);
    assert_eq!(
        event.to_string(),
        "circuit `db`: call rejected, retry in 5s"
    );
    assert_eq!(event.kind::<BreakerEvent>(), Some(&rejected));
    assert!(event.kind::<CacheEvent>().is_none());
}

#[tokio::test(start_paused = true)]
async fn a_listener_struct_on_a_real_layer() {
    let count = Arc::new(AtomicU32::new(0));
    let breaker = CircuitBreakerLayer::builder()
        .on_event(CountEvents(count.clone()))
        .build()
        .unwrap();
    breaker.handle().force_open();
    assert_eq!(count.load(Ordering::SeqCst), 1);
}

// ---------------------------------------------------------------------------
// 5. The Resilience preset
// ---------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn preset_slots_run_in_the_documented_order_whatever_the_setter_order() {
    let log: Seen<&'static str> = Arc::default();
    let tag = |role: &'static str| {
        let log = log.clone();
        MapRequestLayer::new(move |x: u32| {
            log.lock().unwrap().push(role);
            x
        })
    };
    // Filled in scrambled order.
    let stack = Resilience::builder()
        .attempt_timeout_slot(tag("attempt timeout"))
        .circuit_breaker_slot(tag("circuit breaker"))
        .fallback_slot(tag("fallback"))
        .concurrency_slot(tag("concurrency"))
        .repeat_slot(tag("repeat"))
        .rate_limit_slot(tag("rate limit"))
        .total_timeout_slot(tag("total timeout"))
        .build()
        .unwrap();
    let svc = stack.layer(service_fn(|x: u32| async move { Ok::<_, BoxError>(x + 1) }));
    assert_eq!(svc.oneshot(41).await.unwrap(), 42);
    assert_eq!(
        *log.lock().unwrap(),
        [
            "fallback",
            "total timeout",
            "repeat",
            "circuit breaker",
            "rate limit",
            "concurrency",
            "attempt timeout"
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn an_empty_preset_is_the_service_itself() {
    let svc = Resilience::builder()
        .build()
        .unwrap()
        .layer(service_fn(|x: u32| async move { Ok::<_, BoxError>(x * 2) }));
    assert_eq!(svc.oneshot(21).await.unwrap(), 42);
    let svc = ServiceBuilder::new()
        .resilience(Resilience::builder().build().unwrap())
        .service(service_fn(|x: u32| async move {
            Err::<u32, BoxError>(format!("no {x}").into())
        }));
    assert_eq!(svc.oneshot(3).await.unwrap_err().to_string(), "no 3");
}

#[tokio::test(start_paused = true)]
async fn the_rate_limit_slot_sees_every_attempt_but_no_refused_call() {
    let attempts = Arc::new(AtomicU32::new(0));
    let counter = attempts.clone();
    let breaker = CircuitBreakerLayer::builder().build().unwrap();
    let breaker_handle = breaker.handle();
    let (bulkhead_events, bulkhead_listener) = kinds::<BulkheadEvent>();
    let bulkhead = BulkheadLayer::builder()
        .max_concurrent(4)
        .on_event(bulkhead_listener)
        .build()
        .unwrap();
    let bulkhead_handle = bulkhead.handle();
    let stack = Resilience::builder()
        .repeat_slot(RetryLayer::builder().backoff(fixed(10)).build().unwrap())
        .circuit_breaker_slot(breaker)
        .rate_limit_slot(MapRequestLayer::new(move |x: u32| {
            counter.fetch_add(1, Ordering::SeqCst);
            x
        }))
        .concurrency_slot(bulkhead)
        .build()
        .unwrap();
    let (inner, calls) = scripted::<u32>(&[Step::Fail("a"), Step::Fail("b"), Step::Fail("c")]);
    let svc = stack.layer(inner);

    // Three attempts (the retry's default), each spends the rate.
    assert_eq!(svc.clone().oneshot(1).await.unwrap_err().to_string(), "c");
    assert_eq!(attempts.load(Ordering::SeqCst), 3);
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    let bulkhead_seen = bulkhead_events.lock().unwrap().len();
    assert_eq!(
        bulkhead_seen, 6,
        "each attempt took a place and gave it back"
    );

    // A call the breaker refuses spends nothing below it.
    breaker_handle.force_open();
    let err = svc.oneshot(1).await.unwrap_err();
    assert_eq!(ErrorKind::of(&err), ErrorKind::CircuitOpen);
    assert_eq!(attempts.load(Ordering::SeqCst), 3);
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    assert_eq!(bulkhead_handle.in_flight(), 0);
    assert_eq!(
        bulkhead_events.lock().unwrap().len(),
        bulkhead_seen,
        "the bulkhead never saw it"
    );
}

#[tokio::test(start_paused = true)]
async fn waiting_in_the_bulkhead_does_not_eat_the_attempt_timeout() {
    let stack = Resilience::builder()
        .concurrency_slot(
            BulkheadLayer::builder()
                .max_concurrent(1)
                .max_queue(1)
                .build()
                .unwrap(),
        )
        .attempt_timeout_slot(TimeoutLayer::new(ms(100)).unwrap())
        .build()
        .unwrap();
    let (inner, calls) = sleeper();
    let svc = stack.layer(inner);
    let start = Instant::now();
    let first = tokio::spawn(svc.clone().oneshot(80));
    settle().await;
    // Queued for 80 ms, then runs 50 ms: 130 ms in all, 50 ms of attempt.
    let second = svc.oneshot(50).await.unwrap();
    assert_eq!(second, 50);
    assert_eq!(start.elapsed(), ms(130));
    assert_eq!(first.await.unwrap().unwrap(), 80);
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[tokio::test(start_paused = true)]
async fn the_total_timeout_bounds_retries_and_backoffs() {
    let stack = Resilience::builder()
        .total_timeout_slot(TimeoutLayer::new(ms(2_500)).unwrap())
        .repeat_slot(
            RetryLayer::builder()
                .max_attempts(5)
                .backoff(fixed(1_000))
                .no_budget()
                .build()
                .unwrap(),
        )
        .build()
        .unwrap();
    let (inner, calls) = scripted::<u32>(&[Step::Fail("a"); 5]);
    let start = Instant::now();
    let err = stack.layer(inner).oneshot(1).await.unwrap_err();
    assert_eq!(ErrorKind::of(&err), ErrorKind::Elapsed);
    assert_eq!(start.elapsed(), ms(2_500));
    assert_eq!(
        calls.load(Ordering::SeqCst),
        3,
        "attempts at 0 s, 1 s and 2 s"
    );
}

#[tokio::test(start_paused = true)]
async fn the_fallback_sees_the_final_outcome() {
    let handled = Arc::new(AtomicU32::new(0));
    let counter = handled.clone();
    let stack = Resilience::builder()
        .fallback_slot(
            FallbackLayer::builder(from_sync_fn(move |failed: Failed<u32, u16>| {
                counter.fetch_add(1, Ordering::SeqCst);
                assert_eq!(failed.outcome.unwrap_err().to_string(), "c");
                Ok::<_, BoxError>(999)
            }))
            .build()
            .unwrap(),
        )
        .repeat_slot(RetryLayer::builder().backoff(fixed(10)).build().unwrap())
        .build()
        .unwrap();
    let (inner, calls) = scripted::<u32>(&[Step::Fail("a"), Step::Fail("b"), Step::Fail("c")]);
    assert_eq!(stack.layer(inner).oneshot(1).await.unwrap(), 999);
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    assert_eq!(handled.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn slot_setters_take_tower_layers_and_replace_typed_ones() {
    // tower's own layers in the concurrency and attempt-timeout slots.
    let stack = Resilience::builder()
        .repeat_slot(RetryLayer::builder().backoff(fixed(10)).build().unwrap())
        .concurrency_slot(tower::limit::ConcurrencyLimitLayer::new(1))
        .attempt_timeout_slot(tower::timeout::TimeoutLayer::new(ms(100)))
        .build()
        .unwrap();
    let calls = Arc::new(AtomicU32::new(0));
    let counter = calls.clone();
    let inner = service_fn(move |_: u32| {
        let n = counter.fetch_add(1, Ordering::SeqCst);
        async move {
            if n == 0 {
                tokio::time::sleep(Duration::from_secs(60)).await;
            }
            Ok::<u32, BoxError>(n)
        }
    });
    // tower's Elapsed is an inner error to palisade; the default classifier
    // retries every error.
    assert_eq!(stack.layer(inner).oneshot(1).await.unwrap(), 1);
    assert_eq!(calls.load(Ordering::SeqCst), 2);

    // A slot setter replaces what a typed setter put there.
    let stack = Resilience::builder()
        .repeat_slot(RetryLayer::builder().backoff(fixed(10)).build().unwrap())
        .repeat_slot(tower::layer::util::Identity::new())
        .build()
        .unwrap();
    let (inner, calls) = scripted::<u32>(&[Step::Fail("a")]);
    assert_eq!(
        stack.layer(inner).oneshot(1).await.unwrap_err().to_string(),
        "a"
    );
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "no retry left in the repeat slot"
    );
}

#[tokio::test(start_paused = true)]
async fn service_builder_ext_adds_the_preset_and_each_layer() {
    let preset = Resilience::builder()
        .fallback_slot(
            FallbackLayer::builder(from_sync_fn(|_: Failed<u32, u16>| Ok::<_, BoxError>(999)))
                .build()
                .unwrap(),
        )
        .repeat_slot(RetryLayer::builder().backoff(fixed(10)).build().unwrap())
        .build()
        .unwrap();
    let (inner, calls) = scripted::<u32>(&[Step::Fail("a"), Step::Code(201)]);
    let svc = ServiceBuilder::new()
        .resilience(preset.clone())
        .service(inner);
    assert_eq!(svc.oneshot(1).await.unwrap(), 201);
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    let (inner, _) = scripted::<u32>(&[Step::Fail("a"); 3]);
    assert_eq!(
        ServiceBuilder::new()
            .resilience(preset)
            .service(inner)
            .oneshot(1)
            .await
            .unwrap(),
        999
    );

    // Each layer by its own method.
    let (inner, calls) = scripted::<u32>(&[Step::Fail("a"), Step::Code(202)]);
    let svc = ServiceBuilder::new()
        .fallback(
            FallbackLayer::builder(from_sync_fn(|_: Failed<u32, u16>| Ok::<_, BoxError>(999)))
                .build()
                .unwrap(),
        )
        .time_limit(TimeoutLayer::new(Duration::from_secs(1)).unwrap())
        .retries(RetryLayer::builder().backoff(fixed(10)).build().unwrap())
        .circuit_breaker(CircuitBreakerLayer::builder().build().unwrap())
        .bulkhead(BulkheadLayer::builder().max_concurrent(2).build().unwrap())
        .service(inner);
    assert_eq!(svc.oneshot(1).await.unwrap(), 202);
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

// ---------------------------------------------------------------------------
// 6. palisade::replay, used directly
// ---------------------------------------------------------------------------

/// A request that counts its clones.
#[derive(Debug)]
struct Counted(&'static str, Arc<AtomicU32>);

impl Clone for Counted {
    fn clone(&self) -> Self {
        self.1.fetch_add(1, Ordering::SeqCst);
        Counted(self.0, self.1.clone())
    }
}

#[test]
fn by_clone_keeps_one_clone_and_clones_it_for_each_retry() {
    let clones = Arc::new(AtomicU32::new(0));
    let (first, source) = ByClone.first(Counted("req", clones.clone()), true);
    assert_eq!(first.0, "req");
    assert_eq!(
        clones.load(Ordering::SeqCst),
        1,
        "one clone kept when the first attempt is sent"
    );
    let mut source: Cloned<Counted> = source.expect("a Clone request has a source");
    for n in 2..5 {
        assert_eq!(source.again().unwrap().0, "req");
        assert_eq!(clones.load(Ordering::SeqCst), n);
    }
    // A source is Clone too.
    let mut other = source.clone();
    assert_eq!(other.again().unwrap().0, "req");

    // A request that may not be retried keeps its source as well.
    let (first, source) = ByClone.first(String::from("post"), false);
    assert_eq!(first, "post");
    assert_eq!(source.unwrap().again(), Some(String::from("post")));

    // A Copy request.
    let (first, source) = ByClone.first(7u64, true);
    assert_eq!((first, source.unwrap().again()), (7, Some(7)));
}

#[tokio::test(start_paused = true)]
async fn the_retry_clones_requests_as_its_docs_say() {
    let inner = service_fn(|req: Counted| async move { Ok::<_, BoxError>(req.0) });
    // First attempt succeeds: one clone.
    let clones = Arc::new(AtomicU32::new(0));
    let retry = RetryLayer::builder().build().unwrap();
    assert_eq!(
        retry
            .layer(inner)
            .oneshot(Counted("a", clones.clone()))
            .await
            .unwrap(),
        "a"
    );
    assert_eq!(clones.load(Ordering::SeqCst), 1);

    // Two failures then a success: the kept clone plus one per retry.
    let clones = Arc::new(AtomicU32::new(0));
    let calls = Arc::new(AtomicU32::new(0));
    let counter = calls.clone();
    let flaky = service_fn(move |req: Counted| {
        let n = counter.fetch_add(1, Ordering::SeqCst);
        async move {
            if n < 2 {
                Err::<_, BoxError>("x".into())
            } else {
                Ok(req.0)
            }
        }
    });
    let retry = RetryLayer::builder()
        .backoff(fixed(10))
        .requests(ByClone)
        .build()
        .unwrap();
    assert_eq!(
        retry
            .layer(flaky)
            .oneshot(Counted("c", clones.clone()))
            .await
            .unwrap(),
        "c"
    );
    assert_eq!(clones.load(Ordering::SeqCst), 3);
}

#[tokio::test(start_paused = true)]
async fn max_attempts_1_clones_no_request() {
    // Found by this file (written from the docs alone), then fixed: the retry module's "Cost" section says: "When the first
    // attempt succeeds: one clone of the request (with max_attempts(1),
    // none) and one of the service, ...". With max_attempts(1) ("1 means
    // never retry") the request is still cloned once (observed: 1 clone).
    let inner = service_fn(|req: Counted| async move { Ok::<_, BoxError>(req.0) });
    let clones = Arc::new(AtomicU32::new(0));
    let retry = RetryLayer::builder().max_attempts(1).build().unwrap();
    assert_eq!(
        retry
            .layer(inner)
            .oneshot(Counted("b", clones.clone()))
            .await
            .unwrap(),
        "b"
    );
    assert_eq!(
        clones.load(Ordering::SeqCst),
        0,
        "with max_attempts(1), no clone"
    );
}

/// A replay strategy of our own: numbers each attempt's copy, and can make
/// only `copies` of them.
#[derive(Clone)]
struct Numbered {
    copies: u32,
    retryable_seen: Seen<bool>,
}

struct NumberedSource {
    req: &'static str,
    next: u32,
    last: u32,
}

impl ReplaySource for NumberedSource {
    type Request = (&'static str, u32);
    fn again(&mut self) -> Option<(&'static str, u32)> {
        if self.next > self.last {
            return None;
        }
        self.next += 1;
        Some((self.req, self.next - 1))
    }
}

impl Replay<&'static str> for Numbered {
    type Request = (&'static str, u32);
    type Source = NumberedSource;
    fn first(
        &self,
        req: &'static str,
        retryable: bool,
    ) -> ((&'static str, u32), Option<NumberedSource>) {
        self.retryable_seen.lock().unwrap().push(retryable);
        let source = (self.copies > 0).then_some(NumberedSource {
            req,
            next: 2,
            last: 1 + self.copies,
        });
        ((req, 1), source)
    }
}

async fn numbered_retry(
    copies: u32,
    method: &'static str,
    steps: &[Step],
) -> (Vec<u32>, Vec<bool>, Result<u16, BoxError>, Vec<RetryEvent>) {
    let queue = Arc::new(Mutex::new(steps.iter().copied().collect::<VecDeque<_>>()));
    let seen: Seen<u32> = Arc::default();
    let keep = seen.clone();
    let inner = service_fn(move |(req, n): (&'static str, u32)| {
        assert_eq!(req, method);
        keep.lock().unwrap().push(n);
        let step = queue.lock().unwrap().pop_front().unwrap_or(Step::Code(200));
        async move {
            match step {
                Step::Code(c) => Ok(c),
                Step::Fail(t) => Err::<u16, BoxError>(t.into()),
            }
        }
    });
    let retryable_seen: Seen<bool> = Arc::default();
    let (events, listener) = kinds::<RetryEvent>();
    let retry = RetryLayer::builder()
        .classifier(Picky)
        .max_attempts(4)
        .backoff(fixed(10))
        .requests(Numbered {
            copies,
            retryable_seen: retryable_seen.clone(),
        })
        .on_event(listener)
        .build()
        .unwrap();
    let result = retry.layer(inner).oneshot(method).await;
    let seen = seen.lock().unwrap().clone();
    let retryable = retryable_seen.lock().unwrap().clone();
    let events = events.lock().unwrap().clone();
    (seen, retryable, result, events)
}

#[tokio::test(start_paused = true)]
async fn a_replay_of_our_own_with_the_retry() {
    use Step::*;
    // Plenty of copies: first, then again() for each retry.
    let (seen, retryable, r, ev) = numbered_retry(10, "GET", &[Code(500); 4]).await;
    assert_eq!(seen, [1, 2, 3, 4]);
    assert_eq!(
        retryable,
        [true],
        "first is asked once, with the classifier's answer"
    );
    assert_eq!(r.unwrap(), 500);
    assert_eq!(
        ev.last(),
        Some(&RetryEvent::GaveUp {
            attempts: 4,
            reason: GiveUpReason::MaxAttempts
        })
    );

    // A success ends it.
    let (seen, _, r, _) = numbered_retry(10, "GET", &[Code(500), Code(200)]).await;
    assert_eq!((seen, r.unwrap()), (vec![1, 2], 200));

    // The source runs dry.
    let (seen, _, r, ev) = numbered_retry(1, "GET", &[Code(500); 4]).await;
    assert_eq!(seen, [1, 2]);
    assert_eq!(r.unwrap(), 500);
    assert_eq!(
        ev.last(),
        Some(&RetryEvent::GaveUp {
            attempts: 2,
            reason: GiveUpReason::NotReplayable
        })
    );

    // No source at all: "a request that cannot be copied is still sent", once.
    let (seen, _, r, _) = numbered_retry(0, "GET", &[Code(500); 4]).await;
    assert_eq!(seen, [1]);
    assert_eq!(r.unwrap(), 500);

    // A request that may not be sent twice: first hears `false`.
    let (seen, retryable, r, _) = numbered_retry(10, "POST", &[Code(500); 4]).await;
    assert_eq!((seen, retryable, r.unwrap()), (vec![1], vec![false], 500));
    // ... yet it is sent again from the source if it never left.
    let (seen, retryable, r, _) = numbered_retry(10, "POST", &[Fail("refused"), Code(200)]).await;
    assert_eq!(
        (seen, retryable, r.unwrap()),
        (vec![1, 2], vec![false], 200)
    );
}

#[tokio::test(start_paused = true)]
async fn replay_bodies_used_directly() {
    assert_eq!(DEFAULT_REPLAY_LIMIT, 64 * 1024);
    assert_eq!(ReplayBodies::default().limit(), DEFAULT_REPLAY_LIMIT);
    assert_eq!(ReplayBodies::with_limit(10).limit(), 10);

    let req: HttpReq = http::Request::post("/orders")
        .header("x-key", "v")
        .body(Full::new(Bytes::from_static(b"hello")))
        .unwrap();
    let (first, source) = ReplayBodies::default().first(req, true);
    let mut source = source.expect("an http request has a source");
    assert_eq!(first.method(), http::Method::POST);
    let body = first.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], b"hello");

    // Each copy has the head and the whole body.
    for _ in 0..2 {
        let again = source.again().expect("a recorded body can be replayed");
        assert_eq!(again.method(), http::Method::POST);
        assert_eq!(again.uri(), "/orders");
        assert_eq!(again.headers()["x-key"], "v");
        let body = again.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], b"hello");
    }

    // A request that may not be retried, whose body was never read, can be
    // sent again (what a refused connection leaves).
    let req: HttpReq = http::Request::post("/x")
        .body(Full::new(Bytes::from_static(b"abc")))
        .unwrap();
    let (first, source) = ReplayBodies::default().first(req, false);
    drop(first);
    let again = source
        .expect("kept for a request that never left")
        .again()
        .unwrap();
    assert_eq!(
        &again.into_body().collect().await.unwrap().to_bytes()[..],
        b"abc"
    );

    // A body over the limit, once read, cannot be copied.
    let req: HttpReq = http::Request::post("/x")
        .body(Full::new(Bytes::from_static(b"too long")))
        .unwrap();
    let (first, source) = ReplayBodies::with_limit(3).first(req, true);
    let body = first.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], b"too long", "sent once, whole, never truncated");
    assert!(source.and_then(|mut s| s.again()).is_none());
}

#[tokio::test(start_paused = true)]
async fn a_request_without_a_replay_source_gives_up_with_an_event() {
    // Found by this file (written from the docs alone), then fixed: `RetryEvent::GaveUp` is documented as "The layer returned a
    // failure without retrying further", with `GiveUpReason::NotReplayable`
    // = "The request could not be copied"; `Replay::first` says "A request
    // that cannot be copied is still sent: with no source." When `first`
    // gives no source, the retry returns the (retryable) failure after one
    // attempt but emits only `Attempt { attempt: 1 }`: no `GaveUp` at all
    // (when the source runs dry later, `GaveUp { NotReplayable }` is
    // emitted). The `palisade_retry_gave_up_total` metric ("failures
    // returned without a further retry") misses these calls.
    let (seen, _, r, ev) = numbered_retry(0, "GET", &[Step::Code(500); 4]).await;
    assert_eq!(seen, [1]);
    assert_eq!(r.unwrap(), 500);
    assert_eq!(
        ev.last(),
        Some(&RetryEvent::GaveUp {
            attempts: 1,
            reason: GiveUpReason::NotReplayable
        }),
        "{ev:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn max_attempts_1_gives_up_with_an_event() {
    // Found by this file (written from the docs alone), then fixed: `RetryEvent::GaveUp` is "The layer returned a failure without
    // retrying further" and `GiveUpReason::MaxAttempts` is "Every allowed
    // attempt was made". With max_attempts(3) a final failure emits
    // `GaveUp { attempts: 3, reason: MaxAttempts }` (see
    // retry_events_by_kind_and_their_text), but with max_attempts(1) the
    // failure is returned after `Attempt { attempt: 1 }` with no `GaveUp`.
    let (inner, calls) = scripted::<u32>(&[Step::Fail("a")]);
    let (events, listener) = kinds::<RetryEvent>();
    let retry = RetryLayer::builder()
        .max_attempts(1)
        .on_event(listener)
        .build()
        .unwrap();
    assert_eq!(
        retry.layer(inner).oneshot(1).await.unwrap_err().to_string(),
        "a"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(
        *events.lock().unwrap(),
        [
            RetryEvent::Attempt { attempt: 1 },
            RetryEvent::GaveUp {
                attempts: 1,
                reason: GiveUpReason::MaxAttempts
            }
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn the_retry_deadline_bounds_the_wait_for_readiness() {
    // "if the service is still not ready for the next attempt when it passes
    // (a full bulkhead below, say), the call fails with Elapsed".
    let bulkhead = BulkheadLayer::builder()
        .max_concurrent(1)
        .max_queue(4)
        .build()
        .unwrap();
    let calls = Arc::new(AtomicU32::new(0));
    let counter = calls.clone();
    let inner = service_fn(move |wait: u64| {
        let n = counter.fetch_add(1, Ordering::SeqCst);
        async move {
            if n == 0 {
                return Err::<u64, BoxError>("first fails".into());
            }
            tokio::time::sleep(ms(wait)).await;
            Ok(wait)
        }
    });
    let guarded = bulkhead.layer(inner);
    let retry = RetryLayer::builder()
        .backoff(fixed(100))
        .deadline(ms(500))
        .build()
        .unwrap();
    let svc = retry.layer(guarded.clone());
    let start = Instant::now();
    let call = tokio::spawn(svc.oneshot(1));
    // The first attempt fails at once; during the backoff, a holder takes the
    // only permit for 10 s.
    settle().await;
    let holder = tokio::spawn(guarded.oneshot(10_000));
    settle().await;
    let err = call.await.unwrap().unwrap_err();
    assert_eq!(ErrorKind::of(&err), ErrorKind::Elapsed);
    assert_eq!(start.elapsed(), ms(500));
    assert_eq!(
        calls.load(Ordering::SeqCst),
        2,
        "the first attempt and the holder"
    );
    holder.abort();
}

#[tokio::test(start_paused = true)]
async fn classifiers_behind_an_arc_work_with_the_layers() {
    let shared = Arc::new(Picky);
    let breaker = CircuitBreakerLayer::builder()
        .classifier(shared.clone())
        .count_window(2)
        .minimum_calls(2)
        .build()
        .unwrap();
    let handle = breaker.handle();
    let svc = breaker.layer(service_fn(
        |code: u16| async move { Ok::<u16, BoxError>(code) },
    ));
    for code in [404, 404, 500, 500] {
        svc.clone().oneshot(code).await.unwrap();
    }
    assert_eq!(handle.state(), CircuitState::Open);

    let (inner, calls) = scripted::<&'static str>(&[Step::Code(500)]);
    let retry = RetryLayer::builder()
        .classifier(shared)
        .backoff(fixed(10))
        .build()
        .unwrap();
    assert_eq!(retry.layer(inner).oneshot("GET").await.unwrap(), 200);
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}
