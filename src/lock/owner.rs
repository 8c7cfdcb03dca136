//! Who owns an `acquire` lock (SPEC 2b): the process whose exit ends it.
//! By default the nearest ancestor that is not a transient wrapper (a shell
//! running `-c STRING`, `sudo`, `timeout` …), since those exit as soon as
//! their one command does and would end the lock while the work runs.
//! Processes are named by pid *and* start time, never by pid alone.

use std::path::Path;

use nix::unistd::{Pid, getpid, getppid};

/// A process: its pid and, where /proc says, its start time (clock ticks
/// after boot), which tells it apart from a later process with its pid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcId {
    pub pid: i32,
    pub start: Option<u64>,
}

impl ProcId {
    /// Whether this is the process a record names. A start time missing on
    /// either side (no /proc, an old record) leaves the pid: it is only
    /// asked while the lock's keeper lives, and a keeper ends with its owner.
    pub fn is(&self, pid: i32, start: Option<u64>) -> bool {
        self.pid == pid
            && match (self.start, start) {
                (Some(a), Some(b)) => a == b,
                _ => true,
            }
    }
}

/// How the owner was asked for (`--owner`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OwnerChoice {
    /// The nearest ancestor that is not a transient wrapper.
    Default,
    /// Exactly the parent.
    Parent,
    Pid(i32),
}

/// The owner chosen, and the wrappers skipped on the way (for `-v`).
#[derive(Debug, Clone)]
pub struct Owner {
    pub id: ProcId,
    pub cmd: Vec<String>,
    pub skipped: Vec<(i32, String)>,
    /// From `acquire`'s parent up to the owner, both included, when the
    /// owner is found that way (SPEC 2b); empty for an `--owner PID` that
    /// is no ancestor, or without /proc.
    pub chain: Vec<ProcId>,
}

/// Why no owner could be chosen.
#[derive(Debug, PartialEq, Eq)]
pub enum NoOwner {
    /// `--owner PID` names no process (or not a pid at all).
    NoSuchProcess(i32),
    /// There is no parent to follow (PID 1 of a container).
    NoParent,
}

/// What /proc says about a process.
#[derive(Debug, Clone)]
pub struct ProcInfo {
    pub ppid: i32,
    pub start: u64,
    pub cmd: Vec<String>,
}

/// Read `/proc/PID/stat` and `/proc/PID/cmdline`; None without /proc or
/// once the process is gone.
pub fn proc_info(pid: i32) -> Option<ProcInfo> {
    let (ppid, start) = proc_stat(pid)?;
    Some(ProcInfo {
        ppid,
        start,
        cmd: crate::procfs::process_cmdline(Pid::from_raw(pid)),
    })
}

/// (ppid, starttime) of `pid` from `/proc/PID/stat` alone.
pub fn proc_stat(pid: i32) -> Option<(i32, u64)> {
    parse_stat(&crate::procfs::read_proc(format!("/proc/{pid}/stat")).ok()?)
}

/// (ppid, starttime) from the text of /proc/PID/stat. The command name in
/// parentheses may hold anything, spaces and `)` included: fields are
/// counted after its last `)`.
pub fn parse_stat(stat: &[u8]) -> Option<(i32, u64)> {
    let fields = crate::procfs::stat_fields(stat)?;
    // Field 3 is the state; ppid is field 4 and starttime field 22.
    let ppid = fields.get(1)?.parse().ok()?;
    let start = fields.get(19)?.parse().ok()?;
    Some((ppid, start))
}

/// Choose the owner as `choice` says.
pub fn choose(choice: OwnerChoice) -> Result<Owner, NoOwner> {
    let parent = getppid().as_raw();
    let pid = match choice {
        OwnerChoice::Pid(pid) => {
            if pid <= 0 || !crate::sys::process_exists(Pid::from_raw(pid)) {
                return Err(NoOwner::NoSuchProcess(pid));
            }
            pid
        }
        // PID 1 of a container has no parent to follow (getppid is 0).
        _ if parent <= 0 => return Err(NoOwner::NoParent),
        OwnerChoice::Parent => parent,
        OwnerChoice::Default => return Ok(nearest_lasting(parent)),
    };
    let info = proc_info(pid);
    let id = ProcId {
        pid,
        start: info.as_ref().map(|i| i.start),
    };
    Ok(Owner {
        id,
        cmd: info.map(|i| i.cmd).unwrap_or_default(),
        skipped: Vec::new(),
        chain: chain_up_to(parent, id),
    })
}

/// The processes from `pid` up to `owner`, both included, or nothing when
/// `owner` is not found that way (with its start time) within a bound.
fn chain_up_to(mut pid: i32, owner: ProcId) -> Vec<ProcId> {
    let mut chain = Vec::new();
    for _ in 0..64 {
        let Some((ppid, start)) = proc_stat(pid) else {
            break;
        };
        let link = ProcId {
            pid,
            start: Some(start),
        };
        chain.push(link);
        if link.is(owner.pid, owner.start) {
            return chain;
        }
        if ppid <= 0 {
            break;
        }
        pid = ppid;
    }
    Vec::new()
}

