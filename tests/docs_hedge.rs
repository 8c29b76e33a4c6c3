//! The hedge layer (`palisade::hedge`) and `ReplaySource::alongside`,
//! tested from their rendered documentation alone: each test quotes the
//! sentence it checks. Time is tokio's paused clock throughout.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::collections::VecDeque;
use std::future::Future;
use std::pin::{Pin, pin};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use http_body_util::combinators::UnsyncBoxBody;
use palisade::BoxError;
use palisade::budget::RetryBudget;
use palisade::bulkhead::BulkheadLayer;
use palisade::circuit_breaker::{BreakerEvent, CircuitBreakerLayer};
use palisade::classify::{Classify, ClassifyRequest, GrpcClassifier, HttpClassifier, Outcome};
use palisade::error::{CircuitOpen, ConfigError};
use palisade::event::{Event, EventKind, Listener};
use palisade::hedge::{HedgeEvent, HedgeLayer, HedgeMode, HedgeTrigger, MAX_ATTEMPTS, SkipReason};
use palisade::replay::{ByClone, Replay, ReplayBodies, ReplaySource};
use palisade::retry::RetryLayer;
use palisade::timeout::TimeoutLayer;
use tokio::time::Instant;
use tower::{Layer, Service, ServiceBuilder, ServiceExt, service_fn};

// ---------------------------------------------------------------------------
// A per-thread allocation counter (for the "Cost" section).

struct Counting;

thread_local! {
    static ALLOCS: Cell<u64> = const { Cell::new(0) };
}

fn bump() {
    let _ = ALLOCS.try_with(|c| c.set(c.get() + 1));
}

fn allocs() -> u64 {
    ALLOCS.with(|c| c.get())
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        bump();
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        bump();
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        bump();
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

// ---------------------------------------------------------------------------
// Helpers.

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

type Events = Arc<Mutex<Vec<HedgeEvent>>>;

/// A listener that keeps every hedge event, and every whole event's text.
fn recorder() -> (Events, impl Listener) {
    let events: Events = Arc::default();
    let seen = events.clone();
    let listener = move |e: &Event<'_>| {
        if let Some(kind) = e.kind::<HedgeEvent>() {
            seen.lock().unwrap().push(*kind);
        }
    };
    (events, listener)
}

fn events(e: &Events) -> Vec<HedgeEvent> {
    e.lock().unwrap().clone()
}

/// Counts a future dropped before it finished.
struct CancelGuard {
    cancelled: Arc<AtomicU32>,
    done: bool,
}

impl Drop for CancelGuard {
    fn drop(&mut self) {
        if !self.done {
            self.cancelled.fetch_add(1, Ordering::SeqCst);
        }
    }
}

type Plan = Arc<dyn Fn(u32) -> (u64, Result<&'static str, &'static str>) + Send + Sync>;

/// What a scripted service saw: each attempt's number and start time.
#[derive(Clone)]
struct Rec {
    t0: Instant,
    starts: Arc<Mutex<Vec<Duration>>>,
    cancelled: Arc<AtomicU32>,
    calls: Arc<AtomicU32>,
}

impl Rec {
    fn new() -> Self {
        Rec {
            t0: Instant::now(),
            starts: Arc::default(),
            cancelled: Arc::default(),
            calls: Arc::default(),
        }
    }
    fn starts(&self) -> Vec<Duration> {
        self.starts.lock().unwrap().clone()
    }
    fn calls(&self) -> u32 {
        self.calls.load(Ordering::SeqCst)
    }
    fn cancelled(&self) -> u32 {
        self.cancelled.load(Ordering::SeqCst)
    }
}

/// The n-th call (from 1) takes `plan(n).0` ms and answers `plan(n).1`;
/// the answer carries the attempt's number.
#[derive(Clone)]
struct Scripted {
    rec: Rec,
    plan: Plan,
}

fn scripted(
    rec: &Rec,
    plan: impl Fn(u32) -> (u64, Result<&'static str, &'static str>) + Send + Sync + 'static,
) -> Scripted {
    Scripted {
        rec: rec.clone(),
        plan: Arc::new(plan),
    }
}

type BoxFut<T> = Pin<Box<dyn Future<Output = Result<T, BoxError>> + Send>>;

impl<Req> Service<Req> for Scripted {
    type Response = (u32, &'static str);
    type Error = BoxError;
    type Future = BoxFut<(u32, &'static str)>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _req: Req) -> Self::Future {
        let n = self.rec.calls.fetch_add(1, Ordering::SeqCst) + 1;
        self.rec.starts.lock().unwrap().push(self.rec.t0.elapsed());
        let (took, answer) = (self.plan)(n);
        let guard = CancelGuard {
            cancelled: self.rec.cancelled.clone(),
            done: false,
        };
        Box::pin(async move {
            let mut guard = guard;
            tokio::time::sleep(ms(took)).await;
            guard.done = true;
            answer.map(|v| (n, v)).map_err(BoxError::from)
        })
    }
}

/// Failures by their text: `fatal...` is not worth another attempt,
/// `unsent...` never left (and is not retryable otherwise), `ignored...`
/// counts neither way; any other error is a retryable failure.
#[derive(Clone, Copy, Debug)]
struct Judge;

impl<Res> Classify<Res, BoxError> for Judge {
    fn classify(&self, r: &Result<Res, BoxError>) -> Outcome {
        match r {
            Ok(_) => Outcome::Success,
            Err(e) if e.to_string().starts_with("ignored") => Outcome::Ignored,
            Err(_) => Outcome::Failure,
        }
    }
    fn is_retryable_failure(&self, r: &Result<Res, BoxError>) -> bool {
        match r {
            Ok(_) => false,
            Err(e) => {
                let t = e.to_string();
                !t.starts_with("fatal") && !t.starts_with("unsent")
            }
        }
    }
    fn is_not_sent(&self, r: &Result<Res, BoxError>) -> bool {
        matches!(r, Err(e) if e.to_string().starts_with("unsent"))
    }
}

impl<Req> ClassifyRequest<Req> for Judge {}

fn hedged(attempt: u32, trigger: HedgeTrigger) -> HedgeEvent {
    HedgeEvent::Hedged { attempt, trigger }
}

// ---------------------------------------------------------------------------
// The module's example, and the constants.

// "The first copy takes a second; any later one 10 ms." ...
// `assert_eq!(answer, ("user:42", 2), "the hedge, sent after 50 ms, won");`
// `assert_eq!(started.elapsed(), Duration::from_millis(60));`
#[tokio::test(start_paused = true)]
async fn module_example_hedge_sent_after_50ms_wins_at_60ms() {
    let calls = Arc::new(AtomicU32::new(0));
    let seen = calls.clone();
    let replica = service_fn(move |key: &'static str| {
        let n = seen.fetch_add(1, Ordering::SeqCst);
        async move {
            let took = if n == 0 { 1000 } else { 10 };
            tokio::time::sleep(Duration::from_millis(took)).await;
            Ok::<_, BoxError>((key, n + 1))
        }
    });
    let hedge = HedgeLayer::builder()
        .max_attempts(2)
        .delay(Duration::from_millis(50))
        .build()
        .unwrap();
    let mut svc = ServiceBuilder::new().layer(hedge).service(replica);

