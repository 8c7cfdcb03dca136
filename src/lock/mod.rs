//! The update-lock protocol (SPEC section 2 and 6): a lock file that
//! appears atomically with resin-lock's record, flocked from before it is
//! visible until it is removed; removal only while the path still names our
//! inode; race-free takeover of stale locks; all-or-nothing over several paths.

pub(crate) mod create;
pub(crate) mod dir;
pub(crate) mod displaced;
pub(crate) mod inspect;
pub(crate) mod keeper;
pub(crate) mod owner;
pub mod record;
pub(crate) mod release;
pub(crate) mod shared;
pub(crate) mod wait;

use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use anyhow::Result;

use crate::exit::{Exit, fail};
use create::Created;
use dir::{LockDir, lock_name, parent_of};
use inspect::{Exclusive, Found, Ident, Inspection};
use record::Record;

/// A lock path, whether its missing parent directory may be created
/// (detected paths) or is an error (`--path`), and the `--root` it must be
/// resolved in (detected paths under `--root`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Target {
    pub(crate) path: PathBuf,
    pub(crate) create_parent: bool,
    pub(crate) root: Option<PathBuf>,
}

/// What the protocol did that a user may want to hear about. The commands
/// turn these into words (`cmd::tell`); `lock/` never prints.
#[derive(Debug)]
pub(crate) enum Event<'a> {
    /// A wait begins: who holds the lock.
    Waiting {
        path: &'a Path,
        holder: &'a Inspection,
    },
    /// The path was removed while its holder still holds the old file: we
    /// wait for that holder to let go before creating a new lock (SPEC 2a).
    WaitingForDisplaced { path: &'a Path, record: &'a Record },
    /// A stale resin-lock lock was removed to take its place.
    TookOverStale {
        path: &'a Path,
        reason: &'a str,
        record: &'a Record,
    },
    /// A lock was let go of.
    Released { path: &'a Path, how: Released },
}

/// Where events go.
pub(crate) type Notify<'a> = &'a dyn Fn(Event<'_>);

/// Events nobody listens to (the keeper).
pub(crate) fn ignore(_: Event<'_>) {}

/// A lock we hold: the open, flocked lock file, its directory and identity.
#[derive(Debug)]
pub(crate) struct Held {
    pub(crate) path: PathBuf,
    dir: LockDir,
    file: File,
    ident: Ident,
    /// Held with LOCK_SH, maybe with other holders (`-s`).
    shared: bool,
}

/// What releasing a lock found at its path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Released {
    Removed,
    /// The path names another file now (e.g. the supervisor forced an update
    /// and created its own lock): left alone.
    Replaced,
    /// Someone removed the file already.
    Gone,
    /// A shared lock that other holders still hold: left to them.
    Left,
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
                true => match unlink_if_same(&self.dir, name, self.ident)? {
                    Released::Removed => Released::Removed,
                    _ => Released::Left,
                },
                false => Released::Left,
            }
        } else {
            unlink_if_same(&self.dir, name, self.ident)?
        };
        drop(self.file);
        Ok(outcome)
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
        let others = shared::read_holders(&self.file)
            .iter()
            .any(|h| h.pid != me && shared::holds(h, self.ident));
        Ok(!others && inspect::try_exclusive(&self.file)? == Exclusive::Taken)
    }
}

/// Unlink `name` in `dir` only if it names `ident`.
pub(crate) fn unlink_if_same(dir: &LockDir, name: &OsStr, ident: Ident) -> io::Result<Released> {
    match dir.stat(name)? {
        Some(stat) if (stat.st_dev, stat.st_ino) == ident => match dir.unlink(name) {
            Ok(()) => Ok(Released::Removed),
            Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(Released::Gone),
            Err(err) => Err(err),
        },
        Some(_) => Ok(Released::Replaced),
        None => Ok(Released::Gone),
    }
}

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

/// One attempt at one path.
pub(crate) enum Attempt {
    Taken(Held),
    /// Busy: who holds it, and for a resin-lock lock the open file (kept by
    /// a waiter to follow that holder, SPEC 2a).
    Busy(Box<Inspection>, Option<(File, Ident)>),
}

