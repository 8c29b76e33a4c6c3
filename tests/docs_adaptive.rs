//! Tests of `palisade::adaptive` (the adaptive concurrency limit and the
//! client-side throttle), written from the rendered documentation alone.
//! Every test quotes the sentence of the docs it checks.

use std::convert::Infallible;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::StreamExt;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Bytes, Frame};
use palisade::Resilience;
use palisade::adaptive::{
    AdaptiveLimitBuilder, AdaptiveLimitEvent, AdaptiveLimitLayer, Aimd, Gradient2, LimitAlgorithm,
    MAX_ADAPTIVE_LIMIT, Sample, ThrottleEvent, ThrottleLayer, Vegas,
};
use palisade::classify::{GrpcClassifier, Outcome, classify_fn};
use palisade::error::{BoxError, ConcurrencyLimited, ErrorKind, Throttled};
use palisade::event::{Event, MetricsEvents};
use palisade::respond::{HttpRejectionLayer, to_response, to_status};
use palisade::retry::{GiveUpReason, RetryEvent, RetryLayer, RetryReason};
use tokio::sync::oneshot;
use tokio::time::sleep;
use tower::{Layer, Service, ServiceExt, service_fn};

// ---------------------------------------------------------------- helpers

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn ok(rtt_ms: u64, in_flight: u32) -> Sample {
    Sample::new(ms(rtt_ms), in_flight, false)
}

fn ok_us(rtt_us: u64, in_flight: u32) -> Sample {
    Sample::new(Duration::from_micros(rtt_us), in_flight, false)
}

fn failed(rtt_ms: u64, in_flight: u32) -> Sample {
    Sample::new(ms(rtt_ms), in_flight, true)
}

fn approx(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-9
}

/// Lets spawned tasks run without moving the (paused) clock.
async fn settle() {
    for _ in 0..50 {
        tokio::task::yield_now().await;
    }
}

/// A request whose outcome the test decides: send `false` for an `Ok`,
/// `true` for an `Err`; a dropped sender is an `Err` too.
type Gate = oneshot::Receiver<bool>;

fn gate() -> (oneshot::Sender<bool>, Gate) {
    oneshot::channel()
}

/// A gate whose sender is gone: the call fails (if it is made at all).
fn dropped_gate() -> Gate {
    gate().1
}

async fn gated(rx: Gate) -> Result<(), BoxError> {
    match rx.await {
        Ok(false) => Ok(()),
        Ok(true) => Err("failed".into()),
        Err(_) => Err("gate dropped".into()),
    }
}

/// A request that takes `.0` ms and fails if `.1`.
async fn timed((delay, fail): (u64, bool)) -> Result<(), BoxError> {
    sleep(ms(delay)).await;
    if fail { Err("failed".into()) } else { Ok(()) }
}

/// An algorithm of our own: records every sample and returns the limit
/// the test sets.
#[derive(Debug, Clone)]
struct Script {
    initial: u32,
    next: Arc<AtomicU32>,
    samples: Arc<Mutex<Vec<Sample>>>,
}

impl Script {
    fn new(initial: u32) -> Self {
        Script {
            initial,
            next: Arc::new(AtomicU32::new(initial)),
            samples: Arc::default(),
        }
    }
    fn set(&self, limit: u32) {
        self.next.store(limit, Ordering::SeqCst);
    }
    fn samples(&self) -> Vec<Sample> {
        self.samples.lock().unwrap().clone()
    }
}

impl LimitAlgorithm for Script {
    fn initial_limit(&self) -> u32 {
        self.initial
    }
    fn update(&mut self, sample: &Sample) -> u32 {
        self.samples.lock().unwrap().push(*sample);
        self.next.load(Ordering::SeqCst)
    }
}

type Seen<T> = Arc<Mutex<Vec<(String, T)>>>;

fn limit_events() -> (
    Seen<AdaptiveLimitEvent>,
    impl Fn(&Event<'_>) + Send + Sync + 'static,
) {
    let seen: Seen<AdaptiveLimitEvent> = Arc::default();
    let log = seen.clone();
    (seen, move |event: &Event<'_>| {
        if let Some(kind) = event.kind::<AdaptiveLimitEvent>() {
            log.lock().unwrap().push((event.name().to_string(), *kind));
        }
    })
}

fn throttle_events() -> (
    Seen<ThrottleEvent>,
    impl Fn(&Event<'_>) + Send + Sync + 'static,
) {
    let seen: Seen<ThrottleEvent> = Arc::default();
    let log = seen.clone();
    (seen, move |event: &Event<'_>| {
        if let Some(kind) = event.kind::<ThrottleEvent>() {
            log.lock().unwrap().push((event.name().to_string(), *kind));
        }
    })
}

fn retry_events() -> (
    Seen<RetryEvent>,
    impl Fn(&Event<'_>) + Send + Sync + 'static,
) {
    let seen: Seen<RetryEvent> = Arc::default();
    let log = seen.clone();
    (seen, move |event: &Event<'_>| {
        if let Some(kind) = event.kind::<RetryEvent>() {
            log.lock().unwrap().push((event.name().to_string(), *kind));
        }
    })
}

/// A service that counts the calls reaching it and fails or succeeds by
/// the call's number.
#[derive(Clone)]
struct Counting {
    calls: Arc<AtomicUsize>,
    fail: Arc<dyn Fn(usize) -> bool + Send + Sync>,
}

fn counting(fail: impl Fn(usize) -> bool + Send + Sync + 'static) -> (Arc<AtomicUsize>, Counting) {
    let calls = Arc::new(AtomicUsize::new(0));
    (
        calls.clone(),
        Counting {
            calls,
            fail: Arc::new(fail),
        },
    )
}

impl Service<()> for Counting {
    type Response = ();
    type Error = BoxError;
    type Future = std::future::Ready<Result<(), BoxError>>;
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }
    fn call(&mut self, _: ()) -> Self::Future {
        let n = self.calls.fetch_add(1, Ordering::SeqCst);
        std::future::ready(if (self.fail)(n) {
            Err("down".into())
        } else {
            Ok(())
        })
    }
}

fn aimd(initial: u32, min: u32) -> Aimd {
    Aimd::builder()
        .initial_limit(initial)
        .min_limit(min)
        .build()
        .unwrap()
}

fn scripted(name: &str, script: &Script) -> AdaptiveLimitBuilder {
    AdaptiveLimitLayer::builder()
        .name(name)
        .algorithm(script.clone())
        .per_sample()
}

/// A real `ConcurrencyLimited`, from a full limit of 1.
async fn a_concurrency_limited() -> BoxError {
    let limit = AdaptiveLimitLayer::builder()
        .name("inventory")
        .algorithm(aimd(1, 1))
        .build()
        .unwrap();
    let svc = limit.layer(service_fn(|_: ()| async { Ok::<_, BoxError>(()) }));
    let mut holder = svc.clone();
    holder.ready().await.unwrap();
    svc.oneshot(()).await.unwrap_err()
}

/// A real `Throttled`, from a throttle over a service that always fails.
async fn a_throttled() -> BoxError {
    let throttle = ThrottleLayer::builder()
        .name("search")
        .seed(1)
        .build()
        .unwrap();
    let svc = throttle.layer(service_fn(|_: ()| async {
        Err::<(), BoxError>("down".into())
    }));
    loop {
        let err = svc.clone().oneshot(()).await.unwrap_err();
        if err.is::<Throttled>() {
            return err;
        }
    }
}

type Frames =
    StreamBody<futures_util::stream::BoxStream<'static, Result<Frame<Bytes>, Infallible>>>;

/// A 200 gRPC response body: a message after `delay`, then trailers with
/// `grpc-status: code` after another `delay`.
fn trailer_body(code: &'static str, delay: Duration) -> Frames {
    let frames = futures_util::stream::unfold(0u8, move |step| async move {
        match step {
            0 => {
                sleep(delay).await;
                Some((Ok(Frame::data(Bytes::from_static(b"x"))), 1))
            }
            1 => {
                sleep(delay).await;
                let mut trailers = http::HeaderMap::new();
                trailers.insert("grpc-status", code.parse().unwrap());
                Some((Ok(Frame::trailers(trailers)), 2))
            }
            _ => None,
        }
    });
    StreamBody::new(frames.boxed())
}

// ======================================================= the algorithms

// Aimd docs: "let failed = Sample::new(Duration::from_millis(5), 10, true);
// assert_eq!(aimd.update(&failed), 9); // 11 × 0.9, rounded down"
#[test]
fn aimd_doc_example() {
    let mut aimd = aimd(10, 1);
    assert_eq!(aimd.initial_limit(), 10);
    assert_eq!(aimd.update(&ok(5, 10)), 11);
    assert_eq!(aimd.update(&failed(5, 10)), 9);
}

// Aimd: "the limit grows by one per successful sample while the callers use
// at least half of it"
#[test]
fn aimd_grows_only_while_at_least_half_is_used() {
    let mut a = aimd(10, 1);
    assert_eq!(a.update(&ok(5, 4)), 10, "4 of 10: less than half");
    assert_eq!(a.update(&ok(5, 5)), 11, "5 of 10: exactly half");
    assert_eq!(a.update(&ok(5, 5)), 11, "5 of 11: less than half");
    assert_eq!(a.update(&ok(5, 6)), 12, "6 of 11: more than half");
}

// Aimd: "is multiplied by the backoff_ratio on a failure or a call slower
// than the timeout"; AimdBuilder::timeout: "A successful call slower than
// this counts as a failure."
#[test]
fn aimd_slow_success_and_failure_back_off() {
    let mut a = Aimd::builder()
        .initial_limit(10)
        .min_limit(1)
        .timeout(ms(100))
        .build()
        .unwrap();
    assert_eq!(
        a.update(&ok(100, 10)),
        11,
        "exactly the timeout is not slower than it"
    );
    assert_eq!(
        a.update(&ok(101, 10)),
        9,
        "slower than the timeout: 11 × 0.9"
    );
    // a failure backs off whatever the callers use
    assert_eq!(a.update(&failed(1, 1)), 8, "9 × 0.9 = 8.1");
}

// Aimd table: "min_limit 20, max_limit 200 ... The default floor is the
// initial limit, as there: with the defaults the limit only ever grows from
// 20 and falls back to it."
#[test]
fn aimd_default_bounds() {
    let mut a = Aimd::default();
    assert_eq!(a.initial_limit(), 20);
    assert_eq!(a.update(&failed(5, 20)), 20, "floored at 20");
    let mut limit = 20;
    for _ in 0..400 {
        limit = a.update(&ok(5, limit));
    }
    assert_eq!(limit, 200, "capped at max_limit 200");
    for _ in 0..100 {
        limit = a.update(&failed(5, limit));
    }
    assert_eq!(limit, 20, "falls back to 20");
}

// AimdBuilder::backoff_ratio: "What a failure multiplies the limit by, in
// [0.5, 1)"; Aimd example: "rounded down"; min_limit: "The lowest the limit goes"
#[test]
fn aimd_half_backoff_rounds_down_to_the_floor() {
    let mut a = Aimd::builder()
        .initial_limit(9)
        .min_limit(2)
        .backoff_ratio(0.5)
        .build()
        .unwrap();
    assert_eq!(a.update(&failed(5, 9)), 4, "9 × 0.5 = 4.5");
    assert_eq!(a.update(&failed(5, 4)), 2);
    assert_eq!(a.update(&failed(5, 2)), 2, "not below min_limit");
}

