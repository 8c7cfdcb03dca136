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
fn shared() -> Scratch {
    let s = Scratch::new();
    fs::set_permissions(s.dir.path(), fs::Permissions::from_mode(0o1777)).unwrap();
    s
}

/// `program` run as `uid` (and its gid), no supplementary groups.
fn as_uid(uid: u32, program: &str) -> Command {
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
        let mut b = s
            .cmd(&[
                "-v",
                "run",
                "--",
                "sh",
                "-c",
                &format!("echo B >> {}", log.display()),
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut b_err = BufReader::new(b.stderr.take().unwrap());
        read_until(&mut b_err, "waiting for");

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

/// SPEC 2a across `release --force`: while the holder of a removed lock
/// still runs, a waiter does not take the lock.
#[test]
fn release_force_of_a_live_run_does_not_let_a_waiter_in() {
    let s = Scratch::new();
    let log = s.path("log");
    let ready = s.path("ready");
    let mut a = holder(&s, &log, &ready);
    let mut b = s
        .cmd(&[
            "-v",
            "run",
            "--",
            "sh",
            "-c",
            &format!("echo B >> {}", log.display()),
        ])
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut b_err = BufReader::new(b.stderr.take().unwrap());
    read_until(&mut b_err, "waiting for");
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
    let out = Command::new("unshare")
        .args(["--mount", "sh", "-c", &script])
        .output()
        .unwrap();
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
    let mut fake = as_uid(1000, "/usr/bin/python3")
        .args(["-c", fake])
        .arg(s.dir.path())
        .arg(std::process::id().to_string())
        .spawn()
        .unwrap();
    wait_for_file(&ready);
    for args in [&["release"][..], &["release", "--force"]] {
        let out = output_or_kill(s.cmd(args));
        assert_eq!(out.status.code(), Some(0), "{args:?}: {out:?}");
        assert!(out.stderr.is_empty(), "{args:?}: {out:?}");
        assert!(alive(fake.id() as i32), "the fake keeper was not touched");
    }
    fake.kill().unwrap();
    fake.wait().unwrap();
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
    let out = Command::new("unshare")
        .args(["--mount", "sh", "-c", &script])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(err.contains("release=1"), "{err}");
    assert!(err.contains("/proc"), "{err}");
    // The owner (that shell) is gone, so its keeper is too.
    wait_until("no keeper is left", || {
        !fs::read_dir("/proc").unwrap().flatten().any(|p| {
            fs::read_to_string(p.path().join("comm")).is_ok_and(|c| c.trim() == "resin-lock-keep")
                && fs::read_link(p.path().join("cwd")).is_ok()
                && fs::read_dir(p.path().join("fd")).is_ok_and(|fds| {
                    fds.flatten().any(|fd| {
                        fs::read_link(fd.path()).is_ok_and(|t| t.starts_with(s.dir.path()))
                    })
                })
        })
    });
}

/// Issue 12.6: a temp file left by a process SIGKILLed in the named-temp
/// fallback (no /proc) is removed by the next call; one that a live
/// process holds is not.
#[test]
fn leftover_temp_files_are_cleaned_up() {
    let s = Scratch::new();
    let leftover = s.path(".updates.lock.0123456789abcdef.tmp");
    let in_use = s.path(".updates.lock.fedcba9876543210.tmp");
    fs::write(&leftover, "x").unwrap();
    fs::write(&in_use, "y").unwrap();
    let mut user = Command::new("flock")
        .arg(&in_use)
        .args(["sleep", "1000"])
        .spawn()
        .unwrap();
    wait_until("flock to hold the temp file", || {
        Command::new("flock")
            .args(["-n", "-s"])
            .arg(&in_use)
            .arg("true")
            .status()
            .is_ok_and(|st| !st.success())
    });
    let script = format!(
        "mount -t tmpfs none /proc || exit 99
         {bin} --path {l} run -- true",
        bin = bin().display(),
        l = s.lock().display()
    );
    let out = Command::new("unshare")
        .args(["--mount", "sh", "-c", &script])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(!leftover.exists(), "the leftover is removed");
    assert!(in_use.exists(), "the one in use stays");
    user.kill().unwrap();
    user.wait().unwrap();
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
        .arg(bin())
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
