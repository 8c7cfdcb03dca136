//! Every Dockerfile recipe in the README and docs/ that picks a prebuilt
//! binary in a `FROM busybox` stage runs here exactly as users copy it: the
//! stage's `RUN` is taken from the page (continuation lines joined as
//! Docker's parser joins them), its `ARG`s become the environment the way
//! buildx and balena set them, and it runs under busybox `sh` in a chroot
//! that holds only busybox and a fake `target/dist` tree (fake binaries, a
//! real `SHA256SUMS`) where the stage's `COPY` puts it. Each architecture
//! must pick its binary and check it; one without a binary, a tampered
//! binary or a missing line must fail with one line on stderr, and leave
//! nothing behind.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The pages users read: the README and every page of docs/.
fn pages() -> Vec<PathBuf> {
    let mut pages = vec![root().join("README.md")];
    let mut docs: Vec<PathBuf> = fs::read_dir(root().join("docs"))
        .expect("docs/")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    docs.sort();
    pages.extend(docs);
    pages
}

/// The contents of every ```dockerfile block of a Markdown page.
fn dockerfile_blocks(page: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in page.lines() {
        match &mut current {
            None if line.trim_start().starts_with("```dockerfile") => current = Some(String::new()),
            Some(block) if line.trim_start().starts_with("```") => {
                blocks.push(std::mem::take(block));
                current = None;
            }
            Some(block) => {
                block.push_str(line);
                block.push('\n');
            }
            None => {}
        }
    }
    blocks
}

/// A Dockerfile's instructions, as Docker's parser reads them: a line that
/// ends with `\` goes on with the next one (the backslash removed, the next
/// line kept as it is); comment lines and empty lines inside a continued
/// instruction are dropped.
fn instructions(dockerfile: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current: Option<String> = None;
    for line in dockerfile.lines() {
        let trimmed = line.trim_start();
        if current.is_none() && (trimmed.is_empty() || trimmed.starts_with('#')) {
            continue;
        }
        if current.is_some() && (trimmed.is_empty() || trimmed.starts_with('#')) {
            continue;
        }
        let (text, continues) = match line.trim_end().strip_suffix('\\') {
            Some(text) => (text, true),
            None => (line, false),
        };
        let joined = match current.take() {
            Some(mut so_far) => {
                so_far.push_str(text);
                so_far
            }
            None => text.trim_start().to_owned(),
        };
        if continues {
            current = Some(joined);
        } else {
            out.push(joined);
        }
    }
    out.extend(current);
    out
}

/// The `FROM busybox` stage of a recipe: what the test needs of it.
#[derive(Debug)]
struct Stage {
    /// `ARG NAME[=DEFAULT]`, in order.
    args: Vec<(String, Option<String>)>,
    /// Where `COPY resin-lock/ DEST` puts the dist tree.
    dist: String,
    /// The shell of its `RUN`.
    run: String,
    /// The file a later stage copies out of it (`COPY --from=NAME SRC ...`).
    output: String,
}

/// The busybox stage of each recipe on a page, from the page's text after
/// `substitute` (balena's template substitution, or nothing for buildx).
fn busybox_stages(page: &str, substitute: &dyn Fn(&str) -> String) -> Vec<Stage> {
    let mut stages = Vec::new();
    for block in dockerfile_blocks(page) {
        let block = substitute(&block);
        let lines = instructions(&block);
        let Some(from) = lines.iter().position(|l| l.starts_with("FROM busybox")) else {
            continue;
        };
        let name = lines[from]
            .split_whitespace()
            .skip_while(|w| !w.eq_ignore_ascii_case("AS"))
            .nth(1)
            .expect("the busybox stage is named (FROM busybox... AS NAME)")
            .to_owned();
        let end = lines[from + 1..]
            .iter()
            .position(|l| l.starts_with("FROM "))
            .map_or(lines.len(), |i| from + 1 + i);
        let stage = &lines[from + 1..end];
        let args = stage
            .iter()
            .filter_map(|l| l.strip_prefix("ARG "))
            .map(|a| match a.trim().split_once('=') {
                Some((k, v)) => (k.to_owned(), Some(v.to_owned())),
                None => (a.trim().to_owned(), None),
            })
            .collect();
        let dist = stage
            .iter()
            .find_map(|l| l.strip_prefix("COPY resin-lock/ "))
            .expect("the stage copies resin-lock/ in")
            .trim()
            .trim_end_matches('/')
            .to_owned();
        let runs: Vec<&String> = stage.iter().filter(|l| l.starts_with("RUN ")).collect();
        assert_eq!(runs.len(), 1, "one RUN in the busybox stage: {runs:?}");
        let run = runs[0]["RUN ".len()..].to_owned();
        let output = lines[end..]
            .iter()
            .find_map(|l| l.strip_prefix(&format!("COPY --from={name} ")))
            .and_then(|l| l.split_whitespace().next())
            .expect("a later stage copies the binary out of the busybox stage")
            .to_owned();
        stages.push(Stage {
            args,
            dist,
            run,
            output,
        });
    }
    stages
}

