//! What `release` decides for one lock path (SPEC 2b, 4): a lock taken by
//! `acquire` is released by its keeper, and only for its owner; a stale
//! resin-lock lock by anyone; a live `run` lock and any foreign lock only
//! with `--force`. Keepers are signalled only once proven to hold the lock
//! inode and to run as the caller's uid or root, through a pidfd opened
//! before the checks. The decision is returned; `cmd::release` says it.

use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::os::fd::OwnedFd;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use nix::sys::signal::Signal;
use nix::unistd::Pid;

use super::dir::{LockDir, lock_name};
use super::inspect::{Exclusive, Found, Ident, Inspection, Kind, examine, stale_reason};
use super::owner::ProcId;
use super::record::{Mode, Record};
use super::{Released, Target, unlink_if_same};
use crate::{procfs, sys};

/// How long a keeper gets to let go after being asked.
pub(super) const KEEPER_GRACE: Duration = Duration::from_secs(10);

/// Who asks, and how.
#[derive(Debug, Clone)]
pub struct Caller {
    /// `--owner PID`: also counts as the caller's owner (besides this
    /// process and its ancestors).
    pub owner: Option<ProcId>,
    pub force: bool,
    pub euid: u32,
}

impl Caller {
    pub(super) fn owns(&self, record: &Record) -> bool {
        self.owner
            .is_some_and(|p| p.is(record.owner, record.owner_start))
            || super::owner::is_self_or_ancestor(record.owner, record.owner_start)
    }

    /// Whether a process running as `uid` may be signalled on our behalf.
    pub(super) fn trusts_uid(&self, uid: u32) -> bool {
        uid == self.euid || uid == 0
    }
}

/// What `release` did at one path.
#[derive(Debug)]
pub enum Outcome {
    NothingThere,
    RemovedStale {
        reason: &'static str,
    },
    /// The keeper let go and removed the file. `taken_by`: a waiting
    /// resin-lock took the lock the moment it was free.
    KeeperReleased {
        keeper: i32,
        taken_by: Option<i32>,
    },
    /// The keeper let go but left the file, which we removed.
    KeeperLeftFile {
        keeper: i32,
    },
    /// The path names another file than ours now (the supervisor forced an
    /// update and put its own lock there): left alone. Keepers still holding
    /// our removed file were stopped.
    Replaced {
        what: Option<String>,
        keepers_stopped: usize,
    },
    /// `--force` removed what was there.
    ForcedForeign {
        what: String,
    },
    ForcedRun {
        pid: i32,
    },
    ForcedUnproven {
        keeper: i32,
    },
    Refused(Refusal),
}

/// Why `release` left a lock alone (exit 1).
#[derive(Debug)]
pub enum Refusal {
    Foreign {
        what: String,
    },
    LiveRun {
        holder: String,
    },
    NotOwner {
        holder: String,
    },
    /// The lock is held, but not provably by its keeper.
    Unproven {
        keeper: i32,
        why: &'static str,
    },
    NonEmptyDirectory,
}

/// Decide and do `release` for `target`.
pub fn release(target: &Target, caller: &Caller) -> Result<Outcome> {
    let path = &target.path;
    let shown = path.display();
    let dir = match LockDir::open(&Target {
        create_parent: false,
        ..target.clone()
    }) {
        Ok(dir) => dir,
        // The directory went with the lock: its keepers still show it in
        // /proc as the parent's canonical path and its name.
        Err(err) if err.kind() == io::ErrorKind::NotFound => {
            let removed_dir = super::displaced::canonical_removed_dir(super::dir::parent_of(path));
            return Ok(
                match removed_dir.map(|d| super::displaced::stop(&d, caller)) {
                    Some(stopped) if stopped > 0 => Outcome::Replaced {
                        what: None,
                        keepers_stopped: stopped,
                    },
                    _ => Outcome::NothingThere,
                },
            );
        }
        Err(err) => return Err(super::lock_error("release", path, err)),
    };
    let name = lock_name(path)?;
    let found = examine(&dir, name).with_context(|| format!("cannot read lock {shown}"))?;
    let outcome = match found {
        Found::Missing => match super::displaced::stop_in(&dir, caller) {
            0 => Outcome::NothingThere,
            stopped => Outcome::Replaced {
                what: None,
                keepers_stopped: stopped,
            },
        },
        Found::Foreign { kind, what, .. } => {
            let stopped = super::displaced::stop_in(&dir, caller);
            if caller.force {
                if let Some(refusal) = remove_foreign(&dir, name, kind, path)? {
                    return Ok(Outcome::Refused(refusal));
                }
                Outcome::ForcedForeign { what }
            } else if stopped > 0 {
                Outcome::Replaced {
                    what: Some(what),
                    keepers_stopped: stopped,
                }
            } else {
                Outcome::Refused(Refusal::Foreign { what })
            }
        }
        Found::Ours {
            file,
            ident,
            record,
            ..
        } => release_ours(&dir, name, path, file, ident, &record, caller)?,
    };
    Ok(outcome)
}

