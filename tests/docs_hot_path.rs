//! Tests written from the rendered documentation alone (issue 19, the hot
//! path): the retry budget's per-thread batches, the preset's one clock
//! reading per call (`SharedReading`, `OwnReading`, `GivenWhole`), a
//! configuration document's stack, and the timeout's Cost section.

use palisade::Resilience;
use palisade::backoff::{Backoff, Jitter};
use palisade::classify::DefaultClassifier;
use palisade::config::{Config, Document, Stacked};
use palisade::error::{BoxError, Elapsed, ErrorKind};
use palisade::preset::{OwnReading, SharedReading};
use palisade::retry::{ByClone, RetryBudget};
use palisade::timeout::{Timeout, TimeoutLayer};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::task::{Context, Poll};
use std::thread::JoinHandle;
use std::time::Duration;
use tokio::time::Instant;
use tower::{Layer, Service, ServiceExt, service_fn};

const MS: Duration = Duration::from_millis(1);

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// A budget of exactly the requests of the last second: no reserve, 100 %.
fn one_for_one() -> RetryBudget {
    RetryBudget::new(Duration::from_secs(1), 0, 1.0).unwrap()
}

enum Cmd {
    Deposit(usize),
    Remaining(mpsc::Sender<u64>),
    Withdraw(mpsc::Sender<bool>),
}

/// A std thread, inside the test's runtime (its paused clock), that uses a
/// budget when told to, and stays alive until `end`.
struct Worker {
    tx: Option<mpsc::Sender<Cmd>>,
    ack: mpsc::Receiver<()>,
    join: Option<JoinHandle<()>>,
}

impl Worker {
    fn spawn(budget: &RetryBudget) -> Self {
        let budget = budget.clone();
        let handle = tokio::runtime::Handle::current();
        let (tx, rx) = mpsc::channel::<Cmd>();
        let (ack_tx, ack) = mpsc::channel();
        let join = std::thread::spawn(move || {
            let _guard = handle.enter();
            for cmd in rx {
                match cmd {
                    Cmd::Deposit(n) => {
                        for _ in 0..n {
                            budget.deposit();
                        }
                    }
                    Cmd::Remaining(reply) => reply.send(budget.remaining()).unwrap(),
                    Cmd::Withdraw(reply) => reply.send(budget.try_withdraw()).unwrap(),
                }
                ack_tx.send(()).unwrap();
            }
        });
        Worker {
            tx: Some(tx),
            ack,
            join: Some(join),
        }
    }

    fn send(&self, cmd: Cmd) {
        self.tx.as_ref().unwrap().send(cmd).unwrap();
        self.ack.recv().unwrap();
    }

    fn deposit(&self, n: usize) {
        self.send(Cmd::Deposit(n));
    }

    fn remaining(&self) -> u64 {
        let (tx, rx) = mpsc::channel();
        self.send(Cmd::Remaining(tx));
        rx.recv().unwrap()
    }

    fn try_withdraw(&self) -> bool {
        let (tx, rx) = mpsc::channel();
        self.send(Cmd::Withdraw(tx));
        rx.recv().unwrap()
    }

    /// Ends the thread and waits until it has ended.
    fn end(mut self) {
        drop(self.tx.take());
        self.join.take().unwrap().join().unwrap();
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        drop(self.tx.take());
        if let Some(join) = self.join.take() {
            let _ = join.join();
        }
    }
}

/// Blocks the calling thread while the paused clock moves on by `by`: another
/// std thread advances the runtime's clock and is joined.
fn block_while_clock_moves(by: Duration) {
    let handle = tokio::runtime::Handle::current();
    std::thread::spawn(move || handle.block_on(tokio::time::advance(by)))
        .join()
        .unwrap();
}

/// A service (or a layer's service) whose `call` blocks while the clock moves
/// on by `block`, then calls `inner`.
#[derive(Clone, Debug)]
struct Blocking<S> {
    inner: S,
    block: Duration,
}