// AimdBuilder::build: "Errors: Bounds out of order or outside 1 to
// MAX_ADAPTIVE_LIMIT, an initial limit outside them, a backoff ratio outside
// [0.5, 1), a zero timeout."
#[test]
fn aimd_builder_validation() {
    let b = || Aimd::builder().initial_limit(10).min_limit(1);
    assert!(b().build().is_ok());
    assert!(b().backoff_ratio(0.5).build().is_ok());
    assert!(b().backoff_ratio(0.49).build().is_err());
    assert!(b().backoff_ratio(1.0).build().is_err());
    assert!(b().backoff_ratio(f64::NAN).build().is_err());
    assert!(b().min_limit(0).build().is_err(), "min 0");
    assert!(
        b().max_limit(MAX_ADAPTIVE_LIMIT + 1).build().is_err(),
        "max above MAX"
    );
    assert!(
        b().max_limit(MAX_ADAPTIVE_LIMIT).build().is_ok(),
        "max = MAX"
    );
    assert!(
        b().min_limit(11).max_limit(10).build().is_err(),
        "out of order"
    );
    assert!(b().timeout(Duration::ZERO).build().is_err(), "zero timeout");
    assert!(
        b().initial_limit(201).build().is_err(),
        "initial above max 200"
    );
    // The default min_limit is 20: an initial limit of 10 alone is outside it.
    assert!(
        Aimd::builder().initial_limit(10).build().is_err(),
        "initial below default min 20"
    );
}

// Vegas docs example.
#[test]
fn vegas_doc_example() {
    let mut vegas = Vegas::default();
    assert_eq!(vegas.initial_limit(), 20);
    assert_eq!(vegas.update(&ok(10, 20)), 20);
    assert_eq!(vegas.update(&ok(10, 20)), 26);
    assert_eq!(vegas.update(&ok(40, 26)), 25);
}

// Vegas: "a queue of at most log raises it by 6 × log (an idle service), one
// below 3 × log raises it by log, one above 6 × log lowers it by log; in
// between it stays." with queue = ceil(limit × (1 − rtt_noload / rtt)).
#[test]
fn vegas_queue_thresholds_at_log_one() {
    // limit 20, log 1, no-load RTT 10 ms; each RTT is picked for its queue.
    let cases = [
        (10_200, 1, 26), // 20 × 0.0196 = 0.39 → 1 ≤ log: + 6
        (10_800, 2, 21), // 1.48 → 2 < 3: + 1
        (11_500, 3, 20), // 2.6 → 3: in between
        (14_000, 6, 20), // 5.71 → 6: in between (not above 6)
        (15_000, 7, 19), // 6.67 → 7 > 6: − 1
    ];
    for (rtt_us, queue, expected) in cases {
        let mut vegas = Vegas::builder().seed(1).build().unwrap();
        assert_eq!(vegas.update(&ok(10, 20)), 20, "the no-load RTT");
        assert_eq!(
            vegas.update(&ok_us(rtt_us, 20)),
            expected,
            "a queue of {queue}"
        );
    }
}

// Vegas: "log = max(1, ⌊log10(limit)⌋)" and the thresholds scale with it.
#[test]
fn vegas_log_scales_with_the_limit() {
    let mut vegas = Vegas::builder().initial_limit(100).seed(1).build().unwrap();
    assert_eq!(vegas.update(&ok(10, 100)), 100, "the no-load RTT");
    assert_eq!(vegas.update(&ok(10, 100)), 112, "no queue: + 6 × 2");
    assert_eq!(
        vegas.update(&ok_us(10_300, 112)),
        114,
        "a queue of 4 < 6: + 2"
    );
    assert_eq!(
        vegas.update(&ok(11, 114)),
        114,
        "a queue of 11: in between 6 and 12"
    );
    assert_eq!(vegas.update(&ok(13, 114)), 112, "a queue of 27 > 12: − 2");
}

// Vegas: "a failure lowers the limit by log; callers using less than half
// the limit leave it as it is"
#[test]
fn vegas_app_limited_and_failure() {
    let mut vegas = Vegas::builder().seed(1).build().unwrap();
    assert_eq!(vegas.update(&ok(10, 20)), 20);
    assert_eq!(vegas.update(&ok(10, 9)), 20, "9 of 20: less than half");
    assert_eq!(vegas.update(&ok(10, 10)), 26, "10 of 20: half");
    assert_eq!(vegas.update(&failed(10, 26)), 25, "a failure: − log");
}

// Vegas: "a failure lowers the limit by log" is listed before (and apart
// from) the rule that callers using less than half leave the limit alone.
#[test]
fn vegas_failure_lowers_even_when_app_limited() {
    let mut vegas = Vegas::builder().seed(1).build().unwrap();
    assert_eq!(vegas.update(&ok(10, 20)), 20);
    assert_eq!(
        vegas.update(&failed(10, 1)),
        19,
        "a failure, 1 call in flight"
    );
}

// VegasBuilder::smoothing: "How much of each computed limit is taken, in
// (0, 1]: 1 takes it whole, 0.2 moves a fifth of the way."
#[test]
fn vegas_smoothing_moves_part_of_the_way() {
    let mut vegas = Vegas::builder().smoothing(0.5).seed(1).build().unwrap();
    assert_eq!(vegas.update(&ok(10, 20)), 20);
    assert_eq!(vegas.update(&ok(10, 20)), 23, "half way from 20 to 26");
}

// VegasBuilder::min_limit / max_limit: "The lowest the limit goes", "The
// highest the limit goes".
#[test]
fn vegas_bounds() {
    let mut vegas = Vegas::builder().max_limit(22).seed(1).build().unwrap();
    vegas.update(&ok(10, 20));
    assert_eq!(vegas.update(&ok(10, 20)), 22, "26 capped at 22");
    let mut floor = Vegas::builder()
        .initial_limit(5)
        .min_limit(5)
        .seed(1)
        .build()
        .unwrap();
    floor.update(&ok(10, 5));
    assert_eq!(floor.update(&failed(10, 5)), 5, "4 floored at 5");
}

// Vegas: "The no-load RTT is taken again from the current sample every
// probe_multiplier × limit samples, times a random factor in [0.5, 1) ...
// so that a service that got slower for good is not read as queueing for ever."
#[test]
fn vegas_probes_the_no_load_rtt_again() {
    let run = |multiplier: u32| {
        let mut vegas = Vegas::builder()
            .probe_multiplier(multiplier)
            .seed(9)
            .build()
            .unwrap();
        let mut limit = vegas.update(&ok(10, 20));
        let mut rose = false;
        for _ in 0..30 {
            // the service is 4 × slower for good
            let next = vegas.update(&ok(40, limit));
            rose |= next > limit;
            limit = next;
        }
        rose
    };
    assert!(
        run(1),
        "re-measured within 1 × limit samples: the limit grows again"
    );
    assert!(
        !run(1_000),
        "without a probe, 40 ms reads as a queue: the limit only falls"
    );
}

// VegasBuilder::build: "Errors: Bounds out of order or outside 1 to
// MAX_ADAPTIVE_LIMIT, an initial limit outside them, a smoothing outside
// (0, 1], a zero probe multiplier."
#[test]
fn vegas_builder_validation() {
    let b = Vegas::builder;
    assert!(b().build().is_ok());
    assert!(b().smoothing(1.0).build().is_ok());
    assert!(b().smoothing(0.0).build().is_err());
    assert!(b().smoothing(1.01).build().is_err());
    assert!(b().smoothing(f64::NAN).build().is_err());
    assert!(b().probe_multiplier(0).build().is_err());
    assert!(b().min_limit(0).build().is_err());
    assert!(b().max_limit(MAX_ADAPTIVE_LIMIT + 1).build().is_err());
    assert!(
        b().min_limit(30)
            .max_limit(25)
            .initial_limit(25)
            .build()
            .is_err()
    );
    assert!(
        b().initial_limit(1_001).build().is_err(),
        "above the default max 1,000"
    );
    assert!(b().initial_limit(0).build().is_err());
}

// Gradient2 docs example.
#[test]
fn gradient2_doc_example() {
    let mut gradient = Gradient2::builder().min_limit(1).build().unwrap();
    assert_eq!(gradient.initial_limit(), 20);
    assert_eq!(gradient.update(&ok(10, 20)), 20);
    assert_eq!(gradient.update(&ok(10, 20)), 21);
    assert_eq!(gradient.update(&ok(100, 21)), 20);
}

// Gradient2: "gradient = clamp(rtt_tolerance × long_rtt / rtt, 0.5, 1) and
// the new limit is limit × gradient + queue_size, taken a smoothing part of
// the way. The long RTT is an exponential average ... (a plain mean for the
// first 10)"; "by at most half per sample before smoothing".
#[test]
fn gradient2_formula_with_a_plain_mean() {
    let mut g = Gradient2::builder()
        .initial_limit(100)
        .min_limit(1)
        .smoothing(1.0)
        .queue_size(0)
        .rtt_tolerance(1.0)
        .build()
        .unwrap();
    assert_eq!(g.update(&ok(10, 100)), 100, "long 10, gradient 1");
    assert_eq!(g.update(&ok(20, 100)), 75, "long 15 / 20 = 0.75");
    assert_eq!(g.update(&ok(40, 75)), 43, "long 70/3 / 40 = 0.583 → 43.75");
    assert_eq!(
        g.update(&ok(1000, 43)),
        21,
        "long 267.5 / 1000 < 0.5: halved → 21.875"
    );
}

// Gradient2: "Callers using less than half the limit leave it as it is."
#[test]
fn gradient2_app_limited() {
    let g = || {
        Gradient2::builder()
            .min_limit(1)
            .smoothing(1.0)
            .build()
            .unwrap()
    };
    let mut limited = g();
    assert_eq!(limited.update(&ok(10, 20)), 24, "20 × 1 + 4");
    assert_eq!(
        limited.update(&ok(1000, 11)),
        24,
        "11 of 24: less than half"
    );
    let mut used = g();
    assert_eq!(used.update(&ok(10, 20)), 24);
    // 12 of 24: half. long RTT 505 ms: gradient 1.5 × 505 / 1000 = 0.7575
    assert_eq!(used.update(&ok(1000, 12)), 22, "24 × 0.7575 + 4 = 22.18");
}

// Gradient2: "when it is more than twice the latest RTT (the service got
// faster for good) it decays by 5% per sample so that it catches up."
#[test]
fn gradient2_long_rtt_decays_when_the_service_got_faster() {
    let mut g = Gradient2::builder()
        .initial_limit(100)
        .min_limit(1)
        .max_limit(1000)
        .smoothing(1.0)
        .queue_size(0)
        .rtt_tolerance(1.0)
        .long_window(100_000)
        .build()
        .unwrap();
    for _ in 0..10 {
        assert_eq!(g.update(&ok(100, 100)), 100, "warm-up: long RTT 100 ms");
    }
    assert_eq!(g.update(&ok(10, 100)), 100, "faster: gradient clamped to 1");
    // The long RTT (≈100) was more than twice 10 ms: it is now ≈95, so a
    // 100 ms call has a gradient of ≈0.95 (≈0.99998 without the decay).
    let limit = g.update(&ok(100, 100));
    assert!((94..=95).contains(&limit), "{limit}");
}

// Gradient2 table: "min_limit 20, max_limit 200".
#[test]
fn gradient2_default_bounds() {
    let mut g = Gradient2::default();
    let mut limit = 20;
    for _ in 0..20 {
        limit = g.update(&ok(10, limit));
    }
    for _ in 0..50 {
        limit = g.update(&ok(10_000, limit));
        assert!(limit >= 20, "{limit}");
    }
    assert_eq!(limit, 20);
    let mut g = Gradient2::default();
    let mut limit = 20;
    for _ in 0..2_000 {
        limit = g.update(&ok(10, limit));
        assert!(limit <= 200, "{limit}");
    }
    assert_eq!(limit, 200);
}