    let started = Instant::now();
    let answer = svc.ready().await.unwrap().call("user:42").await.unwrap();
    assert_eq!(answer, ("user:42", 2), "the hedge, sent after 50 ms, won");
    assert_eq!(started.elapsed(), Duration::from_millis(60));
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

// MAX_ATTEMPTS: "The most attempts a hedge may make, the first included: 5".
// max_attempts: "At most this many attempts per call, the first included: 1 to
// MAX_ATTEMPTS (5)." build, Errors: "Zero attempts or more than MAX_ATTEMPTS".
#[test]
fn max_attempts_bounds_one_to_five() {
    assert_eq!(MAX_ATTEMPTS, 5);
    for ok in 1..=MAX_ATTEMPTS {
        assert!(
            HedgeLayer::builder().max_attempts(ok).build().is_ok(),
            "{ok}"
        );
    }
    for bad in [0, MAX_ATTEMPTS + 1, 100] {
        let err: ConfigError = HedgeLayer::builder().max_attempts(bad).build().unwrap_err();
        // ConfigError: "Names the offending parameter and says why".
        assert_eq!(err.parameter(), "max_attempts", "{bad}: {err}");
        assert!(err.to_string().contains("max_attempts"), "{err}");
    }
}

// build, Errors: "a zero or unrepresentable delay or hint cap (a zero delay is
// HedgeMode::Parallel: say so)"; delay: "Above zero."
#[test]
fn builder_refuses_zero_or_unrepresentable_delay_and_hint_cap() {
    let zero = HedgeLayer::builder()
        .delay(Duration::ZERO)
        .build()
        .unwrap_err();
    assert_eq!(zero.parameter(), "delay", "{zero}");
    assert!(zero.to_string().contains("Parallel"), "{zero}");
    let huge = HedgeLayer::builder().delay(Duration::MAX).build();
    assert!(huge.is_err(), "an unrepresentable delay is refused");
    let hint = HedgeLayer::builder()
        .max_hint(Duration::ZERO)
        .build()
        .unwrap_err();
    assert_eq!(hint.parameter(), "max_hint", "{hint}");
    assert!(
        HedgeLayer::builder()
            .max_hint(Duration::MAX)
            .build()
            .is_err()
    );
    assert!(
        HedgeLayer::builder()
            .delay(ms(1))
            .max_hint(ms(1))
            .build()
            .is_ok()
    );
}

// build, Errors: "a percentile outside (0, 100), no minimum of samples, or a
// window under five milliseconds."
#[test]
fn builder_refuses_bad_percentile_settings() {
    let w = Duration::from_secs(10);
    for p in [0.0, 100.0, -1.0, 101.0, f64::NAN] {
        let r = HedgeLayer::builder().delay_percentile(p, 10, w).build();
        assert!(r.is_err(), "percent {p} must be refused");
    }
    assert!(
        HedgeLayer::builder()
            .delay_percentile(95.0, 0, w)
            .build()
            .is_err()
    );
    assert!(
        HedgeLayer::builder()
            .delay_percentile(95.0, 10, ms(4))
            .build()
            .is_err()
    );
    assert!(
        HedgeLayer::builder()
            .delay_percentile(95.0, 1, ms(5))
            .build()
            .is_ok()
    );
    assert!(
        HedgeLayer::builder()
            .delay_percentile(0.1, 1, w)
            .build()
            .is_ok()
    );
    assert!(
        HedgeLayer::builder()
            .delay_percentile(99.9, 1, w)
            .build()
            .is_ok()
    );
}

// ---------------------------------------------------------------------------
// Defaults and the three modes.

// Default: "budget RetryBudget::default: 20% of the last 10 s of requests, plus
// 10 a second"; HedgeLayer::budget: "The budget hedges spend from, if there is
// one."; no_budget: "Hedges are limited only by max_attempts".
// HedgeBuilder, Default: "name "hedge"", "max_attempts 2, counting the first
// (one hedge)", "mode HedgeMode::Latency", "delay 2 s (Polly’s default)".
#[tokio::test(start_paused = true)]
async fn defaults_one_hedge_after_two_seconds_named_hedge() {
    let budget_layer = HedgeLayer::builder().build().unwrap();
    let budget = budget_layer.budget().expect("a default budget");
    assert_eq!(budget.remaining(), RetryBudget::default().remaining());
    assert_eq!(
        budget.remaining(),
        100,
        "10 a second over 10 s, no requests yet"
    );
    assert!(
        HedgeLayer::builder()
            .no_budget()
            .build()
            .unwrap()
            .budget()
            .is_none()
    );
    let rec = Rec::new();
    let names = Arc::new(Mutex::new(Vec::<String>::new()));
    let seen = names.clone();
    let layer = HedgeLayer::builder()
        .on_event(move |e: &Event<'_>| seen.lock().unwrap().push(e.name().to_owned()))
        .build()
        .unwrap();
    let svc = layer.layer(scripted(&rec, |_| (10_000, Ok("slow"))));
    let (n, _) = svc.oneshot(()).await.unwrap();
    assert_eq!(n, 1, "the first attempt answered first");
    assert_eq!(rec.starts(), [ms(0), ms(2000)]);
    assert_eq!(rec.calls(), 2, "one hedge only");
    assert_eq!(HedgeMode::default(), HedgeMode::Latency);
    let names = names.lock().unwrap();
    assert!(
        !names.is_empty() && names.iter().all(|n| n == "hedge"),
        "{names:?}"
    );
}

// Latency: "the next attempt starts when the newest has not answered within the
// delay, while the earlier ones keep running"; HedgeMode::Latency: "and at once
// when one fails with a retryable failure."
#[tokio::test(start_paused = true)]
async fn latency_mode_counts_the_delay_from_the_newest_attempt() {
    let rec = Rec::new();
    let (ev, listener) = recorder();
    let layer = HedgeLayer::builder()
        .max_attempts(4)
        .delay(ms(100))
        .on_event(listener)
        .build()
        .unwrap();
    // 1: slow success; 2 (at 100): fails at 130; 3 (at once, 130): slow;
    // 4: due 100 ms after 3 started, at 230.
    let svc = layer.layer(scripted(&rec, |n| match n {
        1 => (1000, Ok("one")),
        2 => (30, Err("two failed")),
        3 => (1000, Ok("three")),
        _ => (5, Ok("four")),
    }));
    let t0 = Instant::now();
    let (n, v) = svc.oneshot(()).await.unwrap();
    assert_eq!((n, v), (4, "four"));
    assert_eq!(rec.starts(), [ms(0), ms(100), ms(130), ms(230)]);
    assert_eq!(t0.elapsed(), ms(235));
    let e = events(&ev);
    assert!(e.contains(&hedged(2, HedgeTrigger::Delay)), "{e:?}");
    assert!(e.contains(&hedged(3, HedgeTrigger::Failure)), "{e:?}");
    assert!(e.contains(&hedged(4, HedgeTrigger::Delay)), "{e:?}");
    assert!(
        e.contains(&HedgeEvent::Won {
            attempt: 4,
            attempts: 4
        }),
        "{e:?}"
    );
}

// Parallel: "Every attempt at once: the fastest answer wins, for the load of
// max_attempts calls each time."; HedgeTrigger::Parallel: "Every attempt starts
// at once".
#[tokio::test(start_paused = true)]
async fn parallel_mode_sends_every_attempt_at_once() {
    let rec = Rec::new();
    let (ev, listener) = recorder();
    let layer = HedgeLayer::builder()
        .mode(HedgeMode::Parallel)
        .max_attempts(3)
        .on_event(listener)
        .build()
        .unwrap();
    let svc = layer.layer(scripted(&rec, |n| match n {
        1 => (300, Ok("a")),
        2 => (200, Ok("b")),
        _ => (40, Ok("c")),
    }));
    let t0 = Instant::now();
    assert_eq!(svc.oneshot(()).await.unwrap(), (3, "c"));
    assert_eq!(t0.elapsed(), ms(40));
    assert_eq!(rec.starts(), [ms(0), ms(0), ms(0)]);
    assert_eq!(rec.cancelled(), 2);
    let e = events(&ev);
    assert!(e.contains(&hedged(2, HedgeTrigger::Parallel)), "{e:?}");
    assert!(e.contains(&hedged(3, HedgeTrigger::Parallel)), "{e:?}");
    assert!(
        e.contains(&HedgeEvent::Won {
            attempt: 3,
            attempts: 3
        }),
        "{e:?}"
    );
    assert!(e.contains(&HedgeEvent::Cancelled { attempts: 2 }), "{e:?}");
}

// Fallback: "The next attempt only when one fails with a retryable failure: a
// retry without a backoff, sent at once".
#[tokio::test(start_paused = true)]
async fn fallback_mode_hedges_only_on_failure_and_at_once() {
    // Slowness alone starts nothing, however long past the delay.
    let rec = Rec::new();
    let layer = HedgeLayer::builder()
        .mode(HedgeMode::Fallback)
        .max_attempts(3)
        .delay(ms(10))
        .build()
        .unwrap();
    let svc = layer.layer(scripted(&rec, |_| (5000, Ok("slow"))));
    assert_eq!(svc.oneshot(()).await.unwrap(), (1, "slow"));
    assert_eq!(rec.calls(), 1);

    // A failure starts the next at once.
    let rec = Rec::new();
    let (ev, listener) = recorder();
    let layer = HedgeLayer::builder()
        .mode(HedgeMode::Fallback)
        .max_attempts(3)
        .on_event(listener)
        .build()
        .unwrap();
    let svc = layer.layer(scripted(&rec, |n| match n {
        1 => (15, Err("down")),
        2 => (25, Err("down")),
        _ => (5, Ok("up")),
    }));
    assert_eq!(svc.oneshot(()).await.unwrap(), (3, "up"));
    assert_eq!(rec.starts(), [ms(0), ms(15), ms(40)]);
    let e = events(&ev);
    assert!(e.contains(&hedged(2, HedgeTrigger::Failure)), "{e:?}");
    assert!(e.contains(&hedged(3, HedgeTrigger::Failure)), "{e:?}");
}

// max_attempts: "1 sends every request once."
#[tokio::test(start_paused = true)]
async fn one_attempt_sends_every_request_once() {
    for mode in [HedgeMode::Latency, HedgeMode::Parallel, HedgeMode::Fallback] {
        let rec = Rec::new();
        let layer = HedgeLayer::builder()
            .mode(mode)
            .max_attempts(1)
            .delay(ms(10))
            .build()
            .unwrap();
        let svc = layer.layer(scripted(&rec, |_| (500, Err("down"))));
        let err = svc.oneshot(()).await.unwrap_err();
        assert_eq!(err.to_string(), "down");
        assert_eq!(rec.calls(), 1, "{mode:?}");
    }
}

// ---------------------------------------------------------------------------
// The delay: per attempt, and as a percentile.

// delay_fn: "the delay before each attempt from its number: 2 for the first
// hedge, up to max_attempts ... Called once per hedge, on the task of the call;
// a zero delay starts that attempt at once."
#[tokio::test(start_paused = true)]
async fn delay_fn_gives_each_attempt_its_delay() {
    let asked = Arc::new(Mutex::new(Vec::new()));
    let log = asked.clone();
    let layer = HedgeLayer::builder()
        .max_attempts(4)
        .delay_fn(move |n| {
            log.lock().unwrap().push(n);
            match n {
                2 => ms(30),
                3 => ms(70),
                _ => Duration::ZERO,
            }
        })
        .build()
        .unwrap();
    let rec = Rec::new();
    let svc = layer.layer(scripted(&rec, |_| (1000, Ok("slow"))));
    assert_eq!(svc.oneshot(()).await.unwrap(), (1, "slow"));
    // 2 after 30 ms; 3 70 ms after the newest (2); 4 at once after 3.
    assert_eq!(rec.starts(), [ms(0), ms(30), ms(100), ms(100)]);
    assert_eq!(*asked.lock().unwrap(), [2, 3, 4], "once per hedge");
}

/// A service whose successive calls take the given latencies (ms).
fn latencies(rec: &Rec, plan: Arc<Mutex<VecDeque<u64>>>) -> Scripted {
    scripted(rec, move |_| {
        let took = plan.lock().unwrap().pop_front().expect("a planned latency");
        (took, Ok("ok"))
    })
}

// delay_percentile: "the delay is the percent-th percentile ... of the
// latencies of the attempts that succeeded over the last window, once at least
// min_samples were seen; until then, delay." ... "so it is the upper edge of its
// class, at most 12.5% above the true value; it is read again at most once per
// fifth of the window."
#[tokio::test(start_paused = true)]
async fn percentile_delay_after_warm_up_then_fixed_again_after_the_window() {
    let plan = Arc::new(Mutex::new(VecDeque::new()));
    let rec = Rec::new();
    let layer = HedgeLayer::builder()
        .delay(ms(100))
        .delay_percentile(50.0, 3, Duration::from_secs(10))
        .build()
        .unwrap();
    let svc = layer.layer(latencies(&rec, plan.clone()));
    let call = async |lat: &[u64]| {
        plan.lock().unwrap().extend(lat);
        let before = rec.calls() as usize;
        let t = rec.t0.elapsed();
        svc.clone().oneshot(()).await.unwrap();
        let starts = rec.starts();
        starts[before..].iter().map(|s| *s - t).collect::<Vec<_>>()
    };
    // Warm-up: two samples only, so the fixed delay (100 ms) holds.
    call(&[20]).await;
    call(&[20]).await;
    assert_eq!(
        call(&[1000, 10]).await,
        [ms(0), ms(100)],
        "warm-up: the fixed delay"
    );
    // Now 3 successes of 20 ms and 1 of 10 ms; more of 20 ms.
    call(&[20]).await;
    call(&[20]).await;
    tokio::time::advance(Duration::from_secs(3)).await; // past a fifth of the window
    let starts = call(&[1000, 10]).await;
    assert_eq!(starts.len(), 2, "{starts:?}");
    assert!(
        starts[1] >= ms(20) && starts[1] <= ms(20) + ms(20) / 8,
        "p50 of ~20 ms latencies, read from its class's upper edge: {starts:?}"
    );
    // Past the window (and its fifth) every sample has left: the fixed delay again.
    tokio::time::advance(Duration::from_secs(13)).await;
    assert_eq!(call(&[1000, 10]).await, [ms(0), ms(100)], "no samples left");
}

// delay_percentile: "Only successful attempts count (a failure that comes back
// fast would otherwise lower the delay, and hedge more, during an outage)".
#[tokio::test(start_paused = true)]
async fn percentile_delay_ignores_failed_attempts() {
    let rec = Rec::new();
    let failing = Arc::new(AtomicU32::new(1));
    let f = failing.clone();
    let layer = HedgeLayer::builder()
        .delay(ms(100))
        .delay_percentile(50.0, 3, Duration::from_secs(10))
        .build()
        .unwrap();
    let svc = layer.layer(scripted(&rec, move |n| {
        if f.load(Ordering::SeqCst) == 1 {
            (5, Err("fast failure"))
        } else if n % 2 == 1 {
            (1000, Ok("slow"))
        } else {
            (10, Ok("fast"))
        }
    }));
    for _ in 0..10 {
        let _ = svc.clone().oneshot(()).await;
    }
    let failures = rec.calls() as usize;
    assert!(failures >= 10);
    tokio::time::advance(Duration::from_secs(3)).await;
    failing.store(0, Ordering::SeqCst);
    // Make the next call's first attempt odd-numbered (slow).
    if rec.calls() % 2 == 1 {
        let _ = svc.clone().oneshot(()).await; // call number is even: fast
    }
    let t = rec.t0.elapsed();
    let before = rec.calls() as usize;
    svc.clone().oneshot(()).await.unwrap();
    let starts: Vec<_> = rec.starts()[before..].iter().map(|s| *s - t).collect();
    assert_eq!(starts, [ms(0), ms(100)], "failures set no percentile");
}

// ---------------------------------------------------------------------------
// Who wins.

// "The first answer that the Classifyer does not call a Failure wins: it is
// returned, and every other attempt still running is dropped at once".
#[tokio::test(start_paused = true)]
async fn an_ignored_answer_is_not_a_failure_and_wins() {
    let rec = Rec::new();
    let (ev, listener) = recorder();
    let layer = HedgeLayer::builder()
        .classifier(Judge)
        .max_attempts(3)
        .delay(ms(50))
        .on_event(listener)
        .build()
        .unwrap();
    let svc = layer.layer(scripted(&rec, |n| match n {
        1 => (1000, Ok("slow")),
        _ => (10, Err("ignored: not found")),
    }));
    let t0 = Instant::now();
    let err = svc.oneshot(()).await.unwrap_err();
    assert_eq!(err.to_string(), "ignored: not found");
    assert_eq!(t0.elapsed(), ms(60));
    assert_eq!(rec.calls(), 2, "no third attempt: the call was answered");
    assert_eq!(rec.cancelled(), 1);
    let e = events(&ev);
    assert!(
        e.contains(&HedgeEvent::Won {
            attempt: 2,
            attempts: 2
        }),
        "{e:?}"
    );
}

// "every other attempt still running is dropped at once, which cancels it";
// Cancelled: "Attempts still running when the call ended were dropped,
// cancelling them."
#[tokio::test(start_paused = true)]
async fn losers_are_dropped_when_the_winner_answers() {
    let rec = Rec::new();
    let (ev, listener) = recorder();
    let layer = HedgeLayer::builder()
        .max_attempts(3)
        .delay(ms(20))
        .on_event(listener)
        .build()
        .unwrap();
    // 2 starts at 20 and answers at 45; 3 starts at 40.
    let svc = layer.layer(scripted(&rec, |n| match n {
        1 => (10_000, Ok("one")),
        2 => (25, Ok("two")),
        _ => (10_000, Ok("three")),
    }));
    let mut call = pin!(svc.oneshot(()));
    let out = std::future::poll_fn(|cx| call.as_mut().poll(cx))
        .await
        .unwrap();
    // Observed right as the answer came back, before anything else ran.
    assert_eq!(out, (2, "two"));
    assert_eq!(rec.calls(), 3);
    assert_eq!(
        rec.cancelled(),
        2,
        "both losers dropped by the time the call answers"
    );
    let e = events(&ev);
    assert!(
        e.contains(&HedgeEvent::Won {
            attempt: 2,
            attempts: 3
        }),
        "{e:?}"
    );
    assert!(e.contains(&HedgeEvent::Cancelled { attempts: 2 }), "{e:?}");
}

// "any other failure is fatal: it ends the call with that answer, and the other
// attempts are cancelled"; Failed: "fatal: Whether a fatal failure ended the
// call".
#[tokio::test(start_paused = true)]
async fn a_fatal_failure_ends_the_call_and_cancels_the_rest() {
    let rec = Rec::new();
    let (ev, listener) = recorder();
    let layer = HedgeLayer::builder()
        .classifier(Judge)
        .max_attempts(3)
        .delay(ms(50))
        .on_event(listener)
        .build()
        .unwrap();
    let svc = layer.layer(scripted(&rec, |n| match n {
        1 => (1000, Ok("slow")),
        2 => (10, Err("fatal: bad input")),
        _ => (1, Ok("never")),
    }));
    let t0 = Instant::now();
    let err = svc.oneshot(()).await.unwrap_err();
    assert_eq!(err.to_string(), "fatal: bad input");
    assert_eq!(t0.elapsed(), ms(60));
    assert_eq!(rec.calls(), 2);
    assert_eq!(rec.cancelled(), 1);
    let e = events(&ev);
    let failed = HedgeEvent::Failed {
        attempt: 2,
        attempts: 2,
        fatal: true,
    };
    assert!(e.contains(&failed), "{e:?}");
    assert!(e.contains(&HedgeEvent::Cancelled { attempts: 1 }), "{e:?}");
}

// "When every attempt has failed, the call returns the first attempt’s failure,
// as Polly returns the primary’s"; Failed: "the first attempt’s once every
// attempt had failed."
#[tokio::test(start_paused = true)]
async fn when_every_attempt_fails_the_first_failure_is_returned() {
    let rec = Rec::new();
    let (ev, listener) = recorder();
    let layer = HedgeLayer::builder()
        .max_attempts(3)
        .delay(ms(50))
        .on_event(listener)
        .build()
        .unwrap();
    // 1 fails last; 2 (at 50) fails at 60, so 3 starts at once and fails at 70.
    let svc = layer.layer(scripted(&rec, |n| match n {
        1 => (100, Err("first")),
        2 => (10, Err("second")),
        _ => (10, Err("third")),
    }));
    let t0 = Instant::now();
    let err = svc.oneshot(()).await.unwrap_err();
    assert_eq!(err.to_string(), "first");
    assert_eq!(t0.elapsed(), ms(100));
    assert_eq!(rec.starts(), [ms(0), ms(50), ms(60)]);
    let e = events(&ev);
    let failed = HedgeEvent::Failed {
        attempt: 1,
        attempts: 3,
        fatal: false,
    };
    assert!(e.contains(&failed), "{e:?}");
}

// "a retryable one (is_retryable_failure, or a request that never left, or a
// per-attempt timeout below ...) starts the next attempt at once"
#[tokio::test(start_paused = true)]
async fn a_request_that_never_left_starts_the_next_attempt_at_once() {
    let rec = Rec::new();
    let layer = HedgeLayer::builder()
        .classifier(Judge)
        .max_attempts(2)
        .delay(Duration::from_secs(5))
        .build()
        .unwrap();
    let svc = layer.layer(scripted(&rec, |n| match n {
        1 => (5, Err("unsent: connection refused")),
        _ => (10, Ok("two")),
    }));
    assert_eq!(svc.oneshot(()).await.unwrap(), (2, "two"));
    assert_eq!(rec.starts(), [ms(0), ms(5)]);
}

#[tokio::test(start_paused = true)]
async fn a_per_attempt_timeout_below_starts_the_next_attempt_at_once() {
    let rec = Rec::new();
    let (ev, listener) = recorder();
    let hedge = HedgeLayer::builder()
        .max_attempts(2)
        .delay(Duration::from_secs(5))
        .on_event(listener)
        .build()
        .unwrap();
    let svc = ServiceBuilder::new()
        .layer(hedge)
        .layer(TimeoutLayer::new(ms(30)).unwrap())
        .service(scripted(&rec, |n| match n {
            1 => (1000, Ok("hung")),
            _ => (10, Ok("two")),
        }));
    let t0 = Instant::now();
    assert_eq!(svc.oneshot(()).await.unwrap(), (2, "two"));
    assert_eq!(t0.elapsed(), ms(40));
    assert_eq!(rec.starts(), [ms(0), ms(30)]);
    assert!(events(&ev).contains(&hedged(2, HedgeTrigger::Failure)));
}

// ---------------------------------------------------------------------------
// Layers below: breaker, bulkhead.

// "(a circuit breaker below counts a dropped call Ignored, neither way)"
#[tokio::test(start_paused = true)]
async fn a_breaker_below_counts_the_dropped_loser_neither_way() {
    let rec = Rec::new();
    let outcomes = Arc::new(Mutex::new(Vec::new()));
    let seen = outcomes.clone();
    let breaker = CircuitBreakerLayer::builder()
        .on_event(move |e: &Event<'_>| {
            if let Some(BreakerEvent::CallFinished { outcome, .. }) = e.kind() {
                seen.lock().unwrap().push(*outcome);
            }
        })
        .build()
        .unwrap();
    let handle = breaker.handle();
    let hedge = HedgeLayer::builder().delay(ms(50)).build().unwrap();
    let svc = ServiceBuilder::new()
        .layer(hedge)
        .layer(breaker)
        .service(scripted(&rec, |n| match n {
            1 => (1000, Err("would fail")),
            _ => (10, Ok("two")),
        }));
    assert_eq!(svc.oneshot(()).await.unwrap(), (2, "two"));
    assert_eq!(rec.cancelled(), 1);
    let m = handle.metrics();
    assert_eq!(
        (m.calls, m.failures),
        (1, 0),
        "only the winner is in the window"
    );
    let outcomes = outcomes.lock().unwrap();
    assert!(!outcomes.contains(&Outcome::Failure), "{outcomes:?}");
    assert_eq!(
        outcomes.iter().filter(|o| **o == Outcome::Success).count(),
        1,
        "{outcomes:?}"
    );
}

// "a refusal by a palisade layer below (an open breaker, a full bulkhead, a
// rate limiter) stops further attempts, which would be refused too"; "When
// every attempt has failed, the call returns the first attempt’s failure".
#[tokio::test(start_paused = true)]
async fn an_open_breaker_below_refuses_and_no_hedge_follows() {
    let rec = Rec::new();
    let (ev, listener) = recorder();
    let breaker = CircuitBreakerLayer::builder().name("db").build().unwrap();
    breaker.handle().force_open();
    let hedge = HedgeLayer::builder()
        .max_attempts(3)
        .delay(ms(50))
        .on_event(listener)
        .build()
        .unwrap();
    let svc = ServiceBuilder::new()
        .layer(hedge)
        .layer(breaker)
        .service(scripted(&rec, |_| (10, Ok("never"))));
    let t0 = Instant::now();
    let err = svc.oneshot(()).await.unwrap_err();
    let open = err
        .downcast_ref::<CircuitOpen>()
        .expect("the breaker's refusal");
    assert_eq!(open.name(), "db");
    assert_eq!(t0.elapsed(), Duration::ZERO);
    assert_eq!(rec.calls(), 0);
    let e = events(&ev);
    assert!(
        !e.iter().any(|e| matches!(e, HedgeEvent::Hedged { .. })),
        "{e:?}"
    );
}

// "a refusal by a palisade layer below ... stops further attempts, which would
// be refused too; the running ones go on."
#[tokio::test(start_paused = true)]
async fn a_breaker_opening_mid_call_stops_hedging_and_the_running_attempt_goes_on() {
    let rec = Rec::new();
    let breaker = CircuitBreakerLayer::builder().build().unwrap();
    let handle = breaker.handle();
    let hedge = HedgeLayer::builder()
        .max_attempts(3)
        .delay(ms(50))
        .build()
        .unwrap();
    let inner = service_fn({
        let rec = rec.clone();
        move |_: ()| {
            let rec = rec.clone();
            let handle = handle.clone();
            let n = rec.calls.fetch_add(1, Ordering::SeqCst) + 1;
            async move {
                if n == 1 {
                    tokio::time::sleep(ms(10)).await;
                    handle.force_open(); // the breaker opens while attempt 1 runs
                    tokio::time::sleep(ms(990)).await;
                }
                Ok::<_, BoxError>(n)
            }
        }
    });
    let svc = ServiceBuilder::new()
        .layer(hedge)
        .layer(breaker)
        .service(inner);
    let t0 = Instant::now();
    assert_eq!(
        svc.oneshot(()).await.unwrap(),
        1,
        "the running attempt answered"
    );
    assert_eq!(t0.elapsed(), ms(1000));
    assert_eq!(
        rec.calls(),
        1,
        "the refused hedge never reached the service; no third"
    );
}

// "outside the circuit breaker, the bulkhead ... so that each attempt is judged,
// limited and timed on its own" / "dropped at once, which cancels it": every
// permit is back when the call returns.
#[tokio::test(start_paused = true)]
async fn bulkhead_permits_are_given_back_when_the_call_returns() {
    let rec = Rec::new();
    let bulkhead = BulkheadLayer::builder().max_concurrent(3).build().unwrap();
    let handle = bulkhead.handle();
    let hedge = HedgeLayer::builder()
        .max_attempts(3)
        .delay(ms(20))
        .build()
        .unwrap();
    let svc = ServiceBuilder::new()
        .layer(hedge)
        .layer(bulkhead)
        .service(scripted(&rec, |n| match n {
            3 => (5, Ok("three")),
            _ => (10_000, Ok("slow")),
        }));
    let mut svc2 = svc.clone();
    let answer = ServiceExt::<()>::ready(&mut svc2)
        .await
        .unwrap()
        .call(())
        .await;
    assert_eq!(answer.unwrap(), (3, "three"));
    drop(svc2);
    assert_eq!(rec.calls(), 3);
    assert_eq!(
        handle.in_flight(),
        0,
        "every attempt's permit was given back"
    );
    // And the next call gets all three permits again.
    assert_eq!(svc.oneshot(()).await.unwrap().0, 4);
}

// "a refusal by a palisade layer below (... a full bulkhead ...) stops further
// attempts ...; the running ones go on."
#[tokio::test(start_paused = true)]
async fn a_full_bulkhead_below_stops_hedging_and_the_running_attempt_goes_on() {
    let rec = Rec::new();
    let (ev, listener) = recorder();
    let bulkhead = BulkheadLayer::builder().max_concurrent(1).build().unwrap();
    let handle = bulkhead.handle();
    let hedge = HedgeLayer::builder()
        .max_attempts(3)
        .delay(ms(50))
        .on_event(listener)
        .build()
        .unwrap();
    let svc = ServiceBuilder::new()
        .layer(hedge)
        .layer(bulkhead)
        .service(scripted(&rec, |_| (1000, Ok("one"))));
    let t0 = Instant::now();
    assert_eq!(svc.oneshot(()).await.unwrap(), (1, "one"));
    assert_eq!(t0.elapsed(), ms(1000));
    assert_eq!(rec.calls(), 1);
    assert_eq!(handle.in_flight(), 0);
    let e = events(&ev);
    assert!(
        !e.iter()
            .any(|e| matches!(e, HedgeEvent::Hedged { attempt: 3, .. })),
        "no attempt after the refusal: {e:?}"
    );
}

// ---------------------------------------------------------------------------
// The budget.

// "When the budget is spent, or a hedge cannot be sent, the call goes on with
// the attempts running (HedgeEvent::Skipped)."; BudgetExhausted: "The budget
// had nothing left."
#[tokio::test(start_paused = true)]
async fn a_spent_budget_skips_the_hedge_and_the_call_goes_on() {
    let rec = Rec::new();
    let (ev, listener) = recorder();
    let empty = RetryBudget::new(Duration::from_secs(1), 0, 0.0).unwrap();
    assert_eq!(empty.remaining(), 0);
    let layer = HedgeLayer::builder()
        .max_attempts(3)
        .delay(ms(50))
        .budget(empty)
        .on_event(listener)
        .build()
        .unwrap();
    let svc = layer.layer(scripted(&rec, |_| (1000, Ok("one"))));
    assert_eq!(svc.oneshot(()).await.unwrap(), (1, "one"));
    assert_eq!(rec.calls(), 1);
    let e = events(&ev);
    let skipped = HedgeEvent::Skipped {
        attempt: 2,
        reason: SkipReason::BudgetExhausted,
    };
    assert_eq!(
        e.iter()
            .filter(|e| matches!(e, HedgeEvent::Skipped { .. }))
            .count(),
        1,
        "Skipped: no further one will be, for this call: {e:?}"
    );
    assert!(e.contains(&skipped), "{e:?}");
    assert!(
        e.contains(&HedgeEvent::Won {
            attempt: 1,
            attempts: 1
        }),
        "{e:?}"
    );
}

// "a budget shared with a retry layer bounds retries and hedges together";
// budget: "Clone the retry’s RetryBudget here to hold retries and hedges
// together under one bound".
#[tokio::test(start_paused = true)]
async fn a_budget_shared_with_a_retry_layer_bounds_both() {
    // One retry's worth: min_per_sec 1 over a ttl of 1 s, no share of traffic.
    let budget = RetryBudget::new(Duration::from_secs(1), 1, 0.0).unwrap();
    assert_eq!(budget.remaining(), 1);
    let hedge = HedgeLayer::builder()
        .delay(ms(50))
        .budget(budget.clone())
        .build()
        .unwrap();
    let retry = RetryLayer::builder()
        .max_attempts(3)
        .budget(budget.clone())
        .build()
        .unwrap();

    let slow = Rec::new();
    let hedged_svc = hedge.layer(scripted(&slow, |n| match n {
        1 => (1000, Ok("one")),
        _ => (10, Ok("two")),
    }));
    assert_eq!(hedged_svc.oneshot(()).await.unwrap(), (2, "two"));
    assert_eq!(budget.remaining(), 0, "the hedge spent the shared budget");

    let failing = Rec::new();
    let retried = retry.layer(scripted(&failing, |_| (1, Err("down"))));
    assert!(retried.oneshot(()).await.is_err());
    assert_eq!(failing.calls(), 1, "no retry left: the hedge spent it");
}

// HedgeLayer: "Every service the layer builds, and every clone, shares one
// configuration, one RetryBudget".
#[tokio::test(start_paused = true)]
async fn services_and_clones_of_one_layer_share_its_budget() {
    let budget = RetryBudget::new(Duration::from_secs(1), 1, 0.0).unwrap();
    let layer = HedgeLayer::builder()
        .delay(ms(50))
        .budget(budget)
        .build()
        .unwrap();
    let rec_a = Rec::new();
    let a = layer.layer(scripted(&rec_a, |_| (1000, Ok("a"))));
    assert!(a.oneshot(()).await.is_ok());
    assert_eq!(rec_a.calls(), 2, "the one hedge the budget allows");
    assert_eq!(layer.budget().unwrap().remaining(), 0);
    let rec_b = Rec::new();
    let other = layer.clone();
    let b = other.layer(scripted(&rec_b, |_| (1000, Ok("b"))));
    assert!(b.oneshot(()).await.is_ok());
    assert_eq!(
        rec_b.calls(),
        1,
        "a clone of the layer spends the same budget"
    );
}

// ---------------------------------------------------------------------------
// Which calls are hedged; the server's pushback (HTTP and gRPC).

fn http_service(
    rec: &Rec,
    plan: impl Fn(u32) -> (u64, u16, Option<(&'static str, &'static str)>) + Send + Sync + 'static,
) -> impl Service<
    http::Request<()>,
    Response = http::Response<u32>,
    Error = BoxError,
    Future = impl Future<Output = Result<http::Response<u32>, BoxError>> + Send,
> + Clone {
    let rec = rec.clone();
    let plan = Arc::new(plan);
    service_fn(move |_req: http::Request<()>| {
        let n = rec.calls.fetch_add(1, Ordering::SeqCst) + 1;
        rec.starts.lock().unwrap().push(rec.t0.elapsed());
        let (took, status, header) = plan(n);
        async move {
            tokio::time::sleep(ms(took)).await;
            let mut res = http::Response::builder().status(status);
            if let Some((k, v)) = header {
                res = res.header(k, v);
            }
            Ok::<_, BoxError>(res.body(n).unwrap())
        }
    })
}

// "Only requests the classifier says may be sent twice ... with HttpClassifier,
// idempotent methods, so a POST is sent once."
#[tokio::test(start_paused = true)]
async fn http_classifier_hedges_a_get_and_sends_a_post_once() {
    let layer = HedgeLayer::builder()
        .classifier(HttpClassifier::new())
        .max_attempts(3)
        .delay(ms(50))
        .build()
        .unwrap();

    let rec = Rec::new();
    let svc = layer.layer(http_service(&rec, |_| (1000, 200, None)));
    let res = svc
        .oneshot(http::Request::get("/x").body(()).unwrap())
        .await
        .unwrap();
    assert_eq!(*res.body(), 1);
    assert_eq!(rec.starts(), [ms(0), ms(50), ms(100)], "a GET is hedged");

    let rec = Rec::new();
    let svc = layer.layer(http_service(&rec, |_| (1000, 200, None)));
    let post = http::Request::post("/orders").body(()).unwrap();
    assert_eq!(*svc.oneshot(post).await.unwrap().body(), 1);
    assert_eq!(rec.calls(), 1, "a POST is sent once, however slow");

    let rec = Rec::new();
    let svc = layer.layer(http_service(&rec, |_| (10, 503, None)));
    let post = http::Request::post("/orders").body(()).unwrap();
    let res = svc.oneshot(post).await.unwrap();
    assert_eq!(res.status(), 503);
    assert_eq!(rec.calls(), 1, "a failed POST is not sent again");
}

// "starts the next attempt at once, or after the server’s pushback
// (Retry-After, grpc-retry-pushback-ms) if it gave one"; max_hint: "(gRPC A6:
// the pushback replaces the hedging delay for the next attempt)".
#[tokio::test(start_paused = true)]
async fn retry_after_delays_the_next_attempt() {
    let (ev, listener) = recorder();
    let layer = HedgeLayer::builder()
        .classifier(HttpClassifier::new())
        .delay(Duration::from_secs(5))
        .on_event(listener)
        .build()
        .unwrap();
    let rec = Rec::new();
    let svc = layer.layer(http_service(&rec, |n| match n {
        1 => (10, 503, Some(("retry-after", "1"))),
        _ => (10, 200, None),
    }));
    let res = svc
        .oneshot(http::Request::get("/").body(()).unwrap())
        .await
        .unwrap();
    assert_eq!((res.status().as_u16(), *res.body()), (200, 2));
    assert_eq!(rec.starts(), [ms(0), ms(1010)]);
    assert!(events(&ev).contains(&hedged(2, HedgeTrigger::Failure)));
}

// "a pushback of “do not retry”, or one above max_hint, stops further
// attempts"; Default: "max_hint 30s: a longer server pushback stops the
// hedging"; HintAboveCap: "The server’s pushback was longer than max_hint."
#[tokio::test(start_paused = true)]
async fn a_retry_after_above_max_hint_stops_the_hedging() {
    let (ev, listener) = recorder();
    let layer = HedgeLayer::builder()
        .classifier(HttpClassifier::new())
        .max_attempts(3)
        .delay(ms(50))
        .on_event(listener)
        .build()
        .unwrap();
    let rec = Rec::new();
    let svc = layer.layer(http_service(&rec, |_| {
        (10, 503, Some(("retry-after", "31")))
    }));
    let t0 = Instant::now();
    let res = svc
        .oneshot(http::Request::get("/").body(()).unwrap())
        .await
        .unwrap();
    assert_eq!(
        (res.status().as_u16(), *res.body()),
        (503, 1),
        "the server's answer"
    );
    assert_eq!(t0.elapsed(), ms(10));
    assert_eq!(rec.calls(), 1);
    let e = events(&ev);
    assert!(
        e.contains(&HedgeEvent::Skipped {
            attempt: 2,
            reason: SkipReason::HintAboveCap
        }),
        "{e:?}"
    );

    // Under a raised cap the same pushback is waited for.
    let layer = HedgeLayer::builder()
        .classifier(HttpClassifier::new())
        .delay(ms(50))
        .max_hint(Duration::from_secs(60))
        .build()
        .unwrap();
    let rec = Rec::new();
    let svc = layer.layer(http_service(&rec, |n| match n {
        1 => (10, 503, Some(("retry-after", "31"))),
        _ => (10, 200, None),
    }));
    let res = svc
        .oneshot(http::Request::get("/").body(()).unwrap())
        .await
        .unwrap();
    assert_eq!(*res.body(), 2);
    assert_eq!(rec.starts(), [ms(0), ms(31_010)]);
}

// max_hint: "a longer one, or “do not retry”, stops the hedging: the attempts
// running go on, no new one starts."; ServerSaidNo: "The server’s pushback said
// not to send the call again."; GrpcClassifier: "a negative or unreadable value
// means “do not retry”."
#[tokio::test(start_paused = true)]
async fn a_grpc_do_not_retry_pushback_stops_hedging_and_the_running_go_on() {
    let (ev, listener) = recorder();
    let layer = HedgeLayer::builder()
        .classifier(GrpcClassifier::new())
        .max_attempts(3)
        .delay(ms(50))
        .on_event(listener)
        .build()
        .unwrap();
    let rec = Rec::new();
    let rec2 = rec.clone();
    let inner = service_fn(move |_req: http::Request<()>| {
        let n = rec2.calls.fetch_add(1, Ordering::SeqCst) + 1;
        rec2.starts.lock().unwrap().push(rec2.t0.elapsed());
        async move {
            let res = if n == 1 {
                tokio::time::sleep(ms(1000)).await;
                http::Response::builder().header("grpc-status", "0")
            } else {
                tokio::time::sleep(ms(10)).await;
                http::Response::builder()
                    .header("grpc-status", "14")
                    .header("grpc-retry-pushback-ms", "-1")
            };
            Ok::<_, BoxError>(res.body(n).unwrap())
        }
    });
    let svc = layer.layer(inner);
    let t0 = Instant::now();
    let res = svc
        .oneshot(http::Request::get("/").body(()).unwrap())
        .await
        .unwrap();
    assert_eq!(*res.body(), 1, "the running attempt went on and answered");
    assert_eq!(t0.elapsed(), ms(1000));
    assert_eq!(rec.starts(), [ms(0), ms(50)], "no third attempt");
    let e = events(&ev);
    assert!(
        e.contains(&HedgeEvent::Skipped {
            attempt: 3,
            reason: SkipReason::ServerSaidNo
        }),
        "{e:?}"
    );
}

// "or after the server’s pushback (... grpc-retry-pushback-ms) if it gave one"
#[tokio::test(start_paused = true)]
async fn a_grpc_pushback_in_ms_delays_the_next_attempt() {
    let layer = HedgeLayer::builder()
        .classifier(GrpcClassifier::new())
        .delay(Duration::from_secs(5))
        .build()
        .unwrap();
    let rec = Rec::new();
    let rec2 = rec.clone();
    let inner = service_fn(move |_req: http::Request<()>| {
        let n = rec2.calls.fetch_add(1, Ordering::SeqCst) + 1;
        rec2.starts.lock().unwrap().push(rec2.t0.elapsed());
        async move {
            tokio::time::sleep(ms(10)).await;
            let res = if n == 1 {
                http::Response::builder()
                    .header("grpc-status", "14")
                    .header("grpc-retry-pushback-ms", "250")
            } else {
                http::Response::builder().header("grpc-status", "0")
            };
            Ok::<_, BoxError>(res.body(n).unwrap())
        }
    });
    let svc = layer.layer(inner);
    let res = svc
        .oneshot(http::Request::get("/").body(()).unwrap())
        .await
        .unwrap();
    assert_eq!(*res.body(), 2);
    assert_eq!(rec.starts(), [ms(0), ms(260)]);
}

// ---------------------------------------------------------------------------
// Streamed bodies: ReplayBodies and ReplaySource::alongside.

type Caller = UnsyncBoxBody<Bytes, BoxError>;

/// A body of `chunks` frames, each after `every` ms.
fn streamed(chunks: &'static [&'static str], every: u64) -> Caller {
    let stream = futures_util::stream::unfold(0usize, move |i| async move {
        if i == chunks.len() {
            return None;
        }
        tokio::time::sleep(ms(every)).await;
        let frame = http_body::Frame::data(Bytes::from_static(chunks[i].as_bytes()));
        Some((Ok::<_, BoxError>(frame), i + 1))
    });
    http_body_util::StreamBody::new(stream).boxed_unsync()
}

