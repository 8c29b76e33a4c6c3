//! gRPC outcomes judged on the wire: generated tonic-health clients over a
//! real `tonic::transport::Channel`, against servers on 127.0.0.1 (a tonic
//! server for streamed answers, a plain hyper HTTP/2 server for answers a
//! tonic server would not send: a status in the trailers after a message,
//! a proxy's 503, odd trailers-only statuses).
//!
//! What is checked (DESIGN.md §2, classification and end of stream):
//! - a 200 head without `grpc-status` is judged by the breaker when the
//!   trailers arrive, not at the head;
//! - the retry takes the head as the answer: a failure found in the trailers
//!   is counted by the breaker but never retried (gRPC A6);
//! - with no `grpc-status` at all, the HTTP status maps as gRPC says;
//! - a stream the caller drops counts neither way and gives a half-open
//!   probe permit back; a probe that stays out too long re-opens the breaker;
//! - a refused connection is retried whatever the request.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, StreamBody};
use hyper::body::Frame;
use palisade::backoff::{Backoff, Jitter};
use palisade::circuit_breaker::BreakerEvent;
use palisade::circuit_breaker::{
    CircuitBreakerHandle, CircuitBreakerLayer, CircuitState, TransitionReason,
};
use palisade::classify::{Classify, ClassifyRequest, DelayHint, GrpcClassifier, GrpcCode, Outcome};
use palisade::error::ErrorKind;
use palisade::event::Event;
use palisade::retry::{ReplayBodies, ReplayBody, RetryLayer};
use palisade::retry::{RetryEvent, RetryReason};
use tonic::body::Body;
use tonic::codegen::tokio_stream::{self, Stream, StreamExt};
use tonic::{Code, Status};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::health_server::{Health, HealthServer};
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};
use tower::ServiceBuilder;

// ---------------------------------------------------------------------------
// A tonic server whose handlers the tests script.
// ---------------------------------------------------------------------------

type WatchStream = Pin<Box<dyn Stream<Item = Result<HealthCheckResponse, Status>> + Send>>;

/// `check` answers SERVING, or UNAVAILABLE while `check_fails` is set.
/// `watch` picks its stream by the requested service name:
/// - `"going-away"`: 5 messages, then UNAVAILABLE "going away" in the trailers;
/// - `"five-ok"`: 5 messages, then OK;
/// - `"endless"`: 1 message, then nothing until the client goes away.
#[derive(Clone, Default)]
struct Scripted {
    check_fails: Arc<AtomicBool>,
    checks: Arc<AtomicUsize>,
    watches: Arc<AtomicUsize>,
}

fn serving() -> HealthCheckResponse {
    HealthCheckResponse {
        status: ServingStatus::Serving as i32,
    }
}

#[tonic::async_trait]
impl Health for Scripted {
    async fn check(
        &self,
        _request: tonic::Request<HealthCheckRequest>,
    ) -> Result<tonic::Response<HealthCheckResponse>, Status> {
        self.checks.fetch_add(1, SeqCst);
        if self.check_fails.load(SeqCst) {
            Err(Status::unavailable("check failed"))
        } else {
            Ok(tonic::Response::new(serving()))
        }
    }

    type WatchStream = WatchStream;

    async fn watch(
        &self,
        request: tonic::Request<HealthCheckRequest>,
    ) -> Result<tonic::Response<WatchStream>, Status> {
        self.watches.fetch_add(1, SeqCst);
        let stream: WatchStream = match request.get_ref().service.as_str() {
            "going-away" => Box::pin(
                tokio_stream::iter((0..5).map(|_| Ok(serving())))
                    .chain(tokio_stream::once(Err(Status::unavailable("going away")))),
            ),
            "five-ok" => Box::pin(tokio_stream::iter((0..5).map(|_| Ok(serving())))),
            "endless" => Box::pin(tokio_stream::once(Ok(serving())).chain(tokio_stream::pending())),
            other => return Err(Status::not_found(other.to_owned())),
        };
        Ok(tonic::Response::new(stream))
    }
}

async fn start_tonic(health: Scripted) -> SocketAddr {
    let incoming =
        tonic::transport::server::TcpIncoming::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = incoming.local_addr().unwrap();
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(HealthServer::new(health))
            .serve_with_incoming(incoming)
            .await
            .unwrap();
    });
    addr
}

