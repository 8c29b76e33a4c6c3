//! The one clock: tokio's, so that tests run on paused time.
//!
//! Each layer that needs the start of a call reads the clock at its own
//! `call`. An earlier version shared one reading down a chain of layers
//! through a thread-local; a user's service between two layers that took
//! time in its `call` then lent the inner layer an instant from before it
//! (a deadline shortened by whatever ran in between), so the sharing was
//! dropped. A preset that knows its parts are adjacent may share a reading
//! again, without a thread-local.

use tokio::time::Instant;

/// Now, on tokio's clock.
#[inline]
pub(crate) fn now() -> Instant {
    Instant::now()
}
