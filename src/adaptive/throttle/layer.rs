use std::fmt;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use tower::Layer;

use super::{Throttle, ThrottleEvent, ThrottleHandle};
use crate::classify::DefaultClassifier;
use crate::clock::{Epoch, nanos};
use crate::error::{ConfigError, Throttled};
use crate::event::Listeners;
use crate::random::{GAMMA, mix, unit};
use crate::sync::AtomicU64;
use crate::validate;
use crate::window::TimeWindow;

/// The window's lanes: every request; the requests the service accepted;
/// the requests sent and not yet answered.
pub(crate) const REQUESTS: usize = 0;
pub(crate) const ACCEPTS: usize = 1;
pub(crate) const PENDING: usize = 2;

/// What a sent request adds to the lanes: a request, pending.
const SENT: crate::window::Code = crate::window::code(0b10);

/// How many steps the window slides by.
const BUCKETS: usize = 20;

/// What every service, future and handle of one throttle share, whatever
/// their classifier.
#[derive(Debug)]
pub(crate) struct Core {
    pub(crate) name: Arc<str>,
    window: TimeWindow<3>,
    epoch: Epoch,
    /// `k`'s bits, and `min_answered`: std's atomics, so that a reloaded
    /// configuration moves them under traffic ([`Core::retune`]).
    k: std::sync::atomic::AtomicU64,
    min_answered: std::sync::atomic::AtomicU64,
    seed: u64,
    /// Numbers the draws, so that a seeded throttle replays them.
    draws: AtomicU64,
    pub(crate) listeners: Listeners,
}

impl Core {
    /// Takes `other`'s `k` and `min_answered`, keeping this throttle's
    /// window: `false`, and nothing changed, if their names or windows
    /// differ.
    pub(crate) fn retune(&self, other: &Core) -> bool {
        if !self.retunable(other) {
            return false;
        }
        self.k.store(other.k.load(Relaxed), Relaxed);
        self.min_answered
            .store(other.min_answered.load(Relaxed), Relaxed);
        true
    }

    /// Whether [`retune`](Self::retune) would take `other`'s settings: the
    /// same name and window.
    pub(crate) fn retunable(&self, other: &Core) -> bool {
        self.name == other.name
            && self.window.length_nanos() == other.window.length_nanos()
            && self.window.width_nanos() == other.window.width_nanos()
    }

    /// The share of calls to reject, from the window's totals: SRE's
    /// `max(0, (requests − K·accepts) / (requests + 1))`, calls in flight
    /// counted as requests; none while fewer than the minimum were
    /// answered.
    pub(crate) fn probability(&self, totals: [u64; 3]) -> f64 {
        let [requests, accepts, pending] = totals;
        if requests.saturating_sub(pending) < self.min_answered.load(Relaxed) {
            return 0.0;
        }
        let requests = requests as f64;
        let k = f64::from_bits(self.k.load(Relaxed));
        ((requests - k * accepts as f64) / (requests + 1.0)).max(0.0)
    }

    /// Counts a request and decides whether it goes: `Ok` with the time
    /// it was counted at, as a request in flight (its outcome is counted
    /// in the same bucket), or the rejection, counted as a request
    /// answered at once.
    #[inline]
    pub(crate) fn admit(&self) -> Result<u64, Throttled> {
        let now = self.epoch.nanos_at(crate::clock::call_time());
        let totals = self.window.totals(now);
        let probability = self.probability(totals);
        if probability > 0.0 && self.draw() < probability {
            self.window.record(crate::window::code(0), now);
            return Err(self.rejection(probability, totals));
        }
        self.window.record(SENT, now);
        Ok(now)
    }

    fn draw(&self) -> f64 {
        let n = self.draws.fetch_add(1, Relaxed);
        unit(mix(self.seed ^ n.wrapping_mul(GAMMA)))
    }

    #[cold]
    fn rejection(&self, probability: f64, [requests, accepts, _]: [u64; 3]) -> Throttled {
        self.listeners
            .emit(&self.name, || ThrottleEvent::Throttled { probability });
        Throttled::new(
            self.name.clone(),
            self.listeners.key().cloned(),
            probability,
            requests,
            accepts,
            Duration::from_nanos(self.window.length_nanos()),
        )
    }

    /// The request counted at `at` was answered: accepted, or not.
    #[inline]
    pub(crate) fn answered(&self, at: u64, accepted: bool) {
        let mut deltas = [0; 3];
        deltas[ACCEPTS] = i64::from(accepted);
        deltas[PENDING] = -1;
        self.window.add(deltas, at);
    }

    /// The request counted at `at` counts neither way after all (ignored
    /// by the classifier, or dropped before its outcome was known).
    pub(crate) fn uncount(&self, at: u64) {
        let mut deltas = [0; 3];
        deltas[REQUESTS] = -1;
        deltas[PENDING] = -1;
        self.window.add(deltas, at);
    }