// Gradient2Builder::build: "Errors: Bounds out of order or outside 1 to
// MAX_ADAPTIVE_LIMIT, an initial limit outside them, a smoothing outside
// (0, 1], a queue above 10,000, a long window under 10 samples, an RTT
// tolerance below 1 or not finite."
#[test]
fn gradient2_builder_validation() {
    let b = || Gradient2::builder().min_limit(1);
    assert!(b().build().is_ok());
    assert!(b().queue_size(10_000).build().is_ok());
    assert!(b().queue_size(10_001).build().is_err());
    assert!(b().queue_size(0).build().is_ok());
    assert!(b().long_window(10).build().is_ok());
    assert!(b().long_window(9).build().is_err());
    assert!(b().rtt_tolerance(1.0).build().is_ok());
    assert!(b().rtt_tolerance(0.99).build().is_err());
    assert!(b().rtt_tolerance(f64::INFINITY).build().is_err());
    assert!(b().rtt_tolerance(f64::NAN).build().is_err());
    assert!(b().smoothing(0.0).build().is_err());
    assert!(b().smoothing(1.5).build().is_err());
    assert!(b().min_limit(0).build().is_err());
    assert!(b().max_limit(MAX_ADAPTIVE_LIMIT + 1).build().is_err());
    assert!(
        b().initial_limit(201).build().is_err(),
        "above the default max 200"
    );
    assert!(
        Gradient2::builder().initial_limit(10).build().is_err(),
        "below the default min 20"
    );
}

// ===================================================== the adaptive layer

// The adaptive module's example: "// Every call teaches the algorithm at
// once; by default it learns from windows of at least 10 calls and 100 ms.
// .per_sample()" ... "assert_eq!(handle.limit(), 9, "a failure: 10 × 0.9");
//  svc.oneshot(false).await?;
//  assert_eq!(handle.limit(), 9, "1 call in flight of 9: too few to grow on");"
#[tokio::test(start_paused = true)]
async fn layer_module_example() {
    let limit = AdaptiveLimitLayer::builder()
        .name("inventory")
        .algorithm(
            Aimd::builder()
                .initial_limit(10)
                .min_limit(2)
                .build()
                .unwrap(),
        )
        .max_queue(50)
        .max_wait(ms(100))
        .per_sample()
        .build()
        .unwrap();
    let handle = limit.handle();
    let svc = limit.layer(service_fn(|fail: bool| async move {
        if fail {
            Err::<(), BoxError>("overloaded".into())
        } else {
            Ok(())
        }
    }));
    svc.clone().oneshot(true).await.unwrap_err();
    assert_eq!(handle.limit(), 9, "a failure: 10 × 0.9");
    svc.oneshot(false).await.unwrap();
    assert_eq!(
        handle.limit(),
        9,
        "1 call in flight of 9: too few to grow on"
    );
}

// AdaptiveLimitBuilder default table: "name "adaptive_limit"; algorithm
// Vegas::default(), concurrency-limits' default"; builder::algorithm: "The
// limit starts at its initial_limit."
#[tokio::test(start_paused = true)]
async fn layer_defaults() {
    let layer = AdaptiveLimitLayer::builder().build().unwrap();
    let handle = layer.handle();
    assert_eq!(handle.name(), "adaptive_limit");
    assert_eq!(handle.limit(), 20);
    assert_eq!((handle.in_flight(), handle.queued()), (0, 0));
    let seven = AdaptiveLimitLayer::builder()
        .algorithm(aimd(7, 1))
        .build()
        .unwrap();
    assert_eq!(seven.handle().limit(), 7);
}

// ConcurrencyLimited's example and message: "adaptive limit "inventory" is
// reached: 1 in flight, no queue"; ErrorKind::ConcurrencyLimited;
// AdaptiveLimitEvent::Rejected: "timed_out_in_queue: Whether the call
// waited in the queue for the maximum wait first (else every permit and
// queue place was taken)."
#[tokio::test(start_paused = true)]
async fn layer_refuses_at_once_without_a_queue() {
    let (events, listener) = limit_events();
    let limit = AdaptiveLimitLayer::builder()
        .name("inventory")
        .algorithm(aimd(1, 1))
        .on_event(listener)
        .build()
        .unwrap();
    let (calls, inner) = counting(|_| false);
    let svc = limit.layer(inner);
    let mut holder = svc.clone();
    holder.ready().await.unwrap();
    let err = svc.oneshot(()).await.unwrap_err();
    let limited = err.downcast_ref::<ConcurrencyLimited>().unwrap();
    assert_eq!(
        (limited.name(), limited.limit(), limited.waited()),
        ("inventory", 1, None)
    );
    assert_eq!((limited.max_queue(), limited.key()), (0, None));
    assert_eq!(
        err.to_string(),
        r#"adaptive limit "inventory" is reached: 1 in flight, no queue"#
    );
    assert_eq!(ErrorKind::of(&err), ErrorKind::ConcurrencyLimited);
    assert!(ErrorKind::ConcurrencyLimited.is_rejection());
    assert_eq!(
        calls.load(Ordering::SeqCst),
        0,
        "the inner service was not called"
    );
    assert_eq!(
        *events.lock().unwrap(),
        [(
            "inventory".to_string(),
            AdaptiveLimitEvent::Rejected {
                timed_out_in_queue: false
            }
        )]
    );
}

// Sample::rtt: "from its call to the moment its outcome was known";
// Sample::dropped: "Whether the classifier called the call a failure";
// builder::classifier default: "every Err is a failure (a dropped sample)".
#[tokio::test(start_paused = true)]
async fn layer_sample_rtt_and_dropped() {
    let script = Script::new(10);
    let layer = scripted("s", &script).build().unwrap();
    let svc = layer.layer(service_fn(timed));
    svc.clone().oneshot((50, false)).await.unwrap();
    svc.clone().oneshot((30, true)).await.unwrap_err();
    let samples = script.samples();
    assert_eq!(samples.len(), 2);
    assert_eq!(
        (
            samples[0].rtt(),
            samples[0].in_flight(),
            samples[0].dropped()
        ),
        (ms(50), 1, false)
    );
    assert_eq!(
        (
            samples[1].rtt(),
            samples[1].in_flight(),
            samples[1].dropped()
        ),
        (ms(30), 1, true)
    );
}

// "The calls in flight a sample carries are counted when it started, itself
// included."
#[tokio::test(start_paused = true)]
async fn layer_in_flight_is_counted_when_the_call_started() {
    let script = Script::new(10);
    let layer = scripted("s", &script).build().unwrap();
    let handle = layer.handle();
    let svc = layer.layer(service_fn(gated));
    let (ta, ra) = gate();
    let a = tokio::spawn(svc.clone().oneshot(ra));
    settle().await;
    let (tb, rb) = gate();
    let b = tokio::spawn(svc.clone().oneshot(rb));
    settle().await;
    assert_eq!(handle.in_flight(), 2);
    ta.send(false).unwrap();
    a.await.unwrap().unwrap();
    tb.send(false).unwrap();
    b.await.unwrap().unwrap();
    let in_flight: Vec<u32> = script.samples().iter().map(Sample::in_flight).collect();
    assert_eq!(in_flight, [1, 2], "A started alone, B with A in flight");
    assert_eq!(handle.in_flight(), 0);
}

// "one it ignores ... is no sample at all and only gives its permit back";
// builder::classifier: "one it Ignored is no sample at all."
#[tokio::test(start_paused = true)]
async fn layer_ignored_call_is_no_sample() {
    let script = Script::new(1);
    let ignore = classify_fn(|r: &Result<(), BoxError>| match r {
        Ok(()) => Outcome::Success,
        Err(e) if e.to_string() == "failed" => Outcome::Ignored,
        Err(_) => Outcome::Failure,
    });
    let layer = scripted("i", &script).classifier(ignore).build().unwrap();
    let handle = layer.handle();
    let svc = layer.layer(service_fn(timed));
    svc.clone().oneshot((10, true)).await.unwrap_err();
    assert!(script.samples().is_empty(), "{:?}", script.samples());
    assert_eq!(handle.in_flight(), 0, "the permit is given back");
    svc.oneshot((10, false)).await.unwrap();
    assert_eq!(script.samples().len(), 1);
}

// "one dropped before its outcome was known (a cancelled call, a hedge's
// loser), is no sample at all and only gives its permit back"; LimitGuard:
// "dropped without one (the call was cancelled), it teaches nothing. Either
// way it gives the permit back."
#[tokio::test(start_paused = true)]
async fn layer_cancelled_call_is_no_sample_and_frees_its_permit() {
    let script = Script::new(1);
    let layer = scripted("c", &script).build().unwrap();
    let handle = layer.handle();
    let svc = layer.layer(service_fn(gated));
    let (_keep, rx) = gate();
    let call = tokio::spawn(svc.clone().oneshot(rx));
    settle().await;
    assert_eq!(handle.in_flight(), 1);
    call.abort();
    settle().await;
    assert_eq!(handle.in_flight(), 0);
    assert!(script.samples().is_empty());
    let (tx, rx) = gate();
    tx.send(false).unwrap();
    svc.oneshot(rx).await.unwrap();
}

// builder::max_queue: "At most this many calls wait for a permit";
// max_wait: "A queued call waits at most this long, then fails with
// ConcurrencyLimited."; ConcurrencyLimited messages "..., 50 queued" and
// "..., gave up after waiting 100ms in the queue"; waited(): "the limit's
// max_wait if it waited that long in the queue"; handle.queued().
#[tokio::test(start_paused = true)]
async fn layer_queue_full_and_queue_timeout() {
    let (events, listener) = limit_events();
    let script = Script::new(1);
    let layer = scripted("q", &script)
        .max_queue(1)
        .max_wait(ms(100))
        .on_event(listener)
        .build()
        .unwrap();
    let handle = layer.handle();
    let svc = layer.layer(service_fn(gated));
    let (ta, ra) = gate();
    let a = tokio::spawn(svc.clone().oneshot(ra));
    settle().await;
    let (_tb, rb) = gate();
    let b = tokio::spawn(svc.clone().oneshot(rb));
    settle().await;
    assert_eq!((handle.in_flight(), handle.queued()), (1, 1));

    let (_tc, rc) = gate();
    let err = svc.clone().oneshot(rc).await.unwrap_err();
    let limited = err
        .downcast_ref::<ConcurrencyLimited>()
        .expect("refused at once");
    assert_eq!(
        (limited.limit(), limited.max_queue(), limited.waited()),
        (1, 1, None)
    );
    assert_eq!(
        err.to_string(),
        r#"adaptive limit "q" is reached: 1 in flight, 1 queued"#
    );

    sleep(ms(101)).await;
    let err = b.await.unwrap().unwrap_err();
    let limited = err
        .downcast_ref::<ConcurrencyLimited>()
        .expect("gave up in the queue");
    assert_eq!(limited.waited(), Some(ms(100)));
    assert_eq!(
        err.to_string(),
        r#"adaptive limit "q" is reached: 1 in flight, gave up after waiting 100ms in the queue"#
    );
    assert_eq!(handle.queued(), 0);
    let rejected: Vec<_> = events.lock().unwrap().iter().map(|(_, e)| *e).collect();
    assert_eq!(
        rejected,
        [
            AdaptiveLimitEvent::Rejected {
                timed_out_in_queue: false
            },
            AdaptiveLimitEvent::Rejected {
                timed_out_in_queue: true
            },
        ]
    );
    ta.send(false).unwrap();
    a.await.unwrap().unwrap();
}

// AdaptiveLimit::clone: "A clone shares the limit, but not a permit or
// queued place." and "Calls over the limit wait in a bounded queue": a queued
// call that is dropped must not keep its queue place.
#[tokio::test(start_paused = true)]
async fn layer_dropped_queued_call_gives_its_place_back() {
    let script = Script::new(1);
    let layer = scripted("d", &script).max_queue(1).build().unwrap();
    let handle = layer.handle();
    let svc = layer.layer(service_fn(gated));
    let (ta, ra) = gate();
    let a = tokio::spawn(svc.clone().oneshot(ra));
    settle().await;
    let (_tb, rb) = gate();
    let b = tokio::spawn(svc.clone().oneshot(rb));
    settle().await;
    assert_eq!(handle.queued(), 1);
    b.abort();
    settle().await;
    assert_eq!(handle.queued(), 0, "the cancelled call left the queue");
    // The queue has room again: a new call waits rather than being refused.
    let (tc, rc) = gate();
    let c = tokio::spawn(svc.clone().oneshot(rc));
    settle().await;
    assert_eq!(handle.queued(), 1);
    assert!(!c.is_finished());
    ta.send(false).unwrap();
    a.await.unwrap().unwrap();
    tc.send(false).unwrap();
    c.await.unwrap().unwrap();
    assert!(script.samples().len() == 2);
}