fn full(bytes: &'static str) -> Caller {
    http_body_util::Full::new(Bytes::from_static(bytes.as_bytes()))
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// Each attempt reads its whole body (unless `read_first` is false for the
/// first), then attempt 1 takes a second and the others 10 ms.
fn body_reader<B>(
    rec: &Rec,
    read_first: bool,
    bodies: Arc<Mutex<Vec<(u32, Bytes)>>>,
) -> impl Service<
    http::Request<B>,
    Response = u32,
    Error = BoxError,
    Future = impl Future<Output = Result<u32, BoxError>> + Send,
> + Clone
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let rec = rec.clone();
    service_fn(move |req: http::Request<B>| {
        let n = rec.calls.fetch_add(1, Ordering::SeqCst) + 1;
        rec.starts.lock().unwrap().push(rec.t0.elapsed());
        let bodies = bodies.clone();
        async move {
            if n > 1 || read_first {
                let bytes = req
                    .into_body()
                    .collect()
                    .await
                    .map_err(Into::into)?
                    .to_bytes();
                bodies.lock().unwrap().push((n, bytes));
            }
            tokio::time::sleep(ms(if n == 1 { 1000 } else { 10 })).await;
            Ok::<_, BoxError>(n)
        }
    })
}

// "a streamed body is hedged only once it has been read whole"; alongside
// (HttpSource): "A copy only once the caller’s body has ended, whole within the
// limit: the copy plays the recording back".
#[tokio::test(start_paused = true)]
async fn replay_bodies_hedges_a_body_read_whole_with_the_same_bytes() {
    let layer = HedgeLayer::builder()
        .requests(ReplayBodies::default())
        .delay(ms(50))
        .build()
        .unwrap();
    let rec = Rec::new();
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let svc = layer.layer(body_reader(&rec, true, bodies.clone()));
    let req = http::Request::put("/doc")
        .body(streamed(&["ab", "cd", "ef"], 10))
        .unwrap();
    let t0 = Instant::now();
    assert_eq!(svc.oneshot(req).await.unwrap(), 2, "the hedge won");
    assert_eq!(t0.elapsed(), ms(60));
    assert_eq!(rec.starts(), [ms(0), ms(50)]);
    let bodies = bodies.lock().unwrap();
    assert_eq!(
        *bodies,
        [(1, Bytes::from("abcdef")), (2, Bytes::from("abcdef"))]
    );
}

