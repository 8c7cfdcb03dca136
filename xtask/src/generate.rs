//! The generated documentation: `man/resin-lock.1` and the bash, zsh and fish
//! completions, rendered from the CLI definition (`resin_lock::cli::command()`)
//! plus the sections a parser cannot know (exit status, signals, files,
//! environment, examples), which are written here by hand.
//!
//! `cargo xtask gen` writes these files and `cargo xtask gen --check` compares
//! them. The integration test `tests/ship.rs` includes this same file with
//! `#[path]`, so the freshness test runs exactly this code without the main
//! crate depending on the xtask (clap_mangen and clap_complete are only its
//! dev-dependencies there, so the shipped binary carries neither).
//!
//! The output is a pure function of the CLI definition and this file: no
//! dates, no environment, so the committed copies can be compared byte for byte.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use clap_complete::aot::{Generator, Shell, generate};
use clap_mangen::Man;
use clap_mangen::roff::{Inline, Roff, bold, italic, roman};
use resin_lock::exit::Exit;

const BIN: &str = "resin-lock";

/// Every generated file: its path relative to the workspace root, and its bytes.
pub fn files() -> Vec<(PathBuf, Vec<u8>)> {
    let mut files = vec![(PathBuf::from("man").join(format!("{BIN}.1")), man_page())];
    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        let mut cmd = resin_lock::cli::command();
        let mut bytes = Vec::new();
        generate(shell, &mut cmd, BIN, &mut bytes);
        files.push((
            PathBuf::from("completions").join(shell.file_name(BIN)),
            bytes,
        ));
    }
    files
}

/// The generated files whose copy under `root` is missing or different.
pub fn stale(root: &Path) -> Vec<PathBuf> {
    files()
        .into_iter()
        .filter(|(path, bytes)| fs::read(root.join(path)).ok().as_ref() != Some(bytes))
        .map(|(path, _)| path)
        .collect()
}

/// The whole man page: clap_mangen's sections for the command and for each
/// subcommand (as subsections of COMMANDS), then the hand-written ones.
fn man_page() -> Vec<u8> {
    let cmd = resin_lock::cli::command()
        .disable_help_subcommand(true)
        .subcommand_value_name("COMMAND");
    let version = cmd.get_version().unwrap_or_default().to_owned();
    let man = Man::new(cmd.clone());
    // Every roff render starts with this preamble (it defines the straight
    // apostrophe); the page needs it once, at the top.
    let preamble = Roff::new().render();

    let mut page = preamble.clone();
    // .TH by hand: clap_mangen writes an empty date as nothing, which moves
    // the source into the date's place. And no date: the output must not
    // change from one day to the next.
    page.push_str(&format!(
        ".TH RESIN-LOCK 1 \"\" \"{BIN} {version}\" \"User Commands\"\n"
    ));
    page.push_str(&render(&preamble, |w| man.render_name_section(w)));
    page.push_str(&render(&preamble, |w| man.render_synopsis_section(w)));
    page.push_str(&render(&preamble, |w| man.render_description_section(w)));
    page.push_str(&render(&preamble, |w| man.render_options_section(w)));
    page.push_str(&commands_section(&cmd, &preamble));
    for section in [
        exit_status(),
        signals(),
        files_section(),
        environment(),
        examples(),
        see_also(),
    ] {
        page.push_str(&render(&preamble, |w| section.to_writer(w)));
    }
    page.into_bytes()
}

/// Run a roff renderer into a string, without the preamble.
fn render(preamble: &str, write: impl FnOnce(&mut Vec<u8>) -> io::Result<()>) -> String {
    let mut bytes = Vec::new();
    write(&mut bytes).expect("rendering into a Vec cannot fail");
    let text = String::from_utf8(bytes).expect("roff output is UTF-8");
    text.strip_prefix(preamble).unwrap_or(&text).to_owned()
}

/// COMMANDS: for each subcommand, a subsection with its synopsis, its long
/// help and its options, as clap_mangen renders them for a page of its own
/// (with their headings taken out). Global options are described once, above.
fn commands_section(cmd: &clap::Command, preamble: &str) -> String {
    let mut intro = Roff::new();
    intro.control("SH", ["COMMANDS"]).text([roman(
        "The global options above may also be given after the command name.",
    )]);
    let mut out = render(preamble, |w| intro.to_writer(w));
    for sub in cmd.get_subcommands().filter(|sub| !sub.is_hide_set()) {
        let name = sub.get_name();
        let mut sub = sub
            .clone()
            .bin_name(format!("{BIN} {name}"))
            .disable_help_flag(true)
            .disable_version_flag(true);
        // Built on its own, the subcommand gets its deferred arguments but
        // not the global ones, which are described once, above.
        sub.build();
        let man = Man::new(sub);
        let mut heading = Roff::new();
        heading.control("SS", [name]);
        out.push_str(&render(preamble, |w| heading.to_writer(w)));
        let synopsis = render(preamble, |w| man.render_synopsis_section(w));
        out.push_str(synopsis.strip_prefix(".SH SYNOPSIS\n").unwrap_or(&synopsis));
        let description = render(preamble, |w| man.render_description_section(w));
        out.push_str(".PP\n");
        out.push_str(
            description
                .strip_prefix(".SH DESCRIPTION\n")
                .unwrap_or(&description),
        );
        let options = render(preamble, |w| man.render_options_section(w));
        out.push_str(options.strip_prefix(".SH OPTIONS\n").unwrap_or(&options));
    }
    out
}