impl<S: Service<R>, R> Service<R> for Blocking<S> {
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: R) -> S::Future {
        block_while_clock_moves(self.block);
        self.inner.call(req)
    }
}

type BoxFut<T> = Pin<Box<dyn Future<Output = Result<T, BoxError>> + Send>>;

/// A service answering `"done"` after `after` (of the paused clock).
fn slow(
    after: Duration,
) -> impl Service<(), Response = &'static str, Error = BoxError, Future = BoxFut<&'static str>> + Clone
{
    service_fn(move |_: ()| -> BoxFut<&'static str> {
        Box::pin(async move {
            tokio::time::sleep(after).await;
            Ok("done")
        })
    })
}

fn is_elapsed(err: &BoxError, name: &str, limit: Duration) -> bool {
    ErrorKind::of(err) == ErrorKind::Elapsed
        && err
            .downcast_ref::<Elapsed>()
            .is_some_and(|e| e.name() == name && e.timeout() == limit)
}

fn fixed_backoff(delay: Duration) -> Backoff {
    Backoff::constant(delay)
        .jitter(Jitter::None)
        .build()
        .unwrap()
}

// ---------------------------------------------------------------------------
// RetryBudget: the formula and the thread's own requests
// ---------------------------------------------------------------------------

#[test]
fn the_budget_module_and_the_retry_module_name_the_same_type() {
    let budget: palisade::budget::RetryBudget = palisade::retry::RetryBudget::default();
    let _: palisade::retry::RetryBudget = budget;
}

#[tokio::test(start_paused = true)]
async fn a_retry_decision_counts_every_request_of_its_own_thread() {
    let budget = one_for_one();
    assert_eq!(budget.remaining(), 0);
    for _ in 0..5 {
        budget.deposit();
    }
    assert_eq!(budget.remaining(), 5, "remaining() adds the thread's batch");
    // A clone is the same budget.
    let clone = budget.clone();
    clone.deposit();
    assert_eq!(budget.remaining(), 6);
    for n in 0..6 {
        assert!(budget.try_withdraw(), "retry {n} of 6 is within 100 %");
    }
    assert!(!budget.try_withdraw(), "a 7th retry would pass the formula");
    assert_eq!(budget.remaining(), 0);
    // try_withdraw adds the thread's batch too (no remaining() in between).
    budget.deposit();
    assert!(budget.try_withdraw());
    assert!(!budget.try_withdraw());
}

#[tokio::test(start_paused = true)]
async fn the_formula_is_a_share_plus_the_reserve_rounded_down() {
    // 25 % of 10 requests (2.5) + 2 a second over 1 s = 4.5, rounded down: 4.
    let budget = RetryBudget::new(Duration::from_secs(1), 2, 0.25).unwrap();
    assert_eq!(budget.remaining(), 2, "the reserve alone");
    for _ in 0..10 {
        budget.deposit();
    }
    assert_eq!(budget.remaining(), 4);
    for _ in 0..4 {
        assert!(budget.try_withdraw());
    }
    assert!(
        !budget.try_withdraw(),
        "never more retries than the formula"
    );
    assert_eq!(budget.remaining(), 0);
}

#[tokio::test(start_paused = true)]
async fn the_default_budget_is_finagles() {
    // ttl 10 s, min_per_sec 10, percent 0.2: 100 + 0.2 × 50 = 110.
    let budget = RetryBudget::default();
    assert_eq!(budget.remaining(), 100);
    for _ in 0..50 {
        budget.deposit();
    }
    assert_eq!(budget.remaining(), 110);
}

