//! The circuit breaker through its public API, on paused time.

use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use palisade::backoff::{Backoff, Jitter};
use palisade::circuit_breaker::BreakerEvent;
use palisade::circuit_breaker::{
    CircuitBreaker, CircuitBreakerBuilder, CircuitBreakerHandle, CircuitBreakerLayer, CircuitState,
};
use palisade::classify::{ClassifyFn, Outcome, classify_fn};
use palisade::error::{BoxError, CircuitOpen, ErrorKind};
use palisade::event::Event;
use tokio::time::{advance, sleep};
use tower::{Layer, Service, ServiceExt, service_fn};

/// What the scripted backend does with a request.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Reply {
    Ok,
    Fail,
    /// Succeeds after this many milliseconds.
    SlowOk(u64),
    /// Fails after this many milliseconds.
    SlowFail(u64),
    /// Answers "ignored", which the test classifier counts neither way.
    Ignore,
}

type Backend = tower::util::BoxCloneSyncService<Reply, &'static str, BoxError>;

/// A backend that counts the calls that reach it.
fn backend(calls: Arc<AtomicUsize>) -> Backend {
    tower::util::BoxCloneSyncService::new(service_fn(move |reply: Reply| {
        calls.fetch_add(1, SeqCst);
        async move {
            match reply {
                Reply::Ok => Ok("ok"),
                Reply::Fail => Err("failed".into()),
                Reply::SlowOk(ms) => {
                    sleep(Duration::from_millis(ms)).await;
                    Ok("ok")
                }
                Reply::SlowFail(ms) => {
                    sleep(Duration::from_millis(ms)).await;
                    Err("failed".into())
                }
                Reply::Ignore => Ok("ignored"),
            }
        }
    }))
}

fn classifier(r: &Result<&'static str, BoxError>) -> Outcome {
    match r {
        Ok("ignored") => Outcome::Ignored,
        Ok(_) => Outcome::Success,
        Err(_) => Outcome::Failure,
    }
}

/// A breaker that trips at 50% failures over the last 10 calls, at least 4
/// calls in, opens for 10 s, and probes with 2 calls.
fn builder() -> CircuitBreakerBuilder {
    CircuitBreakerLayer::builder()
        .name("backend")
        .count_window(10)
        .minimum_calls(4)
        .failure_rate_threshold(0.5)
        .wait_duration(Duration::from_secs(10))
        .half_open_calls(2)
}

struct Harness<S> {
    svc: S,
    calls: Arc<AtomicUsize>,
    events: Arc<Mutex<Vec<String>>>,
}

