//! The operating-system corner: the only module with `unsafe` or raw libc
//! calls (each with a `// SAFETY:` comment), plus the small readers of
//! `/proc` that the lock protocol relies on.

use std::fs;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use nix::unistd::{ForkResult, Pid};

/// Take flock(LOCK_EX) on `file`, waiting at most `limit` (rounded up to
/// whole seconds), the way flock(1) -w does: SIGALRM from alarm(2), caught
/// by a handler installed without SA_RESTART, interrupts the wait. False if
/// the time ran out. Only for single-threaded callers that do not use SIGALRM
/// otherwise (`release`): the signal goes to the process, and any thread may
/// take it. (timer_create could aim it at this thread, but static glibc then
/// links pthread_create and its resolver state, +80 KB.) The previous
/// disposition is restored.
pub(crate) fn lock_within(file: &fs::File, limit: std::time::Duration) -> io::Result<bool> {
    use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};
    use nix::unistd::alarm;

    extern "C" fn interrupt(_: libc::c_int) {}
    let action = SigAction::new(
        SigHandler::Handler(interrupt),
        SaFlags::empty(),
        SigSet::empty(),
    );
    // SAFETY: the handler does nothing, so it is async-signal-safe, and the
    // caller is single-threaded: no other code relies on SIGALRM meanwhile.
    let previous = unsafe { sigaction(Signal::SIGALRM, &action) }?;
    let deadline = std::time::Instant::now() + limit;
    let secs = limit.as_secs() + u64::from(limit.subsec_nanos() > 0);
    alarm::set(u32::try_from(secs.max(1)).unwrap_or(u32::MAX));
    let taken = loop {
        match file.lock() {
            Ok(()) => break Ok(true),
            // Our alarm, or another signal: go on until the deadline.
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {
                if std::time::Instant::now() >= deadline {
                    break Ok(false);
                }
            }
            Err(err) => break Err(err),
        }
    };
    alarm::cancel();
    // SAFETY: restores the disposition saved above; the alarm is cancelled.
    unsafe { sigaction(Signal::SIGALRM, &previous) }?;
    taken
}

/// `pidfd_open(2)`: a descriptor that becomes readable when `pid` exits.
/// Immune to pid reuse once opened.
/// A one-byte range at `start` for an OFD byte-range lock of type `l_type`
/// (`F_RDLCK`, `F_WRLCK`): the writer mark of `lock::shared`.
pub(crate) fn ofd_range(l_type: i32, start: libc::off_t) -> libc::flock {
    // SAFETY: libc::flock is plain integers on every target; all zero is a
    // valid value, and zeroing also covers the extra fields some have.
    let mut range: libc::flock = unsafe { std::mem::zeroed() };
    range.l_type = l_type as libc::c_short;
    range.l_whence = libc::SEEK_SET as libc::c_short;
    range.l_start = start;
    range.l_len = 1;
    range
}

pub(crate) fn pidfd_open(pid: Pid) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or
    // -1; no memory is passed.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid.as_raw(), 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    let fd = RawFd::try_from(fd).map_err(|_| io::Error::from_raw_os_error(libc::EBADF))?;
    // SAFETY: the kernel just returned this descriptor to us and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// What `fstatat` tells of a name in a directory, in the widths every
/// architecture can hold: on 32-bit glibc (armv7) the plain `stat` has a
/// 32-bit `ino_t` and fails with EOVERFLOW on an inode number past 2^32
/// (XFS, btrfs, overlayfs have them); `fstatat64` does not.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Stat {
    pub(crate) st_dev: u64,
    pub(crate) st_ino: u64,
    pub(crate) st_mode: u32,
    pub(crate) st_uid: u32,
    pub(crate) st_mtime: i64,
}

