//! Black-box checks of palisade's documented promises (README, CHANGELOG
//! "Unreleased", rustdoc), against real peers on 127.0.0.1.

#[path = "support/http_server.rs"]
mod http_server;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use futures_util::stream::{self, StreamExt};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body::{Body, Frame};
use http_body_util::combinators::{BoxBody, UnsyncBoxBody};
use http_body_util::{BodyExt, Empty, Full, StreamBody};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tower::{Layer, ServiceExt};

use palisade::BoxError;
use palisade::backoff::{Backoff, Jitter};
use palisade::circuit_breaker::BreakerEvent;
use palisade::circuit_breaker::{CircuitBreakerLayer, CircuitState, TransitionReason};
use palisade::classify::{
    Classify, GrpcClassifier, GrpcCode, HttpClassifier, JudgesAtHead, Outcome, Settle, Tracker,
    Verdict, is_connect_error,
};
use palisade::error::ErrorKind;
use palisade::event::Event;
use palisade::retry::{
    DEFAULT_REPLAY_LIMIT, Replay, ReplayBodies, ReplayBody, ReplaySource, RetryLayer,
};
use palisade::retry::{GiveUpReason, RetryEvent, RetryReason};

use http_server::{Reply, Server, closed_port};

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

type B = BoxBody<Bytes, BoxError>;
type Resp = Response<UnsyncBoxBody<Bytes, BoxError>>;

/// What the layers reported, owned.
#[derive(Debug, Clone, PartialEq)]
enum Ev {
    Attempt(u32),
    Retry {
        attempt: u32,
        reason: RetryReason,
        delay: Duration,
        hinted: bool,
    },
    GaveUp(u32, GiveUpReason),
    Transition(CircuitState, CircuitState, TransitionReason),
    Other(String),
}

#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<Ev>>>);

impl Log {
    fn listener(&self) -> impl Fn(&Event<'_>) + Send + Sync + 'static {
        let log = self.0.clone();
        move |e: &Event<'_>| {
            let ev = match (e.kind(), e.kind()) {
                (Some(RetryEvent::Attempt { attempt }), _) => Ev::Attempt(*attempt),
                (
                    Some(RetryEvent::Retry {
                        attempt,
                        reason,
                        delay,
                        hinted,
                    }),
                    _,
                ) => Ev::Retry {
                    attempt: *attempt,
                    reason: *reason,
                    delay: *delay,
                    hinted: *hinted,
                },
                (Some(RetryEvent::GaveUp { attempts, reason }), _) => {
                    Ev::GaveUp(*attempts, *reason)
                }
                (_, Some(BreakerEvent::StateTransition { from, to, reason })) => {
                    Ev::Transition(*from, *to, *reason)
                }
                _ => Ev::Other(e.to_string()),
            };
            log.lock().unwrap().push(ev);
        }
    }
    fn take(&self) -> Vec<Ev> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
    fn retries(&self) -> Vec<(u32, RetryReason)> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter_map(|e| match e {
                Ev::Retry {
                    attempt, reason, ..
                } => Some((*attempt, *reason)),
                _ => None,
            })
            .collect()
    }
    fn gave_up(&self) -> Vec<(u32, GiveUpReason)> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter_map(|e| match e {
                Ev::GaveUp(n, r) => Some((*n, *r)),
                _ => None,
            })
            .collect()
    }
    fn attempts(&self) -> usize {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter(|e| matches!(e, Ev::Attempt(_)))
            .count()
    }
    fn transitions(&self) -> Vec<(CircuitState, CircuitState, TransitionReason)> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter_map(|e| match e {
                Ev::Transition(a, b, r) => Some((*a, *b, *r)),
                _ => None,
            })
            .collect()
    }
}

fn empty() -> B {
    Empty::<Bytes>::new().map_err(|e| match e {}).boxed()
}

fn full(data: impl Into<Bytes>) -> B {
    Full::new(data.into()).map_err(|e| match e {}).boxed()
}

fn chunks(parts: &[&[u8]], trailers: Option<HeaderMap>) -> B {
    let mut frames: Vec<Result<Frame<Bytes>, BoxError>> = parts
        .iter()
        .map(|p| Ok(Frame::data(Bytes::copy_from_slice(p))))
        .collect();
    if let Some(t) = trailers {
        frames.push(Ok(Frame::trailers(t)));
    }
    BodyExt::boxed(StreamBody::new(stream::iter(frames)))
}

fn trailer_map(name: &'static str, value: &'static str) -> HeaderMap {
    let mut t = HeaderMap::new();
    t.insert(name, HeaderValue::from_static(value));
    t
}

fn backoff() -> Backoff {
    Backoff::constant(Duration::from_millis(10))
        .jitter(Jitter::None)
        .build()
        .unwrap()
}

fn hyper_client<Bd>(h2: bool) -> Client<HttpConnector, Bd>
where
    Bd: Body + Send + 'static,
    Bd::Data: Send,
{
    let mut conn = HttpConnector::new();
    conn.set_nodelay(true);
    let mut b = Client::builder(TokioExecutor::new());
    if h2 {
        b.http2_only(true);
    }
    b.build(conn)
}

fn http_retry(
    limit: usize,
    attempts: u32,
    log: &Log,
) -> RetryLayer<HttpClassifier, Backoff, ReplayBodies> {
    RetryLayer::builder()
        .classifier(HttpClassifier::new())
        .requests(ReplayBodies::with_limit(limit))
        .backoff(backoff())
        .max_attempts(attempts)
        .no_budget()
        .on_event(log.listener())
        .build()
        .unwrap()
}

fn req(method: Method, url: &str, body: B) -> Request<B> {
    Request::builder()
        .method(method)
        .uri(url)
        .body(body)
        .unwrap()
}

/// hyper's HTTP/1.1 client sends only the trailers its `Trailer` header
/// announces.
fn announcing(mut r: Request<B>, names: &'static str) -> Request<B> {
    r.headers_mut()
        .insert("trailer", HeaderValue::from_static(names));
    r
}

/// Drives a future, failing (instead of hanging) if it does not finish
/// within a generous amount of (paused) tokio time.
async fn bounded<F: std::future::Future>(what: &str, f: F) -> F::Output {
    match tokio::time::timeout(Duration::from_secs(3600), f).await {
        Ok(v) => v,
        Err(_) => panic!("{what}: did not finish (hang)"),
    }
}

/// A hyper server (HTTP/1.1 and h2c) answering with `handler`.
type Handler =
    Arc<dyn Fn(Request<Incoming>) -> BoxFuture<'static, Result<Resp, Infallible>> + Send + Sync>;

async fn custom_server(handler: Handler) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((conn, _)) = listener.accept().await else {
                continue;
            };
            let _ = conn.set_nodelay(true);
            let h = handler.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |r| (h)(r));
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(conn), svc)
                    .await;
            });
        }
    });
    addr
}

fn resp_body(frames: Vec<Result<Frame<Bytes>, BoxError>>) -> UnsyncBoxBody<Bytes, BoxError> {
    StreamBody::new(stream::iter(frames)).boxed_unsync()
}

fn grpc_msg() -> Bytes {
    // A 5-byte gRPC prefix and a 2-byte payload.
    Bytes::from_static(&[0, 0, 0, 0, 2, 8, 1])
}

async fn read_all(body: Incoming) -> (Vec<u8>, Option<HeaderMap>) {
    match body.collect().await {
        Ok(collected) => {
            let trailers = collected.trailers().cloned();
            (collected.to_bytes().to_vec(), trailers)
        }
        // The client went away (a test that timed out): nothing to record.
        Err(_) => (b"<client went away>".to_vec(), None),
    }
}

/// A request as the custom server saw it, framing included.
#[derive(Debug, Clone)]
struct Framed {
    version: http::Version,
    content_length: Option<String>,
    chunked: bool,
    body: Vec<u8>,
    trailers: Option<HeaderMap>,
}

// ---------------------------------------------------------------------------
// ReplayBodies on the wire
// ---------------------------------------------------------------------------

