//! `resin-lock window`: updates only inside time windows. The clock is
//! moved with libfaketime (LD_PRELOAD and FAKETIME on the window process
//! only), starting a few seconds before a boundary; every step waits for
//! an event (the lock file appearing or going, a line in the window's
//! stderr), never for a time.
//!
//! libfaketime reaches only a dynamically linked binary: the build's own,
//! or a `RESIN_LOCK_TEST_BIN` that is one. A static binary (`cargo xtask
//! dist`, the cross test's) skips these tests with one line; a missing
//! libfaketime is a failure with `CI=true`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;

use crate::common::*;

const LIBFAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";

/// Whether libfaketime can move the clock of the binary under test; says
/// why not in one line. A missing libfaketime is a failure under CI (a
/// missing tool); a static or foreign binary (the cross test's) is a skip
/// everywhere: LD_PRELOAD cannot reach it, whatever is installed.
fn faketime_usable(test: &str) -> bool {
    if is_emulated() || !dynamic(&bin()) {
        let _ = writeln!(
            std::io::stderr().lock(),
            "resin-lock tests: {test}: skipped: the binary under test is static or foreign: libfaketime cannot reach it"
        );
        return false;
    }
    if Path::new(LIBFAKETIME).exists() {
        return true;
    }
    let why = format!("{LIBFAKETIME} is missing (apt package faketime)");
    if std::env::var("CI").is_ok_and(|v| v == "true" || v == "1") {
        panic!("{test}: {why}")
    }
    let _ = writeln!(
        std::io::stderr().lock(),
        "resin-lock tests: {test}: skipped: {why}"
    );
    false
}

/// Whether an ELF binary names a dynamic loader (a PT_INTERP program header).
fn dynamic(path: &Path) -> bool {
    let Ok(bytes) = std::fs::read(path) else {
        return false;
    };
    let u16_at = |at: usize| u16::from_le_bytes([bytes[at], bytes[at + 1]]) as usize;
    if bytes.len() < 64 || &bytes[..4] != b"\x7fELF" || bytes[4] != 2 {
        return false;
    }
    let phoff = u64::from_le_bytes(bytes[32..40].try_into().unwrap()) as usize;
    let (phentsize, phnum) = (u16_at(54), u16_at(56));
    (0..phnum).any(|i| {
        let at = phoff + i * phentsize;
        bytes.get(at..at + 4) == Some(&3u32.to_le_bytes()[..])
    })
}

/// `resin-lock --path LOCK ARGS…` with its clock starting at `at` (UTC).
fn faked(s: &Scratch, at: &str, args: &[&str]) -> Command {
    let mut cmd = s.cmd(args);
    cmd.env("LD_PRELOAD", LIBFAKETIME)
        .env("FAKETIME", format!("@{at}"))
        .env("TZ", "UTC")
        .env_remove("RESIN_LOCK_WINDOW")
        .env_remove("RESIN_LOCK_WINDOW_TZ");
    cmd
}

/// A running `window`, its stderr in a file; stopped with SIGTERM when dropped.
struct Window {
    child: Child,
    err: PathBuf,
}

impl Window {
    /// `window` ARGS with its clock starting at `at` (`faked`).
    fn at(s: &Scratch, at: &str, args: &[&str]) -> Window {
        Window::start(s, faked(s, at, args))
    }

    fn start(s: &Scratch, mut cmd: Command) -> Window {
        let err = s.path(&format!("window-{}.err", rand_suffix()));
        let file = std::fs::File::create(&err).unwrap();
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .expect("spawn window");
        Window { child, err }
    }

    fn said(&self) -> String {
        std::fs::read_to_string(&self.err).unwrap_or_default()
    }

    /// Wait until its stderr has `text`.
    fn wait_said(&self, text: &str) {
        wait_until(&format!("the window to say {text:?}"), || {
            self.said().contains(text)
        });
    }

    /// SIGTERM, and its exit status and stderr.
    fn stop(mut self) -> (Option<i32>, String) {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        let status = self.child.wait().unwrap();
        (status.code(), self.said())
    }
}

impl Drop for Window {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn rand_suffix() -> u64 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(std::time::SystemTime::now())
}

/// The first record of a lock file (a window's file lists its joiners after it).
fn first_record(path: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path).expect("lock file");
    serde_json::from_str(text.lines().next().unwrap_or_default()).expect("record JSON")
}

