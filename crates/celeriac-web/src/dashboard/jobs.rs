//! Jobs as the job pages and the queue pages list them: a job as a listing row, links, states
//! and times typed by people, the store's refusals as page errors, and the routes of the
//! search ([`super::search`]) and of one job ([`super::job`]).

use super::layout::{badge, path_escape, when};
use super::request::{Failure, Req};
use axum::routing::{get, post};
use axum::Router;
use celeriac::clock::UnixMs;
use celeriac::{JobId, JobInfo, JobState};
use maud::{html, Markup};
use serde::Serialize;
use std::sync::Arc;

use super::request::Ctx;

/// The job routes: the search, one job, and the actions on one job.
pub(crate) fn routes(r: Router<Arc<Ctx>>) -> Router<Arc<Ctx>> {
    use super::{job, search};
    r.route("/jobs", get(search::page))
        .route("/api/v1/jobs", get(search::api))
        .route("/jobs/{id}", get(job::page))
        .route("/api/v1/jobs/{id}", get(job::api))
        .route("/api/v1/jobs/{id}/{action}", post(job::act))
}

/// Rows a listing shows at once.
pub(crate) const PAGE: usize = 50;

/// A job as a listing shows it: never its arguments.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Row {
    pub(crate) id: JobId,
    pub(crate) queue: String,
    pub(crate) task: String,
    pub(crate) state: JobState,
    pub(crate) priority: u8,
    pub(crate) attempts: u32,
    pub(crate) max_attempts: u32,
    pub(crate) created_at: UnixMs,
    pub(crate) run_at: UnixMs,
    pub(crate) finished_at: Option<UnixMs>,
    /// The last error, `kind: message`, cut short.
    pub(crate) error: Option<String>,
    /// The worker that holds, or last held, its lease.
    pub(crate) worker: Option<String>,
}

/// The listing row of `info`.
pub(crate) fn row_of(info: &JobInfo) -> Row {
    let j = &info.job;
    Row {
        id: j.id,
        queue: j.queue.clone(),
        task: j.task.clone(),
        state: info.state,
        priority: j.priority.get(),
        attempts: j.attempts,
        max_attempts: j.max_attempts,
        created_at: j.created_at,
        run_at: j.run_at,
        finished_at: j.finished_at,
        error: info
            .error
            .as_ref()
            .map(|e| cut(&format!("{}: {}", e.kind, e.message), 120)),
        worker: info.worker.clone(),
    }
}

/// `text` cut at `max` characters, with an ellipsis when cut.
fn cut(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_string();
    }
    let mut s: String = text.chars().take(max).collect();
    s.push('…');
    s
}

/// The link to a job's page.
pub(crate) fn job_href(req: &Req, id: JobId) -> String {
    req.link(&format!("/jobs/{id}"))
}

/// The link to a queue's page.
pub(crate) fn queue_href(req: &Req, queue: &str) -> String {
    req.link(&format!("/queues/{}", path_escape(queue)))
}

/// The state named `name` (`pending`, `dead`, ...).
pub(crate) fn parse_state(name: &str) -> Option<JobState> {
    let name = name.trim().to_ascii_lowercase();
    JobState::ALL.into_iter().find(|s| s.as_str() == name)
}

/// The states' names, for messages.
pub(crate) fn state_names() -> String {
    JobState::ALL.map(JobState::as_str).join(", ")
}

/// A moment typed by a person: an RFC 3339 date-time (`2026-12-06T14:00:00Z`), a date-time
/// without zone (UTC, as a `datetime-local` field sends it), a date (its midnight, UTC), or
/// how long ago (`1h`, `7d`, `90m`) from `now`.
///
/// # Errors
/// The text is none of these (the message says what is accepted).
pub(crate) fn parse_moment(text: &str, now: UnixMs) -> Result<UnixMs, String> {
    let t = text.trim();
    if let Ok(d) = chrono::DateTime::parse_from_rfc3339(t) {
        return Ok(d.timestamp_millis());
    }
    for format in [
        "%Y-%m-%dT%H:%M:%S",
        "%Y-%m-%dT%H:%M",
        "%Y-%m-%d %H:%M:%S",
        "%Y-%m-%d %H:%M",
    ] {
        if let Ok(d) = chrono::NaiveDateTime::parse_from_str(t, format) {
            return Ok(d.and_utc().timestamp_millis());
        }
    }
    if let Ok(d) = chrono::NaiveDate::parse_from_str(t, "%Y-%m-%d") {
        if let Some(midnight) = d.and_hms_opt(0, 0, 0) {
            return Ok(midnight.and_utc().timestamp_millis());
        }
    }
    if let Ok(ago) = celeriac::duration::parse_ms(t) {
        return Ok(now.saturating_sub(i64::try_from(ago).unwrap_or(i64::MAX)));
    }
    Err(format!(
        "`{t}` is not a time: write 2026-12-06T14:00:00Z, 2026-12-06, or how long ago (1h, 7d)"
    ))
}

/// A store error as a failure: a bad cursor or setting is the request's fault (400).
pub(crate) fn store_failure(e: celeriac::Error) -> Failure {
    match e {
        celeriac::Error::Config { setting, message } => {
            Failure::bad_request(format!("{setting}: {message}"))
        }
        other => Failure::from(other),
    }
}

/// A table of job rows (the search's; the queue page draws its own, with checkboxes).
pub(crate) fn rows_table(req: &Req, rows: &[Row], now: UnixMs) -> Markup {
    html! {
        table.jobs {
            thead { tr {
                th { "Job" } th { "Queue" } th { "State" } th { "Task" } th { "Created" }
                th.num { "Attempts" } th { "Last error" }
            } }
            tbody {
                @for r in rows {
                    tr data-job=(r.id) {
                        td { a href=(job_href(req, r.id)) { code { (r.id) } } }
                        td { a href=(queue_href(req, &r.queue)) { (r.queue) } }
                        td { (badge(r.state.as_str())) }
                        td { (r.task) }
                        td { (when(r.created_at, now)) }
                        td.num { (r.attempts) "/" (r.max_attempts) }
                        td.reason { (r.error.as_deref().unwrap_or("")) }
                    }
                }
            }
        }
    }
}
