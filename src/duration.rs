//! Durations for `-w/--timeout`: plain seconds (`10`, `0.5`) as flock(1)
//! takes them, or a number with a unit (`250ms`, `30s`, `5m`, `1h`) by humantime.

use std::time::Duration;

/// Parse a timeout; negative, non-finite or unparsable values are errors.
pub fn parse(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if let Ok(seconds) = text.parse::<f64>() {
        // Plain decimal seconds are read exactly, in integers, as humantime
        // reads `10.5s`; an f64 (which rounds `16777216.023` and every whole
        // number past 2^53) only for the other forms strtod takes (`1e3`).
        if text.bytes().all(|b| b.is_ascii_digit() || b == b'.')
            && let Ok(exact) = humantime::parse_duration(&format!("{text}s"))
        {
            return Ok(exact);
        }
        return Duration::try_from_secs_f64(seconds).map_err(|_| {
            let why = if seconds.is_nan() || seconds < 0.0 {
                "it must be 0 or more seconds"
            } else {
                "it is too large"
            };
            format!("'{text}' is not a duration: {why}")
        });
    }
    if beyond_u64_seconds(text) {
        return Err(format!("'{text}' is not a duration: it is too large"));
    }
    humantime::parse_duration(text).map_err(|err| {
        format!("'{text}' is not a duration ({err}); use seconds (10, 0.5) or a unit (250ms, 30s, 5m, 1h)")
    })
}

/// Whether humantime could add `text` up past `u64::MAX` seconds, where it
/// may panic instead of failing (chronotope/humantime#66, e.g. on
/// `18446744073709551615s 1000ms`). An upper bound in nanoseconds: each
/// number's whole part times its unit, plus a unit for a fraction.
fn beyond_u64_seconds(text: &str) -> bool {
    const LIMIT: u128 = (u64::MAX as u128 + 1) * 1_000_000_000;
    let mut bound: u128 = 0;
    let mut rest = text;
    // humantime's numbers may contain spaces (`1 000s`) and a fraction.
    while let Some(start) = rest.find(|c: char| c.is_ascii_digit()) {
        rest = &rest[start..];
        let end = rest
            .find(|c: char| !(c.is_ascii_digit() || c.is_whitespace() || c == '.'))
            .unwrap_or(rest.len());
        let (whole, fraction) = rest[..end].split_once('.').unwrap_or((&rest[..end], ""));
        let digits: String = whole.chars().filter(char::is_ascii_digit).collect();
        let number = digits.parse::<u128>().unwrap_or(u128::MAX);
        rest = &rest[end..];
        let end = rest
            .find(|c: char| !c.is_alphabetic())
            .unwrap_or(rest.len());
        let Ok(unit) = humantime::parse_duration(&format!("1{}", &rest[..end])) else {
            break; // humantime fails at this unknown unit
        };
        rest = &rest[end..];
        let unit = unit.as_nanos();
        let fraction = if fraction.is_empty() { 0 } else { unit };
        bound = bound
            .saturating_add(number.saturating_mul(unit))
            .saturating_add(fraction);
        if bound >= LIMIT {
            return true;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepted() {
        let cases = [
            ("10", Duration::from_secs(10)),
            ("0.5", Duration::from_millis(500)),
            ("0", Duration::ZERO),
            ("250ms", Duration::from_millis(250)),
            ("30s", Duration::from_secs(30)),
            ("5m", Duration::from_secs(300)),
            ("1h", Duration::from_secs(3600)),
            (" 2 ", Duration::from_secs(2)),
        ];
        for (text, want) in cases {
            assert_eq!(parse(text), Ok(want), "{text}");
        }
    }

    #[test]
    fn rejected() {
        for text in ["", "abc", "-1", "-0.5", "NaN", "inf", "5 parsecs", "1e400"] {
            assert!(parse(text).is_err(), "{text} should be rejected");
        }
    }

    #[test]
    fn plain_seconds_are_exact() {
        let cases = [
            ("16777216.023", Duration::new(16_777_216, 23_000_000)),
            (
                "9007199254740993",
                Duration::from_secs(9_007_199_254_740_993),
            ),
            ("18446744073709551615", Duration::from_secs(u64::MAX)),
            ("0.000000001", Duration::from_nanos(1)),
            ("1.", Duration::from_secs(1)),
            (".5", Duration::from_millis(500)),
            ("1e3", Duration::from_secs(1000)),
        ];
        for (text, want) in cases {
            assert_eq!(parse(text), Ok(want), "{text}");
        }
    }

    #[test]
    fn too_large_is_an_error_that_says_so() {
        for text in [
            "18446744073709551616",
            "1e20",
            "1e400",
            // humantime panics on these instead of failing (its issue #66).
            "18446744073709551615s 1000ms",
            "18446744073709551615s 999999999ns 1ns",
            "584542046090y 2929967615s 1000ms",
            "1 8446744073709551615s 1000ms",
        ] {
            let err = parse(text).unwrap_err();
            assert!(err.contains("too large"), "{text}: {err}");
        }
        assert!(parse("-1").unwrap_err().contains("0 or more"));
    }

    #[test]
    fn the_overflow_guard_refuses_no_sensible_duration() {
        for text in [
            "100000000000000ns",
            "1000000000000ms",
            "1h 30m 15s 250ms 100us",
            "99999 years",
            "584542046y",
            "18446744073709551615ns",
            "18446744073709551615s",
            "18446744073709551614s 999ms",
        ] {
            assert!(parse(text).is_ok(), "{text}: {:?}", parse(text));
        }
    }
}