type Classifier = ClassifyFn<fn(&Result<&'static str, BoxError>) -> Outcome>;
type Svc = CircuitBreaker<Backend, Classifier>;

fn harness(b: CircuitBreakerBuilder) -> (Harness<Svc>, CircuitBreakerHandle) {
    let events = Arc::new(Mutex::new(Vec::new()));
    let log = events.clone();
    let layer = b
        .on_event(move |e: &Event<'_>| log.lock().unwrap().push(e.to_string()))
        .classifier(classify_fn(classifier as fn(&_) -> _))
        .build()
        .unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let handle = layer.handle();
    let svc = layer.layer(backend(calls.clone()));
    (Harness { svc, calls, events }, handle)
}

impl<S> Harness<S>
where
    S: Service<Reply, Response = &'static str, Error = BoxError>,
{
    async fn send(&mut self, reply: Reply) -> Result<&'static str, BoxError> {
        self.svc.ready().await?.call(reply).await
    }

    async fn send_all(&mut self, replies: &[Reply]) {
        for r in replies {
            let _ = self.send(*r).await;
        }
    }

    fn backend_calls(&self) -> usize {
        self.calls.load(SeqCst)
    }
}

fn is_open(r: &Result<&'static str, BoxError>) -> bool {
    matches!(r, Err(e) if ErrorKind::of(e) == ErrorKind::CircuitOpen)
}

#[tokio::test(start_paused = true)]
async fn trips_on_failure_rate_only_after_the_minimum() {
    let (mut h, handle) = harness(builder());
    // Three failures: 100% but below the minimum of 4 calls.
    h.send_all(&[Reply::Fail, Reply::Fail, Reply::Fail]).await;
    assert_eq!(handle.state(), CircuitState::Closed);
    // The fourth call: 4 of 4 failed.
    let _ = h.send(Reply::Ok).await;
    assert_eq!(handle.state(), CircuitState::Open, "3 of 4 failed");
    let m = handle.metrics();
    assert_eq!((m.calls, m.failures), (4, 3));
    assert!(
        h.events
            .lock()
            .unwrap()
            .iter()
            .any(|e| e.contains("failure rate 75.0%"))
    );
}

#[tokio::test(start_paused = true)]
async fn stays_closed_below_the_threshold() {
    let (mut h, handle) = harness(builder());
    for _ in 0..50 {
        h.send_all(&[Reply::Fail, Reply::Ok, Reply::Ok, Reply::Ok])
            .await;
    }
    assert_eq!(handle.state(), CircuitState::Closed);
    let m = handle.metrics();
    assert_eq!(m.calls, 10, "the window holds the last 10 calls");
    // The last ten: Ok Ok | Fail Ok Ok Ok | Fail Ok Ok Ok.
    assert_eq!((m.failures, m.failure_rate), (2, 0.2));
    assert_eq!((m.slow_calls, m.slow_call_rate), (0, 0.0));
}

#[tokio::test(start_paused = true)]
async fn open_rejects_at_once_without_touching_the_service() {
    let (mut h, handle) = harness(builder());
    h.send_all(&[Reply::Fail; 4]).await;
    assert_eq!(handle.state(), CircuitState::Open);
    let before = h.backend_calls();
    advance(Duration::from_secs(3)).await;
    for _ in 0..100 {
        let err = h.send(Reply::Ok).await.unwrap_err();
        let open = err.downcast_ref::<CircuitOpen>().expect("a CircuitOpen");
        assert_eq!(open.name(), "backend");
        assert_eq!(open.retry_after(), Duration::from_secs(7));
    }
    assert_eq!(h.backend_calls(), before, "no call reached the backend");
    assert_eq!(handle.metrics().not_permitted, 100);
    assert_eq!(handle.metrics().open_remaining, Duration::from_secs(7));
}

#[tokio::test(start_paused = true)]
async fn half_open_admits_exactly_the_probes_then_closes() {
    let (mut h, handle) = harness(builder());
    h.send_all(&[Reply::Fail; 4]).await;
    advance(Duration::from_secs(10)).await;
    let before = h.backend_calls();

    // Two slow probes are admitted; a third call is rejected meanwhile.
    let mut p1 = h.svc.clone();
    let mut p2 = h.svc.clone();
    let probe1 = tokio::spawn(async move { p1.ready().await?.call(Reply::SlowOk(100)).await });
    let probe2 = tokio::spawn(async move { p2.ready().await?.call(Reply::SlowOk(200)).await });
    tokio::task::yield_now().await;
    assert_eq!(handle.state(), CircuitState::HalfOpen);
    assert_eq!(handle.metrics().probes_in_flight, 2);
    let third = h.send(Reply::Ok).await;
    assert!(is_open(&third));
    // Issue 12, defect 14: it said "may admit calls again in 0ns".
    let message = third.as_ref().unwrap_err().to_string();
    assert_eq!(
        message,
        "circuit breaker \"backend\" is half-open and every probe is out; \
         it may admit a call when one finishes"
    );
    assert_eq!(
        third
            .unwrap_err()
            .downcast_ref::<CircuitOpen>()
            .unwrap()
            .retry_after(),
        Duration::ZERO
    );

    probe1.await.unwrap().unwrap();
    assert_eq!(
        handle.state(),
        CircuitState::HalfOpen,
        "one probe still out"
    );
    assert_eq!(handle.metrics().probes_in_flight, 1);
    probe2.await.unwrap().unwrap();
    assert_eq!(handle.state(), CircuitState::Closed);
    assert_eq!(
        h.backend_calls(),
        before + 2,
        "exactly the probes reached it"
    );
    assert_eq!(handle.metrics().calls, 0, "closing starts an empty window");

    let events = h.events.lock().unwrap().join("\n");
    assert!(
        events.contains("Open -> HalfOpen (open wait elapsed)"),
        "{events}"
    );
    assert!(
        events.contains("HalfOpen -> Closed (probes succeeded)"),
        "{events}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_failing_probe_reopens_with_a_fresh_wait() {
    let (mut h, handle) = harness(builder());
    h.send_all(&[Reply::Fail; 4]).await;
    advance(Duration::from_secs(10)).await;
    h.send_all(&[Reply::Ok, Reply::Fail]).await; // 50% of probes failed
    assert_eq!(handle.state(), CircuitState::Open);
    assert_eq!(handle.metrics().open_remaining, Duration::from_secs(10));
    let events = h.events.lock().unwrap().join("\n");
    assert!(
        events.contains("HalfOpen -> Open (probes failed)"),
        "{events}"
    );
}

#[tokio::test(start_paused = true)]
async fn open_wait_grows_with_each_reopen_and_resets_on_close() {
    let backoff = Backoff::exponential(Duration::from_secs(1))
        .max_delay(Duration::from_secs(60))
        .jitter(Jitter::None)
        .build()
        .unwrap();
    let (mut h, handle) = harness(builder().wait_backoff(backoff));
    h.send_all(&[Reply::Fail; 4]).await;
    let mut waits = Vec::new();
    for _ in 0..4 {
        let wait = handle.metrics().open_remaining;
        waits.push(wait.as_secs());
        advance(wait).await;
        h.send_all(&[Reply::Fail, Reply::Fail]).await; // both probes fail
    }
    assert_eq!(waits, [1, 2, 4, 8]);
    // Close it, trip it again: the wait starts over.
    advance(handle.metrics().open_remaining).await;
    h.send_all(&[Reply::Ok, Reply::Ok]).await;
    assert_eq!(handle.state(), CircuitState::Closed);
    h.send_all(&[Reply::Fail; 4]).await;
    assert_eq!(handle.metrics().open_remaining, Duration::from_secs(1));
}

#[tokio::test(start_paused = true)]
async fn trips_on_slow_call_rate_whatever_the_outcome() {
    let (mut h, handle) = harness(
        builder()
            .slow_call_duration(Duration::from_millis(500))
            .slow_call_rate_threshold(0.75),
    );
    // Successful but slow calls; one fast one.
    h.send_all(&[Reply::SlowOk(600), Reply::SlowOk(501), Reply::Ok])
        .await;
    assert_eq!(handle.state(), CircuitState::Closed);
    h.send(Reply::SlowOk(500)).await.unwrap(); // exactly the limit: not slow
    assert_eq!(handle.state(), CircuitState::Closed);
    h.send(Reply::SlowOk(900)).await.unwrap(); // 3 of 5 slow: 60%
    assert_eq!(handle.state(), CircuitState::Closed);
    h.send(Reply::SlowOk(900)).await.unwrap(); // 4 of 6: 66%
    h.send(Reply::SlowOk(900)).await.unwrap(); // 5 of 7: 71%
    assert_eq!(handle.state(), CircuitState::Closed);
    h.send(Reply::SlowOk(900)).await.unwrap(); // 6 of 8: 75%
    assert_eq!(handle.state(), CircuitState::Open);
    let m = handle.metrics();
    assert_eq!((m.calls, m.slow_calls, m.failures), (8, 6, 0));
    let events = h.events.lock().unwrap().join("\n");
    assert!(events.contains("slow-call rate 75.0%"), "{events}");
}

/// Issue 14, item 6: an open breaker's refusal names it and says when it
/// may admit calls again; held open by hand, it says so.
#[tokio::test(start_paused = true)]
async fn a_refusal_says_which_breaker_and_when() {
    let (mut h, handle) = harness(builder());
    h.send_all(&[Reply::Fail; 4]).await;
    assert_eq!(handle.state(), CircuitState::Open);
    tokio::time::advance(Duration::from_millis(2_500)).await;
    let err = h.send(Reply::Ok).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        r#"circuit breaker "backend" is open; it may admit calls again in 7.5s"#
    );
    let open = err.downcast_ref::<CircuitOpen>().unwrap();
    assert_eq!(
        (open.name(), open.retry_after()),
        ("backend", Duration::from_millis(7_500))
    );
    handle.force_open();
    let err = h.send(Reply::Ok).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        r#"circuit breaker "backend" is held open by hand"#
    );
}

