//! Durations as people write them: `"250ms"`, `"30s"`, `"1m30s"`,
//! `"1.5s"`, and as gRPC's service config writes them (`"0.1s"`).
//!
//! A number, then a unit: `ns`, `us` (or `µs`), `ms`, `s`, `m`, `h`, `d`;
//! several such terms add up (`"1h30m"`). A number may have a fraction
//! (`"1.5s"`, `"0.25ms"`) whose value must be a whole number of
//! nanoseconds. `"0"` alone is zero; any other number needs its unit, so
//! that `timeout = 30` (seconds? milliseconds?) is an error, not a guess.
//! A duration is written back in the largest unit that holds it exactly
//! (`"1500ms"`, `"90s"`, `"2h"`), so that reading what was written gives
//! the same value.

use std::fmt::Write as _;
use std::time::Duration;

/// Units, largest first, with their length in nanoseconds.
const UNITS: [(&str, u128); 7] = [
    ("d", 86_400_000_000_000),
    ("h", 3_600_000_000_000),
    ("m", 60_000_000_000),
    ("s", 1_000_000_000),
    ("ms", 1_000_000),
    ("us", 1_000),
    ("ns", 1),
];

/// Parses a human duration; the error says what was expected.
pub(crate) fn parse(text: &str) -> Result<Duration, String> {
    let trimmed = text.trim();
    if trimmed == "0" {
        return Ok(Duration::ZERO);
    }
    if trimmed.is_empty() {
        return Err("an empty duration; write one as \"250ms\", \"30s\" or \"1m30s\"".into());
    }
    let mut rest = trimmed;
    let mut total: u128 = 0;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (number, after) = rest.split_at(number_len);
        if number.is_empty() {
            return Err(format!(
                "{text:?} is not a duration: expected a number at {after:?}; write one as \"250ms\", \"30s\" or \"1m30s\""
            ));
        }
        let unit_len = after
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after.len());
        let (unit, next) = after.split_at(unit_len);
        let unit = unit.trim();
        let unit = if unit == "µs" || unit == "μs" {
            "us"
        } else {
            unit
        };
        let Some(&(_, scale)) = UNITS.iter().find(|(name, _)| *name == unit) else {
            return Err(if unit.is_empty() {
                format!(
                    "{text:?} has no unit: write \"{number}s\", \"{number}ms\" or another of ns, us, ms, s, m, h, d"
                )
            } else {
                format!("{text:?} has an unknown unit {unit:?}: use one of ns, us, ms, s, m, h, d")
            });
        };
        total = total
            .checked_add(term(text, number, scale)?)
            .ok_or_else(|| too_long(text))?;
        rest = next;
    }
    let secs = u64::try_from(total / 1_000_000_000).map_err(|_| too_long(text))?;
    Ok(Duration::new(secs, (total % 1_000_000_000) as u32))
}

/// One term's nanoseconds: `number` (with an optional fraction) × `scale`.
fn term(text: &str, number: &str, scale: u128) -> Result<u128, String> {
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if whole.is_empty() || fraction.contains('.') || (number.contains('.') && fraction.is_empty()) {
        return Err(format!(
            "{text:?} is not a duration: {number:?} is not a number"
        ));
    }
    let whole: u128 = whole.parse().map_err(|_| too_long(text))?;
    let mut nanos = whole.checked_mul(scale).ok_or_else(|| too_long(text))?;
    if !fraction.is_empty() {
        let digits = u32::try_from(fraction.len()).map_err(|_| too_long(text))?;
        let denominator = 10u128
            .checked_pow(digits)
            .ok_or_else(|| too_precise(text))?;
        let numerator: u128 = fraction.parse().map_err(|_| too_precise(text))?;
        let scaled = numerator
            .checked_mul(scale)
            .ok_or_else(|| too_precise(text))?;
        if !scaled.is_multiple_of(denominator) {
            return Err(too_precise(text));
        }
        nanos = nanos
            .checked_add(scaled / denominator)
            .ok_or_else(|| too_long(text))?;
    }
    Ok(nanos)
}

fn too_long(text: &str) -> String {
    format!("{text:?} is too long a duration")
}

fn too_precise(text: &str) -> String {
    format!("{text:?} is not a whole number of nanoseconds")
}

/// Writes `d` in the largest unit that holds it exactly.
pub(crate) fn format(d: Duration) -> String {
    let nanos = d.as_nanos();
    if nanos == 0 {
        return "0s".to_string();
    }
    let (unit, scale) = UNITS
        .iter()
        .find(|(_, scale)| nanos.is_multiple_of(*scale))
        .expect("every duration is a whole number of nanoseconds");
    let mut out = String::new();
    let _ = write!(out, "{}{unit}", nanos / scale);
    out
}

