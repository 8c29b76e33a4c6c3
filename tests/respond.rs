//! Rejections as each protocol's callers see them (`palisade::respond`):
//! an axum `Router` served on 127.0.0.1 and called with reqwest, a
//! tonic-health server and a tonic client over a real `Channel`, both
//! called through tonic-health's generated `HealthClient`; and
//! `to_response` / `to_status` on rejections made by the real layers.
//!
//! Time is paused. It jumps ahead whenever the runtime idles, so a call
//! that must stay in flight while others are made (the one holding the
//! bulkhead's place) is driven by [`without_time_passing`], and the
//! servers set `TCP_NODELAY`, or a small write may wait in the kernel
//! while time jumps.

use std::future::{Future, poll_fn};
use std::net::SocketAddr;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;
use axum::serve::ListenerExt;
use palisade::bulkhead::{BulkheadHandle, BulkheadLayer};
use palisade::circuit_breaker::{CircuitBreakerLayer, CircuitState};
use palisade::classify::{GrpcClassifier, HttpClassifier};
use palisade::error::{BoxError, BulkheadFull, CircuitOpen, Elapsed, ErrorKind};
use palisade::rate_limit::RateLimitLayer;
use palisade::respond::{GrpcRejectionLayer, HttpRejectionLayer, to_response, to_status};
use palisade::timeout::TimeoutLayer;
use tokio::sync::{Notify, Semaphore};
use tonic::Code;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tower::{Layer, Service, ServiceBuilder, ServiceExt, service_fn};

/// Drives `fut` to its end without letting paused time move: the task
/// stays runnable, so the runtime never idles, and an idle runtime is
/// what moves paused time (I/O is still polled).
async fn without_time_passing<F: Future>(fut: F) -> F::Output {
    let mut fut = pin!(fut);
    let start = tokio::time::Instant::now();
    let out = loop {
        if let Poll::Ready(out) = poll_fn(|cx| Poll::Ready(fut.as_mut().poll(cx))).await {
            break out;
        }
        tokio::task::yield_now().await;
    };
    assert_eq!(tokio::time::Instant::now(), start, "no time passed");
    out
}

/// Yields until `handle`'s bulkhead has a call in flight.
async fn until_in_flight(handle: &BulkheadHandle) {
    while handle.in_flight() == 0 {
        tokio::task::yield_now().await;
    }
}

// ---------------------------------------------------------------- HTTP ---

/// Serves `app` on 127.0.0.1 with axum.
async fn serve(app: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

/// A reqwest client with no timer of its own (no idle-connection reaper)
/// to move paused time, and no proxy from the environment.
fn reqwest_client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .pool_idle_timeout(None)
        .build()
        .unwrap()
}

fn retry_after(res: &reqwest::Response) -> Option<&str> {
    res.headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap())
}

