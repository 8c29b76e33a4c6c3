//! The circuit breaker judges a gRPC answer whose status comes in the
//! trailers when its body ends, over a real HTTP/2 connection: a hyper
//! server sends the head, messages, then trailers, as gRPC servers do, and
//! hyper's client reads it as a plain `http` service.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream::{self, StreamExt};
use http::{HeaderMap, Request, Response};
use http_body::Frame;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, StreamBody};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use palisade::adaptive::{AdaptiveLimitLayer, LimitAlgorithm, Sample, ThrottleLayer};
use palisade::circuit_breaker::{CircuitBreakerLayer, CircuitState};
use palisade::classify::{GrpcClassifier, Outcome};
use palisade::error::{BoxError, ErrorKind};
use tokio::net::TcpListener;
use tower::{Layer, ServiceExt};

const MS: Duration = Duration::from_millis(1);

/// How the server ends each answer.
#[derive(Debug, Clone, Copy)]
enum End {
    /// Trailers with this `grpc-status`.
    Status(&'static str),
    /// No trailers at all.
    NoTrailers,
    /// The body never ends.
    Never,
}

/// An HTTP/2 server whose path says how to end: `/ok`, `/unavailable`,
/// `/no-trailers`, `/never`, `/slow-ok` (messages 1 s apart).
async fn grpc_like_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((conn, _)) = listener.accept().await {
            conn.set_nodelay(true).unwrap();
            let service =
                hyper::service::service_fn(|req: Request<hyper::body::Incoming>| async move {
                    let (end, gap) = match req.uri().path() {
                        "/ok" => (End::Status("0"), Duration::ZERO),
                        "/slow-ok" => (End::Status("0"), Duration::from_secs(1)),
                        "/unavailable" => (End::Status("14"), Duration::ZERO),
                        "/no-status" => (End::Status(""), Duration::ZERO),
                        "/no-trailers" => (End::NoTrailers, Duration::ZERO),
                        _ => (End::Never, Duration::ZERO),
                    };
                    let messages = stream::iter(0..3).then(move |i| async move {
                        if !gap.is_zero() {
                            tokio::time::sleep(gap).await;
                        }
                        Ok::<_, Infallible>(Frame::data(Bytes::from(vec![0, 0, 0, 0, 1, i])))
                    });
                    let end = stream::once(async move {
                        match end {
                            End::Status(code) => {
                                let mut trailers = HeaderMap::new();
                                if !code.is_empty() {
                                    trailers.insert("grpc-status", code.parse().unwrap());
                                }
                                Some(Ok(Frame::trailers(trailers)))
                            }
                            End::NoTrailers => None,
                            End::Never => std::future::pending().await,
                        }
                    })
                    .filter_map(|f| async move { f });
                    let body = StreamBody::new(messages.chain(end));
                    Ok::<_, Infallible>(
                        Response::builder()
                            .header("content-type", "application/grpc")
                            .body(body)
                            .unwrap(),
                    )
                });
            tokio::spawn(
                hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(conn), service),
            );
        }
    });
    addr
}

type Body = BoxBody<Bytes, Infallible>;

fn client() -> Client<HttpConnector, Body> {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build(connector)
}

fn request(addr: SocketAddr, path: &str) -> Request<Body> {
    Request::post(format!("http://{addr}{path}"))
        .header("content-type", "application/grpc")
        .body(Empty::new().boxed())
        .unwrap()
}

fn breaker(classifier: GrpcClassifier) -> CircuitBreakerLayer<GrpcClassifier> {
    CircuitBreakerLayer::builder()
        .classifier(classifier)
        .count_window(100)
        .minimum_calls(100)
        .build()
        .unwrap()
}

/// Was: a stream ending with UNAVAILABLE in its trailers counted as a
/// success, decided at the head.
#[tokio::test(start_paused = true)]
async fn a_status_in_the_trailers_is_judged_at_the_end() {
    let addr = grpc_like_server().await;
    let layer = breaker(GrpcClassifier::new());
    let handle = layer.handle();
    let svc = layer.layer(client());

    for (path, failures) in [
        ("/unavailable", 1),
        ("/ok", 1),
        ("/no-trailers", 2), // ended without a status: Unknown
        ("/no-status", 3),   // trailers without grpc-status: Unknown
    ] {
        let calls = handle.metrics().calls;
        let res = svc.clone().oneshot(request(addr, path)).await.unwrap();
        // The head is in; the outcome is not known yet.
        assert_eq!(handle.metrics().calls, calls, "{path}");
        let body = res.into_body().collect().await.unwrap();
        assert_eq!(body.to_bytes().len(), 18, "{path}: every message arrived");
        let m = handle.metrics();
        assert_eq!(m.calls, calls + 1, "{path}");
        assert_eq!(m.failures, failures, "{path}");
    }
}