/// From `pid` up, the first process that is not a transient wrapper.
/// PID 1 is never skipped; without /proc the parent is the owner.
fn nearest_lasting(mut pid: i32) -> Owner {
    let mut skipped = Vec::new();
    let mut chain = Vec::new();
    // Bounded: a pid chain cannot be longer than the pids there are, but a
    // race with exiting processes must not loop.
    for _ in 0..64 {
        let Some(info) = proc_info(pid) else { break };
        let id = ProcId {
            pid,
            start: Some(info.start),
        };
        chain.push(id);
        if pid == 1 || info.ppid <= 0 || !is_transient(&info.cmd) {
            return Owner {
                id,
                cmd: info.cmd,
                skipped,
                chain,
            };
        }
        skipped.push((pid, info.cmd.join(" ")));
        pid = info.ppid;
    }
    Owner {
        id: ProcId { pid, start: None },
        cmd: Vec::new(),
        skipped,
        chain: Vec::new(),
    }
}

/// Whether the process a record names (pid and start time) still runs: a
/// zombie has exited. Without /proc, or without a start time, whether the
/// pid exists.
pub fn is_running(id: ProcId) -> bool {
    let Ok(stat) = crate::procfs::read_proc(format!("/proc/{}/stat", id.pid)) else {
        return !crate::procfs::proc_mounted() && crate::sys::process_exists(Pid::from_raw(id.pid));
    };
    let exited = crate::procfs::stat_fields(&stat)
        .and_then(|fields| fields.first().map(|state| matches!(*state, "Z" | "X")))
        .unwrap_or(false);
    !exited && parse_stat(&stat).is_some_and(|(_, start)| id.is(id.pid, Some(start)))
}

/// This process's ancestors, read from /proc one generation at a time,
/// only as far up as a question needs, and never twice: `release` asks
/// about the owner and about the job that acquired (most often both the
/// parent) in one walk.
#[derive(Debug, Clone, Default)]
pub struct Ancestry {
    /// The generations read so far, from the parent up.
    read: Vec<ProcId>,
    /// The next one to read: the parent at first; 0 once the top is reached.
    next: Option<i32>,
}

impl Ancestry {
    /// Whether this process, or one of its ancestors, is `pid` (started at
    /// `start`, where known).
    pub fn contains(&mut self, pid: i32, start: Option<u64>) -> bool {
        let me = getpid().as_raw();
        if pid == me {
            let started = proc_stat(me).map(|(_, s)| s);
            return ProcId {
                pid,
                start: started,
            }
            .is(pid, start);
        }
        loop {
            if let Some(found) = self.read.iter().find(|p| p.pid == pid) {
                return found.is(pid, start);
            }
            // Our parent without /proc; further up through /proc/PID/stat.
            let current = *self.next.get_or_insert_with(|| getppid().as_raw());
            // Bounded: a race with exiting processes must not loop.
            if current <= 0 || self.read.len() >= 256 {
                return false;
            }
            let stat = proc_stat(current);
            self.read.push(ProcId {
                pid: current,
                start: stat.map(|(_, s)| s),
            });
            self.next = Some(stat.map_or(0, |(ppid, _)| ppid));
        }
    }
}

/// Programs that fork the command they are given, wait for it and exit
/// with it (SPEC 2b). Those that exec() it instead (`nice`, `env`, …) are
/// listed too: they are never anyone's parent, but the same name may fork
/// elsewhere (`unshare --fork`, busybox applets).
const WRAPPERS: &[&str] = &[
    "sudo", "doas", "su", "timeout", "time", "chronic", "strace", "ltrace", "setsid", "nice",
    "ionice", "chrt", "taskset", "prlimit", "nohup", "env", "stdbuf", "setpriv", "runuser",
    "unshare", "flock", "script", "xargs", "npx",
];

/// `npm exec …` / `npm x …` (npm names its process after the command).
fn is_npm_exec(name: &str, args: &[String]) -> bool {
    name == "npm" && args.first().is_some_and(|a| a == "exec" || a == "x")
}

/// Shells: transient when they run `-c STRING`.
const SHELLS: &[&str] = &["sh", "bash", "dash", "ash", "ksh", "mksh", "zsh", "busybox"];

