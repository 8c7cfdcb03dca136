//! `cargo xtask dist`: static release binaries, each checked before it is
//! called done, at `target/dist/<target>/resin-lock` (and the host's also at
//! `target/dist/resin-lock`).
//!
//! - `dist` builds for the host: the musl target when it is installed,
//!   otherwise glibc linked statically, with rustup's compiler.
//! - `dist --target aarch64-unknown-linux-gnu` and
//!   `--target armv7-unknown-linux-gnueabihf` cross-build on an x86_64 Debian
//!   machine with Debian's `rustc-web` (/usr/bin/rustc) and its multiarch ARM
//!   standard libraries, linked by the cross gcc against its static glibc;
//!   `xtask/cross-setup.sh` installs all of it (see there for why this route).
//!   On an ARM machine its own target is the host target and builds natively.
//! - `dist --all` builds the three and writes `target/dist/SHA256SUMS`.
//!
//! Each binary is built for an explicit `--target`, so that `+crt-static`
//! applies to it and not to proc-macros and build scripts (which must stay
//! dynamic to be loaded by the compiler). Then the checks, each reported: the
//! ELF header names the target's machine and word size and no dynamic
//! loader; the binary fits the size budget of SPEC section 9; and it runs,
//! under qemu-user for a foreign machine: `--version`, then `acquire`,
//! `status --json`, `release` and `run` on a lock in a temporary directory,
//! with their exit codes.
//!
//! Static glibc alone is about 700 KiB, so the glibc build is squeezed: the
//! `dist` profile (release with opt-level "z"), a non-PIE executable (a
//! static-pie carries some 70 KiB of relocations and self-relocation code;
//! the cost is that the executable image is not randomised), and identical
//! code folding where rustc links with its bundled lld.

use std::env;
use std::ffi::{OsStr, OsString};
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Instant;

use sha2::{Digest, Sha256};

use crate::{elf, package};

/// The size budget: 2 MiB, stripped, for each architecture.
pub const MAX_SIZE: u64 = 2 * 1024 * 1024;

/// The compiler for the cross targets: Debian's `rustc-web`, whose foreign
/// standard libraries are Debian multiarch packages.
const CROSS_RUSTC: &str = "/usr/bin/rustc";

/// Which binaries to build.
pub enum Targets {
    /// The host's (musl when installed), as plain `cargo xtask dist`.
    Host,
    /// One target triple.
    One(String),
    /// The host's and the two ARM targets, and `SHA256SUMS`.
    All,
}

/// A target `dist` knows how to check (and, when foreign, to cross-build).
struct Known {
    triple: &'static str,
    machine: u16,
    bits: u8,
    /// The cross linker, from Debian's `gcc-<this>` package.
    linker: &'static str,
    /// The qemu-user binary that runs it on another machine.
    qemu: &'static str,
}

const KNOWN: [Known; 4] = [
    Known {
        triple: "x86_64-unknown-linux-gnu",
        machine: elf::EM_X86_64,
        bits: 64,
        linker: "x86_64-linux-gnu-gcc",
        qemu: "qemu-x86_64-static",
    },
    Known {
        triple: "x86_64-unknown-linux-musl",
        machine: elf::EM_X86_64,
        bits: 64,
        linker: "x86_64-linux-gnu-gcc",
        qemu: "qemu-x86_64-static",
    },
    Known {
        triple: "aarch64-unknown-linux-gnu",
        machine: elf::EM_AARCH64,
        bits: 64,
        linker: "aarch64-linux-gnu-gcc",
        qemu: "qemu-aarch64-static",
    },
    Known {
        triple: "armv7-unknown-linux-gnueabihf",
        machine: elf::EM_ARM,
        bits: 32,
        linker: "arm-linux-gnueabihf-gcc",
        qemu: "qemu-arm-static",
    },
];

/// The two ARM targets of `--all`, beside the host's.
const ARM: [&str; 2] = ["aarch64-unknown-linux-gnu", "armv7-unknown-linux-gnueabihf"];

