//! Update windows (`resin-lock window`): when updates are allowed, as
//! wall-clock times in a time zone, and whether they are allowed at a
//! given instant and until when. Pure: the instant and the zone are given,
//! so daylight-saving days are tested as a table of fixed instants.
//!
//! A WINDOW is `[DAYS] HH:MM-HH:MM`. DAYS is `daily` (the default), a day
//! (`Sat`), a list (`Sat,Sun`), a range (`Mon-Fri`), or a list of those;
//! `24:00` ends a day; a window whose end is not after its start crosses
//! midnight and belongs to the day it starts on. Several windows add up.
//!
//! Calendar and zone arithmetic are jiff's. What a daylight-saving change
//! does to a window is decided in one place, `instant`: a wall-clock time
//! in the skipped hour is the moment the clock jumps (so a window inside
//! the skipped hour is empty that day), and one in the repeated hour is
//! its first occurrence (so a window inside it is open once, from its
//! first start).

use jiff::Timestamp;
use jiff::civil::Date;
use jiff::tz::{AmbiguousOffset, TimeZone};

/// Minutes in a day: `24:00`.
const DAY: u16 = 24 * 60;

/// Days are `Mon` (bit 0) to `Sun` (bit 6).
const NAMES: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
const EVERY_DAY: u8 = 0x7f;

/// One WINDOW: on which days, from when to when (minutes after midnight).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    days: u8,
    start: u16,
    end: u16,
}

/// A time zone and the name it was given by (`UTC`, `Europe/Berlin`, a
/// POSIX TZ string, or `local`).
#[derive(Debug, Clone)]
pub struct Zone {
    pub tz: TimeZone,
    pub name: String,
}

/// The windows in a zone.
#[derive(Debug, Clone)]
pub struct Schedule {
    pub windows: Vec<Window>,
    pub zone: Zone,
}

/// Whether updates are allowed now, and when that changes next (none
/// within the coming week: there is no window at all that week).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct State {
    pub open: bool,
    pub next_change: Option<Timestamp>,
}

/// When this binary was built (seconds after the epoch), embedded by
/// `build.rs`.
pub fn build_time() -> i64 {
    env!("RESIN_LOCK_BUILD_TIME").parse().unwrap_or(0)
}

/// How far before this build's date a clock still counts as set: a clock
/// not yet set is decades off (1970, 2000), never a few months.
const CLOCK_SLACK: i64 = 366 * 24 * 3600;

/// Whether the clock reads a time that can be now (SPEC 4f): a board
/// without an RTC starts in 1970 or 2000 until NTP sets it, and the window
/// holds updates back until then. One rule for the window and for `status`.
pub fn clock_is_set(now: Timestamp) -> bool {
    now.as_second() >= build_time().saturating_sub(CLOCK_SLACK)
}

/// The wall clock now. Not `Timestamp::now`, whose `expect` would bring
/// the formatting of every jiff error into the binary (some 150 KiB).
pub fn now() -> Timestamp {
    use std::time::{SystemTime, UNIX_EPOCH};
    let ms = match SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(after) => i64::try_from(after.as_millis()).unwrap_or(i64::MAX),
        Err(before) => i64::try_from(before.duration().as_millis()).map_or(i64::MIN, |ms| -ms),
    };
    Timestamp::from_millisecond(ms).unwrap_or(Timestamp::UNIX_EPOCH)
}

