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

use clap::{Arg, ArgAction, ValueHint};
use clap_complete::aot::{Generator, Shell, generate};
use clap_mangen::Man;
use clap_mangen::roff::{Inline, Roff, bold, italic, roman};

const BIN: &str = "resin-lock";

/// Every generated file: its path relative to the workspace root, and its bytes.
pub fn files() -> Vec<(PathBuf, Vec<u8>)> {
    let completions = PathBuf::from("completions");
    vec![
        (PathBuf::from("man").join(format!("{BIN}.1")), man_page()),
        (
            completions.join(Shell::Bash.file_name(BIN)),
            bash_completion().into_bytes(),
        ),
        (
            completions.join(Shell::Zsh.file_name(BIN)),
            clap_completion(Shell::Zsh),
        ),
        (
            completions.join(Shell::Fish.file_name(BIN)),
            fish_completion().into_bytes(),
        ),
    ]
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
    // the source into the date's place. The date is the version's, never
    // today's: the output must not change from one day to the next.
    page.push_str(&format!(
        ".TH RESIN-LOCK 1 \"{}\" \"{BIN} {version}\" \"User Commands\"\n",
        man_date(&version)
    ));
    // No hyphenation: a path or a variable name split across lines
    // (/tmp/bal- enа/updates.lock) cannot be copied or searched for.
    page.push_str(".nh\n");
    // Left-aligned, not justified: a long path or option on a line of its
    // own would otherwise spread the words around it with wide gaps.
    page.push_str(".ad l\n");
    page.push_str(&render(&preamble, |w| man.render_name_section(w)));
    let mut synopsis = Roff::new();
    synopsis
        .control("SH", ["SYNOPSIS"])
        .text(synopsis_line(&cmd, BIN));
    page.push_str(&render(&preamble, |w| synopsis.to_writer(w)));
    page.push_str(&code_spans(&render(&preamble, |w| {
        man.render_description_section(w)
    })));
    page.push_str(&code_spans(&render(&preamble, |w| {
        man.render_options_section(w)
    })));
    page.push_str(&code_spans(&commands_section(&cmd, &preamble)));
    for section in [
        exit_status(),
        notes(),
        security(),
        signals(),
        hold_protocol(),
        files_section(),
        environment(),
        examples(),
        see_also(),
    ] {
        page.push_str(&render(&preamble, |w| section.to_writer(w)));
    }
    page.into_bytes()
}