#[tokio::test(start_paused = true)]
async fn requests_leave_within_ttl_and_retries_within_eleven_tenths() {
    // 25 % of 10 + 3 reserve = 5.5 -> 5 retries.
    let budget = RetryBudget::new(Duration::from_secs(1), 3, 0.25).unwrap();
    for _ in 0..10 {
        budget.deposit();
    }
    for _ in 0..5 {
        assert!(budget.try_withdraw());
    }
    assert!(!budget.try_withdraw());
    // Requests count for at least 9/10 of ttl: still 0.5 left, rounded down.
    tokio::time::advance(899 * MS).await;
    assert_eq!(budget.remaining(), 0);
    // Retries count for at least ttl: the 5 retries exceed the reserve of 3.
    tokio::time::advance(100 * MS).await; // 999 ms
    assert_eq!(budget.remaining(), 0);
    assert!(!budget.try_withdraw());
    // After 11/10 of ttl the retries are gone too: the reserve alone.
    tokio::time::advance(101 * MS).await; // 1100 ms
    assert_eq!(budget.remaining(), 3);
}

#[tokio::test(start_paused = true)]
async fn a_request_counts_for_between_nine_tenths_of_ttl_and_ttl() {
    let budget = one_for_one();
    for _ in 0..5 {
        budget.deposit();
    }
    tokio::time::advance(899 * MS).await;
    assert_eq!(budget.remaining(), 5, "still counted before 9/10 of ttl");
    tokio::time::advance(101 * MS).await; // 1000 ms
    assert_eq!(budget.remaining(), 0, "never counted past ttl");
}

#[tokio::test(start_paused = true)]
async fn thirty_requests_three_seconds_of_quiet_and_one_more_leave_one() {
    // The Cost section's example: each request is dated by the clock.
    let budget = one_for_one();
    for _ in 0..30 {
        budget.deposit();
    }
    tokio::time::advance(Duration::from_secs(3)).await;
    budget.deposit();
    assert_eq!(budget.remaining(), 1);
}

#[tokio::test(start_paused = true)]
async fn thirty_one_requests_and_three_seconds_of_quiet_leave_none() {
    let budget = one_for_one();
    for _ in 0..31 {
        budget.deposit();
    }
    tokio::time::advance(Duration::from_secs(3)).await;
    assert_eq!(budget.remaining(), 0);
}

// ---------------------------------------------------------------------------
// RetryBudget: other threads' batches
// ---------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn another_threads_batch_is_added_at_32_requests() {
    let budget = one_for_one();
    let worker = Worker::spawn(&budget);
    worker.deposit(31);
    assert_eq!(
        budget.remaining(),
        0,
        "31 requests of another thread are missed"
    );
    worker.deposit(1);
    assert_eq!(budget.remaining(), 32, "the 32nd adds the batch");
    worker.deposit(31);
    assert_eq!(budget.remaining(), 32);
    worker.deposit(1);
    assert_eq!(budget.remaining(), 64);
    worker.deposit(1);
    assert_eq!(budget.remaining(), 64);
    worker.end();
    assert_eq!(budget.remaining(), 65, "the thread's end adds its batch");
}

#[tokio::test(start_paused = true)]
async fn a_thread_that_ends_adds_its_requests() {
    let budget = one_for_one();
    let worker = Worker::spawn(&budget);
    worker.deposit(10);
    assert_eq!(budget.remaining(), 0);
    worker.end();
    assert_eq!(budget.remaining(), 10);
    for _ in 0..10 {
        assert!(budget.try_withdraw());
    }
    assert!(!budget.try_withdraw());
}

#[tokio::test(start_paused = true)]
async fn a_thread_asking_for_remaining_adds_its_batch() {
    let budget = one_for_one();
    let worker = Worker::spawn(&budget);
    worker.deposit(5);
    assert_eq!(budget.remaining(), 0);
    assert_eq!(worker.remaining(), 5, "a thread counts its own requests");
    assert_eq!(budget.remaining(), 5, "and its remaining() added them");
    drop(worker);
}

#[tokio::test(start_paused = true)]
async fn a_thread_asking_for_a_retry_adds_its_batch() {
    let budget = one_for_one();
    let worker = Worker::spawn(&budget);
    worker.deposit(5);
    assert_eq!(budget.remaining(), 0);
    assert!(
        worker.try_withdraw(),
        "a thread's retry counts its own requests"
    );
    assert_eq!(budget.remaining(), 4, "5 requests added, 1 retry spent");
    drop(worker);
}