fn release_ours(
    dir: &LockDir,
    name: &OsStr,
    path: &Path,
    file: File,
    ident: Ident,
    record: &Record,
    caller: &Caller,
) -> Result<Outcome> {
    let shown = path.display();
    let exclusive =
        super::inspect::try_exclusive(&file).with_context(|| format!("cannot lock {shown}"))?;
    if exclusive == Exclusive::Taken {
        let reason = stale_reason(record, false).unwrap_or("holder exited");
        return removed(dir, name, ident, Outcome::RemovedStale { reason }, path);
    }
    if record.shared {
        return super::shared::release(dir, name, path, &file, ident, caller);
    }
    match record.mode {
        Mode::Run if caller.force => removed(
            dir,
            name,
            ident,
            Outcome::ForcedRun { pid: record.pid },
            path,
        ),
        Mode::Run => Ok(Outcome::Refused(Refusal::LiveRun {
            holder: Inspection::record_holder(record),
        })),
        Mode::Acquire if !caller.force && !caller.owns(record) => {
            Ok(Outcome::Refused(Refusal::NotOwner {
                holder: Inspection::record_holder(record),
            }))
        }
        Mode::Acquire => stop_keeper(dir, name, path, &file, ident, record, caller),
    }
}

/// Unlink our file (we hold its flock or were told to force), reporting
/// `done`, or that the path names another file now.
pub(super) fn removed(
    dir: &LockDir,
    name: &OsStr,
    ident: Ident,
    done: Outcome,
    path: &Path,
) -> Result<Outcome> {
    match unlink_if_same(dir, name, ident)
        .with_context(|| format!("cannot remove lock {}", path.display()))?
    {
        Released::Removed | Released::Gone | Released::Left => Ok(done),
        Released::Replaced => Ok(Outcome::Replaced {
            what: None,
            keepers_stopped: 0,
        }),
    }
}

