//! Where the update lock lives: `--path` / `RESIN_LOCK_PATH`, or the
//! location detected from the supervisor and host OS versions (SPEC
//! section 3). `detect` is a pure function of the inputs, so the location
//! table is tested as a table; `gather` is the thin reader of the
//! environment and files, and `resolve` puts the two together under `--root`.
//!
//! Under `--root DIR`, the files detection reads are resolved inside DIR, as
//! a container's root would be: with openat2(RESOLVE_IN_ROOT) where the
//! kernel has it (Linux 5.6), else refusing a symlink in any component below
//! DIR. A `DIR/tmp -> /tmp` then never makes detection look at the host.
//! `os-release` is read only when it is a regular file, opened without
//! blocking (a FIFO there must not hang `status`), and bounded.

mod read;
mod version;

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use semver::Version;
use serde::Serialize;

use crate::lock::Target;
use read::{is_dir, read_small};
pub use version::parse_version;
use version::release;
#[cfg(test)]
use {
    nix::fcntl::OFlag,
    read::{open_without_symlinks, relative},
};

/// The persistent lock of supervisors before v7 (survives reboots).
pub(crate) const PERSISTENT_PATH: &str = "/data/resin-updates.lock";
/// The tmpfs lock of supervisors v4.0.0 to v7.21.x, and the default (SPEC rule 10).
pub(crate) const DEFAULT_PATH: &str = "/tmp/resin/resin-updates.lock";
/// The lock of supervisors >= v7.22.0.
pub(crate) const BALENA_PATH: &str = "/tmp/balena/updates.lock";
/// Its directory, whose presence means a supervisor >= v7.22.0 (SPEC rule 9).
pub(crate) const BALENA_DIR: &str = "/tmp/balena";
/// Read for the host OS version when running on the host itself.
pub(crate) const OS_RELEASE: &str = "/etc/os-release";

/// Environment variables read by detection, in order of precedence.
pub(crate) const APP_LOCK_PATH_VARS: [&str; 2] = ["BALENA_APP_LOCK_PATH", "RESIN_APP_LOCK_PATH"];
pub(crate) const SUPERVISOR_VERSION_VARS: [&str; 2] =
    ["BALENA_SUPERVISOR_VERSION", "RESIN_SUPERVISOR_VERSION"];
pub(crate) const HOST_OS_VERSION_VARS: [&str; 2] =
    ["BALENA_HOST_OS_VERSION", "RESIN_HOST_OS_VERSION"];
/// The supervisor API's address, which the supervisor gives services with
/// the API label: a sign of a supervisor, not a detection input.
pub(crate) const SUPERVISOR_ADDRESS_VARS: [&str; 2] =
    ["BALENA_SUPERVISOR_ADDRESS", "RESIN_SUPERVISOR_ADDRESS"];

/// `os-release` `ID`s of the hosts whose version matters.
const HOST_OS_IDS: [&str; 2] = ["balena-os", "resin-os"];

/// A value and where it came from: an environment variable or a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sourced<T> {
    pub value: T,
    pub source: String,
}

/// Everything detection looks at, read once by `gather`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Inputs {
    /// `BALENA_APP_LOCK_PATH`, else `RESIN_APP_LOCK_PATH`, as given (not under the root).
    pub app_lock_path: Option<Sourced<PathBuf>>,
    /// The supervisor version as given (`7.22.0`, `v6.1.3`, …).
    pub supervisor_version: Option<Sourced<String>>,
    /// The host OS version as given: a PRETTY_NAME such as `Resin OS 1.24.0`.
    pub os_version: Option<Sourced<String>>,
    /// Whether `ROOT/tmp/balena` is a directory.
    pub tmp_balena_is_dir: bool,
}