// (Changed by issue 18: a hedge due while the body is still being sent now
// waits for it, so that gRPC's "hedgingDelay 0s" hedges a tonic call.)
// hedge docs: "a hedge that comes due while the first attempt is still sending
// the body waits for it, and is sent as soon as the body has been read".
#[tokio::test(start_paused = true)]
async fn replay_bodies_hedges_a_body_still_being_sent_once_it_is_read() {
    let (ev, listener) = recorder();
    let layer = HedgeLayer::builder()
        .requests(ReplayBodies::default())
        .delay(ms(50))
        .on_event(listener)
        .build()
        .unwrap();
    let rec = Rec::new();
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let svc = layer.layer(body_reader(&rec, true, bodies.clone()));
    // The body ends at 120 ms: the hedge is due at 50, sent once it ends.
    let req = http::Request::put("/doc")
        .body(streamed(&["ab", "cd", "ef"], 40))
        .unwrap();
    assert_eq!(svc.oneshot(req).await.unwrap(), 2, "the hedge won");
    assert_eq!(rec.calls(), 2);
    assert_eq!(rec.starts()[1], ms(120), "sent when the body was whole");
    assert_eq!(
        *bodies.lock().unwrap(),
        [(1, Bytes::from("abcdef")), (2, Bytes::from("abcdef"))]
    );
    let e = events(&ev);
    assert!(
        !e.iter().any(|e| matches!(e, HedgeEvent::Skipped { .. })),
        "{e:?}"
    );
}

