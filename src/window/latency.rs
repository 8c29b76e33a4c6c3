//! The latencies of the last T, as a histogram whose quantiles can be read
//! at any time: the hedge's delay taken from recent latencies (tower's
//! `hedge` idea), and later the adaptive limits' round-trip times.
//!
//! It is a [`TimeWindow`] whose lanes are latency classes: recording is the
//! window's lock-free O(1) add, to one class; old entries leave the window
//! bucket by bucket, so the histogram slides rather than resetting as
//! tower's rotating pair does. Classes are log-linear over microseconds,
//! eight per power of two (HdrHistogram's layout with three bits of
//! precision), so a quantile read back is the upper edge of its class: at
//! most 12.5% above the true value, never below it. Latencies from 0 to
//! 2^28 µs (about 4.5 minutes) have classes of their own; longer ones count
//! in the last.

use std::sync::atomic::Ordering::*;
use std::time::Duration;

use super::TimeWindow;
use crate::sync::AtomicU64;

/// Bits of precision within a power of two.
const SUB_BITS: u32 = 3;
/// Classes per power of two.
const SUB: u64 = 1 << SUB_BITS;
/// The highest power of two with classes of its own: 2^27 to 2^28 µs.
const TOP_EXPONENT: u32 = 27;
/// How many classes: exact microseconds below `SUB`, then `SUB` per power
/// of two up to `TOP_EXPONENT`.
pub(crate) const CLASSES: usize = ((TOP_EXPONENT - SUB_BITS + 2) as u64 * SUB) as usize;

/// The class a latency of `micros` counts in.
fn class_of(micros: u64) -> usize {
    if micros < SUB {
        return micros as usize;
    }
    let exponent = 63 - micros.leading_zeros();
    let class =
        u64::from(exponent - SUB_BITS + 1) * SUB + ((micros >> (exponent - SUB_BITS)) - SUB);
    (class as usize).min(CLASSES - 1)
}

/// The first latency, in microseconds, above the class `class`.
fn upper_edge(class: usize) -> u64 {
    let class = class as u64;
    if class < SUB {
        return class + 1;
    }
    let exponent = class / SUB + u64::from(SUB_BITS) - 1;
    let mantissa = class % SUB + SUB;
    (mantissa + 1) << (exponent - u64::from(SUB_BITS))
}

/// Latencies recorded over the last `length`, in `BUCKETS` steps.
#[derive(Debug)]
pub(crate) struct LatencyWindow {
    window: TimeWindow<CLASSES>,
    /// The last quantile read, and the interval it was read in: it is read
    /// again at most once per bucket width (see [`quantile`](Self::quantile)).
    cached_in: AtomicU64,
    /// The cached reading, in microseconds; 0 when the window held too few
    /// entries.
    cached_micros: AtomicU64,
}

impl LatencyWindow {
    /// How many buckets the window slides by.
    pub(crate) const BUCKETS: usize = 5;

    /// A window over the last `length_nanos` (at least
    /// [`BUCKETS`](Self::BUCKETS) nanoseconds).
    pub(crate) fn new(length_nanos: u64) -> Self {
        Self {
            window: TimeWindow::new(Self::BUCKETS, (length_nanos / Self::BUCKETS as u64).max(1)),
            cached_in: AtomicU64::new(0),
            cached_micros: AtomicU64::new(0),
        }
    }

    /// Records one latency, ended at `at_nanos`.
    #[inline]
    pub(crate) fn record(&self, latency: Duration, at_nanos: u64) {
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.window.add_one(class_of(micros), at_nanos);
    }

    /// The latency under which a share `quantile` (in (0, 1)) of the
    /// window's entries fall, rounded up to its class's upper edge; `None`
    /// while the window holds fewer than `min_entries`.
    ///
    /// Read at most once per bucket width: within one, the reading of the
    /// first caller is reused (entries recorded since are seen at the next
    /// bucket). Callers that race at a bucket's start may each read the
    /// window; they read the same thing but for entries recorded in
    /// between.
    pub(crate) fn quantile(
        &self,
        quantile: f64,
        min_entries: u64,
        now_nanos: u64,
    ) -> Option<Duration> {
        let interval = self.window.interval_of(now_nanos);
        let micros = if self.cached_in.load(Acquire) == interval {
            self.cached_micros.load(Relaxed)
        } else {
            let micros = self.read(quantile, min_entries, now_nanos);
            self.cached_micros.store(micros, Relaxed);
            self.cached_in.store(interval, Release);
            micros
        };
        (micros > 0).then(|| Duration::from_micros(micros))
    }

