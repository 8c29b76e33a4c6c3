//! Hot reload (issue 18, part 3): a new document applied to running
//! stacks keeps the state that still makes sense, changes nothing when it
//! is refused, and leaves calls in flight with the settings they started
//! with.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use palisade::circuit_breaker::CircuitState;
use palisade::config::{Change, Config, Document, PartChange, PartName};
use palisade::error::{BoxError, ErrorKind};
use palisade::event::Event;
use tower::{Layer, Service, ServiceExt, service_fn};

fn document(text: &str) -> Document {
    toml::from_str(text).unwrap_or_else(|e| panic!("{e}\n{text}"))
}

/// What a reload reports, as plain tuples.
fn summary(changes: &[PartChange]) -> Vec<(String, PartName, Change)> {
    changes
        .iter()
        .map(|c| (c.instance.clone(), c.part, c.change))
        .collect()
}

fn change(instance: &str, part: PartName, change: Change) -> (String, PartName, Change) {
    (instance.to_string(), part, change)
}

/// Fails every call with "down".
fn failing(
    calls: Arc<AtomicU32>,
) -> impl Service<u32, Response = u32, Error = BoxError, Future: Send> + Clone {
    service_fn(move |_: u32| {
        calls.fetch_add(1, Ordering::SeqCst);
        async { Err::<u32, BoxError>("down".into()) }
    })
}

#[tokio::test(start_paused = true)]
async fn a_breaker_whose_thresholds_change_keeps_its_state_and_its_window() {
    let config = Config::new(document(
        r#"
        [instances.db]
        circuit_breaker = { count_window = 10, minimum_calls = 4, failure_rate_threshold = 1.0, wait_duration = "10s" }
        "#,
    ))
    .unwrap();
    let stack = config.stack("db").unwrap();
    let breaker = stack.parts().circuit_breaker().first().unwrap().handle();
    let calls = Arc::new(AtomicU32::new(0));
    let svc = stack.layer(failing(calls.clone()));
    let ok = stack.layer(service_fn(|n: u32| async move { Ok::<_, BoxError>(n) }));

    // Two failures and two successes: 50%, under the threshold of 100%.
    for _ in 0..2 {
        let _ = svc.clone().oneshot(0).await;
        ok.clone().oneshot(0).await.unwrap();
    }
    assert_eq!(breaker.state(), CircuitState::Closed);
    assert_eq!(breaker.metrics().failures, 2);

    // A threshold of 50% now: the window's four calls are still there, so
    // the next failure (3 of 5) opens it.
    let reloaded = config
        .reload(document(
            r#"
            [instances.db]
            circuit_breaker = { count_window = 10, minimum_calls = 4, failure_rate_threshold = 0.5, wait_duration = "30s" }
            "#,
        ))
        .unwrap();
    assert_eq!(
        summary(&reloaded.changes),
        [change("db", PartName::CircuitBreaker, Change::Retuned)]
    );
    let same = stack.parts().circuit_breaker().first().unwrap().handle();
    assert_eq!(same.metrics().failures, 2, "the window came along");
    let _ = svc.clone().oneshot(0).await;
    assert_eq!(
        breaker.state(),
        CircuitState::Open,
        "judged by the new threshold"
    );

    // Open stays open through a reload, for the new wait (30 s).
    config
        .reload(document(
            r#"
            [instances.db]
            circuit_breaker = { count_window = 10, minimum_calls = 4, failure_rate_threshold = 0.6, wait_duration = "30s" }
            "#,
        ))
        .unwrap();
    assert_eq!(breaker.state(), CircuitState::Open);
    tokio::time::advance(Duration::from_secs(20)).await;
    let e = svc.clone().oneshot(0).await.unwrap_err();
    assert_eq!(ErrorKind::of(&e), ErrorKind::CircuitOpen, "30 s, not 10");
}