#[tokio::test(start_paused = true)]
async fn trips_on_consecutive_failures() {
    let (mut h, handle) = harness(
        builder()
            .count_window(100)
            .failure_rate_threshold(1.0)
            .consecutive_failures(3),
    );
    h.send_all(&[
        Reply::Ok,
        Reply::Ok,
        Reply::Ok,
        Reply::Fail,
        Reply::Fail,
        Reply::Ok,
    ])
    .await;
    h.send_all(&[Reply::Fail, Reply::Fail]).await;
    assert_eq!(handle.state(), CircuitState::Closed);
    assert_eq!(handle.metrics().consecutive_failures, 2);
    h.send(Reply::Fail).await.unwrap_err();
    assert_eq!(handle.state(), CircuitState::Open);
    let events = h.events.lock().unwrap().join("\n");
    assert!(events.contains("too many consecutive failures"), "{events}");
}

/// Issue 14, item 8: a consecutive-failures trip does not wait for
/// `minimum_calls` (as Envoy's `consecutive_5xx` and Finagle's
/// `consecutiveFailures` do not); the rates still do.
#[tokio::test(start_paused = true)]
async fn consecutive_failures_trip_before_the_minimum() {
    let (mut h, handle) = harness(
        builder()
            .count_window(100)
            .minimum_calls(50)
            .consecutive_failures(3),
    );
    h.send_all(&[Reply::Fail, Reply::Fail]).await;
    assert_eq!(handle.state(), CircuitState::Closed, "100% failed, 2 calls");
    h.send(Reply::Fail).await.unwrap_err();
    assert_eq!(handle.state(), CircuitState::Open);
    let events = h.events.lock().unwrap().join("\n");
    assert!(events.contains("too many consecutive failures"), "{events}");
}

