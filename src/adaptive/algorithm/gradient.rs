use super::{LimitAlgorithm, Sample, whole};
use crate::error::ConfigError;
use crate::validate;

/// The limit follows the ratio of a long average RTT to the latest one:
/// while calls take no more than `rtt_tolerance` times the long average,
/// the limit grows by the queue allowance; when they take longer, it
/// shrinks in proportion, by at most half per sample before smoothing.
///
/// `gradient = clamp(rtt_tolerance × long_rtt / rtt, 0.5, 1)` and the new
/// limit is `limit × gradient + queue_size`, taken a `smoothing` part of
/// the way. The long RTT is an exponential average over about
/// `long_window` samples (a plain mean for the first 10); when it is more
/// than twice the latest RTT (the service got faster for good) it decays
/// by 5% per sample so that it catches up. Callers using less than half
/// the limit leave it as it is. Failures count only through their RTT, as
/// there: pair it with a timeout below the layer, whose
/// [`Elapsed`](crate::error::Elapsed) is a long RTT.
///
/// concurrency-limits' `Gradient2Limit`, with its defaults:
///
/// | setting | default |
/// |---|---|
/// | [`initial_limit`](Gradient2Builder::initial_limit) | 20 |
/// | [`min_limit`](Gradient2Builder::min_limit) | 20 |
/// | [`max_limit`](Gradient2Builder::max_limit) | 200 |
/// | [`smoothing`](Gradient2Builder::smoothing) | 0.2 |
/// | [`queue_size`](Gradient2Builder::queue_size) | 4 |
/// | [`long_window`](Gradient2Builder::long_window) | 600 samples |
/// | [`rtt_tolerance`](Gradient2Builder::rtt_tolerance) | 1.5 |
///
/// # Examples
///
/// ```
/// use palisade::adaptive::{Gradient2, LimitAlgorithm, Sample};
/// use std::time::Duration;
///
/// let mut gradient = Gradient2::builder().min_limit(1).build().unwrap();
/// let ms = Duration::from_millis;
/// assert_eq!(gradient.update(&Sample::new(ms(10), 20, false)), 20); // 20 + 0.2 × 4 = 20.8
/// assert_eq!(gradient.update(&Sample::new(ms(10), 20, false)), 21); // 21.6
/// // The long RTT is now 40 ms: the gradient is 1.5 × 40 / 100 = 0.6.
/// assert_eq!(gradient.update(&Sample::new(ms(100), 21, false)), 20); // 21.6 × 0.8 + (21.6 × 0.6 + 4) × 0.2
/// ```
#[derive(Debug, Clone)]
pub struct Gradient2 {
    settings: Gradient2Builder,
    limit: f64,
    long_rtt: ExpAverage,
}

impl Gradient2 {
    /// Starts configuring a Gradient2 algorithm.
    pub fn builder() -> Gradient2Builder {
        Gradient2Builder::default()
    }
}

impl Default for Gradient2 {
    /// concurrency-limits' defaults (see the table above).
    fn default() -> Self {
        Gradient2Builder::default()
            .build()
            .expect("the defaults are valid")
    }
}

impl LimitAlgorithm for Gradient2 {
    fn initial_limit(&self) -> u32 {
        self.settings.initial_limit
    }

    fn update(&mut self, sample: &Sample) -> u32 {
        let s = self.settings;
        let short = sample.rtt_nanos().max(1.0);
        let long = self.long_rtt.add(short);
        if long / short > 2.0 {
            self.long_rtt.value *= 0.95;
        }
        let limit = self.limit;
        if f64::from(sample.in_flight()) < limit / 2.0 {
            return self.published();
        }
        let gradient = (s.rtt_tolerance * long / short).clamp(0.5, 1.0);
        let next = limit * gradient + f64::from(s.queue_size);
        let next = limit * (1.0 - s.smoothing) + next * s.smoothing;
        self.limit = next.clamp(f64::from(s.min_limit), f64::from(s.max_limit));
        self.published()
    }
}

impl Gradient2 {
    fn published(&self) -> u32 {
        let s = &self.settings;
        whole(self.limit, s.min_limit, s.max_limit)
    }
}

