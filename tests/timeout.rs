//! The timeout layer through its public API, on paused time.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use palisade::error::{BoxError, Elapsed, ErrorKind};
use palisade::event::Event;
use palisade::timeout::TimeoutLayer;
use tokio::time::{Instant, advance, sleep};
use tower::{Layer, Service, ServiceExt, service_fn};

const LIMIT: Duration = Duration::from_millis(100);

fn sleeper() -> impl Service<u64, Response = u64, Error = BoxError> + Clone {
    service_fn(|ms: u64| async move {
        sleep(Duration::from_millis(ms)).await;
        Ok::<_, BoxError>(ms)
    })
}

#[tokio::test(start_paused = true)]
async fn fires_exactly_at_the_limit() {
    let mut svc = TimeoutLayer::new(LIMIT).unwrap().layer(sleeper());
    let start = Instant::now();
    let err = svc.ready().await.unwrap().call(1_000).await.unwrap_err();
    assert!(err.is::<Elapsed>());
    assert_eq!(ErrorKind::of(&err), ErrorKind::Elapsed);
    assert_eq!(start.elapsed(), LIMIT);
}

#[tokio::test(start_paused = true)]
async fn calls_within_the_limit_pass_through() {
    let mut svc = TimeoutLayer::new(LIMIT).unwrap().layer(sleeper());
    assert_eq!(svc.ready().await.unwrap().call(99).await.unwrap(), 99);
    assert_eq!(
        svc.ready().await.unwrap().call(100).await.unwrap(),
        100,
        "the inner future is polled first"
    );
    assert_eq!(svc.ready().await.unwrap().call(0).await.unwrap(), 0);
}

#[tokio::test(start_paused = true)]
async fn inner_errors_pass_through_unchanged() {
    let mut svc = TimeoutLayer::new(LIMIT)
        .unwrap()
        .layer(service_fn(|_: ()| async {
            Err::<(), _>(std::io::Error::other("refused"))
        }));
    let err = svc.ready().await.unwrap().call(()).await.unwrap_err();
    assert_eq!(ErrorKind::of(&err), ErrorKind::Inner);
    assert_eq!(
        err.downcast_ref::<std::io::Error>().unwrap().to_string(),
        "refused"
    );
}

#[tokio::test(start_paused = true)]
async fn the_deadline_runs_from_the_call_not_the_first_poll() {
    let mut svc = TimeoutLayer::new(LIMIT).unwrap().layer(sleeper());
    let start = Instant::now();
    let future = svc.ready().await.unwrap().call(1_000);
    advance(Duration::from_millis(60)).await;
    let err = future.await.unwrap_err();
    assert!(err.is::<Elapsed>());
    assert_eq!(start.elapsed(), LIMIT);
}

/// Becomes ready 500 ms after it is first polled, then answers in 50 ms.
struct SlowToReady {
    gate: Pin<Box<tokio::time::Sleep>>,
}

impl Service<()> for SlowToReady {
    type Response = &'static str;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<&'static str, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.gate.as_mut().poll(cx).map(Ok)
    }

    fn call(&mut self, _: ()) -> Self::Future {
        Box::pin(async {
            sleep(Duration::from_millis(50)).await;
            Ok("answer")
        })
    }
}

#[tokio::test(start_paused = true)]
async fn time_waiting_for_readiness_is_not_counted() {
    let gate = Box::pin(sleep(Duration::from_millis(500)));
    let mut svc = TimeoutLayer::new(LIMIT)
        .unwrap()
        .layer(SlowToReady { gate });
    let start = Instant::now();
    assert_eq!(svc.ready().await.unwrap().call(()).await.unwrap(), "answer");
    assert_eq!(start.elapsed(), Duration::from_millis(550));
}

#[tokio::test(start_paused = true)]
async fn dropping_the_future_drops_the_inner_call() {
    let dropped = Arc::new(AtomicBool::new(false));
    struct Flag(Arc<AtomicBool>);
    impl Drop for Flag {
        fn drop(&mut self) {
            self.0.store(true, SeqCst);
        }
    }
    let flag = dropped.clone();
    let mut svc = TimeoutLayer::new(LIMIT)
        .unwrap()
        .layer(service_fn(move |_: ()| {
            let guard = Flag(flag.clone());
            async move {
                let _guard = guard;
                sleep(Duration::from_secs(10)).await;
                Ok::<_, BoxError>(())
            }
        }));
    let err = svc.ready().await.unwrap().call(()).await.unwrap_err();
    assert!(err.is::<Elapsed>());
    assert!(dropped.load(SeqCst), "the timed-out call was cancelled");
}

