//! What `release` decides for one lock path (SPEC 2b, 4): a lock taken by
//! `acquire` is released by its keeper, and only for its owner; a stale
//! resin-lock lock by anyone; a live `run` lock and any foreign lock only
//! with `--force`. Keepers are signalled only once proven to hold the lock
//! inode and to run as the caller's uid or root, through a pidfd opened
//! before the checks. The decision is returned; `cmd::release` says it.
//!
//! Read down the files: this one looks at what is at the path (`probe`)
//! and hands a held resin-lock lock to `exclusive` or `shared`, which sit
//! beside each other; both ask keepers to let go through `keepers`; keepers
//! whose file someone else removed are `displaced`'s; `outcome` is what
//! they all return.

mod displaced;
mod exclusive;
mod keepers;
mod outcome;
mod shared;

use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::path::Path;

use anyhow::{Context as _, Result};

use outcome::Seen;
pub use outcome::{Caller, Outcome, Refusal};

use crate::lock::dir::{Ident, LockDir, Target, lock_name, parent_of};
use crate::lock::error::lock_error;
use crate::lock::inspect::Inspection;
use crate::lock::probe::{self, Exclusive, Found, HeldBy, Kind, examine, stale_reason};
use crate::lock::record::Record;
use keepers::removed;

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
            let removed_dir = displaced::canonical_removed_dir(parent_of(path));
            return Ok(match removed_dir.map(|d| displaced::stop(&d, caller)) {
                Some(stopped) if stopped > 0 => Outcome::Replaced {
                    what: None,
                    keepers_stopped: stopped,
                },
                _ => Outcome::NothingThere,
            });
        }
        Err(err) => return Err(lock_error("release", path, err)),
    };
    let name = lock_name(path)?;
    let found = examine(&dir, name).with_context(|| format!("cannot read lock {shown}"))?;
    let outcome = match found {
        Found::Missing => match displaced::stop_in(&dir, caller) {
            0 => Outcome::NothingThere,
            stopped => Outcome::Replaced {
                what: None,
                keepers_stopped: stopped,
            },
        },
        // The supervisor's own lock: an update in progress. Never removed,
        // not even with --force (SPEC 4); our keepers whose file it
        // replaced are stopped, and without --force that is a release.
        Found::Foreign {
            held_by: HeldBy::Supervisor,
            what,
            ..
        } => {
            let stopped = displaced::stop_in(&dir, caller);
            if stopped > 0 && !caller.force {
                Outcome::Replaced {
                    what: Some(what),
                    keepers_stopped: stopped,
                }
            } else {
                Outcome::Refused(Refusal::Supervisor {
                    what,
                    keepers_stopped: stopped,
                })
            }
        }
        Found::Foreign {
            kind,
            what,
            uid,
            unreadable,
            ..
        } => {
            let stopped = displaced::stop_in(&dir, caller);
            // Root's file that this caller may not read may be helios' lock
            // (only root can see its tag): never removed by this caller.
            let maybe_supervisor = unreadable && uid == 0 && caller.euid != 0;
            if maybe_supervisor && (caller.force || stopped == 0) {
                Outcome::Refused(Refusal::MaybeSupervisor {
                    keepers_stopped: stopped,
                })
            } else if caller.force {
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
            uid,
            record,
            ..
        } => {
            let outcome = release_ours(&dir, name, path, (file, ident, uid), &record, caller)?;
            after_ours(&dir, &record, caller, outcome)
        }
    };
    Ok(outcome)
}

/// Someone else's resin-lock lock at the path (refused, or removed with
/// `--force`) may have taken the place of ours, removed under its keeper:
/// that keeper, proven ours, is stopped. Then a refusal is a release of
/// ours: the new lock is left alone (SPEC 4), as it is the supervisor's or
/// another tool's.
fn after_ours(dir: &LockDir, record: &Record, caller: &Caller, outcome: Outcome) -> Outcome {
    match outcome {
        Outcome::Refused(refusal) => match displaced::stop_in(dir, caller) {
            0 => Outcome::Refused(refusal),
            stopped => Outcome::Replaced {
                what: Some(Inspection::record_holder(record)),
                keepers_stopped: stopped,
            },
        },
        forced @ (Outcome::ForcedRun { .. } | Outcome::ForcedUnproven { .. }) => {
            displaced::stop_in(dir, caller);
            forced
        }
        other => other,
    }
}

/// A resin-lock lock: stale (nobody holds its flock) for anyone to remove,
/// else its holders' to give back, exclusive and shared alike.
fn release_ours(
    dir: &LockDir,
    name: &OsStr,
    path: &Path,
    (file, ident, uid): (File, Ident, u32),
    record: &Record,
    caller: &Caller,
) -> Result<Outcome> {
    let shown = path.display();
    let seen = Seen {
        dir,
        name,
        path,
        file: &file,
        ident,
    };
    let exclusive = probe::try_exclusive(&file).with_context(|| format!("cannot lock {shown}"))?;
    if exclusive == Exclusive::Taken {
        let reason = stale_reason(record, false).unwrap_or("holder exited");
        return removed(&seen, Outcome::RemovedStale { reason });
    }
    // Another user's live lock: its keeper is not ours to signal, nor (in
    // the sticky lock directory) its file ours to remove, --force or not.
    if uid != caller.euid && caller.euid != 0 {
        return Ok(Outcome::Refused(Refusal::OtherUser {
            uid,
            holder: Inspection::record_holder(record),
        }));
    }
    if record.shared {
        shared::release(&seen, caller)
    } else {
        exclusive::release(&seen, record, caller)
    }
}

/// `--force` on a foreign lock: remove it (a symlink itself, never its
/// target; a directory only if empty).
fn remove_foreign(dir: &LockDir, name: &OsStr, kind: Kind, path: &Path) -> Result<Option<Refusal>> {
    // What is there may have been swapped since it was looked at: a
    // directory for a file, or back, as often as another user likes; the
    // other call each time, a few times.
    let mut directory = kind == Kind::Directory;
    let mut result = Ok(());
    for _ in 0..8 {
        result = if directory {
            dir.rmdir(name)
        } else {
            dir.unlink(name)
        };
        match result.as_ref().err().and_then(io::Error::raw_os_error) {
            Some(libc::EISDIR) if !directory => directory = true,
            Some(libc::ENOTDIR) if directory => directory = false,
            _ => break,
        }
    }
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
