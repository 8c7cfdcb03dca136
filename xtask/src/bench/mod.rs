//! `cargo xtask bench`: resin-lock against its peers, in one run on one
//! machine, reported as ratios against the budgets of `budgets.rs` (SPEC
//! section 9). A run of every family (full or `--quick`) writes its results
//! to docs/performance.json and the tables of docs/performance.md from them
//! (`page`); `--only` only prints.
//!
//! The machine is shared and noisy, so every comparison interleaves the
//! commands: in round r the cases run in an order rotated by r (for two
//! cases: A then B, then B then A), and the report uses medians. Each case
//! is timed with `Instant` around spawning its process(es) and waiting for
//! them, so the harness's own spawn cost is in every number alike (the
//! `spawn true` floor shows how big it is). The per-call budgets are judged
//! the way scripts call the tool: a bash loop, one `bash -c` process timed
//! per block of iterations (`shell_loop`). Peak RSS is what
//! `/usr/bin/time -f %M` reports (see `peak_rss` for why not from here).
//! Both the release binary (`cargo build --release`) and, when there is one,
//! the static dist binary are measured: they start differently.
//!
//! This module drives the run and prints the table; each benchmark family
//! is a module of its own (`per_call` and `shell_loop`, `peak_rss` and
//! `idle`, `handoff`, `contention`, `shared`, `update_now`, `sizes`), on the shared `process`
//! (spawning, reaping, scratch files) and `stats` (interleaving, quantiles)
//! modules.
//!
//! `bench --page` remakes the page's tables from docs/performance.json
//! (after an edit of `budgets.rs` or of the generator), `bench --page
//! --check` says whether the page is fresh.
//!
//! Peers are never installed here; missing ones are named and their rows
//! skipped. A missed budget is reported in the table, not as a failure: on a
//! shared machine one noisy run should not fail a build. The harness makes
//! itself a child subreaper so that the keepers `acquire` leaves behind are
//! reaped here even where PID 1 does not reap.

mod budgets;
mod contention;
mod handoff;
mod idle;
pub(crate) mod page;
mod peak_rss;
mod peers;
mod per_call;
mod process;
mod shared;
mod shell_loop;
mod sizes;
mod stats;
mod update_now;

use std::ffi::{OsStr, OsString};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::dist;
use contention::CONTENDERS;
use page::{Results, Row, Table, Verdict};
use peers::{Peer, Peers, required};
use process::Scratch;
use stats::{Series, median_u64, quantile};

/// How many rounds of each measurement.
struct Plan {
    /// Per-call cost, direct spawn: rounds of each interleaved case.
    per_call: usize,
    /// Per-call cost, shell loop: blocks of each case in each of the runs.
    shell_blocks: usize,
    /// Peak RSS: rounds of each interleaved case.
    rss: usize,
    /// Idle RSS: rounds of each interleaved case.
    idle: usize,
    /// Handoff rounds for the event-driven tools (resin-lock, flock).
    handoff_fast: usize,
    /// Handoff rounds for the npm package (polls every 100 ms).
    handoff_npm: usize,
    /// Handoff rounds for lockfile(1) (sleeps whole seconds).
    handoff_lockfile: usize,
    /// Contention: trials per tool, and loops per process in each trial.
    contention_trials: usize,
    contention_loops: usize,
    /// Shared join/leave: rounds of each interleaved case.
    shared: usize,
}

const FULL: Plan = Plan {
    per_call: 200,
    shell_blocks: 6,
    rss: 30,
    idle: 5,
    handoff_fast: 50,
    handoff_npm: 20,
    handoff_lockfile: 5,
    contention_trials: 5,
    contention_loops: 100,
    shared: 200,
};

const QUICK: Plan = Plan {
    per_call: 30,
    shell_blocks: 2,
    rss: 5,
    idle: 2,
    handoff_fast: 10,
    handoff_npm: 5,
    handoff_lockfile: 2,
    contention_trials: 2,
    contention_loops: 25,
    shared: 30,
};

/// Untimed runs of each case before a comparison starts.
const WARMUP: usize = 3;

/// The families `bench --only FAMILY` runs alone (those of
/// `STATIC_FAMILIES` on the release and the static build, the others on
/// the release build).
const FAMILIES: &[&str] = &[
    "per-call",
    "memory",
    "handoff",
    "contention",
    "shared",
    "update-now",
];