#[tokio::test(start_paused = true)]
async fn an_axum_router_sheds_load_with_503_and_times_out_with_504() {
    let gate = Arc::new(Notify::new());
    let bulkhead = BulkheadLayer::builder()
        .max_concurrent(1)
        .max_queue(0)
        .build()
        .unwrap();
    let in_flight = bulkhead.handle();
    let waiting = gate.clone();
    let app = Router::new()
        .route(
            "/wait",
            get(move || {
                let gate = waiting.clone();
                async move {
                    gate.notified().await;
                    "done"
                }
            }),
        )
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(10)).await;
                "late"
            }),
        )
        .layer(
            ServiceBuilder::new()
                .layer(HttpRejectionLayer::new())
                .layer(bulkhead)
                .layer(TimeoutLayer::new(Duration::from_secs(1)).unwrap()),
        );
    let addr = serve(app).await;
    let client = reqwest_client();

    // The first call takes the only place and waits for the gate; no time
    // passes until it is answered, so its timeout cannot cut it short.
    let first = tokio::spawn(client.get(format!("http://{addr}/wait")).send());
    without_time_passing(until_in_flight(&in_flight)).await;
    let second = without_time_passing(client.get(format!("http://{addr}/wait")).send())
        .await
        .unwrap();
    assert_eq!(second.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(retry_after(&second), Some("1"));

    gate.notify_one();
    let first = without_time_passing(async { first.await.unwrap().unwrap().text().await })
        .await
        .unwrap();
    assert_eq!(first, "done", "the call holding the place was served");

    let slow = client
        .get(format!("http://{addr}/slow"))
        .send()
        .await
        .unwrap();
    assert_eq!(slow.status(), StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(retry_after(&slow), None);
}

#[tokio::test(start_paused = true)]
async fn an_axum_router_behind_an_open_breaker_answers_503() {
    let breaker = CircuitBreakerLayer::builder()
        .name("app")
        .classifier(HttpClassifier::new())
        .count_window(2)
        .minimum_calls(2)
        .wait_duration(Duration::from_secs(30))
        .build()
        .unwrap();
    let handle = breaker.handle();
    let app = Router::new()
        .route("/fail", get(|| async { StatusCode::INTERNAL_SERVER_ERROR }))
        .route("/ok", get(|| async { "ok" }))
        .layer(
            ServiceBuilder::new()
                .layer(HttpRejectionLayer::new())
                .layer(breaker),
        );
    let addr = serve(app).await;
    let client = reqwest_client();
    let get = |path: &str| {
        let req = client.get(format!("http://{addr}{path}")).send();
        // The breaker's wait is read at each call: keep it where it was.
        without_time_passing(async move { req.await.unwrap() })
    };

    for _ in 0..2 {
        assert_eq!(get("/fail").await.status(), 500);
    }
    assert_eq!(handle.state(), CircuitState::Open);
    let open = get("/ok").await;
    assert_eq!(open.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(retry_after(&open), Some("30"), "the breaker's whole wait");

    handle.force_open();
    let forced = get("/ok").await;
    assert_eq!(forced.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        retry_after(&forced),
        None,
        "held open by hand: no one knows how long"
    );

    handle.reset();
    assert_eq!(get("/ok").await.status(), StatusCode::OK);
}

/// An error that is not a rejection is a bare 500, and the layer's own
/// `Retry-After` setting is used for a full bulkhead.
#[tokio::test(start_paused = true)]
async fn other_errors_are_a_bare_500_and_the_busy_wait_is_a_setting() {
    let layer = HttpRejectionLayer::builder()
        .retry_after_when_busy(Duration::from_millis(2_500))
        .build()
        .unwrap();
    let failing =
        service_fn(|_: ()| async { Err::<http::Response<String>, BoxError>("disk full".into()) });
    let res = layer.layer(failing).oneshot(()).await.unwrap();
    assert_eq!(res.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(res.body(), "", "nothing of the error is told");
    assert!(res.headers().is_empty());

    let full = bulkhead_full().await;
    let res = layer.to_response::<String>(&*full).unwrap();
    assert_eq!(res.headers()["retry-after"], "3", "2.5 s, rounded up");
    let quiet = HttpRejectionLayer::builder()
        .retry_after_when_busy(Duration::ZERO)
        .build()
        .unwrap();
    let res = quiet.to_response::<String>(&*full).unwrap();
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(res.headers().get("retry-after").is_none());
}

/// A service whose `poll_ready` fails once with the error given.
struct Refusing<Res>(Option<BoxError>, std::marker::PhantomData<fn() -> Res>);

impl<Res> Refusing<Res> {
    fn with(err: BoxError) -> Self {
        Self(Some(err), std::marker::PhantomData)
    }
}

impl<Req, Res> Service<Req> for Refusing<Res> {
    type Response = Res;
    type Error = BoxError;
    type Future = std::future::Ready<Result<Res, BoxError>>;
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(self.0.take().map_or(Ok(()), Err))
    }
    fn call(&mut self, _: Req) -> Self::Future {
        unreachable!("a service whose poll_ready failed is not called")
    }
}

/// A rejection from the inner service's `poll_ready` is answered by the
/// next call: the HTTP layer's service never fails, and a generated tonic
/// client (which reports a `poll_ready` error as UNKNOWN, "Service was not
/// ready") gets the rejection's status.
#[tokio::test(start_paused = true)]
async fn a_rejection_from_poll_ready_is_answered_by_the_call() {
    let res = HttpRejectionLayer::new()
        .layer(Refusing::<http::Response<String>>::with(elapsed().await))
        .oneshot(())
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::GATEWAY_TIMEOUT);

    let refusing = Refusing::<http::Response<tonic::body::Body>>::with(bulkhead_full().await);
    let status = HealthClient::new(GrpcRejectionLayer::new().layer(refusing))
        .check(check())
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert_eq!(ErrorKind::of_dyn(&status), ErrorKind::BulkheadFull);
}

// ------------------------------------- to_response / to_status directly ---

/// A `BulkheadFull` from a real bulkhead of one whose place is taken.
async fn bulkhead_full() -> BoxError {
    let svc = BulkheadLayer::builder()
        .max_concurrent(1)
        .max_queue(0)
        .build()
        .unwrap()
        .layer(service_fn(|_: ()| {
            std::future::pending::<Result<(), BoxError>>()
        }));
    let mut holder = svc.clone();
    holder.ready().await.unwrap();
    let _held = holder.call(());
    svc.oneshot(()).await.unwrap_err()
}

/// An `Elapsed` from a real timeout.
async fn elapsed() -> BoxError {
    TimeoutLayer::new(Duration::from_secs(1))
        .unwrap()
        .layer(service_fn(|_: ()| {
            std::future::pending::<Result<(), BoxError>>()
        }))
        .oneshot(())
        .await
        .unwrap_err()
}

/// `CircuitOpen`s from a real breaker: open with its wait at `waits`
/// (the breaker waits 30 s; time is advanced to each), held open by hand,
/// and half-open with its only probe out.
async fn circuit_open(waits: &[Duration]) -> (Vec<BoxError>, BoxError, BoxError) {
    let breaker = CircuitBreakerLayer::builder()
        .name("db")
        .count_window(2)
        .minimum_calls(2)
        .wait_duration(Duration::from_secs(30))
        .half_open_calls(1)
        .build()
        .unwrap();
    let handle = breaker.handle();
    let svc = breaker.layer(service_fn(|fail: bool| async move {
        if fail {
            Err::<(), BoxError>("boom".into())
        } else {
            std::future::pending().await
        }
    }));
    for _ in 0..2 {
        svc.clone().oneshot(true).await.unwrap_err();
    }
    let opened = tokio::time::Instant::now();
    let mut open = Vec::new();
    for wait in waits {
        tokio::time::advance(
            (opened + Duration::from_secs(30) - *wait) - tokio::time::Instant::now(),
        )
        .await;
        open.push(svc.clone().oneshot(true).await.unwrap_err());
    }
    tokio::time::advance(Duration::from_secs(30)).await;
    let mut probe = svc.clone();
    probe.ready().await.unwrap();
    let _probe = probe.call(false); // the only probe, never finishing
    let half_open = svc.clone().oneshot(true).await.unwrap_err();
    handle.force_open();
    let forced = svc.clone().oneshot(true).await.unwrap_err();
    (open, forced, half_open)
}

fn retry_after_of(res: &http::Response<String>) -> Option<&str> {
    res.headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap())
}

