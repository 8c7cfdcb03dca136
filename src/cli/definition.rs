//! The clap definition: the global options and the subcommands, whose
//! doc comments are the help text, the man page and the completions
//! (`cargo xtask gen`). Each subcommand's arguments are in `args.rs`.

use std::path::PathBuf;

use clap::{CommandFactory, Parser, Subcommand, ValueHint};

use super::args::HoldCmdArgs;
use super::args::{AcquireArgs, ReleaseArgs, RunArgs, StatusArgs};

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
    /// Use this lock file, not the detected one (repeatable).
    ///
    /// Several are taken in the order given, all or nothing.
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

    /// Resolve detected lock paths and files under DIR.
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

    /// Say what was done and why.
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
    /// execSync, Python's shell=True, system(3)) or a wrapper that forks,
    /// waits and exits with its command (sudo, doas, su, timeout, time,
    /// chronic, flock FILE CMD, script -c, xargs, strace, ltrace, setsid,
    /// npx, npm exec) is skipped; PID 1 never is. Under strace -f the keeper
    /// is not traced, so acquire returns. --owner parent means exactly the
    /// parent; --owner PID names it. If the owner
    /// exits without releasing, the lock file stays (updates stay blocked) but
    /// is stale, and the next acquire or run takes it over. An acquire whose
    /// owner already holds the lock fails at once.
    ///
    /// With --max-hold DUR, the keeper lets go of the lock DUR after it was
    /// taken (the file is removed, updates may go on) and says so in one line,
    /// appended to acquire's stderr when that is a file (2>log), else on the
    /// owner's stderr; the owner is not signalled.
    Acquire(AcquireArgs),

    /// Give the lock back.
    ///
    /// Removes a lock taken by `resin-lock acquire` (stopping its keeper) when
    /// the caller owns it: the lock's owner is --owner, or the caller or one
    /// of its ancestors, and then acquire's own parent (the job that
    /// acquired) is the caller, one of its ancestors, or has exited; so two
    /// `sh -c` jobs of one parent cannot release each other's lock
    /// (processes are matched by pid and start time). Removes a stale
    /// resin-lock lock for anyone. Refuses (exit 1) someone else's acquire
    /// lock, a lock held by a running `resin-lock run` and any foreign lock
    /// (another tool's, a directory, a symlink) unless --force. Never removes
    /// the supervisor's own lock (uid 65534, or helios' tagged file), not
    /// even with --force (exit 1). Another user's live lock is exit 73.
    /// Releasing a lock that is not there is not an error.
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
    /// (held or stale: both block the supervisor), 73 when the directory of a
    /// --path does not exist (no lock can be taken there: a typo in a check's
    /// path fails it). With --health, exits 1 only when a lock blocks updates
    /// for nothing (a HEALTHCHECK).
    ///
    /// Every lock file holds back the supervisor; only files named
    /// updates.lock also hold back balenaOS's host OS reboot check, so a held
    /// lock with another name (resin-updates.lock) is said not to (`blocks`
    /// in --json: ["supervisor","host-reboot"] or ["supervisor"]).
    Status(StatusArgs),

    /// Hold the lock while stdin stays open; say what happens in JSON lines.
    ///
    /// For a program that is not a command (Node, Python, Go, a shell
    /// coprocess): it starts `resin-lock hold` with pipes on stdin and
    /// stdout, and holds the lock for as long as it keeps stdin open. The
    /// lock is taken as `run` takes it (-n, -w, -E, -s, several paths all or
    /// nothing) and held by this process for its parent, the program (mode
    /// hold: status names both; release refuses it; release --force removes
    /// it).
    ///
    /// End of file on stdin (the program closed it, or died, even by
    /// SIGKILL) releases the lock and exits 0; bytes read are ignored. So do
    /// a parent that changed (the program died while another process keeps
    /// the pipe open; checked every second) and a closed stdout (EPIPE). HUP,
    /// INT, TERM (and QUIT, USR1, USR2, ALRM) release it and exit
    /// 128+signal. While still waiting, end of file ends the wait as SIGHUP
    /// does (exit 129) and a signal with 128+signal: nothing is held.
    ///
    /// Stdout carries one JSON object a line, flushed as written: a stable
    /// interface (fields are only ever added; ignore those you do not know),
    /// described under HOLD PROTOCOL in resin-lock(1).
    ///
    /// {"event":"waiting","path":…,"held_by":…,"holder":…,"record":…}: at
    /// most once, when the lock is busy.
    ///
    /// {"event":"held","paths":[…],"since":"<RFC 3339 UTC>"}: it is held.
    ///
    /// {"event":"lost","path":…,"why":"removed"|"replaced"}: someone else
    /// removed or replaced a lock file (a forced update, the lock override,
    /// release --force), said within 100 ms; hold goes on until stdin closes.
    ///
    /// {"event":"expired"}: --max-hold passed; the lock was released.
    ///
    /// {"event":"released"}: last, before hold exits.
    ///
    /// A lock that cannot be taken is one line on stderr and acquire's exit
    /// status (1 busy or timed out, or -E CODE; 64, 73, 77 …), with no event
    /// but maybe waiting.
    Hold(HoldCmdArgs),

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

/// The order of the options in every subcommand's help: first its own
/// (what to lock and how, as declared; a subcommand declares its output
/// options, such as `--json`, last), then the output options, then the
/// global options that say where the lock is. Set here, on the global
/// options, so every subcommand follows it without numbering its own.
const HELP_ORDER: [&str; 4] = ["verbose", "quiet", "paths", "root"];

/// Where `HELP_ORDER` starts: after any subcommand's own options (clap
/// numbers them from 0 as declared), before -h and -V (which clap leaves
/// at 999).
const GLOBALS_FROM: usize = 900;

/// The global options that do nothing in a subcommand, left out of its
/// help: `force-update` talks to the supervisor API, not to a lock.
const NOT_IN: [(&str, [&str; 2]); 1] = [("force-update", ["paths", "root"])];

/// The clap command, for parsing and for the man page and completion
/// generators. Its subcommands get their arguments when built (see
/// `Command`). The exit-status table after the help comes from `exit.rs`.
pub fn command() -> clap::Command {
    let mut cmd = Cli::command();
    for (at, id) in HELP_ORDER.into_iter().enumerate() {
        cmd = cmd.mut_arg(id, |arg| arg.display_order(GLOBALS_FROM + at));
    }
    for (name, _) in NOT_IN {
        // Deferred: the global options reach a subcommand when the parent
        // is built, before the subcommand's deferred part runs.
        cmd = cmd.mut_subcommand(name, |sub| sub.defer(hide_what_does_nothing));
    }
    cmd.after_help("Exit status: 0 done (status: no lock file), 1 busy or held, 64 usage; the table is in --help.\nSee resin-lock(1) for the lock locations and the protocol.")
        .after_long_help(format!(
            "{}\nSee resin-lock(1) for the lock locations and the protocol.",
            crate::exit::help_table()
        ))
}

/// Hide, in the subcommand being built, the global options that do nothing
/// there (`NOT_IN`). Built on its own (the man page's subsection), it has
/// no global options to hide.
fn hide_what_does_nothing(sub: clap::Command) -> clap::Command {
    let Some((_, ids)) = NOT_IN.iter().find(|(name, _)| *name == sub.get_name()) else {
        return sub;
    };
    ids.iter().fold(sub, |sub, id| {
        if sub.get_arguments().any(|arg| arg.get_id() == id) {
            sub.mut_arg(id, |arg| arg.hide(true))
        } else {
            sub
        }
    })
}
