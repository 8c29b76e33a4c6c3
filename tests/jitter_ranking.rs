//! The `jitter` example's simulation must rank the strategies as AWS's
//! article does: no jitter does the most work, full jitter is among the
//! cheapest.

#[path = "../examples/jitter.rs"]
mod jitter;

use jitter::{STRATEGIES, simulate};
use palisade::backoff::Jitter;

#[test]
fn ranking_agrees_with_the_article() {
    for seed in [1, 2015, 77] {
        let runs: Vec<_> = STRATEGIES.iter().map(|&j| simulate(100, j, seed)).collect();
        let calls = |j: Jitter| runs.iter().find(|r| r.jitter == j).unwrap().calls;
        let none = calls(Jitter::None);
        // Every client needs one successful write at least.
        assert!(runs.iter().all(|r| r.calls >= 100));
        // Lock-step: 100 + 99 + ... + 1 calls.
        assert_eq!(none, 5050, "seed {seed}");
        for run in &runs {
            if run.jitter != Jitter::None {
                assert!(run.calls < none, "seed {seed}: {run:?} vs no jitter {none}");
            }
        }
        let fewest = runs.iter().map(|r| r.calls).min().unwrap();
        let full = calls(Jitter::Full);
        assert!(
            full as f64 <= fewest as f64 * 1.25,
            "seed {seed}: full jitter {full} calls, fewest {fewest}"
        );
    }
}
