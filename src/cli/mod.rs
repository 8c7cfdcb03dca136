//! The command line, and nothing else: the man page and the shell completions
//! are generated from this definition (`cargo xtask gen`), so the doc comments
//! are the user-facing help text.
//!
//! `definition.rs` holds the top-level command, `args.rs` each subcommand's
//! arguments, `parse.rs` the reading of the process arguments and the usage
//! errors. This file only names them.

mod args;
mod definition;
mod parse;

pub(crate) use args::HoldCmdArgs;
pub(crate) use args::{AcquireArgs, HoldArgs, ReleaseArgs, RunArgs, StatusArgs, WaitArgs};
pub(crate) use definition::Command;
pub use definition::{Cli, command};
pub use parse::parse;
#[cfg(test)]
use parse::parse_from;

#[cfg(test)]
mod tests {
    use std::ffi::OsString;
    use std::path::PathBuf;

    use clap::{CommandFactory, Parser};

    use super::*;

    #[test]
    fn verify_cli() {
        Cli::command().debug_assert();
    }

    /// What `run ARGS…` parses to: -n, -w in seconds, -E, -g, CMD.
    type Parsed = (bool, Option<u64>, Option<u8>, bool, Vec<String>);

    fn parse_run(args: &[&str]) -> Result<Parsed, clap::error::ErrorKind> {
        let cli = Cli::try_parse_from(["resin-lock", "run"].iter().chain(args))
            .map_err(|err| err.kind())?;
        let Command::Run(run) = cli.command else {
            panic!("not run")
        };
        Ok((
            run.wait.nonblock,
            run.wait.timeout.map(|d| d.as_secs()),
            run.wait.conflict_exit_code,
            run.group,
            run.cmd
                .iter()
                .map(|w| w.to_string_lossy().into_owned())
                .collect(),
        ))
    }

    /// SPEC 4: options are options wherever they stand before CMD; CMD
    /// starts at `--` or at the first word that is not an option, and
    /// everything after it is CMD's.
    #[test]
    fn run_options_parse_before_cmd_and_never_become_it() {
        use clap::error::ErrorKind::*;
        let ok = |n, w, e, g, cmd: &[&str]| -> Result<Parsed, clap::error::ErrorKind> {
            Ok((n, w, e, g, cmd.iter().map(|s| s.to_string()).collect()))
        };
        #[rustfmt::skip]
        let cases: &[(&[&str], Result<Parsed, clap::error::ErrorKind>)] = &[
            (&["-w5", "-E75", "cmd"], ok(false, Some(5), Some(75), false, &["cmd"])),
            (&["-w", "5", "--", "cmd"], ok(false, Some(5), None, false, &["cmd"])),
            (&["--timeout=5", "cmd"], ok(false, Some(5), None, false, &["cmd"])),
            (&["--timeout", "5", "cmd"], ok(false, Some(5), None, false, &["cmd"])),
            (&["-w1", "--", "true"], ok(false, Some(1), None, false, &["true"])),
            (&["-n", "-E75", "--", "true"], ok(true, None, Some(75), false, &["true"])),
            (&["-nE75", "true"], ok(true, None, Some(75), false, &["true"])),
            (&["-E", "75", "-n", "true"], ok(true, None, Some(75), false, &["true"])),
            (&["--conflict-exit-code=75", "-n", "true"], ok(true, None, Some(75), false, &["true"])),
            (&["-g", "--", "sh", "-c", "x"], ok(false, None, None, true, &["sh", "-c", "x"])),
            (&["--group", "-n", "sh"], ok(true, None, None, true, &["sh"])),
            (&["-gnE75", "sh"], ok(true, None, Some(75), true, &["sh"])),
            (&["sh", "-g"], ok(false, None, None, false, &["sh", "-g"])),
            // Everything after CMD is CMD's, options and `--` included.
            (&["ls", "-l"], ok(false, None, None, false, &["ls", "-l"])),
            (&["-n", "--", "ls", "-l"], ok(true, None, None, false, &["ls", "-l"])),
            (&["ls", "-w5", "-n", "--timeout=3"], ok(false, None, None, false, &["ls", "-w5", "-n", "--timeout=3"])),
            (&["sh", "-c", "x", "--", "y"], ok(false, None, None, false, &["sh", "-c", "x", "--", "y"])),
            (&["--", "-w5"], ok(false, None, None, false, &["-w5"])),
            (&["--", "--", "x"], ok(false, None, None, false, &["--", "x"])),
            // Unknown options before CMD are errors, never the command.
            (&["--timout", "5", "--", "x"], Err(UnknownArgument)),
            (&["-x", "--", "true"], Err(UnknownArgument)),
            (&["-n", "-Z", "true"], Err(UnknownArgument)),
            (&["-wabc", "true"], Err(ValueValidation)),
            (&["-w", "-1", "true"], Err(ValueValidation)),
            (&["-E300", "true"], Err(ValueValidation)),
            // As flock(1): -n with -w is no conflict (-n wins), and --wait
            // is -w.
            (&["-n", "-w5", "true"], ok(true, Some(5), None, false, &["true"])),
            (&["-w5", "-n", "true"], ok(true, Some(5), None, false, &["true"])),
            (&["--wait", "5", "true"], ok(false, Some(5), None, false, &["true"])),
            (&["--wait=5", "-E3", "true"], ok(false, Some(5), Some(3), false, &["true"])),
            // No command.
            (&[], Err(MissingRequiredArgument)),
            (&["--"], Err(MissingRequiredArgument)),
            (&["-n"], Err(MissingRequiredArgument)),
        ];
        for (args, want) in cases {
            assert_eq!(&parse_run(args), want, "run {args:?}");
        }
    }

