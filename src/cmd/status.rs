//! `resin-lock status`: report every lock path, its holder, and how the
//! paths were chosen. Exit 0 when no lock file exists (updates are allowed),
//! 1 when one does (held or stale: both block the supervisor).

use std::io::{self, Write};

use anyhow::Result;
use serde::Serialize;

use super::Context;
use crate::cli::StatusArgs;
use crate::exit::Exit;
use crate::locate::Detection;
use crate::lock::inspect::{Inspection, State, inspect};
use crate::supervisor_api::{self, DeviceInfo};
use crate::ui::escape_controls;

#[derive(Serialize)]
struct Report<'a> {
    schema: u32,
    locked: bool,
    locks: &'a [Inspection],
    detection: &'a Detection,
    /// `--supervisor`: what the supervisor API says about updates.
    #[serde(skip_serializing_if = "Option::is_none")]
    supervisor: Option<&'a DeviceInfo>,
}

pub fn run(ctx: &Context, args: StatusArgs) -> Result<u8> {
    if args.host {
        return super::host::run(ctx, args.json);
    }
    let locks = ctx
        .locations
        .targets
        .iter()
        .map(|t| inspect(t).map_err(|err| crate::lock::lock_error("read", &t.path, err)))
        .collect::<Result<Vec<_>>>()?;
    let locked = locks.iter().any(|l| l.state != State::Free);
    let code = if locked { Exit::Busy } else { Exit::Ok }.code();
    if ctx.ui.quiet {
        return Ok(code);
    }
    // Only with --supervisor: plain `status` makes no network request.
    let device = args.supervisor.then(supervisor_api::device_from_env);
    let mut text = if args.json {
        let report = Report {
            schema: 1,
            locked,
            locks: &locks,
            detection: &ctx.locations.detection,
            supervisor: device.as_ref(),
        };
        serde_json::to_string(&report)?
    } else {
        let mut lines: Vec<String> = locks.iter().map(Inspection::describe).collect();
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

/// The lines of `status --supervisor`, the supervisor's words escaped.
fn supervisor_lines(info: &DeviceInfo) -> Vec<String> {
    let text = |field: &Option<String>, default: &str| {
        escape_controls(field.as_deref().unwrap_or(default))
    };
    if !info.reachable {
        return vec![format!(
            "supervisor: unreachable: {}",
            text(&info.error, "unknown error")
        )];
    }
    if info.error.is_some() {
        return vec![format!("supervisor: {}", text(&info.error, ""))];
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
            ["supervisor: unreachable: connection refused"]
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
        assert_eq!(unreachable, [r"supervisor: unreachable: a\nb"]);
    }
}
