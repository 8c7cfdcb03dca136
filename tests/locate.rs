//! Where the lock lives (SPEC section 3): the rule chosen from the
//! environment and the files under `--root`, several paths taken all or
//! nothing, and the persistent `/data` lock of a previous boot taken over.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use crate::common::*;

const PERSISTENT: &str = "data/resin-updates.lock";
const TMPFS: &str = "tmp/resin/resin-updates.lock";
const BALENA: &str = "tmp/balena/updates.lock";
const APP: &str = "tmp/balena-supervisor/services/1/main/updates.lock";

/// A fake device: a temp root and the environment the supervisor gave us.
struct Device {
    root: tempfile::TempDir,
    env: Vec<(String, String)>,
}

impl Device {
    fn new(env: &[(&str, &str)]) -> Device {
        Device {
            root: tempfile::tempdir().expect("temp dir"),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    /// `ROOT/<rel>`.
    fn at(&self, rel: &str) -> PathBuf {
        self.root.path().join(rel)
    }

    /// Write `ROOT/etc/os-release`.
    fn os_release(&self, text: &str) {
        fs::create_dir_all(self.at("etc")).unwrap();
        fs::write(self.at("etc/os-release"), text).unwrap();
    }

    /// `resin-lock --root ROOT ARGS…` with this device's environment.
    fn cmd(&self, args: &[&str]) -> Command {
        let mut cmd = resin_lock();
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)))
            .arg("--root")
            .arg(self.root.path())
            .args(args);
        cmd
    }

    fn status_json(&self) -> (i32, Value) {
        let out = self.cmd(&["status", "--json"]).output().unwrap();
        let json = serde_json::from_slice(&out.stdout).unwrap_or_else(|err| {
            panic!(
                "status JSON: {err}: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        });
        (out.status.code().unwrap(), json)
    }

    /// The lock paths `status --json` reports.
    fn paths(json: &Value) -> Vec<String> {
        json["locks"]
            .as_array()
            .unwrap()
            .iter()
            .map(|lock| lock["path"].as_str().unwrap().to_owned())
            .collect()
    }

    fn expected(&self, rels: &[&str]) -> Vec<String> {
        rels.iter()
            .map(|rel| self.at(rel).to_str().unwrap().to_owned())
            .collect()
    }
}

fn names_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// This process's umask (children inherit it), from /proc.
fn umask() -> u32 {
    let status = fs::read_to_string("/proc/self/status").unwrap();
    let line = status
        .lines()
        .find_map(|l| l.strip_prefix("Umask:"))
        .expect("Umask in /proc/self/status");
    u32::from_str_radix(line.trim(), 8).unwrap()
}

fn boot_id() -> String {
    fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .unwrap()
        .trim()
        .to_owned()
}

const RESIN_OS_1: &str = "ID=\"resin-os\"\nNAME=\"Resin OS\"\nPRETTY_NAME=\"Resin OS 1.24.0\"\n";
const DEBIAN: &str = "ID=debian\nPRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\n";

#[test]
fn status_json_names_the_rule_and_the_paths() {
    struct Case {
        env: &'static [(&'static str, &'static str)],
        os_release: Option<&'static str>,
        tmp_balena: bool,
        rule: u64,
        paths: &'static [&'static str],
    }
    let cases = [
        Case {
            env: &[
                (
                    "BALENA_APP_LOCK_PATH",
                    "/tmp/balena-supervisor/services/1/main/updates.lock",
                ),
                ("RESIN_APP_LOCK_PATH", "/tmp/resin/resin-updates.lock"),
                ("BALENA_SUPERVISOR_VERSION", "6.1.3"),
            ],
            os_release: Some(RESIN_OS_1),
            tmp_balena: true,
            rule: 1,
            paths: &[APP],
        },
        Case {
            env: &[("RESIN_APP_LOCK_PATH", "/tmp/resin/resin-updates.lock")],
            os_release: None,
            tmp_balena: true,
            rule: 1,
            paths: &[TMPFS],
        },
        Case {
            env: &[("RESIN_SUPERVISOR_VERSION", "3.2.1")],
            os_release: None,
            tmp_balena: false,
            rule: 2,
            paths: &[PERSISTENT],
        },
        Case {
            env: &[
                ("RESIN_SUPERVISOR_VERSION", "v6.1.3"),
                ("RESIN_HOST_OS_VERSION", "Resin OS 1.24.0"),
            ],
            os_release: None,
            tmp_balena: false,
            rule: 3,
            paths: &[PERSISTENT, TMPFS],
        },
        Case {
            env: &[("RESIN_SUPERVISOR_VERSION", "4.0.0")],
            os_release: Some(RESIN_OS_1),
            tmp_balena: false,
            rule: 3,
            paths: &[PERSISTENT, TMPFS],
        },
        Case {
            env: &[("RESIN_SUPERVISOR_VERSION", "6.99.0")],
            os_release: Some(DEBIAN),
            tmp_balena: false,
            rule: 4,
            paths: &[PERSISTENT, TMPFS],
        },
        Case {
            env: &[
                ("RESIN_SUPERVISOR_VERSION", "6.1.3"),
                ("RESIN_HOST_OS_VERSION", "Resin OS 2.0.0+rev3"),
            ],
            os_release: Some(RESIN_OS_1),
            tmp_balena: false,
            rule: 5,
            paths: &[TMPFS],
        },
        Case {
            env: &[("RESIN_SUPERVISOR_VERSION", "7.21.9")],
            os_release: None,
            tmp_balena: true,
            rule: 6,
            paths: &[TMPFS],
        },
        Case {
            env: &[
                ("BALENA_SUPERVISOR_VERSION", "7.22.0"),
                ("RESIN_SUPERVISOR_VERSION", "6.1.3"),
            ],
            os_release: None,
            tmp_balena: false,
            rule: 7,
            paths: &[BALENA],
        },
        Case {
            env: &[("BALENA_SUPERVISOR_VERSION", "not a version")],
            os_release: Some(RESIN_OS_1),
            tmp_balena: true,
            rule: 8,
            paths: &[PERSISTENT, TMPFS],
        },
        Case {
            env: &[("BALENA_HOST_OS_VERSION", "balenaOS 2.88.4")],
            os_release: None,
            tmp_balena: true,
            rule: 9,
            paths: &[BALENA],
        },
        Case {
            env: &[],
            os_release: Some(DEBIAN),
            tmp_balena: false,
            rule: 10,
            paths: &[TMPFS],
        },
    ];
    for case in cases {
        let device = Device::new(case.env);
        if let Some(text) = case.os_release {
            device.os_release(text);
        }
        if case.tmp_balena {
            fs::create_dir_all(device.at("tmp/balena")).unwrap();
        }
        let (code, json) = device.status_json();
        let what = format!("env {:?}: {json}", case.env);
        assert_eq!(code, 0, "{what}");
        assert_eq!(json["detection"]["rule"], case.rule, "{what}");
        assert_eq!(Device::paths(&json), device.expected(case.paths), "{what}");
        assert_eq!(
            json["detection"]["root"],
            device.root.path().to_str().unwrap(),
            "{what}"
        );
        // Detection only looks: it creates nothing.
        assert!(!device.at("data").exists(), "{what}");
    }
}

#[test]
fn status_json_reports_the_inputs() {
    let device = Device::new(&[("RESIN_SUPERVISOR_VERSION", "v6.1.3")]);
    device.os_release(RESIN_OS_1);
    let (_, json) = device.status_json();
    let d = &json["detection"];
    assert_eq!(d["rule"], 3);
    assert_eq!(d["supervisor_version"], "6.1.3");
    assert_eq!(d["supervisor_version_source"], "RESIN_SUPERVISOR_VERSION");
    assert_eq!(d["os_version"], "1.24.0");
    assert_eq!(
        d["os_version_source"],
        device.at("etc/os-release").to_str().unwrap()
    );
    assert_eq!(d["os_is_1x"], true);

    let device = Device::new(&[
        ("BALENA_SUPERVISOR_VERSION", "soon"),
        ("BALENA_HOST_OS_VERSION", "balenaOS 2.88.4"),
    ]);
    let (_, json) = device.status_json();
    let d = &json["detection"];
    assert_eq!(d["rule"], 10);
    assert_eq!(d["supervisor_version"], Value::Null);
    assert_eq!(d["supervisor_version_raw"], "soon");
    assert_eq!(d["supervisor_version_source"], "BALENA_SUPERVISOR_VERSION");
    assert_eq!(d["os_version"], "2.88.4");
    assert_eq!(d["os_version_source"], "BALENA_HOST_OS_VERSION");
    assert_eq!(d["os_is_1x"], false);
}

#[test]
fn status_explains_the_choice_in_words() {
    let device = Device::new(&[
        ("RESIN_SUPERVISOR_VERSION", "v6.1.3"),
        ("RESIN_HOST_OS_VERSION", "Resin OS 1.24.0"),
    ]);
    device.cmd(&["status"]).assert().code(0).stdout(contains(
        "supervisor 6.1.3 from RESIN_SUPERVISOR_VERSION on Resin OS 1.24.0 from \
         RESIN_HOST_OS_VERSION: rule 3, the persistent and the tmpfs lock",
    ));

    let device = Device::new(&[("RESIN_SUPERVISOR_VERSION", "garbage")]);
    device
        .cmd(&["status"])
        .assert()
        .code(0)
        .stdout(contains(
            "RESIN_SUPERVISOR_VERSION=\"garbage\" is not a version",
        ))
        .stdout(contains("rule 10"));
}

#[test]
fn path_overrides_detection_and_is_not_under_the_root() {
    let device = Device::new(&[
        ("BALENA_APP_LOCK_PATH", "/tmp/balena/updates.lock"),
        ("BALENA_SUPERVISOR_VERSION", "7.22.0"),
    ]);
    let elsewhere = tempfile::tempdir().unwrap();
    let first = elsewhere.path().join("first.lock");
    let second = elsewhere.path().join("second.lock");

    let out = device
        .cmd(&["status", "--json"])
        .arg("--path")
        .arg(&first)
        .arg("--path")
        .arg(&second)
        .output()
        .unwrap();
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        Device::paths(&json),
        [first.to_str().unwrap(), second.to_str().unwrap()]
    );
    assert_eq!(json["detection"]["rule"], Value::Null);

    let out = device
        .cmd(&["status", "--json"])
        .env("RESIN_LOCK_PATH", &first)
        .output()
        .unwrap();
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(Device::paths(&json), [first.to_str().unwrap()]);
    assert_eq!(json["detection"]["rule"], Value::Null);

    // A missing parent of --path is an error, not created.
    let missing = elsewhere.path().join("no/such/dir/x.lock");
    device
        .cmd(&["acquire", "-n"])
        .arg("--path")
        .arg(&missing)
        .assert()
        .code(73);
    assert!(!elsewhere.path().join("no").exists());
}

