//! Hedged requests cut the tail of a fan-out: a simulation of the result in
//! Dean and Barroso's "The Tail at Scale" (CACM 56(2), 2013):
//!
//! > in a Google benchmark that reads the values for 1,000 keys stored in a
//! > BigTable table distributed across 100 different servers, sending a
//! > hedging request after a 10ms delay reduces the 99.9th-percentile
//! > latency for retrieving all 1,000 values from 1,800ms to 74ms while
//! > sending just 2% more requests.
//!
//! A read asks 100 servers for 1,000 keys at once (each key on one of
//! three replicas, picked per request) and is done when the last value is
//! in: its latency is that of its slowest request. A server answers most
//! requests in a millisecond or two, about 2% in 10 to 60 ms (a queue
//! behind a compaction, a cold cache), and one in two thousand after a
//! stall of 0.2 to 1.8 s (a collection pause, a disk hiccup). A thousand
//! requests per read make the stalls common: two reads in five wait for
//! one. A hedge sends a second copy of a request still unanswered
//! after the delay, to another replica, and the first answer wins.
//!
//! Everything runs on tokio's paused clock, through palisade's
//! `HedgeLayer` over a simulated cluster: the latencies are virtual, so the
//! thousands of reads take a few seconds of real time, and a seed makes
//! the run repeatable. `cargo run --release --example tail_at_scale` (or
//! without `--release`, slower) prints p50, p99 and p99.9 of the read
//! latency, and the requests sent over the keys asked, for no hedging, a
//! hedge after a fixed 10 ms, and a hedge after the 95th percentile of
//! recent latencies (the paper's other advice). `READS=5000` sets the
//! number of reads (default 3,000; 300 in a debug build), `SEED=7` the
//! seed (default 2013).

#![allow(dead_code)] // a test includes this file for `simulate`

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::future::BoxFuture;
use futures_util::stream::{FuturesUnordered, StreamExt};
use palisade::BoxError;
use palisade::hedge::HedgeLayer;
use rand::rngs::Xoshiro256PlusPlus;
use rand::{RngExt, SeedableRng};
use tokio::time::Instant;
use tower::{Layer, Service, ServiceExt};

const SERVERS: usize = 100;
const KEYS_PER_READ: u64 = 1_000;
const REPLICAS: u64 = 3;

/// One request's time at a server: the latency model described above.
fn latency(rng: &mut Xoshiro256PlusPlus) -> Duration {
    let u: f64 = rng.random();
    let ms = if u < 0.0005 {
        rng.random_range(200.0..1_800.0)
    } else if u < 0.02 {
        rng.random_range(10.0..60.0)
    } else {
        // 0.3 ms plus an exponential of mean 1.2 ms, under 10 ms.
        (0.3 - 1.2 * rng.random::<f64>().max(1e-12).ln()).min(9.9)
    };
    Duration::from_secs_f64(ms / 1_000.0)
}

/// The cluster: a request for a key goes to one of the key's replicas,
/// picked at random, and is answered after that server's latency.
#[derive(Clone)]
struct Cluster {
    rng: Arc<Mutex<Xoshiro256PlusPlus>>,
    /// Requests each server received.
    received: Arc<Vec<AtomicU64>>,
}

impl Cluster {
    fn new(seed: u64) -> Self {
        Self {
            rng: Arc::new(Mutex::new(Xoshiro256PlusPlus::seed_from_u64(seed))),
            received: Arc::new((0..SERVERS).map(|_| AtomicU64::new(0)).collect()),
        }
    }

    fn requests(&self) -> u64 {
        self.received
            .iter()
            .map(|n| n.load(Ordering::Relaxed))
            .sum()
    }
}

impl Service<u64> for Cluster {
    type Response = u64;
    type Error = BoxError;
    type Future = BoxFuture<'static, Result<u64, BoxError>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, key: u64) -> Self::Future {
        let (replica, took) = {
            let mut rng = self.rng.lock().unwrap();
            (rng.random_range(0..REPLICAS), latency(&mut rng))
        };
        let server = ((key + replica * 37) % SERVERS as u64) as usize;
        self.received[server].fetch_add(1, Ordering::Relaxed);
        Box::pin(async move {
            tokio::time::sleep(took).await;
            Ok(key)
        })
    }
}

