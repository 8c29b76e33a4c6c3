//! The circuit breaker under real concurrency: many tasks on a
//! multi-thread runtime finishing calls while transitions run on another
//! thread. A sequential script cannot show these races.

use std::sync::Arc;
use std::time::Duration;

use palisade::circuit_breaker::{CircuitBreakerLayer, CircuitState};
use palisade::error::BoxError;
use tokio::sync::watch;
use tower::{Layer, Service, ServiceExt, service_fn};

/// Issue 12, defect 1: calls admitted before a reset that finish while it
/// runs are outcomes of the earlier generation, and must not be counted in
/// the fresh window. Every call here is admitted before the reset starts,
/// so once all have finished and the reset has returned, the window holds
/// nothing, whichever side of the clearing each one landed on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outcomes_racing_a_reset_never_reach_the_fresh_window() {
    const CALLS: usize = 4_000;
    for window in [1_000_000, 100] {
        for round in 0..5 {
            let layer = CircuitBreakerLayer::builder()
                .count_window(window)
                .minimum_calls(window)
                .build()
                .unwrap();
            let handle = layer.handle();
            let (release, released) = watch::channel(false);
            let svc = layer.layer(service_fn(move |fail: bool| {
                let mut released = released.clone();
                async move {
                    released.wait_for(|r| *r).await.unwrap();
                    if fail {
                        Err::<(), BoxError>("failed".into())
                    } else {
                        Ok(())
                    }
                }
            }));
            let mut calls = Vec::with_capacity(CALLS);
            for i in 0..CALLS {
                let mut svc = svc.clone();
                // Admitted now, before the reset; finished later.
                let call = svc.ready().await.unwrap().call(i % 2 == 0);
                calls.push(tokio::spawn(call));
            }
            tokio::task::yield_now().await;
            // One reset, started as the calls are released, so that they
            // finish while it runs. (A second reset would wipe what the
            // first let in.)
            let start = Arc::new(std::sync::Barrier::new(2));
            let resetter = {
                let handle = handle.clone();
                let start = start.clone();
                std::thread::spawn(move || {
                    start.wait();
                    handle.reset();
                })
            };
            start.wait();
            release.send(true).unwrap();
            for call in calls {
                let _ = call.await.unwrap();
            }
            resetter.join().unwrap();
            let m = handle.metrics();
            assert_eq!(m.state, CircuitState::Closed);
            assert_eq!(
                (m.calls, m.failures),
                (0, 0),
                "window {window}, round {round}: stale outcomes in the fresh window"
            );
        }
    }
}

/// Many tasks, manual transitions from another thread, slow calls, count
/// and time windows: invariants that hold in every interleaving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invariants_under_concurrent_calls_and_transitions() {
    for time_window in [false, true] {
        let builder = CircuitBreakerLayer::builder()
            .minimum_calls(10)
            .failure_rate_threshold(0.5)
            .wait_duration(Duration::from_millis(1))
            .half_open_calls(3)
            .slow_call_duration(Duration::from_micros(200));
        let builder = if time_window {
            builder.time_window(Duration::from_millis(200))
        } else {
            builder.count_window(50)
        };
        let layer = builder.build().unwrap();
        let handle = layer.handle();
        let healed = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let is_healed = healed.clone();
        let svc = layer.layer(service_fn(move |n: u64| {
            let healed = is_healed.load(std::sync::atomic::Ordering::SeqCst);
            async move {
                if n.is_multiple_of(7) {
                    tokio::task::yield_now().await;
                }
                if !healed && n.is_multiple_of(3) {
                    Err::<u64, &'static str>("failed")
                } else {
                    Ok(n)
                }
            }
        }));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let monitor = {
            let handle = handle.clone();
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut resets = 0u32;
                while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                    let m = handle.metrics();
                    assert!(m.failures <= m.calls, "{m:?}");
                    assert!(m.slow_calls <= m.calls, "{m:?}");
                    if m.state == CircuitState::HalfOpen {
                        assert!(m.probes_in_flight <= 3, "{m:?}");
                    }
                    resets += 1;
                    if resets.is_multiple_of(64) {
                        handle.reset();
                    }
                    std::thread::yield_now();
                }
            })
        };
        let mut tasks = Vec::new();
        for t in 0..8u64 {
            let svc = svc.clone();
            tasks.push(tokio::spawn(async move {
                for n in 0..2_000u64 {
                    let _ = svc.clone().oneshot(t * 10_000 + n).await;
                }
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        monitor.join().unwrap();
        // Healed: the breaker closes again, whatever state the race left.
        healed.store(true, std::sync::atomic::Ordering::SeqCst);
        let mut closed = false;
        // Bounded: the open wait is 1 ms, and each turn of the loop yields.
        for n in 0..1_000_000u64 {
            let _ = svc.clone().oneshot(n).await;
            if handle.state() == CircuitState::Closed {
                closed = true;
                break;
            }
            tokio::task::yield_now().await;
        }
        assert!(closed, "stuck in {:?}", handle.metrics());
    }
}
