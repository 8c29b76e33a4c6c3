//! Gathers finished calls' samples into windows and teaches the algorithm
//! one window at a time, without ever waiting for a lock.

use std::sync::TryLockError;
use std::sync::atomic::Ordering::*;
use std::time::Duration;

use tokio::time::Instant;

use crate::adaptive::{LimitAlgorithm, Sample};
use crate::clock::{Epoch, nanos};
use crate::sync::{AtomicU64, Mutex, MutexGuard, fence};

/// How samples are gathered before the algorithm learns from them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Windows {
    /// The shortest window.
    pub(crate) min: Duration,
    /// The longest window.
    pub(crate) max: Duration,
    /// A window closes once it holds this many samples, and not before.
    pub(crate) min_samples: u32,
}

impl Windows {
    /// Every sample on its own.
    pub(crate) const PER_SAMPLE: Windows = Windows {
        min: Duration::ZERO,
        max: Duration::ZERO,
        min_samples: 1,
    };
}

/// The samples of the open window, in atomics: their count, how many
/// failed, the sum of their RTTs, the lowest RTT, and the highest
/// in-flight count.
#[derive(Debug)]
struct Pile {
    count: AtomicU64,
    failed: AtomicU64,
    rtt_nanos: AtomicU64,
    min_rtt_nanos: AtomicU64,
    in_flight: AtomicU64,
}

impl Default for Pile {
    fn default() -> Self {
        Self {
            count: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            rtt_nanos: AtomicU64::new(0),
            min_rtt_nanos: AtomicU64::new(u64::MAX),
            in_flight: AtomicU64::new(0),
        }
    }
}

impl Pile {
    #[inline]
    fn add(&self, sample: &Sample) {
        let rtt = nanos(sample.rtt());
        self.rtt_nanos.fetch_add(rtt, SeqCst);
        // A new minimum or maximum is rare once a window is under way: a
        // load spares the read-modify-write (a compare-and-swap loop on
        // x86) in the common case.
        if rtt < self.min_rtt_nanos.load(Relaxed) {
            self.min_rtt_nanos.fetch_min(rtt, SeqCst);
        }
        let in_flight = u64::from(sample.in_flight());
        if in_flight > self.in_flight.load(Relaxed) {
            self.in_flight.fetch_max(in_flight, SeqCst);
        }
        if sample.dropped() {
            self.failed.fetch_add(1, SeqCst);
        }
        self.count.fetch_add(1, SeqCst);
    }

    fn count(&self) -> u64 {
        self.count.load(SeqCst)
    }

    /// The window's samples as one: their mean RTT, highest in-flight
    /// count, and whether any failed; and their lowest RTT. The pile is
    /// emptied. A sample added while this runs may have its RTT taken now
    /// and itself counted in the next window: the means move a little, no
    /// sample is lost.
    fn take(&self) -> Option<(Sample, Duration)> {
        let count = self.count.swap(0, SeqCst);
        if count == 0 {
            return None;
        }
        let failed = self.failed.swap(0, SeqCst);
        let rtt = self.rtt_nanos.swap(0, SeqCst) / count;
        let min_rtt = self.min_rtt_nanos.swap(u64::MAX, SeqCst).min(rtt);
        let in_flight = self.in_flight.swap(0, SeqCst);
        let window = Sample::new(
            Duration::from_nanos(rtt),
            u32::try_from(in_flight).unwrap_or(u32::MAX),
            failed > 0,
        );
        Some((window, Duration::from_nanos(min_rtt)))
    }
}

/// The algorithm, and the window it learns from next.
///
/// Every finished call adds its sample to the pile (two atomic adds, one
/// more for a failure, a new lowest RTT or a new highest in-flight count);
/// the first call to finish after the window's end takes the algorithm's
/// lock (only ever *tried*: a call that finds it taken leaves its sample
/// for the holder or the next window) and teaches it the pile as one
/// sample: concurrency-limits' `WindowedLimit`, which also updates
/// without a lock and locks only at the window's end.
#[derive(Debug)]
pub(crate) struct Learner {
    algorithm: Mutex<Box<dyn LimitAlgorithm>>,
    pile: Pile,
    windows: Windows,
    epoch: Epoch,
    /// When the open window ends, in nanoseconds since `epoch`.
    window_end: AtomicU64,
}

impl Learner {
    pub(crate) fn new(algorithm: Box<dyn LimitAlgorithm>, windows: Windows) -> Self {
        let epoch = Epoch::now();
        Self {
            algorithm: Mutex::new(algorithm),
            pile: Pile::default(),
            windows,
            window_end: AtomicU64::new(nanos(windows.min)),
            epoch,
        }
    }