/// Build and check. A binary that is not static, is for the wrong machine or
/// does not run is an error; one over the size budget is an error only with
/// `strict` (CI, the budget's own check) and otherwise a loud warning, so that
/// a Dockerfile's `cargo xtask dist` still produces a working binary.
pub fn dist(root: &Path, strict: bool, targets: Targets) -> Result<(), String> {
    let cargo = env::var_os("CARGO").unwrap_or_else(|| OsString::from("cargo"));
    let rustc = rustc_info()?;
    let host = match musl_of(&rustc.host) {
        Some(musl) if installed_targets().contains(&musl) => musl,
        _ => rustc.host.clone(),
    };
    let triples: Vec<String> = match &targets {
        Targets::Host => vec![host.clone()],
        Targets::One(triple) => vec![triple.clone()],
        Targets::All => {
            let mut all = vec![host.clone()];
            all.extend(
                ARM.iter()
                    .map(|t| t.to_string())
                    .filter(|t| *t != rustc.host),
            );
            all
        }
    };
    let target_dir = target_dir(&cargo, root)?;
    let dist_dir = target_dir.join("dist");
    forget_cargo_folders(&dist_dir)?;
    let mut failures = Vec::new();
    let mut built = Vec::new();
    for triple in &triples {
        let native = *triple == rustc.host || *triple == host;
        let started = Instant::now();
        let built_one = match build(root, &cargo, &rustc, triple, native, &target_dir) {
            Ok(built_one) => built_one,
            Err(err) => {
                failures.push(format!("{triple}: {err}"));
                continue;
            }
        };
        let build_time = started.elapsed();
        let started = Instant::now();
        match check(&built_one.bin, triple, native, strict) {
            Ok(verdict) => {
                println!(
                    "dist {triple}: {verdict}: {} (built in {:.0} s, checked in {:.1} s)",
                    built_one.bin.display(),
                    build_time.as_secs_f64(),
                    started.elapsed().as_secs_f64()
                );
                built.push(built_one);
            }
            Err(err) => failures.push(format!("{triple}: {err}")),
        }
    }
    if !failures.is_empty() {
        return Err(format!("dist checks failed: {}", failures.join("; ")));
    }
    if let Targets::All = targets {
        write_sums(&dist_dir, &built)?;
        package::packages(root, &dist_dir, &build_dir(&target_dir), &built, strict)?;
    }
    Ok(())
}

/// A checked binary and how cargo built it.
pub struct Built {
    pub triple: String,
    /// Its place under `target/dist/<triple>/`.
    pub bin: PathBuf,
    /// The environment cargo built it with (target dir, compiler, linker,
    /// RUSTFLAGS): a second cargo run with the same finds it fresh.
    pub env: Vec<(String, String)>,
}

/// `cargo build` one target; the binary's place under `target/dist/`.
fn build(
    root: &Path,
    cargo: &OsStr,
    rustc: &Rustc,
    triple: &str,
    native: bool,
    target_dir: &Path,
) -> Result<Built, String> {
    let known = KNOWN.iter().find(|k| k.triple == triple);
    let glibc = triple.ends_with("-gnu") || triple.contains("-gnueabi");
    let mut command = Command::new(cargo);
    let mut build_env: Vec<(String, String)> = Vec::new();
    let mut rustflags: Vec<String> = env::var("RUSTFLAGS")
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    rustflags.extend(["-C", "target-feature=+crt-static"].map(str::to_owned));
    if glibc {
        rustflags.extend(["-C", "relocation-model=static"].map(str::to_owned));
    }
    let compiler = if native {
        if links_with_lld(triple, rustc) {
            rustflags.extend(["-C", "link-arg=-Wl,--icf=all"].map(str::to_owned));
        }
        "rustup's rustc".to_owned()
    } else {
        let known = known.ok_or_else(|| {
            let names: Vec<&str> = KNOWN.iter().map(|k| k.triple).collect();
            format!("no cross build for {triple}; known: {}", names.join(", "))
        })?;
        cross_ready(triple, known)?;
        let var = format!(
            "CARGO_TARGET_{}_LINKER",
            triple.to_uppercase().replace('-', "_")
        );
        if env::var_os(&var).is_none() {
            build_env.push((var, known.linker.to_owned()));
        }
        build_env.push(("RUSTC".to_owned(), CROSS_RUSTC.to_owned()));
        format!("Debian's {CROSS_RUSTC}, linker {}", known.linker)
    };
    let rustflags = rustflags.join(" ");
    println!(
        "building resin-lock for {triple} ({}, static) with {compiler}, profile dist, \
         RUSTFLAGS={rustflags:?}",
        if glibc { "glibc" } else { "musl" }
    );
    // Cargo's own folders for this build (deps, build scripts, incremental
    // state) live apart from target/dist, which holds only what ships.
    let build_dir = build_dir(target_dir);
    build_env.push((
        "CARGO_TARGET_DIR".to_owned(),
        build_dir.to_string_lossy().into_owned(),
    ));
    build_env.push(("RUSTFLAGS".to_owned(), rustflags));
    let status = command
        .current_dir(root)
        .envs(build_env.iter().map(|(k, v)| (k, v)))
        .args(["build", "--profile", "dist", "--locked"])
        .args(["--package", "resin-lock", "--bin", "resin-lock"])
        .args(["--target", triple])
        .status()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    if !status.success() {
        return Err(format!("cargo build failed ({status})"));
    }

    let built = build_dir.join(triple).join("dist").join("resin-lock");
    let dist_dir = target_dir.join("dist");
    let mut places = vec![dist_dir.join(triple).join("resin-lock")];
    if native {
        places.push(dist_dir.join("resin-lock"));
    }
    for place in &places {
        let dir = place.parent().expect("a file under target/dist");
        fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        fs::copy(&built, place)
            .map_err(|e| format!("copy {} to {}: {e}", built.display(), place.display()))?;
        println!("copied to {}", place.display());
    }
    Ok(Built {
        triple: triple.to_owned(),
        bin: places.swap_remove(0),
        env: build_env,
    })
}

