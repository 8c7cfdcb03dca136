//! Who may release an `acquire` lock, and who owns it (SPEC 2b, 4;
//! issues 19.2, 20.1, 20.2, 20.7, 20.14): sibling jobs of one parent,
//! wrappers that fork and wait (flock, script, xargs, strace -f), another
//! user's lock, the supervisor's lock under `--force`, and the
//! `--max-hold` notice in a log.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;

use crate::common::*;

/// `sh SCRIPT` to its end under the hang guard; fails unless it exits 0.
fn run_script(s: &Scratch, text: &str) -> std::process::Output {
    let script = s.path("parent.sh");
    fs::write(&script, text).unwrap();
    let mut cmd = Command::new("sh");
    cmd.arg(&script);
    let out = output_or_kill(cmd);
    assert!(out.status.success(), "{text}\n{out:?}");
    out
}

fn read(path: &Path) -> String {
    fs::read_to_string(path)
        .unwrap_or_else(|err| panic!("{}: {err}", path.display()))
        .trim()
        .to_owned()
}

/// Issue 20.1: two `sh -c` jobs of one parent (a Makefile, a supervisor
/// script): job A holds the lock; job B runs the README's
/// `trap 'resin-lock release' EXIT; resin-lock acquire -n || exit 0`.
/// B's release must not remove A's lock: exit 1, naming A's job. A's own
/// release then removes it.
#[test]
fn a_sibling_jobs_release_leaves_my_lock_alone() {
    let s = Scratch::new();
    let go = s.path("go");
    assert!(Command::new("mkfifo").arg(&go).status().unwrap().success());
    let text = format!(
        r#"RL="{bin} --path {lock}"; D={dir}
sh -c "echo \$\$ > $D/a-pid; $RL acquire || exit 9; touch $D/a-held; read _ < $D/go; $RL release; echo \$? > $D/a-rc" &
while [ ! -e $D/a-held ]; do sleep 0.01; done
sh -c "trap '$RL release; echo \$? > $D/b-rc' EXIT; $RL acquire -n || exit 0" 2> $D/b-err
[ -e {lock} ] && echo yes > $D/still-held
echo go > $D/go
wait
"#,
        bin = bin().display(),
        lock = s.lock().display(),
        dir = s.dir.path().display(),
    );
    run_script(&s, &text);
    let b_err = read(&s.path("b-err"));
    assert_eq!(read(&s.path("b-rc")), "1", "B's release refused: {b_err}");
    let a_pid = read(&s.path("a-pid"));
    assert!(
        b_err.contains("another job of the same owner")
            && b_err.contains(&format!("pid {a_pid} (sh -c")),
        "{b_err}"
    );
    assert_eq!(read(&s.path("still-held")), "yes", "{b_err}");
    assert_eq!(read(&s.path("a-rc")), "0", "A releases its own lock");
    assert!(!s.lock().exists());
}

/// Node's `execSync`: acquire in one `sh -c`, release in a later, separate
/// `sh -c` of the same parent. The first shell has exited: they pair up.
#[test]
fn acquire_and_release_in_two_short_lived_shells_pair_up() {
    let s = Scratch::new();
    let text = format!(
        r#"RL="{bin} --path {lock}"; D={dir}
sh -c "$RL acquire" || exit 1
{bin} --path {lock} status --json > $D/status || true
sh -c "$RL release" 2> $D/err || exit 2
"#,
        bin = bin().display(),
        lock = s.lock().display(),
        dir = s.dir.path().display(),
    );
    run_script(&s, &text);
    let status: serde_json::Value = serde_json::from_str(&read(&s.path("status"))).unwrap();
    assert_eq!(status["locks"][0]["state"], "held", "{status}");
    assert_eq!(read(&s.path("err")), "");
    assert!(!s.lock().exists());
}

/// A release from within the job that acquired: later in the same
/// `sh -c`, in a subshell, in a function, or in a nested `sh -c`.
#[test]
fn the_acquiring_job_releases_from_a_subshell_function_or_nested_shell() {
    for release in [
        "$RL release",
        "( $RL release )",
        "f() { $RL release; }; f",
        "sh -c \"$RL release\"",
    ] {
        let s = Scratch::new();
        let job = format!(
            "RL='{bin} --path {lock}'; $RL acquire || exit 9; {release}",
            bin = bin().display(),
            lock = s.lock().display(),
        );
        let mut cmd = Command::new("sh");
        cmd.args(["-c", &job]);
        let out = output_or_kill(cmd);
        assert!(out.status.success(), "{release}: {out:?}");
        assert!(out.stderr.is_empty(), "{release}: {out:?}");
        assert!(!s.lock().exists(), "{release}");
    }
}
