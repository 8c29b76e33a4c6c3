use std::any::Any;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use pin_project::pin_project;
use tokio::time::{Instant, Sleep, sleep, sleep_until};
use tower::Service;

use super::event::{GiveUpReason, RetryEvent, RetryReason};
use super::layer::Shared;
use super::span::{self, AttemptSpan};
use crate::BoxError;
use crate::backoff::{MakeDelays, session_seed};
use crate::classify::{Classify, DelayHint, to_decide};
use crate::error::{CircuitOpen, Elapsed, ErrorKind, RateLimited};
use crate::replay::ReplaySource;

/// The delays of one call's backoff: boxed, so that the future need not
/// name their type (one virtual call per retry, none on a first attempt
/// that succeeds).
type Delays = Box<dyn Iterator<Item = Duration> + Send>;

/// What a call needs to retry: present only when it can be retried.
pub(crate) struct Retrying<S, C, B, Src: ReplaySource> {
    pub(crate) service: S,
    pub(crate) source: Src,
    pub(crate) shared: Arc<Shared<C, B>>,
    pub(crate) started: Option<Instant>,
    /// Drawn at the first retry.
    pub(crate) delays: Option<Delays>,
}

/// The future of a [`Retry`](super::Retry) call. Its parameters are the
/// inner future `F`, the service `S`, the classifier `C`, the backoff `B`,
/// and the [`ReplaySource`] `Src` that copies the request for each retry.
#[pin_project]
pub struct ResponseFuture<F, S, C, B, Src: ReplaySource> {
    #[pin]
    state: State<F, Src::Request>,
    /// The running attempt's span; disabled between attempts.
    span: AttemptSpan,
    attempt: u32,
    /// Whether the classifier let the request be sent twice. If not, the
    /// source serves only to send again a request that never left. Kept
    /// here, beside `attempt`, where it fills padding.
    retryable: bool,
    after: After<S, C, B, Src>,
}

/// What comes after the first attempt.
pub(crate) enum After<S, C, B, Src: ReplaySource> {
    /// The call may be retried.
    Retrying(Retrying<S, C, B, Src>),
    /// The call cannot be retried (one attempt allowed, or a request that
    /// cannot be copied), and someone listens: the shared state is kept to
    /// say why its failure is returned.
    Watching(Arc<Shared<C, B>>),
    /// Nothing: the answer is returned as it is.
    Nothing,
}

/// The running attempt, or the next one's request while it waits: the
/// request shares its place with the attempt's future, which it never
/// outlives.
#[pin_project(project = StateProj)]
enum State<F, R> {
    Calling {
        #[pin]
        future: F,
    },
    /// Boxed: a timer is big, and only a retry needs one.
    Sleeping {
        sleep: Pin<Box<Sleep>>,
        next: Option<R>,
    },
    /// Waiting for the service to be ready for the next attempt; with a
    /// deadline, its timer once the wait is not over at once.
    Readying {
        deadline: Option<Pin<Box<Sleep>>>,
        next: Option<R>,
    },
}

impl<F, S, C, B, Src: ReplaySource> ResponseFuture<F, S, C, B, Src> {
    pub(crate) fn new(
        future: F,
        span: AttemptSpan,
        retryable: bool,
        after: After<S, C, B, Src>,
    ) -> Self {
        Self {
            state: State::Calling { future },
            span,
            attempt: 1,
            retryable,
            after,
        }
    }
}

impl<F, S, C, B, Src: ReplaySource> fmt::Debug for ResponseFuture<F, S, C, B, Src> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::Calling { .. } => "calling",
            State::Sleeping { .. } => "sleeping",
            State::Readying { .. } => "readying",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .field("attempt", &self.attempt)
            .field("retryable", &matches!(self.after, After::Retrying(_)))
            .finish()
    }
}

