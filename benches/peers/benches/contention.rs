//! One shared breaker, bulkhead, retry or full stack driven by T tasks at once on
//! a multi-thread runtime (2 workers: the machine has 2 cores), against the
//! peers' equivalents and against the floor: a service that only writes one
//! shared cache line per call.
//!
//! ```text
//! cargo bench -p palisade-peers --bench contention
//! R=3 scripts/contention.sh   # three runs, each row's spread of T2/T1
//! ```
//!
//! Each measurement spreads its calls evenly over T tasks; criterion
//! reports the wall time per call, so the throughput of all tasks together
//! is its inverse. It lives here rather than in palisade's own benches
//! because palisade's dev-dependencies turn on tokio's `test-util`, whose
//! clock takes a mutex on every read: that would measure tokio's test
//! clock, not the layers.

use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use tower::{Layer, Service, ServiceExt};

mod common;
use common::{NeverRetry, Ready, bare};

const TASKS: [u64; 4] = [1, 2, 4, 8];

fn contend<S>(c: &mut Criterion, group: &str, name: &str, svc: S)
where
    S: Service<u64> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: std::fmt::Debug + Send,
    S::Response: Send,
{
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_time()
        .build()
        .expect("a runtime");
    let mut group = c.benchmark_group(group);
    for tasks in TASKS {
        group.bench_with_input(BenchmarkId::new(name, tasks), &tasks, |b, &tasks| {
            b.iter_custom(|iters| {
                let per_task = iters.div_ceil(tasks);
                rt.block_on(async {
                    let start = Instant::now();
                    let handles: Vec<_> = (0..tasks)
                        .map(|_| {
                            let mut svc = svc.clone();
                            tokio::spawn(async move {
                                for n in 0..per_task {
                                    let ready = svc.ready().await.expect("ready");
                                    black_box(ready.call(black_box(n)).await.expect("ok"));
                                }
                            })
                        })
                        .collect();
                    for h in handles {
                        h.await.expect("task");
                    }
                    start.elapsed()
                })
            })
        });
    }
    group.finish();
}

/// The shared-memory work under the layers, alone: what a call costs at T
/// tasks when all it does is write one cache line every task writes.
#[derive(Clone)]
struct Floor {
    shared: Arc<AtomicU64>,
    /// An `Arc` clone and drop (what a future that owns its layer's shared
    /// state does), or else one atomic add (a shared counter).
    arc: bool,
}

impl Service<u64> for Floor {
    type Response = u64;
    type Error = palisade::error::BoxError;
    type Future = Ready;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, n: u64) -> Ready {
        if self.arc {
            drop(black_box(Arc::clone(&self.shared)));
        } else {
            self.shared.fetch_add(1, Relaxed);
        }
        std::future::ready(Ok(n))
    }
}

fn floor(c: &mut Criterion) {
    contend(c, "contention/floor", "bare", bare());
    let shared = Arc::new(AtomicU64::new(0));
    let counter = Floor {
        shared: shared.clone(),
        arc: false,
    };
    contend(c, "contention/floor", "one shared atomic add", counter);
    let arc = Floor { shared, arc: true };
    contend(c, "contention/floor", "one shared Arc clone and drop", arc);
}

fn breakers(c: &mut Criterion) {
    let palisade = palisade::circuit_breaker::CircuitBreakerLayer::builder()
        .build()
        .unwrap();
    contend(
        c,
        "contention/circuit_breaker",
        "palisade",
        palisade.layer(bare()),
    );
    let tr = tower_resilience::circuitbreaker::CircuitBreakerLayer::builder()
        .sliding_window_size(100)
        .build()
        .unwrap();
    contend(
        c,
        "contention/circuit_breaker",
        "tower-resilience",
        tr.layer(bare()),
    );
}

fn bulkheads(c: &mut Criterion) {
    let palisade = palisade::bulkhead::BulkheadLayer::builder()
        .max_concurrent(64)
        .build()
        .unwrap();
    contend(c, "contention/bulkhead", "palisade", palisade.layer(bare()));
    let limit = tower::limit::ConcurrencyLimit::new(bare(), 64);
    // ConcurrencyLimit's semaphore is per `layer()`; clones share it.
    contend(c, "contention/bulkhead", "tower ConcurrencyLimit", limit);
    let tr = tower_resilience::bulkhead::BulkheadLayer::builder()
        .max_concurrent_calls(64)
        .build()
        .unwrap();
    contend(
        c,
        "contention/bulkhead",
        "tower-resilience",
        tr.layer(bare()),
    );
}

fn retries(c: &mut Criterion) {
    let palisade = palisade::retry::RetryLayer::builder().build().unwrap();
    contend(c, "contention/retry", "palisade", palisade.layer(bare()));
    let unbudgeted = palisade::retry::RetryLayer::builder()
        .no_budget()
        .build()
        .unwrap();
    contend(
        c,
        "contention/retry",
        "palisade, no budget",
        unbudgeted.layer(bare()),
    );
    contend(
        c,
        "contention/retry",
        "tower 0.5 (never-retrying policy)",
        tower::retry::RetryLayer::new(NeverRetry).layer(bare()),
    );
}

fn stacks(c: &mut Criterion) {
    contend(
        c,
        "contention/full_stack",
        "palisade preset",
        common::preset_five(64),
    );
}

criterion_group! {
    name = contention;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(2))
        .sample_size(30);
    targets = floor, breakers, bulkheads, retries, stacks
}
criterion_main!(contention);