/// How the paths were chosen, as `status` reports it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Detection {
    /// The rule of the location table that chose the paths; null for `--path`.
    pub rule: Option<u8>,
    /// The supervisor version as understood; null when unknown.
    pub(crate) supervisor_version: Option<String>,
    /// The variable the supervisor version was read from (also when it was
    /// not a version); null when none is set.
    pub(crate) supervisor_version_source: Option<String>,
    pub(crate) os_version: Option<String>,
    /// A variable, or the os-release file that was read.
    pub(crate) os_version_source: Option<String>,
    pub(crate) os_is_1x: bool,
    pub(crate) root: String,
    /// The supervisor version exactly as read.
    pub(crate) supervisor_version_raw: Option<String>,
    /// The host OS version exactly as read (a PRETTY_NAME).
    pub(crate) os_version_raw: Option<String>,
    /// The variable that named the lock path (rule 1).
    pub(crate) app_lock_path_source: Option<String>,
    /// Whether `ROOT/tmp/balena` is a directory; null for `--path`.
    pub(crate) tmp_balena_is_dir: Option<bool>,
    /// Whether anything says a supervisor runs here (`supervisor_evidence`);
    /// null for `--path`.
    pub(crate) supervisor_detected: Option<bool>,
    /// What says so, first found: a supervisor variable, the API's address,
    /// a balenaOS host's os-release, `/tmp/balena`, or a lock directory
    /// mounted over its parent. Never a directory resin-lock can have made.
    pub(crate) supervisor_evidence: Option<String>,
    /// Whether a supervisor was detected and the directory of a detected
    /// lock path is the one it provides: a mount point (its bind mount);
    /// under a `--root`, where another namespace's mounts cannot be seen,
    /// a directory. When not (a service that mounts its own /tmp over the
    /// supervisor's, no supervisor at all), nothing checks the lock. Null
    /// for `--path`.
    pub(crate) lock_dir_found: Option<bool>,
    /// The detected lock directories, under the root, when none is found.
    #[serde(skip)]
    pub(crate) missing_lock_dirs: Vec<PathBuf>,
    /// The choice in words.
    #[serde(skip)]
    pub explanation: String,
}

/// The outcome of the location table: absolute paths, not yet under the root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Detected {
    pub paths: Vec<PathBuf>,
    /// Everything but `root`, which `resolve` fills in.
    pub detection: Detection,
}

/// The lock paths to use, in order, and how they were chosen.
#[derive(Debug, Clone)]
pub(crate) struct Locations {
    pub(crate) targets: Vec<Target>,
    pub(crate) detection: Detection,
}

/// Resolve the lock paths: explicit ones win, as given; otherwise the
/// detected ones, under `root`, with parents that may be created.
pub(crate) fn resolve(explicit: &[PathBuf], root: Option<&Path>) -> Locations {
    let root = root.unwrap_or(Path::new("/"));
    if !explicit.is_empty() {
        return Locations {
            targets: explicit
                .iter()
                .map(|path| Target {
                    path: path.clone(),
                    create_parent: false,
                    root: None,
                })
                .collect(),
            detection: Detection {
                root: root.display().to_string(),
                explanation: "given with --path or RESIN_LOCK_PATH".to_owned(),
                ..Detection::default()
            },
        };
    }
    let inputs = gather(root);
    let Detected {
        paths,
        mut detection,
    } = detect(&inputs);
    detection.root = root.display().to_string();
    if root != Path::new("/") {
        detection.explanation = format!(
            "{} (under the root {})",
            detection.explanation, detection.root
        );
    }
    let dirs: Vec<PathBuf> = paths
        .iter()
        .filter_map(|path| path.parent().map(Path::to_owned))
        .collect();
    let api = crate::env::first_set(SUPERVISOR_ADDRESS_VARS, |name| std::env::var_os(name));
    let evidence = supervisor_evidence(&inputs, api.map(|(name, _)| name), root, &dirs);
    let found = evidence.is_some() && dirs.iter().any(|dir| provided(root, dir));
    detection.supervisor_detected = Some(evidence.is_some());
    detection.supervisor_evidence = evidence;
    detection.lock_dir_found = Some(found);
    if !found {
        detection.missing_lock_dirs = dirs.iter().map(|dir| under_root(root, dir)).collect();
    }
    Locations {
        targets: paths
            .iter()
            .map(|path| Target {
                path: under_root(root, path),
                create_parent: true,
                root: (root != Path::new("/")).then(|| root.to_owned()),
            })
            .collect(),
        detection,
    }
}

/// What says a supervisor runs here, first found, in words; None when
/// nothing does. A lock directory resin-lock made itself (it makes a
/// detected one that is missing) is no evidence: only a mount over it is
/// (the supervisor bind-mounts it), and `/tmp/balena`, which resin-lock
/// makes only when a supervisor variable names it.
fn supervisor_evidence(
    inputs: &Inputs,
    api: Option<&str>,
    root: &Path,
    dirs: &[PathBuf],
) -> Option<String> {
    let source = |found: Option<&Sourced<String>>| found.map(|s| s.source.clone());
    let app_lock_path = inputs.app_lock_path.as_ref().map(|s| s.source.clone());
    app_lock_path
        .or_else(|| source(inputs.supervisor_version.as_ref()))
        // A variable, or the os-release of a balenaOS host.
        .or_else(|| source(inputs.os_version.as_ref()))
        .or_else(|| api.map(str::to_owned))
        .or_else(|| {
            provided(root, Path::new(BALENA_DIR)).then(|| {
                let dir = under_root(root, Path::new(BALENA_DIR));
                format!("{} is a directory", dir.display())
            })
        })
        .or_else(|| {
            let dir = dirs
                .iter()
                .find(|dir| root == Path::new("/") && provided(root, dir))?;
            Some(format!("{} is a mount point", dir.display()))
        })
}

