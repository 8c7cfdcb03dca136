//! `cargo xtask dist`: the static release binary for the host, at
//! `target/dist/resin-lock`, checked before it is called done.
//!
//! The binary is built for an explicit `--target`, so that `+crt-static`
//! applies to it and not to proc-macros and build scripts (which must stay
//! dynamic to be loaded by the compiler). The musl target is used when it is
//! installed; otherwise glibc is linked statically. Then three checks, each
//! reported: the file is statically linked, it runs `--version`, and it fits
//! the size budget of SPEC section 9.
//!
//! Static glibc alone is about 700 KiB, so the glibc build is squeezed: the
//! `dist` profile (release with opt-level "z"), a non-PIE executable (a
//! static-pie carries some 70 KiB of relocations and self-relocation code;
//! the cost is that the executable image is not randomised), and identical
//! code folding where rustc links with its bundled lld.

use std::env;
use std::ffi::{OsStr, OsString};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The size budget: 2 MiB, stripped, for each architecture.
pub const MAX_SIZE: u64 = 2 * 1024 * 1024;

/// Build and check. A binary that is not static or does not run is an
/// error; one over the size budget is an error only with `strict` (CI, the
/// budget's own check) and otherwise a loud warning, so that a Dockerfile's
/// `cargo xtask dist` still produces a working binary.
pub fn dist(root: &Path, strict: bool) -> Result<(), String> {
    let cargo = env::var_os("CARGO").unwrap_or_else(|| OsString::from("cargo"));
    let rustc = rustc_info()?;
    let target = match musl_of(&rustc.host) {
        Some(musl) if installed_targets().contains(&musl) => musl,
        _ => rustc.host.clone(),
    };
    let glibc = target.ends_with("-gnu") || target.contains("-gnueabi");
    let mut rustflags: Vec<String> = env::var("RUSTFLAGS")
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    rustflags.extend(["-C", "target-feature=+crt-static"].map(str::to_owned));
    if glibc {
        rustflags.extend(["-C", "relocation-model=static"].map(str::to_owned));
    }
    if links_with_lld(&target, &rustc) {
        rustflags.extend(["-C", "link-arg=-Wl,--icf=all"].map(str::to_owned));
    }
    let rustflags = rustflags.join(" ");
    println!(
        "building resin-lock for {target} ({}, static), profile dist, RUSTFLAGS={rustflags:?}",
        if glibc { "glibc" } else { "musl" }
    );
    let status = Command::new(&cargo)
        .current_dir(root)
        .env("RUSTFLAGS", &rustflags)
        .args([
            "build",
            "--profile",
            "dist",
            "--locked",
            "--package",
            "resin-lock",
        ])
        .args(["--bin", "resin-lock", "--target", &target])
        .status()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    if !status.success() {
        return Err(format!("cargo build failed ({status})"));
    }

    let target_dir = target_dir(&cargo, root)?;
    let built = target_dir.join(&target).join("dist").join("resin-lock");
    let dist_dir = target_dir.join("dist");
    let dist = dist_dir.join("resin-lock");
    fs::create_dir_all(&dist_dir).map_err(|e| format!("{}: {e}", dist_dir.display()))?;
    fs::copy(&built, &dist)
        .map_err(|e| format!("copy {} to {}: {e}", built.display(), dist.display()))?;
    println!("copied to {}", dist.display());

    let mut failures: Vec<String> = [check_static(&dist), check_runs(&dist)]
        .into_iter()
        .filter_map(Result::err)
        .collect();
    let mut verdict = "ok";
    if let Err(over) = check_size(&dist) {
        if strict {
            failures.push(over);
        } else {
            eprintln!("xtask: warning: {over} (`cargo xtask dist --strict` fails on this)");
            verdict = "built (static, runs) but over the size budget";
        }
    }
    if failures.is_empty() {
        println!("dist {verdict}: {}", dist.display());
        Ok(())
    } else {
        Err(format!("dist checks failed: {}", failures.join("; ")))
    }
}

/// What `rustc -vV` says about the compiler.
struct Rustc {
    host: String,
    /// The minor version: 95 for 1.95.0.
    minor: u32,
}

