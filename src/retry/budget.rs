use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering::*};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use crate::circuit_breaker::window::TimeWindow;
use crate::error::ConfigError;

/// Deposits are counted in a plain counter and put into the time window in
/// batches, so that a request does not read the clock.
const FLUSH_EVERY: u64 = 64;
/// The window's resolution: a tenth of its time-to-live.
const BUCKETS: usize = 10;

/// A retry budget, as Finagle's `RetryBudget` (and Envoy's retry budgets):
/// retries may be at most `percent` of the requests of the last `ttl`, plus
/// `min_per_sec` retries per second of `ttl` that are always allowed, so
/// that a client with little traffic can still retry.
///
/// Each request deposits into the budget; each retry withdraws from it.
/// When a retry would overdraw it, the retry layer returns the last result
/// as is. One budget is shared by every clone of the layer it is given to,
/// and may be shared between layers by cloning it.
///
/// # Default
/// `ttl` 10 s, `min_per_sec` 10, `percent` 0.2 (Finagle's defaults).
///
/// # Examples
///
/// ```
/// use palisade::retry::RetryBudget;
/// use std::time::Duration;
///
/// // 20% of the traffic of the last 10 s, plus 5 retries a second.
/// let budget = RetryBudget::new(Duration::from_secs(10), 5, 0.2).unwrap();
/// assert!(RetryBudget::new(Duration::from_secs(10), 5, 1.5).is_err());
/// # let _ = budget;
/// ```
#[derive(Clone)]
pub struct RetryBudget {
    inner: Arc<Inner>,
}

struct Inner {
    ttl: Duration,
    min_per_sec: u32,
    percent: f64,
    /// `min_per_sec × ttl`, in retries.
    reserve: f64,
    window: TimeWindow,
    pending: AtomicU64,
    /// When pending deposits were last put in the window, in nanoseconds
    /// since `epoch`.
    last_flush: AtomicU64,
    withdrawals: Mutex<()>,
    epoch: Instant,
}

impl fmt::Debug for RetryBudget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryBudget")
            .field("ttl", &self.inner.ttl)
            .field("min_per_sec", &self.inner.min_per_sec)
            .field("percent", &self.inner.percent)
            .finish()
    }
}

impl Default for RetryBudget {
    fn default() -> Self {
        Self::new(Duration::from_secs(10), 10, 0.2).expect("the defaults are valid")
    }
}

impl RetryBudget {
    /// A budget of `percent` of the requests of the last `ttl`, plus
    /// `min_per_sec` retries per second of `ttl`: a retry is allowed while
    /// the retries of the last `ttl` stay within
    /// `percent × requests + min_per_sec × ttl` (in seconds), rounded down.
    ///
    /// Accepted: `ttl` from 1 s to 1 hour, every `min_per_sec` (0: no
    /// reserve), and every `percent` in `[0, 1]`, however small (a
    /// `percent` too small to fund a retry leaves only the reserve). No
    /// accepted value can overflow: the formula is computed in `f64`.
    ///
    /// # Errors
    /// A `ttl` outside 1 s to 1 hour (parameter `ttl`), a `percent`
    /// outside `[0, 1]` or NaN (parameter `percent`).
    pub fn new(ttl: Duration, min_per_sec: u32, percent: f64) -> Result<Self, ConfigError> {
        if !(Duration::from_secs(1)..=Duration::from_secs(3600)).contains(&ttl) {
            return Err(ConfigError::new(
                "ttl",
                format!("must be from 1 s to 1 hour, got {ttl:?}"),
            ));
        }
        if !(0.0..=1.0).contains(&percent) {
            return Err(ConfigError::new(
                "percent",
                format!("must be a fraction in [0, 1], got {percent}"),
            ));
        }
        // At most 2^32 × 3600: exact in an f64.
        let reserve = f64::from(min_per_sec) * ttl.as_secs_f64();
        let width = u64::try_from((ttl / BUCKETS as u32).as_nanos()).expect("at most an hour");
        Ok(Self {
            inner: Arc::new(Inner {
                ttl,
                min_per_sec,
                percent,
                reserve,
                window: TimeWindow::new(BUCKETS, width),
                pending: AtomicU64::new(0),
                last_flush: AtomicU64::new(0),
                withdrawals: Mutex::new(()),
                epoch: Instant::now(),
            }),
        })
    }

    /// Records a request. Reads the clock once every 64 requests.
    #[inline]
    pub fn deposit(&self) {
        let n = self.inner.pending.fetch_add(1, Relaxed) + 1;
        if n.is_multiple_of(FLUSH_EVERY) {
            self.inner.flush(self.inner.now());
        }
    }

    /// Takes one retry from the budget, if it has one.
    pub fn try_withdraw(&self) -> bool {
        let inner = &*self.inner;
        let _serial = inner.withdrawals.lock().unwrap_or_else(|e| e.into_inner());
        let now = inner.now();
        inner.flush(now);
        if inner.remaining(now) == 0 {
            return false;
        }
        inner.window.add(0, 1, 0, now);
        true
    }

