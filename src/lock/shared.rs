//! Shared locks (`-s`): joining a lock file that shared holders keep, each
//! holder's record line appended to it, and who of those listed still
//! holds it. The first taker creates the file as an exclusive one does
//! (`create`); the last one out removes it (`Held::release`).

use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use nix::fcntl::OFlag;
use nix::unistd::Pid;
use serde::Serialize;

use super::dir::LockDir;
use super::inspect::{Exclusive, Ident, Inspection, try_flock, with_backoff};
use super::record::{MAX_LEN, Mode, Record};
use super::release::{
    Caller, KEEPER_GRACE, Outcome, Refusal, after_let_go, prove_keeper, removed, signal_keeper,
};
use crate::procfs;

/// Take LOCK_SH on `file` to join a shared lock, unless nobody holds it
/// (`Taken`: we hold LOCK_EX, it is stale) or an exclusive holder does
/// (`Held`). `Shared`: we hold LOCK_SH now.
///
/// LOCK_EX held for a moment (a `status` probe, the last one out on its way
/// to removing the file) is waited out as `try_exclusive` does.
pub fn try_join(file: &File) -> io::Result<Exclusive> {
    with_backoff(Exclusive::Held, || {
        if try_flock(file.try_lock())? {
            Ok(Some(Exclusive::Taken))
        } else if try_flock(file.try_lock_shared())? {
            Ok(Some(Exclusive::Shared))
        } else {
            Ok(None)
        }
    })
}

/// Add a joiner's record to a shared lock file we hold: one O_APPEND write,
/// so the lines never mix. Best effort: a file of another user, or one
/// grown to `MAX_LEN`, keeps the lock without listing this holder.
pub fn append_line(dir: &LockDir, name: &OsStr, ident: Ident, line: &[u8]) {
    let Ok(mut file) = dir.open_file(
        name,
        OFlag::O_WRONLY | OFlag::O_APPEND | OFlag::O_NONBLOCK,
        0,
    ) else {
        return;
    };
    if file.metadata().is_ok_and(|m| {
        (m.dev(), m.ino()) == ident && m.is_file() && m.len() as usize + line.len() <= MAX_LEN
    }) {
        let _ = file.write_all(line);
    }
}