fn rustc_info() -> Result<Rustc, String> {
    let rustc = env::var_os("RUSTC").unwrap_or_else(|| OsString::from("rustc"));
    let out = Command::new(rustc)
        .arg("-vV")
        .output()
        .map_err(|e| format!("cannot run rustc -vV: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let field = |name: &str| {
        text.lines()
            .find_map(|line| line.strip_prefix(name))
            .map(str::to_owned)
    };
    let host = field("host: ").ok_or("rustc -vV did not name the host")?;
    let minor = field("release: ")
        .and_then(|release| release.split('.').nth(1).and_then(|m| m.parse().ok()))
        .unwrap_or(0);
    Ok(Rustc { host, minor })
}

/// rustc links x86_64-unknown-linux-gnu with its bundled lld since 1.90;
/// elsewhere the system linker may not know `--icf`.
fn links_with_lld(target: &str, rustc: &Rustc) -> bool {
    target == "x86_64-unknown-linux-gnu" && rustc.minor >= 90
}

/// The musl counterpart of a glibc triple: `x86_64-unknown-linux-gnu` ->
/// `x86_64-unknown-linux-musl`, `armv7-unknown-linux-gnueabihf` ->
/// `armv7-unknown-linux-musleabihf`.
fn musl_of(triple: &str) -> Option<String> {
    let (rest, env) = triple.rsplit_once('-')?;
    let abi = env.strip_prefix("gnu")?;
    Some(format!("{rest}-musl{abi}"))
}

/// The targets rustup has installed (none without rustup).
fn installed_targets() -> Vec<String> {
    Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
        .map(|out| {
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .map(|line| line.trim().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Cargo's target directory (honours CARGO_TARGET_DIR and build.target-dir).
pub fn target_dir(cargo: &OsStr, root: &Path) -> Result<PathBuf, String> {
    let out = Command::new(cargo)
        .current_dir(root)
        .args(["metadata", "--format-version", "1", "--no-deps"])
        .output()
        .map_err(|e| format!("cannot run cargo metadata: {e}"))?;
    let metadata: serde_json::Value = serde_json::from_slice(&out.stdout)
        .map_err(|e| format!("cannot read cargo metadata: {e}"))?;
    metadata["target_directory"]
        .as_str()
        .map(PathBuf::from)
        .ok_or_else(|| "cargo metadata named no target directory".to_owned())
}

/// Statically linked, as `file` (or, without it, `ldd`) tells.
fn check_static(bin: &Path) -> Result<(), String> {
    let (tool, said) = match run_tool("file", &["-b"], bin) {
        Ok(said) => ("file", said),
        Err(err) if err.kind() == io::ErrorKind::NotFound => {
            let said = run_tool("ldd", &[], bin)
                .map_err(|e| format!("static: neither file nor ldd can run: {e}"))?;
            ("ldd", said)
        }
        Err(err) => return Err(format!("static: cannot run file: {err}")),
    };
    let said = said.trim();
    println!("{tool}: {said}");
    let static_words = [
        "statically linked",
        "static-pie linked",
        "not a dynamic executable",
    ];
    if static_words.iter().any(|w| said.contains(w)) {
        Ok(())
    } else {
        Err(format!(
            "static: {tool} says it is not statically linked: {said}"
        ))
    }
}

/// Run `tool ARGS BIN`; its stdout and stderr together.
fn run_tool(tool: &str, args: &[&str], bin: &Path) -> io::Result<String> {
    let out = Command::new(tool).args(args).arg(bin).output()?;
    Ok(format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    ))
}

/// It starts and prints the version of the crate it was built from.
fn check_runs(bin: &Path) -> Result<(), String> {
    let want = format!(
        "resin-lock {}",
        resin_lock::cli::command().get_version().unwrap_or_default()
    );
    let out = Command::new(bin)
        .arg("--version")
        .output()
        .map_err(|e| format!("--version: cannot run {}: {e}", bin.display()))?;
    let got = String::from_utf8_lossy(&out.stdout);
    println!("--version: {}", got.trim());
    if out.status.success() && got.trim() == want {
        Ok(())
    } else {
        Err(format!(
            "--version: expected {want:?}, got {:?} ({})",
            got.trim(),
            out.status
        ))
    }
}

/// Within the size budget.
fn check_size(bin: &Path) -> Result<(), String> {
    let size = fs::metadata(bin)
        .map_err(|e| format!("size: {}: {e}", bin.display()))?
        .len();
    let mib = |bytes: u64| bytes as f64 / (1024.0 * 1024.0);
    println!(
        "size: {size} bytes ({:.2} MiB; budget {MAX_SIZE} bytes, {:.1} MiB)",
        mib(size),
        mib(MAX_SIZE)
    );
    if size <= MAX_SIZE {
        Ok(())
    } else {
        Err(format!(
            "size: {size} bytes is over the budget of {MAX_SIZE} bytes"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::musl_of;

    #[test]
    fn musl_counterparts() {
        let table = [
            (
                "x86_64-unknown-linux-gnu",
                Some("x86_64-unknown-linux-musl"),
            ),
            (
                "aarch64-unknown-linux-gnu",
                Some("aarch64-unknown-linux-musl"),
            ),
            (
                "armv7-unknown-linux-gnueabihf",
                Some("armv7-unknown-linux-musleabihf"),
            ),
            ("x86_64-unknown-linux-musl", None),
            ("x86_64-apple-darwin", None),
        ];
        for (triple, musl) in table {
            assert_eq!(musl_of(triple).as_deref(), musl, "{triple}");
        }
    }
}
