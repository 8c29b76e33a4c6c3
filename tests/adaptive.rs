//! The adaptive concurrency limit and the throttle, on paused time: what
//! each algorithm does with latency and failures, the bounds, the queue,
//! cancellation, the windows; the throttle's formula, what counts as a
//! request and an accept, and where they are counted. Concurrency is in
//! tests/adaptive_stress.rs; the shape against a changing capacity in
//! tests/adaptive_simulation.rs; gRPC trailers in tests/grpc_eos.rs.

use std::future::Future;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use palisade::BoxError;
use palisade::adaptive::{
    AdaptiveLimitEvent, AdaptiveLimitLayer, Aimd, Gradient2, LimitAlgorithm, MAX_ADAPTIVE_LIMIT,
    Sample, ThrottleEvent, ThrottleLayer, Vegas,
};
use palisade::classify::{Outcome, classify_fn};
use palisade::error::{ConcurrencyLimited, ErrorKind, Throttled};
use palisade::event::Event;
use tokio::time::Instant;
use tower::{Layer, Service, ServiceExt, service_fn};

const MS: Duration = Duration::from_millis(1);

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn ok(rtt: u64, in_flight: u32) -> Sample {
    Sample::new(ms(rtt), in_flight, false)
}

fn failed(rtt: u64, in_flight: u32) -> Sample {
    Sample::new(ms(rtt), in_flight, true)
}

/// An algorithm that records every sample it is taught and sets the limit
/// the test holds.
#[derive(Debug, Clone, Default)]
struct Scripted {
    limit: Arc<AtomicU32>,
    seen: Arc<Mutex<Vec<Sample>>>,
}

impl Scripted {
    fn new(limit: u32) -> Self {
        let s = Self::default();
        s.limit.store(limit, Ordering::SeqCst);
        s
    }
    fn set(&self, limit: u32) {
        self.limit.store(limit, Ordering::SeqCst);
    }
    fn seen(&self) -> Vec<Sample> {
        self.seen.lock().unwrap().clone()
    }
}

impl LimitAlgorithm for Scripted {
    fn initial_limit(&self) -> u32 {
        self.limit.load(Ordering::SeqCst)
    }
    fn update(&mut self, sample: &Sample) -> u32 {
        self.seen.lock().unwrap().push(*sample);
        self.limit.load(Ordering::SeqCst)
    }
}

/// A service whose calls take the milliseconds they are given, and fail
/// when asked to.
fn sleeper() -> impl Service<(u64, bool), Response = u64, Error = BoxError, Future: Send> + Clone {
    service_fn(|(ms, fail): (u64, bool)| async move {
        tokio::time::sleep(Duration::from_millis(ms)).await;
        if fail {
            Err::<u64, BoxError>("failed".into())
        } else {
            Ok(ms)
        }
    })
}

// ---------------------------------------------------------------- AIMD

#[test]
fn aimd_adds_one_while_at_least_half_used_and_multiplies_on_a_failure() {
    let mut aimd = Aimd::builder()
        .initial_limit(10)
        .min_limit(2)
        .max_limit(12)
        .build()
        .unwrap();
    assert_eq!(aimd.initial_limit(), 10);
    assert_eq!(aimd.update(&ok(5, 5)), 11, "5 of 10 in flight: grows");
    assert_eq!(
        aimd.update(&ok(5, 5)),
        11,
        "5 of 11: fewer than half, stays"
    );
    assert_eq!(aimd.update(&ok(5, 6)), 12);
    assert_eq!(aimd.update(&ok(5, 12)), 12, "the ceiling");
    assert_eq!(aimd.update(&failed(5, 12)), 10, "12 × 0.9, rounded down");
    // A success slower than the timeout is a failure.
    let mut aimd = Aimd::builder()
        .initial_limit(10)
        .min_limit(2)
        .timeout(ms(100))
        .backoff_ratio(0.5)
        .build()
        .unwrap();
    assert_eq!(aimd.update(&ok(100, 10)), 11, "at the timeout: not slower");
    assert_eq!(aimd.update(&ok(101, 10)), 5);
    for _ in 0..10 {
        aimd.update(&failed(1, 10));
    }
    assert_eq!(aimd.update(&failed(1, 10)), 2, "the floor");
}

#[test]
fn aimd_defaults_are_concurrency_limits() {
    let mut aimd = Aimd::default();
    assert_eq!(aimd.initial_limit(), 20);
    assert_eq!(aimd.update(&failed(1, 20)), 20, "the floor is 20");
    for _ in 0..500 {
        aimd.update(&ok(1, 1000));
    }
    assert_eq!(aimd.update(&ok(1, 1000)), 200, "the ceiling is 200");
    assert_eq!(aimd.update(&ok(5_001, 1000)), 180, "slower than 5 s: × 0.9");
}

// ---------------------------------------------------------------- Vegas

#[test]
fn vegas_rules_step_by_step() {
    assert_eq!(Vegas::default().initial_limit(), 20);
    assert_eq!(
        Vegas::builder()
            .initial_limit(7)
            .build()
            .unwrap()
            .initial_limit(),
        7
    );
    let new = || {
        let mut v = Vegas::builder().seed(3).build().unwrap();
        v.update(&ok(100, 20)); // no-load RTT 100 ms, limit 20 (log 1)
        v
    };
    // queue = ceil(20 × (1 − 100 / rtt)).
    assert_eq!(new().update(&ok(100, 20)), 26, "queue 0 ≤ log: + 6");
    assert_eq!(
        new().update(&ok(110, 20)),
        21,
        "queue 2: below 3 × log: + log"
    );
    assert_eq!(
        new().update(&ok(120, 20)),
        20,
        "queue 4: between 3 and 6: stays"
    );
    assert_eq!(
        new().update(&ok(150, 20)),
        19,
        "queue 7: above 6 × log: − log"
    );
    assert_eq!(new().update(&failed(100, 20)), 19, "a failure: − log");
    assert_eq!(
        new().update(&ok(150, 9)),
        20,
        "9 of 20 in flight: app-limited, stays"
    );
    assert_eq!(
        new().update(&failed(150, 9)),
        19,
        "a failure counts even app-limited"
    );
    assert_eq!(
        new().update(&ok(50, 20)),
        20,
        "a lower RTT becomes the no-load RTT"
    );
    // log10 grows with the limit: at 150, steps are 2.
    let mut big = Vegas::builder().initial_limit(150).seed(3).build().unwrap();
    big.update(&ok(100, 150));
    assert_eq!(big.update(&ok(100, 150)), 162, "+ 6 × 2");
}

