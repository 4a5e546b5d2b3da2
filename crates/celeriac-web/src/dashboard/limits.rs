//! The rate limits: per rate limiter, the figures its instances publish to the store
//! (`RateLimiter::publish_stats`, summed over the live instances): decisions allowed, denied,
//! shadow-denied and short-circuited, store errors and calls decided while the store was
//! paused, the denial ratio, and a sample of the most denied keys; and the registered tasks'
//! global limits as configured, with their running jobs.
//!
//! Limiters publish only their current counters (one snapshot per live instance): there is
//! no history of them in the store, so the page shows no decisions over time.

use super::cache::DEFAULT_APP;
use super::layout;
use super::request::{Ctx, Failure, Outcome, Req};
use axum::extract::Query;
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use celeriac::backend::JobQuery;
use celeriac::clock::{duration_ms, UnixMs};
use celeriac::limit::stats::{
    self, DeniedKey, LimiterCounts, DEFAULT_PUBLISH_EVERY, SAMPLE_CAPACITY, SNAPSHOT_LIFETIMES,
    TOP_KEYS,
};
use celeriac::{JobState, QueueAdmin};
use maud::{html, Markup};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// At most this many limiters of an application are read.
const MAX_LIMITERS: usize = 100;

/// Running jobs counted per limited task (one page of the listing).
const RUNNING_PAGE: usize = 50;

/// The routes of the rate limits page and its twin.
pub(crate) fn routes(r: Router<Arc<Ctx>>) -> Router<Arc<Ctx>> {
    r.route("/limits", get(page))
        .route("/api/v1/limits", get(api))
}

/// The page's query.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct Q {
    /// The application name the limiters publish under (`RateLimiter::publish_stats`).
    name: Option<String>,
}

/// One limiter's figures, summed over its live instances.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct LimiterRow {
    /// The limiter's name.
    pub(crate) limiter: String,
    /// Instances whose snapshot is live.
    pub(crate) instances: u32,
    /// Whether an instance runs in shadow mode (decides, never denies).
    pub(crate) shadow: bool,
    /// Its default quotas, as the latest snapshot has them.
    pub(crate) quotas: Vec<String>,
    /// Its decisions, summed.
    #[serde(flatten)]
    pub(crate) counts: LimiterCounts,
    /// Allowed, denied and shadow-denied.
    pub(crate) decisions: u64,
    /// Denials (shadow ones included) out of every decision, when there were decisions.
    pub(crate) denial_ratio: Option<f64>,
    /// The most denied keys (sampled), most first.
    pub(crate) top_denied: Vec<DeniedKey>,
}

/// What is known of the decisions over time.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct History {
    /// Whether a series exists (never, today).
    pub(crate) available: bool,
    /// Why not, in words.
    pub(crate) reason: &'static str,
}

const NO_HISTORY: &str = "each limiter instance publishes only its current counters (a \
     snapshot that lives three publication intervals) and nothing keeps past values, so the \
     figures here count from each live instance's start. The decisions are also exported as \
     the Prometheus metrics celeriac_rate_limit_decisions_total{limiter, outcome} and \
     celeriac_rate_limit_store_errors_total{limiter} and \
     celeriac_rate_limit_store_paused_total{limiter}, which a metrics system can chart over \
     time.";

/// A task's global limits as configured.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct TaskLimitRow {
    pub(crate) task: String,
    /// The task's queue (the limits count per queue).
    pub(crate) queue: String,
    pub(crate) concurrency: Option<u32>,
    /// Starts allowed per `rate_per_ms`.
    pub(crate) rate_count: Option<u32>,
    pub(crate) rate_per_ms: Option<i64>,
    /// Its jobs running now in that queue (the first page of them).
    pub(crate) running: u64,
    /// More are running than counted.
    pub(crate) running_more: bool,
}

/// The rate limits page's data (and its JSON twin).
#[derive(Debug, Serialize)]
pub(crate) struct LimitsPage {
    /// The application name asked for.
    pub(crate) app: String,
    pub(crate) now: UnixMs,
    /// Every limiter that published figures, sorted (the first `MAX_LIMITERS`).
    pub(crate) limiters: Vec<LimiterRow>,
    /// More limiters published figures than are read.
    pub(crate) limiters_more: bool,
    /// How often limiters publish when given the suggested interval (ms).
    pub(crate) publish_every_ms: u64,
    /// Keys each instance samples, and keys kept after merging the instances' samples.
    pub(crate) sample_capacity: usize,
    pub(crate) top_keys: usize,
    pub(crate) history: History,
    /// The registered tasks' global limits.
    pub(crate) task_limits: Vec<TaskLimitRow>,
}

