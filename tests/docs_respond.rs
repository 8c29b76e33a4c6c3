//! Issue 14, items 4 to 8, tested from the public docs alone (README,
//! CHANGELOG, rustdoc, the examples): rejections answered in each
//! protocol's terms (`respond`), the rejections' messages and accessors,
//! the metrics table and the attempt spans, and the defaults that adapt.
//!
//! Every test is a promise the docs make, named for it, against real peers
//! where a peer is involved: axum and tonic-health servers on 127.0.0.1,
//! reqwest and tonic's generated `HealthClient` over a real `Channel`.

#[path = "support/http_server.rs"]
mod http_server;

use std::collections::{BTreeMap, BTreeSet};
use std::convert::Infallible;
use std::error::Error as StdError;
use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use futures_util::FutureExt;
use palisade::Resilience;
use palisade::backoff::{Backoff, Jitter};
use palisade::bulkhead::{BulkheadHandle, BulkheadLayer};
use palisade::circuit_breaker::{CircuitBreakerLayer, CircuitState};
use palisade::classify::{GrpcClassifier, HttpClassifier};
use palisade::error::{BoxError, BulkheadFull, CircuitOpen, Elapsed, ErrorKind};
use palisade::event::{Event, MetricsEvents};
use palisade::fallback::FallbackLayer;
use palisade::respond::{GrpcRejectionLayer, HttpRejectionLayer, to_response, to_status};
use palisade::retry::{
    GiveUpReason, ReqwestRequests, RetryBudget, RetryEvent, RetryLayer, TonicBodies,
};
use palisade::timeout::TimeoutLayer;
use tonic_health::ServingStatus;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus as PbServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tower::{Layer, Service, ServiceBuilder, ServiceExt, service_fn};

use http_server::{Reply, Server};

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// A service of `u8` requests: 0 succeeds, 1 fails, anything else never
/// answers.
fn scripted() -> impl Service<u8, Response = (), Error = BoxError, Future: Send> + Clone + Send {
    service_fn(|what: u8| async move {
        match what {
            0 => Ok(()),
            1 => Err::<(), BoxError>("boom".into()),
            _ => std::future::pending().await,
        }
    })
}

const OK: u8 = 0;
const FAIL: u8 = 1;
const HANG: u8 = 2;

/// A breaker named `name` that opens after two failures out of two calls,
/// for its default 30 s wait.
fn breaker_of_two(name: &str) -> CircuitBreakerLayer {
    CircuitBreakerLayer::builder()
        .name(name)
        .count_window(2)
        .minimum_calls(2)
        .build()
        .unwrap()
}

/// Trips `svc`'s breaker with two failures.
async fn trip<S>(svc: &S)
where
    S: Service<u8, Response = (), Error = BoxError> + Clone,
{
    for _ in 0..2 {
        assert!(svc.clone().oneshot(FAIL).await.is_err());
    }
}

/// An error of the inner service that keeps its type through the layers.
#[derive(Debug)]
struct Wrapper(BoxError);

impl fmt::Display for Wrapper {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("wrapped")
    }
}

impl StdError for Wrapper {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        Some(&*self.0)
    }
}

#[derive(Debug)]
struct Mine;

impl fmt::Display for Mine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the database password is hunter2")
    }
}

impl StdError for Mine {}

/// The `Elapsed` of a timeout named "per-attempt" (250 ms).
async fn elapsed_error() -> BoxError {
    let timeout = TimeoutLayer::builder()
        .name("per-attempt")
        .timeout(Duration::from_millis(250))
        .build()
        .unwrap();
    timeout.layer(scripted()).oneshot(HANG).await.unwrap_err()
}

/// The `BulkheadFull` of a bulkhead named "inventory" of one place.
async fn bulkhead_full_error() -> BoxError {
    let bulkhead = BulkheadLayer::builder()
        .name("inventory")
        .max_concurrent(1)
        .build()
        .unwrap();
    let svc = bulkhead.layer(scripted());
    let mut holder = svc.clone();
    holder.ready().await.unwrap();
    svc.oneshot(OK).await.unwrap_err()
}

async fn until_in_flight(bulkhead: &BulkheadHandle, n: u32) {
    while bulkhead.in_flight() < n {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

async fn serve_axum(app: Router) -> SocketAddr {
    use axum::serve::ListenerExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

fn reqwest_client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

/// Wraps tonic's routes: a request with `x-slow` metadata waits 10 s (as
/// `examples/server.rs` does).
fn slow_when_asked<S>(
    inner: S,
) -> impl Service<
    http::Request<tonic::body::Body>,
    Response = S::Response,
    Error = S::Error,
    Future = impl Send,
> + Clone
where
    S: Service<http::Request<tonic::body::Body>> + Clone + Send + 'static,
    S::Future: Send,
{
    service_fn(move |req: http::Request<tonic::body::Body>| {
        let inner = inner.clone();
        async move {
            if req.headers().contains_key("x-slow") {
                tokio::time::sleep(Duration::from_secs(10)).await;
            }
            inner.oneshot(req).await
        }
    })
}

/// Serves tonic-health with `inventory` serving and `stock` not serving,
/// behind `$builder` (a `Server::builder()` with layers), on 127.0.0.1.
macro_rules! serve_health {
    ($builder:expr) => {{
        let (reporter, health) = tonic_health::server::health_reporter();
        reporter
            .set_service_status("inventory", ServingStatus::Serving)
            .await;
        reporter
            .set_service_status("stock", ServingStatus::NotServing)
            .await;
        let incoming = tonic::transport::server::TcpIncoming::bind("127.0.0.1:0".parse().unwrap())
            .unwrap()
            .with_nodelay(Some(true));
        let addr: SocketAddr = incoming.local_addr().unwrap();
        let router = $builder.add_service(health);
        tokio::spawn(async move {
            let _reporter = reporter;
            router.serve_with_incoming(incoming).await
        });
        addr
    }};
}

fn channel_to(addr: SocketAddr) -> tonic::transport::Channel {
    tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .tcp_nodelay(true)
        .connect_lazy()
}

fn check(service: &str, slow: bool) -> tonic::Request<HealthCheckRequest> {
    let mut req = tonic::Request::new(HealthCheckRequest {
        service: service.into(),
    });
    if slow {
        req.metadata_mut().insert("x-slow", "yes".parse().unwrap());
    }
    req
}

// ---------------------------------------------------------------------------
// respond: gRPC
// ---------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn to_status_makes_elapsed_deadline_exceeded_with_its_message_and_source() {
    let err = elapsed_error().await;
    let status = to_status(&*err).unwrap();
    assert_eq!(status.code(), tonic::Code::DeadlineExceeded);
    assert_eq!(status.message(), err.to_string());
    assert_eq!(ErrorKind::of_dyn(&status), ErrorKind::Elapsed);
    let source = status
        .source()
        .expect("the rejection is the status's source");
    assert_eq!(
        source.downcast_ref::<Elapsed>().unwrap().name(),
        "per-attempt"
    );
}

#[tokio::test]
async fn to_status_makes_bulkhead_full_resource_exhausted_without_pushback() {
    let err = bulkhead_full_error().await;
    let status = to_status(&*err).unwrap();
    assert_eq!(status.code(), tonic::Code::ResourceExhausted);
    assert_eq!(
        status.message(),
        r#"bulkhead "inventory" is full: 1 in flight, no queue"#
    );
    assert_eq!(ErrorKind::of_dyn(&status), ErrorKind::BulkheadFull);
    assert!(status.metadata().get("grpc-retry-pushback-ms").is_none());
}

#[tokio::test(start_paused = true)]
async fn to_status_makes_an_open_breaker_unavailable_with_its_wait_as_pushback_rounded_up() {
    let svc = breaker_of_two("payments").layer(scripted());
    trip(&svc).await;
    // 29.9995 s left of the 30 s wait: rounded up, 30000 ms.
    tokio::time::advance(Duration::from_micros(500)).await;
    let err = svc.clone().oneshot(OK).await.unwrap_err();
    let status = to_status(&*err).unwrap();
    assert_eq!(status.code(), tonic::Code::Unavailable);
    assert_eq!(status.message(), err.to_string());
    assert_eq!(ErrorKind::of_dyn(&status), ErrorKind::CircuitOpen);
    let pushback = status.metadata().get("grpc-retry-pushback-ms").unwrap();
    assert_eq!(pushback.to_str().unwrap(), "30000");
}

#[tokio::test]
async fn to_status_gives_no_pushback_for_a_breaker_held_open_by_hand() {
    let breaker = breaker_of_two("payments");
    breaker.handle().force_open();
    let err = breaker.layer(scripted()).oneshot(OK).await.unwrap_err();
    let status = to_status(&*err).unwrap();
    assert_eq!(status.code(), tonic::Code::Unavailable);
    assert!(status.metadata().get("grpc-retry-pushback-ms").is_none());
}

/// A breaker of `half_open_calls(1)`, tripped, its wait over, and its one
/// probe out (never answering): the next call is refused.
async fn half_open_refusal() -> BoxError {
    let breaker = CircuitBreakerLayer::builder()
        .name("payments")
        .count_window(2)
        .minimum_calls(2)
        .half_open_calls(1)
        .build()
        .unwrap();
    let svc = breaker.layer(scripted());
    trip(&svc).await;
    tokio::time::advance(Duration::from_secs(31)).await;
    let mut probe = Box::pin(svc.clone().oneshot(HANG));
    assert!((&mut probe).now_or_never().is_none(), "the probe hangs");
    let err = svc.clone().oneshot(OK).await.unwrap_err();
    drop(probe);
    err
}

#[tokio::test(start_paused = true)]
async fn to_status_gives_no_pushback_for_a_half_open_breaker_whose_probes_are_out() {
    let err = half_open_refusal().await;
    let status = to_status(&*err).unwrap();
    assert_eq!(status.code(), tonic::Code::Unavailable);
    assert!(status.metadata().get("grpc-retry-pushback-ms").is_none());
}

#[tokio::test(start_paused = true)]
async fn to_status_caps_the_pushback_at_i32_max() {
    let breaker = CircuitBreakerLayer::builder()
        .name("payments")
        .count_window(2)
        .minimum_calls(2)
        .wait_duration(Duration::from_secs(100 * 24 * 3600))
        .build()
        .unwrap();
    let svc = breaker.layer(scripted());
    trip(&svc).await;
    let err = svc.clone().oneshot(OK).await.unwrap_err();
    let status = to_status(&*err).unwrap();
    let pushback = status.metadata().get("grpc-retry-pushback-ms").unwrap();
    assert_eq!(pushback.to_str().unwrap(), i32::MAX.to_string());
}

#[tokio::test(start_paused = true)]
async fn to_status_finds_a_rejection_anywhere_in_the_chain_and_nothing_else() {
    let wrapped = Wrapper(elapsed_error().await);
    let status = to_status(&wrapped).unwrap();
    assert_eq!(status.code(), tonic::Code::DeadlineExceeded);
    assert!(to_status(&*BoxError::from("connection reset")).is_none());
    assert!(to_status(&Mine).is_none());
}

#[tokio::test]
async fn grpc_rejection_layer_passes_other_errors_through_unchanged() {
    let svc = GrpcRejectionLayer::new().layer(service_fn(|_: ()| async {
        Err::<(), BoxError>(Box::new(Mine))
    }));
    let err = svc.oneshot(()).await.unwrap_err();
    assert!(err.is::<Mine>(), "not a Status: {err:?}");
}

#[tokio::test]
async fn grpc_rejection_layer_answers_a_poll_ready_refusal_at_the_next_call() {
    let bulkhead = BulkheadLayer::builder()
        .name("grpc")
        .max_concurrent(1)
        .build()
        .unwrap();
    let inner = bulkhead.layer(scripted());
    let mut holder = inner.clone();
    holder.ready().await.unwrap();
    let mut svc = GrpcRejectionLayer::new().layer(inner);
    // Ready, though the bulkhead refused: the refusal is answered by `call`.
    let ready = svc.ready().await;
    assert!(ready.is_ok(), "poll_ready failed: {:?}", ready.err());
    let err = svc.call(OK).await.unwrap_err();
    let status = err.downcast::<tonic::Status>().unwrap();
    assert_eq!(status.code(), tonic::Code::ResourceExhausted);
}

#[tokio::test]
async fn a_tonic_client_without_the_layer_sees_unknown_and_with_it_unavailable() {
    let addr = serve_health!(tonic::transport::Server::builder());
    let breaker = breaker_of_two("inventory");
    breaker.handle().force_open();

    let bare = ServiceBuilder::new()
        .layer(breaker.clone())
        .service(channel_to(addr));
    let status = HealthClient::new(bare)
        .check(check("inventory", false))
        .await
        .unwrap_err();
    assert_eq!(
        status.code(),
        tonic::Code::Unknown,
        "the CHANGELOG's 'before'"
    );

    let answered = ServiceBuilder::new()
        .layer(GrpcRejectionLayer::new())
        .layer(breaker)
        .service(channel_to(addr));
    let status = HealthClient::new(answered)
        .check(check("inventory", false))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable);
    assert_eq!(
        status.message(),
        r#"circuit breaker "inventory" is held open by hand"#
    );
    assert_eq!(ErrorKind::of_dyn(&status), ErrorKind::CircuitOpen);
}

#[tokio::test]
async fn a_tonic_client_sees_a_full_bulkhead_as_resource_exhausted() {
    let addr = serve_health!(tonic::transport::Server::builder());
    let bulkhead = BulkheadLayer::builder()
        .name("client")
        .max_concurrent(1)
        .build()
        .unwrap();
    let stack = ServiceBuilder::new()
        .layer(GrpcRejectionLayer::new())
        .layer(bulkhead)
        .service(channel_to(addr));
    let mut holder = stack.clone();
    // The holder's readiness takes the only place.
    std::future::poll_fn(|cx| {
        Service::<http::Request<tonic::body::Body>>::poll_ready(&mut holder, cx)
    })
    .await
    .unwrap();
    let status = HealthClient::new(stack)
        .check(check("inventory", false))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::ResourceExhausted);
    assert_eq!(ErrorKind::of_dyn(&status), ErrorKind::BulkheadFull);
}