#[tokio::test(start_paused = true)]
async fn a_decision_misses_at_most_31_requests_of_each_other_thread() {
    let budget = one_for_one();
    let workers: Vec<Worker> = (0..3).map(|_| Worker::spawn(&budget)).collect();
    for worker in &workers {
        worker.deposit(31);
    }
    for _ in 0..3 {
        budget.deposit();
    }
    // Its own 3 counted; 31 of each of the three others missed, no more.
    assert_eq!(budget.remaining(), 3);
    for worker in &workers {
        worker.deposit(1);
    }
    assert_eq!(budget.remaining(), 3 + 3 * 32);
    for worker in &workers {
        worker.deposit(40); // 32 added, 8 in the batch
    }
    assert_eq!(budget.remaining(), 3 + 3 * 64);
    let bound = 3 + 3 * 72;
    for worker in workers {
        worker.end();
    }
    assert_eq!(
        budget.remaining(),
        bound,
        "every request counted once at the end"
    );
}

#[tokio::test(start_paused = true)]
async fn a_batch_is_added_when_its_tenth_ends_and_dated_in_its_own_tenth() {
    let budget = one_for_one();
    let worker = Worker::spawn(&budget);
    worker.deposit(5); // t = 0
    assert_eq!(budget.remaining(), 0);
    // At least one tenth of ttl (100 ms) ends.
    tokio::time::advance(150 * MS).await;
    assert_eq!(budget.remaining(), 0, "no request of the thread since");
    worker.deposit(1); // t = 150 ms: the first of a new tenth adds the old batch
    assert_eq!(
        budget.remaining(),
        5,
        "the batch of the ended tenth is added"
    );
    // t = 1000 ms: the five requests of t = 0 came ttl ago. Dated in their
    // own tenth, they no longer count (the request of t = 150 ms is still in
    // the thread's batch).
    tokio::time::advance(850 * MS).await;
    assert_eq!(
        budget.remaining(),
        0,
        "a batch counted late is dated at its own time"
    );
    // The thread ends: its request of t = 150 ms is counted now, at its time.
    worker.end();
    assert_eq!(budget.remaining(), 1);
    // t = 1150 ms: ttl after it came, it no longer counts.
    tokio::time::advance(150 * MS).await;
    assert_eq!(
        budget.remaining(),
        0,
        "never counted for longer than its ttl"
    );
}

#[tokio::test(start_paused = true)]
async fn a_batch_of_an_idle_thread_is_not_counted_past_its_ttl() {
    let budget = one_for_one();
    let worker = Worker::spawn(&budget);
    worker.deposit(20); // t = 0
    tokio::time::advance(Duration::from_secs(2)).await;
    worker.end(); // added at its own time: long gone
    assert_eq!(budget.remaining(), 0);
}

