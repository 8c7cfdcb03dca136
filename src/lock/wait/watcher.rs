//! The waiter's inotify watches: the lock paths' directories (a removal
//! there may free the lock) and the files of displaced holders it follows
//! (their holder closing one may be the lock coming free).

use std::collections::HashMap;
use std::ffi::OsString;
use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Result;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify, WatchDescriptor};

use crate::lock::dir::{Ident, Target, lock_name, names, parent_of};
use crate::lock::record::Record;
use crate::signals::{ABORT_WAIT, SignalWatch};

/// A resin-lock lock file we saw held: kept open to follow its holder.
pub(super) struct Followed {
    pub(super) index: usize,
    pub(super) file: File,
    pub(super) ident: Ident,
    pub(super) record: Record,
}

impl Followed {
    pub(super) fn in_place(&self, target: &Target) -> bool {
        names(target, self.ident)
    }
}

/// Inotify watches on the directories of the lock paths and on the lock
/// files followed; none when no inotify instance can be had (then we poll).
pub(super) struct Watcher {
    pub(super) inotify: Option<Inotify>,
    dirs: HashMap<WatchDescriptor, PathBuf>,
    files: HashMap<WatchDescriptor, Ident>,
}

const MASK: AddWatchFlags = AddWatchFlags::IN_DELETE
    .union(AddWatchFlags::IN_MOVED_FROM)
    .union(AddWatchFlags::IN_DELETE_SELF)
    .union(AddWatchFlags::IN_MOVE_SELF)
    .union(AddWatchFlags::IN_ONLYDIR);

/// A followed file: its holder closing it may be the lock coming free.
const FILE_MASK: AddWatchFlags = AddWatchFlags::IN_CLOSE_WRITE
    .union(AddWatchFlags::IN_CLOSE_NOWRITE)
    .union(AddWatchFlags::IN_DELETE_SELF);

impl Watcher {
    /// Stop watching without closing the inotify descriptor now. Closing an
    /// inotify instance that has watches waits for a kernel grace period
    /// (fsnotify_destroy_group: measured at 7 ms median, up to 24 ms), which
    /// would delay every handoff while we already hold the lock. Removing
    /// the watches is quick; the descriptor (close-on-exec) is closed when
    /// the process exits, after the lock is released.
    pub(super) fn retire(self) {
        if let Some(inotify) = self.inotify {
            for wd in self.dirs.keys().chain(self.files.keys()) {
                let _ = inotify.rm_watch(*wd);
            }
            std::mem::forget(inotify);
        }
    }

    pub(super) fn new(targets: &[Target]) -> Watcher {
        // No instance left (fs.inotify.max_user_instances) or no inotify at
        // all: poll instead.
        let inotify = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC).ok();
        let mut watcher = Watcher {
            inotify,
            dirs: HashMap::new(),
            files: HashMap::new(),
        };
        for target in targets {
            watcher.watch(parent_of(&target.path));
        }
        watcher
    }

    /// Watch a directory; where that is not possible (gone, watch limit),
    /// the poll covers it.
    pub(super) fn watch(&mut self, dir: &Path) {
        let Some(inotify) = &self.inotify else { return };
        if self.dirs.values().any(|d| d == dir) {
            return;
        }
        if let Ok(wd) = inotify.add_watch(dir, MASK) {
            self.dirs.insert(wd, dir.to_owned());
        }
    }

    /// Watch a followed file through its descriptor (it may be unlinked).
    pub(super) fn watch_file(&mut self, followed: &Followed) {
        let Some(inotify) = &self.inotify else { return };
        if self.files.values().any(|ident| *ident == followed.ident) {
            return;
        }
        let fd_path = format!("/proc/self/fd/{}", followed.file.as_raw_fd());
        if let Ok(wd) = inotify.add_watch(fd_path.as_str(), FILE_MASK) {
            self.files.insert(wd, followed.ident);
        }
    }

    pub(super) fn watches_all_files(&self, followed: &[Followed]) -> bool {
        followed
            .iter()
            .all(|f| self.files.values().any(|ident| *ident == f.ident))
    }

    /// Sleep until a lock may have been freed, `timeout` passes, or an
    /// aborting signal arrives (returned); `hangup` becoming readable
    /// counts as SIGHUP.
    pub(super) fn wait(
        &mut self,
        targets: &[Target],
        timeout: Duration,
        signals: &mut SignalWatch,
        hangup: Option<BorrowedFd<'_>>,
    ) -> Result<Option<i32>> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let mut fds = vec![PollFd::new(signals.fd(), PollFlags::POLLIN)];
            if let Some(inotify) = &self.inotify {
                fds.push(PollFd::new(inotify.as_fd(), PollFlags::POLLIN));
            }
            if let Some(hangup) = hangup {
                fds.push(PollFd::new(hangup, PollFlags::POLLIN));
            }
            let ms = PollTimeout::try_from(left).unwrap_or(PollTimeout::MAX);
            match poll(&mut fds, ms) {
                Ok(0) => return Ok(None),
                Ok(_) => {}
                Err(nix::errno::Errno::EINTR) => {}
                Err(err) => {
                    return Err(anyhow::Error::new(std::io::Error::from(err)).context("poll"));
                }
            }
            let signal_ready = fds[0].any().unwrap_or(false);
            let inotify_ready = self.inotify.is_some() && fds[1].any().unwrap_or(false);
            let hung_up = hangup.is_some() && fds.last().and_then(PollFd::any).unwrap_or(false);
            drop(fds);
            if hung_up {
                return Ok(Some(libc::SIGHUP));
            }
            if signal_ready {
                for received in signals.pending() {
                    if ABORT_WAIT.contains(&received.signal) {
                        return Ok(Some(received.signal));
                    }
                    crate::signals::stop_self_if_terminal_stop(received);
                }
            }
            if inotify_ready && self.relevant(targets) {
                return Ok(None);
            }
            if left.is_zero() {
                return Ok(None);
            }
        }
    }

    /// Drain the events; true when one concerns a lock we wait for, a file
    /// we follow, or a watched directory (which then needs watching again).
    pub(super) fn relevant(&mut self, targets: &[Target]) -> bool {
        let Some(inotify) = &self.inotify else {
            return false;
        };
        let names: Vec<(&Path, OsString)> = targets
            .iter()
            .filter_map(|t| Some((parent_of(&t.path), lock_name(&t.path).ok()?.to_owned())))
            .collect();
        let mut relevant = false;
        let mut lost = Vec::new();
        while let Ok(events) = inotify.read_events() {
            if events.is_empty() {
                break;
            }
            for event in events {
                if let Some(ident) = self.files.get(&event.wd).copied() {
                    relevant = true;
                    if event.mask.contains(AddWatchFlags::IN_IGNORED) {
                        self.files.retain(|_, i| *i != ident);
                    }
                    continue;
                }
                let Some(event_dir) = self.dirs.get(&event.wd).cloned() else {
                    continue;
                };
                if event.mask.intersects(
                    AddWatchFlags::IN_IGNORED
                        | AddWatchFlags::IN_DELETE_SELF
                        | AddWatchFlags::IN_MOVE_SELF,
                ) {
                    self.dirs.remove(&event.wd);
                    lost.push(event_dir);
                    relevant = true;
                } else if let Some(name) = &event.name
                    && names.iter().any(|(d, n)| *d == event_dir && n == name)
                {
                    relevant = true;
                }
            }
        }
        for dir in lost {
            self.watch(&dir);
        }
        relevant
    }
}
