//! The core protocol: acquire, release, status, waiting, stale takeover,
//! bad input, and interop with the real peers (procmail lockfile, util-linux
//! flock, the npm lockfile package).

use std::fs;
use std::io::{BufRead, BufReader};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::common::*;

#[test]
fn acquire_then_release_round_trip() {
    let s = Scratch::new();
    s.cmd(&["acquire"]).assert().success().stdout("");
    let rec = record(&s.lock());
    assert_eq!(rec["tool"], "resin-lock");
    assert_eq!(rec["v"], 1);
    assert_eq!(rec["mode"], "acquire");
    assert!(alive(rec["pid"].as_i64().unwrap() as i32), "keeper runs");
    s.cmd(&["status"])
        .assert()
        .code(1)
        .stdout(contains("held by resin-lock acquire"));
    s.cmd(&["release"]).assert().success();
    assert!(!s.lock().exists());
    s.cmd(&["status"]).assert().code(0).stdout(contains("free"));
    assert_eq!(s.leftovers(&[]), Vec::<String>::new());
}

/// With several paths the keeper lets go of them in reverse order; `release`
/// must find every one gone without mistaking the keeper, still exiting, for
/// one whose file the supervisor removed (no warning), on every round.
#[test]
fn release_of_several_paths_is_quiet_and_complete() {
    let s = Scratch::new();
    let second = s.path("second.lock");
    let with_both = |args: &[&str]| {
        let mut cmd = resin_lock();
        cmd.arg("--path")
            .arg(s.lock())
            .arg("--path")
            .arg(&second)
            .args(args);
        cmd
    };
    for _ in 0..20 {
        with_both(&["acquire"]).assert().success();
        let keeper = record(&second)["pid"].as_i64().unwrap() as i32;
        assert_eq!(record(&s.lock())["pid"], keeper);
        with_both(&["release"]).assert().success().stderr("");
        assert!(!s.lock().exists() && !second.exists());
        wait_until("the keeper exits", || !alive(keeper));
    }
    assert_eq!(s.leftovers(&[]), Vec::<String>::new());
}

#[test]
fn lock_file_is_one_line_record_mode_0644_despite_umask() {
    let s = Scratch::new();
    let script = format!(
        "umask 077; exec {} --path {} acquire",
        env!("CARGO_BIN_EXE_resin-lock"),
        s.lock().display()
    );
    Command::new("sh").args(["-c", &script]).assert().success();
    let meta = fs::metadata(s.lock()).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o644);
    let text = fs::read_to_string(s.lock()).unwrap();
    assert_eq!(text.lines().count(), 1);
    assert!(text.ends_with('\n'));
    let rec = record(&s.lock());
    for field in ["pid", "owner", "start", "boot_id", "pid_ns", "uid", "cmd"] {
        assert!(rec.get(field).is_some(), "record lacks {field}: {text}");
    }
    s.cmd(&["release"]).assert().success();
}

#[test]
fn acquire_keeps_flock_that_the_host_reboot_check_sees() {
    // balenaOS safe_reboot: `flock -nx` on the existing updates.lock.
    let s = Scratch::new();
    let bin = env!("CARGO_BIN_EXE_resin-lock");
    let lock = s.lock();
    let script = format!(
        r#"set -u
        L={lock}
        {bin} --path "$L" acquire || exit 10
        exec 3<"$L"
        flock -nx 3 && exit 11
        {bin} --path "$L" release || exit 12
        flock -nx 3 || exit 13
        [ -e "$L" ] && exit 14
        exit 0"#,
        lock = lock.display()
    );
    Command::new("sh").args(["-c", &script]).assert().code(0);
}

#[test]
fn command_substitution_does_not_hang() {
    let s = Scratch::new();
    let script = format!(
        "x=$({} --path {} acquire); echo \"done:$x\"",
        env!("CARGO_BIN_EXE_resin-lock"),
        s.lock().display()
    );
    assert_cmd::Command::new("sh")
        .args(["-c", &script])
        .timeout(Duration::from_secs(60))
        .assert()
        .success()
        .stdout("done:\n");
    s.cmd(&["release"]).assert().success();
}

#[test]
fn keeper_follows_its_owner_and_survives_the_callers_shell() {
    let s = Scratch::new();
    // The owner: a process that outlives the shell that runs acquire.
    let mut owner = Sleeper::new();
    let script = format!(
        "{} --path {} acquire --owner {}; exit 0",
        env!("CARGO_BIN_EXE_resin-lock"),
        s.lock().display(),
        owner.pid()
    );
    Command::new("setsid")
        .args(["-w", "sh", "-c", &script])
        .assert()
        .success();
    let rec = record(&s.lock());
    assert_eq!(rec["owner"].to_string(), owner.pid());
    assert_eq!(status_json(&s)["locks"][0]["state"], "held");

    owner.end();
    wait_until("the lock to go stale", || {
        status_json(&s)["locks"][0]["state"] == "stale"
    });
    let st = status_json(&s);
    assert_eq!(st["locks"][0]["stale_reason"], "holder exited");
    assert_eq!(st["locked"], true, "a stale lock still blocks updates");
    s.cmd(&["status"])
        .assert()
        .code(1)
        .stdout(contains("stale"));
    // The file stays (updates stay blocked) until taken over.
    assert!(s.lock().exists());
    s.cmd(&["acquire", "-n"]).assert().success();
    assert_ne!(record(&s.lock())["pid"], rec["pid"]);
    s.cmd(&["release"]).assert().success();
}

