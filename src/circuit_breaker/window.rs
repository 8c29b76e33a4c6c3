//! The sliding windows a breaker judges from: the last N calls, or the calls
//! of the last T. Both are lock-free and O(1) per call: what leaves the
//! window is subtracted from running totals, never re-summed.
//!
//! Under concurrency the totals are exact once every recorder has finished;
//! a reader racing a recorder may see one call half-applied (a call counted
//! before its failure is), which moves a rate by one call at most. At a
//! time-window bucket boundary, a call racing the bucket's recycling may be
//! dropped from the counts; it is never counted twice.

use std::sync::atomic::Ordering::*;

use crate::sync::{AtomicU8, AtomicU32, AtomicU64};

/// What the window holds for one call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Sample {
    pub(crate) failure: bool,
    pub(crate) slow: bool,
}

/// Running totals over the window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Totals {
    pub(crate) calls: u64,
    pub(crate) failures: u64,
    pub(crate) slow: u64,
}

/// Counters that may transiently dip below zero while racing recorders and
/// clearers settle; read as zero then.
#[derive(Debug, Default)]
struct Counters {
    calls: AtomicU64,
    failures: AtomicU64,
    slow: AtomicU64,
}

impl Counters {
    #[inline]
    fn add(&self, calls: i64, failures: i64, slow: i64) {
        for (counter, delta) in [
            (&self.calls, calls),
            (&self.failures, failures),
            (&self.slow, slow),
        ] {
            if delta != 0 {
                counter.fetch_add(delta as u64, Relaxed);
            }
        }
    }

    fn read(&self) -> Totals {
        let read = |c: &AtomicU64| (c.load(Relaxed) as i64).max(0) as u64;
        let calls = read(&self.calls);
        Totals {
            calls,
            failures: read(&self.failures).min(calls),
            slow: read(&self.slow).min(calls),
        }
    }
}

const RECORDED: u8 = 1;
const FAILURE: u8 = 2;
const SLOW: u8 = 4;

#[inline]
fn encode(sample: Sample) -> u8 {
    RECORDED | if sample.failure { FAILURE } else { 0 } | if sample.slow { SLOW } else { 0 }
}

#[inline]
fn bit(code: u8, flag: u8) -> i64 {
    i64::from(code & flag != 0)
}

/// The last `N` calls, in a ring of one byte per call.
#[derive(Debug)]
pub(crate) struct CountWindow {
    slots: Box<[AtomicU8]>,
    /// Counts calls, wrapping at 2^32. Where 2^32 is not a multiple of the
    /// window size, the wrap reuses one slot early, once in four billion
    /// calls: one call leaves the window one call too soon.
    next: AtomicU32,
    /// `u64::MAX / size + 1`, for Lemire's division-free `% size`.
    modulus_magic: u64,
    totals: Counters,
}

impl CountWindow {
    pub(crate) fn new(size: usize) -> Self {
        Self {
            slots: (0..size).map(|_| AtomicU8::new(0)).collect(),
            next: AtomicU32::new(0),
            modulus_magic: (u64::MAX / size as u64).wrapping_add(1),
            totals: Counters::default(),
        }
    }

    /// Puts `code` in slot `index`; returns what the slot held.
    #[inline]
    fn replace(&self, index: usize, code: u8) -> u8 {
        let slot = &self.slots[index];
        // The common case (a success replacing a success) needs no write.
        // The index is this recorder's alone unless a whole window of calls
        // raced past it, so the load-then-skip cannot hide another write.
        let seen = slot.load(Relaxed);
        if seen == code {
            return seen;
        }
        let old = slot.swap(code, Relaxed);
        if old != code {
            self.totals.add(
                bit(code, RECORDED) - bit(old, RECORDED),
                bit(code, FAILURE) - bit(old, FAILURE),
                bit(code, SLOW) - bit(old, SLOW),
            );
        }
        old
    }

    /// `n % size` without a division instruction (Lemire, Kaser and Kurz,
    /// "Faster remainder by direct computation", 2019); exact for 32-bit `n`.
    #[inline]
    fn slot_of(&self, n: u32) -> usize {
        let low = self.modulus_magic.wrapping_mul(u64::from(n));
        ((u128::from(low) * self.slots.len() as u128) >> 64) as usize
    }

    /// Returns whether a rate or the call count may have gone up.
    #[inline]
    fn record(&self, sample: Sample) -> bool {
        let index = self.slot_of(self.next.fetch_add(1, Relaxed));
        let code = encode(sample);
        let old = self.replace(index, code);
        code != RECORDED || old & RECORDED == 0
    }

    fn clear(&self) {
        for index in 0..self.slots.len() {
            let _ = self.replace(index, 0);
        }
        self.next.store(0, Relaxed);
    }
}

#[derive(Debug, Default)]
struct Bucket {
    /// Which bucket-width interval this bucket holds, plus one (0: never used).
    epoch: AtomicU64,
    counts: Counters,
}

