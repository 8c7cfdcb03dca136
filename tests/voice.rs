//! One voice: every error path of SPEC section 7 prints one line that starts
//! `resin-lock: `, names the problem (and the path), and exits with its
//! documented status; no Rust debug text (`Exited(Pid(..))`), no
//! `(os error N)`, no clap `error:` prefix. A usage error too is one line:
//! clap's usage line is left out, its hint ("a similar argument exists") kept.

use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::Path;
use std::process::Command;

use crate::common::*;

const BIN: &str = env!("CARGO_BIN_EXE_resin-lock");

/// Run `cmd`; check its status and the shape of what it says on stderr:
/// one `resin-lock: ` line that contains every word of `says`. Returns
/// stderr.
fn says(what: &str, cmd: &mut Command, code: i32, says: &[&str]) -> String {
    let out = cmd.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(code), "{what}: {stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{what}: one line expected:\n{stderr}");
    assert!(lines[0].starts_with("resin-lock: "), "{what}: {stderr}");
    assert_plain(what, &stderr);
    for word in says {
        assert!(lines[0].contains(word), "{what}: no {word:?} in {stderr}");
    }
    stderr
}

/// No debug formatting, no errno suffix, no clap prefix, anywhere.
fn assert_plain(what: &str, stderr: &str) {
    for leak in [
        "Exited(",
        "Signaled(",
        "Pid(",
        "os error",
        "Os {",
        "Error {",
        "error:",
    ] {
        assert!(!stderr.contains(leak), "{what}: {leak:?} in {stderr}");
    }
}

/// A usage error: exit 64 and one line that says `message`.
fn usage_error(args: &[&str], message: &str) -> String {
    says(
        &args.join(" "),
        Command::new(BIN).args(args).env_remove("RESIN_LOCK_PATH"),
        64,
        &[message],
    )
}

#[test]
fn usage_errors_are_one_line_with_the_hint() {
    usage_error(&["--bogus"], "unexpected argument '--bogus'");
    usage_error(&["--bogus", "status"], "unexpected argument '--bogus'");
    usage_error(&["status", "--bogus"], "unexpected argument '--bogus'");
    // The hint stays on the line.
    usage_error(&["status", "--jsn"], "a similar argument exists: '--json'");
    usage_error(&["statsu"], "a similar subcommand exists: 'status'");
    for bad in ["abc", "-1", "5x"] {
        usage_error(&["run", "-w", bad, "--", "true"], &format!("'{bad}'"));
    }
    usage_error(&["run"], "<CMD>");
    usage_error(&["acquire", "--owner", "abc"], "--owner");
    usage_error(&["bogus"], "unrecognized subcommand 'bogus'");
    usage_error(&[], "no command given");
    // Before `run`'s CMD, `--` starts the command: clap's "use '-- --jsn'"
    // would run `--jsn`, so it is not said.
    let said = usage_error(&["run", "--jsn", "true"], "unexpected argument '--jsn'");
    assert!(
        !said.contains("'-- ") && !said.contains("as a value"),
        "{said}"
    );
}

#[test]
fn owner_naming_no_process_is_a_usage_error() {
    let s = Scratch::new();
    // pid_max itself is never a pid.
    let pid_max = fs::read_to_string("/proc/sys/kernel/pid_max").unwrap();
    let pid = pid_max.trim();
    says(
        "--owner pid_max",
        &mut s.cmd(&["acquire", "--owner", pid]),
        64,
        &["--owner", pid, "no such process"],
    );
    assert!(!s.lock().exists());
}

#[test]
fn bad_lock_paths_say_what_and_where() {
    let s = Scratch::new();
    let at = |name: &str| s.path(name);
    let lock = |path: &Path| {
        let mut cmd = resin_lock();
        cmd.arg("--path").arg(path).args(["acquire", "-n"]);
        cmd
    };
    fs::create_dir(at("dir")).unwrap();
    symlink(at("nowhere"), at("dangling")).unwrap();
    symlink("/etc/passwd", at("hostile")).unwrap();
    fs::write(at("file"), "").unwrap();
    let long = at(&"x".repeat(300));
    let cases: &[(&str, &Path, i32, &[&str])] = &[
        ("a directory", &at("dir"), 1, &["dir", "directory"]),
        (
            "a dangling symlink",
            &at("dangling"),
            1,
            &["dangling", "symlink"],
        ),
        (
            "a hostile symlink",
            &at("hostile"),
            1,
            &["hostile", "symlink"],
        ),
        (
            "a parent that is a file",
            &at("file/lock"),
            73,
            &["file/lock", "not a directory"],
        ),
        (
            "a missing parent",
            &at("none/lock"),
            73,
            &["none/lock", "does not exist"],
        ),
        ("a name too long", &long, 73, &["xxxx", "name too long"]),
    ];
    for (what, path, code, words) in cases {
        says(what, &mut lock(path), *code, words);
    }
    assert_eq!(
        fs::read_link(at("hostile")).unwrap(),
        Path::new("/etc/passwd")
    );
    assert!(at("dir").is_dir() && !at("file/lock").exists() && !long.exists());
}

