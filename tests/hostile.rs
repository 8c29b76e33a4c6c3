//! Hostile configuration and a panicking inner service: builders answer
//! every number with a layer or an `Err`, never a panic; a layer built from
//! extreme numbers never overflows at call time; a panic in the inner
//! service propagates and loses no permit, probe or queue place.

use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::pin;
use std::task::{Context, Poll};
use std::time::Duration;

use palisade::backoff::Backoff;
use palisade::bulkhead::BulkheadLayer;
use palisade::circuit_breaker::{CircuitBreakerLayer, CircuitState};
use palisade::error::BoxError;
use palisade::retry::{RetryBudget, RetryLayer};
use palisade::timeout::TimeoutLayer;
use proptest::prelude::*;
use tower::{Layer, Service, ServiceExt, service_fn};

fn durations() -> impl Strategy<Value = Duration> {
    prop_oneof![
        Just(Duration::ZERO),
        Just(Duration::from_nanos(1)),
        Just(Duration::MAX),
        Just(Duration::from_nanos(u64::MAX)),
        Just(Duration::from_secs(u64::MAX)),
        (0u64..u64::MAX).prop_map(Duration::from_nanos),
        (0u64..u64::MAX).prop_map(Duration::from_secs),
        (0u64..10_000).prop_map(Duration::from_millis),
    ]
}

fn floats() -> impl Strategy<Value = f64> {
    prop_oneof![
        Just(f64::NAN),
        Just(f64::INFINITY),
        Just(f64::NEG_INFINITY),
        Just(0.0),
        Just(-0.0),
        Just(1.0),
        Just(f64::MIN_POSITIVE),
        any::<f64>(),
        0.0..=1.0,
    ]
}

fn numbers() -> impl Strategy<Value = u32> {
    prop_oneof![Just(0), Just(1), Just(u32::MAX), any::<u32>(), 0u32..100]
}

/// One call through `svc`, answered after `wait` of paused time; must not
/// panic. Returns whether it succeeded.
fn one_call<S>(svc: S, wait: Duration) -> bool
where
    S: Service<Duration, Response = ()>,
    S::Error: std::fmt::Debug,
{
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    rt.block_on(async move { svc.oneshot(wait).await.is_ok() })
}