#[test]
fn resin_lock_root_works_like_root() {
    let device = Device::new(&[("RESIN_SUPERVISOR_VERSION", "3.0.0")]);
    let out = resin_lock()
        .env("RESIN_SUPERVISOR_VERSION", "3.0.0")
        .env("RESIN_LOCK_ROOT", device.root.path())
        .args(["status", "--json"])
        .output()
        .unwrap();
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["detection"]["rule"], 2);
    assert_eq!(Device::paths(&json), device.expected(&[PERSISTENT]));
}

#[test]
fn the_app_lock_path_goes_under_the_root_and_its_parents_are_created() {
    let device = Device::new(&[(
        "BALENA_APP_LOCK_PATH",
        "/tmp/balena-supervisor/services/1/main/updates.lock",
    )]);
    device.cmd(&["acquire", "-n"]).assert().success();
    assert_eq!(record(&device.at(APP))["tool"], "resin-lock");
    let dir = device.at("tmp/balena-supervisor/services/1/main");
    assert_eq!(
        fs::metadata(&dir).unwrap().mode() & 0o777,
        0o755 & !umask(),
        "created 0755"
    );
    device.cmd(&["release"]).assert().success();
    assert!(!device.at(APP).exists());
}

/// Rule 3: the persistent and the tmpfs lock, taken and released together.
fn resin_os_1_device() -> Device {
    Device::new(&[
        ("RESIN_SUPERVISOR_VERSION", "6.1.3"),
        ("RESIN_HOST_OS_VERSION", "Resin OS 1.24.0"),
    ])
}

