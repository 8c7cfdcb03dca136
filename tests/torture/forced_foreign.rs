//! The supervisor's forced update when the lock waited on is another
//! tool's (SPEC 2a, issue 19): the force removes it, its `lockfile -r 0`
//! follows 2-20 ms later as uid 65534, and must win against every waiter,
//! also one killed meanwhile; no two critical sections overlap.

use std::fs;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::time::Duration;

use super::*;

#[test]
fn forced_removal_of_a_foreign_lock_beats_its_waiters() {
    if tool("lockfile").is_none() {
        return;
    }
    let mut rng = Rng::for_test("forced_removal_of_a_foreign_lock_beats_its_waiters");
    let arena = Arena::new();
    let s = &arena.s;
    fs::set_permissions(s.dir.path(), fs::Permissions::from_mode(0o1777)).unwrap();
    let lock = s.lock();
    let crit = s.path("crit.sh");
    let crit = crit.to_str().unwrap();
    let mut expected = 0;
    for round in 0..rounds(8) {
        let directory = rng.below(2) == 0;
        if directory {
            fs::create_dir(&lock).unwrap();
        } else {
            fs::write(&lock, "").unwrap();
        }
        let mut waiters: Vec<(Group, _)> = (0..1 + rng.below(3))
            .map(|i| {
                let who = format!("w{round}.{i}");
                waiting(
                    &[lock.as_path()],
                    None,
                    &["run", "-w", "120", "--", "sh", crit, &who],
                )
            })
            .collect();
        // The force: remove it; a waiter may be killed meanwhile.
        if directory {
            fs::remove_dir(&lock).unwrap();
        } else {
            fs::remove_file(&lock).unwrap();
        }
        if rng.below(3) == 0 {
            let (mut victim, _) = waiters.remove(rng.below(waiters.len()));
            nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(victim.pid()),
                nix::sys::signal::Signal::SIGKILL,
            )
            .unwrap();
            victim.wait();
        }
        std::thread::sleep(Duration::from_millis(2 + rng.below(19) as u64));
        let out = Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .args(["lockfile", "-r", "0"])
            .arg(&lock)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "round {round}: the supervisor's lock lost ({})",
            out.status
        );
        // The supervisor's critical section, as CRIT marks one.
        fs::create_dir(s.path("inside")).unwrap();
        let before = arena.counter();
        for (waiter, _) in &mut waiters {
            assert!(waiter.child.try_wait().unwrap().is_none(), "round {round}");
        }
        assert_eq!(arena.counter(), before, "round {round}: a waiter entered");
        fs::remove_dir(s.path("inside")).unwrap();
        fs::remove_file(&lock).unwrap();
        for (mut waiter, mut stderr) in waiters {
            assert!(waiter.wait().success(), "round {round}");
            let mut rest = String::new();
            stderr.read_to_string(&mut rest).unwrap();
            assert!(
                rest.lines()
                    .all(|l| l.starts_with("resin-lock: ") && !l.contains("removed")),
                "round {round}: {rest}"
            );
            expected += 1;
        }
        assert_eq!(arena.counter(), expected, "round {round}");
        assert_eq!(arena.overlaps(), "", "round {round}");
        assert_eq!(arena.leftovers(&[]), Vec::<String>::new(), "round {round}");
    }
}