fn exists(path: &Path) -> bool {
    path.symlink_metadata().is_ok()
}

/// A daily window: closed before it (the file is there from the start),
/// open at 02:00 (the file goes); open at the start of the next case,
/// closed at 04:00 (the file comes back), next opening the day after.
#[test]
fn daily_window_opens_and_closes_at_its_boundaries() {
    if !faketime_usable("daily_window_opens_and_closes_at_its_boundaries") {
        return;
    }
    let s = Scratch::new();
    let w = Window::at(
        &s,
        "2026-12-07 01:59:57",
        &["window", "--tz", "UTC", "02:00-04:00"],
    );
    w.wait_said("window closed: updates held back until 2026-12-07 02:00 UTC");
    assert!(exists(&s.lock()), "closed: the lock is held");
    assert_eq!(first_record(&s.lock())["mode"], "window");
    w.wait_said("window open: updates allowed until 2026-12-07 04:00 UTC");
    wait_until("the window to let go", || !exists(&s.lock()));
    let (code, said) = w.stop();
    assert_eq!(code, Some(0), "{said}");
    assert!(!exists(&s.lock()));

    let w = Window::at(
        &s,
        "2026-12-07 03:59:57",
        &["window", "--tz", "UTC", "02:00-04:00"],
    );
    wait_until("the window to close", || exists(&s.lock()));
    w.wait_said("window closed: updates held back until 2026-12-08 02:00 UTC");
    let (code, said) = w.stop();
    assert_eq!(code, Some(0), "{said}");
    assert!(!said.contains("window open"), "{said}");
    assert!(!exists(&s.lock()), "released on SIGTERM");
    assert_eq!(
        s.leftovers(&[])
            .iter()
            .filter(|n| !n.ends_with(".err"))
            .count(),
        0
    );
}

/// Day ranges: Friday's window closes until Monday; on Saturday it is
/// closed from the start until Monday.
#[test]
fn day_range_closes_until_the_next_listed_day() {
    if !faketime_usable("day_range_closes_until_the_next_listed_day") {
        return;
    }
    let s = Scratch::new();
    // 2026-12-11 is a Friday.
    let w = Window::at(
        &s,
        "2026-12-11 03:59:57",
        &["window", "--tz", "UTC", "Mon-Fri", "02:00-04:00"],
    );
    wait_until("the window to close", || exists(&s.lock()));
    w.wait_said("until 2026-12-14 02:00 UTC");
    drop(w.stop());
    let w = Window::at(
        &s,
        "2026-12-12 02:30:00",
        &["window", "--tz", "UTC", "Mon-Fri 02:00-04:00"],
    );
    w.wait_said("window closed: updates held back until 2026-12-14 02:00 UTC");
    assert!(exists(&s.lock()));
    drop(w.stop());
}

/// A window that crosses midnight belongs to the day it starts on: open
/// on Saturday 01:59:57 (Friday's window), closed at 02:00 until next Friday.
#[test]
fn window_across_midnight_belongs_to_its_start_day() {
    if !faketime_usable("window_across_midnight_belongs_to_its_start_day") {
        return;
    }
    let s = Scratch::new();
    let w = Window::at(
        &s,
        "2026-12-12 01:59:57",
        &["window", "--tz", "UTC", "Fri 22:00-02:00"],
    );
    wait_until("the window to close", || exists(&s.lock()));
    w.wait_said("window closed: updates held back until 2026-12-18 22:00 UTC");
    drop(w.stop());
}

