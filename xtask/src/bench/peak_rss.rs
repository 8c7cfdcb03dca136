//! Peak RSS of `run -- true` against `flock F true`, with `true` alone as
//! the floor of the method, as `/usr/bin/time -f %M` reports it.

use std::ffi::OsString;
use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};

use super::per_call::run_true_cases;
use super::process::{Scratch, argv, shown};
use super::stats::{interleave, median_u64};
use super::{Plan, Report, Row, Tools, WARMUP, ratio, skipped};

pub(super) fn measure(
    tools: &Tools,
    scratch: &Scratch,
    plan: &Plan,
    report: &mut Report,
) -> Result<(), String> {
    let bench = |kind: &str| format!("peak RSS of `run -- true` ({kind} binary)");
    let Some(time) = &tools.peers.time.path else {
        for (kind, _) in tools.resin_locks() {
            report.rows.push(skipped(bench(kind), &tools.peers.time));
        }
        return Ok(());
    };
    let (mut names, mut cases) = run_true_cases(tools, scratch, "rss")?;
    let flock = tools.peers.flock.path.as_ref();
    names.push("true (floor of the method)".to_owned());
    cases.push(argv([tools.true_.as_os_str()]));
    let out = scratch.path().join("time.out");
    eprintln!(
        "peak RSS: {} interleaved rounds (/usr/bin/time -f %M) of: {}",
        plan.rss,
        names.join(", ")
    );
    let samples = interleave(plan.rss, cases.len(), WARMUP, |i| {
        peak_rss(time, &out, &cases[i])
    })?;
    let n_ours = tools.resin_locks().len();
    for (i, (kind, _)) in tools.resin_locks().iter().enumerate() {
        report.rows.push(match flock {
            Some(_) => {
                let (a, b) = (median_u64(&samples[i]), median_u64(&samples[n_ours]));
                let r = ratio(a as f64, b as f64);
                Row {
                    bench: bench(kind),
                    ours: format!("{a} KiB"),
                    peer: format!("{b} KiB (flock F true)"),
                    ratio: format!("{r:.2}x"),
                    verdict: tools.verdict(kind, "peak-rss", r),
                }
            }
            None => skipped(bench(kind), &tools.peers.flock),
        });
    }
    report.peak_rss.extend(names.into_iter().zip(samples));
    Ok(())
}

/// The peak RSS of `argv` in KiB, as `/usr/bin/time -f %M` reports it (its
/// wait4(2) rusage: the largest of the process and the children it waited
/// for). Not measured from here: a child spawned by this process starts as a
/// vfork of it, and the kernel counts this process's RSS at exec time into
/// the child's peak, which would put a floor of the harness's size under
/// every number. `time` is small and forks.
fn peak_rss(time: &Path, out: &Path, argv: &[OsString]) -> Result<u64, String> {
    let status = Command::new(time)
        .args(["-f", "%M", "-o"])
        .arg(out)
        .args(argv)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .status()
        .map_err(|e| format!("cannot run {}: {e}", time.display()))?;
    if !status.success() {
        return Err(format!("{} failed ({status})", shown(argv)));
    }
    let text = fs::read_to_string(out).map_err(|e| format!("{}: {e}", out.display()))?;
    text.lines()
        .last()
        .and_then(|line| line.trim().parse().ok())
        .ok_or_else(|| format!("/usr/bin/time said {:?}", text.trim()))
}
