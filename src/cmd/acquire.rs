//! `resin-lock acquire`: take the lock and keep it after returning, held by
//! a keeper process until `release` or until the owner exits (see
//! `lock::keeper` for how, and `lock::owner` for who the owner is).

use anyhow::Result;

use super::context::{Context, refuse_nobody, tell, wait_opts};
use crate::cli::AcquireArgs;
use crate::exit::{Exit, fail, signal_code};
use crate::lock::keeper::{self, Started};
use crate::lock::owner::{self, NoOwner, OwnerChoice, ProcId};
use crate::lock::record::{Link, Mode, Record};

/// The most links of the chain a record keeps: the first (the job that
/// acquired) is the one `release` needs; the owner ends it.
const MAX_CHAIN: usize = 16;

pub fn run(ctx: &Context, args: AcquireArgs) -> Result<u8> {
    refuse_nobody()?;
    super::context::warn_unprotected(ctx);
    let owner =
        owner::choose(args.owner.unwrap_or(OwnerChoice::Default)).map_err(|err| match err {
            NoOwner::NoSuchProcess(pid) => {
                fail(Exit::Usage, format!("--owner {pid}: no such process"))
            }
            NoOwner::NoParent => fail(
                Exit::Usage,
                "acquire has no parent process to keep the lock for (it runs as PID 1?); \
             pass --owner PID, or use `resin-lock run -- CMD`",
            ),
        })?;
    ctx.ui.verbose(|| {
        let skipped: Vec<String> = owner
            .skipped
            .iter()
            .map(|(pid, cmd)| format!("pid {pid} ({})", crate::ui::escape_controls(cmd)))
            .collect();
        let skipped = if skipped.is_empty() {
            String::new()
        } else {
            format!("; skipped the transient wrappers {}", skipped.join(", "))
        };
        format!(
            "owner: pid {} ({}){skipped}",
            owner.id.pid,
            crate::ui::escape_controls(&owner.cmd.join(" "))
        )
    });
    let mut record = Record::new(Mode::Acquire, 0, owner.id.pid, owner.cmd.clone());
    record.owner_start = owner.id.start;
    record.chain = record_chain(&owner.chain);
    record.set_reason(args.hold.reason.as_deref());
    record.set_max_hold(args.hold.max_hold);
    let notes = super::context::hold_notes(&record);
    record.shared = args.wait.shared;
    let tags = super::context::tag_plan(&ctx.ui, &args.hold).map(|(config, after)| {
        record.tag_after_ms = Some(u64::try_from(after.as_millis()).unwrap_or(u64::MAX));
        keeper::Tags {
            config,
            after,
            hold: super::context::tag_hold(&record),
            quiet: ctx.ui.quiet,
        }
    });
    let started = keeper::start(
        &ctx.locations.targets,
        record,
        &owner,
        wait_opts(&args.wait, Some(owner.id)),
        ctx.ui.quiet,
        &|event| tell(&ctx.ui, event),
        tags,
    )?;
    match started {
        Started::Holding { keeper, paths } => {
            ctx.ui.verbose(|| {
                format!(
                    "acquired {}{notes}; keeper pid {keeper} holds it until `resin-lock release` or until pid {} exits",
                    paths
                        .iter()
                        .map(|p| p.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", "),
                    owner.id.pid
                )
            });
            Ok(Exit::Ok.code())
        }
        Started::Interrupted(signal) => Ok(signal_code(signal)),
    }
}

/// The chain from acquire's parent to the owner, as the record keeps it:
/// bounded, the first links and the owner.
fn record_chain(chain: &[ProcId]) -> Vec<Link> {
    let link = |p: &ProcId| Link {
        pid: p.pid,
        start: p.start,
    };
    if chain.len() <= MAX_CHAIN {
        return chain.iter().map(link).collect();
    }
    let mut kept: Vec<Link> = chain[..MAX_CHAIN - 1].iter().map(link).collect();
    kept.extend(chain.last().map(link));
    kept
}
