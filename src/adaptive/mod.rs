//! Limits that find their own value: an adaptive concurrency limit, and
//! client-side adaptive throttling.
//!
//! A [bulkhead](crate::bulkhead) of 32 is right for one service on one
//! day and wrong the next. The two layers here let the limit follow what
//! the service can take, from what its calls show.
//!
//! # The adaptive concurrency limit
//!
//! [`AdaptiveLimitLayer`] is a bulkhead whose limit a [`LimitAlgorithm`]
//! moves from each finished call's RTT and outcome: [`Aimd`], [`Vegas`]
//! (the default) or [`Gradient2`], ported from Netflix's
//! [concurrency-limits] with its defaults and bounds, or one of your own.
//! Calls over the limit wait in a bounded queue for at most a maximum
//! wait, or are refused at once with
//! [`ConcurrencyLimited`](crate::error::ConcurrencyLimited), as a
//! bulkhead's are (it is the bulkhead's semaphore, whose limit moves; a
//! lower limit cuts no call in flight off).
//!
//! * **What a sample is.** A call's RTT runs from its `call` to the moment
//!   its outcome is known: the response head, or, with a classifier that
//!   reads the status at the end of a body (gRPC's, when the status comes
//!   in trailers), the end of that body; the permit is held until then.
//!   A call the classifier calls a failure is a *dropped* sample (the
//!   signal to back off); one it ignores, and one dropped before its
//!   outcome was known (a cancelled call, a hedge's loser), is no sample
//!   at all and only gives its permit back, as concurrency-limits'
//!   `onIgnore` and Envoy's cancelled samples do. The calls in flight a
//!   sample carries are counted when it started, itself included.
//! * **Learned in windows.** Each finished call adds its sample to the
//!   open window's pile (atomic adds: a count, a count of failures, a sum
//!   of RTTs, the lowest RTT and the highest in-flight count); the first
//!   call to finish after the window is over teaches the algorithm the
//!   pile as one sample (the mean RTT, the highest in-flight count, failed
//!   if any call failed), as concurrency-limits' `WindowedLimit` does. A
//!   window lasts twice the lowest RTT, from 100 ms to 250 ms, and holds at
//!   least 10 calls ([`window`](AdaptiveLimitBuilder::window),
//!   [`min_samples`](AdaptiveLimitBuilder::min_samples); per call with
//!   [`per_sample`](AdaptiveLimitBuilder::per_sample)). Learned per
//!   call, AIMD backs off once for each of the calls one overload slowed,
//!   and Gradient2's long average spans only seconds (BENCHMARKS.md shows
//!   both).
//! * **No lock waited for.** The algorithm's lock is only ever *tried*: a
//!   call that finds it taken leaves its sample in the pile, which the
//!   holder, or the next call, learns. No sample is lost and no finishing
//!   call waits (concurrency-limits takes a monitor lock per sample
//!   without its `WindowedLimit`; tower-resilience and tower-acc a mutex
//!   per completion).
//! * **Reading it.** [`AdaptiveLimitHandle::limit`] is the limit now; each
//!   change is an [`AdaptiveLimitEvent::LimitChanged`], and the gauge
//!   `palisade.adaptive_limit.limit` with
//!   [`MetricsEvents`](crate::event::MetricsEvents).
//!
//! Which algorithm: [`Aimd`] when failures (or a timeout below) are the
//! signal; [`Vegas`] when latency grows before anything fails, and the
//! lowest RTT is a fair picture of an idle service; [`Gradient2`] when
//! latency is noisy, as it tracks a long average rather than a minimum.
//! The simulation in `examples/adaptive.rs`
//! (`cargo run --example adaptive`) shows each against a service whose
//! capacity changes, next to a fixed bulkhead.
//!
//! ```
//! use palisade::adaptive::{AdaptiveLimitLayer, Aimd};
//! use palisade::error::BoxError;
//! use std::time::Duration;
//! use tower::{Layer, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), BoxError> {
//! let limit = AdaptiveLimitLayer::builder()
//!     .name("inventory")
//!     .algorithm(Aimd::builder().initial_limit(10).min_limit(2).build()?)
//!     .max_queue(50)
//!     .max_wait(Duration::from_millis(100))
//!     // Every call teaches the algorithm at once; by default it learns
//!     // from windows of at least 10 calls and 100 ms.
//!     .per_sample()
//!     .build()?;
//! let handle = limit.handle();
//! let svc = limit.layer(service_fn(|fail: bool| async move {
//!     if fail { Err::<(), BoxError>("overloaded".into()) } else { Ok(()) }
//! }));
//!
//! svc.clone().oneshot(true).await.unwrap_err();
//! assert_eq!(handle.limit(), 9, "a failure: 10 × 0.9");
//! svc.oneshot(false).await?;
//! assert_eq!(handle.limit(), 9, "1 call in flight of 9: too few to grow on");
//! # Ok(())
//! # }
//! ```
//!
//! # Client-side adaptive throttling
//!
//! [`ThrottleLayer`] is the client-side throttling of Google's SRE book
//! (chapter 21, "Handling Overload"): over a sliding window (2 minutes by
//! default), it counts the *requests* its callers made and the *accepts*
//! (calls the classifier called a success), and rejects each new call
//! locally, with [`Throttled`](crate::error::Throttled), with probability
//!
//! ```text
//! max(0, (requests − K × accepts) / (requests + 1))
//! ```
//!
//! K is 2 by default: a service that accepts half the requests or more
//! gets every one; below that, the client sends about K times what the
//! service accepts and turns the rest away without a round trip. Since the
//! probability stays below 1, a trickle still reaches a service that
//! rejects everything, and its recovery is seen.
//!
//! * **When a request counts.** Before it is sent, as SRE's model says:
//!   calls in flight count as requests not (yet) accepted, so a service
//!   that stops answering is throttled before its timeouts come back
//!   (go-zero counts after the call returns, which delays throttling by a
//!   round trip: go-zero#5011). Calls rejected locally count as requests
//!   too. An accept counts in the window's bucket of its request, so a
//!   request and its accept leave the window together (an accept counted
//!   when the response comes can outlive its request: the same issue).
//!   A call the classifier ignores, or one dropped before its outcome was
//!   known, is taken back out.
//! * **Enough history first.** Nothing is rejected until the window holds
//!   [`min_answered`](ThrottleBuilder::min_answered) answered requests
//!   (100 by default): the formula alone would turn half the calls away
//!   after one failure, and would read a client's first burst of calls in
//!   flight, none answered yet, as a failing service. Once there is
//!   history, calls in flight count as above.
//! * **Where it differs from peers.** go-zero: K 1.5, 10 s window, counted
//!   after the call, 5 requests of grace; Kratos: K ≈ 1.67, 3 s window,
//!   counted after the call, nothing rejected under 100 requests.
//!
//! ```
//! use palisade::adaptive::ThrottleLayer;
//! use palisade::error::{BoxError, ErrorKind};
//! use tower::{Layer, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() {
//! let throttle = ThrottleLayer::builder().name("search").min_answered(10).seed(7).build().unwrap();
//! let handle = throttle.handle();
//! let down = throttle.layer(service_fn(|_: ()| async { Err::<(), BoxError>("503".into()) }));
//!
//! let mut throttled = 0;
//! for _ in 0..100 {
//!     let err = down.clone().oneshot(()).await.unwrap_err();
//!     throttled += usize::from(ErrorKind::of(&err) == ErrorKind::Throttled);
//! }
//! // Every request failed: past the first 10, nearly all are turned away
//! // without reaching the service.
//! assert!(throttled > 80, "{throttled}");
//! assert_eq!((handle.requests(), handle.accepts()), (100, 0));
//! # }
//! ```
//!
//! [concurrency-limits]: https://github.com/Netflix/concurrency-limits

