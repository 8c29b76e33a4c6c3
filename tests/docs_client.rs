//! Tests written from the public docs alone (README, CHANGELOG's issue 14,
//! the doc comments of the preset, the standard stacks and the
//! reqwest-middleware adapter): each test is one promise those docs make,
//! checked with real peers (the scripted hyper server, reqwest, hyper's
//! legacy client).

#[path = "support/http_server.rs"]
mod http_server;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use http_server::{Reply, Server, closed_port};
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use palisade::Resilience;
use palisade::circuit_breaker::CircuitState;
use palisade::classify::{Classify, ClassifyRequest, DefaultClassifier, JudgesAtHead, Outcome};
use palisade::error::ErrorKind;
use palisade::event::Event;
use palisade::fallback::{Failed, from_sync_fn};
use palisade::middleware::{StackError, StackMiddleware};
use palisade::replay::ReplayBody;
use palisade::retry::{GiveUpReason, RetryEvent};
use palisade::timeout::TimeoutEvent;
use reqwest::Method;
use tower::{Layer, ServiceExt};

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

fn request(method: Method, url: &str) -> reqwest::Request {
    reqwest::Request::new(method, url.parse().unwrap())
}

fn get(url: &str) -> reqwest::Request {
    request(Method::GET, url)
}

fn post(url: &str) -> reqwest::Request {
    request(Method::POST, url)
}

/// hyper's legacy client, as the HTTP stack's inner service sees it:
/// request bodies come wrapped by the replay.
type Hyper = HyperClient<HttpConnector, ReplayBody<Full<Bytes>>>;

fn hyper_client() -> Hyper {
    let mut connector = HttpConnector::new();
    // Paused time: without it, Nagle's algorithm may hold a small write.
    connector.set_nodelay(true);
    HyperClient::builder(TokioExecutor::new()).build(connector)
}

fn hyper_request(method: &str, url: &str, body: Vec<u8>) -> http::Request<Full<Bytes>> {
    http::Request::builder()
        .method(method)
        .uri(url)
        .body(Full::new(Bytes::from(body)))
        .unwrap()
}

/// What the listeners saw, in order.
#[derive(Debug, Clone, PartialEq)]
enum Seen {
    Attempt(u32),
    Retry { delay: Duration, hinted: bool },
    GaveUp { attempts: u32, reason: GiveUpReason },
    TimedOut { name: String, after: Duration },
}

#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<Seen>>>);

impl Log {
    fn listener(&self) -> impl Fn(&Event<'_>) + Send + Sync + 'static {
        let log = self.0.clone();
        move |event: &Event<'_>| {
            let seen = if let Some(retry) = event.kind::<RetryEvent>() {
                match *retry {
                    RetryEvent::Attempt { attempt } => Seen::Attempt(attempt),
                    RetryEvent::Retry { delay, hinted, .. } => Seen::Retry { delay, hinted },
                    RetryEvent::GaveUp { attempts, reason } => Seen::GaveUp { attempts, reason },
                    _ => return,
                }
            } else if let Some(TimeoutEvent::TimedOut { after }) = event.kind() {
                Seen::TimedOut {
                    name: event.name().to_string(),
                    after: *after,
                }
            } else {
                return;
            };
            log.lock().unwrap().push(seen);
        }
    }

    fn all(&self) -> Vec<Seen> {
        self.0.lock().unwrap().clone()
    }

    fn attempts(&self) -> usize {
        self.all()
            .iter()
            .filter(|s| matches!(s, Seen::Attempt(_)))
            .count()
    }

    fn retry_delays(&self) -> Vec<(Duration, bool)> {
        self.all()
            .iter()
            .filter_map(|s| match s {
                Seen::Retry { delay, hinted } => Some((*delay, *hinted)),
                _ => None,
            })
            .collect()
    }

    fn timeouts(&self) -> Vec<(String, Duration)> {
        self.all()
            .iter()
            .filter_map(|s| match s {
                Seen::TimedOut { name, after } => Some((name.clone(), *after)),
                _ => None,
            })
            .collect()
    }
}

/// A classifier of our own: a 503 is a failure though it comes as `Ok`,
/// every error is a failure, and every request may be retried.
#[derive(Debug, Clone, Copy)]
struct BusyIsFailure;

impl<E> Classify<reqwest::Response, E> for BusyIsFailure {
    fn classify(&self, result: &Result<reqwest::Response, E>) -> Outcome {
        match result {
            Ok(response) if response.status() == 503 => Outcome::Failure,
            Ok(_) => Outcome::Success,
            Err(_) => Outcome::Failure,
        }
    }
}

impl<Req> ClassifyRequest<Req> for BusyIsFailure {}

impl JudgesAtHead for BusyIsFailure {}

/// A fallback answer, recognisable by its status.
fn teapot() -> reqwest::Response {
    reqwest::Response::from(http::Response::builder().status(418).body("").unwrap())
}

