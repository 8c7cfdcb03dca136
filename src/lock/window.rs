//! The window holder (`resin-lock window`) and the one rule about it: **a
//! window holder excludes nobody**.
//!
//! Outside its windows, `window` holds the update lock so that neither the
//! supervisor nor a host OS reboot goes ahead. It must never hold back the
//! app's own critical sections (`run`, `acquire`, `hold`, exclusive or
//! shared), so it holds the file as a shared holder would (LOCK_SH, its
//! record first, mode `window`), and every taker that finds a file that a
//! window created joins it instead of waiting:
//!
//! - every joiner takes LOCK_SH on the inode, as a shared holder does: the
//!   file stays while anyone holds it, the host OS reboot check
//!   (`flock -nx`) stays blocked, the last one out removes it (`Held::release`),
//!   and nobody holding it makes it stale;
//! - among the app's own holders, exclusive still means exclusive: each app
//!   joiner also takes an OFD lock on one reserved byte of the file
//!   (`APP_BYTE`), F_WRLCK for an exclusive taker and F_RDLCK for a shared
//!   one, without waiting; a conflict is busy, as a held lock is. The
//!   kernel drops the byte lock when the holder's last descriptor of that
//!   open file closes (release, exit, death, a `run` child that kept the
//!   descriptor ends), so there is nothing to clean up;
//! - a window that finds a file that is not a window's (an app's lock)
//!   never joins it: it waits, as an exclusive taker does, so the app
//!   holders of an ordinary shared lock never meet an exclusive app holder
//!   that joined through a window.
//!
//! So a window that opens while a section runs lets go of its LOCK_SH, and
//! the file goes only when that section ends; and the file keeps this rule
//! for as long as it exists, whoever of its holders remains.
//!
//! Limit: an app joiner needs to open the file for writing to take the
//! F_WRLCK byte lock; a window's file of another user (mode 0644) cannot be,
//! so such a taker waits for the window to let go, as before.

use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::os::unix::fs::MetadataExt;

use nix::fcntl::{FcntlArg, OFlag, fcntl};
use serde::Serialize;

use super::dir::{Ident, LockDir, names_in};
use super::probe::Exclusive;
use super::record::{Mode, Record};
use super::shared::try_join;

/// The byte of a window's lock file whose OFD lock says which app holders
/// hold it and how; next to `shared::WRITER_MARK`, far past any record.
const APP_BYTE: libc::off_t = libc::off_t::MAX / 2 + 1;

/// How the rule applies to one taker and the file it found.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Rule {
    /// The file is a window's: join it (`join`).
    Join,
    /// A window taker and an app's file: never join it; wait as an
    /// exclusive taker does.
    Wait,
    /// Neither is a window: the ordinary rules.
    Ordinary,
}

/// The rule for a taker whose record line is `content` and a resin-lock
/// file whose first record is `found`.
pub(crate) fn rule(found: &Record, content: &[u8]) -> Rule {
    if found.mode == Mode::Window {
        Rule::Join
    } else if is_window(content) {
        Rule::Wait
    } else {
        Rule::Ordinary
    }
}

/// Whether the open lock file `file` is a window's (its first record is a
/// window holder's): whoever holds it holds it as a shared holder, even a
/// process that took it as exclusive (an `acquire` keeper that received
/// it), so that the last one out, not the first, removes it.
pub(crate) fn is_window_file(file: &File) -> bool {
    use std::os::unix::fs::FileExt;
    let mut bytes = [0u8; super::record::MAX_WRITE];
    let Ok(len) = file.read_at(&mut bytes, 0) else {
        return false;
    };
    let first = bytes[..len]
        .split(|b| *b == b'\n')
        .next()
        .unwrap_or_default();
    is_window(first)
}

/// Whether a taker's record line is a window holder's. Parsed only when
/// the word is there at all: every take of a lock asks this.
fn is_window(content: &[u8]) -> bool {
    content.windows(b"window".len()).any(|w| w == b"window")
        && Record::parse(content).is_some_and(|(record, _)| record.mode == Mode::Window)
}

/// What joining a window's file came to.
pub(crate) enum Join {
    /// We hold it: LOCK_SH on this file (and an app taker's byte lock).
    Joined(File),
    /// Nobody holds it: we hold LOCK_EX on the file we were given, and it
    /// is to be removed as any stale lock.
    Stale,
    /// The path names another file now: look again.
    Moved,
    /// An app holder conflicts (an exclusive one, or we are exclusive),
    /// or the file is not ours to join: busy. We hold nothing of it.
    Busy,
}

/// Join the window's lock file `file` (`ident`, at `name` in `dir`) as the
/// taker whose record line is `content`, exclusive or `shared` among app
/// holders.
pub(crate) fn join(
    dir: &LockDir,
    name: &OsStr,
    (file, ident): (&File, Ident),
    content: &[u8],
    shared: bool,
) -> io::Result<Join> {
    match try_join(file)? {
        Exclusive::Taken => return Ok(Join::Stale),
        Exclusive::Held => return Ok(Join::Busy),
        Exclusive::Shared => {}
    }
    // LOCK_SH on `file` from here: the file cannot go stale under us.
    let joined = if is_window(content) {
        Some(file.try_clone()?)
    } else if app_conflict(file, shared) {
        // Asked on our read-only descriptor: a busy attempt never opens the
        // file for writing, whose close would wake the waiters (us too).
        None
    } else {
        app_join(dir, name, ident, shared)?
    };
    let joined = match joined {
        Some(joined) => joined,
        None => {
            file.unlock()?;
            return Ok(Join::Busy);
        }
    };
    if !names_in(dir, name, ident) {
        return Ok(Join::Moved);
    }
    Ok(Join::Joined(joined))
}