#[tokio::test(start_paused = true)]
async fn a_tonic_client_sees_its_timeout_as_deadline_exceeded() {
    let addr = serve_health!(
        tonic::transport::Server::builder().layer(tower::layer::layer_fn(slow_when_asked))
    );
    let timeout = TimeoutLayer::builder()
        .name("client")
        .timeout(Duration::from_secs(1))
        .build()
        .unwrap();
    let stack = ServiceBuilder::new()
        .layer(GrpcRejectionLayer::new())
        .layer(timeout)
        .service(channel_to(addr));
    let mut client = HealthClient::new(stack);
    let status = client.check(check("inventory", true)).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::DeadlineExceeded);
    assert_eq!(status.message(), r#"timeout "client" elapsed after 1s"#);
    assert_eq!(ErrorKind::of_dyn(&status), ErrorKind::Elapsed);
    // The layer changes nothing for a call that goes through.
    let reply = client.check(check("inventory", false)).await.unwrap();
    assert_eq!(reply.into_inner().status(), PbServingStatus::Serving);
}

#[tokio::test(start_paused = true)]
async fn a_tonic_server_answers_a_full_bulkhead_and_a_timeout_as_statuses() {
    let bulkhead = BulkheadLayer::builder()
        .name("grpc")
        .max_concurrent(1)
        .build()
        .unwrap();
    let in_flight = bulkhead.handle();
    let timeout = TimeoutLayer::builder()
        .name("server")
        .timeout(Duration::from_millis(400))
        .build()
        .unwrap();
    let addr = serve_health!(
        tonic::transport::Server::builder()
            .layer(GrpcRejectionLayer::new())
            .layer(bulkhead)
            .layer(timeout)
            .layer(tower::layer::layer_fn(slow_when_asked))
    );
    let client = HealthClient::new(channel_to(addr));
    let slow = tokio::spawn({
        let mut client = client.clone();
        async move { client.check(check("inventory", true)).await }
    });
    until_in_flight(&in_flight, 1).await;

    let refused = client
        .clone()
        .check(check("inventory", false))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
    assert_eq!(
        refused.message(),
        r#"bulkhead "grpc" is full: 1 in flight, no queue"#
    );

    let timed_out = slow.await.unwrap().unwrap_err();
    assert_eq!(timed_out.code(), tonic::Code::DeadlineExceeded);
    assert_eq!(
        timed_out.message(),
        r#"timeout "server" elapsed after 400ms"#
    );

    let reply = client
        .clone()
        .check(check("inventory", false))
        .await
        .unwrap();
    assert_eq!(reply.into_inner().status(), PbServingStatus::Serving);
}

#[tokio::test]
async fn a_tonic_server_answers_an_open_breaker_as_unavailable_with_pushback_metadata() {
    let breaker = CircuitBreakerLayer::builder()
        .name("grpc")
        .count_window(2)
        .minimum_calls(2)
        .classifier(GrpcClassifier::new())
        .build()
        .unwrap();
    let handle = breaker.handle();
    // The routes below answer UNAVAILABLE twice: the breaker opens.
    let addr = serve_health!(
        tonic::transport::Server::builder()
            .layer(GrpcRejectionLayer::new())
            .layer(breaker)
            .layer(tower::layer::layer_fn(unavailable_first(
                2,
                Arc::new(Mutex::new(Vec::new()))
            )))
    );
    let mut client = HealthClient::new(channel_to(addr));
    for _ in 0..2 {
        let status = client.check(check("inventory", false)).await.unwrap_err();
        assert_eq!(status.message(), "warming up");
    }
    assert_eq!(handle.state(), CircuitState::Open);
    let status = client.check(check("inventory", false)).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable);
    assert!(
        status
            .message()
            .starts_with(r#"circuit breaker "grpc" is open; "#),
        "{}",
        status.message()
    );
    let pushback: u64 = status
        .metadata()
        .get("grpc-retry-pushback-ms")
        .expect("the breaker's wait reaches the client")
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=30_000).contains(&pushback), "{pushback}");

    handle.force_open();
    let status = client.check(check("inventory", false)).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable);
    assert_eq!(
        status.message(),
        r#"circuit breaker "grpc" is held open by hand"#
    );
    assert!(status.metadata().get("grpc-retry-pushback-ms").is_none());
}

#[tokio::test]
async fn resilience_grpc_puts_grpc_rejection_layer_in_the_respond_slot() {
    let addr = serve_health!(tonic::transport::Server::builder());
    let stack = Resilience::grpc()
        .circuit_breaker(|breaker| breaker.name("inventory"))
        .build()
        .unwrap();
    let _: &GrpcRejectionLayer = stack.respond();
    stack.circuit_breaker().handle().force_open();
    let mut client = HealthClient::new(stack.layer(channel_to(addr)));
    let status = client.check(check("inventory", false)).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable);
    assert_eq!(
        status.message(),
        r#"circuit breaker "inventory" is held open by hand"#
    );
    assert_eq!(ErrorKind::of_dyn(&status), ErrorKind::CircuitOpen);
}

#[tokio::test(start_paused = true)]
async fn resilience_grpc_retries_a_timed_out_attempt_then_answers_deadline_exceeded() {
    let addr = serve_health!(
        tonic::transport::Server::builder().layer(tower::layer::layer_fn(slow_when_asked))
    );
    let attempts = Arc::new(AtomicU32::new(0));
    let seen = attempts.clone();
    let stack = Resilience::grpc()
        .retry(move |retry| {
            retry.on_event(move |event: &Event<'_>| {
                if let Some(RetryEvent::Attempt { .. }) = event.kind() {
                    seen.fetch_add(1, Ordering::SeqCst);
                }
            })
        })
        .attempt_timeout(Duration::from_secs(1))
        .build()
        .unwrap();
    let mut client = HealthClient::new(stack.layer(channel_to(addr)));
    let status = client.check(check("inventory", true)).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::DeadlineExceeded);
    assert_eq!(status.message(), r#"timeout "attempt" elapsed after 1s"#);
    assert_eq!(ErrorKind::of_dyn(&status), ErrorKind::Elapsed);
    assert_eq!(attempts.load(Ordering::SeqCst), 3, "3 attempts by default");
}

/// Wraps tonic's routes: the first `n` calls are answered UNAVAILABLE
/// (after reading the request), and every request's body size is kept.
fn unavailable_first<S>(
    n: u32,
    bodies: Arc<Mutex<Vec<usize>>>,
) -> impl Fn(
    S,
) -> tower::util::BoxCloneSyncService<
    http::Request<tonic::body::Body>,
    http::Response<tonic::body::Body>,
    Infallible,
> + Clone
where
    S: Service<
            http::Request<tonic::body::Body>,
            Response = http::Response<tonic::body::Body>,
            Error = Infallible,
        > + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send,
{
    let calls = Arc::new(AtomicU32::new(0));
    move |inner: S| {
        let calls = calls.clone();
        let bodies = bodies.clone();
        tower::util::BoxCloneSyncService::new(service_fn(
            move |req: http::Request<tonic::body::Body>| {
                let inner = inner.clone();
                let calls = calls.clone();
                let bodies = bodies.clone();
                async move {
                    use http_body_util::BodyExt;
                    let (parts, body) = req.into_parts();
                    let bytes = body.collect().await.unwrap().to_bytes();
                    bodies.lock().unwrap().push(bytes.len());
                    if calls.fetch_add(1, Ordering::SeqCst) < n {
                        return Ok(tonic::Status::unavailable("warming up").into_http());
                    }
                    let req = http::Request::from_parts(
                        parts,
                        tonic::body::Body::new(http_body_util::Full::new(bytes)),
                    );
                    inner.oneshot(req).await
                }
            },
        ))
    }
}

#[tokio::test]
async fn tonic_bodies_replay_the_request_body_into_a_channel() {
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let addr = serve_health!(
        tonic::transport::Server::builder()
            .layer(tower::layer::layer_fn(unavailable_first(1, bodies.clone())))
    );
    let retry = RetryLayer::builder()
        .classifier(GrpcClassifier::new())
        .requests(TonicBodies::default())
        .backoff(
            Backoff::constant(Duration::from_millis(1))
                .jitter(Jitter::None)
                .build()
                .unwrap(),
        )
        .build()
        .unwrap();
    // No `map_request`: the retry's copies are what the Channel takes.
    let mut client =
        HealthClient::new(ServiceBuilder::new().layer(retry).service(channel_to(addr)));
    // "stock" is NOT_SERVING: an empty replayed body would ask for "",
    // which is SERVING.
    let reply = client.check(check("stock", false)).await.unwrap();
    assert_eq!(reply.into_inner().status(), PbServingStatus::NotServing);
    let bodies = bodies.lock().unwrap().clone();
    assert_eq!(bodies.len(), 2, "sent twice");
    assert_eq!(bodies[0], bodies[1], "the same bytes both times");
    assert!(bodies[0] > 5, "a gRPC frame with the message: {bodies:?}");
}

// ---------------------------------------------------------------------------
// respond: HTTP
// ---------------------------------------------------------------------------

fn retry_after<B>(res: &http::Response<B>) -> Option<&str> {
    res.headers()
        .get(http::header::RETRY_AFTER)
        .map(|v| v.to_str().unwrap())
}

#[tokio::test(start_paused = true)]
async fn to_response_makes_elapsed_a_504_with_a_default_body() {
    let err = elapsed_error().await;
    let res = to_response::<String>(&*err).unwrap();
    assert_eq!(res.status(), http::StatusCode::GATEWAY_TIMEOUT);
    assert!(res.body().is_empty());
    assert!(retry_after(&res).is_none());
    assert!(to_response::<String>(&*BoxError::from("disk full")).is_none());
}