#[tokio::test(start_paused = true)]
async fn to_response_for_each_rejection_and_the_retry_after_rounding() {
    let waits = [
        Duration::from_secs(30),
        Duration::from_millis(1_500),
        Duration::from_millis(1_000),
        Duration::from_millis(100),
    ];
    let (open, forced, half_open) = circuit_open(&waits).await;
    for (err, secs) in open.iter().zip(["30", "2", "1", "1"]) {
        let wait = err.downcast_ref::<CircuitOpen>().unwrap().retry_after();
        let res = to_response::<String>(&**err).unwrap();
        assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(retry_after_of(&res), Some(secs), "{wait:?}");
    }
    assert_eq!(
        half_open
            .downcast_ref::<CircuitOpen>()
            .unwrap()
            .retry_after(),
        Duration::ZERO
    );
    let res = to_response::<String>(&*half_open).unwrap();
    assert_eq!(
        retry_after_of(&res),
        Some("1"),
        "a probe may finish any moment"
    );
    let res = to_response::<String>(&*forced).unwrap();
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(retry_after_of(&res), None);

    let res = to_response::<String>(&*bulkhead_full().await).unwrap();
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(retry_after_of(&res), Some("1"));

    let res = to_response::<String>(&*elapsed().await).unwrap();
    assert_eq!(res.status(), StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(retry_after_of(&res), None);

    assert!(to_response::<String>(&*BoxError::from("disk full")).is_none());
}

fn pushback(status: &tonic::Status) -> Option<&str> {
    status
        .metadata()
        .get("grpc-retry-pushback-ms")
        .map(|v| v.to_str().unwrap())
}

#[tokio::test(start_paused = true)]
async fn to_status_for_each_rejection() {
    let (open, forced, half_open) =
        circuit_open(&[Duration::from_secs(30), Duration::from_micros(1_500)]).await;
    for (err, ms) in open.iter().zip(["30000", "2"]) {
        let status = to_status(&**err).unwrap();
        assert_eq!(status.code(), Code::Unavailable);
        assert_eq!(status.message(), err.to_string());
        assert_eq!(pushback(&status), Some(ms));
        assert_eq!(ErrorKind::of_dyn(&status), ErrorKind::CircuitOpen);
        let source = std::error::Error::source(&status).unwrap();
        assert_eq!(source.downcast_ref::<CircuitOpen>().unwrap().name(), "db");
    }
    for err in [&forced, &half_open] {
        let status = to_status(&**err).unwrap();
        assert_eq!(status.code(), Code::Unavailable);
        assert_eq!(pushback(&status), None, "{err}");
    }

    let full = bulkhead_full().await;
    let status = to_status(&*full).unwrap();
    assert_eq!(status.code(), Code::ResourceExhausted);
    assert_eq!(status.message(), full.to_string());
    assert!(
        std::error::Error::source(&status)
            .unwrap()
            .is::<BulkheadFull>()
    );

    let late = elapsed().await;
    let status = to_status(&*late).unwrap();
    assert_eq!(status.code(), Code::DeadlineExceeded);
    assert_eq!(status.message(), late.to_string());
    assert!(std::error::Error::source(&status).unwrap().is::<Elapsed>());

    // Found through a chain, as tonic wraps it.
    let wrapped = tonic::Status::from_error(late);
    assert_eq!(
        wrapped.code(),
        Code::Unknown,
        "what tonic alone makes of it"
    );
    assert_eq!(to_status(&wrapped).unwrap().code(), Code::DeadlineExceeded);

    assert!(to_status(&*BoxError::from("connection reset")).is_none());
}

// ---------------------------------------------------------------- gRPC ---

/// Holds each call at the server until the test lets one through.
#[derive(Clone)]
struct Gate<S> {
    inner: S,
    permits: Arc<Semaphore>,
}

/// Errors are boxed, as palisade's are: tower's `Either` (from
/// `option_layer`) wants the same error on both sides.
impl<S, Req> Service<Req> for Gate<S>
where
    S: Service<Req> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: Into<BoxError>,
    Req: Send + 'static,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let mut inner = self.inner.clone();
        std::mem::swap(&mut inner, &mut self.inner);
        let permits = self.permits.clone();
        Box::pin(async move {
            permits.acquire().await.unwrap().forget();
            inner.call(req).await.map_err(Into::into)
        })
    }
}

