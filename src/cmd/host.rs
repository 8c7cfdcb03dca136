//! `resin-lock status --host`: every app's update locks, as the balenaOS
//! host sees them, for an operator in a host shell (where a static binary is
//! the only kind that runs). The supervisor bind-mounts
//! `/tmp/balena-supervisor/services/<appId>/<service>/` into each service as
//! its lock directory; a lock there is `updates.lock` or (older supervisors)
//! `resin-updates.lock`. Each file is judged as `status` judges a lock path
//! (`lock::inspect`), then said in host terms: which app and service, who
//! holds it (pids are the container's, not the host's), why, for how long,
//! and what it blocks: the supervisor (any lock file but its own) and the
//! host OS's `safe_reboot` (`flock -nx` on files named `updates.lock`).
//! Whether the supervisor overrides locks comes from the target state's
//! config that the supervisor dumps to `/tmp/balena-supervisor/target-state-config`.

use std::ffi::{OsStr, OsString};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::Result;
use nix::fcntl::OFlag;
use serde::Serialize;

use super::context::Context;
use crate::exit::Exit;
use crate::lock::Target;
use crate::lock::dir::LockDir;
use crate::lock::inspect::{Inspection, State, inspect};
use crate::lock::probe::{HeldBy, flock_held};
use crate::lock::record::Mode;
use crate::ui::escape_controls;

/// Where the supervisor keeps each service's lock directory, under the root.
const SERVICES: &str = "tmp/balena-supervisor/services";
/// The supervisor's dump of the target state's config (JSON), under the root.
const TARGET_STATE_CONFIG: &str = "tmp/balena-supervisor/target-state-config";
/// The lock names the supervisor checks; `safe_reboot` only the first.
const NAMES: [&str; 2] = [REBOOT_CHECKED, "resin-updates.lock"];
/// The one lock name balenaOS's `safe_reboot` checks.
pub(super) const REBOOT_CHECKED: &str = "updates.lock";
/// The most of `target-state-config` that is read.
const MAX_CONFIG: u64 = 1024 * 1024;

#[derive(Serialize)]
struct Report {
    schema: u32,
    /// Whether any lock file exists (held, stale or foreign).
    locked: bool,
    root: String,
    /// Every service directory found, locked or not.
    services: Vec<Service>,
    locks: Vec<HostLock>,
    /// Whether the supervisor overrides update locks; null when unknown.
    lock_override: Option<bool>,
    /// Where `lock_override` comes from, or why it is unknown.
    lock_override_source: String,
}

#[derive(Serialize)]
struct Service {
    app_id: String,
    service: String,
}

#[derive(Serialize)]
struct HostLock {
    app_id: String,
    service: String,
    file: &'static str,
    path: String,
    /// "held" | "stale" | "foreign" (another tool's or the supervisor's).
    state: &'static str,
    held_by: Option<HeldBy>,
    /// The holder, in words.
    holder: String,
    /// The holder's pid and pid namespace, from the record: the
    /// container's pid namespace, not the host's.
    container_pid: Option<i32>,
    pid_namespace: Option<u64>,
    reason: Option<String>,
    /// Seconds since the lock was taken (the record), or since the file
    /// was last written (a foreign lock).
    held_for_s: Option<u64>,
    /// "supervisor" and/or "host-reboot".
    blocks: Vec<&'static str>,
    stale_reason: Option<String>,
    record: Option<serde_json::Value>,
    /// The device tags last sent for this lock, per service (SPEC 4d), as
    /// noted beside it: untrusted, escaped when printed.
    tags: Vec<crate::supervisor_api::tags::Sent>,
}

/// The report; `json`: one JSON object instead of text. `--path` does not
/// apply (the locks are found, not named); the root is `--root` or `/`.
pub fn run(ctx: &Context, json: bool) -> Result<u8> {
    let root = PathBuf::from(&ctx.locations.detection.root);
    let services_dir = root.join(SERVICES);
    let mut services = Vec::new();
    let mut locks = Vec::new();
    for app in entries(&root, &services_dir)? {
        let app_dir = services_dir.join(&app);
        for service in entries(&root, &app_dir)? {
            let shown = |name: &OsStr| escape_controls(&name.to_string_lossy());
            services.push(Service {
                app_id: shown(&app),
                service: shown(&service),
            });
            for file in NAMES {
                let path = app_dir.join(&service).join(file);
                if let Some(lock) = look(&root, &path, file)? {
                    locks.push(HostLock {
                        app_id: shown(&app),
                        service: shown(&service),
                        ..lock
                    });
                }
            }
        }
    }
    let (lock_override, lock_override_source) = lock_override(&root);
    let locked = !locks.is_empty();
    let code = if locked { Exit::Busy } else { Exit::Ok }.code();
    if ctx.ui.quiet {
        return Ok(code);
    }
    let report = Report {
        schema: 1,
        locked,
        root: root.to_string_lossy().into_owned(),
        services,
        locks,
        lock_override,
        lock_override_source,
    };
    let mut text = if json {
        serde_json::to_string(&report)?
    } else {
        lines(&report).join("\n")
    };
    text.push('\n');
    match io::stdout().lock().write_all(text.as_bytes()) {
        Ok(()) => Ok(code),
        Err(err) if err.kind() == io::ErrorKind::BrokenPipe => Ok(code),
        Err(err) => Err(anyhow::Error::new(err).context("cannot write to stdout")),
    }
}

