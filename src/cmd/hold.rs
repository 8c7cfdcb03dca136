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
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use anyhow::{Context as _, Result};
use nix::unistd::{getpid, getppid};
use serde_json::{Value, json};

use super::context::{Context, HoldTag, maybe_forced, refuse_nobody, tell, wait_opts};
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

pub fn run(ctx: &Context, args: HoldCmdArgs) -> Result<u8> {
    refuse_nobody()?;
    super::context::warn_unprotected(ctx);
    // Before anything can be waited for: no signal and no hangup is missed.
    let mut signals = SignalWatch::new(ABORT_WAIT).context("cannot install signal handlers")?;
    let caller = CallerWatch::start().context("cannot watch standard input")?;
    let mut record = hold_record(&args);
    let tag = HoldTag::plan(&ctx.ui, &args.hold, &mut record);
    let out = Stdout::default();
    let notify = |event: Event<'_>| {
        tag.event(&event);
        out.waiting(&event);
        match event {
            // A removal noticed only at release is said then (SPEC 2a);
            // one said already is not said again.
            Event::Released {
                path,
                how: how @ (Released::Gone | Released::Replaced),
            } if out.holding.get() => {
                if out.first_loss(path) {
                    out.lost(path, how);
                    tell(&ctx.ui, event);
                }
            }
            event => tell(&ctx.ui, event),
        }
    };

    // Take the lock as `run` does; the caller going away ends the wait.
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
    let reading = out.held(&paths);
    tag.start(&record, &held, ctx.ui);

    // Hold it until the caller is gone or a signal ends it.
    let (ended, held) = if reading {
        let on = |happened: Happened<'_>| match happened {
            Happened::Lost { path, how } => {
                out.first_loss(path);
                ctx.ui.warn(maybe_forced(path));
                out.lost(path, how)
            }
            Happened::Expired => {
                ctx.ui.warn(expired_message(&paths, &args, record.owner));
                out.say(json!({"event": "expired"}))
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

    // Release it, say so, and exit.
    if let Some(held) = held
        && let Err(err) = release_all(held, &notify)
    {
        crate::ui::say(&crate::exit::message(&err));
    }
    tag.finish();
    out.say(json!({"event": "released"}));
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

/// The line on stderr at `--max-hold`.
fn expired_message(paths: &[PathBuf], args: &HoldCmdArgs, owner: i32) -> String {
    let shown: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
    format!(
        "held {} for {} (--max-hold); released it: the program (pid {owner}) goes on unprotected",
        shown.join(", "),
        humantime::format_duration(args.hold.max_hold.unwrap_or_default()),
    )
}

/// What hold says on stdout: the protocol's events, each once where it
/// must be.
#[derive(Default)]
struct Stdout {
    said_waiting: Cell<bool>,
    /// `held` was said: news about the lock may follow (a lock let go of
    /// while the others are still being taken, all or nothing, is none).
    holding: Cell<bool>,
    /// Paths said lost: each once, also when its release finds it gone
    /// (`first_loss`).
    lost: RefCell<Vec<PathBuf>>,
}

impl Stdout {
    /// `waiting`, at most once, when the protocol says a wait begins.
    fn waiting(&self, event: &Event<'_>) {
        let (path, held_by, holder, record) = match event {
            Event::Waiting { path, holder } => {
                (path, holder.held_by, holder.holder(), holder.record.clone())
            }
            Event::WaitingForDisplaced { path, record } => (
                path,
                Some(HeldBy::ResinLock),
                format!(
                    "{} (its lock file was removed, but it still runs)",
                    Inspection::record_holder(record)
                ),
                serde_json::to_value(record).ok(),
            ),
            _ => return,
        };
        if !self.said_waiting.replace(true) {
            self.say(json!({
                "event": "waiting",
                "path": path.to_string_lossy(),
                "held_by": held_by,
                "holder": holder,
                "record": record,
            }));
        }
    }

    /// `held`: every path taken, and since when. False when nobody reads.
    fn held(&self, paths: &[PathBuf]) -> bool {
        let since = humantime::format_rfc3339_millis(SystemTime::now()).to_string();
        let paths: Vec<String> = paths
            .iter()
            .map(|p| p.to_string_lossy().into_owned())
            .collect();
        self.holding.set(true);
        self.say(json!({"event": "held", "paths": paths, "since": since}))
    }

    /// Whether `path` is said lost for the first time (from now on it is).
    fn first_loss(&self, path: &Path) -> bool {
        if self.lost.borrow().iter().any(|p| p == path) {
            return false;
        }
        self.lost.borrow_mut().push(path.to_owned());
        true
    }

    /// `lost`: the file at `path` was removed or replaced. False when
    /// nobody reads.
    fn lost(&self, path: &Path, how: Released) -> bool {
        let why = match how {
            Released::Replaced => "replaced",
            _ => "removed",
        };
        self.say(json!({"event": "lost", "path": path.to_string_lossy(), "why": why}))
    }

    /// One event line, with one write(2), flushed. False when nobody reads
    /// it any more (EPIPE: the caller is gone); another error (a full disk
    /// under a redirected stdout) is not the caller's going.
    fn say(&self, event: Value) -> bool {
        let mut line = event.to_string();
        line.push('\n');
        let mut out = std::io::stdout().lock();
        match out.write_all(line.as_bytes()).and_then(|()| out.flush()) {
            Ok(()) => true,
            Err(err) => err.kind() != std::io::ErrorKind::BrokenPipe,
        }
    }
}
