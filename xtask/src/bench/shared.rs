//! Shared locks: the cost of joining and leaving a shared lock that
//! another holder keeps (`run -s -- true` beside a background `run -s`)
//! against `flock -s F true` beside a background `flock -s`, and of being
//! the only shared holder (creating the file and, as the last one out,
//! removing it) against `flock -s F true` alone.

use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};

use super::process::{Argv, Guard, Scratch, argv, time_steps};
use super::stats::{interleave, named};
use super::{Plan, Report, Tools, WARMUP, skipped, wall_row};

/// A background shared holder of `f` (`run -s` or `flock -s`), in its own
/// process group; holding once its lock file is there.
fn holder(
    program: &[&std::ffi::OsStr],
    f: &OsString,
    sleep: &std::path::Path,
) -> Result<Guard, String> {
    let child = Command::new(program[0])
        .args(&program[1..])
        .arg(sleep)
        .arg("100000")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .process_group(0)
        .spawn()
        .map_err(|e| format!("cannot start a shared holder: {e}"))?;
    let guard = Guard(child);
    let start = std::time::Instant::now();
    // flock(1) creates its file before it locks it; resin-lock links its
    // file already locked: both hold the lock a moment after it appears.
    while !std::path::Path::new(f).exists() {
        if start.elapsed() > std::time::Duration::from_secs(10) {
            return Err("a shared holder did not start".to_owned());
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    std::thread::sleep(std::time::Duration::from_millis(50));
    Ok(guard)
}

/// Let a background holder go: its whole group (the sleep holds the lock
/// descriptor too).
fn end(guard: Guard) {
    // SAFETY: killpg takes a process group id and a signal; the group is
    // the one this holder leads (spawned with process_group(0)).
    let _ = unsafe { libc::killpg(guard.0.id() as libc::pid_t, libc::SIGKILL) };
    drop(guard);
}

/// `run -s -- true` against `flock -s F true`: joined (beside a background
/// holder) and alone.
pub(super) fn measure(
    tools: &Tools,
    scratch: &Scratch,
    plan: &Plan,
    report: &mut Report,
) -> Result<(), String> {
    let Some(flock) = tools.peers.flock.path.clone() else {
        report.rows.push(skipped(
            "shared join + leave, direct spawn".to_owned(),
            &tools.peers.flock,
        ));
        return Ok(());
    };
    let t = tools.true_.as_os_str();
    let rounds = plan.shared;
    for joined in [true, false] {
        let how = if joined { "joined" } else { "alone" };
        let mut names = Vec::new();
        let mut cases: Vec<Argv> = Vec::new();
        let mut holders = Vec::new();
        for (kind, bin) in tools.resin_locks() {
            let f = scratch.lock(&format!("shared-{how}-{kind}"))?;
            if joined {
                let run_s = [bin.as_os_str(), "--path".as_ref(), &f, "run".as_ref()];
                let program = [&run_s[..], &["-s".as_ref(), "--".as_ref()]].concat();
                holders.push(holder(&program, &f, &tools.sleep)?);
            }
            names.push(format!("resin-lock run -s -- true, {how} ({kind})"));
            cases.push(argv([
                bin.as_os_str(),
                "--path".as_ref(),
                &f,
                "run".as_ref(),
                "-s".as_ref(),
                "--".as_ref(),
                t,
            ]));
        }
        let f = scratch.lock(&format!("shared-{how}-flock"))?;
        if joined {
            holders.push(holder(
                &[flock.as_os_str(), "-s".as_ref(), &f],
                &f,
                &tools.sleep,
            )?);
        }
        names.push(format!("flock -s F true, {how}"));
        cases.push(argv([flock.as_os_str(), "-s".as_ref(), &f, t]));
        eprintln!(
            "shared: {rounds} interleaved rounds of: {}",
            names.join(", ")
        );
        let series = named(
            &names,
            interleave(rounds, cases.len(), WARMUP, |i| {
                time_steps(std::slice::from_ref(&cases[i]), false)
            })?,
        );
        holders.into_iter().for_each(end);
        let peer = &series[series.len() - 1];
        for (i, (kind, _)) in tools.resin_locks().iter().enumerate() {
            let bench = if joined {
                format!("shared join + leave (`run -s -- true` beside a holder, {kind} binary)")
            } else {
                format!("shared, only holder (`run -s -- true`, {kind} binary)")
            };
            report.rows.push(wall_row(bench, &series[i], peer));
        }
        report.walls.extend(series);
    }
    Ok(())
}
