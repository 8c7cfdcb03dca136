//! `resin-lock window [--tz ZONE] [--update-now] WINDOW... [-- CMD...]`:
//! updates only inside the windows. Outside them it holds the update lock
//! as a window holder (`lock::window`: it excludes none of the app's own
//! holders); when a window opens it lets go (with `--update-now` it asks the
//! supervisor to apply a pending update), and when it closes it takes the
//! lock again, waiting behind an update in progress. A forced update is let
//! happen, said once, and the lock taken again once the supervisor's lock
//! is gone. With `-- CMD`, CMD runs as `run` runs it, the window kept beside
//! it on a thread of its own.
//!
//! Sleeping: until the next change, but never longer than `MAX_SLEEP`, and
//! the wall clock is read afresh on every wake, so a clock set by NTP (or
//! moved by hand) is followed within a minute. Inotify on the lock's
//! directory wakes it at once when its file is removed.

use std::ffi::OsString;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::time::Duration;

use anyhow::{Context as _, Result};
use jiff::Timestamp;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
use signal_hook::consts::{SIGCHLD, SIGHUP, SIGINT, SIGQUIT, SIGTERM};

use super::context::{Context, maybe_forced, refuse_nobody, tell};
use crate::cli::WindowArgs;
use crate::exit::{Exit, code_of, fail};
use crate::lock::dir::LockDir;
use crate::lock::record::{Mode, Record, WindowSpec};
use crate::lock::wait::{WaitOpts, take_all};
use crate::lock::{Event, Held, Target, release_all};
use crate::schedule::{self, Schedule};
use crate::signals::{FORWARD, SignalWatch};
use crate::supervisor_api::tags;

/// The longest sleep between two looks at the wall clock.
const MAX_SLEEP: Duration = Duration::from_secs(60);
/// With `-- CMD`, the longest a wait for the lock goes without looking
/// whether CMD ended (the window thread is then asked to stop).
const CMD_WAIT_SLICE: Duration = Duration::from_secs(1);
/// After our file was removed under us (a forced update), how long the
/// path must stay free before we take the lock again: the supervisor's
/// `lockfile -r 0` follows its unlink a few milliseconds later, through a
/// shell; what it creates is then waited for as any lock.
const SETTLE_AFTER_LOSS: Duration = Duration::from_secs(1);

pub fn run(ctx: &Context, args: WindowArgs) -> Result<u8> {
    let windows = schedule::parse_windows(&args.windows).map_err(|why| {
        fail(
            Exit::Usage,
            format!("window: {why} (WINDOW or RESIN_LOCK_WINDOW)"),
        )
    })?;
    let tz = args.tz.as_deref().filter(|tz| !tz.is_empty());
    let zone = schedule::zone(
        tz.or(std::env::var("TZ")
            .ok()
            .as_deref()
            .filter(|t| !t.is_empty())),
    )
    .map_err(|why| {
        fail(
            Exit::Usage,
            format!("window: {why} (--tz, RESIN_LOCK_WINDOW_TZ or TZ)"),
        )
    })?;
    let schedule = Schedule { windows, zone };
    refuse_nobody()?;
    super::context::warn_unprotected(ctx);
    let mut watched = vec![SIGTERM, SIGINT, SIGHUP, SIGQUIT];
    if !args.cmd.is_empty() {
        watched = FORWARD.to_vec();
        watched.push(SIGCHLD);
    }
    let mut signals = SignalWatch::new(&watched).context("cannot install signal handlers")?;
    let me = nix::unistd::getpid().as_raw();
    let mut cmd: Vec<String> = vec!["resin-lock".into(), "window".into()];
    cmd.extend(schedule.describe_windows());
    cmd.extend(args.cmd.iter().map(|a| a.to_string_lossy().into_owned()));
    let mut record = Record::new(Mode::Window, me, me, cmd);
    record.shared = true;
    record.set_reason(args.reason.as_deref());
    record.window = Some(WindowSpec {
        windows: schedule.describe_windows(),
        tz: schedule.zone.name.clone(),
    });
    let keeper = Keeper::new(ctx, &schedule, record, &args);
    if args.cmd.is_empty() {
        let mut keeper = keeper;
        let stopped = keeper.keep(&mut signals, None);
        let released = keeper.let_go();
        stopped?;
        released?;
        std::mem::forget(signals);
        return Ok(0);
    }
    with_cmd(ctx, keeper, &args.cmd, &mut signals)
}

