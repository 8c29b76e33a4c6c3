use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use pin_project::pin_project;
use tokio::time::{Instant, Sleep, sleep_until};
use tower::Service;

use super::event::{HedgeEvent, HedgeTrigger, SkipReason};
use super::layer::{HedgeMode, MAX_ATTEMPTS, Shared};
use crate::BoxError;
use crate::classify::{Classify, DelayHint, Outcome, rejection_kind};
use crate::error::ErrorKind;
use crate::replay::ReplaySource;

/// The first attempt, inline: a call answered by it costs no allocation.
#[pin_project(project = FirstProj)]
enum First<F> {
    Running {
        #[pin]
        future: F,
    },
    Gone,
}

/// One attempt after the first, or none.
#[pin_project(project = SlotProj, project_replace = SlotTaken)]
enum Slot<F> {
    Running {
        attempt: u32,
        /// When it started, if latencies are recorded.
        started: Option<Instant>,
        #[pin]
        future: F,
    },
    Empty,
}

impl<F> Slot<F> {
    fn started(&self) -> Option<Option<Instant>> {
        match self {
            Slot::Running { started, .. } => Some(*started),
            Slot::Empty => None,
        }
    }
}

/// The attempts after the first, their futures in place: one box, made
/// at the first hedge, holds them all (a call answered by its first
/// attempt carries only the pointer, and later hedges allocate nothing).
#[pin_project]
struct Slots<F> {
    #[pin]
    second: Slot<F>,
    #[pin]
    third: Slot<F>,
    #[pin]
    fourth: Slot<F>,
    #[pin]
    fifth: Slot<F>,
}

// One slot per attempt after the first.
const _: () = assert!(MAX_ATTEMPTS == 5);

impl<F> Slots<F> {
    fn new() -> Self {
        Self {
            second: Slot::Empty,
            third: Slot::Empty,
            fourth: Slot::Empty,
            fifth: Slot::Empty,
        }
    }

    fn iter(&self) -> [&Slot<F>; 4] {
        [&self.second, &self.third, &self.fourth, &self.fifth]
    }

    fn slot(self: Pin<&mut Self>, i: usize) -> Pin<&mut Slot<F>> {
        let slots = self.project();
        match i {
            0 => slots.second,
            1 => slots.third,
            2 => slots.fourth,
            3 => slots.fifth,
            _ => unreachable!("four slots, one per attempt after the first"),
        }
    }
}

/// What a call that may be hedged keeps beside its first attempt.
pub(crate) struct Hedging<F: Future, S, C, Src: ReplaySource> {
    /// A clone of the service, driven ready before each further attempt.
    service: S,
    source: Src,
    shared: Arc<Shared<C>>,
    /// When the first attempt started, read at the call if latencies are
    /// recorded; otherwise the first delay counts from the first poll that
    /// finds the attempt still running (no clock read for a call answered
    /// at once).
    first_started: Option<Instant>,
    /// Attempts made, the first included.
    made: u32,
    /// The attempts after the first still running, in slots made at the
    /// first hedge (boxed, with that hedge's future: a call answered by
    /// its first attempt carries only the pointer).
    others: Option<Pin<Box<Slots<F>>>>,
    /// Whether the latency mode's first delay has been scheduled: only
    /// once the first attempt has not answered at its first poll.
    armed: bool,
    /// The next attempt is due now.
    immediate: bool,
    /// The next attempt is due at this instant.
    due: Option<Instant>,
    /// What makes the next attempt due.
    trigger: HedgeTrigger,
    /// Boxed and made at first use, as the timeout's timer: a call answered
    /// before the delay never touches the timer wheel.
    timer: Option<Pin<Box<Sleep>>>,
    /// The next attempt's request, made, waiting for the service to be
    /// ready.
    next: Option<Src::Request>,
    /// No further attempt will start.
    stopped: bool,
    /// The answer returned if every attempt fails: the earliest attempt's
    /// (the first's, as Polly returns the primary's).
    failure: Option<(u32, F::Output)>,
}

