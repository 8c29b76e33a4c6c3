//! Which part of a call the bulkhead and the timeout cover, against real
//! peers: a hyper server on 127.0.0.1 that streams slow bodies, and
//! hyper-util's client wrapped in the layers. Paused time throughout: the
//! server's frames are spaced by tokio sleeps, and every instant below is
//! tokio's.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body, Frame};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use palisade::bulkhead::{BulkheadBuilder, BulkheadLayer};
use palisade::error::{BoxError, ErrorKind};
use palisade::timeout::TimeoutLayer;
use tokio::net::TcpListener;
use tokio::time::{Instant, Sleep, sleep};
use tower::{Layer, Service, ServiceExt};

const MS: Duration = Duration::from_millis(1);
const FRAME: &[u8] = b"0123456789";
/// The slow body: 8 frames, one every 125 ms: it lasts 1 s.
const SLOW: &str = "/stream/8/125";
/// A body that lasts 10 s, for a test that must see it end early.
const LONG: &str = "/stream/80/125";

/// How many of the server's response bodies are open, and the most at once.
#[derive(Default)]
struct Gauge {
    open: AtomicUsize,
    max: AtomicUsize,
}

/// One open body, counted by its gauge until dropped.
struct Open(Arc<Gauge>);

impl Open {
    fn new(gauge: &Arc<Gauge>) -> Self {
        let now = gauge.open.fetch_add(1, SeqCst) + 1;
        gauge.max.fetch_max(now, SeqCst);
        Self(gauge.clone())
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, SeqCst);
    }
}

/// The server's streamed body: `left` frames, each after a sleep of `gap`.
struct Slow {
    left: u32,
    gap: Duration,
    sleep: Pin<Box<Sleep>>,
    _open: Open,
}

impl Body for Slow {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.left == 0 {
            return Poll::Ready(None);
        }
        ready!(self.sleep.as_mut().poll(cx));
        self.left -= 1;
        let next = self.sleep.deadline() + self.gap;
        self.sleep.as_mut().reset(next);
        Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(FRAME)))))
    }

    fn is_end_stream(&self) -> bool {
        self.left == 0
    }
}

/// A hyper HTTP/1.1 server on 127.0.0.1. Paths:
/// `/stream/{frames}/{gap_ms}[/{head_ms}]` a slow chunked body, counted by
/// the gauge, its head sent after `head_ms` (default 0);
/// `/empty` no body; `/sized` an 11-byte body with its length;
/// `/late/{ms}` no body, with the head sent after `ms`.
struct Server {
    addr: SocketAddr,
    gauge: Arc<Gauge>,
}

impl Server {
    async fn start() -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let gauge = Arc::new(Gauge::default());
        let counted = gauge.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let gauge = counted.clone();
                let handler = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let gauge = gauge.clone();
                    async move { Ok::<_, Infallible>(answer(req.uri().path(), &gauge).await) }
                });
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), handler),
                );
            }
        });
        Server { addr, gauge }
    }

    fn get(&self, path: &str) -> Request<Empty<Bytes>> {
        Request::get(format!("http://{}{path}", self.addr))
            .body(Empty::new())
            .unwrap()
    }

    fn open(&self) -> usize {
        self.gauge.open.load(SeqCst)
    }

    fn max_open(&self) -> usize {
        self.gauge.max.load(SeqCst)
    }
}

async fn answer(path: &str, gauge: &Arc<Gauge>) -> Response<UnsyncBoxBody<Bytes, Infallible>> {
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let body = match parts[..] {
        ["stream", frames, gap, ..] => {
            if let Some(head) = parts.get(3) {
                sleep(MS * head.parse::<u32>().unwrap()).await;
            }
            let gap = MS * gap.parse::<u32>().unwrap();
            Slow {
                left: frames.parse().unwrap(),
                gap,
                sleep: Box::pin(sleep(gap)),
                _open: Open::new(gauge),
            }
            .boxed_unsync()
        }
        ["sized"] => Full::new(Bytes::from_static(b"hello world")).boxed_unsync(),
        ["late", ms] => {
            sleep(MS * ms.parse::<u32>().unwrap()).await;
            Empty::new().boxed_unsync()
        }
        _ => Empty::new().boxed_unsync(),
    };
    Response::new(body)
}

