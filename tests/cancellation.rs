//! For every layer: a future dropped before its first poll, while pending in
//! the inner service, while queued, or while in a backoff sleep leaves no
//! trace in the layer's state, and the inner future it was driving is
//! dropped with it.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::task::{Context, Poll};
use std::time::Duration;

use palisade::backoff::{Backoff, Jitter};
use palisade::bulkhead::BulkheadLayer;
use palisade::circuit_breaker::{CircuitBreakerLayer, CircuitState};
use palisade::error::BoxError;
use palisade::fallback::{Failed, FallbackLayer, from_sync_fn};
use palisade::retry::RetryLayer;
use palisade::timeout::TimeoutLayer;
use tower::{Layer, Service, ServiceExt};

/// A service whose futures count their own drops: `true` never finishes,
/// `false` fails at once.
#[derive(Clone, Default)]
struct Recorder {
    made: Arc<AtomicUsize>,
    dropped: Arc<AtomicUsize>,
}

struct Tracked {
    pending: bool,
    dropped: Arc<AtomicUsize>,
}

impl Future for Tracked {
    type Output = Result<(), BoxError>;
    fn poll(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Self::Output> {
        if self.pending {
            Poll::Pending
        } else {
            Poll::Ready(Err("failed".into()))
        }
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        self.dropped.fetch_add(1, SeqCst);
    }
}

impl Service<bool> for Recorder {
    type Response = ();
    type Error = BoxError;
    type Future = Tracked;
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }
    fn call(&mut self, pending: bool) -> Tracked {
        self.made.fetch_add(1, SeqCst);
        Tracked {
            pending,
            dropped: self.dropped.clone(),
        }
    }
}

impl Recorder {
    fn all_dropped(&self) -> bool {
        self.made.load(SeqCst) == self.dropped.load(SeqCst)
    }
}

fn poll_once<F: Future + Unpin>(f: &mut F) -> Poll<F::Output> {
    Pin::new(f).poll(&mut Context::from_waker(std::task::Waker::noop()))
}

/// Drops a call of `svc` at each point: before its first poll, and after one
/// poll (pending in the inner service).
async fn drop_at_each_point<S>(svc: &S)
where
    S: Service<bool> + Clone,
    S::Future: Unpin,
{
    for polls in [0, 1] {
        let mut svc = svc.clone();
        let mut call = svc.ready().await.ok().expect("ready").call(true);
        for _ in 0..polls {
            assert!(poll_once(&mut call).is_pending());
        }
        drop(call);
    }
}

#[tokio::test(start_paused = true)]
async fn bulkhead_calls_dropped_anywhere_free_their_places() {
    let inner = Recorder::default();
    let layer = BulkheadLayer::builder()
        .max_concurrent(1)
        .max_queue(4)
        .build()
        .unwrap();
    let svc = layer.layer(inner.clone());
    drop_at_each_point(&svc).await;
    // Queued: one call holds the permit, another waits, both are dropped.
    let mut holder = svc.clone();
    let held = holder.ready().await.unwrap().call(true);
    let mut waiter = svc.clone();
    let mut ready = Box::pin(waiter.ready());
    assert!(poll_once(&mut ready).is_pending());
    assert_eq!(layer.handle().queued(), 1);
    drop(ready);
    drop(waiter);
    drop(held);
    assert_eq!(
        (layer.handle().in_flight(), layer.handle().queued()),
        (0, 0)
    );
    assert!(inner.all_dropped());
}

#[tokio::test(start_paused = true)]
async fn breaker_probes_dropped_anywhere_come_back() {
    let inner = Recorder::default();
    let layer = CircuitBreakerLayer::builder()
        .count_window(1)
        .minimum_calls(1)
        .half_open_calls(1)
        .wait_duration(Duration::from_secs(1))
        .build()
        .unwrap();
    let handle = layer.handle();
    let svc = layer.layer(inner.clone());
    svc.clone().oneshot(false).await.unwrap_err();
    tokio::time::advance(Duration::from_secs(1)).await;
    drop_at_each_point(&svc).await;
    assert_eq!(handle.state(), CircuitState::HalfOpen);
    assert_eq!(handle.metrics().probes_in_flight, 0);
    assert!(inner.all_dropped());
}

#[tokio::test(start_paused = true)]
async fn timeout_and_fallback_calls_dropped_anywhere_drop_the_inner_call() {
    let inner = Recorder::default();
    let timeout = TimeoutLayer::new(Duration::from_secs(1)).unwrap();
    drop_at_each_point(&timeout.layer(inner.clone())).await;
    let fallback = FallbackLayer::builder(from_sync_fn(|_: Failed<bool, ()>| Ok(())))
        .build()
        .unwrap();
    drop_at_each_point(&fallback.layer(inner.clone())).await;
    assert!(inner.all_dropped());
    assert_eq!(inner.made.load(SeqCst), 4);
}

#[tokio::test(start_paused = true)]
async fn retry_calls_dropped_anywhere_leave_nothing_running() {
    let inner = Recorder::default();
    let layer = RetryLayer::builder()
        .backoff(
            Backoff::constant(Duration::from_secs(1))
                .jitter(Jitter::None)
                .build()
                .unwrap(),
        )
        .build()
        .unwrap();
    let svc = layer.layer(inner.clone());
    drop_at_each_point(&svc).await;
    // In a backoff sleep: the first attempt failed, the retry waits.
    let mut caller = svc.clone();
    let mut call = caller.ready().await.unwrap().call(false);
    assert!(poll_once(&mut call).is_pending());
    assert_eq!(inner.made.load(SeqCst), 3);
    let clones = Arc::strong_count(&inner.made);
    drop(call);
    assert_eq!(
        Arc::strong_count(&inner.made),
        clones - 1,
        "the service clone went with it"
    );
    tokio::time::advance(Duration::from_secs(10)).await;
    assert_eq!(inner.made.load(SeqCst), 3, "no attempt after the drop");
    assert!(inner.all_dropped());
}