impl<F: Future, S, C, Src: ReplaySource> Hedging<F, S, C, Src> {
    pub(crate) fn new(
        service: S,
        source: Src,
        shared: Arc<Shared<C>>,
        first_started: Option<Instant>,
    ) -> Self {
        let parallel = shared.mode == HedgeMode::Parallel;
        Self {
            service,
            source,
            shared,
            first_started,
            made: 1,
            others: None,
            armed: false,
            immediate: parallel,
            due: None,
            trigger: if parallel {
                HedgeTrigger::Parallel
            } else {
                HedgeTrigger::Delay
            },
            timer: None,
            next: None,
            stopped: false,
            failure: None,
        }
    }

    fn emit(&self, what: impl FnOnce() -> HedgeEvent) {
        self.shared.listeners.emit(&self.shared.name, what);
    }

    /// Stops the hedging: `reason` says why the next attempt is not sent.
    fn skip(&mut self, reason: SkipReason) {
        self.stopped = true;
        self.next = None;
        let attempt = self.made + 1;
        self.emit(|| HedgeEvent::Skipped { attempt, reason });
    }

    /// How many attempts after the first are running.
    fn others_running(&self) -> usize {
        self.others.as_ref().map_or(0, |slots| {
            slots
                .iter()
                .into_iter()
                .filter(|s| s.started().is_some())
                .count()
        })
    }

    /// Whether a further attempt may still start.
    fn may_start(&self) -> bool {
        !self.stopped && self.made < self.shared.max_attempts
    }

    /// Whether a further attempt is expected: scheduled, or waiting for
    /// the service.
    fn expecting(&self) -> bool {
        self.next.is_some() || (self.may_start() && (self.immediate || self.due.is_some()))
    }

    /// Judges an attempt's answer: `Some` to return it (a winner, or a
    /// fatal failure), `None` to go on (a failure kept, perhaps the next
    /// attempt made due).
    fn on_answer<Res, E>(
        &mut self,
        attempt: u32,
        started: Option<Instant>,
        result: Result<Res, E>,
    ) -> Option<Result<Res, E>>
    where
        C: Classify<Res, E>,
        E: 'static,
        F: Future<Output = Result<Res, E>>,
    {
        if let Some(budget) = &self.shared.budget
            && budget.counts_answers()
        {
            budget.count(&self.shared.classifier, &result);
        }
        let kind = result.as_ref().err().and_then(rejection_kind);
        let outcome = match kind {
            Some(_) => Outcome::Failure,
            None => self.shared.classifier.classify(&result),
        };
        if !outcome.is_failure() {
            if outcome == Outcome::Success {
                self.record(started);
            }
            let attempts = self.made;
            self.emit(|| HedgeEvent::Won { attempt, attempts });
            return Some(result);
        }
        match kind {
            // A per-attempt timeout below: the next attempt may be faster.
            Some(ErrorKind::Elapsed) => self.after_failure(&result),
            // A refusal below (an open breaker, a full bulkhead, a rate
            // limiter): a further attempt now would be refused too. The
            // running attempts go on.
            Some(_) if self.may_start() => self.skip(SkipReason::Refused),
            Some(_) => {}
            None if self.shared.classifier.is_not_sent(&result)
                || self.shared.classifier.is_retryable_failure(&result) =>
            {
                self.after_failure(&result);
            }
            None => {
                let attempts = self.made;
                self.emit(|| HedgeEvent::Failed {
                    attempt,
                    attempts,
                    fatal: true,
                });
                return Some(result);
            }
        }
        if self
            .failure
            .as_ref()
            .is_none_or(|(kept, _)| attempt < *kept)
        {
            self.failure = Some((attempt, result));
        }
        None
    }

    /// A retryable failure: the next attempt is due now, or after the
    /// server's pushback (gRPC A6), or never if the server said so.
    fn after_failure<Res, E>(&mut self, result: &Result<Res, E>)
    where
        C: Classify<Res, E>,
    {
        if !self.may_start() {
            return;
        }
        self.trigger = HedgeTrigger::Failure;
        match self.shared.classifier.delay_hint(result) {
            Some(DelayHint::DoNotRetry) => self.skip(SkipReason::ServerSaidNo),
            Some(DelayHint::After(wait)) if wait > self.shared.max_hint => {
                self.skip(SkipReason::HintAboveCap);
            }
            Some(DelayHint::After(wait)) => {
                self.immediate = false;
                self.due = Instant::now().checked_add(wait);
            }
            None => self.immediate = true,
        }
    }

