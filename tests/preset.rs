//! The preset: one classifier for every part that judges outcomes, and the
//! standard HTTP stack, against a real hyper server on 127.0.0.1 with
//! reqwest and hyper's own client. The assertions are on what the server
//! saw and what each part counted.

#[path = "support/http_server.rs"]
mod http_server;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use http_server::{Reply, Server};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use palisade::Resilience;
use palisade::backoff::{Backoff, Jitter};
use palisade::circuit_breaker::CircuitState;
use palisade::classify::{DefaultClassifier, HttpClassifier};
use palisade::error::{BoxError, ErrorKind};
use palisade::fallback::{Failed, from_sync_fn};
use palisade::retry::{ReplayBody, ReqwestRequests};
use tower::{Layer, ServiceExt, service_fn};

fn fixed(ms: u64) -> Backoff {
    Backoff::constant(Duration::from_millis(ms))
        .jitter(Jitter::None)
        .build()
        .unwrap()
}

fn get(url: &str) -> reqwest::Request {
    reqwest::Request::new(reqwest::Method::GET, url.parse().unwrap())
}

fn post(url: &str) -> reqwest::Request {
    let mut request = reqwest::Request::new(reqwest::Method::POST, url.parse().unwrap());
    *request.body_mut() = Some("order".into());
    request
}

/// A fallback that counts what it answered, with the status it saw.
fn counting_fallback(
    answered: &Arc<AtomicU32>,
) -> impl Fn(Failed<reqwest::Request, reqwest::Response>) -> Result<reqwest::Response, BoxError> + Clone
{
    let answered = answered.clone();
    move |_failed| {
        answered.fetch_add(1, Ordering::SeqCst);
        Ok(reqwest::Response::from(
            http::Response::builder()
                .status(200)
                .body("from the fallback")
                .unwrap(),
        ))
    }
}

#[tokio::test(start_paused = true)]
async fn the_stacks_classifier_reaches_the_retry_the_breaker_and_the_fallback() {
    let server = Server::start(vec![], Reply::status(503)).await;
    let answered = Arc::new(AtomicU32::new(0));
    let stack = Resilience::builder()
        .classifier(HttpClassifier::new())
        .fallback(from_sync_fn(counting_fallback(&answered)))
        .retry(|retry| {
            retry
                .requests(ReqwestRequests)
                .backoff(fixed(10))
                .no_budget()
        })
        .circuit_breaker(|breaker| breaker.name("shared"))
        .build()
        .unwrap();
    let breaker = stack.circuit_breaker().handle();
    let client = stack.layer(reqwest::Client::new());

    let res = client.oneshot(get(&server.url("/"))).await.unwrap();
    assert_eq!(res.text().await.unwrap(), "from the fallback");
    assert_eq!(
        server.seen().len(),
        3,
        "the retry judged each 503 a failure"
    );
    assert_eq!(breaker.metrics().failures, 3, "and so did the breaker");
    assert_eq!(answered.load(Ordering::SeqCst), 1, "and the fallback");
}

/// The failure the stack's classifier exists to prevent: a part left with
/// the default classifier takes a 503 for a success.
#[tokio::test(start_paused = true)]
async fn without_the_stacks_classifier_a_503_is_a_success_everywhere() {
    let server = Server::start(vec![], Reply::status(503)).await;
    let answered = Arc::new(AtomicU32::new(0));
    let stack = Resilience::builder()
        .fallback(from_sync_fn(counting_fallback(&answered)))
        .retry(|retry| retry.requests(ReqwestRequests).backoff(fixed(10)))
        .circuit_breaker(|breaker| breaker)
        .build()
        .unwrap();
    let breaker = stack.circuit_breaker().handle();
    let res = stack
        .layer(reqwest::Client::new())
        .oneshot(get(&server.url("/")))
        .await
        .unwrap();
    assert_eq!(res.status(), 503);
    assert_eq!(server.seen().len(), 1);
    assert_eq!(breaker.metrics().failures, 0);
    assert_eq!(answered.load(Ordering::SeqCst), 0);
}