/// `sh -c 'resin-lock acquire && …'` (Node's execSync, Python's
/// shell=True): the transient shell is skipped and the owner is the process
/// that ran it; `--owner parent` means exactly the shell, and the lock goes
/// stale when that shell exits.
#[test]
fn default_owner_skips_a_transient_shell_and_owner_parent_does_not() {
    for owner_parent in [false, true] {
        let s = Scratch::new();
        let ready = s.path("ready");
        let script = format!(
            "{} --path {} acquire {} && touch {} && read line",
            env!("CARGO_BIN_EXE_resin-lock"),
            s.lock().display(),
            if owner_parent { "--owner parent" } else { "" },
            ready.display()
        );
        let mut shell = Command::new("sh")
            .args(["-c", &script])
            .stdin(Stdio::piped())
            .spawn()
            .unwrap();
        wait_for_file(&ready);
        let rec = record(&s.lock());
        let expected = if owner_parent {
            shell.id()
        } else {
            std::process::id()
        };
        assert_eq!(rec["owner"], expected, "owner_parent={owner_parent}: {rec}");
        assert!(rec["owner_start"].as_u64().is_some(), "{rec}");
        drop(shell.stdin.take()); // the shell reads EOF and exits
        shell.wait().unwrap();
        if owner_parent {
            wait_until("the lock to go stale", || {
                status_json(&s)["locks"][0]["state"] == "stale"
            });
        } else {
            // The owner (this test) lives: the lock stays held.
            assert_eq!(status_json(&s)["locks"][0]["state"], "held");
        }
        s.cmd(&["release"]).assert().success();
        assert!(!s.lock().exists());
    }
}

