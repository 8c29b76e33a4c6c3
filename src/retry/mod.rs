//! Retry: send a failed call again, after a jittered backoff, within a
//! budget.
//!
//! [`RetryLayer`] sends a call again when its result is a
//! [`Failure`](crate::classify::Outcome::Failure) for the layer's
//! [`Classify`]er, up to
//! [`max_attempts`](RetryBuilder::max_attempts) attempts counting the first.
//! Between attempts it waits:
//!
//! * the server's hint, if the classifier reads one (`Retry-After`,
//!   `grpc-retry-pushback-ms`) and it is within [`max_hint`](RetryBuilder::max_hint)
//!   (a longer hint ends the retries, as "do not retry" does, unless
//!   [`shorten_long_hints`](RetryBuilder::shorten_long_hints) waits the cap);
//! * otherwise the next delay of the [`backoff`](RetryBuilder::backoff), drawn
//!   fresh for each call (or replayed from a [`seed`](RetryBuilder::seed)).
//!
//! It does not retry when (and each time it returns a failure without a
//! further attempt, a [`RetryEvent::GaveUp`] says why, also for a call that
//! could never be retried: one attempt allowed, or a request that cannot be
//! copied):
//!
//! * the classifier does not retry that failure
//!   ([`is_retryable_failure`](Classify::is_retryable_failure); gRPC: only
//!   Unavailable by default, as proposal A6 says);
//! * the classifier says the request may not be sent twice (the HTTP
//!   classifier: non-idempotent methods) and it may have reached the
//!   server, or the request cannot be copied (see [`Replay`]): such a call's
//!   result is returned. A request that never left the client (its
//!   connection was refused; [`is_not_sent`](Classify::is_not_sent)) is
//!   sent again whatever its method, as are calls refused by an open
//!   breaker or a full bulkhead below when those are retried;
//! * the [`RetryBudget`] is spent: retries are at most a share of recent
//!   requests plus a small reserve, so that an outage is not multiplied by
//!   the number of attempts (see [When the budget is spent](#when-the-budget-is-spent));
//! * the next attempt would start past the [`deadline`](RetryBuilder::deadline);
//! * the failure is a rejection the layer is set not to retry: by default
//!   [`CircuitOpen`](crate::error::CircuitOpen),
//!   [`BulkheadFull`](crate::error::BulkheadFull) and
//!   [`RateLimited`](crate::error::RateLimited) are returned at once, and
//!   [`Elapsed`](crate::error::Elapsed) (a per-attempt timeout below) is
//!   retried.
//!
//! # When the budget is spent
//!
//! A call whose retry the budget refuses gets its last attempt's answer,
//! exactly as the inner service gave it: the `Ok` response (a 503, say) or
//! the `Err`. There is no error of the retry's own for it: the server's
//! answer tells the caller more (its status, its `Retry-After`) than "no
//! budget" would, and a fallback or a caller that judges it sees what it
//! would have seen without the retry. Why no retry followed is told to the
//! listeners: a [`RetryEvent::BudgetExhausted`] event, then
//! [`RetryEvent::GaveUp`] with [`GiveUpReason::BudgetExhausted`] (counted by
//! `MetricsEvents` and logged by `TracingEvents` under that reason).
//!
//! # Requests
//!
//! The request is copied through a [`Replay`] strategy: [`ByClone`] for any
//! `Clone` request (the default), [`ReqwestRequests`] for `reqwest::Request`
//! (`try_clone`; feature `reqwest`), [`ReplayBodies`] for `http::Request<B>`
//! with a streamed body, which it records up to a limit and replays as
//! hyper and tonic send bodies: an attempt that did not read its body, or
//! read only part of it, leaves the rest to the next (feature `http`);
//! [`TonicBodies`] (feature `tonic`) for a tonic client over a `Channel`:
//! the same recording, each copy an `http::Request<tonic::body::Body>`.
//!
//! # Streamed answers
//!
//! The retry judges the response head. Once a head has reached the caller
//! the call is committed (gRPC's retry design, A6): a failure found later,
//! such as a gRPC status in the trailers of a stream, is counted by a
//! circuit breaker below (see [`Settle`](crate::classify::Settle)) but not
//! retried, since the caller may already have used what the stream sent.
//!
//! # Services
//!
//! The inner service must be `Clone`. As in tower's own retry, the first
//! attempt goes to the service this layer was polled ready on; the future
//! keeps a clone, and drives its `poll_ready` before every further attempt.
//!
//! # Cost
//!
//! When the first attempt succeeds: one clone of the request (with
//! `max_attempts(1)`, none) and one of the service, one `Arc` clone, one
//! budget deposit (a clock read, since each request counts from when it
//! came, which the budget's formula needs; counted in the thread's own
//! batch, so nothing another thread reads is written: see the budget's
//! [Accuracy](RetryBudget#accuracy)), no timer, no allocation of
//! palisade's own.
//!
//! # Examples
//!
//! ```
//! use palisade::backoff::{Backoff, Jitter};
//! use palisade::error::BoxError;
//! use palisade::retry::RetryLayer;
//! use std::sync::atomic::{AtomicU32, Ordering};
//! use std::sync::Arc;
//! use std::time::Duration;
//! use tower::{Service, ServiceBuilder, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() {
//! let calls = Arc::new(AtomicU32::new(0));
//! let seen = calls.clone();
//! // Fails twice, then answers.
//! let flaky = service_fn(move |req: &'static str| {
//!     let n = seen.fetch_add(1, Ordering::SeqCst);
//!     async move {
//!         if n < 2 { Err::<_, BoxError>("unavailable".into()) } else { Ok(req) }
//!     }
//! });
//!
//! let retry = RetryLayer::builder()
//!     .max_attempts(4)
//!     .backoff(
//!         Backoff::exponential(Duration::from_millis(50))
//!             .max_delay(Duration::from_secs(1))
//!             .jitter(Jitter::Full)
//!             .build()
//!             .unwrap(),
//!     )
//!     .build()
//!     .unwrap();
//! let mut svc = ServiceBuilder::new().layer(retry).service(flaky);
//!
//! assert_eq!(svc.ready().await.unwrap().call("hello").await.unwrap(), "hello");
//! assert_eq!(calls.load(Ordering::SeqCst), 3);
//! # }
//! ```

