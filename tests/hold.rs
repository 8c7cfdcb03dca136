//! `resin-lock hold` (SPEC 4e): the lock held while stdin stays open, with
//! JSON events on stdout. Every wait here is for an event: a line hold
//! writes, a lock file's removal seen by inotify, a process's end.

use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::{ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::{Receiver, channel};

use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
use serde_json::Value;

use crate::common::*;

/// A running `resin-lock --path LOCK [global] hold ARGS`, its stdin a pipe
/// we keep open, its events read by a thread.
struct Hold {
    run: Group,
    stdin: Option<ChildStdin>,
    events: Receiver<Value>,
    stderr: std::process::ChildStderr,
}

impl Hold {
    fn start(s: &Scratch, args: &[&str]) -> Hold {
        Hold::spawn(s.cmd(&[]).arg("hold").args(args))
    }

    fn spawn(cmd: &mut Command) -> Hold {
        let cmd = std::mem::replace(cmd, Command::new("true"));
        let mut cmd = cmd;
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut run = Group::spawn(cmd, "hold");
        let stdin = run.child.stdin.take();
        let stdout = run.child.stdout.take().unwrap();
        let stderr = run.child.stderr.take().unwrap();
        let (tx, events) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                let event: Value = serde_json::from_str(&line)
                    .unwrap_or_else(|err| panic!("not a JSON line: {line:?}: {err}"));
                if tx.send(event).is_err() {
                    return;
                }
            }
        });
        Hold {
            run,
            stdin,
            events,
            stderr,
        }
    }

    /// The next event line (or None once stdout is closed).
    fn next(&self) -> Option<Value> {
        match self.events.recv_timeout(hang_guard()) {
            Ok(event) => Some(event),
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => None,
            Err(err) => panic!("no event from hold: {err}"),
        }
    }

    /// The next event, which must be `name`.
    fn expect(&self, name: &str) -> Value {
        let event = self
            .next()
            .unwrap_or_else(|| panic!("hold ended before `{name}`"));
        assert_eq!(event["event"], name, "{event}");
        event
    }

    fn close_stdin(&mut self) {
        self.stdin.take();
    }

    fn pid(&self) -> i32 {
        self.run.pid()
    }

    /// Wait for the end: the exit status, stderr, and any events left.
    fn finish(mut self) -> (ExitStatus, String, Vec<Value>) {
        self.close_stdin();
        let status = self.run.wait();
        let mut stderr = String::new();
        self.stderr.read_to_string(&mut stderr).unwrap();
        let rest = std::iter::from_fn(|| self.next()).collect();
        (status, stderr, rest)
    }
}

/// Wait until nothing is at `path`, woken by inotify on its directory (a
/// hang guard bounds it; nothing here waits for a time).
fn wait_gone(path: &Path) {
    let inotify = Inotify::init(InitFlags::IN_CLOEXEC).unwrap();
    inotify
        .add_watch(
            path.parent().unwrap(),
            AddWatchFlags::IN_DELETE | AddWatchFlags::IN_MOVED_FROM,
        )
        .unwrap();
    let guard = std::time::Instant::now();
    while path.symlink_metadata().is_ok() {
        assert!(
            guard.elapsed() < hang_guard(),
            "{} is still there",
            path.display()
        );
        let mut fds = [nix::poll::PollFd::new(
            std::os::fd::AsFd::as_fd(&inotify),
            nix::poll::PollFlags::POLLIN,
        )];
        let _ = nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(1000u16));
        if fds[0].any().unwrap_or(false) {
            let _ = inotify.read_events();
        }
    }
}

/// A process the test started outside its own children (a sleeper that
/// keeps a pipe open), killed when the test ends, also when it fails.
struct KillOnDrop(i32);

impl KillOnDrop {
    fn from_file(path: &Path) -> KillOnDrop {
        KillOnDrop(fs::read_to_string(path).unwrap().trim().parse().unwrap())
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.0),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}

