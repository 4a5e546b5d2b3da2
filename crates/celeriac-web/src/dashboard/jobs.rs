//! Jobs: a search over the queues with qualifiers (`task:`, `queue:`, `state:`, `error:`,
//! `id:`, `after:`, `before:`), one page of each queue and state per page, and one job's page:
//! its timeline, arguments and result (redacted), progress, headers, workflow, the actions
//! that fit its state, and the `celeriac enqueue` command that enqueues it again.
//!
//! Also the pieces the queue pages share: a job as a listing row, times typed by people, and
//! the button that posts an action and comes back to a chosen page.

use super::layout::{self, badge, json_block, path_escape, when};
use super::request::{Done, Failure, Form, Outcome, Req};
use axum::extract::{Path, Query};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use celeriac::clock::UnixMs;
use celeriac::workflow::FLOW_HEADER;
use celeriac::{CancelOutcome, EventLog, JobId, JobInfo, JobState, QueueAdmin, ResultStore};
use maud::{html, Markup};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use super::request::Ctx;

/// The job routes: the search, one job, and the actions on one job.
pub(crate) fn routes(r: Router<Arc<Ctx>>) -> Router<Arc<Ctx>> {
    r.route("/jobs", get(search_page))
        .route("/api/v1/jobs", get(search_api))
        .route("/jobs/{id}", get(job_page))
        .route("/api/v1/jobs/{id}", get(job_api))
        .route("/api/v1/jobs/{id}/{action}", post(job_act))
}

/// Rows a listing shows at once.
pub(crate) const PAGE: usize = 50;

/// Arguments and results are shown up to this many characters.
const SHOWN_MAX: usize = 4096;

/// The newest events a job page looks through for the job's own.
const EVENTS_READ: usize = 1000;

// ---------------------------------------------------------------------------------------
// Shared with the queue pages
// ---------------------------------------------------------------------------------------

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
fn rows_table(req: &Req, rows: &[Row], now: UnixMs) -> Markup {
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

// ---------------------------------------------------------------------------------------
// The search
// ---------------------------------------------------------------------------------------

/// The states searched when the query names none: jobs waiting, running or gone wrong.
pub(crate) const DEFAULT_STATES: [JobState; 5] = [
    JobState::Pending,
    JobState::Active,
    JobState::Retrying,
    JobState::Failed,
    JobState::Dead,
];

/// The qualifiers, for the help line and messages.
const QUALIFIERS: &str = "task:, queue:, state:, error:, id:, after:, before:";

/// A search as typed, understood.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub(crate) struct Search {
    /// `id:` — the job looked up directly (the rest is then ignored).
    pub(crate) id: Option<JobId>,
    /// `task:`
    pub(crate) task: Option<String>,
    /// `queue:`
    pub(crate) queue: Option<String>,
    /// `state:` (repeated or comma-separated; `any` for all); empty: [`DEFAULT_STATES`].
    pub(crate) states: Vec<JobState>,
    /// `error:` — text in the last error's kind or message.
    pub(crate) error: Option<String>,
    /// `after:` — created at or after.
    pub(crate) after: Option<UnixMs>,
    /// `before:` — created before.
    pub(crate) before: Option<UnixMs>,
    /// Other words: looked for, together as one phrase, in the last error.
    pub(crate) words: Vec<String>,
}

/// One piece of a query: `key:value` or a free word (quoted text is one piece; a quote
/// before any colon makes it free text).
fn pieces(q: &str) -> Result<Vec<(Option<String>, String)>, String> {
    let mut out = Vec::new();
    let mut chars = q.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.peek().is_none() {
            return Ok(out);
        }
        let (mut key, mut value, mut quoted) = (None, String::new(), false);
        while let Some(&c) = chars.peek() {
            if c.is_whitespace() {
                break;
            }
            chars.next();
            match c {
                '"' => {
                    quoted = true;
                    let mut closed = false;
                    for c in chars.by_ref() {
                        if c == '"' {
                            closed = true;
                            break;
                        }
                        value.push(c);
                    }
                    if !closed {
                        return Err("a quote is not closed: write error:\"two words\"".into());
                    }
                }
                ':' if key.is_none()
                    && !quoted
                    && !value.is_empty()
                    && value.chars().all(|c| c.is_ascii_alphabetic() || c == '_') =>
                {
                    key = Some(value.to_ascii_lowercase());
                    value = String::new();
                }
                c => value.push(c),
            }
        }
        out.push((key, value));
    }
}