/// A tonic-health server on 127.0.0.1 ("inventory" serving) with
/// `GrpcRejectionLayer` over the palisade layers given, over a gate that
/// lets no call through until the test adds permits.
async fn grpc_server(
    bulkhead: Option<BulkheadLayer>,
    timeout: Option<TimeoutLayer>,
) -> (SocketAddr, Arc<Semaphore>) {
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter
        .set_service_status("inventory", tonic_health::ServingStatus::Serving)
        .await;
    let incoming = tonic::transport::server::TcpIncoming::bind("127.0.0.1:0".parse().unwrap())
        .unwrap()
        .with_nodelay(Some(true));
    let addr = incoming.local_addr().unwrap();
    let permits = Arc::new(Semaphore::new(0));
    let gate = permits.clone();
    let stack = ServiceBuilder::new()
        .layer(GrpcRejectionLayer::new())
        .option_layer(bulkhead)
        .option_layer(timeout)
        .layer_fn(move |inner| Gate {
            inner,
            permits: gate.clone(),
        });
    tokio::spawn(async move {
        let _reporter = reporter; // keeps the statuses alive
        tonic::transport::Server::builder()
            .layer(stack)
            .add_service(health)
            .serve_with_incoming(incoming)
            .await
            .unwrap();
    });
    (addr, permits)
}

