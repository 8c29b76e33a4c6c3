//! The errors palisade's layers return, and how to tell them apart.
//!
//! Every layer's `Error` is [`BoxError`], as in tower, so palisade's layers stack
//! with tower's own and with tonic. The inner service's error passes through
//! unchanged; each rejection that a layer produces itself is a public type of its
//! own: [`CircuitOpen`], [`BulkheadFull`], [`Elapsed`] and [`BudgetExhausted`].
//! [`ErrorKind::of`] tells which one an error is by its type, never by its text.
//!
//! Builders return [`ConfigError`] for a configuration that cannot work.

use std::error::Error as StdError;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// The error type of every palisade layer: any error, boxed, as in tower.
pub type BoxError = Box<dyn StdError + Send + Sync>;

/// A circuit breaker refused the call without sending it to the inner service.
///
/// Carries the breaker's name and how long until the breaker may let a call
/// through again: zero when a half-open breaker's probes are all out (one
/// may finish any moment), [`Duration::MAX`] when it is forced open by hand.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CircuitOpen {
    name: Arc<str>,
    retry_after: Duration,
}

impl CircuitOpen {
    pub(crate) fn new(name: Arc<str>, retry_after: Duration) -> Self {
        Self { name, retry_after }
    }

    /// The name given to the breaker that refused the call.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// How long until the breaker may admit a call again.
    pub fn retry_after(&self) -> Duration {
        self.retry_after
    }
}

impl fmt::Display for CircuitOpen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.retry_after == Duration::MAX {
            write!(f, "circuit breaker `{}` is held open by hand", self.name)
        } else if self.retry_after.is_zero() {
            write!(
                f,
                "circuit breaker `{}` is half-open with every probe out; \
                 it may admit a call when one finishes",
                self.name
            )
        } else {
            write!(
                f,
                "circuit breaker `{}` is open; it may admit calls again in {:?}",
                self.name, self.retry_after
            )
        }
    }
}

impl StdError for CircuitOpen {}

/// A bulkhead refused the call: all its permits were taken and its queue was
/// full, or the call waited in the queue for longer than allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BulkheadFull(pub(crate) ());

impl fmt::Display for BulkheadFull {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("bulkhead is full")
    }
}

impl StdError for BulkheadFull {}

/// A call did not finish within its time limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Elapsed(pub(crate) ());

impl fmt::Display for Elapsed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("request timed out")
    }
}

impl StdError for Elapsed {}

/// A retry was wanted but the retry budget had no retries left.
///
/// Only returned where there is no inner result to hand back instead; when the
/// last attempt produced a response or an error, the retry layer returns that.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BudgetExhausted(pub(crate) ());

impl fmt::Display for BudgetExhausted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("retry budget exhausted")
    }
}

impl StdError for BudgetExhausted {}

/// Which kind of error a [`BoxError`] from a palisade stack is.
///
/// # Examples
///
/// ```
/// use palisade::error::{BoxError, ErrorKind};
///
/// let err: BoxError = "connection reset".into();
/// assert_eq!(ErrorKind::of(&err), ErrorKind::Inner);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// A [`CircuitOpen`] rejection.
    CircuitOpen,
    /// A [`BulkheadFull`] rejection.
    BulkheadFull,
    /// An [`Elapsed`] timeout.
    Elapsed,
    /// A [`BudgetExhausted`] rejection.
    BudgetExhausted,
    /// Any other error: the inner service's own, passed through unchanged.
    Inner,
}

impl ErrorKind {
    /// Tells which kind `err` is, by its type.
    ///
    /// The error itself is looked at first, then its chain of
    /// [`source`](StdError::source)s, so that a rejection wrapped by a client
    /// library (tonic turns a transport error into a `Status` whose source is
    /// the original error) is still recognised.
    pub fn of(err: &BoxError) -> ErrorKind {
        Self::of_dyn(&**err)
    }

    /// Like [`ErrorKind::of`], for an error behind any reference.
    pub fn of_dyn(err: &(dyn StdError + 'static)) -> ErrorKind {
        let mut current = Some(err);
        while let Some(e) = current {
            if e.is::<CircuitOpen>() {
                return ErrorKind::CircuitOpen;
            }
            if e.is::<BulkheadFull>() {
                return ErrorKind::BulkheadFull;
            }
            if e.is::<Elapsed>() {
                return ErrorKind::Elapsed;
            }
            if e.is::<BudgetExhausted>() {
                return ErrorKind::BudgetExhausted;
            }
            current = e.source();
        }
        ErrorKind::Inner
    }

    /// Whether this kind is a rejection made by a palisade layer rather than
    /// an error of the inner service.
    pub fn is_rejection(self) -> bool {
        !matches!(self, ErrorKind::Inner)
    }
}

/// A set of [`ErrorKind`]s: which errors a fallback handles
/// ([`only_on`](crate::fallback::FallbackBuilder::only_on)) and which
/// rejections a retry sends again
/// ([`retry_on`](crate::retry::RetryBuilder::retry_on)). One bit per kind:
/// `Copy`, and a membership test is a mask.
///
/// # Examples
///
/// ```
/// use palisade::error::{ErrorKind, ErrorKinds};
///
/// let kinds = ErrorKinds::from([ErrorKind::CircuitOpen, ErrorKind::BulkheadFull]);
/// assert!(kinds.contains(ErrorKind::BulkheadFull));
/// assert!(!kinds.contains(ErrorKind::Elapsed));
/// assert!(kinds.with(ErrorKind::Elapsed).contains(ErrorKind::Elapsed));
/// assert!(ErrorKinds::NONE.is_empty());
/// ```
///
/// `ErrorKinds::default()` is the empty set, [`ErrorKinds::NONE`].
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct ErrorKinds(u8);

impl ErrorKinds {
    /// No kind.
    pub const NONE: Self = Self(0);