/// Reads a search: qualifiers, quoted text, free words; times relative to `now`.
///
/// # Errors
/// A qualifier that is unknown, given twice or empty, a state, id or time that does not read,
/// an unclosed quote, `after:` not before `before:`.
pub(crate) fn parse_search(q: &str, now: UnixMs) -> Result<Search, String> {
    let mut s = Search::default();
    for (key, value) in pieces(q)? {
        let Some(key) = key else {
            if !value.is_empty() {
                s.words.push(value);
            }
            continue;
        };
        if value.trim().is_empty() {
            return Err(format!("`{key}:` needs a value"));
        }
        let twice = || format!("`{key}:` is given twice");
        match key.as_str() {
            "state" => {
                for name in value.split(',').map(str::trim).filter(|n| !n.is_empty()) {
                    if matches!(name, "any" | "all") {
                        s.states.extend(JobState::ALL);
                        continue;
                    }
                    let state = parse_state(name).ok_or_else(|| {
                        format!("`{name}` is not a state: use {}, or any", state_names())
                    })?;
                    s.states.push(state);
                }
            }
            "task" | "queue" | "error" => {
                let slot = match key.as_str() {
                    "task" => &mut s.task,
                    "queue" => &mut s.queue,
                    _ => &mut s.error,
                };
                if slot.replace(value).is_some() {
                    return Err(twice());
                }
            }
            "id" => {
                let id = value
                    .parse::<JobId>()
                    .map_err(|_| format!("`{value}` is not a job id"))?;
                if s.id.replace(id).is_some() {
                    return Err(twice());
                }
            }
            "after" | "before" => {
                let at = parse_moment(&value, now).map_err(|e| format!("{key}: {e}"))?;
                let slot = if key == "after" {
                    &mut s.after
                } else {
                    &mut s.before
                };
                if slot.replace(at).is_some() {
                    return Err(twice());
                }
            }
            other => {
                return Err(format!(
                    "unknown qualifier `{other}:`; the qualifiers are {QUALIFIERS} (put text \
                     with a colon in quotes to look for it in errors)"
                ))
            }
        }
    }
    let mut seen = Vec::new();
    s.states.retain(|st| {
        let new = !seen.contains(st);
        seen.push(*st);
        new
    });
    if let (Some(a), Some(b)) = (s.after, s.before) {
        if a >= b {
            return Err("after: must come before before:".into());
        }
    }
    Ok(s)
}

impl Search {
    /// The states it looks in.
    fn states(&self) -> Vec<JobState> {
        if self.states.is_empty() {
            DEFAULT_STATES.to_vec()
        } else {
            self.states.clone()
        }
    }

    /// The free words as one phrase.
    fn phrase(&self) -> Option<String> {
        (!self.words.is_empty()).then(|| self.words.join(" "))
    }

    /// The listing query of one queue and state.
    fn query(&self, queue: &str, state: JobState) -> celeriac::backend::JobQuery {
        let mut q = celeriac::backend::JobQuery::new(queue, state);
        q.task = self.task.clone();
        q.error = self.error.clone().or_else(|| self.phrase());
        q.created_from = self.after;
        q.created_until = self.before;
        q.newest_first = true;
        q
    }

    /// Whether `info` passes what the store's filter could not take: the free words when
    /// `error:` is given too.
    fn passes(&self, info: &JobInfo) -> bool {
        let (Some(_), Some(phrase)) = (&self.error, self.phrase()) else {
            return true;
        };
        let phrase = phrase.to_lowercase();
        info.error.as_ref().is_some_and(|e| {
            e.kind.to_lowercase().contains(&phrase) || e.message.to_lowercase().contains(&phrase)
        })
    }
}

/// Where a search stands in one queue and state: the store's cursor and how many jobs of
/// the page it gives were already shown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Source {
    /// The queue.
    q: String,
    /// The state.
    s: JobState,
    /// The store's cursor (`None`: the start).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    c: Option<String>,
    /// Jobs of that page already shown.
    #[serde(default, skip_serializing_if = "is_zero")]
    k: usize,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// The search's query string.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct SearchQ {
    q: Option<String>,
    cursor: Option<String>,
}

/// A page of search results (and its JSON twin).
#[derive(Debug, Serialize)]
pub(crate) struct Found {
    now: UnixMs,
    /// The query as typed.
    query: String,
    /// As understood.
    search: Search,
    /// The states looked in.
    states: Vec<JobState>,
    /// Whether those are the default ones.
    default_states: bool,
    /// Queue-and-state listings read for this page.
    listings: usize,
    /// Jobs the store examined.
    scanned: u64,
    /// The matching jobs, newest first.
    jobs: Vec<Row>,
    /// Where the next page starts, when any listing has more.
    next: Option<String>,
}