/// The calls of the last `buckets × width`, in buckets of `width`.
#[derive(Debug)]
pub(crate) struct TimeWindow {
    buckets: Box<[Bucket]>,
    width_nanos: u64,
    /// The newest epoch the window has advanced to.
    head: AtomicU64,
    totals: Counters,
}

impl TimeWindow {
    pub(crate) fn new(buckets: usize, width_nanos: u64) -> Self {
        Self {
            buckets: (0..buckets).map(|_| Bucket::default()).collect(),
            width_nanos,
            head: AtomicU64::new(0),
            totals: Counters::default(),
        }
    }

    fn epoch_at(&self, now_nanos: u64) -> u64 {
        now_nanos / self.width_nanos + 1
    }

    fn bucket(&self, epoch: u64) -> &Bucket {
        &self.buckets[(epoch % self.buckets.len() as u64) as usize]
    }

    /// Makes `bucket(epoch)` hold `epoch`, emptying what it held before.
    /// Returns `false` if the bucket already holds a newer epoch.
    fn claim(&self, epoch: u64) -> bool {
        let bucket = self.bucket(epoch);
        let mut current = bucket.epoch.load(Acquire);
        loop {
            if current == epoch {
                return true;
            }
            if current > epoch {
                return false;
            }
            match bucket
                .epoch
                .compare_exchange_weak(current, epoch, AcqRel, Acquire)
            {
                Ok(_) => {
                    let take = |c: &AtomicU64| -(c.swap(0, Relaxed) as i64);
                    let counts = &bucket.counts;
                    self.totals.add(
                        take(&counts.calls),
                        take(&counts.failures),
                        take(&counts.slow),
                    );
                    return true;
                }
                Err(actual) => current = actual,
            }
        }
    }

    /// Moves the window's end to `now`: buckets that fell out of it are
    /// emptied. Amortised O(1): each bucket is emptied once per lap.
    fn advance(&self, now_nanos: u64) {
        let epoch = self.epoch_at(now_nanos);
        let mut head = self.head.load(Acquire);
        while epoch > head {
            match self
                .head
                .compare_exchange_weak(head, epoch, AcqRel, Acquire)
            {
                Ok(_) => {
                    let lap = self.buckets.len() as u64;
                    let first = (head + 1).max(epoch.saturating_sub(lap - 1));
                    for e in first..=epoch {
                        self.claim(e);
                    }
                    return;
                }
                Err(actual) => head = actual,
            }
        }
    }

    fn record(&self, sample: Sample, now_nanos: u64) {
        let code = encode(sample);
        self.add(1, bit(code, FAILURE), bit(code, SLOW), now_nanos);
    }

    /// Adds counts at the time `at_nanos`; counts older than the window are
    /// dropped. Also used by the retry budget, which counts deposits and
    /// withdrawals in the first two counters.
    pub(crate) fn add(&self, calls: i64, failures: i64, slow: i64, at_nanos: u64) {
        self.advance(at_nanos);
        let epoch = self.epoch_at(at_nanos);
        if !self.claim(epoch) {
            // A whole window ago: outside the window.
            return;
        }
        self.bucket(epoch).counts.add(calls, failures, slow);
        self.totals.add(calls, failures, slow);
    }

    /// The raw counters over the window ending at `now_nanos`.
    pub(crate) fn counts(&self, now_nanos: u64) -> (u64, u64, u64) {
        self.advance(now_nanos);
        let read = |c: &AtomicU64| (c.load(Relaxed) as i64).max(0) as u64;
        (
            read(&self.totals.calls),
            read(&self.totals.failures),
            read(&self.totals.slow),
        )
    }

    /// The window's length.
    pub(crate) fn length_nanos(&self) -> u64 {
        self.width_nanos * self.buckets.len() as u64
    }

    /// One bucket's length.
    pub(crate) fn width_nanos(&self) -> u64 {
        self.width_nanos
    }

    fn clear(&self) {
        for bucket in self.buckets.iter() {
            let take = |c: &AtomicU64| -(c.swap(0, Relaxed) as i64);
            let counts = &bucket.counts;
            self.totals.add(
                take(&counts.calls),
                take(&counts.failures),
                take(&counts.slow),
            );
        }
    }
}

/// The breaker's window, of either kind.
#[derive(Debug)]
pub(crate) enum Window {
    Count(CountWindow),
    Time(TimeWindow),
}

impl Window {
    /// Whether recording needs the time of the call's end.
    #[inline]
    pub(crate) fn needs_clock(&self) -> bool {
        matches!(self, Window::Time(_))
    }

