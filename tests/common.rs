//! Helpers shared by the integration tests: the binary under test, a fresh
//! temp dir per test, and event-based waiting (no sleeps as synchronisation).

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub use assert_cmd::prelude::*;
pub use predicates::prelude::*;
pub use predicates::str::contains;

/// `resin-lock` with a clean environment (no detection inputs leak in).
pub fn resin_lock() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_resin-lock"));
    for var in [
        "RESIN_LOCK_PATH",
        "RESIN_LOCK_ROOT",
        "BALENA_APP_LOCK_PATH",
        "RESIN_APP_LOCK_PATH",
        "BALENA_SUPERVISOR_VERSION",
        "RESIN_SUPERVISOR_VERSION",
        "BALENA_HOST_OS_VERSION",
        "RESIN_HOST_OS_VERSION",
        "BALENA_SUPERVISOR_ADDRESS",
        "RESIN_SUPERVISOR_ADDRESS",
        "BALENA_SUPERVISOR_API_KEY",
        "RESIN_SUPERVISOR_API_KEY",
    ] {
        cmd.env_remove(var);
    }
    cmd
}

/// A temp dir with a lock path inside it.
pub struct Scratch {
    pub dir: tempfile::TempDir,
}

impl Scratch {
    pub fn new() -> Scratch {
        Scratch {
            dir: tempfile::tempdir().expect("temp dir"),
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The default lock path of these tests.
    pub fn lock(&self) -> PathBuf {
        self.path("updates.lock")
    }

    /// `resin-lock --path <lock> ARGS…`
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut cmd = resin_lock();
        cmd.arg("--path").arg(self.lock()).args(args);
        cmd
    }

    /// Names in the dir other than `keep` (to prove nothing is left behind).
    pub fn leftovers(&self, keep: &[&str]) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(self.dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| !keep.contains(&n.as_str()))
            .collect();
        names.sort();
        names
    }
}

/// Wait until `cond` holds, checking often; panics after a generous bound
/// (a hang guard for a broken build, not a timing assertion).
pub fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        if start.elapsed() > Duration::from_secs(60) {
            panic!("timed out waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Wait until a file exists (a "ready file" written by a child).
pub fn wait_for_file(path: &Path) {
    wait_until(&format!("{} to appear", path.display()), || path.exists());
}

/// Run `cmd` to its end (stdin null, output captured), SIGKILLing it if it
/// still runs after a bound far past anything it should take: a hang guard
/// for tests of things that used to hang, not a timing assertion.
pub fn output_or_kill(mut cmd: Command) -> std::process::Output {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let pid = child.id().to_string();
    let done = Arc::new(AtomicBool::new(false));
    let guard = {
        let done = done.clone();
        std::thread::spawn(move || {
            let start = Instant::now();
            while !done.load(Ordering::SeqCst) {
                if start.elapsed() > Duration::from_secs(60) {
                    let _ = Command::new("kill").args(["-KILL", &pid]).status();
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    let out = child.wait_with_output().expect("wait");
    done.store(true, Ordering::SeqCst);
    guard.join().expect("guard");
    out
}

/// Spawn a command with stdio detached from the test harness.
pub fn spawn_quiet(mut cmd: Command) -> Child {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn")
}

/// Whether process `pid` is still alive (and not a zombie).
pub fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .map(|(_, rest)| !rest.trim_start().starts_with('Z'))
            .unwrap_or(false),
        Err(_) => false,
    }
}

/// The parsed record at a lock path.
pub fn record(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).expect("lock file")).expect("record JSON")
}

/// `status --json` for a scratch lock.
pub fn status_json(scratch: &Scratch) -> serde_json::Value {
    let out = scratch.cmd(&["status", "--json"]).output().unwrap();
    serde_json::from_slice(&out.stdout).expect("status JSON")
}

/// `acquire`, then SIGKILL its keeper and wait until it is gone: a stale
/// lock. Returns the dead keeper's pid.
pub fn acquire_and_kill_keeper(s: &Scratch) -> i32 {
    s.cmd(&["acquire"]).assert().success();
    let keeper = record(&s.lock())["pid"].as_i64().unwrap() as i32;
    Command::new("kill")
        .args(["-KILL", &keeper.to_string()])
        .assert()
        .success();
    wait_until("the keeper to die", || !alive(keeper));
    keeper
}

/// Run `script` in `workers` shells at once; every one must succeed.
pub fn run_workers(script: &str, workers: usize) {
    let children: Vec<Child> = (0..workers)
        .map(|_| Command::new("sh").args(["-c", script]).spawn().unwrap())
        .collect();
    for mut child in children {
        assert!(child.wait().unwrap().success());
    }
}

/// The critical sections never overlapped and every increment was counted.
pub fn assert_counted_without_overlap(counter: &Path, overlaps: &Path, expected: usize) {
    assert!(!overlaps.exists(), "critical sections overlapped");
    assert_eq!(
        std::fs::read_to_string(counter).unwrap().trim(),
        expected.to_string()
    );
}

/// A process to name with `--owner`: a second owner besides the test
/// process itself (an `acquire` of the owner that holds the lock fails at
/// once instead of waiting). Killed when dropped.
pub struct Sleeper(Child);

impl Sleeper {
    pub fn new() -> Sleeper {
        Sleeper(
            Command::new("sleep")
                .arg("1000")
                .stdin(Stdio::null())
                .spawn()
                .expect("sleep"),
        )
    }

    pub fn pid(&self) -> String {
        self.0.id().to_string()
    }
}

impl Drop for Sleeper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