type HttpClient = Client<HttpConnector, Empty<Bytes>>;

fn client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

/// Reads a body to its end: the number of bytes, or its error.
async fn read_all<B>(body: B) -> Result<usize, BoxError>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    let mut body = std::pin::pin!(body);
    let mut read = 0;
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.map_err(Into::into)?.into_data() {
            read += data.len();
        }
    }
    Ok(read)
}

fn bulkhead_of_2() -> BulkheadBuilder {
    BulkheadLayer::builder().max_concurrent(2).max_queue(8)
}

// ---- bulkhead ----

#[tokio::test(start_paused = true)]
async fn by_default_a_bulkhead_of_2_lets_8_bodies_stream_at_once() {
    let server = Server::start().await;
    let layer = bulkhead_of_2().build().unwrap();
    let handle = layer.handle();
    let svc = layer.layer(client());
    let calls: Vec<_> = (0..8)
        .map(|_| {
            let call = svc.clone().oneshot(server.get(SLOW));
            tokio::spawn(async move { read_all(call.await?.into_body()).await })
        })
        .collect();
    for call in calls {
        assert_eq!(call.await.unwrap().unwrap(), 8 * FRAME.len());
    }
    // Today's behaviour, as tower's ConcurrencyLimit: the permit covers the
    // call up to the head, so every body streamed at once.
    assert_eq!(server.max_open(), 8);
    assert_eq!(handle.in_flight(), 0);
}

#[tokio::test(start_paused = true)]
async fn covering_the_body_keeps_at_most_2_bodies_open() {
    let server = Server::start().await;
    let layer = bulkhead_of_2().cover_body().build().unwrap();
    let handle = layer.handle();
    let svc = layer.layer(client());
    let calls: Vec<_> = (0..8)
        .map(|_| {
            let call = svc.clone().oneshot(server.get(SLOW));
            tokio::spawn(async move { read_all(call.await?.into_body()).await })
        })
        .collect();
    for call in calls {
        assert_eq!(call.await.unwrap().unwrap(), 8 * FRAME.len());
    }
    assert_eq!(server.max_open(), 2, "never more than 2 bodies at once");
    assert_eq!(handle.in_flight(), 0, "every body gave its permit back");
}

#[tokio::test(start_paused = true)]
async fn a_body_dropped_half_read_gives_the_permit_back() {
    let server = Server::start().await;
    let layer = BulkheadLayer::builder()
        .max_concurrent(1)
        .cover_body()
        .build()
        .unwrap();
    let handle = layer.handle();
    let mut svc = layer.layer(client());

    let response = svc.ready().await.unwrap().call(server.get(LONG)).await;
    let mut body = response.unwrap().into_body();
    let first = body.frame().await.unwrap().unwrap();
    assert_eq!(first.into_data().unwrap(), FRAME);
    assert_eq!(handle.in_flight(), 1, "the open body holds the permit");
    let refused = svc.ready().await.unwrap().call(server.get("/empty")).await;
    assert_eq!(
        ErrorKind::of(&refused.unwrap_err()),
        ErrorKind::BulkheadFull
    );

    drop(body);
    assert_eq!(handle.in_flight(), 0, "dropping the body gave it back");
    sleep(Duration::from_secs(1)).await;
    assert_eq!(server.open(), 0, "and the server's side of it ended");
    let next = svc.ready().await.unwrap().call(server.get("/empty")).await;
    assert_eq!(next.unwrap().status(), 200);
}

#[tokio::test(start_paused = true)]
async fn an_empty_body_gives_the_permit_back_with_the_head() {
    let server = Server::start().await;
    let layer = BulkheadLayer::builder()
        .max_concurrent(1)
        .cover_body()
        .build()
        .unwrap();
    let handle = layer.handle();
    let mut svc = layer.layer(client());
    let response = svc.ready().await.unwrap().call(server.get("/empty")).await;
    let response = response.unwrap();
    // hyper never polls a body that says it has ended: nor may we wait
    // for it to be polled.
    assert!(response.body().is_end_stream());
    assert_eq!(handle.in_flight(), 0);
    drop(response);
}