// builder::max_queue: "first come first served"
#[tokio::test(start_paused = true)]
async fn layer_queue_is_first_come_first_served() {
    let script = Script::new(1);
    let layer = scripted("f", &script).max_queue(5).build().unwrap();
    let order = Arc::new(Mutex::new(Vec::new()));
    let log = order.clone();
    let svc = layer.layer(service_fn(move |(id, rx): (u32, Gate)| {
        log.lock().unwrap().push(id);
        gated(rx)
    }));
    let mut senders = Vec::new();
    let mut tasks = Vec::new();
    for id in 0..4 {
        let (tx, rx) = gate();
        senders.push(tx);
        tasks.push(tokio::spawn(svc.clone().oneshot((id, rx))));
        settle().await;
    }
    assert_eq!(*order.lock().unwrap(), [0]);
    for (id, tx) in senders.into_iter().enumerate() {
        tx.send(false).unwrap();
        settle().await;
        let expected: Vec<u32> = (0..=(id as u32 + 1).min(3)).collect();
        assert_eq!(*order.lock().unwrap(), expected);
    }
    for task in tasks {
        task.await.unwrap().unwrap();
    }
}

// Builder default table: "max_wait none: a queued call waits until a
// permit frees up"
#[tokio::test(start_paused = true)]
async fn layer_queued_call_without_max_wait_waits() {
    let script = Script::new(1);
    let layer = scripted("w", &script).max_queue(1).build().unwrap();
    let handle = layer.handle();
    let svc = layer.layer(service_fn(gated));
    let (ta, ra) = gate();
    let a = tokio::spawn(svc.clone().oneshot(ra));
    settle().await;
    let (tb, rb) = gate();
    let b = tokio::spawn(svc.clone().oneshot(rb));
    sleep(secs(3600)).await;
    assert_eq!(handle.queued(), 1);
    assert!(!b.is_finished());
    ta.send(false).unwrap();
    a.await.unwrap().unwrap();
    tb.send(false).unwrap();
    b.await.unwrap().unwrap();
}

// "it is the bulkhead's semaphore, whose limit moves; a lower limit cuts no
// call in flight off"; handle.in_flight(): "Above the limit for a while after
// the algorithm lowered it: no call in flight is cut off."
#[tokio::test(start_paused = true)]
async fn layer_lowered_limit_cuts_no_call_off() {
    let script = Script::new(3);
    let layer = scripted("low", &script).build().unwrap();
    let handle = layer.handle();
    let svc = layer.layer(service_fn(gated));
    let mut senders = Vec::new();
    let mut tasks = Vec::new();
    for _ in 0..3 {
        let (tx, rx) = gate();
        senders.push(tx);
        tasks.push(tokio::spawn(svc.clone().oneshot(rx)));
    }
    settle().await;
    assert_eq!(handle.in_flight(), 3);
    script.set(1);
    let mut senders = senders.into_iter();
    let mut tasks = tasks.into_iter();
    senders.next().unwrap().send(false).unwrap();
    tasks.next().unwrap().await.unwrap().unwrap();
    assert_eq!((handle.limit(), handle.in_flight()), (1, 2));

    let refused = svc.clone().oneshot(dropped_gate()).await.unwrap_err();
    let limited = refused
        .downcast_ref::<ConcurrencyLimited>()
        .expect("over the new limit");
    assert_eq!(limited.limit(), 1);

    senders.next().unwrap().send(false).unwrap();
    tasks
        .next()
        .unwrap()
        .await
        .unwrap()
        .expect("the call in flight was not cut off");
    assert_eq!(handle.in_flight(), 1);
    let refused = svc.clone().oneshot(dropped_gate()).await.unwrap_err();
    assert_eq!(
        ErrorKind::of(&refused),
        ErrorKind::ConcurrencyLimited,
        "1 in flight of 1"
    );

    senders.next().unwrap().send(false).unwrap();
    tasks
        .next()
        .unwrap()
        .await
        .unwrap()
        .expect("the call in flight was not cut off");
    assert_eq!(handle.in_flight(), 0);
    let (tx, rx) = gate();
    tx.send(false).unwrap();
    svc.oneshot(rx).await.unwrap();
}

// "AdaptiveLimitLayer is a bulkhead whose limit a LimitAlgorithm moves":
// a raised limit admits the calls waiting in the queue.
#[tokio::test(start_paused = true)]
async fn layer_raised_limit_admits_queued_calls() {
    let script = Script::new(1);
    let layer = scripted("up", &script).max_queue(5).build().unwrap();
    let handle = layer.handle();
    let svc = layer.layer(service_fn(gated));
    let (ta, ra) = gate();
    let a = tokio::spawn(svc.clone().oneshot(ra));
    settle().await;
    let (tb, rb) = gate();
    let b = tokio::spawn(svc.clone().oneshot(rb));
    let (tc, rc) = gate();
    let c = tokio::spawn(svc.clone().oneshot(rc));
    settle().await;
    assert_eq!((handle.in_flight(), handle.queued()), (1, 2));
    script.set(3);
    ta.send(false).unwrap();
    a.await.unwrap().unwrap();
    settle().await;
    assert_eq!(handle.limit(), 3);
    assert_eq!(
        (handle.in_flight(), handle.queued()),
        (2, 0),
        "both queued calls admitted"
    );
    tb.send(false).unwrap();
    tc.send(false).unwrap();
    b.await.unwrap().unwrap();
    c.await.unwrap().unwrap();
}

// LimitAlgorithm: "applies the limit it returns, kept within 1 and
// MAX_ADAPTIVE_LIMIT."
#[tokio::test(start_paused = true)]
async fn layer_keeps_the_algorithms_limit_within_bounds() {
    let script = Script::new(5);
    let layer = scripted("b", &script).build().unwrap();
    let handle = layer.handle();
    let svc = layer.layer(service_fn(timed));
    script.set(0);
    svc.clone().oneshot((1, false)).await.unwrap();
    assert_eq!(handle.limit(), 1);
    script.set(u32::MAX);
    svc.clone().oneshot((1, false)).await.unwrap();
    assert_eq!(handle.limit(), MAX_ADAPTIVE_LIMIT);
}

// builder::window: "The algorithm learns from windows of samples, each taken
// as one (its mean RTT, its highest in-flight count, and a failure if any
// call in it failed) ... and it closes only once it holds min_samples."
#[tokio::test(start_paused = true)]
async fn layer_window_folds_its_samples_into_one() {
    let script = Script::new(10);
    let layer = AdaptiveLimitLayer::builder()
        .name("win")
        .algorithm(script.clone())
        .window(Duration::ZERO, Duration::ZERO)
        .min_samples(3)
        .build()
        .unwrap();
    let svc = layer.layer(service_fn(timed));
    let (a, b) = tokio::join!(
        svc.clone().oneshot((10, false)),
        svc.clone().oneshot((20, false))
    );
    a.unwrap();
    b.unwrap();
    assert!(
        script.samples().is_empty(),
        "2 of 3 samples: the window is open"
    );
    svc.clone().oneshot((30, true)).await.unwrap_err();
    let samples = script.samples();
    assert_eq!(samples.len(), 1, "{samples:?}");
    assert_eq!(samples[0].rtt(), ms(20), "the mean RTT");
    assert_eq!(samples[0].in_flight(), 2, "the highest in-flight count");
    assert!(samples[0].dropped(), "one call in it failed");
}

// Builder default table: "window from 100 ms to 250 ms ... min_samples 10";
// min_samples: "A window closes only once it holds this many samples".
#[tokio::test(start_paused = true)]
async fn layer_default_window_waits_for_ten_samples() {
    let script = Script::new(10);
    let layer = AdaptiveLimitLayer::builder()
        .algorithm(script.clone())
        .build()
        .unwrap();
    let svc = layer.layer(service_fn(timed));
    for _ in 0..9 {
        svc.clone().oneshot((10, false)).await.unwrap();
    }
    sleep(secs(1)).await;
    assert!(
        script.samples().is_empty(),
        "9 samples: fewer than min_samples"
    );
    svc.clone().oneshot((10, false)).await.unwrap();
    let samples = script.samples();
    assert_eq!(samples.len(), 1, "{samples:?}");
    assert_eq!(
        (
            samples[0].rtt(),
            samples[0].in_flight(),
            samples[0].dropped()
        ),
        (ms(10), 1, false)
    );
}

// builder::window: "A window lasts twice the previous one's lowest RTT (as
// there), at least min and at most max".
#[tokio::test(start_paused = true)]
async fn layer_time_windows() {
    let script = Script::new(10);
    let layer = AdaptiveLimitLayer::builder()
        .algorithm(script.clone())
        .window(ms(100), ms(100))
        .min_samples(1)
        .build()
        .unwrap();
    let svc = layer.layer(service_fn(timed));
    for _ in 0..100 {
        svc.clone().oneshot((10, false)).await.unwrap();
    }
    let n = script.samples().len();
    assert!(
        (8..=12).contains(&n),
        "1 s of 10 ms calls in 100 ms windows: {n} windows"
    );
}

// builder::per_sample: "The algorithm learns from every sample on its own,
// as it comes".
#[tokio::test(start_paused = true)]
async fn layer_per_sample() {
    let script = Script::new(10);
    let svc = scripted("p", &script)
        .build()
        .unwrap()
        .layer(service_fn(timed));
    for i in 1..=5 {
        svc.clone().oneshot((i, false)).await.unwrap();
    }
    let rtts: Vec<Duration> = script.samples().iter().map(Sample::rtt).collect();
    assert_eq!(rtts, [ms(1), ms(2), ms(3), ms(4), ms(5)]);
}

// AdaptiveLimitBuilder::build: "Errors: An algorithm whose initial limit is
// zero or above MAX_ADAPTIVE_LIMIT, a queue longer than that, a zero or
// unrepresentable maximum wait, a maximum wait without a queue, a window
// whose shortest is longer than its longest, zero samples per window."
#[test]
fn layer_builder_validation() {
    let b = || AdaptiveLimitLayer::builder().algorithm(aimd(10, 1));
    assert!(b().build().is_ok());
    assert!(
        AdaptiveLimitLayer::builder()
            .algorithm(Script::new(0))
            .build()
            .is_err(),
        "initial 0"
    );
    assert!(
        AdaptiveLimitLayer::builder()
            .algorithm(Script::new(MAX_ADAPTIVE_LIMIT + 1))
            .build()
            .is_err(),
        "initial above MAX"
    );
    assert!(
        AdaptiveLimitLayer::builder()
            .algorithm(Script::new(MAX_ADAPTIVE_LIMIT))
            .build()
            .is_ok()
    );
    assert!(b().max_queue(MAX_ADAPTIVE_LIMIT).build().is_ok());
    assert!(
        b().max_queue(MAX_ADAPTIVE_LIMIT + 1).build().is_err(),
        "queue above MAX"
    );
    assert!(
        b().max_queue(1).max_wait(Duration::ZERO).build().is_err(),
        "zero wait"
    );
    assert!(
        b().max_queue(1).max_wait(Duration::MAX).build().is_err(),
        "unrepresentable wait"
    );
    assert!(
        b().max_wait(ms(100)).build().is_err(),
        "a wait without a queue"
    );
    assert!(b().max_queue(1).max_wait(ms(100)).build().is_ok());
    assert!(
        b().window(ms(200), ms(100)).build().is_err(),
        "window out of order"
    );
    assert!(b().window(ms(100), ms(100)).build().is_ok());
    assert!(
        b().min_samples(0).build().is_err(),
        "zero samples per window"
    );
    assert!(b().min_samples(1).build().is_ok());
}