#[tokio::test]
async fn to_response_makes_a_full_bulkhead_a_503_with_retry_after_1() {
    let err = bulkhead_full_error().await;
    let res = to_response::<String>(&*err).unwrap();
    assert_eq!(res.status(), http::StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(retry_after(&res), Some("1"));
}

#[tokio::test(start_paused = true)]
async fn to_response_gives_an_open_breakers_wait_in_whole_seconds_rounded_up_at_least_1() {
    let svc = breaker_of_two("payments").layer(scripted());
    trip(&svc).await;
    tokio::time::advance(Duration::from_millis(500)).await;
    let err = svc.clone().oneshot(OK).await.unwrap_err();
    let res = to_response::<String>(&*err).unwrap();
    assert_eq!(res.status(), http::StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(retry_after(&res), Some("30"), "29.5 s rounded up");

    tokio::time::advance(Duration::from_millis(29_499)).await;
    let err = svc.clone().oneshot(OK).await.unwrap_err();
    let open = err.downcast_ref::<CircuitOpen>().unwrap();
    assert_eq!(open.retry_after(), Duration::from_millis(1));
    let res = to_response::<String>(&*err).unwrap();
    assert_eq!(retry_after(&res), Some("1"), "1 ms left: at least 1");
}

#[tokio::test]
async fn to_response_sends_no_retry_after_for_a_breaker_held_open_by_hand() {
    let breaker = breaker_of_two("payments");
    breaker.handle().force_open();
    let err = breaker.layer(scripted()).oneshot(OK).await.unwrap_err();
    let res = to_response::<String>(&*err).unwrap();
    assert_eq!(res.status(), http::StatusCode::SERVICE_UNAVAILABLE);
    assert!(retry_after(&res).is_none());
}

#[tokio::test(start_paused = true)]
async fn to_response_asks_1_s_of_a_half_open_breaker_whose_probes_are_out() {
    let err = half_open_refusal().await;
    let res = to_response::<String>(&*err).unwrap();
    assert_eq!(res.status(), http::StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(retry_after(&res), Some("1"));
}

#[tokio::test(start_paused = true)]
async fn to_response_finds_a_rejection_wrapped_in_another_error() {
    let wrapped = Wrapper(elapsed_error().await);
    let res = to_response::<String>(&wrapped).unwrap();
    assert_eq!(res.status(), http::StatusCode::GATEWAY_TIMEOUT);
    assert!(to_response::<String>(&Mine).is_none());
}

#[tokio::test]
async fn retry_after_when_busy_is_rounded_up_zero_sends_none_and_above_a_day_is_refused() {
    let err = bulkhead_full_error().await;
    let layer = HttpRejectionLayer::builder()
        .retry_after_when_busy(Duration::from_millis(2500))
        .build()
        .unwrap();
    let res = layer.to_response::<String>(&*err).unwrap();
    assert_eq!(res.status(), http::StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(retry_after(&res), Some("3"));

    let layer = HttpRejectionLayer::builder()
        .retry_after_when_busy(Duration::ZERO)
        .build()
        .unwrap();
    let res = layer.to_response::<String>(&*err).unwrap();
    assert_eq!(res.status(), http::StatusCode::SERVICE_UNAVAILABLE);
    assert!(retry_after(&res).is_none());

    let day = Duration::from_secs(24 * 3600);
    assert!(
        HttpRejectionLayer::builder()
            .retry_after_when_busy(day)
            .build()
            .is_ok()
    );
    assert!(
        HttpRejectionLayer::builder()
            .retry_after_when_busy(day + Duration::from_secs(1))
            .build()
            .is_err()
    );
    assert_eq!(
        palisade::respond::http::DEFAULT_RETRY_AFTER_WHEN_BUSY,
        Duration::from_secs(1)
    );
}

#[tokio::test]
async fn http_rejection_answers_any_other_error_with_a_bare_500() {
    let svc = HttpRejectionLayer::new().layer(service_fn(|_: http::Request<String>| async {
        Err::<http::Response<String>, BoxError>(Box::new(Mine))
    }));
    let res: Result<http::Response<String>, Infallible> =
        svc.oneshot(http::Request::new(String::new())).await;
    let res = res.unwrap();
    assert_eq!(res.status(), http::StatusCode::INTERNAL_SERVER_ERROR);
    assert!(res.body().is_empty(), "says nothing of the error");
    assert!(res.headers().get(http::header::RETRY_AFTER).is_none());
}

#[tokio::test]
async fn http_rejection_is_ready_when_the_inner_refuses_and_answers_at_call() {
    let bulkhead = BulkheadLayer::builder()
        .name("api")
        .max_concurrent(1)
        .build()
        .unwrap();
    let inner = bulkhead.layer(service_fn(|_: http::Request<String>| async {
        Ok::<_, BoxError>(http::Response::new(String::from("ok")))
    }));
    let mut holder = inner.clone();
    holder.ready().await.unwrap();
    let mut svc = HttpRejectionLayer::new().layer(inner);
    let ready: Result<_, Infallible> = svc.ready().await;
    assert!(ready.is_ok());
    let res = svc.call(http::Request::new(String::new())).await.unwrap();
    assert_eq!(res.status(), http::StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(retry_after(&res), Some("1"));
}

#[tokio::test(start_paused = true)]
async fn an_axum_router_answers_a_timeout_with_504_and_sheds_load_with_503_retry_after_1() {
    let bulkhead = BulkheadLayer::builder()
        .name("api")
        .max_concurrent(1)
        .build()
        .unwrap();
    let in_flight = bulkhead.handle();
    let app = Router::new()
        .route("/fast", get(|| async { "fast" }))
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(10)).await;
                "slow"
            }),
        )
        .layer(
            ServiceBuilder::new()
                .layer(HttpRejectionLayer::new())
                .layer(bulkhead)
                .layer(TimeoutLayer::new(Duration::from_secs(2)).unwrap()),
        );
    let addr = serve_axum(app).await;
    let client = reqwest_client();
    let slow = tokio::spawn(client.get(format!("http://{addr}/slow")).send());
    until_in_flight(&in_flight, 1).await;

    let refused = client
        .get(format!("http://{addr}/fast"))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), reqwest::StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        refused
            .headers()
            .get("retry-after")
            .unwrap()
            .to_str()
            .unwrap(),
        "1"
    );

    let timed_out = slow.await.unwrap().unwrap();
    assert_eq!(timed_out.status(), reqwest::StatusCode::GATEWAY_TIMEOUT);

    let fast = client
        .get(format!("http://{addr}/fast"))
        .send()
        .await
        .unwrap();
    assert_eq!(fast.status(), reqwest::StatusCode::OK);
    assert_eq!(fast.text().await.unwrap(), "fast");
}

#[tokio::test(start_paused = true)]
async fn an_axum_router_with_retry_after_when_busy_says_so() {
    let bulkhead = BulkheadLayer::builder()
        .name("api")
        .max_concurrent(1)
        .build()
        .unwrap();
    let in_flight = bulkhead.handle();
    let app = Router::new()
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(10)).await;
                "slow"
            }),
        )
        .layer(
            ServiceBuilder::new()
                .layer(
                    HttpRejectionLayer::builder()
                        .retry_after_when_busy(Duration::from_secs(7))
                        .build()
                        .unwrap(),
                )
                .layer(bulkhead),
        );
    let addr = serve_axum(app).await;
    let client = reqwest_client();
    let slow = tokio::spawn(client.get(format!("http://{addr}/slow")).send());
    until_in_flight(&in_flight, 1).await;
    let refused = client
        .get(format!("http://{addr}/slow"))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), reqwest::StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        refused
            .headers()
            .get("retry-after")
            .unwrap()
            .to_str()
            .unwrap(),
        "7"
    );
    assert_eq!(
        slow.await.unwrap().unwrap().status(),
        reqwest::StatusCode::OK
    );
}

#[tokio::test]
async fn an_axum_router_behind_an_open_breaker_answers_503_with_its_wait() {
    let breaker = CircuitBreakerLayer::builder()
        .name("api")
        .count_window(2)
        .minimum_calls(2)
        .classifier(HttpClassifier::new())
        .build()
        .unwrap();
    let handle = breaker.handle();
    let app = Router::new()
        .route(
            "/fail",
            get(|| async { (http::StatusCode::INTERNAL_SERVER_ERROR, "down") }),
        )
        .layer(
            ServiceBuilder::new()
                .layer(HttpRejectionLayer::new())
                .layer(breaker),
        );
    let addr = serve_axum(app).await;
    let client = reqwest_client();
    for _ in 0..2 {
        let res = client
            .get(format!("http://{addr}/fail"))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), reqwest::StatusCode::INTERNAL_SERVER_ERROR);
    }
    assert_eq!(handle.state(), CircuitState::Open);
    let refused = client
        .get(format!("http://{addr}/fail"))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), reqwest::StatusCode::SERVICE_UNAVAILABLE);
    let wait: u64 = refused
        .headers()
        .get("retry-after")
        .expect("an open breaker's wait")
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=30).contains(&wait), "Retry-After: {wait}");

    handle.force_open();
    let refused = client
        .get(format!("http://{addr}/fail"))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), reqwest::StatusCode::SERVICE_UNAVAILABLE);
    assert!(refused.headers().get("retry-after").is_none());
}

// ---------------------------------------------------------------------------
// Rejection messages and accessors
// ---------------------------------------------------------------------------

#[tokio::test]
async fn bulkhead_full_refused_at_once_says_which_bulkhead_and_no_queue() {
    let err = bulkhead_full_error().await;
    let full = err.downcast_ref::<BulkheadFull>().unwrap();
    assert_eq!(
        (
            full.name(),
            full.max_concurrent(),
            full.max_queue(),
            full.waited()
        ),
        ("inventory", 1, 0, None)
    );
    assert_eq!(
        err.to_string(),
        r#"bulkhead "inventory" is full: 1 in flight, no queue"#
    );
}

#[tokio::test]
async fn bulkhead_full_with_its_queue_full_says_how_many_queued() {
    let bulkhead = BulkheadLayer::builder()
        .name("inventory")
        .max_concurrent(2)
        .max_queue(1)
        .build()
        .unwrap();
    let svc = bulkhead.layer(scripted());
    let mut a = svc.clone();
    let mut b = svc.clone();
    a.ready().await.unwrap();
    b.ready().await.unwrap();
    let mut queued = Box::pin(svc.clone().oneshot(OK));
    assert!((&mut queued).now_or_never().is_none(), "waits in the queue");
    assert_eq!(bulkhead.handle().queued(), 1);
    let err = svc.clone().oneshot(OK).await.unwrap_err();
    let full = err.downcast_ref::<BulkheadFull>().unwrap();
    assert_eq!(
        (
            full.name(),
            full.max_concurrent(),
            full.max_queue(),
            full.waited()
        ),
        ("inventory", 2, 1, None)
    );
    assert_eq!(
        err.to_string(),
        r#"bulkhead "inventory" is full: 2 in flight, 1 queued"#
    );
}

#[tokio::test(start_paused = true)]
async fn bulkhead_full_after_its_max_wait_says_how_long_it_waited() {
    let bulkhead = BulkheadLayer::builder()
        .name("inventory")
        .max_concurrent(1)
        .max_queue(4)
        .max_wait(Duration::from_millis(50))
        .build()
        .unwrap();
    let svc = bulkhead.layer(scripted());
    let mut holder = svc.clone();
    holder.ready().await.unwrap();
    let err = svc.clone().oneshot(OK).await.unwrap_err();
    let full = err.downcast_ref::<BulkheadFull>().unwrap();
    assert_eq!(
        (
            full.name(),
            full.max_concurrent(),
            full.max_queue(),
            full.waited()
        ),
        ("inventory", 1, 4, Some(Duration::from_millis(50)))
    );
    assert_eq!(
        err.to_string(),
        r#"bulkhead "inventory" is full: 1 in flight, gave up after waiting 50ms in the queue"#
    );
}

#[tokio::test(start_paused = true)]
async fn elapsed_of_a_timeout_says_which_timeout_and_its_limit() {
    let err = elapsed_error().await;
    let elapsed = err.downcast_ref::<Elapsed>().unwrap();
    assert_eq!(
        (elapsed.name(), elapsed.timeout()),
        ("per-attempt", Duration::from_millis(250))
    );
    assert_eq!(
        err.to_string(),
        r#"timeout "per-attempt" elapsed after 250ms"#
    );
}

/// Ready for its first call only; every call fails. A retry over it
/// waits for readiness until its deadline.
#[derive(Clone)]
struct ReadyOnce(Arc<AtomicU32>);

impl Service<()> for ReadyOnce {
    type Response = ();
    type Error = BoxError;
    type Future = std::future::Ready<Result<(), BoxError>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        if self.0.load(Ordering::SeqCst) == 0 {
            Poll::Ready(Ok(()))
        } else {
            Poll::Pending
        }
    }

    fn call(&mut self, (): ()) -> Self::Future {
        self.0.fetch_add(1, Ordering::SeqCst);
        std::future::ready(Err("busy".into()))
    }
}

