//! `run -- CMD`: the lock for the child's lifetime, exit codes, signal
//! forwarding (once), SIGKILL resilience, PID 1 and subreaper reaping.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::common::*;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// SIGKILLs a process when dropped (also when a test panics).
struct KillOnDrop(i32);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-KILL", &self.0.to_string()])
            .stderr(Stdio::null())
            .status();
    }
}

fn read_pid(path: &Path) -> i32 {
    fs::read_to_string(path).unwrap().trim().parse().unwrap()
}

#[test]
fn child_holds_the_lock_and_it_is_released_after() {
    let s = Scratch::new();
    let script = r#"test -s "$1" && test "$RESIN_LOCK_HELD" = "$1" && grep -q '"mode":"run"' "$1""#;
    s.cmd(&["run", "--", "sh", "-c", script, "sh"])
        .arg(s.lock())
        .assert()
        .success();
    assert!(!s.lock().exists());
    assert_eq!(s.leftovers(&[]), Vec::<String>::new());
}

#[test]
fn record_names_run_and_the_command() {
    let s = Scratch::new();
    let copy = s.path("copy");
    s.cmd(&["run", "--", "cp"])
        .arg(s.lock())
        .arg(&copy)
        .assert()
        .success();
    let rec = record(&copy);
    assert_eq!(rec["mode"], "run");
    assert_eq!(rec["pid"], rec["owner"]);
    assert_eq!(rec["cmd"][0], "cp");
}

/// Started with stdin, stdout and stderr closed (as some init systems and
/// `cmd <&- >&-` do), resin-lock opens /dev/null on them first: the lock file
/// must never become the child's fd 0-2, and output must not land in it.
#[test]
fn closed_standard_descriptors_become_dev_null_not_the_lock() {
    let s = Scratch::new();
    let out = s.path("fds");
    let report = "import os, sys; open(sys.argv[1], 'w').write(''.join(os.readlink(f'/proc/self/fd/{n}') + chr(10) for n in range(3)))";
    let script = format!(
        "{bin} --path {lock} run -- python3 -c \"{report}\" {out} <&- >&- 2>&-",
        bin = env!("CARGO_BIN_EXE_resin-lock"),
        lock = s.lock().display(),
        out = out.display(),
    );
    Command::new("bash")
        .args(["-c", &script])
        .assert()
        .success();
    assert_eq!(
        fs::read_to_string(&out).unwrap(),
        "/dev/null\n/dev/null\n/dev/null\n"
    );
    assert!(!s.lock().exists());
    assert_eq!(s.leftovers(&["fds"]), Vec::<String>::new());
}

