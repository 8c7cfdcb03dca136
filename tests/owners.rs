//! Who may release an `acquire` lock, and who owns it (SPEC 2b, 4;
//! issues 19.2, 20.1, 20.2, 20.7, 20.14): sibling jobs of one parent,
//! wrappers that fork and wait (flock, script, xargs, strace -f), another
//! user's lock, the supervisor's lock under `--force`, and the
//! `--max-hold` notice in a log.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;

use crate::common::*;
use crate::trust::{as_uid, shared};

/// `sh SCRIPT` to its end under the hang guard; fails unless it exits 0.
fn run_script(s: &Scratch, text: &str) -> std::process::Output {
    let script = s.path("parent.sh");
    fs::write(&script, text).unwrap();
    let mut cmd = Command::new("sh");
    cmd.arg(&script);
    let out = output_or_kill(cmd);
    assert!(out.status.success(), "{text}\n{out:?}");
    out
}

fn read(path: &Path) -> String {
    fs::read_to_string(path)
        .unwrap_or_else(|err| panic!("{}: {err}", path.display()))
        .trim()
        .to_owned()
}

/// Issue 20.1: two `sh -c` jobs of one parent (a Makefile, a supervisor
/// script): job A holds the lock; job B runs the README's
/// `trap 'resin-lock release' EXIT; resin-lock acquire -n || exit 0`.
/// B's release must not remove A's lock: exit 1, naming A's job. A's own
/// release then removes it.
#[test]
fn a_sibling_jobs_release_leaves_my_lock_alone() {
    let s = Scratch::new();
    let go = s.path("go");
    assert!(Command::new("mkfifo").arg(&go).status().unwrap().success());
    let text = format!(
        r#"RL="{bin} --path {lock}"; D={dir}
sh -c "echo \$\$ > $D/a-pid; $RL acquire || exit 9; touch $D/a-held; read _ < $D/go; $RL release; echo \$? > $D/a-rc" &
while [ ! -e $D/a-held ]; do sleep 0.01; done
sh -c "trap '$RL release; echo \$? > $D/b-rc' EXIT; $RL acquire -n || exit 0" 2> $D/b-err
[ -e {lock} ] && echo yes > $D/still-held
echo go > $D/go
wait
"#,
        bin = bin().display(),
        lock = s.lock().display(),
        dir = s.dir.path().display(),
    );
    run_script(&s, &text);
    let b_err = read(&s.path("b-err"));
    assert_eq!(read(&s.path("b-rc")), "1", "B's release refused: {b_err}");
    let a_pid = read(&s.path("a-pid"));
    assert!(
        b_err.contains("another job of the same owner")
            && b_err.contains(&format!("pid {a_pid} (sh -c")),
        "{b_err}"
    );
    assert_eq!(read(&s.path("still-held")), "yes", "{b_err}");
    assert_eq!(read(&s.path("a-rc")), "0", "A releases its own lock");
    assert!(!s.lock().exists());
}

/// Node's `execSync`: acquire in one `sh -c`, release in a later, separate
/// `sh -c` of the same parent. The first shell has exited: they pair up.
#[test]
fn acquire_and_release_in_two_short_lived_shells_pair_up() {
    let s = Scratch::new();
    let text = format!(
        r#"RL="{bin} --path {lock}"; D={dir}
sh -c "$RL acquire" || exit 1
{bin} --path {lock} status --json > $D/status || true
sh -c "$RL release" 2> $D/err || exit 2
"#,
        bin = bin().display(),
        lock = s.lock().display(),
        dir = s.dir.path().display(),
    );
    run_script(&s, &text);
    let status: serde_json::Value = serde_json::from_str(&read(&s.path("status"))).unwrap();
    assert_eq!(status["locks"][0]["state"], "held", "{status}");
    assert_eq!(read(&s.path("err")), "");
    assert!(!s.lock().exists());
}

