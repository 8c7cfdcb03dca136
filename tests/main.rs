//! Integration tests: one binary (autotests = false), one module per area.

mod common;
mod lock;
mod ship;
