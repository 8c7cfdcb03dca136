//! The settle after a foreign lock vanished (SPEC 2a): a lock that is not
//! resin-lock's has no flock to follow, and its removal may be the first
//! half of the supervisor's forced update, whose `lockfile -r 0` follows a
//! few milliseconds later. So a path where a foreign lock was seen must be
//! quiet for `SETTLE` before a lock is created there, counted from the last
//! thing seen happen there, whatever the path through the waiter's loop.

use std::time::{Duration, Instant};

use crate::lock::dir::{LockDir, Target, lock_name};

/// How long the path must stay free after a foreign lock vanished before
/// we create ours (SPEC 2a): the supervisor's shell starts `lockfile -r 0`
/// a few milliseconds after its force removed the file.
const SETTLE: Duration = Duration::from_millis(250);

/// Per path: whether the last lock seen there was foreign, and since when
/// nothing has happened there after it vanished (SPEC 2a).
#[derive(Debug, Clone, Copy, Default)]
struct Settle {
    foreign_seen: bool,
    quiet_since: Option<Instant>,
}

/// The settle of every path: the one place that decides whether a lock may
/// be created now.
pub(super) struct Settles(Vec<Settle>);

impl Settles {
    pub(super) fn new(targets: &[Target]) -> Settles {
        Settles(vec![Settle::default(); targets.len()])
    }

    /// An attempt found path `index` busy: by a foreign lock (its removal
    /// will need the directory to settle) or by a resin-lock holder (whose
    /// flock says when it is done).
    pub(super) fn seen(&mut self, index: usize, foreign: bool) {
        self.0[index] = Settle {
            foreign_seen: foreign,
            quiet_since: None,
        };
    }

    /// The paths before `index` were free and taken (then let go, as one
    /// after them was not): whatever was seen there before is gone, and
    /// our own create and removal there are nothing to settle after.
    pub(super) fn taken_before(&mut self, index: usize) {
        for settle in &mut self.0[..index] {
            *settle = Settle::default();
        }
    }

    /// Something happened at path `index` at `at`: the lock vanished under
    /// an attempt, or inotify saw it created, removed or renamed. After a
    /// foreign lock, the quiet period starts again from there.
    pub(super) fn stir(&mut self, index: usize, at: Instant) {
        let settle = &mut self.0[index];
        if settle.foreign_seen {
            settle.quiet_since = Some(settle.quiet_since.map_or(at, |since| since.max(at)));
        }
    }

    /// Checked before every create, after any wait: a path where a foreign
    /// lock vanished and that has not been quiet for `SETTLE` blocks until
    /// then (the path's index, and when). Where a foreign lock was seen and
    /// something is there now, the attempt looks before it creates (`look`,
    /// one flag per path): a lock that vanishes just then is a removal
    /// seen, not a free path.
    pub(super) fn gate(&mut self, targets: &[Target]) -> Result<Vec<bool>, (usize, Instant)> {
        let now = Instant::now();
        let mut look = vec![false; targets.len()];
        for (index, settle) in self.0.iter_mut().enumerate() {
            if !settle.foreign_seen {
                continue;
            }
            if !path_free(&targets[index]) {
                settle.quiet_since = None;
                look[index] = true;
                continue;
            }
            let until = *settle.quiet_since.get_or_insert(now) + SETTLE;
            if now < until {
                return Err((index, until));
            }
        }
        Ok(look)
    }
}

/// Whether nothing is at `target`'s path (its directory gone counts as free).
fn path_free(target: &Target) -> bool {
    let Ok(name) = lock_name(&target.path) else {
        return false;
    };
    match LockDir::open(&Target {
        create_parent: false,
        ..target.clone()
    }) {
        Ok(dir) => matches!(dir.stat(name), Ok(None)),
        Err(_) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_foreign_lock_gone_blocks_creates_until_quiet_from_the_last_event() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("updates.lock");
        let targets = [Target {
            path: path.clone(),
            create_parent: false,
            root: None,
        }];
        let mut settles = Settles::new(&targets);
        // Nothing seen yet: create at once.
        assert_eq!(settles.gate(&targets), Ok(vec![false]));
        // A foreign lock there: look before creating.
        std::fs::write(&path, "").unwrap();
        settles.seen(0, true);
        assert_eq!(settles.gate(&targets), Ok(vec![true]));
        // Gone: blocked for SETTLE from when it was seen gone...
        std::fs::remove_file(&path).unwrap();
        let before = Instant::now();
        let Err((0, until)) = settles.gate(&targets) else {
            panic!("not settling")
        };
        assert!(until >= before + SETTLE);
        // ...and from any later event there.
        let later = until + Duration::from_millis(100);
        settles.stir(0, later);
        assert_eq!(settles.gate(&targets), Err((0, later + SETTLE)));
        // An earlier event does not shorten it.
        settles.stir(0, before);
        assert_eq!(settles.gate(&targets), Err((0, later + SETTLE)));
        // A resin-lock holder seen there, or the path taken by us: its flock
        // tells, nothing to settle.
        settles.seen(0, false);
        settles.stir(0, Instant::now());
        assert_eq!(settles.gate(&targets), Ok(vec![false]));
        settles.seen(0, true);
        settles.taken_before(1);
        assert_eq!(settles.gate(&targets), Ok(vec![false]));
    }
}