    const fn bit(kind: ErrorKind) -> u8 {
        1 << match kind {
            ErrorKind::CircuitOpen => 0,
            ErrorKind::BulkheadFull => 1,
            ErrorKind::Elapsed => 2,
            ErrorKind::BudgetExhausted => 3,
            ErrorKind::Inner => 4,
        }
    }

    /// This set and `kind`.
    #[must_use]
    pub const fn with(self, kind: ErrorKind) -> Self {
        Self(self.0 | Self::bit(kind))
    }

    /// This set without `kind`.
    #[must_use]
    pub const fn without(self, kind: ErrorKind) -> Self {
        Self(self.0 & !Self::bit(kind))
    }

    /// Whether `kind` is in the set.
    #[inline]
    pub const fn contains(self, kind: ErrorKind) -> bool {
        self.0 & Self::bit(kind) != 0
    }

    /// Whether the set is empty.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The kinds in the set.
    pub fn iter(self) -> impl Iterator<Item = ErrorKind> {
        [
            ErrorKind::CircuitOpen,
            ErrorKind::BulkheadFull,
            ErrorKind::Elapsed,
            ErrorKind::BudgetExhausted,
            ErrorKind::Inner,
        ]
        .into_iter()
        .filter(move |k| self.contains(*k))
    }
}

impl fmt::Debug for ErrorKinds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

impl From<ErrorKind> for ErrorKinds {
    fn from(kind: ErrorKind) -> Self {
        Self::NONE.with(kind)
    }
}

impl<const N: usize> From<[ErrorKind; N]> for ErrorKinds {
    fn from(kinds: [ErrorKind; N]) -> Self {
        kinds.into_iter().collect()
    }
}

impl FromIterator<ErrorKind> for ErrorKinds {
    fn from_iter<I: IntoIterator<Item = ErrorKind>>(kinds: I) -> Self {
        kinds.into_iter().fold(Self::NONE, Self::with)
    }
}

/// A builder was given a configuration that cannot work.
///
/// Names the offending parameter and says why, so the message can be shown
/// as is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    part: Option<&'static str>,
    parameter: &'static str,
    reason: String,
}

impl ConfigError {
    pub(crate) fn new(parameter: &'static str, reason: impl Into<String>) -> Self {
        Self {
            part: None,
            parameter,
            reason: reason.into(),
        }
    }

    /// The same error, said of the preset's part `part` (the first part
    /// named stays: it is the innermost).
    pub(crate) fn in_part(mut self, part: &'static str) -> Self {
        self.part.get_or_insert(part);
        self
    }

    /// The preset's part whose parameter was refused, when the error came
    /// from [`ResilienceBuilder::build`](crate::preset::ResilienceBuilder::build):
    /// one of `"respond"`, `"fallback"`, `"total_timeout"`, `"retry"`,
    /// `"circuit_breaker"`, `"rate_limit"`, `"bulkhead"` and
    /// `"attempt_timeout"` (the setters' names).
    pub fn part(&self) -> Option<&'static str> {
        self.part
    }

    /// The name of the parameter that was refused.
    pub fn parameter(&self) -> &'static str {
        self.parameter
    }

    /// Why it was refused.
    pub fn reason(&self) -> &str {
        &self.reason
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.part {
            Some(part) => write!(f, "invalid `{part}.{}`: {}", self.parameter, self.reason),
            None => write!(f, "invalid `{}`: {}", self.parameter, self.reason),
        }
    }
}

impl StdError for ConfigError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Wrapper(BoxError);
    impl fmt::Display for Wrapper {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("wrapped")
        }
    }
    impl StdError for Wrapper {
        fn source(&self) -> Option<&(dyn StdError + 'static)> {
            Some(&*self.0)
        }
    }

    #[test]
    fn kinds_are_told_apart_by_type() {
        let cases: Vec<(BoxError, ErrorKind)> = vec![
            (
                Box::new(CircuitOpen::new("db".into(), Duration::from_secs(1))),
                ErrorKind::CircuitOpen,
            ),
            (Box::new(BulkheadFull(())), ErrorKind::BulkheadFull),
            (Box::new(Elapsed(())), ErrorKind::Elapsed),
            (Box::new(BudgetExhausted(())), ErrorKind::BudgetExhausted),
            ("circuit breaker is open".into(), ErrorKind::Inner),
        ];
        for (err, kind) in cases {
            assert_eq!(ErrorKind::of(&err), kind, "{err}");
            assert_eq!(kind.is_rejection(), kind != ErrorKind::Inner);
        }
    }

    #[test]
    fn kind_is_found_through_the_source_chain() {
        let inner: BoxError = Box::new(Elapsed(()));
        let err: BoxError = Box::new(Wrapper(Box::new(Wrapper(inner))));
        assert_eq!(ErrorKind::of(&err), ErrorKind::Elapsed);
    }

    #[test]
    fn messages_name_what_happened() {
        let open = CircuitOpen::new("payments".into(), Duration::from_millis(1500));
        assert_eq!(open.name(), "payments");
        assert_eq!(open.retry_after(), Duration::from_millis(1500));
        assert!(open.to_string().contains("payments"));
        let forced = CircuitOpen::new("payments".into(), Duration::MAX);
        assert_eq!(
            forced.to_string(),
            "circuit breaker `payments` is held open by hand"
        );
        let cfg = ConfigError::new("max_attempts", "must be at least 1");
        assert_eq!(
            cfg.to_string(),
            "invalid `max_attempts`: must be at least 1"
        );
    }
}
