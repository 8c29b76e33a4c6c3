//! Backoff: how long to wait before each retry.
//!
//! A [`Backoff`] is a validated, `Copy` description of a delay sequence: a
//! growth (constant, linear, exponential) with a cap, and a [`Jitter`]. It
//! holds no state. Each logical call draws its own sequence from it with
//! [`Backoff::delays`] (fresh randomness) or [`Backoff::delays_seeded`] (a
//! seed that replays the same delays); the sequence, [`Delays`], is an
//! iterator that allocates nothing and costs a few arithmetic operations per
//! delay.
//!
//! Custom sequences come from any iterator factory through
//! [`Backoff::custom`]; both kinds implement [`MakeDelays`], which is what the
//! retry layer takes.
//!
//! # Jitter
//!
//! With `base(n)` the growth's `n`-th delay (counting from 0) and `cap` the
//! maximum delay, as in AWS's "Exponential Backoff and Jitter":
//!
//! | jitter | delay `n` |
//! |---|---|
//! | [`None`](Jitter::None) | `min(cap, base(n))` |
//! | [`Full`](Jitter::Full) | uniform in `[0, min(cap, base(n))]` |
//! | [`Equal`](Jitter::Equal) | `t/2 + uniform[0, t/2]` with `t = min(cap, base(n))` |
//! | [`Decorrelated`](Jitter::Decorrelated) | `min(cap, uniform[initial, 3·previous])`, previous starting at `initial` |
//! | [`DecorrelatedV2`](Jitter::DecorrelatedV2) | Polly's decorrelated jitter V2: a smooth exponential curve whose first delay has median `initial`, with jitter spread evenly, capped |
//! | [`Grpc`](Jitter::Grpc) | `min(cap, base(n)) × uniform[0.8, 1.2]`, gRPC's retry backoff (proposal A6): up to a fifth above the cap |
//!
//! The two decorrelated kinds bring their own growth, so they are accepted
//! only with [`Backoff::exponential`] (whose `initial` is their base and whose
//! factor they ignore).
//!
//! # Examples
//!
//! ```
//! use palisade::backoff::{Backoff, Jitter};
//! use std::time::Duration;
//!
//! let backoff = Backoff::exponential(Duration::from_millis(100))
//!     .max_delay(Duration::from_secs(5))
//!     .jitter(Jitter::Full)
//!     .build()
//!     .unwrap();
//!
//! // The same seed replays the same delays.
//! let a: Vec<Duration> = backoff.delays_seeded(7).take(5).collect();
//! let b: Vec<Duration> = backoff.delays_seeded(7).take(5).collect();
//! assert_eq!(a, b);
//! for (n, d) in a.iter().enumerate() {
//!     assert!(*d <= Duration::from_millis(100 * 2u64.pow(n as u32)));
//! }
//! ```

mod custom;
mod settings;

pub use self::custom::{CustomBackoff, CustomBackoffBuilder, CustomDelays};
pub use self::settings::{BackoffKind, BackoffSettings};

use std::time::Duration;

use rand::rngs::Xoshiro256PlusPlus;
use rand::{RngExt, SeedableRng};

use crate::clock::nanos;
use crate::error::ConfigError;
use crate::validate;

/// How randomness spreads the delays; see the [module docs](self) for the
/// formulas.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
pub enum Jitter {
    /// No randomness: every client waits the same. Synchronised clients stay
    /// synchronised; use only when there is a single client.
    None,
    /// Uniform in `[0, delay]`. Spreads load best; AWS's recommendation.
    #[default]
    Full,
    /// Half the delay fixed, half random: never retries almost at once.
    Equal,
    /// AWS's decorrelated jitter: each delay is random between the base and
    /// three times the previous one.
    Decorrelated,
    /// Polly's `DecorrelatedJitterBackoffV2`: an even spread around an
    /// exponential curve, without the clumping of the other kinds.
    DecorrelatedV2,
    /// gRPC's (proposal A6, since 2024): the capped delay times a uniform
    /// factor in `[0.8, 1.2]`. The one kind that may exceed the cap, by up
    /// to a fifth, as A6 says. (A6's earlier rule, uniform in
    /// `[0, min(cap, base(n))]`, is [`Full`](Self::Full).)
    Grpc,
}

