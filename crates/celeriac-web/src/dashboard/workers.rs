//! Workers: the live worker and beat processes from the process registry, each worker's
//! running jobs, and the commands that tell one to be quiet or to stop.
//!
//! Running jobs come from one page of active jobs per queue the workers take from (O(queues)
//! store reads), grouped by the worker that holds each lease.

use super::layout::{self, badge, span, when};
use super::request::{Ctx, Done, Failure, Form, Outcome, Req};
use axum::extract::{Path, Query};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use celeriac::backend::{Control, JobQuery, ProcessInfo, ProcessKind};
use celeriac::clock::UnixMs;
use celeriac::{JobState, ProcessRegistry, QueueAdmin};
use maud::{html, Markup};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// Active jobs read per queue.
const PAGE: usize = 50;

/// The workers page, its JSON twin and actions.
pub(crate) fn routes(r: Router<Arc<Ctx>>) -> Router<Arc<Ctx>> {
    r.route("/workers", get(page))
        .route("/api/v1/workers", get(api))
        .route("/api/v1/workers/{id}/quiet", post(quiet))
        .route("/api/v1/workers/{id}/stop", post(stop))
}

/// A job a worker runs.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct RunningJob {
    pub(crate) id: String,
    pub(crate) queue: String,
    pub(crate) task: String,
    pub(crate) attempt: u32,
    pub(crate) max_attempts: u32,
    pub(crate) started_at: Option<UnixMs>,
    pub(crate) lease_until: Option<UnixMs>,
    /// Its last progress report (0 to 1), if any.
    pub(crate) progress: Option<f64>,
}

/// A process and the jobs it runs.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Process {
    #[serde(flatten)]
    pub(crate) info: ProcessInfo,
    /// Its running jobs, from the active jobs listed per queue.
    pub(crate) jobs: Vec<RunningJob>,
}

/// The workers page's data (and its JSON twin).
#[derive(Debug, Serialize)]
pub(crate) struct Workers {
    pub(crate) now: UnixMs,
    pub(crate) processes: Vec<Process>,
    /// Active jobs whose lease is held by no live process (their lease runs out, then they
    /// are redelivered).
    pub(crate) orphans: Vec<RunningJob>,
    /// Queues whose active jobs were more than one page: some running jobs are not listed.
    pub(crate) cut: Vec<String>,
}

/// The workers page's query (none yet).
#[derive(Debug, Default, Deserialize)]
pub(crate) struct Q {}

pub(crate) async fn load(req: &Req, _q: &Q) -> Outcome<Workers> {
    let store = req.ctx.store();
    let now = req.ctx.now();
    let all = req.timed(store.processes(now)).await?;
    let queues: BTreeSet<String> = all
        .iter()
        .flat_map(|p| p.queue_names().map(str::to_string))
        .collect();
    let mut by_worker: BTreeMap<String, Vec<RunningJob>> = BTreeMap::new();
    let mut cut = Vec::new();
    for queue in queues {
        let page = req
            .timed(store.list_jobs(JobQuery::new(queue.clone(), JobState::Active), None, PAGE))
            .await?;
        if page.next.is_some() {
            cut.push(queue);
        }
        for info in page.jobs {
            let job = RunningJob {
                id: info.job.id.to_string(),
                queue: info.job.queue.clone(),
                task: info.job.task.clone(),
                attempt: info.job.attempts,
                max_attempts: info.job.max_attempts,
                started_at: info.job.started_at,
                lease_until: info.lease_until,
                progress: info.progress.as_ref().map(|p| p.fraction),
            };
            by_worker
                .entry(info.worker.unwrap_or_default())
                .or_default()
                .push(job);
        }
    }
    let processes = all
        .into_iter()
        .map(|info| Process {
            jobs: by_worker.remove(&info.id).unwrap_or_default(),
            info,
        })
        .collect();
    Ok(Workers {
        now,
        processes,
        orphans: by_worker.into_values().flatten().collect(),
        cut,
    })
}

pub(crate) async fn page(req: Req, Query(q): Query<Q>) -> Response {
    let data = load(&req, &q).await;
    req.page("Workers", data, body)
}

pub(crate) async fn api(req: Req, Query(q): Query<Q>) -> Response {
    Req::json(load(&req, &q).await)
}

