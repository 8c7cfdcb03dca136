//! Helpers shared by the integration tests: the binary under test, a fresh
//! temp dir per test, and event-based waiting (no sleeps as synchronisation).

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub use assert_cmd::prelude::*;
pub use predicates::prelude::*;
pub use predicates::str::contains;

/// The binary under test: this build's, or `RESIN_LOCK_TEST_BIN` (to show
/// that a new test fails against an older build, or to test a static ARM
/// binary from `cargo xtask dist`, run by qemu-user through binfmt_misc).
pub fn bin() -> PathBuf {
    std::env::var_os("RESIN_LOCK_TEST_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_resin-lock")))
}

/// The binary under test, where another uid can run it: a clone under
/// `/root` (mode 700, where root's clone lands) keeps `target/` out of
/// their reach. A copy in a root-owned 0755 directory of /tmp, one per
/// build (keyed by the binary's path, size and time), replaced atomically
/// (tests may run as separate processes, so the copy is made under a
/// temporary name and renamed into place).
pub fn bin_for_others() -> PathBuf {
    static COPY: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    COPY.get_or_init(copy_for_others).clone()
}

fn copy_for_others() -> PathBuf {
    use std::hash::{Hash, Hasher};
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let bin = bin();
    let meta = std::fs::metadata(&bin).expect("the binary under test");
    let mut key = std::collections::hash_map::DefaultHasher::new();
    (&bin, meta.len(), meta.mtime(), meta.mtime_nsec()).hash(&mut key);
    let base = Path::new("/tmp/resin-lock-test-bin");
    let _ = std::fs::create_dir(base);
    let base_meta = std::fs::symlink_metadata(base).unwrap();
    assert!(
        base_meta.is_dir() && base_meta.uid() == 0 && base_meta.mode() & 0o022 == 0,
        "{} must be a directory of root's that nobody else can write",
        base.display()
    );
    std::fs::set_permissions(base, std::fs::Permissions::from_mode(0o755)).unwrap();
    let copy = base.join(format!("resin-lock-{:016x}", key.finish()));
    if !copy.exists() {
        let temp = base.join(format!(".copy-{}", std::process::id()));
        std::fs::copy(&bin, &temp).unwrap();
        std::fs::set_permissions(&temp, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::rename(&temp, &copy).unwrap();
    }
    copy
}

/// Whether the test must skip because `RESIN_LOCK_TEST_BIN` names a binary
/// of another machine (run by qemu-user) and qemu-user cannot do `why`;
/// says so in one line. Always false for a binary of this machine.
pub fn emulated(test: &str, why: &str) -> bool {
    if !is_emulated() {
        return false;
    }
    say(&format!("{test}: skipped under qemu-user: {why}"));
    true
}

/// Whether `RESIN_LOCK_TEST_BIN` names a binary of another machine.
pub fn is_emulated() -> bool {
    let e_machine = |path: &Path| {
        let bytes = std::fs::read(path).ok()?;
        (bytes.get(..4)? == b"\x7fELF").then(|| bytes.get(18..20).map(|m| [m[0], m[1]]))?
    };
    let Some(test_bin) = std::env::var_os("RESIN_LOCK_TEST_BIN") else {
        return false;
    };
    let this = std::env::current_exe().ok().and_then(|exe| e_machine(&exe));
    e_machine(Path::new(&test_bin)) != this
}

/// `resin-lock` with a clean environment (no detection inputs leak in).
pub fn resin_lock() -> Command {
    let mut cmd = Command::new(bin());
    for var in [
        "RESIN_LOCK_PATH",
        "RESIN_LOCK_ROOT",
        "BALENA_APP_LOCK_PATH",
        "RESIN_APP_LOCK_PATH",
        "BALENA_SUPERVISOR_VERSION",
        "RESIN_SUPERVISOR_VERSION",
        "BALENA_HOST_OS_VERSION",
        "RESIN_HOST_OS_VERSION",
        "BALENA_SUPERVISOR_ADDRESS",
        "RESIN_SUPERVISOR_ADDRESS",
        "BALENA_SUPERVISOR_API_KEY",
        "RESIN_SUPERVISOR_API_KEY",
        "BALENA_SERVICE_NAME",
        "BALENA_LOCK_TAGS",
        "RESIN_LOCK_TAGS",
    ] {
        cmd.env_remove(var);
    }
    cmd
}

/// A temp dir with a lock path inside it.
pub struct Scratch {
    pub dir: tempfile::TempDir,
}

impl Scratch {
    pub fn new() -> Scratch {
        Scratch {
            dir: tempfile::tempdir().expect("temp dir"),
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The default lock path of these tests.
    pub fn lock(&self) -> PathBuf {
        self.path("updates.lock")
    }

    /// `resin-lock --path <lock> ARGS…`
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut cmd = resin_lock();
        cmd.arg("--path").arg(self.lock()).args(args);
        cmd
    }

    /// Names in the dir other than `keep` (to prove nothing is left behind).
    pub fn leftovers(&self, keep: &[&str]) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(self.dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| !keep.contains(&n.as_str()))
            .collect();
        names.sort();
        names
    }
}

/// Wait until `cond` holds, checking often; panics after a generous bound
/// (a hang guard for a broken build, not a timing assertion).
pub fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        if start.elapsed() > Duration::from_secs(60) {
            panic!("timed out waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Wait until a file exists (a "ready file" written by a child).
pub fn wait_for_file(path: &Path) {
    wait_until(&format!("{} to appear", path.display()), || path.exists());
}

/// Run `cmd` to its end (stdin null, output captured), SIGKILLing it if it
/// still runs after a bound far past anything it should take: a hang guard
/// for tests of things that used to hang, not a timing assertion.
pub fn output_or_kill(mut cmd: Command) -> std::process::Output {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let pid = child.id().to_string();
    let done = Arc::new(AtomicBool::new(false));
    let guard = {
        let done = done.clone();
        std::thread::spawn(move || {
            let start = Instant::now();
            while !done.load(Ordering::SeqCst) {
                if start.elapsed() > Duration::from_secs(60) {
                    let _ = Command::new("kill").args(["-KILL", &pid]).status();
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    let out = child.wait_with_output().expect("wait");
    done.store(true, Ordering::SeqCst);
    guard.join().expect("guard");
    out
}

/// Spawn a command with stdio detached from the test harness.
pub fn spawn_quiet(mut cmd: Command) -> Child {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn")
}

/// The state letter of process `pid` (`R`, `S`, `T`, `Z` …), if it exists.
pub fn proc_state(pid: i32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    rest.trim_start().chars().next()
}

/// Whether process `pid` is still alive (and not a zombie).
pub fn alive(pid: i32) -> bool {
    proc_state(pid).is_some_and(|state| state != 'Z')
}

/// The parsed record at a lock path.
pub fn record(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).expect("lock file")).expect("record JSON")
}

/// `status --json` for a scratch lock.
pub fn status_json(scratch: &Scratch) -> serde_json::Value {
    let out = scratch.cmd(&["status", "--json"]).output().unwrap();
    serde_json::from_slice(&out.stdout).expect("status JSON")
}

/// `acquire`, then SIGKILL its keeper and wait until it is gone: a stale
/// lock. Returns the dead keeper's pid.
pub fn acquire_and_kill_keeper(s: &Scratch) -> i32 {
    s.cmd(&["acquire"]).assert().success();
    let keeper = record(&s.lock())["pid"].as_i64().unwrap() as i32;
    Command::new("kill")
        .args(["-KILL", &keeper.to_string()])
        .assert()
        .success();
    wait_until("the keeper to die", || !alive(keeper));
    keeper
}

/// Run `script` in `workers` shells at once; every one must succeed.
/// Their stderr is read, not left to the test's: every line they say must
/// be a waiting line (who held the lock), whole.
pub fn run_workers(script: &str, workers: usize) {
    let children: Vec<Child> = (0..workers)
        .map(|_| {
            Command::new("sh")
                .args(["-c", script])
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for child in children {
        let out = child.wait_with_output().unwrap();
        let said = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "a worker failed: {said}");
        for line in said.lines() {
            assert!(
                line.starts_with("resin-lock: waiting for "),
                "a worker said more than who held the lock: {line}"
            );
        }
    }
}

/// The critical sections never overlapped and every increment was counted.
pub fn assert_counted_without_overlap(counter: &Path, overlaps: &Path, expected: usize) {
    assert!(!overlaps.exists(), "critical sections overlapped");
    assert_eq!(
        std::fs::read_to_string(counter).unwrap().trim(),
        expected.to_string()
    );
}

/// A process to name with `--owner`: a second owner besides the test
/// process itself (an `acquire` of the owner that holds the lock fails at
/// once instead of waiting). Killed when dropped.
pub struct Sleeper(Child);

impl Sleeper {
    pub fn new() -> Sleeper {
        Sleeper(
            Command::new("sleep")
                .arg("1000")
                .stdin(Stdio::null())
                .spawn()
                .expect("sleep"),
        )
    }

    pub fn pid(&self) -> String {
        self.0.id().to_string()
    }

    /// Kill it now (the owner exits); dropping it later does nothing more.
    pub fn end(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Sleeper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

// ---- Tools from outside the project (SPEC section 8) ----
//
// What the tests take from the system is found here, in one place. A tool
// that is missing makes the tests that need it skip, with one line per tool
// on stderr; with `CI=true` (as `.ci/run` runs) a missing tool fails them
// instead. The npm `lockfile` package is provisioned by the tests themselves,
// once, into the target directory.

/// Programs the tests run from PATH, with the Debian package that has each.
const TOOLS: &[(&str, &str)] = &[
    ("lockfile", "procmail"),
    ("node", "nodejs"),
    ("npm", "npm"),
    ("bash", "bash"),
    ("zsh", "zsh"),
    ("fish", "fish"),
    ("strace", "strace"),
];

/// Whether a missing tool fails the test instead of skipping it.
fn ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// One line on the real stderr, past the test harness's capture (which
/// shows a test's output only when it fails).
fn say(line: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr().lock(), "resin-lock tests: {line}");
}

/// Whether `test` can hide /proc (a tmpfs over it in a private mount
/// namespace: root, a kernel with mount namespaces); says in one line that
/// it skips where it cannot, and fails under CI.
pub fn can_hide_proc(test: &str) -> bool {
    let can = Command::new("unshare")
        .args(["-m", "sh", "-c", "mount -t tmpfs none /proc"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    if !can {
        assert!(!ci(), "{test}: cannot hide /proc in a mount namespace");
        say(&format!(
            "{test}: skipped: cannot hide /proc in a mount namespace"
        ));
    }
    can
}

/// `what` cannot be had: fail under CI, else say once that its tests skip.
fn missing(what: &str, why: &str) {
    assert!(
        !ci(),
        "{what} {why}, and with CI=true a missing tool is a failure, not a skip"
    );
    static SAID: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
    let mut said = SAID
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if !said.iter().any(|w| w == what) {
        said.push(what.to_owned());
        say(&format!("{what} {why}: skipping the tests that need it"));
    }
}

/// A program from PATH that the tests need (one of `TOOLS`), or None when
/// it is not installed (said once; a failure under `CI=true`).
pub fn tool(name: &str) -> Option<PathBuf> {
    let package = TOOLS
        .iter()
        .find(|(tool, _)| *tool == name)
        .map(|(_, package)| *package)
        .unwrap_or_else(|| panic!("{name}: add it to TOOLS in tests/common.rs"));
    let found = which(name);
    if found.is_none() {
        missing(
            name,
            &format!("is not installed (Debian package {package})"),
        );
    }
    found
}

/// The first executable file called `name` in PATH.
fn which(name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| {
            std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// The npm `lockfile` package that supervisors v7 to v12 used, installed
/// with the scripts of `tests/fixtures/npm` (run them with `node`): the
/// directory, or None when node or npm is missing or the install failed.
///
/// Provisioned once: `npm ci` runs in a fresh temp dir under the target
/// directory, which is then renamed into place, named after the fixture's
/// content. Tests in parallel wait for the first one; another test process
/// that gets there first wins the rename and its copy is used. A copy
/// already in place from an earlier run is used as it is.
pub fn npm_fixture() -> Option<&'static Path> {
    static FIXTURE: std::sync::OnceLock<Option<PathBuf>> = std::sync::OnceLock::new();
    FIXTURE.get_or_init(provision_npm).as_deref()
}

fn provision_npm() -> Option<PathBuf> {
    const WHAT: &str = "the npm lockfile package";
    // Both are looked up, so that both are named when both are missing.
    let (node, npm) = (tool("node"), tool("npm"));
    node?;
    let npm = npm?;
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/npm");
    let mut files: Vec<(std::ffi::OsString, Vec<u8>)> = std::fs::read_dir(&source)
        .expect("tests/fixtures/npm")
        .map(|entry| entry.expect("tests/fixtures/npm"))
        .filter(|entry| entry.file_type().is_ok_and(|t| t.is_file()))
        .map(|entry| (entry.file_name(), std::fs::read(entry.path()).unwrap()))
        .collect();
    files.sort();
    // FNV-1a of names and contents: a changed fixture gets a fresh install.
    let mut key: u64 = 0xcbf2_9ce4_8422_2325;
    for (name, content) in &files {
        for byte in name.as_encoded_bytes().iter().chain(&[0]).chain(content) {
            key = (key ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3);
        }
    }
    let parent = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let dir = parent.join(format!("npm-fixture-{key:016x}"));
    if dir.is_dir() {
        return Some(dir);
    }
    std::fs::create_dir_all(parent).unwrap();
    let work = tempfile::Builder::new()
        .prefix(".npm-fixture-")
        .tempdir_in(parent)
        .unwrap();
    for (name, content) in &files {
        std::fs::write(work.path().join(name), content).unwrap();
    }
    let out = Command::new(npm)
        .args(["ci", "--no-audit", "--no-fund", "--prefer-offline"])
        .args(["--loglevel=error"])
        .current_dir(work.path())
        .stdin(Stdio::null())
        .output()
        .expect("npm runs");
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let last = stderr.lines().rev().find(|l| !l.trim().is_empty());
        missing(
            WHAT,
            &format!(
                "could not be installed (npm ci: {}: {})",
                out.status,
                last.unwrap_or("no message")
            ),
        );
        return None;
    }
    let version = std::fs::read(work.path().join("node_modules/lockfile/package.json"))
        .ok()
        .and_then(|bytes| serde_json::from_slice::<serde_json::Value>(&bytes).ok())
        .and_then(|package| package["version"].as_str().map(str::to_owned))
        .unwrap_or_else(|| "of unknown version".to_owned());
    // All or nothing: the finished install appears under its name at once.
    match std::fs::rename(work.path(), &dir) {
        Ok(()) => {
            say(&format!(
                "provisioned {WHAT} {version} with npm ci in {}",
                dir.display()
            ));
            let _ = work.keep();
        }
        // Another test process renamed its copy into place first.
        Err(_) if dir.is_dir() => {}
        Err(err) => panic!("{}: {err}", dir.display()),
    }
    Some(dir)
}

// Randomised and long-running tests (torture, trust).

/// The multiplier of every round count: `RESIN_LOCK_TORTURE_ROUNDS`, default 1.
pub fn scale() -> usize {
    std::env::var("RESIN_LOCK_TORTURE_ROUNDS")
        .ok()
        .and_then(|n| n.parse().ok())
        .filter(|n| *n >= 1)
        .unwrap_or(1)
}

pub fn rounds(base: usize) -> usize {
    base * scale()
}

/// How long anything may take before the test calls it a hang (four
/// times as long under qemu-user, where every call is several times slower).
pub fn hang_guard() -> Duration {
    let emulation = if is_emulated() { 4 } else { 1 };
    Duration::from_secs(120 * scale() as u64 * emulation)
}

/// splitmix64: small, deterministic, good enough to pick victims.
pub struct Rng(u64);

impl Rng {
    /// The run's seed (`RESIN_LOCK_TORTURE_SEED`, else the clock), printed,
    /// mixed with the test's name so each test draws its own sequence.
    pub fn for_test(test: &str) -> Rng {
        let seed = std::env::var("RESIN_LOCK_TORTURE_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap();
                now.as_nanos() as u64 ^ u64::from(std::process::id())
            });
        eprintln!("{test}: seed {seed} (RESIN_LOCK_TORTURE_SEED={seed} replays it)");
        let mixed = test
            .bytes()
            .fold(seed, |state, b| state.rotate_left(7) ^ u64::from(b));
        Rng(mixed)
    }

    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Wait for a child, failing (not hanging) past the hang guard.
pub fn wait_guarded(child: &mut Child, what: &str) -> std::process::ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return status;
        }
        assert!(
            start.elapsed() < hang_guard(),
            "{what} still running after {:?} (hang guard)",
            hang_guard()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A process in a process group of its own. When dropped (the test ends,
/// or fails), the whole group is SIGKILLed, also once the leader has
/// exited or was waited for: what it started in the background (flock(1)'s
/// command, a shell's `&` job) does not outlive the test, holding its
/// output pipe open (keepers follow their owner, which is in the group).
pub struct Group {
    pub child: Child,
    what: String,
}

impl Group {
    pub fn spawn(mut cmd: Command, what: &str) -> Group {
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        Group {
            child: cmd.spawn().unwrap_or_else(|err| panic!("{what}: {err}")),
            what: what.to_owned(),
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn wait(&mut self) -> std::process::ExitStatus {
        wait_guarded(&mut self.child, &self.what)
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        // The group outlives its leader while any member is left, and its
        // id is not given to another group while it has members (nor, in
        // the moment after the leader was reaped, to a new one in practice:
        // pids are handed out in order).
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(self.pid()),
            nix::sys::signal::Signal::SIGKILL,
        );
        let _ = self.child.wait();
    }
}

/// `program` as uid/gid 65534 with no supplementary groups: the
/// supervisor's `lockfile -r 0` (SPEC 2a).
pub fn as_nobody(program: &str) -> Command {
    let mut cmd = Command::new("setpriv");
    cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups", program]);
    cmd
}