#[test]
fn vegas_measures_its_no_load_rtt_again_so_a_slower_service_is_not_queueing_for_ever() {
    let mut vegas = Vegas::builder()
        .initial_limit(10)
        .min_limit(1)
        .seed(5)
        .build()
        .unwrap();
    vegas.update(&ok(10, 10)); // no load: 10 ms
    // The service is now 40 ms for good: Vegas reads a queue and shrinks...
    let mut limit = 10;
    for _ in 0..20 {
        limit = vegas.update(&ok(40, 100));
    }
    assert!(limit < 10, "{limit}");
    // ...until, within 30 × limit samples (times a factor in [0.5, 1)),
    // it takes 40 ms as the no-load RTT and grows again.
    let mut grew = false;
    for _ in 0..30 * 10 {
        let next = vegas.update(&ok(40, 100));
        grew |= next > limit;
        limit = next;
    }
    assert!(grew, "the probe re-measured the no-load RTT");
    // The same seed probes at the same samples.
    let run = |seed| {
        let mut v = Vegas::builder().seed(seed).build().unwrap();
        (0..2_000)
            .map(|i| v.update(&ok(10 + (i % 7), 50)))
            .collect::<Vec<_>>()
    };
    assert_eq!(run(9), run(9));
}

#[test]
fn vegas_stays_within_its_bounds() {
    let mut vegas = Vegas::builder()
        .initial_limit(5)
        .min_limit(3)
        .max_limit(8)
        .seed(1)
        .build()
        .unwrap();
    vegas.update(&ok(10, 5));
    for _ in 0..20 {
        assert!(vegas.update(&ok(10, 100)) <= 8);
    }
    assert_eq!(vegas.update(&ok(10, 100)), 8);
    for _ in 0..20 {
        assert!(vegas.update(&failed(10, 100)) >= 3);
    }
    assert_eq!(vegas.update(&failed(10, 100)), 3);
}

#[test]
fn vegas_smoothing_takes_part_of_each_step() {
    let mut vegas = Vegas::builder().smoothing(0.5).seed(1).build().unwrap();
    vegas.update(&ok(10, 20));
    assert_eq!(vegas.update(&ok(10, 20)), 23, "half of + 6");
}

// ------------------------------------------------------------- Gradient2

#[test]
fn gradient2_grows_by_its_queue_allowance_and_shrinks_with_the_rtt() {
    let mut g = Gradient2::builder().min_limit(1).build().unwrap();
    assert_eq!(g.update(&ok(10, 20)), 20, "20 + 0.2 × 4 = 20.8");
    assert_eq!(g.update(&ok(10, 20)), 21, "21.6");
    assert_eq!(g.update(&ok(10, 21)), 22, "22.4");
    // Far slower than the long average (10 ms): the gradient is 0.5 at
    // most... the long RTT is the mean of the first ten: (3 × 10 + 200) / 4.
    assert_eq!(
        g.update(&ok(200, 22)),
        20,
        "22.4 × 0.8 + (22.4 × 0.5 + 4) × 0.2 = 20.96"
    );
    // Callers using less than half of it: no change.
    assert_eq!(g.update(&ok(10, 5)), 20);
    // A failure counts only through its RTT.
    let mut a = Gradient2::builder().min_limit(1).build().unwrap();
    let mut b = Gradient2::builder().min_limit(1).build().unwrap();
    for _ in 0..5 {
        assert_eq!(a.update(&ok(10, 20)), b.update(&failed(10, 20)));
    }
}

#[test]
fn gradient2_tolerates_its_rtt_tolerance_and_keeps_its_bounds() {
    let mut g = Gradient2::builder()
        .initial_limit(50)
        .min_limit(10)
        .max_limit(60)
        .build()
        .unwrap();
    assert_eq!(g.update(&ok(100, 50)), 50, "50.8");
    // The long average is then 120 ms; 1.5 × 120 = 180 ms is within the
    // tolerance: still a gradient of 1.
    assert_eq!(g.update(&ok(140, 50)), 51, "51.6");
    for _ in 0..100 {
        assert!(g.update(&ok(100, 100)) <= 60);
    }
    assert_eq!(g.update(&ok(100, 100)), 60, "the ceiling");
    // An RTT that doubles at each sample keeps the gradient at 0.5.
    let mut rtt = 100;
    for _ in 0..40 {
        rtt *= 2;
        assert!(g.update(&ok(rtt, 100)) >= 10);
    }
    assert_eq!(g.update(&ok(rtt * 2, 100)), 10, "the floor");
}

#[test]
fn gradient2_defaults_are_concurrency_limits() {
    let mut g = Gradient2::default();
    assert_eq!(g.initial_limit(), 20);
    for _ in 0..2_000 {
        g.update(&ok(1, 1_000));
    }
    assert_eq!(g.update(&ok(1, 1_000)), 200, "the ceiling is 200");
    let mut rtt = 1;
    for _ in 0..40 {
        rtt *= 2;
        g.update(&ok(rtt, 1_000));
    }
    assert_eq!(g.update(&ok(rtt * 2, 1_000)), 20, "the floor is 20");
}

// ---------------------------------------------------------- validation

