//! Per-call cost as shell scripts pay it (the budgets of `run -- true` and
//! of `acquire` + `release` are judged here). Each case is
//! a bash loop of `BLOCK` iterations, one `bash -c` process timed from here
//! (time per iteration = elapsed / iterations), so bash's fork and exec of
//! each command is in every number alike, as in a script. The cases are
//! alternated block by block, and the whole comparison is repeated `RUNS`
//! times: each run gives one ratio per resin-lock binary, and the row shows
//! their median and spread (min-max), because on a shared machine one run's
//! ratio moves by tens of percent.

use std::ffi::OsStr;
use std::time::Duration;

use super::peers::Peer;
use super::process::{Argv, Scratch, argv, time_steps};
use super::stats::{Series, interleave, quantile};
use super::{Plan, Report, Row, Tools, ms, ratio, skipped};

/// Iterations of one bash loop.
pub(super) const BLOCK: u32 = 50;
/// Alternating runs, each giving one ratio.
pub(super) const RUNS: usize = 3;

/// One comparison: a resin-lock command line against a peer's, each as the
/// body of the loop, with `"$1"` the program and `"$2"` the lock file.
struct Pair<'a> {
    /// The row's name, before the binary's.
    bench: &'static str,
    ours: &'static str,
    ours_body: &'static str,
    peer: &'a Peer,
    peer_shown: &'static str,
    peer_body: &'static str,
    /// The budget (`budgets.rs`) of the static (shipped) binary's ratio;
    /// the release binary's row is for information.
    budget: &'static str,
}

/// `resin-lock -q --path F run -- true` against `flock F true`.
pub(super) fn run_true(
    tools: &Tools,
    scratch: &Scratch,
    plan: &Plan,
    report: &mut Report,
) -> Result<(), String> {
    let pair = Pair {
        bench: "`run -- true`, shell loop",
        ours: "resin-lock -q --path F run -- true",
        ours_body: r#""$1" -q --path "$2" run -- true"#,
        peer: &tools.peers.flock,
        peer_shown: "flock F true",
        peer_body: r#""$1" "$2" true"#,
        budget: "run-true",
    };
    measure(tools, scratch, plan, report, &pair, "loop-run")
}

/// `resin-lock -q --path F acquire -n && resin-lock -q --path F release`
/// against `lockfile -r0 F && rm -f F`. The budget names the shipped
/// (static) binary.
pub(super) fn acquire_release(
    tools: &Tools,
    scratch: &Scratch,
    plan: &Plan,
    report: &mut Report,
) -> Result<(), String> {
    let pair = Pair {
        bench: "`acquire -n` + `release`, shell loop",
        ours: "resin-lock -q --path F acquire -n && resin-lock -q --path F release",
        ours_body: r#""$1" -q --path "$2" acquire -n && "$1" -q --path "$2" release"#,
        peer: &tools.peers.lockfile,
        peer_shown: "lockfile -r0 F && rm -f F",
        peer_body: r#""$1" -r0 "$2" && rm -f "$2""#,
        // A little more than lockfile is allowed: acquire does more (a
        // keeper holds the flock the host OS checks).
        budget: "acquire-release",
    };
    measure(tools, scratch, plan, report, &pair, "loop-acquire")
}

/// `bash -c` running `body` `BLOCK` times with `program` and `lock` as its
/// `"$1"` and `"$2"`; the loop stops at the first failure.
fn bash_loop(bash: &OsStr, body: &str, program: &OsStr, lock: &OsStr) -> Argv {
    let script = format!("n=$1; shift; for ((i = 0; i < n; i++)); do {body} || exit 1; done");
    argv([
        bash,
        "-c".as_ref(),
        script.as_ref(),
        "bash".as_ref(),
        BLOCK.to_string().as_ref(),
        program,
        lock,
    ])
}

/// One block: the time per iteration. Afterwards (untimed) the keepers
/// that `acquire` left are reaped.
fn time_block(argv: &Argv) -> Result<Duration, String> {
    Ok(time_steps(std::slice::from_ref(argv), true)? / BLOCK)
}

fn measure(
    tools: &Tools,
    scratch: &Scratch,
    plan: &Plan,
    report: &mut Report,
    pair: &Pair,
    prefix: &str,
) -> Result<(), String> {
    let bins = tools.resin_locks();
    let Some(peer) = &pair.peer.path else {
        for (kind, _) in &bins {
            let bench = format!("{} ({kind} binary)", pair.bench);
            report.rows.push(skipped(bench, pair.peer));
        }
        return Ok(());
    };
    let bash = tools.bash.as_os_str();
    let mut names = Vec::new();
    let mut loops = Vec::new();
    for (kind, bin) in &bins {
        let f = scratch.lock(&format!("{prefix}-{kind}"))?;
        names.push(format!("{} ({kind})", pair.ours));
        loops.push(bash_loop(bash, pair.ours_body, bin.as_os_str(), &f));
    }
    let f = scratch.lock(&format!("{prefix}-peer"))?;
    names.push(pair.peer_shown.to_owned());
    loops.push(bash_loop(bash, pair.peer_body, peer.as_os_str(), &f));
    eprintln!(
        "shell loop: {RUNS} runs of {} alternating blocks of {BLOCK} iterations of: {}",
        plan.shell_blocks,
        names.join(", ")
    );
    // One untimed block of each warms the caches; then the runs.
    let runs = (0..RUNS)
        .map(|run| {
            let warmup = usize::from(run == 0);
            interleave(plan.shell_blocks, loops.len(), warmup, |i| {
                time_block(&loops[i])
            })
        })
        .collect::<Result<Vec<_>, _>>()?;

    let all = |i: usize| -> Vec<Duration> { runs.iter().flat_map(|r| r[i].clone()).collect() };
    let n_ours = bins.len();
    for (i, (kind, _)) in bins.iter().enumerate() {
        let ratios: Vec<f64> = runs
            .iter()
            .map(|r| {
                let ours = quantile(&r[i], 0.5).as_secs_f64();
                ratio(ours, quantile(&r[n_ours], 0.5).as_secs_f64())
            })
            .collect();
        report
            .rows
            .push(row(tools, pair, kind, &all(i), &all(n_ours), &ratios));
    }
    for (i, name) in names.into_iter().enumerate() {
        let name = format!("shell loop, per iteration: {name}");
        report.walls.push(Series {
            name,
            walls: all(i),
        });
    }
    Ok(())
}

/// The row of one binary: the medians per iteration over every block, and
/// the median and spread of the runs' ratios, the median judged against
/// the budget for the shipped binary.
fn row(
    tools: &Tools,
    pair: &Pair,
    kind: &str,
    ours: &[Duration],
    peer: &[Duration],
    ratios: &[f64],
) -> Row {
    let mut sorted = ratios.to_vec();
    sorted.sort_by(f64::total_cmp);
    let median = sorted[sorted.len() / 2];
    let (min, max) = (sorted[0], sorted[sorted.len() - 1]);
    Row {
        bench: format!("{} ({kind} binary)", pair.bench),
        ours: ms(quantile(ours, 0.5)),
        peer: format!("{} ({})", ms(quantile(peer, 0.5)), pair.peer_shown),
        ratio: format!("{median:.2}x ({min:.2}–{max:.2}x)"),
        verdict: tools.verdict(kind, pair.budget, median),
    }
}