// ---------------------------------------------------------------------------
// A plain hyper HTTP/2 server, for answers tonic's server would not give.
// ---------------------------------------------------------------------------

type HyperBody = BoxBody<Bytes, Infallible>;

/// Serves every request with `answer()` and counts the requests.
async fn start_hyper(
    answer: impl Fn() -> http::Response<HyperBody> + Send + Sync + 'static,
) -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(AtomicUsize::new(0));
    let answer = Arc::new(answer);
    let counter = seen.clone();
    tokio::spawn(async move {
        loop {
            let (io, _) = listener.accept().await.unwrap();
            let answer = answer.clone();
            let counter = counter.clone();
            let service =
                hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let answer = answer.clone();
                    let counter = counter.clone();
                    async move {
                        // Read the request as a server does before answering.
                        let _ = req.into_body().collect().await;
                        counter.fetch_add(1, SeqCst);
                        Ok::<_, Infallible>(answer())
                    }
                });
            tokio::spawn(async move {
                let _ =
                    hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                        .serve_connection(hyper_util::rt::TokioIo::new(io), service)
                        .await;
            });
        }
    });
    (addr, seen)
}

/// A gRPC message frame holding `HealthCheckResponse { status: SERVING }`:
/// not compressed, 2 bytes long, field 1 (varint) = 1.
fn serving_frame() -> Bytes {
    Bytes::from_static(&[0, 0, 0, 0, 2, 0x08, 0x01])
}

/// A 200 head with initial metadata, one message, then trailers with
/// `grpc-status: status`.
fn message_then_trailers(status: &'static str) -> http::Response<HyperBody> {
    let mut trailers = http::HeaderMap::new();
    trailers.insert("grpc-status", http::HeaderValue::from_static(status));
    trailers.insert("grpc-message", http::HeaderValue::from_static("boom"));
    let frames: Vec<Result<Frame<Bytes>, Infallible>> = vec![
        Ok(Frame::data(serving_frame())),
        Ok(Frame::trailers(trailers)),
    ];
    http::Response::builder()
        .status(200)
        .header("content-type", "application/grpc")
        .header("x-initial-metadata", "sent first")
        .body(BoxBody::new(StreamBody::new(tokio_stream::iter(frames))))
        .unwrap()
}

/// A trailers-only answer: the status in the head, no body.
fn trailers_only(status: &'static str) -> http::Response<HyperBody> {
    http::Response::builder()
        .status(200)
        .header("content-type", "application/grpc")
        .header("grpc-status", status)
        .body(BoxBody::new(Empty::new()))
        .unwrap()
}

/// What a proxy in front of the server answers: an HTTP error, no gRPC.
fn proxy_error(status: u16, body: &'static str) -> http::Response<HyperBody> {
    http::Response::builder()
        .status(status)
        .header("content-type", "text/plain")
        .body(BoxBody::new(http_body_util::Full::new(Bytes::from_static(
            body.as_bytes(),
        ))))
        .unwrap()
}

// ---------------------------------------------------------------------------
// Client side.
// ---------------------------------------------------------------------------

async fn channel(addr: SocketAddr) -> tonic::transport::Channel {
    tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap()
}

/// A breaker that only counts: it cannot trip within these tests.
fn counting_breaker() -> CircuitBreakerLayer<GrpcClassifier> {
    CircuitBreakerLayer::builder()
        .name("wire")
        .classifier(GrpcClassifier::new())
        .count_window(100)
        .minimum_calls(100)
        .build()
        .unwrap()
}

/// A breaker that opens on one failure, waits `wait`, then lets one probe
/// through; transitions are recorded in `log`.
fn one_probe_breaker(
    wait: Duration,
    max_half_open: Duration,
    log: Arc<Mutex<Vec<(CircuitState, CircuitState, TransitionReason)>>>,
) -> CircuitBreakerLayer<GrpcClassifier> {
    CircuitBreakerLayer::builder()
        .name("probe")
        .classifier(GrpcClassifier::new())
        .count_window(1)
        .minimum_calls(1)
        .failure_rate_threshold(0.5)
        .wait_duration(wait)
        .half_open_calls(1)
        .max_half_open_duration(max_half_open)
        .on_event(move |event: &Event<'_>| {
            if let Some(BreakerEvent::StateTransition {
                from, to, reason, ..
            }) = event.kind()
            {
                log.lock().unwrap().push((*from, *to, *reason));
            }
        })
        .build()
        .unwrap()
}