// "a streamed body is hedged only once it has been read whole (an empty body at
// once)."
#[tokio::test(start_paused = true)]
async fn replay_bodies_hedges_an_empty_body_at_once() {
    let layer = HedgeLayer::builder()
        .requests(ReplayBodies::default())
        .delay(ms(50))
        .build()
        .unwrap();
    let rec = Rec::new();
    let bodies = Arc::new(Mutex::new(Vec::new()));
    // The first attempt never reads its (empty) body.
    let svc = layer.layer(body_reader(&rec, false, bodies.clone()));
    let req = http::Request::get("/").body(full("")).unwrap();
    assert_eq!(svc.oneshot(req).await.unwrap(), 2);
    assert_eq!(rec.starts(), [ms(0), ms(50)]);
    assert_eq!(*bodies.lock().unwrap(), [(2, Bytes::new())]);
}

// ReplaySource::alongside: "Another copy to send while earlier attempts may
// still be running (a hedge), or None if there can be none yet. It must not
// take anything from the earlier attempts’ copies." HttpSource: "A copy only
// once the caller’s body has ended ... the copy plays the recording back and
// leaves the running attempts’ bodies alone."
#[tokio::test(start_paused = true)]
async fn http_source_alongside_waits_for_the_whole_body_and_takes_nothing() {
    let req = http::Request::put("/x").body(full("hello")).unwrap();
    let (first, source) = ReplayBodies::default().first(req, true);
    let mut source = source.expect("a retryable request keeps a source");
    assert!(source.alongside().is_none(), "nothing recorded yet");

    let mut first_body = first.into_body();
    let frame = first_body.frame().await.unwrap().unwrap();
    assert_eq!(frame.into_data().unwrap(), "hello");
    // The caller's body has been read; is it known to have ended? Read on.
    let copy_before_end = source.alongside();
    assert!(first_body.frame().await.is_none(), "the first body ended");
    let copy = match copy_before_end {
        Some(c) => c,
        None => source.alongside().expect("a copy once the body is whole"),
    };
    let bytes = copy.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(bytes, "hello");
    // A second copy beside the first, and the first attempt's body untouched.
    let again = source.alongside().expect("copies beside copies");
    assert_eq!(again.method(), http::Method::PUT);
    assert_eq!(again.uri(), "/x");
    assert_eq!(
        again.into_body().collect().await.unwrap().to_bytes(),
        "hello"
    );
    assert!(
        first_body.frame().await.is_none(),
        "the running attempt's body was left alone (ended, not failed)"
    );
}

