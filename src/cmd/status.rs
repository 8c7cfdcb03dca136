//! `resin-lock status`: report every lock path, its holder, and how the
//! paths were chosen. Exit 0 when no lock file exists (updates are allowed),
//! 1 when one does (held or stale: both block the supervisor). With
//! `--health` (a Docker HEALTHCHECK), 1 only when a lock blocks updates for
//! nothing (SPEC 4a).

use std::io::{self, Write};
use std::time::{Duration, SystemTime};

use anyhow::Result;
use serde::Serialize;

use super::context::Context;
use crate::cli::StatusArgs;
use crate::exit::{Exit, fail};
use crate::locate::Detection;
use crate::lock::Target;
use crate::lock::dir::parent_of;
use crate::lock::inspect::{Inspection, State, inspect};
use crate::lock::probe::HeldBy;
use crate::supervisor_api::{self, DeviceInfo};
use crate::ui::escape_controls;

#[derive(Serialize)]
struct Report<'a> {
    schema: u32,
    locked: bool,
    locks: Vec<serde_json::Value>,
    detection: &'a Detection,
    /// `--health`: whether the locks are healthy (null when nobody can
    /// tell: another tool's file that nobody flocks), and the line that says why.
    #[serde(skip_serializing_if = "Option::is_none")]
    healthy: Option<Option<bool>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    health: Option<&'a str>,
    /// `--supervisor`: what the supervisor API says about updates.
    #[serde(skip_serializing_if = "Option::is_none")]
    supervisor: Option<&'a DeviceInfo>,
}

pub fn run(ctx: &Context, args: StatusArgs) -> Result<u8> {
    if args.host {
        return super::host::run(ctx, args.json);
    }
    for target in &ctx.locations.targets {
        check_given_dir(target)?;
    }
    let locks = ctx
        .locations
        .targets
        .iter()
        .map(|t| inspect(t).map_err(|err| crate::lock::lock_error("read", &t.path, err)))
        .collect::<Result<Vec<_>>>()?;
    let locked = locks.iter().any(|l| l.state != State::Free);
    let health = args.health.then(|| health(&locks, args.max_hold));
    if args.health {
        reconcile_tags(&locks, &ctx.ui);
    }
    let busy = match &health {
        Some((verdict, _)) => *verdict == Verdict::Unhealthy,
        None => locked,
    };
    let code = if busy { Exit::Busy } else { Exit::Ok }.code();
    if ctx.ui.quiet {
        return Ok(code);
    }
    // Only with --supervisor: plain `status` makes no network request.
    let device = args.supervisor.then(supervisor_api::device_from_env);
    let mut text = if args.json {
        let report = Report {
            schema: 1,
            locked,
            locks: locks.iter().map(lock_json).collect(),
            detection: &ctx.locations.detection,
            healthy: health.as_ref().map(|(verdict, _)| verdict.healthy()),
            health: health.as_ref().map(|(_, line)| line.as_str()),
            supervisor: device.as_ref(),
        };
        serde_json::to_string(&report)?
    } else if let Some((_, line)) = health {
        std::iter::once(line)
            .chain(device.iter().flat_map(supervisor_lines))
            .collect::<Vec<_>>()
            .join("\n")
    } else {
        let mut lines: Vec<String> = locks.iter().map(describe).collect();
        lines.push(format!(
            "lock paths: {}",
            ctx.locations.detection.explanation
        ));
        lines.extend(device.iter().flat_map(supervisor_lines));
        lines.push(
            if locked {
                "updates are blocked"
            } else {
                "updates are allowed"
            }
            .to_owned(),
        );
        lines.join("\n")
    };
    text.push('\n');
    match io::stdout().lock().write_all(text.as_bytes()) {
        Ok(()) => Ok(code),
        // `status | head -0`: nobody is reading; not an error.
        Err(err) if err.kind() == io::ErrorKind::BrokenPipe => Ok(code),
        Err(err) => Err(anyhow::Error::new(err).context("cannot write to stdout")),
    }
}

/// A `--path` (or RESIN_LOCK_PATH) whose directory does not exist names a
/// lock nobody can take (`acquire` fails with 73) and nobody checks: exit
/// 73 with one line, not "free", so a check with a typo in the path fails.
/// A detected path's directory is made when the lock is taken.
fn check_given_dir(target: &Target) -> Result<()> {
    if target.create_parent {
        return Ok(());
    }
    let dir = parent_of(&target.path);
    let why = match std::fs::metadata(dir) {
        Ok(meta) if meta.is_dir() => return Ok(()),
        Ok(_) => format!("{} is not a directory", dir.display()),
        Err(err) if err.kind() == io::ErrorKind::NotFound => {
            format!("directory {} does not exist", dir.display())
        }
        // Anything else (permission denied) is said when the lock is read.
        Err(_) => return Ok(()),
    };
    Err(fail(
        Exit::CantCreate,
        format!(
            "{}: {why}: no lock can be taken there (check --path or RESIN_LOCK_PATH)",
            target.path.display()
        ),
    ))
}