/// A body shape: its name, how to make it, its bytes, its trailers.
type Case = (&'static str, fn() -> B, Vec<u8>, Option<HeaderMap>);

fn cases() -> Vec<Case> {
    vec![
        ("empty", empty as fn() -> B, vec![], None),
        (
            "one chunk",
            || full("hello world"),
            b"hello world".to_vec(),
            None,
        ),
        (
            "streamed",
            || chunks(&[b"ab", b"cd", b"ef"], None),
            b"abcdef".to_vec(),
            None,
        ),
        (
            "trailers",
            || chunks(&[b"xy", b"z"], Some(trailer_map("x-checksum", "42"))),
            b"xyz".to_vec(),
            Some(trailer_map("x-checksum", "42")),
        ),
    ]
}

async fn replayed_over(h2: bool) {
    for (name, make, bytes, trailers) in cases() {
        let server = Server::start(vec![Reply::status(503)], Reply::status(200)).await;
        let log = Log::default();
        let svc = http_retry(DEFAULT_REPLAY_LIMIT, 3, &log).layer(hyper_client(h2));
        let res = bounded(
            name,
            svc.oneshot(announcing(
                req(Method::PUT, &server.url("/x"), make()),
                "x-checksum",
            )),
        )
        .await;
        let res = res.unwrap_or_else(|e| panic!("h2={h2} {name}: {e}"));
        assert_eq!(res.status(), 200, "h2={h2} {name}");
        let seen = server.seen();
        assert_eq!(
            seen.len(),
            2,
            "h2={h2} {name}: {seen:?} events {:?}",
            log.take()
        );
        for s in &seen {
            assert_eq!(s.body, bytes, "h2={h2} {name}");
            let got = s
                .trailers
                .as_ref()
                .and_then(|t| t.get("x-checksum"))
                .cloned();
            let want = trailers.as_ref().and_then(|t| t.get("x-checksum")).cloned();
            assert_eq!(got, want, "h2={h2} {name}: trailers");
        }
        assert_eq!(
            log.retries(),
            vec![(1, RetryReason::Failure)],
            "h2={h2} {name}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn http1_bodies_replayed() {
    replayed_over(false).await;
}

#[tokio::test(start_paused = true)]
async fn http2_bodies_replayed() {
    replayed_over(true).await;
}

/// hyper decides content-length vs chunked from `size_hint`, and never polls
/// a body whose `is_end_stream()` is true. Both attempts must be framed
/// alike, and the framing must match the bytes.
#[tokio::test(start_paused = true)]
async fn http1_framing_of_replayed_bodies_as_hyper_sees_it() {
    let seen: Arc<Mutex<Vec<Framed>>> = Arc::default();
    let n = Arc::new(AtomicUsize::new(0));
    let (s2, n2) = (seen.clone(), n.clone());
    let addr = custom_server(Arc::new(move |r: Request<Incoming>| {
        let (s, n) = (s2.clone(), n2.clone());
        Box::pin(async move {
            let (head, body) = r.into_parts();
            let (bytes, trailers) = read_all(body).await;
            s.lock().unwrap().push(Framed {
                version: head.version,
                content_length: head
                    .headers
                    .get("content-length")
                    .map(|v| v.to_str().unwrap().to_owned()),
                chunked: head
                    .headers
                    .get("transfer-encoding")
                    .is_some_and(|v| v.to_str().unwrap().contains("chunked")),
                body: bytes,
                trailers,
            });
            let status = if n.fetch_add(1, Ordering::SeqCst) % 2 == 0 {
                503
            } else {
                200
            };
            let mut res = Response::new(resp_body(vec![]));
            *res.status_mut() = StatusCode::from_u16(status).unwrap();
            Ok(res)
        })
    }))
    .await;
    let url = format!("http://{addr}/f");
    let mut report = Vec::new();
    for (name, make, bytes, trailers) in cases() {
        seen.lock().unwrap().clear();
        let log = Log::default();
        let svc = http_retry(DEFAULT_REPLAY_LIMIT, 3, &log).layer(hyper_client(false));
        let res = bounded(
            name,
            svc.oneshot(announcing(req(Method::PUT, &url, make()), "x-checksum")),
        )
        .await
        .unwrap();
        assert_eq!(res.status(), 200, "{name}");
        let s = seen.lock().unwrap().clone();
        assert_eq!(s.len(), 2, "{name}");
        for f in &s {
            assert_eq!(f.body, bytes, "{name}");
            assert_eq!(f.version, http::Version::HTTP_11);
            assert_eq!(
                f.trailers.is_some(),
                trailers.is_some(),
                "{name}: trailers over HTTP/1.1 {f:?}"
            );
        }
        report.push(format!(
            "{name}: attempt1 cl={:?} chunked={} / attempt2 cl={:?} chunked={}",
            s[0].content_length, s[0].chunked, s[1].content_length, s[1].chunked
        ));
        // A body known to be exact on the first attempt stays exact.
        if s[0].content_length.is_some() {
            assert_eq!(
                s[1].content_length, s[0].content_length,
                "{name}: {report:?}"
            );
        }
    }
    eprintln!("framing: {report:#?}");
}

#[tokio::test(start_paused = true)]
async fn over_the_limit_is_sent_once_whole() {
    for h2 in [false, true] {
        for (name, make, len) in [
            (
                "one chunk of 100",
                (|| full(vec![7u8; 100])) as fn() -> B,
                100usize,
            ),
            (
                "ten chunks of 10",
                || chunks(&[&[1u8; 10][..]; 10], None),
                100,
            ),
        ] {
            let server = Server::start(vec![Reply::status(503)], Reply::status(200)).await;
            let log = Log::default();
            let svc = http_retry(16, 3, &log).layer(hyper_client(h2));
            let res = bounded(
                name,
                svc.oneshot(req(Method::PUT, &server.url("/big"), make())),
            )
            .await
            .unwrap();
            assert_eq!(
                res.status(),
                503,
                "h2={h2} {name}: the 503 is returned, not retried"
            );
            let seen = server.seen();
            assert_eq!(seen.len(), 1, "h2={h2} {name}");
            assert_eq!(seen[0].body.len(), len, "h2={h2} {name}: sent whole");
            assert_eq!(
                log.gave_up(),
                vec![(1, GiveUpReason::NotReplayable)],
                "h2={h2} {name}"
            );
        }
        // Exactly at the limit is still replayed ("more than limit").
        let server = Server::start(vec![Reply::status(503)], Reply::status(200)).await;
        let log = Log::default();
        let svc = http_retry(16, 3, &log).layer(hyper_client(h2));
        let res = svc
            .oneshot(req(Method::PUT, &server.url("/edge"), full(vec![1u8; 16])))
            .await
            .unwrap();
        assert_eq!(res.status(), 200, "h2={h2}: 16 bytes with a 16-byte limit");
        assert_eq!(server.seen().len(), 2);
    }
}

#[tokio::test(start_paused = true)]
async fn a_huge_streamed_body_is_sent_once_whole() {
    for h2 in [false, true] {
        let server = Server::start(vec![Reply::status(503)], Reply::status(200)).await;
        let log = Log::default();
        let chunk = vec![0xabu8; 64 * 1024];
        let parts: Vec<&[u8]> = (0..64).map(|_| &chunk[..]).collect(); // 4 MiB
        let svc = http_retry(DEFAULT_REPLAY_LIMIT, 3, &log).layer(hyper_client(h2));
        let res = bounded(
            "huge",
            svc.oneshot(req(Method::PUT, &server.url("/huge"), chunks(&parts, None))),
        )
        .await
        .unwrap();
        assert_eq!(res.status(), 503, "h2={h2}");
        let seen = server.seen();
        assert_eq!(seen.len(), 1);
        assert_eq!(seen[0].body.len(), 4 << 20);
        assert_eq!(log.gave_up(), vec![(1, GiveUpReason::NotReplayable)]);
    }
}

/// "a request whose connection failed ... is retried whatever its method";
/// the body (here over the replay limit, so it could not be recorded) was
/// never read, so it can be sent again whole.
#[tokio::test(start_paused = true)]
async fn a_refused_connection_is_retried_for_every_method_hyper() {
    for h2 in [false, true] {
        for method in [Method::POST, Method::PATCH, Method::GET, Method::PUT] {
            let server = Server::start(vec![], Reply::status(200)).await;
            server.stop().await;
            let log = Log::default();
            let restart = server.clone();
            let layer = RetryLayer::builder()
                .classifier(HttpClassifier::new())
                .requests(ReplayBodies::default())
                .backoff(backoff())
                .no_budget()
                .on_event(log.listener())
                .on_event(move |e: &Event<'_>| {
                    if let Some(RetryEvent::Retry {
                        reason: RetryReason::NotSent,
                        ..
                    }) = e.kind()
                    {
                        restart.restart();
                    }
                })
                .build()
                .unwrap();
            let body = vec![b'p'; DEFAULT_REPLAY_LIMIT + 10];
            let svc = layer.layer(hyper_client(h2));
            let res = bounded(
                "refused",
                svc.oneshot(req(method.clone(), &server.url("/r"), full(body.clone()))),
            )
            .await
            .unwrap_or_else(|e| panic!("h2={h2} {method}: {e} {:?}", log.take()));
            assert_eq!(res.status(), 200);
            let seen = server.seen();
            assert_eq!(seen.len(), 1, "h2={h2} {method}");
            assert_eq!(seen[0].body, body, "h2={h2} {method}");
            assert_eq!(
                log.retries(),
                vec![(1, RetryReason::NotSent)],
                "h2={h2} {method}"
            );
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_refused_connection_is_retried_for_every_method_reqwest() {
    use palisade::retry::ReqwestRequests;
    let server = Server::start(vec![], Reply::status(200)).await;
    server.stop().await;
    let log = Log::default();
    let restart = server.clone();
    let layer = RetryLayer::builder()
        .classifier(HttpClassifier::new())
        .requests(ReqwestRequests)
        .backoff(backoff())
        .no_budget()
        .on_event(log.listener())
        .on_event(move |e: &Event<'_>| {
            if let Some(RetryEvent::Retry {
                reason: RetryReason::NotSent,
                ..
            }) = e.kind()
            {
                restart.restart();
            }
        })
        .build()
        .unwrap();
    let client = reqwest::Client::new();
    let request = client.post(server.url("/p")).body("order").build().unwrap();
    let res = bounded("reqwest", layer.layer(client.clone()).oneshot(request))
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(server.seen().len(), 1);
    assert_eq!(server.seen()[0].body, b"order");
    assert_eq!(log.retries(), vec![(1, RetryReason::NotSent)]);

    // Against a port that stays closed: every attempt, then MaxAttempts.
    let log = Log::default();
    let layer = RetryLayer::builder()
        .classifier(HttpClassifier::new())
        .requests(ReqwestRequests)
        .backoff(backoff())
        .no_budget()
        .on_event(log.listener())
        .build()
        .unwrap();
    let addr = closed_port().await;
    let request = client
        .post(format!("http://{addr}/p"))
        .body("x")
        .build()
        .unwrap();
    let err = layer.layer(client).oneshot(request).await.unwrap_err();
    assert!(
        is_connect_error(&err),
        "the BoxError from the retry is a connect error: {err:?}"
    );
    assert_eq!(log.attempts(), 3);
    assert_eq!(
        log.retries(),
        vec![(1, RetryReason::NotSent), (2, RetryReason::NotSent)]
    );
    assert_eq!(log.gave_up(), vec![(3, GiveUpReason::MaxAttempts)]);
}

/// A POST whose server reset after reading half of it is not retried; a PUT
/// is, and the retry sends the whole body (recorded half + the rest).
#[tokio::test(start_paused = true)]
async fn a_reset_after_half_the_body() {
    for h2 in [false, true] {
        let piece = vec![b'h'; 1000];
        let whole: Vec<u8> = piece.repeat(4);
        for method in [Method::POST, Method::PUT] {
            let server = Server::start(
                vec![Reply::status(200).reset_after_reading(1500)],
                Reply::status(200),
            )
            .await;
            let log = Log::default();
            let svc = http_retry(DEFAULT_REPLAY_LIMIT, 3, &log).layer(hyper_client(h2));
            let body = chunks(&[&piece, &piece, &piece, &piece], None);
            let res = bounded(
                "reset",
                svc.oneshot(req(method.clone(), &server.url("/half"), body)),
            )
            .await;
            let seen = server.seen();
            if method == Method::POST {
                let err = res.expect_err("a POST that may have reached the server is not retried");
                assert!(!is_connect_error(&err), "h2={h2}: {err:?}");
                assert_eq!(seen.len(), 1, "h2={h2}");
                assert_eq!(
                    log.gave_up(),
                    vec![(1, GiveUpReason::RequestNotRetryable)],
                    "h2={h2}"
                );
            } else {
                let res = res.unwrap_or_else(|e| panic!("h2={h2} PUT: {e} {:?}", log.take()));
                assert_eq!(res.status(), 200);
                assert_eq!(seen.len(), 2, "h2={h2}");
                assert!(seen[0].body.len() >= 1500 && seen[0].body.len() <= 4000);
                assert_eq!(
                    seen[1].body, whole,
                    "h2={h2}: the retry sends the whole body"
                );
            }
        }
    }
}

/// The server answers 503 before reading the body while the client is still
/// streaming it; the retry's attempt must get the body (docs: the attempt
/// waits for the earlier one to give it back) and send it whole.
#[tokio::test(start_paused = true)]
async fn a_retry_while_the_previous_attempt_still_streams() {
    for h2 in [false, true] {
        let bodies: Arc<Mutex<Vec<Vec<u8>>>> = Arc::default();
        let n = Arc::new(AtomicUsize::new(0));
        let (b2, n2) = (bodies.clone(), n.clone());
        let addr = custom_server(Arc::new(move |r: Request<Incoming>| {
            let (b, n) = (b2.clone(), n2.clone());
            Box::pin(async move {
                if n.fetch_add(1, Ordering::SeqCst) == 0 {
                    // Answer at once, without reading; drop the body.
                    drop(r);
                    let mut res = Response::new(resp_body(vec![]));
                    *res.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
                    return Ok(res);
                }
                let (bytes, _) = read_all(r.into_body()).await;
                b.lock().unwrap().push(bytes);
                Ok(Response::new(resp_body(vec![])))
            })
        }))
        .await;
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, BoxError>>(1);
        let body: B = BodyExt::boxed(StreamBody::new(stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|f| (f, rx))
        })));
        let feeder = tokio::spawn(async move {
            for i in 0..5u8 {
                if tx
                    .send(Ok(Frame::data(Bytes::from(vec![b'a' + i; 100]))))
                    .await
                    .is_err()
                {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
        let log = Log::default();
        let svc = http_retry(DEFAULT_REPLAY_LIMIT, 3, &log).layer(hyper_client(h2));
        let res = bounded(
            &format!("h2={h2} retry while streaming"),
            svc.oneshot(req(Method::PUT, &format!("http://{addr}/s"), body)),
        )
        .await;
        let _ = feeder.await;
        let want: Vec<u8> = (0..5u8).flat_map(|i| vec![b'a' + i; 100]).collect();
        match res {
            Ok(r) => {
                assert_eq!(r.status(), 200, "h2={h2}: events {:?}", log.take());
                assert_eq!(bodies.lock().unwrap().as_slice(), &[want], "h2={h2}");
            }
            Err(e) => panic!("h2={h2}: {e}; events {:?}", log.take()),
        }
    }
}

/// A body that fails mid-stream: the call ends with an error, once, without
/// hanging and without a retry sending a truncated body.
#[tokio::test(start_paused = true)]
async fn a_body_error_mid_stream() {
    for h2 in [false, true] {
        let server = Server::start(vec![], Reply::status(200)).await;
        let log = Log::default();
        let frames: Vec<Result<Frame<Bytes>, BoxError>> = vec![
            Ok(Frame::data(Bytes::from_static(b"part"))),
            Err("disk on fire".into()),
        ];
        let body = BodyExt::boxed(StreamBody::new(stream::iter(frames)));
        let svc = http_retry(DEFAULT_REPLAY_LIMIT, 3, &log).layer(hyper_client(h2));
        let res = bounded(
            "body error",
            svc.oneshot(req(Method::PUT, &server.url("/e"), body)),
        )
        .await;
        let err = res.expect_err("a failed body cannot succeed");
        eprintln!("h2={h2} body error -> {err:?}; events {:?}", log.take());
        for s in server.seen() {
            assert_ne!(
                s.body, b"part",
                "h2={h2}: a truncated body was accepted as whole"
            );
        }
    }
}

/// Many concurrent calls sharing one layer and one client, each retried
/// once: every server-side body is one that was sent, intact.
#[tokio::test(start_paused = true)]
async fn many_concurrent_retried_requests_share_one_layer() {
    for h2 in [false, true] {
        const N: usize = 40;
        let server = Server::start(vec![Reply::status(503); N], Reply::status(200)).await;
        let log = Log::default();
        let svc = http_retry(DEFAULT_REPLAY_LIMIT, 4, &log).layer(hyper_client(h2));
        let calls = (0..N).map(|i| {
            let svc = svc.clone();
            let a = format!("req-{i}-first-");
            let b = format!("second-{i}");
            let body = chunks(
                &[a.as_bytes(), b.as_bytes()],
                Some(trailer_map("x-id", "v")),
            );
            let url = server.url(&format!("/c/{i}"));
            async move {
                svc.oneshot(announcing(req(Method::PUT, &url, body), "x-id"))
                    .await
            }
        });
        let results = bounded("concurrent", futures_util::future::join_all(calls)).await;
        for (i, r) in results.into_iter().enumerate() {
            let r = r.unwrap_or_else(|e| panic!("h2={h2} call {i}: {e}"));
            assert_eq!(r.status(), 200, "h2={h2} call {i}");
        }
        let seen = server.seen();
        assert!(
            seen.len() > N && seen.len() <= 2 * N + N,
            "h2={h2}: {}",
            seen.len()
        );
        for s in &seen {
            let i: usize = s.path.trim_start_matches("/c/").parse().unwrap();
            assert_eq!(
                String::from_utf8_lossy(&s.body),
                format!("req-{i}-first-second-{i}"),
                "h2={h2}: body of call {i}"
            );
            assert!(
                s.trailers.as_ref().is_some_and(|t| t.get("x-id").is_some()),
                "h2={h2}: trailers of {i}"
            );
        }
    }
}

// ---------------------------------------------------------------------------
// ReplayBody's size_hint / is_end_stream, through the public Replay trait
// ---------------------------------------------------------------------------

async fn frame<Bd: Body + Unpin>(b: &mut Bd) -> Option<Result<Frame<Bd::Data>, Bd::Error>> {
    std::future::poll_fn(|cx| Pin::new(&mut *b).poll_frame(cx)).await
}

fn exact(b: &impl Body) -> Option<u64> {
    b.size_hint().exact()
}

#[tokio::test(start_paused = true)]
async fn replay_body_size_hint_and_end_stream() {
    let rb = ReplayBodies::default();

    // One chunk: exact 5 on every attempt; ends after the data frame.
    let (r1, src) = rb.first(Request::new(full("hello")), true);
    let mut src = src.expect("a source");
    let mut b1 = r1.into_body();
    assert_eq!(exact(&b1), Some(5));
    assert!(!b1.is_end_stream());
    let f = frame(&mut b1).await.unwrap().unwrap();
    assert_eq!(f.into_data().unwrap(), "hello");
    assert!(
        b1.is_end_stream(),
        "after the last data frame of an exact body"
    );
    assert_eq!(exact(&b1), Some(0));
    drop(b1); // as hyper does: never polls None
    let mut b2 = src.again().expect("a second copy").into_body();
    assert_eq!(exact(&b2), Some(5), "replay: exact");
    assert!(!b2.is_end_stream());
    let f = frame(&mut b2).await.unwrap().unwrap();
    assert_eq!(f.into_data().unwrap(), "hello");
    assert!(b2.is_end_stream(), "replay ends after its last data frame");
    assert_eq!(exact(&b2), Some(0));
    assert!(frame(&mut b2).await.is_none());

    // Empty: end of stream from the start, never polled.
    let (r1, src) = rb.first(Request::new(empty()), true);
    let mut src = src.unwrap();
    let b1 = r1.into_body();
    assert!(b1.is_end_stream());
    assert_eq!(exact(&b1), Some(0));
    drop(b1);
    let b2 = src
        .again()
        .expect("an unpolled empty body can be sent again")
        .into_body();
    assert!(b2.is_end_stream());
    assert_eq!(exact(&b2), Some(0));

    // Trailers: the changelog says a replayed body with trailers is not sized
    // exactly; ReplayBodies' rustdoc says size_hint is exact in every state.
    let (r1, src) = rb.first(
        Request::new(chunks(&[b"ab", b"c"], Some(trailer_map("t", "1")))),
        true,
    );
    let mut src = src.unwrap();
    let mut b1 = r1.into_body();
    let c = (&mut b1).collect().await.unwrap();
    assert_eq!(c.trailers().unwrap().get("t").unwrap(), "1");
    drop(b1);
    let mut b2 = src.again().unwrap().into_body();
    let hint = b2.size_hint();
    eprintln!(
        "replayed body with trailers: size_hint lower={} upper={:?}",
        hint.lower(),
        hint.upper()
    );
    assert!(
        hint.lower() <= 3 && hint.upper().is_none_or(|u| u >= 3),
        "hint must bound the 3 bytes"
    );
    let mut data = Vec::new();
    let mut got_trailers = false;
    while let Some(f) = frame(&mut b2).await {
        let f = f.unwrap();
        assert!(!got_trailers, "nothing after trailers");
        match f.into_data() {
            Ok(d) => {
                data.extend_from_slice(&d);
                assert!(!b2.is_end_stream(), "trailers still to come");
            }
            Err(f) => {
                assert_eq!(f.into_trailers().unwrap().get("t").unwrap(), "1");
                got_trailers = true;
            }
        }
    }
    assert_eq!(data, b"abc");
    assert!(got_trailers);

    // Half read, dropped: the next attempt sends the whole body.
    let (r1, src) = rb.first(Request::new(chunks(&[b"1", b"2", b"3"], None)), true);
    let mut src = src.unwrap();
    let mut b1 = r1.into_body();
    let _ = frame(&mut b1).await;
    drop(b1);
    let b2 = src.again().unwrap().into_body();
    assert_eq!(b2.collect().await.unwrap().to_bytes(), "123");

    // Two attempts alive at once: the newer owns the body at once and
    // sends it whole; the abandoned one fails if polled again.
    let (r1, src) = rb.first(Request::new(chunks(&[b"1", b"2", b"3"], None)), true);
    let mut src = src.unwrap();
    let mut b1 = r1.into_body();
    let _ = frame(&mut b1).await;
    let b2 = src.again().unwrap().into_body();
    assert_eq!(b2.collect().await.unwrap().to_bytes(), "123");
    assert!(
        frame(&mut b1).await.unwrap().is_err(),
        "the abandoned attempt fails"
    );

    // Not retryable: limit zero; an unread body can still be sent again.
    let (r1, src) = rb.first(Request::new(full("post")), false);
    let mut src = src.expect("kept for a request that never left");
    drop(r1);
    let b2 = src.again().expect("an unread body").into_body();
    assert_eq!(b2.collect().await.unwrap().to_bytes(), "post");

    // Not retryable and partly read; and retryable but read past the limit:
    // never a truncated body.
    for (retryable, limit) in [(false, DEFAULT_REPLAY_LIMIT), (true, 1)] {
        let rb = ReplayBodies::with_limit(limit);
        let (r1, src) = rb.first(Request::new(chunks(&[b"12", b"34"], None)), retryable);
        let mut b1 = r1.into_body();
        let _ = frame(&mut b1).await;
        drop(b1);
        match src.and_then(|mut s| s.again()) {
            None => {}
            Some(r2) => {
                let got = r2.into_body().collect().await;
                assert!(
                    got.is_err(),
                    "retryable={retryable}: a truncated body was sent: {:?}",
                    got.map(|c| c.to_bytes())
                );
                eprintln!(
                    "retryable={retryable} limit={limit}: again() gave a body that fails: {:?}",
                    got.err()
                );
            }
        }
    }
}

// ---------------------------------------------------------------------------
// is_connect_error
// ---------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn is_connect_error_on_real_errors() {
    let closed = closed_port().await;
    // hyper-util's legacy client.
    let client = hyper_client::<Full<Bytes>>(false);
    let err = client
        .request(
            Request::get(format!("http://{closed}/"))
                .body(Full::default())
                .unwrap(),
        )
        .await
        .unwrap_err();
    assert!(err.is_connect());
    assert!(is_connect_error(&err), "hyper_util legacy Error");
    let boxed: BoxError = Box::new(err);
    assert!(is_connect_error(&boxed), "boxed hyper_util legacy Error");

    // reqwest.
    let err = reqwest::get(format!("http://{closed}/")).await.unwrap_err();
    assert!(is_connect_error(&err), "reqwest::Error");

    // tonic: an eager connect, and a call on a lazy channel.
    let err = tonic::transport::Endpoint::from_shared(format!("http://{closed}"))
        .unwrap()
        .connect()
        .await
        .unwrap_err();
    assert!(is_connect_error(&err), "tonic::transport::Error: {err:?}");
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{closed}"))
        .unwrap()
        .connect_lazy();
    let status = tonic_health::pb::health_client::HealthClient::new(channel)
        .check(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap_err();
    assert!(
        is_connect_error(&status),
        "tonic::Status from a refused connection: {status:?}"
    );

    // A reset after the request was read is not a connect error.
    let server = Server::start(
        vec![Reply::status(200).reset_after_reading(0)],
        Reply::status(200),
    )
    .await;
    let err = client
        .request(
            Request::post(server.url("/"))
                .body(Full::new(Bytes::from_static(b"x")))
                .unwrap(),
        )
        .await
        .unwrap_err();
    assert!(!is_connect_error(&err), "{err:?}");
}

// ---------------------------------------------------------------------------
// GrpcClassifier
// ---------------------------------------------------------------------------

fn head(status: u16, grpc: Option<&str>) -> Result<Response<()>, std::io::Error> {
    let mut b = Response::builder().status(status);
    if let Some(g) = grpc {
        b = b.header("grpc-status", g);
    }
    Ok(b.body(()).unwrap())
}

fn classify(c: &GrpcClassifier, r: &Result<Response<()>, std::io::Error>) -> Outcome {
    Classify::classify(c, r)
}

fn retryable(c: &GrpcClassifier, r: &Result<Response<()>, std::io::Error>) -> bool {
    Classify::is_retryable_failure(c, r)
}

#[test]
fn grpc_classifier_codes_and_http_mapping() {
    let c = GrpcClassifier::new();
    let failures = [
        GrpcCode::Unknown,
        GrpcCode::Internal,
        GrpcCode::Unavailable,
        GrpcCode::DeadlineExceeded,
        GrpcCode::ResourceExhausted,
        GrpcCode::DataLoss,
    ];
    for code in GrpcCode::ALL {
        let r = head(200, Some(&(code as u8).to_string()));
        let want = if failures.contains(&code) {
            Outcome::Failure
        } else {
            Outcome::Success
        };
        assert_eq!(classify(&c, &r), want, "{code:?}");
        assert_eq!(
            c.is_failure_code(code),
            want == Outcome::Failure,
            "{code:?}"
        );
        assert_eq!(
            c.is_retryable_code(code),
            code == GrpcCode::Unavailable,
            "{code:?}"
        );
        assert_eq!(retryable(&c, &r), code == GrpcCode::Unavailable, "{code:?}");
    }
    // Unparseable grpc-status: Unknown, a failure, not retried.
    for bad in ["abc", "", "-1", "1.0", "99999999999999999999"] {
        let r = head(200, Some(bad));
        assert_eq!(classify(&c, &r), Outcome::Failure, "grpc-status {bad:?}");
        assert!(!retryable(&c, &r), "grpc-status {bad:?}");
    }
    // An unknown number is Unknown.
    assert_eq!(classify(&c, &head(200, Some("17"))), Outcome::Failure);
    assert_eq!(GrpcCode::from_i32(42), GrpcCode::Unknown);

    // HTTP status without grpc-status.
    for (http, code) in [
        (400, GrpcCode::Internal),
        (401, GrpcCode::Unauthenticated),
        (403, GrpcCode::PermissionDenied),
        (404, GrpcCode::Unimplemented),
        (429, GrpcCode::Unavailable),
        (502, GrpcCode::Unavailable),
        (503, GrpcCode::Unavailable),
        (504, GrpcCode::Unavailable),
        (500, GrpcCode::Unknown),
        (418, GrpcCode::Unknown),
        (301, GrpcCode::Unknown),
    ] {
        let s = StatusCode::from_u16(http).unwrap();
        assert_eq!(GrpcCode::from_http_status(s), code, "HTTP {http}");
        assert_eq!(
            GrpcClassifier::code_of_head(s, &HeaderMap::new()),
            code,
            "HTTP {http}"
        );
        assert_eq!(
            classify(&c, &head(http, None)),
            c.outcome_of(code),
            "HTTP {http}"
        );
        assert_eq!(
            retryable(&c, &head(http, None)),
            code == GrpcCode::Unavailable,
            "HTTP {http}"
        );
    }
    // grpc-status wins over the HTTP status.
    assert_eq!(classify(&c, &head(503, Some("0"))), Outcome::Success);
    eprintln!(
        "code_of_head(200, no grpc-status) = {:?}; classify = {:?}",
        GrpcClassifier::code_of_head(StatusCode::OK, &HeaderMap::new()),
        classify(&c, &head(200, None))
    );

    // Adjusting the sets.
    let c2 = GrpcClassifier::new().retryable_code(GrpcCode::Aborted);
    assert!(c2.is_retryable_code(GrpcCode::Aborted));
    assert!(
        c2.is_failure_code(GrpcCode::Aborted),
        "retryable_code also counts it as a failure"
    );
    let c3 = GrpcClassifier::new().not_retryable_code(GrpcCode::Unavailable);
    assert!(!c3.is_retryable_code(GrpcCode::Unavailable));
    assert!(c3.is_failure_code(GrpcCode::Unavailable));
    let c4 = GrpcClassifier::new().success_code(GrpcCode::Unavailable);
    assert!(!c4.is_failure_code(GrpcCode::Unavailable));
    assert!(
        !c4.is_retryable_code(GrpcCode::Unavailable),
        "a success is not retried either"
    );
    let c5 = GrpcClassifier::new().failure_code(GrpcCode::NotFound);
    assert!(c5.is_failure_code(GrpcCode::NotFound));
    assert!(!c5.is_retryable_code(GrpcCode::NotFound));
    // Order: success_code then retryable_code.
    let c6 = GrpcClassifier::new()
        .success_code(GrpcCode::Internal)
        .retryable_code(GrpcCode::Internal);
    assert!(c6.is_failure_code(GrpcCode::Internal) && c6.is_retryable_code(GrpcCode::Internal));
    assert_eq!(GrpcClassifier::new().dropped_outcome(), Outcome::Ignored);
    assert_eq!(
        GrpcClassifier::new()
            .when_dropped(Outcome::Failure)
            .dropped_outcome(),
        Outcome::Failure
    );

    // Transport errors fail and are retried; connect errors are "not sent".
    let refused: Result<Response<()>, std::io::Error> =
        Err(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
    assert_eq!(classify(&c, &refused), Outcome::Failure);
    assert!(retryable(&c, &refused));
    assert!(Classify::is_not_sent(&c, &refused));
    let reset: Result<Response<()>, std::io::Error> =
        Err(std::io::Error::from(std::io::ErrorKind::ConnectionReset));
    assert_eq!(classify(&c, &reset), Outcome::Failure);
    assert!(retryable(&c, &reset), "transport errors are retryable");
    assert!(!Classify::is_not_sent(&c, &reset));
}

#[test]
fn grpc_classifier_on_tonic_status() {
    let c = GrpcClassifier::new();
    let r: Result<tonic::Response<()>, tonic::Status> = Err(tonic::Status::internal("x"));
    assert_eq!(Classify::classify(&c, &r), Outcome::Failure);
    assert!(!Classify::is_retryable_failure(&c, &r));
    let r: Result<tonic::Response<()>, tonic::Status> = Err(tonic::Status::unavailable("x"));
    assert!(Classify::is_retryable_failure(&c, &r));
    let r: Result<tonic::Response<()>, tonic::Status> = Err(tonic::Status::aborted("x"));
    assert_eq!(
        Classify::classify(&c, &r),
        Outcome::Success,
        "Aborted is no longer a failure"
    );
    let r: Result<tonic::Response<()>, tonic::Status> = Err(tonic::Status::data_loss("x"));
    assert_eq!(Classify::classify(&c, &r), Outcome::Failure);
    // A Status inside a BoxError.
    let boxed: Result<Response<()>, BoxError> = Err(Box::new(tonic::Status::not_found("x")));
    assert_eq!(Classify::classify(&c, &boxed), Outcome::Success);
    let boxed: Result<Response<()>, BoxError> = Err(Box::new(tonic::Status::unavailable("x")));
    assert!(Classify::is_retryable_failure(&c, &boxed));
}

// ---------------------------------------------------------------------------
// A fake gRPC server (hyper h2) to script heads, bodies and trailers.
// ---------------------------------------------------------------------------

fn grpc_head(grpc_status: Option<&str>, body: UnsyncBoxBody<Bytes, BoxError>) -> Resp {
    let mut res = Response::new(body);
    res.headers_mut()
        .insert("content-type", HeaderValue::from_static("application/grpc"));
    if let Some(s) = grpc_status {
        res.headers_mut()
            .insert("grpc-status", HeaderValue::from_str(s).unwrap());
    }
    res
}

fn grpc_trailers(code: &'static str) -> Frame<Bytes> {
    Frame::trailers(trailer_map("grpc-status", code))
}

/// Paths: /trailers/<code>, /head/<code>, /http/<status>, /noend, /forever,
/// /slowstream, /slowhead, /midstream-error, /pushback/<value>.
async fn fake_grpc_server(requests: Arc<AtomicUsize>) -> SocketAddr {
    custom_server(Arc::new(move |r: Request<Incoming>| {
        requests.fetch_add(1, Ordering::SeqCst);
        Box::pin(async move {
            let path = r.uri().path().to_owned();
            let _ = r.into_body().collect().await;
            let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
            let res = match parts.as_slice() {
                ["trailers", code] => {
                    let code: &'static str = Box::leak(code.to_string().into_boxed_str());
                    grpc_head(
                        None,
                        resp_body(vec![Ok(Frame::data(grpc_msg())), Ok(grpc_trailers(code))]),
                    )
                }
                ["head", code] => grpc_head(Some(code), resp_body(vec![])),
                ["pushback", v] => {
                    let mut res = grpc_head(Some("14"), resp_body(vec![]));
                    res.headers_mut()
                        .insert("grpc-retry-pushback-ms", HeaderValue::from_str(v).unwrap());
                    res
                }
                ["http", s] => {
                    let mut res = Response::new(resp_body(vec![Ok(Frame::data(
                        Bytes::from_static(b"<html>bad gateway"),
                    ))]));
                    *res.status_mut() = StatusCode::from_u16(s.parse().unwrap()).unwrap();
                    res
                }
                ["noend"] => grpc_head(None, resp_body(vec![Ok(Frame::data(grpc_msg()))])),
                ["forever"] => grpc_head(
                    None,
                    StreamBody::new(
                        stream::iter(vec![Ok(Frame::data(grpc_msg()))]).chain(stream::pending()),
                    )
                    .boxed_unsync(),
                ),
                ["slowstream"] => grpc_head(
                    None,
                    StreamBody::new(stream::unfold(0u8, |i| async move {
                        match i {
                            0 => Some((Ok(Frame::data(grpc_msg())), 1)),
                            1 => {
                                tokio::time::sleep(Duration::from_secs(5)).await;
                                Some((Ok(grpc_trailers("0")), 2))
                            }
                            _ => None,
                        }
                    }))
                    .boxed_unsync(),
                ),
                ["slowhead"] => {
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    grpc_head(
                        None,
                        resp_body(vec![Ok(Frame::data(grpc_msg())), Ok(grpc_trailers("0"))]),
                    )
                }
                ["midstream-error"] => grpc_head(
                    None,
                    StreamBody::new(stream::unfold(0u8, |i| async move {
                        match i {
                            0 => Some((Ok(Frame::data(grpc_msg())), 1)),
                            1 => {
                                tokio::time::sleep(Duration::from_secs(1)).await;
                                Some((
                                    Err::<Frame<Bytes>, BoxError>("server stream failed".into()),
                                    2,
                                ))
                            }
                            _ => None,
                        }
                    }))
                    .boxed_unsync(),
                ),
                _ => panic!("unknown path {path}"),
            };
            Ok(res)
        })
    }))
    .await
}

fn grpc_req(addr: SocketAddr, path: &str) -> Request<Full<Bytes>> {
    Request::post(format!("http://{addr}{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(Full::new(grpc_msg()))
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn breaker_judges_grpc_status_in_trailers() {
    let addr = fake_grpc_server(Arc::default()).await;
    let layer = CircuitBreakerLayer::builder()
        .name("grpc")
        .classifier(GrpcClassifier::new())
        .count_window(100)
        .minimum_calls(100)
        .build()
        .unwrap();
    let handle = layer.handle();
    let svc = layer.layer(hyper_client::<Full<Bytes>>(true));

    // UNAVAILABLE in the trailers: a failure, judged at the end of the body.
    let res = svc
        .clone()
        .oneshot(grpc_req(addr, "/trailers/14"))
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(handle.metrics().calls, 0, "not judged before the body ends");
    let body = res.into_body().collect().await.unwrap();
    assert_eq!(body.trailers().unwrap().get("grpc-status").unwrap(), "14");
    let m = handle.metrics();
    assert_eq!(
        (m.calls, m.failures),
        (1, 1),
        "UNAVAILABLE in trailers is a failure"
    );

    // OK in the trailers.
    let res = svc
        .clone()
        .oneshot(grpc_req(addr, "/trailers/0"))
        .await
        .unwrap();
    res.into_body().collect().await.unwrap();
    let m = handle.metrics();
    assert_eq!((m.calls, m.failures), (2, 1));

    // INTERNAL after a message (unary answer with initial metadata first).
    let res = svc
        .clone()
        .oneshot(grpc_req(addr, "/trailers/13"))
        .await
        .unwrap();
    res.into_body().collect().await.unwrap();
    assert_eq!(handle.metrics().failures, 2);

    // NotFound in trailers: the caller's problem, a success.
    let res = svc
        .clone()
        .oneshot(grpc_req(addr, "/trailers/5"))
        .await
        .unwrap();
    res.into_body().collect().await.unwrap();
    let m = handle.metrics();
    assert_eq!((m.calls, m.failures), (4, 2));

    // Trailers-only error: judged at the head.
    let res = svc
        .clone()
        .oneshot(grpc_req(addr, "/head/13"))
        .await
        .unwrap();
    let m = handle.metrics();
    assert_eq!((m.calls, m.failures), (5, 3), "judged at the head");
    drop(res);
    assert_eq!(handle.metrics().calls, 5);

    // A proxy's 502 page without grpc-status: Unavailable, a failure at the head.
    let res = svc
        .clone()
        .oneshot(grpc_req(addr, "/http/502"))
        .await
        .unwrap();
    drop(res);
    let m = handle.metrics();
    assert_eq!((m.calls, m.failures), (6, 4));

    // A body that ends without trailers: Unknown, a failure.
    let res = svc.clone().oneshot(grpc_req(addr, "/noend")).await.unwrap();
    res.into_body().collect().await.unwrap();
    let m = handle.metrics();
    assert_eq!((m.calls, m.failures), (7, 5), "no trailers is Unknown");

    // A stream that fails mid-way: a failure.
    let res = svc
        .clone()
        .oneshot(grpc_req(addr, "/midstream-error"))
        .await
        .unwrap();
    let r = res.into_body().collect().await;
    assert!(r.is_err());
    let m = handle.metrics();
    assert_eq!((m.calls, m.failures), (8, 6), "a body error is a failure");

    // A stream dropped by the caller: neither way.
    let mut res = svc
        .clone()
        .oneshot(grpc_req(addr, "/forever"))
        .await
        .unwrap();
    let _ = frame(res.body_mut()).await.unwrap().unwrap();
    drop(res);
    assert_eq!(handle.metrics().calls, 8, "dropped: Ignored by default");
}

/// hyper stops polling a body whose `is_end_stream()` is true; so may any
/// consumer (http-body's contract). A body that ended without trailers is
/// Unknown (a failure) — is it still, when the consumer stops at
/// `is_end_stream()` instead of polling `None`?
#[tokio::test(start_paused = true)]
async fn status_body_ended_without_trailers_seen_through_is_end_stream() {
    let addr = fake_grpc_server(Arc::default()).await;
    let layer = CircuitBreakerLayer::builder()
        .classifier(GrpcClassifier::new())
        .minimum_calls(100)
        .build()
        .unwrap();
    let handle = layer.handle();
    let svc = layer.layer(hyper_client::<Full<Bytes>>(true));
    let mut res = svc.oneshot(grpc_req(addr, "/noend")).await.unwrap();
    let mut frames = 0;
    while !res.body().is_end_stream() && frames < 10 {
        if frame(res.body_mut()).await.is_none() {
            break;
        }
        frames += 1;
    }
    let ended_by_flag = res.body().is_end_stream();
    drop(res);
    let m = handle.metrics();
    assert_eq!(
        (m.calls, m.failures),
        (1, 1),
        "body ended without trailers (is_end_stream={ended_by_flag}) after {frames} frame(s): counted as {m:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn when_dropped_failure_counts_a_dropped_stream() {
    let addr = fake_grpc_server(Arc::default()).await;
    let layer = CircuitBreakerLayer::builder()
        .classifier(GrpcClassifier::new().when_dropped(Outcome::Failure))
        .minimum_calls(100)
        .build()
        .unwrap();
    let handle = layer.handle();
    let svc = layer.layer(hyper_client::<Full<Bytes>>(true));
    let res = svc.oneshot(grpc_req(addr, "/forever")).await.unwrap();
    drop(res);
    let m = handle.metrics();
    assert_eq!((m.calls, m.failures), (1, 1));
}

#[tokio::test(start_paused = true)]
async fn slow_call_timing_stops_at_the_head() {
    let addr = fake_grpc_server(Arc::default()).await;
    let layer = CircuitBreakerLayer::builder()
        .classifier(GrpcClassifier::new())
        .minimum_calls(100)
        .slow_call_duration(Duration::from_secs(1))
        .build()
        .unwrap();
    let handle = layer.handle();
    let svc = layer.layer(hyper_client::<Full<Bytes>>(true));
    let res = svc
        .clone()
        .oneshot(grpc_req(addr, "/slowstream"))
        .await
        .unwrap();
    res.into_body().collect().await.unwrap();
    let m = handle.metrics();
    assert_eq!(
        (m.calls, m.slow_calls, m.failures),
        (1, 0, 0),
        "a long stream is not a slow call"
    );
    let res = svc.oneshot(grpc_req(addr, "/slowhead")).await.unwrap();
    res.into_body().collect().await.unwrap();
    let m = handle.metrics();
    assert_eq!((m.calls, m.slow_calls), (2, 1), "a slow head is");
}

#[tokio::test(start_paused = true)]
async fn max_half_open_duration_bounds_a_never_ending_probe() {
    let addr = fake_grpc_server(Arc::default()).await;
    let log = Log::default();
    let layer = CircuitBreakerLayer::builder()
        .classifier(GrpcClassifier::new())
        .count_window(10)
        .minimum_calls(1)
        .wait_duration(Duration::from_secs(1))
        .half_open_calls(1)
        .max_half_open_duration(Duration::from_secs(10))
        .on_event(log.listener())
        .build()
        .unwrap();
    let handle = layer.handle();
    let svc = layer.layer(hyper_client::<Full<Bytes>>(true));

    let _ = svc
        .clone()
        .oneshot(grpc_req(addr, "/head/14"))
        .await
        .unwrap();
    assert_eq!(handle.state(), CircuitState::Open);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let probe = svc
        .clone()
        .oneshot(grpc_req(addr, "/forever"))
        .await
        .expect("the probe is admitted");
    assert_eq!(handle.state(), CircuitState::HalfOpen);
    let err = svc
        .clone()
        .oneshot(grpc_req(addr, "/trailers/0"))
        .await
        .unwrap_err();
    assert_eq!(ErrorKind::of(&err), ErrorKind::CircuitOpen);

    tokio::time::sleep(Duration::from_secs(11)).await;
    let r = svc.clone().oneshot(grpc_req(addr, "/trailers/0")).await;
    eprintln!(
        "after max_half_open_duration: state {:?}, call ok={}",
        handle.state(),
        r.is_ok()
    );
    assert!(
        log.transitions().contains(&(
            CircuitState::HalfOpen,
            CircuitState::Open,
            TransitionReason::HalfOpenTimeout
        )),
        "{:?}",
        log.transitions()
    );
    // After the open wait, a new probe closes it.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let res = svc
        .clone()
        .oneshot(grpc_req(addr, "/trailers/0"))
        .await
        .expect("a new probe");
    res.into_body().collect().await.unwrap();
    assert_eq!(
        handle.state(),
        CircuitState::Closed,
        "{:?}",
        log.transitions()
    );
    // The old probe ends now: it must not change anything.
    drop(probe);
    assert_eq!(handle.state(), CircuitState::Closed);
}

/// The retry judges heads: a 200 head whose trailers say UNAVAILABLE is
/// committed (not retried) but the breaker below counts it.
#[tokio::test(start_paused = true)]
async fn retry_over_breaker_with_grpc_codes() {
    let requests = Arc::new(AtomicUsize::new(0));
    let addr = fake_grpc_server(requests.clone()).await;
    let breaker = CircuitBreakerLayer::builder()
        .classifier(GrpcClassifier::new())
        .minimum_calls(100)
        .build()
        .unwrap();
    let handle = breaker.handle();
    let client = hyper_client::<ReplayBody<Full<Bytes>>>(true);
    let inner = breaker.layer(client);
    let run = |path: &'static str, classifier: GrpcClassifier| {
        let inner = inner.clone();
        async move {
            let log = Log::default();
            let retry = RetryLayer::builder()
                .classifier(classifier)
                .requests(ReplayBodies::default())
                .backoff(backoff())
                .no_budget()
                .on_event(log.listener())
                .build()
                .unwrap();
            let res = retry.layer(inner).oneshot(grpc_req(addr, path)).await;
            (res, log)
        }
    };
    let before = requests.load(Ordering::SeqCst);
    let (res, log) = run("/trailers/14", GrpcClassifier::new()).await;
    res.unwrap().into_body().collect().await.unwrap();
    assert_eq!(
        requests.load(Ordering::SeqCst) - before,
        1,
        "committed at the head: not retried"
    );
    assert_eq!(log.attempts(), 1);
    assert_eq!(handle.metrics().failures, 1, "but the breaker counted it");

    let (res, log) = run("/head/14", GrpcClassifier::new()).await;
    assert_eq!(res.unwrap().headers()["grpc-status"], "14");
    assert_eq!(log.attempts(), 3, "{:?}", log.take());
    assert_eq!(log.gave_up(), vec![(3, GiveUpReason::MaxAttempts)]);

    let (res, log) = run("/head/13", GrpcClassifier::new()).await;
    res.unwrap();
    assert_eq!(log.attempts(), 1);
    assert_eq!(log.gave_up(), vec![(1, GiveUpReason::FailureNotRetryable)]);

    let (_, log) = run(
        "/head/13",
        GrpcClassifier::new().retryable_code(GrpcCode::Internal),
    )
    .await;
    assert_eq!(log.attempts(), 3);

    let (_, log) = run("/http/503", GrpcClassifier::new()).await;
    assert_eq!(log.attempts(), 3, "a proxy's 503 is Unavailable: retried");
    let (_, log) = run("/http/500", GrpcClassifier::new()).await;
    assert_eq!(log.attempts(), 1, "500 is Unknown: not retried");
    assert_eq!(log.gave_up(), vec![(1, GiveUpReason::FailureNotRetryable)]);
    let (_, log) = run("/head/abc", GrpcClassifier::new()).await;
    assert_eq!(log.attempts(), 1);

    let (_, log) = run("/pushback/-1", GrpcClassifier::new()).await;
    assert_eq!(log.attempts(), 1);
    assert_eq!(log.gave_up(), vec![(1, GiveUpReason::ServerSaidNo)]);
    let (_, log) = run("/pushback/500", GrpcClassifier::new()).await;
    let ev = log.take();
    assert!(
        ev.iter().any(|e| matches!(e, Ev::Retry { delay, hinted: true, .. } if *delay == Duration::from_millis(500))),
        "{ev:?}"
    );
}

// ---------------------------------------------------------------------------
// Your own classifier with the breaker
// ---------------------------------------------------------------------------

/// Judges at the head: one empty `impl JudgesAtHead`, as the docs say.
#[derive(Clone)]
struct FiveHundreds;

impl<Bd, E> Classify<Response<Bd>, E> for FiveHundreds {
    fn classify(&self, r: &Result<Response<Bd>, E>) -> Outcome {
        match r {
            Ok(res) if res.status().is_server_error() => Outcome::Failure,
            Ok(_) => Outcome::Success,
            Err(_) => Outcome::Failure,
        }
    }
}
impl JudgesAtHead for FiveHundreds {}

/// Judges at the end of the body: a trailer `x-verdict: fail`.
#[derive(Clone)]
struct TrailerVerdict;

impl<Bd, E> Classify<Response<Bd>, E> for TrailerVerdict {
    fn classify(&self, r: &Result<Response<Bd>, E>) -> Outcome {
        match r {
            Ok(res) if res.status().is_server_error() => Outcome::Failure,
            Ok(_) => Outcome::Success,
            Err(_) => Outcome::Failure,
        }
    }
}

impl<Bd, E> Settle<Response<Bd>, E> for TrailerVerdict {
    type Judge = ();
    type Response<T: Tracker> = Response<VerdictBody<Bd, T>>;

    fn verdict(&self, r: &Result<Response<Bd>, E>) -> Verdict<()> {
        match r {
            Ok(res) if res.status() == StatusCode::OK => Verdict::AtEnd(()),
            _ => Verdict::Now(self.classify(r)),
        }
    }

    fn wrap<T: Tracker>(
        result: Result<Response<Bd>, E>,
        pending: Option<((), T)>,
    ) -> Result<Self::Response<T>, E> {
        result.map(|res| {
            res.map(|inner| VerdictBody {
                inner,
                tracker: pending.map(|((), t)| t),
            })
        })
    }
}

struct VerdictBody<Bd, T> {
    inner: Bd,
    tracker: Option<T>,
}

impl<Bd: Body + Unpin, T: Tracker + Unpin> Body for VerdictBody<Bd, T> {
    type Data = Bd::Data;
    type Error = Bd::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        let outcome = match &polled {
            Poll::Ready(Some(Ok(f))) => f.trailers_ref().map(|t| {
                if t.get("x-verdict").is_some_and(|v| v == "fail") {
                    Outcome::Failure
                } else {
                    Outcome::Success
                }
            }),
            Poll::Ready(Some(Err(_))) => Some(Outcome::Failure),
            Poll::Ready(None) => Some(Outcome::Success),
            Poll::Pending => None,
        };
        if let Some(o) = outcome
            && let Some(t) = this.tracker.take()
        {
            t.finish(o);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[tokio::test(start_paused = true)]
async fn your_own_classifier_with_the_breaker() {
    // At the head.
    let server = Server::start(
        vec![Reply::status(500), Reply::status(500)],
        Reply::status(200),
    )
    .await;
    let layer = CircuitBreakerLayer::builder()
        .classifier(FiveHundreds)
        .count_window(2)
        .minimum_calls(2)
        .build()
        .unwrap();
    let handle = layer.handle();
    let svc = layer.layer(hyper_client::<Full<Bytes>>(false));
    for _ in 0..2 {
        let r = svc
            .clone()
            .oneshot(Request::get(server.url("/")).body(Full::default()).unwrap())
            .await
            .unwrap();
        assert_eq!(r.status(), 500);
    }
    assert_eq!(handle.state(), CircuitState::Open);

    // At the end of the body, with a Settle of our own.
    let addr = custom_server(Arc::new(|r: Request<Incoming>| {
        Box::pin(async move {
            let fail = r.uri().path() == "/fail";
            let t = if fail {
                trailer_map("x-verdict", "fail")
            } else {
                trailer_map("x-verdict", "ok")
            };
            Ok(Response::new(resp_body(vec![
                Ok(Frame::data(Bytes::from_static(b"data"))),
                Ok(Frame::trailers(t)),
            ])))
        })
    }))
    .await;
    let layer = CircuitBreakerLayer::builder()
        .classifier(TrailerVerdict)
        .minimum_calls(100)
        .build()
        .unwrap();
    let handle = layer.handle();
    let svc = layer.layer(hyper_client::<Full<Bytes>>(true));
    let res = svc
        .clone()
        .oneshot(
            Request::get(format!("http://{addr}/fail"))
                .body(Full::default())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(handle.metrics().calls, 0);
    res.into_body().collect().await.unwrap();
    let m = handle.metrics();
    assert_eq!((m.calls, m.failures), (1, 1));
    let res = svc
        .oneshot(
            Request::get(format!("http://{addr}/ok"))
                .body(Full::default())
                .unwrap(),
        )
        .await
        .unwrap();
    res.into_body().collect().await.unwrap();
    let m = handle.metrics();
    assert_eq!((m.calls, m.failures), (2, 1));
}

// ---------------------------------------------------------------------------
// Retry events and HTTP method rules
// ---------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn retry_method_rules_and_events() {
    // Idempotent: retried, Retry(Failure).
    for method in [
        Method::GET,
        Method::HEAD,
        Method::PUT,
        Method::DELETE,
        Method::OPTIONS,
    ] {
        let server = Server::start(vec![Reply::status(503)], Reply::status(200)).await;
        let log = Log::default();
        let svc = http_retry(DEFAULT_REPLAY_LIMIT, 3, &log).layer(hyper_client(false));
        let r = svc
            .oneshot(req(method.clone(), &server.url("/"), empty()))
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{method}");
        assert_eq!(log.retries(), vec![(1, RetryReason::Failure)], "{method}");
        assert!(log.gave_up().is_empty());
    }
    // Not idempotent: the 503 is returned, GaveUp(RequestNotRetryable).
    for method in [Method::POST, Method::PATCH] {
        let server = Server::start(vec![Reply::status(503)], Reply::status(200)).await;
        let log = Log::default();
        let svc = http_retry(DEFAULT_REPLAY_LIMIT, 3, &log).layer(hyper_client(false));
        let r = svc
            .oneshot(req(method.clone(), &server.url("/"), full("x")))
            .await
            .unwrap();
        assert_eq!(r.status(), 503, "{method}");
        assert_eq!(server.seen().len(), 1);
        assert_eq!(
            log.gave_up(),
            vec![(1, GiveUpReason::RequestNotRetryable)],
            "{method}"
        );
    }
    // A 5xx every time: MaxAttempts.
    let server = Server::start(vec![], Reply::status(502)).await;
    let log = Log::default();
    let svc = http_retry(DEFAULT_REPLAY_LIMIT, 3, &log).layer(hyper_client(false));
    let r = svc
        .oneshot(req(Method::GET, &server.url("/"), empty()))
        .await
        .unwrap();
    assert_eq!(r.status(), 502);
    assert_eq!(server.seen().len(), 3);
    assert_eq!(log.gave_up(), vec![(3, GiveUpReason::MaxAttempts)]);
    // A 4xx is a success: no retry, no GaveUp.
    let server = Server::start(vec![], Reply::status(404)).await;
    let log = Log::default();
    let svc = http_retry(DEFAULT_REPLAY_LIMIT, 3, &log).layer(hyper_client(false));
    let r = svc
        .oneshot(req(Method::GET, &server.url("/"), empty()))
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert!(log.gave_up().is_empty() && log.retries().is_empty());
    // Retry-After within the cap is used, and flagged as hinted.
    let server = Server::start(
        vec![Reply::status(503).header("retry-after", "2")],
        Reply::status(200),
    )
    .await;
    let log = Log::default();
    let svc = http_retry(DEFAULT_REPLAY_LIMIT, 3, &log).layer(hyper_client(false));
    let r = svc
        .oneshot(req(Method::GET, &server.url("/"), empty()))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let ev = log.take();
    assert!(
        ev.iter().any(|e| matches!(e, Ev::Retry { delay, hinted: true, .. } if *delay == Duration::from_secs(2))),
        "{ev:?}"
    );
    let arr = server.arrivals_ms();
    assert!(arr[1] - arr[0] >= 2000, "{arr:?}");
}

// ---------------------------------------------------------------------------
// tonic: a real server and generated clients over a Channel
// ---------------------------------------------------------------------------

async fn health_server(listener: TcpListener) -> tonic_health::server::HealthReporter {
    let (reporter, service) = tonic_health::server::health_reporter();
    let incoming = stream::unfold(listener, |l| async move {
        let r = l.accept().await.map(|(s, _)| {
            let _ = s.set_nodelay(true);
            s
        });
        Some((r, l))
    });
    tokio::spawn(async move {
        let _ = tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(Box::pin(incoming))
            .await;
    });
    reporter
}

#[tokio::test(start_paused = true)]
async fn tonic_health_through_the_breaker() {
    use tonic_health::ServingStatus;
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_client::HealthClient;

    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let reporter = health_server(listener).await;
    reporter
        .set_service_status("svc", ServingStatus::Serving)
        .await;

    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .tcp_nodelay(true)
        .connect()
        .await
        .unwrap();
    let layer = CircuitBreakerLayer::builder()
        .classifier(GrpcClassifier::new())
        .minimum_calls(100)
        .build()
        .unwrap();
    let handle = layer.handle();
    let mut client = HealthClient::new(layer.layer(channel));

    let r = client
        .check(HealthCheckRequest {
            service: "svc".into(),
        })
        .await
        .unwrap();
    assert_eq!(r.into_inner().status, ServingStatus::Serving as i32);
    let m = handle.metrics();
    assert_eq!((m.calls, m.failures), (1, 0));

    let s = client
        .check(HealthCheckRequest {
            service: "nope".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(s.code(), tonic::Code::NotFound);
    let m = handle.metrics();
    assert_eq!(
        (m.calls, m.failures),
        (2, 0),
        "NotFound is the caller's problem"
    );

    // A Watch stream stays open: not judged; dropped: neither way.
    let mut watch = client
        .watch(HealthCheckRequest {
            service: "svc".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let first = watch.message().await.unwrap().unwrap();
    assert_eq!(first.status, ServingStatus::Serving as i32);
    assert_eq!(handle.metrics().calls, 2);
    drop(watch);
    assert_eq!(handle.metrics().calls, 2);
}

/// A tonic call over a `Channel` whose connection was refused is retried
/// (gRPC calls are POSTs): the retry below the generated client, with
/// `ReplayBodies` and tonic's body.
#[tokio::test(start_paused = true)]
async fn tonic_refused_connection_is_retried() {
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_client::HealthClient;

    let addr = closed_port().await;
    let log = Log::default();
    let started = Arc::new(AtomicUsize::new(0));
    let s2 = started.clone();
    let retry = RetryLayer::builder()
        .classifier(GrpcClassifier::new())
        .requests(ReplayBodies::default())
        .backoff(backoff())
        .no_budget()
        .on_event(log.listener())
        .on_event(move |e: &Event<'_>| {
            if let Some(RetryEvent::Retry {
                reason: RetryReason::NotSent,
                ..
            }) = e.kind()
                && s2.fetch_add(1, Ordering::SeqCst) == 0
            {
                {
                    let std_listener = std::net::TcpListener::bind(addr).unwrap();
                    std_listener.set_nonblocking(true).unwrap();
                    let listener = TcpListener::from_std(std_listener).unwrap();
                    tokio::spawn(async move {
                        let _ = health_server(listener).await;
                    });
                }
            }
        })
        .build()
        .unwrap();
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .tcp_nodelay(true)
        .connect_lazy();
    let svc = tower::ServiceBuilder::new()
        .layer(retry)
        .map_request(|r: Request<ReplayBody<tonic::body::Body>>| r.map(tonic::body::Body::new))
        .service(channel);
    let mut client = HealthClient::new(svc);
    let r = bounded(
        "tonic",
        client.check(HealthCheckRequest {
            service: String::new(),
        }),
    )
    .await;
    let ev = log.take();
    let r = r.unwrap_or_else(|s| panic!("{s:?}; events {ev:?}"));
    assert_eq!(
        r.into_inner().status,
        tonic_health::ServingStatus::Serving as i32
    );
    assert!(
        ev.iter().any(|e| matches!(
            e,
            Ev::Retry {
                reason: RetryReason::NotSent,
                ..
            }
        )),
        "{ev:?}"
    );
}

// ---------------------------------------------------------------------------
// Harder edges of ReplayBodies
// ---------------------------------------------------------------------------

/// A body that knows its exact size and ends (`is_end_stream`) as soon as
/// its chunks run out, as a file body with a content-length does.
struct SizedChunks {
    chunks: std::collections::VecDeque<Bytes>,
}

impl SizedChunks {
    fn new(n: usize, size: usize, byte: u8) -> Self {
        Self {
            chunks: (0..n)
                .map(|i| Bytes::from(vec![byte.wrapping_add(i as u8); size]))
                .collect(),
        }
    }
}

impl Body for SizedChunks {
    type Data = Bytes;
    type Error = BoxError;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        Poll::Ready(self.chunks.pop_front().map(|c| Ok(Frame::data(c))))
    }
    fn is_end_stream(&self) -> bool {
        self.chunks.is_empty()
    }
    fn size_hint(&self) -> http_body::SizeHint {
        http_body::SizeHint::with_exact(self.chunks.iter().map(|c| c.len() as u64).sum())
    }
}

/// An exact-sized multi-chunk body, half read by a server that then resets:
/// the retry must send exactly the declared bytes (hyper errors otherwise),
/// and a 503 after a full read must be replayable although hyper never
/// polled the body's `None`.
#[tokio::test(start_paused = true)]
async fn an_exact_sized_streamed_body_half_read_then_replayed() {
    let whole: Vec<u8> = (0..4u8)
        .flat_map(|i| vec![b'k'.wrapping_add(i); 1000])
        .collect();
    for h2 in [false, true] {
        for script in [
            Reply::status(200).reset_after_reading(1500),
            Reply::status(503),
        ] {
            let server = Server::start(vec![script.clone()], Reply::status(200)).await;
            let log = Log::default();
            let layer = RetryLayer::builder()
                .classifier(HttpClassifier::new())
                .requests(ReplayBodies::default())
                .backoff(backoff())
                .no_budget()
                .on_event(log.listener())
                .build()
                .unwrap();
            let svc = layer.layer(hyper_client::<ReplayBody<SizedChunks>>(h2));
            let r = Request::put(server.url("/sized"))
                .body(SizedChunks::new(4, 1000, b'k'))
                .unwrap();
            let res = bounded("sized", svc.oneshot(r)).await;
            let what = format!(
                "h2={h2} first reply {}",
                if script.reset_after.is_some() {
                    "reset"
                } else {
                    "503"
                }
            );
            let res = res.unwrap_or_else(|e| panic!("{what}: {e:?}; events {:?}", log.take()));
            assert_eq!(res.status(), 200, "{what}");
            let seen = server.seen();
            assert_eq!(seen.len(), 2, "{what}");
            assert_eq!(seen[1].body, whole, "{what}");
        }
    }
}

/// "the server answered early": a server that answers 503 at once, and
/// completely, while the client is still sending a body larger than the
/// HTTP/2 flow-control window / the socket buffers, and then neither reads
/// nor resets the request (HTTP/2 allows it: RST_STREAM(NO_ERROR) is a
/// MAY). Without a retry, the caller simply gets the 503. With one, the
/// next attempt must not wait for the first to give the body back (it once
/// did, forever). Over HTTP/2 the stalled stream also holds the
/// connection's flow-control window, which no body can help: the next
/// attempt on that connection stalls until a per-attempt timeout ends it,
/// as the retry docs advise.
#[tokio::test(start_paused = true)]
async fn server_answers_early_and_stops_reading_a_large_body() {
    let mut failures = Vec::new();
    for h2 in [false, true] {
        let n = Arc::new(AtomicUsize::new(0));
        let got: Arc<Mutex<Vec<usize>>> = Arc::default();
        let held: Arc<Mutex<Vec<Incoming>>> = Arc::default();
        let (n2, g2, h3) = (n.clone(), got.clone(), held.clone());
        let addr = custom_server(Arc::new(move |r: Request<Incoming>| {
            let (n, g, h) = (n2.clone(), g2.clone(), h3.clone());
            Box::pin(async move {
                if n.fetch_add(1, Ordering::SeqCst) == 0 {
                    // 503 now, complete; keep the request body, unread.
                    h.lock().unwrap().push(r.into_body());
                    let mut res = Response::new(resp_body(vec![]));
                    *res.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
                    return Ok(res);
                }
                let (bytes, _) = read_all(r.into_body()).await;
                g.lock().unwrap().push(bytes.len());
                Ok(Response::new(resp_body(vec![])))
            })
        }))
        .await;
        // Without palisade: hyper returns the 503.
        let plain = hyper_client::<SizedChunks>(h2);
        let r = Request::put(format!("http://{addr}/early"))
            .body(SizedChunks::new(512, 64 * 1024, 1))
            .unwrap();
        let res = tokio::time::timeout(Duration::from_secs(600), plain.request(r)).await;
        assert_eq!(
            res.expect("plain hyper: no hang")
                .expect("plain hyper")
                .status(),
            503,
            "h2={h2}"
        );
        n.store(0, Ordering::SeqCst);

        let log = Log::default();
        let layer = RetryLayer::builder()
            .classifier(HttpClassifier::new())
            .requests(ReplayBodies::with_limit(64 << 20))
            .backoff(backoff())
            .no_budget()
            .on_event(log.listener())
            .build()
            .unwrap();
        let attempt_timeout =
            palisade::timeout::TimeoutLayer::new(Duration::from_secs(30)).unwrap();
        let svc = layer.layer(attempt_timeout.layer(hyper_client::<ReplayBody<SizedChunks>>(h2)));
        let r = Request::put(format!("http://{addr}/early"))
            .body(SizedChunks::new(512, 64 * 1024, 1))
            .unwrap(); // 32 MiB
        let res = tokio::time::timeout(Duration::from_secs(600), svc.oneshot(r)).await;
        match res {
            Ok(Ok(r)) => {
                let s = r.status();
                if !(s == 503 || (s == 200 && got.lock().unwrap().as_slice() == [32 << 20])) {
                    failures.push(format!("h2={h2}: status {s}, server got {:?}", got.lock().unwrap()));
                }
            }
            // HTTP/2: the connection's window is held by the stalled
            // stream; the attempts time out instead of hanging.
            Ok(Err(e)) if h2 && palisade::error::ErrorKind::of(&e) == palisade::error::ErrorKind::Elapsed => {}
            Ok(Err(e)) => failures.push(format!("h2={h2}: error {e:?}; events {:?}", log.take())),
            Err(_) => failures.push(format!(
                "h2={h2}: the call hung (600 s) after the early 503; events {:?}; server saw {} request(s)",
                log.take(),
                n.load(Ordering::SeqCst)
            )),
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

/// The usual early answer: 503 at once, the request body dropped unread
/// (hyper's server then resets the HTTP/2 stream / closes the connection),
/// optionally after holding it for a while. The body is larger than the
/// flow-control window and socket buffers.
#[tokio::test(start_paused = true)]
async fn server_answers_early_and_drops_a_large_body() {
    let mut failures = Vec::new();
    for h2 in [false, true] {
        for hold in [Duration::ZERO, Duration::from_secs(30)] {
            let n = Arc::new(AtomicUsize::new(0));
            let got: Arc<Mutex<Vec<usize>>> = Arc::default();
            let (n2, g2) = (n.clone(), got.clone());
            let addr = custom_server(Arc::new(move |r: Request<Incoming>| {
                let (n, g) = (n2.clone(), g2.clone());
                Box::pin(async move {
                    if n.fetch_add(1, Ordering::SeqCst) == 0 {
                        let held = r.into_body();
                        tokio::spawn(async move {
                            tokio::time::sleep(hold).await;
                            drop(held);
                        });
                        let mut res = Response::new(resp_body(vec![]));
                        *res.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
                        return Ok(res);
                    }
                    let (bytes, _) = read_all(r.into_body()).await;
                    g.lock().unwrap().push(bytes.len());
                    Ok(Response::new(resp_body(vec![])))
                })
            }))
            .await;
            let log = Log::default();
            let layer = RetryLayer::builder()
                .classifier(HttpClassifier::new())
                .requests(ReplayBodies::with_limit(64 << 20))
                .backoff(backoff())
                .no_budget()
                .on_event(log.listener())
                .build()
                .unwrap();
            let svc = layer.layer(hyper_client::<ReplayBody<SizedChunks>>(h2));
            let r = Request::put(format!("http://{addr}/early"))
                .body(SizedChunks::new(256, 64 * 1024, 1))
                .unwrap(); // 16 MiB
            let res = tokio::time::timeout(Duration::from_secs(600), svc.oneshot(r)).await;
            let what = format!("h2={h2} hold={hold:?}");
            match res {
                Ok(Ok(r)) if r.status() == 200 && got.lock().unwrap().as_slice() == [16 << 20] => {}
                Ok(Ok(r)) => failures.push(format!(
                    "{what}: status {} server got {:?}; events {:?}",
                    r.status(),
                    got.lock().unwrap(),
                    log.take()
                )),
                Ok(Err(e)) => {
                    failures.push(format!("{what}: error {e:?}; events {:?}", log.take()))
                }
                Err(_) => failures.push(format!("{what}: hung; events {:?}", log.take())),
            }
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

/// Many concurrent POSTs (bodies over the replay limit) to a server that is
/// down; it comes back at the first `NotSent` retry. Every call is sent
/// again, once, whole.
#[tokio::test(start_paused = true)]
async fn many_concurrent_refused_posts_share_one_layer() {
    for h2 in [false, true] {
        const N: usize = 30;
        let server = Server::start(vec![], Reply::status(200)).await;
        server.stop().await;
        let log = Log::default();
        let restart = server.clone();
        let layer = RetryLayer::builder()
            .classifier(HttpClassifier::new())
            .requests(ReplayBodies::with_limit(8))
            .backoff(backoff())
            .max_attempts(5)
            .no_budget()
            .on_event(log.listener())
            .on_event(move |e: &Event<'_>| {
                if let Some(RetryEvent::Retry {
                    reason: RetryReason::NotSent,
                    ..
                }) = e.kind()
                {
                    restart.restart();
                }
            })
            .build()
            .unwrap();
        let svc = layer.layer(hyper_client(h2));
        let calls = (0..N).map(|i| {
            let svc = svc.clone();
            let body = format!("post body number {i:04} that is longer than the limit");
            let url = server.url(&format!("/p/{i}"));
            async move { svc.oneshot(req(Method::POST, &url, full(body))).await }
        });
        let results = bounded("refused posts", futures_util::future::join_all(calls)).await;
        for (i, r) in results.into_iter().enumerate() {
            let r = r.unwrap_or_else(|e| panic!("h2={h2} call {i}: {e}"));
            assert_eq!(r.status(), 200);
        }
        let seen = server.seen();
        assert_eq!(seen.len(), N, "h2={h2}");
        for s in &seen {
            let i: usize = s.path.trim_start_matches("/p/").parse().unwrap();
            assert_eq!(
                String::from_utf8_lossy(&s.body),
                format!("post body number {i:04} that is longer than the limit")
            );
        }
    }
}

/// A proxy: hyper's server hands over `Request<Incoming>` (the body as it
/// arrives, exact-sized for a content-length), forwarded through the retry
/// with `ReplayBodies` to an upstream that answers 503 then 200.
#[tokio::test(start_paused = true)]
async fn a_proxy_forwards_incoming_bodies_through_the_retry() {
    for front_h2 in [false, true] {
        for up_h2 in [false, true] {
            let script = [503, 200, 503, 200, 503, 200].map(Reply::status).to_vec();
            let upstream = Server::start(script, Reply::status(200)).await;
            let log = Log::default();
            let layer = RetryLayer::builder()
                .classifier(HttpClassifier::new())
                .requests(ReplayBodies::default())
                .backoff(backoff())
                .no_budget()
                .on_event(log.listener())
                .build()
                .unwrap();
            let forward = layer.layer(hyper_client::<ReplayBody<Incoming>>(up_h2));
            let up = upstream.clone();
            let proxy = custom_server(Arc::new(move |r: Request<Incoming>| {
                let forward = forward.clone();
                let up = up.clone();
                Box::pin(async move {
                    let (mut head, body) = r.into_parts();
                    head.uri = up.url(head.uri.path()).parse().unwrap();
                    head.version = http::Version::HTTP_11;
                    head.headers.remove("host");
                    let status = match forward.oneshot(Request::from_parts(head, body)).await {
                        Ok(res) => res.status(),
                        Err(_) => StatusCode::BAD_GATEWAY,
                    };
                    let mut res = Response::new(resp_body(vec![]));
                    *res.status_mut() = status;
                    Ok(res)
                })
            }))
            .await;
            let front = hyper_client::<B>(front_h2);
            for (name, body, want) in [
                ("sized", full(vec![b's'; 3000]), vec![b's'; 3000]),
                (
                    "chunked",
                    chunks(&[b"one-", b"two-", b"three"], None),
                    b"one-two-three".to_vec(),
                ),
                ("empty", empty(), vec![]),
            ] {
                let before = upstream.seen().len();
                let r = req(Method::PUT, &format!("http://{proxy}/up/{name}"), body);
                let res = bounded(name, front.request(r)).await.unwrap();
                let what = format!("front h2={front_h2} upstream h2={up_h2} {name}");
                assert_eq!(res.status(), 200, "{what}: events {:?}", log.take());
                let seen = upstream.seen();
                assert_eq!(seen.len() - before, 2, "{what}");
                for s in &seen[before..] {
                    assert_eq!(s.body, want, "{what}");
                }
            }
        }
    }
}

/// Two probes: one finishes (a success), the other is a never-ending
/// stream. "the breaker is never stuck half-open": after
/// `max_half_open_duration` it must leave HalfOpen.
#[tokio::test(start_paused = true)]
async fn max_half_open_duration_with_one_probe_finished_and_one_stuck() {
    let addr = fake_grpc_server(Arc::default()).await;
    let log = Log::default();
    let layer = CircuitBreakerLayer::builder()
        .classifier(GrpcClassifier::new())
        .count_window(10)
        .minimum_calls(1)
        .wait_duration(Duration::from_secs(1))
        .half_open_calls(2)
        .max_half_open_duration(Duration::from_secs(10))
        .on_event(log.listener())
        .build()
        .unwrap();
    let handle = layer.handle();
    let svc = layer.layer(hyper_client::<Full<Bytes>>(true));

    let _ = svc
        .clone()
        .oneshot(grpc_req(addr, "/head/14"))
        .await
        .unwrap();
    assert_eq!(handle.state(), CircuitState::Open);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let stuck = svc
        .clone()
        .oneshot(grpc_req(addr, "/forever"))
        .await
        .expect("probe 1");
    let done = svc
        .clone()
        .oneshot(grpc_req(addr, "/trailers/0"))
        .await
        .expect("probe 2");
    done.into_body().collect().await.unwrap();
    assert_eq!(handle.state(), CircuitState::HalfOpen);
    let mut states = Vec::new();
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_secs(11)).await;
        let r = svc.clone().oneshot(grpc_req(addr, "/trailers/0")).await;
        if let Ok(res) = r {
            let _ = res.into_body().collect().await;
        }
        states.push(handle.state());
    }
    drop(stuck);
    eprintln!(
        "one probe stuck: states {states:?}; transitions {:?}",
        log.transitions()
    );
    assert!(
        states.iter().any(|s| *s != CircuitState::HalfOpen),
        "stuck half-open for 55 s with one probe out: {states:?}; transitions {:?}; metrics {:?}",
        log.transitions(),
        handle.metrics()
    );
}
