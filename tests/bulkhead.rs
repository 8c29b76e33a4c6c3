//! The bulkhead through its public API, on paused time.

use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use palisade::bulkhead::BulkheadEvent;
use palisade::bulkhead::{BulkheadBuilder, BulkheadHandle, BulkheadLayer};
use palisade::error::{BoxError, BulkheadFull, ErrorKind};
use palisade::event::Event;
use rand::rngs::Xoshiro256PlusPlus;
use rand::{RngExt, SeedableRng};
use tokio::time::{Instant, sleep};
use tower::{Layer, Service, ServiceExt, service_fn};

type Svc =
    palisade::bulkhead::Bulkhead<tower::util::BoxCloneSyncService<(u32, u64), u32, BoxError>>;

/// A bulkhead over a service that records the order in which calls reach it
/// and sleeps as long as asked.
fn setup(b: BulkheadBuilder) -> (Svc, BulkheadHandle, Arc<Mutex<Vec<u32>>>) {
    let order = Arc::new(Mutex::new(Vec::new()));
    let seen = order.clone();
    let inner = tower::util::BoxCloneSyncService::new(service_fn(move |(id, ms): (u32, u64)| {
        seen.lock().unwrap().push(id);
        async move {
            sleep(Duration::from_millis(ms)).await;
            Ok::<_, BoxError>(id)
        }
    }));
    let layer = b.build().unwrap();
    let handle = layer.handle();
    (layer.layer(inner), handle, order)
}

fn rejected(r: &Result<u32, BoxError>) -> bool {
    matches!(r, Err(e) if ErrorKind::of(e) == ErrorKind::BulkheadFull)
}

#[tokio::test(start_paused = true)]
async fn at_most_n_in_flight_and_the_rest_refused_at_once() {
    let (svc, handle, order) = setup(BulkheadLayer::builder().max_concurrent(3));
    let running: Vec<_> = (0..3)
        .map(|id| tokio::spawn(svc.clone().oneshot((id, 100))))
        .collect();
    tokio::task::yield_now().await;
    assert_eq!(handle.in_flight(), 3);
    let start = Instant::now();
    let r = svc.clone().oneshot((99, 0)).await;
    assert!(rejected(&r));
    assert!(r.unwrap_err().is::<BulkheadFull>());
    assert_eq!(start.elapsed(), Duration::ZERO, "refused at once");
    assert!(
        !order.lock().unwrap().contains(&99),
        "the inner service was not called"
    );
    for t in running {
        t.await.unwrap().unwrap();
    }
    assert_eq!(handle.in_flight(), 0);
    svc.clone().oneshot((100, 0)).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn the_queue_is_first_come_first_served() {
    let (svc, handle, order) = setup(BulkheadLayer::builder().max_concurrent(1).max_queue(5));
    let mut tasks = vec![tokio::spawn(svc.clone().oneshot((0, 100)))];
    tokio::task::yield_now().await;
    for id in 1..=5 {
        tasks.push(tokio::spawn(svc.clone().oneshot((id, 10))));
        tokio::task::yield_now().await;
    }
    assert_eq!((handle.in_flight(), handle.queued()), (1, 5));
    // A newcomer finds the queue full.
    assert!(rejected(&svc.clone().oneshot((6, 0)).await));
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    assert_eq!(*order.lock().unwrap(), [0, 1, 2, 3, 4, 5]);
    assert_eq!((handle.in_flight(), handle.queued()), (0, 0));
}

#[tokio::test(start_paused = true)]
async fn a_queued_call_waits_at_most_max_wait() {
    let events = Arc::new(Mutex::new(Vec::new()));
    let log = events.clone();
    let (svc, handle, order) = setup(
        BulkheadLayer::builder()
            .name("db")
            .max_concurrent(1)
            .max_queue(1)
            .max_wait(Duration::from_millis(250))
            .on_event(move |e: &Event<'_>| {
                if matches!(e.kind(), Some(BulkheadEvent::Rejected { .. })) {
                    log.lock().unwrap().push(e.to_string());
                }
            }),
    );
    let holder = tokio::spawn(svc.clone().oneshot((0, 1_000)));
    tokio::task::yield_now().await;
    let start = Instant::now();
    let r = svc.clone().oneshot((1, 0)).await;
    assert!(rejected(&r));
    assert_eq!(start.elapsed(), Duration::from_millis(250));
    assert_eq!(handle.queued(), 0);
    assert_eq!(*order.lock().unwrap(), [0]);
    assert_eq!(
        *events.lock().unwrap(),
        ["bulkhead `db`: call rejected after waiting in the queue"]
    );
    holder.await.unwrap().unwrap();
    assert_eq!(handle.in_flight(), 0);
}