/// `-- CMD`: the window on a thread of its own, CMD supervised as `run`
/// does; when CMD ends, the window lets go and we exit as CMD did.
fn with_cmd(
    ctx: &Context,
    mut keeper: Keeper<'_>,
    cmd: &[OsString],
    signals: &mut SignalWatch,
) -> Result<u8> {
    let (stop_read, stop_write) = nix::unistd::pipe().context("cannot create a pipe")?;
    // The first closed period is held before CMD starts.
    keeper.step(signals, None)?;
    let notify = |event: Event<'_>| tell(&ctx.ui, event);
    let on_lost = |_: crate::supervise::Lost<'_>| {};
    std::thread::scope(|scope| {
        // Not `scope.spawn`, whose panic on failure costs the binary the
        // formatting of an io::Error's Debug.
        let window = std::thread::Builder::new()
            .spawn_scoped(scope, move || -> Result<()> {
                let mut none = SignalWatch::new(&[]).context("cannot install signal handlers")?;
                let kept = keeper.keep(&mut none, Some(stop_read.as_fd()));
                let released = keeper.let_go();
                kept.and(released)
            })
            .map_err(|err| fail(Exit::OsErr, format!("cannot start a thread: {err}")))?;
        let code = crate::supervise::run_child(
            cmd,
            crate::supervise::Options::default(),
            Vec::new(),
            signals,
            &ctx.ui,
            &notify,
            &on_lost,
        );
        let _ = nix::unistd::write(&stop_write, b"x");
        let kept = window
            .join()
            .unwrap_or_else(|_| Err(fail(Exit::Software, "the window thread panicked")));
        if let Err(err) = kept {
            crate::ui::say(&crate::exit::message(&err));
        }
        code
    })
}

/// The window's hold, from closed period to closed period.
struct Keeper<'a> {
    ctx: &'a Context,
    schedule: &'a Schedule,
    content: String,
    update_now: bool,
    tags: Option<crate::supervisor_api::Config>,
    held: Option<Vec<Held>>,
    /// Said once: the clock is not set; the lock was removed under us; we wait.
    said_clock: bool,
    said_waiting: std::cell::Cell<bool>,
    /// The lock files' directory watch, while held.
    inotify: Option<Inotify>,
    /// When our file was found removed under us (see `SETTLE_AFTER_LOSS`).
    lost_at: Option<std::time::Instant>,
}

impl<'a> Keeper<'a> {
    fn new(ctx: &'a Context, schedule: &'a Schedule, record: Record, args: &WindowArgs) -> Self {
        let hold = crate::cli::HoldArgs {
            reason: None,
            max_hold: None,
            tag: args.tag,
            tag_after: None,
        };
        Keeper {
            ctx,
            schedule,
            content: record.to_line(),
            update_now: args.update_now,
            tags: super::context::tag_plan(&ctx.ui, &hold).map(|(config, _)| config),
            held: None,
            said_clock: false,
            said_waiting: std::cell::Cell::new(false),
            inotify: None,
            lost_at: None,
        }
    }

    /// Keep the window until a stopping signal (`signals`) or a byte on
    /// `stop`.
    fn keep(&mut self, signals: &mut SignalWatch, stop: Option<BorrowedFd<'_>>) -> Result<()> {
        loop {
            let sleep = self.step(signals, stop)?;
            if self.sleep(sleep, signals, stop)? {
                return Ok(());
            }
        }
    }

