//! The last N entries.

use std::sync::atomic::Ordering::*;

use super::{Code, Lanes, deltas};
use crate::sync::{AtomicU8, AtomicU32};

/// The last `size` entries, in a ring of one byte per entry, counted in
/// `N` lanes (at most 8: one bit of the byte each).
#[derive(Debug)]
pub(crate) struct CountWindow<const N: usize> {
    slots: Box<[AtomicU8]>,
    /// Counts entries, wrapping at 2^32. Where 2^32 is not a multiple of
    /// the window size, the wrap reuses one slot early, once in four
    /// billion entries: one entry leaves the window one entry too soon.
    next: AtomicU32,
    /// `u64::MAX / size + 1`, for Lemire's division-free `% size`.
    modulus_magic: u64,
    totals: Lanes<N>,
}

impl<const N: usize> CountWindow<N> {
    pub(crate) fn new(size: usize) -> Self {
        const { assert!(N >= 1 && N <= 8, "one bit of a byte per lane") };
        Self {
            slots: (0..size).map(|_| AtomicU8::new(0)).collect(),
            next: AtomicU32::new(0),
            modulus_magic: (u64::MAX / size as u64).wrapping_add(1),
            totals: Lanes::default(),
        }
    }

    /// How many entries the window holds.
    pub(crate) fn size(&self) -> usize {
        self.slots.len()
    }

    /// An empty window of the same size.
    pub(crate) fn fresh(&self) -> Self {
        Self::new(self.slots.len())
    }

    /// Puts `code` in slot `index`; returns what the slot held.
    #[inline]
    fn replace(&self, index: usize, code: Code) -> Code {
        let slot = &self.slots[index];
        // The common case (an unmarked entry replacing an unmarked one)
        // needs no write. The index is this recorder's alone unless a whole
        // window of entries raced past it, so the load-then-skip cannot
        // hide another write.
        let seen = slot.load(Relaxed);
        if seen == code {
            return seen;
        }
        let old = slot.swap(code, Relaxed);
        if old != code {
            let (new, gone) = (deltas::<N>(code), deltas::<N>(old));
            self.totals
                .add(std::array::from_fn(|lane| new[lane] - gone[lane]));
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

    /// Records an entry of `code` (see [`code`](super::code)), pushing the
    /// oldest out. Returns whether a lane's share of the entries, or the
    /// number of entries, may have gone up: `false` only when an unmarked
    /// entry replaced an unmarked one.
    #[inline]
    pub(crate) fn record(&self, code: Code) -> bool {
        let index = self.slot_of(self.next.fetch_add(1, Relaxed));
        let old = self.replace(index, code);
        code != 1 || old & 1 == 0
    }

    /// The lanes' totals over the window.
    pub(crate) fn totals(&self) -> [u64; N] {
        self.totals.read()
    }

    /// Empties the window.
    pub(crate) fn clear(&self) {
        for index in 0..self.slots.len() {
            let _ = self.replace(index, 0);
        }
        self.next.store(0, Relaxed);
    }
}

#[cfg(all(test, not(palisade_loom)))]
mod tests {
    use super::super::code;
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn division_free_modulus_is_exact() {
        for size in [1usize, 2, 3, 7, 10, 100, 999, 65_536, 1_000_000] {
            let w = CountWindow::<1>::new(size);
            for n in (0..5000u32).chain(u32::MAX - 5000..=u32::MAX) {
                assert_eq!(w.slot_of(n), n as usize % size, "{n} % {size}");
            }
        }
    }

    proptest! {
        #[test]
        fn counts_the_last_entries_in_every_lane(
            size in 1usize..50,
            marks in proptest::collection::vec(0u8..8, 0..300),
            clear_at in proptest::option::of(0usize..300),
        ) {
            let window = CountWindow::<4>::new(size);
            let mut model: Vec<u8> = Vec::new();
            for (i, m) in marks.iter().enumerate() {
                if clear_at == Some(i) {
                    window.clear();
                    model.clear();
                }
                window.record(code(*m));
                model.push(*m);
                let start = model.len().saturating_sub(size);
                let last = &model[start..];
                let expected: [u64; 4] = std::array::from_fn(|lane| match lane {
                    0 => last.len() as u64,
                    _ => last.iter().filter(|m| *m >> (lane - 1) & 1 == 1).count() as u64,
                });
                prop_assert_eq!(window.totals(), expected);
            }
        }
    }

    #[test]
    fn concurrent_recorders_leave_exact_totals() {
        let window = std::sync::Arc::new(CountWindow::<3>::new(64));
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let window = window.clone();
                std::thread::spawn(move || {
                    for i in 0..10_000u32 {
                        let marks = u8::from((i + t) % 3 == 0) | u8::from(i % 5 == 0) << 1;
                        window.record(code(marks));
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let totals = window.totals();
        assert_eq!(totals[0], 64);
        let recount = window.slots.iter().fold([0u64; 3], |mut t, s| {
            let entry = deltas::<3>(s.load(Relaxed));
            for lane in 0..3 {
                t[lane] += entry[lane] as u64;
            }
            t
        });
        assert_eq!(totals, recount);
    }
}