/// A titled section of `.TP` items: (tag, paragraphs of the body).
fn tagged_section(title: &str, intro: &[&str], items: &[(Vec<Inline>, Vec<&str>)]) -> Roff {
    let mut roff = Roff::new();
    roff.control("SH", [title]);
    paragraphs(&mut roff, intro);
    for (tag, body) in items {
        roff.control("TP", []).text(tag.clone());
        for (i, paragraph) in body.iter().enumerate() {
            if i > 0 {
                roff.control("IP", []);
            }
            roff.text([roman(*paragraph)]);
        }
    }
    roff
}

fn paragraphs(roff: &mut Roff, paragraphs: &[&str]) {
    for (i, paragraph) in paragraphs.iter().enumerate() {
        if i > 0 {
            roff.control("PP", []);
        }
        roff.text([roman(*paragraph)]);
    }
}

/// A code block, indented, lines kept as they are.
fn code(roff: &mut Roff, lines: &[&str]) {
    roff.control("PP", [])
        .control("RS", ["4"])
        .control("nf", []);
    for line in lines {
        roff.text([roman(*line)]);
    }
    roff.control("fi", []).control("RE", []);
}

fn exit_status() -> Roff {
    let code = |exit: Exit| vec![bold(exit.code().to_string())];
    tagged_section(
        "EXIT STATUS",
        &[],
        &[
            (
                code(Exit::Ok),
                vec!["Done. For status: no lock file exists, updates are allowed."],
            ),
            (
                code(Exit::Busy),
                vec![
                    "The lock is held by someone else: busy with \
                     --nonblock, timed out with --timeout, release refused, or status found \
                     a lock file (held or stale: both block the supervisor). For acquire and \
                     run, --conflict-exit-code CODE (-E) replaces it, as with flock(1).",
                ],
            ),
            (
                code(Exit::Usage),
                vec!["Usage error: bad option, bad duration, missing command after --."],
            ),
            (
                code(Exit::Unavailable),
                vec![
                    "The supervisor API is not configured or not reachable \
                     (force-update, status --supervisor).",
                ],
            ),
            (code(Exit::Software), vec!["Internal error (a bug)."]),
            (
                code(Exit::OsErr),
                vec!["Operating system error: fork, inotify, out of resources."],
            ),
            (
                code(Exit::CantCreate),
                vec![
                    "Cannot create the lock: permission denied, read-only file system, \
                     missing parent directory of a --path, parent is not a directory.",
                ],
            ),
            (
                code(Exit::NoPerm),
                vec!["Refused for safety: acquire or run as uid 65534 (nobody)."],
            ),
            (
                code(Exit::NotExecutable),
                vec!["run: CMD is not executable (the lock is released first)."],
            ),
            (
                code(Exit::NotFound),
                vec!["run: CMD was not found (the lock is released first)."],
            ),
            (vec![italic("N")], vec!["run: CMD exited with status N."]),
            (
                vec![roman("128+"), italic("S")],
                vec![
                    "run: CMD was killed by signal S. Any command: resin-lock itself \
                     was stopped by signal S while waiting for the lock; nothing is left held.",
                ],
            ),
        ],
    )
}