#[tokio::test(start_paused = true)]
async fn a_breaker_with_a_new_window_starts_afresh() {
    let config = Config::new(document(
        "[instances.db]\ncircuit_breaker = { count_window = 4, minimum_calls = 2, consecutive_failures = 2 }",
    ))
    .unwrap();
    let stack = config.stack("db").unwrap();
    let svc = stack.layer(failing(Arc::new(AtomicU32::new(0))));
    for _ in 0..2 {
        let _ = svc.clone().oneshot(0).await;
    }
    let old = stack.parts().circuit_breaker().first().unwrap().handle();
    assert_eq!(old.state(), CircuitState::Open);
    let reloaded = config
        .reload(document(
            "[instances.db]\ncircuit_breaker = { count_window = 8, minimum_calls = 2, consecutive_failures = 2 }",
        ))
        .unwrap();
    assert_eq!(
        summary(&reloaded.changes),
        [change("db", PartName::CircuitBreaker, Change::Rebuilt)]
    );
    let new = stack.parts().circuit_breaker().first().unwrap().handle();
    assert_eq!(new.state(), CircuitState::Closed);
    assert_eq!(
        svc.clone().oneshot(0).await.unwrap_err().to_string(),
        "down"
    );
}

#[tokio::test(start_paused = true)]
async fn a_budget_keeps_its_balance_through_a_reload() {
    // No reserve: the balance is 50% of the requests less the retries.
    let config = Config::new(document(
        r#"
        [instances.api]
        retry = { max_attempts = 2, backoff = { kind = "constant", delay = "1ms" }, budget = { min_per_sec = 0, percent = 0.5 } }
        "#,
    ))
    .unwrap();
    let stack = config.stack("api").unwrap();
    let calls = Arc::new(AtomicU32::new(0));
    let counter = calls.clone();
    // Fails only the request 0.
    let svc = stack.layer(service_fn(move |n: u32| {
        counter.fetch_add(1, Ordering::SeqCst);
        async move {
            if n == 0 {
                Err::<u32, BoxError>("down".into())
            } else {
                Ok(n)
            }
        }
    }));
    for n in 1..=10 {
        svc.clone().oneshot(n).await.unwrap();
    }
    for _ in 0..2 {
        let _ = svc.clone().oneshot(0).await;
    }
    let budget = |stack: &palisade::config::StackLayer<_, _>| {
        stack
            .parts()
            .repeat()
            .first()
            .unwrap()
            .budget()
            .unwrap()
            .remaining()
    };
    // 12 requests fund 6 retries; two were spent.
    assert_eq!(calls.load(Ordering::SeqCst), 14);
    let before = budget(&stack);
    assert_eq!(before, 4);

    // A new retry (three attempts) keeps the old budget and its balance,
    // and takes the new share.
    let reloaded = config
        .reload(document(
            r#"
            [instances.api]
            retry = { max_attempts = 3, backoff = { kind = "constant", delay = "1ms" }, budget = { min_per_sec = 0, percent = 0.5 } }
            "#,
        ))
        .unwrap();
    assert_eq!(
        summary(&reloaded.changes),
        [change("api", PartName::Retry, Change::Rebuilt)]
    );
    assert_eq!(budget(&stack), before);
    config
        .reload(document(
            r#"
            [instances.api]
            retry = { max_attempts = 3, backoff = { kind = "constant", delay = "1ms" }, budget = { min_per_sec = 0, percent = 1.0 } }
            "#,
        ))
        .unwrap();
    assert!(
        budget(&stack) > before,
        "a larger share of the same requests"
    );
}

#[tokio::test(start_paused = true)]
async fn a_refused_reload_changes_nothing_and_says_why() {
    let text = "[instances.db]\nretry = { max_attempts = 2 }\nbulkhead = { max_concurrent = 4 }";
    let config = Config::new(document(text)).unwrap();
    let stack = config.stack("db").unwrap();
    let parts = stack.parts();

    let error = config
        .reload(document(
            "[instances.db]\nretry = { max_attempts = 0 }\nbulkhead = { max_concurrent = 8 }",
        ))
        .unwrap_err();
    assert_eq!(error.path(), "instances.db.retry.max_attempts");
    assert!(Arc::ptr_eq(&parts, &stack.parts()), "the same parts");
    assert_eq!(config.settings("db"), Some(stack.settings()));
    let bulkhead = parts.concurrency().first().unwrap().handle();
    assert_eq!(bulkhead.max_concurrent(), 4, "not half applied");

    // An instance a running stack was made from cannot leave.
    let error = config.reload(document("[instances.other]")).unwrap_err();
    assert_eq!(error.parameter(), "instances");
    assert!(error.reason().contains("\"db\" is gone"), "{error}");
    assert!(Arc::ptr_eq(&parts, &stack.parts()));

    // Once the stack is dropped, it may.
    drop((stack, parts));
    assert!(config.reload(document("[instances.other]")).is_ok());
    assert_eq!(config.names(), ["other"]);
}

