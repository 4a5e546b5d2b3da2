//! Alerts: the rules in force, the alerts' stored states (pending, firing), their history in
//! the event stream, and a test notice posted to a webhook.
//!
//! The dashboard evaluates no rules itself: the process that holds the `celeriac-monitor`
//! lease does (see [`crate::Http::alerting`]). The rules shown are the built-in ones, since the
//! dashboard is not told another set; the page says so.

use super::layout::{badge, when};
use super::request::{Ctx, Done, Failure, Form, Outcome, Req};
use axum::extract::Query;
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use celeriac::alerts::{Alert, AlertStates, Rule, Status};
use celeriac::backend::Event;
use celeriac::clock::UnixMs;
use celeriac::EventLog;
use maud::{html, Markup};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// The latest events searched for the alerts' history.
const SEARCHED: usize = 500;
/// The most history entries shown.
const HISTORY: usize = 100;

/// The alerts page, its JSON twin and the test of a webhook.
pub(crate) fn routes(r: Router<Arc<Ctx>>) -> Router<Arc<Ctx>> {
    r.route("/alerts", get(page))
        .route("/api/v1/alerts", get(api))
        .route("/api/v1/alerts/test-hook", post(test_hook))
}

/// A rule in force.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct RuleRow {
    /// Its id (kind, and queue if one).
    pub(crate) id: String,
    #[serde(flatten)]
    pub(crate) rule: Rule,
    /// What it says, in words.
    pub(crate) description: String,
}

/// The alerts page's data (and its JSON twin).
#[derive(Debug, Serialize)]
pub(crate) struct Alerts {
    pub(crate) now: UnixMs,
    /// Where the rules come from: `configured` (the rules the dashboard was given) or
    /// `defaults` (the built-in rules).
    pub(crate) rules_source: &'static str,
    pub(crate) rules: Vec<RuleRow>,
    /// When the rules were last evaluated (by the process holding the monitor lease).
    pub(crate) evaluated_at: Option<UnixMs>,
    /// Alerts pending or firing.
    pub(crate) states: Vec<Alert>,
    /// Alerts that fired or resolved, newest first, from the latest events.
    pub(crate) history: Vec<Event>,
    /// Events searched for the history.
    pub(crate) searched: usize,
}

/// The alerts page's query (none yet).
#[derive(Debug, Default, Deserialize)]
pub(crate) struct Q {}

pub(crate) async fn load(req: &Req, _q: &Q) -> Outcome<Alerts> {
    let store = req.ctx.store();
    let now = req.ctx.now();
    let states = req.timed(AlertStates::load(store, now)).await?;
    let recent = req.timed(store.events(None, SEARCHED)).await?;
    let history = recent
        .iter()
        .rev()
        .filter(|e| e.kind.starts_with("alert."))
        .take(HISTORY)
        .cloned()
        .collect();
    Ok(Alerts {
        now,
        rules_source: if req.ctx.alert_rules.is_some() {
            "configured"
        } else {
            "defaults"
        },
        rules: req
            .ctx
            .alert_rules
            .clone()
            .unwrap_or_else(Rule::defaults)
            .into_iter()
            .map(|rule| RuleRow {
                id: rule.id(),
                description: rule.describe(),
                rule,
            })
            .collect(),
        evaluated_at: (states.evaluated_at > 0).then_some(states.evaluated_at),
        states: states.alerts,
        history,
        searched: recent.len(),
    })
}

pub(crate) async fn page(req: Req, Query(q): Query<Q>) -> Response {
    let data = load(&req, &q).await;
    req.page("Alerts", data, body)
}

pub(crate) async fn api(req: Req, Query(q): Query<Q>) -> Response {
    Req::json(load(&req, &q).await)
}

fn status_word(s: Status) -> &'static str {
    match s {
        Status::Pending => "pending",
        Status::Firing => "firing",
        Status::Resolved => "resolved",
    }
}

fn number(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{v:.0}")
    } else {
        format!("{v:.3}")
    }
}

