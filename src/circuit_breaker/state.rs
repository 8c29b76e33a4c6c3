//! The breaker's state machine, shared by every clone of a layer and its
//! services. The state is one atomic word (kind and generation); the closed
//! path reads it and records into the lock-free window. A mutex serialises
//! transitions only, which are rare and never on the closed path.

use std::sync::Arc;
use std::sync::atomic::Ordering::*;

use crate::sync::{AtomicU8, AtomicU32, AtomicU64, Mutex, MutexGuard};
use std::time::Duration;

use tokio::time::Instant;

use super::config::{Config, Tuned};
use super::eject::Eject;
use super::window::{Sample, Window};
use super::word::{Gate, Probes, StateWord};
use super::{BreakerEvent, CircuitState, TransitionReason};
use crate::backoff::Delays;
use crate::classify::Outcome;
use crate::clock::{Epoch, nanos};
use crate::error::CircuitOpen;
use crate::event::Listeners;
use crate::sync::CachePadded;

/// What only transitions touch, under the transition lock.
#[derive(Debug, Default)]
struct TransitionState {
    /// The open-wait sequence of the current run of re-opens; `None` until
    /// the first open after a close.
    open_waits: Option<Delays>,
}

/// Flags for edge-triggered "rate exceeded" events.
const FAILURE_EXCEEDED: u8 = 1;
const SLOW_EXCEEDED: u8 = 2;

/// Why a call was admitted: the state word it was admitted under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Admission(pub(crate) StateWord);

impl Admission {
    #[inline]
    pub(crate) fn is_probe(self) -> bool {
        self.0.is(CircuitState::HalfOpen)
    }

    /// Whether the outcome of this call will be recorded.
    #[inline]
    pub(crate) fn records(self) -> bool {
        !self.0.is(CircuitState::Disabled)
    }
}

/// One circuit breaker.
#[derive(Debug)]
pub(crate) struct Core {
    state: CachePadded<AtomicU64>,
    pub(crate) config: Tuned,
    pub(super) window: Window,
    pub(super) consecutive_failures: AtomicU32,
    /// While open: when a probe may be admitted; while half-open: when the
    /// stay ends if every probe is still out. Nanoseconds since `epoch`.
    pub(super) open_until: AtomicU64,
    probes: Mutex<Probes>,
    pub(super) not_permitted: AtomicU64,
    exceeded: AtomicU8,
    /// Who may write to the window (see [`Gate`]). Beside the state word's
    /// line, not on it: writers change it on every call.
    gate: CachePadded<Gate>,
    transitions: Mutex<TransitionState>,
    pub(super) epoch: Epoch,
    pub(crate) listeners: Listeners,
    /// Set for a breaker that ejects itself from a load balancer while it
    /// is open.
    pub(super) eject: Option<Eject>,
}

impl Core {
    pub(crate) fn new(config: Config, window: Window, listeners: Listeners) -> Self {
        Self {
            state: CachePadded(AtomicU64::new(StateWord::new(CircuitState::Closed, 0).0)),
            config: Tuned::new(config),
            window,
            consecutive_failures: AtomicU32::new(0),
            open_until: AtomicU64::new(0),
            probes: Mutex::new(Probes::default()),
            not_permitted: AtomicU64::new(0),
            exceeded: AtomicU8::new(0),
            gate: CachePadded(Gate::new()),
            transitions: Mutex::new(TransitionState::default()),
            epoch: Epoch::now(),
            listeners,
            eject: None,
        }
    }

    /// The same breaker, ejecting itself from a load balancer while open,
    /// as one of `set`.
    pub(crate) fn ejecting(mut self, set: Arc<crate::registry::Ejection>) -> Self {
        self.eject = Some(Eject::new(set));
        self
    }

    /// A breaker with this one's settings and listeners (`listeners`, if
    /// given), an empty window, closed.
    pub(crate) fn fresh(&self, listeners: Listeners) -> Self {
        Self::new(self.config.snapshot(), self.window.fresh(), listeners)
    }

    /// Takes `other`'s thresholds and waits, keeping this breaker's state,
    /// window and counters; `false` (and nothing changed) if the two
    /// differ in what cannot change under traffic: the name, the seed,
    /// the window's kind or size. A run of re-opens starts its waits
    /// again from the new backoff.
    pub(crate) fn retune(&self, other: &Core) -> bool {
        if !self.retunable(other) {
            return false;
        }
        let mut transitions = self.transitions.lock().unwrap();
        let config = other.config.snapshot();
        if self.config.wait_backoff() != config.wait_backoff {
            transitions.open_waits = None;
        }
        self.config.retune(&config);
        true
    }