/// resin-lock ignores SIGPIPE (std's start-up does, so a closed stdout is
/// an error it handles), but CMD starts with SIGPIPE at its default, as
/// from a shell (else `yes | head -1` in CMD would see EPIPE errors instead
/// of ending quietly). std's `Command` resets it before exec.
#[test]
fn cmd_gets_sigpipe_at_its_default_disposition() {
    let s = Scratch::new();
    let out = s
        .cmd(&["run", "--", "grep", "^SigIgn:", "/proc/self/status"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let line = String::from_utf8(out.stdout).unwrap();
    let mask = line.trim().strip_prefix("SigIgn:").unwrap().trim();
    let ignored = u64::from_str_radix(mask, 16).unwrap();
    assert_eq!(
        ignored & 1 << (libc::SIGPIPE - 1),
        0,
        "SIGPIPE ignored: {line}"
    );
}

#[test]
fn exit_codes_follow_the_child() {
    let s = Scratch::new();
    s.cmd(&["run", "--", "sh", "-c", "exit 3"]).assert().code(3);
    s.cmd(&["run", "--", "sh", "-c", "exit 0"]).assert().code(0);
    s.cmd(&["run", "--", "sh", "-c", "kill -TERM $$"])
        .assert()
        .code(143);
    s.cmd(&["run", "--", "sh", "-c", "kill -KILL $$"])
        .assert()
        .code(137);
    // Without `--` too.
    s.cmd(&["run", "false"]).assert().code(1);
    assert!(!s.lock().exists());
}

#[test]
fn command_not_found_is_127_and_not_executable_is_126() {
    if emulated(
        "command_not_found_is_127_and_not_executable_is_126",
        "qemu-user runs posix_spawn's CLONE_VFORK child as a plain fork, so an exec failure comes back as exit 127 with no message",
    ) {
        return;
    }
    let s = Scratch::new();
    s.cmd(&["run", "--", "no-such-command-resin-lock"])
        .assert()
        .code(127)
        .stderr(contains("no-such-command-resin-lock").and(contains("not found")));
    assert!(!s.lock().exists(), "released before exiting");
    let script = s.path("script.sh");
    fs::write(&script, "#!/bin/sh\nexit 0\n").unwrap();
    fs::set_permissions(&script, fs::Permissions::from_mode(0o644)).unwrap();
    s.cmd(&["run", "--"])
        .arg(&script)
        .assert()
        .code(126)
        .stderr(contains("script.sh"));
    assert!(!s.lock().exists(), "released before exiting");
}

/// SPEC 5: a script without a `#!` line runs with /bin/sh, as execvp(3),
/// flock(1) and tini run it; it holds the lock and gets its arguments. A
/// binary of another machine is still exec's error (126), not sh's.
#[test]
fn a_script_without_shebang_runs_with_bin_sh() {
    if emulated(
        "a_script_without_shebang_runs_with_bin_sh",
        "qemu-user reports exec's ENOEXEC of the spawned child as exit 127",
    ) {
        return;
    }
    let s = Scratch::new();
    let script = s.path("plain-script");
    let out = s.path("out");
    fs::write(
        &script,
        format!(
            "echo \"$0 $1 $RESIN_LOCK_HELD\" > {}\nexit 7\n",
            out.display()
        ),
    )
    .unwrap();
    fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).unwrap();
    s.cmd(&["run", "--"])
        .arg(&script)
        .arg("first")
        .assert()
        .code(7)
        .stderr("");
    let said = fs::read_to_string(&out).unwrap();
    assert_eq!(
        said.trim(),
        format!("{} first {}", script.display(), s.lock().display())
    );
    assert!(!s.lock().exists(), "released after the script");

    let foreign = s.path("foreign-binary");
    fs::write(&foreign, b"\x7fELF\x02\x01\x01\0garbage").unwrap();
    fs::set_permissions(&foreign, fs::Permissions::from_mode(0o755)).unwrap();
    s.cmd(&["run", "--"])
        .arg(&foreign)
        .assert()
        .code(126)
        .stderr(contains("foreign-binary").and(contains("Exec format error")));
    assert!(!s.lock().exists(), "released before exiting");
}

/// Start `run -- sigchild.py` and wait until the child is ready.
fn start_sigchild(s: &Scratch, exit_on: &str) -> (std::process::Child, PathBuf) {
    let log = s.path("log");
    let ready = s.path("ready");
    let child = s
        .cmd(&["run", "--", "python3"])
        .arg(fixture("sigchild.py"))
        .arg(&log)
        .arg(&ready)
        .arg(exit_on)
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    wait_for_file(&ready);
    (child, log)
}

fn logged(log: &Path) -> Vec<String> {
    fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn every_forwarded_signal_reaches_the_child_once() {
    let s = Scratch::new();
    let (mut run, log) = start_sigchild(&s, "USR2");
    let forwarded = [
        "HUP", "INT", "QUIT", "TERM", "USR1", "WINCH", "CONT", "ALRM", "PIPE", "TSTP", "TTIN",
        "TTOU",
    ];
    for (i, signal) in forwarded.iter().enumerate() {
        Command::new("kill")
            .args([&format!("-{signal}"), &run.id().to_string()])
            .assert()
            .success();
        wait_until(&format!("the child to log {signal}"), || {
            logged(&log).len() > i
        });
    }
    // SIGCHLD is ours: not forwarded (the child would not log it anyway,
    // but resin-lock must survive it and go on).
    Command::new("kill")
        .args(["-CHLD", &run.id().to_string()])
        .assert()
        .success();
    // USR2 makes the child exit 7, after everything before it was logged.
    Command::new("kill")
        .args(["-USR2", &run.id().to_string()])
        .assert()
        .success();
    let status = run.wait().unwrap();
    assert_eq!(status.code(), Some(7));
    let mut want: Vec<String> = forwarded.iter().map(|s| s.to_string()).collect();
    want.push("USR2".into());
    assert_eq!(logged(&log), want, "each signal exactly once, in order");
    assert!(!s.lock().exists());
}

/// `ctrlc.py`: type Ctrl-C at `run [OPTIONS] -- sigchild.py` in a
/// pseudo-terminal; the child must log it once (then USR1, which ends it).
fn ctrl_c_reaches_the_child_once(options: &[&str], stdin_null: bool) {
    let s = Scratch::new();
    let mut cmd = Command::new("python3");
    cmd.arg(fixture("ctrlc.py"))
        .arg(env!("CARGO_BIN_EXE_resin-lock"))
        .arg(s.lock())
        .arg(s.path("log"))
        .arg(s.path("ready"))
        .args(options);
    if stdin_null {
        cmd.env("CTRLC_STDIN", "null");
    }
    let out = cmd.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("log=INT,USR1\n"), "{stdout}");
    assert!(stdout.contains("exit=7\n"), "{stdout}");
    assert!(!s.lock().exists());
}

#[test]
fn ctrl_c_at_a_terminal_reaches_the_child_once() {
    ctrl_c_reaches_the_child_once(&[], false);
}

/// With -g, CMD's group has the terminal: Ctrl-C reaches it from there.
#[test]
fn ctrl_c_at_a_terminal_reaches_a_group_once() {
    ctrl_c_reaches_the_child_once(&["-g"], false);
}

/// With -g and stdin not the terminal, the terminal stays with our group:
/// the kernel's SIGINT comes to resin-lock alone and is forwarded.
#[test]
fn ctrl_c_is_forwarded_to_a_group_without_the_terminal() {
    ctrl_c_reaches_the_child_once(&["-g"], true);
}

/// With -g, Ctrl-Z at an interactive shell stops the job (CMD's group and
/// resin-lock) and `fg` continues it with the terminal back in CMD's group.
#[test]
fn group_job_stops_and_continues_at_a_shell() {
    let s = Scratch::new();
    let out = Command::new("python3")
        .arg(fixture("tty_jobs.py"))
        .arg(env!("CARGO_BIN_EXE_resin-lock"))
        .arg(s.lock())
        .arg(s.path("ready"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for text in ["Stopped", "got:hello", "rc=0"] {
        assert!(stdout.contains(text), "{text:?} in {stdout}");
    }
    assert!(!s.lock().exists());
}

/// With -g at a terminal, CMD's group is the foreground group (CMD can
/// read the terminal), and the terminal comes back to the caller's group
/// when CMD ends (the calling shell can read it again).
#[test]
fn group_takes_the_terminal_and_gives_it_back() {
    let s = Scratch::new();
    let out = Command::new("python3")
        .arg(fixture("tty_group.py"))
        .arg(env!("CARGO_BIN_EXE_resin-lock"))
        .arg(s.lock())
        .arg(s.path("ready"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for line in ["got:hello\n", "rc=0\n", "after:again\n", "exit=0\n"] {
        assert!(stdout.contains(line), "{line:?} in {stdout}");
    }
    assert!(!s.lock().exists());
}

/// The same when CMD is not found: its group took the terminal before
/// exec failed, and the caller's group gets it back.
#[test]
fn group_gives_the_terminal_back_when_cmd_is_not_found() {
    let s = Scratch::new();
    let out = Command::new("python3")
        .arg(fixture("tty_group.py"))
        .arg(env!("CARGO_BIN_EXE_resin-lock"))
        .arg(s.lock())
        .arg(s.path("ready"))
        .arg("missing")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for line in ["rc=127\n", "after:again\n", "exit=0\n"] {
        assert!(stdout.contains(line), "{line:?} in {stdout}");
    }
    assert!(!s.lock().exists());
}

#[test]
fn sigkill_of_resin_lock_leaves_the_lock_live_while_the_child_runs() {
    let s = Scratch::new();
    let ready = s.path("ready");
    let script = format!(
        "echo $$ > {r}.tmp && mv {r}.tmp {r} && exec cat",
        r = ready.display()
    );
    let mut run = s
        .cmd(&["run", "--", "sh", "-c", &script])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    wait_for_file(&ready);
    let child = read_pid(&ready);
    // Child::wait closes the child's stdin: keep our end open ourselves.
    let stdin = run.stdin.take();
    run.kill().unwrap(); // SIGKILL
    run.wait().unwrap();
    // The child inherited the flocked descriptor: still provably held.
    let st = status_json(&s);
    assert_eq!(st["locks"][0]["state"], "held", "{st}");
    s.cmd(&["acquire", "-n"]).assert().code(1);
    // The child ends: now the lock is stale, and is taken over.
    drop(stdin);
    wait_until("the child to exit", || !alive(child));
    let st = status_json(&s);
    assert_eq!(st["locks"][0]["state"], "stale");
    assert_eq!(st["locks"][0]["stale_reason"], "holder exited");
    s.cmd(&["run", "-n", "--", "true"]).assert().success();
    assert!(!s.lock().exists());
}

#[test]
fn as_pid_1_it_reaps_orphans_and_exits_with_the_child() {
    let s = Scratch::new();
    let script = r#"
        # Orphans: their parent exits at once, so they are reparented to PID 1.
        for i in 1 2 3 4 5; do sh -c 'true & true & sleep 0 & exit 0'; done
        # Wait (bounded) until no zombie is left in this namespace.
        i=0
        while [ $i -lt 3000 ]; do
            z=$(grep -l '^State:.*Z' /proc/[0-9]*/status 2>/dev/null | wc -l)
            [ "$z" -eq 0 ] && break
            i=$((i + 1)); sleep 0.01
        done
        echo "zombies=$z pid1=$(cat /proc/1/comm) me=$$"
        exit 5"#;
    Command::new("unshare")
        .args(["--fork", "--pid", "--mount-proc"])
        .arg(env!("CARGO_BIN_EXE_resin-lock"))
        .arg("--path")
        .arg(s.lock())
        .args(["run", "--", "sh", "-c", script])
        .assert()
        .code(5)
        .stdout(contains("zombies=0 pid1=resin-lock me=2"));
    assert!(!s.lock().exists());
}

#[test]
fn acquire_as_pid_1_has_no_owner_and_says_so() {
    let s = Scratch::new();
    Command::new("unshare")
        .args(["--fork", "--pid", "--mount-proc"])
        .arg(env!("CARGO_BIN_EXE_resin-lock"))
        .arg("--path")
        .arg(s.lock())
        .arg("acquire")
        .assert()
        .code(64)
        .stderr(contains("--owner").and(contains("PID 1")));
    assert!(!s.lock().exists());
}

#[test]
fn not_pid_1_it_is_a_subreaper_and_reaps_orphans() {
    if emulated(
        "not_pid_1_it_is_a_subreaper_and_reaps_orphans",
        "orphans are not seen reparented to the emulated resin-lock (subreaper under qemu-user)",
    ) {
        return;
    }
    let s = Scratch::new();
    let orphan_file = s.path("orphan");
    let script = format!(
        "sh -c 'sleep 1000 & echo $! > {o}.tmp; mv {o}.tmp {o}'; read x || true",
        o = orphan_file.display()
    );
    let mut run = s
        .cmd(&["run", "--", "sh", "-c", &script])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_file(&orphan_file);
    let orphan = read_pid(&orphan_file);
    // Whatever happens below, the orphan does not outlive the test.
    let _reaper = KillOnDrop(orphan);
    // The orphan is reparented once its shell has exited, which may be
    // just after the file appeared.
    let ppid = || -> Option<String> {
        let status = fs::read_to_string(format!("/proc/{orphan}/status")).ok()?;
        Some(
            status
                .lines()
                .find_map(|l| l.strip_prefix("PPid:"))?
                .trim()
                .to_owned(),
        )
    };
    wait_until("the orphan to be reparented to resin-lock", || {
        ppid().as_deref() == Some(run.id().to_string().as_str())
    });
    Command::new("kill")
        .args(["-KILL", &orphan.to_string()])
        .assert()
        .success();
    // Reaped: gone from /proc entirely, not a zombie.
    wait_until("the orphan to be reaped", || {
        !Path::new(&format!("/proc/{orphan}")).exists()
    });
    drop(run.stdin.take());
    assert!(run.wait().unwrap().success());
}

#[test]
fn run_contention_never_overlaps() {
    let s = Scratch::new();
    let counter = s.path("counter");
    let overlaps = s.path("overlaps");
    let inside = s.path("inside");
    fs::write(&counter, "0").unwrap();
    let critical = format!(
        r#"[ -e {i} ] && echo overlap >> {o}; : > {i}; n=$(cat {c}); echo $((n + 1)) > {c}; rm -f {i}"#,
        i = inside.display(),
        o = overlaps.display(),
        c = counter.display()
    );
    let rounds = 25;
    let loop_script = format!(
        r#"i=0; while [ $i -lt {rounds} ]; do {bin} --path {l} run -- sh -c '{critical}' || exit 1; i=$((i + 1)); done"#,
        bin = env!("CARGO_BIN_EXE_resin-lock"),
        l = s.lock().display(),
    );
    run_workers(&loop_script, 4);
    assert_counted_without_overlap(&counter, &overlaps, 4 * rounds);
    assert_eq!(s.leftovers(&["counter"]), Vec::<String>::new());
}

/// A `run` holding the lock until dropped (its child reads stdin).
struct Holder {
    run: std::process::Child,
}

impl Holder {
    fn start(s: &Scratch) -> Holder {
        let ready = s.path("holder-ready");
        let script = format!("touch {}; read x || true", ready.display());
        let run = s
            .cmd(&["run", "--", "sh", "-c", &script])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        wait_for_file(&ready);
        Holder { run }
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        drop(self.run.stdin.take());
        let _ = self.run.wait();
    }
}

/// SPEC 4: `-w1` is a timeout, not the command (it used to wait forever).
#[test]
fn attached_timeout_gives_up_on_a_held_lock() {
    let s = Scratch::new();
    let holder = Holder::start(&s);
    let out = output_or_kill(s.cmd(&["run", "-w1", "--", "true"]));
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let out = output_or_kill(s.cmd(&["run", "--timeout=1", "-E", "75", "true"]));
    assert_eq!(out.status.code(), Some(75), "{out:?}");
    drop(holder);
    assert!(!s.lock().exists());
}

/// `-E75` after `-n` is the conflict exit code, not the command.
#[test]
fn nonblock_with_attached_exit_code_exits_with_it() {
    let s = Scratch::new();
    let holder = Holder::start(&s);
    s.cmd(&["run", "-n", "-E75", "--", "true"])
        .assert()
        .code(75);
    s.cmd(&["run", "-nE75", "true"]).assert().code(75);
    drop(holder);
    // Free: the options still parse, and CMD with its own options runs.
    s.cmd(&["run", "-n", "-E75", "sh", "-c", "exit 4", "-n"])
        .assert()
        .code(4);
}

/// An unknown option is a usage error before any lock is taken: with a
/// missing parent directory, any attempt to lock would be exit 73.
#[test]
fn unknown_option_is_a_usage_error_and_never_the_command() {
    let s = Scratch::new();
    let lock = s.path("missing/updates.lock");
    for args in [
        &["run", "--timout", "5", "--", "x"][..],
        &["run", "-n", "-Z", "--", "true"],
        &["run", "-w", "abc", "--", "true"],
    ] {
        resin_lock()
            .arg("--path")
            .arg(&lock)
            .args(args)
            .assert()
            .code(64)
            .stderr(contains(args[1]).or(contains(args[2])));
    }
    s.cmd(&["run", "--timout", "5", "--", "x"])
        .assert()
        .code(64)
        .stderr(contains("--timout"));
    assert_eq!(s.leftovers(&[]), Vec::<String>::new(), "no lock file made");
}

/// Start `run [ARGS] -- sh -c 'sleep 1000 & echo $! > bgpid; wait'` and
/// wait until the background sleep's pid is written.
fn start_with_background_job(s: &Scratch, args: &[&str]) -> (std::process::Child, i32) {
    let bgpid = s.path("bgpid");
    // Only builtins after the `&`: a `mv` still exiting when the test's
    // SIGTERM lands is a second leftover child, and the count says 2.
    let script = format!(
        "sleep 1000 >/dev/null 2>&1 & echo $! > {b}; wait",
        b = bgpid.display()
    );
    let mut cmd = s.cmd(&["run"]);
    cmd.args(args).args(["--", "sh", "-c", &script]);
    let run = spawn_quiet(cmd);
    wait_until("the background job's pid", || {
        fs::read_to_string(&bgpid).is_ok_and(|t| t.ends_with('\n'))
    });
    (run, read_pid(&bgpid))
}

/// SPEC 5, tini's -g: `docker stop` (SIGTERM to resin-lock) also reaches
/// what CMD started in the background.
#[test]
fn group_forwards_signals_to_the_whole_process_group() {
    let s = Scratch::new();
    let (run, sleeper) = start_with_background_job(&s, &["-g"]);
    let _cleanup = KillOnDrop(sleeper);
    Command::new("kill")
        .args(["-TERM", &run.id().to_string()])
        .assert()
        .success();
    let out = run.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(143), "{out:?}");
    wait_until("the background job to get SIGTERM too", || !alive(sleeper));
    assert!(!s.lock().exists());
}

/// Without -g only CMD gets the signal: its background job runs on, and
/// resin-lock says so before it releases the lock.
#[test]
fn without_group_the_background_job_runs_on_and_is_named() {
    if emulated(
        "without_group_the_background_job_runs_on_and_is_named",
        "orphans are not seen reparented to the emulated resin-lock (subreaper under qemu-user)",
    ) {
        return;
    }
    let s = Scratch::new();
    let (run, sleeper) = start_with_background_job(&s, &[]);
    let _cleanup = KillOnDrop(sleeper);
    Command::new("kill")
        .args(["-TERM", &run.id().to_string()])
        .assert()
        .success();
    let out = run.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(143), "{out:?}");
    assert!(alive(sleeper), "only CMD got SIGTERM");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "1 process it started is still running (pid {sleeper})"
        )),
        "{stderr}"
    );
    assert!(!s.lock().exists());
}

