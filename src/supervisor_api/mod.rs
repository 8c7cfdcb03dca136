//! The device supervisor's HTTP API, for what an app around its own update
//! lock needs: `force-update` (`POST /v1/update` with
//! `{"force":true,"cancel":true}`, which overrides update locks), `status --supervisor` (`GET /v1/device`:
//! is an update waiting?) and `--update-now` (after the lock is gone: ask
//! once, then `POST /v1/update` with `{"force":false,"cancel":true}`, so a
//! pending update starts now instead of after the supervisor's backoff).
//!
//! The supervisor tells a service where its API is and which key to use
//! through `BALENA_SUPERVISOR_ADDRESS` / `BALENA_SUPERVISOR_API_KEY` (or the
//! older `RESIN_` names) when the service has the
//! `io.balena.features.supervisor-api` label. This module knows the
//! endpoints, the key, and what each answer means; `http` carries one
//! request and its answer. Every request is bounded in time (connecting
//! and the whole exchange), every answer in size; the API key never
//! reaches a message (the `apikey=` value of a URL is masked, and a key of
//! real length also where the supervisor echoes it verbatim),
//! and text from an answer reaches one with its control characters escaped.

pub mod http;
pub mod tags;

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use anyhow::Result;
use serde::{Deserialize, Serialize};

use crate::exit::{Exit, fail};
use crate::text::escape_controls;
use http::{Answer, Bounds, Request};

/// The service label that makes the supervisor expose its API to a service.
pub(crate) const LABEL: &str = "io.balena.features.supervisor-api";

/// Where the supervisor API is and how to authenticate, as the environment says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Config {
    /// `http://host:port`, without a trailing slash.
    pub(crate) address: String,
    /// Where to connect: the address's IP and port (80 when none is given).
    pub(crate) socket: SocketAddr,
    pub(crate) api_key: String,
    /// The variable the address came from (for `-v`).
    pub(crate) address_source: &'static str,
}

/// How long `force-update` waits: to connect, and for the whole exchange.
pub(crate) const FORCE_TIMEOUT: Bounds = Bounds {
    connect: Duration::from_secs(2),
    total: Duration::from_secs(10),
};

