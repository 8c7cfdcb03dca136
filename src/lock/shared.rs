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
use std::os::unix::fs::MetadataExt;

use nix::fcntl::OFlag;

use super::dir::{Ident, LockDir};
use super::probe::{Exclusive, try_flock, with_backoff};
use super::record::MAX_LEN;

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
