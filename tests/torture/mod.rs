//! Torture: every kind of contender around one lock at once, holders
//! SIGKILLed at random (and waiters killed), and file system faults (full,
//! read-only, the lock directory removed under a waiter). resin-lock must never let two
//! critical sections overlap, must interoperate with the peers that know
//! only O_EXCL (the npm lockfile package, procmail's lockfile(1)), must
//! always leave a lock that can be recovered, and must fail with one clear
//! line, the documented exit status and nothing left behind.
//!
//! Synchronisation is by ready files, pipes and stderr lines only; the
//! polling loops are hang guards, never timing assertions.
//!
//! Length: short by default, for CI (the module takes well under a minute
//! on 2 cores). `RESIN_LOCK_TORTURE_ROUNDS=N` multiplies every round count
//! (and the hang guards) by N for a longer run, e.g.
//! `RESIN_LOCK_TORTURE_ROUNDS=20 cargo test torture`. Who is killed, and
//! how, comes from a PRNG seeded per run: each test prints its seed (shown
//! when it fails), and `RESIN_LOCK_TORTURE_SEED=S` replays it.
//!
//! One file per fault kind: `contenders`, `killed_holders`, `killed_waiters`,
//! `file_system`, `shared_exclusive`, `forced_foreign`; here the arena and
//! the helpers that more than one of them uses.

use std::fs::{self, File};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, ChildStderr, ChildStdin, Command, Stdio};

use serde_json::Value;

use crate::common::*;

mod contenders;
mod file_system;
mod forced_foreign;
mod killed_holders;
mod killed_waiters;
mod shared_exclusive;

const BIN: &str = env!("CARGO_BIN_EXE_resin-lock");

fn wait_gone(pid: i32, what: &str) {
    wait_until(&format!("{what} (pid {pid}) to exit"), || !alive(pid));
}

fn lock_state(s: &Scratch) -> Value {
    status_json(s)["locks"][0].clone()
}

/// The critical section every contender runs, as `sh crit.sh WHO`: entering
/// while another is inside (the `inside` directory exists) is an overlap;
/// every entry increments the counter and is logged with its contender.
const CRIT: &str = r#"d=${0%/*}
mkdir "$d/inside" 2>/dev/null || echo "$1 entered while another was inside" >> "$d/overlaps"
n=$(cat "$d/counter")
echo $((n + 1)) > "$d/counter"
echo "$1" >> "$d/log"
rmdir "$d/inside" 2>/dev/null
exit 0
"#;

/// A scratch dir with the lock, the critical section and its evidence.
struct Arena {
    s: Scratch,
}

/// Files of the arena that are not the lock or a leftover.
const ARENA_FILES: &[&str] = &["crit.sh", "counter", "log", "stop"];

impl Arena {
    fn new() -> Arena {
        let s = Scratch::new();
        fs::write(s.path("crit.sh"), CRIT).unwrap();
        fs::write(s.path("counter"), "0").unwrap();
        fs::write(s.path("log"), "").unwrap();
        Arena { s }
    }

    /// `sh -c SCRIPT` with the arena in its environment: BIN, L (the lock),
    /// D (the arena), CRIT, WHO, N (rounds), STOP; stderr to `WHO.err`.
    fn contender(&self, who: &str, n: usize, script: &str) -> Group {
        Group::spawn(self.command(who, n, script), who)
    }