/// A release from within the job that acquired: later in the same
/// `sh -c`, in a subshell, in a function, or in a nested `sh -c`.
#[test]
fn the_acquiring_job_releases_from_a_subshell_function_or_nested_shell() {
    for release in [
        "$RL release",
        "( $RL release )",
        "f() { $RL release; }; f",
        "sh -c \"$RL release\"",
    ] {
        let s = Scratch::new();
        let job = format!(
            "RL='{bin} --path {lock}'; $RL acquire || exit 9; {release}",
            bin = bin().display(),
            lock = s.lock().display(),
        );
        let mut cmd = Command::new("sh");
        cmd.args(["-c", &job]);
        let out = output_or_kill(cmd);
        assert!(out.status.success(), "{release}: {out:?}");
        assert!(out.stderr.is_empty(), "{release}: {out:?}");
        assert!(!s.lock().exists(), "{release}");
    }
}

/// Issue 20.7: uid 1000 releasing root's live lock in the 1777 lock
/// directory is told the real reason (another user's lock) and exits 73,
/// with and without `--force`; the lock stays, its keeper too.
#[test]
fn another_users_lock_is_exit_73_with_the_reason_even_with_force() {
    let s = shared();
    // The owner is this test, an ancestor of uid 1000's `release` below.
    s.cmd(&["acquire"]).assert().success();
    let keeper = record(&s.lock())["pid"].as_i64().unwrap() as i32;
    for args in [&["release"][..], &["release", "--force"]] {
        let mut cmd = as_uid(1000, bin_for_others().to_str().unwrap());
        cmd.arg("--path").arg(s.lock()).args(args);
        let out = output_or_kill(cmd);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(73), "{args:?}: {err}");
        assert!(
            err.contains("another user's lock (uid 0)") && err.lines().count() == 1,
            "{args:?}: {err}"
        );
        assert!(alive(keeper), "{args:?}: the keeper still holds it");
        assert_eq!(record(&s.lock())["pid"], keeper, "{args:?}");
    }
    s.cmd(&["release"]).assert().success();
    assert!(!s.lock().exists());
}

/// Issue 19.2: `release --force` never removes the supervisor's lock (a
/// uid-65534 file, as the supervisor makes it with `lockfile -r 0`): exit
/// 1 and a line that says so; plain `release` refuses it too.
#[test]
fn release_force_never_removes_the_supervisors_lock() {
    let Some(lockfile) = tool("lockfile") else {
        return;
    };
    let s = shared();
    as_uid(65534, lockfile.to_str().unwrap())
        .args(["-r", "0"])
        .arg(s.lock())
        .assert()
        .success();
    for args in [&["release", "--force"][..], &["release"]] {
        let out = output_or_kill(s.cmd(args));
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(
            err.contains("the supervisor")
                && err.contains("not even with --force")
                && err.lines().count() == 1,
            "{args:?}: {err}"
        );
        assert_eq!(fs::metadata(s.lock()).unwrap().uid(), 65534, "{args:?}");
    }
}

/// Issue 19.2, right after a forced update replaced the caller's own lock
/// (the supervisor unlinks it, then `lockfile -r 0` as uid 65534):
/// `release --force` stops our keeper but leaves the supervisor's file,
/// exit 1; plain `release` leaves it too and exits 0, as before.
#[test]
fn release_force_after_a_forced_update_leaves_the_supervisors_lock() {
    let Some(lockfile) = tool("lockfile") else {
        return;
    };
    for force in [true, false] {
        let s = shared();
        s.cmd(&["acquire"]).assert().success();
        let keeper = record(&s.lock())["pid"].as_i64().unwrap() as i32;
        fs::remove_file(s.lock()).unwrap();
        as_uid(65534, lockfile.to_str().unwrap())
            .args(["-r", "0"])
            .arg(s.lock())
            .assert()
            .success();
        let args: &[&str] = if force {
            &["release", "--force"]
        } else {
            &["release"]
        };
        let out = output_or_kill(s.cmd(args));
        let err = String::from_utf8_lossy(&out.stderr);
        let expected = if force { 1 } else { 0 };
        assert_eq!(out.status.code(), Some(expected), "{args:?}: {err}");
        assert!(err.lines().count() == 1, "{args:?}: {err}");
        if force {
            assert!(err.contains("not even with --force"), "{err}");
        } else {
            assert!(err.contains("left it alone"), "{err}");
        }
        assert_eq!(fs::metadata(s.lock()).unwrap().uid(), 65534, "{args:?}");
        wait_until("our displaced keeper to be stopped", || !alive(keeper));
    }
}