/// Whether `dir` (absolute) under `root` is a directory the supervisor
/// provides: under the real root, a mount point (the supervisor's bind
/// mount; resin-lock's own mkdir never makes one); under another root,
/// whose mounts (another mount namespace's) cannot be seen from here, a
/// directory.
fn provided(root: &Path, dir: &Path) -> bool {
    if root != Path::new("/") {
        return is_dir(root, dir);
    }
    read::is_mount_point(dir)
}

/// `path` (absolute) relative to `root`. A relative path counts from the root.
pub(crate) fn under_root(root: &Path, path: &Path) -> PathBuf {
    root.join(path.strip_prefix("/").unwrap_or(path))
}

/// Read the detection inputs from the process environment and from `root`.
pub(crate) fn gather(root: &Path) -> Inputs {
    gather_from(root, |name| std::env::var_os(name))
}

/// `gather` with the environment given as a function (for tests). A variable
/// set to the empty string counts as unset. `ROOT/etc/os-release` is read
/// only when no host OS variable is set.
pub(crate) fn gather_from(root: &Path, env: impl Fn(&str) -> Option<OsString>) -> Inputs {
    let first = |names: [&'static str; 2]| {
        crate::env::first_set(names, &env).map(|(name, value)| Sourced {
            value,
            source: name.to_owned(),
        })
    };
    let text = |found: Sourced<OsString>| Sourced {
        value: found.value.to_string_lossy().into_owned(),
        source: found.source,
    };
    let os_version = first(HOST_OS_VERSION_VARS).map(text).or_else(|| {
        let pretty = os_release_pretty_name(&read_small(root, Path::new(OS_RELEASE))?)?;
        Some(Sourced {
            value: pretty,
            source: under_root(root, Path::new(OS_RELEASE))
                .display()
                .to_string(),
        })
    });
    Inputs {
        app_lock_path: first(APP_LOCK_PATH_VARS).map(|found| Sourced {
            value: PathBuf::from(found.value),
            source: found.source,
        }),
        supervisor_version: first(SUPERVISOR_VERSION_VARS).map(text),
        os_version,
        tmp_balena_is_dir: is_dir(root, Path::new(BALENA_DIR)),
    }
}

/// The `PRETTY_NAME` of an os-release file whose `ID` is balenaOS's or
/// resinOS's; None for any other OS (a container's own os-release).
pub fn os_release_pretty_name(text: &str) -> Option<String> {
    let mut id = None;
    let mut pretty = None;
    for line in text.lines() {
        let Some((key, value)) = line.trim().split_once('=') else {
            continue;
        };
        match key.trim() {
            "ID" => id = Some(unquote(value)),
            "PRETTY_NAME" => pretty = Some(unquote(value)),
            _ => {}
        }
    }
    HOST_OS_IDS.contains(&id?.as_str()).then_some(pretty?)
}

/// An os-release value: optionally in single or double quotes, with
/// backslash escapes inside double quotes (os-release(5)).
fn unquote(value: &str) -> String {
    let value = value.trim();
    if let Some(inner) = value.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')) {
        return inner.to_owned();
    }
    let Some(inner) = value.strip_prefix('"').and_then(|v| v.strip_suffix('"')) else {
        return value.to_owned();
    };
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        out.push(if c == '\\' {
            chars.next().unwrap_or(c)
        } else {
            c
        });
    }
    out
}

