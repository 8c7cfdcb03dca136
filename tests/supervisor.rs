//! `force-update`, `status --supervisor` and `--update-now` against a fake
//! supervisor: a thread with a `TcpListener` on 127.0.0.1 that answers like
//! the real one and hands every request it got to the test over a channel.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::mpsc::{self, Receiver, TryRecvError};
use std::time::Duration;

use crate::common::*;

/// The API key of these tests; it must never show in any output.
const KEY: &str = "k3y-0f-the-supervisor-5ecret";
const LABEL: &str = "io.balena.features.supervisor-api";

/// What the real supervisor's `GET /v1/device` answers, with an update waiting.
const DEVICE: &str = r#"{"api_port":48484,"ip_address":"10.0.0.2","os_version":"balenaOS 2.88.4","supervisor_version":"14.4.1","update_pending":true,"update_failed":false,"update_downloaded":false,"status":"Idle","download_progress":null}"#;

/// One request as the fake supervisor received it.
#[derive(Debug)]
struct Received {
    method: String,
    path: String,
    query: String,
    content_type: Option<String>,
    body: String,
    /// Whether the watched lock file existed when the request arrived.
    lock_existed: bool,
    /// `Answer::WaitingUpdate`: whether the request overrode the update
    /// waiting on locks (the fake then removed the watched lock file).
    forced: bool,
}

/// How the fake supervisor answers.
#[derive(Clone)]
enum Answer {
    /// This status, with this body (none for 204).
    Status(u16, &'static str),
    /// Read the request, then say nothing until the client hangs up.
    Silent,
    /// These bytes exactly, then hang up.
    Raw(Vec<u8>),
    /// `POST /v1/update` while an update waits on the (watched) lock, as a
    /// supervisor of this generation answers it: 202, and only a request
    /// that overrides the waiting update forces it (removes the lock file,
    /// as the real force does). Since v17.5.0 that takes `"cancel":true`
    /// beside `"force":true` (balena-supervisor issue 2541); before v17.1
    /// `cancel` is not known and ignored.
    WaitingUpdate { since_v17_5: bool },
    /// `PATCH /v2/device/tags` as supervisor v17.8.0 takes it: a flat JSON
    /// object of string values whose keys have no whitespace, 202; 400 for
    /// anything else.
    Tags,
}

struct FakeSupervisor {
    /// `http://127.0.0.1:PORT`
    address: String,
    received: Receiver<Received>,
}

impl FakeSupervisor {
    fn start(answer: Answer) -> FakeSupervisor {
        FakeSupervisor::answering(vec![answer], None)
    }

