//! The atomics and locks of the lock-free parts (the breaker's state and
//! window, the semaphore, the budget), and [`CachePadded`]. Under `--cfg palisade_loom` they are
//! loom's, so that loom's model checker explores every interleaving of the
//! `loom_` tests (see .ci/run); in every normal build they are std's.

#[cfg(palisade_loom)]
pub(crate) use loom::sync::atomic::fence;
#[cfg(palisade_loom)]
pub(crate) use loom::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicU64, AtomicUsize};
#[cfg(palisade_loom)]
pub(crate) use loom::sync::{Arc, Mutex, MutexGuard};
#[cfg(not(palisade_loom))]
pub(crate) use std::sync::atomic::fence;
#[cfg(not(palisade_loom))]
pub(crate) use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicU64, AtomicUsize};
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

/// Keeps a hot atomic on a cache line of its own, so that writes to the
/// fields beside it do not evict every reader's copy of it, and its own
/// writes do not evict theirs. 128 bytes: two lines, as the adjacent-line
/// prefetcher of x86 pulls lines in pairs (crossbeam's `CachePadded` pads
/// the same on x86_64 and aarch64).
#[derive(Debug, Default)]
#[repr(align(128))]
pub(crate) struct CachePadded<T>(pub(crate) T);

impl<T> std::ops::Deref for CachePadded<T> {
    type Target = T;

    #[inline]
    fn deref(&self) -> &T {
        &self.0
    }
}
