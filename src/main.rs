//! The `resin-lock` binary: parse the command line, run the command, map the
//! outcome to the documented exit status (see `exit.rs`).

use std::process::ExitCode;

fn main() -> ExitCode {
    let code = match resin_lock::cli::parse() {
        Ok(cli) => resin_lock::exit::report(resin_lock::cmd::dispatch(cli)),
        Err(code) => code,
    };
    ExitCode::from(code)
}
