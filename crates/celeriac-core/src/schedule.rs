//! Periodic schedules: what fires when, as pure functions of time.
//!
//! A [`Schedule`] names a task and its arguments and says when to enqueue a job of it:
//! [`Spec::Every`] a fixed interval, or [`Spec::Cron`] a cron expression with five fields
//! (minute, hour, day of month, month, day of week) or six (seconds first), read in a time
//! zone (UTC unless told otherwise). Nothing here reads the clock or a store: the scheduler
//! loop ([`crate::beat`]) asks [`Schedule::due`] which ticks to fire between two instants.
//!
//! # Ticks
//! A tick is an instant (ms since the epoch) at which the schedule fires.
//! - **Intervals** are anchored to the Unix epoch: `every = "5m"` ticks at every multiple of
//!   five minutes since 1970-01-01T00:00:00Z, whatever the time zone, so every process agrees
//!   on the ticks and daylight saving time never moves them.
//! - **Cron** expressions are matched against the wall clock of the schedule's time zone, with
//!   Vixie cron's rules for daylight saving time (through the `croner` crate):
//!   - *spring forward* (a wall-clock hour that does not exist): a job whose fixed time falls in
//!     the gap runs **once, at the first instant after the gap** on that day (`30 2 * * *` in
//!     Europe/Berlin runs at 03:00 CEST on the last Sunday of March); wildcard or stepped
//!     fields (`*/15 * * * *`) skip the times that do not exist;
//!   - *fall back* (an hour that happens twice): a job with a fixed time runs **once**, at the
//!     first occurrence; wildcard or stepped fields run in both passes, as real time goes on.
//!
//! # Missed ticks
//! Ticks the scheduler did not fire in time (no scheduler was running, or it was stalled) are
//! handled by the schedule's [`Missed`] policy: skip them, run once for all of them (the
//! default, as Celery beat and Sidekiq users expect), or catch up on at most N of them.
//!
//! # Schedule files
//! [`load_file`] and [`parse_toml`] read schedules from `[[schedule]]` tables in TOML;
//! [`check_unique_names`] and [`check_tasks`] check a set of schedules against each other
//! and against the registered tasks.

use crate::clock::{duration_ms, UnixMs};
use crate::duration;
use crate::error::{Error, Result};
use crate::job::{JobId, Priority, Unique};
use chrono::{DateTime, TimeZone};
use chrono_tz::Tz;
use croner::parser::{CronParser, Seconds, Year};
use croner::Cron;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

mod file;

pub use file::{check_tasks, check_unique_names, load_file, parse_toml};

/// The shortest interval (and the finest cron resolution): one second.
pub const MIN_INTERVAL: Duration = Duration::from_secs(1);

/// The largest `catch_up` count accepted.
pub const MAX_CATCH_UP: u32 = 10_000;

/// The most ticks one call to [`Schedule::due`] looks at, a bound on the work of one pass.
const MAX_TICKS_PER_PASS: usize = 10_000;

/// When a schedule fires.
#[derive(Clone)]
pub enum Spec {
    /// At every multiple of this interval since the Unix epoch (at least one second).
    Every(Duration),
    /// When the cron expression matches the wall clock of the schedule's time zone.
    Cron {
        /// The expression as written.
        expr: String,
        /// The parsed expression.
        parsed: Box<Cron>,
    },
}

impl fmt::Debug for Spec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for Spec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Spec::Every(d) => write!(f, "every {}", duration::format(*d)),
            Spec::Cron { expr, .. } => write!(f, "cron {expr}"),
        }
    }
}

impl PartialEq for Spec {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Spec::Every(a), Spec::Every(b)) => a == b,
            (Spec::Cron { expr: a, .. }, Spec::Cron { expr: b, .. }) => a == b,
            _ => false,
        }
    }
}

impl Spec {
    /// Parses a cron expression of 5 fields, or 6 with seconds first.
    ///
    /// # Errors
    /// [`Error::Config`] naming `cron` and saying what is wrong.
    pub fn cron(expr: &str) -> Result<Spec> {
        let fields = expr.split_whitespace().count();
        let nickname = expr.trim_start().starts_with('@');
        if !nickname && !(5..=6).contains(&fields) {
            return Err(Error::config(
                "cron",
                format!(
                    "`{expr}` has {fields} fields; expected 5 (minute hour day-of-month month \
                     day-of-week) or 6 (seconds first)"
                ),
            ));
        }
        let parser = CronParser::builder()
            .seconds(Seconds::Optional)
            .year(Year::Disallowed)
            .build();
        let parsed = parser.parse(expr).map_err(|e| {
            Error::config("cron", format!("`{expr}` is not a cron expression: {e}"))
        })?;
        // An expression that never matches (the 30th of February) would only show up when the
        // scheduler looks for its next run: refuse it now.
        let probe = chrono::Utc.timestamp_millis_opt(0).single();
        if let Some(probe) = probe {
            if parsed.find_next_occurrence(&probe, false).is_err() {
                return Err(Error::config(
                    "cron",
                    format!("`{expr}` never matches a real date"),
                ));
            }
        }
        Ok(Spec::Cron {
            expr: expr.trim().to_string(),
            parsed: Box::new(parsed),
        })
    }