#[test]
fn a_read_only_directory_says_so() {
    let s = Scratch::new();
    let dir = s.path("ro");
    fs::create_dir(&dir).unwrap();
    let mut cmd = Command::new("unshare");
    cmd.args(["-m", "sh", "-c"])
        .arg(r#"mount -t tmpfs -o ro none "$1" && exec "$2" --path "$1/lock" acquire -n"#)
        .arg("sh")
        .arg(&dir)
        .arg(BIN);
    says(
        "read-only",
        &mut cmd,
        73,
        &["ro/lock", "read-only file system"],
    );
}

#[test]
fn permission_denied_and_uid_65534_say_so() {
    let s = Scratch::new();
    fs::set_permissions(s.dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let as_user = |uid: &str| {
        let mut cmd = Command::new("setpriv");
        cmd.arg(format!("--reuid={uid}"))
            .arg(format!("--regid={uid}"))
            .arg("--clear-groups")
            .arg(bin_for_others())
            .arg("--path")
            .arg(s.lock())
            .args(["acquire", "-n"]);
        cmd
    };
    says(
        "uid 1000",
        &mut as_user("1000"),
        73,
        &["updates.lock", "permission denied"],
    );
    says("uid 65534", &mut as_user("65534"), 77, &["uid 65534"]);
    assert!(!s.lock().exists());
}

#[test]
fn a_path_that_is_not_utf8_works() {
    let s = Scratch::new();
    let path = s.dir.path().join(std::ffi::OsStr::from_bytes(b"lock-\xff"));
    let out = resin_lock()
        .arg("--path")
        .arg(&path)
        .args(["run", "--", "true"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(out.stderr.is_empty(), "{out:?}");
    assert!(!path.exists());
}

#[test]
fn commands_that_cannot_run_say_why() {
    if emulated(
        "commands_that_cannot_run_say_why",
        "qemu-user runs posix_spawn's CLONE_VFORK child as a plain fork, so an exec failure comes back as exit 127 with no message",
    ) {
        return;
    }
    let s = Scratch::new();
    let script = |name: &str, text: &str, mode: u32| {
        let path = s.path(name);
        fs::write(&path, text).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
        path.to_str().unwrap().to_owned()
    };
    let no_exec = script("no-exec.sh", "#!/bin/sh\n", 0o644);
    let bad = script("bad.sh", "#!/nonexistent/sh -e\necho hi\n", 0o755);
    let dir = s.path("dir");
    fs::create_dir(&dir).unwrap();
    let cases: &[(&str, &str, i32, &[&str])] = &[
        (
            "not found",
            "no-such-command-resin-lock",
            127,
            &["no-such-command-resin-lock", "command not found"],
        ),
        (
            "not executable",
            &no_exec,
            126,
            &["no-exec.sh", "not executable"],
        ),
        (
            "a directory",
            dir.to_str().unwrap(),
            126,
            &["dir", "is a directory"],
        ),
        (
            "a missing interpreter",
            &bad,
            127,
            &["bad.sh", "interpreter", "/nonexistent/sh", "does not exist"],
        ),
        ("an empty command", "", 127, &["empty"]),
    ];
    for (what, program, code, words) in cases {
        let stderr = says(what, &mut s.cmd(&["run", "--", program]), *code, words);
        assert!(!stderr.contains("resin-lock: :"), "{what}: {stderr}");
        if *what == "a missing interpreter" {
            assert!(!stderr.contains("not found"), "{stderr}");
        }
        assert!(!s.lock().exists(), "{what}: released");
    }
}

#[test]
fn verbose_run_says_how_the_command_ended_in_words() {
    let s = Scratch::new();
    let out = s.cmd(&["-v", "run", "--", "true"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_plain("-v run -- true", &stderr);
    assert!(
        stderr.lines().all(|l| l.starts_with("resin-lock: ")),
        "{stderr}"
    );
    assert!(stderr.contains("exited with status 0"), "{stderr}");

    let out = s
        .cmd(&["-v", "run", "--", "sh", "-c", "kill -TERM $$"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(143), "{stderr}");
    assert_plain("-v run -- sh -c kill", &stderr);
    assert!(stderr.contains("was killed by signal TERM"), "{stderr}");
}

/// The section 7 paths fixed after the first walk: an option typo before
/// CMD, an empty RESIN_LOCK_PATH / RESIN_LOCK_ROOT, a --root that does not
/// exist, a symlink in place of the lock directory, a wait that only a
/// person can end, release of someone else's lock, and no /proc.
#[test]
fn the_remaining_section_7_paths_speak_with_one_voice() {
    let s = Scratch::new();
    usage_error(
        &["run", "--timout", "5", "--", "true"],
        "unexpected argument '--timout'",
    );
    // Empty variables count as unset: detection, here under a root.
    let root = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .env("RESIN_LOCK_PATH", "")
        .env("RESIN_LOCK_ROOT", root.path())
        .args(["run", "--", "true"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let missing = root.path().join("missing");
    says(
        "--root that does not exist",
        Command::new(BIN)
            .env_remove("RESIN_LOCK_PATH")
            .arg("--root")
            .arg(&missing)
            .arg("status"),
        64,
        &[missing.to_str().unwrap()],
    );
    let target = s.path("target");
    fs::create_dir(&target).unwrap();
    symlink(&target, s.path("locks")).unwrap();
    let behind = s.path("locks/updates.lock");
    says(
        "symlinked lock directory",
        Command::new(BIN)
            .arg("--path")
            .arg(&behind)
            .args(["acquire", "-n"]),
        73,
        &["symlink", s.path("locks").to_str().unwrap()],
    );
    fs::create_dir(s.lock()).unwrap();
    let stderr = says(
        "a directory at the lock path",
        &mut s.cmd(&["-q", "run", "-n", "--", "true"]),
        1,
        &["a directory", s.lock().to_str().unwrap()],
    );
    assert!(!stderr.contains("waiting"), "-q: {stderr}");
    fs::remove_dir(s.lock()).unwrap();
    let owner = Sleeper::new();
    s.cmd(&["acquire", "--owner", &owner.pid()])
        .assert()
        .success();
    says(
        "release of someone else's lock",
        &mut s.cmd(&["release"]),
        1,
        &["only its owner releases it", s.lock().to_str().unwrap()],
    );
    s.cmd(&["release", "--owner", &owner.pid()])
        .assert()
        .success();
}

/// `resin-lock --root ROOT ARGS…` with these detection variables.
fn rooted(root: &Path, env: &[(&str, &str)], args: &[&str]) -> Command {
    let mut cmd = crate::common::resin_lock();
    cmd.arg("--root").arg(root).args(args);
    for (name, value) in env {
        cmd.env(name, value);
    }
    cmd
}

#[test]
fn a_lock_no_supervisor_checks_is_said_once() {
    const NO_SUPERVISOR: &str = "no supervisor was detected";
    const NO_DIR: &str = "no supervisor lock directory was found";
    // BALENA_APP_LOCK_PATH set but /tmp/balena missing (a service that
    // mounts its own /tmp), and no supervisor at all (rule 10, no
    // /tmp/resin): acquire and run take a lock nobody checks, and say so.
    let app = [("BALENA_APP_LOCK_PATH", "/tmp/balena/updates.lock")];
    for (env, says) in [(&app[..], NO_DIR), (&[][..], NO_SUPERVISOR)] {
        for (args, code) in [
            (&["acquire", "-n"][..], 0),
            (&["run", "-n", "--", "true"][..], 0),
        ] {
            let root = tempfile::tempdir().unwrap();
            let out = rooted(root.path(), env, args).output().unwrap();
            let err = String::from_utf8_lossy(&out.stderr).into_owned();
            assert_eq!(out.status.code(), Some(code), "{env:?} {args:?}: {err}");
            assert_eq!(err.lines().count(), 1, "{env:?} {args:?}: {err}");
            assert!(err.starts_with("resin-lock: "), "{err}");
            assert!(err.contains(says), "{env:?} {args:?}: {err}");
            assert!(err.contains("protects nothing"), "{err}");
            let released = rooted(root.path(), env, &["release"]).output().unwrap();
            assert_eq!(released.status.code(), Some(0));
            assert_eq!(String::from_utf8_lossy(&released.stderr), "");
            // -q: not a word.
            let root = tempfile::tempdir().unwrap();
            let quiet = [&["-q"][..], args].concat();
            let out = rooted(root.path(), env, &quiet).output().unwrap();
            assert_eq!(
                String::from_utf8_lossy(&out.stderr),
                "",
                "{env:?} -q {args:?}"
            );
            rooted(root.path(), env, &["-q", "release"])
                .assert()
                .success();
        }
    }
    // With the supervisor's directory there, or with --path: nothing said.
    let root = tempfile::tempdir().unwrap();
    fs::create_dir_all(root.path().join("tmp/balena")).unwrap();
    for env in [&app[..], &[][..]] {
        let out = rooted(root.path(), env, &["run", "-n", "--", "true"])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0));
        assert_eq!(String::from_utf8_lossy(&out.stderr), "", "{env:?}");
    }
    let scratch = Scratch::new();
    let out = scratch.cmd(&["run", "-n", "--", "true"]).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stderr), "");
    // status reports the fact (detection), for every command to see.
    let root = tempfile::tempdir().unwrap();
    let out = rooted(root.path(), &app, &["status", "--json"])
        .output()
        .unwrap();
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["detection"]["lock_dir_found"], false, "{json}");
    assert_eq!(json["detection"]["supervisor_detected"], true, "{json}");
    assert_eq!(
        json["detection"]["supervisor_evidence"], "BALENA_APP_LOCK_PATH",
        "{json}"
    );
}

/// With no supervisor anywhere, the directory the first call made is no
/// evidence of one: every later `run` and `acquire` says it again, and
/// `status --json` does not call the directory found. A supervisor
/// variable, or the API's address, ends it.
#[test]
fn no_supervisor_is_said_every_call_until_one_is_detected() {
    const NO_SUPERVISOR: &str = "no supervisor was detected";
    let root = tempfile::tempdir().unwrap();
    for args in [
        &["run", "--", "true"][..],
        &["run", "--", "true"],
        &["acquire"],
    ] {
        let out = rooted(root.path(), &[], args).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), Some(0), "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(
            err.contains(NO_SUPERVISOR) && err.contains("protects nothing"),
            "{args:?}: {err}"
        );
    }
    assert!(
        root.path().join("tmp/resin").is_dir(),
        "made by the first run"
    );
    let detection = |env: &[(&str, &str)]| {
        let out = rooted(root.path(), env, &["status", "--json"])
            .output()
            .unwrap();
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        json["detection"].clone()
    };
    let seen = detection(&[]);
    assert_eq!(seen["supervisor_detected"], false, "{seen}");
    assert_eq!(seen["lock_dir_found"], false, "{seen}");
    rooted(root.path(), &[], &["-q", "release"])
        .assert()
        .success()
        .stderr("");
    // The supervisor's environment, or its API, is evidence.
    for env in [
        &[("BALENA_SUPERVISOR_VERSION", "7.21.0")][..],
        &[("BALENA_SUPERVISOR_ADDRESS", "http://127.0.0.1:48484")],
    ] {
        let out = rooted(root.path(), env, &["run", "--", "true"])
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stderr), "", "{env:?}");
        let seen = detection(env);
        assert_eq!(seen["supervisor_detected"], true, "{seen}");
        assert_eq!(seen["supervisor_evidence"], env[0].0, "{seen}");
    }
}

