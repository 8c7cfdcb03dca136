//! The lock's directory, opened once (SPEC section 2): without following a
//! symlink at its last component, or resolved inside `--root` as a
//! container's root would be. Every create, link, stat and unlink of the
//! lock then happens relative to that descriptor (`*at()` calls), so nothing
//! swapped in under the path afterwards sends resin-lock's writes or unlinks
//! elsewhere.

use std::ffi::{OsStr, OsString};
use std::fs::{self, File};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Component, Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::Mode;

use crate::sys::Stat;
use nix::unistd::UnlinkatFlags;

/// A lock path, whether its missing parent directory may be created
/// (detected paths) or is an error (`--path`), and the `--root` it must be
/// resolved in (detected paths under `--root`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub path: PathBuf,
    pub create_parent: bool,
    pub root: Option<PathBuf>,
}

/// The identity of a file: (st_dev, st_ino).
pub type Ident = (u64, u64);

/// The identity of what `stat` describes.
pub fn ident(stat: &Stat) -> Ident {
    (stat.st_dev, stat.st_ino)
}

/// What releasing a lock found at its path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Released {
    Removed,
    /// The path names another file now (e.g. the supervisor forced an update
    /// and created its own lock): left alone.
    Replaced,
    /// Someone removed the file already.
    Gone,
    /// A shared lock that other holders still hold: left to them.
    Left,
}

/// An open lock directory.
#[derive(Debug)]
pub struct LockDir {
    fd: OwnedFd,
}

/// The file name of a lock path, or an error that says why there is none.
pub fn lock_name(path: &Path) -> io::Result<&OsStr> {
    match path.components().next_back() {
        Some(Component::Normal(name)) => Ok(name),
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "the lock path does not end in a file name",
        )),
    }
}

/// The directory a lock path lives in ("." for a bare name).
pub fn parent_of(path: &Path) -> &Path {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    }
}

const DIR_FLAGS: OFlag = OFlag::O_PATH
    .union(OFlag::O_DIRECTORY)
    .union(OFlag::O_NOFOLLOW)
    .union(OFlag::O_CLOEXEC);

impl LockDir {
    /// Open the directory of `target`, creating it first (0755) when the
    /// target allows it (detected paths).
    pub fn open(target: &Target) -> io::Result<LockDir> {
        let dir = parent_of(&target.path);
        let fd = match &target.root {
            Some(root) => open_in_root(root, dir, target.create_parent)?,
            None => {
                if target.create_parent && !dir.is_dir() {
                    fs::DirBuilder::new()
                        .recursive(true)
                        .mode(0o755)
                        .create(dir)?;
                }
                nix::fcntl::open(dir, DIR_FLAGS, Mode::empty()).map_err(|err| {
                    match err {
                        // O_NOFOLLOW|O_PATH on a symlink fails with ENOTDIR
                        // (O_DIRECTORY); say what it is.
                        Errno::ENOTDIR | Errno::ELOOP if is_symlink(dir) => symlink_error(dir),
                        err => io::Error::from(err),
                    }
                })?
            }
        };
        Ok(LockDir { fd })
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Adopt a directory descriptor received from another process.
    pub fn from_fd(fd: OwnedFd) -> LockDir {
        LockDir { fd }
    }

    /// lstat(2) of `name` in the directory; None when it does not exist.
    pub fn stat(&self, name: &OsStr) -> io::Result<Option<Stat>> {
        crate::sys::stat_at(self.fd.as_fd(), name)
    }

    /// Open `name` with `flags` (always O_NOFOLLOW and O_CLOEXEC).
    pub fn open_file(&self, name: &OsStr, flags: OFlag, mode: u32) -> io::Result<File> {
        let fd = nix::fcntl::openat(
            &self.fd,
            name,
            flags | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(mode),
        )?;
        Ok(File::from(fd))
    }

    /// An unnamed file (O_TMPFILE) in the directory.
    pub fn tmpfile(&self, mode: u32) -> io::Result<File> {
        let fd = nix::fcntl::openat(
            &self.fd,
            ".",
            OFlag::O_TMPFILE | OFlag::O_RDWR | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(mode),
        )?;
        Ok(File::from(fd))
    }

    /// Give an O_TMPFILE the name `name`, through /proc/self/fd (linkat with
    /// AT_EMPTY_PATH would need CAP_DAC_READ_SEARCH).
    pub fn link_unnamed(&self, file: &File, name: &OsStr) -> nix::Result<()> {
        let proc_path = format!("/proc/self/fd/{}", file.as_raw_fd());
        nix::unistd::linkat(
            nix::fcntl::AT_FDCWD,
            proc_path.as_str(),
            &self.fd,
            name,
            AtFlags::AT_SYMLINK_FOLLOW,
        )
    }

    /// link(2) `from` to `to`, both in the directory.
    pub fn link(&self, from: &OsStr, to: &OsStr) -> nix::Result<()> {
        nix::unistd::linkat(&self.fd, from, &self.fd, to, AtFlags::empty())
    }

    pub fn unlink(&self, name: &OsStr) -> io::Result<()> {
        nix::unistd::unlinkat(&self.fd, name, UnlinkatFlags::NoRemoveDir).map_err(Into::into)
    }

    pub fn rmdir(&self, name: &OsStr) -> io::Result<()> {
        nix::unistd::unlinkat(&self.fd, name, UnlinkatFlags::RemoveDir).map_err(Into::into)
    }

    /// The names in the directory (for cleaning up leftover temp files).
    pub fn names(&self) -> io::Result<Vec<OsString>> {
        let fd = nix::fcntl::openat(
            &self.fd,
            ".",
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )?;
        let mut dir = nix::dir::Dir::from_fd(fd)?;
        Ok(dir
            .iter()
            .filter_map(Result::ok)
            .map(|entry| OsStr::from_bytes(entry.file_name().to_bytes()).to_owned())
            .collect())
    }
}

fn is_symlink(path: &Path) -> bool {
    fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink())
}