    /// Records an attempt's latency, if the delay is read from them.
    fn record(&self, started: Option<Instant>) {
        if let (Some(started), Some((window, epoch))) = (started, self.shared.delay.recorder()) {
            let now = Instant::now();
            window.record(now.saturating_duration_since(started), epoch.nanos_at(now));
        }
    }

    /// Whether the next attempt is due, arming or moving the timer if it
    /// waits for one.
    fn poll_due(&mut self, cx: &mut Context<'_>) -> bool {
        if !self.armed {
            self.armed = true;
            if self.shared.mode == HedgeMode::Latency && !self.immediate && self.due.is_none() {
                let base = self.first_started.unwrap_or_else(Instant::now);
                // A delay past what the clock holds never comes due.
                self.due = base.checked_add(self.shared.delay.delay(2));
            }
        }
        if self.immediate {
            return true;
        }
        let Some(at) = self.due else {
            return false;
        };
        let timer = match &mut self.timer {
            Some(timer) => {
                if timer.deadline() != at {
                    timer.as_mut().reset(at);
                }
                timer
            }
            None => self.timer.insert(Box::pin(sleep_until(at))),
        };
        if timer.as_mut().poll(cx).is_pending() {
            return false;
        }
        self.due = None;
        self.immediate = true;
        true
    }

    /// Starts the next attempt if it is due and the service is ready:
    /// `Ok(true)` if one started; an error of the service's readiness when
    /// no attempt is left running to wait for.
    fn poll_start<Res, E>(&mut self, cx: &mut Context<'_>, running: usize) -> Result<bool, BoxError>
    where
        S: Service<Src::Request, Response = Res, Error = E, Future = F>,
        E: Into<BoxError>,
    {
        if !self.may_start() || !self.poll_due(cx) {
            return Ok(false);
        }
        if self.next.is_none() {
            // Beside running attempts, only a copy that takes nothing from
            // them: a body still being sent is not shared, but waited for
            // (the source wakes this task as the body is read).
            let copy = if running > 0 {
                match self.source.poll_alongside(cx) {
                    Poll::Ready(copy) => copy,
                    Poll::Pending => return Ok(false),
                }
            } else {
                self.source.again()
            };
            let Some(request) = copy else {
                self.skip(SkipReason::NotCopyable);
                return Ok(false);
            };
            if let Some(budget) = &self.shared.budget
                && !budget.try_withdraw()
            {
                self.skip(SkipReason::BudgetExhausted);
                return Ok(false);
            }
            self.next = Some(request);
        }
        match self.service.poll_ready(cx) {
            Poll::Pending => return Ok(false),
            Poll::Ready(Err(err)) => {
                self.skip(SkipReason::NotReady);
                return if running == 0 {
                    Err(err.into())
                } else {
                    Ok(false)
                };
            }
            Poll::Ready(Ok(())) => {}
        }
        let request = self.next.take().expect("made above");
        self.made += 1;
        let attempt = self.made;
        let trigger = self.trigger;
        self.emit(|| HedgeEvent::Hedged { attempt, trigger });
        let now = self.shared.delay.recorder().map(|_| Instant::now());
        let future = self.service.call(request);
        let slots = self.others.get_or_insert_with(|| Box::pin(Slots::new()));
        let free = slots
            .iter()
            .into_iter()
            .position(|s| s.started().is_none())
            .expect("a slot for each attempt after the first");
        slots.as_mut().slot(free).set(Slot::Running {
            attempt,
            started: now,
            future,
        });
        self.immediate = false;
        if self.made < self.shared.max_attempts {
            match self.shared.mode {
                HedgeMode::Latency => {
                    self.trigger = HedgeTrigger::Delay;
                    let from = now.unwrap_or_else(Instant::now);
                    self.due = from.checked_add(self.shared.delay.delay(attempt + 1));
                }
                HedgeMode::Parallel => self.immediate = true,
                HedgeMode::Fallback => {}
            }
        }
        Ok(true)
    }

    /// Drops the attempts still running (the first among them if
    /// `first_started` is given as running), recording how long each ran:
    /// at least that long, which keeps the slow tail, whose attempts are
    /// the ones cancelled, in the latencies the delay is read from (as
    /// Finagle's backup requests do).
    fn cancel_others(&mut self, first_running: bool) {
        let cancelled = self.others_running() + usize::from(first_running);
        if cancelled == 0 {
            return;
        }
        if first_running {
            self.record(self.first_started);
        }
        if let Some(slots) = self.others.take() {
            for started in slots.iter().into_iter().filter_map(Slot::started) {
                self.record(started);
            }
            drop(slots);
        }
        let attempts = cancelled as u32;
        self.emit(|| HedgeEvent::Cancelled { attempts });
    }
}

/// The future of a [`Hedge`](super::Hedge) call. Its parameters are the
/// inner future `F`, the service `S`, the classifier `C`, and the
/// [`ReplaySource`] `Src` that copies the request for each further attempt.
#[pin_project]
pub struct ResponseFuture<F: Future, S, C, Src: ReplaySource> {
    #[pin]
    first: First<F>,
    /// `None` for a call that is sent once (a request that may not be sent
    /// twice, or cannot be copied; one attempt allowed).
    hedging: Option<Hedging<F, S, C, Src>>,
}

impl<F: Future, S, C, Src: ReplaySource> ResponseFuture<F, S, C, Src> {
    pub(crate) fn new(future: F, hedging: Option<Hedging<F, S, C, Src>>) -> Self {
        Self {
            first: First::Running { future },
            hedging,
        }
    }
}

impl<F: Future, S, C, Src: ReplaySource> fmt::Debug for ResponseFuture<F, S, C, Src> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let first_running = matches!(self.first, First::Running { .. });
        let mut d = f.debug_struct("ResponseFuture");
        match &self.hedging {
            None => d.field("hedged", &false),
            Some(h) => d
                .field("attempts", &h.made)
                .field(
                    "running",
                    &(h.others_running() + usize::from(first_running)),
                )
                .field("stopped", &h.stopped),
        };
        d.finish()
    }
}

