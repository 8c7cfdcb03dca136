//! Joining a shared lock (`-s`): LOCK_SH on the file that shared holders
//! keep, and the joiner's record line appended to it. The first taker
//! creates the file as an exclusive one does (`create`); the last one out
//! removes it (`Held::release`).
//!
//! Writers are not starved: an exclusive taker that waits for shared holders
//! marks the shared file with an OFD read lock on one byte far past its end
//! (`mark_writer_waits`), and a shared taker that finds such a mark does not
//! join but waits (`writer_waits`). The kernel drops the mark when the
//! waiter closes the file, takes the lock, gives up or dies: nothing to
//! clean up, and flock (the host OS reboot check, the holders) never sees it.

use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::{FileExt, MetadataExt};

use nix::fcntl::OFlag;

use super::dir::{Ident, LockDir};
use super::list::{holds, read_list};
use super::probe::{Exclusive, try_flock, with_backoff};
use super::record::{MAX_LEN, Record};

/// The byte of a shared lock file that carries the writer mark: far past
/// any record, on every size of `off_t`.
const WRITER_MARK: libc::off_t = libc::off_t::MAX / 2;

/// Mark the shared lock `file` (open for reading) as waited for by an
/// exclusive taker. Best effort: without the mark, shared takers may keep
/// joining, as they did before.
pub fn mark_writer_waits(file: &File) {
    let range = crate::sys::ofd_range(libc::F_RDLCK, WRITER_MARK);
    let _ = nix::fcntl::fcntl(file, nix::fcntl::FcntlArg::F_OFD_SETLK(&range));
}

/// Whether an exclusive taker waits for the holders of the shared lock `file`.
pub fn writer_waits(file: &File) -> bool {
    let mut range = crate::sys::ofd_range(libc::F_WRLCK, WRITER_MARK);
    nix::fcntl::fcntl(file, nix::fcntl::FcntlArg::F_OFD_GETLK(&mut range)).is_ok()
        && range.l_type != libc::F_UNLCK as libc::c_short
}

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

/// The byte whose OFD write lock makes the writers of a shared lock file's
/// holder list (an append, a compaction) take turns; next to the writer
/// mark and the window's app byte, far past any record.
const LIST_BYTE: libc::off_t = libc::off_t::MAX / 2 + 2;

/// Add a joiner's record to a shared lock file we hold: one O_APPEND write,
/// so the lines never mix. A file that a window holds for days sees
/// thousands of sections come and go: when the line does not fit in
/// `MAX_LEN`, the lines of holders that have ended are dropped first
/// (`compact`). Best effort: a file of another user, or one still full of
/// live holders, keeps the lock without listing this holder.
pub fn append_line(dir: &LockDir, name: &OsStr, ident: Ident, line: &[u8]) {
    let open = |flags| dir.open_file(name, flags | OFlag::O_NONBLOCK, 0);
    let Ok(list) = open(OFlag::O_RDWR) else {
        return;
    };
    let ours = |file: &File| {
        file.metadata()
            .ok()
            .filter(|m| (m.dev(), m.ino()) == ident && m.is_file())
            .map(|m| m.len() as usize)
    };
    let Some(mut len) = ours(&list) else { return };
    // Writers take turns (never for long: an append or a rewrite); one that
    // cannot get its turn appends as before, without compacting.
    let turn = crate::sys::ofd_range(libc::F_WRLCK, LIST_BYTE);
    let has_turn = with_backoff(false, || {
        match nix::fcntl::fcntl(&list, nix::fcntl::FcntlArg::F_OFD_SETLK(&turn)) {
            Ok(_) => Ok(Some(true)),
            Err(nix::errno::Errno::EAGAIN | nix::errno::Errno::EACCES) => Ok(None),
            Err(_) => Ok(Some(false)),
        }
    })
    .unwrap_or(false);
    if has_turn && len + line.len() > MAX_LEN {
        len = compact(&list, ident).unwrap_or(len);
    }
    if len + line.len() <= MAX_LEN
        && let Ok(mut file) = open(OFlag::O_WRONLY | OFlag::O_APPEND)
        && ours(&file).is_some()
    {
        let _ = file.write_all(line);
    }
    // Closing `list` ends our turn.
}

/// Drop the lines of holders that have ended from the shared lock file
/// `file` (ours, open for reading and writing, our turn taken); the first
/// line, the creator's record, always stays, since it says what the file is
/// (a window's, for one). The new length.
fn compact(file: &File, ident: Ident) -> io::Result<usize> {
    let bytes = read_list(file)?;
    let len = bytes.len();
    let mut kept = Vec::with_capacity(len);
    for (index, line) in bytes.split_inclusive(|b| *b == b'\n').enumerate() {
        let live = index == 0
            || match Record::holders(line).first() {
                Some(record) => holds(record, ident),
                // Not a record we can read: not ours to drop.
                None => !line.trim_ascii().is_empty(),
            };
        if live {
            kept.extend_from_slice(line);
        }
    }
    if kept.len() < len {
        file.write_all_at(&kept, 0)?;
        file.set_len(kept.len() as u64)?;
    }
    Ok(kept.len())
}
