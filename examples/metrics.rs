//! What Prometheus gets from palisade's metrics.
//!
//! A few calls go through a circuit breaker, a bulkhead, a retry and a
//! timeout, each with `MetricsEvents` listening, and the scrape text of
//! `metrics-exporter-prometheus` is printed: the names and labels of the
//! table in `palisade::event::metrics`, as Prometheus sees them (dots turned
//! into underscores, `_total` added to counters).
//!
//! ```text
//! cargo run --example metrics
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use metrics_exporter_prometheus::PrometheusBuilder;
use palisade::backoff::{Backoff, Jitter};
use palisade::bulkhead::BulkheadLayer;
use palisade::circuit_breaker::CircuitBreakerLayer;
use palisade::error::BoxError;
use palisade::event::MetricsEvents;
use palisade::retry::RetryLayer;
use palisade::timeout::TimeoutLayer;
use tokio::sync::oneshot;
use tower::{Layer, Service, ServiceExt, service_fn};

#[tokio::main(flavor = "current_thread")]
async fn main() {
    // The recorder alone: no HTTP listener, the text is rendered on demand.
    // `with_recommended_naming` adds `_total` to counters, as Prometheus
    // expects (without it, counters keep their bare names).
    let prometheus = PrometheusBuilder::new()
        .with_recommended_naming(true)
        .install_recorder()
        .expect("no other recorder is installed");

    // A breaker that opens after two calls, half of them failed: the third
    // call is refused.
    let breaker = CircuitBreakerLayer::builder()
        .name("inventory")
        .count_window(2)
        .minimum_calls(2)
        .on_event(MetricsEvents::new())
        .build()
        .unwrap();
    let mut inventory = breaker.layer(service_fn(|ok: bool| async move {
        if ok {
            Ok(())
        } else {
            Err::<(), BoxError>("out of stock".into())
        }
    }));
    for ok in [true, false, true] {
        let result = inventory.ready().await.unwrap().call(ok).await;
        println!("# inventory({ok}): {result:?}");
    }

    // A retry over a service that fails once per call, then one that
    // always fails: two retries that worked, then a call given up.
    let retry = RetryLayer::builder()
        .name("pricing")
        .max_attempts(2)
        .backoff(
            Backoff::constant(Duration::from_millis(1))
                .jitter(Jitter::None)
                .build()
                .unwrap(),
        )
        .no_budget()
        .on_event(MetricsEvents::new())
        .build()
        .unwrap();
    let calls = Arc::new(AtomicU32::new(0));
    let seen = calls.clone();
    let pricing = retry.layer(service_fn(move |always_fail: bool| {
        let n = seen.fetch_add(1, Ordering::SeqCst);
        async move {
            if always_fail || n.is_multiple_of(2) {
                Err::<u32, BoxError>("busy".into())
            } else {
                Ok(42)
            }
        }
    }));
    for always_fail in [false, false, true] {
        let result = pricing.clone().oneshot(always_fail).await;
        println!("# pricing(always_fail: {always_fail}): {result:?}");
    }

    // A timeout that cuts off a slow call.
    let timeout = TimeoutLayer::builder()
        .name("search")
        .timeout(Duration::from_millis(10))
        .on_event(MetricsEvents::new())
        .build()
        .unwrap();
    let search = timeout.layer(service_fn(|delay: Duration| async move {
        tokio::time::sleep(delay).await;
        Ok::<_, BoxError>(())
    }));
    for delay in [Duration::ZERO, Duration::from_millis(100)] {
        let result = search.clone().oneshot(delay).await;
        println!("# search({delay:?}): {result:?}");
    }

    // A bulkhead of one: a call holds the permit, the next is refused.
    let bulkhead = BulkheadLayer::builder()
        .name("db")
        .max_concurrent(1)
        .on_event(MetricsEvents::new())
        .build()
        .unwrap();
    let mut db = bulkhead.layer(service_fn(|done: oneshot::Receiver<()>| async move {
        done.await.ok();
        Ok::<_, BoxError>(())
    }));
    let (release, held) = oneshot::channel();
    let holding = db.ready().await.unwrap().call(held);
    let (_, unused) = oneshot::channel();
    let refused = db.clone().oneshot(unused).await;
    println!("# db while full: {refused:?}");
    release.send(()).unwrap();
    holding.await.unwrap();

    println!();
    print!("{}", prometheus.render());
}
