//! [`BackoffSettings`]: a backoff as a settings document writes it.

use std::time::Duration;

use super::{Backoff, DEFAULT_MAX_DELAY, Growth, Jitter};
use crate::error::ConfigError;
use crate::settings::settings_struct;

/// The growth of a [`BackoffSettings`]: which of [`Backoff`]'s
/// constructors it stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
pub enum BackoffKind {
    /// [`Backoff::constant`]: `delay` every time.
    Constant,
    /// [`Backoff::linear`]: `initial`, then `step` more each time.
    Linear,
    /// [`Backoff::exponential`]: `initial`, then `factor` times more each time.
    Exponential,
}

impl crate::settings::Merge for BackoffKind {
    fn over(self, _: &Self) -> Self {
        self
    }
}

settings_struct! {
    /// A [`Backoff`] as plain settings: each field unset keeps what the
    /// backoff it is laid over has (the retry's default backoff, say),
    /// and [`build`](Self::build) validates it as [`BackoffBuilder::build`](super::BackoffBuilder::build)
    /// does.
    ///
    /// ```
    /// use palisade::backoff::{BackoffKind, BackoffSettings, Jitter};
    /// use std::time::Duration;
    ///
    /// let mut settings = BackoffSettings::default();
    /// settings.kind = Some(BackoffKind::Exponential);
    /// settings.initial = Some(Duration::from_millis(50));
    /// settings.max_delay = Some(Duration::from_secs(2));
    /// settings.jitter = Some(Jitter::Equal);
    /// let backoff = settings.build().unwrap();
    /// assert_eq!(backoff.max_delay(), Duration::from_secs(2));
    ///
    /// settings.delay = Some(Duration::from_secs(1));
    /// assert_eq!(settings.build().unwrap_err().parameter(), "delay");
    /// ```
    pub struct BackoffSettings {
        /// The growth; unset, the base's (exponential if there is none).
        kind: BackoffKind,
        /// A constant backoff's delay.
        delay: Duration as "crate::settings::duration::option",
        /// A linear or exponential backoff's first delay.
        initial: Duration as "crate::settings::duration::option",
        /// A linear backoff's step.
        step: Duration as "crate::settings::duration::option",
        /// An exponential backoff's factor (finite, at least 1; default 2).
        factor: f64,
        /// The cap: no delay is longer (default 30 s, or the base's).
        max_delay: Duration as "crate::settings::duration::option",
        /// The jitter (default full, or the base's).
        jitter: Jitter,
    }
    inherited_whole [kind, delay, initial, step, factor]
}

impl BackoffSettings {
    /// Validates the settings and makes the backoff, with nothing to lay
    /// them over: an exponential backoff unless `kind` says otherwise, and
    /// its first delay must be given.
    ///
    /// # Errors
    /// A field the kind has no use for (`delay` on an exponential backoff),
    /// a missing first delay, and whatever [`BackoffBuilder::build`](super::BackoffBuilder::build) refuses.
    pub fn build(&self) -> Result<Backoff, ConfigError> {
        self.build_over(None)
    }