/// The binaries `cargo xtask dist --all` makes, by target.
const TARGETS: [&str; 3] = [
    "x86_64-unknown-linux-gnu",
    "aarch64-unknown-linux-gnu",
    "armv7-unknown-linux-gnueabihf",
];

/// busybox, or None when it is not installed (a failure with CI=true).
fn busybox() -> Option<PathBuf> {
    let found = ["/bin/busybox", "/usr/bin/busybox"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.is_file());
    if found.is_none() {
        let ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
        assert!(
            !ci,
            "busybox is not installed (Debian package busybox), and with CI=true a missing tool is a failure"
        );
        eprintln!(
            "resin-lock tests: busybox is not installed (Debian package busybox): skipping the recipe tests"
        );
    }
    found
}

/// A root file system like the `busybox` image's, with the recipe's dist
/// tree copied in: `/bin` holds busybox and its applets (and the shared
/// libraries it needs, where it is not static), nothing else.
struct Image {
    dir: tempfile::TempDir,
    dist: PathBuf,
}

impl Image {
    fn new(busybox: &Path, dist: &str) -> Image {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("bin");
        fs::create_dir(&bin).unwrap();
        fs::copy(busybox, bin.join("busybox")).unwrap();
        let list = Command::new(busybox).arg("--list").output().unwrap();
        for applet in String::from_utf8_lossy(&list.stdout).lines() {
            if applet != "busybox" {
                symlink("busybox", bin.join(applet)).unwrap();
            }
        }
        for lib in shared_libraries(busybox) {
            let to = dir.path().join(lib.strip_prefix("/").unwrap());
            fs::create_dir_all(to.parent().unwrap()).unwrap();
            fs::copy(&lib, &to).unwrap();
        }
        // The dist tree as `cargo xtask dist --all` leaves it: a binary per
        // target (fake, each different) and a real SHA256SUMS.
        let dist = dir.path().join(dist.trim_start_matches('/'));
        for target in TARGETS {
            fs::create_dir_all(dist.join(target)).unwrap();
            fs::write(dist.join(target).join("resin-lock"), fake_binary(target)).unwrap();
        }
        let sums = Command::new("sha256sum")
            .args(TARGETS.map(|t| format!("{t}/resin-lock")))
            .current_dir(&dist)
            .output()
            .unwrap();
        assert!(sums.status.success(), "sha256sum: {sums:?}");
        fs::write(dist.join("SHA256SUMS"), &sums.stdout).unwrap();
        Image { dir, dist }
    }

    /// Run `script` as the stage's `RUN` does: `/bin/sh -c` inside the
    /// image, with `env` as the only environment besides PATH.
    fn run(&self, script: &str, env: &BTreeMap<String, String>) -> Output {
        Command::new("chroot")
            .arg(self.dir.path())
            .args(["/bin/sh", "-c", script])
            .env_clear()
            .env(
                "PATH",
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            )
            .envs(env)
            .output()
            .expect("chroot")
    }

    fn file(&self, path: &str) -> PathBuf {
        self.dir.path().join(path.trim_start_matches('/'))
    }
}

fn fake_binary(target: &str) -> String {
    format!("a fake resin-lock for {target}\n")
}

