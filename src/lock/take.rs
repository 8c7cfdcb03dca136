//! Taking the lock at one or several paths, once: create it, join a live
//! shared lock, or take over a stale one (SPEC sections 2 and 6); all or
//! nothing over several paths. Waiting is `wait`'s.
//!
//! `acquire`'s fast path is a try of this kind too (files prepared before
//! its keeper is forked, linked after), so the take path reads one way:
//! `keeper` tries here once, else waits through `wait`, which tries here
//! until it takes the lock; only this file makes lock files (`create`).

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::Path;

use anyhow::Result;

use super::create::{self, Created};
use super::dir::{Ident, LockDir, Released, Target, lock_name, names, names_in, unlink_if_same};
use super::error::{create_error, inspect_error};
use super::event::{Event, Notify, ignore};
use super::held::Held;
use super::inspect::Inspection;
use super::probe::{self, Exclusive, Found};
use super::record::Record;
use super::shared;
use super::window::{self, Join, Rule};
use crate::exit::{Exit, fail};

/// Release every lock (in reverse order of taking them), telling what was
/// found at each path; the first error is returned after trying them all.
pub(crate) fn release_all(held: Vec<Held>, notify: Notify) -> Result<()> {
    let mut first_error = None;
    for lock in held.into_iter().rev() {
        let path = lock.path.clone();
        match lock.release() {
            Ok(how) => notify(Event::Released { path: &path, how }),
            Err(err) => {
                first_error.get_or_insert(
                    anyhow::Error::new(err)
                        .context(format!("cannot remove lock {}", path.display())),
                );
            }
        }
    }
    first_error.map_or(Ok(()), Err)
}

/// `acquire`'s fast path (see `keeper`), first half: a flocked O_TMPFILE
/// per path, made before the keeper is forked so that it holds them from
/// birth; None where this way is not open.
pub(crate) fn prepare_all(targets: &[Target], shared: bool) -> Option<Vec<(LockDir, File)>> {
    targets
        .iter()
        .map(|target| {
            let dir = LockDir::open(target).ok()?;
            let file = create::prepare_tmpfile(&dir, shared).ok()?;
            Some((dir, file))
        })
        .collect()
}

/// The fast path's second half, one try at every path: link every
/// prepared file, in order, with the record naming the keeper; None (and
/// nothing left linked) if any path is taken or anything fails: the slow
/// path (`wait`) takes over.
pub(crate) fn link_all(
    targets: &[Target],
    files: Vec<(LockDir, File)>,
    record: &Record,
    shared: bool,
) -> Option<Vec<Held>> {
    let mut held: Vec<Held> = Vec::with_capacity(files.len());
    for (target, (dir, file)) in targets.iter().zip(files) {
        // The same file twice (the same directory reached twice): its
        // second link finds the first (EEXIST), and the slow path takes it
        // once. The keeper inherited the file under the same descriptor
        // number.
        let content = Record {
            fd: Some(file.as_raw_fd()),
            ..record.clone()
        }
        .to_line();
        match create::link_prepared(dir, &target.path, file, content.as_bytes(), shared) {
            Ok(Created::Taken(lock)) => held.push(lock),
            Ok(Created::Exists(_)) | Err(_) => {
                let _ = release_all(held, &ignore);
                return None;
            }
        }
    }
    Some(held)
}

/// One attempt at one path.
pub(crate) enum Attempt {
    Taken(Held),
    /// Busy: who holds it, and for a resin-lock lock the open file (kept by
    /// a waiter to follow that holder, SPEC 2a).
    Busy(Box<Inspection>, Option<(File, Ident)>),
    /// Something was at the path when we tried to create the lock, and is
    /// gone when we looked at it: the waiter decides whether it may create
    /// now or must let the directory settle first (SPEC 2a).
    Vanished,
}