    /// Adds `sample` to the window; if the window is over, teaches the
    /// algorithm and gives `apply` each new limit (one thread at a time).
    #[inline]
    pub(crate) fn learn(&self, sample: Sample, ended: Instant, apply: &impl Fn(u32)) {
        self.pile.add(&sample);
        self.close_if_over(self.epoch.nanos_at(ended), apply);
    }

    fn close_if_over(&self, now: u64, apply: &impl Fn(u32)) {
        while self.is_over(now) {
            // Orders "added, then looked at the lock" against "let go,
            // then looked at the pile" (the fence below): of a sample
            // added while the lock was held and its holder, one sees the
            // other, so no sample is left waiting behind a window that is
            // over. A call whose window is not over needs neither.
            fence(SeqCst);
            let Some(mut algorithm) = self.try_lock() else {
                return;
            };
            // Checked again under the lock: another call may have closed
            // the window since.
            if self.is_over(now)
                && let Some((window, min_rtt)) = self.pile.take()
            {
                apply(algorithm.update(&window));
                let length = (min_rtt * 2).clamp(self.windows.min, self.windows.max);
                self.window_end
                    .store(now.saturating_add(nanos(length)), SeqCst);
            }
            drop(algorithm);
            fence(SeqCst);
        }
    }

    /// Whether the window has ended and holds enough samples.
    #[inline]
    fn is_over(&self, now: u64) -> bool {
        now >= self.window_end.load(SeqCst)
            && self.pile.count() >= u64::from(self.windows.min_samples)
    }

    /// The algorithm, unless another thread has it. An algorithm that
    /// panicked in an update is used as it was left: its limit is still
    /// bounded, and a layer that stopped learning would be worse.
    fn try_lock(&self) -> Option<MutexGuard<'_, Box<dyn LimitAlgorithm>>> {
        match self.algorithm.try_lock() {
            Ok(algorithm) => Some(algorithm),
            Err(TryLockError::Poisoned(poisoned)) => Some(poisoned.into_inner()),
            Err(TryLockError::WouldBlock) => None,
        }
    }
}

#[cfg(all(test, palisade_loom))]
mod loom_tests {
    use super::*;
    use crate::sync::Arc;
    use std::sync::atomic::AtomicU32;

    /// Counts the samples and failures it is taught.
    #[derive(Debug, Default)]
    struct Counting {
        taught: Arc<std::sync::Mutex<Vec<Sample>>>,
    }

    impl LimitAlgorithm for Counting {
        fn initial_limit(&self) -> u32 {
            1
        }
        fn update(&mut self, sample: &Sample) -> u32 {
            self.taught.lock().unwrap().push(*sample);
            1
        }
    }

    /// Two calls finish at once, per sample: whichever finds the lock
    /// taken leaves its sample in the pile, and one of the two learns it
    /// before both have returned. No sample is left waiting, and the
    /// failure is learned. (Fails if `close_if_over` stops after its
    /// first attempt. The fences are for std's mutex, whose failed
    /// `try_lock` and unlock are not sequentially consistent; loom's mutex
    /// is, so this model cannot show them missing.)
    #[test]
    fn loom_no_sample_is_left_in_the_pile() {
        loom::model(|| {
            let taught = Arc::new(std::sync::Mutex::new(Vec::new()));
            let learner = Arc::new(Learner::new(
                Box::new(Counting {
                    taught: taught.clone(),
                }),
                Windows::PER_SAMPLE,
            ));
            let applied = Arc::new(AtomicU32::new(0));
            let ended = Instant::now();
            let other = {
                let (learner, applied) = (learner.clone(), applied.clone());
                loom::thread::spawn(move || {
                    learner.learn(
                        Sample::new(Duration::from_millis(5), 1, true),
                        ended,
                        &|_| {
                            applied.fetch_add(1, SeqCst);
                        },
                    );
                })
            };
            learner.learn(
                Sample::new(Duration::from_millis(3), 2, false),
                ended,
                &|_| {
                    applied.fetch_add(1, SeqCst);
                },
            );
            other.join().unwrap();
            assert_eq!(learner.pile.count(), 0, "a sample was left in the pile");
            let taught = taught.lock().unwrap();
            assert!(taught.iter().any(|s| s.dropped()), "{taught:?}");
            assert!((1..=2).contains(&taught.len()));
            assert_eq!(applied.load(SeqCst) as usize, taught.len());
        });
    }
}
