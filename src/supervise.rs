//! What `run` does once it holds the lock: start CMD with the locked
//! descriptors inherited, forward signals to it, reap every child (as PID 1
//! or as a child subreaper), and release the lock when CMD ends.
//!
//! Signals typed at a terminal (Ctrl-C, Ctrl-\, resize) reach CMD directly
//! because it shares our process group; those arrive here marked as sent by
//! the kernel and are not forwarded again, so CMD sees them once. Signals
//! sent by a process (`docker stop`, `kill`) are forwarded.

use std::ffi::{OsStr, OsString};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::process::Command;

use anyhow::Result;
use nix::errno::Errno;
use nix::fcntl::{FcntlArg, FdFlag, fcntl};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{Signal, kill, raise};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::{Pid, getpgid, getpgrp, getpid, getsid};
use signal_hook::consts::signal::*;

use crate::exit::{Exit, child_code, fail};
use crate::lock::{Held, Notify, release_all};
use crate::signals::{Received, SignalWatch};
use crate::ui::Ui;

/// Run `cmd` while holding `held`; returns the exit status to use.
pub fn run_child(
    cmd: &[OsString],
    held: Vec<Held>,
    signals: &mut SignalWatch,
    ui: &Ui,
    notify: Notify,
) -> Result<u8> {
    let Some((program, args)) = cmd.split_first() else {
        release_all(held, notify)?;
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
            release_all(held, notify)?;
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
    ui.verbose(|| format!("pid {child} ended ({status:?}); releasing the lock"));
    if let Err(err) = release_all(held, notify) {
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
    match err.kind() {
        io::ErrorKind::NotFound => fail(Exit::NotFound, format!("{name}: command not found")),
        io::ErrorKind::PermissionDenied => fail(
            Exit::NotExecutable,
            format!("{name}: permission denied (not executable)"),
        ),
        _ => fail(
            Exit::NotExecutable,
            format!("{name}: cannot execute: {err}"),
        ),
    }
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