/// Issue 14, item 8: an unset `minimum_calls` follows a count window
/// smaller than its default, and an unset window grows to an explicit
/// `minimum_calls`; only two explicit settings that contradict each other
/// are refused.
#[tokio::test(start_paused = true)]
async fn defaults_adapt_to_what_was_set() {
    // A window of 10 calls with the default minimum: judged after 10.
    let layer = CircuitBreakerLayer::builder()
        .count_window(10)
        .build()
        .unwrap();
    let handle = layer.handle();
    let mut svc = layer.layer(service_fn(|fail: bool| async move {
        if fail {
            Err::<(), BoxError>("down".into())
        } else {
            Ok(())
        }
    }));
    for _ in 0..9 {
        let _ = svc.ready().await.unwrap().call(true).await;
    }
    assert_eq!(handle.state(), CircuitState::Closed, "9 calls, minimum 10");
    let _ = svc.ready().await.unwrap().call(true).await;
    assert_eq!(handle.state(), CircuitState::Open);

    // A minimum above the default window's 100 calls: the window holds it.
    let layer = CircuitBreakerLayer::builder()
        .minimum_calls(150)
        .build()
        .unwrap();
    let handle = layer.handle();
    let mut svc = layer.layer(service_fn(|fail: bool| async move {
        if fail {
            Err::<(), BoxError>("down".into())
        } else {
            Ok(())
        }
    }));
    for _ in 0..149 {
        let _ = svc.ready().await.unwrap().call(true).await;
    }
    assert_eq!(handle.state(), CircuitState::Closed);
    let _ = svc.ready().await.unwrap().call(true).await;
    assert_eq!(handle.state(), CircuitState::Open, "150 of 150 failed");

    // Both set, and at odds: refused, naming both.
    let err = CircuitBreakerLayer::builder()
        .count_window(10)
        .minimum_calls(11)
        .build()
        .unwrap_err();
    assert_eq!(err.parameter(), "minimum_calls");
    assert!(err.reason().contains("count_window(10)"), "{err}");
}

