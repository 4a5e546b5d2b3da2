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

/// Checks that no two schedules share a name.
///
/// # Errors
/// [`Error::Config`] naming the duplicated schedule.
pub fn check_unique_names(schedules: &[Schedule]) -> Result<()> {
    let mut seen = std::collections::HashSet::new();
    for s in schedules {
        if !seen.insert(s.name()) {
            return Err(Error::config(
                format!("schedule \"{}\"", s.name()),
                "defined twice: schedule names must be unique",
            ));
        }
    }
    Ok(())
}

/// Checks every schedule's task against `registry`.
///
/// # Errors
/// [`Error::Config`] naming the first schedule whose task is unknown, and listing the known
/// tasks.
pub fn check_tasks(schedules: &[Schedule], registry: &crate::task::Registry) -> Result<()> {
    for s in schedules {
        if registry.get(s.task()).is_none() {
            return Err(Error::config(
                format!("schedule \"{}\": task", s.name()),
                format!(
                    "unknown task `{}`; registered tasks: {}",
                    s.task(),
                    registry.names().join(", ")
                ),
            ));
        }
    }
    Ok(())
}

/// Schedules from a TOML file: one `[[schedule]]` table per schedule.
///
/// ```toml
/// [[schedule]]
/// name = "nightly-report"
/// cron = "30 2 * * *"          # 5 fields, or 6 with seconds first
/// timezone = "Europe/Berlin"   # default UTC
/// task = "reports.nightly"
/// args = { day = "yesterday" } # any TOML value, passed to the task as JSON
/// queue = "reports"            # default: the task's queue
/// priority = 7                 # 0..=9
/// missed = "run_once"          # skip | run_once (default) | catch_up:N
///
/// [[schedule]]
/// name = "heartbeat"
/// every = "30s"                # or 5m, 2h, 1d, 1h30m
/// task = "ops.ping"
/// paused = true
/// ```
///
/// Other keys: `max_attempts`, `expires_in` (a duration). Unknown keys are refused, so a typo
/// does not silently change a schedule.
///
/// # Errors
/// [`Error::Config`] whose setting names the file and line (`schedules.toml:7`), and the
/// schedule and field when the TOML parses but a schedule is wrong; duplicate names are
/// refused. `origin` names the file in messages.
pub fn parse_toml(text: &str, origin: &str) -> Result<Vec<Schedule>> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Doc {
        #[serde(default)]
        schedule: Vec<toml::Spanned<Entry>>,
    }
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Entry {
        name: String,
        cron: Option<String>,
        every: Option<String>,
        timezone: Option<String>,
        task: Option<String>,
        args: Option<toml::Value>,
        queue: Option<String>,
        priority: Option<u8>,
        max_attempts: Option<u32>,
        expires_in: Option<String>,
        missed: Option<String>,
        #[serde(default)]
        paused: bool,
    }
    let line_of = |offset: usize| text[..offset.min(text.len())].matches('\n').count() + 1;
    let doc: Doc = toml::from_str(text).map_err(|e| {
        let line = e.span().map(|s| line_of(s.start)).unwrap_or(1);
        Error::config(format!("{origin}:{line}"), e.message().trim())
    })?;
    let mut out = Vec::with_capacity(doc.schedule.len());
    for spanned in doc.schedule {
        let line = line_of(spanned.span().start);
        let e = spanned.into_inner();
        let at = |err: Error| match err {
            Error::Config { setting, message } => {
                Error::config(format!("{origin}:{line}: {setting}"), message)
            }
            other => other,
        };
        let place = |field: &str| format!("schedule \"{}\": {field}", e.name);
        let mut b = Schedule::builder(e.name.clone());
        match (&e.cron, &e.every) {
            (Some(_), Some(_)) => {
                return Err(at(Error::config(
                    place("every"),
                    "give either cron or every, not both",
                )))
            }
            (Some(c), None) => b = b.cron(c.clone()),
            (None, Some(every)) => {
                let d =
                    duration::parse(every).map_err(|err| at(Error::config(place("every"), err)))?;
                b = b.every(d);
            }
            (None, None) => {}
        }
        if let Some(tz) = e.timezone {
            b = b.timezone(tz);
        }
        if let Some(task) = e.task {
            b = b.task(task);
        }
        if let Some(args) = e.args {
            let json =
                serde_json::to_value(&args).map_err(|err| at(Error::config(place("args"), err)))?;
            b = b.args(json);
        }
        if let Some(q) = e.queue {
            b = b.queue(q);
        }
        if let Some(p) = e.priority {
            b = b.priority(p);
        }
        if let Some(n) = e.max_attempts {
            b = b.max_attempts(n);
        }
        if let Some(x) = e.expires_in {
            let d =
                duration::parse(&x).map_err(|err| at(Error::config(place("expires_in"), err)))?;
            b = b.expires_in(d);
        }
        if let Some(m) = e.missed {
            let missed = m.parse::<Missed>().map_err(|err| match err {
                Error::Config { message, .. } => at(Error::config(place("missed"), message)),
                other => other,
            })?;
            b = b.missed(missed);
        }
        b = b.paused(e.paused);
        out.push(b.build().map_err(at)?);
    }
    check_unique_names(&out).map_err(|err| match err {
        Error::Config { setting, message } => {
            Error::config(format!("{origin}: {setting}"), message)
        }
        other => other,
    })?;
    Ok(out)
}

