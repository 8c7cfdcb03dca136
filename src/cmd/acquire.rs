//! `resin-lock acquire`: take the lock and keep it after returning.
//!
//! A keeper process is forked first, so that the record can name it. In
//! the fast path the lock files are flocked O_TMPFILEs made before the fork,
//! so the keeper holds them from birth: this process writes the records,
//! links the files and tells the keeper, without waiting for it. When that
//! first try does not take every path (busy, stale, no O_TMPFILE, an error),
//! this process waits for and takes the lock, hands the flocked descriptors
//! to the keeper over a socket (SCM_RIGHTS), and returns 0 once the keeper
//! has confirmed it holds them. The keeper then detaches (new session, stdio
//! on /dev/null, no inherited descriptors) and holds the lock until
//! `release` (SIGUSR1) or until the owner process exits; in the latter case
//! the file stays, stale, so updates stay blocked until someone takes it
//! over.

use std::ffi::OsString;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, Result};
use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{SigSet, SigmaskHow, Signal, kill};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::socket::{AddressFamily, SockFlag, SockType, socketpair};
use nix::unistd::{ForkResult, Pid, getppid};

use super::{Context, refuse_nobody};
use crate::cli::AcquireArgs;
use crate::exit::{Exit, fail, signal_code};
use crate::lock::create::{self, Created};
use crate::lock::record::{Mode, Record};
use crate::lock::wait::{WaitOpts, take_all};
use crate::lock::{Held, Target, ensure_parent, release_all};
use crate::signals::{ABORT_WAIT, SignalWatch};
use crate::sys;
use crate::ui::Ui;

/// The keeper's answer once it holds the descriptors it was sent.
const ACK: &[u8] = b"K";

/// acquire to keeper: the files prepared before the fork are linked, and
/// so held (the fast path, see `run`).
const LINKED: &[u8] = b"L";

/// acquire to keeper: the prepared files were not linked; let go of them
/// and wait for the lock to be sent (the slow path).
const SLOW: &[u8] = b"S";

