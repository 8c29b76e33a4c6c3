//! Hedging: when a call is slow, send a copy of it and take whichever
//! answers first, to cut the tail of the latency without a retry storm.
//!
//! [`HedgeLayer`] sends up to [`max_attempts`](HedgeBuilder::max_attempts)
//! attempts of a call (at most [`MAX_ATTEMPTS`], 5, as gRPC's design caps
//! them), in one of three [modes](HedgeMode) (Polly's):
//!
//! * [`Latency`](HedgeMode::Latency) (the default): the next attempt starts
//!   when the newest has not answered within the delay, while the earlier
//!   ones keep running;
//! * [`Parallel`](HedgeMode::Parallel): every attempt at once;
//! * [`Fallback`](HedgeMode::Fallback): the next attempt only when one
//!   fails.
//!
//! The delay is [fixed](HedgeBuilder::delay), [per attempt](HedgeBuilder::delay_fn)
//! from a closure, or [a percentile](HedgeBuilder::delay_percentile) of the
//! latencies recently observed (tower's `hedge` idea), with the fixed delay
//! until enough are known.
//!
//! # Who wins
//!
//! The first answer that the [`Classify`]er does not call a
//! [`Failure`](crate::classify::Outcome::Failure) wins: it is returned, and
//! every other attempt still running is dropped at once, which cancels
//! it (a circuit breaker below counts a dropped call
//! [`Ignored`](crate::classify::Outcome::Ignored), neither way). A failure
//! does not win:
//!
//! * a retryable one ([`is_retryable_failure`](Classify::is_retryable_failure),
//!   or a request that never left, or a per-attempt timeout below: gRPC
//!   A6's non-fatal status codes) starts the next attempt at once, or after
//!   the server's pushback (`Retry-After`, `grpc-retry-pushback-ms`) if it
//!   gave one; a pushback of "do not retry", or one above
//!   [`max_hint`](HedgeBuilder::max_hint), stops further attempts;
//! * any other failure is fatal: it ends the call with that answer, and
//!   the other attempts are cancelled (A6: a fatal status commits the
//!   call);
//! * a refusal by a palisade layer below (an open breaker, a full
//!   bulkhead, a rate limiter) stops further attempts, which would be
//!   refused too ([`SkipReason::Refused`]); the running ones go on, and if
//!   none is running the refusal is the answer.
//!
//! When every attempt has failed, the call returns **the first attempt's
//! failure**, as Polly returns the primary's (grpc-java returns the last;
//! the first is the one a caller without hedging would have seen, and it is
//! not the accident of which copy failed last).
//!
//! # Which calls are hedged
//!
//! Only requests the classifier says may be sent twice
//! ([`ClassifyRequest::is_retryable`]):
//! with [`HttpClassifier`](crate::classify::HttpClassifier), idempotent
//! methods, so a POST is sent once, even one whose connection was refused
//! (which the retry sends again: a hedge layer does not keep a copy of a
//! request it may not hedge). Requests are copied by the retry's
//! [`Replay`] strategies; a copy sent beside a running attempt must take
//! nothing from it ([`ReplaySource::alongside`]), so a streamed body can
//! be hedged only once it has been read whole (an empty body at once): a
//! hedge that comes due while the first attempt is still sending the body
//! waits for it, and is sent as soon as the body has been read
//! ([`ReplaySource::poll_alongside`]); a body over the replay limit cannot
//! be copied, and no hedge is sent for that call
//! ([`SkipReason::NotCopyable`]). Once no attempt runs (every one failed),
//! the next is made as the retry makes it, and may take the body over.
//!
//! Each attempt after the first spends from a [`RetryBudget`] (each call
//! deposits in it): hedges add at most its share of the load, and a budget
//! shared with a retry layer bounds retries and hedges together, as gRPC's
//! retry throttling and Finagle's `maxExtraLoad` intend. When the budget
//! is spent, or a hedge cannot be sent, the call goes on with the attempts
//! running ([`HedgeEvent::Skipped`]).
//!
//! # Where it goes in a stack
//!
//! In the retry's place: inside a total timeout (which bounds the whole
//! hedged call) and a fallback, outside the circuit breaker, the bulkhead
//! or rate limiter, and the per-attempt timeout, so that each attempt is
//! judged, limited and timed on its own. This is where Polly's
//! documentation and .NET's standard hedging handler
//! (`AddStandardHedgingHandler`: total timeout, then hedging, then per
//! endpoint a rate limiter, a circuit breaker and an attempt timeout) put
//! it. A retry and a hedge in one stack are rarely wanted: the hedge's
//! fallback mode is a retry without a backoff.
//!
//! # Services
//!
//! The inner service must be `Clone`. The first attempt goes to the
//! service this layer was polled ready on; the future keeps a clone and
//! drives its `poll_ready` only when a further attempt is due, so a
//! `Buffer` or a bulkhead below holds no place for a hedge that is never
//! sent (tower's `hedge` reserved one for every call: tower#472).
//!
//! # Cost
//!
//! A call whose first attempt answers at its first poll arms no timer and
//! allocates nothing: one clone of the request and one of the service, one
//! budget deposit, one `Arc` clone. A call still waiting after its first
//! poll arms one boxed timer (as the [timeout](crate::timeout) does); its
//! first hedge allocates one box that holds the futures of every attempt
//! after the first, and later hedges allocate nothing. With [`delay_percentile`](HedgeBuilder::delay_percentile),
//! each call also reads the clock when it starts and ends, to record its
//! latency.
//!
//! # Examples
//!
//! ```
//! use palisade::hedge::HedgeLayer;
//! use std::sync::Arc;
//! use std::sync::atomic::{AtomicU32, Ordering};
//! use std::time::Duration;
//! use tower::{Service, ServiceBuilder, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() {
//! let calls = Arc::new(AtomicU32::new(0));
//! let seen = calls.clone();
//! // The first copy takes a second; any later one 10 ms.
//! let replica = service_fn(move |key: &'static str| {
//!     let n = seen.fetch_add(1, Ordering::SeqCst);
//!     async move {
//!         let took = if n == 0 { 1000 } else { 10 };
//!         tokio::time::sleep(Duration::from_millis(took)).await;
//!         Ok::<_, palisade::BoxError>((key, n + 1))
//!     }
//! });
//!
//! let hedge = HedgeLayer::builder()
//!     .max_attempts(2)
//!     .delay(Duration::from_millis(50))
//!     .build()
//!     .unwrap();
//! let mut svc = ServiceBuilder::new().layer(hedge).service(replica);
//!
//! let started = tokio::time::Instant::now();
//! let answer = svc.ready().await.unwrap().call("user:42").await.unwrap();
//! assert_eq!(answer, ("user:42", 2), "the hedge, sent after 50 ms, won");
//! assert_eq!(started.elapsed(), Duration::from_millis(60));
//! # }
//! ```

