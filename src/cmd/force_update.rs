//! `resin-lock force-update`: ask the supervisor to update now, overriding
//! update locks (`POST /v1/update` with `{"force":true}`), for when an app
//! hangs in a critical section. Exit 0 when the supervisor accepts it, 69
//! when its API is not configured or does not answer, 77 when it refuses the
//! key, 70 for any other answer.

use std::io::{self, Write};

use anyhow::Result;

use super::Context;
use crate::exit::{Exit, fail};
use crate::supervisor_api::{self, Config};

pub fn run(ctx: &Context) -> Result<u8> {
    let config = Config::from_env().map_err(|missing| fail(Exit::Unavailable, missing))?;
    ctx.ui.verbose(|| {
        format!(
            "POST {} (address from {}, API key given as ?apikey=)",
            config.url("/v1/update"),
            config.address_source
        )
    });
    let status = supervisor_api::force_update(&config)?;
    if ctx.ui.quiet {
        return Ok(Exit::Ok.code());
    }
    let line = format!(
        "the supervisor accepted the forced update (HTTP {status}): it updates now, \
         overriding update locks\n"
    );
    match io::stdout().lock().write_all(line.as_bytes()) {
        // A closed stdout does not undo what the supervisor accepted.
        Ok(()) => Ok(Exit::Ok.code()),
        Err(err) if err.kind() == io::ErrorKind::BrokenPipe => Ok(Exit::Ok.code()),
        Err(err) => Err(anyhow::Error::new(err).context("cannot write to stdout")),
    }
}
