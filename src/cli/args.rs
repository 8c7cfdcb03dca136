//! The arguments of each subcommand, with their help text (the doc comments
//! are the user-facing help, as in `cli/mod.rs`).

use std::ffi::OsString;
use std::time::Duration;

use clap::{Args, ValueHint};
use nix::sys::signal::Signal;

use crate::lock::owner::OwnerChoice;
use crate::supervise::LostSignal;

// How to wait for a busy lock (shared by `acquire` and `run`). Not a doc
// comment: a deferred subcommand would take it as its own description.
#[derive(Debug, Clone, Args)]
pub(crate) struct WaitArgs {
    /// Fail at once if the lock is busy instead of waiting.
    ///
    /// With -w too, -n wins and the wait is not tried, as in flock(1).
    #[arg(short = 'n', long)]
    pub(crate) nonblock: bool,

    /// Give up after DUR (seconds, or 250ms, 30s, 5m, 1h).
    ///
    /// DUR is seconds (10, 0.5) or a number with a unit (250ms, 30s, 5m, 1h);
    /// one too large for the clock means for ever. --wait is the same option,
    /// as flock(1) spells it.
    // `-w -1` reaches the duration parser, which says why it is wrong.
    #[arg(
        short = 'w',
        long,
        alias = "wait",
        value_name = "DUR",
        value_hint = ValueHint::Other,
        value_parser = crate::duration::parse,
        allow_negative_numbers = true
    )]
    pub(crate) timeout: Option<Duration>,

    /// Exit with CODE, not 1, when busy (-n) or timed out (-w).
    ///
    /// As flock(1)'s -E: a script can tell "someone else holds the lock" from
    /// its own failures.
    #[arg(
        short = 'E',
        long = "conflict-exit-code",
        value_name = "CODE",
        value_hint = ValueHint::Other
    )]
    pub(crate) conflict_exit_code: Option<u8>,

    /// Share the lock (LOCK_SH); the last holder out removes it.
    ///
    /// Several holders at once, each blocking updates as an exclusive holder
    /// does (the supervisor and the host OS reboot check).
    /// A shared taker waits only for an exclusive holder or a foreign lock;
    /// an exclusive one waits until every shared holder is gone. Once an
    /// exclusive taker waits, new shared takers queue behind it instead of
    /// joining, so a stream of shared holders cannot keep it out: while it
    /// waits it holds a read lock (fcntl F_OFD_SETLK) on one byte far past
    /// the end of the shared lock file, which shared takers look for
    /// (F_OFD_GETLK). The kernel drops it when the waiter takes the lock,
    /// gives up or dies; flock(1) and the supervisor never see it.
    #[arg(short = 's', long)]
    pub(crate) shared: bool,
}

// What the lock says about itself, and how long it may last (shared by
// `acquire` and `run`). Not a doc comment, as `WaitArgs`.
#[derive(Debug, Clone, Args)]
pub(crate) struct HoldArgs {
    /// Why the lock is held (shown by status, -v and waiters).
    ///
    /// Stored in the lock file's record.
    /// At most 256 bytes are kept (a longer TEXT is cut, and the record says so).
    #[arg(long, value_name = "TEXT", value_hint = ValueHint::Other)]
    pub(crate) reason: Option<String>,

    /// Let go of the lock after DUR even if the work goes on.
    ///
    /// Off by default.
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
    pub(crate) max_hold: Option<Duration>,

    /// Show a long hold as a device tag in balenaCloud.
    ///
    /// Sets the device tag update-lock.<service> (BALENA_SERVICE_NAME, else main)
    /// through the supervisor API (PATCH /v2/device/tags, supervisor v17.8.0 or
    /// later; the io.balena.features.supervisor-api label) once the hold has
    /// lasted --tag-after: "held since …; by …; reason: …", then "free since …"
    /// at release, or "stale since …" when an acquire's owner exits without
    /// release. BALENA_LOCK_TAGS=1 (or RESIN_LOCK_TAGS=1) turns it on without
    /// the option, e.g. fleet-wide from a fleet variable. Best effort and
    /// bounded: never delays taking or releasing the lock, and a failure is one
    /// warning line that changes no exit status.
    #[arg(long)]
    pub(crate) tag: bool,