/// How a client sends its requests.
#[derive(Debug, Clone, Copy)]
pub enum Client {
    /// Each request once.
    Plain,
    /// A hedge after a fixed delay.
    HedgeAfter(Duration),
    /// A hedge after the given percentile of recent latencies (after a
    /// warm-up of a thousand samples at a fixed 10 ms).
    HedgeAtPercentile(f64),
}

impl Client {
    fn label(self) -> String {
        match self {
            Client::Plain => "no hedging".to_string(),
            Client::HedgeAfter(delay) => format!("hedge after {delay:?}"),
            Client::HedgeAtPercentile(p) => format!("hedge after p{p}"),
        }
    }
}

/// What one client's reads came to.
#[derive(Debug, Clone)]
pub struct Row {
    pub client: Client,
    pub p50: Duration,
    pub p99: Duration,
    pub p999: Duration,
    /// Requests sent per key asked, minus one: the extra load.
    pub extra_load: f64,
}

/// The latency below which a share `q` of the sorted `latencies` fall.
fn percentile(sorted: &[Duration], q: f64) -> Duration {
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// Runs `reads` reads of 1,000 keys with each client, on paused time (the
/// caller's runtime must have it paused), from `seed`.
pub async fn simulate(reads: usize, seed: u64) -> Vec<Row> {
    let clients = [
        Client::Plain,
        Client::HedgeAfter(Duration::from_millis(10)),
        Client::HedgeAtPercentile(95.0),
    ];
    let mut rows = Vec::new();
    for client in clients {
        let cluster = Cluster::new(seed);
        let service = match client {
            Client::Plain => tower::util::BoxCloneService::new(cluster.clone()),
            Client::HedgeAfter(delay) => tower::util::BoxCloneService::new(
                HedgeLayer::builder()
                    .delay(delay)
                    .build()
                    .expect("a valid hedge")
                    .layer(cluster.clone()),
            ),
            Client::HedgeAtPercentile(p) => tower::util::BoxCloneService::new(
                HedgeLayer::builder()
                    .delay(Duration::from_millis(10))
                    .delay_percentile(p, 1_000, Duration::from_secs(10))
                    .build()
                    .expect("a valid hedge")
                    .layer(cluster.clone()),
            ),
        };
        let mut latencies = Vec::with_capacity(reads);
        for read in 0..reads as u64 {
            let started = Instant::now();
            let mut requests: FuturesUnordered<_> = (0..KEYS_PER_READ)
                .map(|key| service.clone().oneshot(read * KEYS_PER_READ + key))
                .collect();
            while let Some(answer) = requests.next().await {
                answer.expect("every request is answered");
            }
            latencies.push(started.elapsed());
        }
        latencies.sort_unstable();
        let asked = reads as u64 * KEYS_PER_READ;
        rows.push(Row {
            client,
            p50: percentile(&latencies, 0.5),
            p99: percentile(&latencies, 0.99),
            p999: percentile(&latencies, 0.999),
            extra_load: cluster.requests() as f64 / asked as f64 - 1.0,
        });
    }
    rows
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1_000.0)
}

#[tokio::main(flavor = "current_thread", start_paused = true)]
async fn main() {
    // A debug build (as CI runs the examples) simulates fewer reads, in
    // about as many seconds.
    let default = if cfg!(debug_assertions) { 300 } else { 3_000 };
    let reads = std::env::var("READS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(default);
    let seed = std::env::var("SEED")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(2013);
    let rows = simulate(reads, seed).await;
    println!(
        "{reads} reads of {KEYS_PER_READ} keys over {SERVERS} servers (latency of the whole read):\n"
    );
    println!(
        "{:<20} {:>10} {:>10} {:>10} {:>14}",
        "client", "p50", "p99", "p99.9", "extra requests"
    );
    for row in &rows {
        println!(
            "{:<20} {:>10} {:>10} {:>10} {:>13.1}%",
            row.client.label(),
            ms(row.p50),
            ms(row.p99),
            ms(row.p999),
            row.extra_load * 100.0
        );
    }
    println!(
        "\nThe paper: p99.9 from 1,800 ms to 74 ms with a hedge after 10 ms, for 2% more requests."
    );
}