// AdaptiveLimitLayer: "One layer is one limit: every service it wraps and
// every clone of them draw from the same permits and queue, and teach the
// same algorithm."; AdaptiveLimitHandle: "Cheap to clone".
#[tokio::test(start_paused = true)]
async fn layer_services_and_clones_share_one_limit() {
    let layer = AdaptiveLimitLayer::builder()
        .name("shared")
        .algorithm(aimd(1, 1))
        .per_sample()
        .build()
        .unwrap();
    let first = layer.layer(service_fn(gated));
    let second = layer.clone().layer(service_fn(gated));
    let (ta, ra) = gate();
    let a = tokio::spawn(first.clone().oneshot(ra));
    settle().await;
    let err = second.clone().oneshot(dropped_gate()).await.unwrap_err();
    assert_eq!(ErrorKind::of(&err), ErrorKind::ConcurrencyLimited);
    for handle in [layer.handle(), second.handle(), first.handle().clone()] {
        assert_eq!((handle.name(), handle.in_flight()), ("shared", 1));
    }
    ta.send(false).unwrap();
    a.await.unwrap().unwrap();
    assert_eq!(
        second.handle().limit(),
        2,
        "taught through the first service: 1 of 1 in use"
    );
}

// handle.in_flight(): "Calls holding a permit: in flight, or reserved by a
// poll_ready whose call has not come yet."; into_inner: "Unwraps the inner
// service (giving back any permit it reserved)."; clone: "A clone shares the
// limit, but not a permit".
#[tokio::test(start_paused = true)]
async fn layer_poll_ready_reserves_a_permit() {
    let layer = AdaptiveLimitLayer::builder()
        .algorithm(aimd(1, 1))
        .build()
        .unwrap();
    let handle = layer.handle();
    let svc = layer.layer(service_fn(|_: ()| async { Ok::<_, BoxError>(()) }));
    let mut holder = svc.clone();
    holder.ready().await.unwrap();
    assert_eq!(handle.in_flight(), 1);
    let copy = holder.clone();
    let err = copy.oneshot(()).await.unwrap_err();
    assert_eq!(
        ErrorKind::of(&err),
        ErrorKind::ConcurrencyLimited,
        "the clone has no permit"
    );
    let _inner = holder.into_inner();
    assert_eq!(handle.in_flight(), 0, "into_inner gave the permit back");
    let mut again = svc.clone();
    again.ready().await.unwrap();
    again.call(()).await.unwrap();
    assert_eq!(handle.in_flight(), 0);
}

// "each change is an AdaptiveLimitEvent::LimitChanged"; LimitChanged: "The
// algorithm moved the limit."; Event's Display: the pattern's sentence with
// the layer's name.
#[tokio::test(start_paused = true)]
async fn layer_limit_changed_events_only_on_change() {
    let (events, listener) = limit_events();
    let strings = Arc::new(Mutex::new(Vec::new()));
    let log = strings.clone();
    let layer = AdaptiveLimitLayer::builder()
        .name("ev")
        .algorithm(aimd(10, 1))
        .per_sample()
        .on_event(listener)
        .on_event(move |event: &Event<'_>| log.lock().unwrap().push(event.to_string()))
        .build()
        .unwrap();
    let svc = layer.layer(service_fn(timed));
    svc.clone().oneshot((1, true)).await.unwrap_err();
    svc.clone().oneshot((1, false)).await.unwrap(); // 1 of 9: unchanged
    assert_eq!(
        *events.lock().unwrap(),
        [(
            "ev".to_string(),
            AdaptiveLimitEvent::LimitChanged { from: 10, to: 9 }
        )]
    );
    let strings = strings.lock().unwrap();
    assert_eq!(strings.len(), 1);
    assert!(strings[0].contains("ev"), "{}", strings[0]);
}

// LimitAlgorithm: "impl LimitAlgorithm for Box<dyn LimitAlgorithm>";
// builder::algorithm: "Aimd, Vegas, Gradient2, or one of your own."
#[tokio::test(start_paused = true)]
async fn layer_takes_a_boxed_algorithm() {
    let boxed: Box<dyn LimitAlgorithm> = Box::new(aimd(7, 1));
    let layer = AdaptiveLimitLayer::builder()
        .algorithm(boxed)
        .per_sample()
        .build()
        .unwrap();
    let handle = layer.handle();
    assert_eq!(handle.limit(), 7);
    layer
        .layer(service_fn(timed))
        .oneshot((1, true))
        .await
        .unwrap_err();
    assert_eq!(handle.limit(), 6);
}

// Aimd::timeout "A successful call slower than this counts as a failure" +
// Sample::rtt measured by the layer "from its call to the moment its outcome
// was known".
#[tokio::test(start_paused = true)]
async fn layer_slow_success_backs_aimd_off() {
    let alg = Aimd::builder()
        .initial_limit(10)
        .min_limit(1)
        .timeout(ms(100))
        .build()
        .unwrap();
    let layer = AdaptiveLimitLayer::builder()
        .algorithm(alg)
        .per_sample()
        .build()
        .unwrap();
    let handle = layer.handle();
    layer
        .layer(service_fn(timed))
        .oneshot((200, false))
        .await
        .unwrap();
    assert_eq!(handle.limit(), 9);
}

// "A call's RTT runs from its call to the moment its outcome is known: the
// response head, or, with a classifier that reads the status at the end of a
// body (gRPC's, when the status comes in trailers), the end of that body;
// the permit is held until then."
#[tokio::test(start_paused = true)]
async fn layer_grpc_trailers_hold_the_permit_until_the_body_ends() {
    let script = Script::new(1);
    let layer = scripted("g", &script)
        .classifier(GrpcClassifier::new())
        .build()
        .unwrap();
    let handle = layer.handle();
    let svc = layer.layer(service_fn(|code: &'static str| async move {
        Ok::<_, BoxError>(http::Response::new(trailer_body(code, ms(50))))
    }));
    let res = svc.clone().oneshot("14").await.unwrap();
    assert_eq!(
        handle.in_flight(),
        1,
        "the head came: the permit is still held"
    );
    assert!(script.samples().is_empty());
    let err = svc.clone().oneshot("0").await.unwrap_err();
    assert_eq!(ErrorKind::of(&err), ErrorKind::ConcurrencyLimited);
    let body = res.into_body().collect().await.unwrap();
    assert!(body.trailers().is_some());
    assert_eq!(handle.in_flight(), 0);
    let samples = script.samples();
    assert_eq!(samples.len(), 1);
    assert_eq!(samples[0].rtt(), ms(100), "until the end of the body");
    assert!(
        samples[0].dropped(),
        "UNAVAILABLE in the trailers is a failure"
    );
}

/// An algorithm whose first update blocks until the test lets it go.
#[derive(Debug, Clone)]
struct Blocking {
    samples: Arc<Mutex<Vec<Sample>>>,
    first: Arc<std::sync::atomic::AtomicBool>,
    entered: Arc<Mutex<std::sync::mpsc::Sender<()>>>,
    release: Arc<Mutex<std::sync::mpsc::Receiver<()>>>,
}

impl LimitAlgorithm for Blocking {
    fn initial_limit(&self) -> u32 {
        100
    }
    fn update(&mut self, sample: &Sample) -> u32 {
        self.samples.lock().unwrap().push(*sample);
        if !self.first.swap(true, Ordering::SeqCst) {
            self.entered.lock().unwrap().send(()).unwrap();
            self.release.lock().unwrap().recv().unwrap();
        }
        100
    }
}

// "No lock waited for. The algorithm's lock is only ever tried: a call that
// finds it taken leaves its sample in the pile, which the holder, or the
// next call, learns. No sample is lost and no finishing call waits";
// LimitAlgorithm: "With per_sample, each call's own sample; a call that
// finishes while another sample is being learned is not lost, but folded
// with the others that do into one sample (taken as a window's are),
// learned right after" (a window's: "their mean RTT, their highest
// in-flight count, and failed if any of them failed").
// (Real threads; the 30 s timeout only guards against a hang.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn layer_samples_finishing_during_learning_are_folded() {
    let (entered_tx, entered_rx) = std::sync::mpsc::channel();
    let (release_tx, release_rx) = std::sync::mpsc::channel();
    let alg = Blocking {
        samples: Arc::default(),
        first: Arc::default(),
        entered: Arc::new(Mutex::new(entered_tx)),
        release: Arc::new(Mutex::new(release_rx)),
    };
    let layer = AdaptiveLimitLayer::builder()
        .algorithm(alg.clone())
        .per_sample()
        .build()
        .unwrap();
    let handle = layer.handle();
    let svc = layer.layer(service_fn(gated));
    let mut gates = Vec::new();
    let mut calls = Vec::new();
    for i in 1..=6 {
        let (tx, rx) = gate();
        calls.push(tokio::spawn(svc.clone().oneshot(rx)));
        while handle.in_flight() < i {
            tokio::task::yield_now().await;
        }
        gates.push(tx);
    }
    let mut gates = gates.into_iter();
    let mut calls = calls.into_iter();
    // A (1 in flight) succeeds, and learning its sample blocks.
    gates.next().unwrap().send(false).unwrap();
    let a = calls.next().unwrap();
    tokio::task::spawn_blocking(move || entered_rx.recv().unwrap())
        .await
        .unwrap();
    // B, C, D (2, 3, 4 in flight) succeed; E, F (5, 6) fail.
    for fail in [false, false, false, true, true] {
        gates.next().unwrap().send(fail).unwrap();
    }
    for (i, call) in calls.enumerate() {
        let result = tokio::time::timeout(Duration::from_secs(30), call)
            .await
            .expect("a finishing call does not wait for the learner")
            .unwrap();
        assert_eq!(result.is_err(), i >= 3);
    }
    release_tx.send(()).unwrap();
    a.await.unwrap().unwrap();
    assert_eq!(handle.in_flight(), 0);
    let samples = alg.samples.lock().unwrap().clone();
    assert_eq!(
        samples.len(),
        2,
        "A, then the five folded into one: {samples:?}"
    );
    assert_eq!((samples[0].in_flight(), samples[0].dropped()), (1, false));
    assert!(samples[1].dropped(), "two of the five failed: {samples:?}");
    assert_eq!(
        samples[1].in_flight(),
        6,
        "the highest in-flight count: {samples:?}"
    );
}

// ========================================================== the throttle

// The adaptive module's throttle example: "ThrottleLayer::builder()
// .name("search").min_answered(10).seed(7)" ... "Every request failed: past
// the first 10, nearly all are turned away without reaching the service."
// "assert_eq!((handle.requests(), handle.accepts()), (100, 0));"
#[tokio::test(start_paused = true)]
async fn throttle_module_example() {
    let throttle = ThrottleLayer::builder()
        .name("search")
        .min_answered(10)
        .seed(7)
        .build()
        .unwrap();
    let handle = throttle.handle();
    let (calls, inner) = counting(|_| true);
    let down = throttle.layer(inner);
    let mut throttled = 0;
    for _ in 0..100 {
        let err = down.clone().oneshot(()).await.unwrap_err();
        throttled += usize::from(ErrorKind::of(&err) == ErrorKind::Throttled);
    }
    assert!(throttled > 80, "{throttled}");
    assert_eq!((handle.requests(), handle.accepts()), (100, 0));
    assert_eq!(
        calls.load(Ordering::SeqCst) + throttled,
        100,
        "a rejected call never reached it"
    );
    assert_eq!(handle.name(), "search");
}