// alongside: "The default is again, right for a source whose copies are
// independent (Cloned, reqwest::Request)".
// NotCopyable: "or was over the replay limit"; ReplayBodies: "once more than
// limit bytes were read, the recording is freed and the call is not retried".
#[tokio::test(start_paused = true)]
async fn alongside_clones_by_clone_and_gives_nothing_over_the_limit() {
    let (first, source) = ByClone.first(String::from("req"), true);
    assert_eq!(first, "req");
    let mut source = source.expect("ByClone keeps a clone");
    assert_eq!(source.alongside().as_deref(), Some("req"));
    assert_eq!(source.alongside().as_deref(), Some("req"));
    assert_eq!(source.again().as_deref(), Some("req"));
    let req = http::Request::put("/x").body(full("0123456789")).unwrap();
    let (first, source) = ReplayBodies::with_limit(4).first(req, true);
    let mut first_body = first.into_body();
    let bytes = (&mut first_body).collect().await.unwrap().to_bytes();
    assert_eq!(bytes, "0123456789", "sent once, whole, never truncated");
    if let Some(mut source) = source {
        assert!(source.alongside().is_none());
    }
}

// ---------------------------------------------------------------------------
// Services: ready and clones.

#[derive(Default)]
struct Shared {
    next_id: AtomicU32,
    calls: Mutex<Vec<(u32, bool)>>,
}

