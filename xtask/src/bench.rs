//! `cargo xtask bench`: resin-lock against its peers, in one run on one
//! machine, reported as ratios against the budgets of SPEC section 9.
//!
//! The machine is shared and noisy, so every comparison interleaves the
//! commands: in round r the cases run in an order rotated by r (for two
//! cases: A then B, then B then A), and the report uses medians. Each case
//! is timed with `Instant` around spawning its process(es) and waiting for
//! them, so the harness's own spawn cost is in every number alike (the
//! `spawn true` floor shows how big it is). Peak RSS is what
//! `/usr/bin/time -f %M` reports (see `peak_rss` for why not from here).
//! Both the release binary (`cargo build --release`) and, when there is one,
//! the static dist binary are measured: they start differently.
//!
//! Handoff is the time from a holder's critical command ending to a
//! waiter's command starting: the holder's command blocks reading a pipe
//! that the harness closes at t0; the waiter's command writes to a pipe that
//! the harness blocks reading, and t1 is when that read returns. The waiter
//! is known to be blocked when its process has been asleep for a few
//! consecutive samples; then the harness sleeps a random part of the
//! waiter's poll period, so polling peers are caught at a random phase.
//!
//! Peers are never installed here; missing ones are named and their rows
//! skipped. A missed budget is reported in the table, not as a failure: on a
//! shared machine one noisy run should not fail a build. The harness makes itself a child subreaper so that the keepers
//! `acquire` leaves behind are reaped here even where PID 1 does not reap.

use std::ffi::{OsStr, OsString};
use std::fs;
use std::io::{self, BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::dist;

/// How many rounds of each measurement.
struct Plan {
    /// Per-call cost: rounds of each interleaved case.
    per_call: usize,
    /// Peak RSS: rounds of each interleaved case.
    rss: usize,
    /// Handoff rounds for the event-driven tools (resin-lock, flock).
    handoff_fast: usize,
    /// Handoff rounds for the npm package (polls every 100 ms).
    handoff_npm: usize,
    /// Handoff rounds for lockfile(1) (sleeps whole seconds).
    handoff_lockfile: usize,
    /// Contention: trials per tool, and loops per process in each trial.
    contention_trials: usize,
    contention_loops: usize,
}

const FULL: Plan = Plan {
    per_call: 200,
    rss: 30,
    handoff_fast: 50,
    handoff_npm: 20,
    handoff_lockfile: 5,
    contention_trials: 5,
    contention_loops: 100,
};

const QUICK: Plan = Plan {
    per_call: 30,
    rss: 5,
    handoff_fast: 10,
    handoff_npm: 5,
    handoff_lockfile: 2,
    contention_trials: 2,
    contention_loops: 25,
};

/// Untimed runs of each case before a comparison starts.
const WARMUP: usize = 3;
/// Contending processes.
const CONTENDERS: usize = 4;
/// SPEC section 9.
const HANDOFF_BUDGET: Duration = Duration::from_millis(5);
const THROUGHPUT_BUDGET: f64 = 0.5;

type Argv = Vec<OsString>;

fn argv<S: AsRef<OsStr>>(items: impl IntoIterator<Item = S>) -> Argv {
    items.into_iter().map(|s| s.as_ref().to_owned()).collect()
}

pub fn bench(root: &Path, quick: bool) -> Result<(), String> {
    let plan = if quick { &QUICK } else { &FULL };
    let peers = Peers::find(root);
    peers.report();

    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| OsString::from("cargo"));
    let target_dir = dist::target_dir(&cargo, root)?;
    let release = build_release(&cargo, root, &target_dir)?;
    let static_bin = build_dist(root, &target_dir);

    set_child_subreaper();
    let scratch = Scratch::new()?;
    eprintln!("lock files under {}", scratch.0.display());
    let tools = Tools {
        release: release.clone(),
        static_bin: static_bin.clone(),
        peers,
        sh: required("sh")?,
        true_: required("true")?,
        echo: required("echo")?,
        rm: required("rm")?,
    };

    let mut rows = Vec::new();
    let mut details = Vec::new();
    let mut rss_details = Vec::new();
    per_call(&tools, &scratch, plan, &mut rows, &mut details)?;
    rss(&tools, &scratch, plan, &mut rows, &mut rss_details)?;
    handoff(&tools, root, &scratch, plan, &mut rows, &mut details)?;
    contention(&tools, &scratch, plan, &mut rows, &mut details)?;
    sizes(&release, static_bin.as_deref(), &mut rows);
    reap_orphans();

    print_report(root, plan, quick, &rows, &details, &rss_details);
    Ok(())
}

