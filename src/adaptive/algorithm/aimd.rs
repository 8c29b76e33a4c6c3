use std::time::Duration;

use super::{LimitAlgorithm, Sample};
use crate::error::ConfigError;
use crate::validate;

/// Additive increase, multiplicative decrease: the limit grows by one per
/// successful sample while the callers use at least half of it, and is
/// multiplied by the [`backoff_ratio`](AimdBuilder::backoff_ratio) on a
/// failure or a call slower than the [`timeout`](AimdBuilder::timeout).
/// It reacts to failures only, not to latency that grows below the
/// timeout: pair it with a timeout below the layer, or choose [`Vegas`]
/// or [`Gradient2`] when latency is the first sign of overload.
///
/// concurrency-limits' `AIMDLimit`, with its defaults:
///
/// | setting | default |
/// |---|---|
/// | [`initial_limit`](AimdBuilder::initial_limit) | 20 |
/// | [`min_limit`](AimdBuilder::min_limit) | 20 |
/// | [`max_limit`](AimdBuilder::max_limit) | 200 |
/// | [`backoff_ratio`](AimdBuilder::backoff_ratio) | 0.9 (within [0.5, 1)) |
/// | [`timeout`](AimdBuilder::timeout) | 5 s |
///
/// The default floor is the initial limit, as there: with the defaults the
/// limit only ever grows from 20 and falls back to it. Lower
/// [`min_limit`](AimdBuilder::min_limit) to let it go further down.
///
/// [`Vegas`]: super::Vegas
/// [`Gradient2`]: super::Gradient2
///
/// # Examples
///
/// ```
/// use palisade::adaptive::{Aimd, LimitAlgorithm, Sample};
/// use std::time::Duration;
///
/// let mut aimd = Aimd::builder().initial_limit(10).min_limit(1).build().unwrap();
/// let ok = Sample::new(Duration::from_millis(5), 10, false);
/// assert_eq!(aimd.update(&ok), 11);
/// let failed = Sample::new(Duration::from_millis(5), 10, true);
/// assert_eq!(aimd.update(&failed), 9); // 11 × 0.9, rounded down
/// ```
#[derive(Debug, Clone)]
pub struct Aimd {
    settings: AimdBuilder,
    limit: u32,
}

impl Aimd {
    /// Starts configuring an AIMD algorithm.
    pub fn builder() -> AimdBuilder {
        AimdBuilder::default()
    }
}

impl Default for Aimd {
    /// concurrency-limits' defaults (see the table above).
    fn default() -> Self {
        AimdBuilder::default()
            .build()
            .expect("the defaults are valid")
    }
}

impl LimitAlgorithm for Aimd {
    fn initial_limit(&self) -> u32 {
        self.settings.initial_limit
    }

    fn update(&mut self, sample: &Sample) -> u32 {
        let s = &self.settings;
        let limit = if sample.dropped() || sample.rtt() > s.timeout {
            (f64::from(self.limit) * s.backoff_ratio) as u32
        } else if sample.in_flight().saturating_mul(2) >= self.limit {
            self.limit.saturating_add(1)
        } else {
            // The callers use less than half of it: a higher limit would
            // say nothing about the service.
            self.limit
        };
        self.limit = limit.clamp(s.min_limit, s.max_limit);
        self.limit
    }
}

/// Configures an [`Aimd`] algorithm; its defaults are in [`Aimd`]'s table.
#[derive(Debug, Clone, Copy)]
#[must_use = "a builder does nothing until `build` is called"]
pub struct AimdBuilder {
    initial_limit: u32,
    min_limit: u32,
    max_limit: u32,
    backoff_ratio: f64,
    timeout: Duration,
}

impl Default for AimdBuilder {
    fn default() -> Self {
        Self {
            initial_limit: 20,
            min_limit: 20,
            max_limit: 200,
            backoff_ratio: 0.9,
            timeout: Duration::from_secs(5),
        }
    }
}

impl AimdBuilder {
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

    /// What a failure multiplies the limit by, in [0.5, 1).
    pub fn backoff_ratio(mut self, ratio: f64) -> Self {
        self.backoff_ratio = ratio;
        self
    }

    /// A successful call slower than this counts as a failure.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Validates the settings and makes the algorithm.
    ///
    /// # Errors
    /// Bounds out of order or outside 1 to
    /// [`MAX_ADAPTIVE_LIMIT`](crate::adaptive::MAX_ADAPTIVE_LIMIT), an
    /// initial limit outside them, a backoff ratio outside [0.5, 1), a zero
    /// timeout.
    pub fn build(self) -> Result<Aimd, ConfigError> {
        crate::adaptive::check_bounds(self.min_limit, self.max_limit, self.initial_limit)?;
        if !(0.5..1.0).contains(&self.backoff_ratio) {
            return Err(ConfigError::new(
                "backoff_ratio",
                format!("must be in [0.5, 1), got {}", self.backoff_ratio),
            ));
        }
        validate::positive("timeout", self.timeout)?;
        Ok(Aimd {
            settings: self,
            limit: self.initial_limit,
        })
    }
}
