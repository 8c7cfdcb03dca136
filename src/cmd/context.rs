//! What every command shares: the context it runs in, and the lines that
//! more than one command says (the protocol's events, the uid-65534
//! refusal, a lock file removed under its holder).

use std::cell::{Cell, RefCell};
use std::path::Path;
use std::time::Duration;

use anyhow::Result;

use crate::cli::WaitArgs;
use crate::exit::{Exit, fail};
use crate::locate::Locations;
use crate::lock::owner::ProcId;
use crate::lock::probe::{HeldBy, SUPERVISOR_UID};
use crate::lock::record::Record;
use crate::lock::wait::WaitOpts;
use crate::lock::{Event, Held, Released};
use crate::supervisor_api::tags::{End, Publisher};
use crate::ui::Ui;

/// What every command needs: how to talk, and where the locks are.
pub(crate) struct Context {
    pub(crate) ui: Ui,
    pub(crate) locations: Locations,
}

/// Supervisors >= v13.1 treat lock files owned by uid 65534 as their own and
/// delete them, so a lock taken as that user would protect nothing.
pub(crate) fn refuse_nobody() -> Result<()> {
    if nix::unistd::geteuid().as_raw() == SUPERVISOR_UID {
        return Err(fail(
            Exit::NoPerm,
            "refusing to take the update lock as uid 65534 (nobody): supervisors >= v13.1 \
             treat lock files owned by uid 65534 as their own and delete them, so the lock \
             would not protect anything; run as another user",
        ));
    }
    Ok(())
}

/// Before `acquire` or `run` takes a detected lock: when nothing says a
/// supervisor runs here, or none provides the lock's directory, the lock
/// will be one nobody checks. Said once a call, every call (a directory an
/// earlier call made is no evidence), not with `-q`; never for `--path`,
/// which the user chose.
pub(crate) fn warn_unprotected(ctx: &Context) {
    let detection = &ctx.locations.detection;
    let paths = || {
        let paths: Vec<String> = ctx
            .locations
            .targets
            .iter()
            .map(|t| t.path.display().to_string())
            .collect();
        paths.join(", ")
    };
    if detection.supervisor_detected == Some(false) {
        ctx.ui.warn(format!(
            "no supervisor was detected (no supervisor variables such as \
             BALENA_SUPERVISOR_VERSION, no supervisor API address, no lock directory \
             mounted by a supervisor, not a balenaOS host): the lock {} is taken, but no \
             supervisor checks it, so it protects nothing from an update",
            paths()
        ));
        return;
    }
    if detection.lock_dir_found != Some(false) {
        return;
    }
    let dirs: Vec<String> = detection
        .missing_lock_dirs
        .iter()
        .map(|dir| dir.display().to_string())
        .collect();
    ctx.ui.warn(format!(
        "no supervisor lock directory was found at {}: the lock is taken there, but no \
         supervisor checks it, so it protects nothing from an update (a service that mounts \
         its own /tmp hides the supervisor's /tmp/balena)",
        dirs.join(", ")
    ));
}

/// How to wait, from `-n`, `-w`, `-E`; `owner`: an `acquire`'s owner.
pub(crate) fn wait_opts(args: &WaitArgs, owner: Option<ProcId>) -> WaitOpts {
    WaitOpts {
        nonblock: args.nonblock,
        timeout: args.timeout,
        busy_code: args.conflict_exit_code.unwrap_or(Exit::Busy.code()),
        owner,
        shared: args.shared,
    }
}

/// `-v`: why the lock is held and for how long at most, after its paths.
pub(crate) fn hold_notes(record: &crate::lock::record::Record) -> String {
    let mut notes = String::new();
    if let Some(reason) = &record.reason {
        notes.push_str(&format!(
            " (reason: {})",
            crate::ui::escape_controls(reason)
        ));
    }
    if let Some(max_hold) = record.max_hold() {
        let dur = humantime::format_duration(max_hold);
        notes.push_str(&format!("; --max-hold lets go of it after {dur}"));
    }
    notes
}

/// Why a lock file is removed under its holder, as far as we can tell.
const FORCED: &str = "the supervisor may have forced an update";

/// Why a removed or replaced lock file matters: the one way this is said.
pub(crate) fn maybe_forced(path: &Path) -> String {
    format!(
        "{}: our lock file was removed by someone else while we held it ({FORCED})",
        path.display()
    )
}