    /// An interval of at least one second, in whole milliseconds.
    ///
    /// # Errors
    /// [`Error::Config`] naming `every` when it is shorter than [`MIN_INTERVAL`].
    pub fn every(interval: Duration) -> Result<Spec> {
        if interval < MIN_INTERVAL {
            return Err(Error::config(
                "every",
                format!(
                    "{} is shorter than the shortest interval, 1s",
                    duration::format(interval)
                ),
            ));
        }
        Ok(Spec::Every(Duration::from_millis(
            u64::try_from(duration_ms(interval)).unwrap_or(u64::MAX),
        )))
    }
}

/// What to do with ticks that passed without being fired (no scheduler ran, or it stalled).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Missed {
    /// Fire none of them; wait for the next tick.
    Skip,
    /// Fire once for all of them (the latest), then go on as usual. The default.
    #[default]
    RunOnce,
    /// Fire the latest `n` of them, oldest first, each as its own job.
    CatchUp(u32),
}

impl fmt::Display for Missed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Missed::Skip => f.write_str("skip"),
            Missed::RunOnce => f.write_str("run_once"),
            Missed::CatchUp(n) => write!(f, "catch_up:{n}"),
        }
    }
}

impl FromStr for Missed {
    type Err = Error;

    /// `skip`, `run_once` or `catch_up:N`.
    fn from_str(s: &str) -> Result<Self> {
        let bad = || {
            Error::config(
                "missed",
                format!("`{s}` is not a missed-tick policy: use skip, run_once or catch_up:N"),
            )
        };
        match s.trim() {
            "skip" => Ok(Missed::Skip),
            "run_once" => Ok(Missed::RunOnce),
            other => {
                let n = other
                    .strip_prefix("catch_up:")
                    .ok_or_else(bad)?
                    .trim()
                    .parse::<u32>()
                    .map_err(|_| bad())?;
                if n == 0 || n > MAX_CATCH_UP {
                    return Err(Error::config(
                        "missed",
                        format!("catch_up:{n}: N must be 1 to {MAX_CATCH_UP} (use skip for none)"),
                    ));
                }
                Ok(Missed::CatchUp(n))
            }
        }
    }
}

/// A periodic schedule: which task to enqueue, with what, and when.
///
/// ```
/// use celeriac_core::schedule::{Missed, Schedule};
/// let nightly = Schedule::builder("nightly-report")
///     .cron("30 2 * * *")
///     .timezone("Europe/Berlin")
///     .task("reports.nightly")
///     .args(serde_json::json!({"day": "yesterday"}))
///     .missed(Missed::RunOnce)
///     .build()?;
/// assert_eq!(nightly.name(), "nightly-report");
/// # Ok::<(), celeriac_core::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Schedule {
    name: String,
    spec: Spec,
    tz: Tz,
    task: String,
    args: serde_json::Value,
    queue: Option<String>,
    priority: Option<Priority>,
    max_attempts: Option<u32>,
    expires_in: Option<Duration>,
    missed: Missed,
    paused: bool,
}

/// Which ticks a pass should fire, as [`Schedule::due`] computes them.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Due {
    /// Ticks to fire now, oldest first.
    pub fire: Vec<UnixMs>,
    /// Ticks passed over by the missed-tick policy (counted up to 10,000 per pass).
    pub skipped: u64,
    /// The latest tick handled (fired or skipped): the new cursor. `None` when nothing was due.
    pub through: Option<UnixMs>,
}

impl Schedule {
    /// Starts defining a schedule called `name`.
    pub fn builder(name: impl Into<String>) -> ScheduleBuilder {
        ScheduleBuilder {
            name: name.into(),
            spec: None,
            timezone: None,
            task: None,
            args: serde_json::Value::Null,
            queue: None,
            priority: None,
            max_attempts: None,
            expires_in: None,
            missed: Missed::default(),
            paused: false,
        }
    }

