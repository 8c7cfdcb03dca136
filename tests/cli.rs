//! The command line as a newcomer meets it (issue 20.8, SPEC 4): `-h` is a
//! flock(1)-sized summary and `--help` the long form; a typo gets the
//! nearest valid word; an option put before its subcommand is told where
//! it belongs.

use crate::common::*;

fn help(args: &[&str]) -> String {
    let out = resin_lock().args(args).output().unwrap();
    assert!(out.status.success(), "{args:?}");
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn short_help_is_a_summary_and_long_help_has_the_details() {
    for sub in [
        &[][..],
        &["acquire"],
        &["release"],
        &["run"],
        &["status"],
        &["force-update"],
    ] {
        let short = help(&[sub, &["-h"]].concat());
        let long = help(&[sub, &["--help"]].concat());
        let lines = short.lines().count();
        assert!(lines <= 25, "{sub:?} -h is {lines} lines:\n{short}");
        assert!(
            long.lines().count() > lines + 10,
            "{sub:?} --help is not the long form"
        );
        assert!(short.contains("Usage: resin-lock"), "{short}");
    }
    // The exit status table is --help's; -h points to it.
    assert!(help(&["--help"]).contains("128+S"));
    assert!(!help(&["-h"]).contains("128+S"));
    assert!(help(&["-h"]).contains("--help"));
    // Each option on one line in `run -h`.
    let run = help(&["run", "-h"]);
    for option in [
        "--timeout",
        "--shared",
        "--reason",
        "--group",
        "--on-lost",
        "--update-now",
        "--path",
    ] {
        let line = run.lines().find(|l| l.contains(option)).unwrap();
        let at = run.lines().position(|l| l == line).unwrap();
        let next = run.lines().nth(at + 1).unwrap_or("");
        assert!(
            next.trim_start().starts_with('-'),
            "{option} wraps onto a second line:\n{run}"
        );
    }
}

#[test]
fn path_help_fits_every_subcommand() {
    for sub in ["status", "release"] {
        let text = help(&[sub, "--help"]);
        assert!(!text.contains("Lock this file"), "{sub}: {text}");
        assert!(text.contains("Use this lock file"), "{sub}: {text}");
    }
    // force-update uses no lock: --path is not in its help at all.
    let text = help(&["force-update", "--help"]);
    assert!(
        !text.contains("--path") && !text.contains("--root"),
        "{text}"
    );
}

#[test]
fn typos_suggest_the_nearest_word() {
    for (args, says) in [
        (&["aquire"][..], "'acquire'"),
        (&["acquire", "--timout", "5"], "'--timeout'"),
        (&["status", "--jsn"], "'--json'"),
        (&["relase"], "'release'"),
    ] {
        resin_lock()
            .args(args)
            .assert()
            .code(64)
            .stdout("")
            .stderr(contains(says).and(contains("similar")));
    }
}

#[test]
fn an_option_before_its_subcommand_is_told_where_it_belongs() {
    let s = Scratch::new();
    for (args, sub) in [
        (&["-w", "5", "run", "true"][..], "run"),
        (&["-w5", "acquire"], "acquire"),
        (&["-s", "run", "true"], "run"),
        (&["-nE75", "run", "true"], "run"),
    ] {
        s.cmd(args)
            .assert()
            .code(64)
            .stderr(contains(format!("put it after `{sub}`")));
    }
    // An option no subcommand has gets no such hint.
    s.cmd(&["-x", "run", "true"])
        .assert()
        .code(64)
        .stderr(contains("'-x'").and(contains("put it after").not()));
    assert!(!s.lock().exists());
}

/// The help of every subcommand lists its options in one order: its own
/// (how to lock; output options such as --json last), then -v and -q, then
/// where the lock is (--path, --root), then -h and -V. `force-update`
/// lists only what applies: no --path or --root, which do nothing there.
#[test]
fn every_help_lists_options_in_one_order() {
    const TAIL: [&str; 6] = [
        "--verbose",
        "--quiet",
        "--path",
        "--root",
        "--help",
        "--version",
    ];
    for sub in ["acquire", "release", "run", "status", "force-update"] {
        for flag in ["-h", "--help"] {
            let text = help(&[sub, flag]);
            let options: Vec<&str> = text
                .lines()
                .skip_while(|l| *l != "Options:")
                .filter_map(|line| {
                    // An option's line, not its description's (indented more).
                    let l = line.trim_start();
                    let indent = line.len() - l.len();
                    (indent <= 6 && l.starts_with('-')).then(|| {
                        let word = l.split([' ', ',']).find(|w| w.starts_with("--"));
                        word.unwrap_or(l)
                    })
                })
                .collect();
            let tail: Vec<&str> = options
                .iter()
                .copied()
                .skip_while(|o| *o != "--verbose")
                .collect();
            let want: Vec<&str> = TAIL
                .iter()
                .copied()
                .filter(|o| sub != "force-update" || !["--path", "--root"].contains(o))
                .collect();
            assert_eq!(tail, want, "{sub} {flag}:\n{text}");
            if sub == "status" {
                let own = &options[..options.len() - tail.len()];
                assert_eq!(own.last(), Some(&"--json"), "{sub} {flag}: {own:?}");
            }
        }
    }
}

/// flock(1)'s habits: `--wait` is `-w`, and `-n` with `-w` fails at once
/// (-n wins) instead of being a usage error.
#[test]
fn wait_and_nonblock_with_wait_behave_as_in_flock() {
    let s = Scratch::new();
    s.cmd(&["run", "--wait", "5", "true"])
        .assert()
        .success()
        .stderr("");
    s.cmd(&["run", "--wait=0.5", "--", "true"])
        .assert()
        .success();
    s.cmd(&["acquire", "--wait", "5"]).assert().success();
    // Held: -n -w fails as -n does (no wait begun, not timed out), either
    // order; as flock -n -w does on a flocked file.
    for args in [
        &["run", "-n", "-w", "600", "true"][..],
        &["run", "-w600", "-n", "true"],
    ] {
        s.cmd(args).assert().code(1).stderr(
            contains("is held by")
                .and(contains("timed out").not())
                .and(contains("waiting for").not()),
        );
    }
    // util-linux is installed wherever these tests run (setpriv, unshare).
    {
        let out = std::process::Command::new("flock")
            .args(["-n", "-w", "600"])
            .arg(s.lock())
            .arg("true")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "flock -n -w on a held lock");
    }
    s.cmd(&["release"]).assert().success();
}