impl<F, S, C, Src, Res, E> Future for ResponseFuture<F, S, C, Src>
where
    F: Future<Output = Result<Res, E>>,
    Src: ReplaySource,
    S: Service<Src::Request, Response = Res, Error = E, Future = F>,
    E: Into<BoxError> + 'static,
    C: Classify<Res, E>,
{
    type Output = Result<Res, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let Some(hedging) = this.hedging.as_mut() else {
            return match this.first.project() {
                FirstProj::Running { future } => future.poll(cx).map_err(Into::into),
                FirstProj::Gone => unreachable!("only a hedged call lets its first attempt go"),
            };
        };
        loop {
            let answer = match this.first.as_mut().project() {
                FirstProj::Running { future } => match future.poll(cx) {
                    Poll::Ready(result) => Some(result),
                    Poll::Pending => None,
                },
                FirstProj::Gone => None,
            };
            if let Some(result) = answer {
                this.first.set(First::Gone);
                let started = hedging.first_started;
                if let Some(result) = hedging.on_answer(1, started, result) {
                    hedging.cancel_others(false);
                    return Poll::Ready(result.map_err(Into::into));
                }
            }
            for i in 0..MAX_ATTEMPTS as usize - 1 {
                let Some(slots) = hedging.others.as_mut() else {
                    break;
                };
                let mut slot = slots.as_mut().slot(i);
                let SlotProj::Running { future, .. } = slot.as_mut().project() else {
                    continue;
                };
                let Poll::Ready(result) = future.poll(cx) else {
                    continue;
                };
                let SlotTaken::Running {
                    attempt, started, ..
                } = slot.project_replace(Slot::Empty)
                else {
                    unreachable!("running above")
                };
                if let Some(result) = hedging.on_answer(attempt, started, result) {
                    let first_running = matches!(*this.first, First::Running { .. });
                    this.first.set(First::Gone);
                    hedging.cancel_others(first_running);
                    return Poll::Ready(result.map_err(Into::into));
                }
            }
            let running = hedging.others_running()
                + usize::from(matches!(*this.first, First::Running { .. }));
            match hedging.poll_start(cx, running) {
                Ok(true) => continue,
                Ok(false) => {}
                Err(err) => return Poll::Ready(Err(err)),
            }
            if running == 0 && !hedging.expecting() {
                let (attempt, result) = hedging
                    .failure
                    .take()
                    .expect("every attempt that ended without an answer left its failure");
                let attempts = hedging.made;
                hedging.emit(|| HedgeEvent::Failed {
                    attempt,
                    attempts,
                    fatal: false,
                });
                return Poll::Ready(result.map_err(Into::into));
            }
            return Poll::Pending;
        }
    }
}
