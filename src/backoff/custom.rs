use std::fmt;
use std::time::Duration;

use rand::rngs::Xoshiro256PlusPlus;
use rand::{RngExt, SeedableRng};

use super::{DEFAULT_MAX_DELAY, Jitter, MakeDelays};
use crate::clock::nanos;
use crate::error::ConfigError;
use crate::validate;

/// A backoff whose delays come from the user: a factory called once per
/// logical call, returning any iterator of delays. When the iterator ends,
/// the retrying ends.
///
/// Each delay is capped, then jittered ([`Jitter::None`], [`Jitter::Full`] or
/// [`Jitter::Equal`]; the decorrelated kinds have their own growth and are
/// refused).
///
/// # Default
/// Cap [`DEFAULT_MAX_DELAY`](super::DEFAULT_MAX_DELAY) (30 s), [`Jitter::None`]:
/// the delays are the ones given.
///
/// # Examples
///
/// ```
/// use palisade::backoff::{Backoff, MakeDelays};
/// use std::time::Duration;
///
/// // Fibonacci delays in units of 10 ms, then stop after 6.
/// let backoff = Backoff::custom(|| {
///     let mut fib = (1u64, 1u64);
///     std::iter::from_fn(move || {
///         let d = fib.0;
///         fib = (fib.1, fib.0 + fib.1);
///         Some(Duration::from_millis(10 * d))
///     })
///     .take(6)
/// })
/// .build()
/// .unwrap();
///
/// let delays: Vec<u128> = backoff.make_delays(0).map(|d| d.as_millis()).collect();
/// assert_eq!(delays, [10, 10, 20, 30, 50, 80]);
/// ```
#[derive(Clone, Copy)]
pub struct CustomBackoff<F> {
    make: F,
    jitter: Jitter,
    max_nanos: u64,
}

impl<F> fmt::Debug for CustomBackoff<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CustomBackoff")
            .field("jitter", &self.jitter)
            .field("max_delay", &Duration::from_nanos(self.max_nanos))
            .finish_non_exhaustive()
    }
}

/// Configures a [`CustomBackoff`]; made by [`Backoff::custom`](super::Backoff::custom).
#[derive(Clone, Copy)]
#[must_use = "a builder does nothing until `build` is called"]
pub struct CustomBackoffBuilder<F> {
    make: F,
    jitter: Jitter,
    max: Duration,
}

impl<F> fmt::Debug for CustomBackoffBuilder<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CustomBackoffBuilder")
            .field("jitter", &self.jitter)
            .field("max_delay", &self.max)
            .finish_non_exhaustive()
    }
}

impl<F> CustomBackoffBuilder<F> {
    pub(super) fn new(make: F) -> Self {
        Self {
            make,
            jitter: Jitter::None,
            max: DEFAULT_MAX_DELAY,
        }
    }

    /// The cap: a longer delay from the iterator is shortened to it.
    pub fn max_delay(mut self, max: Duration) -> Self {
        self.max = max;
        self
    }

    /// The jitter applied to each delay: `None`, `Full`, `Equal` or `Grpc`.
    pub fn jitter(mut self, jitter: Jitter) -> Self {
        self.jitter = jitter;
        self
    }

    /// Validates the configuration.
    ///
    /// # Errors
    /// A zero or unrepresentable cap; a decorrelated jitter.
    pub fn build(self) -> Result<CustomBackoff<F>, ConfigError> {
        validate::positive("max_delay", self.max)?;
        if matches!(self.jitter, Jitter::Decorrelated | Jitter::DecorrelatedV2) {
            return Err(ConfigError::new(
                "jitter",
                "decorrelated jitters bring their own growth; a custom backoff takes None, Full, Equal or Grpc",
            ));
        }
        Ok(CustomBackoff {
            make: self.make,
            jitter: self.jitter,
            max_nanos: nanos(self.max),
        })
    }
}

impl<F, I> MakeDelays for CustomBackoff<F>
where
    F: Fn() -> I,
    I: IntoIterator<Item = Duration>,
{
    type Delays = CustomDelays<I::IntoIter>;

    fn make_delays(&self, seed: u64) -> Self::Delays {
        CustomDelays {
            inner: (self.make)().into_iter(),
            jitter: self.jitter,
            max_nanos: self.max_nanos,
            rng: Xoshiro256PlusPlus::seed_from_u64(seed),
        }
    }
}

/// One call's sequence from a [`CustomBackoff`].
#[derive(Debug, Clone)]
pub struct CustomDelays<I> {
    inner: I,
    jitter: Jitter,
    max_nanos: u64,
    rng: Xoshiro256PlusPlus,
}

impl<I: Iterator<Item = Duration>> Iterator for CustomDelays<I> {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        let t = nanos(self.inner.next()?).min(self.max_nanos);
        let jittered = match self.jitter {
            Jitter::Full => self.rng.random_range(0..=t),
            Jitter::Equal => t / 2 + self.rng.random_range(0..=t - t / 2),
            Jitter::Grpc => (t as f64 * self.rng.random_range(0.8..=1.2)) as u64,
            // `build` admits no other kind.
            _ => t,
        };
        Some(Duration::from_nanos(jittered))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.inner.size_hint()
    }
}