/// The application name asked for, checked; the default when none is given.
fn app_name(asked: Option<&str>) -> Outcome<String> {
    let name = asked
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .unwrap_or(DEFAULT_APP);
    stats::check_name("application", name).map_err(|_| {
        Failure::bad_request(format!(
            "`{name}` is not an application name limiters publish under: 1 to {} bytes \
             without `:`, `{{` or `}}`",
            stats::MAX_NAME_LEN
        ))
    })?;
    Ok(name.to_string())
}

/// The figures of every limiter of application `app` (at most `MAX_LIMITERS`), and whether
/// there are more.
async fn read_limiters(req: &Req, app: &str) -> Outcome<(Vec<LimiterRow>, bool)> {
    let store = req.ctx.store();
    let now = req.ctx.now();
    let names = req.timed(stats::limiters(store, app, now)).await?;
    let more = names.len() > MAX_LIMITERS;
    let mut rows = Vec::with_capacity(names.len().min(MAX_LIMITERS));
    for name in names.iter().take(MAX_LIMITERS) {
        let s = req.timed(stats::read(store, app, name, now)).await?;
        rows.push(LimiterRow {
            decisions: s.counts.decisions(),
            denial_ratio: s.counts.denial_ratio(),
            limiter: s.limiter,
            instances: s.instances,
            shadow: s.shadow,
            quotas: s.quotas,
            counts: s.counts,
            top_denied: s.top_denied,
        });
    }
    Ok((rows, more))
}

/// The registered tasks' global limits, with their running jobs (one page of them each).
async fn task_limits(req: &Req) -> Outcome<Vec<TaskLimitRow>> {
    let registry = req.ctx.app.registry();
    let mut rows = Vec::new();
    for (task, l) in registry.limits() {
        let queue = registry.get(&task).map_or_else(
            || celeriac::job::DEFAULT_QUEUE.to_string(),
            |t| t.options().queue.clone(),
        );
        let mut q = JobQuery::new(queue.clone(), JobState::Active);
        q.task = Some(task.clone());
        let page = req
            .timed(QueueAdmin::list_jobs(
                req.ctx.store(),
                q,
                None,
                RUNNING_PAGE,
            ))
            .await?;
        rows.push(TaskLimitRow {
            task,
            queue,
            concurrency: l.concurrency,
            rate_count: l.rate.map(|r| r.count),
            rate_per_ms: l.rate.map(|r| duration_ms(r.per)),
            running: page.jobs.len() as u64,
            running_more: page.next.is_some(),
        });
    }
    Ok(rows)
}

pub(crate) async fn load(req: &Req, q: &Q) -> Outcome<LimitsPage> {
    let app = app_name(q.name.as_deref())?;
    let (limiters, limiters_more) = read_limiters(req, &app).await?;
    Ok(LimitsPage {
        app,
        now: req.ctx.now(),
        limiters,
        limiters_more,
        publish_every_ms: DEFAULT_PUBLISH_EVERY.as_millis() as u64,
        sample_capacity: SAMPLE_CAPACITY,
        top_keys: TOP_KEYS,
        history: History {
            available: false,
            reason: NO_HISTORY,
        },
        task_limits: task_limits(req).await?,
    })
}

async fn page(req: Req, Query(q): Query<Q>) -> Response {
    let data = load(&req, &q).await;
    req.page("Rate limits", data, body)
}

async fn api(req: Req, Query(q): Query<Q>) -> Response {
    Req::json(load(&req, &q).await)
}

fn percent(r: Option<f64>) -> String {
    r.map_or_else(|| "–".to_string(), |r| format!("{:.1} %", r * 100.0))
}