// ---------------------------------------------------------------- peers

/// A peer program (or package) and where it comes from.
struct Peer {
    name: &'static str,
    package: &'static str,
    path: Option<PathBuf>,
}

struct Peers {
    flock: Peer,
    lockfile: Peer,
    dotlockfile: Peer,
    node: Peer,
    npm_lockfile: Peer,
    time: Peer,
}

impl Peers {
    fn find(root: &Path) -> Peers {
        let npm = root.join("tests/fixtures/npm/node_modules/lockfile/lockfile.js");
        Peers {
            flock: Peer {
                name: "flock",
                package: "util-linux",
                path: in_path("flock"),
            },
            lockfile: Peer {
                name: "lockfile",
                package: "procmail",
                path: in_path("lockfile"),
            },
            dotlockfile: Peer {
                name: "dotlockfile",
                package: "liblockfile-bin",
                path: in_path("dotlockfile"),
            },
            node: Peer {
                name: "node",
                package: "nodejs",
                path: in_path("node"),
            },
            npm_lockfile: Peer {
                name: "npm lockfile",
                package: "`npm ci --prefix tests/fixtures/npm`",
                path: npm.is_file().then_some(npm),
            },
            time: Peer {
                name: "/usr/bin/time",
                package: "time",
                path: Some(PathBuf::from("/usr/bin/time")).filter(|p| p.is_file()),
            },
        }
    }

    fn all(&self) -> [&Peer; 6] {
        [
            &self.flock,
            &self.lockfile,
            &self.dotlockfile,
            &self.node,
            &self.npm_lockfile,
            &self.time,
        ]
    }

    /// Node together with the npm package, or what is missing.
    fn npm(&self) -> Option<&Path> {
        self.npm_lockfile.path.as_ref()?;
        self.node.path.as_deref()
    }

    fn report(&self) {
        for peer in self.all() {
            match &peer.path {
                Some(path) => eprintln!("peer {:<14} {}", peer.name, path.display()),
                None => eprintln!("peer {:<14} MISSING (from {})", peer.name, peer.package),
            }
        }
        let missing: Vec<String> = self
            .all()
            .iter()
            .filter(|p| p.path.is_none())
            .map(|p| format!("{} (from {})", p.name, p.package))
            .collect();
        if !missing.is_empty() {
            eprintln!(
                "missing peers, whose rows are skipped (this task installs nothing): {}",
                missing.join(", ")
            );
        }
    }
}