    /// The n-th request gets the n-th answer (the last one from then on);
    /// `watch`: a lock file whose presence each request records.
    fn answering(answers: Vec<Answer>, watch: Option<PathBuf>) -> FakeSupervisor {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let address = format!("http://{}", listener.local_addr().unwrap());
        let (tx, received) = mpsc::channel();
        std::thread::spawn(move || {
            for (n, stream) in listener.incoming().enumerate() {
                let Ok(stream) = stream else { return };
                let Some(mut request) = read_request(&stream) else {
                    continue;
                };
                request.lock_existed = watch.as_ref().is_some_and(|p| p.symlink_metadata().is_ok());
                let mut answer = &answers[n.min(answers.len() - 1)];
                if let Answer::Tags = answer {
                    answer = if valid_tags(&request) {
                        &Answer::Status(202, "")
                    } else {
                        &Answer::Status(400, r#"{"message":"bad tags"}"#)
                    };
                }
                if let Answer::WaitingUpdate { since_v17_5 } = answer {
                    request.forced = overrides(&request.body, *since_v17_5);
                    if let Some(lock) = watch.as_ref().filter(|_| request.forced) {
                        let _ = std::fs::remove_file(lock);
                    }
                }
                // Tell the test before answering: the command cannot finish
                // (other than by giving up) before the test knows.
                if tx.send(request).is_err() {
                    return;
                }
                answer_with(stream, answer);
            }
        });
        FakeSupervisor { address, received }
    }

    /// The request the command made (waiting is a hang guard, not a timing check).
    fn request(&self) -> Received {
        self.received
            .recv_timeout(Duration::from_secs(60))
            .expect("the fake supervisor got no request")
    }

    /// After the command ended: it sent nothing (more) here.
    fn assert_no_request(&self) {
        match self.received.try_recv() {
            Err(TryRecvError::Empty) => {}
            other => panic!("unexpected request: {other:?}"),
        }
    }
}

fn read_request(stream: &TcpStream) -> Option<Received> {
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_owned();
    let target = parts.next()?.to_owned();
    let (path, query) = match target.split_once('?') {
        Some((path, query)) => (path.to_owned(), query.to_owned()),
        None => (target, String::new()),
    };
    let mut content_length = 0;
    let mut content_type = None;
    loop {
        let mut header = String::new();
        reader.read_line(&mut header).ok()?;
        let header = header.trim_end();
        if header.is_empty() {
            break;
        }
        let (name, value) = header.split_once(':')?;
        let value = value.trim().to_owned();
        if name.eq_ignore_ascii_case("content-length") {
            content_length = value.parse().ok()?;
        } else if name.eq_ignore_ascii_case("content-type") {
            content_type = Some(value);
        }
    }
    let mut body = vec![0; content_length];
    reader.read_exact(&mut body).ok()?;
    Some(Received {
        method,
        path,
        query,
        content_type,
        body: String::from_utf8(body).ok()?,
        lock_existed: false,
        forced: false,
    })
}

/// Whether a `POST /v1/update` body overrides an update that waits on
/// locks: `force` (the override), and on v17.5+ also `cancel` (which ends
/// the waiting apply so the forced one starts; without it the supervisor
/// accepts the request and nothing happens).
fn overrides(body: &str, since_v17_5: bool) -> bool {
    let body: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
    let flag = |name: &str| body[name].as_bool() == Some(true);
    flag("force") && (!since_v17_5 || flag("cancel"))
}

fn answer_with(mut stream: TcpStream, answer: &Answer) {
    match answer {
        Answer::Status(204, _) => {
            let _ = stream.write_all(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n");
        }
        Answer::Status(code, body) => {
            let _ = write!(
                stream,
                "HTTP/1.1 {code} Whatever\r\nContent-Type: application/json\r\n\
                 Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
        Answer::Silent => {
            // Hold the connection open, answering nothing, until the client
            // gives up and closes it.
            let mut sink = Vec::new();
            let _ = stream.read_to_end(&mut sink);
        }
        Answer::Raw(bytes) => {
            let _ = stream.write_all(bytes);
        }
        Answer::WaitingUpdate { .. } => answer_with(stream, &Answer::Status(202, "Accepted")),
        Answer::Tags => answer_with(stream, &Answer::Status(202, "")),
    }
}

/// Whether a request is one v17.8's `PATCH /v2/device/tags` accepts: a
/// flat object of strings, keys without whitespace, values of at most 255
/// characters (balenaCloud's limit) without control characters.
fn valid_tags(request: &Received) -> bool {
    let Ok(serde_json::Value::Object(tags)) = serde_json::from_str(&request.body) else {
        return false;
    };
    (request.method.as_str(), request.path.as_str()) == ("PATCH", "/v2/device/tags")
        && !tags.is_empty()
        && tags.iter().all(|(key, value)| {
            !key.is_empty()
                && !key.chars().any(|c| c.is_whitespace() || c.is_control())
                && value
                    .as_str()
                    .is_some_and(|v| v.chars().count() <= 255 && !v.chars().any(char::is_control))
        })
}

/// An answer of these bytes (a test's own HTTP, well-formed or not).
fn raw(text: impl Into<Vec<u8>>) -> Answer {
    Answer::Raw(text.into())
}

/// A port on 127.0.0.1 where nothing listens (bound, then closed).
fn dead_address() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    address
}

/// `resin-lock ARGS…` with the supervisor API configured the balena way.
fn with_api(address: &str, args: &[&str]) -> Command {
    let mut cmd = resin_lock();
    cmd.env("BALENA_SUPERVISOR_ADDRESS", address)
        .env("BALENA_SUPERVISOR_API_KEY", KEY)
        .args(args);
    cmd
}

/// Run, and check the key shows nowhere in what the command said.
fn run(mut cmd: Command) -> Output {
    let out = cmd.output().expect("run resin-lock");
    for (name, text) in [("stdout", &out.stdout), ("stderr", &out.stderr)] {
        let text = String::from_utf8_lossy(text);
        assert!(!text.contains(KEY), "the API key leaked to {name}: {text}");
    }
    out
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The request of `force-update`: `force`, and `cancel` for supervisors
/// >= v17.5.0, which ignore a plain `force` while an update waits on locks.
fn assert_force_request(request: &Received, key: &str) {
    assert_update_post(
        request,
        key,
        serde_json::json!({"force": true, "cancel": true}),
    );
}

/// `POST /v1/update` with the key in the query and `body` as JSON.
fn assert_update_post(request: &Received, key: &str, body: serde_json::Value) {
    assert_eq!(
        (request.method.as_str(), request.path.as_str()),
        ("POST", "/v1/update"),
        "{request:?}"
    );
    assert_eq!(request.query, format!("apikey={key}"));
    assert!(
        request
            .content_type
            .as_deref()
            .is_some_and(|t| t.starts_with("application/json")),
        "{request:?}"
    );
    let sent: serde_json::Value = serde_json::from_str(&request.body).expect("JSON body");
    assert_eq!(sent, body);
}

#[test]
fn force_update_accepted_with_202_and_204() {
    for code in [202, 204] {
        let fake = FakeSupervisor::start(Answer::Status(code, ""));
        let out = run(with_api(&fake.address, &["force-update"]));
        assert_eq!(out.status.code(), Some(0), "{code}: {}", stderr(&out));
        assert!(
            stdout(&out).contains("accepted"),
            "{code}: {}",
            stdout(&out)
        );
        assert_force_request(&fake.request(), KEY);
        fake.assert_no_request();
    }
}

#[test]
fn force_update_overrides_an_update_waiting_on_locks_old_and_new() {
    // An update waits on the app's lock (another tool's file); force-update
    // must make the supervisor force it, on supervisors before and since
    // v17.5.0 (which accepts a plain force and does nothing).
    for since_v17_5 in [true, false] {
        let s = Scratch::new();
        std::fs::write(s.lock(), "0").unwrap();
        let fake =
            FakeSupervisor::answering(vec![Answer::WaitingUpdate { since_v17_5 }], Some(s.lock()));
        let out = run(with_api(&fake.address, &["force-update"]));
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        assert_eq!(stderr(&out), "");
        let request = fake.request();
        assert!(
            request.forced,
            "v17.5+ {since_v17_5}: the waiting update was not forced by {}",
            request.body
        );
        assert!(!s.lock().exists(), "the forced update removed the lock");
        fake.assert_no_request();
    }
}

#[test]
fn force_update_quiet_prints_nothing() {
    let fake = FakeSupervisor::start(Answer::Status(202, ""));
    let out = run(with_api(&fake.address, &["-q", "force-update"]));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stdout(&out), "");
    assert_eq!(stderr(&out), "");
    assert_force_request(&fake.request(), KEY);
}

#[test]
fn force_update_refused_key_is_77() {
    for code in [401, 403] {
        let fake = FakeSupervisor::start(Answer::Status(code, "Unauthorized"));
        let out = run(with_api(&fake.address, &["-v", "force-update"]));
        assert_eq!(out.status.code(), Some(77), "{code}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("refused the API key"),
            "{}",
            stderr(&out)
        );
        assert_force_request(&fake.request(), KEY);
    }
}

#[test]
fn force_update_other_answer_is_70_with_the_status() {
    let fake = FakeSupervisor::start(Answer::Status(500, r#"{"error":"boom"}"#));
    let out = run(with_api(&fake.address, &["force-update"]));
    assert_eq!(out.status.code(), Some(70), "{}", stderr(&out));
    assert!(stderr(&out).contains("HTTP 500"), "{}", stderr(&out));
    assert_force_request(&fake.request(), KEY);
}

#[test]
fn force_update_silent_supervisor_is_69_in_bounded_time() {
    let fake = FakeSupervisor::start(Answer::Silent);
    // The command must end by itself; the output() call returning is the proof.
    let out = run(with_api(&fake.address, &["-v", "force-update"]));
    assert_eq!(out.status.code(), Some(69), "{}", stderr(&out));
    assert!(stderr(&out).contains("no answer"), "{}", stderr(&out));
    assert_force_request(&fake.request(), KEY);
}

#[test]
fn force_update_nothing_listening_is_69() {
    let out = run(with_api(&dead_address(), &["force-update"]));
    assert_eq!(out.status.code(), Some(69), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("connection refused"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn force_update_without_configuration_is_69_and_names_the_label() {
    let mut cmd = resin_lock();
    cmd.arg("force-update")
        .env("BALENA_SUPERVISOR_API_KEY", KEY);
    let out = run(cmd);
    assert_eq!(out.status.code(), Some(69));
    let err = stderr(&out);
    assert!(err.contains("BALENA_SUPERVISOR_ADDRESS"), "{err}");
    assert!(err.contains(LABEL), "{err}");

    let fake = FakeSupervisor::start(Answer::Status(202, ""));
    let mut cmd = resin_lock();
    cmd.arg("force-update")
        .env("BALENA_SUPERVISOR_ADDRESS", &fake.address);
    let out = run(cmd);
    assert_eq!(out.status.code(), Some(69));
    let err = stderr(&out);
    assert!(err.contains("BALENA_SUPERVISOR_API_KEY"), "{err}");
    assert!(err.contains(LABEL), "{err}");
    fake.assert_no_request();
}

#[test]
fn force_update_reads_the_resin_names() {
    let fake = FakeSupervisor::start(Answer::Status(202, ""));
    let mut cmd = resin_lock();
    cmd.arg("force-update")
        .env("RESIN_SUPERVISOR_ADDRESS", &fake.address)
        .env("RESIN_SUPERVISOR_API_KEY", KEY);
    let out = run(cmd);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_force_request(&fake.request(), KEY);
}

#[test]
fn force_update_balena_names_win_over_resin_names() {
    let balena = FakeSupervisor::start(Answer::Status(202, ""));
    // Had the command used this one, it would have exited 70.
    let resin = FakeSupervisor::start(Answer::Status(500, ""));
    let resin_key = "resin-key-not-to-be-used";
    let mut cmd = with_api(&balena.address, &["force-update"]);
    cmd.env("RESIN_SUPERVISOR_ADDRESS", &resin.address)
        .env("RESIN_SUPERVISOR_API_KEY", resin_key);
    let out = run(cmd);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_force_request(&balena.request(), KEY);
    resin.assert_no_request();
}

#[test]
fn force_update_encodes_the_key() {
    let fake = FakeSupervisor::start(Answer::Status(204, ""));
    let mut cmd = resin_lock();
    cmd.arg("force-update")
        .env("BALENA_SUPERVISOR_ADDRESS", format!("{}/", fake.address))
        .env("BALENA_SUPERVISOR_API_KEY", "a+b/c&d");
    let out = cmd.output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_force_request(&fake.request(), "a%2Bb%2Fc%26d");
}

/// `status --supervisor --json` for a free lock in a fresh temp dir.
fn status_supervisor(scratch: &Scratch, mut cmd: Command) -> (Output, serde_json::Value) {
    cmd.arg("--path")
        .arg(scratch.lock())
        .args(["status", "--supervisor", "--json"]);
    let out = run(cmd);
    let report = serde_json::from_slice(&out.stdout).expect("status JSON");
    (out, report)
}

#[test]
fn status_supervisor_reports_the_device() {
    let s = Scratch::new();
    let fake = FakeSupervisor::start(Answer::Status(200, DEVICE));
    let (out, report) = status_supervisor(&s, with_api(&fake.address, &[]));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(report["locked"], false);
    assert_eq!(report["locks"][0]["state"], "free");
    assert_eq!(
        report["supervisor"],
        serde_json::json!({
            "reachable": true,
            "supervisor_version": "14.4.1",
            "os_version": "balenaOS 2.88.4",
            "update_pending": true,
            "update_downloaded": false,
            "update_failed": false,
            "status": "Idle",
        })
    );
    let request = fake.request();
    assert_eq!(request.method, "GET");
    assert_eq!(request.path, "/v1/device");
    assert_eq!(request.query, format!("apikey={KEY}"));
    fake.assert_no_request();
}

#[test]
fn status_supervisor_text_lines() {
    let s = Scratch::new();
    let fake = FakeSupervisor::start(Answer::Status(200, DEVICE));
    let mut cmd = with_api(&fake.address, &[]);
    cmd.arg("--path")
        .arg(s.lock())
        .args(["status", "--supervisor"]);
    let out = run(cmd);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains("supervisor: v14.4.1 on balenaOS 2.88.4, Idle"),
        "{text}"
    );
    assert!(text.contains("supervisor: an update is pending"), "{text}");
    assert!(text.contains("updates are allowed"), "{text}");
    fake.request();
}

#[test]
fn status_supervisor_unreachable_keeps_the_lock_report_and_code() {
    let s = Scratch::new();
    let (out, report) = status_supervisor(&s, with_api(&dead_address(), &[]));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(report["locks"][0]["state"], "free");
    assert_eq!(report["supervisor"]["reachable"], false);
    assert!(report["supervisor"]["error"].is_string(), "{report}");
    assert!(report["supervisor"]["update_pending"].is_null(), "{report}");

    // A lock file makes it 1, supervisor or not.
    std::fs::write(s.lock(), "0").unwrap();
    let (out, report) = status_supervisor(&s, with_api(&dead_address(), &[]));
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_eq!(report["locked"], true);
    assert_eq!(report["supervisor"]["reachable"], false);
}

#[test]
fn status_supervisor_unreachable_is_one_line_and_the_locks_exit_status() {
    let s = Scratch::new();
    std::fs::write(s.lock(), "0").unwrap();
    for health in [false, true] {
        let mut cmd = with_api(&dead_address(), &[]);
        cmd.arg("--path")
            .arg(s.lock())
            .args(["status", "--supervisor"]);
        if health {
            cmd.arg("--health");
        }
        let out = run(cmd);
        // A foreign lock: 1 for status, 0 (held, never stale) for --health.
        assert_eq!(
            out.status.code(),
            Some(i32::from(!health)),
            "{}",
            stderr(&out)
        );
        assert_eq!(stderr(&out), "");
        let text = stdout(&out);
        let api: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("supervisor:"))
            .collect();
        assert_eq!(api.len(), 1, "{text}");
        assert!(api[0].contains("connection refused"), "{text}");
        assert!(
            api[0].ends_with("; the exit status is the lock's, not the API's"),
            "{text}"
        );
    }
    // The exit table says so too (README and man page are checked against it).
    let help = resin_lock().arg("--help").output().unwrap();
    let help = stdout(&help)
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    assert!(
        help.contains("69 the supervisor API is unreachable or not configured (force-update; status --supervisor keeps the lock's exit status and says so in one line)"),
        "{help}"
    );
}

#[test]
fn status_supervisor_silent_supervisor_is_bounded() {
    let s = Scratch::new();
    let fake = FakeSupervisor::start(Answer::Silent);
    let (out, report) = status_supervisor(&s, with_api(&fake.address, &[]));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(report["supervisor"]["reachable"], false);
    let error = report["supervisor"]["error"].as_str().unwrap();
    assert!(error.contains("no answer"), "{error}");
    fake.request();
}

#[test]
fn status_supervisor_refused_key_is_reachable_with_an_error() {
    let s = Scratch::new();
    let fake = FakeSupervisor::start(Answer::Status(401, "Unauthorized"));
    let (out, report) = status_supervisor(&s, with_api(&fake.address, &[]));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(report["supervisor"]["reachable"], true);
    let error = report["supervisor"]["error"].as_str().unwrap();
    assert!(error.contains("refused the API key"), "{error}");
    fake.request();
}

#[test]
fn status_supervisor_without_configuration_names_the_label() {
    let s = Scratch::new();
    let (out, report) = status_supervisor(&s, resin_lock());
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(report["supervisor"]["reachable"], false);
    let error = report["supervisor"]["error"].as_str().unwrap();
    assert!(error.contains(LABEL), "{error}");
}

#[test]
fn plain_status_makes_no_request() {
    let s = Scratch::new();
    let fake = FakeSupervisor::start(Answer::Status(200, DEVICE));
    let mut cmd = with_api(&fake.address, &[]);
    cmd.arg("--path").arg(s.lock()).args(["status", "--json"]);
    let out = run(cmd);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(report.get("supervisor").is_none(), "{report}");
    fake.assert_no_request();
}

/// stderr is exactly one line: `resin-lock: …`, and no panic message.
fn assert_one_error_line(out: &Output, what: &str) {
    let err = stderr(out);
    assert!(
        err.starts_with("resin-lock: ") && err.ends_with('\n') && err.lines().count() == 1,
        "{what}: not one error line: {err:?}"
    );
    assert!(!err.contains("panicked"), "{what}: {err}");
}

/// Answers that are not acceptable HTTP, with a word of the error each gets.
fn bad_answers() -> Vec<(&'static str, Vec<u8>, &'static str)> {
    let chunked = |size: &str| {
        format!(
            "HTTP/1.1 202 Accepted\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n\
             {size}\r\nabc\r\n0\r\n\r\n"
        )
        .into_bytes()
    };
    vec![
        // `size + 2` overflowed in the old decoder: a panic, or an abort (134).
        ("chunk size 2^64-1", chunked("ffffffffffffffff"), "chunk"),
        ("chunk size 2^64-2", chunked("fffffffffffffffe"), "chunk"),
        ("chunk size 2^63", chunked("8000000000000000"), "chunk"),
        (
            "chunk size of 17 digits",
            chunked("10000000000000000"),
            "chunk",
        ),
        ("chunk size not hex", chunked("zz"), "chunk"),
        (
            "chunk not ended by CRLF",
            b"HTTP/1.1 202 Accepted\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nabc\r\n0\r\n\r\n"
                .to_vec(),
            "chunk",
        ),
        (
            "Content-Length 2^64-1",
            b"HTTP/1.1 202 Accepted\r\nContent-Length: 18446744073709551615\r\n\r\n{}".to_vec(),
            "too large",
        ),
        (
            "Content-Length not a number",
            b"HTTP/1.1 202 Accepted\r\nContent-Length: +2\r\n\r\n{}".to_vec(),
            "Content-Length",
        ),
        (
            "two Content-Lengths",
            b"HTTP/1.1 202 Accepted\r\nContent-Length: 2\r\nContent-Length: 0\r\n\r\n{}".to_vec(),
            "Content-Length",
        ),
        (
            "a transfer coding other than chunked",
            b"HTTP/1.1 202 Accepted\r\nTransfer-Encoding: gzip\r\n\r\n{}".to_vec(),
            "transfer coding",
        ),
        (
            "not HTTP",
            b"SSH-2.0-OpenSSH_9.2\r\n\r\n".to_vec(),
            "not HTTP",
        ),
        (
            "cut short",
            b"HTTP/1.1 202 Accepted\r\nContent-Length: 10\r\n\r\n{}".to_vec(),
            "cut short",
        ),
        (
            "only an interim answer",
            b"HTTP/1.1 100 Continue\r\n\r\n".to_vec(),
            "cut short",
        ),
    ]
}

#[test]
fn force_update_bad_answers_are_70_in_one_line() {
    for (what, answer, word) in bad_answers() {
        let fake = FakeSupervisor::start(Answer::Raw(answer));
        let out = run(with_api(&fake.address, &["force-update"]));
        assert_eq!(out.status.code(), Some(70), "{what}: {}", stderr(&out));
        assert_one_error_line(&out, what);
        assert!(stderr(&out).contains(word), "{what}: {}", stderr(&out));
        assert_eq!(stdout(&out), "", "{what}");
        fake.request();
    }
}

#[test]
fn status_supervisor_bad_answers_are_one_error_line() {
    let s = Scratch::new();
    for (what, answer, word) in bad_answers() {
        let fake = FakeSupervisor::start(Answer::Raw(answer.clone()));
        let (out, report) = status_supervisor(&s, with_api(&fake.address, &[]));
        assert_eq!(out.status.code(), Some(0), "{what}: {}", stderr(&out));
        let error = report["supervisor"]["error"].as_str().unwrap_or_default();
        assert!(error.contains(word), "{what}: {report}");
        assert!(report["supervisor"]["update_pending"].is_null(), "{what}");
        fake.request();

        let fake = FakeSupervisor::start(Answer::Raw(answer));
        let mut cmd = with_api(&fake.address, &[]);
        cmd.arg("--path")
            .arg(s.lock())
            .args(["status", "--supervisor"]);
        let out = run(cmd);
        assert_eq!(out.status.code(), Some(0), "{what}: {}", stderr(&out));
        let text = stdout(&out);
        let lines: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("supervisor:"))
            .collect();
        assert_eq!(lines.len(), 1, "{what}: {text}");
        assert!(lines[0].contains(word), "{what}: {text}");
        fake.request();
    }
}

#[test]
fn force_update_closed_without_an_answer_is_69() {
    let fake = FakeSupervisor::start(raw(""));
    let out = run(with_api(&fake.address, &["force-update"]));
    assert_eq!(out.status.code(), Some(69), "{}", stderr(&out));
    assert_one_error_line(&out, "closed");
    assert!(
        stderr(&out).contains("without an answer"),
        "{}",
        stderr(&out)
    );
    fake.request();
}

#[test]
fn interim_answers_are_skipped() {
    let interim = "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 102 Processing\r\n\r\n";
    for (what, final_answer) in [
        (
            "length",
            "HTTP/1.1 202 Accepted\r\nContent-Length: 0\r\n\r\n".to_owned(),
        ),
        ("no body", "HTTP/1.1 204 No Content\r\n\r\n".to_owned()),
        (
            "chunked",
            "HTTP/1.1 202 Accepted\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n"
                .to_owned(),
        ),
    ] {
        let fake = FakeSupervisor::start(raw(format!("{interim}{final_answer}")));
        let out = run(with_api(&fake.address, &["force-update"]));
        assert_eq!(out.status.code(), Some(0), "{what}: {}", stderr(&out));
        assert!(
            stdout(&out).contains("accepted"),
            "{what}: {}",
            stdout(&out)
        );
        assert_force_request(&fake.request(), KEY);
    }

    let s = Scratch::new();
    let fake = FakeSupervisor::start(raw(format!(
        "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{DEVICE}",
        DEVICE.len()
    )));
    let (out, report) = status_supervisor(&s, with_api(&fake.address, &[]));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(report["supervisor"]["reachable"], true, "{report}");
    assert_eq!(
        report["supervisor"]["supervisor_version"], "14.4.1",
        "{report}"
    );
    assert!(report["supervisor"].get("error").is_none(), "{report}");
    fake.request();
}

#[test]
fn the_api_key_is_never_printed_even_when_the_supervisor_echoes_it() {
    // `run` checks every output for the key; these answers all carry it.
    let device = DEVICE.replace("\"Idle\"", &format!("\"{KEY}\""));
    let s = Scratch::new();
    for json in [false, true] {
        let fake = FakeSupervisor::start(Answer::Status(200, device.clone().leak()));
        let mut cmd = with_api(&fake.address, &["-v"]);
        cmd.arg("--path")
            .arg(s.lock())
            .args(["status", "--supervisor"]);
        if json {
            cmd.arg("--json");
        }
        let out = run(cmd);
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        assert!(stdout(&out).contains("***"), "{}", stdout(&out));
        fake.request();
    }

    let echo = format!("{{\"error\":\"bad request: apikey={KEY}\"}}");
    let fake = FakeSupervisor::start(raw(format!(
        "HTTP/1.1 500 {KEY}\r\nContent-Length: {}\r\n\r\n{echo}",
        echo.len()
    )));
    let out = run(with_api(&fake.address, &["-v", "force-update"]));
    assert_eq!(out.status.code(), Some(70), "{}", stderr(&out));
    assert!(stderr(&out).contains("apikey=***"), "{}", stderr(&out));
    fake.request();
}

#[test]
fn a_one_character_key_is_masked_only_where_it_is_the_key() {
    // A key of one character occurs everywhere: in the address, the
    // status, the answer. Only its place in the URL is the key.
    let fake = FakeSupervisor::start(raw(
        "HTTP/1.1 500 Internal Error\r\nContent-Length: 53\r\n\r\n\
         {\"error\":\"bad request: apikey=1 at 127.0.0.1, try 1\"}",
    ));
    let mut cmd = resin_lock();
    cmd.arg("force-update")
        .env("BALENA_SUPERVISOR_ADDRESS", &fake.address)
        .env("BALENA_SUPERVISOR_API_KEY", "1");
    let out = cmd.output().unwrap();
    assert_eq!(out.status.code(), Some(70), "{}", stderr(&out));
    let err = stderr(&out);
    let want = format!(
        "resin-lock: unexpected answer from the supervisor at {}/v1/update: HTTP 500: \
         {{\"error\":\"bad request: apikey=*** at 127.0.0.1, try 1\"}}\n",
        fake.address
    );
    assert_eq!(err, want);
    assert_force_request(&fake.request(), "1");
}

#[test]
fn status_supervisor_text_escapes_control_characters() {
    let hostile = r#""Idle\nupdates are allowed\u001b[2J\r""#;
    let device = DEVICE.replace("\"Idle\"", hostile);
    let s = Scratch::new();
    let fake = FakeSupervisor::start(Answer::Status(200, device.leak()));
    let mut cmd = with_api(&fake.address, &[]);
    cmd.arg("--path")
        .arg(s.lock())
        .args(["status", "--supervisor"]);
    let out = run(cmd);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains(
            r"supervisor: v14.4.1 on balenaOS 2.88.4, Idle\nupdates are allowed\u{1b}[2J\r"
        ),
        "{text:?}"
    );
    assert!(!text.contains('\u{1b}') && !text.contains('\r'), "{text:?}");
    // The lock, the lock paths, two supervisor lines, the verdict.
    assert_eq!(text.lines().count(), 5, "{text:?}");
    fake.request();
}

#[test]
fn force_update_unexpected_answer_shows_the_start_of_the_body_escaped() {
    let body = "{\"error\":\"boom\"}\r\n\u{1b}[2Jsecond line";
    let fake = FakeSupervisor::start(raw(format!(
        "HTTP/1.1 503 Service Unavailable\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )));
    let out = run(with_api(&fake.address, &["force-update"]));
    assert_eq!(out.status.code(), Some(70), "{}", stderr(&out));
    assert_one_error_line(&out, "503");
    assert!(
        stderr(&out).contains(r#"HTTP 503: {"error":"boom"}\r\n\u{1b}[2Jsecond line"#),
        "{}",
        stderr(&out)
    );
    fake.request();
}

// ------------------------------------------------------------ --update-now

/// What `GET /v1/device` answers when nothing is waiting.
const IDLE_DEVICE: &str = r#"{"api_port":48484,"os_version":"balenaOS 2.88.4","supervisor_version":"14.4.1","update_pending":false,"update_failed":false,"update_downloaded":false,"status":"Idle"}"#;

/// The first request of `--update-now`: `GET /v1/device` with the key.
fn assert_device_request(request: &Received) {
    assert_eq!(
        (request.method.as_str(), request.path.as_str()),
        ("GET", "/v1/device"),
        "{request:?}"
    );
    assert_eq!(request.query, format!("apikey={KEY}"));
    assert!(
        !request.lock_existed,
        "asked while the lock was still there"
    );
}

/// The second: `POST /v1/update {"force":false,"cancel":true}` with the key.
fn assert_update_now_request(request: &Received) {
    assert_update_post(
        request,
        KEY,
        serde_json::json!({"force": false, "cancel": true}),
    );
    assert!(
        !request.lock_existed,
        "asked while the lock was still there"
    );
}

/// A scratch lock, held by an `acquire` of this test process, and a fake
/// supervisor that watches it.
fn acquired(scratch: &Scratch, answers: Vec<Answer>) -> FakeSupervisor {
    scratch
        .cmd(&["acquire", "--owner", &std::process::id().to_string()])
        .assert()
        .success();
    assert!(scratch.lock().exists());
    FakeSupervisor::answering(answers, Some(scratch.lock()))
}

/// Acquire the scratch lock, then run `ARGS` (a release) with the API
/// configured and the fake supervisor giving `answers`.
fn release_with_api(
    scratch: &Scratch,
    answers: Vec<Answer>,
    args: &[&str],
) -> (FakeSupervisor, Output) {
    let fake = acquired(scratch, answers);
    let out = run(scratch_with_api(scratch, &fake.address, args));
    (fake, out)
}

/// `resin-lock --path <lock> ARGS…` with the API configured.
fn scratch_with_api(scratch: &Scratch, address: &str, args: &[&str]) -> Command {
    let mut cmd = scratch.cmd(args);
    cmd.env("BALENA_SUPERVISOR_ADDRESS", address)
        .env("BALENA_SUPERVISOR_API_KEY", KEY);
    cmd
}

#[test]
fn release_update_now_posts_when_an_update_is_pending() {
    let scratch = Scratch::new();
    let (fake, out) = release_with_api(
        &scratch,
        vec![Answer::Status(200, DEVICE), Answer::Status(202, "")],
        &["release", "--update-now"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        stderr(&out),
        "",
        "a request that worked is not worth a line"
    );
    assert!(!scratch.lock().exists());
    assert_device_request(&fake.request());
    assert_update_now_request(&fake.request());
    fake.assert_no_request();
}

#[test]
fn release_update_now_verbose_says_what_was_asked_and_the_answer() {
    let scratch = Scratch::new();
    let (fake, out) = release_with_api(
        &scratch,
        vec![Answer::Status(200, DEVICE), Answer::Status(204, "")],
        &["-v", "release", "--update-now"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("GET http://127.0.0.1:"), "{err}");
    assert!(err.contains("an update is pending"), "{err}");
    assert!(err.contains(r#"{"force":false,"cancel":true}"#), "{err}");
    assert!(err.contains("accepted (HTTP 204)"), "{err}");
    assert_device_request(&fake.request());
    assert_update_now_request(&fake.request());
}

#[test]
fn release_update_now_asks_nothing_when_no_update_is_pending() {
    let scratch = Scratch::new();
    let (fake, out) = release_with_api(
        &scratch,
        vec![Answer::Status(200, IDLE_DEVICE), Answer::Status(202, "")],
        &["-v", "release", "--update-now"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("no update is pending"),
        "{}",
        stderr(&out)
    );
    assert_device_request(&fake.request());
    fake.assert_no_request();
}

#[test]
fn update_now_posts_when_the_supervisor_cannot_say() {
    let cases: Vec<(&str, Answer)> = vec![
        ("401", Answer::Status(401, "Unauthorized")),
        ("500", Answer::Status(500, r#"{"error":"boom"}"#)),
        (
            "malformed",
            raw("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n{nope"),
        ),
        ("not HTTP", raw("SSH-2.0-OpenSSH\r\n")),
        ("no field", Answer::Status(200, r#"{"status":"Idle"}"#)),
    ];
    for (what, device) in cases {
        let scratch = Scratch::new();
        let (fake, out) = release_with_api(
            &scratch,
            vec![device, Answer::Status(202, "")],
            &["release", "--update-now"],
        );
        assert_eq!(out.status.code(), Some(0), "{what}: {}", stderr(&out));
        assert_eq!(stderr(&out), "", "{what}: the update was asked for");
        assert_device_request(&fake.request());
        assert_update_now_request(&fake.request());
        fake.assert_no_request();
    }
}

#[test]
fn update_now_refused_is_one_warning_and_release_still_exits_0() {
    let cases: Vec<(&str, Answer, &str)> = vec![
        (
            "401",
            Answer::Status(401, "Unauthorized"),
            "refused the API key",
        ),
        (
            "500",
            Answer::Status(500, r#"{"error":"boom"}"#),
            "HTTP 500",
        ),
        ("malformed", raw("HTTP/1.1 2x\r\n\r\n"), "bad answer"),
        ("silent", Answer::Silent, "no answer"),
    ];
    for (what, post, word) in cases {
        let scratch = Scratch::new();
        let (fake, out) = release_with_api(
            &scratch,
            vec![Answer::Status(200, DEVICE), post],
            &["release", "--update-now"],
        );
        assert_eq!(out.status.code(), Some(0), "{what}: {}", stderr(&out));
        assert_one_error_line(&out, what);
        assert!(
            stderr(&out).contains("--update-now"),
            "{what}: {}",
            stderr(&out)
        );
        assert!(stderr(&out).contains(word), "{what}: {}", stderr(&out));
        assert!(!scratch.lock().exists(), "{what}");
        assert_device_request(&fake.request());
        assert_update_now_request(&fake.request());
    }
}

#[test]
fn update_now_unreachable_supervisor_is_one_warning_and_no_post() {
    // A silent supervisor (it takes the connection, never answers) and none at all.
    let silent = FakeSupervisor::start(Answer::Silent);
    for (what, address) in [
        ("silent", silent.address.clone()),
        ("absent", dead_address()),
    ] {
        let scratch = Scratch::new();
        let out = run(scratch_with_api(
            &scratch,
            &address,
            &["release", "--update-now"],
        ));
        assert_eq!(out.status.code(), Some(0), "{what}: {}", stderr(&out));
        assert_one_error_line(&out, what);
        assert!(
            stderr(&out).contains("cannot reach the supervisor"),
            "{what}: {}",
            stderr(&out)
        );
    }
    assert_eq!(silent.request().method, "GET");
    silent.assert_no_request();
}

#[test]
fn update_now_without_configuration_warns_once_and_names_the_label() {
    let scratch = Scratch::new();
    let out = run(scratch.cmd(&["release", "--update-now"]));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_one_error_line(&out, "not configured");
    assert!(stderr(&out).contains(LABEL), "{}", stderr(&out));
    let quiet = run(scratch.cmd(&["-q", "release", "--update-now"]));
    assert_eq!(quiet.status.code(), Some(0));
    assert_eq!(stderr(&quiet), "");
}

#[test]
fn update_now_is_not_asked_when_release_is_refused() {
    let scratch = Scratch::new();
    std::fs::write(scratch.lock(), "").unwrap();
    let fake = FakeSupervisor::start(Answer::Status(200, DEVICE));
    let out = run(scratch_with_api(
        &scratch,
        &fake.address,
        &["release", "--update-now"],
    ));
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    fake.assert_no_request();
}

#[test]
fn run_update_now_keeps_the_commands_exit_status() {
    // pending (POST accepted), no answer at all, and a POST the supervisor refuses.
    for (what, answers, posts) in [
        (
            "accepted",
            vec![Answer::Status(200, DEVICE), Answer::Status(202, "")],
            true,
        ),
        (
            "refused",
            vec![Answer::Status(200, DEVICE), Answer::Status(500, "")],
            true,
        ),
        ("idle", vec![Answer::Status(200, IDLE_DEVICE)], false),
    ] {
        let scratch = Scratch::new();
        let fake = FakeSupervisor::answering(answers, Some(scratch.lock()));
        let out = run(scratch_with_api(
            &scratch,
            &fake.address,
            &[
                "run",
                "--update-now",
                "--",
                "sh",
                "-c",
                "test -e \"$RESIN_LOCK_HELD\" && exit 7",
            ],
        ));
        assert_eq!(out.status.code(), Some(7), "{what}: {}", stderr(&out));
        assert_device_request(&fake.request());
        if posts {
            assert_update_now_request(&fake.request());
        }
        fake.assert_no_request();
    }
    let out = run(scratch_with_api(
        &Scratch::new(),
        &dead_address(),
        &["run", "--update-now", "--", "sh", "-c", "kill -TERM $$"],
    ));
    assert_eq!(out.status.code(), Some(128 + 15), "{}", stderr(&out));
    assert_one_error_line(&out, "absent");
}

// ---- helios, the next supervisor (balena-io/helios helios-util/src/locking.rs) ----

/// The first bytes of helios' lock files.
const HELIOS_TAG: [u8; 2] = [0x02, 0x63];

/// A lock file made the way helios makes one: a temp file in the lock's
/// directory with the tag, flocked, then linked into place (or, `force`,
/// renamed over whatever is there, under a flock of the directory). Held
/// while this value lives.
struct Helios {
    file: std::fs::File,
}

impl Helios {
    fn lock(path: &std::path::Path, force: bool) -> Helios {
        let dir = path.parent().unwrap();
        let _dir_guard = force.then(|| {
            let dir = std::fs::File::open(dir).unwrap();
            dir.lock().unwrap();
            dir
        });
        let tmp = dir.join(format!("tmp-{}.lock", std::process::id()));
        let mut file = std::fs::File::create_new(&tmp).unwrap();
        std::fs::set_permissions(&tmp, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .unwrap();
        file.write_all(&HELIOS_TAG).unwrap();
        file.sync_all().unwrap();
        file.try_lock().unwrap();
        if force {
            std::fs::rename(&tmp, path).unwrap();
        } else {
            std::fs::hard_link(&tmp, path).unwrap();
            std::fs::remove_file(&tmp).unwrap();
        }
        Helios { file }
    }
}

fn assert_helios_file(path: &std::path::Path) {
    assert_eq!(
        std::fs::read(path).unwrap(),
        HELIOS_TAG,
        "helios' file is still there"
    );
}

#[test]
fn a_helios_lock_is_the_supervisors_held_and_never_stale() {
    let s = Scratch::new();
    let helios = Helios::lock(&s.lock(), false);
    for flocked in [true, false] {
        let json = status_json(&s);
        let lock = &json["locks"][0];
        assert_eq!(lock["held_by"], "supervisor", "{json}");
        assert_eq!(lock["state"], "held", "{json}");
        let out = s.cmd(&["status", "--health"]).output().unwrap();
        assert_eq!(out.status.code(), Some(0), "flocked {flocked}");
        assert!(stdout(&out).starts_with("healthy: "), "{}", stdout(&out));
        assert!(stdout(&out).contains("helios"), "{}", stdout(&out));
        // A waiter says the supervisor holds it, and what ends the wait.
        let out = s.cmd(&["acquire", "-w", "0.2"]).output().unwrap();
        assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
        let err = stderr(&out);
        assert!(
            err.contains("held by the supervisor (helios' lock file)"),
            "{err}"
        );
        assert!(err.contains("the supervisor is updating"), "{err}");
        // Left behind unflocked, it is still the supervisor's (helios
        // attaches to its own file): never taken over, never released.
        helios.file.unlock().unwrap();
    }
    let out = s.cmd(&["release"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_helios_file(&s.lock());
}

#[test]
fn helios_forcing_over_a_run_is_said_and_its_file_left_alone() {
    use std::process::Stdio;
    let s = Scratch::new();
    let ready = s.path("ready");
    let mut run = s
        .cmd(&["run", "--", "sh", "-c", "touch \"$0\"; read line"])
        .arg(&ready)
        .env("BALENA_SERVICE_NAME", "worker")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_file(&ready);
    // Until the force, the holder is named with its service.
    let text = stdout(&s.cmd(&["status"]).output().unwrap());
    assert!(
        text.contains("resin-lock run in service worker (pid"),
        "{text}"
    );
    assert_eq!(record(&s.lock())["service"], "worker");

    let _helios = Helios::lock(&s.lock(), true);
    run.stdin.take().unwrap().write_all(b"done\n").unwrap();
    let out = run.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("our lock file was removed by someone else"),
        "{err}"
    );
    assert!(err.contains("the supervisor"), "{err}");
    assert!(err.contains("left it alone"), "{err}");
    assert_helios_file(&s.lock());
    assert_eq!(
        s.leftovers(&["updates.lock", "ready"]),
        Vec::<String>::new()
    );
}

#[test]
fn release_after_helios_forced_over_an_acquire_leaves_its_file() {
    let s = Scratch::new();
    let owner = Sleeper::new();
    s.cmd(&["acquire", "--owner", &owner.pid()])
        .assert()
        .success();
    let keeper = record(&s.lock())["pid"].as_i64().unwrap() as i32;
    let _helios = Helios::lock(&s.lock(), true);
    let out = s
        .cmd(&["release", "--owner", &owner.pid()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("removed by someone else"), "{err}");
    assert!(
        err.contains("held by the supervisor (helios' lock file) now, left it alone"),
        "{err}"
    );
    wait_until("the displaced keeper to exit", || !alive(keeper));
    assert_helios_file(&s.lock());
}

// Device tags (SPEC 4d, issue 22).

/// The one tag of a `PATCH /v2/device/tags` the fake accepted: key, value.
fn tag_of(request: &Received) -> (String, String) {
    assert!(valid_tags(request), "not valid for v17.8: {request:?}");
    assert_eq!(request.query, format!("apikey={KEY}"));
    let tags: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(&request.body).unwrap();
    assert_eq!(tags.len(), 1, "{request:?}");
    let (key, value) = tags.into_iter().next().unwrap();
    (key, value.as_str().unwrap().to_owned())
}

/// A file the test creates to let a command's CMD end.
fn go_script(scratch: &Scratch) -> (PathBuf, String) {
    let go = scratch.path("go");
    let script = format!(
        "while [ ! -e '{}' ]; do sleep 0.01; done; exit 3",
        go.display()
    );
    (go, script)
}

#[test]
fn tags_a_short_hold_sends_nothing() {
    let scratch = Scratch::new();
    let fake = FakeSupervisor::start(Answer::Tags);
    let out = run(scratch_with_api(
        &scratch,
        &fake.address,
        &["run", "--tag", "--", "true"],
    ));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stderr(&out), "");
    let mut cmd = scratch_with_api(&scratch, &fake.address, &["acquire"]);
    cmd.env("BALENA_LOCK_TAGS", "1");
    assert_eq!(run(cmd).status.code(), Some(0));
    let out = run(scratch_with_api(&scratch, &fake.address, &["release"]));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(!scratch.lock().exists());
    fake.assert_no_request();
    assert_eq!(scratch.leftovers(&[]), Vec::<String>::new());
}

#[test]
fn tags_a_long_run_is_held_once_then_free_once() {
    let scratch = Scratch::new();
    let fake = FakeSupervisor::answering(vec![Answer::Tags], Some(scratch.lock()));
    let (go, script) = go_script(&scratch);
    let mut cmd = scratch_with_api(
        &scratch,
        &fake.address,
        &[
            "run",
            "--reason",
            "flashing\nfirmware",
            "--max-hold",
            "1h",
            "--tag-after",
            "0.2s",
            "--",
            "sh",
            "-c",
            &script,
        ],
    );
    cmd.env("RESIN_LOCK_TAGS", "1")
        .env("BALENA_SERVICE_NAME", "my service")
        .stderr(std::process::Stdio::piped());
    let child = cmd.spawn().unwrap();
    let held = fake.request();
    assert!(held.lock_existed);
    let (key, value) = tag_of(&held);
    assert_eq!(key, "update-lock.my_service");
    assert!(value.starts_with("held since 20"), "{value}");
    assert!(value.contains("; max-hold until 20"), "{value}");
    assert!(value.contains("; by run: sh -c while"), "{value}");
    assert!(value.ends_with("; reason: flashing\\nfirmware"), "{value}");
    std::fs::write(&go, "").unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert_eq!(stderr(&out), "");
    let free = fake.request();
    assert!(!free.lock_existed, "free was sent before the release");
    let (key, value) = tag_of(&free);
    assert_eq!(key, "update-lock.my_service");
    assert!(value.starts_with("free since 20"), "{value}");
    fake.assert_no_request();
    // status --json shows what was sent last.
    let mut status = scratch.cmd(&["status", "--json"]);
    status.env("BALENA_SERVICE_NAME", "my service");
    let json: serde_json::Value = serde_json::from_slice(&run(status).stdout).unwrap();
    let tag = &json["locks"][0]["tag"];
    assert_eq!(tag["key"], "update-lock.my_service", "{json}");
    assert!(
        tag["value"].as_str().unwrap().starts_with("free since"),
        "{json}"
    );
    assert!(tag["at"].as_str().unwrap().starts_with("20"), "{json}");
    assert_eq!(tag["result"], "accepted (HTTP 202)", "{json}");
}

/// `hold --tag`: published once held long enough, as `run`'s is, with
/// the holder named as hold and its program; `free` at the end of stdin.
#[test]
fn tags_a_long_hold_is_held_once_then_free_once() {
    let scratch = Scratch::new();
    let fake = FakeSupervisor::answering(vec![Answer::Tags], Some(scratch.lock()));
    let mut cmd = scratch_with_api(
        &scratch,
        &fake.address,
        &[
            "hold",
            "--tag",
            "--tag-after",
            "0.2s",
            "--reason",
            "migration",
        ],
    );
    cmd.env("BALENA_SERVICE_NAME", "api")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let held = fake.request();
    assert!(held.lock_existed);
    let (key, value) = tag_of(&held);
    assert_eq!(key, "update-lock.api");
    assert!(value.starts_with("held since 20"), "{value}");
    // The holder is hold, for this test's process: its command line.
    let me = std::env::current_exe().unwrap();
    assert!(
        value.contains(&format!("; by hold: {}", me.display())),
        "{value}"
    );
    assert!(value.ends_with("; reason: migration"), "{value}");
    drop(child.stdin.take());
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stderr(&out), "");
    let events: Vec<serde_json::Value> = stdout(&out)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(events.len(), 2, "{events:?}");
    assert_eq!(events[0]["event"], "held");
    assert_eq!(events[1]["event"], "released");
    let free = fake.request();
    assert!(!free.lock_existed, "free was sent after the release");
    let (key, value) = tag_of(&free);
    assert_eq!(key, "update-lock.api");
    assert!(value.starts_with("free since 20"), "{value}");
    fake.assert_no_request();
}

#[test]
fn tags_a_long_acquire_is_held_once_then_free_once() {
    let scratch = Scratch::new();
    let fake = FakeSupervisor::answering(vec![Answer::Tags], Some(scratch.lock()));
    let me = std::process::id().to_string();
    let out = run(scratch_with_api(
        &scratch,
        &fake.address,
        &["acquire", "--tag", "--tag-after", "0.2", "--owner", &me],
    ));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let (key, value) = tag_of(&fake.request());
    assert_eq!(key, "update-lock.main");
    assert!(value.starts_with("held since 20"), "{value}");
    assert!(value.contains("; by acquire: "), "{value}");
    let out = run(scratch_with_api(&scratch, &fake.address, &["release"]));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let free = fake.request();
    assert!(!free.lock_existed);
    assert!(tag_of(&free).1.starts_with("free since 20"));
    // The keeper notes what it sent once the answer came, after the fake
    // saw the request.
    let note = scratch.path("update-lock.main.tag");
    let read_note = || -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(&note).unwrap_or_default())
            .unwrap_or(serde_json::Value::Null)
    };
    wait_until("the note of the free tag", || {
        read_note()["value"]
            .as_str()
            .is_some_and(|v| v.starts_with("free since"))
    });
    assert_eq!(read_note()["result"], "accepted (HTTP 202)");
    fake.assert_no_request();
}

#[test]
fn tags_a_killed_owner_leaves_the_lock_stale_and_says_so() {
    let scratch = Scratch::new();
    let fake = FakeSupervisor::answering(vec![Answer::Tags], Some(scratch.lock()));
    let mut owner = Command::new("sleep").arg("1000").spawn().unwrap();
    let pid = owner.id().to_string();
    let mut cmd = scratch_with_api(&scratch, &fake.address, &["acquire", "--owner", &pid]);
    cmd.env("BALENA_LOCK_TAGS", "1");
    assert_eq!(run(cmd).status.code(), Some(0));
    owner.kill().unwrap();
    owner.wait().unwrap();
    let stale = fake.request();
    assert!(stale.lock_existed, "the lock stays, stale");
    let (_, value) = tag_of(&stale);
    assert!(value.starts_with("stale since 20"), "{value}");
    assert!(value.contains("owner exited without release"), "{value}");
    // The next hold takes it over and puts the tag right at once.
    let out = run(scratch_with_api(
        &scratch,
        &fake.address,
        &["run", "--tag", "--", "true"],
    ));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(tag_of(&fake.request()).1.starts_with("held since"));
    assert!(tag_of(&fake.request()).1.starts_with("free since"));
    fake.assert_no_request();
}

#[test]
fn tags_a_silent_or_failing_api_changes_no_exit_status_and_no_lock() {
    for answer in [Answer::Silent, Answer::Status(500, r#"{"error":"boom"}"#)] {
        let scratch = Scratch::new();
        let fake = FakeSupervisor::answering(vec![answer], Some(scratch.lock()));
        let (go, script) = go_script(&scratch);
        let mut cmd = scratch_with_api(
            &scratch,
            &fake.address,
            &[
                "run",
                "--tag",
                "--tag-after",
                "0.1",
                "--",
                "sh",
                "-c",
                &script,
            ],
        );
        cmd.stderr(std::process::Stdio::piped());
        let child = cmd.spawn().unwrap();
        // The fake got `held` (and a silent one never answers it).
        assert!(fake.request().lock_existed);
        std::fs::write(&go, "").unwrap();
        let started = std::time::Instant::now();
        let out = child.wait_with_output().unwrap();
        assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
        assert!(!scratch.lock().exists());
        // Bounded: two requests of at most 1 s each, never the fake's
        // silence (for ever). Generous for a loaded machine.
        assert!(started.elapsed() < Duration::from_secs(8));
        let err = stderr(&out);
        assert!(
            err.lines().all(|l| l
                .starts_with("resin-lock: device tag update-lock.main: PATCH http://127.0.0.1:")),
            "{err}"
        );
        assert!(err.lines().count() <= 2, "{err}");
        assert!(!err.is_empty(), "a failure is said");
    }
}

#[test]
fn tags_without_the_api_are_one_line_for_the_option_and_quiet_for_the_variable() {
    let scratch = Scratch::new();
    let out = run(scratch.cmd(&["run", "--tag", "--", "true"]));
    assert_eq!(out.status.code(), Some(0));
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains(LABEL), "{err}");
    let mut cmd = scratch.cmd(&["run", "--", "true"]);
    cmd.env("BALENA_LOCK_TAGS", "1");
    let out = run(cmd);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(stderr(&out), "");
    let mut cmd = scratch.cmd(&["run", "--", "true"]);
    cmd.env("BALENA_LOCK_TAGS", "0")
        .env("BALENA_SUPERVISOR_ADDRESS", dead_address())
        .env("BALENA_SUPERVISOR_API_KEY", KEY);
    assert_eq!(stderr(&run(cmd)), "", "0 is off");
}

/// A shared hold's tag says `free` only when the lock is free: the first
/// of two shared holders to leave sends nothing, the last one `free`.
#[test]
fn tags_a_shared_lock_is_free_only_when_its_last_holder_leaves() {
    let scratch = Scratch::new();
    let fake = FakeSupervisor::answering(vec![Answer::Tags], Some(scratch.lock()));
    let (go1, script1) = go_script(&scratch);
    let go2 = scratch.path("go2");
    let script2 = format!(
        "while [ ! -e '{}' ]; do sleep 0.01; done; exit 3",
        go2.display()
    );
    let start = |script: &str| {
        let mut cmd = scratch_with_api(
            &scratch,
            &fake.address,
            &["run", "-s", "--tag-after", "0.2s", "--", "sh", "-c", script],
        );
        cmd.env("RESIN_LOCK_TAGS", "1")
            .stderr(std::process::Stdio::piped());
        cmd.spawn().unwrap()
    };
    let first = start(&script1);
    let held = fake.request();
    assert!(tag_of(&held).1.starts_with("held since"), "{held:?}");
    let second = start(&script2);
    let held = fake.request();
    assert!(tag_of(&held).1.starts_with("held since"), "{held:?}");
    // The first one leaves; the second still holds the lock.
    std::fs::write(&go1, "").unwrap();
    let out = first.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(scratch.lock().exists(), "the second holder keeps the lock");
    fake.assert_no_request();
    std::fs::write(&go2, "").unwrap();
    let out = second.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let free = fake.request();
    assert!(tag_of(&free).1.starts_with("free since"), "{free:?}");
    assert!(!free.lock_existed);
    fake.assert_no_request();
}

/// `run --max-hold`: the tag says `free` when the lock is let go of at
/// --max-hold, while CMD still runs, not only once CMD ends.
#[test]
fn tags_run_max_hold_frees_the_tag_when_it_lets_go() {
    let scratch = Scratch::new();
    let fake = FakeSupervisor::answering(vec![Answer::Tags], Some(scratch.lock()));
    let (go, script) = go_script(&scratch);
    let mut cmd = scratch_with_api(
        &scratch,
        &fake.address,
        &[
            "run",
            "--max-hold",
            "1s",
            "--tag-after",
            "0.2s",
            "--",
            "sh",
            "-c",
            &script,
        ],
    );
    cmd.env("RESIN_LOCK_TAGS", "1")
        .stderr(std::process::Stdio::piped());
    let child = cmd.spawn().unwrap();
    let held = fake.request();
    assert!(tag_of(&held).1.starts_with("held since"), "{held:?}");
    // CMD still runs (it waits for `go`): the tag must come free anyway.
    let free = fake.request();
    assert!(tag_of(&free).1.starts_with("free since"), "{free:?}");
    assert!(!go.exists(), "CMD was still running");
    std::fs::write(&go, "").unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    fake.assert_no_request();
}
