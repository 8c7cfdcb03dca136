//! Noticing that a lock file we hold was removed or replaced by someone
//! else (the supervisor forcing an update: unlink, then `lockfile -r 0`;
//! its override; `release --force`; helios renaming its own file over
//! ours): `run --on-lost` while CMD runs, and `hold` while its caller
//! lives. Inotify on each lock's directory wakes us at once; an event about
//! a lock's name then makes us ask whether each path still names our file.
//! Without inotify (no instance left) or a watch, we poll. The watches are
//! in place before CMD starts (before `hold` says it holds the lock).
//!
//! Only what happens while we hold the locks is watched: our own release
//! (when CMD ends, when `hold`'s caller goes, or at `--max-hold`) comes
//! after the watch is retired. With `-s`, another shared holder leaving
//! never removes the file while we hold it (the last one out does), so a
//! removal is someone else's.

use std::ffi::OsString;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::path::Path;
use std::time::Duration;

use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify, WatchDescriptor};
use nix::unistd::Pid;

use crate::lock::dir::lock_name;
use crate::lock::{Held, Released};

/// The signal `--on-lost` sends, by number: a real-time one (SIGRTMIN+n)
/// has no variant in nix's `Signal`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LostSignal(pub i32);

impl std::fmt::Display for LostSignal {
    /// `SIGTERM`, `SIGRTMIN+3`, `SIGRTMAX`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (min, max) = (libc::SIGRTMIN(), libc::SIGRTMAX());
        match nix::sys::signal::Signal::try_from(self.0) {
            Ok(signal) => write!(f, "{signal}"),
            Err(_) if self.0 == max => write!(f, "SIGRTMAX"),
            Err(_) if self.0 >= min => write!(f, "SIGRTMIN+{}", self.0 - min),
            Err(_) => write!(f, "signal {}", self.0),
        }
    }
}

/// A lock file removed under CMD, and the signal sent for it.
#[derive(Debug)]
pub struct Lost<'a> {
    pub path: &'a Path,
    pub signal: LostSignal,
    /// CMD's pid, or its process group's id with `-g`.
    pub pid: Pid,
    pub group: bool,
    /// Whether the signal could be sent.
    pub sent: nix::Result<()>,
}

/// Where `Lost` is reported (the command says it).
pub type OnLost<'a> = &'a dyn Fn(Lost<'_>);

/// How often the paths are checked where inotify cannot tell us.
pub(super) const POLL_EVERY: Duration = Duration::from_millis(50);

/// What in a lock's directory may mean our file is gone: it was removed
/// (IN_DELETE), renamed away (IN_MOVED_FROM), something was renamed over it
/// (IN_MOVED_TO) or created in its place (IN_CREATE, should a removal's
/// event be lost to a queue overflow), or the directory itself went.
const MASK: AddWatchFlags = AddWatchFlags::IN_DELETE
    .union(AddWatchFlags::IN_MOVED_FROM)
    .union(AddWatchFlags::IN_MOVED_TO)
    .union(AddWatchFlags::IN_CREATE)
    .union(AddWatchFlags::IN_DELETE_SELF)
    .union(AddWatchFlags::IN_MOVE_SELF)
    .union(AddWatchFlags::IN_ONLYDIR);

/// The watches on the directories of the locks held.
pub(crate) struct LostWatch {
    inotify: Option<Inotify>,
    watches: Vec<WatchDescriptor>,
    /// The lock files' names: events about other names are not ours.
    names: Vec<OsString>,
    /// Some directory is not watched: check every `POLL_EVERY`.
    polling: bool,
    /// Check at the next call whatever the events say (the first check
    /// covers a removal before the watches were in place).
    check: bool,
}

impl LostWatch {
    /// Watch the directory of each lock in `held`, through the directory
    /// descriptor the lock was taken in (its path may lead elsewhere
    /// under `--root`).
    pub(crate) fn new(held: &[Held]) -> LostWatch {
        let inotify = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC).ok();
        let mut watches = Vec::with_capacity(held.len());
        let mut polling = inotify.is_none();
        if let Some(inotify) = &inotify {
            for lock in held {
                let dir = format!("/proc/self/fd/{}", lock.dir_fd().as_raw_fd());
                match inotify.add_watch(dir.as_str(), MASK) {
                    Ok(wd) => watches.push(wd),
                    // No /proc, or the watch limit: the poll covers it.
                    Err(_) => polling = true,
                }
            }
        }
        let names = held
            .iter()
            .filter_map(|lock| lock_name(&lock.path).ok().map(ToOwned::to_owned))
            .collect();
        LostWatch {
            inotify,
            watches,
            names,
            polling,
            check: true,
        }
    }

    /// The descriptor to poll for events, if any.
    pub(crate) fn fd(&self) -> Option<BorrowedFd<'_>> {
        self.inotify.as_ref().map(AsFd::as_fd)
    }

    /// How long to sleep at most before the next check, when polling.
    pub(crate) fn poll_every(&self) -> Option<Duration> {
        self.polling.then_some(POLL_EVERY)
    }

    /// If the events since the last call (or polling) call for a look: the
    /// locks of `held` whose path no longer names them, and what is there
    /// instead (nothing, or another file).
    pub(crate) fn lost<'h>(&mut self, held: &'h [Held]) -> Vec<(&'h Held, Released)> {
        let check = std::mem::take(&mut self.check) | self.polling | self.drain();
        if !check {
            return Vec::new();
        }
        held.iter()
            .filter_map(|lock| lock.displaced().map(|how| (lock, how)))
            .collect()
    }

    /// Read every pending event; true when one may concern a lock file (a
    /// name of ours, the directory itself, or a queue overflow).
    fn drain(&mut self) -> bool {
        let Some(inotify) = &self.inotify else {
            return false;
        };
        let mut relevant = false;
        while let Ok(events) = inotify.read_events() {
            if events.is_empty() {
                break;
            }
            for event in events {
                relevant |= match &event.name {
                    Some(name) => self.names.contains(name),
                    None => true,
                };
            }
        }
        relevant
    }

    /// Stop watching. The descriptor is not closed now: closing an inotify
    /// instance waits for a kernel grace period (see `lock::wait`), which
    /// would delay releasing the lock; it goes when the process exits.
    pub(crate) fn retire(self) {
        if let Some(inotify) = self.inotify {
            for wd in self.watches {
                let _ = inotify.rm_watch(wd);
            }
            std::mem::forget(inotify);
        }
    }
}
