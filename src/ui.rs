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
            eprintln!("resin-lock: {}", message());
        }
    }

    /// Something the user should know even without `-v` (silenced by `-q`).
    pub fn warn(&self, message: impl AsRef<str>) {
        if !self.quiet {
            eprintln!("resin-lock: {}", message.as_ref());
        }
    }
}