mod event;
mod future;
mod layer;
mod settings;

pub use self::event::{HedgeEvent, HedgeTrigger, SkipReason};
pub use self::future::ResponseFuture;
pub use self::layer::{HedgeBuilder, HedgeLayer, HedgeMode, MAX_ATTEMPTS};
pub use self::settings::{HedgeSettings, PercentileSettings};
// Named here too, where a hedge's user looks: the budget and the replay
// strategies are the retry's, on the ground floor.
pub use crate::budget::RetryBudget;
pub use crate::replay::{Replay, ReplaySource};

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use tower::Service;

use self::future::Hedging;
use self::layer::Shared;
use crate::BoxError;
use crate::classify::{Classify, ClassifyRequest, DefaultClassifier};
use crate::replay::ByClone;

/// A service whose slow calls are hedged; see the [module docs](self).
pub struct Hedge<S, C = DefaultClassifier, K = ByClone> {
    inner: S,
    shared: Arc<Shared<C>>,
    replay: K,
}

impl<S, C, K> Hedge<S, C, K> {
    pub(crate) fn from_shared(inner: S, shared: Arc<Shared<C>>, replay: K) -> Self {
        Self {
            inner,
            shared,
            replay,
        }
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S: Clone, C, K: Clone> Clone for Hedge<S, C, K> {
    fn clone(&self) -> Self {
        Self::from_shared(self.inner.clone(), self.shared.clone(), self.replay.clone())
    }
}

impl<S: fmt::Debug, C, K> fmt::Debug for Hedge<S, C, K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hedge")
            .field("inner", &self.inner)
            .field("name", &self.shared.name)
            .field("max_attempts", &self.shared.max_attempts)
            .field("mode", &self.shared.mode)
            .finish()
    }
}

impl<S, Req, C, K> Service<Req> for Hedge<S, C, K>
where
    K: Replay<Req>,
    S: Service<K::Request> + Clone,
    S::Error: Into<BoxError> + 'static,
    C: Classify<S::Response, S::Error> + ClassifyRequest<Req>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future, S, C, K::Source>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    #[inline]
    fn call(&mut self, req: Req) -> Self::Future {
        let shared = &self.shared;
        if let Some(budget) = &shared.budget {
            budget.deposit();
        }
        if shared.max_attempts == 1 || !shared.classifier.is_retryable(&req) {
            return ResponseFuture::new(self.inner.call(self.replay.only(req)), None);
        }
        let (first, source) = self.replay.first(req, true);
        let Some(source) = source else {
            // A request that cannot be copied is sent once.
            return ResponseFuture::new(self.inner.call(first), None);
        };
        let started = shared.delay.recorder().map(|_| crate::clock::call_time());
        let future = self.inner.call(first);
        let hedging = Hedging::new(self.inner.clone(), source, Arc::clone(shared), started);
        ResponseFuture::new(future, Some(hedging))
    }
}
