//! What device fleets ask for (issue 13): a reason stored with the lock and
//! shown wherever its holder is named, `status --health` for a Docker
//! HEALTHCHECK, and `--max-hold`, a lifetime for the lock.

use std::fs;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use crate::common::*;

/// A reason with a control sequence, as a careless script might pass it.
const REASON: &str = "flashing firmware\u{1b}[2J v2";
/// How every line shows it: escaped, on one line.
const SHOWN: &str = r"reason: flashing firmware\u{1b}[2J v2";

/// Read `stderr` until a line contains `what`; that line.
fn read_until(stderr: &mut impl BufRead, what: &str) -> String {
    let mut line = String::new();
    loop {
        line.clear();
        assert!(
            stderr.read_line(&mut line).unwrap() > 0,
            "ended before saying {what:?}"
        );
        if line.contains(what) {
            return line;
        }
    }
}

#[test]
fn a_reason_is_stored_and_shown_by_status_verbose_and_a_waiter() {
    let s = Scratch::new();
    let owner = Sleeper::new();
    s.cmd(&["-v", "acquire", "--owner", &owner.pid(), "--reason", REASON])
        .assert()
        .success()
        .stderr(contains(format!("(reason: {})", &SHOWN[8..])));
    assert_eq!(record(&s.lock())["reason"], REASON);

    let out = s.cmd(&["status"]).output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains(SHOWN), "{text}");
    assert!(
        !text.contains('\u{1b}'),
        "control characters escaped: {text}"
    );
    let json = status_json(&s);
    assert_eq!(json["locks"][0]["reason"], REASON, "{json}");
    assert!(json["locks"][0]["held_for_s"].is_u64(), "{json}");

    let mut waiter = spawn_quiet(s.cmd(&["run", "--", "true"]));
    let mut stderr = BufReader::new(waiter.stderr.take().unwrap());
    let line = read_until(&mut stderr, "waiting for");
    assert!(
        line.contains(SHOWN),
        "the waiting line names the reason: {line}"
    );
    s.cmd(&["release", "--owner", &owner.pid()])
        .assert()
        .success();
    assert!(wait_guarded(&mut waiter, "the waiter").success());
    let json = status_json(&s);
    assert_eq!(json["locks"][0]["reason"], serde_json::Value::Null);
    assert_eq!(json["locks"][0]["held_for_s"], serde_json::Value::Null);
}

#[test]
fn a_long_reason_is_cut_and_marked_and_the_record_stays_ours() {
    let s = Scratch::new();
    let long = "why ".repeat(5_000);
    s.cmd(&["run", "--reason", &long, "--", "true"])
        .assert()
        .success();
    let owner = Sleeper::new();
    s.cmd(&["acquire", "--owner", &owner.pid(), "--reason", &long])
        .assert()
        .success();
    let bytes = fs::read(s.lock()).unwrap();
    assert!(bytes.len() <= 4096, "{}", bytes.len());
    let record = record(&s.lock());
    let reason = record["reason"].as_str().unwrap();
    assert!(
        reason.starts_with("why why ") && reason.ends_with('…'),
        "{reason}"
    );
    assert!(reason.len() <= 256, "{}", reason.len());
    assert_eq!(record["reason_cut"], true);
    let json = status_json(&s);
    assert_eq!(
        json["locks"][0]["held_by"], "resin-lock",
        "still ours: {json}"
    );
}

/// `status --health`: exit status and the line that says why.
fn health(s: &Scratch, extra: &[&str]) -> (i32, String) {
    let out = s
        .cmd(&[&["status", "--health"][..], extra].concat())
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(text.lines().count(), 1, "one line: {text}");
    (out.status.code().unwrap(), text)
}

#[test]
fn health_is_good_while_a_lock_is_free_or_held_for_a_reason() {
    let s = Scratch::new();
    let (code, line) = health(&s, &[]);
    assert_eq!(code, 0, "{line}");
    assert!(
        line.starts_with("healthy: no update lock is held"),
        "{line}"
    );

    let owner = Sleeper::new();
    s.cmd(&["acquire", "--owner", &owner.pid(), "--reason", "backup"])
        .assert()
        .success();
    let (code, line) = health(&s, &[]);
    assert_eq!(code, 0, "{line}");
    assert!(
        line.starts_with("healthy: ") && line.contains("reason: backup"),
        "{line}"
    );
    // Held well within a generous lifetime: still healthy.
    assert_eq!(health(&s, &["--max-hold", "1h"]).0, 0);
    // Plain status keeps its meaning: a lock file exists.
    s.cmd(&["status"]).assert().code(1);
    // -q: the exit status alone.
    s.cmd(&["-q", "status", "--health"])
        .assert()
        .code(0)
        .stdout("");
    s.cmd(&["release", "--owner", &owner.pid()])
        .assert()
        .success();

    // The supervisor's own lock (uid 65534): it is updating.
    fs::write(s.lock(), b"").unwrap();
    std::os::unix::fs::lchown(s.lock(), Some(65534), Some(65534)).unwrap();
    let (code, line) = health(&s, &["--max-hold", "0"]);
    assert_eq!(code, 0, "{line}");
    assert!(line.contains("the supervisor"), "{line}");
}

