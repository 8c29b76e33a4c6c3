//! The palisade tour: a flaky HTTP service, a `reqwest::Client`, and the
//! whole stack between them, with a timeline of everything that happens.
//!
//! ```text
//! cargo run --example tour
//! ```
//!
//! A local server (127.0.0.1, a port the OS picks) answers well, then goes
//! through an outage (503s), with a slow answer now and then, then
//! recovers. Forty requests go through fallback → total timeout → retry →
//! circuit breaker → bulkhead → per-attempt timeout → reqwest, one every
//! 30 ms. The timeline shows each request, its attempts and backoffs, the
//! breaker's states, rejections and fallbacks; a summary follows.

use std::convert::Infallible;
use std::sync::atomic::{AtomicU32, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::header::{CONTENT_TYPE, HeaderValue};
use http::{Response, StatusCode};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use palisade::Resilience;
use palisade::backoff::{Backoff, Jitter};
use palisade::bulkhead::BulkheadEvent;
use palisade::circuit_breaker::BreakerEvent;
use palisade::error::{BoxError, ErrorKind};
use palisade::event::Event;
use palisade::fallback::FallbackEvent;
use palisade::fallback::{Failed, from_sync_fn};
use palisade::retry::RetryEvent;
use palisade::timeout::TimeoutEvent;
use tokio::net::TcpListener;
use tokio::time::Instant;
use tower::{Layer, ServiceExt};

const REQUESTS: u32 = 40;
const SPACING: Duration = Duration::from_millis(30);
/// The server's outage, from its start.
const OUTAGE: std::ops::Range<Duration> = Duration::from_millis(250)..Duration::from_millis(900);

/// What the server has seen.
#[derive(Default)]
struct ServerLog {
    attempts: AtomicU32,
    ok: AtomicU32,
}

/// A small HTTP/1.1 server (hyper's): answers each request according to
/// the time since it started.
async fn flaky_server(log: Arc<ServerLog>) -> std::io::Result<std::net::SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let start = Instant::now();
    tokio::spawn(async move {
        while let Ok((conn, _)) = listener.accept().await {
            let log = log.clone();
            let service = service_fn(move |_request| answer(start, log.clone()));
            tokio::spawn(http1::Builder::new().serve_connection(TokioIo::new(conn), service));
        }
    });
    Ok(addr)
}

async fn answer(start: Instant, log: Arc<ServerLog>) -> Result<Response<String>, Infallible> {
    let n = log.attempts.fetch_add(1, SeqCst) + 1;
    let (status, body) = if OUTAGE.contains(&start.elapsed()) {
        (StatusCode::SERVICE_UNAVAILABLE, "down for maintenance")
    } else if n.is_multiple_of(11) {
        // Now and then an answer takes longer than an attempt may.
        tokio::time::sleep(Duration::from_millis(300)).await;
        (StatusCode::OK, "slow but fine")
    } else {
        log.ok.fetch_add(1, SeqCst);
        (StatusCode::OK, "fresh")
    };
    let mut response = Response::new(body.to_string());
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    Ok(response)
}

/// The timeline: one line per event, stamped with the time since the start
/// and the request it belongs to.
struct Timeline {
    start: Instant,
    current: AtomicU32,
    lines: Mutex<()>,
}

impl Timeline {
    fn print(&self, what: impl std::fmt::Display) {
        let _one_at_a_time = self.lines.lock().unwrap();
        println!(
            "{:>7.3}s  #{:02}  {what}",
            self.start.elapsed().as_secs_f64(),
            self.current.load(SeqCst)
        );
    }