async fn load_search(req: &Req, q: &SearchQ) -> Outcome<Found> {
    let store = req.ctx.store();
    let now = req.ctx.now();
    let query = q.q.clone().unwrap_or_default();
    let search = parse_search(&query, now).map_err(Failure::bad_request)?;
    let states = search.states();
    let mut found = Found {
        now,
        query,
        default_states: search.states.is_empty(),
        states: states.clone(),
        search,
        listings: 0,
        scanned: 0,
        jobs: Vec::new(),
        next: None,
    };
    if let Some(id) = found.search.id {
        let info = req.timed(store.get(id)).await?;
        found.jobs = info.iter().map(row_of).collect();
        return Ok(found);
    }
    let sources: Vec<Source> = match &q.cursor {
        Some(c) => serde_json::from_str(c).map_err(|_| {
            Failure::bad_request("the cursor does not read: start the search again")
        })?,
        None => {
            let stats = req.timed(store.stats()).await?;
            let mut sources = Vec::new();
            for st in stats.iter().filter(|st| match &found.search.queue {
                Some(q) => &st.queue == q,
                None => st.queue != crate::CANARY_QUEUE,
            }) {
                for state in &states {
                    if st.count(*state) > 0 {
                        sources.push(Source {
                            q: st.queue.clone(),
                            s: *state,
                            c: None,
                            k: 0,
                        });
                    }
                }
            }
            sources
        }
    };
    // One page of each listing; the pages merged newest first. A listing whose page is not
    // shown to its end goes on from the same cursor, past what was shown.
    struct Read {
        source: Source,
        jobs: VecDeque<JobInfo>,
        next: Option<String>,
        shown: usize,
    }
    let mut reads = Vec::with_capacity(sources.len());
    for source in sources {
        let query = found.search.query(&source.q, source.s);
        let page = req
            .timed(store.list_jobs(query, source.c.clone(), PAGE))
            .await
            .map_err(store_failure)?;
        found.scanned += page.scanned;
        found.listings += 1;
        reads.push(Read {
            jobs: page.jobs.into_iter().skip(source.k).collect(),
            next: page.next,
            source,
            shown: 0,
        });
    }
    while found.jobs.len() < PAGE {
        let newest = reads
            .iter()
            .enumerate()
            .filter_map(|(i, r)| r.jobs.front().map(|j| (i, j.job.created_at)))
            .max_by_key(|(_, at)| *at);
        let Some((i, _)) = newest else { break };
        let r = &mut reads[i];
        let Some(info) = r.jobs.pop_front() else {
            break;
        };
        r.shown += 1;
        if found.search.passes(&info) {
            found.jobs.push(row_of(&info));
        }
    }
    let rest: Vec<Source> = reads
        .into_iter()
        .filter_map(|r| {
            if r.jobs.is_empty() {
                r.next.map(|c| Source {
                    c: Some(c),
                    k: 0,
                    ..r.source
                })
            } else {
                Some(Source {
                    k: r.source.k + r.shown,
                    ..r.source
                })
            }
        })
        .collect();
    if !rest.is_empty() {
        found.next = serde_json::to_string(&rest).ok();
    }
    found
        .jobs
        .sort_by(|a, b| b.created_at.cmp(&a.created_at).then(b.id.cmp(&a.id)));
    Ok(found)
}

fn search_form(req: &Req, query: &str) -> Markup {
    html! {
        form.search method="get" action=(req.link("/jobs")) role="search" {
            input type="search" name="q" value=(query) aria-label="search jobs"
                placeholder="task:emails.send state:dead error:\"connection refused\" after:1h";
            " "
            button type="submit" { "Search" }
        }
        p.help {
            "Qualifiers: " code { "task:NAME" } " " code { "queue:NAME" } " "
            code { "state:dead,failed" } " (or " code { "state:any" } ") "
            code { "error:TEXT" } " or " code { "error:\"two words\"" } " "
            code { "id:JOB-ID" } " " code { "after:" } " / " code { "before:" }
            " a date-time (" code { "2026-12-06T14:00:00Z" } "), a date (" code { "2026-12-06" }
            ") or how long ago (" code { "1h" } ", " code { "7d" } "). Other words are looked \
             for in the last error. Without " code { "state:" } ", the search looks in "
            (DEFAULT_STATES.map(JobState::as_str).join(", ")) " jobs."
        }
    }
}

