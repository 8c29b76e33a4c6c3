use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use tower::Layer;

use super::Hedge;
use crate::budget::RetryBudget;
use crate::classify::DefaultClassifier;
use crate::clock::Epoch;
use crate::error::ConfigError;
use crate::event::Listeners;
use crate::replay::ByClone;
use crate::validate;
use crate::window::LatencyWindow;

/// The most attempts a hedge may make, the first included: 5, gRPC's
/// client-side cap on `maxAttempts` (proposal A6). A6 gives the cap as a
/// safety bound: a service config reaches clients from outside (through
/// DNS), and must not be able to make them multiply their load at will.
/// Our settings come from code or a file, but the bound serves the same
/// end: each attempt is a full copy of the request sent while the others
/// still run, so a slow call costs at most five times its load (and the
/// budget bounds how often that happens). Polly allows up to 10; each copy
/// past the first few cuts the tail less than the one before, and adds as
/// much load.
pub const MAX_ATTEMPTS: u32 = 5;

/// When a hedge starts the attempts after the first.
///
/// The names and meanings are Polly's (`HedgingStrategyOptions`, whose
/// `Delay` selects them: positive, zero, infinite).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
#[non_exhaustive]
pub enum HedgeMode {
    /// A new attempt when the newest one has not answered within the
    /// [delay](HedgeBuilder::delay), and at once when one fails with a
    /// retryable failure. The default.
    #[default]
    Latency,
    /// Every attempt at once: the fastest answer wins, for the load of
    /// `max_attempts` calls each time. For the calls whose latency matters
    /// more than the load.
    Parallel,
    /// The next attempt only when one fails with a retryable failure: a
    /// retry without a backoff, sent at once, which spends the hedge's
    /// budget.
    Fallback,
}

impl HedgeMode {
    /// The mode's name in snake case: `latency`, `parallel`, `fallback`
    /// (for a label or a log line of your own; `Debug` prints the variant).
    pub fn as_str(self) -> &'static str {
        match self {
            HedgeMode::Latency => "latency",
            HedgeMode::Parallel => "parallel",
            HedgeMode::Fallback => "fallback",
        }
    }
}

/// Where the latency mode's delay comes from.
pub(crate) enum DelaySource {
    /// The same delay before every attempt.
    Fixed(Duration),
    /// A delay for each attempt, from its number (2 for the first hedge).
    PerAttempt(Arc<dyn Fn(u32) -> Duration + Send + Sync>),
    /// A quantile of the latencies of recent successful attempts, once
    /// there are enough of them; the fixed delay until then.
    Quantile {
        quantile: f64,
        min_samples: u64,
        until_then: Duration,
        /// Boxed: its running totals are 208 counters.
        window: Box<LatencyWindow>,
        epoch: Epoch,
    },
}

impl fmt::Debug for DelaySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DelaySource::Fixed(delay) => f.debug_tuple("Fixed").field(delay).finish(),
            DelaySource::PerAttempt(_) => f.write_str("PerAttempt(..)"),
            DelaySource::Quantile {
                quantile,
                min_samples,
                until_then,
                ..
            } => f
                .debug_struct("Percentile")
                .field("percentile", &(quantile * 100.0))
                .field("min_samples", min_samples)
                .field("until_then", until_then)
                .finish(),
        }
    }
}

impl DelaySource {
    /// The delay before attempt number `attempt` (from 2).
    pub(crate) fn delay(&self, attempt: u32) -> Duration {
        match self {
            DelaySource::Fixed(delay) => *delay,
            DelaySource::PerAttempt(delay) => delay(attempt),
            DelaySource::Quantile {
                quantile,
                min_samples,
                until_then,
                window,
                epoch,
            } => window
                .quantile(*quantile, *min_samples, epoch.nanos_now())
                .unwrap_or(*until_then),
        }
    }

    /// Where latencies are recorded, if the delay is read from them.
    pub(crate) fn recorder(&self) -> Option<(&LatencyWindow, &Epoch)> {
        match self {
            DelaySource::Quantile { window, epoch, .. } => Some((window, epoch)),
            _ => None,
        }
    }
}

/// The validated settings every service of one hedge layer shares.
pub(crate) struct Shared<C> {
    pub(crate) name: Arc<str>,
    pub(crate) max_attempts: u32,
    pub(crate) mode: HedgeMode,
    pub(crate) delay: DelaySource,
    pub(crate) classifier: C,
    pub(crate) max_hint: Duration,
    pub(crate) budget: Option<RetryBudget>,
    pub(crate) listeners: Listeners,
}

