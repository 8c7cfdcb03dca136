//! The settle after a foreign lock vanished (SPEC 2a): the supervisor's
//! forced update removes another tool's lock (an empty file, a directory),
//! and its `lockfile -r 0` as uid 65534 follows a few milliseconds later. A
//! waiter that saw that lock must let the directory stay quiet for 250 ms
//! before it creates its own, whatever it was doing when the removal came,
//! and a lock that comes and goes again meanwhile starts the quiet anew.
//!
//! The removal is placed exactly: strace stops the waiter (SIGSTOP by fault
//! injection) in the middle of an attempt, or the test stops it while it
//! settles. What the waiter did next is read from the kernel, not timed: it
//! has gone back to sleep in poll(2) (its settle, or `run` waiting for its
//! command), and either its lock is there or nothing is.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::common::*;

/// The quiet the waiter owes the directory (the binary's `SETTLE`).
const SETTLE: Duration = Duration::from_millis(250);

#[derive(Clone, Copy, Debug)]
enum Foreign {
    EmptyFile,
    Directory,
}

impl Foreign {
    fn make(self, path: &Path) {
        match self {
            Foreign::EmptyFile => fs::write(path, "").unwrap(),
            Foreign::Directory => fs::create_dir(path).unwrap(),
        }
    }

    fn remove(self, path: &Path) {
        match self {
            Foreign::EmptyFile => fs::remove_file(path).unwrap(),
            Foreign::Directory => fs::remove_dir(path).unwrap(),
        }
    }
}

/// A scratch dir that uid 65534 can create in (the supervisor's lock dir).
fn lock_dir() -> Scratch {
    let s = Scratch::new();
    fs::set_permissions(s.dir.path(), fs::Permissions::from_mode(0o1777)).unwrap();
    s
}

/// The times process `pid` was given a CPU (the third field of schedstat).
fn runs(pid: i32) -> u64 {
    fs::read_to_string(format!("/proc/{pid}/schedstat"))
        .ok()
        .and_then(|s| s.split_whitespace().nth(2)?.parse().ok())
        .unwrap_or(0)
}

/// Whether process `pid` sleeps in poll(2) now.
fn in_poll(pid: i32) -> bool {
    proc_state(pid) == Some('S')
        && fs::read_to_string(format!("/proc/{pid}/wchan")).is_ok_and(|w| w.contains("poll"))
}

/// Wait until `pid` has run since it had run `before` times, and sleeps in
/// poll(2) now (or has exited): it has done what it does next.
fn next_poll(pid: i32, before: u64) {
    wait_until("the waiter to go back to poll(2)", || {
        !alive(pid) || (runs(pid) > before && in_poll(pid))
    });
}

fn stopped(pid: i32) -> bool {
    matches!(proc_state(pid), Some('T' | 't'))
}

/// `lockfile -r 0` as uid 65534, as the supervisor's force runs it.
fn supervisor_takes(lock: &Path) -> std::process::Output {
    let mut cmd = as_nobody("lockfile");
    cmd.args(["-r", "0"]).arg(lock);
    output_or_kill(cmd)
}

/// What is at the lock path, in words, for a failure message.
fn at(lock: &Path) -> String {
    match fs::symlink_metadata(lock) {
        Err(_) => "nothing".to_owned(),
        Ok(meta) => format!(
            "uid {} {}: {}",
            std::os::unix::fs::MetadataExt::uid(&meta),
            if meta.is_dir() { "directory" } else { "file" },
            fs::read_to_string(lock).unwrap_or_default().trim()
        ),
    }
}

/// The waiter ended its wait as it should: it ran its command (which
/// writes `ran`), said nothing of a removed lock, and left nothing behind.
fn finish(mut waiter: Group, s: &Scratch, what: &str) {
    let status = waiter.wait();
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut waiter.child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(status.success(), "{what}: {status}: {stderr}");
    assert!(s.path("ran").exists(), "{what}: {stderr}");
    assert!(!stderr.contains("removed"), "{what}: {stderr}");
    assert_eq!(s.leftovers(&["ran"]), Vec::<String>::new(), "{what}");
}

