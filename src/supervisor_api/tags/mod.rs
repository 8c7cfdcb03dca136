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
//! caller's `warn`, once per hold; nothing here changes a lock or an exit
//! status.
//!
//! What was last sent is noted beside each lock (`note`). Where there is no
//! note (a first hold, or a reboot that cleared /tmp while the tag said
//! `held`), the tag is read back once (`GET /v2/device/tags`) and a stale
//! `held` or `stale` put right.
//!
//! The values come from the few facts of a hold (`Hold`), not from the
//! lock's record: the lock layer calls in here, never the other way.

pub(crate) mod note;

use std::cell::Cell;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::time::{Duration, Instant, SystemTime};

use serde::Deserialize;

use super::client::{Config, call, excerpt, explain, say};
use super::http::Bounds;
use crate::text::escape_controls;
use note::Sent;

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

/// What a note says when it holds a value read back, not sent.
const READ_BACK: &str = "read back (GET /v2/device/tags)";

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
/// `main`), bounded, with every character but `[A-Za-z0-9._-]` made `_`:
/// the key names the note file beside the lock, which must stay one
/// component of that directory (no `/`).
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
        .map(|c| match c {
            'A'..='Z' | 'a'..='z' | '0'..='9' | '.' | '_' | '-' => c,
            _ => '_',
        })
        .collect();
    format!("update-lock.{clean}")
}

/// What a tag says about the lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum State {
    Held,
    Stale,
}

/// The facts of a hold that its tag shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Hold {
    /// When the hold began, RFC 3339 UTC.
    pub(crate) start: String,
    pub(crate) max_hold: Option<Duration>,
    /// `run` or `acquire`.
    pub(crate) mode: &'static str,
    pub(crate) cmd: Vec<String>,
    pub(crate) reason: Option<String>,
}

/// The tag's value: one line of at most `MAX_VALUE` characters, the most
/// useful first (state, since, the max-hold deadline), then the holder
/// (mode and command) and the reason, control characters escaped.
pub(crate) fn value(state: State, hold: &Hold) -> String {
    let mut text = match state {
        State::Held => format!("held since {}", hold.start),
        State::Stale => format!(
            "stale since {} (owner exited without release; held since {})",
            now(),
            hold.start
        ),
    };
    if let Some(until) = humantime::parse_rfc3339(&hold.start)
        .ok()
        .zip(hold.max_hold)
        .and_then(|(start, hold)| start.checked_add(hold))
    {
        text.push_str(&format!(
            "; max-hold until {}",
            humantime::format_rfc3339_seconds(until)
        ));
    }
    text.push_str(&format!("; by {}: {}", hold.mode, hold.cmd.join(" ")));
    if let Some(reason) = &hold.reason {
        text.push_str(&format!("; reason: {reason}"));
    }
    bounded(&escape_controls(&text))
}

/// The value of a free lock.
pub(crate) fn free_value() -> String {
    format!("free since {}", now())
}

/// Whether a tag's value says the lock is held (or stale: held by nobody).
pub(crate) fn says_held(value: &str) -> bool {
    value.starts_with("held") || value.starts_with("stale")
}

fn now() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
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

/// `GET /v2/device/tags`: `{"status":"success","tags":[{"name","value"},…]}`.
#[derive(Deserialize)]
struct TagList {
    tags: Vec<DeviceTag>,
}

#[derive(Deserialize)]
struct DeviceTag {
    name: String,
    value: String,
}

/// The value the device's tag `key` has now (`None`: not set), read with
/// `GET /v2/device/tags`. `Err`: why not, safe to print.
pub(crate) fn read_back(config: &Config, key: &str) -> Result<Option<String>, String> {
    let url = config.url("/v2/device/tags");
    let answer = call(config, "GET", "/v2/device/tags", None, TAG_TIMEOUT).map_err(|err| {
        say(
            &format!("GET {url}: {}", explain(&err, TAG_TIMEOUT).1),
            config,
        )
    })?;
    if !(200..300).contains(&answer.status) {
        return Err(say(
            &format!(
                "GET {url}: HTTP {}{}",
                answer.status,
                excerpt(&answer.body, config)
            ),
            config,
        ));
    }
    let list: TagList = serde_json::from_slice(&answer.body).map_err(|err| {
        say(
            &format!("GET {url} answered something other than a tag list: {err}"),
            config,
        )
    })?;
    Ok(list
        .tags
        .into_iter()
        .find(|tag| tag.name == key)
        .map(|tag| tag.value))
}

/// One warning line at most: the first failure is said, the rest only noted.
pub(crate) struct Warn<'a> {
    say: &'a dyn Fn(String),
    said: Cell<bool>,
}

