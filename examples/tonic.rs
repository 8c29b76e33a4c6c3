//! The least code that protects a tonic client with palisade.
//!
//! ```text
//! cargo run --example tonic
//! ```
//!
//! (Your own crate needs palisade's `tonic` feature, for `tonic::Status`
//! classification and `TonicBodies`, which replays request bodies into the
//! `Channel`. The example starts a local tonic-health server so that it
//! runs anywhere.)
//!
//! The server is still starting when the first call goes out: its
//! connection is refused, the request never left, and the retry sends it
//! again, the safest retry there is.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use palisade::ServiceBuilderExt;
use palisade::circuit_breaker::CircuitBreakerLayer;
use palisade::classify::GrpcClassifier;
use palisade::error::BoxError;
use palisade::event::Event;
use palisade::retry::{RetryEvent, RetryReason};
use palisade::retry::{RetryLayer, TonicBodies};
use palisade::timeout::TimeoutLayer;
use tokio::sync::Notify;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;
use tower::ServiceBuilder;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), BoxError> {
    // A port with nothing listening yet: the server starts when the first
    // attempt has been refused.
    let addr = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await?
        .local_addr()?;
    let start_server = Arc::new(Notify::new());
    tokio::spawn(health_server_on(addr, Arc::clone(&start_server)));
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?.connect_lazy();

    // The part to copy: retry Unavailable and connections that failed
    // (honouring grpc-retry-pushback-ms), replaying the request body; stop
    // calling a failing server; bound each attempt. `TonicBodies` hands the
    // Channel the tonic bodies it takes.
    let stack = ServiceBuilder::new()
        .retries(
            RetryLayer::builder()
                .classifier(GrpcClassifier::new())
                .requests(TonicBodies::default())
                .on_event(move |event: &Event<'_>| {
                    println!("{event}");
                    if let Some(RetryEvent::Retry {
                        reason: RetryReason::NotSent,
                        ..
                    }) = event.kind()
                    {
                        start_server.notify_one();
                    }
                })
                .build()?,
        )
        .circuit_breaker(
            CircuitBreakerLayer::builder()
                .classifier(GrpcClassifier::new())
                .build()?,
        )
        .time_limit(TimeoutLayer::new(Duration::from_secs(2))?)
        .service(channel);

    let mut client = HealthClient::new(stack);
    let reply = client
        .check(HealthCheckRequest {
            service: "inventory".into(),
        })
        .await?;
    println!("inventory is {:?}", reply.into_inner().status());
    Ok(())
}

/// Serves tonic-health on `addr` once told to, with "inventory" serving.
async fn health_server_on(addr: SocketAddr, start: Arc<Notify>) -> Result<(), BoxError> {
    start.notified().await;
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter
        .set_service_status("inventory", tonic_health::ServingStatus::Serving)
        .await;
    let incoming = tonic::transport::server::TcpIncoming::bind(addr)?;
    println!("server: listening on {addr}");
    tonic::transport::Server::builder()
        .add_service(health)
        .serve_with_incoming(incoming)
        .await?;
    Ok(())
}