/// Applies a [`Hedge`] to a service.
///
/// Every service the layer builds, and every clone, shares one
/// configuration, one [`RetryBudget`] and, with
/// [`delay_percentile`](HedgeBuilder::delay_percentile), one record of
/// recent latencies. Made by [`HedgeLayer::builder`]; see the
/// [module docs](super).
pub struct HedgeLayer<C = DefaultClassifier, K = ByClone> {
    shared: Arc<Shared<C>>,
    replay: K,
}

impl<C, K: Clone> Clone for HedgeLayer<C, K> {
    fn clone(&self) -> Self {
        Self {
            shared: self.shared.clone(),
            replay: self.replay.clone(),
        }
    }
}

impl<C, K> fmt::Debug for HedgeLayer<C, K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HedgeLayer")
            .field("name", &self.shared.name)
            .field("max_attempts", &self.shared.max_attempts)
            .field("mode", &self.shared.mode)
            .field("delay", &self.shared.delay)
            .field("budget", &self.shared.budget)
            .finish()
    }
}

impl HedgeLayer {
    /// Starts configuring a hedge.
    pub fn builder() -> HedgeBuilder {
        HedgeBuilder::new()
    }
}

impl<C, K> HedgeLayer<C, K> {
    /// The budget hedges spend from, if there is one.
    pub fn budget(&self) -> Option<&RetryBudget> {
        self.shared.budget.as_ref()
    }
}

impl<S, C, K: Clone> Layer<S> for HedgeLayer<C, K> {
    type Service = Hedge<S, C, K>;

    fn layer(&self, inner: S) -> Self::Service {
        Hedge::from_shared(inner, self.shared.clone(), self.replay.clone())
    }
}

/// Configures a [`HedgeLayer`]; [`build`](Self::build) validates it.
///
/// # Default
///
/// | setting | default |
/// |---|---|
/// | [`name`](Self::name) | `"hedge"` |
/// | [`max_attempts`](Self::max_attempts) | 2, counting the first (one hedge) |
/// | [`mode`](Self::mode) | [`HedgeMode::Latency`] |
/// | [`delay`](Self::delay) | 2 s (Polly's default) |
/// | [`classifier`](Self::classifier) | [`DefaultClassifier`]: every `Err` is a failure worth another attempt |
/// | [`requests`](Self::requests) | [`ByClone`]: the request is cloned |
/// | [`max_hint`](Self::max_hint) | 30 s: a longer server pushback stops the hedging |
/// | [`budget`](Self::budget) | [`RetryBudget::default`]: 20% of the last 10 s of requests, plus 10 a second |
#[must_use = "a builder does nothing until `build` is called"]
pub struct HedgeBuilder<C = DefaultClassifier, K = ByClone> {
    settings: Settings,
    classifier: C,
    replay: K,
}

/// The delay as configured, validated by `build`.
enum DelaySetting {
    Fixed,
    PerAttempt(Arc<dyn Fn(u32) -> Duration + Send + Sync>),
    Percentile {
        percent: f64,
        min_samples: u64,
        window: Duration,
    },
}

/// The settings that do not change the builder's type.
struct Settings {
    name: Arc<str>,
    max_attempts: u32,
    mode: HedgeMode,
    delay: Duration,
    delay_setting: DelaySetting,
    max_hint: Duration,
    budget: Option<RetryBudget>,
    listeners: Listeners,
    /// A setting [`settings`](HedgeBuilder::settings) could not apply.
    refused: Option<ConfigError>,
}

impl<C, K> fmt::Debug for HedgeBuilder<C, K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = &self.settings;
        f.debug_struct("HedgeBuilder")
            .field("name", &s.name)
            .field("max_attempts", &s.max_attempts)
            .field("mode", &s.mode)
            .field("delay", &s.delay)
            .field("budget", &s.budget)
            .finish_non_exhaustive()
    }
}

impl Default for HedgeBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl HedgeBuilder {
    /// A builder with the defaults above.
    pub fn new() -> Self {
        Self {
            settings: Settings {
                name: Arc::from("hedge"),
                max_attempts: 2,
                mode: HedgeMode::Latency,
                delay: Duration::from_secs(2),
                delay_setting: DelaySetting::Fixed,
                max_hint: Duration::from_secs(30),
                budget: Some(RetryBudget::default()),
                listeners: Listeners::default(),
                refused: None,
            },
            classifier: DefaultClassifier,
            replay: ByClone,
        }
    }
}

