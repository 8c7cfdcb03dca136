//! Making a lock file appear atomically with its content, already flocked:
//! an O_TMPFILE (or a named temp file) is written and flocked, then link(2)ed
//! into place, where EEXIST means busy. Where link(2) is not supported the
//! fallback is O_CREAT|O_EXCL, then lock and write. No temp file survives.

use std::collections::hash_map::RandomState;
use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::hash::BuildHasher;
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::AtFlags;
use nix::unistd::linkat;

use super::Held;

/// Lock files are world-readable so the supervisor and `status` can read them.
pub const MODE: u32 = 0o644;

pub enum Created {
    Taken(Held),
    /// Something already exists at the path.
    Exists,
}

/// Create `path` with `content`, flocked, or report that it exists.
pub fn create(path: &Path, content: &[u8]) -> io::Result<Created> {
    let dir = parent_of(path);
    match open_tmpfile(dir) {
        Ok(file) => {
            prepare(&file, content)?;
            match link_unnamed(&file, path) {
                Ok(()) => return Held::new(path, file).map(Created::Taken),
                Err(Errno::EEXIST) => return Ok(Created::Exists),
                // No /proc to name the unnamed file by: use a named one.
                Err(Errno::ENOENT) if !Path::new("/proc/self/fd").exists() => {}
                Err(Errno::EPERM | Errno::EOPNOTSUPP | Errno::ENOSYS) => {
                    return create_exclusive(path, content);
                }
                Err(err) => return Err(err.into()),
            }
        }
        Err(err) if !tmpfile_unsupported(&err) => return Err(err),
        Err(_) => {}
    }
    create_via_named_temp(path, dir, content)
}

/// An O_TMPFILE in `path`'s directory, mode 0644 and flocked, but neither
/// written nor linked yet: `acquire` makes these before it forks its keeper,
/// which so holds them from birth (see `cmd::acquire`). Errors only mean
/// this way is not open; `create` then reports them properly.
pub fn prepare_tmpfile(path: &Path) -> io::Result<File> {
    let file = open_tmpfile(parent_of(path))?;
    set_mode_and_lock(&file)?;
    Ok(file)
}

/// Write `content` into a file from `prepare_tmpfile` and link it at `path`.
pub fn link_prepared(path: &Path, file: File, content: &[u8]) -> io::Result<Created> {
    (&file).write_all(content)?;
    match link_unnamed(&file, path) {
        Ok(()) => Held::new(path, file).map(Created::Taken),
        Err(Errno::EEXIST) => Ok(Created::Exists),
        Err(err) => Err(err.into()),
    }
}

/// Give an O_TMPFILE the name `path`, through /proc/self/fd (linkat with
/// AT_EMPTY_PATH would need CAP_DAC_READ_SEARCH).
fn link_unnamed(file: &File, path: &Path) -> nix::Result<()> {
    let proc_path = format!("/proc/self/fd/{}", file.as_raw_fd());
    linkat(
        nix::fcntl::AT_FDCWD,
        proc_path.as_str(),
        nix::fcntl::AT_FDCWD,
        path,
        AtFlags::AT_SYMLINK_FOLLOW,
    )
}

/// The directory a lock path lives in ("." for a bare name).
pub fn parent_of(path: &Path) -> &Path {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    }
}

fn open_tmpfile(dir: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .mode(MODE)
        .custom_flags(libc::O_TMPFILE)
        .open(dir)
}

/// O_TMPFILE is refused by some file systems and old kernels with these.
fn tmpfile_unsupported(err: &io::Error) -> bool {
    matches!(
        err.raw_os_error(),
        Some(libc::EOPNOTSUPP | libc::EISDIR | libc::EINVAL)
    )
}

/// Write the record, set the mode regardless of umask, take the flock.
fn prepare(file: &File, content: &[u8]) -> io::Result<()> {
    set_mode_and_lock(file)?;
    (&*file).write_all(content)
}

/// Set the mode regardless of umask and take the flock of a new file.
fn set_mode_and_lock(file: &File) -> io::Result<()> {
    file.set_permissions(fs::Permissions::from_mode(MODE))?;
    // A fresh inode nobody else can name yet: the lock cannot be busy.
    file.try_lock().map_err(io::Error::from)
}

/// A temp file with an unpredictable name next to the lock; removed on every path.
struct TempName(PathBuf);

impl Drop for TempName {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}

fn create_via_named_temp(path: &Path, dir: &Path, content: &[u8]) -> io::Result<Created> {
    let (file, temp) = loop {
        let mut name = OsString::from(".");
        name.push(path.file_name().unwrap_or_default());
        name.push(format!(
            ".{:016x}.tmp",
            RandomState::new().hash_one(std::process::id())
        ));
        let candidate = dir.join(name);
        match OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(MODE)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&candidate)
        {
            Ok(file) => break (file, TempName(candidate)),
            Err(err) if err.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(err) => return Err(err),
        }
    };
    prepare(&file, content)?;
    match fs::hard_link(&temp.0, path) {
        Ok(()) => Held::new(path, file).map(Created::Taken),
        Err(err) if err.kind() == io::ErrorKind::AlreadyExists => Ok(Created::Exists),
        Err(err) if matches!(err.raw_os_error(), Some(libc::EPERM | libc::EOPNOTSUPP)) => {
            drop(temp);
            create_exclusive(path, content)
        }
        Err(err) => Err(err),
    }
}

/// The fallback where link(2) is unsupported: O_CREAT|O_EXCL, lock, write.
fn create_exclusive(path: &Path, content: &[u8]) -> io::Result<Created> {
    match OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(MODE)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
    {
        Ok(file) => {
            if let Err(err) = prepare(&file, content) {
                let _ = fs::remove_file(path);
                return Err(err);
            }
            Held::new(path, file).map(Created::Taken)
        }
        Err(err) if err.kind() == io::ErrorKind::AlreadyExists => Ok(Created::Exists),
        Err(err) => Err(err),
    }
}