#[tokio::test(start_paused = true)]
async fn no_two_decisions_spend_the_same_retry() {
    // A reserve of 10 retries, no share of requests.
    let budget = RetryBudget::new(Duration::from_secs(1), 10, 0.0).unwrap();
    let granted = Arc::new(AtomicU32::new(0));
    let handle = tokio::runtime::Handle::current();
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let budget = budget.clone();
            let granted = granted.clone();
            let handle = handle.clone();
            std::thread::spawn(move || {
                let _guard = handle.enter();
                for _ in 0..10 {
                    if budget.try_withdraw() {
                        granted.fetch_add(1, Ordering::SeqCst);
                    }
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
    assert_eq!(granted.load(Ordering::SeqCst), 10);
    assert_eq!(budget.remaining(), 0);
}

// ---------------------------------------------------------------------------
// The preset: one clock reading per call
// ---------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn a_timeout_inside_the_wrapped_service_is_not_shortened_by_its_call() {
    // The user's service blocks for 1 s in its `call`, then calls a palisade
    // timeout of 100 ms over a 50 ms answer: that timeout reads its own
    // clock, after the block, not the preset's reading.
    let user = Blocking {
        inner: TimeoutLayer::new(100 * MS).unwrap().layer(slow(50 * MS)),
        block: Duration::from_secs(1),
    };
    let stack = Resilience::builder()
        .total_timeout(Duration::from_secs(10))
        .retry(|retry| retry.max_attempts(2).no_budget())
        .attempt_timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let start = Instant::now();
    let answer = stack.layer(user).oneshot(()).await;
    assert!(
        start.elapsed() >= Duration::from_secs(1),
        "the call did block"
    );
    assert_eq!(answer.unwrap(), "done");
}

#[tokio::test(start_paused = true)]
async fn a_preset_inside_the_wrapped_service_reads_its_own_clock() {
    let inner_preset = Resilience::builder()
        .attempt_timeout(100 * MS)
        .build()
        .unwrap()
        .layer(slow(50 * MS));
    let user = Blocking {
        inner: inner_preset,
        block: Duration::from_secs(1),
    };
    let stack = Resilience::builder()
        .attempt_timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    assert_eq!(stack.layer(user).oneshot(()).await.unwrap(), "done");
}

#[tokio::test(start_paused = true)]
async fn a_layer_given_whole_that_blocks_does_not_shorten_the_attempt_timeout_below() {
    let stack = Resilience::builder()
        .total_timeout(Duration::from_secs(10))
        .retry(|retry| retry.max_attempts(2).no_budget())
        .rate_limit_slot(tower::layer::layer_fn(|inner| Blocking {
            inner,
            block: Duration::from_secs(1),
        }))
        .attempt_timeout(100 * MS)
        .build()
        .unwrap();
    let calls = Arc::new(AtomicU32::new(0));
    let counted = calls.clone();
    let svc = service_fn(move |_: ()| {
        counted.fetch_add(1, Ordering::SeqCst);
        async {
            tokio::time::sleep(50 * MS).await;
            Ok::<_, BoxError>("done")
        }
    });
    let start = Instant::now();
    let answer = stack.layer(svc).oneshot(()).await;
    assert!(
        start.elapsed() >= Duration::from_secs(1),
        "the layer did block"
    );
    assert_eq!(answer.unwrap(), "done");
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "the first attempt did not time out"
    );
}

#[tokio::test(start_paused = true)]
async fn a_layer_given_whole_to_the_concurrency_slot_is_on_its_own_clock_too() {
    let stack = Resilience::builder()
        .concurrency_slot(tower::layer::layer_fn(|inner| Blocking {
            inner,
            block: Duration::from_secs(1),
        }))
        .attempt_timeout(100 * MS)
        .build()
        .unwrap();
    assert_eq!(
        stack.layer(slow(50 * MS)).oneshot(()).await.unwrap(),
        "done"
    );
}

#[tokio::test(start_paused = true)]
async fn a_timeout_inside_a_layer_given_whole_reads_its_own_clock() {
    // What a layer given whole calls is not lent the preset's reading: a
    // palisade timeout it calls after blocking measures from its own call.
    let stack = Resilience::builder()
        .total_timeout(Duration::from_secs(10))
        .rate_limit_slot(tower::layer::layer_fn(|inner| Blocking {
            inner: TimeoutLayer::new(100 * MS).unwrap().layer(inner),
            block: Duration::from_secs(1),
        }))
        .build()
        .unwrap();
    assert_eq!(
        stack.layer(slow(50 * MS)).oneshot(()).await.unwrap(),
        "done"
    );
}

#[tokio::test(start_paused = true)]
async fn a_deadline_runs_from_the_presets_call() {
    // The attempt timeout starts before the wrapped service's call: what
    // that call takes counts against it.
    let stack = Resilience::builder()
        .attempt_timeout(100 * MS)
        .build()
        .unwrap();
    let user = Blocking {
        inner: slow(60 * MS),
        block: 60 * MS,
    };
    let err = stack.layer(user).oneshot(()).await.unwrap_err();
    assert!(is_elapsed(&err, "attempt", 100 * MS), "{err}");
}

#[tokio::test(start_paused = true)]
async fn the_total_timeout_counts_a_layer_given_whole_below_it() {
    let stack = Resilience::builder()
        .total_timeout(500 * MS)
        .rate_limit_slot(tower::layer::layer_fn(|inner| Blocking {
            inner,
            block: Duration::from_secs(1),
        }))
        .build()
        .unwrap();
    let start = Instant::now();
    let err = stack.layer(slow(50 * MS)).oneshot(()).await.unwrap_err();
    assert!(is_elapsed(&err, "total", 500 * MS), "{err}");
    assert!(
        start.elapsed() < Duration::from_secs(1) + 50 * MS,
        "the total deadline (500 ms) had passed when the layer returned"
    );
}

#[tokio::test(start_paused = true)]
async fn a_later_attempt_reads_the_clock_anew() {
    let stack = Resilience::builder()
        .retry(|retry| {
            retry
                .max_attempts(2)
                .no_budget()
                .backoff(fixed_backoff(Duration::from_secs(1)))
        })
        .attempt_timeout(100 * MS)
        .build()
        .unwrap();
    let calls = Arc::new(AtomicU32::new(0));
    let counted = calls.clone();
    let svc = service_fn(move |_: ()| {
        let n = counted.fetch_add(1, Ordering::SeqCst);
        async move {
            if n == 0 {
                return Err::<&str, BoxError>("first attempt fails".into());
            }
            tokio::time::sleep(50 * MS).await;
            Ok("done")
        }
    });
    let start = Instant::now();
    let answer = stack.layer(svc).oneshot(()).await;
    assert!(
        start.elapsed() >= Duration::from_secs(1),
        "the backoff was waited"
    );
    assert_eq!(answer.unwrap(), "done");
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

// ---------------------------------------------------------------------------
// The preset's service types
// ---------------------------------------------------------------------------

#[derive(Clone, Debug, PartialEq)]
struct Numbered {
    id: u32,
}

impl Service<()> for Numbered {
    type Response = u32;
    type Error = BoxError;
    type Future = std::future::Ready<Result<u32, BoxError>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: ()) -> Self::Future {
        std::future::ready(Ok(self.id))
    }
}

#[derive(Clone, Debug)]
struct MarkLayer {
    tag: u32,
}

#[derive(Clone, Debug)]
struct Mark<S> {
    inner: S,
    tag: u32,
}

impl<S> Layer<S> for MarkLayer {
    type Service = Mark<S>;
    fn layer(&self, inner: S) -> Mark<S> {
        Mark {
            inner,
            tag: self.tag,
        }
    }
}

impl<S: Service<R>, R> Service<R> for Mark<S> {
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }
    fn call(&mut self, req: R) -> S::Future {
        self.inner.call(req)
    }
}