async fn search_page(req: Req, Query(q): Query<SearchQ>) -> Response {
    let data = load_search(&req, &q).await;
    if let Err(f) = &data {
        if f.status == StatusCode::BAD_REQUEST {
            // A query that does not read: the box again, with what is wrong.
            let typed = q.q.clone().unwrap_or_default();
            let message = f.message.clone();
            let mut res = req.page("Jobs", Ok(()), |req, _| {
                html! {
                    (search_form(req, &typed))
                    p.notice.bad role="alert" { (message) }
                }
            });
            *res.status_mut() = StatusCode::BAD_REQUEST;
            return res;
        }
    }
    req.page("Jobs", data, |req, f| {
        html! {
            (search_form(req, &f.query))
            p.cost {
                @if f.search.id.is_some() {
                    "Looked the job up by its id (other qualifiers are not used with id:)."
                } @else {
                    (f.jobs.len()) " jobs shown, newest first, from " (f.listings)
                    " listings (" (f.states.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", "))
                    @if f.default_states { ", the default" }
                    "); " (f.scanned) " examined."
                }
            }
            @if f.jobs.is_empty() {
                p.empty { "No job matches." }
            } @else {
                (rows_table(req, &f.jobs, f.now))
            }
            (layout::pager(req, f.next.as_deref()))
        }
    })
}

async fn search_api(req: Req, Query(q): Query<SearchQ>) -> Response {
    Req::json(load_search(&req, &q).await)
}

// ---------------------------------------------------------------------------------------
// One job
// ---------------------------------------------------------------------------------------

/// One moment of a job's life.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Moment {
    pub(crate) at: UnixMs,
    /// What happened, in words.
    pub(crate) what: String,
    /// The event's kind, when it comes from the event stream.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) event: Option<String>,
}

/// The last error.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct LastError {
    pub(crate) kind: String,
    pub(crate) message: String,
    /// The attempt (1-based) it happened in.
    pub(crate) attempt: u32,
    /// When, as far as known (the event of the job's end, or its end).
    pub(crate) at: Option<UnixMs>,
}

/// Everything a job page shows (and its JSON twin); arguments and result redacted.
#[derive(Debug, Serialize)]
pub(crate) struct JobView {
    now: UnixMs,
    id: JobId,
    queue: String,
    task: String,
    state: JobState,
    priority: u8,
    attempts: u32,
    max_attempts: u32,
    created_at: UnixMs,
    run_at: UnixMs,
    started_at: Option<UnixMs>,
    finished_at: Option<UnixMs>,
    expires_at: Option<UnixMs>,
    worker: Option<String>,
    lease_until: Option<UnixMs>,
    /// The arguments as JSON, redacted (text cut at 4,096 characters when longer).
    arguments: Value,
    /// Whether the arguments were too long and are cut.
    arguments_cut: bool,
    /// The result as JSON, redacted (cut likewise), when one is kept.
    result: Option<Value>,
    result_cut: bool,
    error: Option<LastError>,
    progress: Option<celeriac::Progress>,
    /// Headers, less the secret-looking ones and the workflow's continuation.
    headers: BTreeMap<String, String>,
    /// How many headers are not shown.
    headers_hidden: usize,
    /// The workflow the job belongs to.
    workflow: Option<JobId>,
    /// The job that enqueued it, in a workflow.
    parent: Option<JobId>,
    /// Its life as far as the store knows, oldest first.
    timeline: Vec<Moment>,
    /// Events read to find the job's own (the newest ones).
    events_read: usize,
    /// `celeriac enqueue` with the same task, arguments and options.
    command: String,
    /// Whether redaction changed the arguments (the command then carries `***`).
    command_redacted: bool,
}

/// A payload or result as JSON, redacted, cut at [`SHOWN_MAX`] characters (as text then).
fn shown(req: &Req, task: &str, encoding: celeriac::Encoding, bytes: &[u8]) -> (Value, bool, bool) {
    let value = match encoding.decode::<Value>(bytes) {
        Ok(v) => v,
        // The raw bytes may hold a secret the redactor would have hidden: never shown.
        Err(_) => {
            return (
                Value::String(format!(
                    "<{} bytes that do not decode as {encoding:?}>",
                    bytes.len()
                )),
                false,
                false,
            )
        }
    };
    let redacted = (req.ctx.redactor)(task, value.clone());
    let changed = redacted != value;
    let text = serde_json::to_string_pretty(&redacted).unwrap_or_default();
    if text.chars().count() > SHOWN_MAX {
        let cut_text: String = text.chars().take(SHOWN_MAX).collect();
        return (Value::String(cut_text), true, changed);
    }
    (redacted, false, changed)
}

