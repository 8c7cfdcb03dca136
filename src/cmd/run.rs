//! `resin-lock run -- CMD`: take the lock as `acquire` does, run CMD while
//! holding it, forward signals, release when CMD ends, exit as CMD did.

use anyhow::{Context as _, Result};
use nix::unistd::getpid;
use signal_hook::consts::SIGCHLD;

use std::cell::RefCell;
use std::path::PathBuf;

use super::context::{Context, HoldTag, maybe_forced, refuse_nobody, tell, wait_opts};
use crate::cli::RunArgs;
use crate::lock::record::{Mode, Record};
use crate::lock::wait::take_all;
use crate::lock::{Event, Released};
use crate::signals::{FORWARD, SignalWatch};
use crate::supervise::{self, Lost};

pub fn run(ctx: &Context, args: RunArgs) -> Result<u8> {
    refuse_nobody()?;
    super::context::warn_unprotected(ctx);
    // Handlers go in before anything can be waited for or spawned, so no
    // signal and no child exit is missed.
    let mut watched = FORWARD.to_vec();
    watched.push(SIGCHLD);
    let mut signals = SignalWatch::new(&watched).context("cannot install signal handlers")?;
    let me = getpid().as_raw();
    let cmd_words = args
        .cmd
        .iter()
        .map(|arg| arg.to_string_lossy().into_owned())
        .collect();
    let mut record = Record::new(Mode::Run, me, me, cmd_words);
    record.set_reason(args.hold.reason.as_deref());
    record.set_max_hold(args.hold.max_hold);
    record.shared = args.wait.shared;
    let tag = HoldTag::plan(&ctx.ui, &args.hold, &mut record);
    // Paths said lost at the moment of loss (`--on-lost`): at release, the
    // same news is not told again.
    let lost: RefCell<Vec<PathBuf>> = RefCell::new(Vec::new());
    let notify = |event: crate::lock::Event<'_>| {
        tag.event(&event);
        match event {
            Event::Released {
                path,
                how: Released::Gone | Released::Replaced,
            } if lost.borrow().iter().any(|p| p == path) => {}
            event => tell(&ctx.ui, event),
        }
    };
    let on_lost = |report: Lost<'_>| {
        ctx.ui
            .warn(lost_message(&report, &args.cmd[0].to_string_lossy()));
        lost.borrow_mut().push(report.path.to_owned());
    };
    let held = take_all(
        &ctx.locations.targets,
        record.to_line().as_bytes(),
        wait_opts(&args.wait, None),
        &mut signals,
        &notify,
    )?;
    ctx.ui.verbose(|| {
        let paths: Vec<String> = held.iter().map(|h| h.path.display().to_string()).collect();
        format!(
            "holding {}{}",
            paths.join(", "),
            super::context::hold_notes(&record)
        )
    });
    // Device tags (SPEC 4d), from a thread of their own, once the lock is held.
    tag.start(&record, &held, ctx.ui);
    let options = supervise::Options {
        group: args.group,
        max_hold: args.hold.max_hold,
        on_lost: args.on_lost,
    };
    let code = supervise::run_child(
        &args.cmd,
        options,
        held,
        &mut signals,
        &ctx.ui,
        &notify,
        &on_lost,
    );
    // The lock is released by now, whatever became of CMD.
    tag.finish();
    if args.update_now {
        super::force_update::update_now(&ctx.ui);
    }
    // Unregistering 14 handlers one by one is a tenth of our start-up cost;
    // the process is about to exit, which drops them all at once.
    std::mem::forget(signals);
    code
}

/// The line said when a lock file is lost under CMD (`--on-lost`).
fn lost_message(lost: &Lost<'_>, program: &str) -> String {
    let to = if lost.group {
        format!("the process group of {program} (pgid {})", lost.pid)
    } else {
        format!("{program} (pid {})", lost.pid)
    };
    match &lost.sent {
        Ok(()) => format!(
            "{}; --on-lost sent {} to {to}",
            maybe_forced(lost.path),
            lost.signal
        ),
        Err(err) => format!(
            "{}; --on-lost could not send {} to {to}: {}",
            maybe_forced(lost.path),
            lost.signal,
            err.desc()
        ),
    }
}