/// concurrency-limits' `ExpAvgMeasurement`: a plain mean of the first
/// `warmup` samples, then an exponential average with factor
/// `2 / (window + 1)`.
#[derive(Debug, Clone, Copy)]
struct ExpAverage {
    value: f64,
    count: u32,
    window: u32,
}

impl ExpAverage {
    const WARMUP: u32 = 10;

    fn add(&mut self, sample: f64) -> f64 {
        if self.count < Self::WARMUP {
            self.count += 1;
            self.value += (sample - self.value) / f64::from(self.count);
        } else {
            let factor = 2.0 / (f64::from(self.window) + 1.0);
            self.value = self.value * (1.0 - factor) + sample * factor;
        }
        self.value
    }
}

/// Configures a [`Gradient2`] algorithm; its defaults are in
/// [`Gradient2`]'s table.
#[derive(Debug, Clone, Copy)]
#[must_use = "a builder does nothing until `build` is called"]
pub struct Gradient2Builder {
    initial_limit: u32,
    min_limit: u32,
    max_limit: u32,
    smoothing: f64,
    queue_size: u32,
    long_window: u32,
    rtt_tolerance: f64,
}

impl Default for Gradient2Builder {
    fn default() -> Self {
        Self {
            initial_limit: 20,
            min_limit: 20,
            max_limit: 200,
            smoothing: 0.2,
            queue_size: 4,
            long_window: 600,
            rtt_tolerance: 1.5,
        }
    }
}

impl Gradient2Builder {
    /// The limit before the first sample (within the bounds).
    pub fn initial_limit(mut self, limit: u32) -> Self {
        self.initial_limit = limit;
        self
    }

    /// The lowest the limit goes (at least 1).
    pub fn min_limit(mut self, limit: u32) -> Self {
        self.min_limit = limit;
        self
    }

    /// The highest the limit goes (at most
    /// [`MAX_ADAPTIVE_LIMIT`](crate::adaptive::MAX_ADAPTIVE_LIMIT)).
    pub fn max_limit(mut self, limit: u32) -> Self {
        self.max_limit = limit;
        self
    }

    /// How much of each computed limit is taken, in (0, 1].
    pub fn smoothing(mut self, smoothing: f64) -> Self {
        self.smoothing = smoothing;
        self
    }

    /// The calls the limit allows above what the gradient keeps: its
    /// growth per sample while the service keeps up (0 to 10,000).
    pub fn queue_size(mut self, calls: u32) -> Self {
        self.queue_size = calls;
        self
    }

    /// About how many samples the long RTT averages over (at least 10).
    pub fn long_window(mut self, samples: u32) -> Self {
        self.long_window = samples;
        self
    }

    /// How much slower than the long average a call may be before the
    /// limit shrinks (at least 1).
    pub fn rtt_tolerance(mut self, tolerance: f64) -> Self {
        self.rtt_tolerance = tolerance;
        self
    }

    /// Validates the settings and makes the algorithm.
    ///
    /// # Errors
    /// Bounds out of order or outside 1 to
    /// [`MAX_ADAPTIVE_LIMIT`](crate::adaptive::MAX_ADAPTIVE_LIMIT), an
    /// initial limit outside them, a smoothing outside (0, 1], a queue
    /// above 10,000, a long window under 10 samples, an RTT tolerance
    /// below 1 or not finite.
    pub fn build(self) -> Result<Gradient2, ConfigError> {
        crate::adaptive::check_bounds(self.min_limit, self.max_limit, self.initial_limit)?;
        validate::fraction_above_zero("smoothing", self.smoothing)?;
        validate::within("queue_size", self.queue_size, 0..=10_000)?;
        validate::within(
            "long_window",
            self.long_window,
            ExpAverage::WARMUP..=u32::MAX,
        )?;
        if !(self.rtt_tolerance >= 1.0 && self.rtt_tolerance.is_finite()) {
            return Err(ConfigError::new(
                "rtt_tolerance",
                format!("must be at least 1 and finite, got {}", self.rtt_tolerance),
            ));
        }
        Ok(Gradient2 {
            settings: self,
            limit: f64::from(self.initial_limit),
            long_rtt: ExpAverage {
                value: 0.0,
                count: 0,
                window: self.long_window,
            },
        })
    }
}
