//! The adaptive limit and the throttle under real threads: many tasks on
//! a multi-thread runtime call through one layer at once, with failures
//! and cancellations, and the invariants hold at every moment they can be
//! seen and once everything has finished. (The learner's no-stranded-
//! sample rule is model-checked by loom in `src/adaptive/limit/learn.rs`.)

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::Duration;

use palisade::BoxError;
use palisade::adaptive::{AdaptiveLimitLayer, Aimd, LimitAlgorithm, Sample, ThrottleLayer};
use palisade::error::ErrorKind;
use tower::util::BoxCloneService;
use tower::{Layer, ServiceExt, service_fn};

/// Takes one off the count of calls running when dropped.
struct Running(Arc<AtomicU32>);

impl Drop for Running {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Polls `fut` once.
async fn poll_once<F: Future>(mut fut: Pin<&mut F>) -> Poll<F::Output> {
    std::future::poll_fn(|cx| Poll::Ready(fut.as_mut().poll(cx))).await
}

/// AIMD, counting what it is taught.
#[derive(Debug)]
struct Counting {
    inner: Aimd,
    samples: Arc<AtomicU64>,
    failures: Arc<AtomicU64>,
    limits: Arc<Mutex<Vec<u32>>>,
}

impl LimitAlgorithm for Counting {
    fn initial_limit(&self) -> u32 {
        self.inner.initial_limit()
    }
    fn update(&mut self, sample: &Sample) -> u32 {
        self.samples.fetch_add(1, Ordering::Relaxed);
        if sample.dropped() {
            self.failures.fetch_add(1, Ordering::Relaxed);
        }
        let limit = self.inner.update(sample);
        self.limits.lock().unwrap().push(limit);
        limit
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_calls_never_exceed_the_highest_limit_and_every_permit_comes_back() {
    const TASKS: usize = 8;
    const CALLS: u64 = 3_000;
    let samples = Arc::new(AtomicU64::new(0));
    let failures = Arc::new(AtomicU64::new(0));
    let limits = Arc::new(Mutex::new(Vec::new()));
    let layer = AdaptiveLimitLayer::builder()
        .algorithm(Counting {
            inner: Aimd::builder()
                .initial_limit(8)
                .min_limit(1)
                .max_limit(16)
                .build()
                .unwrap(),
            samples: samples.clone(),
            failures: failures.clone(),
            limits: limits.clone(),
        })
        .per_sample()
        .max_queue(4)
        .build()
        .unwrap();
    let handle = layer.handle();
    let running = Arc::new(AtomicU32::new(0));
    let most = Arc::new(AtomicU32::new(0));
    let svc = {
        let (running, most) = (running.clone(), most.clone());
        layer.layer(service_fn(move |n: u64| {
            let (running, most) = (running.clone(), most.clone());
            async move {
                let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(now, Ordering::SeqCst);
                // Counted out when the call ends or is dropped.
                let _running = Running(running);
                for _ in 0..n % 3 {
                    tokio::task::yield_now().await;
                }
                if n.is_multiple_of(7) {
                    Err::<u64, BoxError>("failed".into())
                } else {
                    Ok(n)
                }
            }
        }))
    };
    // Boxed: rustc cannot prove the concrete stack's future `Send` inside
    // a spawned async block (rust-lang/rust#64552).
    let svc = BoxCloneService::new(svc);
    let outcomes = Arc::new([AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0)]);
    let tasks: Vec<_> = (0..TASKS)
        .map(|t| {
            let (svc, outcomes) = (svc.clone(), outcomes.clone());
            tokio::spawn(async move {
                for i in 0..CALLS {
                    let n = t as u64 * CALLS + i;
                    // One call in 11 is cancelled at its first wait.
                    let result = if n.is_multiple_of(11) {
                        let mut call = Box::pin(svc.clone().oneshot(n));
                        match poll_once(call.as_mut()).await {
                            Poll::Ready(result) => result,
                            Poll::Pending => continue,
                        }
                    } else {
                        svc.clone().oneshot(n).await
                    };
                    let slot = match result {
                        Ok(_) => 0,
                        Err(e) if ErrorKind::of(&e) == ErrorKind::ConcurrencyLimited => 2,
                        Err(_) => 1,
                    };
                    outcomes[slot].fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let limits = limits.lock().unwrap();
    let highest = limits.iter().copied().max().unwrap_or(8).max(8);
    assert!(highest <= 16);
    assert!(
        most.load(Ordering::SeqCst) <= highest,
        "{} calls at once under a highest limit of {highest}",
        most.load(Ordering::SeqCst)
    );
    assert_eq!(
        (handle.in_flight(), handle.queued()),
        (0, 0),
        "every permit came back"
    );
    let [ok, failed, refused] = outcomes.each_ref().map(|c| c.load(Ordering::Relaxed));
    assert!(ok > 0 && failed > 0, "{ok} {failed} {refused}");
    // Every sample taught is a finished call's (some folded together).
    assert!(samples.load(Ordering::Relaxed) <= ok + failed);
    assert!(failures.load(Ordering::Relaxed) >= 1);
    assert!(failures.load(Ordering::Relaxed) <= failed);
    assert!(limits.iter().all(|l| (1..=16).contains(l)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_and_accepts_add_up_exactly() {
    const TASKS: u64 = 8;
    const CALLS: u64 = 3_000;
    // An hour's window: no bucket is recycled while the test runs.
    let throttle = ThrottleLayer::builder()
        .window(Duration::from_secs(3_600))
        .build()
        .unwrap();
    let handle = throttle.handle();
    let svc = throttle.layer(service_fn(|n: u64| async move {
        if n.is_multiple_of(2) {
            tokio::task::yield_now().await;
        }
        Ok::<u64, BoxError>(n)
    }));
    let svc = BoxCloneService::new(svc);
    let answered = Arc::new(AtomicU64::new(0));
    let tasks: Vec<_> = (0..TASKS)
        .map(|t| {
            let (svc, answered, handle) = (svc.clone(), answered.clone(), handle.clone());
            tokio::spawn(async move {
                for i in 0..CALLS {
                    let n = t * CALLS + i;
                    if n.is_multiple_of(5) {
                        // Polled once: answered at once, or dropped
                        // (cancelled) at its first wait.
                        let mut call = Box::pin(svc.clone().oneshot(n));
                        if let Poll::Ready(result) = poll_once(call.as_mut()).await {
                            result.unwrap();
                            answered.fetch_add(1, Ordering::Relaxed);
                        }
                    } else {
                        svc.clone().oneshot(n).await.unwrap();
                        answered.fetch_add(1, Ordering::Relaxed);
                    }
                    // Never more accepts than requests, at any moment.
                    let (accepts, requests) = (handle.accepts(), handle.requests());
                    assert!(accepts <= requests + TASKS, "{accepts} > {requests}");
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let answered = answered.load(Ordering::Relaxed);
    assert!(answered < TASKS * CALLS, "some were cancelled");
    assert_eq!(
        (handle.requests(), handle.accepts()),
        (answered, answered),
        "each answered call once, each cancelled call not at all"
    );
    assert_eq!(handle.probability(), 0.0);
}