/// The shared libraries `ldd` names for a program (none when it is static).
fn shared_libraries(program: &Path) -> Vec<PathBuf> {
    let Ok(out) = Command::new("ldd").arg(program).output() else {
        return Vec::new();
    };
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| {
            let path = match line.split_once("=>") {
                Some((_, right)) => right.split_whitespace().next()?,
                None => line.split_whitespace().next()?,
            };
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect()
}

/// How one build sets the stage's `ARG`s.
struct Build {
    what: &'static str,
    /// balena's `%%BALENA_ARCH%%`, substituted in the whole file; None for buildx.
    balena_arch: Option<&'static str>,
    /// `--build-arg`s, or the platform ARGs buildx sets itself.
    build_args: &'static [(&'static str, &'static str)],
}

impl Build {
    fn substitute(&self, text: &str) -> String {
        match self.balena_arch {
            Some(arch) => text
                .replace("%%BALENA_ARCH%%", arch)
                .replace("%%BALENA_MACHINE_NAME%%", "some-device"),
            None => text.to_owned(),
        }
    }

    /// The environment of the stage's RUN: each declared ARG, from the
    /// build's value, else its default; an ARG without either is unset.
    fn env(&self, stage: &Stage) -> BTreeMap<String, String> {
        stage
            .args
            .iter()
            .filter_map(|(name, default)| {
                let given = self
                    .build_args
                    .iter()
                    .find(|(k, _)| k == name)
                    .map(|(_, v)| (*v).to_owned());
                Some((name.clone(), given.or_else(|| default.clone())?))
            })
            .collect()
    }
}

/// Every recipe on every page, built as `build` builds it.
fn recipes(build: &Build) -> Vec<(PathBuf, Stage)> {
    pages()
        .into_iter()
        .flat_map(|page| {
            let text = fs::read_to_string(&page).unwrap();
            busybox_stages(&text, &|t| build.substitute(t))
                .into_iter()
                .map(move |stage| (page.clone(), stage))
        })
        .collect()
}

/// Run every recipe under `build`; each must copy out `target`'s binary.
fn picks(build: &Build, target: &str) {
    let Some(busybox) = busybox() else {
        return;
    };
    let recipes = recipes(build);
    assert!(
        !recipes.is_empty(),
        "no Dockerfile recipe with a FROM busybox stage in the README or docs/"
    );
    for (page, stage) in recipes {
        let image = Image::new(&busybox, &stage.dist);
        let out = image.run(&stage.run, &build.env(&stage));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "{}: {} ({:?}): the recipe failed: {stderr}",
            page.display(),
            build.what,
            build.env(&stage)
        );
        let copied = fs::read_to_string(image.file(&stage.output)).unwrap_or_else(|e| {
            panic!("{}: {}: {}: {e}", page.display(), build.what, stage.output)
        });
        assert_eq!(
            copied,
            fake_binary(target),
            "{}: {}: the wrong binary",
            page.display(),
            build.what
        );
    }
}

/// Run every recipe under `build`, after `spoil` changed the dist tree; each
/// must fail with one line on stderr that contains `says`, and copy nothing.
fn refuses(build: &Build, spoil: impl Fn(&Path), says: &[&str]) {
    let Some(busybox) = busybox() else {
        return;
    };
    for (page, stage) in recipes(build) {
        let image = Image::new(&busybox, &stage.dist);
        spoil(&image.dist);
        let out = image.run(&stage.run, &build.env(&stage));
        let stderr = String::from_utf8_lossy(&out.stderr);
        let what = format!("{}: {}", page.display(), build.what);
        assert!(!out.status.success(), "{what}: the recipe succeeded");
        assert_eq!(
            stderr.lines().count(),
            1,
            "{what}: not one line on stderr: {stderr:?}"
        );
        assert!(stderr.starts_with("resin-lock: "), "{what}: {stderr}");
        for word in says {
            assert!(
                stderr.contains(word),
                "{what}: {stderr:?} does not say {word:?}"
            );
        }
        assert!(
            !image.file(&stage.output).exists(),
            "{what}: {} was made",
            stage.output
        );
    }
}

const X86_64: &str = TARGETS[0];
const AARCH64: &str = TARGETS[1];
const ARMV7: &str = TARGETS[2];

// ---- docker buildx build --platform ...: balena's placeholder stays as written ----

#[test]
fn buildx_linux_amd64_picks_x86_64() {
    let build = Build {
        what: "buildx --platform linux/amd64",
        balena_arch: None,
        build_args: &[("TARGETARCH", "amd64"), ("TARGETVARIANT", "")],
    };
    picks(&build, X86_64);
}

#[test]
fn buildx_linux_arm64_picks_aarch64() {
    let build = Build {
        what: "buildx --platform linux/arm64",
        balena_arch: None,
        build_args: &[("TARGETARCH", "arm64"), ("TARGETVARIANT", "")],
    };
    picks(&build, AARCH64);
}

#[test]
fn buildx_linux_arm_v7_picks_armv7() {
    let build = Build {
        what: "buildx --platform linux/arm/v7",
        balena_arch: None,
        build_args: &[("TARGETARCH", "arm"), ("TARGETVARIANT", "v7")],
    };
    picks(&build, ARMV7);
}