mod algorithm;
pub mod future;
pub mod limit;
pub mod throttle;

pub use self::algorithm::{
    Aimd, AimdBuilder, Gradient2, Gradient2Builder, LimitAlgorithm, Sample, Vegas, VegasBuilder,
};
pub use self::limit::{
    AdaptiveLimit, AdaptiveLimitBuilder, AdaptiveLimitEvent, AdaptiveLimitHandle,
    AdaptiveLimitLayer, AdaptiveLimitSettings, AlgorithmKind, AlgorithmSettings,
};
pub use self::throttle::{
    Throttle, ThrottleBuilder, ThrottleEvent, ThrottleHandle, ThrottleLayer, ThrottleSettings,
};

use crate::error::ConfigError;
use crate::semaphore::Semaphore;
use crate::validate;

/// The highest limit an adaptive limit takes: its semaphore's.
pub const MAX_ADAPTIVE_LIMIT: u32 = Semaphore::MAX_PERMITS;

/// An algorithm's bounds and initial limit: `1 ≤ min ≤ initial ≤ max ≤
/// MAX_ADAPTIVE_LIMIT`.
fn check_bounds(min: u32, max: u32, initial: u32) -> Result<(), ConfigError> {
    validate::within("min_limit", min, 1..=MAX_ADAPTIVE_LIMIT)?;
    validate::within("max_limit", max, min..=MAX_ADAPTIVE_LIMIT)?;
    validate::within("initial_limit", initial, min..=max)
}
