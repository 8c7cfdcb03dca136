//! Making a lock file appear atomically with its content, already flocked:
//! an O_TMPFILE (or a named temp file) is written and flocked, then link(2)ed
//! into place, where EEXIST means busy. Where link(2) is not supported the
//! fallback is O_CREAT|O_EXCL, then lock and write. No temp file survives,
//! and one left by a process killed mid-way is removed by the next call
//! that creates a lock there.

use std::collections::hash_map::RandomState;
use std::ffi::{OsStr, OsString};
use std::fs::{self, File};
use std::hash::BuildHasher;
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use nix::errno::Errno;
use nix::fcntl::OFlag;

use super::dir::{LockDir, lock_name};
use super::held::Held;

/// Lock files are world-readable so the supervisor and `status` can read them.
pub const MODE: u32 = 0o644;

pub enum Created {
    Taken(Held),
    /// Something already exists at the path (the directory, for a look).
    Exists(LockDir),
}

/// Create lock `path` (in `dir`) with `content`, flocked (LOCK_SH when
/// `shared`, else LOCK_EX), or report that it exists.
pub fn create(dir: LockDir, path: &Path, content: &[u8], shared: bool) -> io::Result<Created> {
    let name = lock_name(path)?;
    // Also where this call needs no temp name: the leftover may be from a
    // time without /proc.
    clean_leftover_temps(&dir, name);
    match dir.tmpfile(MODE) {
        Ok(file) => {
            prepare(&file, content, shared)?;
            match dir.link_unnamed(&file, name) {
                Ok(()) => return Held::new(path, dir, file, shared).map(Created::Taken),
                Err(Errno::EEXIST) => return Ok(Created::Exists(dir)),
                // No /proc to name the unnamed file by: use a named one.
                Err(Errno::ENOENT) if !crate::procfs::proc_mounted() => {}
                Err(Errno::EPERM | Errno::EOPNOTSUPP | Errno::ENOSYS) => {
                    return create_exclusive(dir, path, content, shared);
                }
                Err(err) => return Err(err.into()),
            }
        }
        Err(err) if !tmpfile_unsupported(&err) => return Err(err),
        Err(_) => {}
    }
    create_via_named_temp(dir, path, content, shared)
}

/// An O_TMPFILE in the lock's directory, mode 0644 and flocked, but neither
/// written nor linked yet: `acquire` makes these before it forks its keeper,
/// which so holds them from birth (see `keeper`). Errors only mean this way
/// is not open; `create` then reports them properly.
pub fn prepare_tmpfile(dir: &LockDir, shared: bool) -> io::Result<File> {
    let file = dir.tmpfile(MODE)?;
    set_mode_and_lock(&file, shared)?;
    Ok(file)
}

/// Write `content` into a file from `prepare_tmpfile` and link it at `path`.
pub fn link_prepared(
    dir: LockDir,
    path: &Path,
    file: File,
    content: &[u8],
    shared: bool,
) -> io::Result<Created> {
    let name = lock_name(path)?;
    clean_leftover_temps(&dir, name);
    (&file).write_all(content)?;
    match dir.link_unnamed(&file, name) {
        Ok(()) => Held::new(path, dir, file, shared).map(Created::Taken),
        Err(Errno::EEXIST) => Ok(Created::Exists(dir)),
        Err(err) => Err(err.into()),
    }
}

/// O_TMPFILE is refused by some file systems and old kernels with these.
fn tmpfile_unsupported(err: &io::Error) -> bool {
    matches!(
        err.raw_os_error(),
        Some(libc::EOPNOTSUPP | libc::EISDIR | libc::EINVAL)
    )
}

/// Write the record, set the mode regardless of umask, take the flock.
fn prepare(file: &File, content: &[u8], shared: bool) -> io::Result<()> {
    set_mode_and_lock(file, shared)?;
    (&*file).write_all(content)
}

/// Set the mode regardless of umask and take the flock of a new file.
fn set_mode_and_lock(file: &File, shared: bool) -> io::Result<()> {
    file.set_permissions(fs::Permissions::from_mode(MODE))?;
    // A fresh inode nobody else can name yet: the lock cannot be busy.
    if shared {
        file.try_lock_shared()
    } else {
        file.try_lock()
    }
    .map_err(io::Error::from)
}

/// The temp-file names of lock `name`: `.NAME.<16 hex digits>.tmp`.
fn temp_name(name: &OsStr) -> OsString {
    let mut temp = OsString::from(".");
    temp.push(name);
    temp.push(format!(
        ".{:016x}.tmp",
        RandomState::new().hash_one(std::process::id())
    ));
    temp
}

/// Whether `candidate` is one of `name`'s temp-file names.
pub fn is_temp_name(name: &OsStr, candidate: &OsStr) -> bool {
    let (name, candidate) = (name.as_bytes(), candidate.as_bytes());
    let Some(rest) = candidate
        .strip_prefix(b".")
        .and_then(|c| c.strip_prefix(name))
        .and_then(|c| c.strip_prefix(b"."))
        .and_then(|c| c.strip_suffix(b".tmp"))
    else {
        return false;
    };
    rest.len() == 16 && rest.iter().all(u8::is_ascii_hexdigit)
}