/// The help text's Markdown code spans (`resin-lock release`) in bold, as
/// man pages show commands, instead of literal backticks. Only for text
/// from the CLI's doc comments; the examples are code and keep theirs.
fn code_spans(roff: &str) -> String {
    roff.lines()
        .map(|line| {
            if line.starts_with('.') || line.matches('`').count() % 2 != 0 {
                return line.to_owned();
            }
            let mut out = String::with_capacity(line.len() + 16);
            for (i, part) in line.split('`').enumerate() {
                if i % 2 == 1 {
                    out.push_str("\\fB");
                    out.push_str(part);
                    out.push_str("\\fR");
                } else {
                    out.push_str(part);
                }
            }
            out
        })
        .map(|line| line + "\n")
        .collect()
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
        let man_sub = &sub.clone();
        let man = Man::new(sub);
        let mut heading = Roff::new();
        heading.control("SS", [name]);
        out.push_str(&render(preamble, |w| heading.to_writer(w)));
        let mut synopsis = Roff::new();
        synopsis.text(synopsis_line(man_sub, &format!("{BIN} {name}")));
        out.push_str(&render(preamble, |w| synopsis.to_writer(w)));
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

/// The date on the page: the version's release date from the CHANGELOG
/// heading (`## [0.1.0] - 2026-12-01`), or, while the version is
/// unreleased, `UNRELEASED_DATE`.
fn man_date(version: &str) -> String {
    let heading = format!("## [{version}] - ");
    include_str!("../../CHANGELOG.md")
        .lines()
        .find_map(|line| line.strip_prefix(&heading))
        .map_or(UNRELEASED_DATE, str::trim)
        .to_owned()
}

/// The date of the man page of an unreleased version: the day its content
/// last changed in a way a reader would care about. Fixed, so that the
/// generated page is the same every day (a test compares it byte for byte).
const UNRELEASED_DATE: &str = "2026-12-01";

/// A synopsis line as the parser reads it: every option with its value
/// placeholder (`-w|--timeout DUR`), repeatable ones with `...`, then the
/// positionals: a command line as `[--] CMD [ARG]...`.
fn synopsis_line(cmd: &clap::Command, name: &str) -> Vec<Inline> {
    let mut line = vec![bold(name)];
    for arg in options(cmd) {
        line.push(roman(if arg.is_required_set() { " " } else { " [" }));
        for (i, spelling) in spellings(arg).into_iter().enumerate() {
            if i > 0 {
                line.push(roman("|"));
            }
            line.push(bold(spelling));
        }
        if arg.get_action().takes_values() {
            let value = arg
                .get_value_names()
                .and_then(|names| names.first())
                .map_or_else(|| arg.get_id().as_str().to_uppercase(), |v| v.to_string());
            line.push(roman(" "));
            line.push(italic(value));
        }
        if !arg.is_required_set() {
            line.push(roman("]"));
        }
        if matches!(arg.get_action(), ArgAction::Append) {
            line.push(roman("..."));
        }
    }
    for arg in cmd.get_positionals().filter(|arg| !arg.is_hide_set()) {
        let value = arg
            .get_value_names()
            .and_then(|names| names.first())
            .map_or_else(|| arg.get_id().as_str().to_uppercase(), |v| v.to_string());
        if arg.get_value_hint() == ValueHint::CommandWithArguments {
            line.extend([
                roman(" [--] "),
                italic(value),
                roman(" ["),
                italic("ARG"),
                roman("]..."),
            ]);
        } else {
            let many = arg.get_num_args().is_some_and(|n| n.max_values() > 1);
            let (open, close) = if arg.is_required_set() {
                ("", "")
            } else {
                ("[", "]")
            };
            line.extend([
                roman(format!(" {open}")),
                italic(value),
                roman(format!("{close}{}", if many { "..." } else { "" })),
            ]);
        }
    }
    if cmd.has_subcommands() {
        line.extend([roman(" "), italic("COMMAND")]);
    }
    line
}

/// Text with `code` spans in bold.
fn with_code(text: &str) -> Vec<Inline> {
    text.split('`')
        .enumerate()
        .filter(|(_, part)| !part.is_empty())
        .map(|(i, part)| if i % 2 == 1 { bold(part) } else { roman(part) })
        .collect()
}

/// EXIT STATUS: the table of `exit.rs`, the one the README and `--help` show.
fn exit_status() -> Roff {
    let mut roff = Roff::new();
    roff.control("SH", ["EXIT STATUS"]);
    for (code, meaning) in resin_lock::exit::table() {
        let tag = match code.split_once('+') {
            Some((base, var)) => vec![bold(format!("{base}+")), italic(var)],
            None if code.parse::<u8>().is_ok() => vec![bold(code)],
            None => vec![italic(code)],
        };
        roff.control("TP", []).text(tag);
        let mut body = with_code(meaning);
        // A sentence starts with a capital, unless it starts with code.
        if let (false, Some(Inline::Roman(first))) = (meaning.starts_with('`'), body.first_mut()) {
            let mut chars = first.chars();
            if let Some(c) = chars.next() {
                *first = c.to_uppercase().chain(chars).collect();
            }
        }
        body.push(roman("."));
        roff.text(body);
    }
    roff
}

/// What users must know about the platform (the README has the same, under
/// "What to know about the platform").
fn notes() -> Roff {
    tagged_section(
        "NOTES",
        &[],
        &[
            (
                vec![roman("One service's lock holds back the whole app")],
                vec![
                    "Before it stops or changes any service of an app, the supervisor (v14 \
                     to v19) takes the update locks of all of that app's services, current \
                     and target. A lock held in one service therefore postpones the update \
                     of every service of the app, not only its own.",
                ],
            ),
            (
                vec![
                    roman("Host OS updates look only at "),
                    italic("updates.lock"),
                ],
                vec![
                    "balenaOS 4.1 and later refuse to reboot into a host OS update while a \
                     process holds flock(LOCK_EX) on a file named updates.lock under \
                     /tmp/balena-supervisor/services on the host (a service's \
                     /tmp/balena/updates.lock), and check again every 5 seconds. A lock on \
                     resin-updates.lock (supervisors before v7.22.0), or on a --path with \
                     another name, blocks the supervisor but never a host OS reboot.",
                ],
            ),
            (
                vec![roman("The host OS reboot has its own override")],
                vec![
                    "force-update and the supervisor's lock override make the supervisor \
                     update the app although the lock is held. The host OS reboot check \
                     has a setting of its own: it is skipped only while \
                     /tmp/balena-supervisor/target-state-config on the host has \
                     SUPERVISOR_OVERRIDE_LOCK (or RESIN_OVERRIDE_LOCK) set to true. \
                     force-update does not change it.",
                ],
            ),
            (
                vec![roman("In a container that does not run as root")],
                vec![
                    "The lock directory (/tmp/balena) belongs to root, mode 0755, until \
                     the supervisor has taken the lock there itself, and it starts out that \
                     way again after every reboot (it lives in the host's /tmp). Until \
                     then acquire and run fail for any other user with permission denied \
                     (exit 73); resin-lock does not change the permissions of a directory \
                     it did not create. Take the lock as root and run the work as your \
                     user, which inherits the lock: \
                     resin-lock run -- setpriv --reuid=app --regid=app --init-groups \
                     ./critical.sh. Or make the directory writable for your user in a \
                     start-up step that runs as root, before it drops privileges.",
                ],
            ),
            (
                vec![roman("Hand-over services are not protected")],
                vec![
                    "With the hand-over update strategy (the label \
                     io.balena.update.strategy: hand-over), the supervisor starts the new \
                     release of a service next to the old one and stops the old one after \
                     the hand-over; the update lock does not hold this back. Give services \
                     whose critical sections must not be cut short another strategy, such \
                     as the default download-then-kill.",
                ],
            ),
        ],
    )
}

/// What resin-lock trusts in a world-writable, shared lock directory (the
/// README has the same, under "What resin-lock trusts").
fn security() -> Roff {
    tagged_section(
        "SECURITY",
        &[
            "On a device the lock directory is world-writable (the supervisor makes it \
           1777) and shared between containers and uids. resin-lock trusts nothing \
           found there.",
        ],
        &[
            (
                vec![roman("Paths")],
                vec![
                    "The lock's directory is opened once without following a symlink at it \
                     (under --root it is resolved inside DIR with openat2 RESOLVE_IN_ROOT, \
                     or any symlink below DIR is refused), and every create, link, stat and \
                     unlink of the lock is relative to that descriptor. A symlink, FIFO, \
                     device or directory at the lock path is a foreign lock; nothing is read \
                     from a FIFO or a device.",
                ],
            ),
            (
                vec![roman("Records")],
                vec![
                    "A lock file is read up to 64 KiB and written up to 4 KiB (a longer \
                     command line is cut, and the record says so); text from records and \
                     from the supervisor API is printed with control characters escaped.",
                ],
            ),
            (
                vec![roman("Processes")],
                vec![
                    "release signals a keeper only once it has proved, in /proc, that the \
                     process holds the lock file and runs as the caller's uid or root, \
                     through a pidfd opened before those checks. A process named \
                     resin-lock-keep proves nothing by its name. Without /proc no keeper \
                     can be proved: release says so (exit 1), and release --force removes \
                     the file while the keeper ends with its owner.",
                ],
            ),
            (
                vec![roman("Owners")],
                vec![
                    "acquire's owner is the nearest ancestor that is not a transient \
                     wrapper (a shell running -c, sudo, doas, su, timeout, time, chronic, \
                     strace, setsid); PID 1 is never skipped. release releases an acquire \
                     lock only for its owner (the caller, an ancestor, or --owner), matched \
                     by pid and start time, unless --force.",
                ],
            ),
            (
                vec![roman("Forced updates")],
                vec![
                    "When a lock file is removed while its holder still holds it (the \
                     supervisor's forced update, release --force), a waiting acquire or \
                     run waits until that holder lets go before it creates a lock, so the \
                     supervisor's own lock wins and two resin-lock holders never overlap. \
                     The holder says on stderr that its file was removed when it releases.",
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
                     the wait of acquire, run and hold: nothing is left held, no command is \
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
                    "With --max-hold DUR, if CMD still runs DUR after the lock was taken, \
                     resin-lock says so in one line on stderr (not with -q), removes the \
                     lock file and drops the flock that CMD's inherited descriptor shares, \
                     so the supervisor and any waiter may go on. CMD is not signalled, \
                     stopped or detached: it keeps running, unprotected (an update may now \
                     stop it), resin-lock keeps forwarding signals to it, waits for it and \
                     exits with its status as above.",
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
                vec![bold("hold")],
                vec![
                    "SIGHUP, SIGINT, SIGTERM, SIGQUIT, SIGUSR1, SIGUSR2 and SIGALRM \
                     release the lock, say released on stdout and exit with 128+S. End of \
                     file on stdin releases it and exits 0 (see HOLD PROTOCOL). SIGPIPE is \
                     ignored: a write to a closed stdout ends hold as end of file does.",
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
                    "With --max-hold DUR the keeper removes the lock file DUR after it took \
                     the lock and exits, and writes one line, appended at the end of the \
                     file acquire's stderr went to when that is a file (2>log), else to the \
                     owner's stderr (/proc/PID/fd/2); best effort, not with -q. The owner \
                     is not signalled.",
                ],
            ),
        ],
    )
}

/// `hold`'s event lines: a stable interface for programs in other
/// languages (the npm and PyPI packages read them).
fn hold_protocol() -> Roff {
    let mut roff = tagged_section(
        "HOLD PROTOCOL",
        &[
            "resin-lock hold is for a program that is not a command: it starts resin-lock \
             hold with a pipe on its stdin and reads its stdout. The lock is held while the \
             program keeps the stdin pipe open. Stdout carries one JSON object per line, \
             each written whole and flushed when it happens. This is a stable interface: \
             events and fields are only ever added, never renamed or removed, so a reader \
             must ignore fields (and events) it does not know. Paths that are not UTF-8 \
             are shown with U+FFFD. The events, in the order they can come:",
        ],
        &[
            (
                vec![bold(r#"{"event":"waiting",...}"#)],
                vec![
                    "At most once, when the lock is busy and hold waits for it. Fields: \
                     path (the lock path that is busy), held_by (\"resin-lock\", \
                     \"supervisor\" or \"other\"), holder (who holds it, in words, as the \
                     waiting line on stderr says it), record (the holder's resin-lock \
                     record as read, or null for another tool's lock).",
                ],
            ),
            (
                vec![bold(r#"{"event":"held","paths":[...],"since":"..."}"#)],
                vec![
                    "Once the lock is held: every lock path taken, in order, and when, in \
                     RFC 3339 UTC with milliseconds. Nothing is said before the lock is \
                     held, so a program can wait for this line before its critical work.",
                ],
            ),
            (
                vec![bold(r#"{"event":"lost","path":"...","why":"..."}"#)],
                vec![
                    "A lock file was removed (why: \"removed\") or replaced by another \
                     file (why: \"replaced\") by someone else while held: the supervisor \
                     forcing an update or its lock override, or release --force. Said \
                     within 100 ms, once per path (also when it is noticed only at \
                     release). The lock no longer protects the program, which should \
                     finish or stop its critical work; hold goes on until stdin closes.",
                ],
            ),
            (
                vec![bold(r#"{"event":"expired"}"#)],
                vec![
                    "--max-hold passed: the lock was released (the files removed). hold \
                     goes on until stdin closes.",
                ],
            ),
            (
                vec![bold(r#"{"event":"released"}"#)],
                vec!["The last line, after the lock was released, just before hold exits."],
            ),
        ],
    );
    roff.control("SS", ["When hold ends"]);
    paragraphs(
        &mut roff,
        &[
            "End of file on stdin (the program closed the pipe, or it died, even by \
             SIGKILL, and the kernel closed the pipe): hold releases the lock, says \
             released and exits 0. Bytes read on stdin are ignored. It ends the same way \
             when its parent process is no longer the program that started it (the \
             program died while another process it started keeps the pipe open; checked \
             every second, without /proc), and when nobody reads its stdout any more (a \
             write fails with EPIPE).",
            "SIGHUP, SIGINT, SIGTERM (and SIGQUIT, SIGUSR1, SIGUSR2, SIGALRM) release the \
             lock, say released and exit 128+S. Ctrl-C at a terminal reaches every process \
             of the foreground group: a program that handles it itself should start hold \
             in a process group of its own.",
            "While hold still waits for the lock, end of file ends the wait as SIGHUP does \
             (exit 129) and a signal with 128+S: nothing is held and nothing more is said. \
             A lock that cannot be taken is one line on stderr and acquire's exit status: \
             1 busy (-n) or timed out (-w), or the -E CODE; 64 usage; 73 the lock cannot \
             be created; 77 uid 65534. Only a waiting line can come before it on stdout.",
            "The lock's record names hold's process (pid) and, as its owner, hold's parent \
             with its command line (mode hold). status shows both; release refuses it as \
             it refuses a running run (exit 1); release --force removes it, and hold says \
             lost.",
        ],
    );
    roff
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
                    "The supervisor API address, for force-update, status --supervisor and \
                     --update-now. \
                     The supervisor sets it and the key below for services with the \
                     io.balena.features.supervisor-api label; without them force-update and \
                     status --supervisor exit 69, and --update-now warns.",
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
        "A Docker HEALTHCHECK",
        "status --health exits 1 only when a lock blocks updates for nothing: a stale \
         lock, or (with --max-hold) one held longer than DUR; one line says why:",
        &["HEALTHCHECK --interval=1m CMD resin-lock status --health --max-hold 2h"],
    );
    example(
        &mut roff,
        "A program in another language: hold",
        "Any program that can start a process with pipes holds the lock while it keeps \
         hold's stdin open, and learns from its stdout when the lock is held, and if it is \
         lost. In bash, as a coprocess:",
        &[
            "coproc resin-lock hold --reason migration",
            "holder=$COPROC_PID",
            "read -r event <&\"${COPROC[0]}\" # {\"event\":\"held\",...}",
            "case $event in *'\"held\"'*) ;; *) exit 1;; esac",
            "migrate-database",
            "exec {COPROC[1]}>&- # end of file: released",
            "wait \"$holder\"",
        ],
    );
    example(
        &mut roff,
        "Node.js",
        "execSync runs the command through sh -c, which resin-lock skips when it \
         picks the owner: the Node process owns the lock, which lasts until release or \
         until Node exits (then it goes stale, and the next acquire or run takes it over):",
        &[
            "const { execSync } = require(\"child_process\");",
            "execSync(\"resin-lock acquire\");",
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

// ---- Shell completions ----

/// clap_complete's script for `shell`, without the options a subcommand
/// hides (clap_complete offers them anyway).
fn clap_completion(shell: Shell) -> Vec<u8> {
    let mut cmd = resin_lock::cli::command();
    let mut bytes = Vec::new();
    generate(shell, &mut cmd, BIN, &mut bytes);
    let script = String::from_utf8(bytes).expect("completion script is UTF-8");
    without_hidden(&script, shell).into_bytes()
}

/// `script` (clap_complete's zsh or fish) without the lines that offer an
/// option a subcommand hides: in zsh, `'--long=[…` in the subcommand's
/// `(name)` arm; in fish, a `complete` line for the subcommand with `-l long`.
fn without_hidden(script: &str, shell: Shell) -> String {
    let cmd = built_command();
    let mut hidden: Vec<(&str, &str)> = Vec::new();
    for sub in cmd.get_subcommands() {
        for arg in sub.get_arguments().filter(|arg| arg.is_hide_set()) {
            if let Some(long) = arg.get_long() {
                hidden.push((sub.get_name(), long));
            }
        }
    }
    let mut arm = "";
    let mut kept = String::with_capacity(script.len());
    for line in script.split_inclusive('\n') {
        if let Some(name) = line.strip_prefix('(').and_then(|l| l.strip_suffix(")\n")) {
            arm = name;
        }
        let drop = hidden.iter().any(|(sub, long)| match shell {
            Shell::Zsh => {
                arm == *sub
                    && [
                        format!("'--{long}="),
                        format!("'*--{long}="),
                        format!("'--{long}["),
                    ]
                    .iter()
                    .any(|start| line.starts_with(start))
            }
            Shell::Fish => {
                line.contains(&format!("using_subcommand {sub}\""))
                    && line.contains(&format!(" -l {long} "))
            }
            _ => false,
        });
        if !drop {
            kept.push_str(line);
        }
    }
    kept
}

/// The command with every subcommand's (deferred) arguments and the global
/// options propagated into each, as the parser sees them.
fn built_command() -> clap::Command {
    let mut cmd = resin_lock::cli::command();
    cmd.build();
    cmd
}

/// Whether a subcommand's positional arguments are a command line of their
/// own (`run [OPTIONS] [--] CMD [ARG]...`).
fn takes_command(sub: &clap::Command) -> bool {
    sub.get_positionals()
        .any(|arg| arg.get_value_hint() == ValueHint::CommandWithArguments)
}

/// What to offer for an option's value, as the bash script names it:
/// `files`, `dirs`, `commands`, `words W...`, or `none` (a duration, a pid,
/// an exit code: no file names).
fn value_kind(arg: &Arg) -> String {
    let values: Vec<String> = arg
        .get_possible_values()
        .iter()
        .filter(|value| !value.is_hide_set())
        .map(|value| value.get_name().to_owned())
        .collect();
    if !values.is_empty() {
        return format!("words {}", values.join(" "));
    }
    match arg.get_value_hint() {
        ValueHint::Unknown | ValueHint::AnyPath | ValueHint::FilePath => "files",
        ValueHint::ExecutablePath => "files",
        ValueHint::DirPath => "dirs",
        ValueHint::CommandName | ValueHint::CommandString | ValueHint::CommandWithArguments => {
            "commands"
        }
        _ => "none",
    }
    .to_owned()
}

/// The visible options (not positionals) of a command.
fn options(cmd: &clap::Command) -> impl Iterator<Item = &Arg> {
    cmd.get_arguments()
        .filter(|arg| !arg.is_positional() && !arg.is_hide_set())
}

/// Every spelling of an option: `-s` and `--long`, with visible aliases.
fn spellings(arg: &Arg) -> Vec<String> {
    let mut words: Vec<String> = arg
        .get_short_and_visible_aliases()
        .unwrap_or_default()
        .iter()
        .map(|short| format!("-{short}"))
        .collect();
    words.extend(
        arg.get_long_and_visible_aliases()
            .unwrap_or_default()
            .iter()
            .map(|long| format!("--{long}")),
    );
    words
}

/// The bash case arms of `_resin_lock_value` for one command: each option
/// that takes a value, also as the last of a cluster of short options.
fn bash_value_arms(cmd: &clap::Command) -> String {
    let mut arms = String::new();
    for arg in options(cmd).filter(|arg| arg.get_action().takes_values()) {
        let mut patterns: Vec<String> = arg
            .get_long_and_visible_aliases()
            .unwrap_or_default()
            .iter()
            .map(|long| format!("--{long}"))
            .collect();
        for short in arg.get_short_and_visible_aliases().unwrap_or_default() {
            patterns.push(format!("-{short}"));
            patterns.push(format!("-[!-]*{short}"));
        }
        arms.push_str(&format!(
            "                {}) echo {} ;;\n",
            patterns.join(" | "),
            value_kind(arg)
        ));
    }
    arms
}

/// The bash completion, written here rather than by clap_complete: its bash
/// script spells the subcommands one way where it finds them and another in
/// its case labels when the binary's name has a hyphen (so nothing after the
/// subcommand completed), offers file names for every option value, and
/// knows nothing of the command line after `run --`.
fn bash_completion() -> String {
    let cmd = built_command();
    let subs: Vec<&clap::Command> = cmd.get_subcommands().filter(|s| !s.is_hide_set()).collect();
    let names: Vec<&str> = subs.iter().map(|sub| sub.get_name()).collect();
    let takes_cmd: Vec<&str> = subs
        .iter()
        .filter(|sub| takes_command(sub))
        .map(|sub| sub.get_name())
        .collect();

    let mut option_arms = String::new();
    let mut value_arms = String::new();
    let mut positional_arms = String::new();
    for sub in &subs {
        let words: Vec<String> = options(sub).flat_map(spellings).collect();
        option_arms.push_str(&format!(
            "        {}) echo \"{}\" ;;\n",
            sub.get_name(),
            words.join(" ")
        ));
        value_arms.push_str(&format!(
            "        {})\n            case $2 in\n{}                *) return 1 ;;\n            esac ;;\n",
            sub.get_name(),
            bash_value_arms(sub)
        ));
        let nested: Vec<&str> = sub.get_subcommands().map(|s| s.get_name()).collect();
        if !nested.is_empty() {
            positional_arms.push_str(&format!(
                "        {}) COMPREPLY=($(compgen -W \"{}\" -- \"$2\")) ;;\n",
                sub.get_name(),
                nested.join(" ")
            ));
        }
    }
    let top_words: Vec<String> = options(&cmd).flat_map(spellings).collect();
    option_arms.push_str(&format!("        *) echo \"{}\" ;;\n", top_words.join(" ")));
    value_arms.push_str(&format!(
        "        *)\n            case $2 in\n{}                *) return 1 ;;\n            esac ;;\n",
        bash_value_arms(&cmd)
    ));
    let takes_cmd_pattern = if takes_cmd.is_empty() {
        "''".to_owned()
    } else {
        takes_cmd.join(" | ")
    };

    BASH_TEMPLATE
        .replace("@OPTION_ARMS@", &option_arms)
        .replace("@VALUE_ARMS@", &value_arms)
        .replace("@POSITIONAL_ARMS@", &positional_arms)
        .replace("@TAKES_COMMAND@", &takes_cmd_pattern)
        .replace("@SUBCOMMANDS@", &names.join(" "))
        .replace("@BIN@", BIN)
}

const BASH_TEMPLATE: &str = r#"# bash completion for @BIN@. Generated from the CLI definition by
# `cargo xtask gen` (xtask/src/generate.rs); edit that, not this file.

# _resin_lock_options SUB: the options of subcommand SUB (none yet: "").
_resin_lock_options() {
    case $1 in
@OPTION_ARMS@    esac
}

# _resin_lock_value SUB WORD: fails unless WORD is an option of SUB that
# takes the next word as its value; then says what to offer for it: files,
# dirs, commands, "words W...", or none (no file names either).
_resin_lock_value() {
    case $1 in
@VALUE_ARMS@    esac
}

# _resin_lock_takes_command SUB: whether SUB's arguments are a command line.
_resin_lock_takes_command() {
    case $1 in
        @TAKES_COMMAND@) return 0 ;;
    esac
    return 1
}

_resin_lock_files() {
    compopt -o filenames 2>/dev/null
    mapfile -t COMPREPLY < <(compgen -f -- "$1")
}

_resin_lock_dirs() {
    compopt -o filenames 2>/dev/null
    mapfile -t COMPREPLY < <(compgen -d -- "$1")
}

# A command name, or a path to one.
_resin_lock_commands() {
    if [[ $1 == */* ]]; then
        _resin_lock_files "$1"
    else
        mapfile -t COMPREPLY < <(compgen -c -- "$1" | sort -u)
    fi
}

_resin_lock() {
    local cur=${COMP_WORDS[COMP_CWORD]} opt=${COMP_WORDS[COMP_CWORD - 1]}
    local sub="" word kind i=1 cmd_at=0
    COMPREPLY=()
    # The words before the cursor: the subcommand, the options and their
    # values, and where the command of `run` begins (at `--` or at the first
    # word that is not an option).
    while ((i < COMP_CWORD)); do
        word=${COMP_WORDS[i]}
        if [[ $word == -- ]]; then
            if _resin_lock_takes_command "$sub"; then
                cmd_at=$((i + 1))
                break
            fi
        elif [[ $word == -?* ]]; then
            if _resin_lock_value "$sub" "$word" >/dev/null; then
                i=$((i + 1))
                # `--option=value`, which bash splits at the "=".
                [[ ${COMP_WORDS[i]} == = ]] && i=$((i + 1))
            fi
        elif [[ -z $sub ]]; then
            sub=$word
        elif _resin_lock_takes_command "$sub"; then
            cmd_at=$i
            break
        fi
        i=$((i + 1))
    done

    if ((cmd_at)); then
        if ((cmd_at == COMP_CWORD)); then
            _resin_lock_commands "$cur"
        elif declare -F _command_offset >/dev/null; then
            # bash-completion: complete the command's own arguments.
            _command_offset "$cmd_at"
        else
            _resin_lock_files "$cur"
        fi
        return 0
    fi

    # The value of an option, also right after `--option=`.
    if [[ $cur == = ]]; then
        cur=""
    elif [[ $opt == = ]] && ((COMP_CWORD >= 2)); then
        opt=${COMP_WORDS[COMP_CWORD - 2]}
    fi
    if kind=$(_resin_lock_value "$sub" "$opt"); then
        case $kind in
            files) _resin_lock_files "$cur" ;;
            dirs) _resin_lock_dirs "$cur" ;;
            commands) _resin_lock_commands "$cur" ;;
            words\ *) COMPREPLY=($(compgen -W "${kind#words }" -- "$cur")) ;;
        esac
        return 0
    fi

    if [[ $cur == -* ]]; then
        COMPREPLY=($(compgen -W "$(_resin_lock_options "$sub")" -- "$cur"))
    elif [[ -z $sub ]]; then
        COMPREPLY=($(compgen -W "@SUBCOMMANDS@" -- "$cur"))
    elif _resin_lock_takes_command "$sub"; then
        _resin_lock_commands "$cur"
    else
        case $sub in
@POSITIONAL_ARMS@        esac
    fi
    return 0
}

# No -o default: the function offers file names itself where they fit, so
# nothing falls back to them where they do not (a pid, a duration).
complete -F _resin_lock @BIN@
"#;

/// clap_complete's fish script, plus what it cannot do: the command line
/// after `run` and its options (fish's completion for a command and its
/// arguments), and no options of `run` once that command line has begun.
fn fish_completion() -> String {
    let script = String::from_utf8(clap_completion(Shell::Fish)).expect("fish script is UTF-8");
    let fish_bin = BIN.replace('-', "_");
    let cmd = built_command();
    let mut script = script;
    for sub in cmd.get_subcommands().filter(|sub| takes_command(sub)) {
        let name = sub.get_name();
        let prefix = format!("__fish_{fish_bin}_{}", name.replace('-', "_"));
        let condition = format!("\"__fish_{fish_bin}_using_subcommand {name}\"");
        assert!(
            script.contains(&condition),
            "clap_complete's fish script has no {condition}"
        );
        script = script.replace(
            &condition,
            &format!(
                "\"__fish_{fish_bin}_using_subcommand {name}; and not {prefix}_past_options\""
            ),
        );
        let optspecs: Vec<String> = options(sub)
            .map(|arg| {
                let mut spec = match (arg.get_short(), arg.get_long()) {
                    (Some(short), Some(long)) => format!("{short}/{long}"),
                    (Some(short), None) => short.to_string(),
                    (None, Some(long)) => long.to_owned(),
                    (None, None) => unreachable!("an option has a name"),
                };
                if arg.get_action().takes_values() {
                    spec.push('=');
                    if matches!(arg.get_action(), ArgAction::Append) {
                        spec.push('+');
                    }
                }
                spec
            })
            .collect();
        script.push_str(
            &FISH_COMMAND_TEMPLATE
                .replace("@PREFIX@", &prefix)
                .replace("@GLOBAL@", &format!("__fish_{fish_bin}_global_optspecs"))
                .replace("@OPTSPECS@", &optspecs.join(" "))
                .replace("@SUB@", name)
                .replace("@BIN@", BIN),
        );
    }
    script
}

const FISH_COMMAND_TEMPLATE: &str = r#"
# @SUB@: the words after its options (from `--`, or from the first word that
# is not an option) are a command line of their own, completed as such.
# Written by xtask/src/generate.rs: clap_complete's fish script has no
# positional arguments.
function @PREFIX@_optspecs
    string join \n @OPTSPECS@
end

# The words of the command line of `@SUB@` before the cursor, one a line;
# fails before it can begin (e.g. while an option waits for its value).
function @PREFIX@_words
    set -l words (commandline -opc)
    set -e words[1]
    argparse -s (@GLOBAL@) -- $words 2>/dev/null
    or return 1
    test "$argv[1]" = @SUB@
    or return 1
    set -e argv[1]
    argparse -s (@PREFIX@_optspecs) -- $argv 2>/dev/null
    or return 1
    string join \n -- $argv
    return 0
end

function @PREFIX@_at_command
    set -l words (@PREFIX@_words)
    or return 1
    test (count $words) -eq 0
end

function @PREFIX@_in_command
    set -l words (@PREFIX@_words)
    or return 1
    test (count $words) -gt 0
end

# Past `--`, or inside the command line: no more options of @SUB@.
function @PREFIX@_past_options
    contains -- -- (commandline -opc)
    or @PREFIX@_in_command
end

function @PREFIX@_complete_command
    set -l words (@PREFIX@_words)
    complete -C (string join ' ' -- (string escape -- $words) (commandline -ct))
end

complete -c @BIN@ -n "@PREFIX@_at_command" -f -a "(__fish_complete_command)"
complete -c @BIN@ -n "@PREFIX@_in_command" -f -a "(@PREFIX@_complete_command)"
"#;