/// `fstatat64(dir, name, AT_SYMLINK_NOFOLLOW)`; None when there is no such name.
pub(crate) fn stat_at(dir: BorrowedFd<'_>, name: &std::ffi::OsStr) -> io::Result<Option<Stat>> {
    use std::os::unix::ffi::OsStrExt;
    let name = std::ffi::CString::new(name.as_bytes())
        .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    let mut stat = std::mem::MaybeUninit::<libc::stat64>::uninit();
    // SAFETY: `name` is a NUL-terminated string and `stat` a buffer of the
    // type fstatat64 fills; both live for the call.
    let result = unsafe {
        libc::fstatat64(
            dir.as_raw_fd(),
            name.as_ptr(),
            stat.as_mut_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    if result != 0 {
        let err = io::Error::last_os_error();
        return match err.raw_os_error() {
            Some(libc::ENOENT) => Ok(None),
            _ => Err(err),
        };
    }
    // SAFETY: fstatat64 returned 0, so it filled the whole buffer.
    let stat = unsafe { stat.assume_init() };
    // The widths differ by architecture (time_t is 32 bits on armv7).
    #[allow(clippy::unnecessary_cast, clippy::useless_conversion)]
    Ok(Some(Stat {
        st_dev: stat.st_dev as u64,
        st_ino: stat.st_ino as u64,
        st_mode: stat.st_mode as u32,
        st_uid: stat.st_uid as u32,
        st_mtime: stat.st_mtime as i64,
    }))
}

/// `fork(2)`. Callers are single-threaded at this point (resin-lock starts
/// no threads), so the child may do anything the parent could.
pub(crate) fn fork() -> io::Result<ForkResult> {
    // SAFETY: resin-lock never starts a thread, so the child is a full copy
    // of a single-threaded process and may allocate, lock and call any function.
    unsafe { nix::unistd::fork() }.map_err(io::Error::from)
}

/// `fork(2)` that a tracer following forks (`strace -f`, `ltrace -f`) does
/// not follow: `clone(2)` with CLONE_UNTRACED. Used only for the keeper,
/// and only under a tracer: a traced keeper would keep `strace -f` waiting
/// for it until the lock is released (SPEC 2b).
pub(crate) fn fork_untraced() -> io::Result<ForkResult> {
    let flags = libc::c_long::from(libc::CLONE_UNTRACED) | libc::c_long::from(libc::SIGCHLD);
    // SAFETY: clone(2) without CLONE_VM, without a new stack and with
    // SIGCHLD is fork(2) in the kernel's eyes: the child gets a copy of the
    // address space. No pointers are passed (the other arguments are 0, in
    // whatever order the architecture takes them). What libc's fork() does
    // besides is skipped: atfork handlers (resin-lock registers none) and
    // resetting the locks and thread list of other threads (resin-lock
    // starts none, so none is held). The child's libc still has the
    // parent's thread id cached; the keeper never uses it (no pthread
    // calls, no raise(3); std's locks do not use it).
    let pid = unsafe { libc::syscall(libc::SYS_clone, flags, 0, 0, 0, 0) };
    match pid {
        -1 => Err(io::Error::last_os_error()),
        0 => Ok(ForkResult::Child),
        pid => Ok(ForkResult::Parent {
            child: Pid::from_raw(
                i32::try_from(pid).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?,
            ),
        }),
    }
}

/// Close every descriptor of this process except 0, 1, 2 and `keep`, so a
/// long-lived keeper holds no pipe of its caller open. Cannot fail: where
/// close_range(2) is missing (Linux before 5.9) each descriptor up to the
/// limit is closed in turn.
pub(crate) fn close_other_fds(keep: &[RawFd]) {
    let mut kept: Vec<RawFd> = keep.iter().copied().filter(|fd| *fd > 2).collect();
    kept.sort_unstable();
    kept.dedup();
    // The gaps between the kept descriptors, from 3 up: a few close_range(2)
    // calls instead of listing /proc/self/fd.
    let mut first = 3;
    let mut gaps = Vec::with_capacity(kept.len() + 1);
    for &fd in &kept {
        if fd > first {
            gaps.push((first, fd - 1));
        }
        first = fd + 1;
    }
    for (low, high) in gaps
        .into_iter()
        .map(|(low, high)| (low as libc::c_uint, high as libc::c_uint))
        .chain([(first as libc::c_uint, libc::c_uint::MAX)])
    {
        // SAFETY: closes only descriptors outside `keep`, none of which this
        // process uses after this point: the keeper owns only those in `keep`.
        if unsafe { libc::close_range(low, high, 0) } != 0 {
            // Linux before 5.9 (nothing was closed yet).
            return close_one_by_one(&kept);
        }
    }
}

fn close_one_by_one(keep: &[RawFd]) {
    let limit = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .map_or(1024, |(soft, _)| soft.min(65_536));
    for fd in 3..RawFd::try_from(limit).unwrap_or(1024) {
        if !keep.contains(&fd) {
            // SAFETY: closing a descriptor that is not open is a harmless
            // EBADF; nothing in this process uses any descriptor outside
            // `keep` after this point.
            unsafe { libc::close(fd) };
        }
    }
}

/// Point stdin, stdout and stderr at `null` (/dev/null, closed here), or
/// close them where there is no /dev/null. Cannot fail.
pub(crate) fn detach_stdio(null: Option<fs::File>) {
    for target in 0..=2 {
        match &null {
            // SAFETY: dup2 onto the standard descriptors; both are valid
            // descriptors and std's handles for 0-2 stay valid (they now name
            // /dev/null).
            Some(null) => unsafe { libc::dup2(null.as_raw_fd(), target) },
            // SAFETY: the keeper never reads or writes its standard
            // descriptors after this point.
            None => unsafe { libc::close(target) },
        };
    }
}

/// The text of an errno value, without Rust's " (os error N)".
pub(crate) fn strerror(code: i32) -> String {
    nix::errno::Errno::from_raw(code).desc().to_owned()
}

/// Whether a process with this pid exists (EPERM still means it does).
pub(crate) fn process_exists(pid: Pid) -> bool {
    matches!(
        nix::sys::signal::kill(pid, None),
        Ok(()) | Err(nix::errno::Errno::EPERM)
    )
}

/// kill(2) with a signal number, to `pid`, or with `group` to its process
/// group (killpg(3)): for the real-time signals (SIGRTMIN+n), which nix's
/// `Signal` has no variant for.
pub(crate) fn kill_number(pid: Pid, signal: i32, group: bool) -> nix::Result<()> {
    let target = if group { -pid.as_raw() } else { pid.as_raw() };
    // SAFETY: kill(2) takes two integers and touches no memory of ours.
    let rc = unsafe { libc::kill(target, signal) };
    nix::errno::Errno::result(rc).map(drop)
}

/// `pidfd_send_signal(2)`: signal the process a pidfd names, which cannot
/// be a later process that reused its pid.
pub(crate) fn pidfd_send_signal(pidfd: &OwnedFd, signal: i32) -> io::Result<()> {
    // SAFETY: the descriptor is a valid pidfd we own; a null siginfo and
    // zero flags are what the call documents for a plain kill(2)-like send.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            signal,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Make `cmd`'s child the leader of a new process group and the foreground
/// process group of the terminal on its stdin before it execs, as tini's
/// `-g` does: from the child itself, so CMD never runs in the background
/// of its own terminal. No terminal (ENOTTY, ENXIO) is not an error.
pub(crate) fn lead_group_with_terminal(cmd: &mut std::process::Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: `take_terminal` runs in the forked child between fork and
    // exec; it only makes async-signal-safe system calls (setpgid,
    // sigprocmask, tcsetpgrp, getpid), allocates nothing and takes no lock.
    unsafe {
        cmd.pre_exec(take_terminal);
    }
}

/// The child side of `lead_group_with_terminal`.
fn take_terminal() -> io::Result<()> {
    use nix::sys::signal::{SigSet, SigmaskHow, Signal, sigprocmask};
    nix::unistd::setpgid(Pid::from_raw(0), Pid::from_raw(0))?;
    // A background group's tcsetpgrp is stopped by SIGTTOU unless blocked.
    let mut ttou = SigSet::empty();
    ttou.add(Signal::SIGTTOU);
    let mut old = SigSet::empty();
    sigprocmask(SigmaskHow::SIG_BLOCK, Some(&ttou), Some(&mut old))?;
    // SAFETY: tcsetpgrp and getpid take plain integers and touch no memory
    // of ours; fd 0 may be anything, and any failure is only reported.
    let taken = unsafe { libc::tcsetpgrp(0, libc::getpid()) };
    let err = io::Error::last_os_error();
    sigprocmask(SigmaskHow::SIG_SETMASK, Some(&old), None)?;
    match err.raw_os_error() {
        _ if taken == 0 => Ok(()),
        Some(libc::ENOTTY | libc::ENXIO) => Ok(()),
        _ => Err(err),
    }
}

/// The most descriptors one message to the keeper carries.
pub(crate) const MAX_PASSED_FDS: usize = 64;
/// The most lock paths one `acquire` hands to its keeper (a file and its
/// directory each).
pub(crate) const MAX_PATHS: usize = MAX_PASSED_FDS / 2;

/// Send `fds` and `payload` in one SOCK_SEQPACKET message (SCM_RIGHTS).
pub(crate) fn send_fds(sock: &OwnedFd, payload: &[u8], fds: &[RawFd]) -> io::Result<()> {
    use nix::sys::socket::{ControlMessage, MsgFlags, UnixAddr, sendmsg};
    let iov = [io::IoSlice::new(payload)];
    sendmsg::<UnixAddr>(
        sock.as_raw_fd(),
        &iov,
        &[ControlMessage::ScmRights(fds)],
        MsgFlags::empty(),
        None,
    )?;
    Ok(())
}

/// Receive one message sent by `send_fds`: its payload and the descriptors,
/// now owned by this process. `None` at end of stream.
pub(crate) fn recv_fds(sock: &OwnedFd) -> io::Result<Option<(Vec<u8>, Vec<OwnedFd>)>> {
    use nix::sys::socket::{ControlMessageOwned, MsgFlags, UnixAddr, recvmsg};
    let mut payload = vec![0u8; 64 * 1024];
    let mut cmsg = nix::cmsg_space!([RawFd; MAX_PASSED_FDS]);
    let (len, raw) = {
        let mut iov = [io::IoSliceMut::new(&mut payload)];
        let msg = loop {
            match recvmsg::<UnixAddr>(
                sock.as_raw_fd(),
                &mut iov,
                Some(&mut cmsg),
                MsgFlags::MSG_CMSG_CLOEXEC,
            ) {
                Err(nix::errno::Errno::EINTR) => continue,
                other => break other?,
            }
        };
        let mut raw = Vec::new();
        for message in msg.cmsgs()? {
            if let ControlMessageOwned::ScmRights(fds) = message {
                raw.extend(fds);
            }
        }
        (msg.bytes, raw)
    };
    // SAFETY: SCM_RIGHTS installed these descriptors in this process for us
    // alone; each is wrapped exactly once.
    let fds: Vec<OwnedFd> = raw
        .into_iter()
        .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) })
        .collect();
    if len == 0 && fds.is_empty() {
        return Ok(None);
    }
    payload.truncate(len);
    Ok(Some((payload, fds)))
}

