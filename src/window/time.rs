//! The entries of the last T.

use std::sync::atomic::Ordering::*;

use super::{Code, Lanes, deltas};
use crate::sync::AtomicU64;

#[derive(Debug)]
struct Bucket<const N: usize> {
    /// Which bucket-width interval this bucket holds, plus one (0: never
    /// used).
    epoch: AtomicU64,
    counts: Lanes<N>,
}

impl<const N: usize> Default for Bucket<N> {
    fn default() -> Self {
        Self {
            epoch: AtomicU64::new(0),
            counts: Lanes::default(),
        }
    }
}

/// The entries of the last `buckets × width`, in buckets of `width`,
/// counted in `N` lanes. Times are nanoseconds since the user's
/// [`Epoch`](crate::clock::Epoch).
#[derive(Debug)]
pub(crate) struct TimeWindow<const N: usize> {
    buckets: Box<[Bucket<N>]>,
    width_nanos: u64,
    /// The newest epoch the window has advanced to.
    head: AtomicU64,
    totals: Lanes<N>,
}

impl<const N: usize> TimeWindow<N> {
    pub(crate) fn new(buckets: usize, width_nanos: u64) -> Self {
        Self {
            buckets: (0..buckets).map(|_| Bucket::default()).collect(),
            width_nanos,
            head: AtomicU64::new(0),
            totals: Lanes::default(),
        }
    }

    /// An empty window of the same buckets.
    pub(crate) fn fresh(&self) -> Self {
        Self::new(self.buckets.len(), self.width_nanos)
    }

    fn epoch_at(&self, now_nanos: u64) -> u64 {
        now_nanos / self.width_nanos + 1
    }

    fn bucket(&self, epoch: u64) -> &Bucket<N> {
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
                    self.totals.add(bucket.counts.take());
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

    /// Records one entry of `code` (see [`code`](super::code)) at
    /// `at_nanos`.
    #[inline]
    pub(crate) fn record(&self, code: Code, at_nanos: u64) {
        self.add(deltas(code), at_nanos);
    }

    /// Adds `deltas` to the lanes at the time `at_nanos`; counts older than
    /// the window are dropped.
    pub(crate) fn add(&self, deltas: [i64; N], at_nanos: u64) {
        self.advance(at_nanos);
        let epoch = self.epoch_at(at_nanos);
        if !self.claim(epoch) {
            // A whole window ago: outside the window.
            return;
        }
        self.bucket(epoch).counts.add(deltas);
        self.totals.add(deltas);
    }

    /// Counts one entry in `lane` alone at `at_nanos` (for a window of many
    /// lanes, such as the latency classes, where an array of deltas would
    /// touch every lane); counts older than the window are dropped.
    pub(crate) fn add_one(&self, lane: usize, at_nanos: u64) {
        self.advance(at_nanos);
        let epoch = self.epoch_at(at_nanos);
        if !self.claim(epoch) {
            return;
        }
        self.bucket(epoch).counts.0[lane].fetch_add(1, Relaxed);
        self.totals.0[lane].fetch_add(1, Relaxed);
    }

    /// Which bucket-width interval `now_nanos` falls in: what is read from
    /// the window changes only when this does, or when an entry comes.
    pub(crate) fn interval_of(&self, now_nanos: u64) -> u64 {
        self.epoch_at(now_nanos)
    }

    /// The lanes' totals over the window ending at `now_nanos`.
    pub(crate) fn totals(&self, now_nanos: u64) -> [u64; N] {
        self.advance(now_nanos);
        self.totals.read()
    }

    /// The window's length.
    pub(crate) fn length_nanos(&self) -> u64 {
        self.width_nanos * self.buckets.len() as u64
    }

    /// One bucket's length.
    pub(crate) fn width_nanos(&self) -> u64 {
        self.width_nanos
    }

    /// Empties the window.
    pub(crate) fn clear(&self) {
        for bucket in self.buckets.iter() {
            self.totals.add(bucket.counts.take());
        }
    }
}

#[cfg(all(test, not(palisade_loom)))]
mod tests {
    use super::super::code;
    use super::*;
    use proptest::prelude::*;

    /// An entry recorded with a timestamp a whole lap older than the
    /// bucket it maps to (a late recorder) is dropped: it must not roll the
    /// bucket back and wipe the newer entries in it. (A mutant that let
    /// `claim` move a bucket to an older epoch survived every other test.)
    #[test]
    fn an_entry_a_lap_late_does_not_roll_its_bucket_back() {
        let w = TimeWindow::<2>::new(2, 100);
        w.record(code(1), 250); // epoch 3, bucket 1
        w.record(code(0), 50); // epoch 1, bucket 1 too: a lap late
        assert_eq!(w.totals.read(), [1, 1]);
    }

    proptest! {
        #[test]
        fn counts_the_entries_of_the_last_buckets_in_every_lane(
            buckets in 1usize..20,
            width in 1u64..100,
            // Gaps between entries, in nanoseconds, some larger than the
            // window.
            entries in proptest::collection::vec((0u64..300, 0u8..4), 0..300),
        ) {
            let window = TimeWindow::<3>::new(buckets, width);
            let mut model: Vec<(u64, u8)> = Vec::new();
            let mut now = 0;
            for (gap, marks) in entries {
                now += gap;
                window.record(code(marks), now);
                model.push((now, marks));
                // The window holds the entries whose bucket is one of the
                // last `buckets` buckets.
                let newest = now / width;
                let inside: Vec<u8> = model
                    .iter()
                    .filter(|(t, _)| t / width + buckets as u64 > newest)
                    .map(|(_, m)| *m)
                    .collect();
                let expected: [u64; 3] = std::array::from_fn(|lane| match lane {
                    0 => inside.len() as u64,
                    _ => inside.iter().filter(|m| *m >> (lane - 1) & 1 == 1).count() as u64,
                });
                prop_assert_eq!(window.totals(now), expected);
            }
            // Much later, everything has left the window.
            let later = now + width * (buckets as u64 + 1);
            prop_assert_eq!(window.totals(later), [0; 3]);
        }
    }
}
