//! One file per subcommand; each reads like the man page of that command.
//! What they share (the context, how the protocol's events are said) is
//! in `context`; this file only dispatches.

pub(crate) mod acquire;
pub(crate) mod context;
pub(crate) mod force_update;
pub(crate) mod hold;
pub(crate) mod host;
pub(crate) mod release;
pub(crate) mod run;
pub(crate) mod status;

use std::path::Path;

use anyhow::Result;

use crate::cli::{Cli, Command};
use crate::exit::{Exit, fail};
use crate::locate;
use crate::ui::Ui;
use context::Context;

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
        Command::Hold(args) => hold::run(&ctx, args),
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
