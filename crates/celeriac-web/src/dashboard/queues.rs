//! Queues: every queue with its counts, latency, consumers, rates, failure ratio and an hour
//! of successes and failures; one queue with its throughput, its jobs by state a page at a
//! time with filters, and the actions: pause, resume, purge (confirmed), and retry, cancel or
//! delete a selection of jobs or everything matching the filters.

use super::jobs::{
    job_href, parse_moment, parse_state, queue_href, row_of, state_names, store_failure, Row, PAGE,
};
use super::layout::{self, badge, chart, rate, span, sparkline, when};
use super::overview::{judge, QueueHealth};
use super::period::{picker, Period, Throughput};
use super::request::{Ctx, Done, Failure, Form, Outcome, Req};
use super::Role;
use axum::extract::{Path, Query};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use celeriac::backend::{JobQuery, Resolution};
use celeriac::bulk::{bulk, BulkAction, BULK_BATCH};
use celeriac::clock::UnixMs;
use celeriac::{CancelOutcome, History, JobId, JobState, QueueAdmin};
use maud::{html, Markup};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::Arc;

/// The queue routes: the list, one queue, the purge confirmation, and the actions.
pub(crate) fn routes(r: Router<Arc<Ctx>>) -> Router<Arc<Ctx>> {
    r.route("/queues", get(list_page))
        .route("/api/v1/queues", get(list_api))
        .route("/queues/{queue}", get(queue_page))
        .route("/api/v1/queues/{queue}", get(queue_api))
        .route("/queues/{queue}/purge", get(purge_page))
        .route("/api/v1/queues/{queue}/{action}", post(queue_act))
        .route("/api/v1/queues/{queue}/jobs/{action}", post(jobs_act))
}

/// The most jobs one action takes by id.
const MAX_SELECTED: usize = 1000;

fn no_queue(queue: &str) -> Failure {
    Failure::not_found(format!(
        "no queue `{queue}`: a queue shows once a job was enqueued in it or it was paused"
    ))
}

// ---------------------------------------------------------------------------------------
// Every queue
// ---------------------------------------------------------------------------------------

/// One queue in the list: its figures and verdict, and its last hour.
#[derive(Debug, Serialize)]
pub(crate) struct QueueLine {
    #[serde(flatten)]
    health: QueueHealth,
    /// Attempts that succeeded per minute over the last hour, oldest first.
    succeeded_last_hour: Vec<u64>,
    /// Attempts that failed (retried, failed or dead) per minute, likewise.
    failed_last_hour: Vec<u64>,
}

/// The queue list (and its JSON twin).
#[derive(Debug, Serialize)]
pub(crate) struct Queues {
    now: UnixMs,
    /// The minutes the sparklines cover (bucket starts).
    minutes: Vec<UnixMs>,
    /// Every queue by name (the dashboard's own canary queue left out).
    queues: Vec<QueueLine>,
}

async fn load_list(req: &Req) -> Outcome<Queues> {
    let store = req.ctx.store();
    let now = req.ctx.now();
    let figures = req
        .timed(celeriac::monitor::queue_figures(store, now))
        .await?;
    // One read of the last hour for every queue, split by queue here.
    let hour = Period::parse(None).query(now);
    let minutes = hour.starts().map_err(store_failure)?;
    let entries = req.timed(store.history(hour)).await?;
    let slot: HashMap<UnixMs, usize> = minutes.iter().enumerate().map(|(i, s)| (*s, i)).collect();
    let mut series: HashMap<String, (Vec<u64>, Vec<u64>)> = HashMap::new();
    for e in &entries {
        let Some(&i) = slot.get(&Resolution::Minute.start_of(e.start)) else {
            continue;
        };
        let (ok, bad) = series
            .entry(e.queue.clone())
            .or_insert_with(|| (vec![0; minutes.len()], vec![0; minutes.len()]));
        ok[i] += e.counts.succeeded;
        bad[i] += e.counts.errors();
    }
    let mut queues: Vec<QueueLine> = figures
        .into_iter()
        .filter(|f| f.stats.queue != crate::CANARY_QUEUE)
        .map(|f| {
            let (ok, bad) = series
                .remove(&f.stats.queue)
                .unwrap_or_else(|| (vec![0; minutes.len()], vec![0; minutes.len()]));
            QueueLine {
                health: judge(f),
                succeeded_last_hour: ok,
                failed_last_hour: bad,
            }
        })
        .collect();
    queues.sort_by(|a, b| {
        a.health
            .figures
            .stats
            .queue
            .cmp(&b.health.figures.stats.queue)
    });
    Ok(Queues {
        now,
        minutes,
        queues,
    })
}

