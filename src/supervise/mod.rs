//! What `run` does once it holds the lock: start CMD with the locked
//! descriptors inherited, forward signals to it, reap every child (as PID 1
//! or as a child subreaper), and release the lock when CMD ends.
//!
//! Signals typed at a terminal (Ctrl-C, Ctrl-\, resize) reach CMD directly
//! because it shares our process group; those arrive here marked as sent by
//! the kernel and are not forwarded again, so CMD sees them once. Signals
//! sent by a process (`docker stop`, `kill`) are forwarded.
//!
//! With `-g` (tini's `-g`), CMD leads its own process group and forwarded
//! signals go to the whole group, so what CMD started in the background
//! gets them too. If our group was the terminal's foreground group, CMD's
//! group takes the terminal (before it execs, as tini does): Ctrl-C and
//! Ctrl-Z then reach CMD's group from the terminal, CMD can read the
//! terminal, and the terminal comes back to our group when CMD stops or
//! ends. Without a terminal to hand over, signals the kernel sends to our
//! group (a Ctrl-C when stdin is not the terminal) are forwarded, since
//! CMD's group no longer gets them.
//!
//! When CMD ends while processes it started are still running (orphans
//! that came to us as subreaper or PID 1), one line says so before the lock
//! is released: the lock no longer protects them.
//!
//! With `--on-lost SIGNAL`, a lock file removed under CMD by someone else
//! (`lost`) gets SIGNAL sent to CMD (or its group), once.
//!
//! `hold` is `run` without a CMD: it holds the lock for the program at the
//! other end of its stdin until that program is gone (`caller`), watching
//! for a lost lock file and `--max-hold` meanwhile (`hold`).

use std::ffi::{OsStr, OsString};
use std::io;
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::process::Command;

use anyhow::Result;
use nix::errno::Errno;
use nix::fcntl::{FcntlArg, FdFlag, fcntl};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{SigSet, SigmaskHow, Signal, raise, sigprocmask};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::{Pid, getpgid, getpgrp, getpid, getsid, isatty, tcgetpgrp, tcsetpgrp};
use signal_hook::consts::signal::*;

use crate::exit::{Exit, child_code, describe_status, fail};
use crate::lock::{Held, Notify, release_all};
use crate::signals::{Received, SignalWatch};
use crate::ui::Ui;

mod caller;
mod child;
mod hold;
mod lost;
mod start_error;

pub(crate) use caller::CallerWatch;
use child::Child;
pub(crate) use hold::{Ended, Happened, hold};
pub use lost::{Lost, LostSignal, OnLost};

/// How `run` starts CMD.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// `-g`: CMD in its own process group, signals to the whole group.
    pub group: bool,
    /// `--max-hold`: let go of the lock after this long; CMD goes on.
    pub max_hold: Option<std::time::Duration>,
    /// `--on-lost`: the signal for CMD when a lock file is removed under it.
    pub on_lost: Option<LostSignal>,
}

/// Run `cmd` while holding `held`; returns the exit status to use.
pub fn run_child(
    cmd: &[OsString],
    options: Options,
    held: Vec<Held>,
    signals: &mut SignalWatch,
    ui: &Ui,
    notify: Notify,
    on_lost: OnLost,
) -> Result<u8> {
    let Some((program, args)) = cmd.split_first() else {
        release_all(held, notify)?;
        return Err(fail(Exit::Usage, "run: missing command after --"));
    };
    // Watched from before CMD starts: whatever CMD sees, we see too.
    let lost_watch = options.on_lost.map(|_| lost::LostWatch::new(&held));
    let child = match start(program, args, options, &held) {
        Ok(child) => child,
        Err(err) => {
            if let Some(watch) = lost_watch {
                watch.retire();
            }
            release_all(held, notify)?;
            return Err(err);
        }
    };
    ui.verbose(|| format!("started {} as pid {}", program.to_string_lossy(), child.pid));
    let (status, held) = watch(
        child, options, held, program, signals, ui, notify, lost_watch, on_lost,
    );
    if child.terminal && foreground() == Some(child.pid) {
        set_foreground(getpgrp());
    }
    let code = child_code(status);
    let pid = child.pid;
    ui.verbose(|| {
        format!(
            "{} (pid {pid}) {}{}",
            program.to_string_lossy(),
            describe_status(status),
            if held.is_some() {
                "; releasing the lock"
            } else {
                " (the lock was released at --max-hold)"
            }
        )
    });
    if let Some(held) = held {
        warn_leftovers(program, ui);
        if let Err(err) = release_all(held, notify) {
            crate::ui::say(&crate::exit::message(&err));
        }
    }
    reap(Pid::from_raw(-1), false);
    Ok(code)
}