    /// How many retries the budget would allow now.
    pub fn remaining(&self) -> u64 {
        let inner = &*self.inner;
        let now = inner.now();
        inner.flush(now);
        inner.remaining(now)
    }
}

impl Inner {
    fn now(&self) -> u64 {
        u64::try_from(
            Instant::now()
                .saturating_duration_since(self.epoch)
                .as_nanos(),
        )
        .unwrap_or(u64::MAX)
    }

    /// The retries the budget allows at `now`: `percent` of the deposits
    /// plus the reserve, in whole retries, less the withdrawals.
    ///
    /// Computed in `f64`, which cannot overflow here: the deposits are at
    /// most 2^64 and `percent` at most 1, the reserve at most 2^32 × 3600.
    /// The share is exact while the window holds fewer than 2^53 deposits,
    /// and within a relative 2^-53 beyond (a retry per 10^16 requests).
    fn remaining(&self, now: u64) -> u64 {
        let (deposits, withdrawals, _) = self.window.counts(now);
        let funded = self.percent * deposits as f64 + self.reserve;
        // `as` saturates: a count beyond u64::MAX (never) stays there.
        (funded.floor() as u64).saturating_sub(withdrawals)
    }

    /// Puts the deposits counted since the last flush into the window. They
    /// arrived some time between the last flush and now; when that span is
    /// longer than a bucket, they are taken as spread evenly over it, and
    /// those that fall before the window are dropped.
    fn flush(&self, now: u64) {
        let pending = self.pending.swap(0, Relaxed);
        let since = self.last_flush.swap(now, Relaxed);
        if pending == 0 {
            return;
        }
        let span = now.saturating_sub(since);
        let width = self.window.width_nanos();
        if span <= width {
            self.window.add(pending as i64, 0, 0, now);
            return;
        }
        let covered = span.min(self.window.length_nanos());
        let kept = (pending as u128 * covered as u128 / span as u128) as u64;
        let buckets = covered.div_ceil(width);
        for i in 0..buckets {
            let share = kept / buckets + u64::from(i < kept % buckets);
            self.window
                .add(share as i64, 0, 0, now.saturating_sub(i * width));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn allows_the_share_plus_the_reserve() {
        // 20% of 1,000 requests, plus 10/s over 10 s.
        let budget = RetryBudget::new(Duration::from_secs(10), 10, 0.2).unwrap();
        for _ in 0..1000 {
            budget.deposit();
        }
        assert_eq!(budget.remaining(), 300);
        let granted = (0..1000).take_while(|_| budget.try_withdraw()).count();
        assert_eq!(granted, 300);
        assert!(!budget.try_withdraw());
    }

    #[tokio::test(start_paused = true)]
    async fn withdrawals_and_deposits_expire_after_the_ttl() {
        let budget = RetryBudget::new(Duration::from_secs(10), 0, 0.5).unwrap();
        for _ in 0..100 {
            budget.deposit();
        }
        assert_eq!((0..100).take_while(|_| budget.try_withdraw()).count(), 50);
        tokio::time::advance(Duration::from_secs(11)).await;
        assert_eq!(budget.remaining(), 0, "the deposits left the window too");
        for _ in 0..10 {
            budget.deposit();
        }
        assert_eq!(budget.remaining(), 5);
    }

    #[tokio::test(start_paused = true)]
    async fn deposits_spread_over_a_long_quiet_span_count_in_part() {
        let budget = RetryBudget::new(Duration::from_secs(10), 0, 1.0).unwrap();
        // 63 requests at t = 0, then 37 at t = 100 s. The 64th deposit
        // flushes the first 64 at t = 100 s, not knowing when within the
        // 100 s they came: taken as spread evenly, a tenth of them (6) fall
        // in the last 10 s. The other 36 are flushed with no time elapsed.
        for _ in 0..63 {
            budget.deposit();
        }
        tokio::time::advance(Duration::from_secs(100)).await;
        for _ in 0..37 {
            budget.deposit();
        }
        assert_eq!(budget.remaining(), 6 + 36);
    }

    #[tokio::test(start_paused = true)]
    async fn zero_percent_leaves_only_the_reserve() {
        let budget = RetryBudget::new(Duration::from_secs(2), 3, 0.0).unwrap();
        for _ in 0..1000 {
            budget.deposit();
        }
        assert_eq!(budget.remaining(), 6);
    }

    #[test]
    fn bad_budgets_are_refused() {
        let p = |r: Result<RetryBudget, ConfigError>| r.unwrap_err().parameter();
        assert_eq!(p(RetryBudget::new(Duration::ZERO, 1, 0.2)), "ttl");
        assert_eq!(
            p(RetryBudget::new(Duration::from_secs(7200), 1, 0.2)),
            "ttl"
        );
        for bad in [-0.1, 1.01, f64::NAN, f64::INFINITY] {
            assert_eq!(
                p(RetryBudget::new(Duration::from_secs(10), 1, bad)),
                "percent"
            );
        }
    }
}
