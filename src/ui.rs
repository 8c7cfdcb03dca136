//! What resin-lock says on stderr besides errors: nothing by default,
//! warnings unless `-q`, and the reasons for what it did with `-v`.

pub(crate) use crate::text::escape_controls;

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
            say(&message());
        }
    }

    /// Something the user should know even without `-v` (silenced by `-q`).
    pub fn warn(&self, message: impl AsRef<str>) {
        if !self.quiet {
            say(message.as_ref());
        }
    }
}

/// Write `resin-lock: TEXT` and its newline to stderr with one write(2), so
/// the lines of concurrent processes sharing a log never splice (SPEC 2a);
/// `eprintln!` writes the pieces of its format one by one.
pub fn say(text: &str) {
    use std::io::Write as _;
    let line = format!("resin-lock: {text}\n");
    let _ = std::io::stderr().write_all(line.as_bytes());
}