/// Never finishes and always has work: each poll spends the task's whole
/// cooperative budget, then asks to be polled again at once.
struct Busy;

impl Future for Busy {
    type Output = Result<(), BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        loop {
            if std::pin::pin!(tokio::task::consume_budget())
                .poll(cx)
                .is_pending()
            {
                return Poll::Pending;
            }
        }
    }
}

// Real time: a task that is always ready never lets paused time advance.
// Without the budget-proof timer the call would never end: tokio's own
// (budget-proof) timeout around it turns that into a failure, not a hang.
#[tokio::test]
async fn a_busy_inner_future_cannot_starve_the_timer() {
    let limit = Duration::from_millis(20);
    let mut svc = TimeoutLayer::new(limit)
        .unwrap()
        .layer(service_fn(|_: ()| Busy));
    let call = svc.ready().await.unwrap().call(());
    let err = tokio::time::timeout(Duration::from_secs(30), call)
        .await
        .expect("the layer's timer fired despite the busy inner future")
        .unwrap_err();
    assert!(err.is::<Elapsed>());
}

#[tokio::test(start_paused = true)]
async fn timeouts_are_events() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    let layer = TimeoutLayer::builder()
        .name("per-attempt")
        .timeout(LIMIT)
        .on_event(move |e: &Event<'_>| log.lock().unwrap().push(e.to_string()))
        .build()
        .unwrap();
    let mut svc = layer.layer(sleeper());
    svc.ready().await.unwrap().call(10).await.unwrap();
    svc.ready().await.unwrap().call(500).await.unwrap_err();
    assert_eq!(
        *seen.lock().unwrap(),
        ["`per-attempt`: timed out after 100ms"]
    );
}

#[test]
fn bad_timeouts_are_refused() {
    assert_eq!(
        TimeoutLayer::new(Duration::ZERO).unwrap_err().parameter(),
        "timeout"
    );
    assert_eq!(
        TimeoutLayer::new(Duration::MAX).unwrap_err().parameter(),
        "timeout"
    );
    assert_eq!(
        TimeoutLayer::new(Duration::from_nanos(1))
            .unwrap()
            .timeout(),
        Duration::from_nanos(1)
    );
}

/// Moves the paused clock by `by` while this thread waits, as a `call`
/// that blocks would: another thread advances it.
fn block_for(by: Duration) {
    let handle = tokio::runtime::Handle::current();
    std::thread::spawn(move || handle.block_on(advance(by)))
        .join()
        .unwrap();
}

/// A user's service whose `call` blocks for 300 ms, then calls (from
/// within its own `call`) a 400 ms timeout over a 200 ms service: that
/// timeout elapses if it is lent an instant read before the 300 ms.
fn blocks_then_calls_a_timeout()
-> impl Service<(), Response = &'static str, Error = BoxError> + Clone {
    let slow = service_fn(|()| async {
        sleep(Duration::from_millis(200)).await;
        Ok::<_, BoxError>("done")
    });
    let inner = TimeoutLayer::new(Duration::from_millis(400))
        .unwrap()
        .layer(slow);
    service_fn(move |()| {
        block_for(Duration::from_millis(300));
        // The inner service is always ready.
        let mut inner = inner.clone();
        inner.call(())
    })
}

/// Issue 12, defect 6: a timeout's deadline runs from its own `call`. A
/// user service whose `call` blocks for 300 ms before it calls an inner
/// 400 ms timeout over a 200 ms service must not lend that inner timeout
/// the instant an outer timeout read.
#[tokio::test(start_paused = true)]
async fn a_deadline_runs_from_its_own_call_whatever_ran_before() {
    let mut svc = TimeoutLayer::new(Duration::from_secs(5))
        .unwrap()
        .layer(blocks_then_calls_a_timeout());
    let answer = svc.ready().await.unwrap().call(()).await;
    assert_eq!(answer.unwrap(), "done");
}

