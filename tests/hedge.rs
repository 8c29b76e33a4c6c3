//! The hedge layer on paused time: each mode, the delay (fixed, per
//! attempt, percentile), who wins, the failure returned when all fail,
//! cancellation of the losers (no attempt keeps running, no permit leaks),
//! the budget, idempotency, pushback; and against a real hyper server
//! through reqwest.

#[path = "support/http_server.rs"]
mod http_server;

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use palisade::BoxError;
use palisade::bulkhead::BulkheadLayer;
use palisade::circuit_breaker::CircuitBreakerLayer;
use palisade::classify::{Classify, ClassifyRequest, DelayHint, JudgesAtHead, Outcome};
use palisade::error::ErrorKind;
use palisade::event::Event;
use palisade::hedge::{HedgeEvent, HedgeLayer, HedgeMode, HedgeTrigger, SkipReason};
use palisade::retry::RetryBudget;
use tokio::time::Instant;
use tower::{Layer, Service, ServiceExt};

const MS: Duration = Duration::from_millis(1);

/// What one call to the [`Replica`] does.
#[derive(Debug, Clone, Copy)]
enum Step {
    /// Answers `Ok(n)` (n: the call's number, from 1) after this many ms.
    Answer(u64),
    /// Fails with this message after this many ms.
    Fail(u64, &'static str),
}

/// One call as the replica saw it.
#[derive(Debug, Clone)]
struct Seen {
    started: Duration,
    /// When it answered, or was dropped.
    ended: Option<Duration>,
    /// Dropped before it answered.
    cancelled: bool,
}

/// A scripted downstream: the `n`th call takes the `n`th step, and once
/// the script has run out, answers at once. It logs when each call
/// started, ended, or was dropped unfinished.
#[derive(Debug, Clone)]
struct Replica {
    script: Arc<Mutex<VecDeque<Step>>>,
    seen: Arc<Mutex<Vec<Seen>>>,
    origin: Instant,
    not_ready_until: Arc<Mutex<Option<Instant>>>,
}

impl Replica {
    fn new(script: impl IntoIterator<Item = Step>) -> Self {
        Self {
            script: Arc::new(Mutex::new(script.into_iter().collect())),
            seen: Arc::default(),
            origin: Instant::now(),
            not_ready_until: Arc::default(),
        }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    fn starts_ms(&self) -> Vec<u128> {
        self.seen().iter().map(|s| s.started.as_millis()).collect()
    }

    fn cancelled(&self) -> usize {
        self.seen().iter().filter(|s| s.cancelled).count()
    }

    /// Every call has answered or been dropped.
    fn none_running(&self) -> bool {
        self.seen().iter().all(|s| s.ended.is_some() || s.cancelled)
    }
}

/// Marks its call cancelled if dropped before the call answered.
struct Watch {
    seen: Arc<Mutex<Vec<Seen>>>,
    index: usize,
    origin: Instant,
    done: bool,
}

impl Drop for Watch {
    fn drop(&mut self) {
        let mut seen = self.seen.lock().unwrap();
        seen[self.index].ended = Some(self.origin.elapsed());
        seen[self.index].cancelled = !self.done;
    }
}

impl Service<u32> for Replica {
    type Response = u32;
    type Error = BoxError;
    type Future = BoxFuture<'static, Result<u32, BoxError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        let until = *self.not_ready_until.lock().unwrap();
        match until {
            Some(until) if Instant::now() < until => {
                let waker = cx.waker().clone();
                tokio::spawn(async move {
                    tokio::time::sleep_until(until).await;
                    waker.wake();
                });
                Poll::Pending
            }
            _ => Poll::Ready(Ok(())),
        }
    }

    fn call(&mut self, _req: u32) -> Self::Future {
        let step = self
            .script
            .lock()
            .unwrap()
            .pop_front()
            .unwrap_or(Step::Answer(0));
        let index = {
            let mut seen = self.seen.lock().unwrap();
            seen.push(Seen {
                started: self.origin.elapsed(),
                ended: None,
                cancelled: false,
            });
            seen.len() - 1
        };
        let watch = Watch {
            seen: self.seen.clone(),
            index,
            origin: self.origin,
            done: false,
        };
        Box::pin(async move {
            // The whole guard moves in (not only the field written below).
            let mut watch = watch;
            let result = match step {
                Step::Answer(ms) => {
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                    Ok(index as u32 + 1)
                }
                Step::Fail(ms, message) => {
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                    Err(message.into())
                }
            };
            watch.done = true;
            result
        })
    }
}

/// Fails every `Err`; `"fatal"` is not worth another attempt; a message
/// `"pushback:N"` asks for N ms, `"pushback:no"` for no retry at all.
#[derive(Clone, Copy)]
struct Judge;

impl Classify<u32, BoxError> for Judge {
    fn classify(&self, result: &Result<u32, BoxError>) -> Outcome {
        match result {
            Ok(_) => Outcome::Success,
            Err(_) => Outcome::Failure,
        }
    }

    fn is_retryable_failure(&self, result: &Result<u32, BoxError>) -> bool {
        matches!(result, Err(e) if e.to_string() != "fatal")
    }

