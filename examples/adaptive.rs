//! Adaptive concurrency limits against a service whose capacity changes:
//! a simulation on tokio's paused clock.
//!
//! The service has `capacity` workers; a call holds one for 100 ms, and
//! waits its turn, first come first served, when all are busy: past
//! capacity, latency grows with the queue, and a call that waited a second
//! without a worker fails (the service's own deadline). Its capacity is 50
//! calls for the first 30 s, 10 for the next 30, then 80. Calls arrive at
//! 1,000 a second, more than it can serve in every phase (500, 100 and 800
//! a second), each through one client:
//!
//! * a fixed bulkhead of 100, a setting that was right once;
//! * an adaptive limit (the layer's default windows) with [`Aimd`] (a call
//!   slower than 120 ms counts as a failure: AIMD sees nothing else),
//!   [`Vegas`] (its defaults) and [`Gradient2`] (a long window of 3,000
//!   windows, about ten minutes, as concurrency-limits' 600 one-second
//!   windows are, and a queue allowance of 2, for a service of ten), each
//!   starting at 20 with a floor of 1 and a ceiling of 200.
//!
//! A call over a client's limit is refused at once (shed), which is what a
//! client can do that the service cannot: say no before the queue grows.
//! `cargo run --example adaptive` prints, every 5 s of virtual time, each
//! client's limit, the calls a second the service answered for it, and the
//! 99th percentile latency of those it let through. `SEED=7` sets Vegas's
//! seed (default 17); nothing else is random. `PER_SAMPLE=1` has the
//! adaptive limits learn from every sample on its own rather than in the
//! layer's windows.
//!
//! [`Aimd`]: palisade::adaptive::Aimd
//! [`Vegas`]: palisade::adaptive::Vegas
//! [`Gradient2`]: palisade::adaptive::Gradient2

#![allow(dead_code)] // a test includes this file for `simulate`

use std::sync::{Arc, Mutex};
use std::time::Duration;

use palisade::BoxError;
use palisade::adaptive::{AdaptiveLimitLayer, Aimd, Gradient2, Vegas};
use palisade::bulkhead::BulkheadLayer;
use palisade::error::ErrorKind;
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tower::util::BoxCloneService;
use tower::{Layer, ServiceExt, service_fn};

/// The service's capacity in each phase, and how long the phase lasts.
pub const PHASES: [(u32, Duration); 3] = [
    (50, Duration::from_secs(30)),
    (10, Duration::from_secs(30)),
    (80, Duration::from_secs(30)),
];
/// How long a call holds a worker.
pub const SERVICE_TIME: Duration = Duration::from_millis(100);
/// A call that waited this long for a worker fails.
pub const SERVICE_DEADLINE: Duration = Duration::from_secs(1);
/// One call arrives every millisecond.
pub const ARRIVAL: Duration = Duration::from_millis(1);

/// One of the clients compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Client {
    Fixed(u32),
    Aimd,
    Vegas,
    Gradient2,
}

impl Client {
    pub const ALL: [Client; 4] = [
        Client::Fixed(100),
        Client::Aimd,
        Client::Vegas,
        Client::Gradient2,
    ];

    pub fn label(self) -> String {
        match self {
            Client::Fixed(n) => format!("bulkhead {n}"),
            Client::Aimd => "AIMD".into(),
            Client::Vegas => "Vegas".into(),
            Client::Gradient2 => "Gradient2".into(),
        }
    }
}

/// One second of one client's run.
#[derive(Debug, Clone, Default)]
pub struct Second {
    /// The service's capacity during that second.
    pub capacity: u32,
    /// The client's limit, averaged over the second (read every 10 ms).
    pub limit: f64,
    /// Calls the service answered with success.
    pub served: u32,
    /// Calls the client let through that the service failed.
    pub failed: u32,
    /// Calls the client refused.
    pub shed: u32,
    /// The 99th percentile latency of the calls the client let through
    /// (answered or failed), by the second they ended in.
    pub p99: Duration,
}

