//! The one line a failure to create or remove a lock becomes: what failed,
//! where, and the exit status it maps to (SPEC section 4: 73, or 71 for
//! resource exhaustion).

use std::io;
use std::path::Path;

use super::dir::parent_of;
use crate::exit::{Exit, fail};

/// Map a failure to create the lock to exit 73 (or 71 for resource
/// exhaustion), naming the path and, where it helps, the directory.
pub fn create_error(path: &Path, err: io::Error) -> anyhow::Error {
    lock_error("create", path, err)
}

/// `create_error` for another verb ("release").
pub fn lock_error(verb: &str, path: &Path, err: io::Error) -> anyhow::Error {
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

pub fn inspect_error(path: &Path, err: io::Error) -> anyhow::Error {
    anyhow::Error::new(err).context(format!("cannot read lock {}", path.display()))
}
