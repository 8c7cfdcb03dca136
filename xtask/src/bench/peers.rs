//! The peers resin-lock is measured against, found on PATH (or, for the npm
//! package, in the test fixtures). Peers are never installed here: a missing
//! one is named once, with the package it comes from, and its rows are
//! skipped.

use std::fs;
use std::path::{Path, PathBuf};

/// A peer program (or package) and where it comes from.
pub(super) struct Peer {
    pub(super) name: &'static str,
    pub(super) package: &'static str,
    pub(super) path: Option<PathBuf>,
}

impl Peer {
    /// A program looked up on PATH.
    fn on_path(name: &'static str, package: &'static str) -> Peer {
        Peer {
            name,
            package,
            path: in_path(name),
        }
    }
}

pub(super) struct Peers {
    pub(super) flock: Peer,
    pub(super) lockfile: Peer,
    pub(super) dotlockfile: Peer,
    pub(super) node: Peer,
    pub(super) npm_lockfile: Peer,
    pub(super) time: Peer,
    pub(super) tini: Peer,
    pub(super) tini_static: Peer,
    pub(super) dumb_init: Peer,
}

impl Peers {
    pub(super) fn find(root: &Path) -> Peers {
        let npm = root.join("tests/fixtures/npm/node_modules/lockfile/lockfile.js");
        Peers {
            flock: Peer::on_path("flock", "util-linux"),
            lockfile: Peer::on_path("lockfile", "procmail"),
            dotlockfile: Peer::on_path("dotlockfile", "liblockfile-bin"),
            node: Peer::on_path("node", "nodejs"),
            npm_lockfile: Peer {
                name: "npm lockfile",
                package: "`npm ci --prefix tests/fixtures/npm`",
                path: npm.is_file().then_some(npm),
            },
            time: Peer {
                name: "/usr/bin/time",
                package: "time",
                path: Some(PathBuf::from("/usr/bin/time")).filter(|p| p.is_file()),
            },
            tini: Peer::on_path("tini", "tini"),
            tini_static: Peer::on_path("tini-static", "tini"),
            dumb_init: Peer::on_path("dumb-init", "dumb-init"),
        }
    }

    fn all(&self) -> [&Peer; 9] {
        [
            &self.flock,
            &self.lockfile,
            &self.dotlockfile,
            &self.node,
            &self.npm_lockfile,
            &self.time,
            &self.tini,
            &self.tini_static,
            &self.dumb_init,
        ]
    }

    /// Node together with the npm package, or what is missing.
    pub(super) fn npm(&self) -> Option<&Path> {
        self.npm_lockfile.path.as_ref()?;
        self.node.path.as_deref()
    }

    /// One line per peer: where it is, or that it is missing and why.
    pub(super) fn report(&self) {
        for peer in self.all() {
            match &peer.path {
                Some(path) => eprintln!("peer {:<14} {}", peer.name, path.display()),
                None => eprintln!("peer {:<14} MISSING (from {})", peer.name, peer.package),
            }
        }
        let missing: Vec<String> = self
            .all()
            .iter()
            .filter(|p| p.path.is_none())
            .map(|p| format!("{} (from {})", p.name, p.package))
            .collect();
        if !missing.is_empty() {
            eprintln!(
                "missing peers, whose rows are skipped (this task installs nothing): {}",
                missing.join(", ")
            );
        }
    }
}

/// The first executable `name` on PATH.
pub(super) fn in_path(name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|file| {
            fs::metadata(file).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

pub(super) fn required(name: &str) -> Result<PathBuf, String> {
    in_path(name).ok_or_else(|| format!("`{name}` is not on PATH"))
}