fn sleeper() -> impl Service<Duration, Response = (), Error = BoxError> + Clone {
    service_fn(|wait: Duration| async move {
        tokio::time::sleep(wait).await;
        Ok::<_, BoxError>(())
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn breaker_builder_never_panics(
        window in numbers(), minimum in numbers(), half_open in numbers(),
        consecutive in numbers(), failure in floats(), slow in floats(),
        wait in durations(), slow_after in durations(), time_window in durations(),
        buckets in numbers(), by_time in any::<bool>(), call_wait in 0u64..5000,
    ) {
        let mut b = CircuitBreakerLayer::builder()
            .minimum_calls(minimum)
            .half_open_calls(half_open)
            .consecutive_failures(consecutive)
            .failure_rate_threshold(failure)
            .slow_call_rate_threshold(slow)
            .slow_call_duration(slow_after)
            .wait_duration(wait);
        b = if by_time { b.time_window_buckets(time_window, buckets) } else { b.count_window(window) };
        if let Ok(layer) = b.build() {
            one_call(layer.layer(sleeper()), Duration::from_millis(call_wait));
            layer.handle().force_open();
            prop_assert!(!one_call(layer.layer(sleeper()), Duration::ZERO));
        }
    }

    #[test]
    fn retry_builder_never_panics(
        attempts in numbers(), hint in durations(), deadline in durations(),
        initial in durations(), max in durations(), factor in floats(),
        ttl in durations(), min_per_sec in numbers(), percent in floats(),
    ) {
        let Ok(backoff) = Backoff::exponential(initial).max_delay(max).factor(factor).build() else {
            return Ok(());
        };
        let mut b = RetryLayer::builder()
            .max_attempts(attempts)
            .max_hint(hint)
            .deadline(deadline)
            .backoff(backoff);
        if let Ok(budget) = RetryBudget::new(ttl, min_per_sec, percent) {
            b = b.budget(budget);
        }
        if let Ok(layer) = b.build() {
            // Every attempt fails, so every retry decision is taken, with
            // the extreme delays and deadline.
            let failing = service_fn(|_: Duration| async { Err::<(), BoxError>("down".into()) });
            prop_assert!(!one_call(layer.layer(failing), Duration::ZERO));
        }
    }

    #[test]
    fn hedge_builder_never_panics(
        attempts in numbers(), delay in durations(), hint in durations(),
        percent in floats(), min_samples in prop_oneof![Just(0u64), Just(1), Just(u64::MAX), any::<u64>()],
        window in durations(), per_attempt in durations(), mode in 0u8..3, use_percentile in any::<bool>(),
        use_fn in any::<bool>(), first_wait in 0u64..5000,
    ) {
        use palisade::hedge::{HedgeLayer, HedgeMode};
        let mut b = HedgeLayer::builder()
            .max_attempts(attempts)
            .delay(delay)
            .max_hint(hint)
            .mode([HedgeMode::Latency, HedgeMode::Parallel, HedgeMode::Fallback][mode as usize]);
        if use_percentile {
            b = b.delay_percentile(percent * 100.0, min_samples, window);
        }
        if use_fn {
            b = b.delay_fn(move |_| per_attempt);
        }
        if let Ok(layer) = b.build() {
            // A slow call (hedged if its delay comes), and a failing one
            // (each failure starts the next attempt).
            one_call(layer.layer(sleeper()), Duration::from_millis(first_wait));
            let failing = service_fn(|_: Duration| async { Err::<(), BoxError>("down".into()) });
            prop_assert!(!one_call(layer.layer(failing), Duration::ZERO));
        }
    }

    #[test]
    fn rate_limit_builder_never_panics(
        count in numbers(), per in durations(), burst in numbers(), max_wait in durations(),
        calls in 1u32..5, call_wait in 0u64..5000,
    ) {
        use palisade::rate_limit::RateLimitLayer;
        let b = RateLimitLayer::builder().rate(count, per).burst(burst).max_wait(max_wait);
        if let Ok(layer) = b.build() {
            for _ in 0..calls {
                one_call(layer.layer(sleeper()), Duration::from_millis(call_wait));
            }
        }
    }

    #[test]
    fn adaptive_algorithms_never_panic_and_stay_within_their_bounds(
        initial in numbers(), min in numbers(), max in numbers(), ratio in floats(),
        smoothing in floats(), tolerance in floats(), window in numbers(), queue in numbers(),
        timeout in durations(), multiplier in numbers(),
        samples in proptest::collection::vec((durations(), numbers(), any::<bool>()), 1..60),
    ) {
        use palisade::adaptive::{Aimd, Gradient2, LimitAlgorithm, Sample, Vegas};
        let mut algorithms: Vec<(Box<dyn LimitAlgorithm>, u32, u32)> = Vec::new();
        if let Ok(a) = Aimd::builder().initial_limit(initial).min_limit(min).max_limit(max)
            .backoff_ratio(ratio).timeout(timeout).build() {
            algorithms.push((Box::new(a), min, max));
        }
        if let Ok(v) = Vegas::builder().initial_limit(initial).min_limit(min).max_limit(max)
            .smoothing(smoothing).probe_multiplier(multiplier).seed(1).build() {
            algorithms.push((Box::new(v), min, max));
        }
        if let Ok(g) = Gradient2::builder().initial_limit(initial).min_limit(min).max_limit(max)
            .smoothing(smoothing).rtt_tolerance(tolerance).long_window(window).queue_size(queue).build() {
            algorithms.push((Box::new(g), min, max));
        }
        for (mut algorithm, min, max) in algorithms {
            prop_assert!((min..=max).contains(&algorithm.initial_limit()));
            for (rtt, in_flight, dropped) in &samples {
                let limit = algorithm.update(&Sample::new(*rtt, *in_flight, *dropped));
                prop_assert!((min..=max).contains(&limit), "{} not in {}..={}", limit, min, max);
            }
        }
    }

    #[test]
    fn adaptive_limit_and_throttle_builders_never_panic(
        queue in numbers(), max_wait in durations(), min_window in durations(),
        max_window in durations(), min_samples in numbers(), k in floats(),
        window in durations(), min_answered in numbers(), call_wait in 0u64..5000,
    ) {
        use palisade::adaptive::{AdaptiveLimitLayer, ThrottleLayer};
        let limit = AdaptiveLimitLayer::builder().max_queue(queue).max_wait(max_wait)
            .window(min_window, max_window).min_samples(min_samples).build();
        if let Ok(layer) = limit {
            for _ in 0..3 {
                one_call(layer.layer(sleeper()), Duration::from_millis(call_wait));
            }
            prop_assert_eq!(layer.handle().in_flight(), 0);
        }
        let throttle = ThrottleLayer::builder().k(k).window(window).min_answered(min_answered).build();
        if let Ok(layer) = throttle {
            for _ in 0..3 {
                one_call(layer.layer(sleeper()), Duration::from_millis(call_wait));
            }
            prop_assert_eq!(layer.handle().in_flight(), 0);
        }
    }

    #[test]
    fn timeout_and_bulkhead_builders_never_panic(
        timeout in durations(), permits in numbers(), queue in numbers(),
        max_wait in durations(), call_wait in durations(),
    ) {
        if let Ok(layer) = TimeoutLayer::new(timeout) {
            one_call(layer.layer(sleeper()), call_wait.min(Duration::from_secs(3600)));
        }
        if let Ok(layer) = BulkheadLayer::builder().max_concurrent(permits).max_queue(queue).max_wait(max_wait).build() {
            one_call(layer.layer(sleeper()), Duration::from_millis(1));
            prop_assert_eq!(layer.handle().in_flight(), 0);
        }
    }
}

/// Polls `f` once; returns whether it panicked.
fn panics_when_polled<F: Future>(f: F) -> bool {
    let mut cx = Context::from_waker(std::task::Waker::noop());
    let mut f = pin!(f);
    catch_unwind(AssertUnwindSafe(|| {
        let _ = f.as_mut().poll(&mut cx);
    }))
    .is_err()
}

/// A service that panics in `call` or in its future.
#[derive(Clone, Copy)]
struct Panicky {
    in_call: bool,
}

impl Service<()> for Panicky {
    type Response = ();
    type Error = BoxError;
    type Future = std::pin::Pin<Box<dyn Future<Output = Result<(), BoxError>> + Send>>;
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }
    fn call(&mut self, _: ()) -> Self::Future {
        if self.in_call {
            panic!("inner call panicked");
        }
        Box::pin(async { panic!("inner future panicked") })
    }
}

#[test]
fn a_panicking_service_loses_no_permit_or_probe() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    let _guard = rt.enter();
    for in_call in [true, false] {
        let bulkhead = BulkheadLayer::builder().max_concurrent(1).build().unwrap();
        let breaker = CircuitBreakerLayer::builder()
            .count_window(1)
            .minimum_calls(1)
            .half_open_calls(1)
            .wait_duration(Duration::from_secs(1))
            .build()
            .unwrap();
        let handle = breaker.handle();
        // Open the breaker, let its wait pass: the next call is its only probe.
        let failing = service_fn(|_: ()| async { Err::<(), BoxError>("down".into()) });
        rt.block_on(breaker.layer(failing).oneshot(())).unwrap_err();
        assert_eq!(handle.state(), CircuitState::Open);
        rt.block_on(tokio::time::advance(Duration::from_secs(1)));

        let mut svc = breaker.layer(bulkhead.layer(Panicky { in_call }));
        let panicked = {
            let mut cx = Context::from_waker(std::task::Waker::noop());
            assert!(svc.poll_ready(&mut cx).is_ready());
            catch_unwind(AssertUnwindSafe(|| svc.call(()))).map_or(true, panics_when_polled)
        };
        assert!(panicked, "the panic propagates (in_call: {in_call})");
        assert_eq!(
            bulkhead.handle().in_flight(),
            0,
            "the bulkhead permit came back"
        );
        assert_eq!(
            handle.metrics().probes_in_flight,
            0,
            "the probe permit came back"
        );
        // The probe slot is free again: a healthy call closes the breaker.
        let ok = service_fn(|_: ()| async { Ok::<_, BoxError>(()) });
        rt.block_on(breaker.layer(bulkhead.layer(ok)).oneshot(()))
            .unwrap();
        assert_eq!(handle.state(), CircuitState::Closed);
    }
}
