//! The device supervisor's HTTP API, for the two things an app stuck behind
//! its own update lock needs: `force-update` (`POST /v1/update` with
//! `{"force":true}`, which overrides update locks) and `status --supervisor`
//! (`GET /v1/device`: is an update waiting?).
//!
//! The supervisor tells a service where its API is and which key to use
//! through `BALENA_SUPERVISOR_ADDRESS` / `BALENA_SUPERVISOR_API_KEY` (or the
//! older `RESIN_` names) when the service has the
//! `io.balena.features.supervisor-api` label. The API is plain HTTP on a
//! local address, so the client has no TLS. Every request is bounded in time,
//! and the API key never reaches a message: it is redacted from anything the
//! HTTP client says.

use std::io;
use std::time::Duration;

use anyhow::Result;
use serde::{Deserialize, Serialize};

use crate::exit::{Exit, fail};

/// The service label that makes the supervisor expose its API to a service.
pub const LABEL: &str = "io.balena.features.supervisor-api";

/// Where the supervisor API is and how to authenticate, as the environment says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// `http://host:port`, without a trailing slash.
    pub address: String,
    pub api_key: String,
    /// The variable the address came from (for `-v`).
    pub address_source: &'static str,
}

/// How long `force-update` waits for the whole exchange, connecting included
/// (the HTTP client has one deadline per request, in whole seconds).
pub const FORCE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long `status --supervisor` waits: short, so a health check never hangs.
pub const STATUS_TIMEOUT: Duration = Duration::from_secs(3);

impl Config {
    /// Read the configuration from the process environment.
    pub fn from_env() -> Result<Config, String> {
        Config::from_lookup(|name| std::env::var(name).ok())
    }

    /// Read the configuration through `lookup` (a variable name to its value):
    /// each `BALENA_` variable wins over its `RESIN_` twin; empty counts as unset.
    /// The error says what is missing and how to get it.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Config, String> {
        let first = |names: [&'static str; 2]| {
            names.into_iter().find_map(|name| {
                lookup(name)
                    .map(|v| v.trim().to_owned())
                    .filter(|v| !v.is_empty())
                    .map(|v| (name, v))
            })
        };
        let hint = format!(
            "the supervisor provides it to services with the label {LABEL}: '1' \
             (docker-compose.yml)"
        );
        let Some((address_source, address)) =
            first(["BALENA_SUPERVISOR_ADDRESS", "RESIN_SUPERVISOR_ADDRESS"])
        else {
            return Err(format!(
                "the supervisor API address is not configured: neither \
                 BALENA_SUPERVISOR_ADDRESS nor RESIN_SUPERVISOR_ADDRESS is set; {hint}"
            ));
        };
        let Some((_, api_key)) = first(["BALENA_SUPERVISOR_API_KEY", "RESIN_SUPERVISOR_API_KEY"])
        else {
            return Err(format!(
                "the supervisor API key is not configured: neither \
                 BALENA_SUPERVISOR_API_KEY nor RESIN_SUPERVISOR_API_KEY is set; {hint}"
            ));
        };
        let address = address.trim_end_matches('/').to_owned();
        let host = address.strip_prefix("http://").unwrap_or_default();
        if host.is_empty() || host.contains(['/', '?', '#', '@']) {
            return Err(format!(
                "{address_source} is not an address like http://127.0.0.1:48484: {address:?}"
            ));
        }
        Ok(Config {
            address,
            api_key,
            address_source,
        })
    }

    /// The full URL of an endpoint, without the key (safe to show).
    pub fn url(&self, endpoint: &str) -> String {
        format!("{}{endpoint}", self.address)
    }
}