    fn on_event(&self, event: &Event<'_>) {
        let line = if let Some(retry) = event.kind::<RetryEvent>() {
            match *retry {
                RetryEvent::Attempt { attempt } => format!("  attempt {attempt}"),
                RetryEvent::Retry {
                    attempt,
                    delay,
                    reason,
                    hinted,
                } => format!(
                    "  attempt {attempt} {reason}, retry in {} ms{}",
                    delay.as_millis(),
                    if hinted { " (server's hint)" } else { "" }
                ),
                RetryEvent::GaveUp { attempts, reason } => {
                    format!("  gave up after {attempts} attempt(s): {reason}")
                }
                RetryEvent::BudgetExhausted { .. } => "  retry budget spent".to_string(),
                _ => format!("  {event}"),
            }
        } else if let Some(breaker) = event.kind::<BreakerEvent>() {
            match *breaker {
                // Every call's end: the request's own line says it better.
                BreakerEvent::CallFinished { .. } => return,
                BreakerEvent::StateTransition { from, to, reason } => {
                    format!("  ⚡ breaker {from:?} → {to:?} ({reason})")
                }
                BreakerEvent::CallRejected { retry_after } => format!(
                    "  ⛔ breaker open: rejected at once (may probe in {} ms)",
                    retry_after.as_millis()
                ),
                BreakerEvent::FailureRateExceeded { rate, threshold } => format!(
                    "  failure rate {:.0}% reached the breaker's threshold ({:.0}%)",
                    rate * 100.0,
                    threshold * 100.0
                ),
                _ => format!("  {event}"),
            }
        } else if let Some(TimeoutEvent::TimedOut { after }) = event.kind() {
            format!(
                "  ⏱ {} timeout after {} ms",
                event.name(),
                after.as_millis()
            )
        } else if let Some(FallbackEvent::FellBack { kind }) = event.kind() {
            format!(
                "  ↩ fallback answered ({})",
                kind.map_or("failed response".to_string(), |k| format!("{k:?}"))
            )
        } else if let Some(BulkheadEvent::Rejected { .. }) = event.kind() {
            "  bulkhead full".to_string()
        } else {
            format!("  {event}")
        };
        self.print(line);
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[rank]
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), BoxError> {
    let server_log = Arc::new(ServerLog::default());
    let addr = flaky_server(server_log.clone()).await?;
    let url = format!("http://{addr}/inventory");

    let timeline = Arc::new(Timeline {
        start: Instant::now(),
        current: AtomicU32::new(0),
        lines: Mutex::new(()),
    });
    let listen = |t: &Arc<Timeline>| {
        let t = t.clone();
        move |e: &Event<'_>| t.on_event(e)
    };
    let fallbacks = Arc::new(AtomicU32::new(0));
    let counted = fallbacks.clone();

    let backoff = Backoff::exponential(Duration::from_millis(20))
        .max_delay(Duration::from_millis(200))
        .jitter(Jitter::Full)
        .build()?;
    let answer_from_cache = from_sync_fn(move |_: Failed<reqwest::Request, reqwest::Response>| {
        counted.fetch_add(1, SeqCst);
        let cached = http::Response::builder()
            .status(200)
            .header("x-served-by", "fallback")
            .body("cached inventory")
            .expect("a valid response");
        Ok(reqwest::Response::from(cached))
    });

    // The standard HTTP stack (its classifier, replay and defaults), with
    // numbers made small enough to watch and a listener on every part.
    let stack = Resilience::http()
        .fallback_with(answer_from_cache, |fallback| {
            fallback.on_event(listen(&timeline))
        })
        .total_timeout(Duration::from_millis(800))
        .retry(|retry| retry.backoff(backoff).seed(7).on_event(listen(&timeline)))
        .circuit_breaker(|breaker| {
            breaker
                .name("inventory")
                .count_window(10)
                .minimum_calls(5)
                .failure_rate_threshold(0.5)
                .wait_duration(Duration::from_millis(300))
                .half_open_calls(2)
                .on_event(listen(&timeline))
        })
        .bulkhead(|bulkhead| bulkhead.max_concurrent(8))
        .attempt_timeout_with(|attempt| {
            attempt
                .name("per-attempt")
                .timeout(Duration::from_millis(150))
                .on_event(listen(&timeline))
        })
        .build()?;
    let handle = stack.circuit_breaker().handle();
    let client = stack.layer(reqwest::Client::new());

    println!("palisade tour: {REQUESTS} requests to a flaky server at {addr}");
    println!(
        "stack: fallback → total timeout (800 ms) → retry (3 attempts, jittered backoff) →\n       \
         circuit breaker (opens at 50% failures of the last 10) → bulkhead (8) → per-attempt timeout (150 ms)\n"
    );

    let mut latencies = Vec::new();
    for id in 1..=REQUESTS {
        timeline.current.store(id, SeqCst);
        let request = reqwest::Request::new(reqwest::Method::GET, url.parse()?);
        let sent = Instant::now();
        let result = client.clone().oneshot(request).await;
        let took = sent.elapsed();
        latencies.push(took);
        let outcome = match result {
            Ok(res) => {
                let by_fallback = res.headers().contains_key("x-served-by");
                let status = res.status();
                let body = res.text().await.unwrap_or_default();
                if by_fallback {
                    format!("← {status} \"{body}\" (fallback)")
                } else {
                    format!("← {status} \"{body}\"")
                }
            }
            // With the fallback outermost, errors do not reach the caller;
            // were it left out, this is where `CircuitOpen` would show.
            Err(err) => format!("← error ({:?}): {err}", ErrorKind::of(&err)),
        };
        timeline.print(format!("{outcome}  [{} ms]", took.as_millis()));
        tokio::time::sleep(SPACING).await;
    }
    let rejected_while_open = handle.metrics().not_permitted;

    latencies.sort();
    let attempts = server_log.attempts.load(SeqCst);
    println!("\nsummary");
    println!("  {:<34} {REQUESTS}", "requests");
    println!("  {:<34} {attempts}", "attempts that reached the server");
    println!(
        "  {:<34} {}",
        "fresh answers from the server",
        server_log.ok.load(SeqCst)
    );
    println!(
        "  {:<34} {}",
        "answered by the fallback",
        fallbacks.load(SeqCst)
    );
    println!(
        "  {:<34} {rejected_while_open}",
        "calls rejected while open"
    );
    println!("  {:<34} {:?}", "breaker now", handle.state());
    println!(
        "  {:<34} {} ms",
        "latency p50",
        percentile(&latencies, 0.50).as_millis()
    );
    println!(
        "  {:<34} {} ms",
        "latency p99",
        percentile(&latencies, 0.99).as_millis()
    );
    println!(
        "\nEvery request got an answer; during the outage the breaker kept {} calls off the server.",
        handle.metrics().not_permitted
    );
    Ok(())
}
