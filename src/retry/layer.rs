use std::fmt;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use tower::Layer;

use super::Retry;
use crate::backoff::{Backoff, Jitter};
use crate::budget::RetryBudget;
use crate::classify::DefaultClassifier;
use crate::error::{ConfigError, ErrorKind, ErrorKinds};
use crate::event::Listeners;
use crate::replay::ByClone;
use crate::validate;

/// The validated settings every service of one retry layer shares.
pub(crate) struct Shared<C, B> {
    pub(crate) name: Arc<str>,
    pub(crate) max_attempts: u32,
    pub(crate) backoff: B,
    pub(crate) classifier: C,
    pub(crate) max_hint: Duration,
    pub(crate) shorten_long_hints: bool,
    pub(crate) budget: Option<RetryBudget>,
    pub(crate) deadline: Option<Duration>,
    /// The rejections of palisade's layers below that are sent again.
    pub(crate) retry_on: ErrorKinds,
    pub(crate) seed: Option<u64>,
    /// Numbers the logical calls, so that seeded sessions differ.
    pub(crate) sessions: AtomicU64,
    pub(crate) listeners: Listeners,
    /// Whether each attempt runs in a `palisade.attempt` span.
    pub(crate) attempt_spans: bool,
}

/// Applies a [`Retry`] to a service.
///
/// Every service the layer builds, and every clone, shares one
/// configuration and one [`RetryBudget`]. Made by [`RetryLayer::builder`];
/// see the [module docs](super).
pub struct RetryLayer<C = DefaultClassifier, B = Backoff, K = ByClone> {
    shared: Arc<Shared<C, B>>,
    /// How requests are copied: a strategy, not state (the built-in ones
    /// are `Copy`), kept by value beside the shared state so that the
    /// call's future need not name it.
    replay: K,
}

impl<C, B, K: Clone> Clone for RetryLayer<C, B, K> {
    fn clone(&self) -> Self {
        Self {
            shared: self.shared.clone(),
            replay: self.replay.clone(),
        }
    }
}

impl<C, B, K> fmt::Debug for RetryLayer<C, B, K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryLayer")
            .field("name", &self.shared.name)
            .field("max_attempts", &self.shared.max_attempts)
            .field("budget", &self.shared.budget)
            .field("deadline", &self.shared.deadline)
            .finish()
    }
}

impl RetryLayer {
    /// Starts configuring a retry.
    pub fn builder() -> RetryBuilder {
        RetryBuilder::new()
    }
}

impl<C, B, K> RetryLayer<C, B, K> {
    /// The retry budget, if there is one.
    pub fn budget(&self) -> Option<&RetryBudget> {
        self.shared.budget.as_ref()
    }
}

impl<S, C, B, K: Clone> Layer<S> for RetryLayer<C, B, K> {
    type Service = Retry<S, C, B, K>;

    fn layer(&self, inner: S) -> Self::Service {
        Retry::from_shared(inner, self.shared.clone(), self.replay.clone())
    }
}

/// The most attempts a retry may make.
pub const MAX_ATTEMPTS: u32 = 100;

/// Configures a [`RetryLayer`]; [`build`](Self::build) validates it.
///
/// # Default
///
/// | setting | default |
/// |---|---|
/// | [`name`](Self::name) | `"retry"` |
/// | [`max_attempts`](Self::max_attempts) | 3, counting the first |
/// | [`backoff`](Self::backoff) | exponential from 100 ms, factor 2, capped at 10 s, full jitter |
/// | [`classifier`](Self::classifier) | [`DefaultClassifier`]: retry every `Err` |
/// | [`requests`](Self::requests) | [`ByClone`]: the request is cloned |
/// | [`max_hint`](Self::max_hint) | 30 s: a longer server hint ends the retries |
/// | [`shorten_long_hints`](Self::shorten_long_hints) | `false` |
/// | [`budget`](Self::budget) | [`RetryBudget::default`]: 20% of the last 10 s of requests, plus 10 retries a second |
/// | [`deadline`](Self::deadline) | none |
/// | [`retry_on`](Self::retry_on) | [`Elapsed`](ErrorKind::Elapsed): an attempt cut off by a timeout below is retried; an open breaker's or a full bulkhead's refusal is returned at once |
/// | `attempt_spans` (feature `tracing`) | `false`: no span per attempt |
#[must_use = "a builder does nothing until `build` is called"]
pub struct RetryBuilder<C = DefaultClassifier, B = Backoff, K = ByClone> {
    settings: Settings,
    pub(super) backoff: B,
    classifier: C,
    replay: K,
}