/// Whether a finished attempt that failed, or was refused by a palisade
/// layer of `kind`, may be retried as far as the classifier, the request
/// and the count of attempts go: the retry's reason, or why not. The
/// server's hints, the budget and the deadline are judged after.
fn judge<C, B, Res, E>(
    shared: &Shared<C, B>,
    attempt: u32,
    retryable: bool,
    kind: Option<ErrorKind>,
    result: &Result<Res, E>,
) -> Result<RetryReason, GiveUpReason>
where
    C: Classify<Res, E>,
{
    // A rejection below (an open breaker, a full bulkhead) or a failed
    // connection never reached the server: safe to send again whatever
    // the request. Anything else may have run there.
    let (reason, sent) = match kind {
        Some(kind) if !shared.retry_on.contains(kind) => return Err(GiveUpReason::NotRetryable),
        Some(ErrorKind::Elapsed) => (RetryReason::Timeout, true),
        Some(ErrorKind::CircuitOpen) => (RetryReason::CircuitOpen, false),
        Some(ErrorKind::BulkheadFull) => (RetryReason::BulkheadFull, false),
        Some(ErrorKind::RateLimited) => (RetryReason::RateLimited, false),
        Some(ErrorKind::TooManyKeys) => (RetryReason::TooManyKeys, false),
        Some(ErrorKind::ConcurrencyLimited) => (RetryReason::ConcurrencyLimited, false),
        Some(ErrorKind::Throttled) => (RetryReason::Throttled, false),
        Some(_) => return Err(GiveUpReason::NotRetryable),
        None if shared.classifier.is_not_sent(result) => (RetryReason::NotSent, false),
        None if shared.classifier.is_retryable_failure(result) => (RetryReason::Failure, true),
        None => return Err(GiveUpReason::FailureNotRetryable),
    };
    // Every allowed attempt made: whether the request may be sent twice
    // no longer matters (with one attempt allowed it was never asked).
    if attempt >= shared.max_attempts {
        return Err(GiveUpReason::MaxAttempts);
    }
    if sent && !retryable {
        return Err(GiveUpReason::RequestNotRetryable);
    }
    Ok(reason)
}

/// For a call that could never be retried (one attempt allowed, or a
/// request that cannot be copied), tells the listeners why its failure is
/// returned: the same `GaveUp` a retrying call gives.
#[cold]
fn report_final<C, B, Res, E>(shared: &Shared<C, B>, retryable: bool, result: &Result<Res, E>)
where
    C: Classify<Res, E>,
    E: 'static,
{
    count_answer(shared, result);
    let Some(kind) = to_decide(&shared.classifier, result) else {
        return;
    };
    let reason = judge(shared, 1, retryable, kind, result)
        .err()
        .unwrap_or(GiveUpReason::NotReplayable);
    shared.listeners.emit(&shared.name, || RetryEvent::GaveUp {
        attempts: 1,
        reason,
    });
}

/// Tells a budget that learns from answers (gRPC's tokens) how an attempt
/// ended; a share of the requests needs nothing.
#[inline]
fn count_answer<C, B, Res, E>(shared: &Shared<C, B>, result: &Result<Res, E>)
where
    C: Classify<Res, E>,
    E: 'static,
{
    if let Some(budget) = &shared.budget
        && budget.counts_answers()
    {
        budget.count(&shared.classifier, result);
    }
}

enum Next<R> {
    Return,
    /// Send `R` after the delay.
    RetryAfter(Duration, R),
}