fn body(req: &Req, d: &Alerts) -> Markup {
    html! {
        section {
            h2 { "Now" }
            @match d.evaluated_at {
                None => p.empty #alerts-evaluated {
                    "No alerts evaluated yet: a worker or beat serving the HTTP side with alerting \
                     (celeriac-web Http::alerting, or --http) evaluates them."
                },
                Some(at) => p.reason #alerts-evaluated { "Last evaluated " (when(at, d.now)) "." },
            }
            @if d.states.is_empty() {
                @if d.evaluated_at.is_some() { p.empty { "Nothing fires or is pending." } }
            } @else {
                table #alert-states {
                    thead { tr {
                        th { "Status" } th { "Rule" } th { "Subject" } th.num { "Value" }
                        th.num { "Threshold" } th { "Since" } th { "Summary" }
                    } }
                    tbody {
                        @for a in &d.states {
                            tr data-rule=(a.rule) data-subject=(a.subject) {
                                td { (badge(status_word(a.status))) }
                                td { code { (a.rule) } }
                                td { (a.subject) }
                                td.num { (number(a.value)) }
                                td.num { (number(a.threshold)) }
                                td { (when(a.since, d.now)) }
                                td { (a.summary) }
                            }
                        }
                    }
                }
            }
        }
        section {
            h2 { "Rules" }
            p.reason #rules-source {
                @if d.rules_source == "configured" {
                    "The rules this dashboard was given (the alert rules file)."
                } @else {
                    "The built-in rules: the dashboard was not given a rules file (`--alert-rules`); \
                     the evaluating process may run others."
                }
            }
            table #alert-rules {
                thead { tr { th { "Rule" } th.num { "Threshold" } th { "For" } th { "Fires when" } } }
                tbody {
                    @for r in &d.rules {
                        tr data-rule=(r.id) {
                            td { code { (r.id) } }
                            td.num { (number(r.rule.threshold)) }
                            td { (celeriac::duration::format(r.rule.for_)) }
                            td { (r.description) }
                        }
                    }
                }
            }
        }
        section {
            h2 { "History" }
            @if d.history.is_empty() {
                p.empty { "No alert fired or resolved among the latest " (d.searched) " events." }
            } @else {
                table #alert-history {
                    thead { tr { th { "When" } th { "Kind" } th { "Queue" } th { "What" } } }
                    tbody {
                        @for e in &d.history {
                            tr data-event=(e.id) {
                                td { (when(e.at, d.now)) }
                                td { code { (e.kind) } }
                                td { @if let Some(q) = &e.queue { (q) } }
                                td { (e.message) }
                            }
                        }
                    }
                }
            }
        }
        section {
            h2 { "Test a webhook" }
            p.reason { "Posts a test notice, in the shape alerts are posted, and says what the webhook answered." }
            (hook_form(req))
        }
    }
}

/// The test form: like `layout::action`, with the URL to fill in.
fn hook_form(req: &Req) -> Markup {
    let back = req.here.split("notice=").next().unwrap_or("/");
    let back = back.trim_end_matches(['?', '&']);
    html! {
        form.action.filters method="post" action=(req.link("/api/v1/alerts/test-hook")) {
            input type="hidden" name="csrf" value=(req.who.csrf);
            input type="hidden" name="back" value=(back);
            label for="hook-url" { "Webhook URL" }
            input #hook-url type="url" name="url" required placeholder="https://hooks.example.com/...";
            button type="submit" disabled[req.who.role < super::Role::Operator] { "Send a test notice" }
        }
    }
}

/// The scheme, host and port of a webhook URL, checked: http or https only. The path is left
/// out of what is shown and recorded, since webhook URLs often carry their secret there.
fn checked_hook(url: &str) -> Outcome<(String, String)> {
    let parsed = reqwest::Url::parse(url.trim())
        .map_err(|e| Failure::bad_request(format!("url: not a URL: {e}")))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(Failure::bad_request(format!(
            "url: only http and https webhooks are posted to, not {}",
            parsed.scheme()
        )));
    }
    let Some(host) = parsed.host_str() else {
        return Err(Failure::bad_request("url: no host"));
    };
    let place = match parsed.port() {
        Some(p) => format!("{}://{host}:{p}", parsed.scheme()),
        None => format!("{}://{host}", parsed.scheme()),
    };
    Ok((parsed.to_string(), place))
}

async fn send_test(req: &Req, form: &Form) -> Outcome<Done> {
    let url = form
        .get("url")
        .filter(|u| !u.trim().is_empty())
        .ok_or_else(|| Failure::bad_request("url: give the webhook's URL"))?;
    let (url, place) = checked_hook(url)?;
    let text = format!(
        "[TEST] Celeriac: a test notice from the dashboard ({}). Alerts that fire or resolve \
         are posted here in this shape.",
        req.who.name
    );
    let answer = crate::alerts::post_test_notice(&url, &text).await;
    let result = match &answer {
        Ok(status) => format!("answered {status}"),
        Err(why) => format!("could not be reached: {why}"),
    };
    req.audit(
        "alert_test_hook",
        None,
        format!("posted a test notice to the webhook at {place}: it {result}"),
    )
    .await;
    match answer {
        Ok(status) if status.is_success() => Ok(Done::new(format!(
            "the webhook at {place} answered {status}"
        ))),
        Ok(status) => Err(Failure {
            status: StatusCode::BAD_GATEWAY,
            message: format!("the webhook at {place} answered {status}"),
        }),
        Err(why) => Err(Failure {
            status: StatusCode::BAD_GATEWAY,
            message: format!("the webhook at {place} could not be reached: {why}"),
        }),
    }
}

/// Posts a test notice to the webhook `url` and reports its answer.
pub(crate) async fn test_hook(req: Req, form: Form) -> Response {
    let outcome = send_test(&req, &form).await;
    req.done(&form, outcome)
}
