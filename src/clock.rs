//! One clock read per call chain.
//!
//! Reading the clock is the dearest thing on the happy path (tens of
//! nanoseconds on some virtual machines). A stack of layers (a total and a
//! per-attempt timeout, a retry deadline) calls down through every layer
//! synchronously within one `call`, so they can all use the instant the
//! outermost of them read. The outermost sets it for the duration of its
//! inner `call`; the ones below find it. A call made later (a retry's next
//! attempt, from its future) finds none and reads the clock itself.

use std::cell::Cell;

use tokio::time::Instant;

thread_local! {
    static CALL_STARTED: Cell<Option<Instant>> = const { Cell::new(None) };
}

/// When the current call chain started: the instant an enclosing layer
/// read, or now.
#[inline]
pub(crate) fn call_started() -> (Instant, bool) {
    match CALL_STARTED.with(Cell::get) {
        Some(started) => (started, false),
        None => (Instant::now(), true),
    }
}

/// Runs `f` (an inner `call`) with `started` as the chain's start.
#[inline]
pub(crate) fn within_call<R>(started: Instant, f: impl FnOnce() -> R) -> R {
    /// Clears the instant even if `f` panics, so that a later call cannot
    /// inherit a stale start.
    struct Reset(Option<Instant>);
    impl Drop for Reset {
        fn drop(&mut self) {
            CALL_STARTED.with(|c| c.set(self.0));
        }
    }
    let _reset = Reset(CALL_STARTED.with(|c| c.replace(Some(started))));
    f()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn nested_calls_share_the_outer_instant() {
        let outer = Instant::now();
        tokio::time::advance(std::time::Duration::from_secs(1)).await;
        let inner = within_call(outer, call_started);
        assert_eq!(inner, (outer, false));
        // Outside, the clock is read afresh.
        assert_eq!(call_started(), (Instant::now(), true));
        // A panic inside does not leave the instant behind.
        let _ = std::panic::catch_unwind(|| within_call(outer, || panic!("inner")));
        assert!(call_started().1);
    }
}