struct Tracked {
    id: u32,
    ready: bool,
    shared: Arc<Shared>,
}

impl Clone for Tracked {
    fn clone(&self) -> Self {
        Tracked {
            id: self.shared.next_id.fetch_add(1, Ordering::SeqCst) + 1,
            ready: false,
            shared: self.shared.clone(),
        }
    }
}

impl Service<()> for Tracked {
    type Response = u32;
    type Error = BoxError;
    type Future = BoxFut<u32>;
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.ready = true;
        Poll::Ready(Ok(()))
    }
    fn call(&mut self, _: ()) -> Self::Future {
        let mut calls = self.shared.calls.lock().unwrap();
        calls.push((self.id, self.ready));
        let n = calls.len() as u32;
        self.ready = false;
        Box::pin(async move {
            tokio::time::sleep(ms(if n == 1 { 1000 } else { 10 })).await;
            Ok(n)
        })
    }
}

// "The inner service must be Clone. The first attempt goes to the service this
// layer was polled ready on; the future keeps a clone and drives its poll_ready
// before each further attempt."
#[tokio::test(start_paused = true)]
async fn each_attempt_goes_to_a_service_polled_ready() {
    let shared = Arc::new(Shared::default());
    let inner = Tracked {
        id: 0,
        ready: false,
        shared: shared.clone(),
    };
    let layer = HedgeLayer::builder()
        .max_attempts(3)
        .delay(ms(50))
        .build()
        .unwrap();
    let mut svc = layer.layer(inner);
    assert_eq!(svc.ready().await.unwrap().call(()).await.unwrap(), 2);
    let calls = shared.calls.lock().unwrap().clone();
    assert_eq!(calls.len(), 2, "{calls:?}");
    assert!(
        calls.iter().all(|(_, ready)| *ready),
        "every call after poll_ready: {calls:?}"
    );
    assert_eq!(
        calls[0].0, 0,
        "the first attempt went to the service polled ready"
    );
    assert_ne!(calls[1].0, 0, "the hedge went to a clone");
    assert_eq!(svc.get_ref().id, 0);
}

/// Its clones fail to get ready.
struct ClonesFail {
    clone: bool,
    calls: Arc<AtomicU32>,
}

impl Clone for ClonesFail {
    fn clone(&self) -> Self {
        ClonesFail {
            clone: true,
            calls: self.calls.clone(),
        }
    }
}

impl Service<()> for ClonesFail {
    type Response = u32;
    type Error = BoxError;
    type Future = BoxFut<u32>;
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        if self.clone {
            Poll::Ready(Err("not ready".into()))
        } else {
            Poll::Ready(Ok(()))
        }
    }
    fn call(&mut self, _: ()) -> Self::Future {
        let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
        Box::pin(async move {
            tokio::time::sleep(ms(1000)).await;
            Ok(n)
        })
    }
}

// NotReady: "The service failed while getting ready for the hedge."; Skipped:
// "A hedge was due and was not sent; no further one will be, for this call
// (the attempts running go on)."
#[tokio::test(start_paused = true)]
async fn a_clone_failing_to_get_ready_skips_the_hedge() {
    let (ev, listener) = recorder();
    let calls = Arc::new(AtomicU32::new(0));
    let layer = HedgeLayer::builder()
        .max_attempts(3)
        .delay(ms(50))
        .on_event(listener)
        .build()
        .unwrap();
    let svc = layer.layer(ClonesFail {
        clone: false,
        calls: calls.clone(),
    });
    let t0 = Instant::now();
    assert_eq!(
        svc.oneshot(()).await.unwrap(),
        1,
        "the running attempt went on"
    );
    assert_eq!(t0.elapsed(), ms(1000));
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    let e = events(&ev);
    let skipped = HedgeEvent::Skipped {
        attempt: 2,
        reason: SkipReason::NotReady,
    };
    assert!(e.contains(&skipped), "{e:?}");
    assert_eq!(
        e.iter()
            .filter(|e| matches!(e, HedgeEvent::Skipped { .. }))
            .count(),
        1,
        "{e:?}"
    );
}

// ---------------------------------------------------------------------------
// Events, labels, debug output.

// HedgeTrigger::as_str: "The trigger as a metric label value: delay, failure,
// parallel."; ALL: "Every trigger, in the order of their metric labels."
// event::metrics: "Each label’s values are the variants of an enum of
// palisade’s, in snake case".
#[test]
fn trigger_and_skip_reason_label_values() {
    let triggers: Vec<_> = HedgeTrigger::ALL.iter().map(|t| t.as_str()).collect();
    assert_eq!(triggers, ["delay", "failure", "parallel"]);
    let reasons: Vec<_> = SkipReason::ALL.iter().map(|r| r.as_str()).collect();
    assert_eq!(
        reasons,
        [
            "budget_exhausted",
            "server_said_no",
            "hint_above_cap",
            "not_copyable",
            "not_ready",
            "refused"
        ]
    );
}

