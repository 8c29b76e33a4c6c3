//! palisade against the crates a user would pick instead, per call on the
//! happy path, in one run on one machine.
//!
//! ```text
//! cargo bench -p palisade-peers
//! ```
//!
//! Every group has the bare service as its baseline; the figures to compare
//! are the overheads over it. Calls are looped inside one tokio runtime
//! (`iter_custom`), so `block_on` is not what is measured.

use std::future::Future;
use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, Criterion, criterion_group, criterion_main};
use palisade::error::BoxError;
use tower::{Layer, Service, ServiceExt, service_fn};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("a runtime")
}

mod common;
use common::{NeverRetry, bare};

fn bench_service<S>(group: &mut BenchmarkGroup<'_, WallTime>, name: &str, mut svc: S)
where
    S: Service<u64>,
    S::Error: std::fmt::Debug,
{
    let rt = runtime();
    group.bench_function(name, |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                for n in 0..iters {
                    let svc = svc.ready().await.expect("ready");
                    black_box(svc.call(black_box(n)).await.expect("ok"));
                }
                start.elapsed()
            })
        })
    });
}

/// For APIs that wrap a future rather than a service.
fn bench_future<F, Fut>(group: &mut BenchmarkGroup<'_, WallTime>, name: &str, mut call: F)
where
    F: FnMut(u64) -> Fut,
    Fut: Future,
{
    let rt = runtime();
    group.bench_function(name, |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                for n in 0..iters {
                    black_box(call(black_box(n)).await);
                }
                start.elapsed()
            })
        })
    });
}

fn circuit_breaker(c: &mut Criterion) {
    let mut group = c.benchmark_group("circuit_breaker_closed");
    bench_service(&mut group, "bare", bare());

    let palisade = palisade::circuit_breaker::CircuitBreakerLayer::builder()
        .count_window(100)
        .build()
        .unwrap();
    bench_service(&mut group, "palisade", palisade.layer(bare()));

    let tower_resilience = tower_resilience::circuitbreaker::CircuitBreakerLayer::builder()
        .sliding_window_size(100)
        .build()
        .unwrap();
    bench_service(
        &mut group,
        "tower-resilience 0.13",
        tower_resilience.layer(bare()),
    );

    let failsafe = failsafe::Config::new().build();
    let mut inner = bare();
    bench_future(&mut group, "failsafe 1.3", move |n| {
        use failsafe::futures::CircuitBreaker;
        failsafe.call(inner.call(n))
    });
    group.finish();
}

fn timeout(c: &mut Criterion) {
    let mut group = c.benchmark_group("timeout_ready_inner");
    let limit = Duration::from_secs(10);
    bench_service(&mut group, "bare", bare());
    let palisade = palisade::timeout::TimeoutLayer::new(limit).unwrap();
    bench_service(&mut group, "palisade", palisade.layer(bare()));
    bench_service(
        &mut group,
        "tower 0.5",
        tower::timeout::TimeoutLayer::new(limit).layer(bare()),
    );
    let tower_resilience = tower_resilience::timelimiter::TimeLimiterLayer::builder()
        .timeout_duration(limit)
        .build();
    bench_service(
        &mut group,
        "tower-resilience 0.13",
        tower_resilience.layer(bare()),
    );
    group.finish();
}

fn bulkhead(c: &mut Criterion) {
    let mut group = c.benchmark_group("bulkhead_free");
    bench_service(&mut group, "bare", bare());
    let palisade = palisade::bulkhead::BulkheadLayer::builder()
        .max_concurrent(100)
        .build()
        .unwrap();
    bench_service(&mut group, "palisade", palisade.layer(bare()));
    bench_service(
        &mut group,
        "tower 0.5 ConcurrencyLimit",
        tower::limit::ConcurrencyLimitLayer::new(100).layer(bare()),
    );
    let tower_resilience = tower_resilience::bulkhead::BulkheadLayer::builder()
        .max_concurrent_calls(100)
        .build()
        .unwrap();
    bench_service(
        &mut group,
        "tower-resilience 0.13",
        tower_resilience.layer(bare()),
    );
    group.finish();
}

