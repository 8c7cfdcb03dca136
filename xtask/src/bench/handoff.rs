//! Handoff: the time from a holder's critical command ending to a waiter's
//! command starting. The holder's command blocks reading a pipe that the
//! harness closes at t0; the waiter's command writes to a pipe that the
//! harness blocks reading, and t1 is when that read returns. The waiter is
//! known to be blocked when its process has been asleep for a few
//! consecutive samples; then the harness sleeps a random part of the
//! waiter's poll period, so polling peers are caught at a random phase.

use std::ffi::OsString;
use std::fs;
use std::io::{self, BufRead, BufReader, Read};
use std::path::Path;
use std::process::{ChildStderr, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use super::peers::Peer;
use super::process::{Argv, Guard, Scratch, argv, wait_until_asleep};
use super::stats::{Series, interleave, named};
use super::{Plan, Report, Row, Tools, WARMUP, judged, ms, ratio, skipped};

/// The pause after the waiter is seen blocked, before the random part.
const SETTLE: Duration = Duration::from_millis(20);
/// What the holder's command runs: say it holds the lock, then wait for
/// its stdin to close.
const HOLD_SCRIPT: &str = "echo ready; read x || :";

/// One tool's handoff setup.
struct Handoff {
    name: String,
    /// Prints `ready` (one line) once it holds the lock; holds it until its
    /// stdin closes, then frees it.
    holder: Argv,
    ready: &'static str,
    /// Waits for the lock, then its command writes a line to stdout.
    waiter: Argv,
    /// The waiter says `waiting` on stderr before its first try.
    announces: bool,
    /// The waiter's poll period: the harness frees the lock at a random
    /// point within it.
    period: Duration,
    /// A lock file the waiter leaves behind (lockfile(1)), removed after
    /// each round.
    leftover: Option<OsString>,
}

pub(super) fn measure(
    tools: &Tools,
    root: &Path,
    scratch: &Scratch,
    plan: &Plan,
    report: &mut Report,
) -> Result<(), String> {
    let mut rng = fastrand::Rng::new();
    let fast = fast_cases(tools, scratch)?;
    eprintln!(
        "handoff: {} interleaved rounds of resin-lock and flock(1)",
        plan.handoff_fast
    );
    let names: Vec<String> = fast.iter().map(|h| h.name.clone()).collect();
    let samples = interleave(plan.handoff_fast, fast.len(), WARMUP, |i| {
        handoff_once(&fast[i], &mut rng)
    })?;
    let mut all = named(&names, samples);

    for (rounds, peer) in slow_cases(tools, root, scratch, plan)? {
        eprintln!("handoff: {rounds} rounds of {}", peer.name);
        let walls = (0..rounds)
            .map(|_| handoff_once(&peer, &mut rng))
            .collect::<Result<_, _>>()?;
        all.push(Series {
            name: peer.name.clone(),
            walls,
        });
    }
    rows(tools, &all, &mut report.rows);
    report.walls.extend(all);
    Ok(())
}

/// resin-lock and flock(1): event-driven, interleaved with each other.
fn fast_cases(tools: &Tools, scratch: &Scratch) -> Result<Vec<Handoff>, String> {
    let sh = tools.sh.as_os_str();
    let echo = tools.echo.as_os_str();
    let f = scratch.lock("handoff-resin-lock")?;
    let run = |f: &OsString| {
        argv([
            tools.release.as_os_str(),
            "--path".as_ref(),
            f,
            "run".as_ref(),
            "--".as_ref(),
        ])
    };
    let mut holder = run(&f);
    holder.extend(argv([sh, "-c".as_ref(), HOLD_SCRIPT.as_ref()]));
    let mut waiter = run(&f);
    waiter.extend(argv([echo, "go".as_ref()]));
    let mut fast = vec![Handoff {
        name: "handoff: resin-lock run (release)".to_owned(),
        holder,
        ready: "ready",
        waiter,
        announces: false,
        period: Duration::from_millis(5),
        leftover: None,
    }];
    if let Some(flock) = &tools.peers.flock.path {
        let f = scratch.lock("handoff-flock")?;
        fast.push(Handoff {
            name: "handoff: flock(1)".to_owned(),
            holder: argv([
                flock.as_os_str(),
                &f,
                sh,
                "-c".as_ref(),
                HOLD_SCRIPT.as_ref(),
            ]),
            ready: "ready",
            waiter: argv([flock.as_os_str(), &f, echo, "go".as_ref()]),
            announces: false,
            period: Duration::from_millis(5),
            leftover: None,
        });
    }
    Ok(fast)
}

/// lockfile(1) and the npm package: pollers, each run alone with its own
/// number of rounds.
fn slow_cases(
    tools: &Tools,
    root: &Path,
    scratch: &Scratch,
    plan: &Plan,
) -> Result<Vec<(usize, Handoff)>, String> {
    let sh = tools.sh.as_os_str();
    let mut slow = Vec::new();
    if let Some(lockfile) = &tools.peers.lockfile.path {
        let f = scratch.lock("handoff-lockfile")?;
        let lockfile = lockfile.as_os_str();
        let hold = r#""$0" -r0 "$1" || exit 1; echo ready; read x || :; rm -f "$1""#;
        let wait = r#""$0" -1 -r -1 "$1" && exec "$2" go"#;
        slow.push((
            plan.handoff_lockfile,
            Handoff {
                name: "handoff: lockfile(1) -1 -r -1".to_owned(),
                holder: argv([sh, "-c".as_ref(), hold.as_ref(), lockfile, &f]),
                ready: "ready",
                waiter: argv([
                    sh,
                    "-c".as_ref(),
                    wait.as_ref(),
                    lockfile,
                    &f,
                    tools.echo.as_os_str(),
                ]),
                announces: false,
                period: Duration::from_secs(1),
                leftover: Some(f.clone()),
            },
        ));
    }
    if let Some(node) = tools.peers.npm() {
        let f = scratch.lock("handoff-npm")?;
        let fixtures = root.join("tests/fixtures/npm");
        let script = |name: &str| fixtures.join(name).into_os_string();
        slow.push((
            plan.handoff_npm,
            Handoff {
                name: "handoff: npm lockfile (pollPeriod 100 ms)".to_owned(),
                holder: argv([
                    node.as_os_str(),
                    &script("locksync.js"),
                    &f,
                    "hold".as_ref(),
                ]),
                ready: "locked",
                waiter: argv([node.as_os_str(), &script("waitlock.js"), &f]),
                announces: true,
                period: Duration::from_millis(100),
                leftover: None,
            },
        ));
    }
    Ok(slow)
}

/// resin-lock's median against each peer's; the budget is resin-lock's
/// own median.
fn rows(tools: &Tools, all: &[Series], rows: &mut Vec<Row>) {
    let ours = &all[0];
    let find = |needle: &str| all.iter().find(|s| s.name.contains(needle));
    let npm_peer = if tools.peers.node.path.is_none() {
        &tools.peers.node
    } else {
        &tools.peers.npm_lockfile
    };
    let peers: [(&Peer, Option<&Series>); 3] = [
        (&tools.peers.flock, find("flock(1)")),
        (&tools.peers.lockfile, find("lockfile(1)")),
        (npm_peer, find("npm lockfile")),
    ];
    for (peer, series) in peers {
        let bench = format!("handoff median, vs {}", peer.name);
        rows.push(match series {
            Some(s) => Row {
                bench,
                ours: ms(ours.median()),
                peer: format!(
                    "{} ({})",
                    ms(s.median()),
                    s.name.trim_start_matches("handoff: ")
                ),
                ratio: format!(
                    "{:.3}x",
                    ratio(ours.median().as_secs_f64(), s.median().as_secs_f64())
                ),
                verdict: judged("handoff", ours.median().as_secs_f64() * 1000.0),
            },
            None => skipped(bench, peer),
        });
    }
}

/// One handoff: the time from the holder's command ending (t0, the harness
/// closes its stdin) to the waiter's command starting (t1, its first byte
/// on the pipe the harness blocks reading).
fn handoff_once(h: &Handoff, rng: &mut fastrand::Rng) -> Result<Duration, String> {
    let (mut holder, _holder_out) = start_holder(h)?;
    let (mut waiter, waiter_err) = start_waiter(h)?;
    wait_until_asleep(waiter.0.id()).map_err(|e| format!("{}: the waiter {e}", h.name))?;
    std::thread::sleep(SETTLE + h.period.mul_f64(rng.f64()));

    let mut started = waiter.0.stdout.take().expect("piped");
    let release = holder.0.stdin.take();
    let t0 = Instant::now();
    drop(release);
    let mut byte = [0u8; 1];
    let n = started
        .read(&mut byte)
        .map_err(|e| format!("{}: reading the waiter: {e}", h.name))?;
    let t1 = Instant::now();
    if n == 0 {
        return Err(format!(
            "{}: the waiter ended without starting its command",
            h.name
        ));
    }

    let status = waiter
        .0
        .wait()
        .map_err(|e| format!("{}: waiting for the waiter: {e}", h.name))?;
    let _ = holder.0.wait();
    if let Some(path) = &h.leftover {
        let _ = fs::remove_file(path);
    }
    if !status.success() {
        let mut said = String::new();
        if let Some(mut err) = waiter_err {
            let _ = err.read_to_string(&mut said);
        }
        return Err(format!(
            "{}: the waiter failed ({status}) {}",
            h.name,
            said.trim()
        ));
    }
    Ok(t1 - t0)
}

fn spawn_err(h: &Handoff, what: &str, e: io::Error) -> String {
    format!("{}: cannot start the {what}: {e}", h.name)
}

/// Start the holder and wait until it says it holds the lock. Its stdout
/// stays open (returned) until the round ends.
fn start_holder(h: &Handoff) -> Result<(Guard, BufReader<ChildStdout>), String> {
    let mut holder = Guard(
        Command::new(&h.holder[0])
            .args(&h.holder[1..])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| spawn_err(h, "holder", e))?,
    );
    let mut line = String::new();
    let mut holder_out = BufReader::new(holder.0.stdout.take().expect("piped"));
    holder_out
        .read_line(&mut line)
        .map_err(|e| format!("{}: reading the holder: {e}", h.name))?;
    if line.trim() != h.ready {
        return Err(format!(
            "{}: the holder did not take the lock (said {:?})",
            h.name,
            line.trim()
        ));
    }
    Ok((holder, holder_out))
}

/// Start the waiter; for one that announces itself, wait until it has.
/// Its stderr, when piped, is returned to report a failure.
fn start_waiter(h: &Handoff) -> Result<(Guard, Option<BufReader<ChildStderr>>), String> {
    let mut waiter = Guard(
        Command::new(&h.waiter[0])
            .args(&h.waiter[1..])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(if h.announces {
                Stdio::piped()
            } else {
                Stdio::inherit()
            })
            .spawn()
            .map_err(|e| spawn_err(h, "waiter", e))?,
    );
    let mut waiter_err = waiter.0.stderr.take().map(BufReader::new);
    if let Some(err) = waiter_err.as_mut() {
        let mut line = String::new();
        err.read_line(&mut line)
            .map_err(|e| format!("{}: reading the waiter: {e}", h.name))?;
        if line.trim() != "waiting" {
            return Err(format!("{}: the waiter said {:?}", h.name, line.trim()));
        }
    }
    Ok((waiter, waiter_err))
}
