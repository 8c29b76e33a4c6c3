//! Clients for two downstreams from one configuration file.
//!
//! ```text
//! cargo run --example config
//! ```
//!
//! `examples/resilience.toml` describes two stacks: `inventory` retries a
//! flaky service; `search` inherits from it, but hedges a slow tail in the
//! retry's place, throttles in the breaker's, and adapts its concurrency
//! limit in the bulkhead's. The example starts two local hyper servers
//! that behave that way, calls each through its stack, and shows a bad
//! value refused with its path. (Your own crate needs palisade's `serde`
//! and `reqwest` features, and a format crate: `toml` here.)

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use palisade::config::{Config, Document};
use palisade::error::BoxError;
use tower::{Layer, ServiceExt};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), BoxError> {
    let document: Document = toml::from_str(include_str!("resilience.toml"))?;
    let config = Config::new(document)?;
    for name in config.names() {
        let parts: Vec<_> = config
            .settings(&name)
            .unwrap()
            .parts()
            .map(|p| p.as_str())
            .collect();
        println!("{name}: {}", parts.join(" → "));
    }

    // inventory: two requests in three fail with 503; the retry hides it.
    let (inventory_url, inventory_hits) = local_server(|n| {
        if n % 3 == 2 {
            (200, Duration::ZERO)
        } else {
            (503, Duration::ZERO)
        }
    })
    .await?;
    let inventory = config
        .http_stack("inventory")?
        .layer(reqwest::Client::new());
    for _ in 0..3 {
        let request = reqwest::Request::new(reqwest::Method::GET, inventory_url.parse()?);
        let response = inventory.clone().oneshot(request).await?;
        println!("inventory: {}", response.status());
    }
    println!(
        "inventory: 3 calls answered 200 after {} requests to the server",
        inventory_hits.load(Ordering::Relaxed)
    );

    // search: one request in four takes 1.5 s; the hedge sent after 50 ms
    // answers first.
    let (search_url, search_hits) = local_server(|n| {
        if n % 4 == 0 {
            (200, Duration::from_millis(1500))
        } else {
            (200, Duration::from_millis(5))
        }
    })
    .await?;
    let search = config.http_stack("search")?.layer(reqwest::Client::new());
    let mut slowest = Duration::ZERO;
    for _ in 0..8 {
        let request = reqwest::Request::new(reqwest::Method::GET, search_url.parse()?);
        let started = Instant::now();
        let response = search.clone().oneshot(request).await?;
        assert_eq!(response.status(), 200);
        slowest = slowest.max(started.elapsed());
    }
    println!(
        "search: 8 calls answered, the slowest in {slowest:?} though the server takes 1.5 s for one in four ({} requests sent)",
        search_hits.load(Ordering::Relaxed)
    );

    // A value no builder would take is refused before any stack is made.
    let bad: Document = toml::from_str(&include_str!("resilience.toml").replace(
        "failure_rate_threshold = 0.5",
        "failure_rate_threshold = 1.5",
    ))?;
    println!("refused: {}", Config::new(bad).unwrap_err());
    Ok(())
}

/// A local hyper server whose `n`-th request gets `answer(n)`: a status
/// and a delay. Returns its URL and its request counter.
async fn local_server(
    answer: fn(u32) -> (u16, Duration),
) -> std::io::Result<(String, Arc<AtomicU32>)> {
    use hyper::service::service_fn;
    use hyper_util::rt::TokioIo;

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/", listener.local_addr()?);
    let hits = Arc::new(AtomicU32::new(0));
    let counter = hits.clone();
    tokio::spawn(async move {
        while let Ok((conn, _)) = listener.accept().await {
            let counter = counter.clone();
            let svc = service_fn(move |_request| {
                let (status, delay) = answer(counter.fetch_add(1, Ordering::Relaxed));
                async move {
                    tokio::time::sleep(delay).await;
                    let mut response = hyper::Response::new(String::from("ok"));
                    *response.status_mut() = hyper::StatusCode::from_u16(status).unwrap();
                    Ok::<_, std::convert::Infallible>(response)
                }
            });
            tokio::spawn(
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(conn), svc),
            );
        }
    });
    Ok((url, hits))
}
