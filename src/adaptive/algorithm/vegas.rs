use super::{LimitAlgorithm, Sample, whole};
use crate::error::ConfigError;
use crate::validate;

/// TCP Vegas for calls: the limit follows the queue it infers from each
/// call's RTT against the lowest RTT seen (the RTT with no queue), moving
/// by about log10 of itself per sample.
///
/// With `queue = ceil(limit × (1 − rtt_noload / rtt))` and, at the current
/// limit, `log = max(1, ⌊log10(limit)⌋)`:
///
/// * a failure lowers the limit by `log`;
/// * callers using less than half the limit leave it as it is;
/// * a queue of at most `log` raises it by `6 × log` (an idle service),
///   one below `3 × log` raises it by `log`, one above `6 × log` lowers it
///   by `log`; in between it stays.
///
/// The no-load RTT is taken again from the current sample every
/// `probe_multiplier × limit` samples, times a random factor in [0.5, 1)
/// (so that replicas do not re-measure in step), so that a service that
/// got slower for good is not read as queueing for ever.
///
/// concurrency-limits' `VegasLimit` (its default algorithm), with its
/// defaults:
///
/// | setting | default |
/// |---|---|
/// | [`initial_limit`](VegasBuilder::initial_limit) | 20 |
/// | [`min_limit`](VegasBuilder::min_limit) | 1 |
/// | [`max_limit`](VegasBuilder::max_limit) | 1,000 |
/// | [`smoothing`](VegasBuilder::smoothing) | 1.0: each new limit taken whole |
/// | [`probe_multiplier`](VegasBuilder::probe_multiplier) | 30 |
///
/// # Examples
///
/// ```
/// use palisade::adaptive::{LimitAlgorithm, Sample, Vegas};
/// use std::time::Duration;
///
/// let mut vegas = Vegas::default();
/// let ms = Duration::from_millis;
/// assert_eq!(vegas.update(&Sample::new(ms(10), 20, false)), 20); // the no-load RTT
/// assert_eq!(vegas.update(&Sample::new(ms(10), 20, false)), 26); // no queue: + 6 × log10
/// assert_eq!(vegas.update(&Sample::new(ms(40), 26, false)), 25); // a queue of 20: − log10
/// ```
#[derive(Debug, Clone)]
pub struct Vegas {
    settings: VegasBuilder,
    limit: f64,
    /// The lowest RTT since the last probe, in nanoseconds; 0 before the
    /// first sample.
    rtt_noload: f64,
    probe_count: u64,
    probe_jitter: f64,
    /// SplitMix64's state, for the probe jitter.
    random: u64,
}

impl Vegas {
    /// Starts configuring a Vegas algorithm.
    pub fn builder() -> VegasBuilder {
        VegasBuilder::default()
    }

    /// A draw in [0.5, 1).
    fn jitter(&mut self) -> f64 {
        use crate::random::{GAMMA, mix, unit};
        self.random = self.random.wrapping_add(GAMMA);
        0.5 + unit(mix(self.random)) / 2.0
    }
}

impl Default for Vegas {
    /// concurrency-limits' defaults (see the table above).
    fn default() -> Self {
        VegasBuilder::default()
            .build()
            .expect("the defaults are valid")
    }
}

/// concurrency-limits' `Log10RootIntFunction`: ⌊log10(limit)⌋, at least 1.
fn log10(limit: f64) -> f64 {
    limit.log10().floor().max(1.0)
}

impl LimitAlgorithm for Vegas {
    fn initial_limit(&self) -> u32 {
        self.settings.initial_limit
    }

    fn update(&mut self, sample: &Sample) -> u32 {
        let s = self.settings;
        // A zero RTT (an answer ready at once, on paused time) would make
        // the queue undefined: count it as one nanosecond.
        let rtt = sample.rtt_nanos().max(1.0);
        self.probe_count += 1;
        if self.probe_jitter * f64::from(s.probe_multiplier) * self.limit <= self.probe_count as f64
        {
            self.probe_jitter = self.jitter();
            self.probe_count = 0;
            self.rtt_noload = rtt;
            return self.published();
        }
        if self.rtt_noload == 0.0 || rtt < self.rtt_noload {
            self.rtt_noload = rtt;
            return self.published();
        }
        let limit = self.limit;
        let log = log10(limit);
        let queue = (limit * (1.0 - self.rtt_noload / rtt)).ceil();
        let next = if sample.dropped() {
            limit - log
        } else if f64::from(sample.in_flight()) * 2.0 < limit {
            return self.published();
        } else if queue <= log {
            limit + 6.0 * log
        } else if queue < 3.0 * log {
            limit + log
        } else if queue > 6.0 * log {
            limit - log
        } else {
            return self.published();
        };
        let next = next.clamp(f64::from(s.min_limit), f64::from(s.max_limit));
        self.limit = (1.0 - s.smoothing) * limit + s.smoothing * next;
        self.published()
    }
}

impl Vegas {
    fn published(&self) -> u32 {
        let s = &self.settings;
        whole(self.limit, s.min_limit, s.max_limit)
    }
}

/// Configures a [`Vegas`] algorithm; its defaults are in [`Vegas`]'s table.
#[derive(Debug, Clone, Copy)]
#[must_use = "a builder does nothing until `build` is called"]
pub struct VegasBuilder {
    initial_limit: u32,
    min_limit: u32,
    max_limit: u32,
    smoothing: f64,
    probe_multiplier: u32,
    seed: Option<u64>,
}

impl Default for VegasBuilder {
    fn default() -> Self {
        Self {
            initial_limit: 20,
            min_limit: 1,
            max_limit: 1000,
            smoothing: 1.0,
            probe_multiplier: 30,
            seed: None,
        }
    }
}

impl VegasBuilder {
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

    /// How much of each computed limit is taken, in (0, 1]: 1 takes it
    /// whole, 0.2 moves a fifth of the way.
    pub fn smoothing(mut self, smoothing: f64) -> Self {
        self.smoothing = smoothing;
        self
    }

    /// The no-load RTT is measured again every `multiplier × limit`
    /// samples, times a random factor in [0.5, 1) (at least 1).
    pub fn probe_multiplier(mut self, multiplier: u32) -> Self {
        self.probe_multiplier = multiplier;
        self
    }

    /// Seeds the probes' random factor, so that a test or simulation
    /// replays the same probes. Without it, each algorithm draws its own
    /// seed.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// Validates the settings and makes the algorithm.
    ///
    /// # Errors
    /// Bounds out of order or outside 1 to
    /// [`MAX_ADAPTIVE_LIMIT`](crate::adaptive::MAX_ADAPTIVE_LIMIT), an
    /// initial limit outside them, a smoothing outside (0, 1], a zero
    /// probe multiplier.
    pub fn build(self) -> Result<Vegas, ConfigError> {
        crate::adaptive::check_bounds(self.min_limit, self.max_limit, self.initial_limit)?;
        validate::fraction_above_zero("smoothing", self.smoothing)?;
        validate::within("probe_multiplier", self.probe_multiplier, 1..=u32::MAX)?;
        let mut vegas = Vegas {
            settings: self,
            limit: f64::from(self.initial_limit),
            rtt_noload: 0.0,
            probe_count: 0,
            probe_jitter: 0.0,
            random: self.seed.unwrap_or_else(rand::random),
        };
        vegas.probe_jitter = vegas.jitter();
        Ok(vegas)
    }
}