/// Times are the zone's wall clock: 02:00 in Berlin is 01:00 UTC in
/// winter. And a daylight-saving day: on 2026-03-29 Berlin skips
/// 02:00-03:00, so a window inside that hour is empty that day and the
/// next opening is the day after.
#[test]
fn zone_and_daylight_saving_day() {
    if !faketime_usable("zone_and_daylight_saving_day") {
        return;
    }
    let s = Scratch::new();
    let w = Window::at(
        &s,
        "2026-12-07 00:59:57",
        &["window", "--tz", "Europe/Berlin", "Mon-Fri 02:00-04:00"],
    );
    w.wait_said("until 2026-12-07 02:00 Europe/Berlin");
    w.wait_said("window open: updates allowed until 2026-12-07 04:00 Europe/Berlin");
    wait_until("the window to let go", || !exists(&s.lock()));
    drop(w.stop());

    let w = Window::at(
        &s,
        "2026-03-29 00:59:57",
        &["window", "--tz", "Europe/Berlin", "02:15-02:45"],
    );
    w.wait_said("window closed: updates held back until 2026-03-30 02:15 Europe/Berlin");
    let out = s.cmd(&["status"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(
            "held by resin-lock window: updates allowed 02:15-02:45 Europe/Berlin, next "
        ),
        "{text}"
    );
    drop(w.stop());
}

/// The app's own `run`, exclusive or shared, goes ahead while the window
/// holds; app holders stay exclusive among themselves; the file stays
/// while any of them holds, and host OS reboots stay blocked.
#[test]
fn app_sections_go_ahead_beside_the_window() {
    if !faketime_usable("app_sections_go_ahead_beside_the_window") {
        return;
    }
    let s = Scratch::new();
    let w = Window::at(
        &s,
        "2026-12-07 01:00:00",
        &["window", "--tz", "UTC", "02:00-04:00"],
    );
    w.wait_said("window closed");
    let lock = s.lock();
    let me = bin();
    let l = lock.display();
    let b = me.display();
    let script = format!(
        "{b} --path {l} run -n true; echo nested-exclusive=$?; \
         {b} --path {l} run -s -n true; echo nested-shared=$?; \
         flock -nx {l} true; echo flock=$?"
    );
    let out = s
        .cmd(&["run", "-n", "--", "sh", "-c", &script])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("nested-exclusive=1"), "{text}");
    assert!(text.contains("nested-shared=1"), "{text}");
    assert!(text.contains("flock=1"), "{text}");

    let script = format!(
        "{b} --path {l} run -s -n true; echo shared-beside-shared=$?; \
         {b} --path {l} run -n true; echo exclusive-beside-shared=$?"
    );
    let out = s
        .cmd(&["run", "-s", "-n", "--", "sh", "-c", &script])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("shared-beside-shared=0"), "{text}");
    assert!(text.contains("exclusive-beside-shared=1"), "{text}");

    // `acquire` too, and `release` gives it back; the window stays.
    s.cmd(&["acquire", "-n"]).assert().success();
    s.cmd(&["run", "-n", "true"]).assert().code(1);
    s.cmd(&["release"]).assert().success();
    s.cmd(&["run", "-n", "true"]).assert().success();
    assert_eq!(first_record(&lock)["mode"], "window");
    // Nobody's section is counted by --health's --max-hold: only the window holds.
    s.cmd(&["status", "--health", "--max-hold", "1s"])
        .assert()
        .code(0);
    drop(w.stop());
}

/// A window that opens during a critical section lets go, and the lock
/// file goes only when the section ends.
#[test]
fn window_opening_during_a_section_leaves_the_file_until_it_ends() {
    if !faketime_usable("window_opening_during_a_section_leaves_the_file_until_it_ends") {
        return;
    }
    let s = Scratch::new();
    let w = Window::at(
        &s,
        "2026-12-07 01:59:56",
        &["window", "--tz", "UTC", "02:00-04:00"],
    );
    w.wait_said("window closed");
    let fifo = s.path("go");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let ready = s.path("ready");
    let mut section = s
        .cmd(&[
            "run",
            "--",
            "sh",
            "-c",
            &format!("touch {}; read x < {}", ready.display(), fifo.display()),
        ])
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_file(&ready);
    w.wait_said("window open");
    assert!(exists(&s.lock()), "the section still holds the lock");
    let st = status_json(&s);
    let holders = st["locks"][0]["holders"].as_array().unwrap().clone();
    assert_eq!(holders.len(), 1, "{st}");
    assert_eq!(holders[0]["mode"], "run", "{st}");
    std::fs::OpenOptions::new()
        .write(true)
        .open(&fifo)
        .unwrap()
        .write_all(b"x\n")
        .unwrap();
    assert!(section.wait().unwrap().success());
    wait_until("the lock file to go", || !exists(&s.lock()));
    let mut err = String::new();
    section
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(!err.contains("removed"), "{err}");
    drop(w.stop());
}