/// The location table (SPEC section 3): which rule applies to `inputs`, the
/// lock paths in order (absolute, not under the root), and why in words.
pub fn detect(inputs: &Inputs) -> Detected {
    let supervisor = inputs
        .supervisor_version
        .as_ref()
        .and_then(|s| parse_version(&s.value));
    let os = inputs
        .os_version
        .as_ref()
        .and_then(|s| parse_version(&s.value));
    let os_is_1x = os.as_ref().is_some_and(|v| v.major == 1);
    let os_is_2_or_later = os.as_ref().is_some_and(|v| v.major >= 2);

    let sup = supervisor_phrase(inputs, supervisor.as_ref());
    let on_os = os_phrase(inputs, os.as_ref());
    // "supervisor 6.1.3 from X on Resin OS 1.24.0 from Y" / "…, host OS unknown"
    let sup_os = if os.is_some() {
        format!("{sup} {on_os}")
    } else {
        format!("{sup}, {on_os}")
    };
    const BOTH: &[&str] = &[PERSISTENT_PATH, DEFAULT_PATH];
    let (rule, paths, why): (u8, Vec<PathBuf>, String) =
        match (&inputs.app_lock_path, supervisor.as_ref().map(release)) {
            (Some(app), _) => (
                1,
                vec![app.value.clone()],
                format!(
                    "{} is set (supervisors >= v7 set it): rule 1, the path it names",
                    app.source
                ),
            ),
            (None, Some(v)) if v < Version::new(4, 0, 0) => (
                2,
                to_paths(&[PERSISTENT_PATH]),
                format!("{sup}, before v4.0.0: rule 2, the persistent lock in /data"),
            ),
            (None, Some(v)) if v < Version::new(7, 0, 0) => {
                if os_is_1x {
                    (
                        3,
                        to_paths(BOTH),
                        format!("{sup_os}: rule 3, the persistent and the tmpfs lock"),
                    )
                } else if os_is_2_or_later {
                    (
                        5,
                        to_paths(&[DEFAULT_PATH]),
                        format!("{sup_os}: rule 5, the tmpfs lock in /tmp/resin"),
                    )
                } else {
                    (
                        4,
                        to_paths(BOTH),
                        format!(
                            "{sup_os}: rule 4, the persistent and the tmpfs lock \
                         (this supervisor checks the persistent one only on host OS 1.x)"
                        ),
                    )
                }
            }
            (None, Some(v)) if v < Version::new(7, 22, 0) => (
                6,
                to_paths(&[DEFAULT_PATH]),
                format!("{sup}: rule 6, the tmpfs lock in /tmp/resin"),
            ),
            (None, Some(_)) => (
                7,
                to_paths(&[BALENA_PATH]),
                format!("{sup}: rule 7, the lock in /tmp/balena"),
            ),
            (None, None) if os_is_1x => (
                8,
                to_paths(BOTH),
                format!("{sup_os}: rule 8, the persistent and the tmpfs lock"),
            ),
            (None, None) if inputs.tmp_balena_is_dir => (
                9,
                to_paths(&[BALENA_PATH]),
                format!("{sup_os}, /tmp/balena is a directory: rule 9, the lock in /tmp/balena"),
            ),
            (None, None) => (
                10,
                to_paths(&[DEFAULT_PATH]),
                format!(
                    "{sup_os}, no /tmp/balena directory: rule 10, the tmpfs lock in /tmp/resin"
                ),
            ),
        };
    Detected {
        paths,
        detection: Detection {
            rule: Some(rule),
            supervisor_version: supervisor.as_ref().map(Version::to_string),
            supervisor_version_source: inputs.supervisor_version.as_ref().map(|s| s.source.clone()),
            os_version: os.as_ref().map(Version::to_string),
            os_version_source: inputs.os_version.as_ref().map(|s| s.source.clone()),
            os_is_1x,
            root: String::new(),
            supervisor_version_raw: inputs.supervisor_version.as_ref().map(|s| s.value.clone()),
            os_version_raw: inputs.os_version.as_ref().map(|s| s.value.clone()),
            app_lock_path_source: inputs.app_lock_path.as_ref().map(|s| s.source.clone()),
            tmp_balena_is_dir: Some(inputs.tmp_balena_is_dir),
            // What exists under the root: `resolve` looks.
            supervisor_detected: None,
            supervisor_evidence: None,
            lock_dir_found: None,
            missing_lock_dirs: Vec::new(),
            explanation: why,
        },
    }
}

fn to_paths(list: &[&str]) -> Vec<PathBuf> {
    list.iter().map(PathBuf::from).collect()
}

/// "supervisor 6.1.3 from RESIN_SUPERVISOR_VERSION", or why it is unknown.
fn supervisor_phrase(inputs: &Inputs, parsed: Option<&Version>) -> String {
    match (&inputs.supervisor_version, parsed) {
        (Some(given), Some(version)) => format!("supervisor {version} from {}", given.source),
        (Some(given), None) => format!(
            "supervisor version unknown ({}={:?} is not a version)",
            given.source, given.value
        ),
        (None, _) => "supervisor version unknown (not set)".to_owned(),
    }
}