/// Whether a process with this command line is a transient wrapper: a shell
/// running `-c STRING` (Node's execSync, Python's shell=True, system(3)),
/// or a wrapper that forks its command and exits with it. (A wrapper that
/// exec()s instead is never anyone's parent.)
pub fn is_transient(cmd: &[String]) -> bool {
    // A process title set by the program itself (node's `process.title`:
    // npx shows as `npm exec`) is one argument with spaces.
    let titled: Vec<String>;
    let cmd = match cmd {
        [title] if title.contains(' ') => {
            titled = title.split_whitespace().map(str::to_owned).collect();
            &titled[..]
        }
        _ => cmd,
    };
    let Some(first) = cmd.first() else {
        return false;
    };
    let mut name = program_name(first);
    let mut args = &cmd[1..];
    // `busybox sh -c …`
    if name == "busybox"
        && let Some(applet) = args.first()
    {
        name = program_name(applet);
        args = &args[1..];
    }
    if WRAPPERS.contains(&name) || is_npm_exec(name, args) {
        return true;
    }
    if !SHELLS.contains(&name) {
        return false;
    }
    // Options before the first operand; `-c` may be combined (`-ec`, `-lc`).
    for arg in args {
        if arg == "--" || !arg.starts_with('-') {
            return false;
        }
        if !arg.starts_with("--") && arg[1..].contains('c') {
            return true;
        }
    }
    false
}

/// The program's name: the last path component, without a login shell's `-`.
fn program_name(arg0: &str) -> &str {
    let base = Path::new(arg0)
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or(arg0);
    base.strip_prefix('-').unwrap_or(base)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// This process's id.
    fn this_process() -> ProcId {
        let pid = getpid().as_raw();
        ProcId {
            pid,
            start: proc_stat(pid).map(|(_, start)| start),
        }
    }

    fn words(line: &str) -> Vec<String> {
        line.split(' ').map(str::to_owned).collect()
    }

    #[test]
    fn transient_wrappers_are_recognised() {
        let transient = [
            "/bin/sh -c resin-lock acquire && work",
            "sh -ec resin-lock acquire",
            "bash -lc resin-lock acquire",
            "/usr/bin/dash -c x",
            "busybox sh -c x",
            "sudo resin-lock acquire",
            "/usr/bin/timeout 30 resin-lock acquire",
            "time resin-lock acquire",
            "chronic resin-lock acquire",
            "strace -f resin-lock acquire",
            "setsid resin-lock acquire",
            "bash --norc -c x",
            "flock /tmp/f resin-lock acquire",
            "script -qc resin-lock acquire /dev/null",
            "xargs resin-lock",
            "ltrace -f resin-lock acquire",
            "strace -f -o /dev/null resin-lock acquire",
            "npx resin-lock acquire",
            "npm exec -- resin-lock acquire",
        ];
        for line in transient {
            assert!(is_transient(&words(line)), "{line}");
        }
        let lasting = [
            "bash",
            "-bash",
            "/bin/sh ./script.sh",
            "bash script.sh -c",
            "node app.js",
            "python3 -c print(1)",
            "/sbin/init",
            "sh -e ./job.sh",
            "npm start",
            "",
        ];
        for line in lasting {
            assert!(!is_transient(&words(line)), "{line}");
        }
        // npx names itself `npm exec`: one argument with a space.
        assert!(is_transient(&["npm exec".to_owned()]));
        assert!(!is_transient(&["npm start".to_owned()]));
        assert!(!is_transient(&[]));
    }

    #[test]
    fn stat_fields_are_counted_after_the_last_parenthesis() {
        let stat =
            b"42 (we ird) (name)) S 7 42 42 0 -1 4194560 1 0 0 0 0 0 0 0 20 0 1 0 123456 0 0";
        assert_eq!(parse_stat(stat), Some((7, 123456)));
        assert_eq!(parse_stat(b"42 (x) S"), None);
        assert_eq!(parse_stat(b"garbage"), None);
    }

    #[test]
    fn a_missing_start_time_leaves_the_pid() {
        let p = ProcId {
            pid: 5,
            start: Some(9),
        };
        assert!(p.is(5, Some(9)));
        assert!(!p.is(5, Some(10)));
        assert!(p.is(5, None));
        assert!(!p.is(6, Some(9)));
    }

    #[test]
    fn this_process_and_its_ancestors_are_found() {
        let me = this_process();
        assert!(me.start.is_some());
        // One walk answers every question, asked in any order.
        let mut ancestry = Ancestry::default();
        assert!(ancestry.contains(me.pid, me.start));
        assert!(ancestry.contains(1, None));
        let parent = getppid().as_raw();
        let parent_start = proc_stat(parent).map(|(_, s)| s);
        assert!(ancestry.contains(parent, parent_start));
        assert!(!ancestry.contains(parent, parent_start.map(|s| s + 1)));
        assert!(!ancestry.contains(me.pid, me.start.map(|s| s + 1)));
        // A child of ours is not an ancestor.
        let mut child = std::process::Command::new("sleep")
            .arg("10")
            .spawn()
            .unwrap();
        assert!(!ancestry.contains(child.id() as i32, None));
        assert!(!Ancestry::default().contains(child.id() as i32, None));
        child.kill().unwrap();
        child.wait().unwrap();
    }
}