/// The families measured on the static binary too.
const STATIC_FAMILIES: &[&str] = &["per-call", "memory", "contention", "shared"];

pub fn bench(root: &Path, quick: bool, only: Option<&str>) -> Result<(), String> {
    if let Some(family) = only.filter(|f| !FAMILIES.contains(f)) {
        return Err(format!(
            "bench --only: unknown family {family:?} (known: {})",
            FAMILIES.join(", ")
        ));
    }
    let plan = if quick { &QUICK } else { &FULL };
    let peers = Peers::find(root);
    peers.report();

    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| OsString::from("cargo"));
    let target_dir = dist::target_dir(&cargo, root)?;
    let release = build_release(&cargo, root, &target_dir)?;
    let static_bin = match only {
        Some(family) if !STATIC_FAMILIES.contains(&family) => None,
        _ => build_dist(root, &target_dir),
    };

    process::set_child_subreaper();
    let scratch = Scratch::new()?;
    eprintln!("lock files under {}", scratch.path().display());
    let tools = Tools {
        release: release.clone(),
        static_bin: static_bin.clone(),
        peers,
        sh: required("sh")?,
        bash: required("bash")?,
        true_: required("true")?,
        echo: required("echo")?,
        rm: required("rm")?,
        sleep: required("sleep")?,
    };

    let mut report = Report::default();
    let all = only.is_none();
    let runs = |family: &str| only.is_none_or(|only| only == family);
    if runs("per-call") {
        per_call::run_true(&tools, &scratch, plan, &mut report)?;
        shell_loop::run_true(&tools, &scratch, plan, &mut report)?;
        per_call::acquire_release(&tools, &scratch, plan, &mut report)?;
        shell_loop::acquire_release(&tools, &scratch, plan, &mut report)?;
    }
    if runs("memory") {
        peak_rss::measure(&tools, &scratch, plan, &mut report)?;
        idle::measure(&tools, &scratch, plan, &mut report)?;
    }
    if runs("handoff") {
        handoff::measure(&tools, root, &scratch, plan, &mut report)?;
    }
    if runs("contention") {
        contention::measure(&tools, &scratch, plan, &mut report)?;
    }
    if runs("shared") {
        shared::measure(&tools, &scratch, plan, &mut report)?;
    }
    if runs("update-now") {
        update_now::measure(&tools, &scratch, &mut report)?;
    }
    if all {
        sizes::measure(&release, static_bin.as_deref(), &mut report.rows);
    }
    process::reap_orphans();

    let results = results(root, plan, quick, report);
    println!("{}", page::render(&results));
    if all {
        write_page(root, &results)?;
    }
    Ok(())
}

/// Write the run's results and the page's tables made from them.
fn write_page(root: &Path, results: &Results) -> Result<(), String> {
    let json = root.join(page::RESULTS);
    fs::write(&json, results.to_json()).map_err(|e| format!("{}: {e}", json.display()))?;
    eprintln!("wrote {}", json.display());
    page_from_results(root, false)
}

/// `bench --page [--check]`: make docs/performance.md's tables from
/// docs/performance.json, or check that they are what it makes.
pub fn page_from_results(root: &Path, check: bool) -> Result<(), String> {
    let read = |rel: &str| {
        let path = root.join(rel);
        fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))
    };
    let results =
        Results::from_json(&read(page::RESULTS)?).map_err(|e| format!("{}: {e}", page::RESULTS))?;
    results.check_budgets()?;
    let text = read(page::PAGE)?;
    if check {
        page::check(&text, &results)?;
        println!("{} is the page of {}", page::PAGE, page::RESULTS);
        return Ok(());
    }
    let filled = page::fill(&text, &page::render(&results))?;
    let path = root.join(page::PAGE);
    if filled != text {
        fs::write(&path, filled).map_err(|e| format!("{}: {e}", path.display()))?;
        eprintln!("wrote {}", path.display());
    } else {
        eprintln!("unchanged {}", path.display());
    }
    Ok(())
}

/// Everything the cases run.
struct Tools {
    release: PathBuf,
    static_bin: Option<PathBuf>,
    peers: Peers,
    sh: PathBuf,
    bash: PathBuf,
    true_: PathBuf,
    echo: PathBuf,
    rm: PathBuf,
    sleep: PathBuf,
}