    /// Whether [`retune`](Self::retune) would take `other`'s settings:
    /// the same name, seed, and window kind and size.
    pub(crate) fn retunable(&self, other: &Core) -> bool {
        self.config.name == other.config.name
            && self.config.seed == other.config.seed
            && self.window.same_shape(&other.window)
    }

    /// Whether the breaker is as a new one: closed, with an empty window
    /// and no failure in a row.
    pub(crate) fn is_fresh(&self, now: Instant) -> bool {
        self.load().is(CircuitState::Closed)
            && self.consecutive_failures.load(Relaxed) == 0
            && self.window.totals(self.epoch.nanos_at(now)).calls == 0
    }

    /// For a breaker that ejects itself: whether a call now would be
    /// refused while the breaker is out of its balancer, and until when,
    /// without taking a probe or counting a refusal. `Some(Some(at))`:
    /// until `at` (nanoseconds since the epoch) at the latest;
    /// `Some(None)`: until a transition (held open by hand). `None`: a
    /// call may be admitted, or is refused at once (a breaker that opened
    /// past its set's cap).
    ///
    /// Out: open (or forced open) holding one of the set's ejections; or
    /// half-open after such an ejection, every probe out, for as long as
    /// the stay may last.
    pub(crate) fn ejected_until(&self) -> Option<Option<u64>> {
        let eject = self.eject.as_ref()?;
        let word = self.load();
        match word.state() {
            CircuitState::ForcedOpen if eject.is_ejected() => Some(None),
            CircuitState::Open if eject.is_ejected() => {
                let until = self.open_until.load(Acquire);
                (self.epoch.nanos_now() < until).then_some(Some(until))
            }
            CircuitState::HalfOpen if eject.waits_for_probes() => {
                let until = self.open_until.load(Acquire);
                let probes = self.probes();
                let full =
                    probes.belongs_to(word) && probes.admitted >= self.config.half_open_calls();
                drop(probes);
                (full && self.epoch.nanos_now() < until).then_some(Some(until))
            }
            _ => None,
        }
    }

    /// Parks the task of `waker` if the breaker is ejected and would
    /// refuse a call: `Some` with [`ejected_until`](Self::ejected_until)'s
    /// deadline, once the waker is registered. The breaker is looked at
    /// again after the registration, so that a transition between the
    /// first look and the registration (which woke nobody) is not missed.
    pub(crate) fn park(&self, waker: &std::task::Waker) -> Option<Option<u64>> {
        let eject = self.eject.as_ref()?;
        self.ejected_until()?;
        eject.register(waker);
        self.ejected_until()
    }

    /// The instant `nanos` after the epoch.
    pub(crate) fn instant_at(&self, nanos: u64) -> Instant {
        self.epoch.instant_at(nanos)
    }

    pub(crate) fn name(&self) -> &Arc<str> {
        &self.config.name
    }

    #[inline]
    pub(crate) fn load(&self) -> StateWord {
        StateWord(self.state.0.load(Acquire))
    }

    /// Whether a call's end must read the clock.
    #[inline]
    pub(crate) fn needs_end_time(&self) -> bool {
        self.config.slow_call_duration().is_some() || self.window.needs_clock()
    }

    /// Whether a call's start must read the clock.
    #[inline]
    pub(crate) fn needs_start_time(&self) -> bool {
        self.config.slow_call_duration().is_some()
    }

    /// Decides whether a call may go through now.
    #[inline]
    pub(crate) fn admit(&self) -> Result<Admission, CircuitOpen> {
        let word = self.load();
        if word.admits_all() {
            Ok(Admission(word))
        } else {
            self.admit_slow(word)
        }
    }