    /// Look at the clock and hold or let go as it says; how long to sleep.
    fn step(
        &mut self,
        signals: &mut SignalWatch,
        stop: Option<BorrowedFd<'_>>,
    ) -> Result<Duration> {
        let now = schedule::now();
        let plausible = schedule::clock_is_set(now);
        if !plausible && !self.said_clock {
            self.ctx.ui.warn(format!(
                "the clock says {}, before this build (about {}): not set yet, so updates \
                 are held back until it is",
                self.schedule.wall_clock(now),
                Timestamp::from_second(schedule::build_time())
                    .map(|t| schedule::wall_clock(&jiff::tz::TimeZone::UTC, t)[..10].to_owned())
                    .unwrap_or_default()
            ));
        }
        self.said_clock = !plausible;
        let state = self.schedule.state(now);
        let until = state
            .next_change
            .and_then(|next| u64::try_from(next.as_millisecond() - now.as_millisecond()).ok())
            .map(Duration::from_millis)
            .unwrap_or(MAX_SLEEP);
        let sleep = if plausible {
            until.min(MAX_SLEEP)
        } else {
            MAX_SLEEP
        };
        if plausible && state.open {
            if self.held.is_some() {
                self.let_go()?;
                let end = state.next_change.map(|t| self.schedule.wall_clock(t));
                self.ctx.ui.warn(format!(
                    "window open: updates allowed{}",
                    end.map(|e| format!(" until {e} {}", self.schedule.zone.name))
                        .unwrap_or_default()
                ));
                self.tag(format!(
                    "{}; window open{}",
                    tags::free_value(),
                    state
                        .next_change
                        .map(|t| format!(" until {}", self.wall_clock_zone(t)))
                        .unwrap_or_default()
                ));
                if self.update_now {
                    super::force_update::update_now(&self.ctx.ui);
                }
            }
            return Ok(sleep);
        }
        if self
            .held
            .as_ref()
            .is_some_and(|held| !held.iter().all(Held::in_place))
        {
            // A forced update (or `release --force`): let it happen, then
            // take the lock again once the supervisor's own lock is gone.
            let held = self.held.take().unwrap_or_default();
            for lock in held.iter().filter(|l| !l.in_place()) {
                self.ctx.ui.warn(format!(
                    "{}; letting the update happen, and holding updates back again once \
                     the supervisor's lock is gone",
                    maybe_forced(&lock.path)
                ));
            }
            self.forget_watch();
            let quiet = |_: Event<'_>| {};
            release_all(held, &quiet)?;
            self.lost_at = Some(std::time::Instant::now());
        }
        if self.held.is_some() {
            return Ok(sleep);
        }
        if let Some(lost_at) = self.lost_at {
            let left = SETTLE_AFTER_LOSS.saturating_sub(lost_at.elapsed());
            let targets = &self.ctx.locations.targets;
            if !left.is_zero() && targets.iter().all(crate::lock::window::path_free) {
                return Ok(left.min(Duration::from_millis(20)));
            }
            self.lost_at = None;
        }
        // Closed, and not held: take it, waiting at most until the window
        // opens (or a slice, to look at the clock and at `stop`).
        let slice = if stop.is_some() {
            CMD_WAIT_SLICE
        } else {
            MAX_SLEEP
        };
        let opts = WaitOpts {
            nonblock: false,
            timeout: Some(sleep.min(slice).max(Duration::from_millis(10))),
            busy_code: Exit::Busy.code(),
            owner: None,
            shared: true,
        };
        let notify = |event: Event<'_>| match event {
            Event::Waiting { .. } | Event::WaitingForDisplaced { .. }
                if self.said_waiting.replace(true) => {}
            event => tell(&self.ctx.ui, event),
        };
        match take_all(
            &self.ctx.locations.targets,
            self.content.as_bytes(),
            opts,
            signals,
            &notify,
        ) {
            Ok(held) => {
                self.said_waiting.set(false);
                self.watch(&held);
                self.held = Some(held);
                let next = state.next_change.filter(|_| plausible);
                self.ctx.ui.warn(format!(
                    "window closed: updates held back{}",
                    next.map(|t| format!(" until {}", self.wall_clock_zone(t)))
                        .unwrap_or_default()
                ));
                self.tag(format!(
                    "window closed{}; by window: {}",
                    next.map(|t| format!(" until {}", self.wall_clock_zone(t)))
                        .unwrap_or_else(|| " until the clock is set".to_owned()),
                    self.schedule.describe_windows().join(" and ")
                ));
                Ok(sleep)
            }
            // Still busy: look again at once (the wait was the sleep).
            Err(err) if code_of(&err) == Exit::Busy.code() => Ok(Duration::ZERO),
            Err(err) => Err(err),
        }
    }

    /// `2026-12-09 02:00 Europe/Berlin`.
    fn wall_clock_zone(&self, at: Timestamp) -> String {
        format!(
            "{} {}",
            self.schedule.wall_clock(at),
            self.schedule.zone.name
        )
    }

    /// Let go of the lock, if held.
    fn let_go(&mut self) -> Result<()> {
        self.forget_watch();
        match self.held.take() {
            Some(held) => release_all(held, &|event| tell(&self.ctx.ui, event)),
            None => Ok(()),
        }
    }

    /// Publish the device tag, when tags are on. Bounded, best effort.
    fn tag(&self, value: String) {
        let Some(config) = &self.tags else { return };
        // Through each lock's directory, never by path: the note beside the
        // lock stays in that directory whatever is planted there.
        let dirs: Vec<LockDir> = self
            .ctx
            .locations
            .targets
            .iter()
            .filter_map(|t| {
                LockDir::open(&Target {
                    create_parent: false,
                    ..t.clone()
                })
                .ok()
            })
            .collect();
        let fds: Vec<BorrowedFd<'_>> = dirs.iter().map(LockDir::fd).collect();
        let say = |line: String| self.ctx.ui.warn(line);
        let warn = tags::Warn::once(&say);
        tags::send(
            config,
            &fds,
            &tags::bounded(&crate::text::escape_controls(&value)),
            &warn,
        );
    }

    /// Watch the held locks' directories for their removal.
    fn watch(&mut self, held: &[Held]) {
        const MASK: AddWatchFlags = AddWatchFlags::IN_DELETE
            .union(AddWatchFlags::IN_MOVED_FROM)
            .union(AddWatchFlags::IN_MOVED_TO)
            .union(AddWatchFlags::IN_DELETE_SELF)
            .union(AddWatchFlags::IN_MOVE_SELF)
            .union(AddWatchFlags::IN_ONLYDIR);
        if self.inotify.is_none() {
            self.inotify = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC).ok();
        }
        if let Some(inotify) = &self.inotify {
            for lock in held {
                let dir = format!("/proc/self/fd/{}", lock.dir_fd().as_raw_fd());
                let _ = inotify.add_watch(dir.as_str(), MASK);
            }
        }
    }

    /// Stop watching (the watches go with their directories' descriptors;
    /// the instance is kept for the next closed period).
    fn forget_watch(&mut self) {
        if let Some(inotify) = &self.inotify {
            while let Ok(events) = inotify.read_events() {
                if events.is_empty() {
                    break;
                }
            }
        }
    }

    /// Sleep up to `timeout`, woken by a signal, `stop`, or the lock's
    /// directory changing. True when asked to stop.
    fn sleep(
        &mut self,
        timeout: Duration,
        signals: &mut SignalWatch,
        stop: Option<BorrowedFd<'_>>,
    ) -> Result<bool> {
        if timeout.is_zero() {
            return Ok(false);
        }
        let mut fds = vec![PollFd::new(signals.fd(), PollFlags::POLLIN)];
        if let Some(stop) = stop {
            fds.push(PollFd::new(stop, PollFlags::POLLIN));
        }
        let inotify = self.inotify.as_ref().filter(|_| self.held.is_some());
        if let Some(inotify) = inotify {
            fds.push(PollFd::new(inotify.as_fd(), PollFlags::POLLIN));
        }
        // A few milliseconds past the change, so the clock has reached it.
        let ms = timeout
            .as_millis()
            .saturating_add(5)
            .min(u128::from(u16::MAX));
        match poll(&mut fds, PollTimeout::from(ms as u16)) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(err) => return Err(anyhow::Error::new(err).context("cannot wait")),
        }
        let stopped = stop.is_some()
            && fds
                .get(1)
                .and_then(PollFd::revents)
                .is_some_and(|r| !r.is_empty());
        if let Some(inotify) = inotify {
            while let Ok(events) = inotify.read_events() {
                if events.is_empty() {
                    break;
                }
            }
        }
        let signalled = signals
            .pending()
            .iter()
            .any(|r| [SIGTERM, SIGINT, SIGHUP, SIGQUIT].contains(&r.signal));
        Ok(stopped || signalled)
    }
}