    fn delay_hint(&self, result: &Result<u32, BoxError>) -> Option<DelayHint> {
        let message = result.as_ref().err()?.to_string();
        match message.strip_prefix("pushback:")? {
            "no" => Some(DelayHint::DoNotRetry),
            ms => Some(DelayHint::After(Duration::from_millis(ms.parse().ok()?))),
        }
    }
}

/// Requests 1000 and above may not be sent twice.
impl ClassifyRequest<u32> for Judge {
    fn is_retryable(&self, req: &u32) -> bool {
        *req < 1000
    }
}

impl JudgesAtHead for Judge {}

/// Every event a layer emits, as it reads.
fn recorder() -> (
    Arc<Mutex<Vec<String>>>,
    impl Fn(&Event<'_>) + Send + Sync + 'static,
) {
    let events = Arc::new(Mutex::new(Vec::new()));
    let seen = events.clone();
    (events, move |event: &Event<'_>| {
        seen.lock().unwrap().push(event.to_string())
    })
}

/// The hedge events of a layer, as values.
fn hedge_events() -> (
    Arc<Mutex<Vec<HedgeEvent>>>,
    impl Fn(&Event<'_>) + Send + Sync + 'static,
) {
    let events = Arc::new(Mutex::new(Vec::new()));
    let seen = events.clone();
    (events, move |event: &Event<'_>| {
        if let Some(what) = event.kind::<HedgeEvent>() {
            seen.lock().unwrap().push(*what);
        }
    })
}

async fn call<S: Service<u32, Response = u32, Error = BoxError>>(
    svc: &mut S,
    req: u32,
) -> Result<u32, BoxError> {
    svc.ready().await?.call(req).await
}

#[tokio::test(start_paused = true)]
async fn a_slow_first_attempt_is_hedged_after_the_delay_and_the_loser_cancelled() {
    let replica = Replica::new([Step::Answer(1000), Step::Answer(10)]);
    let (events, listen) = recorder();
    let hedge = HedgeLayer::builder()
        .name("reads")
        .classifier(Judge)
        .delay(50 * MS)
        .on_event(listen)
        .build()
        .unwrap();
    let mut svc = hedge.layer(replica.clone());
    let started = Instant::now();
    assert_eq!(call(&mut svc, 7).await.unwrap(), 2, "the hedge won");
    assert_eq!(started.elapsed(), 60 * MS);
    assert_eq!(replica.starts_ms(), [0, 50]);
    assert_eq!(replica.cancelled(), 1, "the first attempt was dropped");
    assert!(replica.seen()[0].cancelled);
    assert!(replica.none_running());
    assert_eq!(
        *events.lock().unwrap(),
        [
            "hedge `reads`: attempt 2 started: the last attempt was slow",
            "hedge `reads`: attempt 2 of 2 won",
            "hedge `reads`: 1 attempt(s) cancelled",
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn an_answer_within_the_delay_sends_nothing_more() {
    let replica = Replica::new([Step::Answer(49)]);
    let (events, listen) = hedge_events();
    let hedge = HedgeLayer::builder()
        .classifier(Judge)
        .delay(50 * MS)
        .max_attempts(5)
        .on_event(listen)
        .build()
        .unwrap();
    let mut svc = hedge.layer(replica.clone());
    assert_eq!(call(&mut svc, 7).await.unwrap(), 1);
    // And one that answers at its first poll.
    assert_eq!(call(&mut svc, 7).await.unwrap(), 2);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(replica.starts_ms(), [0, 49]);
    assert_eq!(
        *events.lock().unwrap(),
        [
            HedgeEvent::Won {
                attempt: 1,
                attempts: 1
            },
            HedgeEvent::Won {
                attempt: 1,
                attempts: 1
            }
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn each_further_attempt_waits_the_delay_after_the_one_before() {
    let replica = Replica::new([
        Step::Answer(1000),
        Step::Answer(1000),
        Step::Answer(1000),
        Step::Answer(5),
    ]);
    let hedge = HedgeLayer::builder()
        .classifier(Judge)
        .delay(20 * MS)
        .max_attempts(4)
        .no_budget()
        .build()
        .unwrap();
    let mut svc = hedge.layer(replica.clone());
    assert_eq!(call(&mut svc, 7).await.unwrap(), 4);
    assert_eq!(replica.starts_ms(), [0, 20, 40, 60]);
    assert_eq!(replica.cancelled(), 3);
    let ends: Vec<_> = replica.seen().iter().map(|s| s.ended).collect();
    assert_eq!(
        ends,
        [Some(65 * MS); 4],
        "the losers ran until the winner answered"
    );

    // The fourth of five wins, while the fifth runs beside it.
    let hedge5 = HedgeLayer::builder()
        .classifier(Judge)
        .delay(20 * MS)
        .max_attempts(5)
        .no_budget()
        .build()
        .unwrap();
    let replica = Replica::new([
        Step::Answer(1000),
        Step::Answer(1000),
        Step::Answer(1000),
        Step::Answer(50),
        Step::Answer(1000),
    ]);
    let mut svc = hedge5.layer(replica.clone());
    assert_eq!(call(&mut svc, 7).await.unwrap(), 4);
    assert_eq!(replica.starts_ms(), [0, 20, 40, 60, 80]);
    let ends: Vec<_> = replica.seen().iter().map(|s| s.ended).collect();
    assert_eq!(ends, [Some(110 * MS); 5]);

    // The third of four wins, while the others run.
    let replica = Replica::new([
        Step::Answer(1000),
        Step::Answer(1000),
        Step::Answer(30),
        Step::Answer(1000),
    ]);
    let mut svc = hedge.layer(replica.clone());
    assert_eq!(call(&mut svc, 7).await.unwrap(), 3);
    assert_eq!(replica.starts_ms(), [0, 20, 40, 60]);
    let ends: Vec<_> = replica.seen().iter().map(|s| s.ended).collect();
    assert_eq!(ends, [Some(70 * MS); 4]);
}

#[tokio::test(start_paused = true)]
async fn the_last_allowed_attempt_is_waited_for_to_the_end() {
    let replica = Replica::new([Step::Answer(300), Step::Answer(200)]);
    let hedge = HedgeLayer::builder()
        .classifier(Judge)
        .delay(20 * MS)
        .max_attempts(2)
        .build()
        .unwrap();
    let mut svc = hedge.layer(replica.clone());
    let started = Instant::now();
    assert_eq!(
        call(&mut svc, 7).await.unwrap(),
        2,
        "the hedge answers at 220 ms"
    );
    assert_eq!(started.elapsed(), 220 * MS);
    assert_eq!(replica.starts_ms(), [0, 20], "no third attempt");
}

#[tokio::test(start_paused = true)]
async fn a_delay_fn_gives_each_attempt_its_delay() {
    let replica = Replica::new([Step::Answer(1000), Step::Answer(1000), Step::Answer(1000)]);
    let asked = Arc::new(Mutex::new(Vec::new()));
    let log = asked.clone();
    let hedge = HedgeLayer::builder()
        .classifier(Judge)
        .max_attempts(3)
        .no_budget()
        .delay_fn(move |attempt| {
            log.lock().unwrap().push(attempt);
            Duration::from_millis(10 * u64::from(attempt))
        })
        .build()
        .unwrap();
    let mut svc = hedge.layer(replica.clone());
    assert_eq!(
        call(&mut svc, 7).await.unwrap(),
        1,
        "the first still answers first"
    );
    assert_eq!(replica.starts_ms(), [0, 20, 50]);
    assert_eq!(*asked.lock().unwrap(), [2, 3]);
}

#[tokio::test(start_paused = true)]
async fn parallel_mode_sends_every_attempt_at_once_and_the_fastest_wins() {
    let replica = Replica::new([Step::Answer(30), Step::Answer(10), Step::Answer(20)]);
    let (events, listen) = hedge_events();
    let hedge = HedgeLayer::builder()
        .classifier(Judge)
        .mode(HedgeMode::Parallel)
        .max_attempts(3)
        .no_budget()
        .on_event(listen)
        .build()
        .unwrap();
    let mut svc = hedge.layer(replica.clone());
    let started = Instant::now();
    assert_eq!(call(&mut svc, 7).await.unwrap(), 2);
    assert_eq!(started.elapsed(), 10 * MS);
    assert_eq!(replica.starts_ms(), [0, 0, 0]);
    assert_eq!(replica.cancelled(), 2);
    assert_eq!(
        *events.lock().unwrap(),
        [
            HedgeEvent::Hedged {
                attempt: 2,
                trigger: HedgeTrigger::Parallel
            },
            HedgeEvent::Hedged {
                attempt: 3,
                trigger: HedgeTrigger::Parallel
            },
            HedgeEvent::Won {
                attempt: 2,
                attempts: 3
            },
            HedgeEvent::Cancelled { attempts: 2 },
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn fallback_mode_waits_for_a_failure_then_sends_the_next_at_once() {
    // Slow, but no failure: never hedged.
    let replica = Replica::new([Step::Answer(5000)]);
    let hedge = HedgeLayer::builder()
        .classifier(Judge)
        .mode(HedgeMode::Fallback)
        .max_attempts(3)
        .build()
        .unwrap();
    let mut svc = hedge.layer(replica.clone());
    assert_eq!(call(&mut svc, 7).await.unwrap(), 1);
    assert_eq!(replica.starts_ms(), [0]);

    let replica = Replica::new([
        Step::Fail(30, "busy"),
        Step::Fail(30, "busy"),
        Step::Answer(5),
    ]);
    let mut svc = hedge.layer(replica.clone());
    assert_eq!(call(&mut svc, 7).await.unwrap(), 3);
    assert_eq!(replica.starts_ms(), [0, 30, 60]);
    assert_eq!(replica.cancelled(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_retryable_failure_starts_the_next_attempt_before_the_delay() {
    let replica = Replica::new([Step::Fail(5, "busy"), Step::Answer(10)]);
    let (events, listen) = hedge_events();
    let hedge = HedgeLayer::builder()
        .classifier(Judge)
        .delay(Duration::from_secs(1))
        .on_event(listen)
        .build()
        .unwrap();
    let mut svc = hedge.layer(replica.clone());
    assert_eq!(call(&mut svc, 7).await.unwrap(), 2);
    assert_eq!(replica.starts_ms(), [0, 5]);
    assert_eq!(
        events.lock().unwrap()[0],
        HedgeEvent::Hedged {
            attempt: 2,
            trigger: HedgeTrigger::Failure
        }
    );
}

#[tokio::test(start_paused = true)]
async fn a_fatal_failure_ends_the_call_and_cancels_the_rest() {
    // The hedge starts at 20 ms; the first attempt fails fatally at 30.
    let replica = Replica::new([Step::Fail(30, "fatal"), Step::Answer(100)]);
    let (events, listen) = hedge_events();
    let hedge = HedgeLayer::builder()
        .classifier(Judge)
        .delay(20 * MS)
        .max_attempts(3)
        .on_event(listen)
        .build()
        .unwrap();
    let mut svc = hedge.layer(replica.clone());
    let started = Instant::now();
    let err = call(&mut svc, 7).await.unwrap_err();
    assert_eq!(err.to_string(), "fatal");
    assert_eq!(started.elapsed(), 30 * MS);
    assert_eq!(replica.starts_ms(), [0, 20]);
    assert_eq!(replica.cancelled(), 1);
    assert!(replica.none_running());
    assert_eq!(
        events.lock().unwrap()[1..],
        [
            HedgeEvent::Failed {
                attempt: 1,
                attempts: 2,
                fatal: true
            },
            HedgeEvent::Cancelled { attempts: 1 },
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn when_every_attempt_fails_the_first_attempts_failure_is_returned() {
    // The hedge fails first (at 30 ms), the first attempt later (at 50).
    let replica = Replica::new([Step::Fail(50, "first"), Step::Fail(10, "second")]);
    let (events, listen) = hedge_events();
    let hedge = HedgeLayer::builder()
        .classifier(Judge)
        .delay(20 * MS)
        .on_event(listen)
        .build()
        .unwrap();
    let mut svc = hedge.layer(replica.clone());
    let err = call(&mut svc, 7).await.unwrap_err();
    assert_eq!(err.to_string(), "first");
    assert_eq!(
        events.lock().unwrap().last(),
        Some(&HedgeEvent::Failed {
            attempt: 1,
            attempts: 2,
            fatal: false
        })
    );

    // And when the first fails first.
    let replica = Replica::new([Step::Fail(5, "first"), Step::Fail(10, "second")]);
    let mut svc = hedge.layer(replica.clone());
    assert_eq!(call(&mut svc, 7).await.unwrap_err().to_string(), "first");
    assert_eq!(replica.starts_ms(), [0, 5]);
}

#[tokio::test(start_paused = true)]
async fn pushback_delays_the_next_attempt_and_do_not_retry_stops_them() {
    let replica = Replica::new([Step::Fail(5, "pushback:100"), Step::Answer(10)]);
    let hedge = HedgeLayer::builder()
        .classifier(Judge)
        .delay(Duration::from_secs(1))
        .build()
        .unwrap();
    let mut svc = hedge.layer(replica.clone());
    assert_eq!(call(&mut svc, 7).await.unwrap(), 2);
    assert_eq!(
        replica.starts_ms(),
        [0, 105],
        "after the pushback, not at once"
    );

    let replica = Replica::new([Step::Fail(5, "pushback:no"), Step::Answer(10)]);
    let (events, listen) = hedge_events();
    let hedge = HedgeLayer::builder()
        .classifier(Judge)
        .delay(20 * MS)
        .max_attempts(3)
        .on_event(listen)
        .build()
        .unwrap();
    let mut svc = hedge.layer(replica.clone());
    assert_eq!(
        call(&mut svc, 7).await.unwrap_err().to_string(),
        "pushback:no"
    );
    assert_eq!(replica.starts_ms(), [0]);
    assert_eq!(
        events.lock().unwrap()[0],
        HedgeEvent::Skipped {
            attempt: 2,
            reason: SkipReason::ServerSaidNo
        }
    );

    // A pushback at the cap is within it.
    let replica = Replica::new([Step::Fail(5, "pushback:100"), Step::Answer(10)]);
    let hedge = HedgeLayer::builder()
        .classifier(Judge)
        .delay(Duration::from_secs(1))
        .max_hint(100 * MS)
        .build()
        .unwrap();
    let mut svc = hedge.layer(replica.clone());
    assert_eq!(call(&mut svc, 7).await.unwrap(), 2);
    assert_eq!(replica.starts_ms(), [0, 105]);

    // A pushback above the cap stops them too.
    let replica = Replica::new([Step::Fail(5, "pushback:5000"), Step::Answer(10)]);
    let hedge = HedgeLayer::builder()
        .classifier(Judge)
        .max_hint(Duration::from_secs(1))
        .build()
        .unwrap();
    let mut svc = hedge.layer(replica.clone());
    assert!(call(&mut svc, 7).await.is_err());
    assert_eq!(replica.starts_ms(), [0]);
}

#[tokio::test(start_paused = true)]
async fn a_pushback_while_others_run_moves_the_next_hedge() {
    // Attempt 2 starts at 20 ms and fails at 25 asking for 100 ms: attempt
    // 3 starts at 125, not at 40 (the delay) nor 25 (at once).
    let replica = Replica::new([
        Step::Answer(1000),
        Step::Fail(5, "pushback:100"),
        Step::Answer(1),
    ]);
    let hedge = HedgeLayer::builder()
        .classifier(Judge)
        .delay(20 * MS)
        .max_attempts(3)
        .no_budget()
        .build()
        .unwrap();
    let mut svc = hedge.layer(replica.clone());
    assert_eq!(call(&mut svc, 7).await.unwrap(), 3);
    assert_eq!(replica.starts_ms(), [0, 20, 125]);
}

#[tokio::test(start_paused = true)]
async fn the_budget_bounds_the_hedges() {
    // No budget at all: nothing is hedged, and the listeners hear why.
    let empty = RetryBudget::new(Duration::from_secs(1), 0, 0.0).unwrap();
    let replica = Replica::new([Step::Answer(100)]);
    let (events, listen) = hedge_events();
    let hedge = HedgeLayer::builder()
        .classifier(Judge)
        .delay(10 * MS)
        .budget(empty)
        .on_event(listen)
        .build()
        .unwrap();
    let mut svc = hedge.layer(replica.clone());
    assert_eq!(call(&mut svc, 7).await.unwrap(), 1);
    assert_eq!(replica.starts_ms(), [0]);
    assert_eq!(
        events.lock().unwrap()[0],
        HedgeEvent::Skipped {
            attempt: 2,
            reason: SkipReason::BudgetExhausted
        }
    );

    // A budget of half the calls: of 20 slow calls at once, 10 are hedged.
    let half = RetryBudget::new(Duration::from_secs(10), 0, 0.5).unwrap();
    let replica = Replica::new((0..20).map(|_| Step::Answer(100)));
    let hedge = HedgeLayer::builder()
        .classifier(Judge)
        .delay(10 * MS)
        .budget(half.clone())
        .build()
        .unwrap();
    let svc = hedge.layer(replica.clone());
    let calls: Vec<_> = (0..20).map(|_| svc.clone().oneshot(7)).collect();
    let answers = futures_util::future::join_all(calls).await;
    assert!(answers.iter().all(Result::is_ok));
    assert_eq!(replica.seen().len(), 30);
    assert_eq!(half.remaining(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_budget_shared_with_a_retry_holds_retries_and_hedges_together() {
    use palisade::retry::RetryLayer;
    let shared = RetryBudget::new(Duration::from_secs(10), 0, 0.5).unwrap();
    let hedge = HedgeLayer::builder()
        .classifier(Judge)
        .delay(10 * MS)
        .budget(shared.clone())
        .build()
        .unwrap();
    let retry = RetryLayer::builder()
        .classifier(Judge)
        .budget(shared.clone())
        .build()
        .unwrap();
    // Two calls through each: four deposits, two withdrawals allowed.
    let slow = Replica::new((0..2).map(|_| Step::Answer(100)));
    let hedged = hedge.layer(slow.clone());
    for _ in 0..2 {
        hedged.clone().oneshot(7).await.unwrap();
    }
    let failing = Replica::new((0..10).map(|_| Step::Fail(0, "busy")));
    let retried = retry.layer(failing.clone());
    for _ in 0..2 {
        assert!(retried.clone().oneshot(7).await.is_err());
    }
    let sent = slow.seen().len() - 2 + failing.seen().len() - 2;
    assert_eq!(
        sent, 2,
        "hedges and retries together: half of the four calls"
    );
}

#[tokio::test(start_paused = true)]
async fn a_request_that_may_not_be_sent_twice_is_never_hedged() {
    let replica = Replica::new([Step::Fail(100, "busy"), Step::Answer(1)]);
    let hedge = HedgeLayer::builder()
        .classifier(Judge)
        .delay(10 * MS)
        .mode(HedgeMode::Latency)
        .build()
        .unwrap();
    let mut svc = hedge.layer(replica.clone());
    assert_eq!(call(&mut svc, 1000).await.unwrap_err().to_string(), "busy");
    assert_eq!(
        replica.starts_ms(),
        [0],
        "sent once, even after its failure"
    );
}

#[tokio::test(start_paused = true)]
async fn a_refusal_below_stops_the_hedging_and_is_returned_if_nothing_else_runs() {
    let breaker = CircuitBreakerLayer::builder()
        .classifier(Judge)
        .build()
        .unwrap();
    breaker.handle().force_open();
    let replica = Replica::new([]);
    let (events, listen) = hedge_events();
    let hedge = HedgeLayer::builder()
        .classifier(Judge)
        .delay(10 * MS)
        .max_attempts(3)
        .on_event(listen)
        .build()
        .unwrap();
    let mut svc = hedge.layer(breaker.layer(replica.clone()));
    let started = Instant::now();
    let ready = svc.ready().await.unwrap();
    let err = ready.call(7).await.unwrap_err();
    assert_eq!(ErrorKind::of(&err), ErrorKind::CircuitOpen);
    assert_eq!(started.elapsed(), Duration::ZERO, "no delay waited for");
    assert!(replica.seen().is_empty());
    assert_eq!(
        *events.lock().unwrap(),
        [
            HedgeEvent::Skipped {
                attempt: 2,
                reason: SkipReason::Refused
            },
            HedgeEvent::Failed {
                attempt: 1,
                attempts: 1,
                fatal: false
            }
        ]
    );

    // A hedge refused while the first attempt runs: the first still wins.
    breaker.handle().reset();
    let bulkhead = BulkheadLayer::builder().max_concurrent(1).build().unwrap();
    let replica = Replica::new([Step::Answer(100)]);
    let mut svc = hedge.layer(bulkhead.layer(replica.clone()));
    assert_eq!(call(&mut svc, 7).await.unwrap(), 1);
    assert_eq!(replica.starts_ms(), [0]);
}

/// A rate limiter below refuses the hedge in its future: with a further
/// attempt allowed, the hedging stops and says so; on the last allowed
/// attempt there is nothing to stop, and no event. The first attempt wins
/// either way.
#[tokio::test(start_paused = true)]
async fn a_hedge_refused_below_stops_the_hedging_and_the_first_attempt_still_wins() {
    use palisade::rate_limit::RateLimitLayer;
    for (max_attempts, skipped) in [(3, true), (2, false)] {
        let limiter = RateLimitLayer::builder()
            .rate(1, Duration::from_secs(3600))
            .burst(1)
            .build()
            .unwrap();
        let replica = Replica::new([Step::Answer(100)]);
        let (events, listen) = hedge_events();
        let hedge = HedgeLayer::builder()
            .classifier(Judge)
            .delay(20 * MS)
            .max_attempts(max_attempts)
            .no_budget()
            .on_event(listen)
            .build()
            .unwrap();
        let mut svc = hedge.layer(limiter.layer(replica.clone()));
        assert_eq!(call(&mut svc, 7).await.unwrap(), 1);
        assert_eq!(
            replica.starts_ms(),
            [0],
            "the hedge never reached the service"
        );
        let events = events.lock().unwrap().clone();
        assert_eq!(
            events.contains(&HedgeEvent::Skipped {
                attempt: 3,
                reason: SkipReason::Refused
            }),
            skipped,
            "{max_attempts} attempts: {events:?}"
        );
        assert_eq!(
            events.last(),
            Some(&HedgeEvent::Won {
                attempt: 1,
                attempts: 2
            })
        );
    }
}

/// Once no attempt runs (the first failed without reading its body), the
/// next copy is made as the retry makes it: it takes the body over, read
/// or not. (Beside a running attempt, only a body read whole is copied.)
#[tokio::test(start_paused = true)]
async fn after_a_failure_with_nothing_running_an_unread_body_is_sent_again() {
    use bytes::Bytes;
    use http_body_util::{BodyExt, Full};
    use palisade::classify::HttpClassifier;
    use palisade::replay::{ReplayBodies, ReplayBody};
    let calls = Arc::new(Mutex::new(Vec::new()));
    let seen = calls.clone();
    let inner = tower::service_fn(move |req: http::Request<ReplayBody<Full<Bytes>>>| {
        let seen = seen.clone();
        async move {
            let n = seen.lock().unwrap().len();
            if n == 0 {
                // A connection that fails before the body is read.
                seen.lock().unwrap().push(Vec::new());
                return Ok::<_, BoxError>(http::Response::builder().status(503).body(()).unwrap());
            }
            let body = req.into_body().collect().await?.to_bytes();
            seen.lock().unwrap().push(body.to_vec());
            Ok(http::Response::new(()))
        }
    });
    let hedge = HedgeLayer::builder()
        .classifier(HttpClassifier::default())
        .requests(ReplayBodies::default())
        .mode(HedgeMode::Fallback)
        .build()
        .unwrap();
    let request = http::Request::put("/stock")
        .body(Full::new(Bytes::from_static(b"12 boxes")))
        .unwrap();
    let response = hedge.layer(inner).oneshot(request).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(*calls.lock().unwrap(), [b"".to_vec(), b"12 boxes".to_vec()]);
}

#[tokio::test(start_paused = true)]
async fn a_breaker_below_counts_the_cancelled_loser_as_neither_success_nor_failure() {
    let breaker = CircuitBreakerLayer::builder()
        .classifier(Judge)
        .build()
        .unwrap();
    let replica = Replica::new([Step::Answer(1000), Step::Answer(10)]);
    let hedge = HedgeLayer::builder()
        .classifier(Judge)
        .delay(50 * MS)
        .build()
        .unwrap();
    let mut svc = hedge.layer(breaker.layer(replica.clone()));
    assert_eq!(call(&mut svc, 7).await.unwrap(), 2);
    let metrics = breaker.handle().metrics();
    assert_eq!(metrics.calls, 1, "the winner only");
    assert_eq!(metrics.failures, 0);
}

#[tokio::test(start_paused = true)]
async fn losers_give_their_bulkhead_permits_back_and_a_dropped_call_cancels_every_attempt() {
    let bulkhead = BulkheadLayer::builder().max_concurrent(5).build().unwrap();
    let replica = Replica::new([Step::Answer(1000), Step::Answer(1000), Step::Answer(10)]);
    let hedge = HedgeLayer::builder()
        .classifier(Judge)
        .delay(20 * MS)
        .max_attempts(3)
        .no_budget()
        .build()
        .unwrap();
    let mut svc = hedge.layer(bulkhead.layer(replica.clone()));
    assert_eq!(call(&mut svc, 7).await.unwrap(), 3);
    assert_eq!(bulkhead.handle().in_flight(), 0);
    assert_eq!(replica.cancelled(), 2);

    // A caller that gives up (its own timeout) drops every attempt.
    let replica = Replica::new([Step::Answer(1000), Step::Answer(1000), Step::Answer(1000)]);
    let mut svc = hedge.layer(bulkhead.layer(replica.clone()));
    let gave_up = tokio::time::timeout(100 * MS, call(&mut svc, 7)).await;
    assert!(gave_up.is_err());
    assert_eq!(replica.starts_ms(), [0, 20, 40]);
    assert_eq!(replica.cancelled(), 3);
    assert_eq!(bulkhead.handle().in_flight(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_hedge_waits_for_the_service_to_be_ready() {
    let replica = Replica::new([Step::Answer(1000), Step::Answer(10)]);
    let hedge = HedgeLayer::builder()
        .classifier(Judge)
        .delay(20 * MS)
        .build()
        .unwrap();
    let mut svc = hedge.layer(replica.clone());
    let ready = svc.ready().await.unwrap();
    *replica.not_ready_until.lock().unwrap() = Some(Instant::now() + 70 * MS);
    assert_eq!(ready.call(7).await.unwrap(), 2);
    assert_eq!(replica.starts_ms(), [0, 70]);
}

#[tokio::test(start_paused = true)]
async fn the_percentile_delay_follows_recent_latencies_after_its_warm_up() {
    let hedge = HedgeLayer::builder()
        .classifier(Judge)
        .delay(500 * MS)
        .delay_percentile(90.0, 20, Duration::from_secs(10))
        .no_budget()
        .build()
        .unwrap();
    // 19 calls answering in 20 ms: one short of the minimum.
    let replica = Replica::new((0..19).map(|_| Step::Answer(20)));
    let svc = hedge.layer(replica.clone());
    for _ in 0..19 {
        svc.clone().oneshot(7).await.unwrap();
    }
    // A second later (the percentile is read again at most once per fifth
    // of its window), a slow call is hedged after the fixed delay.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let replica = Replica::new([Step::Answer(5000), Step::Answer(1)]);
    hedge.layer(replica.clone()).oneshot(7).await.unwrap();
    assert_eq!(
        replica.starts_ms(),
        [0, 500],
        "before the minimum: the fixed delay"
    );
    // That call's winner (1 ms) and its cancelled loser (501 ms) are
    // samples 20 and 21; more fast calls make p90 20 ms again.
    let replica = Replica::new((0..30).map(|_| Step::Answer(20)));
    let svc = hedge.layer(replica.clone());
    for _ in 0..30 {
        svc.clone().oneshot(7).await.unwrap();
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let replica = Replica::new([Step::Answer(5000), Step::Answer(1)]);
    hedge.layer(replica.clone()).oneshot(7).await.unwrap();
    // p90 of the 51 samples (49 of 20 ms, the 1 ms winner, the 501 ms
    // loser) is 20 ms, read as its class's
    // upper edge (20,000 µs lies in [18,432, 20,480)): 20.48 ms, which
    // tokio's millisecond timer rounds up to 21.
    assert_eq!(replica.starts_ms(), [0, 21]);
    // Ten seconds of quiet: the samples leave the window, and the fixed
    // delay is back.
    tokio::time::sleep(Duration::from_secs(12)).await;
    let replica = Replica::new([Step::Answer(5000), Step::Answer(1)]);
    hedge.layer(replica.clone()).oneshot(7).await.unwrap();
    assert_eq!(replica.starts_ms(), [0, 500]);
}

#[tokio::test(start_paused = true)]
async fn the_builder_refuses_what_it_cannot_do() {
    let refused = |b: palisade::hedge::HedgeBuilder| b.build().unwrap_err().to_string();
    assert_eq!(
        refused(HedgeLayer::builder().max_attempts(6)),
        "invalid `max_attempts`: must be from 1 to 5, got 6"
    );
    assert_eq!(
        refused(HedgeLayer::builder().max_attempts(0)),
        "invalid `max_attempts`: must be from 1 to 5, got 0"
    );
    assert!(refused(HedgeLayer::builder().delay(Duration::ZERO)).contains("HedgeMode::Parallel"));
    assert!(refused(HedgeLayer::builder().max_hint(Duration::ZERO)).contains("max_hint"));
    for percent in [0.0, 100.0, -1.0, f64::NAN] {
        assert!(
            refused(HedgeLayer::builder().delay_percentile(percent, 10, Duration::from_secs(1)))
                .contains("(0, 100)"),
            "{percent}"
        );
    }
    assert!(
        refused(HedgeLayer::builder().delay_percentile(95.0, 0, Duration::from_secs(1)))
            .contains("min_samples")
    );
    assert!(refused(HedgeLayer::builder().delay_percentile(95.0, 10, MS)).contains("at least 5ms"));
    assert!(HedgeLayer::builder().max_attempts(5).build().is_ok());
    assert!(HedgeLayer::builder().max_attempts(1).build().is_ok());
}

#[tokio::test(start_paused = true)]
async fn one_attempt_allowed_sends_every_call_once() {
    let replica = Replica::new([Step::Answer(1000)]);
    let hedge = HedgeLayer::builder()
        .classifier(Judge)
        .max_attempts(1)
        .delay(MS)
        .build()
        .unwrap();
    let mut svc = hedge.layer(replica.clone());
    assert_eq!(call(&mut svc, 7).await.unwrap(), 1);
    assert_eq!(replica.starts_ms(), [0]);
}

#[tokio::test(start_paused = true)]
async fn debug_shows_the_settings_and_the_call() {
    let hedge = HedgeLayer::builder()
        .name("reads")
        .delay(20 * MS)
        .max_attempts(3)
        .build()
        .unwrap();
    let text = format!("{hedge:?}");
    assert!(
        text.starts_with(
            "HedgeLayer { name: \"reads\", max_attempts: 3, mode: Latency, delay: Fixed(20ms)"
        ),
        "{text}"
    );
    let builder = format!("{:?}", HedgeLayer::builder().name("b"));
    assert!(
        builder.starts_with("HedgeBuilder { name: \"b\", max_attempts: 2"),
        "{builder}"
    );
    let percentile = format!(
        "{:?}",
        HedgeLayer::builder()
            .delay_percentile(95.0, 10, Duration::from_secs(1))
            .build()
            .unwrap()
    );
    assert!(
        percentile.contains("Percentile { percentile: 95.0, min_samples: 10, until_then: 2s }"),
        "{percentile}"
    );
    let replica = Replica::new([Step::Answer(1000), Step::Answer(1000)]);
    let mut svc = HedgeLayer::builder()
        .classifier(Judge)
        .delay(20 * MS)
        .build()
        .unwrap()
        .layer(replica);
    assert!(format!("{svc:?}").contains("mode: Latency"));
    let mut future = svc.ready().await.unwrap().call(7);
    assert_eq!(
        format!("{future:?}"),
        "ResponseFuture { attempts: 1, running: 1, stopped: false }"
    );
    let _ = (&mut future).now_or_never();
    tokio::time::sleep(30 * MS).await;
    let _ = (&mut future).now_or_never();
    assert_eq!(
        format!("{future:?}"),
        "ResponseFuture { attempts: 2, running: 2, stopped: false }"
    );
    let once = HedgeLayer::builder().max_attempts(1).build().unwrap();
    let mut svc = once.layer(tower::service_fn(
        |n: u32| async move { Ok::<_, BoxError>(n) },
    ));
    let future = svc.ready().await.unwrap().call(1);
    assert_eq!(format!("{future:?}"), "ResponseFuture { hedged: false }");
}

mod real_peers {
    use super::http_server::{Reply, Server};
    use super::*;
    use palisade::classify::HttpClassifier;
    use palisade::replay::ReqwestRequests;

    /// reqwest against hyper's server: the first request is answered after
    /// an hour, so the hedge sent after 50 ms wins; the server saw both.
    ///
    /// On tokio's real clock, not paused time: paused time jumps to the
    /// server's next timer whenever the runtime waits for bytes in flight,
    /// which could deliver the hour-late answer first. No assertion here
    /// depends on how long anything took.
    #[tokio::test]
    async fn reqwest_to_a_slow_server_is_answered_by_the_hedge() {
        let server = Server::start(
            vec![
                Reply::status(200)
                    .body("slow")
                    .after(Duration::from_secs(3600)),
            ],
            Reply::status(200).body("fast"),
        )
        .await;
        let hedge = HedgeLayer::builder()
            .classifier(HttpClassifier::default())
            .requests(ReqwestRequests)
            .delay(50 * MS)
            .build()
            .unwrap();
        let mut client = hedge.layer(reqwest::Client::new());
        let request =
            reqwest::Request::new(reqwest::Method::GET, server.url("/item").parse().unwrap());
        let response = client.ready().await.unwrap().call(request).await.unwrap();
        assert_eq!(response.text().await.unwrap(), "fast");
        assert_eq!(server.seen().len(), 2);

        // A POST is sent once, and waits for its answer however slow.
        server.set_default(Reply::status(200).body("slow post").after(200 * MS));
        let mut request =
            reqwest::Request::new(reqwest::Method::POST, server.url("/item").parse().unwrap());
        *request.body_mut() = Some("payload".into());
        let response = client.ready().await.unwrap().call(request).await.unwrap();
        assert_eq!(response.text().await.unwrap(), "slow post");
        assert_eq!(server.seen().len(), 3);
        assert_eq!(server.seen()[2].body, b"payload");
    }
}

mod preset {
    use super::http_server::{Reply, Server};
    use super::*;
    use bytes::Bytes;
    use http_body_util::{BodyExt, Full};
    use hyper_util::client::legacy::Client;
    use hyper_util::client::legacy::connect::HttpConnector;
    use hyper_util::rt::TokioExecutor;
    use palisade::Resilience;
    use palisade::replay::ReplayBody;

    #[tokio::test(start_paused = true)]
    async fn the_hedge_fills_the_repeat_slot_and_the_breaker_below_ignores_its_losers() {
        let replica = Replica::new([Step::Answer(1000), Step::Answer(10)]);
        let stack = Resilience::builder()
            .classifier(Judge)
            .hedge(|hedge| hedge.delay(20 * MS))
            .circuit_breaker(|breaker| breaker.name("reads"))
            .build()
            .unwrap();
        let mut svc = stack.layer(replica.clone());
        assert_eq!(call(&mut svc, 7).await.unwrap(), 2);
        assert_eq!(replica.starts_ms(), [0, 20]);
        assert_eq!(stack.circuit_breaker().handle().metrics().calls, 1);
    }

    /// The standard HTTP stack with a hedge in its retry's place, over
    /// hyper's client and server: a GET and a PUT (idempotent; its body
    /// read whole by the first attempt, then replayed to the hedge) are
    /// hedged, a POST is sent once. Real time: see
    /// `reqwest_to_a_slow_server_is_answered_by_the_hedge`.
    #[tokio::test]
    async fn the_http_stack_hedges_idempotent_requests_through_hypers_client() {
        let hour = Duration::from_secs(3600);
        let server = Server::start(
            vec![
                Reply::status(200).body("slow").after(hour),
                Reply::status(200).body("fast"),
                Reply::status(200).body("slow").after(hour),
                Reply::status(200).body("fast"),
            ],
            Reply::status(200).body("post").after(100 * MS),
        )
        .await;
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let hyper: Client<_, ReplayBody<Full<Bytes>>> =
            Client::builder(TokioExecutor::new()).build(connector);
        let client = Resilience::http()
            .hedge(|hedge| hedge.delay(50 * MS))
            .build()
            .unwrap()
            .layer(hyper);
        let text = |res: http::Response<_>| async move {
            let body: Bytes = BodyExt::collect(res.into_body()).await.unwrap().to_bytes();
            String::from_utf8(body.to_vec()).unwrap()
        };

        let get = http::Request::get(server.url("/item"))
            .body(Full::new(Bytes::new()))
            .unwrap();
        let res = client.clone().oneshot(get).await.unwrap();
        assert_eq!(text(res).await, "fast");

        let put = http::Request::put(server.url("/stock"))
            .body(Full::new(Bytes::from_static(b"12 boxes")))
            .unwrap();
        let res = client.clone().oneshot(put).await.unwrap();
        assert_eq!(text(res).await, "fast");
        let seen = server.seen();
        assert_eq!(seen.len(), 4);
        assert_eq!(seen[2].body, b"12 boxes");
        assert_eq!(
            seen[3].body, b"12 boxes",
            "the hedge replays the whole body"
        );

        let post = http::Request::post(server.url("/orders"))
            .body(Full::new(Bytes::from_static(b"one")))
            .unwrap();
        let res = client.oneshot(post).await.unwrap();
        assert_eq!(text(res).await, "post");
        assert_eq!(server.seen().len(), 5, "a POST is sent once");
    }
}

mod stress {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering::SeqCst};

    /// Counts attempts started, answered and dropped unanswered.
    #[derive(Default)]
    struct Counts {
        started: AtomicU64,
        answered: AtomicU64,
        dropped: AtomicU64,
        /// Attempts of each call still running.
        running: Mutex<std::collections::HashMap<u32, u32>>,
    }

    struct Guard(Arc<Counts>, bool, u32);

    impl Guard {
        fn answered(&mut self) {
            self.1 = true;
        }
    }

    impl Drop for Guard {
        fn drop(&mut self) {
            *self.0.running.lock().unwrap().get_mut(&self.2).unwrap() -= 1;
            if self.1 {
                self.0.answered.fetch_add(1, SeqCst);
            } else {
                self.0.dropped.fetch_add(1, SeqCst);
            }
        }
    }

    /// Thousands of hedged calls from eight tasks on two worker threads,
    /// over a bulkhead, against a service whose attempts take a random
    /// number of polls and answer, fail retryably (10%) or fatally (1%):
    /// every call returns, with none of its attempts still running (the
    /// losers are dropped before the answer is handed back), every attempt
    /// that started either answered or was dropped, no bulkhead permit is
    /// left taken, and the attempts
    /// beyond the first stay within the budget's bound.
    #[test]
    fn hedged_calls_on_many_threads_leave_nothing_running_and_stay_within_the_budget() {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_time()
            .build()
            .unwrap();
        let counts = Arc::new(Counts::default());
        let budget = RetryBudget::new(Duration::from_secs(60), 0, 0.3).unwrap();
        let bulkhead = BulkheadLayer::builder()
            .max_concurrent(16)
            .max_queue(4096)
            .max_wait(Duration::from_secs(60))
            .build()
            .unwrap();
        let hedge = HedgeLayer::builder()
            .classifier(Judge)
            .max_attempts(3)
            .delay(MS)
            .budget(budget.clone())
            .build()
            .unwrap();
        let seen = counts.clone();
        let service = tower::service_fn(move |req: u32| {
            let counts = seen.clone();
            counts.started.fetch_add(1, SeqCst);
            *counts.running.lock().unwrap().entry(req).or_default() += 1;
            let guard = Guard(counts, false, req);
            async move {
                let mut guard = guard;
                // A pseudo-random number of polls and outcome per attempt.
                let mix =
                    (u64::from(req) * 2654435761 + guard.0.started.load(SeqCst) * 40503) % 1000;
                for _ in 0..mix % 40 {
                    tokio::task::yield_now().await;
                }
                guard.answered();
                let message = match mix {
                    0..10 => "fatal",
                    10..110 => "busy",
                    _ => return Ok(req),
                };
                Err::<u32, BoxError>(message.to_string().into())
            }
        });
        let svc = hedge.layer(bulkhead.layer(service));
        // Each call boxed where its type is whole: proving an `async`
        // block that holds it `Send` trips rustc's higher-ranked lifetime
        // check (rust-lang/rust#64552).
        let svc = tower::util::BoxCloneService::new(svc);
        const TASKS: u32 = 8;
        const CALLS: u32 = 500;
        let outcomes = rt.block_on(async {
            let tasks: Vec<_> = (0..TASKS)
                .map(|t| {
                    let svc = svc.clone();
                    let counts = counts.clone();
                    tokio::spawn(async move {
                        let mut ok = 0u32;
                        for i in 0..CALLS {
                            let req = t * CALLS + i;
                            // Checked when the answer comes, while the
                            // call's future is still alive: the losers were
                            // dropped before it was handed back.
                            let mut call = std::pin::pin!(svc.clone().oneshot(req));
                            let answer = std::future::poll_fn(|cx| {
                                let answer = call.as_mut().poll(cx);
                                if answer.is_ready() {
                                    assert_eq!(
                                        counts.running.lock().unwrap()[&req],
                                        0,
                                        "call {req}"
                                    );
                                }
                                answer
                            })
                            .await;
                            if answer.is_ok() {
                                ok += 1;
                            }
                        }
                        ok
                    })
                })
                .collect();
            let mut ok = 0;
            for task in tasks {
                ok += tokio::time::timeout(Duration::from_secs(120), task)
                    .await
                    .expect("every call returns")
                    .unwrap();
            }
            ok
        });
        drop(rt);
        let calls = u64::from(TASKS * CALLS);
        let started = counts.started.load(SeqCst);
        assert_eq!(
            started,
            counts.answered.load(SeqCst) + counts.dropped.load(SeqCst),
            "every attempt answered or was dropped"
        );
        assert_eq!(bulkhead.handle().in_flight(), 0);
        assert!(u64::from(outcomes) > calls / 2, "{outcomes} of {calls}");
        assert!(started > calls, "some calls were hedged");
        // The budget: 30% of the calls (its window is longer than the run).
        assert!(
            started - calls <= calls * 3 / 10,
            "{} extra for {calls} calls",
            started - calls
        );
    }
}

/// `delay_fn` may return any duration: one too long for the clock means
/// "never", not a panic.
#[tokio::test(start_paused = true)]
async fn a_delay_too_long_for_the_clock_never_comes_due() {
    let replica = Replica::new([Step::Answer(1000)]);
    let hedge = HedgeLayer::builder()
        .classifier(Judge)
        .delay_fn(|_| Duration::MAX)
        .build()
        .unwrap();
    let mut svc = hedge.layer(replica.clone());
    assert_eq!(call(&mut svc, 7).await.unwrap(), 1);
    assert_eq!(replica.starts_ms(), [0]);
}

/// What each event, trigger and reason says, and the winner's metric
/// label. (Surviving mutants: `SkipReason`'s `Display`, and the winner
/// label swapped.)
#[test]
fn events_say_what_happened_and_label_the_winner() {
    use palisade::event::EventKind;
    let name: Arc<str> = Arc::from("h");
    let said: Vec<String> = SkipReason::ALL
        .iter()
        .map(|&reason| Event::new(&name, &HedgeEvent::Skipped { attempt: 3, reason }).to_string())
        .collect();
    assert_eq!(
        said,
        [
            "hedge `h`: attempt 3 not sent: the budget is exhausted",
            "hedge `h`: attempt 3 not sent: the server said not to retry",
            "hedge `h`: attempt 3 not sent: the server's pushback is above the cap",
            "hedge `h`: attempt 3 not sent: the request cannot be copied beside the running attempts",
            "hedge `h`: attempt 3 not sent: the service failed to get ready",
            "hedge `h`: attempt 3 not sent: a layer below refused an attempt",
        ]
    );
    let triggers: Vec<String> = HedgeTrigger::ALL.iter().map(ToString::to_string).collect();
    assert_eq!(
        triggers,
        [
            "the last attempt was slow",
            "an attempt failed",
            "every attempt starts at once"
        ]
    );
    #[cfg(feature = "metrics")]
    for (attempt, winner) in [(1, "first"), (2, "hedge"), (3, "hedge")] {
        let mut measured = Vec::new();
        HedgeEvent::Won {
            attempt,
            attempts: 3,
        }
        .measure(&mut |m| measured.push(format!("{m:?}")));
        assert_eq!(measured.len(), 1);
        assert!(
            measured[0].contains(&format!("(\"palisade.hedge.winner\", \"{winner}\")")),
            "{measured:?}"
        );
    }
}