    #[cold]
    fn admit_slow(&self, mut word: StateWord) -> Result<Admission, CircuitOpen> {
        loop {
            match word.state() {
                CircuitState::Closed | CircuitState::MetricsOnly | CircuitState::Disabled => {
                    return Ok(Admission(word));
                }
                CircuitState::ForcedOpen => return Err(self.reject(Duration::MAX)),
                CircuitState::Open => {
                    let now = self.epoch.nanos_now();
                    let until = self.open_until.load(Acquire);
                    if now < until {
                        return Err(self.reject(Duration::from_nanos(until - now)));
                    }
                    self.transition(word, CircuitState::HalfOpen, TransitionReason::WaitElapsed);
                }
                CircuitState::HalfOpen => {
                    if self.try_take_probe(word) {
                        return Ok(Admission(word));
                    }
                    if self.load() == word {
                        let now = self.epoch.nanos_now();
                        if now >= self.open_until.load(Acquire) {
                            // The probes outstayed the half-open limit
                            // (long streams, say): open again, so that a
                            // later stay can probe afresh.
                            self.transition(
                                word,
                                CircuitState::Open,
                                TransitionReason::HalfOpenTimeout,
                            );
                        } else {
                            // Every probe is out: the next chance comes when
                            // one of them finishes.
                            return Err(self.reject(Duration::ZERO));
                        }
                    }
                }
            }
            word = self.load();
        }
    }

    fn reject(&self, retry_after: Duration) -> CircuitOpen {
        self.not_permitted.fetch_add(1, Relaxed);
        self.listeners
            .emit(&self.config.name, || BreakerEvent::CallRejected {
                retry_after,
            });
        CircuitOpen::new(
            self.config.name.clone(),
            self.listeners.key().cloned(),
            retry_after,
        )
    }

    pub(super) fn probes(&self) -> MutexGuard<'_, Probes> {
        // Every update leaves the counts consistent: a panic elsewhere
        // while the lock was held cannot have broken them.
        self.probes
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn try_take_probe(&self, word: StateWord) -> bool {
        let mut probes = self.probes();
        if !probes.belongs_to(word) || probes.admitted >= self.config.half_open_calls() {
            return false;
        }
        probes.admitted += 1;
        true
    }

    /// Gives back the permit of a probe that will not report (dropped, or
    /// its outcome ignored), so that another call can probe in its place.
    #[cold]
    pub(crate) fn release_probe(&self, admission: Admission) {
        let mut probes = self.probes();
        if probes.belongs_to(admission.0) && probes.admitted > probes.finished {
            probes.admitted -= 1;
            drop(probes);
            // A parked caller may take the permit.
            if let Some(eject) = &self.eject {
                eject.wake_all();
            }
        }
    }

    /// Records the outcome of an admitted call. `elapsed` is the call's
    /// duration and `now` its end, where the configuration needs them.
    #[inline]
    pub(crate) fn record(
        &self,
        admission: Admission,
        outcome: Outcome,
        elapsed: Option<Duration>,
        now: Option<Instant>,
    ) {
        let word = admission.0;
        let slow = match (self.config.slow_call_duration(), elapsed) {
            (Some(limit), Some(took)) => took > limit,
            _ => false,
        };
        self.listeners
            .emit(&self.config.name, || BreakerEvent::CallFinished {
                outcome,
                slow,
            });
        if admission.is_probe() && outcome == Outcome::Ignored {
            self.release_probe(admission);
            return;
        }
        if outcome == Outcome::Ignored || !admission.records() {
            // Ignored, or disabled: the window does not hear of it.
            return;
        }
        let sample = Sample {
            failure: outcome == Outcome::Failure,
            slow,
        };
        let now_nanos = now.map_or(0, |now| self.epoch.nanos_at(now));
        if !self.gate.0.enter(word.generation()) {
            // Begun in an earlier state: the current one does not hear of
            // it.
            return;
        }
        let may_have_risen = self.window.record(sample, now_nanos);
        if !admission.is_probe() {
            if sample.failure {
                self.consecutive_failures.fetch_add(1, Relaxed);
            } else if self.consecutive_failures.load(Relaxed) != 0 {
                self.consecutive_failures.store(0, Relaxed);
            }
        }
        self.gate.0.leave();
        if admission.is_probe() {
            self.finish_probe(word, sample);
            return;
        }
        if may_have_risen {
            self.evaluate(word, now_nanos);
        }
    }

    #[cold]
    fn finish_probe(&self, word: StateWord, sample: Sample) {
        let limit = self.config.half_open_calls();
        let probes = {
            let mut probes = self.probes();
            if !probes.belongs_to(word) {
                return;
            }
            probes.finished += 1;
            probes.failed += u32::from(sample.failure);
            probes.slow += u32::from(sample.slow);
            *probes
        };
        if probes.finished < limit {
            return;
        }
        let n = f64::from(limit);
        let failure_rate = f64::from(probes.failed) / n;
        let slow_rate = f64::from(probes.slow) / n;
        let (to, reason) = if failure_rate >= self.config.failure_rate_threshold()
            || slow_rate >= self.config.slow_call_rate_threshold()
        {
            (CircuitState::Open, TransitionReason::ProbesFailed)
        } else {
            (CircuitState::Closed, TransitionReason::ProbesSucceeded)
        };
        self.transition(word, to, reason);
    }

