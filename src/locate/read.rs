//! Reading the files detection looks at (`os-release`, `/tmp/balena`) under
//! `--root` as a container's root would resolve them: openat2
//! (RESOLVE_IN_ROOT) where the kernel has it (Linux 5.6), else refusing a
//! symlink in any component below the root. Only regular files are read,
//! without blocking and bounded.

use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{OFlag, OpenHow, ResolveFlag, open, openat, openat2};
use nix::sys::stat::{Mode, SFlag, fstat};

/// The most of `os-release` that is read.
const OS_RELEASE_MAX: u64 = 64 * 1024;

/// `path` under `root` as text, when it is a regular file; None when it
/// cannot be read or is anything else (a FIFO, a device, a directory).
pub(super) fn read_small(root: &Path, path: &Path) -> Option<String> {
    let flags = OFlag::O_RDONLY | OFlag::O_NONBLOCK | OFlag::O_NOCTTY;
    let fd = open_under(root, path, flags).ok()?;
    let kind = SFlag::from_bits_truncate(fstat(fd.as_fd()).ok()?.st_mode) & SFlag::S_IFMT;
    if kind != SFlag::S_IFREG {
        return None;
    }
    let mut bytes = Vec::new();
    File::from(fd)
        .take(OS_RELEASE_MAX)
        .read_to_end(&mut bytes)
        .ok()?;
    Some(String::from_utf8_lossy(&bytes).into_owned())
}

/// Whether `path` under `root` is a directory.
pub(super) fn is_dir(root: &Path, path: &Path) -> bool {
    open_under(root, path, OFlag::O_PATH | OFlag::O_DIRECTORY)
        .and_then(|fd| Ok(fstat(fd.as_fd())?))
        .is_ok_and(|stat| SFlag::from_bits_truncate(stat.st_mode) & SFlag::S_IFMT == SFlag::S_IFDIR)
}

/// Whether `dir` is a directory mounted over its parent's file system
/// (another device than its parent's), as the supervisor's bind mount of a
/// lock directory is.
pub(super) fn is_mount_point(dir: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let (Ok(meta), Some(parent)) = (std::fs::metadata(dir), dir.parent()) else {
        return false;
    };
    meta.is_dir() && std::fs::metadata(parent).is_ok_and(|up| up.dev() != meta.dev())
}

/// Open the absolute `path` as seen from `root`. Under the real root `/`
/// this is a plain open. Under any other root, symlinks resolve inside it
/// (openat2 with RESOLVE_IN_ROOT: an absolute link `/x` means `ROOT/x`);
/// where the kernel (before 5.6) or a seccomp filter lacks openat2, every
/// component below `root` must not be a symlink.
fn open_under(root: &Path, path: &Path, flags: OFlag) -> io::Result<OwnedFd> {
    let flags = flags | OFlag::O_CLOEXEC;
    if root == Path::new("/") {
        return Ok(open(path, flags, Mode::empty())?);
    }
    let rel = relative(path)?;
    let dir = open(
        root,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?;
    let how = OpenHow::new()
        .flags(flags)
        .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
    match openat2(dir.as_fd(), &rel, how) {
        Err(Errno::ENOSYS | Errno::EPERM) => open_without_symlinks(&dir, &rel, flags),
        other => Ok(other?),
    }
}

/// `path` without its leading `/`; `..` is refused (nothing detection
/// reads has one, and under a root it could climb out of it).
pub(super) fn relative(path: &Path) -> io::Result<PathBuf> {
    let mut rel = PathBuf::new();
    for component in path.components() {
        match component {
            Component::RootDir | Component::CurDir => {}
            Component::Normal(name) => rel.push(name),
            Component::ParentDir | Component::Prefix(_) => {
                return Err(io::Error::from_raw_os_error(libc::EXDEV));
            }
        }
    }
    Ok(rel)
}

/// The fallback of `open_under`: `rel` one component at a time from `dir`,
/// each opened with O_NOFOLLOW, so that a symlink anywhere fails (ELOOP, or
/// ENOTDIR for a directory component) instead of being followed.
pub(super) fn open_without_symlinks(
    dir: &OwnedFd,
    rel: &Path,
    flags: OFlag,
) -> io::Result<OwnedFd> {
    let names: Vec<_> = rel.components().map(|c| c.as_os_str()).collect();
    let Some((last, parents)) = names.split_last() else {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    };
    let mut current: Option<OwnedFd> = None;
    for name in parents {
        let at = current.as_ref().unwrap_or(dir).as_fd();
        let next = openat(
            at,
            *name,
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )?;
        // O_PATH|O_NOFOLLOW opens a symlink itself rather than failing.
        let kind = SFlag::from_bits_truncate(fstat(next.as_fd())?.st_mode) & SFlag::S_IFMT;
        if kind != SFlag::S_IFDIR {
            return Err(io::Error::from_raw_os_error(libc::ELOOP));
        }
        current = Some(next);
    }
    let at = current.as_ref().unwrap_or(dir).as_fd();
    let fd = openat(at, *last, flags | OFlag::O_NOFOLLOW, Mode::empty())?;
    if SFlag::from_bits_truncate(fstat(fd.as_fd())?.st_mode) & SFlag::S_IFMT == SFlag::S_IFLNK {
        return Err(io::Error::from_raw_os_error(libc::ELOOP));
    }
    Ok(fd)
}
