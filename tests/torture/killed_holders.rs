//! Holders killed at random.

use std::fs::{self, File};
use std::process::{ChildStdin, Command, Stdio};

use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;

use super::*;

fn sigkill(pid: i32) {
    kill(Pid::from_raw(pid), Signal::SIGKILL).expect("SIGKILL");
}

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
