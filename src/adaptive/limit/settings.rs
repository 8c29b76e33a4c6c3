//! [`AdaptiveLimitSettings`] and [`AlgorithmSettings`]: an adaptive
//! limit's configuration as plain data.

use std::time::Duration;

use super::AdaptiveLimitBuilder;
use crate::adaptive::{Aimd, Gradient2, LimitAlgorithm, Vegas};
use crate::error::ConfigError;
use crate::settings::{Merge, settings_struct};

/// Which of the built-in algorithms an [`AlgorithmSettings`] makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
pub enum AlgorithmKind {
    /// [`Aimd`].
    Aimd,
    /// [`Vegas`], the default.
    Vegas,
    /// [`Gradient2`].
    Gradient2,
}

impl Merge for AlgorithmKind {
    fn over(self, _: &Self) -> Self {
        self
    }
}

settings_struct! {
    /// One of the built-in [limit algorithms](crate::adaptive) as plain
    /// data: `kind` (default `"vegas"`) and the settings of its builder,
    /// by the same names; a setting the kind does not have is refused.
    /// An algorithm is inherited whole: an instance that sets any of its
    /// fields takes none from its base.
    pub struct AlgorithmSettings {
        /// The algorithm: `"aimd"`, `"vegas"` (the default) or `"gradient2"`.
        kind: AlgorithmKind,
        /// The limit before the first sample.
        initial_limit: u32,
        /// The lowest the limit goes.
        min_limit: u32,
        /// The highest the limit goes.
        max_limit: u32,
        /// AIMD's [`backoff_ratio`](crate::adaptive::AimdBuilder::backoff_ratio).
        backoff_ratio: f64,
        /// AIMD's [`timeout`](crate::adaptive::AimdBuilder::timeout).
        timeout: Duration as "crate::settings::duration::option",
        /// Vegas's or Gradient2's `smoothing`.
        smoothing: f64,
        /// Vegas's [`probe_multiplier`](crate::adaptive::VegasBuilder::probe_multiplier).
        probe_multiplier: u32,
        /// Vegas's [`seed`](crate::adaptive::VegasBuilder::seed).
        seed: u64,
        /// Gradient2's [`queue_size`](crate::adaptive::Gradient2Builder::queue_size).
        queue_size: u32,
        /// Gradient2's [`long_window`](crate::adaptive::Gradient2Builder::long_window).
        long_window: u32,
        /// Gradient2's [`rtt_tolerance`](crate::adaptive::Gradient2Builder::rtt_tolerance).
        rtt_tolerance: f64,
    }
    inherited_whole [kind, initial_limit, min_limit, max_limit, backoff_ratio, timeout, smoothing, probe_multiplier, seed, queue_size, long_window, rtt_tolerance]
}