/// Issue 20.2: wrappers that fork, wait and exit with their command
/// (flock(1), script(1), xargs) are transient: once the wrapper has
/// exited, the lock is still held for the process that ran it (this test),
/// and that process's `release` pairs up with it.
#[test]
fn wrappers_that_fork_and_wait_leave_the_lock_held_for_the_outer_owner() {
    let bin = bin();
    let bin = bin.to_str().unwrap();
    for wrapper in ["flock", "script", "xargs"] {
        let s = Scratch::new();
        let lock = s.lock();
        let lock = lock.to_str().unwrap();
        let acquire = format!("{bin} --path {lock} acquire");
        let mut cmd = Command::new(wrapper);
        match wrapper {
            "flock" => cmd.arg(s.path("flock-file")).args(acquire.split(' ')),
            "script" => cmd.args(["-qc", &acquire, "/dev/null"]),
            _ => cmd.args([bin, "--path", lock]),
        };
        let out = if wrapper == "xargs" {
            use std::io::Write;
            let mut child = cmd
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            child.stdin.take().unwrap().write_all(b"acquire\n").unwrap();
            wait_guarded(&mut child, "xargs");
            child.wait_with_output().unwrap()
        } else {
            output_or_kill(cmd)
        };
        assert!(out.status.success(), "{wrapper}: {out:?}");
        assert!(out.stderr.is_empty(), "{wrapper}: {out:?}");
        let rec = record(&s.lock());
        assert_eq!(rec["owner"], std::process::id(), "{wrapper}: {rec}");
        assert_eq!(
            status_json(&s)["locks"][0]["state"],
            "held",
            "{wrapper}: not stale once the wrapper exited"
        );
        s.cmd(&["release"]).assert().success().stderr("");
        assert!(!s.lock().exists(), "{wrapper}");
    }
}

/// Issue 20.2: `strace -f resin-lock acquire` returned only when the lock
/// was released (strace waited for the keeper it traced). Now it returns
/// at once; the keeper is not traced, and the lock is held for the outer
/// owner. Bounded by the hang guard: a regression fails, it does not hang.
#[test]
fn strace_f_acquire_returns_and_the_keeper_is_not_traced() {
    if emulated(
        "strace_f_acquire_returns_and_the_keeper_is_not_traced",
        "strace traces the emulator, and qemu-user refuses clone's CLONE_UNTRACED",
    ) {
        return;
    }
    let Some(strace) = tool("strace") else {
        return;
    };
    let s = Scratch::new();
    let mut cmd = Command::new(strace);
    cmd.args(["-f", "-o", "/dev/null"])
        .arg(bin())
        .arg("--path")
        .arg(s.lock())
        .arg("acquire");
    let out = output_or_kill(cmd);
    assert!(out.status.success(), "{out:?}");
    assert!(out.stderr.is_empty(), "{out:?}");
    let rec = record(&s.lock());
    assert_eq!(rec["owner"], std::process::id(), "{rec}");
    let keeper = rec["pid"].as_i64().unwrap();
    let status = fs::read_to_string(format!("/proc/{keeper}/status")).unwrap();
    assert!(status.contains("TracerPid:\t0\n"), "{status}");
    assert_eq!(status_json(&s)["locks"][0]["state"], "held");
    s.cmd(&["release"]).assert().success().stderr("");
    assert!(!s.lock().exists());
}

