//! A real `reqwest::Client` behind palisade, against a scripted server on
//! 127.0.0.1. The assertions are on what the server saw.

#[path = "support/http_server.rs"]
mod http_server;

use std::time::Duration;

use http_server::{Reply, Server};
use palisade::Resilience;
use palisade::backoff::{Backoff, Jitter};
use palisade::circuit_breaker::{CircuitBreakerLayer, CircuitState};
use palisade::classify::HttpClassifier;
use palisade::error::{BoxError, ErrorKind};
use palisade::retry::{ReqwestRequests, RetryLayer};
use palisade::timeout::TimeoutLayer;
use tower::{Layer, Service, ServiceExt};

const MS: Duration = Duration::from_millis(1);

fn retry(classifier: HttpClassifier) -> RetryLayer<HttpClassifier, Backoff, ReqwestRequests> {
    RetryLayer::builder()
        .classifier(classifier)
        .requests(ReqwestRequests)
        .max_attempts(4)
        .backoff(
            Backoff::exponential(100 * MS)
                .max_delay(Duration::from_secs(5))
                .jitter(Jitter::None)
                .build()
                .unwrap(),
        )
        .no_budget()
        .build()
        .unwrap()
}

fn get(url: &str) -> reqwest::Request {
    reqwest::Request::new(reqwest::Method::GET, url.parse().unwrap())
}

fn post(url: &str, body: &'static str) -> reqwest::Request {
    let mut req = reqwest::Request::new(reqwest::Method::POST, url.parse().unwrap());
    *req.body_mut() = Some(body.into());
    req
}

#[tokio::test(start_paused = true)]
async fn retries_arrive_with_the_backoff_spacing() {
    let server = Server::start(
        vec![Reply::status(503), Reply::status(503)],
        Reply::status(200),
    )
    .await;
    let client = retry(HttpClassifier::new()).layer(reqwest::Client::new());
    let res = client.oneshot(get(&server.url("/item"))).await.unwrap();
    assert_eq!(res.status(), 200);
    let arrivals = server.arrivals_ms();
    assert_eq!(arrivals.len(), 3);
    assert_eq!(arrivals[1] - arrivals[0], 100);
    assert_eq!(arrivals[2] - arrivals[1], 200);
}

#[tokio::test(start_paused = true)]
async fn retry_after_is_honoured() {
    let server = Server::start(
        vec![Reply::status(429).header("retry-after", "2")],
        Reply::status(200),
    )
    .await;
    let client = retry(HttpClassifier::new()).layer(reqwest::Client::new());
    assert_eq!(
        client
            .oneshot(get(&server.url("/")))
            .await
            .unwrap()
            .status(),
        200
    );
    let arrivals = server.arrivals_ms();
    assert_eq!(arrivals[1] - arrivals[0], 2000);
}

#[tokio::test(start_paused = true)]
async fn non_idempotent_requests_are_not_retried_unless_configured() {
    let server = Server::start(vec![], Reply::status(503)).await;
    let client = retry(HttpClassifier::new()).layer(reqwest::Client::new());
    let res = client
        .oneshot(post(&server.url("/orders"), "{}"))
        .await
        .unwrap();
    assert_eq!(res.status(), 503);
    assert_eq!(server.seen().len(), 1);

    let server = Server::start(
        vec![Reply::status(503), Reply::status(502)],
        Reply::status(201),
    )
    .await;
    let client =
        retry(HttpClassifier::new().retry_non_idempotent(true)).layer(reqwest::Client::new());
    let res = client
        .oneshot(post(&server.url("/orders"), r#"{"sku":"A-1","qty":3}"#))
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let seen = server.seen();
    assert_eq!(seen.len(), 3);
    for s in &seen {
        assert_eq!(s.method, "POST");
        assert_eq!(
            s.body, br#"{"sku":"A-1","qty":3}"#,
            "the body is replayed intact"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn an_open_breaker_keeps_calls_off_the_server_then_sends_exactly_the_probes() {
    let server = Server::start(vec![], Reply::status(500)).await;
    let breaker = CircuitBreakerLayer::builder()
        .classifier(HttpClassifier::new())
        .count_window(5)
        .minimum_calls(5)
        .wait_duration(Duration::from_secs(10))
        .half_open_calls(2)
        .build()
        .unwrap();
    let handle = breaker.handle();
    let client = breaker.layer(reqwest::Client::new());
    for _ in 0..5 {
        let res = client.clone().oneshot(get(&server.url("/"))).await.unwrap();
        assert_eq!(res.status(), 500);
    }
    assert_eq!(handle.state(), CircuitState::Open);
    for _ in 0..20 {
        let err = client
            .clone()
            .oneshot(get(&server.url("/")))
            .await
            .unwrap_err();
        assert_eq!(ErrorKind::of(&err), ErrorKind::CircuitOpen);
    }
    assert_eq!(
        server.seen().len(),
        5,
        "nothing reached the server while open"
    );

    tokio::time::advance(Duration::from_secs(10)).await;
    server.set_default(Reply::status(200));
    // Two probes at once, and a third call while they are out.
    let mut a = client.clone();
    let mut b = client.clone();
    let mut c = client.clone();
    let a = a.ready().await.unwrap().call(get(&server.url("/probe")));
    let b = b.ready().await.unwrap().call(get(&server.url("/probe")));
    let third = c
        .ready()
        .await
        .unwrap()
        .call(get(&server.url("/third")))
        .await;
    assert_eq!(ErrorKind::of(&third.unwrap_err()), ErrorKind::CircuitOpen);
    assert_eq!(a.await.unwrap().status(), 200);
    assert_eq!(b.await.unwrap().status(), 200);
    assert_eq!(handle.state(), CircuitState::Closed);
    let probes: Vec<_> = server.seen().into_iter().skip(5).map(|s| s.path).collect();
    assert_eq!(probes, ["/probe", "/probe"], "exactly the probes");
}

#[tokio::test(start_paused = true)]
async fn a_slow_server_is_cut_off_per_attempt_and_retried() {
    let server = Server::start(
        vec![Reply::status(200).after(Duration::from_secs(30))],
        Reply::status(200),
    )
    .await;
    let client = Resilience::builder()
        .repeat_slot(retry(HttpClassifier::new()))
        .attempt_timeout_slot(TimeoutLayer::new(Duration::from_secs(1)).unwrap())
        .build()
        .unwrap()
        .layer(reqwest::Client::new());
    let res: Result<reqwest::Response, BoxError> = client.oneshot(get(&server.url("/"))).await;
    assert_eq!(res.unwrap().status(), 200);
    let arrivals = server.arrivals_ms();
    assert_eq!(arrivals.len(), 2);
    assert_eq!(
        arrivals[1] - arrivals[0],
        1100,
        "1 s timeout, then the 100 ms backoff"
    );
}