/// Try to take `target` once: create it, or take over a stale resin-lock
/// lock there and create it afresh. Busy when anyone else holds it;
/// vanished when what was there went away under the attempt. With `look`
/// (a foreign lock is there, SPEC 2a) it does not try to create until it
/// has seen what is there: a foreign lock vanishing in that moment must
/// not let it create without the directory settling first.
pub(crate) fn try_take(
    target: &Target,
    content: &[u8],
    shared: bool,
    mut look: bool,
    notify: Notify,
) -> Result<Attempt> {
    let path = &target.path;
    let name = lock_name(path).map_err(|err| create_error(path, err))?;
    // Each round either takes the lock, reports it busy or vanished, or
    // removed a stale resin-lock lock or lost a shared one to its last
    // holder (someone else's progress or ours: nothing foreign, so no
    // settling); bounded against a livelock.
    for _ in 0..64 {
        let dir = LockDir::open(target).map_err(|err| create_error(path, err))?;
        let dir = if look {
            dir
        } else {
            match create::create(dir, path, content, shared) {
                Ok(Created::Taken(held)) => return Ok(Attempt::Taken(held)),
                Ok(Created::Exists(dir)) => dir,
                Err(err) => return Err(create_error(path, err)),
            }
        };
        let found = probe::examine(&dir, name).map_err(|err| inspect_error(path, err))?;
        if let Found::Missing = found {
            return Ok(Attempt::Vanished);
        }
        // A window's file excludes none of the app's holders (`window`).
        let mut window_busy = false;
        if let Found::Ours {
            file,
            ident,
            record,
            ..
        } = &found
            && window::rule(record, content) == Rule::Join
        {
            match window::join(&dir, name, (file, *ident), content, shared)
                .map_err(|err| create_error(path, err))?
            {
                Join::Joined(file) => {
                    shared::append_line(&dir, name, *ident, content);
                    let held =
                        Held::new(path, dir, file, true).map_err(|err| create_error(path, err))?;
                    return Ok(Attempt::Taken(held));
                }
                Join::Stale => {
                    remove_stale(&dir, path, *ident, record, notify)?;
                    continue;
                }
                Join::Moved => continue,
                Join::Busy => window_busy = true,
            }
        }
        if let Found::Ours {
            file,
            ident,
            record,
            ..
        } = &found
            && !window_busy
        {
            // A resin-lock lock: its flock tells when it is free.
            look = false;
            // A shared taker joins a live shared lock of this boot, unless
            // an exclusive taker waits for it: then it queues behind.
            let joining = shared
                && window::rule(record, content) == Rule::Ordinary
                && record.shared
                && probe::stale_reason(record, true).is_none()
                && !shared::writer_waits(file);
            let exclusive = if joining {
                shared::try_join(file)
            } else {
                probe::try_exclusive(file)
            }
            .map_err(|err| {
                anyhow::Error::new(err).context(format!("cannot lock {}", path.display()))
            })?;
            if joining && exclusive == Exclusive::Shared {
                // We hold LOCK_SH. The last one out may have removed the
                // file meanwhile: only the one the path names counts.
                let ident = *ident;
                if !names_in(&dir, name, ident) {
                    continue;
                }
                let Found::Ours { file, .. } = found else {
                    unreachable!()
                };
                shared::append_line(&dir, name, ident, content);
                let held =
                    Held::new(path, dir, file, true).map_err(|err| create_error(path, err))?;
                return Ok(Attempt::Taken(held));
            }
            if exclusive == Exclusive::Taken {
                remove_stale(&dir, path, *ident, record, notify)?;
                continue;
            }
        }
        let inspection = Box::new(Inspection::from_found(path, &found, true));
        let followed = match found {
            Found::Ours { file, ident, .. } => Some((file, ident)),
            _ => None,
        };
        return Ok(Attempt::Busy(inspection, followed));
    }
    Err(fail(
        Exit::OsErr,
        format!(
            "{}: the lock file keeps changing; giving up",
            path.display()
        ),
    ))
}

/// Why `try_take_all` took nothing.
pub(crate) enum NotTaken {
    Busy(Busy),
    /// What was at target `index` vanished under the attempt.
    Vanished(usize),
}

/// Who holds the first busy target: its index, the report, and (for a
/// resin-lock lock) its open file and identity.
pub(crate) struct Busy {
    pub(crate) index: usize,
    pub(crate) holder: Box<Inspection>,
    pub(crate) followed: Option<(File, Ident)>,
}

/// Nobody holds the lock at `path`: stale. We hold its flock now, so no
/// other contender can take it over at the same time: remove it, if the
/// path still names it.
fn remove_stale(
    dir: &LockDir,
    path: &Path,
    ident: Ident,
    record: &Record,
    notify: Notify,
) -> Result<()> {
    let name = lock_name(path).map_err(|err| create_error(path, err))?;
    let reason = probe::stale_reason(record, false).unwrap_or("holder exited");
    if unlink_if_same(dir, name, ident).map_err(|err| create_error(path, err))? == Released::Removed
    {
        notify(Event::TookOverStale {
            path,
            reason,
            record,
        });
    }
    Ok(())
}

/// Take every target in order, all or nothing: when one is busy (or what
/// was there vanished under the attempt), release those already taken and
/// report which one. Two targets that name the same file are one lock,
/// taken once. `look[i]`: see what is at target `i` before creating it.
pub(crate) fn try_take_all(
    targets: &[Target],
    content: &[u8],
    shared: bool,
    look: &[bool],
    notify: Notify,
) -> Result<std::result::Result<Vec<Held>, NotTaken>> {
    let mut held: Vec<Held> = Vec::with_capacity(targets.len());
    for (index, target) in targets.iter().enumerate() {
        if same_file_taken(&held, target) {
            continue;
        }
        match try_take(target, content, shared, look[index], notify) {
            Ok(Attempt::Taken(lock)) => held.push(lock),
            Ok(Attempt::Busy(holder, followed)) => {
                release_all(held, notify)?;
                return Ok(Err(NotTaken::Busy(Busy {
                    index,
                    holder,
                    followed,
                })));
            }
            Ok(Attempt::Vanished) => {
                release_all(held, notify)?;
                return Ok(Err(NotTaken::Vanished(index)));
            }
            Err(err) => {
                release_all(held, notify)?;
                return Err(err);
            }
        }
    }
    Ok(Ok(held))
}

/// Whether `target` names a lock file already in `held` (the same
/// directory reached twice, e.g. through a symlink or a bind mount).
fn same_file_taken(held: &[Held], target: &Target) -> bool {
    held.iter().any(|lock| {
        lock_name(&lock.path).ok() == lock_name(&target.path).ok() && names(target, lock.ident)
    })
}
