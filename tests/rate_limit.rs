//! The rate limiter through its public API, on paused time (and one stress
//! test on a multi-thread runtime).

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use palisade::error::{BoxError, ErrorKind, RateLimited};
use palisade::event::Event;
use palisade::rate_limit::{RateLimitEvent, RateLimitLayer};
use tokio::time::Instant;
use tower::{Layer, Service, ServiceExt, service_fn};

fn echo() -> impl Service<u32, Response = u32, Error = BoxError, Future: Send> + Clone + Send {
    service_fn(|n: u32| async move { Ok::<_, BoxError>(n) })
}

fn limited(err: &BoxError) -> &RateLimited {
    err.downcast_ref::<RateLimited>()
        .unwrap_or_else(|| panic!("not a RateLimited: {err}"))
}

#[tokio::test(start_paused = true)]
async fn a_burst_then_rejection_with_the_exact_retry_after() {
    let events = Arc::new(Mutex::new(Vec::new()));
    let seen = events.clone();
    let layer = RateLimitLayer::builder()
        .name("api")
        .rate(100, Duration::from_secs(1)) // every 10 ms
        .burst(10)
        .on_event(move |e: &Event<'_>| {
            seen.lock()
                .unwrap()
                .push(*e.kind::<RateLimitEvent>().unwrap());
        })
        .build()
        .unwrap();
    let svc = layer.layer(echo());
    for n in 0..10 {
        assert_eq!(svc.clone().oneshot(n).await.unwrap(), n);
    }
    let err = svc.clone().oneshot(10).await.unwrap_err();
    assert_eq!(ErrorKind::of(&err), ErrorKind::RateLimited);
    assert_eq!(limited(&err).retry_after(), Duration::from_millis(10));
    assert_eq!(
        err.to_string(),
        r#"rate limiter "api" is over its rate of 100 per 1s (burst 10); retry after 10ms"#
    );
    tokio::time::advance(Duration::from_millis(3)).await;
    let err = svc.clone().oneshot(10).await.unwrap_err();
    assert_eq!(limited(&err).retry_after(), Duration::from_millis(7));
    tokio::time::advance(Duration::from_millis(7)).await;
    assert_eq!(svc.clone().oneshot(11).await.unwrap(), 11);
    assert!(
        svc.clone().oneshot(12).await.is_err(),
        "one cell came back, and went"
    );
    assert_eq!(
        *events.lock().unwrap(),
        [
            RateLimitEvent::Rejected {
                retry_after: Duration::from_millis(10)
            },
            RateLimitEvent::Rejected {
                retry_after: Duration::from_millis(7)
            },
            RateLimitEvent::Rejected {
                retry_after: Duration::from_millis(10)
            },
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn the_burst_defaults_to_the_rate_count() {
    let layer = RateLimitLayer::builder()
        .rate(5, Duration::from_secs(1))
        .build()
        .unwrap();
    let svc = layer.layer(echo());
    for n in 0..5 {
        svc.clone().oneshot(n).await.unwrap();
    }
    let err = svc.oneshot(5).await.unwrap_err();
    assert_eq!(limited(&err).retry_after(), Duration::from_millis(200));
    assert_eq!(limited(&err).burst(), 5);
}

#[tokio::test(start_paused = true)]
async fn the_rate_holds_over_a_long_run_within_one_cell_of_the_bound() {
    let (burst, interval) = (4u64, Duration::from_millis(7));
    let layer = RateLimitLayer::builder()
        .rate(1, interval)
        .burst(4)
        .build()
        .unwrap();
    let svc = layer.layer(echo());
    let start = Instant::now();
    let mut admitted = 0u64;
    // Calls every 1 ms for 10 s: far more than the rate.
    for n in 0..10_000 {
        if svc.clone().oneshot(n).await.is_ok() {
            admitted += 1;
        }
        let bound = burst + (start.elapsed().as_nanos() / interval.as_nanos()) as u64;
        assert!(admitted <= bound, "{admitted} admitted, bound {bound}");
        tokio::time::advance(Duration::from_millis(1)).await;
    }
    let bound = burst + (start.elapsed().as_nanos() / interval.as_nanos()) as u64;
    assert!(
        admitted + 1 >= bound,
        "{admitted} admitted, bound {bound}: the rate is held, not undershot"
    );
}

#[tokio::test(start_paused = true)]
async fn a_request_costs_what_the_closure_says_and_above_the_burst_never_passes() {
    let layer = RateLimitLayer::builder()
        .name("bytes")
        .rate(10, Duration::from_secs(1))
        .burst(10)
        .max_wait(Duration::from_secs(60))
        .cost(|n: &u32| *n)
        .build()
        .unwrap();
    let svc = layer.layer(echo());
    assert_eq!(svc.clone().oneshot(6).await.unwrap(), 6);
    assert_eq!(svc.clone().oneshot(4).await.unwrap(), 4);
    assert_eq!(
        svc.clone().oneshot(0).await.unwrap(),
        0,
        "a cost of 0 is free"
    );
    let before = Instant::now();
    let err = svc.clone().oneshot(11).await.unwrap_err();
    assert_eq!(before.elapsed(), Duration::ZERO, "never waited for");
    assert_eq!(limited(&err).retry_after(), Duration::MAX);
    assert_eq!(limited(&err).cost(), 11);
    assert_eq!(
        err.to_string(),
        r#"rate limiter "bytes" cannot admit a call of cost 11: its burst is 10"#
    );
    // 3 cells at 100 ms each: due in 300 ms.
    svc.clone().oneshot(3).await.unwrap();
    assert_eq!(before.elapsed(), Duration::from_millis(300));
}

#[tokio::test(start_paused = true)]
async fn waiting_calls_are_served_in_the_order_they_were_made() {
    let events = Arc::new(Mutex::new(Vec::new()));
    let seen = events.clone();
    let layer = RateLimitLayer::builder()
        .rate(10, Duration::from_secs(1))
        .burst(1)
        .max_wait(Duration::from_millis(450))
        .on_event(move |e: &Event<'_>| {
            seen.lock()
                .unwrap()
                .push(*e.kind::<RateLimitEvent>().unwrap());
        })
        .build()
        .unwrap();
    let order = Arc::new(Mutex::new(Vec::new()));
    let seen = order.clone();
    let start = Instant::now();
    let svc = layer.layer(service_fn(move |n: u32| {
        seen.lock().unwrap().push((n, start.elapsed()));
        async move { Ok::<_, BoxError>(n) }
    }));
    let mut calls = Vec::new();
    for n in 0..5 {
        let call = svc.clone().oneshot(n);
        calls.push(tokio::spawn(call));
    }
    tokio::task::yield_now().await; // each spawned call is made, in order
    // The sixth would wait 500 ms: rejected at once, reserving nothing.
    let err = svc.clone().oneshot(5).await.unwrap_err();
    assert_eq!(start.elapsed(), Duration::ZERO);
    assert_eq!(limited(&err).retry_after(), Duration::from_millis(500));
    for call in calls {
        call.await.unwrap().unwrap();
    }
    let ms = Duration::from_millis;
    assert_eq!(
        *order.lock().unwrap(),
        [
            (0, ms(0)),
            (1, ms(100)),
            (2, ms(200)),
            (3, ms(300)),
            (4, ms(400))
        ]
    );
    let waits: Vec<_> = events.lock().unwrap().clone();
    assert_eq!(waits.len(), 5, "{waits:?}");
    assert_eq!(waits[0], RateLimitEvent::Waited { wait: ms(100) });
    // The rejected call reserved nothing: the next cell is due at 500 ms.
    assert!(svc.clone().oneshot(6).await.is_ok());
    assert_eq!(start.elapsed(), ms(500));
}

#[tokio::test(start_paused = true)]
async fn every_clone_and_every_service_of_the_layer_share_one_rate() {
    let layer = RateLimitLayer::builder()
        .rate(5, Duration::from_secs(1))
        .build()
        .unwrap();
    let admitted = Arc::new(AtomicUsize::new(0));
    // 50 services from the layer, 10 clones of each, every one called once:
    // tower's `RateLimit` would let 500 through (tower#794).
    let mut calls = Vec::new();
    for _ in 0..50 {
        let svc = layer.layer(echo());
        for n in 0..10 {
            let svc = svc.clone();
            let admitted = admitted.clone();
            calls.push(tokio::spawn(async move {
                if svc.oneshot(n).await.is_ok() {
                    admitted.fetch_add(1, SeqCst);
                }
            }));
        }
    }
    for call in calls {
        call.await.unwrap();
    }
    assert_eq!(admitted.load(SeqCst), 5);
}

#[tokio::test(start_paused = true)]
async fn a_cancelled_waiting_call_gives_its_cells_back_if_it_reserved_last() {
    let layer = RateLimitLayer::builder()
        .rate(10, Duration::from_secs(1))
        .burst(1)
        .max_wait(Duration::from_secs(10))
        .build()
        .unwrap();
    let svc = layer.layer(echo());
    let start = Instant::now();
    svc.clone().oneshot(0).await.unwrap();
    // Two waiters, due at 100 and 200 ms; the last is dropped, then the
    // first: each was the last reservation when dropped, so both give back.
    let first = tokio::spawn(svc.clone().oneshot(1));
    let second = tokio::spawn(svc.clone().oneshot(2));
    tokio::task::yield_now().await;
    second.abort();
    first.abort();
    assert!(second.await.unwrap_err().is_cancelled());
    assert!(first.await.unwrap_err().is_cancelled());
    svc.clone().oneshot(3).await.unwrap();
    assert_eq!(
        start.elapsed(),
        Duration::from_millis(100),
        "the rate is as if they never came"
    );

    // A waiter dropped with another behind it keeps its cells spent: the
    // one behind is still due when it was told, not earlier.
    let first = tokio::spawn(svc.clone().oneshot(4)); // due at 200 ms
    let second = tokio::spawn(svc.clone().oneshot(5)); // due at 300 ms
    tokio::task::yield_now().await;
    first.abort();
    assert_eq!(second.await.unwrap().unwrap(), 5);
    assert_eq!(start.elapsed(), Duration::from_millis(300));
    let err = svc.clone().ready().await.unwrap().call(6);
    // The next cell is at 400 ms: the dropped call's cell was not reused.
    tokio::time::timeout(Duration::from_millis(99), err)
        .await
        .unwrap_err();
}

/// Many threads of real tasks, each with a clone: never more than the bound.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn clones_on_many_threads_never_pass_more_than_the_bound() {
    let (burst, interval) = (20u64, Duration::from_micros(500));
    let layer = RateLimitLayer::builder()
        .rate(2_000, Duration::from_secs(1))
        .burst(20)
        .build()
        .unwrap();
    let svc = layer.layer(echo());
    let admitted = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let svc = svc.clone();
        let admitted = admitted.clone();
        tasks.push(tokio::spawn(async move {
            for n in 0..20_000 {
                if svc.clone().oneshot(n).await.is_ok() {
                    admitted.fetch_add(1, SeqCst);
                }
                if n % 64 == 0 {
                    tokio::task::yield_now().await;
                }
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let elapsed = start.elapsed();
    let admitted = admitted.load(SeqCst);
    let bound = burst + (elapsed.as_nanos() / interval.as_nanos()) as u64;
    assert!(admitted >= burst, "{admitted}");
    assert!(
        admitted <= bound,
        "{admitted} admitted in {elapsed:?}, bound {bound}"
    );
}

#[test]
fn build_refuses_a_limiter_without_a_rate_and_bad_settings() {
    let err = RateLimitLayer::builder().build().unwrap_err();
    assert_eq!(err.parameter(), "rate");
    let err = RateLimitLayer::builder()
        .rate(0, Duration::from_secs(1))
        .build()
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid `rate`: must be from 1 to 4294967295, got 0"
    );
    let err = RateLimitLayer::builder()
        .rate(10, Duration::from_nanos(5))
        .build()
        .unwrap_err();
    assert_eq!(err.parameter(), "rate");
    let err = RateLimitLayer::builder()
        .rate(1, Duration::from_secs(1))
        .burst(0)
        .build()
        .unwrap_err();
    assert_eq!(err.parameter(), "burst");
    let err = RateLimitLayer::builder()
        .rate(1, Duration::from_secs(3600 * 24 * 365))
        .burst(1_000)
        .build()
        .unwrap_err();
    assert_eq!(err.parameter(), "burst");
    let err = RateLimitLayer::builder()
        .rate(1, Duration::from_secs(1))
        .max_wait(Duration::ZERO)
        .build()
        .unwrap_err();
    assert_eq!(err.parameter(), "max_wait");
}

#[tokio::test(start_paused = true)]
async fn a_retry_told_to_retry_rate_limited_waits_its_retry_after() {
    use palisade::backoff::{Backoff, Jitter};
    use palisade::retry::RetryLayer;

    let arrivals = Arc::new(Mutex::new(Vec::new()));
    let seen = arrivals.clone();
    let start = Instant::now();
    let limiter = RateLimitLayer::builder()
        .rate(2, Duration::from_secs(1)) // every 500 ms
        .burst(1)
        .build()
        .unwrap();
    let backoff = Backoff::exponential(Duration::from_millis(10))
        .jitter(Jitter::None)
        .build()
        .unwrap();
    let limited = limiter.layer(service_fn(move |n: u32| {
        seen.lock().unwrap().push(start.elapsed());
        async move { Ok::<_, BoxError>(n) }
    }));
    // Not retried by default.
    limited.clone().oneshot(0).await.unwrap();
    let plain = RetryLayer::builder()
        .backoff(backoff)
        .build()
        .unwrap()
        .layer(limited.clone());
    let err = plain.oneshot(1).await.unwrap_err();
    assert_eq!(ErrorKind::of(&err), ErrorKind::RateLimited);
    assert_eq!(start.elapsed(), Duration::ZERO);

    let retrying = RetryLayer::builder()
        .backoff(backoff)
        .retry_on([ErrorKind::Elapsed, ErrorKind::RateLimited])
        .no_budget()
        .build()
        .unwrap()
        .layer(limited);
    assert_eq!(retrying.oneshot(2).await.unwrap(), 2);
    // Refused at 0 with retry_after 500 ms: retried then, not after the
    // backoff's 10 ms.
    assert_eq!(
        *arrivals.lock().unwrap(),
        [Duration::ZERO, Duration::from_millis(500)]
    );
}

/// Each key of a keyed layer gets a limiter of the template's rate and
/// burst, of its own. (Survivors of the mutation run: a forked limiter's
/// interval read as 0 or 1 ns went unnoticed by this file.)
#[tokio::test(start_paused = true)]
async fn each_key_gets_a_limiter_of_the_templates_rate_and_burst() {
    use palisade::keyed::KeyedLayer;
    let template = RateLimitLayer::builder()
        .rate(10, Duration::from_secs(1)) // every 100 ms
        .burst(2)
        .build()
        .unwrap();
    let keyed = KeyedLayer::builder(template)
        .key(|n: &u32| n % 2)
        .build()
        .unwrap();
    let svc = keyed.layer(echo());
    let admitted =
        |results: Vec<Result<u32, BoxError>>| results.iter().filter(|r| r.is_ok()).count();
    for key in [0, 1] {
        let mut results = Vec::new();
        for _ in 0..3 {
            results.push(svc.clone().oneshot(key).await);
        }
        assert_eq!(admitted(results), 2, "key {key}: its burst");
    }
    tokio::time::advance(Duration::from_millis(100)).await;
    for key in [0, 1] {
        let mut results = Vec::new();
        for _ in 0..3 {
            results.push(svc.clone().oneshot(key).await);
        }
        assert_eq!(admitted(results), 1, "key {key}: one cell per 100 ms");
    }
}

/// A service that is ready only once told so.
#[derive(Debug, Clone)]
struct Gate(Arc<std::sync::atomic::AtomicBool>);

impl Service<u32> for Gate {
    type Response = u32;
    type Error = BoxError;
    type Future = std::future::Ready<Result<u32, BoxError>>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), BoxError>> {
        if self.0.load(SeqCst) {
            std::task::Poll::Ready(Ok(()))
        } else {
            std::task::Poll::Pending
        }
    }

    fn call(&mut self, n: u32) -> Self::Future {
        std::future::ready(Ok(n))
    }
}

/// The limiter is ready when its inner service is, and not before; its
/// `Debug` names the inner service and the limiter, and its future's says
/// where the call stands. (Survivors of the mutation run.)
#[tokio::test(start_paused = true)]
async fn readiness_is_the_inner_services_and_debug_says_what_it_wraps() {
    let layer = RateLimitLayer::builder()
        .name("api")
        .rate(10, Duration::from_secs(1))
        .burst(1)
        .max_wait(Duration::from_secs(1))
        .build()
        .unwrap();
    let open = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut svc = layer.layer(Gate(open.clone()));
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    assert!(
        svc.poll_ready(&mut cx).is_pending(),
        "the inner service is not ready"
    );
    open.store(true, SeqCst);
    assert!(svc.poll_ready(&mut cx).is_ready());
    assert_eq!(
        format!("{svc:?}"),
        "RateLimit { inner: Gate(true), name: \"api\" }"
    );
    let first = svc.call(1);
    assert_eq!(format!("{first:?}"), "ResponseFuture { state: \"called\" }");
    assert!(svc.poll_ready(&mut cx).is_ready());
    let second = svc.call(2);
    assert_eq!(
        format!("{second:?}"),
        "ResponseFuture { state: \"waiting\" }"
    );
    let refused = RateLimitLayer::builder()
        .rate(10, Duration::from_secs(1))
        .burst(1)
        .build()
        .unwrap()
        .layer(Gate(open));
    let mut refused = refused;
    assert!(refused.poll_ready(&mut cx).is_ready());
    drop(refused.call(1));
    let third = refused.call(2);
    assert_eq!(
        format!("{third:?}"),
        "ResponseFuture { state: \"rejected\" }"
    );
    drop((first, second));
}

/// Last session's survivors (TESTING.md): what the limiter's events say,
/// and the `Debug` of its layer and builder.
#[tokio::test(start_paused = true)]
async fn events_say_what_happened_and_debug_shows_the_settings() {
    let said = Arc::new(Mutex::new(Vec::new()));
    let log = said.clone();
    let builder = RateLimitLayer::builder()
        .name("api")
        .rate(10, Duration::from_secs(1))
        .burst(2)
        .max_wait(Duration::from_millis(150))
        .cost(|n: &u32| *n)
        .on_event(move |e: &Event<'_>| log.lock().unwrap().push(e.to_string()));
    assert_eq!(
        format!("{builder:?}"),
        "RateLimitBuilder { name: \"api\", rate: Some((10, 1s)), burst: Some(2), \
         max_wait: Some(150ms), cost: CostFn, listeners: 1 listener(s) }"
    );
    let layer = builder.build().unwrap();
    assert_eq!(
        format!("{layer:?}"),
        "RateLimitLayer { name: \"api\", count: 10, per: 1s, burst: 2, max_wait: 150ms }"
    );
    let svc = layer.layer(echo());
    svc.clone().oneshot(2).await.unwrap(); // the burst
    svc.clone().oneshot(1).await.unwrap(); // waits 100 ms
    svc.clone().oneshot(2).await.unwrap_err(); // would wait 200 ms: over the maximum
    svc.clone().oneshot(3).await.unwrap_err(); // above the burst
    assert_eq!(
        *said.lock().unwrap(),
        [
            "rate limiter `api`: call admitted after waiting 100ms",
            "rate limiter `api`: call rejected, retry after 200ms",
            "rate limiter `api`: call rejected, its cost is above the burst",
        ]
    );
}

/// A keyed limiter held by a call waiting its turn is in use: the
/// registry, full, must not evict it for another key (last session's
/// survivors `in_use` → `false` and `>` → `<`).
#[tokio::test(start_paused = true)]
async fn a_keyed_limiter_held_by_a_waiting_call_is_not_evicted() {
    use palisade::keyed::KeyedLayer;
    let keyed = KeyedLayer::builder(
        RateLimitLayer::builder()
            .rate(1, Duration::from_secs(1))
            .max_wait(Duration::from_secs(5))
            .build()
            .unwrap(),
    )
    .key(|n: &u32| *n)
    .max_keys(1)
    .build()
    .unwrap();
    let svc = keyed.layer(echo());
    svc.clone().oneshot(1).await.unwrap(); // key 1 spends its cell
    let waiting = tokio::spawn(svc.clone().oneshot(1)); // and waits a second
    tokio::task::yield_now().await;
    let err = svc.clone().oneshot(2).await.unwrap_err();
    assert_eq!(ErrorKind::of(&err), ErrorKind::TooManyKeys, "{err}");
    assert_eq!(waiting.await.unwrap().unwrap(), 1);
    // Once nothing holds it, key 1's limiter may go for key 2.
    assert_eq!(svc.oneshot(2).await.unwrap(), 2);
}