/// SPEC 5: CMD ends while what it started runs on: one line with how many
/// and their pids, before the lock is released; nothing with -q.
#[test]
fn leftover_children_are_named_before_the_release() {
    if emulated(
        "leftover_children_are_named_before_the_release",
        "orphans are not seen reparented to the emulated resin-lock (subreaper under qemu-user)",
    ) {
        return;
    }
    let s = Scratch::new();
    let pids = s.path("pids");
    // Two orphans, with their output away from resin-lock's pipes.
    let script = format!(
        "exec >/dev/null 2>&1; sleep 1000 & a=$!; sleep 1000 & echo $a $! > {p}.tmp && mv {p}.tmp {p}",
        p = pids.display()
    );
    let out = s.cmd(&["run", "--", "sh", "-c", &script]).output().unwrap();
    let text = fs::read_to_string(&pids).unwrap();
    let orphans: Vec<i32> = text
        .split_whitespace()
        .map(|p| p.parse().unwrap())
        .collect();
    let _cleanup: Vec<KillOnDrop> = orphans.iter().map(|&p| KillOnDrop(p)).collect();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains(&format!(
            "sh ended, but 2 processes it started are still running (pid {} {})",
            orphans[0].min(orphans[1]),
            orphans[0].max(orphans[1])
        )) && stderr.contains("no longer protects them"),
        "{stderr}"
    );
    assert!(orphans.iter().all(|&p| alive(p)));

    let quiet = s
        .cmd(&["-q", "run", "--", "sh", "-c", &script])
        .output()
        .unwrap();
    let text = fs::read_to_string(&pids).unwrap();
    let _more: Vec<KillOnDrop> = text
        .split_whitespace()
        .map(|p| KillOnDrop(p.parse().unwrap()))
        .collect();
    assert_eq!(quiet.status.code(), Some(0));
    assert_eq!(String::from_utf8_lossy(&quiet.stderr), "");
    assert!(!s.lock().exists());
}

