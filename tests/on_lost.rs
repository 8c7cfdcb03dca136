//! `run --on-lost SIGNAL` (SPEC 2a, issue 22.3): the lock file removed
//! under a running CMD by someone else (the supervisor's forced update,
//! a rename over it, `release --force`) sends SIGNAL to CMD once (to its
//! group with `-g`) and says so in one line; our own release (at the end,
//! at `--max-hold`) and other shared holders leaving never do; without the
//! option nothing changes.
//!
//! The job traps SIGNAL (a `lost` line in a marker file) and SIGUSR2 (a
//! `ping` line). A ping sent to `run` is forwarded to the job after every
//! event `run` had seen before it, so two pings in a row show that no
//! second signal is on its way (`Job::flush`): nothing waits for a time.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};

use crate::common::*;

/// The job: traps `$2` (`lost`) and USR2 (`ping`), says it is ready, runs
/// until `done` appears (or its directory goes, so a failed test leaves
/// nothing running), waits for its background child and exits 5. With `$3` = `bg`, a background child
/// traps `$2` too (`bg-lost`). What the shell says about its children
/// (killed by a signal sent to the group) goes to a file, not to `run`'s
/// stderr, which the tests read whole.
const JOB: &str = r#"d=$1
exec 2>>"$d/job-stderr"
trap 'echo lost >> "$d/got"' "$2"
trap 'echo ping >> "$d/got"' USR2
if [ "$3" = bg ]; then
    sh -c 'trap "echo bg-lost >> \"$1/got\"" "$2"; trap "" USR2
        : > "$1/bg-ready"
        while [ ! -e "$1/done" ] && [ -d "$1" ]; do sleep 0.01; done' sh "$d" "$2" &
    while [ ! -e "$d/bg-ready" ]; do sleep 0.01; done
fi
: > "$d/ready"
while [ ! -e "$d/done" ] && [ -d "$d" ]; do sleep 0.01; done
wait
exit 5"#;

/// A `run` of `JOB`, ready.
struct Job {
    run: Group,
    dir: PathBuf,
}

