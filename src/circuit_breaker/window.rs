//! The sliding windows a breaker judges from: the last N calls, or the
//! calls of the last T, in three lanes of the ground floor's
//! [windows](crate::window): calls, failures and slow calls.

use crate::window::{self, CountWindow, TimeWindow};

/// What the window holds for one call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Sample {
    pub(crate) failure: bool,
    pub(crate) slow: bool,
}

impl Sample {
    #[inline]
    fn code(self) -> window::Code {
        window::code(u8::from(self.failure) | u8::from(self.slow) << 1)
    }
}

/// Running totals over the window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Totals {
    pub(crate) calls: u64,
    pub(crate) failures: u64,
    pub(crate) slow: u64,
}

impl Totals {
    /// Reads the lanes; a failure or slow count racing ahead of its call's
    /// count (one call half-applied) is held to the number of calls.
    fn of([calls, failures, slow]: [u64; LANES]) -> Self {
        Self {
            calls,
            failures: failures.min(calls),
            slow: slow.min(calls),
        }
    }
}

/// Calls, failures, slow calls.
const LANES: usize = 3;

/// The breaker's window, of either kind.
#[derive(Debug)]
pub(crate) enum Window {
    Count(CountWindow<LANES>),
    Time(TimeWindow<LANES>),
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
            Window::Count(w) => w.record(sample.code()),
            Window::Time(w) => {
                // Calls leaving a time window can raise a rate: always judge.
                w.record(sample.code(), now_nanos);
                true
            }
        }
    }

    /// The totals over the window ending at `now_nanos` (ignored by a count
    /// window).
    pub(crate) fn totals(&self, now_nanos: u64) -> Totals {
        Totals::of(match self {
            Window::Count(w) => w.totals(),
            Window::Time(w) => w.totals(now_nanos),
        })
    }

    pub(crate) fn clear(&self) {
        match self {
            Window::Count(w) => w.clear(),
            Window::Time(w) => w.clear(),
        }
    }

    /// An empty window of the same kind and size.
    /// Whether `other` is a window of the same kind and size: the one
    /// thing a breaker retuned under traffic cannot change.
    pub(crate) fn same_shape(&self, other: &Window) -> bool {
        match (self, other) {
            (Window::Count(a), Window::Count(b)) => a.size() == b.size(),
            (Window::Time(a), Window::Time(b)) => {
                a.width_nanos() == b.width_nanos() && a.length_nanos() == b.length_nanos()
            }
            _ => false,
        }
    }

    pub(crate) fn fresh(&self) -> Self {
        match self {
            Window::Count(w) => Window::Count(w.fresh()),
            Window::Time(w) => Window::Time(w.fresh()),
        }
    }
}

#[cfg(all(test, not(palisade_loom)))]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample(failure: bool, slow: bool) -> Sample {
        Sample { failure, slow }
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
}
