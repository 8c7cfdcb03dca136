//! `resin-lock status`: report every lock path, its holder, and how the
//! paths were chosen. Exit 0 when no lock file exists (updates are allowed),
//! 1 when one does (held or stale: both block the supervisor).

use std::io::{self, Write};

use anyhow::{Context as _, Result};
use serde::Serialize;

use super::Context;
use crate::cli::StatusArgs;
use crate::exit::Exit;
use crate::locate::Detection;
use crate::lock::inspect::{Inspection, State, inspect};
use crate::supervisor::{self, DeviceInfo};

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
    let locks = ctx
        .locations
        .targets
        .iter()
        .map(|t| inspect(t).with_context(|| format!("cannot read lock {}", t.path.display())))
        .collect::<Result<Vec<_>>>()?;
    let locked = locks.iter().any(|l| l.state != State::Free);
    let code = if locked { Exit::Busy } else { Exit::Ok }.code();
    if ctx.ui.quiet {
        return Ok(code);
    }
    // Only with --supervisor: plain `status` makes no network request.
    let device = args.supervisor.then(supervisor::device_from_env);
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
        lines.extend(device.iter().flat_map(DeviceInfo::describe));
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