/// Ten streams that end UNAVAILABLE open a breaker that trips at 50%.
#[tokio::test(start_paused = true)]
async fn failing_streams_open_the_breaker() {
    let addr = grpc_like_server().await;
    let layer = CircuitBreakerLayer::builder()
        .classifier(GrpcClassifier::new())
        .count_window(10)
        .minimum_calls(10)
        .build()
        .unwrap();
    let handle = layer.handle();
    let svc = layer.layer(client());
    for _ in 0..10 {
        let res = svc
            .clone()
            .oneshot(request(addr, "/unavailable"))
            .await
            .unwrap();
        res.into_body().collect().await.unwrap();
    }
    assert_eq!(handle.state(), CircuitState::Open);
    let err = svc.oneshot(request(addr, "/ok")).await.unwrap_err();
    assert_eq!(ErrorKind::of(&err), ErrorKind::CircuitOpen);
}

/// A body the caller drops before its status counts neither way, unless
/// the classifier says otherwise.
#[tokio::test(start_paused = true)]
async fn a_dropped_stream_is_ignored_by_default() {
    let addr = grpc_like_server().await;
    for (classifier, failures) in [
        (GrpcClassifier::new(), 0),
        (GrpcClassifier::new().when_dropped(Outcome::Failure), 1),
    ] {
        let layer = breaker(classifier);
        let handle = layer.handle();
        let svc = layer.layer(client());
        let res = svc.oneshot(request(addr, "/never")).await.unwrap();
        let mut body = res.into_body();
        body.frame().await.unwrap().unwrap();
        drop(body);
        let m = handle.metrics();
        assert_eq!((m.calls, m.failures), (failures, failures));
    }
}

/// The slow-call timing stops at the response head: a stream that takes
/// 3 s to deliver its messages is not a slow call.
#[tokio::test(start_paused = true)]
async fn a_long_stream_is_not_a_slow_call() {
    let addr = grpc_like_server().await;
    let layer = CircuitBreakerLayer::builder()
        .classifier(GrpcClassifier::new())
        .count_window(100)
        .minimum_calls(100)
        .slow_call_duration(500 * MS)
        .build()
        .unwrap();
    let handle = layer.handle();
    let svc = layer.layer(client());
    let res = svc.oneshot(request(addr, "/slow-ok")).await.unwrap();
    res.into_body().collect().await.unwrap();
    let m = handle.metrics();
    assert_eq!((m.calls, m.failures, m.slow_calls), (1, 0, 0));
}

/// A probe that is a stream which never ends holds the half-open breaker
/// only until `max_half_open_duration`; then it opens again, and the next
/// half-open stay probes afresh.
#[tokio::test(start_paused = true)]
async fn a_streaming_probe_cannot_hold_the_breaker_half_open() {
    let addr = grpc_like_server().await;
    let layer = CircuitBreakerLayer::builder()
        .classifier(GrpcClassifier::new())
        .count_window(2)
        .minimum_calls(2)
        .wait_duration(Duration::from_secs(1))
        .half_open_calls(1)
        .max_half_open_duration(Duration::from_secs(10))
        .build()
        .unwrap();
    let handle = layer.handle();
    let svc = layer.layer(client());
    for _ in 0..2 {
        let res = svc
            .clone()
            .oneshot(request(addr, "/unavailable"))
            .await
            .unwrap();
        res.into_body().collect().await.unwrap();
    }
    assert_eq!(handle.state(), CircuitState::Open);
    tokio::time::advance(Duration::from_secs(1)).await;

    // The probe: a stream the caller keeps reading.
    let probe = svc.clone().oneshot(request(addr, "/never")).await.unwrap();
    assert_eq!(handle.state(), CircuitState::HalfOpen);
    assert_eq!(handle.metrics().probes_in_flight, 1);
    let refused = |r: Result<_, BoxError>| ErrorKind::of(&r.unwrap_err()) == ErrorKind::CircuitOpen;
    assert!(refused(svc.clone().oneshot(request(addr, "/ok")).await));

    tokio::time::advance(Duration::from_secs(10)).await;
    // Past the limit: the next call opens the breaker again...
    assert!(refused(svc.clone().oneshot(request(addr, "/ok")).await));
    assert_eq!(handle.state(), CircuitState::Open);
    // ...and after the wait a new probe goes through and closes it.
    tokio::time::advance(Duration::from_secs(1)).await;
    let res = svc.clone().oneshot(request(addr, "/ok")).await.unwrap();
    res.into_body().collect().await.unwrap();
    assert_eq!(handle.state(), CircuitState::Closed);
    // The old probe ends later: it belongs to an earlier stay and changes
    // nothing.
    drop(probe);
    assert_eq!(handle.state(), CircuitState::Closed);
}