#[test]
fn two_paths_are_taken_and_released_together() {
    let device = resin_os_1_device();
    device.cmd(&["acquire", "-n"]).assert().success();

    let mut persistent = record(&device.at(PERSISTENT));
    let mut tmpfs = record(&device.at(TMPFS));
    assert_eq!(persistent["tool"], "resin-lock");
    assert_eq!(persistent["mode"], "acquire");
    // The keeper holds each file under its own descriptor; all else is one.
    let fds = [persistent["fd"].take(), tmpfs["fd"].take()];
    assert!(
        fds[0].is_i64() && fds[1].is_i64() && fds[0] != fds[1],
        "{fds:?}"
    );
    assert_eq!(persistent, tmpfs, "one holder, one record");
    for dir in ["data", "tmp/resin"] {
        assert_eq!(
            fs::metadata(device.at(dir)).unwrap().mode() & 0o777,
            0o755 & !umask(),
            "{dir} created 0755"
        );
    }

    let (code, json) = device.status_json();
    assert_eq!(code, 1);
    for lock in json["locks"].as_array().unwrap() {
        assert_eq!(lock["state"], "held", "{json}");
        assert_eq!(lock["held_by"], "resin-lock", "{json}");
    }
    // Someone else cannot take either.
    device.cmd(&["acquire", "-n"]).assert().code(1);

    device.cmd(&["release"]).assert().success();
    assert!(!device.at(PERSISTENT).exists());
    assert!(!device.at(TMPFS).exists());
    assert_eq!(names_in(&device.at("data")), Vec::<String>::new());
    assert_eq!(names_in(&device.at("tmp/resin")), Vec::<String>::new());
    device.cmd(&["status"]).assert().code(0);
}