#[tokio::test(start_paused = true)]
async fn an_empty_preset_is_a_shared_reading_over_the_services_own_reading() {
    let stack = Resilience::builder().build().unwrap();
    let mut svc: SharedReading<OwnReading<Numbered>> = stack.layer(Numbered { id: 7 });
    assert_eq!(svc.get_ref().get_ref(), &Numbered { id: 7 });
    svc.get_mut().get_mut().id = 8;
    // Its future is the inner service's: it adds nothing to a call's future.
    let future: std::future::Ready<Result<u32, BoxError>> = svc.ready().await.unwrap().call(());
    assert_eq!(future.await.unwrap(), 8);
    let own: OwnReading<Numbered> = svc.clone().into_inner();
    assert_eq!(own.into_inner(), Numbered { id: 8 });
    assert!(format!("{svc:?}").contains("Numbered"));
}

#[tokio::test(start_paused = true)]
async fn the_presets_parts_sit_between_the_shared_and_the_own_reading() {
    let stack = Resilience::builder()
        .attempt_timeout(Duration::from_secs(1))
        .build()
        .unwrap();
    let svc: SharedReading<Timeout<OwnReading<Numbered>>> = stack.layer(Numbered { id: 3 });
    assert_eq!(svc.get_ref().get_ref().get_ref().id, 3);
    assert_eq!(svc.clone().oneshot(()).await.unwrap(), 3);
    assert_eq!(svc.into_inner().into_inner().into_inner().id, 3);
}