#[test]
fn health_is_bad_when_a_lock_blocks_updates_for_nothing() {
    let s = Scratch::new();
    let keeper = acquire_and_kill_keeper(&s);
    let (code, line) = health(&s, &[]);
    assert_eq!(code, 1, "{line}");
    assert!(line.starts_with("unhealthy: "), "{line}");
    assert!(line.contains("stale (holder exited)"), "{line}");
    assert!(line.contains(&format!("keeper pid {keeper}")), "{line}");
    s.cmd(&["-q", "status", "--health"])
        .assert()
        .code(1)
        .stdout("");
    fs::remove_file(s.lock()).unwrap();

    // A record from a previous boot, whose holder is long gone.
    let old = serde_json::json!({
        "tool": "resin-lock", "v": 1, "mode": "run", "pid": 4242, "owner": 4242,
        "start": "2020-01-01T00:00:00Z", "boot_id": "00000000-0000-4000-8000-000000000000",
        "pid_ns": 0, "uid": 0, "cmd": ["./flash.sh"], "reason": "old",
    });
    fs::write(s.lock(), old.to_string()).unwrap();
    let (code, line) = health(&s, &[]);
    assert_eq!(code, 1, "{line}");
    assert!(line.contains("stale (previous boot)"), "{line}");
    fs::remove_file(s.lock()).unwrap();

    // Held by a live holder, but longer than --max-hold.
    let owner = Sleeper::new();
    s.cmd(&["acquire", "--owner", &owner.pid()])
        .assert()
        .success();
    let mut last = String::new();
    wait_until("the lock to be older than --max-hold 1ms", || {
        let (code, line) = health(&s, &["--max-hold", "1ms"]);
        last = line;
        code == 1
    });
    assert!(last.starts_with("unhealthy: "), "{last}");
    assert!(last.contains("longer than --max-hold 1ms"), "{last}");
    let json: serde_json::Value = serde_json::from_slice(
        &s.cmd(&["status", "--json", "--health", "--max-hold", "1ms"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    assert_eq!(json["healthy"], false, "{json}");
}

#[test]
fn the_record_and_status_show_the_lifetime() {
    let s = Scratch::new();
    let owner = Sleeper::new();
    s.cmd(&["acquire", "--owner", &owner.pid(), "--max-hold", "1h"])
        .assert()
        .success();
    assert_eq!(record(&s.lock())["max_hold_ms"], 3_600_000);
    s.cmd(&["status"])
        .assert()
        .code(1)
        .stdout(contains("--max-hold 1h"));
    s.cmd(&["release", "--owner", &owner.pid()])
        .assert()
        .success();
}

/// `run --max-hold`: the lock goes (its file and its flock: a waiter gets
/// it while CMD still runs), CMD goes on, and `run` exits as CMD did.
#[test]
fn run_lets_go_at_max_hold_and_its_command_goes_on() {
    let s = Scratch::new();
    let taken = s.path("taken");
    let marker = s.path("marker");
    // CMD runs until the waiter's command has run under the lock: if the
    // lock were not let go of (file and flock), neither would ever end.
    let script = format!(
        "while [ ! -e {t} ]; do sleep 0.01; done; echo went-on > {m}; exit 7",
        t = taken.display(),
        m = marker.display()
    );
    let mut holder = s.cmd(&["run", "--reason", "job", "--max-hold", "2s", "--"]);
    holder
        .args(["sh", "-c", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    // Groups: if the test fails, nothing it started outlives it.
    let mut holder = Group::spawn(holder, "run --max-hold");
    let mut holder_err = BufReader::new(holder.child.stderr.take().unwrap());
    wait_for_file(&s.lock());
    let mut waiter = s.cmd(&["run", "--", "touch"]);
    waiter
        .arg(&taken)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut waiter = Group::spawn(waiter, "the waiter");
    let waiter_err = waiter.child.stderr.take().unwrap();
    let line = read_until(&mut holder_err, "(--max-hold)");
    assert!(line.contains(&s.lock().display().to_string()), "{line}");
    assert!(line.contains("sh goes on unprotected"), "{line}");
    assert!(waiter.wait().success());
    // The waiter says who held the lock, and nothing else.
    let said = std::io::read_to_string(waiter_err).unwrap();
    assert!(
        said.lines().count() == 1 && said.contains("waiting for") && said.contains("reason: job"),
        "{said}"
    );
    let status = holder.wait();
    assert_eq!(status.code(), Some(7), "run exits as CMD did");
    assert_eq!(fs::read_to_string(&marker).unwrap().trim(), "went-on");
    assert!(!s.lock().exists());
    assert!(s.leftovers(&["taken", "marker"]).is_empty());
}

/// `acquire --max-hold`: the keeper lets go, says so on the owner's
/// stderr, and the owner goes on.
#[test]
fn the_keeper_lets_go_at_max_hold_and_tells_the_owner() {
    let s = Scratch::new();
    let log = s.path("owner.err");
    let owner = Command::new("sleep")
        .arg("1000")
        .stdin(Stdio::null())
        .stderr(fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    // Killed also when the test fails.
    let owner = Owner(owner);
    let pid = owner.0.id().to_string();
    s.cmd(&["acquire", "--owner", &pid, "--max-hold", "100ms"])
        .assert()
        .success();
    wait_until("the keeper to let go", || !s.lock().exists());
    wait_until("the keeper's line", || {
        fs::read_to_string(&log).is_ok_and(|text| text.contains("(--max-hold)"))
    });
    let text = fs::read_to_string(&log).unwrap();
    assert!(text.contains(&s.lock().display().to_string()), "{text}");
    assert!(
        text.contains(&format!("the owner (pid {pid}) goes on unprotected")),
        "{text}"
    );
    assert!(alive(owner.0.id() as i32), "the owner goes on");
    s.cmd(&["status"]).assert().code(0);
}

struct Owner(std::process::Child);

impl Drop for Owner {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn health_never_calls_a_lock_released_normally_stale() {
    // A holder loops `run -- true`: its lock appears and is released all
    // the time. Every status that reads a record just before its release
    // must not call it stale (issue 19.5: 29 of 3,912 calls did).
    let s = Scratch::new();
    let stop = s.path("stop");
    let counted = s.path("rounds");
    let script = r#"n=0; while [ ! -e "$1" ]; do "$2" -q --path "$3" run -- true || exit 1; n=$((n+1)); done; echo $n > "$4""#;
    let mut holder = Group::spawn(
        {
            let mut cmd = Command::new("sh");
            cmd.args(["-c", script, "sh"])
                .arg(&stop)
                .arg(bin())
                .arg(s.lock())
                .arg(&counted)
                .stdin(Stdio::null());
            cmd
        },
        "the run -- true loop",
    );
    let (mut held, mut stale) = (0, Vec::new());
    for call in 0..rounds(2500) {
        let args: &[&str] = if call % 4 == 3 {
            &["status"]
        } else {
            &["status", "--health"]
        };
        let out = s.cmd(args).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.stderr.is_empty(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        if text.contains("stale") || (args.len() == 2 && out.status.code() != Some(0)) {
            stale.push(text);
        } else if text.contains("held by resin-lock run") {
            held += 1;
        }
    }
    fs::write(&stop, "").unwrap();
    assert!(holder.wait().success());
    let loops: usize = fs::read_to_string(&counted)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(
        loops > 0 && held > 0,
        "the holder ran {loops} times, seen held {held} times"
    );
    eprintln!(
        "{} status calls, {held} saw the lock held, the holder ran {loops} times",
        rounds(2500)
    );
    assert!(
        stale.is_empty(),
        "{} stale answers: {:?}",
        stale.len(),
        &stale[..stale.len().min(3)]
    );
}

#[test]
fn health_of_a_leftover_foreign_file_says_nobody_can_tell() {
    let s = Scratch::new();
    // An empty file, lockfile(1)'s `0`, a directory: nobody flocks them,
    // so nobody can tell whether anyone still uses them. Foreign locks are
    // never stale (exit 0), but the line must not call them healthy.
    for make in ["empty", "0", "dir"] {
        match make {
            "dir" => fs::create_dir(s.lock()).unwrap(),
            content => fs::write(s.lock(), content.trim_start_matches("empty")).unwrap(),
        }
        let (code, line) = health(&s, &[]);
        assert_eq!(code, 0, "{make}: {line}");
        assert!(line.starts_with("unknown: "), "{make}: {line}");
        assert!(!line.contains("healthy"), "{make}: {line}");
        assert!(
            line.contains("nobody can tell whether anyone still uses it"),
            "{make}: {line}"
        );
        let json: serde_json::Value = serde_json::from_slice(
            &s.cmd(&["status", "--json", "--health"])
                .output()
                .unwrap()
                .stdout,
        )
        .unwrap();
        assert_eq!(
            json.get("healthy"),
            Some(&serde_json::Value::Null),
            "{make}: {json}"
        );
        assert!(json["health"].as_str().unwrap().starts_with("unknown: "));
        if make == "dir" {
            fs::remove_dir(s.lock()).unwrap();
        } else {
            fs::remove_file(s.lock()).unwrap();
        }
    }

    // The same empty file flocked by flock(1): someone uses it.
    let ready = s.path("ready");
    let mut flock = Group::spawn(
        {
            let mut cmd = Command::new("flock");
            cmd.arg(s.lock())
                .args(["sh", "-c", "touch \"$0\"; exec sleep 1000"])
                .arg(&ready)
                .stdin(Stdio::null());
            cmd
        },
        "flock(1)",
    );
    wait_for_file(&ready);
    let (code, line) = health(&s, &[]);
    assert_eq!(code, 0, "{line}");
    assert!(line.starts_with("healthy: "), "{line}");
    assert!(line.contains("flocked by a live process"), "{line}");
    drop(flock.child.kill());
    flock.wait();
}