impl Tools {
    /// The resin-lock binaries to measure: the release build, and the static
    /// dist binary when there is one.
    fn resin_locks(&self) -> Vec<(&'static str, &Path)> {
        let mut bins = vec![("release", self.release.as_path())];
        if let Some(bin) = &self.static_bin {
            bins.push(("static", bin.as_path()));
        }
        bins
    }

    /// Whether `kind`'s row is judged: the budgets name the shipped
    /// (static) binary; the release build's rows are for information,
    /// unless there is no static one to judge.
    fn judged(&self, kind: &str) -> bool {
        kind == "static" || self.static_bin.is_none()
    }

    /// The verdict of `kind`'s row: `value` against the budget `id` when
    /// the row is judged, else for information.
    fn verdict(&self, kind: &str, id: &str, value: f64) -> Verdict {
        if self.judged(kind) {
            judged(id, value)
        } else {
            Verdict::Info {
                note: "— (budget: static)".to_owned(),
            }
        }
    }
}

/// A row judged against the budget `id` of `budgets.rs`.
fn judged(id: &str, value: f64) -> Verdict {
    debug_assert!(budgets::budget(id).is_some(), "no budget {id}");
    Verdict::Judged {
        budget: id.to_owned(),
        value,
    }
}

/// A row for information, with no budget.
fn info() -> Verdict {
    Verdict::Info {
        note: "—".to_owned(),
    }
}

// ---------------------------------------------------------------- builds

fn build_release(cargo: &OsStr, root: &Path, target_dir: &Path) -> Result<PathBuf, String> {
    eprintln!("building resin-lock (cargo build --release)");
    let status = Command::new(cargo)
        .current_dir(root)
        .args(["build", "--release", "--locked", "--package", "resin-lock"])
        .args(["--bin", "resin-lock"])
        .status()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    if !status.success() {
        return Err(format!("cargo build --release failed ({status})"));
    }
    Ok(target_dir.join("release").join("resin-lock"))
}

/// `target/dist/resin-lock`, (re)built by `cargo xtask dist` (whose failed
/// checks, such as the size budget, are reported but do not stop us).
fn build_dist(root: &Path, target_dir: &Path) -> Option<PathBuf> {
    // Always through `xtask dist` (cargo rebuilds only what changed), so
    // that the binary measured is the one the sources make, never a stale
    // copy left in target/dist.
    let path = target_dir.join("dist").join("resin-lock");
    if let Err(err) = dist::dist(root, false, dist::Targets::Host) {
        eprintln!("xtask dist: {err} (measuring the binary anyway)");
    }
    path.is_file().then_some(path)
}

// ---------------------------------------------------------------- the table

/// What the families measured: the table's rows and the samples behind them.
#[derive(Default)]
struct Report {
    rows: Vec<Row>,
    /// Wall times of every case.
    walls: Vec<Series>,
    /// Peak RSS samples (KiB) of every case.
    peak_rss: Vec<(String, Vec<u64>)>,
    /// Idle RSS samples of every case.
    idle: Vec<(String, Vec<idle::Resident>)>,
}

fn ms(d: Duration) -> String {
    let ms = d.as_secs_f64() * 1000.0;
    if ms >= 100.0 {
        format!("{ms:.1} ms")
    } else if ms >= 10.0 {
        format!("{ms:.2} ms")
    } else {
        format!("{ms:.3} ms")
    }
}

fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 { a / b } else { f64::INFINITY }
}

/// A row comparing two wall-time medians, for information.
fn wall_row(bench: String, ours: &Series, peer: &Series) -> Row {
    let r = ratio(ours.median().as_secs_f64(), peer.median().as_secs_f64());
    Row {
        bench,
        ours: ms(ours.median()),
        peer: format!("{} ({})", ms(peer.median()), peer.name),
        ratio: format!("{r:.2}x"),
        verdict: info(),
    }
}

fn skipped(bench: String, peer: &Peer) -> Row {
    Row {
        bench,
        ours: "—".to_owned(),
        peer: format!("{} missing ({})", peer.name, peer.package),
        ratio: "—".to_owned(),
        verdict: Verdict::Skipped,
    }
}

// ---------------------------------------------------------------- report

/// The run as the page shows it: what was measured on what, the rows, and
/// the details of every case.
fn results(root: &Path, plan: &Plan, quick: bool, report: Report) -> Results {
    let mut details = vec![walls_table(&report.walls)];
    details.extend(peak_rss_table(&report.peak_rss));
    details.extend(idle_table(&report.idle));
    Results {
        quick,
        about: about(root, plan),
        rows: report.rows,
        details,
    }
}

