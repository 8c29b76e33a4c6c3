//! A palisade stack in a `reqwest_middleware` client: the code keeps
//! `client.get(url).send()`.
//!
//! ```text
//! cargo run --example reqwest_middleware
//! ```
//!
//! (Your own crate needs palisade's `reqwest-middleware` feature; the
//! example starts a small local hyper server, which answers the first
//! request 503 and the next ones 200, so that it runs anywhere.)

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use palisade::Resilience;
use palisade::error::BoxError;
use palisade::middleware::StackMiddleware;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), BoxError> {
    let (addr, requests) = local_server().await?;
    let url = format!("http://{addr}/");

    // The part to copy: the standard HTTP stack as a middleware.
    let client = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
        .with(StackMiddleware::new(Resilience::http().build()?))
        .build();

    let response = client.get(&url).send().await?;
    println!(
        "{} {} (the server saw {} requests: the 503 was retried)",
        response.status(),
        response.text().await?,
        requests.load(Ordering::SeqCst)
    );
    Ok(())
}

/// Answers the first request 503 and the others "hello"; returns its
/// address and how many requests it saw.
async fn local_server() -> std::io::Result<(std::net::SocketAddr, Arc<AtomicU32>)> {
    use hyper::service::service_fn;
    use hyper_util::rt::TokioIo;

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let requests = Arc::new(AtomicU32::new(0));
    let seen = requests.clone();
    tokio::spawn(async move {
        while let Ok((conn, _)) = listener.accept().await {
            let seen = seen.clone();
            let answer = service_fn(move |_request| {
                let first = seen.fetch_add(1, Ordering::SeqCst) == 0;
                async move {
                    let status = if first { 503 } else { 200 };
                    hyper::Response::builder().status(status).body(if first {
                        String::new()
                    } else {
                        "hello".into()
                    })
                }
            });
            tokio::spawn(
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(conn), answer),
            );
        }
    });
    Ok((addr, requests))
}