fn as_f64(v: &[u64]) -> Vec<f64> {
    v.iter().map(|n| *n as f64).collect()
}

async fn list_page(req: Req) -> Response {
    let data = load_list(&req).await;
    req.page("Queues", data, |req, d| {
        html! {
            @if d.queues.is_empty() {
                p.empty { "No queue has jobs yet." }
            } @else {
                table.queues #queues {
                    thead { tr {
                        th { "Queue" } th { "Health" }
                        @for s in JobState::ALL { th.num { (s.as_str()) } }
                        th.num { "Latency" } th.num { "Consumers (slots)" } th.num { "OK/min" }
                        th.num { "Err/min" } th.num { "Failing" } th { "Last hour" } th {}
                    } }
                    tbody {
                        @for line in &d.queues {
                            @let f = &line.health.figures;
                            @let s = &f.stats;
                            tr data-queue=(s.queue) {
                                td { a href=(queue_href(req, &s.queue)) { (s.queue) } }
                                td.verdict {
                                    (badge(line.health.verdict.as_str()))
                                    @if s.paused { " " (badge("paused")) }
                                    " " span.reason { (line.health.reason) }
                                }
                                @for st in JobState::ALL {
                                    td.num.(st.as_str()) {
                                        a href={ (queue_href(req, &s.queue)) "?state=" (st.as_str()) } { (s.count(st)) }
                                    }
                                }
                                td.num { (span(f.latency_ms as i64)) }
                                td.num { (f.consumers) " (" (f.slots) ")" }
                                td.num { (rate(f.succeeded_per_min)) }
                                td.num { (rate(f.failed_per_min)) }
                                td.num { (format!("{:.0} %", line.health.failure_ratio * 100.0)) }
                                td.spark {
                                    (sparkline(&as_f64(&line.succeeded_last_hour), "succeeded"))
                                    (sparkline(&as_f64(&line.failed_last_hour), "failed"))
                                }
                                td {
                                    @let path = format!("/api/v1/queues/{}", layout::path_escape(&s.queue));
                                    @if s.paused {
                                        (layout::action(req, &format!("{path}/resume"), "Resume", None, &[]))
                                    } @else {
                                        (layout::action(req, &format!("{path}/pause"), "Pause", None, &[]))
                                    }
                                }
                            }
                        }
                    }
                }
                p.help {
                    "Latency: how long the oldest ready job has waited. OK/min and Err/min: \
                     attempts per minute over the last " (celeriac::monitor::RATE_MINUTES)
                    " minutes; Failing: the share of those that failed. The lines: successes \
                     (green) and failures (red) per minute over the last hour."
                }
            }
        }
    })
}

async fn list_api(req: Req) -> Response {
    Req::json(load_list(&req).await)
}

// ---------------------------------------------------------------------------------------
// One queue
// ---------------------------------------------------------------------------------------

/// A queue page's query: the tab, the filters, the page, the chart's period.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct QueueQ {
    state: Option<String>,
    task: Option<String>,
    error: Option<String>,
    from: Option<String>,
    until: Option<String>,
    newest: Option<String>,
    cursor: Option<String>,
    period: Option<String>,
}

/// The filters of a listing, as understood.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Filters {
    state: JobState,
    task: Option<String>,
    error: Option<String>,
    created_from: Option<UnixMs>,
    created_until: Option<UnixMs>,
    newest_first: bool,
}

