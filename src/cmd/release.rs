//! `resin-lock release`: give the lock back. Only the owner of an
//! `acquire` lock releases it (or anyone, a stale one); a live `run` or
//! `hold` lock and foreign locks need `--force`. The decisions are `lock::release`'s; this
//! file says what they were.

use anyhow::Result;

use super::context::{Context, maybe_forced};
use crate::cli::ReleaseArgs;
use crate::exit::Exit;
use crate::lock::owner::{self, OwnerChoice, ProcId};
use crate::lock::record::Mode;
use crate::lock::release::{self, Caller, Outcome, Refusal};
use crate::ui::escape_controls;

pub fn run(ctx: &Context, args: ReleaseArgs) -> Result<u8> {
    let explicit = match args.owner {
        Some(OwnerChoice::Pid(pid)) => Some(ProcId {
            pid,
            start: owner::proc_stat(pid).map(|(_, start)| start),
        }),
        // The parent and the default owner are among the ancestors.
        _ => None,
    };
    let caller = Caller {
        owner: explicit,
        force: args.force,
        euid: nix::unistd::geteuid().as_raw(),
    };
    let mut last_error = None;
    let mut refused: Option<Exit> = None;
    // In order: a keeper lets go of its paths in reverse, so by the time the
    // first path is free, the others are.
    for target in &ctx.locations.targets {
        match release::release(target, &caller) {
            Ok(Outcome::Refused(refusal)) => {
                crate::ui::say(&refusal_text(&target.path, &refusal));
                // Another user's lock is a permission problem (73); any
                // other refusal is the lock being someone else's (1).
                let exit = match refusal {
                    Refusal::OtherUser { .. } => Exit::CantCreate,
                    _ => Exit::Busy,
                };
                if refused != Some(Exit::CantCreate) {
                    refused = Some(exit);
                }
            }
            Ok(outcome) => say(ctx, &target.path, outcome),
            Err(err) => {
                if let Some(previous) = last_error.replace(err) {
                    crate::ui::say(&format!("{previous:#}"));
                }
            }
        }
    }
    match last_error {
        Some(err) => Err(err),
        None if let Some(exit) = refused => Ok(exit.code()),
        None => {
            // Only once every path is free: a refused or failed release
            // leaves the update blocked anyway.
            if args.update_now {
                super::force_update::update_now(&ctx.ui);
            }
            Ok(Exit::Ok.code())
        }
    }
}

fn say(ctx: &Context, path: &std::path::Path, outcome: Outcome) {
    let shown = path.display();
    let ui = &ctx.ui;
    match outcome {
        Outcome::NothingThere => {
            ui.verbose(|| format!("{shown}: no lock there; nothing to release"))
        }
        Outcome::RemovedStale { reason } => {
            ui.verbose(|| format!("{shown}: removed stale lock ({reason})"))
        }
        Outcome::KeeperReleased { keeper, taken_by } => ui.verbose(|| match taken_by {
            Some(pid) => format!(
                "released {shown} (keeper pid {keeper} stopped); pid {pid} has taken it since"
            ),
            None => format!("released {shown} (keeper pid {keeper} stopped)"),
        }),
        Outcome::KeeperLeftFile { keeper } => {
            ui.verbose(|| format!("{shown}: removed the lock its keeper pid {keeper} left"))
        }
        Outcome::Replaced {
            what,
            keepers_stopped,
        } => {
            let now = what.map_or_else(String::new, |w| {
                format!("; it is held by {w} now, left it alone")
            });
            let stopped = if keepers_stopped > 0 {
                "; stopped its keeper"
            } else {
                ""
            };
            ui.warn(format!("{}{now}{stopped}", maybe_forced(path)));
        }
        Outcome::ForcedForeign { what } => ui.warn(format!(
            "removed {shown} (held by {what}) because of --force"
        )),
        Outcome::ForcedRun {
            mode: Mode::Hold,
            pid,
            owner,
        } => ui.warn(format!(
            "removed the lock of a running `resin-lock hold` (pid {pid}) because of --force; \
             the program it holds it for (pid {owner}) goes on unprotected"
        )),
        Outcome::ForcedRun { pid, .. } => ui.warn(format!(
            "removed the lock of a running `resin-lock run` because of --force; \
             the command of pid {pid} is still running unprotected"
        )),
        Outcome::ForcedUnproven { keeper } => ui.warn(format!(
            "removed {shown} because of --force; its keeper pid {keeper} could not be stopped \
             and holds the removed file until its owner exits"
        )),
        Outcome::Refused(_) => unreachable!("refusals are errors"),
    }
}

fn refusal_text(path: &std::path::Path, refusal: &Refusal) -> String {
    let shown = path.display();
    match refusal {
        Refusal::Foreign { what } => {
            format!("{shown} is held by {what}, not by resin-lock; not removing it (use --force)")
        }
        Refusal::LiveRun { holder, hold } => format!(
            "{shown} is held by a running {holder}; it is released when {} \
             (use --force to remove it anyway)",
            if *hold {
                "the program that holds it lets go or ends"
            } else {
                "that command ends"
            }
        ),
        Refusal::NotOwner { holder } => format!(
            "{shown} is held by {holder}, which is not this caller's lock; \
             only its owner releases it (use --force to release it anyway)"
        ),
        Refusal::OtherJob {
            holder,
            job,
            job_cmd,
        } => format!(
            "{shown} is held by {holder} for another job of the same owner, pid {job} ({}), \
             which still runs; only that job releases it (use --force to release it anyway)",
            job_line(job_cmd)
        ),
        Refusal::OtherUser { uid, holder } => format!(
            "{shown} is held by {holder}, another user's lock (uid {uid}); this user can \
             neither stop its keeper nor remove it, even with --force (release it as uid {uid} \
             or root)"
        ),
        Refusal::Supervisor {
            what,
            keepers_stopped,
        } => format!(
            "{shown} is held by {what}: an update is in progress; not removing it, not even with \
             --force (the supervisor removes its own lock){}",
            if *keepers_stopped > 0 {
                "; stopped the keeper of our lock it replaced"
            } else {
                ""
            }
        ),
        Refusal::Unproven { keeper, why } => format!(
            "{shown} is held, but keeper pid {keeper} cannot be stopped: {why}; \
             not removing it (use --force)"
        ),
        Refusal::NonEmptyDirectory => {
            format!("{shown} is a non-empty directory; not removing it")
        }
    }
}

/// A job's command line for one line of text: escaped, and cut (a `sh -c`
/// job's script may be long).
fn job_line(cmd: &[String]) -> String {
    const MAX_CHARS: usize = 80;
    if cmd.is_empty() {
        return "?".to_owned();
    }
    let line = escape_controls(&cmd.join(" "));
    match line.char_indices().nth(MAX_CHARS) {
        Some((end, _)) => format!("{} …", &line[..end]),
        None => line,
    }
}
