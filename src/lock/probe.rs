//! Looking at what is at a lock path without following symlinks or
//! disturbing it: nothing, a resin-lock record (with its open file), or
//! another tool's lock; and probing a record's flock for who holds it. The
//! bottom of the protocol: everything that takes, reports or releases a
//! lock starts here.

use std::ffi::OsStr;
use std::fs::{self, File};
use std::io::{self, Read};
use std::os::unix::fs::MetadataExt;

use nix::fcntl::OFlag;
use serde::Serialize;

use super::dir::{Ident, LockDir};
use super::record::{MAX_LEN, Record};

/// Supervisors >= v13.1 create their lock files as this uid (`nobody`).
pub const SUPERVISOR_UID: u32 = 65534;

/// The first bytes of every lock file of helios, the next supervisor
/// (balena-io/helios `helios-util/src/locking.rs`: 611, the sum of the
/// letters of "balena", big-endian). A file that begins with them is the
/// supervisor's: held, never stale, never removed. resin-lock's record
/// never begins with them (it begins with `{`).
pub const HELIOS_TAG: [u8; 2] = [0x02, 0x63];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum HeldBy {
    ResinLock,
    Supervisor,
    Other,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    File,
    Directory,
    Symlink,
}

/// What is at a lock path.
pub enum Found {
    Missing,
    /// Not a resin-lock record: held, never stale.
    Foreign {
        kind: Kind,
        uid: u32,
        held_by: HeldBy,
        /// Why it is foreign, in words ("a symlink", "lockfile(1)'s `0`" …).
        what: String,
        /// A regular file the caller may not read: whether it begins with
        /// helios' tag cannot be told.
        unreadable: bool,
    },
    /// A resin-lock record, with the open file for probing its flock.
    Ours {
        file: File,
        ident: Ident,
        uid: u32,
        /// Boxed: a record is most of the size of this enum.
        record: Box<Record>,
        raw: serde_json::Value,
    },
}

/// Examine the lock `name` in `dir` (never following a symlink there, never
/// opening anything but a regular file, never blocking).
pub fn examine(dir: &LockDir, name: &OsStr) -> io::Result<Found> {
    // A file replaced between lstat and open is looked at again.
    for _ in 0..8 {
        let Some(stat) = dir.stat(name)? else {
            return Ok(Found::Missing);
        };
        let uid = stat.st_uid;
        let ident = super::dir::ident(&stat);
        let foreign = |kind, held_by, what: &str| Found::Foreign {
            kind,
            uid,
            held_by,
            what: what.to_owned(),
            unreadable: false,
        };
        let format = stat.st_mode & libc::S_IFMT;
        match format {
            libc::S_IFLNK => return Ok(foreign(Kind::Symlink, HeldBy::Other, "a symlink")),
            libc::S_IFDIR => return Ok(foreign(Kind::Directory, HeldBy::Other, "a directory")),
            _ => {}
        }
        if uid == SUPERVISOR_UID {
            return Ok(foreign(
                Kind::File,
                HeldBy::Supervisor,
                "the supervisor (owned by uid 65534)",
            ));
        }
        if format != libc::S_IFREG {
            let what = match format {
                libc::S_IFIFO => "a FIFO",
                libc::S_IFSOCK => "a socket",
                _ => "a device node",
            };
            return Ok(foreign(Kind::File, HeldBy::Other, what));
        }
        let mut file = match dir.open_file(
            name,
            OFlag::O_RDONLY | OFlag::O_NONBLOCK | OFlag::O_NOCTTY,
            0,
        ) {
            Ok(file) => file,
            Err(err) if err.kind() == io::ErrorKind::NotFound => continue,
            Err(err) if err.raw_os_error() == Some(libc::ELOOP) => continue,
            Err(err) if err.kind() == io::ErrorKind::PermissionDenied => {
                return Ok(Found::Foreign {
                    kind: Kind::File,
                    uid,
                    held_by: HeldBy::Other,
                    what: "an unreadable lock file".to_owned(),
                    unreadable: true,
                });
            }
            Err(err) => return Err(err),
        };
        let opened = file.metadata()?;
        if (opened.dev(), opened.ino()) != ident || !opened.is_file() {
            continue;
        }
        // Sized to the file: one read and the one that sees its end.
        let mut bytes = Vec::with_capacity(opened.len().min(MAX_LEN as u64) as usize + 1);
        (&mut file)
            .take(MAX_LEN as u64 + 1)
            .read_to_end(&mut bytes)?;
        if bytes.starts_with(&HELIOS_TAG) {
            return Ok(foreign(
                Kind::File,
                HeldBy::Supervisor,
                "the supervisor (helios' lock file)",
            ));
        }
        return Ok(match Record::parse(&bytes) {
            Some((record, raw)) => Found::Ours {
                file,
                ident,
                uid,
                record: Box::new(record),
                raw,
            },
            None => foreign(Kind::File, HeldBy::Other, &describe_foreign(&bytes)),
        });
    }
    Err(io::Error::other("the lock file keeps changing under us"))
}