/// `#[serde(with = ...)]` for `Option<Duration>` fields.
#[cfg(feature = "serde")]
pub(crate) mod option {
    use std::fmt;
    use std::time::Duration;

    use serde::de::{self, Visitor};
    use serde::{Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer>(
        value: &Option<Duration>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match value {
            Some(d) => serializer.serialize_str(&super::format(*d)),
            None => serializer.serialize_none(),
        }
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<Duration>, D::Error> {
        deserializer.deserialize_option(Human)
    }

    /// Reads a string as a human duration, and says what a number lacks.
    struct Human;

    impl<'de> Visitor<'de> for Human {
        type Value = Option<Duration>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a duration with its unit, such as \"250ms\", \"30s\" or \"1m30s\"")
        }

        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_any(self)
        }

        fn visit_str<E: de::Error>(self, text: &str) -> Result<Self::Value, E> {
            super::parse(text).map(Some).map_err(E::custom)
        }

        fn visit_u64<E: de::Error>(self, n: u64) -> Result<Self::Value, E> {
            if n == 0 {
                return Ok(Some(Duration::ZERO));
            }
            Err(E::custom(format!(
                "{n} has no unit: write \"{n}s\", \"{n}ms\" or another of ns, us, ms, s, m, h, d"
            )))
        }

        fn visit_i64<E: de::Error>(self, n: i64) -> Result<Self::Value, E> {
            match u64::try_from(n) {
                Ok(n) => self.visit_u64(n),
                Err(_) => Err(E::custom(format!(
                    "{n} is not a duration: a duration is not negative"
                ))),
            }
        }

        fn visit_f64<E: de::Error>(self, n: f64) -> Result<Self::Value, E> {
            Err(E::custom(format!(
                "{n} has no unit: write \"{n}s\", \"{n}ms\" or another of ns, us, ms, s, m, h, d"
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_what_people_write() {
        let ms = Duration::from_millis;
        for (text, expected) in [
            ("250ms", ms(250)),
            ("30s", Duration::from_secs(30)),
            ("1m30s", Duration::from_secs(90)),
            ("1h", Duration::from_secs(3600)),
            ("2d", Duration::from_secs(172_800)),
            ("1.5s", ms(1500)),
            ("0.1s", ms(100)),
            ("0.25ms", Duration::from_micros(250)),
            ("100us", Duration::from_micros(100)),
            ("100µs", Duration::from_micros(100)),
            ("7ns", Duration::from_nanos(7)),
            ("0", Duration::ZERO),
            ("0s", Duration::ZERO),
            (" 5s ", Duration::from_secs(5)),
            ("1s 500ms", ms(1500)),
            ("1.000000001s", Duration::new(1, 1)),
        ] {
            assert_eq!(parse(text), Ok(expected), "{text}");
        }
    }

    #[test]
    fn refuses_what_it_cannot_read_and_says_why() {
        for (text, says) in [
            ("30", "has no unit"),
            ("", "empty"),
            ("5 seconds", "unknown unit \"seconds\""),
            ("ms", "expected a number"),
            ("1.s", "not a number"),
            (".5s", "not a number"),
            ("1.2.3s", "not a number"),
            ("0.5ns", "whole number of nanoseconds"),
            ("1.0000000001s", "whole number of nanoseconds"),
            ("-1s", "expected a number"),
            ("99999999999999999999999d", "too long"),
            ("18446744073709551616s", "too long"),
        ] {
            let error = parse(text).unwrap_err();
            assert!(error.contains(says), "{text}: {error}");
        }
    }

    #[test]
    fn writes_the_largest_exact_unit() {
        for (d, text) in [
            (Duration::ZERO, "0s"),
            (Duration::from_millis(1500), "1500ms"),
            (Duration::from_secs(90), "90s"),
            (Duration::from_secs(7200), "2h"),
            (Duration::from_secs(86_400), "1d"),
            (Duration::new(1, 1), "1000000001ns"),
            (Duration::from_micros(3), "3us"),
        ] {
            assert_eq!(format(d), text);
        }
    }

    proptest::proptest! {
        #[test]
        fn what_is_written_reads_back_the_same(secs in 0u64..=u64::MAX, nanos in 0u32..1_000_000_000) {
            let d = Duration::new(secs, nanos);
            proptest::prop_assert_eq!(parse(&format(d)), Ok(d));
        }
    }
}
