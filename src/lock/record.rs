//! The record: the one line of JSON that resin-lock writes into every lock
//! file it creates. Anything that is not a valid record is a foreign lock.

use std::time::SystemTime;

use serde::{Deserialize, Serialize};

/// The `tool` value that marks a lock file as resin-lock's.
pub const TOOL: &str = "resin-lock";
/// The record format version written by this build.
pub(crate) const VERSION: u32 = 1;
/// Lock files larger than this are not records (and are not read further).
pub const MAX_LEN: usize = 64 * 1024;
/// The most a record that resin-lock writes takes (SPEC 2): well inside
/// `MAX_LEN`, so every record we write is one we read back as ours.
pub const MAX_WRITE: usize = 4 * 1024;
/// The most one command-line argument or reason keeps in a record.
const MAX_ARG: usize = 256;

/// Who holds a resin-lock lock: an `acquire` keeper, a `run` process, or
/// a `hold` process for the program that started it (its owner).
/// Readers older than `hold` take a `hold` record for another tool's lock:
/// held, never stale, never removed without `--force`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Acquire,
    Run,
    Hold,
}

impl Mode {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Mode::Acquire => "acquire",
            Mode::Run => "run",
            Mode::Hold => "hold",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub tool: String,
    pub v: u32,
    pub mode: Mode,
    /// The process that holds the flock: the keeper for `acquire`, resin-lock itself for `run` and `hold`.
    pub pid: i32,
    /// The process whose life the lock follows (acquire's owner; run's own
    /// pid; hold's parent, the program that holds the lock through it).
    pub owner: i32,
    /// The owner's start time (clock ticks after boot, /proc/PID/stat), so
    /// that `release` never matches an owner by pid alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner_start: Option<u64>,
    /// `acquire`: the processes from its parent up to the owner, both
    /// included (SPEC 2b). `release` by a process of the same owner needs
    /// the first of them (the job that acquired) to be the caller, one of
    /// its ancestors, or gone. Empty when unknown (`--owner PID` of a
    /// process that is no ancestor, no /proc, an older record).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub chain: Vec<Link>,
    /// When the lock was taken, RFC 3339 UTC.
    pub start: String,
    #[serde(default)]
    pub boot_id: String,
    #[serde(default)]
    pub pid_ns: u64,
    #[serde(default)]
    pub uid: u32,
    #[serde(default)]
    pub cmd: Vec<String>,
    /// Set when `cmd` was cut to keep the record within `MAX_WRITE`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cmd_cut: bool,
    /// Why the lock is held (`--reason`), at most `MAX_ARG` bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Set when `reason` was cut to `MAX_ARG` bytes.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub reason_cut: bool,
    /// `--max-hold`: the holder lets go this many milliseconds after `start`,
    /// even if the work goes on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_hold_ms: Option<u64>,
    /// The descriptor number under which `pid` holds this file, when known
    /// (an `acquire` keeper that holds it since its fork): `release` then
    /// checks that one descriptor instead of listing them all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fd: Option<i32>,
    /// A shared lock (`-s`): held with LOCK_SH, possibly by several holders,
    /// each of which appends its own line to the file.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub shared: bool,
    /// The service (`BALENA_SERVICE_NAME`) the holder runs in: under helios
    /// every service of an app shares one lock file, so the holder may be
    /// another service's. At most `MAX_ARG` bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// Device tags are on for this hold (SPEC 4d): its tag is published once
    /// the hold lasted this many milliseconds (`--tag-after`), and `stale`
    /// when its owner exits without release. A takeover of a stale record
    /// with this field, and `status --health`, put the tag right.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag_after_ms: Option<u64>,
}

/// A process in a record: its pid and start time (clock ticks after boot).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Link {
    pub pid: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start: Option<u64>,
}

