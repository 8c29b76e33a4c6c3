//! A tonic `HealthClient` over a real `Channel`, wrapped with palisade,
//! against a tonic-health server on 127.0.0.1 whose failures the test
//! controls. The assertions are on what the server saw.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use palisade::backoff::{Backoff, Jitter};
use palisade::circuit_breaker::{CircuitBreakerLayer, CircuitState};
use palisade::classify::GrpcClassifier;
use palisade::error::ErrorKind;
use palisade::retry::{ReplayBodies, ReplayBody, RetryLayer, TonicBodies};
use tokio::time::Instant;
use tonic::body::Body;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;
use tower::{Layer, Service, ServiceBuilder};

/// What the server does with the next calls.
#[derive(Debug, Clone, Default)]
struct Faults {
    /// Answer `UNAVAILABLE` to this many calls...
    unavailable: usize,
    /// ...with this pushback header, if any.
    pushback: Option<&'static str>,
    /// ...with this status code rather than UNAVAILABLE's 14.
    code: Option<&'static str>,
    /// Then keep this many calls waiting an hour before they are answered.
    stall: usize,
}

/// What the server saw: when each call came, and its request body.
#[derive(Default)]
struct Seen {
    calls: Vec<(Instant, Bytes)>,
}

#[derive(Clone)]
struct FaultLayer {
    faults: Arc<Mutex<Faults>>,
    seen: Arc<Mutex<Seen>>,
}

impl<S> Layer<S> for FaultLayer {
    type Service = FaultService<S>;
    fn layer(&self, inner: S) -> FaultService<S> {
        FaultService {
            inner,
            layer: self.clone(),
        }
    }
}

#[derive(Clone)]
struct FaultService<S> {
    inner: S,
    layer: FaultLayer,
}

/// A body of one chunk, to hand a read request on to the real service.
struct Once(Option<Bytes>);

impl http_body::Body for Once {
    type Data = Bytes;
    type Error = std::convert::Infallible;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        Poll::Ready(self.0.take().map(|b| Ok(http_body::Frame::data(b))))
    }
}

async fn collect(body: Body) -> Bytes {
    let mut body = std::pin::pin!(body);
    let mut all = Vec::new();
    while let Some(Ok(frame)) =
        std::future::poll_fn(|cx| http_body::Body::poll_frame(body.as_mut(), cx)).await
    {
        if let Some(data) = frame.data_ref() {
            all.extend_from_slice(data);
        }
    }
    Bytes::from(all)
}

impl<S> Service<http::Request<Body>> for FaultService<S>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: Send,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        let mut inner = self.inner.clone();
        std::mem::swap(&mut inner, &mut self.inner);
        let layer = self.layer.clone();
        Box::pin(async move {
            let (parts, body) = req.into_parts();
            let bytes = collect(body).await;
            layer
                .seen
                .lock()
                .unwrap()
                .calls
                .push((Instant::now(), bytes.clone()));
            let (fault, code, stall) = {
                let mut faults = layer.faults.lock().unwrap();
                let fail = faults.unavailable > 0;
                faults.unavailable = faults.unavailable.saturating_sub(1);
                let stall = !fail && faults.stall > 0;
                if stall {
                    faults.stall -= 1;
                }
                (
                    fail.then_some(faults.pushback),
                    faults.code.unwrap_or("14"),
                    stall,
                )
            };
            if stall {
                tokio::time::sleep(Duration::from_secs(3600)).await;
            }
            if let Some(pushback) = fault {
                // A trailers-only answer, as servers send errors.
                let mut res = http::Response::builder()
                    .header("content-type", "application/grpc")
                    .header("grpc-status", code)
                    .header("grpc-message", "injected");
                if let Some(ms) = pushback {
                    res = res.header("grpc-retry-pushback-ms", ms);
                }
                return Ok(res.body(Body::empty()).unwrap());
            }
            let req = http::Request::from_parts(parts, Body::new(Once(Some(bytes))));
            inner.call(req).await
        })
    }
}

struct TestServer {
    addr: std::net::SocketAddr,
    faults: Arc<Mutex<Faults>>,
    seen: Arc<Mutex<Seen>>,
}