    /// The schedule's name (unique among the schedules of an application).
    pub fn name(&self) -> &str {
        &self.name
    }
    /// When it fires.
    pub fn spec(&self) -> &Spec {
        &self.spec
    }
    /// The time zone its cron expression is read in.
    pub fn timezone(&self) -> Tz {
        self.tz
    }
    /// The task it enqueues.
    pub fn task(&self) -> &str {
        &self.task
    }
    /// The task's arguments, as JSON.
    pub fn args(&self) -> &serde_json::Value {
        &self.args
    }
    /// Another queue than the task's own.
    pub fn queue(&self) -> Option<&str> {
        self.queue.as_deref()
    }
    /// Another priority than the task's own.
    pub fn priority(&self) -> Option<Priority> {
        self.priority
    }
    /// Total attempts of each job, when not the task's own.
    pub fn max_attempts(&self) -> Option<u32> {
        self.max_attempts
    }
    /// Each job expires if not started within this long.
    pub fn expires_in(&self) -> Option<Duration> {
        self.expires_in
    }
    /// The missed-tick policy.
    pub fn missed(&self) -> Missed {
        self.missed
    }
    /// Paused in its definition. A schedule is also paused while the store says so
    /// (`celeriac schedules pause`); one paused in its definition stays paused until the
    /// definition changes.
    pub fn paused(&self) -> bool {
        self.paused
    }

    /// The first tick strictly after `after`.
    pub fn next_after(&self, after: UnixMs) -> Option<UnixMs> {
        match &self.spec {
            Spec::Every(d) => {
                let p = duration_ms(*d).max(1);
                after.div_euclid(p).checked_add(1)?.checked_mul(p)
            }
            Spec::Cron { parsed, .. } => {
                let at = self.tz.timestamp_millis_opt(after).single()?;
                parsed
                    .find_next_occurrence(&at, false)
                    .ok()
                    .map(|t| t.timestamp_millis())
            }
        }
    }

    /// The latest tick at or before `at`.
    pub fn last_at_or_before(&self, at: UnixMs) -> Option<UnixMs> {
        match &self.spec {
            Spec::Every(d) => {
                let p = duration_ms(*d).max(1);
                at.div_euclid(p).checked_mul(p)
            }
            Spec::Cron { parsed, .. } => {
                let t = self.tz.timestamp_millis_opt(at).single()?;
                parsed
                    .find_previous_occurrence(&t, true)
                    .ok()
                    .map(|t| t.timestamp_millis())
            }
        }
    }

    /// The next `n` ticks strictly after `after`.
    pub fn upcoming(&self, after: UnixMs, n: usize) -> Vec<UnixMs> {
        let mut out = Vec::with_capacity(n);
        let mut at = after;
        while out.len() < n {
            match self.next_after(at) {
                Some(t) if t > at => {
                    out.push(t);
                    at = t;
                }
                _ => break,
            }
        }
        out
    }

    /// Ticks in `(after, until]`, oldest first, at most `limit` of them (the earliest).
    pub fn ticks_between(&self, after: UnixMs, until: UnixMs, limit: usize) -> Vec<UnixMs> {
        let mut out = Vec::new();
        let mut at = after;
        while out.len() < limit {
            match self.next_after(at) {
                Some(t) if t > at && t <= until => {
                    out.push(t);
                    at = t;
                }
                _ => break,
            }
        }
        out
    }

    /// The latest `limit` ticks in `(after, until]`, oldest first.
    fn latest_ticks(&self, after: UnixMs, until: UnixMs, limit: usize) -> Vec<UnixMs> {
        let mut out = Vec::new();
        let mut at = until;
        while out.len() < limit {
            match self.last_at_or_before(at) {
                Some(t) if t > after && t <= at => {
                    out.push(t);
                    match t.checked_sub(1) {
                        Some(before) => at = before,
                        None => break,
                    }
                }
                _ => break,
            }
        }
        out.reverse();
        out
    }

