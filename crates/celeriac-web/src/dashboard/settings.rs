//! The settings page: the store the dashboard reads (its URL with every secret masked), the
//! version, how the dashboard is guarded, and the tasks the application registers with their
//! options.

use super::layout::{self, span};
use super::request::{Ctx, Outcome, Req};
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use maud::html;
use serde::Serialize;
use std::sync::Arc;

pub(crate) fn routes(r: Router<Arc<Ctx>>) -> Router<Arc<Ctx>> {
    r.route("/settings", get(page))
        .route("/api/v1/settings", get(api))
}

/// One registered task's options.
#[derive(Debug, Serialize)]
pub(crate) struct TaskRow {
    name: String,
    queue: String,
    max_attempts: u32,
    priority: u8,
    soft_time_limit_ms: Option<u64>,
    hard_time_limit_ms: Option<u64>,
    expires_ms: Option<u64>,
    breaker: Option<String>,
    ignore_result: bool,
}

/// The settings page's data (and its JSON twin).
#[derive(Debug, Serialize)]
pub(crate) struct Settings {
    /// Celeriac's version.
    version: &'static str,
    /// The store's URL, secrets masked.
    store: String,
    /// `sqlite` or `redis`.
    backend: &'static str,
    /// `none` (loopback only) or the roles that have a token.
    auth: Vec<&'static str>,
    /// Who reads this page.
    role: &'static str,
    /// How often live parts refresh, in ms.
    live_every_ms: u64,
    /// Where the alert rules come from.
    alert_rules: &'static str,
    /// Schedules the application defines.
    schedules: usize,
    /// The registered tasks.
    tasks: Vec<TaskRow>,
}

fn ms(d: Option<std::time::Duration>) -> Option<u64> {
    d.map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn load(req: &Req) -> Settings {
    let app = &req.ctx.app;
    let url = app.url();
    let registry = app.registry();
    let mut tasks: Vec<TaskRow> = registry
        .names()
        .into_iter()
        .filter_map(|name| registry.get(name).map(|def| (name, def.options())))
        .map(|(name, o)| TaskRow {
            name: name.to_string(),
            queue: o.queue.clone(),
            max_attempts: o.max_attempts,
            priority: o.priority.get(),
            soft_time_limit_ms: ms(o.soft_time_limit),
            hard_time_limit_ms: ms(o.hard_time_limit),
            expires_ms: ms(o.expires),
            breaker: o.breaker.clone(),
            ignore_result: o.ignore_result,
        })
        .collect();
    tasks.sort_by(|a, b| a.name.cmp(&b.name));
    Settings {
        version: env!("CARGO_PKG_VERSION"),
        store: celeriac_core::redact::url(url),
        backend: if url.starts_with("sqlite") {
            "sqlite"
        } else {
            "redis"
        },
        auth: req.ctx.auth.roles(),
        role: req.who.role.as_str(),
        live_every_ms: u64::try_from(req.ctx.live_every.as_millis()).unwrap_or(u64::MAX),
        alert_rules: if req.ctx.alert_rules.is_some() {
            "configured"
        } else {
            "defaults"
        },
        schedules: app.schedules().len(),
        tasks,
    }
}

async fn page(req: Req) -> Response {
    let data: Outcome<Settings> = Ok(load(&req));
    req.page("Settings", data, |req, s| {
        html! {
            table.settings #settings {
                tbody {
                    tr { th { "Celeriac" } td { (s.version) } }
                    tr { th { "Store" } td #store-url { code { (s.store) } " (" (s.backend) ")" } }
                    tr { th { "Authentication" } td {
                        @if s.auth.is_empty() {
                            "none: served on loopback only"
                        } @else {
                            "tokens for " (s.auth.join(" and "))
                        }
                        ", you read as " (s.role)
                    } }
                    tr { th { "Live updates" } td { "every " (span(s.live_every_ms as i64)) " while a tab is visible" } }
                    tr { th { "Alert rules" } td { (s.alert_rules) } }
                    tr { th { "Schedules" } td { a href=(req.link("/schedules")) { (s.schedules) " defined" } } }
                }
            }
            h2 { "Tasks" }
            @if s.tasks.is_empty() {
                p.empty { "This application registers no task." }
            } @else {
                table.tasks {
                    thead { tr {
                        th { "Task" } th { "Queue" } th.num { "Attempts" } th.num { "Priority" }
                        th { "Time limits" } th { "Expires" } th { "Breaker" } th { "Result" }
                    } }
                    tbody {
                        @for t in &s.tasks {
                            tr {
                                td { code { (t.name) } }
                                td { a href=(req.link(&format!("/queues/{}", layout::path_escape(&t.queue)))) { (t.queue) } }
                                td.num { (t.max_attempts) }
                                td.num { (t.priority) }
                                td {
                                    (t.soft_time_limit_ms.map_or_else(|| "–".to_string(), |m| span(m as i64)))
                                    " / "
                                    (t.hard_time_limit_ms.map_or_else(|| "–".to_string(), |m| span(m as i64)))
                                }
                                td { (t.expires_ms.map_or_else(|| "–".to_string(), |m| span(m as i64))) }
                                td { (t.breaker.as_deref().unwrap_or("–")) }
                                td { @if t.ignore_result { "not kept" } @else { "kept" } }
                            }
                        }
                    }
                }
            }
        }
    })
}

async fn api(req: Req) -> Response {
    Req::json(Ok(load(&req)))
}