#[test]
fn all_or_nothing_when_the_supervisor_holds_the_second_path() {
    let Some(lockfile) = tool("lockfile") else {
        return;
    };
    let device = resin_os_1_device();
    // The supervisor (>= v13.1) takes its lock with procmail's lockfile as
    // uid 65534; it needs to reach and write the directory.
    for dir in ["", "tmp"] {
        let path = device.at(dir);
        fs::create_dir_all(&path).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
    }
    fs::create_dir_all(device.at("tmp/resin")).unwrap();
    fs::set_permissions(device.at("tmp/resin"), fs::Permissions::from_mode(0o1777)).unwrap();
    let status = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(lockfile)
        .args(["-r", "0"])
        .arg(device.at(TMPFS))
        .status()
        .expect("setpriv and procmail's lockfile");
    assert!(status.success(), "lockfile as uid 65534: {status}");
    let theirs = fs::metadata(device.at(TMPFS)).unwrap();
    assert_eq!(theirs.uid(), 65534);

    device
        .cmd(&["acquire", "-n"])
        .assert()
        .code(1)
        .stderr(contains(device.at(TMPFS).to_str().unwrap()))
        .stderr(contains("supervisor"));

    // Nothing left on the first path: no lock, no temp file.
    assert_eq!(names_in(&device.at("data")), Vec::<String>::new());
    // The supervisor's lock is untouched.
    assert_eq!(names_in(&device.at("tmp/resin")), ["resin-updates.lock"]);
    let after = fs::metadata(device.at(TMPFS)).unwrap();
    assert_eq!((after.ino(), after.uid()), (theirs.ino(), 65534));

    let (code, json) = device.status_json();
    assert_eq!(code, 1);
    assert_eq!(json["locks"][0]["state"], "free", "{json}");
    assert_eq!(json["locks"][1]["state"], "held", "{json}");
    assert_eq!(json["locks"][1]["held_by"], "supervisor", "{json}");

    // `run` is all or nothing too: the command never starts.
    let marker = device.at("ran");
    device
        .cmd(&["run", "-n", "--", "touch"])
        .arg(&marker)
        .assert()
        .code(1);
    assert!(!marker.exists());
    assert_eq!(names_in(&device.at("data")), Vec::<String>::new());
}

#[test]
fn a_persistent_lock_from_a_previous_boot_is_taken_over() {
    // Supervisors before v4 check only the persistent lock, which survives
    // reboots (supervisor issue #20).
    let device = Device::new(&[("RESIN_SUPERVISOR_VERSION", "3.0.0")]);
    let mut child = Command::new("true").spawn().unwrap();
    let dead = child.id();
    child.wait().unwrap();
    let old_boot = "00000000-0000-4000-8000-000000000000";
    assert_ne!(old_boot, boot_id());
    let old = serde_json::json!({
        "tool": "resin-lock", "v": 1, "mode": "acquire", "pid": dead, "owner": dead,
        "start": "2020-01-01T00:00:00Z", "boot_id": old_boot, "pid_ns": 0, "uid": 0,
        "cmd": ["./flash-firmware.sh"],
    });
    fs::create_dir_all(device.at("data")).unwrap();
    fs::write(device.at(PERSISTENT), format!("{old}\n")).unwrap();

    let (code, json) = device.status_json();
    assert_eq!(code, 1, "a stale lock still blocks updates");
    assert_eq!(Device::paths(&json), device.expected(&[PERSISTENT]));
    assert_eq!(json["locks"][0]["state"], "stale", "{json}");
    assert_eq!(json["locks"][0]["stale_reason"], "previous boot", "{json}");
    assert_eq!(json["locks"][0]["record"]["boot_id"], old_boot);

    device.cmd(&["acquire", "-n"]).assert().success();
    let new = record(&device.at(PERSISTENT));
    assert_eq!(new["boot_id"], boot_id());
    assert_ne!(new["pid"], dead);
    let (_, json) = device.status_json();
    assert_eq!(json["locks"][0]["state"], "held", "{json}");

    device.cmd(&["release"]).assert().success();
    assert_eq!(names_in(&device.at("data")), Vec::<String>::new());
}