/// The line comes while the lock is still held: with resin-lock's stderr a
/// full pipe, it blocks in writing the line, and the lock file is there.
#[test]
fn the_leftover_line_comes_before_the_lock_is_released() {
    if emulated(
        "the_leftover_line_comes_before_the_lock_is_released",
        "/proc/PID/syscall shows the emulator's system call, not the binary's",
    ) {
        return;
    }
    use std::io::Read;
    use std::os::fd::AsFd;

    let s = Scratch::new();
    let (reader, writer) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
    let _ = nix::fcntl::fcntl(writer.as_fd(), nix::fcntl::FcntlArg::F_SETPIPE_SZ(4096));
    let flags = nix::fcntl::OFlag::from_bits_truncate(
        nix::fcntl::fcntl(writer.as_fd(), nix::fcntl::FcntlArg::F_GETFL).unwrap(),
    );
    let set_flags = |flags| {
        nix::fcntl::fcntl(writer.as_fd(), nix::fcntl::FcntlArg::F_SETFL(flags)).unwrap();
    };
    set_flags(flags | nix::fcntl::OFlag::O_NONBLOCK);
    let mut filled = 0;
    while nix::unistd::write(&writer, &[b'.'; 512]).is_ok() {
        filled += 512;
    }
    set_flags(flags);
    let pid = s.path("pid");
    let script = format!(
        "sleep 1000 >/dev/null 2>&1 & echo $! > {p}.tmp && mv {p}.tmp {p}",
        p = pid.display()
    );
    let mut run = s
        .cmd(&["run", "--", "sh", "-c", &script])
        .stderr(Stdio::from(writer))
        .spawn()
        .unwrap();
    wait_for_file(&pid);
    let _cleanup = KillOnDrop(read_pid(&pid));
    // Blocked in write(2) on fd 2: /proc/PID/syscall starts "NR 0x2 ".
    let blocked = format!("{} 0x2 ", libc::SYS_write);
    wait_until("resin-lock to block writing to stderr", || {
        fs::read_to_string(format!("/proc/{}/syscall", run.id()))
            .is_ok_and(|text| text.starts_with(&blocked))
    });
    assert!(s.lock().exists(), "still held while it says so");
    // Reading to the end drains the pipe; the line is after the filler.
    let drain = std::thread::spawn(move || {
        let mut text = Vec::new();
        fs::File::from(reader).read_to_end(&mut text).unwrap();
        text
    });
    assert!(run.wait().unwrap().success());
    assert!(!s.lock().exists());
    let text = drain.join().unwrap();
    let said = String::from_utf8_lossy(&text[filled..]);
    assert!(
        said.contains("1 process it started is still running"),
        "{said}"
    );
}

