//! The operating-system corner: the only module with `unsafe` or raw libc
//! calls (each with a `// SAFETY:` comment), plus the small readers of
//! `/proc` that the lock protocol relies on.

use std::fs;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use nix::poll::{PollFd, PollTimeout, poll};
use nix::unistd::{ForkResult, Pid};

/// What std's start-up (`lang_start`) would do that resin-lock relies on; the
/// binary's C `main` calls it first (see `main.rs`).
///
/// - A closed stdin, stdout or stderr is reopened on /dev/null, so that no
///   lock file, socket or inotify descriptor can become fd 1 and receive the
///   output meant for the terminal. An error here aborts, as in std.
/// - SIGPIPE is ignored, so a closed stdout is an EPIPE error that `status`
///   and `force-update` handle quietly (children get it back at its default).
pub fn start_up() {
    let mut fds = [0, 1, 2].map(|fd| libc::pollfd {
        fd,
        events: 0,
        revents: 0,
    });
    // SAFETY: `fds` is a valid array of 3 pollfd for the duration of the call;
    // a zero timeout never blocks. poll only reports on the descriptors.
    let polled = unsafe { libc::poll(fds.as_mut_ptr(), 3, 0) };
    for pfd in fds {
        let closed = if polled < 0 {
            // SAFETY: F_GETFD only queries the descriptor table.
            let flags = unsafe { libc::fcntl(pfd.fd, libc::F_GETFD) };
            flags < 0
        } else {
            pfd.revents & libc::POLLNVAL != 0
        };
        // The lowest free descriptor is the closed one, since 0..fd are open.
        // Not close-on-exec (unlike std::fs::File): `run`'s child inherits it.
        // SAFETY: open with a valid C string; the descriptor is deliberately
        // left open for the life of the process.
        if closed && unsafe { libc::open(c"/dev/null".as_ptr(), libc::O_RDWR) } < 0 {
            std::process::abort();
        }
    }
    // SAFETY: SIG_IGN installs no handler code; nothing else has touched
    // SIGPIPE's disposition yet.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
}

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

/// Give back what start-up used and a long wait does not need (SPEC
/// section 9: an idle `run` or keeper is resident for hours, and must cost
/// no more than tini). Two things:
///
/// - The mappings of the program's read-only pages (code and constants),
///   which fault-around mapped in 64 KiB at a time while clap, the
///   location table and the lock protocol ran: about 1 MiB of the static
///   binary. Unmapping a clean page of a file costs nothing: it stays in
///   the page cache, and the few the wait touches come back on use.
///   Writable segments are never touched (that would lose their data).
/// - The heap's free pages (`malloc_trim`).
///
/// Best effort: any failure leaves things as they were.
pub(crate) fn shed_startup_pages() {
    // SAFETY: getauxval only reads the auxiliary vector the kernel gave us.
    let (phdr, phnum) = unsafe {
        (
            libc::getauxval(libc::AT_PHDR) as usize,
            libc::getauxval(libc::AT_PHNUM) as usize,
        )
    };
    if phdr == 0 || phnum == 0 {
        return;
    }
    // SAFETY: AT_PHDR is the address of the program's `phnum` program
    // headers, mapped read-only for the life of the process.
    let headers = unsafe { std::slice::from_raw_parts(phdr as *const libc::Elf64_Phdr, phnum) };
    // Where the program was loaded: AT_PHDR against PT_PHDR's own address.
    let Some(bias) = headers
        .iter()
        .find(|h| h.p_type == libc::PT_PHDR)
        .map(|h| phdr.wrapping_sub(h.p_vaddr as usize))
    else {
        return;
    };
    let page = 4096;
    for h in headers {
        if h.p_type != libc::PT_LOAD || h.p_flags & libc::PF_W != 0 {
            continue;
        }
        // Only whole pages inside the segment: a page it shares with a
        // writable neighbour stays.
        let start = (bias + h.p_vaddr as usize).next_multiple_of(page);
        let end = (bias + (h.p_vaddr + h.p_memsz) as usize) / page * page;
        if end > start {
            // SAFETY: [start, end) lies inside a read-only segment of this
            // program: no data is lost, and any page is mapped back from
            // the file when next touched.
            unsafe { libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_DONTNEED) };
        }
    }
    // SAFETY: malloc_trim has no preconditions.
    unsafe { libc::malloc_trim(0) };
}

/// A long wait's `poll`, which sheds the start-up pages once it has
/// waited a second: a short hold (`run -- true`, `acquire` then `release`
/// in a script) never pays for pages mapped back in, and between the
/// shedding and the wait that follows nothing else runs, so the idle
/// process maps back only what `poll` itself touches.
pub(crate) struct Shed {
    at: Option<std::time::Instant>,
}

impl Shed {
    pub(crate) const AFTER: std::time::Duration = std::time::Duration::from_secs(1);

    /// Due `AFTER` from now.
    pub(crate) fn start() -> Shed {
        Shed {
            at: Some(std::time::Instant::now() + Shed::AFTER),
        }
    }