async fn channel(addr: SocketAddr) -> tonic::transport::Channel {
    tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .tcp_nodelay(true)
        .connect()
        .await
        .unwrap()
}

fn check() -> HealthCheckRequest {
    HealthCheckRequest {
        service: "inventory".into(),
    }
}

#[tokio::test(start_paused = true)]
async fn a_tonic_server_answers_rejections_as_statuses() {
    let bulkhead = BulkheadLayer::builder()
        .max_concurrent(1)
        .max_queue(0)
        .build()
        .unwrap();
    let in_flight = bulkhead.handle();
    let timeout = TimeoutLayer::new(Duration::from_secs(1)).unwrap();
    let (addr, gate) = grpc_server(Some(bulkhead), Some(timeout)).await;
    let client = HealthClient::new(channel(addr).await);

    let mut first = client.clone();
    let first = tokio::spawn(async move { first.check(check()).await });
    without_time_passing(until_in_flight(&in_flight)).await;
    let busy = without_time_passing(client.clone().check(check()))
        .await
        .unwrap_err();
    assert_eq!(busy.code(), Code::ResourceExhausted, "{busy:?}");
    // The message is the rejection's own (this helper's bulkhead is alike).
    assert_eq!(busy.message(), bulkhead_full().await.to_string());

    gate.add_permits(1);
    let first = without_time_passing(first).await.unwrap().unwrap();
    assert_eq!(first.into_inner().status(), ServingStatus::Serving);

    // The gate holds the next call past its deadline.
    let late = client.clone().check(check()).await.unwrap_err();
    assert_eq!(late.code(), Code::DeadlineExceeded, "{late:?}");
}

#[tokio::test(start_paused = true)]
async fn a_tonic_client_sees_rejections_as_statuses() {
    let (addr, gate) = grpc_server(None, None).await;
    let breaker = CircuitBreakerLayer::builder()
        .name("health")
        .classifier(GrpcClassifier::new())
        .build()
        .unwrap();
    let breaker_handle = breaker.handle();
    let bulkhead = BulkheadLayer::builder()
        .max_concurrent(1)
        .max_queue(0)
        .build()
        .unwrap();
    let in_flight = bulkhead.handle();
    let stack = ServiceBuilder::new()
        .layer(GrpcRejectionLayer::new())
        .layer(breaker)
        .layer(bulkhead)
        .layer(TimeoutLayer::new(Duration::from_secs(1)).unwrap())
        .service(channel(addr).await);
    let client = HealthClient::new(stack);

    gate.add_permits(1);
    let reply = client.clone().check(check()).await.unwrap().into_inner();
    assert_eq!(reply.status(), ServingStatus::Serving);

    breaker_handle.force_open();
    let open = client.clone().check(check()).await.unwrap_err();
    assert_eq!(open.code(), Code::Unavailable, "{open:?}");
    assert_eq!(ErrorKind::of_dyn(&open), ErrorKind::CircuitOpen);
    assert!(open.message().contains("health"), "{open:?}");
    breaker_handle.reset();

    // One call held at the server fills the bulkhead; no time passes
    // until it is let through, so its attempt timeout cannot end it.
    let mut first = client.clone();
    let first = tokio::spawn(async move { first.check(check()).await });
    without_time_passing(until_in_flight(&in_flight)).await;
    let full = without_time_passing(client.clone().check(check()))
        .await
        .unwrap_err();
    assert_eq!(full.code(), Code::ResourceExhausted, "{full:?}");
    assert_eq!(ErrorKind::of_dyn(&full), ErrorKind::BulkheadFull);
    gate.add_permits(1);
    let first = without_time_passing(first).await.unwrap().unwrap();
    assert_eq!(first.into_inner().status(), ServingStatus::Serving);

    let late = client.clone().check(check()).await.unwrap_err();
    assert_eq!(late.code(), Code::DeadlineExceeded, "{late:?}");
    assert_eq!(ErrorKind::of_dyn(&late), ErrorKind::Elapsed);
}

