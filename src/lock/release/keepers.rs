//! Asking an `acquire` keeper to let go: proving it holds the lock inode
//! and runs as the caller's uid or root, signalling it through a pidfd
//! opened before the checks, and reading what is at the path once it has.

use std::io;
use std::os::fd::OwnedFd;
use std::time::Duration;

use anyhow::{Context as _, Result};
use nix::sys::signal::Signal;
use nix::unistd::Pid;

use super::outcome::{Caller, Outcome, Seen};
use crate::lock::dir::{Ident, Released, unlink_if_same};
use crate::lock::probe::{Found, examine};
use crate::{procfs, sys};

/// How long a keeper gets to let go after being asked.
pub const KEEPER_GRACE: Duration = Duration::from_secs(10);

/// Unlink our file (we hold its flock or were told to force), reporting
/// `done`, or that the path names another file now.
pub fn removed(seen: &Seen, done: Outcome) -> Result<Outcome> {
    let Seen {
        dir,
        name,
        path,
        ident,
        ..
    } = *seen;
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

/// What is at the path once the keeper let go of the file.
pub fn after_let_go(seen: &Seen, keeper: i32) -> Result<Outcome> {
    let Seen {
        dir, name, ident, ..
    } = *seen;
    match dir.stat(name)? {
        // It exited without removing it: stale now, and our flock is held.
        Some(now) if crate::lock::dir::ident(&now) == ident => {
            removed(seen, Outcome::KeeperLeftFile { keeper })
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

pub const NO_PROC: &str = "no /proc to prove it";

/// A pidfd of `keeper`, once proven: it holds the lock inode and runs as
/// the caller's uid or root. The pidfd is opened before the checks, so the
/// process checked is the one signalled.
pub fn prove_keeper(
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

pub fn signal_keeper(pidfd: &Option<OwnedFd>, keeper: Pid) -> io::Result<()> {
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
