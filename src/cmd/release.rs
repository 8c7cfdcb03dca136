//! `resin-lock release`: give the lock back.
//!
//! A lock taken by `acquire` is released by its keeper (asked with SIGUSR1),
//! which removes the file under its flock only if the path still names its
//! inode. A stale resin-lock lock is taken over and removed. A lock held by
//! a live `run`, and any foreign lock, is refused (exit 1) unless --force.
//! A path with nothing there is already released.

use std::fs::{self, File};
use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::Context;
use crate::cli::ReleaseArgs;
use crate::exit::{Exit, fail};
use crate::lock::inspect::{Found, Kind, examine, stale_reason};
use crate::lock::record::{Mode, Record};
use crate::lock::{Released, unlink_if_same};
use crate::sys;
use crate::ui::Ui;

/// How long a keeper gets to let go after being asked.
const KEEPER_GRACE: Duration = Duration::from_secs(10);

pub fn run(ctx: &Context, args: ReleaseArgs) -> Result<u8> {
    let mut last_error = None;
    // In order: a keeper lets go of its paths in reverse, so by the time the
    // first path is free, the others are (see `stop_keeper`).
    for target in &ctx.locations.targets {
        if let Err(err) = release_one(&target.path, args.force, &ctx.ui)
            && let Some(previous) = last_error.replace(err)
        {
            eprintln!("resin-lock: {previous:#}");
        }
    }
    match last_error {
        None => Ok(Exit::Ok.code()),
        Some(err) => Err(err),
    }
}

fn release_one(path: &Path, force: bool, ui: &Ui) -> Result<()> {
    let shown = path.display();
    let found = examine(path).with_context(|| format!("cannot read lock {shown}"))?;
    match found {
        Found::Missing => {
            if stop_displaced_keepers(path)? {
                ui.warn(format!(
                    "{shown}: our lock file had been removed by someone else (the supervisor may have forced an update); stopped its keeper"
                ));
            } else {
                ui.verbose(|| format!("{shown}: no lock there; nothing to release"));
            }
            Ok(())
        }
        Found::Foreign { kind, what, .. } if force => {
            stop_displaced_keepers(path)?;
            remove_foreign(path, kind)?;
            ui.warn(format!(
                "removed {shown} (held by {what}) because of --force"
            ));
            Ok(())
        }
        Found::Foreign { what, .. } => {
            if stop_displaced_keepers(path)? {
                ui.warn(format!(
                    "{shown} is no longer the lock file resin-lock created: it is held by {what} (the supervisor may have forced an update); left it alone"
                ));
                return Ok(());
            }
            Err(fail(
                Exit::Busy,
                format!(
                    "{shown} is held by {what}, not by resin-lock; not removing it (use --force)"
                ),
            ))
        }
        Found::Ours {
            file, meta, record, ..
        } => match file.try_lock() {
            Ok(()) => {
                let reason = stale_reason(&record, false).unwrap_or("holder exited");
                report(
                    path,
                    unlink_if_same(path, meta.dev(), meta.ino()),
                    ui,
                    &format!("removed stale lock ({reason})"),
                )
            }
            Err(fs::TryLockError::WouldBlock) => match record.mode {
                Mode::Run if force => {
                    let outcome = unlink_if_same(path, meta.dev(), meta.ino());
                    report(
                        path,
                        outcome,
                        ui,
                        "removed the lock of a running `resin-lock run` because of --force",
                    )?;
                    ui.warn(format!(
                        "{shown}: the command of pid {} is still running unprotected",
                        record.pid
                    ));
                    Ok(())
                }
                Mode::Run => Err(fail(
                    Exit::Busy,
                    format!(
                        "{shown} is held by a running resin-lock run (pid {}: {}); it is released when that command ends (use --force to remove it anyway)",
                        record.pid,
                        record.command_line()
                    ),
                )),
                Mode::Acquire => stop_keeper(path, file, &meta, &record, force, ui),
            },
            Err(fs::TryLockError::Error(err)) => {
                Err(anyhow::Error::new(err).context(format!("cannot lock {shown}")))
            }
        },
    }
}

/// Stop the keepers of our lock at `path` whose file someone else removed
/// or replaced (they still hold the unlinked inode). True if there were any.
fn stop_displaced_keepers(path: &Path) -> Result<bool> {
    let Some(dir) = canonical_dir(crate::lock::create::parent_of(path)) else {
        return Ok(false);
    };
    let keepers = sys::displaced_keepers(&dir);
    for keeper in &keepers {
        let pidfd = sys::pidfd_open(*keeper).ok();
        if kill(*keeper, Signal::SIGUSR1).is_ok() {
            wait_for_exit(*keeper, pidfd.as_ref().map(|fd| fd.as_fd()))?;
        }
    }
    Ok(!keepers.is_empty())
}

/// The canonical path of the lock's directory, as the kernel names it in
/// /proc/PID/fd. When the directory was removed along with the lock, its
/// keepers still show it there: then its parent's canonical path and its name.
fn canonical_dir(dir: &Path) -> Option<PathBuf> {
    if let Ok(dir) = dir.canonicalize() {
        return Some(dir);
    }
    let dir = std::path::absolute(dir).ok()?;
    Some(dir.parent()?.canonicalize().ok()?.join(dir.file_name()?))
}