/// The waiter's command: leaves `ran` behind.
fn waiter_args(s: &Scratch) -> Vec<String> {
    let ran = s.path("ran");
    vec![
        "--path".to_owned(),
        s.lock().to_str().unwrap().to_owned(),
        "run".to_owned(),
        "-w".to_owned(),
        "120".to_owned(),
        "--".to_owned(),
        "touch".to_owned(),
        ran.to_str().unwrap().to_owned(),
    ]
}

/// `strace` writing to `trace` the fstatat(2) calls on the lock's directory.
fn traced(strace: &Path, s: &Scratch, trace: &Path) -> Command {
    let mut cmd = Command::new(strace);
    cmd.args(["-qq", "-o"])
        .arg(trace)
        .arg("-P")
        .arg(s.dir.path())
        .args(["-e", "trace=?newfstatat,?fstatat64"])
        .env_remove("RESIN_LOCK_PATH");
    cmd
}

/// Which of a waiter's fstatat(2) calls on the lock's directory is its
/// second look at the lock name, counted from 1 as strace's `when=` does:
/// from a waiter that gives up at once, traced only.
fn second_look(strace: &Path, s: &Scratch, trace: &Path) -> usize {
    let mut cmd = traced(strace, s, trace);
    cmd.arg(bin())
        .arg("--path")
        .arg(s.lock())
        .args(["run", "-w", "0.1", "--", "true"]);
    let out = output_or_kill(cmd);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let calls = fs::read_to_string(trace).unwrap();
    let calls: Vec<&str> = calls.lines().filter(|l| l.contains("stat")).collect();
    let looks: Vec<usize> = (0..calls.len())
        .filter(|&i| calls[i].contains("\"updates.lock\""))
        .collect();
    assert!(looks.len() >= 2, "{calls:#?}");
    looks[1] + 1
}

/// A waiter behind a foreign lock, stopped by strace right after its second
/// look at the lock path (the check at the start of its second attempt,
/// which sees the foreign lock still there): the removal then lands inside
/// the attempt, between that look and what the attempt does next. Before
/// the fix it created its lock at once, with no settle.
#[test]
fn a_foreign_lock_removed_in_the_middle_of_an_attempt_still_lets_the_directory_settle() {
    let test = "a_foreign_lock_removed_in_the_middle_of_an_attempt_still_lets_the_directory_settle";
    if emulated(test, "strace cannot trace a binary run by qemu-user") {
        return;
    }
    let (Some(strace), Some(_)) = (tool("strace"), tool("lockfile")) else {
        return;
    };
    for foreign in [Foreign::EmptyFile, Foreign::Directory] {
        let s = lock_dir();
        let lock = s.lock();
        foreign.make(&lock);
        // Only the calls on the lock's directory count (-P); its looks at
        // the lock name are fstatat(2)s there, among others on the
        // directory (listing it): which one is the second look is read
        // from a first run that only traces.
        let trace_dir = Scratch::new();
        let trace = trace_dir.path("trace");
        let stop_at = second_look(&strace, &s, &trace);
        fs::remove_file(&trace).unwrap();
        // The trace says when the injected SIGSTOP stopped it (strace
        // stops it at start too).
        let mut cmd = traced(&strace, &s, &trace);
        cmd.args([
            "-e",
            &format!("inject=?newfstatat,?fstatat64:signal=SIGSTOP:when={stop_at}"),
        ])
        .arg(bin())
        .args(waiter_args(&s))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
        // In a group of its own with the waiter it traces: both are
        // killed if the test fails, a stopped waiter too.
        let strace = Group::spawn(cmd, "strace");
        let strace_pid = strace.pid();
        wait_until("the waiter to stop at its second look", || {
            fs::read_to_string(&trace).is_ok_and(|t| t.contains("stopped by SIGSTOP"))
        });
        let children = fs::read_to_string(format!("/proc/{strace_pid}/task/{strace_pid}/children"));
        let waiter: i32 = children.unwrap().trim().parse().unwrap();
        wait_until("the waiter to stop", || stopped(waiter));
        assert!(
            lock.symlink_metadata().is_ok(),
            "{foreign:?}: {}",
            at(&lock)
        );
        // The force's first half, inside the attempt.
        foreign.remove(&lock);
        let before = runs(waiter);
        kill(Pid::from_raw(waiter), Signal::SIGCONT).unwrap();
        next_poll(waiter, before);
        assert!(
            lock.symlink_metadata().is_err() && !s.path("ran").exists(),
            "{foreign:?}: the waiter created its lock the moment the foreign lock vanished \
             (found {})",
            at(&lock)
        );
        // The force's second half, while the waiter settles.
        let out = supervisor_takes(&lock);
        assert!(
            out.status.success(),
            "{foreign:?}: the supervisor's lockfile lost: {}",
            at(&lock)
        );
        assert!(alive(waiter) && !s.path("ran").exists(), "{foreign:?}");
        // The supervisor's update is done: its lock goes, the waiter runs.
        fs::remove_file(&lock).unwrap();
        finish(strace, &s, &format!("{foreign:?}"));
    }
}

