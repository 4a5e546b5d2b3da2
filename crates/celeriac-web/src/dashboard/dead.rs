//! Dead letters: grouped by queue, task and error fingerprint ([`celeriac::bulk::dead_groups`]),
//! a dry run before a group is retried at a chosen pace, and a confirmed purge.
//!
//! A group's retry takes the ids of the group's dead letters when it starts (so it retries
//! what the dry run counted, not letters that die meanwhile) and puts them back to pending in
//! batches of at most `rate` jobs (and at most [`BULK_BATCH`]), one batch every
//! `batch / rate` seconds. A retry that fits in one batch is done within the request and
//! answers with the exact count; a longer one runs in a background task of this process,
//! shown on the dead letters page while it runs, and records its end in the event stream. A
//! group is retried by one such task at a time; a process that stops mid-way leaves the rest
//! dead, to retry again.

use super::layout::{self, when};
use super::request::{Ctx, Done, Failure, Form, Outcome, Req};
use axum::extract::{Path, Query};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;
use celeriac::bulk::{dead_group_ids, dead_groups, DeadGroup, BULK_BATCH};
use celeriac::clock::UnixMs;
use celeriac::{JobId, JobState, QueueAdmin};
use maud::{html, Markup};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The pace of a group retry when none is given, in jobs per second.
pub(crate) const DEFAULT_RATE: u32 = 100;
/// The fastest pace a group retry takes, in jobs per second.
pub(crate) const MAX_RATE: u32 = 10_000;

/// The dead letters pages, their JSON twins and actions.
pub(crate) fn routes(r: Router<Arc<Ctx>>) -> Router<Arc<Ctx>> {
    r.route("/dead", get(page))
        .route("/api/v1/dead", get(api))
        .route("/dead/purge", get(purge_page))
        .route("/api/v1/dead/purge", get(purge_api).post(purge))
        .route("/dead/{group}/retry", get(retry_page))
        .route(
            "/api/v1/dead/groups/{group}/retry",
            get(retry_api).post(retry),
        )
}

/// One group of dead letters, with its error split for showing.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Group {
    #[serde(flatten)]
    pub(crate) group: DeadGroup,
    /// The error's kind (`error`, `panic`, `time_limit`, ...).
    pub(crate) error_kind: String,
    /// One error message of the group, as it was.
    pub(crate) error_message: String,
}

impl Group {
    fn of(group: DeadGroup) -> Self {
        let (kind, message) = group
            .example
            .split_once(": ")
            .map_or((String::new(), group.example.clone()), |(k, m)| {
                (k.to_string(), m.to_string())
            });
        Group {
            group,
            error_kind: kind,
            error_message: message,
        }
    }
}

/// Dead letters in one queue.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct QueueDead {
    pub(crate) queue: String,
    pub(crate) count: u64,
}

/// A group retry running in the background of this process.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Running {
    pub(crate) group: String,
    pub(crate) queue: String,
    pub(crate) task: String,
    /// Dead letters it set out to retry.
    pub(crate) total: u64,
    /// Put back to pending so far.
    pub(crate) done: u64,
    /// Jobs per second.
    pub(crate) rate: u32,
    pub(crate) started_at: UnixMs,
}

/// Group retries under way in this process, by the application's store URL and group id.
static RUNNING: Mutex<BTreeMap<(String, String), Running>> = Mutex::new(BTreeMap::new());

fn running_of(url: &str) -> Vec<Running> {
    RUNNING
        .lock()
        .map(|m| {
            m.iter()
                .filter(|((u, _), _)| u == url)
                .map(|(_, r)| r.clone())
                .collect()
        })
        .unwrap_or_default()
}

/// A group's place in [`RUNNING`], given up when dropped.
struct Claim {
    key: (String, String),
}

impl Claim {
    /// Takes the group's place; `None` when a retry of it already runs.
    fn take(url: &str, r: Running) -> Option<Claim> {
        let key = (url.to_string(), r.group.clone());
        let mut m = RUNNING.lock().ok()?;
        if m.contains_key(&key) {
            return None;
        }
        m.insert(key.clone(), r);
        Some(Claim { key })
    }

