//! The command lines scripts run in a loop, read without clap: `acquire`,
//! `release` and `run` with their flags and the global options (SPEC
//! section 9: per-call cost as scripts pay it). Building clap's command and
//! its help texts is about a fifth of such a call: the heap, stack and code
//! pages it touches, 27 of a `release`'s 61 page faults.
//!
//! Strict by design: anything this does not know for certain to mean the
//! same to clap (a value option, `-qn`, a repeated flag, `-q` with `-v`,
//! `--help`, an unknown word) is left to clap, which then parses the whole
//! line, usage errors included. A unit test checks that whatever this
//! accepts, clap parses to the same `Cli`.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use super::args::{AcquireArgs, HoldArgs, ReleaseArgs, RunArgs, WaitArgs};
use super::{Cli, Command};

/// The `Cli` for `args` (the program name first), or None for clap to read.
pub(super) fn parse(args: &[OsString]) -> Option<Cli> {
    let mut words = args.iter().skip(1).map(|w| w.as_os_str());
    let mut line = Line::default();
    // Global options, then the subcommand.
    let sub = loop {
        let word = words.next()?;
        if !line.global(word, &mut words)? {
            break word.as_bytes();
        }
    };
    let command = match sub {
        b"acquire" => {
            let (wait, end) = line.wait(&mut words, ACQUIRE_FLAGS)?;
            // No operands: `--` or a word is clap's to judge.
            end.is_none().then_some(())?;
            Command::Acquire(AcquireArgs {
                wait,
                hold: no_hold(),
                owner: None,
            })
        }
        b"release" => {
            let (_, end) = line.wait(&mut words, RELEASE_FLAGS)?;
            end.is_none().then_some(())?;
            Command::Release(ReleaseArgs {
                force: line.has(b"--force"),
                owner: None,
                update_now: line.has(b"--update-now"),
            })
        }
        b"run" => {
            // CMD: after `--`, or from its first word that is not an option;
            // the rest as it is, but a second `--` is clap's to judge.
            let (wait, end) = line.wait(&mut words, RUN_FLAGS)?;
            let mut cmd: Vec<OsString> = match end? {
                End::DashDash => Vec::new(),
                End::Word(word) => vec![word.to_owned()],
            };
            for word in words {
                if word == "--" {
                    return None;
                }
                cmd.push(word.to_owned());
            }
            if cmd.is_empty() {
                return None;
            }
            Command::Run(RunArgs {
                wait,
                hold: no_hold(),
                group: line.has(b"--group"),
                update_now: line.has(b"--update-now"),
                cmd,
            })
        }
        _ => return None,
    };
    Some(Cli {
        verbose: line.has(b"--verbose"),
        quiet: line.has(b"--quiet"),
        paths: line.paths,
        root: line.root,
        command,
    })
}

fn no_hold() -> HoldArgs {
    HoldArgs {
        reason: None,
        max_hold: None,
    }
}

/// What was read so far: the flags seen (by their long names) and the
/// global options' values.
#[derive(Default)]
struct Line {
    flags: Vec<&'static [u8]>,
    paths: Vec<PathBuf>,
    root: Option<PathBuf>,
}

/// A flag's short and long name (`b""`: none).
type Flag = (&'static [u8], &'static [u8]);

const GLOBAL_FLAGS: &[Flag] = &[(b"-q", b"--quiet"), (b"-v", b"--verbose")];

const ACQUIRE_FLAGS: &[Flag] = &[(b"-n", b"--nonblock"), (b"-s", b"--shared")];

const RELEASE_FLAGS: &[Flag] = &[(b"-f", b"--force"), (b"", b"--update-now")];

const RUN_FLAGS: &[Flag] = &[
    (b"-n", b"--nonblock"),
    (b"-s", b"--shared"),
    (b"-g", b"--group"),
    (b"", b"--update-now"),
];