/// A waiter that settles after a foreign lock vanished is stopped; the quiet
/// it owes has long passed when another tool's lock comes and goes again.
/// Those events start the quiet anew: the waiter, continued, settles again
/// instead of creating at once (before the fix the path was checked only
/// at the end of the first quiet, so the second lock went unseen).
#[test]
fn a_foreign_lock_that_comes_and_goes_while_the_directory_settles_starts_the_quiet_again() {
    let Some(_) = tool("lockfile") else { return };
    let s = lock_dir();
    let lock = s.lock();
    Foreign::EmptyFile.make(&lock);
    let mut cmd = resin_lock();
    cmd.args(waiter_args(&s))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut waiter = Group::spawn(cmd, "waiter");
    let pid = waiter.pid();
    let mut stderr = std::io::BufReader::new(waiter.child.stderr.take().unwrap());
    let mut line = String::new();
    std::io::BufRead::read_line(&mut stderr, &mut line).unwrap();
    assert!(line.contains("waiting for"), "{line}");
    waiter.child.stderr = Some(stderr.into_inner());
    wait_until("the waiter to sleep", || in_poll(pid));
    let before = runs(pid);
    Foreign::EmptyFile.remove(&lock);
    // Woken by the removal, it sleeps again: settling.
    next_poll(pid, before);
    assert!(lock.symlink_metadata().is_err(), "{}", at(&lock));
    kill(Pid::from_raw(pid), Signal::SIGSTOP).unwrap();
    wait_until("the waiter to stop", || stopped(pid));
    // Not a synchronisation: time must pass for the scenario, at least the
    // whole quiet the first removal asked for (a lower bound, so a slow
    // machine only makes it longer).
    std::thread::sleep(SETTLE + Duration::from_millis(150));
    Foreign::EmptyFile.make(&lock);
    Foreign::EmptyFile.remove(&lock);
    let before = runs(pid);
    kill(Pid::from_raw(pid), Signal::SIGCONT).unwrap();
    next_poll(pid, before);
    assert!(
        lock.symlink_metadata().is_err() && !s.path("ran").exists(),
        "the waiter created its lock right after another tool's lock came and went ({})",
        at(&lock)
    );
    let out = supervisor_takes(&lock);
    assert!(
        out.status.success(),
        "the supervisor's lockfile lost: {}",
        at(&lock)
    );
    fs::remove_file(&lock).unwrap();
    finish(waiter, &s, "waiter");
}
