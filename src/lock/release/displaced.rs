//! Keepers whose lock file someone else removed or replaced (a forced
//! update, `release --force`): they still hold the unlinked file, and are
//! stopped by `release` once proven ours. Never because of a process that
//! is not: another uid's process named `resin-lock-keep` proves nothing.

use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;
use std::time::Instant;

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::Signal;

use super::keepers::KEEPER_GRACE;
use super::outcome::Caller;
use crate::lock::dir::LockDir;
use crate::lock::record::{self, Record};
use crate::{procfs, sys};

/// Stop the keepers of our lock in `dir` whose file someone else removed
/// or replaced (they still hold the unlinked inode), when proven ours: a
/// keeper running as the caller's uid or root, whose file is a record that
/// names it and, unless `--force`, whose owner is the caller's. Returns how
/// many were stopped. Never fails because of a process that is not ours.
pub fn stop_in(dir: &LockDir, caller: &Caller) -> usize {
    procfs::fd_path(dir.fd()).map_or(0, |canonical| stop(&canonical, caller))
}

/// A removed directory's canonical path: its parent's and its name.
pub fn canonical_removed_dir(dir: &Path) -> Option<std::path::PathBuf> {
    let dir = std::path::absolute(dir).ok()?;
    Some(dir.parent()?.canonicalize().ok()?.join(dir.file_name()?))
}

pub fn stop(canonical: &Path, caller: &Caller) -> usize {
    let mut stopped = 0;
    for (keeper, fd_path) in procfs::displaced_keepers(canonical) {
        // Opened first: the process checked below is the one signalled.
        let Ok(pidfd) = sys::pidfd_open(keeper) else {
            continue;
        };
        let ours = procfs::process_uid(keeper).is_ok_and(|uid| caller.trusts_uid(uid))
            && displaced_record(&fd_path).is_some_and(|record| {
                record.pid == keeper.as_raw() && (caller.force || caller.owns(&record))
            });
        if ours
            && sys::pidfd_send_signal(&pidfd, Signal::SIGUSR1 as i32).is_ok()
            && wait_for_exit(&pidfd)
        {
            stopped += 1;
        }
    }
    stopped
}

/// The record in a displaced keeper's file (read through /proc, bounded).
fn displaced_record(fd_path: &Path) -> Option<Record> {
    use std::io::Read;
    let file = File::open(fd_path).ok()?;
    if !file.metadata().ok()?.is_file() {
        return None;
    }
    let mut bytes = Vec::new();
    file.take(record::MAX_LEN as u64 + 1)
        .read_to_end(&mut bytes)
        .ok()?;
    Record::parse(&bytes).map(|(record, _)| record)
}

/// Wait (bounded) until the process behind `pidfd` exits.
fn wait_for_exit(pidfd: &OwnedFd) -> bool {
    let deadline = Instant::now() + KEEPER_GRACE;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        let mut fds = [PollFd::new(pidfd.as_fd(), PollFlags::POLLIN)];
        match poll(
            &mut fds,
            PollTimeout::try_from(left).unwrap_or(PollTimeout::MAX),
        ) {
            Ok(n) if n > 0 => return true,
            Ok(_) | Err(Errno::EINTR) => {}
            Err(_) => return false,
        }
    }
}
