//! Device tags beside the lock (issue 29): the note of what was sent stays
//! in the lock's directory whatever the service name or another uid puts
//! there; a failing API is one line per hold, in the log `acquire 2>>log`
//! names; and a tag left `held` by a hold before a reboot is put right.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};

use crate::common::*;
use crate::supervisor::{Answer, FakeSupervisor, go_script, run, scratch_with_api, stderr, tag_of};

/// `program ARGS…` as uid/gid 1000: another user of a world-writable
/// lock directory.
fn as_user_1000(program: &str, args: &[&str]) {
    let status = Command::new("setpriv")
        .args(["--reuid=1000", "--regid=1000", "--clear-groups", program])
        .args(args)
        .status()
        .unwrap();
    assert!(status.success(), "{program} {args:?} as uid 1000");
}

/// A scratch directory another uid can walk into.
fn open_scratch() -> Scratch {
    let s = Scratch::new();
    fs::set_permissions(s.dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    s
}

fn sticky_dir(path: &std::path::Path) {
    fs::create_dir_all(path).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(0o1777)).unwrap();
}

/// Every name under `dir`, recursively, relative to it.
fn names_under(dir: &std::path::Path) -> Vec<String> {
    let mut found = Vec::new();
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(at) = dirs.pop() {
        for entry in fs::read_dir(&at).unwrap() {
            let path = entry.unwrap().path();
            found.push(path.strip_prefix(dir).unwrap().display().to_string());
            if path.symlink_metadata().unwrap().is_dir() {
                dirs.push(path);
            }
        }
    }
    found.sort();
    found
}

#[test]
fn tags_a_slash_in_the_service_name_keeps_the_note_in_the_lock_directory() {
    let s = open_scratch();
    let locks = s.path("locks");
    sticky_dir(&locks);
    let victim = s.path("victim");
    fs::create_dir(&victim).unwrap();
    // uid 1000 makes the directory that the service name walks through.
    as_user_1000("mkdir", &[locks.join("update-lock.a").to_str().unwrap()]);
    let fake = FakeSupervisor::answering(vec![Answer::Tags], None);
    let (go, script) = go_script(&s);
    let lock = locks.join("updates.lock");
    let mut cmd = resin_lock();
    cmd.arg("--path")
        .arg(&lock)
        .args([
            "run",
            "--tag",
            "--tag-after",
            "0",
            "--",
            "sh",
            "-c",
            &script,
        ])
        .env("BALENA_SUPERVISOR_ADDRESS", &fake.address)
        .env("BALENA_SUPERVISOR_API_KEY", crate::supervisor::KEY)
        .env("BALENA_SERVICE_NAME", "a/../../victim/owned")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut holder = Group::spawn(cmd, "run --tag");
    let (key, value) = tag_of(&fake.request());
    assert!(value.starts_with("held since"), "{value}");
    fs::write(&go, "").unwrap();
    assert_eq!(holder.wait().code(), Some(3));
    assert!(tag_of(&fake.request()).1.starts_with("free since"));
    // The note is one file of the lock directory, and nothing else moved.
    assert_eq!(names_under(&victim), Vec::<String>::new());
    assert_eq!(key, "update-lock.a_.._.._victim_owned");
    assert_eq!(
        names_under(&locks),
        ["update-lock.a", "update-lock.a_.._.._victim_owned.tag"]
    );
    let note: serde_json::Value =
        serde_json::from_slice(&fs::read(locks.join(format!("{key}.tag"))).unwrap()).unwrap();
    assert!(note["value"].as_str().unwrap().starts_with("free since"));
}