impl Job {
    /// `resin-lock --path <lock> [more] run ARGS -- sh -c JOB sh DIR SIGNAL [bg]`.
    fn start(s: &Scratch, more: &[&str], args: &[&str], signal: &str, bg: bool) -> Job {
        let dir = s.dir.path().to_owned();
        let mut cmd = resin_lock();
        cmd.arg("--path")
            .arg(s.lock())
            .args(more)
            .arg("run")
            .args(args);
        cmd.args(["--", "sh", "-c", JOB, "sh"])
            .arg(&dir)
            .arg(signal);
        if bg {
            cmd.arg("bg");
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        Job::ready(Group::spawn(cmd, "run --on-lost"), dir)
    }

    /// Wait until the job is ready; fail at once if `run` ended instead.
    fn ready(mut run: Group, dir: PathBuf) -> Job {
        let mut ended = None;
        wait_until("the job to be ready", || {
            ended = run.child.try_wait().unwrap();
            ended.is_some() || dir.join("ready").exists()
        });
        if let Some(status) = ended {
            let mut stderr = String::new();
            std::io::Read::read_to_string(&mut run.child.stderr.take().unwrap(), &mut stderr)
                .unwrap();
            panic!("run ended before its job was ready ({status}): {stderr}");
        }
        Job { run, dir }
    }

    /// The lines of the marker file.
    fn got(&self) -> Vec<String> {
        fs::read_to_string(self.dir.join("got"))
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    fn count(&self, line: &str) -> usize {
        self.got().iter().filter(|l| *l == line).count()
    }

    /// Wait until the marker file has `line`.
    fn wait_for(&self, line: &str) {
        wait_until(&format!("`{line}` in the marker file"), || {
            self.count(line) > 0
        });
    }

    /// Two pings through `run`, each waited for: whatever `run` sent the
    /// job before forwarding the first has been handled by the second.
    fn flush(&self) {
        for _ in 0..2 {
            let pings = self.count("ping");
            nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(self.run.pid()),
                nix::sys::signal::Signal::SIGUSR2,
            )
            .unwrap();
            wait_until("a ping", || self.count("ping") > pings);
        }
    }

    /// Let the job end; `run`'s status and its stderr.
    fn finish(mut self) -> (ExitStatus, String) {
        fs::write(self.dir.join("done"), "").unwrap();
        let status = self.run.wait();
        let mut stderr = String::new();
        std::io::Read::read_to_string(&mut self.run.child.stderr.take().unwrap(), &mut stderr)
            .unwrap();
        (status, stderr)
    }
}

/// A scratch dir the supervisor's uid may write in (as its lock dir is).
fn shared_scratch() -> Scratch {
    let s = Scratch::new();
    fs::set_permissions(s.dir.path(), fs::Permissions::from_mode(0o1777)).unwrap();
    s
}

/// Replace `path` by renaming a new file over it (helios' force).
fn rename_over(path: &Path) {
    let temp = path.with_file_name(".updates.lock.new");
    fs::write(&temp, "").unwrap();
    fs::rename(&temp, path).unwrap();
}

/// The one line said at the loss: the path, that it is not ours any
/// more, that an update may have been forced, the signal sent.
fn assert_said_lost_once(stderr: &str, path: &Path, signal: &str) {
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one line: {stderr}");
    let line = lines[0];
    for part in [
        &format!("resin-lock: {}: ", path.display()),
        "our lock file was removed by someone else",
        "may have forced an update",
        &format!("--on-lost sent {signal} to "),
    ] {
        assert!(line.contains(part), "says `{part}`: {line}");
    }
}

#[test]
fn the_supervisors_forced_update_signals_the_command_once() {
    if tool("lockfile").is_none() {
        return;
    }
    let s = shared_scratch();
    let lock = s.lock();
    let job = Job::start(&s, &[], &["--on-lost", "TERM"], "TERM", false);
    // The force, as the supervisor does it: unlink, then `lockfile -r 0`
    // as uid 65534.
    fs::remove_file(&lock).unwrap();
    let out = as_nobody("lockfile")
        .args(["-r", "0"])
        .arg(&lock)
        .output()
        .unwrap();
    assert!(out.status.success(), "lockfile: {out:?}");
    assert_eq!(fs::metadata(&lock).unwrap().uid(), 65534);
    job.wait_for("lost");
    // The update done, the supervisor removes its lock: nothing more.
    fs::remove_file(&lock).unwrap();
    job.flush();
    assert_eq!(job.got(), ["lost", "ping", "ping"]);
    let (status, stderr) = job.finish();
    assert_eq!(status.code(), Some(5), "run exits as the command did");
    assert_said_lost_once(&stderr, &lock, "SIGTERM");
    assert!(stderr.contains("SIGTERM to sh (pid "), "{stderr}");
}

#[test]
fn a_rename_over_the_lock_signals_the_command_once() {
    let s = Scratch::new();
    let lock = s.lock();
    let job = Job::start(&s, &[], &["--on-lost", "USR1"], "USR1", false);
    assert_eq!(
        inotify_watches(job.run.pid()),
        Some(1),
        "the lock's directory, watched from before the job started"
    );
    rename_over(&lock);
    job.wait_for("lost");
    rename_over(&lock);
    job.flush();
    assert_eq!(job.got(), ["lost", "ping", "ping"]);
    let (status, stderr) = job.finish();
    assert_eq!(status.code(), Some(5));
    assert_said_lost_once(&stderr, &lock, "SIGUSR1");
    // Not ours: left where it is.
    assert!(lock.exists());
}

#[test]
fn with_g_the_whole_group_gets_the_signal() {
    let s = Scratch::new();
    let lock = s.lock();
    let job = Job::start(&s, &[], &["-g", "--on-lost", "SIGTERM"], "TERM", true);
    rename_over(&lock);
    job.wait_for("lost");
    job.wait_for("bg-lost");
    job.flush();
    assert_eq!(job.count("lost"), 1, "{:?}", job.got());
    assert_eq!(job.count("bg-lost"), 1, "{:?}", job.got());
    let (status, stderr) = job.finish();
    assert_eq!(status.code(), Some(5));
    assert_said_lost_once(&stderr, &lock, "SIGTERM");
    assert!(stderr.contains("to the process group of sh"), "{stderr}");
}

#[test]
fn any_one_of_several_paths_lost_signals_once() {
    let s = Scratch::new();
    let (first, second) = (s.lock(), s.path("second.lock"));
    let more = ["--path", second.to_str().unwrap()];
    let job = Job::start(&s, &more, &["--on-lost", "15"], "TERM", false);
    fs::remove_file(&second).unwrap();
    job.wait_for("lost");
    fs::remove_file(&first).unwrap();
    job.flush();
    assert_eq!(job.got(), ["lost", "ping", "ping"]);
    let (status, stderr) = job.finish();
    assert_eq!(status.code(), Some(5));
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 2, "{stderr}");
    assert_said_lost_once(lines[0], &second, "SIGTERM");
    // The other path, found removed at release, is told as it always was.
    assert!(
        lines[1].starts_with(&format!(
            "resin-lock: {}: our lock file was removed",
            first.display()
        )) && !lines[1].contains("--on-lost"),
        "{stderr}"
    );
}

