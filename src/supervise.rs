//! What `run` does once it holds the lock: start CMD with the locked
//! descriptors inherited, forward signals to it, reap every child (as PID 1
//! or as a child subreaper), and release the lock when CMD ends.
//!
//! Signals typed at a terminal (Ctrl-C, Ctrl-\, resize) reach CMD directly
//! because it shares our process group; those arrive here marked as sent by
//! the kernel and are not forwarded again, so CMD sees them once. Signals
//! sent by a process (`docker stop`, `kill`) are forwarded.

use std::ffi::{OsStr, OsString};
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Result;
use nix::errno::Errno;
use nix::fcntl::{FcntlArg, FdFlag, fcntl};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{Signal, kill, raise};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::{Pid, getpgid, getpgrp, getpid, getsid};
use signal_hook::consts::signal::*;

use crate::exit::{Exit, child_code, describe_status, fail};
use crate::lock::{Held, release_all};
use crate::signals::{Received, SignalWatch};
use crate::ui::Ui;

/// Run `cmd` while holding `held`; returns the exit status to use.
pub fn run_child(
    cmd: &[OsString],
    held: Vec<Held>,
    signals: &mut SignalWatch,
    ui: &Ui,
) -> Result<u8> {
    let Some((program, args)) = cmd.split_first() else {
        release_all(held, ui)?;
        return Err(fail(Exit::Usage, "run: missing command after --"));
    };
    if getpid().as_raw() != 1 {
        // Orphans of CMD's tree come to us, not to init, and are reaped.
        let _ = nix::sys::prctl::set_child_subreaper(true);
    }
    for lock in &held {
        // CMD inherits the flocked descriptor: the lock stays provably live
        // while CMD runs, even if resin-lock itself is SIGKILLed.
        fcntl(lock.fd(), FcntlArg::F_SETFD(FdFlag::empty()))?;
    }
    let child = match Command::new(program)
        .args(args)
        .env("RESIN_LOCK_HELD", held_paths(&held))
        .spawn()
    {
        Ok(child) => child,
        Err(err) => {
            release_all(held, ui)?;
            return Err(spawn_error(program, &err));
        }
    };
    let child = Pid::from_raw(child.id() as i32);
    ui.verbose(|| format!("started {} as pid {child}", program.to_string_lossy()));
    let status = loop {
        if let Some(status) = reap(child) {
            break status;
        }
        let mut fds = [PollFd::new(signals.fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) | Err(Errno::EINTR) => {}
            Err(err) => return Err(io::Error::from(err).into()),
        }
        for received in signals.pending() {
            if received.signal != SIGCHLD {
                forward(received, child, ui);
            }
        }
    };
    let code = child_code(status);
    ui.verbose(|| {
        format!(
            "{} (pid {child}) {}; releasing the lock",
            program.to_string_lossy(),
            describe_status(status)
        )
    });
    if let Err(err) = release_all(held, ui) {
        eprintln!("resin-lock: {err:#}");
    }
    reap(Pid::from_raw(-1));
    Ok(code)
}

/// The lock paths joined by ':' (paths need not be UTF-8).
fn held_paths(held: &[Held]) -> OsString {
    let joined = held
        .iter()
        .map(|h| h.path.as_os_str().as_bytes())
        .collect::<Vec<_>>()
        .join(&b':');
    OsStr::from_bytes(&joined).to_owned()
}

fn spawn_error(program: &OsStr, err: &io::Error) -> anyhow::Error {
    let name = program.to_string_lossy();
    if program.is_empty() {
        return fail(Exit::NotFound, "run: the command name is empty");
    }
    match err.kind() {
        // ENOENT from execve for a file that is there: what it needs to run
        // is missing. Shells say so with 127 too (bash, dash, zsh, fish).
        io::ErrorKind::NotFound => match find_program(program).map(|p| interpreter(&p)) {
            Some(Some(interpreter)) => fail(
                Exit::NotFound,
                format!(
                    "{name}: bad interpreter: {interpreter} (named on its #! line) does not exist"
                ),
            ),
            Some(None) => fail(
                Exit::NotFound,
                format!(
                    "{name}: cannot execute: its dynamic loader does not exist (built for \
                     another system or libc?)"
                ),
            ),
            None => fail(Exit::NotFound, format!("{name}: command not found")),
        },
        io::ErrorKind::PermissionDenied if Path::new(program).is_dir() => {
            fail(Exit::NotExecutable, format!("{name}: is a directory"))
        }
        io::ErrorKind::PermissionDenied => fail(
            Exit::NotExecutable,
            format!("{name}: permission denied (not executable)"),
        ),
        _ => fail(
            Exit::NotExecutable,
            format!(
                "{name}: cannot execute: {}",
                err.raw_os_error().map_or_else(
                    || err.to_string(),
                    |errno| Errno::from_raw(errno).desc().to_owned()
                )
            ),
        ),
    }
}

/// The file that exec would have run for `program`: the path itself when
/// it has a '/', else the first executable file of that name in PATH.
fn find_program(program: &OsStr) -> Option<PathBuf> {
    let is_program = |path: &Path| {
        std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if program.as_bytes().contains(&b'/') {
        let path = PathBuf::from(program);
        return is_program(&path).then_some(path);
    }
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|path| is_program(path))
}

/// The interpreter a script names on its `#!` line (read from its first
/// 256 bytes), or None for a file that has none.
fn interpreter(script: &Path) -> Option<String> {
    let mut head = Vec::with_capacity(256);
    std::fs::File::open(script)
        .ok()?
        .take(256)
        .read_to_end(&mut head)
        .ok()?;
    let line = head.strip_prefix(b"#!")?.split(|&b| b == b'\n').next()?;
    let word = line
        // As the kernel reads it: a `\r` of a DOS line end stays in the name.
        .split(|&b| b == b' ' || b == b'\t')
        .find(|word| !word.is_empty())?;
    Some(String::from_utf8_lossy(word).into_owned())
}

/// Reap every child that has ended (exits merge into one SIGCHLD); return
/// the main child's status once it has ended.
fn reap(main: Pid) -> Option<WaitStatus> {
    let mut ended = None;
    loop {
        match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => return ended,
            Ok(status) if status.pid() == Some(main) => ended = Some(status),
            Ok(_) | Err(Errno::EINTR) => {}
            Err(_) => return ended,
        }
    }
}

/// Pass a signal on to the child, unless the child got it already from the
/// terminal or it was about ourselves.
fn forward(received: Received, child: Pid, ui: &Ui) {
    let signal = received.signal;
    if received.from_kernel {
        let same_group = getpgid(Some(child)).ok() == Some(getpgrp());
        let leader = getsid(None).ok() == Some(getpid());
        match signal {
            SIGTSTP | SIGTTIN | SIGTTOU => {
                stop_self_if_terminal_stop(received);
                return;
            }
            SIGINT | SIGQUIT | SIGWINCH if same_group => return,
            SIGHUP if same_group && !leader => return,
            SIGPIPE | SIGALRM => return,
            _ => {}
        }
    }
    if let Ok(sig) = Signal::try_from(signal) {
        ui.verbose(|| format!("forwarding {sig} to pid {child}"));
        let _ = kill(child, sig);
    }
}

/// Ctrl-Z (or a background read/write) from the terminal stopped the
/// process group; stop ourselves too so the shell sees the job stop.
pub fn stop_self_if_terminal_stop(received: Received) {
    if received.from_kernel
        && matches!(received.signal, SIGTSTP | SIGTTIN | SIGTTOU)
        && getpid().as_raw() != 1
    {
        let _ = raise(Signal::SIGSTOP);
    }
}
