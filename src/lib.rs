//! resin-lock: block balena / resin.io supervisor updates during critical
//! sections. The binary is a thin `main`; everything lives here so that the
//! integration tests and the xtask generators can reach the CLI definition.
//!
//! Data flows one way: `cli` -> `cmd` -> (`locate`, `lock`, `supervise`,
//! `supervisor_api`) -> `sys`. The leaf helpers (`env`, `duration`, `exit`,
//! `procfs`, `signals`, `text`) import nothing above them. `ui` (what is
//! said on stderr) is the commands', and `supervise`'s: what `run` says
//! while CMD runs (a forwarded signal, leftover children, `--max-hold`)
//! has to be said at that moment, not returned afterwards.
//!
//! Public only what `main`, the integration tests and the xtask reach (the CLI
//! definition, the exit table, and the parsers the property tests drive);
//! everything else is `pub(crate)`, so the compiler reports dead code.

pub mod cli;
pub mod cmd;
pub mod duration;
pub(crate) mod env;
pub mod exit;
pub mod locate;
pub mod lock;
pub(crate) mod procfs;
pub(crate) mod schedule;
pub(crate) mod signals;
pub(crate) mod supervise;
pub mod supervisor_api;
pub(crate) mod sys;
pub(crate) mod text;
pub(crate) mod ui;