#[tokio::test(start_paused = true)]
async fn elapsed_of_a_retry_deadline_names_the_retry_and_the_deadline() {
    let retry = RetryLayer::builder()
        .name("payments")
        .deadline(Duration::from_secs(10))
        .backoff(
            Backoff::constant(Duration::from_millis(1))
                .jitter(Jitter::None)
                .build()
                .unwrap(),
        )
        .no_budget()
        .build()
        .unwrap();
    let calls = Arc::new(AtomicU32::new(0));
    let err = retry
        .layer(ReadyOnce(calls.clone()))
        .oneshot(())
        .await
        .unwrap_err();
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    let elapsed = err.downcast_ref::<Elapsed>().unwrap();
    assert_eq!(
        (elapsed.name(), elapsed.timeout()),
        ("payments", Duration::from_secs(10))
    );
    assert_eq!(
        err.to_string(),
        r#"deadline of retry "payments" elapsed after 10s"#
    );
}

#[tokio::test(start_paused = true)]
async fn circuit_open_says_which_breaker_is_open_and_its_wait() {
    let svc = breaker_of_two("payments").layer(scripted());
    trip(&svc).await;
    let err = svc.clone().oneshot(OK).await.unwrap_err();
    let open = err.downcast_ref::<CircuitOpen>().unwrap();
    assert_eq!(open.name(), "payments");
    assert_eq!(open.retry_after(), Duration::from_secs(30));
    let message = err.to_string();
    assert!(
        message.starts_with(r#"circuit breaker "payments" is open; "#),
        "{message}"
    );
}

#[tokio::test]
async fn circuit_open_held_open_by_hand_says_so_and_has_no_end() {
    let breaker = breaker_of_two("payments");
    breaker.handle().force_open();
    let err = breaker.layer(scripted()).oneshot(OK).await.unwrap_err();
    let open = err.downcast_ref::<CircuitOpen>().unwrap();
    assert_eq!(open.retry_after(), Duration::MAX);
    assert_eq!(
        err.to_string(),
        r#"circuit breaker "payments" is held open by hand"#
    );
}

#[tokio::test(start_paused = true)]
async fn circuit_open_half_open_says_every_probe_is_out_and_waits_zero() {
    let err = half_open_refusal().await;
    let open = err.downcast_ref::<CircuitOpen>().unwrap();
    assert_eq!(open.retry_after(), Duration::ZERO);
    let message = err.to_string();
    assert!(
        message.starts_with(r#"circuit breaker "payments" is half-open and every probe is out"#),
        "{message}"
    );
}

// ---------------------------------------------------------------------------
// Metrics: a recorder of our own
// ---------------------------------------------------------------------------

type Labels = BTreeSet<(String, String)>;

#[derive(Default)]
struct Store {
    counters: BTreeMap<(String, Labels), u64>,
    gauges: BTreeMap<(String, Labels), f64>,
    described: BTreeMap<String, (Option<metrics::Unit>, String)>,
}

#[derive(Clone, Default)]
struct Recorder(Arc<Mutex<Store>>);

struct Cell {
    store: Arc<Mutex<Store>>,
    key: (String, Labels),
}

impl metrics::CounterFn for Cell {
    fn increment(&self, value: u64) {
        *self
            .store
            .lock()
            .unwrap()
            .counters
            .entry(self.key.clone())
            .or_default() += value;
    }
    fn absolute(&self, value: u64) {
        self.store
            .lock()
            .unwrap()
            .counters
            .insert(self.key.clone(), value);
    }
}

impl metrics::GaugeFn for Cell {
    fn increment(&self, value: f64) {
        *self
            .store
            .lock()
            .unwrap()
            .gauges
            .entry(self.key.clone())
            .or_default() += value;
    }
    fn decrement(&self, value: f64) {
        *self
            .store
            .lock()
            .unwrap()
            .gauges
            .entry(self.key.clone())
            .or_default() -= value;
    }
    fn set(&self, value: f64) {
        self.store
            .lock()
            .unwrap()
            .gauges
            .insert(self.key.clone(), value);
    }
}

fn key_of(key: &metrics::Key) -> (String, Labels) {
    let labels = key
        .labels()
        .map(|l| (l.key().to_string(), l.value().to_string()))
        .collect();
    (key.name().to_string(), labels)
}

impl metrics::Recorder for Recorder {
    fn describe_counter(
        &self,
        key: metrics::KeyName,
        unit: Option<metrics::Unit>,
        text: metrics::SharedString,
    ) {
        self.0
            .lock()
            .unwrap()
            .described
            .insert(key.as_str().to_string(), (unit, text.to_string()));
    }
    fn describe_gauge(
        &self,
        key: metrics::KeyName,
        unit: Option<metrics::Unit>,
        text: metrics::SharedString,
    ) {
        self.describe_counter(key, unit, text);
    }
    fn describe_histogram(
        &self,
        _: metrics::KeyName,
        _: Option<metrics::Unit>,
        _: metrics::SharedString,
    ) {
    }
    fn register_counter(&self, key: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Counter {
        metrics::Counter::from_arc(Arc::new(Cell {
            store: self.0.clone(),
            key: key_of(key),
        }))
    }
    fn register_gauge(&self, key: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Gauge {
        metrics::Gauge::from_arc(Arc::new(Cell {
            store: self.0.clone(),
            key: key_of(key),
        }))
    }
    fn register_histogram(
        &self,
        _: &metrics::Key,
        _: &metrics::Metadata<'_>,
    ) -> metrics::Histogram {
        metrics::Histogram::noop()
    }
}

impl Recorder {
    fn counter(&self, name: &str, labels: &[(&str, &str)]) -> Option<u64> {
        let key = (name.to_string(), labels_of(labels));
        self.0.lock().unwrap().counters.get(&key).copied()
    }
    fn gauge(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let key = (name.to_string(), labels_of(labels));
        self.0.lock().unwrap().gauges.get(&key).copied()
    }
    fn names(&self) -> BTreeSet<String> {
        let store = self.0.lock().unwrap();
        store
            .counters
            .keys()
            .chain(store.gauges.keys())
            .map(|(name, _)| name.clone())
            .collect()
    }
    fn series_of(&self, name: &str) -> Vec<Labels> {
        let store = self.0.lock().unwrap();
        store
            .counters
            .keys()
            .chain(store.gauges.keys())
            .filter(|(n, _)| n == name)
            .map(|(_, l)| l.clone())
            .collect()
    }
}

fn labels_of(labels: &[(&str, &str)]) -> Labels {
    labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

const LAYER: &str = "palisade.layer.name";

#[tokio::test(start_paused = true)]
async fn metrics_breaker_state_is_one_series_per_state_from_the_first_transition() {
    let recorder = Recorder::default();
    let _guard = metrics::set_default_local_recorder(&recorder);
    let breaker = CircuitBreakerLayer::builder()
        .name("inventory")
        .count_window(2)
        .minimum_calls(2)
        .on_event(MetricsEvents::new())
        .build()
        .unwrap();
    let svc = breaker.layer(scripted());
    svc.clone().oneshot(OK).await.unwrap();
    assert!(
        recorder
            .series_of("palisade.circuit_breaker.state")
            .is_empty(),
        "no series before the first transition"
    );
    svc.clone().oneshot(FAIL).await.unwrap_err();
    assert_eq!(breaker.handle().state(), CircuitState::Open);
    let state = "palisade.circuit_breaker.state";
    for (value, expected) in [
        ("closed", 0.0),
        ("open", 1.0),
        ("half_open", 0.0),
        ("forced_open", 0.0),
        ("disabled", 0.0),
        ("metrics_only", 0.0),
    ] {
        assert_eq!(
            recorder.gauge(state, &[(LAYER, "inventory"), (state, value)]),
            Some(expected),
            "state {value}"
        );
    }
    assert_eq!(recorder.series_of(state).len(), 6);
}

#[tokio::test(start_paused = true)]
async fn metrics_breaker_transitions_calls_rejections_and_crossings_have_the_tables_labels() {
    let recorder = Recorder::default();
    let _guard = metrics::set_default_local_recorder(&recorder);
    let breaker = CircuitBreakerLayer::builder()
        .name("inventory")
        .count_window(2)
        .minimum_calls(2)
        .on_event(MetricsEvents::new())
        .build()
        .unwrap();
    let svc = breaker.layer(scripted());
    svc.clone().oneshot(OK).await.unwrap();
    svc.clone().oneshot(FAIL).await.unwrap_err();
    svc.clone().oneshot(OK).await.unwrap_err(); // refused
    let calls = "palisade.circuit_breaker.calls";
    let outcome = "palisade.circuit_breaker.outcome";
    let slow = "palisade.circuit_breaker.slow";
    for (value, expected) in [("success", 1), ("failure", 1), ("rejected", 1)] {
        assert_eq!(
            recorder.counter(
                calls,
                &[(LAYER, "inventory"), (outcome, value), (slow, "false")]
            ),
            Some(expected),
            "outcome {value}"
        );
    }
    assert_eq!(
        recorder.counter(
            "palisade.circuit_breaker.transitions",
            &[
                (LAYER, "inventory"),
                ("palisade.circuit_breaker.from_state", "closed"),
                ("palisade.circuit_breaker.to_state", "open"),
            ]
        ),
        Some(1)
    );
    assert_eq!(
        recorder.counter(
            "palisade.circuit_breaker.threshold_crossings",
            &[
                (LAYER, "inventory"),
                ("palisade.circuit_breaker.rate", "failure")
            ]
        ),
        Some(1)
    );
}

#[tokio::test(start_paused = true)]
async fn metrics_bulkhead_active_calls_and_rejections_by_reason() {
    let recorder = Recorder::default();
    let _guard = metrics::set_default_local_recorder(&recorder);
    let bulkhead = BulkheadLayer::builder()
        .name("db")
        .max_concurrent(1)
        .max_queue(1)
        .max_wait(Duration::from_millis(50))
        .on_event(MetricsEvents::new())
        .build()
        .unwrap();
    let svc = bulkhead.layer(scripted());
    let mut holding = Box::pin(svc.clone().oneshot(HANG));
    assert!((&mut holding).now_or_never().is_none());
    let active = [(LAYER, "db")];
    assert_eq!(
        recorder.gauge("palisade.bulkhead.active_calls", &active),
        Some(1.0)
    );

    // One waits its 50 ms in the queue; while it does, another is refused.
    let mut waiting = Box::pin(svc.clone().oneshot(OK));
    assert!((&mut waiting).now_or_never().is_none());
    svc.clone().oneshot(OK).await.unwrap_err();
    waiting.await.unwrap_err();
    let rejected = "palisade.bulkhead.rejected_calls";
    let reason = "palisade.bulkhead.rejection_reason";
    assert_eq!(
        recorder.counter(rejected, &[(LAYER, "db"), (reason, "full")]),
        Some(1)
    );
    assert_eq!(
        recorder.counter(rejected, &[(LAYER, "db"), (reason, "queue_timeout")]),
        Some(1)
    );
    drop(holding);
    assert_eq!(
        recorder.gauge("palisade.bulkhead.active_calls", &active),
        Some(0.0)
    );
}

fn fast_retry(name: &str) -> palisade::retry::RetryBuilder {
    RetryLayer::builder().name(name).backoff(
        Backoff::constant(Duration::from_millis(1))
            .jitter(Jitter::None)
            .build()
            .unwrap(),
    )
}

#[tokio::test(start_paused = true)]
async fn metrics_retry_counts_attempts_retries_by_reason_and_failed_calls_by_reason() {
    let recorder = Recorder::default();
    let _guard = metrics::set_default_local_recorder(&recorder);
    let retry = fast_retry("pricing")
        .max_attempts(2)
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
        let _ = pricing.clone().oneshot(always_fail).await;
    }
    assert_eq!(calls.load(Ordering::SeqCst), 6);
    assert_eq!(
        recorder.counter("palisade.retry.attempts", &[(LAYER, "pricing")]),
        Some(6)
    );
    assert_eq!(
        recorder.counter(
            "palisade.retry.retries",
            &[(LAYER, "pricing"), ("palisade.retry.reason", "failure")]
        ),
        Some(3)
    );
    assert_eq!(
        recorder.counter(
            "palisade.retry.failed_calls",
            &[
                (LAYER, "pricing"),
                ("palisade.retry.give_up_reason", "max_attempts")
            ]
        ),
        Some(1)
    );
}

#[tokio::test(start_paused = true)]
async fn metrics_timeout_and_fallback_count_their_calls() {
    let recorder = Recorder::default();
    let _guard = metrics::set_default_local_recorder(&recorder);
    let timeout = TimeoutLayer::builder()
        .name("search")
        .timeout(Duration::from_millis(10))
        .on_event(MetricsEvents::new())
        .build()
        .unwrap();
    let fallback = FallbackLayer::builder(palisade::fallback::from_sync_fn(
        |_: palisade::fallback::Failed<u8, ()>| Ok::<(), BoxError>(()),
    ))
    .name("cache")
    .on_event(MetricsEvents::new())
    .build()
    .unwrap();
    let svc = ServiceBuilder::new()
        .layer(fallback)
        .layer(timeout)
        .service(scripted());
    svc.clone().oneshot(OK).await.unwrap();
    svc.clone().oneshot(HANG).await.unwrap();
    assert_eq!(
        recorder.counter("palisade.timeout.timed_out_calls", &[(LAYER, "search")]),
        Some(1)
    );
    assert_eq!(
        recorder.counter("palisade.fallback.answered_calls", &[(LAYER, "cache")]),
        Some(1)
    );
}

#[tokio::test(start_paused = true)]
async fn metrics_are_described_with_unit_count_and_the_tables_meaning() {
    let recorder = Recorder::default();
    let _guard = metrics::set_default_local_recorder(&recorder);
    let retry = fast_retry("pricing")
        .max_attempts(1)
        .on_event(MetricsEvents::new())
        .build()
        .unwrap();
    retry.layer(scripted()).oneshot(OK).await.unwrap();
    let described = recorder.0.lock().unwrap().described.clone();
    let (unit, text) = described
        .get("palisade.retry.attempts")
        .expect("described to the recorder");
    assert_eq!(*unit, Some(metrics::Unit::Count));
    // The table says "attempts sent, first ones included"; the help text
    // is a longer wording of it (reported: not "the meaning above" word
    // for word).
    assert!(text.contains("first ones included"), "{text}");
    for (name, (unit, text)) in &described {
        assert_eq!(*unit, Some(metrics::Unit::Count), "{name}");
        assert!(!text.is_empty(), "{name}");
    }
}

#[tokio::test(start_paused = true)]
async fn every_metric_name_is_dotted_under_its_pattern_and_has_no_total() {
    let recorder = Recorder::default();
    let _guard = metrics::set_default_local_recorder(&recorder);
    let breaker = CircuitBreakerLayer::builder()
        .name("b")
        .count_window(2)
        .minimum_calls(2)
        .on_event(MetricsEvents::new())
        .build()
        .unwrap();
    let retry = fast_retry("r")
        .max_attempts(2)
        .on_event(MetricsEvents::new())
        .build()
        .unwrap();
    let svc = ServiceBuilder::new()
        .layer(retry)
        .layer(breaker)
        .service(scripted());
    let _ = svc.clone().oneshot(FAIL).await;
    let _ = svc.clone().oneshot(OK).await;
    let table: BTreeSet<&str> = [
        "palisade.circuit_breaker.state",
        "palisade.circuit_breaker.transitions",
        "palisade.circuit_breaker.calls",
        "palisade.circuit_breaker.threshold_crossings",
        "palisade.bulkhead.active_calls",
        "palisade.bulkhead.rejected_calls",
        "palisade.retry.attempts",
        "palisade.retry.retries",
        "palisade.retry.failed_calls",
        "palisade.timeout.timed_out_calls",
        "palisade.fallback.answered_calls",
    ]
    .into();
    let names = recorder.names();
    assert!(!names.is_empty());
    for name in &names {
        assert!(table.contains(name.as_str()), "{name} is not in the table");
    }
    for name in &names {
        for labels in recorder.series_of(name) {
            assert!(labels.iter().any(|(k, _)| k == LAYER), "{name} {labels:?}");
            for (k, v) in &labels {
                assert!(k.starts_with("palisade."), "{name}: label {k}");
                if k != LAYER {
                    assert!(
                        v.chars().all(|c| c.is_ascii_lowercase() || c == '_'),
                        "{name}: {k}={v} is not snake case"
                    );
                }
            }
        }
    }
}

#[tokio::test]
async fn prometheus_scrapes_the_tables_names_with_total_on_counters() {
    let prometheus = metrics_exporter_prometheus::PrometheusBuilder::new()
        .with_recommended_naming(true)
        .build_recorder();
    let handle = prometheus.handle();
    let _guard = metrics::set_default_local_recorder(&prometheus);

    let breaker = CircuitBreakerLayer::builder()
        .name("inventory")
        .count_window(2)
        .minimum_calls(2)
        .on_event(MetricsEvents::new())
        .build()
        .unwrap();
    let svc = breaker.layer(scripted());
    let _ = svc.clone().oneshot(OK).await;
    let _ = svc.clone().oneshot(FAIL).await;
    let _ = svc.clone().oneshot(OK).await;
    let bulkhead = BulkheadLayer::builder()
        .name("db")
        .max_concurrent(1)
        .on_event(MetricsEvents::new())
        .build()
        .unwrap();
    let db = bulkhead.layer(scripted());
    let mut holder = db.clone();
    holder.ready().await.unwrap();
    let _ = db.clone().oneshot(OK).await;

    let text = handle.render();
    let lines: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
    let has = |name: &str, labels: &[&str], value: &str| {
        lines.iter().any(|line| {
            let Some((series, v)) = line.rsplit_once(' ') else {
                return false;
            };
            series.starts_with(&format!("{name}{{"))
                && labels.iter().all(|l| series.contains(l))
                && v == value
        })
    };
    assert!(
        has(
            "palisade_circuit_breaker_state",
            &[
                r#"palisade_layer_name="inventory""#,
                r#"palisade_circuit_breaker_state="open""#
            ],
            "1"
        ),
        "{text}"
    );
    assert!(
        has(
            "palisade_circuit_breaker_calls_total",
            &[
                r#"palisade_circuit_breaker_outcome="rejected""#,
                r#"palisade_circuit_breaker_slow="false""#
            ],
            "1"
        ),
        "{text}"
    );
    assert!(
        has(
            "palisade_circuit_breaker_transitions_total",
            &[
                r#"palisade_circuit_breaker_from_state="closed""#,
                r#"palisade_circuit_breaker_to_state="open""#
            ],
            "1"
        ),
        "{text}"
    );
    assert!(
        has(
            "palisade_bulkhead_rejected_calls_total",
            &[
                r#"palisade_layer_name="db""#,
                r#"palisade_bulkhead_rejection_reason="full""#
            ],
            "1"
        ),
        "{text}"
    );
    assert!(
        text.contains("# TYPE palisade_circuit_breaker_calls_total counter")
            || text.contains("# TYPE palisade_circuit_breaker_calls counter"),
        "{text}"
    );
    // Described with `Unit::Count`: a `# HELP` line and no unit suffix.
    assert!(
        text.contains("# HELP palisade_circuit_breaker_calls_total "),
        "{text}"
    );
    assert!(!text.contains("_count_total"), "{text}");
    assert!(!text.contains("budget_exhausted_total"), "{text}");
}

// ---------------------------------------------------------------------------
// Retry budget: BudgetExhausted is gone
// ---------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn a_spent_budget_gives_the_last_answer_as_the_server_gave_it_and_tells_the_listeners() {
    let server = Server::start(vec![], Reply::status(503).header("retry-after", "1")).await;
    let events = Arc::new(Mutex::new(Vec::new()));
    let log = events.clone();
    let recorder = Recorder::default();
    let _guard = metrics::set_default_local_recorder(&recorder);
    let retry = fast_retry("api")
        .classifier(HttpClassifier::new())
        .requests(ReqwestRequests)
        .budget(RetryBudget::new(Duration::from_secs(10), 0, 0.01).unwrap())
        .on_event(MetricsEvents::new())
        .on_event(move |event: &Event<'_>| {
            if let Some(kind) = event.kind::<RetryEvent>() {
                log.lock().unwrap().push(*kind);
            }
        })
        .build()
        .unwrap();
    let client = retry.layer(reqwest_client());
    let request = reqwest::Request::new(reqwest::Method::GET, server.url("/").parse().unwrap());
    let res = client
        .oneshot(request)
        .await
        .expect("the server's answer, not an error");
    assert_eq!(res.status(), reqwest::StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(res.headers().get("retry-after").unwrap(), "1");
    assert_eq!(server.seen().len(), 1, "no retry: the budget is spent");

    let events = events.lock().unwrap().clone();
    let exhausted = events
        .iter()
        .position(|e| matches!(e, RetryEvent::BudgetExhausted { .. }))
        .expect("a BudgetExhausted event");
    let gave_up = events
        .iter()
        .position(|e| {
            matches!(
                e,
                RetryEvent::GaveUp {
                    reason: GiveUpReason::BudgetExhausted,
                    ..
                }
            )
        })
        .expect("GaveUp with BudgetExhausted");
    assert!(exhausted < gave_up, "{events:?}");
    assert_eq!(GiveUpReason::BudgetExhausted.as_str(), "budget_exhausted");
    assert_eq!(
        recorder.counter(
            "palisade.retry.failed_calls",
            &[
                (LAYER, "api"),
                ("palisade.retry.give_up_reason", "budget_exhausted")
            ]
        ),
        Some(1)
    );
    assert!(
        recorder.names().iter().all(|name| !name.contains("budget")),
        "BudgetExhausted records nothing of its own: {:?}",
        recorder.names()
    );
}

#[tokio::test(start_paused = true)]
async fn a_spent_budget_returns_the_inner_services_own_error() {
    let retry = fast_retry("api")
        .budget(RetryBudget::new(Duration::from_secs(10), 0, 0.01).unwrap())
        .build()
        .unwrap();
    let calls = Arc::new(AtomicU32::new(0));
    let seen = calls.clone();
    let svc = retry.layer(service_fn(move |_: ()| {
        seen.fetch_add(1, Ordering::SeqCst);
        async { Err::<(), BoxError>(Box::new(Mine)) }
    }));
    let err = svc.oneshot(()).await.unwrap_err();
    assert!(err.is::<Mine>(), "{err:?}");
    assert_eq!(ErrorKind::of(&err), ErrorKind::Inner);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

// ---------------------------------------------------------------------------
// attempt_spans (feature `tracing`): a subscriber of our own
// ---------------------------------------------------------------------------

#[derive(Debug, Clone)]
struct SpanRec {
    name: &'static str,
    target: String,
    level: tracing::Level,
    fields: BTreeMap<String, String>,
    refs: usize,
}

#[derive(Default)]
struct SpanLog {
    spans: BTreeMap<u64, SpanRec>,
    stack: Vec<u64>,
    /// In order: `new N`, `close N`, `event in N` (or `event in -`).
    log: Vec<String>,
}

#[derive(Clone, Default)]
struct Spans(Arc<Mutex<SpanLog>>);

static NEXT_SPAN: AtomicU64 = AtomicU64::new(1);

struct Fields<'a>(&'a mut BTreeMap<String, String>);

impl tracing::field::Visit for Fields<'_> {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn fmt::Debug) {
        self.0
            .insert(field.name().to_string(), format!("{value:?}"));
    }
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        self.0.insert(field.name().to_string(), value.to_string());
    }
}

