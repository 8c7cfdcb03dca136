//! Text from outside (lock records, supervisor answers, command lines) made
//! safe to show: used by `lock/` and `supervisor_api/` when they describe
//! what they found, and by the commands when they print it.

use std::fmt::Write as _;

/// `s` with its control characters written as escapes (`\n`, `\r`, `\t`,
/// else `\u{1b}`), so that text from outside (an API answer, a lock record)
/// stays on its line and cannot drive the terminal. Unicode line and
/// paragraph separators and bidirectional overrides count as control
/// characters; everything else, backslashes included, is kept as it is.
pub fn escape_controls(s: &str) -> String {
    let hidden = |c: char| {
        c.is_control()
            || matches!(c, '\u{2028}' | '\u{2029}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
    };
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if hidden(c) => {
                let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_controls_keeps_one_line_one_line() {
        let cases = [
            ("Idle", "Idle"),
            ("", ""),
            ("a\nb\r\tc", r"a\nb\r\tc"),
            ("\u{1b}[2J\u{0}\u{7f}\u{85}", r"\u{1b}[2J\u{0}\u{7f}\u{85}"),
            ("x\u{2028}y\u{202e}z", r"x\u{2028}y\u{202e}z"),
            ("ünïcode ✓ C:\\path", "ünïcode ✓ C:\\path"),
        ];
        for (text, want) in cases {
            let escaped = escape_controls(text);
            assert_eq!(escaped, want, "{text:?}");
            // Escaping what is escaped changes nothing.
            assert_eq!(escape_controls(&escaped), escaped, "{text:?}");
        }
    }
}
