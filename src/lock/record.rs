//! The record: the one line of JSON that resin-lock writes into every lock
//! file it creates. Anything that is not a valid record is a foreign lock.

use std::time::SystemTime;

use serde::{Deserialize, Serialize};

/// The `tool` value that marks a lock file as resin-lock's.
pub const TOOL: &str = "resin-lock";
/// The record format version written by this build.
pub const VERSION: u32 = 1;
/// Lock files larger than this are not records (and are not read further).
pub const MAX_LEN: usize = 64 * 1024;

/// Who holds a resin-lock lock: an `acquire` keeper or a `run` process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Acquire,
    Run,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Acquire => "acquire",
            Mode::Run => "run",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub tool: String,
    pub v: u32,
    pub mode: Mode,
    /// The process that holds the flock: the keeper for `acquire`, resin-lock itself for `run`.
    pub pid: i32,
    /// The process whose life the lock follows (acquire's owner; run's own pid).
    pub owner: i32,
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
    /// The descriptor number under which `pid` holds this file, when known
    /// (an `acquire` keeper that holds it since its fork): `release` then
    /// checks that one descriptor instead of listing them all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fd: Option<i32>,
}

impl Record {
    /// A record for a lock taken now by this process on this boot.
    pub fn new(mode: Mode, pid: i32, owner: i32, cmd: Vec<String>) -> Record {
        Record {
            tool: TOOL.to_owned(),
            v: VERSION,
            mode,
            pid,
            owner,
            start: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
            boot_id: crate::sys::boot_id().unwrap_or_default(),
            pid_ns: crate::sys::pid_namespace().unwrap_or(0),
            uid: nix::unistd::geteuid().as_raw(),
            cmd,
            fd: None,
        }
    }

    /// The file content: one line of JSON.
    pub fn to_line(&self) -> String {
        let mut line = serde_json::to_string(self).expect("a record always serializes");
        line.push('\n');
        line
    }

    /// Read a lock file's content. `None` means it is not resin-lock's
    /// (empty, `0`, garbage, another tool's JSON): a foreign lock.
    pub fn parse(bytes: &[u8]) -> Option<(Record, serde_json::Value)> {
        if bytes.len() > MAX_LEN {
            return None;
        }
        let value: serde_json::Value = serde_json::from_slice(bytes).ok()?;
        let record: Record = serde_json::from_value(value.clone()).ok()?;
        (record.tool == TOOL && record.v >= 1 && record.pid > 0).then_some((record, value))
    }

    /// The command line to show for the holder.
    pub fn command_line(&self) -> String {
        if self.cmd.is_empty() {
            "?".to_owned()
        } else {
            self.cmd.join(" ")
        }
    }

    /// "since 2026-11-27T08:00:00Z (3m 12s ago)".
    pub fn since(&self) -> String {
        match humantime::parse_rfc3339(&self.start) {
            Ok(start) => {
                let age = SystemTime::now()
                    .duration_since(start)
                    .map(|d| std::time::Duration::from_secs(d.as_secs()))
                    .unwrap_or_default();
                format!(
                    "since {} ({} ago)",
                    self.start,
                    humantime::format_duration(age)
                )
            }
            Err(_) => format!("since {}", self.start),
        }
    }
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
            fd: None,
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
    fn since_reads_the_start_time() {
        assert!(sample().since().starts_with("since 2026-11-27T08:00:00Z"));
        let odd = Record {
            start: "yesterday".into(),
            ..sample()
        };
        assert_eq!(odd.since(), "since yesterday");
    }
}