impl tracing::Subscriber for Spans {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, attrs: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        let id = NEXT_SPAN.fetch_add(1, Ordering::SeqCst);
        let mut fields = BTreeMap::new();
        attrs.record(&mut Fields(&mut fields));
        let meta = attrs.metadata();
        let mut log = self.0.lock().unwrap();
        log.spans.insert(
            id,
            SpanRec {
                name: meta.name(),
                target: meta.target().to_string(),
                level: *meta.level(),
                fields,
                refs: 1,
            },
        );
        log.log.push(format!("new {id}"));
        tracing::span::Id::from_u64(id)
    }
    fn record(&self, span: &tracing::span::Id, values: &tracing::span::Record<'_>) {
        let mut log = self.0.lock().unwrap();
        if let Some(rec) = log.spans.get_mut(&span.into_u64()) {
            values.record(&mut Fields(&mut rec.fields));
        }
    }
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, _: &tracing::Event<'_>) {
        let mut log = self.0.lock().unwrap();
        let current = log
            .stack
            .last()
            .map_or_else(|| "-".to_string(), |id| id.to_string());
        log.log.push(format!("event in {current}"));
    }
    fn enter(&self, span: &tracing::span::Id) {
        self.0.lock().unwrap().stack.push(span.into_u64());
    }
    fn exit(&self, span: &tracing::span::Id) {
        let mut log = self.0.lock().unwrap();
        if let Some(at) = log.stack.iter().rposition(|id| *id == span.into_u64()) {
            log.stack.remove(at);
        }
    }
    fn clone_span(&self, span: &tracing::span::Id) -> tracing::span::Id {
        if let Some(rec) = self.0.lock().unwrap().spans.get_mut(&span.into_u64()) {
            rec.refs += 1;
        }
        span.clone()
    }
    fn try_close(&self, span: tracing::span::Id) -> bool {
        let mut log = self.0.lock().unwrap();
        let id = span.into_u64();
        let closed = match log.spans.get_mut(&id) {
            Some(rec) => {
                rec.refs -= 1;
                rec.refs == 0
            }
            None => false,
        };
        if closed {
            log.log.push(format!("close {id}"));
        }
        closed
    }
}