/// Parse WINDOW words: each word may hold several windows or a part of
/// one (`Mon-Fri 02:00-04:00` as one word or two); `;` also separates.
/// The error names the part that does not parse.
pub fn parse_windows<S: AsRef<str>>(words: &[S]) -> Result<Vec<Window>, String> {
    let mut windows = Vec::new();
    let mut days: Option<(u8, &str)> = None;
    for token in words
        .iter()
        .flat_map(|w| w.as_ref().split(|c: char| c == ';' || c.is_whitespace()))
        .filter(|t| !t.is_empty())
    {
        if let Some((start, end)) = token.split_once('-').filter(|_| token.contains(':')) {
            let start = parse_time(start, false)
                .ok_or_else(|| format!("bad window time `{token}` (want HH:MM-HH:MM)"))?;
            let end = parse_time(end, true)
                .ok_or_else(|| format!("bad window time `{token}` (want HH:MM-HH:MM)"))?;
            if start == end {
                return Err(format!("empty window `{token}` (start and end are equal)"));
            }
            let days = days.take().map_or(EVERY_DAY, |(d, _)| d);
            windows.push(Window { days, start, end });
        } else {
            if let Some((_, before)) = days {
                return Err(format!(
                    "days `{before}` have no time (want DAYS HH:MM-HH:MM)"
                ));
            }
            let parsed = parse_days(token).ok_or_else(|| {
                format!("bad window day `{token}` (want daily, Mon..Sun, Sat,Sun or Mon-Fri)")
            })?;
            days = Some((parsed, token));
        }
    }
    if let Some((_, before)) = days {
        return Err(format!(
            "days `{before}` have no time (want DAYS HH:MM-HH:MM)"
        ));
    }
    if windows.is_empty() {
        return Err("no window given (want [DAYS] HH:MM-HH:MM)".to_owned());
    }
    Ok(windows)
}

/// `HH:MM`, hours 0-23 (or `24:00` for an end).
fn parse_time(text: &str, end: bool) -> Option<u16> {
    let (h, m) = text.split_once(':')?;
    let digits = |s: &str, max_len| {
        (!s.is_empty() && s.len() <= max_len && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse::<u16>().ok())
            .flatten()
    };
    let (h, m) = (digits(h, 2)?, digits(m, 2).filter(|_| m.len() == 2)?);
    match (h, m) {
        (24, 0) if end => Some(DAY),
        (0..=23, 0..=59) => Some(h * 60 + m),
        _ => None,
    }
}

/// `daily`, or days and ranges joined by `,` (`Sat,Sun`, `Mon-Fri`,
/// `Fri-Mon` wraps), case-insensitive.
fn parse_days(text: &str) -> Option<u8> {
    if text.eq_ignore_ascii_case("daily") {
        return Some(EVERY_DAY);
    }
    let day = |name: &str| NAMES.iter().position(|n| n.eq_ignore_ascii_case(name));
    let mut days = 0u8;
    for part in text.split(',') {
        match part.split_once('-') {
            Some((from, to)) => {
                let (from, to) = (day(from)?, day(to)?);
                let mut d = from;
                loop {
                    days |= 1 << d;
                    if d == to {
                        break;
                    }
                    d = (d + 1) % 7;
                }
            }
            None => days |= 1 << day(part)?,
        }
    }
    Some(days)
}

/// The zone `name` (the caller gives `--tz`, else `TZ`), else the
/// device's local time (`/etc/localtime`; UTC when there is none). A name
/// is looked up in the system's zoneinfo; a POSIX TZ string
/// (`CET-1CEST,M3.5.0,M10.5.0/3`) needs none.
pub fn zone(name: Option<&str>) -> Result<Zone, String> {
    let Some(name) = name.filter(|n| !n.is_empty()) else {
        return Ok(Zone {
            tz: zoneinfo("/etc/localtime").unwrap_or(TimeZone::UTC),
            name: local_name(),
        });
    };
    if name.eq_ignore_ascii_case("UTC") {
        return Ok(Zone {
            tz: TimeZone::UTC,
            name: "UTC".to_owned(),
        });
    }
    let tz = zoneinfo(name)
        .or_else(|| TimeZone::posix(name).ok())
        .ok_or_else(|| {
            format!(
                "unknown time zone `{name}` (not in the system's zoneinfo, \
                 /usr/share/zoneinfo, nor a POSIX TZ string)"
            )
        })?;
    Ok(Zone {
        tz,
        name: name.to_owned(),
    })
}

/// The directories where systems keep zoneinfo (TZif files), after `TZDIR`.
const ZONEINFO: [&str; 4] = [
    "/usr/share/zoneinfo",
    "/usr/lib/zoneinfo",
    "/usr/share/lib/zoneinfo",
    "/etc/zoneinfo",
];

