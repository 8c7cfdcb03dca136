//! The keeper: the small process that holds an `acquire` lock after
//! `acquire` returns, until `release` (SIGUSR1) or until the owner exits;
//! in the latter case the file stays, stale, so updates stay blocked until
//! someone takes it over.
//!
//! The keeper is forked first, so that the record can name it. In the fast
//! path the lock files are flocked O_TMPFILEs made before the fork, so the
//! keeper holds them from birth: `acquire` writes the records, links the
//! files and tells the keeper (LINKED), without waiting for it. When that
//! first try does not take every path (busy, stale, no O_TMPFILE, an
//! error), `acquire` tells it so (SLOW), waits for and takes the lock, hands
//! the flocked descriptors and their directories to the keeper over a
//! socket (SCM_RIGHTS) and returns once the keeper confirmed (ACK).
//!
//! Everything the keeper needs that can fail (the signalfd that `release`
//! signals through, /dev/null, the owner's pidfd) is made before the fork:
//! once `acquire` returns 0, nothing is left that can fail (SPEC 4).

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use anyhow::{Context as _, Result};
use nix::errno::Errno;
use nix::sys::signal::{SigSet, SigmaskHow, Signal, kill};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::socket::{AddressFamily, SockFlag, SockType, socketpair};
use nix::unistd::{ForkResult, Pid};

use super::dir::Target;
use super::event::Notify;
use super::held::Held;
use super::owner::Owner;
use super::record::Record;
use super::take::{link_all, prepare_all, release_all};
use super::wait::{WaitOpts, take_all};
use crate::exit::{Exit, fail};
use crate::signals::{ABORT_WAIT, SignalWatch};
use crate::sys;

mod life;
mod provisions;

pub(crate) use provisions::Tags;
use provisions::{ACK, LINKED, Provisions, SLOW, TOOK_TAGGED};

/// How `start` ended.
#[derive(Debug)]
pub enum Started {
    /// The keeper holds the lock.
    Holding { keeper: Pid, paths: Vec<PathBuf> },
    /// A signal (ABORT_WAIT) came while taking the lock: nothing is held.
    Interrupted(i32),
}