/// `POST /v1/update {"force":true}`: ask the supervisor to update now,
/// overriding update locks. `Ok` holds the status of the accepting answer
/// (202 or 204). Errors carry the exit status: 69 when the supervisor cannot
/// be reached, 77 when it refuses the key, 70 for any other answer.
pub fn force_update(config: &Config) -> Result<u16> {
    let url = config.url("/v1/update");
    let answer = request(minreq::post(&url), config, FORCE_TIMEOUT)
        .with_header("Content-Type", "application/json")
        .with_body(r#"{"force":true}"#)
        .send();
    let status = match answer {
        Ok(response) => response.status_code,
        Err(err) => {
            let (exit, why) = explain(&err, FORCE_TIMEOUT);
            return Err(fail(
                exit,
                redact(
                    &format!("cannot reach the supervisor at {url}: {why}"),
                    config,
                ),
            ));
        }
    };
    match status {
        202 | 204 => Ok(status),
        401 | 403 => Err(fail(
            Exit::NoPerm,
            format!(
                "the supervisor refused the API key (HTTP {status}); check \
                 BALENA_SUPERVISOR_API_KEY and the label {LABEL}"
            ),
        )),
        _ => Err(fail(
            Exit::Software,
            format!("unexpected answer from the supervisor at {url}: HTTP {status}"),
        )),
    }
}

/// What `status --supervisor` reports: the supervisor's view of updates.
/// `reachable` says whether an HTTP answer came back; `error` says why the
/// other fields are unknown (null) when they are.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceInfo {
    #[serde(default)]
    pub reachable: bool,
    pub supervisor_version: Option<String>,
    pub os_version: Option<String>,
    pub update_pending: Option<bool>,
    pub update_downloaded: Option<bool>,
    pub update_failed: Option<bool>,
    pub status: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl DeviceInfo {
    /// The report when no answer could be had.
    pub fn unreachable(error: impl Into<String>) -> DeviceInfo {
        DeviceInfo {
            error: Some(error.into()),
            ..DeviceInfo::default()
        }
    }

    /// The human lines of `status --supervisor`.
    pub fn describe(&self) -> Vec<String> {
        let mut lines = Vec::new();
        if !self.reachable {
            lines.push(format!(
                "supervisor: unreachable: {}",
                self.error.as_deref().unwrap_or("unknown error")
            ));
            return lines;
        }
        if let Some(error) = &self.error {
            lines.push(format!("supervisor: {error}"));
            return lines;
        }
        let unknown = || "unknown".to_owned();
        lines.push(format!(
            "supervisor: v{} on {}, {}",
            self.supervisor_version.clone().unwrap_or_else(unknown),
            self.os_version.clone().unwrap_or_else(unknown),
            self.status.clone().unwrap_or_else(unknown),
        ));
        let update = match (self.update_pending, self.update_downloaded) {
            (Some(true), Some(true)) => "an update is pending (downloaded)",
            (Some(true), _) => "an update is pending",
            (Some(false), _) => "no update pending",
            (None, _) => "whether an update is pending is unknown",
        };
        lines.push(format!("supervisor: {update}"));
        if self.update_failed == Some(true) {
            lines.push("supervisor: the last update failed".to_owned());
        }
        lines
    }
}

/// The configuration from the environment, then `device`; never fails.
pub fn device_from_env() -> DeviceInfo {
    match Config::from_env() {
        Ok(config) => device(&config),
        Err(missing) => DeviceInfo::unreachable(missing),
    }
}

/// `GET /v1/device`: the supervisor's view of the device and its updates.
pub fn device(config: &Config) -> DeviceInfo {
    let url = config.url("/v1/device");
    let answer = request(minreq::get(&url), config, STATUS_TIMEOUT)
        .with_header("Accept", "application/json")
        .send();
    let response = match answer {
        Ok(response) => response,
        Err(err) => {
            let (_, why) = explain(&err, STATUS_TIMEOUT);
            return DeviceInfo::unreachable(redact(&format!("{url}: {why}"), config));
        }
    };
    let status = response.status_code;
    let answered = |error: String| DeviceInfo {
        reachable: true,
        error: Some(redact(&error, config)),
        ..DeviceInfo::default()
    };
    if !(200..300).contains(&status) {
        return answered(match status {
            401 | 403 => format!("the supervisor refused the API key (HTTP {status})"),
            _ => format!("unexpected answer from GET /v1/device: HTTP {status}"),
        });
    }
    let body = match response.as_str() {
        Ok(body) => body,
        Err(err) => {
            let why = explain(&err, STATUS_TIMEOUT).1;
            return answered(format!("cannot read the answer: {why}"));
        }
    };
    match serde_json::from_str::<DeviceInfo>(body) {
        Ok(info) => DeviceInfo {
            reachable: true,
            error: None,
            ..info
        },
        Err(err) => answered(format!(
            "GET /v1/device answered something other than device JSON: {err}"
        )),
    }
}

/// `request` set up for the local supervisor: authenticated with `?apikey=`
/// (accepted by every supervisor version), bounded by `timeout`, no
/// redirects. minreq has no TLS and no proxy support unless their features
/// are enabled, and none is.
fn request(request: minreq::Request, config: &Config, timeout: Duration) -> minreq::Request {
    request
        .with_param("apikey", percent_encode(&config.api_key))
        .with_timeout(timeout.as_secs())
        .with_follow_redirects(false)
        .with_header(
            "User-Agent",
            concat!("resin-lock/", env!("CARGO_PKG_VERSION")),
        )
}

/// Why a request got no answer, in words, and the exit status that stands
/// for it: 69 when the supervisor could not be talked to (not there, refused,
/// silent, cut off), 70 for anything else (a garbled answer, a bug).
/// The words may contain the URL; callers redact them.
fn explain(err: &minreq::Error, timeout: Duration) -> (Exit, String) {
    match err {
        minreq::Error::IoError(io) => (
            Exit::Unavailable,
            match io.kind() {
                io::ErrorKind::ConnectionRefused => {
                    "connection refused (is the supervisor running?)".to_owned()
                }
                io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => {
                    format!("no answer within {}", secs(timeout))
                }
                _ => io.to_string(),
            },
        ),
        minreq::Error::AddressNotFound => (Exit::Unavailable, "host not found".to_owned()),
        other => (Exit::Software, other.to_string()),
    }
}

fn secs(d: Duration) -> String {
    format!("{} s", d.as_secs_f32())
}

/// `text` with the API key (plain or percent-encoded) replaced by `***`.
pub fn redact(text: &str, config: &Config) -> String {
    let key = &config.api_key;
    if key.is_empty() {
        return text.to_owned();
    }
    let encoded = percent_encode(key);
    text.replace(key.as_str(), "***").replace(&encoded, "***")
}

/// Percent-encode everything but RFC 3986 unreserved characters.
fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    type Vars<'a> = &'a [(&'a str, &'a str)];

    fn config_of(vars: Vars) -> Result<Config, String> {
        let env: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Config::from_lookup(|name| env.get(name).cloned())
    }

    #[test]
    fn balena_names_win_over_resin_names() {
        let cases: &[(Vars, &str, &str, &str)] = &[
            (
                &[
                    ("BALENA_SUPERVISOR_ADDRESS", "http://127.0.0.1:48484"),
                    ("BALENA_SUPERVISOR_API_KEY", "k1"),
                ],
                "http://127.0.0.1:48484",
                "k1",
                "BALENA_SUPERVISOR_ADDRESS",
            ),
            (
                &[
                    ("RESIN_SUPERVISOR_ADDRESS", "http://10.0.0.1:48484/"),
                    ("RESIN_SUPERVISOR_API_KEY", "k2"),
                ],
                "http://10.0.0.1:48484",
                "k2",
                "RESIN_SUPERVISOR_ADDRESS",
            ),
            (
                &[
                    ("BALENA_SUPERVISOR_ADDRESS", "http://a:1"),
                    ("RESIN_SUPERVISOR_ADDRESS", "http://b:2"),
                    ("BALENA_SUPERVISOR_API_KEY", "kb"),
                    ("RESIN_SUPERVISOR_API_KEY", "kr"),
                ],
                "http://a:1",
                "kb",
                "BALENA_SUPERVISOR_ADDRESS",
            ),
            (
                &[
                    ("BALENA_SUPERVISOR_ADDRESS", ""),
                    ("RESIN_SUPERVISOR_ADDRESS", "http://b:2"),
                    ("RESIN_SUPERVISOR_API_KEY", "kr"),
                ],
                "http://b:2",
                "kr",
                "RESIN_SUPERVISOR_ADDRESS",
            ),
        ];
        for (vars, address, key, source) in cases {
            let config = config_of(vars).unwrap();
            assert_eq!(config.address, *address, "{vars:?}");
            assert_eq!(config.api_key, *key, "{vars:?}");
            assert_eq!(config.address_source, *source, "{vars:?}");
        }
    }

    #[test]
    fn missing_or_bad_configuration_says_what_is_missing() {
        let cases: &[(Vars, &str)] = &[
            (&[], "BALENA_SUPERVISOR_ADDRESS"),
            (
                &[("BALENA_SUPERVISOR_API_KEY", "k")],
                "neither BALENA_SUPERVISOR_ADDRESS nor RESIN_SUPERVISOR_ADDRESS",
            ),
            (
                &[("BALENA_SUPERVISOR_ADDRESS", "http://127.0.0.1:48484")],
                "BALENA_SUPERVISOR_API_KEY",
            ),
            (
                &[
                    ("BALENA_SUPERVISOR_ADDRESS", "https://127.0.0.1:48484"),
                    ("BALENA_SUPERVISOR_API_KEY", "k"),
                ],
                "not an address like",
            ),
            (
                &[
                    ("BALENA_SUPERVISOR_ADDRESS", "http://"),
                    ("BALENA_SUPERVISOR_API_KEY", "k"),
                ],
                "not an address like",
            ),
        ];
        for (vars, needle) in cases {
            let err = config_of(vars).unwrap_err();
            assert!(err.contains(needle), "{vars:?}: {err}");
            if !err.contains("not an address") {
                assert!(err.contains(LABEL), "{vars:?}: {err}");
            }
        }
    }

    #[test]
    fn redaction_hides_plain_and_encoded_keys() {
        let config = Config {
            address: "http://127.0.0.1:1".to_owned(),
            api_key: "a b/c".to_owned(),
            address_source: "BALENA_SUPERVISOR_ADDRESS",
        };
        assert_eq!(
            redact("bad uri: http://x/v1?apikey=a%20b%2Fc and a b/c", &config),
            "bad uri: http://x/v1?apikey=*** and ***"
        );
    }

    #[test]
    fn device_lines() {
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
            info.describe(),
            [
                "supervisor: v14.4.1 on balenaOS 2.88.4, Idle",
                "supervisor: an update is pending (downloaded)"
            ]
        );
        assert_eq!(
            DeviceInfo::unreachable("connection refused").describe(),
            ["supervisor: unreachable: connection refused"]
        );
    }

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
