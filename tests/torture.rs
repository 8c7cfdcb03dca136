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

use std::fs::{self, File};
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStderr, ChildStdin, Command, Stdio};

use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;
use serde_json::Value;

use crate::common::*;

const BIN: &str = env!("CARGO_BIN_EXE_resin-lock");

fn wait_gone(pid: i32, what: &str) {
    wait_until(&format!("{what} (pid {pid}) to exit"), || !alive(pid));
}

fn sigkill(pid: i32) {
    kill(Pid::from_raw(pid), Signal::SIGKILL).expect("SIGKILL");
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

/// procmail's lockfile(1): retry forever, 1 s apart (its minimum), N rounds.
const LOCKFILE_LOOP: &str = r#"i=0
while [ $i -lt $N ]; do
    lockfile -r -1 -1 "$L" || exit 1
    sh "$CRIT" "$WHO"
    rm -f "$L"
    i=$((i + 1))
done"#;

#[test]
fn mixed_contenders_never_overlap() {
    let mut rng = Rng::for_test("mixed_contenders_never_overlap");
    let arena = Arena::new();
    let s = &arena.s;
    // The peers that know only O_EXCL, for a fixed number of rounds (those
    // that are installed) ...
    let mut peers = Vec::new();
    if tool("lockfile").is_some() {
        let group = arena.contender("lockfile", rounds(2), LOCKFILE_LOOP);
        peers.push(("lockfile", rounds(2), group));
    }
    if let Some(npm) = npm_fixture() {
        peers.push(("npm", rounds(8), arena.npm_contender(npm, "npm", rounds(8))));
    }
    // ... against resin-lock's run and acquire loops for as long as they last.
    let mut ours = Vec::new();
    for (who, script) in [
        ("run-1", RUN_LOOP),
        ("run-2", RUN_LOOP),
        ("acquire-1", ACQUIRE_LOOP),
        ("acquire-2", ACQUIRE_LOOP),
    ] {
        // A quarter of the rounds straight on, the others after a pause of
        // 0.1 to 0.5 s: bursts of hard contention, with gaps that a peer
        // polling once a second can find.
        let think: Vec<String> = (0..32)
            .map(|_| match rng.below(4) {
                0 => "0".to_owned(),
                _ => format!("0.{:03}", 100 + rng.below(401)),
            })
            .collect();
        let mut cmd = arena.command(who, rounds(10), script);
        cmd.env("THINK", think.join(" "));
        ours.push((who, Group::spawn(cmd, who)));
    }
    for (who, _, group) in &mut peers {
        arena.finish(who, group);
    }
    fs::write(s.path("stop"), "").unwrap();
    let mut total = 0;
    for (who, group) in &mut ours {
        arena.finish(who, group);
        total += arena.done(who);
    }
    let log = arena.log();
    for (who, _, _) in &peers {
        let at: Vec<usize> = (0..log.len()).filter(|&i| log[i] == *who).collect();
        eprintln!("{who} entered at {at:?} of {} entries", log.len());
    }
    assert_eq!(arena.overlaps(), "", "critical sections overlapped");
    for (who, n, _) in &peers {
        assert_eq!(arena.entries(who), *n, "{who} entered every round");
        total += n;
    }
    assert_eq!(arena.counter(), total, "every increment is counted");
    assert_eq!(lock_state(s)["state"], "free");
    assert_eq!(arena.leftovers(&[]), Vec::<String>::new());
}

// ---- holders killed at random ----

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kill {
    /// `run`: resin-lock only; its command keeps the lock until it is killed too.
    RunParent,
    /// `run`: the whole process group at once.
    RunGroup,
    /// `run`: the command only; resin-lock releases and exits 137.
    RunChild,
    /// `acquire`: the keeper only, while the owner is in its critical section.
    Keeper,
    /// `acquire`: the owner only; the keeper notices and lets go.
    Owner,
    /// `acquire`: owner and keeper.
    OwnerAndKeeper,
}

const KILLS: [Kill; 6] = [
    Kill::RunParent,
    Kill::RunGroup,
    Kill::RunChild,
    Kill::Keeper,
    Kill::Owner,
    Kill::OwnerAndKeeper,
];

/// The critical section of a victim: check nobody else is inside, say so
/// in the ready file (with its pid), and stay until killed or stdin closes.
const VICTIM_CS: &str = r#"[ -d "$D/inside" ] && echo "$WHO entered while another was inside" >> "$D/overlaps"
echo $$ > "$R.tmp" && mv "$R.tmp" "$R"
exec cat"#;

/// A holder that will be killed in its critical section.
struct Victim {
    group: Group,
    /// Keeps `cat` in the critical section until dropped.
    stdin: Option<ChildStdin>,
    kill: Kill,
    /// The `sh` of the critical section (after `exec`, `cat`).
    cs_pid: i32,
    /// The pid in the lock record: `run` itself, or the keeper.
    holder_pid: i32,
}

impl Victim {
    /// Start a victim and return once it is inside its critical section.
    fn enter(arena: &Arena, kill: Kill, n: usize) -> Victim {
        let s = &arena.s;
        let ready = s.path(&format!("ready.{n}"));
        let who = format!("victim-{n}-{kill:?}");
        let mut cmd = match kill {
            Kill::RunParent | Kill::RunGroup | Kill::RunChild => {
                let mut cmd = Command::new(BIN);
                cmd.arg("--path")
                    .arg(s.lock())
                    .args(["run", "--", "sh", "-c", VICTIM_CS]);
                cmd
            }
            Kill::Keeper | Kill::Owner | Kill::OwnerAndKeeper => {
                let mut cmd = Command::new("sh");
                cmd.arg("-c").arg(format!(
                    r#""$BIN" --path "$L" acquire --owner parent || exit 9; {VICTIM_CS}"#
                ));
                cmd
            }
        };
        cmd.env("BIN", BIN)
            .env("L", s.lock())
            .env("D", s.dir.path())
            .env("R", &ready)
            .env("WHO", &who)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(File::create(s.path(&format!("{who}.err"))).unwrap());
        let mut group = Group::spawn(cmd, &who);
        let stdin = group.child.stdin.take();
        wait_until(&format!("{who} to enter"), || {
            ready.exists() || matches!(group.child.try_wait(), Ok(Some(_)))
        });
        assert!(
            ready.exists(),
            "{who} ended before entering: {}",
            arena.stderr_of(&who)
        );
        let cs_pid: i32 = fs::read_to_string(&ready).unwrap().trim().parse().unwrap();
        // It holds the lock: the record is its own, and nobody else is inside.
        let rec = record(&s.lock());
        let holder_pid = rec["pid"].as_i64().unwrap() as i32;
        match kill {
            Kill::RunParent | Kill::RunGroup | Kill::RunChild => {
                assert_eq!(rec["mode"], "run", "{who}: {rec}");
                assert_eq!(holder_pid, group.pid(), "{who}: {rec}");
            }
            _ => {
                assert_eq!(rec["mode"], "acquire", "{who}: {rec}");
                assert_eq!(rec["owner"], cs_pid, "{who}: {rec}");
            }
        }
        assert!(
            !s.path("inside").exists(),
            "{who} holds the lock, yet someone is inside"
        );
        Victim {
            group,
            stdin,
            kill,
            cs_pid,
            holder_pid,
        }
    }

    /// SIGKILL it as `self.kill` says, and return once every process of it
    /// that could hold the lock is gone.
    fn kill(mut self, s: &Scratch) {
        match self.kill {
            Kill::RunParent => {
                sigkill(self.group.pid());
                self.group.wait();
                // Its command inherited the flocked descriptor: still held.
                let state = lock_state(s);
                assert_eq!(state["state"], "held", "{state}");
                assert_eq!(state["record"]["pid"], self.holder_pid, "{state}");
                s.cmd(&["acquire", "-n"]).assert().code(1);
                s.cmd(&["release"])
                    .assert()
                    .code(1)
                    .stderr(contains("held by a running resin-lock run"));
                sigkill(self.cs_pid);
            }
            Kill::RunGroup => {
                killpg(Pid::from_raw(self.group.pid()), Signal::SIGKILL).unwrap();
                self.group.wait();
            }
            Kill::RunChild => {
                sigkill(self.cs_pid);
                assert_eq!(self.group.wait().code(), Some(137));
            }
            Kill::Keeper => {
                sigkill(self.holder_pid);
                wait_gone(self.holder_pid, "the keeper");
                // The owner is still in its critical section, but the lock
                // went with the keeper; end the owner too.
                drop(self.stdin.take());
                self.group.wait();
            }
            Kill::Owner => {
                sigkill(self.cs_pid);
                self.group.wait();
            }
            Kill::OwnerAndKeeper => {
                sigkill(self.cs_pid);
                sigkill(self.holder_pid);
                self.group.wait();
            }
        }
        wait_gone(self.cs_pid, "the critical section");
        wait_gone(self.holder_pid, "the lock holder");
    }
}

#[test]
fn killed_holders_leave_a_lock_that_is_recovered() {
    let mut rng = Rng::for_test("killed_holders_leave_a_lock_that_is_recovered");
    let arena = Arena::new();
    let s = &arena.s;
    let mut kills: Vec<Kill> = (0..scale()).flat_map(|_| KILLS).collect();
    // A random order, so each kind of death follows each other kind.
    for i in (1..kills.len()).rev() {
        kills.swap(i, rng.below(i + 1));
    }
    for (n, kill) in kills.into_iter().enumerate() {
        let victim = Victim::enter(&arena, kill, n);
        let dead = victim.holder_pid;
        victim.kill(s);
        let state = lock_state(s);
        if kill == Kill::RunChild {
            // resin-lock outlived its command and released the lock.
            assert_eq!(state["state"], "free", "{kill:?}: {state}");
            continue;
        }
        assert_eq!(state["state"], "stale", "{kill:?}: {state}");
        assert_eq!(state["stale_reason"], "holder exited", "{kill:?}: {state}");
        assert_eq!(state["held_by"], "resin-lock", "{kill:?}: {state}");
        assert_eq!(
            status_json(s)["locked"],
            true,
            "a stale lock still blocks updates"
        );
        s.cmd(&["acquire", "-n"]).assert().success();
        let state = lock_state(s);
        assert_eq!(state["state"], "held", "{kill:?}: taken over: {state}");
        assert_ne!(state["record"]["pid"], dead, "{kill:?}: {state}");
        s.cmd(&["release"]).assert().success();
        assert_eq!(lock_state(s)["state"], "free", "{kill:?}");
        assert_eq!(arena.leftovers(&[]), Vec::<String>::new(), "{kill:?}");
    }
    assert_eq!(arena.overlaps(), "");
}

#[test]
fn killed_holders_never_let_survivors_overlap() {
    let mut rng = Rng::for_test("killed_holders_never_let_survivors_overlap");
    let arena = Arena::new();
    let s = &arena.s;
    let mut survivors = Vec::new();
    for (who, script) in [
        ("run-survivor", RUN_LOOP),
        ("acquire-survivor", ACQUIRE_LOOP),
    ] {
        let mut cmd = arena.command(who, 0, script);
        cmd.env("THINK", "0");
        survivors.push((who, Group::spawn(cmd, who)));
    }
    // Victims take the lock from the survivors (or take over a stale lock
    // a victim left), and die in their critical sections.
    for n in 0..rounds(5) {
        let kill = KILLS[rng.below(KILLS.len())];
        Victim::enter(&arena, kill, n).kill(s);
        let entered = arena.log().len();
        if rng.below(2) == 0 {
            // No newcomer this time: the waiting survivors must find the
            // lock free or stale by themselves, and take it.
            wait_until("a survivor to enter after the kill", || {
                arena.log().len() > entered
            });
        }
    }
    fs::write(s.path("stop"), "").unwrap();
    let mut total = 0;
    for (who, group) in &mut survivors {
        arena.finish(who, group);
        total += arena.done(who);
    }
    eprintln!("survivors' rounds: {total}");
    assert_eq!(arena.overlaps(), "", "critical sections overlapped");
    assert_eq!(arena.counter(), total, "every increment is counted");
    // Everyone is gone: the lock is free, or stale and recoverable.
    let state = lock_state(s);
    match state["state"].as_str() {
        Some("free") => {}
        Some("stale") => {
            s.cmd(&["acquire", "-n"]).assert().success();
            s.cmd(&["release"]).assert().success();
            assert_eq!(lock_state(s)["state"], "free");
        }
        _ => panic!("nobody is alive to hold the lock: {state}"),
    }
    assert_eq!(arena.leftovers(&[]), Vec::<String>::new());
}

// ---- file system faults ----

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

/// The children of `pid` (e.g. the keeper an `acquire` forks before it waits).
fn children_of(pid: i32) -> Vec<i32> {
    fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .map(|p| p.parse().unwrap())
        .collect()
}

#[test]
fn waiters_killed_at_random_leave_nothing() {
    let mut rng = Rng::for_test("waiters_killed_at_random_leave_nothing");
    let s = Scratch::new();
    let lock = s.lock();
    let started = s.path("started");
    let touch = started.to_str().unwrap();
    let (mut owner, owner_stdin) = owner();
    s.cmd(&["acquire", "--owner", &owner.id().to_string()])
        .assert()
        .success();
    let holder = record(&lock);
    let signals = [
        (Signal::SIGKILL, None),
        (Signal::SIGTERM, Some(143)),
        (Signal::SIGINT, Some(130)),
        (Signal::SIGHUP, Some(129)),
    ];
    for _ in 0..rounds(6) {
        let args = match rng.below(2) {
            0 => &["acquire"][..],
            _ => &["run", "--", "touch", touch][..],
        };
        let (signal, code) = signals[rng.below(signals.len())];
        let (mut waiter, _stderr) = waiting(&[lock.as_path()], None, args);
        let keepers = children_of(waiter.pid());
        if args[0] == "acquire" {
            assert_eq!(keepers.len(), 1, "a waiting acquire has its keeper");
        }
        kill(Pid::from_raw(waiter.pid()), signal).unwrap();
        let status = waiter.wait();
        match code {
            Some(code) => assert_eq!(status.code(), Some(code), "{signal} {args:?}"),
            None => assert!(!status.success(), "{signal} {args:?}"),
        }
        // A waiting `acquire` has forked its keeper already: it must go too.
        for keeper in keepers {
            wait_gone(keeper, "the waiter's keeper");
        }
        assert_eq!(
            record(&lock),
            holder,
            "{signal} {args:?}: the holder keeps it"
        );
        assert!(!started.exists(), "{signal} {args:?}: no command started");
        assert_eq!(s.leftovers(&["updates.lock"]), Vec::<String>::new());
    }
    drop(owner_stdin);
    owner.wait().unwrap();
    s.cmd(&["release"]).assert().success();
    assert_eq!(s.leftovers(&[]), Vec::<String>::new());
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

// ---- shared and exclusive holders, SIGKILLed at random ----

/// The critical section of a shared holder, as `sh shcs.sh WHO`: its marker
/// `s.WHO` first, then no exclusive holder may be inside; and while it is
/// inside, `status` must call the lock held (never stale).
const SHARED_CS: &str = r#"d=${0%/*}
touch "$d/s.$1"
[ -d "$d/x" ] && echo "$1 (shared) entered beside an exclusive holder" >> "$d/overlaps"
"$BIN" --path "$L" status | grep -qF "$L: held by" || echo "$1: not held while inside" >> "$d/notheld"
rm -f "$d/s.$1"
"#;

/// The critical section of an exclusive holder, as `sh xcs.sh WHO`: its
/// marker `x` first, then nobody else may be inside.
const EXCLUSIVE_CS: &str = r#"d=${0%/*}
mkdir "$d/x" 2>/dev/null || echo "$1 (exclusive) entered beside an exclusive holder" >> "$d/overlaps"
for f in "$d"/s.*; do
    [ -e "$f" ] && echo "$1 (exclusive) entered beside shared ${f##*/}" >> "$d/overlaps"
done
"$BIN" --path "$L" status | grep -qF "$L: held by" || echo "$1: not held while inside" >> "$d/notheld"
rmdir "$d/x" 2>/dev/null
"#;

/// `run` or `acquire`+`release` (TAKE) with FLAGS (`-s` or nothing) around
/// CS in a loop, as `RUN_LOOP`.
const MIXED_LOOP: &str = r#"set -- $THINK
i=0
while [ $i -lt $N ] || [ ! -e "$STOP" ]; do
    if [ "$TAKE" = run ]; then
        "$BIN" --path "$L" run $FLAGS -- sh "$CS" "$WHO" || exit 1
    else
        "$BIN" --path "$L" acquire $FLAGS --owner parent || exit 1
        sh "$CS" "$WHO"
        "$BIN" --path "$L" release || exit 2
    fi
    i=$((i + 1))
    t=$1; shift; set -- "$@" "$t"; sleep "$t"
done
echo $i > "$D/$WHO.done""#;

/// A victim's critical section: enter as `SHARED_CS` or `EXCLUSIVE_CS` do
/// (by MARK), say so in the ready file, stay until killed.
const MIXED_VICTIM: &str = r#"if [ "$MARK" = shared ]; then
    touch "$D/s.$WHO"
    [ -d "$D/x" ] && echo "$WHO (shared) entered beside an exclusive holder" >> "$D/overlaps"
else
    mkdir "$D/x" 2>/dev/null || echo "$WHO (exclusive) entered beside an exclusive holder" >> "$D/overlaps"
    for f in "$D"/s.*; do
        [ -e "$f" ] && echo "$WHO (exclusive) entered beside shared ${f##*/}" >> "$D/overlaps"
    done
fi
echo $$ > "$R.tmp" && mv "$R.tmp" "$R"
exec cat"#;

#[test]
fn mixed_shared_and_exclusive_holders_killed_at_random_never_overlap() {
    let mut rng =
        Rng::for_test("mixed_shared_and_exclusive_holders_killed_at_random_never_overlap");
    let arena = Arena::new();
    let s = &arena.s;
    fs::write(s.path("shcs.sh"), SHARED_CS).unwrap();
    fs::write(s.path("xcs.sh"), EXCLUSIVE_CS).unwrap();
    let mut loops = Vec::new();
    for (who, take, shared) in [
        ("shared-run-1", "run", true),
        ("shared-run-2", "run", true),
        ("shared-acquire", "acquire", true),
        ("exclusive-run", "run", false),
        ("exclusive-acquire", "acquire", false),
    ] {
        // Pauses of 0 to 0.3 s: shared holders overlap, with gaps in which
        // an exclusive one gets in.
        let think: Vec<String> = (0..16)
            .map(|_| format!("0.{:03}", rng.below(300)))
            .collect();
        let mut cmd = arena.command(who, rounds(6), MIXED_LOOP);
        cmd.env("THINK", think.join(" "))
            .env("TAKE", take)
            .env("FLAGS", if shared { "-s" } else { "" })
            .env("CS", s.path(if shared { "shcs.sh" } else { "xcs.sh" }));
        loops.push((who, Group::spawn(cmd, who)));
    }
    for n in 0..rounds(8) {
        let shared = rng.below(3) > 0;
        let acquire = rng.below(2) == 0;
        let who = format!(
            "victim-{n}-{}-{}",
            if shared { "shared" } else { "exclusive" },
            if acquire { "acquire" } else { "run" }
        );
        let ready = s.path(&format!("ready.{n}"));
        let flags = if shared { "-s" } else { "" };
        let script = if acquire {
            format!(
                r#""$BIN" --path "$L" acquire {flags} --owner parent || exit 9; {MIXED_VICTIM}"#
            )
        } else {
            format!(r#"exec "$BIN" --path "$L" run {flags} -- sh -c '{MIXED_VICTIM}'"#)
        };
        let mut cmd = arena.command(&who, 1, &script);
        cmd.env("R", &ready)
            .env("MARK", if shared { "shared" } else { "exclusive" })
            .stdin(Stdio::piped());
        let mut victim = Group::spawn(cmd, &who);
        wait_until(&format!("{who} to enter"), || {
            ready.exists() || matches!(victim.child.try_wait(), Ok(Some(_)))
        });
        assert!(
            ready.exists(),
            "{who} ended before entering: {}",
            arena.stderr_of(&who)
        );
        // Its marker goes first: whoever enters once it is dead must not
        // take the leftover marker for a holder.
        if shared {
            fs::remove_file(s.path(&format!("s.{who}"))).unwrap();
        } else {
            fs::remove_dir(s.path("x")).unwrap();
        }
        killpg(Pid::from_raw(victim.pid()), Signal::SIGKILL).unwrap();
        victim.wait();
    }
    fs::write(s.path("stop"), "").unwrap();
    for (who, group) in &mut loops {
        arena.finish(who, group);
        assert!(s.path(&format!("{who}.done")).exists(), "{who}");
    }
    assert_eq!(arena.overlaps(), "", "an exclusive holder overlapped");
    let notheld = fs::read_to_string(s.path("notheld")).unwrap_or_default();
    assert_eq!(notheld, "", "a stale lock file while a holder lived");
    // Every holder is gone (a killed victim's keeper follows its owner).
    wait_until("the last keeper to let go", || {
        lock_state(s)["state"] != "held"
    });
    assert!(
        !s.lock().exists(),
        "a lock file is left after the last holder"
    );
    assert_eq!(
        arena.leftovers(&["shcs.sh", "xcs.sh"]),
        Vec::<String>::new()
    );
}
