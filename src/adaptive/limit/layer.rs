use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tower::Layer;

use super::event::AdaptiveLimitEvent;
use super::learn::{Learner, Windows};
use super::{AdaptiveLimit, AdaptiveLimitHandle};
use crate::adaptive::{LimitAlgorithm, MAX_ADAPTIVE_LIMIT, Sample, Vegas};
use crate::classify::DefaultClassifier;
use crate::error::{ConcurrencyLimited, ConfigError};
use crate::event::Listeners;
use crate::semaphore::Semaphore;
use crate::validate;

/// What every service, future and handle of one adaptive limit share,
/// whatever their classifier.
#[derive(Debug)]
pub(crate) struct Core {
    pub(crate) name: Arc<str>,
    pub(crate) semaphore: Semaphore,
    pub(crate) max_queue: u32,
    pub(crate) max_wait: Option<Duration>,
    learner: Learner,
    pub(crate) listeners: Listeners,
}

impl Core {
    /// Learns from one finished call and moves the limit.
    pub(crate) fn learn(&self, sample: Sample, ended: Instant) {
        self.learner.learn(sample, ended, &|limit| {
            let limit = limit.clamp(1, MAX_ADAPTIVE_LIMIT);
            // One thread at a time applies a limit (the learner's), so
            // the limit read here is the one this call replaces.
            let from = self.semaphore.limit();
            if limit != from {
                self.semaphore.set_limit(limit);
                self.listeners
                    .emit(&self.name, || AdaptiveLimitEvent::LimitChanged {
                        from,
                        to: limit,
                    });
            }
        });
    }

    /// The error of a refused call.
    #[cold]
    pub(crate) fn rejection(&self, after_wait: bool) -> ConcurrencyLimited {
        ConcurrencyLimited::new(
            self.name.clone(),
            self.listeners.key().cloned(),
            self.semaphore.limit(),
            self.max_queue,
            if after_wait { self.max_wait } else { None },
        )
    }
}

/// The core and the classifier, behind the layer's one `Arc`.
#[derive(Debug)]
pub(crate) struct Shared<C> {
    pub(crate) core: Core,
    pub(crate) classifier: C,
}

/// Applies an [`AdaptiveLimit`] to a service.
///
/// One layer is one limit: every service it wraps and every clone of them
/// draw from the same permits and queue, and teach the same algorithm.
///
/// Made by [`AdaptiveLimitLayer::builder`]; see the [family's
/// docs](crate::adaptive).
///
/// # Examples
///
/// An HTTP client whose limit Gradient2 moves, with HTTP's classifier (a
/// 503 is a failure, a 404 a success):
///
/// ```
/// use palisade::adaptive::{AdaptiveLimitLayer, Gradient2};
/// use palisade::classify::HttpClassifier;
/// use palisade::error::BoxError;
/// use std::time::Duration;
/// use tower::{Layer, ServiceExt, service_fn};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() -> Result<(), BoxError> {
/// let limit = AdaptiveLimitLayer::builder()
///     .name("catalog")
///     .algorithm(Gradient2::builder().min_limit(4).max_limit(64).build()?)
///     .classifier(HttpClassifier::new())
///     .max_queue(16)
///     .max_wait(Duration::from_millis(50))
///     .build()?;
/// let handle = limit.handle();
/// let client = limit.layer(service_fn(|_: http::Request<()>| async {
///     Ok::<_, BoxError>(http::Response::new(()))
/// }));
/// client.oneshot(http::Request::new(())).await?;
/// assert_eq!((handle.limit(), handle.in_flight()), (20, 0));
/// # Ok(())
/// # }
/// ```
pub struct AdaptiveLimitLayer<C = DefaultClassifier> {
    shared: Arc<Shared<C>>,
}

impl<C> Clone for AdaptiveLimitLayer<C> {
    fn clone(&self) -> Self {
        Self {
            shared: self.shared.clone(),
        }
    }
}

impl<C> fmt::Debug for AdaptiveLimitLayer<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let core = &self.shared.core;
        f.debug_struct("AdaptiveLimitLayer")
            .field("name", &core.name)
            .field("limit", &core.semaphore.limit())
            .field("max_queue", &core.max_queue)
            .field("max_wait", &core.max_wait)
            .finish()
    }
}