/// End the process now with `code`: no atexit handlers, no flushing (a
/// panic may have come while they were half done).
pub(crate) fn exit_at_once(code: i32) -> ! {
    // SAFETY: _exit has no preconditions; it never returns.
    unsafe { libc::_exit(code) }
}

/// The process name of `acquire` keepers (at most 15 bytes), as `ps` shows it.
pub(crate) const KEEPER_NAME: &std::ffi::CStr = c"resin-lock-keep";

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn lock_within_takes_a_free_lock_and_gives_up_on_a_held_one() {
        let file = tempfile::tempfile().unwrap();
        let path = format!("/proc/self/fd/{}", file.as_raw_fd());
        let other = fs::File::open(&path).unwrap(); // its own open file description
        assert!(lock_within(&file, Duration::from_secs(5)).unwrap());

        // The test harness has other threads, and alarm(2) signals the
        // process: time out in a forked, single-threaded child, as in
        // `release`. It only makes system calls before _exit.
        match fork().unwrap() {
            ForkResult::Child => {
                let code = match lock_within(&other, Duration::from_millis(10)) {
                    Ok(false) => 0,
                    Ok(true) => 1,
                    Err(_) => 2,
                };
                // SAFETY: _exit ends the child without running the parent's
                // atexit handlers or destructors.
                unsafe { libc::_exit(code) }
            }
            ForkResult::Parent { child } => {
                let status = nix::sys::wait::waitpid(child, None).unwrap();
                assert_eq!(status, nix::sys::wait::WaitStatus::Exited(child, 0));
            }
        }

        drop(file);
        assert!(lock_within(&other, Duration::from_secs(5)).unwrap());
    }
}
