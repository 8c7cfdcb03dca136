//! The documented exit statuses (README, man page, SPEC section 4) in one
//! place, the typed error that carries one through `anyhow`, and the mapping
//! from a child's wait status to ours.

use std::fmt;
use std::io;

use nix::sys::wait::WaitStatus;

/// Exit statuses with a fixed meaning. `run` also exits with the child's
/// code N, or 128+S when the child (or resin-lock while waiting) got signal S.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Done; for `status`: no lock file exists.
    Ok,
    /// The lock is held by someone else (busy, timed out, release refused,
    /// `status` found a lock file).
    Busy,
    /// Bad option, bad duration, missing command (EX_USAGE).
    Usage,
    /// The supervisor API is not configured or not reachable (EX_UNAVAILABLE).
    Unavailable,
    /// Internal error, a bug (EX_SOFTWARE).
    Software,
    /// Operating system error: fork, inotify, out of resources (EX_OSERR).
    OsErr,
    /// Cannot create the lock: permission, read-only, missing parent (EX_CANTCREAT).
    CantCreate,
    /// Refused for safety, e.g. running as uid 65534 (EX_NOPERM).
    NoPerm,
    /// `run`: CMD is not executable.
    NotExecutable,
    /// `run`: CMD was not found.
    NotFound,
}

impl Exit {
    pub fn code(self) -> u8 {
        match self {
            Exit::Ok => 0,
            Exit::Busy => 1,
            Exit::Usage => 64,
            Exit::Unavailable => 69,
            Exit::Software => 70,
            Exit::OsErr => 71,
            Exit::CantCreate => 73,
            Exit::NoPerm => 77,
            Exit::NotExecutable => 126,
            Exit::NotFound => 127,
        }
    }
}

/// The status for "stopped by signal S": 128+S, as shells report it.
pub fn signal_code(signal: i32) -> u8 {
    u8::try_from(128 + signal).unwrap_or(255)
}

/// Map a child's final wait status to our exit status (N, or 128+S).
pub fn child_code(status: WaitStatus) -> u8 {
    match status {
        WaitStatus::Exited(_, code) => u8::try_from(code).unwrap_or(255),
        WaitStatus::Signaled(_, signal, _) => signal_code(signal as i32),
        _ => Exit::Software.code(),
    }
}

/// An error with a documented exit status. It is the root of an `anyhow`
/// chain; `report` finds it and prints the whole chain once.
#[derive(Debug)]
pub struct Failure {
    pub code: u8,
    pub message: String,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Failure {}

/// Build an error that exits with `code` and prints `message`.
pub fn fail(code: Exit, message: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(Failure {
        code: code.code(),
        message: message.into(),
    })
}

/// Build an error with a raw exit status (e.g. `-E CODE`).
pub fn fail_with(code: u8, message: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(Failure {
        code,
        message: message.into(),
    })
}

/// The exit status an error chain stands for: a `Failure` anywhere in it
/// decides; otherwise an I/O error is an OS error (71) and anything else a bug (70).
pub fn code_of(err: &anyhow::Error) -> u8 {
    if let Some(failure) = err.chain().find_map(|e| e.downcast_ref::<Failure>()) {
        return failure.code;
    }
    if err
        .chain()
        .any(|e| e.is::<io::Error>() || e.is::<nix::Error>())
    {
        return Exit::OsErr.code();
    }
    Exit::Software.code()
}

/// Print an error once as `resin-lock: <what failed>: <why>` and return its
/// status. An empty message stands for a silent exit.
pub fn report(result: anyhow::Result<u8>) -> u8 {
    match result {
        Ok(code) => code,
        Err(err) => {
            let text = format!("{err:#}");
            if !text.is_empty() {
                eprintln!("resin-lock: {text}");
            }
            code_of(&err)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context;
    use nix::sys::signal::Signal;
    use nix::unistd::Pid;

    #[test]
    fn documented_codes() {
        let table = [
            (Exit::Ok, 0),
            (Exit::Busy, 1),
            (Exit::Usage, 64),
            (Exit::Unavailable, 69),
            (Exit::Software, 70),
            (Exit::OsErr, 71),
            (Exit::CantCreate, 73),
            (Exit::NoPerm, 77),
            (Exit::NotExecutable, 126),
            (Exit::NotFound, 127),
        ];
        for (exit, code) in table {
            assert_eq!(exit.code(), code, "{exit:?}");
        }
    }

    #[test]
    fn child_status_mapping() {
        let pid = Pid::from_raw(42);
        assert_eq!(child_code(WaitStatus::Exited(pid, 0)), 0);
        assert_eq!(child_code(WaitStatus::Exited(pid, 3)), 3);
        assert_eq!(child_code(WaitStatus::Exited(pid, 255)), 255);
        assert_eq!(
            child_code(WaitStatus::Signaled(pid, Signal::SIGTERM, false)),
            143
        );
        assert_eq!(
            child_code(WaitStatus::Signaled(pid, Signal::SIGKILL, true)),
            137
        );
        assert_eq!(signal_code(2), 130);
    }

    #[test]
    fn failure_code_survives_context() {
        let err = Err::<(), _>(fail(Exit::CantCreate, "read-only"))
            .context("cannot create /x")
            .unwrap_err();
        assert_eq!(code_of(&err), 73);
        assert_eq!(format!("{err:#}"), "cannot create /x: read-only");
    }

    #[test]
    fn io_errors_are_os_errors_and_the_rest_bugs() {
        let io = anyhow::Error::new(io::Error::from_raw_os_error(libc::EMFILE)).context("inotify");
        assert_eq!(code_of(&io), 71);
        assert_eq!(code_of(&anyhow::anyhow!("oops")), 70);
    }
}
