use std::fmt;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicU32, AtomicU64};
use std::time::Duration;

use super::layer::CircuitBreakerLayer;
use super::state::Core;
use super::window::Window;
use crate::backoff::Backoff;
use crate::classify::DefaultClassifier;
use crate::clock::nanos;
use crate::error::ConfigError;
use crate::event::Listeners;
use crate::registry::Ejection;
use crate::validate;
use crate::window::{CountWindow, TimeWindow};

/// The validated settings of one breaker.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    pub(crate) name: Arc<str>,
    pub(crate) failure_rate_threshold: f64,
    pub(crate) slow_call_rate_threshold: f64,
    pub(crate) slow_call_duration: Option<Duration>,
    pub(crate) consecutive_failures: Option<u32>,
    pub(crate) minimum_calls: u32,
    pub(crate) wait_duration: Duration,
    pub(crate) wait_backoff: Option<Backoff>,
    pub(crate) half_open_calls: u32,
    pub(crate) max_half_open_duration: Duration,
    pub(crate) seed: Option<u64>,
}

/// A breaker's settings as its core holds them: the name and the seed
/// fixed, the thresholds and waits in atomics, so that
/// [`retune`](Self::retune) moves them under a running breaker (a
/// reloaded configuration) while every read stays a plain load. They are
/// std's atomics even under loom: no breaker mechanism the loom models
/// check depends on them. A judgment racing a retune may see some values
/// old and some new, each of them valid.
#[derive(Debug)]
pub(crate) struct Tuned {
    pub(crate) name: Arc<str>,
    pub(crate) seed: Option<u64>,
    failure_rate_threshold: AtomicU64,
    slow_call_rate_threshold: AtomicU64,
    /// Nanoseconds; `u64::MAX`: no call is slow.
    slow_call_duration: AtomicU64,
    /// 0: no limit (a validated limit is at least 1).
    consecutive_failures: AtomicU32,
    minimum_calls: AtomicU32,
    wait_duration: AtomicU64,
    half_open_calls: AtomicU32,
    max_half_open_duration: AtomicU64,
    /// Read once per run of re-opens, under the breaker's transition lock.
    wait_backoff: std::sync::Mutex<Option<Backoff>>,
}

impl Tuned {
    pub(crate) fn new(config: Config) -> Self {
        let tuned = Tuned {
            name: config.name.clone(),
            seed: config.seed,
            failure_rate_threshold: AtomicU64::new(0),
            slow_call_rate_threshold: AtomicU64::new(0),
            slow_call_duration: AtomicU64::new(0),
            consecutive_failures: AtomicU32::new(0),
            minimum_calls: AtomicU32::new(0),
            wait_duration: AtomicU64::new(0),
            half_open_calls: AtomicU32::new(0),
            max_half_open_duration: AtomicU64::new(0),
            wait_backoff: std::sync::Mutex::new(None),
        };
        tuned.retune(&config);
        tuned
    }

    /// Takes `config`'s thresholds and waits (not its name or seed).
    pub(crate) fn retune(&self, config: &Config) {
        self.failure_rate_threshold
            .store(config.failure_rate_threshold.to_bits(), Relaxed);
        self.slow_call_rate_threshold
            .store(config.slow_call_rate_threshold.to_bits(), Relaxed);
        self.slow_call_duration
            .store(config.slow_call_duration.map_or(u64::MAX, nanos), Relaxed);
        self.consecutive_failures
            .store(config.consecutive_failures.unwrap_or(0), Relaxed);
        self.minimum_calls.store(config.minimum_calls, Relaxed);
        self.wait_duration
            .store(nanos(config.wait_duration), Relaxed);
        self.half_open_calls.store(config.half_open_calls, Relaxed);
        self.max_half_open_duration
            .store(nanos(config.max_half_open_duration), Relaxed);
        *self
            .wait_backoff
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = config.wait_backoff;
    }

    /// The settings as a [`Config`] again (for a fresh breaker like this one).
    pub(crate) fn snapshot(&self) -> Config {
        Config {
            name: self.name.clone(),
            failure_rate_threshold: self.failure_rate_threshold(),
            slow_call_rate_threshold: self.slow_call_rate_threshold(),
            slow_call_duration: self.slow_call_duration(),
            consecutive_failures: self.consecutive_failures(),
            minimum_calls: self.minimum_calls(),
            wait_duration: self.wait_duration(),
            wait_backoff: self.wait_backoff(),
            half_open_calls: self.half_open_calls(),
            max_half_open_duration: self.max_half_open_duration(),
            seed: self.seed,
        }
    }

