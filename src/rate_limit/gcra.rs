//! The generic cell rate algorithm, with its whole state in one atomic.
//!
//! Governor's design, written anew: the state is the theoretical arrival
//! time (TAT), the instant at which the limiter would be empty again, in
//! nanoseconds since the limiter's [`Epoch`](crate::clock::Epoch). Each
//! call of cost `n` moves it to `max(TAT, now) + n·T` (T, the emission
//! interval, is `per / count`), and is admitted if the new TAT is at most
//! `burst·T` ahead of now: the usual `TAT ≤ now + τ` with the tolerance
//! τ = T·(burst − 1), checked after the call's cells are added (governor
//! keeps its TAT one T later and checks against T·burst, which is the same
//! test). Over any span of time `t` from an empty start, at most
//! `burst + t / T` cells are admitted.
//!
//! A call that may wait reserves its cells by moving the TAT all the same,
//! and is due when its cells conform: `new TAT − burst·T`. Each reservation
//! is due later than the one before it, so waiters are served in the order
//! they reserved without a queue.

use std::sync::atomic::Ordering;

use crate::sync::AtomicU64;

/// A decision on one call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Decision {
    /// Admitted: its cells are reserved, and it may go in `wait`
    /// nanoseconds (0: at once). `tat` is the TAT its reservation set.
    Admit { wait: u64, tat: u64 },
    /// Not admitted, nothing reserved: its cells conform in `retry_after`
    /// nanoseconds.
    Reject { retry_after: u64 },
    /// Its cost is above the burst: it can never be admitted.
    Never,
}

/// The limiter's state and its fixed parameters.
#[derive(Debug)]
pub(crate) struct Gcra {
    /// Not padded to a cache line of its own: every call writes it, and
    /// reads the parameters beside it, so one line serves both; and a
    /// keyed layer holds one limiter per key, where padding would triple
    /// the bytes of each and the lines a call touches.
    tat: AtomicU64,
    /// T, in nanoseconds (at least 1).
    interval: u64,
    /// burst·T, in nanoseconds: how far ahead of now the TAT may be.
    capacity: u64,
    burst: u32,
}

impl Gcra {
    /// A limiter of one cell per `interval` nanoseconds, `burst` cells at
    /// once; `interval · burst` must fit a `u64` (the builder checks).
    pub(crate) fn new(interval: u64, burst: u32) -> Self {
        Self {
            tat: AtomicU64::new(0),
            interval,
            capacity: interval * u64::from(burst),
            burst,
        }
    }

    /// The most cells admitted at once.
    pub(crate) fn burst(&self) -> u32 {
        self.burst
    }

    /// The emission interval T, in nanoseconds.
    pub(crate) fn interval(&self) -> u64 {
        self.interval
    }

    /// The cells that would be admitted at once at `now`, and whether the
    /// limiter is as it was new (every cell free: its TAT is not ahead).
    pub(crate) fn available(&self, now: u64) -> (u32, bool) {
        let tat = self.tat.load(Ordering::Acquire);
        let ahead = tat.saturating_sub(now);
        // Cells of the burst not yet freed: the TAT's lead, in whole
        // intervals, rounded up.
        let taken = ahead.div_ceil(self.interval).min(u64::from(self.burst)) as u32;
        (self.burst - taken, ahead == 0)
    }

    /// The nanoseconds `cost` cells take.
    #[inline]
    pub(crate) fn weight(&self, cost: u32) -> u64 {
        self.interval.saturating_mul(u64::from(cost))
    }

    /// Decides on a call of `cost` cells at `now`, reserving its cells if
    /// it is admitted: at once if they conform, or in at most `max_wait`
    /// nanoseconds (0 in the rejecting mode).
    #[inline]
    pub(crate) fn acquire(&self, now: u64, cost: u32, max_wait: u64) -> Decision {
        if cost > self.burst {
            return Decision::Never;
        }
        let weight = self.weight(cost);
        let mut tat = self.tat.load(Ordering::Acquire);
        loop {
            let new = tat.max(now).saturating_add(weight);
            let wait = new.saturating_sub(self.capacity).saturating_sub(now);
            if wait > max_wait {
                return Decision::Reject { retry_after: wait };
            }
            // The decision holds only if nobody moved the TAT since it was
            // read: a plain store here would let two calls both take the
            // last cell.
            match self
                .tat
                .compare_exchange_weak(tat, new, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return Decision::Admit { wait, tat: new },
                Err(actual) => tat = actual,
            }
        }
    }