    /// `nix::poll::poll`, with the shedding on its way when it is due.
    pub(crate) fn poll(
        &mut self,
        fds: &mut [PollFd],
        timeout: PollTimeout,
    ) -> nix::Result<libc::c_int> {
        let Some(at) = self.at else {
            return poll(fds, timeout);
        };
        let start = std::time::Instant::now();
        let until_shed = at.saturating_duration_since(start);
        // None: for ever.
        let wanted = (timeout != PollTimeout::NONE)
            .then(|| std::time::Duration::from_millis(timeout.as_millis().unwrap_or(0).into()));
        if wanted.is_some_and(|wanted| wanted <= until_shed) {
            return poll(fds, timeout);
        }
        // Rounded up: waking a little early would only poll again.
        let first = PollTimeout::try_from(until_shed + std::time::Duration::from_millis(1));
        match poll(fds, first.unwrap_or(PollTimeout::MAX))? {
            0 => {}
            ready => return Ok(ready),
        }
        self.at = None;
        shed_startup_pages();
        let left = wanted.map_or(PollTimeout::NONE, |wanted| {
            PollTimeout::try_from(wanted.saturating_sub(start.elapsed()))
                .unwrap_or(PollTimeout::MAX)
        });
        poll(fds, left)
    }
}

/// End the process now with `code`: no atexit handlers, no flushing (a
/// panic may have come while they were half done).
pub(crate) fn exit_at_once(code: i32) -> ! {
    // SAFETY: _exit has no preconditions; it never returns.
    unsafe { libc::_exit(code) }
}

/// The process name of `acquire` keepers (at most 15 bytes), as `ps` shows it.
pub(crate) const KEEPER_NAME: &std::ffi::CStr = c"resin-lock-keep";

/// glibc's `__assert_fail`, which its start-up code references. glibc's own
/// translates and formats its message (gettext, printf, iconv: about 30
/// KiB of the static binary); an assertion inside glibc is a bug to report,
/// and this says so in one line before aborting, as glibc's would.
///
/// # Safety
///
/// `assertion` and `file` are NUL-terminated strings, as glibc passes them.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn __assert_fail(
    assertion: *const std::ffi::c_char,
    file: *const std::ffi::c_char,
    line: std::ffi::c_uint,
    _function: *const std::ffi::c_char,
) -> ! {
    // SAFETY: glibc passes NUL-terminated strings that live for the call.
    let (assertion, file) = unsafe {
        (
            std::ffi::CStr::from_ptr(assertion),
            std::ffi::CStr::from_ptr(file),
        )
    };
    eprintln!(
        "resin-lock: internal error (a bug): glibc assertion {} failed at {}:{line}",
        assertion.to_string_lossy(),
        file.to_string_lossy()
    );
    std::process::abort()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// A pipe: (read end, write end).
    fn pipe() -> (OwnedFd, OwnedFd) {
        nix::unistd::pipe().unwrap()
    }

    #[test]
    fn a_shed_poll_returns_events_at_once_and_sheds_only_when_due() {
        use std::os::fd::AsFd;
        let (reader, writer) = pipe();
        let mut shed = Shed::start();
        // Not yet due: a short timeout passes without shedding.
        let mut fds = [PollFd::new(reader.as_fd(), nix::poll::PollFlags::POLLIN)];
        assert_eq!(shed.poll(&mut fds, PollTimeout::from(10u8)).unwrap(), 0);
        assert!(shed.at.is_some(), "not shed before its time");
        // Ready: returned at once, still not shed.
        nix::unistd::write(&writer, b"x").unwrap();
        let mut fds = [PollFd::new(reader.as_fd(), nix::poll::PollFlags::POLLIN)];
        assert_eq!(shed.poll(&mut fds, PollTimeout::NONE).unwrap(), 1);
        assert!(shed.at.is_some());
        // Due: shed once, then the caller's wait goes on to its end.
        let (quiet, _keep) = pipe();
        shed.at = Some(std::time::Instant::now());
        let mut fds = [PollFd::new(quiet.as_fd(), nix::poll::PollFlags::POLLIN)];
        assert_eq!(shed.poll(&mut fds, PollTimeout::from(20u8)).unwrap(), 0);
        assert!(shed.at.is_none(), "shed once due");
    }

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

/// glibc's `_dl_get_origin`, which static glibc's start-up calls to learn
/// the program's directory for `$ORIGIN` in `dlopen` search paths: a
/// readlink("/proc/self/exe") on every start, about 50 µs of a `/proc`
/// path walk (SPEC section 9: start-up is most of a call's cost). This
/// program never loads a shared object by a path with `$ORIGIN`; `-1` is
/// glibc's own answer for "unknown", as when `/proc` is not mounted.
#[cfg(target_feature = "crt-static")]
#[unsafe(no_mangle)]
pub extern "C" fn _dl_get_origin() -> *const std::ffi::c_char {
    usize::MAX as *const std::ffi::c_char
}