/// Waits (in paused time) until the server has read `n` requests.
async fn until_seen(server: &Server, n: usize) {
    for _ in 0..10_000 {
        if server.seen().len() >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    panic!("the server saw {} requests, not {n}", server.seen().len());
}

// ---------------------------------------------------------------------------
// 1. Resilience::builder().classifier(c)
// ---------------------------------------------------------------------------

/// "one classifier for every part that judges outcomes": the retry
/// retries what the stack's classifier calls a failure (a 503 that comes as
/// `Ok`, which the default classifier would call a success).
#[tokio::test(start_paused = true)]
async fn the_stacks_classifier_reaches_the_retry() {
    let server = Server::start(vec![Reply::status(503)], Reply::status(200)).await;
    let stack = Resilience::builder()
        .classifier(BusyIsFailure)
        .retry(|retry| {
            retry
                .requests(palisade::replay::ReqwestRequests)
                .no_budget()
        })
        .build()
        .unwrap();
    let client = stack.layer(reqwest::Client::new());
    let response = client.oneshot(get(&server.url("/"))).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(server.seen().len(), 2, "the 503 was retried");
}

/// The breaker counts with the stack's classifier: a 503 `Ok` is a failure.
#[tokio::test(start_paused = true)]
async fn the_stacks_classifier_reaches_the_circuit_breaker() {
    let server = Server::start(vec![], Reply::status(503)).await;
    let stack = Resilience::builder()
        .classifier(BusyIsFailure)
        .circuit_breaker(|breaker| breaker.name("numbers"))
        .build()
        .unwrap();
    let handle = stack.circuit_breaker().handle();
    let client = stack.layer(reqwest::Client::new());
    let response = client.oneshot(get(&server.url("/"))).await.unwrap();
    assert_eq!(response.status(), 503);
    let metrics = handle.metrics();
    assert_eq!((metrics.calls, metrics.failures), (1, 1));
}

/// The fallback answers what the stack's classifier calls a failure.
#[tokio::test(start_paused = true)]
async fn the_stacks_classifier_reaches_the_fallback() {
    let server = Server::start(vec![], Reply::status(503)).await;
    let stack = Resilience::builder()
        .classifier(BusyIsFailure)
        .fallback(from_sync_fn(
            |_: Failed<reqwest::Request, reqwest::Response>| Ok(teapot()),
        ))
        .build()
        .unwrap();
    let client = stack.layer(reqwest::Client::new());
    let response = client.oneshot(get(&server.url("/"))).await.unwrap();
    assert_eq!(response.status(), 418, "the fallback answered the 503");
}

/// "A part's own `.classifier(..)` still overrides it": the retry with the
/// default classifier does not retry the 503, while the breaker, which kept
/// the stack's, counts it as a failure.
#[tokio::test(start_paused = true)]
async fn the_retrys_own_classifier_overrides_the_stacks() {
    let server = Server::start(vec![Reply::status(503)], Reply::status(200)).await;
    let stack = Resilience::builder()
        .classifier(BusyIsFailure)
        .retry(|retry| {
            retry
                .classifier(DefaultClassifier)
                .requests(palisade::replay::ReqwestRequests)
                .no_budget()
        })
        .circuit_breaker(|breaker| breaker)
        .build()
        .unwrap();
    let handle = stack.circuit_breaker().handle();
    let client = stack.layer(reqwest::Client::new());
    let response = client.oneshot(get(&server.url("/"))).await.unwrap();
    assert_eq!(response.status(), 503, "not retried: Ok is a success");
    assert_eq!(server.seen().len(), 1);
    assert_eq!(handle.metrics().failures, 1, "the breaker kept the stack's");
}

/// The breaker's own classifier overrides the stack's, and the retry keeps
/// the stack's.
#[tokio::test(start_paused = true)]
async fn the_breakers_own_classifier_overrides_the_stacks() {
    let server = Server::start(vec![Reply::status(503)], Reply::status(200)).await;
    let stack = Resilience::builder()
        .classifier(BusyIsFailure)
        .retry(|retry| {
            retry
                .requests(palisade::replay::ReqwestRequests)
                .no_budget()
        })
        .circuit_breaker(|breaker| breaker.classifier(DefaultClassifier))
        .build()
        .unwrap();
    let handle = stack.circuit_breaker().handle();
    let client = stack.layer(reqwest::Client::new());
    let response = client.oneshot(get(&server.url("/"))).await.unwrap();
    assert_eq!(response.status(), 200, "the retry kept the stack's");
    let metrics = handle.metrics();
    assert_eq!((metrics.calls, metrics.failures), (2, 0));
}

/// The fallback's own classifier overrides the stack's.
#[tokio::test(start_paused = true)]
async fn the_fallbacks_own_classifier_overrides_the_stacks() {
    let server = Server::start(vec![], Reply::status(503)).await;
    let stack = Resilience::builder()
        .classifier(BusyIsFailure)
        .fallback_with(
            from_sync_fn(|_: Failed<reqwest::Request, reqwest::Response>| Ok(teapot())),
            |fallback| fallback.classifier(DefaultClassifier),
        )
        .build()
        .unwrap();
    let client = stack.layer(reqwest::Client::new());
    let response = client.oneshot(get(&server.url("/"))).await.unwrap();
    assert_eq!(response.status(), 503, "Ok is a success to the default");
}

/// `Resilience::builder()` starts with the `DefaultClassifier`: every `Err`
/// is a failure (retried), every `Ok` a success (a 503 is not retried).
#[tokio::test(start_paused = true)]
async fn the_builder_starts_with_the_default_classifier() {
    let server = Server::start(vec![Reply::status(503)], Reply::status(200)).await;
    let log = Log::default();
    let stack = Resilience::builder()
        .retry(|retry| {
            retry
                .requests(palisade::replay::ReqwestRequests)
                .no_budget()
                .on_event(log.listener())
        })
        .build()
        .unwrap();
    let client = stack.layer(reqwest::Client::new());
    let response = client.clone().oneshot(get(&server.url("/"))).await.unwrap();
    assert_eq!(response.status(), 503);
    assert_eq!(server.seen().len(), 1);

    let refused = format!("http://{}/", closed_port().await);
    let err = client.oneshot(get(&refused)).await.unwrap_err();
    assert_eq!(ErrorKind::of(&err), ErrorKind::Inner);
    assert_eq!(
        log.attempts(),
        1 + 3,
        "the error was retried up to 3 attempts"
    );
}

/// `build()` returns a `Result` naming the refused part: the retry.
#[test]
fn build_names_a_refused_retry() {
    let err = Resilience::builder()
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

/// ... the circuit breaker.
#[test]
fn build_names_a_refused_circuit_breaker() {
    let err = Resilience::builder()
        .circuit_breaker(|breaker| breaker.failure_rate_threshold(0.0))
        .build()
        .unwrap_err();
    assert_eq!(err.part(), Some("circuit_breaker"));
    assert_eq!(err.parameter(), "failure_rate_threshold");
}

/// ... the bulkhead.
#[test]
fn build_names_a_refused_bulkhead() {
    let err = Resilience::builder()
        .bulkhead(|bulkhead| bulkhead.max_concurrent(0))
        .build()
        .unwrap_err();
    assert_eq!(err.part(), Some("bulkhead"));
    assert_eq!(err.parameter(), "max_concurrent");
}

/// ... the per-attempt and the total timeout, each by its own name.
#[test]
fn build_names_a_refused_timeout() {
    let err = Resilience::builder()
        .attempt_timeout(Duration::ZERO)
        .build()
        .unwrap_err();
    assert_eq!(err.part(), Some("attempt_timeout"));
    let err = Resilience::builder()
        .total_timeout(Duration::ZERO)
        .build()
        .unwrap_err();
    assert_eq!(err.part(), Some("total_timeout"));
}

/// A standard stack adjusted into a configuration that cannot work is
/// refused at `build()` too, never clamped.
#[test]
fn build_refuses_a_standard_stack_adjusted_out_of_range() {
    let err = Resilience::http()
        .retry(|retry| retry.max_attempts(101))
        .build()
        .unwrap_err();
    assert_eq!(err.part(), Some("retry"));
    assert_eq!(err.parameter(), "max_attempts");
}

/// The typed setters take closures over each part's builder, and each
/// slot's layer can be read back for its handle.
#[tokio::test(start_paused = true)]
async fn the_typed_setters_configure_each_part_through_its_builder() {
    let stack = Resilience::builder()
        .circuit_breaker(|breaker| breaker.name("items"))
        .bulkhead(|bulkhead| bulkhead.name("pool").max_concurrent(7))
        .build()
        .unwrap();
    assert_eq!(stack.circuit_breaker().handle().name(), "items");
    let bulkhead = stack.concurrency().handle();
    assert_eq!((bulkhead.name(), bulkhead.max_concurrent()), ("pool", 7));
}

/// "The preset's timeouts are named `"total"` and `"attempt"`": their
/// events say which one fired.
#[tokio::test(start_paused = true)]
async fn the_presets_timeouts_are_named_total_and_attempt_in_their_events() {
    let server = Server::start(vec![], Reply::status(200).after(Duration::from_secs(5))).await;
    let log = Log::default();
    let stack = Resilience::builder()
        .total_timeout_with(|total| {
            total
                .timeout(Duration::from_secs(3))
                .on_event(log.listener())
        })
        .attempt_timeout_with(|attempt| {
            attempt
                .timeout(Duration::from_secs(1))
                .on_event(log.listener())
        })
        .build()
        .unwrap();
    let client = stack.layer(reqwest::Client::new());
    let err = client.oneshot(get(&server.url("/"))).await.unwrap_err();
    assert_eq!(ErrorKind::of(&err), ErrorKind::Elapsed);
    assert_eq!(
        log.timeouts(),
        vec![("attempt".to_string(), Duration::from_secs(1))]
    );

    let log = Log::default();
    let stack = Resilience::builder()
        .total_timeout_with(|total| {
            total
                .timeout(Duration::from_secs(3))
                .on_event(log.listener())
        })
        .build()
        .unwrap();
    let client = stack.layer(reqwest::Client::new());
    let err = client.oneshot(get(&server.url("/"))).await.unwrap_err();
    assert_eq!(ErrorKind::of(&err), ErrorKind::Elapsed);
    assert_eq!(
        log.timeouts(),
        vec![("total".to_string(), Duration::from_secs(3))]
    );
}

/// "The timeout is named `"total"` (its events and its `Elapsed` say so)";
/// CHANGELOG: "so their events and rejections say which one fired". The
/// caller holding the `Elapsed` should be able to tell which one it was.
#[tokio::test(start_paused = true)]
async fn the_presets_elapsed_says_which_timeout_fired() {
    let server = Server::start(vec![], Reply::status(200).after(Duration::from_secs(5))).await;
    let stack = Resilience::builder()
        .total_timeout(Duration::from_secs(3))
        .build()
        .unwrap();
    let err = stack
        .layer(reqwest::Client::new())
        .oneshot(get(&server.url("/")))
        .await
        .unwrap_err();
    assert_eq!(ErrorKind::of(&err), ErrorKind::Elapsed);
    assert!(format!("{err} {err:?}").contains("total"), "{err} {err:?}");

    let stack = Resilience::builder()
        .attempt_timeout(Duration::from_secs(1))
        .build()
        .unwrap();
    let err = stack
        .layer(reqwest::Client::new())
        .oneshot(get(&server.url("/")))
        .await
        .unwrap_err();
    assert!(
        format!("{err} {err:?}").contains("attempt"),
        "{err} {err:?}"
    );
}

// ---------------------------------------------------------------------------
// 2. Resilience::http()
// ---------------------------------------------------------------------------

/// The standard stack retries an idempotent request answered 503 and
/// returns the answer that came next (README, `examples/reqwest.rs`).
#[tokio::test(start_paused = true)]
async fn http_retries_a_503_and_returns_the_next_answer() {
    let server = Server::start(vec![Reply::status(503)], Reply::status(200).body("hello")).await;
    let client = Resilience::http()
        .build()
        .unwrap()
        .layer(reqwest::Client::new());
    let response = client.oneshot(get(&server.url("/"))).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.unwrap(), "hello");
    assert_eq!(server.seen().len(), 2);
}

/// 3 attempts: a server that keeps failing sees three, and the caller
/// gets the last answer.
#[tokio::test(start_paused = true)]
async fn http_makes_three_attempts_then_returns_the_last_answer() {
    let server = Server::start(vec![], Reply::status(500)).await;
    let client = Resilience::http()
        .build()
        .unwrap()
        .layer(reqwest::Client::new());
    let response = client.oneshot(get(&server.url("/"))).await.unwrap();
    assert_eq!(response.status(), 500);
    assert_eq!(server.seen().len(), 3);
}

/// 408 and 429 are failures (retried).
#[tokio::test(start_paused = true)]
async fn http_retries_408_and_429() {
    let server = Server::start(
        vec![Reply::status(408), Reply::status(429)],
        Reply::status(200),
    )
    .await;
    let client = Resilience::http()
        .build()
        .unwrap()
        .layer(reqwest::Client::new());
    let response = client.oneshot(get(&server.url("/"))).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(server.seen().len(), 3);
}

/// Other 4xx are the caller's mistakes: not retried, and a success to the
/// breaker.
#[tokio::test(start_paused = true)]
async fn http_counts_other_4xx_as_successes() {
    let server = Server::start(vec![Reply::status(404)], Reply::status(200)).await;
    let stack = Resilience::http().build().unwrap();
    let handle = stack.circuit_breaker().handle();
    let client = stack.layer(reqwest::Client::new());
    let response = client.oneshot(get(&server.url("/"))).await.unwrap();
    assert_eq!(response.status(), 404);
    assert_eq!(server.seen().len(), 1);
    let metrics = handle.metrics();
    assert_eq!((metrics.calls, metrics.failures), (1, 0));
}

/// Only idempotent methods are retried: a POST answered 503 reached the
/// server and is sent once.
#[tokio::test(start_paused = true)]
async fn http_does_not_retry_a_post_that_reached_the_server() {
    let server = Server::start(vec![Reply::status(503)], Reply::status(200)).await;
    let client = Resilience::http()
        .build()
        .unwrap()
        .layer(reqwest::Client::new());
    let response = client.oneshot(post(&server.url("/"))).await.unwrap();
    assert_eq!(response.status(), 503);
    assert_eq!(server.seen().len(), 1);
}

/// "except a request whose connection was refused, which never left": a
/// POST to a closed port is attempted three times.
#[tokio::test(start_paused = true)]
async fn http_retries_a_post_whose_connection_was_refused() {
    let log = Log::default();
    let client = Resilience::http()
        .retry(|retry| retry.on_event(log.listener()))
        .build()
        .unwrap()
        .layer(reqwest::Client::new());
    let url = format!("http://{}/", closed_port().await);
    let err = client.oneshot(post(&url)).await.unwrap_err();
    assert_eq!(ErrorKind::of(&err), ErrorKind::Inner);
    assert_eq!(log.attempts(), 3);
    assert!(log.all().contains(&Seen::GaveUp {
        attempts: 3,
        reason: GiveUpReason::MaxAttempts
    }));
}

/// `Retry-After` is honoured up to 30 s: a 20 s hint replaces the backoff.
#[tokio::test(start_paused = true)]
async fn http_honours_a_retry_after_of_twenty_seconds() {
    let server = Server::start(
        vec![Reply::status(503).header("retry-after", "20")],
        Reply::status(200),
    )
    .await;
    let log = Log::default();
    let client = Resilience::http()
        .retry(|retry| retry.on_event(log.listener()))
        .build()
        .unwrap()
        .layer(reqwest::Client::new());
    let response = client.oneshot(get(&server.url("/"))).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(log.retry_delays(), vec![(Duration::from_secs(20), true)]);
    let arrivals = server.arrivals_ms();
    assert!(arrivals[1] - arrivals[0] >= 20_000, "{arrivals:?}");
}

/// A hint above 30 s ends the retries: the caller gets the server's answer.
#[tokio::test(start_paused = true)]
async fn http_ends_the_retries_on_a_retry_after_above_thirty_seconds() {
    let server = Server::start(
        vec![Reply::status(503).header("retry-after", "31")],
        Reply::status(200),
    )
    .await;
    let log = Log::default();
    let client = Resilience::http()
        .retry(|retry| retry.on_event(log.listener()))
        .build()
        .unwrap()
        .layer(reqwest::Client::new());
    let response = client.oneshot(get(&server.url("/"))).await.unwrap();
    assert_eq!(response.status(), 503);
    assert_eq!(server.seen().len(), 1);
    assert!(log.all().contains(&Seen::GaveUp {
        attempts: 1,
        reason: GiveUpReason::HintAboveCap
    }));
}

/// Exponential backoff from 100 ms ×2 with full jitter: the first retry
/// waits at most 100 ms, the second at most 200 ms, and the delays differ
/// from call to call.
#[tokio::test(start_paused = true)]
async fn http_backs_off_exponentially_from_100ms_with_full_jitter() {
    let server = Server::start(vec![], Reply::status(503)).await;
    let log = Log::default();
    let client = Resilience::http()
        .retry(|retry| retry.on_event(log.listener()))
        .build()
        .unwrap()
        .layer(reqwest::Client::new());
    for _ in 0..10 {
        let response = client.clone().oneshot(get(&server.url("/"))).await.unwrap();
        assert_eq!(response.status(), 503);
    }
    let delays = log.retry_delays();
    assert_eq!(delays.len(), 20);
    let firsts: Vec<Duration> = delays.iter().step_by(2).map(|d| d.0).collect();
    let seconds: Vec<Duration> = delays.iter().skip(1).step_by(2).map(|d| d.0).collect();
    assert!(delays.iter().all(|d| !d.1), "no hint was given");
    assert!(
        firsts.iter().all(|d| *d <= Duration::from_millis(100)),
        "{firsts:?}"
    );
    assert!(
        seconds.iter().all(|d| *d <= Duration::from_millis(200)),
        "{seconds:?}"
    );
    assert!(
        firsts.iter().any(|d| *d != firsts[0]),
        "full jitter draws a fresh delay per call: {firsts:?}"
    );
}

/// The default retry budget is on, and can be taken off.
#[tokio::test(start_paused = true)]
async fn http_retries_within_a_budget() {
    let stack = Resilience::http().build().unwrap();
    assert!(stack.repeat().budget().is_some());
    let stack = Resilience::http()
        .retry(|retry| retry.no_budget())
        .build()
        .unwrap();
    assert!(stack.repeat().budget().is_none());
}

/// 10 s per attempt, named `"attempt"`: a hung attempt is cut off and
/// retried within the total.
#[tokio::test(start_paused = true)]
async fn http_cuts_an_attempt_off_after_ten_seconds_and_retries_it() {
    let server = Server::start(
        vec![Reply::status(200).after(Duration::from_secs(11))],
        Reply::status(200).body("second"),
    )
    .await;
    let log = Log::default();
    let client = Resilience::http()
        .attempt_timeout_with(|attempt| attempt.on_event(log.listener()))
        .build()
        .unwrap()
        .layer(reqwest::Client::new());
    let response = client.oneshot(get(&server.url("/"))).await.unwrap();
    assert_eq!(response.text().await.unwrap(), "second");
    assert_eq!(server.seen().len(), 2);
    assert_eq!(
        log.timeouts(),
        vec![("attempt".to_string(), Duration::from_secs(10))]
    );
}

/// A total timeout of 30 s, named `"total"`, bounds what the caller waits,
/// backoffs included: a 25 s `Retry-After` and a 9 s answer end at 30 s.
#[tokio::test(start_paused = true)]
async fn http_bounds_the_whole_call_to_thirty_seconds() {
    let server = Server::start(
        vec![Reply::status(503).header("retry-after", "25")],
        Reply::status(200).after(Duration::from_secs(9)),
    )
    .await;
    let log = Log::default();
    let client = Resilience::http()
        .total_timeout_with(|total| total.on_event(log.listener()))
        .build()
        .unwrap()
        .layer(reqwest::Client::new());
    let err = client.oneshot(get(&server.url("/"))).await.unwrap_err();
    assert_eq!(ErrorKind::of(&err), ErrorKind::Elapsed);
    assert_eq!(
        log.timeouts(),
        vec![("total".to_string(), Duration::from_secs(30))]
    );
}

/// A 10% failure rate opens the breaker once 100 calls were seen, not
/// before: 90 successes and 9 failures leave it closed; the 10th failure
/// (100 calls) opens it, and the next call is refused without reaching
/// the server.
#[tokio::test(start_paused = true)]
async fn http_breaker_opens_at_ten_percent_once_a_hundred_calls_were_seen() {
    let server = Server::start(vec![Reply::status(200); 90], Reply::status(503)).await;
    let stack = Resilience::http().build().unwrap();
    let handle = stack.circuit_breaker().handle();
    let client = stack.layer(reqwest::Client::new());
    let url = server.url("/");
    for _ in 0..90 {
        client.clone().oneshot(get(&url)).await.unwrap();
    }
    // POSTs are sent once: one call, one failure each.
    for _ in 0..9 {
        let response = client.clone().oneshot(post(&url)).await.unwrap();
        assert_eq!(response.status(), 503);
    }
    assert_eq!(handle.state(), CircuitState::Closed, "99 calls: too few");
    client.clone().oneshot(post(&url)).await.unwrap();
    assert_eq!(handle.state(), CircuitState::Open);
    let err = client.oneshot(get(&url)).await.unwrap_err();
    assert_eq!(ErrorKind::of(&err), ErrorKind::CircuitOpen);
    assert_eq!(server.seen().len(), 100);
}

/// Below 10% the breaker stays closed: 91 successes and 10 failures of 101
/// calls (9.9%).
#[tokio::test(start_paused = true)]
async fn http_breaker_stays_closed_below_ten_percent() {
    let server = Server::start(vec![Reply::status(200); 91], Reply::status(503)).await;
    let stack = Resilience::http().build().unwrap();
    let handle = stack.circuit_breaker().handle();
    let client = stack.layer(reqwest::Client::new());
    let url = server.url("/");
    for _ in 0..91 {
        client.clone().oneshot(get(&url)).await.unwrap();
    }
    for _ in 0..10 {
        client.clone().oneshot(post(&url)).await.unwrap();
    }
    assert_eq!(handle.metrics().calls, 101);
    assert_eq!(handle.state(), CircuitState::Closed);
}

/// A 30 s time window: calls older than that no longer count, so 99 old
/// calls and one new failure do not open it (a count window of 100 would).
#[tokio::test(start_paused = true)]
async fn http_breaker_judges_a_thirty_second_window() {
    let server = Server::start(vec![Reply::status(200); 90], Reply::status(503)).await;
    let stack = Resilience::http().build().unwrap();
    let handle = stack.circuit_breaker().handle();
    let client = stack.layer(reqwest::Client::new());
    let url = server.url("/");
    for _ in 0..90 {
        client.clone().oneshot(get(&url)).await.unwrap();
    }
    for _ in 0..9 {
        client.clone().oneshot(post(&url)).await.unwrap();
    }
    tokio::time::advance(Duration::from_secs(31)).await;
    client.clone().oneshot(post(&url)).await.unwrap();
    assert_eq!(handle.state(), CircuitState::Closed);
    assert_eq!(handle.metrics().calls, 1);
}

/// Open for 5 s, then 5 probes: before 5 s a call is refused; after, five
/// calls go through at once and a sixth is refused while they are out;
/// the five successes close it.
#[tokio::test(start_paused = true)]
async fn http_breaker_opens_for_five_seconds_then_sends_five_probes() {
    let server = Server::start(vec![Reply::status(200); 90], Reply::status(503)).await;
    let stack = Resilience::http().build().unwrap();
    let handle = stack.circuit_breaker().handle();
    let client = stack.layer(reqwest::Client::new());
    let url = server.url("/");
    for _ in 0..90 {
        client.clone().oneshot(get(&url)).await.unwrap();
    }
    for _ in 0..10 {
        client.clone().oneshot(post(&url)).await.unwrap();
    }
    assert_eq!(handle.state(), CircuitState::Open);

    tokio::time::advance(Duration::from_millis(4_900)).await;
    let err = client.clone().oneshot(get(&url)).await.unwrap_err();
    assert_eq!(ErrorKind::of(&err), ErrorKind::CircuitOpen);
    assert_eq!(server.seen().len(), 100);

    tokio::time::advance(Duration::from_millis(100)).await;
    server.set_default(Reply::status(200).after(Duration::from_secs(1)));
    let probes: Vec<_> = (0..5)
        .map(|_| tokio::spawn(client.clone().oneshot(get(&url))))
        .collect();
    until_seen(&server, 105).await;
    assert_eq!(handle.state(), CircuitState::HalfOpen);
    let err = client.clone().oneshot(get(&url)).await.unwrap_err();
    assert_eq!(ErrorKind::of(&err), ErrorKind::CircuitOpen, "a sixth probe");
    for probe in probes {
        assert_eq!(probe.await.unwrap().unwrap().status(), 200);
    }
    assert_eq!(handle.state(), CircuitState::Closed);
}

/// 1000 calls in flight, no queue: the limit is 1000, and (adjusted down
/// to 1) a call beyond it is refused at once rather than queued.
#[tokio::test(start_paused = true)]
async fn http_bulkhead_holds_a_thousand_calls_and_no_queue() {
    let stack = Resilience::http().build().unwrap();
    assert_eq!(stack.concurrency().handle().max_concurrent(), 1000);

    let server = Server::start(vec![], Reply::status(200).after(Duration::from_secs(2))).await;
    let stack = Resilience::http()
        .bulkhead(|bulkhead| bulkhead.max_concurrent(1))
        .build()
        .unwrap();
    let bulkhead = stack.concurrency().handle();
    let client = stack.layer(reqwest::Client::new());
    let first = tokio::spawn(client.clone().oneshot(get(&server.url("/"))));
    until_seen(&server, 1).await;
    let err = client
        .clone()
        .oneshot(get(&server.url("/")))
        .await
        .unwrap_err();
    assert_eq!(ErrorKind::of(&err), ErrorKind::BulkheadFull);
    assert_eq!(bulkhead.queued(), 0);
    assert_eq!(first.await.unwrap().unwrap().status(), 200);
    assert_eq!(server.seen().len(), 1);
}

/// Adjusting the retry keeps everything else the standard stack set: the
/// HTTP classifier (a POST is still sent once) and the replay of
/// `reqwest::Request`s (a GET is retried up to the new number).
#[tokio::test(start_paused = true)]
async fn http_adjusting_the_retry_keeps_its_classifier_and_replay() {
    let server = Server::start(vec![], Reply::status(503)).await;
    let client = Resilience::http()
        .retry(|retry| retry.max_attempts(4))
        .build()
        .unwrap()
        .layer(reqwest::Client::new());
    client.clone().oneshot(get(&server.url("/"))).await.unwrap();
    assert_eq!(server.seen().len(), 4);
    client.oneshot(post(&server.url("/"))).await.unwrap();
    assert_eq!(server.seen().len(), 5);
}

/// Adjusting the breaker keeps its standard numbers: named, it still
/// waits for 100 calls (a breaker built fresh would trip after 20).
#[tokio::test(start_paused = true)]
async fn http_adjusting_the_breaker_keeps_its_standard_numbers() {
    let server = Server::start(vec![], Reply::status(503)).await;
    let stack = Resilience::http()
        .circuit_breaker(|breaker| breaker.name("inventory"))
        .build()
        .unwrap();
    let handle = stack.circuit_breaker().handle();
    assert_eq!(handle.name(), "inventory");
    let client = stack.layer(reqwest::Client::new());
    for _ in 0..30 {
        client
            .clone()
            .oneshot(post(&server.url("/")))
            .await
            .unwrap();
    }
    assert_eq!(handle.state(), CircuitState::Closed);
}

/// `.attempt_timeout(d)` on the standard stack replaces the 10 s and keeps
/// the name `"attempt"` (README, `examples/reqwest.rs`).
#[tokio::test(start_paused = true)]
async fn http_attempt_timeout_can_be_shortened() {
    let server = Server::start(
        vec![Reply::status(200).after(Duration::from_secs(3))],
        Reply::status(200).body("second"),
    )
    .await;
    let log = Log::default();
    let client = Resilience::http()
        .attempt_timeout(Duration::from_secs(2))
        .attempt_timeout_with(|attempt| attempt.on_event(log.listener()))
        .build()
        .unwrap()
        .layer(reqwest::Client::new());
    let response = client.oneshot(get(&server.url("/"))).await.unwrap();
    assert_eq!(response.text().await.unwrap(), "second");
    assert_eq!(
        log.timeouts(),
        vec![("attempt".to_string(), Duration::from_secs(2))]
    );
}

/// A `reqwest::Request` with a body is copied with `try_clone`: the retry
/// sends the same bytes.
#[tokio::test(start_paused = true)]
async fn http_replays_a_reqwest_body() {
    let server = Server::start(vec![Reply::status(503)], Reply::status(200)).await;
    let client = Resilience::http()
        .build()
        .unwrap()
        .layer(reqwest::Client::new());
    let mut put = request(Method::PUT, &server.url("/items/1"));
    *put.body_mut() = Some(reqwest::Body::from("new item"));
    let response = client.oneshot(put).await.unwrap();
    assert_eq!(response.status(), 200);
    let seen = server.seen();
    assert_eq!(seen.len(), 2);
    assert!(
        seen.iter()
            .all(|s| s.body == b"new item" && s.method == "PUT")
    );
}

/// The same stack wraps hyper's legacy client: an `http::Request` body is
/// recorded and replayed.
#[tokio::test(start_paused = true)]
async fn http_wraps_hypers_client_and_replays_its_body() {
    let server = Server::start(vec![Reply::status(503)], Reply::status(200).body("ok")).await;
    let client = Resilience::http().build().unwrap().layer(hyper_client());
    let response = client
        .oneshot(hyper_request("PUT", &server.url("/"), b"payload".to_vec()))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], b"ok");
    let seen = server.seen();
    assert_eq!(seen.len(), 2);
    assert!(seen.iter().all(|s| s.body == b"payload"));
}

