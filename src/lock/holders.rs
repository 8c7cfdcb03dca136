//! Who holds a resin-lock lock: its one record, or for a shared lock every
//! holder listed in the file that still has it open.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

use serde::Serialize;

use super::dir::Ident;
use super::record::{MAX_LEN, Mode, Record};

/// The records of every holder a shared lock file lists (the creator's
/// first), reading at most `MAX_LEN` bytes.
pub fn read_holders(file: &File) -> Vec<Record> {
    read_list(file)
        .map(|bytes| Record::holders(&bytes))
        .unwrap_or_default()
}

/// A shared lock file's lines, at most `MAX_LEN` bytes of them.
pub fn read_list(file: &File) -> io::Result<Vec<u8>> {
    let mut bytes = vec![0; MAX_LEN];
    let mut len = 0;
    while len < bytes.len() {
        match file.read_at(&mut bytes[len..], len as u64) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) => return Err(err),
        }
    }
    bytes.truncate(len);
    Ok(bytes)
}

/// Whether the holder a record names still holds the file `ident`: its
/// process has it open. A holder we cannot look at (another pid
/// namespace, no permission) counts as holding it.
pub fn holds(record: &Record, ident: Ident) -> bool {
    let ours = crate::procfs::pid_namespace().unwrap_or(0);
    if record.pid_ns != 0 && ours != 0 && record.pid_ns != ours {
        return true;
    }
    let pid = nix::unistd::Pid::from_raw(record.pid);
    match crate::procfs::process_holds_inode(pid, ident.0, ident.1, record.fd) {
        Ok(held) => held,
        Err(err) => err.kind() != io::ErrorKind::NotFound,
    }
}

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
