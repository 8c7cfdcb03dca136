//! Shared and exclusive holders, SIGKILLed at random.

use std::fs;
use std::process::Stdio;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

use super::*;

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