/// The zone `name` (`Europe/Berlin`, or an absolute path to a TZif file,
/// as `TZ=:/path` gives it) from the system's zoneinfo. Read here, not
/// through jiff's zoneinfo database, which would scan the whole tree and
/// add to the binary what a single lookup does not need. A name is only
/// ever a path below those directories.
fn zoneinfo(name: &str) -> Option<TimeZone> {
    use std::io::Read as _;
    let name = name.strip_prefix(':').unwrap_or(name);
    let read = |path: &std::path::Path| -> Option<Vec<u8>> {
        let mut bytes = Vec::new();
        std::fs::File::open(path)
            .ok()?
            .take(1 << 20)
            .read_to_end(&mut bytes)
            .ok()?;
        bytes.starts_with(b"TZif").then_some(bytes)
    };
    if name.starts_with('/') {
        return TimeZone::tzif(name, &read(std::path::Path::new(name))?).ok();
    }
    let plain = !name.is_empty()
        && name.split('/').all(|part| {
            !part.is_empty()
                && part != "."
                && part != ".."
                && part
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"_+-.".contains(&b))
        });
    if !plain {
        return None;
    }
    let tzdir = std::env::var("TZDIR").ok().filter(|d| !d.is_empty());
    tzdir
        .iter()
        .map(String::as_str)
        .chain(ZONEINFO)
        .find_map(|dir| read(&std::path::Path::new(dir).join(name)))
        .and_then(|bytes| TimeZone::tzif(name, &bytes).ok())
}

/// How the local zone is shown: the zone name that `/etc/localtime`
/// links to, else `local`.
fn local_name() -> String {
    std::fs::read_link("/etc/localtime")
        .ok()
        .and_then(|target| {
            let target = target.to_str()?.to_owned();
            let (_, name) = target.rsplit_once("zoneinfo/")?;
            Some(name.to_owned())
        })
        .unwrap_or_else(|| "local".to_owned())
}

impl Schedule {
    /// Whether `now` is inside a window, and the next instant that changes it.
    pub fn state(&self, now: Timestamp) -> State {
        let intervals = self.intervals(now);
        if let Some(&(_, end)) = intervals.iter().find(|(s, e)| *s <= now && now < *e) {
            return State {
                open: true,
                next_change: Some(end),
            };
        }
        State {
            open: false,
            next_change: intervals.iter().map(|(s, _)| *s).find(|s| *s > now),
        }
    }

    /// The open intervals from the day before `now`'s date (a window that
    /// crosses midnight) to a week after it, merged where they touch or
    /// overlap.
    fn intervals(&self, now: Timestamp) -> Vec<(Timestamp, Timestamp)> {
        let today = self.zone.tz.to_datetime(now).date();
        let mut all = Vec::new();
        // Day by day (no calendar spans: they would double what jiff adds
        // to the binary), from yesterday to a week after tomorrow.
        let mut next = today.yesterday().ok();
        for _ in -1..=8 {
            let Some(date) = next else { break };
            next = date.tomorrow().ok();
            let bit = 1 << (date.weekday().to_monday_zero_offset() as u8);
            for window in self.windows.iter().filter(|w| w.days & bit != 0) {
                let end_date = if window.end <= window.start {
                    date.tomorrow().ok()
                } else {
                    Some(date)
                };
                let (Some(start), Some(end)) = (
                    instant(&self.zone.tz, date, window.start),
                    end_date.and_then(|d| instant(&self.zone.tz, d, window.end)),
                ) else {
                    continue;
                };
                if start < end {
                    all.push((start, end));
                }
            }
        }
        // Few and nearly in order: insertion, not a sort routine.
        let mut sorted: Vec<(Timestamp, Timestamp)> = Vec::with_capacity(all.len());
        for interval in all {
            let at = sorted.partition_point(|other| *other <= interval);
            sorted.insert(at, interval);
        }
        let all = sorted;
        let mut merged: Vec<(Timestamp, Timestamp)> = Vec::with_capacity(all.len());
        for (start, end) in all {
            match merged.last_mut() {
                Some(last) if start <= last.1 => last.1 = last.1.max(end),
                _ => merged.push((start, end)),
            }
        }
        merged
    }

    /// `Mon-Fri 02:00-04:00`, `22:00-23:00` (every day).
    pub fn describe_windows(&self) -> Vec<String> {
        self.windows.iter().map(Window::to_string).collect()
    }

    /// An instant as the zone's wall clock, `2026-12-09 02:00`.
    pub fn wall_clock(&self, at: Timestamp) -> String {
        wall_clock(&self.zone.tz, at)
    }