impl<S, C, B, Src> Retrying<S, C, B, Src>
where
    B: MakeDelays,
    B::Delays: Send + 'static,
    Src: ReplaySource,
{
    fn give_up<R>(&self, attempts: u32, reason: GiveUpReason) -> Next<R> {
        let shared = &self.shared;
        shared
            .listeners
            .emit(&shared.name, || RetryEvent::GaveUp { attempts, reason });
        Next::Return
    }

    /// Decides, after attempt number `attempt`, whether and when to send
    /// another; prepares its request if so. The common case, an answer
    /// that is neither a failure nor a palisade rejection, is settled here
    /// without touching the shared state's reference count; the rest is
    /// kept out of line so that `poll` stays small enough to inline.
    #[inline]
    fn decide<Res, E>(
        &mut self,
        attempt: u32,
        retryable: bool,
        result: &Result<Res, E>,
    ) -> Next<Src::Request>
    where
        C: Classify<Res, E>,
        E: 'static,
    {
        match to_decide(&self.shared.classifier, result) {
            None => {
                count_answer(&self.shared, result);
                Next::Return
            }
            Some(kind) => self.decide_retry(attempt, retryable, kind, result),
        }
    }

    /// [`decide`](Self::decide) for a failure (`kind: None`, as the
    /// classifier judged it) or a palisade rejection of `kind`.
    #[inline(never)]
    fn decide_retry<Res, E>(
        &mut self,
        attempt: u32,
        retryable: bool,
        kind: Option<ErrorKind>,
        result: &Result<Res, E>,
    ) -> Next<Src::Request>
    where
        C: Classify<Res, E>,
        E: 'static,
    {
        let shared = Arc::clone(&self.shared);
        // Before the attempts are counted: gRPC's throttling takes a token
        // for the last attempt's failure too (grpc-go, grpc-java).
        count_answer(&shared, result);
        let reason = match judge(&shared, attempt, retryable, kind, result) {
            Ok(reason) => reason,
            Err(give_up) => return self.give_up(attempt, give_up),
        };
        // An open breaker or a rate limiter below says when it may admit the
        // call: a hint of its own, and a floor under the backoff.
        let rejection = || {
            result
                .as_ref()
                .err()
                .and_then(|e| (e as &dyn Any).downcast_ref::<BoxError>())
        };
        let breaker_wait = match reason {
            RetryReason::CircuitOpen => rejection()
                .and_then(|e| e.downcast_ref::<CircuitOpen>())
                .map(CircuitOpen::retry_after),
            RetryReason::RateLimited => rejection()
                .and_then(|e| e.downcast_ref::<RateLimited>())
                .map(RateLimited::retry_after),
            _ => None,
        };
        let hint = match breaker_wait {
            Some(_) => None,
            None => shared.classifier.delay_hint(result),
        };
        // A wait above the cap: the server (or breaker) asked not to be
        // called sooner. End the retries, unless told to wait the cap.
        let capped = |wait: Duration| -> Option<Duration> {
            if wait <= shared.max_hint {
                Some(wait)
            } else if shared.shorten_long_hints {
                Some(shared.max_hint)
            } else {
                None
            }
        };
        let hinted_wait = match hint {
            Some(DelayHint::DoNotRetry) => {
                return self.give_up(attempt, GiveUpReason::ServerSaidNo);
            }
            Some(DelayHint::After(wait)) => match capped(wait) {
                Some(wait) => Some(wait),
                None => return self.give_up(attempt, GiveUpReason::HintAboveCap),
            },
            None => None,
        };
        let floor = match breaker_wait.map(capped) {
            Some(None) => return self.give_up(attempt, GiveUpReason::HintAboveCap),
            Some(Some(wait)) => wait,
            None => Duration::ZERO,
        };
        let (delay, hinted) = match hinted_wait {
            Some(wait) => (wait, true),
            None => {
                let delays = self.delays.get_or_insert_with(|| {
                    let seed = match shared.seed {
                        Some(seed) => session_seed(seed, shared.sessions.fetch_add(1, Relaxed)),
                        None => rand::random(),
                    };
                    Box::new(shared.backoff.make_delays(seed)) as Delays
                });
                match delays.next() {
                    Some(delay) if delay < floor => (floor, false),
                    Some(delay) => (delay, false),
                    None => return self.give_up(attempt, GiveUpReason::BackoffEnded),
                }
            }
        };
        if let (Some(started), Some(deadline)) = (self.started, shared.deadline) {
            // A deadline too far to represent never passes; a resume time
            // too far to represent always does.
            let resume = Instant::now().checked_add(delay);
            let end = started.checked_add(deadline);
            let passes = match (resume, end) {
                (_, None) => false,
                (None, Some(_)) => true,
                (Some(at), Some(end)) => at > end,
            };
            if passes {
                return self.give_up(attempt, GiveUpReason::Deadline);
            }
        }
        let Some(next) = self.source.again() else {
            return self.give_up(attempt, GiveUpReason::NotReplayable);
        };
        if let Some(budget) = &shared.budget
            && !budget.try_withdraw()
        {
            shared
                .listeners
                .emit(&shared.name, || RetryEvent::BudgetExhausted { attempt });
            return self.give_up(attempt, GiveUpReason::BudgetExhausted);
        }
        shared.listeners.emit(&shared.name, || RetryEvent::Retry {
            attempt,
            delay,
            reason,
            hinted,
        });
        Next::RetryAfter(delay, next)
    }
}

