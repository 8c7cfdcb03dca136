//! What ships besides the binary: the committed man page and completions are
//! what the generator makes from the current CLI definition, the bash
//! completion works when sourced, and the man page has its hand-written
//! sections and renders without warnings. (The static binary is checked by
//! `cargo xtask dist`, not here: a release build does not belong in `cargo test`.)

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::common::tool;

/// The generator itself, the same file `cargo xtask gen` runs.
#[path = "../xtask/src/generate.rs"]
mod generate;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &str) -> String {
    std::fs::read_to_string(root().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Run a program, or None when it is not installed.
fn try_run(cmd: &mut Command) -> Option<Output> {
    match cmd.output() {
        Ok(out) => Some(out),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => panic!("{cmd:?}: {e}"),
    }
}

#[test]
fn generated_files_are_fresh() {
    let stale = generate::stale(root());
    assert!(
        stale.is_empty(),
        "out of date: {}; run `cargo xtask gen` and commit the result",
        stale
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
}

// ---- Completions, each in its real shell ----

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sh {
    Bash,
    Zsh,
    Fish,
}

/// What completes in a directory that holds one file and one directory, so
/// that file names offered where they do not belong are seen.
struct Completer {
    shell: Sh,
    program: PathBuf,
    dir: tempfile::TempDir,
}

const FILE: &str = "SENTINEL-file";
const DIR: &str = "SENTINEL-dir";
const SCRIPT: &str = "SENTINEL-script";

/// zsh: type LINE and TAB into an interactive `zsh -f` on a pty (zpty) with
/// compinit and the completion directory in fpath; every word offered to
/// `compadd` is printed as `<hit>WORD`, and `<done>` when completion ends.
const ZSH_CAPTURE: &str = r#"
zmodload zsh/zpty
zpty z zsh -f -i
zpty -w z "PROMPT='' RPROMPT=''; fpath=(${(q)1} \$fpath); autoload -Uz compinit; compinit -u -D"
zpty -w z 'zstyle ":completion:*" list-grouped false; zstyle ":completion:*" insert-tab false'
zpty -w z 'compadd() { local -a __h; builtin compadd -O __h "$@"; (( $#__h )) && print -rl -- "<hit>"${^__h}; builtin compadd "$@"; }'
zpty -w z '_capture_done() { print -r -- "<done>" }; comppostfuncs=(_capture_done)'
zpty -w z 'bindkey "^I" complete-word'
zpty -w z "print -r -- '<ready>'"
local out
while zpty -r z out; do [[ $out == '<ready>'* ]] && break; done
zpty -n -w z "$2"$'\t'
while zpty -r z out; do
    [[ $out == *'<done>'* ]] && break
    [[ $out == *'<hit>'* ]] && print -r -- "${${out#*<hit>}%%$'\r'*}"
done
zpty -d z
"#;

/// bash: source the script, set COMP_WORDS and COMP_CWORD from the words of
/// the line, call the function `complete -p` names, print COMPREPLY.
const BASH_CAPTURE: &str = r#"
source "$1"
shift
fn=$(complete -p resin-lock | sed -E 's/.*-F ([^ ]+).*/\1/')
COMP_WORDS=("$@")
COMP_CWORD=$(($# - 1))
COMP_LINE="$*"
COMP_POINT=${#COMP_LINE}
COMPREPLY=()
"$fn" resin-lock "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD - 1]}"
printf '%s\n' "${COMPREPLY[@]}"
"#;

impl Completer {
    /// None (said once) when the shell is not installed.
    fn new(shell: Sh) -> Option<Completer> {
        let name = match shell {
            Sh::Bash => "bash",
            Sh::Zsh => "zsh",
            Sh::Fish => "fish",
        };
        let program = tool(name)?;
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(FILE), "").unwrap();
        std::fs::create_dir(dir.path().join(DIR)).unwrap();
        let script = dir.path().join(SCRIPT);
        std::fs::write(&script, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::write(dir.path().join("capture.zsh"), ZSH_CAPTURE).unwrap();
        Some(Completer {
            shell,
            program,
            dir,
        })
    }

    /// The words offered for the last word of `line` (empty after a space).
    fn complete(&self, line: &str) -> Vec<String> {
        let completions = root().join("completions");
        let mut cmd = match self.shell {
            Sh::Bash => {
                let mut cmd = Command::new(&self.program);
                cmd.args(["--norc", "--noprofile", "-c", BASH_CAPTURE, "bash"])
                    .arg(completions.join("resin-lock.bash"))
                    .args(line.split(' '));
                cmd
            }
            // A hang guard for a harness that never sees the end, not a timing assertion.
            Sh::Zsh => {
                let mut cmd = Command::new("timeout");
                cmd.arg("120")
                    .arg(&self.program)
                    .args(["-f", "capture.zsh"])
                    .arg(&completions)
                    .arg(line);
                cmd
            }
            Sh::Fish => {
                let mut cmd = Command::new(&self.program);
                cmd.args(["-c", "source $argv[1]; complete -C $argv[2]"])
                    .arg(completions.join("resin-lock.fish"))
                    .arg(line);
                cmd
            }
        };
        let out = cmd
            .current_dir(self.dir.path())
            // No configuration of the user who runs the tests.
            .env("HOME", self.dir.path())
            .env("XDG_CONFIG_HOME", self.dir.path())
            .env("XDG_DATA_HOME", self.dir.path())
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && stderr.trim().is_empty(),
            "{:?} completing {line:?}: {}: {stderr}",
            self.shell,
            out.status
        );
        let mut words: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| l.split('\t').next().unwrap_or("").trim_end_matches('/'))
            .filter(|w| !w.is_empty())
            .map(str::to_owned)
            .collect();
        words.sort();
        words.dedup();
        words
    }

    fn offers(&self, line: &str, expected: &[&str]) {
        let words = self.complete(line);
        for word in expected {
            assert!(
                words.iter().any(|w| w == word),
                "{:?}: {line:?} does not offer {word}: {words:?}",
                self.shell
            );
        }
    }

    fn never_offers(&self, line: &str, unexpected: &[&str]) {
        let words = self.complete(line);
        for word in unexpected {
            assert!(
                !words.iter().any(|w| w == word),
                "{:?}: {line:?} offers {word}: {words:?}",
                self.shell
            );
        }
    }
}

/// Subcommands, the options of every subcommand, option values that are
/// not file names, and the command line of `run`, as the CLI defines them.
fn completes_everything(shell: Sh) {
    let Some(c) = Completer::new(shell) else {
        return;
    };
    let mut cli = resin_lock::cli::command();
    cli.build();
    let subs: Vec<&clap::Command> = cli.get_subcommands().filter(|s| !s.is_hide_set()).collect();
    let names: Vec<&str> = subs.iter().map(|s| s.get_name()).collect();
    for name in ["acquire", "release", "run", "status", "force-update"] {
        assert!(names.contains(&name), "no {name} in the CLI");
    }
    c.offers("resin-lock ", &names);
    c.offers("resin-lock -v ", &names);

    let mut no_files = Vec::new();
    for sub in &subs {
        let name = sub.get_name();
        let options: Vec<&clap::Arg> = sub
            .get_arguments()
            .filter(|a| !a.is_positional() && !a.is_hide_set())
            .collect();
        let longs: Vec<String> = options
            .iter()
            .filter_map(|a| a.get_long().map(|l| format!("--{l}")))
            .collect();
        let longs: Vec<&str> = longs.iter().map(String::as_str).collect();
        c.offers(&format!("resin-lock {name} --"), &longs);
        // A value is never a file name, but for the paths of --path and --root.
        for arg in options.iter().filter(|a| a.get_action().takes_values()) {
            let long = arg.get_long().expect("every option has a long name");
            if ["path", "root"].contains(&long) {
                continue;
            }
            c.never_offers(&format!("resin-lock {name} --{long} "), &[FILE, DIR]);
            if let Some(short) = arg.get_short() {
                c.never_offers(&format!("resin-lock {name} -{short} "), &[FILE, DIR]);
            }
            no_files.push(long.to_owned());
        }
    }
    for long in ["owner", "timeout", "conflict-exit-code", "on-lost"] {
        assert!(no_files.iter().any(|l| l == long), "--{long} not checked");
    }
    // --on-lost: signal names, also the real-time ones.
    c.offers(
        "resin-lock run --on-lost ",
        &["TERM", "USR1", "RTMIN+3", "RTMAX"],
    );
    c.offers("resin-lock run --on-lost US", &["USR1", "USR2"]);
    c.never_offers("resin-lock run --on-lost US", &["TERM"]);
    c.offers("resin-lock run -g --on-lost RT", &["RTMIN", "RTMAX-1"]);
    // force-update offers only what applies there.
    c.never_offers("resin-lock force-update --", &["--path", "--root"]);
    // The controls: file names are offered where they belong.
    c.offers("resin-lock --path ", &[FILE]);
    c.offers("resin-lock status --root ", &[DIR]);
    c.never_offers("resin-lock status --root ", &[FILE]);

    // run: the word after `--`, or after the options, is a command.
    for line in [
        "resin-lock run -- ech",
        "resin-lock run ech",
        "resin-lock run -n -- ech",
        "resin-lock --path x run -w 5 -E 3 ech",
    ] {
        c.offers(line, &["echo"]);
    }
    // A path to a program (zsh offers the name after the `./`).
    let words = c.complete("resin-lock run -- ./SENTINEL-s");
    assert!(
        words.iter().any(|w| w.ends_with(SCRIPT)),
        "{shell:?}: no {SCRIPT} in {words:?}"
    );
    // Past `--`, or once the command has begun, run's options are over.
    // (zsh's `_arguments -S` for the top level drops a `--` that comes right
    // after the subcommand, so there `run -- --n` still offers run's options:
    // a command whose name starts with `--` is not worth a hand-written
    // zsh script.)
    if shell != Sh::Zsh {
        c.never_offers("resin-lock run -- --n", &["--nonblock"]);
    }
    c.never_offers("resin-lock run -n -- --n", &["--nonblock"]);
    c.never_offers("resin-lock run -- ls --n", &["--nonblock"]);
}

#[test]
fn bash_completes_subcommands_options_and_commands() {
    completes_everything(Sh::Bash);
}

#[test]
fn zsh_completes_subcommands_options_and_commands() {
    completes_everything(Sh::Zsh);
}

#[test]
fn fish_completes_subcommands_options_and_commands() {
    completes_everything(Sh::Fish);
}

#[test]
fn zsh_and_fish_completions_name_the_binary() {
    assert!(read("completions/_resin-lock").starts_with("#compdef resin-lock"));
    assert!(read("completions/resin-lock.fish").contains("complete -c resin-lock"));
}

#[test]
fn man_page_has_the_hand_written_sections() {
    let page = read("man/resin-lock.1");
    for section in [
        ".SH COMMANDS",
        ".SH \"EXIT STATUS\"",
        ".SH NOTES",
        ".SH SIGNALS",
        ".SH \"HOLD PROTOCOL\"",
        ".SH FILES",
        ".SH ENVIRONMENT",
        ".SH EXAMPLES",
    ] {
        assert!(page.contains(&format!("\n{section}\n")), "no {section}");
    }
    for command in [
        "acquire",
        "release",
        "run",
        "status",
        "force-update",
        "hold",
    ] {
        assert!(
            page.contains(&format!("\n.SS {command}\n")),
            "no .SS {command}"
        );
    }
    // A date (the version's, never today's), and values in the synopses.
    let th = page.lines().find(|l| l.starts_with(".TH ")).unwrap();
    let date = th.split('"').nth(1).unwrap();
    assert!(
        date.len() == 10 && date.chars().filter(|c| *c == '-').count() == 2,
        "{th}"
    );
    for synopsis in [
        r"[\fB\-\-path\fR \fIPATH\fR]...",
        r"[\fB\-w\fR|\fB\-\-timeout\fR \fIDUR\fR]",
        r"[\fB\-\-owner\fR \fIPID|parent\fR]",
        r"[\-\-] \fICMD\fR [\fIARG\fR]...",
    ] {
        assert!(page.contains(synopsis), "no {synopsis} in a SYNOPSIS");
    }
    // EXIT STATUS has every status of the table in the code.
    let exit_status = page
        .split_once(".SH \"EXIT STATUS\"\n")
        .unwrap()
        .1
        .split("\n.SH ")
        .next()
        .unwrap();
    for (code, _) in resin_lock::exit::table() {
        let tag = match code.split_once('+') {
            Some((base, var)) => format!("\\fB{base}+\\fR\\fI{var}\\fR"),
            None if code.parse::<u8>().is_ok() => format!("\\fB{code}\\fR"),
            None => format!("\\fI{code}\\fR"),
        };
        assert!(
            exit_status.contains(&format!(".TP\n{tag}\n")),
            "no {tag} in EXIT STATUS"
        );
    }
    assert!(exit_status.contains("401 or 403") && exit_status.contains("\\-\\-owner"));
}

/// The man page is left-aligned, not justified: a line is never widened
/// with runs of spaces between its words (only a tag and its text, as in
/// `0      Done`, are set apart).
#[test]
fn man_page_is_not_justified() {
    let page = read("man/resin-lock.1");
    let after_th = page.split_once("\n.TH ").unwrap().1;
    assert!(after_th.contains("\n.ad l\n"), "no .ad l after .TH");
    assert!(!after_th.contains("\n.ad b"), "justified again");
    let Some(out) = try_run(
        Command::new("man")
            .args(["-l"])
            .arg(root().join("man/resin-lock.1"))
            .env("MANWIDTH", "80")
            .env("LC_ALL", "C.UTF-8"),
    ) else {
        panic!("man is not installed: apt-get install man-db");
    };
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().collect();
    // Not the header and footer lines, which set their parts apart.
    let widened: Vec<&str> = lines[1..lines.len().saturating_sub(1)]
        .iter()
        .copied()
        .filter(|line| {
            let body = line.trim_start();
            // A `.TP` tag and its text on one line: skip the tag.
            let body = match body.split_once("  ") {
                Some((tag, rest)) if !tag.contains(' ') => rest.trim_start(),
                _ => body,
            };
            body.trim_end().contains("  ")
        })
        .collect();
    assert!(widened.is_empty(), "justified lines: {widened:#?}");
}

/// man-db's `man --warnings` (or groff, which it drives) finds nothing to
/// complain about. Needs the Debian packages man-db or groff-base.
#[test]
fn man_page_renders_without_warnings() {
    let page = root().join("man/resin-lock.1");
    let man = try_run(
        Command::new("man")
            .args(["--warnings", "-l"])
            .arg(&page)
            .env("MANWIDTH", "80")
            .env("LC_ALL", "C.UTF-8"),
    );
    let (tool, out) = match man {
        Some(out) => ("man --warnings", out),
        None => {
            let groff = try_run(
                Command::new("groff")
                    .args(["-man", "-Tutf8", "-ww", "-z"])
                    .arg(&page)
                    .env("LC_ALL", "C.UTF-8"),
            );
            let out = groff.expect(
                "neither man nor groff is installed: apt-get install man-db (or groff-base)",
            );
            ("groff -ww", out)
        }
    };
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stderr.is_empty(),
        "{tool} on man/resin-lock.1 ({}): {stderr}",
        out.status
    );
    if tool.starts_with("man") {
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains("EXIT STATUS") && text.contains("SIGUSR1"),
            "{text}"
        );
    }
}

/// Issue 20.11: the man page reads as a man page. No word is hyphenated
/// across lines (a path or variable name split in two cannot be copied or
/// searched for), the help's Markdown code spans are not shown as literal
/// backticks, and the Node.js example says what the README says: execSync's
/// `sh -c` is skipped, so no `--owner` is needed.
#[test]
fn man_page_has_no_hyphenated_paths_no_backticks_and_the_right_node_example() {
    let page = read("man/resin-lock.1");
    assert!(!page.contains('`'), "literal backticks in the man page");
    assert!(
        !page.contains("process.pid"),
        "the Node example names --owner"
    );
    let Some(out) = try_run(
        Command::new("man")
            .args(["-l"])
            .arg(root().join("man/resin-lock.1"))
            .env("MANWIDTH", "64")
            .env("LC_ALL", "C.UTF-8"),
    ) else {
        panic!("man is not installed: apt-get install man-db");
    };
    let text = String::from_utf8_lossy(&out.stdout);
    let split: Vec<&str> = text
        .lines()
        .filter(|line| {
            let line = line.trim_end();
            (line.ends_with('-') || line.ends_with('\u{2010}'))
                && line
                    .chars()
                    .rev()
                    .nth(1)
                    .is_some_and(|c| c.is_alphanumeric() || c == '_')
        })
        .collect();
    assert!(split.is_empty(), "hyphenated across lines: {split:#?}");
}

// ---- The README ----

/// The README's "run it" command, as written: `cargo run --release -- ARGS`
/// is the binary with ARGS, run from the repository root. It must name a
/// lock file with --path (nothing detected, nothing created on a machine
/// that is not a device) and an example that ships.
#[test]
fn readme_run_command_works_as_written() {
    let readme = read("README.md");
    let (_, after) = readme
        .split_once("\nRun it")
        .expect("a \"Run it\" paragraph");
    let line = after
        .lines()
        .find_map(|l| l.strip_prefix("    cargo run --release -- "))
        .expect("an indented `cargo run --release -- ...` line after \"Run it\"");
    let args: Vec<&str> = line.split_whitespace().collect();
    assert!(args.starts_with(&["--path"]), "{line}: no --path first");
    let program = args.iter().skip_while(|a| **a != "--").nth(1).unwrap();
    assert!(root().join(program).is_file(), "{program} does not ship");
    let out = Command::new(env!("CARGO_BIN_EXE_resin-lock"))
        .args(&args)
        .current_dir(root())
        .env_remove("RESIN_LOCK_PATH")
        .env_remove("RESIN_LOCK_ROOT")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{line}: {}: {stdout}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains(&format!("holding the update lock {}", args[1])) && stdout.contains("done"),
        "{stdout}"
    );
}

/// The README's exit-status table is the one in `src/exit.rs` (which also
/// makes `--help`'s and the man page's).
#[test]
fn readme_exit_status_table_is_the_one_in_the_code() {
    let readme = read("README.md");
    let (_, section) = readme
        .split_once("\n## Exit status\n")
        .expect("an Exit status section");
    let rows: Vec<(String, String)> = section
        .lines()
        .skip_while(|line| !line.starts_with("| code |"))
        .skip(2)
        .take_while(|line| line.starts_with('|'))
        .map(|line| {
            let cells: Vec<&str> = line.trim_matches('|').splitn(2, " | ").collect();
            (cells[0].trim().to_owned(), cells[1].trim().to_owned())
        })
        .collect();
    let expected: Vec<(String, String)> = resin_lock::exit::table()
        .into_iter()
        .map(|(code, meaning)| (code, meaning.to_owned()))
        .collect();
    let markdown: String = expected
        .iter()
        .map(|(code, meaning)| format!("| {code} | {meaning} |\n"))
        .collect();
    assert_eq!(
        rows, expected,
        "the README's table should read:\n{markdown}"
    );
}