/// An error that is not a rejection reaches the caller as it would without
/// the layer: the same box, the same `Status` from a generated client.
#[tokio::test(start_paused = true)]
async fn other_errors_pass_through_unchanged() {
    #[derive(Debug)]
    struct Mine;
    impl std::fmt::Display for Mine {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("mine")
        }
    }
    impl std::error::Error for Mine {}
    let err = GrpcRejectionLayer::new()
        .layer(service_fn(|_: ()| async { Err::<(), _>(Mine) }))
        .oneshot(())
        .await
        .unwrap_err();
    assert!(err.is::<Mine>(), "{err:?}");

    // A Channel whose connection is refused: tonic's own UNAVAILABLE.
    let closed = {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        listener.local_addr().unwrap()
    };
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{closed}"))
        .unwrap()
        .connect_lazy();
    let bare = HealthClient::new(channel.clone())
        .check(check())
        .await
        .unwrap_err();
    let layered = HealthClient::new(GrpcRejectionLayer::new().layer(channel))
        .check(check())
        .await
        .unwrap_err();
    assert_eq!(layered.code(), bare.code());
    assert_eq!(layered.message(), bare.message());
    assert_eq!(ErrorKind::of_dyn(&layered), ErrorKind::Inner);
}

/// A service whose first `poll_ready` fails with the error it holds.
#[derive(Debug)]
struct RefusesOnce(Option<BoxError>);

impl Service<()> for RefusesOnce {
    type Response = http::Response<String>;
    type Error = BoxError;
    type Future = std::future::Ready<Result<http::Response<String>, BoxError>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(self.0.take().map_or(Ok(()), Err))
    }

    fn call(&mut self, _: ()) -> Self::Future {
        std::future::ready(Ok(http::Response::new(String::new())))
    }
}

/// What `{:?}` shows of each service and future: the inner service, the
/// setting, a refusal from `poll_ready` held for the call, and whether the
/// call went through or answers that refusal.
#[tokio::test(start_paused = true)]
async fn debug_shows_the_inner_service_the_settings_and_the_state() {
    let mut grpc = GrpcRejectionLayer::new().layer(RefusesOnce(None));
    assert_eq!(
        format!("{grpc:?}"),
        "GrpcRejection { inner: RefusesOnce(None), refused: None }"
    );
    let future = grpc.call(());
    assert_eq!(
        format!("{future:?}"),
        r#"ResponseFuture { state: "called" }"#
    );

    let mut grpc = GrpcRejectionLayer::new().layer(RefusesOnce(Some(bulkhead_full().await)));
    poll_fn(|cx| grpc.poll_ready(cx)).await.unwrap();
    let shown = format!("{grpc:?}");
    assert!(shown.contains("refused: Some(Status {"), "{shown}");
    let future = grpc.call(());
    assert_eq!(
        format!("{future:?}"),
        r#"ResponseFuture { state: "refused" }"#
    );

    let mut http = HttpRejectionLayer::new().layer(RefusesOnce(None));
    assert_eq!(
        format!("{http:?}"),
        "HttpRejection { inner: RefusesOnce(None), retry_after_when_busy: 1s, refused: None }"
    );
    let future = http.call(());
    assert_eq!(
        format!("{future:?}"),
        r#"ResponseFuture { state: "called" }"#
    );

    let mut http = HttpRejectionLayer::new().layer(RefusesOnce(Some(bulkhead_full().await)));
    poll_fn(|cx| http.poll_ready(cx)).await.unwrap();
    assert!(format!("{http:?}").contains("refused: Some("));
    let future = http.call(());
    assert_eq!(
        format!("{future:?}"),
        r#"ResponseFuture { state: "refused" }"#
    );
}

// --------------------------------------------------------- rate limiter ---

