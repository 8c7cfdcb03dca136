//! Shared locks (`-s`): joining a lock file that shared holders keep, each
//! holder's record line appended to it, and who of those listed still
//! holds it. The first taker creates the file as an exclusive one does
//! (`create`); the last one out removes it (`Held::release`).

use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::{FileExt, MetadataExt};

use nix::fcntl::OFlag;
use serde::Serialize;

use super::dir::LockDir;
use super::inspect::{Exclusive, Ident, try_flock, with_backoff};
use super::record::{MAX_LEN, Record};

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
