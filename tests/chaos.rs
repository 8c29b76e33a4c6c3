//! The chaos layer: seeded faults, latency, substitutes, switching at run
//! time.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::time::Duration;

use palisade::chaos::{ChaosLayer, Fault};
use palisade::error::BoxError;
use tokio::time::Instant;
use tower::{Layer, Service, ServiceExt, service_fn};

fn echo(calls: Arc<AtomicUsize>) -> impl Service<u32, Response = u32, Error = BoxError> + Clone {
    service_fn(move |x: u32| {
        calls.fetch_add(1, SeqCst);
        async move { Ok::<_, BoxError>(x) }
    })
}

async fn outcomes(layer: &ChaosLayer<u32, u32>, n: u32) -> Vec<bool> {
    let svc = layer.layer(echo(Arc::default()));
    let mut out = Vec::new();
    for i in 0..n {
        out.push(svc.clone().oneshot(i).await.is_ok());
    }
    out
}

#[tokio::test(start_paused = true)]
async fn injected_errors_follow_the_rate_and_the_seed() {
    let layer = |seed| {
        ChaosLayer::<u32, u32>::builder()
            .error_rate(0.2)
            .seed(seed)
            .build()
            .unwrap()
    };
    let a = outcomes(&layer(5), 2000).await;
    let failed = a.iter().filter(|ok| !**ok).count();
    assert!(
        (300..500).contains(&failed),
        "{failed} of 2000 failed at a 20% rate"
    );
    assert_eq!(a, outcomes(&layer(5), 2000).await, "the same seed replays");
    assert_ne!(a, outcomes(&layer(6), 2000).await);
}

#[tokio::test(start_paused = true)]
async fn failed_and_substituted_calls_never_reach_the_service() {
    let calls = Arc::new(AtomicUsize::new(0));
    let layer = ChaosLayer::<u32, u32>::builder()
        .decide(|x: &u32| match x % 3 {
            0 => Fault::Error,
            1 => Fault::Substitute,
            _ => Fault::None,
        })
        .substitute(0.0, || 999)
        .error(|| "injected".into())
        .build()
        .unwrap();
    let svc = layer.layer(echo(calls.clone()));
    assert_eq!(
        svc.clone().oneshot(0).await.unwrap_err().to_string(),
        "injected"
    );
    assert_eq!(svc.clone().oneshot(1).await.unwrap(), 999);
    assert_eq!(svc.clone().oneshot(2).await.unwrap(), 2);
    assert_eq!(calls.load(SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn latency_holds_the_result_back() {
    let layer = ChaosLayer::<u32, u32>::builder()
        .latency(1.0, Duration::from_millis(250))
        .build()
        .unwrap();
    let start = Instant::now();
    assert_eq!(
        layer.layer(echo(Arc::default())).oneshot(7).await.unwrap(),
        7
    );
    assert_eq!(start.elapsed(), Duration::from_millis(250));
}

#[tokio::test(start_paused = true)]
async fn the_handle_switches_chaos_at_run_time() {
    let layer = ChaosLayer::<u32, u32>::builder()
        .error_rate(1.0)
        .build()
        .unwrap();
    let handle = layer.handle();
    assert!(outcomes(&layer, 10).await.iter().all(|ok| !ok));
    handle.disable();
    assert!(outcomes(&layer, 10).await.iter().all(|ok| *ok));
    handle.enable();
    assert!(handle.set_error_rate(0.0));
    assert!(!handle.set_error_rate(1.5), "refused, the old rate stays");
    assert!(outcomes(&layer, 10).await.iter().all(|ok| *ok));
}

#[test]
fn bad_rates_are_refused() {
    let b = ChaosLayer::<u32, u32>::builder;
    assert_eq!(
        b().error_rate(1.1).build().unwrap_err().parameter(),
        "error_rate"
    );
    assert_eq!(
        b().error_rate(f64::NAN).build().unwrap_err().parameter(),
        "error_rate"
    );
    assert_eq!(
        b().latency(0.5, Duration::ZERO)
            .build()
            .unwrap_err()
            .parameter(),
        "latency"
    );
    assert_eq!(
        b().substitute(-0.1, || 0).build().unwrap_err().parameter(),
        "substitute"
    );
}