// ---- balena: %%BALENA_ARCH%% is the device type's architecture ----

#[test]
fn balena_amd64_picks_x86_64() {
    let build = Build {
        what: "balena, BALENA_ARCH amd64",
        balena_arch: Some("amd64"),
        build_args: &[],
    };
    picks(&build, X86_64);
}

#[test]
fn balena_aarch64_picks_aarch64() {
    let build = Build {
        what: "balena, BALENA_ARCH aarch64",
        balena_arch: Some("aarch64"),
        build_args: &[],
    };
    picks(&build, AARCH64);
}

#[test]
fn balena_armv7hf_picks_armv7() {
    let build = Build {
        what: "balena, BALENA_ARCH armv7hf",
        balena_arch: Some("armv7hf"),
        build_args: &[],
    };
    picks(&build, ARMV7);
}

/// A balena build on a builder of another architecture (an emulated build
/// on an x86_64 machine): the device type's architecture wins.
#[test]
fn balena_arch_wins_over_the_builders_targetarch() {
    let build = Build {
        what: "balena, BALENA_ARCH armv7hf, on an amd64 builder",
        balena_arch: Some("armv7hf"),
        build_args: &[("TARGETARCH", "amd64"), ("TARGETVARIANT", "")],
    };
    picks(&build, ARMV7);
}

// ---- what must fail, in one line ----

#[test]
fn buildx_arm_v6_has_no_binary() {
    let build = Build {
        what: "buildx --platform linux/arm/v6",
        balena_arch: None,
        build_args: &[("TARGETARCH", "arm"), ("TARGETVARIANT", "v6")],
    };
    refuses(&build, |_| {}, &["no static binary", "'armv6'"]);
}

#[test]
fn balena_rpi_has_no_binary() {
    let build = Build {
        what: "balena, BALENA_ARCH rpi (ARMv6)",
        balena_arch: Some("rpi"),
        build_args: &[],
    };
    refuses(&build, |_| {}, &["no static binary", "'rpi'"]);
}

#[test]
fn a_build_that_names_no_architecture_says_so() {
    let build = Build {
        what: "docker build without buildx (no TARGETARCH)",
        balena_arch: None,
        build_args: &[],
    };
    refuses(&build, |_| {}, &["no static binary", "TARGETARCH"]);
}

#[test]
fn a_tampered_binary_fails_the_sum() {
    let build = Build {
        what: "buildx --platform linux/arm64, binary changed after SHA256SUMS",
        balena_arch: None,
        build_args: &[("TARGETARCH", "arm64"), ("TARGETVARIANT", "")],
    };
    let spoil = |dist: &Path| {
        fs::write(dist.join(AARCH64).join("resin-lock"), "something else\n").unwrap();
    };
    refuses(&build, spoil, &["does not match", AARCH64]);
}

#[test]
fn a_binary_left_out_of_the_copy_is_named() {
    let build = Build {
        what: "balena, BALENA_ARCH aarch64, its binary not copied",
        balena_arch: Some("aarch64"),
        build_args: &[],
    };
    let spoil = |dist: &Path| fs::remove_dir_all(dist.join(AARCH64)).unwrap();
    refuses(&build, spoil, &[AARCH64]);
}

#[test]
fn a_binary_without_its_line_in_sha256sums_is_refused() {
    let build = Build {
        what: "balena, BALENA_ARCH amd64, no line in SHA256SUMS",
        balena_arch: Some("amd64"),
        build_args: &[],
    };
    let spoil = |dist: &Path| {
        let sums = fs::read_to_string(dist.join("SHA256SUMS")).unwrap();
        let kept: String = sums
            .lines()
            .filter(|l| !l.contains(X86_64))
            .map(|l| format!("{l}\n"))
            .collect();
        fs::write(dist.join("SHA256SUMS"), kept).unwrap();
    };
    refuses(&build, spoil, &[X86_64, "SHA256SUMS"]);
}

/// The parser the tests rely on joins a RUN as Docker does.
#[test]
fn continuation_lines_join_as_docker_joins_them() {
    let dockerfile = "FROM busybox AS a\nRUN one \\\n  # a comment\n\n    two\nCOPY x /y\n";
    assert_eq!(
        instructions(dockerfile),
        ["FROM busybox AS a", "RUN one     two", "COPY x /y"]
    );
}
