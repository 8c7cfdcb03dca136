//! The update-lock protocol (SPEC section 2 and 6): a lock file that
//! appears atomically with resin-lock's record, flocked from before it is
//! visible until it is removed; removal only while the path still names our
//! inode; race-free takeover of stale locks; all-or-nothing over several paths.

pub mod create;
pub mod inspect;
pub mod record;
pub mod wait;

use std::fs::{self, File};
use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};

use anyhow::Result;

use crate::exit::{Exit, fail};
use crate::ui::Ui;
use create::Created;
use inspect::{Found, Inspection};

/// A lock path, and whether its missing parent directory may be created
/// (detected paths) or is an error (`--path`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub path: PathBuf,
    pub create_parent: bool,
}

/// A lock we hold: the open, flocked lock file and its identity.
#[derive(Debug)]
pub struct Held {
    pub path: PathBuf,
    file: File,
    dev: u64,
    ino: u64,
}

/// What `Held::release` did.
#[derive(Debug, PartialEq, Eq)]
pub enum Released {
    Removed,
    /// The path names another file now (e.g. the supervisor forced an update
    /// and created its own lock): left alone.
    Replaced,
    /// Someone removed the file already.
    Gone,
}

impl Held {
    /// Adopt an open, flocked lock file (also how the keeper receives its locks).
    pub fn new(path: &Path, file: File) -> io::Result<Held> {
        let meta = file.metadata()?;
        Ok(Held {
            path: path.to_owned(),
            file,
            dev: meta.dev(),
            ino: meta.ino(),
        })
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }

    /// Remove the lock file if the path still names our inode (checked while
    /// we hold the flock), then let go of the flock.
    pub fn release(self) -> io::Result<Released> {
        let outcome = unlink_if_same(&self.path, self.dev, self.ino)?;
        drop(self.file);
        Ok(outcome)
    }
}

/// Unlink `path` only if it names (dev, ino).
pub fn unlink_if_same(path: &Path, dev: u64, ino: u64) -> io::Result<Released> {
    match fs::symlink_metadata(path) {
        Ok(meta) if (meta.dev(), meta.ino()) == (dev, ino) => match fs::remove_file(path) {
            Ok(()) => Ok(Released::Removed),
            Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(Released::Gone),
            Err(err) => Err(err),
        },
        Ok(_) => Ok(Released::Replaced),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(Released::Gone),
        Err(err) => Err(err),
    }
}

/// Release every lock, reporting (not failing on) a replaced file.
pub fn release_all(held: Vec<Held>, ui: &Ui) -> Result<()> {
    let mut first_error = None;
    for lock in held.into_iter().rev() {
        let path = lock.path.clone();
        match lock.release() {
            Ok(Released::Removed) => ui.verbose(|| format!("released {}", path.display())),
            Ok(Released::Gone) => ui.warn(format!(
                "{} was already removed by someone else",
                path.display()
            )),
            Ok(Released::Replaced) => ui.warn(format!(
                "{} is no longer our lock file (the supervisor may have forced an update); left it alone",
                path.display()
            )),
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
pub enum Attempt {
    Taken(Held),
    Busy(Box<Inspection>),
}

/// Try to take `target` once: create it, or take over a stale resin-lock
/// lock there and create it afresh. Busy when anyone else holds it.
pub fn try_take(target: &Target, content: &[u8], ui: &Ui) -> Result<Attempt> {
    let path = &target.path;
    if target.create_parent {
        ensure_parent(path)?;
    }
    // Each round either takes the lock, reports it busy, or removed a stale
    // lock (someone else's progress or ours); bounded against a livelock.
    for _ in 0..64 {
        match create::create(path, content) {
            Ok(Created::Taken(held)) => return Ok(Attempt::Taken(held)),
            Ok(Created::Exists) => {}
            Err(err) => return Err(create_error(path, err)),
        }
        let found = inspect::examine(path).map_err(|err| inspect_error(path, err))?;
        match found {
            Found::Missing => continue,
            Found::Foreign { .. } => {
                return Ok(Attempt::Busy(Box::new(Inspection::from_found(
                    path, &found, true,
                ))));
            }
            Found::Ours {
                ref file,
                ref meta,
                ref record,
                ..
            } => match file.try_lock() {
                Err(fs::TryLockError::WouldBlock) => {
                    return Ok(Attempt::Busy(Box::new(Inspection::from_found(
                        path, &found, true,
                    ))));
                }
                Err(fs::TryLockError::Error(err)) => {
                    return Err(
                        anyhow::Error::new(err).context(format!("cannot lock {}", path.display()))
                    );
                }
                Ok(()) => {
                    // Nobody holds it: stale. We hold its flock now, so no
                    // other contender can take it over at the same time.
                    let reason = inspect::stale_reason(record, false).unwrap_or("holder exited");
                    if unlink_if_same(path, meta.dev(), meta.ino())
                        .map_err(|err| create_error(path, err))?
                        == Released::Removed
                    {
                        ui.verbose(|| {
                            format!(
                                "took over stale lock {} ({reason}; was resin-lock {} pid {})",
                                path.display(),
                                record.mode.as_str(),
                                record.pid
                            )
                        });
                    }
                }
            },
        }
    }
    Err(fail(
        Exit::OsErr,
        format!(
            "{}: the lock file keeps changing; giving up",
            path.display()
        ),
    ))
}

/// All the locks, or the index of the first busy target and who holds it.
pub type AllOrBusy = std::result::Result<Vec<Held>, (usize, Box<Inspection>)>;

/// Take every target in order, all or nothing: when one is busy, release
/// those already taken and report which one is busy.
pub fn try_take_all(targets: &[Target], content: &[u8], ui: &Ui) -> Result<AllOrBusy> {
    let mut held = Vec::with_capacity(targets.len());
    for (index, target) in targets.iter().enumerate() {
        match try_take(target, content, ui) {
            Ok(Attempt::Taken(lock)) => held.push(lock),
            Ok(Attempt::Busy(inspection)) => {
                release_all(held, ui)?;
                return Ok(Err((index, inspection)));
            }
            Err(err) => {
                release_all(held, ui)?;
                return Err(err);
            }
        }
    }
    Ok(Ok(held))
}

/// Create the missing parent directories of a detected lock path (0755).
pub fn ensure_parent(path: &Path) -> Result<()> {
    let dir = create::parent_of(path);
    if dir.is_dir() {
        return Ok(());
    }
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(dir)
        .map_err(|err| create_error(path, err))
}

/// Map a failure to create the lock to exit 73 (or 71 for resource
/// exhaustion), naming the path and, where it helps, the directory.
pub fn create_error(path: &Path, err: io::Error) -> anyhow::Error {
    let dir = create::parent_of(path);
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
        _ => err.to_string(),
    };
    let code = match err.raw_os_error() {
        Some(libc::EMFILE | libc::ENFILE | libc::ENOMEM) => Exit::OsErr,
        _ => Exit::CantCreate,
    };
    fail(
        code,
        format!("cannot create lock {}: {why}", path.display()),
    )
}

fn inspect_error(path: &Path, err: io::Error) -> anyhow::Error {
    anyhow::Error::new(err).context(format!("cannot read lock {}", path.display()))
}