    /// Records a call. Returns `false` when no rate and no count can have
    /// gone up, so the trip conditions need not be judged again.
    #[inline]
    pub(crate) fn record(&self, sample: Sample, now_nanos: u64) -> bool {
        match self {
            Window::Count(w) => w.record(sample),
            Window::Time(w) => {
                // Calls leaving a time window can raise a rate: always judge.
                w.record(sample, now_nanos);
                true
            }
        }
    }

    /// The totals over the window ending at `now_nanos` (ignored by a count
    /// window).
    pub(crate) fn totals(&self, now_nanos: u64) -> Totals {
        match self {
            Window::Count(w) => w.totals.read(),
            Window::Time(w) => {
                w.advance(now_nanos);
                w.totals.read()
            }
        }
    }

    pub(crate) fn clear(&self) {
        match self {
            Window::Count(w) => w.clear(),
            Window::Time(w) => w.clear(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample(failure: bool, slow: bool) -> Sample {
        Sample { failure, slow }
    }

    /// A call recorded with a timestamp a whole lap older than the
    /// bucket it maps to (a late recorder) is dropped: it must not roll the
    /// bucket back and wipe the newer calls in it. (A mutant that let
    /// `claim` move a bucket to an older epoch survived every other test.)
    #[test]
    fn a_call_a_lap_late_does_not_roll_its_bucket_back() {
        let w = TimeWindow::new(2, 100);
        w.record(sample(true, false), 250); // epoch 3, bucket 1
        w.record(sample(false, false), 50); // epoch 1, bucket 1 too: a lap late
        let t = w.totals.read();
        assert_eq!((t.calls, t.failures), (1, 1));
    }

    fn totals_of<'a>(samples: impl Iterator<Item = &'a Sample>) -> Totals {
        samples.fold(Totals::default(), |t, s| Totals {
            calls: t.calls + 1,
            failures: t.failures + u64::from(s.failure),
            slow: t.slow + u64::from(s.slow),
        })
    }

    proptest! {
        #[test]
        fn count_window_matches_a_naive_model(
            size in 1usize..50,
            samples in proptest::collection::vec((any::<bool>(), any::<bool>()), 0..300),
            clear_at in proptest::option::of(0usize..300),
        ) {
            let window = Window::Count(CountWindow::new(size));
            let mut model: Vec<Sample> = Vec::new();
            for (i, (f, s)) in samples.iter().enumerate() {
                if clear_at == Some(i) {
                    window.clear();
                    model.clear();
                }
                window.record(sample(*f, *s), 0);
                model.push(sample(*f, *s));
                let start = model.len().saturating_sub(size);
                prop_assert_eq!(window.totals(0), totals_of(model[start..].iter()));
            }
        }

        #[test]
        fn time_window_matches_a_naive_model(
            buckets in 1usize..20,
            width in 1u64..100,
            // Gaps between calls, in nanoseconds, some larger than the window.
            calls in proptest::collection::vec((0u64..300, any::<bool>(), any::<bool>()), 0..300),
        ) {
            let window = Window::Time(TimeWindow::new(buckets, width));
            let mut model: Vec<(u64, Sample)> = Vec::new();
            let mut now = 0;
            for (gap, f, s) in calls {
                now += gap;
                window.record(sample(f, s), now);
                model.push((now, sample(f, s)));
                // The window holds the calls whose bucket is one of the last
                // `buckets` buckets.
                let newest = now / width;
                let inside = model
                    .iter()
                    .filter(|(t, _)| t / width + buckets as u64 > newest)
                    .map(|(_, s)| s);
                prop_assert_eq!(window.totals(now), totals_of(inside));
            }
            // Much later, everything has left the window.
            let later = now + width * (buckets as u64 + 1);
            prop_assert_eq!(window.totals(later), Totals::default());
        }
    }

    #[test]
    fn division_free_modulus_is_exact() {
        for size in [1usize, 2, 3, 7, 10, 100, 999, 65_536, 1_000_000] {
            let w = CountWindow::new(size);
            for n in (0..5000u32).chain(u32::MAX - 5000..=u32::MAX) {
                assert_eq!(w.slot_of(n), n as usize % size, "{n} % {size}");
            }
        }
    }

    #[test]
    fn concurrent_recorders_leave_exact_totals() {
        let window = std::sync::Arc::new(Window::Count(CountWindow::new(64)));
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let window = window.clone();
                std::thread::spawn(move || {
                    for i in 0..10_000 {
                        window.record(sample((i + t) % 3 == 0, i % 5 == 0), 0);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let totals = window.totals(0);
        assert_eq!(totals.calls, 64);
        if let Window::Count(w) = &*window {
            let recount = w.slots.iter().fold(Totals::default(), |t, s| {
                let code = s.load(Relaxed);
                Totals {
                    calls: t.calls + bit(code, RECORDED) as u64,
                    failures: t.failures + bit(code, FAILURE) as u64,
                    slow: t.slow + bit(code, SLOW) as u64,
                }
            });
            assert_eq!(totals, recount);
        }
    }
}