/// Try to take `target` once: create it, or take over a stale resin-lock
/// lock there and create it afresh. Busy when anyone else holds it.
pub(crate) fn try_take(
    target: &Target,
    content: &[u8],
    shared: bool,
    notify: Notify,
) -> Result<Attempt> {
    let path = &target.path;
    let name = lock_name(path).map_err(|err| create_error(path, err))?;
    // Each round either takes the lock, reports it busy, or removed a stale
    // lock (someone else's progress or ours); bounded against a livelock.
    for _ in 0..64 {
        let dir = LockDir::open(target).map_err(|err| create_error(path, err))?;
        let dir = match create::create(dir, path, content, shared) {
            Ok(Created::Taken(held)) => return Ok(Attempt::Taken(held)),
            Ok(Created::Exists(dir)) => dir,
            Err(err) => return Err(create_error(path, err)),
        };
        let found = inspect::examine(&dir, name).map_err(|err| inspect_error(path, err))?;
        if let Found::Missing = found {
            continue;
        }
        if let Found::Ours {
            file,
            ident,
            record,
            ..
        } = &found
        {
            // A shared taker joins a live shared lock of this boot.
            let joining = shared && record.shared && inspect::stale_reason(record, true).is_none();
            let exclusive = if joining {
                shared::try_join(file)
            } else {
                inspect::try_exclusive(file)
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
    let reason = inspect::stale_reason(record, false).unwrap_or("holder exited");
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

/// Take every target in order, all or nothing: when one is busy, release
/// those already taken and report which one is busy. Two targets that name
/// the same file are one lock, taken once.
pub(crate) fn try_take_all(
    targets: &[Target],
    content: &[u8],
    shared: bool,
    notify: Notify,
) -> Result<std::result::Result<Vec<Held>, Busy>> {
    let mut held: Vec<Held> = Vec::with_capacity(targets.len());
    for (index, target) in targets.iter().enumerate() {
        if same_file_taken(&held, target) {
            continue;
        }
        match try_take(target, content, shared, notify) {
            Ok(Attempt::Taken(lock)) => held.push(lock),
            Ok(Attempt::Busy(holder, followed)) => {
                release_all(held, notify)?;
                return Ok(Err(Busy {
                    index,
                    holder,
                    followed,
                }));
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

/// Whether `name` in `dir` names the file `ident` now.
fn names_in(dir: &LockDir, name: &OsStr, ident: Ident) -> bool {
    dir.stat(name)
        .is_ok_and(|stat| stat.is_some_and(|s| (s.st_dev, s.st_ino) == ident))
}

/// Whether `target`'s path names the file `ident` now (never creating its
/// directory).
pub(crate) fn names(target: &Target, ident: Ident) -> bool {
    let Ok(name) = lock_name(&target.path) else {
        return false;
    };
    LockDir::open(&Target {
        create_parent: false,
        ..target.clone()
    })
    .and_then(|dir| dir.stat(name))
    .is_ok_and(|stat| stat.is_some_and(|s| (s.st_dev, s.st_ino) == ident))
}

/// Map a failure to create the lock to exit 73 (or 71 for resource
/// exhaustion), naming the path and, where it helps, the directory.
pub(crate) fn create_error(path: &Path, err: io::Error) -> anyhow::Error {
    lock_error("create", path, err)
}

/// `create_error` for another verb ("release").
pub(crate) fn lock_error(verb: &str, path: &Path, err: io::Error) -> anyhow::Error {
    let dir = parent_of(path);
    let why = match err.raw_os_error() {
        Some(libc::ENOENT) if !dir.exists() => {
            format!("directory {} does not exist", dir.display())
        }
        Some(libc::ENOTDIR) => format!("{} is not a directory", dir.display()),
        Some(libc::EACCES | libc::EPERM) => {
            format!("permission denied in {}", dir.display())
        }
        Some(libc::EROFS) => format!("{} is on a read-only file system", dir.display()),
        Some(libc::ENOSPC | libc::EDQUOT) => format!("no space left in {}", dir.display()),
        Some(libc::ENAMETOOLONG) => "file name too long".to_owned(),
        Some(code) => crate::sys::strerror(code),
        None => err.to_string(),
    };
    let code = match err.raw_os_error() {
        Some(libc::EMFILE | libc::ENFILE | libc::ENOMEM) => Exit::OsErr,
        _ => Exit::CantCreate,
    };
    fail(
        code,
        format!("cannot {verb} lock {}: {why}", path.display()),
    )
}

fn inspect_error(path: &Path, err: io::Error) -> anyhow::Error {
    anyhow::Error::new(err).context(format!("cannot read lock {}", path.display()))
}