/// Whether a header's name looks like it holds a secret.
fn secret_header(name: &str) -> bool {
    let probe = serde_json::json!({ name: "x" });
    super::redact_secrets(probe.clone()) != probe
}

/// Text quoted for a POSIX shell: bare when it is plainly safe, else in single quotes.
pub(crate) fn shell_quote(text: &str) -> String {
    let safe = !text.is_empty()
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-.,/:@%+=".contains(c));
    if safe {
        return text.to_string();
    }
    format!("'{}'", text.replace('\'', r"'\''"))
}

/// The `celeriac enqueue` command that enqueues `info`'s task again with `args`, in its
/// queue with its priority and attempts (and unique key); `--unchecked` when this
/// application does not know the task.
pub(crate) fn enqueue_command(info: &JobInfo, args: &Value, known: bool) -> String {
    let j = &info.job;
    let json = serde_json::to_string(args).unwrap_or_else(|_| "null".into());
    let mut cmd = format!(
        "celeriac enqueue {} --args {} --queue {} --priority {} --max-attempts {}",
        shell_quote(&j.task),
        shell_quote(&json),
        shell_quote(&j.queue),
        j.priority.get(),
        j.max_attempts
    );
    if let Some(u) = &j.unique {
        cmd.push_str(&format!(" --unique {}", shell_quote(&u.key)));
        let lifetime = match u.lifetime {
            celeriac::UniqueFor::UntilStarted => Some("started".to_string()),
            celeriac::UniqueFor::UntilFinished => None,
            celeriac::UniqueFor::Window(d) => {
                Some(format!("window={}", celeriac::duration::format(d)))
            }
            celeriac::UniqueFor::Debounce(d) => {
                Some(format!("debounce={}", celeriac::duration::format(d)))
            }
        };
        if let Some(l) = lifetime {
            cmd.push_str(&format!(" --unique-for {l}"));
        }
    }
    if !known {
        cmd.push_str(" --unchecked");
    }
    cmd
}

/// The moments of a job's life the store knows, with its events, oldest first.
fn timeline(info: &JobInfo, events: &[celeriac::Event]) -> Vec<Moment> {
    let j = &info.job;
    let moment = |at, what: String| Moment {
        at,
        what,
        event: None,
    };
    let mut t = vec![moment(
        j.created_at,
        format!(
            "enqueued in {} (priority {}, up to {} attempts)",
            j.queue,
            j.priority.get(),
            j.max_attempts
        ),
    )];
    if info.state == JobState::Retrying {
        t.push(moment(j.run_at, format!("attempt {} due", j.attempts + 1)));
    } else if j.run_at > j.created_at && j.started_at.is_none() {
        t.push(moment(j.run_at, "due to run (delayed)".into()));
    }
    if let Some(at) = j.started_at {
        t.push(moment(at, "first attempt started".into()));
    }
    for e in events {
        let by = e
            .actor
            .as_deref()
            .map(|a| format!(" (by {a})"))
            .unwrap_or_default();
        t.push(Moment {
            at: e.at,
            what: format!("{}{by}", e.message),
            event: Some(e.kind.clone()),
        });
    }
    if let (JobState::Active, Some(until)) = (info.state, info.lease_until) {
        t.push(moment(
            until,
            format!(
                "attempt {} runs on {}; its lease runs until then",
                j.attempts,
                info.worker.as_deref().unwrap_or("a worker")
            ),
        ));
    }
    if let Some(at) = j.finished_at {
        t.push(moment(at, format!("ended {}", info.state)));
    }
    t.sort_by_key(|m| m.at);
    t
}