impl<'a> Warn<'a> {
    pub(crate) fn once(say: &'a dyn Fn(String)) -> Warn<'a> {
        Warn {
            say,
            said: Cell::new(false),
        }
    }

    fn failed(&self, key: &str, why: &str) {
        if !self.said.replace(true) {
            (self.say)(format!("device tag {key}: {why}; the lock is unaffected"));
        }
    }
}

/// Send one value now (bounded) and note it in every directory of `dirs`;
/// a failure goes to `warn`.
pub(crate) fn send(config: &Config, dirs: &[BorrowedFd<'_>], value: &str, warn: &Warn<'_>) {
    let key = key();
    let at = now();
    let result = match publish(config, &key, value) {
        Ok(status) => format!("accepted (HTTP {status})"),
        Err(why) => {
            warn.failed(&key, &why);
            why
        }
    };
    note::write(
        dirs,
        &Sent {
            key,
            value: value.to_owned(),
            at,
            result,
        },
    );
}

/// Where no note of this service's tag is in `dirs` (a first hold since
/// the directory was made: a reboot clears /tmp, not the tag), read the tag
/// back once. `true`: it says `held` or `stale`, which only a hold before
/// the reboot can have sent, so the caller puts it right. Otherwise what it
/// says is noted, so that the next call does not ask again.
pub(crate) fn stale_in_cloud(config: &Config, dirs: &[BorrowedFd<'_>], warn: &Warn<'_>) -> bool {
    let key = key();
    if dirs.is_empty() || dirs.iter().any(|dir| note::read_in(*dir, &key).is_some()) {
        return false;
    }
    match read_back(config, &key) {
        Ok(Some(value)) if says_held(&value) => true,
        Ok(value) => {
            let sent = Sent {
                key,
                value: value.unwrap_or_default(),
                at: now(),
                result: READ_BACK.to_owned(),
            };
            note::write(dirs, &sent);
            false
        }
        Err(why) => {
            warn.failed(&key, &why);
            false
        }
    }
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
    /// Publish `held` for `hold` once `after` has passed (unless the hold
    /// ended first). `dirs`: the held locks' directories (where the notes
    /// go). `warn` says the first failure.
    pub(crate) fn start(
        config: Config,
        hold: Hold,
        dirs: Vec<OwnedFd>,
        after: Duration,
        warn: Box<dyn Fn(String) + Send>,
    ) -> Option<Publisher> {
        let (ends, rx) = mpsc::channel::<End>();
        let (done_tx, done) = mpsc::channel::<()>();
        let started = Instant::now();
        let spawned = std::thread::Builder::new()
            .name("tags".into())
            .stack_size(64 * 1024)
            .spawn(move || {
                let dirs: Vec<BorrowedFd<'_>> = dirs.iter().map(AsFd::as_fd).collect();
                let warn = Warn::once(&*warn);
                let send = |value: &str| send(&config, &dirs, value, &warn);
                // At once: `--tag-after 0`, a stale tagged lock taken over,
                // or a tag left `held` from before a reboot. Then `held` goes
                // out before anything else, however short the hold, so the
                // tag ends right (`free` or `stale`) whatever came first.
                let at_once = after.is_zero() || stale_in_cloud(&config, &dirs, &warn);
                let first = match at_once {
                    true => Err(RecvTimeoutError::Timeout),
                    false => rx.recv_timeout(after.saturating_sub(started.elapsed())),
                };
                let (published, end) = match first {
                    Err(RecvTimeoutError::Timeout) => {
                        send(&value(State::Held, &hold));
                        (true, rx.recv().ok())
                    }
                    Err(RecvTimeoutError::Disconnected) => return,
                    Ok(end) => (false, Some(end)),
                };
                match end {
                    Some(End::Released) if published => send(&free_value()),
                    Some(End::Stale) => send(&value(State::Stale, &hold)),
                    _ => {}
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
    /// most three requests' time to finish (a read back, `held`, `free`).
    pub(crate) fn finish(self, how: End) {
        if self.ends.send(how).is_err() {
            return;
        }
        let _ = self
            .done
            .recv_timeout(TAG_TIMEOUT.total * 3 + Duration::from_millis(200));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_one_file_name_of_plain_characters() {
        assert_eq!(key_for(""), "update-lock.main");
        assert_eq!(key_for("my app\t\n"), "update-lock.my_app");
        assert_eq!(key_for("a b\u{1b}c"), "update-lock.a_b_c");
        assert_eq!(key_for("web-1.v2_x"), "update-lock.web-1.v2_x");
        assert_eq!(
            key_for("a/../../victim/owned"),
            "update-lock.a_.._.._victim_owned"
        );
        assert_eq!(key_for("é/"), "update-lock.__");
        let long = key_for(&"x".repeat(500));
        assert!(long.len() <= "update-lock.".len() + MAX_SERVICE);
        for service in ["/", "..", "a/b", "\u{0}", "ü\\"] {
            let key = key_for(service);
            assert!(
                key.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c)),
                "{key}"
            );
        }
    }

    #[test]
    fn values_are_one_bounded_line() {
        let hold = Hold {
            start: "2026-12-08T01:00:00Z".into(),
            max_hold: Some(Duration::from_secs(60)),
            mode: "run",
            cmd: vec!["sh".into(), "-c".into(), "a\nb".into()],
            reason: Some("é\r".repeat(300)),
        };
        let text = value(State::Held, &hold);
        assert!(
            text.starts_with("held since 2026-12-08T01:00:00Z; "),
            "{text}"
        );
        assert!(
            text.contains("; max-hold until 2026-12-08T01:01:00Z"),
            "{text}"
        );
        assert!(text.contains("; by run: sh -c a\\nb"), "{text}");
        assert!(
            text.chars().count() <= MAX_VALUE,
            "{}",
            text.chars().count()
        );
        assert!(!text.chars().any(char::is_control), "{text}");
        assert!(free_value().starts_with("free since "));
        assert!(value(State::Stale, &hold).starts_with("stale since "));
        assert!(says_held(&value(State::Stale, &hold)) && says_held(&text));
        assert!(!says_held(&free_value()) && !says_held(""));
    }
}