    /// Judges the window after a call; trips a closed breaker, or tells the
    /// listeners of a metrics-only one.
    #[inline(never)]
    fn evaluate(&self, word: StateWord, now_nanos: u64) {
        let config = &self.config;
        let consecutive = config
            .consecutive_failures()
            .is_some_and(|n| self.consecutive_failures.load(Relaxed) >= n);
        let totals = self.window.totals(now_nanos);
        if totals.calls < u64::from(config.minimum_calls()) {
            // A rate over too few calls says little; n failures in a row
            // say what they say however few calls there were (Envoy's
            // `consecutive_5xx`, Finagle's `consecutiveFailures`).
            if consecutive && !word.is(CircuitState::MetricsOnly) && self.load() == word {
                self.transition(
                    word,
                    CircuitState::Open,
                    TransitionReason::ConsecutiveFailures,
                );
            }
            return;
        }
        let calls = totals.calls as f64;
        let failure_rate = totals.failures as f64 / calls;
        let slow_rate = totals.slow as f64 / calls;
        // Read once: a retune racing this judgment must not make its
        // event name a threshold other than the one it was judged by.
        let failure_threshold = config.failure_rate_threshold();
        let slow_threshold = config.slow_call_rate_threshold();
        let failure_exceeded = failure_rate >= failure_threshold;
        let slow_exceeded = slow_rate >= slow_threshold;
        if word.is(CircuitState::MetricsOnly) {
            self.edge(FAILURE_EXCEEDED, failure_exceeded, failure_rate);
            self.edge(SLOW_EXCEEDED, slow_exceeded, slow_rate);
            return;
        }
        let reason = if failure_exceeded {
            TransitionReason::FailureRate
        } else if slow_exceeded {
            TransitionReason::SlowCallRate
        } else if consecutive {
            TransitionReason::ConsecutiveFailures
        } else {
            return;
        };
        if self.load() != word {
            return;
        }
        let name = &config.name;
        match reason {
            TransitionReason::FailureRate => {
                self.listeners
                    .emit(name, || BreakerEvent::FailureRateExceeded {
                        rate: failure_rate,
                        threshold: failure_threshold,
                    })
            }
            TransitionReason::SlowCallRate => {
                self.listeners
                    .emit(name, || BreakerEvent::SlowCallRateExceeded {
                        rate: slow_rate,
                        threshold: slow_threshold,
                    })
            }
            _ => {}
        }
        self.transition(word, CircuitState::Open, reason);
    }

    /// Emits a "rate exceeded" event when a metrics-only breaker's rate
    /// crosses its threshold upwards, once per crossing.
    fn edge(&self, flag: u8, exceeded: bool, rate: f64) {
        let was = self.exceeded.load(Relaxed) & flag != 0;
        if exceeded == was {
            return;
        }
        if exceeded {
            if self.exceeded.fetch_or(flag, Relaxed) & flag == 0 {
                let name = &self.config.name;
                let config = &self.config;
                self.listeners.emit(name, || {
                    if flag == FAILURE_EXCEEDED {
                        BreakerEvent::FailureRateExceeded {
                            rate,
                            threshold: config.failure_rate_threshold(),
                        }
                    } else {
                        BreakerEvent::SlowCallRateExceeded {
                            rate,
                            threshold: config.slow_call_rate_threshold(),
                        }
                    }
                });
            }
        } else {
            self.exceeded.fetch_and(!flag, Relaxed);
        }
    }

