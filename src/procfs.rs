//! Readers of `/proc`: small files read in one go, and what the lock
//! protocol learns there (boot id, pid namespace, who holds an inode, a
//! process's command line, uid and children, keepers whose file was
//! removed). No unsafe code: that stays in `sys.rs`.

use std::fs;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use nix::unistd::Pid;

use crate::sys::KEEPER_NAME;

/// A small /proc file. /proc reports a size of 0, so std's `fs::read`
/// would find its length by reading 32 bytes, then 32, then 64...; and a
/// `File`'s `read_to_end` asks for the size and position first. Read
/// through `take` (which has no such hint) into a page-sized buffer that is
/// never zeroed: one read, and the one that sees the end. (Zeroing the
/// buffer for every ancestor was a tenth of an `acquire`'s instructions.)
pub fn read_proc(path: impl AsRef<Path>) -> io::Result<Vec<u8>> {
    use std::io::Read;
    let mut bytes = Vec::with_capacity(4096);
    fs::File::open(path)?
        .take(u64::MAX)
        .read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// The current boot's id (`/proc/sys/kernel/random/boot_id`).
pub fn boot_id() -> io::Result<String> {
    let bytes = read_proc("/proc/sys/kernel/random/boot_id")?;
    Ok(String::from_utf8_lossy(&bytes).trim().to_owned())
}

/// The inode number of this process's pid namespace, to tell whether a
/// record's pid means anything here.
pub fn pid_namespace() -> io::Result<u64> {
    Ok(fs::metadata("/proc/self/ns/pid")?.ino())
}

/// Whether a tracer (`strace`, `ltrace`, a debugger) is attached to this
/// process (`TracerPid` in /proc/self/status). False without /proc.
pub fn traced() -> bool {
    read_proc("/proc/self/status").is_ok_and(|status| {
        String::from_utf8_lossy(&status)
            .lines()
            .find_map(|line| line.strip_prefix("TracerPid:"))
            .is_some_and(|pid| pid.trim() != "0")
    })
}

/// Whether /proc is mounted (a minimal container may have none).
pub fn proc_mounted() -> bool {
    Path::new("/proc/self/fd").exists()
}

/// The effective uid of process `pid` (the owner of /proc/PID).
pub fn process_uid(pid: Pid) -> io::Result<u32> {
    let status = read_proc(format!("/proc/{}/status", pid.as_raw()))?;
    String::from_utf8_lossy(&status)
        .lines()
        .find_map(|line| line.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_ascii_whitespace().nth(1)?.parse().ok())
        .ok_or_else(|| io::Error::other("no Uid line"))
}

/// Whether process `pid` has a descriptor open on the inode (dev, ino): the
/// proof that it is the keeper of a lock, whatever its pid was reused for.
/// `hint`: the descriptor to look at first (from the record).
pub fn process_holds_inode(pid: Pid, dev: u64, ino: u64, hint: Option<i32>) -> io::Result<bool> {
    let dir = Path::new("/proc").join(pid.as_raw().to_string()).join("fd");
    if let Some(fd) = hint
        && fs::metadata(dir.join(fd.to_string())).is_ok_and(|m| (m.dev(), m.ino()) == (dev, ino))
    {
        return Ok(true);
    }
    for entry in fs::read_dir(dir)? {
        let Ok(entry) = entry else { continue };
        if let Ok(meta) = fs::metadata(entry.path())
            && meta.dev() == dev
            && meta.ino() == ino
        {
            return Ok(true);
        }
    }
    Ok(false)
}

/// The command line of process `pid`, for messages.
pub fn process_cmdline(pid: Pid) -> Vec<String> {
    read_proc(format!("/proc/{}/cmdline", pid.as_raw()))
        .map(|bytes| {
            bytes
                .split(|b| *b == 0)
                .filter(|arg| !arg.is_empty())
                .map(|arg| String::from_utf8_lossy(arg).into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Our children that are still running (not zombies), e.g. orphans of
/// `run`'s command adopted as subreaper or PID 1. Empty without /proc.
pub fn live_children() -> Vec<Pid> {
    let me = std::process::id();
    // Where the kernel lists each task's children (CONFIG_PROC_CHILDREN;
    // resin-lock has one task: one small read) …
    let listed = fs::read_dir(format!("/proc/{me}/task")).and_then(|tasks| {
        let mut pids = Vec::new();
        for task in tasks {
            let bytes = read_proc(task?.path().join("children"))?;
            pids.extend(
                String::from_utf8_lossy(&bytes)
                    .split_whitespace()
                    .filter_map(|pid| pid.parse::<i32>().ok()),
            );
        }
        Ok(pids)
    });
    let candidates = match listed {
        Ok(pids) => pids,
        // … else every process's parent.
        Err(_) => match fs::read_dir("/proc") {
            Ok(procs) => procs
                .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse().ok())
                .collect(),
            Err(_) => return Vec::new(),
        },
    };
    let me = i32::try_from(me).unwrap_or(0);
    let mut live: Vec<Pid> = candidates
        .into_iter()
        .filter(|&pid| {
            read_proc(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|stat| parse_stat(&stat))
                .is_some_and(|(state, ppid)| ppid == me && state != b'Z' && state != b'X')
        })
        .map(Pid::from_raw)
        .collect();
    live.sort_unstable();
    live
}

/// The state letter and the parent pid in a `/proc/PID/stat` line. The
/// command name in parentheses may hold anything, spaces and ')' included:
/// the fields start after its last ')'.
fn parse_stat(stat: &[u8]) -> Option<(u8, i32)> {
    let fields = stat_fields(stat)?;
    let state = *fields.first()?.as_bytes().first()?;
    let ppid = fields.get(1)?.parse().ok()?;
    Some((state, ppid))
}

/// The fields of a `/proc/PID/stat` line after the command name, from the
/// state (field 3) on. The name in parentheses may hold anything, spaces
/// and ')' included: the fields start after its last ')'.
pub fn stat_fields(stat: &[u8]) -> Option<Vec<&str>> {
    let close = stat.iter().rposition(|&b| b == b')')?;
    let rest = std::str::from_utf8(&stat[close + 1..]).ok()?;
    // The 50 fields after the name (Linux 3.5+) fit at once: no regrowing.
    let mut fields = Vec::with_capacity(52);
    fields.extend(rest.split_ascii_whitespace());
    Some(fields)
}

/// Keeper processes holding a lock file in `dir` that is no longer linked
/// anywhere (keepers whose lock someone else removed or replaced), each
/// with the /proc path of that descriptor. Only candidates: anyone can name
/// a process `resin-lock-keep`; the caller proves the rest. `dir` must be
/// canonical, as /proc shows paths.
pub fn displaced_keepers(dir: &Path) -> Vec<(Pid, std::path::PathBuf)> {
    let me = std::process::id().to_string();
    let Ok(procs) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    procs
        .filter_map(|entry| {
            let name = entry.ok()?.file_name();
            let name = name.to_str()?;
            if name == me || !name.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            let comm = read_proc(format!("/proc/{name}/comm")).ok()?;
            if comm.trim_ascii_end() != KEEPER_NAME.to_bytes() {
                return None;
            }
            let fd = fs::read_dir(format!("/proc/{name}/fd"))
                .ok()?
                .filter_map(|fd| fd.ok())
                .find(|fd| {
                    let deleted_here = fs::read_link(fd.path()).is_ok_and(|target| {
                        target.parent() == Some(dir)
                            && target.as_os_str().as_bytes().ends_with(b" (deleted)")
                    });
                    deleted_here && fs::metadata(fd.path()).is_ok_and(|m| m.nlink() == 0)
                })?;
            Some((Pid::from_raw(name.parse().ok()?), fd.path()))
        })
        .collect()
}

/// The path the kernel gives an open descriptor (a lock directory's
/// canonical path), through /proc.
pub fn fd_path(fd: std::os::fd::BorrowedFd<'_>) -> Option<std::path::PathBuf> {
    fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd())).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn stat_lines_give_state_and_parent_whatever_the_name() {
        assert_eq!(parse_stat(b"42 (sleep) S 7 42 42 0"), Some((b'S', 7)));
        assert_eq!(
            parse_stat(b"42 (a) Z 9 (b) S 7 42 42 0"),
            Some((b'S', 7)),
            "the fields start after the last ')'"
        );
        assert_eq!(parse_stat(b"42 (x) R"), None);
        assert_eq!(parse_stat(b"garbage"), None);
        assert_eq!(parse_stat(b""), None);
    }

    #[test]
    fn live_children_lists_running_children_only() {
        let mut child = std::process::Command::new("sleep")
            .arg("1000")
            .spawn()
            .unwrap();
        let pid = Pid::from_raw(child.id() as i32);
        assert!(live_children().contains(&pid));
        child.kill().unwrap();
        // A zombie until reaped: not running any more.
        let zombie = || {
            read_proc(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|stat| parse_stat(&stat))
                .is_some_and(|(state, _)| state == b'Z')
        };
        let start = std::time::Instant::now();
        while !zombie() {
            assert!(start.elapsed() < Duration::from_secs(60), "never a zombie");
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(!live_children().contains(&pid));
        child.wait().unwrap();
        assert!(!live_children().contains(&pid));
    }

    #[test]
    fn holding_an_inode_is_proven_by_the_hint_or_by_the_listing() {
        let file = tempfile::tempfile().unwrap();
        let meta = file.metadata().unwrap();
        let (dev, ino) = (meta.dev(), meta.ino());
        let me = Pid::this();
        let fd = file.as_raw_fd();
        assert!(process_holds_inode(me, dev, ino, Some(fd)).unwrap());
        // A wrong hint (another file, or no such descriptor) falls back to
        // the listing; it can neither prove nor hide anything.
        assert!(process_holds_inode(me, dev, ino, Some(0)).unwrap());
        assert!(process_holds_inode(me, dev, ino, Some(99_999)).unwrap());
        assert!(process_holds_inode(me, dev, ino, None).unwrap());
        drop(file);
        assert!(!process_holds_inode(me, dev, ino, Some(fd)).unwrap());
    }
}