/// The cross compiler with this target's standard library, and the linker,
/// are installed; otherwise say how to install them.
fn cross_ready(triple: &str, known: &Known) -> Result<(), String> {
    let setup = "install them with `sudo xtask/cross-setup.sh` (Debian 12, x86_64)";
    let libdir = Command::new(CROSS_RUSTC)
        .args(["--print", "target-libdir", "--target", triple])
        .output()
        .ok()
        .filter(|out| out.status.success())
        .map(|out| PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()));
    let has_std = libdir.as_deref().is_some_and(|dir| {
        fs::read_dir(dir).is_ok_and(|mut entries| {
            entries.any(|e| e.is_ok_and(|e| e.file_name().to_string_lossy().starts_with("libstd-")))
        })
    });
    if !has_std {
        return Err(format!(
            "{CROSS_RUSTC} with the {triple} standard library is not installed; {setup}"
        ));
    }
    if Command::new(known.linker)
        .arg("--version")
        .output()
        .is_err()
    {
        return Err(format!(
            "the linker {} is not installed; {setup}",
            known.linker
        ));
    }
    Ok(())
}

/// Every check of one binary; the verdict, or every failure at once.
fn check(bin: &Path, triple: &str, native: bool, strict: bool) -> Result<&'static str, String> {
    let known = KNOWN.iter().find(|k| k.triple == triple);
    let runner = match known {
        Some(known) if !native => Some(known.qemu),
        _ => None,
    };
    let mut failures: Vec<String> = [check_elf(bin, known), smoke(bin, runner)]
        .into_iter()
        .filter_map(Result::err)
        .collect();
    let mut verdict = "ok";
    if let Err(over) = check_size(bin) {
        if strict {
            failures.push(over);
        } else {
            eprintln!("xtask: warning: {over} (`cargo xtask dist --strict` fails on this)");
            verdict = "built (static, runs) but over the size budget";
        }
    }
    if failures.is_empty() {
        Ok(verdict)
    } else {
        Err(failures.join("; "))
    }
}

