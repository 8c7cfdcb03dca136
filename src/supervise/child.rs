//! CMD as `run` sees it: where its signals go (CMD, or its process group
//! with `-g`) and whether it was given the terminal.

use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;

/// Where forwarded signals go: CMD, or CMD's process group (`-g`).
#[derive(Debug, Clone, Copy)]
pub(super) struct Child {
    pub(super) pid: Pid,
    pub(super) group: bool,
    /// CMD's group was given the terminal (stdin) and gives it back.
    pub(super) terminal: bool,
}

impl Child {
    pub(super) fn signal(&self, sig: Signal) -> nix::Result<()> {
        if self.group {
            killpg(self.pid, sig)
        } else {
            kill(self.pid, sig)
        }
    }
}