/// Spawn CMD with the lock's descriptors inherited (in a process group of
/// its own with `-g`, leading the terminal when we have it).
fn start(program: &OsString, args: &[OsString], options: Options, held: &[Held]) -> Result<Child> {
    if getpid().as_raw() != 1 {
        // Orphans of CMD's tree come to us, not to init, and are reaped.
        let _ = nix::sys::prctl::set_child_subreaper(true);
    }
    for lock in held {
        // CMD inherits the flocked descriptor: the lock stays provably live
        // while CMD runs, even if resin-lock itself is SIGKILLed.
        fcntl(lock.fd(), FcntlArg::F_SETFD(FdFlag::empty()))?;
    }
    let terminal = options.group && we_have_the_terminal();
    let spawn = |program: &OsStr, args: &[&OsStr]| {
        let mut command = Command::new(program);
        command.args(args).env("RESIN_LOCK_HELD", held_paths(held));
        if terminal {
            crate::sys::lead_group_with_terminal(&mut command);
        } else if options.group {
            command.process_group(0);
        }
        command.spawn()
    };
    let args: Vec<&OsStr> = args.iter().map(OsString::as_os_str).collect();
    let spawned = spawn(program, &args).or_else(|err| {
        // A script without `#!`: run by /bin/sh, as execvp(3) does.
        match start_error::shell_script(program, &err) {
            Some(script) => {
                let with_script = [&[script.as_os_str()][..], &args].concat();
                spawn(OsStr::new("/bin/sh"), &with_script)
            }
            None => Err(err),
        }
    });
    match spawned {
        Ok(child) => Ok(Child {
            pid: Pid::from_raw(child.id() as i32),
            group: options.group,
            terminal,
        }),
        Err(err) => {
            if terminal && foreground() != Some(getpgrp()) {
                // CMD's group took the terminal, then exec failed.
                set_foreground(getpgrp());
            }
            Err(start_error::explain(program, &err))
        }
    }
}

