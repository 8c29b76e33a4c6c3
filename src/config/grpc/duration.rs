//! Durations as protobuf's JSON writes them (`google.protobuf.Duration`):
//! a decimal number of seconds and an `s`, as gRPC's service config does.

use std::time::Duration;

/// The largest duration protobuf allows: 10,000 years.
const MAX_SECONDS: u64 = 315_576_000_000;

/// Parses `"0.1s"`, `"1s"`, `"1.000340012s"`: digits, at most nine decimal
/// places after a point, then `s`, as gRPC's C core, grpc-java and the new
/// grpc-rust read them (A6: "the numeric portion of the string must be a
/// valid JSON number"). So `".1s"`, `"1.s"`, `"+1s"`, `"1 s"` and
/// `"250ms"` are refused. A negative duration is an error here: no field of
/// a service config that palisade reads takes one.
pub(crate) fn parse(text: &str) -> Result<Duration, String> {
    let refuse = |why: &str| {
        Err(format!(
            "{text:?} is not a protobuf duration ({why}); write seconds with an `s`, as \"0.1s\" or \"30s\""
        ))
    };
    let Some(number) = text.strip_suffix('s') else {
        return refuse("no `s` at the end");
    };
    let (negative, number) = match number.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, number),
    };
    let (whole, fraction) = match number.split_once('.') {
        Some((whole, fraction)) => (whole, Some(fraction)),
        None => (number, None),
    };
    let digits = |part: &str| !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit());
    if !digits(whole) {
        return refuse("the seconds must be digits");
    }
    // JSON numbers have no leading zeros.
    if whole.len() > 1 && whole.starts_with('0') {
        return refuse("a leading zero");
    }
    let nanos = match fraction {
        None => 0,
        Some(fraction) if digits(fraction) && fraction.len() <= 9 => {
            let padded = format!("{fraction:0<9}");
            padded.parse::<u32>().expect("nine digits")
        }
        Some(_) => return refuse("one to nine digits after the point"),
    };
    let seconds = match whole.parse::<u64>() {
        Ok(seconds) if seconds <= MAX_SECONDS => seconds,
        _ => return refuse("more than 315,576,000,000 seconds"),
    };
    if negative && (seconds, nanos) != (0, 0) {
        return Err(format!("{text:?} is negative"));
    }
    Ok(Duration::new(seconds, nanos))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_seconds_with_up_to_nine_decimals() {
        let ms = Duration::from_millis;
        assert_eq!(parse("0.1s"), Ok(ms(100)));
        assert_eq!(parse("1s"), Ok(ms(1000)));
        assert_eq!(parse("0s"), Ok(Duration::ZERO));
        assert_eq!(parse("-0s"), Ok(Duration::ZERO));
        assert_eq!(parse("0.5s"), Ok(ms(500)));
        assert_eq!(parse("1.000340012s"), Ok(Duration::new(1, 340_012)));
        assert_eq!(parse("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse("315576000000s"), Ok(Duration::from_secs(MAX_SECONDS)));
    }

    #[test]
    fn refuses_what_protobuf_refuses() {
        for bad in [
            ".1s",
            "1.s",
            "+1s",
            "1 s",
            " 1s",
            "1",
            "s",
            "250ms",
            "5m",
            "1e3s",
            "01s",
            "0.0000000001s",
            "315576000001s",
            "99999999999999999999999s",
            "1.5.5s",
            "--1s",
            "",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} was accepted");
        }
        assert_eq!(parse("-1s"), Err("\"-1s\" is negative".to_owned()));
        assert!(
            parse(".1s")
                .unwrap_err()
                .contains("write seconds with an `s`")
        );
    }
}
