//! A shared lock file's list of holders: its lines as read (bounded), and
//! whether the holder a line names still holds the file. Below `holders`
//! (who holds it, for `status`) and `shared` (joining, and dropping the
//! lines of holders that have ended), which both read the list.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

use super::dir::Ident;
use super::record::{MAX_LEN, Record};

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
