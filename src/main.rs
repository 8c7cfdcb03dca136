//! The `resin-lock` binary: parse the command line, run the command, map the
//! outcome to the documented exit status (see `exit.rs`).
//!
//! std's start-up, before this `main`, does the two things resin-lock relies
//! on: a closed stdin, stdout or stderr is opened on /dev/null (so no lock
//! file or socket becomes fd 1), and SIGPIPE is ignored (so a closed stdout
//! is an EPIPE that `status` handles quietly; `run`'s child gets it back at
//! its default, as std's `Command` resets it before exec).

use std::process::ExitCode;

use resin_lock::{cli, cmd, exit};

fn main() -> ExitCode {
    exit::on_panic_exit_70();
    let code = match cli::parse() {
        Ok(cli) => exit::report(cmd::dispatch(cli)),
        Err(code) => code,
    };
    ExitCode::from(code)
}