async fn load_job(req: &Req, id: &str) -> Outcome<JobView> {
    let missing = || {
        Failure::not_found(format!(
            "no job {id} (it never existed, or its record expired)"
        ))
    };
    let id: JobId = id.parse().map_err(|_| missing())?;
    let store = req.ctx.store();
    let info = req.timed(store.get(id)).await?.ok_or_else(missing)?;
    let events = req.timed(store.events(None, EVENTS_READ)).await?;
    let events_read = events.len();
    let text_id = id.to_string();
    let mine: Vec<celeriac::Event> = events
        .into_iter()
        .filter(|e| {
            e.job == Some(id) || (e.kind.starts_with("admin.") && e.message.contains(&text_id))
        })
        .collect();
    let j = &info.job;
    let (arguments, arguments_cut, command_redacted) = shown(req, &j.task, j.encoding, &j.payload);
    let (result, result_cut) = match &info.result {
        Some(bytes) => {
            let (v, cut, _) = shown(req, &j.task, j.encoding, bytes);
            (Some(v), cut)
        }
        None => (None, false),
    };
    let error = info.error.as_ref().map(|e| {
        // When: the event of the job's end that carries this error, else its end.
        let told = format!("{}: {}", e.kind, e.message);
        let at = mine
            .iter()
            .rev()
            .find(|ev| ev.kind.starts_with("job.") && ev.message == told)
            .map(|ev| ev.at)
            .or(j.finished_at.filter(|_| info.state.is_terminal()));
        LastError {
            kind: e.kind.clone(),
            message: e.message.clone(),
            attempt: e.attempt,
            at,
        }
    });
    let mut headers = BTreeMap::new();
    let mut headers_hidden = 0;
    for (k, v) in &j.headers {
        if k == FLOW_HEADER || secret_header(k) {
            headers_hidden += 1;
        } else {
            headers.insert(k.clone(), v.clone());
        }
    }
    // The command carries the arguments as shown: never what the redactor hid.
    let command_args = if arguments_cut {
        Value::Null
    } else {
        arguments.clone()
    };
    let known = req.ctx.app.registry().get(&j.task).is_some();
    Ok(JobView {
        now: req.ctx.now(),
        id,
        queue: j.queue.clone(),
        task: j.task.clone(),
        state: info.state,
        priority: j.priority.get(),
        attempts: j.attempts,
        max_attempts: j.max_attempts,
        created_at: j.created_at,
        run_at: j.run_at,
        started_at: j.started_at,
        finished_at: j.finished_at,
        expires_at: j.expires_at,
        worker: info.worker.clone(),
        lease_until: info.lease_until,
        command: enqueue_command(&info, &command_args, known),
        command_redacted: command_redacted || arguments_cut,
        arguments,
        arguments_cut,
        result,
        result_cut,
        error,
        progress: info.progress.clone(),
        headers,
        headers_hidden,
        workflow: j.root_id,
        parent: j.parent_id,
        timeline: timeline(&info, &mine),
        events_read,
    })
}

/// The id of the command's `<pre>`, which the copy button names.
const COMMAND_ID: &str = "enqueue-command";