// ThrottleBuilder default table: "name "throttle"; min_answered 100
// (Kratos's): nothing is rejected until the window holds as many answered
// requests"; handle.probability(): "The share of calls the throttle rejects
// now".
#[tokio::test(start_paused = true)]
async fn throttle_min_answered_default() {
    let throttle = ThrottleLayer::builder().seed(3).build().unwrap();
    let handle = throttle.handle();
    assert_eq!(handle.name(), "throttle");
    let (calls, inner) = counting(|_| true);
    let svc = throttle.layer(inner);
    for i in 0..100 {
        assert_eq!(handle.probability(), 0.0, "{i} answered: fewer than 100");
        let err = svc.clone().oneshot(()).await.unwrap_err();
        assert_eq!(ErrorKind::of(&err), ErrorKind::Inner);
    }
    assert_eq!(calls.load(Ordering::SeqCst), 100);
    assert!(
        approx(handle.probability(), 100.0 / 101.0),
        "{}",
        handle.probability()
    );
}

// ThrottleBuilder::min_answered: "0 applies the formula from the first
// request"; "The formula alone judges from too little: one failed request
// turns half of the next calls away."
#[tokio::test(start_paused = true)]
async fn throttle_min_answered_zero_applies_the_formula_at_once() {
    let throttle = ThrottleLayer::builder()
        .min_answered(0)
        .seed(3)
        .build()
        .unwrap();
    let handle = throttle.handle();
    let (_, inner) = counting(|_| true);
    throttle.layer(inner).oneshot(()).await.unwrap_err();
    assert!(
        approx(handle.probability(), 0.5),
        "{}",
        handle.probability()
    );
}

// "rejects each new call locally, with Throttled, with probability
// max(0, (requests − K × accepts) / (requests + 1))", K 2 by default.
// (Counts above 100 requests, so that whatever the minimum, the formula applies.)
#[tokio::test(start_paused = true)]
async fn throttle_probability_formula_default_k() {
    let throttle = ThrottleLayer::builder().seed(5).build().unwrap();
    let handle = throttle.handle();
    let (ok_calls, up) = counting(|_| false);
    let (bad_calls, down) = counting(|_| true);
    let (up, down) = (throttle.layer(up), throttle.layer(down));
    for _ in 0..60 {
        up.clone().oneshot(()).await.unwrap();
    }
    for _ in 0..60 {
        down.clone().oneshot(()).await.unwrap_err();
        assert_eq!(handle.probability(), 0.0, "requests ≤ 2 × accepts");
    }
    assert_eq!(
        (
            ok_calls.load(Ordering::SeqCst),
            bad_calls.load(Ordering::SeqCst)
        ),
        (60, 60)
    );
    down.clone().oneshot(()).await.unwrap_err();
    assert_eq!((handle.requests(), handle.accepts()), (121, 60));
    assert!(
        approx(handle.probability(), 1.0 / 122.0),
        "(121 − 120) / 122: {}",
        handle.probability()
    );
}

// ThrottleBuilder::k: "SRE's multiplier K, at least 1"; the formula with K 1.5.
#[tokio::test(start_paused = true)]
async fn throttle_probability_formula_k_one_and_a_half() {
    let throttle = ThrottleLayer::builder().k(1.5).seed(5).build().unwrap();
    let handle = throttle.handle();
    let up = throttle.layer(counting(|_| false).1);
    let down = throttle.layer(counting(|_| true).1);
    for _ in 0..40 {
        up.clone().oneshot(()).await.unwrap();
    }
    for _ in 0..80 {
        down.clone().oneshot(()).await.unwrap_err();
    }
    assert_eq!((handle.requests(), handle.accepts()), (120, 40));
    assert!(
        approx(handle.probability(), 60.0 / 121.0),
        "(120 − 60) / 121: {}",
        handle.probability()
    );
}

// ThrottleBuilder::k: "at 1.1, throttling starts when 1 request in 11 fails"
#[tokio::test(start_paused = true)]
async fn throttle_k_one_point_one() {
    let throttle = ThrottleLayer::builder().k(1.1).seed(5).build().unwrap();
    let handle = throttle.handle();
    let up = throttle.layer(counting(|_| false).1);
    let down = throttle.layer(counting(|_| true).1);
    for _ in 0..100 {
        up.clone().oneshot(()).await.unwrap();
    }
    for _ in 0..10 {
        down.clone().oneshot(()).await.unwrap_err();
    }
    assert_eq!((handle.requests(), handle.accepts()), (110, 100));
    assert_eq!(
        handle.probability(),
        0.0,
        "1 in 11 failed: 110 − 1.1 × 100 = 0"
    );
    down.clone().oneshot(()).await.unwrap_err();
    assert!(
        approx(handle.probability(), 1.0 / 112.0),
        "11 in 111: {}",
        handle.probability()
    );
}

// "calls in flight count as requests not (yet) accepted, so a service that
// stops answering is throttled before its timeouts come back"
#[tokio::test(start_paused = true)]
async fn throttle_calls_in_flight_count_as_requests() {
    let throttle = ThrottleLayer::builder().build().unwrap();
    let handle = throttle.handle();
    let svc = throttle.layer(service_fn(gated));
    for _ in 0..149 {
        svc.clone().oneshot(dropped_gate()).await.unwrap_err(); // failures (or throttled)
    }
    assert_eq!(handle.requests(), 149);
    // The next call that is not throttled stays in flight.
    let (tx, call) = loop {
        let (tx, rx) = gate();
        let call = tokio::spawn(svc.clone().oneshot(rx));
        settle().await;
        if !call.is_finished() {
            break (tx, call);
        }
        let err = call.await.unwrap().unwrap_err();
        assert!(err.is::<Throttled>(), "{err}");
    };
    let r = handle.requests();
    assert_eq!(handle.accepts(), 0);
    assert!(
        approx(handle.probability(), r as f64 / (r as f64 + 1.0)),
        "the call in flight is a request not accepted: {r}, {}",
        handle.probability()
    );
    tx.send(false).unwrap();
    call.await.unwrap().unwrap();
    assert_eq!((handle.requests(), handle.accepts()), (r, 1));
    assert!(
        approx(handle.probability(), (r as f64 - 2.0) / (r as f64 + 1.0)),
        "{}",
        handle.probability()
    );
}

// ThrottleGuard: "Told a success, it counts an accept; a failure, nothing
// more ... Ignored, or dropped without an outcome (the call was cancelled),
// it takes the request back out."; builder::classifier: "One it Ignored
// counts neither as a request nor as an accept."
#[tokio::test(start_paused = true)]
async fn throttle_ignored_and_failed_calls() {
    let ignore = classify_fn(|r: &Result<(), BoxError>| match r {
        Ok(()) => Outcome::Success,
        Err(e) if e.to_string() == "failed" => Outcome::Ignored,
        Err(_) => Outcome::Failure,
    });
    let throttle = ThrottleLayer::builder().classifier(ignore).build().unwrap();
    let handle = throttle.handle();
    let svc = throttle.layer(service_fn(gated));
    let (tx, rx) = gate();
    tx.send(true).unwrap();
    svc.clone().oneshot(rx).await.unwrap_err();
    assert_eq!(
        (handle.requests(), handle.accepts()),
        (0, 0),
        "ignored: taken back out"
    );
    svc.clone().oneshot(dropped_gate()).await.unwrap_err(); // "gate dropped": a failure
    assert_eq!(
        (handle.requests(), handle.accepts()),
        (1, 0),
        "a failure stays a request"
    );
}

// "A call the classifier ignores, or one dropped before its outcome was
// known, is taken back out."
#[tokio::test(start_paused = true)]
async fn throttle_cancelled_call_is_taken_back_out() {
    let throttle = ThrottleLayer::builder().build().unwrap();
    let handle = throttle.handle();
    let svc = throttle.layer(service_fn(gated));
    let (_keep, rx) = gate();
    let call = tokio::spawn(svc.clone().oneshot(rx));
    settle().await;
    assert_eq!(handle.requests(), 1);
    call.abort();
    settle().await;
    assert_eq!((handle.requests(), handle.accepts()), (0, 0));
    assert_eq!(handle.probability(), 0.0);
}

// "over a sliding window (2 minutes by default)"; default table: "window 2
// minutes (SRE's), sliding in 20 steps"; builder::window: "a request older
// than the window is no longer counted at all."
#[tokio::test(start_paused = true)]
async fn throttle_window_slides() {
    let throttle = ThrottleLayer::builder().build().unwrap();
    let handle = throttle.handle();
    let svc = throttle.layer(counting(|_| true).1);
    for _ in 0..5 {
        svc.clone().oneshot(()).await.unwrap_err();
    }
    assert_eq!(handle.requests(), 5);
    sleep(secs(113)).await;
    assert_eq!(
        handle.requests(),
        5,
        "113 s old: within 2 minutes less a step"
    );
    sleep(secs(14)).await;
    assert_eq!(handle.requests(), 0, "127 s old: past 2 minutes and a step");
}

// "An accept counts in the window's bucket of its request, so a request and
// its accept leave the window together"; builder::window: "an accept is
// counted with its request".
#[tokio::test(start_paused = true)]
async fn throttle_accept_leaves_with_its_request() {
    let throttle = ThrottleLayer::builder().window(secs(10)).build().unwrap();
    let handle = throttle.handle();
    let svc = throttle.layer(service_fn(timed));
    svc.clone().oneshot((8_000, false)).await.unwrap(); // sent at 0 s, accepted at 8 s
    assert_eq!((handle.requests(), handle.accepts()), (1, 1));
    sleep(secs(1)).await; // 9 s
    assert_eq!((handle.requests(), handle.accepts()), (1, 1));
    sleep(secs(2)).await; // 11 s: the request is older than the window and its step
    assert_eq!(
        (handle.requests(), handle.accepts()),
        (0, 0),
        "the accept left with its request"
    );
}

// Throttled: "Carries the throttle's name, the share it was rejecting and the
// counts it came from. Its message: throttle "search" rejected the call
// locally: 40 of 120 requests accepted in the last 120s, so it rejects 33.1%
// of calls."; requests(): "The requests in the throttle's window before this
// one."; window(): "How far back the throttle counts."
#[tokio::test(start_paused = true)]
async fn throttle_throttled_error() {
    let throttle = ThrottleLayer::builder()
        .name("search")
        .seed(1)
        .build()
        .unwrap();
    let svc = throttle.layer(counting(|_| true).1);
    let mut before = 0u64;
    let err = loop {
        let err = svc.clone().oneshot(()).await.unwrap_err();
        if err.is::<Throttled>() {
            break err;
        }
        before += 1;
    };
    let t = err.downcast_ref::<Throttled>().unwrap();
    assert_eq!((t.name(), t.key(), t.window()), ("search", None, secs(120)));
    assert_eq!((t.requests(), t.accepts()), (before, 0));
    let expected = t.requests() as f64 / (t.requests() as f64 + 1.0);
    assert!(
        approx(t.probability(), expected),
        "{} vs {expected}",
        t.probability()
    );
    assert!(t.probability() > 0.0 && t.probability() < 1.0);
    assert_eq!(
        err.to_string(),
        format!(
            "throttle \"search\" rejected the call locally: 0 of {} requests accepted in the last 120s, so it rejects {:.1}% of calls",
            t.requests(),
            t.probability() * 100.0
        )
    );
    assert_eq!(ErrorKind::of(&err), ErrorKind::Throttled);
    assert!(ErrorKind::Throttled.is_rejection());
}

// ThrottleEvent::Throttled: "The throttle rejected a call without calling the
// inner service. probability: The share of calls it was rejecting, in (0, 1)."
#[tokio::test(start_paused = true)]
async fn throttle_events_match_the_rejections() {
    let (events, listener) = throttle_events();
    let throttle = ThrottleLayer::builder()
        .name("ev")
        .seed(2)
        .on_event(listener)
        .build()
        .unwrap();
    let svc = throttle.layer(counting(|_| true).1);
    let mut probabilities = Vec::new();
    for _ in 0..200 {
        let err = svc.clone().oneshot(()).await.unwrap_err();
        if let Some(t) = err.downcast_ref::<Throttled>() {
            probabilities.push(t.probability());
        }
    }
    let events = events.lock().unwrap();
    assert!(!probabilities.is_empty());
    assert_eq!(events.len(), probabilities.len());
    for ((name, event), p) in events.iter().zip(&probabilities) {
        assert_eq!(name, "ev");
        let probability = match *event {
            ThrottleEvent::Throttled { probability } => probability,
            _ => panic!("{event:?}"),
        };
        assert_eq!(probability, *p);
        assert!(probability > 0.0 && probability < 1.0);
    }
}

