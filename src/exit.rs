//! The documented exit statuses (README, man page, SPEC section 4) in one
//! place, the typed error that carries one through `anyhow`, and the mapping
//! from a child's wait status to ours.

use std::fmt;
use std::io;

use nix::sys::wait::WaitStatus;

/// Exit statuses with a fixed meaning. `run` also exits with the child's
/// code N, or 128+S when the child (or resin-lock while waiting) got signal S.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Exit {
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
    /// Every fixed status, in the order of the documented table.
    pub(crate) const ALL: [Exit; 10] = [
        Exit::Ok,
        Exit::Busy,
        Exit::Usage,
        Exit::Unavailable,
        Exit::Software,
        Exit::OsErr,
        Exit::CantCreate,
        Exit::NoPerm,
        Exit::NotExecutable,
        Exit::NotFound,
    ];

    pub(crate) fn code(self) -> u8 {
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

    /// What the status means, in one line: the table of the README, the man
    /// page's EXIT STATUS and `--help` are made from these (`like this` is code).
    pub(crate) fn meaning(self) -> &'static str {
        match self {
            Exit::Ok => "done; for `status`: no lock file exists (updates are allowed)",
            Exit::Busy => {
                "the lock is held by someone else: busy with `-n`, timed out with `-w`, \
                 `release` refused, `status` found a lock file (held or stale); `-E CODE` \
                 changes it for `acquire` and `run`, as flock's `-E`"
            }
            Exit::Usage => {
                "usage: a bad option or value, a bad duration, no command for `run`, \
                 `--owner` naming no process, a `--root` that does not exist"
            }
            Exit::Unavailable => {
                "the supervisor API is unreachable or not configured (`force-update`; \
                 `status --supervisor` keeps the lock's exit status and says so in one line)"
            }
            Exit::Software => {
                "internal error (a bug), or an answer from the supervisor API that is \
                 malformed or has an unexpected HTTP status (`force-update`)"
            }
            Exit::OsErr => "operating system error (fork, inotify, out of resources)",
            Exit::CantCreate => {
                "cannot create the lock: permission denied, read-only file system, missing \
                 parent directory of `--path`, parent is not a directory, name too long, no \
                 space; also a lock directory that is a symlink (never followed), for any command; \
                 `status` of a `--path` whose directory does not exist (no lock can be taken \
                 there); `release` of another user's live lock"
            }
            Exit::NoPerm => {
                "refused for safety: running as uid 65534; or the supervisor API refused \
                 the key (HTTP 401 or 403, `force-update`)"
            }
            Exit::NotExecutable => {
                "`run`: CMD is not executable, or is a directory (the lock is released first)"
            }
            Exit::NotFound => {
                "`run`: CMD was not found, or the interpreter on its `#!` line (or its \
                 dynamic loader) does not exist, as shells report it (the lock is released first)"
            }
        }
    }
}

/// The statuses that are not one fixed code, as the table shows them.
pub(crate) const VARIABLE_STATUSES: [(&str, &str); 2] = [
    ("N", "`run`: CMD exited with N"),
    (
        "128+S",
        "`run`: CMD was killed by signal S; `hold`: ended by signal S (the lock released \
         first); any command: resin-lock itself was stopped by signal S while waiting for \
         the lock (nothing is left held)",
    ),
];

/// The whole documented exit-status table: (the status as shown, its meaning).
pub fn table() -> Vec<(String, &'static str)> {
    Exit::ALL
        .iter()
        .map(|exit| (exit.code().to_string(), exit.meaning()))
        .chain(
            VARIABLE_STATUSES
                .iter()
                .map(|(code, meaning)| ((*code).to_owned(), *meaning)),
        )
        .collect()
}

