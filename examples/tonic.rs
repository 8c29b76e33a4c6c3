//! The least code that protects a tonic client with palisade.
//!
//! ```text
//! cargo run --example tonic
//! ```
//!
//! (Your own crate needs palisade's `tonic` feature, for the standard gRPC
//! stack. The example starts a local tonic-health server so that it
//! runs anywhere.)
//!
//! The server is still starting when the first call goes out: its
//! connection is refused, the request never left, and the retry sends it
//! again, the safest retry there is.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use palisade::Resilience;
use palisade::error::BoxError;
use palisade::event::Event;
use palisade::retry::{RetryEvent, RetryReason};
use tokio::sync::Notify;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;
use tower::Layer;

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

    // The part to copy: the standard gRPC stack (retry UNAVAILABLE and
    // connections that failed, honouring grpc-retry-pushback-ms, replaying
    // the request body into the Channel; stop calling a failing server;
    // bound the call and each attempt; the stack's own refusals reach the
    // caller as the right Status), with each attempt given 2 s and the
    // retries printed.
    let stack = Resilience::grpc()
        .retry(|retry| retry.on_event(start_when_refused(start_server)))
        .attempt_timeout(Duration::from_secs(2))
        .build()?
        .layer(channel);

    let mut client = HealthClient::new(stack);
    let reply = client
        .check(HealthCheckRequest {
            service: "inventory".into(),
        })
        .await?;
    println!("inventory is {:?}", reply.into_inner().status());
    Ok(())
}

/// Prints each retry event, and starts the server once an attempt was
/// refused.
fn start_when_refused(start_server: Arc<Notify>) -> impl Fn(&Event<'_>) + Send + Sync + 'static {
    move |event: &Event<'_>| {
        println!("{event}");
        if let Some(RetryEvent::Retry {
            reason: RetryReason::NotSent,
            ..
        }) = event.kind()
        {
            start_server.notify_one();
        }
    }
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
