//! What resin-lock says on stderr besides errors: nothing by default,
//! warnings unless `-q`, and the reasons for what it did with `-v`.

use std::io::IsTerminal;

#[derive(Debug, Clone, Copy, Default)]
pub struct Ui {
    pub verbose: bool,
    pub quiet: bool,
}

impl Ui {
    /// A note only `-v` asks for; the message is built only then (some are
    /// on every start and every `run`).
    pub fn verbose(&self, message: impl FnOnce() -> String) {
        if self.verbose {
            eprintln!("resin-lock: {}", message());
        }
    }

    /// Something the user should know even without `-v` (silenced by `-q`).
    pub fn warn(&self, message: impl AsRef<str>) {
        if !self.quiet {
            eprintln!("resin-lock: {}", message.as_ref());
        }
    }

    /// Whether to say who holds a lock while waiting: with `-v`, or when a
    /// person is watching stderr.
    pub fn announce_waits(&self) -> bool {
        !self.quiet && (self.verbose || std::io::stderr().is_terminal())
    }
}

/// Text from outside (records, process command lines, API answers) with
/// control characters escaped, so that one lock is always one line.
pub fn escape_controls(text: &str) -> String {
    if !text.chars().any(char::is_control) {
        return text.to_owned();
    }
    text.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::escape_controls;

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(escape_controls("plain ünïcode"), "plain ünïcode");
        assert_eq!(escape_controls("a\nb\tc\x1b[31m"), "a\\nb\\tc\\u{1b}[31m");
        assert_eq!(escape_controls("\r\u{85}"), "\\r\\u{85}");
    }
}
