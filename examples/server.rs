//! palisade protecting servers: rejections answered as each protocol's
//! callers expect them.
//!
//! ```text
//! cargo run --example server
//! ```
//!
//! Starts, on 127.0.0.1, an axum router and a tonic-health server, each
//! behind a bulkhead of one call and a 400 ms timeout, and calls each with
//! a real client (reqwest; tonic's generated `HealthClient`): a slow call
//! that holds the only place and runs out of time, a call refused while it
//! does, and a call that goes through. Prints what the callers get, then
//! exits (in about a second).
//!
//! (Your own crate needs palisade's `http` feature for
//! `HttpRejectionLayer`, and `tonic` for `GrpcRejectionLayer`.)

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use palisade::bulkhead::{BulkheadHandle, BulkheadLayer};
use palisade::error::BoxError;
use palisade::respond::{GrpcRejectionLayer, HttpRejectionLayer};
use palisade::timeout::TimeoutLayer;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;
use tower::{ServiceBuilder, ServiceExt, service_fn};

const TIME_LIMIT: Duration = Duration::from_millis(400);

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), BoxError> {
    http_server_demo().await?;
    grpc_server_demo().await?;
    Ok(())
}

/// An axum router: `/slow` takes 10 s, `/fast` answers at once.
async fn http_server_demo() -> Result<(), BoxError> {
    // The part to copy: shed load beyond one call, bound each call, and
    // answer the rejections as 503 (with Retry-After) and 504.
    let bulkhead = BulkheadLayer::builder()
        .name("api")
        .max_concurrent(1)
        .build()?;
    let in_flight = bulkhead.handle();
    let app = Router::new()
        .route("/fast", get(|| async { "fast" }))
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(10)).await;
                "slow"
            }),
        )
        .layer(
            ServiceBuilder::new()
                .layer(HttpRejectionLayer::new())
                .layer(bulkhead)
                .layer(TimeoutLayer::new(TIME_LIMIT)?),
        );

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, app).await });
    println!("HTTP: axum on {addr}, a bulkhead of 1 and a {TIME_LIMIT:?} timeout");

    let client = reqwest::Client::builder().no_proxy().build()?;
    let url = |path: &str| format!("http://{addr}{path}");
    let slow = tokio::spawn(client.get(url("/slow")).send());
    until_in_flight(&in_flight).await;
    show_http(
        "GET /fast while /slow holds the place",
        client.get(url("/fast")).send().await?,
    );
    show_http("GET /slow", slow.await??);
    show_http("GET /fast", client.get(url("/fast")).send().await?);
    Ok(())
}

fn show_http(call: &str, res: reqwest::Response) {
    let retry_after = res
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(|v| format!(", Retry-After: {v}"))
        .unwrap_or_default();
    println!("  {call:<40} -> {}{retry_after}", res.status());
}

/// A tonic-health server with "inventory" serving, whose calls that carry
/// `x-slow` metadata take 10 s (a slow handler, for the demo).
async fn grpc_server_demo() -> Result<(), BoxError> {
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter
        .set_service_status("inventory", tonic_health::ServingStatus::Serving)
        .await;
    let bulkhead = BulkheadLayer::builder()
        .name("grpc")
        .max_concurrent(1)
        .build()?;
    let in_flight = bulkhead.handle();
    let incoming = tonic::transport::server::TcpIncoming::bind("127.0.0.1:0".parse()?)?;
    let addr: SocketAddr = incoming.local_addr()?;
    // The part to copy: the same protection, answered as gRPC statuses.
    let server = tonic::transport::Server::builder()
        .layer(GrpcRejectionLayer::new())
        .layer(bulkhead)
        .layer(TimeoutLayer::new(TIME_LIMIT)?)
        .layer(tower::layer::layer_fn(slow_when_asked))
        .add_service(health);
    tokio::spawn(async move {
        let _reporter = reporter; // keeps the statuses alive
        server.serve_with_incoming(incoming).await
    });
    println!("gRPC: tonic-health on {addr}, a bulkhead of 1 and a {TIME_LIMIT:?} timeout");

    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?
        .connect()
        .await?;
    let client = HealthClient::new(channel);
    let check = |slow: bool| {
        let mut req = tonic::Request::new(HealthCheckRequest {
            service: "inventory".into(),
        });
        if slow {
            req.metadata_mut().insert("x-slow", "yes".parse().unwrap());
        }
        let mut client = client.clone();
        async move { client.check(req).await }
    };
    let slow = tokio::spawn(check(true));
    until_in_flight(&in_flight).await;
    show_grpc(
        "Check while a slow Check holds the place",
        check(false).await,
    );
    show_grpc("Check (slow)", slow.await?);
    show_grpc("Check", check(false).await);
    Ok(())
}

type Reply = Result<tonic::Response<tonic_health::pb::HealthCheckResponse>, tonic::Status>;

fn show_grpc(call: &str, reply: Reply) {
    match reply {
        Ok(reply) => println!("  {call:<40} -> OK, {:?}", reply.into_inner().status()),
        Err(status) => println!("  {call:<40} -> {:?}: {}", status.code(), status.message()),
    }
}

/// Wraps the tonic routes: a request with `x-slow` metadata waits 10 s.
fn slow_when_asked<S>(
    inner: S,
) -> impl tower::Service<
    http::Request<tonic::body::Body>,
    Response = S::Response,
    Error = S::Error,
    Future = impl Send,
> + Clone
where
    S: tower::Service<http::Request<tonic::body::Body>> + Clone + Send + 'static,
    S::Future: Send,
{
    service_fn(move |req: http::Request<tonic::body::Body>| {
        let inner = inner.clone();
        async move {
            if req.headers().contains_key("x-slow") {
                tokio::time::sleep(Duration::from_secs(10)).await;
            }
            inner.oneshot(req).await
        }
    })
}

/// Waits until the bulkhead has a call in flight.
async fn until_in_flight(bulkhead: &BulkheadHandle) {
    while bulkhead.in_flight() == 0 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}
