//! The lock holds exactly as long as the work (issue 11) and survives
//! hostile or broken surroundings (issue 12): a forced update while another
//! resin-lock waits, long command lines, no /dev/null, no /proc, no inotify,
//! another uid's symlinks and fake keepers in the shared lock directory.

use std::fs;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::{Child, ChildStderr, Command, Stdio};

use crate::common::*;

/// A scratch dir that other uids may write in, as the supervisor makes the
/// lock directory (1777).
pub(crate) fn shared() -> Scratch {
    let s = Scratch::new();
    fs::set_permissions(s.dir.path(), fs::Permissions::from_mode(0o1777)).unwrap();
    s
}

/// `sh -c script` in a private mount namespace (a test may mount over
/// /dev or /proc there without touching the machine).
fn in_private_mount(script: &str) -> Command {
    let mut cmd = Command::new("unshare");
    cmd.args(["--mount", "sh", "-c", script]);
    cmd
}

/// Whether any `resin-lock-keep` process has a file in `dir` open.
fn keeper_holds_a_file_in(dir: &Path) -> bool {
    fs::read_dir("/proc").unwrap().flatten().any(|p| {
        fs::read_to_string(p.path().join("comm")).is_ok_and(|c| c.trim() == "resin-lock-keep")
            && fs::read_dir(p.path().join("fd")).is_ok_and(|fds| {
                fds.flatten()
                    .any(|fd| fs::read_link(fd.path()).is_ok_and(|t| t.starts_with(dir)))
            })
    })
}

/// `program` run as `uid` (and its gid), no supplementary groups.
pub(crate) fn as_uid(uid: u32, program: &str) -> Command {
    let mut cmd = Command::new("setpriv");
    cmd.args([
        &format!("--reuid={uid}"),
        &format!("--regid={uid}"),
        "--clear-groups",
        program,
    ]);
    cmd
}

/// Read `stderr` until a line containing `what`; the lines read so far.
fn read_until(stderr: &mut BufReader<ChildStderr>, what: &str) -> String {
    let mut seen = String::new();
    loop {
        let mut line = String::new();
        let n = stderr.read_line(&mut line).unwrap();
        assert!(n > 0, "stderr ended before {what:?}: {seen}");
        seen.push_str(&line);
        if line.contains(what) {
            return seen;
        }
    }
}

/// `run` holding the lock with a command that waits for its stdin to close;
/// returns once the command has started.
fn holder(s: &Scratch, log: &Path, ready: &Path) -> Child {
    let script = format!(
        "echo A-start >> {log}; touch {ready}; cat; echo A-end >> {log}",
        log = log.display(),
        ready = ready.display()
    );
    let mut cmd = s.cmd(&["run", "--", "sh", "-c", &script]);
    let child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_file(ready);
    child
}

