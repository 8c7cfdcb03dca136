//! Durations for `-w/--timeout`: plain seconds (`10`, `0.5`) as flock(1)
//! takes them, or a number with a unit (`250ms`, `30s`, `5m`, `1h`) by humantime.

use std::time::Duration;

/// Parse a timeout; negative, non-finite or unparsable values are errors.
pub fn parse(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if let Ok(seconds) = text.parse::<f64>() {
        return Duration::try_from_secs_f64(seconds)
            .map_err(|_| format!("'{text}' is not a duration: it must be 0 or more seconds"));
    }
    humantime::parse_duration(text).map_err(|err| {
        format!("'{text}' is not a duration ({err}); use seconds (10, 0.5) or a unit (250ms, 30s, 5m, 1h)")
    })
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
}
