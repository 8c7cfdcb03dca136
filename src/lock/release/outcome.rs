//! Who asks `release`, and what it did at one path: the decision, which
//! `cmd::release` turns into words and an exit status.

use crate::lock::owner::ProcId;
use crate::lock::owner::is_self_or_ancestor;
use crate::lock::record::Record;

/// Who asks, and how.
#[derive(Debug, Clone)]
pub struct Caller {
    /// `--owner PID`: also counts as the caller's owner (besides this
    /// process and its ancestors).
    pub owner: Option<ProcId>,
    pub force: bool,
    pub euid: u32,
}

impl Caller {
    pub fn owns(&self, record: &Record) -> bool {
        self.owner
            .is_some_and(|p| p.is(record.owner, record.owner_start))
            || is_self_or_ancestor(record.owner, record.owner_start)
    }

    /// Whether a process running as `uid` may be signalled on our behalf.
    pub fn trusts_uid(&self, uid: u32) -> bool {
        uid == self.euid || uid == 0
    }
}

/// What `release` did at one path.
#[derive(Debug)]
pub enum Outcome {
    NothingThere,
    RemovedStale {
        reason: &'static str,
    },
    /// The keeper let go and removed the file. `taken_by`: a waiting
    /// resin-lock took the lock the moment it was free.
    KeeperReleased {
        keeper: i32,
        taken_by: Option<i32>,
    },
    /// The keeper let go but left the file, which we removed.
    KeeperLeftFile {
        keeper: i32,
    },
    /// The path names another file than ours now (the supervisor forced an
    /// update and put its own lock there): left alone. Keepers still holding
    /// our removed file were stopped.
    Replaced {
        what: Option<String>,
        keepers_stopped: usize,
    },
    /// `--force` removed what was there.
    ForcedForeign {
        what: String,
    },
    ForcedRun {
        pid: i32,
    },
    ForcedUnproven {
        keeper: i32,
    },
    Refused(Refusal),
}

/// Why `release` left a lock alone (exit 1).
#[derive(Debug)]
pub enum Refusal {
    Foreign {
        what: String,
    },
    LiveRun {
        holder: String,
    },
    NotOwner {
        holder: String,
    },
    /// The lock is held, but not provably by its keeper.
    Unproven {
        keeper: i32,
        why: &'static str,
    },
    NonEmptyDirectory,
}
