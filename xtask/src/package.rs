//! The npm and PyPI packages of `cargo xtask dist --all`, made from the
//! binaries `dist` has just checked, into `target/dist/npm/` and
//! `target/dist/wheels/`.
//!
//! - npm: `packages/npm/resin-lock` and one `packages/npm/@resin-lock/linux-*`
//!   package per architecture (esbuild's layout) are staged under the build
//!   folder, each per-arch one with its checked binary at `bin/resin-lock`,
//!   and packed by `npm pack`; `npm publish --dry-run` then checks each
//!   tarball as the registry would take it.
//! - PyPI: maturin (`bindings = "bin"`, `packages/python/pyproject.toml`)
//!   builds each wheel with the very environment cargo built the binary with,
//!   so cargo finds it fresh and maturin packs that binary (checked below by
//!   its SHA-256). maturin tags a binary of a glibc target `manylinux` only:
//!   it mixes in `musllinux` only for musl targets, and the ARM binaries are
//!   glibc-static (Debian's compiler has no ARM musl). The binary is static,
//!   so it runs on musl too: pypa's `wheel tags` adds `musllinux_1_1`, and
//!   the file is named in the usual order
//!   (`manylinux_2_17_<arch>.manylinux2014_<arch>.musllinux_1_1_<arch>`).
//!   `twine check --strict` then checks the wheels as PyPI would.
//! - Each per-arch tarball and wheel must be at most 1 MiB: an error with
//!   `--strict`, otherwise a warning.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

use crate::dist::Built;

/// The budget for each per-arch npm tarball and wheel, compressed.
pub const MAX_PACKAGE: u64 = 1024 * 1024;

/// A target's names in each ecosystem.
struct Arch {
    /// The Rust target triple `dist` builds.
    triple: &'static str,
    /// Node's `process.arch`, the suffix of `@resin-lock/linux-<npm>`.
    npm: &'static str,
    /// The wheel's machine, as in `manylinux2014_<wheel>`.
    wheel: &'static str,
}

const ARCHES: [Arch; 4] = [
    Arch {
        triple: "x86_64-unknown-linux-gnu",
        npm: "x64",
        wheel: "x86_64",
    },
    Arch {
        triple: "x86_64-unknown-linux-musl",
        npm: "x64",
        wheel: "x86_64",
    },
    Arch {
        triple: "aarch64-unknown-linux-gnu",
        npm: "arm64",
        wheel: "aarch64",
    },
    Arch {
        triple: "armv7-unknown-linux-gnueabihf",
        npm: "arm",
        wheel: "armv7l",
    },
];

/// Write `target/dist/npm/*.tgz` and `target/dist/wheels/*.whl`.
pub fn packages(
    root: &Path,
    dist_dir: &Path,
    build_dir: &Path,
    built: &[Built],
    strict: bool,
) -> Result<(), String> {
    let version = resin_lock::cli::command()
        .get_version()
        .unwrap_or_default()
        .to_owned();
    let mut over = Vec::new();
    npm(root, dist_dir, build_dir, built, &version, &mut over)?;
    wheels(root, dist_dir, build_dir, built, &version, &mut over)?;
    if over.is_empty() {
        return Ok(());
    }
    let message = format!(
        "over the {MAX_PACKAGE}-byte budget of a per-arch package: {}",
        over.join(", ")
    );
    if strict {
        Err(message)
    } else {
        eprintln!("xtask: warning: {message} (`cargo xtask dist --strict` fails on this)");
        Ok(())
    }
}

fn arch_of(triple: &str) -> Result<&'static Arch, String> {
    ARCHES
        .iter()
        .find(|a| a.triple == triple)
        .ok_or_else(|| format!("no npm or PyPI package is made for {triple}"))
}

/// An empty directory at `dir` (what was there is gone).
fn fresh_dir(dir: &Path) -> Result<(), String> {
    if dir.exists() {
        fs::remove_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))
}