    #[inline]
    pub(crate) fn failure_rate_threshold(&self) -> f64 {
        f64::from_bits(self.failure_rate_threshold.load(Relaxed))
    }

    #[inline]
    pub(crate) fn slow_call_rate_threshold(&self) -> f64 {
        f64::from_bits(self.slow_call_rate_threshold.load(Relaxed))
    }

    #[inline]
    pub(crate) fn slow_call_duration(&self) -> Option<Duration> {
        match self.slow_call_duration.load(Relaxed) {
            u64::MAX => None,
            n => Some(Duration::from_nanos(n)),
        }
    }

    #[inline]
    pub(crate) fn consecutive_failures(&self) -> Option<u32> {
        match self.consecutive_failures.load(Relaxed) {
            0 => None,
            n => Some(n),
        }
    }

    #[inline]
    pub(crate) fn minimum_calls(&self) -> u32 {
        self.minimum_calls.load(Relaxed)
    }

    pub(crate) fn wait_duration(&self) -> Duration {
        Duration::from_nanos(self.wait_duration.load(Relaxed))
    }

    #[inline]
    pub(crate) fn half_open_calls(&self) -> u32 {
        self.half_open_calls.load(Relaxed)
    }

    pub(crate) fn max_half_open_duration(&self) -> Duration {
        Duration::from_nanos(self.max_half_open_duration.load(Relaxed))
    }