    /// With tags on, publish holds that last DUR (default 30s).
    ///
    /// Shorter holds send nothing. DUR as for --timeout.
    #[arg(
        long,
        value_name = "DUR",
        value_hint = ValueHint::Other,
        value_parser = crate::duration::parse
    )]
    pub(crate) tag_after: Option<Duration>,
}

#[derive(Debug, Args)]
pub(crate) struct AcquireArgs {
    #[command(flatten)]
    pub(crate) wait: WaitArgs,

    #[command(flatten)]
    pub(crate) hold: HoldArgs,

    /// Keep the lock while process PID lives; `parent`: exactly the parent
    /// (default: the nearest ancestor that is not a transient wrapper).
    #[arg(long, value_name = "PID|parent", value_parser = parse_owner, value_hint = ValueHint::Other)]
    pub(crate) owner: Option<OwnerChoice>,
}

#[derive(Debug, Args)]
pub(crate) struct ReleaseArgs {
    /// Also remove someone else's acquire lock, foreign locks and locks held
    /// by a running `resin-lock run`.
    #[arg(short, long)]
    pub(crate) force: bool,

    /// Release the lock of owner PID (an ancestor of the caller always counts).
    #[arg(long, value_name = "PID|parent", value_parser = parse_owner, value_hint = ValueHint::Other)]
    pub(crate) owner: Option<OwnerChoice>,

    /// After release, ask the supervisor to apply a pending update now.
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
    pub(crate) update_now: bool,
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

/// `--on-lost`: a signal's name, with or without `SIG`, in any case, or
/// its number; the real-time signals as `RTMIN`, `RTMIN+N`, `RTMAX-N`,
/// `RTMAX` or their numbers (34 to 64 with glibc). Not a signal that stops
/// CMD or that CMD ignores by default: see `refused`.
fn parse_signal(value: &str) -> Result<LostSignal, String> {
    let bad = || {
        format!("`{value}` is not a signal: give a name (TERM, SIGUSR1, RTMIN+3) or a number (15)")
    };
    let (min, max) = (libc::SIGRTMIN(), libc::SIGRTMAX());
    let number = if let Ok(number) = value.parse::<i32>() {
        if Signal::try_from(number).is_err() && !(min..=max).contains(&number) {
            return Err(bad());
        }
        number
    } else {
        let upper = value.to_ascii_uppercase();
        let name = upper.strip_prefix("SIG").unwrap_or(&upper);
        let offset = |rest: &str| -> Option<i32> {
            match rest {
                "" => Some(0),
                _ if rest.starts_with(['+', '-'])
                    && rest[1..].bytes().all(|b| b.is_ascii_digit()) =>
                {
                    rest.parse().ok()
                }
                _ => None,
            }
        };
        let realtime = match (name.strip_prefix("RTMIN"), name.strip_prefix("RTMAX")) {
            (Some(rest), _) => Some(offset(rest).filter(|n| *n >= 0).map(|n| min + n)),
            (_, Some(rest)) => Some(offset(rest).filter(|n| *n <= 0).map(|n| max + n)),
            _ => None,
        };
        match realtime {
            Some(number) => number.filter(|n| (min..=max).contains(n)).ok_or_else(bad)?,
            None => format!("SIG{name}").parse::<Signal>().map_err(|_| bad())? as i32,
        }
    };
    match Signal::try_from(number).ok().and_then(refused) {
        Some(why) => Err(why),
        None => Ok(LostSignal(number)),
    }
}

/// `--on-lost`'s values: `parse_signal`, and the names the shell
/// completions offer (the help does not list them).
#[derive(Clone)]
struct SignalParser;

/// The signals offered for `--on-lost`: the usual ones, then the real-time
/// ones as `kill -l` names them (34 to 64 with glibc).
#[rustfmt::skip]
const SIGNAL_NAMES: [&str; 40] = [
    "TERM", "INT", "HUP", "QUIT", "USR1", "USR2", "ALRM", "WINCH", "KILL",
    "RTMIN", "RTMIN+1", "RTMIN+2", "RTMIN+3", "RTMIN+4", "RTMIN+5", "RTMIN+6", "RTMIN+7",
    "RTMIN+8", "RTMIN+9", "RTMIN+10", "RTMIN+11", "RTMIN+12", "RTMIN+13", "RTMIN+14",
    "RTMIN+15", "RTMAX-14", "RTMAX-13", "RTMAX-12", "RTMAX-11", "RTMAX-10", "RTMAX-9",
    "RTMAX-8", "RTMAX-7", "RTMAX-6", "RTMAX-5", "RTMAX-4", "RTMAX-3", "RTMAX-2", "RTMAX-1",
    "RTMAX",
];

impl clap::builder::TypedValueParser for SignalParser {
    type Value = LostSignal;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        arg: Option<&clap::Arg>,
        value: &std::ffi::OsStr,
    ) -> Result<LostSignal, clap::Error> {
        let parse: fn(&str) -> Result<LostSignal, String> = parse_signal;
        parse.parse_ref(cmd, arg, value)
    }