/// Whether an app holder holds the byte lock in a way that excludes us
/// (F_OFD_GETLK, which a read-only descriptor may ask).
fn app_conflict(file: &File, shared: bool) -> bool {
    let kind = if shared { libc::F_RDLCK } else { libc::F_WRLCK };
    let mut range = crate::sys::ofd_range(kind, APP_BYTE);
    fcntl(file, FcntlArg::F_OFD_GETLK(&mut range)).is_ok()
        && range.l_type != libc::F_UNLCK as libc::c_short
}

/// An app taker's own open file of the window's lock, with LOCK_SH and the
/// byte lock that keeps app holders exclusive among themselves; None when
/// another app holder conflicts or the file cannot be opened for writing.
fn app_join(dir: &LockDir, name: &OsStr, ident: Ident, shared: bool) -> io::Result<Option<File>> {
    let file = match dir.open_file(name, OFlag::O_RDWR | OFlag::O_NONBLOCK | OFlag::O_NOCTTY, 0) {
        Ok(file) => file,
        Err(err)
            if matches!(
                err.raw_os_error(),
                Some(libc::EACCES | libc::EPERM | libc::EROFS | libc::ENOENT | libc::ELOOP)
            ) =>
        {
            return Ok(None);
        }
        Err(err) => return Err(err),
    };
    let meta = file.metadata()?;
    if (meta.dev(), meta.ino()) != ident || !meta.is_file() {
        return Ok(None);
    }
    // Compatible with the LOCK_SH the caller holds on its own descriptor.
    if !super::probe::try_flock(file.try_lock_shared())? {
        return Ok(None);
    }
    let kind = if shared { libc::F_RDLCK } else { libc::F_WRLCK };
    let range = crate::sys::ofd_range(kind, APP_BYTE);
    match fcntl(&file, FcntlArg::F_OFD_SETLK(&range)) {
        Ok(_) => Ok(Some(file)),
        Err(nix::errno::Errno::EAGAIN | nix::errno::Errno::EACCES) => Ok(None),
        Err(err) => Err(err.into()),
    }
}

/// Whether nothing is at `target`'s path (a directory that is gone counts
/// as free): after its file was removed, a window lets the directory
/// settle, so that the supervisor's `lockfile -r 0`, a few milliseconds
/// after its unlink, finds the path free.
pub(crate) fn path_free(target: &super::dir::Target) -> bool {
    let Ok(name) = super::dir::lock_name(&target.path) else {
        return false;
    };
    match LockDir::open(&super::dir::Target {
        create_parent: false,
        ..target.clone()
    }) {
        Ok(dir) => matches!(dir.stat(name), Ok(None)),
        Err(_) => true,
    }
}

/// A window holder as `status` shows it: its windows, whether one is open
/// now, and when that changes next.
#[derive(Debug, Clone, Serialize)]
pub struct View {
    pub open: bool,
    pub next_change: Option<String>,
    pub windows: Vec<String>,
    pub tz: String,
    /// The next change on the zone's wall clock, `2026-12-09 02:00`.
    #[serde(skip)]
    pub next_wall_clock: Option<String>,
}

impl View {
    /// The view of a window holder's record, now; None for any other
    /// record, or one whose window no longer parses here.
    pub fn of(record: &Record) -> Option<View> {
        let spec = record
            .window
            .as_ref()
            .filter(|_| record.mode == Mode::Window)?;
        let schedule = crate::schedule::Schedule {
            windows: crate::schedule::parse_windows(&spec.windows).ok()?,
            zone: crate::schedule::zone(
                Some(&spec.tz)
                    .filter(|tz| *tz != "local")
                    .map(|s| s.as_str()),
            )
            .ok()?,
        };
        let now = crate::schedule::now();
        // A clock not yet set is a closed window with no known end, as the
        // window itself holds it.
        let state = crate::schedule::clock_is_set(now).then(|| schedule.state(now));
        let next = state.as_ref().and_then(|s| s.next_change);
        Some(View {
            open: state.as_ref().is_some_and(|s| s.open),
            next_change: next.map(|t| schedule.rfc3339(t)),
            windows: spec.windows.clone(),
            tz: spec.tz.clone(),
            next_wall_clock: next.map(|t| schedule.wall_clock(t)),
        })
    }

    /// `updates allowed Mon-Fri 02:00-04:00 Europe/Berlin, next 2026-12-09 02:00`.
    pub fn describe(&self) -> String {
        format!(
            "updates allowed {} {}{}",
            crate::text::escape_controls(&self.windows.join(" and ")),
            crate::text::escape_controls(&self.tz),
            self.next_wall_clock
                .as_deref()
                .map(|next| format!(", next {next}"))
                .unwrap_or_default()
        )
    }
}