/// "recorded up to 64 KiB and replayed": a body of exactly 64 KiB is sent
/// again whole.
#[tokio::test(start_paused = true)]
async fn http_replays_a_body_of_sixty_four_kib() {
    let server = Server::start(vec![Reply::status(503)], Reply::status(200)).await;
    let client = Resilience::http().build().unwrap().layer(hyper_client());
    let body = vec![7u8; 64 * 1024];
    let response = client
        .oneshot(hyper_request("PUT", &server.url("/"), body.clone()))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let seen = server.seen();
    assert_eq!(seen.len(), 2);
    assert!(seen.iter().all(|s| s.body == body));
}

/// "a larger ... body is sent once": one byte over 64 KiB, and the 503 is
/// returned with the body sent whole, once.
#[tokio::test(start_paused = true)]
async fn http_sends_a_body_over_sixty_four_kib_once() {
    let server = Server::start(vec![Reply::status(503)], Reply::status(200)).await;
    let client = Resilience::http().build().unwrap().layer(hyper_client());
    let body = vec![7u8; 64 * 1024 + 1];
    let response = client
        .oneshot(hyper_request("PUT", &server.url("/"), body.clone()))
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
    let seen = server.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].body, body);
}

/// hyper's client too: a refused connection is retried whatever the method.
#[tokio::test(start_paused = true)]
async fn http_retries_a_refused_hyper_post() {
    let log = Log::default();
    let client = Resilience::http()
        .retry(|retry| retry.on_event(log.listener()))
        .build()
        .unwrap()
        .layer(hyper_client());
    let url = format!("http://{}/", closed_port().await);
    let err = client
        .oneshot(hyper_request("POST", &url, b"order".to_vec()))
        .await
        .unwrap_err();
    assert_eq!(ErrorKind::of(&err), ErrorKind::Inner);
    assert_eq!(log.attempts(), 3);
}

