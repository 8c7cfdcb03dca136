//! Why CMD could not start, in the words a shell would use, with its exit
//! code (SPEC section 5): a failed fork is the system's fault (71); a
//! missing command, interpreter or loader is 127; anything else that exec
//! refused is 126.

use std::ffi::OsStr;
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;

use crate::exit::{Exit, fail};

/// The error for CMD's failed start.
pub(super) fn explain(program: &OsStr, err: &io::Error) -> anyhow::Error {
    fork_error(program, err).unwrap_or_else(|| spawn_error(program, err))
}

/// A failed fork (EAGAIN: the process limit; ENOMEM) is an operating system
/// error (71), not a fault of CMD (126).
fn fork_error(program: &OsStr, err: &io::Error) -> Option<anyhow::Error> {
    matches!(err.raw_os_error(), Some(libc::EAGAIN | libc::ENOMEM)).then(|| {
        fail(
            Exit::OsErr,
            format!("cannot start {}: {err}", program.to_string_lossy()),
        )
    })
}

fn spawn_error(program: &OsStr, err: &io::Error) -> anyhow::Error {
    let name = program.to_string_lossy();
    if program.is_empty() {
        return fail(Exit::NotFound, "run: the command name is empty");
    }
    match err.kind() {
        // ENOENT from execve for a file that is there: what it needs to run
        // is missing. Shells say so with 127 too (bash, dash, zsh, fish).
        io::ErrorKind::NotFound => match find_program(program).map(|p| interpreter(&p)) {
            Some(Some(interpreter)) => fail(
                Exit::NotFound,
                format!(
                    "{name}: bad interpreter: {interpreter} (named on its #! line) does not exist"
                ),
            ),
            Some(None) => fail(
                Exit::NotFound,
                format!(
                    "{name}: cannot execute: its dynamic loader does not exist (built for \
                     another system or libc?)"
                ),
            ),
            None => fail(Exit::NotFound, format!("{name}: command not found")),
        },
        io::ErrorKind::PermissionDenied if Path::new(program).is_dir() => {
            fail(Exit::NotExecutable, format!("{name}: is a directory"))
        }
        io::ErrorKind::PermissionDenied => fail(
            Exit::NotExecutable,
            format!("{name}: permission denied (not executable)"),
        ),
        _ => fail(
            Exit::NotExecutable,
            format!(
                "{name}: cannot execute: {}",
                err.raw_os_error().map_or_else(
                    || err.to_string(),
                    |errno| Errno::from_raw(errno).desc().to_owned()
                )
            ),
        ),
    }
}

/// The file that exec would have run for `program`: the path itself when
/// it has a '/', else the first executable file of that name in PATH.
fn find_program(program: &OsStr) -> Option<PathBuf> {
    let is_program = |path: &Path| {
        std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if program.as_bytes().contains(&b'/') {
        let path = PathBuf::from(program);
        return is_program(&path).then_some(path);
    }
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|path| is_program(path))
}

/// The script `/bin/sh` should run for `program` after exec refused it
/// with ENOEXEC (SPEC 5): a file without `#!` is a shell script to
/// execvp(3), flock(1) and tini. Never a binary of another machine (ELF),
/// which stays exec's "exec format error".
pub(super) fn shell_script(program: &OsStr, err: &io::Error) -> Option<PathBuf> {
    if err.raw_os_error() != Some(libc::ENOEXEC) {
        return None;
    }
    let path = find_program(program)?;
    let mut head = Vec::with_capacity(4);
    std::fs::File::open(&path)
        .ok()?
        .take(4)
        .read_to_end(&mut head)
        .ok()?;
    (head != b"\x7fELF").then_some(path)
}

/// The interpreter a script names on its `#!` line (read from its first
/// 256 bytes), or None for a file that has none.
fn interpreter(script: &Path) -> Option<String> {
    let mut head = Vec::with_capacity(256);
    std::fs::File::open(script)
        .ok()?
        .take(256)
        .read_to_end(&mut head)
        .ok()?;
    let line = head.strip_prefix(b"#!")?.split(|&b| b == b'\n').next()?;
    let word = line
        // As the kernel reads it: a `\r` of a DOS line end stays in the name.
        .split(|&b| b == b' ' || b == b'\t')
        .find(|word| !word.is_empty())?;
    Some(String::from_utf8_lossy(word).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exit::code_of;

    #[test]
    fn a_fork_without_resources_is_an_os_error() {
        let program = OsStr::new("job");
        for errno in [libc::EAGAIN, libc::ENOMEM] {
            let err = fork_error(program, &io::Error::from_raw_os_error(errno)).unwrap();
            assert_eq!(code_of(&err), Exit::OsErr.code());
            assert!(
                format!("{err:#}").starts_with("cannot start job: "),
                "{err:#}"
            );
        }
        for errno in [libc::ENOENT, libc::EACCES, libc::ENOEXEC, libc::E2BIG] {
            assert!(fork_error(program, &io::Error::from_raw_os_error(errno)).is_none());
        }
    }
}
