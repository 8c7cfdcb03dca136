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
    for sub in ["status", "force-update", "release"] {
        let text = help(&[sub, "--help"]);
        assert!(!text.contains("Lock this file"), "{sub}: {text}");
        assert!(text.contains("Use this lock file"), "{sub}: {text}");
    }
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
