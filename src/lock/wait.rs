//! Waiting for a busy lock: inotify on the lock's directory wakes us the
//! moment the file is removed, a slow poll catches what inotify cannot see
//! (a holder that died and left a stale lock), and a signal ends the wait
//! with nothing held.

use std::collections::HashMap;
use std::ffi::OsString;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify, WatchDescriptor};

use super::create::parent_of;
use super::{Held, Target, try_take_all};
use crate::exit::{Exit, fail, fail_with, signal_code};
use crate::signals::{ABORT_WAIT, SignalWatch};
use crate::ui::Ui;

/// The safety-net poll interval.
const POLL: Duration = Duration::from_secs(1);

/// How long and how to wait (from `-n`, `-w`, `-E`).
#[derive(Debug, Clone, Copy)]
pub struct WaitOpts {
    pub nonblock: bool,
    pub timeout: Option<Duration>,
    /// Exit status when busy or timed out (1, or `-E CODE`).
    pub busy_code: u8,
}

impl WaitOpts {
    pub fn from_args(args: &crate::cli::WaitArgs) -> WaitOpts {
        WaitOpts {
            nonblock: args.nonblock,
            timeout: args.timeout,
            busy_code: args.conflict_exit_code.unwrap_or(Exit::Busy.code()),
        }
    }
}

/// Take all `targets`, waiting as `opts` says. A signal from `ABORT_WAIT`
/// ends the wait with exit 128+S.
pub fn take_all(
    targets: &[Target],
    content: &[u8],
    opts: WaitOpts,
    signals: &mut SignalWatch,
    ui: &Ui,
) -> Result<Vec<Held>> {
    // A timeout past what an Instant can hold (`-w 18446744073709551615`) is no deadline.
    let deadline = opts.timeout.and_then(|t| Instant::now().checked_add(t));
    let mut watcher: Option<Watcher> = None;
    let mut announced = false;
    loop {
        let (index, holder) = match try_take_all(targets, content, ui)? {
            Ok(held) => {
                if let Some(watcher) = watcher {
                    watcher.retire();
                }
                return Ok(held);
            }
            Err(busy) => busy,
        };
        let path = &targets[index].path;
        let remaining = deadline.map(|d| d.saturating_duration_since(Instant::now()));
        if opts.nonblock || remaining == Some(Duration::ZERO) {
            let how = if opts.nonblock { "" } else { " (timed out)" };
            return Err(fail_with(
                opts.busy_code,
                format!("{} is held by {}{how}", path.display(), holder.holder()),
            ));
        }
        let Some(watcher) = watcher.as_mut() else {
            // Watch before the next attempt, so no removal is missed.
            watcher = Some(Watcher::new(targets)?);
            continue;
        };
        if !announced && ui.announce_waits() {
            eprintln!(
                "resin-lock: waiting for {}: held by {}",
                path.display(),
                holder.holder()
            );
            announced = true;
        }
        let timeout = remaining.map_or(POLL, |r| r.min(POLL));
        if let Some(signal) = watcher.wait(path, timeout, signals)? {
            ui.verbose(|| {
                format!(
                    "stopped waiting for {}: got signal {signal}",
                    path.display()
                )
            });
            return Err(fail_with(signal_code(signal), ""));
        }
    }
}

/// Inotify watches on the directories of the lock paths.
struct Watcher {
    inotify: Inotify,
    dirs: HashMap<WatchDescriptor, PathBuf>,
}

const MASK: AddWatchFlags = AddWatchFlags::IN_DELETE
    .union(AddWatchFlags::IN_MOVED_FROM)
    .union(AddWatchFlags::IN_DELETE_SELF)
    .union(AddWatchFlags::IN_MOVE_SELF)
    .union(AddWatchFlags::IN_ONLYDIR);

impl Watcher {
    /// Stop watching without closing the inotify descriptor now. Closing an
    /// inotify instance that has watches waits for a kernel grace period
    /// (fsnotify_destroy_group: measured at 7 ms median, up to 24 ms), which
    /// would delay every handoff while we already hold the lock. Removing
    /// the watches is quick; the descriptor (close-on-exec) is closed when
    /// the process exits, after the lock is released.
    fn retire(self) {
        for wd in self.dirs.keys() {
            let _ = self.inotify.rm_watch(*wd);
        }
        std::mem::forget(self.inotify);
    }

