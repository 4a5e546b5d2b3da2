//! Schedules from a TOML file (`[[schedule]]` tables), and the checks a set of schedules
//! must pass: unique names, known tasks.

use super::{Missed, Schedule};
use crate::duration;
use crate::error::{Error, Result};

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
