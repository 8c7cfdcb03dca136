//! Talking to the supervisor API: where it is and with which key (from
//! the environment the supervisor gives a service), one bounded request
//! to an endpoint, and the words for what went wrong, with the key masked
//! and text from an answer escaped. The endpoints are in the files beside
//! this one.

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use super::http::{self, Answer, Bounds, Request};
use crate::exit::Exit;
use crate::text::escape_controls;

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
pub(super) fn call(
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
pub(super) fn explain(err: &http::Error, bounds: Bounds) -> (Exit, String) {
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
pub(super) fn excerpt(body: &[u8], config: &Config) -> String {
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
pub(super) fn say(text: &str, config: &Config) -> String {
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
}
