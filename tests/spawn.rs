//! Every layer's future can be spawned on a multi-thread runtime, with a
//! service whose error is `BoxError` (tower's convention): the future is
//! `Send + 'static`, and an `async` block that awaits it is too.
//!
//! rustc's higher-ranked `Send` check (rust-lang/rust#64552) rejects some
//! futures whose fields name associated types (`From` is not general
//! enough); this file is where such a regression shows, at compile time.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use palisade::Resilience;
use palisade::bulkhead::BulkheadLayer;
use palisade::chaos::ChaosLayer;
use palisade::circuit_breaker::CircuitBreakerLayer;
use palisade::classify::{GrpcClassifier, HttpClassifier};
use palisade::error::BoxError;
use palisade::fallback::{Failed, FallbackLayer, from_sync_fn};
use palisade::retry::{ReplayBodies, RetryLayer};
use palisade::timeout::TimeoutLayer;
use tower::{Layer, Service, ServiceExt, service_fn};

fn numbers() -> impl Service<u32, Response = u32, Error = BoxError, Future: Send> + Clone + Send {
    service_fn(|n: u32| async move { Ok::<_, BoxError>(n + 1) })
}

type HttpRes = http::Response<Full<Bytes>>;

/// Echoes the request body, after reading it whole.
fn echo() -> impl Service<
    http::Request<palisade::retry::ReplayBody<Full<Bytes>>>,
    Response = HttpRes,
    Error = BoxError,
    Future: Send,
> + Clone
+ Send {
    service_fn(
        |req: http::Request<palisade::retry::ReplayBody<Full<Bytes>>>| async move {
            let body = req.into_body().collect().await?.to_bytes();
            Ok::<_, BoxError>(http::Response::new(Full::new(body)))
        },
    )
}

/// Spawns the call's future itself, then an `async` block around a call.
async fn spawn_both<S, Req>(svc: S, req: impl Fn() -> Req) -> (S::Response, S::Response)
where
    S: Service<Req> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Response: Send + 'static,
    S::Error: std::fmt::Debug + Send + 'static,
    Req: Send + 'static,
{
    let mut direct = svc.clone();
    let future = direct.ready().await.unwrap().call(req());
    let first = tokio::spawn(future).await.unwrap().unwrap();
    let mut wrapped = svc;
    let request = req();
    let second = tokio::spawn(async move { wrapped.ready().await?.call(request).await })
        .await
        .unwrap()
        .unwrap();
    (first, second)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_layer_future_spawns() {
    let breaker = CircuitBreakerLayer::builder().build().unwrap();
    assert_eq!(spawn_both(breaker.layer(numbers()), || 1).await, (2, 2));

    let retry = RetryLayer::builder().build().unwrap();
    assert_eq!(spawn_both(retry.layer(numbers()), || 1).await, (2, 2));

    let hedge = palisade::hedge::HedgeLayer::builder().build().unwrap();
    assert_eq!(spawn_both(hedge.layer(numbers()), || 1).await, (2, 2));

    let timeout = TimeoutLayer::new(Duration::from_secs(5)).unwrap();
    assert_eq!(spawn_both(timeout.layer(numbers()), || 1).await, (2, 2));

    let bulkhead = BulkheadLayer::builder().build().unwrap();
    assert_eq!(spawn_both(bulkhead.layer(numbers()), || 1).await, (2, 2));

    let fallback = FallbackLayer::builder(from_sync_fn(|_: Failed<u32, u32>| Ok(0)))
        .build()
        .unwrap();
    assert_eq!(spawn_both(fallback.layer(numbers()), || 1).await, (2, 2));

    let chaos = ChaosLayer::<u32, u32>::builder().build().unwrap();
    assert_eq!(spawn_both(chaos.layer(numbers()), || 1).await, (2, 2));

    let adaptive = palisade::adaptive::AdaptiveLimitLayer::builder()
        .build()
        .unwrap();
    assert_eq!(spawn_both(adaptive.layer(numbers()), || 1).await, (2, 2));

    let throttle = palisade::adaptive::ThrottleLayer::builder()
        .build()
        .unwrap();
    assert_eq!(spawn_both(throttle.layer(numbers()), || 1).await, (2, 2));

    let preset = Resilience::builder().build().unwrap();
    assert_eq!(spawn_both(preset.layer(numbers()), || 1).await, (2, 2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_stacks_spawn_with_replayed_bodies_and_covered_bodies() {
    let request = || {
        http::Request::put("/")
            .body(Full::new(Bytes::from_static(b"abc")))
            .unwrap()
    };
    let retry = RetryLayer::builder()
        .classifier(HttpClassifier::new())
        .requests(ReplayBodies::default())
        .build()
        .unwrap();
    let breaker = CircuitBreakerLayer::builder()
        .classifier(GrpcClassifier::new())
        .build()
        .unwrap();
    let bulkhead = BulkheadLayer::builder().cover_body().build().unwrap();
    let timeout = TimeoutLayer::builder()
        .timeout(Duration::from_secs(5))
        .cover_body()
        .build()
        .unwrap();
    let stack = tower::ServiceBuilder::new()
        .layer(retry)
        .layer(timeout)
        .layer(bulkhead)
        .layer(breaker)
        .service(echo());
    let (first, second) = spawn_both(stack, request).await;
    for res in [first, second] {
        let body = res.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body, "abc");
    }

    // The adaptive limit and the throttle with gRPC's classifier: the body
    // holds each one's guard until its status.
    let stack = Resilience::http()
        .adaptive_limit(|limit| limit.classifier(GrpcClassifier::new()))
        .throttle(|throttle| throttle.classifier(GrpcClassifier::new()))
        .build()
        .unwrap();
    let (first, second) = spawn_both(stack.layer(echo()), request).await;
    for res in [first, second] {
        let body = res.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body, "abc");
    }
}