/// The table as plain text for `--help`, wrapped to 78 columns with a
/// hanging indent (clap would wrap it at the terminal's width without one).
pub(crate) fn help_table() -> String {
    const WIDTH: usize = 78;
    const INDENT: &str = "         ";
    let mut text = String::from("Exit status:\n");
    for (code, meaning) in table() {
        let mut line = format!("  {code:<6}");
        for word in meaning.replace('`', "").split(' ') {
            if line.len() + 1 + word.len() > WIDTH && line.len() > INDENT.len() {
                text.push_str(&line);
                text.push('\n');
                line = INDENT.to_owned();
            } else {
                line.push(' ');
            }
            line.push_str(word);
        }
        text.push_str(&line);
        text.push('\n');
    }
    text
}

/// The status for "stopped by signal S": 128+S, as shells report it.
pub(crate) fn signal_code(signal: i32) -> u8 {
    u8::try_from(128 + signal).unwrap_or(255)
}

/// Map a child's final wait status to our exit status (N, or 128+S).
pub(crate) fn child_code(status: WaitStatus) -> u8 {
    match status {
        WaitStatus::Exited(_, code) => u8::try_from(code).unwrap_or(255),
        WaitStatus::Signaled(_, signal, _) => signal_code(signal as i32),
        _ => Exit::Software.code(),
    }
}

/// A child's end in words, for messages: "exited with status 3", "was
/// killed by signal TERM".
pub(crate) fn describe_status(status: WaitStatus) -> String {
    match status {
        WaitStatus::Exited(_, code) => format!("exited with status {code}"),
        WaitStatus::Signaled(_, signal, core_dumped) => format!(
            "was killed by signal {}{}",
            signal.as_str().trim_start_matches("SIG"),
            if core_dumped { " (core dumped)" } else { "" }
        ),
        _ => "ended".to_owned(),
    }
}

