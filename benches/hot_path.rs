//! The happy path of each layer against the bare service, in one run.
//!
//! Calls are looped inside one tokio runtime (`iter_custom`), so that
//! `block_on` is not what is measured. The inner service answers with a
//! ready future: what is left is the layer's own cost.
//!
//! ```text
//! cargo bench --bench hot_path
//! ```

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use palisade::circuit_breaker::CircuitBreakerLayer;
use palisade::error::BoxError;
use tower::{Layer, Service, ServiceExt, service_fn};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("a runtime")
}

fn bare() -> impl Service<u64, Response = u64, Error = BoxError> {
    service_fn(|n: u64| std::future::ready(Ok::<_, BoxError>(n)))
}

/// Measures `iters` calls through `svc`, each awaited before the next.
async fn drive<S>(svc: &mut S, iters: u64) -> Duration
where
    S: Service<u64, Response = u64>,
    S::Error: std::fmt::Debug,
{
    let start = Instant::now();
    for n in 0..iters {
        let out = svc.ready().await.unwrap().call(black_box(n)).await.unwrap();
        black_box(out);
    }
    start.elapsed()
}

fn bench<S>(
    c: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    name: &str,
    mut svc: S,
) where
    S: Service<u64, Response = u64>,
    S::Error: std::fmt::Debug,
{
    let rt = runtime();
    c.bench_function(name, |b| {
        b.iter_custom(|iters| rt.block_on(drive(&mut svc, iters)))
    });
}

fn circuit_breaker(c: &mut Criterion) {
    let mut group = c.benchmark_group("circuit_breaker");
    bench(&mut group, "bare", bare());
    let count = CircuitBreakerLayer::builder().build().unwrap();
    bench(
        &mut group,
        "palisade closed, count window",
        count.layer(bare()),
    );
    let time = CircuitBreakerLayer::builder()
        .time_window(Duration::from_secs(10))
        .build()
        .unwrap();
    bench(
        &mut group,
        "palisade closed, time window",
        time.layer(bare()),
    );
    let slow = CircuitBreakerLayer::builder()
        .slow_call_duration(Duration::from_secs(1))
        .build()
        .unwrap();
    bench(
        &mut group,
        "palisade closed, slow-call detection",
        slow.layer(bare()),
    );
    group.finish();
}

criterion_group!(benches, circuit_breaker);
criterion_main!(benches);