/// Records every retry the retry layer decides on, and every attempt.
#[derive(Clone, Default)]
struct RetryLog {
    attempts: Arc<AtomicUsize>,
    retries: Arc<Mutex<Vec<RetryReason>>>,
}

impl RetryLog {
    fn listener(&self) -> impl Fn(&Event<'_>) + Send + Sync + 'static {
        let log = self.clone();
        move |event: &Event<'_>| match event.kind() {
            Some(RetryEvent::Attempt { .. }) => {
                log.attempts.fetch_add(1, SeqCst);
            }
            Some(RetryEvent::Retry { reason, .. }) => log.retries.lock().unwrap().push(*reason),
            _ => {}
        }
    }
}

fn retry_with<C>(classifier: C, log: &RetryLog) -> RetryLayer<C, Backoff, ReplayBodies> {
    RetryLayer::builder()
        .classifier(classifier)
        .requests(ReplayBodies::default())
        .max_attempts(3)
        .backoff(
            Backoff::constant(Duration::from_millis(10))
                .jitter(Jitter::None)
                .build()
                .unwrap(),
        )
        .no_budget()
        .on_event(log.listener())
        .build()
        .unwrap()
}

/// The Channel takes tonic bodies; the retry hands it replayable ones.
fn to_tonic_body(req: http::Request<ReplayBody<Body>>) -> http::Request<Body> {
    req.map(Body::new)
}

fn request(service: &str) -> HealthCheckRequest {
    HealthCheckRequest {
        service: service.into(),
    }
}

fn calls_and_failures(handle: &CircuitBreakerHandle) -> (u64, u64) {
    let m = handle.metrics();
    (m.calls, m.failures)
}

// ---------------------------------------------------------------------------
// 1. A server stream that ends with an error in its trailers.
// ---------------------------------------------------------------------------

/// Guards: the breaker judges a 200-without-`grpc-status` answer from the
/// trailers at the end of the stream. Judged at the head (the old bug) every
/// one of these streams is a success: 0 failures.
#[tokio::test(start_paused = true)]
async fn a_stream_ending_in_unavailable_is_a_failure_for_the_breaker() {
    let server = Scripted::default();
    let addr = start_tonic(server.clone()).await;
    let breaker = counting_breaker();
    let handle = breaker.handle();
    let mut client = HealthClient::new(
        ServiceBuilder::new()
            .layer(breaker)
            .service(channel(addr).await),
    );

    for call in 0..10 {
        let mut stream = client
            .watch(request("going-away"))
            .await
            .expect("the head is a success")
            .into_inner();
        for n in 0..5 {
            let message = stream.message().await;
            assert_eq!(
                message.as_ref().map(|m| m.is_some()).ok(),
                Some(true),
                "call {call}, message {n}: {message:?}"
            );
        }
        let status = stream
            .message()
            .await
            .expect_err("the stream ends in an error");
        assert_eq!(status.code(), Code::Unavailable);
        assert_eq!(status.message(), "going away");
    }
    assert_eq!(server.watches.load(SeqCst), 10);
    assert_eq!(
        calls_and_failures(&handle),
        (10, 10),
        "each stream's trailers said UNAVAILABLE"
    );

    // The end of stream tells success too: a stream that ends with OK is not
    // a failure (guards against "no grpc-status in the head = failure").
    let mut stream = client.watch(request("five-ok")).await.unwrap().into_inner();
    let mut messages = 0;
    while let Some(_message) = stream.message().await.unwrap() {
        messages += 1;
        assert!(messages <= 5);
    }
    assert_eq!(messages, 5);
    assert_eq!(calls_and_failures(&handle), (11, 10));
}

// ---------------------------------------------------------------------------
// 2. A unary answer: initial metadata, a message, then INTERNAL in trailers.
// ---------------------------------------------------------------------------