#[tokio::test(start_paused = true)]
async fn ignored_outcomes_count_neither_way() {
    let (mut h, handle) = harness(builder());
    h.send_all(&[Reply::Ignore; 20]).await;
    assert_eq!(handle.metrics().calls, 0);
    h.send_all(&[
        Reply::Fail,
        Reply::Ignore,
        Reply::Fail,
        Reply::Ignore,
        Reply::Fail,
    ])
    .await;
    assert_eq!(
        handle.state(),
        CircuitState::Closed,
        "3 counted calls < minimum 4"
    );
    // In half-open, an ignored probe gives its permit back.
    h.send(Reply::Fail).await.unwrap_err();
    assert_eq!(handle.state(), CircuitState::Open);
    advance(Duration::from_secs(10)).await;
    h.send_all(&[Reply::Ignore, Reply::Ignore, Reply::Ignore])
        .await;
    assert_eq!(handle.state(), CircuitState::HalfOpen);
    h.send_all(&[Reply::Ok, Reply::Ok]).await;
    assert_eq!(handle.state(), CircuitState::Closed);
}

#[tokio::test(start_paused = true)]
async fn time_window_forgets_old_calls() {
    let (mut h, handle) = harness(
        CircuitBreakerLayer::builder()
            .time_window(Duration::from_secs(10))
            .minimum_calls(4)
            .failure_rate_threshold(0.5),
    );
    h.send_all(&[Reply::Fail, Reply::Fail, Reply::Fail]).await;
    advance(Duration::from_secs(11)).await;
    // The three failures left the window: 1 of 4 failed now.
    h.send_all(&[Reply::Ok, Reply::Ok, Reply::Ok, Reply::Fail])
        .await;
    assert_eq!(handle.state(), CircuitState::Closed);
    assert_eq!(handle.metrics().calls, 4);
    advance(Duration::from_secs(5)).await;
    h.send_all(&[Reply::Fail, Reply::Fail, Reply::Fail]).await; // 4 of 7
    assert_eq!(handle.state(), CircuitState::Open);
}

#[tokio::test(start_paused = true)]
async fn outcomes_from_an_earlier_generation_are_dropped() {
    let (mut h, handle) = harness(builder().half_open_calls(1));
    // A slow call starts while the breaker is closed...
    let mut slow = h.svc.clone();
    let late = tokio::spawn(async move { slow.ready().await?.call(Reply::SlowFail(30_000)).await });
    tokio::task::yield_now().await;
    // ...the breaker trips, waits, probes, closes...
    h.send_all(&[Reply::Fail; 4]).await;
    advance(Duration::from_secs(10)).await;
    h.send(Reply::Ok).await.unwrap();
    assert_eq!(handle.state(), CircuitState::Closed);
    // ...and the slow failure, finishing now, does not count.
    late.await.unwrap().unwrap_err();
    assert_eq!(handle.metrics().calls, 0);
    assert_eq!(handle.metrics().consecutive_failures, 0);
}

#[tokio::test(start_paused = true)]
async fn dropped_probes_give_their_permits_back() {
    let (mut h, handle) = harness(builder());
    h.send_all(&[Reply::Fail; 4]).await;
    advance(Duration::from_secs(10)).await;
    // Both probes start and are cancelled (as a timeout above would).
    for _ in 0..3 {
        let mut a = h.svc.clone();
        let mut b = h.svc.clone();
        let fa = a.ready().await.unwrap().call(Reply::SlowOk(1000));
        let fb = b.ready().await.unwrap().call(Reply::SlowOk(1000));
        assert_eq!(handle.metrics().probes_in_flight, 2);
        assert!(is_open(&h.send(Reply::Ok).await));
        drop((fa, fb));
        assert_eq!(handle.metrics().probes_in_flight, 0);
    }
    // A permit reserved by poll_ready and never used is given back with its service.
    let mut reserved = h.svc.clone();
    reserved.ready().await.unwrap();
    assert_eq!(handle.metrics().probes_in_flight, 1);
    drop(reserved);
    assert_eq!(handle.metrics().probes_in_flight, 0);
    // The breaker is not stuck: two new probes close it.
    h.send_all(&[Reply::Ok, Reply::Ok]).await;
    assert_eq!(handle.state(), CircuitState::Closed);
}

/// An inner service that is never ready.
#[derive(Clone)]
struct NeverReady;

