//! Per-call cost, each step spawned directly from the harness: `run -- true`
//! against `flock F true` (with spawning `true` alone as the floor), and
//! `acquire` + `release` against `lockfile -r0 F; rm -f F` and
//! `dotlockfile -l -r0 F; dotlockfile -u F`. The harness's own spawn cost is
//! in every number alike. These rows are for information: the budgets are
//! judged on the way scripts call the tool (`shell_loop`), where bash's
//! fork and exec, not the harness's spawn, starts each command.

use super::process::{Argv, Scratch, argv, time_steps};
use super::stats::{interleave, named};
use super::{Plan, Report, Tools, WARMUP, skipped, wall_row};

/// `resin-lock --path F run -- true` for each resin-lock build, then
/// `flock F true` when flock(1) is there: names and commands, lock files
/// named after `prefix`.
pub(super) fn run_true_cases(
    tools: &Tools,
    scratch: &Scratch,
    prefix: &str,
) -> Result<(Vec<String>, Vec<Argv>), String> {
    let t = tools.true_.as_os_str();
    let mut names = Vec::new();
    let mut cases = Vec::new();
    for (kind, bin) in tools.resin_locks() {
        let f = scratch.lock(&format!("{prefix}-{kind}"))?;
        names.push(format!("resin-lock run -- true ({kind})"));
        cases.push(argv([
            bin.as_os_str(),
            "--path".as_ref(),
            &f,
            "run".as_ref(),
            "--".as_ref(),
            t,
        ]));
    }
    if let Some(flock) = &tools.peers.flock.path {
        let f = scratch.lock(&format!("{prefix}-flock"))?;
        names.push("flock F true".to_owned());
        cases.push(argv([flock.as_os_str(), &f, t]));
    }
    Ok((names, cases))
}

/// `run -- true` vs `flock F true`, and the floor: spawning `true` itself.
pub(super) fn run_true(
    tools: &Tools,
    scratch: &Scratch,
    plan: &Plan,
    report: &mut Report,
) -> Result<(), String> {
    let rounds = plan.per_call;
    let (mut names, cases) = run_true_cases(tools, scratch, "run")?;
    let mut cases: Vec<Vec<Argv>> = cases.into_iter().map(|c| vec![c]).collect();
    names.push("true (spawn floor)".to_owned());
    cases.push(vec![argv([tools.true_.as_os_str()])]);
    eprintln!(
        "per-call: {rounds} interleaved rounds of: {}",
        names.join(", ")
    );
    let series = named(
        &names,
        interleave(rounds, cases.len(), WARMUP, |i| {
            time_steps(&cases[i], false)
        })?,
    );

    let n_ours = tools.resin_locks().len();
    let flock_series = tools.peers.flock.path.as_ref().map(|_| &series[n_ours]);
    for (i, (kind, _)) in tools.resin_locks().iter().enumerate() {
        let bench = format!("`run -- true`, direct spawn ({kind} binary)");
        report.rows.push(match flock_series {
            Some(peer) => wall_row(bench, &series[i], peer),
            None => skipped(bench, &tools.peers.flock),
        });
    }
    report.walls.extend(series);
    Ok(())
}

/// `acquire` + `release` against lockfile(1) and dotlockfile(1).
pub(super) fn acquire_release(
    tools: &Tools,
    scratch: &Scratch,
    plan: &Plan,
    report: &mut Report,
) -> Result<(), String> {
    let rounds = plan.per_call;
    let mut names = Vec::new();
    let mut cases: Vec<Vec<Argv>> = Vec::new();
    for (kind, bin) in tools.resin_locks() {
        let f = scratch.lock(&format!("acquire-{kind}"))?;
        let base = [bin.as_os_str(), "--path".as_ref(), &f];
        names.push(format!("resin-lock acquire; release ({kind})"));
        cases.push(vec![
            argv(base.iter().copied().chain(["acquire".as_ref()])),
            argv(base.iter().copied().chain(["release".as_ref()])),
        ]);
    }
    let lockfile = tools.peers.lockfile.path.as_ref();
    if let Some(lockfile) = lockfile {
        let f = scratch.lock("lockfile")?;
        names.push("lockfile -r0 F; rm -f F".to_owned());
        cases.push(vec![
            argv([lockfile.as_os_str(), "-r0".as_ref(), &f]),
            argv([tools.rm.as_os_str(), "-f".as_ref(), &f]),
        ]);
    }
    let dotlockfile = tools.peers.dotlockfile.path.as_ref();
    if let Some(dotlockfile) = dotlockfile {
        let f = scratch.lock("dotlockfile")?;
        names.push("dotlockfile -l -r0 F; dotlockfile -u F".to_owned());
        cases.push(vec![
            argv([dotlockfile.as_os_str(), "-l".as_ref(), "-r0".as_ref(), &f]),
            argv([dotlockfile.as_os_str(), "-u".as_ref(), &f]),
        ]);
    }
    eprintln!(
        "per-call: {rounds} interleaved rounds of: {}",
        names.join(", ")
    );
    let n_ours = tools.resin_locks().len();
    let series = named(
        &names,
        interleave(rounds, cases.len(), WARMUP, |i| {
            time_steps(&cases[i], i < n_ours)
        })?,
    );
    let lockfile_series = lockfile.map(|_| &series[n_ours]);
    let dotlockfile_series = dotlockfile.map(|_| &series[n_ours + usize::from(lockfile.is_some())]);
    for (i, (kind, _)) in tools.resin_locks().iter().enumerate() {
        let bench = format!("`acquire` + `release`, direct spawn ({kind} binary)");
        report.rows.push(match lockfile_series {
            Some(peer) => wall_row(bench, &series[i], peer),
            None => skipped(bench, &tools.peers.lockfile),
        });
        let bench = format!("`acquire` + `release` vs dotlockfile, direct spawn ({kind} binary)");
        report.rows.push(match dotlockfile_series {
            Some(peer) => wall_row(bench, &series[i], peer),
            None => skipped(bench, &tools.peers.dotlockfile),
        });
    }
    report.walls.extend(series);
    Ok(())
}