/// Until CMD ends: reap, forward signals, signal CMD if a lock file is
/// removed under it (`--on-lost`), and let go of the locks at
/// `--max-hold`. CMD's status, and the locks if they are still held.
#[allow(clippy::too_many_arguments)]
fn watch(
    child: Child,
    options: Options,
    held: Vec<Held>,
    program: &OsStr,
    signals: &mut SignalWatch,
    ui: &Ui,
    notify: Notify,
    mut lost_watch: Option<lost::LostWatch>,
    on_lost: OnLost,
) -> (WaitStatus, Option<Vec<Held>>) {
    // `--max-hold`, counted from the lock's taking (just before the spawn).
    // One past what a clock can count is never (as `-w` is): CMD runs now,
    // and nothing from here on may panic.
    let deadline = options
        .max_hold
        .and_then(|d| std::time::Instant::now().checked_add(d));
    let mut held = Some(held);
    loop {
        match reap(child.pid, child.terminal) {
            Some(Reaped::Ended(status)) => {
                if let Some(watch) = lost_watch {
                    watch.retire();
                }
                return (status, held);
            }
            Some(Reaped::Stopped) => stop_with(child),
            None => {}
        }
        // CMD has not been reaped: its pid (and group) is still its own.
        if let (Some(watch), Some(locks), Some(signal)) = (&mut lost_watch, &held, options.on_lost)
            && let Some((lock, _)) = watch.lost(locks).first()
        {
            on_lost(Lost {
                path: &lock.path,
                signal,
                pid: child.pid,
                group: child.group,
                sent: crate::sys::kill_number(child.pid, signal.0, child.group),
            });
            // Once: the watch ends here.
            if let Some(watch) = lost_watch.take() {
                watch.retire();
            }
        }
        let left = deadline.map(|d| d.saturating_duration_since(std::time::Instant::now()));
        if left.is_some_and(|left| left.is_zero())
            && let Some(held) = held.take()
        {
            expire(
                held,
                options.max_hold.unwrap_or_default(),
                program,
                ui,
                notify,
            );
        }
        if held.is_none()
            && let Some(watch) = lost_watch.take()
        {
            // Released at --max-hold: what becomes of the files is not ours.
            watch.retire();
        }
        let left = left.filter(|_| held.is_some());
        let poll_every = lost_watch.as_ref().and_then(lost::LostWatch::poll_every);
        let timeout = match [left, poll_every].into_iter().flatten().min() {
            // Rounded up: a poll that wakes a little early only loops.
            Some(left) => {
                PollTimeout::try_from(left.saturating_add(std::time::Duration::from_millis(1)))
                    .unwrap_or(PollTimeout::MAX)
            }
            None => PollTimeout::NONE,
        };
        let mut fds = vec![PollFd::new(signals.fd(), PollFlags::POLLIN)];
        if let Some(fd) = lost_watch.as_ref().and_then(lost::LostWatch::fd) {
            fds.push(PollFd::new(fd, PollFlags::POLLIN));
        }
        // An error (out of memory for the poll table) must not end the
        // wait with the lock held and CMD unwatched: try again shortly.
        if let Err(err) = poll(&mut fds, timeout)
            && err != Errno::EINTR
        {
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        drop(fds);
        for received in signals.pending() {
            if received.signal != SIGCHLD {
                forward(received, child, ui);
            }
        }
    }
}

/// `--max-hold` ran out while CMD runs: say so, then release the lock
/// (remove the file, then drop the flock that CMD's inherited descriptor
/// shares with ours, so that nobody waits for CMD). CMD goes on.
fn expire(held: Vec<Held>, after: std::time::Duration, program: &OsStr, ui: &Ui, notify: Notify) {
    let paths: Vec<String> = held.iter().map(|h| h.path.display().to_string()).collect();
    ui.warn(format!(
        "held {} for {} (--max-hold); releasing it: {} goes on unprotected",
        paths.join(", "),
        humantime::format_duration(after),
        program.to_string_lossy()
    ));
    // Our own descriptions of the locks, which CMD's descriptors share.
    let shared: Vec<std::fs::File> = held
        .iter()
        .filter_map(|h| h.fd().try_clone_to_owned().ok().map(std::fs::File::from))
        .collect();
    if let Err(err) = release_all(held, notify) {
        crate::ui::say(&crate::exit::message(&err));
    }
    for file in shared {
        let _ = file.unlock();
    }
}

/// Say which processes CMD left running: they came to us (as subreaper or
/// PID 1) when their parent ended, and the lock no longer protects them.
/// Without /proc nothing is said.
fn warn_leftovers(program: &OsStr, ui: &Ui) {
    if ui.quiet {
        return;
    }
    let left = crate::procfs::live_children();
    if left.is_empty() {
        return;
    }
    ui.warn(leftover_message(&program.to_string_lossy(), &left));
}

/// The line for `warn_leftovers`; at most 20 pids are listed.
fn leftover_message(program: &str, left: &[Pid]) -> String {
    const SHOWN: usize = 20;
    let mut pids = left
        .iter()
        .take(SHOWN)
        .map(|pid| pid.to_string())
        .collect::<Vec<_>>()
        .join(" ");
    if left.len() > SHOWN {
        pids.push_str(&format!(" and {} more", left.len() - SHOWN));
    }
    let (count, verb) = if left.len() == 1 {
        ("1 process".to_owned(), "is")
    } else {
        (format!("{} processes", left.len()), "are")
    };
    format!(
        "{program} ended, but {count} it started {verb} still running (pid {pids}); \
         releasing the lock, which no longer protects them"
    )
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

/// What `reap` saw of the main child.
enum Reaped {
    Ended(WaitStatus),
    Stopped,
}

/// Reap every child that has ended (exits merge into one SIGCHLD); return
/// the main child's status once it has ended, or that it stopped (only
/// asked for with `stops`: when CMD's group has the terminal).
fn reap(main: Pid, stops: bool) -> Option<Reaped> {
    let flags = if stops {
        WaitPidFlag::WNOHANG | WaitPidFlag::WUNTRACED
    } else {
        WaitPidFlag::WNOHANG
    };
    let mut ended = None;
    let mut stopped = false;
    loop {
        match waitpid(Pid::from_raw(-1), Some(flags)) {
            Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => break,
            Ok(WaitStatus::Stopped(pid, _)) if pid == main => stopped = true,
            Ok(WaitStatus::Stopped(..)) | Err(Errno::EINTR) => {}
            Ok(status) if status.pid() == Some(main) => ended = Some(status),
            Ok(_) => {}
            Err(_) => break,
        }
    }
    ended
        .map(Reaped::Ended)
        .or(stopped.then_some(Reaped::Stopped))
}

/// Pass a signal on to the child (or its group), unless the child got it
/// already from the terminal or it was about ourselves.
fn forward(received: Received, child: Child, ui: &Ui) {
    let signal = received.signal;
    if received.from_kernel {
        let same_group = getpgid(Some(child.pid)).ok() == Some(getpgrp());
        let leader = getsid(None).ok() == Some(getpid());
        match signal {
            SIGTSTP | SIGTTIN | SIGTTOU => {
                // Ctrl-Z stopped our group, which CMD's (-g) is not part of.
                if signal == SIGTSTP && !same_group {
                    let _ = child.signal(Signal::SIGTSTP);
                }
                crate::signals::stop_self_if_terminal_stop(received);
                return;
            }
            SIGINT | SIGQUIT | SIGWINCH if same_group => return,
            SIGHUP if same_group && !leader => return,
            SIGPIPE | SIGALRM => return,
            _ => {}
        }
    }
    if let Ok(sig) = Signal::try_from(signal) {
        ui.verbose(|| {
            let to = if child.group { "process group" } else { "pid" };
            format!("forwarding {sig} to {to} {}", child.pid)
        });
        let _ = child.signal(sig);
    }
}

/// Whether stdin is a terminal whose foreground process group is ours: the
/// terminal `-g` hands over to CMD's group.
fn we_have_the_terminal() -> bool {
    let stdin = io::stdin();
    isatty(stdin.as_fd()).unwrap_or(false) && foreground() == Some(getpgrp())
}

/// The foreground process group of the terminal on stdin.
fn foreground() -> Option<Pid> {
    tcgetpgrp(io::stdin().as_fd()).ok()
}

/// Make `group` the terminal's foreground group. SIGTTOU is blocked
/// meanwhile: a background group (ours, while CMD's has the terminal) may
/// then take the terminal instead of being stopped.
fn set_foreground(group: Pid) {
    let mut ttou = SigSet::empty();
    ttou.add(Signal::SIGTTOU);
    let mut old = SigSet::empty();
    if sigprocmask(SigmaskHow::SIG_BLOCK, Some(&ttou), Some(&mut old)).is_err() {
        return;
    }
    let _ = tcsetpgrp(io::stdin().as_fd(), group);
    let _ = sigprocmask(SigmaskHow::SIG_SETMASK, Some(&old), None);
}

/// CMD's group, which has the terminal, was stopped (Ctrl-Z): give the
/// terminal back to our group and stop too, so the shell sees the job stop.
/// Once continued in the foreground (`fg`), hand the terminal back to CMD's
/// group; continue it either way. As PID 1 nobody would continue us: CMD
/// stays stopped until someone continues it.
fn stop_with(child: Child) {
    if !child.terminal || getpid().as_raw() == 1 {
        return;
    }
    let ours = getpgrp();
    if foreground() == Some(child.pid) {
        set_foreground(ours);
    }
    let _ = raise(Signal::SIGSTOP);
    if foreground() == Some(ours) {
        set_foreground(child.pid);
    }
    let _ = child.signal(Signal::SIGCONT);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leftovers_are_counted_and_listed() {
        let pids = |n: i32| (100..100 + n).map(Pid::from_raw).collect::<Vec<_>>();
        assert_eq!(
            leftover_message("job", &pids(1)),
            "job ended, but 1 process it started is still running (pid 100); \
             releasing the lock, which no longer protects them"
        );
        assert!(
            leftover_message("job", &pids(2))
                .contains("2 processes it started are still running (pid 100 101);")
        );
        let many = leftover_message("job", &pids(25));
        assert!(many.contains("25 processes"), "{many}");
        assert!(many.contains("(pid 100 101 "), "{many}");
        assert!(many.contains(" 119 and 5 more);"), "{many}");
        assert!(!many.contains("120"), "{many}");
    }
}