impl Spans {
    fn attempts(&self) -> Vec<(u64, SpanRec)> {
        self.0
            .lock()
            .unwrap()
            .spans
            .iter()
            .filter(|(_, rec)| rec.name == "palisade.attempt")
            .map(|(id, rec)| (*id, rec.clone()))
            .collect()
    }
    fn log(&self) -> Vec<String> {
        self.0.lock().unwrap().log.clone()
    }
}

/// Fails twice, then succeeds, with a `tracing` event inside each call.
fn traced_flaky() -> impl Service<(), Response = u32, Error = BoxError> + Clone {
    let calls = Arc::new(AtomicU32::new(0));
    service_fn(move |_: ()| {
        tracing::info!(target: "inner", "call");
        let n = calls.fetch_add(1, Ordering::SeqCst);
        async move {
            tokio::task::yield_now().await;
            tracing::info!(target: "inner", "poll");
            if n < 2 {
                Err::<u32, BoxError>("busy".into())
            } else {
                Ok(n)
            }
        }
    })
}

#[tokio::test(start_paused = true)]
async fn attempt_spans_number_each_attempt_of_a_request_that_is_not_http() {
    let spans = Spans::default();
    let _guard = tracing::dispatcher::set_default(&tracing::Dispatch::new(spans.clone()));
    let retry = fast_retry("pricing")
        .attempt_spans(true)
        .no_budget()
        .build()
        .unwrap();
    assert_eq!(retry.layer(traced_flaky()).oneshot(()).await.unwrap(), 2);
    let attempts = spans.attempts();
    assert_eq!(attempts.len(), 3, "{attempts:?}");
    for (i, (_, rec)) in attempts.iter().enumerate() {
        assert_eq!(rec.target, "palisade");
        assert_eq!(rec.level, tracing::Level::INFO);
        assert_eq!(rec.fields.get(LAYER).map(String::as_str), Some("pricing"));
        assert_eq!(
            rec.fields.get("palisade.attempt.number"),
            Some(&(i + 1).to_string()),
            "{rec:?}"
        );
        assert!(
            !rec.fields.contains_key("http.request.resend_count"),
            "{rec:?}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn attempt_spans_are_entered_for_the_call_and_its_polls_and_end_with_the_attempt() {
    let spans = Spans::default();
    let _guard = tracing::dispatcher::set_default(&tracing::Dispatch::new(spans.clone()));
    let retry = fast_retry("pricing")
        .attempt_spans(true)
        .no_budget()
        .build()
        .unwrap();
    retry.layer(traced_flaky()).oneshot(()).await.unwrap();
    let ids: Vec<u64> = spans.attempts().iter().map(|(id, _)| *id).collect();
    assert_eq!(ids.len(), 3);
    let log = spans.log();
    let expected: Vec<String> = ids
        .iter()
        .flat_map(|id| {
            [
                format!("new {id}"),
                format!("event in {id}"),
                format!("event in {id}"),
                format!("close {id}"),
            ]
        })
        .collect();
    // Only what concerns the attempts and the inner service's events.
    let relevant: Vec<String> = log
        .into_iter()
        .filter(|line| {
            line.starts_with("event")
                || ids
                    .iter()
                    .any(|id| line == &format!("new {id}") || line == &format!("close {id}"))
        })
        .collect();
    assert_eq!(relevant, expected);
}

#[tokio::test(start_paused = true)]
async fn attempt_spans_are_off_by_default() {
    let spans = Spans::default();
    let _guard = tracing::dispatcher::set_default(&tracing::Dispatch::new(spans.clone()));
    let retry = fast_retry("pricing").no_budget().build().unwrap();
    retry.layer(traced_flaky()).oneshot(()).await.unwrap();
    assert!(spans.attempts().is_empty());
}

#[tokio::test(start_paused = true)]
async fn attempt_spans_of_http_requests_carry_the_resend_count_from_the_first_retry() {
    let server = Server::start(
        vec![Reply::status(503), Reply::status(503)],
        Reply::status(200),
    )
    .await;
    let spans = Spans::default();
    let _guard = tracing::dispatcher::set_default(&tracing::Dispatch::new(spans.clone()));
    let retry = fast_retry("api")
        .classifier(HttpClassifier::new())
        .requests(ReqwestRequests)
        .no_budget()
        .attempt_spans(true)
        .build()
        .unwrap();
    let request = reqwest::Request::new(reqwest::Method::GET, server.url("/").parse().unwrap());
    let res = retry
        .layer(reqwest_client())
        .oneshot(request)
        .await
        .unwrap();
    assert_eq!(res.status(), reqwest::StatusCode::OK);
    let attempts = spans.attempts();
    assert_eq!(attempts.len(), 3, "{attempts:?}");
    let resends: Vec<Option<&str>> = attempts
        .iter()
        .map(|(_, rec)| {
            rec.fields
                .get("http.request.resend_count")
                .map(String::as_str)
        })
        .collect();
    assert_eq!(resends, [None, Some("1"), Some("2")]);
    for (_, rec) in &attempts {
        assert_eq!(rec.fields.get(LAYER).map(String::as_str), Some("api"));
        assert!(
            !rec.fields.contains_key("palisade.attempt.number"),
            "{rec:?}"
        );
    }
}

// ---------------------------------------------------------------------------
// Defaults that adapt
// ---------------------------------------------------------------------------

/// How many failures in a row open a breaker built by `build`.
async fn failures_to_open(breaker: CircuitBreakerLayer, at_most: u32) -> Option<u32> {
    let handle = breaker.handle();
    let svc = breaker.layer(scripted());
    for n in 1..=at_most {
        let _ = svc.clone().oneshot(FAIL).await;
        if handle.state() == CircuitState::Open {
            return Some(n);
        }
    }
    None
}

#[tokio::test]
async fn a_count_window_of_10_alone_builds_and_judges_after_10_calls() {
    let breaker = CircuitBreakerLayer::builder()
        .count_window(10)
        .build()
        .unwrap();
    assert_eq!(failures_to_open(breaker, 30).await, Some(10));
}

#[tokio::test]
async fn a_count_window_above_20_keeps_the_minimum_of_20() {
    let breaker = CircuitBreakerLayer::builder()
        .count_window(50)
        .build()
        .unwrap();
    assert_eq!(failures_to_open(breaker, 60).await, Some(20));
}

#[tokio::test]
async fn the_default_breaker_judges_after_20_calls() {
    let breaker = CircuitBreakerLayer::builder().build().unwrap();
    assert_eq!(failures_to_open(breaker, 60).await, Some(20));
}

#[tokio::test]
async fn minimum_calls_of_150_alone_gets_a_count_window_of_150() {
    let breaker = CircuitBreakerLayer::builder()
        .minimum_calls(150)
        .build()
        .unwrap();
    assert_eq!(failures_to_open(breaker, 200).await, Some(150));
}

#[tokio::test]
async fn only_an_explicit_minimum_above_an_explicit_count_window_is_refused() {
    let err = CircuitBreakerLayer::builder()
        .count_window(10)
        .minimum_calls(11)
        .build()
        .unwrap_err();
    assert_eq!(err.parameter(), "minimum_calls", "{err}");
    assert!(
        CircuitBreakerLayer::builder()
            .count_window(10)
            .minimum_calls(10)
            .build()
            .is_ok()
    );
    assert!(
        CircuitBreakerLayer::builder()
            .minimum_calls(1_000_001)
            .build()
            .is_err()
    );
    assert!(
        CircuitBreakerLayer::builder()
            .minimum_calls(1_000_000)
            .build()
            .is_ok()
    );
}

#[tokio::test(start_paused = true)]
async fn a_time_window_keeps_the_minimum_of_20() {
    let breaker = CircuitBreakerLayer::builder()
        .time_window(Duration::from_secs(30))
        .build()
        .unwrap();
    assert_eq!(failures_to_open(breaker, 60).await, Some(20));
}

#[tokio::test]
async fn consecutive_failures_trip_before_minimum_calls() {
    let breaker = CircuitBreakerLayer::builder()
        .consecutive_failures(3)
        .build()
        .unwrap();
    assert_eq!(failures_to_open(breaker, 30).await, Some(3));
}

#[tokio::test]
async fn consecutive_failures_count_only_failures_in_a_row() {
    let breaker = CircuitBreakerLayer::builder()
        .consecutive_failures(3)
        .build()
        .unwrap();
    let handle = breaker.handle();
    let svc = breaker.layer(scripted());
    for what in [FAIL, FAIL, OK, FAIL, FAIL] {
        let _ = svc.clone().oneshot(what).await;
    }
    assert_eq!(handle.state(), CircuitState::Closed);
    let _ = svc.clone().oneshot(FAIL).await;
    assert_eq!(handle.state(), CircuitState::Open);
}

// ---------------------------------------------------------------------------
// More promises: the preset's respond slot and timeouts' names, readiness
// errors that are not rejections, slow calls in the metrics, snake case.
// ---------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn an_axum_router_takes_a_preset_with_http_rejection_layer_in_its_respond_slot() {
    let stack = Resilience::builder()
        .respond_slot(HttpRejectionLayer::new())
        .bulkhead(|bulkhead| bulkhead.name("api").max_concurrent(1))
        .attempt_timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let _: &HttpRejectionLayer = stack.respond();
    let in_flight = stack.concurrency().handle();
    let app = Router::new()
        .route("/fast", get(|| async { "fast" }))
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(10)).await;
                "slow"
            }),
        )
        .layer(stack);
    let addr = serve_axum(app).await;
    let client = reqwest_client();
    let slow = tokio::spawn(client.get(format!("http://{addr}/slow")).send());
    until_in_flight(&in_flight, 1).await;
    let refused = client
        .get(format!("http://{addr}/fast"))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), reqwest::StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(refused.headers().get("retry-after").unwrap(), "1");
    assert_eq!(
        slow.await.unwrap().unwrap().status(),
        reqwest::StatusCode::GATEWAY_TIMEOUT
    );
}

#[tokio::test(start_paused = true)]
async fn the_presets_timeouts_are_named_total_and_attempt() {
    let stack = Resilience::builder()
        .total_timeout(Duration::from_secs(1))
        .build()
        .unwrap();
    let err = stack.layer(scripted()).oneshot(HANG).await.unwrap_err();
    let elapsed = err.downcast_ref::<Elapsed>().unwrap();
    assert_eq!(
        (elapsed.name(), elapsed.timeout()),
        ("total", Duration::from_secs(1))
    );
    assert_eq!(err.to_string(), r#"timeout "total" elapsed after 1s"#);

    let stack = Resilience::builder()
        .attempt_timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let err = stack.layer(scripted()).oneshot(HANG).await.unwrap_err();
    assert_eq!(err.to_string(), r#"timeout "attempt" elapsed after 300ms"#);
}

#[test]
fn a_refused_part_of_the_preset_names_its_slot() {
    let err = Resilience::http()
        .retry(|retry| retry.max_attempts(0))
        .build()
        .unwrap_err();
    assert_eq!(err.part(), Some("retry"));
    assert_eq!(err.parameter(), "max_attempts");
    assert!(
        err.to_string()
            .starts_with("invalid `retry.max_attempts`: "),
        "{err}"
    );
}

/// Never ready: its `poll_ready` fails with `Mine`.
#[derive(Clone)]
struct Broken;

impl<R> Service<R> for Broken {
    type Response = http::Response<String>;
    type Error = BoxError;
    type Future = std::future::Ready<Result<http::Response<String>, BoxError>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Err(Box::new(Mine)))
    }

    fn call(&mut self, _: R) -> Self::Future {
        std::future::ready(Ok(http::Response::new(String::new())))
    }
}