    /// Gives back the cells of a reservation that set the TAT to `tat`, if
    /// nobody reserved after it (best effort: otherwise they stay spent,
    /// which only lowers the rate for a moment).
    pub(crate) fn give_back(&self, tat: u64, cost: u32) -> bool {
        self.tat
            .compare_exchange(
                tat,
                tat - self.weight(cost),
                Ordering::AcqRel,
                Ordering::Relaxed,
            )
            .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_one_cell_per_interval() {
        let gcra = Gcra::new(10, 3);
        for _ in 0..3 {
            assert!(matches!(
                gcra.acquire(0, 1, 0),
                Decision::Admit { wait: 0, .. }
            ));
        }
        assert_eq!(gcra.acquire(0, 1, 0), Decision::Reject { retry_after: 10 });
        assert_eq!(gcra.acquire(7, 1, 0), Decision::Reject { retry_after: 3 });
        assert!(matches!(
            gcra.acquire(10, 1, 0),
            Decision::Admit { wait: 0, .. }
        ));
        assert_eq!(gcra.acquire(10, 4, 0), Decision::Never);
        assert_eq!(gcra.acquire(10, 2, 0), Decision::Reject { retry_after: 20 });
        // Waiting: reserved in order, each due one interval after the last.
        assert_eq!(
            gcra.acquire(10, 1, 100),
            Decision::Admit { wait: 10, tat: 50 }
        );
        assert_eq!(
            gcra.acquire(10, 1, 100),
            Decision::Admit { wait: 20, tat: 60 }
        );
        assert_eq!(
            gcra.acquire(10, 1, 15),
            Decision::Reject { retry_after: 30 }
        );
        assert!(gcra.give_back(60, 1));
        assert!(
            !gcra.give_back(60, 1),
            "the TAT moved: nothing to give back"
        );
        assert_eq!(
            gcra.acquire(10, 1, 100),
            Decision::Admit { wait: 20, tat: 60 }
        );
    }

    #[test]
    fn available_cells_follow_the_tat() {
        let gcra = Gcra::new(10, 3);
        assert_eq!(gcra.available(0), (3, true));
        assert!(matches!(gcra.acquire(0, 2, 0), Decision::Admit { .. }));
        assert_eq!(gcra.available(0), (1, false));
        assert_eq!(
            gcra.available(5),
            (1, false),
            "a part-freed cell is not free"
        );
        assert_eq!(gcra.available(10), (2, false));
        assert_eq!(gcra.available(20), (3, true));
        assert_eq!(gcra.available(1000), (3, true));
    }
}

#[cfg(all(test, palisade_loom))]
mod loom_tests {
    use super::*;

    /// Two threads race for the last cell of a limiter: whatever the
    /// interleaving, exactly one gets it. (Fails with the compare-and-swap
    /// replaced by a load then a store: both read the same TAT and both
    /// admit.)
    #[test]
    fn loom_two_calls_race_for_the_last_cell_and_one_wins() {
        loom::model(|| {
            let gcra = crate::sync::Arc::new(Gcra::new(10, 2));
            assert!(matches!(gcra.acquire(0, 1, 0), Decision::Admit { .. }));
            let other = gcra.clone();
            let racer = loom::thread::spawn(move || other.acquire(0, 1, 0));
            let mine = gcra.acquire(0, 1, 0);
            let theirs = racer.join().unwrap();
            let admitted = [mine, theirs]
                .iter()
                .filter(|d| matches!(d, Decision::Admit { .. }))
                .count();
            assert_eq!(admitted, 1, "{mine:?} {theirs:?}");
            assert_eq!(gcra.tat.load(Ordering::Acquire), 20);
        });
    }
}