/// The names in `dir` (under `root`, never through a symlink that leaves
/// it), sorted; none when it is missing or not a directory.
fn entries(root: &Path, dir: &Path) -> Result<Vec<OsString>> {
    let opened = LockDir::open(&target(root, &dir.join("-")));
    let names = match opened.and_then(|dir| dir.names()) {
        Ok(names) => names,
        Err(err) if gone(&err) => return Ok(Vec::new()),
        Err(err) => return Err(crate::lock::lock_error("read", dir, err)),
    };
    let mut names: Vec<OsString> = names
        .into_iter()
        .filter(|n| n != "." && n != "..")
        .collect();
    names.sort();
    Ok(names)
}

fn gone(err: &io::Error) -> bool {
    err.kind() == io::ErrorKind::NotFound
        || matches!(err.raw_os_error(), Some(libc::ENOTDIR | libc::ELOOP))
}

/// A path under the root, to be resolved inside it.
fn target(root: &Path, path: &Path) -> Target {
    Target {
        path: path.to_owned(),
        create_parent: false,
        root: (root != Path::new("/")).then(|| root.to_owned()),
    }
}

/// The lock file at `path`, if there is one, judged as `status` does.
fn look(root: &Path, path: &Path, file: &'static str) -> Result<Option<HostLock>> {
    let target = target(root, path);
    let read_error = |err| crate::lock::lock_error("read", path, err);
    let seen = inspect(&target).map_err(read_error)?;
    if seen.state == State::Free {
        return Ok(None);
    }
    // What only the file itself says: when it was written, and whether
    // anyone has it flocked (a foreign lock; ours say it in their state).
    let (mtime, flocked) = match LockDir::open(&target) {
        Ok(dir) => {
            let name = OsStr::new(file);
            let mtime = dir.stat(name).ok().flatten().map(|st| st.st_mtime);
            let flags = OFlag::O_RDONLY | OFlag::O_NONBLOCK | OFlag::O_NOCTTY;
            let flocked = dir
                .open_file(name, flags, 0)
                .and_then(|f| flock_held(&f, false))
                .unwrap_or(false);
            (mtime, flocked)
        }
        Err(_) => (None, false),
    };
    Ok(Some(host_lock(&seen, file, mtime, flocked)))
}

fn host_lock(seen: &Inspection, file: &'static str, mtime: Option<i64>, flocked: bool) -> HostLock {
    let record = seen.parsed.as_ref();
    let ours = seen.held_by == Some(HeldBy::ResinLock);
    let state = match seen.state {
        State::Stale => "stale",
        _ if ours => "held",
        _ => "foreign",
    };
    let holder = match record {
        Some(r) => {
            let pids = match r.mode {
                Mode::Acquire => format!(
                    "keeper pid {}, owner pid {} in the container's pid namespace",
                    r.pid, r.owner
                ),
                Mode::Hold => format!(
                    "pid {}, for pid {} in the container's pid namespace",
                    r.pid, r.owner
                ),
                Mode::Run => format!("pid {} in the container's pid namespace", r.pid),
            };
            format!(
                "resin-lock {}{} ({pids}: {})",
                r.mode.as_str(),
                crate::lock::inspect::service_of(r),
                escape_controls(&r.command_line())
            )
        }
        None => seen.holder(),
    };
    let now = SystemTime::now();
    let since = record
        .and_then(|r| humantime::parse_rfc3339(&r.start).ok())
        .or_else(|| {
            let secs = u64::try_from(mtime?).ok()?;
            SystemTime::UNIX_EPOCH.checked_add(Duration::from_secs(secs))
        });
    let held_for_s = since
        .and_then(|t| now.duration_since(t).ok())
        .map(|d| d.as_secs());
    let mut blocks = Vec::new();
    // The supervisor's own lock (uid 65534) is the supervisor updating.
    if seen.held_by != Some(HeldBy::Supervisor) {
        blocks.push("supervisor");
    }
    // safe_reboot: `flock -nx` on files named updates.lock. A live
    // resin-lock holder always has the file flocked.
    if file == NAMES[0] && ((ours && seen.state == State::Held) || (!ours && flocked)) {
        blocks.push("host-reboot");
    }
    HostLock {
        app_id: String::new(),
        service: String::new(),
        file,
        path: seen.path.to_string_lossy().into_owned(),
        state,
        held_by: seen.held_by,
        holder,
        container_pid: record.map(|r| r.pid),
        pid_namespace: record.map(|r| r.pid_ns).filter(|&ns| ns != 0),
        reason: record.and_then(|r| r.reason.clone()),
        held_for_s,
        blocks,
        stale_reason: seen.stale_reason.clone(),
        tags: crate::supervisor_api::tags::all_sent(&seen.path),
        record: seen.record.clone(),
    }
}

