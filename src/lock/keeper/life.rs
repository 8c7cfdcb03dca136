//! The keeper process's own life, from the fork to its exit: take over
//! the lock (the files linked before the fork, or the descriptors sent
//! over the socket), settle as a quiet background process, then hold the
//! lock until `release`, `--max-hold` or the owner's exit.

use std::ffi::OsString;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStringExt;
use std::path::PathBuf;
use std::time::Duration;

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{Signal, kill};
use nix::sys::signalfd::SignalFd;
use nix::unistd::Pid;

use super::provisions::{ACK, LINKED, Provisions, SLOW, TOOK_TAGGED, Tags};
use crate::lock::dir::LockDir;
use crate::lock::dir::Released;
use crate::lock::event::Event;
use crate::lock::held::Held;
use crate::lock::take::release_all;
use crate::supervisor_api::tags::{End, Publisher};
use crate::sys;

/// The keeper: never returns.
pub(super) fn keeper_main(provisions: Provisions, prepared: Vec<Held>, shared: bool) -> ! {
    let code = match keep(provisions, prepared, shared) {
        Ok(()) => 0,
        Err(_) => 1,
    };
    std::process::exit(code)
}

/// Receive the lock (fast or slow path), then hold it.
fn keep(provisions: Provisions, mut prepared: Vec<Held>, shared: bool) -> io::Result<()> {
    let Provisions {
        sock,
        owner_fd,
        owner,
        release_signal,
        null,
        max_hold,
        log,
        tags,
    } = provisions;
    let mut took_tagged = false;
    // Out of the caller's session at once, so that a Ctrl-C or hangup meant
    // for the caller's shell never reaches the keeper.
    let _ = nix::unistd::setsid();
    // `acquire` may be waiting for the answer: take the descriptors and
    // answer first, everything else after.
    let (payload, fds) = loop {
        let Some((payload, fds)) = sys::recv_fds(&sock)? else {
            return Ok(()); // acquire gave up (busy, timeout, signal)
        };
        if fds.is_empty() && payload == SLOW {
            prepared.clear();
            continue;
        }
        if fds.is_empty() && payload == TOOK_TAGGED {
            took_tagged = true;
            continue;
        }
        break (payload, fds);
    };
    let held: Vec<Held> = if fds.is_empty() && payload == LINKED {
        // The fast path: acquire linked the files we have held since fork.
        drop(sock);
        prepared
    } else {
        drop(prepared);
        let held = adopt(&payload, fds, shared)?;
        nix::unistd::write(&sock, ACK)?;
        drop(sock);
        held
    };
    // The owner's pidfd and acquire's log stay open too.
    let also: Vec<RawFd> = (owner_fd.iter().map(AsRawFd::as_raw_fd))
        .chain(log.iter().map(AsRawFd::as_raw_fd))
        .collect();
    settle(&held, &also, &release_signal, null);
    // Device tags (SPEC 4d) from a thread, now that the lock is held.
    let publisher = tags.and_then(|tags| publisher(tags, &held, owner, &log, took_tagged));
    hold(
        held,
        (owner_fd, log),
        owner,
        &release_signal,
        (max_hold, publisher),
    );
    Ok(())
}

/// The locks sent by `hand_over`.
fn adopt(payload: &[u8], fds: Vec<OwnedFd>, shared: bool) -> io::Result<Vec<Held>> {
    let mut fds = fds.into_iter();
    payload
        .split(|b| *b == 0)
        .map(|path| {
            let path = PathBuf::from(OsString::from_vec(path.to_vec()));
            let (Some(file), Some(dir)) = (fds.next(), fds.next()) else {
                return Err(io::Error::other("a lock came without its directory"));
            };
            let dir = LockDir::from_fd(dir);
            Held::new(&path, dir, File::from(file), shared)
        })
        .collect()
}

/// Become a quiet background process. Nothing here can fail in a way that
/// matters: every step that could was done before the fork.
fn settle(held: &[Held], also: &[RawFd], release: &SignalFd, null: Option<File>) {
    let _ = nix::sys::prctl::set_name(sys::KEEPER_NAME);
    let _ = std::env::set_current_dir("/");
    // Lets go of the caller's stdout, which `$(resin-lock acquire)` reads to its end.
    sys::detach_stdio(null);
    let mut keep_fds: Vec<_> = held
        .iter()
        .flat_map(|h| [h.fd().as_raw_fd(), h.dir_fd().as_raw_fd()])
        .collect();
    keep_fds.extend_from_slice(also);
    keep_fds.push(release.as_fd().as_raw_fd());
    sys::close_other_fds(&keep_fds);
}