/// At the real root (in a mount namespace of its own, with a fresh /tmp),
/// a lock directory counts as the supervisor's only when something is
/// mounted there, as the supervisor's bind mount is; the directory an
/// earlier call made does not.
#[test]
fn at_the_real_root_a_mounted_lock_directory_is_the_supervisors() {
    let script = format!(
        r#"mount -t tmpfs none /tmp || exit 99
        {bin} run -- true 2> /tmp/first
        {bin} run -- true 2> /tmp/second
        {bin} status --json > /tmp/before
        mount -t tmpfs none /tmp/resin
        {bin} run -- true 2> /tmp/mounted
        {bin} status --json > /tmp/after
        cat /tmp/first /tmp/second; echo ===; cat /tmp/before; echo ===; cat /tmp/mounted
        echo ===; cat /tmp/after"#,
        bin = crate::common::bin().display(),
    );
    let mut cmd = Command::new("unshare");
    cmd.args(["--mount", "sh", "-c", &script]);
    for var in [
        "BALENA_SUPERVISOR_VERSION",
        "BALENA_APP_LOCK_PATH",
        "RESIN_LOCK_PATH",
    ] {
        cmd.env_remove(var);
    }
    let out = cmd.output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    let parts: Vec<&str> = text.split("===\n").collect();
    assert_eq!(parts.len(), 4, "{text}");
    let said: Vec<&str> = parts[0].lines().collect();
    assert_eq!(said.len(), 2, "{text}");
    assert!(
        said.iter()
            .all(|l| l.contains("no supervisor was detected")),
        "{text}"
    );
    let before: serde_json::Value = serde_json::from_str(parts[1]).unwrap();
    assert_eq!(before["detection"]["lock_dir_found"], false, "{before}");
    assert_eq!(parts[2], "", "mounted: nothing said");
    let after: serde_json::Value = serde_json::from_str(parts[3]).unwrap();
    assert_eq!(after["detection"]["lock_dir_found"], true, "{after}");
    assert_eq!(
        after["detection"]["supervisor_evidence"], "/tmp/resin is a mount point",
        "{after}"
    );
}