#[tokio::test(start_paused = true)]
async fn an_axum_router_over_its_rate_answers_429_with_retry_after() {
    let limiter = RateLimitLayer::builder()
        .name("api")
        .rate(2, Duration::from_secs(3)) // one call every 1.5 s
        .burst(1)
        .build()
        .unwrap();
    let app = Router::new().route("/", get(|| async { "hello" })).layer(
        ServiceBuilder::new()
            .layer(HttpRejectionLayer::new())
            .layer(limiter),
    );
    let addr = serve(app).await;
    let client = reqwest_client();
    let first = without_time_passing(client.get(format!("http://{addr}/")).send())
        .await
        .unwrap();
    assert_eq!(first.status(), StatusCode::OK);
    let second = without_time_passing(client.get(format!("http://{addr}/")).send())
        .await
        .unwrap();
    assert_eq!(second.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(retry_after(&second), Some("2"), "1.5 s, rounded up");
}

#[tokio::test(start_paused = true)]
async fn a_rate_limited_call_is_resource_exhausted_with_a_pushback() {
    let limiter = RateLimitLayer::builder()
        .rate(1, Duration::from_millis(1500))
        .build()
        .unwrap();
    let svc = limiter.layer(service_fn(|_: ()| async { Ok::<_, BoxError>(()) }));
    svc.clone().oneshot(()).await.unwrap();
    let err = svc.oneshot(()).await.unwrap_err();
    let status = to_status(&*err).unwrap();
    assert_eq!(status.code(), Code::ResourceExhausted);
    assert_eq!(
        status.metadata().get("grpc-retry-pushback-ms").unwrap(),
        "1500"
    );
    assert_eq!(ErrorKind::of_dyn(&status), ErrorKind::RateLimited);
    let res = to_response::<String>(&*err).unwrap();
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(res.headers()["retry-after"], "2");

    let costly = RateLimitLayer::builder()
        .rate(1, Duration::from_secs(1))
        .cost(|_: &()| 2)
        .build()
        .unwrap()
        .layer(service_fn(|_: ()| async { Ok::<_, BoxError>(()) }));
    let err = costly.oneshot(()).await.unwrap_err();
    let res = to_response::<String>(&*err).unwrap();
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(
        res.headers().get("retry-after").is_none(),
        "no wait lets it through"
    );
    assert!(
        to_status(&*err)
            .unwrap()
            .metadata()
            .get("grpc-retry-pushback-ms")
            .is_none()
    );
}

/// A `ConcurrencyLimited` from a real adaptive limit of one whose place is
/// taken.
async fn concurrency_limited() -> BoxError {
    use palisade::adaptive::{AdaptiveLimitLayer, Aimd};
    let one = Aimd::builder()
        .initial_limit(1)
        .min_limit(1)
        .build()
        .unwrap();
    let svc = AdaptiveLimitLayer::builder()
        .algorithm(one)
        .build()
        .unwrap()
        .layer(service_fn(|_: ()| {
            std::future::pending::<Result<(), BoxError>>()
        }));
    let mut holder = svc.clone();
    holder.ready().await.unwrap();
    let _held = holder.call(());
    svc.oneshot(()).await.unwrap_err()
}

/// A `Throttled` from a real throttle in front of a service that fails.
async fn throttled() -> BoxError {
    use palisade::adaptive::ThrottleLayer;
    let svc = ThrottleLayer::builder()
        .min_answered(0)
        .seed(1)
        .build()
        .unwrap()
        .layer(service_fn(|_: ()| async {
            Err::<(), BoxError>("down".into())
        }));
    loop {
        let err = svc.clone().oneshot(()).await.unwrap_err();
        if ErrorKind::of(&err) == ErrorKind::Throttled {
            return err;
        }
    }
}

#[tokio::test(start_paused = true)]
async fn the_adaptive_rejections_are_busy_and_unavailable() {
    let limited = concurrency_limited().await;
    let res = to_response::<String>(&*limited).unwrap();
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(retry_after_of(&res), Some("1"));
    let status = to_status(&*limited).unwrap();
    assert_eq!(status.code(), Code::ResourceExhausted);
    assert_eq!(status.message(), limited.to_string());
    assert_eq!(ErrorKind::of_dyn(&status), ErrorKind::ConcurrencyLimited);

    let throttled = throttled().await;
    let res = to_response::<String>(&*throttled).unwrap();
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(retry_after_of(&res), Some("1"));
    let status = to_status(&*throttled).unwrap();
    assert_eq!(status.code(), Code::Unavailable);
    assert_eq!(pushback(&status), None);
    assert_eq!(ErrorKind::of_dyn(&status), ErrorKind::Throttled);
}