/// Issue 17: the adaptive limit and the throttle with room, against the
/// plain bulkhead they are measured by, tower's fixed limit and
/// tower-resilience's adaptive limiter.
fn adaptive(c: &mut Criterion) {
    use palisade::adaptive::{AdaptiveLimitLayer, Aimd, ThrottleLayer, Vegas};
    let mut group = c.benchmark_group("adaptive_limit_with_room");
    bench_service(&mut group, "bare", bare());
    let bulkhead = palisade::bulkhead::BulkheadLayer::builder()
        .max_concurrent(100)
        .build()
        .unwrap();
    bench_service(&mut group, "palisade bulkhead", bulkhead.layer(bare()));
    let vegas = || Vegas::builder().initial_limit(100).build().unwrap();
    let windowed = AdaptiveLimitLayer::builder()
        .algorithm(vegas())
        .build()
        .unwrap();
    bench_service(
        &mut group,
        "palisade adaptive Vegas",
        windowed.layer(bare()),
    );
    let per_sample = AdaptiveLimitLayer::builder()
        .algorithm(vegas())
        .per_sample()
        .build()
        .unwrap();
    bench_service(
        &mut group,
        "palisade adaptive Vegas per sample",
        per_sample.layer(bare()),
    );
    let aimd = AdaptiveLimitLayer::builder()
        .algorithm(
            Aimd::builder()
                .initial_limit(100)
                .max_limit(1000)
                .build()
                .unwrap(),
        )
        .build()
        .unwrap();
    bench_service(&mut group, "palisade adaptive AIMD", aimd.layer(bare()));
    let throttle = ThrottleLayer::builder().build().unwrap();
    bench_service(&mut group, "palisade throttle", throttle.layer(bare()));
    bench_service(
        &mut group,
        "tower 0.5 ConcurrencyLimit",
        tower::limit::ConcurrencyLimitLayer::new(100).layer(bare()),
    );
    let theirs = tower_resilience::adaptive::AdaptiveLimiterLayer::new(
        tower_resilience::adaptive::Vegas::builder()
            .initial_limit(100)
            .max_limit(1000)
            .build()
            .unwrap(),
    );
    bench_service(
        &mut group,
        "tower-resilience 0.13 adaptive Vegas",
        theirs.layer(bare()),
    );
    group.finish();
}

fn retry(c: &mut Criterion) {
    let mut group = c.benchmark_group("retry_first_attempt_succeeds");
    bench_service(&mut group, "bare", bare());
    let palisade = palisade::retry::RetryLayer::builder().build().unwrap();
    bench_service(&mut group, "palisade", palisade.layer(bare()));
    let unbudgeted = palisade::retry::RetryLayer::builder()
        .no_budget()
        .build()
        .unwrap();
    bench_service(&mut group, "palisade, no budget", unbudgeted.layer(bare()));
    bench_service(
        &mut group,
        "tower 0.5 (never-retrying policy)",
        tower::retry::RetryLayer::new(NeverRetry).layer(bare()),
    );
    let tower_resilience = tower_resilience::retry::RetryLayer::<u64, u64, BoxError>::builder()
        .max_attempts(3)
        .exponential_backoff(Duration::from_millis(100))
        .build();
    bench_service(
        &mut group,
        "tower-resilience 0.13",
        tower_resilience.layer(bare()),
    );
    group.finish();
}

fn full_stack(c: &mut Criterion) {
    let mut group = c.benchmark_group("full_stack");
    bench_service(&mut group, "bare", bare());
    bench_service(
        &mut group,
        "tower 0.5 timeout alone",
        tower::timeout::TimeoutLayer::new(Duration::from_secs(10)).layer(bare()),
    );

    bench_service(
        &mut group,
        "palisade preset, all six parts",
        common::preset(100),
    );
    bench_service(
        &mut group,
        "tower-resilience 0.13, same five patterns",
        common::tower_resilience_stack(),
    );
    group.finish();
}