/// The same through the preset, whose parts share one clock reading per
/// call: the user's service below it, and the timeout inside that
/// service, read their own. (Seen to fail, the inner timeout elapsing, with
/// the preset lending its reading to the service it wraps.)
#[tokio::test(start_paused = true)]
async fn a_presets_shared_reading_stops_at_the_service_it_wraps() {
    let preset = palisade::Resilience::builder()
        .total_timeout(Duration::from_secs(5))
        .retry(|retry| retry.max_attempts(1))
        .circuit_breaker(|breaker| breaker)
        .bulkhead(|bulkhead| bulkhead.max_concurrent(10))
        .attempt_timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let mut svc = preset.layer(blocks_then_calls_a_timeout());
    let answer = svc.ready().await.unwrap().call(()).await;
    assert_eq!(answer.unwrap(), "done");
}

/// A layer of the user's given whole to a preset's slot may block in its
/// `call`: it is not lent the preset's reading, and the parts below it
/// read the clock after it. (Seen to fail, the attempt timeout elapsing,
/// with a layer given whole lent the reading taken above it.)
#[tokio::test(start_paused = true)]
async fn the_parts_below_a_layer_given_whole_read_the_clock_after_it() {
    use palisade::Resilience;
    use std::time::Duration;
    use tower::layer::layer_fn;
    use tower::{Layer, Service, ServiceExt, service_fn};

    #[derive(Clone)]
    struct BlocksInCall<S>(S);

    impl<S: Service<()>> Service<()> for BlocksInCall<S> {
        type Response = S::Response;
        type Error = S::Error;
        type Future = S::Future;

        fn poll_ready(
            &mut self,
            cx: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Result<(), S::Error>> {
            self.0.poll_ready(cx)
        }

        fn call(&mut self, req: ()) -> S::Future {
            block_for(Duration::from_millis(300));
            self.0.call(req)
        }
    }

    let preset = Resilience::builder()
        .total_timeout(Duration::from_secs(5))
        .retry(|retry| retry.max_attempts(1))
        .rate_limit_slot(layer_fn(BlocksInCall))
        .bulkhead(|bulkhead| bulkhead.max_concurrent(10))
        .attempt_timeout(Duration::from_millis(400))
        .build()
        .unwrap();
    let slow = service_fn(|()| async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        Ok::<_, palisade::error::BoxError>("done")
    });
    let mut svc = preset.layer(slow);
    let answer = svc.ready().await.unwrap().call(()).await;
    assert_eq!(answer.unwrap(), "done");
}

/// A stack from a configuration document shares one reading the same way,
/// and the service it wraps reads its own. (Seen to fail, the inner
/// timeout elapsing, with the document's stack lending its reading to the
/// service it wraps.)
#[cfg(feature = "serde")]
#[tokio::test(start_paused = true)]
async fn a_document_stacks_shared_reading_stops_at_the_service_it_wraps() {
    use palisade::config::{Config, Document, StackSettings};

    let mut stack = StackSettings::default();
    stack.total_timeout = Some(Duration::from_secs(5));
    stack.circuit_breaker = Some(Default::default());
    stack.attempt_timeout = Some(Duration::from_secs(2));
    let mut document = Document::default();
    document.instances.insert("downstream".to_string(), stack);
    let config = Config::new(document).unwrap();
    let mut svc = config
        .stack("downstream")
        .unwrap()
        .layer(blocks_then_calls_a_timeout());
    let answer = svc.ready().await.unwrap().call(()).await;
    assert_eq!(answer.unwrap(), "done");
}

/// Issue 14, item 6: the error names the timeout layer and its limit.
#[tokio::test(start_paused = true)]
async fn elapsed_says_which_timeout_and_which_limit() {
    let layer = TimeoutLayer::builder()
        .name("per-attempt")
        .timeout(Duration::from_millis(250))
        .build()
        .unwrap();
    let err = layer.layer(sleeper()).oneshot(1_000).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        r#"timeout "per-attempt" elapsed after 250ms"#
    );
    let elapsed = err.downcast_ref::<Elapsed>().unwrap();
    assert_eq!(elapsed.name(), "per-attempt");
    assert_eq!(elapsed.timeout(), Duration::from_millis(250));
    // Unnamed, it carries the builder's default name.
    let err = TimeoutLayer::new(LIMIT)
        .unwrap()
        .layer(sleeper())
        .oneshot(1_000)
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), r#"timeout "timeout" elapsed after 100ms"#);
}