/// Take the lock for `owner` and start the keeper that holds it (and lets
/// go after the record's `max_hold_ms`, saying so unless `quiet`).
pub fn start(
    targets: &[Target],
    mut record: Record,
    owner: &Owner,
    opts: WaitOpts,
    quiet: bool,
    notify: Notify,
    tags: Option<Tags>,
) -> Result<Started> {
    let (ours, mut provisions) = provide(Pid::from_raw(owner.id.pid))?;
    // The keeper's lines (`--max-hold`, a device tag's warning) follow
    // acquire's stderr when it is a file (`2>>log`).
    let tag_warns = tags.as_ref().is_some_and(|tags| !tags.quiet);
    provisions.tags = tags;
    provisions.max_hold = record.max_hold().map(|d| (d, !quiet));
    if tag_warns || provisions.max_hold.is_some_and(|(_, say)| say) {
        provisions.log = stderr_log();
    }
    // The fast path: a flocked O_TMPFILE per lock made before the fork, so
    // the keeper holds them from birth.
    let prepared = prepare_all(targets, opts.shared);

    // The signals that end a wait (ABORT_WAIT) stay blocked until a handler
    // is in place (slow path) or for good (fast path): one that comes while
    // the lock is being taken then ends acquire with 128+S and nothing held,
    // rather than killing it with a lock half taken. The keeper is born with
    // them blocked too, and keeps SIGUSR1 (release's request) blocked, so
    // that one sent before it reads it stays pending (and SIGHUP, see below).
    let aborting: SigSet = ABORT_WAIT
        .iter()
        .filter_map(|&signal| Signal::try_from(signal).ok())
        .collect();
    let mask = aborting
        .thread_swap_mask(SigmaskHow::SIG_BLOCK)
        .map_err(io::Error::from)
        .context("cannot block signals")?;
    // Under a tracer that follows forks (`strace -f`), a keeper it traced
    // would keep it waiting until the lock is released: fork one it cannot
    // follow (SPEC 2b).
    // Where clone(2) refuses the flag (an emulator, a seccomp filter), a
    // plain fork: traced, but working.
    let forked = if crate::procfs::traced() {
        sys::fork_untraced().or_else(|err| match err.raw_os_error() {
            Some(libc::EINVAL | libc::EPERM | libc::ENOSYS) => sys::fork(),
            _ => Err(err),
        })
    } else {
        sys::fork()
    };
    if forked.is_err() {
        let _ = mask.thread_set_mask();
    }
    let keeper = match forked.context("cannot start the keeper process")? {
        ForkResult::Child => {
            drop(ours);
            let mut keeper_mask = mask;
            keeper_mask.add(Signal::SIGUSR1);
            // Born in the caller's session, it leaves it (setsid) only once
            // it runs: a hangup of that session meanwhile (the pty of
            // `script -c` closing as soon as acquire returned) must not kill
            // it. It stays blocked: the keeper has no terminal to hang up.
            keeper_mask.add(Signal::SIGHUP);
            let _ = keeper_mask.thread_set_mask();
            let shared = opts.shared;
            let prepared = prepared
                .map(|files| {
                    targets
                        .iter()
                        .map(|t| t.path.clone())
                        .zip(files)
                        .filter_map(|(path, (dir, file))| Held::new(&path, dir, file, shared).ok())
                        .collect()
                })
                .unwrap_or_default();
            life::keeper_main(provisions, prepared, shared)
        }
        ForkResult::Parent { child } => child,
    };
    drop(provisions);

    record.pid = keeper.as_raw();
    match prepared.map(|files| link_all(targets, files, &record, opts.shared)) {
        Some(Some(held)) => fast_path(ours, keeper, held, &aborting, notify),
        fast => {
            if fast.is_some() {
                // If this fails, so will the hand-over, which says so.
                let _ = nix::unistd::write(&ours, SLOW);
            }
            slow_path(targets, &record, opts, (ours, keeper, mask), notify)
        }
    }
}

/// What the keeper needs, made before the fork, and our end of its socket.
fn provide(owner: Pid) -> Result<(OwnedFd, Provisions)> {
    // Kernels before 5.3 have no pidfd: the keeper polls the owner instead.
    let owner_fd = sys::pidfd_open(owner).ok();
    let (ours, theirs) = socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .map_err(io::Error::from)
    .context("cannot create the keeper's socket")?;
    // `release` asks with SIGUSR1, read from this signalfd. It works in the
    // keeper too: a signalfd reads the signals of the process reading it.
    let release_signal = SignalFd::with_flags(
        &SigSet::from(Signal::SIGUSR1),
        SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK,
    )
    .map_err(io::Error::from)
    .context("cannot create the keeper's signal descriptor")?;
    // No /dev/null in a minimal container: the keeper closes its stdio.
    let null = File::options()
        .read(true)
        .write(true)
        .open("/dev/null")
        .ok();
    let provisions = Provisions {
        sock: theirs,
        owner_fd,
        owner,
        release_signal,
        null,
        max_hold: None,
        log: None,
        tags: None,
    };
    Ok((ours, provisions))
}

/// A copy of our stderr when it is a regular file (`2>log`). A pipe or a
/// terminal is not kept: a keeper holding a pipe open would keep its
/// reader (`$(…)`, execSync) waiting for its end.
fn stderr_log() -> Option<File> {
    let log = File::from(io::stderr().as_fd().try_clone_to_owned().ok()?);
    log.metadata().ok()?.is_file().then_some(log)
}