/// Whether the target state's config sets `SUPERVISOR_OVERRIDE_LOCK` (or
/// the older `OVERRIDE_LOCK`, either with a `BALENA_`/`RESIN_` prefix) to a
/// true value, and where that was read; `None` when there is no such file
/// or it is not a JSON object.
fn lock_override(root: &Path) -> (Option<bool>, String) {
    let path = root.join(TARGET_STATE_CONFIG);
    let shown = path.display();
    let read = || -> io::Result<Vec<u8>> {
        let dir = LockDir::open(&target(root, &path))?;
        let flags = OFlag::O_RDONLY | OFlag::O_NONBLOCK | OFlag::O_NOCTTY;
        let mut bytes = Vec::new();
        dir.open_file(OsStr::new("target-state-config"), flags, 0)?
            .take(MAX_CONFIG)
            .read_to_end(&mut bytes)?;
        Ok(bytes)
    };
    let bytes = match read() {
        Ok(bytes) => bytes,
        Err(err) if gone(&err) => return (None, format!("unknown: no {shown}")),
        Err(err) => return (None, format!("unknown: cannot read {shown}: {err}")),
    };
    let Ok(serde_json::Value::Object(config)) = serde_json::from_slice(&bytes) else {
        return (None, format!("unknown: {shown} is not a JSON object"));
    };
    let keys = ["SUPERVISOR_OVERRIDE_LOCK", "OVERRIDE_LOCK"];
    let found = keys.iter().find_map(|key| {
        ["", "BALENA_", "RESIN_"].iter().find_map(|prefix| {
            let name = format!("{prefix}{key}");
            config.get(&name).map(|value| (name, value.clone()))
        })
    });
    match found {
        Some((name, value)) => {
            let on = match &value {
                serde_json::Value::String(s) => {
                    matches!(s.trim().to_ascii_lowercase().as_str(), "1" | "true" | "on")
                }
                serde_json::Value::Bool(b) => *b,
                serde_json::Value::Number(n) => n.as_u64() == Some(1),
                _ => false,
            };
            let value = escape_controls(&value.to_string());
            (Some(on), format!("{name}={value} in {shown}"))
        }
        None => (
            Some(false),
            format!("SUPERVISOR_OVERRIDE_LOCK is not set in {shown}"),
        ),
    }
}

/// The text report: one line per lock (or per service without one), then
/// the override and the verdict.
fn lines(report: &Report) -> Vec<String> {
    let mut lines = Vec::new();
    for service in &report.services {
        let mine = report
            .locks
            .iter()
            .filter(|l| l.app_id == service.app_id && l.service == service.service);
        let mut any = false;
        for lock in mine {
            any = true;
            lines.push(lock_line(lock));
        }
        if !any {
            lines.push(format!(
                "app {} service {}: free",
                service.app_id, service.service
            ));
        }
    }
    if report.services.is_empty() {
        lines.push(format!(
            "no service lock directories under {}",
            Path::new(&report.root).join(SERVICES).display()
        ));
    }
    lines.push(match report.lock_override {
        Some(true) => format!(
            "lock override: on ({}): the supervisor updates without waiting for these locks",
            report.lock_override_source
        ),
        Some(false) => format!("lock override: off ({})", report.lock_override_source),
        None => format!("lock override: {}", report.lock_override_source),
    });
    lines.push(
        if report.locked {
            "updates are blocked"
        } else {
            "updates are allowed"
        }
        .to_owned(),
    );
    lines
}

fn lock_line(lock: &HostLock) -> String {
    let state = match (lock.state, &lock.stale_reason) {
        ("stale", Some(why)) => format!("stale ({why}), was held by"),
        ("stale", None) => "stale, was held by".to_owned(),
        _ => "held by".to_owned(),
    };
    let reason = lock
        .reason
        .as_deref()
        .map(|r| format!(", reason: {}", escape_controls(r)))
        .unwrap_or_default();
    let age = lock
        .held_for_s
        .map(|s| {
            format!(
                ", for {}",
                humantime::format_duration(Duration::from_secs(s))
            )
        })
        .unwrap_or_default();
    let blocks = match (
        lock.blocks.contains(&"supervisor"),
        lock.blocks.contains(&"host-reboot"),
    ) {
        (true, true) => "blocks the supervisor and safe_reboot",
        (true, false) => "blocks the supervisor, not safe_reboot",
        (false, true) => "the supervisor's own lock; blocks safe_reboot",
        (false, false) => "the supervisor's own lock; blocks neither",
    };
    let tags: String = lock
        .tags
        .iter()
        .map(|t| {
            format!(
                "; device tag {} sent {}: {}",
                escape_controls(&t.key),
                escape_controls(&t.at),
                escape_controls(&t.value)
            )
        })
        .collect();
    format!(
        "app {} service {}: {}: {state} {}{reason}{age}; {blocks}{tags}",
        lock.app_id, lock.service, lock.file, lock.holder
    )
}
