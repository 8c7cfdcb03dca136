//! The command line, and nothing else: the man page and the shell completions
//! are generated from this definition (`cargo xtask gen`), so the doc comments
//! here are the user-facing help text.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand, ValueHint};

use crate::exit::Exit;
use crate::lock::owner::OwnerChoice;

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
    ///
    /// Without --path, RESIN_LOCK_PATH may name the locks: one path, or several joined by
    /// ':' (as RESIN_LOCK_HELD gives them to `run`'s command). Empty counts as unset.
    // `env` is here for --help and the man page; `parse` reads the variable
    // itself (empty is unset, ':' separates paths), which clap cannot.
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
    /// with --path or RESIN_LOCK_PATH is used as it is. DIR must exist (exit 64 otherwise);
    /// nothing under it is reached through a symlink that leads outside it. An empty
    /// RESIN_LOCK_ROOT counts as unset.
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
    /// until the owner process exits. The owner is the nearest ancestor that
    /// is not a transient wrapper: a shell running `-c STRING` (Node's
    /// execSync, Python's shell=True, system(3)) or sudo, doas, su, timeout,
    /// time, chronic, strace, setsid are skipped; PID 1 never is. --owner
    /// parent means exactly the parent; --owner PID names it. If the owner
    /// exits without releasing, the lock file stays (updates stay blocked) but
    /// is stale, and the next acquire or run takes it over. An acquire whose
    /// owner already holds the lock fails at once.
    ///
    /// With --max-hold DUR, the keeper lets go of the lock DUR after it was
    /// taken (the file is removed, updates may go on) and says so in one line
    /// on the owner's stderr; the owner is not signalled.
    Acquire(AcquireArgs),

    /// Give the lock back.
    ///
    /// Removes a lock taken by `resin-lock acquire` (stopping its keeper) when
    /// the caller owns it: the lock's owner is the caller, one of its
    /// ancestors, or --owner (owners are matched by pid and start time).
    /// Removes a stale resin-lock lock for anyone. Refuses (exit 1) someone
    /// else's acquire lock, a lock held by a running `resin-lock run` and any
    /// foreign lock (the supervisor's, another tool's, a directory, a
    /// symlink) unless --force. Releasing a lock that is not there is not an
    /// error.
    Release(ReleaseArgs),

    /// Take the lock, run CMD, release the lock when CMD ends, exit as CMD did.
    ///
    /// CMD inherits stdin, stdout, stderr, the environment (plus
    /// RESIN_LOCK_HELD, the lock paths joined by ':') and the locked file
    /// descriptor, so the lock stays live even if resin-lock itself is killed.
    /// Signals sent to resin-lock (HUP INT QUIT TERM USR1 USR2 WINCH CONT ALRM
    /// PIPE TSTP TTIN TTOU) are forwarded to CMD (with -g, to its process
    /// group); signals typed at the terminal reach CMD once, directly. A
    /// signal that arrives while still waiting for the lock ends the wait
    /// (exit 128+signal, nothing held). As PID 1 or as a subreaper it reaps
    /// orphaned zombies; if CMD ends while processes it started still run,
    /// one line names them before the lock is released (it no longer
    /// protects them).
    ///
    /// With --max-hold DUR, the lock is released DUR after it was taken if
    /// CMD still runs: one line on stderr says so, and CMD is neither
    /// signalled nor stopped: it goes on running, unprotected (an update may
    /// now stop it). resin-lock keeps forwarding signals, waits for CMD and
    /// exits as CMD did.
    ///
    /// Options go before CMD, attached or not (-w5, -w 5, --timeout=5,
    /// -nE75); an unknown one is a usage error (64), never the command. CMD
    /// starts at `--` or at the first word that is not an option, and every
    /// word after it is CMD's (`run ls -l` runs `ls -l`).
    Run(RunArgs),

    /// Report every lock path, its holder, and how the paths were chosen.
    ///
    /// Exits 0 when no lock file exists (updates are allowed), 1 when one does
    /// (held or stale: both block the supervisor).
    /// With --health, exits 1 only when a lock blocks updates for nothing (a
    /// HEALTHCHECK).
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
    // `-w -1` reaches the duration parser, which says why it is wrong.
    #[arg(
        short = 'w',
        long,
        value_name = "DUR",
        value_hint = ValueHint::Other,
        value_parser = crate::duration::parse,
        allow_negative_numbers = true
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

    /// Share the lock: several holders at once (LOCK_SH), each blocking updates; the last one out removes it.
    ///
    /// A shared taker waits only for an exclusive holder or a foreign lock;
    /// an exclusive one waits until every shared holder is gone.
    #[arg(short = 's', long)]
    pub shared: bool,
}