/// `run` waiting for the lock with a command that logs `B`; returns once
/// it says it waits (`-v` only so that older builds say it too).
fn waiter(s: &Scratch, log: &Path) -> (Child, BufReader<ChildStderr>) {
    let script = format!("echo B >> {}", log.display());
    let mut b = s
        .cmd(&["-v", "run", "--", "sh", "-c", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut b_err = BufReader::new(b.stderr.take().unwrap());
    read_until(&mut b_err, "waiting for");
    (b, b_err)
}

/// Issue 11.1 (SPEC 2a): holder A runs, waiter B waits; the supervisor's
/// forced update unlinks A's file and runs `lockfile -r 0` as uid 65534.
/// The supervisor must get the lock every time, and B's command must never
/// start while A's runs.
#[test]
fn a_forced_update_wins_over_a_waiter_and_no_two_holders_overlap() {
    let Some(lockfile) = tool("lockfile") else {
        return;
    };
    let lockfile = lockfile.to_str().unwrap().to_owned();
    let s = shared();
    let log = s.path("log");
    for round in 0..50 {
        let ready = s.path("ready");
        let _ = fs::remove_file(&ready);
        let _ = fs::remove_file(&log);
        let mut a = holder(&s, &log, &ready);
        let (mut b, _b_err) = waiter(&s, &log);

        // The forced update: unlink, then the supervisor's own lockfile.
        fs::remove_file(s.lock()).unwrap();
        let taken = as_uid(65534, &lockfile)
            .args(["-r", "0"])
            .arg(s.lock())
            .output()
            .unwrap();
        assert!(
            taken.status.success(),
            "round {round}: the supervisor's lockfile failed ({:?}): {}",
            taken.status,
            String::from_utf8_lossy(&taken.stderr)
        );
        assert_eq!(
            fs::metadata(s.lock()).unwrap().uid(),
            65534,
            "round {round}"
        );

        // The supervisor kills the app: A's command ends. A leaves the
        // supervisor's file alone and says its own was removed.
        drop(a.stdin.take());
        let a_out = a.wait_with_output().unwrap();
        assert!(a_out.status.success(), "round {round}");
        let a_err = String::from_utf8_lossy(&a_out.stderr);
        assert!(
            a_err.contains("removed by someone else"),
            "round {round}: {a_err}"
        );
        assert!(
            !fs::read_to_string(&log).unwrap().contains('B'),
            "round {round}: B started while the supervisor holds the lock"
        );
        // The update is done: the supervisor removes its lock, B runs.
        fs::remove_file(s.lock()).unwrap();
        assert!(b.wait().unwrap().success(), "round {round}");
        assert_eq!(
            fs::read_to_string(&log).unwrap(),
            "A-start\nA-end\nB\n",
            "round {round}: B ran only after A"
        );
    }
    assert_eq!(s.leftovers(&["log", "ready"]), Vec::<String>::new());
}

/// Issue 11.1 (SPEC 2a), the narrowest gap: the forced update's unlink
/// lands while a waiter that follows holder A is between its "is A's file
/// still in place?" check and its own create (its wait's safety-net poll
/// woke it just then). strace holds that waiter at the create's linkat(2)
/// (its third: the two before it found the lock busy) while the file is
/// removed. The waiter must notice that A still runs and back off, not run
/// its command beside A's.
#[test]
fn a_waiter_racing_the_forced_unlink_backs_off() {
    let Some(strace) = tool("strace") else {
        return;
    };
    let s = Scratch::new();
    let (log, ready, marker) = (s.path("log"), s.path("ready"), s.path("marker"));
    let mut a = holder(&s, &log, &ready);
    let mut tracer = Command::new(strace);
    tracer
        .args(["-qq", "-o", "/dev/null", "-e", "trace=linkat"])
        .args(["-e", "inject=linkat:delay_enter=2000000:when=3"])
        .arg(bin())
        .args(["-v", "--path"])
        .arg(s.lock())
        .args(["run", "--", "touch"])
        .arg(&marker)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut tracer = Group::spawn(tracer, "strace");
    let mut err = BufReader::new(tracer.child.stderr.take().unwrap());
    read_until(&mut err, "waiting for");
    let waiter = children(tracer.pid() as u32)[0];
    // Stopped by strace at the entry of linkat (x86_64 syscall 265).
    wait_until("the waiter to reach its create", || {
        proc_state(waiter as i32) == Some('t')
            && fs::read_to_string(format!("/proc/{waiter}/syscall"))
                .is_ok_and(|s| s.starts_with("265 "))
    });
    fs::remove_file(s.lock()).unwrap();
    let said = read_until(&mut err, "its lock file was removed");
    assert!(!marker.exists(), "the waiter ran beside A: {said}");
    drop(a.stdin.take());
    assert!(a.wait().unwrap().success());
    assert!(tracer.wait().success());
    assert!(marker.exists(), "the waiter ran once A was done");
    assert!(!s.lock().exists());
}

/// SPEC 2a across `release --force`: while the holder of a removed lock
/// still runs, a waiter does not take the lock.
#[test]
fn release_force_of_a_live_run_does_not_let_a_waiter_in() {
    let s = Scratch::new();
    let log = s.path("log");
    let ready = s.path("ready");
    let mut a = holder(&s, &log, &ready);
    let (mut b, mut b_err) = waiter(&s, &log);
    s.cmd(&["release", "--force"]).assert().success();
    read_until(&mut b_err, "its lock file was removed");
    assert!(!s.lock().exists(), "no new lock while A's command runs");
    drop(a.stdin.take());
    assert!(a.wait().unwrap().success());
    assert!(b.wait().unwrap().success());
    assert_eq!(fs::read_to_string(&log).unwrap(), "A-start\nA-end\nB\n");
}

/// Issue 11.2: a command line far over the reader's 64 KiB limit still
/// makes a record that resin-lock reads as its own: held while it runs,
/// stale after a crash, released by `release`.
#[test]
fn a_very_long_command_line_keeps_the_lock_ours() {
    let s = Scratch::new();
    let ready = s.path("ready");
    let script = format!("touch {}; exec cat", ready.display());
    let numbers: Vec<String> = (0..15_000).map(|n| n.to_string()).collect();
    let mut args = vec!["run", "--", "sh", "-c", &script, "sh"];
    args.extend(numbers.iter().map(String::as_str));
    let mut run = s
        .cmd(&args)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for_file(&ready);
    let bytes = fs::read(s.lock()).unwrap();
    assert!(bytes.len() <= 4096, "record of {} bytes", bytes.len());
    let st = status_json(&s);
    assert_eq!(st["locks"][0]["held_by"], "resin-lock", "{st}");
    assert_eq!(st["locks"][0]["state"], "held", "{st}");
    assert_eq!(st["locks"][0]["record"]["cmd_cut"], true, "{st}");
    // A crash: the run process and its command are killed.
    Command::new("kill")
        .args(["-KILL", &run.id().to_string()])
        .assert()
        .success();
    run.wait().unwrap();
    drop(run.stdin.take());
    wait_until("the lock to go stale", || {
        status_json(&s)["locks"][0]["state"] == "stale"
    });
    s.cmd(&["release"]).assert().success();
    assert!(!s.lock().exists());
}

/// Issue 11.3: in a minimal container without /dev/null, `acquire` exits 0
/// only with the lock really held by a live keeper.
#[test]
fn acquire_without_dev_null_holds_the_lock_when_it_says_so() {
    let s = Scratch::new();
    let script = format!(
        "mount -t tmpfs none /dev || exit 99
         {bin} --path {l} acquire --owner $$ || exit 3
         flock -nx {l} true && exit 4
         {bin} --path {l} status >/dev/null 2>&1; echo \"status=$?\" >&2
         {bin} --path {l} release || exit 5
         [ -e {l} ] && exit 6
         exit 0",
        bin = bin().display(),
        l = s.lock().display()
    );
    let out = in_private_mount(&script).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
}

/// Issue 11.8: the wait is announced on stderr without a terminal and
/// without -v (container logs), and says when only a person can end it.
#[test]
fn a_wait_is_announced_without_a_terminal() {
    let s = Scratch::new();
    fs::create_dir(s.lock()).unwrap();
    s.cmd(&["run", "-w", "0.2", "--", "true"])
        .stderr(Stdio::piped())
        .assert()
        .code(1)
        .stderr(
            contains("waiting for")
                .and(contains("a directory"))
                .and(contains("only a person can end this wait")),
        );
    s.cmd(&["-q", "run", "-w", "0.2", "--", "true"])
        .assert()
        .code(1)
        .stderr(contains("waiting for").not());
}

/// Issue 12.2: a process of another uid named `resin-lock-keep`, holding
/// an unlinked file in the lock directory and ignoring SIGUSR1, is never
/// signalled or waited for by root's `release`.
#[test]
fn a_fake_keeper_of_another_uid_is_left_alone() {
    let s = shared();
    let ready = s.path("fake-ready");
    let fake = r#"
import ctypes, json, os, signal, sys, time
ctypes.CDLL(None).prctl(15, b"resin-lock-keep", 0, 0, 0)
signal.signal(signal.SIGUSR1, signal.SIG_IGN)
d = sys.argv[1]
p = os.path.join(d, "updates.lock")
fd = os.open(p, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o644)
rec = {"tool": "resin-lock", "v": 1, "mode": "acquire", "pid": os.getpid(),
       "owner": int(sys.argv[2]), "start": "2026-01-01T00:00:00Z"}
os.write(fd, (json.dumps(rec) + "\n").encode())
os.unlink(p)
open(os.path.join(d, "fake-ready"), "w").close()
time.sleep(1000)
"#;
    // Killed when dropped, also if the test fails.
    let fake = Group::spawn(
        {
            let mut cmd = as_uid(1000, "/usr/bin/python3");
            cmd.args(["-c", fake])
                .arg(s.dir.path())
                .arg(std::process::id().to_string());
            cmd
        },
        "the fake keeper",
    );
    wait_for_file(&ready);
    for args in [&["release"][..], &["release", "--force"]] {
        let out = output_or_kill(s.cmd(args));
        assert_eq!(out.status.code(), Some(0), "{args:?}: {out:?}");
        assert!(out.stderr.is_empty(), "{args:?}: {out:?}");
        assert!(alive(fake.pid()), "the fake keeper was not touched");
    }
    drop(fake);
}

/// Issue 12.3: another uid replaces the lock directory by a symlink to a
/// directory it cannot write. Root's `acquire` and `run` refuse (73) and
/// create nothing there; `release --force` unlinks nothing there.
#[test]
fn a_symlinked_lock_directory_is_not_followed() {
    let s = shared();
    let victim = s.path("victim");
    fs::create_dir(&victim).unwrap();
    fs::write(victim.join("updates.lock"), "precious").unwrap();
    let locks = s.path("locks");
    as_uid(1000, "ln")
        .arg("-s")
        .arg(&victim)
        .arg(&locks)
        .assert()
        .success();
    let lock = locks.join("updates.lock");
    let at = |args: &[&str]| {
        let mut cmd = resin_lock();
        cmd.arg("--path").arg(&lock).args(args);
        cmd
    };
    fs::remove_file(victim.join("updates.lock")).unwrap();
    for args in [&["acquire", "-n"][..], &["run", "-n", "--", "true"]] {
        at(args).assert().code(73).stderr(contains("symlink"));
        assert_eq!(fs::read_dir(&victim).unwrap().count(), 0, "{args:?}");
    }
    fs::write(victim.join("updates.lock"), "precious").unwrap();
    let _ = at(&["release", "--force"]).output().unwrap();
    assert_eq!(
        fs::read_to_string(victim.join("updates.lock")).unwrap(),
        "precious"
    );
}

/// Issue 12.3 under --root: `ROOT/tmp` as an absolute symlink to a host
/// directory never sends a create there.
#[test]
fn an_absolute_symlink_under_the_root_does_not_reach_the_host() {
    let root = tempfile::tempdir().unwrap();
    let host = tempfile::tempdir().unwrap();
    fs::create_dir(host.path().join("resin")).unwrap();
    std::os::unix::fs::symlink(host.path(), root.path().join("tmp")).unwrap();
    let out = output_or_kill({
        let mut cmd = resin_lock();
        cmd.arg("--root")
            .arg(root.path())
            .args(["run", "-n", "--", "true"]);
        cmd
    });
    assert_eq!(out.status.code(), Some(73), "{out:?}");
    assert_eq!(fs::read_dir(host.path().join("resin")).unwrap().count(), 0);
}

/// Issue 12.4: two paths that name one file are one lock, taken once (no
/// waiting for ourselves).
#[test]
fn two_paths_naming_one_file_are_one_lock() {
    let s = Scratch::new();
    // The same directory reached twice (the symlink is on the way, not the
    // directory itself, which is never followed).
    fs::create_dir(s.path("d")).unwrap();
    std::os::unix::fs::symlink(s.dir.path(), s.path("alias")).unwrap();
    let lock = s.path("d/updates.lock");
    let aliased = s.path("alias/d/updates.lock");
    for paths in [[&lock, &lock], [&lock, &aliased]] {
        let mut cmd = resin_lock();
        for p in paths {
            cmd.arg("--path").arg(p);
        }
        cmd.args(["run", "--", "test", "-e"]).arg(&lock);
        let out = output_or_kill(cmd);
        assert_eq!(out.status.code(), Some(0), "{paths:?}: {out:?}");
        assert!(!lock.exists());
    }
}

/// Issue 12.5: without /proc, `release` of an `acquire` lock says that
/// /proc is missing, and never leaves a lock or a keeper behind for good.
#[test]
fn without_proc_release_says_why_and_leaves_no_keeper() {
    let s = Scratch::new();
    let script = format!(
        "mount -t tmpfs none /proc || exit 99
         {bin} --path {l} acquire --owner $$ || exit 3
         {bin} --path {l} release; echo \"release=$?\" >&2
         {bin} --path {l} release --force || exit 5
         [ -e {l} ] && exit 6
         exit 0",
        bin = bin().display(),
        l = s.lock().display()
    );
    let out = in_private_mount(&script).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(err.contains("release=1"), "{err}");
    assert!(err.contains("/proc"), "{err}");
    // The owner (that shell) is gone, so its keeper is too.
    wait_until("no keeper of this lock to be left", || {
        !keeper_holds_a_file_in(s.dir.path())
    });
}

/// Issue 12.6 and 29.11: a temp file left by a process SIGKILLed in the
/// named-temp fallback (no /proc) is removed by the next call, written or
/// still empty (killed before it wrote), however new, also once /proc is
/// back; one that a live process flocks is not.
#[test]
fn leftover_temp_files_are_cleaned_up() {
    for with_proc in [false, true] {
        let s = Scratch::new();
        let written = s.path(".updates.lock.0123456789abcdef.tmp");
        let empty = s.path(".updates.lock.00112233445566ff.tmp");
        let in_use = s.path(".updates.lock.fedcba9876543210.tmp");
        fs::write(&written, "x").unwrap();
        fs::write(&empty, "").unwrap();
        fs::write(&in_use, "").unwrap();
        // flock(1) and its `sleep` in a group of their own, both killed at
        // the end (killing flock alone left the sleep behind, holding the
        // test runner's output pipe open).
        let mut cmd = Command::new("flock");
        cmd.arg(&in_use).args(["sleep", "1000"]);
        let user = Group::spawn(cmd, "flock sleep");
        wait_until("flock to hold the temp file", || {
            Command::new("flock")
                .args(["-n", "-s"])
                .arg(&in_use)
                .arg("true")
                .status()
                .is_ok_and(|st| !st.success())
        });
        let run = format!(
            "{bin} --path {l} run -- true",
            bin = bin().display(),
            l = s.lock().display()
        );
        let script = if with_proc {
            run
        } else {
            format!("mount -t tmpfs none /proc || exit 99\n{run}")
        };
        let out = in_private_mount(&script).output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{out:?}");
        assert!(
            !written.exists(),
            "/proc {with_proc}: the written one is removed"
        );
        assert!(
            !empty.exists(),
            "/proc {with_proc}: the empty one is removed"
        );
        assert!(in_use.exists(), "/proc {with_proc}: the one in use stays");
        drop(user);
    }
}

/// Issue 12.8: with no inotify instance left (the per-user limit), a waiter
/// polls instead of failing, and takes the lock once it is free.
#[test]
fn without_inotify_a_waiter_polls() {
    let s = shared();
    let log = s.path("log");
    let ready = s.path("ready");
    let mut a = holder(&s, &log, &ready);
    let marker = s.path("taken");
    let exhaust = r#"
import ctypes, os, sys
libc = ctypes.CDLL(None)
while libc.inotify_init1(0) >= 0:
    pass
os.execv(sys.argv[1], sys.argv[1:])
"#;
    let mut waiter = as_uid(1000, "/usr/bin/python3")
        .args(["-c", exhaust])
        .arg(bin_for_others())
        .arg("--path")
        .arg(s.lock())
        .args(["run", "--", "touch"])
        .arg(&marker)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = BufReader::new(waiter.stderr.take().unwrap());
    read_until(&mut err, "waiting for");
    drop(a.stdin.take());
    assert!(a.wait().unwrap().success());
    let status = waiter.wait().unwrap();
    assert!(status.success(), "{status}");
    assert!(marker.exists());
}

/// A critical section that records any overlap: `mkdir` is atomic.
const CRIT: &str = r#"mkdir "$D/inside" 2>/dev/null || echo "overlap" >> "$D/overlaps"
sleep 0.02
rmdir "$D/inside" 2>/dev/null"#;

/// `run` in a loop until the stop file appears.
const RUN_LOOP: &str = r#"while [ ! -e "$D/stop" ]; do
    "$BIN" -q --path "$L" run -- sh -c "$CRIT"
done"#;

/// A critical section that stays inside until the test lets it go (the
/// file `go` appears), recording any overlap (`mkdir` is atomic).
const HELD_CRIT: &str = r#"mkdir "$D/inside" 2>/dev/null || echo "overlap" >> "$D/overlaps"
while [ ! -e "$D/go" ]; do sleep 0.002; done
rm -f "$D/go"
rmdir "$D/inside" 2>/dev/null"#;

/// The children of `pid`.
fn children(pid: u32) -> Vec<u32> {
    fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

/// Whether `pid` waits on the holder of `file` (device, inode): it keeps
/// that file open to follow its holder, has its inotify instance, and is
/// asleep in its wait. Having an inotify instance alone is not enough: a
/// waiter woken by the previous holder's release has one too, and has not
/// seen the holder that came after; and one that has the file open may be
/// in the middle of an attempt that is about to find it gone (to it, a
/// forced update is then no different from arriving after the unlink).
fn waits_on(pid: u32, file: (u64, u64)) -> bool {
    let Ok(fds) = fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    let (mut open, mut inotify) = (false, false);
    for fd in fds.flatten() {
        open |= fs::metadata(fd.path()).is_ok_and(|m| (m.dev(), m.ino()) == file);
        inotify |= fs::read_link(fd.path()).is_ok_and(|t| t.to_string_lossy().contains("inotify"));
    }
    open && inotify && proc_state(pid as i32) == Some('S')
}

/// Torture (issue 11): `run` loops contend while a "supervisor" forces
/// updates at random, as it does: unlink the holder's file, take its own
/// with `lockfile -r 0` as uid 65534, stop the app's work, update (a
/// moment), remove its lock. Other rounds the holder finishes normally. The
/// loops' shells are paused during a forced update and every other
/// contender is waiting and follows the holder (keeps its file open): the supervisor's lockfile wins
/// every time, and no two resin-lock critical sections ever overlap.
#[test]
fn forced_updates_at_random_never_let_holders_overlap() {
    let Some(lockfile) = tool("lockfile") else {
        return;
    };
    let mut rng = Rng::for_test("forced_updates_at_random_never_let_holders_overlap");
    let s = shared();
    let inside = s.path("inside");
    // Each loop in a group of its own: a failing test kills it and its
    // contenders (the `stop` file is gone with the scratch directory).
    let mut loops: Vec<Group> = (0..3)
        .map(|_| {
            let mut cmd = Command::new("sh");
            cmd.args(["-c", RUN_LOOP])
                .env("BIN", bin())
                .env("L", s.lock())
                .env("D", s.dir.path())
                .env("CRIT", HELD_CRIT)
                .stderr(Stdio::null());
            Group::spawn(cmd, "a run loop")
        })
        .collect();
    let pause = |signal: &str| {
        for l in &loops {
            Command::new("kill")
                .args([signal, &l.pid().to_string()])
                .assert()
                .success();
        }
        // kill(1) returns once the signal is sent: a loaded machine may let
        // a shell start one more contender before it stops, after the
        // contenders were counted.
        if signal == "-STOP" {
            for l in &loops {
                wait_until("the loop to stop", || proc_state(l.pid()) == Some('T'));
            }
        }
    };
    let mut forced = 0;
    for round in 0..60 {
        wait_until("a holder in its critical section", || inside.exists());
        if rng.below(2) == 0 {
            // Until the holder is gone, `inside` may still be its own (it
            // removes `go` first): the next round must see the next holder.
            let holder = record(&s.lock())["pid"].as_u64().unwrap() as i32;
            fs::write(s.path("go"), "").unwrap();
            wait_until("the holder to finish", || !alive(holder));
            continue;
        }
        pause("-STOP");
        let holder = record(&s.lock())["pid"].as_u64().unwrap() as u32;
        let file = {
            let m = fs::metadata(s.lock()).unwrap();
            (m.dev(), m.ino())
        };
        let contenders: Vec<u32> = loops
            .iter()
            .flat_map(|l| children(l.pid() as u32))
            .filter(|pid| *pid != holder)
            .collect();
        for pid in &contenders {
            wait_until("every contender to wait on the holder", || {
                waits_on(*pid, file) || !alive(*pid as i32)
            });
        }
        fs::remove_file(s.lock()).unwrap();
        let taken = as_uid(65534, lockfile.to_str().unwrap())
            .args(["-r", "0"])
            .arg(s.lock())
            .output()
            .unwrap();
        assert!(
            taken.status.success(),
            "round {round}: a waiter took the gap (holder {holder}, contenders {contenders:?}): {}",
            fs::read_to_string(s.lock()).unwrap_or_default()
        );
        forced += 1;
        // The app's work is stopped.
        let work = children(holder);
        for pid in work.iter().chain([&holder]) {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
        for pid in work.iter().chain([&holder]) {
            wait_until("the app to stop", || !alive(*pid as i32));
        }
        fs::remove_dir(&inside).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(rng.below(20) as u64));
        fs::remove_file(s.lock()).unwrap();
        pause("-CONT");
    }
    fs::write(s.path("stop"), "").unwrap();
    // Let the last holders through.
    for l in &mut loops {
        while l.child.try_wait().unwrap().is_none() {
            if inside.exists() {
                let _ = fs::write(s.path("go"), "");
            }
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
    }
    assert!(forced > 0, "no forced update happened");
    assert_eq!(
        fs::read_to_string(s.path("overlaps")).unwrap_or_default(),
        "",
        "two holders overlapped ({forced} forced updates)"
    );
}

/// Issue 11.5: Node's `execSync('resin-lock acquire')` runs it through a
/// transient `sh -c`: the owner is the Node process, and `release` through
/// `execSync` pairs up with it without any flag.
#[test]
fn node_exec_sync_pairs_acquire_and_release() {
    let Some(node) = tool("node") else {
        return;
    };
    let s = Scratch::new();
    let ready = s.path("ready");
    let script = r#"
const { execSync } = require("child_process");
const fs = require("fs");
const [bin, lock, ready] = process.argv.slice(1);
execSync(`${bin} --path ${lock} acquire`);
fs.writeFileSync(ready, String(process.pid));
process.stdin.resume();
process.stdin.on("end", () => {
    execSync(`${bin} --path ${lock} release`);
    fs.writeFileSync(ready + ".released", "");
});
"#;
    let mut child = Command::new(node)
        .args(["-e", script])
        .arg(bin())
        .arg(s.lock())
        .arg(&ready)
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    wait_until("node to hold the lock", || {
        fs::read_to_string(&ready).is_ok_and(|p| !p.is_empty())
    });
    let node_pid: u64 = fs::read_to_string(&ready).unwrap().parse().unwrap();
    let rec = record(&s.lock());
    assert_eq!(rec["owner"], node_pid, "{rec}");
    assert_eq!(status_json(&s)["locks"][0]["state"], "held");
    drop(child.stdin.take());
    assert!(child.wait().unwrap().success());
    assert!(s.path("ready.released").exists());
    assert!(!s.lock().exists(), "released through execSync");
}

/// Issue 12.7: a `status` probe looping alongside never makes a stale lock
/// look held: `release` removes it and `run -n` takes it, every time.
#[test]
fn a_status_probe_never_changes_another_callers_answer() {
    let s = Scratch::new();
    let stale = r#"{"tool":"resin-lock","v":1,"mode":"acquire","pid":2147483000,"owner":2147483000,"start":"2026-01-01T00:00:00Z","cmd":["x"]}"#;
    let mut cmd = Command::new("sh");
    cmd.args([
        "-c",
        r#"while [ ! -e "$D/stop" ]; do "$BIN" -q --path "$L" status; done"#,
    ])
    .env("BIN", bin())
    .env("L", s.lock())
    .env("D", s.dir.path());
    let mut prober = Group::spawn(cmd, "the status prober");
    for round in 0..300 {
        fs::write(s.lock(), stale).unwrap();
        let args: &[&str] = if round % 2 == 0 {
            &["release"]
        } else {
            &["run", "-n", "--", "true"]
        };
        let out = s.cmd(args).output().unwrap();
        assert!(out.status.success(), "round {round} {args:?}: {out:?}");
        assert!(!s.lock().exists(), "round {round}");
    }
    fs::write(s.path("stop"), "").unwrap();
    prober.wait();
}

/// Issue 12, hostile directory: for 10 s another uid swaps symlinks (to a
/// directory it cannot write), FIFOs, directories and forged records in and
/// out at the lock path and in place of a lock directory, while root's
/// resin-lock takes, releases, forces and reports. Root never hangs, never
/// crashes, and never writes or unlinks anything in the attacker's target.
#[test]
fn an_attacker_racing_in_the_lock_directory_changes_nothing_outside_it() {
    let mut rng =
        Rng::for_test("an_attacker_racing_in_the_lock_directory_changes_nothing_outside_it");
    let s = shared();
    let victim = s.path("victim");
    fs::create_dir(&victim).unwrap();
    fs::write(victim.join("updates.lock"), "precious").unwrap();
    fs::write(victim.join("other"), "precious too").unwrap();
    let locks = s.path("locks");
    fs::create_dir(&locks).unwrap();
    fs::set_permissions(&locks, fs::Permissions::from_mode(0o1777)).unwrap();
    let attacker = r#"
import json, os, random, sys, time
victim, locks, evil, stop = sys.argv[1:5]
lock = os.path.join(locks, "updates.lock")
def clear(p):
    try:
        os.unlink(p)
    except IsADirectoryError:
        try: os.rmdir(p)
        except OSError: pass
    except OSError:
        pass
end = time.time() + 10
while time.time() < end:
    for target in (lock, evil):
        clear(target)
        what = random.randrange(5)
        try:
            if what == 0: os.symlink(victim if target == evil else os.path.join(victim, "updates.lock"), target)
            elif what == 1: os.mkfifo(target)
            elif what == 2: os.mkdir(target)
            elif what == 3:
                with open(target, "w") as f:
                    f.write(json.dumps({"tool": "resin-lock", "v": 1, "mode": "acquire", "pid": os.getpid(), "owner": 1, "start": "x"}) + "\n")
        except OSError:
            pass
    time.sleep(random.random() / 500)
open(stop, "w").close()
"#;
    let evil = s.path("evil");
    let stop = s.path("attacker-done");
    let mut attacker = as_uid(1000, "/usr/bin/python3")
        .args(["-c", attacker])
        .arg(&victim)
        .arg(&locks)
        .arg(&evil)
        .arg(&stop)
        .spawn()
        .unwrap();
    let ops: [&[&str]; 6] = [
        &["acquire", "-n"],
        &["release"],
        &["release", "--force"],
        &["run", "-n", "--", "true"],
        &["status"],
        &["-q", "acquire", "-w", "0.05"],
    ];
    let mut rounds = 0;
    while !stop.exists() {
        let path = if rng.below(2) == 0 {
            locks.join("updates.lock")
        } else {
            evil.join("updates.lock")
        };
        let args = ops[rng.below(ops.len())];
        let mut cmd = resin_lock();
        cmd.arg("--path").arg(&path).args(args);
        let out = output_or_kill(cmd);
        let code = out.status.code();
        assert!(
            matches!(code, Some(0 | 1 | 73)),
            "{args:?} on {}: {out:?}",
            path.display()
        );
        // Our own acquire locks are released again (forcing, since the
        // attacker may have swapped the file).
        if args.contains(&"acquire") && code == Some(0) {
            let mut cmd = resin_lock();
            cmd.arg("--path")
                .arg(&path)
                .args(["-q", "release", "--force"]);
            output_or_kill(cmd);
        }
        rounds += 1;
    }
    assert!(attacker.wait().unwrap().success());
    // That the attacker met real work: a few hundred rounds natively; under
    // qemu-user on a busy machine some 30.
    let least = if is_emulated() { 10 } else { 50 };
    assert!(rounds > least, "only {rounds} rounds");
    let mut names: Vec<_> = fs::read_dir(&victim)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["other", "updates.lock"],
        "nothing created in the target"
    );
    assert_eq!(
        fs::read_to_string(victim.join("updates.lock")).unwrap(),
        "precious"
    );
    assert_eq!(
        fs::read_to_string(victim.join("other")).unwrap(),
        "precious too"
    );
    assert_eq!(
        fs::metadata(victim.join("updates.lock")).unwrap().mode() & 0o7777,
        0o644
    );
}

/// Issue 12, torture without /proc (a private mount namespace with an empty
/// tmpfs on /proc): `run` contenders SIGKILLed at random and `acquire` /
/// `release --force` contenders never overlap, and leave no temp file (a
/// killed one's is removed by the next call, however new), no
/// lock and no keeper behind once the last one is done. (An `acquire`
/// owner is not killed: its lock ends with it by design, while the work it
/// started may go on.)
#[test]
fn without_proc_killed_contenders_leave_nothing_behind() {
    let s = Scratch::new();
    let seed = Rng::for_test("without_proc_killed_contenders_leave_nothing_behind").below(1 << 30);
    let script = format!(
        r#"mount -t tmpfs none /proc || exit 99
RANDOM_SEED={seed}
n=0
while [ $n -lt 60 ]; do
    if [ $((n % 4)) -eq 1 ]; then
        sh -c '"$BIN" -q --path "$L" acquire --owner parent || {{ echo "acquire failed" >> "$D/overlaps"; exit 0; }}; sh -c "$CRIT"; "$BIN" -q --path "$L" release --force' &
    else
        "$BIN" -q --path "$L" run -- sh -c "$CRIT" &
        pid=$!
        if [ $(( (RANDOM_SEED + n * 7919) % 3 )) -eq 0 ]; then kill -9 $pid 2>/dev/null; fi
    fi
    n=$((n + 1))
done
wait
# A contender SIGKILLed between making its named temp file and linking or
# removing it leaves the file, empty or not; the next call removes it.
"$BIN" -q --path "$L" run -- true || exit 5
[ -e "$L" ] && exit 6
exit 0"#
    );
    let out = in_private_mount(&script)
        .env("BIN", bin())
        .env("L", s.lock())
        .env("D", s.dir.path())
        .env("CRIT", CRIT)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(
        fs::read_to_string(s.path("overlaps")).unwrap_or_default(),
        "",
        "holders overlapped, or an acquire failed"
    );
    assert_eq!(
        s.leftovers(&[]),
        Vec::<String>::new(),
        "no temp file, no lock"
    );
    wait_until("no keeper of this lock to be left", || {
        !keeper_holds_a_file_in(s.dir.path())
    });
}

/// A lock file of root's, mode 0600, that uid 1000 cannot read may be
/// helios' (its tag, 0x02 0x63, can be read by root only): `release`, also
/// with `--force`, by uid 1000 refuses it (exit 1) and says why, in a
/// directory it may write (where unlinking it is possible) as in the
/// sticky one the supervisor makes. Root, who can read it, sees helios'
/// lock and refuses it too.
#[test]
fn a_file_of_roots_that_the_caller_cannot_read_may_be_the_supervisors() {
    for mode in [0o777, 0o1777] {
        let s = Scratch::new();
        fs::set_permissions(s.dir.path(), fs::Permissions::from_mode(mode)).unwrap();
        let lock = s.lock();
        fs::write(&lock, [0x02, 0x63, 0, 0, 0, 1]).unwrap();
        fs::set_permissions(&lock, fs::Permissions::from_mode(0o600)).unwrap();
        for args in [&["release"][..], &["release", "--force"]] {
            let out = output_or_kill({
                let mut cmd = as_uid(1000, bin_for_others().to_str().unwrap());
                cmd.arg("--path").arg(&lock).args(args);
                cmd
            });
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(1), "{mode:o} {args:?}: {err}");
            assert!(
                err.contains("cannot read") && err.contains("supervisor"),
                "{mode:o} {args:?}: {err}"
            );
            assert_eq!(err.lines().count(), 1, "{err}");
            assert!(lock.exists(), "{mode:o} {args:?}: removed");
        }
        s.cmd(&["release", "--force"])
            .assert()
            .code(1)
            .stderr(contains("helios"));
        assert!(lock.exists());
    }
}

/// A second uid cannot hang root's create in the named-temp fallback (no
/// /proc): it watches the lock directory (1777) for a new temp file and
/// flocks it before resin-lock does (strace holds resin-lock's flock up for
/// a moment, so the attacker always gets there first). The temp file is
/// root's alone until it is linked, and a busy name is given up for a new
/// one, never waited on.
#[test]
fn another_uid_cannot_hold_up_a_temp_file() {
    let Some(strace) = tool("strace") else {
        return;
    };
    let s = Scratch::new();
    fs::set_permissions(s.dir.path(), fs::Permissions::from_mode(0o1777)).unwrap();
    let grabbed = s.path("grabbed");
    let attacker = r#"
import fcntl, os, sys, time
d, ready, grabbed = sys.argv[1], sys.argv[2], sys.argv[3]
open(ready, "w").close()
held = []
end = time.time() + 60
while time.time() < end:
    for name in os.listdir(d):
        if not name.endswith(".tmp"):
            continue
        try:
            fd = os.open(os.path.join(d, name), os.O_RDONLY)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            held.append(fd)
            open(grabbed, "w").close()
        except OSError:
            os.close(fd)
"#;
    let ready = s.path("attacker-ready");
    let mut cmd = as_uid(1000, "/usr/bin/python3");
    cmd.args(["-c", attacker])
        .arg(s.dir.path())
        .arg(&ready)
        .arg(&grabbed);
    let _attacker = Group::spawn(cmd, "the attacker");
    wait_for_file(&ready);
    let script = format!(
        "mount -t tmpfs none /proc || exit 99
         exec timeout -s KILL 20 {strace} -o /dev/null --inject=flock:delay_enter=300000 \
             {bin} --path {l} run -- true",
        strace = strace.display(),
        bin = bin().display(),
        l = s.lock().display()
    );
    let out = in_private_mount(&script).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(
        !grabbed.exists(),
        "the attacker opened root's temp file: {out:?}"
    );
    assert!(!s.lock().exists());
}
