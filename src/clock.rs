//! The one clock, tokio's, so that tests run on paused time; and the one
//! time unit of the lock-free parts.
//!
//! Each layer that needs the start of a call reads the clock at its own
//! `call`. An earlier version shared one reading down a chain of layers
//! through a thread-local; a user's service between two layers that took
//! time in its `call` then lent the inner layer an instant from before it
//! (a deadline shortened by whatever ran in between), so the sharing was
//! dropped. A preset that knows its parts are adjacent may share a reading
//! again, without a thread-local.
//!
//! The breaker's state, the windows and the budget keep instants in
//! atomics, as `u64` nanoseconds since an [`Epoch`] of their own. A `u64`
//! holds 584 years of nanoseconds: an instant or a duration beyond that
//! saturates at `u64::MAX` (never reached by a process; the builders refuse
//! longer durations, see `config::duration`), and an instant before the
//! epoch reads as 0.

use std::time::Duration;

use tokio::time::Instant;

/// Now, on tokio's clock.
#[inline]
pub(crate) fn now() -> Instant {
    Instant::now()
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
