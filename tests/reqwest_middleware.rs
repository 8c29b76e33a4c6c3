//! A palisade stack as a `reqwest_middleware::Middleware`, in a
//! `ClientWithMiddleware` that sends with `client.get(url).send()`, against
//! a scripted hyper server on 127.0.0.1. The assertions are on what the
//! server and the middlewares below saw.

#[path = "support/http_server.rs"]
mod http_server;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use http::Extensions;
use http_server::{Reply, Server, closed_port};
use palisade::Resilience;
use palisade::error::{ErrorKind, ErrorKinds};
use palisade::event::Event;
use palisade::middleware::{StackError, StackMiddleware};
use palisade::retry::{RetryEvent, RetryReason};
use reqwest_middleware::{ClientBuilder, ClientWithMiddleware, Middleware, Next};

/// A middleware below the stack: counts the requests it sees and records
/// the `Tag` extension each carried.
#[derive(Clone, Default)]
struct Below {
    seen: Arc<AtomicU32>,
    tags: Arc<Mutex<Vec<Option<Tag>>>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Tag(u32);

#[async_trait::async_trait]
impl Middleware for Below {
    async fn handle(
        &self,
        request: reqwest::Request,
        extensions: &mut Extensions,
        next: Next<'_>,
    ) -> reqwest_middleware::Result<reqwest::Response> {
        self.seen.fetch_add(1, Ordering::SeqCst);
        self.tags
            .lock()
            .unwrap()
            .push(extensions.get::<Tag>().copied());
        // What a middleware below does to the extensions stays with its
        // attempt.
        extensions.insert(Tag(99));
        next.run(request, extensions).await
    }
}

fn client(stack: impl Into<Option<Below>>) -> ClientWithMiddleware {
    let builder = ClientBuilder::new(reqwest::Client::new())
        .with(StackMiddleware::new(Resilience::http().build().unwrap()));
    match stack.into() {
        Some(below) => builder.with(below).build(),
        None => builder.build(),
    }
}

#[tokio::test(start_paused = true)]
async fn get_send_is_retried_through_the_rest_of_the_chain() {
    let server = Server::start(vec![Reply::status(503)], Reply::status(200)).await;
    let below = Below::default();
    let client = ClientBuilder::new(reqwest::Client::new())
        .with_init(reqwest_middleware::Extension(Tag(7)))
        .with(StackMiddleware::new(Resilience::http().build().unwrap()))
        .with(below.clone())
        .build();

    let response = client.get(server.url("/")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(server.seen().len(), 2);
    assert_eq!(
        below.seen.load(Ordering::SeqCst),
        2,
        "each attempt ran below"
    );
    assert_eq!(
        *below.tags.lock().unwrap(),
        [Some(Tag(7)), Some(Tag(7))],
        "each attempt starts from the request's extensions"
    );
}

#[tokio::test(start_paused = true)]
async fn a_post_is_sent_once() {
    let server = Server::start(vec![], Reply::status(503)).await;
    let response = client(None)
        .post(server.url("/orders"))
        .body("one order")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
    assert_eq!(server.seen().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn one_breaker_serves_every_request_of_the_client_and_its_refusal_is_found() {
    let server = Server::start(vec![], Reply::status(500)).await;
    let stack = Resilience::http()
        .retry(|retry| retry.max_attempts(1))
        .circuit_breaker(|breaker| breaker.count_window(4).minimum_calls(4))
        .build()
        .unwrap();
    let breaker = stack.circuit_breaker().handle();
    let client = ClientBuilder::new(reqwest::Client::new())
        .with(StackMiddleware::new(stack))
        .build();
    for _ in 0..4 {
        let response = client.get(server.url("/")).send().await.unwrap();
        assert_eq!(response.status(), 500);
    }
    assert_eq!(breaker.metrics().failures, 4);

    let err = client.get(server.url("/")).send().await.unwrap_err();
    assert_eq!(server.seen().len(), 4, "the open breaker sent nothing");
    assert_eq!(ErrorKind::of_dyn(&err), ErrorKind::CircuitOpen);
    let reqwest_middleware::Error::Middleware(err) = err else {
        panic!("a rejection is the middleware's error");
    };
    assert!(
        err.to_string()
            .starts_with("circuit breaker \"circuit-breaker\" is open"),
        "the rejection's own message: {err}"
    );
    let stack_error = err.downcast_ref::<StackError>().unwrap();
    assert_eq!(
        ErrorKind::of_dyn(stack_error.get_ref()),
        ErrorKind::CircuitOpen
    );
}

#[tokio::test(start_paused = true)]
async fn a_refused_connection_is_retried_and_comes_back_as_reqwests_error() {
    let addr = closed_port().await;
    let not_sent = Arc::new(AtomicU32::new(0));
    let counter = not_sent.clone();
    let stack = Resilience::http()
        .retry(|retry| {
            retry
                .retry_on(ErrorKinds::NONE)
                .on_event(move |e: &Event<'_>| {
                    if let Some(RetryEvent::Retry {
                        reason: RetryReason::NotSent,
                        ..
                    }) = e.kind()
                    {
                        counter.fetch_add(1, Ordering::SeqCst);
                    }
                })
        })
        .build()
        .unwrap();
    let client = ClientBuilder::new(reqwest::Client::new())
        .with(StackMiddleware::new(stack))
        .build();
    // A POST: retried all the same, since it never left.
    let err = client
        .post(format!("http://{addr}/"))
        .body("x")
        .send()
        .await
        .unwrap_err();
    assert_eq!(not_sent.load(Ordering::SeqCst), 2, "three attempts");
    match err {
        reqwest_middleware::Error::Reqwest(err) => assert!(err.is_connect(), "{err}"),
        other => panic!("expected reqwest's own error, got {other:?}"),
    }
}

/// A middleware below that fails: its error comes back as it was.
#[derive(Clone)]
struct Refuses;

#[derive(Debug)]
struct NotAllowed;

impl std::fmt::Display for NotAllowed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("not allowed")
    }
}

impl std::error::Error for NotAllowed {}

#[async_trait::async_trait]
impl Middleware for Refuses {
    async fn handle(
        &self,
        _: reqwest::Request,
        _: &mut Extensions,
        _: Next<'_>,
    ) -> reqwest_middleware::Result<reqwest::Response> {
        Err(reqwest_middleware::Error::middleware(NotAllowed))
    }
}

#[tokio::test(start_paused = true)]
async fn a_middleware_error_from_below_comes_back_unchanged() {
    let server = Server::start(vec![], Reply::status(200)).await;
    let client = ClientBuilder::new(reqwest::Client::new())
        .with(StackMiddleware::new(Resilience::http().build().unwrap()))
        .with(Refuses)
        .build();
    let err = client.get(server.url("/")).send().await.unwrap_err();
    let reqwest_middleware::Error::Middleware(err) = err else {
        panic!("the middleware's own error");
    };
    assert!(err.downcast_ref::<NotAllowed>().is_some(), "{err:?}");
    assert_eq!(server.seen().len(), 0);
}

/// A middleware below that fails as a connection that was refused would,
/// counting its calls.
#[derive(Clone, Default)]
struct RefusedBelow(Arc<AtomicU32>);

#[async_trait::async_trait]
impl Middleware for RefusedBelow {
    async fn handle(
        &self,
        _: reqwest::Request,
        _: &mut Extensions,
        _: Next<'_>,
    ) -> reqwest_middleware::Result<reqwest::Response> {
        self.0.fetch_add(1, Ordering::SeqCst);
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        Err(reqwest_middleware::Error::Middleware(anyhow::Error::new(
            refused,
        )))
    }
}

/// The stack judges a middleware's error by what it holds: a refused
/// connection below is retried even for a POST, and a fallback reads the
/// error's own message.
#[tokio::test(start_paused = true)]
async fn a_middlewares_error_is_judged_by_what_it_holds() {
    let below = RefusedBelow::default();
    let client = ClientBuilder::new(reqwest::Client::new())
        .with(StackMiddleware::new(Resilience::http().build().unwrap()))
        .with(below.clone())
        .build();
    let err = client
        .post("http://127.0.0.1:1/")
        .body("x")
        .send()
        .await
        .unwrap_err();
    assert_eq!(below.0.load(Ordering::SeqCst), 3, "never sent: retried");
    assert!(matches!(err, reqwest_middleware::Error::Middleware(_)));

    let seen = Arc::new(Mutex::new(String::new()));
    let record = seen.clone();
    let stack = Resilience::http()
        .retry(|retry| retry.max_attempts(1))
        .fallback(palisade::fallback::from_sync_fn(
            move |failed: palisade::fallback::Failed<reqwest::Request, reqwest::Response>| {
                *record.lock().unwrap() = failed.outcome.unwrap_err().to_string();
                Ok(reqwest::Response::from(http::Response::new("fallback")))
            },
        ))
        .build()
        .unwrap();
    let client = ClientBuilder::new(reqwest::Client::new())
        .with(StackMiddleware::new(stack))
        .with(Refuses)
        .build();
    let response = client.get("http://127.0.0.1:1/").send().await.unwrap();
    assert_eq!(response.text().await.unwrap(), "fallback");
    assert_eq!(*seen.lock().unwrap(), "not allowed");
}
