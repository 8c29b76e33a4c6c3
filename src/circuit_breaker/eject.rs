//! Ejection from a load balancer: a breaker that parks its callers'
//! `poll_ready` while it is open, so that a balancer picks another
//! endpoint, and wakes them when it may admit a call again.

use std::sync::atomic::Ordering::*;
use std::task::Waker;

use std::sync::Arc;

use super::CircuitState;
use crate::registry::Ejection;
use crate::sync::{AtomicBool, Mutex};

/// A breaker's part in a set of breakers that eject themselves.
#[derive(Debug)]
pub(crate) struct Eject {
    set: Arc<Ejection>,
    /// Whether this breaker holds one of the set's ejections: taken when it
    /// opens (if the set is below its cap), given back when the open state
    /// ends (the open wait is over: it is back in service, half-open; or
    /// it was closed by hand).
    ejected: AtomicBool,
    /// Whether this breaker's half-open stay follows an ejection: a caller
    /// that finds every probe out then waits for one to finish, rather
    /// than being refused (the balancer picks another endpoint meanwhile).
    probing: AtomicBool,
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
            probing: AtomicBool::new(false),
            waiters: Mutex::new(Vec::new()),
        }
    }

    /// Whether this breaker is ejected now.
    #[inline]
    pub(crate) fn is_ejected(&self) -> bool {
        self.ejected.load(Acquire)
    }

    /// Whether a half-open caller that finds every probe out waits.
    #[inline]
    pub(crate) fn waits_for_probes(&self) -> bool {
        self.probing.load(Acquire)
    }

    /// The breaker moved from `from` to `to`: it takes an ejection when it
    /// opens (if the set has room, checked at each opening, as Envoy
    /// checks at each ejection), and gives it back when the open state
    /// ends. Called under the breaker's transition lock.
    pub(crate) fn moved(&self, from: CircuitState, to: CircuitState) {
        // (`probing` is read only while half-open, which is entered only
        // from open: it is set there, and needs no reset elsewhere.)
        let open = |state| matches!(state, CircuitState::Open | CircuitState::ForcedOpen);
        match (open(from), open(to)) {
            // Ejected only if the set has room (taken by `try_eject`).
            (false, true) if !self.ejected.load(Acquire) && self.set.try_eject() => {
                self.ejected.store(true, Release);
            }
            (true, false) => {
                let was = self.give_back();
                self.probing
                    .store(was && to == CircuitState::HalfOpen, Release);
            }
            _ => {}
        }
    }

    /// Gives the ejection back, if this breaker holds one.
    fn give_back(&self) -> bool {
        let was = self.ejected.swap(false, AcqRel);
        if was {
            self.set.restore();
        }
        was
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
        self.give_back();
        self.set.leave();
    }
}