    pub(crate) fn wait_backoff(&self) -> Option<Backoff> {
        *self
            .wait_backoff
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum WindowConfig {
    Count(u32),
    Time { length: Duration, buckets: u32 },
}

/// The longest a count window may be: one byte per call.
pub const MAX_COUNT_WINDOW: u32 = 1_000_000;
/// The most buckets a time window may have.
pub const MAX_TIME_BUCKETS: u32 = 10_000;
/// The most probes a half-open breaker may admit.
pub const MAX_HALF_OPEN_CALLS: u32 = 1000;

/// Configures a circuit breaker; [`build`](Self::build) validates the
/// configuration and makes the [`CircuitBreakerLayer`].
///
/// # Default
///
/// | setting | default |
/// |---|---|
/// | [`name`](Self::name) | `"circuit-breaker"` |
/// | window | [`count_window(100)`](Self::count_window), or as many calls as an explicit [`minimum_calls`](Self::minimum_calls) if that is more |
/// | [`minimum_calls`](Self::minimum_calls) | 20, or the size of an explicit count window smaller than that; 20 for a time window |
/// | [`failure_rate_threshold`](Self::failure_rate_threshold) | 0.5 |
/// | [`slow_call_duration`](Self::slow_call_duration) | none: no call is slow, and the clock is not read |
/// | [`slow_call_rate_threshold`](Self::slow_call_rate_threshold) | 1.0 |
/// | [`consecutive_failures`](Self::consecutive_failures) | none |
/// | [`wait_duration`](Self::wait_duration) | 30 s |
/// | [`wait_backoff`](Self::wait_backoff) | none: every open lasts `wait_duration` |
/// | [`half_open_calls`](Self::half_open_calls) | 5 |
/// | [`max_half_open_duration`](Self::max_half_open_duration) | 60 s |
/// | [`classifier`](Self::classifier) | [`DefaultClassifier`]: every `Err` is a failure |
///
/// A default gives way to what was set: `count_window(10)` alone judges
/// after 10 calls, `minimum_calls(150)` alone gets a count window of 150.
/// Only two settings given explicitly that contradict each other (a
/// minimum above the count window) are refused by `build()`. A time window
/// holds as many calls as come in its length, so its default minimum stays
/// 20: below that, one failure of a few calls on a quiet service would be a
/// failure rate of 50% or more. Set `minimum_calls` to suit the traffic.
///
/// ```
/// use palisade::circuit_breaker::{CircuitBreakerLayer, CircuitState};
/// use palisade::error::BoxError;
/// use tower::{Layer, ServiceExt, service_fn};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// // The default minimum (20) gives way to a count window of 10.
/// assert!(CircuitBreakerLayer::builder().count_window(10).build().is_ok());
/// // Only settings given explicitly that contradict each other are refused.
/// let contradiction = CircuitBreakerLayer::builder().count_window(10).minimum_calls(20).build();
/// assert_eq!(contradiction.unwrap_err().parameter(), "minimum_calls");
///
/// // Three failures in a row trip the breaker, though the minimum is 20.
/// let breaker = CircuitBreakerLayer::builder().consecutive_failures(3).build().unwrap();
/// let handle = breaker.handle();
/// let svc = breaker.layer(service_fn(|_: ()| async { Err::<(), BoxError>("down".into()) }));
/// for _ in 0..3 {
///     let _ = svc.clone().oneshot(()).await;
/// }
/// assert_eq!(handle.state(), CircuitState::Open);
/// # }
/// ```
#[must_use = "a builder does nothing until `build` is called"]
pub struct CircuitBreakerBuilder<C = DefaultClassifier> {
    settings: Settings,
    classifier: C,
}

/// The settings that do not change the builder's type.
struct Settings {
    name: Arc<str>,
    /// `None`: not set, the default (which follows `minimum_calls`).
    window: Option<WindowConfig>,
    failure_rate_threshold: f64,
    slow_call_rate_threshold: f64,
    slow_call_duration: Option<Duration>,
    consecutive_failures: Option<u32>,
    /// `None`: not set, the default (which follows the window).
    minimum_calls: Option<u32>,
    /// The minimum when none is set (the standard stacks set their own).
    default_minimum_calls: u32,
    wait_duration: Duration,
    wait_backoff: Option<Backoff>,
    half_open_calls: u32,
    max_half_open_duration: Duration,
    seed: Option<u64>,
    listeners: Listeners,
    eject_when_open: bool,
    /// A setting [`settings`](CircuitBreakerBuilder::settings) could not apply.
    refused: Option<ConfigError>,
}

/// The count window when none is set.
const DEFAULT_COUNT_WINDOW: u32 = 100;
/// The minimum number of calls when none is set.
const DEFAULT_MINIMUM_CALLS: u32 = 20;

impl<C: fmt::Debug> fmt::Debug for CircuitBreakerBuilder<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = &self.settings;
        f.debug_struct("CircuitBreakerBuilder")
            .field("name", &s.name)
            .field("window", &s.window)
            .field("failure_rate_threshold", &s.failure_rate_threshold)
            .field("slow_call_rate_threshold", &s.slow_call_rate_threshold)
            .field("slow_call_duration", &s.slow_call_duration)
            .field("consecutive_failures", &s.consecutive_failures)
            .field("minimum_calls", &s.minimum_calls)
            .field("wait_duration", &s.wait_duration)
            .field("wait_backoff", &s.wait_backoff)
            .field("half_open_calls", &s.half_open_calls)
            .field("max_half_open_duration", &s.max_half_open_duration)
            .field("classifier", &self.classifier)
            .field("listeners", &s.listeners)
            .finish()
    }
}

impl Default for CircuitBreakerBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl CircuitBreakerBuilder {
    /// A builder with the defaults above.
    pub fn new() -> Self {
        Self {
            settings: Settings {
                name: Arc::from("circuit-breaker"),
                window: None,
                failure_rate_threshold: 0.5,
                slow_call_rate_threshold: 1.0,
                slow_call_duration: None,
                consecutive_failures: None,
                minimum_calls: None,
                default_minimum_calls: DEFAULT_MINIMUM_CALLS,
                wait_duration: Duration::from_secs(30),
                wait_backoff: None,
                half_open_calls: 5,
                max_half_open_duration: Duration::from_secs(60),
                seed: None,
                listeners: Listeners::default(),
                eject_when_open: false,
                refused: None,
            },
            classifier: DefaultClassifier,
        }
    }
}

impl<C> CircuitBreakerBuilder<C> {
    crate::event::name_and_listeners!(
        "breaker",
        "The breaker's name, carried by its events and its [`CircuitOpen`](crate::error::CircuitOpen) errors.",
        settings
    );

    /// Judge the last `calls` calls (1 to 1,000,000).
    pub fn count_window(mut self, calls: u32) -> Self {
        self.settings.window = Some(WindowConfig::Count(calls));
        self
    }

