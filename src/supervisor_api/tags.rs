//! Fleet-visible locks (SPEC 4d): one device tag per service,
//! `update-lock.<service>`, set through the supervisor's
//! `PATCH /v2/device/tags` (v17.8.0+: a flat JSON object of strings, keys
//! without whitespace, 202), so a fleet operator sees in the dashboard who
//! holds a device's update lock, why and since when.
//!
//! Publishing never stands in the lock's way: a `Publisher` is a thread
//! started once the lock is held; it sends `held` once the hold has lasted
//! `--tag-after`, and at the end `free` (only if `held` was sent) or `stale`
//! (the owner of an `acquire` exited without release). Every request is
//! bounded (`TAG_TIMEOUT`); a failure is one warning line through the
//! caller's `warn`; nothing here changes a lock or an exit status.
//!
//! What was last sent, and when, is noted in a small file beside each lock
//! (`<dir>/update-lock.<service>.tag`, JSON), which `status` reads: the
//! record is written once, and the tag's life goes on after it.

use std::fs::File;
use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use super::http::Bounds;
use super::{Config, call, excerpt, explain, say};
use crate::lock::record::Record;
use crate::text::escape_controls;

/// How long one tag request waits: to connect, and for the whole exchange.
pub(crate) const TAG_TIMEOUT: Bounds = Bounds {
    connect: Duration::from_millis(500),
    total: Duration::from_secs(1),
};

/// `--tag-after`'s default: holds shorter than this reach nobody.
pub(crate) const DEFAULT_AFTER: Duration = Duration::from_secs(30);

/// The most characters a tag value has (balenaCloud's limit).
pub(crate) const MAX_VALUE: usize = 255;

/// The most characters of the service name a key keeps.
const MAX_SERVICE: usize = 64;

/// The variables that switch tags on for every hold of a service.
pub(crate) const ENV: [&str; 2] = ["BALENA_LOCK_TAGS", "RESIN_LOCK_TAGS"];

/// Whether tags are on: `--tag`, or `BALENA_LOCK_TAGS`/`RESIN_LOCK_TAGS`
/// set to anything but empty or `0`.
pub(crate) fn wanted(flag: bool) -> bool {
    flag || from_env()
}

/// Whether the environment switches tags on.
pub(crate) fn from_env() -> bool {
    ENV.iter().any(|name| {
        std::env::var(name).is_ok_and(|v| {
            let v = v.trim();
            !v.is_empty() && v != "0"
        })
    })
}

/// The tag's key: `update-lock.<service>` (`BALENA_SERVICE_NAME`, else
/// `main`), whitespace and control characters made `_`, bounded.
pub(crate) fn key() -> String {
    let service = std::env::var("BALENA_SERVICE_NAME").unwrap_or_default();
    key_for(&service)
}

fn key_for(service: &str) -> String {
    let service = service.trim();
    let service = if service.is_empty() { "main" } else { service };
    let clean: String = service
        .chars()
        .take(MAX_SERVICE)
        .map(|c| {
            if c.is_whitespace() || c.is_control() {
                '_'
            } else {
                c
            }
        })
        .collect();
    format!("update-lock.{clean}")
}

/// What a tag says about the lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum State {
    Held,
    Stale,
    Free,
}

/// The tag's value: one line of at most `MAX_VALUE` characters, the most
/// useful first (state, since, the max-hold deadline), then the holder
/// (mode and command) and the reason, control characters escaped.
pub(crate) fn value(state: State, record: &Record) -> String {
    let now = || humantime::format_rfc3339_seconds(SystemTime::now()).to_string();
    let mut text = match state {
        State::Free => return free_value(),
        State::Held => format!("held since {}", record.start),
        State::Stale => format!(
            "stale since {} (owner exited without release; held since {})",
            now(),
            record.start
        ),
    };
    if let Some(until) = humantime::parse_rfc3339(&record.start)
        .ok()
        .zip(record.max_hold())
        .and_then(|(start, hold)| start.checked_add(hold))
    {
        text.push_str(&format!(
            "; max-hold until {}",
            humantime::format_rfc3339_seconds(until)
        ));
    }
    text.push_str(&format!(
        "; by {}: {}",
        record.mode.as_str(),
        record.cmd.join(" ")
    ));
    if let Some(reason) = &record.reason {
        text.push_str(&format!("; reason: {reason}"));
    }
    bounded(&escape_controls(&text))
}

