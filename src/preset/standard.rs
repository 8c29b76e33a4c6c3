//! The standard stacks: a preset per protocol with the classifier, the
//! request replay and the defaults already set.
//!
//! Their order and numbers take .NET's standard resilience handler
//! (`AddStandardResilienceHandler` in Microsoft.Extensions.Http.Resilience)
//! as their anchor, where its reasons hold for us; where they differ, the
//! docs of [`Resilience::http`] say why.

#[cfg(feature = "http")]
use tower::layer::util::Identity;

#[cfg(feature = "http")]
use super::{Resilience, ResilienceBuilder};
#[cfg(feature = "http")]
use crate::backoff::Backoff;
#[cfg(feature = "http")]
use crate::bulkhead::BulkheadBuilder;
#[cfg(feature = "http")]
use crate::circuit_breaker::CircuitBreakerBuilder;
#[cfg(feature = "http")]
use crate::classify::HttpClassifier;
#[cfg(feature = "http")]
use crate::replay::ReplayBodies;
#[cfg(feature = "http")]
use crate::retry::RetryBuilder;
#[cfg(feature = "http")]
use crate::timeout::TimeoutBuilder;

/// The parts both standard stacks set, over the protocol's classifier `C`,
/// its replay `K` and its respond part `RS`.
#[cfg(feature = "http")]
type Standard<C, K, RS = Identity> = ResilienceBuilder<
    C,
    RS,
    Identity,
    TimeoutBuilder,
    RetryBuilder<C, Backoff, K>,
    CircuitBreakerBuilder<C>,
    Identity,
    BulkheadBuilder,
    TimeoutBuilder,
>;

/// The standard HTTP stack before it is built: [`Resilience::http`].
#[cfg(feature = "http")]
pub type HttpStack = Standard<HttpClassifier, ReplayBodies>;

/// The standard gRPC stack before it is built: [`Resilience::grpc`].
#[cfg(feature = "tonic")]
pub type GrpcStack = Standard<
    crate::classify::GrpcClassifier,
    crate::replay::TonicBodies,
    super::part::Ready<crate::respond::GrpcRejectionLayer>,
>;

/// The standard stacks' numbers, written once: both protocols share them.
#[cfg(feature = "http")]
mod defaults {
    use std::time::Duration;

    pub(super) const TOTAL_TIMEOUT: Duration = Duration::from_secs(30);
    pub(super) const MAX_ATTEMPTS: u32 = 3;
    pub(super) const BREAKER_WINDOW: Duration = Duration::from_secs(30);
    pub(super) const BREAKER_FAILURE_RATE: f64 = 0.1;
    pub(super) const BREAKER_MINIMUM_CALLS: u32 = 100;
    pub(super) const BREAKER_WAIT: Duration = Duration::from_secs(5);
    pub(super) const MAX_CONCURRENT: u32 = 1000;
    pub(super) const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
}

#[cfg(feature = "http")]
impl Resilience {
    /// The standard stack for an HTTP client (a `reqwest::Client`, hyper's
    /// client, or a `reqwest_middleware` client through
    /// `palisade::middleware`): every part set, each adjustable through its
    /// setter, then [`build`](ResilienceBuilder::build).
    ///
    /// | part | default | why |
    /// |---|---|---|
    /// | classifier | [`HttpClassifier`] | 5xx, 408 and 429 are failures; other 4xx are the caller's mistakes and count as successes; only idempotent methods are retried, except a request whose connection was refused, which never left |
    /// | total timeout | 30 s, named `"total"` | bounds what a caller waits in all, backoffs included (.NET's 30 s) |
    /// | retry | 3 attempts, exponential backoff from 100 ms ×2 up to 10 s with full jitter, `Retry-After` honoured up to 30 s, the default retry budget (20% of the last 10 s of requests plus 10 a second) | with 10 s per attempt and 30 s in all, a fourth attempt could not finish anyway (.NET retries three times, which its own total timeout cuts short the same way); full jitter spreads a herd of clients (AWS's measurements, `cargo run --example jitter`); the budget keeps an outage from multiplying the load |
    /// | request replay | [`ReplayBodies`]: an `http::Request` body is recorded up to 64 KiB and replayed, a `reqwest::Request` copied with `try_clone` | a retry must send the same bytes; a larger or uncopyable body is sent once |
    /// | circuit breaker | a 30 s time window, open at a 10% failure rate once 100 calls were seen (a default: a count window smaller than 100 set in its place judges after as many calls as it holds), for 5 s, then up to 5 probes at once | .NET's numbers: an HTTP downstream failing one call in ten is unwell, and 100 calls keep a few failures of a quiet client from opening it |
    /// | bulkhead | 1000 calls in flight, no queue | .NET's concurrency limit: a ceiling that a healthy client never meets, and that stops a stalled downstream from holding an unbounded number of calls |
    /// | attempt timeout | 10 s, named `"attempt"` | .NET's 10 s: one hung attempt is cut off and retried within the total |
    ///
    /// A `Retry-After` hint near the 30 s cap is honoured only if the total
    /// timeout leaves time for it: raise [`total_timeout`](ResilienceBuilder::total_timeout)
    /// for a server that asks for long waits.
    ///
    /// The retry replays with [`ReplayBodies`], which copies both
    /// `http::Request<B>` and `reqwest::Request`, so the same stack wraps
    /// either client.
    ///
    /// # Examples
    ///
    /// ```
    /// use palisade::Resilience;
    /// use std::time::Duration;
    /// use tower::Layer;
    ///
    /// # fn main() -> Result<(), palisade::error::ConfigError> {
    /// let client = Resilience::http()
    ///     .retry(|retry| retry.max_attempts(4))
    ///     .attempt_timeout(Duration::from_secs(2))
    ///     .build()?
    ///     .layer(reqwest::Client::new());
    /// # let _ = client;
    /// # Ok(())
    /// # }
    /// ```
    pub fn http() -> HttpStack {
        standard(HttpClassifier::new(), ReplayBodies::default())
    }
}

