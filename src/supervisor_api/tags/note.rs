//! What was last sent for a device tag, noted in a small file beside each
//! lock (`<dir>/update-lock.<service>.tag`, one line of JSON), which
//! `status` reads: the record is written once, and the tag's life goes on
//! after it.
//!
//! The lock directory is world-writable on devices, so a note is written
//! as the lock is (SPEC 2): through the lock directory's descriptor, never
//! following a symlink, into a new file (O_EXCL, a name nobody can guess)
//! renamed into place. Nothing another user puts there, or puts in place of
//! the directory, sends root's write elsewhere. What is read back is
//! untrusted: bounded, and escaped to print.

use std::collections::hash_map::RandomState;
use std::fs::File;
use std::hash::BuildHasher as _;
use std::io::{Read as _, Write as _};
use std::os::fd::{AsFd, BorrowedFd};
use std::path::Path;

use nix::fcntl::OFlag;
use nix::sys::stat::Mode;
use serde::{Deserialize, Serialize};

/// The most bytes of a note that are read.
const MAX_NOTE: u64 = 4096;

/// What was last sent (or read back) for a tag, noted beside the lock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Sent {
    pub(crate) key: String,
    pub(crate) value: String,
    /// When it was sent, RFC 3339 UTC.
    pub(crate) at: String,
    /// `accepted (HTTP 202)`, or why not; or, for a value read back from
    /// the supervisor rather than sent, where it was read.
    pub(crate) result: String,
}

/// The note's file name for `key` (a key keeps only `[A-Za-z0-9._-]`, so
/// the name is one component).
fn file_name(key: &str) -> String {
    format!("{key}.tag")
}

/// Note `sent` in every directory of `dirs` (lock directory descriptors).
/// Best effort: a note that cannot be written is not written, and no temp
/// file is left behind.
pub(crate) fn write(dirs: &[BorrowedFd<'_>], sent: &Sent) {
    let Ok(mut line) = serde_json::to_string(sent) else {
        return;
    };
    line.push('\n');
    let name = file_name(&sent.key);
    for dir in dirs {
        let tmp = format!(
            ".{name}.{:016x}.tmp",
            RandomState::new().hash_one(std::process::id())
        );
        let created = nix::fcntl::openat(
            dir,
            tmp.as_str(),
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(0o644),
        );
        let Ok(fd) = created else {
            continue;
        };
        let written = File::from(fd).write_all(line.as_bytes()).is_ok();
        if !written || nix::fcntl::renameat(dir, tmp.as_str(), dir, name.as_str()).is_err() {
            let _ =
                nix::unistd::unlinkat(dir, tmp.as_str(), nix::unistd::UnlinkatFlags::NoRemoveDir);
        }
    }
}

/// What was last noted for `key` in the directory `dir`.
pub(crate) fn read_in(dir: BorrowedFd<'_>, key: &str) -> Option<Sent> {
    let fd = nix::fcntl::openat(
        dir,
        file_name(key).as_str(),
        OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .ok()?;
    parse(File::from(fd))
}

/// What was last noted for `key` beside the lock at `lock` (for `status`,
/// which shows it; the directory is not followed if it is a symlink).
pub(crate) fn read(lock: &Path, key: &str) -> Option<Sent> {
    let dir = open_dir(lock)?;
    read_in(dir.as_fd(), key)
}

/// Every note beside `lock` (for `status --host`), by key.
pub(crate) fn read_all(lock: &Path) -> Vec<Sent> {
    let Some(dir) = open_dir(lock) else {
        return Vec::new();
    };
    let Ok(entries) = nix::dir::Dir::openat(
        &dir,
        ".",
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    ) else {
        return Vec::new();
    };
    let mut found: Vec<Sent> = entries
        .into_iter()
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let name = entry.file_name().to_str().ok()?.to_owned();
            let key = name.strip_suffix(".tag")?;
            key.starts_with("update-lock.")
                .then(|| read_in(dir.as_fd(), key))?
        })
        .collect();
    found.sort_by(|a, b| a.key.cmp(&b.key));
    found
}

/// The directory of `lock`, not followed if it is a symlink.
fn open_dir(lock: &Path) -> Option<std::os::fd::OwnedFd> {
    let dir = match lock.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    nix::fcntl::open(
        dir,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .ok()
}

/// A note as read: a regular file, at most `MAX_NOTE` bytes of JSON.
fn parse(file: File) -> Option<Sent> {
    if !file.metadata().ok()?.is_file() {
        return None;
    }
    let mut text = Vec::new();
    file.take(MAX_NOTE).read_to_end(&mut text).ok()?;
    serde_json::from_slice(&text).ok()
}
