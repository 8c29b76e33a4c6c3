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
use tower::{Layer, Service, ServiceExt, service_fn};

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

/// A service that fails its call number `which` (from 0) and answers 7 to
/// the others; counts its calls.
fn fails_once(
    calls: Arc<AtomicUsize>,
    which: usize,
) -> impl Service<(), Response = u32, Error = BoxError> + Clone {
    service_fn(move |()| {
        let n = calls.fetch_add(1, SeqCst);
        async move {
            if n == which {
                Err::<u32, BoxError>("down".into())
            } else {
                Ok(7)
            }
        }
    })
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
    let layer = RetryLayer::builder()
        .max_attempts(2)
        .backoff(Backoff::constant(Duration::ZERO).build().unwrap())
        .budget(RetryBudget::new(10 * SEC, 1, f64::MIN_POSITIVE).unwrap())
        .build()
        .unwrap();
    let flaky = fails_once(calls.clone(), 0);
    assert_eq!(layer.layer(flaky).oneshot(()).await.unwrap(), 7);
    assert_eq!(calls.load(SeqCst), 2, "the reserve paid for the retry");
}

/// Issue 12, defect 13: deposits not yet in the window were taken as spread evenly
/// over all the time since the last flush. After 2 s of quiet, a fresh
/// request was taken as mostly older than the 1 s window and funded nothing.
#[tokio::test(start_paused = true)]
async fn after_a_quiet_period_a_fresh_request_funds_a_retry() {
    let budget = RetryBudget::new(SEC, 0, 1.0).unwrap();
    tokio::time::advance(2 * SEC).await;
    budget.deposit();
    assert_eq!(budget.remaining(), 1);
}

/// Issue 12, defect 13, the other way: 30 requests followed by 3 s of quiet were
/// taken as spread over the 3 s, a third of them inside the 1 s window.
#[tokio::test(start_paused = true)]
async fn requests_older_than_the_window_fund_nothing() {
    let budget = RetryBudget::new(SEC, 0, 1.0).unwrap();
    for _ in 0..30 {
        budget.deposit();
    }
    tokio::time::advance(3 * SEC).await;
    assert_eq!(budget.remaining(), 0);
    assert!(!budget.try_withdraw());
}

/// The same burst and pause, then one more request: it counts. A budget
/// that dated requests without reading the clock for each could not tell
/// this from the test above (31 requests, then 3 s, then a look), and must
/// fail one of the two.
#[tokio::test(start_paused = true)]
async fn a_request_after_a_burst_and_a_pause_counts_alone() {
    let budget = RetryBudget::new(SEC, 0, 1.0).unwrap();
    for _ in 0..30 {
        budget.deposit();
    }
    tokio::time::advance(3 * SEC).await;
    budget.deposit();
    assert_eq!(budget.remaining(), 1);
}

/// Issue 12, defect 13: tower's own `TpsBudget` test (`tps_slots`), step for step.
/// At the end, of three requests 1.7 s, 0.8 s and 0 s old, the last two
/// are in the 1 s window: 50% of them is one retry.
#[tokio::test(start_paused = true)]
async fn towers_sliding_window_test_passes() {
    let ms = Duration::from_millis;
    let budget = RetryBudget::new(SEC, 0, 0.5).unwrap();
    budget.deposit();
    budget.deposit();
    tokio::time::advance(ms(901)).await;
    assert!(budget.try_withdraw(), "900 ms later, both still count");
    assert!(!budget.try_withdraw());
    tokio::time::advance(ms(2001)).await;
    budget.deposit();
    tokio::time::advance(ms(301)).await;
    budget.deposit();
    tokio::time::advance(ms(801)).await;
    budget.deposit();
    assert!(budget.try_withdraw(), "the second and third still count");
    assert!(!budget.try_withdraw());
}

/// Issue 12, defect 13: light traffic, one request every 2 s: each of them is in the
/// window when it comes, so the last funds a retry.
#[tokio::test(start_paused = true)]
async fn light_traffic_is_counted_when_it_comes() {
    let budget = RetryBudget::new(SEC, 0, 1.0).unwrap();
    for _ in 0..10 {
        budget.deposit();
        tokio::time::advance(2 * SEC).await;
    }
    budget.deposit();
    assert_eq!(budget.remaining(), 1);
}