/// A 200 head without `grpc-status` whose body has already ended (HEADERS
/// with END_STREAM): no trailers can come, and a client never polls such a
/// body, so the call is judged at once: Unknown, a failure.
#[tokio::test(start_paused = true)]
async fn a_body_ended_at_the_head_without_a_status_is_judged_at_once() {
    let layer = breaker(GrpcClassifier::new());
    let handle = layer.handle();
    let svc = layer.layer(tower::service_fn(|_: ()| async {
        Ok::<_, BoxError>(
            Response::builder()
                .header("content-type", "application/grpc")
                .body(Empty::<Bytes>::new())
                .unwrap(),
        )
    }));
    let res = svc.oneshot(()).await.unwrap();
    let m = handle.metrics();
    assert_eq!((m.calls, m.failures), (1, 1));
    drop(res);
    assert_eq!(handle.metrics().calls, 1, "counted once");
}

/// An algorithm that records what it is taught.
#[derive(Debug, Clone, Default)]
struct Recording(std::sync::Arc<std::sync::Mutex<Vec<Sample>>>);

impl LimitAlgorithm for Recording {
    fn initial_limit(&self) -> u32 {
        4
    }
    fn update(&mut self, sample: &Sample) -> u32 {
        self.0.lock().unwrap().push(*sample);
        4
    }
}

/// The adaptive limit holds a gRPC stream's permit until its status comes
/// in the trailers, and learns the failure from them; a stream dropped
/// before its status is no sample.
#[tokio::test(start_paused = true)]
async fn an_adaptive_limit_learns_a_streams_status_from_its_trailers() {
    let addr = grpc_like_server().await;
    let algorithm = Recording::default();
    let layer = AdaptiveLimitLayer::builder()
        .algorithm(algorithm.clone())
        .classifier(GrpcClassifier::new())
        .per_sample()
        .build()
        .unwrap();
    let handle = layer.handle();
    let svc = layer.layer(client());

    let res = svc
        .clone()
        .oneshot(request(addr, "/slow-ok"))
        .await
        .unwrap();
    assert_eq!(
        handle.in_flight(),
        1,
        "the head is in; the body holds the permit"
    );
    assert!(algorithm.0.lock().unwrap().is_empty());
    res.into_body().collect().await.unwrap();
    assert_eq!(handle.in_flight(), 0);
    let res = svc
        .clone()
        .oneshot(request(addr, "/unavailable"))
        .await
        .unwrap();
    res.into_body().collect().await.unwrap();
    let never = svc.clone().oneshot(request(addr, "/never")).await.unwrap();
    drop(never);
    assert_eq!(
        handle.in_flight(),
        0,
        "the dropped stream gave its permit back"
    );

    let taught = algorithm.0.lock().unwrap().clone();
    assert_eq!(taught.len(), 2, "{taught:?}");
    assert!(!taught[0].dropped());
    assert!(
        taught[0].rtt() >= Duration::from_secs(3),
        "the RTT runs to the end of the stream: {taught:?}"
    );
    assert!(
        taught[1].dropped(),
        "UNAVAILABLE in the trailers: {taught:?}"
    );
}

/// The throttle counts an accept only when the trailers say OK: streams
/// ending UNAVAILABLE are requests without accepts.
#[tokio::test(start_paused = true)]
async fn a_throttle_reads_the_accept_from_the_trailers() {
    let addr = grpc_like_server().await;
    let layer = ThrottleLayer::builder()
        .classifier(GrpcClassifier::new())
        .build()
        .unwrap();
    let handle = layer.handle();
    let svc = layer.layer(client());
    for path in ["/ok", "/unavailable", "/ok", "/unavailable"] {
        let res = svc.clone().oneshot(request(addr, path)).await.unwrap();
        assert_eq!(handle.in_flight(), 1, "{path}: in flight until the status");
        res.into_body().collect().await.unwrap();
    }
    let never = svc.clone().oneshot(request(addr, "/never")).await.unwrap();
    drop(never);
    assert_eq!(
        (handle.requests(), handle.accepts(), handle.in_flight()),
        (4, 2, 0),
        "the dropped stream counts neither way"
    );
}
