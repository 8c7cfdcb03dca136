//! The device supervisor's HTTP API, for the two things an app stuck behind
//! its own update lock needs: `force-update` (`POST /v1/update` with
//! `{"force":true}`, which overrides update locks) and `status --supervisor`
//! (`GET /v1/device`: is an update waiting?).
//!
//! The supervisor tells a service where its API is and which key to use
//! through `BALENA_SUPERVISOR_ADDRESS` / `BALENA_SUPERVISOR_API_KEY` (or the
//! older `RESIN_` names) when the service has the
//! `io.balena.features.supervisor-api` label. The API is plain HTTP on a
//! local address (an IP literal), so the client is one HTTP/1.1 exchange
//! over a std `TcpStream`: no TLS, no proxy, no redirects, and no DNS. An
//! HTTP crate would resolve names through getaddrinfo, which costs about
//! 300 KiB in the static glibc binary and breaks its 1.5 MiB budget. Every
//! request is bounded in time (connecting and the whole exchange), and the
//! API key never reaches a message.

use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

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
    /// Where to connect: the address's IP and port (80 when none is given).
    pub socket: SocketAddr,
    pub api_key: String,
    /// The variable the address came from (for `-v`).
    pub address_source: &'static str,
}

/// How long `force-update` waits: to connect, and for the whole exchange.
pub const FORCE_TIMEOUT: Bounds = Bounds {
    connect: Duration::from_secs(2),
    total: Duration::from_secs(10),
};

/// How long `status --supervisor` waits: short, so a health check never hangs.
pub const STATUS_TIMEOUT: Bounds = Bounds {
    connect: Duration::from_secs(1),
    total: Duration::from_secs(3),
};

/// Time limits of one request.
#[derive(Debug, Clone, Copy)]
pub struct Bounds {
    pub connect: Duration,
    pub total: Duration,
}

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
    let answer = exchange(
        config,
        "POST",
        "/v1/update",
        Some(r#"{"force":true}"#),
        FORCE_TIMEOUT,
    );
    let status = match answer {
        Ok(response) => response.status,
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
    let answer = exchange(config, "GET", "/v1/device", None, STATUS_TIMEOUT);
    let response = match answer {
        Ok(response) => response,
        Err(err) => {
            let (_, why) = explain(&err, STATUS_TIMEOUT);
            return DeviceInfo::unreachable(redact(&format!("{url}: {why}"), config));
        }
    };
    let status = response.status;
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
    match serde_json::from_slice::<DeviceInfo>(&response.body) {
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

/// An HTTP answer: the status code and the body.
struct Answer {
    status: u16,
    body: Vec<u8>,
}

/// The most of an answer that is read; the supervisor's are a few hundred bytes.
const MAX_ANSWER: usize = 1 << 20;

/// One HTTP/1.1 request to the supervisor (`Connection: close`),
/// authenticated with `?apikey=` (accepted by every supervisor version),
/// within `bounds`.
fn exchange(
    config: &Config,
    method: &str,
    endpoint: &str,
    body: Option<&str>,
    bounds: Bounds,
) -> io::Result<Answer> {
    let deadline = Instant::now() + bounds.total;
    let mut stream = TcpStream::connect_timeout(&config.socket, bounds.connect)?;
    stream.set_write_timeout(Some(bounds.total))?;
    let mut request = format!(
        "{method} {endpoint}?apikey={key} HTTP/1.1\r\nHost: {host}\r\n\
         User-Agent: resin-lock/{version}\r\nAccept: application/json\r\nConnection: close\r\n",
        key = percent_encode(&config.api_key),
        host = config.host(),
        version = env!("CARGO_PKG_VERSION"),
    );
    if let Some(body) = body {
        request.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ));
    } else {
        request.push_str("\r\n");
    }
    stream.write_all(request.as_bytes())?;

    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        if let Some(answer) = parse_answer(&raw, false)? {
            return Ok(answer);
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::ErrorKind::TimedOut.into());
        }
        stream.set_read_timeout(Some(left))?;
        match stream.read(&mut buf) {
            Ok(0) => {
                return parse_answer(&raw, true)?.ok_or_else(|| {
                    io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the connection closed without an answer",
                    )
                });
            }
            Ok(n) if raw.len() + n > MAX_ANSWER => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "the answer is too large",
                ));
            }
            Ok(n) => raw.extend_from_slice(&buf[..n]),
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) => return Err(err),
        }
    }
}