/// "on Resin OS 1.24.0 from RESIN_HOST_OS_VERSION", or why it is unknown.
fn os_phrase(inputs: &Inputs, parsed: Option<&Version>) -> String {
    match (&inputs.os_version, parsed) {
        (Some(given), Some(_)) => {
            let name = given.value.trim();
            let bare = name.strip_prefix(['v', 'V']).unwrap_or(name);
            if bare.starts_with(|c: char| c.is_ascii_digit()) {
                format!("on host OS {name} from {}", given.source)
            } else {
                format!("on {name} from {}", given.source)
            }
        }
        (Some(given), None) => format!(
            "host OS unknown ({} {:?} has no version)",
            given.source, given.value
        ),
        (None, _) => "host OS unknown".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::fcntl::open;
    use nix::sys::stat::Mode;

    fn sourced(source: &str, value: &str) -> Option<Sourced<String>> {
        Some(Sourced {
            value: value.to_owned(),
            source: source.to_owned(),
        })
    }

    /// Inputs from the environment variables' values (None: unset).
    fn inputs(app: Option<&str>, sup: Option<&str>, os: Option<&str>, balena_dir: bool) -> Inputs {
        Inputs {
            app_lock_path: app.map(|path| Sourced {
                value: PathBuf::from(path),
                source: "BALENA_APP_LOCK_PATH".to_owned(),
            }),
            supervisor_version: sup.and_then(|v| sourced("BALENA_SUPERVISOR_VERSION", v)),
            os_version: os.and_then(|v| sourced("BALENA_HOST_OS_VERSION", v)),
            tmp_balena_is_dir: balena_dir,
        }
    }

    const P: &str = PERSISTENT_PATH;
    const T: &str = DEFAULT_PATH;
    const B: &str = BALENA_PATH;
    const APP: &str = "/tmp/balena-supervisor/services/1/main/updates.lock";

    /// App lock path, supervisor version, host OS version, whether
    /// /tmp/balena is a directory => rule, paths.
    type Case = (
        Option<&'static str>,
        Option<&'static str>,
        Option<&'static str>,
        bool,
        u8,
        &'static [&'static str],
    );

    #[test]
    fn the_location_table() {
        #[rustfmt::skip]
        let cases: &[Case] = &[
            // 1: the app lock path wins over every version and the directory.
            (Some(APP), None, None, false, 1, &[APP]),
            (Some(APP), Some("6.1.3"), Some("Resin OS 1.24.0"), true, 1, &[APP]),
            (Some("/tmp/balena/updates.lock"), Some("3.0.0"), None, false, 1, &[B]),
            // 2: before v4, whatever the host OS.
            (None, Some("1.2.0"), None, false, 2, &[P]),
            (None, Some("v3.99.99"), Some("Resin OS 2.0.0+rev3"), true, 2, &[P]),
            // 3: v4 to v6 on host OS 1.x.
            (None, Some("4.0.0"), Some("Resin OS 1.24.0"), false, 3, &[P, T]),
            (None, Some("v6.1.3"), Some("Resin OS 1.0.0-beta"), true, 3, &[P, T]),
            (None, Some("6.99.0"), Some("1.26"), false, 3, &[P, T]),
            // 4: v4 to v6, host OS unknown (unset, garbage, or neither 1.x nor 2+).
            (None, Some("4.0.0"), None, false, 4, &[P, T]),
            (None, Some("4.0.0-beta.1"), None, false, 4, &[P, T]),
            (None, Some("6.6.0_logstream"), Some("Resin OS"), true, 4, &[P, T]),
            (None, Some("5.0"), Some("Resin OS 0.9.1"), false, 4, &[P, T]),
            // 5: v4 to v6 on host OS 2 or later.
            (None, Some("4.0.0"), Some("Resin OS 2.0.0+rev3"), false, 5, &[T]),
            (None, Some("6.99.0"), Some("balenaOS 2.88.4"), true, 5, &[T]),
            (None, Some("6.1.3"), Some("Resin OS 2.13.6+rev1"), false, 5, &[T]),
            // 6: v7.0.0 to v7.21.x.
            (None, Some("7.0.0"), Some("Resin OS 1.24.0"), false, 6, &[T]),
            (None, Some("v7"), None, true, 6, &[T]),
            (None, Some("7.21.9"), Some("balenaOS 2.88.4"), false, 6, &[T]),
            // 7: v7.22.0 and later.
            (None, Some("7.22.0"), None, false, 7, &[B]),
            (None, Some("7.22.0-beta"), None, false, 7, &[B]),
            (None, Some("v12.11.0"), Some("Resin OS 1.24.0"), false, 7, &[B]),
            (None, Some("17.0.1"), Some("balenaOS 6.5.0"), false, 7, &[B]),
            // 8: supervisor version unknown, host OS 1.x.
            (None, None, Some("Resin OS 1.24.0"), false, 8, &[P, T]),
            (None, Some("garbage"), Some("Resin OS 1.24.0"), true, 8, &[P, T]),
            (None, Some("7.x"), Some("v1.8"), false, 8, &[P, T]),
            // 9: otherwise, /tmp/balena is a directory.
            (None, None, None, true, 9, &[B]),
            (None, Some("latest"), Some("balenaOS 2.88.4"), true, 9, &[B]),
            (None, None, Some("no version here"), true, 9, &[B]),
            // 10: otherwise.
            (None, None, None, false, 10, &[T]),
            (None, Some(""), Some("balenaOS 2.88.4"), false, 10, &[T]),
            (None, Some("99999999999999999999999.0.0"), None, false, 10, &[T]),
        ];
        for &(app, sup, os, dir, rule, want) in cases {
            let got = detect(&inputs(app, sup, os, dir));
            let case = format!("app={app:?} sup={sup:?} os={os:?} /tmp/balena={dir}");
            assert_eq!(
                got.detection.rule,
                Some(rule),
                "{case}: {}",
                got.detection.explanation
            );
            assert_eq!(got.paths, to_paths(want), "{case}");
            assert!(
                got.detection
                    .explanation
                    .contains(&format!("rule {rule}, ")),
                "{case}: {}",
                got.detection.explanation
            );
        }
    }

    #[test]
    fn version_boundaries() {
        #[rustfmt::skip]
        let cases = [
            ("0.0.1", 2), ("3.99.99", 2), ("4.0.0", 5), ("4", 5), ("6.99.0", 5), ("6.99.99", 5),
            ("7.0.0", 6), ("7.0.0-rc1", 6), ("7.21.9", 6), ("7.22.0", 7), ("7.22", 7), ("8.0.0", 7),
        ];
        for (version, rule) in cases {
            let got = detect(&inputs(None, Some(version), Some("balenaOS 2.88.4"), false));
            assert_eq!(got.detection.rule, Some(rule), "{version}");
        }
    }

    #[test]
    fn detection_reports_inputs_and_understanding() {
        let got = detect(&inputs(
            None,
            Some("v6.1.3"),
            Some("Resin OS 1.24.0"),
            false,
        ));
        let d = got.detection;
        assert_eq!(d.supervisor_version.as_deref(), Some("6.1.3"));
        assert_eq!(d.supervisor_version_raw.as_deref(), Some("v6.1.3"));
        assert_eq!(
            d.supervisor_version_source.as_deref(),
            Some("BALENA_SUPERVISOR_VERSION")
        );
        assert_eq!(d.os_version.as_deref(), Some("1.24.0"));
        assert_eq!(d.os_version_raw.as_deref(), Some("Resin OS 1.24.0"));
        assert!(d.os_is_1x);
        assert_eq!(
            d.explanation,
            "supervisor 6.1.3 from BALENA_SUPERVISOR_VERSION on Resin OS 1.24.0 from \
             BALENA_HOST_OS_VERSION: rule 3, the persistent and the tmpfs lock"
        );
    }

    #[test]
    fn garbage_versions_are_reported_as_unknown() {
        let got = detect(&inputs(None, Some("garbage"), Some("Resin OS x.y"), false));
        let d = got.detection;
        assert_eq!(d.rule, Some(10));
        assert_eq!(d.supervisor_version, None);
        assert_eq!(d.supervisor_version_raw.as_deref(), Some("garbage"));
        assert_eq!(d.os_version, None);
        assert!(!d.os_is_1x);
        assert!(
            d.explanation
                .contains("BALENA_SUPERVISOR_VERSION=\"garbage\" is not a version"),
            "{}",
            d.explanation
        );
        assert!(
            d.explanation.contains("host OS unknown"),
            "{}",
            d.explanation
        );
    }

    #[test]
    fn parses_real_version_strings() {
        let cases = [
            ("v6.1.3", Some("6.1.3")),
            ("7.22.0", Some("7.22.0")),
            ("7.4.3", Some("7.4.3")),
            ("2.113.18", Some("2.113.18")),
            ("Resin OS 2.0.0+rev3", Some("2.0.0+rev3")),
            ("Resin OS 2.13.6+rev1", Some("2.13.6+rev1")),
            ("balenaOS 2.88.4", Some("2.88.4")),
            ("Resin OS 1.24.0", Some("1.24.0")),
            ("Resin OS 2.0.0-beta.1", Some("2.0.0-beta.1")),
            ("Resin OS 2.0.0.rev1", Some("2.0.0")),
            ("balenaOS 2.38.0+rev1 (prod)", Some("2.38.0+rev1")),
            ("7.22.0-beta", Some("7.22.0-beta")),
            ("v10.0.0-rc.1+build.5", Some("10.0.0-rc.1+build.5")),
            ("1.0.0-rc.01", Some("1.0.0")),
            ("6.6.0_logstream", Some("6.6.0")),
            ("  V7.1.0\n", Some("7.1.0")),
            ("v7", Some("7.0.0")),
            ("2.1", Some("2.1.0")),
            ("2.1+rev2", Some("2.1.0+rev2")),
            ("1.2.3.4", Some("1.2.3")),
            ("", None),
            ("   ", None),
            ("garbage", None),
            ("latest", None),
            ("v", None),
            ("vv7", None),
            ("7.x", None),
            ("2.1.x", None),
            ("7abc", None),
            ("7.", None),
            ("-1.0.0", None),
            ("99999999999999999999999.0.0", None),
            ("Resin OS", None),
            ("balenaOS2.88.4", None),
        ];
        for (text, want) in cases {
            assert_eq!(
                parse_version(text).map(|v| v.to_string()).as_deref(),
                want,
                "{text:?}"
            );
        }
    }

    #[test]
    fn pre_releases_count_as_their_release() {
        let beta = parse_version("7.22.0-beta").unwrap();
        assert!(beta < Version::new(7, 22, 0), "semver's own order");
        assert_eq!(release(&beta), Version::new(7, 22, 0));
    }

    #[test]
    fn reads_the_pretty_name_of_balena_and_resin_hosts_only() {
        let balena = "NAME=\"balenaOS\"\nID=\"balena-os\"\nVERSION_ID=\"2.88.4\"\n\
                      PRETTY_NAME=\"balenaOS 2.88.4\"\n";
        assert_eq!(
            os_release_pretty_name(balena).as_deref(),
            Some("balenaOS 2.88.4")
        );
        let resin = "ID=resin-os\nPRETTY_NAME='Resin OS 1.24.0'\n";
        assert_eq!(
            os_release_pretty_name(resin).as_deref(),
            Some("Resin OS 1.24.0")
        );
        let escaped = "PRETTY_NAME=\"Resin \\\"OS\\\" 2.0.0\"\nID=resin-os\n";
        assert_eq!(
            os_release_pretty_name(escaped).as_deref(),
            Some("Resin \"OS\" 2.0.0")
        );
        let debian = "ID=debian\nPRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\n";
        assert_eq!(os_release_pretty_name(debian), None);
        assert_eq!(os_release_pretty_name("ID=balena-os\n"), None);
        assert_eq!(os_release_pretty_name(""), None);
    }

    fn env_of(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<OsString> {
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name| {
            vars.iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| OsString::from(v))
        }
    }

    #[test]
    fn balena_variables_win_over_resin_ones() {
        let root = tempfile::tempdir().unwrap();
        let got = gather_from(
            root.path(),
            env_of(&[
                ("RESIN_APP_LOCK_PATH", "/tmp/resin/resin-updates.lock"),
                ("BALENA_APP_LOCK_PATH", "/tmp/balena/updates.lock"),
                ("RESIN_SUPERVISOR_VERSION", "6.1.3"),
                ("BALENA_SUPERVISOR_VERSION", "7.22.0"),
                ("RESIN_HOST_OS_VERSION", "Resin OS 1.24.0"),
                ("BALENA_HOST_OS_VERSION", "balenaOS 2.88.4"),
            ]),
        );
        let app = got.app_lock_path.unwrap();
        assert_eq!(
            (app.value.to_str().unwrap(), app.source.as_str()),
            ("/tmp/balena/updates.lock", "BALENA_APP_LOCK_PATH")
        );
        assert_eq!(
            got.supervisor_version,
            sourced("BALENA_SUPERVISOR_VERSION", "7.22.0")
        );
        assert_eq!(
            got.os_version,
            sourced("BALENA_HOST_OS_VERSION", "balenaOS 2.88.4")
        );

        let got = gather_from(
            root.path(),
            env_of(&[
                ("RESIN_SUPERVISOR_VERSION", "6.1.3"),
                ("BALENA_SUPERVISOR_VERSION", ""),
                ("RESIN_HOST_OS_VERSION", "Resin OS 1.24.0"),
            ]),
        );
        assert_eq!(got.app_lock_path, None);
        assert_eq!(
            got.supervisor_version,
            sourced("RESIN_SUPERVISOR_VERSION", "6.1.3"),
            "an empty variable counts as unset"
        );
        assert_eq!(detect(&got).detection.rule, Some(3));
    }

    #[test]
    fn a_set_but_unparsable_balena_variable_still_wins() {
        let root = tempfile::tempdir().unwrap();
        let got = gather_from(
            root.path(),
            env_of(&[
                ("BALENA_SUPERVISOR_VERSION", "garbage"),
                ("RESIN_SUPERVISOR_VERSION", "7.22.0"),
            ]),
        );
        let d = detect(&got).detection;
        assert_eq!(d.rule, Some(10));
        assert_eq!(
            d.supervisor_version_source.as_deref(),
            Some("BALENA_SUPERVISOR_VERSION")
        );
    }

    #[test]
    fn reads_os_release_and_tmp_balena_under_the_root() {
        let root = tempfile::tempdir().unwrap();
        let etc = root.path().join("etc");
        std::fs::create_dir(&etc).unwrap();
        std::fs::write(
            etc.join("os-release"),
            "ID=\"resin-os\"\nPRETTY_NAME=\"Resin OS 1.24.0\"\n",
        )
        .unwrap();
        let got = gather_from(root.path(), env_of(&[]));
        assert_eq!(got.os_version.as_ref().unwrap().value, "Resin OS 1.24.0");
        assert_eq!(
            got.os_version.as_ref().unwrap().source,
            etc.join("os-release").display().to_string()
        );
        assert!(!got.tmp_balena_is_dir);
        assert_eq!(detect(&got).detection.rule, Some(8));

        // A host OS variable wins over the file.
        let got = gather_from(
            root.path(),
            env_of(&[("RESIN_HOST_OS_VERSION", "Resin OS 2.0.0+rev3")]),
        );
        assert_eq!(
            got.os_version,
            sourced("RESIN_HOST_OS_VERSION", "Resin OS 2.0.0+rev3")
        );

        std::fs::create_dir_all(root.path().join("tmp/balena")).unwrap();
        assert!(gather_from(root.path(), env_of(&[])).tmp_balena_is_dir);
    }

    /// A device root with `etc/os-release` (resinOS 1.x) reached through
    /// `link`, a symlink at `etc` to `target`; and another directory
    /// `outside` that holds what an escaping link would find.
    fn linked_root(target: impl Fn(&Path) -> PathBuf) -> (tempfile::TempDir, tempfile::TempDir) {
        let root = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        for base in [root.path(), outside.path()] {
            std::fs::create_dir_all(base.join("real-etc")).unwrap();
            std::fs::write(
                base.join("real-etc/os-release"),
                "ID=resin-os\nPRETTY_NAME=\"Resin OS 1.24.0\"\n",
            )
            .unwrap();
        }
        std::os::unix::fs::symlink(target(outside.path()), root.path().join("etc")).unwrap();
        (root, outside)
    }

    #[test]
    fn symlinks_under_the_root_resolve_inside_it() {
        let os = Path::new(OS_RELEASE);
        // Relative and absolute links inside the root are followed there.
        let (root, _outside) = linked_root(|_| PathBuf::from("real-etc"));
        assert!(read_small(root.path(), os).is_some());
        let (root, _outside) = linked_root(|_| PathBuf::from("/real-etc"));
        assert!(
            read_small(root.path(), os).is_some(),
            "/real-etc is ROOT/real-etc"
        );
        // An absolute link to a directory outside names ROOT/that/dir.
        let (root, outside) = linked_root(|outside| outside.join("real-etc"));
        assert!(outside.path().join("real-etc/os-release").exists());
        assert_eq!(read_small(root.path(), os), None);
        let tmp = root.path().join("tmp");
        std::os::unix::fs::symlink(outside.path(), &tmp).unwrap();
        std::fs::create_dir(outside.path().join("balena")).unwrap();
        assert!(!is_dir(root.path(), Path::new(BALENA_DIR)));
        std::fs::remove_file(&tmp).unwrap();
        std::fs::create_dir_all(tmp.join("balena")).unwrap();
        assert!(is_dir(root.path(), Path::new(BALENA_DIR)));
    }

    #[test]
    fn without_openat2_a_symlink_below_the_root_is_refused() {
        let open = |root: &Path, path: &str| {
            let dir = open(root, OFlag::O_PATH | OFlag::O_DIRECTORY, Mode::empty()).unwrap();
            open_without_symlinks(&dir, &relative(Path::new(path)).unwrap(), OFlag::O_RDONLY)
                .map(|_| ())
                .map_err(|err| err.raw_os_error())
        };
        let (root, _outside) = linked_root(|_| PathBuf::from("real-etc"));
        assert_eq!(open(root.path(), "/real-etc/os-release"), Ok(()));
        assert_eq!(
            open(root.path(), "/etc/os-release"),
            Err(Some(libc::ENOTDIR))
        );
        std::os::unix::fs::symlink("os-release", root.path().join("real-etc/link")).unwrap();
        assert_eq!(open(root.path(), "/real-etc/link"), Err(Some(libc::ELOOP)));
        assert_eq!(
            open(root.path(), "/real-etc/missing"),
            Err(Some(libc::ENOENT))
        );
    }

    #[test]
    fn a_parent_component_is_refused() {
        assert_eq!(
            relative(Path::new("/etc/os-release")).unwrap(),
            Path::new("etc/os-release")
        );
        assert!(relative(Path::new("/tmp/../etc")).is_err());
    }

    #[test]
    fn detected_paths_go_under_the_root_and_explicit_ones_do_not() {
        let root = Path::new("/srv/device");
        assert_eq!(
            under_root(root, Path::new(PERSISTENT_PATH)),
            Path::new("/srv/device/data/resin-updates.lock")
        );
        assert_eq!(
            under_root(Path::new("/"), Path::new(BALENA_PATH)),
            Path::new(BALENA_PATH)
        );
        let explicit = [PathBuf::from("/elsewhere/x.lock")];
        let got = resolve(&explicit, Some(root));
        assert_eq!(
            got.targets,
            [Target {
                path: explicit[0].clone(),
                create_parent: false,
                root: None,
            }]
        );
        assert_eq!(got.detection.rule, None);
        assert_eq!(got.detection.root, "/srv/device");
    }
}