pub fn run(ctx: &Context, args: AcquireArgs) -> Result<u8> {
    refuse_nobody()?;
    let owner = match args.owner {
        Some(pid) => checked_owner(pid)?,
        // PID 1 of a container has no parent to follow (getppid is 0).
        None if getppid().as_raw() <= 0 => {
            return Err(fail(
                Exit::Usage,
                "acquire has no parent process to keep the lock for (it runs as PID 1?); \
                 pass --owner PID, or use `resin-lock run -- CMD`",
            ));
        }
        None => getppid(),
    };
    let owner_fd = match sys::pidfd_open(owner) {
        Ok(fd) => Some(fd),
        Err(err) if err.raw_os_error() == Some(libc::ESRCH) => {
            return Err(fail(
                Exit::Usage,
                format!("owner pid {owner}: no such process"),
            ));
        }
        // Kernels before 5.3: the keeper polls the owner instead.
        Err(_) => None,
    };
    let (ours, theirs) = socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .map_err(io::Error::from)
    .context("cannot create the keeper's socket")?;

    // The fast path: a flocked O_TMPFILE per lock made before the fork, so
    // the keeper holds them from birth. If they can all be linked at once,
    // acquire only has to tell the keeper so, and need not wait for it.
    // Otherwise (busy, stale, no O_TMPFILE, any error) the slow path below
    // takes the lock and hands it over (SCM_RIGHTS), as before.
    let prepared = prepare_all(&ctx.locations.targets);
    // Everything but the keeper's pid, read before the fork, while the
    // memory written is not yet shared copy-on-write with the keeper.
    let mut record = Record::new(
        Mode::Acquire,
        0,
        owner.as_raw(),
        sys::process_cmdline(owner),
    );

    // The signals that end a wait (ABORT_WAIT) stay blocked until a handler
    // is in place (slow path) or for good (fast path): one that comes while
    // the lock is being taken then ends acquire with 128+S and nothing held,
    // rather than killing it with a lock half taken. The keeper is born with
    // them blocked too, and keeps SIGUSR1 (release's request) blocked, so
    // that one sent before it reads it from a signalfd stays pending.
    let aborting: SigSet = ABORT_WAIT
        .iter()
        .filter_map(|&signal| Signal::try_from(signal).ok())
        .collect();
    let mask = aborting
        .thread_swap_mask(SigmaskHow::SIG_BLOCK)
        .map_err(io::Error::from)
        .context("cannot block signals")?;
    let forked = sys::fork();
    if forked.is_err() {
        let _ = mask.thread_set_mask();
    }
    let keeper = match forked.context("cannot start the keeper process")? {
        ForkResult::Child => {
            drop(ours);
            let mut keeper_mask = mask;
            keeper_mask.add(Signal::SIGUSR1);
            let _ = keeper_mask.thread_set_mask();
            let paths = ctx.locations.targets.iter().map(|t| t.path.clone());
            let prepared = prepared.map(|files| paths.zip(files).collect());
            keeper_main(theirs, owner_fd, owner, prepared.unwrap_or_default())
        }
        ForkResult::Parent { child } => child,
    };
    drop(theirs);
    drop(owner_fd);

    record.pid = keeper.as_raw();
    let fast = prepared.map(|files| link_all(&ctx.locations.targets, files, &record));
    if let Some(Some(held)) = fast {
        if let Some(signal) = pending_signal(&aborting) {
            // The keeper sees the socket close and exits; reap it.
            drop(ours);
            let _ = nix::sys::wait::waitpid(keeper, None);
            release_all(held, &ctx.ui)?;
            return Ok(signal_code(signal));
        }
        // The signals stay blocked: from here on acquire succeeds, and one
        // that comes now is dropped at exit.
        if let Err(err) = nix::unistd::write(&ours, LINKED) {
            let _ = kill(keeper, nix::sys::signal::SIGKILL);
            let _ = nix::sys::wait::waitpid(keeper, None);
            let _ = release_all(held, &ctx.ui);
            return Err(io::Error::from(err)).context("cannot hand the lock to the keeper");
        }
        return Ok(acquired(ctx, held, keeper, owner));
    }
    if fast.is_some() {
        // If this fails, so will the hand-over, which says so.
        let _ = nix::unistd::write(&ours, SLOW);
    }
    let signals = SignalWatch::new(ABORT_WAIT).context("cannot install signal handlers");
    // Pending ones now reach the handlers, and end the wait.
    let _ = mask.thread_set_mask();
    let mut signals = signals?;
    let held = match take_all(
        &ctx.locations.targets,
        record.to_line().as_bytes(),
        WaitOpts::from_args(&args.wait),
        &mut signals,
        &ctx.ui,
    ) {
        Ok(held) => held,
        Err(err) => {
            // The keeper sees the socket close and exits; reap it.
            drop(ours);
            let _ = nix::sys::wait::waitpid(keeper, None);
            return Err(err);
        }
    };
    if let Err(err) = hand_over(&ours, &held) {
        let _ = kill(keeper, nix::sys::signal::SIGKILL);
        let _ = nix::sys::wait::waitpid(keeper, None);
        let _ = release_all(held, &ctx.ui);
        return Err(err);
    }
    // The process exits next: no need to unregister the handlers one by one.
    std::mem::forget(signals);
    Ok(acquired(ctx, held, keeper, owner))
}

/// A signal of `set` that came while it was blocked, if any (consumed).
fn pending_signal(set: &SigSet) -> Option<i32> {
    let fd = SignalFd::with_flags(set, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK).ok()?;
    let info = fd.read_signal().ok()??;
    i32::try_from(info.ssi_signo).ok()
}

fn acquired(ctx: &Context, held: Vec<Held>, keeper: Pid, owner: Pid) -> u8 {
    ctx.ui.verbose(|| format!(
        "acquired {}; keeper pid {keeper} holds it until `resin-lock release` or until pid {owner} exits",
        paths_of(&held)
    ));
    // Our copies of the descriptors close here; the keeper's keep the flock.
    drop(held);
    Exit::Ok.code()
}

/// The fast path's files (see `run`), or None where it is not open.
fn prepare_all(targets: &[Target]) -> Option<Vec<File>> {
    targets
        .iter()
        .map(|target| {
            if target.create_parent {
                ensure_parent(&target.path).ok()?;
            }
            create::prepare_tmpfile(&target.path).ok()
        })
        .collect()
}

/// Link every prepared file, in order; None (and nothing left linked) if
/// any path is taken or anything fails: the slow path takes over.
fn link_all(targets: &[Target], files: Vec<File>, record: &Record) -> Option<Vec<Held>> {
    let mut held = Vec::with_capacity(files.len());
    for (target, file) in targets.iter().zip(files) {
        // The keeper inherited the file under the same descriptor number.
        let content = Record {
            fd: Some(file.as_raw_fd()),
            ..record.clone()
        }
        .to_line();
        match create::link_prepared(&target.path, file, content.as_bytes()) {
            Ok(Created::Taken(lock)) => held.push(lock),
            Ok(Created::Exists) | Err(_) => {
                for lock in held.into_iter().rev() {
                    let _ = lock.release();
                }
                return None;
            }
        }
    }
    Some(held)
}