/// Guards: (a) the breaker reads the status from the trailers of a unary
/// answer whose server sent initial metadata first (judged at the head it
/// would be a success); (b) the retry does not retry it, even though its
/// classifier lists INTERNAL as retryable: the head reached the caller, so
/// the call is committed (gRPC A6). A retry that looked past the head would
/// make the server see 3 requests.
#[tokio::test(start_paused = true)]
async fn internal_in_trailers_after_a_message_is_counted_but_not_retried() {
    let (addr, seen) = start_hyper(|| message_then_trailers("13")).await;
    let breaker = counting_breaker();
    let handle = breaker.handle();
    let log = RetryLog::default();
    let stack = ServiceBuilder::new()
        .layer(retry_with(
            GrpcClassifier::new().retryable_code(GrpcCode::Internal),
            &log,
        ))
        .map_request(to_tonic_body)
        .layer(breaker)
        .service(channel(addr).await);
    let mut client = HealthClient::new(stack);

    let status = client.check(request("inventory")).await.unwrap_err();
    assert_eq!(status.code(), Code::Internal, "{status:?}");
    assert_eq!(status.message(), "boom");
    assert_eq!(
        calls_and_failures(&handle),
        (1, 1),
        "the breaker counted it"
    );
    assert_eq!(seen.load(SeqCst), 1, "not retried");
    assert_eq!(log.attempts.load(SeqCst), 1);
    assert!(log.retries.lock().unwrap().is_empty());

    // The same answer with OK in the trailers: a success, and the message
    // reached the caller (guards against judging every such body a failure).
    let (addr, seen) = start_hyper(|| message_then_trailers("0")).await;
    let breaker = counting_breaker();
    let handle = breaker.handle();
    let mut client = HealthClient::new(
        ServiceBuilder::new()
            .layer(retry_with(GrpcClassifier::new(), &RetryLog::default()))
            .map_request(to_tonic_body)
            .layer(breaker)
            .service(channel(addr).await),
    );
    let reply = client.check(request("inventory")).await.unwrap();
    assert_eq!(reply.get_ref().status, ServingStatus::Serving as i32);
    assert_eq!(
        reply.metadata().get("x-initial-metadata").unwrap(),
        "sent first"
    );
    assert_eq!(calls_and_failures(&handle), (1, 0));
    assert_eq!(seen.load(SeqCst), 1);
}

// ---------------------------------------------------------------------------
// 3. A proxy's 503 with no gRPC status at all.
// ---------------------------------------------------------------------------

/// Guards: with no `grpc-status`, the HTTP status maps as gRPC's "HTTP to
/// gRPC Status Code Mapping" says: 503 (and 502) is UNAVAILABLE, a failure
/// for the breaker and retried. Read as "no status = OK" it would be neither.
#[tokio::test(start_paused = true)]
async fn a_proxy_503_without_grpc_status_is_a_retried_failure() {
    // An empty body: tonic then reports the mapped code itself.
    let (addr, seen) = start_hyper(|| proxy_error(503, "")).await;
    let breaker = counting_breaker();
    let handle = breaker.handle();
    let log = RetryLog::default();
    let mut client = HealthClient::new(
        ServiceBuilder::new()
            .layer(retry_with(GrpcClassifier::new(), &log))
            .map_request(to_tonic_body)
            .layer(breaker)
            .service(channel(addr).await),
    );
    let status = client.check(request("inventory")).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert_eq!(seen.load(SeqCst), 3, "retried up to max_attempts");
    assert_eq!(
        calls_and_failures(&handle),
        (3, 3),
        "every attempt a failure"
    );
    assert_eq!(
        *log.retries.lock().unwrap(),
        vec![RetryReason::Failure, RetryReason::Failure]
    );

    // A proxy's error page with a body (tonic cannot decode it, and says
    // so); palisade judges it from the head all the same.
    let (addr, seen) = start_hyper(|| proxy_error(502, "upstream connect error")).await;
    let breaker = counting_breaker();
    let handle = breaker.handle();
    let mut client = HealthClient::new(
        ServiceBuilder::new()
            .layer(retry_with(GrpcClassifier::new(), &RetryLog::default()))
            .map_request(to_tonic_body)
            .layer(breaker)
            .service(channel(addr).await),
    );
    let status = client.check(request("inventory")).await.unwrap_err();
    assert_ne!(status.code(), Code::Ok);
    assert_eq!(seen.load(SeqCst), 3);
    assert_eq!(calls_and_failures(&handle), (3, 3));
}

// ---------------------------------------------------------------------------
// 4. Trailers-only UNKNOWN, DATA_LOSS and garbage.
// ---------------------------------------------------------------------------

