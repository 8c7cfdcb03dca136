//! `GET /v1/device` for `status --supervisor` and `--update-now`: the
//! supervisor's view of the device and its updates (is one pending?).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::client::{Config, call, excerpt, explain, redact, say};
use super::http::Bounds;
use crate::exit::Exit;

/// How long `status --supervisor` waits: short, so a health check never hangs.
pub(crate) const STATUS_TIMEOUT: Bounds = Bounds {
    connect: Duration::from_secs(1),
    total: Duration::from_secs(3),
};

/// What `status --supervisor` reports: the supervisor's view of updates.
/// `reachable` says whether the supervisor answered; `error` says why the
/// other fields are unknown (null) when they are. Strings are as the
/// supervisor sent them (the API key aside): escape them to print them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct DeviceInfo {
    #[serde(default)]
    pub(crate) reachable: bool,
    pub(crate) supervisor_version: Option<String>,
    pub(crate) os_version: Option<String>,
    pub(crate) update_pending: Option<bool>,
    pub(crate) update_downloaded: Option<bool>,
    pub(crate) update_failed: Option<bool>,
    pub(crate) status: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) error: Option<String>,
}

impl DeviceInfo {
    /// The report when no answer could be had.
    pub(crate) fn unreachable(error: impl Into<String>) -> DeviceInfo {
        DeviceInfo {
            error: Some(error.into()),
            ..DeviceInfo::default()
        }
    }

    /// The report when the supervisor answered, but not with device JSON.
    fn answered(error: impl Into<String>) -> DeviceInfo {
        DeviceInfo {
            reachable: true,
            error: Some(error.into()),
            ..DeviceInfo::default()
        }
    }
}

/// The configuration from the environment, then `device`; never fails.
pub(crate) fn device_from_env() -> DeviceInfo {
    match Config::from_env() {
        Ok(config) => device(&config),
        Err(missing) => DeviceInfo::unreachable(missing),
    }
}

/// `GET /v1/device`: the supervisor's view of the device and its updates.
pub(crate) fn device(config: &Config) -> DeviceInfo {
    device_within(config, STATUS_TIMEOUT)
}

/// `GET /v1/device` within `bounds`.
pub(super) fn device_within(config: &Config, bounds: Bounds) -> DeviceInfo {
    let url = config.url("/v1/device");
    let answer = match call(config, "GET", "/v1/device", None, bounds) {
        Ok(answer) => answer,
        Err(err) => {
            return match explain(&err, bounds) {
                (Exit::Software, why) => {
                    DeviceInfo::answered(say(&format!("bad answer from {url}: {why}"), config))
                }
                (_, why) => DeviceInfo::unreachable(say(&format!("{url}: {why}"), config)),
            };
        }
    };
    let status = answer.status;
    if !(200..300).contains(&status) {
        return DeviceInfo::answered(say(
            &match status {
                401 | 403 => format!("the supervisor refused the API key (HTTP {status})"),
                _ => format!(
                    "unexpected answer from GET /v1/device: HTTP {status}{}",
                    excerpt(&answer.body, config)
                ),
            },
            config,
        ));
    }
    match serde_json::from_slice::<DeviceInfo>(&answer.body) {
        Ok(info) => {
            let hide = |field: Option<String>| field.map(|text| redact(&text, config));
            DeviceInfo {
                reachable: true,
                supervisor_version: hide(info.supervisor_version),
                os_version: hide(info.os_version),
                status: hide(info.status),
                error: None,
                ..info
            }
        }
        Err(err) => DeviceInfo::answered(say(
            &format!("GET /v1/device answered something other than device JSON: {err}"),
            config,
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_json_ignores_unknown_fields() {
        let body = r#"{"api_port":48484,"ip_address":"10.0.0.2","os_version":"balenaOS 2.88.4",
            "supervisor_version":"14.4.1","update_pending":false,"update_failed":false,
            "update_downloaded":false,"status":"Idle","download_progress":null}"#;
        let info: DeviceInfo = serde_json::from_str(body).unwrap();
        assert_eq!(info.supervisor_version.as_deref(), Some("14.4.1"));
        assert_eq!(info.update_pending, Some(false));
        assert_eq!(info.status.as_deref(), Some("Idle"));
    }
}
