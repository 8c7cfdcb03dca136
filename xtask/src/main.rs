//! Project tasks, run as `cargo xtask <task>` (the alias is in
//! `.cargo/config.toml`), so that nothing beyond cargo is needed to ship:
//!
//! - `gen` renders `man/resin-lock.1` and `completions/` from the CLI
//!   definition; `gen --check` only says whether the committed copies are fresh.
//! - `dist` builds the static release binary at `target/dist/resin-lock` and
//!   checks it (static, of the right machine, runs, within the size budget);
//!   `--target` cross-builds for aarch64 or armv7 and runs it under qemu-user,
//!   `--all` builds all three and writes `target/dist/SHA256SUMS`, and the npm
//!   and PyPI packages (`target/dist/npm/`, `target/dist/wheels/`).
//! - `bench` measures resin-lock against flock(1), lockfile(1), dotlockfile(1),
//!   the npm lockfile package, tini and dumb-init and prints the budgets of
//!   SPEC section 9 as a markdown table, and writes docs/performance.md
//!   from its results; `bench --quick` runs fewer rounds; `bench --page`
//!   remakes the page from the committed results.

mod bench;
mod dist;
mod elf;
mod generate;
mod package;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

const USAGE: &str = "\
usage: cargo xtask <task>

tasks:
  gen           write man/resin-lock.1 and completions/ from the CLI definition
  gen --check   fail if the committed man page or completions are out of date
  dist          build the static release binary at target/dist/resin-lock (and at
                target/dist/<host target>/resin-lock) and check it (static, of the
                host's machine, runs acquire/status/release/run; the 2 MiB size
                budget only warns)
  dist --target aarch64-unknown-linux-gnu | armv7-unknown-linux-gnueabihf
                the same for an ARM target at target/dist/<target>/resin-lock, built
                with Debian's rustc and run under qemu-user (install them once with
                `sudo xtask/cross-setup.sh`)
  dist --all    the host's and both ARM binaries, target/dist/SHA256SUMS, and from
                those binaries the npm packages (target/dist/npm/*.tgz) and the
                wheels (target/dist/wheels/*.whl); needs npm, maturin, wheel, twine
  dist --strict (with any of the above) also fail when a binary is over the size budget
                (or a per-arch package over 1 MiB)
  bench         measure resin-lock against its peers (flock, lockfile, dotlockfile,
                npm lockfile, tini, dumb-init) and print the performance budgets as a
                markdown table
                markdown table; a run of every family writes its results to
                docs/performance.json and the page docs/performance.md from them
  bench --quick the same with fewer rounds (the page says so)
  bench [--quick] --only FAMILY
                one family alone: per-call (direct spawn and shell loop),
                memory (peak and idle RSS), contention or shared (join and
                leave against flock -s), on the release and the static build;
                handoff or update-now (release to the supervisor's update call,
                against a local fake supervisor), on the release build; prints only
  bench --page  remake docs/performance.md's tables from docs/performance.json
  bench --page --check
                fail if docs/performance.md is not the page of docs/performance.json";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let result = match args.as_slice() {
        ["gen"] => gen_write(&root()),
        ["gen", "--check"] => gen_check(&root()),
        ["dist", rest @ ..] => match dist_args(rest) {
            Some((strict, targets)) => dist::dist(&root(), strict, targets),
            None => {
                eprintln!("{USAGE}");
                return ExitCode::from(2);
            }
        },
        ["bench"] => bench::bench(&root(), false, None),
        ["bench", "--quick"] => bench::bench(&root(), true, None),
        ["bench", "--only", family] => bench::bench(&root(), false, Some(family)),
        ["bench", "--quick", "--only", family] => bench::bench(&root(), true, Some(family)),
        ["bench", "--page"] => bench::page_from_results(&root(), false),
        ["bench", "--page", "--check"] => bench::page_from_results(&root(), true),
        ["help" | "-h" | "--help"] => {
            println!("{USAGE}");
            Ok(())
        }
        _ => {
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("xtask: {message}");
            ExitCode::FAILURE
        }
    }
}

/// `dist`'s options, in any order: `--strict`, and `--target TRIPLE` or `--all`.
fn dist_args(mut args: &[&str]) -> Option<(bool, dist::Targets)> {
    let mut strict = false;
    let mut targets = dist::Targets::Host;
    loop {
        args = match (args, &targets) {
            ([], _) => return Some((strict, targets)),
            (["--strict", rest @ ..], _) if !strict => {
                strict = true;
                rest
            }
            (["--target", triple, rest @ ..], dist::Targets::Host) => {
                targets = dist::Targets::One(triple.to_string());
                rest
            }
            (["--all", rest @ ..], dist::Targets::Host) => {
                targets = dist::Targets::All;
                rest
            }
            _ => return None,
        };
    }
}

/// The workspace root (this crate lives in `xtask/` under it).
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives inside the workspace")
        .to_owned()
}

/// Write every generated file that is missing or different.
fn gen_write(root: &Path) -> Result<(), String> {
    for (path, bytes) in generate::files() {
        let full = root.join(&path);
        if fs::read(&full).ok().as_ref() == Some(&bytes) {
            println!("unchanged {}", path.display());
            continue;
        }
        if let Some(dir) = full.parent() {
            fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        }
        fs::write(&full, &bytes).map_err(|e| format!("{}: {e}", full.display()))?;
        println!("wrote     {}", path.display());
    }
    Ok(())
}

/// Compare without writing; name the stale files.
fn gen_check(root: &Path) -> Result<(), String> {
    let stale = generate::stale(root);
    if stale.is_empty() {
        println!("man page and completions are up to date");
        return Ok(());
    }
    let names: Vec<String> = stale.iter().map(|p| p.display().to_string()).collect();
    Err(format!(
        "out of date: {}; run `cargo xtask gen` and commit the result",
        names.join(", ")
    ))
}
