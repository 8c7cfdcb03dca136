//! From the process arguments to a `Cli`: resin-lock's own reading of the
//! RESIN_LOCK_PATH and RESIN_LOCK_ROOT variables, and usage errors in
//! resin-lock's voice.

use std::ffi::OsString;
use std::path::PathBuf;

use clap::FromArgMatches;

use super::definition::{Cli, command};
use crate::exit::Exit;

/// Parse the process arguments; on failure print the message and return
/// the exit status (0 for --help/--version, 64 for usage errors, not clap's 2).
pub fn parse() -> Result<Cli, u8> {
    let args: Vec<OsString> = std::env::args_os().collect();
    let mut cmd = parsing_command();
    parse_with(&mut cmd, &args, |name| std::env::var_os(name)).map_err(|err| {
        if !err.use_stderr() {
            // --help, --version. A closed stdout is not worth a second error.
            let _ = err.print();
            return Exit::Ok.code();
        }
        eprint!("{}", usage_error(&err.format(&mut cmd), &mut cmd, &args));
        Exit::Usage.code()
    })
}

/// A usage error in resin-lock's voice, on one line: `resin-lock: <what>`,
/// with clap's tips ("a similar argument exists: ...") folded in, and where
/// an option belongs when it was put before its subcommand. No usage line:
/// one problem, one line.
fn usage_error(err: &clap::Error, cmd: &mut clap::Command, args: &[OsString]) -> String {
    let what = if err.kind() == clap::error::ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
        let names: Vec<&str> = cmd
            .get_subcommands()
            .filter(|sub| !sub.is_hide_set() && sub.get_name() != "help")
            .map(|sub| sub.get_name())
            .collect();
        format!(
            "no command given: one of {}; see resin-lock --help",
            names.join(", ")
        )
    } else {
        clap_message(&err.render().to_string())
    };
    cmd.build();
    let what = match misplaced_option(err, cmd, args) {
        Some(sub) => format!("{what}; it is an option of `{sub}`: put it after `{sub}`"),
        None => what,
    };
    format!("resin-lock: {what}\n")
}

/// clap's rendered error as one line: the message without `error: `, its
/// continuation lines (e.g. the missing arguments) and `tip:` lines
/// appended, without the usage and the "For more information" lines.
/// Not clap's "to pass '-x' as a value, use '-- -x'": before `run`'s CMD,
/// `--` starts the command, so that advice would run `-x` as CMD.
fn clap_message(rendered: &str) -> String {
    let mut lines = rendered.lines();
    let first = lines.next().unwrap_or_default();
    let mut what = first.strip_prefix("error: ").unwrap_or(first).to_owned();
    let mut items = Vec::new();
    let mut in_usage = false;
    for line in lines {
        let line = line.trim();
        if line.is_empty() {
            in_usage = false;
        } else if line.starts_with("Usage:") {
            in_usage = true;
        } else if in_usage || line.starts_with("For more information") {
        } else if let Some(tip) = line.strip_prefix("tip: ") {
            if tip.starts_with("to pass ") {
                continue;
            }
            what.push_str("; ");
            what.push_str(tip);
        } else {
            items.push(line);
        }
    }
    if !items.is_empty() {
        what.push(' ');
        what.push_str(&items.join(", "));
    }
    what
}

/// The subcommand whose option the user put before it (`-w 5 run …`): an
/// unknown argument that is an option of the first subcommand named later.
fn misplaced_option(err: &clap::Error, cmd: &clap::Command, args: &[OsString]) -> Option<String> {
    use clap::error::{ContextKind, ContextValue};
    if err.kind() != clap::error::ErrorKind::UnknownArgument {
        return None;
    }
    let Some(ContextValue::String(invalid)) = err.get(ContextKind::InvalidArg) else {
        return None;
    };
    let option = invalid.split('=').next()?;
    if err.to_string().contains("exists") {
        // clap suggested it already ("'run --timeout' exists").
        return None;
    }
    let at = args
        .iter()
        .position(|word| word.to_str().is_some_and(|w| w.starts_with(option)))?;
    let sub = args[at + 1..]
        .iter()
        .find_map(|word| cmd.find_subcommand(word.to_str()?))?;
    let known = sub.get_arguments().any(|arg| {
        arg.get_long()
            .is_some_and(|long| option == format!("--{long}"))
            || arg.get_short().is_some_and(|short| {
                option.starts_with(&format!("-{short}")) && !option.starts_with("--")
            })
    });
    known.then(|| sub.get_name().to_owned())
}

/// Parse `args`, with `env` for the environment variables. An empty
/// RESIN_LOCK_PATH or RESIN_LOCK_ROOT counts as unset (compose's `${VAR}`
/// with VAR unset gives one), and RESIN_LOCK_PATH may hold several paths
/// joined by ':'. clap would take an empty variable for a missing value
/// (exit 64) and the whole list for one path, so these two are read here.
#[cfg(test)]
pub(crate) fn parse_from<I, T>(
    args: I,
    env: impl Fn(&str) -> Option<OsString>,
) -> clap::error::Result<Cli>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let args: Vec<OsString> = args.into_iter().map(Into::into).collect();
    parse_with(&mut parsing_command(), &args, env)
}

/// The command as parsed: clap's `env` is off for --path and --root, whose
/// variables `parse_with` reads itself (empty is unset, `:` separates paths).
fn parsing_command() -> clap::Command {
    use clap::builder::Resettable;
    command()
        .mut_arg("paths", |arg| arg.env(Resettable::Reset))
        .mut_arg("root", |arg| arg.env(Resettable::Reset))
}

fn parse_with(
    cmd: &mut clap::Command,
    args: &[OsString],
    env: impl Fn(&str) -> Option<OsString>,
) -> clap::error::Result<Cli> {
    let mut matches = cmd.try_get_matches_from_mut(args)?;
    let cli = Cli::from_arg_matches_mut(&mut matches)?;
    Ok(with_env(cli, env))
}

/// RESIN_LOCK_PATH and RESIN_LOCK_ROOT where the command line has no
/// --path or --root.
fn with_env(mut cli: Cli, env: impl Fn(&str) -> Option<OsString>) -> Cli {
    if cli.paths.is_empty() {
        cli.paths = split_paths(&env("RESIN_LOCK_PATH").unwrap_or_default());
    }
    if cli.root.is_none() {
        cli.root = env("RESIN_LOCK_ROOT")
            .filter(|root| !root.is_empty())
            .map(PathBuf::from);
    }
    cli
}

/// Paths joined by ':' (as in RESIN_LOCK_HELD); empty ones are skipped.
fn split_paths(joined: &OsString) -> Vec<PathBuf> {
    use std::os::unix::ffi::OsStrExt;
    joined
        .as_bytes()
        .split(|&b| b == b':')
        .filter(|path| !path.is_empty())
        .map(|path| PathBuf::from(std::ffi::OsStr::from_bytes(path)))
        .collect()
}