/// A non-empty, trimmed field.
fn field(v: Option<&str>) -> Option<String> {
    v.map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

/// The listing query of `queue` from the tab and filter fields (the page's query string, or
/// an action's form: the same names).
fn filters(
    queue: &str,
    get: impl Fn(&str) -> Option<String>,
    now: UnixMs,
) -> Outcome<(JobQuery, Filters)> {
    let state = match get("state") {
        Some(name) => parse_state(&name).ok_or_else(|| {
            Failure::bad_request(format!("`{name}` is not a state: use {}", state_names()))
        })?,
        None => JobState::Pending,
    };
    let moment = |name: &str| -> Outcome<Option<UnixMs>> {
        get(name)
            .map(|t| {
                parse_moment(&t, now).map_err(|e| Failure::bad_request(format!("{name}: {e}")))
            })
            .transpose()
    };
    let f = Filters {
        state,
        task: get("task"),
        error: get("error"),
        created_from: moment("from")?,
        created_until: moment("until")?,
        newest_first: get("newest")
            .is_some_and(|v| matches!(v.as_str(), "1" | "on" | "yes" | "true")),
    };
    let mut q = JobQuery::new(queue, state);
    q.task = f.task.clone();
    q.error = f.error.clone();
    q.created_from = f.created_from;
    q.created_until = f.created_until;
    q.newest_first = f.newest_first;
    Ok((q, f))
}

/// A queue's page (and its JSON twin).
#[derive(Debug, Serialize)]
pub(crate) struct QueueView {
    now: UnixMs,
    /// Its figures and verdict.
    queue: QueueHealth,
    throughput: Throughput,
    /// The tab and filters.
    filters: Filters,
    /// This page of the tab's jobs.
    jobs: Vec<Row>,
    /// Where the next page starts.
    next: Option<String>,
    /// Jobs the store examined for this page.
    scanned: u64,
}

async fn load_queue(req: &Req, queue: &str, q: &QueueQ) -> Outcome<QueueView> {
    let store = req.ctx.store();
    let now = req.ctx.now();
    let (query, filters) = filters(
        queue,
        |name| {
            field(match name {
                "state" => q.state.as_deref(),
                "task" => q.task.as_deref(),
                "error" => q.error.as_deref(),
                "from" => q.from.as_deref(),
                "until" => q.until.as_deref(),
                "newest" => q.newest.as_deref(),
                _ => None,
            })
        },
        now,
    )?;
    let figures = req
        .timed(celeriac::monitor::queue_figures(store, now))
        .await?
        .into_iter()
        .find(|f| f.stats.queue == queue)
        .ok_or_else(|| no_queue(queue))?;
    let period = Period::parse(q.period.as_deref());
    let throughput = req
        .timed(Throughput::read(store, period, Some(queue), now))
        .await?;
    let cursor = field(q.cursor.as_deref());
    let page = req
        .timed(store.list_jobs(query, cursor, PAGE))
        .await
        .map_err(store_failure)?;
    Ok(QueueView {
        now,
        queue: judge(figures),
        throughput,
        filters,
        jobs: page.jobs.iter().map(row_of).collect(),
        next: page.next,
        scanned: page.scanned,
    })
}

/// The query string of a tab, keeping the filters and the period (not the page).
fn tab_query(q: &QueueQ, state: JobState) -> String {
    let mut pairs = vec![("state", state.as_str().to_string())];
    for (k, v) in [
        ("task", &q.task),
        ("error", &q.error),
        ("from", &q.from),
        ("until", &q.until),
        ("newest", &q.newest),
        ("period", &q.period),
    ] {
        if let Some(v) = field(v.as_deref()) {
            pairs.push((k, v));
        }
    }
    serde_urlencoded::to_string(&pairs).unwrap_or_default()
}

async fn queue_page(req: Req, Path(queue): Path<String>, Query(q): Query<QueueQ>) -> Response {
    let data = load_queue(&req, &queue, &q).await;
    req.page(&format!("Queue {queue}"), data, |req, v| {
        html! {
            (summary(req, v))
            section {
                h2 { "Throughput" }
                (picker(req, &v.throughput.period))
                (chart("Attempts per bucket", &v.throughput.x, &v.throughput.lines(), &v.throughput.markers()))
            }
            section {
                nav.tabs aria-label="states" {
                    @for st in JobState::ALL {
                        a href={ (queue_href(req, &queue)) "?" (tab_query(&q, st)) }
                            class=[(st == v.filters.state).then_some("current")] {
                            (st.as_str()) " " span.count { (v.queue.figures.stats.count(st)) }
                        }
                    }
                }
                (filter_form(req, &queue, &q, v))
                (selection(req, &queue, &q, v))
                (layout::pager(req, v.next.as_deref()))
            }
        }
    })
}

async fn queue_api(req: Req, Path(queue): Path<String>, Query(q): Query<QueueQ>) -> Response {
    Req::json(load_queue(&req, &queue, &q).await)
}

fn summary(req: &Req, v: &QueueView) -> Markup {
    let f = &v.queue.figures;
    let s = &f.stats;
    let api = format!("/api/v1/queues/{}", layout::path_escape(&s.queue));
    let waiting = s.count(JobState::Pending) + s.count(JobState::Scheduled);
    html! {
        section.summary {
            (badge(v.queue.verdict.as_str()))
            @if s.paused { " " (badge("paused")) }
            " " span.reason { (v.queue.reason) }
            div.actions {
                @if s.paused {
                    (layout::action(req, &format!("{api}/resume"), "Resume", None, &[]))
                } @else {
                    (layout::action(req, &format!("{api}/pause"), "Pause", None, &[]))
                }
                a href={ (queue_href(req, &s.queue)) "/purge" } { "Purge " (waiting) " waiting jobs…" }
            }
        }
        section.tiles {
            div.tile { span.figure { (span(f.latency_ms as i64)) } span.label { "latency (oldest ready job)" } }
            div.tile { span.figure { (f.consumers) } span.label { "consumers, " (f.slots) " slots" } }
            div.tile { span.figure { (rate(f.succeeded_per_min)) } span.label { "succeeded / min" } }
            div.tile { span.figure { (rate(f.failed_per_min)) } span.label { "failed / min" } }
            div.tile { span.figure { (format!("{:.0} %", v.queue.failure_ratio * 100.0)) } span.label { "of attempts fail" } }
        }
    }
}

fn filter_form(req: &Req, queue: &str, q: &QueueQ, v: &QueueView) -> Markup {
    let value = |x: &Option<String>| x.clone().unwrap_or_default();
    html! {
        form.filters method="get" action=(queue_href(req, queue)) {
            input type="hidden" name="state" value=(v.filters.state.as_str());
            @if let Some(p) = field(q.period.as_deref()) { input type="hidden" name="period" value=(p); }
            label { "Task " input type="text" name="task" value=(value(&q.task)) size="16"; }
            " "
            label { "Error text " input type="text" name="error" value=(value(&q.error)) size="16"; }
            " "
            label { "Created from " input type="text" name="from" value=(value(&q.from)) size="14"
                placeholder="2026-12-06 or 1h"; }
            " "
            label { "until " input type="text" name="until" value=(value(&q.until)) size="14"; }
            " "
            label { input type="checkbox" name="newest" value="1" checked[v.filters.newest_first]; " newest first" }
            " "
            button type="submit" { "Filter" }
            " "
            a href={ (queue_href(req, queue)) "?state=" (v.filters.state.as_str()) } { "clear" }
        }
    }
}

/// The tab's jobs in one form: a checkbox per job, and the actions that fit the state, on
/// the ticked jobs or on every job the filters select.
fn selection(req: &Req, queue: &str, q: &QueueQ, v: &QueueView) -> Markup {
    let state = v.filters.state;
    if v.jobs.is_empty() {
        return html! {
            p.empty {
                "No " (state.as_str()) " jobs"
                @if v.next.is_some() { " on this page (" (v.scanned) " examined; the next page goes on)" }
                "."
            }
        };
    }
    let api = format!("/api/v1/queues/{}/jobs", layout::path_escape(queue));
    let viewer = req.who.role < Role::Operator;
    let count = v.queue.figures.stats.count(state);
    let filtered = [&q.task, &q.error, &q.from, &q.until]
        .iter()
        .any(|x| field(x.as_deref()).is_some());
    html! {
        // A plain form (not boosted): each button posts to its own action.
        form.select method="post" action=(req.link(&format!("{api}/retry"))) hx-boost="false" {
            input type="hidden" name="csrf" value=(req.who.csrf);
            input type="hidden" name="back" value=(layout::back_of(req));
            input type="hidden" name="state" value=(state.as_str());
            @for (k, x) in [("task", &q.task), ("error", &q.error), ("from", &q.from), ("until", &q.until)] {
                @if let Some(x) = field(x.as_deref()) { input type="hidden" name=(k) value=(x); }
            }
            div.actions {
                @if state == JobState::Dead {
                    button type="submit" formaction=(req.link(&format!("{api}/retry"))) disabled[viewer] { "Retry" }
                }
                @if !state.is_terminal() {
                    button type="submit" formaction=(req.link(&format!("{api}/cancel"))) disabled[viewer] { "Cancel" }
                }
                @if state != JobState::Active {
                    button.danger type="submit" formaction=(req.link(&format!("{api}/delete"))) disabled[viewer] { "Delete" }
                }
                label {
                    input type="checkbox" name="all" value="yes";
                    " every " (state.as_str()) " job of the queue"
                    @if filtered { " matching the filters" } " (" (count) " in this state), not only the ticked ones"
                }
                label {
                    input type="checkbox" name="confirm" value="yes";
                    " yes, cancel or delete them all (needed with “every”)"
                }
            }
            table.jobs {
                thead { tr {
                    th { input type="checkbox" data-select-all aria-label="select every job of the page"; }
                    th { "Job" } th { "Task" } th { "Created" } th.num { "Attempts" } th { "Last error" } th { "Worker" }
                } }
                tbody {
                    @for r in &v.jobs {
                        tr data-job=(r.id) {
                            td { input type="checkbox" name="id" value=(r.id) aria-label="select"; }
                            td { a href=(job_href(req, r.id)) { code { (r.id) } } }
                            td { (r.task) }
                            td { (when(r.created_at, v.now)) }
                            td.num { (r.attempts) "/" (r.max_attempts) }
                            td.reason { (r.error.as_deref().unwrap_or("")) }
                            td { (r.worker.as_deref().unwrap_or("")) }
                        }
                    }
                }
            }
        }
        p.help {
            (v.jobs.len()) " shown, " (v.scanned) " examined; "
            @if v.filters.newest_first { "newest first." } @else {
                "oldest first in the state's order (pending: the order workers take them in)."
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Purge, confirmed
// ---------------------------------------------------------------------------------------

/// What a purge would delete.
#[derive(Debug, Serialize)]
struct PurgePlan {
    queue: String,
    pending: u64,
    scheduled: u64,
}

async fn purge_page(req: Req, Path(queue): Path<String>) -> Response {
    let data = async {
        let stats = req.timed(req.ctx.store().stats()).await?;
        let s = stats
            .into_iter()
            .find(|s| s.queue == queue)
            .ok_or_else(|| no_queue(&queue))?;
        Ok(PurgePlan {
            pending: s.count(JobState::Pending),
            scheduled: s.count(JobState::Scheduled),
            queue: queue.clone(),
        })
    }
    .await;
    req.page(&format!("Purge {queue}?"), data, |req, p| {
        let n = p.pending + p.scheduled;
        let back = format!("/queues/{}", layout::path_escape(&p.queue));
        html! {
            p {
                "Purging deletes the " strong { (n) } " waiting jobs of " (p.queue) ": "
                (p.pending) " pending and " (p.scheduled) " scheduled (the counts now; jobs \
                 enqueued meanwhile go too). Running, retrying, dead and finished jobs stay. \
                 It cannot be undone."
            }
            div.actions {
                (layout::action_to(req, &format!("/api/v1/queues/{}/purge", layout::path_escape(&p.queue)),
                    &format!("Delete {n} waiting jobs"), None, &[("confirm", "yes")], &back))
                a href=(req.link(&back)) { "Keep them" }
            }
        }
    })
}

// ---------------------------------------------------------------------------------------
// Actions
// ---------------------------------------------------------------------------------------

async fn queue_act(
    req: Req,
    Path((queue, action)): Path<(String, String)>,
    form: Form,
) -> Response {
    let outcome = act_on_queue(&req, &queue, &action, &form).await;
    req.done(&form, outcome)
}

async fn act_on_queue(req: &Req, queue: &str, action: &str, form: &Form) -> Outcome<Done> {
    let store = req.ctx.store();
    let done = match action {
        "pause" => {
            req.timed(store.pause(queue)).await?;
            Done::new(format!("paused {queue}"))
        }
        "resume" => {
            req.timed(store.resume(queue)).await?;
            Done::new(format!("resumed {queue}"))
        }
        "purge" => {
            if !form.flag("confirm") {
                return Err(Failure::bad_request(format!(
                    "purging deletes every waiting job of `{queue}`: send confirm=yes (the \
                     purge page asks first)"
                )));
            }
            let n = req.timed(store.purge(queue)).await?;
            Done::counted(format!("deleted {n} waiting jobs from {queue}"), n)
        }
        other => {
            return Err(Failure::not_found(format!(
                "no action `{other}` on a queue: pause, resume or purge"
            )))
        }
    };
    req.audit(action, Some(queue), done.message.clone()).await;
    Ok(done)
}

async fn jobs_act(req: Req, Path((queue, action)): Path<(String, String)>, form: Form) -> Response {
    let outcome = act_on_jobs(&req, &queue, &action, &form).await;
    req.done(&form, outcome)
}

/// Retry, cancel or delete the ticked jobs (`id` fields), or with `all=yes` every job of the
/// state the filter fields select (in batches; cancelling or deleting them all needs
/// `confirm=yes`).
async fn act_on_jobs(req: &Req, queue: &str, action: &str, form: &Form) -> Outcome<Done> {
    let action = match action {
        "retry" => BulkAction::Retry,
        "cancel" => BulkAction::Cancel,
        "delete" => BulkAction::Delete,
        other => {
            return Err(Failure::not_found(format!(
                "no action `{other}` on jobs: retry, cancel or delete"
            )))
        }
    };
    let store = req.ctx.store();
    let now = req.ctx.now();
    let (mut query, _) = filters(queue, |name| field(form.get(name)), now)?;
    if action == BulkAction::Retry {
        // Only dead letters are retried by hand: the state is dead, or refused.
        if form.get("state").is_some() && query.state != JobState::Dead {
            return Err(Failure::bad_request(format!(
                "only dead jobs are retried by hand; `{}` jobs are not",
                query.state
            )));
        }
        query.state = JobState::Dead;
    }
    let state = query.state;
    let ids: Vec<JobId> = form
        .all("id")
        .into_iter()
        .map(|s| {
            s.parse::<JobId>()
                .map_err(|_| Failure::bad_request(format!("`{s}` is not a job id")))
        })
        .collect::<Outcome<_>>()?;
    let verb = action.as_str();
    let (done, message) = if form.flag("all") {
        if action != BulkAction::Retry && !form.flag("confirm") {
            return Err(Failure::bad_request(format!(
                "refusing to {verb} every {state} job of {queue} matching the filters \
                 without confirm=yes (tick the confirmation)"
            )));
        }
        let report = req
            .timed(bulk(store, query, None, action, now, |_| {}))
            .await
            .map_err(store_failure)?;
        (
            report.done,
            format!(
                "{verb}: {} of {} matching {state} jobs of {queue} (all matching the filters)",
                report.done, report.matched
            ),
        )
    } else if !ids.is_empty() {
        if ids.len() > MAX_SELECTED {
            return Err(Failure::bad_request(format!(
                "{} jobs ticked; at most {MAX_SELECTED} at once (or choose every job matching)",
                ids.len()
            )));
        }
        let mut n = 0;
        match action {
            BulkAction::Retry => {
                for chunk in ids.chunks(BULK_BATCH) {
                    n += req
                        .timed(store.retry_dead(Some(chunk.to_vec()), now))
                        .await?;
                }
            }
            BulkAction::Delete => {
                for chunk in ids.chunks(BULK_BATCH) {
                    n += req.timed(store.delete_jobs(queue, chunk.to_vec())).await?;
                }
            }
            BulkAction::Cancel => {
                // Through the client, so a cancelled workflow step ends its workflow.
                for id in &ids {
                    let outcome = req.timed(req.ctx.app.client().cancel(*id)).await?;
                    if matches!(outcome, CancelOutcome::Cancelled | CancelOutcome::Requested) {
                        n += 1;
                    }
                }
            }
        }
        (
            n,
            format!("{verb}: {n} of {} selected jobs of {queue}", ids.len()),
        )
    } else {
        return Err(Failure::bad_request(
            "no job chosen: tick some, or choose every job matching the filters (all=yes)",
        ));
    };
    req.audit(verb, Some(queue), message.clone()).await;
    Ok(Done::counted(message, done))
}