/// Parse an HTTP/1.x answer once it is complete: when its `Content-Length`
/// is reached, its last chunk is in, or (`closed`) the server hung up.
fn parse_answer(raw: &[u8], closed: bool) -> io::Result<Option<Answer>> {
    let bad = |why: &str| io::Error::new(io::ErrorKind::InvalidData, why.to_owned());
    let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") else {
        return if closed {
            Err(bad("the answer is not HTTP"))
        } else {
            Ok(None)
        };
    };
    let head = String::from_utf8_lossy(&raw[..end]);
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .filter(|line| line.starts_with("HTTP/1."))
        .and_then(|line| line.split(' ').nth(1))
        .and_then(|code| code.parse::<u16>().ok())
        .ok_or_else(|| bad("the answer is not HTTP"))?;
    let header = |name: &str| {
        head.split("\r\n").skip(1).find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.trim()
                .eq_ignore_ascii_case(name)
                .then(|| value.trim().to_owned())
        })
    };
    let rest = &raw[end + 4..];
    let body = if header("Transfer-Encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        match dechunk(rest) {
            Some(body) => body,
            None if closed => return Err(bad("the chunked answer is cut short")),
            None => return Ok(None),
        }
    } else if let Some(length) = header("Content-Length") {
        let length: usize = length.parse().map_err(|_| bad("bad Content-Length"))?;
        if rest.len() < length {
            return if closed {
                Err(bad("the answer is cut short"))
            } else {
                Ok(None)
            };
        }
        rest[..length].to_vec()
    } else if closed || matches!(status, 204 | 304) || (100..200).contains(&status) {
        rest.to_vec()
    } else {
        return Ok(None);
    };
    Ok(Some(Answer { status, body }))
}

/// The body of a complete chunked transfer, or `None` if it is not all in yet.
fn dechunk(mut rest: &[u8]) -> Option<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let line_end = rest.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&rest[..line_end]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        rest = &rest[line_end + 2..];
        if size == 0 {
            return Some(body);
        }
        if rest.len() < size + 2 {
            return None;
        }
        body.extend_from_slice(&rest[..size]);
        rest = &rest[size + 2..];
    }
}

/// Why a request got no answer, in words, and the exit status that stands
/// for it: 69 when the supervisor could not be talked to (not there, refused,
/// silent, cut off), 70 for an answer that is not HTTP.
fn explain(err: &io::Error, bounds: Bounds) -> (Exit, String) {
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
        io::ErrorKind::InvalidData => (Exit::Software, err.to_string()),
        _ => (Exit::Unavailable, err.to_string()),
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

    #[test]
    fn redaction_hides_plain_and_encoded_keys() {
        let config = Config {
            address: "http://127.0.0.1:1".to_owned(),
            socket: "127.0.0.1:1".parse().unwrap(),
            api_key: "a b/c".to_owned(),
            address_source: "BALENA_SUPERVISOR_ADDRESS",
        };
        assert_eq!(
            redact("bad uri: http://x/v1?apikey=a%20b%2Fc and a b/c", &config),
            "bad uri: http://x/v1?apikey=*** and ***"
        );
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
    fn answers_are_parsed_when_complete() {
        let full = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}";
        let answer = parse_answer(full, false).unwrap().unwrap();
        assert_eq!((answer.status, answer.body.as_slice()), (200, &b"{}"[..]));
        // Not all in yet.
        assert!(
            parse_answer(&full[..full.len() - 1], false)
                .unwrap()
                .is_none()
        );
        assert!(
            parse_answer(b"HTTP/1.1 200 OK\r\n", false)
                .unwrap()
                .is_none()
        );
        assert!(parse_answer(&full[..full.len() - 1], true).is_err());
        // No length: until the server closes.
        let open = b"HTTP/1.0 500 Oops\r\n\r\nbody";
        assert!(parse_answer(open, false).unwrap().is_none());
        assert_eq!(parse_answer(open, true).unwrap().unwrap().body, b"body");
        assert_eq!(
            parse_answer(b"HTTP/1.1 204 No Content\r\n\r\n", false)
                .unwrap()
                .unwrap()
                .status,
            204
        );
        // Chunked.
        let chunked = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n";
        assert_eq!(
            parse_answer(chunked, false).unwrap().unwrap().body,
            b"abcde"
        );
        assert!(
            parse_answer(&chunked[..chunked.len() - 6], false)
                .unwrap()
                .is_none()
        );
        // Not HTTP at all.
        assert!(parse_answer(b"SSH-2.0-OpenSSH\r\n\r\n", true).is_err());
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
