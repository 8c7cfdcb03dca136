//! A report of one lock path, as `status`, `--host` and the waiting line
//! say it: free, held (by resin-lock, the supervisor, another tool) or
//! stale, and why; who holds it, in words.

use std::io;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::dir::{LockDir, Target, lock_name};
use super::holders::{Holder, live_holders};
use super::probe::{Found, HeldBy, Kind, examine, flock_held, foreign_flocked, stale_reason};
use super::record::{Mode, Record};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    Free,
    Held,
    Stale,
}

/// A report of one lock path, as `status` prints it (text and JSON).
#[derive(Debug, Clone, Serialize)]
pub struct Inspection {
    #[serde(serialize_with = "lossy_path")]
    pub path: PathBuf,
    pub state: State,
    pub held_by: Option<HeldBy>,
    pub kind: Option<Kind>,
    pub owner_uid: Option<u32>,
    pub record: Option<serde_json::Value>,
    pub stale_reason: Option<String>,
    /// Every live holder (several for a shared lock).
    pub holders: Vec<Holder>,
    #[serde(skip)]
    pub parsed: Option<Record>,
    #[serde(skip)]
    pub holder_records: Vec<Record>,
    #[serde(skip)]
    pub what: Option<String>,
    /// Another tool's file: whether a process flocks it (`None`: it cannot
    /// be told, or it is not another tool's file).
    #[serde(skip)]
    pub foreign_flocked: Option<bool>,
}

impl Inspection {
    pub fn free(path: &Path) -> Inspection {
        Inspection {
            path: path.to_owned(),
            state: State::Free,
            held_by: None,
            kind: None,
            owner_uid: None,
            record: None,
            stale_reason: None,
            holders: Vec::new(),
            parsed: None,
            holder_records: Vec::new(),
            what: None,
            foreign_flocked: None,
        }
    }

    /// Build the report from what was found and, for a record, whether its
    /// flock is held.
    pub fn from_found(path: &Path, found: &Found, flocked: bool) -> Inspection {
        match found {
            Found::Missing => Inspection::free(path),
            Found::Foreign {
                kind,
                uid,
                held_by,
                what,
                ..
            } => Inspection {
                state: State::Held,
                held_by: Some(*held_by),
                kind: Some(*kind),
                owner_uid: Some(*uid),
                what: Some(what.clone()),
                ..Inspection::free(path)
            },
            Found::Ours {
                file,
                ident,
                uid,
                record,
                raw,
            } => {
                let reason = stale_reason(record, flocked);
                let (holders, holder_records) = match reason {
                    None => live_holders(file, *ident, record),
                    Some(_) => Default::default(),
                };
                Inspection {
                    state: if reason.is_some() {
                        State::Stale
                    } else {
                        State::Held
                    },
                    held_by: Some(HeldBy::ResinLock),
                    kind: Some(Kind::File),
                    owner_uid: Some(*uid),
                    record: Some(raw.clone()),
                    stale_reason: reason.map(str::to_owned),
                    holders,
                    holder_records,
                    parsed: Some(Record::clone(record)),
                    ..Inspection::free(path)
                }
            }
        }
    }

    /// Who holds it, in words: "resin-lock run (pid 42: ./flash.sh) since …".
    pub fn holder(&self) -> String {
        if self.parsed.as_ref().is_some_and(|r| r.shared) && !self.holder_records.is_empty() {
            let each: Vec<String> = self
                .holder_records
                .iter()
                .map(Inspection::record_holder)
                .collect();
            return format!(
                "{} shared holder{}: {}",
                each.len(),
                if each.len() == 1 { "" } else { "s" },
                each.join("; ")
            );
        }
        match (&self.parsed, &self.what) {
            (Some(record), _) => Inspection::record_holder(record),
            (None, Some(what)) => what.clone(),
            (None, None) => "nobody".to_owned(),
        }
    }

    /// A resin-lock holder, in words, from its record.
    pub fn record_holder(record: &Record) -> String {
        let pid = match record.mode {
            Mode::Acquire => format!("keeper pid {}, owner pid {}", record.pid, record.owner),
            Mode::Hold => format!("pid {}, for pid {}", record.pid, record.owner),
            Mode::Run => format!("pid {}", record.pid),
        };
        let reason = record
            .reason
            .as_deref()
            .map(|r| format!(", reason: {}", crate::text::escape_controls(r)))
            .unwrap_or_default();
        let max_hold = record
            .max_hold()
            .map(|d| format!(", --max-hold {}", humantime::format_duration(d)))
            .unwrap_or_default();
        format!(
            "resin-lock {}{}{} ({pid}: {}{reason}{max_hold}) {}",
            record.mode.as_str(),
            if record.shared { " -s" } else { "" },
            service_of(record),
            crate::text::escape_controls(&record.command_line()),
            record.since()
        )
    }

    /// One line for `status`.
    pub fn describe(&self) -> String {
        let path = self.path.display();
        match self.state {
            State::Free => format!("{path}: free"),
            State::Held => format!("{path}: held by {}", self.holder()),
            State::Stale => format!(
                "{path}: stale ({}): {}; blocks updates until taken over or released",
                self.stale_reason.as_deref().unwrap_or("?"),
                self.holder()
            ),
        }
    }
}

/// " in service NAME" when the record names the holder's service (under
/// helios the services of an app share one lock), else nothing.
pub fn service_of(record: &Record) -> String {
    record
        .service
        .as_deref()
        .map(|name| format!(" in service {}", crate::text::escape_controls(name)))
        .unwrap_or_default()
}

/// Inspect a lock path for reporting.
pub fn inspect(target: &Target) -> io::Result<Inspection> {
    let path = &target.path;
    let dir = match LockDir::open(&Target {
        create_parent: false,
        ..target.clone()
    }) {
        Ok(dir) => dir,
        // No directory (or none that resolves: a symlink loop, a file on
        // the way), no lock.
        Err(err)
            if err.kind() == io::ErrorKind::NotFound
                || matches!(err.raw_os_error(), Some(libc::ELOOP | libc::ENOTDIR)) =>
        {
            return Ok(Inspection::free(path));
        }
        Err(err) => return Err(err),
    };
    let name = lock_name(path)?;
    // A lock released between reading its record and probing its flock
    // (its holder unlinks, then lets go) is not stale: say stale only while
    // the path still names the inode probed, else look again.
    for _ in 0..8 {
        let found = examine(&dir, name)?;
        let flocked = match &found {
            Found::Ours { file, record, .. } => flock_held(file, record.shared)?,
            _ => false,
        };
        if let Found::Ours { ident, .. } = &found
            && !flocked
            && dir.stat(name)?.map(|st| super::dir::ident(&st)) != Some(*ident)
        {
            continue;
        }
        let mut seen = Inspection::from_found(path, &found, flocked);
        if seen.held_by == Some(HeldBy::Other) {
            seen.foreign_flocked = foreign_flocked(&dir, name);
        }
        return Ok(seen);
    }
    Err(io::Error::other("the lock file keeps changing under us"))
}

/// Paths need not be UTF-8; JSON shows them with U+FFFD where they are not.
fn lossy_path<S: serde::Serializer>(path: &Path, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&path.to_string_lossy())
}