// "rejects each new call locally ... with probability max(0, (requests − K ×
// accepts) / (requests + 1))": the share rejected follows the formula.
#[tokio::test(start_paused = true)]
async fn throttle_rejection_rate_follows_the_probability() {
    let throttle = ThrottleLayer::builder().seed(11).build().unwrap();
    let handle = throttle.handle();
    let up = throttle.layer(counting(|_| false).1);
    let down = throttle.layer(counting(|_| true).1);
    for _ in 0..3_000 {
        up.clone().oneshot(()).await.unwrap();
    }
    for _ in 0..7_000 {
        down.clone().oneshot(()).await.unwrap_err();
    }
    assert_eq!((handle.requests(), handle.accepts()), (10_000, 3_000));
    let mut expected = 0.0;
    let mut throttled = 0;
    for _ in 0..1_000 {
        expected += handle.probability();
        let err = down.clone().oneshot(()).await.unwrap_err();
        throttled += u32::from(err.is::<Throttled>());
    }
    // expected ≈ 427; the standard deviation is about 16.
    assert!(
        (expected - f64::from(throttled)).abs() < 70.0,
        "{throttled} vs {expected}"
    );
}

// "K is 2 by default: a service that accepts half the requests or more gets
// every one"
#[tokio::test(start_paused = true)]
async fn throttle_half_accepted_is_never_throttled() {
    let throttle = ThrottleLayer::builder().seed(4).build().unwrap();
    let (calls, inner) = counting(|n| n % 2 == 1);
    let svc = throttle.layer(inner);
    for _ in 0..200 {
        let _ = svc.clone().oneshot(()).await;
    }
    assert_eq!(calls.load(Ordering::SeqCst), 200);
    assert_eq!(throttle.handle().probability(), 0.0);
}

// "Since the probability stays below 1, a trickle still reaches a service
// that rejects everything"; handle.probability(): "in [0, 1)".
#[tokio::test(start_paused = true)]
async fn throttle_probability_stays_below_one() {
    let throttle = ThrottleLayer::builder().seed(8).build().unwrap();
    let handle = throttle.handle();
    let svc = throttle.layer(counting(|_| true).1);
    for _ in 0..1_000 {
        svc.clone().oneshot(()).await.unwrap_err();
    }
    assert!(handle.probability() < 1.0);
    assert!(
        approx(handle.probability(), 1000.0 / 1001.0),
        "{}",
        handle.probability()
    );
}

// ThrottleBuilder::seed: "Seeds the draws that reject calls, so that a test
// or simulation replays the same rejections."
#[tokio::test(start_paused = true)]
async fn throttle_seed_replays_the_rejections() {
    async fn pattern(seed: u64) -> Vec<bool> {
        let throttle = ThrottleLayer::builder().seed(seed).build().unwrap();
        let svc = throttle.layer(counting(|_| true).1);
        let mut out = Vec::new();
        for _ in 0..200 {
            out.push(svc.clone().oneshot(()).await.unwrap_err().is::<Throttled>());
        }
        out
    }
    let a = pattern(42).await;
    assert_eq!(a, pattern(42).await);
    assert!(a.iter().any(|t| *t) && a.iter().any(|t| !*t));
}

// ThrottleBuilder::build: "Errors: A K below 1 or not finite (...), a window
// shorter than 20 µs or unrepresentable."
#[test]
fn throttle_builder_validation() {
    let b = ThrottleLayer::builder;
    assert!(b().build().is_ok());
    assert!(b().k(1.0).build().is_ok());
    assert!(b().k(0.99).build().is_err());
    assert!(b().k(f64::NAN).build().is_err());
    assert!(b().k(f64::INFINITY).build().is_err());
    assert!(b().window(Duration::from_micros(20)).build().is_ok());
    assert!(b().window(Duration::from_micros(19)).build().is_err());
    assert!(b().window(Duration::MAX).build().is_err());
}

// ThrottleLayer: "One layer is one throttle: every service it wraps and every
// clone of them count in the same window."
#[tokio::test(start_paused = true)]
async fn throttle_services_and_clones_share_one_window() {
    let throttle = ThrottleLayer::builder().name("shared").build().unwrap();
    let a = throttle.layer(counting(|_| false).1);
    let b = throttle.clone().layer(counting(|_| true).1);
    a.clone().oneshot(()).await.unwrap();
    b.clone().oneshot(()).await.unwrap_err();
    for handle in [throttle.handle(), a.handle(), b.handle().clone()] {
        assert_eq!(
            (handle.name(), handle.requests(), handle.accepts()),
            ("shared", 2, 1)
        );
    }
}

// builder::classifier: "A classifier whose verdict waits for the end of a
// body (gRPC's, when the status comes in trailers) counts the accept then."
#[tokio::test(start_paused = true)]
async fn throttle_grpc_trailers_count_the_accept_at_the_end() {
    let throttle = ThrottleLayer::builder()
        .classifier(GrpcClassifier::new())
        .build()
        .unwrap();
    let handle = throttle.handle();
    let svc = throttle.layer(service_fn(|code: &'static str| async move {
        Ok::<_, BoxError>(http::Response::new(trailer_body(code, ms(50))))
    }));
    let res = svc.oneshot("0").await.unwrap();
    assert_eq!(
        (handle.requests(), handle.accepts()),
        (1, 0),
        "not yet accepted at the head"
    );
    res.into_body().collect().await.unwrap();
    assert_eq!((handle.requests(), handle.accepts()), (1, 1));
}

// ================================== respond, preset, retry and metrics

// respond table: "ConcurrencyLimited RESOURCE_EXHAUSTED ... Throttled
// UNAVAILABLE, as an open breaker"; to_status: "The message is the
// rejection's Display, and the rejection is the status's source, so
// ErrorKind::of_dyn still finds it." (grpc-retry-pushback-ms is documented
// only for a breaker and a rate limiter.)
#[tokio::test(start_paused = true)]
async fn respond_to_status() {
    let limited = a_concurrency_limited().await;
    let status = to_status(&*limited).unwrap();
    assert_eq!(status.code(), tonic::Code::ResourceExhausted);
    assert_eq!(status.message(), limited.to_string());
    assert_eq!(ErrorKind::of_dyn(&status), ErrorKind::ConcurrencyLimited);
    assert!(status.metadata().get("grpc-retry-pushback-ms").is_none());

    let throttled = a_throttled().await;
    let status = to_status(&*throttled).unwrap();
    assert_eq!(status.code(), tonic::Code::Unavailable);
    assert_eq!(status.message(), throttled.to_string());
    assert_eq!(ErrorKind::of_dyn(&status), ErrorKind::Throttled);
    assert!(status.metadata().get("grpc-retry-pushback-ms").is_none());
}

#[derive(Debug)]
struct Wrapped(BoxError);
impl std::fmt::Display for Wrapped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("client error")
    }
}
impl std::error::Error for Wrapped {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.0)
    }
}

// to_response: "ConcurrencyLimited and Throttled: 503, with Retry-After as for
// a full bulkhead (neither knows when it will admit the call)." BulkheadFull:
// "503, with Retry-After: 1"; "A rejection is found anywhere in the error's
// chain of sources".
#[tokio::test(start_paused = true)]
async fn respond_to_response() {
    let slow = HttpRejectionLayer::builder()
        .retry_after_when_busy(secs(3))
        .build()
        .unwrap();
    for err in [a_concurrency_limited().await, a_throttled().await] {
        let res = to_response::<String>(&*err).unwrap();
        assert_eq!(res.status(), http::StatusCode::SERVICE_UNAVAILABLE, "{err}");
        assert_eq!(res.headers()["retry-after"], "1", "{err}");
        let res = slow.to_response::<String>(&*err).unwrap();
        assert_eq!(res.headers()["retry-after"], "3", "{err}");
        let wrapped = Wrapped(err);
        let res = to_response::<String>(&wrapped).expect("found in the source chain");
        assert_eq!(res.status(), http::StatusCode::SERVICE_UNAVAILABLE);
    }
}

// ResilienceBuilder::adaptive_limit example: "assert_eq!(stack.concurrency()
// .handle().limit(), 20);"; throttle example: "assert_eq!(stack
// .circuit_breaker().handle().name(), "search");"
#[test]
fn preset_doc_examples() {
    let stack = Resilience::http()
        .adaptive_limit(|limit| limit.name("inventory").algorithm(Gradient2::default()))
        .build()
        .unwrap();
    assert_eq!(stack.concurrency().handle().limit(), 20);
    assert_eq!(stack.concurrency().handle().name(), "inventory");
    let stack = Resilience::http()
        .throttle(|throttle| throttle.name("search").k(1.5))
        .build()
        .unwrap();
    assert_eq!(stack.circuit_breaker().handle().name(), "search");
}

// adaptive_limit: "Inside the retry and the breaker, outside the per-attempt
// timeout: each attempt is a sample, and an attempt cut off by the timeout is
// a failure the algorithm backs off from."
#[tokio::test(start_paused = true)]
async fn preset_adaptive_limit_learns_each_attempt_and_its_timeout() {
    let stack = Resilience::builder()
        .retry(|retry| retry.max_attempts(2).no_budget())
        .adaptive_limit(|limit| limit.name("al").algorithm(aimd(10, 1)).per_sample())
        .attempt_timeout(ms(100))
        .build()
        .unwrap();
    let handle = stack.concurrency().handle();
    let svc = stack.layer(service_fn(|_: ()| async {
        sleep(secs(1)).await;
        Ok::<_, BoxError>(())
    }));
    let err = svc.oneshot(()).await.unwrap_err();
    assert_eq!(ErrorKind::of(&err), ErrorKind::Elapsed);
    assert_eq!(handle.limit(), 8, "two attempts cut off: 10 → 9 → 8");
    assert_eq!(handle.in_flight(), 0);
}

// throttle: "Inside the retry, so each attempt is counted and may be turned
// away."
#[tokio::test(start_paused = true)]
async fn preset_throttle_counts_each_attempt() {
    let stack = Resilience::builder()
        .retry(|retry| retry.max_attempts(3).no_budget())
        .throttle(|throttle| throttle.name("th"))
        .build()
        .unwrap();
    let handle = stack.circuit_breaker().handle();
    let (calls, inner) = counting(|_| true);
    stack.layer(inner).oneshot(()).await.unwrap_err();
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    assert_eq!((handle.requests(), handle.accepts()), (3, 0));
}

// adaptive_limit: "configured by configure from a fresh AdaptiveLimitBuilder
// holding the stack's classifier"; throttle: "from a fresh ThrottleBuilder
// holding the stack's classifier".
#[tokio::test(start_paused = true)]
async fn preset_parts_get_the_stack_classifier() {
    let busy = classify_fn(|result: &Result<u16, BoxError>| match result {
        Ok(503) | Err(_) => Outcome::Failure,
        Ok(_) => Outcome::Success,
    });
    let stack = Resilience::builder()
        .classifier(busy)
        .throttle(|throttle| throttle.name("t"))
        .adaptive_limit(|limit| limit.name("a").algorithm(aimd(10, 1)).per_sample())
        .build()
        .unwrap();
    let limit = stack.concurrency().handle();
    let throttle = stack.circuit_breaker().handle();
    let svc = stack.layer(service_fn(|_: ()| async { Ok::<u16, BoxError>(503) }));
    assert_eq!(svc.oneshot(()).await.unwrap(), 503);
    assert_eq!(limit.limit(), 9, "a 503 is a failure to the adaptive limit");
    assert_eq!(
        (throttle.requests(), throttle.accepts()),
        (1, 0),
        "and no accept to the throttle"
    );
}

