//! The words the breaker's lock-free parts agree through: the state word
//! (kind and generation), the gate that keeps a stale outcome out of a
//! fresh window, and the half-open probes' bookkeeping.

use std::sync::atomic::Ordering::*;

use super::CircuitState;
use crate::sync::AtomicU64;

/// The state word: the kind in the low 3 bits, the generation above.
/// Every transition increments the generation, so a word names one stay in
/// one state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct StateWord(pub(super) u64);

impl StateWord {
    pub(super) const KIND_BITS: u32 = 3;
    pub(super) const KIND_MASK: u64 = (1 << Self::KIND_BITS) - 1;
    /// The kinds whose calls are admitted without further ado.
    pub(super) const ADMIT_ALL: u64 = 1 << CircuitState::Closed as u64
        | 1 << CircuitState::MetricsOnly as u64
        | 1 << CircuitState::Disabled as u64;
    /// The states by number, padded to eight (never stored) so that the
    /// lookup needs no bounds check.
    pub(super) const STATES: [CircuitState; 8] = {
        let mut states = [CircuitState::ForcedOpen; 8];
        let mut n = 0;
        while n < CircuitState::ALL.len() {
            states[n] = CircuitState::ALL[n];
            n += 1;
        }
        states
    };

    #[inline]
    pub(super) fn new(state: CircuitState, generation: u64) -> Self {
        StateWord(generation << Self::KIND_BITS | state as u64)
    }

    #[inline]
    pub(super) fn is(self, state: CircuitState) -> bool {
        self.0 & Self::KIND_MASK == state as u64
    }

    #[inline]
    pub(super) fn admits_all(self) -> bool {
        Self::ADMIT_ALL & (1 << (self.0 & Self::KIND_MASK)) != 0
    }

    #[inline]
    pub(crate) fn state(self) -> CircuitState {
        Self::STATES[(self.0 & Self::KIND_MASK) as usize]
    }

    #[inline]
    pub(super) fn generation(self) -> u64 {
        self.0 >> Self::KIND_BITS
    }
}

/// Half-open probe bookkeeping, for one half-open stay, named by its full
/// generation: a probe of an earlier stay, given back or finished late,
/// cannot touch a later one. Behind a lock: it is used only while half-open,
/// never on the closed path. (An atomic word with a shorter generation tag
/// was tried: its tag repeats, and a late probe of a stay 2^24 transitions
/// back freed the current stay's permit.)
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Probes {
    pub(super) generation: u64,
    pub(super) admitted: u32,
    pub(super) finished: u32,
    pub(super) failed: u32,
    pub(super) slow: u32,
}

impl Probes {
    pub(super) fn fresh(word: StateWord) -> Self {
        Probes {
            generation: word.generation(),
            ..Probes::default()
        }
    }

    pub(super) fn belongs_to(&self, word: StateWord) -> bool {
        self.generation == word.generation()
    }
}

/// Who may write to the window: the generation it belongs to, whether it
/// is closed to writers, and how many are writing, in one word. A
/// recorder enters only if the gate names its generation and is open; a
/// transition closes the gate, waits for the writers inside to leave,
/// clears what must be cleared, then opens the gate for the new generation
/// before it publishes the new state. So no outcome of an earlier state
/// ever lands in a later state's window. One word, changed only by
/// read-modify-writes: every thread sees its changes in one order, which
/// needs no `SeqCst` (and is what loom checks).
#[derive(Debug)]
pub(super) struct Gate(pub(super) AtomicU64);

impl Gate {
    pub(super) const WRITERS: u64 = (1 << 23) - 1;
    pub(super) const CLOSED: u64 = 1 << 23;
    pub(super) const GENERATION_SHIFT: u32 = 24;

    pub(super) fn tag(generation: u64) -> u64 {
        // 40 bits of the generation: a recorder would have to outlive 2^40
        // transitions to be mistaken for a current one.
        (generation << Self::GENERATION_SHIFT) & !(Self::WRITERS | Self::CLOSED)
    }

    pub(super) fn new() -> Self {
        Gate(AtomicU64::new(Self::tag(0)))
    }

    /// Enters as a writer of `generation`, if that is the window's.
    #[inline]
    pub(super) fn enter(&self, generation: u64) -> bool {
        let open = Self::tag(generation);
        let mut current = self.0.load(Acquire);
        loop {
            if current & !Self::WRITERS != open {
                return false;
            }
            match self
                .0
                .compare_exchange_weak(current, current + 1, Acquire, Acquire)
            {
                Ok(_) => return true,
                Err(actual) => current = actual,
            }
        }
    }

    /// Leaves, after a successful `enter`. The gate cannot have moved on:
    /// a transition waits for every writer before it does.
    #[inline]
    pub(super) fn leave(&self) {
        self.0.fetch_sub(1, Release);
    }

    /// Closes the gate and waits for the writers inside. Only transitions
    /// call it, one at a time.
    pub(super) fn close_and_drain(&self) {
        let mut current = self.0.fetch_or(Self::CLOSED, AcqRel) | Self::CLOSED;
        while current & Self::WRITERS != 0 {
            crate::sync::yield_now();
            current = self.0.load(Acquire);
        }
    }

    pub(super) fn open(&self, generation: u64) {
        self.0.store(Self::tag(generation), Release);
    }
}