fn describe_foreign(bytes: &[u8]) -> String {
    match bytes.trim_ascii() {
        b"" => "another tool (empty lock file)".to_owned(),
        b"0" => "another tool (lockfile(1)'s lock file)".to_owned(),
        _ => "another tool (not a resin-lock record)".to_owned(),
    }
}

/// Whether anyone holds the flock on `file`. Probed with a shared lock,
/// which never blocks a holder; a prober's own brief shared lock is what
/// `try_exclusive` looks past. A shared lock's holders are seen only by a
/// LOCK_EX probe, which a joiner (`try_join`) and the last one out
/// (`Held::release`) look past in turn.
pub fn flock_held(file: &File, shared: bool) -> io::Result<bool> {
    let probe = if shared {
        file.try_lock()
    } else {
        file.try_lock_shared()
    };
    if try_flock(probe)? {
        file.unlock()?;
        Ok(false)
    } else {
        Ok(true)
    }
}

/// Whether a process holds a flock on the foreign regular file `name` in
/// `dir` (another tool's lock that flock(1) or the like holds); `None`
/// when that cannot be told: not a regular file, unreadable, gone. Never
/// opens anything but a regular file, never blocks.
pub fn foreign_flocked(dir: &LockDir, name: &OsStr) -> Option<bool> {
    let stat = dir.stat(name).ok()??;
    if stat.st_mode & libc::S_IFMT != libc::S_IFREG {
        return None;
    }
    let flags = OFlag::O_RDONLY | OFlag::O_NONBLOCK | OFlag::O_NOCTTY;
    let file = dir.open_file(name, flags, 0).ok()?;
    let opened = file.metadata().ok()?;
    if (opened.dev(), opened.ino()) != (stat.st_dev, stat.st_ino) || !opened.is_file() {
        return None;
    }
    flock_held(&file, false).ok()
}

/// How `try_exclusive` found the flock.
#[derive(Debug, PartialEq, Eq)]
pub enum Exclusive {
    /// We hold LOCK_EX now.
    Taken,
    /// Someone holds LOCK_EX.
    Held,
    /// Only shared holders, for longer than any prober holds one.
    Shared,
}

/// Take LOCK_EX on `file` without waiting. A shared lock that only a
/// `status` or a waiter probing the lock holds for a moment (issue 12.7: a
/// probe must never change another caller's answer) is waited out briefly:
/// up to about 100 ms in doubling pauses, for a prober descheduled on a
/// loaded machine.
pub fn try_exclusive(file: &File) -> io::Result<Exclusive> {
    with_backoff(Exclusive::Shared, || {
        if try_flock(file.try_lock())? {
            return Ok(Some(Exclusive::Taken));
        }
        // An exclusive holder also blocks a shared lock; probers do not.
        if try_flock(file.try_lock_shared())? {
            file.unlock()?;
            return Ok(None);
        }
        Ok(Some(Exclusive::Held))
    })
}

/// Whether a non-blocking flock was taken (false: someone holds it).
pub fn try_flock(attempt: Result<(), fs::TryLockError>) -> io::Result<bool> {
    match attempt {
        Ok(()) => Ok(true),
        Err(fs::TryLockError::WouldBlock) => Ok(false),
        Err(fs::TryLockError::Error(err)) => Err(err),
    }
}

/// Run `step` until it has an answer, in doubling pauses from 100 µs (about
/// 100 ms in all: a prober descheduled on a loaded machine); `otherwise`
/// when it never has one.
pub fn with_backoff<T>(
    otherwise: T,
    mut step: impl FnMut() -> io::Result<Option<T>>,
) -> io::Result<T> {
    let mut pause = std::time::Duration::from_micros(100);
    for _ in 0..10 {
        if let Some(answer) = step()? {
            return Ok(answer);
        }
        std::thread::sleep(pause);
        pause *= 2;
    }
    Ok(otherwise)
}

/// Why a resin-lock record is stale, if it is.
pub fn stale_reason(record: &Record, flocked: bool) -> Option<&'static str> {
    let boot = crate::procfs::boot_id().unwrap_or_default();
    if !record.boot_id.is_empty() && !boot.is_empty() && record.boot_id != boot {
        Some("previous boot")
    } else if !flocked {
        Some("holder exited")
    } else {
        None
    }
}