/// Something that makes a fresh sequence of delays for each logical call.
///
/// Implemented by [`Backoff`] and [`CustomBackoff`]. A sequence that ends
/// means "no more retries".
pub trait MakeDelays {
    /// The sequence of delays for one call.
    type Delays: Iterator<Item = Duration>;

    /// A sequence whose randomness is drawn from `seed`.
    fn make_delays(&self, seed: u64) -> Self::Delays;
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Growth {
    Constant(Duration),
    Linear { initial: Duration, step: Duration },
    Exponential { initial: Duration, factor: f64 },
}

/// A validated backoff: growth, cap and jitter. Build one with
/// [`Backoff::constant`], [`Backoff::linear`] or [`Backoff::exponential`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    growth: Growth,
    jitter: Jitter,
    /// The cap, in nanoseconds.
    max_nanos: u64,
}

/// Configures a [`Backoff`]; [`build`](Self::build) validates it.
#[derive(Debug, Clone, Copy, PartialEq)]
#[must_use = "a builder does nothing until `build` is called"]
pub struct BackoffBuilder {
    growth: Growth,
    factor: Option<f64>,
    jitter: Jitter,
    max: Duration,
}

/// The default cap: long enough for any sane server, short enough that a
/// forgotten cap does not park a caller for minutes.
pub const DEFAULT_MAX_DELAY: Duration = Duration::from_secs(30);

impl Backoff {
    /// The same delay every time.
    ///
    /// A zero delay retries at once.
    ///
    /// # Default
    /// Cap [`DEFAULT_MAX_DELAY`] (30 s), [`Jitter::Full`].
    pub const fn constant(delay: Duration) -> BackoffBuilder {
        BackoffBuilder::new(Growth::Constant(delay))
    }

    /// `initial`, then `initial + step`, `initial + 2·step`, …
    ///
    /// # Default
    /// Cap [`DEFAULT_MAX_DELAY`] (30 s), [`Jitter::Full`].
    pub const fn linear(initial: Duration, step: Duration) -> BackoffBuilder {
        BackoffBuilder::new(Growth::Linear { initial, step })
    }

    /// `initial`, then `initial·factor`, `initial·factor²`, …
    ///
    /// # Default
    /// Factor 2, cap [`DEFAULT_MAX_DELAY`] (30 s), [`Jitter::Full`].
    pub const fn exponential(initial: Duration) -> BackoffBuilder {
        BackoffBuilder::new(Growth::Exponential {
            initial,
            factor: 2.0,
        })
    }

    /// A backoff from a factory of delay iterators; see [`CustomBackoff`].
    pub fn custom<F, I>(make: F) -> CustomBackoffBuilder<F>
    where
        F: Fn() -> I,
        I: IntoIterator<Item = Duration>,
    {
        CustomBackoffBuilder::new(make)
    }

    /// The jitter in use.
    pub fn jitter_kind(&self) -> Jitter {
        self.jitter
    }

    /// The cap: no delay is ever longer, but for [`Jitter::Grpc`]'s, which
    /// may be a fifth longer (as gRPC's own clients wait).
    pub fn max_delay(&self) -> Duration {
        Duration::from_nanos(self.max_nanos)
    }

    /// A sequence of delays with fresh randomness, different from every other
    /// sequence's.
    pub fn delays(&self) -> Delays {
        self.delays_seeded(rand::random())
    }