/// SPEC 7: an empty RESIN_LOCK_PATH or RESIN_LOCK_ROOT (compose's `${VAR}`
/// with VAR unset) counts as unset, for every command; so does any empty
/// BALENA_/RESIN_ detection variable.
#[test]
fn empty_variables_count_as_unset() {
    let device = Device::new(&[
        ("BALENA_APP_LOCK_PATH", ""),
        ("RESIN_APP_LOCK_PATH", ""),
        ("BALENA_SUPERVISOR_VERSION", ""),
        ("RESIN_SUPERVISOR_VERSION", "3.0.0"),
        ("BALENA_HOST_OS_VERSION", ""),
        ("RESIN_HOST_OS_VERSION", ""),
        ("RESIN_LOCK_PATH", ""),
        ("RESIN_LOCK_ROOT", ""),
    ]);
    let (code, json) = device.status_json();
    assert_eq!(code, 0, "{json}");
    assert_eq!(json["detection"]["rule"], 2, "{json}");
    assert_eq!(Device::paths(&json), device.expected(&[PERSISTENT]));
    device.cmd(&["run", "--", "true"]).assert().success();
    device.cmd(&["acquire", "-n"]).assert().success();
    assert!(device.at(PERSISTENT).exists());
    device.cmd(&["release"]).assert().success();
    assert!(!device.at(PERSISTENT).exists());

    // RESIN_LOCK_ROOT empty next to a real RESIN_LOCK_PATH.
    let elsewhere = tempfile::tempdir().unwrap();
    let lock = elsewhere.path().join("x.lock");
    resin_lock()
        .env("RESIN_LOCK_ROOT", "")
        .env("RESIN_LOCK_PATH", &lock)
        .args(["run", "--", "test", "-e"])
        .arg(&lock)
        .assert()
        .success();
}

/// RESIN_LOCK_PATH may hold several paths joined by ':', as RESIN_LOCK_HELD
/// gives them: a nested resin-lock locks the same files.
#[test]
fn resin_lock_path_holds_several_paths() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a.lock"), dir.path().join("b.lock"));
    let joined = format!("{}:{}", a.display(), b.display());
    let out = resin_lock()
        .env("RESIN_LOCK_PATH", &joined)
        .args(["status", "--json"])
        .output()
        .unwrap();
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        Device::paths(&json),
        [a.to_str().unwrap(), b.to_str().unwrap()]
    );
    // Both are taken, and handed on as they came.
    resin_lock()
        .env("RESIN_LOCK_PATH", &joined)
        .args(["run", "--", "sh", "-c"])
        .arg(format!(
            r#"test -s {a} && test -s {b} && test "$RESIN_LOCK_HELD" = "{joined}""#,
            a = a.display(),
            b = b.display()
        ))
        .assert()
        .success();
    assert_eq!(names_in(dir.path()), Vec::<String>::new());
}

/// SPEC 7: a --root (or RESIN_LOCK_ROOT) that does not exist is a usage
/// error naming it, and nothing is created.
#[test]
fn a_missing_root_is_a_usage_error_and_is_not_created() {
    let parent = tempfile::tempdir().unwrap();
    let missing = parent.path().join("no-such-root");
    for args in [&["run", "--", "true"][..], &["acquire", "-n"], &["status"]] {
        resin_lock()
            .arg("--root")
            .arg(&missing)
            .args(args)
            .assert()
            .code(64)
            .stderr(contains(missing.to_str().unwrap()).and(contains("no such directory")));
        resin_lock()
            .env("RESIN_LOCK_ROOT", &missing)
            .args(args)
            .assert()
            .code(64)
            .stderr(contains(missing.to_str().unwrap()));
    }
    let file = parent.path().join("file");
    fs::write(&file, "").unwrap();
    resin_lock()
        .arg("--root")
        .arg(&file)
        .args(["run", "--", "true"])
        .assert()
        .code(64)
        .stderr(contains("not a directory"));
    assert_eq!(names_in(parent.path()), ["file"]);
}