fn signals() -> Roff {
    tagged_section(
        "SIGNALS",
        &[],
        &[
            (
                vec![roman("While waiting for the lock")],
                vec![
                    "SIGHUP, SIGINT, SIGQUIT, SIGTERM, SIGUSR1, SIGUSR2 and SIGALRM end \
                     the wait of acquire and run: nothing is left held, no command is \
                     started, and resin-lock exits with 128+S.",
                    "acquire also holds them back while it takes a free lock: one that \
                     arrives before the keeper has the lock makes acquire remove what it \
                     created and exit with 128+S; one that arrives after is ignored, and \
                     acquire succeeds.",
                ],
            ),
            (
                vec![bold("run"), roman(": forwarding")],
                vec![
                    "Every catchable signal that resin-lock receives is forwarded to CMD: \
                     SIGHUP, SIGINT, SIGQUIT, SIGTERM, SIGUSR1, SIGUSR2, SIGWINCH, SIGCONT, \
                     SIGALRM, SIGPIPE, SIGTSTP, SIGTTIN and SIGTTOU (not SIGCHLD). A signal \
                     sent by a process (docker stop, kill) is passed on once.",
                    "A signal generated by the terminal (Ctrl-C, Ctrl-\\, a window resize, \
                     a hangup) already reaches CMD, which shares resin-lock's process group, \
                     so it is not sent a second time: CMD gets it exactly once. Ctrl-Z stops \
                     resin-lock together with CMD, so the shell sees the job stop.",
                    "With -g, CMD leads its own process group and forwarded signals go to \
                     the whole group, so what CMD started in the background gets them too. \
                     If resin-lock's group is the foreground group of the terminal on stdin, \
                     CMD's group takes the terminal before CMD starts (as tini -g does): \
                     terminal signals reach it directly, Ctrl-Z stops CMD and then \
                     resin-lock, fg gives the terminal back to CMD's group, and the terminal \
                     returns to resin-lock's group when CMD ends. Otherwise a signal the \
                     kernel sends to resin-lock's group (a Ctrl-C with stdin redirected) is \
                     forwarded to CMD's group.",
                ],
            ),
            (
                vec![bold("run"), roman(": exit")],
                vec![
                    "When CMD ends, resin-lock releases the lock, then exits with CMD's \
                     status, or with 128+S if CMD was killed by signal S.",
                    "If processes that CMD started are still running when CMD ends (they \
                     came to resin-lock as subreaper or PID 1), one line on stderr says how \
                     many and their pids before the lock is released: it no longer protects \
                     them (not with -q).",
                    "If resin-lock itself is killed with SIGKILL, CMD keeps the inherited \
                     locked descriptor, so the lock stays held for as long as CMD (or \
                     anything it started with the descriptor) runs; the file left behind \
                     afterwards is stale and the next acquire or run takes it over.",
                ],
            ),
            (
                vec![bold("run"), roman(": as PID 1")],
                vec![
                    "As PID 1 (a Dockerfile CMD) resin-lock reaps every orphaned zombie \
                     and exits when CMD exits. Otherwise it makes itself a child subreaper \
                     (PR_SET_CHILD_SUBREAPER) and reaps CMD's orphans too.",
                ],
            ),
            (
                vec![bold("acquire"), roman(": the keeper")],
                vec![
                    "The lock taken by acquire is held by a small keeper process. SIGUSR1 \
                     is how release stops it: the keeper removes the lock file (if the path \
                     still names its own file) and exits. The keeper also exits when the \
                     owner process exits, leaving the lock file stale; killed by any other \
                     signal, it leaves the lock file stale too. A stale lock keeps blocking \
                     updates until release removes it or the next acquire or run takes it \
                     over.",
                ],
            ),
        ],
    )
}

fn files_section() -> Roff {
    let path = |p: &str| vec![italic(p)];
    tagged_section(
        "FILES",
        &[
            "Unless --path or RESIN_LOCK_PATH names the lock, its location is detected \
             from the environment (see ENVIRONMENT); status tells which rule chose it. \
             With --root DIR, the detected paths and the files read for detection are \
             taken under DIR.",
        ],
        &[
            (
                path("/tmp/balena/updates.lock"),
                vec![
                    "The lock of supervisors v7.22.0 and later, and the default when the \
                     supervisor version is unknown and /tmp/balena is a directory.",
                ],
            ),
            (
                path("/tmp/resin/resin-updates.lock"),
                vec![
                    "The lock of supervisors v4.0.0 to v7.21, and the default when nothing \
                     is known.",
                ],
            ),
            (
                path("/data/resin-updates.lock"),
                vec![
                    "The lock of supervisors before v4.0.0; on resinOS 1.x hosts it is taken \
                     together with /tmp/resin/resin-updates.lock, in that order. It lives on \
                     the persistent /data volume, so a lock left from a previous boot is \
                     stale.",
                ],
            ),
            (
                path("/etc/os-release"),
                vec![
                    "Read for PRETTY_NAME, the host OS version, when its ID is balena-os \
                     or resin-os (resin-lock running on the host itself) and the \
                     environment does not give the version.",
                ],
            ),
            (
                path("/proc/sys/kernel/random/boot_id"),
                vec![
                    "The current boot, written into each lock record; a resin-lock lock \
                     recorded in another boot is stale.",
                ],
            ),
        ],
    )
}

