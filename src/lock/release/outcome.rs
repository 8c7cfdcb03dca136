//! Who asks `release`, and what it did at one path: the decision, which
//! `cmd::release` turns into words and an exit status.

use std::ffi::OsStr;
use std::fs::File;
use std::path::Path;

use crate::lock::dir::{Ident, LockDir};
use crate::lock::owner::{ProcId, is_running, is_self_or_ancestor};
use crate::lock::record::Record;

/// The resin-lock lock file `release` looked at: its directory and name,
/// the path as given, the open file and which file it is.
#[derive(Clone, Copy)]
pub struct Seen<'a> {
    pub dir: &'a LockDir,
    pub name: &'a OsStr,
    pub path: &'a Path,
    pub file: &'a File,
    pub ident: Ident,
}

/// Whose an `acquire` lock is, as the caller sees it (SPEC 2b).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// The caller's: it may release it.
    Owns,
    /// Another owner's.
    NotOwner,
    /// The caller's owner's, but taken by another job of it (acquire's
    /// parent), which still runs and is not among the caller's ancestors:
    /// a sibling `sh -c` job of one Makefile or supervisor script.
    OtherJob(ProcId),
}

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
        self.claim(record) == Claim::Owns
    }

    /// `--owner PID` naming the record's owner is enough (as before). An
    /// owner among the caller's ancestors is enough only if the job that
    /// acquired (acquire's parent) is the caller, one of its ancestors, or
    /// has exited (Node's execSync: acquire and release in two shells).
    pub fn claim(&self, record: &Record) -> Claim {
        if self
            .owner
            .is_some_and(|p| p.is(record.owner, record.owner_start))
        {
            return Claim::Owns;
        }
        if !is_self_or_ancestor(record.owner, record.owner_start) {
            return Claim::NotOwner;
        }
        match record.chain.first() {
            Some(job)
                if !is_self_or_ancestor(job.pid, job.start)
                    && is_running(ProcId {
                        pid: job.pid,
                        start: job.start,
                    }) =>
            {
                Claim::OtherJob(ProcId {
                    pid: job.pid,
                    start: job.start,
                })
            }
            _ => Claim::Owns,
        }
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
    /// `--force` removed the lock of a live `run` or `hold` (`owner`: the
    /// program a `hold` holds it for).
    ForcedRun {
        mode: crate::lock::record::Mode,
        pid: i32,
        owner: i32,
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
    /// A live `run` (or `hold`, `hold` set): released when it is done.
    LiveRun {
        holder: String,
        hold: bool,
    },
    NotOwner {
        holder: String,
    },
    /// The caller's owner's lock, taken by another job of it that still
    /// runs (`job`: its pid and command line).
    OtherJob {
        holder: String,
        job: i32,
        job_cmd: Vec<String>,
    },
    /// Another user's live lock: its keeper cannot be stopped, nor its
    /// file removed, by this user (exit 73).
    OtherUser {
        uid: u32,
        holder: String,
    },
    /// The supervisor's own lock (uid 65534, or helios' tagged file): an
    /// update in progress, never removed, not even with `--force`.
    Supervisor {
        what: String,
        keepers_stopped: usize,
    },
    /// The lock is held, but not provably by its keeper.
    Unproven {
        keeper: i32,
        why: &'static str,
    },
    NonEmptyDirectory,
}