async fn job_page(req: Req, Path(id): Path<String>) -> Response {
    let data = load_job(&req, &id).await;
    let title = format!("Job {id}");
    req.page(&title, data, |req, v| {
        let api = format!("/api/v1/jobs/{}", v.id);
        let here = layout::back_of(req);
        html! {
            section.summary {
                (badge(v.state.as_str()))
                " " (v.task) " in " a href=(queue_href(req, &v.queue)) { (v.queue) }
                div.actions {
                    @if v.state == JobState::Dead {
                        (layout::action_to(req, &format!("{api}/retry"), "Retry", None, &[], &here))
                    }
                    @if !v.state.is_terminal() {
                        (layout::action_to(req, &format!("{api}/cancel"), "Cancel",
                            Some("Cancel this job?"), &[], &here))
                    }
                    @if v.state != JobState::Active {
                        (layout::action_to(req, &format!("{api}/delete"), "Delete",
                            Some("Delete this job for good?"), &[],
                            &format!("/queues/{}", path_escape(&v.queue))))
                    }
                }
                @if v.state == JobState::Failed {
                    p.help { "A failed job ended with an error its task marked as not worth \
                        retrying, so it is not retried by hand; the command below enqueues it again." }
                }
                table.facts {
                    tbody {
                        tr { th { "Id" } td { code { (v.id) } } }
                        tr { th { "Priority" } td { (v.priority) } }
                        tr { th { "Attempts" } td { (v.attempts) " started of " (v.max_attempts) } }
                        tr { th { "Created" } td { (when(v.created_at, v.now)) } }
                        tr { th { "Run at" } td { (when(v.run_at, v.now)) } }
                        @if let Some(at) = v.started_at { tr { th { "Started" } td { (when(at, v.now)) } } }
                        @if let Some(at) = v.finished_at { tr { th { "Finished" } td { (when(at, v.now)) } } }
                        @if let Some(at) = v.expires_at { tr { th { "Expires" } td { (when(at, v.now)) } } }
                        @if let Some(w) = &v.worker {
                            tr { th { "Worker" } td { (w)
                                @if let Some(l) = v.lease_until { " (lease until " (layout::time(l)) ")" } } }
                        }
                        @if let Some(w) = v.workflow {
                            tr { th { "Workflow" } td { a href=(req.link(&format!("/workflows/{w}"))) { code { (w) } } } }
                        }
                        @if let Some(p) = v.parent {
                            tr { th { "Parent" } td { a href=(job_href(req, p)) { code { (p) } } } }
                        }
                        @if let Some(p) = &v.progress {
                            tr { th { "Progress" } td {
                                progress max="1" value=(p.fraction) { (format!("{:.0} %", p.fraction * 100.0)) }
                                " " (format!("{:.0} %", p.fraction * 100.0))
                                @if let Some(m) = &p.message { " " (m) }
                            } }
                        }
                    }
                }
            }
            @if let Some(e) = &v.error {
                section {
                    h2 { "Last error" }
                    p.notice.bad {
                        strong { (e.kind) } ": " (e.message) " (attempt " (e.attempt)
                        @if let Some(at) = e.at { ", " (when(at, v.now)) }
                        ")"
                    }
                }
            }
            section {
                h2 { "Timeline" }
                ol.timeline {
                    @for m in &v.timeline {
                        li {
                            (when(m.at, v.now)) " — "
                            @if let Some(k) = &m.event { code { (k) } " " }
                            (m.what)
                        }
                    }
                }
                p.help {
                    "The store keeps a job's last error only. Attempts that were retried are \
                     counted in the history, not recorded one by one; the event stream holds the \
                     job's end (failed, dead, cancelled) and actions on it while those events are \
                     kept (this page looks through the newest " (EVENTS_READ) " events)."
                }
            }
            section {
                h2 { "Arguments" }
                (json_block(&v.arguments, SHOWN_MAX))
                @if v.arguments_cut { p.help { "Cut at 4,096 characters." } }
            }
            section {
                h2 { "Result" }
                @match &v.result {
                    Some(r) => (json_block(r, SHOWN_MAX)),
                    None => p.empty { "No result kept." },
                }
            }
            @if !v.headers.is_empty() || v.headers_hidden > 0 {
                section {
                    h2 { "Headers" }
                    table.headers {
                        tbody {
                            @for (k, val) in &v.headers { tr { th { (k) } td { code { (val) } } } }
                        }
                    }
                    @if v.headers_hidden > 0 {
                        p.help { (v.headers_hidden) " not shown (secret-looking, or the workflow's continuation)." }
                    }
                }
            }
            section {
                h2 { "Enqueue it again" }
                pre.cmd id=(COMMAND_ID) { (v.command) }
                button type="button" data-copy=(COMMAND_ID) { "Copy" }
                @if v.command_redacted {
                    p.help { "The arguments are shown redacted: put the real values back in place of \
                        \"***\" before running it." }
                }
            }
        }
    })
}

async fn job_api(req: Req, Path(id): Path<String>) -> Response {
    Req::json(load_job(&req, &id).await)
}

fn conflict(message: String) -> Failure {
    Failure {
        status: StatusCode::CONFLICT,
        message,
    }
}

async fn job_act(req: Req, Path((id, action)): Path<(String, String)>, form: Form) -> Response {
    let outcome = act_on_job(&req, &id, &action).await;
    req.done(&form, outcome)
}

