//! `POST /v1/update`: `force-update` (override the update locks) and
//! `--update-now` (after the lock is gone: if an update is pending, start
//! it now instead of after the supervisor's backoff).

use std::time::Duration;

use anyhow::Result;

use super::client::{Config, LABEL, call, excerpt, explain, say};
use super::device::device_within;
use super::http::Bounds;
use crate::exit::{Exit, fail};

/// How long `force-update` waits: to connect, and for the whole exchange.
pub(crate) const FORCE_TIMEOUT: Bounds = Bounds {
    connect: Duration::from_secs(2),
    total: Duration::from_secs(10),
};

/// How long each of `--update-now`'s two requests waits. Both together stay
/// within 2 s: the lock is already released, and the caller's exit (or its
/// next job) waits for us.
pub(crate) const UPDATE_NOW_TIMEOUT: Bounds = Bounds {
    connect: Duration::from_millis(500),
    total: Duration::from_secs(1),
};

/// The body of `force-update`'s request: override update locks (`force`)
/// and end an apply that waits on them (`cancel`), so the forced one starts.
/// Since v17.5.0 a plain `force` is accepted and ignored while an update
/// waits on locks (balena-supervisor issue 2541); supervisors before v17.1
/// do not know `cancel` and ignore it.
pub(crate) const FORCE_BODY: &str = r#"{"force":true,"cancel":true}"#;

/// The body of `--update-now`'s request: apply a pending update, respecting
/// update locks (`force: false`), and cut short the supervisor's backoff
/// (`cancel: true`).
pub(crate) const UPDATE_NOW_BODY: &str = r#"{"force":false,"cancel":true}"#;

/// `POST /v1/update` with `FORCE_BODY`: ask the supervisor to update now,
/// overriding update locks. `Ok` holds the status of the accepting answer
/// (202 or 204). Errors carry the exit status: 69 when the supervisor cannot
/// be reached, 77 when it refuses the key, 70 for any other answer.
pub(crate) fn force_update(config: &Config) -> Result<u16> {
    post_update(config, FORCE_BODY, FORCE_TIMEOUT)
}

/// `POST /v1/update` with `json`, within `bounds`; the answers as `force_update`.
fn post_update(config: &Config, json: &str, bounds: Bounds) -> Result<u16> {
    let url = config.url("/v1/update");
    let answer = match call(config, "POST", "/v1/update", Some(json), bounds) {
        Ok(answer) => answer,
        Err(err) => {
            let (exit, why) = explain(&err, bounds);
            let what = match exit {
                Exit::Software => "bad answer from",
                _ => "cannot reach",
            };
            return Err(fail(
                exit,
                say(&format!("{what} the supervisor at {url}: {why}"), config),
            ));
        }
    };
    match answer.status {
        status @ (200 | 202 | 204) => Ok(status),
        status @ (401 | 403) => Err(fail(
            Exit::NoPerm,
            format!(
                "the supervisor refused the API key (HTTP {status}); check \
                 BALENA_SUPERVISOR_API_KEY and the label {LABEL}"
            ),
        )),
        status => Err(fail(
            Exit::Software,
            say(
                &format!(
                    "unexpected answer from the supervisor at {url}: HTTP {status}{}",
                    excerpt(&answer.body, config)
                ),
                config,
            ),
        )),
    }
}

/// What `--update-now` did, for the command to put in words.
#[derive(Debug)]
pub(crate) enum UpdateNow {
    /// The supervisor says no update is pending: nothing was asked.
    NotPending,
    /// The supervisor could not be reached to ask (nothing was posted: a
    /// POST would not reach it either). `why` is safe to print.
    Unreachable { why: String },
    /// `POST /v1/update` was sent. `pending`: what `GET /v1/device` said
    /// (`None`: it could not say, and `unsure` says why); `result`: the
    /// accepting status, or why the supervisor did not accept (safe to print).
    Asked {
        pending: Option<bool>,
        unsure: Option<String>,
        result: Result<u16, String>,
    },
}

/// After a lock is released: if an update is pending (or the supervisor
/// cannot say), ask the supervisor to apply it now. Never more than two
/// requests, each within `UPDATE_NOW_TIMEOUT`; never fails.
pub(crate) fn update_now(config: &Config) -> UpdateNow {
    let info = device_within(config, UPDATE_NOW_TIMEOUT);
    if !info.reachable {
        let why = info.error.unwrap_or_else(|| "no answer".to_owned());
        return UpdateNow::Unreachable { why };
    }
    if info.error.is_none() && info.update_pending == Some(false) {
        return UpdateNow::NotPending;
    }
    let unsure = info.error.or_else(|| {
        info.update_pending
            .is_none()
            .then(|| "GET /v1/device did not say update_pending".to_owned())
    });
    let result =
        post_update(config, UPDATE_NOW_BODY, UPDATE_NOW_TIMEOUT).map_err(|err| format!("{err:#}"));
    UpdateNow::Asked {
        pending: info.update_pending,
        unsure,
        result,
    }
}