#[tokio::test(start_paused = true)]
async fn a_layer_given_whole_is_held_as_given_whole_and_derefs_to_it() {
    let stack = Resilience::builder()
        .rate_limit_slot(MarkLayer { tag: 42 })
        .build()
        .unwrap();
    let given: &palisade::preset::part::GivenWhole<MarkLayer> = stack.rate_limit();
    assert_eq!(given.tag, 42, "derefs to the layer");
    assert_eq!(given.0.tag, 42);
    let layer: &MarkLayer = given; // Deref<Target = MarkLayer>
    assert_eq!(layer.tag, 42);
    // Its service is on a clock of its own (`OwnReading`), and the parts
    // below it share a reading of their own (`SharedReading`).
    let svc: SharedReading<OwnReading<Mark<SharedReading<OwnReading<Numbered>>>>> =
        stack.layer(Numbered { id: 9 });
    let mark = svc.get_ref().get_ref();
    assert_eq!(mark.tag, 42);
    assert_eq!(mark.inner.get_ref().get_ref().id, 9);
    assert_eq!(svc.oneshot(()).await.unwrap(), 9);
}

#[tokio::test(start_paused = true)]
async fn given_whole_layers_a_service_as_the_docs_say() {
    let given = palisade::preset::part::GivenWhole(MarkLayer { tag: 1 });
    let svc: OwnReading<Mark<SharedReading<Numbered>>> = given.layer(Numbered { id: 2 });
    assert_eq!(svc.get_ref().tag, 1);
    assert_eq!(svc.get_ref().inner.get_ref().id, 2);
    assert_eq!(svc.oneshot(()).await.unwrap(), 2);
}

// ---------------------------------------------------------------------------
// A configuration document's stack
// ---------------------------------------------------------------------------

fn config(text: &str) -> Config {
    Config::new(toml::from_str::<Document>(text).unwrap()).unwrap()
}

#[tokio::test(start_paused = true)]
async fn a_documents_stack_calls_the_service_on_its_own_clock() {
    let config = config(
        "[instances.a]\n\
         total_timeout = \"10s\"\n\
         attempt_timeout = \"5s\"\n\
         retry = { max_attempts = 2 }\n",
    );
    let user = Blocking {
        inner: TimeoutLayer::new(100 * MS).unwrap().layer(slow(50 * MS)),
        block: Duration::from_secs(1),
    };
    let svc: Stacked<_, DefaultClassifier, ByClone> = config.stack("a").unwrap().layer(user);
    let start = Instant::now();
    let answer = svc.oneshot(()).await;
    assert!(
        start.elapsed() >= Duration::from_secs(1),
        "the call did block"
    );
    assert_eq!(answer.unwrap(), "done");
}

#[tokio::test(start_paused = true)]
async fn a_documents_attempt_timeout_runs_from_the_stacks_call() {
    let config = config("[instances.a]\nattempt_timeout = \"100ms\"\n");
    let user = Blocking {
        inner: slow(60 * MS),
        block: 60 * MS,
    };
    let err = config
        .stack("a")
        .unwrap()
        .layer(user)
        .oneshot(())
        .await
        .unwrap_err();
    assert!(ErrorKind::of(&err) == ErrorKind::Elapsed, "{err}");
    assert_eq!(err.downcast_ref::<Elapsed>().unwrap().timeout(), 100 * MS);
}

