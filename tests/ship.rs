//! What ships besides the binary: the committed man page and completions are
//! what the generator makes from the current CLI definition, the bash
//! completion works when sourced, and the man page has its hand-written
//! sections and renders without warnings. (The static binary is checked by
//! `cargo xtask dist`, not here: a release build does not belong in `cargo test`.)

use std::path::Path;
use std::process::{Command, Output};

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

#[test]
fn bash_completion_completes_the_commands() {
    // Ask `complete -p` for the function rather than assume clap_complete's naming.
    let script = r#"
        source completions/resin-lock.bash
        fn=$(complete -p resin-lock | sed -E 's/.*-F ([^ ]+).*/\1/')
        COMP_WORDS=(resin-lock "")
        COMP_CWORD=1
        "$fn" resin-lock "" resin-lock
        echo "${COMPREPLY[@]}"
    "#;
    let out = Command::new("bash")
        .current_dir(root())
        .args(["--norc", "--noprofile", "-c", script])
        .output()
        .expect("bash runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && stderr.is_empty(), "bash: {stderr}");
    let words: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    for command in ["acquire", "release", "run", "status", "force-update"] {
        assert!(
            words.iter().any(|w| w == command),
            "{command} not in {words:?}"
        );
    }
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
        ".SH SIGNALS",
        ".SH FILES",
        ".SH ENVIRONMENT",
        ".SH EXAMPLES",
    ] {
        assert!(page.contains(&format!("\n{section}\n")), "no {section}");
    }
    for command in ["acquire", "release", "run", "status", "force-update"] {
        assert!(
            page.contains(&format!("\n.SS {command}\n")),
            "no .SS {command}"
        );
    }
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