#[tokio::test(start_paused = true)]
async fn a_parts_own_classifier_overrides_the_stacks() {
    let server = Server::start(vec![], Reply::status(503)).await;
    let stack = Resilience::builder()
        .classifier(HttpClassifier::new())
        .retry(|retry| {
            retry
                .classifier(DefaultClassifier)
                .requests(ReqwestRequests)
                .backoff(fixed(10))
        })
        .circuit_breaker(|breaker| breaker)
        .build()
        .unwrap();
    let breaker = stack.circuit_breaker().handle();
    let res = stack
        .layer(reqwest::Client::new())
        .oneshot(get(&server.url("/")))
        .await
        .unwrap();
    assert_eq!(res.status(), 503);
    assert_eq!(
        server.seen().len(),
        1,
        "the retry's own classifier: no retry"
    );
    assert_eq!(
        breaker.metrics().failures,
        1,
        "the breaker kept the stack's"
    );
}

#[tokio::test(start_paused = true)]
async fn the_http_stack_retries_idempotent_reqwest_requests_only() {
    let server = Server::start(vec![Reply::status(503)], Reply::status(200)).await;
    let client = Resilience::http()
        .build()
        .unwrap()
        .layer(reqwest::Client::new());
    let res = client.clone().oneshot(get(&server.url("/"))).await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(server.seen().len(), 2);

    server.set_default(Reply::status(503));
    let res = client.oneshot(post(&server.url("/"))).await.unwrap();
    assert_eq!(res.status(), 503, "a POST is not sent twice");
    assert_eq!(server.seen().len(), 3);
}

#[tokio::test(start_paused = true)]
async fn the_http_stack_replays_bodies_through_hypers_client() {
    let server = Server::start(vec![Reply::status(503)], Reply::status(200)).await;
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let hyper: Client<_, ReplayBody<Full<Bytes>>> =
        Client::builder(TokioExecutor::new()).build(connector);
    let client = Resilience::http().build().unwrap().layer(hyper);
    let request = http::Request::put(server.url("/stock"))
        .body(Full::new(Bytes::from_static(b"12 boxes")))
        .unwrap();
    let res = client.oneshot(request).await.unwrap();
    assert_eq!(res.status(), 200);
    let _ = res.into_body().collect().await.unwrap();
    let seen = server.seen();
    assert_eq!(seen.len(), 2);
    assert!(seen.iter().all(|s| s.body == b"12 boxes"), "{seen:?}");
}

#[tokio::test(start_paused = true)]
async fn the_http_stack_has_its_documented_defaults() {
    let stack = Resilience::http().build().unwrap();
    assert_eq!(stack.total_timeout().timeout(), Duration::from_secs(30));
    assert_eq!(stack.attempt_timeout().timeout(), Duration::from_secs(10));
    assert_eq!(stack.concurrency().handle().max_concurrent(), 1000);

    // Three attempts, each 503 a failure.
    let server = Server::start(vec![], Reply::status(503)).await;
    let client = stack.layer(reqwest::Client::new());
    let res = client.clone().oneshot(get(&server.url("/"))).await.unwrap();
    assert_eq!(res.status(), 503);
    assert_eq!(server.seen().len(), 3);
}

/// The breaker's numbers: a 10% failure rate opens it, once 100 calls
/// were seen in its 30 s window.
#[tokio::test(start_paused = true)]
async fn the_http_stacks_breaker_opens_at_a_tenth_of_a_hundred_calls() {
    let calls = Arc::new(AtomicU32::new(0));
    let counter = calls.clone();
    // Every tenth answer is a 500.
    let inner = service_fn(move |_: http::Request<ReplayBody<String>>| {
        let n = counter.fetch_add(1, Ordering::SeqCst);
        let status = if n % 10 == 9 { 500 } else { 200 };
        async move {
            Ok::<_, BoxError>(
                http::Response::builder()
                    .status(status)
                    .body(String::new())
                    .unwrap(),
            )
        }
    });
    let stack = Resilience::http()
        .retry(|retry| retry.max_attempts(1))
        .build()
        .unwrap();
    let breaker = stack.circuit_breaker().handle();
    let svc = stack.layer(inner);
    let request = || http::Request::get("/").body(String::new()).unwrap();
    for _ in 0..99 {
        let _ = svc.clone().oneshot(request()).await.unwrap();
    }
    assert_eq!(breaker.state(), CircuitState::Closed, "99 calls: too few");
    let _ = svc.clone().oneshot(request()).await.unwrap();
    assert_eq!(breaker.state(), CircuitState::Open);
    let err = svc.clone().oneshot(request()).await.unwrap_err();
    assert_eq!(ErrorKind::of(&err), ErrorKind::CircuitOpen);
    assert_eq!(
        breaker.metrics().open_remaining,
        Duration::from_secs(5),
        "open for 5 s"
    );
}