/// The files prepared before the fork are linked: tell the keeper, unless
/// an aborting signal came meanwhile (then undo and exit 128+S).
fn fast_path(
    ours: OwnedFd,
    keeper: Pid,
    held: Vec<Held>,
    aborting: &SigSet,
    notify: Notify,
) -> Result<Started> {
    if let Some(signal) = pending_signal(aborting) {
        // The keeper sees the socket close and exits; reap it.
        drop(ours);
        let _ = nix::sys::wait::waitpid(keeper, None);
        release_all(held, notify)?;
        return Ok(Started::Interrupted(signal));
    }
    // The signals stay blocked: from here on acquire succeeds, and one
    // that comes now is dropped at exit.
    if let Err(err) = nix::unistd::write(&ours, LINKED) {
        abandon(keeper);
        let _ = release_all(held, notify);
        return Err(io::Error::from(err)).context("cannot hand the lock to the keeper");
    }
    Ok(holding(keeper, held))
}

/// Wait for and take the lock as `run` does, then hand it to the keeper.
fn slow_path(
    targets: &[Target],
    record: &Record,
    opts: WaitOpts,
    (ours, keeper, mask): (OwnedFd, Pid, SigSet),
    notify: Notify,
) -> Result<Started> {
    let signals = SignalWatch::new(ABORT_WAIT).context("cannot install signal handlers");
    // Pending ones now reach the handlers, and end the wait.
    let _ = mask.thread_set_mask();
    let mut signals = signals?;
    // A stale lock taken over whose record had device tags on: its tag may
    // say `held` or `stale`; the keeper puts it right at once.
    let took_tagged = std::cell::Cell::new(false);
    let watch = |event: super::event::Event<'_>| {
        if matches!(&event, super::event::Event::TookOverStale { record, .. } if record.tag_after_ms.is_some())
        {
            took_tagged.set(true);
        }
        notify(event)
    };
    let taken = take_all(
        targets,
        record.to_line().as_bytes(),
        opts,
        &mut signals,
        &watch,
    );
    let held = match taken {
        Ok(held) => held,
        Err(err) => {
            // The keeper sees the socket close and exits; reap it.
            drop(ours);
            let _ = nix::sys::wait::waitpid(keeper, None);
            return Err(err);
        }
    };
    if took_tagged.get() {
        // If this fails, so will the hand-over, which says so.
        let _ = nix::unistd::write(&ours, TOOK_TAGGED);
    }
    if let Err(err) = hand_over(&ours, &held) {
        abandon(keeper);
        let _ = release_all(held, notify);
        return Err(err);
    }
    // The process exits next: no need to unregister the handlers one by one.
    std::mem::forget(signals);
    Ok(holding(keeper, held))
}

fn holding(keeper: Pid, held: Vec<Held>) -> Started {
    let paths = held.iter().map(|h| h.path.clone()).collect();
    // Our copies of the descriptors close here; the keeper's keep the flock.
    drop(held);
    Started::Holding { keeper, paths }
}

fn abandon(keeper: Pid) {
    let _ = kill(keeper, Signal::SIGKILL);
    let _ = nix::sys::wait::waitpid(keeper, None);
}

/// A signal of `set` that came while it was blocked, if any (consumed).
fn pending_signal(set: &SigSet) -> Option<i32> {
    let fd = SignalFd::with_flags(set, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK).ok()?;
    let info = fd.read_signal().ok()??;
    i32::try_from(info.ssi_signo).ok()
}

/// Send the descriptors (file and directory of each lock, and their paths)
/// to the keeper and wait for its ack.
fn hand_over(sock: &OwnedFd, held: &[Held]) -> Result<()> {
    let fds: Vec<_> = held
        .iter()
        .flat_map(|h| [h.fd().as_raw_fd(), h.dir_fd().as_raw_fd()])
        .collect();
    let payload = held
        .iter()
        .map(|h| h.path.as_os_str().as_bytes())
        .collect::<Vec<_>>()
        .join(&0u8);
    sys::send_fds(sock, &payload, &fds).context("cannot hand the lock to the keeper")?;
    let mut answer = [0u8; 1];
    let n = loop {
        match nix::unistd::read(sock.as_fd(), &mut answer) {
            Err(Errno::EINTR) => continue,
            other => break other.map_err(io::Error::from)?,
        }
    };
    if &answer[..n] != ACK {
        return Err(fail(
            Exit::OsErr,
            "the keeper process exited before taking the lock",
        ));
    }
    Ok(())
}
