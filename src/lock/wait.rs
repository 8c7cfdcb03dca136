//! Waiting for a busy lock: inotify on the lock's directory wakes us the
//! moment the file is removed, a slow poll catches what inotify cannot see
//! (a holder that died and left a stale lock), and a signal ends the wait
//! with nothing held. Without inotify (no instance left) it polls.
//!
//! A waiter keeps open every resin-lock lock file it saw held. When such a
//! file is removed while its holder still has it flocked (the supervisor's
//! forced update, `release --force`), the waiter goes on waiting until that
//! holder lets go, and only then creates a lock (SPEC 2a): the supervisor's
//! own `lockfile` wins that race, and two resin-lock holders never overlap.
//!
//! A lock that is not resin-lock's has no flock to follow: when one the
//! waiter saw vanishes, its removal may be the first half of a forced update
//! whose `lockfile -r 0` follows a few milliseconds later. The waiter lets
//! the directory settle (`SETTLE` with nothing at the path, checked again
//! after the wait) before it creates its lock.

use std::os::fd::BorrowedFd;
use std::time::{Duration, Instant};

use anyhow::Result;

use super::dir::LockDir;
use super::dir::Target;
use super::error::create_error;
use super::event::{Event, Notify, ignore};
use super::held::{Held, being_released};
use super::inspect::{Inspection, State};
use super::owner::ProcId;
use super::probe::flock_held;
use super::record::{Mode, Record};
use super::shared::mark_writer_waits;
use super::take::{Busy, release_all, try_take_all};
use crate::exit::{fail_with, signal_code};
use crate::signals::SignalWatch;

mod watcher;
use watcher::{Followed, Watcher};

/// The safety-net poll interval.
const POLL: Duration = Duration::from_secs(1);
/// The poll interval where inotify cannot tell us (no instance left, or an
/// unlinked file that cannot be watched).
const FAST_POLL: Duration = Duration::from_millis(20);
/// How long the path must stay free after a foreign lock vanished before
/// we create ours (SPEC 2a): the supervisor's shell starts `lockfile -r 0`
/// a few milliseconds after its force removed the file.
const SETTLE: Duration = Duration::from_millis(250);

/// How long and how to wait (from `-n`, `-w`, `-E`).
#[derive(Debug, Clone, Copy)]
pub struct WaitOpts {
    pub nonblock: bool,
    pub timeout: Option<Duration>,
    /// Exit status when busy or timed out (1, or `-E CODE`).
    pub busy_code: u8,
    /// The owner an `acquire` takes the lock for: an `acquire` lock of that
    /// same owner is never waited for (it would wait for itself).
    pub owner: Option<ProcId>,
    /// `-s`: join shared holders; wait only for an exclusive or foreign one.
    pub shared: bool,
}

/// Why we cannot take the lock now.
enum Blocked {
    Busy(Busy),
    /// A lock file we saw held was removed, and its holder holds it still.
    /// `releasing`: by that holder itself, which lets go in a moment (no
    /// forced update: nothing to say).
    Displaced {
        index: usize,
        /// Boxed: a record is most of the size of this enum.
        record: Box<Record>,
        releasing: bool,
    },
    /// A foreign lock at this path vanished: the path must stay free until
    /// `until` before we create a lock there.
    Settling {
        index: usize,
        until: Instant,
    },
}

/// Per path: whether the last lock seen there was foreign, and since when
/// the path has been free after it vanished.
#[derive(Debug, Clone, Copy, Default)]
struct Settle {
    foreign_seen: bool,
    free_since: Option<Instant>,
}

/// Take all `targets`, waiting as `opts` says. A signal from `ABORT_WAIT`
/// ends the wait with exit 128+S.
pub fn take_all(
    targets: &[Target],
    content: &[u8],
    opts: WaitOpts,
    signals: &mut SignalWatch,
    notify: Notify,
) -> Result<Vec<Held>> {
    take_all_until(targets, content, opts, signals, None, notify)
}