/// `target/dist/SHA256SUMS`, as `sha256sum -c` reads it from `target/dist`.
fn write_sums(dist_dir: &Path, built: &[Built]) -> Result<(), String> {
    let mut sums = String::new();
    for Built { triple, bin, .. } in built {
        let bytes = fs::read(bin).map_err(|e| format!("{}: {e}", bin.display()))?;
        let digest = Sha256::digest(&bytes);
        let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        writeln!(sums, "{hex}  {triple}/resin-lock").expect("write to a String");
    }
    let path = dist_dir.join("SHA256SUMS");
    fs::write(&path, &sums).map_err(|e| format!("{}: {e}", path.display()))?;
    print!("wrote {}:\n{sums}", path.display());
    Ok(())
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

/// Cargo's folders that earlier versions of `dist` left in target/dist
/// (when cargo built the dist profile there): gone, so that it holds only
/// the shipped files.
fn forget_cargo_folders(dist_dir: &Path) -> Result<(), String> {
    for name in ["build", "deps", "examples", "incremental", ".fingerprint"] {
        let dir = dist_dir.join(name);
        if dir.is_dir() {
            fs::remove_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        }
    }
    for name in [".cargo-lock", "resin-lock.d", "xtask", "xtask.d"] {
        let file = dist_dir.join(name);
        if file.is_file() {
            fs::remove_file(&file).map_err(|e| format!("{}: {e}", file.display()))?;
        }
    }
    Ok(())
}

/// Where cargo builds the dist profile: beside target/dist, not in it, so
/// that target/dist holds only the shipped files.
pub fn build_dir(target_dir: &Path) -> PathBuf {
    target_dir.join("dist-build")
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

/// The ELF header names the target's machine and word size and no dynamic
/// loader. `file -b` says the same in words where it is installed.
fn check_elf(bin: &Path, known: Option<&Known>) -> Result<(), String> {
    if let Ok(out) = Command::new("file").arg("-b").arg(bin).output() {
        println!("file: {}", String::from_utf8_lossy(&out.stdout).trim());
    }
    let bytes = fs::read(bin).map_err(|e| format!("elf: {}: {e}", bin.display()))?;
    let found = elf::parse(&bytes).map_err(|e| format!("elf: {e}"))?;
    println!("elf: {found}");
    let mut wrong = Vec::new();
    if found.interp {
        wrong.push("it asks for a dynamic loader (PT_INTERP): not statically linked".to_owned());
    }
    if let Some(known) = known.filter(|k| (found.machine, found.bits) != (k.machine, k.bits)) {
        wrong.push(format!(
            "{} wants a {}-bit ELF for e_machine {}",
            known.triple, known.bits, known.machine
        ));
    }
    if wrong.is_empty() {
        Ok(())
    } else {
        Err(format!("elf: {}", wrong.join(", ")))
    }
}

/// It runs, under qemu-user when foreign: `--version` prints the version of
/// the crate it was built from; `acquire` takes a lock in a temporary
/// directory, `status --json` sees it held (exit 1), `release` frees it,
/// `status --json` sees it free (exit 0), and `run` takes it around a command
/// and exits as the command did, leaving no file behind.
fn smoke(bin: &Path, runner: Option<&str>) -> Result<(), String> {
    let dir = tempfile::tempdir().map_err(|e| format!("run: temp dir: {e}"))?;
    let lock = dir.path().join("updates.lock");
    let lock_arg = lock.to_str().ok_or("run: temp dir is not UTF-8")?;
    let want_version = format!(
        "resin-lock {}",
        resin_lock::cli::command().get_version().unwrap_or_default()
    );
    if let Some(qemu) = runner {
        println!("run: under {qemu}");
    }
    let run = |args: &[&str], code: i32| -> Result<String, String> {
        let mut command = match runner {
            Some(qemu) => {
                let mut command = Command::new(qemu);
                command.arg(bin);
                command
            }
            None => Command::new(bin),
        };
        let out: Output =
            command
                .args(args)
                .stdin(Stdio::null())
                .output()
                .map_err(|e| match runner {
                    Some(qemu) => format!(
                        "run: cannot run {qemu} (`sudo xtask/cross-setup.sh` installs it): {e}"
                    ),
                    None => format!("run: cannot run {}: {e}", bin.display()),
                })?;
        let shown = args.join(" ").replace(lock_arg, "LOCK");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        println!("run: {shown} -> {}", out.status);
        if out.status.code() == Some(code) {
            Ok(stdout)
        } else {
            Err(format!(
                "run: `resin-lock {shown}` exited {} (want {code}); stderr: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    };
    let locked = |json: &str| -> Result<bool, String> {
        let value: serde_json::Value = serde_json::from_str(json)
            .map_err(|e| format!("run: status --json printed no JSON ({e}): {json}"))?;
        value["locked"]
            .as_bool()
            .ok_or_else(|| format!("run: status --json has no \"locked\": {json}"))
    };

    let version = run(&["--version"], 0)?;
    if version.trim() != want_version {
        return Err(format!(
            "run: --version: expected {want_version:?}, got {:?}",
            version.trim()
        ));
    }
    run(&["--path", lock_arg, "acquire"], 0)?;
    let held = run(&["--path", lock_arg, "status", "--json"], 1)?;
    if !locked(&held)? {
        return Err(format!("run: status --json after acquire: {held}"));
    }
    run(&["--path", lock_arg, "release"], 0)?;
    let free = run(&["--path", lock_arg, "status", "--json"], 0)?;
    if locked(&free)? || lock.exists() {
        return Err(format!(
            "run: the lock is still there after release: {free}"
        ));
    }
    run(&["--path", lock_arg, "run", "--", "true"], 0)?;
    run(&["--path", lock_arg, "run", "--", "sh", "-c", "exit 7"], 7)?;
    if lock.exists() {
        return Err("run: the lock file is still there after run".to_owned());
    }
    Ok(())
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