    /// A sequence of delays whose randomness comes from `seed`: the same seed
    /// gives the same delays.
    pub fn delays_seeded(&self, seed: u64) -> Delays {
        Delays {
            backoff: *self,
            attempt: 0,
            previous_nanos: 0,
            v2_previous: 0.0,
            rng: Xoshiro256PlusPlus::seed_from_u64(seed),
        }
    }

    /// The growth's `n`-th delay (from 0) before jitter, capped.
    fn base_nanos(&self, n: u32) -> u64 {
        let raw = match self.growth {
            Growth::Constant(d) => nanos(d),
            Growth::Linear { initial, step } => {
                nanos(initial).saturating_add(nanos(step).saturating_mul(u64::from(n)))
            }
            Growth::Exponential { initial, factor } if factor.fract() == 0.0 => {
                // Integral factors (2 above all) stay exact in integers.
                let power = (factor as u64).saturating_pow(n);
                nanos(initial).saturating_mul(power)
            }
            Growth::Exponential { initial, factor } => {
                let exp = i32::try_from(n).unwrap_or(i32::MAX);
                // `as` saturates: an infinite product becomes u64::MAX.
                (nanos(initial) as f64 * factor.powi(exp)) as u64
            }
        };
        raw.min(self.max_nanos)
    }

    fn initial_nanos(&self) -> u64 {
        match self.growth {
            Growth::Constant(d) => nanos(d),
            Growth::Linear { initial, .. } | Growth::Exponential { initial, .. } => nanos(initial),
        }
    }
}

impl MakeDelays for Backoff {
    type Delays = Delays;

    fn make_delays(&self, seed: u64) -> Delays {
        self.delays_seeded(seed)
    }
}

impl BackoffBuilder {
    const fn new(growth: Growth) -> Self {
        Self {
            growth,
            factor: None,
            jitter: Jitter::Full,
            max: DEFAULT_MAX_DELAY,
        }
    }

    /// The growth factor of an exponential backoff. Must be finite and at
    /// least 1. Has no meaning (and is refused by `build`) for other growths.
    pub const fn factor(mut self, factor: f64) -> Self {
        self.factor = Some(factor);
        self
    }

    /// The cap: no delay is ever longer (but by [`Jitter::Grpc`]'s fifth).
    /// Must be at least the initial delay.
    pub const fn max_delay(mut self, max: Duration) -> Self {
        self.max = max;
        self
    }

    /// The jitter; see [`Jitter`].
    pub const fn jitter(mut self, jitter: Jitter) -> Self {
        self.jitter = jitter;
        self
    }

    /// Validates the configuration.
    ///
    /// # Errors
    /// A zero cap, an initial delay above the cap, an exponential backoff that
    /// starts at zero or whose factor is not a finite number ≥ 1, a linear
    /// backoff that never grows from zero, a decorrelated jitter on a growth
    /// other than exponential, a duration too long to represent.
    pub fn build(mut self) -> Result<Backoff, ConfigError> {
        match (&mut self.growth, self.factor) {
            (Growth::Exponential { factor, .. }, Some(f)) => *factor = f,
            (_, Some(_)) => {
                return Err(ConfigError::new(
                    "factor",
                    "only an exponential backoff has a factor",
                ));
            }
            (_, None) => {}
        }
        validate::fits("max_delay", self.max)?;
        if self.max.is_zero() {
            return Err(ConfigError::new("max_delay", "must be longer than zero"));
        }
        let initial = match self.growth {
            Growth::Constant(d) => {
                validate::fits("delay", d)?;
                d
            }
            Growth::Linear { initial, step } => {
                validate::fits("initial", initial)?;
                validate::fits("step", step)?;
                if initial.is_zero() && step.is_zero() {
                    return Err(ConfigError::new(
                        "step",
                        "a linear backoff from zero with a zero step never waits; use Backoff::constant(Duration::ZERO) to retry at once",
                    ));
                }
                initial
            }
            Growth::Exponential { initial, factor } => {
                if !factor.is_finite() || factor < 1.0 {
                    return Err(ConfigError::new(
                        "factor",
                        format!("must be a finite number of at least 1, got {factor}"),
                    ));
                }
                validate::fits("initial", initial)?;
                if initial.is_zero() {
                    return Err(ConfigError::new(
                        "initial",
                        "an exponential backoff must start above zero",
                    ));
                }
                initial
            }
        };
        if initial > self.max {
            return Err(ConfigError::new(
                "max_delay",
                format!(
                    "the cap {:?} is below the initial delay {initial:?}; raise max_delay",
                    self.max
                ),
            ));
        }
        if matches!(self.jitter, Jitter::Decorrelated | Jitter::DecorrelatedV2)
            && !matches!(self.growth, Growth::Exponential { .. })
        {
            return Err(ConfigError::new(
                "jitter",
                "decorrelated jitters bring their own growth; use them with Backoff::exponential",
            ));
        }
        Ok(Backoff {
            growth: self.growth,
            jitter: self.jitter,
            max_nanos: nanos(self.max),
        })
    }
}