#[test]
fn a_refused_part_is_named_in_the_error() {
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

    let err = Resilience::builder()
        .attempt_timeout(Duration::ZERO)
        .build()
        .unwrap_err();
    assert_eq!(err.part(), Some("attempt_timeout"));
    assert!(
        err.to_string()
            .starts_with("invalid `attempt_timeout.timeout`: "),
        "{err}"
    );
}

/// The stack's listener hears every one of palisade's parts, whether it
/// was registered before or after them; a part's own listener still hears
/// its part; a layer given whole keeps only its own listeners.
#[tokio::test(start_paused = true)]
async fn one_listener_hears_every_part_of_the_stack() {
    use palisade::bulkhead::BulkheadEvent;
    use palisade::circuit_breaker::BreakerEvent;
    use palisade::event::Event;
    use palisade::retry::RetryEvent;
    use palisade::timeout::{TimeoutEvent, TimeoutLayer};
    use std::sync::Mutex;

    let server = Server::start(
        vec![
            Reply::status(503),
            Reply::status(200).after(Duration::from_secs(5)),
        ],
        Reply::status(200),
    )
    .await;
    let heard = Arc::new(Mutex::new(Vec::<String>::new()));
    let log = heard.clone();
    let own = Arc::new(AtomicU32::new(0));
    let counter = own.clone();
    let stack = Resilience::http()
        .on_event(move |event: &Event<'_>| {
            let what = if event.kind::<RetryEvent>().is_some() {
                "retry"
            } else if event.kind::<BreakerEvent>().is_some() {
                "breaker"
            } else if event.kind::<BulkheadEvent>().is_some() {
                "bulkhead"
            } else if event.kind::<TimeoutEvent>().is_some() {
                "timeout"
            } else {
                "other"
            };
            log.lock().unwrap().push(format!("{what} {}", event.name()));
        })
        .retry(|retry| {
            retry.backoff(fixed(10)).on_event(move |_: &Event<'_>| {
                counter.fetch_add(1, Ordering::SeqCst);
            })
        })
        .circuit_breaker(|breaker| breaker.name("orders").count_window(2))
        .total_timeout_slot(
            TimeoutLayer::builder()
                .name("whole")
                .timeout(Duration::from_secs(60))
                .build()
                .unwrap(),
        )
        .attempt_timeout(Duration::from_secs(1))
        .build()
        .unwrap();
    let client = stack.layer(reqwest::Client::new());

    // 503, then an answer too slow for the attempt's second: a retry, a
    // timeout, two failures in the breaker's window of two (it opens).
    let res = client.clone().oneshot(get(&server.url("/"))).await;
    let heard = heard.lock().unwrap().clone();
    let has = |entry: &str| heard.iter().any(|h| h == entry);
    assert!(has("retry retry"), "{heard:?} ({res:?})");
    assert!(has("bulkhead bulkhead"), "{heard:?}");
    assert!(has("timeout attempt"), "{heard:?}");
    assert!(has("breaker orders"), "{heard:?}");
    assert!(
        !heard.iter().any(|h| h.ends_with(" whole")),
        "a layer given whole keeps its own: {heard:?}"
    );
    assert!(
        own.load(Ordering::SeqCst) > 0,
        "the part's own listener too"
    );
}

/// The standard stack's numbers are defaults, and give way as the
/// breaker's own defaults do: a count window set alone judges after as
/// many calls as it holds.
#[test]
fn the_standard_stacks_defaults_give_way_to_what_is_set() {
    let stack = Resilience::http()
        .circuit_breaker(|breaker| breaker.count_window(10))
        .build();
    assert!(stack.is_ok(), "{:?}", stack.err());
    // Two explicit settings that contradict each other are still refused.
    let err = Resilience::http()
        .circuit_breaker(|breaker| breaker.count_window(10).minimum_calls(20))
        .build()
        .unwrap_err();
    assert_eq!(err.part(), Some("circuit_breaker"));
}