fn report(path: &Path, outcome: std::io::Result<Released>, ui: &Ui, what: &str) -> Result<()> {
    let shown = path.display();
    match outcome.with_context(|| format!("cannot remove lock {shown}"))? {
        Released::Removed => ui.verbose(|| format!("{shown}: {what}")),
        Released::Gone => ui.verbose(|| format!("{shown}: already removed")),
        Released::Replaced => ui.warn(format!(
            "{shown} is no longer the lock file we looked at (the supervisor may have forced an update); left it alone"
        )),
    }
    Ok(())
}

fn remove_foreign(path: &Path, kind: Kind) -> Result<()> {
    let result = match kind {
        Kind::Directory => fs::remove_dir(path),
        // unlink(2) removes a symlink itself, never its target.
        Kind::File | Kind::Symlink => fs::remove_file(path),
    };
    match result {
        Ok(()) => Ok(()),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(err) if err.raw_os_error() == Some(libc::ENOTEMPTY) => Err(fail(
            Exit::Busy,
            format!(
                "{} is a non-empty directory; not removing it",
                path.display()
            ),
        )),
        Err(err) => {
            Err(anyhow::Error::new(err).context(format!("cannot remove {}", path.display())))
        }
    }
}

/// Ask the keeper of an `acquire` lock to release it, and wait until it has.
fn stop_keeper(
    path: &Path,
    file: File,
    meta: &fs::Metadata,
    record: &Record,
    force: bool,
    ui: &Ui,
) -> Result<()> {
    let shown = path.display();
    let keeper = Pid::from_raw(record.pid);
    // The flock is held: by the keeper (it has the file open), or briefly by
    // a prober or an acquire still handing over. Give those a moment.
    let started = Instant::now();
    loop {
        if sys::process_holds_inode(keeper, meta.dev(), meta.ino(), record.fd).unwrap_or(false) {
            break;
        }
        match file.try_lock() {
            Ok(()) => {
                return report(
                    path,
                    unlink_if_same(path, meta.dev(), meta.ino()),
                    ui,
                    "removed stale lock (holder exited)",
                );
            }
            Err(fs::TryLockError::WouldBlock) => {}
            Err(fs::TryLockError::Error(err)) => return Err(err.into()),
        }
        if started.elapsed() > Duration::from_secs(1) {
            if force {
                let outcome = unlink_if_same(path, meta.dev(), meta.ino());
                return report(
                    path,
                    outcome,
                    ui,
                    "removed a lock held by an unknown process because of --force",
                );
            }
            return Err(fail(
                Exit::Busy,
                format!(
                    "{shown} is held, but not by its keeper pid {keeper} (another pid namespace, or no permission to check); not removing it (use --force)"
                ),
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    match kill(keeper, Signal::SIGUSR1) {
        Ok(()) | Err(Errno::ESRCH) => {}
        Err(err) => {
            return Err(anyhow::Error::new(std::io::Error::from(err))
                .context(format!("cannot signal keeper pid {keeper} of {shown}")));
        }
    }
    // The keeper removes the file under its flock, then closes it: the flock
    // coming free is the end of its part, without waiting for it to exit.
    // (It lets go of several paths in reverse order of taking them, and
    // `release` visits them in order, so this first wait covers them all.)
    if !sys::lock_within(&file, KEEPER_GRACE).with_context(|| format!("cannot lock {shown}"))? {
        return Err(fail(
            Exit::OsErr,
            format!(
                "keeper pid {keeper} did not let go of {shown} within {}s",
                KEEPER_GRACE.as_secs()
            ),
        ));
    }
    // The keeper removed the file (or found it replaced and left it).
    match fs::symlink_metadata(path) {
        Ok(now) if (now.dev(), now.ino()) == (meta.dev(), meta.ino()) => {
            // It exited without removing it: stale now, and our flock is
            // held, so remove it ourselves.
            report(
                path,
                unlink_if_same(path, meta.dev(), meta.ino()),
                ui,
                "removed the lock its keeper left",
            )
        }
        // Another file: a waiting resin-lock took the lock the moment the
        // keeper let go (a record of ours), or the supervisor had put its
        // own lock in our place, which the keeper left alone.
        Ok(_) => match examine(path) {
            Ok(Found::Ours { record, .. }) => {
                ui.verbose(|| {
                    format!(
                        "released {shown} (keeper pid {keeper} stopped); pid {} has taken it since",
                        record.pid
                    )
                });
                Ok(())
            }
            _ => {
                ui.warn(format!(
                    "{shown} is no longer the lock file resin-lock created (the supervisor may have forced an update); left it alone"
                ));
                Ok(())
            }
        },
        Err(_) => {
            ui.verbose(|| format!("released {shown} (keeper pid {keeper} stopped)"));
            Ok(())
        }
    }
}

fn wait_for_exit(pid: Pid, pidfd: Option<std::os::fd::BorrowedFd<'_>>) -> Result<()> {
    let deadline = Instant::now() + KEEPER_GRACE;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(fail(
                Exit::OsErr,
                format!(
                    "keeper pid {pid} did not let go of the lock within {}s",
                    KEEPER_GRACE.as_secs()
                ),
            ));
        }
        match pidfd {
            Some(fd) => {
                let mut fds = [PollFd::new(fd, PollFlags::POLLIN)];
                match poll(
                    &mut fds,
                    PollTimeout::try_from(left).unwrap_or(PollTimeout::MAX),
                ) {
                    Ok(n) if n > 0 => return Ok(()),
                    Ok(_) | Err(Errno::EINTR) => {}
                    Err(err) => return Err(std::io::Error::from(err).into()),
                }
            }
            None => {
                if kill(pid, None) == Err(Errno::ESRCH) {
                    return Ok(());
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
}
