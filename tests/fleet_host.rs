//! `status --host` against a tree laid out like a balenaOS device's
//! `/tmp/balena-supervisor`: several apps and services, both lock names, a
//! live resin-lock holder, a stale record, the supervisor's own lock (uid
//! 65534), another tool's flocked file, and a `target-state-config` with and
//! without the lock override.

use std::fs::{self, File};
use std::io::Write;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use crate::common::*;

const SERVICES: &str = "tmp/balena-supervisor/services";

/// A device's tree under a scratch root, and what keeps its locks held.
struct Device {
    scratch: Scratch,
    /// A `resin-lock run` holding app 1000001's `main` lock; its stdin ends it.
    holder: Child,
    /// Another tool's flock on app 1000003's `cache` lock.
    _flocked: File,
}

impl Device {
    fn root(&self) -> &Path {
        self.scratch.dir.path()
    }

    /// `resin-lock --root ROOT status --host ARGS…`
    fn host(&self, args: &[&str]) -> Command {
        let mut cmd = resin_lock();
        cmd.arg("--root")
            .arg(self.root())
            .args(["status", "--host"])
            .args(args);
        cmd
    }

    fn json(&self) -> serde_json::Value {
        let out = self.host(&["--json"]).output().unwrap();
        assert_eq!(out.status.code(), Some(1), "{out:?}");
        serde_json::from_slice(&out.stdout).expect("one JSON object")
    }

    fn text(&self) -> String {
        let out = self.host(&[]).output().unwrap();
        assert_eq!(out.status.code(), Some(1), "{out:?}");
        String::from_utf8(out.stdout).unwrap()
    }

    fn write_config(&self, content: &str) {
        let path = self
            .root()
            .join("tmp/balena-supervisor/target-state-config");
        fs::write(path, content).unwrap();
    }
}

impl Drop for Device {
    fn drop(&mut self) {
        drop(self.holder.stdin.take());
        let _ = self.holder.wait();
    }
}

/// A resin-lock record whose holder is gone (nobody flocks the file).
const STALE: &str = r#"{"tool":"resin-lock","v":1,"mode":"acquire","pid":4242,"owner":4200,"start":"2026-01-01T00:00:00Z","boot_id":"","pid_ns":4026531836,"uid":0,"cmd":["./flash.sh","--all"],"reason":"flashing firmware"}"#;

fn device() -> Device {
    let scratch = Scratch::new();
    let root = scratch.dir.path();
    let dir = |app: &str, service: &str| {
        let dir = root.join(SERVICES).join(app).join(service);
        fs::create_dir_all(&dir).unwrap();
        dir
    };
    // App 1000001: a live `run` in main; a stale record and another tool's
    // empty resin-updates.lock in worker.
    let main = dir("1000001", "main");
    let ready = scratch.path("ready");
    let holder = resin_lock()
        .arg("--path")
        .arg(main.join("updates.lock"))
        .args(["run", "--", "sh", "-c", "touch \"$0\"; read x"])
        .arg(&ready)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for_file(&ready);
    let worker = dir("1000001", "worker");
    fs::write(worker.join("updates.lock"), STALE).unwrap();
    fs::write(worker.join("resin-updates.lock"), "").unwrap();
    // App 1000002: the supervisor's own lock in db; web has none.
    let db = dir("1000002", "db");
    fs::write(db.join("updates.lock"), "").unwrap();
    std::os::unix::fs::chown(db.join("updates.lock"), Some(65534), Some(65534)).unwrap();
    dir("1000002", "web");
    // App 1000003: lockfile(1)'s `0`, flocked by its tool.
    let cache = dir("1000003", "cache");
    let mut flocked = File::create(cache.join("updates.lock")).unwrap();
    flocked.write_all(b"0").unwrap();
    flocked.lock().unwrap();
    Device {
        scratch,
        holder,
        _flocked: flocked,
    }
}

fn lock<'a>(
    report: &'a serde_json::Value,
    app: &str,
    service: &str,
    file: &str,
) -> &'a serde_json::Value {
    report["locks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["app_id"] == app && l["service"] == service && l["file"] == file)
        .unwrap_or_else(|| panic!("no {app}/{service}/{file} in {report}"))
}