impl AlgorithmSettings {
    /// Validates the settings and makes the algorithm.
    ///
    /// # Errors
    /// A setting the kind does not have (`backoff_ratio` on Vegas), and
    /// what the kind's builder refuses.
    pub fn build(&self) -> Result<Box<dyn LimitAlgorithm>, ConfigError> {
        let s = self;
        let kind = s.kind.unwrap_or(AlgorithmKind::Vegas);
        let (name, foreign): (&str, [(&'static str, bool); 8]) = match kind {
            AlgorithmKind::Aimd => (
                "aimd",
                [
                    ("smoothing", s.smoothing.is_some()),
                    ("probe_multiplier", s.probe_multiplier.is_some()),
                    ("seed", s.seed.is_some()),
                    ("queue_size", s.queue_size.is_some()),
                    ("long_window", s.long_window.is_some()),
                    ("rtt_tolerance", s.rtt_tolerance.is_some()),
                    ("", false),
                    ("", false),
                ],
            ),
            AlgorithmKind::Vegas => (
                "vegas",
                [
                    ("backoff_ratio", s.backoff_ratio.is_some()),
                    ("timeout", s.timeout.is_some()),
                    ("queue_size", s.queue_size.is_some()),
                    ("long_window", s.long_window.is_some()),
                    ("rtt_tolerance", s.rtt_tolerance.is_some()),
                    ("", false),
                    ("", false),
                    ("", false),
                ],
            ),
            AlgorithmKind::Gradient2 => (
                "gradient2",
                [
                    ("backoff_ratio", s.backoff_ratio.is_some()),
                    ("timeout", s.timeout.is_some()),
                    ("probe_multiplier", s.probe_multiplier.is_some()),
                    ("seed", s.seed.is_some()),
                    ("", false),
                    ("", false),
                    ("", false),
                    ("", false),
                ],
            ),
        };
        if let Some((parameter, _)) = foreign.iter().find(|(_, set)| *set) {
            return Err(ConfigError::new(
                parameter,
                format!("the {name} algorithm has no {parameter}"),
            ));
        }
        macro_rules! set {
            ($builder:ident, $($field:ident),*) => {
                $(if let Some(value) = s.$field {
                    $builder = $builder.$field(value);
                })*
            };
        }
        Ok(match kind {
            AlgorithmKind::Aimd => {
                let mut builder = Aimd::builder();
                set!(
                    builder,
                    initial_limit,
                    min_limit,
                    max_limit,
                    backoff_ratio,
                    timeout
                );
                Box::new(builder.build()?)
            }
            AlgorithmKind::Vegas => {
                let mut builder = Vegas::builder();
                set!(
                    builder,
                    initial_limit,
                    min_limit,
                    max_limit,
                    smoothing,
                    probe_multiplier,
                    seed
                );
                Box::new(builder.build()?)
            }
            AlgorithmKind::Gradient2 => {
                let mut builder = Gradient2::builder();
                set!(
                    builder,
                    initial_limit,
                    min_limit,
                    max_limit,
                    smoothing,
                    queue_size,
                    long_window,
                    rtt_tolerance
                );
                Box::new(builder.build()?)
            }
        })
    }
}

settings_struct! {
    /// An [adaptive limit](super)'s settings as plain data, for
    /// [`AdaptiveLimitBuilder::settings`] and for
    /// [configuration documents](crate::config); each field a setter of
    /// the builder by the same name, unset fields keep its defaults.
    /// `window_min` and `window_max` are
    /// [`window`](AdaptiveLimitBuilder::window)'s two bounds.
    pub struct AdaptiveLimitSettings {
        /// [`name`](AdaptiveLimitBuilder::name).
        name: String,
        /// [`algorithm`](AdaptiveLimitBuilder::algorithm).
        algorithm: AlgorithmSettings,
        /// [`max_queue`](AdaptiveLimitBuilder::max_queue).
        max_queue: u32,
        /// [`max_wait`](AdaptiveLimitBuilder::max_wait).
        max_wait: Duration as "crate::settings::duration::option",
        /// The shortest window (default 100 ms).
        window_min: Duration as "crate::settings::duration::option",
        /// The longest window (default 250 ms).
        window_max: Duration as "crate::settings::duration::option",
        /// [`min_samples`](AdaptiveLimitBuilder::min_samples).
        min_samples: u32,
        /// `true`: [`per_sample`](AdaptiveLimitBuilder::per_sample), whatever
        /// the window settings say.
        per_sample: bool,
    }
}

impl<C> AdaptiveLimitBuilder<C> {
    /// Applies `settings`: each field that is set, through its setter;
    /// [`build`](Self::build) validates the result as ever, and the
    /// algorithm's errors come under `algorithm` ([`ConfigError::path`]).
    ///
    /// ```
    /// use palisade::adaptive::{AdaptiveLimitLayer, AdaptiveLimitSettings};
    ///
    /// let settings: AdaptiveLimitSettings = serde_json::from_str(
    ///     r#"{ "algorithm": { "kind": "aimd", "initial_limit": 40, "max_limit": 400 } }"#,
    /// ).unwrap();
    /// let limit = AdaptiveLimitLayer::builder().settings(&settings).build().unwrap();
    /// assert_eq!(limit.handle().limit(), 40);
    ///
    /// let wrong: AdaptiveLimitSettings =
    ///     serde_json::from_str(r#"{ "algorithm": { "kind": "vegas", "backoff_ratio": 0.8 } }"#).unwrap();
    /// let refused = AdaptiveLimitLayer::builder().settings(&wrong).build().unwrap_err();
    /// assert_eq!(refused.path(), "algorithm.backoff_ratio");
    /// ```
    pub fn settings(mut self, settings: &AdaptiveLimitSettings) -> Self {
        let s = settings;
        if let Some(name) = &s.name {
            self = self.name(name.as_str());
        }
        if let Some(algorithm) = &s.algorithm {
            match algorithm.build() {
                Ok(algorithm) => self.algorithm = algorithm,
                Err(e) => self = self.refuse(e.under("algorithm")),
            }
        }
        if let Some(calls) = s.max_queue {
            self = self.max_queue(calls);
        }
        if let Some(wait) = s.max_wait {
            self = self.max_wait(wait);
        }
        if s.window_min.is_some() || s.window_max.is_some() {
            let min = s.window_min.unwrap_or(self.windows.min);
            let max = s.window_max.unwrap_or(self.windows.max);
            self = self.window(min, max);
        }
        if let Some(samples) = s.min_samples {
            self = self.min_samples(samples);
        }
        if s.per_sample == Some(true) {
            self = self.per_sample();
        }
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_set_kind_replaces_the_bases() {
        let mine = Some(AlgorithmKind::Aimd);
        assert_eq!(mine.over(&Some(AlgorithmKind::Gradient2)), mine);
    }
}
