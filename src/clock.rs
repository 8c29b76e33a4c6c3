//! The one clock, tokio's, so that tests run on paused time; and the one
//! time unit of the lock-free parts.
//!
//! Each layer that needs the start of a call reads the clock at its own
//! `call` ([`call_time`]). An earlier version shared one reading down any
//! chain of layers through a thread-local; a user's service between two
//! layers that took time in its `call` then lent the inner layer an instant
//! from before it (a deadline shortened by whatever ran in between), so
//! that sharing was dropped. The preset shares a reading again, where it
//! knows nothing but its own parts runs: it [`lend`]s one for the length
//! of its own `call`, read by the first part that asks, and stops lending
//! ([`unlend`]) before it calls the service it wraps, so that the user's
//! code, and any layer inside it, reads the clock itself.
//!
//! The breaker's state, the windows and the budget keep instants in
//! atomics, as `u64` nanoseconds since an [`Epoch`] of their own. A `u64`
//! holds 584 years of nanoseconds: an instant or a duration beyond that
//! saturates at `u64::MAX` (never reached by a process; the builders refuse
//! longer durations, see `config::duration`), and an instant before the
//! epoch reads as 0.

use std::cell::Cell;
use std::time::Duration;

use tokio::time::Instant;

/// Now, on tokio's clock.
#[inline]
pub(crate) fn now() -> Instant {
    Instant::now()
}

thread_local! {
    /// Whether this thread's `call`s are lent a reading: set by a preset
    /// for the length of its `call`. Apart from the reading itself, so that
    /// a layer outside any preset pays one load of a flag.
    static LENDING: Cell<bool> = const { Cell::new(false) };
    /// The lent reading, once the first part asked for it.
    static LENT: Cell<Option<Instant>> = const { Cell::new(None) };
}

/// The start of a call being made now, for a layer's `call`: the reading a
/// preset lends its parts while it calls them, else the clock.
#[inline]
pub(crate) fn call_time() -> Instant {
    if LENDING.get() { lent() } else { now() }
}

/// The lent reading, read now if no part asked for it yet.
#[inline(never)]
fn lent() -> Instant {
    LENT.get().unwrap_or_else(|| {
        let at = now();
        LENT.set(Some(at));
        at
    })
}

/// Lends the `call`s made on this thread, until the guard drops, one
/// reading of the clock, taken when first asked for.
#[inline]
pub(crate) fn lend() -> Lending {
    Lending {
        lending: LENDING.replace(true),
        lent: LENT.replace(None),
    }
}

/// Lends nothing to the `call`s made on this thread until the guard drops:
/// each reads the clock.
#[inline]
pub(crate) fn unlend() -> Lending {
    Lending {
        lending: LENDING.replace(false),
        lent: LENT.get(),
    }
}

/// Puts back, when dropped (a panic included), what was lent before.
#[must_use]
pub(crate) struct Lending {
    lending: bool,
    lent: Option<Instant>,
}

impl Drop for Lending {
    #[inline]
    fn drop(&mut self) {
        LENDING.set(self.lending);
        LENT.set(self.lent);
    }
}

/// The instant a lock-free part counts its nanoseconds from.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Epoch(Instant);

impl Epoch {
    /// An epoch at the present instant.
    pub(crate) fn now() -> Self {
        Self(now())
    }

    /// `at`, in nanoseconds since the epoch.
    #[inline]
    pub(crate) fn nanos_at(&self, at: Instant) -> u64 {
        nanos(at.saturating_duration_since(self.0))
    }

    /// The instant `nanos` after the epoch.
    pub(crate) fn instant_at(&self, nanos: u64) -> Instant {
        self.0 + Duration::from_nanos(nanos)
    }

    /// The instant `nanos` after the epoch, if an `Instant` can hold it.
    /// (Only the retry budget's per-thread batches ask, which the loom
    /// build does without.)
    #[cfg(not(palisade_loom))]
    pub(crate) fn checked_instant_at(&self, nanos: u64) -> Option<Instant> {
        self.0.checked_add(Duration::from_nanos(nanos))
    }

    /// Now, in nanoseconds since the epoch.
    #[inline]
    pub(crate) fn nanos_now(&self) -> u64 {
        self.nanos_at(now())
    }
}

/// A duration in nanoseconds, saturating past 584 years.
#[inline]
pub(crate) fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_lent_reading_is_taken_once_and_given_back() {
        let start = now();
        let lending = lend();
        tokio::time::advance(Duration::from_millis(5)).await;
        let first = call_time();
        assert_eq!(first, start + Duration::from_millis(5), "read when asked");
        tokio::time::advance(Duration::from_millis(5)).await;
        assert_eq!(call_time(), first, "then lent as it was");
        {
            let _own = unlend();
            assert_eq!(call_time(), now(), "not lent below the preset");
            {
                let _nested = lend();
                tokio::time::advance(Duration::from_millis(1)).await;
                assert_eq!(call_time(), now(), "a nested preset reads its own");
            }
            tokio::time::advance(Duration::from_millis(1)).await;
            assert_eq!(call_time(), now());
        }
        assert_eq!(call_time(), first, "given back as it was");
        drop(lending);
        assert_eq!(call_time(), now(), "nothing lent after the preset's call");
    }

    #[tokio::test(start_paused = true)]
    async fn nanoseconds_count_from_the_epoch_and_saturate() {
        let epoch = Epoch::now();
        let start = now();
        tokio::time::advance(Duration::from_millis(3)).await;
        assert_eq!(epoch.nanos_now(), 3_000_000);
        assert_eq!(epoch.nanos_at(start), 0);
        let before = start.checked_sub(Duration::from_secs(1));
        if let Some(before) = before {
            assert_eq!(epoch.nanos_at(before), 0, "before the epoch reads as 0");
        }
        assert_eq!(nanos(Duration::from_secs(2)), 2_000_000_000);
        assert_eq!(nanos(Duration::MAX), u64::MAX);
    }
}