// ResilienceBuilder::build: "The first part whose configuration cannot work
// ... with the slot named in the error (ConfigError::part)"; ConfigError::part:
// "... (the setters' names)"; Part::name: "What the part is called in a
// ConfigError of the preset's, if not its slot's name: "hedge" for a hedge in
// the repeat slot".
#[test]
fn preset_config_errors_name_the_part() {
    let err = Resilience::builder()
        .adaptive_limit(|limit| limit.min_samples(0))
        .build()
        .unwrap_err();
    assert_eq!(err.part(), Some("adaptive_limit"), "{err}");
    let err = Resilience::builder()
        .throttle(|throttle| throttle.k(0.5))
        .build()
        .unwrap_err();
    assert_eq!(err.part(), Some("throttle"), "{err}");
    assert_eq!(err.parameter(), "k", "{err}");
}

// ResilienceBuilder::on_event: "Registers listener on every one of palisade's
// parts in the stack, the ones set before this call and after it alike".
#[tokio::test(start_paused = true)]
async fn preset_on_event_reaches_the_new_parts() {
    let names = Arc::new(Mutex::new(Vec::<String>::new()));
    let log = names.clone();
    let stack = Resilience::builder()
        .on_event(move |event: &Event<'_>| log.lock().unwrap().push(event.name().to_string()))
        .throttle(|throttle| throttle.name("t1").seed(1))
        .adaptive_limit(|limit| limit.name("a1").algorithm(aimd(10, 1)).per_sample())
        .build()
        .unwrap();
    let svc = stack.layer(counting(|_| true).1);
    for _ in 0..200 {
        svc.clone().oneshot(()).await.unwrap_err();
    }
    let names = names.lock().unwrap();
    assert!(names.iter().any(|n| n == "a1"), "{names:?}");
    assert!(names.iter().any(|n| n == "t1"), "{names:?}");
}

// RetryBuilder::retry_on: "ConcurrencyLimited: an adaptive limit below was
// reached; retried after the backoff's delay." and "by default only Elapsed";
// RetryReason::ConcurrencyLimited: "An adaptive concurrency limit below
// refused it."; GiveUpReason::NotRetryable: "The failure was a rejection the
// layer is set not to retry."
#[tokio::test(start_paused = true)]
async fn retry_reason_concurrency_limited() {
    let limit = AdaptiveLimitLayer::builder()
        .algorithm(aimd(1, 1))
        .build()
        .unwrap();
    let svc = limit.layer(service_fn(|_: ()| async { Ok::<_, BoxError>(()) }));
    let mut holder = svc.clone();
    holder.ready().await.unwrap();

    let (events, listener) = retry_events();
    let retry = RetryLayer::builder()
        .max_attempts(3)
        .no_budget()
        .retry_on(ErrorKind::ConcurrencyLimited)
        .on_event(listener)
        .build()
        .unwrap();
    let err = retry.layer(svc.clone()).oneshot(()).await.unwrap_err();
    assert_eq!(ErrorKind::of(&err), ErrorKind::ConcurrencyLimited);
    let reasons: Vec<RetryReason> = events
        .lock()
        .unwrap()
        .iter()
        .filter_map(|(_, e)| match e {
            RetryEvent::Retry { reason, .. } => Some(*reason),
            _ => None,
        })
        .collect();
    assert_eq!(
        reasons,
        [
            RetryReason::ConcurrencyLimited,
            RetryReason::ConcurrencyLimited
        ]
    );

    let (events, listener) = retry_events();
    let default = RetryLayer::builder()
        .no_budget()
        .on_event(listener)
        .build()
        .unwrap();
    let err = default.layer(svc).oneshot(()).await.unwrap_err();
    assert_eq!(ErrorKind::of(&err), ErrorKind::ConcurrencyLimited);
    let gave_up: Vec<_> = events
        .lock()
        .unwrap()
        .iter()
        .filter_map(|(_, e)| match e {
            RetryEvent::GaveUp { attempts, reason } => Some((*attempts, *reason)),
            _ => None,
        })
        .collect();
    assert_eq!(gave_up, [(1, GiveUpReason::NotRetryable)]);
}

// RetryBuilder::retry_on: "Throttled: a throttle below rejected the call
// locally; retried after the backoff's delay."; RetryReason::Throttled: "A
// throttle below rejected it locally."
#[tokio::test(start_paused = true)]
async fn retry_reason_throttled() {
    let throttle = ThrottleLayer::builder().seed(3).build().unwrap();
    let down = throttle.layer(counting(|_| true).1);
    for _ in 0..200 {
        down.clone().oneshot(()).await.unwrap_err();
    }
    let (events, listener) = retry_events();
    let retry = RetryLayer::builder()
        .max_attempts(3)
        .no_budget()
        .retry_on(ErrorKind::Throttled)
        .on_event(listener)
        .build()
        .unwrap();
    retry.layer(down).oneshot(()).await.unwrap_err();
    let reasons: Vec<RetryReason> = events
        .lock()
        .unwrap()
        .iter()
        .filter_map(|(_, e)| match e {
            RetryEvent::Retry { reason, .. } => Some(*reason),
            _ => None,
        })
        .collect();
    assert_eq!(reasons.len(), 2, "{reasons:?}");
    assert!(reasons.contains(&RetryReason::Throttled), "{reasons:?}");
}

// RetryReason::as_str: "The reason's name, as in the palisade.retry.reason
// label"; metrics table: "palisade.retry.reason: failure timeout circuit_open
// bulkhead_full not_sent rate_limited too_many_keys concurrency_limited
// throttled"; ALL: "Every variant, in declaration order."
#[test]
fn retry_reason_names() {
    assert_eq!(
        RetryReason::ConcurrencyLimited.as_str(),
        "concurrency_limited"
    );
    assert_eq!(RetryReason::Throttled.as_str(), "throttled");
    let names: Vec<&str> = RetryReason::ALL.iter().map(|r| r.as_str()).collect();
    assert_eq!(
        names,
        [
            "failure",
            "timeout",
            "circuit_open",
            "bulkhead_full",
            "not_sent",
            "rate_limited",
            "too_many_keys",
            "concurrency_limited",
            "throttled"
        ]
    );
}

mod recorder {
    use metrics::{
        Counter, CounterFn, Gauge, GaugeFn, Histogram, Key, KeyName, Metadata, Recorder,
        SharedString, Unit,
    };
    use std::sync::{Arc, Mutex, Once};

    #[derive(Debug, Clone)]
    pub struct Entry {
        pub kind: &'static str,
        pub name: String,
        pub labels: Vec<(String, String)>,
        pub value: f64,
    }

    pub static LOG: Mutex<Vec<Entry>> = Mutex::new(Vec::new());

    struct Handle {
        name: String,
        labels: Vec<(String, String)>,
    }

    impl Handle {
        fn push(&self, kind: &'static str, value: f64) {
            LOG.lock().unwrap().push(Entry {
                kind,
                name: self.name.clone(),
                labels: self.labels.clone(),
                value,
            });
        }
        fn of(key: &Key) -> Arc<Self> {
            Arc::new(Handle {
                name: key.name().to_string(),
                labels: key
                    .labels()
                    .map(|l| (l.key().to_string(), l.value().to_string()))
                    .collect(),
            })
        }
    }

    impl CounterFn for Handle {
        fn increment(&self, value: u64) {
            self.push("counter", value as f64);
        }
        fn absolute(&self, value: u64) {
            self.push("counter_absolute", value as f64);
        }
    }

    impl GaugeFn for Handle {
        fn increment(&self, value: f64) {
            self.push("gauge_increment", value);
        }
        fn decrement(&self, value: f64) {
            self.push("gauge_decrement", value);
        }
        fn set(&self, value: f64) {
            self.push("gauge", value);
        }
    }

    struct Rec;

    impl Recorder for Rec {
        fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
            Counter::from_arc(Handle::of(key))
        }
        fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
            Gauge::from_arc(Handle::of(key))
        }
        fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> Histogram {
            Histogram::noop()
        }
    }

    pub fn install() {
        static ONCE: Once = Once::new();
        ONCE.call_once(|| metrics::set_global_recorder(Rec).unwrap());
    }

    pub fn of_layer(layer: &str) -> Vec<Entry> {
        LOG.lock()
            .unwrap()
            .iter()
            .filter(|e| {
                e.labels
                    .iter()
                    .any(|(k, v)| k == "palisade.layer.name" && v == layer)
            })
            .cloned()
            .collect()
    }
}

// Metrics table rows: "palisade.adaptive_limit.limit gauge ... the adaptive
// limit's current limit of calls in flight, set each time the algorithm moves
// it"; "palisade.adaptive_limit.rejected_calls counter ...
// palisade.adaptive_limit.rejection_reason: full queue_timeout";
// "palisade.throttle.throttled_calls counter ... calls the throttle rejected
// locally"; "Every metric has the label palisade.layer.name".
#[tokio::test(start_paused = true)]
async fn metrics_rows_for_the_adaptive_limit_and_the_throttle() {
    recorder::install();
    let layer = AdaptiveLimitLayer::builder()
        .name("metrics-adaptive")
        .algorithm(aimd(2, 1))
        .per_sample()
        .max_queue(1)
        .max_wait(ms(10))
        .on_event(MetricsEvents::new())
        .build()
        .unwrap();
    let svc = layer.layer(service_fn(gated));
    let (tx, rx) = gate();
    tx.send(true).unwrap();
    svc.clone().oneshot(rx).await.unwrap_err(); // 2 → 1
    let (ta, ra) = gate();
    let a = tokio::spawn(svc.clone().oneshot(ra));
    settle().await;
    let b = tokio::spawn(svc.clone().oneshot(dropped_gate()));
    settle().await;
    svc.clone().oneshot(dropped_gate()).await.unwrap_err(); // full
    sleep(ms(20)).await;
    b.await.unwrap().unwrap_err(); // queue_timeout
    ta.send(false).unwrap();
    a.await.unwrap().unwrap();

    let entries = recorder::of_layer("metrics-adaptive");
    let gauges: Vec<f64> = entries
        .iter()
        .filter(|e| e.name == "palisade.adaptive_limit.limit" && e.kind == "gauge")
        .map(|e| e.value)
        .collect();
    // 2 → 1 on the failure; the last call (1 in flight of 1) raises it to 2.
    assert_eq!(gauges, [1.0, 2.0], "{entries:?}");
    let reasons: Vec<String> = entries
        .iter()
        .filter(|e| e.name == "palisade.adaptive_limit.rejected_calls" && e.kind == "counter")
        .flat_map(|e| {
            e.labels
                .iter()
                .filter(|(k, _)| k == "palisade.adaptive_limit.rejection_reason")
                .map(|(_, v)| v.clone())
                .collect::<Vec<_>>()
        })
        .collect();
    assert_eq!(reasons, ["full", "queue_timeout"], "{entries:?}");

    let throttle = ThrottleLayer::builder()
        .name("metrics-throttle")
        .seed(6)
        .on_event(MetricsEvents::new())
        .build()
        .unwrap();
    let down = throttle.layer(counting(|_| true).1);
    let mut throttled = 0.0;
    for _ in 0..200 {
        throttled += f64::from(u8::from(
            down.clone()
                .oneshot(())
                .await
                .unwrap_err()
                .is::<Throttled>(),
        ));
    }
    let counted: f64 = recorder::of_layer("metrics-throttle")
        .iter()
        .filter(|e| e.name == "palisade.throttle.throttled_calls" && e.kind == "counter")
        .map(|e| e.value)
        .sum();
    assert!(throttled > 0.0);
    assert_eq!(counted, throttled);
}