/// The settings that do not change the builder's type.
struct Settings {
    name: Arc<str>,
    max_attempts: u32,
    max_hint: Duration,
    shorten_long_hints: bool,
    budget: Option<RetryBudget>,
    deadline: Option<Duration>,
    retry_on: ErrorKinds,
    seed: Option<u64>,
    listeners: Listeners,
    attempt_spans: bool,
    /// A setting [`settings`](RetryBuilder::settings) could not apply.
    refused: Option<ConfigError>,
}

impl<C, B, K> fmt::Debug for RetryBuilder<C, B, K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = &self.settings;
        f.debug_struct("RetryBuilder")
            .field("name", &s.name)
            .field("max_attempts", &s.max_attempts)
            .field("max_hint", &s.max_hint)
            .field("budget", &s.budget)
            .field("deadline", &s.deadline)
            .finish_non_exhaustive()
    }
}

impl Default for RetryBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl RetryBuilder {
    /// A builder with the defaults above.
    pub fn new() -> Self {
        Self {
            settings: Settings {
                name: Arc::from("retry"),
                max_attempts: 3,
                max_hint: Duration::from_secs(30),
                shorten_long_hints: false,
                budget: Some(RetryBudget::default()),
                deadline: None,
                retry_on: ErrorKinds::NONE.with(ErrorKind::Elapsed),
                seed: None,
                listeners: Listeners::default(),
                attempt_spans: false,
                refused: None,
            },
            backoff: Backoff::exponential(Duration::from_millis(100))
                .max_delay(Duration::from_secs(10))
                .jitter(Jitter::Full)
                .build()
                .expect("the default backoff is valid"),
            classifier: DefaultClassifier,
            replay: ByClone,
        }
    }
}

impl<C, B, K> RetryBuilder<C, B, K> {
    crate::event::name_and_listeners!(
        "retry layer",
        "The name carried by this layer's events.",
        settings
    );