/// A limiter that always has room (a rate of one call per nanosecond, a
/// burst of a second's worth): the cost of the decision, not of a refusal.
fn rate_limit(c: &mut Criterion) {
    use std::num::NonZeroU32;

    let mut group = c.benchmark_group("rate_limit_with_room");
    bench_service(&mut group, "bare", bare());
    let palisade = palisade::rate_limit::RateLimitLayer::builder()
        .rate(1_000_000_000, Duration::from_secs(1))
        .build()
        .unwrap();
    bench_service(&mut group, "palisade", palisade.layer(bare()));
    // Tower's limiter is per service (each clone has its own window), so
    // it is driven as one service, never cloned; it makes its timer when it
    // is made, which needs a runtime.
    let rt = runtime();
    let tower = {
        let _entered = rt.enter();
        tower::limit::RateLimitLayer::new(u64::MAX, Duration::from_secs(1)).layer(bare())
    };
    bench_service(&mut group, "tower 0.5 RateLimit", tower);
    let governor = governor::RateLimiter::direct(governor::Quota::per_second(
        NonZeroU32::new(1_000_000_000).unwrap(),
    ));
    let mut inner = bare();
    bench_future(
        &mut group,
        "governor 0.10 check(), then the call",
        move |n| {
            governor.check().expect("room");
            inner.call(n)
        },
    );
    group.finish();
}

/// Spreads call `n` over `keys` keys, evenly and in no order a cache
/// could follow (a multiplicative hash of `n`).
#[inline]
fn key_of(n: u64, keys: u64) -> u64 {
    (n.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32) % keys
}

/// 2^16 keys drawn from `0..keys` with Zipf's law of exponent 1 (key `r`
/// about as often as `1 / (r + 1)`: a log-uniform draw), as traffic over
/// hosts or tenants tends to be: a few hot keys, a long tail.
fn zipf_keys(keys: u64) -> Vec<u64> {
    let ln = (keys as f64).ln();
    (0..1u64 << 16)
        .map(|n| {
            // A fixed, evenly spread u in [0, 1), from n.
            let u = (n.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 11) as f64 / (1u64 << 53) as f64;
            ((u * ln).exp() as u64).saturating_sub(1).min(keys - 1)
        })
        .collect()
}

/// A rate limiter per key, every key with room, at 10^2, 10^4 and 10^6
/// live keys: palisade's keyed layer (its registry's lookup, then the
/// key's limiter) against governor's keyed limiter (`check_key` on its
/// DashMap store), with palisade's single limiter and the bare service as
/// baselines. Each call's key is drawn evenly from all of them (the worst
/// case for the caches), or by Zipf's law (a few hot keys).
fn keyed(c: &mut Criterion) {
    use std::num::NonZeroU32;
    use std::sync::Arc;

    let mut group = c.benchmark_group("keyed_rate_limit");
    bench_service(&mut group, "bare", bare());
    let limiter = || {
        palisade::rate_limit::RateLimitLayer::builder()
            .rate(1_000_000_000, Duration::from_secs(1))
            .build()
            .unwrap()
    };
    bench_service(&mut group, "palisade, one limiter", limiter().layer(bare()));
    for keys in [100u64, 10_000, 1_000_000] {
        let zipf: Arc<[u64]> = zipf_keys(keys).into();
        let layer = palisade::keyed::KeyedLayer::builder(limiter())
            .key(move |n: &u64| key_of(*n, keys))
            .max_keys(keys as usize)
            .build()
            .unwrap();
        for key in 0..keys {
            layer.instance(&key).unwrap();
        }
        assert_eq!(layer.handle().len(), keys as usize);
        bench_service(
            &mut group,
            &format!("palisade keyed, {keys} keys, even"),
            layer.layer(bare()),
        );
        drop(layer);
        let by_zipf = zipf.clone();
        let layer = palisade::keyed::KeyedLayer::builder(limiter())
            .key(move |n: &u64| by_zipf[(*n & 0xFFFF) as usize])
            .max_keys(keys as usize)
            .build()
            .unwrap();
        for key in 0..keys {
            layer.instance(&key).unwrap();
        }
        bench_service(
            &mut group,
            &format!("palisade keyed, {keys} keys, zipf"),
            layer.layer(bare()),
        );
        drop(layer);
        let governor = Arc::new(governor::RateLimiter::keyed(governor::Quota::per_second(
            NonZeroU32::new(1_000_000_000).unwrap(),
        )));
        for key in 0..keys {
            governor.check_key(&key).expect("room");
        }
        let (even, mut inner) = (governor.clone(), bare());
        bench_future(
            &mut group,
            &format!("governor 0.10 keyed check_key(), then the call, {keys} keys, even"),
            move |n| {
                even.check_key(&key_of(n, keys)).expect("room");
                inner.call(n)
            },
        );
        let (by_zipf, mut inner) = (zipf.clone(), bare());
        bench_future(
            &mut group,
            &format!("governor 0.10 keyed check_key(), then the call, {keys} keys, zipf"),
            move |n| {
                governor
                    .check_key(&by_zipf[(n & 0xFFFF) as usize])
                    .expect("room");
                inner.call(n)
            },
        );
    }
    group.finish();
}