/// The value of a free lock.
pub(crate) fn free_value() -> String {
    format!(
        "free since {}",
        humantime::format_rfc3339_seconds(SystemTime::now())
    )
}

/// `text` cut to `MAX_VALUE` characters (whole characters, a `…` at the cut).
pub(crate) fn bounded(text: &str) -> String {
    if text.chars().count() <= MAX_VALUE {
        return text.to_owned();
    }
    let mut cut: String = text.chars().take(MAX_VALUE - 1).collect();
    cut.push('…');
    cut
}

/// `PATCH /v2/device/tags` with `{key: value}`. `Ok`: the accepting status;
/// `Err`: why not, safe to print.
pub(crate) fn publish(config: &Config, key: &str, value: &str) -> Result<u16, String> {
    let body = serde_json::json!({ key: value }).to_string();
    let url = config.url("/v2/device/tags");
    match call(config, "PATCH", "/v2/device/tags", Some(&body), TAG_TIMEOUT) {
        Ok(answer) if (200..300).contains(&answer.status) => Ok(answer.status),
        Ok(answer) => Err(say(
            &format!(
                "PATCH {url}: HTTP {}{} (device tags need supervisor v17.8.0 or later)",
                answer.status,
                excerpt(&answer.body, config)
            ),
            config,
        )),
        Err(err) => Err(say(
            &format!("PATCH {url}: {}", explain(&err, TAG_TIMEOUT).1),
            config,
        )),
    }
}

/// What was last sent for a tag, noted beside the lock for `status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Sent {
    pub(crate) key: String,
    pub(crate) value: String,
    /// When it was sent, RFC 3339 UTC.
    pub(crate) at: String,
    /// `accepted (HTTP 202)`, or why not.
    pub(crate) result: String,
}

/// The file beside a lock where what was last sent for `key` is noted.
pub(crate) fn note_path(lock: &Path, key: &str) -> Option<PathBuf> {
    Some(lock.parent()?.join(format!("{key}.tag")))
}

/// Note `sent` beside every lock of `locks`: a new file renamed into place
/// (never through a link another user left there). Best effort.
fn note(locks: &[PathBuf], sent: &Sent) {
    let Ok(mut line) = serde_json::to_string(sent) else {
        return;
    };
    line.push('\n');
    for lock in locks {
        let Some(path) = note_path(lock, &sent.key) else {
            continue;
        };
        let tmp = path.with_extension(format!("tag.{}.tmp", std::process::id()));
        let written = File::options()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .and_then(|mut file| file.write_all(line.as_bytes()));
        if written.is_err() || std::fs::rename(&tmp, &path).is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
    }
}

/// What was last sent for the tag `key` of the lock at `lock`, if noted.
/// Untrusted (anyone may write the directory): bounded, and escape it to print.
pub(crate) fn last_sent(lock: &Path, key: &str) -> Option<Sent> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let path = note_path(lock, key)?;
    let file = File::options()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .ok()?;
    if !file.metadata().ok()?.is_file() {
        return None;
    }
    let mut text = Vec::new();
    file.take(4096).read_to_end(&mut text).ok()?;
    serde_json::from_slice(&text).ok()
}

/// The notes of every service beside `lock` (for `status --host`).
pub(crate) fn all_sent(lock: &Path) -> Vec<Sent> {
    let Some(dir) = lock.parent() else {
        return Vec::new();
    };
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut found: Vec<Sent> = entries
        .filter_map(Result::ok)
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let key = name.strip_suffix(".tag")?;
            key.starts_with("update-lock.")
                .then(|| last_sent(lock, key))?
        })
        .collect();
    found.sort_by(|a, b| a.key.cmp(&b.key));
    found
}