    /// The backoff these settings make over `base`: an unset field keeps
    /// the base's value, when the base is of the same kind.
    pub(crate) fn build_over(&self, base: Option<&Backoff>) -> Result<Backoff, ConfigError> {
        let base_kind = base.map(|b| match b.growth {
            Growth::Constant(_) => BackoffKind::Constant,
            Growth::Linear { .. } => BackoffKind::Linear,
            Growth::Exponential { .. } => BackoffKind::Exponential,
        });
        let kind = self.kind.or(base_kind).unwrap_or(BackoffKind::Exponential);
        // The base's growth counts only if it is of the kind asked for.
        let growth = base.map(|b| b.growth).filter(|_| Some(kind) == base_kind);
        let name = match kind {
            BackoffKind::Constant => "a constant",
            BackoffKind::Linear => "a linear",
            BackoffKind::Exponential => "an exponential",
        };
        let unused = |parameter: &'static str, set: bool, what: &str| {
            if set {
                Err(ConfigError::new(
                    parameter,
                    format!("{name} backoff has no {what}"),
                ))
            } else {
                Ok(())
            }
        };
        let missing = |parameter: &'static str| {
            ConfigError::new(parameter, format!("{name} backoff needs one"))
        };
        let builder = match kind {
            BackoffKind::Constant => {
                unused(
                    "initial",
                    self.initial.is_some(),
                    "initial delay (use delay)",
                )?;
                unused("step", self.step.is_some(), "step")?;
                unused("factor", self.factor.is_some(), "factor")?;
                let base_delay = match growth {
                    Some(Growth::Constant(d)) => Some(d),
                    _ => None,
                };
                let delay = self.delay.or(base_delay).ok_or_else(|| missing("delay"))?;
                Backoff::constant(delay)
            }
            BackoffKind::Linear => {
                unused("delay", self.delay.is_some(), "delay (use initial)")?;
                unused("factor", self.factor.is_some(), "factor")?;
                let (base_initial, base_step) = match growth {
                    Some(Growth::Linear { initial, step }) => (Some(initial), Some(step)),
                    _ => (None, None),
                };
                let initial = self
                    .initial
                    .or(base_initial)
                    .ok_or_else(|| missing("initial"))?;
                let step = self.step.or(base_step).ok_or_else(|| missing("step"))?;
                Backoff::linear(initial, step)
            }
            BackoffKind::Exponential => {
                unused("delay", self.delay.is_some(), "delay (use initial)")?;
                unused("step", self.step.is_some(), "step")?;
                let (base_initial, base_factor) = match growth {
                    Some(Growth::Exponential { initial, factor }) => (Some(initial), Some(factor)),
                    _ => (None, None),
                };
                let initial = self
                    .initial
                    .or(base_initial)
                    .ok_or_else(|| missing("initial"))?;
                let builder = Backoff::exponential(initial);
                match self.factor.or(base_factor) {
                    Some(factor) => builder.factor(factor),
                    None => builder,
                }
            }
        };
        let max = self
            .max_delay
            .or(base.map(Backoff::max_delay))
            .unwrap_or(DEFAULT_MAX_DELAY);
        let jitter = self
            .jitter
            .or(base.map(Backoff::jitter_kind))
            .unwrap_or_default();
        builder.max_delay(max).jitter(jitter).build()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// Over a base of the same kind, an unset field keeps the base's value;
    /// over a base of another kind, nothing of the base's growth is taken.
    #[test]
    fn unset_fields_keep_the_base_of_the_same_kind() {
        let only_cap = BackoffSettings {
            max_delay: Some(ms(900)),
            ..BackoffSettings::default()
        };
        let constant = Backoff::constant(ms(70))
            .jitter(Jitter::None)
            .build()
            .unwrap();
        assert_eq!(
            only_cap.build_over(Some(&constant)).unwrap(),
            Backoff::constant(ms(70))
                .jitter(Jitter::None)
                .max_delay(ms(900))
                .build()
                .unwrap()
        );
        let linear = Backoff::linear(ms(10), ms(20)).build().unwrap();
        assert_eq!(
            only_cap.build_over(Some(&linear)).unwrap(),
            Backoff::linear(ms(10), ms(20))
                .max_delay(ms(900))
                .build()
                .unwrap()
        );
        let exponential = Backoff::exponential(ms(30)).factor(3.0).build().unwrap();
        assert_eq!(
            only_cap.build_over(Some(&exponential)).unwrap(),
            Backoff::exponential(ms(30))
                .factor(3.0)
                .max_delay(ms(900))
                .build()
                .unwrap()
        );
        // A kind of its own: the base's growth does not count.
        let own_kind = BackoffSettings {
            kind: Some(BackoffKind::Exponential),
            ..BackoffSettings::default()
        };
        let error = own_kind.build_over(Some(&linear)).unwrap_err();
        assert_eq!(error.parameter(), "initial");
        let same_kind = BackoffSettings {
            kind: Some(BackoffKind::Linear),
            ..BackoffSettings::default()
        };
        assert_eq!(same_kind.build_over(Some(&linear)).unwrap(), linear);
    }
}
