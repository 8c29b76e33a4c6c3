//! The retry against real HTTP peers: hyper's client over HTTP/1.1 and
//! HTTP/2, reqwest, and a hyper server on 127.0.0.1, with request bodies as
//! these clients really send them. hyper never polls an empty body and
//! stops polling once `is_end_stream()` is true; a connection that fails
//! leaves the body unread. The assertions are on what the server saw.

#[path = "support/http_server.rs"]
mod http_server;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering::SeqCst};
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body::Frame;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full, StreamBody};
use http_server::{Reply, Server, closed_port};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use palisade::backoff::{Backoff, Jitter};
use palisade::classify::HttpClassifier;
use palisade::error::BoxError;
use palisade::retry::{ReplayBodies, ReplayBody, ReqwestRequests, RetryLayer};
use tower::{Layer, ServiceExt, service_fn};

const MS: Duration = Duration::from_millis(1);

/// The caller's body, whatever its shape.
type Caller = BoxBody<Bytes, BoxError>;
type HyperClient = Client<HttpConnector, ReplayBody<Caller>>;

fn hyper_client(http2: bool) -> HyperClient {
    let mut connector = HttpConnector::new();
    // Under paused time, Nagle's delay would hold a small write back while
    // the clock jumps ahead.
    connector.set_nodelay(true);
    Client::builder(TokioExecutor::new())
        .http2_only(http2)
        .build(connector)
}

fn retry<K>(requests: K) -> RetryLayer<HttpClassifier, Backoff, K> {
    RetryLayer::builder()
        .classifier(HttpClassifier::new())
        .requests(requests)
        .max_attempts(3)
        .backoff(
            Backoff::constant(10 * MS)
                .jitter(Jitter::None)
                .build()
                .unwrap(),
        )
        .no_budget()
        .build()
        .unwrap()
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Shape {
    Empty,
    OneChunk,
    Streamed,
    WithTrailers,
    OverLimit,
}

const LIMIT: usize = 64;

fn trailers() -> HeaderMap {
    let mut t = HeaderMap::new();
    t.insert("x-checksum", "abc123".parse().unwrap());
    t
}

/// A body of `shape` and the bytes it carries.
fn body(shape: Shape) -> (Caller, Vec<u8>) {
    let frames = |chunks: Vec<&'static str>, trailers: Option<HeaderMap>| {
        let mut frames: Vec<Result<Frame<Bytes>, BoxError>> = chunks
            .into_iter()
            .map(|c| Ok(Frame::data(Bytes::from_static(c.as_bytes()))))
            .collect();
        frames.extend(trailers.map(|t| Ok(Frame::trailers(t))));
        StreamBody::new(stream::iter(frames)).boxed()
    };
    match shape {
        Shape::Empty => (Empty::new().map_err(|e| match e {}).boxed(), vec![]),
        Shape::OneChunk => (
            Full::new(Bytes::from_static(b"hello"))
                .map_err(|e| match e {})
                .boxed(),
            b"hello".to_vec(),
        ),
        Shape::Streamed => (
            frames(vec!["stream", "ed ", "body"], None),
            b"streamed body".to_vec(),
        ),
        Shape::WithTrailers => (
            frames(vec!["with ", "trailers"], Some(trailers())),
            b"with trailers".to_vec(),
        ),
        Shape::OverLimit => {
            let chunk: &'static str = "0123456789012345678901234567890123456789";
            (
                frames(vec![chunk, chunk], None),
                [chunk, chunk].concat().into_bytes(),
            )
        }
    }
}

fn put(server: &Server, shape: Shape) -> (Request<Caller>, Vec<u8>) {
    let (body, bytes) = body(shape);
    let method = if shape == Shape::Empty {
        Method::GET
    } else {
        Method::PUT
    };
    let mut req = Request::builder().method(method).uri(server.url("/item"));
    if shape == Shape::WithTrailers {
        // HTTP/1.1 sends only the trailer fields the head announces.
        req = req.header("trailer", "x-checksum");
    }
    let req = req.body(body).unwrap();
    (req, bytes)
}

async fn each_body_shape_is_replayed(http2: bool) {
    for shape in [
        Shape::Empty,
        Shape::OneChunk,
        Shape::Streamed,
        Shape::WithTrailers,
        Shape::OverLimit,
    ] {
        let server = Server::start(vec![Reply::status(503)], Reply::status(200)).await;
        let svc = retry(ReplayBodies::with_limit(LIMIT)).layer(hyper_client(http2));
        let (req, bytes) = put(&server, shape);
        let res = svc.oneshot(req).await.unwrap();
        let seen = server.seen();
        if shape == Shape::OverLimit {
            // Over the limit: sent once, whole, and the 503 returned as is.
            assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE, "{shape:?}");
            assert_eq!(seen.len(), 1, "{shape:?}");
            assert_eq!(seen[0].body, bytes, "{shape:?}: never truncated");
            continue;
        }
        assert_eq!(res.status(), StatusCode::OK, "{shape:?}, http2 {http2}");
        assert_eq!(seen.len(), 2, "{shape:?}, http2 {http2}");
        for s in &seen {
            assert_eq!(s.body, bytes, "{shape:?}, http2 {http2}: byte for byte");
            let expected_version = if http2 {
                http::Version::HTTP_2
            } else {
                http::Version::HTTP_11
            };
            assert_eq!(s.version, expected_version);
            if shape == Shape::WithTrailers {
                assert_eq!(
                    s.trailers.as_ref(),
                    Some(&trailers()),
                    "{shape:?}, http2 {http2}"
                );
            }
        }
    }
}