    /// Judge the calls that finished in the last `length`, kept in buckets of
    /// 100 ms (or of `length / 1000` for windows longer than 100 s). Calls
    /// leave the window a bucket at a time.
    pub fn time_window(mut self, length: Duration) -> Self {
        let buckets = if length <= Duration::from_secs(100) {
            length.as_nanos().div_ceil(100_000_000).max(1)
        } else {
            1000
        };
        self.settings.window = Some(WindowConfig::Time {
            length,
            buckets: u32::try_from(buckets).unwrap_or(u32::MAX),
        });
        self
    }

    /// Judge the calls of the last `length`, kept in `buckets` buckets (1 to
    /// 10,000, each at least 1 ms long).
    pub fn time_window_buckets(mut self, length: Duration, buckets: u32) -> Self {
        self.settings.window = Some(WindowConfig::Time { length, buckets });
        self
    }

    /// Trip when at least this fraction of the window's calls failed.
    /// In `(0, 1]`.
    pub fn failure_rate_threshold(mut self, fraction: f64) -> Self {
        self.settings.failure_rate_threshold = fraction;
        self
    }

    /// Trip when at least this fraction of the window's calls were slow.
    /// In `(0, 1]`; has effect only with a [`slow_call_duration`](Self::slow_call_duration).
    pub fn slow_call_rate_threshold(mut self, fraction: f64) -> Self {
        self.settings.slow_call_rate_threshold = fraction;
        self
    }

    /// A call that takes longer than this is slow, whatever its outcome.
    /// Setting it makes each call read the clock at its start and end.
    pub fn slow_call_duration(mut self, duration: Duration) -> Self {
        self.settings.slow_call_duration = Some(duration);
        self
    }

    /// Trip after this many failures in a row (at least 1), however few
    /// calls the window holds: unlike the rates, this trip does not wait
    /// for [`minimum_calls`](Self::minimum_calls) (as Envoy's
    /// `consecutive_5xx` and Finagle's `consecutiveFailures` do not).
    pub fn consecutive_failures(mut self, failures: u32) -> Self {
        self.settings.consecutive_failures = Some(failures);
        self
    }

    /// Neither rate is judged before the window holds this many calls (at
    /// least 1; for a count window set with
    /// [`count_window`](Self::count_window), at most its size). See the
    /// [defaults](Self#default) for what it is when not set.
    pub fn minimum_calls(mut self, calls: u32) -> Self {
        self.settings.minimum_calls = Some(calls);
        self
    }

    /// The minimum used while [`minimum_calls`](Self::minimum_calls) is
    /// not set: a default of the standard stacks, which gives way to a
    /// smaller count window as the breaker's own default does.
    #[cfg_attr(not(feature = "http"), allow(dead_code))] // the standard stacks need `http`
    pub(crate) fn minimum_calls_by_default(mut self, calls: u32) -> Self {
        self.settings.default_minimum_calls = calls;
        self
    }

    /// How long the breaker stays open before it lets probes through.
    pub fn wait_duration(mut self, duration: Duration) -> Self {
        self.settings.wait_duration = duration;
        self
    }

    /// Make each re-open (open, half-open, open again) last longer: the
    /// `n`-th consecutive open lasts the backoff's `n`-th delay (its cap,
    /// once reached, from then on). The sequence starts again once the
    /// breaker closes. Overrides [`wait_duration`](Self::wait_duration).
    pub fn wait_backoff(mut self, backoff: Backoff) -> Self {
        self.settings.wait_backoff = Some(backoff);
        self
    }

    /// How many probe calls a half-open breaker lets through (1 to 1000);
    /// once all have finished it closes, or opens again if their failure or
    /// slow-call rate reaches its threshold.
    pub fn half_open_calls(mut self, calls: u32) -> Self {
        self.settings.half_open_calls = calls;
        self
    }

    /// The longest a breaker stays half-open once every probe has been
    /// admitted and some are still out (one of them stuck is enough); the
    /// next call then opens it again, and a later half-open stay sends new
    /// probes (Resilience4j's `maxWaitDurationInHalfOpenState`). A probe ends when
    /// its outcome is known, which for a streamed answer judged at its end
    /// (gRPC) is when the stream ends: without this bound, probes that are
    /// long-lived streams would hold the breaker half-open, refusing every
    /// other call, for as long as they last.
    pub fn max_half_open_duration(mut self, duration: Duration) -> Self {
        self.settings.max_half_open_duration = duration;
        self
    }