#[test]
fn host_lists_every_lock_of_every_app_with_what_it_blocks() {
    let device = device();
    let report = device.json();
    assert_eq!(report["schema"], 1);
    assert_eq!(report["locked"], true);
    let services: Vec<String> = report["services"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            format!(
                "{}/{}",
                s["app_id"].as_str().unwrap(),
                s["service"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(
        services,
        [
            "1000001/main",
            "1000001/worker",
            "1000002/db",
            "1000002/web",
            "1000003/cache"
        ]
    );
    assert_eq!(report["locks"].as_array().unwrap().len(), 5, "{report}");

    let live = lock(&report, "1000001", "main", "updates.lock");
    assert_eq!(live["state"], "held");
    assert_eq!(live["held_by"], "resin-lock");
    assert_eq!(live["container_pid"], device.holder.id());
    assert!(
        live["holder"]
            .as_str()
            .unwrap()
            .contains("in the container's pid namespace"),
        "{live}"
    );
    assert_eq!(
        live["blocks"],
        serde_json::json!(["supervisor", "host-reboot"])
    );
    assert_eq!(live["record"]["mode"], "run");

    let stale = lock(&report, "1000001", "worker", "updates.lock");
    assert_eq!(stale["state"], "stale");
    assert_eq!(stale["stale_reason"], "holder exited");
    assert_eq!(stale["reason"], "flashing firmware");
    assert_eq!(stale["container_pid"], 4242);
    assert_eq!(stale["pid_namespace"], 4026531836u64);
    assert!(stale["held_for_s"].as_u64().unwrap() > 3600, "{stale}");
    assert_eq!(stale["blocks"], serde_json::json!(["supervisor"]));

    let legacy = lock(&report, "1000001", "worker", "resin-updates.lock");
    assert_eq!(legacy["state"], "foreign");
    assert_eq!(legacy["held_by"], "other");
    // safe_reboot never looks at resin-updates.lock.
    assert_eq!(legacy["blocks"], serde_json::json!(["supervisor"]));

    let supervisor = lock(&report, "1000002", "db", "updates.lock");
    assert_eq!(supervisor["state"], "foreign");
    assert_eq!(supervisor["held_by"], "supervisor");
    assert_eq!(supervisor["blocks"], serde_json::json!([]));

    let tool = lock(&report, "1000003", "cache", "updates.lock");
    assert_eq!(tool["state"], "foreign");
    assert!(
        tool["holder"].as_str().unwrap().contains("lockfile(1)"),
        "{tool}"
    );
    assert_eq!(
        tool["blocks"],
        serde_json::json!(["supervisor", "host-reboot"])
    );
}

#[test]
fn host_text_is_one_line_per_lock_and_per_free_service() {
    let device = device();
    let text = device.text();
    let line = |start: &str| {
        text.lines()
            .find(|l| l.starts_with(start))
            .unwrap_or_else(|| panic!("no line {start:?} in:\n{text}"))
            .to_owned()
    };
    let live = line("app 1000001 service main: updates.lock: held by resin-lock run (pid ");
    assert!(live.contains("in the container's pid namespace"), "{live}");
    assert!(
        live.ends_with("blocks the supervisor and safe_reboot"),
        "{live}"
    );
    let stale = line("app 1000001 service worker: updates.lock: stale (holder exited)");
    assert!(stale.contains("keeper pid 4242, owner pid 4200"), "{stale}");
    assert!(stale.contains("reason: flashing firmware"), "{stale}");
    assert!(
        stale.ends_with("blocks the supervisor, not safe_reboot"),
        "{stale}"
    );
    line("app 1000001 service worker: resin-updates.lock: held by another tool");
    assert!(line("app 1000002 service db: updates.lock").contains("the supervisor's own lock"));
    line("app 1000002 service web: free");
    line("lock override: unknown");
    assert_eq!(text.lines().last(), Some("updates are blocked"));
    assert_eq!(text.lines().count(), 8, "{text}");
}

#[test]
fn host_reads_the_lock_override_from_target_state_config() {
    let device = device();
    assert_eq!(device.json()["lock_override"], serde_json::Value::Null);
    let cases = [
        (
            r#"{"HOST_CONFIG_gpu_mem":"16","SUPERVISOR_OVERRIDE_LOCK":"1"}"#,
            Some(true),
        ),
        (r#"{"BALENA_SUPERVISOR_OVERRIDE_LOCK":"true"}"#, Some(true)),
        (r#"{"RESIN_OVERRIDE_LOCK":"1"}"#, Some(true)),
        (r#"{"SUPERVISOR_OVERRIDE_LOCK":"0"}"#, Some(false)),
        (r#"{"SUPERVISOR_POLL_INTERVAL":"900000"}"#, Some(false)),
        ("not json", None),
    ];
    for (config, want) in cases {
        device.write_config(config);
        let report = device.json();
        let got = report["lock_override"].as_bool();
        assert_eq!(got, want, "{config}: {report}");
        let text = device.text();
        let expected = match want {
            Some(true) => "lock override: on (",
            Some(false) => "lock override: off (",
            None => "lock override: unknown",
        };
        assert!(text.contains(expected), "{config}: {text}");
    }
}

#[test]
fn host_without_lock_files_exits_0() {
    let scratch = Scratch::new();
    let host = |scratch: &Scratch| {
        let mut cmd = resin_lock();
        cmd.arg("--root")
            .arg(scratch.dir.path())
            .args(["status", "--host"]);
        cmd
    };
    // No supervisor directory at all, then empty service directories.
    host(&scratch)
        .assert()
        .code(0)
        .stdout(contains("no service lock directories").and(contains("updates are allowed")));
    fs::create_dir_all(scratch.path(SERVICES).join("1/main")).unwrap();
    host(&scratch)
        .assert()
        .code(0)
        .stdout(contains("app 1 service main: free"));
    host(&scratch).arg("-q").assert().code(0).stdout("");
}

#[test]
fn host_escapes_names_and_reasons_one_lock_one_line() {
    let scratch = Scratch::new();
    let dir = scratch.path(SERVICES).join("7").join("evil\nservice");
    fs::create_dir_all(&dir).unwrap();
    fs::write(
        dir.join("updates.lock"),
        STALE.replace("flashing firmware", "a\\nb\\u001b[2J"),
    )
    .unwrap();
    let out = resin_lock()
        .arg("--root")
        .arg(scratch.dir.path())
        .args(["status", "--host"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(text.lines().count(), 3, "{text}");
    assert!(
        text.contains(r"service evil\nservice: updates.lock: stale"),
        "{text}"
    );
    assert!(text.contains(r"reason: a\nb\u{1b}[2J"), "{text}");
}

#[test]
fn host_names_the_service_that_holds_a_lock_and_helios_files_are_the_supervisors() {
    // Under helios the services of an app share one lock file: the holder
    // named by the record's `service` may be another service than the
    // directory's. A file that begins with helios' tag is the supervisor's.
    let scratch = Scratch::new();
    let root = scratch.dir.path();
    let main = root.join(SERVICES).join("1000004").join("main");
    fs::create_dir_all(&main).unwrap();
    let record = STALE.replace(r#""reason""#, r#""service":"worker","reason""#);
    fs::write(main.join("updates.lock"), record).unwrap();
    let other = root.join(SERVICES).join("1000005").join("main");
    fs::create_dir_all(&other).unwrap();
    fs::write(other.join("updates.lock"), [0x02, 0x63]).unwrap();
    let out = resin_lock()
        .arg("--root")
        .arg(root)
        .args(["status", "--host"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "");
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains(
            "app 1000004 service main: updates.lock: stale (holder exited), was held by \
             resin-lock acquire in service worker (keeper pid 4242"
        ),
        "{text}"
    );
    let helios = text
        .lines()
        .find(|l| l.starts_with("app 1000005 service main: updates.lock: "))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(
        helios.contains("held by the supervisor (helios' lock file), for ")
            && helios.ends_with("; the supervisor's own lock; blocks neither"),
        "{helios}"
    );
}