/// Issue 12, defect 13, through a layer: a retry layer idle for 2 s gave up on its
/// first failure, although the request's own deposit funds the retry.
#[tokio::test(start_paused = true)]
async fn a_layer_idle_for_a_while_retries_what_it_funds() {
    let calls = Arc::new(AtomicUsize::new(0));
    let layer = RetryLayer::builder()
        .max_attempts(2)
        .backoff(Backoff::constant(Duration::ZERO).build().unwrap())
        .budget(RetryBudget::new(SEC, 0, 1.0).unwrap())
        .build()
        .unwrap();
    let svc = layer.layer(fails_once(calls.clone(), 0));
    tokio::time::advance(2 * SEC).await;
    assert_eq!(svc.oneshot(()).await.unwrap(), 7);
    assert_eq!(calls.load(SeqCst), 2);
}

/// The same after some traffic: two calls, 2 s of quiet, then a call that
/// fails once. A budget that counted requests in batches without reading
/// the clock would date the third with the second, 2 s early.
#[tokio::test(start_paused = true)]
async fn a_layer_quiet_after_some_traffic_retries_what_it_funds() {
    let calls = Arc::new(AtomicUsize::new(0));
    let layer = RetryLayer::builder()
        .max_attempts(2)
        .backoff(Backoff::constant(Duration::ZERO).build().unwrap())
        .budget(RetryBudget::new(SEC, 0, 1.0).unwrap())
        .build()
        .unwrap();
    let mut svc = layer.layer(fails_once(calls.clone(), 2));
    for _ in 0..2 {
        assert_eq!(svc.ready().await.unwrap().call(()).await.unwrap(), 7);
    }
    tokio::time::advance(2 * SEC).await;
    assert_eq!(svc.ready().await.unwrap().call(()).await.unwrap(), 7);
    assert_eq!(calls.load(SeqCst), 4, "the third call was retried");
}

/// Requests made on other threads: each thread keeps up to 31 of them
/// before the budget sees them (the docs' bound), and adds what it kept
/// when it ends; a thread's own decisions count all of its own.
#[test]
fn other_threads_requests_are_missed_by_at_most_31_each_until_they_end() {
    const THREADS: u64 = 4;
    const EACH: u64 = 100;
    let budget = RetryBudget::new(Duration::from_secs(3600), 0, 0.5).unwrap();
    let made = Arc::new(std::sync::Barrier::new(THREADS as usize + 1));
    let end = Arc::new(std::sync::Barrier::new(THREADS as usize + 1));
    let threads: Vec<_> = (0..THREADS)
        .map(|_| {
            let (budget, made, end) = (budget.clone(), made.clone(), end.clone());
            std::thread::spawn(move || {
                for _ in 0..EACH {
                    budget.deposit();
                }
                made.wait();
                end.wait();
            })
        })
        .collect();
    made.wait();
    let seen = budget.remaining();
    let all = THREADS * EACH / 2;
    let fewest = (THREADS * EACH - THREADS * 31) / 2;
    assert!(
        (fewest..=all).contains(&seen),
        "{seen} retries funded while the threads run: not in {fewest}..={all}"
    );
    // 100 = 3 × 32 + 4: each thread still keeps 4.
    assert_eq!(seen, (THREADS * EACH - THREADS * 4) / 2);
    end.wait();
    for thread in threads {
        thread.join().unwrap();
    }
    assert_eq!(
        budget.remaining(),
        all,
        "the threads added theirs as they ended"
    );
}