/// Where a subcommand's flags ended, short of the end of the line.
enum End<'a> {
    DashDash,
    /// The first word that is not an option.
    Word(&'a OsStr),
}

impl Line {
    fn has(&self, long: &[u8]) -> bool {
        self.flags.contains(&long)
    }

    /// Note `word` if it is one of `known`: Some(true); Some(false) if it
    /// is not; None if it was seen before (an error, for clap to say).
    fn flag(&mut self, word: &OsStr, known: &[Flag]) -> Option<bool> {
        let word = word.as_bytes();
        let Some(&(_, long)) = known
            .iter()
            .find(|(short, long)| word == *long || (!short.is_empty() && word == *short))
        else {
            return Some(false);
        };
        if self.has(long) {
            return None;
        }
        self.flags.push(long);
        // -q and -v conflict.
        (!(self.has(b"--quiet") && self.has(b"--verbose"))).then_some(true)
    }

    /// A global option: Some(true) if `word` was one (its value taken from
    /// `rest`), Some(false) if not, None if clap must read the line.
    fn global<'a>(
        &mut self,
        word: &'a OsStr,
        rest: &mut impl Iterator<Item = &'a OsStr>,
    ) -> Option<bool> {
        if self.flag(word, GLOBAL_FLAGS)? {
            return Some(true);
        }
        let bytes = word.as_bytes();
        if bytes != b"--path" && bytes != b"--root" {
            return Some(false);
        }
        // A value as clap takes it after a space: not empty, not an option.
        let value = rest.next()?;
        if value.is_empty() || value.as_bytes().starts_with(b"-") {
            return None;
        }
        if bytes == b"--path" {
            self.paths.push(PathBuf::from(value));
        } else if self.root.replace(PathBuf::from(value)).is_some() {
            return None;
        }
        Some(true)
    }

    /// Read flags of `known`, -q and -v up to the end of the line (None),
    /// `--` or a word that is not an option. Options it does not know, or
    /// with values, are clap's to read (None).
    fn wait<'a>(
        &mut self,
        words: &mut impl Iterator<Item = &'a OsStr>,
        known: &[Flag],
    ) -> Option<(WaitArgs, Option<End<'a>>)> {
        let mut end = None;
        for word in words.by_ref() {
            // After the subcommand only -q and -v: how clap merges a global
            // option's values given on both sides is clap's business.
            if self.flag(word, known)? || self.flag(word, GLOBAL_FLAGS)? {
                continue;
            }
            if word == "--" {
                end = Some(End::DashDash);
            } else if word.as_bytes().starts_with(b"-") {
                return None;
            } else {
                end = Some(End::Word(word));
            }
            break;
        }
        let wait = WaitArgs {
            nonblock: self.has(b"--nonblock"),
            timeout: None,
            conflict_exit_code: None,
            shared: self.has(b"--shared"),
        };
        Some((wait, end))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn argv(words: &[&str]) -> Vec<OsString> {
        std::iter::once("resin-lock")
            .chain(words.iter().copied())
            .map(OsString::from)
            .collect()
    }

    /// What clap makes of the same line (the environment empty).
    fn by_clap(args: &[OsString]) -> Option<String> {
        super::super::parse_from(args.iter().cloned(), |_| None)
            .ok()
            .map(|cli| format!("{cli:?}"))
    }

    #[test]
    fn the_lines_scripts_loop_over_skip_clap_and_mean_the_same() {
        for line in [
            &["-q", "--path", "/tmp/F", "acquire", "-n"][..],
            &["-q", "--path", "/tmp/F", "release"],
            &["-q", "--path", "/tmp/F", "run", "--", "true"],
            &["acquire"],
            &["release", "--force", "-q"],
            &[
                "--path", "a", "--path", "b", "--root", "/", "acquire", "-s", "-n",
            ],
            &[
                "run",
                "-g",
                "--update-now",
                "sh",
                "-c",
                "echo -n x",
                "--verbose",
            ],
            &["-v", "run", "-n", "--", "-x", "--path"],
        ] {
            let args = argv(line);
            let fast = parse(&args).map(|cli| format!("{cli:?}"));
            assert!(fast.is_some(), "{line:?} skips clap");
            assert_eq!(fast, by_clap(&args), "{line:?}");
        }
    }

    #[test]
    fn anything_else_is_left_to_clap() {
        for line in [
            &[][..],
            &["--help"],
            &["acquire", "--help"],
            &["--version"],
            &["-qn", "acquire"],
            &["-q", "-v", "acquire"],
            &["-q", "acquire", "-q"],
            &["acquire", "-n", "-n"],
            &["acquire", "--timeout", "5"],
            &["acquire", "extra"],
            &["acquire", "--"],
            &["release", "-n"],
            &["run"],
            &["run", "--"],
            &["run", "--nonblok", "--", "true"],
            &["run", "--", "a", "--", "b"],
            &["--path", "", "acquire"],
            &["--path", "-n", "acquire"],
            &["--path=F", "acquire"],
            &["--root", "a", "--root", "b", "acquire"],
            &["acquire", "--path", "F"],
            &["status"],
            &["help", "acquire"],
        ] {
            assert!(parse(&argv(line)).is_none(), "{line:?} goes to clap");
        }
    }

    /// Whatever the fast reading accepts of `words`, clap reads the same.
    fn agrees(words: &[&str]) -> Result<(), TestCaseError> {
        let args = argv(words);
        if let Some(fast) = parse(&args) {
            prop_assert_eq!(Some(format!("{fast:?}")), by_clap(&args), "{:?}", words);
        }
        Ok(())
    }

    const WORDS: &[&str] = &[
        "-q",
        "--quiet",
        "-v",
        "--verbose",
        "--path",
        "--root",
        "/tmp/x",
        "a b",
        "acquire",
        "release",
        "run",
        "status",
        "-n",
        "--nonblock",
        "-s",
        "--shared",
        "-g",
        "--group",
        "-f",
        "--force",
        "--update-now",
        "--timeout",
        "5",
        "--",
        "true",
        "-x",
        "--bogus",
        "",
        "-qn",
        "help",
        "--help",
        "--version",
        "--path=p",
    ];

    /// Parts of `WORDS`: the global options and a value, the subcommands,
    /// and what may follow a subcommand (through `--timeout 5`).
    const GLOBALS: &[&str] = WORDS.split_at(7).0;
    const SUBCOMMANDS: &[&str] = WORDS.split_at(8).1.split_at(4).0;
    const AFTER: &[&str] = WORDS.split_at(23).0;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(20000))]
        /// The same, on lines shaped as scripts write them: global
        /// options, a subcommand, its flags, then maybe `--` and a command.
        #[test]
        fn script_shaped_lines_mean_what_clap_would_say(
            globals in proptest::collection::vec(0..GLOBALS.len(), 0..4),
            sub in 0..SUBCOMMANDS.len(),
            flags in proptest::collection::vec(0..AFTER.len(), 0..4),
            tail in proptest::option::of(proptest::collection::vec(0..WORDS.len(), 0..4)),
        ) {
            let mut words: Vec<&str> = globals.iter().map(|&i| GLOBALS[i]).collect();
            words.push(SUBCOMMANDS[sub]);
            words.extend(flags.iter().map(|&i| AFTER[i]));
            if let Some(tail) = tail {
                words.push("--");
                words.extend(tail.iter().map(|&i| WORDS[i]));
            }
            agrees(&words)?;
        }

        /// Whatever the fast reading accepts, clap reads to the same `Cli`.
        #[test]
        fn what_skips_clap_means_what_clap_would_say(
            picks in proptest::collection::vec(0..WORDS.len(), 0..9)
        ) {
            let words: Vec<&str> = picks.iter().map(|&i| WORDS[i]).collect();
            agrees(&words)?;
        }
    }
}