impl Service<Reply> for NeverReady {
    type Response = &'static str;
    type Error = BoxError;
    type Future = std::future::Ready<Result<&'static str, BoxError>>;
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Pending
    }
    fn call(&mut self, _: Reply) -> Self::Future {
        panic!("called without readiness")
    }
}

#[tokio::test(start_paused = true)]
async fn an_open_breaker_is_ready_even_if_its_service_is_not() {
    let layer = builder().build().unwrap();
    let handle = layer.handle();
    let mut svc = layer.layer(NeverReady);
    handle.force_open();
    let err = svc
        .ready()
        .await
        .unwrap()
        .call(Reply::Ok)
        .await
        .unwrap_err();
    assert_eq!(ErrorKind::of(&err), ErrorKind::CircuitOpen);
    assert_eq!(
        err.downcast_ref::<CircuitOpen>().unwrap().retry_after(),
        Duration::MAX,
        "forced open: no end known"
    );
    handle.reset();
    let waker = std::task::Waker::noop();
    let mut cx = Context::from_waker(waker);
    assert!(
        svc.poll_ready(&mut cx).is_pending(),
        "closed: as ready as the service"
    );
}

#[tokio::test(start_paused = true)]
async fn state_changes_between_poll_ready_and_call_are_seen() {
    let (mut h, handle) = harness(builder());
    let mut svc = h.svc.clone();
    svc.ready().await.unwrap(); // admitted while closed
    h.send_all(&[Reply::Fail; 4]).await;
    assert_eq!(handle.state(), CircuitState::Open);
    let before = h.backend_calls();
    assert!(is_open(&svc.call(Reply::Ok).await));
    assert_eq!(h.backend_calls(), before);
}

#[tokio::test(start_paused = true)]
async fn manual_states() {
    let (mut h, handle) = harness(builder());
    handle.disable();
    h.send_all(&[Reply::Fail; 20]).await;
    assert_eq!(handle.state(), CircuitState::Disabled);
    assert_eq!(handle.metrics().calls, 0, "disabled records nothing");

    handle.metrics_only();
    h.send_all(&[Reply::Fail; 20]).await;
    assert_eq!(handle.state(), CircuitState::MetricsOnly, "never opens");
    assert_eq!(handle.metrics().failures, 10);
    h.send_all(&[Reply::Ok; 10]).await;
    h.send_all(&[Reply::Fail; 10]).await;
    let exceeded = h
        .events
        .lock()
        .unwrap()
        .iter()
        .filter(|e| e.contains("failure rate"))
        .count();
    assert_eq!(exceeded, 2, "one event per crossing of the threshold");

    handle.force_open();
    let before = h.backend_calls();
    assert!(is_open(&h.send(Reply::Ok).await));
    advance(Duration::from_secs(3600)).await;
    assert!(is_open(&h.send(Reply::Ok).await), "forced open stays open");
    assert_eq!(h.backend_calls(), before);

    handle.reset();
    assert_eq!(handle.state(), CircuitState::Closed);
    assert_eq!(handle.metrics().calls, 0);
    h.send(Reply::Ok).await.unwrap();
    let transitions: Vec<String> = h
        .events
        .lock()
        .unwrap()
        .iter()
        .filter(|e| e.contains("set by hand"))
        .cloned()
        .collect();
    assert_eq!(transitions.len(), 4, "{transitions:?}");
}

#[tokio::test(start_paused = true)]
async fn clones_of_layer_and_service_share_one_breaker() {
    let layer = builder().build().unwrap();
    let handle = layer.handle();
    let calls = Arc::new(AtomicUsize::new(0));
    let mut a = layer.clone().layer(backend(calls.clone()));
    let mut b = layer.layer(backend(calls.clone())).clone();
    for svc in [&mut a, &mut b] {
        for _ in 0..2 {
            let _ = svc.ready().await.unwrap().call(Reply::Fail).await;
        }
    }
    assert_eq!(handle.state(), CircuitState::Open);
    assert!(is_open(&a.ready().await.unwrap().call(Reply::Ok).await));
    assert_eq!(a.handle().state(), CircuitState::Open);
}

