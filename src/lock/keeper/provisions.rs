//! What passes between `acquire` and the keeper it forks: the provisions
//! the keeper is born with, and the one-byte messages on their socket.

use std::fs::File;
use std::os::fd::OwnedFd;
use std::time::Duration;

use nix::sys::signalfd::SignalFd;
use nix::unistd::Pid;

/// The keeper's answer once it holds the descriptors it was sent.
pub(super) const ACK: &[u8] = b"K";
/// acquire to keeper: the files prepared before the fork are linked, and
/// so held (the fast path).
pub(super) const LINKED: &[u8] = b"L";
/// acquire to keeper: the prepared files were not linked; let go of them
/// and wait for the lock to be sent (the slow path).
pub(super) const SLOW: &[u8] = b"S";
/// acquire to keeper, before the lock on the slow path: it took over a
/// stale lock whose record had device tags on (publish at once).
pub(super) const TOOK_TAGGED: &[u8] = b"T";

/// Device tags for the hold (SPEC 4d): the API, `--tag-after`, the facts
/// the value is made of, and whether warnings are silenced (`-q`).
pub(crate) struct Tags {
    pub(crate) config: crate::supervisor_api::Config,
    pub(crate) after: Duration,
    pub(crate) hold: crate::supervisor_api::tags::Hold,
    pub(crate) quiet: bool,
}

/// What the keeper is born with: made before the fork, so that nothing the
/// keeper needs can fail after `acquire` has returned.
pub(super) struct Provisions {
    pub(super) sock: OwnedFd,
    pub(super) owner_fd: Option<OwnedFd>,
    pub(super) owner: Pid,
    pub(super) release_signal: SignalFd,
    pub(super) null: Option<File>,
    /// `--max-hold`, and whether to say when it runs out (not with -q).
    pub(super) max_hold: Option<(Duration, bool)>,
    /// acquire's stderr when it is a regular file (`2>log`): the
    /// `--max-hold` notice and device tag warnings are appended there, through the same open file
    /// description, so the writer's next line comes after it.
    pub(super) log: Option<File>,
    /// Device tags, when on.
    pub(super) tags: Option<Tags>,
}