/// Reads schedules from a TOML file (see [`parse_toml`]).
///
/// # Errors
/// The file cannot be read, or [`parse_toml`]'s errors; each names the file.
pub fn load_file(path: &std::path::Path) -> Result<Vec<Schedule>> {
    let origin = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| {
        Error::config(
            origin.clone(),
            format!("cannot read the schedule file: {e}"),
        )
    })?;
    parse_toml(&text, &origin)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::NaiveDate;

    fn at(tz: Tz, y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> UnixMs {
        let naive = NaiveDate::from_ymd_opt(y, mo, d)
            .and_then(|d| d.and_hms_opt(h, mi, s))
            .expect("valid date");
        tz.from_local_datetime(&naive)
            .earliest()
            .expect("exists")
            .timestamp_millis()
    }

    fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> UnixMs {
        at(Tz::UTC, y, mo, d, h, mi, s)
    }

    fn cron(name: &str, expr: &str, tz: &str) -> Schedule {
        Schedule::builder(name)
            .cron(expr)
            .timezone(tz)
            .task("t")
            .build()
            .expect("valid schedule")
    }

    fn every(name: &str, d: Duration, missed: Missed) -> Schedule {
        Schedule::builder(name)
            .every(d)
            .task("t")
            .missed(missed)
            .build()
            .expect("valid schedule")
    }

    #[test]
    fn intervals_are_anchored_to_the_epoch() {
        let s = every("five", Duration::from_secs(300), Missed::RunOnce);
        let t = utc(2024, 1, 1, 10, 7, 13);
        assert_eq!(s.next_after(t), Some(utc(2024, 1, 1, 10, 10, 0)));
        assert_eq!(
            s.next_after(utc(2024, 1, 1, 10, 10, 0)),
            Some(utc(2024, 1, 1, 10, 15, 0)),
            "strictly after"
        );
        assert_eq!(s.last_at_or_before(t), Some(utc(2024, 1, 1, 10, 5, 0)));
        assert_eq!(
            s.ticks_between(utc(2024, 1, 1, 10, 0, 0), utc(2024, 1, 1, 10, 20, 0), 100),
            vec![
                utc(2024, 1, 1, 10, 5, 0),
                utc(2024, 1, 1, 10, 10, 0),
                utc(2024, 1, 1, 10, 15, 0),
                utc(2024, 1, 1, 10, 20, 0)
            ]
        );
    }

    #[test]
    fn five_and_six_field_cron() {
        let s = cron("quarter", "*/15 * * * *", "UTC");
        assert_eq!(
            s.upcoming(utc(2024, 5, 1, 9, 1, 0), 2),
            vec![utc(2024, 5, 1, 9, 15, 0), utc(2024, 5, 1, 9, 30, 0)]
        );
        let s = cron("secs", "*/10 * * * * *", "UTC");
        assert_eq!(
            s.upcoming(utc(2024, 5, 1, 9, 0, 1), 2),
            vec![utc(2024, 5, 1, 9, 0, 10), utc(2024, 5, 1, 9, 0, 20)]
        );
    }

    #[test]
    fn cron_reads_the_wall_clock_of_its_time_zone() {
        let s = cron("ny", "0 9 * * *", "America/New_York");
        // 09:00 EST is 14:00 UTC in January.
        assert_eq!(
            s.next_after(utc(2024, 1, 10, 0, 0, 0)),
            Some(utc(2024, 1, 10, 14, 0, 0))
        );
    }

    #[test]
    fn spring_forward_runs_a_gap_time_once_at_the_end_of_the_gap() {
        // Europe/Berlin, 2024-03-31: 02:00 CET jumps to 03:00 CEST; 02:30 does not exist.
        let berlin = Tz::Europe__Berlin;
        let s = cron("nightly", "30 2 * * *", "Europe/Berlin");
        let runs = s.upcoming(at(berlin, 2024, 3, 29, 12, 0, 0), 4);
        assert_eq!(
            runs,
            vec![
                at(berlin, 2024, 3, 30, 2, 30, 0),
                // The first instant after the gap: 03:00 CEST = 01:00 UTC.
                utc(2024, 3, 31, 1, 0, 0),
                at(berlin, 2024, 4, 1, 2, 30, 0),
                at(berlin, 2024, 4, 2, 2, 30, 0),
            ]
        );
        // Exactly once that day, whichever instant the search starts from.
        let day = s.ticks_between(
            at(berlin, 2024, 3, 31, 0, 0, 0),
            at(berlin, 2024, 3, 31, 23, 59, 59),
            10,
        );
        assert_eq!(day, vec![utc(2024, 3, 31, 1, 0, 0)]);
        assert_eq!(
            s.ticks_between(
                utc(2024, 3, 31, 1, 0, 0),
                at(berlin, 2024, 3, 31, 23, 0, 0),
                10
            ),
            Vec::<UnixMs>::new(),
            "not again after the gap"
        );
    }

    #[test]
    fn fall_back_runs_a_repeated_time_once() {
        // Europe/Berlin, 2024-10-27: 03:00 CEST falls back to 02:00 CET; 02:30 happens twice.
        let berlin = Tz::Europe__Berlin;
        let s = cron("nightly", "30 2 * * *", "Europe/Berlin");
        let day = s.ticks_between(
            at(berlin, 2024, 10, 27, 0, 0, 0),
            at(berlin, 2024, 10, 27, 23, 0, 0),
            10,
        );
        // The first 02:30 (CEST, UTC+2) only.
        assert_eq!(day, vec![utc(2024, 10, 27, 0, 30, 0)]);
        // And the policy sees the same thing when the whole day was missed.
        let due = s.due(
            at(berlin, 2024, 10, 27, 0, 0, 0),
            at(berlin, 2024, 10, 27, 23, 0, 0),
            Duration::from_secs(30),
        );
        assert_eq!(due.fire, vec![utc(2024, 10, 27, 0, 30, 0)]);
        assert_eq!(due.skipped, 0);
    }

    #[test]
    fn intervals_ignore_daylight_saving_time() {
        let s = Schedule::builder("hourly")
            .every(Duration::from_secs(3600))
            .timezone("Europe/Berlin")
            .task("t")
            .build()
            .expect("valid");
        // Across the fall-back night: 25 wall-clock hours, 25 ticks, one hour apart.
        let from = utc(2024, 10, 26, 22, 0, 0);
        let ticks = s.ticks_between(from, from + 25 * 3_600_000, 100);
        assert_eq!(ticks.len(), 25);
        assert!(ticks.windows(2).all(|w| w[1] - w[0] == 3_600_000));
    }

    #[test]
    fn wildcard_hours_run_in_both_passes_of_a_repeated_hour() {
        let s = cron("quarter", "0,30 * * * *", "Europe/Berlin");
        let ticks = s.ticks_between(
            utc(2024, 10, 26, 23, 59, 0),
            utc(2024, 10, 27, 1, 59, 0),
            10,
        );
        // 00:00, 00:30, 01:00, 01:30 UTC: 02:00/02:30 CEST then 02:00/02:30 CET.
        assert_eq!(
            ticks,
            vec![
                utc(2024, 10, 27, 0, 0, 0),
                utc(2024, 10, 27, 0, 30, 0),
                utc(2024, 10, 27, 1, 0, 0),
                utc(2024, 10, 27, 1, 30, 0)
            ]
        );
    }

    #[test]
    fn missed_tick_policies() {
        let minute = Duration::from_secs(60);
        let late = Duration::from_secs(30);
        let t0 = utc(2024, 1, 1, 0, 0, 0);
        // An hour passed without a scheduler: 60 missed ticks, the last at t0 + 60 min.
        let now = t0 + 3_600_000 + 10_000;
        let last = t0 + 3_600_000;
        // The tick at `last` is only 10 s old: on time.
        let skip = every("s", minute, Missed::Skip).due(t0, now, late);
        assert_eq!(skip.fire, vec![last]);
        assert_eq!(skip.skipped, 59);
        assert_eq!(skip.through, Some(last));
        let once = every("o", minute, Missed::RunOnce).due(t0, now, late);
        assert_eq!(
            once.fire,
            vec![last],
            "the on-time tick stands for the missed"
        );
        assert_eq!(once.skipped, 59);
        let catch = every("c", minute, Missed::CatchUp(5)).due(t0, now, late);
        assert_eq!(
            catch.fire,
            vec![
                last - 5 * 60_000,
                last - 4 * 60_000,
                last - 3 * 60_000,
                last - 2 * 60_000,
                last - 60_000,
                last
            ],
            "the latest five missed, then the one on time"
        );
        assert_eq!(catch.skipped, 54);

        // Now 50 s after the last tick: every tick is late.
        let now = last + 50_000;
        let skip = every("s", minute, Missed::Skip).due(t0, now, late);
        assert!(skip.fire.is_empty());
        assert_eq!(skip.skipped, 60);
        assert_eq!(skip.through, Some(last));
        let once = every("o", minute, Missed::RunOnce).due(t0, now, late);
        assert_eq!(once.fire, vec![last]);
        assert_eq!(once.skipped, 59);
        let catch = every("c", minute, Missed::CatchUp(100)).due(t0, now, late);
        assert_eq!(catch.fire.len(), 60);
        assert_eq!(catch.skipped, 0);
        assert_eq!(catch.fire.first(), Some(&(t0 + 60_000)));

        // Nothing due: nothing handled.
        let none = every("o", minute, Missed::RunOnce).due(last, last + 59_000, late);
        assert_eq!(none, Due::default());
    }

    #[test]
    fn tick_ids_are_deterministic_time_ordered_and_distinct() {
        let a = tick_job_id("nightly", 1_700_000_000_000);
        assert_eq!(a, tick_job_id("nightly", 1_700_000_000_000));
        // A fixed value: the derivation must not change between versions.
        assert_eq!(a.to_string(), "018bcfe5-6800-7925-a48b-96ed781536e4");
        assert_ne!(a, tick_job_id("hourly", 1_700_000_000_000));
        assert!(tick_job_id("nightly", 1_700_000_001_000) > a);
        assert!(tick_job_id("aaa", 1_700_000_001_000) > tick_job_id("zzz", 1_700_000_000_000));
        assert_eq!(
            tick_key("nightly", utc(2024, 3, 31, 1, 0, 0)),
            "nightly@2024-03-31T01:00:00Z"
        );
    }

    #[test]
    fn bad_definitions_name_the_schedule_and_the_field() {
        let err = |b: ScheduleBuilder| b.build().expect_err("refused").to_string();
        let e = err(Schedule::builder("nightly").cron("61 * * * *").task("t"));
        assert!(
            e.contains("schedule \"nightly\": cron") && e.contains("61"),
            "{e}"
        );
        let e = err(Schedule::builder("nightly").cron("* * * *").task("t"));
        assert!(e.contains("4 fields"), "{e}");
        let e = err(Schedule::builder("nightly")
            .cron("0 0 0 * * * 2030")
            .task("t"));
        assert!(e.contains("7 fields"), "{e}");
        let e = err(Schedule::builder("feb").cron("0 0 30 2 *").task("t"));
        assert!(e.contains("never matches"), "{e}");
        let e = err(Schedule::builder("tz")
            .cron("0 0 * * *")
            .timezone("Mars/Olympus")
            .task("t"));
        assert!(
            e.contains("schedule \"tz\": timezone") && e.contains("Mars/Olympus"),
            "{e}"
        );
        let e = err(Schedule::builder("fast")
            .every(Duration::from_millis(500))
            .task("t"));
        assert!(e.contains("schedule \"fast\": every"), "{e}");
        let e = err(Schedule::builder("none").task("t"));
        assert!(e.contains("schedule \"none\""), "{e}");
        let e = err(Schedule::builder("notask").every(Duration::from_secs(1)));
        assert!(e.contains("schedule \"notask\": task"), "{e}");
        let e = err(Schedule::builder("p")
            .every(Duration::from_secs(1))
            .task("t")
            .priority(10));
        assert!(e.contains("schedule \"p\": priority"), "{e}");
        assert!("catch_up:0".parse::<Missed>().is_err());
        assert!("sometimes".parse::<Missed>().is_err());
        assert_eq!(
            "catch_up:5".parse::<Missed>().ok(),
            Some(Missed::CatchUp(5))
        );
        let a = every("dup", Duration::from_secs(1), Missed::Skip);
        let e = check_unique_names(&[a.clone(), a])
            .expect_err("duplicate")
            .to_string();
        assert!(e.contains("schedule \"dup\"") && e.contains("twice"), "{e}");
    }

    #[test]
    fn toml_files_define_schedules() {
        let text = r#"
[[schedule]]
name = "nightly"
cron = "30 2 * * *"
timezone = "Europe/Berlin"
task = "reports.nightly"
args = { day = "yesterday", n = 3 }
queue = "reports"
priority = 7
missed = "catch_up:5"

[[schedule]]
name = "ping"
every = "1m30s"
task = "ops.ping"
paused = true
"#;
        let s = parse_toml(text, "s.toml").expect("parses");
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].name(), "nightly");
        assert_eq!(s[0].timezone(), Tz::Europe__Berlin);
        assert_eq!(
            s[0].args(),
            &serde_json::json!({"day": "yesterday", "n": 3})
        );
        assert_eq!(s[0].queue(), Some("reports"));
        assert_eq!(s[0].priority().map(Priority::get), Some(7));
        assert_eq!(s[0].missed(), Missed::CatchUp(5));
        assert_eq!(s[1].spec(), &Spec::Every(Duration::from_secs(90)));
        assert!(s[1].paused());
        assert_eq!(s[1].missed(), Missed::RunOnce, "the default");
    }

    #[test]
    fn toml_errors_name_the_file_line_and_schedule() {
        let err = |text: &str| parse_toml(text, "s.toml").expect_err("refused").to_string();
        let e = err("[[schedule]]\nname = \"a\"\ncron = \"* * *\ntask = \"t\"\n");
        assert!(e.contains("s.toml:3"), "{e}");
        let e = err("[[schedule]]\nname = \"a\"\nevery = \"5m\"\ntask = \"t\"\n\n[[schedule]]\nname = \"b\"\ncron = \"0 25 * * *\"\ntask = \"t\"\n");
        assert!(e.contains("s.toml:6: schedule \"b\": cron"), "{e}");
        let e = err("[[schedule]]\nname = \"a\"\ncron = \"0 0 * * *\"\ntimezone = \"Europe/Berln\"\ntask = \"t\"\n");
        assert!(
            e.contains("s.toml:1: schedule \"a\": timezone") && e.contains("Europe/Berln"),
            "{e}"
        );
        let e = err("[[schedule]]\nname = \"a\"\ncronn = \"0 0 * * *\"\ntask = \"t\"\n");
        assert!(e.contains("s.toml:3") && e.contains("cronn"), "{e}");
        let e = err("[[schedule]]\nname = \"a\"\nevery = \"soon\"\ntask = \"t\"\n");
        assert!(
            e.contains("schedule \"a\": every") && e.contains("soon"),
            "{e}"
        );
        let e =
            err("[[schedule]]\nname = \"a\"\nevery = \"5m\"\ntask = \"t\"\nmissed = \"later\"\n");
        assert!(e.contains("schedule \"a\": missed"), "{e}");
        let e = err("[[schedule]]\nname = \"a\"\nevery = \"5m\"\ntask = \"t\"\n[[schedule]]\nname = \"a\"\nevery = \"1m\"\ntask = \"t\"\n");
        assert!(e.contains("s.toml") && e.contains("twice"), "{e}");
        let mut reg = crate::task::Registry::new();
        reg.insert(crate::task::TaskDef::of::<NoopTask>());
        let ok = parse_toml(
            "[[schedule]]\nname = \"a\"\nevery = \"5m\"\ntask = \"nope\"\n",
            "s.toml",
        )
        .expect("parses");
        let e = check_tasks(&ok, &reg)
            .expect_err("unknown task")
            .to_string();
        assert!(
            e.contains("schedule \"a\": task") && e.contains("nope") && e.contains("test.noop"),
            "{e}"
        );
    }

    struct NoopTask;
    impl crate::task::Task for NoopTask {
        const NAME: &'static str = "test.noop";
        type Args = ();
        type Output = ();
        async fn run(
            _ctx: crate::task::TaskContext,
            _args: (),
        ) -> std::result::Result<(), crate::task::TaskError> {
            Ok(())
        }
    }
}