#[test]
fn a_shared_holder_leaving_is_not_a_loss_release_force_is() {
    let s = Scratch::new();
    let lock = s.lock();
    let job = Job::start(&s, &[], &["-s", "--on-lost", "TERM"], "TERM", false);
    s.cmd(&["acquire", "-s"]).assert().success().stderr("");
    s.cmd(&["release"]).assert().success().stderr("");
    assert!(lock.exists(), "we still hold it");
    job.flush();
    assert_eq!(
        job.got(),
        ["ping", "ping"],
        "no signal for a holder leaving"
    );
    s.cmd(&["release", "--force"]).assert().success();
    job.wait_for("lost");
    job.flush();
    assert_eq!(job.count("lost"), 1, "{:?}", job.got());
    let (status, stderr) = job.finish();
    assert_eq!(status.code(), Some(5));
    assert_said_lost_once(&stderr, &lock, "SIGTERM");
}

#[test]
fn our_own_release_at_max_hold_is_not_a_loss() {
    let s = Scratch::new();
    let lock = s.lock();
    let job = Job::start(
        &s,
        &[],
        &["--max-hold", "100ms", "--on-lost", "TERM"],
        "TERM",
        false,
    );
    wait_until("the lock released at --max-hold", || !lock.exists());
    // The path is not ours any more: what happens there is not a loss.
    fs::write(&lock, "").unwrap();
    fs::remove_file(&lock).unwrap();
    job.flush();
    assert_eq!(job.got(), ["ping", "ping"]);
    // Nothing is watched any more (events left unread would wake `run`
    // for ever).
    assert_eq!(inotify_watches(job.run.pid()), Some(0));
    let (status, stderr) = job.finish();
    assert_eq!(status.code(), Some(5));
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("(--max-hold); releasing it"), "{stderr}");
}

/// How many inotify watches process `pid` has (from /proc/PID/fdinfo);
/// None when it has no inotify instance.
fn inotify_watches(pid: i32) -> Option<usize> {
    let mut found = None;
    for entry in fs::read_dir(format!("/proc/{pid}/fd")).unwrap() {
        let entry = entry.unwrap();
        let target = fs::read_link(entry.path()).unwrap_or_default();
        if target.to_string_lossy().contains("inotify") {
            let info = fs::read_to_string(format!(
                "/proc/{pid}/fdinfo/{}",
                entry.file_name().to_string_lossy()
            ))
            .unwrap();
            *found.get_or_insert(0) += info
                .lines()
                .filter(|l| l.starts_with("inotify wd:"))
                .count();
        }
    }
    found
}

#[test]
fn a_normal_run_never_signals() {
    let s = Scratch::new();
    let script = r#"trap 'echo lost >> "$1/got"' TERM; : > "$1/ran""#;
    s.cmd(&["run", "--on-lost", "TERM", "--", "sh", "-c", script, "sh"])
        .arg(s.dir.path())
        .assert()
        .success()
        .stderr("");
    assert!(s.path("ran").exists());
    assert!(!s.path("got").exists(), "signalled at our own release");
    assert_eq!(s.leftovers(&["ran"]), Vec::<String>::new());
}

#[test]
fn without_the_option_nothing_is_sent_and_release_says_it() {
    let s = Scratch::new();
    let lock = s.lock();
    let job = Job::start(&s, &[], &[], "TERM", false);
    fs::remove_file(&lock).unwrap();
    job.flush();
    assert_eq!(job.got(), ["ping", "ping"]);
    let (status, stderr) = job.finish();
    assert_eq!(status.code(), Some(5));
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("our lock file was removed by someone else")
            && !stderr.contains("--on-lost"),
        "{stderr}"
    );
}