#[tokio::test(start_paused = true)]
async fn the_rate_limit_slot_takes_a_typed_setter_and_the_stacks_listener() {
    use palisade::event::Event;
    use palisade::rate_limit::RateLimitEvent;
    use std::sync::Mutex;

    let server = Server::start(vec![], Reply::status(200)).await;
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    let stack = Resilience::builder()
        .rate_limit(|limit| limit.name("api").rate(1, Duration::from_secs(1)))
        .on_event(move |e: &Event<'_>| {
            if let Some(what) = e.kind::<RateLimitEvent>() {
                log.lock().unwrap().push((e.name().to_string(), *what));
            }
        })
        .build()
        .unwrap();
    let svc = stack.layer(reqwest::Client::new());
    let res = svc.clone().oneshot(get(&server.url("/"))).await.unwrap();
    assert_eq!(res.status(), 200);
    let err = svc.oneshot(get(&server.url("/"))).await.unwrap_err();
    assert_eq!(ErrorKind::of(&err), ErrorKind::RateLimited);
    assert_eq!(server.seen().len(), 1);
    assert_eq!(
        *seen.lock().unwrap(),
        [(
            "api".to_string(),
            RateLimitEvent::Rejected {
                retry_after: Duration::from_secs(1)
            }
        )]
    );
}

#[test]
fn a_rate_limit_without_a_rate_is_a_config_error_naming_rate() {
    let err = Resilience::builder()
        .rate_limit(|limit| limit.burst(5))
        .build()
        .unwrap_err();
    assert_eq!((err.part(), err.parameter()), (Some("rate_limit"), "rate"));
}

/// The adaptive limit takes the bulkhead's place and the throttle the
/// breaker's, each with the stack's classifier: a 503 from a real server
/// is a dropped sample for the one and a request without an accept for
/// the other, and a refused part is named in the error.
#[tokio::test(start_paused = true)]
async fn the_http_stack_takes_an_adaptive_limit_and_a_throttle() {
    use palisade::adaptive::Aimd;

    let server = Server::start(vec![], Reply::status(503)).await;
    let stack = Resilience::http()
        .retry(|retry| retry.max_attempts(1))
        .adaptive_limit(|limit| {
            limit
                .name("inventory")
                .algorithm(
                    Aimd::builder()
                        .initial_limit(10)
                        .min_limit(1)
                        .build()
                        .unwrap(),
                )
                .per_sample()
        })
        .throttle(|throttle| throttle.name("inventory").min_answered(5).seed(1))
        .build()
        .unwrap();
    let (limit, throttle) = (
        stack.concurrency().handle(),
        stack.circuit_breaker().handle(),
    );
    let svc = stack.layer(reqwest::Client::new());
    let mut throttled = 0;
    for _ in 0..40 {
        match svc.clone().oneshot(get(&server.url("/"))).await {
            Ok(res) => assert_eq!(res.status(), 503),
            Err(e) => {
                assert_eq!(ErrorKind::of(&e), ErrorKind::Throttled, "{e}");
                throttled += 1;
            }
        }
    }
    let sent = server.seen().len();
    assert_eq!(sent + throttled, 40);
    assert!(throttled > 20, "{throttled}");
    assert_eq!((throttle.requests(), throttle.accepts()), (40, 0));
    // Each 503 was a failure: 10 × 0.9 per sample, rounded down.
    let expected = (0..sent).fold(10u32, |l, _| ((f64::from(l) * 0.9) as u32).max(1));
    assert!(expected < 10);
    assert_eq!(limit.limit(), expected, "{sent} failures");

    let err = Resilience::http()
        .adaptive_limit(|limit| limit.min_samples(0))
        .build()
        .unwrap_err();
    assert_eq!(
        (err.part(), err.parameter()),
        (Some("adaptive_limit"), "min_samples")
    );
    let err = Resilience::builder()
        .throttle(|throttle| throttle.k(0.5))
        .build()
        .unwrap_err();
    assert_eq!((err.part(), err.parameter()), (Some("throttle"), "k"));
}