/// The first executable `name` on PATH.
fn in_path(name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|file| {
            fs::metadata(file).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

fn required(name: &str) -> Result<PathBuf, String> {
    in_path(name).ok_or_else(|| format!("`{name}` is not on PATH"))
}

/// Everything the cases run.
struct Tools {
    release: PathBuf,
    static_bin: Option<PathBuf>,
    peers: Peers,
    sh: PathBuf,
    true_: PathBuf,
    echo: PathBuf,
    rm: PathBuf,
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
    if let Err(err) = dist::dist(root, false) {
        eprintln!("xtask dist: {err} (measuring the binary anyway)");
    }
    path.is_file().then_some(path)
}

// ---------------------------------------------------------------- processes

/// Spawn `argv` (stdin and stdout on /dev/null) and wait; fails unless it
/// exits 0.
fn run_step(argv: &[OsString]) -> Result<(), String> {
    let status = Command::new(&argv[0])
        .args(&argv[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .status()
        .map_err(|e| format!("cannot run {}: {e}", shown(argv)))?;
    if !status.success() {
        return Err(format!("{} failed ({status})", shown(argv)));
    }
    Ok(())
}

/// The peak RSS of `argv` in KiB, as `/usr/bin/time -f %M` reports it (its
/// wait4(2) rusage: the largest of the process and the children it waited
/// for). Not measured from here: a child spawned by this process starts as a
/// vfork of it, and the kernel counts this process's RSS at exec time into
/// the child's peak, which would put a floor of the harness's size under
/// every number. `time` is small and forks.
fn peak_rss(time: &Path, report: &Path, argv: &[OsString]) -> Result<u64, String> {
    let status = Command::new(time)
        .args(["-f", "%M", "-o"])
        .arg(report)
        .args(argv)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .status()
        .map_err(|e| format!("cannot run {}: {e}", time.display()))?;
    if !status.success() {
        return Err(format!("{} failed ({status})", shown(argv)));
    }
    let text = fs::read_to_string(report).map_err(|e| format!("{}: {e}", report.display()))?;
    text.lines()
        .last()
        .and_then(|line| line.trim().parse().ok())
        .ok_or_else(|| format!("/usr/bin/time said {:?}", text.trim()))
}

fn shown(argv: &[OsString]) -> String {
    argv.iter()
        .map(|a| a.to_string_lossy())
        .collect::<Vec<_>>()
        .join(" ")
}

/// A child that is killed and reaped if we bail out early.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// Become a child subreaper: orphans (the keepers of `acquire`) are ours to
/// reap, so none stays a zombie under a PID 1 that does not reap.
fn set_child_subreaper() {
    // SAFETY: PR_SET_CHILD_SUBREAPER takes an integer flag; no memory is passed.
    let _ = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
}

/// Reap orphans that have exited. Only called when every child we spawned
/// ourselves has been waited for.
fn reap_orphans() {
    loop {
        let mut status = 0;
        // SAFETY: waitpid with a pointer to a live local int.
        let got = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
        if got <= 0 {
            return;
        }
    }
}

/// A fresh directory for the lock files, removed at the end.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Result<Scratch, String> {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let dir = std::env::temp_dir().join(format!(
            "resin-lock-bench.{}.{nanos:08x}",
            std::process::id()
        ));
        fs::create_dir(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        Ok(Scratch(dir))
    }

    /// The lock file of one case, alone in its own directory, so that no
    /// tool sees another's files (flock leaves its file behind, which
    /// resin-lock would rightly call a foreign lock).
    fn lock(&self, case: &str) -> Result<OsString, String> {
        let dir = self.0.join(case);
        fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        Ok(dir.join("updates.lock").into_os_string())
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// A small xorshift generator for the handoff jitter.
struct Rng(u64);

impl Rng {
    fn new() -> Rng {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1);
        Rng((nanos ^ u64::from(std::process::id()) << 32) | 1)
    }

    /// Uniform in [0, max).
    fn below(&mut self, max: Duration) -> Duration {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        let fraction = (self.0 >> 11) as f64 / (1u64 << 53) as f64;
        max.mul_f64(fraction)
    }
}

// ---------------------------------------------------------------- statistics

/// The wall times of one case, named.
struct Series {
    name: String,
    walls: Vec<Duration>,
}

impl Series {
    fn median(&self) -> Duration {
        quantile(&self.walls, 0.5)
    }
}

/// Name the samples of each case.
fn named(names: &[String], samples: Vec<Vec<Duration>>) -> Vec<Series> {
    names
        .iter()
        .zip(samples)
        .map(|(name, walls)| Series {
            name: name.clone(),
            walls,
        })
        .collect()
}

/// Linear-interpolated quantile (0.5 is the median).
fn quantile(values: &[Duration], q: f64) -> Duration {
    if values.is_empty() {
        return Duration::ZERO;
    }
    let mut sorted = values.to_vec();
    sorted.sort();
    let pos = q * (sorted.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    sorted[lo].mul_f64(1.0 - (pos - lo as f64)) + sorted[hi].mul_f64(pos - lo as f64)
}

fn median_u64(values: &[u64]) -> u64 {
    let mut sorted = values.to_vec();
    sorted.sort_unstable();
    sorted.get(sorted.len() / 2).copied().unwrap_or(0)
}

/// Run `rounds` rounds of `cases` cases, rotating the order each round (for
/// two: A B, B A, ...), after a warm-up. `run(i)` runs case i once; the
/// result has the samples of each case.
fn interleave<T>(
    rounds: usize,
    cases: usize,
    mut run: impl FnMut(usize) -> Result<T, String>,
) -> Result<Vec<Vec<T>>, String> {
    for i in 0..cases {
        for _ in 0..WARMUP {
            run(i)?;
        }
    }
    let mut samples: Vec<Vec<T>> = (0..cases).map(|_| Vec::with_capacity(rounds)).collect();
    for round in 0..rounds {
        for k in 0..cases {
            let i = (round + k) % cases;
            samples[i].push(run(i)?);
        }
    }
    Ok(samples)
}

// ---------------------------------------------------------------- the table

enum Holds {
    Yes,
    No,
    Info,
    Skipped,
}

struct Row {
    bench: String,
    ours: String,
    peer: String,
    ratio: String,
    budget: String,
    holds: Holds,
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

fn verdict(ok: bool) -> Holds {
    if ok { Holds::Yes } else { Holds::No }
}

/// A row comparing two wall-time medians against a maximum ratio (None: no
/// budget, for information).
fn wall_row(bench: String, ours: &Series, peer: &Series, max_ratio: Option<f64>) -> Row {
    let r = ratio(ours.median().as_secs_f64(), peer.median().as_secs_f64());
    Row {
        bench,
        ours: ms(ours.median()),
        peer: format!("{} ({})", ms(peer.median()), peer.name),
        ratio: format!("{r:.2}x"),
        budget: max_ratio.map_or("—".to_owned(), |m| format!("≤ {m:.1}x")),
        holds: max_ratio.map_or(Holds::Info, |m| verdict(r <= m)),
    }
}

fn skipped(bench: String, peer: &Peer) -> Row {
    Row {
        bench,
        ours: "—".to_owned(),
        peer: format!("{} missing ({})", peer.name, peer.package),
        ratio: "—".to_owned(),
        budget: "—".to_owned(),
        holds: Holds::Skipped,
    }
}

// ---------------------------------------------------------------- per call

/// `resin-lock --path F run -- true` for each resin-lock build, then
/// `flock F true` when flock(1) is there: names and commands, lock files
/// named after `prefix`.
fn run_true_cases(
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

/// `run -- true` vs `flock F true`; `acquire` + `release` vs `lockfile -r0
/// F; rm -f F` and vs `dotlockfile -l -r0 F; dotlockfile -u F`.
fn per_call(
    tools: &Tools,
    scratch: &Scratch,
    plan: &Plan,
    rows: &mut Vec<Row>,
    details: &mut Vec<Series>,
) -> Result<(), String> {
    let rounds = plan.per_call;
    let t = tools.true_.as_os_str();

    // `run -- true`, flock, and the floor: spawning `true` itself.
    let (mut names, cases) = run_true_cases(tools, scratch, "run")?;
    let mut cases: Vec<Vec<Argv>> = cases.into_iter().map(|c| vec![c]).collect();
    let flock = tools.peers.flock.path.as_ref();
    names.push("true (spawn floor)".to_owned());
    cases.push(vec![argv([t])]);
    eprintln!(
        "per-call: {rounds} interleaved rounds of: {}",
        names.join(", ")
    );
    let series = named(
        &names,
        interleave(rounds, cases.len(), |i| time_steps(&cases[i], false))?,
    );

    let n_ours = tools.resin_locks().len();
    let flock_series = flock.map(|_| &series[n_ours]);
    for (i, (kind, _)) in tools.resin_locks().iter().enumerate() {
        let bench = format!("`run -- true` wall, median ({kind} binary)");
        rows.push(match flock_series {
            Some(peer) => wall_row(bench, &series[i], peer, Some(1.0)),
            None => skipped(bench, &tools.peers.flock),
        });
    }
    details.extend(series);

    // acquire + release against lockfile(1) and dotlockfile(1).
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
    let series = named(
        &names,
        interleave(rounds, cases.len(), |i| time_steps(&cases[i], i < n_ours))?,
    );
    let lockfile_series = lockfile.map(|_| &series[n_ours]);
    let dotlockfile_series = dotlockfile.map(|_| &series[n_ours + usize::from(lockfile.is_some())]);
    for (i, (kind, _)) in tools.resin_locks().iter().enumerate() {
        let bench = format!("`acquire` + `release` wall, median ({kind} binary)");
        rows.push(match lockfile_series {
            Some(peer) => wall_row(bench, &series[i], peer, Some(1.0)),
            None => skipped(bench, &tools.peers.lockfile),
        });
        let bench = format!("`acquire` + `release` vs dotlockfile ({kind} binary)");
        rows.push(match dotlockfile_series {
            Some(peer) => wall_row(bench, &series[i], peer, None),
            None => skipped(bench, &tools.peers.dotlockfile),
        });
    }
    details.extend(series);
    Ok(())
}

/// Run the steps of a case one after the other, timed together. `reap`:
/// afterwards (untimed), reap the orphans they left (acquire's keepers).
fn time_steps(steps: &[Argv], reap: bool) -> Result<Duration, String> {
    let start = Instant::now();
    for step in steps {
        run_step(step)?;
    }
    let wall = start.elapsed();
    if reap {
        reap_orphans();
    }
    Ok(wall)
}

// ---------------------------------------------------------------- peak RSS

/// Peak RSS of `run -- true` vs `flock F true`, with `true` alone as the
/// floor of the method.
fn rss(
    tools: &Tools,
    scratch: &Scratch,
    plan: &Plan,
    rows: &mut Vec<Row>,
    details: &mut Vec<(String, Vec<u64>)>,
) -> Result<(), String> {
    let bench = |kind: &str| format!("peak RSS of `run -- true` ({kind} binary)");
    let Some(time) = &tools.peers.time.path else {
        for (kind, _) in tools.resin_locks() {
            rows.push(skipped(bench(kind), &tools.peers.time));
        }
        return Ok(());
    };
    let t = tools.true_.as_os_str();
    let (mut names, mut cases) = run_true_cases(tools, scratch, "rss")?;
    let flock = tools.peers.flock.path.as_ref();
    names.push("true (floor of the method)".to_owned());
    cases.push(argv([t]));
    let report = scratch.0.join("time.out");
    eprintln!(
        "peak RSS: {} interleaved rounds (/usr/bin/time -f %M) of: {}",
        plan.rss,
        names.join(", ")
    );
    let samples = interleave(plan.rss, cases.len(), |i| {
        peak_rss(time, &report, &cases[i])
    })?;
    let n_ours = tools.resin_locks().len();
    for (i, (kind, _)) in tools.resin_locks().iter().enumerate() {
        rows.push(match flock {
            Some(_) => {
                let (a, b) = (median_u64(&samples[i]), median_u64(&samples[n_ours]));
                Row {
                    bench: bench(kind),
                    ours: format!("{a} KiB"),
                    peer: format!("{b} KiB (flock F true)"),
                    ratio: format!("{:.2}x", ratio(a as f64, b as f64)),
                    budget: "≤ flock's".to_owned(),
                    holds: verdict(a <= b),
                }
            }
            None => skipped(bench(kind), &tools.peers.flock),
        });
    }
    details.extend(names.into_iter().zip(samples));
    Ok(())
}

// ---------------------------------------------------------------- handoff

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

/// How long the waiter must be seen asleep before it counts as blocked, and
/// the pause after that.
const ASLEEP_SAMPLES: u32 = 5;
const SETTLE: Duration = Duration::from_millis(20);

fn handoff(
    tools: &Tools,
    root: &Path,
    scratch: &Scratch,
    plan: &Plan,
    rows: &mut Vec<Row>,
    details: &mut Vec<Series>,
) -> Result<(), String> {
    let mut rng = Rng::new();
    let sh = tools.sh.as_os_str();
    let echo = tools.echo.as_os_str();
    let hold_script = "echo ready; read x || :";

    let f = scratch.lock("handoff-resin-lock")?;
    let ours = Handoff {
        name: "handoff: resin-lock run (release)".to_owned(),
        holder: argv([
            tools.release.as_os_str(),
            "--path".as_ref(),
            &f,
            "run".as_ref(),
            "--".as_ref(),
            sh,
            "-c".as_ref(),
            hold_script.as_ref(),
        ]),
        ready: "ready",
        waiter: argv([
            tools.release.as_os_str(),
            "--path".as_ref(),
            &f,
            "run".as_ref(),
            "--".as_ref(),
            echo,
            "go".as_ref(),
        ]),
        announces: false,
        period: Duration::from_millis(5),
        leftover: None,
    };
    let mut fast = vec![ours];
    if let Some(flock) = &tools.peers.flock.path {
        let f = scratch.lock("handoff-flock")?;
        fast.push(Handoff {
            name: "handoff: flock(1)".to_owned(),
            holder: argv([
                flock.as_os_str(),
                &f,
                sh,
                "-c".as_ref(),
                hold_script.as_ref(),
            ]),
            ready: "ready",
            waiter: argv([flock.as_os_str(), &f, echo, "go".as_ref()]),
            announces: false,
            period: Duration::from_millis(5),
            leftover: None,
        });
    }
    eprintln!(
        "handoff: {} interleaved rounds of resin-lock and flock(1)",
        plan.handoff_fast
    );
    let names: Vec<String> = fast.iter().map(|h| h.name.clone()).collect();
    let samples = interleave(plan.handoff_fast, fast.len(), |i| {
        handoff_once(&fast[i], &mut rng)
    })?;
    let mut all = named(&names, samples);

    let mut slow = Vec::new();
    if let Some(lockfile) = &tools.peers.lockfile.path {
        let f = scratch.lock("handoff-lockfile")?;
        let lockfile = lockfile.as_os_str();
        slow.push((
            plan.handoff_lockfile,
            Handoff {
                name: "handoff: lockfile(1) -1 -r -1".to_owned(),
                holder: argv([
                    sh,
                    "-c".as_ref(),
                    r#""$0" -r0 "$1" || exit 1; echo ready; read x || :; rm -f "$1""#.as_ref(),
                    lockfile,
                    &f,
                ]),
                ready: "ready",
                waiter: argv([
                    sh,
                    "-c".as_ref(),
                    r#""$0" -1 -r -1 "$1" && exec "$2" go"#.as_ref(),
                    lockfile,
                    &f,
                    echo,
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
        slow.push((
            plan.handoff_npm,
            Handoff {
                name: "handoff: npm lockfile (pollPeriod 100 ms)".to_owned(),
                holder: argv([
                    node.as_os_str(),
                    fixtures.join("locksync.js").as_os_str(),
                    &f,
                    "hold".as_ref(),
                ]),
                ready: "locked",
                waiter: argv([
                    node.as_os_str(),
                    fixtures.join("waitlock.js").as_os_str(),
                    &f,
                ]),
                announces: true,
                period: Duration::from_millis(100),
                leftover: None,
            },
        ));
    }
    for (rounds, peer) in &slow {
        eprintln!("handoff: {rounds} rounds of {}", peer.name);
        let walls = (0..*rounds)
            .map(|_| handoff_once(peer, &mut rng))
            .collect::<Result<_, _>>()?;
        all.push(Series {
            name: peer.name.clone(),
            walls,
        });
    }

    let ours = &all[0];
    let holds = ours.median() <= HANDOFF_BUDGET;
    let mut peers: Vec<(&Peer, Option<&Series>)> = vec![(
        &tools.peers.flock,
        all.iter().find(|s| s.name.contains("flock(1)")),
    )];
    peers.push((
        &tools.peers.lockfile,
        all.iter().find(|s| s.name.contains("lockfile(1)")),
    ));
    let npm_peer = if tools.peers.node.path.is_none() {
        &tools.peers.node
    } else {
        &tools.peers.npm_lockfile
    };
    peers.push((
        npm_peer,
        all.iter().find(|s| s.name.contains("npm lockfile")),
    ));
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
                budget: format!("≤ {} (resin-lock)", ms(HANDOFF_BUDGET)),
                holds: verdict(holds),
            },
            None => skipped(bench, peer),
        });
    }
    details.extend(all);
    Ok(())
}

/// One handoff: the time from the holder's command ending (t0, the harness
/// closes its stdin) to the waiter's command starting (t1, its first byte
/// on the pipe the harness blocks reading).
fn handoff_once(h: &Handoff, rng: &mut Rng) -> Result<Duration, String> {
    let spawn_err = |what: &str, e: io::Error| format!("{}: cannot start the {what}: {e}", h.name);
    let mut holder = Guard(
        Command::new(&h.holder[0])
            .args(&h.holder[1..])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| spawn_err("holder", e))?,
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
            .map_err(|e| spawn_err("waiter", e))?,
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
    wait_until_asleep(waiter.0.id()).map_err(|e| format!("{}: the waiter {e}", h.name))?;
    std::thread::sleep(SETTLE + rng.below(h.period));

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

/// Wait until `pid` has been seen asleep (state S) in a few consecutive
/// samples a millisecond apart: it is blocked waiting for the lock.
fn wait_until_asleep(pid: u32) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut asleep = 0;
    while asleep < ASLEEP_SAMPLES {
        let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        // The state follows the parenthesised command name.
        let state = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.trim_start().chars().next());
        match state {
            Some('S') => asleep += 1,
            Some('Z' | 'X') | None => return Err("exited before it blocked".to_owned()),
            Some(_) => asleep = 0,
        }
        if Instant::now() > deadline {
            return Err("did not block within 10 s".to_owned());
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    Ok(())
}

// ---------------------------------------------------------------- contention

/// 4 processes, each looping `resin-lock run -- true` (or `flock F true`) N
/// times on the same lock: total runs per second.
fn contention(
    tools: &Tools,
    scratch: &Scratch,
    plan: &Plan,
    rows: &mut Vec<Row>,
    details: &mut Vec<Series>,
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
        interleave(trials, cmds.len(), |i| contend(&tools.sh, &cmds[i], loops))?,
    );
    let runs = (CONTENDERS * loops) as f64;
    let per_sec = |s: &Series| runs / s.median().as_secs_f64();
    let n_ours = tools.resin_locks().len();
    for (i, (kind, _)) in tools.resin_locks().iter().enumerate() {
        let bench = format!("{CONTENDERS}-way contention, runs/s ({kind} binary)");
        rows.push(match flock {
            Some(_) => {
                let (a, b) = (per_sec(&series[i]), per_sec(&series[n_ours]));
                let r = ratio(a, b);
                Row {
                    bench,
                    ours: format!("{a:.0}/s"),
                    peer: format!("{b:.0}/s (flock F true)"),
                    ratio: format!("{r:.2}x"),
                    budget: format!("≥ {THROUGHPUT_BUDGET:.1}x"),
                    holds: verdict(r >= THROUGHPUT_BUDGET),
                }
            }
            None => skipped(bench, &tools.peers.flock),
        });
    }
    details.extend(series);
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

// ---------------------------------------------------------------- sizes

fn sizes(release: &Path, static_bin: Option<&Path>, rows: &mut Vec<Row>) {
    let mib = |bytes: u64| bytes as f64 / (1024.0 * 1024.0);
    let budget = dist::MAX_SIZE;
    match static_bin.and_then(|p| fs::metadata(p).ok()) {
        Some(meta) => rows.push(Row {
            bench: "static binary size (target/dist/resin-lock)".to_owned(),
            ours: format!("{:.2} MiB ({} B)", mib(meta.len()), meta.len()),
            peer: "—".to_owned(),
            ratio: format!("{:.2}x of budget", ratio(meta.len() as f64, budget as f64)),
            budget: format!("≤ {:.1} MiB", mib(budget)),
            holds: verdict(meta.len() <= budget),
        }),
        None => rows.push(Row {
            bench: "static binary size".to_owned(),
            ours: "not built".to_owned(),
            peer: "—".to_owned(),
            ratio: "—".to_owned(),
            budget: format!("≤ {:.1} MiB", mib(budget)),
            holds: Holds::Skipped,
        }),
    }
    if let Ok(meta) = fs::metadata(release) {
        rows.push(Row {
            bench: "release binary size (target/release/resin-lock, dynamic)".to_owned(),
            ours: format!("{:.2} MiB ({} B)", mib(meta.len()), meta.len()),
            peer: "—".to_owned(),
            ratio: "—".to_owned(),
            budget: "—".to_owned(),
            holds: Holds::Info,
        });
    }
}

// ---------------------------------------------------------------- report

fn print_report(
    root: &Path,
    plan: &Plan,
    quick: bool,
    rows: &[Row],
    details: &[Series],
    rss_details: &[(String, Vec<u64>)],
) {
    println!();
    println!(
        "## resin-lock benchmarks{}",
        if quick { " (--quick)" } else { "" }
    );
    println!();
    println!("- date: {}", date());
    println!(
        "- machine: {} CPUs (nproc), {}, Linux {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        cpu_model(),
        command_line("uname", &["-r"]).unwrap_or_else(|| "unknown".to_owned())
    );
    println!(
        "- resin-lock: commit {}",
        command_line_in(root, "git", &["describe", "--always", "--dirty"])
            .unwrap_or_else(|| "unknown".to_owned())
    );
    println!(
        "- rounds: per-call {}, peak RSS {}, handoff {} (resin-lock, flock) / {} (npm) / {} \
         (lockfile), contention {} trials of {CONTENDERS} x {}; medians, commands interleaved",
        plan.per_call,
        plan.rss,
        plan.handoff_fast,
        plan.handoff_npm,
        plan.handoff_lockfile,
        plan.contention_trials,
        plan.contention_loops
    );
    println!();
    println!("| benchmark | resin-lock | peer | ratio | budget | holds? |");
    println!("|---|---|---|---|---|---|");
    for row in rows {
        let holds = match row.holds {
            Holds::Yes => "yes",
            Holds::No => "**no**",
            Holds::Info => "(info)",
            Holds::Skipped => "skipped",
        };
        println!(
            "| {} | {} | {} | {} | {} | {holds} |",
            row.bench, row.ours, row.peer, row.ratio, row.budget
        );
    }
    println!();
    println!("Every case, wall time:");
    println!();
    println!("| case | n | p10 | median | p90 |");
    println!("|---|---|---|---|---|");
    for s in details {
        println!(
            "| {} | {} | {} | {} | {} |",
            s.name,
            s.walls.len(),
            ms(quantile(&s.walls, 0.1)),
            ms(s.median()),
            ms(quantile(&s.walls, 0.9)),
        );
    }
    if !rss_details.is_empty() {
        println!();
        println!("Peak RSS (`/usr/bin/time -f %M`, KiB):");
        println!();
        println!("| case | n | min | median | max |");
        println!("|---|---|---|---|---|");
        for (name, kib) in rss_details {
            println!(
                "| {name} | {} | {} | {} | {} |",
                kib.len(),
                kib.iter().min().unwrap_or(&0),
                median_u64(kib),
                kib.iter().max().unwrap_or(&0),
            );
        }
    }
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