/// `status` names the window holder; `--json` gives its window.
#[test]
fn status_names_the_window_and_its_next_change() {
    if !faketime_usable("status_names_the_window_and_its_next_change") {
        return;
    }
    let s = Scratch::new();
    let w = Window::at(
        &s,
        "2026-12-07 00:30:00",
        &[
            "window",
            "--tz",
            "Europe/Berlin",
            "--reason",
            "kiosk hours",
            "Mon-Fri 02:00-04:00",
        ],
    );
    w.wait_said("window closed");
    // `status` on the same (faked) clock.
    let out = faked(&s, "2026-12-07 00:30:05", &["status", "--json"])
        .output()
        .unwrap();
    let st: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let holder = &st["locks"][0]["holders"][0];
    assert_eq!(holder["mode"], "window", "{st}");
    assert_eq!(holder["window"]["open"], false, "{st}");
    assert_eq!(
        holder["window"]["windows"],
        serde_json::json!(["Mon-Fri 02:00-04:00"]),
        "{st}"
    );
    assert!(
        holder["window"]["next_change"]
            .as_str()
            .unwrap()
            .ends_with(":00+01:00"),
        "{st}"
    );
    assert_eq!(
        holder["window"]["next_change"], "2026-12-07T02:00:00+01:00",
        "{st}"
    );
    assert_eq!(st["locks"][0]["window"]["tz"], "Europe/Berlin", "{st}");
    let out = faked(&s, "2026-12-07 00:30:05", &["status"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(
            "held by resin-lock window: updates allowed Mon-Fri 02:00-04:00 Europe/Berlin, \
             next 2026-12-07 02:00"
        ),
        "{text}"
    );
    assert!(text.contains("reason: kiosk hours"), "{text}");
    drop(w.stop());
}

/// RESIN_LOCK_WINDOW and RESIN_LOCK_WINDOW_TZ set the same as the arguments.
#[test]
fn environment_variables_set_windows_and_zone() {
    if !faketime_usable("environment_variables_set_windows_and_zone") {
        return;
    }
    let s = Scratch::new();
    let mut cmd = faked(&s, "2026-12-12 09:59:57", &["window"]);
    cmd.env(
        "RESIN_LOCK_WINDOW",
        "Mon-Fri 02:00-04:00; Sat,Sun 11:00-13:00",
    )
    .env("RESIN_LOCK_WINDOW_TZ", "Europe/Berlin");
    let w = Window::start(&s, cmd);
    w.wait_said("window closed: updates held back until 2026-12-12 11:00 Europe/Berlin");
    w.wait_said("window open: updates allowed until 2026-12-12 13:00 Europe/Berlin");
    wait_until("the window to let go", || !exists(&s.lock()));
    drop(w.stop());
}

/// A clock before the build (a board without a real-time clock before
/// NTP) counts as closed, said in one line, even inside a window.
#[test]
fn unset_clock_counts_as_closed() {
    if !faketime_usable("unset_clock_counts_as_closed") {
        return;
    }
    let s = Scratch::new();
    let w = Window::at(
        &s,
        "1970-01-01 00:00:10",
        &["window", "--tz", "UTC", "00:00-24:00"],
    );
    w.wait_said("not set yet, so updates are held back until it is");
    wait_until("the window to hold", || exists(&s.lock()));
    // `status` on the same unset clock says what the window does: closed,
    // with no known end.
    let out = faked(&s, "1970-01-01 00:00:12", &["status", "--json"])
        .output()
        .unwrap();
    let st: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let window = &st["locks"][0]["holders"][0]["window"];
    assert_eq!(window["open"], false, "{st}");
    assert!(window["next_change"].is_null(), "{st}");
    let (code, said) = w.stop();
    assert_eq!(code, Some(0), "{said}");
    assert_eq!(said.matches("not set yet").count(), 1, "{said}");
}

/// With --update-now, a window that opens asks the supervisor to apply a
/// pending update (no force: another service's lock still counts).
#[test]
fn update_now_asks_the_supervisor_when_the_window_opens() {
    if !faketime_usable("update_now_asks_the_supervisor_when_the_window_opens") {
        return;
    }
    let s = Scratch::new();
    let (address, requests) = supervisor_stand_in();
    let mut cmd = faked(
        &s,
        "2026-12-07 01:59:57",
        &["window", "--update-now", "--tz", "UTC", "02:00-04:00"],
    );
    cmd.env("BALENA_SUPERVISOR_ADDRESS", &address)
        .env("BALENA_SUPERVISOR_API_KEY", "k3y");
    let w = Window::start(&s, cmd);
    w.wait_said("window closed");
    let first = requests
        .recv_timeout(std::time::Duration::from_secs(60))
        .expect("a request");
    assert!(first.starts_with("GET /v1/device?apikey=k3y"), "{first}");
    assert!(!exists(&s.lock()), "asked only after letting go");
    let second = requests
        .recv_timeout(std::time::Duration::from_secs(60))
        .expect("a request");
    assert!(second.starts_with("POST /v1/update?apikey=k3y"), "{second}");
    assert!(
        second.ends_with(r#"{"force":false,"cancel":true}"#),
        "{second}"
    );
    let (code, said) = w.stop();
    assert_eq!(code, Some(0), "{said}");
    assert!(!said.contains("k3y"), "{said}");
}

/// A stand-in for the supervisor API: `GET /v1/device` says an update is
/// pending, `POST /v1/update` is accepted; each request (line and body)
/// is sent to the test.
fn supervisor_stand_in() -> (String, mpsc::Receiver<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = format!("http://{}", listener.local_addr().unwrap());
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            let mut length = 0;
            loop {
                let mut header = String::new();
                reader.read_line(&mut header).unwrap();
                if header.trim().is_empty() {
                    break;
                }
                if let Some((name, value)) = header.split_once(':')
                    && name.eq_ignore_ascii_case("content-length")
                {
                    length = value.trim().parse().unwrap();
                }
            }
            let mut body = vec![0; length];
            reader.read_exact(&mut body).unwrap();
            let request = format!(
                "{} {}",
                line.trim_end().trim_end_matches(" HTTP/1.1"),
                String::from_utf8_lossy(&body)
            );
            let answer = if line.starts_with("GET /v1/device") {
                let device = r#"{"update_pending":true,"status":"Idle"}"#;
                format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{device}",
                    device.len()
                )
            } else {
                "HTTP/1.1 202 Accepted\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_owned()
            };
            let _ = tx.send(request.trim_end().to_owned());
            let _ = stream.write_all(answer.as_bytes());
        }
    });
    (address, rx)
}