/// Hold the locks until `release` asks (SIGUSR1: remove them), `--max-hold`
/// runs out (remove them too) or the owner exits (leave them: stale now,
/// they keep blocking updates).
fn hold(
    held: Vec<Held>,
    (owner_fd, log): (Option<OwnedFd>, Option<File>),
    owner: Pid,
    release: &SignalFd,
    (max_hold, publisher): (Option<(Duration, bool)>, Option<Publisher>),
) {
    // The tag follows the lock: `free` once it is released, `stale` when
    // the owner is gone without release (bounded, after the lock's fate).
    let left = std::cell::Cell::new(false);
    let notify = |event: Event<'_>| {
        if let Event::Released {
            how: Released::Left,
            ..
        } = event
        {
            left.set(true);
        }
    };
    let end = |released: bool| {
        if let Some(publisher) = publisher {
            publisher.finish(match released {
                true if left.get() => End::Left,
                true => End::Released,
                false => End::Stale,
            });
        }
    };
    // One past what a clock can count is never: the keeper must not panic.
    let deadline = max_hold.and_then(|(after, _)| std::time::Instant::now().checked_add(after));
    loop {
        let mut fds = vec![PollFd::new(release.as_fd(), PollFlags::POLLIN)];
        if let Some(fd) = &owner_fd {
            fds.push(PollFd::new(fd.as_fd(), PollFlags::POLLIN));
        }
        // Without a pidfd, look at the owner once a second.
        let mut timeout = if owner_fd.is_some() {
            PollTimeout::NONE
        } else {
            PollTimeout::try_from(Duration::from_secs(1)).unwrap_or(PollTimeout::MAX)
        };
        if let Some(deadline) = deadline {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                let paths: Vec<String> =
                    held.iter().map(|h| h.path.display().to_string()).collect();
                let _ = release_all(held, &notify);
                if let Some((after, true)) = max_hold {
                    tell_owner(owner, log, &paths, after);
                }
                end(true);
                return;
            }
            // Rounded up: a poll that wakes a little early only loops.
            let left = PollTimeout::try_from(left.saturating_add(Duration::from_millis(1)));
            let left = left.unwrap_or(PollTimeout::MAX);
            // NONE (wait for ever) sorts first, as -1.
            if timeout == PollTimeout::NONE || left < timeout {
                timeout = left;
            }
        }
        if let Err(err) = poll(&mut fds, timeout)
            && err != Errno::EINTR
        {
            // Out of memory for the poll table, say: never let go because
            // of it. Try again in a while.
            std::thread::sleep(Duration::from_millis(100));
            continue;
        }
        let owner_gone = match &owner_fd {
            Some(_) => fds.get(1).and_then(PollFd::any).unwrap_or(false),
            None => kill(owner, None) == Err(Errno::ESRCH),
        };
        drop(fds);
        if let Ok(Some(info)) = release.read_signal()
            && info.ssi_signo == Signal::SIGUSR1 as u32
        {
            let _ = release_all(held, &notify);
            end(true);
            return;
        }
        if owner_gone {
            end(false);
            return;
        }
    }
}

/// The hold's tag publisher; its warnings go where `--max-hold`'s notice
/// goes (acquire's log file, else the owner's stderr), unless `-q`.
fn publisher(
    tags: Tags,
    held: &[Held],
    owner: Pid,
    log: &Option<File>,
    took_tagged: bool,
) -> Option<Publisher> {
    let Tags {
        config,
        after,
        hold,
        quiet,
    } = tags;
    let log = log.as_ref().and_then(|log| log.try_clone().ok());
    let warn = Box::new(move |line: String| {
        if !quiet {
            say_to_owner(owner, log.as_ref(), &format!("resin-lock: {line}\n"));
        }
    });
    let after = if took_tagged { Duration::ZERO } else { after };
    let dirs = held
        .iter()
        .filter_map(|h| h.dir_fd().try_clone_to_owned().ok())
        .collect();
    Publisher::start(config, hold, dirs, after, warn)
}

/// `--max-hold` ran out: one line (one write) where acquire's stderr went
/// when that is a file (`2>log`), else on the owner's stderr (the keeper
/// has none of its own), which is where the owner's logs go. Best effort.
///
/// The log is written through the open file description acquire had, at
/// its end: a description without O_APPEND (`2>log`) may point before
/// lines appended since (`echo more >>log`), which the notice would
/// overwrite, and the owner's next line through it would overwrite the
/// notice.
fn tell_owner(owner: Pid, log: Option<File>, paths: &[String], after: Duration) {
    let line = format!(
        "resin-lock: held {} for {} (--max-hold); released it: the owner (pid {owner}) goes on unprotected\n",
        paths.join(", "),
        humantime::format_duration(after)
    );
    say_to_owner(owner, log.as_ref(), &line);
}

/// One line (one write) to acquire's log, else to the owner's stderr.
fn say_to_owner(owner: Pid, log: Option<&File>, line: &str) {
    use std::io::{Seek as _, SeekFrom, Write as _};
    use std::os::unix::fs::OpenOptionsExt as _;
    if let Some(mut log) = log {
        if log.seek(SeekFrom::End(0)).is_ok() {
            let _ = log.write_all(line.as_bytes());
        }
        return;
    }
    let stderr = File::options()
        .append(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(format!("/proc/{owner}/fd/2"));
    if let Ok(mut stderr) = stderr {
        let _ = stderr.write_all(line.as_bytes());
    }
}