impl Record {
    /// A record for a lock taken now by this process on this boot.
    pub(crate) fn new(mode: Mode, pid: i32, owner: i32, cmd: Vec<String>) -> Record {
        Record {
            tool: TOOL.to_owned(),
            v: VERSION,
            mode,
            pid,
            owner,
            start: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
            boot_id: crate::procfs::boot_id().unwrap_or_default(),
            pid_ns: crate::procfs::pid_namespace().unwrap_or(0),
            uid: nix::unistd::geteuid().as_raw(),
            owner_start: None,
            chain: Vec::new(),
            cmd,
            cmd_cut: false,
            reason: None,
            reason_cut: false,
            max_hold_ms: None,
            fd: None,
            shared: false,
            service: std::env::var("BALENA_SERVICE_NAME")
                .ok()
                .filter(|name| !name.is_empty())
                .map(|name| cut(&name, MAX_ARG)),
            tag_after_ms: None,
        }
    }

    /// Set `--reason` (none when empty), cut to `MAX_ARG` bytes with a mark.
    pub(crate) fn set_reason(&mut self, reason: Option<&str>) {
        let reason = reason.filter(|r| !r.is_empty());
        self.reason_cut = reason.is_some_and(|r| r.len() > MAX_ARG);
        self.reason = reason.map(|r| cut(r, MAX_ARG));
    }

    /// Set `--max-hold`.
    pub(crate) fn set_max_hold(&mut self, max_hold: Option<std::time::Duration>) {
        self.max_hold_ms = max_hold.map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    }

    /// The `--max-hold` the record keeps, if any.
    pub(crate) fn max_hold(&self) -> Option<std::time::Duration> {
        self.max_hold_ms.map(std::time::Duration::from_millis)
    }

    /// How long the lock has been held, if `start` reads (which has whole
    /// seconds: up to a second more than it was).
    pub(crate) fn held_for(&self) -> Option<std::time::Duration> {
        let start = humantime::parse_rfc3339(&self.start).ok()?;
        Some(SystemTime::now().duration_since(start).unwrap_or_default())
    }

    /// The file content: one line of JSON, at most `MAX_WRITE` bytes. Long
    /// arguments and a long reason are cut, then arguments are dropped from
    /// the end, with `cmd_cut` and a last argument that say so.
    pub fn to_line(&self) -> String {
        let mut line = serde_json::to_string(self).expect("a record always serializes");
        if line.len() >= MAX_WRITE {
            line = self.bounded().into_line_within();
        }
        line.push('\n');
        line
    }

    fn bounded(&self) -> Record {
        let mut record = self.clone();
        record.cmd = record.cmd.iter().map(|a| cut(a, MAX_ARG)).collect();
        record.reason = record.reason.as_deref().map(|r| cut(r, MAX_ARG));
        record.service = record.service.as_deref().map(|s| cut(s, MAX_ARG));
        record.cmd_cut = record.cmd_cut || record.cmd != self.cmd;
        record
    }

    /// Drop arguments from the end until the line fits, leaving a marker
    /// argument that says how many were cut.
    fn into_line_within(mut self) -> String {
        let all = std::mem::take(&mut self.cmd);
        let mut keep = all.len();
        self.cmd = all.clone();
        loop {
            let line = serde_json::to_string(&self).expect("a record always serializes");
            if line.len() < MAX_WRITE || self.cmd.is_empty() || (keep == 0 && self.cmd_cut) {
                return line;
            }
            // Halving: a few rounds even for 100 000 arguments.
            keep /= 2;
            self.cmd = all[..keep].to_vec();
            self.cmd
                .push(format!("[{} more arguments cut]", all.len() - keep));
            self.cmd_cut = true;
        }
    }

    /// Read a lock file's content: its first line is the creator's record.
    /// `None` means it is not resin-lock's (empty, `0`, garbage, another
    /// tool's JSON): a foreign lock. Only a shared lock has more lines (its
    /// joiners' records, read by `holders`, appended only while the file
    /// stays within `MAX_LEN`).
    pub fn parse(bytes: &[u8]) -> Option<(Record, serde_json::Value)> {
        if bytes.len() > MAX_LEN {
            return None;
        }
        let (first, rest) = match bytes.iter().position(|b| *b == b'\n') {
            Some(end) => (&bytes[..end], &bytes[end + 1..]),
            None => (bytes, &[][..]),
        };
        let (record, value) = Record::parse_line(first)?;
        (record.shared || rest.trim_ascii().is_empty()).then_some((record, value))
    }

