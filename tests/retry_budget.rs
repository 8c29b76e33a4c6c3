//! The retry budget through its public API, on paused time: hostile
//! configurations never overflow, and the budget allows what its formula
//! says.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::time::Duration;

use palisade::backoff::Backoff;
use palisade::error::BoxError;
use palisade::retry::{RetryBudget, RetryLayer};
use proptest::prelude::*;
use tower::{Layer, ServiceExt, service_fn};

const SEC: Duration = Duration::from_secs(1);

/// Runs `f` on a current-thread runtime whose clock is paused.
fn paused<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap()
        .block_on(f)
}

/// Issue 7: a tiny `percent` made the per-retry cost so large that the
/// reserve overflowed ("attempt to add with overflow"; in release it wrapped
/// and allowed no retry at all).
#[tokio::test(start_paused = true)]
async fn a_tiny_percent_leaves_the_reserve_and_never_overflows() {
    let budget = RetryBudget::new(10 * SEC, 1, 1e-15).unwrap();
    budget.deposit();
    assert_eq!(budget.remaining(), 10, "1 a second over 10 s");
    assert_eq!((0..20).take_while(|_| budget.try_withdraw()).count(), 10);
    assert_eq!(budget.remaining(), 0);
}

/// The extremes of every accepted parameter, together.
#[tokio::test(start_paused = true)]
async fn the_extremes_of_every_parameter_never_overflow() {
    let hour = Duration::from_secs(3600);
    for (ttl, min_per_sec, percent) in [
        (hour, u32::MAX, f64::MIN_POSITIVE),
        (hour, u32::MAX, 5e-324),
        (hour, u32::MAX, 1.0),
        (SEC, u32::MAX, 1e-300),
        (hour, 0, f64::MIN_POSITIVE),
        (SEC, 1, 1.0),
    ] {
        let budget = RetryBudget::new(ttl, min_per_sec, percent).unwrap();
        for _ in 0..1000 {
            budget.deposit();
        }
        let reserve = u64::from(min_per_sec) * ttl.as_secs();
        let share = (percent * 1000.0) as u64;
        assert_eq!(budget.remaining(), reserve + share, "{budget:?}");
        assert!(budget.try_withdraw() == (reserve + share > 0));
        tokio::time::advance(ttl * 2).await;
        assert_eq!(budget.remaining(), reserve, "{budget:?}");
    }
}

/// Issue 7, through a layer: `percent = f64::MIN_POSITIVE` panicked on the
/// first retry decision.
#[tokio::test(start_paused = true)]
async fn a_layer_with_the_smallest_percent_retries_from_its_reserve() {
    let calls = Arc::new(AtomicUsize::new(0));
    let seen = calls.clone();
    let flaky = service_fn(move |()| {
        let n = seen.fetch_add(1, SeqCst);
        async move {
            if n == 0 {
                Err::<u32, BoxError>("down".into())
            } else {
                Ok(7)
            }
        }
    });
    let layer = RetryLayer::builder()
        .max_attempts(2)
        .backoff(Backoff::constant(Duration::ZERO).build().unwrap())
        .budget(RetryBudget::new(10 * SEC, 1, f64::MIN_POSITIVE).unwrap())
        .build()
        .unwrap();
    assert_eq!(layer.layer(flaky).oneshot(()).await.unwrap(), 7);
    assert_eq!(calls.load(SeqCst), 2, "the reserve paid for the retry");
}

#[derive(Debug, Clone)]
enum Op {
    Deposit(u32),
    Withdraw(u32),
    Remaining,
    Idle(Duration),
}

fn ttls() -> impl Strategy<Value = Duration> {
    prop_oneof![
        Just(SEC),
        Just(Duration::from_secs(3600)),
        (1000u64..5000).prop_map(Duration::from_millis),
        (1_000_000_000u64..=3_600_000_000_000).prop_map(Duration::from_nanos),
    ]
}

fn percents() -> impl Strategy<Value = f64> {
    prop_oneof![
        Just(0.0),
        Just(1.0),
        Just(f64::MIN_POSITIVE),
        Just(5e-324),
        Just(1e-15),
        Just(0.3),
        0.0..=1.0,
    ]
}

fn min_per_secs() -> impl Strategy<Value = u32> {
    prop_oneof![Just(0), Just(1), Just(u32::MAX), 0u32..5, any::<u32>()]
}

/// Operations, with idle times from nothing to several `ttl`s (in
/// thousandths of `ttl`) and a few milliseconds.
fn ops() -> impl Strategy<Value = Vec<(Op, u32)>> {
    proptest::collection::vec(
        (
            prop_oneof![
                (1u32..150).prop_map(Op::Deposit),
                (1u32..40).prop_map(Op::Withdraw),
                Just(Op::Remaining),
                (0u64..200).prop_map(|ms| Op::Idle(Duration::from_millis(ms))),
                Just(Op::Idle(Duration::ZERO)),
            ],
            0u32..4000,
        ),
        0..40,
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// No accepted configuration panics or overflows, whatever the traffic
    /// and the idle times.
    #[test]
    fn no_accepted_budget_panics(
        ttl in ttls(), min_per_sec in min_per_secs(), percent in percents(), ops in ops(),
    ) {
        paused(async move {
            let budget = RetryBudget::new(ttl, min_per_sec, percent).unwrap();
            for (op, thousandths) in ops {
                match op {
                    Op::Deposit(n) => (0..n).for_each(|_| budget.deposit()),
                    Op::Withdraw(n) => {
                        for _ in 0..n {
                            budget.try_withdraw();
                        }
                    }
                    Op::Remaining => {
                        budget.remaining();
                    }
                    Op::Idle(short) => {
                        tokio::time::advance(short).await;
                        tokio::time::advance(ttl * thousandths / 1000).await;
                    }
                }
            }
        });
    }
}
