//! The command line, and nothing else: the man page and the shell completions
//! are generated from this definition (`cargo xtask gen`), so the doc comments
//! here are the user-facing help text.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand, ValueHint};

use crate::exit::Exit;

/// Block balena / resin.io supervisor updates while critical work runs.
///
/// resin-lock takes the app's update lock the way the device supervisor and
/// the balenaOS host check it (an exclusively created lock file, flocked for
/// as long as it is held), knows where that file lives on every supervisor and
/// host OS generation, and recovers safely from crashes.
#[derive(Debug, Parser)]
#[command(
    name = "resin-lock",
    version,
    propagate_version = true,
    max_term_width = 100
)]
pub struct Cli {
    /// Lock this file instead of the detected location (repeatable; taken in order, all or nothing).
    ///
    /// Without --path, the first rule that fits picks the lock: 1. the file named by
    /// BALENA_APP_LOCK_PATH or RESIN_APP_LOCK_PATH; 2. supervisor before v4:
    /// /data/resin-updates.lock; 3-5. supervisor v4 to v6: /tmp/resin/resin-updates.lock,
    /// and also /data/resin-updates.lock first unless the host OS is known to be 2.0 or later;
    /// 6. supervisor v7.0 to v7.21: /tmp/resin/resin-updates.lock; 7. supervisor v7.22 or
    /// later: /tmp/balena/updates.lock; 8. version unknown on a resinOS 1.x host: both
    /// /data and /tmp/resin locks; 9. /tmp/balena is a directory: /tmp/balena/updates.lock;
    /// 10. otherwise /tmp/resin/resin-updates.lock. The versions come from
    /// BALENA_/RESIN_SUPERVISOR_VERSION and BALENA_/RESIN_HOST_OS_VERSION (or the host's
    /// /etc/os-release). `resin-lock status` shows the rule and why.
    #[arg(
        long = "path",
        value_name = "PATH",
        value_hint = ValueHint::FilePath,
        global = true,
        env = "RESIN_LOCK_PATH"
    )]
    pub paths: Vec<PathBuf>,

    /// Resolve detected lock paths and detection files under DIR (never --path).
    ///
    /// Every detected lock path (also one from BALENA_APP_LOCK_PATH), /etc/os-release and
    /// /tmp/balena are taken relative to DIR, for host-side tools and tests. A path given
    /// with --path or RESIN_LOCK_PATH is used as it is.
    #[arg(
        long,
        value_name = "DIR",
        value_hint = ValueHint::DirPath,
        global = true,
        env = "RESIN_LOCK_ROOT"
    )]
    pub root: Option<PathBuf>,

    /// Say what was done and why (also: who holds the lock while waiting).
    #[arg(short, long, global = true, conflicts_with = "quiet")]
    pub verbose: bool,

    /// Print nothing but errors.
    #[arg(short, long, global = true)]
    pub quiet: bool,

    #[command(subcommand)]
    pub command: Command,
}

/// `defer`: a subcommand's arguments are built only when it is the one
/// invoked (or for help, the man page and completions). Building all of
/// them cost every start about as much as the work of `status`.
#[derive(Debug, Subcommand)]
#[command(defer = true)]
pub enum Command {
    /// Take the update lock and keep it after this command returns, until `release`.
    ///
    /// A small keeper process holds the lock until `resin-lock release` or
    /// until the owner process exits (the parent of this command, or --owner).
    /// If the owner exits without releasing, the lock file stays (updates stay
    /// blocked) but is stale, and the next acquire or run takes it over.
    /// Callers that start resin-lock through a transient shell (Node's
    /// execSync, Python's shell=True) must pass --owner with their own pid.
    Acquire(AcquireArgs),

    /// Give the lock back.
    ///
    /// Removes a lock taken by `resin-lock acquire` (stopping its keeper) or a
    /// stale resin-lock lock. Refuses a lock held by a running `resin-lock run`
    /// and any foreign lock (the supervisor's, another tool's, a directory, a
    /// symlink) unless --force. Releasing a lock that is not there is not an
    /// error.
    Release(ReleaseArgs),

