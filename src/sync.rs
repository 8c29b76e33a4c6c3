//! The atomics and locks of the lock-free parts (the breaker's state and
//! window, the bulkhead's semaphore). Under `--cfg palisade_loom` they are
//! loom's, so that loom's model checker explores every interleaving of the
//! `loom_` tests (see .ci/run); in every normal build they are std's.

#[cfg(palisade_loom)]
pub(crate) use loom::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicU64};
#[cfg(palisade_loom)]
pub(crate) use loom::sync::{Arc, Mutex, MutexGuard};
#[cfg(not(palisade_loom))]
pub(crate) use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicU64};
#[cfg(not(palisade_loom))]
pub(crate) use std::sync::{Arc, Mutex, MutexGuard};

/// Lets other threads run while this one waits for them (a spin loop's
/// pause; loom needs it to explore the loop).
#[inline]
pub(crate) fn yield_now() {
    #[cfg(palisade_loom)]
    loom::thread::yield_now();
    #[cfg(not(palisade_loom))]
    std::thread::yield_now();
}