async fn act_on_job(req: &Req, id: &str, action: &str) -> Outcome<Done> {
    let missing = || {
        Failure::not_found(format!(
            "no job {id} (it never existed, or its record expired)"
        ))
    };
    let id: JobId = id.parse().map_err(|_| missing())?;
    let store = req.ctx.store();
    let now = req.ctx.now();
    let (done, queue) = match action {
        "cancel" => {
            let outcome = req.timed(req.ctx.app.client().cancel(id)).await?;
            let message = match outcome {
                CancelOutcome::Cancelled => format!("cancelled {id}; it will not run"),
                CancelOutcome::Requested => format!(
                    "{id} is running: its worker was asked to stop it; it ends as cancelled"
                ),
                CancelOutcome::AlreadyFinished(state) => {
                    return Err(conflict(format!("{id} had already finished: {state}")))
                }
                CancelOutcome::NotFound => return Err(missing()),
            };
            (Done::counted(message, 1), None)
        }
        "retry" | "delete" => {
            let info = req.timed(store.get(id)).await?.ok_or_else(missing)?;
            let queue = info.job.queue.clone();
            if action == "retry" {
                if info.state != JobState::Dead {
                    return Err(conflict(format!(
                        "{id} is {}: only dead jobs are retried by hand",
                        info.state
                    )));
                }
                let n = req.timed(store.retry_dead(Some(vec![id]), now)).await?;
                (
                    Done::counted(format!("retried {id}: back to pending"), n),
                    Some(queue),
                )
            } else {
                let n = req.timed(store.delete_jobs(&queue, vec![id])).await?;
                if n == 0 {
                    return Err(conflict(format!(
                        "{id} was not deleted: it is running (cancel it first)"
                    )));
                }
                (Done::counted(format!("deleted {id}"), n), Some(queue))
            }
        }
        other => {
            return Err(Failure::not_found(format!(
                "no action `{other}` on a job: retry, cancel or delete"
            )))
        }
    };
    req.audit(
        action,
        queue.as_deref(),
        format!("{action} {id}: {}", done.message),
    )
    .await;
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: UnixMs = 1_800_000_000_000;

    #[test]
    fn qualifiers_and_words_are_read() {
        let s = parse_search("task:x state:pending", NOW).expect("reads");
        assert_eq!(s.task.as_deref(), Some("x"));
        assert_eq!(s.states, vec![JobState::Pending]);
        assert!(s.words.is_empty() && s.queue.is_none() && s.id.is_none());

        let s = parse_search(
            r#" error:"connection refused"  queue:emails  timeout  "a:b" "#,
            NOW,
        )
        .expect("reads");
        assert_eq!(s.error.as_deref(), Some("connection refused"));
        assert_eq!(s.queue.as_deref(), Some("emails"));
        assert_eq!(s.words, vec!["timeout".to_string(), "a:b".to_string()]);

        let s = parse_search("state:dead,failed STATE:dead", NOW).expect("reads");
        assert_eq!(s.states, vec![JobState::Dead, JobState::Failed]);
        assert_eq!(
            parse_search("state:any", NOW).expect("reads").states,
            JobState::ALL.to_vec()
        );
        let id = JobId::new();
        assert_eq!(
            parse_search(&format!("id:{id}"), NOW).expect("reads").id,
            Some(id)
        );
        assert_eq!(parse_search("", NOW).expect("reads"), Search::default());
        assert_eq!(
            parse_search("12:30", NOW).expect("reads").words,
            vec!["12:30"]
        );
    }

    #[test]
    fn times_are_absolute_or_that_long_ago() {
        let s = parse_search("after:1h before:2027-02-01", NOW).expect("reads");
        assert_eq!(s.after, Some(NOW - 3_600_000));
        assert_eq!(
            s.before,
            Some(1_801_440_000_000),
            "a date is its midnight, UTC"
        );
        let s = parse_search("after:2026-12-06T10:00:00Z", NOW).expect("reads");
        assert_eq!(s.after, Some(1_796_551_200_000));
        assert_eq!(
            parse_moment("2026-12-06T10:00", NOW),
            Ok(1_796_551_200_000),
            "a date-time without zone is UTC"
        );
        assert_eq!(parse_moment("7d", NOW), Ok(NOW - 7 * 86_400_000));
    }

    #[test]
    fn bad_qualifiers_say_what_is_wrong() {
        let err = |q: &str| parse_search(q, NOW).expect_err(q);
        assert!(err("foo:bar").contains("unknown qualifier `foo:`"));
        assert!(err("state:nope").contains("`nope` is not a state"));
        assert!(err("id:xyz").contains("not a job id"));
        assert!(err("task:").contains("`task:` needs a value"));
        assert!(err("task:a task:b").contains("given twice"));
        assert!(err("error:\"open").contains("quote is not closed"));
        assert!(err("after:soon").contains("after: `soon` is not a time"));
        assert!(err("after:1h before:2h").contains("after: must come before"));
    }

    #[test]
    fn shell_quoting_survives_single_quotes() {
        assert_eq!(shell_quote("emails.send"), "emails.send");
        assert_eq!(shell_quote(r#"{"a":"it's"}"#), r#"'{"a":"it'\''s"}'"#);
        assert_eq!(shell_quote("two words"), "'two words'");
        assert_eq!(shell_quote(""), "''");
    }
}
