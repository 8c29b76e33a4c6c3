//! The cap on how many breakers of one keyed set may be ejected at once
//! (Envoy's and gRPC's `max_ejection_percent`).

use std::sync::atomic::Ordering::*;

use crate::sync::AtomicUsize;

/// The breakers of one keyed set that eject themselves from a load
/// balancer while open, and how many of them may be out at once.
///
/// A breaker may be ejected while fewer than `max_percent` of the set's
/// breakers are: the test is made before the ejection, so one breaker can
/// always be ejected, whatever the percentage and however small the set
/// (gRPC's outlier detection, proposal A50; Envoy's
/// `always_eject_one_host`). A breaker that opens past the cap is not
/// ejected: it answers its calls with `CircuitOpen` as any breaker does,
/// until it closes. The cap is checked when a breaker opens; one ejected
/// earlier stays ejected until it closes, even if the set shrank since.
#[derive(Debug)]
pub(crate) struct Ejection {
    max_percent: u32,
    members: AtomicUsize,
    ejected: AtomicUsize,
}

impl Ejection {
    /// A set of no breakers, of which up to `max_percent` (1 to 100) may be
    /// ejected.
    pub(crate) fn new(max_percent: u32) -> Self {
        Self {
            max_percent,
            members: AtomicUsize::new(0),
            ejected: AtomicUsize::new(0),
        }
    }

    pub(crate) fn max_percent(&self) -> u32 {
        self.max_percent
    }

    /// A breaker joins the set.
    pub(crate) fn join(&self) {
        self.members.fetch_add(1, AcqRel);
    }

    /// A breaker leaves the set (it was dropped).
    pub(crate) fn leave(&self) {
        self.members.fetch_sub(1, AcqRel);
    }

    /// How many breakers are in the set.
    pub(crate) fn members(&self) -> usize {
        self.members.load(Acquire)
    }

    /// How many of them are ejected.
    pub(crate) fn ejected(&self) -> usize {
        self.ejected.load(Acquire)
    }

    /// Ejects one more breaker, if the set is below its cap.
    pub(crate) fn try_eject(&self) -> bool {
        let max_percent = self.max_percent as usize;
        self.ejected
            .fetch_update(AcqRel, Acquire, |ejected| {
                let members = self.members.load(Acquire).max(1);
                (ejected.saturating_mul(100) < max_percent.saturating_mul(members))
                    .then_some(ejected + 1)
            })
            .is_ok()
    }

    /// An ejected breaker is back (it closed, or was dropped).
    pub(crate) fn restore(&self) {
        self.ejected.fetch_sub(1, AcqRel);
    }
}

#[cfg(all(test, not(palisade_loom)))]
mod tests {
    use super::*;

    fn set(max_percent: u32, members: usize) -> Ejection {
        let set = Ejection::new(max_percent);
        for _ in 0..members {
            set.join();
        }
        set
    }

    fn ejectable(max_percent: u32, members: usize) -> usize {
        let set = set(max_percent, members);
        let mut n = 0;
        while set.try_eject() {
            n += 1;
            assert!(n <= members, "never more than the set");
        }
        n
    }

    #[test]
    fn one_can_always_be_ejected() {
        assert_eq!(ejectable(10, 1), 1);
        assert_eq!(ejectable(10, 4), 1);
        assert_eq!(ejectable(1, 100), 1);
    }

    #[test]
    fn the_cap_is_checked_before_each_ejection() {
        // 0 < 50% of 4, 25% < 50%, 50% is not below 50%.
        assert_eq!(ejectable(50, 4), 2);
        assert_eq!(ejectable(50, 5), 3);
        assert_eq!(ejectable(10, 20), 2);
        assert_eq!(ejectable(10, 21), 3);
        assert_eq!(ejectable(100, 3), 3);
        assert_eq!(ejectable(99, 3), 3);
    }

    #[test]
    fn a_restored_breaker_makes_room() {
        let set = set(50, 4);
        assert!(set.try_eject() && set.try_eject());
        assert!(!set.try_eject());
        assert_eq!(set.ejected(), 2);
        set.restore();
        assert!(set.try_eject());
        set.leave();
        set.leave();
        assert_eq!(set.members(), 2);
        assert!(!set.try_eject(), "2 of 2 ejected");
    }
}