impl AdaptiveLimitLayer {
    /// Starts configuring an adaptive limit.
    pub fn builder() -> AdaptiveLimitBuilder {
        AdaptiveLimitBuilder::default()
    }
}

impl<C: Send + Sync + 'static> AdaptiveLimitLayer<C> {
    /// A handle to read the limit and its counts.
    pub fn handle(&self) -> AdaptiveLimitHandle {
        AdaptiveLimitHandle::new(self.shared.clone())
    }
}

impl<S, C> Layer<S> for AdaptiveLimitLayer<C> {
    type Service = AdaptiveLimit<S, C>;

    fn layer(&self, inner: S) -> AdaptiveLimit<S, C> {
        AdaptiveLimit::from_shared(inner, self.shared.clone())
    }
}

/// Configures an [`AdaptiveLimitLayer`].
///
/// # Default
///
/// | setting | default |
/// |---|---|
/// | [`name`](Self::name) | `"adaptive_limit"` |
/// | [`algorithm`](Self::algorithm) | [`Vegas::default()`](crate::adaptive::Vegas), concurrency-limits' default |
/// | [`classifier`](Self::classifier) | [`DefaultClassifier`]: every `Err` is a failure (a dropped sample) |
/// | [`max_queue`](Self::max_queue) | 0: a call that finds the limit reached is refused at once |
/// | [`max_wait`](Self::max_wait) | none: a queued call waits until a permit frees up |
/// | [`window`](Self::window) | from 100 ms to 250 ms: twice the last window's lowest RTT |
/// | [`min_samples`](Self::min_samples) | 10 |
#[must_use = "a builder does nothing until `build` is called"]
pub struct AdaptiveLimitBuilder<C = DefaultClassifier> {
    name: Arc<str>,
    pub(super) algorithm: Box<dyn LimitAlgorithm>,
    classifier: C,
    max_queue: u32,
    max_wait: Option<Duration>,
    pub(super) windows: Windows,
    listeners: Listeners,
    /// A setting [`settings`](AdaptiveLimitBuilder::settings) could not apply.
    refused: Option<ConfigError>,
}

impl Default for AdaptiveLimitBuilder {
    fn default() -> Self {
        Self {
            name: Arc::from("adaptive_limit"),
            algorithm: Box::new(Vegas::default()),
            classifier: DefaultClassifier,
            max_queue: 0,
            max_wait: None,
            windows: Windows {
                min: Duration::from_millis(100),
                max: Duration::from_millis(250),
                min_samples: 10,
            },
            listeners: Listeners::default(),
            refused: None,
        }
    }
}

impl<C: fmt::Debug> fmt::Debug for AdaptiveLimitBuilder<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdaptiveLimitBuilder")
            .field("name", &self.name)
            .field("algorithm", &self.algorithm)
            .field("classifier", &self.classifier)
            .field("max_queue", &self.max_queue)
            .field("max_wait", &self.max_wait)
            .field("windows", &self.windows)
            .field("listeners", &self.listeners)
            .finish()
    }
}

impl<C> AdaptiveLimitBuilder<C> {
    /// Records a setting that [`settings`](Self::settings) could not
    /// apply; `build` returns the first such error before any other check.
    pub(crate) fn refuse(mut self, error: ConfigError) -> Self {
        self.refused.get_or_insert(error);
        self
    }

    crate::event::name_and_listeners!(
        "adaptive limit",
        "The name carried by this limit's events and rejections."
    );

    /// The algorithm that moves the limit: [`Aimd`](crate::adaptive::Aimd),
    /// [`Vegas`], [`Gradient2`](crate::adaptive::Gradient2), or one of
    /// your own. The limit starts at its
    /// [`initial_limit`](LimitAlgorithm::initial_limit).
    pub fn algorithm(mut self, algorithm: impl LimitAlgorithm) -> Self {
        self.algorithm = Box::new(algorithm);
        self
    }