#[test]
fn tags_health_never_writes_through_a_lock_directory_planted_as_a_symlink() {
    let s = open_scratch();
    let root = s.path("root");
    sticky_dir(&root.join("tmp"));
    // Someone else's directory, with a note that says `held`.
    let victim = s.path("victim");
    fs::create_dir(&victim).unwrap();
    let theirs = victim.join("update-lock.main.tag");
    let said = r#"{"key":"update-lock.main","value":"held since 2026-01-01T00:00:00Z","at":"2026-01-01T00:00:00Z","result":"accepted (HTTP 202)"}"#;
    fs::write(&theirs, said).unwrap();
    // uid 1000 puts a symlink where the detected lock directory goes.
    as_user_1000(
        "ln",
        &[
            "-s",
            victim.to_str().unwrap(),
            root.join("tmp/resin").to_str().unwrap(),
        ],
    );
    let fake = FakeSupervisor::start(Answer::TagsSaying(
        r#"{"status":"success","tags":[{"id":1,"name":"update-lock.main","value":"held since 2026-01-01T00:00:00Z"}]}"#,
    ));
    let mut cmd = resin_lock();
    cmd.arg("--root")
        .arg(&root)
        .args(["status", "--health"])
        .env("BALENA_SUPERVISOR_ADDRESS", &fake.address)
        .env("BALENA_SUPERVISOR_API_KEY", crate::supervisor::KEY)
        .env("RESIN_LOCK_TAGS", "1");
    let out = run(cmd);
    // With openat2 (RESOLVE_IN_ROOT) the symlink resolves inside the root,
    // where nothing is: free, 0. Without it (qemu-user has no openat2) a
    // symlink below the root is refused: 73, naming it. Either way nothing
    // is written through it.
    match out.status.code() {
        Some(0) => {}
        Some(73) if is_emulated() => {
            assert!(stderr(&out).contains("is a symlink"), "{}", stderr(&out))
        }
        code => panic!("exit {code:?}: {}", stderr(&out)),
    }
    assert_eq!(
        fs::read_to_string(&theirs).unwrap(),
        said,
        "their note is untouched"
    );
    assert_eq!(names_under(&victim), ["update-lock.main.tag"]);
    fake.assert_no_request();
}

/// What a supervisor that failed answers every request with.
const BROKEN: Answer = Answer::Status(500, r#"{"status":"failed","message":"boom"}"#);

#[test]
fn tags_a_failing_api_is_one_line_per_run() {
    let s = Scratch::new();
    let fake = FakeSupervisor::start(BROKEN);
    let (go, script) = go_script(&s);
    let mut cmd = scratch_with_api(
        &s,
        &fake.address,
        &[
            "run",
            "--tag",
            "--tag-after",
            "0.1",
            "--",
            "sh",
            "-c",
            &script,
        ],
    );
    cmd.stdout(Stdio::null()).stderr(Stdio::piped());
    let mut holder = Group::spawn(cmd, "run --tag");
    // The read back (no note yet), then `held`: both fail.
    let mut asked = Vec::new();
    while asked.last() != Some(&"PATCH".to_owned()) {
        asked.push(fake.request().method);
    }
    fs::write(&go, "").unwrap();
    let err = holder.child.stderr.take().unwrap();
    assert_eq!(holder.wait().code(), Some(3));
    // `free` was sent too, and failed, and was not said again.
    let free = fake.request();
    assert!(tag_of(&free).1.starts_with("free since"), "{free:?}");
    let err = std::io::read_to_string(err).unwrap();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert_eq!(asked, ["GET", "PATCH"]);
    assert!(
        err.starts_with("resin-lock: device tag update-lock.main: GET http://127.0.0.1:")
            && err.contains("HTTP 500")
            && err.trim_end().ends_with("the lock is unaffected"),
        "{err}"
    );
}

#[test]
fn tags_the_keepers_warning_follows_acquire_into_its_log() {
    let s = Scratch::new();
    let fake = FakeSupervisor::start(BROKEN);
    let log = s.path("acquire.log");
    fs::write(&log, "before\n").unwrap();
    let owner_err = s.path("owner.err");
    let owner = Command::new("sleep")
        .arg("1000")
        .stdin(Stdio::null())
        .stderr(fs::File::create(&owner_err).unwrap())
        .spawn()
        .unwrap();
    let owner = Killed(owner);
    let pid = owner.0.id().to_string();
    // `acquire 2>>log`, as a script writes it.
    let mut cmd = scratch_with_api(
        &s,
        &fake.address,
        &["acquire", "--tag", "--tag-after", "0", "--owner", &pid],
    );
    cmd.stderr(fs::OpenOptions::new().append(true).open(&log).unwrap());
    assert!(cmd.status().unwrap().success());
    wait_until("the keeper's warning in the log", || {
        fs::read_to_string(&log).is_ok_and(|text| text.contains("device tag"))
    });
    let text = fs::read_to_string(&log).unwrap();
    assert!(
        text.starts_with("before\nresin-lock: device tag update-lock.main: "),
        "{text}"
    );
    assert_eq!(text.lines().count(), 2, "{text}");
    let out = run(scratch_with_api(
        &s,
        &fake.address,
        &["release", "--owner", &pid],
    ));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        fs::read_to_string(&owner_err).unwrap(),
        "",
        "not on the owner's stderr"
    );
}

struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// What the supervisor says after a reboot that cleared /tmp: the tag a
/// hold before the reboot published, never set `free`.
const HELD_BEFORE_REBOOT: &str = r#"{"status":"success","tags":[{"id":3,"name":"other","value":"x"},{"id":7,"name":"update-lock.main","value":"held since 2026-01-01T00:00:00Z; by run: ./flash.sh"}]}"#;

/// The `PATCH`es the fake got, once the command that sent them ended.
fn patches(fake: &FakeSupervisor) -> Vec<String> {
    let mut values = Vec::new();
    while let Ok(request) = fake.received_now() {
        values.push(tag_of(&request).1);
    }
    values
}

#[test]
fn tags_a_short_run_after_a_reboot_puts_a_stale_held_right() {
    let s = Scratch::new();
    let fake = FakeSupervisor::start(Answer::TagsSaying(HELD_BEFORE_REBOOT));
    let out = run(scratch_with_api(
        &s,
        &fake.address,
        &["run", "--tag", "--", "true"],
    ));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stderr(&out), "");
    let read = fake.reads.try_recv().expect("the tag was read back");
    assert_eq!(read.query, format!("apikey={}", crate::supervisor::KEY));
    let sent = patches(&fake);
    assert!(
        sent.last().is_some_and(|v| v.starts_with("free since 20")),
        "{sent:?}"
    );
    // Noted: the next hold neither reads nor sends anything.
    let out = run(scratch_with_api(
        &s,
        &fake.address,
        &["run", "--tag", "--", "true"],
    ));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(fake.reads.try_recv().is_err());
    fake.assert_no_request();
}

#[test]
fn tags_health_after_a_reboot_puts_a_stale_held_right_once() {
    let s = Scratch::new();
    let fake = FakeSupervisor::start(Answer::TagsSaying(HELD_BEFORE_REBOOT));
    let health = || {
        let mut cmd = scratch_with_api(&s, &fake.address, &["status", "--health"]);
        cmd.env("RESIN_LOCK_TAGS", "1");
        let out = run(cmd);
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        assert_eq!(stderr(&out), "");
    };
    health();
    assert!(fake.reads.try_recv().is_ok(), "the tag was read back");
    let sent = patches(&fake);
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert!(sent[0].starts_with("free since 20"), "{sent:?}");
    health();
    assert!(fake.reads.try_recv().is_err(), "read once");
    fake.assert_no_request();
}

#[test]
fn tags_health_reads_back_once_and_leaves_a_free_tag_alone() {
    let s = Scratch::new();
    let fake = FakeSupervisor::start(Answer::Tags);
    for _ in 0..2 {
        let mut cmd = scratch_with_api(&s, &fake.address, &["status", "--health"]);
        cmd.env("RESIN_LOCK_TAGS", "1");
        assert_eq!(run(cmd).status.code(), Some(0));
    }
    assert_eq!(fake.reads.try_iter().count(), 1);
    fake.assert_no_request();
    let json = status_json(&s);
    assert_eq!(
        json["locks"][0]["tag"]["result"],
        "read back (GET /v2/device/tags)"
    );
}