#[tokio::test(start_paused = true)]
async fn in_flight_changes_are_events() {
    let counts = Arc::new(Mutex::new(Vec::new()));
    let log = counts.clone();
    let (svc, _handle, _) = setup(BulkheadLayer::builder().max_concurrent(2).on_event(
        move |e: &Event<'_>| {
            if let Some(BulkheadEvent::InFlight { in_flight, .. }) = e.kind() {
                log.lock().unwrap().push(*in_flight);
            }
        },
    ));
    let a = tokio::spawn(svc.clone().oneshot((0, 10)));
    let b = tokio::spawn(svc.clone().oneshot((1, 20)));
    a.await.unwrap().unwrap();
    b.await.unwrap().unwrap();
    assert_eq!(*counts.lock().unwrap(), [1, 2, 1, 0]);

    // A permit reserved by one poll_ready is not counted again by the next.
    counts.lock().unwrap().clear();
    let mut one = svc.clone();
    std::future::poll_fn(|cx| one.poll_ready(cx)).await.unwrap();
    std::future::poll_fn(|cx| one.poll_ready(cx)).await.unwrap();
    one.call((2, 0)).await.unwrap();
    assert_eq!(*counts.lock().unwrap(), [1, 0]);
}

#[tokio::test(start_paused = true)]
async fn a_queued_call_gets_a_permit_freed_before_its_wait_ends() {
    let (svc, _handle, _) = setup(
        BulkheadLayer::builder()
            .max_concurrent(1)
            .max_queue(1)
            .max_wait(Duration::from_millis(250)),
    );
    let holder = tokio::spawn(svc.clone().oneshot((0, 200)));
    tokio::task::yield_now().await;
    let start = Instant::now();
    assert_eq!(svc.clone().oneshot((1, 0)).await.unwrap(), 1);
    assert_eq!(start.elapsed(), Duration::from_millis(200));
    holder.await.unwrap().unwrap();
}

#[tokio::test(start_paused = true)]
async fn cancelled_calls_queued_or_in_flight_free_their_places() {
    let (svc, handle, _) = setup(BulkheadLayer::builder().max_concurrent(4).max_queue(8));
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(7);
    for round in 0..50 {
        // A burst of calls, some of which are cancelled at random moments.
        let mut tasks = Vec::new();
        for id in 0..16 {
            let ms = rng.random_range(1..50);
            let cancel_after = rng.random_range(0..60);
            tasks.push(tokio::spawn(call_or_cancel(
                svc.clone(),
                id,
                ms,
                cancel_after,
            )));
        }
        for t in tasks {
            let _ = t.await.unwrap();
        }
        assert_eq!(
            (handle.in_flight(), handle.queued()),
            (0, 0),
            "round {round}"
        );
    }
    // Still fully usable.
    let all: Vec<_> = (0..4)
        .map(|id| tokio::spawn(svc.clone().oneshot((id, 5))))
        .collect();
    for t in all {
        t.await.unwrap().unwrap();
    }
}

