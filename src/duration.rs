//! Durations for `-w/--timeout`: plain seconds (`10`, `0.5`) as flock(1)
//! takes them, or a number with a unit (`250ms`, `30s`, `5m`, `1h`) by humantime.

use std::time::Duration;

/// Parse a timeout; negative, non-finite or unparsable values are errors.
pub fn parse(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if let Some(seconds) = decimal_seconds(text) {
        return seconds.map_err(|why| format!("'{text}' is not a duration: {why}"));
    }
    if beyond_u64_seconds(text) {
        return Err(format!("'{text}' is not a duration: it is too large"));
    }
    humantime::parse_duration(text).map_err(|err| {
        format!("'{text}' is not a duration ({err}); use seconds (10, 0.5) or a unit (250ms, 30s, 5m, 1h)")
    })
}

/// Plain seconds in the decimal forms strtod(3) (and so flock(1)'s `-w`)
/// takes: `10`, `0.5`, `.5`, `1.`, `+2`, `1e3`, `2.5E-1`. Read exactly, in
/// integers (an f64 rounds `16777216.023` and every whole number past 2^53),
/// to the nanosecond, truncating below it. None when `text` is not such a
/// number (then it may have a unit).
fn decimal_seconds(text: &str) -> Option<Result<Duration, &'static str>> {
    let (negative, rest) = match text.as_bytes().first()? {
        b'-' => (true, &text[1..]),
        b'+' => (false, &text[1..]),
        _ => (false, text),
    };
    let (mantissa, exponent) = match rest.find(['e', 'E']) {
        Some(at) => (&rest[..at], Some(&rest[at + 1..])),
        None => (rest, None),
    };
    let (whole, fraction) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if !digits(whole) || !digits(fraction) || whole.len() + fraction.len() == 0 {
        return None;
    }
    let exponent: i64 = match exponent {
        None => 0,
        Some(e) => {
            let unsigned = e.strip_prefix(['+', '-']).unwrap_or(e);
            if unsigned.is_empty() || !digits(unsigned) {
                return None;
            }
            // Past any u64 of seconds either way; saturate rather than overflow.
            e.parse().unwrap_or(if e.starts_with('-') {
                i64::MIN
            } else {
                i64::MAX
            })
        }
    };
    let significant = format!("{whole}{fraction}");
    if negative && significant.bytes().any(|b| b != b'0') {
        return Some(Err("it must be 0 or more seconds"));
    }
    // The decimal point moves `exponent` places right of where it was.
    let point = (whole.len() as i64).saturating_add(exponent);
    let (int_digits, frac_digits): (String, String) = if point <= 0 {
        let zeros = usize::try_from(point.unsigned_abs())
            .unwrap_or(usize::MAX)
            .min(9);
        (String::new(), "0".repeat(zeros) + &significant)
    } else if point as u64 >= significant.len() as u64 {
        let zeros = point as u64 - significant.len() as u64;
        if significant.trim_start_matches('0').is_empty() {
            (String::new(), String::new())
        } else if zeros > 20 {
            return Some(Err("it is too large"));
        } else {
            (
                significant.clone() + &"0".repeat(zeros as usize),
                String::new(),
            )
        }
    } else {
        let (i, f) = significant.split_at(point as usize);
        (i.to_owned(), f.to_owned())
    };
    let int_digits = int_digits.trim_start_matches('0');
    let secs = if int_digits.is_empty() {
        0
    } else if int_digits.len() > 20 {
        return Some(Err("it is too large"));
    } else {
        match int_digits.parse::<u64>() {
            Ok(secs) => secs,
            Err(_) => return Some(Err("it is too large")),
        }
    };
    let nanos = frac_digits
        .bytes()
        .chain(std::iter::repeat(b'0'))
        .take(9)
        .fold(0u32, |n, b| n * 10 + u32::from(b - b'0'));
    Some(Ok(Duration::new(secs, nanos)))
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
        for text in [
            "",
            "abc",
            "-1",
            "-0.5",
            "-1e-3",
            "NaN",
            "inf",
            "5 parsecs",
            "1e400",
            ".",
            "1e",
            "e3",
            "1e+",
        ] {
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
            ("1.5e3", Duration::from_secs(1500)),
            ("2.5E-1", Duration::from_millis(250)),
            ("+2", Duration::from_secs(2)),
            ("-0", Duration::ZERO),
            ("1e-10", Duration::ZERO),
            ("0e99999999999999999999", Duration::ZERO),
            ("123456789e-9", Duration::from_nanos(123_456_789)),
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