// ---------------------------------------------------------------------------
// 3. middleware::StackMiddleware
// ---------------------------------------------------------------------------

fn with_stack<L>(layer: L) -> reqwest_middleware::ClientWithMiddleware
where
    StackMiddleware<L>: reqwest_middleware::Middleware,
{
    reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
        .with(StackMiddleware::new(layer))
        .build()
}

/// `client.get(url).send()` keeps working, and the stack retries the 503
/// (`examples/reqwest_middleware.rs`).
#[tokio::test(start_paused = true)]
async fn middleware_keeps_get_send_and_retries_a_503() {
    let server = Server::start(vec![Reply::status(503)], Reply::status(200).body("hello")).await;
    let client = with_stack(Resilience::http().build().unwrap());
    let response = client.get(server.url("/")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.unwrap(), "hello");
    assert_eq!(server.seen().len(), 2);
}

/// A body sent with `client.put(url).body(..)` is replayed on the retry.
#[tokio::test(start_paused = true)]
async fn middleware_replays_a_request_body() {
    let server = Server::start(vec![Reply::status(503)], Reply::status(200)).await;
    let client = with_stack(Resilience::http().build().unwrap());
    let response = client
        .put(server.url("/"))
        .body("same bytes")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let seen = server.seen();
    assert_eq!(seen.len(), 2);
    assert!(seen.iter().all(|s| s.body == b"same bytes"));
}