/// SPEC 5: a failed fork is an OS error (71), not "not executable" (126),
/// and the lock is released. As a uid of its own with a process limit of
/// one, resin-lock is that one process: its fork fails with EAGAIN.
#[test]
fn a_failed_fork_is_71_and_releases_the_lock() {
    if emulated(
        "a_failed_fork_is_71_and_releases_the_lock",
        "qemu-user itself needs a thread, which a process limit of one refuses",
    ) {
        return;
    }
    let s = Scratch::new();
    fs::set_permissions(s.dir.path(), fs::Permissions::from_mode(0o777)).unwrap();
    Command::new("setpriv")
        .args(["--reuid", "48713", "--regid", "48713", "--clear-groups"])
        .args(["prlimit", "--nproc=1"])
        .arg(bin_for_others())
        .arg("--path")
        .arg(s.lock())
        .args(["run", "--", "true"])
        .env_remove("RESIN_LOCK_PATH")
        .assert()
        .code(71)
        .stderr(contains("cannot start true"));
    assert_eq!(s.leftovers(&[]), Vec::<String>::new());
}

/// Issue 20.3: a `--max-hold` past what the clock can count means never,
/// as a `-w` that large does. It used to panic after CMD had started: the
/// child ran on orphaned, its exit status was lost and the lock went stale.
/// Nothing after the fork may panic (`run`, `run -s`, and the keeper).
#[test]
fn a_max_hold_too_large_for_the_clock_is_never() {
    let s = Scratch::new();
    let huge = "18446744073709551615";
    let ran = s.path("ran");
    for shared in [false, true] {
        let mut args = vec!["run", "--max-hold", huge];
        if shared {
            args.push("-s");
        }
        s.cmd(&args)
            .args(["--", "sh", "-c", "touch \"$1\"; exit 5", "sh"])
            .arg(&ran)
            .assert()
            .code(5)
            .stderr("");
        assert!(ran.exists(), "CMD ran");
        fs::remove_file(&ran).unwrap();
        assert_eq!(s.leftovers(&[]), Vec::<String>::new(), "released");
    }
    s.cmd(&["acquire", "--max-hold", huge])
        .assert()
        .success()
        .stderr("");
    let keeper = record(&s.lock())["pid"].as_i64().unwrap() as i32;
    assert!(alive(keeper), "the keeper holds the lock");
    s.cmd(&["status", "--health"]).assert().success();
    s.cmd(&["release"]).assert().success();
    assert!(!s.lock().exists());
}
