//! Every kind of contender around one lock at once: resin-lock's `run` and
//! `acquire` loops against the peers that know only O_EXCL.

use std::fs;

use super::*;

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
