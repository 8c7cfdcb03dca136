//! Idle memory: what a `run` process or an `acquire` keeper costs while it
//! sits for hours on a 512 MB device (SPEC section 9: not above tini's),
//! against tini, tini-static, dumb-init and `flock F sleep` doing the same
//! job: waiting for a child, or holding a lock.
//!
//! The resident set is read from `/proc/PID/status` (`VmRSS`, split into
//! `RssAnon`, the process's own memory, and `RssFile`, the pages of its
//! binary and libraries it has mapped in) once the process has settled:
//! for a wrapper (`run -- sleep`, tini, dumb-init, flock), once its child
//! has exec'd `sleep` and the wrapper has been seen asleep; for a keeper,
//! once `acquire` has returned (the lock record then names the keeper's
//! pid) and the keeper has been seen asleep. Every case is read at the
//! earliest `SETTLE` after its start, alike.

use std::ffi::OsString;
use std::fs;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::process::{Argv, Guard, Scratch, argv, reap_orphans, run_step, wait_until_asleep};
use super::stats::{interleave, median_u64};
use super::{Plan, Report, Row, Tools, ratio};

/// How long the idle `sleep` would last if nothing ended it.
const SLEEP: &str = "3600";

/// How long after its start a case is read, at the earliest.
const SETTLE: Duration = Duration::from_secs(2);

/// Wait until `pid` is asleep at least `SETTLE` after `started`.
fn settle(pid: u32, started: Instant) -> Result<(), String> {
    wait_until_asleep(pid)?;
    std::thread::sleep(SETTLE.saturating_sub(started.elapsed()));
    wait_until_asleep(pid)
}

/// The resident memory of one process, in KiB.
#[derive(Clone, Copy)]
pub(super) struct Resident {
    pub(super) total: u64,
    pub(super) anon: u64,
    pub(super) file: u64,
}

impl Resident {
    fn read(pid: u32) -> Result<Resident, String> {
        let path = format!("/proc/{pid}/status");
        let text = fs::read_to_string(&path).map_err(|e| format!("{path}: {e}"))?;
        let field = |key: &str| {
            text.lines()
                .find_map(|line| {
                    line.strip_prefix(key)?
                        .trim()
                        .strip_suffix("kB")?
                        .trim()
                        .parse()
                        .ok()
                })
                .ok_or_else(|| format!("{path} has no {key}"))
        };
        Ok(Resident {
            total: field("VmRSS:")?,
            anon: field("RssAnon:")?,
            file: field("RssFile:")?,
        })
    }

    /// The median of each field on its own.
    pub(super) fn median(samples: &[Resident]) -> Resident {
        let of = |f: fn(&Resident) -> u64| median_u64(&samples.iter().map(f).collect::<Vec<_>>());
        Resident {
            total: of(|r| r.total),
            anon: of(|r| r.anon),
            file: of(|r| r.file),
        }
    }

    fn shown(&self) -> String {
        format!(
            "{} KiB ({} anon + {} file)",
            self.total, self.anon, self.file
        )
    }
}

/// How a case's idle process is started and found.
enum Start {
    /// A wrapper whose child idles in `sleep`: the wrapper is measured.
    Wrapper(Argv),
    /// `acquire`, whose keeper (named in the lock record) is measured;
    /// `release` ends it.
    Keeper {
        acquire: Argv,
        release: Argv,
        lock: OsString,
    },
}

struct Case {
    name: String,
    start: Start,
}

pub(super) fn measure(
    tools: &Tools,
    scratch: &Scratch,
    plan: &Plan,
    report: &mut Report,
) -> Result<(), String> {
    let cases = cases(tools, scratch)?;
    let names: Vec<String> = cases.iter().map(|c| c.name.clone()).collect();
    eprintln!(
        "idle RSS: {} interleaved rounds (/proc/PID/status) of: {}",
        plan.idle,
        names.join(", ")
    );
    let samples = interleave(plan.idle, cases.len(), 0, |i| {
        once(&cases[i]).map_err(|e| format!("idle RSS of {}: {e}", cases[i].name))
    })?;
    let medians: Vec<Resident> = samples.iter().map(|s| Resident::median(s)).collect();
    rows(tools, &names, &medians, &mut report.rows);
    report.idle.extend(names.into_iter().zip(samples));
    Ok(())
}

/// For each resin-lock binary, `run` and the keeper against the budget,
/// with tini beside them; the other peers are in the details table.
fn rows(tools: &Tools, names: &[String], medians: &[Resident], rows: &mut Vec<Row>) {
    let tini = names.iter().position(|n| n.starts_with("tini "));
    for (b, (kind, _)) in tools.resin_locks().into_iter().enumerate() {
        for (j, what) in ["`run -- sleep`", "`acquire` keeper"]
            .into_iter()
            .enumerate()
        {
            // The cases start with `run` then the keeper of each binary.
            let ours = &medians[2 * b + j];
            let bench = format!("idle RSS, {what} ({kind} binary)");
            let (peer, ratio_to_tini) = match tini {
                Some(t) => (
                    format!("{}: {}", names[t], medians[t].shown()),
                    format!("{:.2}x", ratio(ours.total as f64, medians[t].total as f64)),
                ),
                None => ("—".to_owned(), "—".to_owned()),
            };
            rows.push(Row {
                bench,
                ours: ours.shown(),
                peer,
                ratio: ratio_to_tini,
                verdict: tools.verdict(kind, "idle-rss", ours.total as f64),
            });
        }
    }
}