/// One call's sequence of delays, from [`Backoff::delays`]. Endless: the
/// retry layer's attempt limit decides when to stop.
#[derive(Debug, Clone)]
pub struct Delays {
    backoff: Backoff,
    attempt: u32,
    previous_nanos: u64,
    /// Polly's V2 formula value at the previous attempt.
    v2_previous: f64,
    rng: Xoshiro256PlusPlus,
}

impl Delays {
    /// How many delays this sequence has given.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    fn next_nanos(&mut self) -> u64 {
        let b = &self.backoff;
        let n = self.attempt;
        let cap = b.max_nanos;
        match b.jitter {
            Jitter::None => b.base_nanos(n),
            Jitter::Full => self.rng.random_range(0..=b.base_nanos(n)),
            Jitter::Equal => {
                let t = b.base_nanos(n);
                t / 2 + self.rng.random_range(0..=t - t / 2)
            }
            Jitter::Grpc => {
                let t = b.base_nanos(n);
                // `as` saturates: 1.2 × a delay near u64::MAX stays there.
                (t as f64 * self.rng.random_range(0.8..=1.2)) as u64
            }
            Jitter::Decorrelated => {
                let base = b.initial_nanos();
                let previous = if n == 0 { base } else { self.previous_nanos };
                let upper = previous.saturating_mul(3).max(base);
                self.rng.random_range(base..=upper).min(cap)
            }
            Jitter::DecorrelatedV2 => {
                // Polly's DecorrelatedJitterBackoffV2 (credit: George Polevoy).
                const P_FACTOR: f64 = 4.0;
                const RP_SCALING_FACTOR: f64 = 1.0 / 1.4;
                let t = f64::from(n) + self.rng.random::<f64>();
                let next = t.exp2() * (P_FACTOR * t).sqrt().tanh();
                if !next.is_finite() {
                    self.v2_previous = next;
                    return cap;
                }
                let step = next - self.v2_previous;
                self.v2_previous = next;
                let delay = step * RP_SCALING_FACTOR * b.initial_nanos() as f64;
                // `as` saturates and maps NaN to 0; the cap bounds the rest.
                (delay.max(0.0) as u64).min(cap)
            }
        }
    }
}

impl Iterator for Delays {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        let nanos = self.next_nanos();
        self.previous_nanos = nanos;
        self.attempt = self.attempt.saturating_add(1);
        Some(Duration::from_nanos(nanos))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (usize::MAX, None)
    }
}

/// Derives the seed of the `session`-th sequence from a user's seed, so that
/// the sessions of one seeded layer replay exactly but do not repeat each
/// other (SplitMix64's finaliser).
pub(crate) fn session_seed(seed: u64, session: u64) -> u64 {
    crate::random::mix(
        seed.wrapping_add(session.wrapping_add(1).wrapping_mul(crate::random::GAMMA)),
    )
}

#[cfg(test)]
mod tests;