#[tokio::test(start_paused = true)]
async fn the_permit_goes_with_the_last_frame_and_hints_pass_through() {
    let server = Server::start().await;
    let layer = BulkheadLayer::builder()
        .max_concurrent(1)
        .cover_body()
        .build()
        .unwrap();
    let handle = layer.handle();
    let mut svc = layer.layer(client());
    let response = svc.ready().await.unwrap().call(server.get("/sized")).await;
    let mut body = response.unwrap().into_body();
    assert_eq!(
        body.size_hint().exact(),
        Some(11),
        "the length is the server's"
    );
    assert!(!body.is_end_stream());
    let mut read = 0;
    while read < 11 {
        read += body
            .frame()
            .await
            .unwrap()
            .unwrap()
            .into_data()
            .unwrap()
            .len();
    }
    // The body says it has ended: a reader such as hyper polls no more, so
    // the permit is back now, not at a `None` that may never be asked for.
    assert!(body.is_end_stream());
    assert_eq!(body.size_hint().exact(), Some(0));
    assert_eq!(handle.in_flight(), 0);
    assert!(body.frame().await.is_none());
}

// ---- timeout ----

const LIMIT: Duration = Duration::from_millis(300);

#[tokio::test(start_paused = true)]
async fn by_default_a_300ms_timeout_lets_a_1s_body_through() {
    let server = Server::start().await;
    let svc = TimeoutLayer::new(LIMIT).unwrap().layer(client());
    let start = Instant::now();
    let response = svc.oneshot(server.get(SLOW)).await.unwrap();
    assert_eq!(
        read_all(response.into_body()).await.unwrap(),
        8 * FRAME.len()
    );
    // Today's behaviour, as tower's Timeout: the limit covers the head only.
    assert_eq!(start.elapsed(), 1000 * MS);
}

#[tokio::test(start_paused = true)]
async fn covering_the_body_cuts_a_1s_body_at_300ms() {
    let server = Server::start().await;
    let layer = TimeoutLayer::builder()
        .timeout(LIMIT)
        .cover_body()
        .build()
        .unwrap();
    let svc = layer.layer(client());
    let start = Instant::now();
    let response = svc.oneshot(server.get(SLOW)).await.unwrap();
    let mut body = std::pin::pin!(response.into_body());
    let mut frames = 0;
    let err = loop {
        match body.frame().await {
            Some(Ok(_)) => frames += 1,
            Some(Err(err)) => break err,
            None => panic!("the body ended in time"),
        }
    };
    assert_eq!(ErrorKind::of(&err), ErrorKind::Elapsed);
    assert_eq!(start.elapsed(), LIMIT, "the deadline counts from the call");
    assert_eq!(frames, 2, "the frames sent at 125 and 250 ms");
    assert!(body.is_end_stream());
    assert!(body.frame().await.is_none(), "nothing after the error");
}

#[tokio::test(start_paused = true)]
async fn the_deadline_counts_from_the_call_not_from_the_head() {
    let server = Server::start().await;
    let layer = TimeoutLayer::builder()
        .timeout(LIMIT)
        .cover_body()
        .build()
        .unwrap();
    let svc = layer.layer(client());
    let start = Instant::now();
    // The head at 100 ms, then frames at 225, 350, ... ms.
    let response = svc.oneshot(server.get("/stream/8/125/100")).await.unwrap();
    assert_eq!(start.elapsed(), 100 * MS);
    let mut body = std::pin::pin!(response.into_body());
    assert!(body.frame().await.unwrap().is_ok());
    let err = body.frame().await.unwrap().unwrap_err();
    assert_eq!(ErrorKind::of(&err), ErrorKind::Elapsed);
    assert_eq!(start.elapsed(), LIMIT);
}

/// The same with a head ready at once, whose timer is armed only when the
/// body is first polled (no peer answers that fast: a `service_fn` does).
#[tokio::test(start_paused = true)]
async fn the_deadline_counts_from_the_call_for_a_head_ready_at_once() {
    let gauge = Arc::new(Gauge::default());
    let layer = TimeoutLayer::builder()
        .timeout(LIMIT)
        .cover_body()
        .build()
        .unwrap();
    let mut svc = layer.layer(tower::service_fn(move |()| {
        let body = Slow {
            left: 8,
            gap: 125 * MS,
            sleep: Box::pin(sleep(125 * MS)),
            _open: Open::new(&gauge),
        };
        std::future::ready(Ok::<_, Infallible>(Response::new(body)))
    }));
    let start = Instant::now();
    let call = svc.ready().await.unwrap().call(());
    sleep(100 * MS).await;
    let response = call.await.unwrap();
    let mut body = response.into_body();
    // The body was made with the call: its frames come at 125, 250, ... ms.
    assert!(body.frame().await.unwrap().is_ok());
    assert!(body.frame().await.unwrap().is_ok());
    let err = body.frame().await.unwrap().unwrap_err();
    assert_eq!(ErrorKind::of(&err), ErrorKind::Elapsed);
    assert_eq!(start.elapsed(), LIMIT);
}