#[tokio::test(start_paused = true)]
async fn a_call_in_flight_finishes_with_the_settings_it_started_with() {
    let config = Config::new(document(
        "[instances.api]\nretry = { max_attempts = 3, no_budget = true, backoff = { kind = \"constant\", delay = \"100ms\", jitter = \"none\" } }",
    ))
    .unwrap();
    let stack = config.stack("api").unwrap();
    let calls = Arc::new(AtomicU32::new(0));
    let svc = stack.layer(failing(calls.clone()));

    let in_flight = tokio::spawn(svc.clone().oneshot(0));
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "the first attempt, then a backoff"
    );
    config
        .reload(document("[instances.api]\nretry = { max_attempts = 1 }"))
        .unwrap();
    assert!(in_flight.await.unwrap().is_err());
    assert_eq!(
        calls.load(Ordering::SeqCst),
        3,
        "three attempts, as when it started"
    );

    // A call made after the reload makes one.
    let _ = svc.clone().oneshot(0).await;
    assert_eq!(calls.load(Ordering::SeqCst), 4);
}

#[tokio::test(start_paused = true)]
async fn a_service_made_before_a_reload_takes_the_new_parts() {
    let config = Config::new(document("[instances.api]")).unwrap();
    let stack = config.stack("api").unwrap();
    let slow = service_fn(|n: u32| async move {
        tokio::time::sleep(Duration::from_secs(1)).await;
        Ok::<_, BoxError>(n)
    });
    // A template that is only cloned, never polled itself.
    let template = stack.layer(slow);
    assert_eq!(template.clone().oneshot(7).await.unwrap(), 7);

    let reloaded = config
        .reload(document("[instances.api]\nattempt_timeout = \"100ms\""))
        .unwrap();
    assert_eq!(
        summary(&reloaded.changes),
        [change("api", PartName::AttemptTimeout, Change::Added)]
    );
    let e = template.clone().oneshot(7).await.unwrap_err();
    assert_eq!(ErrorKind::of(&e), ErrorKind::Elapsed);

    // And a service polled before the reload, at its next poll_ready.
    let mut polled = template.clone();
    config.reload(document("[instances.api]")).unwrap();
    let e = polled.ready().await;
    assert!(e.is_ok());
    assert_eq!(polled.call(7).await.unwrap(), 7, "no timeout any more");
}

