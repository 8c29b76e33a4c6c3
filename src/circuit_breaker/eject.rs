//! Ejection from a load balancer: a breaker that parks its callers'
//! `poll_ready` while it is open, so that a balancer picks another
//! endpoint, and wakes them when it may admit a call again.

use std::sync::atomic::Ordering::*;
use std::task::Waker;

use std::sync::Arc;

use crate::registry::Ejection;
use crate::sync::{AtomicBool, Mutex};

/// A breaker's part in a set of breakers that eject themselves.
#[derive(Debug)]
pub(crate) struct Eject {
    set: Arc<Ejection>,
    /// Whether this breaker holds one of the set's ejections: taken when it
    /// opens (if the set is below its cap), given back when it closes.
    ejected: AtomicBool,
    /// The tasks parked in `poll_ready`, woken at every transition and
    /// whenever a probe's permit is given back.
    waiters: Mutex<Vec<Waker>>,
}

impl Eject {
    /// Joins `set`.
    pub(crate) fn new(set: Arc<Ejection>) -> Self {
        set.join();
        Self {
            set,
            ejected: AtomicBool::new(false),
            waiters: Mutex::new(Vec::new()),
        }
    }

    /// Whether this breaker is ejected now.
    #[inline]
    pub(crate) fn is_ejected(&self) -> bool {
        self.ejected.load(Acquire)
    }

    /// The breaker enters a state that ejects (open, half-open, forced
    /// open) from one that does not: it takes an ejection if the set has
    /// room. Called under the breaker's transition lock.
    pub(crate) fn enter(&self) {
        if !self.ejected.load(Acquire) && self.set.try_eject() {
            self.ejected.store(true, Release);
        }
    }

    /// The breaker leaves the states that eject: its ejection goes back.
    /// Called under the breaker's transition lock.
    pub(crate) fn leave(&self) {
        if self.ejected.swap(false, AcqRel) {
            self.set.restore();
        }
    }

    /// Parks the task of `waker` until the next wake.
    pub(crate) fn register(&self, waker: &Waker) {
        let mut waiters = self.waiters.lock().unwrap_or_else(|p| p.into_inner());
        if !waiters.iter().any(|w| w.will_wake(waker)) {
            waiters.push(waker.clone());
        }
    }

    /// Wakes every parked task: the breaker may admit a call now, or is
    /// no longer ejected.
    pub(crate) fn wake_all(&self) {
        let waiters = std::mem::take(&mut *self.waiters.lock().unwrap_or_else(|p| p.into_inner()));
        for waker in waiters {
            waker.wake();
        }
    }
}

impl Drop for Eject {
    fn drop(&mut self) {
        self.leave();
        self.set.leave();
    }
}