/// How long `status --supervisor` waits: short, so a health check never hangs.
pub(crate) const STATUS_TIMEOUT: Bounds = Bounds {
    connect: Duration::from_secs(1),
    total: Duration::from_secs(3),
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

impl Config {
    /// Read the configuration from the process environment.
    pub(crate) fn from_env() -> Result<Config, String> {
        Config::from_lookup(|name| std::env::var(name).ok())
    }

    /// Read the configuration through `lookup` (a variable name to its value):
    /// each `BALENA_` variable wins over its `RESIN_` twin; empty counts as unset.
    /// The error says what is missing and how to get it.
    pub(crate) fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Config, String> {
        let first = |names: [&'static str; 2]| {
            crate::env::first_set(names, |name| lookup(name).map(|v| v.trim().to_owned()))
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
        let Some(socket) = socket_addr(host) else {
            return Err(format!(
                "{address_source} is not an address like http://127.0.0.1:48484: {address:?}"
            ));
        };
        Ok(Config {
            address,
            socket,
            api_key,
            address_source,
        })
    }

    /// The `Host` header value.
    fn host(&self) -> &str {
        self.address
            .strip_prefix("http://")
            .unwrap_or(&self.address)
    }

    /// The full URL of an endpoint, without the key (safe to show).
    pub(crate) fn url(&self, endpoint: &str) -> String {
        format!("{}{endpoint}", self.address)
    }
}

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
fn device_within(config: &Config, bounds: Bounds) -> DeviceInfo {
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

/// `host[:port]` as a socket address: an IP literal (`[::1]` for IPv6) or
/// `localhost`; port 80 when none is given. No name is resolved.
fn socket_addr(host: &str) -> Option<SocketAddr> {
    let (name, port) = match host.strip_prefix('[') {
        Some(bracketed) => {
            let (ip, after) = bracketed.split_once(']')?;
            match after {
                "" => (ip, None),
                _ => (ip, Some(after.strip_prefix(':')?)),
            }
        }
        None => match host.split_once(':') {
            Some((name, port)) => (name, Some(port)),
            None => (host, None),
        },
    };
    let port = match port {
        Some(port) => port.parse().ok()?,
        None => 80,
    };
    let ip = match name {
        "localhost" => IpAddr::V4(Ipv4Addr::LOCALHOST),
        literal => literal.parse().ok()?,
    };
    Some(SocketAddr::new(ip, port))
}

/// One request to an endpoint, authenticated with `?apikey=` (accepted by
/// every supervisor version), within `bounds`.
fn call(
    config: &Config,
    method: &str,
    endpoint: &str,
    json: Option<&str>,
    bounds: Bounds,
) -> Result<Answer, http::Error> {
    let target = format!("{endpoint}?apikey={}", percent_encode(&config.api_key));
    let request = Request {
        method,
        target: &target,
        host: config.host(),
        json,
    };
    http::exchange(config.socket, &request, bounds)
}

/// Why a request got no usable answer, in words, and the exit status that
/// stands for it: 69 when the supervisor could not be talked to (not there,
/// refused, silent, cut off before answering), 70 for an answer that is not
/// acceptable HTTP.
fn explain(err: &http::Error, bounds: Bounds) -> (Exit, String) {
    let err = match err {
        http::Error::Malformed(why) => return (Exit::Software, why.to_string()),
        http::Error::Io(err) => err,
    };
    match err.kind() {
        io::ErrorKind::ConnectionRefused => (
            Exit::Unavailable,
            "connection refused (is the supervisor running?)".to_owned(),
        ),
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => (
            Exit::Unavailable,
            format!(
                "no answer within {} (connecting: {})",
                secs(bounds.total),
                secs(bounds.connect)
            ),
        ),
        _ => (Exit::Unavailable, err.to_string()),
    }
}

fn secs(d: Duration) -> String {
    // In integers: formatting a float would link core's float printing.
    match d.subsec_millis() {
        0 => format!("{} s", d.as_secs()),
        ms => format!(
            "{}.{} s",
            d.as_secs(),
            format!("{ms:03}").trim_end_matches('0')
        ),
    }
}

/// How much of an answer's body a message quotes, in characters.
const EXCERPT: usize = 120;

/// `: ` and the start of a body, the key redacted before it is cut (so no
/// part of the key is left), or nothing for an empty body.
fn excerpt(body: &[u8], config: &Config) -> String {
    let text = redact(&String::from_utf8_lossy(body), config);
    let text = text.trim();
    if text.is_empty() {
        return String::new();
    }
    let mut chars = text.chars();
    let mut short: String = chars.by_ref().take(EXCERPT).collect();
    if chars.next().is_some() {
        short.push_str("...");
    }
    format!(": {short}")
}

/// A message that may hold text from an answer: the key redacted, control
/// characters escaped (one message, one line).
fn say(text: &str, config: &Config) -> String {
    escape_controls(&redact(text, config))
}

/// A key at least this long is also masked wherever it occurs verbatim (a
/// supervisor that echoes it in a status line or an answer): real keys are
/// 32 or more random characters, which no other text repeats by chance. A
/// shorter one would mask every place its characters occur.
const VERBATIM_KEY: usize = 16;

/// `text` with the API key replaced by `***`: the value of every
/// `apikey=` query parameter (the URL is where the key goes), and a long
/// key (plain or percent-encoded) wherever else it occurs.
pub(crate) fn redact(text: &str, config: &Config) -> String {
    let mut text = mask_apikey_values(text);
    let key = &config.api_key;
    if key.len() >= VERBATIM_KEY {
        text = text.replace(key.as_str(), "***");
        text = text.replace(&percent_encode(key), "***");
    }
    text
}

/// Every `apikey=VALUE` (any case) with VALUE, up to the end of the query
/// parameter, replaced by `***`.
fn mask_apikey_values(text: &str) -> String {
    const NAME: &str = "apikey=";
    let ends = |c: char| c.is_whitespace() || "&#\"'<>,;)]}".contains(c);
    let lower = text.to_ascii_lowercase();
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    while let Some(found) = lower[at..].find(NAME) {
        let value = at + found + NAME.len();
        let end = text[value..].find(ends).map_or(text.len(), |n| value + n);
        out.push_str(&text[at..value]);
        if end > value {
            out.push_str("***");
        }
        at = end;
    }
    out.push_str(&text[at..]);
    out
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
                    ("BALENA_SUPERVISOR_ADDRESS", "http://10.0.0.1:1"),
                    ("RESIN_SUPERVISOR_ADDRESS", "http://10.0.0.2:2"),
                    ("BALENA_SUPERVISOR_API_KEY", "kb"),
                    ("RESIN_SUPERVISOR_API_KEY", "kr"),
                ],
                "http://10.0.0.1:1",
                "kb",
                "BALENA_SUPERVISOR_ADDRESS",
            ),
            (
                &[
                    ("BALENA_SUPERVISOR_ADDRESS", ""),
                    ("RESIN_SUPERVISOR_ADDRESS", "http://10.0.0.2:2"),
                    ("RESIN_SUPERVISOR_API_KEY", "kr"),
                ],
                "http://10.0.0.2:2",
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

    fn config_with_key(api_key: &str) -> Config {
        Config {
            address: "http://127.0.0.1:1".to_owned(),
            socket: "127.0.0.1:1".parse().unwrap(),
            api_key: api_key.to_owned(),
            address_source: "BALENA_SUPERVISOR_ADDRESS",
        }
    }

    #[test]
    fn redaction_hides_the_key_in_urls_and_a_long_key_anywhere() {
        let long = "0123456789abcdef/xyz";
        let config = config_with_key(long);
        assert_eq!(
            redact(
                "bad uri: http://x/v1?apikey=0123456789abcdef%2Fxyz&a=1 and 0123456789abcdef/xyz",
                &config
            ),
            "bad uri: http://x/v1?apikey=***&a=1 and ***"
        );
        // Whatever value a URL's apikey has, and in any case.
        assert_eq!(
            redact("GET /v1?APIKey=other\"x apikey= end apikey=a", &config),
            "GET /v1?APIKey=***\"x apikey= end apikey=***"
        );
    }

    #[test]
    fn a_short_key_is_masked_only_in_urls() {
        for key in ["a", "1", "a b", "k"] {
            let config = config_with_key(key);
            assert_eq!(
                redact(
                    "a 1 at http://127.0.0.1:48484/v1/update?apikey=a%20b k",
                    &config
                ),
                "a 1 at http://127.0.0.1:48484/v1/update?apikey=*** k",
                "{key}"
            );
        }
    }

    #[test]
    fn addresses_are_ip_literals_or_localhost() {
        let ok = [
            ("127.0.0.1:48484", "127.0.0.1:48484"),
            ("172.17.0.1:48484", "172.17.0.1:48484"),
            ("[::1]:48484", "[::1]:48484"),
            ("localhost:48484", "127.0.0.1:48484"),
            ("10.0.0.2", "10.0.0.2:80"),
            ("[::1]", "[::1]:80"),
        ];
        for (host, want) in ok {
            assert_eq!(socket_addr(host), Some(want.parse().unwrap()), "{host}");
        }
        for host in ["", "supervisor:48484", "127.0.0.1:port", "1.2.3.4:99999"] {
            assert_eq!(socket_addr(host), None, "{host}");
        }
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