impl<F, S, C, B, Src, Res, E> Future for ResponseFuture<F, S, C, B, Src>
where
    F: Future<Output = Result<Res, E>>,
    Src: ReplaySource,
    S: Service<Src::Request, Response = Res, Error = E, Future = F>,
    E: Into<BoxError> + 'static,
    C: Classify<Res, E>,
    B: MakeDelays,
    B::Delays: Send + 'static,
{
    type Output = Result<Res, BoxError>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Calling { future } => {
                    let result = ready!(span::in_scope(this.span, || future.poll(cx)));
                    span::close(this.span);
                    let retrying = match this.after {
                        After::Retrying(retrying) => retrying,
                        After::Watching(shared) => {
                            report_final(shared, *this.retryable, &result);
                            return Poll::Ready(result.map_err(Into::into));
                        }
                        After::Nothing => return Poll::Ready(result.map_err(Into::into)),
                    };
                    match retrying.decide(*this.attempt, *this.retryable, &result) {
                        Next::Return => return Poll::Ready(result.map_err(Into::into)),
                        Next::RetryAfter(delay, next) if delay.is_zero() => {
                            this.state.set(State::Readying {
                                deadline: None,
                                next: Some(next),
                            });
                        }
                        Next::RetryAfter(delay, next) => {
                            this.state.set(State::Sleeping {
                                sleep: Box::pin(sleep(delay)),
                                next: Some(next),
                            });
                        }
                    }
                }
                StateProj::Sleeping { sleep, next } => {
                    ready!(sleep.as_mut().poll(cx));
                    let next = next.take();
                    this.state.set(State::Readying {
                        deadline: None,
                        next,
                    });
                }
                StateProj::Readying { deadline, next } => {
                    let After::Retrying(retrying) = this.after else {
                        unreachable!("only retries get here")
                    };
                    // Drive the clone's readiness before every attempt,
                    // until the deadline if there is one.
                    match retrying.service.poll_ready(cx) {
                        Poll::Ready(Ok(())) => {}
                        Poll::Ready(Err(err)) => return Poll::Ready(Err(err.into())),
                        Poll::Pending => {
                            let shared = &retrying.shared;
                            let (Some(started), Some(limit)) = (retrying.started, shared.deadline)
                            else {
                                return Poll::Pending;
                            };
                            let Some(end) = started.checked_add(limit) else {
                                return Poll::Pending;
                            };
                            let timer = deadline.get_or_insert_with(|| Box::pin(sleep_until(end)));
                            ready!(timer.as_mut().poll(cx));
                            let attempts = *this.attempt;
                            shared.listeners.emit(&shared.name, || RetryEvent::GaveUp {
                                attempts,
                                reason: GiveUpReason::Deadline,
                            });
                            return Poll::Ready(Err(Elapsed::retry_deadline(
                                shared.name.clone(),
                                limit,
                            )
                            .into()));
                        }
                    }
                    let request = next.take().expect("prepared by decide");
                    *this.attempt += 1;
                    let shared = &retrying.shared;
                    let attempt = *this.attempt;
                    *this.span =
                        span::attempt_span(shared.attempt_spans, &shared.name, attempt, Src::HTTP);
                    let service = &mut retrying.service;
                    let future = span::in_scope(this.span, || {
                        shared
                            .listeners
                            .emit(&shared.name, || RetryEvent::Attempt { attempt });
                        service.call(request)
                    });
                    this.state.set(State::Calling { future });
                }
            }
        }
    }
}
