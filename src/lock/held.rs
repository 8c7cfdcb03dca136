//! A lock we hold, and letting go of it: the file is removed only while
//! the path still names our inode (SPEC 2.3); a shared lock only by the
//! last one out (SPEC 4, `-s`).

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::dir::{Ident, LockDir, Released, lock_name, names_in, unlink_if_same};
use super::holders;
use super::probe::{self, Exclusive};

/// The mode a holder gives its lock file just before it removes it itself
/// (no write bit): a waiter that follows the file and finds it unlinked
/// while still flocked can tell an ordinary release, which is over in a
/// moment, from a removal by someone else (SPEC 2a), and says nothing.
pub(crate) const RELEASING_MODE: u32 = 0o444;

/// Whether the holder of `file` marked it as being released by itself.
pub(crate) fn being_released(file: &File) -> bool {
    file.metadata()
        .is_ok_and(|m| m.mode() & 0o777 == RELEASING_MODE)
}

/// A lock we hold: the open, flocked lock file, its directory and identity.
#[derive(Debug)]
pub(crate) struct Held {
    pub(crate) path: PathBuf,
    dir: LockDir,
    file: File,
    pub(super) ident: Ident,
    /// Held with LOCK_SH, maybe with other holders (`-s`).
    shared: bool,
}

impl Held {
    /// Adopt an open, flocked lock file and its directory (also how the
    /// keeper receives its locks).
    pub(crate) fn new(path: &Path, dir: LockDir, file: File, shared: bool) -> io::Result<Held> {
        let meta = file.metadata()?;
        Ok(Held {
            path: path.to_owned(),
            dir,
            file,
            ident: (meta.dev(), meta.ino()),
            shared,
        })
    }

    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }

    pub(crate) fn dir_fd(&self) -> BorrowedFd<'_> {
        self.dir.fd()
    }

    /// What the path names instead of our file: nothing (`Gone`) or
    /// another file (`Replaced`); `None` while it names ours. Only a path
    /// that is gone or names another file counts as lost: when its
    /// directory cannot be read (a transient error), we cannot tell, and
    /// say it is in place.
    pub(crate) fn displaced(&self) -> Option<Released> {
        let name = lock_name(&self.path).ok()?;
        match self.dir.stat(name) {
            Ok(Some(stat)) if super::dir::ident(&stat) == self.ident => None,
            Ok(Some(_)) => Some(Released::Replaced),
            Ok(None) => Some(Released::Gone),
            Err(_) => None,
        }
    }

    /// Remove the lock file if the path still names our inode (checked while
    /// we hold the flock), then let go of the flock.
    /// A shared lock is removed only by the last one out, once it holds
    /// LOCK_EX; the others just let go.
    pub(crate) fn release(self) -> io::Result<Released> {
        let name = lock_name(&self.path)?;
        // Under our LOCK_SH nobody but a forced removal takes the file
        // away. Once we let go (`last_out` does at once), another holder
        // may be the last one out and remove it, as it should.
        let outcome = if self.shared && names_in(&self.dir, name, self.ident) {
            match self.last_out()? {
                true => {
                    self.mark_released();
                    match unlink_if_same(&self.dir, name, self.ident)? {
                        Released::Removed => Released::Removed,
                        _ => Released::Left,
                    }
                }
                false => Released::Left,
            }
        } else {
            self.mark_released();
            unlink_if_same(&self.dir, name, self.ident)?
        };
        drop(self.file);
        Ok(outcome)
    }

    /// Say to followers that we remove the file ourselves (`RELEASING_MODE`).
    /// Best effort: a file we cannot chmod only makes a waiter say more.
    fn mark_released(&self) {
        use std::os::unix::fs::PermissionsExt;
        let _ = self
            .file
            .set_permissions(std::fs::Permissions::from_mode(RELEASING_MODE));
    }

    /// Whether we are the last shared holder: LOCK_EX on our own
    /// descriptor. A failed attempt lets go of our LOCK_SH (flock converts
    /// by unlocking first), so from then on we hold nothing; if no other
    /// live holder is listed, what blocks us is a prober's brief LOCK_SH,
    /// which `try_exclusive` waits out.
    fn last_out(&self) -> io::Result<bool> {
        match self.file.try_lock() {
            Ok(()) => return Ok(true),
            Err(std::fs::TryLockError::WouldBlock) => {}
            Err(std::fs::TryLockError::Error(err)) => return Err(err),
        }
        let me = std::process::id() as i32;
        let others = holders::read_holders(&self.file)
            .iter()
            .any(|h| h.pid != me && holders::holds(h, self.ident));
        Ok(!others && probe::try_exclusive(&self.file)? == Exclusive::Taken)
    }
}
