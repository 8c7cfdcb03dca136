//! The command line, and nothing else: the man page and the shell completions
//! are generated from this definition (`cargo xtask gen`), so the doc comments
//! here are the user-facing help text.
//!
//! `args.rs` holds each subcommand's arguments, `parse.rs` the reading of the
//! process arguments and the usage errors.

use std::path::PathBuf;

use clap::{CommandFactory, Parser, Subcommand, ValueHint};

mod args;
mod fast;
mod parse;

pub(crate) use args::{AcquireArgs, ReleaseArgs, RunArgs, StatusArgs, WaitArgs};
pub use parse::parse;
#[cfg(test)]
use parse::parse_from;

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
    pub(crate) paths: Vec<PathBuf>,

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
    pub(crate) root: Option<PathBuf>,

    /// Say what was done and why (also: who holds the lock while waiting).
    #[arg(short, long, global = true, conflicts_with = "quiet")]
    pub(crate) verbose: bool,

    /// Print nothing but errors.
    #[arg(short, long, global = true)]
    pub(crate) quiet: bool,

    #[command(subcommand)]
    pub(crate) command: Command,
}

/// `defer`: a subcommand's arguments are built only when it is the one
/// invoked (or for help, the man page and completions). Building all of
/// them cost every start about as much as the work of `status`.
#[derive(Debug, Subcommand)]
#[command(defer = true)]
pub(crate) enum Command {
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
    /// Sends POST /v1/update {"force":true,"cancel":true} to the supervisor API
    /// (since supervisor v17.5.0 a plain force is ignored while an update
    /// waits on locks; older supervisors ignore cancel). Needs
    /// BALENA_SUPERVISOR_ADDRESS and BALENA_SUPERVISOR_API_KEY (or the RESIN_
    /// names), which the supervisor provides to services with the
    /// io.balena.features.supervisor-api label.
    ForceUpdate,
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

#[cfg(test)]
mod tests {
    use std::ffi::OsString;

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
