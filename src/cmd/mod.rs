//! One file per subcommand; each reads like the man page of that command.

pub(crate) mod acquire;
pub(crate) mod force_update;
pub(crate) mod host;
pub(crate) mod release;
pub(crate) mod run;
pub(crate) mod status;

use std::path::Path;

use anyhow::Result;

use crate::cli::{Cli, Command, WaitArgs};
use crate::exit::{Exit, fail};
use crate::locate::{self, Locations};
use crate::lock::inspect::{HeldBy, SUPERVISOR_UID};
use crate::lock::owner::ProcId;
use crate::lock::wait::WaitOpts;
use crate::lock::{Event, Released};
use crate::ui::Ui;

/// What every command needs: how to talk, and where the locks are.
pub(crate) struct Context {
    pub(crate) ui: Ui,
    pub(crate) locations: Locations,
}

/// Run the parsed command; the result is the exit status.
pub fn dispatch(cli: Cli) -> Result<u8> {
    let ui = Ui {
        verbose: cli.verbose,
        quiet: cli.quiet,
    };
    if cli.paths.len() > crate::sys::MAX_PATHS {
        return Err(fail(
            Exit::Usage,
            format!(
                "too many --path options ({}, at most {})",
                cli.paths.len(),
                crate::sys::MAX_PATHS
            ),
        ));
    }
    if let Some(root) = &cli.root {
        check_root(root)?;
    }
    let ctx = Context {
        ui,
        locations: locate::resolve(&cli.paths, cli.root.as_deref()),
    };
    ctx.ui.verbose(|| {
        format!(
            "lock paths: {} ({})",
            ctx.locations
                .targets
                .iter()
                .map(|t| t.path.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
            ctx.locations.detection.explanation
        )
    });
    match cli.command {
        Command::Acquire(args) => acquire::run(&ctx, args),
        Command::Release(args) => release::run(&ctx, args),
        Command::Run(args) => run::run(&ctx, args),
        Command::Status(args) => status::run(&ctx, args),
        Command::ForceUpdate => force_update::run(&ctx),
    }
}

/// `--root` (or RESIN_LOCK_ROOT) must name an existing directory: a typo
/// must not make resin-lock create a new tree and lock there.
fn check_root(root: &Path) -> Result<()> {
    let why = match std::fs::metadata(root) {
        Ok(meta) if meta.is_dir() => return Ok(()),
        Ok(_) => "not a directory".to_owned(),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => "no such directory".to_owned(),
        Err(err) => err.to_string(),
    };
    Err(fail(
        Exit::Usage,
        format!(
            "root directory {} (--root or RESIN_LOCK_ROOT): {why}",
            root.display()
        ),
    ))
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