fn environment() -> Roff {
    let vars = |names: &[&str]| {
        let mut tag = Vec::new();
        for (i, name) in names.iter().enumerate() {
            if i > 0 {
                tag.push(roman(", "));
            }
            tag.push(bold(*name));
        }
        tag
    };
    tagged_section(
        "ENVIRONMENT",
        &["Where two names are given, the BALENA_ one wins."],
        &[
            (
                vars(&["RESIN_LOCK_PATH"]),
                vec![
                    "The lock paths, as --path: one, or several joined by ':' (as \
                     RESIN_LOCK_HELD gives them); overrides detection. Ignored when --path \
                     is given; empty counts as unset.",
                ],
            ),
            (
                vars(&["RESIN_LOCK_ROOT"]),
                vec!["The root directory, as --root; it must exist. Empty counts as unset."],
            ),
            (
                vars(&["BALENA_APP_LOCK_PATH", "RESIN_APP_LOCK_PATH"]),
                vec![
                    "The lock path the supervisor (v7 and later) gives the app; used as is \
                     when set.",
                ],
            ),
            (
                vars(&["BALENA_SUPERVISOR_VERSION", "RESIN_SUPERVISOR_VERSION"]),
                vec![
                    "The supervisor version (e.g. 7.4.3, v6.1.3), which decides the lock \
                     location. A version that cannot be parsed counts as unknown.",
                ],
            ),
            (
                vars(&["BALENA_HOST_OS_VERSION", "RESIN_HOST_OS_VERSION"]),
                vec![
                    "The host OS version, e.g. \"Resin OS 1.24.0\" or \"balenaOS 2.88.4\". \
                     With supervisors before v7, a 1.x host OS (or an unknown one) means \
                     both the /data and the /tmp/resin lock are taken.",
                ],
            ),
            (
                vars(&["BALENA_SUPERVISOR_ADDRESS", "RESIN_SUPERVISOR_ADDRESS"]),
                vec![
                    "The supervisor API address, for force-update and status --supervisor. \
                     The supervisor sets it and the key below for services with the \
                     io.balena.features.supervisor-api label; without them those commands \
                     exit 69.",
                ],
            ),
            (
                vars(&["BALENA_SUPERVISOR_API_KEY", "RESIN_SUPERVISOR_API_KEY"]),
                vec!["The key for the supervisor API."],
            ),
            (
                vars(&["RESIN_LOCK_HELD"]),
                vec![
                    "Set by run in CMD's environment: the held lock paths, joined by a \
                     colon.",
                ],
            ),
        ],
    )
}

fn examples() -> Roff {
    let mut roff = Roff::new();
    roff.control("SH", ["EXAMPLES"]);
    let example = |roff: &mut Roff, title: &str, text: &str, lines: &[&str]| {
        roff.control("SS", [title]);
        roff.text([roman(text)]);
        code(roff, lines);
    };
    example(
        &mut roff,
        "A Dockerfile",
        "Block updates while the app's critical command runs. As PID 1, resin-lock \
         forwards docker stop's SIGTERM to the command and reaps zombies:",
        &[r#"CMD ["resin-lock", "run", "--", "./critical.sh"]"#],
    );
    example(
        &mut roff,
        "A shell script",
        "Take the lock for part of a script, waiting at most five minutes for it. \
         The lock is kept after acquire returns and given back by release; if the \
         script dies first, the lock is left stale and taken over by the next user:",
        &[
            "resin-lock acquire -w 5m || exit",
            "trap 'resin-lock release' EXIT",
            "flash-firmware /dev/ttyUSB0",
        ],
    );
    example(
        &mut roff,
        "CI and health checks",
        "status exits 0 when no lock file exists and 1 when one does; --json reports \
         each lock path, its holder and the detection:",
        &[
            "if resin-lock status --json >lock.json; then",
            "    echo \"updates are allowed\"",
            "fi",
            "jq '.locks[] | {path, state, held_by}' lock.json",
        ],
    );
    example(
        &mut roff,
        "Node.js",
        "execSync runs the command through a shell that exits at once, so name the \
         Node process as the owner, or the lock goes stale immediately:",
        &[
            "const { execSync } = require(\"child_process\");",
            "execSync(`resin-lock acquire --owner ${process.pid}`);",
            "try {",
            "    flashFirmware();",
            "} finally {",
            "    execSync(\"resin-lock release\");",
            "}",
        ],
    );
    roff
}

fn see_also() -> Roff {
    let mut roff = Roff::new();
    roff.control("SH", ["SEE ALSO"]);
    roff.text([
        bold("flock"),
        roman("(1), "),
        bold("lockfile"),
        roman("(1), "),
        bold("flock"),
        roman("(2)"),
    ]);
    roff
}