    /// What a failure is: a call the classifier calls a
    /// [`Failure`](crate::classify::Outcome::Failure) is a dropped sample
    /// (the signal to back off); one it [`Ignored`](crate::classify::Outcome::Ignored)
    /// is no sample at all. A classifier whose verdict waits for the end
    /// of a body (gRPC's, when the status comes in trailers) holds the
    /// call's permit, and its RTT, until then.
    pub fn classifier<C2>(self, classifier: C2) -> AdaptiveLimitBuilder<C2> {
        AdaptiveLimitBuilder {
            name: self.name,
            algorithm: self.algorithm,
            classifier,
            max_queue: self.max_queue,
            max_wait: self.max_wait,
            windows: self.windows,
            listeners: self.listeners,
            refused: self.refused,
        }
    }

    /// At most this many calls wait for a permit, first come first served
    /// (0 to [`MAX_ADAPTIVE_LIMIT`]).
    pub fn max_queue(mut self, calls: u32) -> Self {
        self.max_queue = calls;
        self
    }

    /// A queued call waits at most this long, then fails with
    /// [`ConcurrencyLimited`].
    pub fn max_wait(mut self, wait: Duration) -> Self {
        self.max_wait = Some(wait);
        self
    }

    /// The algorithm learns from windows of samples, each taken as one (its
    /// mean RTT, its highest in-flight count, and a failure if any call in
    /// it failed), as concurrency-limits' `WindowedLimit` feeds its
    /// algorithms. A window lasts twice the previous one's lowest RTT (as
    /// there), at least `min` and at most `max`, so that the limit moves
    /// about once per two round trips of an idle service, as TCP's does;
    /// and it closes only once it holds [`min_samples`](Self::min_samples).
    ///
    /// Per sample, an algorithm overreacts to a busy service: AIMD backs
    /// off once for each of the many calls that a single overload slowed,
    /// and Gradient2's long average (600 samples) spans only a few seconds,
    /// after which a service that stays overloaded looks normal.
    pub fn window(mut self, min: Duration, max: Duration) -> Self {
        self.windows.min = min;
        self.windows.max = max;
        self
    }

    /// A window closes only once it holds this many samples (at least 1):
    /// a window of one or two calls says little.
    pub fn min_samples(mut self, samples: u32) -> Self {
        self.windows.min_samples = samples;
        self
    }

    /// The algorithm learns from every sample on its own, as it comes
    /// (`window(ZERO, ZERO)` and `min_samples(1)`): what concurrency-limits
    /// does without its `WindowedLimit`, and what a test of an algorithm
    /// through the layer wants.
    pub fn per_sample(mut self) -> Self {
        self.windows = Windows::PER_SAMPLE;
        self
    }

    /// Validates the configuration and makes the layer.
    ///
    /// # Errors
    /// An algorithm whose initial limit is zero or above
    /// [`MAX_ADAPTIVE_LIMIT`], a queue longer than that, a zero or
    /// unrepresentable maximum wait, a maximum wait without a queue, a
    /// window whose shortest is longer than its longest, zero samples per
    /// window.
    pub fn build(self) -> Result<AdaptiveLimitLayer<C>, ConfigError> {
        if let Some(refused) = self.refused {
            return Err(refused);
        }
        let initial = self.algorithm.initial_limit();
        validate::within("initial_limit", initial, 1..=MAX_ADAPTIVE_LIMIT)?;
        validate::within("max_queue", self.max_queue, 0..=MAX_ADAPTIVE_LIMIT)?;
        if let Some(wait) = self.max_wait {
            validate::positive("max_wait", wait)?;
            if self.max_queue == 0 {
                return Err(ConfigError::new(
                    "max_wait",
                    "has no effect without a queue; set max_queue too",
                ));
            }
        }
        validate::fits("window", self.windows.max)?;
        if self.windows.min > self.windows.max {
            return Err(ConfigError::new(
                "window",
                format!(
                    "its shortest ({:?}) is longer than its longest ({:?})",
                    self.windows.min, self.windows.max
                ),
            ));
        }
        validate::within("min_samples", self.windows.min_samples, 1..=u32::MAX)?;
        Ok(AdaptiveLimitLayer {
            shared: Arc::new(Shared {
                core: Core {
                    name: self.name,
                    semaphore: Semaphore::new(initial, self.max_queue, self.max_wait),
                    max_queue: self.max_queue,
                    max_wait: self.max_wait,
                    learner: Learner::new(self.algorithm, self.windows),
                    listeners: self.listeners,
                },
                classifier: self.classifier,
            }),
        })
    }
}