    /// An instant in RFC 3339 with the zone's offset, `2026-12-09T02:00:00+01:00`.
    pub fn rfc3339(&self, at: Timestamp) -> String {
        let dt = self.zone.tz.to_datetime(at);
        let offset = self.zone.tz.to_offset(at).seconds();
        let sign = if offset < 0 { '-' } else { '+' };
        let offset = offset.unsigned_abs();
        format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}{sign}{:02}:{:02}",
            dt.year(),
            dt.month(),
            dt.day(),
            dt.hour(),
            dt.minute(),
            dt.second(),
            offset / 3600,
            offset / 60 % 60
        )
    }
}

/// An instant on `tz`'s wall clock, `2026-12-09 02:00` (jiff's strftime
/// would add some 60 KiB to the binary for this one format).
pub fn wall_clock(tz: &TimeZone, at: Timestamp) -> String {
    let dt = tz.to_datetime(at);
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}",
        dt.year(),
        dt.month(),
        dt.day(),
        dt.hour(),
        dt.minute()
    )
}

/// The instant of wall-clock time `minutes` after midnight on `date` in
/// `tz` (`24:00` is the next day's midnight). In a skipped hour: the
/// moment the clock jumps; in a repeated hour: its first occurrence.
fn instant(tz: &TimeZone, date: Date, minutes: u16) -> Option<Timestamp> {
    let (date, minutes) = if minutes >= DAY {
        (date.tomorrow().ok()?, minutes - DAY)
    } else {
        (date, minutes)
    };
    let hour = i8::try_from(minutes / 60).ok()?;
    let minute = i8::try_from(minutes % 60).ok()?;
    let ambiguous = tz.to_ambiguous_timestamp(date.at(hour, minute, 0, 0));
    match ambiguous.offset() {
        AmbiguousOffset::Gap { .. } => {
            let before_jump = ambiguous.earlier().ok()?;
            tz.following(before_jump).next().map(|t| t.timestamp())
        }
        _ => ambiguous.earlier().ok(),
    }
}

impl std::fmt::Display for Window {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let hm = |m: u16| format!("{:02}:{:02}", m / 60, m % 60);
        // Every day is the default, and says nothing: `02:00-04:00`.
        if self.days != EVERY_DAY {
            write!(f, "{} ", days_text(self.days))?;
        }
        write!(f, "{}-{}", hm(self.start), hm(self.end))
    }
}