    fn parse_line(line: &[u8]) -> Option<(Record, serde_json::Value)> {
        if line.len() > MAX_LEN {
            return None;
        }
        let value: serde_json::Value = serde_json::from_slice(line).ok()?;
        let record: Record = serde_json::from_value(value.clone()).ok()?;
        (record.tool == TOOL && record.v >= 1 && record.pid > 0).then_some((record, value))
    }

    /// Every holder's record in a lock file's content, the creator's
    /// first; lines that are not records (one cut short) are skipped.
    pub(crate) fn holders(bytes: &[u8]) -> Vec<Record> {
        bytes
            .split(|b| *b == b'\n')
            .filter_map(|line| Record::parse_line(line).map(|(record, _)| record))
            .collect()
    }

    /// The command line to show for the holder.
    pub fn command_line(&self) -> String {
        if self.cmd_cut && !self.cmd.is_empty() {
            return format!("{} …", self.cmd.join(" "));
        }
        if self.cmd.is_empty() {
            "?".to_owned()
        } else {
            self.cmd.join(" ")
        }
    }

    /// "since 2026-11-27T08:00:00Z (3m 12s ago)".
    pub fn since(&self) -> String {
        match self.held_for() {
            Some(age) => format!(
                "since {} ({} ago)",
                self.start,
                humantime::format_duration(std::time::Duration::from_secs(age.as_secs()))
            ),
            None => format!("since {}", self.start),
        }
    }
}

