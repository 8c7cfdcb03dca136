//! Shared locks (`-s`, SPEC 4): several holders at once, each blocking
//! updates; an exclusive taker waits for all of them; the last one out
//! removes the file; the peers (procmail's lockfile(1) as the supervisor,
//! the npm lockfile package, the host OS's `flock -nx`) see it as held.
//!
//! Holders stay in their critical section until their stdin closes, and say
//! they are inside with a ready file: no sleeps.

use std::fs;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use crate::common::*;

/// The critical section of a holder: say so in the ready file `$1`, then
/// stay until stdin closes.
const INSIDE: &str = r#"touch "$1"; exec cat >/dev/null"#;

/// A `run` holder (`-s` when `shared`), inside once this returns; it
/// leaves when dropped or `leave`d.
struct Holder {
    child: Child,
}

impl Holder {
    fn run(s: &Scratch, shared: bool, name: &str) -> Holder {
        let ready = s.path(&format!("ready.{name}"));
        let mut args = vec!["run"];
        if shared {
            args.push("-s");
        }
        let mut cmd = s.cmd(&args);
        cmd.args(["--", "sh", "-c", INSIDE, "sh"])
            .arg(&ready)
            .stdin(Stdio::piped());
        let holder = Holder {
            child: cmd.spawn().unwrap(),
        };
        wait_for_file(&ready);
        holder
    }

    fn pid(&self) -> i64 {
        i64::from(self.child.id())
    }

    /// Close its stdin and wait for `run` to exit (successfully).
    fn leave(mut self) {
        drop(self.child.stdin.take());
        let status = wait_guarded(&mut self.child, "run -s holder");
        assert!(status.success(), "{status}");
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.wait();
    }
}

fn holder_pids(s: &Scratch) -> Vec<i64> {
    let mut pids: Vec<i64> = status_json(s)["locks"][0]["holders"]
        .as_array()
        .expect("holders")
        .iter()
        .map(|h| h["pid"].as_i64().unwrap())
        .collect();
    pids.sort();
    pids
}

#[test]
fn two_shared_runs_are_inside_at_once_and_the_last_one_out_removes_the_file() {
    let s = Scratch::new();
    let a = Holder::run(&s, true, "a");
    // B gets in while A is inside.
    let b = Holder::run(&s, true, "b");
    let mut both = vec![a.pid(), b.pid()];
    both.sort();
    assert_eq!(holder_pids(&s), both);
    let lock = &status_json(&s)["locks"][0];
    assert_eq!(lock["state"], "held");
    assert_eq!(lock["holders"][0]["mode"], "run");
    s.cmd(&["status"])
        .assert()
        .code(1)
        .stdout(contains("2 shared holders"));

    a.leave();
    assert!(s.lock().exists(), "removed while B holds it");
    assert_eq!(holder_pids(&s), [b.pid()]);
    assert_eq!(status_json(&s)["locks"][0]["state"], "held");
    b.leave();
    assert!(!s.lock().exists(), "the last one out removes the file");
    assert_eq!(s.leftovers(&["ready.a", "ready.b"]), Vec::<String>::new());
}

#[test]
fn an_exclusive_run_waits_for_every_shared_holder() {
    let s = Scratch::new();
    let a = Holder::run(&s, true, "a");
    let b = Holder::run(&s, true, "b");
    let inside = s.path("exclusive-inside");
    let mut exclusive = s
        .cmd(&["run", "--", "touch"])
        .arg(&inside)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(exclusive.stderr.take().unwrap());
    let mut line = String::new();
    stderr.read_line(&mut line).unwrap();
    assert!(line.contains("waiting for"), "{line}");
    assert!(line.contains("shared holder"), "{line}");
    a.leave();
    // B still holds it: the exclusive run cannot have got in.
    assert!(
        !inside.exists(),
        "exclusive run got in beside a shared holder"
    );
    assert!(s.lock().exists());
    b.leave();
    assert!(wait_guarded(&mut exclusive, "exclusive run").success());
    assert!(inside.exists());
    assert!(!s.lock().exists());
}

#[test]
fn a_shared_taker_never_joins_an_exclusive_holder() {
    let s = Scratch::new();
    let exclusive = Holder::run(&s, false, "x");
    s.cmd(&["run", "-s", "-n", "--", "true"])
        .assert()
        .code(1)
        .stderr(contains("is held by resin-lock run"));
    s.cmd(&["acquire", "-s", "-n", "--owner", &Sleeper::new().pid()])
        .assert()
        .code(1);
    exclusive.leave();
    assert!(!s.lock().exists());
}

