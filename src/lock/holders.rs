//! Who holds a resin-lock lock: its one record, or for a shared lock every
//! holder listed in the file that still has it open.

use std::fs::File;

use serde::Serialize;

use super::dir::Ident;
pub(crate) use super::list::{holds, read_holders};
use super::record::{Mode, Record};

/// One live holder, as `status --json` lists it.
#[derive(Debug, Clone, Serialize)]
pub struct Holder {
    pub pid: i32,
    pub owner: i32,
    pub mode: Mode,
    pub shared: bool,
    pub reason: Option<String>,
    pub since: String,
    /// A window holder's windows, whether one is open, the next change.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub window: Option<super::window::View>,
}

impl Holder {
    pub fn of(record: &Record) -> Holder {
        Holder {
            pid: record.pid,
            owner: record.owner,
            mode: record.mode,
            shared: record.shared,
            reason: record.reason.clone(),
            since: record.start.clone(),
            window: super::window::View::of(record),
        }
    }
}

/// The live holders of a held resin-lock lock: its one record, or for a
/// shared lock every listed holder that still holds it.
pub fn live_holders(file: &File, ident: Ident, record: &Record) -> (Vec<Holder>, Vec<Record>) {
    if !record.shared {
        return (vec![Holder::of(record)], vec![record.clone()]);
    }
    let live: Vec<Record> = read_holders(file)
        .into_iter()
        .filter(|h| holds(h, ident))
        .collect();
    (live.iter().map(Holder::of).collect(), live)
}