#[cfg(feature = "tonic")]
impl Resilience {
    /// The standard stack for a gRPC client over a tonic `Channel`: the
    /// numbers of [`http`](Self::http), with
    ///
    /// * [`GrpcClassifier`]: for the breaker, UNKNOWN, INTERNAL,
    ///   UNAVAILABLE, DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED and DATA_LOSS
    ///   are failures, read from the response head, a `Status`, or the
    ///   trailers at the end of a stream; the retry retries only
    ///   UNAVAILABLE, as gRPC's retry design A6 does by default, and a call
    ///   whose response head arrived is committed; `grpc-retry-pushback-ms`
    ///   is the server's hint;
    /// * [`TonicBodies`](crate::replay::TonicBodies): request bodies
    ///   recorded up to 64 KiB and replayed as the `tonic::body::Body` a
    ///   `Channel` takes;
    /// * [`GrpcRejectionLayer`](crate::respond::GrpcRejectionLayer) in the
    ///   respond slot: the stack's own rejections reach tonic's generated
    ///   client as the right `Status` (`CircuitOpen` → UNAVAILABLE,
    ///   `BulkheadFull` → RESOURCE_EXHAUSTED, `Elapsed` →
    ///   DEADLINE_EXCEEDED), the rejection kept as its source.
    ///
    /// [`GrpcClassifier`]: crate::classify::GrpcClassifier
    ///
    /// # Examples
    ///
    /// ```
    /// use palisade::Resilience;
    /// use tonic_health::pb::health_client::HealthClient;
    /// use tower::Layer;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), palisade::error::BoxError> {
    /// let channel = tonic::transport::Endpoint::from_static("http://127.0.0.1:50051").connect_lazy();
    /// let stack = Resilience::grpc()
    ///     .circuit_breaker(|breaker| breaker.name("inventory"))
    ///     .build()?;
    /// let client = HealthClient::new(stack.layer(channel));
    /// # let _ = client;
    /// # Ok(())
    /// # }
    /// ```
    pub fn grpc() -> GrpcStack {
        standard(
            crate::classify::GrpcClassifier::new(),
            crate::replay::TonicBodies::default(),
        )
        .respond_slot(crate::respond::GrpcRejectionLayer::new())
    }
}

/// The parts both standard stacks share, given the protocol's classifier.
#[cfg(feature = "http")]
fn standard<C: Clone, K>(classifier: C, replay: K) -> Standard<C, K> {
    Resilience::builder()
        .classifier(classifier)
        .total_timeout(defaults::TOTAL_TIMEOUT)
        .retry(|retry| retry.max_attempts(defaults::MAX_ATTEMPTS).requests(replay))
        .circuit_breaker(|breaker| {
            breaker
                .time_window(defaults::BREAKER_WINDOW)
                .failure_rate_threshold(defaults::BREAKER_FAILURE_RATE)
                .minimum_calls_by_default(defaults::BREAKER_MINIMUM_CALLS)
                .wait_duration(defaults::BREAKER_WAIT)
        })
        .bulkhead(|bulkhead| {
            bulkhead
                .max_concurrent(defaults::MAX_CONCURRENT)
                .max_queue(0)
        })
        .attempt_timeout(defaults::ATTEMPT_TIMEOUT)
}