    /// [`quantile`](Self::quantile), read from the window: 0 for too few
    /// entries.
    fn read(&self, quantile: f64, min_entries: u64, now_nanos: u64) -> u64 {
        let counts = self.window.totals(now_nanos);
        let entries: u64 = counts.iter().sum();
        if entries == 0 || entries < min_entries {
            return 0;
        }
        // The rank of the entry at the quantile, from 1: the smallest class
        // with at least that many entries at or below it holds it.
        let rank = ((quantile * entries as f64).ceil() as u64).clamp(1, entries);
        let mut seen = 0;
        for (class, count) in counts.iter().enumerate() {
            seen += count;
            if seen >= rank {
                return upper_edge(class);
            }
        }
        unreachable!("the rank is at most the entries, summed from these counts")
    }
}

#[cfg(all(test, not(palisade_loom)))]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn classes_cover_the_range_in_order() {
        assert_eq!(CLASSES, 208);
        assert_eq!(class_of(0), 0);
        assert_eq!(class_of(7), 7);
        assert_eq!(class_of(8), 8);
        assert_eq!(upper_edge(8), 9);
        assert_eq!(class_of(1000), 63);
        assert_eq!(upper_edge(63), 1024);
        assert_eq!(
            class_of(1 << 28),
            CLASSES - 1,
            "past the top: the last class"
        );
        assert_eq!(class_of(u64::MAX), CLASSES - 1);
        assert_eq!(upper_edge(CLASSES - 1), 1 << 28);
        let mut last = 0;
        for class in 0..CLASSES {
            assert!(upper_edge(class) > last, "class {class}");
            last = upper_edge(class);
        }
    }

    proptest! {
        /// A latency's class holds it: at or above the class below's edge,
        /// under its own, which is at most 12.5% above it.
        #[test]
        fn a_latency_is_below_its_class_edge_by_at_most_an_eighth(micros in 0u64..(1 << 28)) {
            let class = class_of(micros);
            prop_assert!(micros < upper_edge(class));
            if class > 0 {
                prop_assert!(micros >= upper_edge(class - 1));
            }
            prop_assert!(upper_edge(class) - micros <= micros / 8 + 1);
        }

        /// The quantile read back is the class edge of the entry at that
        /// rank among those recorded.
        #[test]
        fn quantiles_match_a_sorted_list(
            latencies in proptest::collection::vec(0u64..10_000_000, 1..300),
            quantile in 0.01f64..0.999,
        ) {
            let window = LatencyWindow::new(1_000_000_000);
            for &micros in &latencies {
                window.record(Duration::from_micros(micros), 0);
            }
            let mut sorted = latencies.clone();
            sorted.sort_unstable();
            let rank = ((quantile * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
            let expected = upper_edge(class_of(sorted[rank - 1]));
            prop_assert_eq!(window.read(quantile, 1, 0), expected);
        }
    }

    /// Four threads record at once, and one reads the quantile while they
    /// do: no entry is lost (every one lands in one bucket, none left the
    /// window), and once they are done the quantile is the sorted list's.
    #[test]
    fn threads_recording_at_once_lose_no_entry() {
        let window = std::sync::Arc::new(LatencyWindow::new(1_000_000_000));
        let threads: Vec<_> = (0..4u64)
            .map(|t| {
                let window = window.clone();
                std::thread::spawn(move || {
                    for i in 0..10_000u64 {
                        // Micros from 0 to ~40 ms, spread by thread.
                        window.record(Duration::from_micros((i * 4 + t) % 40_000), i % 1_000);
                        if i % 1_000 == 0 {
                            let _ = window.quantile(0.99, 1, i % 1_000);
                        }
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        let counts = window.window.totals(999);
        assert_eq!(counts.iter().sum::<u64>(), 40_000);
        let mut all: Vec<u64> = (0..4u64)
            .flat_map(|t| (0..10_000u64).map(move |i| (i * 4 + t) % 40_000))
            .collect();
        all.sort_unstable();
        let rank = (0.99f64 * all.len() as f64).ceil() as usize;
        assert_eq!(
            window.read(0.99, 1, 999),
            upper_edge(class_of(all[rank - 1]))
        );
    }

    #[test]
    fn too_few_entries_read_as_none_and_old_ones_leave() {
        let second = 1_000_000_000;
        let window = LatencyWindow::new(10 * second);
        for _ in 0..9 {
            window.record(Duration::from_millis(20), 0);
        }
        assert_eq!(window.quantile(0.9, 10, 0), None);
        window.record(Duration::from_millis(20), 0);
        // Cached for the bucket: the tenth entry is seen at the next one.
        assert_eq!(window.quantile(0.9, 10, 1), None);
        let edge = Duration::from_micros(upper_edge(class_of(20_000)));
        assert_eq!(window.quantile(0.9, 10, 2 * second), Some(edge));
        assert!(edge >= Duration::from_millis(20) && edge <= Duration::from_millis(23));
        // Ten seconds on, the entries have left the window.
        assert_eq!(window.quantile(0.9, 10, 11 * second), None);
    }
}