/// A forced update during a closed period: the supervisor removes the
/// window's file and takes its own lock (`lockfile -r 0` as uid 65534);
/// the window lets it happen, says so once, and holds again once the
/// supervisor's lock is gone.
#[test]
fn forced_update_is_let_happen_and_the_lock_taken_again() {
    if !faketime_usable("forced_update_is_let_happen_and_the_lock_taken_again") {
        return;
    }
    let Some(lockfile) = tool("lockfile") else {
        return;
    };
    let s = Scratch::new();
    std::fs::set_permissions(
        s.dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o1777),
    )
    .unwrap();
    let w = Window::at(
        &s,
        "2026-12-07 01:00:00",
        &["window", "--tz", "UTC", "02:00-04:00"],
    );
    w.wait_said("window closed");
    let l = s.lock();
    // As the supervisor forces: unlink, then `lockfile -r 0` as uid 65534.
    Command::new("sh")
        .arg("-c")
        .arg(format!(
            "rm {l} && setpriv --reuid=65534 --regid=65534 --clear-groups {lockfile} -r 0 {l}",
            l = l.display(),
            lockfile = lockfile.display()
        ))
        .assert()
        .success();
    w.wait_said("letting the update happen");
    assert_eq!(
        std::fs::read_to_string(&l).unwrap().trim(),
        "0",
        "the supervisor's lock stays"
    );
    std::fs::remove_file(&l).unwrap();
    wait_until("the window to hold again", || {
        std::fs::read(&l).is_ok_and(|b| b.starts_with(b"{"))
    });
    let (code, said) = w.stop();
    assert_eq!(code, Some(0), "{said}");
    assert_eq!(
        said.matches("letting the update happen").count(),
        1,
        "{said}"
    );
}