#[derive(Default)]
struct Tally {
    latencies: Vec<Duration>,
    served: u32,
    failed: u32,
    shed: u32,
    limit_sum: f64,
    limit_reads: u32,
}

/// A client's stack over the service.
type Svc = BoxCloneService<(), (), BoxError>;

/// The service: `workers` permits, each held for [`SERVICE_TIME`].
fn service(workers: Arc<Semaphore>) -> BoxCloneService<(), (), BoxError> {
    BoxCloneService::new(service_fn(move |()| {
        let workers = workers.clone();
        async move {
            let worker = tokio::time::timeout(SERVICE_DEADLINE, workers.acquire())
                .await
                .map_err(|_| BoxError::from("overloaded: no worker within the deadline"))?
                .expect("never closed");
            tokio::time::sleep(SERVICE_TIME).await;
            drop(worker);
            Ok::<_, BoxError>(())
        }
    }))
}

/// Runs the whole timeline with `client` (the caller's runtime must have
/// its clock paused); one [`Second`] per second.
pub async fn simulate(client: Client, seed: u64) -> Vec<Second> {
    simulate_with(client, seed, false).await
}

/// [`simulate`], with the adaptive limits learning from every sample on
/// its own if `per_sample` (what the layer's windows are compared with).
pub async fn simulate_with(client: Client, seed: u64, per_sample: bool) -> Vec<Second> {
    let workers = Arc::new(Semaphore::new(PHASES[0].0 as usize));
    let inner = service(workers.clone());
    let (svc, limit): (Svc, Box<dyn Fn() -> u32>) = match client {
        Client::Fixed(n) => {
            let layer = BulkheadLayer::builder().max_concurrent(n).build().unwrap();
            let handle = layer.handle();
            (
                BoxCloneService::new(layer.layer(inner)),
                Box::new(move || handle.max_concurrent()),
            )
        }
        adaptive => {
            let builder = AdaptiveLimitLayer::builder().name(adaptive.label());
            let builder = match adaptive {
                Client::Aimd => builder.algorithm(
                    Aimd::builder()
                        .initial_limit(20)
                        .min_limit(1)
                        .max_limit(200)
                        .timeout(Duration::from_millis(120))
                        .build()
                        .unwrap(),
                ),
                Client::Vegas => builder.algorithm(
                    Vegas::builder()
                        .initial_limit(20)
                        .max_limit(200)
                        .seed(seed)
                        .build()
                        .unwrap(),
                ),
                _ => builder.algorithm(
                    Gradient2::builder()
                        .initial_limit(20)
                        .min_limit(1)
                        .max_limit(200)
                        .long_window(3000)
                        .queue_size(2)
                        .build()
                        .unwrap(),
                ),
            };
            let builder = if per_sample {
                builder.per_sample()
            } else {
                builder
            };
            let layer = builder.build().unwrap();
            let handle = layer.handle();
            (
                BoxCloneService::new(layer.layer(inner)),
                Box::new(move || handle.limit()),
            )
        }
    };

    let total: Duration = PHASES.iter().map(|(_, d)| *d).sum();
    let seconds = total.as_secs() as usize;
    let tallies: Arc<Mutex<Vec<Tally>>> = Arc::new(Mutex::new(
        (0..seconds + 2).map(|_| Tally::default()).collect(),
    ));
    let start = Instant::now();
    let second_of = move |at: Instant| (at - start).as_secs() as usize;

    // The capacity changes at each phase's end.
    let mut changes = Vec::new();
    let mut at = Duration::ZERO;
    for pair in PHASES.windows(2) {
        at += pair[0].1;
        changes.push((at, pair[0].0, pair[1].0));
    }
    let controller = {
        let workers = workers.clone();
        tokio::spawn(async move {
            for (at, from, to) in changes {
                tokio::time::sleep_until(start + at).await;
                if to > from {
                    workers.add_permits((to - from) as usize);
                } else {
                    // Takes workers away as they come free.
                    workers.acquire_many(from - to).await.unwrap().forget();
                }
            }
        })
    };

    let mut calls = Vec::with_capacity((total.as_millis() / ARRIVAL.as_millis()) as usize);
    let mut next = start;
    while next < start + total {
        tokio::time::sleep_until(next).await;
        if (next - start).as_millis().is_multiple_of(10) {
            let mut tallies = tallies.lock().unwrap();
            let tally = &mut tallies[second_of(next)];
            tally.limit_sum += f64::from(limit());
            tally.limit_reads += 1;
        }
        let svc = svc.clone();
        let tallies = tallies.clone();
        calls.push(tokio::spawn(async move {
            let sent = Instant::now();
            let result = svc.oneshot(()).await;
            let ended = Instant::now();
            let mut tallies = tallies.lock().unwrap();
            let tally = &mut tallies[second_of(ended)];
            match result {
                Ok(()) => {
                    tally.served += 1;
                    tally.latencies.push(ended - sent);
                }
                Err(e)
                    if matches!(
                        ErrorKind::of(&e),
                        ErrorKind::ConcurrencyLimited | ErrorKind::BulkheadFull
                    ) =>
                {
                    tally.shed += 1
                }
                Err(_) => {
                    tally.failed += 1;
                    tally.latencies.push(ended - sent);
                }
            }
        }));
        next += ARRIVAL;
    }
    for call in calls {
        call.await.unwrap();
    }
    controller.await.unwrap();

    let mut tallies = std::mem::take(&mut *tallies.lock().unwrap());
    tallies.truncate(seconds);
    let mut phase_end = Duration::ZERO;
    let capacities: Vec<u32> = PHASES
        .iter()
        .flat_map(|(c, d)| {
            phase_end += *d;
            std::iter::repeat_n(*c, d.as_secs() as usize)
        })
        .collect();
    tallies
        .into_iter()
        .zip(capacities)
        .map(|(mut t, capacity)| {
            t.latencies.sort_unstable();
            Second {
                capacity,
                limit: t.limit_sum / f64::from(t.limit_reads.max(1)),
                served: t.served,
                failed: t.failed,
                shed: t.shed,
                p99: percentile(&t.latencies, 0.99),
            }
        })
        .collect()
}