mod event;
mod future;
mod layer;
mod settings;
mod span;

pub use self::event::{GiveUpReason, RetryEvent, RetryReason};
pub use self::future::ResponseFuture;
pub use self::layer::{MAX_ATTEMPTS, RetryBuilder, RetryLayer};
pub use self::settings::RetrySettings;
// The budget and the replay strategies live on the ground floor, where
// hedging shares them; they are named here too, where a retry's user looks.
pub use crate::budget::{BudgetSettings, RetryBudget};
#[cfg(feature = "reqwest")]
pub use crate::replay::ReqwestRequests;
pub use crate::replay::{ByClone, Cloned, Replay, ReplaySource};
#[cfg(feature = "http")]
pub use crate::replay::{DEFAULT_REPLAY_LIMIT, HttpSource, Recording, ReplayBodies, ReplayBody};
#[cfg(feature = "grpc")]
pub use crate::replay::{GRPC_PREVIOUS_RPC_ATTEMPTS, PreviousAttempts, PreviousAttemptsSource};
#[cfg(feature = "tonic")]
pub use crate::replay::{TonicBodies, TonicSource};

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use tower::Service;

use self::future::{After, Retrying};
use self::layer::Shared;
use crate::BoxError;
use crate::backoff::{Backoff, MakeDelays};
use crate::classify::{Classify, ClassifyRequest, DefaultClassifier};

/// A service whose failed calls are retried; see the [module docs](self).
pub struct Retry<S, C = DefaultClassifier, B = Backoff, K = ByClone> {
    inner: S,
    shared: Arc<Shared<C, B>>,
    replay: K,
}

impl<S, C, B, K> Retry<S, C, B, K> {
    pub(crate) fn from_shared(inner: S, shared: Arc<Shared<C, B>>, replay: K) -> Self {
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

impl<S: Clone, C, B, K: Clone> Clone for Retry<S, C, B, K> {
    fn clone(&self) -> Self {
        Self::from_shared(self.inner.clone(), self.shared.clone(), self.replay.clone())
    }
}

impl<S: fmt::Debug, C, B, K> fmt::Debug for Retry<S, C, B, K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Retry")
            .field("inner", &self.inner)
            .field("name", &self.shared.name)
            .field("max_attempts", &self.shared.max_attempts)
            .finish()
    }
}

impl<S, Req, C, B, K> Service<Req> for Retry<S, C, B, K>
where
    K: Replay<Req>,
    S: Service<K::Request> + Clone,
    S::Error: Into<BoxError> + 'static,
    C: Classify<S::Response, S::Error> + ClassifyRequest<Req>,
    B: MakeDelays,
    B::Delays: Send + 'static,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future, S, C, B, K::Source>;

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
        let (first, source, retryable) = if shared.max_attempts > 1 {
            let retryable = shared.classifier.is_retryable(&req);
            let (first, source) = self.replay.first(req, retryable);
            (first, source, retryable)
        } else {
            (self.replay.only(req), None, false)
        };
        let span = span::attempt_span(shared.attempt_spans, &shared.name, 1, <K::Source>::HTTP);
        let inner = &mut self.inner;
        let future = span::in_scope(&span, || {
            shared
                .listeners
                .emit(&shared.name, || RetryEvent::Attempt { attempt: 1 });
            inner.call(first)
        });
        let retrying = source.map(|source| Retrying {
            // The clone waits for the next attempt; `poll_ready` is driven on
            // it before each one.
            service: self.inner.clone(),
            source,
            shared: Arc::clone(shared),
            started: shared.deadline.is_some().then(crate::clock::call_time),
            delays: None,
        });
        // A call that cannot be retried still says why its failure is
        // returned, when someone listens, and tells a budget that learns
        // from answers how it ended.
        let after = match retrying {
            Some(retrying) => After::Retrying(retrying),
            None if !shared.listeners.is_empty()
                || shared
                    .budget
                    .as_ref()
                    .is_some_and(RetryBudget::counts_answers) =>
            {
                After::Watching(Arc::clone(shared))
            }
            None => After::Nothing,
        };
        ResponseFuture::new(future, span, retryable, after)
    }
}