/// The records of every holder a shared lock file lists (the creator's
/// first), reading at most `MAX_LEN` bytes.
pub fn read_holders(file: &File) -> Vec<Record> {
    let mut bytes = vec![0; MAX_LEN];
    let mut len = 0;
    while len < bytes.len() {
        match file.read_at(&mut bytes[len..], len as u64) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    Record::holders(&bytes[..len])
}

/// Whether the holder a record names still holds the file `ident`: its
/// process has it open. A holder we cannot look at (another pid
/// namespace, no permission) counts as holding it.
pub fn holds(record: &Record, ident: Ident) -> bool {
    let ours = crate::procfs::pid_namespace().unwrap_or(0);
    if record.pid_ns != 0 && ours != 0 && record.pid_ns != ours {
        return true;
    }
    let pid = nix::unistd::Pid::from_raw(record.pid);
    match crate::procfs::process_holds_inode(pid, ident.0, ident.1, record.fd) {
        Ok(held) => held,
        Err(err) => err.kind() != io::ErrorKind::NotFound,
    }
}

/// One live holder, as `status --json` lists it.
#[derive(Debug, Clone, Serialize)]
pub struct Holder {
    pub pid: i32,
    pub owner: i32,
    pub mode: super::record::Mode,
    pub shared: bool,
    pub reason: Option<String>,
    pub since: String,
}

impl Holder {
    pub(super) fn of(record: &Record) -> Holder {
        Holder {
            pid: record.pid,
            owner: record.owner,
            mode: record.mode,
            shared: record.shared,
            reason: record.reason.clone(),
            since: record.start.clone(),
        }
    }
}

/// The live holders of a held resin-lock lock: its one record, or for a
/// shared lock every listed holder that still holds it.
pub(super) fn live_holders(
    file: &File,
    ident: Ident,
    record: &Record,
) -> (Vec<Holder>, Vec<Record>) {
    if !record.shared {
        return (vec![Holder::of(record)], vec![record.clone()]);
    }
    let live: Vec<Record> = read_holders(file)
        .into_iter()
        .filter(|h| holds(h, ident))
        .collect();
    (live.iter().map(Holder::of).collect(), live)
}

/// A shared lock: stop the caller's own keepers among its live holders;
/// the file goes with the last one out. Without one of its own, the
/// caller needs `--force`, which removes the file under all of them.
pub(super) fn release(
    dir: &LockDir,
    name: &OsStr,
    path: &Path,
    file: &File,
    ident: Ident,
    caller: &Caller,
) -> Result<Outcome> {
    let shown = path.display();
    let live: Vec<Record> = super::shared::read_holders(file)
        .into_iter()
        .filter(|h| super::shared::holds(h, ident))
        .collect();
    let own: Vec<&Record> = live
        .iter()
        .filter(|h| h.mode == Mode::Acquire && caller.owns(h))
        .collect();
    let Some(last) = own.last() else {
        return not_ours_shared(dir, name, path, ident, &live, caller);
    };
    for keeper in &own {
        let pid = Pid::from_raw(keeper.pid);
        let pidfd = match prove_keeper(pid, ident, keeper.fd, caller) {
            Ok(pidfd) => pidfd,
            Err(why) => {
                return Ok(Outcome::Refused(Refusal::Unproven {
                    keeper: keeper.pid,
                    why,
                }));
            }
        };
        signal_keeper(&pidfd, pid)
            .with_context(|| format!("cannot signal keeper pid {pid} of {shown}"))?;
    }
    wait_keepers_left(&own, ident, path)?;
    match dir.stat(name)? {
        // Still there: other holders keep it, or the last keeper could not
        // tell it was the last (then nobody holds it, and we remove it).
        Some(now) if (now.st_dev, now.st_ino) == ident => {
            if super::inspect::try_exclusive(file)? == Exclusive::Taken {
                removed(
                    dir,
                    name,
                    ident,
                    Outcome::KeeperLeftFile { keeper: last.pid },
                    path,
                )
            } else {
                Ok(Outcome::KeeperReleased {
                    keeper: last.pid,
                    taken_by: None,
                })
            }
        }
        _ => after_let_go(dir, name, path, ident, last.pid),
    }
}

/// A shared lock none of whose live holders is the caller's: removed with
/// `--force`, else refused, naming every holder.
fn not_ours_shared(
    dir: &LockDir,
    name: &OsStr,
    path: &Path,
    ident: Ident,
    live: &[Record],
    caller: &Caller,
) -> Result<Outcome> {
    let holder = live
        .iter()
        .map(Inspection::record_holder)
        .collect::<Vec<_>>()
        .join("; ");
    if caller.force {
        let what = format!("shared holders: {holder}");
        return removed(dir, name, ident, Outcome::ForcedForeign { what }, path);
    }
    if !live.is_empty() && live.iter().all(|h| h.mode == Mode::Run) {
        return Ok(Outcome::Refused(Refusal::LiveRun { holder }));
    }
    Ok(Outcome::Refused(Refusal::NotOwner { holder }))
}

/// Each signalled keeper leaves (removing the file if it is the last one
/// out), then exits: its descriptor on the file closing is the end of its
/// part. Bounded by `KEEPER_GRACE`.
fn wait_keepers_left(own: &[&Record], ident: Ident, path: &Path) -> Result<()> {
    let started = Instant::now();
    while let Some(keeper) = own.iter().find(|k| {
        procfs::process_holds_inode(Pid::from_raw(k.pid), ident.0, ident.1, k.fd).unwrap_or(false)
    }) {
        if started.elapsed() > KEEPER_GRACE {
            return Err(crate::exit::fail(
                crate::exit::Exit::OsErr,
                format!(
                    "keeper pid {} did not let go of {} within {}s",
                    keeper.pid,
                    path.display(),
                    KEEPER_GRACE.as_secs()
                ),
            ));
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    Ok(())
}