impl TestServer {
    async fn start() -> TestServer {
        let (reporter, health) = tonic_health::server::health_reporter();
        reporter
            .set_service_status("inventory", tonic_health::ServingStatus::Serving)
            .await;
        let incoming =
            tonic::transport::server::TcpIncoming::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = incoming.local_addr().unwrap();
        let faults = Arc::new(Mutex::new(Faults::default()));
        let seen = Arc::new(Mutex::new(Seen::default()));
        let layer = FaultLayer {
            faults: faults.clone(),
            seen: seen.clone(),
        };
        tokio::spawn(async move {
            let _reporter = reporter; // keeps the statuses alive
            tonic::transport::Server::builder()
                .layer(layer)
                .add_service(health)
                .serve_with_incoming(incoming)
                .await
                .unwrap();
        });
        TestServer { addr, faults, seen }
    }

    fn fail_next(&self, calls: usize, pushback: Option<&'static str>) {
        *self.faults.lock().unwrap() = Faults {
            unavailable: calls,
            pushback,
            ..Faults::default()
        };
    }

    fn fail_next_with(&self, calls: usize, code: &'static str) {
        *self.faults.lock().unwrap() = Faults {
            unavailable: calls,
            code: Some(code),
            ..Faults::default()
        };
    }

    fn stall_next(&self, calls: usize) {
        self.faults.lock().unwrap().stall = calls;
    }

    fn calls(&self) -> Vec<(Instant, Bytes)> {
        self.seen.lock().unwrap().calls.clone()
    }

    async fn channel(&self) -> tonic::transport::Channel {
        tonic::transport::Endpoint::from_shared(format!("http://{}", self.addr))
            .unwrap()
            .connect()
            .await
            .unwrap()
    }
}

fn retry() -> RetryLayer<GrpcClassifier, Backoff, ReplayBodies> {
    RetryLayer::builder()
        .classifier(GrpcClassifier::new())
        .requests(ReplayBodies::default())
        .max_attempts(4)
        .backoff(
            Backoff::constant(Duration::from_millis(10))
                .jitter(Jitter::None)
                .build()
                .unwrap(),
        )
        .no_budget()
        .build()
        .unwrap()
}

fn check() -> HealthCheckRequest {
    HealthCheckRequest {
        service: "inventory".into(),
    }
}

/// The Channel takes tonic bodies; the retry hands it replayable ones.
fn to_tonic_body(req: http::Request<ReplayBody<Body>>) -> http::Request<Body> {
    req.map(Body::new)
}

#[tokio::test(start_paused = true)]
async fn unary_calls_are_retried_with_their_bodies_replayed_and_pushback_honoured() {
    let server = TestServer::start().await;
    let channel = server.channel().await;
    let stack = ServiceBuilder::new()
        .layer(retry())
        .map_request(to_tonic_body)
        .service(channel);
    let mut client = HealthClient::new(stack);

    server.fail_next(2, Some("120"));
    let reply = client.check(check()).await.unwrap().into_inner();
    assert_eq!(
        reply.status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );
    let calls = server.calls();
    assert_eq!(calls.len(), 3, "two failures, then the answer");
    assert!(!calls[0].1.is_empty());
    assert!(
        calls.iter().all(|(_, body)| body == &calls[0].1),
        "the body was replayed intact"
    );
    for pair in calls.windows(2) {
        assert_eq!(
            pair[1].0 - pair[0].0,
            Duration::from_millis(120),
            "the pushback was honoured"
        );
    }

    // A negative pushback: the server says not to retry.
    server.fail_next(1, Some("-1"));
    let status = client.check(check()).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable);
    assert_eq!(server.calls().len(), 4, "one attempt only");
}

/// `TonicBodies` hands the Channel its own body type: no `map_request`,
/// and the body the server saw fail is the body it sees again.
#[tokio::test(start_paused = true)]
async fn tonic_bodies_feed_a_channel_directly_and_replay_the_body() {
    let server = TestServer::start().await;
    let channel = server.channel().await;
    let retry = RetryLayer::builder()
        .classifier(GrpcClassifier::new())
        .requests(TonicBodies::default())
        .no_budget()
        .build()
        .unwrap();
    let mut client = HealthClient::new(ServiceBuilder::new().layer(retry).service(channel));

    server.fail_next(1, None);
    let reply = client.check(check()).await.unwrap().into_inner();
    assert_eq!(
        reply.status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );
    let calls = server.calls();
    assert_eq!(calls.len(), 2, "UNAVAILABLE, then the answer");
    assert!(!calls[0].1.is_empty());
    assert_eq!(calls[0].1, calls[1].1, "the same request, twice");
}

