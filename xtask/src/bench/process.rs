//! Spawning, timing and watching the processes the benchmarks measure,
//! shared by every benchmark family: a command line is an `Argv`, a child
//! that must not outlive an early return is a `Guard`, the lock files live
//! in a `Scratch` directory, and the orphans `acquire` leaves (its keepers)
//! are reaped here because the harness is their child subreaper.

use std::ffi::{OsStr, OsString};
use std::fs;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A command line: the program, then its arguments.
pub(super) type Argv = Vec<OsString>;

pub(super) fn argv<S: AsRef<OsStr>>(items: impl IntoIterator<Item = S>) -> Argv {
    items.into_iter().map(|s| s.as_ref().to_owned()).collect()
}

/// Spawn `argv` (stdin and stdout on /dev/null) and wait; fails unless it
/// exits 0.
pub(super) fn run_step(argv: &[OsString]) -> Result<(), String> {
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

/// Run the steps of a case one after the other, timed together. `reap`:
/// afterwards (untimed), reap the orphans they left (acquire's keepers).
pub(super) fn time_steps(steps: &[Argv], reap: bool) -> Result<Duration, String> {
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

pub(super) fn shown(argv: &[OsString]) -> String {
    argv.iter()
        .map(|a| a.to_string_lossy())
        .collect::<Vec<_>>()
        .join(" ")
}

/// A child that is killed and reaped if we bail out early.
pub(super) struct Guard(pub(super) Child);

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
pub(super) fn set_child_subreaper() {
    // SAFETY: PR_SET_CHILD_SUBREAPER takes an integer flag; no memory is passed.
    let _ = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
}

/// Reap orphans that have exited. Only called when every child we spawned
/// ourselves has been waited for.
pub(super) fn reap_orphans() {
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
pub(super) struct Scratch(tempfile::TempDir);

impl Scratch {
    pub(super) fn new() -> Result<Scratch, String> {
        tempfile::Builder::new()
            .prefix("resin-lock-bench.")
            .tempdir()
            .map(Scratch)
            .map_err(|e| format!("cannot make a scratch directory: {e}"))
    }

    pub(super) fn path(&self) -> &Path {
        self.0.path()
    }

    /// The lock file of one case, alone in its own directory, so that no
    /// tool sees another's files (flock leaves its file behind, which
    /// resin-lock would rightly call a foreign lock).
    pub(super) fn lock(&self, case: &str) -> Result<OsString, String> {
        let dir = self.path().join(case);
        fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        Ok(dir.join("updates.lock").into_os_string())
    }
}

/// How long a process must be seen asleep before it counts as blocked.
const ASLEEP_SAMPLES: u32 = 5;

/// Wait until `pid` has been seen asleep (state S) in a few consecutive
/// samples a millisecond apart: it is blocked (waiting for the lock, or
/// idle).
pub(super) fn wait_until_asleep(pid: u32) -> Result<(), String> {
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
