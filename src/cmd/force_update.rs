//! `resin-lock force-update`: ask the supervisor to update now, overriding locks.

use anyhow::Result;

use super::Context;
use crate::exit::{Exit, fail};

pub fn run(_ctx: &Context) -> Result<u8> {
    Err(fail(Exit::Software, "force-update is not implemented yet"))
}
