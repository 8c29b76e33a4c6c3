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
//!
//! * [`event`]: the event stream layers report to.
//!
//! The retry, timeout, bulkhead and fallback layers are planned; the README
//! lists what is built.
//!
//! # Examples
//!
//! ```
//! use palisade::backoff::{Backoff, Jitter};
//! use palisade::classify::{Classify, DefaultClassifier, Outcome};
//! use std::time::Duration;
//!
//! // A failure, judged by the default classifier...
//! let result: Result<&str, &str> = Err("connection reset");
//! assert_eq!(Classify::<(), _, _>::classify(&DefaultClassifier, &result), Outcome::Failure);
//!
//! // ...is worth a retry after a jittered exponential delay.
//! let backoff = Backoff::exponential(Duration::from_millis(50))
//!     .max_delay(Duration::from_secs(2))
//!     .jitter(Jitter::Equal)
//!     .build()?;
//! let first = backoff.delays_seeded(42).next().unwrap();
//! assert!(first >= Duration::from_millis(25) && first <= Duration::from_millis(50));
//! # Ok::<(), palisade::error::ConfigError>(())
//! ```
//!
//! # Features
//!
//! | feature | enables |
//! |---|---|
//! | `http` | [`HttpClassifier`](classify::HttpClassifier), `Retry-After` parsing |
//! | `grpc` | [`GrpcClassifier`](classify::GrpcClassifier) over `grpc-status` headers (implies `http`) |
//! | `reqwest` | classification of `reqwest::Response` / `reqwest::Request` (implies `http`) |
//! | `tonic` | classification of `tonic::Status` errors and `tonic::Response`s (implies `grpc`) |

#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![warn(missing_debug_implementations, unreachable_pub, rust_2018_idioms)]
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod backoff;
pub mod bulkhead;
pub mod circuit_breaker;
pub mod classify;
pub mod error;
pub mod event;
pub mod retry;
pub mod timeout;

pub use error::BoxError;

// The README's examples are compiled and run as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