#[tokio::test]
async fn grpc_rejection_returns_any_other_poll_ready_error_as_it_is() {
    let mut svc = GrpcRejectionLayer::new().layer(Broken);
    let err =
        Service::<()>::poll_ready(&mut svc, &mut Context::from_waker(std::task::Waker::noop()));
    match err {
        Poll::Ready(Err(err)) => assert!(err.is::<Mine>(), "{err:?}"),
        other => panic!(
            "expected Mine: {:?}",
            other.map(|r| r.map_err(|e| e.to_string()))
        ),
    }
}

#[tokio::test]
async fn http_rejection_answers_a_poll_ready_error_at_the_next_call_with_a_500() {
    let mut svc = HttpRejectionLayer::new().layer(Broken);
    let ready: Result<_, Infallible> = ServiceExt::<http::Request<String>>::ready(&mut svc).await;
    assert!(ready.is_ok());
    let res = svc.call(http::Request::new(String::new())).await.unwrap();
    assert_eq!(res.status(), http::StatusCode::INTERNAL_SERVER_ERROR);
    assert!(res.body().is_empty());
}

#[tokio::test]
async fn bulkhead_full_says_the_limit_in_force_when_it_refused() {
    let bulkhead = BulkheadLayer::builder()
        .name("inventory")
        .max_concurrent(1)
        .build()
        .unwrap();
    let svc = bulkhead.layer(scripted());
    bulkhead.handle().set_max_concurrent(2).unwrap();
    let mut a = svc.clone();
    let mut b = svc.clone();
    a.ready().await.unwrap();
    b.ready().await.unwrap();
    let err = svc.clone().oneshot(OK).await.unwrap_err();
    assert_eq!(
        err.downcast_ref::<BulkheadFull>().unwrap().max_concurrent(),
        2
    );
    assert_eq!(
        err.to_string(),
        r#"bulkhead "inventory" is full: 2 in flight, no queue"#
    );
}

#[tokio::test(start_paused = true)]
async fn a_retry_deadline_is_answered_as_deadline_exceeded_and_504() {
    let retry = fast_retry("payments")
        .deadline(Duration::from_secs(10))
        .no_budget()
        .build()
        .unwrap();
    let err = retry
        .layer(ReadyOnce(Arc::new(AtomicU32::new(0))))
        .oneshot(())
        .await
        .unwrap_err();
    assert_eq!(
        to_status(&*err).unwrap().code(),
        tonic::Code::DeadlineExceeded
    );
    assert_eq!(
        to_response::<String>(&*err).unwrap().status(),
        http::StatusCode::GATEWAY_TIMEOUT
    );
}

#[tokio::test(start_paused = true)]
async fn metrics_count_slow_calls_and_the_slow_call_rate_crossing() {
    let recorder = Recorder::default();
    let _guard = metrics::set_default_local_recorder(&recorder);
    let breaker = CircuitBreakerLayer::builder()
        .name("search")
        .count_window(2)
        .minimum_calls(2)
        .slow_call_duration(Duration::from_millis(100))
        .on_event(MetricsEvents::new())
        .build()
        .unwrap();
    let svc = breaker.layer(service_fn(|delay: Duration| async move {
        tokio::time::sleep(delay).await;
        Ok::<_, BoxError>(())
    }));
    for _ in 0..2 {
        svc.clone()
            .oneshot(Duration::from_millis(200))
            .await
            .unwrap();
    }
    let calls = "palisade.circuit_breaker.calls";
    assert_eq!(
        recorder.counter(
            calls,
            &[
                (LAYER, "search"),
                ("palisade.circuit_breaker.outcome", "success"),
                ("palisade.circuit_breaker.slow", "true"),
            ]
        ),
        Some(2)
    );
    assert_eq!(
        recorder.counter(
            "palisade.circuit_breaker.threshold_crossings",
            &[
                (LAYER, "search"),
                ("palisade.circuit_breaker.rate", "slow_call")
            ]
        ),
        Some(1)
    );
    assert_eq!(breaker.handle().state(), CircuitState::Open);
}

#[tokio::test(start_paused = true)]
async fn metrics_count_retries_of_timed_out_attempts_as_timeout() {
    let recorder = Recorder::default();
    let _guard = metrics::set_default_local_recorder(&recorder);
    let retry = fast_retry("pricing")
        .max_attempts(3)
        .no_budget()
        .on_event(MetricsEvents::new())
        .build()
        .unwrap();
    let timeout = TimeoutLayer::new(Duration::from_millis(100)).unwrap();
    let svc = ServiceBuilder::new()
        .layer(retry)
        .layer(timeout)
        .service(scripted());
    let err = svc.oneshot(HANG).await.unwrap_err();
    assert_eq!(ErrorKind::of(&err), ErrorKind::Elapsed);
    assert_eq!(
        recorder.counter(
            "palisade.retry.retries",
            &[(LAYER, "pricing"), ("palisade.retry.reason", "timeout")]
        ),
        Some(2)
    );
    assert_eq!(
        recorder.counter("palisade.retry.attempts", &[(LAYER, "pricing")]),
        Some(3)
    );
}

#[test]
fn label_values_are_snake_case_through_as_str() {
    let states = [
        (CircuitState::Closed, "closed"),
        (CircuitState::Open, "open"),
        (CircuitState::HalfOpen, "half_open"),
        (CircuitState::ForcedOpen, "forced_open"),
        (CircuitState::Disabled, "disabled"),
        (CircuitState::MetricsOnly, "metrics_only"),
    ];
    for (state, name) in states {
        assert_eq!(state.as_str(), name);
    }
    use palisade::retry::RetryReason;
    let reasons = [
        (RetryReason::Failure, "failure"),
        (RetryReason::Timeout, "timeout"),
        (RetryReason::CircuitOpen, "circuit_open"),
        (RetryReason::BulkheadFull, "bulkhead_full"),
        (RetryReason::NotSent, "not_sent"),
        (RetryReason::RateLimited, "rate_limited"),
    ];
    for (reason, name) in reasons {
        assert_eq!(reason.as_str(), name);
    }
    let give_ups = [
        (GiveUpReason::MaxAttempts, "max_attempts"),
        (GiveUpReason::Deadline, "deadline"),
        (GiveUpReason::ServerSaidNo, "server_said_no"),
        (GiveUpReason::HintAboveCap, "hint_above_cap"),
        (GiveUpReason::BackoffEnded, "backoff_ended"),
        (GiveUpReason::NotReplayable, "not_replayable"),
        (GiveUpReason::BudgetExhausted, "budget_exhausted"),
        (GiveUpReason::NotRetryable, "not_retryable"),
        (GiveUpReason::FailureNotRetryable, "failure_not_retryable"),
        (GiveUpReason::RequestNotRetryable, "request_not_retryable"),
    ];
    for (reason, name) in give_ups {
        assert_eq!(reason.as_str(), name);
    }
}

#[test]
fn replay_sources_say_which_requests_are_http() {
    use palisade::replay::{Cloned, HttpSource, ReplaySource};
    const { assert!(<HttpSource<String> as ReplaySource>::HTTP) };
    const { assert!(<reqwest::Request as ReplaySource>::HTTP) };
    const { assert!(!<Cloned<http::Request<String>> as ReplaySource>::HTTP) };
}

#[tokio::test(start_paused = true)]
async fn consecutive_failures_trip_a_time_window_before_its_minimum_too() {
    let breaker = CircuitBreakerLayer::builder()
        .time_window(Duration::from_secs(30))
        .consecutive_failures(2)
        .build()
        .unwrap();
    assert_eq!(failures_to_open(breaker, 30).await, Some(2));
}

#[tokio::test]
async fn an_explicit_minimum_below_the_default_window_is_kept() {
    let breaker = CircuitBreakerLayer::builder()
        .minimum_calls(50)
        .build()
        .unwrap();
    assert_eq!(failures_to_open(breaker, 120).await, Some(50));
}

#[tokio::test(start_paused = true)]
async fn an_explicit_minimum_with_a_time_window_is_not_refused() {
    let breaker = CircuitBreakerLayer::builder()
        .time_window(Duration::from_secs(30))
        .minimum_calls(500)
        .build()
        .unwrap();
    assert_eq!(failures_to_open(breaker, 600).await, Some(500));
}

#[tokio::test(start_paused = true)]
async fn timeout_layer_new_names_its_rejection_as_the_builders_default() {
    // `TimeoutLayer::new` is documented "with no name"; its rejection
    // names it "timeout", the builder's default (reported as unclear).
    let err = TimeoutLayer::new(Duration::from_secs(2))
        .unwrap()
        .layer(scripted())
        .oneshot(HANG)
        .await
        .unwrap_err();
    let elapsed = err.downcast_ref::<Elapsed>().unwrap();
    assert_eq!(
        (elapsed.name(), elapsed.timeout()),
        ("timeout", Duration::from_secs(2))
    );
    assert_eq!(err.to_string(), r#"timeout "timeout" elapsed after 2s"#);
}

#[tokio::test(start_paused = true)]
async fn resilience_grpc_answers_its_full_bulkhead_as_resource_exhausted() {
    let addr = serve_health!(
        tonic::transport::Server::builder().layer(tower::layer::layer_fn(slow_when_asked))
    );
    let stack = Resilience::grpc()
        .bulkhead(|bulkhead| bulkhead.name("client").max_concurrent(1))
        .build()
        .unwrap();
    let in_flight = stack.concurrency().handle();
    let client = HealthClient::new(stack.layer(channel_to(addr)));
    let slow = tokio::spawn({
        let mut client = client.clone();
        async move { client.check(check("inventory", true)).await }
    });
    until_in_flight(&in_flight, 1).await;
    let status = client
        .clone()
        .check(check("inventory", false))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::ResourceExhausted);
    assert_eq!(
        status.message(),
        r#"bulkhead "client" is full: 1 in flight, no queue"#
    );
    assert_eq!(ErrorKind::of_dyn(&status), ErrorKind::BulkheadFull);
    slow.abort();
}

#[tokio::test]
async fn metrics_active_calls_follow_the_permit_when_the_bulkhead_covers_the_body() {
    use http_body_util::{BodyExt, Full};
    let recorder = Recorder::default();
    let _guard = metrics::set_default_local_recorder(&recorder);
    let bulkhead = BulkheadLayer::builder()
        .name("bodies")
        .max_concurrent(2)
        .cover_body()
        .on_event(MetricsEvents::new())
        .build()
        .unwrap();
    let handle = bulkhead.handle();
    let svc = bulkhead.layer(service_fn(|_: ()| async {
        Ok::<_, BoxError>(http::Response::new(Full::new(&b"hello"[..])))
    }));
    let response = svc.oneshot(()).await.unwrap();
    assert_eq!(handle.in_flight(), 1, "the body holds the permit");
    let active = [(LAYER, "bodies")];
    assert_eq!(
        recorder.gauge("palisade.bulkhead.active_calls", &active),
        Some(1.0),
        "calls holding a permit"
    );
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], b"hello");
    assert_eq!(handle.in_flight(), 0);
    assert_eq!(
        recorder.gauge("palisade.bulkhead.active_calls", &active),
        Some(0.0)
    );
}

#[tokio::test(start_paused = true)]
async fn attempt_spans_of_tonic_bodies_count_every_attempt_into_a_channel() {
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let addr = serve_health!(
        tonic::transport::Server::builder()
            .layer(tower::layer::layer_fn(unavailable_first(1, bodies.clone())))
    );
    let spans = Spans::default();
    let _guard = tracing::dispatcher::set_default(&tracing::Dispatch::new(spans.clone()));
    let retry = fast_retry("grpc")
        .classifier(GrpcClassifier::new())
        .requests(TonicBodies::default())
        .attempt_spans(true)
        .build()
        .unwrap();
    let mut client =
        HealthClient::new(ServiceBuilder::new().layer(retry).service(channel_to(addr)));
    let reply = client.check(check("stock", false)).await.unwrap();
    assert_eq!(reply.into_inner().status(), PbServingStatus::NotServing);
    let attempts = spans.attempts();
    assert_eq!(attempts.len(), 2, "{attempts:?}");
    // The docs do not say whether a tonic request is "HTTP" for the span
    // (`ReplaySource::HTTP` lists `ReplayBodies`, not `TonicBodies`):
    // either numbering, consistently, is what they promise.
    for (i, (_, rec)) in attempts.iter().enumerate() {
        assert_eq!(rec.fields.get(LAYER).map(String::as_str), Some("grpc"));
        let number = rec.fields.get("palisade.attempt.number");
        let resend = rec.fields.get("http.request.resend_count");
        match (number, resend) {
            (Some(n), None) => assert_eq!(n, &(i + 1).to_string()),
            (None, Some(r)) => assert_eq!(r, &i.to_string()),
            (None, None) => assert_eq!(i, 0, "only the first send has neither"),
            both => panic!("both fields: {both:?}"),
        }
    }
}