    /// Which ticks to fire at `now`, given that every tick up to `cursor` was handled.
    ///
    /// Ticks in `(cursor, now]` no older than `late_after` are on time and all fire. Older
    /// ones were missed, and the schedule's [`Missed`] policy picks which of them fire.
    /// Pure: the same arguments give the same answer in every process.
    pub fn due(&self, cursor: UnixMs, now: UnixMs, late_after: Duration) -> Due {
        if now <= cursor {
            return Due::default();
        }
        let late_before = now.saturating_sub(duration_ms(late_after)).max(cursor);
        let on_time = self.ticks_between(late_before, now, MAX_TICKS_PER_PASS);
        let mut due = Due::default();
        if late_before > cursor {
            let keep = match self.missed {
                Missed::Skip => 0,
                Missed::RunOnce => 1,
                Missed::CatchUp(n) => n as usize,
            };
            // Count what is passed over, up to a bound (a year of one-second ticks is not
            // worth counting one by one).
            let late = self.latest_ticks(cursor, late_before, MAX_TICKS_PER_PASS);
            let latest_late = late.last().copied();
            let fired_late = if on_time.is_empty() || keep > 1 {
                late.len().min(keep)
            } else {
                // Run once: an on-time tick already stands for the missed ones.
                0
            };
            due.skipped = (late.len() - fired_late) as u64;
            due.fire.extend_from_slice(&late[late.len() - fired_late..]);
            due.through = latest_late;
        }
        if let Some(&last) = on_time.last() {
            due.through = Some(last);
        }
        due.fire.extend(on_time);
        due
    }

    /// The unique key of the job fired for `tick`: `<schedule>@<tick as RFC 3339, UTC>`.
    pub fn tick_key(&self, tick: UnixMs) -> String {
        tick_key(&self.name, tick)
    }

    /// The id of the job fired for `tick` (see [`tick_job_id`]).
    pub fn tick_job_id(&self, tick: UnixMs) -> JobId {
        tick_job_id(&self.name, tick)
    }
}

/// The unique key of the job schedule `name` fires for `tick`:
/// `<name>@<tick as RFC 3339, UTC>` (as in `nightly@2024-03-31T01:00:00Z`).
pub fn tick_key(name: &str, tick: UnixMs) -> String {
    let at = chrono::Utc
        .timestamp_millis_opt(tick)
        .single()
        .map(|t: DateTime<chrono::Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true))
        .unwrap_or_else(|| tick.to_string());
    format!("{name}@{at}")
}

/// The id of the job schedule `name` fires for `tick`, the same in every process.
///
/// Shaped like a UUIDv7 so ids still sort by time: the 48-bit timestamp is the tick, and the
/// 74 other bits come from a UUIDv5 (SHA-1, RFC 9562) of the schedule's name, which is stable
/// across processes, platforms and Rust versions (unlike `DefaultHasher`).
pub fn tick_job_id(name: &str, tick: UnixMs) -> JobId {
    const NAMESPACE: uuid::Uuid = uuid::Uuid::from_bytes([
        0x6b, 0x3e, 0x1f, 0x0c, 0x6e, 0x0d, 0x4a, 0x6f, 0x9c, 0x2e, 0x45, 0x1e, 0x8a, 0x43, 0x5d,
        0x77,
    ]);
    let hash = *uuid::Uuid::new_v5(&NAMESPACE, name.as_bytes()).as_bytes();
    let ms = (tick.max(0) as u64) & 0xFFFF_FFFF_FFFF;
    let mut b = [0u8; 16];
    b[..6].copy_from_slice(&ms.to_be_bytes()[2..]);
    b[6..].copy_from_slice(&hash[6..]);
    b[6] = 0x70 | (b[6] & 0x0F);
    b[8] = 0x80 | (b[8] & 0x3F);
    JobId::from_bytes(b)
}

/// Builds a [`Schedule`]; [`ScheduleBuilder::build`] checks everything and names the
/// schedule in its errors.
#[derive(Debug, Clone)]
#[must_use = "nothing is defined until `.build()`"]
pub struct ScheduleBuilder {
    name: String,
    spec: Option<std::result::Result<String, Duration>>,
    timezone: Option<String>,
    task: Option<String>,
    args: serde_json::Value,
    queue: Option<String>,
    priority: Option<u8>,
    max_attempts: Option<u32>,
    expires_in: Option<Duration>,
    missed: Missed,
    paused: bool,
}