#[tokio::test(start_paused = true)]
async fn unavailable_answers_open_the_breaker() {
    let server = TestServer::start().await;
    let channel = server.channel().await;
    let breaker = CircuitBreakerLayer::builder()
        .name("health")
        .classifier(GrpcClassifier::new())
        .count_window(4)
        .minimum_calls(4)
        .wait_duration(Duration::from_secs(3600))
        .build()
        .unwrap();
    let handle = breaker.handle();
    let mut client = HealthClient::new(ServiceBuilder::new().layer(breaker).service(channel));

    server.fail_next(4, None);
    for _ in 0..4 {
        let status = client.check(check()).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::Unavailable);
    }
    assert_eq!(handle.state(), CircuitState::Open);
    for _ in 0..10 {
        let status = client.check(check()).await.unwrap_err();
        // tonic turns the layer's CircuitOpen into a Status whose source is
        // the CircuitOpen: ErrorKind finds it through the chain.
        assert_eq!(
            ErrorKind::of_dyn(&status),
            ErrorKind::CircuitOpen,
            "{status:?}"
        );
    }
    assert_eq!(
        server.calls().len(),
        4,
        "nothing reached the server while open"
    );
}

#[tokio::test(start_paused = true)]
async fn the_grpc_stack_retries_unavailable_replaying_the_body_into_a_channel() {
    let server = TestServer::start().await;
    let channel = server.channel().await;
    let stack = palisade::Resilience::grpc().build().unwrap();
    let mut client = HealthClient::new(stack.layer(channel));

    server.fail_next(1, None);
    let reply = client.check(check()).await.unwrap().into_inner();
    assert_eq!(
        reply.status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );
    let calls = server.calls();
    assert_eq!(calls.len(), 2, "UNAVAILABLE, then the answer");
    assert_eq!(calls[0].1, calls[1].1, "the same request, twice");
}

#[tokio::test(start_paused = true)]
async fn the_grpc_stacks_refusal_reaches_the_generated_client_as_unavailable() {
    let server = TestServer::start().await;
    let channel = server.channel().await;
    let stack = palisade::Resilience::grpc()
        .circuit_breaker(|breaker| breaker.name("health"))
        .build()
        .unwrap();
    stack.circuit_breaker().handle().force_open();
    let mut client = HealthClient::new(stack.layer(channel));

    let status = client.check(check()).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    assert_eq!(
        palisade::error::ErrorKind::of_dyn(&status),
        palisade::error::ErrorKind::CircuitOpen
    );
    assert!(status.message().contains("health"), "{status:?}");
    assert!(server.calls().is_empty(), "nothing was sent");
}

mod hedging {
    use super::*;
    use palisade::hedge::HedgeLayer;

    fn hedge(delay: Duration) -> HedgeLayer<GrpcClassifier, TonicBodies> {
        HedgeLayer::builder()
            .classifier(GrpcClassifier::new())
            .requests(TonicBodies::default())
            .delay(delay)
            .max_attempts(3)
            .no_budget()
            .build()
            .unwrap()
    }

    /// A generated client over a hedged `Channel`: the first call stalls
    /// on the server, the hedge sent after 50 ms (the same body, replayed
    /// beside the running attempt) answers. Real time: see
    /// `tests/hedge.rs`'s real-peer tests for why.
    #[tokio::test]
    async fn a_stalled_call_is_answered_by_its_hedge_with_the_same_body() {
        let server = TestServer::start().await;
        let channel = server.channel().await;
        let mut client = HealthClient::new(
            ServiceBuilder::new()
                .layer(hedge(Duration::from_millis(50)))
                .service(channel),
        );
        server.stall_next(1);
        let reply = client.check(check()).await.unwrap().into_inner();
        assert_eq!(
            reply.status,
            tonic_health::pb::health_check_response::ServingStatus::Serving as i32
        );
        let calls = server.calls();
        assert_eq!(calls.len(), 2);
        assert_eq!(calls[0].1, calls[1].1, "the same request, twice");
    }