#[tokio::test(start_paused = true)]
async fn covering_the_body_still_bounds_the_head_and_passes_quick_bodies() {
    let server = Server::start().await;
    let layer = TimeoutLayer::builder()
        .timeout(LIMIT)
        .cover_body()
        .build()
        .unwrap();
    let mut svc = layer.layer(client());

    let start = Instant::now();
    let late = svc
        .ready()
        .await
        .unwrap()
        .call(server.get("/late/500"))
        .await;
    assert_eq!(ErrorKind::of(&late.unwrap_err()), ErrorKind::Elapsed);
    assert_eq!(start.elapsed(), LIMIT);

    // 2 frames, 100 ms apart: the body ends at 200 ms, in time.
    let start = Instant::now();
    let quick = svc
        .ready()
        .await
        .unwrap()
        .call(server.get("/stream/2/100"))
        .await;
    let body = quick.unwrap().into_body();
    assert_eq!(read_all(body).await.unwrap(), 2 * FRAME.len());
    assert_eq!(start.elapsed(), 200 * MS);
}

#[tokio::test(start_paused = true)]
async fn a_body_cut_by_the_timeout_gives_the_bulkhead_permit_back() {
    let server = Server::start().await;
    let bulkhead = BulkheadLayer::builder()
        .max_concurrent(1)
        .cover_body()
        .build()
        .unwrap();
    let handle = bulkhead.handle();
    let timeout = TimeoutLayer::builder()
        .timeout(LIMIT)
        .cover_body()
        .build()
        .unwrap();
    let svc = tower::ServiceBuilder::new()
        .layer(bulkhead)
        .layer(timeout)
        .service(client());
    let response = svc.oneshot(server.get(LONG)).await.unwrap();
    let mut body = response.into_body();
    assert_eq!(handle.in_flight(), 1);
    let err = loop {
        if let Err(err) = body.frame().await.unwrap() {
            break err;
        }
    };
    assert_eq!(ErrorKind::of(&err), ErrorKind::Elapsed);
    assert_eq!(handle.in_flight(), 0, "the error ended the body");
    // The server's side of the cut body goes when hyper has seen the
    // connection close.
    drop(body);
    sleep(Duration::from_secs(1)).await;
    assert_eq!(server.open(), 0);
}

// ---- types and configuration ----

#[test]
fn the_body_modes_keep_futures_and_bodies_send() {
    fn send<T: Send>(_: &T) {}
    let bulkhead = bulkhead_of_2().cover_body().build().unwrap();
    let timeout = TimeoutLayer::builder().cover_body().build().unwrap();
    let mut svc = tower::ServiceBuilder::new()
        .layer(bulkhead)
        .layer(timeout)
        .service(tower::service_fn(|()| {
            std::future::ready(Ok::<_, Infallible>(Response::new(Full::new(
                Bytes::from_static(FRAME),
            ))))
        }));
    let mut cx = Context::from_waker(std::task::Waker::noop());
    assert!(svc.poll_ready(&mut cx).is_ready());
    let mut call = svc.call(());
    send(&call);
    let Poll::Ready(Ok(response)) = Pin::new(&mut call).poll(&mut cx) else {
        panic!("the head is ready at once");
    };
    send(&response);
}

#[test]
fn the_body_modes_validate_as_the_default_does() {
    let err = TimeoutLayer::builder()
        .timeout(Duration::ZERO)
        .cover_body()
        .build()
        .unwrap_err();
    assert_eq!(err.parameter(), "timeout");
    let err = BulkheadLayer::builder()
        .max_concurrent(0)
        .cover_body()
        .build()
        .unwrap_err();
    assert_eq!(err.parameter(), "max_concurrent");
}
