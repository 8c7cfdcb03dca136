//! resin-lock: block balena / resin.io supervisor updates during critical
//! sections. The binary is a thin `main`; everything lives here so that the
//! integration tests and the xtask generators can reach the CLI definition.
//!
//! Data flows one way: `cli` -> `cmd` -> (`locate`, `lock`, `supervise`, `supervisor_api`) -> `sys`.

pub mod cli;
pub mod cmd;
pub mod duration;
pub mod env;
pub mod exit;
pub mod locate;
pub mod lock;
pub mod procfs;
pub mod signals;
pub mod supervise;
pub mod supervisor_api;
pub mod sys;
pub mod ui;
