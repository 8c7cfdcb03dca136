//! The `resin-lock` binary: parse the command line, run the command, map the
//! outcome to the documented exit status (see `exit.rs`).
//!
//! The entry point is the C `main`, not std's `lang_start`: std's start-up
//! asks glibc for the main thread's stack bounds (`pthread_getattr_np`, which
//! reads and `sscanf`s `/proc/self/maps` on every start) only to print a
//! message on stack overflow. That costs time on every call and links glibc's
//! whole scanf and long-double parsing into the static binary. The two things
//! std's start-up does that matter here are done by `sys::start_up`.
#![no_main]

use std::ffi::{c_char, c_int};

#[unsafe(no_mangle)]
extern "C" fn main(_argc: c_int, _argv: *const *const c_char) -> c_int {
    resin_lock::sys::start_up();
    resin_lock::exit::on_panic_exit_70();
    let code = match resin_lock::cli::parse() {
        Ok(cli) => resin_lock::exit::report(resin_lock::cmd::dispatch(cli)),
        Err(code) => code,
    };
    // Flushes stdout, as returning from std's main would.
    std::process::exit(i32::from(code))
}