/// Ask the keeper of an `acquire` lock to release it, and wait until it has.
fn stop_keeper(
    dir: &LockDir,
    name: &OsStr,
    path: &Path,
    file: &File,
    ident: Ident,
    record: &Record,
    caller: &Caller,
) -> Result<Outcome> {
    let shown = path.display();
    let keeper = Pid::from_raw(record.pid);
    // The flock is held: by the keeper, or for a moment by an acquire still
    // handing over to it. Give those a moment.
    let started = Instant::now();
    let pidfd = loop {
        match prove_keeper(keeper, ident, record.fd, caller) {
            Ok(pidfd) => break pidfd,
            Err(why) => {
                match super::inspect::try_exclusive(file)
                    .with_context(|| format!("cannot lock {shown}"))?
                {
                    Exclusive::Taken => {
                        return removed(
                            dir,
                            name,
                            ident,
                            Outcome::RemovedStale {
                                reason: "holder exited",
                            },
                            path,
                        );
                    }
                    Exclusive::Held | Exclusive::Shared => {}
                }
                if started.elapsed() > Duration::from_secs(1) || why == NO_PROC {
                    if caller.force {
                        return removed(
                            dir,
                            name,
                            ident,
                            Outcome::ForcedUnproven { keeper: record.pid },
                            path,
                        );
                    }
                    return Ok(Outcome::Refused(Refusal::Unproven {
                        keeper: record.pid,
                        why,
                    }));
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    };
    signal_keeper(&pidfd, keeper)
        .with_context(|| format!("cannot signal keeper pid {keeper} of {shown}"))?;
    // The keeper removes the file under its flock, then closes it: the flock
    // coming free is the end of its part, without waiting for it to exit.
    // (It lets go of several paths in reverse order of taking them, and
    // `release` visits them in order, so this first wait covers them all.)
    if !sys::lock_within(file, KEEPER_GRACE).with_context(|| format!("cannot lock {shown}"))? {
        return Err(crate::exit::fail(
            crate::exit::Exit::OsErr,
            format!(
                "keeper pid {keeper} did not let go of {shown} within {}s",
                KEEPER_GRACE.as_secs()
            ),
        ));
    }
    after_let_go(dir, name, path, ident, record.pid)
}

/// What is at the path once the keeper let go of the file.
pub(super) fn after_let_go(
    dir: &LockDir,
    name: &OsStr,
    path: &Path,
    ident: Ident,
    keeper: i32,
) -> Result<Outcome> {
    match dir.stat(name)? {
        // It exited without removing it: stale now, and our flock is held.
        Some(now) if (now.st_dev, now.st_ino) == ident => {
            removed(dir, name, ident, Outcome::KeeperLeftFile { keeper }, path)
        }
        // Another file: a waiting resin-lock took the lock the moment the
        // keeper let go (a record of ours), or the supervisor had put its
        // own lock in our place, which the keeper left alone.
        Some(_) => Ok(match examine(dir, name) {
            Ok(Found::Ours { record, .. }) => Outcome::KeeperReleased {
                keeper,
                taken_by: Some(record.pid),
            },
            Ok(Found::Foreign { what, .. }) => Outcome::Replaced {
                what: Some(what),
                keepers_stopped: 1,
            },
            _ => Outcome::KeeperReleased {
                keeper,
                taken_by: None,
            },
        }),
        None => Ok(Outcome::KeeperReleased {
            keeper,
            taken_by: None,
        }),
    }
}

const NO_PROC: &str = "no /proc to prove it";

/// A pidfd of `keeper`, once proven: it holds the lock inode and runs as
/// the caller's uid or root. The pidfd is opened before the checks, so the
/// process checked is the one signalled.
pub(super) fn prove_keeper(
    keeper: Pid,
    ident: Ident,
    fd_hint: Option<i32>,
    caller: &Caller,
) -> std::result::Result<Option<OwnedFd>, &'static str> {
    if !procfs::proc_mounted() {
        return Err(NO_PROC);
    }
    let pidfd = match sys::pidfd_open(keeper) {
        Ok(fd) => Some(fd),
        Err(err) if err.raw_os_error() == Some(libc::ESRCH) => return Err("it is not running"),
        // Kernels before 5.3.
        Err(_) => None,
    };
    if !procfs::process_holds_inode(keeper, ident.0, ident.1, fd_hint).unwrap_or(false) {
        return Err("it does not hold the lock (another pid namespace, or no permission to check)");
    }
    match procfs::process_uid(keeper) {
        Ok(uid) if caller.trusts_uid(uid) => Ok(pidfd),
        Ok(_) => Err("it runs as another user"),
        Err(_) => Err("its user cannot be read"),
    }
}

pub(super) fn signal_keeper(pidfd: &Option<OwnedFd>, keeper: Pid) -> io::Result<()> {
    let sent = match pidfd {
        Some(fd) => sys::pidfd_send_signal(fd, Signal::SIGUSR1 as i32),
        None => nix::sys::signal::kill(keeper, Signal::SIGUSR1).map_err(io::Error::from),
    };
    match sent {
        // Gone meanwhile: its flock is free, which the wait sees.
        Err(err) if err.raw_os_error() == Some(libc::ESRCH) => Ok(()),
        other => other,
    }
}

/// `--force` on a foreign lock: remove it (a symlink itself, never its
/// target; a directory only if empty).
fn remove_foreign(dir: &LockDir, name: &OsStr, kind: Kind, path: &Path) -> Result<Option<Refusal>> {
    // What is there may have been swapped since it was looked at: a
    // directory for a file, or back.
    let result = match kind {
        Kind::Directory => dir.rmdir(name),
        Kind::File | Kind::Symlink => dir.unlink(name),
    }
    .or_else(|err| match err.raw_os_error() {
        Some(libc::EISDIR) => dir.rmdir(name),
        Some(libc::ENOTDIR) => dir.unlink(name),
        _ => Err(err),
    });
    match result {
        Ok(()) => Ok(None),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(err) if err.raw_os_error() == Some(libc::ENOTEMPTY) => {
            Ok(Some(Refusal::NonEmptyDirectory))
        }
        Err(err) => {
            Err(anyhow::Error::new(err).context(format!("cannot remove {}", path.display())))
        }
    }
}