    fn progress(&self, done: u64) {
        if let Ok(mut m) = RUNNING.lock() {
            if let Some(r) = m.get_mut(&self.key) {
                r.done = done;
            }
        }
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        if let Ok(mut m) = RUNNING.lock() {
            m.remove(&self.key);
        }
    }
}

/// The dead letters page's data (and its JSON twin).
#[derive(Debug, Serialize)]
pub(crate) struct Dead {
    pub(crate) now: UnixMs,
    /// The queue shown, when one is chosen.
    pub(crate) queue: Option<String>,
    /// Dead letters shown.
    pub(crate) total: u64,
    /// Queues that have dead letters.
    pub(crate) queues: Vec<QueueDead>,
    /// The groups, largest first.
    pub(crate) groups: Vec<Group>,
    /// Group retries running in the background of this process.
    pub(crate) retrying: Vec<Running>,
}

/// The dead letters page's query.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct Q {
    queue: Option<String>,
}

fn non_empty(v: Option<&str>) -> Option<String> {
    v.map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

async fn queues_dead(req: &Req) -> Outcome<Vec<QueueDead>> {
    let stats = req.timed(req.ctx.store().stats()).await?;
    Ok(stats
        .into_iter()
        .filter(|s| s.count(JobState::Dead) > 0)
        .map(|s| QueueDead {
            count: s.count(JobState::Dead),
            queue: s.queue,
        })
        .collect())
}

pub(crate) async fn load(req: &Req, q: &Q) -> Outcome<Dead> {
    let queue = non_empty(q.queue.as_deref());
    let queues = queues_dead(req).await?;
    let groups = req
        .timed(dead_groups(req.ctx.store(), queue.clone()))
        .await?;
    let total = queues
        .iter()
        .filter(|d| queue.as_ref().is_none_or(|q| *q == d.queue))
        .map(|d| d.count)
        .sum();
    Ok(Dead {
        now: req.ctx.now(),
        queue,
        total,
        queues,
        groups: groups.into_iter().map(Group::of).collect(),
        retrying: running_of(req.ctx.app.url()),
    })
}

pub(crate) async fn page(req: Req, Query(q): Query<Q>) -> Response {
    let data = load(&req, &q).await;
    req.page("Dead letters", data, body)
}

pub(crate) async fn api(req: Req, Query(q): Query<Q>) -> Response {
    Req::json(load(&req, &q).await)
}

fn queue_link(req: &Req, queue: &str, task: Option<&str>) -> String {
    let mut pairs = vec![("state", "dead")];
    if let Some(t) = task {
        pairs.push(("task", t));
    }
    let query = serde_urlencoded::to_string(&pairs).unwrap_or_default();
    req.link(&format!("/queues/{}?{query}", layout::path_escape(queue)))
}

/// A GET form choosing one queue's dead letters, or every queue's.
fn queue_picker(
    req: &Req,
    action: &str,
    id: &str,
    current: Option<&str>,
    queues: &[QueueDead],
) -> Markup {
    html! {
        form.filters method="get" action=(req.link(action)) {
            label for=(id) { "Queue" }
            select id=(id) name="queue" {
                option value="" selected[current.is_none()] { "every queue" }
                @for q in queues {
                    option value=(q.queue) selected[current == Some(q.queue.as_str())] {
                        (q.queue) " (" (q.count) ")"
                    }
                }
            }
            button type="submit" { "Show" }
        }
    }
}

fn body(req: &Req, d: &Dead) -> Markup {
    let purge_href = match &d.queue {
        Some(q) => req.link(&format!("/dead/purge?queue={}", layout::query_escape(q))),
        None => req.link("/dead/purge"),
    };
    html! {
        (queue_picker(req, "/dead", "dead-queue", d.queue.as_deref(), &d.queues))
        p #dead-summary {
            (d.total) " dead letters in " (d.groups.len()) " groups"
            @if let Some(q) = &d.queue { " in queue " strong { (q) } }
            ". "
            @if d.total > 0 {
                a href=(purge_href) { "Purge…" }
            }
        }
        @if !d.retrying.is_empty() {
            section {
                h2 { "Retries under way" }
                ul #dead-retrying {
                    @for r in &d.retrying {
                        li {
                            "group " code { (r.group) } " (" (r.task) " on " (r.queue) "): "
                            (r.done) " of " (r.total) " back to pending, at " (r.rate) " jobs/s, started "
                            (when(r.started_at, d.now))
                        }
                    }
                }
            }
        }
        @if d.groups.is_empty() {
            p.empty { "No dead letters." }
        } @else {
            table #dead-groups {
                thead { tr {
                    th.num { "Count" } th { "Queue" } th { "Task" } th { "Error" }
                    th { "First seen" } th { "Last seen" } th { "" }
                } }
                tbody {
                    @for g in &d.groups {
                        @let dg = &g.group;
                        tr data-group=(dg.id) {
                            td.num.count { (dg.count) }
                            td { a href=(queue_link(req, &dg.queue, None)) { (dg.queue) } }
                            td { (dg.task) }
                            td.error title=(dg.fingerprint) {
                                @if !g.error_kind.is_empty() { (layout::badge(&g.error_kind)) " " }
                                (g.error_message)
                            }
                            td { (when(dg.first_seen, d.now)) }
                            td { (when(dg.last_seen, d.now)) }
                            td.ops {
                                a href=(queue_link(req, &dg.queue, Some(&dg.task))) { "Browse" }
                                " · "
                                a href=(req.link(&format!("/dead/{}/retry?queue={}", layout::path_escape(&dg.id), layout::query_escape(&dg.queue)))) { "Retry…" }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// What retrying a group would do (the dry run), or is about to do.
#[derive(Debug, Serialize)]
pub(crate) struct Plan {
    /// Nothing was changed: this is what a retry would do.
    pub(crate) dry_run: bool,
    pub(crate) group: Group,
    /// Dead letters that would go back to pending.
    pub(crate) jobs: u64,
    /// Jobs per second.
    pub(crate) rate: u32,
    /// Jobs per batch.
    pub(crate) batch: u64,
    /// Batches.
    pub(crate) batches: u64,
    /// About how long it takes, in seconds.
    pub(crate) seconds: f64,
    /// Whether it runs in the background (more than one batch) or within the request.
    pub(crate) background: bool,
    /// A retry of this group already running in this process.
    pub(crate) running: Option<Running>,
}

impl Plan {
    fn new(req: &Req, group: Group, rate: u32) -> Self {
        let jobs = group.group.count;
        let batch = u64::from(rate).min(BULK_BATCH as u64).max(1);
        let batches = jobs.div_ceil(batch);
        let seconds = batches.saturating_sub(1) as f64 * batch as f64 / f64::from(rate);
        let running = running_of(req.ctx.app.url())
            .into_iter()
            .find(|r| r.group == group.group.id);
        Plan {
            dry_run: true,
            group,
            jobs,
            rate,
            batch,
            batches,
            seconds,
            background: batches > 1,
            running,
        }
    }

    fn describe(&self) -> String {
        let g = &self.group.group;
        let how = if self.background {
            format!(
                "in {} batches of {} in the background, over about {}",
                self.batches,
                self.batch,
                layout::span((self.seconds * 1000.0) as i64)
            )
        } else {
            "at once, within the request".to_string()
        };
        format!(
            "{} dead letters of group {} ({} on {}) would go back to pending at {} jobs/s: {how}",
            self.jobs, g.id, g.task, g.queue, self.rate
        )
    }
}

/// A retry's query or form: the pace, and the group's queue when known (it narrows the read).
#[derive(Debug, Default, Deserialize)]
pub(crate) struct RetryQ {
    rate: Option<String>,
    queue: Option<String>,
}

fn rate_of(text: Option<&str>) -> Outcome<u32> {
    let Some(text) = text.map(str::trim).filter(|t| !t.is_empty()) else {
        return Ok(DEFAULT_RATE);
    };
    match text.parse::<u32>() {
        Ok(r) if (1..=MAX_RATE).contains(&r) => Ok(r),
        _ => Err(Failure::bad_request(format!(
            "rate: `{text}` is not a pace; give jobs per second, 1 to {MAX_RATE}"
        ))),
    }
}

/// The group `id`, read from the dead letters of `queue` (or of every queue).
async fn find_group(req: &Req, id: &str, queue: Option<String>) -> Outcome<Group> {
    let groups = req.timed(dead_groups(req.ctx.store(), queue)).await?;
    groups
        .into_iter()
        .find(|g| g.id == id)
        .map(Group::of)
        .ok_or_else(|| {
            Failure::not_found(format!(
                "no dead letters in group `{id}` now (retried, purged, or never there)"
            ))
        })
}

async fn plan(req: &Req, id: &str, q: &RetryQ) -> Outcome<Plan> {
    let rate = rate_of(q.rate.as_deref())?;
    let group = find_group(req, id, non_empty(q.queue.as_deref())).await?;
    Ok(Plan::new(req, group, rate))
}

/// The dry run, as a page with the button that does it.
pub(crate) async fn retry_page(
    req: Req,
    Path(id): Path<String>,
    Query(q): Query<RetryQ>,
) -> Response {
    let data = plan(&req, &id, &q).await;
    req.page("Retry dead letters", data, |req, p| {
        let g = &p.group.group;
        let rate = p.rate.to_string();
        let fields = [("rate", rate.as_str()), ("queue", g.queue.as_str())];
        html! {
            p #retry-plan { (p.describe()) "." }
            table {
                tbody {
                    tr { th { "Group" } td { code { (g.id) } } }
                    tr { th { "Queue" } td { a href=(queue_link(req, &g.queue, Some(&g.task))) { (g.queue) } } }
                    tr { th { "Task" } td { (g.task) } }
                    tr { th { "Error" } td { (g.example) } }
                    tr { th { "Fingerprint" } td { code { (g.fingerprint) } } }
                    tr { th { "Dead letters" } td #retry-count { (p.jobs) } }
                }
            }
            form.filters method="get" action=(req.link(&format!("/dead/{}/retry", layout::path_escape(&g.id)))) {
                input type="hidden" name="queue" value=(g.queue);
                label for="retry-rate" { "Pace (jobs per second)" }
                input #retry-rate type="number" name="rate" min="1" max=(MAX_RATE) value=(p.rate);
                button type="submit" { "Recompute" }
            }
            @if let Some(r) = &p.running {
                p.notice.bad { "A retry of this group is already under way: " (r.done) " of " (r.total) " done." }
            } @else {
                div.actions {
                    (layout::action(&back_to_dead(req), &format!("/api/v1/dead/groups/{}/retry", layout::path_escape(&g.id)),
                        &format!("Retry {} dead letters", p.jobs), None, &fields))
                    a href=(req.link("/dead")) { "Cancel" }
                }
            }
        }
    })
}

/// The dry run as JSON.
pub(crate) async fn retry_api(
    req: Req,
    Path(id): Path<String>,
    Query(q): Query<RetryQ>,
) -> Response {
    Req::json(plan(&req, &id, &q).await)
}

/// The request as seen from the dead letters page, so an action's button leads back there.
fn back_to_dead(req: &Req) -> Req {
    Req {
        ctx: req.ctx.clone(),
        who: req.who.clone(),
        base: req.base.clone(),
        here: "/dead".to_string(),
    }
}

/// The ids of the group's dead letters now.
async fn ids_of(req: &Req, g: &DeadGroup) -> Outcome<Vec<JobId>> {
    Ok(req.timed(dead_group_ids(req.ctx.store(), g)).await?)
}

/// Retries a group (fields `rate`, `queue`; `dry_run=yes` only says what it would do).
pub(crate) async fn retry(req: Req, Path(id): Path<String>, form: Form) -> Response {
    let q = RetryQ {
        rate: form.get("rate").map(str::to_string),
        queue: form.get("queue").map(str::to_string),
    };
    if form.flag("dry_run") {
        let p = plan(&req, &id, &q).await;
        let from_page = form.get("back").is_some_and(|b| b.starts_with('/'));
        if let (Ok(p), true) = (&p, from_page) {
            let to = format!(
                "/dead/{}/retry?rate={}&queue={}",
                layout::path_escape(&id),
                p.rate,
                layout::query_escape(&p.group.group.queue)
            );
            return Redirect::to(&req.link(&to)).into_response();
        }
        return Req::json(p);
    }
    let plan = match plan(&req, &id, &q).await {
        Ok(p) => p,
        Err(f) => return req.done(&form, Err(f)),
    };
    let g = plan.group.group.clone();
    let url = req.ctx.app.url().to_string();
    let Some(claim) = Claim::take(
        &url,
        Running {
            group: g.id.clone(),
            queue: g.queue.clone(),
            task: g.task.clone(),
            total: plan.jobs,
            done: 0,
            rate: plan.rate,
            started_at: req.ctx.now(),
        },
    ) else {
        let f = Failure {
            status: StatusCode::CONFLICT,
            message: format!("group {id} is already being retried; see the dead letters page"),
        };
        return req.done(&form, Err(f));
    };
    let ids = match ids_of(&req, &g).await {
        Ok(ids) if ids.is_empty() => {
            return req.done(
                &form,
                Err(Failure::not_found(format!(
                    "no dead letters in group `{id}` now"
                ))),
            )
        }
        Ok(ids) => ids,
        Err(f) => return req.done(&form, Err(f)),
    };
    let what = format!("group {} ({} on {})", g.id, g.task, g.queue);
    let batch = usize::try_from(plan.batch).unwrap_or(BULK_BATCH);
    if ids.len() <= batch {
        let outcome = req
            .timed(req.ctx.store().retry_dead(Some(ids), req.ctx.now()))
            .await;
        drop(claim);
        let outcome = match outcome {
            Ok(n) => {
                req.audit(
                    "dlq_retry",
                    Some(&g.queue),
                    format!("retried {n} dead letters of {what}"),
                )
                .await;
                Ok(Done::counted(
                    format!("{n} dead letters of {what} back to pending"),
                    n,
                ))
            }
            Err(e) => Err(e.into()),
        };
        return req.done(&form, outcome);
    }
    let total = ids.len() as u64;
    req.audit(
        "dlq_retry",
        Some(&g.queue),
        format!(
            "retrying {total} dead letters of {what} at {} jobs/s in the background",
            plan.rate
        ),
    )
    .await;
    let done = Done::counted(
        format!(
            "retrying {total} dead letters of {what} at {} jobs/s in the background (about {}); \
             the dead letters page shows the progress",
            plan.rate,
            layout::span((plan.seconds * 1000.0) as i64)
        ),
        total,
    );
    let res = req.done(&form, Ok(done));
    let pace = Duration::from_secs_f64(batch as f64 / f64::from(plan.rate));
    tokio::spawn(paced_retry(req, claim, ids, batch, pace, what, g.queue));
    res
}

/// Retries `ids` a batch every `pace`, then records how it went.
async fn paced_retry(
    req: Req,
    claim: Claim,
    ids: Vec<JobId>,
    batch: usize,
    pace: Duration,
    what: String,
    queue: String,
) {
    let start = tokio::time::Instant::now();
    let mut done = 0;
    let mut failed = None;
    for (i, chunk) in ids.chunks(batch).enumerate() {
        if i > 0 {
            let at = start + pace.saturating_mul(u32::try_from(i).unwrap_or(u32::MAX));
            tokio::time::sleep_until(at).await;
        }
        match req
            .timed(
                req.ctx
                    .store()
                    .retry_dead(Some(chunk.to_vec()), req.ctx.now()),
            )
            .await
        {
            Ok(n) => {
                done += n;
                claim.progress(done);
            }
            Err(e) => {
                failed = Some(e);
                break;
            }
        }
    }
    drop(claim);
    let message = match failed {
        None => format!("retried {done} dead letters of {what} (done)"),
        Some(e) => {
            tracing::warn!(error = %e, "a paced dead letter retry stopped");
            format!(
                "retried {done} of {} dead letters of {what}, then stopped: {e}",
                ids.len()
            )
        }
    };
    req.audit("dlq_retry", Some(&queue), message).await;
}

/// What purging would delete.
#[derive(Debug, Serialize)]
pub(crate) struct PurgePlan {
    /// The queue, or every queue.
    pub(crate) queue: Option<String>,
    /// Dead letters that would be deleted.
    pub(crate) count: u64,
    /// Queues with dead letters.
    pub(crate) queues: Vec<QueueDead>,
}

async fn purge_plan(req: &Req, q: &Q) -> Outcome<PurgePlan> {
    let queue = non_empty(q.queue.as_deref());
    let queues = queues_dead(req).await?;
    let count = queues
        .iter()
        .filter(|d| queue.as_ref().is_none_or(|q| *q == d.queue))
        .map(|d| d.count)
        .sum();
    Ok(PurgePlan {
        queue,
        count,
        queues,
    })
}

/// The purge's confirmation: how many, and the button that purges.
pub(crate) async fn purge_page(req: Req, Query(q): Query<Q>) -> Response {
    let data = purge_plan(&req, &q).await;
    req.page("Purge dead letters", data, |req, p| {
        let scope = p
            .queue
            .as_ref()
            .map_or_else(|| "every queue".to_string(), |q| format!("queue {q}"));
        let mut fields = vec![("confirm", "yes")];
        if let Some(q) = &p.queue {
            fields.push(("queue", q.as_str()));
        }
        html! {
            (queue_picker(req, "/dead/purge", "purge-queue", p.queue.as_deref(), &p.queues))
            @if p.count == 0 {
                p.empty #purge-plan { "No dead letters in " (scope) ": nothing to purge." }
            } @else {
                p #purge-plan {
                    "Purging deletes " strong { (p.count) " dead letters" } " of " (scope)
                    " for good: they cannot be retried afterwards."
                }
                div.actions {
                    (layout::action(&back_to_dead(req), "/api/v1/dead/purge",
                        &format!("Delete {} dead letters", p.count), None, &fields))
                    a href=(req.link("/dead")) { "Cancel" }
                }
            }
        }
    })
}

/// How many a purge would delete, as JSON.
pub(crate) async fn purge_api(req: Req, Query(q): Query<Q>) -> Response {
    Req::json(purge_plan(&req, &q).await)
}

/// Deletes the dead letters (of `queue`, or of every queue); needs `confirm=yes`.
pub(crate) async fn purge(req: Req, form: Form) -> Response {
    if !form.flag("confirm") {
        let f = Failure::bad_request(
            "purging deletes dead letters for good: confirm with confirm=yes (the page \
             /dead/purge shows how many it would delete)",
        );
        return req.done(&form, Err(f));
    }
    let queue = non_empty(form.get("queue"));
    let outcome = match req.timed(req.ctx.store().purge_dead(queue.clone())).await {
        Ok(n) => {
            let scope = queue
                .as_ref()
                .map_or_else(|| "every queue".to_string(), |q| format!("queue {q}"));
            req.audit(
                "dlq_purge",
                queue.as_deref(),
                format!("deleted {n} dead letters of {scope}"),
            )
            .await;
            Ok(Done::counted(
                format!("deleted {n} dead letters of {scope}"),
                n,
            ))
        }
        Err(e) => Err(e.into()),
    };
    req.done(&form, outcome)
}