/// "The client's own errors come back as `reqwest_middleware::Error::Reqwest`."
#[tokio::test(start_paused = true)]
async fn middleware_returns_a_client_error_as_error_reqwest() {
    let client = with_stack(Resilience::http().build().unwrap());
    let url = format!("http://{}/", closed_port().await);
    let err = client.get(url).send().await.unwrap_err();
    match err {
        reqwest_middleware::Error::Reqwest(err) => assert!(err.is_connect(), "{err}"),
        other => panic!("not Error::Reqwest: {other:?}"),
    }
}

/// A rejection the stack produced comes back as `Error::Middleware` holding
/// a `StackError` whose source is the rejection; `ErrorKind::of_dyn`
/// finds it. The handles of `StackMiddleware::layer` steer the stack the
/// client uses.
#[tokio::test(start_paused = true)]
async fn middleware_returns_a_rejection_as_a_stack_error() {
    let server = Server::start(vec![], Reply::status(200)).await;
    let middleware = StackMiddleware::new(Resilience::http().build().unwrap());
    let breaker = middleware.layer().circuit_breaker().handle();
    let client = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
        .with(middleware)
        .build();
    breaker.force_open();
    let err = client.get(server.url("/")).send().await.unwrap_err();
    let reqwest_middleware::Error::Middleware(err) = err else {
        panic!("not Error::Middleware: {err:?}");
    };
    let stack_error = err.downcast_ref::<StackError>().expect("a StackError");
    assert_eq!(ErrorKind::of_dyn(stack_error), ErrorKind::CircuitOpen);
    assert!(stack_error.get_ref().is::<palisade::error::CircuitOpen>());
    assert_eq!(server.seen().len(), 0);
}

