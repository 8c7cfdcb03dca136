//! Where the update lock lives: `--path` / `RESIN_LOCK_PATH`, or the
//! location detected from the supervisor and host OS versions (SPEC
//! section 3). `detect` is a pure function of the inputs; `gather` is the
//! thin reader of the environment and files.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::lock::Target;

/// How the paths were chosen, as `status` reports it.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Detection {
    /// The rule of the location table that chose the paths; null for `--path`.
    pub rule: Option<u8>,
    pub supervisor_version: Option<String>,
    pub supervisor_version_source: Option<String>,
    pub os_version: Option<String>,
    pub os_version_source: Option<String>,
    pub os_is_1x: bool,
    pub root: String,
    /// The choice in words.
    #[serde(skip)]
    pub explanation: String,
}

/// The lock paths to use, in order, and how they were chosen.
#[derive(Debug, Clone)]
pub struct Locations {
    pub targets: Vec<Target>,
    pub detection: Detection,
}

/// The default when nothing is known (SPEC rule 10).
pub const DEFAULT_PATH: &str = "/tmp/resin/resin-updates.lock";

/// Resolve the lock paths: explicit ones win, otherwise detection under `root`.
pub fn resolve(explicit: &[PathBuf], root: Option<&Path>) -> Locations {
    let root = root.unwrap_or(Path::new("/"));
    if !explicit.is_empty() {
        return Locations {
            targets: explicit
                .iter()
                .map(|path| Target {
                    path: path.clone(),
                    create_parent: false,
                })
                .collect(),
            detection: Detection {
                root: root.display().to_string(),
                explanation: "given with --path or RESIN_LOCK_PATH".to_owned(),
                ..Detection::default()
            },
        };
    }
    Locations {
        targets: vec![Target {
            path: under_root(root, Path::new(DEFAULT_PATH)),
            create_parent: true,
        }],
        detection: Detection {
            rule: Some(10),
            root: root.display().to_string(),
            explanation: "rule 10: nothing known about the supervisor or host OS; the tmpfs lock"
                .to_owned(),
            ..Detection::default()
        },
    }
}

/// `path` (absolute) relative to `root`.
pub fn under_root(root: &Path, path: &Path) -> PathBuf {
    root.join(path.strip_prefix("/").unwrap_or(path))
}