#[tokio::test(start_paused = true)]
async fn a_documents_later_attempt_reads_the_clock_anew() {
    let config = config(
        "[instances.a]\n\
         attempt_timeout = \"100ms\"\n\
         retry = { max_attempts = 2, backoff = { kind = \"constant\", delay = \"1s\", jitter = \"none\" } }\n",
    );
    let calls = Arc::new(AtomicU32::new(0));
    let counted = calls.clone();
    let svc = service_fn(move |_: ()| {
        let n = counted.fetch_add(1, Ordering::SeqCst);
        async move {
            if n == 0 {
                return Err::<&str, BoxError>("first attempt fails".into());
            }
            tokio::time::sleep(50 * MS).await;
            Ok("done")
        }
    });
    let start = Instant::now();
    let answer = config.stack("a").unwrap().layer(svc).oneshot(()).await;
    assert!(
        start.elapsed() >= Duration::from_secs(1),
        "the backoff was waited"
    );
    assert_eq!(answer.unwrap(), "done");
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

// ---------------------------------------------------------------------------
// The timeout's Cost section
// ---------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn a_timeout_outside_a_preset_measures_from_its_own_call() {
    let svc = Blocking {
        inner: TimeoutLayer::new(100 * MS).unwrap().layer(slow(50 * MS)),
        block: Duration::from_secs(1),
    };
    assert_eq!(svc.oneshot(()).await.unwrap(), "done");
}

#[tokio::test(start_paused = true)]
async fn a_call_ready_at_its_first_poll_is_never_elapsed() {
    // The timer is made only if the first poll is Pending: a call whose
    // own `call` took longer than the limit but whose future is ready at
    // once succeeds.
    let svc = TimeoutLayer::new(100 * MS).unwrap().layer(Blocking {
        inner: Numbered { id: 5 },
        block: Duration::from_secs(1),
    });
    assert_eq!(svc.oneshot(()).await.unwrap(), 5);
}

#[tokio::test(start_paused = true)]
async fn a_pending_call_is_measured_from_the_timeouts_call() {
    let svc = TimeoutLayer::new(100 * MS).unwrap().layer(Blocking {
        inner: slow(10 * MS),
        block: Duration::from_secs(1),
    });
    let start = Instant::now();
    let err = svc.oneshot(()).await.unwrap_err();
    assert!(is_elapsed(&err, "timeout", 100 * MS), "{err}");
    assert_eq!(
        start.elapsed(),
        Duration::from_secs(1),
        "the deadline had passed: no more waiting once the call returned"
    );
}

#[tokio::test(start_paused = true)]
async fn the_timer_fires_when_the_inner_future_spent_the_cooperative_budget() {
    let called = Arc::new(AtomicU32::new(0));
    let seen = called.clone();
    let svc = TimeoutLayer::new(100 * MS)
        .unwrap()
        .layer(service_fn(move |_: ()| {
            seen.fetch_add(1, Ordering::SeqCst);
            async {
                loop {
                    tokio::task::consume_budget().await;
                }
                #[allow(unreachable_code)]
                Ok::<(), BoxError>(())
            }
        }));
    let start = Instant::now();
    let call = tokio::spawn(svc.oneshot(()));
    // Let the task make its call (at the start), then move the clock on.
    while called.load(Ordering::SeqCst) == 0 {
        tokio::task::yield_now().await;
    }
    assert_eq!(start.elapsed(), Duration::ZERO);
    tokio::time::advance(200 * MS).await;
    for _ in 0..10_000 {
        if call.is_finished() {
            break;
        }
        tokio::task::yield_now().await;
    }
    let finished = call.is_finished();
    call.abort();
    assert!(finished, "the timeout fired despite the spent budget");
    let err = call.await.unwrap().unwrap_err();
    assert!(is_elapsed(&err, "timeout", 100 * MS), "{err}");
}