fn jobs_table(req: &Req, jobs: &[RunningJob], now: UnixMs) -> Markup {
    html! {
        table.jobs {
            thead { tr {
                th { "Job" } th { "Task" } th { "Queue" } th.num { "Attempt" } th { "Started" }
                th { "Lease until" } th.num { "Progress" }
            } }
            tbody {
                @for j in jobs {
                    tr data-job=(j.id) {
                        td { a href=(req.link(&format!("/jobs/{}", j.id))) { code { (j.id) } } }
                        td { (j.task) }
                        td { a href=(req.link(&format!("/queues/{}", layout::path_escape(&j.queue)))) { (j.queue) } }
                        td.num { (j.attempt) "/" (j.max_attempts) }
                        td { @if let Some(t) = j.started_at { (when(t, now)) } }
                        td { @if let Some(t) = j.lease_until { (when(t, now)) } }
                        td.num { @if let Some(p) = j.progress { (format!("{:.0} %", p * 100.0)) } }
                    }
                }
            }
        }
    }
}

fn queues_of(p: &ProcessInfo) -> String {
    p.queues
        .iter()
        .map(|q| match q.weight {
            0 => q.queue.clone(),
            w => format!("{} (weight {w})", q.queue),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn body(req: &Req, d: &Workers) -> Markup {
    html! {
        @if d.processes.is_empty() {
            p.empty { "No live worker or beat process in the registry." }
        } @else {
            table #processes {
                thead { tr {
                    th { "Process" } th { "Kind" } th { "State" } th { "Host" } th.num { "PID" }
                    th { "Version" } th { "Queues" } th.num { "Running" } th { "Started" }
                    th { "Last seen" } th.num { "Memory" } th { "" }
                } }
                tbody {
                    @for p in &d.processes {
                        @let i = &p.info;
                        @let path = layout::path_escape(&i.id);
                        tr data-process=(i.id) {
                            td { code { (i.id) } }
                            td { (i.kind.as_str()) @if i.kind == ProcessKind::Beat && i.leader { " " (badge("leader")) } }
                            td.state { (badge(i.state.as_str())) }
                            td { (i.host) }
                            td.num { (i.pid) }
                            td { (i.version) }
                            td { @if i.kind == ProcessKind::Worker { (queues_of(i)) } @else { span.reason { "–" } } }
                            td.num { @if i.kind == ProcessKind::Worker { (i.busy) " / " (i.concurrency) } @else { "–" } }
                            td { (when(i.started_at, d.now)) br; span.reason { "up " (span(d.now - i.started_at)) } }
                            td { (when(i.seen_at, d.now)) }
                            td.num { @if let Some(b) = i.rss_bytes { (format!("{:.1} MiB", b as f64 / f64::from(1u32 << 20))) } @else { "–" } }
                            td.ops {
                                (layout::action(req, &format!("/api/v1/workers/{path}/quiet"), "Quiet",
                                    Some("Stop claiming new jobs? Running jobs finish; the process stays up."), &[]))
                                " "
                                (layout::action(req, &format!("/api/v1/workers/{path}/stop"), "Stop",
                                    Some("Shut this process down gracefully?"), &[]))
                            }
                        }
                    }
                }
            }
            p.reason { "Running: jobs running now over the most at once. Jobs run in total are not recorded in the registry." }
        }
        @for p in d.processes.iter().filter(|p| p.info.kind == ProcessKind::Worker) {
            section.worker data-worker=(p.info.id) {
                h2 { "Running on " code { (p.info.id) } }
                @if p.jobs.is_empty() {
                    p.empty { "Nothing running." }
                } @else {
                    (jobs_table(req, &p.jobs, d.now))
                }
            }
        }
        @if !d.orphans.is_empty() {
            section {
                h2 { "Running jobs of no live process" }
                p.reason { "Their worker is gone from the registry: each is redelivered when its lease runs out." }
                (jobs_table(req, &d.orphans, d.now))
            }
        }
        @if !d.cut.is_empty() {
            p.reason { "Only the first " (PAGE) " running jobs of these queues are listed: " (d.cut.join(", ")) "." }
        }
    }
}

async fn command(req: &Req, id: &str, control: Control) -> Outcome<Done> {
    let now = req.ctx.now();
    if !req.timed(req.ctx.store().control(id, control, now)).await? {
        return Err(Failure::not_found(format!(
            "no live process `{id}` in the registry"
        )));
    }
    let what = match control {
        Control::Quiet => "to be quiet",
        Control::Stop => "to stop",
    };
    req.audit(control.as_str(), None, format!("told {id} {what}"))
        .await;
    Ok(Done::new(format!(
        "told {id} {what}; it acts at its next registry refresh"
    )))
}

/// Tells a process to be quiet: claim nothing new, finish what runs (a beat stops leading).
pub(crate) async fn quiet(req: Req, Path(id): Path<String>, form: Form) -> Response {
    let outcome = command(&req, &id, Control::Quiet).await;
    req.done(&form, outcome)
}

/// Tells a process to shut down gracefully.
pub(crate) async fn stop(req: Req, Path(id): Path<String>, form: Form) -> Response {
    let outcome = command(&req, &id, Control::Stop).await;
    req.done(&form, outcome)
}
