//! `resin-lock hold`: `run` for a caller that is not a command. Take the
//! lock as `run` does, for the parent (the program: a Node or Python
//! process, a shell coprocess), then hold it while stdin stays open,
//! saying on stdout, one JSON object a line, what happens:
//!
//! - `{"event":"waiting","path":…,"held_by":…,"holder":…,"record":…}`,
//!   at most once, when the lock is busy (the same line as `run`'s goes
//!   to stderr, unless `-q`);
//! - `{"event":"held","paths":[…],"since":"<RFC 3339 UTC>"}`;
//! - `{"event":"lost","path":…,"why":"removed"|"replaced"}`: someone else
//!   removed or replaced a lock file under us (a forced update, the
//!   override, `release --force`); we hold on until stdin closes;
//! - `{"event":"expired"}`: `--max-hold` passed, the lock was released;
//! - `{"event":"released"}`, last.
//!
//! End of file on stdin, a parent that changed (the program died while
//! something else keeps the pipe open) or a closed stdout (EPIPE): release,
//! exit 0. HUP INT QUIT TERM USR1 USR2 ALRM: release, exit 128+S. While
//! still waiting, these end the wait with nothing held (end of file as
//! SIGHUP: 129). A failure to take the lock is `acquire`'s: one line on
//! stderr, its exit status, no event but maybe `waiting`.

use std::cell::{Cell, RefCell};
use std::io::Write as _;
use std::path::PathBuf;
use std::time::SystemTime;

use anyhow::{Context as _, Result};
use nix::unistd::{getpid, getppid};
use serde_json::{Value, json};

use super::context::{Context, maybe_forced, refuse_nobody, tell, wait_opts};
use crate::cli::HoldCmdArgs;
use crate::exit::{Exit, signal_code};
use crate::lock::inspect::Inspection;
use crate::lock::owner;
use crate::lock::probe::HeldBy;
use crate::lock::record::{Mode, Record};
use crate::lock::wait::take_all_until;
use crate::lock::{Event, Released, release_all};
use crate::signals::{ABORT_WAIT, SignalWatch};
use crate::supervise::{self, CallerWatch, Ended, Happened};
use crate::supervisor_api::tags::{End, Publisher};