/// `take_all`, for a caller that may go away while we wait (`hold`'s
/// program): `hangup` becoming readable ends the wait as SIGHUP does
/// (exit 129, nothing held).
pub fn take_all_until(
    targets: &[Target],
    content: &[u8],
    opts: WaitOpts,
    signals: &mut SignalWatch,
    hangup: Option<BorrowedFd<'_>>,
    notify: Notify,
) -> Result<Vec<Held>> {
    // A timeout past what an Instant can hold (`-w 18446744073709551615`) is no deadline.
    let deadline = opts.timeout.and_then(|t| Instant::now().checked_add(t));
    let mut watcher: Option<Watcher> = None;
    let mut said = Said::default();
    let mut followed: Vec<Followed> = Vec::new();
    let mut settles = vec![Settle::default(); targets.len()];
    loop {
        let blocked = match attempt(targets, content, opts, &mut followed, &mut settles, notify)? {
            Ok(held) => {
                if let Some(watcher) = watcher {
                    watcher.retire();
                }
                return Ok(held);
            }
            Err(blocked) => blocked,
        };
        let remaining = deadline.map(|d| d.saturating_duration_since(Instant::now()));
        if opts.nonblock || remaining == Some(Duration::ZERO) {
            return Err(busy_error(targets, &blocked, opts));
        }
        if !opts.shared {
            // We wait: shared takers queue behind us from now on.
            for f in followed.iter().filter(|f| f.record.shared) {
                mark_writer_waits(&f.file);
            }
        }
        let Some(watcher) = watcher.as_mut() else {
            // Watch before the next attempt, so no removal is missed.
            watcher = Some(Watcher::new(targets));
            continue;
        };
        let displaced = matches!(blocked, Blocked::Displaced { .. });
        if displaced {
            // Only files no longer at their path: our own attempts open
            // and close the ones in place, which would wake us at once.
            for f in followed.iter().filter(|f| !f.in_place(&targets[f.index])) {
                watcher.watch_file(f);
            }
        }
        said.announce(targets, &blocked, notify);
        let timeout =
            if watcher.inotify.is_none() || (displaced && !watcher.watches_all_files(&followed)) {
                FAST_POLL
            } else {
                POLL
            };
        let timeout = match blocked {
            // Nothing to be woken by: the path must stay free until then.
            Blocked::Settling { until, .. } => until.saturating_duration_since(Instant::now()),
            _ => timeout,
        };
        let timeout = remaining.map_or(timeout, |r| r.min(timeout));
        if let Some(signal) = watcher.wait(targets, timeout, signals, hangup)? {
            // Silent: the caller was asked to stop, and did.
            return Err(fail_with(signal_code(signal), ""));
        }
    }
}

/// One attempt: the locks, or why not. A holder we followed whose file was
/// removed while it still holds it blocks the attempt before any create.
fn attempt(
    targets: &[Target],
    content: &[u8],
    opts: WaitOpts,
    followed: &mut Vec<Followed>,
    settles: &mut [Settle],
    notify: Notify,
) -> Result<std::result::Result<Vec<Held>, Blocked>> {
    // Holders that let go are not followed any more.
    followed.retain(|f| flock_held(&f.file, f.record.shared).unwrap_or(false));
    if let Some(f) = followed.iter().find(|f| !f.in_place(&targets[f.index])) {
        let target = &targets[f.index];
        if !target.create_parent
            && let Err(err) = LockDir::open(target)
        {
            // The lock could not be created anyway (its `--path` directory
            // is gone): say so now rather than after the holder is done.
            return Err(create_error(&target.path, err));
        }
        return Ok(Err(Blocked::Displaced {
            index: f.index,
            record: Box::new(f.record.clone()),
            releasing: being_released(&f.file),
        }));
    }
    if let Some(settling) = settling(targets, settles) {
        return Ok(Err(settling));
    }
    if opts.shared {
        refuse_own_shared_lock(targets, opts)?;
    }
    let mut busy = match try_take_all(targets, content, opts.shared, notify)? {
        Ok(held) => {
            // A holder we follow may have been displaced between the check
            // above and our create (the forced update's unlink came just
            // then): it still runs, so back off at once.
            if let Some(f) = followed.iter().find(|f| {
                !f.in_place(&targets[f.index])
                    && flock_held(&f.file, f.record.shared).unwrap_or(false)
            }) {
                release_all(held, &ignore)?;
                return Ok(Err(Blocked::Displaced {
                    index: f.index,
                    record: Box::new(f.record.clone()),
                    releasing: being_released(&f.file),
                }));
            }
            return Ok(Ok(held));
        }
        Err(busy) => busy,
    };
    refuse_own_lock(targets, &busy, opts)?;
    // Only a foreign lock's removal needs the directory to settle; a
    // resin-lock holder's flock says when it is done.
    settles[busy.index] = Settle {
        foreign_seen: busy.followed.is_none(),
        free_since: None,
    };
    if let (Some((file, ident)), Some(record)) = (busy.followed.take(), busy.holder.parsed.clone())
        && !followed.iter().any(|f| f.ident == ident)
    {
        followed.push(Followed {
            index: busy.index,
            file,
            ident,
            record,
        });
    }
    Ok(Err(Blocked::Busy(busy)))
}