    /// Arguments, RESIN_LOCK_PATH, RESIN_LOCK_ROOT => paths, root.
    type EnvCase = (
        &'static [&'static str],
        Option<&'static str>,
        Option<&'static str>,
        Vec<PathBuf>,
        Option<PathBuf>,
    );

    #[test]
    fn lock_path_and_root_variables_empty_is_unset_and_paths_split_on_colons() {
        let parse = |args: &[&str], path: Option<&str>, root: Option<&str>| {
            let env = |name: &str| match name {
                "RESIN_LOCK_PATH" => path.map(OsString::from),
                "RESIN_LOCK_ROOT" => root.map(OsString::from),
                _ => panic!("read {name}"),
            };
            let cli =
                parse_from(["resin-lock"].iter().chain(args).chain(&["status"]), env).unwrap();
            (cli.paths, cli.root)
        };
        let paths = |list: &[&str]| list.iter().map(PathBuf::from).collect::<Vec<_>>();
        #[rustfmt::skip]
        let cases: &[EnvCase] = &[
            (&[], None, None, paths(&[]), None),
            (&[], Some(""), Some(""), paths(&[]), None),
            (&[], Some(":"), None, paths(&[]), None),
            (&[], Some("/a.lock"), Some("/r"), paths(&["/a.lock"]), Some("/r".into())),
            (&[], Some("/a.lock:/b.lock"), None, paths(&["/a.lock", "/b.lock"]), None),
            (&[], Some(":/a.lock::/b.lock:"), None, paths(&["/a.lock", "/b.lock"]), None),
            // The command line wins, and is never split.
            (&["--path", "/x:y"], Some("/a.lock"), None, paths(&["/x:y"]), None),
            (&["--root", "/d"], None, Some("/r"), paths(&[]), Some("/d".into())),
            (&["--root", "/d"], None, Some(""), paths(&[]), Some("/d".into())),
        ];
        for (args, path, root, want_paths, want_root) in cases {
            assert_eq!(
                parse(args, *path, *root),
                (want_paths.clone(), want_root.clone()),
                "{args:?} RESIN_LOCK_PATH={path:?} RESIN_LOCK_ROOT={root:?}"
            );
        }
    }

    /// `acquire` reads -n/-w/-E exactly as `run` does.
    #[test]
    fn acquire_parses_wait_options_as_run_does() {
        for args in [
            &["-w5", "-E75"][..],
            &["-w", "5", "-E", "75"],
            &["--timeout=5", "-E75"],
        ] {
            let cli = Cli::try_parse_from(["resin-lock", "acquire"].iter().chain(args)).unwrap();
            let Command::Acquire(acquire) = cli.command else {
                panic!("not acquire")
            };
            let (_, w, e, _, _) = parse_run(&[args, &["true"][..]].concat()).unwrap();
            assert_eq!(acquire.wait.timeout.map(|d| d.as_secs()), w, "{args:?}");
            assert_eq!(acquire.wait.conflict_exit_code, e, "{args:?}");
            assert_eq!((w, e), (Some(5), Some(75)), "{args:?}");
        }
        assert_eq!(
            Cli::try_parse_from(["resin-lock", "acquire", "--timout", "5"])
                .unwrap_err()
                .kind(),
            clap::error::ErrorKind::UnknownArgument
        );
    }
}
