//! The happy path of each layer against the bare service, in one run.
//!
//! Calls are looped inside one tokio runtime (`iter_custom`), so that
//! `block_on` is not what is measured. The inner service answers with a
//! ready future: what is left is the layer's own cost.
//!
//! ```text
//! cargo bench --bench hot_path
//! ```
//!
//! palisade's dev-dependencies turn on tokio's `test-util`, whose clock takes
//! a mutex on every read, so the layers that read the clock (timeouts, the
//! preset) look dearer here than they are. The reference figures, against
//! the peers and without `test-util`, come from `cargo bench -p
//! palisade-peers` (see BENCHMARKS.md).

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

fn other_layers(c: &mut Criterion) {
    use palisade::Resilience;
    use palisade::bulkhead::BulkheadLayer;
    use palisade::fallback::{Failed, FallbackLayer, from_sync_fn};
    use palisade::retry::RetryLayer;
    use palisade::timeout::TimeoutLayer;

    let mut group = c.benchmark_group("layers");
    bench(&mut group, "bare", bare());
    let timeout = TimeoutLayer::new(Duration::from_secs(1)).unwrap();
    bench(&mut group, "timeout", timeout.layer(bare()));
    let bulkhead = BulkheadLayer::builder().build().unwrap();
    bench(&mut group, "bulkhead", bulkhead.layer(bare()));
    let limiter = palisade::rate_limit::RateLimitLayer::builder()
        .rate(1_000_000_000, Duration::from_secs(1))
        .build()
        .unwrap();
    bench(
        &mut group,
        "rate limit, with room",
        limiter.layer(bare_clone()),
    );
    let retry = RetryLayer::builder().build().unwrap();
    bench(&mut group, "retry", retry.layer(bare_clone()));
    let fallback = FallbackLayer::builder(from_sync_fn(|_: Failed<u64, u64>| Ok(0)))
        .build()
        .unwrap();
    bench(&mut group, "fallback", fallback.layer(bare()));
    let preset = Resilience::builder()
        .fallback(from_sync_fn(|_: Failed<u64, u64>| Ok(0)))
        .total_timeout(Duration::from_secs(10))
        .retry(|retry| retry)
        .circuit_breaker(|breaker| breaker)
        .bulkhead(|bulkhead| bulkhead)
        .attempt_timeout(Duration::from_secs(1))
        .build()
        .unwrap();
    bench(&mut group, "preset, every part", preset.layer(bare_clone()));
    group.finish();
}

type Ready = std::future::Ready<Result<u64, BoxError>>;

/// The bare service as a `Clone` type, which the retry needs.
fn bare_clone() -> tower::util::ServiceFn<fn(u64) -> Ready> {
    service_fn((|n| std::future::ready(Ok(n))) as fn(u64) -> Ready)
}

criterion_group!(benches, circuit_breaker, other_layers);
criterion_main!(benches);
