//! Server delay hints: `Retry-After` and `grpc-retry-pushback-ms`.
//!
//! The parsers here never panic and never overflow, whatever the bytes: a
//! number too large for a `u64` saturates at `u64::MAX` seconds (or
//! milliseconds), longer than any cap. [`DelayHint::within`] drops a hint
//! longer than a cap; the retry layer then ends its retries rather than
//! come back sooner than the server asked (see
//! [`RetryBuilder::max_hint`](crate::retry::RetryBuilder::max_hint)). A
//! hint is never obeyed blindly.

use std::time::Duration;

/// What a server asked of the client's next attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DelayHint {
    /// Wait this long before trying again.
    After(Duration),
    /// Do not retry this call at all (a negative or unreadable
    /// `grpc-retry-pushback-ms`).
    DoNotRetry,
}

impl DelayHint {
    /// Applies a cap: a wait longer than `cap` is discarded (`None`); a
    /// [`DoNotRetry`](DelayHint::DoNotRetry) always stands.
    ///
    /// # Examples
    ///
    /// ```
    /// use palisade::classify::DelayHint;
    /// use std::time::Duration;
    ///
    /// let cap = Duration::from_secs(30);
    /// assert_eq!(DelayHint::After(Duration::from_secs(5)).within(cap),
    ///            Some(DelayHint::After(Duration::from_secs(5))));
    /// assert_eq!(DelayHint::After(Duration::from_secs(3600)).within(cap), None);
    /// assert_eq!(DelayHint::DoNotRetry.within(cap), Some(DelayHint::DoNotRetry));
    /// ```
    pub fn within(self, cap: Duration) -> Option<DelayHint> {
        match self {
            DelayHint::After(wait) if wait > cap => None,
            hint => Some(hint),
        }
    }
}

/// The name of the gRPC pushback header.
pub const GRPC_RETRY_PUSHBACK_MS: &str = "grpc-retry-pushback-ms";

fn trim_ows(value: &[u8]) -> &[u8] {
    let start = value
        .iter()
        .position(|b| !matches!(b, b' ' | b'\t'))
        .unwrap_or(value.len());
    let end = value
        .iter()
        .rposition(|b| !matches!(b, b' ' | b'\t'))
        .map_or(start, |i| i + 1);
    &value[start..end]
}

/// Reads a run of ASCII digits as a number, saturating at `u64::MAX`.
/// `None` if `digits` is empty or holds anything but digits.
fn parse_digits_saturating(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(digits.iter().fold(0u64, |n, d| {
        n.saturating_mul(10).saturating_add(u64::from(d - b'0'))
    }))
}

/// Parses a `Retry-After` value (RFC 9110 §10.2.3): delta-seconds, or an
/// HTTP-date in any of the three formats HTTP allows, measured from `now`.
///
/// A date in the past means "now" (zero). Anything else (empty, negative,
/// fractional, non-ASCII, not a date) is `None`. A number of seconds too large
/// for a `u64` saturates, so that a cap discards it.
///
/// # Examples
///
/// ```
/// use palisade::classify::hint::parse_retry_after;
/// use std::time::{Duration, SystemTime, UNIX_EPOCH};
///
/// let now = UNIX_EPOCH + Duration::from_secs(1_445_412_480); // 2015-10-21 07:28:00 GMT
/// assert_eq!(parse_retry_after(b"120", now), Some(Duration::from_secs(120)));
/// assert_eq!(
///     parse_retry_after(b"Wed, 21 Oct 2015 07:28:30 GMT", now),
///     Some(Duration::from_secs(30)),
/// );
/// assert_eq!(parse_retry_after(b"-1", now), None);
/// ```
#[cfg(feature = "http")]
#[cfg_attr(docsrs, doc(cfg(feature = "http")))]
pub fn parse_retry_after(value: &[u8], now: std::time::SystemTime) -> Option<Duration> {
    let value = trim_ows(value);
    if let Some(secs) = parse_digits_saturating(value) {
        return Some(Duration::from_secs(secs));
    }
    let text = std::str::from_utf8(value).ok()?;
    let when = httpdate::parse_http_date(text).ok()?;
    Some(when.duration_since(now).unwrap_or(Duration::ZERO))
}

