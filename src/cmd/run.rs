//! `resin-lock run -- CMD`: take the lock as `acquire` does, run CMD while
//! holding it, forward signals, release when CMD ends, exit as CMD did.

use anyhow::{Context as _, Result};
use nix::unistd::getpid;
use signal_hook::consts::SIGCHLD;

use std::cell::RefCell;
use std::path::PathBuf;

use super::context::{Context, maybe_forced, refuse_nobody, tell, wait_opts};
use crate::cli::RunArgs;
use crate::lock::record::{Mode, Record};
use crate::lock::wait::take_all;
use crate::lock::{Event, Released};
use crate::signals::{FORWARD, SignalWatch};
use crate::supervise::{self, Lost};
use crate::supervisor_api::tags::End;

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
    let tags = super::context::tag_plan(&ctx.ui, &args.hold);
    record.tag_after_ms = tags
        .as_ref()
        .map(|(_, after)| u64::try_from(after.as_millis()).unwrap_or(u64::MAX));
    let took_over_tagged = std::cell::Cell::new(false);
    // The hold's tag ends with the first release (at `--max-hold`, or when
    // CMD ends); `free` only if no other shared holder keeps the lock.
    let publisher: RefCell<Option<crate::supervisor_api::tags::Publisher>> = RefCell::new(None);
    // Paths said lost at the moment of loss (`--on-lost`): at release, the
    // same news is not told again.
    let lost: RefCell<Vec<PathBuf>> = RefCell::new(Vec::new());
    let notify = |event: crate::lock::Event<'_>| {
        if super::context::took_over_tagged(&event) {
            took_over_tagged.set(true);
        }
        if let Event::Released { how, .. } = &event
            && let Some(publisher) = publisher.borrow().as_ref()
        {
            publisher.end(match how {
                Released::Left => End::Left,
                _ => End::Released,
            });
        }
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
    *publisher.borrow_mut() = tags.and_then(|(config, after)| {
        let after = if took_over_tagged.get() {
            std::time::Duration::ZERO
        } else {
            after
        };
        // The notes of what was sent go through the lock directories.
        let dirs = held
            .iter()
            .filter_map(|h| h.dir_fd().try_clone_to_owned().ok())
            .collect();
        let quiet = ctx.ui.quiet;
        let warn = Box::new(move |line: String| {
            if !quiet {
                crate::ui::say(&line);
            }
        });
        crate::supervisor_api::tags::Publisher::start(
            config,
            super::context::tag_hold(&record),
            dirs,
            after,
            warn,
        )
    });
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
    if let Some(publisher) = publisher.take() {
        publisher.finish(End::Released);
    }
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
