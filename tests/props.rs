//! Property tests of the parsers that read outside input: lock records
//! (anyone can write a lock file), supervisor and host OS versions and
//! os-release (set by whoever built the device), `-w` durations (typed
//! by users), and the supervisor API's HTTP answers (from the network). None of them may panic, whatever the input, and each reads
//! back exactly what resin-lock itself writes or documents.
//!
//! Case counts stay modest so `cargo test` stays fast; raise them for a
//! longer run with `PROPTEST_CASES=10000 cargo test props`.

use std::path::PathBuf;
use std::time::Duration;

use proptest::prelude::*;
use resin_lock::duration;
use resin_lock::locate::{Inputs, Sourced, detect, os_release_pretty_name, parse_version};
use resin_lock::lock::record::{MAX_LEN, Mode, Record, TOOL};
use resin_lock::supervisor_api::http::{Answer, MAX_ANSWER, parse_answer};
use semver::{BuildMetadata, Prerelease, Version};

fn config() -> ProptestConfig {
    ProptestConfig {
        // PROPTEST_CASES overrides the default, not an explicit value.
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|n| n.parse().ok())
            .unwrap_or(384),
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

// ---- lock records ----

fn mode() -> impl Strategy<Value = Mode> {
    prop_oneof![Just(Mode::Acquire), Just(Mode::Run), Just(Mode::Hold)]
}

/// Any record resin-lock could write: every field arbitrary within its type.
fn record() -> impl Strategy<Value = Record> {
    (
        (mode(), 1u32.., 1i32.., any::<i32>()),
        (any::<String>(), any::<String>(), any::<u64>(), any::<u32>()),
        prop::collection::vec(any::<String>(), 0..6),
        (
            prop::option::of(any::<i32>()),
            prop::option::of(any::<u64>()),
            prop::option::of(any::<String>()),
            prop::option::of(any::<u64>()),
            any::<bool>(),
        ),
        prop::option::of(any::<String>()),
    )
        .prop_map(
            |(
                (mode, v, pid, owner),
                (start, boot_id, pid_ns, uid),
                cmd,
                (fd, owner_start, reason, max_hold_ms, shared),
                service,
            )| Record {
                tool: TOOL.to_owned(),
                v,
                mode,
                pid,
                owner,
                start,
                boot_id,
                pid_ns,
                uid,
                cmd,
                cmd_cut: false,
                reason,
                reason_cut: false,
                max_hold_ms,
                owner_start,
                chain: Vec::new(),
                fd,
                shared,
                service,
                tag_after_ms: None,
            },
        )
}

/// A valid record line with a few bytes changed, dropped or inserted: input
/// that gets past the JSON parser's first bytes, unlike random noise.
fn mangled_record() -> impl Strategy<Value = Vec<u8>> {
    (
        record(),
        prop::collection::vec((any::<prop::sample::Index>(), 0u8..3, any::<u8>()), 1..6),
    )
        .prop_map(|(record, edits)| {
            let mut bytes = record.to_line().into_bytes();
            for (at, op, byte) in edits {
                let i = at.index(bytes.len() + 1);
                match op {
                    0 if i < bytes.len() => bytes[i] = byte,
                    1 if i < bytes.len() => {
                        bytes.remove(i);
                    }
                    _ => bytes.insert(i, byte),
                }
            }
            bytes
        })
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn record_parse_never_panics_on_arbitrary_bytes(
        bytes in prop::collection::vec(any::<u8>(), 0..512),
    ) {
        if let Some((record, _)) = Record::parse(&bytes) {
            // Whatever it accepts is resin-lock's, and can be shown.
            prop_assert_eq!(record.tool.as_str(), TOOL);
            let _ = (record.since(), record.command_line());
        }
    }

    #[test]
    fn record_parse_never_panics_on_mangled_records(bytes in mangled_record()) {
        if let Some((record, _)) = Record::parse(&bytes) {
            prop_assert_eq!(record.tool.as_str(), TOOL);
            prop_assert!(record.v >= 1 && record.pid > 0);
            let _ = (record.since(), record.command_line());
        }
    }

    #[test]
    fn record_round_trips_through_its_line(record in record()) {
        let line = record.to_line();
        prop_assert!(line.ends_with('\n'));
        prop_assert_eq!(line.matches('\n').count(), 1, "one line: {:?}", line);
        let (parsed, raw) = Record::parse(line.as_bytes()).expect("our own record parses");
        prop_assert_eq!(&parsed, &record);
        prop_assert_eq!(raw["tool"].as_str(), Some(TOOL));
    }

    #[test]
    fn every_record_we_write_is_ours(
        record in record(),
        count in 0usize..3_000,
        width in 0usize..600,
    ) {
        // However long the command line (a JVM's, `sh -c … $(seq 15000)`),
        // the line stays within MAX_WRITE and reads back as resin-lock's.
        let record = Record {
            cmd: (0..count).map(|i| format!("{i:0width$}")).collect(),
            ..record
        };
        let line = record.to_line();
        prop_assert!(line.len() <= resin_lock::lock::record::MAX_WRITE, "{}", line.len());
        // helios' lock files begin with 0x02 0x63 (the supervisor's); ours never.
        prop_assert!(!line.as_bytes().starts_with(&[0x02, 0x63]));
        let (parsed, _) = Record::parse(line.as_bytes()).expect("our own record parses");
        prop_assert_eq!(parsed.pid, record.pid);
        prop_assert_eq!(parsed.owner, record.owner);
    }

    #[test]
    fn record_larger_than_the_limit_is_not_read(record in record(), extra in 1usize..64) {
        // Valid JSON (trailing whitespace), but past MAX_LEN: not a record.
        let mut line = record.to_line();
        line.push_str(&" ".repeat(MAX_LEN + extra - line.len().min(MAX_LEN)));
        prop_assert!(Record::parse(line.as_bytes()).is_none());
    }

    #[test]
    fn record_keeps_parsing_with_unknown_fields(
        record in record(),
        extra in prop::collection::btree_map("[a-z_]{1,12}", any::<i64>(), 0..4),
    ) {
        let mut value = serde_json::to_value(&record).unwrap();
        let object = value.as_object_mut().unwrap();
        for (key, n) in extra {
            if !object.contains_key(&key) {
                object.insert(key, n.into());
            }
        }
        let line = serde_json::to_string(&value).unwrap();
        let (parsed, raw) = Record::parse(line.as_bytes()).expect("unknown fields are ignored");
        prop_assert_eq!(parsed, record);
        prop_assert_eq!(raw, value);
    }

    #[test]
    fn record_is_foreign_unless_tool_version_and_pid_are_right(
        record in record(),
        tool in "[a-z-]{0,12}",
        v in 0u32..3,
        pid in -2i32..3,
    ) {
        let other = Record { tool: tool.clone(), v, pid, ..record };
        let ours = tool == TOOL && v >= 1 && pid > 0;
        prop_assert_eq!(Record::parse(other.to_line().as_bytes()).is_some(), ours);
    }
}

// ---- versions ----

/// A semver pre-release or build identifier list (may be invalid for
/// semver, e.g. a leading zero in a numeric identifier).
fn identifiers() -> impl Strategy<Value = String> {
    prop::collection::vec("[0-9A-Za-z-]{1,6}", 1..4).prop_map(|ids| ids.join("."))
}

/// A strictly valid semver string, and the version it means.
fn semver_text() -> impl Strategy<Value = (String, Version)> {
    (
        any::<u64>(),
        any::<u64>(),
        any::<u64>(),
        prop::option::of(identifiers()),
        prop::option::of(identifiers()),
    )
        .prop_filter_map("valid semver", |(major, minor, patch, pre, build)| {
            let mut text = format!("{major}.{minor}.{patch}");
            if let Some(pre) = pre {
                text = format!("{text}-{pre}");
            }
            if let Some(build) = build {
                text = format!("{text}+{build}");
            }
            let version = Version::parse(&text).ok()?;
            Some((text, version))
        })
}

/// How the version is presented: bare, `v`-prefixed, or a PRETTY_NAME.
fn presented(text: &str, how: u8) -> String {
    match how {
        0 => text.to_owned(),
        1 => format!("v{text}"),
        2 => format!("V{text}"),
        3 => format!("Resin OS {text}"),
        4 => format!("balenaOS {text} (prod)"),
        _ => format!("  {text}\n"),
    }
}

fn sourced(value: Option<String>, source: &str) -> Option<Sourced<String>> {
    value.map(|value| Sourced {
        value,
        source: source.to_owned(),
    })
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn parse_version_never_panics(text in any::<String>()) {
        let _ = parse_version(&text);
    }

    #[test]
    fn parse_version_never_panics_on_near_versions(text in "[vV ]?[0-9.+_a-z-]{0,24}( [0-9.x-]{0,8})?") {
        let _ = parse_version(&text);
    }

    #[test]
    fn parse_version_reads_what_it_prints(text in any::<String>()) {
        if let Some(version) = parse_version(&text) {
            prop_assert_eq!(parse_version(&version.to_string()), Some(version));
        }
    }

    #[test]
    fn parse_version_agrees_with_semver_on_valid_versions(
        (text, want) in semver_text(),
        how in 0u8..6,
    ) {
        prop_assert_eq!(parse_version(&presented(&text, how)), Some(want));
    }

    #[test]
    fn missing_minor_and_patch_are_zero(
        major in any::<u64>(),
        minor in any::<u64>(),
        how in 0u8..6,
    ) {
        prop_assert_eq!(
            parse_version(&presented(&major.to_string(), how)),
            Some(Version::new(major, 0, 0))
        );
        prop_assert_eq!(
            parse_version(&presented(&format!("{major}.{minor}"), how)),
            Some(Version::new(major, minor, 0))
        );
    }

    #[test]
    fn suffixes_semver_rejects_are_dropped_not_fatal(
        (major, minor, patch) in (any::<u64>(), any::<u64>(), any::<u64>()),
        pre in identifiers(),
        build in identifiers(),
        junk in "(\\.rev[0-9]{1,2}|_[a-z]{1,9})",
    ) {
        let base = Version::new(major, minor, patch);
        let got = parse_version(&format!("{base}-{pre}+{build}")).expect("a version");
        prop_assert_eq!((got.major, got.minor, got.patch), (major, minor, patch));
        prop_assert_eq!(got.pre, Prerelease::new(&pre).unwrap_or(Prerelease::EMPTY));
        prop_assert_eq!(got.build, BuildMetadata::new(&build).unwrap_or(BuildMetadata::EMPTY));
        prop_assert_eq!(parse_version(&format!("{base}{junk}")), Some(base));
    }

    #[test]
    fn detection_always_picks_a_rule(
        app in prop::option::of("/[a-z/]{1,20}"),
        sup in prop::option::of(any::<String>()),
        os in prop::option::of(any::<String>()),
        balena_dir in any::<bool>(),
    ) {
        let inputs = Inputs {
            app_lock_path: app.map(|path| Sourced {
                value: PathBuf::from(path),
                source: "BALENA_APP_LOCK_PATH".to_owned(),
            }),
            supervisor_version: sourced(sup, "BALENA_SUPERVISOR_VERSION"),
            os_version: sourced(os, "BALENA_HOST_OS_VERSION"),
            tmp_balena_is_dir: balena_dir,
        };
        let got = detect(&inputs);
        let rule = got.detection.rule.expect("a rule");
        prop_assert!((1..=10).contains(&rule));
        prop_assert!(!got.paths.is_empty() && got.paths.len() <= 2);
        let explained = format!("rule {rule}, ");
        prop_assert!(got.detection.explanation.contains(&explained), "{}", got.detection.explanation);
    }
}

// ---- os-release ----

/// A value written the way os-release(5) allows: double quotes with `\`
/// escapes, single quotes, or bare (for values that need no quoting).
fn os_release_value(value: &str, style: u8) -> String {
    let bare = !value.is_empty()
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-+".contains(c));
    match style {
        1 if !value.contains('\'') => format!("'{value}'"),
        2 if bare => value.to_owned(),
        _ => {
            let mut out = String::from("\"");
            for c in value.chars() {
                if matches!(c, '"' | '\\' | '$' | '`') {
                    out.push('\\');
                }
                out.push(c);
            }
            out.push('"');
            out
        }
    }
}

/// Lines that are neither `ID` nor `PRETTY_NAME`.
fn other_lines() -> impl Strategy<Value = Vec<String>> {
    prop::collection::vec(
        prop_oneof![
            "(NAME|VERSION|VERSION_ID|HOME_URL|VARIANT)=\"[^\"\\\\\n\r]{0,20}\"",
            "#[^\n\r]{0,20}",
            "[ \t]{0,3}",
        ],
        0..5,
    )
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn os_release_never_panics(text in any::<String>()) {
        let _ = os_release_pretty_name(&text);
    }

    #[test]
    fn os_release_never_panics_on_near_files(
        text in "((ID|PRETTY_NAME|NAME)[ ]?=[ ]?[\"']?[^\n]{0,12}[\"'\\\\]?\n){0,4}",
    ) {
        let _ = os_release_pretty_name(&text);
    }

    #[test]
    fn os_release_pretty_name_round_trips(
        pretty in "[^\n\r]{0,40}",
        id in prop::sample::select(vec!["balena-os", "resin-os"]),
        (pretty_style, id_style) in (0u8..3, 0u8..3),
        pretty_first in any::<bool>(),
        (before, between, after) in (other_lines(), other_lines(), other_lines()),
    ) {
        let id_line = format!("ID={}", os_release_value(id, id_style));
        let pretty_line = format!("PRETTY_NAME={}", os_release_value(&pretty, pretty_style));
        let (first, second) = if pretty_first {
            (pretty_line, id_line)
        } else {
            (id_line, pretty_line)
        };
        let mut lines = before;
        lines.push(first);
        lines.extend(between);
        lines.push(second);
        lines.extend(after);
        let text = lines.join("\n");
        prop_assert_eq!(os_release_pretty_name(&text), Some(pretty), "{:?}", text);
    }

    #[test]
    fn os_release_of_other_systems_is_ignored(
        pretty in "[^\n\r]{0,40}",
        id in "[a-z0-9._-]{0,12}",
        style in 0u8..3,
    ) {
        prop_assume!(id != "balena-os" && id != "resin-os");
        let text = format!(
            "ID={}\nPRETTY_NAME={}\n",
            os_release_value(&id, style),
            os_release_value(&pretty, style)
        );
        prop_assert_eq!(os_release_pretty_name(&text), None);
    }
}

// ---- durations ----

proptest! {
    #![proptest_config(config())]

    #[test]
    fn duration_parse_never_panics(text in any::<String>()) {
        let _ = duration::parse(&text);
    }

    #[test]
    fn duration_parse_never_panics_on_near_durations(
        text in "[-+ ]?([0-9]{0,21}(\\.[0-9]{0,12})?(e-?[0-9]{1,3})? ?(ns|us|ms|s|sec|m|min|h|d|w|M|y)? ?){1,4}",
    ) {
        let _ = duration::parse(&text);
    }

    #[test]
    fn milliseconds_round_trip(n in 0u64..=u64::MAX / 1_000_000) {
        prop_assert_eq!(duration::parse(&format!("{n}ms")), Ok(Duration::from_millis(n)));
    }

    #[test]
    fn whole_seconds_round_trip(secs in any::<u64>()) {
        prop_assert_eq!(duration::parse(&format!("{secs}")), Ok(Duration::from_secs(secs)));
        prop_assert_eq!(duration::parse(&format!("{secs}s")), Ok(Duration::from_secs(secs)));
    }

    #[test]
    fn sums_near_the_largest_duration_are_exact_or_too_large(
        secs in u64::MAX - 2..=u64::MAX,
        millis in prop_oneof![0u64..3000, Just(1000), Just(2000)],
    ) {
        // humantime itself panics on some of these (its issue #66).
        let text = format!("{secs}s {millis}ms");
        let total = u128::from(secs) * 1_000_000_000 + u128::from(millis) * 1_000_000;
        let got = duration::parse(&text);
        if total < (u128::from(u64::MAX) + 1) * 1_000_000_000 {
            prop_assert_eq!(got, Ok(Duration::new((total / 1_000_000_000) as u64, (total % 1_000_000_000) as u32)), "{}", text);
        } else {
            prop_assert!(got.unwrap_err().contains("too large"), "{}", text);
        }
    }

    #[test]
    fn decimal_seconds_round_trip(secs in 0u64..1_000_000_000, millis in 0u32..1000) {
        prop_assert_eq!(
            duration::parse(&format!("{secs}.{millis:03}")),
            Ok(Duration::new(secs, millis * 1_000_000))
        );
    }

    #[test]
    fn units_round_trip(n in 0u64..1_000_000, unit in 0usize..4) {
        let (suffix, secs) = [("s", 1), ("m", 60), ("h", 3600), ("d", 86400)][unit];
        prop_assert_eq!(
            duration::parse(&format!("{n}{suffix}")),
            Ok(Duration::from_secs(n * secs))
        );
    }

    #[test]
    fn negative_durations_are_rejected(n in 1u64.., frac in "(\\.[0-9]{1,3})?") {
        let seconds = format!("-{n}{frac}");
        let millis = format!("-{n}ms");
        prop_assert!(duration::parse(&seconds).is_err(), "{}", seconds);
        prop_assert!(duration::parse(&millis).is_err(), "{}", millis);
    }
}

// ---- HTTP answers of the supervisor API ----

/// A header name that is not one of the two that frame a body.
fn header_name() -> impl Strategy<Value = String> {
    "[A-Za-z][A-Za-z0-9-]{0,15}".prop_map(|name| {
        let framing = ["content-length", "transfer-encoding"];
        if framing.iter().any(|f| name.eq_ignore_ascii_case(f)) {
            format!("X-{name}")
        } else {
            name
        }
    })
}

/// Header fields that say nothing about the body.
fn plain_headers() -> impl Strategy<Value = String> {
    prop::collection::vec((header_name(), "[!-~]([ -~]{0,30}[!-~])?"), 0..5).prop_map(|fields| {
        fields
            .iter()
            .map(|(name, value)| format!("{name}: {value}\r\n"))
            .collect()
    })
}

/// How a well-formed answer frames its body.
#[derive(Debug, Clone)]
enum Framing {
    Length,
    /// Chunk lengths (the rest of the body is one last chunk), size digits
    /// with leading zeros and in upper case or not, an extension or not,
    /// and trailer fields.
    Chunked {
        cuts: Vec<prop::sample::Index>,
        zeros: usize,
        upper: bool,
        extension: bool,
        trailers: String,
    },
    /// Until the server closes the connection.
    Close,
}

fn framing() -> impl Strategy<Value = Framing> {
    prop_oneof![
        Just(Framing::Length),
        (
            prop::collection::vec(any::<prop::sample::Index>(), 0..6),
            0usize..12,
            any::<bool>(),
            any::<bool>(),
            plain_headers(),
        )
            .prop_map(
                |(cuts, zeros, upper, extension, trailers)| Framing::Chunked {
                    cuts,
                    zeros,
                    upper,
                    extension,
                    trailers,
                }
            ),
        Just(Framing::Close),
    ]
}

/// A well-formed answer: interim 1xx answers, then the final one; its bytes
/// and what it says.
fn well_formed_answer() -> impl Strategy<Value = (Vec<u8>, Answer, bool)> {
    (
        prop::collection::vec(
            (prop_oneof![Just(100u16), 102u16..200], plain_headers()),
            0..3,
        ),
        prop_oneof![200u16..204, 205u16..304, 305u16..600],
        "[ -~]{0,20}",
        plain_headers(),
        prop::collection::vec(any::<u8>(), 0..600),
        framing(),
        any::<bool>(),
    )
        .prop_map(|(interim, status, reason, headers, body, framing, lower)| {
            let mut raw = Vec::new();
            for (code, fields) in interim {
                raw.extend_from_slice(format!("HTTP/1.1 {code} Wait\r\n{fields}\r\n").as_bytes());
            }
            let name = |name: &str| {
                if lower {
                    name.to_lowercase()
                } else {
                    name.to_owned()
                }
            };
            let head = format!("HTTP/1.1 {status} {reason}\r\n{headers}");
            raw.extend_from_slice(head.as_bytes());
            let close = matches!(framing, Framing::Close);
            match framing {
                Framing::Length => {
                    let length = format!("{}: {}\r\n\r\n", name("Content-Length"), body.len());
                    raw.extend_from_slice(length.as_bytes());
                    raw.extend_from_slice(&body);
                }
                Framing::Chunked {
                    cuts,
                    zeros,
                    upper,
                    extension,
                    trailers,
                } => {
                    let coding = format!("{}: chunked\r\n\r\n", name("Transfer-Encoding"));
                    raw.extend_from_slice(coding.as_bytes());
                    let mut cuts: Vec<usize> =
                        cuts.iter().map(|i| i.index(body.len() + 1)).collect();
                    cuts.push(body.len());
                    cuts.sort_unstable();
                    cuts.dedup();
                    let mut start = 0;
                    for end in cuts.into_iter().filter(|&end| end > 0) {
                        let size = end - start;
                        let digits = if upper {
                            format!("{:0w$X}", size, w = zeros)
                        } else {
                            format!("{:0w$x}", size, w = zeros)
                        };
                        let ext = if extension { ";name=\"value\"" } else { "" };
                        raw.extend_from_slice(format!("{digits}{ext}\r\n").as_bytes());
                        raw.extend_from_slice(&body[start..end]);
                        raw.extend_from_slice(b"\r\n");
                        start = end;
                    }
                    raw.extend_from_slice(format!("0\r\n{trailers}\r\n").as_bytes());
                }
                Framing::Close => {
                    raw.extend_from_slice(b"\r\n");
                    raw.extend_from_slice(&body);
                }
            }
            (raw, Answer { status, body }, close)
        })
}

/// Answers that look like HTTP but state anything at all: random status
/// lines, framing header fields with any value, chunk size lines with any
/// digits (2^64-1 among them), chunks that do or do not end where they say.
fn near_answer() -> impl Strategy<Value = Vec<u8>> {
    let status_line = prop_oneof![
        (0u16..1000, "[ -~]{0,12}")
            .prop_map(|(code, reason)| format!("HTTP/1.1 {code:03} {reason}\r\n")),
        "HTTP/1\\.[019] [0-9]{0,4}( [ -~]{0,8})?\r?\n",
        Just("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n".to_owned()),
    ];
    let value = prop_oneof![
        "[0-9]{1,22}",
        Just("18446744073709551615".to_owned()),
        Just("chunked".to_owned()),
        Just("gzip, chunked".to_owned()),
        "[ -~]{0,12}",
    ];
    let header = (
        prop_oneof![
            Just("Content-Length".to_owned()),
            Just("Transfer-Encoding".to_owned()),
            header_name(),
        ],
        value,
    )
        .prop_map(|(name, value)| format!("{name}: {value}\r\n"));
    let size = prop_oneof![
        any::<u64>().prop_map(|n| format!("{n:x}")),
        Just("ffffffffffffffff".to_owned()),
        Just("fffffffffffffffe".to_owned()),
        "[0-9a-fA-F]{0,20}",
        "[0-9a-f]{1,3}(;[ -~]{0,8})?",
        "[ -~]{0,6}",
    ];
    let chunk = (
        size,
        prop::collection::vec(any::<u8>(), 0..40),
        prop_oneof![Just("\r\n"), Just(""), Just("\n"), Just("xx")],
    )
        .prop_map(|(size, data, end)| {
            let mut bytes = format!("{size}\r\n").into_bytes();
            bytes.extend_from_slice(&data);
            bytes.extend_from_slice(end.as_bytes());
            bytes
        });
    (
        status_line,
        prop::collection::vec(header, 0..5),
        prop::collection::vec(chunk, 0..5),
        prop_oneof![Just(""), Just("0\r\n\r\n"), Just("0\r\n")],
    )
        .prop_map(|(status, headers, chunks, end)| {
            let mut raw = format!("{status}{}\r\n", headers.concat()).into_bytes();
            raw.extend(chunks.concat());
            raw.extend_from_slice(end.as_bytes());
            raw
        })
}

/// What holds for any answer, whatever the bytes: no panic (the call
/// returning is the proof), and a body no larger than the bytes or the bound.
fn parses_sanely(raw: &[u8], closed: bool) -> Result<(), TestCaseError> {
    match parse_answer(raw, closed) {
        Ok(Some(answer)) => {
            prop_assert!(answer.body.len() <= raw.len());
            prop_assert!(answer.body.len() <= MAX_ANSWER);
            prop_assert!(!(100..200).contains(&answer.status) || answer.status == 101);
        }
        Ok(None) => prop_assert!(!closed, "waits for more after the server closed"),
        Err(err) => prop_assert!(!err.0.is_empty()),
    }
    Ok(())
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn http_answer_parse_never_panics_on_arbitrary_bytes(
        raw in prop::collection::vec(any::<u8>(), 0..512),
        closed in any::<bool>(),
    ) {
        parses_sanely(&raw, closed)?;
    }

    #[test]
    fn http_answer_parse_never_panics_on_near_answers(
        raw in near_answer(),
        cut in any::<prop::sample::Index>(),
        closed in any::<bool>(),
    ) {
        parses_sanely(&raw, closed)?;
        parses_sanely(&raw[..cut.index(raw.len() + 1)], closed)?;
    }

    #[test]
    fn http_answer_parse_never_panics_on_mangled_answers(
        (raw, _, _) in well_formed_answer(),
        edits in prop::collection::vec((any::<prop::sample::Index>(), 0u8..3, any::<u8>()), 1..6),
        closed in any::<bool>(),
    ) {
        let mut raw = raw;
        for (at, op, byte) in edits {
            let i = at.index(raw.len() + 1);
            match op {
                0 if i < raw.len() => raw[i] = byte,
                1 if i < raw.len() => {
                    raw.remove(i);
                }
                _ => raw.insert(i, byte),
            }
        }
        parses_sanely(&raw, closed)?;
    }

    #[test]
    fn http_answers_round_trip(
        (raw, answer, close) in well_formed_answer(),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 1..8),
    ) {
        // Complete: the final answer, interim ones skipped. An answer that
        // ends with the connection is complete only once it is closed.
        let open = parse_answer(&raw, false);
        if close {
            prop_assert_eq!(open, Ok(None));
        } else {
            prop_assert_eq!(open, Ok(Some(answer.clone())));
        }
        prop_assert_eq!(parse_answer(&raw, true), Ok(Some(answer)));
        // Not all in yet: wait for more, never a wrong answer or an error.
        for cut in cuts {
            let part = &raw[..cut.index(raw.len())];
            prop_assert_eq!(parse_answer(part, false), Ok(None), "cut at {}", part.len());
        }
    }
}