#[test]
fn the_builders_refuse_what_cannot_work() {
    let refused = |e: palisade::error::ConfigError| e.parameter();
    assert_eq!(
        refused(Aimd::builder().min_limit(0).build().unwrap_err()),
        "min_limit"
    );
    assert_eq!(
        refused(
            Aimd::builder()
                .min_limit(30)
                .max_limit(20)
                .build()
                .unwrap_err()
        ),
        "max_limit"
    );
    assert_eq!(
        refused(
            Aimd::builder()
                .max_limit(MAX_ADAPTIVE_LIMIT + 1)
                .build()
                .unwrap_err()
        ),
        "max_limit"
    );
    assert_eq!(
        refused(Aimd::builder().initial_limit(300).build().unwrap_err()),
        "initial_limit"
    );
    assert_eq!(
        refused(Aimd::builder().backoff_ratio(1.0).build().unwrap_err()),
        "backoff_ratio"
    );
    assert_eq!(
        refused(Aimd::builder().backoff_ratio(0.4).build().unwrap_err()),
        "backoff_ratio"
    );
    assert_eq!(
        refused(Aimd::builder().backoff_ratio(f64::NAN).build().unwrap_err()),
        "backoff_ratio"
    );
    assert_eq!(
        refused(Aimd::builder().timeout(Duration::ZERO).build().unwrap_err()),
        "timeout"
    );
    assert!(Aimd::builder().backoff_ratio(0.5).build().is_ok());

    assert_eq!(
        refused(Vegas::builder().smoothing(0.0).build().unwrap_err()),
        "smoothing"
    );
    assert_eq!(
        refused(Vegas::builder().smoothing(1.5).build().unwrap_err()),
        "smoothing"
    );
    assert_eq!(
        refused(Vegas::builder().probe_multiplier(0).build().unwrap_err()),
        "probe_multiplier"
    );
    assert_eq!(
        refused(Vegas::builder().initial_limit(0).build().unwrap_err()),
        "initial_limit"
    );

    assert_eq!(
        refused(
            Gradient2::builder()
                .smoothing(f64::NAN)
                .build()
                .unwrap_err()
        ),
        "smoothing"
    );
    assert_eq!(
        refused(Gradient2::builder().long_window(9).build().unwrap_err()),
        "long_window"
    );
    assert_eq!(
        refused(Gradient2::builder().queue_size(10_001).build().unwrap_err()),
        "queue_size"
    );
    assert_eq!(
        refused(Gradient2::builder().rtt_tolerance(0.9).build().unwrap_err()),
        "rtt_tolerance"
    );
    assert_eq!(
        refused(
            Gradient2::builder()
                .rtt_tolerance(f64::INFINITY)
                .build()
                .unwrap_err()
        ),
        "rtt_tolerance"
    );

    let limit = || AdaptiveLimitLayer::builder();
    assert_eq!(
        refused(limit().max_wait(MS).build().unwrap_err()),
        "max_wait"
    );
    assert_eq!(
        refused(
            limit()
                .max_queue(1)
                .max_wait(Duration::ZERO)
                .build()
                .unwrap_err()
        ),
        "max_wait"
    );
    assert_eq!(
        refused(
            limit()
                .max_queue(MAX_ADAPTIVE_LIMIT + 1)
                .build()
                .unwrap_err()
        ),
        "max_queue"
    );
    assert_eq!(
        refused(limit().window(ms(2), MS).build().unwrap_err()),
        "window"
    );
    assert_eq!(
        refused(limit().min_samples(0).build().unwrap_err()),
        "min_samples"
    );
    assert_eq!(
        refused(limit().algorithm(Scripted::new(0)).build().unwrap_err()),
        "initial_limit"
    );
    assert_eq!(
        refused(
            limit()
                .algorithm(Scripted::new(MAX_ADAPTIVE_LIMIT + 1))
                .build()
                .unwrap_err()
        ),
        "initial_limit"
    );

    let throttle = || ThrottleLayer::builder();
    assert_eq!(refused(throttle().k(0.99).build().unwrap_err()), "k");
    assert_eq!(refused(throttle().k(f64::NAN).build().unwrap_err()), "k");
    assert_eq!(
        refused(
            throttle()
                .window(Duration::from_micros(19))
                .build()
                .unwrap_err()
        ),
        "window"
    );
    assert_eq!(
        refused(throttle().window(Duration::MAX).build().unwrap_err()),
        "window"
    );
    assert!(
        throttle()
            .k(1.0)
            .min_answered(0)
            .window(Duration::from_micros(20))
            .build()
            .is_ok()
    );
}

// ------------------------------------------------------------ the layer

