//! The happy path in instructions, for valgrind: a noise-free second
//! figure beside the timings (see `scripts/instructions.sh`).
//!
//! ```text
//! instructions <stack> <calls>
//! ```
//!
//! drives `<calls>` calls through one stack (`bare`, `breaker`, `bulkhead`,
//! `adaptive-vegas`, `adaptive-vegas-per-sample`, `throttle`,
//! `tower-concurrency-limit`, `tower-resilience-adaptive`, `rate-limit`, `retry`, `retry-no-budget`, `timeout`, `preset`, `fallback`,
//! `preset-five`, `config-five`, `tower-retry`, `tower-timeout`, `tower-rate-limit`, `governor`,
//! `keyed-rate-limit`, `governor-keyed`, `hedge`, `hedge-p95`,
//! `tower-hedge`, `tower-resilience-stack`, `tower-resilience-breaker`,
//! `tower-resilience-bulkhead`, `tower-resilience-timeout`,
//! `tower-resilience-retry`, `failsafe-breaker`; `instructions list` prints
//! them) in a current-thread runtime and exits
//! (`instructions list` prints the names). The script runs
//! it with 0 and with N calls under valgrind; the difference over N is the
//! cost of one call. Run without arguments (as `cargo bench` does), it
//! drives each stack briefly and exits, so that it stays buildable and
//! runnable. With `PALISADE_SIZES` set, it also prints the sizes of the
//! stack's service and of one call's future (the retry's future, for
//! example, is what the preset's nested futures move).

use std::hint::black_box;
use std::time::Duration;

use palisade::error::BoxError;
use tower::{Layer, Service, ServiceExt, service_fn};

mod common;
use common::{NeverRetry, bare};

// Each stack's loop compiled as a function of its own, not into `run`'s match.
#[inline(never)]
fn drive<S>(mut svc: S, calls: u64)
where
    S: Service<u64>,
    S::Error: std::fmt::Debug,
{
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("a runtime");
    if std::env::var_os("PALISADE_SIZES").is_some() {
        sizes(&rt, &mut svc);
    }
    rt.block_on(async {
        for n in 0..calls {
            let svc = svc.ready().await.expect("ready");
            black_box(svc.call(black_box(n)).await.expect("ok"));
        }
    });
}

/// Prints the sizes of the service and of one call's future (made after
/// the service is ready, as a breaker needs). Kept out of `drive`, whose
/// loop is what is counted: code beside it changes how it is compiled.
#[inline(never)]
fn sizes<S>(rt: &tokio::runtime::Runtime, svc: &mut S)
where
    S: Service<u64>,
    S::Error: std::fmt::Debug,
{
    rt.block_on(async {
        let svc = svc.ready().await.expect("ready");
        let fut = svc.call(0);
        eprintln!(
            "service {} future {}",
            std::mem::size_of_val(svc),
            std::mem::size_of_val(&fut)
        );
    });
}