#[tokio::test(start_paused = true)]
async fn a_bulkhead_takes_a_new_limit_keeping_its_calls_in_flight() {
    let config = Config::new(document(
        "[instances.api]\nbulkhead = { max_concurrent = 1 }",
    ))
    .unwrap();
    let stack = config.stack("api").unwrap();
    let handle = stack.parts().concurrency().first().unwrap().handle();
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let wait = gate.clone();
    let svc = stack.layer(service_fn(move |n: u32| {
        let wait = wait.clone();
        async move {
            let _permit = wait.acquire().await.unwrap();
            Ok::<_, BoxError>(n)
        }
    }));
    let first = tokio::spawn(svc.clone().oneshot(1));
    tokio::task::yield_now().await;
    assert_eq!(handle.in_flight(), 1);
    let e = svc.clone().oneshot(2).await.unwrap_err();
    assert_eq!(ErrorKind::of(&e), ErrorKind::BulkheadFull);

    let reloaded = config
        .reload(document(
            "[instances.api]\nbulkhead = { max_concurrent = 2 }",
        ))
        .unwrap();
    assert_eq!(
        summary(&reloaded.changes),
        [change("api", PartName::Bulkhead, Change::Retuned)]
    );
    assert_eq!((handle.max_concurrent(), handle.in_flight()), (2, 1));
    let second = tokio::spawn(svc.clone().oneshot(2));
    tokio::task::yield_now().await;
    assert_eq!(handle.in_flight(), 2, "the call in flight still counts");
    let e = svc.clone().oneshot(3).await.unwrap_err();
    assert_eq!(ErrorKind::of(&e), ErrorKind::BulkheadFull);
    gate.add_permits(2);
    assert_eq!(first.await.unwrap().unwrap(), 1);
    assert_eq!(second.await.unwrap().unwrap(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_throttle_takes_a_new_k_keeping_its_counts() {
    let config = Config::new(document("[instances.api]\nthrottle = { min_answered = 1 }")).unwrap();
    let stack = config.stack("api").unwrap();
    let handle = stack.parts().circuit_breaker().second().unwrap().handle();
    let svc = stack.layer(service_fn(|n: u32| async move { Ok::<_, BoxError>(n) }));
    for n in 0..5 {
        svc.clone().oneshot(n).await.unwrap();
    }
    assert_eq!((handle.requests(), handle.accepts()), (5, 5));
    let reloaded = config
        .reload(document(
            "[instances.api]\nthrottle = { min_answered = 1, k = 1.1 }",
        ))
        .unwrap();
    assert_eq!(
        summary(&reloaded.changes),
        [change("api", PartName::Throttle, Change::Retuned)]
    );
    let same = stack.parts().circuit_breaker().second().unwrap().handle();
    assert_eq!((same.requests(), same.accepts()), (5, 5));
}

#[tokio::test(start_paused = true)]
async fn a_reload_says_what_it_added_removed_and_rebuilt_and_nothing_else() {
    let before = r#"
        [defaults]
        total_timeout = "5s"
        [instances.a]
        retry = { max_attempts = 2 }
        bulkhead = { max_concurrent = 4 }
        [instances.b]
        circuit_breaker = {}
        "#;
    let seen = Arc::new(Mutex::new(Vec::<String>::new()));
    let log = seen.clone();
    let config = Config::new(document(before))
        .unwrap()
        .on_event(move |event: &Event<'_>| log.lock().unwrap().push(event.name().to_string()));
    let a = config.stack("a").unwrap();
    let b = config.stack("b").unwrap();
    let a_parts = a.parts();

    // The same document: nothing changes, not even the parts' identity.
    assert!(config.reload(document(before)).unwrap().changes.is_empty());
    assert!(Arc::ptr_eq(&a_parts, &a.parts()));

    let after = r#"
        [defaults]
        total_timeout = "5s"
        [instances.a]
        hedge = { max_attempts = 2 }
        bulkhead = { max_concurrent = 4 }
        rate_limit = { rate = 10, per = "1s" }
        [instances.b]
        "#;
    let changes = config.reload(document(after)).unwrap().changes;
    assert_eq!(
        summary(&changes),
        [
            change("a", PartName::Retry, Change::Removed),
            change("a", PartName::Hedge, Change::Added),
            change("a", PartName::RateLimit, Change::Added),
            change("b", PartName::CircuitBreaker, Change::Removed),
        ]
    );
    let parts = a.parts();
    assert!(parts.repeat().second().is_some() && parts.rate_limit().first().is_some());
    assert!(b.parts().circuit_breaker().is_empty());

    // The parts a reload builds report to the configuration's listeners.
    let svc = a.layer(service_fn(|n: u32| async move { Ok::<_, BoxError>(n) }));
    for n in 0..11 {
        let _ = svc.clone().oneshot(n).await;
    }
    assert!(
        seen.lock().unwrap().iter().any(|name| name == "a"),
        "the rate limiter's refusal"
    );
}

/// Two threads call through one stack while a third reloads it back and
/// forth: every call is answered by one generation's parts or the other's
/// (never a mix that loses a permit), and the bulkhead ends with nothing in
/// flight.
#[test]
fn reloads_under_traffic_lose_no_call_and_no_permit() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let one = "[instances.api]\nbulkhead = { max_concurrent = 64 }\nretry = { max_attempts = 2 }";
        let two = "[instances.api]\nbulkhead = { max_concurrent = 32, max_queue = 8 }\ncircuit_breaker = { count_window = 50 }";
        let config = Config::new(document(one)).unwrap();
        let stack = config.stack("api").unwrap();
        let answered = Arc::new(AtomicU32::new(0));
        // Boxed: a spawned future naming the stack's concrete type meets
        // rust#64552.
        let svc = tower::util::BoxCloneService::new(stack.layer(service_fn(|n: u32| async move {
            tokio::task::yield_now().await;
            Ok::<_, BoxError>(n)
        })));
        let mut workers = Vec::new();
        for _ in 0..2 {
            let svc = svc.clone();
            let answered = answered.clone();
            workers.push(tokio::spawn(async move {
                for n in 0..2_000 {
                    assert_eq!(svc.clone().oneshot(n).await.unwrap(), n);
                    answered.fetch_add(1, Ordering::Relaxed);
                }
            }));
        }
        let reloader = {
            let config = config.clone();
            tokio::spawn(async move {
                for i in 0..200 {
                    let text = if i % 2 == 0 { two } else { one };
                    config.reload(document(text)).unwrap();
                    tokio::task::yield_now().await;
                }
            })
        };
        for worker in workers {
            worker.await.unwrap();
        }
        reloader.await.unwrap();
        assert_eq!(answered.load(Ordering::Relaxed), 4_000);
        let parts = stack.parts();
        let bulkhead = parts.concurrency().first().unwrap().handle();
        assert_eq!(bulkhead.in_flight(), 0, "every permit came back");
    });
}

/// Each part, changed alone, is reported alone, and an unchanged document
/// reports nothing, for every part a stack can have.
#[tokio::test(start_paused = true)]
async fn each_part_changed_alone_is_reported_alone() {
    let one = r#"
        [instances.a]
        total_timeout = "5s"
        retry = { max_attempts = 2 }
        circuit_breaker = { count_window = 10 }
        rate_limit = { rate = 100, per = "1s" }
        bulkhead = { max_concurrent = 4, max_queue = 2 }
        attempt_timeout = "1s"
        [instances.b]
        hedge = { max_attempts = 2 }
        throttle = { k = 2.0 }
        adaptive_limit = { max_queue = 1 }
        "#;
    let config = Config::new(document(one)).unwrap();
    let _a = config.stack("a").unwrap();
    let _b = config.stack("b").unwrap();
    assert!(config.reload(document(one)).unwrap().changes.is_empty());
    for (from, to, instance, part, what) in [
        (
            "total_timeout = \"5s\"",
            "total_timeout = \"6s\"",
            "a",
            PartName::TotalTimeout,
            Change::Rebuilt,
        ),
        (
            "retry = { max_attempts = 2 }",
            "retry = { max_attempts = 3 }",
            "a",
            PartName::Retry,
            Change::Rebuilt,
        ),
        (
            "count_window = 10 }",
            "count_window = 20 }",
            "a",
            PartName::CircuitBreaker,
            Change::Rebuilt,
        ),
        (
            "rate = 100,",
            "rate = 200,",
            "a",
            PartName::RateLimit,
            Change::Rebuilt,
        ),
        (
            "max_queue = 2 }",
            "max_queue = 3 }",
            "a",
            PartName::Bulkhead,
            Change::Rebuilt,
        ),
        (
            "attempt_timeout = \"1s\"",
            "attempt_timeout = \"2s\"",
            "a",
            PartName::AttemptTimeout,
            Change::Rebuilt,
        ),
        (
            "hedge = { max_attempts = 2 }",
            "hedge = { max_attempts = 3 }",
            "b",
            PartName::Hedge,
            Change::Rebuilt,
        ),
        (
            "k = 2.0",
            "k = 3.0",
            "b",
            PartName::Throttle,
            Change::Retuned,
        ),
        (
            "adaptive_limit = { max_queue = 1 }",
            "adaptive_limit = { max_queue = 2 }",
            "b",
            PartName::AdaptiveLimit,
            Change::Rebuilt,
        ),
    ] {
        let changed = one.replace(from, to);
        assert_ne!(changed, one, "{from}");
        let reloaded = config.reload(document(&changed)).unwrap();
        assert_eq!(
            summary(&reloaded.changes),
            [change(instance, part, what)],
            "{from} → {to}"
        );
        // And back: the same part again.
        let back = config.reload(document(one)).unwrap();
        assert_eq!(summary(&back.changes), [change(instance, part, what)]);
    }
}

/// The configuration tracks the stacks it made only while they live.
#[tokio::test(start_paused = true)]
async fn the_configuration_forgets_stacks_that_were_dropped() {
    let config = Config::new(document("[instances.a]\nbulkhead = {}")).unwrap();
    let first = config.stack("a").unwrap();
    let second = config.stack("a").unwrap();
    assert!(format!("{config:?}").contains("tracked: 2"), "{config:?}");
    drop(first);
    let _third = config.stack("a").unwrap();
    assert!(
        format!("{config:?}").contains("tracked: 2"),
        "a new stack sweeps the dropped one: {config:?}"
    );
    drop(second);
    drop(_third);
    config
        .reload(document("[instances.a]\nbulkhead = {}"))
        .unwrap();
    assert!(
        format!("{config:?}").contains("tracked: 0"),
        "a reload sweeps too: {config:?}"
    );
}