/// Say what the lock protocol did, as `-q` and `-v` allow.
pub(crate) fn tell(ui: &Ui, event: Event<'_>) {
    match event {
        Event::Waiting { path, holder } => {
            let hint = match holder.held_by {
                Some(HeldBy::Supervisor) => {
                    "; the supervisor is updating, the wait ends when it is done"
                }
                Some(HeldBy::Other) => {
                    "; not a resin-lock lock, so only a person can end this wait \
                     (remove it, or `resin-lock release --force`)"
                }
                _ => "",
            };
            ui.warn(format!(
                "waiting for {}: held by {}{hint}",
                path.display(),
                holder.holder()
            ));
        }
        Event::WaitingForDisplaced { path, record } => ui.warn(format!(
            "waiting for {}: its lock file was removed ({FORCED}), \
             but its holder still runs: {}; waiting for it to end",
            path.display(),
            crate::lock::inspect::Inspection::record_holder(record)
        )),
        Event::TookOverStale {
            path,
            reason,
            record,
        } => ui.verbose(|| {
            format!(
                "took over stale lock {} ({reason}; was resin-lock {} pid {})",
                path.display(),
                record.mode.as_str(),
                record.pid
            )
        }),
        Event::Released { path, how } => match how {
            Released::Removed => ui.verbose(|| format!("released {}", path.display())),
            Released::Left => {
                ui.verbose(|| format!("left {} to its other shared holders", path.display()))
            }
            Released::Gone => ui.warn(maybe_forced(path)),
            Released::Replaced => ui.warn(format!(
                "{}; another file is there now, left it alone",
                maybe_forced(path)
            )),
        },
    }
}

/// Device tags for this hold (SPEC 4d), when asked for (`--tag`, or
/// `BALENA_LOCK_TAGS`/`RESIN_LOCK_TAGS`): the supervisor API and how long a
/// hold lasts before it is published. Without the API, `--tag` says so in
/// one line; the variable alone says nothing but with `-v`: a fleet
/// variable reaches every service, and one without the API label would
/// otherwise warn at every lock it takes.
pub(crate) fn tag_plan(
    ui: &Ui,
    hold: &crate::cli::HoldArgs,
) -> Option<(crate::supervisor_api::Config, std::time::Duration)> {
    use crate::supervisor_api::tags;
    if !tags::wanted(hold.tag) {
        return None;
    }
    match crate::supervisor_api::Config::from_env() {
        Ok(config) => Some((config, hold.tag_after.unwrap_or(tags::DEFAULT_AFTER))),
        Err(missing) => {
            let line = || format!("device tags are off: they need the supervisor API: {missing}");
            if hold.tag {
                ui.warn(line());
            } else {
                ui.verbose(line);
            }
            None
        }
    }
}

/// A `run`'s or `hold`'s device tag (SPEC 4d): planned before the lock is
/// taken (the record says tags are on), published from a thread once every
/// path is held (at once where a tagged stale hold was taken over), ended
/// at the first release (`free` only if no other shared holder keeps the
/// lock), finished when the command ends.
pub(crate) struct HoldTag {
    plan: RefCell<Option<(crate::supervisor_api::Config, Duration)>>,
    took_over_tagged: Cell<bool>,
    publisher: RefCell<Option<Publisher>>,
}

impl HoldTag {
    /// The tag this hold will publish, if any; `record` says so.
    pub(crate) fn plan(ui: &Ui, hold: &crate::cli::HoldArgs, record: &mut Record) -> HoldTag {
        let plan = tag_plan(ui, hold);
        record.tag_after_ms = plan
            .as_ref()
            .map(|(_, after)| u64::try_from(after.as_millis()).unwrap_or(u64::MAX));
        HoldTag {
            plan: RefCell::new(plan),
            took_over_tagged: Cell::new(false),
            publisher: RefCell::new(None),
        }
    }

    /// What the lock layer reported, as far as the tag is concerned.
    pub(crate) fn event(&self, event: &Event<'_>) {
        if took_over_tagged(event) {
            self.took_over_tagged.set(true);
        }
        if let Event::Released { how, .. } = event
            && let Some(publisher) = self.publisher.borrow().as_ref()
        {
            publisher.end(match how {
                Released::Left => End::Left,
                _ => End::Released,
            });
        }
    }

    /// Start publishing, from a thread of its own, once `held` is held; the
    /// notes of what was sent go through the lock directories.
    pub(crate) fn start(&self, record: &Record, held: &[Held], ui: Ui) {
        let Some((config, after)) = self.plan.borrow_mut().take() else {
            return;
        };
        let after = if self.took_over_tagged.get() {
            Duration::ZERO
        } else {
            after
        };
        let dirs = held
            .iter()
            .filter_map(|h| h.dir_fd().try_clone_to_owned().ok())
            .collect();
        let warn = Box::new(move |line: String| {
            if !ui.quiet {
                crate::ui::say(&line);
            }
        });
        *self.publisher.borrow_mut() =
            Publisher::start(config, tag_hold(record), dirs, after, warn);
    }

    /// The lock is released: the tag's last word.
    pub(crate) fn finish(&self) {
        if let Some(publisher) = self.publisher.take() {
            publisher.finish(End::Released);
        }
    }
}

/// The facts of a hold that its device tag shows.
pub(crate) fn tag_hold(record: &crate::lock::record::Record) -> crate::supervisor_api::tags::Hold {
    crate::supervisor_api::tags::Hold {
        start: record.start.clone(),
        max_hold: record.max_hold(),
        mode: record.mode.as_str(),
        cmd: record.cmd.clone(),
        reason: record.reason.clone(),
    }
}

/// Whether a taken-over stale record had tags on: its tag may say `held`
/// or `stale` in the cloud, which the new hold puts right at once.
pub(crate) fn took_over_tagged(event: &Event<'_>) -> bool {
    matches!(event, Event::TookOverStale { record, .. } if record.tag_after_ms.is_some())
}