/// What a lock file at `path` holds back: the supervisor (any lock file),
/// and the host OS's reboot check (balenaOS `safe_reboot`, `flock -nx` on
/// files named `updates.lock` only).
pub(super) fn blocks(path: &std::path::Path) -> &'static [&'static str] {
    if path.file_name() == Some(std::ffi::OsStr::new(super::host::REBOOT_CHECKED)) {
        &["supervisor", "host-reboot"]
    } else {
        &["supervisor"]
    }
}

/// `status`'s line for a lock, and where a lock file exists that does not
/// hold back a host OS reboot by its name, that in words.
fn describe(lock: &Inspection) -> String {
    let line = lock.describe();
    if lock.state == State::Free || blocks(&lock.path).contains(&"host-reboot") {
        return line;
    }
    format!(
        "{line}; it does not hold back a host OS reboot (balenaOS checks only files named {})",
        super::host::REBOOT_CHECKED
    )
}

/// A lock for `status --json`, with its `reason`, `held_for_s` and `blocks`.
fn lock_json(lock: &Inspection) -> serde_json::Value {
    let mut value = serde_json::to_value(lock).unwrap_or_default();
    if let Some(fields) = value.as_object_mut() {
        fields.insert("blocks".to_owned(), blocks(&lock.path).into());
        let reason = lock.parsed.as_ref().and_then(|r| r.reason.clone());
        fields.insert("reason".to_owned(), reason.into());
        let held_for = held_for(lock).map(|age| age.as_secs());
        fields.insert("held_for_s".to_owned(), held_for.into());
        // What was last sent for this service's device tag (SPEC 4d).
        let tag = supervisor_api::tags::last_sent(&lock.path, &supervisor_api::tags::key());
        fields.insert(
            "tag".to_owned(),
            serde_json::to_value(tag).unwrap_or_default(),
        );
    }
    value
}

/// `status --health` with device tags on (the variable) puts this
/// service's tag right where it says otherwise than the disk (SPEC 4d):
/// `stale` for a stale lock whose record had tags on, `free` for a free
/// path whose last value sent was `held` or `stale` (a keeper killed, a
/// reboot). Bounded and best effort, as every tag request.
fn reconcile_tags(locks: &[Inspection], ui: &crate::ui::Ui) {
    use supervisor_api::tags::{self, State as Tag};
    if !tags::from_env() {
        return;
    }
    let Ok(config) = supervisor_api::Config::from_env() else {
        return;
    };
    let key = tags::key();
    let service = std::env::var("BALENA_SERVICE_NAME")
        .ok()
        .filter(|s| !s.is_empty());
    for lock in locks {
        let last = tags::last_sent(&lock.path, &key);
        let said = |state: &str| last.as_ref().is_some_and(|s| s.value.starts_with(state));
        let value = match (&lock.state, &lock.parsed) {
            (State::Stale, Some(record))
                if record.tag_after_ms.is_some() && record.service == service && !said("stale") =>
            {
                tags::value(Tag::Stale, record)
            }
            (State::Free, _) if said("held") || said("stale") => tags::free_value(),
            _ => continue,
        };
        let warn = |line: String| ui.warn(line);
        tags::send(&config, std::slice::from_ref(&lock.path), &value, &warn);
    }
}

/// How long a lock file has blocked updates: from its record's start, or
/// for another tool's file from its modification time.
fn held_for(lock: &Inspection) -> Option<Duration> {
    match (&lock.state, &lock.parsed) {
        (State::Free, _) => None,
        (_, Some(record)) => record.held_for(),
        (_, None) => {
            let modified = std::fs::symlink_metadata(&lock.path)
                .ok()?
                .modified()
                .ok()?;
            Some(
                SystemTime::now()
                    .duration_since(modified)
                    .unwrap_or_default(),
            )
        }
    }
}

/// What `status --health` found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    /// Updates are not blocked, or blocked for a reason.
    Healthy,
    /// Blocked by another tool's file that nobody flocks: nobody can tell
    /// whether anyone still uses it. Foreign locks are held, never stale
    /// (SPEC 4a), so this exits 0 like `Healthy`, but it is not called so.
    Unknown,
    /// A lock blocks updates for nothing: exit 1.
    Unhealthy,
}

impl Verdict {
    /// `healthy` in `--json`: null when nobody can tell.
    fn healthy(self) -> Option<bool> {
        match self {
            Verdict::Healthy => Some(true),
            Verdict::Unknown => None,
            Verdict::Unhealthy => Some(false),
        }
    }
}