impl<C, K> HedgeBuilder<C, K> {
    /// Records a setting that [`settings`](Self::settings) could not
    /// apply; `build` returns the first such error before any other check.
    pub(crate) fn refuse(mut self, error: ConfigError) -> Self {
        self.settings.refused.get_or_insert(error);
        self
    }

    crate::event::name_and_listeners!(
        "hedge layer",
        "The name carried by this layer's events.",
        settings
    );

    /// At most this many attempts per call, the first included: 1 to
    /// [`MAX_ATTEMPTS`] (5). 1 sends every request once.
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.settings.max_attempts = attempts;
        self
    }

    /// When the attempts after the first start; see [`HedgeMode`].
    pub fn mode(mut self, mode: HedgeMode) -> Self {
        self.settings.mode = mode;
        self
    }

    /// In [`HedgeMode::Latency`], how long the newest attempt has to answer
    /// before the next one starts: the same delay for every attempt. With
    /// [`delay_percentile`](Self::delay_percentile), the delay used until
    /// enough latencies are known. Above zero.
    ///
    /// A further attempt's delay counts from its start; the first's from
    /// the call with `delay_percentile` (which reads the clock then, to
    /// record the latency), otherwise from the first poll of the call's
    /// future that finds it still running (so that a call answered at once
    /// reads no clock), in practice the same instant.
    pub fn delay(mut self, delay: Duration) -> Self {
        self.settings.delay = delay;
        if let DelaySetting::PerAttempt(_) = self.settings.delay_setting {
            self.settings.delay_setting = DelaySetting::Fixed;
        }
        self
    }

    /// In [`HedgeMode::Latency`], the delay before each attempt from its
    /// number: `2` for the first hedge, up to
    /// [`max_attempts`](Self::max_attempts) (Polly's `DelayGenerator`).
    /// It is asked for attempt `n`'s delay when attempt `n - 1` has
    /// started (for the first hedge, when the first attempt is still
    /// running after its first poll), on the call's task, whether or not
    /// the hedge then comes due; the delay counts from that attempt's
    /// start. Any duration is taken as it is: zero starts the attempt at
    /// once.
    pub fn delay_fn(mut self, delay: impl Fn(u32) -> Duration + Send + Sync + 'static) -> Self {
        self.settings.delay_setting = DelaySetting::PerAttempt(Arc::new(delay));
        self
    }

    /// In [`HedgeMode::Latency`], the delay is the `percent`-th percentile
    /// (in (0, 100): `95.0` is p95) of the latencies of the attempts that
    /// succeeded over the last `window`, once at least `min_samples` were
    /// seen; until then, [`delay`](Self::delay). tower's `hedge` idea,
    /// with a sliding window (in five steps) rather than a rotating pair.
    ///
    /// Only successful attempts count (a failure that comes back fast would
    /// otherwise lower the delay, and hedge more, during an outage), and
    /// an attempt cancelled because another won does not: its latency is
    /// unknown. The percentile is read from a histogram with eight classes
    /// per power of two, so it is the upper edge of its class, at most
    /// 12.5% above the true value; it is read again at most once per fifth
    /// of the window. The histogram takes about 10 KB per layer.
    pub fn delay_percentile(mut self, percent: f64, min_samples: u64, window: Duration) -> Self {
        self.settings.delay_setting = DelaySetting::Percentile {
            percent,
            min_samples,
            window,
        };
        self
    }

    /// Decides which answers win (not a [`Failure`](crate::classify::Outcome::Failure)),
    /// which failures start the next attempt at once (a retryable one)
    /// rather than end the call (any other), which requests may be hedged
    /// at all ([`ClassifyRequest::is_retryable`](crate::classify::ClassifyRequest::is_retryable):
    /// the HTTP classifier hedges only idempotent methods), and reads the
    /// server's pushback.
    pub fn classifier<C2>(self, classifier: C2) -> HedgeBuilder<C2, K> {
        HedgeBuilder {
            settings: self.settings,
            classifier,
            replay: self.replay,
        }
    }

    /// How requests are copied for each attempt: the retry's strategies,
    /// [`ByClone`], [`ReqwestRequests`](crate::replay::ReqwestRequests),
    /// [`ReplayBodies`](crate::replay::ReplayBodies),
    /// [`TonicBodies`](crate::replay::TonicBodies), or your own
    /// [`Replay`](crate::replay::Replay). A copy is sent beside a running
    /// attempt only when it takes nothing from it
    /// ([`ReplaySource::alongside`](crate::replay::ReplaySource::alongside)):
    /// a streamed body is hedged only once it has been read whole.
    pub fn requests<K2>(self, replay: K2) -> HedgeBuilder<C, K2> {
        HedgeBuilder {
            settings: self.settings,
            classifier: self.classifier,
            replay,
        }
    }

    /// A server's pushback (`Retry-After`, `grpc-retry-pushback-ms`) on a
    /// failed attempt up to this long delays the next attempt by that much
    /// (gRPC A6: the pushback replaces the hedging delay for the next
    /// attempt); a longer one, or "do not retry", stops the hedging: the
    /// attempts running go on, no new one starts.
    pub fn max_hint(mut self, cap: Duration) -> Self {
        self.settings.max_hint = cap;
        self
    }

    /// The budget each attempt after the first spends from (each call
    /// deposits in it). Clone the retry's [`RetryBudget`] here to hold
    /// retries and hedges together under one bound, as gRPC's retry
    /// throttling does for both.
    pub fn budget(mut self, budget: RetryBudget) -> Self {
        self.settings.budget = Some(budget);
        self
    }

    /// Hedges are limited only by [`max_attempts`](Self::max_attempts):
    /// in the latency mode, a slow downstream then gets up to
    /// `max_attempts` times its load.
    pub fn no_budget(mut self) -> Self {
        self.settings.budget = None;
        self
    }

    /// What a retry put in the hedge's place keeps of it: the classifier,
    /// the request copying and the budget.
    pub(crate) fn into_retry_parts(self) -> (C, K, Option<RetryBudget>) {
        (self.classifier, self.replay, self.settings.budget)
    }

    /// A hedge with a retry's classifier, request copying and budget (the
    /// preset's repeat slot, turned from retry to hedge).
    pub(crate) fn from_retry_parts(classifier: C, replay: K, budget: Option<RetryBudget>) -> Self {
        let mut settings = HedgeBuilder::new().settings;
        settings.budget = budget;
        Self {
            settings,
            classifier,
            replay,
        }
    }

    /// Validates the configuration and makes the layer.
    ///
    /// # Errors
    /// Zero attempts or more than [`MAX_ATTEMPTS`] (parameter
    /// `max_attempts`); a zero delay (`delay`: every attempt at once is
    /// [`HedgeMode::Parallel`], say so) or hint cap (`max_hint`), or one
    /// longer than the crate's time unit holds (about 584 years); a
    /// percentile outside (0, 100) (`delay_percentile.percent`), no
    /// minimum of samples (`delay_percentile.min_samples`), or a window
    /// under five milliseconds (`delay_percentile.window`).
    pub fn build(self) -> Result<HedgeLayer<C, K>, ConfigError> {
        let s = self.settings;
        if let Some(refused) = s.refused {
            return Err(refused);
        }
        validate::within("max_attempts", s.max_attempts, 1..=MAX_ATTEMPTS)?;
        if s.delay.is_zero() {
            return Err(ConfigError::new(
                "delay",
                "must be longer than zero (every attempt at once is HedgeMode::Parallel)",
            ));
        }
        validate::positive("delay", s.delay)?;
        validate::positive("max_hint", s.max_hint)?;
        let delay = match s.delay_setting {
            DelaySetting::Fixed => DelaySource::Fixed(s.delay),
            DelaySetting::PerAttempt(delay) => DelaySource::PerAttempt(delay),
            DelaySetting::Percentile {
                percent,
                min_samples,
                window,
            } => {
                if !(percent > 0.0 && percent < 100.0) {
                    return Err(ConfigError::new(
                        "delay_percentile.percent",
                        format!("must be a percentile in (0, 100), got {percent}"),
                    ));
                }
                validate::within("delay_percentile.min_samples", min_samples, 1..=u64::MAX)?;
                if window < Duration::from_millis(5) {
                    return Err(ConfigError::new(
                        "delay_percentile.window",
                        format!("must be at least 5ms, got {window:?}"),
                    ));
                }
                validate::positive("delay_percentile.window", window)?;
                DelaySource::Quantile {
                    quantile: percent / 100.0,
                    min_samples,
                    until_then: s.delay,
                    window: Box::new(LatencyWindow::new(crate::clock::nanos(window))),
                    epoch: Epoch::now(),
                }
            }
        };
        Ok(HedgeLayer {
            shared: Arc::new(Shared {
                name: s.name,
                max_attempts: s.max_attempts,
                mode: s.mode,
                delay,
                classifier: self.classifier,
                max_hint: s.max_hint,
                budget: s.budget,
                listeners: s.listeners,
            }),
            replay: self.replay,
        })
    }
}
