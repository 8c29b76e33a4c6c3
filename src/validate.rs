//! The checks every builder's `build()` makes, in one wording: each
//! returns a [`ConfigError`] naming the parameter and the value refused.

use std::fmt::Display;
use std::ops::RangeInclusive;
use std::time::Duration;

use crate::error::ConfigError;

/// The longest duration a layer keeps: `u64::MAX` nanoseconds (see
/// [`clock`](crate::clock)).
const LONGEST: Duration = Duration::from_nanos(u64::MAX);

/// A duration that fits the crate's time unit; zero is allowed.
pub(crate) fn fits(parameter: &'static str, d: Duration) -> Result<(), ConfigError> {
    if d > LONGEST {
        return Err(ConfigError::new(
            parameter,
            format!("{d:?} is longer than the longest supported (about 584 years)"),
        ));
    }
    Ok(())
}

/// A duration above zero that fits the crate's time unit.
pub(crate) fn positive(parameter: &'static str, d: Duration) -> Result<(), ConfigError> {
    if d.is_zero() {
        return Err(ConfigError::new(parameter, "must be longer than zero"));
    }
    fits(parameter, d)
}

/// A fraction in (0, 1]: a threshold that zero would make meaningless.
pub(crate) fn fraction_above_zero(parameter: &'static str, value: f64) -> Result<(), ConfigError> {
    if value > 0.0 && value <= 1.0 {
        return Ok(());
    }
    Err(ConfigError::new(
        parameter,
        format!("must be a fraction in (0, 1], got {value}"),
    ))
}

/// A fraction in [0, 1].
pub(crate) fn fraction(parameter: &'static str, value: f64) -> Result<(), ConfigError> {
    if (0.0..=1.0).contains(&value) {
        return Ok(());
    }
    Err(ConfigError::new(
        parameter,
        format!("must be a fraction in [0, 1], got {value}"),
    ))
}

/// A count within `range`.
pub(crate) fn within<T: PartialOrd + Display>(
    parameter: &'static str,
    value: T,
    range: RangeInclusive<T>,
) -> Result<(), ConfigError> {
    if range.contains(&value) {
        return Ok(());
    }
    Err(ConfigError::new(
        parameter,
        format!(
            "must be from {} to {}, got {value}",
            range.start(),
            range.end()
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_check_names_the_parameter_and_the_value() {
        let e = positive("timeout", Duration::ZERO).unwrap_err();
        assert_eq!(e.to_string(), "invalid `timeout`: must be longer than zero");
        let e = positive("timeout", Duration::MAX).unwrap_err();
        assert!(
            e.reason().contains("longer than the longest supported"),
            "{e}"
        );
        assert!(positive("timeout", LONGEST).is_ok());
        assert!(fits("delay", Duration::ZERO).is_ok());
        assert!(fits("delay", LONGEST + Duration::from_nanos(1)).is_err());
        assert_eq!(
            fraction_above_zero("rate", 0.0).unwrap_err().to_string(),
            "invalid `rate`: must be a fraction in (0, 1], got 0"
        );
        assert!(fraction_above_zero("rate", 1.0).is_ok());
        assert!(fraction_above_zero("rate", f64::NAN).is_err());
        assert!(fraction("rate", 0.0).is_ok());
        assert!(fraction("rate", f64::NAN).is_err());
        assert_eq!(
            fraction("rate", 1.5).unwrap_err().to_string(),
            "invalid `rate`: must be a fraction in [0, 1], got 1.5"
        );
        assert_eq!(
            within("calls", 0u32, 1..=8).unwrap_err().to_string(),
            "invalid `calls`: must be from 1 to 8, got 0"
        );
        assert!(within("calls", 8u32, 1..=8).is_ok());
    }
}