/// Send one value now (bounded) and note it; the warning line on failure
/// goes to `warn`.
pub(crate) fn send(config: &Config, locks: &[PathBuf], value: &str, warn: &dyn Fn(String)) {
    let key = key();
    let at = humantime::format_rfc3339_seconds(SystemTime::now()).to_string();
    let result = match publish(config, &key, value) {
        Ok(status) => format!("accepted (HTTP {status})"),
        Err(why) => {
            warn(format!("device tag {key}: {why}; the lock is unaffected"));
            why
        }
    };
    note(
        locks,
        &Sent {
            key,
            value: value.to_owned(),
            at,
            result,
        },
    );
}

/// How a hold ended, for its publisher.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum End {
    /// Released, and the lock file is gone: `free`.
    Released,
    /// Released, but other shared holders keep the lock: the tag stays.
    Left,
    /// The owner exited without release: `stale`.
    Stale,
}

/// A hold's tag, published from a thread of its own.
pub(crate) struct Publisher {
    ends: Sender<End>,
    done: Receiver<()>,
}

impl Publisher {
    /// Publish `held` for `record` once `after` has passed (unless the hold
    /// ended first). `locks`: the held paths (where the notes go).
    pub(crate) fn start(
        config: Config,
        record: Record,
        locks: Vec<PathBuf>,
        after: Duration,
        warn: Box<dyn Fn(String) + Send>,
    ) -> Option<Publisher> {
        let (ends, rx) = mpsc::channel::<End>();
        let (done_tx, done) = mpsc::channel::<()>();
        let spawned = std::thread::Builder::new()
            .name("tags".into())
            .stack_size(64 * 1024)
            .spawn(move || {
                let published = match rx.recv_timeout(after) {
                    Err(RecvTimeoutError::Timeout) => {
                        send(&config, &locks, &value(State::Held, &record), &warn);
                        true
                    }
                    Ok(End::Stale) => false,
                    Ok(End::Released | End::Left) | Err(RecvTimeoutError::Disconnected) => {
                        return;
                    }
                };
                let end = if published { rx.recv() } else { Ok(End::Stale) };
                match end {
                    Ok(End::Released) => send(&config, &locks, &value(State::Free, &record), &warn),
                    Ok(End::Stale) => send(&config, &locks, &value(State::Stale, &record), &warn),
                    Ok(End::Left) | Err(_) => {}
                }
                let _ = done_tx.send(());
            });
        spawned.ok().map(|_| Publisher { ends, done })
    }

    /// Tell the thread how the hold ended (the first word counts), without
    /// waiting for what it sends: the lock's work goes on (`--max-hold`).
    pub(crate) fn end(&self, how: End) {
        let _ = self.ends.send(how);
    }

    /// Tell the thread how the hold ended, if nobody did, and give it at
    /// most two requests' time to finish.
    pub(crate) fn finish(self, how: End) {
        if self.ends.send(how).is_err() {
            return;
        }
        let _ = self
            .done
            .recv_timeout(TAG_TIMEOUT.total * 2 + Duration::from_millis(200));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lock::record::Mode;

    #[test]
    fn keys_have_no_whitespace() {
        assert_eq!(key_for(""), "update-lock.main");
        assert_eq!(key_for("my app\t\n"), "update-lock.my_app");
        assert_eq!(key_for("a b\u{1b}c"), "update-lock.a_b_c");
        let long = key_for(&"x".repeat(500));
        assert!(long.len() <= "update-lock.".len() + MAX_SERVICE);
    }

    #[test]
    fn values_are_one_bounded_line() {
        let mut record = Record::new(
            Mode::Run,
            1,
            1,
            vec!["sh".into(), "-c".into(), "a\nb".into()],
        );
        record.set_reason(Some(&"é\r".repeat(300)));
        record.set_max_hold(Some(Duration::from_secs(60)));
        let text = value(State::Held, &record);
        assert!(text.starts_with("held since "), "{text}");
        assert!(text.contains("; max-hold until "), "{text}");
        assert!(text.contains("; by run: sh -c a\\nb"), "{text}");
        assert!(
            text.chars().count() <= MAX_VALUE,
            "{}",
            text.chars().count()
        );
        assert!(!text.chars().any(char::is_control), "{text}");
        assert!(value(State::Free, &record).starts_with("free since "));
        assert!(value(State::Stale, &record).starts_with("stale since "));
    }
}