    /// Moves from `expected` to `to`, unless another thread moved first.
    /// Returns whether this call made the transition.
    pub(crate) fn transition(
        &self,
        expected: StateWord,
        to: CircuitState,
        reason: TransitionReason,
    ) -> bool {
        let mut guard = self
            .transitions
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let current = self.load();
        if current != expected {
            return false;
        }
        let next = StateWord::new(to, current.generation().wrapping_add(1));
        // Calls of the old state still writing finish first; later ones find
        // the gate closed and count nowhere.
        self.gate.0.close_and_drain();
        match to {
            CircuitState::Closed | CircuitState::MetricsOnly => {
                self.window.clear();
                self.consecutive_failures.store(0, Relaxed);
                self.exceeded.store(0, Relaxed);
                guard.open_waits = None;
            }
            CircuitState::Open => {
                let wait = self.next_open_wait(&mut guard);
                let now = self.epoch.nanos_now();
                self.open_until
                    .store(now.saturating_add(nanos(wait)), Release);
            }
            CircuitState::HalfOpen => {
                self.window.clear();
                *self.probes() = Probes::fresh(next);
                let now = self.epoch.nanos_now();
                self.open_until.store(
                    now.saturating_add(nanos(self.config.max_half_open_duration())),
                    Release,
                );
            }
            CircuitState::ForcedOpen | CircuitState::Disabled => {}
        }
        if let Some(eject) = &self.eject {
            eject.moved(current.state(), to);
        }
        // Open for the new state's calls before any can be admitted.
        self.gate.0.open(next.generation());
        self.state.0.store(next.0, Release);
        drop(guard);
        // Parked callers look again: the breaker may admit them now, or is
        // no longer ejected (and answers them at once).
        if let Some(eject) = &self.eject {
            eject.wake_all();
        }
        self.listeners
            .emit(&self.config.name, || BreakerEvent::StateTransition {
                from: current.state(),
                to,
                reason,
            });
        true
    }

    /// Moves to `to` whatever the current state: a transition by hand.
    pub(crate) fn force(&self, to: CircuitState) {
        loop {
            if self.transition(self.load(), to, TransitionReason::Manual) {
                return;
            }
        }
    }

    fn next_open_wait(&self, state: &mut TransitionState) -> Duration {
        let Some(backoff) = self.config.wait_backoff() else {
            return self.config.wait_duration();
        };
        let waits = state
            .open_waits
            .get_or_insert_with(|| match self.config.seed {
                Some(seed) => backoff.delays_seeded(seed),
                None => backoff.delays(),
            });
        waits.next().unwrap_or(self.config.wait_duration())
    }
}

#[cfg(test)]
impl Core {
    /// Stands for `n` transitions ending in a fresh half-open stay, without
    /// making them one by one.
    fn half_open_after(&self, n: u64) {
        let _lock = self.transitions.lock().unwrap();
        let next = StateWord::new(
            CircuitState::HalfOpen,
            self.load().generation().wrapping_add(n),
        );
        *self.probes() = Probes::fresh(next);
        self.open_until.store(u64::MAX, Release);
        self.gate.0.close_and_drain();
        self.gate.0.open(next.generation());
        self.state.0.store(next.0, Release);
    }
}

#[cfg(all(test, not(palisade_loom)))]
mod tests {
    use super::*;
    use crate::window::CountWindow;

    fn core(half_open_calls: u32) -> Core {
        let config = Config {
            name: Arc::from("test"),
            failure_rate_threshold: 0.5,
            slow_call_rate_threshold: 1.0,
            slow_call_duration: None,
            consecutive_failures: None,
            minimum_calls: 1,
            wait_duration: Duration::from_secs(1),
            wait_backoff: None,
            half_open_calls,
            max_half_open_duration: Duration::from_secs(60),
            seed: Some(0),
        };
        Core::new(
            config,
            Window::Count(CountWindow::new(4)),
            Listeners::default(),
        )
    }

    /// Issue 12, defect 4: the probe word keeps 24 bits of the generation.
    /// A probe of a stay 2^24 transitions back, given back late, must not
    /// free the probe of the current stay.
    #[test]
    fn a_probe_of_a_stay_long_gone_frees_nothing() {
        let core = core(1);
        core.half_open_after(1);
        let old = core.admit().expect("the probe of the first stay");
        core.half_open_after(1 << 24);
        let new = core.admit().expect("the probe of the new stay");
        assert!(core.admit().is_err(), "one probe at a time");
        core.release_probe(old);
        assert!(
            core.admit().is_err(),
            "the old probe freed the new stay's permit"
        );
        core.release_probe(new);
        assert!(core.admit().is_ok());
    }
}

#[cfg(all(test, palisade_loom))]
mod loom_tests {
    use super::*;
    use crate::window::CountWindow;

    /// A closed breaker with a count window of 4 and a single probe.
    fn closed() -> Core {
        let config = Config {
            name: Arc::from("loom"),
            failure_rate_threshold: 0.5,
            slow_call_rate_threshold: 1.0,
            slow_call_duration: None,
            consecutive_failures: None,
            minimum_calls: 1,
            wait_duration: Duration::from_secs(1),
            wait_backoff: None,
            half_open_calls: 1,
            max_half_open_duration: Duration::from_secs(60),
            seed: Some(0),
        };
        Core::new(
            config,
            Window::Count(CountWindow::new(4)),
            Listeners::default(),
        )
    }