/// What was measured on what.
fn about(root: &Path, plan: &Plan) -> Vec<(String, String)> {
    vec![
        ("date".to_owned(), date()),
        (
            "machine".to_owned(),
            format!(
                "{} CPUs (nproc), {}, Linux {}",
                std::thread::available_parallelism().map_or(0, |n| n.get()),
                cpu_model(),
                command_line("uname", &["-r"]).unwrap_or_else(|| "unknown".to_owned())
            ),
        ),
        (
            "resin-lock".to_owned(),
            format!(
                "commit {}",
                command_line_in(root, "git", &["describe", "--always", "--dirty"])
                    .unwrap_or_else(|| "unknown".to_owned())
            ),
        ),
        (
            "rounds".to_owned(),
            format!(
                "per-call {} (direct spawn), {} runs x {} blocks of {} (shell loop), \
                 peak RSS {}, idle RSS {}, handoff {} (resin-lock, flock) / {} (npm) / {} (lockfile), \
                 contention {} trials of {CONTENDERS} x {}, shared {}, update-now {}; \
                 medians, commands interleaved",
                plan.per_call,
                shell_loop::RUNS,
                plan.shell_blocks,
                shell_loop::BLOCK,
                plan.rss,
                plan.idle,
                plan.handoff_fast,
                plan.handoff_npm,
                plan.handoff_lockfile,
                plan.contention_trials,
                plan.contention_loops,
                plan.shared,
                update_now::ROUNDS,
            ),
        ),
    ]
}

fn walls_table(walls: &[Series]) -> Table {
    Table {
        title: "Every case, wall time".to_owned(),
        header: ["case", "n", "p10", "median", "p90"]
            .map(str::to_owned)
            .to_vec(),
        rows: walls
            .iter()
            .map(|s| {
                vec![
                    s.name.clone(),
                    s.walls.len().to_string(),
                    ms(quantile(&s.walls, 0.1)),
                    ms(s.median()),
                    ms(quantile(&s.walls, 0.9)),
                ]
            })
            .collect(),
    }
}

fn peak_rss_table(peak_rss: &[(String, Vec<u64>)]) -> Option<Table> {
    (!peak_rss.is_empty()).then(|| Table {
        title: "Peak RSS (`/usr/bin/time -f %M`, KiB)".to_owned(),
        header: ["case", "n", "min", "median", "max"]
            .map(str::to_owned)
            .to_vec(),
        rows: peak_rss
            .iter()
            .map(|(name, kib)| {
                vec![
                    name.clone(),
                    kib.len().to_string(),
                    kib.iter().min().unwrap_or(&0).to_string(),
                    median_u64(kib).to_string(),
                    kib.iter().max().unwrap_or(&0).to_string(),
                ]
            })
            .collect(),
    })
}

fn idle_table(idle: &[(String, Vec<idle::Resident>)]) -> Option<Table> {
    (!idle.is_empty()).then(|| Table {
        title: "Idle RSS (`/proc/PID/status` once settled, KiB, medians)".to_owned(),
        header: ["case", "n", "VmRSS", "RssAnon", "RssFile"]
            .map(str::to_owned)
            .to_vec(),
        rows: idle
            .iter()
            .map(|(name, samples)| {
                let m = idle::Resident::median(samples);
                vec![
                    name.clone(),
                    samples.len().to_string(),
                    m.total.to_string(),
                    m.anon.to_string(),
                    m.file.to_string(),
                ]
            })
            .collect(),
    })
}

fn cpu_model() -> String {
    let info = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    info.lines()
        .find_map(|line| {
            let (key, value) = line.split_once(':')?;
            matches!(
                key.trim(),
                "model name" | "Model" | "Hardware" | "cpu model"
            )
            .then(|| value.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".to_owned())
}

fn date() -> String {
    command_line("date", &["-u", "+%Y-%m-%d %H:%M:%S UTC"]).unwrap_or_else(|| {
        let secs = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        format!("{secs} s since the epoch")
    })
}

/// The first line a command prints, if it succeeds.
fn command_line(program: &str, args: &[&str]) -> Option<String> {
    command_line_in(Path::new("."), program, args)
}

fn command_line_in(dir: &Path, program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(program)
        .current_dir(dir)
        .args(args)
        .output()
        .ok()?;
    out.status.success().then_some(())?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()
        .map(str::to_owned)
}