/// Issue 20.14: the `--max-hold` notice of an `acquire` keeper is appended
/// to the log acquire's stderr went to, never over it: neither over lines
/// appended since (`2>log; echo more >>log`), nor under the owner's next
/// line through the same `2>log` (the owner's stderr).
#[test]
fn the_max_hold_notice_is_appended_to_a_log() {
    let s = Scratch::new();
    let log = s.path("log");
    let notice = "(--max-hold); released it";
    // Wait (bounded) until the notice is in the log, then append `end`.
    let then_end = |end: &str| {
        format!(
            "i=0; until grep -q -- '{notice}' {log}; do i=$((i+1)); [ $i -gt 6000 ] && exit 7; sleep 0.01; done; {end}",
            log = log.display()
        )
    };
    let rl = format!("{} --path {}", bin().display(), s.lock().display());
    let cases = [
        // acquire's own `2>log`, lines appended after it.
        (
            format!(
                "{rl} acquire --max-hold 1s 2>{log}; echo more >>{log}\n{}\n",
                then_end(&format!("echo end >>{}", log.display())),
                log = log.display()
            ),
            false,
        ),
        // The owner's stderr is the log (`sh job.sh 2>log`); acquire
        // inherits it, and the owner goes on writing through it.
        (
            format!(
                "{rl} acquire --max-hold 1s; echo more >&2\n{}\n",
                then_end("echo end >&2")
            ),
            true,
        ),
    ];
    for (script, owner_log) in cases {
        let _ = fs::remove_file(&log);
        let job = s.path("job.sh");
        fs::write(&job, &script).unwrap();
        let mut cmd = Command::new("sh");
        cmd.arg(&job);
        if owner_log {
            let mut child = cmd
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(fs::File::create(&log).unwrap())
                .spawn()
                .unwrap();
            assert!(wait_guarded(&mut child, "job.sh").success(), "{script}");
        } else {
            let out = output_or_kill(cmd);
            assert!(out.status.success(), "{script}: {out:?}");
            assert!(out.stderr.is_empty(), "{script}: {out:?}");
        }
        let text = fs::read_to_string(&log).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{script}: {text:?}");
        assert_eq!(lines[0], "more", "{script}: {text:?}");
        assert!(
            lines[1].starts_with("resin-lock: held ") && lines[1].contains(notice),
            "{script}: {text:?}"
        );
        assert_eq!(lines[2], "end", "{script}: {text:?}");
        assert!(!s.lock().exists(), "released after --max-hold");
    }
}

/// A lock whose owner has just exited is its keeper's to let go of in a
/// moment: `release` right then waits for that (bounded) and removes the
/// now stale lock, instead of refusing it as someone else's. The keeper is
/// held stopped (SIGSTOP) so that `release` surely comes first; `release`
/// must then be waiting on the lock's flock, not have given up.
#[test]
fn release_right_after_the_owner_exits_waits_for_its_keeper() {
    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;
    let s = Scratch::new();
    let mut owner = Command::new("sleep").arg("1000").spawn().unwrap();
    s.cmd(&["acquire", "--owner", &owner.id().to_string()])
        .assert()
        .success();
    let keeper = Pid::from_raw(record(&s.lock())["pid"].as_i64().unwrap() as i32);
    kill(keeper, Signal::SIGSTOP).unwrap();
    owner.kill().unwrap();
    owner.wait().unwrap();
    let mut release = s.cmd(&["release"]);
    release.stderr(std::process::Stdio::piped());
    let release = release.spawn().unwrap();
    // Either it gave up at once (exited), or it waits in flock(2).
    let flock = format!("{} ", libc::SYS_flock);
    wait_until("release to wait or exit", || {
        proc_state(release.id() as i32) == Some('Z')
            || fs::read_to_string(format!("/proc/{}/syscall", release.id()))
                .is_ok_and(|call| call.starts_with(&flock))
    });
    kill(keeper, Signal::SIGCONT).unwrap();
    let out = release.wait_with_output().unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "release refused: {said}");
    assert!(!s.lock().exists(), "the stale lock is removed");
}