    fn possible_values(
        &self,
    ) -> Option<Box<dyn Iterator<Item = clap::builder::PossibleValue> + '_>> {
        Some(Box::new(
            SIGNAL_NAMES
                .iter()
                .map(|&name| clap::builder::PossibleValue::new(name)),
        ))
    }
}

/// Why `--on-lost` does not send `signal`, if it does not: one that stops
/// CMD leaves `run` waiting for a stopped command for ever, and CMD never
/// notices one it ignores by default.
fn refused(signal: Signal) -> Option<String> {
    use Signal::*;
    const INSTEAD: &str = "give one CMD can act on, such as TERM, USR1 or RTMIN+3";
    match signal {
        SIGSTOP | SIGTSTP | SIGTTIN | SIGTTOU => Some(format!(
            "{signal} would stop CMD, not tell it, and run would wait for the stopped \
             command for ever; {INSTEAD}"
        )),
        SIGCHLD => Some(format!(
            "{signal} is ignored unless CMD handles it, so CMD would not notice; {INSTEAD}"
        )),
        _ => None,
    }
}

#[derive(Debug, Args)]
pub(crate) struct RunArgs {
    #[command(flatten)]
    pub(crate) wait: WaitArgs,

    #[command(flatten)]
    pub(crate) hold: HoldArgs,

    /// Run CMD in its own process group; signal the whole group.
    ///
    /// As tini's -g: `docker stop` (SIGTERM) then also reaches what CMD
    /// started in the background. At a terminal, CMD's group becomes the
    /// foreground group, so Ctrl-C and Ctrl-Z reach it directly, and the
    /// terminal comes back when CMD ends.
    #[arg(short, long)]
    pub(crate) group: bool,

    /// Send SIGNAL to CMD if its lock file is removed under it.
    ///
    /// When the lock file is removed or replaced under CMD by someone else (the
    /// supervisor forcing an update, its lock override, `release --force`),
    /// SIGNAL goes to CMD (to its process group with -g) once, within 100 ms,
    /// and one line on stderr says so: CMD can stop its critical work cleanly
    /// before the supervisor stops the container. SIGNAL is a name (TERM,
    /// SIGUSR1), a real-time signal (RTMIN+3, RTMAX-1) or a number (15; 34 to
    /// 64 for the real-time ones). Not STOP, TSTP, TTIN or TTOU (CMD would
    /// stop and run would wait for it for ever) nor CHLD (CMD would not
    /// notice): those are usage errors. Off by default (nothing is watched).
    // `-1` reaches the parser, which says why it is wrong; clap would
    // advise `-- -1`, which here would run `-1` as CMD.
    #[arg(
        long,
        value_name = "SIGNAL",
        value_parser = SignalParser,
        hide_possible_values = true,
        allow_negative_numbers = true
    )]
    pub(crate) on_lost: Option<LostSignal>,

    /// After release, ask the supervisor to apply a pending update now.
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
    pub(crate) update_now: bool,

    /// The command to run while holding the lock, and its arguments.
    #[arg(
        value_name = "CMD",
        value_hint = ValueHint::CommandWithArguments,
        required = true,
        num_args = 1..,
        trailing_var_arg = true
    )]
    pub(crate) cmd: Vec<OsString>,
}