#[tokio::test(start_paused = true)]
async fn every_transition_and_rejection_is_an_event() {
    let events = Arc::new(Mutex::new(Vec::new()));
    let log = events.clone();
    let layer = builder()
        .on_event(move |e: &Event<'_>| {
            let entry = match e.kind() {
                Some(BreakerEvent::StateTransition { from, to, reason }) => {
                    format!("{from:?}->{to:?}:{reason:?}")
                }
                Some(BreakerEvent::CallRejected { retry_after }) => {
                    format!("rejected:{}", retry_after.as_secs())
                }
                Some(BreakerEvent::FailureRateExceeded { rate, .. }) => {
                    format!("failure-rate:{rate}")
                }
                Some(BreakerEvent::CallFinished { outcome, .. }) => {
                    format!("finished:{outcome:?}")
                }
                _ => format!("{e:?}"),
            };
            log.lock().unwrap().push(entry);
        })
        .build()
        .unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let mut svc = layer.layer(backend(calls));
    for r in [
        Reply::Fail,
        Reply::Fail,
        Reply::Fail,
        Reply::Fail,
        Reply::Ok,
    ] {
        let _ = svc.ready().await.unwrap().call(r).await;
    }
    advance(Duration::from_secs(10)).await;
    for r in [Reply::Ok, Reply::Ok] {
        let _ = svc.ready().await.unwrap().call(r).await;
    }
    assert_eq!(
        *events.lock().unwrap(),
        [
            "finished:Failure",
            "finished:Failure",
            "finished:Failure",
            "finished:Failure",
            "failure-rate:1",
            "Closed->Open:FailureRate",
            "rejected:10",
            "Open->HalfOpen:WaitElapsed",
            "finished:Success",
            "finished:Success",
            "HalfOpen->Closed:ProbesSucceeded",
        ]
    );
}

#[test]
fn bad_configurations_are_refused() {
    let refused = |b: CircuitBreakerBuilder| b.build().unwrap_err().parameter();
    let b = CircuitBreakerLayer::builder;
    assert_eq!(refused(b().count_window(0)), "count_window");
    assert_eq!(refused(b().count_window(2_000_000)), "count_window");
    assert_eq!(
        refused(b().count_window(10).minimum_calls(11)),
        "minimum_calls"
    );
    assert_eq!(refused(b().minimum_calls(0)), "minimum_calls");
    assert_eq!(refused(b().time_window(Duration::ZERO)), "time_window");
    assert_eq!(
        refused(b().time_window_buckets(Duration::from_secs(1), 0)),
        "time_window"
    );
    assert_eq!(
        refused(b().time_window_buckets(Duration::from_millis(5), 10)),
        "time_window"
    );
    assert_eq!(refused(b().time_window(Duration::MAX)), "time_window");
    for bad in [0.0, -0.5, 1.01, f64::NAN, f64::INFINITY] {
        assert_eq!(
            refused(b().failure_rate_threshold(bad)),
            "failure_rate_threshold"
        );
        assert_eq!(
            refused(b().slow_call_rate_threshold(bad)),
            "slow_call_rate_threshold"
        );
    }
    assert_eq!(
        refused(b().slow_call_duration(Duration::ZERO)),
        "slow_call_duration"
    );
    assert_eq!(refused(b().wait_duration(Duration::ZERO)), "wait_duration");
    assert_eq!(refused(b().wait_duration(Duration::MAX)), "wait_duration");
    assert_eq!(refused(b().consecutive_failures(0)), "consecutive_failures");
    assert_eq!(refused(b().half_open_calls(0)), "half_open_calls");
    assert_eq!(refused(b().half_open_calls(1001)), "half_open_calls");
    // The time window accepts long windows with its default buckets.
    assert!(b().time_window(Duration::from_secs(3600)).build().is_ok());
    assert!(
        b().time_window(Duration::from_millis(250))
            .minimum_calls(1)
            .build()
            .is_ok()
    );
}

/// Issue 12, defect 2: a probe permit taken in `poll_ready` before the
/// breaker was forced open must not reach the service.
#[tokio::test(start_paused = true)]
async fn a_probe_taken_before_force_open_is_refused_at_call() {
    let (mut h, handle) = harness(builder());
    h.send_all(&[Reply::Fail; 4]).await;
    advance(Duration::from_secs(10)).await;
    let mut svc = h.svc.clone();
    svc.ready().await.unwrap(); // takes a probe: half-open
    assert_eq!(handle.state(), CircuitState::HalfOpen);
    assert_eq!(handle.metrics().probes_in_flight, 1);
    handle.force_open();
    let before = h.backend_calls();
    assert!(is_open(&svc.call(Reply::Ok).await));
    assert_eq!(h.backend_calls(), before, "the service was not called");
}