/// Calls `svc`, dropping the call if it has not finished after `cancel_after`
/// milliseconds. Returns whether it finished.
async fn call_or_cancel(mut svc: Svc, id: u32, ms: u64, cancel_after: u64) -> bool {
    // `ready` then `call` rather than `oneshot`: a `Oneshot` held across an
    // await in a spawned task trips rustc's higher-ranked `Send` check
    // (rust-lang/rust#64552) on `BoxError` services.
    let call = std::pin::pin!(async move { svc.ready().await?.call((id, ms)).await });
    let timer = std::pin::pin!(sleep(Duration::from_millis(cancel_after)));
    futures_select(call, timer).await.is_some()
}

/// The call's result, or `None` if the timer fires first (dropping the call).
async fn futures_select<F, T>(
    call: std::pin::Pin<&mut F>,
    timer: std::pin::Pin<&mut T>,
) -> Option<F::Output>
where
    F: std::future::Future,
    T: std::future::Future,
{
    let mut call = Some(call);
    let mut timer = timer;
    std::future::poll_fn(move |cx| {
        if let Poll::Ready(out) = call.as_mut().unwrap().as_mut().poll(cx) {
            return Poll::Ready(Some(out));
        }
        if timer.as_mut().poll(cx).is_ready() {
            call = None;
            return Poll::Ready(None);
        }
        Poll::Pending
    })
    .await
}

/// Never ready.
#[derive(Clone)]
struct Stuck(Arc<AtomicUsize>);

impl Service<()> for Stuck {
    type Response = ();
    type Error = BoxError;
    type Future = std::future::Ready<Result<(), BoxError>>;
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.0.fetch_add(1, SeqCst);
        Poll::Pending
    }
    fn call(&mut self, _: ()) -> Self::Future {
        unreachable!()
    }
}

#[tokio::test(start_paused = true)]
async fn a_permit_reserved_by_poll_ready_is_released_with_the_service() {
    let polls = Arc::new(AtomicUsize::new(0));
    let layer = BulkheadLayer::builder().max_concurrent(1).build().unwrap();
    let handle = layer.handle();
    let mut svc = layer.layer(Stuck(polls.clone()));
    let mut cx = Context::from_waker(std::task::Waker::noop());
    assert!(
        svc.poll_ready(&mut cx).is_pending(),
        "waits for the inner service"
    );
    assert_eq!(
        polls.load(SeqCst),
        1,
        "the inner service's poll_ready was driven"
    );
    assert_eq!(handle.in_flight(), 1, "holding its permit meanwhile");
    // Another clone is refused, without polling the inner service.
    let mut other = svc.clone();
    assert!(other.poll_ready(&mut cx).is_ready());
    assert_eq!(polls.load(SeqCst), 1);
    let err = other.call(()).await.unwrap_err();
    assert_eq!(ErrorKind::of(&err), ErrorKind::BulkheadFull);
    drop(svc);
    assert_eq!(handle.in_flight(), 0);
}

#[test]
fn bad_configurations_are_refused() {
    let refused = |b: BulkheadBuilder| b.build().unwrap_err().parameter();
    let b = BulkheadLayer::builder;
    assert_eq!(refused(b().max_concurrent(0)), "max_concurrent");
    assert_eq!(refused(b().max_concurrent(u32::MAX)), "max_concurrent");
    assert_eq!(refused(b().max_queue(u32::MAX)), "max_queue");
    assert_eq!(
        refused(b().max_queue(1).max_wait(Duration::ZERO)),
        "max_wait"
    );
    assert_eq!(
        refused(b().max_queue(1).max_wait(Duration::MAX)),
        "max_wait"
    );
    assert_eq!(refused(b().max_wait(Duration::from_secs(1))), "max_wait");
    assert!(b().max_concurrent(1).max_queue(0).build().is_ok());
}

