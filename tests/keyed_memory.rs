//! Issue 15: the memory a keyed layer holds per key, measured with a
//! counting allocator, and held to a bound however many keys come. The
//! figures are printed (`cargo test --all-features --test keyed_memory --
//! --nocapture`) and copied into BENCHMARKS.md; the bounds are asserted.

#[path = "support/counting_alloc.rs"]
mod counting_alloc;

use std::time::Duration;

use counting_alloc::{CountingAlloc, live_bytes_during};
use palisade::bulkhead::BulkheadLayer;
use palisade::circuit_breaker::CircuitBreakerLayer;
use palisade::keyed::{HostPort, Instance, KeyedLayer};
use palisade::rate_limit::RateLimitLayer;

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

const KEYS: u64 = 10_000;

/// Bytes per key of a keyed layer over `template` (u64 keys), after
/// `KEYS` keys: the registry's entry and the instance, and then bytes per
/// instance alone. Also checks that 100 × as many distinct keys after
/// leave the memory where it was.
fn measure<I: Instance>(what: &str, template: I) -> (i64, i64) {
    let keyed = KeyedLayer::builder(template.clone())
        .key(|n: &u64| *n)
        .max_keys(KEYS as usize)
        .build()
        .unwrap();
    let (held, ()) = live_bytes_during(|| {
        for key in 0..KEYS {
            drop(keyed.instance(&key).unwrap());
        }
    });
    let per_key = held / KEYS as i64;
    // 10^6 distinct keys later, the layer holds about what it held: its
    // hash tables settle at twice their first size once keys come and go
    // (tombstones), and nothing else grows...
    let mut next = KEYS;
    let mut churn = |n: u64| {
        live_bytes_during(|| {
            for key in next..next + n {
                drop(keyed.instance(&key).unwrap());
            }
            next += n;
        })
        .0
    };
    let grown = churn(1_000_000);
    assert_eq!(keyed.handle().len(), KEYS as usize);
    assert!(
        grown <= held / 10,
        "{what}: 10^6 more keys grew the memory held by {grown} bytes (of {held})"
    );
    // ...and then stays where it is.
    let later = churn(300_000);
    assert!(
        later.abs() <= held / 100,
        "{what}: 3·10^5 keys more moved the memory held by {later} bytes (of {held})"
    );
    eprintln!("{what}: {per_key} bytes per key with {KEYS} keys");
    (per_key, held)
}

/// The smallest instance there is: the registry's own bytes per key.
#[derive(Clone, Default)]
struct Bare(std::sync::Arc<()>);

impl Instance for Bare {
    type Snapshot = ();
    fn fork(&self, _: &palisade::keyed::Fork) -> Self {
        Self::default()
    }
    fn in_use(&self) -> bool {
        std::sync::Arc::strong_count(&self.0) > 1
    }
    fn is_fresh(&self, _: tokio::time::Instant) -> bool {
        false
    }
    fn snapshot(&self) {}
}

#[test]
fn bytes_per_key_are_bounded_and_do_not_grow_with_the_keys_seen() {
    let bare = measure(
        "the registry alone (an instance of one Arc<()>)",
        Bare::default(),
    );
    assert!(bare.0 <= 256, "the registry: {} bytes per key", bare.0);
    let rate = measure(
        "rate limiter",
        RateLimitLayer::builder()
            .rate(100, Duration::from_secs(1))
            .build()
            .unwrap(),
    );
    let bulkhead = measure(
        "bulkhead",
        BulkheadLayer::builder().max_concurrent(8).build().unwrap(),
    );
    let breaker = measure(
        "breaker (count window 100)",
        CircuitBreakerLayer::builder().build().unwrap(),
    );
    let small = measure(
        "breaker (count window 10)",
        CircuitBreakerLayer::builder()
            .count_window(10)
            .build()
            .unwrap(),
    );
    assert!(rate.0 <= 1_024, "rate limiter: {} bytes per key", rate.0);
    assert!(
        bulkhead.0 <= 1_024,
        "bulkhead: {} bytes per key",
        bulkhead.0
    );
    assert!(breaker.0 <= 2_048, "breaker: {} bytes per key", breaker.0);
    assert!(small.0 < breaker.0, "the window's bytes are part of it");
}

/// A host-and-port key holds its host: a registry of 10^4 hosts.
#[test]
fn a_host_key_costs_its_host() {
    let keyed = KeyedLayer::builder(
        RateLimitLayer::builder()
            .rate(100, Duration::from_secs(1))
            .build()
            .unwrap(),
    )
    .key_source(palisade::keyed::HostAndPort)
    .max_keys(KEYS as usize)
    .build()
    .unwrap();
    let (held, ()) = live_bytes_during(|| {
        for n in 0..KEYS {
            drop(
                keyed
                    .instance(&HostPort::new(&format!("host-{n}.example.com"), 443))
                    .unwrap(),
            );
        }
    });
    let per_key = held / KEYS as i64;
    eprintln!("rate limiter by host and port: {per_key} bytes per key");
    assert!(per_key <= 1_024);
}