    /// Take the lock, run CMD, release the lock when CMD ends, exit as CMD did.
    ///
    /// CMD inherits stdin, stdout, stderr, the environment (plus
    /// RESIN_LOCK_HELD, the lock paths joined by ':') and the locked file
    /// descriptor, so the lock stays live even if resin-lock itself is killed.
    /// Signals sent to resin-lock (HUP INT QUIT TERM USR1 USR2 WINCH CONT ALRM
    /// PIPE TSTP TTIN TTOU) are forwarded to CMD; signals typed at the
    /// terminal reach CMD once, directly. A signal that arrives while still
    /// waiting for the lock ends the wait (exit 128+signal, nothing held). As
    /// PID 1 or as a subreaper it reaps orphaned zombies.
    Run(RunArgs),

    /// Report every lock path, its holder, and how the paths were chosen.
    ///
    /// Exits 0 when no lock file exists (updates are allowed), 1 when one does
    /// (held or stale: both block the supervisor).
    Status(StatusArgs),

    /// Ask the supervisor to update now, overriding update locks.
    ///
    /// Sends POST /v1/update {"force":true} to the supervisor API. Needs
    /// BALENA_SUPERVISOR_ADDRESS and BALENA_SUPERVISOR_API_KEY (or the RESIN_
    /// names), which the supervisor provides to services with the
    /// io.balena.features.supervisor-api label.
    ForceUpdate,
}

// How to wait for a busy lock (shared by `acquire` and `run`). Not a doc
// comment: a deferred subcommand would take it as its own description.
#[derive(Debug, Clone, Args)]
pub struct WaitArgs {
    /// Fail at once if the lock is busy instead of waiting.
    #[arg(short = 'n', long, conflicts_with = "timeout")]
    pub nonblock: bool,

    /// Give up after DUR (seconds, or with a unit: 250ms, 30s, 5m, 1h).
    #[arg(
        short = 'w',
        long,
        value_name = "DUR",
        value_hint = ValueHint::Other,
        value_parser = crate::duration::parse
    )]
    pub timeout: Option<Duration>,

    /// Exit with CODE instead of 1 when the lock is busy (-n) or the wait times out (-w).
    #[arg(
        short = 'E',
        long = "conflict-exit-code",
        value_name = "CODE",
        value_hint = ValueHint::Other
    )]
    pub conflict_exit_code: Option<u8>,
}

#[derive(Debug, Args)]
pub struct AcquireArgs {
    #[command(flatten)]
    pub wait: WaitArgs,

    /// Keep the lock while process PID lives (default: the parent process).
    #[arg(long, value_name = "PID", value_hint = ValueHint::Other)]
    pub owner: Option<i32>,
}

#[derive(Debug, Args)]
pub struct ReleaseArgs {
    /// Also remove foreign locks and locks held by a running `resin-lock run`.
    #[arg(short, long)]
    pub force: bool,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub wait: WaitArgs,

    /// The command to run while holding the lock, and its arguments.
    #[arg(
        value_name = "CMD",
        value_hint = ValueHint::CommandWithArguments,
        required = true,
        num_args = 1..,
        trailing_var_arg = true,
        allow_hyphen_values = true
    )]
    pub cmd: Vec<OsString>,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,

    /// Also ask the supervisor API whether an update is pending.
    #[arg(long)]
    pub supervisor: bool,
}

/// The clap command, for parsing and for the man page and completion
/// generators. Its subcommands get their arguments when built (see
/// `Command`). The exit-status table after the help comes from `exit.rs`.
pub fn command() -> clap::Command {
    Cli::command().after_help(format!(
        "{}\nSee resin-lock(1) for the lock locations and the protocol.",
        crate::exit::help_table()
    ))
}