    fn new(targets: &[Target]) -> Result<Watcher> {
        let inotify = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC)
            .map_err(std::io::Error::from)
            .context("cannot set up inotify to wait for the lock")?;
        let mut watcher = Watcher {
            inotify,
            dirs: HashMap::new(),
        };
        for target in targets {
            watcher.watch(parent_of(&target.path))?;
        }
        Ok(watcher)
    }

    fn watch(&mut self, dir: &Path) -> Result<()> {
        if self.dirs.values().any(|d| d == dir) {
            return Ok(());
        }
        match self.inotify.add_watch(dir, MASK) {
            Ok(wd) => {
                self.dirs.insert(wd, dir.to_owned());
                Ok(())
            }
            // The directory is gone: the next attempt reports or recreates it.
            Err(nix::errno::Errno::ENOENT | nix::errno::Errno::ENOTDIR) => Ok(()),
            Err(nix::errno::Errno::ENOSPC) => Err(fail(
                Exit::OsErr,
                format!(
                    "cannot watch {}: inotify watch limit reached (fs.inotify.max_user_watches)",
                    dir.display()
                ),
            )),
            Err(err) => Err(anyhow::Error::new(std::io::Error::from(err))
                .context(format!("cannot watch {}", dir.display()))),
        }
    }

    /// Sleep until `path` may have been freed, `timeout` passes, or an
    /// aborting signal arrives (returned).
    fn wait(
        &mut self,
        path: &Path,
        timeout: Duration,
        signals: &mut SignalWatch,
    ) -> Result<Option<i32>> {
        let dir = parent_of(path);
        let name: OsString = path.file_name().unwrap_or_default().to_owned();
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let mut fds = [
                PollFd::new(self.inotify.as_fd(), PollFlags::POLLIN),
                PollFd::new(signals.fd(), PollFlags::POLLIN),
            ];
            let ms = PollTimeout::try_from(left).unwrap_or(PollTimeout::MAX);
            match poll(&mut fds, ms) {
                Ok(0) => return Ok(None),
                Ok(_) => {}
                Err(nix::errno::Errno::EINTR) => {}
                Err(err) => {
                    return Err(anyhow::Error::new(std::io::Error::from(err)).context("poll"));
                }
            }
            let signal_ready = fds[1].any().unwrap_or(false);
            let inotify_ready = fds[0].any().unwrap_or(false);
            if signal_ready {
                for received in signals.pending() {
                    if ABORT_WAIT.contains(&received.signal) {
                        return Ok(Some(received.signal));
                    }
                    crate::supervise::stop_self_if_terminal_stop(received);
                }
            }
            if inotify_ready && self.relevant(dir, &name)? {
                return Ok(None);
            }
            if left.is_zero() {
                return Ok(None);
            }
        }
    }

    /// Drain the events; true when one concerns the lock we wait for (or its
    /// directory, which then needs watching again).
    fn relevant(&mut self, dir: &Path, name: &OsString) -> Result<bool> {
        let mut relevant = false;
        loop {
            let events = match self.inotify.read_events() {
                Ok(events) => events,
                Err(nix::errno::Errno::EAGAIN) => break,
                Err(err) => {
                    return Err(anyhow::Error::new(std::io::Error::from(err))
                        .context("reading inotify events"));
                }
            };
            if events.is_empty() {
                break;
            }
            for event in events {
                let Some(event_dir) = self.dirs.get(&event.wd).cloned() else {
                    continue;
                };
                if event.mask.intersects(
                    AddWatchFlags::IN_IGNORED
                        | AddWatchFlags::IN_DELETE_SELF
                        | AddWatchFlags::IN_MOVE_SELF,
                ) {
                    self.dirs.remove(&event.wd);
                    relevant |= event_dir == dir;
                } else if event_dir == dir && event.name.as_ref() == Some(name) {
                    relevant = true;
                }
            }
        }
        if !self.dirs.values().any(|d| d == dir) {
            self.watch(dir)?;
        }
        Ok(relevant)
    }
}