fn symlink_error(dir: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        format!(
            "{} is a symlink, not a directory (not followed)",
            dir.display()
        ),
    )
}

/// Open `dir` (a path under `root`) inside `root`: with openat2's
/// RESOLVE_IN_ROOT where the kernel has it, otherwise component by
/// component, refusing any symlink below `root`. Missing directories are
/// created (0755) when `create` is set.
fn open_in_root(root: &Path, dir: &Path, create: bool) -> io::Result<OwnedFd> {
    let rel = dir.strip_prefix(root).unwrap_or(dir);
    let root_fd = nix::fcntl::open(
        root,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?;
    if !create {
        match open_resolved_in_root(&root_fd, rel) {
            Err(Errno::ENOSYS) => {}
            other => return other.map_err(Into::into),
        }
    }
    let mut fd = root_fd;
    let mut walked = root.to_owned();
    for component in rel.components() {
        let name = match component {
            Component::Normal(name) => name,
            Component::CurDir | Component::RootDir => continue,
            Component::ParentDir | Component::Prefix(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("{}: `..` is not allowed under --root", dir.display()),
                ));
            }
        };
        walked.push(name);
        if create {
            match nix::sys::stat::mkdirat(&fd, name, Mode::from_bits_truncate(0o755)) {
                Ok(()) | Err(Errno::EEXIST) => {}
                Err(err) => return Err(err.into()),
            }
        }
        fd = match nix::fcntl::openat(&fd, name, DIR_FLAGS, Mode::empty()) {
            Ok(next) => next,
            Err(Errno::ENOTDIR | Errno::ELOOP) if is_symlink(&walked) => {
                return Err(symlink_error(&walked));
            }
            Err(err) => return Err(err.into()),
        };
    }
    Ok(fd)
}

fn open_resolved_in_root(root: &OwnedFd, rel: &Path) -> nix::Result<OwnedFd> {
    use nix::fcntl::{OpenHow, ResolveFlag};
    let rel = if rel.as_os_str().is_empty() {
        Path::new(".")
    } else {
        rel
    };
    let how = OpenHow::new()
        .flags(DIR_FLAGS)
        .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
    nix::fcntl::openat2(root, rel, how)
}

/// Unlink `name` in `dir` only if it names `ident`.
pub fn unlink_if_same(dir: &LockDir, name: &OsStr, ident: Ident) -> io::Result<Released> {
    match dir.stat(name)? {
        Some(stat) if self::ident(&stat) == ident => match dir.unlink(name) {
            Ok(()) => Ok(Released::Removed),
            Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(Released::Gone),
            Err(err) => Err(err),
        },
        Some(_) => Ok(Released::Replaced),
        None => Ok(Released::Gone),
    }
}

/// Whether `name` in `dir` names the file `ident` now.
pub fn names_in(dir: &LockDir, name: &OsStr, ident: Ident) -> bool {
    dir.stat(name)
        .is_ok_and(|stat| stat.is_some_and(|s| self::ident(&s) == ident))
}

/// Whether `target`'s path names the file `ident` now (never creating its
/// directory).
pub fn names(target: &Target, ident: Ident) -> bool {
    let Ok(name) = lock_name(&target.path) else {
        return false;
    };
    LockDir::open(&Target {
        create_parent: false,
        ..target.clone()
    })
    .and_then(|dir| dir.stat(name))
    .is_ok_and(|stat| stat.is_some_and(|s| self::ident(&s) == ident))
}