/// A path where a foreign lock vanished and that has not been free for
/// `SETTLE` yet (SPEC 2a), checked now, after any wait: blocked until then.
/// A path that is taken again is left to the attempt, which sees who took it.
fn settling(targets: &[Target], settles: &mut [Settle]) -> Option<Blocked> {
    for (index, settle) in settles.iter_mut().enumerate() {
        if !settle.foreign_seen {
            continue;
        }
        if !path_free(&targets[index]) {
            settle.free_since = None;
            continue;
        }
        let since = *settle.free_since.get_or_insert_with(Instant::now);
        let until = since + SETTLE;
        if Instant::now() < until {
            return Some(Blocked::Settling { index, until });
        }
    }
    None
}

/// Whether nothing is at `target`'s path (its directory gone counts as free).
fn path_free(target: &Target) -> bool {
    let Ok(name) = super::dir::lock_name(&target.path) else {
        return false;
    };
    match LockDir::open(&Target {
        create_parent: false,
        ..target.clone()
    }) {
        Ok(dir) => matches!(dir.stat(name), Ok(None)),
        Err(_) => true,
    }
}

impl Blocked {
    fn path<'a>(&self, targets: &'a [Target]) -> &'a std::path::Path {
        match self {
            Blocked::Busy(busy) => &targets[busy.index].path,
            Blocked::Displaced { index, .. } | Blocked::Settling { index, .. } => {
                &targets[*index].path
            }
        }
    }
}

/// `-n` busy, or `-w` timed out: who holds it.
fn busy_error(targets: &[Target], blocked: &Blocked, opts: WaitOpts) -> anyhow::Error {
    let how = if opts.nonblock { "" } else { " (timed out)" };
    let holder = match blocked {
        Blocked::Busy(busy) => busy.holder.holder(),
        Blocked::Displaced { record, .. } => format!(
            "{} (its file was removed, but it still runs)",
            Inspection::record_holder(record)
        ),
        Blocked::Settling { .. } => "another tool, which let go of it a moment ago \
             (waiting for the directory to settle, in case the supervisor takes it)"
            .to_owned(),
    };
    fail_with(
        opts.busy_code,
        format!(
            "{} is held by {holder}{how}",
            blocked.path(targets).display()
        ),
    )
}

/// Each kind of wait is said once: who holds the lock, and (SPEC 2a) that
/// its file was removed while its holder still runs.
#[derive(Default)]
struct Said {
    waiting: bool,
    displaced: bool,
}

impl Said {
    fn announce(&mut self, targets: &[Target], blocked: &Blocked, notify: Notify) {
        let path = blocked.path(targets);
        match blocked {
            Blocked::Busy(busy) if !self.waiting => {
                notify(Event::Waiting {
                    path,
                    holder: &busy.holder,
                });
                self.waiting = true;
            }
            Blocked::Displaced {
                record,
                releasing: false,
                ..
            } if !self.displaced => {
                notify(Event::WaitingForDisplaced { path, record });
                self.waiting = true;
                self.displaced = true;
            }
            _ => {}
        }
    }
}

/// An `acquire` whose owner already holds the lock fails at once instead of
/// waiting for itself (SPEC 2b).
fn refuse_own_lock(targets: &[Target], busy: &Busy, opts: WaitOpts) -> Result<()> {
    let Some(owner) = opts.owner else {
        return Ok(());
    };
    // A shared lock's holders are all listed; this owner's may be any one.
    let own = |r: &&Record| r.mode == Mode::Acquire && owner.is(r.owner, r.owner_start);
    let record = match busy.holder.holder_records.iter().find(own) {
        Some(record) => record,
        None => match busy.holder.parsed.as_ref().filter(own) {
            Some(record) => record,
            None => return Ok(()),
        },
    };
    if busy.holder.state != State::Held {
        return Ok(());
    }
    Err(fail_with(
        opts.busy_code,
        format!(
            "{} is already held by this owner (pid {}) through keeper pid {}; \
             run `resin-lock release` first",
            targets[busy.index].path.display(),
            record.owner,
            record.pid
        ),
    ))
}

/// A shared `acquire` joins a free shared lock without finding it busy: an
/// owner that already holds it (SPEC 2b) is refused here, before it joins
/// a second time.
fn refuse_own_shared_lock(targets: &[Target], opts: WaitOpts) -> Result<()> {
    if opts.owner.is_none() {
        return Ok(());
    }
    for (index, target) in targets.iter().enumerate() {
        if let Ok(holder) = super::inspect::inspect(target) {
            let busy = Busy {
                index,
                holder: Box::new(holder),
                followed: None,
            };
            refuse_own_lock(targets, &busy, opts)?;
        }
    }
    Ok(())
}
