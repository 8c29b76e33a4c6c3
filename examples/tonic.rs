//! The least code that protects a tonic client with palisade.
//!
//! ```text
//! cargo run --example tonic
//! ```
//!
//! (Your own crate needs palisade's `tonic` feature, for `tonic::Status`
//! classification, and `http`, for replaying request bodies. The example
//! starts a local tonic-health server so that it runs anywhere.)

use std::time::Duration;

use palisade::ServiceBuilderExt;
use palisade::circuit_breaker::CircuitBreakerLayer;
use palisade::classify::GrpcClassifier;
use palisade::error::BoxError;
use palisade::retry::{ReplayBodies, ReplayBody, RetryLayer};
use palisade::timeout::TimeoutLayer;
use tonic::body::Body;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;
use tower::ServiceBuilder;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), BoxError> {
    let endpoint = local_health_server().await?;
    let channel = tonic::transport::Endpoint::from_shared(endpoint)?
        .connect()
        .await?;

    // The part to copy: retry Unavailable and friends (honouring
    // grpc-retry-pushback-ms), replaying the request body; stop calling a
    // failing server; bound each attempt. The Channel takes tonic bodies, so
    // the replayable body is wrapped back into one below the retry.
    let stack = ServiceBuilder::new()
        .retries(
            RetryLayer::builder()
                .classifier(GrpcClassifier::new())
                .requests(ReplayBodies::default())
                .build()?,
        )
        .circuit_breaker(
            CircuitBreakerLayer::builder()
                .classifier(GrpcClassifier::new())
                .build()?,
        )
        .time_limit(TimeoutLayer::new(Duration::from_secs(2))?)
        .map_request(|req: http::Request<ReplayBody<Body>>| req.map(Body::new))
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

/// Serves tonic-health on 127.0.0.1, with "inventory" serving.
async fn local_health_server() -> Result<String, BoxError> {
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter
        .set_service_status("inventory", tonic_health::ServingStatus::Serving)
        .await;
    let incoming = tonic::transport::server::TcpIncoming::bind("127.0.0.1:0".parse()?)?;
    let addr = incoming.local_addr()?;
    tokio::spawn(async move {
        let _reporter = reporter;
        let _ = tonic::transport::Server::builder()
            .add_service(health)
            .serve_with_incoming(incoming)
            .await;
    });
    Ok(format!("http://{addr}"))
}
