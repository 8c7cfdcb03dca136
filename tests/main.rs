//! Integration tests: one binary (autotests = false), one module per area.

mod cli;
mod common;
mod fleet;
mod fleet_host;
mod hold;
mod layers;
mod locate;
mod lock;
mod on_lost;
mod owners;
mod props;
mod run;
mod shared;
mod ship;
mod supervisor;
mod torture;
mod trust;
mod voice;