#[test]
fn a_stale_shared_lock_is_taken_over_not_joined() {
    let s = Scratch::new();
    s.cmd(&["acquire", "-s"]).assert().success();
    let keeper = record(&s.lock())["pid"].as_i64().unwrap() as i32;
    assert_eq!(record(&s.lock())["shared"], true);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(keeper),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    wait_until("the keeper to die", || !alive(keeper));
    assert_eq!(status_json(&s)["locks"][0]["state"], "stale");
    let a = Holder::run(&s, true, "a");
    // A fresh file, with A's record first: not the dead keeper's, joined.
    let first = record_lines(&s.lock());
    assert_eq!(first.len(), 1, "{first:?}");
    assert_eq!(first[0]["pid"].as_i64(), Some(a.pid()));
    a.leave();
    assert!(!s.lock().exists());
}

/// Every line of a lock file, as JSON.
fn record_lines(path: &Path) -> Vec<serde_json::Value> {
    fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// A shared `run` holder, then an `acquire -s` keeper beside it for a
/// sleeping owner.
fn shared_run_and_keeper(s: &Scratch) -> (Holder, Sleeper) {
    let a = Holder::run(s, true, "a");
    let owner = Sleeper::new();
    s.cmd(&["acquire", "-s", "--owner", &owner.pid()])
        .assert()
        .success();
    (a, owner)
}

#[test]
fn release_stops_only_the_callers_own_shared_keeper() {
    let s = Scratch::new();
    let (a, owner) = shared_run_and_keeper(&s);
    let lines = record_lines(&s.lock());
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert_eq!(lines[1]["mode"], "acquire");
    assert_eq!(holder_pids(&s).len(), 2);
    // Not this caller's keeper: refused, every holder left alone.
    s.cmd(&["release"])
        .assert()
        .code(1)
        .stderr(contains("not this caller's lock"));
    assert_eq!(holder_pids(&s).len(), 2);
    s.cmd(&["release", "--owner", &owner.pid()])
        .assert()
        .success();
    // Its keeper is gone; A still holds the file.
    assert_eq!(holder_pids(&s), [a.pid()]);
    assert!(s.lock().exists());
    a.leave();
    assert!(!s.lock().exists());
}

#[test]
fn flock_nx_on_a_read_descriptor_fails_while_any_shared_holder_lives() {
    let s = Scratch::new();
    let a = Holder::run(&s, true, "a");
    s.cmd(&["acquire", "-s"]).assert().success();
    // What balenaOS's safe_reboot does before a host update reboots.
    let host_check = || {
        Command::new("sh")
            .args(["-c", r#"flock -nx 9 9<"$1""#, "sh"])
            .arg(s.lock())
            .status()
            .unwrap()
            .success()
    };
    assert!(
        !host_check(),
        "flock -nx got a lock two shared holders hold"
    );
    a.leave();
    assert!(
        !host_check(),
        "flock -nx got a lock the shared keeper holds"
    );
    s.cmd(&["release"]).assert().success();
    assert!(!s.lock().exists());
}

fn as_nobody(program: &str) -> Command {
    let mut cmd = Command::new("setpriv");
    cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups", program]);
    cmd
}

#[test]
fn procmail_lockfile_as_the_supervisor_sees_a_shared_lock_as_held() {
    if tool("lockfile").is_none() {
        return;
    }
    let s = Scratch::new();
    fs::set_permissions(s.dir.path(), fs::Permissions::from_mode(0o1777)).unwrap();
    let a = Holder::run(&s, true, "a");
    s.cmd(&["acquire", "-s"]).assert().success();
    // Its output is captured: "Sorry, giving up" is what 73 looks like.
    let lockfile = || {
        as_nobody("lockfile")
            .args(["-r", "0"])
            .arg(s.lock())
            .output()
            .unwrap()
    };
    // 73: the file exists (the supervisor backs off).
    let out = lockfile();
    assert_eq!(out.status.code(), Some(73), "{out:?}");
    a.leave();
    let out = lockfile();
    assert_eq!(out.status.code(), Some(73), "{out:?}");
    s.cmd(&["release"]).assert().success();
    // Free now: the supervisor gets it (and so the 73s were the lock's).
    let out = lockfile();
    assert!(out.status.success(), "{out:?}");
}

#[test]
fn npm_lockfile_sees_a_shared_lock_as_held() {
    let Some(npm) = npm_fixture() else { return };
    let s = Scratch::new();
    let a = Holder::run(&s, true, "a");
    let b = Holder::run(&s, true, "b");
    let locksync = || {
        let out = Command::new("node")
            .arg(npm.join("locksync.js"))
            .arg(s.lock())
            .stdin(Stdio::null())
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    assert_eq!(locksync(), "EEXIST");
    a.leave();
    assert_eq!(locksync(), "EEXIST");
    b.leave();
    assert_eq!(locksync(), "locked");
}

/// A `run -s` critical section that checks it holds the file the path
/// names: an unlinked one shows as `(deleted)` among its descriptors.
const CHECK_HELD: &str = r#"
if ls -l /proc/self/fd/ | grep -q 'updates.lock (deleted)'; then
    echo "holds an unlinked lock file" >> "$D/bad"
fi
[ -e "$L" ] || echo "the lock file is gone while held" >> "$D/bad"
"#;

#[test]
fn a_joiner_racing_the_last_leaver_never_holds_an_unlinked_file() {
    let s = Scratch::new();
    let script = format!(
        r#"for i in $(seq {}); do "$BIN" --path "$L" run -s -- sh -c "$CHECK" || exit 1; done"#,
        rounds(300)
    );
    let workers: Vec<Group> = (0..4)
        .map(|n| {
            let mut cmd = Command::new("sh");
            cmd.args(["-c", &script])
                .env("BIN", bin())
                .env("L", s.lock())
                .env("D", s.dir.path())
                .env("CHECK", CHECK_HELD)
                .stdin(Stdio::null());
            Group::spawn(cmd, &format!("worker {n}"))
        })
        .collect();
    for mut worker in workers {
        assert!(worker.wait().success());
    }
    let bad = fs::read_to_string(s.path("bad")).unwrap_or_default();
    assert_eq!(bad, "");
    assert!(!s.lock().exists(), "the last one out removes the file");
    assert_eq!(s.leftovers(&[]), Vec::<String>::new());
}

#[test]
fn an_exclusive_acquire_of_an_owner_holding_a_shared_lock_does_not_wait_for_itself() {
    let s = Scratch::new();
    let (a, owner) = shared_run_and_keeper(&s);
    // Its keeper is the second holder listed, not the file's creator.
    let out = output_or_kill(s.cmd(&["acquire", "--owner", &owner.pid()]));
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("already held by this owner"), "{stderr}");
    // A live `run -s` is released when its command ends, not by `release`.
    s.cmd(&["release", "--owner", &owner.pid()])
        .assert()
        .success();
    s.cmd(&["release"])
        .assert()
        .code(1)
        .stderr(contains("held by a running resin-lock run -s"));
    a.leave();
    assert!(!s.lock().exists());
}

/// SPEC 2b for shared locks: a second `acquire -s` by an owner whose keeper
/// already holds the lock fails at once, naming that keeper, instead of
/// joining beside itself with a second keeper.
#[test]
fn a_second_shared_acquire_by_the_same_owner_fails_at_once() {
    let s = Scratch::new();
    let owner = Sleeper::new();
    s.cmd(&["acquire", "-s", "--owner", &owner.pid()])
        .assert()
        .success();
    let keeper = record(&s.lock())["pid"].clone();
    let out = output_or_kill(s.cmd(&["acquire", "-s", "--owner", &owner.pid()]));
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("already held by this owner")
            && stderr.contains(&format!("keeper pid {keeper}")),
        "{stderr}"
    );
    assert_eq!(record_lines(&s.lock()).len(), 1, "no second holder joined");
    // Another owner still joins.
    let other = Sleeper::new();
    s.cmd(&["acquire", "-s", "--owner", &other.pid()])
        .assert()
        .success();
    assert_eq!(record_lines(&s.lock()).len(), 2);
    s.cmd(&["release", "--owner", &owner.pid()])
        .assert()
        .success();
    s.cmd(&["release", "--owner", &other.pid()])
        .assert()
        .success();
    assert!(!s.lock().exists());
}

/// Writer starvation (issue 20.5): two overlapping loops of `run -s` keep
/// a shared holder in place at every moment. Once an exclusive taker waits,
/// new shared takers queue behind it, so it gets the lock (its `-w 8` is a
/// hang guard, not a timing assertion).
#[test]
fn an_exclusive_waiter_is_not_starved_by_overlapping_shared_loops() {
    let s = Scratch::new();
    let stop = s.path("stop");
    let got = s.path("got");
    let script = format!(
        r#"while [ ! -e {stop} ]; do
            {bin} --path {lock} run -s -- sleep 0.4 || exit 1
        done"#,
        stop = stop.display(),
        bin = bin().display(),
        lock = s.lock().display(),
    );
    let shared_loop = |name: &str| {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(s.path(&format!("{name}.err"))).unwrap());
        Group::spawn(cmd, name)
    };
    let mut first = shared_loop("first");
    wait_until("the first shared holder", || s.lock().exists());
    let mut second = shared_loop("second");
    wait_until("two shared holders at once", || {
        s.lock().exists() && holder_pids(&s).len() == 2
    });
    let out = output_or_kill({
        let mut cmd = s.cmd(&["run", "-w", "8", "--", "touch"]);
        cmd.arg(&got);
        cmd
    });
    fs::write(&stop, "").unwrap();
    assert!(first.wait().success());
    assert!(second.wait().success());
    assert!(
        out.status.success(),
        "{}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(got.exists());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr
            .lines()
            .all(|l| l.starts_with("resin-lock: waiting for ")),
        "{stderr}"
    );
    for name in ["first", "second"] {
        let text = fs::read_to_string(s.path(&format!("{name}.err"))).unwrap();
        assert!(
            text.lines()
                .all(|l| l.starts_with("resin-lock: waiting for ")),
            "{name}: {text}"
        );
    }
    assert_eq!(
        s.leftovers(&["stop", "got", "first.err", "second.err"]),
        Vec::<String>::new()
    );
}
