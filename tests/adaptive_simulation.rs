//! The shape of `examples/adaptive.rs`'s result, on paused time: against
//! a service whose capacity goes from 50 to 10 to 80 calls at once, each
//! algorithm's limit settles within 2x of the capacity within 20 s of each
//! change, and while a fixed bulkhead of 100 lets a queue build at the
//! service (capacity 50, then 10), the adaptive limits keep the latency of
//! the calls they let through lower. Latencies are virtual: nothing here
//! depends on how fast the machine is.

#[path = "../examples/adaptive.rs"]
mod adaptive;

use std::time::Duration;

use adaptive::{Client, PHASES, Second, simulate, simulate_with};

/// The seconds of each phase from 20 s after its change to its end.
fn settled(run: &[Second]) -> Vec<(u32, &[Second])> {
    let mut start = 0;
    PHASES
        .iter()
        .map(|(capacity, length)| {
            let end = start + length.as_secs() as usize;
            let span = &run[start + 20..end];
            start = end;
            (*capacity, span)
        })
        .collect()
}

fn p99_of(span: &[Second]) -> Duration {
    span.iter().map(|s| s.p99).max().unwrap()
}

#[tokio::test(start_paused = true)]
async fn each_limit_follows_the_capacity_and_keeps_the_latency_below_a_fixed_bulkheads() {
    let fixed = simulate(Client::Fixed(100), 17).await;
    let fixed = settled(&fixed);
    // The fixed bulkhead keeps 100 calls at the service: past its
    // capacity, they queue there.
    assert!(
        p99_of(fixed[0].1) >= Duration::from_millis(200),
        "{:?}",
        fixed[0]
    );
    assert!(
        p99_of(fixed[1].1) >= Duration::from_millis(900),
        "{:?}",
        fixed[1]
    );

    for client in [Client::Aimd, Client::Vegas, Client::Gradient2] {
        let run = simulate(client, 17).await;
        for (phase, (capacity, span)) in settled(&run).into_iter().enumerate() {
            let capacity = f64::from(capacity);
            for second in span {
                assert!(
                    (capacity / 2.0..=capacity * 2.0).contains(&second.limit),
                    "{client:?}, phase {phase}: limit {} against a capacity of {capacity}",
                    second.limit
                );
                // Whatever it refuses, it keeps the service busy.
                assert!(second.served > 0, "{client:?}, phase {phase}: {second:?}");
            }
            // Where the fixed bulkhead lets a queue build (capacity 50 and
            // 10), the adaptive limit answers faster.
            if phase < 2 {
                let (ours, theirs) = (p99_of(span), p99_of(fixed[phase].1));
                assert!(
                    ours < theirs,
                    "{client:?}, phase {phase}: p99 {ours:?} against the bulkhead's {theirs:?}"
                );
            }
        }
    }
}

/// Why the layer learns in windows: the same run with every sample on its
/// own (BENCHMARKS.md, "Why windows"). AIMD backs off once per slowed
/// call and serves about half of what the service can; Gradient2's long
/// average follows a lasting overload, and its limit climbs to the
/// ceiling.
#[tokio::test(start_paused = true)]
async fn learning_each_sample_on_its_own_overreacts() {
    let aimd = simulate_with(Client::Aimd, 17, true).await;
    let [(capacity, first), ..] = settled(&aimd)[..] else {
        panic!("three phases")
    };
    for second in first {
        assert!(second.limit < f64::from(capacity) * 0.7, "{second:?}");
        assert!(second.served < capacity * 10 * 6 / 10, "{second:?}");
    }
    let gradient = simulate_with(Client::Gradient2, 17, true).await;
    let [_, _, (_, last)] = settled(&gradient)[..] else {
        panic!("three phases")
    };
    assert!(last.iter().all(|s| s.limit == 200.0), "{last:?}");
}