fn body(req: &Req, d: &LimitsPage) -> Markup {
    let app = d.app.as_str();
    html! {
        form.filters method="get" action=(req.link("/limits")) {
            label for="limits-app" { "Application name " }
            input #limits-app type="text" name="name" value=(app);
            " "
            button type="submit" { "Show" }
            span.reason { " The name limiters publish under (" code { "RateLimiter::publish_stats(store, \"" (app) "\", every)" } "), default " code { (DEFAULT_APP) } "." }
        }
        section {
            h2 { "Limiters" }
            p.reason {
                "Summed over the live instances: an instance counts while its last snapshot is younger than "
                (SNAPSHOT_LIFETIMES) " publication intervals (" (layout::span(d.publish_every_ms as i64))
                " with " code { "DEFAULT_PUBLISH_EVERY" } "). Counts run from each instance's start. "
                "Short-circuited calls (denied locally, without asking the store) are also counted as denied."
            }
            @if d.limiters.is_empty() {
                p.empty { "No rate limiter of application " code { (app) } " has published figures yet: publish them with "
                    code { "RateLimiter::publish_stats" } " (a " code { "RateLimitLayer" } "'s limiter too)." }
            } @else {
                table #limiters {
                    thead { tr {
                        th { "Limiter" } th.num { "Instances" } th { "Quotas" } th.num { "Allowed" }
                        th.num { "Denied" } th.num { "Shadow-denied" } th.num { "Denial ratio" }
                        th.num { "Short-circuited" } th.num { "Store errors" }
                        th.num title="Calls decided by the failure mode without asking the store, paused after consecutive failures" { "Store paused" }
                    } }
                    tbody {
                        @for l in &d.limiters {
                            @let c = &l.counts;
                            tr data-limiter=(l.limiter) {
                                td {
                                    (l.limiter)
                                    @if l.shadow { " " (layout::badge("shadow")) }
                                }
                                td.num { (l.instances) }
                                td { (l.quotas.join(", ")) }
                                td.num.allowed { (c.allowed) }
                                td.num.denied { (c.denied) }
                                td.num { (c.shadow_denied) }
                                td.num.ratio { (percent(l.denial_ratio)) }
                                td.num { (c.short_circuited) }
                                td.num { (c.store_errors) }
                                td.num { (c.store_paused) }
                            }
                        }
                    }
                }
                @if d.limiters_more {
                    p.reason { "Only the first " (MAX_LIMITERS) " limiters are shown." }
                }
            }
        }
        section #limits-denied {
            h2 { "Most denied keys" }
            p.reason {
                "Sampled: each instance keeps the " (d.sample_capacity) " keys it denied most (a Space-Saving sample; shadow denials included), "
                "and the instances' samples are added up here, the " (d.top_keys) " highest kept. A key denied often is in the sample; "
                "a count may overstate by up to the figure after ±, and a key that was denied rarely may be missing. Keys are shown as the limiter was given them "
                "(user ids, IP addresses), cut after 200 bytes."
            }
            @for l in &d.limiters {
                h3 { (l.limiter) }
                @if l.top_denied.is_empty() {
                    p.empty { "No denial." }
                } @else {
                    table.denied-keys data-limiter=(l.limiter) {
                        thead { tr { th { "Key" } th.num { "Denials" } } }
                        tbody {
                            @for k in &l.top_denied {
                                tr {
                                    td.key { code { (k.key) } }
                                    td.num {
                                        (k.count)
                                        @if k.error > 0 { " " span.reason { "±" (k.error) } }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        section #limits-history {
            h2 { "Decisions over time" }
            p.empty { "No series: " (d.history.reason) }
        }
        section #task-limits {
            h2 { "Task limits" }
            @if d.task_limits.is_empty() {
                p.empty { "No registered task has a global concurrency cap or rate." }
            } @else {
                table {
                    thead { tr {
                        th { "Task" } th { "Queue" } th.num { "Concurrency" } th.num { "Running now" } th { "Rate" }
                    } }
                    tbody {
                        @for l in &d.task_limits {
                            tr data-task=(l.task) {
                                td { (l.task) }
                                td { a href=(req.link(&format!("/queues/{}", layout::path_escape(&l.queue)))) { (l.queue) } }
                                td.num { (l.concurrency.map_or_else(|| "–".to_string(), |c| c.to_string())) }
                                td.num { (l.running) @if l.running_more { "+" } }
                                td {
                                    @match (l.rate_count, l.rate_per_ms) {
                                        (Some(c), Some(p)) => { (c) " per " (layout::span(p)) }
                                        _ => "–",
                                    }
                                }
                            }
                        }
                    }
                }
                p.reason { "As configured in this application (" code { "TaskLimits" } "). Running now counts the task's running jobs in its queue. The store keeps each rate's next allowed start, but no store call reads it back." }
            }
        }
    }
}
