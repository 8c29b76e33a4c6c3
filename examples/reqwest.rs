//! The least code that protects a `reqwest::Client` with palisade.
//!
//! ```text
//! cargo run --example reqwest
//! ```
//!
//! (Your own crate needs palisade's `reqwest` feature; the example starts a
//! small local hyper server so that it runs anywhere.)

use std::time::Duration;

use palisade::Resilience;
use palisade::error::BoxError;
use tower::{Layer, ServiceExt};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), BoxError> {
    let url = format!("http://{}/", local_server().await?);

    // The part to copy: the standard HTTP stack (retry idempotent
    // requests on 5xx, 408 and 429, honouring Retry-After, within a budget;
    // stop calling a failing server; bound the whole call and each
    // attempt; its defaults are in `Resilience::http`'s docs), with each
    // attempt given 2 s.
    let client = Resilience::http()
        .attempt_timeout(Duration::from_secs(2))
        .build()?
        .layer(reqwest::Client::new());

    let request = reqwest::Request::new(reqwest::Method::GET, url.parse()?);
    let response = client.oneshot(request).await?;
    println!("{} {}", response.status(), response.text().await?);
    Ok(())
}

/// Answers every request with "hello"; returns its address.
async fn local_server() -> std::io::Result<std::net::SocketAddr> {
    use hyper::service::service_fn;
    use hyper_util::rt::TokioIo;

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((conn, _)) = listener.accept().await {
            let hello = service_fn(|_request| async {
                Ok::<_, std::convert::Infallible>(hyper::Response::new("hello".to_string()))
            });
            tokio::spawn(
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(conn), hello),
            );
        }
    });
    Ok(addr)
}
