//! File system faults: full, read-only, the lock directory removed under a
//! waiter.

use std::fs;
use std::io::{BufRead, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::*;

/// A record nobody flocks: a stale resin-lock lock.
const STALE_RECORD: &str = r#"{"tool":"resin-lock","v":1,"mode":"acquire","pid":2147483000,"owner":2147483000,"start":"2026-01-01T00:00:00Z","cmd":["x"]}"#;

/// In a private mount namespace: a tmpfs on DIR (mount options `$OPTS`),
/// `$SETUP`, then `resin-lock ARGS…`; the listing of DIR goes to
/// `listing`, the lock's content (if any) to `after`. Exits as resin-lock did.
const FAULT: &str = r#"set -u
mount -t tmpfs -o "$OPTS" tmpfs "$DIR" || exit 100
eval "$SETUP" || exit 101
"$@"
rc=$?
ls -A "$DIR" > "$OUT/listing"
if [ -e "$DIR/updates.lock" ]; then cat "$DIR/updates.lock" > "$OUT/after"; fi
exit $rc"#;

struct Fault {
    s: Scratch,
}

impl Fault {
    fn new() -> Fault {
        let s = Scratch::new();
        fs::create_dir(s.path("mnt")).unwrap();
        Fault { s }
    }

    fn dir(&self) -> PathBuf {
        self.s.path("mnt")
    }

    fn lock(&self) -> PathBuf {
        self.dir().join("updates.lock")
    }

    /// `resin-lock --path DIR/updates.lock ARGS…` on a fresh tmpfs.
    fn run(&self, opts: &str, setup: &str, args: &[&str]) -> assert_cmd::assert::Assert {
        let _ = fs::remove_file(self.s.path("after"));
        let mut cmd = Command::new("unshare");
        cmd.args(["-m", "sh", "-c", FAULT, "sh", BIN, "--path"])
            .arg(self.lock())
            .args(args)
            .env("OPTS", opts)
            .env("SETUP", setup)
            .env("DIR", self.dir())
            .env("OUT", self.s.dir.path())
            .env("L", self.lock())
            .env("RECORD", STALE_RECORD)
            .env_remove("RESIN_LOCK_PATH")
            .stdin(Stdio::null());
        assert_cmd::Command::from_std(cmd)
            .timeout(hang_guard())
            .assert()
    }

    fn listing(&self) -> Vec<String> {
        fs::read_to_string(self.s.path("listing"))
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    fn after(&self) -> Option<String> {
        fs::read_to_string(self.s.path("after")).ok()
    }
}

/// stderr is exactly one line: `resin-lock: …`, naming `what` and `path`.
fn one_clear_line(stderr: &[u8], what: &str, path: &Path) {
    let text = String::from_utf8_lossy(stderr);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 1, "one line: {text:?}");
    assert!(lines[0].starts_with("resin-lock: "), "{text:?}");
    assert!(lines[0].contains(what), "says {what:?}: {text:?}");
    assert!(
        lines[0].contains(path.to_str().unwrap()),
        "names {}: {text:?}",
        path.display()
    );
}

#[test]
fn full_file_system_is_exit_73_and_leaves_nothing() {
    let f = Fault::new();
    let dir = f.dir();
    let started = f.s.path("started");
    let fill = r#"dd if=/dev/zero of="$DIR/fill" bs=1k 2>/dev/null; true"#;
    let stale_then_fill = r#"printf '%s\n' "$RECORD" > "$L" && { dd if=/dev/zero of="$DIR/fill" bs=1k 2>/dev/null; true; }"#;
    let touch = started.to_str().unwrap();
    // No room for the record, and no inode for the file.
    for (opts, setup) in [
        ("size=4k", fill),
        ("size=64k,nr_inodes=2", ": > \"$DIR/fill\""),
    ] {
        for args in [
            &["acquire", "-n"][..],
            &["acquire"][..],
            &["run", "--", "touch", touch][..],
        ] {
            let out = f.run(opts, setup, args).code(73);
            one_clear_line(&out.get_output().stderr, "no space left", &dir);
            assert_eq!(
                f.listing(),
                ["fill"],
                "{opts} {args:?}: nothing left behind"
            );
            assert!(!started.exists(), "{args:?}: no command started");
        }
        f.run(opts, setup, &["status"])
            .code(0)
            .stdout(contains("free"));
        f.run(opts, setup, &["release"]).code(0);
    }
    // A stale lock on a full file system: the takeover fails before it
    // removes anything, so the stale lock (and the block on updates) stays.
    let out = f
        .run("size=8k", stale_then_fill, &["acquire", "-n"])
        .code(73);
    one_clear_line(&out.get_output().stderr, "no space left", &dir);
    assert_eq!(f.listing(), ["fill", "updates.lock"]);
    assert_eq!(f.after().as_deref(), Some(&*format!("{STALE_RECORD}\n")));
}

#[test]
fn read_only_file_system_is_exit_73_and_leaves_nothing() {
    let f = Fault::new();
    let dir = f.dir();
    let started = f.s.path("started");
    let touch = started.to_str().unwrap();
    let ro = r#"mount -o remount,ro "$DIR""#;
    let stale_ro = r#"printf '%s\n' "$RECORD" > "$L" && mount -o remount,ro "$DIR""#;
    for args in [
        &["acquire", "-n"][..],
        &["acquire"][..],
        &["run", "--", "touch", touch][..],
    ] {
        let out = f.run("size=64k", ro, args).code(73);
        one_clear_line(&out.get_output().stderr, "read-only file system", &dir);
        assert_eq!(f.listing(), Vec::<String>::new(), "{args:?}");
        assert!(!started.exists(), "{args:?}: no command started");
    }
    f.run("size=64k", ro, &["status"]).code(0);
    f.run("size=64k", ro, &["release"]).code(0);
    // A stale lock on a read-only file system: neither taken over nor
    // removed, and reported as it is.
    for args in [&["acquire", "-n"][..], &["run", "--", "touch", touch][..]] {
        let out = f.run("size=64k", stale_ro, args).code(73);
        one_clear_line(&out.get_output().stderr, "read-only file system", &dir);
        assert_eq!(f.listing(), ["updates.lock"]);
        assert_eq!(f.after().as_deref(), Some(&*format!("{STALE_RECORD}\n")));
    }
    f.run("size=64k", stale_ro, &["status"])
        .code(1)
        .stdout(contains("stale"));
    let out = f.run("size=64k", stale_ro, &["release"]).code(71);
    one_clear_line(&out.get_output().stderr, "Read-only file system", &f.lock());
    assert_eq!(f.after().as_deref(), Some(&*format!("{STALE_RECORD}\n")));
}

#[test]
fn lock_directory_removed_under_a_waiter_is_exit_73() {
    let s = Scratch::new();
    let dir = s.path("locks");
    let lock = dir.join("updates.lock");
    let started = s.path("started");
    let touch = started.to_str().unwrap();
    for (how, args) in [
        ("removed", &["acquire"][..]),
        ("removed", &["run", "--", "touch", touch][..]),
        ("renamed", &["acquire"][..]),
    ] {
        fs::create_dir(&dir).unwrap();
        let (mut owner, owner_stdin) = owner();
        resin_lock()
            .arg("--path")
            .arg(&lock)
            .args(["acquire", "--owner", &owner.id().to_string()])
            .assert()
            .success();
        let keeper = record(&lock)["pid"].as_i64().unwrap() as i32;
        let (mut waiter, mut stderr) = waiting(&[lock.as_path()], None, args);
        if how == "removed" {
            // Stopped, so it cannot take the lock between the two removals.
            kill(Pid::from_raw(waiter.pid()), Signal::SIGSTOP).unwrap();
            fs::remove_file(&lock).unwrap();
            fs::remove_dir(&dir).unwrap();
            kill(Pid::from_raw(waiter.pid()), Signal::SIGCONT).unwrap();
        } else {
            // One atomic step: the lock and its directory vanish together.
            fs::rename(&dir, s.path("gone")).unwrap();
        }
        let status = waiter.wait();
        let mut rest = String::new();
        stderr.read_to_string(&mut rest).unwrap();
        assert_eq!(status.code(), Some(73), "{how} {args:?}: {rest}");
        let errors: Vec<&str> = rest
            .lines()
            .filter(|l| !l.contains("resin-lock: lock paths"))
            .collect();
        one_clear_line(errors.join("\n").as_bytes(), "does not exist", &dir);
        assert!(!dir.exists(), "{how} {args:?}: the directory stays gone");
        assert!(!started.exists(), "{how} {args:?}: no command started");
        if how == "removed" {
            // The holder's keeper still holds the unlinked file: `release`
            // stops it, though the directory is gone too.
            resin_lock()
                .arg("--path")
                .arg(&lock)
                .args(["release", "--owner", &owner.id().to_string()])
                .assert()
                .success()
                .stderr(contains("removed by someone else"));
            wait_gone(keeper, "the displaced keeper");
        } else {
            fs::remove_dir_all(s.path("gone")).unwrap();
        }
        assert_eq!(s.leftovers(&[]), Vec::<String>::new(), "{how} {args:?}");
        drop(owner_stdin);
        owner.wait().unwrap();
        wait_gone(keeper, "the keeper");
    }
}

#[test]
fn detected_lock_directory_removed_under_a_waiter_is_recreated() {
    // A detected path's missing directory is created (SPEC section 3), also
    // when it disappears while we wait.
    let root = tempfile::tempdir().unwrap();
    let root = root.path();
    let dir = root.join("tmp/resin");
    let lock = dir.join("resin-updates.lock");
    let on_root = |args: &[&str]| {
        let mut cmd = resin_lock();
        cmd.arg("--root").arg(root).args(args);
        cmd
    };
    let (mut owner, owner_stdin) = owner();
    on_root(&["acquire", "--owner", &owner.id().to_string()])
        .assert()
        .success();
    let keeper = record(&lock)["pid"].as_i64().unwrap() as i32;
    let (mut waiter, mut stderr) = waiting(&[], Some(root), &["acquire"]);
    kill(Pid::from_raw(waiter.pid()), Signal::SIGSTOP).unwrap();
    fs::remove_file(&lock).unwrap();
    fs::remove_dir(&dir).unwrap();
    kill(Pid::from_raw(waiter.pid()), Signal::SIGCONT).unwrap();
    // SPEC 2a: the removed lock is still held by its keeper, so the waiter
    // goes on waiting, and says why.
    let mut line = String::new();
    while !line.contains("its lock file was removed") {
        line.clear();
        assert!(
            stderr.read_line(&mut line).unwrap() > 0,
            "the waiter ended early"
        );
    }
    assert!(
        !lock.exists(),
        "no lock while the displaced keeper holds it"
    );
    // Its owner ends: the keeper lets go, and the waiter takes the lock.
    drop(owner_stdin);
    owner.wait().unwrap();
    wait_gone(keeper, "the displaced keeper");
    assert!(waiter.wait().success());
    assert_eq!(record(&lock)["mode"], "acquire", "the waiter holds it");
    assert_ne!(record(&lock)["pid"], keeper);
    on_root(&["release"]).assert().success();
    assert!(!lock.exists());
    assert_eq!(
        fs::read_dir(&dir).unwrap().count(),
        0,
        "nothing left behind"
    );
}