    /// UNAVAILABLE is non-fatal (A6's `nonFatalStatusCodes`, the classifier's
    /// retryable codes): the next attempt goes at once, long before the
    /// delay; its pushback moves it; INTERNAL is fatal and ends the call.
    #[tokio::test(start_paused = true)]
    async fn unavailable_sends_the_next_at_once_after_its_pushback_and_internal_ends_the_call() {
        let server = TestServer::start().await;
        let channel = server.channel().await;
        let mut client = HealthClient::new(
            ServiceBuilder::new()
                .layer(hedge(Duration::from_secs(3600)))
                .service(channel),
        );
        server.fail_next(1, None);
        let started = Instant::now();
        client.check(check()).await.unwrap();
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "not the hour's delay"
        );
        assert_eq!(server.calls().len(), 2);

        server.fail_next(1, Some("300"));
        client.check(check()).await.unwrap();
        let calls = server.calls();
        assert_eq!(calls.len(), 4);
        assert!(
            calls[3].0 - calls[2].0 >= Duration::from_millis(300),
            "the pushback was honoured"
        );

        server.fail_next_with(3, "13");
        let status = client.check(check()).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::Internal);
        assert_eq!(
            server.calls().len(),
            5,
            "INTERNAL is fatal: no further attempt"
        );
    }
}

/// Stacks from a configuration document (issue 18) over a `Channel`, with
/// tonic's generated client: the breaker, the throttle and the adaptive
/// limit read the status at the end of the body, so their responses'
/// bodies are joined (`config::JoinedBodies`).
mod from_a_document {
    use super::*;
    use palisade::circuit_breaker::CircuitState;
    use palisade::config::{Config, Document};
    use palisade::respond::GrpcRejectionLayer;
    use tower::ServiceBuilder;

    fn config() -> Config {
        let document: Document = toml::from_str(
            r#"
            [instances.inventory]
            retry = { max_attempts = 3, no_budget = true, backoff = { kind = "constant", delay = "10ms", jitter = "none" } }
            circuit_breaker = { count_window = 10, minimum_calls = 10 }
            adaptive_limit = { per_sample = true }
            attempt_timeout = "5s"

            [instances.search]
            throttle = { min_answered = 1000 }
            bulkhead = { max_concurrent = 4 }
            "#,
        )
        .unwrap();
        Config::new(document).unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn a_document_stack_retries_unavailable_and_judges_by_the_status() {
        let server = TestServer::start().await;
        let config = config();
        let stack = config.grpc_stack("inventory").unwrap();
        let breaker = stack.parts().circuit_breaker().first().unwrap().handle();
        let mut client = HealthClient::new(
            ServiceBuilder::new()
                .layer(GrpcRejectionLayer::new())
                .layer(stack.clone())
                .service(server.channel().await),
        );

        server.fail_next(1, None);
        let reply = client.check(check()).await.unwrap().into_inner();
        assert_eq!(
            reply.status,
            tonic_health::pb::health_check_response::ServingStatus::Serving as i32
        );
        let calls = server.calls();
        assert_eq!(calls.len(), 2, "UNAVAILABLE, then the answer");
        assert_eq!(calls[0].1, calls[1].1, "the same request, replayed");
        let metrics = breaker.metrics();
        assert_eq!(
            (metrics.calls, metrics.failures),
            (2, 1),
            "each attempt judged"
        );

        // Forced open, the breaker's refusal reaches the generated client
        // as UNAVAILABLE.
        breaker.force_open();
        let status = client.check(check()).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
        assert_eq!(
            palisade::error::ErrorKind::of_dyn(&status),
            palisade::error::ErrorKind::CircuitOpen
        );
        assert_eq!(breaker.state(), CircuitState::ForcedOpen);
        assert_eq!(server.calls().len(), 2, "nothing sent while open");
    }

    #[tokio::test(start_paused = true)]
    async fn a_document_stack_without_a_retry_sends_each_call_once() {
        let server = TestServer::start().await;
        let config = config();
        let stack = config.grpc_stack("search").unwrap();
        let throttle = stack.parts().circuit_breaker().second().unwrap().handle();
        let mut client = HealthClient::new(
            ServiceBuilder::new()
                .layer(GrpcRejectionLayer::new())
                .layer(stack)
                .service(server.channel().await),
        );
        client.check(check()).await.unwrap();
        server.fail_next(1, None);
        let status = client.check(check()).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::Unavailable);
        assert_eq!(server.calls().len(), 2, "no retry in this stack");
        assert_eq!(
            (throttle.requests(), throttle.accepts()),
            (2, 1),
            "the throttle read both statuses"
        );
    }
}