    /// While open, the breaker's services report `Pending` from
    /// `poll_ready` instead of answering calls with
    /// [`CircuitOpen`](crate::error::CircuitOpen), so that a load balancer
    /// over endpoints (tower's `balance::p2c::Balance`) skips this one and
    /// picks another; they are woken when the open wait ends (the next
    /// caller then takes a probe), or the breaker is set by hand.
    ///
    /// The ejection ends with the open wait: half-open, the breaker is
    /// back in its balancer ([`CircuitMetrics::ejected`](super::CircuitMetrics::ejected)
    /// is false, and it no longer counts against a cap), its probes go
    /// through, and a caller that finds every probe out waits until one
    /// finishes (or the stay ends) rather than being refused. A failed
    /// probe opens it again, and ejects it again if its set has room.
    ///
    /// Use it only where something above picks among several services:
    /// alone, a caller of an ejected breaker waits (bounded by a timeout
    /// above) instead of failing at once. For a set of endpoints, make
    /// the breakers with a [keyed](crate::keyed) layer and cap how many
    /// are out at once with its
    /// [`max_ejection_percent`](crate::keyed::KeyedBuilder::max_ejection_percent);
    /// a breaker alone is a set of one, always ejected when open. A
    /// breaker past its set's cap answers with `CircuitOpen` as usual.
    ///
    /// # Examples
    ///
    /// ```
    /// use palisade::circuit_breaker::CircuitBreakerLayer;
    /// use palisade::error::BoxError;
    /// use std::task::{Context, Poll, Waker};
    /// use tower::{Layer, Service, service_fn};
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// let breaker = CircuitBreakerLayer::builder().eject_when_open().build().unwrap();
    /// let mut endpoint = breaker.layer(service_fn(|_: ()| async { Ok::<_, BoxError>(()) }));
    /// let mut cx = Context::from_waker(Waker::noop());
    /// assert!(endpoint.poll_ready(&mut cx).is_ready());
    /// breaker.handle().force_open();
    /// assert!(endpoint.poll_ready(&mut cx).is_pending(), "ejected: pick another endpoint");
    /// breaker.handle().reset();
    /// assert!(endpoint.poll_ready(&mut cx).is_ready());
    /// # }
    /// ```
    pub fn eject_when_open(mut self) -> Self {
        self.settings.eject_when_open = true;
        self
    }

    /// Records a setting that [`settings`](Self::settings) could not
    /// apply; `build` returns the first such error before any other check.
    pub(crate) fn refuse(mut self, error: crate::error::ConfigError) -> Self {
        self.settings.refused.get_or_insert(error);
        self
    }

    /// Seeds the randomness of [`wait_backoff`](Self::wait_backoff)'s jitter.
    pub fn seed(mut self, seed: u64) -> Self {
        self.settings.seed = Some(seed);
        self
    }

    /// Judges results with `classifier` instead of the default.
    pub fn classifier<C2>(self, classifier: C2) -> CircuitBreakerBuilder<C2> {
        CircuitBreakerBuilder {
            settings: self.settings,
            classifier,
        }
    }

    /// Validates the configuration and makes the layer.
    ///
    /// # Errors
    /// A [`ConfigError`] naming the first setting out of range: a window of
    /// zero calls or zero length, too many or too short buckets, a threshold
    /// outside `(0, 1]` or NaN, a zero slow-call or wait duration, zero
    /// consecutive failures, a minimum of zero calls or more calls than an
    /// explicit count window holds (or than the longest count window, with
    /// the default window), zero or more than 1000 half-open calls, a zero
    /// maximum half-open duration.
    pub fn build(mut self) -> Result<CircuitBreakerLayer<C>, ConfigError> {
        if let Some(refused) = self.settings.refused.take() {
            return Err(refused);
        }
        // An explicit window is judged on its own first, so that its own
        // error is the one reported.
        if let Some(window) = self.settings.window {
            check_window(window)?;
        }
        let (window, minimum_calls) = self.settings.window_and_minimum()?;
        check_window(window)?;
        let window = make_window(window);
        let s = self.settings;
        for (parameter, value) in [
            ("failure_rate_threshold", s.failure_rate_threshold),
            ("slow_call_rate_threshold", s.slow_call_rate_threshold),
        ] {
            validate::fraction_above_zero(parameter, value)?;
        }
        if let Some(d) = s.slow_call_duration {
            validate::positive("slow_call_duration", d)?;
        }
        validate::positive("wait_duration", s.wait_duration)?;
        validate::positive("max_half_open_duration", s.max_half_open_duration)?;
        if s.consecutive_failures == Some(0) {
            return Err(ConfigError::new(
                "consecutive_failures",
                "must be at least 1",
            ));
        }
        validate::within(
            "half_open_calls",
            s.half_open_calls,
            1..=MAX_HALF_OPEN_CALLS,
        )?;
        let config = Config {
            name: s.name,
            failure_rate_threshold: s.failure_rate_threshold,
            slow_call_rate_threshold: s.slow_call_rate_threshold,
            slow_call_duration: s.slow_call_duration,
            consecutive_failures: s.consecutive_failures,
            minimum_calls,
            wait_duration: s.wait_duration,
            wait_backoff: s.wait_backoff,
            half_open_calls: s.half_open_calls,
            max_half_open_duration: s.max_half_open_duration,
            seed: s.seed,
        };
        let mut core = Core::new(config, window, s.listeners);
        if s.eject_when_open {
            // Alone, a breaker is a set of one: always ejected when open.
            core = core.ejecting(Arc::new(Ejection::new(100)));
        }
        Ok(CircuitBreakerLayer::from_parts(core, self.classifier))
    }
}

