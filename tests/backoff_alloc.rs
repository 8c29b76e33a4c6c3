//! Drawing delays allocates nothing, whatever the jitter.

#[path = "support/counting_alloc.rs"]
mod counting_alloc;

use std::hint::black_box;
use std::time::Duration;

use counting_alloc::{CountingAlloc, allocations_during};
use palisade::backoff::{Backoff, Jitter, MakeDelays};

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

#[test]
fn delays_allocate_nothing() {
    for jitter in [
        Jitter::None,
        Jitter::Full,
        Jitter::Equal,
        Jitter::Decorrelated,
        Jitter::DecorrelatedV2,
    ] {
        let backoff = Backoff::exponential(Duration::from_millis(10))
            .jitter(jitter)
            .build()
            .unwrap();
        let (allocs, total) = allocations_during(|| {
            let mut total = Duration::ZERO;
            for seed in 0..100 {
                for d in backoff.make_delays(seed).take(20) {
                    total += black_box(d);
                }
            }
            total
        });
        assert!(total > Duration::ZERO);
        assert_eq!(allocs, 0, "{jitter:?} allocated");
    }
}

#[test]
fn the_counter_sees_allocations() {
    // Guards the test above against a counter that counts nothing.
    let (allocs, v) = allocations_during(|| black_box(vec![1u8; 64]));
    assert_eq!(v.len(), 64);
    assert!(allocs >= 1);
}