#[derive(Debug, Args)]
pub(crate) struct HoldCmdArgs {
    #[command(flatten)]
    pub(crate) wait: WaitArgs,

    #[command(flatten)]
    pub(crate) hold: HoldArgs,
}

#[derive(Debug, Args)]
pub(crate) struct StatusArgs {
    /// Also ask the supervisor API whether an update is pending.
    ///
    /// The exit status stays the lock's; an unreachable or refusing API is
    /// one line of the report, never 69, 70 or 77.
    #[arg(long)]
    pub(crate) supervisor: bool,

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
    pub(crate) host: bool,

    /// For a Docker HEALTHCHECK: exit 1 only when a lock blocks updates for nothing.
    ///
    /// Unhealthy (exit 1): a stale lock (its holder is gone, or it is from a previous
    /// boot), or, with --max-hold, a lock held longer than DUR. Healthy (exit 0): no lock,
    /// or a lock held by a live holder or by the supervisor (it is updating). One line
    /// says why (with --json: the report, plus `healthy` and `health`).
    #[arg(long)]
    pub(crate) health: bool,

    /// With --health: a lock held longer than DUR is unhealthy too.
    #[arg(
        long,
        value_name = "DUR",
        requires = "health",
        value_hint = ValueHint::Other,
        value_parser = crate::duration::parse,
        allow_negative_numbers = true
    )]
    pub(crate) max_hold: Option<Duration>,

    // An output option: declared last, as every subcommand's are (the
    // help's order, see `definition::command`).
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub(crate) json: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_are_names_or_numbers() {
        let (min, max) = (libc::SIGRTMIN(), libc::SIGRTMAX());
        for (value, number) in [
            ("TERM", libc::SIGTERM),
            ("SIGTERM", libc::SIGTERM),
            ("term", libc::SIGTERM),
            ("SigUsr1", libc::SIGUSR1),
            ("USR2", libc::SIGUSR2),
            ("15", libc::SIGTERM),
            ("9", libc::SIGKILL),
            ("RTMIN", min),
            ("SIGRTMIN+3", min + 3),
            ("rtmin+3", min + 3),
            ("RTMAX-1", max - 1),
            ("SIGRTMAX", max),
            ("RTMIN+0", min),
            (&min.to_string(), min),
            (&max.to_string(), max),
            (&(min + 3).to_string(), min + 3),
        ] {
            assert_eq!(parse_signal(value), Ok(LostSignal(number)), "{value}");
        }
        for name in SIGNAL_NAMES {
            assert!(parse_signal(name).is_ok(), "offered but refused: {name}");
        }
        assert_eq!(LostSignal(min + 3).to_string(), "SIGRTMIN+3");
        assert_eq!(LostSignal(max).to_string(), "SIGRTMAX");
        assert_eq!(LostSignal(libc::SIGTERM).to_string(), "SIGTERM");
        for value in ["STOP", "SIGTSTP", "ttin", "TTOU", "CHLD", "19", "17"] {
            let err = parse_signal(value).unwrap_err();
            assert!(err.contains("give one CMD can act on"), "{value}: {err}");
            assert!(!err.contains('\n'), "{value}: {err}");
        }
        for value in [
            "",
            "SIG",
            "FOO",
            "SIGFOO",
            "0",
            "-15",
            "65",
            "TERM ",
            " 15",
            "SIGSIGTERM",
            "-1",
            "RTMIN-1",
            "RTMAX+1",
            "RTMIN+99",
            "RTMIN+",
            "RTMIN++3",
            "RTMINX",
            "32",
        ] {
            let err = parse_signal(value).unwrap_err();
            assert!(err.contains("is not a signal"), "{value}: {err}");
        }
    }
}