    /// The window's totals now.
    pub(crate) fn totals(&self) -> [u64; 3] {
        self.window.totals(self.epoch.nanos_now())
    }
}

/// The core and the classifier, behind the layer's one `Arc`.
#[derive(Debug)]
pub(crate) struct Shared<C> {
    pub(crate) core: Core,
    pub(crate) classifier: C,
}

/// Applies a [`Throttle`] to a service.
///
/// One layer is one throttle: every service it wraps and every clone of
/// them count in the same window.
///
/// Made by [`ThrottleLayer::builder`]; see the [family's
/// docs](crate::adaptive).
///
/// # Examples
///
/// In front of a service that accepts one call in four: once it has
/// answered 100 of them, calls are turned away locally, with a probability
/// that stays above what K = 2 lets through for a service that accepts so
/// few, and most of them never leave the client.
///
/// ```
/// use palisade::adaptive::ThrottleLayer;
/// use palisade::error::{BoxError, ErrorKind};
/// use std::sync::Arc;
/// use std::sync::atomic::{AtomicU32, Ordering};
/// use tower::{Layer, ServiceExt, service_fn};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let throttle = ThrottleLayer::builder().name("search").seed(1).build().unwrap();
/// let sent = Arc::new(AtomicU32::new(0));
/// let seen = sent.clone();
/// let busy = throttle.layer(service_fn(move |_: ()| {
///     let n = seen.fetch_add(1, Ordering::Relaxed);
///     async move { if n % 4 == 0 { Ok(()) } else { Err::<(), BoxError>("busy".into()) } }
/// }));
/// let mut throttled = 0;
/// for _ in 0..2_000 {
///     if let Err(e) = busy.clone().oneshot(()).await {
///         throttled += u32::from(ErrorKind::of(&e) == ErrorKind::Throttled);
///     }
/// }
/// let sent = sent.load(Ordering::Relaxed);
/// assert_eq!(sent + throttled, 2_000);
/// assert!(throttled > 800, "most of the excess is turned away: {throttled}");
/// # }
/// ```
pub struct ThrottleLayer<C = DefaultClassifier> {
    shared: Arc<Shared<C>>,
}

impl<C> Clone for ThrottleLayer<C> {
    fn clone(&self) -> Self {
        Self {
            shared: self.shared.clone(),
        }
    }
}

impl<C> fmt::Debug for ThrottleLayer<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let core = &self.shared.core;
        f.debug_struct("ThrottleLayer")
            .field("name", &core.name)
            .field("k", &f64::from_bits(core.k.load(Relaxed)))
            .field("window", &Duration::from_nanos(core.window.length_nanos()))
            .field("min_answered", &core.min_answered.load(Relaxed))
            .finish()
    }
}

impl ThrottleLayer {
    /// Starts configuring a throttle.
    pub fn builder() -> ThrottleBuilder {
        ThrottleBuilder::default()
    }
}

impl<C: Send + Sync + 'static> ThrottleLayer<C> {
    /// A handle to read the throttle's counts and its share of rejections.
    pub fn handle(&self) -> ThrottleHandle {
        ThrottleHandle::new(self.shared.clone())
    }
}

impl<C> ThrottleLayer<C> {
    /// Takes `other`'s `k` and `min_answered`, keeping this throttle's
    /// counts (a reloaded configuration): `false`, and nothing changed, if
    /// their names or windows differ.
    pub(crate) fn retune(&self, other: &ThrottleLayer<C>) -> bool {
        self.shared.core.retune(&other.shared.core)
    }

    /// Whether [`retune`](Self::retune) would take `other`'s settings.
    pub(crate) fn retunable(&self, other: &ThrottleLayer<C>) -> bool {
        self.shared.core.retunable(&other.shared.core)
    }
}

impl<S, C> Layer<S> for ThrottleLayer<C> {
    type Service = Throttle<S, C>;

    fn layer(&self, inner: S) -> Throttle<S, C> {
        Throttle::from_shared(inner, self.shared.clone())
    }
}

/// Configures a [`ThrottleLayer`].
///
/// # Default
///
/// | setting | default |
/// |---|---|
/// | [`name`](Self::name) | `"throttle"` |
/// | [`k`](Self::k) | 2: throttling starts when fewer than half the requests are accepted (SRE's) |
/// | [`window`](Self::window) | 2 minutes (SRE's), sliding in 20 steps |
/// | [`min_answered`](Self::min_answered) | 100 (Kratos's): nothing is rejected until the window holds as many answered requests |
/// | [`classifier`](Self::classifier) | [`DefaultClassifier`]: every `Ok` is an accept |
/// | [`seed`](Self::seed) | drawn at random |
#[must_use = "a builder does nothing until `build` is called"]
pub struct ThrottleBuilder<C = DefaultClassifier> {
    name: Arc<str>,
    k: f64,
    window: Duration,
    min_answered: u32,
    classifier: C,
    seed: Option<u64>,
    listeners: Listeners,
}