/// For each resin-lock binary `run -- sleep` and an `acquire` keeper, then
/// each peer that is there.
fn cases(tools: &Tools, scratch: &Scratch) -> Result<Vec<Case>, String> {
    let sleep = tools.sleep.as_os_str();
    let mut cases = Vec::new();
    for (kind, bin) in tools.resin_locks() {
        let f = scratch.lock(&format!("idle-run-{kind}"))?;
        let base = [bin.as_os_str(), "--path".as_ref(), &f];
        cases.push(Case {
            name: format!("resin-lock run -- sleep ({kind})"),
            start: Start::Wrapper(argv(base.iter().copied().chain([
                "run".as_ref(),
                "--".as_ref(),
                sleep,
                SLEEP.as_ref(),
            ]))),
        });
        let f = scratch.lock(&format!("idle-keeper-{kind}"))?;
        let base = [bin.as_os_str(), "--path".as_ref(), &f];
        cases.push(Case {
            name: format!("resin-lock acquire, the keeper ({kind})"),
            start: Start::Keeper {
                acquire: argv(base.iter().copied().chain(["acquire".as_ref()])),
                release: argv(base.iter().copied().chain(["release".as_ref()])),
                lock: f,
            },
        });
    }
    let peers = &tools.peers;
    let wrappers = [
        (&peers.tini, "tini -s -- sleep", &["-s", "--"][..]),
        (
            &peers.tini_static,
            "tini-static -s -- sleep",
            &["-s", "--"][..],
        ),
        (&peers.dumb_init, "dumb-init sleep", &[][..]),
    ];
    for (peer, name, args) in wrappers {
        if let Some(path) = &peer.path {
            let mut start = argv([path.as_os_str()]);
            start.extend(argv(args));
            start.extend(argv([sleep, SLEEP.as_ref()]));
            cases.push(Case {
                name: name.to_owned(),
                start: Start::Wrapper(start),
            });
        }
    }
    if let Some(flock) = &peers.flock.path {
        let f = scratch.lock("idle-flock")?;
        cases.push(Case {
            name: "flock F sleep".to_owned(),
            start: Start::Wrapper(argv([flock.as_os_str(), &f, sleep, SLEEP.as_ref()])),
        });
    }
    Ok(cases)
}

/// One sample: start the case's process, let it settle, read its memory,
/// end it.
fn once(case: &Case) -> Result<Resident, String> {
    match &case.start {
        Start::Wrapper(start) => wrapper_once(start),
        Start::Keeper {
            acquire,
            release,
            lock,
        } => {
            let started = Instant::now();
            run_step(acquire)?;
            let measured = record_pid(lock).and_then(|pid| {
                settle(pid, started)?;
                Resident::read(pid)
            });
            let released = run_step(release);
            reap_orphans();
            released.and(measured)
        }
    }
}

/// A wrapper and its idle child; the child is killed first if we bail out
/// early (killing only the wrapper would leave it sleeping).
struct Sleeping {
    wrapper: Guard,
    sleeper: Option<u32>,
}

impl Drop for Sleeping {
    fn drop(&mut self) {
        if let Some(pid) = self.sleeper.take() {
            kill(pid);
        }
    }
}

fn wrapper_once(start: &Argv) -> Result<Resident, String> {
    let started = Instant::now();
    let child = Command::new(&start[0])
        .args(&start[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start it: {e}"))?;
    let mut idle = Sleeping {
        wrapper: Guard(child),
        sleeper: None,
    };
    idle.sleeper = Some(wait_for_sleeper(&mut idle.wrapper)?);
    let pid = idle.wrapper.0.id();
    settle(pid, started)?;
    let resident = Resident::read(pid)?;
    // Ending the child ends the wrapper, which exits as its child did.
    if let Some(sleeper) = idle.sleeper.take() {
        kill(sleeper);
    }
    idle.wrapper
        .0
        .wait()
        .map_err(|e| format!("waiting for it: {e}"))?;
    Ok(resident)
}

/// The pid of the wrapper's child once it has exec'd `sleep`.
fn wait_for_sleeper(wrapper: &mut Guard) -> Result<u32, String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let sleeper = children(wrapper.0.id()).into_iter().find(|pid| {
            fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|comm| comm.trim() == "sleep")
        });
        if let Some(pid) = sleeper {
            return Ok(pid);
        }
        if let Ok(Some(status)) = wrapper.0.try_wait() {
            return Err(format!("it exited ({status}) before its child slept"));
        }
        if Instant::now() > deadline {
            return Err("its child did not start `sleep` within 10 s".to_owned());
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// The children of every thread of `pid` (/proc/PID/task/TID/children).
fn children(pid: u32) -> Vec<u32> {
    let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .flatten()
        .filter_map(|task| fs::read_to_string(task.path().join("children")).ok())
        .flat_map(|list| {
            list.split_whitespace()
                .filter_map(|pid| pid.parse().ok())
                .collect::<Vec<u32>>()
        })
        .collect()
}

/// The keeper's pid: the `pid` field of the lock record.
fn record_pid(lock: &OsString) -> Result<u32, String> {
    let shown = lock.to_string_lossy();
    let text = fs::read_to_string(lock).map_err(|e| format!("{shown}: {e}"))?;
    let record: serde_json::Value =
        serde_json::from_str(text.trim()).map_err(|e| format!("{shown}: {e}"))?;
    record["pid"]
        .as_u64()
        .and_then(|pid| u32::try_from(pid).ok())
        .ok_or_else(|| format!("{shown}: no pid in the record {:?}", text.trim()))
}

fn kill(pid: u32) {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return;
    };
    // SAFETY: kill(2) takes two integers; no memory is passed.
    let _ = unsafe { libc::kill(pid, libc::SIGKILL) };
}