/// A timeout of the stack is a `StackError` too, of kind `Elapsed`.
#[tokio::test(start_paused = true)]
async fn middleware_returns_a_timeout_as_a_stack_error() {
    let server = Server::start(vec![], Reply::status(200).after(Duration::from_secs(5))).await;
    let client = with_stack(
        Resilience::http()
            .retry(|retry| retry.max_attempts(1))
            .attempt_timeout(Duration::from_secs(1))
            .build()
            .unwrap(),
    );
    let err = client.get(server.url("/")).send().await.unwrap_err();
    let reqwest_middleware::Error::Middleware(err) = err else {
        panic!("not Error::Middleware: {err:?}");
    };
    let stack_error = err.downcast_ref::<StackError>().expect("a StackError");
    assert_eq!(ErrorKind::of_dyn(stack_error), ErrorKind::Elapsed);
}

/// "or a fallback's error": what a fallback handler returns as its error
/// comes back as a `StackError` holding it.
#[tokio::test(start_paused = true)]
async fn middleware_returns_a_fallbacks_error_as_a_stack_error() {
    let server = Server::start(vec![], Reply::status(503)).await;
    let client = with_stack(
        Resilience::http()
            .fallback(from_sync_fn(
                |_: Failed<reqwest::Request, reqwest::Response>| Err("no cached copy".into()),
            ))
            .build()
            .unwrap(),
    );
    let err = client.get(server.url("/")).send().await.unwrap_err();
    let reqwest_middleware::Error::Middleware(err) = err else {
        panic!("not Error::Middleware: {err:?}");
    };
    let stack_error = err.downcast_ref::<StackError>().expect("a StackError");
    assert_eq!(stack_error.get_ref().to_string(), "no cached copy");
    assert_eq!(ErrorKind::of_dyn(stack_error), ErrorKind::Inner);
}

