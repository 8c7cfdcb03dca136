//! What `hold` does once it holds the lock: keep it until its caller is
//! gone (`caller`) or a signal ends it, and meanwhile notice a lock file
//! removed or replaced under us (`lost`, as `run --on-lost` does) and let
//! go at `--max-hold`. The command says what happened; this loop only
//! reports it.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

use super::caller::CallerWatch;
use super::lost::LostWatch;
use crate::lock::{Held, Notify, Released, release_all};
use crate::signals::{ABORT_WAIT, SignalWatch};

/// What happened while we held the lock.
#[derive(Debug)]
pub(crate) enum Happened<'a> {
    /// The file at `path` was removed (`Gone`) or replaced (`Replaced`)
    /// by someone else; we go on until the caller is gone.
    Lost { path: &'a Path, how: Released },
    /// `--max-hold` passed: the locks were released (`notify` heard how).
    Expired,
}

/// Why the hold ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ended {
    /// Stdin reached its end, the parent changed, or nobody reads our
    /// stdout any more.
    CallerGone,
    /// A signal from `ABORT_WAIT` (HUP INT QUIT TERM USR1 USR2 ALRM).
    Signal(i32),
}

/// Hold `held` until the caller is gone or a signal ends it. `tell` says
/// what happened meanwhile and returns false when nobody reads what it
/// says (the caller is gone too). Returns why it ended, and the locks if
/// they are still held (not after `--max-hold`), for the caller to release.
pub(crate) fn hold(
    held: Vec<Held>,
    max_hold: Option<Duration>,
    caller: &CallerWatch,
    signals: &mut SignalWatch,
    notify: Notify,
    tell: &dyn Fn(Happened<'_>) -> bool,
) -> (Ended, Option<Vec<Held>>) {
    // Counted from the lock's taking; one past what a clock can count is never.
    let deadline = max_hold.and_then(|d| Instant::now().checked_add(d));
    let mut watch = Some(LostWatch::new(&held));
    let mut held = Some(held);
    // Paths already said lost: each is said once.
    let mut told: Vec<PathBuf> = Vec::new();
    let ended = loop {
        if let (Some(w), Some(locks)) = (&mut watch, &held) {
            let mut gone = false;
            for (lock, how) in w.lost(locks) {
                if told.contains(&lock.path) {
                    continue;
                }
                told.push(lock.path.clone());
                gone |= !tell(Happened::Lost {
                    path: &lock.path,
                    how,
                });
            }
            if gone {
                break Ended::CallerGone;
            }
        }
        let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
        if left.is_some_and(|left| left.is_zero())
            && let Some(locks) = held.take()
        {
            // Our own removal is not news.
            if let Some(w) = watch.take() {
                w.retire();
            }
            if let Err(err) = release_all(locks, notify) {
                crate::ui::say(&crate::exit::message(&err));
            }
            if !tell(Happened::Expired) {
                break Ended::CallerGone;
            }
        }
        let left = left.filter(|_| held.is_some());
        let poll_every = watch.as_ref().and_then(LostWatch::poll_every);
        let timeout = match [left, poll_every].into_iter().flatten().min() {
            // Rounded up: a poll that wakes a little early only loops.
            Some(left) => PollTimeout::try_from(left.saturating_add(Duration::from_millis(1)))
                .unwrap_or(PollTimeout::MAX),
            None => PollTimeout::NONE,
        };
        let mut fds = vec![
            PollFd::new(signals.fd(), PollFlags::POLLIN),
            PollFd::new(caller.fd(), PollFlags::POLLIN),
        ];
        if let Some(fd) = watch.as_ref().and_then(LostWatch::fd) {
            fds.push(PollFd::new(fd, PollFlags::POLLIN));
        }
        // An error (out of memory for the poll table) must not end the
        // hold: try again shortly.
        if let Err(err) = poll(&mut fds, timeout)
            && err != Errno::EINTR
        {
            std::thread::sleep(Duration::from_millis(100));
        }
        drop(fds);
        let mut signalled = None;
        for received in signals.pending() {
            if ABORT_WAIT.contains(&received.signal) {
                signalled.get_or_insert(received.signal);
            }
            crate::signals::stop_self_if_terminal_stop(received);
        }
        if let Some(signal) = signalled {
            break Ended::Signal(signal);
        }
        if caller.is_gone() {
            // A removal not said yet is said by the release that follows.
            break Ended::CallerGone;
        }
    };
    if let Some(w) = watch {
        w.retire();
    }
    (ended, held)
}