    /// At most this many attempts per call, the first included (1 to 100;
    /// 1 means never retry).
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.settings.max_attempts = attempts;
        self
    }

    /// The delays between attempts: a [`Backoff`] or any
    /// [`MakeDelays`](crate::backoff::MakeDelays). Each call draws a fresh
    /// sequence; a sequence that ends stops the retrying.
    pub fn backoff<B2>(self, backoff: B2) -> RetryBuilder<C, B2, K> {
        RetryBuilder {
            settings: self.settings,
            backoff,
            classifier: self.classifier,
            replay: self.replay,
        }
    }

    /// Decides which results are retried (a [`Failure`](crate::classify::Outcome::Failure)),
    /// which requests may be retried at all, and reads server delay hints.
    pub fn classifier<C2>(self, classifier: C2) -> RetryBuilder<C2, B, K> {
        RetryBuilder {
            settings: self.settings,
            backoff: self.backoff,
            classifier,
            replay: self.replay,
        }
    }

    /// How requests are copied for retries: [`ByClone`],
    /// [`ReqwestRequests`](super::ReqwestRequests),
    /// [`ReplayBodies`](super::ReplayBodies), or your own
    /// [`Replay`](super::Replay).
    pub fn requests<K2>(self, replay: K2) -> RetryBuilder<C, B, K2> {
        RetryBuilder {
            settings: self.settings,
            backoff: self.backoff,
            classifier: self.classifier,
            replay,
        }
    }

    /// A server's delay hint (`Retry-After`, `grpc-retry-pushback-ms`) up to
    /// this long replaces the backoff's delay. A longer one ends the
    /// retries, and the caller gets the server's answer: the server asked
    /// not to be called again sooner (RFC 9110 §10.2.3; gRPC's pushback
    /// says the same), and coming back after a shorter backoff would be
    /// rude. [`shorten_long_hints`](Self::shorten_long_hints) waits the cap
    /// instead. The same holds for the `retry_after` of an open breaker
    /// or a rate limiter below, when [`retry_on`](Self::retry_on) holds
    /// [`CircuitOpen`](ErrorKind::CircuitOpen) or
    /// [`RateLimited`](ErrorKind::RateLimited).
    pub fn max_hint(mut self, cap: Duration) -> Self {
        self.settings.max_hint = cap;
        self
    }

    /// The retry budget; share one between layers by cloning it.
    pub fn budget(mut self, budget: RetryBudget) -> Self {
        self.settings.budget = Some(budget);
        self
    }

    /// Whether a hint above [`max_hint`](Self::max_hint) is waited for as
    /// long as the cap allows, rather than ending the retries. Default:
    /// `false`. Turn it on for a server whose hints are known to be
    /// generous, knowing that the client comes back before it was asked to.
    pub fn shorten_long_hints(mut self, yes: bool) -> Self {
        self.settings.shorten_long_hints = yes;
        self
    }

    /// Retries are limited only by [`max_attempts`](Self::max_attempts).
    /// Think twice: without a budget, an outage multiplies the load on the
    /// failing service by the number of attempts.
    pub fn no_budget(mut self) -> Self {
        self.settings.budget = None;
        self
    }

    /// A bound on the whole call, backoffs included: no retry starts whose
    /// backoff would end later than this after the call began, and if the
    /// service is still not ready for the next attempt when it passes (a
    /// full bulkhead below, say), the call fails with
    /// [`Elapsed`](crate::error::Elapsed). (The attempt itself is bounded
    /// by a timeout layer, not by this.)
    pub fn deadline(mut self, deadline: Duration) -> Self {
        self.settings.deadline = Some(deadline);
        self
    }

    /// The rejections by palisade's layers below that are retried; by
    /// default only [`Elapsed`](ErrorKind::Elapsed) (a per-attempt timeout
    /// below). Errors of the inner service are judged by the
    /// [`classifier`](Self::classifier), not by this.
    ///
    /// * [`Elapsed`](ErrorKind::Elapsed): the attempt may have reached the
    ///   server, so a request that may not be sent twice is not retried.
    /// * [`CircuitOpen`](ErrorKind::CircuitOpen): retried after the
    ///   backoff's delay or the breaker's own `retry_after`, whichever is
    ///   longer. A `retry_after` above [`max_hint`](Self::max_hint) (a
    ///   breaker held open by hand has no end) ends the retries, as a
    ///   server's hint would. Not by default: the breaker is open so that
    ///   nobody calls.
    /// * [`BulkheadFull`](ErrorKind::BulkheadFull): retried after the
    ///   backoff's delay.
    /// * [`RateLimited`](ErrorKind::RateLimited): as `CircuitOpen`, retried
    ///   after the backoff's delay or the limiter's `retry_after`,
    ///   whichever is longer; a call costing more than the limiter's burst
    ///   (whose `retry_after` has no end) ends the retries.
    /// * [`TooManyKeys`](ErrorKind::TooManyKeys): a keyed layer below had
    ///   no room for the request's key; retried after the backoff's delay.
    /// * [`ConcurrencyLimited`](ErrorKind::ConcurrencyLimited): an adaptive
    ///   limit below was reached; retried after the backoff's delay.
    /// * [`Throttled`](ErrorKind::Throttled): a throttle below rejected
    ///   the call locally; retried after the backoff's delay. Think twice:
    ///   the throttle turns calls away because the service is failing, and
    ///   a retry spends the budget on a call that is likely turned away
    ///   again.
    ///
    /// A refusal never reached the server, so it is retried whatever the
    /// request. `build()` refuses [`Inner`](ErrorKind::Inner).
    ///
    /// ```
    /// use palisade::error::{ErrorKind, ErrorKinds};
    /// use palisade::retry::RetryLayer;
    ///
    /// let retry = RetryLayer::builder()
    ///     .retry_on([ErrorKind::Elapsed, ErrorKind::BulkheadFull])
    ///     .build()
    ///     .unwrap();
    /// // Nothing of palisade's: only what the classifier calls a failure.
    /// let strict = RetryLayer::builder().retry_on(ErrorKinds::NONE).build().unwrap();
    /// # let _ = (retry, strict);
    /// ```
    pub fn retry_on(mut self, kinds: impl Into<ErrorKinds>) -> Self {
        self.settings.retry_on = kinds.into();
        self
    }

    /// Runs each attempt in a `tracing` span (feature `tracing`), so that
    /// what the inner service traces (a `tracing-opentelemetry` layer
    /// turns those spans into OpenTelemetry's) sits under the attempt that
    /// did it. Default: `false`.
    ///
    /// The span is `palisade.attempt`, at level `INFO` with target
    /// `palisade`, with the field `palisade.layer.name` (this layer's
    /// [`name`](Self::name)), and for HTTP requests OpenTelemetry's
    /// `http.request.resend_count`: absent on the first send, 1 on the
    /// first retry, and so on; for other requests `palisade.attempt.number`,
    /// from 1. A request is HTTP when its [`ReplaySource`](crate::replay::ReplaySource)
    /// says so ([`HTTP`](crate::replay::ReplaySource::HTTP)): with
    /// [`ReqwestRequests`](super::ReqwestRequests) and
    /// [`ReplayBodies`](super::ReplayBodies), not with
    /// [`ByClone`]. The span is entered while the inner service's `call`
    /// runs and while the attempt's future is polled, and it ends when the
    /// attempt ends (so its duration is the attempt's, backoff excluded).
    ///
    /// # Cost
    ///
    /// Opt-in because it is not free even when nothing records it: with it
    /// on and no subscriber interested, about 110 instructions more per
    /// call whose first attempt succeeds (305 → 415 under valgrind,
    /// `scripts/instructions.sh retry` with the `tracing` feature and the
    /// setting on), and no allocation (`tests/zero_alloc.rs`). Off, as by
    /// default, it costs nothing measurable (305 with and without the
    /// feature). A subscriber that records spans then does its own work
    /// per attempt; filtering the `palisade` target below `INFO` turns
    /// them off at run time.
    ///
    /// ```
    /// use palisade::retry::RetryLayer;
    ///
    /// let retry = RetryLayer::builder().attempt_spans(true).build().unwrap();
    /// # let _ = retry;
    /// ```
    #[cfg(feature = "tracing")]
    pub fn attempt_spans(mut self, yes: bool) -> Self {
        self.settings.attempt_spans = yes;
        self
    }

    /// Records a setting that [`settings`](Self::settings) could not
    /// apply; `build` returns the first such error before any other check.
    pub(crate) fn refuse(mut self, error: crate::error::ConfigError) -> Self {
        self.settings.refused.get_or_insert(error);
        self
    }

    /// Seeds the jitter: the `n`-th call through the layer always draws the
    /// same delays. Without a seed, every call draws fresh randomness.
    pub fn seed(mut self, seed: u64) -> Self {
        self.settings.seed = Some(seed);
        self
    }

    /// What a hedge put in the retry's place keeps of it: the classifier,
    /// the request copying and the budget.
    pub(crate) fn into_hedge_parts(self) -> (C, K, Option<RetryBudget>) {
        (self.classifier, self.replay, self.settings.budget)
    }

    /// Validates the configuration and makes the layer.
    ///
    /// # Errors
    /// Zero or more than 100 attempts, a zero or unrepresentable hint cap or
    /// deadline. (A [`Backoff`] and a [`RetryBudget`] were validated when
    /// they were built.)
    pub fn build(self) -> Result<RetryLayer<C, B, K>, ConfigError> {
        let s = self.settings;
        if let Some(refused) = s.refused {
            return Err(refused);
        }
        validate::within("max_attempts", s.max_attempts, 1..=MAX_ATTEMPTS)?;
        if s.retry_on.contains(ErrorKind::Inner) {
            return Err(ConfigError::new(
                "retry_on",
                "Inner is not a refusal by a layer below; the classifier judges the inner service's errors",
            ));
        }
        validate::positive("max_hint", s.max_hint)?;
        if let Some(deadline) = s.deadline {
            validate::positive("deadline", deadline)?;
        }
        Ok(RetryLayer {
            shared: Arc::new(Shared {
                name: s.name,
                max_attempts: s.max_attempts,
                backoff: self.backoff,
                classifier: self.classifier,
                max_hint: s.max_hint,
                shorten_long_hints: s.shorten_long_hints,
                budget: s.budget,
                deadline: s.deadline,
                retry_on: s.retry_on,
                seed: s.seed,
                sessions: AtomicU64::new(0),
                listeners: s.listeners,
                attempt_spans: s.attempt_spans,
            }),
            replay: self.replay,
        })
    }
}