// HedgeEvent Display: "The event without the layer’s name."; EventKind::describe:
// "The event as a sentence, for logs, with the layer’s name"; Event::key: "None
// for any other layer’s events." Event::name: "The name of the layer it
// happened in."
#[tokio::test(start_paused = true)]
async fn event_texts_carry_the_layer_name_and_kinds_do_not() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    let layer = HedgeLayer::builder()
        .name("search-replicas")
        .max_attempts(3)
        .delay(ms(50))
        .on_event(move |e: &Event<'_>| {
            let kind = e.kind::<HedgeEvent>().copied().expect("a hedge event");
            assert_eq!(e.name(), "search-replicas");
            assert_eq!(e.key(), None);
            log.lock()
                .unwrap()
                .push((kind, e.to_string(), kind.to_string()));
        })
        .build()
        .unwrap();
    let rec = Rec::new();
    let svc = layer.layer(scripted(&rec, |n| match n {
        1 => (1000, Ok("one")),
        2 => (5, Err("two")),
        _ => (10, Ok("three")),
    }));
    svc.oneshot(()).await.unwrap();
    let seen = seen.lock().unwrap();
    assert!(seen.len() >= 4, "hedged ×2, won, cancelled: {seen:?}");
    for (kind, whole, bare) in seen.iter() {
        assert!(whole.contains("search-replicas"), "{kind:?}: {whole}");
        assert!(!bare.contains("search-replicas"), "{kind:?}: {bare}");
        assert!(!bare.is_empty());
    }
}

// event::metrics: "MetricsEvents (feature metrics; every metric it records,
// with its labels, is in the table of event::metrics)": whatever a HedgeEvent
// measures must be one of the table's metrics. (Found missing by the first
// docs-only pass; the table now lists the hedge's five.)
#[test]
fn hedge_events_record_only_metrics_of_the_table() {
    const TABLE: [&str; 22] = [
        "palisade.hedge.hedges",
        "palisade.hedge.skipped",
        "palisade.hedge.wins",
        "palisade.hedge.failed_calls",
        "palisade.hedge.cancelled_attempts",
        "palisade.circuit_breaker.state",
        "palisade.circuit_breaker.transitions",
        "palisade.circuit_breaker.calls",
        "palisade.circuit_breaker.threshold_crossings",
        "palisade.bulkhead.active_calls",
        "palisade.bulkhead.rejected_calls",
        "palisade.rate_limiter.rejected_calls",
        "palisade.rate_limiter.delayed_calls",
        "palisade.keyed.keys",
        "palisade.keyed.instances_created",
        "palisade.keyed.evictions",
        "palisade.keyed.rejected_calls",
        "palisade.keyed.shared_calls",
        "palisade.retry.attempts",
        "palisade.retry.retries",
        "palisade.retry.failed_calls",
        "palisade.timeout.timed_out_calls",
    ];
    let mut kinds = vec![
        HedgeEvent::Won {
            attempt: 1,
            attempts: 1,
        },
        HedgeEvent::Failed {
            attempt: 1,
            attempts: 2,
            fatal: true,
        },
        HedgeEvent::Failed {
            attempt: 1,
            attempts: 2,
            fatal: false,
        },
        HedgeEvent::Cancelled { attempts: 1 },
    ];
    for trigger in HedgeTrigger::ALL {
        kinds.push(HedgeEvent::Hedged {
            attempt: 2,
            trigger,
        });
    }
    for reason in SkipReason::ALL {
        kinds.push(HedgeEvent::Skipped { attempt: 2, reason });
    }
    let mut off_table = Vec::new();
    for kind in kinds {
        kind.measure(&mut |m| {
            let text = format!("{m:?}");
            if !TABLE
                .iter()
                .any(|name| text.contains(&format!("\"{name}\"")))
            {
                off_table.push(text);
            }
        });
    }
    assert!(
        off_table.is_empty(),
        "recorded but not in the table: {off_table:#?}"
    );
}

// HedgeMode::as_str: "The mode's name in snake case: latency, parallel,
// fallback (for a label or a log line of your own; Debug prints the
// variant)." (The first docs-only pass found the old sentence, "as events
// and debug output give it", untrue.)
#[test]
fn mode_names_are_snake_case_and_debug_prints_the_variant() {
    let names: Vec<_> = [HedgeMode::Latency, HedgeMode::Parallel, HedgeMode::Fallback]
        .into_iter()
        .map(HedgeMode::as_str)
        .collect();
    assert_eq!(names, ["latency", "parallel", "fallback"]);
    for (mode, variant) in [
        (HedgeMode::Latency, "Latency"),
        (HedgeMode::Parallel, "Parallel"),
        (HedgeMode::Fallback, "Fallback"),
    ] {
        let builder = HedgeLayer::builder().mode(mode);
        assert!(format!("{builder:?}").contains(&format!("mode: {variant}")));
        let layer = builder.build().unwrap();
        assert!(format!("{layer:?}").contains(&format!("mode: {variant}")));
    }
}

// ConfigError::part: "one of "respond", "fallback", "total_timeout", "retry",
// "circuit_breaker", "rate_limit", "bulkhead" and "attempt_timeout" (the
// setters’ names)."; ResilienceBuilder::hedge: "Hedges slow calls (the repeat
// slot, in the retry’s place".
#[test]
fn a_preset_hedge_error_names_its_part() {
    let Err(err) = palisade::Resilience::http()
        .hedge(|h| h.max_attempts(0))
        .build()
    else {
        panic!("zero attempts are refused");
    };
    let documented = [
        "respond",
        "fallback",
        "total_timeout",
        "retry",
        "hedge",
        "circuit_breaker",
        "rate_limit",
        "bulkhead",
        "attempt_timeout",
    ];
    let part = err.part().expect("from ResilienceBuilder::build");
    assert!(
        documented.contains(&part),
        "undocumented part {part:?}: {err}"
    );
    assert_eq!(err.parameter(), "max_attempts");
}

// ---------------------------------------------------------------------------
// Cost.

// "A call whose first attempt answers at its first poll arms no timer and
// allocates nothing: one clone of the request and one of the service, one
// budget deposit, one Arc clone."
#[tokio::test(start_paused = true)]
async fn a_call_answered_at_its_first_poll_allocates_nothing() {
    let layers = [
        HedgeLayer::builder().build().unwrap(),
        HedgeLayer::builder()
            .delay_percentile(95.0, 10, Duration::from_secs(10))
            .build()
            .unwrap(),
        HedgeLayer::builder()
            .mode(HedgeMode::Fallback)
            .build()
            .unwrap(),
    ];
    for layer in layers {
        let mut svc = layer.layer(service_fn(|x: u32| {
            std::future::ready(Ok::<_, BoxError>(x))
        }));
        svc.ready().await.unwrap();
        let _ = svc.call(0).await; // warm up once
        let mut cx = Context::from_waker(Waker::noop());
        let mut total = 0;
        for i in 1..=5 {
            let _ = svc.ready().await.unwrap();
            let before = allocs();
            let fut = svc.call(i);
            let out = pin!(fut).poll(&mut cx);
            total += allocs() - before;
            assert!(matches!(out, Poll::Ready(Ok(n)) if n == i));
        }
        assert_eq!(total, 0, "{layer:?}");
    }
}

// "A call still waiting after its first poll arms one boxed timer (as the
// timeout does); its first hedge allocates one box that holds the futures of
// every attempt after the first, and later hedges allocate nothing." (The
// first docs-only pass found the first hedge allocating twice, against the
// sentence then, "each hedge boxes its future".)
#[tokio::test(start_paused = true)]
async fn a_waiting_call_boxes_one_timer_and_its_first_hedge_one_box() {
    let layer = HedgeLayer::builder()
        .max_attempts(3)
        .delay(ms(50))
        .build()
        .unwrap();
    let calls = Arc::new(AtomicU32::new(0));
    let c = calls.clone();
    let mut svc = layer.layer(service_fn(move |_: u32| {
        let n = c.fetch_add(1, Ordering::SeqCst);
        // An unboxed future: the service allocates nothing itself. The third
        // attempt of each call answers after 10 ms, the others after 1 s.
        async move {
            tokio::time::sleep(ms(if n % 3 == 2 { 10 } else { 1000 })).await;
            Ok::<_, BoxError>(())
        }
    }));
    let mut cx = Context::from_waker(Waker::noop());
    // The same call twice: the first warms whatever is set up once.
    let mut seen = Vec::new();
    for _ in 0..2 {
        svc.ready().await.unwrap();
        let before = allocs();
        let mut fut = pin!(svc.call(1));
        assert!(fut.as_mut().poll(&mut cx).is_pending());
        let first_poll = allocs() - before;
        tokio::time::advance(ms(50)).await;
        let before = allocs();
        assert!(fut.as_mut().poll(&mut cx).is_pending());
        let first_hedge = allocs() - before;
        tokio::time::advance(ms(50)).await;
        let before = allocs();
        assert!(fut.as_mut().poll(&mut cx).is_pending());
        let second_hedge = allocs() - before;
        tokio::time::advance(ms(10)).await;
        assert!(matches!(fut.as_mut().poll(&mut cx), Poll::Ready(Ok(()))));
        seen.push((first_poll, first_hedge, second_hedge));
    }
    assert_eq!(calls.load(Ordering::SeqCst), 6);
    assert_eq!(
        seen[1],
        (1, 1, 0),
        "(first poll: one boxed timer, first hedge: one box, second: none); all runs: {seen:?}"
    );
}
