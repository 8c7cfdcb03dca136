//! Releasing a shared resin-lock lock (`-s`) that someone holds: the
//! caller's own keepers among its live holders are asked to let go, and
//! the file goes with the last one out; without one of its own, the caller
//! needs `--force`, which removes the file under all of them.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use nix::unistd::Pid;

use super::keepers::{KEEPER_GRACE, after_let_go, prove_keeper, removed, signal_keeper};
use super::outcome::{Caller, Claim, Outcome, Refusal, Seen};
use crate::lock::dir::Ident;
use crate::lock::holders::{holds, read_holders};
use crate::lock::inspect::Inspection;
use crate::lock::probe::{self, Exclusive};
use crate::lock::record::{Mode, Record};
use crate::procfs;

/// A shared lock: stop the caller's own keepers among its live holders;
/// the file goes with the last one out. Without one of its own, the
/// caller needs `--force`, which removes the file under all of them.
pub fn release(seen: &Seen, caller: &Caller) -> Result<Outcome> {
    let Seen {
        dir,
        name,
        path,
        file,
        ident,
    } = *seen;
    let shown = path.display();
    let live: Vec<Record> = read_holders(file)
        .into_iter()
        .filter(|h| holds(h, ident))
        .collect();
    let own: Vec<&Record> = live
        .iter()
        .filter(|h| h.mode == Mode::Acquire && caller.owns(h))
        .collect();
    let Some(last) = own.last() else {
        return not_ours_shared(seen, &live, caller);
    };
    for keeper in &own {
        let pid = Pid::from_raw(keeper.pid);
        let pidfd = match prove_keeper(pid, ident, keeper.fd, caller) {
            Ok(pidfd) => pidfd,
            Err(why) => {
                return Ok(Outcome::Refused(Refusal::Unproven {
                    keeper: keeper.pid,
                    why,
                }));
            }
        };
        signal_keeper(&pidfd, pid)
            .with_context(|| format!("cannot signal keeper pid {pid} of {shown}"))?;
    }
    wait_keepers_left(&own, ident, path)?;
    match dir.stat(name)? {
        // Still there: other holders keep it, or the last keeper could not
        // tell it was the last (then nobody holds it, and we remove it).
        Some(now) if crate::lock::dir::ident(&now) == ident => {
            if probe::try_exclusive(file)? == Exclusive::Taken {
                removed(seen, Outcome::KeeperLeftFile { keeper: last.pid })
            } else {
                Ok(Outcome::KeeperReleased {
                    keeper: last.pid,
                    taken_by: None,
                })
            }
        }
        _ => after_let_go(seen, last.pid),
    }
}

/// A shared lock none of whose live holders is the caller's: removed with
/// `--force`, else refused, naming every holder.
fn not_ours_shared(seen: &Seen, live: &[Record], caller: &Caller) -> Result<Outcome> {
    let holder = live
        .iter()
        .map(Inspection::record_holder)
        .collect::<Vec<_>>()
        .join("; ");
    if caller.force {
        let what = format!("shared holders: {holder}");
        return removed(seen, Outcome::ForcedForeign { what });
    }
    if !live.is_empty()
        && live
            .iter()
            .all(|h| matches!(h.mode, Mode::Run | Mode::Hold))
    {
        let hold = live.iter().any(|h| h.mode == Mode::Hold);
        return Ok(Outcome::Refused(Refusal::LiveRun { holder, hold }));
    }
    // A holder of the caller's owner, taken by a sibling job still running.
    let sibling = live
        .iter()
        .filter(|h| h.mode == Mode::Acquire)
        .find_map(|h| match caller.claim(h) {
            Claim::OtherJob(job) => Some(super::exclusive::other_job(h, job)),
            _ => None,
        });
    if let Some(refusal) = sibling {
        return Ok(Outcome::Refused(refusal));
    }
    Ok(Outcome::Refused(Refusal::NotOwner { holder }))
}

/// Each signalled keeper leaves (removing the file if it is the last one
/// out), then exits: its descriptor on the file closing is the end of its
/// part. Bounded by `KEEPER_GRACE`.
fn wait_keepers_left(own: &[&Record], ident: Ident, path: &Path) -> Result<()> {
    let started = Instant::now();
    while let Some(keeper) = own.iter().find(|k| {
        procfs::process_holds_inode(Pid::from_raw(k.pid), ident.0, ident.1, k.fd).unwrap_or(false)
    }) {
        if started.elapsed() > KEEPER_GRACE {
            return Err(crate::exit::fail(
                crate::exit::Exit::OsErr,
                format!(
                    "keeper pid {} did not let go of {} within {}s",
                    keeper.pid,
                    path.display(),
                    KEEPER_GRACE.as_secs()
                ),
            ));
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    Ok(())
}
