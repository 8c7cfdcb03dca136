//! Contention: 4 processes, each looping `resin-lock run -- true` (or
//! `flock F true`) N times on the same lock; total runs per second against
//! flock(1), which is the kernel's own wake-up.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::per_call::run_true_cases;
use super::process::{Argv, Guard, Scratch, shown};
use super::stats::{Series, interleave, named};
use super::{Plan, Report, Row, Tools, WARMUP, ratio, skipped};

/// Contending processes.
pub(super) const CONTENDERS: usize = 4;

pub(super) fn measure(
    tools: &Tools,
    scratch: &Scratch,
    plan: &Plan,
    report: &mut Report,
) -> Result<(), String> {
    let (names, cmds) = run_true_cases(tools, scratch, "contention")?;
    let names: Vec<String> = names
        .iter()
        .map(|name| format!("contention: {CONTENDERS} x {name}"))
        .collect();
    let flock = tools.peers.flock.path.as_ref();
    let loops = plan.contention_loops;
    let trials = plan.contention_trials;
    eprintln!(
        "contention: {trials} interleaved trials of {CONTENDERS} processes x {loops} runs for: {}",
        names.join(", ")
    );
    let series = named(
        &names,
        interleave(trials, cmds.len(), WARMUP, |i| {
            contend(&tools.sh, &cmds[i], loops)
        })?,
    );
    let runs = (CONTENDERS * loops) as f64;
    let per_sec = |s: &Series| runs / s.median().as_secs_f64();
    let n_ours = tools.resin_locks().len();
    for (i, (kind, _)) in tools.resin_locks().iter().enumerate() {
        let bench = format!("{CONTENDERS}-way contention, runs/s ({kind} binary)");
        report.rows.push(match flock {
            Some(_) => {
                let (a, b) = (per_sec(&series[i]), per_sec(&series[n_ours]));
                let r = ratio(a, b);
                Row {
                    bench,
                    ours: format!("{a:.0}/s"),
                    peer: format!("{b:.0}/s (flock F true)"),
                    ratio: format!("{r:.2}x"),
                    verdict: tools.verdict(kind, "contention", r),
                }
            }
            None => skipped(bench, &tools.peers.flock),
        });
    }
    report.walls.extend(series);
    Ok(())
}

/// Start the contenders together, wait for all: the wall time.
fn contend(sh: &Path, cmd: &Argv, loops: usize) -> Result<Duration, String> {
    const LOOP: &str = r#"n=$1; shift; i=0
while [ "$i" -lt "$n" ]; do "$@" || exit 1; i=$((i + 1)); done"#;
    let start = Instant::now();
    let mut children = Vec::new();
    for _ in 0..CONTENDERS {
        let child = Command::new(sh)
            .args(["-c", LOOP, "sh", &loops.to_string()])
            .args(cmd)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot run sh: {e}"))?;
        children.push(Guard(child));
    }
    for child in &mut children {
        let status = child
            .0
            .wait()
            .map_err(|e| format!("waiting for a contender: {e}"))?;
        if !status.success() {
            return Err(format!("a contender failed ({status}): {}", shown(cmd)));
        }
    }
    Ok(start.elapsed())
}
