//! Releasing an exclusive resin-lock lock that someone holds (SPEC 2b, 4):
//! a live `run` or `hold` only with `--force`; an `acquire` lock by asking its keeper
//! to let go, and only for its owner.

use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use nix::unistd::Pid;

use super::keepers::{KEEPER_GRACE, NO_PROC, after_let_go, prove_keeper, removed, signal_keeper};
use super::outcome::{Caller, Claim, Outcome, Refusal, Seen};
use crate::lock::inspect::Inspection;
use crate::lock::owner::{ProcId, is_running};
use crate::lock::probe::{self, Exclusive};
use crate::lock::record::{Mode, Record};
use crate::sys;

/// A live exclusive lock: refused, forced, or released through its keeper.
pub fn release(seen: &Seen, record: &Record, caller: &Caller) -> Result<Outcome> {
    match record.mode {
        // A `hold` is a `run` whose work is its owner, the program that
        // started it: it ends with that program, never by `release`.
        Mode::Run | Mode::Hold if caller.force => {
            let (mode, pid, owner) = (record.mode, record.pid, record.owner);
            removed(seen, Outcome::ForcedRun { mode, pid, owner })
        }
        Mode::Run | Mode::Hold => Ok(Outcome::Refused(Refusal::LiveRun {
            holder: Inspection::record_holder(record),
            hold: record.mode == Mode::Hold,
        })),
        Mode::Acquire if caller.force => stop_keeper(seen, record, caller),
        Mode::Acquire => match caller.claim(record) {
            Claim::Owns => stop_keeper(seen, record, caller),
            Claim::NotOwner if owner_gone(record) => owner_gone_keeper(seen, record),
            Claim::NotOwner => Ok(Outcome::Refused(Refusal::NotOwner {
                holder: Inspection::record_holder(record),
            })),
            Claim::OtherJob(job) => Ok(Outcome::Refused(other_job(record, job))),
        },
    }
}

/// The refusal for a lock of the caller's owner that another job of it
/// took and still runs.
pub fn other_job(record: &Record, job: crate::lock::owner::ProcId) -> Refusal {
    Refusal::OtherJob {
        holder: Inspection::record_holder(record),
        job: job.pid,
        job_cmd: crate::procfs::process_cmdline(Pid::from_raw(job.pid)),
    }
}

/// Ask the keeper of an `acquire` lock to release it, and wait until it has.
fn stop_keeper(seen: &Seen, record: &Record, caller: &Caller) -> Result<Outcome> {
    let Seen {
        path, file, ident, ..
    } = *seen;
    let shown = path.display();
    let keeper = Pid::from_raw(record.pid);
    // The flock is held: by the keeper, or for a moment by an acquire still
    // handing over to it. Give those a moment.
    let started = Instant::now();
    let pidfd = loop {
        match prove_keeper(keeper, ident, record.fd, caller) {
            Ok(pidfd) => break pidfd,
            Err(why) => {
                match probe::try_exclusive(file).with_context(|| format!("cannot lock {shown}"))? {
                    Exclusive::Taken => {
                        return removed(
                            seen,
                            Outcome::RemovedStale {
                                reason: "holder exited",
                            },
                        );
                    }
                    Exclusive::Held | Exclusive::Shared => {}
                }
                if started.elapsed() > Duration::from_secs(1) || why == NO_PROC {
                    if caller.force {
                        return removed(seen, Outcome::ForcedUnproven { keeper: record.pid });
                    }
                    return Ok(Outcome::Refused(Refusal::Unproven {
                        keeper: record.pid,
                        why,
                    }));
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    };
    signal_keeper(&pidfd, keeper)
        .with_context(|| format!("cannot signal keeper pid {keeper} of {shown}"))?;
    // The keeper removes the file under its flock, then closes it: the flock
    // coming free is the end of its part, without waiting for it to exit.
    // (It lets go of several paths in reverse order of taking them, and
    // `release` visits them in order, so this first wait covers them all.)
    if !sys::lock_within(file, KEEPER_GRACE).with_context(|| format!("cannot lock {shown}"))? {
        return Err(crate::exit::fail(
            crate::exit::Exit::OsErr,
            format!(
                "keeper pid {keeper} did not let go of {shown} within {}s",
                KEEPER_GRACE.as_secs()
            ),
        ));
    }
    after_let_go(seen, record.pid)
}

/// Whether the owner a record names has exited: its keeper is then about
/// to let go (it watches the owner), and the lock is stale in a moment.
fn owner_gone(record: &Record) -> bool {
    record.owner > 1
        && !is_running(ProcId {
            pid: record.owner,
            start: record.owner_start,
        })
}

/// The owner has exited: give its keeper a moment to notice and let go,
/// then remove the stale lock, rather than refuse it as someone else's
/// (a `release` that runs right after its owner ended).
fn owner_gone_keeper(seen: &Seen, record: &Record) -> Result<Outcome> {
    let Seen { path, file, .. } = *seen;
    let shown = path.display();
    if sys::lock_within(file, OWNER_GONE_GRACE).with_context(|| format!("cannot lock {shown}"))? {
        let reason = "holder exited";
        return removed(seen, Outcome::RemovedStale { reason });
    }
    Ok(Outcome::Refused(Refusal::NotOwner {
        holder: Inspection::record_holder(record),
    }))
}

/// How long a keeper whose owner exited gets to let go.
const OWNER_GONE_GRACE: Duration = Duration::from_secs(2);