/// With -- CMD it runs CMD as `run` does, keeping the window, and exits as CMD did.
#[test]
fn with_a_command_it_exits_as_the_command_did() {
    if !faketime_usable("with_a_command_it_exits_as_the_command_did") {
        return;
    }
    let s = Scratch::new();
    let ready = s.path("ready");
    let script = format!(
        "test -e {l} && touch {r}; exit 7",
        l = s.lock().display(),
        r = ready.display()
    );
    let out = output_or_kill(faked(
        &s,
        "2026-12-07 01:00:00",
        &[
            "window",
            "--tz",
            "UTC",
            "02:00-04:00",
            "--",
            "sh",
            "-c",
            &script,
        ],
    ));
    assert_eq!(
        out.status.code(),
        Some(7),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(ready.exists(), "CMD ran while the window held the lock");
    assert!(!exists(&s.lock()), "released when CMD ended");
}

/// A WINDOW, day or zone that does not parse is a usage error naming it.
#[test]
fn bad_windows_and_zones_are_usage_errors() {
    let s = Scratch::new();
    for (args, named) in [
        (&["window", "Mon-Fry 02:00-04:00"][..], "`Mon-Fry`"),
        (&["window", "02:00-25:00"][..], "`02:00-25:00`"),
        (
            &["window", "--tz", "Mars/Olympus", "02:00-04:00"][..],
            "`Mars/Olympus`",
        ),
        (&["window", "Mon-Fri"][..], "`Mon-Fri` have no time"),
    ] {
        let out = s
            .cmd(args)
            .env_remove("RESIN_LOCK_WINDOW")
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(err.contains(named), "{args:?}: {err}");
        assert!(!exists(&s.lock()), "{args:?}");
    }
    // No window at all.
    let out = s
        .cmd(&["window"])
        .env_remove("RESIN_LOCK_WINDOW")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    // An empty variable counts as unset: still none.
    let out = s
        .cmd(&["window"])
        .env("RESIN_LOCK_WINDOW", "")
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(64),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// With --tag, the device tag says the window is closed and until when,
/// and when it opens, that the lock is free until the window closes.
#[test]
fn device_tag_says_window_closed_until() {
    if !faketime_usable("device_tag_says_window_closed_until") {
        return;
    }
    let s = Scratch::new();
    let (address, requests) = supervisor_stand_in();
    let mut cmd = faked(
        &s,
        "2026-12-07 01:59:57",
        &["window", "--tag", "--tz", "UTC", "02:00-04:00"],
    );
    cmd.env("BALENA_SUPERVISOR_ADDRESS", &address)
        .env("BALENA_SUPERVISOR_API_KEY", "k3y");
    let w = Window::start(&s, cmd);
    let closed = requests
        .recv_timeout(std::time::Duration::from_secs(60))
        .expect("a request");
    assert!(
        closed.starts_with("PATCH /v2/device/tags?apikey=k3y"),
        "{closed}"
    );
    assert!(
        closed.ends_with(
            r#"{"update-lock.main":"window closed until 2026-12-07 02:00 UTC; by window: 02:00-04:00"}"#
        ),
        "{closed}"
    );
    let open = requests
        .recv_timeout(std::time::Duration::from_secs(60))
        .expect("a request");
    assert!(
        open.contains(r#""update-lock.main":"free since 2026-12-07T02:00:0"#),
        "{open}"
    );
    assert!(
        open.ends_with(r#"; window open until 2026-12-07 04:00 UTC"}"#),
        "{open}"
    );
    let (code, said) = w.stop();
    assert_eq!(code, Some(0), "{said}");
}

/// Beside a window, an exclusive `run` waits for another one, and takes
/// the lock when that one ends (its leaving closes the file, which wakes
/// the waiter; the file itself stays, held by the window).
#[test]
fn exclusive_app_holders_queue_beside_the_window() {
    if !faketime_usable("exclusive_app_holders_queue_beside_the_window") {
        return;
    }
    let s = Scratch::new();
    let w = Window::at(
        &s,
        "2026-12-07 01:00:00",
        &["window", "--tz", "UTC", "02:00-04:00"],
    );
    w.wait_said("window closed");
    let fifo = s.path("go");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let (ready, done) = (s.path("ready"), s.path("done"));
    let mut first = s
        .cmd(&[
            "run",
            "--",
            "sh",
            "-c",
            &format!("touch {}; read x < {}", ready.display(), fifo.display()),
        ])
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    wait_for_file(&ready);
    let err = s.path("second.err");
    let mut second = s
        .cmd(&["run", "--", "touch", &done.display().to_string()])
        .stdin(Stdio::null())
        .stderr(std::fs::File::create(&err).unwrap())
        .spawn()
        .unwrap();
    wait_until("the second run to wait", || {
        std::fs::read_to_string(&err).is_ok_and(|e| e.contains("waiting for"))
    });
    assert!(
        !done.exists(),
        "the second ran while the first held the lock"
    );
    std::fs::OpenOptions::new()
        .write(true)
        .open(&fifo)
        .unwrap()
        .write_all(b"x\n")
        .unwrap();
    assert!(first.wait().unwrap().success());
    assert!(second.wait().unwrap().success());
    assert!(done.exists());
    assert_eq!(
        first_record(&s.lock())["mode"],
        "window",
        "the window holds on"
    );
    drop(w.stop());
}

/// Another uid: a window of uid 1000 in the world-writable lock directory
/// holds back updates, root's `run` goes ahead beside it, and so does a
/// `run` of the window's own user; a third user's `run` cannot open the
/// window's file for writing and waits for the window (said, not failed
/// in another way).
#[test]
fn a_window_of_another_user() {
    if !faketime_usable("a_window_of_another_user") {
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    let s = Scratch::new();
    std::fs::set_permissions(s.dir.path(), std::fs::Permissions::from_mode(0o1777)).unwrap();
    let as_uid = |uid: u32, args: &[&str]| {
        // libfaketime for the command only, not for setpriv (root), whose
        // shared memory the other user could not open.
        let mut cmd = Command::new("setpriv");
        cmd.arg(format!("--reuid={uid}"))
            .arg(format!("--regid={uid}"))
            .arg("--clear-groups")
            .arg("env")
            .arg(format!("LD_PRELOAD={LIBFAKETIME}"))
            .arg("FAKETIME=@2026-12-07 01:00:00")
            .arg(bin_for_others())
            .arg("--path")
            .arg(s.lock())
            .args(args);
        cmd
    };
    let w = Window::start(&s, as_uid(1000, &["window", "--tz", "UTC", "02:00-04:00"]));

    w.wait_said("window closed");
    use std::os::unix::fs::MetadataExt;
    assert_eq!(std::fs::metadata(s.lock()).unwrap().uid(), 1000);
    s.cmd(&["run", "-n", "true"]).assert().success();
    as_uid(1000, &["run", "-n", "true"]).assert().success();
    let out = as_uid(1001, &["run", "-n", "true"]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("held by resin-lock window"), "{err}");
    assert_eq!(first_record(&s.lock())["mode"], "window");
    drop(w.stop());
    assert!(!exists(&s.lock()), "the window's user removed its file");
}

/// Sections beside a window that holds for days never fill its file: the
/// lines of holders that have ended are dropped when a joiner needs the
/// room, so every `acquire` is recorded and its `release` finds it.
#[test]
fn many_sections_beside_a_window_never_fill_its_file() {
    if !faketime_usable("many_sections_beside_a_window_never_fill_its_file") {
        return;
    }
    let s = Scratch::new();
    let w = Window::at(
        &s,
        "2026-12-07 01:00:00",
        &["window", "--tz", "UTC", "02:00-04:00"],
    );
    w.wait_said("window closed");
    let lock = s.lock();
    // Each `run` adds its record line (some 300 bytes) and ends: 400 of
    // them are well past the file's 64 KiB bound.
    let script = format!(
        "i=0; while [ $i -lt 400 ]; do {b} -q --path {l} run -n -- true || exit 1; i=$((i+1)); done",
        b = bin().display(),
        l = lock.display()
    );
    let out = Command::new("sh").args(["-c", &script]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let size = std::fs::metadata(&lock).unwrap().len();
    assert!(
        size < 16 * 1024,
        "the file kept the ended holders: {size} bytes"
    );
    // An `acquire` now is recorded, and its `release` finds it.
    let script = format!(
        "{b} -q --path {l} acquire -n || exit 3; {b} -q --path {l} release || exit 4",
        b = bin().display(),
        l = lock.display()
    );
    let out = Command::new("sh").args(["-c", &script]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(exists(&lock), "the window still holds it");
    drop(w);
}