/// Guards: UNKNOWN (2), DATA_LOSS (15) and an unreadable `grpc-status` are
/// failures for the breaker, and not retried by default (only UNAVAILABLE
/// is). An unreadable status read as OK, or these codes retried, fails it.
#[tokio::test(start_paused = true)]
async fn trailers_only_unknown_data_loss_and_garbage_are_failures_not_retried() {
    for (value, code) in [
        ("2", Code::Unknown),
        ("15", Code::DataLoss),
        ("abc", Code::Unknown),
    ] {
        let (addr, seen) = start_hyper(move || trailers_only(value)).await;
        let breaker = counting_breaker();
        let handle = breaker.handle();
        let log = RetryLog::default();
        let mut client = HealthClient::new(
            ServiceBuilder::new()
                .layer(retry_with(GrpcClassifier::new(), &log))
                .map_request(to_tonic_body)
                .layer(breaker)
                .service(channel(addr).await),
        );
        let status = client.check(request("inventory")).await.unwrap_err();
        assert_eq!(status.code(), code, "grpc-status {value}: {status:?}");
        assert_eq!(
            calls_and_failures(&handle),
            (1, 1),
            "grpc-status {value} is a failure"
        );
        assert_eq!(seen.load(SeqCst), 1, "grpc-status {value} not retried");
        assert!(
            log.retries.lock().unwrap().is_empty(),
            "grpc-status {value}"
        );
    }
}

// ---------------------------------------------------------------------------
// 5. A stream the caller drops.
// ---------------------------------------------------------------------------

/// Guards: a stream the caller drops before its end counts neither way
/// (Ignored; judged at the head it would count as a success); and a dropped
/// half-open probe gives its permit back, so the next call probes (without
/// that, the breaker would refuse every call while half-open).
#[tokio::test(start_paused = true)]
async fn a_dropped_stream_counts_nothing_and_frees_its_probe_permit() {
    let server = Scripted::default();
    let addr = start_tonic(server.clone()).await;
    let conn = channel(addr).await;

    // Closed: nothing is counted for a dropped stream.
    let breaker = counting_breaker();
    let handle = breaker.handle();
    let mut client = HealthClient::new(ServiceBuilder::new().layer(breaker).service(conn.clone()));
    let mut stream = client.watch(request("endless")).await.unwrap().into_inner();
    assert!(stream.message().await.unwrap().is_some());
    assert_eq!(handle.metrics().calls, 0, "still open: not judged yet");
    drop(stream);
    let m = handle.metrics();
    assert_eq!((m.calls, m.failures), (0, 0), "dropped: Ignored");

    // Half-open with one probe.
    let log = Arc::new(Mutex::new(Vec::new()));
    let breaker = one_probe_breaker(Duration::from_secs(10), Duration::from_secs(60), log);
    let handle = breaker.handle();
    let mut client = HealthClient::new(ServiceBuilder::new().layer(breaker).service(conn));
    server.check_fails.store(true, SeqCst);
    let status = client.check(request("inventory")).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable);
    assert_eq!(handle.state(), CircuitState::Open);
    server.check_fails.store(false, SeqCst);
    tokio::time::sleep(Duration::from_secs(10)).await;

    let mut probe = client.watch(request("endless")).await.unwrap().into_inner();
    assert!(probe.message().await.unwrap().is_some());
    assert_eq!(handle.state(), CircuitState::HalfOpen);
    assert_eq!(handle.metrics().probes_in_flight, 1);
    // The one permit is taken: another call is refused.
    let status = client.check(request("inventory")).await.unwrap_err();
    assert_eq!(
        ErrorKind::of_dyn(&status),
        ErrorKind::CircuitOpen,
        "{status:?}"
    );
    let checks = server.checks.load(SeqCst);

    drop(probe);
    let m = handle.metrics();
    assert_eq!(
        m.probes_in_flight, 0,
        "the dropped probe gave its permit back"
    );
    assert_eq!(m.state, CircuitState::HalfOpen, "and decided nothing");
    // The next call is admitted as the probe, succeeds, and closes the breaker.
    let reply = client.check(request("inventory")).await;
    assert!(reply.is_ok(), "{reply:?}");
    assert_eq!(server.checks.load(SeqCst), checks + 1);
    assert_eq!(handle.state(), CircuitState::Closed);
}

// ---------------------------------------------------------------------------
// 6. A probe that is a long-lived stream.
// ---------------------------------------------------------------------------