impl Default for ThrottleBuilder {
    fn default() -> Self {
        Self {
            name: Arc::from("throttle"),
            k: 2.0,
            window: Duration::from_secs(120),
            min_answered: 100,
            classifier: DefaultClassifier,
            seed: None,
            listeners: Listeners::default(),
        }
    }
}

impl<C: fmt::Debug> fmt::Debug for ThrottleBuilder<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ThrottleBuilder")
            .field("name", &self.name)
            .field("k", &self.k)
            .field("window", &self.window)
            .field("min_answered", &self.min_answered)
            .field("classifier", &self.classifier)
            .field("seed", &self.seed)
            .field("listeners", &self.listeners)
            .finish()
    }
}

/// The shortest window: one bucket must be at least a microsecond.
const MIN_WINDOW: Duration = Duration::from_micros(BUCKETS as u64);

impl<C> ThrottleBuilder<C> {
    crate::event::name_and_listeners!(
        "throttle",
        "The name carried by this throttle's events and rejections."
    );

    /// SRE's multiplier K, at least 1: requests are rejected locally once
    /// they outnumber K times the accepts. Lower is more aggressive: at
    /// 1.1, throttling starts when 1 request in 11 fails; at 2 (the
    /// default), when half of them do.
    pub fn k(mut self, k: f64) -> Self {
        self.k = k;
        self
    }

    /// How far back requests and accepts are counted. Keep it longer than
    /// the calls' timeout: an accept is counted with its request, and a
    /// request older than the window is no longer counted at all.
    pub fn window(mut self, window: Duration) -> Self {
        self.window = window;
        self
    }

    /// Nothing is rejected until the window holds this many answered
    /// requests (rejected locally, or sent and answered).
    ///
    /// The formula alone judges from too little: one failed request turns
    /// half of the next calls away. And calls in flight count as requests
    /// not accepted (see the [module docs](super)): a client that starts
    /// with 50 calls at once would, from the formula alone, reject most of
    /// the next ones before any had time to be answered. With a minimum
    /// of `n` answered, up to `n` calls may be in flight at the start
    /// (and after a quiet spell longer than the window) without any
    /// rejection while the service accepts them. 0 applies the formula
    /// from the first request.
    pub fn min_answered(mut self, requests: u32) -> Self {
        self.min_answered = requests;
        self
    }

    /// What an accept is: a call the classifier calls a
    /// [`Success`](crate::classify::Outcome::Success). One it
    /// [`Ignored`](crate::classify::Outcome::Ignored) counts neither as a
    /// request nor as an accept. A classifier whose verdict waits for the
    /// end of a body (gRPC's, when the status comes in trailers) counts
    /// the accept then.
    pub fn classifier<C2>(self, classifier: C2) -> ThrottleBuilder<C2> {
        ThrottleBuilder {
            name: self.name,
            k: self.k,
            window: self.window,
            min_answered: self.min_answered,
            classifier,
            seed: self.seed,
            listeners: self.listeners,
        }
    }

    /// Seeds the draws that reject calls, so that a test or simulation
    /// replays the same rejections.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// Validates the configuration and makes the layer.
    ///
    /// # Errors
    /// A K below 1 or not finite (below 1, a service that accepts every
    /// request would still be throttled), a window shorter than 20 µs or
    /// unrepresentable.
    pub fn build(self) -> Result<ThrottleLayer<C>, ConfigError> {
        if !(self.k >= 1.0 && self.k.is_finite()) {
            return Err(ConfigError::new(
                "k",
                format!("must be at least 1 and finite, got {}", self.k),
            ));
        }
        validate::fits("window", self.window)?;
        if self.window < MIN_WINDOW {
            return Err(ConfigError::new(
                "window",
                format!("must be at least {MIN_WINDOW:?}, got {:?}", self.window),
            ));
        }
        let width = nanos(self.window) / BUCKETS as u64;
        Ok(ThrottleLayer {
            shared: Arc::new(Shared {
                core: Core {
                    name: self.name,
                    window: TimeWindow::new(BUCKETS, width),
                    epoch: Epoch::now(),
                    k: std::sync::atomic::AtomicU64::new(self.k.to_bits()),
                    min_answered: std::sync::atomic::AtomicU64::new(u64::from(self.min_answered)),
                    seed: self.seed.unwrap_or_else(rand::random),
                    draws: AtomicU64::new(0),
                    listeners: self.listeners,
                },
                classifier: self.classifier,
            }),
        })
    }
}
