//! Sliding windows over recent entries: the last N entries
//! ([`CountWindow`]), or the entries of the last T ([`TimeWindow`]). Both
//! are lock-free and O(1) per entry: what leaves the window is subtracted
//! from running totals, never re-summed.
//!
//! A window counts in `N` lanes whose meaning is its user's: lane 0 counts
//! entries, and lane `i` the entries that bear mark `i`. The breaker's
//! lanes are calls, failures and slow calls; the retry budget's, deposits
//! (one window) and withdrawals (another); the [`LatencyWindow`]'s, latency
//! classes (a sliding histogram, read by the hedge for its delay).
//!
//! Under concurrency the totals are exact once every recorder has finished;
//! a reader racing a recorder may see one entry half-applied (an entry
//! counted before its mark is), which moves a rate by one entry at most.
//! At a time-window bucket boundary, an entry racing the bucket's recycling
//! may be dropped from the counts; it is never counted twice.

mod count;
mod latency;
mod time;

pub(crate) use self::count::CountWindow;
pub(crate) use self::latency::LatencyWindow;
pub(crate) use self::time::TimeWindow;

use std::sync::atomic::Ordering::*;

use crate::sync::AtomicU64;

/// One entry's lanes, as a byte: bit `i` set means the entry counts in
/// lane `i`. Bit 0 (lane 0, "an entry") is set for every entry; a byte of
/// 0 is no entry.
pub(crate) type Code = u8;

/// The code of an entry bearing the marks `marks` (bit `j` of `marks` is
/// mark `j + 1`).
#[inline]
pub(crate) const fn code(marks: u8) -> Code {
    1 | marks << 1
}

/// What an entry of `code` adds to each lane.
#[inline]
fn deltas<const N: usize>(code: Code) -> [i64; N] {
    std::array::from_fn(|lane| i64::from(code >> lane & 1))
}

/// Running counters, one per lane. They may dip below zero for a moment
/// while racing recorders and clearers settle, and read as zero then.
#[derive(Debug)]
struct Lanes<const N: usize>([AtomicU64; N]);

impl<const N: usize> Default for Lanes<N> {
    fn default() -> Self {
        Self(std::array::from_fn(|_| AtomicU64::new(0)))
    }
}

impl<const N: usize> Lanes<N> {
    #[inline]
    fn add(&self, deltas: [i64; N]) {
        for (lane, delta) in self.0.iter().zip(deltas) {
            if delta != 0 {
                lane.fetch_add(delta as u64, Relaxed);
            }
        }
    }

    fn read(&self) -> [u64; N] {
        std::array::from_fn(|lane| (self.0[lane].load(Relaxed) as i64).max(0) as u64)
    }

    /// Empties the lanes; returns what they held, negated, ready to be
    /// added to the totals.
    fn take(&self) -> [i64; N] {
        std::array::from_fn(|lane| -(self.0[lane].swap(0, Relaxed) as i64))
    }
}
