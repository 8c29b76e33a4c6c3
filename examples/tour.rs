//! A tour of what palisade has so far: the shared foundation that every
//! layer stands on.
//!
//! ```text
//! cargo run --example tour
//! ```
//!
//! The layers themselves (circuit breaker, retry, timeout, bulkhead,
//! fallback) are not built yet; when they are, this tour drives a flaky
//! local HTTP service through all of them.

use std::time::Duration;

use palisade::backoff::{Backoff, Jitter};
use palisade::classify::hint::parse_grpc_pushback;
use palisade::classify::{Classify, DefaultClassifier, DelayHint, Outcome, classify_fn};
use palisade::error::BoxError;

fn main() -> Result<(), BoxError> {
    println!("palisade tour: the foundation\n");

    println!("1. Outcomes: one classifier decides what a result means for every layer.");
    let results: [Result<u16, &str>; 4] = [Ok(200), Ok(404), Ok(503), Err("connection reset")];
    // A service that answers with a status: 5xx fails, 404 counts neither way.
    let by_status = classify_fn(|r: &Result<u16, &str>| match r {
        Ok(500..) | Err(_) => Outcome::Failure,
        Ok(404) => Outcome::Ignored,
        Ok(_) => Outcome::Success,
    });
    println!("   {:<28} {:<10} {:<10}", "result", "default", "by status");
    for r in &results {
        let default = Classify::<(), _, _>::classify(&DefaultClassifier, r);
        let custom = Classify::<(), _, _>::classify(&by_status, r);
        println!(
            "   {:<28} {:<10} {:<10}",
            format!("{r:?}"),
            format!("{default:?}"),
            format!("{custom:?}")
        );
    }

    println!("\n2. Backoff: the delays before five retries, seed 7, base 100 ms, cap 2 s.");
    for jitter in [
        Jitter::None,
        Jitter::Full,
        Jitter::Equal,
        Jitter::Decorrelated,
        Jitter::DecorrelatedV2,
    ] {
        let backoff = Backoff::exponential(Duration::from_millis(100))
            .max_delay(Duration::from_secs(2))
            .jitter(jitter)
            .build()?;
        let delays: Vec<String> = backoff
            .delays_seeded(7)
            .take(5)
            .map(|d| format!("{:>5} ms", d.as_millis()))
            .collect();
        println!("   {:<16}{}", format!("{jitter:?}"), delays.join(" "));
    }
    let other_session: Vec<u128> = Backoff::exponential(Duration::from_millis(100))
        .build()?
        .delays()
        .take(5)
        .map(|d| d.as_millis())
        .collect();
    println!("   unseeded, full jitter: {other_session:?} ms (fresh randomness per call)");

    println!("\n3. Server hints are read, and capped at 30 s.");
    let cap = Duration::from_secs(30);
    for value in ["1500", "-1", "3600000", "soon"] {
        let hint = parse_grpc_pushback(value.as_bytes()).within(cap);
        let meaning = match hint {
            Some(DelayHint::After(d)) => format!("wait {d:?}"),
            Some(DelayHint::DoNotRetry) => "do not retry".to_string(),
            None => "above the cap: ignored, use the backoff".to_string(),
        };
        println!("   grpc-retry-pushback-ms: {value:<10} -> {meaning}");
    }

    println!("\nNext: the layers. See README.md for what is built and what is planned.");
    Ok(())
}