fn run(stack: &str, calls: u64) {
    use palisade::bulkhead::BulkheadLayer;
    use palisade::circuit_breaker::CircuitBreakerLayer;
    use palisade::fallback::{Failed, FallbackLayer, from_sync_fn};
    use palisade::retry::RetryLayer;
    use palisade::timeout::TimeoutLayer;

    match stack {
        "bare" => drive(bare(), calls),
        "breaker" => drive(
            CircuitBreakerLayer::builder()
                .build()
                .unwrap()
                .layer(bare()),
            calls,
        ),
        "bulkhead" => drive(
            BulkheadLayer::builder()
                .max_concurrent(100)
                .build()
                .unwrap()
                .layer(bare()),
            calls,
        ),
        "adaptive-vegas" => drive(
            palisade::adaptive::AdaptiveLimitLayer::builder()
                .algorithm(
                    palisade::adaptive::Vegas::builder()
                        .initial_limit(100)
                        .build()
                        .unwrap(),
                )
                .build()
                .unwrap()
                .layer(bare()),
            calls,
        ),
        "adaptive-vegas-per-sample" => drive(
            palisade::adaptive::AdaptiveLimitLayer::builder()
                .algorithm(
                    palisade::adaptive::Vegas::builder()
                        .initial_limit(100)
                        .build()
                        .unwrap(),
                )
                .per_sample()
                .build()
                .unwrap()
                .layer(bare()),
            calls,
        ),
        "throttle" => drive(
            palisade::adaptive::ThrottleLayer::builder()
                .build()
                .unwrap()
                .layer(bare()),
            calls,
        ),
        "tower-concurrency-limit" => drive(
            tower::limit::ConcurrencyLimitLayer::new(100).layer(bare()),
            calls,
        ),
        "tower-resilience-adaptive" => drive(
            tower_resilience::adaptive::AdaptiveLimiterLayer::new(
                tower_resilience::adaptive::Vegas::builder()
                    .initial_limit(100)
                    .max_limit(1000)
                    .build()
                    .unwrap(),
            )
            .layer(bare()),
            calls,
        ),
        "rate-limit" => drive(
            palisade::rate_limit::RateLimitLayer::builder()
                .rate(1_000_000_000, Duration::from_secs(1))
                .build()
                .unwrap()
                .layer(bare()),
            calls,
        ),
        "retry" => drive(RetryLayer::builder().build().unwrap().layer(bare()), calls),
        "retry-no-budget" => drive(
            RetryLayer::builder()
                .no_budget()
                .build()
                .unwrap()
                .layer(bare()),
            calls,
        ),
        "timeout" => drive(
            TimeoutLayer::new(Duration::from_secs(10))
                .unwrap()
                .layer(bare()),
            calls,
        ),
        "preset" => drive(common::preset(100), calls),
        "preset-five" => drive(common::preset_five(100), calls),
        "config-five" => drive(common::config_five(100), calls),
        "tower-resilience-stack" => drive(common::tower_resilience_stack(), calls),
        "tower-resilience-breaker" => drive(
            tower_resilience::circuitbreaker::CircuitBreakerLayer::builder()
                .sliding_window_size(100)
                .build()
                .unwrap()
                .layer(bare()),
            calls,
        ),
        "tower-resilience-bulkhead" => drive(
            tower_resilience::bulkhead::BulkheadLayer::builder()
                .max_concurrent_calls(100)
                .build()
                .unwrap()
                .layer(bare()),
            calls,
        ),
        "tower-resilience-timeout" => drive(
            tower_resilience::timelimiter::TimeLimiterLayer::builder()
                .timeout_duration(Duration::from_secs(10))
                .build()
                .layer(bare()),
            calls,
        ),
        "tower-resilience-retry" => drive(
            tower_resilience::retry::RetryLayer::<u64, u64, BoxError>::builder()
                .max_attempts(3)
                .exponential_backoff(Duration::from_millis(100))
                .build()
                .layer(bare()),
            calls,
        ),
        // failsafe wraps a future, not a service: its breaker around the
        // bare call, as in the timings.
        "failsafe-breaker" => {
            use failsafe::futures::CircuitBreaker;
            let breaker = failsafe::Config::new().build();
            let mut inner = bare();
            drive(service_fn(move |n: u64| breaker.call(inner.call(n))), calls)
        }
        "fallback" => drive(
            FallbackLayer::builder(from_sync_fn(|_: Failed<u64, u64>| Ok(0)))
                .build()
                .unwrap()
                .layer(bare()),
            calls,
        ),
        "tower-retry" => drive(
            tower::retry::RetryLayer::new(NeverRetry).layer(bare()),
            calls,
        ),
        "tower-rate-limit" => {
            // Tower's limiter makes its timer when it is made: it needs a
            // runtime then (its timer is never polled, as it never limits).
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .build()
                .expect("a runtime");
            let _entered = rt.enter();
            drive(
                tower::limit::RateLimitLayer::new(u64::MAX, Duration::from_secs(1)).layer(bare()),
                calls,
            )
        }
        // governor's direct limiter checked before the bare call: the same
        // work as palisade's limiter, without a service around it.
        "governor" => {
            let limiter = governor::RateLimiter::direct(governor::Quota::per_second(
                std::num::NonZeroU32::new(1_000_000_000).unwrap(),
            ));
            drive(
                service_fn(move |n: u64| {
                    limiter.check().expect("room");
                    std::future::ready(Ok::<_, BoxError>(n))
                }),
                calls,
            )
        }
        // A rate limiter per key, 100 keys with room, each call's key
        // drawn evenly; against governor's keyed limiter.
        "keyed-rate-limit" => {
            let layer = palisade::keyed::KeyedLayer::builder(
                palisade::rate_limit::RateLimitLayer::builder()
                    .rate(1_000_000_000, Duration::from_secs(1))
                    .build()
                    .unwrap(),
            )
            .key(|n: &u64| key_of(*n))
            .max_keys(100)
            .build()
            .unwrap();
            for key in 0..100 {
                layer.instance(&key).unwrap();
            }
            drive(layer.layer(bare()), calls)
        }
        "governor-keyed" => {
            let limiter = governor::RateLimiter::keyed(governor::Quota::per_second(
                std::num::NonZeroU32::new(1_000_000_000).unwrap(),
            ));
            for key in 0..100u64 {
                limiter.check_key(&key).expect("room");
            }
            drive(
                service_fn(move |n: u64| {
                    limiter.check_key(&key_of(n)).expect("room");
                    std::future::ready(Ok::<_, BoxError>(n))
                }),
                calls,
            )
        }
        "tower-timeout" => drive(
            tower::timeout::TimeoutLayer::new(Duration::from_secs(10)).layer(bare()),
            calls,
        ),
        "hedge" => drive(
            palisade::hedge::HedgeLayer::builder()
                .delay(Duration::from_millis(100))
                .build()
                .unwrap()
                .layer(bare()),
            calls,
        ),
        "hedge-p95" => drive(
            palisade::hedge::HedgeLayer::builder()
                .delay_percentile(95.0, 10, Duration::from_secs(10))
                .build()
                .unwrap()
                .layer(bare()),
            calls,
        ),
        "tower-hedge" => drive(
            tower::hedge::Hedge::new::<u64>(bare(), HedgeAll, 10, 0.95, Duration::from_secs(10)),
            calls,
        ),
        other => panic!("no stack named {other}"),
    }
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

/// Spreads call `n` over 100 keys (a multiplicative hash of `n`).
#[inline]
fn key_of(n: u64) -> u64 {
    (n.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32) % 100
}

const STACKS: &[&str] = &[
    "bare",
    "breaker",
    "bulkhead",
    "adaptive-vegas",
    "adaptive-vegas-per-sample",
    "throttle",
    "tower-concurrency-limit",
    "tower-resilience-adaptive",
    "rate-limit",
    "retry",
    "retry-no-budget",
    "timeout",
    "preset",
    "preset-five",
    "config-five",
    "fallback",
    "tower-retry",
    "tower-timeout",
    "tower-rate-limit",
    "governor",
    "keyed-rate-limit",
    "governor-keyed",
    "hedge",
    "hedge-p95",
    "tower-hedge",
    "tower-resilience-stack",
    "tower-resilience-breaker",
    "tower-resilience-bulkhead",
    "tower-resilience-timeout",
    "tower-resilience-retry",
    "failsafe-breaker",
];

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    match args.as_slice() {
        [list] if list == "list" => STACKS.iter().for_each(|stack| println!("{stack}")),
        [stack, calls] => run(stack, calls.parse().expect("a number of calls")),
        _ => {
            for stack in STACKS {
                run(stack, 1000);
            }
        }
    }
}