impl ScheduleBuilder {
    /// Fires when this cron expression matches: 5 fields, or 6 with seconds first.
    pub fn cron(mut self, expr: impl Into<String>) -> Self {
        self.spec = Some(Ok(expr.into()));
        self
    }
    /// Fires at every multiple of `interval` since the Unix epoch (at least one second).
    pub fn every(mut self, interval: Duration) -> Self {
        self.spec = Some(Err(interval));
        self
    }
    /// The IANA time zone the cron expression is read in, such as `Europe/Berlin` (default
    /// UTC). Intervals do not depend on it.
    pub fn timezone(mut self, tz: impl Into<String>) -> Self {
        self.timezone = Some(tz.into());
        self
    }
    /// The task to enqueue, by name.
    pub fn task(mut self, task: impl Into<String>) -> Self {
        self.task = Some(task.into());
        self
    }
    /// The task's arguments as JSON (default `null`).
    pub fn args(mut self, args: serde_json::Value) -> Self {
        self.args = args;
        self
    }
    /// Another queue than the task's own.
    pub fn queue(mut self, queue: impl Into<String>) -> Self {
        self.queue = Some(queue.into());
        self
    }
    /// Another priority (0..=9, 9 most urgent).
    pub fn priority(mut self, priority: u8) -> Self {
        self.priority = Some(priority);
        self
    }
    /// Total attempts of each job.
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = Some(attempts);
        self
    }
    /// Each job expires if not started within this long.
    pub fn expires_in(mut self, within: Duration) -> Self {
        self.expires_in = Some(within);
        self
    }
    /// The missed-tick policy (default [`Missed::RunOnce`]).
    pub fn missed(mut self, missed: Missed) -> Self {
        self.missed = missed;
        self
    }
    /// Defined as paused: it does not fire until the definition changes.
    pub fn paused(mut self, paused: bool) -> Self {
        self.paused = paused;
        self
    }

    /// Checks the definition.
    ///
    /// # Errors
    /// [`Error::Config`] whose setting reads `schedule "<name>": <field>`, for an empty or
    /// over-long name, a missing or invalid cron expression or interval, an unknown time zone,
    /// a missing task, or a priority outside 0..=9.
    pub fn build(self) -> Result<Schedule> {
        let name = self.name;
        let place = |field: &str| format!("schedule \"{name}\": {field}");
        let reword = |e: Error, field: &str| match e {
            Error::Config { message, .. } => Error::config(place(field), message),
            other => other,
        };
        if name.trim().is_empty() || name.len() > 200 {
            return Err(Error::config(
                format!("schedule \"{name}\": name"),
                "a schedule's name must be 1 to 200 bytes long and not blank",
            ));
        }
        if name.contains('@') {
            return Err(Error::config(
                place("name"),
                "a schedule's name cannot contain `@` (it separates the name from the tick in \
                 unique keys)",
            ));
        }
        let spec = match self.spec {
            Some(Ok(expr)) => Spec::cron(&expr).map_err(|e| reword(e, "cron"))?,
            Some(Err(d)) => Spec::every(d).map_err(|e| reword(e, "every"))?,
            None => {
                return Err(Error::config(
                    place("cron"),
                    "say when it fires: a cron expression or an interval (every)",
                ))
            }
        };
        let tz = match &self.timezone {
            None => Tz::UTC,
            Some(tz) => tz.trim().parse::<Tz>().map_err(|_| {
                Error::config(
                    place("timezone"),
                    format!(
                        "`{tz}` is not an IANA time zone (such as UTC, Europe/Berlin or \
                         America/New_York)"
                    ),
                )
            })?,
        };
        let task = match self.task {
            Some(t) if !t.trim().is_empty() && t.len() <= 200 => t,
            Some(_) => return Err(Error::config(place("task"), "must be 1 to 200 bytes long")),
            None => return Err(Error::config(place("task"), "say which task it enqueues")),
        };
        let priority = self
            .priority
            .map(Priority::new)
            .transpose()
            .map_err(|e| reword(e, "priority"))?;
        if self.max_attempts == Some(0) {
            return Err(Error::config(place("max_attempts"), "must be at least 1"));
        }
        if let Some(q) = &self.queue {
            if q.is_empty() || q.len() > 200 {
                return Err(Error::config(place("queue"), "must be 1 to 200 bytes long"));
            }
        }
        if let Missed::CatchUp(n) = self.missed {
            if n == 0 || n > MAX_CATCH_UP {
                return Err(Error::config(
                    place("missed"),
                    format!("catch_up:{n}: N must be 1 to {MAX_CATCH_UP} (use skip for none)"),
                ));
            }
        }
        // The unique key of a tick must fit.
        if tick_key(&name, 0).len() + 8 > Unique::MAX_KEY_LEN {
            return Err(Error::config(place("name"), "too long for a unique key"));
        }
        Ok(Schedule {
            name,
            spec,
            tz,
            task,
            args: self.args,
            queue: self.queue,
            priority,
            max_attempts: self.max_attempts,
            expires_in: self.expires_in,
            missed: self.missed,
            paused: self.paused,
        })
    }
}

#[cfg(test)]
mod tests;