/// A middleware below that fails: its `Error::Middleware` comes back as it
/// returned it, not wrapped in a `StackError`.
#[tokio::test(start_paused = true)]
async fn middleware_returns_an_error_from_below_as_it_was() {
    struct Refuse;
    #[async_trait::async_trait]
    impl reqwest_middleware::Middleware for Refuse {
        async fn handle(
            &self,
            _: reqwest::Request,
            _: &mut http::Extensions,
            _: reqwest_middleware::Next<'_>,
        ) -> reqwest_middleware::Result<reqwest::Response> {
            Err(reqwest_middleware::Error::Middleware(anyhow::anyhow!(
                "refused below"
            )))
        }
    }
    let server = Server::start(vec![], Reply::status(200)).await;
    let client = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
        .with(StackMiddleware::new(Resilience::http().build().unwrap()))
        .with(Refuse)
        .build();
    let err = client.get(server.url("/")).send().await.unwrap_err();
    let reqwest_middleware::Error::Middleware(err) = err else {
        panic!("not Error::Middleware: {err:?}");
    };
    assert!(err.downcast_ref::<StackError>().is_none(), "{err:?}");
    assert_eq!(err.to_string(), "refused below");
    assert_eq!(server.seen().len(), 0);
}

/// Marks a request's extensions.
#[derive(Clone, Debug, PartialEq)]
struct Marker(&'static str);

/// What a middleware below changed in its extensions.
#[derive(Clone, Debug)]
struct Touched;

/// "each attempt the retry makes runs them again, with a copy of the
/// request's extensions as they were when the request reached this
/// middleware (a middleware below sees each attempt as a request of its
/// own)".
#[tokio::test(start_paused = true)]
async fn middleware_below_sees_each_attempt_with_the_original_extensions() {
    /// Per attempt: the marker it saw, and whether an earlier attempt's
    /// change was visible.
    type Attempts = Arc<Mutex<Vec<(Option<Marker>, bool)>>>;
    #[derive(Clone, Default)]
    struct Below(Attempts);
    #[async_trait::async_trait]
    impl reqwest_middleware::Middleware for Below {
        async fn handle(
            &self,
            request: reqwest::Request,
            extensions: &mut http::Extensions,
            next: reqwest_middleware::Next<'_>,
        ) -> reqwest_middleware::Result<reqwest::Response> {
            self.0.lock().unwrap().push((
                extensions.get::<Marker>().cloned(),
                extensions.get::<Touched>().is_some(),
            ));
            extensions.insert(Touched);
            next.run(request, extensions).await
        }
    }
    let server = Server::start(
        vec![Reply::status(503), Reply::status(503)],
        Reply::status(200),
    )
    .await;
    let below = Below::default();
    let client = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
        .with(StackMiddleware::new(Resilience::http().build().unwrap()))
        .with(below.clone())
        .build();
    let response = client
        .get(server.url("/"))
        .with_extension(Marker("caller"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        *below.0.lock().unwrap(),
        vec![(Some(Marker("caller")), false); 3],
        "every attempt: the caller's extensions, nothing of an earlier attempt"
    );
}

/// "one breaker, bulkhead and budget serve every request of the client":
/// failures of separate requests add up in one breaker.
#[tokio::test(start_paused = true)]
async fn middleware_shares_one_breaker_between_requests() {
    let server = Server::start(vec![], Reply::status(503)).await;
    let client = with_stack(
        Resilience::http()
            .retry(|retry| retry.max_attempts(1))
            .circuit_breaker(|breaker| breaker.minimum_calls(2).failure_rate_threshold(0.5))
            .build()
            .unwrap(),
    );
    for _ in 0..2 {
        let response = client.get(server.url("/")).send().await.unwrap();
        assert_eq!(response.status(), 503);
    }
    let err = client.get(server.url("/")).send().await.unwrap_err();
    let reqwest_middleware::Error::Middleware(err) = err else {
        panic!("not Error::Middleware: {err:?}");
    };
    assert_eq!(ErrorKind::of_dyn(err.as_ref()), ErrorKind::CircuitOpen);
    assert_eq!(server.seen().len(), 2);
}

/// ... and one bulkhead: a request in flight holds the only place.
#[tokio::test(start_paused = true)]
async fn middleware_shares_one_bulkhead_between_requests() {
    let server = Server::start(vec![], Reply::status(200).after(Duration::from_secs(1))).await;
    let client = with_stack(
        Resilience::http()
            .bulkhead(|bulkhead| bulkhead.max_concurrent(1))
            .build()
            .unwrap(),
    );
    let first = tokio::spawn({
        let client = client.clone();
        let url = server.url("/");
        async move { client.get(url).send().await }
    });
    until_seen(&server, 1).await;
    let err = client.get(server.url("/")).send().await.unwrap_err();
    let reqwest_middleware::Error::Middleware(err) = err else {
        panic!("not Error::Middleware: {err:?}");
    };
    assert_eq!(ErrorKind::of_dyn(err.as_ref()), ErrorKind::BulkheadFull);
    assert_eq!(first.await.unwrap().unwrap().status(), 200);
}

// ---------------------------------------------------------------------------
// Resilience::grpc()
// ---------------------------------------------------------------------------

/// A tonic-health server on 127.0.0.1; returns its address.
async fn health_server() -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (_reporter, service) = tonic_health::server::health_reporter();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
    );
    addr
}

