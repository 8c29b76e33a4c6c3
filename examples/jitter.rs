//! The experiment of AWS's "Exponential Backoff and Jitter" (Marc Brooker,
//! 2015), replayed with palisade's own backoff.
//!
//! N clients (default 100) all want to write one record at the same moment,
//! with optimistic concurrency: time is cut into slots as long as one write,
//! and of the writes that land in the same slot only the first succeeds; the
//! others fail and back off. Each jitter strategy is simulated with the same
//! seeds, and the table shows how much work (calls) and time each needs until
//! every client has written once.
//!
//! ```text
//! cargo run --example jitter            # 100 clients
//! cargo run --example jitter -- 500     # 500 clients
//! ```

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Duration;

use palisade::backoff::{Backoff, Jitter};

/// How long one write takes: the width of a contention slot.
const SLOT: Duration = Duration::from_millis(1);
/// The backoff's first delay and cap, as in the article's plots.
const BASE: Duration = Duration::from_millis(50);
const CAP: Duration = Duration::from_secs(2);

/// What one strategy cost to get every client through.
#[derive(Debug, Clone, Copy)]
pub struct Run {
    pub jitter: Jitter,
    /// Writes attempted, successful or not.
    pub calls: u64,
    /// When the last client succeeded, in simulated time.
    pub finished: Duration,
}

pub const STRATEGIES: [Jitter; 5] = [
    Jitter::None,
    Jitter::Full,
    Jitter::Equal,
    Jitter::Decorrelated,
    Jitter::DecorrelatedV2,
];

/// Simulates `clients` writers contending with this jitter.
pub fn simulate(clients: usize, jitter: Jitter, seed: u64) -> Run {
    let backoff = Backoff::exponential(BASE)
        .max_delay(CAP)
        .jitter(jitter)
        .build()
        .expect("a valid backoff");
    let mut delays: Vec<_> = (0..clients as u64)
        .map(|c| backoff.delays_seeded(seed.wrapping_mul(1_000_003).wrapping_add(c)))
        .collect();
    // Every client's next write, earliest first (ties broken by client id).
    let mut pending: BinaryHeap<Reverse<(Duration, usize)>> =
        (0..clients).map(|c| Reverse((Duration::ZERO, c))).collect();
    let slot_of = |t: Duration| t.as_nanos() / SLOT.as_nanos();
    let mut calls = 0;
    let mut finished = Duration::ZERO;
    while let Some(Reverse((first_at, _winner))) = pending.pop() {
        // The first write of a slot wins; every other write in it conflicts.
        calls += 1;
        finished = first_at;
        let slot = slot_of(first_at);
        while let Some(&Reverse((at, client))) = pending.peek() {
            if slot_of(at) != slot {
                break;
            }
            pending.pop();
            calls += 1;
            let wait = delays[client]
                .next()
                .expect("backoff sequences are endless");
            pending.push(Reverse((at + wait, client)));
        }
    }
    Run {
        jitter,
        calls,
        finished,
    }
}

#[allow(dead_code)] // the ranking test includes this file for `simulate` alone
fn main() {
    let clients: usize = std::env::args()
        .nth(1)
        .map(|n| n.parse().expect("the number of clients"))
        .unwrap_or(100);
    println!(
        "{clients} clients, one write each, optimistic concurrency ({SLOT:?} slots);\n\
         exponential backoff from {BASE:?}, capped at {CAP:?}; the same seeds for every strategy\n"
    );
    println!(
        "{:<16} {:>10} {:>16} {:>14}",
        "jitter", "calls", "calls/client", "time to finish"
    );
    println!("{}", "-".repeat(60));
    let runs: Vec<Run> = STRATEGIES
        .iter()
        .map(|&j| simulate(clients, j, 2015))
        .collect();
    for run in &runs {
        println!(
            "{:<16} {:>10} {:>16.1} {:>14}",
            format!("{:?}", run.jitter),
            run.calls,
            run.calls as f64 / clients as f64,
            format!("{:.3} s", run.finished.as_secs_f64()),
        );
    }
    let most = runs.iter().max_by_key(|r| r.calls).expect("five runs");
    let fewest = runs.iter().min_by_key(|r| r.calls).expect("five runs");
    println!(
        "\nMost work: {:?} ({} calls). Least: {:?} ({} calls), {:.1}x fewer.",
        most.jitter,
        most.calls,
        fewest.jitter,
        fewest.calls,
        most.calls as f64 / fewest.calls as f64
    );
    println!(
        "Without jitter the clients stay in lock-step: every round, all of them collide again."
    );
}