/// Without the option, `run` creates no inotify instance (none of its
/// cost); with it, it does (so the check can see one).
#[test]
fn without_the_option_no_inotify_instance_is_made() {
    let Some(strace) = tool("strace") else {
        return;
    };
    if emulated("without_the_option_no_inotify_instance_is_made", "ptrace") {
        return;
    }
    let s = Scratch::new();
    let calls = |on_lost: &[&str]| {
        let trace = s.path("trace");
        let mut cmd = Command::new(&strace);
        cmd.args(["-f", "-qq", "-e", "trace=inotify_init,inotify_init1", "-o"])
            .arg(&trace)
            .arg(bin())
            .arg("--path")
            .arg(s.lock())
            .arg("run")
            .args(on_lost)
            .args(["--", "true"]);
        cmd.assert().success().stderr("");
        let said = fs::read_to_string(&trace).unwrap();
        fs::remove_file(&trace).unwrap();
        said.lines().filter(|l| l.contains("inotify_init")).count()
    };
    assert_eq!(calls(&[]), 0);
    assert_eq!(calls(&["--on-lost", "TERM"]), 1);
}

/// Where inotify cannot watch the directory (here: no /proc, through which
/// the directory is watched), the path is polled.
#[test]
fn without_a_watch_the_path_is_polled() {
    if !can_hide_proc("without_a_watch_the_path_is_polled") {
        return;
    }
    let s = Scratch::new();
    let lock = s.lock();
    let dir = s.dir.path().to_owned();
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
    .args(["run", "--on-lost", "TERM", "--", "sh", "-c", JOB, "sh"])
    .arg(&dir)
    .arg("TERM")
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(Stdio::piped());
    let job = Job::ready(Group::spawn(cmd, "run --on-lost without /proc"), dir);
    fs::remove_file(&lock).unwrap();
    job.wait_for("lost");
    job.flush();
    assert_eq!(job.got(), ["lost", "ping", "ping"]);
    let (status, stderr) = job.finish();
    assert_eq!(status.code(), Some(5));
    assert_said_lost_once(&stderr, &lock, "SIGTERM");
}

#[test]
fn a_bad_signal_is_a_usage_error() {
    let s = Scratch::new();
    for (bad, says) in [
        ("FOO", "is not a signal"),
        ("SIGFOO", "is not a signal"),
        ("0", "is not a signal"),
        ("99", "is not a signal"),
        ("", "is not a signal"),
        ("RTMAX+1", "is not a signal"),
        // `--` starts CMD here: `-1` is a bad value, not clap's
        // "use `-- -1`".
        ("-1", "is not a signal"),
        // One that stops CMD would leave run waiting for ever; one CMD
        // ignores would tell it nothing.
        ("STOP", "would stop CMD"),
        ("SIGTSTP", "would stop CMD"),
        ("TTIN", "would stop CMD"),
        ("ttou", "would stop CMD"),
        ("19", "would stop CMD"),
        ("CHLD", "would not notice"),
    ] {
        let out = s
            .cmd(&["run", "--on-lost", bad, "--", "touch"])
            .arg(s.path("ran"))
            .output()
            .unwrap();
        let stderr = String::from_utf8(out.stderr).unwrap();
        assert_eq!(out.status.code(), Some(64), "{bad}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{bad}: {stderr}");
        assert!(
            stderr.starts_with("resin-lock: invalid value")
                && stderr.contains("--on-lost")
                && stderr.contains(says),
            "{bad}: {stderr}"
        );
        assert!(!stderr.contains("'-- "), "{bad}: {stderr}");
        assert_eq!(s.leftovers(&[]), Vec::<String>::new(), "{bad}");
    }
}

/// A real-time signal, by name or by number, as `kill -s RTMIN+3` sends it.
#[test]
fn a_real_time_signal_reaches_the_command() {
    if emulated(
        "a_real_time_signal_reaches_the_command",
        "qemu-user keeps real-time signals for itself and renumbers the guest's",
    ) {
        return;
    }
    let number = libc::SIGRTMIN() + 3;
    for given in ["RTMIN+3".to_owned(), number.to_string()] {
        let s = Scratch::new();
        let lock = s.lock();
        let job = Job::start(&s, &[], &["--on-lost", &given], &number.to_string(), false);
        rename_over(&lock);
        job.wait_for("lost");
        job.flush();
        assert_eq!(job.got(), ["lost", "ping", "ping"], "{given}");
        let (status, stderr) = job.finish();
        assert_eq!(status.code(), Some(5), "{given}: {stderr}");
        assert_said_lost_once(&stderr, &lock, "SIGRTMIN+3");
    }
}