/// A tonic `Channel` to `addr`, which the gRPC stack wraps as it is.
fn grpc_channel(addr: std::net::SocketAddr) -> tonic::transport::Channel {
    tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_lazy()
}

/// `Resilience::grpc()` wraps a tonic `Channel` as it is, and a generated
/// client calls
/// through it; a status that is not among the failures counts as a
/// success.
#[tokio::test(start_paused = true)]
async fn grpc_wraps_a_tonic_channel_for_a_generated_client() {
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus};

    let channel = grpc_channel(health_server().await);
    let stack = Resilience::grpc()
        .circuit_breaker(|breaker| breaker.name("health"))
        .build()
        .unwrap();
    let breaker = stack.circuit_breaker().handle();
    let mut client = HealthClient::new(stack.layer(channel));
    let answer = client
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap();
    assert_eq!(answer.into_inner().status, ServingStatus::Serving as i32);
    // NOT_FOUND is not among the gRPC classifier's failures.
    let status = client
        .check(HealthCheckRequest {
            service: "unknown".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::NotFound);
    assert_eq!(breaker.name(), "health");
    let metrics = breaker.metrics();
    assert_eq!((metrics.calls, metrics.failures), (2, 0));
}

/// The gRPC stack retries a call whose connection was refused (the
/// retry retries UNAVAILABLE and transport errors), three attempts.
#[tokio::test(start_paused = true)]
async fn grpc_retries_a_refused_connection_three_times() {
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_client::HealthClient;

    let channel = grpc_channel(closed_port().await);
    let log = Log::default();
    let stack = Resilience::grpc()
        .retry(|retry| retry.on_event(log.listener()))
        .build()
        .unwrap();
    let mut client = HealthClient::new(stack.layer(channel));
    let status = client
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    assert_eq!(log.attempts(), 3);
}