/// A per-sample layer over `algorithm`, and its handle.
fn per_sample<A: LimitAlgorithm>(algorithm: A) -> AdaptiveLimitLayer {
    AdaptiveLimitLayer::builder()
        .algorithm(algorithm)
        .per_sample()
        .build()
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn each_finished_call_is_a_sample_of_its_rtt_and_the_calls_in_flight_when_it_started() {
    let algorithm = Scripted::new(10);
    let layer = per_sample(algorithm.clone());
    let svc = layer.layer(sleeper());
    let calls: Vec<_> = [30, 10, 20]
        .into_iter()
        .map(|ms| tokio::spawn(svc.clone().oneshot((ms, false))))
        .collect();
    for call in calls {
        call.await.unwrap().unwrap();
    }
    let seen = algorithm.seen();
    // In the order they ended; in flight counted at their start, themselves
    // included.
    assert_eq!(
        seen,
        [
            Sample::new(ms(10), 2, false),
            Sample::new(ms(20), 3, false),
            Sample::new(ms(30), 1, false),
        ]
    );
    assert_eq!(layer.handle().in_flight(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_failure_is_a_dropped_sample_and_an_ignored_call_is_no_sample() {
    let algorithm = Scripted::new(10);
    let layer = AdaptiveLimitLayer::builder()
        .algorithm(algorithm.clone())
        .per_sample()
        .classifier(classify_fn(|r: &Result<u64, BoxError>| match r {
            Ok(0) => Outcome::Ignored,
            Ok(_) => Outcome::Success,
            Err(_) => Outcome::Failure,
        }))
        .build()
        .unwrap();
    let handle = layer.handle();
    let svc = layer.layer(sleeper());
    svc.clone().oneshot((5, true)).await.unwrap_err();
    svc.clone().oneshot((0, false)).await.unwrap();
    svc.clone().oneshot((7, false)).await.unwrap();
    assert_eq!(
        algorithm.seen(),
        [Sample::new(ms(5), 1, true), Sample::new(ms(7), 1, false)]
    );
    assert_eq!(
        handle.in_flight(),
        0,
        "the ignored call gave its permit back"
    );
}

#[tokio::test(start_paused = true)]
async fn a_cancelled_call_is_no_sample_and_gives_its_permit_back() {
    let algorithm = Scripted::new(1);
    let layer = per_sample(algorithm.clone());
    let handle = layer.handle();
    let svc = layer.layer(sleeper());
    let cut = tokio::time::timeout(ms(10), svc.clone().oneshot((1_000, false))).await;
    assert!(cut.is_err(), "cancelled after 10 ms");
    assert!(
        algorithm.seen().is_empty(),
        "no sample: not a failure either"
    );
    assert_eq!(handle.in_flight(), 0);
    // The only permit is free again.
    svc.oneshot((1, false)).await.unwrap();
    assert_eq!(algorithm.seen().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn over_the_limit_calls_queue_then_give_up_and_beyond_the_queue_are_refused() {
    let layer = AdaptiveLimitLayer::builder()
        .name("inventory")
        .algorithm(Scripted::new(1))
        .max_queue(1)
        .max_wait(ms(50))
        .build()
        .unwrap();
    let handle = layer.handle();
    let svc = layer.layer(sleeper());
    let first = tokio::spawn(svc.clone().oneshot((1_000, false)));
    tokio::task::yield_now().await;
    let queued = tokio::spawn(svc.clone().oneshot((1, false)));
    tokio::task::yield_now().await;
    assert_eq!((handle.in_flight(), handle.queued()), (1, 1));
    let err = svc.clone().oneshot((1, false)).await.unwrap_err();
    let limited = err.downcast_ref::<ConcurrencyLimited>().unwrap();
    assert_eq!(
        (limited.limit(), limited.max_queue(), limited.waited()),
        (1, 1, None)
    );
    assert_eq!(ErrorKind::of(&err), ErrorKind::ConcurrencyLimited);

    let started = Instant::now();
    let err = queued.await.unwrap().unwrap_err();
    assert_eq!(started.elapsed(), ms(50), "gave up after the maximum wait");
    let limited = err.downcast_ref::<ConcurrencyLimited>().unwrap();
    assert_eq!(limited.waited(), Some(ms(50)));
    assert_eq!(limited.name(), "inventory");
    assert_eq!(first.await.unwrap().unwrap(), 1_000);
    assert_eq!((handle.in_flight(), handle.queued()), (0, 0));
}

#[tokio::test(start_paused = true)]
async fn a_dropped_queued_call_gives_its_place_back() {
    let layer = AdaptiveLimitLayer::builder()
        .algorithm(Scripted::new(1))
        .max_queue(1)
        .build()
        .unwrap();
    let handle = layer.handle();
    let svc = layer.layer(sleeper());
    let _first = tokio::spawn(svc.clone().oneshot((1_000, false)));
    tokio::task::yield_now().await;
    let queued = tokio::spawn(svc.clone().oneshot((1, false)));
    tokio::task::yield_now().await;
    assert_eq!(handle.queued(), 1);
    queued.abort();
    let _ = queued.await;
    assert_eq!(handle.queued(), 0);
    // Its place is free: another call may queue.
    let again = tokio::spawn(svc.clone().oneshot((1, false)));
    tokio::task::yield_now().await;
    assert_eq!(handle.queued(), 1);
    again.abort();
}

#[tokio::test(start_paused = true)]
async fn a_raised_limit_admits_queued_calls_and_a_lowered_one_cuts_no_call_off() {
    let algorithm = Scripted::new(2);
    let layer = AdaptiveLimitLayer::builder()
        .algorithm(algorithm.clone())
        .per_sample()
        .max_queue(2)
        .build()
        .unwrap();
    let handle = layer.handle();
    let svc = layer.layer(sleeper());
    let long = tokio::spawn(svc.clone().oneshot((1_000, false)));
    let short = tokio::spawn(svc.clone().oneshot((10, false)));
    tokio::task::yield_now().await;
    let queued: Vec<_> = (0..2)
        .map(|_| tokio::spawn(svc.clone().oneshot((500, false))))
        .collect();
    tokio::task::yield_now().await;
    assert_eq!((handle.in_flight(), handle.queued()), (2, 2));
    // The short call ends and the algorithm says 4: its own permit and
    // two more go to both queued calls at once.
    algorithm.set(4);
    short.await.unwrap().unwrap();
    tokio::task::yield_now().await;
    assert_eq!(handle.limit(), 4);
    assert_eq!((handle.in_flight(), handle.queued()), (3, 0));

    // Down to 1 with three in flight: nobody is cut off...
    algorithm.set(1);
    let quick = svc.clone().oneshot((1, false)).await.unwrap();
    assert_eq!(quick, 1, "a fourth place was free at 4");
    assert_eq!(handle.limit(), 1);
    assert_eq!(handle.in_flight(), 3, "three calls run on above the limit");
    // ...and nobody is admitted until they are under it: a new call
    // queues until all three have ended.
    let late = tokio::spawn(svc.clone().oneshot((1, false)));
    tokio::task::yield_now().await;
    assert_eq!((handle.in_flight(), handle.queued()), (3, 1));
    for call in queued {
        call.await.unwrap().unwrap();
    }
    assert_eq!(
        (handle.in_flight(), handle.queued()),
        (1, 1),
        "1 in flight of 1"
    );
    long.await.unwrap().unwrap();
    let started = Instant::now();
    assert_eq!(late.await.unwrap().unwrap(), 1);
    assert_eq!(
        started.elapsed(),
        ms(1),
        "admitted when the long call ended"
    );
}

#[tokio::test(start_paused = true)]
async fn samples_are_learned_in_windows_of_twice_the_lowest_rtt() {
    let algorithm = Scripted::new(100);
    let layer = AdaptiveLimitLayer::builder()
        .algorithm(algorithm.clone())
        .window(ms(100), ms(250))
        .min_samples(3)
        .build()
        .unwrap();
    let svc = layer.layer(sleeper());
    // Calls of 60 ms, one every 10 ms.
    let mut calls = Vec::new();
    for i in 0..100u64 {
        calls.push(tokio::spawn(svc.clone().oneshot((60, i % 10 == 9))));
        tokio::time::sleep(ms(10)).await;
    }
    for call in calls {
        let _ = call.await.unwrap();
    }
    let seen = algorithm.seen();
    // The first window ends at 100 ms (the shortest) with the calls that
    // started at 0 to 40 ms; the next ones last 120 ms (twice 60 ms) and
    // close at 220, 340, ..., 940 ms, each with a failed call (one in ten)
    // and 6 in flight; the calls that ended after 940 ms wait in a window
    // not yet over.
    assert_eq!(seen.len(), 8, "{seen:?}");
    assert_eq!(seen[0], Sample::new(ms(60), 5, false));
    assert!(
        seen[1..].iter().all(|s| *s == Sample::new(ms(60), 6, true)),
        "{seen:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_window_waits_for_its_minimum_of_samples() {
    let algorithm = Scripted::new(10);
    let layer = AdaptiveLimitLayer::builder()
        .algorithm(algorithm.clone())
        .window(ms(100), ms(100))
        .min_samples(5)
        .build()
        .unwrap();
    let svc = layer.layer(sleeper());
    for _ in 0..4 {
        svc.clone().oneshot((200, false)).await.unwrap();
    }
    assert!(
        algorithm.seen().is_empty(),
        "4 samples: the window stays open"
    );
    svc.clone().oneshot((100, true)).await.unwrap_err();
    // The five, as one: mean RTT, a failure among them.
    assert_eq!(algorithm.seen(), [Sample::new(ms(180), 1, true)]);
}

#[tokio::test(start_paused = true)]
async fn the_limit_is_read_from_the_handle_and_each_change_is_an_event() {
    let events = Arc::new(Mutex::new(Vec::new()));
    let seen = events.clone();
    let layer = AdaptiveLimitLayer::builder()
        .name("inventory")
        .algorithm(
            Aimd::builder()
                .initial_limit(2)
                .min_limit(1)
                .build()
                .unwrap(),
        )
        .per_sample()
        .on_event(move |e: &Event<'_>| {
            if let Some(kind) = e.kind::<AdaptiveLimitEvent>() {
                seen.lock().unwrap().push((*kind, e.to_string()));
            }
        })
        .build()
        .unwrap();
    let handle = layer.handle();
    assert_eq!((handle.name(), handle.limit()), ("inventory", 2));
    let svc = layer.layer(sleeper());
    svc.clone().oneshot((1, true)).await.unwrap_err(); // 2 × 0.9 → 1
    assert_eq!(handle.limit(), 1);
    svc.clone().oneshot((1, false)).await.unwrap(); // 1 of 1 in flight → 2
    assert_eq!(handle.limit(), 2);
    let mut held = svc.clone();
    let mut other = svc.clone();
    held.ready().await.unwrap();
    other.ready().await.unwrap();
    svc.clone().oneshot((1, false)).await.unwrap_err();
    drop((held, other));
    assert_eq!(
        *events.lock().unwrap(),
        [
            (
                AdaptiveLimitEvent::LimitChanged { from: 2, to: 1 },
                "adaptive limit `inventory`: limit moved from 2 to 1".to_string()
            ),
            (
                AdaptiveLimitEvent::LimitChanged { from: 1, to: 2 },
                "adaptive limit `inventory`: limit moved from 1 to 2".to_string()
            ),
            (
                AdaptiveLimitEvent::Rejected {
                    timed_out_in_queue: false
                },
                "adaptive limit `inventory`: call rejected, the limit is reached".to_string()
            ),
        ]
    );
    assert_eq!(
        format!("{handle:?}"),
        r#"AdaptiveLimitHandle { name: "inventory", limit: 2, in_flight: 0, queued: 0 }"#
    );
}

#[tokio::test(start_paused = true)]
async fn every_service_of_a_layer_and_every_clone_share_one_limit() {
    let layer = AdaptiveLimitLayer::builder()
        .algorithm(Scripted::new(2))
        .build()
        .unwrap();
    let a = layer.layer(sleeper());
    let b = layer.layer(sleeper());
    let held_a = tokio::spawn(a.clone().oneshot((100, false)));
    let held_b = tokio::spawn(b.clone().oneshot((100, false)));
    tokio::task::yield_now().await;
    let err = a.oneshot((1, false)).await.unwrap_err();
    assert_eq!(ErrorKind::of(&err), ErrorKind::ConcurrencyLimited);
    assert_eq!(layer.clone().handle().in_flight(), 2);
    held_a.await.unwrap().unwrap();
    held_b.await.unwrap().unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_permit_reserved_by_poll_ready_is_given_back_with_the_service() {
    let layer = AdaptiveLimitLayer::builder()
        .algorithm(Scripted::new(1))
        .build()
        .unwrap();
    let handle = layer.handle();
    let mut svc = layer.layer(sleeper());
    let mut cx = Context::from_waker(Waker::noop());
    assert!(matches!(svc.poll_ready(&mut cx), Poll::Ready(Ok(()))));
    assert_eq!(handle.in_flight(), 1);
    drop(svc);
    assert_eq!(handle.in_flight(), 0);
}

/// An algorithm that panics on its first update: the call that taught it
/// panics, and the layer goes on learning with it as it was left.
#[derive(Debug)]
struct PanicsOnce(bool, u32);

impl LimitAlgorithm for PanicsOnce {
    fn initial_limit(&self) -> u32 {
        self.1
    }
    fn update(&mut self, _: &Sample) -> u32 {
        if !self.0 {
            self.0 = true;
            panic!("a bug in an algorithm");
        }
        self.1 += 1;
        self.1
    }
}

#[tokio::test(start_paused = true)]
async fn a_panicking_algorithm_does_not_stop_the_layer() {
    let layer = per_sample(PanicsOnce(false, 5));
    let handle = layer.handle();
    let svc = layer.layer(sleeper());
    let panicked = tokio::spawn(svc.clone().oneshot((1, false))).await;
    assert!(panicked.unwrap_err().is_panic());
    assert_eq!(
        handle.in_flight(),
        0,
        "the permit went back as the call unwound"
    );
    svc.clone().oneshot((1, false)).await.unwrap();
    assert_eq!(handle.limit(), 6, "learning again");
}

/// The future completes the call on the first poll when the inner one
/// does, and its Debug says what it holds.
#[test]
fn a_ready_call_is_answered_on_its_first_poll() {
    let layer = per_sample(Scripted::new(1));
    let mut svc = layer.layer(service_fn(|x: u32| {
        std::future::ready(Ok::<_, BoxError>(x))
    }));
    let mut cx = Context::from_waker(Waker::noop());
    assert!(svc.poll_ready(&mut cx).is_ready());
    let mut fut = std::pin::pin!(svc.call(7));
    assert!(format!("{fut:?}").contains("rejected: false"));
    assert!(matches!(fut.as_mut().poll(&mut cx), Poll::Ready(Ok(7))));
}

// ---------------------------------------------------------- the throttle

/// SRE's formula, as the docs state it.
fn sre(requests: u64, accepts: u64, k: f64) -> f64 {
    ((requests as f64 - k * accepts as f64) / (requests as f64 + 1.0)).max(0.0)
}

#[tokio::test(start_paused = true)]
async fn a_healthy_service_is_never_throttled() {
    let throttle = ThrottleLayer::builder()
        .min_answered(0)
        .seed(1)
        .build()
        .unwrap();
    let handle = throttle.handle();
    let svc = throttle.layer(sleeper());
    for _ in 0..1_000 {
        svc.clone().oneshot((1, false)).await.unwrap();
    }
    assert_eq!((handle.requests(), handle.accepts()), (1_000, 1_000));
    assert_eq!(handle.probability(), 0.0);
}

#[tokio::test(start_paused = true)]
async fn the_share_rejected_is_sres_formula_over_the_window() {
    let throttle = ThrottleLayer::builder()
        .k(1.5)
        .min_answered(0)
        .seed(3)
        .build()
        .unwrap();
    let handle = throttle.handle();
    let svc = throttle.layer(sleeper());
    // 30 accepted, then 40 failures reach the service or are throttled.
    for _ in 0..30 {
        svc.clone().oneshot((1, false)).await.unwrap();
    }
    let mut reached = 0;
    for _ in 0..40 {
        let (requests, accepts) = (handle.requests(), handle.accepts());
        assert!((handle.probability() - sre(requests, accepts, 1.5)).abs() < 1e-12);
        let err = svc.clone().oneshot((1, true)).await.unwrap_err();
        match ErrorKind::of(&err) {
            ErrorKind::Throttled => {
                let throttled = err.downcast_ref::<Throttled>().unwrap();
                assert_eq!(
                    (throttled.requests(), throttled.accepts()),
                    (requests, accepts)
                );
                assert!((throttled.probability() - sre(requests, accepts, 1.5)).abs() < 1e-12);
                assert_eq!(throttled.window(), Duration::from_secs(120));
            }
            _ => reached += 1,
        }
    }
    // Rejected locally or not, each call is a request.
    assert_eq!((handle.requests(), handle.accepts()), (70, 30));
    // Nothing is rejected while requests ≤ 1.5 × accepts (45 requests).
    assert!(reached >= 15, "{reached}");
    assert!(reached < 40, "some were throttled: {reached}");
}

#[tokio::test(start_paused = true)]
async fn nothing_is_rejected_under_the_minimum_of_requests() {
    let throttle = ThrottleLayer::builder()
        .min_answered(10)
        .seed(1)
        .build()
        .unwrap();
    let handle = throttle.handle();
    let svc = throttle.layer(sleeper());
    for _ in 0..10 {
        let err = svc.clone().oneshot((1, true)).await.unwrap_err();
        assert_eq!(ErrorKind::of(&err), ErrorKind::Inner, "sent, and failed");
    }
    assert!(
        handle.probability() > 0.9,
        "10 of 10 failed: {}",
        handle.probability()
    );
    // With the formula alone, one failure turns half away.
    let eager = ThrottleLayer::builder().min_answered(0).build().unwrap();
    let svc = eager.layer(sleeper());
    svc.oneshot((1, true)).await.unwrap_err();
    assert_eq!(eager.handle().probability(), 0.5);
}

#[tokio::test(start_paused = true)]
async fn a_request_counts_before_it_is_sent_so_unanswered_calls_are_throttled() {
    let throttle = ThrottleLayer::builder().seed(2).build().unwrap();
    let handle = throttle.handle();
    let svc = throttle.layer(sleeper());
    // A hundred answered calls: the history the throttle judges from.
    for _ in 0..100 {
        svc.clone().oneshot((1, false)).await.unwrap();
    }
    // Then the service stops answering: calls hang, none has failed yet.
    let mut hung = Vec::new();
    let mut throttled = 0;
    for _ in 0..300 {
        let mut call = Box::pin(svc.clone().oneshot((3_600_000, false)));
        match call.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
            Poll::Ready(Err(e)) if ErrorKind::of(&e) == ErrorKind::Throttled => throttled += 1,
            Poll::Pending => hung.push(call),
            other => panic!("{other:?}"),
        }
    }
    // Each hung call is a request not accepted: past K × 100 requests,
    // calls are turned away before a single timeout came back.
    assert_eq!(handle.in_flight(), hung.len() as u64);
    assert_eq!((handle.requests(), handle.accepts()), (400, 100));
    assert!(handle.probability() > 0.45, "{}", handle.probability());
    assert!(throttled > 50, "{throttled}");
    // Counted only once answered (go-zero), they would not count at all:
    // 100 requests, 100 accepts, nothing turned away.
    drop(hung);
    assert_eq!(
        (handle.requests(), handle.accepts(), handle.in_flight()),
        (100 + throttled, 100, 0)
    );
}

#[tokio::test(start_paused = true)]
async fn calls_in_flight_at_the_start_are_not_read_as_failures() {
    let throttle = ThrottleLayer::builder().seed(2).build().unwrap();
    let handle = throttle.handle();
    let svc = throttle.layer(sleeper());
    // 100 calls at once on a fresh throttle: none answered, none refused.
    let calls: Vec<_> = (0..100)
        .map(|_| tokio::spawn(svc.clone().oneshot((100, false))))
        .collect();
    tokio::time::sleep(MS).await; // every call has started
    assert_eq!((handle.requests(), handle.in_flight()), (100, 100));
    assert_eq!(handle.probability(), 0.0, "no history yet");
    for call in calls {
        call.await.unwrap().unwrap();
    }
    // A hundred more at once, with a hundred accepted behind them.
    let calls: Vec<_> = (0..100)
        .map(|_| tokio::spawn(svc.clone().oneshot((100, false))))
        .collect();
    tokio::time::sleep(MS).await; // every call has started
    assert_eq!(
        handle.probability(),
        0.0,
        "200 requests, 100 accepts: K × 100 = 200"
    );
    for call in calls {
        call.await.unwrap().unwrap();
    }
}

#[tokio::test(start_paused = true)]
async fn ignored_and_cancelled_calls_count_neither_way() {
    let throttle = ThrottleLayer::builder()
        .classifier(classify_fn(|r: &Result<u64, BoxError>| match r {
            Ok(_) => Outcome::Success,
            Err(e) if e.to_string() == "failed" => Outcome::Ignored,
            Err(_) => Outcome::Failure,
        }))
        .build()
        .unwrap();
    let handle = throttle.handle();
    let svc = throttle.layer(sleeper());
    svc.clone().oneshot((1, true)).await.unwrap_err(); // ignored
    assert_eq!((handle.requests(), handle.accepts()), (0, 0));
    let cut = tokio::time::timeout(ms(5), svc.clone().oneshot((1_000, false))).await;
    assert!(cut.is_err());
    assert_eq!(
        (handle.requests(), handle.accepts()),
        (0, 0),
        "the cancelled call too"
    );
    svc.oneshot((1, false)).await.unwrap();
    assert_eq!((handle.requests(), handle.accepts()), (1, 1));
}

#[tokio::test(start_paused = true)]
async fn an_accept_counts_with_its_request_and_leaves_the_window_with_it() {
    let throttle = ThrottleLayer::builder()
        .window(Duration::from_secs(10))
        .build()
        .unwrap();
    let handle = throttle.handle();
    let svc = throttle.layer(sleeper());
    // A call of 4 s: its accept goes in the bucket of its request.
    svc.clone().oneshot((4_000, false)).await.unwrap();
    assert_eq!((handle.requests(), handle.accepts()), (1, 1));
    tokio::time::sleep(Duration::from_millis(6_000)).await; // 10 s after the request
    assert_eq!(
        (handle.requests(), handle.accepts()),
        (0, 0),
        "both left together"
    );
    // A call longer than the window: its request has left when it ends,
    // and its accept is not counted alone.
    svc.clone().oneshot((15_000, false)).await.unwrap();
    assert_eq!((handle.requests(), handle.accepts()), (0, 0));
}

#[tokio::test(start_paused = true)]
async fn a_seeded_throttle_replays_its_rejections() {
    let run = || async {
        let throttle = ThrottleLayer::builder()
            .min_answered(0)
            .seed(11)
            .build()
            .unwrap();
        let svc = throttle.layer(sleeper());
        let mut pattern = Vec::new();
        for _ in 0..200 {
            let err = svc.clone().oneshot((1, true)).await.unwrap_err();
            pattern.push(ErrorKind::of(&err) == ErrorKind::Throttled);
        }
        pattern
    };
    let first = run().await;
    assert_eq!(first, run().await);
    assert!(first.iter().filter(|t| **t).count() > 150);
}

#[tokio::test(start_paused = true)]
async fn the_throttle_says_what_it_did() {
    let events = Arc::new(Mutex::new(Vec::new()));
    let seen = events.clone();
    let throttle = ThrottleLayer::builder()
        .name("search")
        .min_answered(0)
        .seed(4)
        .on_event(move |e: &Event<'_>| {
            if let Some(ThrottleEvent::Throttled { probability }) = e.kind::<ThrottleEvent>() {
                seen.lock().unwrap().push((*probability, e.to_string()));
            }
        })
        .build()
        .unwrap();
    let handle = throttle.handle();
    let svc = throttle.layer(sleeper());
    let mut throttled = 0;
    for _ in 0..50 {
        let err = svc.clone().oneshot((1, true)).await.unwrap_err();
        throttled += usize::from(ErrorKind::of(&err) == ErrorKind::Throttled);
    }
    let events = events.lock().unwrap();
    assert_eq!(events.len(), throttled);
    let (probability, text) = &events[0];
    assert!(*probability > 0.0 && *probability < 1.0);
    assert!(
        text.starts_with("throttle `search`: call rejected locally, ")
            && text.ends_with("% of calls are"),
        "{text}"
    );
    assert_eq!(handle.name(), "search");
    assert!(format!("{handle:?}").starts_with(r#"ThrottleHandle { name: "search", requests: 50, accepts: 0, in_flight: 0, probability: 0.98"#));
}

// ------------------------------------------------------- with the retry

#[tokio::test(start_paused = true)]
async fn a_retry_above_retries_the_refusals_it_is_told_to_with_their_reason() {
    use palisade::backoff::{Backoff, Jitter};
    use palisade::retry::{RetryEvent, RetryLayer, RetryReason};

    let reasons = Arc::new(Mutex::new(Vec::new()));
    let log = reasons.clone();
    let retry = RetryLayer::builder()
        .retry_on([ErrorKind::ConcurrencyLimited, ErrorKind::Throttled])
        .max_attempts(3)
        .backoff(
            Backoff::constant(ms(10))
                .jitter(Jitter::None)
                .build()
                .unwrap(),
        )
        .no_budget()
        .on_event(move |e: &Event<'_>| {
            if let Some(RetryEvent::Retry { reason, .. }) = e.kind::<RetryEvent>() {
                log.lock().unwrap().push(*reason);
            }
        })
        .build()
        .unwrap();
    // A limit of one, held by another call for 15 ms: refused, then in.
    let limit = AdaptiveLimitLayer::builder()
        .algorithm(Scripted::new(1))
        .build()
        .unwrap();
    let inner = limit.layer(sleeper());
    let holder = tokio::spawn(inner.clone().oneshot((15, false)));
    tokio::task::yield_now().await;
    let svc = retry.layer(inner);
    assert_eq!(svc.clone().oneshot((1, false)).await.unwrap(), 1);
    holder.await.unwrap().unwrap();
    assert_eq!(
        *reasons.lock().unwrap(),
        [
            RetryReason::ConcurrencyLimited,
            RetryReason::ConcurrencyLimited
        ]
    );
    assert_eq!(
        RetryReason::ConcurrencyLimited.as_str(),
        "concurrency_limited"
    );
    assert_eq!(RetryReason::Throttled.as_str(), "throttled");
    assert_eq!(
        RetryReason::Throttled.to_string(),
        "was rejected locally by a throttle"
    );
}

// ------------------------------------------------------------------ Debug

#[test]
fn debug_says_what_each_part_holds() {
    let builder = AdaptiveLimitLayer::builder()
        .name("inventory")
        .algorithm(Aimd::default())
        .max_queue(3)
        .max_wait(ms(5));
    let text = format!("{builder:?}");
    assert!(
        text.starts_with("AdaptiveLimitBuilder { name: \"inventory\", algorithm: Aimd {")
            && text.contains("classifier: DefaultClassifier, max_queue: 3, max_wait: Some(5ms)")
            && text.contains("min_samples: 10")
            && text.ends_with("listeners: 0 listener(s) }"),
        "{text}"
    );
    let layer = builder.build().unwrap();
    assert_eq!(
        format!("{layer:?}"),
        "AdaptiveLimitLayer { name: \"inventory\", limit: 20, max_queue: 3, max_wait: Some(5ms) }"
    );
    let mut svc = layer.layer(tower::util::BoxService::new(sleeper()));
    let text = format!("{svc:?}");
    assert!(
        text.starts_with("AdaptiveLimit { inner: BoxService")
            && text.ends_with("name: \"inventory\", limit: 20 }"),
        "{text}"
    );
    let mut cx = Context::from_waker(Waker::noop());
    assert!(svc.poll_ready(&mut cx).is_ready());
    let fut = svc.call((1, false));
    let text = format!("{fut:?}");
    assert!(
        text.starts_with("ResponseFuture { rejected: false, guard: Some(LimitGuard { limit: \"inventory\", started: ")
            && text.ends_with("in_flight: 1 }) }"),
        "{text}"
    );
    drop(fut);
    let throttle = ThrottleLayer::builder().name("search").k(1.5).seed(3);
    assert_eq!(
        format!("{throttle:?}"),
        "ThrottleBuilder { name: \"search\", k: 1.5, window: 120s, min_answered: 100, \
         classifier: DefaultClassifier, seed: Some(3), listeners: 0 listener(s) }"
    );
    let throttle = throttle.build().unwrap();
    assert_eq!(
        format!("{throttle:?}"),
        "ThrottleLayer { name: \"search\", k: 1.5, window: 120s, min_answered: 100 }"
    );
    let mut svc = throttle.layer(tower::util::BoxService::new(sleeper()));
    assert!(format!("{svc:?}").ends_with("name: \"search\" }"));
    let fut = svc.call((1, false));
    assert_eq!(
        format!("{fut:?}"),
        "ResponseFuture { rejected: false, guard: Some(ThrottleGuard { throttle: \"search\" }) }"
    );
}

/// A window lasts twice the *lowest* RTT of the one before (as
/// concurrency-limits' `WindowedLimit`), not twice the mean.
#[tokio::test(start_paused = true)]
async fn a_window_lasts_twice_the_lowest_rtt_of_the_last() {
    let algorithm = Scripted::new(100);
    let layer = AdaptiveLimitLayer::builder()
        .algorithm(algorithm.clone())
        .window(MS, Duration::from_secs(10))
        .min_samples(2)
        .build()
        .unwrap();
    let svc = layer.layer(sleeper());
    let start = Instant::now();
    let at = |t: u64, rtt: u64| {
        let svc = svc.clone();
        tokio::spawn(async move {
            tokio::time::sleep_until(start + ms(t)).await;
            svc.oneshot((rtt, false)).await.unwrap()
        })
    };
    // The first window (1 ms, two calls) closes at 150 ms: RTTs 50 and
    // 150 ms, mean 100, lowest 50. The next lasts 100 ms: to 250 ms
    // (twice the mean would run it to 350 ms).
    let calls = [at(0, 50), at(0, 150), at(160, 10), at(240, 10)];
    for call in calls {
        call.await.unwrap();
    }
    let seen = algorithm.seen();
    assert_eq!(
        seen,
        [
            Sample::new(ms(100), 2, false),
            Sample::new(ms(10), 1, false)
        ],
        "the second window closed at 250 ms"
    );
}

/// The throttle decides in `call`; until then it is as ready as the
/// service below it (a full bulkhead there keeps it pending).
#[tokio::test(start_paused = true)]
async fn the_throttle_is_as_ready_as_the_service_below() {
    let bulkhead = palisade::bulkhead::BulkheadLayer::builder()
        .max_concurrent(1)
        .max_queue(1)
        .build()
        .unwrap();
    let below = bulkhead.layer(sleeper());
    let mut holder = below.clone();
    holder.ready().await.unwrap();
    let mut svc = ThrottleLayer::builder().build().unwrap().layer(below);
    let mut cx = Context::from_waker(Waker::noop());
    assert!(
        svc.poll_ready(&mut cx).is_pending(),
        "the bulkhead below is full"
    );
    drop(holder);
    assert!(matches!(svc.poll_ready(&mut cx), Poll::Ready(Ok(()))));
    assert_eq!(svc.call((1, false)).await.unwrap(), 1);
}

/// Each call is rejected with the probability the formula gives at that
/// moment, no more and no less: over 3,000 calls, the number rejected is
/// the sum of those probabilities, within four standard deviations. (With
/// seed 0, so that a draw that ignored the call's number would show.)
#[tokio::test(start_paused = true)]
async fn each_call_is_rejected_with_the_probability_of_its_moment() {
    let throttle = ThrottleLayer::builder()
        .min_answered(0)
        .seed(0)
        .build()
        .unwrap();
    let handle = throttle.handle();
    let received = Arc::new(AtomicU32::new(0));
    let seen = received.clone();
    // Accepts one call in three of those it receives.
    let svc = throttle.layer(service_fn(move |_: ()| {
        let n = seen.fetch_add(1, Ordering::Relaxed);
        async move {
            if n.is_multiple_of(3) {
                Ok(())
            } else {
                Err::<(), BoxError>("busy".into())
            }
        }
    }));
    let (mut expected, mut variance, mut rejected) = (0.0, 0.0, 0u32);
    for _ in 0..3_000 {
        let p = handle.probability();
        expected += p;
        variance += p * (1.0 - p);
        if let Err(e) = svc.clone().oneshot(()).await {
            rejected += u32::from(ErrorKind::of(&e) == ErrorKind::Throttled);
        }
    }
    let gap = (f64::from(rejected) - expected).abs();
    assert!(
        gap <= 4.0 * variance.sqrt() + 1.0,
        "{rejected} rejected, {expected:.0} expected (σ {:.1})",
        variance.sqrt()
    );
    assert!(expected > 500.0 && expected < 2_900.0, "{expected}");
}

/// Gradient2's long RTT decays by 5% a sample while it is more than twice
/// the latest, so that a service that got faster for good is soon judged
/// against its new RTT (without the decay, the long average would take
/// hundreds of samples to come down, and a rise back to four times the new
/// RTT would still read as no queue).
#[test]
fn gradient2s_long_rtt_catches_up_with_a_faster_service() {
    let mut g = Gradient2::builder()
        .initial_limit(50)
        .min_limit(1)
        .max_limit(1_000)
        .build()
        .unwrap();
    for _ in 0..10 {
        g.update(&ok(100, 1_000)); // the long RTT: 100 ms
    }
    let mut before = 0;
    for _ in 0..100 {
        before = g.update(&ok(10, 1_000)); // now 10 ms, for good
    }
    // The long RTT has come down to about 20 ms: 40 ms is a queue.
    let after = g.update(&ok(40, 1_000));
    assert!(after < before, "{after} after {before}");
}

/// Callers using exactly half the limit are not app-limited (the rule is
/// "fewer than half").
#[test]
fn gradient2_learns_from_callers_using_exactly_half() {
    let mut g = Gradient2::builder().min_limit(1).build().unwrap();
    assert_eq!(g.update(&ok(10, 10)), 20, "10 of 20: learned, 20.8");
    assert_eq!(g.update(&ok(10, 20)), 21, "21.6");
}

/// Gradient2's long RTT after its warm-up of ten samples is an exponential
/// average with factor 2 / (long_window + 1).
#[test]
fn gradient2s_long_rtt_is_an_exponential_average_after_ten_samples() {
    let mut g = Gradient2::builder()
        .initial_limit(100)
        .min_limit(1)
        .max_limit(1_000)
        .smoothing(1.0)
        .long_window(10)
        .build()
        .unwrap();
    for i in 1..=10 {
        assert_eq!(
            g.update(&ok(100, 1_000)),
            100 + 4 * i,
            "a gradient of 1: + 4"
        );
    }
    // The long RTT: 100 × 9/11 + 200 × 2/11 = 118.18 ms; the gradient
    // 1.5 × 118.18 / 200 = 0.886; the limit 140 × 0.886 + 4 = 128.1.
    assert_eq!(g.update(&ok(200, 1_000)), 128);
}

/// Vegas measures its no-load RTT again after `probe_multiplier × limit`
/// samples times a random factor in [0.5, 1): between 300 and 600 samples
/// at a limit of 20, at a sample that differs from seed to seed.
#[test]
fn vegas_probes_after_a_random_share_of_thirty_times_its_limit() {
    let mut firsts = Vec::new();
    for seed in 0..20 {
        let mut vegas = Vegas::builder().seed(seed).build().unwrap();
        vegas.update(&ok(10, 20)); // the no-load RTT: 10 ms
        // Samples of 20 ms from callers using 1 of 20: app-limited, so the
        // limit stays; a copy then asked with 20 in flight grows only if
        // the no-load RTT was measured again (20 ms: no queue).
        let mut first = None;
        for n in 2..=700 {
            let mut probe = vegas.clone();
            if probe.update(&ok(20, 20)) > 20 {
                first = Some(n - 1);
                break;
            }
            vegas.update(&ok(20, 1));
        }
        let first = first.unwrap_or_else(|| panic!("seed {seed}: no probe in 700 samples"));
        assert!(
            (299..=600).contains(&first),
            "seed {seed}: probed at sample {first}"
        );
        firsts.push(first);
    }
    assert!(
        firsts.iter().min() < firsts.iter().max(),
        "the factor is drawn: {firsts:?}"
    );
}

/// Vegas's app-limited rule is "fewer than half": callers using exactly
/// half the limit are learned from.
#[test]
fn vegas_learns_from_callers_using_exactly_half() {
    let mut vegas = Vegas::builder().seed(3).build().unwrap();
    vegas.update(&ok(100, 20));
    assert_eq!(vegas.update(&ok(100, 10)), 26, "10 of 20: no queue, + 6");
}

/// Vegas's thresholds are multiples of ⌊log10(limit)⌋ (3×, 6×), and its
/// bounds are strict as concurrency-limits writes them: at a queue of
/// exactly 3 × log the limit stays, at exactly 6 × log too.
#[test]
fn vegas_thresholds_scale_with_log10_of_the_limit() {
    let at = |limit: u32, rtt_micros: u64| {
        let mut vegas = Vegas::builder()
            .initial_limit(limit)
            .seed(3)
            .build()
            .unwrap();
        vegas.update(&ok(100, limit)); // no-load RTT 100 ms
        vegas.update(&Sample::new(
            Duration::from_micros(rtt_micros),
            limit,
            false,
        ))
    };
    // At 20, log 1: queue = ceil(20 × (1 − 100 / rtt)).
    assert_eq!(at(20, 115_000), 20, "queue 3 = 3 × log: stays");
    assert_eq!(at(20, 140_000), 20, "queue 6 = 6 × log: stays");
    // At 150, log 2.
    assert_eq!(at(150, 103_200), 152, "queue 5 < 6: + log");
    assert_eq!(at(150, 108_300), 150, "queue 12 = 6 × log: stays");
    assert_eq!(at(150, 109_100), 148, "queue 13 > 12: − log");
}