fn held_paths(event: &Value) -> Vec<String> {
    event["paths"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn held_while_stdin_is_open_and_released_at_its_end() {
    let s = Scratch::new();
    let lock = s.lock();
    let mut hold = Hold::start(&s, &["--reason", "flashing"]);
    let held = hold.expect("held");
    assert_eq!(held_paths(&held), [lock.display().to_string()]);
    let since = held["since"].as_str().unwrap();
    assert!(
        since.starts_with("20") && since.ends_with('Z'),
        "RFC 3339 UTC: {since}"
    );
    // Held: the file is there, with a record of mode hold, for us.
    let record = record(&lock);
    assert_eq!(record["mode"], "hold");
    assert_eq!(record["pid"], hold.pid());
    assert_eq!(record["owner"], std::process::id());
    assert_eq!(record["reason"], "flashing");
    // Bytes on stdin are ignored.
    hold.stdin
        .as_mut()
        .unwrap()
        .write_all(b"anything\n")
        .unwrap();
    assert!(lock.exists());
    hold.close_stdin();
    hold.expect("released");
    let (status, stderr, rest) = hold.finish();
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert_eq!(stderr, "");
    assert!(rest.is_empty(), "released is last: {rest:?}");
    assert!(!lock.exists());
    assert_eq!(s.leftovers(&[]), Vec::<String>::new());
}

#[test]
fn the_caller_killed_by_sigkill_frees_the_lock() {
    let s = Scratch::new();
    let lock = s.lock();
    let out = s.path("events");
    // The caller: a Python program that starts hold with a pipe on its
    // stdin, as the package does, and sleeps.
    let program = r#"
import subprocess, sys, time
subprocess.Popen(sys.argv[1:4], stdin=subprocess.PIPE, stdout=open(sys.argv[4], "w"))
time.sleep(3600)
"#;
    let mut caller = Group::spawn(
        {
            let mut cmd = Command::new("python3");
            cmd.args(["-c", program])
                .arg(bin())
                .arg(format!("--path={}", lock.display()))
                .arg("hold")
                .arg(&out)
                .stdin(Stdio::null());
            cmd
        },
        "python3 caller",
    );
    wait_until("the held event", || {
        fs::read_to_string(&out).is_ok_and(|t| t.contains(r#""event":"held""#))
    });
    let record = record(&lock);
    assert_eq!(record["mode"], "hold");
    assert_eq!(record["owner"], caller.pid(), "the owner is the program");
    let hold_pid = record["pid"].as_i64().unwrap() as i32;
    caller.child.kill().unwrap();
    caller.wait();
    wait_gone(&lock);
    wait_until("hold to exit", || !alive(hold_pid));
    let events = fs::read_to_string(&out).unwrap();
    assert!(events.ends_with("{\"event\":\"released\"}\n"), "{events}");
    assert_eq!(s.leftovers(&["events"]), Vec::<String>::new());
}

#[test]
fn the_lock_goes_with_the_caller_even_if_another_process_keeps_stdin_open() {
    let s = Scratch::new();
    let lock = s.lock();
    let fifo = s.path("in");
    assert!(
        Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    // The shell opens the fifo on fd 3 (read-write: no wait for a reader),
    // starts hold on it, then a sleeper that inherits fd 3, then dies.
    let script = r#"exec 3<>"$1"
"$2" --path "$3" hold < "$1" > "$4" &
sleep 3600 &
echo $! > "$5"
n=0
while ! grep -q held "$4" 2>/dev/null && [ $n -lt 6000 ]; do sleep 0.01; n=$((n+1)); done
kill -9 $$"#;
    let out = s.path("events");
    let sleeper = s.path("sleeper");
    let mut sh = Command::new("sh");
    sh.args(["-c", script, "sh"])
        .arg(&fifo)
        .arg(bin())
        .arg(&lock)
        .arg(&out)
        .arg(&sleeper);
    let status = sh
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert_eq!(status.code(), None, "the shell was killed");
    let sleeper = KillOnDrop::from_file(&sleeper);
    assert!(alive(sleeper.0), "the pipe is still open in the sleeper");
    wait_gone(&lock);
    drop(sleeper);
    wait_until("hold to say released", || {
        fs::read_to_string(&out).is_ok_and(|t| t.contains("released"))
    });
}

#[test]
fn term_int_and_hup_release_and_exit_128_plus_the_signal() {
    for (signal, number) in [("TERM", 15), ("INT", 2), ("HUP", 1)] {
        let s = Scratch::new();
        let hold = Hold::start(&s, &[]);
        hold.expect("held");
        assert!(s.lock().exists());
        Command::new("kill")
            .args([&format!("-{signal}"), &hold.pid().to_string()])
            .assert()
            .success();
        hold.expect("released");
        let (status, stderr, rest) = hold.finish();
        assert_eq!(status.code(), Some(128 + number), "{signal}: {stderr}");
        assert!(rest.is_empty(), "{rest:?}");
        assert!(!s.lock().exists(), "{signal}");
    }
}

#[test]
fn a_waiter_says_waiting_then_held_when_the_holder_lets_go() {
    let s = Scratch::new();
    let mut first = Hold::start(&s, &[]);
    first.expect("held");
    let second = Hold::start(&s, &[]);
    let waiting = second.expect("waiting");
    assert_eq!(waiting["path"], s.lock().display().to_string());
    assert_eq!(waiting["held_by"], "resin-lock");
    assert_eq!(waiting["record"]["mode"], "hold");
    assert_eq!(waiting["record"]["pid"], first.pid());
    let holder = waiting["holder"].as_str().unwrap();
    assert!(
        holder.starts_with(&format!("resin-lock hold (pid {}, for pid ", first.pid())),
        "{holder}"
    );
    first.close_stdin();
    first.expect("released");
    let held = second.expect("held");
    assert_eq!(held_paths(&held), [s.lock().display().to_string()]);
    assert_eq!(record(&s.lock())["pid"], second.pid());
    let (status, stderr, _) = second.finish();
    assert_eq!(status.code(), Some(0));
    assert!(
        stderr.starts_with(&format!(
            "resin-lock: waiting for {}: held by resin-lock hold",
            s.lock().display()
        )),
        "the waiting line, as run says it: {stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(!s.lock().exists());
    let (status, _, _) = first.finish();
    assert_eq!(status.code(), Some(0));
}

#[test]
fn busy_with_n_is_exit_1_or_the_e_code_with_no_event() {
    let s = Scratch::new();
    let first = Hold::start(&s, &[]);
    first.expect("held");
    for (args, code) in [
        (&["-n"][..], 1),
        (&["-n", "-E", "75"], 75),
        (&["-w", "0.1"], 1),
    ] {
        let (status, events, stderr) = hold_to_the_end(&s, args);
        assert_eq!(status.code(), Some(code), "{args:?}: {stderr}");
        // -w waits, and says so; nothing else is said.
        let said: Vec<&Value> = events.iter().map(|e| &e["event"]).collect();
        let want: &[&str] = if args[0] == "-w" { &["waiting"] } else { &[] };
        assert_eq!(said, want, "{args:?}");
        assert!(stderr.contains("is held by resin-lock hold"), "{stderr}");
        assert_eq!(record(&s.lock())["pid"], first.pid(), "the holder keeps it");
    }
    let (status, _, _) = first.finish();
    assert_eq!(status.code(), Some(0));
}

/// A hold run to its end (its stdin kept open as a pipe until it ends by
/// itself): its exit status, its events, its stderr.
fn hold_to_the_end(s: &Scratch, args: &[&str]) -> (ExitStatus, Vec<Value>, String) {
    let hold = Hold::start(s, args);
    let events: Vec<Value> = std::iter::from_fn(|| hold.next()).collect();
    let (status, stderr, _) = hold.finish();
    (status, events, stderr)
}

#[test]
fn end_of_stdin_while_waiting_ends_the_wait_with_nothing_held() {
    let s = Scratch::new();
    let first = Hold::start(&s, &[]);
    first.expect("held");
    let mut second = Hold::start(&s, &["-q"]);
    second.expect("waiting");
    second.close_stdin();
    let (status, stderr, rest) = second.finish();
    assert_eq!(status.code(), Some(129), "as SIGHUP: {stderr}");
    assert_eq!(stderr, "");
    assert!(rest.is_empty(), "{rest:?}");
    assert_eq!(record(&s.lock())["pid"], first.pid());
    let (status, _, _) = first.finish();
    assert_eq!(status.code(), Some(0));
    assert!(!s.lock().exists());
}

#[test]
fn a_signal_while_waiting_ends_the_wait_with_128_plus_s() {
    let s = Scratch::new();
    let first = Hold::start(&s, &[]);
    first.expect("held");
    let second = Hold::start(&s, &["-q"]);
    second.expect("waiting");
    Command::new("kill")
        .args(["-TERM", &second.pid().to_string()])
        .assert()
        .success();
    // Its end comes from the signal alone: stdin stays open until then.
    let mut second = second;
    second.run.wait();
    let (status, stderr, rest) = second.finish();
    assert_eq!(status.code(), Some(143), "{stderr}");
    assert!(rest.is_empty(), "nothing held, nothing said: {rest:?}");
    assert_eq!(record(&s.lock())["pid"], first.pid());
}

#[test]
fn max_hold_expires_then_holds_on_until_stdin_closes() {
    let s = Scratch::new();
    let mut hold = Hold::start(&s, &["--max-hold", "0.2"]);
    hold.expect("held");
    hold.expect("expired");
    assert!(!s.lock().exists(), "released at expiry");
    assert!(alive(hold.pid()), "still there for its caller");
    // The lock is free for others now.
    s.cmd(&["run", "-n", "--", "true"]).assert().success();
    hold.close_stdin();
    hold.expect("released");
    let (status, stderr, _) = hold.finish();
    assert_eq!(status.code(), Some(0));
    assert!(stderr.contains("(--max-hold); released it"), "{stderr}");
}

#[test]
fn shared_holds_share_and_the_last_one_out_removes_the_file() {
    let s = Scratch::new();
    let mut first = Hold::start(&s, &["-s"]);
    first.expect("held");
    let mut second = Hold::start(&s, &["-s"]);
    second.expect("held");
    let status = status_json(&s);
    let holders = status["locks"][0]["holders"].as_array().unwrap();
    assert_eq!(holders.len(), 2, "{status}");
    assert!(holders.iter().all(|h| h["mode"] == "hold"), "{status}");
    first.close_stdin();
    first.expect("released");
    assert!(s.lock().exists(), "the second still holds it");
    second.close_stdin();
    second.expect("released");
    assert!(!s.lock().exists());
    for hold in [first, second] {
        assert_eq!(hold.finish().0.code(), Some(0));
    }
}

/// A lock directory as the supervisor's is (1777), so uid 65534 can create.
fn shared_scratch() -> Scratch {
    let s = Scratch::new();
    fs::set_permissions(s.dir.path(), fs::Permissions::from_mode(0o1777)).unwrap();
    s
}

#[test]
fn the_supervisors_forced_update_is_lost_and_its_lock_survives() {
    if tool("lockfile").is_none() {
        return;
    }
    let s = shared_scratch();
    let lock = s.lock();
    let hold = Hold::start(&s, &[]);
    hold.expect("held");
    // The force, as the supervisor does it: unlink, then `lockfile -r 0`
    // as uid 65534.
    fs::remove_file(&lock).unwrap();
    let out = as_nobody("lockfile")
        .args(["-r", "0"])
        .arg(&lock)
        .output()
        .unwrap();
    assert!(out.status.success(), "lockfile: {out:?}");
    let lost = hold.expect("lost");
    assert_eq!(lost["path"], lock.display().to_string());
    assert!(
        lost["why"] == "removed" || lost["why"] == "replaced",
        "{lost}"
    );
    // It holds on (the program decides) until its stdin closes.
    assert!(alive(hold.pid()));
    let (status, stderr, rest) = hold.finish();
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert_eq!(rest.len(), 1, "{rest:?}");
    assert_eq!(rest[0]["event"], "released");
    assert_eq!(
        stderr
            .matches("our lock file was removed by someone else")
            .count(),
        1,
        "said once: {stderr}"
    );
    assert_eq!(
        fs::metadata(&lock).unwrap().uid(),
        65534,
        "the supervisor's lock survives"
    );
}

#[test]
fn release_refuses_it_and_release_force_makes_it_lost() {
    let s = Scratch::new();
    let hold = Hold::start(&s, &[]);
    hold.expect("held");
    s.cmd(&["release"])
        .assert()
        .code(1)
        .stderr(contains("held by a running resin-lock hold"));
    assert!(s.lock().exists());
    s.cmd(&["release", "--force"])
        .assert()
        .success()
        .stderr(contains("removed the lock of a running `resin-lock hold`"));
    let lost = hold.expect("lost");
    assert_eq!(lost["why"], "removed");
    assert!(!s.lock().exists());
    let (status, _, rest) = hold.finish();
    assert_eq!(status.code(), Some(0));
    assert_eq!(rest.len(), 1, "only released is left: {rest:?}");
}

#[test]
fn status_names_mode_hold_and_the_program_and_the_host_cannot_reboot() {
    let s = Scratch::new();
    let hold = Hold::start(&s, &["--reason", "db migration"]);
    hold.expect("held");
    let status = status_json(&s);
    let lock = &status["locks"][0];
    assert_eq!(lock["state"], "held", "{status}");
    assert_eq!(lock["record"]["mode"], "hold", "{status}");
    assert_eq!(lock["record"]["owner"], std::process::id(), "{status}");
    assert_eq!(lock["holders"][0]["mode"], "hold", "{status}");
    s.cmd(&["status"]).assert().code(1).stdout(contains(format!(
        "held by resin-lock hold (pid {}, for pid {}",
        hold.pid(),
        std::process::id()
    )));
    s.cmd(&["status", "--health"]).assert().success();
    // balenaOS `safe_reboot`: `flock -nx` on a read descriptor fails.
    Command::new("sh")
        .args(["-c", r#"exec 9<"$1"; flock -nx 9"#, "sh"])
        .arg(s.lock())
        .assert()
        .code(1);
    let (status, _, _) = hold.finish();
    assert_eq!(status.code(), Some(0));
}

#[test]
fn a_closed_stdout_is_the_caller_gone() {
    let s = Scratch::new();
    let first = Hold::start(&s, &[]);
    first.expect("held");
    // The second waits; nobody reads its stdout any more.
    let mut cmd = s.cmd(&["-q", "hold"]);
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut second = Group::spawn(cmd, "hold");
    let _stdin = second.child.stdin.take();
    let mut stdout = BufReader::new(second.child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    assert!(line.contains("\"waiting\""), "{line}");
    drop(stdout);
    let (status, _, _) = first.finish();
    assert_eq!(status.code(), Some(0));
    // It takes the lock, cannot say so (EPIPE), lets go and exits 0,
    // though its stdin is still open.
    assert_eq!(second.wait().code(), Some(0));
    assert!(!s.lock().exists());
}

/// The code block of `docs/hold.md` that opens with "```LANG".
fn doc_example(lang: &str) -> String {
    let doc = fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/hold.md")).unwrap();
    let start = doc
        .find(&format!("```{lang}\n"))
        .unwrap_or_else(|| panic!("no {lang} example"))
        + lang.len()
        + 4;
    let len = doc[start..].find("```").unwrap();
    doc[start..start + len].to_owned()
}

/// The docs' examples, run as written: `resin-lock` on PATH, the lock
/// path from RESIN_LOCK_PATH, the critical work a stand-in that checks
/// the lock is held.
fn run_doc_example(program: &str, work: &str, lang: &str) {
    let s = Scratch::new();
    let bin_dir = s.path("bin");
    fs::create_dir(&bin_dir).unwrap();
    std::os::unix::fs::symlink(bin(), bin_dir.join("resin-lock")).unwrap();
    let script = format!("{work}\n{}", doc_example(lang));
    let mut cmd = Command::new(program);
    cmd.arg("-c")
        .arg(&script)
        .env("PATH", format!("{}:/usr/bin:/bin", bin_dir.display()))
        .env("RESIN_LOCK_PATH", s.lock())
        .env("MARK", s.path("ran"));
    let out = output_or_kill(cmd);
    assert!(
        out.status.success(),
        "{lang}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        fs::read_to_string(s.path("ran")).unwrap(),
        "held\n",
        "{lang}"
    );
    assert!(!s.lock().exists(), "{lang}: released");
}

#[test]
fn the_docs_coprocess_example_works_as_written() {
    let work = r#"migrate-database() {
    grep -q '"mode":"hold"' "$RESIN_LOCK_PATH" && echo held > "$MARK"
}"#;
    run_doc_example("bash", work, "bash");
}

#[test]
fn the_docs_python_example_works_as_written() {
    let work = r#"import os
def migrate_database():
    with open(os.environ["RESIN_LOCK_PATH"]) as lock, open(os.environ["MARK"], "w") as mark:
        if '"mode":"hold"' in lock.read():
            mark.write("held\n")"#;
    run_doc_example("python3", work, "python");
}

#[test]
fn failures_are_one_line_and_the_exit_status_with_no_event() {
    let s = Scratch::new();
    let missing = s.path("no-such-dir/updates.lock");
    let missing = missing.to_str().unwrap();
    for (global, args, code, says) in [
        (&[][..], &["-w", "abc"][..], 64, "invalid value"),
        (&[], &["extra"], 64, "unexpected argument"),
        (&["--path", missing], &[], 73, "no-such-dir"),
    ] {
        let mut cmd = resin_lock();
        if global.is_empty() {
            cmd.arg("--path").arg(s.lock());
        }
        cmd.args(global).arg("hold").args(args);
        let hold = Hold::spawn(&mut cmd);
        let (status, stderr, events) = hold.finish();
        assert_eq!(status.code(), Some(code), "{args:?}: {stderr}");
        assert!(events.is_empty(), "{args:?}: {events:?}");
        assert!(
            stderr.starts_with("resin-lock: ") && stderr.contains(says),
            "{args:?}: {stderr}"
        );
        assert_eq!(s.leftovers(&[]), Vec::<String>::new(), "{args:?}");
    }
}

#[test]
fn as_uid_65534_it_refuses_with_77() {
    let s = Scratch::new();
    fs::set_permissions(s.dir.path(), fs::Permissions::from_mode(0o1777)).unwrap();
    let mut cmd = as_nobody(bin_for_others().to_str().unwrap());
    cmd.arg("--path").arg(s.lock()).arg("hold");
    let hold = Hold::spawn(&mut cmd);
    let (status, stderr, events) = hold.finish();
    assert_eq!(status.code(), Some(77), "{stderr}");
    assert!(stderr.contains("uid 65534"), "{stderr}");
    assert!(events.is_empty(), "{events:?}");
    assert!(!s.lock().exists());
}

#[test]
fn several_paths_are_held_together_and_each_loss_is_said_once() {
    let s = Scratch::new();
    let (a, b) = (s.path("a.lock"), s.path("b.lock"));
    let mut cmd = resin_lock();
    cmd.arg("--path").arg(&a).arg("--path").arg(&b).arg("hold");
    let hold = Hold::spawn(&mut cmd);
    let held = hold.expect("held");
    assert_eq!(
        held_paths(&held),
        [a.display().to_string(), b.display().to_string()]
    );
    fs::remove_file(&b).unwrap();
    let lost = hold.expect("lost");
    assert_eq!(lost["path"], b.display().to_string());
    assert_eq!(lost["why"], "removed");
    // Replaced by another file: said as such.
    let temp = s.path("new");
    fs::write(&temp, "").unwrap();
    fs::rename(&temp, &a).unwrap();
    let lost = hold.expect("lost");
    assert_eq!(lost["path"], a.display().to_string());
    assert_eq!(lost["why"], "replaced");
    let (status, stderr, rest) = hold.finish();
    assert_eq!(status.code(), Some(0));
    assert_eq!(rest.len(), 1, "only released, no second lost: {rest:?}");
    assert_eq!(rest[0]["event"], "released");
    assert_eq!(
        stderr.matches("removed by someone else").count(),
        2,
        "{stderr}"
    );
    assert!(a.exists(), "the file put there is left alone");
}

#[test]
fn a_caller_that_dies_while_hold_waits_ends_the_wait() {
    let s = Scratch::new();
    let first = Hold::start(&s, &[]);
    first.expect("held");
    let fifo = s.path("in");
    assert!(
        Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    // As above: the pipe stays open in a sleeper when the shell dies.
    let script = r#"exec 3<>"$1"
"$2" -q --path "$3" hold < "$1" > "$4" &
echo $! > "$6"
sleep 3600 &
echo $! > "$5"
n=0
while ! grep -q waiting "$4" 2>/dev/null && [ $n -lt 6000 ]; do sleep 0.01; n=$((n+1)); done
kill -9 $$"#;
    let (out, sleeper, pid) = (s.path("events"), s.path("sleeper"), s.path("pid"));
    let status = Command::new("sh")
        .args(["-c", script, "sh"])
        .arg(&fifo)
        .arg(bin())
        .arg(s.lock())
        .arg(&out)
        .arg(&sleeper)
        .arg(&pid)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert_eq!(status.code(), None, "the shell was killed");
    let _sleeper = KillOnDrop::from_file(&sleeper);
    let waiter: i32 = fs::read_to_string(&pid).unwrap().trim().parse().unwrap();
    wait_until("the waiting hold to give up", || !alive(waiter));
    let events = fs::read_to_string(&out).unwrap();
    assert_eq!(events.lines().count(), 1, "only waiting: {events}");
    assert_eq!(record(&s.lock())["pid"], first.pid(), "the holder keeps it");
    let (status, _, _) = first.finish();
    assert_eq!(status.code(), Some(0));
    assert!(!s.lock().exists(), "the waiter never took it");
}

/// Without /proc: the record has no command line, the lock's directory
/// cannot be watched through /proc/self/fd (so the path is polled), and
/// the caller is still followed (stdin, getppid).
#[test]
fn without_proc_it_holds_says_lost_and_releases() {
    if !can_hide_proc("without_proc_it_holds_says_lost_and_releases") {
        return;
    }
    let s = Scratch::new();
    let lock = s.lock();
    let mut cmd = Command::new("unshare");
    cmd.args([
        "-m",
        "sh",
        "-c",
        r#"mount -t tmpfs none /proc && exec "$@""#,
        "sh",
    ])
    .arg(bin())
    .arg("--path")
    .arg(&lock)
    .arg("hold");
    let hold = Hold::spawn(&mut cmd);
    hold.expect("held");
    let record = record(&lock);
    assert_eq!(record["mode"], "hold");
    assert_eq!(
        record["owner"],
        std::process::id(),
        "getppid needs no /proc"
    );
    fs::remove_file(&lock).unwrap();
    let lost = hold.expect("lost");
    assert_eq!(lost["why"], "removed");
    let (status, stderr, rest) = hold.finish();
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert_eq!(rest.len(), 1, "{rest:?}");
}

#[test]
fn waiting_for_the_supervisors_lock_names_it_and_times_out_with_nothing_held() {
    if tool("lockfile").is_none() {
        return;
    }
    let s = shared_scratch();
    let out = as_nobody("lockfile")
        .args(["-r", "0"])
        .arg(s.lock())
        .output()
        .unwrap();
    assert!(out.status.success(), "lockfile: {out:?}");
    let (status, events, stderr) = hold_to_the_end(&s, &["-w", "0.2", "-E", "75"]);
    assert_eq!(status.code(), Some(75), "{stderr}");
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["event"], "waiting");
    assert_eq!(events[0]["held_by"], "supervisor");
    assert_eq!(events[0]["record"], Value::Null);
    assert!(stderr.contains("the supervisor is updating"), "{stderr}");
    assert_eq!(fs::metadata(s.lock()).unwrap().uid(), 65534, "left alone");
}

#[test]
fn another_uid_holds_it_and_lets_go_at_end_of_stdin() {
    let s = shared_scratch();
    let mut cmd = Command::new("setpriv");
    cmd.args(["--reuid=1000", "--regid=1000", "--clear-groups"])
        .arg(bin_for_others())
        .arg("--path")
        .arg(s.lock())
        .arg("hold");
    let mut hold = Hold::spawn(&mut cmd);
    hold.expect("held");
    assert_eq!(fs::metadata(s.lock()).unwrap().uid(), 1000);
    let record = record(&s.lock());
    assert_eq!(record["uid"], 1000);
    assert_eq!(record["owner"], std::process::id(), "setpriv exec'd hold");
    // Root's plain release refuses it too.
    s.cmd(&["release"]).assert().code(1);
    hold.close_stdin();
    hold.expect("released");
    let (status, stderr, _) = hold.finish();
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert!(!s.lock().exists());
}