    /// A half-open breaker with a single probe.
    fn half_open() -> Core {
        let core = closed();
        assert!(core.transition(
            core.load(),
            CircuitState::HalfOpen,
            TransitionReason::Manual
        ));
        core
    }

    /// Two callers race for the only probe: one gives its permit back (a
    /// cancelled probe), the other reports a success. Whatever the
    /// interleaving, at most one holds the probe at a time, no permit is
    /// lost, and a reported success closes the breaker.
    #[test]
    fn loom_the_probe_permit_is_never_lost() {
        loom::model(|| {
            let core = crate::sync::Arc::new(half_open());
            let dropper = {
                let core = core.clone();
                loom::thread::spawn(move || match core.admit() {
                    Ok(admission) => {
                        core.release_probe(admission);
                        true
                    }
                    Err(_) => false,
                })
            };
            let reporter = {
                let core = core.clone();
                loom::thread::spawn(move || match core.admit() {
                    Ok(admission) => {
                        core.record(admission, Outcome::Success, None, None);
                        true
                    }
                    Err(_) => false,
                })
            };
            dropper.join().unwrap();
            let reported = reporter.join().unwrap();
            let metrics = core.metrics();
            assert_eq!(metrics.probes_in_flight, 0);
            if reported {
                assert_eq!(metrics.state, CircuitState::Closed);
            } else {
                // The reporter was refused while the other held the probe;
                // the probe is free again.
                assert_eq!(metrics.state, CircuitState::HalfOpen);
                assert!(core.admit().is_ok());
            }
        });
    }

    /// Issue 12, defect 1: a call admitted while closed finishes while a
    /// reset runs. Whatever the interleaving, its outcome is either dropped
    /// or cleared away: the fresh window is empty.
    #[test]
    fn loom_a_transition_racing_a_recorder_leaves_the_fresh_window_empty() {
        loom::model(|| {
            let core = crate::sync::Arc::new(closed());
            let admission = core.admit().unwrap();
            let recorder = {
                let core = core.clone();
                loom::thread::spawn(move || {
                    core.record(admission, Outcome::Failure, None, None);
                })
            };
            core.force(CircuitState::Closed);
            recorder.join().unwrap();
            let metrics = core.metrics();
            assert_eq!((metrics.calls, metrics.failures), (0, 0));
            assert_eq!(metrics.consecutive_failures, 0);
        });
    }

    /// Issue 15: a caller parks on an ejected breaker while it is reset.
    /// Whatever the interleaving, the caller is either not parked (it saw
    /// the breaker closed) or woken. (Fails without the second look in
    /// `park`, or with the wake before the state's store in `transition`.)
    #[test]
    fn loom_a_parked_caller_is_never_left_asleep() {
        use std::sync::atomic::AtomicBool as StdBool;
        use std::task::{Wake, Waker};

        struct Flag(StdBool);
        impl Wake for Flag {
            fn wake(self: std::sync::Arc<Self>) {
                self.0.store(true, SeqCst);
            }
        }

        loom::model(|| {
            let core = crate::sync::Arc::new(
                closed().ejecting(Arc::new(crate::registry::Ejection::new(100))),
            );
            core.force(CircuitState::ForcedOpen);
            let flag = std::sync::Arc::new(Flag(StdBool::new(false)));
            let waker = Waker::from(flag.clone());
            let resetter = {
                let core = core.clone();
                loom::thread::spawn(move || core.force(CircuitState::Closed))
            };
            let parked = core.park(&waker).is_some();
            resetter.join().unwrap();
            if parked {
                assert!(flag.0.load(SeqCst), "parked and never woken");
            }
            assert!(core.park(&waker).is_none(), "closed: nobody parks");
        });
    }

    /// Issue 12, defect 4: a probe of a stay 2^24 transitions back (the
    /// same 24-bit tag) is given back while the current stay's probe is
    /// taken. Whatever the interleaving, the current probe stays taken.
    #[test]
    fn loom_a_probe_of_a_stay_long_gone_frees_nothing() {
        loom::model(|| {
            let core = crate::sync::Arc::new(half_open());
            let old = core.admit().unwrap();
            let late = {
                let core = core.clone();
                loom::thread::spawn(move || core.release_probe(old))
            };
            core.half_open_after(1 << 24);
            let current = core.admit();
            late.join().unwrap();
            if current.is_ok() {
                assert!(core.admit().is_err(), "the current probe was freed");
            }
        });
    }
}
