//! Waiters killed at random.

use std::fs;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::*;

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