/// Parses a `grpc-retry-pushback-ms` value, as gRPC's retry design (A6)
/// reads it: a non-negative decimal number of milliseconds is a wait; a
/// negative or unreadable value means "do not retry".
///
/// # Examples
///
/// ```
/// use palisade::classify::{hint::parse_grpc_pushback, DelayHint};
/// use std::time::Duration;
///
/// assert_eq!(parse_grpc_pushback(b"250"), DelayHint::After(Duration::from_millis(250)));
/// assert_eq!(parse_grpc_pushback(b"-1"), DelayHint::DoNotRetry);
/// assert_eq!(parse_grpc_pushback(b"soon"), DelayHint::DoNotRetry);
/// ```
pub fn parse_grpc_pushback(value: &[u8]) -> DelayHint {
    match parse_digits_saturating(trim_ows(value)) {
        Some(ms) => DelayHint::After(Duration::from_millis(ms)),
        None => DelayHint::DoNotRetry,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const CAP: Duration = Duration::from_secs(60);

    #[cfg(feature = "http")]
    #[test]
    fn hostile_retry_after_values() {
        use std::time::UNIX_EPOCH;
        // 2015-10-21 07:28:00 GMT
        let now = UNIX_EPOCH + Duration::from_secs(1_445_412_480);
        let secs = |s| Some(DelayHint::After(Duration::from_secs(s)));
        let cases: &[(&[u8], Option<DelayHint>)] = &[
            (b"0", secs(0)),
            (b"30", secs(30)),
            (b" 30\t", secs(30)),
            (b"60", secs(60)),
            (b"61", None),                                  // above the cap: discarded
            (b"18446744073709551615", None),                // u64::MAX seconds
            (b"18446744073709551616", None),                // 2^64: saturates, discarded
            (b"99999999999999999999999999999999999", None), // far past u64
            (b"", None),
            (b"   ", None),
            (b"-5", None),
            (b"+5", None),
            (b"1.5", None),
            (b"5s", None),
            (b"0x10", None),
            ("３０".as_bytes(), None), // full-width digits are not ASCII digits
            ("30秒".as_bytes(), None),
            (b"\xff\xfe", None),
            (b"Wed, 21 Oct 2015 07:28:30 GMT", secs(30)),
            (b"Wednesday, 21-Oct-15 07:28:30 GMT", secs(30)), // RFC 850
            (b"Wed Oct 21 07:28:30 2015", secs(30)),          // asctime
            (b"Wed, 21 Oct 2015 07:27:00 GMT", secs(0)),      // past: now
            (b"Thu, 01 Jan 1970 00:00:00 GMT", secs(0)),
            (b"Wed, 21 Oct 2015 08:28:00 GMT", None), // an hour away: above the cap
            (b"Fri, 31 Dec 9999 23:59:59 GMT", None), // far future
            (b"Wed, 32 Oct 2015 07:28:30 GMT", None), // no such day
            (b"Wed, 21 Oct 2015 07:28:30", None),     // no zone
            (b"tomorrow", None),
        ];
        // Issue 12, defect 14: saturation is at u64::MAX seconds, as documented.
        assert_eq!(
            parse_retry_after(b"18446744073709551616", now),
            Some(Duration::from_secs(u64::MAX))
        );
        for (value, expected) in cases {
            let got = parse_retry_after(value, now)
                .map(DelayHint::After)
                .and_then(|h| h.within(CAP));
            assert_eq!(
                got,
                *expected,
                "Retry-After: {:?}",
                String::from_utf8_lossy(value)
            );
        }
    }

    #[test]
    fn hostile_pushback_values() {
        let ms = |m| Some(DelayHint::After(Duration::from_millis(m)));
        let stop = Some(DelayHint::DoNotRetry);
        let cases: &[(&[u8], Option<DelayHint>)] = &[
            (b"0", ms(0)),
            (b"1500", ms(1500)),
            (b" 1500 ", ms(1500)),
            (b"60000", ms(60_000)),
            (b"60001", None),
            (b"18446744073709551616", None),
            (b"-1", stop),
            (b"-18446744073709551616", stop),
            (b"", stop),
            (b"1.5", stop),
            (b"abc", stop),
            ("١٠".as_bytes(), stop), // Arabic-Indic digits
            (b"\x00", stop),
        ];
        for (value, expected) in cases {
            let got = parse_grpc_pushback(value).within(CAP);
            assert_eq!(
                got,
                *expected,
                "pushback: {:?}",
                String::from_utf8_lossy(value)
            );
        }
    }

    proptest! {
        #[test]
        fn pushback_never_exceeds_the_cap(value in proptest::collection::vec(any::<u8>(), 0..40),
                                          cap_ms in 0u64..10_000_000) {
            let cap = Duration::from_millis(cap_ms);
            if let Some(DelayHint::After(wait)) = parse_grpc_pushback(&value).within(cap) {
                prop_assert!(wait <= cap);
            }
        }

        #[test]
        fn digit_strings_of_any_length_never_panic(digits in "[0-9]{1,60}") {
            let hint = parse_grpc_pushback(digits.as_bytes());
            prop_assert!(matches!(hint, DelayHint::After(_)));
        }

        #[cfg(feature = "http")]
        #[test]
        fn retry_after_never_exceeds_the_cap(value in "\\PC{0,40}", now_secs in 0u64..4_000_000_000,
                                             cap_s in 0u64..100_000) {
            let now = std::time::UNIX_EPOCH + Duration::from_secs(now_secs);
            let cap = Duration::from_secs(cap_s);
            let capped = parse_retry_after(value.as_bytes(), now)
                .and_then(|wait| DelayHint::After(wait).within(cap));
            if let Some(DelayHint::After(w)) = capped {
                prop_assert!(w <= cap);
            }
        }
    }
}