/// Parse the process arguments; on failure print the message and return
/// the exit status (0 for --help/--version, 64 for usage errors, not clap's 2).
pub fn parse() -> Result<Cli, u8> {
    let args: Vec<OsString> = std::env::args_os().collect();
    let mut cmd = command();
    cmd.try_get_matches_from_mut(&args)
        .and_then(|mut matches| Cli::from_arg_matches_mut(&mut matches))
        .map_err(|err| {
            if !err.use_stderr() {
                // --help, --version. A closed stdout is not worth a second error.
                let _ = err.print();
                return Exit::Ok.code();
            }
            eprint!("{}", usage_error(&err.format(&mut cmd), &mut cmd, &args));
            Exit::Usage.code()
        })
}

/// A usage error in resin-lock's voice: `resin-lock: <what>` on one line
/// (clap's message, with its tips folded in), then the usage of the command
/// the user typed. Not clap's own usage line, which puts an option it
/// suggests (`--json` for `--jsn`) in it as if the user had typed it.
fn usage_error(err: &clap::Error, cmd: &mut clap::Command, args: &[OsString]) -> String {
    let what = if err.kind() == clap::error::ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
        let names: Vec<&str> = cmd
            .get_subcommands()
            .filter(|sub| !sub.is_hide_set() && sub.get_name() != "help")
            .map(|sub| sub.get_name())
            .collect();
        format!(
            "no command given: one of {}; see resin-lock --help",
            names.join(", ")
        )
    } else {
        clap_message(&err.render().to_string())
    };
    cmd.build();
    let typed = typed_subcommand(cmd, args);
    let usage = match typed.and_then(|name| cmd.find_subcommand_mut(&name)) {
        Some(sub) => sub.render_usage(),
        None => cmd.render_usage(),
    };
    format!("resin-lock: {what}\n{usage}\n")
}

/// clap's rendered error as one line: the message without `error: `, its
/// continuation lines (e.g. the missing arguments) and `tip:` lines
/// appended, without the usage and the "For more information" lines.
fn clap_message(rendered: &str) -> String {
    let mut lines = rendered.lines();
    let first = lines.next().unwrap_or_default();
    let mut what = first.strip_prefix("error: ").unwrap_or(first).to_owned();
    let mut items = Vec::new();
    let mut in_usage = false;
    for line in lines {
        let line = line.trim();
        if line.is_empty() {
            in_usage = false;
        } else if line.starts_with("Usage:") {
            in_usage = true;
        } else if in_usage || line.starts_with("For more information") {
        } else if let Some(tip) = line.strip_prefix("tip: ") {
            what.push_str("; ");
            what.push_str(tip);
        } else {
            items.push(line);
        }
    }
    if !items.is_empty() {
        what.push(' ');
        what.push_str(&items.join(", "));
    }
    what
}

/// The subcommand the user typed: the first word that is not an option or
/// the value of a global option.
fn typed_subcommand(cmd: &clap::Command, args: &[OsString]) -> Option<String> {
    let takes_value: Vec<String> = cmd
        .get_arguments()
        .filter(|arg| arg.get_action().takes_values() && !arg.is_positional())
        .flat_map(|arg| {
            let long = arg.get_long().map(|long| format!("--{long}"));
            let short = arg.get_short().map(|short| format!("-{short}"));
            long.into_iter().chain(short)
        })
        .collect();
    let mut words = args.iter().skip(1);
    while let Some(word) = words.next() {
        let word = word.to_str()?;
        if word == "--" {
            return None;
        }
        if word.starts_with('-') {
            if takes_value.iter().any(|option| option == word) {
                words.next();
            }
            continue;
        }
        return cmd
            .find_subcommand(word)
            .map(|sub| sub.get_name().to_owned());
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verify_cli() {
        Cli::command().debug_assert();
    }

    #[test]
    fn run_takes_hyphenated_command_arguments() {
        let cli = Cli::try_parse_from(["resin-lock", "run", "-n", "--", "ls", "-l"]).unwrap();
        let Command::Run(run) = cli.command else {
            panic!("not run")
        };
        assert!(run.wait.nonblock);
        assert_eq!(run.cmd, ["ls", "-l"]);
    }
}