/// The latency below which a share `q` of the sorted `latencies` fall
/// (zero for none).
pub fn percentile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

#[tokio::main(flavor = "current_thread", start_paused = true)]
async fn main() {
    let seed = std::env::var("SEED")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(17);
    let per_sample = std::env::var_os("PER_SAMPLE").is_some();
    let mut runs = Vec::new();
    for client in Client::ALL {
        runs.push((client, simulate_with(client, seed, per_sample).await));
    }
    println!(
        "Capacity 50, then 10, then 80 calls at once; 1,000 calls a second arrive.\n\
         Each cell: limit / calls served a second / p99 latency in ms, over the 5 s ending at t.\n"
    );
    print!("{:>4} {:>4}", "t", "cap");
    for (client, _) in &runs {
        print!(" {:>22}", client.label());
    }
    println!();
    let seconds = runs[0].1.len();
    for end in (5..=seconds).step_by(5) {
        print!("{:>3}s {:>4}", end, runs[0].1[end - 1].capacity);
        for (_, run) in &runs {
            let span = &run[end - 5..end];
            let limit = span.iter().map(|s| s.limit).sum::<f64>() / 5.0;
            let served = span.iter().map(|s| s.served).sum::<u32>() / 5;
            let p99 = span.iter().map(|s| s.p99).max().unwrap_or_default();
            print!(" {:>8.0} / {:>3} / {:>5}", limit, served, p99.as_millis());
        }
        println!();
    }
}