/// Remove temp files of lock `name` left by a process killed between
/// creating and removing them (SPEC 7): a creator flocks its temp file
/// before it does anything with it and for as long as it lives, and makes
/// sure, once it holds the flock, that the name is still its file (see
/// `create_via_named_temp`). So one that nobody flocks has lost its
/// creator, empty or not, and is removed at once, with no need of /proc to
/// ask whether the creator lives. One that the lock name also links
/// (killed after linking) is left to the stale-lock takeover.
pub fn clean_leftover_temps(dir: &LockDir, name: &OsStr) {
    let Ok(names) = dir.names() else { return };
    for candidate in names.iter().filter(|c| is_temp_name(name, c)) {
        let Ok(file) = dir.open_file(candidate, OFlag::O_RDONLY | OFlag::O_NONBLOCK, 0) else {
            continue;
        };
        let Ok(meta) = file.metadata() else { continue };
        if !meta.is_file() || file.try_lock().is_err() {
            continue;
        }
        let same = |stat: Option<crate::sys::Stat>| {
            stat.is_some_and(|s| super::dir::ident(&s) == (meta.dev(), meta.ino()))
        };
        // Under our flock: the name still names what we locked, and the
        // lock name does not.
        if same(dir.stat(candidate).ok().flatten()) && !same(dir.stat(name).ok().flatten()) {
            let _ = dir.unlink(candidate);
        }
    }
}

/// A temp file with an unpredictable name next to the lock; removed on every path.
struct TempName<'a> {
    dir: &'a LockDir,
    name: OsString,
}

impl Drop for TempName<'_> {
    fn drop(&mut self) {
        let _ = self.dir.unlink(&self.name);
    }
}

fn create_via_named_temp(
    dir: LockDir,
    path: &Path,
    content: &[u8],
    shared: bool,
) -> io::Result<Created> {
    let name = lock_name(path)?;
    let outcome = {
        let (file, temp) = loop {
            let candidate = temp_name(name);
            let file = match dir.open_file(
                &candidate,
                OFlag::O_RDWR | OFlag::O_CREAT | OFlag::O_EXCL,
                MODE,
            ) {
                Ok(file) => file,
                Err(err) if err.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(err) => return Err(err),
            };
            let temp = TempName {
                dir: &dir,
                name: candidate,
            };
            // Blocking, in the mode it keeps (no conversion that would let
            // go for a moment): a `clean_leftover_temps` elsewhere may hold
            // it, having found it unflocked; it removes it before it lets
            // go, and then this one is not ours any more: another name.
            if shared {
                file.lock_shared()?;
            } else {
                file.lock()?;
            }
            let ours = file.metadata()?;
            match dir.stat(&temp.name)? {
                Some(stat) if super::dir::ident(&stat) == (ours.dev(), ours.ino()) => {
                    break (file, temp);
                }
                // Removed by a cleaner: the name is not ours to unlink.
                _ => std::mem::forget(temp),
            }
        };
        prepare(&file, content, shared)?;
        let linked = dir.link(&temp.name, name);
        drop(temp);
        match linked {
            Ok(()) => Ok(Some(file)),
            Err(Errno::EEXIST) => Ok(None),
            Err(Errno::EPERM | Errno::EOPNOTSUPP) => Err(None),
            Err(err) => Err(Some(io::Error::from(err))),
        }
    };
    match outcome {
        Ok(Some(file)) => Held::new(path, dir, file, shared).map(Created::Taken),
        Ok(None) => Ok(Created::Exists(dir)),
        Err(None) => create_exclusive(dir, path, content, shared),
        Err(Some(err)) => Err(err),
    }
}

/// The fallback where link(2) is unsupported: O_CREAT|O_EXCL, lock, write.
fn create_exclusive(
    dir: LockDir,
    path: &Path,
    content: &[u8],
    shared: bool,
) -> io::Result<Created> {
    let name = lock_name(path)?;
    match dir.open_file(name, OFlag::O_RDWR | OFlag::O_CREAT | OFlag::O_EXCL, MODE) {
        Ok(file) => {
            if let Err(err) = prepare(&file, content, shared) {
                let _ = dir.unlink(name);
                return Err(err);
            }
            Held::new(path, dir, file, shared).map(Created::Taken)
        }
        Err(err) if err.kind() == io::ErrorKind::AlreadyExists => Ok(Created::Exists(dir)),
        Err(err) => Err(err),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temp_names_are_recognised_and_nothing_else() {
        let name = OsStr::new("updates.lock");
        let temp = temp_name(name);
        assert!(is_temp_name(name, &temp), "{temp:?}");
        for other in [
            "updates.lock",
            ".updates.lock.tmp",
            ".updates.lock.0123456789abcdeg.tmp",
            ".updates.lock.0123456789abcdef.tmpx",
            ".other.lock.0123456789abcdef.tmp",
            ".updates.lock.0123456789abcdef0.tmp",
        ] {
            assert!(!is_temp_name(name, OsStr::new(other)), "{other}");
        }
    }
}