/// An error with a documented exit status. It is the root of an `anyhow`
/// chain; `report` finds it and prints the whole chain once.
#[derive(Debug)]
pub(crate) struct Failure {
    pub(crate) code: u8,
    pub(crate) message: String,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Failure {}

/// Build an error that exits with `code` and prints `message`.
pub(crate) fn fail(code: Exit, message: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(Failure {
        code: code.code(),
        message: message.into(),
    })
}

/// Build an error with a raw exit status (e.g. `-E CODE`).
pub(crate) fn fail_with(code: u8, message: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(Failure {
        code,
        message: message.into(),
    })
}

/// The exit status an error chain stands for: a `Failure` anywhere in it
/// decides; otherwise an I/O error is an OS error (71) and anything else a bug (70).
pub(crate) fn code_of(err: &anyhow::Error) -> u8 {
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

/// A panic is a bug: one line on stderr, where and what, then exit 70 at
/// once (SPEC section 7: never an abort with a core). Held locks are let go
/// as on any exit; a `run` child keeps its inherited lock.
pub fn on_panic_exit_70() {
    std::panic::set_hook(Box::new(|info| {
        let at = info
            .location()
            .map(|at| format!(" at {}:{}", at.file(), at.line()))
            .unwrap_or_default();
        let payload = info.payload();
        let what = payload
            .downcast_ref::<&str>()
            .copied()
            .or_else(|| payload.downcast_ref::<String>().map(String::as_str));
        let what = crate::text::escape_controls(what.unwrap_or("a panic"));
        // Not eprintln!: straight to fd 2 in one write, whatever captures
        // print macros.
        crate::ui::say(&format!("internal error (a bug){at}: {what}"));
        crate::sys::exit_at_once(i32::from(Exit::Software.code()));
    }));
}

/// Print an error once as `resin-lock: <what failed>: <why>` and return its
/// status. An empty message stands for a silent exit.
pub fn report(result: anyhow::Result<u8>) -> u8 {
    match result {
        Ok(code) => code,
        Err(err) => {
            let text = message(&err);
            if !text.is_empty() {
                crate::ui::say(&text);
            }
            code_of(&err)
        }
    }
}

/// The words of an error chain for its one line: `what: why: why`, with
/// the system's words for an errno but not the `(os error N)` that
/// `io::Error` adds to them, and control characters escaped.
pub(crate) fn message(err: &anyhow::Error) -> String {
    const SUFFIX: &str = " (os error ";
    let mut text = format!("{err:#}");
    let mut from = 0;
    while let Some(found) = text[from..].find(SUFFIX) {
        let start = from + found;
        let rest = &text[start + SUFFIX.len()..];
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits > 0 && rest[digits..].starts_with(')') {
            text.replace_range(start..start + SUFFIX.len() + digits + 1, "");
            from = start;
        } else {
            from = start + SUFFIX.len();
        }
    }
    if text.chars().any(char::is_control) {
        text = text
            .chars()
            .map(|c| {
                if c.is_control() {
                    c.escape_default().to_string()
                } else {
                    c.to_string()
                }
            })
            .collect();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_is_one_line_and_exit_70() {
        use nix::unistd::{ForkResult, fork, pipe};
        use std::io::Read;
        let (reader, writer) = pipe().unwrap();
        // SAFETY: the child only installs the hook, points stderr at the
        // pipe and panics; the hook ends it with _exit.
        match unsafe { fork() }.unwrap() {
            ForkResult::Child => {
                nix::unistd::dup2_stderr(&writer).unwrap();
                on_panic_exit_70();
                let _ = std::panic::catch_unwind(|| panic!("bad\nthing"));
                // Only if the hook did not end it.
                crate::sys::exit_at_once(1);
            }
            ForkResult::Parent { child } => {
                drop(writer);
                let status = nix::sys::wait::waitpid(child, None).unwrap();
                assert_eq!(status, WaitStatus::Exited(child, 70));
                let mut said = String::new();
                std::fs::File::from(reader)
                    .read_to_string(&mut said)
                    .unwrap();
                assert!(
                    said.starts_with("resin-lock: internal error (a bug) at src/exit.rs:")
                        && said.ends_with(": bad\\nthing\n")
                        && said.lines().count() == 1,
                    "{said:?}"
                );
            }
        }
    }
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
    fn every_status_has_a_meaning_and_the_table_is_in_order() {
        let codes: Vec<String> = table().into_iter().map(|(code, _)| code).collect();
        assert_eq!(
            codes,
            [
                "0", "1", "64", "69", "70", "71", "73", "77", "126", "127", "N", "128+S"
            ]
        );
        for (code, meaning) in table() {
            assert!(!meaning.is_empty() && !meaning.contains('\n'), "{code}");
        }
        let help = help_table();
        assert!(help.starts_with("Exit status:\n  0      done;"), "{help}");
        assert!(help.lines().all(|line| line.len() <= 78), "{help}");
        assert!(help.contains("\n         "), "hanging indent: {help}");
    }

    #[test]
    fn child_ends_in_words() {
        let pid = Pid::from_raw(42);
        assert_eq!(
            describe_status(WaitStatus::Exited(pid, 0)),
            "exited with status 0"
        );
        assert_eq!(
            describe_status(WaitStatus::Signaled(pid, Signal::SIGTERM, false)),
            "was killed by signal TERM"
        );
        assert_eq!(
            describe_status(WaitStatus::Signaled(pid, Signal::SIGSEGV, true)),
            "was killed by signal SEGV (core dumped)"
        );
    }

    #[test]
    fn messages_have_no_os_error_suffix_and_one_line() {
        let err = anyhow::Error::new(io::Error::from_raw_os_error(libc::ENOENT))
            .context("cannot create lock /x/y");
        assert_eq!(
            format!("{err:#}"),
            "cannot create lock /x/y: No such file or directory (os error 2)"
        );
        assert_eq!(
            message(&err),
            "cannot create lock /x/y: No such file or directory"
        );
        let err = anyhow::anyhow!("a\nb\tc (os error x) (os error 12)");
        assert_eq!(message(&err), "a\\nb\\tc (os error x)");
        let err = anyhow::anyhow!("x (os error 13) and (os error 1)");
        assert_eq!(message(&err), "x and");
    }

    #[test]
    fn io_errors_are_os_errors_and_the_rest_bugs() {
        let io = anyhow::Error::new(io::Error::from_raw_os_error(libc::EMFILE)).context("inotify");
        assert_eq!(code_of(&io), 71);
        assert_eq!(code_of(&anyhow::anyhow!("oops")), 70);
    }
}