#[tokio::test]
async fn a_clone_holds_no_refusal_of_the_service_it_was_cloned_from() {
    let bulkhead = BulkheadLayer::builder()
        .name("api")
        .max_concurrent(1)
        .build()
        .unwrap();
    let inner = bulkhead.layer(service_fn(|_: http::Request<String>| async {
        Ok::<_, BoxError>(http::Response::new(String::from("ok")))
    }));
    let mut holder = inner.clone();
    holder.ready().await.unwrap();

    let mut http_svc = HttpRejectionLayer::new().layer(inner.clone());
    let mut grpc_svc = GrpcRejectionLayer::new().layer(inner);
    let _ = ServiceExt::<http::Request<String>>::ready(&mut http_svc).await;
    let _ = ServiceExt::<http::Request<String>>::ready(&mut grpc_svc).await;
    let http_clone = http_svc.clone();
    let grpc_clone = grpc_svc.clone();
    drop(holder); // a place is free again

    // The services that polled answer the refusal they hold.
    let res = http_svc
        .call(http::Request::new(String::new()))
        .await
        .unwrap();
    assert_eq!(res.status(), http::StatusCode::SERVICE_UNAVAILABLE);
    let err = grpc_svc
        .call(http::Request::new(String::new()))
        .await
        .unwrap_err();
    assert_eq!(
        err.downcast::<tonic::Status>().unwrap().code(),
        tonic::Code::ResourceExhausted
    );
    // Their clones poll for themselves, and get the free place.
    let res = http_clone
        .oneshot(http::Request::new(String::new()))
        .await
        .unwrap();
    assert_eq!(res.status(), http::StatusCode::OK);
    let res = grpc_clone
        .oneshot(http::Request::new(String::new()))
        .await
        .unwrap();
    assert_eq!(res.status(), http::StatusCode::OK);
}

#[tokio::test(start_paused = true)]
async fn metrics_count_retries_of_an_open_breaker_as_circuit_open() {
    let recorder = Recorder::default();
    let _guard = metrics::set_default_local_recorder(&recorder);
    let retry = fast_retry("pricing")
        .max_attempts(2)
        .retry_on([ErrorKind::CircuitOpen])
        .no_budget()
        .on_event(MetricsEvents::new())
        .build()
        .unwrap();
    let breaker = breaker_of_two("pricing-breaker");
    let handle = breaker.handle();
    let svc = ServiceBuilder::new()
        .layer(retry)
        .layer(breaker.clone())
        .service(scripted());
    // Trip the breaker beside the retry: every service of the layer shares it.
    trip(&breaker.layer(scripted())).await;
    assert_eq!(handle.state(), CircuitState::Open);
    let start = tokio::time::Instant::now();
    svc.clone().oneshot(OK).await.unwrap();
    assert!(
        start.elapsed() >= Duration::from_secs(29),
        "waited the breaker's wait"
    );
    assert_eq!(
        recorder.counter(
            "palisade.retry.retries",
            &[
                (LAYER, "pricing"),
                ("palisade.retry.reason", "circuit_open")
            ]
        ),
        Some(1)
    );
}

#[tokio::test(start_paused = true)]
async fn metrics_count_retries_of_a_full_bulkhead_as_bulkhead_full() {
    let recorder = Recorder::default();
    let _guard = metrics::set_default_local_recorder(&recorder);
    let retry = fast_retry("pricing")
        .max_attempts(3)
        .retry_on([ErrorKind::BulkheadFull])
        .no_budget()
        .on_event(MetricsEvents::new())
        .build()
        .unwrap();
    let bulkhead = BulkheadLayer::builder()
        .name("db")
        .max_concurrent(1)
        .build()
        .unwrap();
    let svc = ServiceBuilder::new()
        .layer(retry)
        .layer(bulkhead.clone())
        .service(scripted());
    let mut holder = bulkhead.layer(scripted());
    holder.ready().await.unwrap();
    let err = svc.oneshot(OK).await.unwrap_err();
    assert_eq!(ErrorKind::of(&err), ErrorKind::BulkheadFull);
    assert_eq!(
        recorder.counter(
            "palisade.retry.retries",
            &[
                (LAYER, "pricing"),
                ("palisade.retry.reason", "bulkhead_full")
            ]
        ),
        Some(2)
    );
    assert_eq!(
        recorder.counter(
            "palisade.retry.failed_calls",
            &[
                (LAYER, "pricing"),
                ("palisade.retry.give_up_reason", "max_attempts")
            ]
        ),
        Some(1)
    );
}

#[tokio::test(start_paused = true)]
async fn metrics_count_retries_of_a_refused_connection_as_not_sent() {
    let recorder = Recorder::default();
    let _guard = metrics::set_default_local_recorder(&recorder);
    let addr = http_server::closed_port().await;
    let retry = fast_retry("api")
        .classifier(HttpClassifier::new())
        .requests(ReqwestRequests)
        .max_attempts(2)
        .no_budget()
        .on_event(MetricsEvents::new())
        .build()
        .unwrap();
    let request = reqwest::Request::new(
        reqwest::Method::POST,
        format!("http://{addr}/").parse().unwrap(),
    );
    let err = retry
        .layer(reqwest_client())
        .oneshot(request)
        .await
        .unwrap_err();
    assert_eq!(ErrorKind::of(&err), ErrorKind::Inner);
    assert_eq!(
        recorder.counter(
            "palisade.retry.retries",
            &[(LAYER, "api"), ("palisade.retry.reason", "not_sent")]
        ),
        Some(1)
    );
}

/// A transition made by hand.
type Step = fn(&palisade::circuit_breaker::CircuitBreakerHandle);

#[tokio::test]
async fn metrics_follow_transitions_made_by_hand() {
    let recorder = Recorder::default();
    let _guard = metrics::set_default_local_recorder(&recorder);
    let breaker = CircuitBreakerLayer::builder()
        .name("manual")
        .on_event(MetricsEvents::new())
        .build()
        .unwrap();
    let handle = breaker.handle();
    let state = "palisade.circuit_breaker.state";
    let transitions = "palisade.circuit_breaker.transitions";
    let steps: [(Step, &str, &str); 4] = [
        (|h| h.force_open(), "closed", "forced_open"),
        (|h| h.disable(), "forced_open", "disabled"),
        (|h| h.metrics_only(), "disabled", "metrics_only"),
        (|h| h.reset(), "metrics_only", "closed"),
    ];
    for (step, from, to) in steps {
        step(&handle);
        assert_eq!(handle.state().as_str(), to);
        assert_eq!(
            recorder.gauge(state, &[(LAYER, "manual"), (state, to)]),
            Some(1.0),
            "{from} -> {to}"
        );
        assert_eq!(
            recorder.gauge(state, &[(LAYER, "manual"), (state, from)]),
            Some(0.0),
            "{from} -> {to}"
        );
        assert_eq!(
            recorder.counter(
                transitions,
                &[
                    (LAYER, "manual"),
                    ("palisade.circuit_breaker.from_state", from),
                    ("palisade.circuit_breaker.to_state", to),
                ]
            ),
            Some(1),
            "{from} -> {to}"
        );
    }
    assert_eq!(recorder.series_of(state).len(), 6);
}

#[tokio::test]
async fn retry_after_when_busy_below_a_second_is_rounded_up_to_1() {
    let err = bulkhead_full_error().await;
    let layer = HttpRejectionLayer::builder()
        .retry_after_when_busy(Duration::from_millis(1))
        .build()
        .unwrap();
    let res = layer.to_response::<String>(&*err).unwrap();
    assert_eq!(retry_after(&res), Some("1"));
}

/// A layer of our own's event, counted through `MetricsEvents`.
#[derive(Debug)]
struct CacheHit;

impl palisade::event::EventKind for CacheHit {
    fn describe(&self, name: &str, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cache `{name}`: hit")
    }

    fn measure(&self, record: &mut dyn FnMut(palisade::event::metrics::Measure)) {
        use palisade::event::metrics::Measure;
        record(
            Measure::count("myapp.cache.hits", &[("myapp.cache.tier", "l1")])
                .described(metrics::Unit::Count, "cache hits"),
        );
        record(
            Measure::set("myapp.cache.size", &[], 512.0)
                .described(metrics::Unit::Bytes, "bytes cached"),
        );
    }
}

#[tokio::test]
async fn a_layer_of_your_own_records_through_metrics_events_with_its_unit_and_help() {
    use palisade::event::Listener;
    let recorder = Recorder::default();
    let _guard = metrics::set_default_local_recorder(&recorder);
    let listener = MetricsEvents::new();
    let name: Arc<str> = Arc::from("cache");
    listener.on_event(&Event::new(&name, &CacheHit));
    listener.on_event(&Event::new(&name, &CacheHit));
    assert_eq!(
        recorder.counter(
            "myapp.cache.hits",
            &[(LAYER, "cache"), ("myapp.cache.tier", "l1")]
        ),
        Some(2)
    );
    assert_eq!(
        recorder.gauge("myapp.cache.size", &[(LAYER, "cache")]),
        Some(512.0)
    );
    let described = recorder.0.lock().unwrap().described.clone();
    assert_eq!(
        described.get("myapp.cache.hits"),
        Some(&(Some(metrics::Unit::Count), "cache hits".to_string()))
    );
    assert_eq!(
        described.get("myapp.cache.size"),
        Some(&(Some(metrics::Unit::Bytes), "bytes cached".to_string()))
    );
}

#[tokio::test]
async fn prometheus_writes_a_measures_help_and_a_suffix_for_a_unit_other_than_count() {
    use palisade::event::Listener;
    let prometheus = metrics_exporter_prometheus::PrometheusBuilder::new()
        .with_recommended_naming(true)
        .build_recorder();
    let handle = prometheus.handle();
    let _guard = metrics::set_default_local_recorder(&prometheus);
    let name: Arc<str> = Arc::from("cache");
    MetricsEvents::new().on_event(&Event::new(&name, &CacheHit));
    let text = handle.render();
    assert!(
        text.contains("# HELP myapp_cache_hits_total cache hits"),
        "{text}"
    );
    assert!(
        text.contains("# HELP myapp_cache_size_bytes bytes cached"),
        "{text}"
    );
    assert!(
        text.contains(r#"myapp_cache_size_bytes{palisade_layer_name="cache"} 512"#),
        "{text}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_timeout_that_cuts_a_body_says_which_timeout_too() {
    use http_body_util::{BodyExt, Full};
    let layer = TimeoutLayer::builder()
        .name("body")
        .timeout(Duration::from_millis(100))
        .cover_body()
        .build()
        .unwrap();
    let svc = layer.layer(service_fn(|_: ()| async {
        Ok::<_, BoxError>(http::Response::new(Full::new(&b"hello"[..])))
    }));
    let response = svc.oneshot(()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(150)).await;
    let err = response.into_body().collect().await.unwrap_err();
    assert_eq!(ErrorKind::of(&err), ErrorKind::Elapsed);
    assert_eq!(err.to_string(), r#"timeout "body" elapsed after 100ms"#);
    assert_eq!(
        to_status(&*err).unwrap().code(),
        tonic::Code::DeadlineExceeded
    );
}

#[tokio::test]
async fn a_tonic_clients_own_transport_error_passes_the_layer_unchanged() {
    let addr = http_server::closed_port().await;
    let bare = HealthClient::new(channel_to(addr))
        .check(check("inventory", false))
        .await
        .unwrap_err();
    let layered = HealthClient::new(
        ServiceBuilder::new()
            .layer(GrpcRejectionLayer::new())
            .service(channel_to(addr)),
    )
    .check(check("inventory", false))
    .await
    .unwrap_err();
    assert_eq!(layered.code(), bare.code());
    assert_eq!(layered.message(), bare.message());
    assert_eq!(ErrorKind::of_dyn(&layered), ErrorKind::Inner);
}