fn copy(from: &Path, to: &Path) -> Result<(), String> {
    if let Some(dir) = to.parent() {
        fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    fs::copy(from, to)
        .map(drop)
        .map_err(|e| format!("copy {} to {}: {e}", from.display(), to.display()))
}

/// Run a packaging tool; its stdout, or an error that names it and says
/// how to install it when it is missing.
fn tool(command: &mut Command, install: &str) -> Result<String, String> {
    let name = command.get_program().to_string_lossy().into_owned();
    let out = command.output().map_err(|e| {
        format!("cannot run {name} ({e}); the packages of `dist --all` need it: {install}")
    })?;
    if !out.status.success() {
        return Err(format!(
            "{name} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout).trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The `version` of a package.json, and its optionalDependencies' versions.
fn npm_versions(package_json: &Path) -> Result<Vec<(String, String)>, String> {
    let text =
        fs::read_to_string(package_json).map_err(|e| format!("{}: {e}", package_json.display()))?;
    let json: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", package_json.display()))?;
    let mut versions = vec![(
        "version".to_owned(),
        json["version"].as_str().unwrap_or_default().to_owned(),
    )];
    if let Some(deps) = json["optionalDependencies"].as_object() {
        for (name, version) in deps {
            versions.push((
                name.clone(),
                version.as_str().unwrap_or_default().to_owned(),
            ));
        }
    }
    Ok(versions)
}

/// Stage, pack and dry-run-publish the main package and one per binary.
fn npm(
    root: &Path,
    dist_dir: &Path,
    build_dir: &Path,
    built: &[Built],
    version: &str,
    over: &mut Vec<String>,
) -> Result<(), String> {
    let source = root.join("packages/npm");
    let stage = build_dir.join("npm-stage");
    let out = dist_dir.join("npm");
    fresh_dir(&stage)?;
    fresh_dir(&out)?;
    let mut staged: Vec<(PathBuf, bool)> = Vec::new();

    let main = stage.join("resin-lock");
    for file in [
        "package.json",
        "index.js",
        "index.mjs",
        "index.d.ts",
        "README.md",
    ] {
        copy(&source.join("resin-lock").join(file), &main.join(file))?;
    }
    staged.push((main, false));
    for one in built {
        let arch = arch_of(&one.triple)?;
        let name = format!("linux-{}", arch.npm);
        let dir = stage.join(&name);
        for file in ["package.json", "README.md"] {
            copy(
                &source.join("@resin-lock").join(&name).join(file),
                &dir.join(file),
            )?;
        }
        let bin = dir.join("bin/resin-lock");
        copy(&one.bin, &bin)?;
        set_executable(&bin)?;
        staged.push((dir, true));
    }
    for (dir, per_arch) in &staged {
        copy(&root.join("LICENSE"), &dir.join("LICENSE"))?;
        let wrong: Vec<String> = npm_versions(&dir.join("package.json"))?
            .into_iter()
            .filter(|(_, v)| v != version)
            .map(|(what, v)| format!("{what} {v:?}"))
            .collect();
        if !wrong.is_empty() {
            return Err(format!(
                "{}/package.json: {} where the crate is {version}; the packages ship at the crate's version",
                dir.file_name().unwrap_or_default().to_string_lossy(),
                wrong.join(", ")
            ));
        }
        let json = tool(
            Command::new("npm")
                .arg("pack")
                .arg(dir)
                .arg("--pack-destination")
                .arg(&out)
                .args(["--json", "--silent"]),
            "install node and npm",
        )?;
        let packed: serde_json::Value = serde_json::from_str(&json)
            .map_err(|e| format!("npm pack --json printed no JSON ({e}): {json}"))?;
        let filename = packed[0]["filename"]
            .as_str()
            .ok_or_else(|| format!("npm pack --json named no file: {json}"))?;
        let tgz = out.join(filename);
        let size = fs::metadata(&tgz)
            .map_err(|e| format!("{}: {e}", tgz.display()))?
            .len();
        println!("npm: {} ({size} bytes)", tgz.display());
        if *per_arch && size > MAX_PACKAGE {
            over.push(format!("{filename} is {size} bytes"));
        }
        tool(
            Command::new("npm")
                .args(["publish", "--dry-run", "--offline", "--silent"])
                .arg(&tgz),
            "install node and npm",
        )?;
        println!("npm: publish --dry-run {filename}: ok");
    }
    Ok(())
}

#[cfg(unix)]
fn set_executable(path: &Path) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt as _;
    fs::set_permissions(path, fs::Permissions::from_mode(0o755))
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// One wheel per binary, by maturin, retagged, then `twine check`.
fn wheels(
    root: &Path,
    dist_dir: &Path,
    build_dir: &Path,
    built: &[Built],
    version: &str,
    over: &mut Vec<String>,
) -> Result<(), String> {
    let project = root.join("packages/python");
    let raw = build_dir.join("wheels-raw");
    let out = dist_dir.join("wheels");
    fresh_dir(&raw)?;
    fresh_dir(&out)?;
    let pip = "pip install maturin wheel twine";
    let mut made = Vec::new();
    for one in built {
        let arch = arch_of(&one.triple)?;
        let from = raw.join(&one.triple);
        tool(
            Command::new("maturin")
                .current_dir(&project)
                .envs(one.env.iter().map(|(k, v)| (k, v)))
                .args(["build", "--locked", "--profile", "dist"])
                .args(["--target", &one.triple])
                .args(["--compatibility", "manylinux2014"])
                .arg("--out")
                .arg(&from),
            pip,
        )?;
        let first = only_file(&from, ".whl")?;
        let tags = format!(
            "manylinux_2_17_{m}.manylinux2014_{m}.musllinux_1_1_{m}",
            m = arch.wheel
        );
        let retagged = tool(
            Command::new("wheel")
                .args(["tags", "--remove", "--platform-tag", &tags])
                .arg(&first),
            pip,
        )?;
        let retagged = from.join(retagged.trim());
        let name = format!("resin_lock-{version}-py3-none-{tags}.whl");
        let wheel = out.join(&name);
        fs::rename(&retagged, &wheel)
            .map_err(|e| format!("rename {} to {}: {e}", retagged.display(), wheel.display()))?;
        let inside = format!("resin_lock-{version}.data/scripts/resin-lock");
        let want = sha256(&fs::read(&one.bin).map_err(|e| format!("{}: {e}", one.bin.display()))?);
        let got = tool(
            Command::new("python3")
                .args([
                    "-c",
                    "import hashlib, sys, zipfile\n\
                     print(hashlib.sha256(zipfile.ZipFile(sys.argv[1]).read(sys.argv[2])).hexdigest())",
                ])
                .arg(&wheel)
                .arg(&inside),
            "install python3",
        )?;
        if got.trim() != want {
            return Err(format!(
                "{name}: its {inside} is not the checked {} (maturin rebuilt it: its environment differs from dist's)",
                one.bin.display()
            ));
        }
        let size = fs::metadata(&wheel)
            .map_err(|e| format!("{}: {e}", wheel.display()))?
            .len();
        println!(
            "wheel: {} ({size} bytes, the checked binary)",
            wheel.display()
        );
        if size > MAX_PACKAGE {
            over.push(format!("{name} is {size} bytes"));
        }
        made.push(wheel);
    }
    tool(
        Command::new("twine")
            .args(["check", "--strict"])
            .args(&made),
        pip,
    )?;
    println!("wheels: twine check --strict: ok");
    Ok(())
}

/// The one file in `dir` whose name ends with `suffix`.
fn only_file(dir: &Path, suffix: &str) -> Result<PathBuf, String> {
    let found: Vec<PathBuf> = fs::read_dir(dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.to_string_lossy().ends_with(suffix))
        .collect();
    match found.as_slice() {
        [one] => Ok(one.clone()),
        _ => Err(format!(
            "{}: expected one {suffix} file, found {}",
            dir.display(),
            found.len()
        )),
    }
}

fn sha256(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::arch_of;

    #[test]
    fn each_target_has_its_npm_and_wheel_names() {
        let table = [
            ("x86_64-unknown-linux-gnu", "x64", "x86_64"),
            ("aarch64-unknown-linux-gnu", "arm64", "aarch64"),
            ("armv7-unknown-linux-gnueabihf", "arm", "armv7l"),
        ];
        for (triple, npm, wheel) in table {
            let arch = arch_of(triple).expect(triple);
            assert_eq!((arch.npm, arch.wheel), (npm, wheel), "{triple}");
        }
        assert!(arch_of("riscv64gc-unknown-linux-gnu").is_err());
    }
}