/// Guards: a half-open breaker whose only probe is a stream the client keeps
/// open refuses other calls, but only until `max_half_open_duration`; then it
/// opens again (HalfOpenTimeout) and after `wait_duration` admits a new
/// probe. Without the bound, the breaker stays half-open as long as the
/// stream lives, refusing every call.
#[tokio::test(start_paused = true)]
async fn a_long_lived_probe_stream_cannot_hold_the_breaker_half_open() {
    let server = Scripted::default();
    let addr = start_tonic(server.clone()).await;
    let log = Arc::new(Mutex::new(Vec::new()));
    let wait = Duration::from_secs(10);
    let max_half_open = Duration::from_secs(30);
    let breaker = one_probe_breaker(wait, max_half_open, log.clone());
    let handle = breaker.handle();
    let mut client = HealthClient::new(
        ServiceBuilder::new()
            .layer(breaker)
            .service(channel(addr).await),
    );

    server.check_fails.store(true, SeqCst);
    let status = client.check(request("inventory")).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable);
    assert_eq!(handle.state(), CircuitState::Open);
    server.check_fails.store(false, SeqCst);
    tokio::time::sleep(wait).await;

    // The probe: a stream kept open.
    let mut probe = client.watch(request("endless")).await.unwrap().into_inner();
    assert!(probe.message().await.unwrap().is_some());
    assert_eq!(handle.state(), CircuitState::HalfOpen);
    let checks = server.checks.load(SeqCst);

    // Within the half-open limit, every other call is refused.
    for _ in 0..3 {
        let status = client.check(request("inventory")).await.unwrap_err();
        assert_eq!(
            ErrorKind::of_dyn(&status),
            ErrorKind::CircuitOpen,
            "{status:?}"
        );
        assert_eq!(handle.state(), CircuitState::HalfOpen);
        tokio::time::sleep(Duration::from_secs(9)).await;
    }
    assert_eq!(server.checks.load(SeqCst), checks, "nothing got through");

    // Past the limit (27 s slept, 4 more): the next call finds the probe
    // outstayed it; the breaker opens again and refuses that call.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let status = client.check(request("inventory")).await.unwrap_err();
    assert_eq!(
        ErrorKind::of_dyn(&status),
        ErrorKind::CircuitOpen,
        "{status:?}"
    );
    assert_eq!(handle.state(), CircuitState::Open);
    assert!(
        log.lock().unwrap().contains(&(
            CircuitState::HalfOpen,
            CircuitState::Open,
            TransitionReason::HalfOpenTimeout
        )),
        "{:?}",
        log.lock().unwrap()
    );
    assert_eq!(server.checks.load(SeqCst), checks);

    // After the wait, a new probe is admitted (the old stream is still
    // open), succeeds, and closes the breaker.
    tokio::time::sleep(wait).await;
    let reply = client.check(request("inventory")).await;
    assert!(reply.is_ok(), "{reply:?}");
    assert_eq!(server.checks.load(SeqCst), checks + 1);
    assert_eq!(handle.state(), CircuitState::Closed);
    // Dropping the old probe, from an earlier generation, changes nothing.
    drop(probe);
    assert_eq!(handle.state(), CircuitState::Closed);
}

// ---------------------------------------------------------------------------
// 7. A refused connection.
// ---------------------------------------------------------------------------

/// The gRPC classifier, for a method the user says must not run twice.
#[derive(Clone, Copy)]
struct NotIdempotent(GrpcClassifier);

impl<Req> ClassifyRequest<Req> for NotIdempotent {
    fn is_retryable(&self, _req: &Req) -> bool {
        false
    }
}

impl<Res, E> Classify<Res, E> for NotIdempotent
where
    GrpcClassifier: Classify<Res, E>,
{
    fn classify(&self, result: &Result<Res, E>) -> Outcome {
        self.0.classify(result)
    }
    fn delay_hint(&self, result: &Result<Res, E>) -> Option<DelayHint> {
        self.0.delay_hint(result)
    }
    fn is_retryable_failure(&self, result: &Result<Res, E>) -> bool {
        self.0.is_retryable_failure(result)
    }
    fn is_not_sent(&self, result: &Result<Res, E>) -> bool {
        self.0.is_not_sent(result)
    }
}

/// A port on 127.0.0.1 that nobody listens on.
fn refusing_addr() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap()
}

fn lazy_channel(addr: SocketAddr) -> tonic::transport::Channel {
    tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_lazy()
}