/// `status --health` (SPEC 4a): healthy unless a lock blocks updates for
/// nothing: stale, or held longer than `max_hold` (never the supervisor's
/// own lock: it is updating); unknown for another tool's file that nobody
/// flocks. The one line that says why.
fn health(locks: &[Inspection], max_hold: Option<Duration>) -> (Verdict, String) {
    let mut held = Vec::new();
    let mut unknown = Vec::new();
    for lock in locks {
        let path = lock.path.display();
        let age = held_for(lock);
        let over = match (max_hold, age) {
            (Some(max), Some(age)) => lock.held_by != Some(HeldBy::Supervisor) && age > max,
            _ => false,
        };
        match lock.state {
            State::Free => {}
            State::Stale => {
                return (
                    Verdict::Unhealthy,
                    format!(
                        "unhealthy: {path} blocks updates for nothing: stale ({}): {}; \
                         the next acquire or run takes it over, `resin-lock release` removes it",
                        lock.stale_reason.as_deref().unwrap_or("?"),
                        lock.holder()
                    ),
                );
            }
            State::Held if over => {
                let age = Duration::from_secs(age.unwrap_or_default().as_secs());
                let max = max_hold.unwrap_or_default();
                return (
                    Verdict::Unhealthy,
                    format!(
                        "unhealthy: {path} held for {}, longer than --max-hold {}: {}",
                        humantime::format_duration(age),
                        humantime::format_duration(max),
                        lock.holder()
                    ),
                );
            }
            State::Held if lock.held_by == Some(HeldBy::Other) => {
                if lock.foreign_flocked == Some(true) {
                    held.push(format!(
                        "{path} held by {}, flocked by a live process",
                        lock.holder()
                    ));
                } else {
                    unknown.push(format!(
                        "{path} is held by {}, which nobody flocks: nobody can tell whether \
                         anyone still uses it; it blocks updates until it is removed \
                         (`resin-lock release --force` once nothing uses it)",
                        lock.holder()
                    ));
                }
            }
            State::Held => held.push(format!("{path} held by {}", lock.holder())),
        }
    }
    if !unknown.is_empty() {
        return (Verdict::Unknown, format!("unknown: {}", unknown.join("; ")));
    }
    if held.is_empty() {
        return (
            Verdict::Healthy,
            "healthy: no update lock is held".to_owned(),
        );
    }
    (Verdict::Healthy, format!("healthy: {}", held.join("; ")))
}

/// The lines of `status --supervisor`, the supervisor's words escaped.
fn supervisor_lines(info: &DeviceInfo) -> Vec<String> {
    let text = |field: &Option<String>, default: &str| {
        escape_controls(field.as_deref().unwrap_or(default))
    };
    // A health check or CI script reads the exit status: it stays the
    // lock's, whatever became of the request, and the line says so.
    const KEPT: &str = "the exit status is the lock's, not the API's";
    if !info.reachable {
        return vec![format!(
            "supervisor: unreachable: {}; {KEPT}",
            text(&info.error, "unknown error")
        )];
    }
    if info.error.is_some() {
        return vec![format!("supervisor: {}; {KEPT}", text(&info.error, ""))];
    }
    let mut lines = vec![format!(
        "supervisor: v{} on {}, {}",
        text(&info.supervisor_version, "unknown"),
        text(&info.os_version, "unknown"),
        text(&info.status, "unknown"),
    )];
    let update = match (info.update_pending, info.update_downloaded) {
        (Some(true), Some(true)) => "an update is pending (downloaded)",
        (Some(true), _) => "an update is pending",
        (Some(false), _) => "no update pending",
        (None, _) => "whether an update is pending is unknown",
    };
    lines.push(format!("supervisor: {update}"));
    if info.update_failed == Some(true) {
        lines.push("supervisor: the last update failed".to_owned());
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn supervisor_lines_of_a_device() {
        let info = DeviceInfo {
            reachable: true,
            supervisor_version: Some("14.4.1".to_owned()),
            os_version: Some("balenaOS 2.88.4".to_owned()),
            update_pending: Some(true),
            update_downloaded: Some(true),
            update_failed: Some(false),
            status: Some("Idle".to_owned()),
            error: None,
        };
        assert_eq!(
            supervisor_lines(&info),
            [
                "supervisor: v14.4.1 on balenaOS 2.88.4, Idle",
                "supervisor: an update is pending (downloaded)"
            ]
        );
        assert_eq!(
            supervisor_lines(&DeviceInfo::unreachable("connection refused")),
            [
                "supervisor: unreachable: connection refused; the exit status is the lock's, not the API's"
            ]
        );
    }

    #[test]
    fn supervisor_lines_escape_what_the_supervisor_said() {
        let info = DeviceInfo {
            reachable: true,
            supervisor_version: Some("1\n2\n".to_owned()),
            os_version: Some("OS\u{1b}[2J".to_owned()),
            status: Some("Idle\rupdates are allowed".to_owned()),
            ..DeviceInfo::default()
        };
        let lines = supervisor_lines(&info);
        assert_eq!(
            lines[0],
            r"supervisor: v1\n2\n on OS\u{1b}[2J, Idle\rupdates are allowed"
        );
        assert!(lines.iter().all(|line| !line.chars().any(char::is_control)));
        let unreachable = supervisor_lines(&DeviceInfo::unreachable("a\nb"));
        assert_eq!(
            unreachable,
            [r"supervisor: unreachable: a\nb; the exit status is the lock's, not the API's"]
        );
    }
}