pub fn run(ctx: &Context, args: HoldCmdArgs) -> Result<u8> {
    refuse_nobody()?;
    super::context::warn_unprotected(ctx);
    // Before anything can be waited for: no signal and no hangup is missed.
    let mut signals = SignalWatch::new(ABORT_WAIT).context("cannot install signal handlers")?;
    let caller = CallerWatch::start().context("cannot watch standard input")?;
    let mut record = hold_record(&args);
    let tags = super::context::tag_plan(&ctx.ui, &args.hold);
    record.tag_after_ms = tags
        .as_ref()
        .map(|(_, after)| u64::try_from(after.as_millis()).unwrap_or(u64::MAX));
    let took_over_tagged = Cell::new(false);
    let publisher: RefCell<Option<Publisher>> = RefCell::new(None);
    // Paths already said lost: at release, the same news is not told again.
    let lost: RefCell<Vec<PathBuf>> = RefCell::new(Vec::new());
    let said_waiting = Cell::new(false);
    let notify = |event: Event<'_>| {
        if super::context::took_over_tagged(&event) {
            took_over_tagged.set(true);
        }
        match &event {
            Event::Waiting { path, holder } if !said_waiting.replace(true) => {
                say(waiting(
                    path,
                    holder.held_by,
                    &holder.holder(),
                    holder.record.clone(),
                ));
            }
            Event::WaitingForDisplaced { path, record } if !said_waiting.replace(true) => {
                let holder = format!(
                    "{} (its lock file was removed, but it still runs)",
                    Inspection::record_holder(record)
                );
                say(waiting(
                    path,
                    Some(HeldBy::ResinLock),
                    &holder,
                    serde_json::to_value(record).ok(),
                ));
            }
            Event::Released { how, .. } => {
                if let Some(publisher) = publisher.borrow().as_ref() {
                    publisher.end(match how {
                        Released::Left => End::Left,
                        _ => End::Released,
                    });
                }
            }
            _ => {}
        }
        match event {
            Event::Released {
                path,
                how: how @ (Released::Gone | Released::Replaced),
            } => {
                // Noticed only now, at release: said now (SPEC 2a).
                if !lost.borrow().iter().any(|p| p == path) {
                    lost.borrow_mut().push(path.to_owned());
                    say(lost_event(path, how));
                    tell(&ctx.ui, event);
                }
            }
            event => tell(&ctx.ui, event),
        }
    };
    let held = take_all_until(
        &ctx.locations.targets,
        record.to_line().as_bytes(),
        wait_opts(&args.wait, None),
        &mut signals,
        Some(caller.fd()),
        &notify,
    )?;
    let paths: Vec<PathBuf> = held.iter().map(|h| h.path.clone()).collect();
    ctx.ui.verbose(|| {
        let shown: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
        format!(
            "holding {} for pid {} ({}){} until its standard input closes",
            shown.join(", "),
            record.owner,
            crate::ui::escape_controls(&record.command_line()),
            super::context::hold_notes(&record)
        )
    });
    let since = humantime::format_rfc3339_millis(SystemTime::now()).to_string();
    let shown: Vec<String> = paths
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    let reading = say(json!({"event": "held", "paths": shown, "since": since}));
    // Device tags (SPEC 4d), from a thread of their own, once the lock is held.
    *publisher.borrow_mut() = tags.and_then(|(config, after)| {
        let after = if took_over_tagged.get() {
            std::time::Duration::ZERO
        } else {
            after
        };
        let quiet = ctx.ui.quiet;
        let warn = Box::new(move |line: String| {
            if !quiet {
                crate::ui::say(&line);
            }
        });
        Publisher::start(config, record.clone(), paths.clone(), after, warn)
    });
    let (ended, held) = if reading {
        let on = |happened: Happened<'_>| match happened {
            Happened::Lost { path, how } => {
                lost.borrow_mut().push(path.to_owned());
                ctx.ui.warn(maybe_forced(path));
                say(lost_event(path, how))
            }
            Happened::Expired => {
                ctx.ui.warn(format!(
                    "held {} for {} (--max-hold); released it: the program (pid {}) goes on \
                     unprotected",
                    shown.join(", "),
                    humantime::format_duration(args.hold.max_hold.unwrap_or_default()),
                    record.owner
                ));
                say(json!({"event": "expired"}))
            }
        };
        supervise::hold(
            held,
            args.hold.max_hold,
            &caller,
            &mut signals,
            &notify,
            &on,
        )
    } else {
        // Nobody reads us: the caller is gone already.
        (Ended::CallerGone, Some(held))
    };
    if let Some(held) = held
        && let Err(err) = release_all(held, &notify)
    {
        crate::ui::say(&crate::exit::message(&err));
    }
    if let Some(publisher) = publisher.take() {
        publisher.finish(End::Released);
    }
    say(json!({"event": "released"}));
    // Unregistering the handlers one by one costs time at exit; the process
    // is about to end, which drops them all at once.
    std::mem::forget(signals);
    Ok(match ended {
        Ended::CallerGone => Exit::Ok.code(),
        Ended::Signal(signal) => signal_code(signal),
    })
}

/// The record: held by this process (mode `hold`) for its parent, the
/// program, named by pid, start time and command line where /proc says.
fn hold_record(args: &HoldCmdArgs) -> Record {
    let me = getpid().as_raw();
    // As PID 1 of a container there is no program: the lock is our own.
    let parent = Some(getppid().as_raw()).filter(|&p| p > 0);
    let info = parent.and_then(owner::proc_info);
    let cmd = info.as_ref().map(|i| i.cmd.clone()).unwrap_or_default();
    let mut record = Record::new(Mode::Hold, me, parent.unwrap_or(me), cmd);
    record.owner_start = info.map(|i| i.start);
    record.set_reason(args.hold.reason.as_deref());
    record.set_max_hold(args.hold.max_hold);
    record.shared = args.wait.shared;
    record
}

/// The `waiting` event.
fn waiting(
    path: &std::path::Path,
    held_by: Option<HeldBy>,
    holder: &str,
    record: Option<Value>,
) -> Value {
    json!({
        "event": "waiting",
        "path": path.to_string_lossy(),
        "held_by": held_by,
        "holder": holder,
        "record": record,
    })
}

/// The `lost` event: the file at `path` was removed or replaced.
fn lost_event(path: &std::path::Path, how: Released) -> Value {
    let why = match how {
        Released::Replaced => "replaced",
        _ => "removed",
    };
    json!({"event": "lost", "path": path.to_string_lossy(), "why": why})
}

/// Write one event line to stdout with one write(2), flushed. False when
/// nobody reads it any more (EPIPE: the caller is gone); another error (a
/// full disk under a redirected stdout) is not the caller's going.
fn say(event: Value) -> bool {
    let mut line = event.to_string();
    line.push('\n');
    let mut out = std::io::stdout().lock();
    match out.write_all(line.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => true,
        Err(err) => err.kind() != std::io::ErrorKind::BrokenPipe,
    }
}
