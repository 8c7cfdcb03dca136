//! `hold`'s caller: the program at the other end of hold's stdin. It is
//! gone when stdin reaches end of file (it closed the pipe, or it died,
//! even by SIGKILL, and the kernel closed the pipe for it), or when hold's
//! parent is no longer the process that started it (it died while another
//! process it started keeps the pipe open: a shell's `exec 3>fifo` is
//! inherited by every later child). No /proc is needed for either.
//!
//! A thread reads stdin (the bytes are ignored) and looks at the parent
//! pid every `PARENT_EVERY`; when the caller is gone it closes a pipe, whose
//! read end then stays readable: the one descriptor that the wait for the
//! lock and the hold loop poll next to the signals.

use std::io::{self, Read};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::Duration;

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::unistd::{Pid, getppid};

/// How often the thread checks that the parent is still the caller.
pub(crate) const PARENT_EVERY: Duration = Duration::from_secs(1);

/// Readable once the caller is gone.
pub(crate) struct CallerWatch {
    gone: OwnedFd,
}

impl CallerWatch {
    /// Start watching stdin and the parent (the current one is the caller).
    pub(crate) fn start() -> io::Result<CallerWatch> {
        let parent = getppid();
        let (gone, tell) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
        std::thread::Builder::new()
            .name("caller".into())
            .stack_size(64 * 1024)
            .spawn(move || {
                until_gone(parent);
                // Closing the write end is the news: EOF on `gone`.
                drop(tell);
            })?;
        Ok(CallerWatch { gone })
    }

    /// The descriptor to poll: readable once the caller is gone.
    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        self.gone.as_fd()
    }

    /// Whether the caller is gone, now.
    pub(crate) fn is_gone(&self) -> bool {
        let mut fds = [PollFd::new(self.fd(), PollFlags::POLLIN)];
        matches!(poll(&mut fds, PollTimeout::ZERO), Ok(n) if n > 0)
    }
}

/// Read stdin until end of file (or an error: stdin closed, a directory),
/// or until the parent is no longer `parent`.
fn until_gone(parent: Pid) {
    let stdin = io::stdin();
    let mut buf = [0u8; 512];
    let every = PollTimeout::try_from(PARENT_EVERY).unwrap_or(PollTimeout::MAX);
    loop {
        if getppid() != parent {
            return;
        }
        let mut fds = [PollFd::new(stdin.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, every) {
            Ok(0) | Err(Errno::EINTR) => continue,
            Ok(_) => {}
            Err(_) => return,
        }
        // Ready: this read does not block (a pipe with data or at its end,
        // a file, a closed descriptor).
        match stdin.lock().read(&mut buf) {
            Ok(0) => return,
            Ok(_) => {}
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => {}
            Err(_) => return,
        }
    }
}
