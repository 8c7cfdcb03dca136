//! The update-lock protocol (SPEC section 2 and 6): a lock file that
//! appears atomically with resin-lock's record, flocked from before it is
//! visible until it is removed; removal only while the path still names our
//! inode; race-free takeover of stale locks; all-or-nothing over several paths.
//!
//! The files depend on each other one way, from the bottom up:
//!
//! - `dir` (the lock's directory, opened once; what is at a name), `record`,
//!   `owner`, `error`: leaves.
//! - `list`: a shared lock file's lines, and whether the holder a line
//!   names still holds it;
//! - `probe`: what is at the path and whether its flock is held;
//!   `holders`: who of a shared lock's listed holders still holds it;
//!   `inspect`: a report of one path, in words.
//! - `held`, `create`, `shared` (joining), `event`, then `take` (one try at
//!   every path), `wait` (until it is taken) and `keeper` (holding it after
//!   `acquire` returns). The take path runs down that list once: `keeper`
//!   calls `take` (its fast path) or `wait`, `wait` calls `take`, and only
//!   `take` calls `create`.
//! - `release`: `release` decides for a path; its exclusive and shared
//!   halves sit beside each other.
//!
//! This file only names them and re-exports what the commands use; nothing
//! below imports from it.

pub(crate) mod create;
pub(crate) mod dir;
pub(crate) mod error;
pub(crate) mod event;
pub(crate) mod held;
pub(crate) mod holders;
pub(crate) mod inspect;
pub(crate) mod keeper;
pub(crate) mod list;
pub(crate) mod owner;
pub(crate) mod probe;
pub mod record;
pub(crate) mod release;
pub(crate) mod shared;
pub(crate) mod take;
pub(crate) mod wait;
pub(crate) mod window;

pub(crate) use dir::{Released, Target};
pub(crate) use error::lock_error;
pub(crate) use event::{Event, Notify};
pub(crate) use held::Held;
pub(crate) use take::release_all;