/// Was: an empty GET and a PUT of "hello" ended as (503, 1 request)
/// because hyper never polled the body to its `None`.
#[tokio::test(start_paused = true)]
async fn hyper_http1_bodies_are_replayed() {
    each_body_shape_is_replayed(false).await;
}

#[tokio::test(start_paused = true)]
async fn hyper_http2_bodies_are_replayed() {
    each_body_shape_is_replayed(true).await;
}

/// An inner service that counts attempts and brings the server back just
/// before the second: a server restarting under the client.
fn restarting<S>(server: &Server, inner: S) -> (impl Fn() -> u32, impl Clone + Fn() -> S)
where
    S: Clone,
{
    let attempts = Arc::new(AtomicU32::new(0));
    let count = Arc::clone(&attempts);
    let server = server.clone();
    let make = move || {
        if attempts.fetch_add(1, SeqCst) == 1 {
            server.restart();
        }
        inner.clone()
    };
    (move || count.load(SeqCst), make)
}

/// Was: a request whose connection was refused gave up with
/// `NotReplayable` after one attempt, and a POST was never retried.
#[tokio::test(start_paused = true)]
async fn a_refused_connection_is_retried_for_every_method_hyper() {
    for http2 in [false, true] {
        let server = Server::start(vec![], Reply::status(201)).await;
        server.stop().await;
        let (attempts, make) = restarting(&server, hyper_client(http2));
        let inner = service_fn(move |req: Request<ReplayBody<Caller>>| make().oneshot(req));
        let svc = retry(ReplayBodies::default()).layer(inner);
        let (body, bytes) = body(Shape::Streamed);
        let req = Request::post(server.url("/orders")).body(body).unwrap();
        let res = svc.oneshot(req).await.unwrap();
        assert_eq!(res.status(), StatusCode::CREATED, "http2 {http2}");
        assert_eq!(attempts(), 2, "http2 {http2}");
        let seen = server.seen();
        assert_eq!(seen.len(), 1, "http2 {http2}: the POST ran once");
        assert_eq!(seen[0].body, bytes, "the unread body was sent whole");
    }
}

#[tokio::test(start_paused = true)]
async fn a_refused_connection_is_retried_for_every_method_reqwest() {
    let server = Server::start(vec![], Reply::status(201)).await;
    server.stop().await;
    let (attempts, make) = restarting(&server, reqwest::Client::new());
    let inner = service_fn(move |req: reqwest::Request| make().oneshot(req));
    let svc = retry(ReqwestRequests).layer(inner);
    let mut req = reqwest::Request::new(Method::POST, server.url("/orders").parse().unwrap());
    *req.body_mut() = Some("order".into());
    let res = svc.oneshot(req).await.unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
    assert_eq!(attempts(), 2);
    let seen = server.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].body, b"order");
}

/// With nothing listening at all, every attempt is made and the caller gets
/// the connection error.
#[tokio::test(start_paused = true)]
async fn a_closed_port_uses_every_attempt() {
    let addr = closed_port().await;
    let attempts = Arc::new(AtomicU32::new(0));
    let count = Arc::clone(&attempts);
    let client = hyper_client(false);
    let inner = service_fn(move |req: Request<ReplayBody<Caller>>| {
        count.fetch_add(1, SeqCst);
        client.clone().oneshot(req)
    });
    let svc = retry(ReplayBodies::default()).layer(inner);
    let req = Request::post(format!("http://{addr}/orders"))
        .body(body(Shape::OneChunk).0)
        .unwrap();
    let err = svc.oneshot(req).await.unwrap_err();
    assert!(palisade::classify::is_connect_error(&err), "{err}");
    assert_eq!(attempts.load(SeqCst), 3);
}

/// A server that resets after reading half the body: the PUT is sent again
/// from what was recorded plus the unread rest; the POST may have run, so
/// it is not.
#[tokio::test(start_paused = true)]
async fn a_reset_after_half_the_body() {
    for http2 in [false, true] {
        let server = Server::start(
            vec![Reply::status(200).reset_after_reading(6)],
            Reply::status(200),
        )
        .await;
        let svc = retry(ReplayBodies::default()).layer(hyper_client(http2));
        let (req, bytes) = put(&server, Shape::Streamed);
        let res = svc.oneshot(req).await.unwrap();
        assert_eq!(res.status(), StatusCode::OK, "http2 {http2}");
        let seen = server.seen();
        assert_eq!(seen.len(), 2, "http2 {http2}");
        assert!(bytes.starts_with(&seen[0].body), "http2 {http2}");
        assert_eq!(seen[1].body, bytes, "http2 {http2}: the retry sent it all");

        let server = Server::start(
            vec![Reply::status(200).reset_after_reading(6)],
            Reply::status(200),
        )
        .await;
        let svc = retry(ReplayBodies::default()).layer(hyper_client(http2));
        let req = Request::post(server.url("/orders"))
            .body(body(Shape::Streamed).0)
            .unwrap();
        let err = svc.oneshot(req).await.unwrap_err();
        assert!(!palisade::classify::is_connect_error(&err), "{err}");
        assert_eq!(
            server.seen().len(),
            1,
            "http2 {http2}: a POST is not sent twice"
        );
    }
}