// What the lock says about itself, and how long it may last (shared by
// `acquire` and `run`). Not a doc comment, as `WaitArgs`.
#[derive(Debug, Clone, Args)]
pub struct HoldArgs {
    /// Why the lock is held, stored in the lock file and shown by `status`, -v and waiters.
    ///
    /// At most 256 bytes are kept (a longer TEXT is cut, and the record says so).
    #[arg(long, value_name = "TEXT", value_hint = ValueHint::Other)]
    pub reason: Option<String>,

    /// Let go of the lock after DUR even if the work goes on (off by default).
    ///
    /// One line on stderr says so. For devices where a hung job must never block
    /// updates forever. DUR as for --timeout. The lock file also records DUR.
    #[arg(
        long,
        value_name = "DUR",
        value_hint = ValueHint::Other,
        value_parser = crate::duration::parse,
        allow_negative_numbers = true
    )]
    pub max_hold: Option<Duration>,
}

#[derive(Debug, Args)]
pub struct AcquireArgs {
    #[command(flatten)]
    pub wait: WaitArgs,

    #[command(flatten)]
    pub hold: HoldArgs,

    /// Keep the lock while process PID lives; `parent`: exactly the parent
    /// (default: the nearest ancestor that is not a transient wrapper).
    #[arg(long, value_name = "PID|parent", value_parser = parse_owner, value_hint = ValueHint::Other)]
    pub owner: Option<OwnerChoice>,
}

#[derive(Debug, Args)]
pub struct ReleaseArgs {
    /// Also remove someone else's acquire lock, foreign locks and locks held
    /// by a running `resin-lock run`.
    #[arg(short, long)]
    pub force: bool,

    /// Release the lock of owner PID (an ancestor of the caller always counts).
    #[arg(long, value_name = "PID|parent", value_parser = parse_owner, value_hint = ValueHint::Other)]
    pub owner: Option<OwnerChoice>,

    /// After the lock is released, ask the supervisor to apply a pending update now.
    ///
    /// Asks GET /v1/device; when it says update_pending, or cannot say (an
    /// error, a bad answer), sends POST /v1/update {"force":false,"cancel":true},
    /// which applies the update (respecting other locks) instead of after the
    /// supervisor's backoff of up to 15 minutes. Needs the supervisor API
    /// (BALENA_SUPERVISOR_ADDRESS and _API_KEY, or the RESIN_ names: the
    /// io.balena.features.supervisor-api label). Best effort and bounded (at
    /// most 2 s): when the API is not configured or the supervisor does not
    /// accept, one warning line says so (silenced by -q) and the exit status
    /// stays as it would be without this option. -v says what was asked and
    /// the answer.
    #[arg(long)]
    pub update_now: bool,
}

/// `--owner`: a process id, or `parent`.
fn parse_owner(value: &str) -> Result<OwnerChoice, String> {
    if value == "parent" {
        return Ok(OwnerChoice::Parent);
    }
    match value.parse::<i32>() {
        Ok(pid) if pid > 0 => Ok(OwnerChoice::Pid(pid)),
        _ => Err(format!("`{value}` is not a process id or `parent`")),
    }
}

