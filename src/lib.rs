//! Resilience patterns as composable [`tower`] layers.
//!
//! palisade wraps any `tower::Service` (a `reqwest::Client`, a tonic
//! `Channel`, your own) so that when the service behind it slows down or
//! fails, your program degrades gracefully instead of piling up requests,
//! retry storms and timeouts.
//!
//! Built so far:
//!
//! * [`circuit_breaker`]: a lock-free circuit breaker over a count or time
//!   window, tripping on failure rate, slow-call rate or consecutive
//!   failures, with a handle to read and steer it.
//! * [`retry`]: retries with jittered backoff, server hints, a retry budget
//!   and a deadline.
//! * [`hedge`]: hedged requests that cut the tail of slow calls, within
//!   the retry's budget and with its request copies.
//! * [`timeout`]: a per-call time limit whose timer costs nothing for calls
//!   that finish at once.
//! * [`bulkhead`]: at most N calls in flight, with a bounded FIFO queue.
//! * [`rate_limit`]: at most N calls per period (GCRA, one atomic), with a
//!   burst and weighted requests, rejecting at once or waiting up to a
//!   maximum; one limiter shared by every clone.
//! * [`adaptive`]: a concurrency limit that an algorithm (AIMD, Vegas,
//!   Gradient2, or yours) moves from each call's latency and outcome, and
//!   Google SRE's client-side adaptive throttling.
//! * [`keyed`]: one instance of a breaker, bulkhead or limiter per key
//!   (per host, per tenant), in a registry bounded in memory; breakers
//!   that leave a load balancer while open.
//! * [`fallback`]: answer failures from a closure or another service.
//! * [`Resilience`]: all of them in the recommended order, and
//!   [`ServiceBuilderExt`] to add them one by one.
//!
//! and the foundation every layer shares:
//!
//! * [`classify`]: one way to decide what a result means
//!   ([`Outcome`](classify::Outcome)), with classifiers for plain services,
//!   HTTP (feature `http`) and gRPC (feature `grpc`), and parsers for server
//!   delay hints (`Retry-After`, `grpc-retry-pushback-ms`).
//! * [`backoff`]: constant, linear, exponential and custom delays, with full,
//!   equal, decorrelated and Polly-V2 jitter, seedable.
//! * [`error`]: the rejection types every layer will return, and
//!   [`ErrorKind::of`](error::ErrorKind::of) to tell them apart.
//! * [`event`]: the event stream layers report to.
//! * `respond` (feature `http`; gRPC with `tonic`): rejections as each
//!   protocol's callers expect them: a tonic `Status` with the right code,
//!   HTTP 503 with `Retry-After` or 504, for clients and servers.
//! * [`cover`]: which part of a call a layer covers: up to the response
//!   head (tower's way, the default), or, for the bulkhead and the timeout
//!   on `http::Response` bodies, until the body ends.
//!
//! At the wire: request bodies are replayed as hyper and tonic send them
//! ([`retry::ReplayBodies`]), a connection that failed before the request
//! left is retried whatever the method ([`classify::is_connect_error`]),
//! and a gRPC status sent in the trailers is judged by the circuit breaker
//! when the body ends ([`classify::Settle`]).
//!
//! # Examples
//!
//! A flaky service behind the whole stack: the retry absorbs its hiccups,
//! the breaker and bulkhead protect it, the timeouts bound the wait, and the
//! fallback answers what is left.
//!
//! ```
//! use palisade::Resilience;
//! use palisade::error::BoxError;
//! use palisade::fallback::{Failed, from_sync_fn};
//! use std::sync::atomic::{AtomicU32, Ordering};
//! use std::sync::Arc;
//! use std::time::Duration;
//! use tower::{Layer, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), BoxError> {
//! let calls = Arc::new(AtomicU32::new(0));
//! let seen = calls.clone();
//! let flaky = service_fn(move |id: u32| {
//!     let n = seen.fetch_add(1, Ordering::SeqCst);
//!     async move {
//!         if n % 3 == 0 { Err::<String, BoxError>("hiccup".into()) } else { Ok(format!("item {id}")) }
//!     }
//! });
//!
//! let stack = Resilience::builder()
//!     .fallback(from_sync_fn(|_: Failed<u32, String>| Ok("cached".into())))
//!     .total_timeout(Duration::from_secs(2))
//!     .retry(|retry| retry.max_attempts(3))
//!     .circuit_breaker(|breaker| breaker.name("items"))
//!     .bulkhead(|bulkhead| bulkhead.max_concurrent(32))
//!     .attempt_timeout(Duration::from_millis(250))
//!     .build()?;
//! let svc = stack.layer(flaky);
//!
//! for id in 0..5 {
//!     assert_eq!(svc.clone().oneshot(id).await?, format!("item {id}"));
//! }
//! # Ok(())
//! # }
//! ```
//!
//! # Panics in the inner service
//!
//! A panic in the inner service's `call` or future propagates through every
//! layer unchanged. Nothing is left behind: a bulkhead permit and a breaker's
//! half-open probe permit are guards that give themselves back as the panic
//! unwinds, and a retry withdraws a budget token only when it has decided to
//! retry, so a panic cannot take one without an attempt
//! (`tests/hostile.rs`).
//!
//! # Features
//!
//! | feature | enables |
//! |---|---|
//! | `http` | [`HttpClassifier`](classify::HttpClassifier), `Retry-After` parsing, replayable `http` bodies for the retry, `Resilience::http()`, `respond::HttpRejectionLayer` (rejections as 503 / 504 responses) |
//! | `grpc` | [`GrpcClassifier`](classify::GrpcClassifier) over `grpc-status` headers (implies `http`) |
//! | `reqwest` | classification of `reqwest::Response` / `reqwest::Request` (implies `http`) |
//! | `tonic` | classification of `tonic::Status` errors and `tonic::Response`s, `retry::TonicBodies`, `respond::GrpcRejectionLayer` (rejections as `Status`es), `Resilience::grpc()` (implies `grpc`) |
//! | `reqwest-middleware` | `middleware::StackMiddleware`: a stack as a `reqwest_middleware::Middleware` (implies `reqwest`) |
//! | `tracing` | `event::TracingEvents`: the event stream as `tracing` events; `RetryBuilder::attempt_spans` |
//! | `metrics` | `event::MetricsEvents`: the event stream as `metrics` counters and gauges |
//! | `chaos` | `chaos::ChaosLayer`: fault injection for tests |

#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![warn(missing_debug_implementations, unreachable_pub, rust_2018_idioms)]
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod adaptive;
pub mod backoff;
pub mod budget;
pub mod bulkhead;
#[cfg(feature = "chaos")]
pub mod chaos;
pub mod circuit_breaker;
pub mod classify;
mod clock;
pub mod config;
pub mod cover;
pub mod error;
pub mod event;
pub mod fallback;
pub mod hedge;
pub mod keyed;
#[cfg(feature = "reqwest-middleware")]
pub mod middleware;
pub mod preset;
mod random;
pub mod rate_limit;
mod registry;
pub mod replay;
#[cfg(feature = "http")]
pub mod respond;
pub mod retry;
mod semaphore;
mod settings;
mod sync;
pub mod timeout;
mod validate;
mod window;

pub use error::BoxError;
pub use preset::{Resilience, ServiceBuilderExt};

// The README's examples are compiled and run as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