/// Issue 12, defect 5: a refusal decided by one `poll_ready` does not
/// stick: once a place is free, the next `poll_ready` admits the call.
#[tokio::test(start_paused = true)]
async fn a_refusal_is_decided_again_at_the_next_poll_ready() {
    let (svc, handle, _) = setup(BulkheadLayer::builder().max_concurrent(1));
    let mut holder = svc.clone();
    holder.ready().await.unwrap(); // takes the only place
    let mut svc = svc.clone();
    let waker = std::task::Waker::noop();
    let mut cx = Context::from_waker(waker);
    assert!(matches!(svc.poll_ready(&mut cx), Poll::Ready(Ok(()))));
    drop(holder); // the place is free again
    assert_eq!(handle.in_flight(), 0);
    assert!(matches!(svc.poll_ready(&mut cx), Poll::Ready(Ok(()))));
    assert_eq!(
        handle.in_flight(),
        1,
        "the second poll_ready took the place"
    );
    assert_eq!(svc.call((5, 0)).await.unwrap(), 5);
}

/// The same, on a multi-thread runtime, where releases, grants, queue
/// expiries and cancellations race on two cores: every place comes back,
/// and never more calls run at once than the bulkhead allows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancellations_racing_on_two_cores_free_every_place() {
    let running = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let inner = {
        let (running, most) = (running.clone(), most.clone());
        tower::util::BoxCloneSyncService::new(service_fn(move |(id, spins): (u32, u64)| {
            let (running, most) = (running.clone(), most.clone());
            async move {
                /// Counts the call out when it ends or is dropped.
                struct Running(Arc<AtomicUsize>);
                impl Drop for Running {
                    fn drop(&mut self) {
                        self.0.fetch_sub(1, SeqCst);
                    }
                }
                let now = running.fetch_add(1, SeqCst) + 1;
                let _running = Running(running);
                most.fetch_max(now, SeqCst);
                for _ in 0..spins {
                    tokio::task::yield_now().await;
                }
                Ok::<_, BoxError>(id)
            }
        }))
    };
    let layer = BulkheadLayer::builder()
        .max_concurrent(4)
        .max_queue(8)
        .max_wait(Duration::from_micros(200))
        .build()
        .unwrap();
    let handle = layer.handle();
    let svc: Svc = layer.layer(inner);
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(11);
    for round in 0..100 {
        let mut tasks = Vec::new();
        for id in 0..24 {
            let spins = rng.random_range(0..20);
            let cancel = rng.random_range(0..3) == 0;
            let mut svc = svc.clone();
            tasks.push(tokio::spawn(async move {
                let call = async move { svc.ready().await?.call((id, spins)).await };
                if cancel {
                    // Dropped after a few turns of the scheduler: queued,
                    // in flight, or done by then.
                    let mut call = std::pin::pin!(call);
                    for _ in 0..spins {
                        if futures_util_poll_once(call.as_mut()).await {
                            break;
                        }
                        tokio::task::yield_now().await;
                    }
                    // The pinned call is dropped as the task ends, here.
                } else {
                    let _ = call.await;
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(
            (handle.in_flight(), handle.queued()),
            (0, 0),
            "round {round}"
        );
    }
    assert!(most.load(SeqCst) <= 4, "{} ran at once", most.load(SeqCst));
    assert!(most.load(SeqCst) >= 2, "the calls never overlapped");
}

/// Polls `fut` once; whether it finished.
async fn futures_util_poll_once<F: std::future::Future>(fut: std::pin::Pin<&mut F>) -> bool {
    let mut fut = Some(fut);
    std::future::poll_fn(move |cx| Poll::Ready(fut.take().unwrap().as_mut().poll(cx).is_ready()))
        .await
}

/// The limit moved while calls run: a raise admits queued calls at once, in
/// order; a cut lets the calls in flight finish and admits nobody until
/// they are under it.
#[tokio::test(start_paused = true)]
async fn the_limit_moves_while_calls_run() {
    let (svc, handle, order) = setup(BulkheadLayer::builder().max_concurrent(1).max_queue(5));
    let mut tasks = vec![tokio::spawn(svc.clone().oneshot((0, 100)))];
    tokio::task::yield_now().await;
    for id in 1..=3 {
        tasks.push(tokio::spawn(svc.clone().oneshot((id, 100))));
        tokio::task::yield_now().await;
    }
    assert_eq!((handle.in_flight(), handle.queued()), (1, 3));

    handle.set_max_concurrent(3).unwrap();
    tokio::task::yield_now().await;
    assert_eq!(
        (handle.in_flight(), handle.queued()),
        (3, 1),
        "two admitted at once"
    );
    assert_eq!(*order.lock().unwrap(), [0, 1, 2]);

    // Cut to one with three in flight: nobody is cut off, the queued call
    // waits until the three have finished and it is under the limit.
    handle.set_max_concurrent(1).unwrap();
    assert_eq!((handle.max_concurrent(), handle.in_flight()), (1, 3));
    let started = Instant::now();
    for t in tasks.drain(..3) {
        t.await.unwrap().unwrap();
    }
    assert_eq!(started.elapsed(), Duration::from_millis(100));
    tokio::task::yield_now().await;
    assert_eq!(
        (handle.in_flight(), handle.queued()),
        (1, 0),
        "the last admitted alone"
    );
    tasks.pop().unwrap().await.unwrap().unwrap();
    assert_eq!(*order.lock().unwrap(), [0, 1, 2, 3]);
    assert_eq!((handle.in_flight(), handle.queued()), (0, 0));

    assert_eq!(
        handle.set_max_concurrent(0).unwrap_err().parameter(),
        "max_concurrent"
    );
    assert_eq!(
        handle.max_concurrent(),
        1,
        "a refused limit changes nothing"
    );
}

/// Issue 14, item 6: a refusal names the bulkhead and its limits, and one
/// that waited says for how long; the same facts through the accessors.
#[tokio::test(start_paused = true)]
async fn a_refusal_says_which_bulkhead_and_which_limit() {
    let (svc, handle, _) = setup(
        BulkheadLayer::builder()
            .name("inventory")
            .max_concurrent(2)
            .max_queue(1)
            .max_wait(Duration::from_millis(50)),
    );
    let running: Vec<_> = (0..2)
        .map(|id| tokio::spawn(svc.clone().oneshot((id, 1_000))))
        .collect();
    let queued = tokio::spawn(svc.clone().oneshot((2, 0)));
    tokio::task::yield_now().await;
    assert_eq!((handle.in_flight(), handle.queued()), (2, 1));

    let at_once = svc.clone().oneshot((3, 0)).await.unwrap_err();
    assert_eq!(
        at_once.to_string(),
        r#"bulkhead "inventory" is full: 2 in flight, 1 queued"#
    );
    let full = at_once.downcast_ref::<BulkheadFull>().unwrap();
    assert_eq!(
        (
            full.name(),
            full.max_concurrent(),
            full.max_queue(),
            full.waited()
        ),
        ("inventory", 2, 1, None)
    );

    let waited = queued.await.unwrap().unwrap_err();
    assert_eq!(
        waited.to_string(),
        r#"bulkhead "inventory" is full: 2 in flight, gave up after waiting 50ms in the queue"#
    );
    let full = waited.downcast_ref::<BulkheadFull>().unwrap();
    assert_eq!(full.waited(), Some(Duration::from_millis(50)));

    // The limit as it is when the call is refused (the queue is free
    // again, so this one waits its turn in it first).
    handle.set_max_concurrent(1).unwrap();
    let err = svc.clone().oneshot((4, 0)).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        r#"bulkhead "inventory" is full: 1 in flight, gave up after waiting 50ms in the queue"#
    );
    for t in running {
        t.await.unwrap().unwrap();
    }
}