/// Issue 12, defect 3: an admission kept from a closed breaker whose
/// service was not ready must not park the caller once the breaker opens.
#[tokio::test(start_paused = true)]
async fn an_admission_kept_across_force_open_does_not_park_the_caller() {
    let layer = builder().build().unwrap();
    let handle = layer.handle();
    let mut svc = layer.layer(NeverReady);
    let waker = std::task::Waker::noop();
    let mut cx = Context::from_waker(waker);
    assert!(svc.poll_ready(&mut cx).is_pending(), "closed: not ready");
    handle.force_open();
    assert!(
        matches!(svc.poll_ready(&mut cx), Poll::Ready(Ok(()))),
        "open: ready at once"
    );
    let err = svc.call(Reply::Ok).await.unwrap_err();
    assert_eq!(ErrorKind::of(&err), ErrorKind::CircuitOpen);
}

/// A time window starts empty in each new state, as a count window does:
/// the calls that opened the breaker are gone once it closes. (A mutant
/// that left the time window uncleared survived every other test.)
#[tokio::test(start_paused = true)]
async fn a_time_window_is_cleared_by_transitions() {
    let (mut h, handle) = harness(
        builder()
            .time_window(Duration::from_secs(60))
            .wait_duration(Duration::from_secs(1)),
    );
    h.send_all(&[Reply::Fail; 4]).await;
    assert_eq!(handle.state(), CircuitState::Open);
    assert_eq!(handle.metrics().calls, 4, "kept while open");
    advance(Duration::from_secs(1)).await;
    h.send_all(&[Reply::Ok, Reply::Ok]).await;
    assert_eq!(handle.state(), CircuitState::Closed);
    let m = handle.metrics();
    assert_eq!(
        (m.calls, m.failures),
        (0, 0),
        "closing starts an empty window"
    );
    h.send_all(&[Reply::Fail, Reply::Ok]).await;
    let m = handle.metrics();
    assert_eq!((m.calls, m.failures), (2, 1));
}

/// Every transition makes a state word never seen before: a call admitted
/// in a closed state, finishing after the breaker went through many more
/// stays of the same kinds, is still stale. (A mutant that derived the
/// generation from the word's low bits only, so that words repeat after a
/// dozen transitions of the same pattern, survived every other test.)
#[tokio::test(start_paused = true)]
async fn a_call_admitted_many_transitions_ago_is_still_stale() {
    let (h, handle) = harness(builder());
    let cycle = |n| {
        for _ in 0..n {
            handle.force_open();
            handle.reset();
        }
    };
    cycle(12);
    let mut stale = h.svc.clone();
    stale.ready().await.unwrap();
    let call = stale.call(Reply::Fail);
    cycle(12);
    assert!(call.await.is_err());
    assert_eq!(handle.metrics().calls, 0, "a stale outcome was counted");
}

/// Half-open, slow probes count against the slow-call rate: one slow probe
/// of two stays below a threshold of 100% and closes the breaker; two of
/// two reach it and open it again, though every probe succeeded. (Mutants
/// of the probes' slow count and rate survived every other test.)
#[tokio::test(start_paused = true)]
async fn slow_probes_are_judged_by_the_slow_call_rate() {
    for (probes, expected) in [
        ([Reply::SlowOk(100), Reply::Ok], CircuitState::Closed),
        ([Reply::SlowOk(100), Reply::SlowOk(100)], CircuitState::Open),
    ] {
        let (mut h, handle) = harness(
            builder()
                .slow_call_duration(Duration::from_millis(50))
                .slow_call_rate_threshold(1.0),
        );
        h.send_all(&[Reply::Fail; 4]).await;
        assert_eq!(handle.state(), CircuitState::Open);
        advance(Duration::from_secs(10)).await;
        h.send_all(&probes).await;
        assert_eq!(handle.state(), expected, "{probes:?}");
    }
}