/// `Mon-Fri`, `Sat,Sun`, `Mon,Wed-Fri`: runs of three or more days as
/// ranges.
fn days_text(days: u8) -> String {
    let mut parts = Vec::new();
    let mut d = 0;
    while d < 7 {
        if days & (1 << d) == 0 {
            d += 1;
            continue;
        }
        let from = d;
        while d + 1 < 7 && days & (1 << (d + 1)) != 0 {
            d += 1;
        }
        match d - from {
            0 => parts.push(NAMES[from].to_owned()),
            1 => parts.push(format!("{},{}", NAMES[from], NAMES[d])),
            _ => parts.push(format!("{}-{}", NAMES[from], NAMES[d])),
        }
        d += 1;
    }
    parts.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schedule(windows: &[&str], tz: &str) -> Schedule {
        Schedule {
            windows: parse_windows(windows).unwrap(),
            zone: zone(Some(tz)).unwrap(),
        }
    }

    fn at(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    /// (open, next change as UTC) at `now`.
    fn state(s: &Schedule, now: &str) -> (bool, Option<String>) {
        let st = s.state(at(now));
        (st.open, st.next_change.map(|t| t.to_string()))
    }

    #[test]
    fn windows_parse_and_print_canonically() {
        #[rustfmt::skip]
        let cases: &[(&[&str], &[&str])] = &[
            (&["02:00-04:00"], &["02:00-04:00"]),
            (&["daily 02:00-04:00"], &["02:00-04:00"]),
            (&["Mon-Sun 02:00-04:00"], &["02:00-04:00"]),
            (&["Mon-Fri 02:00-04:00"], &["Mon-Fri 02:00-04:00"]),
            (&["Mon-Fri", "02:00-04:00"], &["Mon-Fri 02:00-04:00"]),
            (&["sat,SUN 00:00-24:00"], &["Sat,Sun 00:00-24:00"]),
            (&["Fri-Mon 22:00-02:00"], &["Mon,Fri-Sun 22:00-02:00"]),
            (&["daily 1:30-2:00; Wed 03:00-04:00"], &["01:30-02:00", "Wed 03:00-04:00"]),
            (&["Mon,Wed-Fri 9:00-17:00"], &["Mon,Wed-Fri 09:00-17:00"]),
        ];
        for (words, want) in cases {
            let got: Vec<String> = parse_windows(words)
                .unwrap()
                .iter()
                .map(ToString::to_string)
                .collect();
            assert_eq!(&got, want, "{words:?}");
        }
    }

    #[test]
    fn bad_windows_name_the_part() {
        #[rustfmt::skip]
        let cases: &[(&[&str], &str)] = &[
            (&["Mon-Fri 02:00-25:00"], "`02:00-25:00`"),
            (&["Mon-Fry 02:00-04:00"], "`Mon-Fry`"),
            (&["02:00-02:00"], "empty window `02:00-02:00`"),
            (&["24:00-02:00"], "`24:00-02:00`"),
            (&["2:5-3:00"], "`2:5-3:00`"),
            (&["Mon-Fri"], "days `Mon-Fri` have no time"),
            (&["Mon Tue 02:00-03:00"], "days `Mon` have no time"),
            (&["nightly"], "`nightly`"),
            (&[""], "no window"),
            (&["02:00"], "`02:00`"),
        ];
        for (words, want) in cases {
            let err = parse_windows(words).unwrap_err();
            assert!(err.contains(want), "{words:?}: {err}");
        }
    }

    #[test]
    fn bad_zone_is_named() {
        let err = zone(Some("Europe/Nowhere")).unwrap_err();
        assert!(err.contains("`Europe/Nowhere`"), "{err}");
        assert_eq!(zone(Some("utc")).unwrap().name, "UTC");
        // A POSIX TZ string needs no zoneinfo.
        let posix = zone(Some("CET-1CEST,M3.5.0,M10.5.0/3")).unwrap();
        let s = Schedule {
            windows: parse_windows(&["02:00-04:00"]).unwrap(),
            zone: posix,
        };
        assert_eq!(
            state(&s, "2026-12-08T01:30:00Z"),
            (true, Some("2026-12-08T03:00:00Z".into()))
        );
    }

    #[test]
    fn daily_weekdays_and_midnight() {
        let s = schedule(&["Mon-Fri 02:00-04:00"], "UTC");
        // 2026-12-07 is a Monday.
        #[rustfmt::skip]
        let cases = [
            ("2026-12-07T01:59:59Z", false, "2026-12-07T02:00:00Z"),
            ("2026-12-07T02:00:00Z", true, "2026-12-07T04:00:00Z"),
            ("2026-12-07T03:59:59Z", true, "2026-12-07T04:00:00Z"),
            ("2026-12-07T04:00:00Z", false, "2026-12-08T02:00:00Z"),
            // Friday after the window: next is Monday.
            ("2026-12-11T05:00:00Z", false, "2026-12-14T02:00:00Z"),
            ("2026-12-12T02:30:00Z", false, "2026-12-14T02:00:00Z"),
        ];
        for (now, open, next) in cases {
            assert_eq!(state(&s, now), (open, Some(next.into())), "{now}");
        }
        // Crossing midnight belongs to the start day: Fri 22:00 to Sat
        // 02:00 is open, Sun 22:00 is not a start.
        let s = schedule(&["Fri 22:00-02:00"], "UTC");
        #[rustfmt::skip]
        let cases = [
            ("2026-12-11T21:59:00Z", false, "2026-12-11T22:00:00Z"),
            ("2026-12-12T01:00:00Z", true, "2026-12-12T02:00:00Z"),
            ("2026-12-12T02:00:00Z", false, "2026-12-18T22:00:00Z"),
            ("2026-12-13T23:00:00Z", false, "2026-12-18T22:00:00Z"),
        ];
        for (now, open, next) in cases {
            assert_eq!(state(&s, now), (open, Some(next.into())), "{now}");
        }
        // Windows add up, and touching ones are one: Sat,Sun all day plus
        // Fri 22:00-24:00 is open from Friday 22:00 to Monday 00:00.
        let s = schedule(&["Sat,Sun 00:00-24:00", "Fri 22:00-24:00"], "UTC");
        assert_eq!(
            state(&s, "2026-12-11T23:00:00Z"),
            (true, Some("2026-12-14T00:00:00Z".into()))
        );
    }

    #[test]
    fn a_zone_moves_the_window() {
        let s = schedule(&["Mon-Fri 02:00-04:00"], "Europe/Berlin");
        // 02:00 in Berlin in December is 01:00 UTC.
        assert_eq!(
            state(&s, "2026-12-08T00:59:59Z"),
            (false, Some("2026-12-08T01:00:00Z".into()))
        );
        assert_eq!(s.wall_clock(at("2026-12-09T01:00:00Z")), "2026-12-09 02:00");
        assert_eq!(
            s.rfc3339(at("2026-12-09T01:00:00Z")),
            "2026-12-09T02:00:00+01:00"
        );
    }

    /// 2026-03-29, Europe: 02:00 CET jumps to 03:00 CEST (01:00 UTC).
    /// 2026-10-25, Europe: 03:00 CEST falls back to 02:00 CET (01:00 UTC).
    #[test]
    fn european_daylight_saving_days() {
        // Inside the skipped hour: empty that day; the next is the day after.
        let s = schedule(&["02:15-02:45"], "Europe/Berlin");
        assert_eq!(
            state(&s, "2026-03-29T00:59:00Z"),
            (false, Some("2026-03-30T00:15:00Z".into()))
        );
        // Reaching into the skipped hour: open from the jump to the end.
        let s = schedule(&["02:30-04:00"], "Europe/Berlin");
        assert_eq!(
            state(&s, "2026-03-29T00:59:00Z"),
            (false, Some("2026-03-29T01:00:00Z".into()))
        );
        assert_eq!(
            state(&s, "2026-03-29T01:00:00Z"),
            (true, Some("2026-03-29T02:00:00Z".into()))
        );
        // Inside the repeated hour: open once, from its first start (CEST).
        let s = schedule(&["02:15-02:45"], "Europe/Berlin");
        assert_eq!(
            state(&s, "2026-10-25T00:00:00Z"),
            (false, Some("2026-10-25T00:15:00Z".into()))
        );
        assert_eq!(
            state(&s, "2026-10-25T00:30:00Z"),
            (true, Some("2026-10-25T00:45:00Z".into()))
        );
        // The second 02:15-02:45 (CET, 01:15-01:45 UTC) stays closed.
        assert_eq!(
            state(&s, "2026-10-25T01:30:00Z"),
            (false, Some("2026-10-26T01:15:00Z".into()))
        );
        // A window around the change keeps its wall-clock ends: 01:00-04:00
        // is 4 real hours that day.
        let s = schedule(&["01:00-04:00"], "Europe/Berlin");
        assert_eq!(
            state(&s, "2026-10-24T23:00:00Z"),
            (true, Some("2026-10-25T03:00:00Z".into()))
        );
    }

    /// 2026-03-08, New York: 02:00 EST jumps to 03:00 EDT (07:00 UTC).
    /// 2026-11-01, New York: 02:00 EDT falls back to 01:00 EST (06:00 UTC).
    #[test]
    fn us_daylight_saving_days() {
        let s = schedule(&["Sun 02:00-03:00"], "America/New_York");
        // The whole window is the skipped hour: empty; next Sunday instead.
        assert_eq!(
            state(&s, "2026-03-08T06:59:00Z"),
            (false, Some("2026-03-15T06:00:00Z".into()))
        );
        assert_eq!(
            state(&s, "2026-03-08T07:30:00Z"),
            (false, Some("2026-03-15T06:00:00Z".into()))
        );
        let s = schedule(&["Sun 01:10-01:50"], "America/New_York");
        // First 01:10 is EDT (05:10 UTC); open until the first 01:50.
        assert_eq!(
            state(&s, "2026-11-01T05:00:00Z"),
            (false, Some("2026-11-01T05:10:00Z".into()))
        );
        assert_eq!(
            state(&s, "2026-11-01T05:10:00Z"),
            (true, Some("2026-11-01T05:50:00Z".into()))
        );
        // The repeated 01:10-01:50 (EST, 06:10-06:50 UTC) stays closed.
        assert_eq!(
            state(&s, "2026-11-01T06:20:00Z"),
            (false, Some("2026-11-08T06:10:00Z".into()))
        );
    }
}