    fn command(&self, who: &str, n: usize, script: &str) -> Command {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", script])
            .env("BIN", BIN)
            .env("L", self.s.lock())
            .env("D", self.s.dir.path())
            .env("CRIT", self.s.path("crit.sh"))
            .env("WHO", who)
            .env("N", n.to_string())
            .env("STOP", self.s.path("stop"))
            .env_remove("RESIN_LOCK_PATH")
            .env_remove("RESIN_LOCK_ROOT")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(self.s.path(&format!("{who}.err"))).unwrap());
        cmd
    }

    /// The npm lockfile contender (tests/fixtures/npm/contend.js).
    fn npm_contender(&self, fixtures: &Path, who: &str, n: usize) -> Group {
        let mut cmd = Command::new("node");
        cmd.arg(fixtures.join("contend.js"))
            .arg(self.s.lock())
            .arg(n.to_string())
            .arg("sh")
            .arg(self.s.path("crit.sh"))
            .arg(who)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(self.s.path(&format!("{who}.err"))).unwrap());
        Group::spawn(cmd, who)
    }

    fn stderr_of(&self, who: &str) -> String {
        fs::read_to_string(self.s.path(&format!("{who}.err"))).unwrap_or_default()
    }

    fn finish(&self, who: &str, group: &mut Group) {
        let status = group.wait();
        assert!(status.success(), "{who}: {status}: {}", self.stderr_of(who));
    }

    /// The rounds a loop reports in `WHO.done`; each must be in the log.
    fn done(&self, who: &str) -> usize {
        let done = self.s.path(&format!("{who}.done"));
        let n = fs::read_to_string(&done).unwrap().trim().parse().unwrap();
        assert_eq!(self.entries(who), n, "{who} entered every round");
        n
    }

    fn overlaps(&self) -> String {
        fs::read_to_string(self.s.path("overlaps")).unwrap_or_default()
    }

    fn counter(&self) -> usize {
        fs::read_to_string(self.s.path("counter"))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    }

    fn log(&self) -> Vec<String> {
        fs::read_to_string(self.s.path("log"))
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    fn entries(&self, who: &str) -> usize {
        self.log().iter().filter(|w| *w == who).count()
    }

    /// Names in the arena that are neither its own files, nor `keep`, nor
    /// the contenders' stderr: a lock file or a temp file left behind.
    fn leftovers(&self, keep: &[&str]) -> Vec<String> {
        let mut keep = keep.to_vec();
        keep.extend_from_slice(ARENA_FILES);
        self.s
            .leftovers(&keep)
            .into_iter()
            .filter(|name| {
                !name.ends_with(".err") && !name.ends_with(".done") && !name.starts_with("ready.")
            })
            .collect()
    }
}

/// `resin-lock run` in a loop: at least N rounds, and on until the stop
/// file appears; the round count goes to `WHO.done`. Between rounds it
/// pauses for the next of the THINK times (load shaping, so the polling
/// peers find the lock free now and then; nothing waits on it).
const RUN_LOOP: &str = r#"set -- $THINK
i=0
while [ $i -lt $N ] || [ ! -e "$STOP" ]; do
    "$BIN" --path "$L" run -- sh "$CRIT" "$WHO" || exit 1
    i=$((i + 1))
    t=$1; shift; set -- "$@" "$t"; sleep "$t"
done
echo $i > "$D/$WHO.done""#;

/// `resin-lock acquire; CRIT; resin-lock release` in a loop, as `RUN_LOOP`.
const ACQUIRE_LOOP: &str = r#"set -- $THINK
i=0
while [ $i -lt $N ] || [ ! -e "$STOP" ]; do
    "$BIN" --path "$L" acquire --owner parent || exit 1
    sh "$CRIT" "$WHO"
    "$BIN" --path "$L" release || exit 2
    i=$((i + 1))
    t=$1; shift; set -- "$@" "$t"; sleep "$t"
done
echo $i > "$D/$WHO.done""#;

/// Start `resin-lock -v ARGS…` on `lock` and return once it says it waits.
fn waiting(
    lock_args: &[&Path],
    root: Option<&Path>,
    args: &[&str],
) -> (Group, BufReader<ChildStderr>) {
    let mut cmd = resin_lock();
    if let Some(root) = root {
        cmd.arg("--root").arg(root);
    }
    for path in lock_args {
        cmd.arg("--path").arg(path);
    }
    cmd.arg("-v")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut group = Group::spawn(cmd, "waiter");
    let mut stderr = BufReader::new(group.child.stderr.take().unwrap());
    let mut line = String::new();
    loop {
        line.clear();
        if stderr.read_line(&mut line).unwrap() == 0 {
            panic!("the waiter ended early: {}", group.wait());
        }
        if line.contains("waiting for") {
            return (group, stderr);
        }
    }
}

/// An owner for an `acquire` holder that lives until its stdin closes.
fn owner() -> (Child, ChildStdin) {
    let mut cat = Command::new("cat")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let stdin = cat.stdin.take().unwrap();
    (cat, stdin)
}