impl Settings {
    /// The window and the minimum number of calls, each an explicit setting
    /// or a default that follows the other.
    fn window_and_minimum(&self) -> Result<(WindowConfig, u32), ConfigError> {
        if self.minimum_calls == Some(0) {
            return Err(ConfigError::new("minimum_calls", "must be at least 1"));
        }
        Ok(match (self.window, self.minimum_calls) {
            (Some(WindowConfig::Count(size)), Some(minimum)) if minimum > size => {
                return Err(ConfigError::new(
                    "minimum_calls",
                    format!(
                        "{minimum} is more than count_window({size}) holds; the rates could \
                         never be judged (set a larger window, or leave one of them unset)"
                    ),
                ));
            }
            (Some(window), Some(minimum)) => (window, minimum),
            (Some(WindowConfig::Count(size)), None) => (
                WindowConfig::Count(size),
                self.default_minimum_calls.min(size),
            ),
            (Some(window), None) => (window, self.default_minimum_calls),
            (None, Some(minimum)) if minimum > MAX_COUNT_WINDOW => {
                return Err(ConfigError::new(
                    "minimum_calls",
                    format!(
                        "{minimum} is more than the longest count window holds \
                         ({MAX_COUNT_WINDOW}); use a time window"
                    ),
                ));
            }
            (None, Some(minimum)) => (
                WindowConfig::Count(DEFAULT_COUNT_WINDOW.max(minimum)),
                minimum,
            ),
            (None, None) => (
                WindowConfig::Count(DEFAULT_COUNT_WINDOW.max(self.default_minimum_calls)),
                self.default_minimum_calls,
            ),
        })
    }
}

/// Refuses a window that cannot work.
fn check_window(window: WindowConfig) -> Result<(), ConfigError> {
    match window {
        WindowConfig::Count(size) => {
            if !(1..=MAX_COUNT_WINDOW).contains(&size) {
                return Err(ConfigError::new(
                    "count_window",
                    format!("must hold from 1 to {MAX_COUNT_WINDOW} calls, got {size}"),
                ));
            }
        }
        WindowConfig::Time { length, buckets } => {
            validate::positive("time_window", length)?;
            if !(1..=MAX_TIME_BUCKETS).contains(&buckets) {
                return Err(ConfigError::new(
                    "time_window",
                    format!("must have from 1 to {MAX_TIME_BUCKETS} buckets, got {buckets}"),
                ));
            }
            let width = length / buckets;
            if width < Duration::from_millis(1) {
                return Err(ConfigError::new(
                    "time_window",
                    format!("buckets of {width:?} are shorter than 1 ms; use fewer buckets"),
                ));
            }
        }
    }
    Ok(())
}

/// Makes a window that [`check_window`] accepted.
fn make_window(window: WindowConfig) -> Window {
    match window {
        WindowConfig::Count(size) => Window::Count(CountWindow::new(size as usize)),
        // Within 584 years: the window's length is.
        WindowConfig::Time { length, buckets } => {
            Window::Time(TimeWindow::new(buckets as usize, nanos(length / buckets)))
        }
    }
}