/// Guards: a refused connection is recognised as "never sent" through
/// tonic's transport error (retry reason NotSent) and retried even for a
/// request that may not be retried. Here the retry sits on the Channel
/// itself, as in tests/grpc_tonic.rs, so it sees tonic's own error type.
#[tokio::test(start_paused = true)]
async fn a_refused_connection_is_retried_whatever_the_request_directly_on_the_channel() {
    let log = RetryLog::default();
    let mut client = HealthClient::new(
        ServiceBuilder::new()
            .layer(retry_with(NotIdempotent(GrpcClassifier::new()), &log))
            .map_request(to_tonic_body)
            .service(lazy_channel(refusing_addr())),
    );
    let status = client.check(request("inventory")).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert_eq!(
        log.attempts.load(SeqCst),
        3,
        "{:?}",
        log.retries.lock().unwrap()
    );
    assert_eq!(
        *log.retries.lock().unwrap(),
        vec![RetryReason::NotSent, RetryReason::NotSent]
    );
}

/// Guards: the same with the breaker between retry and Channel (the error
/// then reaches the retry as a BoxError); the breaker counts each refused
/// attempt as a failure.
#[tokio::test(start_paused = true)]
async fn a_refused_connection_is_retried_whatever_the_request_through_the_breaker() {
    let log = RetryLog::default();
    let breaker = counting_breaker();
    let handle = breaker.handle();
    let mut client = HealthClient::new(
        ServiceBuilder::new()
            .layer(retry_with(NotIdempotent(GrpcClassifier::new()), &log))
            .map_request(to_tonic_body)
            .layer(breaker)
            .service(lazy_channel(refusing_addr())),
    );
    let status = client.check(request("inventory")).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert_eq!(
        log.attempts.load(SeqCst),
        3,
        "{:?}",
        log.retries.lock().unwrap()
    );
    assert_eq!(
        *log.retries.lock().unwrap(),
        vec![RetryReason::NotSent, RetryReason::NotSent]
    );
    assert_eq!(calls_and_failures(&handle), (3, 3));
}

// ---------------------------------------------------------------------------
// A stack from a configuration document (`Config::grpc_stack`).
// ---------------------------------------------------------------------------

/// Guards: a stack whose parts a document chose reads gRPC's status where
/// it is, as the preset's does: the breaker and the adaptive limit count a
/// stream that ends in UNAVAILABLE when its trailers arrive, the retry does
/// not send it again (its head arrived), and a reload that changes only
/// the breaker's thresholds keeps its counts.
#[tokio::test(start_paused = true)]
async fn a_stack_from_a_document_judges_a_stream_by_its_trailers() {
    use palisade::config::{Config, Document};
    let server = Scripted::default();
    let addr = start_tonic(server.clone()).await;
    let text = |threshold: &str| {
        format!(
            r#"[instances.watch]
            retry = {{ max_attempts = 3, no_budget = true }}
            circuit_breaker = {{ count_window = 20, minimum_calls = 20, failure_rate_threshold = {threshold} }}
            adaptive_limit = {{ per_sample = true }}"#
        )
    };
    let config = Config::new(toml::from_str::<Document>(&text("0.5")).unwrap()).unwrap();
    let stack = config.grpc_stack("watch").unwrap();
    let handle = stack.parts().circuit_breaker().first().unwrap().handle();
    let mut client = HealthClient::new(
        ServiceBuilder::new()
            .layer(stack)
            .service(channel(addr).await),
    );
    for _ in 0..3 {
        let mut stream = client
            .watch(request("going-away"))
            .await
            .unwrap()
            .into_inner();
        let mut messages = 0;
        let status = loop {
            match stream.message().await {
                Ok(Some(_)) => messages += 1,
                Ok(None) => panic!("the stream ends in an error"),
                Err(status) => break status,
            }
        };
        assert_eq!((messages, status.code()), (5, Code::Unavailable));
    }
    assert_eq!(
        server.watches.load(SeqCst),
        3,
        "committed at the head: no retry"
    );
    assert_eq!(calls_and_failures(&handle), (3, 3));

    let mut stream = client.watch(request("five-ok")).await.unwrap().into_inner();
    while stream.message().await.unwrap().is_some() {}
    assert_eq!(calls_and_failures(&handle), (4, 3));

    config
        .reload(toml::from_str::<Document>(&text("0.9")).unwrap())
        .unwrap();
    let mut stream = client.watch(request("five-ok")).await.unwrap().into_inner();
    while stream.message().await.unwrap().is_some() {}
    assert_eq!(
        calls_and_failures(&handle),
        (5, 3),
        "the same breaker, retuned, counting on"
    );
}