/// Wrappers that fork and exit with their command (`timeout`, `setsid`)
/// are skipped too, and `release` through the same wrapper pairs up.
#[test]
fn wrappers_are_skipped_and_release_through_them_pairs_up() {
    let s = Scratch::new();
    let bin = env!("CARGO_BIN_EXE_resin-lock");
    let lock = s.lock();
    let script = s.path("job.sh");
    fs::write(
        &script,
        format!(
            "timeout 30 {bin} -v --path {l} acquire 2> {err} || exit 1\n\
             echo $$ > {pid}\n\
             timeout 30 {bin} --path {l} release || exit 2\n",
            l = lock.display(),
            err = s.path("err").display(),
            pid = s.path("pid").display()
        ),
    )
    .unwrap();
    Command::new("sh").arg(&script).assert().success();
    let shell: u32 = fs::read_to_string(s.path("pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let err = fs::read_to_string(s.path("err")).unwrap();
    assert!(
        err.contains(&format!("owner: pid {shell} "))
            && err.contains("skipped the transient wrappers"),
        "{err}"
    );
    assert!(!lock.exists(), "release through timeout released it");
}

/// Another script's `release` (e.g. a `trap … EXIT` after a failed
/// `acquire -n`) never removes a lock it does not own; `--force` does.
#[test]
fn release_refuses_someone_elses_acquire_lock() {
    let s = Scratch::new();
    let owner = Sleeper::new();
    s.cmd(&["acquire", "--owner", &owner.pid()])
        .assert()
        .success();
    let keeper = record(&s.lock())["pid"].as_i64().unwrap() as i32;
    // Script B: `trap 'resin-lock release' EXIT; resin-lock acquire -n || exit 0`.
    let script_b = format!(
        "trap '{bin} --path {l} release; echo $? > {rc}' EXIT; {bin} --path {l} acquire -n --owner parent || exit 0",
        bin = env!("CARGO_BIN_EXE_resin-lock"),
        l = s.lock().display(),
        rc = s.path("rc").display()
    );
    Command::new("sh")
        .args(["-c", &script_b])
        .assert()
        .success();
    assert_eq!(fs::read_to_string(s.path("rc")).unwrap().trim(), "1");
    assert!(alive(keeper), "the owner's keeper still holds it");
    assert_eq!(record(&s.lock())["pid"], keeper);
    s.cmd(&["release"]).assert().code(1).stderr(
        contains("only its owner releases it").and(contains(format!("owner pid {}", owner.pid()))),
    );
    // The owner (named with --owner) releases it; so would --force.
    s.cmd(&["release", "--owner", &owner.pid()])
        .assert()
        .success();
    assert!(!s.lock().exists());
    s.cmd(&["acquire", "--owner", &owner.pid()])
        .assert()
        .success();
    s.cmd(&["release", "--force"]).assert().success();
    assert!(!s.lock().exists());
    wait_until("the keeper to exit", || !alive(keeper));
}

/// A second `acquire` by the owner that holds the lock fails at once with a
/// line naming the keeper, instead of waiting for itself forever.
#[test]
fn acquire_by_the_same_owner_fails_at_once() {
    let s = Scratch::new();
    s.cmd(&["acquire"]).assert().success();
    let keeper = record(&s.lock())["pid"].clone();
    assert_cmd::Command::from_std(s.cmd(&["acquire"]))
        .timeout(Duration::from_secs(60))
        .assert()
        .code(1)
        .stderr(
            contains("already held by this owner").and(contains(format!("keeper pid {keeper}"))),
        );
    s.cmd(&["acquire", "-E", "75"]).assert().code(75);
    s.cmd(&["release"]).assert().success();
}

#[test]
fn killed_keeper_leaves_a_stale_lock_that_is_taken_over() {
    let s = Scratch::new();
    let keeper = acquire_and_kill_keeper(&s);
    let st = status_json(&s);
    assert_eq!(st["locks"][0]["state"], "stale");
    assert_eq!(st["locks"][0]["held_by"], "resin-lock");
    s.cmd(&["acquire", "-n"]).assert().success();
    assert_ne!(record(&s.lock())["pid"], keeper);
    assert_eq!(status_json(&s)["locks"][0]["state"], "held");
    s.cmd(&["release"]).assert().success();
    assert_eq!(s.leftovers(&[]), Vec::<String>::new());
}

#[test]
fn release_removes_a_stale_lock() {
    let s = Scratch::new();
    acquire_and_kill_keeper(&s);
    s.cmd(&["release"]).assert().success();
    assert!(!s.lock().exists());
}

#[test]
fn two_contenders_for_a_stale_lock_never_both_win() {
    let s = Scratch::new();
    for round in 0..15 {
        acquire_and_kill_keeper(&s);
        let a = spawn_quiet(s.cmd(&["acquire", "-n"]));
        let b = spawn_quiet(s.cmd(&["acquire", "-n"]));
        let codes: Vec<i32> = [a, b]
            .into_iter()
            .map(|c| c.wait_with_output().unwrap().status.code().unwrap())
            .collect();
        let winners = codes.iter().filter(|c| **c == 0).count();
        assert_eq!(winners, 1, "round {round}: exit codes {codes:?}");
        assert!(
            codes.contains(&1),
            "round {round}: loser must see busy: {codes:?}"
        );
        s.cmd(&["release"]).assert().success();
    }
}

#[test]
fn nonblock_timeout_and_conflict_exit_code() {
    let s = Scratch::new();
    let owner = Sleeper::new();
    s.cmd(&["acquire", "--owner", &owner.pid()])
        .assert()
        .success();
    s.cmd(&["acquire", "-n"])
        .assert()
        .code(1)
        .stderr(contains("held by resin-lock acquire"));
    s.cmd(&["acquire", "-w", "250ms"])
        .assert()
        .code(1)
        .stderr(contains("timed out"));
    s.cmd(&["acquire", "-w", "0.1", "-E", "42"])
        .assert()
        .code(42);
    s.cmd(&["run", "-n", "-E", "9", "--", "true"])
        .assert()
        .code(9);
    s.cmd(&["release", "--owner", &owner.pid()])
        .assert()
        .success();
    assert_eq!(s.leftovers(&[]), Vec::<String>::new());
}

/// Spawn a waiter with -v and return once it reports that it waits.
// The caller waits for the returned child.
#[allow(clippy::zombie_processes)]
/// Files in `dir` that are unlinked but still open in some process. (An
/// O_TMPFILE shows as "(deleted)" even once linked: the link count tells.)
fn deleted_files_open_in(dir: &std::path::Path) -> Vec<String> {
    let mut found = Vec::new();
    for proc_entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(fds) = std::fs::read_dir(proc_entry.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            if let Ok(target) = std::fs::read_link(fd.path()) {
                let shown = target.to_string_lossy().into_owned();
                let unlinked = std::fs::metadata(fd.path())
                    .is_ok_and(|m| std::os::unix::fs::MetadataExt::nlink(&m) == 0);
                if target.parent() == Some(dir) && shown.ends_with(" (deleted)") && unlinked {
                    found.push(format!("{}: {shown}", fd.path().display()));
                }
            }
        }
    }
    found
}

fn spawn_waiter(
    s: &Scratch,
    args: &[&str],
) -> (std::process::Child, BufReader<std::process::ChildStderr>) {
    let mut cmd = resin_lock();
    cmd.arg("--path").arg(s.lock()).arg("-v").args(args);
    let mut child = spawn_quiet(cmd);
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    while stderr.read_line(&mut line).unwrap() > 0 {
        if line.contains("waiting for") {
            assert!(line.contains("held by"), "says who holds it: {line}");
            return (child, stderr);
        }
        line.clear();
    }
    let status = child.wait().unwrap();
    panic!("waiter ended early: {status}");
}

#[test]
fn waiter_takes_the_lock_when_it_is_released() {
    let s = Scratch::new();
    let owner = Sleeper::new();
    s.cmd(&["acquire", "--owner", &owner.pid()])
        .assert()
        .success();
    let first = record(&s.lock())["pid"].clone();
    let (waiter, _stderr) = spawn_waiter(&s, &["acquire"]);
    // The waiter's keeper let go of the file it prepared for the fast path.
    wait_until("no unlinked file is held open while waiting", || {
        deleted_files_open_in(s.dir.path()).is_empty()
    });
    // Quiet, also when the waiter has taken the lock before release looks.
    s.cmd(&["release", "--owner", &owner.pid()])
        .assert()
        .success()
        .stderr("");
    let out = waiter.wait_with_output().unwrap();
    assert!(out.status.success());
    assert_ne!(
        record(&s.lock())["pid"],
        first,
        "the waiter's keeper holds it"
    );
    s.cmd(&["release"]).assert().success();
}

#[test]
fn signal_while_waiting_ends_the_wait_holding_nothing() {
    for (signal, code) in [("TERM", 143), ("INT", 130), ("HUP", 129)] {
        let s = Scratch::new();
        let owner = Sleeper::new();
        s.cmd(&["acquire", "--owner", &owner.pid()])
            .assert()
            .success();
        let holder = record(&s.lock());
        let started = s.path("started");
        let touch = started.to_str().unwrap();
        for cmd in [&["acquire"][..], &["run", "--", "touch", touch][..]] {
            let (waiter, _stderr) = spawn_waiter(&s, cmd);
            Command::new("kill")
                .args([&format!("-{signal}"), &waiter.id().to_string()])
                .assert()
                .success();
            let out = waiter.wait_with_output().unwrap();
            assert_eq!(out.status.code(), Some(code), "{signal} {cmd:?}");
            assert_eq!(record(&s.lock()), holder, "the holder keeps it");
            assert!(!started.exists(), "no child started");
        }
        assert_eq!(s.leftovers(&["updates.lock"]), Vec::<String>::new());
        s.cmd(&["release", "--owner", &owner.pid()])
            .assert()
            .success();
    }
}

/// A SIGTERM that comes after acquire has linked the lock file but before
/// it has handed it to its keeper (held there by strace's fault injection:
/// linkat(2) returns 4 s late) ends acquire with 128+15 and leaves nothing:
/// no lock file, stale or not, and no keeper.
#[test]
fn signal_while_taking_the_lock_leaves_nothing_held() {
    let s = Scratch::new();
    let mut acquire = Command::new("strace");
    acquire
        .args(["-o", "/dev/null", "-e", "trace=linkat"])
        .args(["-e", "inject=linkat:delay_exit=4000000", "--"])
        .arg(env!("CARGO_BIN_EXE_resin-lock"))
        .arg("--path")
        .arg(s.lock())
        .arg("acquire");
    let mut strace = spawn_quiet(acquire);
    wait_until("acquire links the lock file", || s.lock().exists());
    let keeper = record(&s.lock())["pid"].as_i64().unwrap() as i32;
    let tracee =
        std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", strace.id())).unwrap();
    Command::new("kill")
        .args(["-TERM", tracee.trim()])
        .assert()
        .success();
    assert_eq!(strace.wait().unwrap().code(), Some(143));
    assert!(!s.lock().exists(), "the lock file is removed");
    wait_until("the keeper exits", || !alive(keeper));
    assert_eq!(s.leftovers(&[]), Vec::<String>::new());
}

/// Issue 20.6: without /proc, a contender SIGKILLed in the middle of
/// creating its lock (strace kills it at the linkat(2) of its named temp
/// file; the first linkat, through /proc/self/fd, fails) leaves the temp
/// file it had flocked and written. The next call proves its creator gone
/// by that flock and removes it at once (SPEC 7), not once it is 10 s old.
#[test]
fn without_proc_a_killed_creators_temp_file_is_removed_at_once() {
    let s = Scratch::new();
    let script = format!(
        r#"mount -t tmpfs none /proc || exit 99
        strace -f -qq -o /dev/null -e trace=linkat \
            -e inject=linkat:signal=SIGKILL:when=2 {bin} --path {l} run -- true
        echo $? > {d}/killed
        ls -A {d} > {d}/listing
        exec {bin} --path {l} run -- true 2> {d}/stderr"#,
        bin = bin().display(),
        l = s.lock().display(),
        d = s.dir.path().display(),
    );
    let out = Command::new("unshare")
        .args(["--mount", "sh", "-c", &script])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(fs::read_to_string(s.path("killed")).unwrap().trim(), "137");
    let listing = fs::read_to_string(s.path("listing")).unwrap();
    assert!(
        listing
            .lines()
            .any(|n| n.starts_with(".updates.lock.") && n.ends_with(".tmp")),
        "the killed contender left its temp file: {listing}"
    );
    assert_eq!(fs::read_to_string(s.path("stderr")).unwrap(), "");
    assert_eq!(
        s.leftovers(&["killed", "listing", "stderr"]),
        Vec::<String>::new()
    );
}

#[test]
fn status_json_follows_the_schema() {
    let s = Scratch::new();
    let free = status_json(&s);
    assert_eq!(free["schema"], 1);
    assert_eq!(free["locked"], false);
    let lock = &free["locks"][0];
    assert_eq!(lock["path"], s.lock().to_str().unwrap());
    assert_eq!(lock["state"], "free");
    for key in ["held_by", "kind", "owner_uid", "record", "stale_reason"] {
        assert!(lock[key].is_null(), "{key} is null when free");
    }
    assert!(free["detection"].is_object());

    s.cmd(&["acquire"]).assert().success();
    let held = status_json(&s);
    assert_eq!(held["locked"], true);
    let lock = &held["locks"][0];
    assert_eq!(lock["state"], "held");
    assert_eq!(lock["held_by"], "resin-lock");
    assert_eq!(lock["kind"], "file");
    assert_eq!(lock["owner_uid"], 0);
    assert_eq!(lock["record"]["mode"], "acquire");
    assert!(lock["stale_reason"].is_null());
    s.cmd(&["release"]).assert().success();
}

/// SPEC section 7: `status | head -0` exits quietly with its own status.
/// The pipe's read end is closed before `status` starts, so every write is
/// EPIPE (with SIGPIPE at its default, `status` would die of it: std's
/// start-up ignores it).
#[test]
fn status_into_a_closed_pipe_is_quiet_and_keeps_its_status() {
    let s = Scratch::new();
    let status_into_closed_pipe = || {
        let (reader, writer) = nix::unistd::pipe().unwrap();
        drop(reader);
        let mut status = s.cmd(&["status"]);
        status.stdout(Stdio::from(writer));
        status
    };
    status_into_closed_pipe().assert().code(0).stderr("");
    s.cmd(&["acquire"]).assert().success();
    status_into_closed_pipe().assert().code(1).stderr("");
    s.cmd(&["release"]).assert().success();
}

/// Started with stdin, stdout or stderr closed, `acquire` and `status`
/// work as with them open: std's start-up opens /dev/null on the closed
/// one, so the lock file or its directory never becomes fd 0-2 (where the
/// keeper's detaching from the terminal would close it, or `-v` would
/// write into it).
#[test]
fn acquire_and_status_with_a_standard_descriptor_closed() {
    for fd in 0..3 {
        let s = Scratch::new();
        let script = format!(
            "\"$1\" --path \"$2\" -v acquire {fd}>&- || exit 10; \
             \"$1\" --path \"$2\" -v status {fd}>&-; [ $? = 1 ] || exit 11"
        );
        Command::new("bash")
            .args(["-c", &script, "bash"])
            .arg(bin())
            .arg(s.lock())
            .stdin(Stdio::null())
            .assert()
            .success();
        let rec = record(&s.lock());
        assert_eq!(rec["mode"], "acquire", "fd {fd} closed");
        let status = status_json(&s);
        assert_eq!(status["locks"][0]["state"], "held", "fd {fd} closed");
        s.cmd(&["release"]).assert().success();
        assert!(!s.lock().exists(), "fd {fd} closed");
        assert_eq!(s.leftovers(&[]), Vec::<String>::new(), "fd {fd} closed");
    }
}

#[test]
fn release_of_nothing_is_not_an_error() {
    let s = Scratch::new();
    s.cmd(&["release"]).assert().success().stderr("");
}

#[test]
fn release_refuses_a_running_run_lock() {
    let s = Scratch::new();
    let ready = s.path("ready");
    let mut run = s
        .cmd(&[
            "run",
            "--",
            "sh",
            "-c",
            &format!("touch {}; read x || true", ready.display()),
        ])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_file(&ready);
    s.cmd(&["release"])
        .assert()
        .code(1)
        .stderr(contains("held by a running resin-lock run"));
    assert!(s.lock().exists());
    drop(run.stdin.take());
    assert!(run.wait().unwrap().success());
    assert!(!s.lock().exists());
}

#[test]
fn foreign_locks_are_held_never_stale_and_need_force() {
    let cases: &[(&str, &[u8], &str)] = &[
        ("empty", b"", "empty lock file"),
        ("lockfile(1)", b"0", "lockfile(1)"),
        ("garbage", b"\x00\xffnot json", "not a resin-lock record"),
        (
            "other json",
            br#"{"tool":"other","pid":1}"#,
            "not a resin-lock record",
        ),
    ];
    for (name, content, says) in cases {
        let s = Scratch::new();
        fs::write(s.lock(), content).unwrap();
        s.cmd(&["acquire", "-n"])
            .assert()
            .code(1)
            .stderr(contains(*says));
        let st = status_json(&s);
        assert_eq!(st["locks"][0]["state"], "held", "{name}");
        assert_eq!(st["locks"][0]["held_by"], "other", "{name}");
        assert!(st["locks"][0]["record"].is_null(), "{name}");
        s.cmd(&["release"])
            .assert()
            .code(1)
            .stderr(contains("--force"));
        assert_eq!(fs::read(s.lock()).unwrap(), *content, "{name} untouched");
        s.cmd(&["release", "--force"]).assert().success();
        assert!(!s.lock().exists(), "{name}");
    }
}

#[test]
fn supervisor_owned_lock_is_foreign() {
    let s = Scratch::new();
    fs::write(s.lock(), "").unwrap();
    std::os::unix::fs::chown(s.lock(), Some(65534), Some(65534)).unwrap();
    s.cmd(&["acquire", "-n"])
        .assert()
        .code(1)
        .stderr(contains("supervisor"));
    let st = status_json(&s);
    assert_eq!(st["locks"][0]["held_by"], "supervisor");
    assert_eq!(st["locks"][0]["owner_uid"], 65534);
    s.cmd(&["release"]).assert().code(1);
    // Never removed, not even with --force (SPEC 4, issue 19.2).
    s.cmd(&["release", "--force"])
        .assert()
        .code(1)
        .stderr(contains("not even with --force"));
    assert!(s.lock().exists());
}

#[test]
fn directory_at_the_lock_path_is_a_foreign_lock() {
    let s = Scratch::new();
    fs::create_dir(s.lock()).unwrap();
    s.cmd(&["acquire", "-n"])
        .assert()
        .code(1)
        .stderr(contains("directory").and(contains(s.lock().to_str().unwrap())));
    assert_eq!(status_json(&s)["locks"][0]["kind"], "directory");
    s.cmd(&["release"]).assert().code(1);
    assert!(s.lock().is_dir());
    s.cmd(&["release", "--force"]).assert().success();
    assert!(!s.lock().exists());
}

#[test]
fn symlinks_at_the_lock_path_are_never_followed() {
    let s = Scratch::new();
    // Dangling: acquiring must not create the target.
    let target = s.path("elsewhere");
    symlink(&target, s.lock()).unwrap();
    s.cmd(&["acquire", "-n"])
        .assert()
        .code(1)
        .stderr(contains("symlink"));
    assert!(!target.exists());
    assert_eq!(status_json(&s)["locks"][0]["kind"], "symlink");
    fs::remove_file(s.lock()).unwrap();

    // Hostile: pointing at a file that must survive everything.
    let victim = s.path("victim");
    fs::write(&victim, "precious").unwrap();
    symlink(&victim, s.lock()).unwrap();
    s.cmd(&["acquire", "-n"]).assert().code(1);
    s.cmd(&["release"]).assert().code(1);
    s.cmd(&["release", "--force"]).assert().success();
    assert!(fs::symlink_metadata(s.lock()).is_err(), "the link is gone");
    assert_eq!(fs::read_to_string(&victim).unwrap(), "precious");
}

#[test]
fn bad_input_is_a_usage_error() {
    let s = Scratch::new();
    for args in [
        &["acquire", "--bogus"][..],
        &["acquire", "-w", "abc"][..],
        &["acquire", "-w", "-1"][..],
        &["run"][..],
        &["run", "--"][..],
        &["frobnicate"][..],
    ] {
        s.cmd(args)
            .assert()
            .code(64)
            .stderr(predicate::str::is_empty().not());
    }
    s.cmd(&["acquire", "--owner", "0"]).assert().code(64);
    s.cmd(&["acquire", "--owner", "2147483646"])
        .assert()
        .code(64)
        .stderr(contains("no such process"));
    assert_eq!(s.leftovers(&[]), Vec::<String>::new());
}

#[test]
fn huge_timeouts_are_taken_or_refused_never_a_crash() {
    let s = Scratch::new();
    // Past what the clock can hold: no deadline at all.
    for dur in ["18446744073709551615", "10000000000y"] {
        s.cmd(&["run", "-w", dur, "--", "true"]).assert().success();
    }
    // Past u64 seconds: a usage error that says why.
    for dur in ["18446744073709551616", "18446744073709551615s 1000ms"] {
        s.cmd(&["run", "-w", dur, "--", "true"])
            .assert()
            .code(64)
            .stderr(contains("too large"));
    }
    assert_eq!(s.leftovers(&[]), Vec::<String>::new());
}

#[test]
fn cannot_create_is_exit_73_naming_the_place() {
    let s = Scratch::new();
    // Missing parent of --path.
    let missing = s.path("no/such/dir/updates.lock");
    resin_lock()
        .arg("--path")
        .arg(&missing)
        .args(["acquire", "-n"])
        .assert()
        .code(73)
        .stderr(contains("does not exist").and(contains("no/such/dir")));
    // Parent is a file.
    fs::write(s.path("file"), "").unwrap();
    resin_lock()
        .arg("--path")
        .arg(s.path("file/updates.lock"))
        .args(["acquire", "-n"])
        .assert()
        .code(73)
        .stderr(contains("not a directory"));
    // Name too long.
    resin_lock()
        .arg("--path")
        .arg(s.path(&"x".repeat(300)))
        .args(["run", "-n", "--", "true"])
        .assert()
        .code(73)
        .stderr(contains("too long"));
    assert_eq!(s.leftovers(&["file"]), Vec::<String>::new());
}

#[test]
fn permission_denied_is_exit_73() {
    let s = Scratch::new();
    let dir = s.path("locked-dir");
    fs::create_dir(&dir).unwrap();
    fs::set_permissions(s.dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    // uid 1000 may not write in a root-owned 0755 directory.
    Command::new("setpriv")
        .args(["--reuid=1000", "--regid=1000", "--clear-groups"])
        .arg(bin_for_others())
        .arg("--path")
        .arg(dir.join("updates.lock"))
        .args(["acquire", "-n"])
        .assert()
        .code(73)
        .stderr(contains("permission denied").and(contains("locked-dir")));
    assert_eq!(fs::read_dir(&dir).unwrap().count(), 0);
}

#[test]
fn read_only_file_system_is_exit_73() {
    let s = Scratch::new();
    let script = format!(
        "mount -t tmpfs -o ro,size=64k tmpfs {dir} && {bin} --path {dir}/updates.lock acquire -n",
        dir = s.dir.path().display(),
        bin = env!("CARGO_BIN_EXE_resin-lock")
    );
    Command::new("unshare")
        .args(["-m", "sh", "-c", &script])
        .assert()
        .code(73)
        .stderr(contains("read-only"));
}

#[test]
fn uid_65534_is_refused_with_the_reason() {
    let s = Scratch::new();
    for args in [&["acquire"][..], &["run", "--", "true"][..]] {
        Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(bin_for_others())
            .arg("--path")
            .arg(s.lock())
            .args(args)
            .assert()
            .code(77)
            .stderr(contains("65534").and(contains("supervisor")));
    }
    assert!(!s.lock().exists());
}

#[test]
fn non_utf8_paths_work() {
    let s = Scratch::new();
    let name = std::ffi::OsStr::from_bytes(b"upd\xffates.lock");
    let lock = s.dir.path().join(name);
    resin_lock()
        .arg("--path")
        .arg(&lock)
        .arg("acquire")
        .assert()
        .success();
    assert!(lock.exists());
    resin_lock()
        .arg("--path")
        .arg(&lock)
        .args(["status", "--json"])
        .assert()
        .code(1)
        .stdout(contains("upd\u{fffd}ates.lock"));
    resin_lock()
        .arg("--path")
        .arg(&lock)
        .arg("release")
        .assert()
        .success();
    assert!(!lock.exists());
}

#[test]
fn release_leaves_a_lock_the_supervisor_put_in_our_place() {
    let s = Scratch::new();
    s.cmd(&["acquire"]).assert().success();
    let keeper = record(&s.lock())["pid"].as_i64().unwrap() as i32;
    // The supervisor forced an update: removed ours, created its own.
    fs::remove_file(s.lock()).unwrap();
    fs::write(s.lock(), "").unwrap();
    std::os::unix::fs::chown(s.lock(), Some(65534), Some(65534)).unwrap();
    s.cmd(&["release"])
        .assert()
        .success()
        .stderr(contains("left it alone"));
    assert_eq!(
        fs::metadata(s.lock()).unwrap().uid(),
        65534,
        "theirs survives"
    );
    assert!(!alive(keeper), "our keeper is stopped");
    // Without a keeper of ours, the same file is simply foreign.
    s.cmd(&["release"]).assert().code(1);
}

#[test]
fn release_stops_a_keeper_whose_file_was_removed() {
    let s = Scratch::new();
    s.cmd(&["acquire"]).assert().success();
    let keeper = record(&s.lock())["pid"].as_i64().unwrap() as i32;
    fs::remove_file(s.lock()).unwrap();
    s.cmd(&["release"])
        .assert()
        .success()
        .stderr(contains("removed by someone else"));
    assert!(!alive(keeper));
}

#[test]
fn release_stops_a_keeper_whose_directory_was_removed() {
    let s = Scratch::new();
    let dir = s.path("locks");
    fs::create_dir(&dir).unwrap();
    let lock = dir.join("updates.lock");
    let at_lock = |args: &[&str]| {
        let mut cmd = resin_lock();
        cmd.arg("--path").arg(&lock).args(args);
        cmd
    };
    at_lock(&["acquire"]).assert().success();
    let keeper = record(&lock)["pid"].as_i64().unwrap() as i32;
    fs::remove_file(&lock).unwrap();
    fs::remove_dir(&dir).unwrap();
    at_lock(&["release"])
        .assert()
        .success()
        .stderr(contains("removed by someone else"));
    assert!(!alive(keeper));
}

#[test]
fn release_leaves_a_run_that_took_our_removed_lock_and_stops_our_keeper() {
    let s = Scratch::new();
    s.cmd(&["acquire"]).assert().success();
    let keeper = record(&s.lock())["pid"].as_i64().unwrap() as i32;
    // Our file is removed (a forced update, `release --force`), and another
    // resin-lock `run` takes the path; it holds until its stdin closes.
    fs::remove_file(s.lock()).unwrap();
    let ready = s.path("ready");
    let mut cmd = s.cmd(&[
        "run",
        "--",
        "sh",
        "-c",
        "touch \"$0\"; exec cat",
        ready.to_str().unwrap(),
    ]);
    cmd.stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    let mut newcomer = Group::spawn(cmd, "the newcomer's run");
    wait_for_file(&ready);
    let theirs = record(&s.lock());
    assert_eq!(theirs["pid"].as_i64(), Some(i64::from(newcomer.pid())));
    let out = s.cmd(&["release"]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(
        err.contains("left it alone") && err.contains("stopped its keeper"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
    assert_eq!(record(&s.lock()), theirs, "the newcomer's lock survives");
    wait_until("our keeper to exit", || !alive(keeper));
    assert_eq!(
        deleted_files_open_in(s.dir.path()),
        Vec::<String>::new(),
        "nobody keeps our removed file locked"
    );
    // The newcomer's lock is not ours to release, as before.
    s.cmd(&["release"])
        .assert()
        .code(1)
        .stderr(contains("running"));
    drop(newcomer.child.stdin.take());
    assert!(newcomer.wait().success());
    assert!(!s.lock().exists());
}

#[test]
fn run_leaves_a_lock_the_supervisor_put_in_its_place() {
    let s = Scratch::new();
    let lock = s.lock();
    let script = format!(
        "rm {l} && : > {l} && chown 65534:65534 {l}",
        l = lock.display()
    );
    s.cmd(&["run", "--", "sh", "-c", &script])
        .assert()
        .success()
        .stderr(contains("left it alone"));
    assert_eq!(fs::metadata(&lock).unwrap().uid(), 65534);
}

// ---- interop with the real peers ----

fn as_nobody(program: &str) -> Command {
    let mut cmd = Command::new("setpriv");
    cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups", program]);
    cmd
}

/// A scratch dir the supervisor's uid may write in.
fn shared_scratch() -> Scratch {
    let s = Scratch::new();
    fs::set_permissions(s.dir.path(), fs::Permissions::from_mode(0o1777)).unwrap();
    s
}

#[test]
fn procmail_lockfile_as_the_supervisor_sees_our_lock_as_held() {
    if tool("lockfile").is_none() {
        return;
    }
    let s = shared_scratch();
    s.cmd(&["acquire"]).assert().success();
    // Supervisors >= v13.1: `lockfile -r 0` as uid 65534; exit 73 = held.
    as_nobody("lockfile")
        .args(["-r", "0"])
        .arg(s.lock())
        .assert()
        .code(73);
    assert_eq!(record(&s.lock())["tool"], "resin-lock");
    s.cmd(&["release"]).assert().success();
    as_nobody("lockfile")
        .args(["-r", "0"])
        .arg(s.lock())
        .assert()
        .success();
    // Now the supervisor holds it: we see it as held and refuse to release it.
    s.cmd(&["acquire", "-n"])
        .assert()
        .code(1)
        .stderr(contains("supervisor"));
    s.cmd(&["release"]).assert().code(1);
    assert!(s.lock().exists());
}

/// What another tool leaves at the lock path in `forced_update_wins_*`.
#[derive(Clone, Copy)]
enum ForeignLock {
    EmptyFile,
    Directory,
}

/// The supervisor's forced update against a waiter (SPEC 2a, issue 19):
/// another tool's lock is at the path and `run -w 20` waits on it; the
/// force removes it and, 2-20 ms later (its shell), `lockfile -r 0` runs as
/// uid 65534. The supervisor's lock must win every round, and the waiter's
/// job must not start while it exists; once the supervisor removes it, the
/// waiter gets the lock.
fn forced_update_wins_against_a_waiter(foreign: ForeignLock, base_rounds: usize) {
    if tool("lockfile").is_none() {
        return;
    }
    let s = shared_scratch();
    let lock = s.lock();
    let inside = s.path("supervisor-inside");
    let ran = s.path("ran");
    let overlaps = s.path("overlaps");
    let job = r#"[ -e "$1/supervisor-inside" ] && echo overlap >> "$1/overlaps"
        [ -e "$1/updates.lock" ] || echo "no lock" >> "$1/overlaps"
        echo ran >> "$1/ran""#;
    let dir = s.dir.path().to_str().unwrap().to_owned();
    let mut rng = Rng::for_test("forced_update_wins_against_a_waiter");
    let rounds = rounds(base_rounds);
    for round in 0..rounds {
        match foreign {
            ForeignLock::EmptyFile => fs::write(&lock, "").unwrap(),
            ForeignLock::Directory => fs::create_dir(&lock).unwrap(),
        }
        let (mut waiter, mut stderr) =
            spawn_waiter(&s, &["run", "-w", "20", "--", "sh", "-c", job, "sh", &dir]);
        // The force: remove the app's lock, then the shell's `lockfile`.
        match foreign {
            ForeignLock::EmptyFile => fs::remove_file(&lock).unwrap(),
            ForeignLock::Directory => fs::remove_dir(&lock).unwrap(),
        }
        std::thread::sleep(Duration::from_millis(2 + rng.below(19) as u64));
        let out = as_nobody("lockfile")
            .args(["-r", "0"])
            .arg(&lock)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "round {round}: the supervisor's lockfile lost ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(fs::metadata(&lock).unwrap().uid(), 65534);
        // The supervisor's critical section: the waiter must stay out.
        fs::write(&inside, "").unwrap();
        assert!(waiter.try_wait().unwrap().is_none(), "round {round}");
        assert!(!ran.exists(), "round {round}: the job ran");
        fs::remove_file(&inside).unwrap();
        fs::remove_file(&lock).unwrap();
        assert!(
            wait_guarded(&mut waiter, "waiter").success(),
            "round {round}"
        );
        let mut rest = String::new();
        std::io::Read::read_to_string(&mut stderr, &mut rest).unwrap();
        assert!(
            rest.lines()
                .all(|l| l.starts_with("resin-lock: ") && !l.contains("removed")),
            "round {round}: {rest}"
        );
        assert_eq!(fs::read_to_string(&ran).unwrap(), "ran\n", "round {round}");
        fs::remove_file(&ran).unwrap();
        assert!(
            !overlaps.exists(),
            "round {round}: critical sections overlapped"
        );
        assert_eq!(s.leftovers(&[]), Vec::<String>::new());
    }
}

#[test]
fn forced_update_wins_against_a_waiter_on_an_empty_file() {
    forced_update_wins_against_a_waiter(ForeignLock::EmptyFile, 25);
}

#[test]
fn forced_update_wins_against_a_waiter_on_a_directory() {
    forced_update_wins_against_a_waiter(ForeignLock::Directory, 25);
}

fn npm_locksync(fixtures: &Path, path: &Path, hold: bool) -> std::process::Child {
    let mut cmd = Command::new("node");
    cmd.arg(fixtures.join("locksync.js")).arg(path);
    if hold {
        cmd.arg("hold");
    }
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap()
}

#[test]
fn npm_lockfile_gets_eexist_while_we_hold_it() {
    let Some(npm) = npm_fixture() else { return };
    let s = Scratch::new();
    s.cmd(&["acquire"]).assert().success();
    let out = npm_locksync(npm, &s.lock(), false)
        .wait_with_output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "EEXIST");
    assert!(!out.status.success());
    s.cmd(&["release"]).assert().success();

    // Supervisors v7-v12 hold it now: foreign to us.
    let mut supervisor = npm_locksync(npm, &s.lock(), true);
    let mut line = String::new();
    BufReader::new(supervisor.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "locked");
    s.cmd(&["acquire", "-n"]).assert().code(1);
    s.cmd(&["release"]).assert().code(1);
    assert!(s.lock().exists());
    drop(supervisor.stdin.take());
    assert!(supervisor.wait().unwrap().success());
    assert!(!s.lock().exists(), "the npm package removed its own lock");
}

#[test]
fn contention_never_overlaps() {
    let s = Scratch::new();
    let bin = env!("CARGO_BIN_EXE_resin-lock");
    let counter = s.path("counter");
    let overlaps = s.path("overlaps");
    fs::write(&counter, "0").unwrap();
    let rounds = 25;
    let script = format!(
        r#"L={lock}; C={counter}; O={overlaps}; I={inside}
        i=0
        while [ $i -lt {rounds} ]; do
            {bin} --path "$L" acquire --owner parent || exit 10
            [ -e "$I" ] && echo overlap >> "$O"
            : > "$I"
            n=$(cat "$C"); echo $((n + 1)) > "$C"
            rm -f "$I"
            {bin} --path "$L" release || exit 11
            i=$((i + 1))
        done"#,
        lock = s.lock().display(),
        counter = counter.display(),
        overlaps = overlaps.display(),
        inside = s.path("inside").display(),
    );
    run_workers(&script, 4);
    assert_counted_without_overlap(&counter, &overlaps, 4 * rounds);
    assert_eq!(s.leftovers(&["counter"]), Vec::<String>::new());
}

/// Ordinary hand-over among four `run -- true` loops (SPEC 2a): a waiter
/// that follows a holder's file sees it unlinked a moment before the holder
/// lets go of its flock, which is no forced removal, so no line may say so.
/// All write to one stderr file: each line whole (one write(2) per line),
/// never spliced with another process's ("resin-lock: resin-lock: ...").
#[test]
fn normal_contention_never_cries_forced_update_and_lines_never_splice() {
    let s = Scratch::new();
    let err = s.path("stderr");
    let script = format!(
        r#"i=0
        while [ $i -lt {rounds} ]; do
            {bin} --path {lock} run -- true || exit 10
            i=$((i + 1))
        done"#,
        rounds = rounds(150),
        bin = bin().display(),
        lock = s.lock().display(),
    );
    let log = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&err)
        .unwrap();
    let mut workers: Vec<Group> = (0..4)
        .map(|i| {
            let mut cmd = Command::new("sh");
            cmd.args(["-c", &script])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log.try_clone().unwrap());
            Group::spawn(cmd, &format!("worker {i}"))
        })
        .collect();
    for worker in &mut workers {
        assert!(worker.wait().success());
    }
    let text = fs::read_to_string(&err).unwrap();
    for line in text.lines() {
        assert!(
            line.starts_with("resin-lock: waiting for ")
                && line.matches("resin-lock:").count() == 1
                && !line.contains("removed"),
            "a line that should not be: {line:?}\nin:\n{text}"
        );
    }
    assert!(text.ends_with('\n') || text.is_empty());
    assert_eq!(s.leftovers(&["stderr"]), Vec::<String>::new());
}

#[test]
fn verbose_says_what_it_did() {
    let s = Scratch::new();
    s.cmd(&["-v", "acquire"])
        .assert()
        .success()
        .stderr(contains("acquired").and(contains("keeper pid")));
    s.cmd(&["-q", "status"]).assert().code(1).stdout("");
    s.cmd(&["-v", "release"])
        .assert()
        .success()
        .stderr(contains("released"));
}