/// `status --json` of a device, with a hang guard; exit code and JSON.
fn status_guarded(device: &Device) -> (Option<i32>, Value) {
    let out = output_or_kill(device.cmd(&["status", "--json"]));
    let json = serde_json::from_slice(&out.stdout).unwrap_or_else(|err| {
        panic!(
            "status JSON ({:?}): {err}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code(), json)
}

/// SPEC 3, issue 12: `ROOT/etc/os-release` as a FIFO must not hang
/// `status` (it used to block in open forever); it is not read.
#[test]
fn a_fifo_at_os_release_does_not_hang_status() {
    let device = Device::new(&[]);
    fs::create_dir_all(device.at("etc")).unwrap();
    nix::unistd::mkfifo(
        &device.at("etc/os-release"),
        nix::sys::stat::Mode::from_bits_truncate(0o644),
    )
    .unwrap();
    let (code, json) = status_guarded(&device);
    assert_eq!(code, Some(0), "{json}");
    assert_eq!(json["detection"]["rule"], 10, "{json}");
    assert_eq!(json["detection"]["os_version_raw"], Value::Null, "{json}");
    // A directory there is not read either.
    fs::remove_file(device.at("etc/os-release")).unwrap();
    fs::create_dir(device.at("etc/os-release")).unwrap();
    assert_eq!(status_guarded(&device).1["detection"]["rule"], 10);
}

/// SPEC 3: an absolute symlink under the root resolves inside it, as in the
/// container: `ROOT/tmp -> /elsewhere` must not make detection see
/// `/elsewhere/balena` (with `ROOT/tmp -> /tmp`: the host's /tmp/balena),
/// nor `ROOT/etc -> /elsewhere/etc` the os-release there.
#[test]
fn absolute_symlinks_under_the_root_do_not_reach_the_host() {
    if emulated(
        "absolute_symlinks_under_the_root_do_not_reach_the_host",
        "openat2 (RESOLVE_IN_ROOT) is not emulated by qemu-user 7.2, so --root takes its no-symlinks fallback",
    ) {
        return;
    }
    let host = tempfile::tempdir().unwrap();
    fs::create_dir_all(host.path().join("balena")).unwrap();
    fs::create_dir_all(host.path().join("etc")).unwrap();
    fs::write(host.path().join("etc/os-release"), RESIN_OS_1).unwrap();

    let device = Device::new(&[]);
    std::os::unix::fs::symlink(host.path(), device.at("tmp")).unwrap();
    let (code, json) = status_guarded(&device);
    assert_eq!(code, Some(0), "{json}");
    assert_eq!(json["detection"]["rule"], 10, "{json}");
    assert_eq!(json["detection"]["tmp_balena_is_dir"], false, "{json}");

    let device = Device::new(&[]);
    std::os::unix::fs::symlink(host.path().join("etc"), device.at("etc")).unwrap();
    let (_, json) = status_guarded(&device);
    assert_eq!(json["detection"]["rule"], 10, "{json}");
    assert_eq!(json["detection"]["os_version_raw"], Value::Null, "{json}");
}

/// The same links resolved inside the root are followed: balenaOS (Yocto)
/// has `/etc/os-release -> ../usr/lib/os-release`, and an absolute link
/// means the root's own file, not the host's.
#[test]
fn symlinks_inside_the_root_are_followed_there() {
    if emulated(
        "symlinks_inside_the_root_are_followed_there",
        "openat2 (RESOLVE_IN_ROOT) is not emulated by qemu-user 7.2, so --root takes its no-symlinks fallback",
    ) {
        return;
    }
    for target in ["../usr/lib/os-release", "/usr/lib/os-release"] {
        let device = Device::new(&[]);
        fs::create_dir_all(device.at("usr/lib")).unwrap();
        fs::create_dir_all(device.at("etc")).unwrap();
        fs::write(device.at("usr/lib/os-release"), RESIN_OS_1).unwrap();
        std::os::unix::fs::symlink(target, device.at("etc/os-release")).unwrap();
        let (_, json) = status_guarded(&device);
        assert_eq!(json["detection"]["rule"], 8, "{target}: {json}");
        assert_eq!(json["detection"]["os_version_raw"], "Resin OS 1.24.0");
    }
}

/// A `--path` in a directory that does not exist names a lock nobody can
/// take or check: `status` says so and exits 73 (as `acquire` does), so a
/// CI check with a typo in the path fails instead of reading "free".
#[test]
fn status_of_a_path_in_a_missing_directory_fails() {
    let s = Scratch::new();
    let typo = s.path("typo/updates.lock");
    fs::write(s.path("file"), "").unwrap();
    let in_file = s.path("file/updates.lock");
    for (path, says) in [(&typo, "does not exist"), (&in_file, "is not a directory")] {
        for args in [
            &["status"][..],
            &["status", "--json"],
            &["status", "--health"],
        ] {
            let out = resin_lock()
                .arg("--path")
                .arg(path)
                .args(args)
                .output()
                .unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(73), "{args:?}: {stderr}");
            assert_eq!(out.stdout, b"", "{args:?}");
            assert_eq!(stderr.lines().count(), 1, "{stderr}");
            assert!(
                stderr.starts_with(&format!("resin-lock: {}: ", path.display()))
                    && stderr.contains(says)
                    && stderr.contains("no lock can be taken there"),
                "{stderr}"
            );
        }
        // RESIN_LOCK_PATH too, and -q keeps the error line.
        let out = resin_lock()
            .env("RESIN_LOCK_PATH", path)
            .args(["-q", "status"])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(73));
        assert!(String::from_utf8_lossy(&out.stderr).contains(says));
    }
    assert!(!s.path("typo").exists(), "status creates nothing");
    // A detected path's directory is made when the lock is taken: free.
    let device = Device::new(&[]);
    let (code, json) = device.status_json();
    assert_eq!(code, 0, "{json}");
    assert_eq!(json["locks"][0]["state"], "free");
}

/// What each lock holds back (SPEC 3): every lock file blocks the
/// supervisor; only files named updates.lock block balenaOS's host OS
/// reboot check. `--json` says it per lock, `status` in words where a
/// lock file does not hold back a reboot.
#[test]
fn status_says_what_each_lock_blocks() {
    let s = Scratch::new();
    let (updates, resin) = (s.path("updates.lock"), s.path("resin-updates.lock"));
    let paths = |cmd: &mut Command| {
        cmd.arg("--path").arg(&updates).arg("--path").arg(&resin);
    };
    let status = |args: &[&str]| {
        let mut cmd = resin_lock();
        paths(&mut cmd);
        cmd.args(args).output().unwrap()
    };
    let blocks = |json: &Value| -> Vec<Value> {
        json["locks"]
            .as_array()
            .unwrap()
            .iter()
            .map(|lock| lock["blocks"].clone())
            .collect()
    };
    let both = serde_json::json!(["supervisor", "host-reboot"]);
    let supervisor = serde_json::json!(["supervisor"]);
    // Free: what a lock there would hold back.
    let json: Value = serde_json::from_slice(&status(&["status", "--json"]).stdout).unwrap();
    assert_eq!(blocks(&json), [both.clone(), supervisor.clone()], "{json}");
    let mut acquire = resin_lock();
    paths(&mut acquire);
    acquire.args(["acquire", "-n"]).assert().success();
    let json: Value = serde_json::from_slice(&status(&["status", "--json"]).stdout).unwrap();
    assert_eq!(json["locks"][1]["state"], "held", "{json}");
    assert_eq!(blocks(&json), [both, supervisor], "{json}");
    let out = status(&["status"]);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8(out.stdout).unwrap();
    let line = |path: &Path| {
        text.lines()
            .find(|l| l.starts_with(&format!("{}: held by", path.display())))
            .unwrap_or_else(|| panic!("no line for {}: {text}", path.display()))
    };
    const NO_REBOOT: &str = "does not hold back a host OS reboot";
    assert!(!line(&updates).contains(NO_REBOOT), "{text}");
    assert!(line(&resin).contains(NO_REBOOT), "{text}");
    let mut release = resin_lock();
    paths(&mut release);
    release.arg("release").assert().success();
}