/// tower's hedge policy that hedges every request.
#[derive(Clone)]
struct HedgeAll;

impl tower::hedge::Policy<u64> for HedgeAll {
    fn clone_request(&self, req: &u64) -> Option<u64> {
        Some(*req)
    }

    fn can_retry(&self, _: &u64) -> bool {
        true
    }
}

/// The bare service with an error type that is `Clone`, as
/// tower-resilience's hedge needs (the error type costs nothing here).
type ReadyInfallible = std::future::Ready<Result<u64, std::convert::Infallible>>;

fn bare_infallible() -> tower::util::ServiceFn<fn(u64) -> ReadyInfallible> {
    service_fn((|n| std::future::ready(Ok(n))) as fn(u64) -> ReadyInfallible)
}

/// Issue 16: a call whose first attempt answers before the delay.
fn hedge(c: &mut Criterion) {
    use palisade::hedge::HedgeLayer;
    let mut group = c.benchmark_group("hedge_first_attempt_answers");
    bench_service(&mut group, "bare", bare());
    let fixed = HedgeLayer::builder()
        .delay(Duration::from_millis(100))
        .build()
        .unwrap();
    bench_service(&mut group, "palisade (fixed delay)", fixed.layer(bare()));
    let unbudgeted = HedgeLayer::builder()
        .delay(Duration::from_millis(100))
        .no_budget()
        .build()
        .unwrap();
    bench_service(&mut group, "palisade, no budget", unbudgeted.layer(bare()));
    let percentile = HedgeLayer::builder()
        .delay_percentile(95.0, 10, Duration::from_secs(10))
        .build()
        .unwrap();
    bench_service(&mut group, "palisade (p95 delay)", percentile.layer(bare()));
    bench_service(
        &mut group,
        "tower 0.5 Hedge (p95)",
        tower::hedge::Hedge::new::<u64>(bare(), HedgeAll, 10, 0.95, Duration::from_secs(10)),
    );
    let tower_resilience = tower_resilience::hedge::HedgeLayer::builder()
        .delay(Duration::from_millis(100))
        .max_hedged_attempts(1)
        .build();
    bench_service(
        &mut group,
        "tower-resilience 0.13",
        tower_resilience.layer(bare_infallible()),
    );
    group.finish();
}

/// The same five parts from the preset (typed, fixed at compile time) and
/// from a configuration document (chosen at run time, reloadable): what
/// the document's slots and the reload check cost a call.
fn config_stack(c: &mut Criterion) {
    let mut group = c.benchmark_group("config_stack");
    bench_service(&mut group, "bare", bare());
    bench_service(&mut group, "preset, five parts", common::preset_five(100));
    bench_service(
        &mut group,
        "config, the same five parts",
        common::config_five(100),
    );
    group.finish();
}

/// What the hot path is made of, on this machine: a clock read, one
/// uncontended atomic read-modify-write, an `Arc` clone and its drop. The
/// layers' figures are mostly counts of these.
fn floor(c: &mut Criterion) {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

    let mut group = c.benchmark_group("floor");
    group.bench_function("tokio Instant::now", |b| {
        b.iter(|| black_box(tokio::time::Instant::now()))
    });
    let counter = AtomicU64::new(0);
    group.bench_function("atomic fetch_add", |b| {
        b.iter(|| black_box(&counter).fetch_add(1, Relaxed))
    });
    let shared = Arc::new(0u64);
    group.bench_function("Arc clone and drop", |b| {
        b.iter(|| drop(black_box(Arc::clone(&shared))))
    });
    group.finish();
}

criterion_group! {
    name = peers;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = floor, circuit_breaker, timeout, bulkhead, adaptive, rate_limit, keyed, retry, hedge, full_stack, config_stack
}
criterion_main!(peers);
