//! `resin-lock force-update`: ask the supervisor to update now, overriding
//! update locks (`POST /v1/update` with `{"force":true,"cancel":true}`: on
//! supervisors >= v17.5.0 a plain `force` does nothing while an update waits
//! on locks), for when an app hangs in a critical section. Exit 0 when the
//! supervisor accepts it, 69 when its API is not configured or does not
//! answer, 77 when it refuses the key, 70 for any other answer.
//!
//! Also `--update-now` (`release`, `run`): the gentle request, made after
//! the lock is released, that never changes the exit status.

use std::io::{self, Write};

use anyhow::Result;

use super::context::Context;
use crate::exit::{Exit, fail};
use crate::supervisor_api::{self, Config, FORCE_BODY, UPDATE_NOW_BODY, UpdateNow};
use crate::ui::Ui;

pub fn run(ctx: &Context) -> Result<u8> {
    let config = Config::from_env().map_err(|missing| fail(Exit::Unavailable, missing))?;
    ctx.ui.verbose(|| {
        format!(
            "POST {} {FORCE_BODY} (address from {}, API key given as ?apikey=)",
            config.url("/v1/update"),
            config.address_source
        )
    });
    let status = supervisor_api::force_update(&config)?;
    if ctx.ui.quiet {
        return Ok(Exit::Ok.code());
    }
    let line = format!(
        "the supervisor accepted the forced update (HTTP {status}): it updates now, \
         overriding update locks\n"
    );
    match io::stdout().lock().write_all(line.as_bytes()) {
        // A closed stdout does not undo what the supervisor accepted.
        Ok(()) => Ok(Exit::Ok.code()),
        Err(err) if err.kind() == io::ErrorKind::BrokenPipe => Ok(Exit::Ok.code()),
        Err(err) => Err(anyhow::Error::new(err).context("cannot write to stdout")),
    }
}

/// `--update-now`, after the lock is released: ask the supervisor to apply a
/// pending update at once. Best effort: whatever goes wrong is one warning
/// line (a user who asked for it wants to know the update will wait), and
/// the caller's exit status stays as it is.
pub fn update_now(ui: &Ui) {
    let config = match Config::from_env() {
        Ok(config) => config,
        Err(missing) => {
            ui.warn(format!(
                "--update-now: not asking the supervisor: {missing}"
            ));
            return;
        }
    };
    ui.verbose(|| {
        format!(
            "--update-now: GET {} (address from {}, API key given as ?apikey=)",
            config.url("/v1/device"),
            config.address_source
        )
    });
    let post = || format!("POST {} {UPDATE_NOW_BODY}", config.url("/v1/update"));
    match supervisor_api::update_now(&config) {
        UpdateNow::NotPending => ui.verbose(|| {
            "--update-now: the supervisor says no update is pending; not asking".into()
        }),
        UpdateNow::Unreachable { why } => ui.warn(format!(
            "--update-now: cannot reach the supervisor: {why}; a pending update starts when \
             the supervisor next checks"
        )),
        UpdateNow::Asked {
            pending,
            unsure,
            result,
        } => {
            ui.verbose(|| match (&unsure, pending) {
                (Some(why), _) => {
                    format!("--update-now: update pending unknown ({why}); {}", post())
                }
                _ => format!("--update-now: an update is pending; {}", post()),
            });
            match result {
                Ok(status) => ui.verbose(|| {
                    format!("--update-now: the supervisor accepted (HTTP {status}): it applies a pending update now")
                }),
                Err(why) => ui.warn(format!(
                    "--update-now: {why}; a pending update starts when the supervisor next checks"
                )),
            }
        }
    }
}