/// `--owner PID` must name a live process (EPERM still means it exists).
fn checked_owner(pid: i32) -> Result<Pid> {
    if pid <= 0 {
        return Err(fail(
            Exit::Usage,
            format!("--owner {pid}: not a process id"),
        ));
    }
    let pid = Pid::from_raw(pid);
    match kill(pid, None) {
        Ok(()) | Err(Errno::EPERM) => Ok(pid),
        Err(_) => Err(fail(Exit::Usage, format!("--owner {pid}: no such process"))),
    }
}

fn paths_of(held: &[Held]) -> String {
    held.iter()
        .map(|h| h.path.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Send the descriptors (and their paths) to the keeper and wait for its ack.
fn hand_over(sock: &OwnedFd, held: &[Held]) -> Result<()> {
    let fds: Vec<_> = held.iter().map(|h| h.fd().as_raw_fd()).collect();
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

/// The keeper: never returns.
fn keeper_main(
    sock: OwnedFd,
    owner_fd: Option<OwnedFd>,
    owner: Pid,
    prepared: Vec<(PathBuf, File)>,
) -> ! {
    let code = match keep(sock, owner_fd, owner, prepared) {
        Ok(()) => 0,
        Err(_) => 1,
    };
    std::process::exit(code)
}

fn keep(
    sock: OwnedFd,
    owner_fd: Option<OwnedFd>,
    owner: Pid,
    mut prepared: Vec<(PathBuf, File)>,
) -> Result<()> {
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
        break (payload, fds);
    };
    let held: Vec<Held> = if fds.is_empty() && payload == LINKED {
        // The fast path: acquire linked the files we have held since fork.
        drop(sock);
        prepared
            .into_iter()
            .map(|(path, file)| Held::new(&path, file))
            .collect::<io::Result<_>>()?
    } else {
        drop(prepared);
        let held = payload
            .split(|b| *b == 0)
            .zip(fds)
            .map(|(path, fd)| {
                Held::new(
                    &PathBuf::from(OsString::from_vec(path.to_vec())),
                    File::from(fd),
                )
            })
            .collect::<io::Result<_>>()?;
        nix::unistd::write(&sock, ACK)?;
        drop(sock);
        held
    };

    let _ = nix::sys::prctl::set_name(sys::KEEPER_NAME);
    let _ = std::env::set_current_dir("/");
    // Closes the caller's stdout, which `$(resin-lock acquire)` reads to its end.
    sys::detach_stdio()?;
    let mut keep_fds: Vec<_> = held.iter().map(|h| h.fd().as_raw_fd()).collect();
    keep_fds.extend(owner_fd.as_ref().map(|fd| fd.as_raw_fd()));
    sys::close_other_fds(&keep_fds)?;
    // SIGUSR1 has been blocked since fork: one that `release` sent meanwhile
    // is read here.
    let signals = SignalFd::with_flags(
        &SigSet::from(Signal::SIGUSR1),
        SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK,
    )
    .map_err(io::Error::from)?;

    let quiet = Ui {
        verbose: false,
        quiet: true,
    };
    loop {
        let mut fds = vec![PollFd::new(signals.as_fd(), PollFlags::POLLIN)];
        if let Some(fd) = &owner_fd {
            fds.push(PollFd::new(fd.as_fd(), PollFlags::POLLIN));
        }
        // Without a pidfd, look at the owner once a second.
        let timeout = if owner_fd.is_some() {
            PollTimeout::NONE
        } else {
            PollTimeout::try_from(Duration::from_secs(1)).unwrap_or(PollTimeout::MAX)
        };
        match poll(&mut fds, timeout) {
            Ok(_) | Err(Errno::EINTR) => {}
            Err(err) => return Err(io::Error::from(err).into()),
        }
        let owner_gone = match &owner_fd {
            Some(_) => fds.get(1).and_then(|fd| fd.any()).unwrap_or(false),
            None => kill(owner, None) == Err(Errno::ESRCH),
        };
        drop(fds);
        if let Ok(Some(info)) = signals.read_signal()
            && info.ssi_signo == Signal::SIGUSR1 as u32
        {
            return release_all(held, &quiet);
        }
        if owner_gone {
            // Leave the files: stale now, they keep blocking updates.
            return Ok(());
        }
    }
}