#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub wait: WaitArgs,

    #[command(flatten)]
    pub hold: HoldArgs,

    /// Run CMD in its own process group and send forwarded signals to the whole group.
    ///
    /// As tini's -g: `docker stop` (SIGTERM) then also reaches what CMD
    /// started in the background. At a terminal, CMD's group becomes the
    /// foreground group, so Ctrl-C and Ctrl-Z reach it directly, and the
    /// terminal comes back when CMD ends.
    #[arg(short, long)]
    pub group: bool,

    /// After the lock is released, ask the supervisor to apply a pending update now.
    ///
    /// Asks GET /v1/device; when it says update_pending, or cannot say (an
    /// error, a bad answer), sends POST /v1/update {"force":false,"cancel":true},
    /// which applies the update (respecting other locks) instead of after the
    /// supervisor's backoff of up to 15 minutes. Needs the supervisor API
    /// (BALENA_SUPERVISOR_ADDRESS and _API_KEY, or the RESIN_ names: the
    /// io.balena.features.supervisor-api label). Best effort and bounded (at
    /// most 2 s): when the API is not configured or the supervisor does not
    /// accept, one warning line says so (silenced by -q) and the exit status
    /// stays as it would be without this option. -v says what was asked and
    /// the answer.
    #[arg(long)]
    pub update_now: bool,

    /// The command to run while holding the lock, and its arguments.
    #[arg(
        value_name = "CMD",
        value_hint = ValueHint::CommandWithArguments,
        required = true,
        num_args = 1..,
        trailing_var_arg = true
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

    /// From the balenaOS host: every app's locks under /tmp/balena-supervisor/services.
    ///
    /// Lists each updates.lock and resin-updates.lock under
    /// ROOT/tmp/balena-supervisor/services/<appId>/<service>/ (ROOT: --root, else
    /// /): the app and service, whether it is held, stale or foreign (the
    /// supervisor's own, uid 65534, or another tool's), the holder from its
    /// record (pids are in the container's pid namespace, not the host's), the
    /// reason, for how long, and what it blocks: the supervisor (any lock file
    /// but its own) and safe_reboot, the host OS's reboot check (`flock -nx` on
    /// files named updates.lock only). Also whether the supervisor overrides
    /// locks (SUPERVISOR_OVERRIDE_LOCK in ROOT/tmp/balena-supervisor/target-state-config).
    /// --path does not apply. Exit 0 when no lock file exists, 1 when one does.
    #[arg(long, conflicts_with_all = ["supervisor", "health"])]
    pub host: bool,

    /// For a Docker HEALTHCHECK: exit 1 only when a lock blocks updates for nothing.
    ///
    /// Unhealthy (exit 1): a stale lock (its holder is gone, or it is from a previous
    /// boot), or, with --max-hold, a lock held longer than DUR. Healthy (exit 0): no lock,
    /// or a lock held by a live holder or by the supervisor (it is updating). One line
    /// says why (with --json: the report, plus `healthy` and `health`).
    #[arg(long)]
    pub health: bool,

    /// With --health: a lock held longer than DUR is unhealthy too.
    #[arg(
        long,
        value_name = "DUR",
        requires = "health",
        value_hint = ValueHint::Other,
        value_parser = crate::duration::parse,
        allow_negative_numbers = true
    )]
    pub max_hold: Option<Duration>,
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
    let mut cmd = parsing_command();
    parse_with(&mut cmd, &args, |name| std::env::var_os(name)).map_err(|err| {
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

/// Parse `args`, with `env` for the environment variables. An empty
/// RESIN_LOCK_PATH or RESIN_LOCK_ROOT counts as unset (compose's `${VAR}`
/// with VAR unset gives one), and RESIN_LOCK_PATH may hold several paths
/// joined by ':'. clap would take an empty variable for a missing value
/// (exit 64) and the whole list for one path, so these two are read here.
pub fn parse_from<I, T>(args: I, env: impl Fn(&str) -> Option<OsString>) -> clap::error::Result<Cli>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let args: Vec<OsString> = args.into_iter().map(Into::into).collect();
    parse_with(&mut parsing_command(), &args, env)
}

/// The command as parsed: clap's `env` is off for --path and --root, whose
/// variables `parse_with` reads itself (empty is unset, `:` separates paths).
fn parsing_command() -> clap::Command {
    use clap::builder::Resettable;
    command()
        .mut_arg("paths", |arg| arg.env(Resettable::Reset))
        .mut_arg("root", |arg| arg.env(Resettable::Reset))
}

fn parse_with(
    cmd: &mut clap::Command,
    args: &[OsString],
    env: impl Fn(&str) -> Option<OsString>,
) -> clap::error::Result<Cli> {
    let mut matches = cmd.try_get_matches_from_mut(args)?;
    let mut cli = Cli::from_arg_matches_mut(&mut matches)?;
    if cli.paths.is_empty() {
        cli.paths = split_paths(&env("RESIN_LOCK_PATH").unwrap_or_default());
    }
    if cli.root.is_none() {
        cli.root = env("RESIN_LOCK_ROOT")
            .filter(|root| !root.is_empty())
            .map(PathBuf::from);
    }
    Ok(cli)
}

/// Paths joined by ':' (as in RESIN_LOCK_HELD); empty ones are skipped.
fn split_paths(joined: &OsString) -> Vec<PathBuf> {
    use std::os::unix::ffi::OsStrExt;
    joined
        .as_bytes()
        .split(|&b| b == b':')
        .filter(|path| !path.is_empty())
        .map(|path| PathBuf::from(std::ffi::OsStr::from_bytes(path)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verify_cli() {
        Cli::command().debug_assert();
    }

    /// What `run ARGS…` parses to: -n, -w in seconds, -E, -g, CMD.
    type Parsed = (bool, Option<u64>, Option<u8>, bool, Vec<String>);

    fn parse_run(args: &[&str]) -> Result<Parsed, clap::error::ErrorKind> {
        let cli = Cli::try_parse_from(["resin-lock", "run"].iter().chain(args))
            .map_err(|err| err.kind())?;
        let Command::Run(run) = cli.command else {
            panic!("not run")
        };
        Ok((
            run.wait.nonblock,
            run.wait.timeout.map(|d| d.as_secs()),
            run.wait.conflict_exit_code,
            run.group,
            run.cmd
                .iter()
                .map(|w| w.to_string_lossy().into_owned())
                .collect(),
        ))
    }

    /// SPEC 4: options are options wherever they stand before CMD; CMD
    /// starts at `--` or at the first word that is not an option, and
    /// everything after it is CMD's.
    #[test]
    fn run_options_parse_before_cmd_and_never_become_it() {
        use clap::error::ErrorKind::*;
        let ok = |n, w, e, g, cmd: &[&str]| -> Result<Parsed, clap::error::ErrorKind> {
            Ok((n, w, e, g, cmd.iter().map(|s| s.to_string()).collect()))
        };
        #[rustfmt::skip]
        let cases: &[(&[&str], Result<Parsed, clap::error::ErrorKind>)] = &[
            (&["-w5", "-E75", "cmd"], ok(false, Some(5), Some(75), false, &["cmd"])),
            (&["-w", "5", "--", "cmd"], ok(false, Some(5), None, false, &["cmd"])),
            (&["--timeout=5", "cmd"], ok(false, Some(5), None, false, &["cmd"])),
            (&["--timeout", "5", "cmd"], ok(false, Some(5), None, false, &["cmd"])),
            (&["-w1", "--", "true"], ok(false, Some(1), None, false, &["true"])),
            (&["-n", "-E75", "--", "true"], ok(true, None, Some(75), false, &["true"])),
            (&["-nE75", "true"], ok(true, None, Some(75), false, &["true"])),
            (&["-E", "75", "-n", "true"], ok(true, None, Some(75), false, &["true"])),
            (&["--conflict-exit-code=75", "-n", "true"], ok(true, None, Some(75), false, &["true"])),
            (&["-g", "--", "sh", "-c", "x"], ok(false, None, None, true, &["sh", "-c", "x"])),
            (&["--group", "-n", "sh"], ok(true, None, None, true, &["sh"])),
            (&["-gnE75", "sh"], ok(true, None, Some(75), true, &["sh"])),
            (&["sh", "-g"], ok(false, None, None, false, &["sh", "-g"])),
            // Everything after CMD is CMD's, options and `--` included.
            (&["ls", "-l"], ok(false, None, None, false, &["ls", "-l"])),
            (&["-n", "--", "ls", "-l"], ok(true, None, None, false, &["ls", "-l"])),
            (&["ls", "-w5", "-n", "--timeout=3"], ok(false, None, None, false, &["ls", "-w5", "-n", "--timeout=3"])),
            (&["sh", "-c", "x", "--", "y"], ok(false, None, None, false, &["sh", "-c", "x", "--", "y"])),
            (&["--", "-w5"], ok(false, None, None, false, &["-w5"])),
            (&["--", "--", "x"], ok(false, None, None, false, &["--", "x"])),
            // Unknown options before CMD are errors, never the command.
            (&["--timout", "5", "--", "x"], Err(UnknownArgument)),
            (&["-x", "--", "true"], Err(UnknownArgument)),
            (&["-n", "-Z", "true"], Err(UnknownArgument)),
            (&["-wabc", "true"], Err(ValueValidation)),
            (&["-w", "-1", "true"], Err(ValueValidation)),
            (&["-E300", "true"], Err(ValueValidation)),
            (&["-n", "-w5", "true"], Err(ArgumentConflict)),
            // No command.
            (&[], Err(MissingRequiredArgument)),
            (&["--"], Err(MissingRequiredArgument)),
            (&["-n"], Err(MissingRequiredArgument)),
        ];
        for (args, want) in cases {
            assert_eq!(&parse_run(args), want, "run {args:?}");
        }
    }

    /// Arguments, RESIN_LOCK_PATH, RESIN_LOCK_ROOT => paths, root.
    type EnvCase = (
        &'static [&'static str],
        Option<&'static str>,
        Option<&'static str>,
        Vec<PathBuf>,
        Option<PathBuf>,
    );

    #[test]
    fn lock_path_and_root_variables_empty_is_unset_and_paths_split_on_colons() {
        let parse = |args: &[&str], path: Option<&str>, root: Option<&str>| {
            let env = |name: &str| match name {
                "RESIN_LOCK_PATH" => path.map(OsString::from),
                "RESIN_LOCK_ROOT" => root.map(OsString::from),
                _ => panic!("read {name}"),
            };
            let cli =
                parse_from(["resin-lock"].iter().chain(args).chain(&["status"]), env).unwrap();
            (cli.paths, cli.root)
        };
        let paths = |list: &[&str]| list.iter().map(PathBuf::from).collect::<Vec<_>>();
        #[rustfmt::skip]
        let cases: &[EnvCase] = &[
            (&[], None, None, paths(&[]), None),
            (&[], Some(""), Some(""), paths(&[]), None),
            (&[], Some(":"), None, paths(&[]), None),
            (&[], Some("/a.lock"), Some("/r"), paths(&["/a.lock"]), Some("/r".into())),
            (&[], Some("/a.lock:/b.lock"), None, paths(&["/a.lock", "/b.lock"]), None),
            (&[], Some(":/a.lock::/b.lock:"), None, paths(&["/a.lock", "/b.lock"]), None),
            // The command line wins, and is never split.
            (&["--path", "/x:y"], Some("/a.lock"), None, paths(&["/x:y"]), None),
            (&["--root", "/d"], None, Some("/r"), paths(&[]), Some("/d".into())),
            (&["--root", "/d"], None, Some(""), paths(&[]), Some("/d".into())),
        ];
        for (args, path, root, want_paths, want_root) in cases {
            assert_eq!(
                parse(args, *path, *root),
                (want_paths.clone(), want_root.clone()),
                "{args:?} RESIN_LOCK_PATH={path:?} RESIN_LOCK_ROOT={root:?}"
            );
        }
    }

    /// `acquire` reads -n/-w/-E exactly as `run` does.
    #[test]
    fn acquire_parses_wait_options_as_run_does() {
        for args in [
            &["-w5", "-E75"][..],
            &["-w", "5", "-E", "75"],
            &["--timeout=5", "-E75"],
        ] {
            let cli = Cli::try_parse_from(["resin-lock", "acquire"].iter().chain(args)).unwrap();
            let Command::Acquire(acquire) = cli.command else {
                panic!("not acquire")
            };
            let (_, w, e, _, _) = parse_run(&[args, &["true"][..]].concat()).unwrap();
            assert_eq!(acquire.wait.timeout.map(|d| d.as_secs()), w, "{args:?}");
            assert_eq!(acquire.wait.conflict_exit_code, e, "{args:?}");
            assert_eq!((w, e), (Some(5), Some(75)), "{args:?}");
        }
        assert_eq!(
            Cli::try_parse_from(["resin-lock", "acquire", "--timout", "5"])
                .unwrap_err()
                .kind(),
            clap::error::ErrorKind::UnknownArgument
        );
    }
}