/// `text` cut to at most `max` bytes (on a character boundary), with "…".
fn cut(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max.saturating_sub('…'.len_utf8());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Record {
        Record {
            tool: TOOL.into(),
            v: 1,
            mode: Mode::Run,
            pid: 4242,
            owner: 4242,
            start: "2026-11-27T08:00:00Z".into(),
            boot_id: "b".into(),
            pid_ns: 4026531836,
            uid: 0,
            cmd: vec!["./critical.sh".into()],
            ..Record::new(Mode::Run, 4242, 4242, Vec::new())
        }
    }

    #[test]
    fn round_trip_is_one_line() {
        let line = sample().to_line();
        assert_eq!(line.matches('\n').count(), 1);
        assert!(line.ends_with('\n'));
        assert_eq!(Record::parse(line.as_bytes()).unwrap().0, sample());
    }

    #[test]
    fn unknown_fields_are_ignored_and_kept() {
        let text = r#"{"tool":"resin-lock","v":2,"mode":"acquire","pid":7,"owner":1,"start":"x","future":[1]}"#;
        let (record, value) = Record::parse(text.as_bytes()).unwrap();
        assert_eq!(record.mode, Mode::Acquire);
        assert_eq!(value["future"][0], 1);
    }

    #[test]
    fn foreign_content_is_not_a_record() {
        let foreign: &[&[u8]] = &[
            b"",
            b"0",
            b"0\n",
            b"\xff\xfe garbage",
            b"{}",
            b"[]",
            br#"{"tool":"other","v":1,"mode":"run","pid":1,"owner":1,"start":"x"}"#,
            br#"{"tool":"resin-lock","v":1,"mode":"dance","pid":1,"owner":1,"start":"x"}"#,
            br#"{"tool":"resin-lock","v":1,"mode":"run","pid":0,"owner":1,"start":"x"}"#,
            br#"{"tool":"resin-lock","v":0,"mode":"run","pid":1,"owner":1,"start":"x"}"#,
        ];
        for bytes in foreign {
            assert!(
                Record::parse(bytes).is_none(),
                "{:?}",
                String::from_utf8_lossy(bytes)
            );
        }
    }

    #[test]
    fn a_shared_lock_is_read_with_its_joiners() {
        let shared = Record {
            shared: true,
            ..sample()
        };
        let joiner = Record {
            pid: 77,
            ..shared.clone()
        };
        let text = format!(
            "{}{}{{\"tool\":\"resin-",
            shared.to_line(),
            joiner.to_line()
        );
        let (first, _) = Record::parse(text.as_bytes()).expect("ours");
        assert_eq!(first, shared);
        let pids: Vec<i32> = Record::holders(text.as_bytes())
            .iter()
            .map(|r| r.pid)
            .collect();
        assert_eq!(pids, [4242, 77]);
        // An exclusive record has one line: anything after it is foreign.
        let two = format!("{}{}", sample().to_line(), joiner.to_line());
        assert!(Record::parse(two.as_bytes()).is_none());
        assert!(Record::parse(format!("{}0\n", sample().to_line()).as_bytes()).is_none());
    }

    #[test]
    fn long_command_lines_are_cut_and_still_ours() {
        for (count, width) in [(15_000usize, 5usize), (3, 60_000), (200, 300), (1, 10)] {
            let record = Record {
                cmd: (0..count).map(|i| format!("{i:0width$}")).collect(),
                reason: Some("r".repeat(width)),
                ..sample()
            };
            let line = record.to_line();
            assert!(line.len() <= MAX_WRITE, "{count}x{width}: {}", line.len());
            let (back, _) = Record::parse(line.as_bytes()).expect("still a record");
            assert_eq!(back.pid, record.pid);
            let fits = serde_json::to_string(&record).unwrap().len() < MAX_WRITE;
            assert_eq!(back.cmd_cut, !fits, "{count}x{width}");
            if count >= 100 {
                assert!(back.command_line().contains("more arguments cut"));
            }
        }
    }

    #[test]
    fn a_reason_is_bounded_and_marked_when_cut() {
        let mut record = sample();
        record.set_reason(Some("flashing firmware"));
        assert_eq!(record.reason.as_deref(), Some("flashing firmware"));
        assert!(!record.reason_cut);
        record.set_reason(Some(""));
        assert_eq!(record.reason, None);
        record.set_reason(Some(&"é\n".repeat(10_000)));
        let reason = record.reason.as_deref().unwrap();
        assert!(reason.len() <= MAX_ARG && reason.ends_with('…'), "{reason}");
        assert!(record.reason_cut);
        let line = record.to_line();
        assert!(line.len() <= MAX_WRITE);
        let (back, _) = Record::parse(line.as_bytes()).unwrap();
        assert_eq!((back.reason, back.reason_cut), (record.reason, true));
    }

    #[test]
    fn max_hold_is_kept_in_milliseconds() {
        let mut record = sample();
        record.set_max_hold(Some(std::time::Duration::from_millis(1500)));
        let (back, raw) = Record::parse(record.to_line().as_bytes()).unwrap();
        assert_eq!(
            (back.max_hold_ms, &raw["max_hold_ms"]),
            (Some(1500), &1500.into())
        );
        record.set_max_hold(None);
        assert!(!record.to_line().contains("max_hold"));
    }

    #[test]
    fn a_record_never_begins_with_the_helios_tag() {
        // helios' lock files begin with 0x02 0x63; a file that does is the
        // supervisor's. Whatever a record holds, ours begins with `{`.
        let odd = [
            "\u{2}c",
            "\u{2}\u{63}",
            "",
            "\u{0}",
            "é\n",
            &"x".repeat(70_000),
        ];
        for text in odd {
            let mut record = Record {
                cmd: vec![text.to_owned(); 3],
                service: Some(text.to_owned()),
                ..sample()
            };
            record.set_reason(Some(text));
            for shared in [false, true] {
                record.shared = shared;
                let line = record.to_line();
                assert_eq!(line.as_bytes()[0], b'{', "{text:?}");
                assert!(!line.as_bytes().starts_with(&[0x02, 0x63]));
                assert!(Record::parse(line.as_bytes()).is_some(), "{text:?}");
            }
        }
    }

    #[test]
    fn cutting_keeps_whole_characters() {
        assert_eq!(cut("ééé", 5), "é…");
        assert_eq!(cut("ééé", 3), "…");
        assert_eq!(cut("abc", 3), "abc");
    }

    #[test]
    fn since_reads_the_start_time() {
        assert!(sample().since().starts_with("since 2026-11-27T08:00:00Z"));
        let odd = Record {
            start: "yesterday".into(),
            ..sample()
        };
        assert_eq!(odd.since(), "since yesterday");
    }
}