/// Eight threads make requests and ask for retries at once, sharing one
/// budget of 50%: however their batches interleave, the retries granted
/// never pass half the requests made before them, and once the threads
/// end, the budget holds exactly what is left.
#[test]
fn concurrent_requests_and_retries_never_overdraw() {
    const THREADS: usize = 8;
    const ROUNDS: usize = 2_000;
    let budget = RetryBudget::new(Duration::from_secs(3600), 0, 0.5).unwrap();
    let requests = Arc::new(AtomicUsize::new(0));
    let granted = Arc::new(AtomicUsize::new(0));
    let start = Arc::new(std::sync::Barrier::new(THREADS));
    let threads: Vec<_> = (0..THREADS)
        .map(|n| {
            let (budget, requests, granted, start) = (
                budget.clone(),
                requests.clone(),
                granted.clone(),
                start.clone(),
            );
            std::thread::spawn(move || {
                start.wait();
                for round in 0..ROUNDS {
                    // Counted before the deposit, so that the total read
                    // below is at least the requests the budget has seen.
                    requests.fetch_add(1, SeqCst);
                    budget.deposit();
                    if (round + n) % 3 == 0 && budget.try_withdraw() {
                        let granted = granted.fetch_add(1, SeqCst) + 1;
                        let made = requests.load(SeqCst);
                        assert!(
                            granted * 2 <= made,
                            "{granted} retries granted after {made} requests"
                        );
                    }
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
    let (requests, granted) = (requests.load(SeqCst) as u64, granted.load(SeqCst) as u64);
    assert_eq!(requests, (THREADS * ROUNDS) as u64);
    assert!(granted > 0, "some retries were funded");
    assert_eq!(budget.remaining(), requests / 2 - granted);
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

/// What the budget may count at `now`, from what really happened: the
/// requests and the granted retries, in nanoseconds since the budget was
/// made.
struct Truth {
    ttl: u64,
    percent: f64,
    reserve: f64,
    deposits: Vec<u64>,
    withdrawals: Vec<u64>,
}

impl Truth {
    fn count(times: &[u64], since: u64) -> usize {
        times.iter().filter(|&&t| t >= since).count()
    }

    /// `percent × requests + min_per_sec × ttl`, in f64 as the budget
    /// computes it.
    fn funded(&self, deposits: usize) -> f64 {
        self.percent * deposits as f64 + self.reserve
    }

    /// The most retries the last `ttl` may hold at `now`: the budget
    /// counts no request for longer than `ttl`, and every retry for at
    /// least `ttl`.
    fn most(&self, now: u64) -> f64 {
        self.funded(Self::count(
            &self.deposits,
            (now + 1).saturating_sub(self.ttl),
        ))
    }

    /// The fewest, by the budget's documented error: every request of the
    /// last 9/10 of `ttl` counts (nine whole tenths, rounded down); a retry
    /// counts for at most 11/10 of `ttl` (eleven tenths, rounded up).
    fn fewest(&self, now: u64) -> (f64, usize) {
        let width = self.ttl / 10;
        let deposits = Self::count(&self.deposits, now.saturating_sub(9 * width));
        let retries = Self::count(
            &self.withdrawals,
            (now + 1).saturating_sub(11 * self.ttl.div_ceil(10)),
        );
        (self.funded(deposits), retries)
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// No accepted configuration panics or overflows, whatever the traffic
    /// and the idle times; and the budget keeps its formula: a granted
    /// retry leaves the retries of the last `ttl` within `percent ×
    /// requests + min_per_sec × ttl` of the last `ttl`, exactly; a refused
    /// one would have passed it but for the documented error.
    #[test]
    fn the_budget_keeps_its_formula_and_never_panics(
        ttl in ttls(), min_per_sec in min_per_secs(), percent in percents(), ops in ops(),
    ) {
        paused(async move {
            let budget = RetryBudget::new(ttl, min_per_sec, percent).unwrap();
            let start = tokio::time::Instant::now();
            let now = || u64::try_from(start.elapsed().as_nanos()).unwrap();
            let mut truth = Truth {
                ttl: u64::try_from(ttl.as_nanos()).unwrap(),
                percent,
                reserve: f64::from(min_per_sec) * ttl.as_secs_f64(),
                deposits: Vec::new(),
                withdrawals: Vec::new(),
            };
            for (op, thousandths) in ops {
                let t = now();
                match op {
                    Op::Deposit(n) => (0..n).for_each(|_| {
                        budget.deposit();
                        truth.deposits.push(t);
                    }),
                    Op::Withdraw(n) => {
                        for _ in 0..n {
                            if budget.try_withdraw() {
                                truth.withdrawals.push(t);
                                let last_ttl = Truth::count(
                                    &truth.withdrawals,
                                    (t + 1).saturating_sub(truth.ttl),
                                );
                                prop_assert!(
                                    last_ttl as f64 <= truth.most(t),
                                    "granted retry {} of the last ttl at {t} ns; at most {}",
                                    last_ttl, truth.most(t)
                                );
                            } else {
                                let (funded, retries) = truth.fewest(t);
                                prop_assert!(
                                    (retries + 1) as f64 > funded,
                                    "refused a retry at {t} ns: {retries} retries, {funded} funded"
                                );
                            }
                        }
                    }
                    Op::Remaining => {
                        let remaining = budget.remaining();
                        let last_ttl =
                            Truth::count(&truth.withdrawals, (t + 1).saturating_sub(truth.ttl));
                        let most = (truth.most(t).floor() as u64).saturating_sub(last_ttl as u64);
                        let (funded, retries) = truth.fewest(t);
                        let fewest = (funded.floor() as u64).saturating_sub(retries as u64);
                        prop_assert!(
                            (fewest..=most).contains(&remaining),
                            "{remaining} remaining at {t} ns, not in {fewest}..={most}"
                        );
                    }
                    Op::Idle(short) => {
                        tokio::time::advance(short).await;
                        tokio::time::advance(ttl * thousandths / 1000).await;
                    }
                }
            }
            Ok(())
        })?;
    }
}
