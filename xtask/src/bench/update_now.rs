//! Update-now: the time from the end of a critical section to the
//! supervisor receiving `POST /v1/update` from `run --update-now`. A tiny
//! local server plays the supervisor (`GET /v1/device` says an update is
//! pending; `POST /v1/update` is accepted) and notes when each POST arrives.
//! The holder's command blocks reading a pipe that the harness closes at
//! t0; t1 is when the POST arrives. Without `--update-now` the supervisor
//! starts the update after its own backoff (up to 15 min). A second row
//! times `run --tag`: the end of the critical section to the `free` PATCH
//! of its device tag (SPEC 4d), for information: no budget names it.

use std::ffi::OsString;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

use super::process::{Guard, Scratch};
use super::stats::Series;
use super::{Report, Row, Tools, info, judged, ms};

/// Rounds of the measurement (each takes a few milliseconds).
pub(super) const ROUNDS: usize = 20;
/// What `GET /v1/device` answers.
const DEVICE: &str =
    r#"{"status":"Idle","update_pending":true,"update_downloaded":true,"update_failed":false}"#;

pub(super) fn measure(tools: &Tools, scratch: &Scratch, report: &mut Report) -> Result<(), String> {
    eprintln!(
        "update-now: {ROUNDS} rounds of resin-lock run --update-now against a local supervisor"
    );
    let (address, posts) = supervisor()?;
    let lock = scratch.lock("update-now")?;
    let mut walls = Vec::with_capacity(ROUNDS);
    for _ in 0..ROUNDS {
        walls.push(once(tools, &address, &lock, &posts)?);
    }
    push_row(
        report,
        "update-now: release to POST /v1/update (release)",
        "release to the supervisor's update call, --update-now (median)",
        "up to 15 min (supervisor backoff)",
        walls,
        Some("update-now"),
    );

    // Device tags (SPEC 4d): release to the `free` PATCH, from `run --tag`
    // whose `held` was published at once (`--tag-after 0`).
    let mut walls = Vec::with_capacity(ROUNDS);
    for _ in 0..ROUNDS {
        walls.push(once_with(
            tools,
            &address,
            &lock,
            &posts,
            &["run", "--tag", "--tag-after", "0", "--"],
        )?);
    }
    push_row(
        report,
        "tags: release to PATCH /v2/device/tags free (release)",
        "release to the device tag's free, --tag (median)",
        "— (no lock tool publishes it)",
        walls,
        None,
    );
    Ok(())
}

/// A series and its row, its median judged against `budget` (or for
/// information).
fn push_row(
    report: &mut Report,
    name: &str,
    bench: &str,
    peer: &str,
    walls: Vec<Duration>,
    budget: Option<&str>,
) {
    let series = Series {
        name: name.to_owned(),
        walls,
    };
    let median = series.median();
    report.rows.push(Row {
        bench: bench.to_owned(),
        ours: ms(median),
        peer: peer.to_owned(),
        ratio: "—".to_owned(),
        verdict: budget.map_or_else(info, |id| judged(id, median.as_secs_f64() * 1000.0)),
    });
    report.walls.push(series);
}

/// One round: hold the lock, end the critical section, time the POST.
fn once(
    tools: &Tools,
    address: &str,
    lock: &OsString,
    posts: &Receiver<Instant>,
) -> Result<Duration, String> {
    once_with(tools, address, lock, posts, &["run", "--update-now", "--"])
}

/// One round of `resin-lock --path LOCK ARGS sh -c …`: the time from the
/// end of the critical section to the request the harness waits for.
fn once_with(
    tools: &Tools,
    address: &str,
    lock: &OsString,
    posts: &Receiver<Instant>,
    args: &[&str],
) -> Result<Duration, String> {
    let mut child = Guard(
        Command::new(&tools.release)
            .arg("--path")
            .arg(lock)
            .args(args)
            .arg(&tools.sh)
            .args(["-c", "echo ready; read x || :"])
            .env("BALENA_SUPERVISOR_ADDRESS", address)
            .env("BALENA_SUPERVISOR_API_KEY", "bench-key")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("cannot run resin-lock: {e}"))?,
    );
    let stdout = child.0.stdout.take().ok_or("no stdout")?;
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .map_err(|e| format!("update-now: reading the holder: {e}"))?;
    if line.trim() != "ready" {
        return Err(format!("update-now: the holder said {line:?}, not ready"));
    }
    drop(child.0.stdin.take());
    let t0 = Instant::now();
    let t1 = posts
        .recv_timeout(Duration::from_secs(30))
        .map_err(|_| "update-now: no POST /v1/update (or free tag) within 30 s".to_owned())?;
    let status = child.0.wait().map_err(|e| e.to_string())?;
    if !status.success() {
        return Err(format!("update-now: resin-lock run exited with {status}"));
    }
    Ok(t1.saturating_duration_since(t0))
}

/// Start the fake supervisor: its address, and the arrival times of POSTs.
fn supervisor() -> Result<(String, Receiver<Instant>), String> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("bind: {e}"))?;
    let address = format!(
        "http://{}",
        listener.local_addr().map_err(|e| e.to_string())?
    );
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            let Some(post) = serve(stream) else { continue };
            if post.is_some_and(|at| tx.send(at).is_err()) {
                return;
            }
        }
    });
    Ok((address, rx))
}

/// Answer one request; `Some(Some(t))` when it was the POST (arrived at t).
fn serve(mut stream: TcpStream) -> Option<Option<Instant>> {
    let mut reader = BufReader::new(stream.try_clone().ok()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line).ok()?;
    let mut length = 0;
    loop {
        let mut header = String::new();
        reader.read_line(&mut header).ok()?;
        let header = header.trim_end();
        if header.is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            length = value.trim().parse().ok()?;
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    // The request timed: `--update-now`'s POST, or `--tag`'s `free`.
    let post = request_line.starts_with("POST /v1/update")
        || (request_line.starts_with("PATCH /v2/device/tags")
            && String::from_utf8_lossy(&body).contains("free since"));
    let at = Instant::now();
    let answer = if post || request_line.starts_with("PATCH") {
        "HTTP/1.1 202 Accepted\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_owned()
    } else {
        format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
             Connection: close\r\n\r\n{DEVICE}",
            DEVICE.len()
        )
    };
    stream.write_all(answer.as_bytes()).ok()?;
    Some(post.then_some(at))
}
