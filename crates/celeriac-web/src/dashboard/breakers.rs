//! The circuit breakers: the application's registered breakers and any shared breaker asked
//! for by name, with their state as the store reports it (closed, open until when, half-open,
//! forced), trips in a row, the window's figures and the next probe; the log of what was done
//! to them by hand (the `admin.breaker*` events: breakers record no transitions in the event
//! stream); and the operator's overrides (force open, force closed, reset) through the store,
//! as `celeriac breaker` does them. The tasks' global limits are on the rate limits page.

use super::layout::{self, badge, when};
use super::request::{Ctx, Done, Failure, Form, Outcome, Req};
use axum::extract::{Path, Query};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use celeriac::backend::{
    BreakerCommand, BreakerPolicy, BreakerStore, Event, EventLog, SharedBreakerState,
};
use celeriac::breaker::shared::policy_of;
use celeriac::breaker::{BreakerState, CircuitBreaker, SharedOptions, WindowKind, MAX_NAME_LEN};
use celeriac::clock::{duration_ms, UnixMs};
use maud::{html, Markup};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// How many of the newest events are searched for actions on breakers.
const LOG_SCAN: usize = 500;

/// At most this many breakers named only in the event stream are listed.
const FROM_EVENTS_MAX: usize = 20;

/// The routes of the breakers page, its twin and its actions.
pub(crate) fn routes(r: Router<Arc<Ctx>>) -> Router<Arc<Ctx>> {
    r.route("/breakers", get(page))
        .route("/api/v1/breakers", get(api))
        .route("/api/v1/breakers/{name}/{command}", post(act))
}

/// The page's query.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct Q {
    /// A shared breaker to look up by name.
    name: Option<String>,
}

/// Where the page learnt of a breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Source {
    /// Registered with `AppBuilder::shared_breaker`.
    RegisteredShared,
    /// Registered with `AppBuilder::breaker`: each process has its own.
    RegisteredLocal,
    /// Asked for with `?name=`.
    Asked,
    /// Named by an administrative action in the event stream.
    Events,
}

/// A breaker's record in the store.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct StoreState {
    pub(crate) state: BreakerState,
    /// When the open period ends (while open).
    pub(crate) open_until: Option<UnixMs>,
    /// Trips in a row without closing in between.
    pub(crate) trips: u32,
    /// Moves at every change of state.
    pub(crate) generation: u64,
    /// The window's calls, over every instance.
    pub(crate) calls: u64,
    pub(crate) failures: u64,
    pub(crate) slow: u64,
    /// Failures among calls, in percent.
    pub(crate) failure_rate: f64,
    /// Instances that reported within the window.
    pub(crate) instances: u32,
}

impl From<&SharedBreakerState> for StoreState {
    fn from(s: &SharedBreakerState) -> Self {
        StoreState {
            state: s.state,
            open_until: (s.state == BreakerState::Open).then_some(s.open_until),
            trips: s.trips,
            generation: s.generation,
            calls: s.window.calls,
            failures: s.window.failures,
            slow: s.window.slow,
            failure_rate: s.window.failure_rate(),
            instances: s.instances,
        }
    }
}

/// A local breaker as this process sees it.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct LocalState {
    pub(crate) state: BreakerState,
    pub(crate) open_until: Option<UnixMs>,
    pub(crate) trips: u32,
    pub(crate) calls: u64,
    pub(crate) failures: u64,
    pub(crate) slow: u64,
}

/// The settings a breaker is judged by.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Settings {
    /// From the registered breaker, or the defaults `celeriac breaker` uses.
    pub(crate) from: &'static str,
    /// The window, in words.
    pub(crate) window: String,
    /// The failure rate (percent) that opens it.
    pub(crate) failure_rate: f64,
    /// The slow-call rate (percent) that opens it, if slow calls count.
    pub(crate) slow_rate: Option<f64>,
    /// Calls before rates are judged.
    pub(crate) min_calls: u64,
    /// Half-open probes.
    pub(crate) probes: u32,
    /// The first open period (ms), its growth per trip, and its ceiling (ms).
    pub(crate) open_ms: i64,
    pub(crate) backoff: f64,
    pub(crate) max_open_ms: i64,
    /// How long the store keeps the breaker's record after its last write (ms): a forced
    /// state nobody reports on lapses after this.
    pub(crate) kept_ms: i64,
}

/// One administrative action on a breaker, from the event stream.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct LogEntry {
    pub(crate) at: UnixMs,
    pub(crate) kind: String,
    /// The breaker it names.
    pub(crate) breaker: Option<String>,
    pub(crate) actor: Option<String>,
    pub(crate) message: String,
}

/// One breaker.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct BreakerRow {
    pub(crate) name: String,
    pub(crate) source: Source,
    /// Whether its state is shared through the store (and the overrides apply).
    pub(crate) shared: bool,
    /// Its state: the store's for a shared breaker (closed when the store has no record),
    /// this process's for a local one.
    pub(crate) state: BreakerState,
    /// The store's record (`null`: none, closed).
    pub(crate) store: Option<StoreState>,
    /// This process's breaker, for a registered one.
    pub(crate) local: Option<LocalState>,
    /// When probes may start: the end of the open period (now, while half-open).
    pub(crate) next_probe_at: Option<UnixMs>,
    pub(crate) settings: Settings,
    /// The latest action on it by hand.
    pub(crate) last_action: Option<LogEntry>,
    /// Why the overrides do not apply, when they do not.
    pub(crate) no_commands: Option<String>,
}

/// The breakers page's data (and its JSON twin).
#[derive(Debug, Serialize)]
pub(crate) struct BreakersPage {
    pub(crate) now: UnixMs,
    /// The name asked for.
    pub(crate) asked: Option<String>,
    pub(crate) breakers: Vec<BreakerRow>,
    /// Actions on breakers among the newest `log_scanned` events, newest first.
    pub(crate) log: Vec<LogEntry>,
    pub(crate) log_scanned: usize,
    /// Whether breakers record their transitions anywhere (no: only actions by hand are).
    pub(crate) transitions_recorded: bool,
}

fn check_name(name: &str) -> Outcome<()> {
    if name.is_empty() || name.len() > MAX_NAME_LEN {
        return Err(Failure::bad_request(format!(
            "a breaker name needs 1 to {MAX_NAME_LEN} bytes, this one has {}",
            name.len()
        )));
    }
    Ok(())
}

/// The breaker a `breaker <name>: ...` message names.
fn named_in(message: &str) -> Option<&str> {
    message
        .strip_prefix("breaker ")
        .and_then(|rest| rest.split_once(": "))
        .map(|(name, _)| name)
        .filter(|n| !n.is_empty())
}

fn is_breaker_event(e: &Event) -> bool {
    e.kind.starts_with("admin.breaker") || e.kind.starts_with("breaker.")
}

fn window_words(w: WindowKind) -> String {
    match w {
        WindowKind::Count(n) => format!("the last {n} calls"),
        WindowKind::Time { size, buckets } => format!(
            "the calls of the last {} in {buckets} slices",
            layout::span(duration_ms(size))
        ),
    }
}

/// The policy the store commands of `name` go with: the registered breaker's, or the default
/// breaker's as `celeriac breaker` uses it.
fn policy_for(req: &Req, name: &str) -> Outcome<(BreakerPolicy, Settings)> {
    let registered = req.ctx.app.registry().get_breaker(name).cloned();
    let (breaker, from) = match registered {
        Some(b) => (b, "registered"),
        None => (
            CircuitBreaker::builder(name)
                .build()
                .map_err(|e| Failure::bad_request(e.to_string()))?,
            "defaults (as celeriac breaker)",
        ),
    };
    let policy = policy_of(&breaker, &SharedOptions::default());
    let c = breaker.config();
    let settings = Settings {
        from,
        window: window_words(c.window()),
        failure_rate: policy.failure_rate,
        slow_rate: policy.slow_rate,
        min_calls: policy.min_calls,
        probes: policy.probes,
        open_ms: policy.open_ms,
        backoff: policy.backoff,
        max_open_ms: policy.max_open_ms,
        kept_ms: policy.ttl_ms(),
    };
    Ok((policy, settings))
}

/// The newest actions on breakers in the event stream, newest first.
async fn read_log(req: &Req) -> Outcome<Vec<LogEntry>> {
    let events = req
        .timed(EventLog::events(req.ctx.store(), None, LOG_SCAN))
        .await?;
    Ok(events
        .into_iter()
        .rev()
        .filter(is_breaker_event)
        .map(|e| LogEntry {
            breaker: named_in(&e.message).map(str::to_string),
            at: e.at,
            kind: e.kind,
            actor: e.actor,
            message: e.message,
        })
        .collect())
}

async fn row(
    req: &Req,
    name: &str,
    source: Source,
    now: UnixMs,
    log: &[LogEntry],
) -> Outcome<BreakerRow> {
    let registry = req.ctx.app.registry();
    let guard = registry.get_guard(name);
    let shared = guard.is_none_or(|g| g.is_shared());
    let store = req
        .timed(BreakerStore::breaker_status(req.ctx.store(), name, now))
        .await?;
    let local = guard.map(|g| {
        let s = g.local().snapshot();
        LocalState {
            state: s.state,
            open_until: s.open_until,
            trips: s.trips_in_row,
            calls: s.window.calls,
            failures: s.window.failures,
            slow: s.window.slow,
        }
    });
    let (state, open_until) = match (&store, &local) {
        (Some(s), _) if shared => (s.state, s.open_until),
        (None, _) if shared => (BreakerState::Closed, 0),
        (_, Some(l)) => (l.state, l.open_until.unwrap_or(0)),
        _ => (BreakerState::Closed, 0),
    };
    let next_probe_at = match state {
        BreakerState::Open => Some(open_until),
        BreakerState::HalfOpen => Some(now),
        _ => None,
    };
    let (_, settings) = policy_for(req, name)?;
    Ok(BreakerRow {
        name: name.to_string(),
        source,
        shared,
        state,
        store: store.as_ref().map(StoreState::from),
        local,
        next_probe_at,
        settings,
        last_action: log
            .iter()
            .find(|e| e.breaker.as_deref() == Some(name))
            .cloned(),
        no_commands: (!shared).then(|| LOCAL_ONLY.to_string()),
    })
}

const LOCAL_ONLY: &str = "local to each process (AppBuilder::breaker): its state is not \
     shared through the store, so it cannot be forced from here; register it with \
     AppBuilder::shared_breaker to control it for the whole fleet";

pub(crate) async fn load(req: &Req, q: &Q) -> Outcome<BreakersPage> {
    let now = req.ctx.now();
    let asked = q
        .name
        .as_deref()
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .map(str::to_string);
    if let Some(n) = &asked {
        check_name(n)?;
    }
    let log = read_log(req).await?;
    let registry = req.ctx.app.registry();
    let mut names: Vec<(String, Source)> = Vec::new();
    for b in registry.breakers() {
        let shared = registry.get_guard(b.name()).is_some_and(|g| g.is_shared());
        let source = if shared {
            Source::RegisteredShared
        } else {
            Source::RegisteredLocal
        };
        names.push((b.name().to_string(), source));
    }
    if let Some(n) = &asked {
        if !names.iter().any(|(k, _)| k == n) {
            names.push((n.clone(), Source::Asked));
        }
    }
    let mut from_events = 0;
    for e in &log {
        let Some(n) = &e.breaker else { continue };
        if from_events < FROM_EVENTS_MAX
            && check_name(n).is_ok()
            && !names.iter().any(|(k, _)| k == n)
        {
            names.push((n.clone(), Source::Events));
            from_events += 1;
        }
    }
    let mut breakers = Vec::with_capacity(names.len());
    for (name, source) in &names {
        breakers.push(row(req, name, *source, now, &log).await?);
    }
    Ok(BreakersPage {
        now,
        asked,
        breakers,
        log,
        log_scanned: LOG_SCAN,
        transitions_recorded: false,
    })
}

/// The registered breakers that are open, half-open or forced open: a shared one as the
/// store has it, a local one as this process has it.
pub(crate) async fn open_names(req: &Req) -> Outcome<Vec<String>> {
    let registry = req.ctx.app.registry();
    let now = req.ctx.now();
    let mut open = Vec::new();
    for b in registry.breakers() {
        let shared = registry.get_guard(b.name()).is_some_and(|g| g.is_shared());
        let state = if shared {
            req.timed(BreakerStore::breaker_status(req.ctx.store(), b.name(), now))
                .await?
                .map_or(BreakerState::Closed, |s| s.state)
        } else {
            b.state()
        };
        if matches!(
            state,
            BreakerState::Open | BreakerState::HalfOpen | BreakerState::ForcedOpen
        ) {
            open.push(b.name().to_string());
        }
    }
    Ok(open)
}

async fn page(req: Req, Query(q): Query<Q>) -> Response {
    let data = load(&req, &q).await;
    req.page("Breakers", data, body)
}

async fn api(req: Req, Query(q): Query<Q>) -> Response {
    Req::json(load(&req, &q).await)
}

fn source_words(s: Source) -> &'static str {
    match s {
        Source::RegisteredShared => "registered, shared",
        Source::RegisteredLocal => "registered, local",
        Source::Asked => "asked for",
        Source::Events => "named in the event stream",
    }
}

fn body(req: &Req, d: &BreakersPage) -> Markup {
    let now = d.now;
    html! {
        form.filters method="get" action=(req.link("/breakers")) {
            label for="breaker-name" { "Shared breaker " }
            input #breaker-name type="search" name="name" value=[d.asked.as_deref()] placeholder="any shared breaker's name";
            " "
            button type="submit" { "Look up" }
        }
        section {
            h2 { "Breakers" }
            @if d.breakers.is_empty() {
                p.empty { "This application registers no circuit breaker, and none was acted on lately. Look one up by name above." }
            } @else {
                table #breakers {
                    thead { tr {
                        th { "Breaker" } th { "State" } th { "Open until / next probe" } th.num { "Trips" }
                        th.num { "Window calls" } th.num { "Failed" } th.num { "Slow" } th.num { "Instances" }
                        th { "Judged by" } th { "Last set by hand" } th { "Actions" }
                    } }
                    tbody {
                        @for b in &d.breakers { (breaker_row(req, b, now)) }
                    }
                }
                p.reason {
                    "A shared breaker's state is the store's (" code { "BreakerStore::breaker_status" }
                    "); no record means closed. A local breaker's is this process's own: every process judges its own calls. "
                    "The store does not say since when a breaker is in its state; the time of the last action by hand is shown instead. "
                    "A forced state lasts until reset while instances of the breaker report to the store; when none reports, the store forgets the breaker (closed) after its keep time (twice the longer of its window and its longest open period)."
                }
            }
        }
        section #breaker-log {
            h2 { "Log" }
            p.reason {
                "Breakers record no transitions (opened, half-open, closed) in the event stream: this log shows what was done to them by hand ("
                code { "admin.breaker_*" } " events from the dashboard and " code { "celeriac breaker" }
                ") among the newest " (d.log_scanned) " events. Transitions are counted only in the metrics "
                code { "celeriac_breaker_transitions_total" } " and " code { "celeriac_breaker_state" } "."
            }
            @if d.log.is_empty() {
                p.empty { "No action on a breaker among them." }
            } @else {
                ol.timeline {
                    @for e in &d.log {
                        li {
                            (when(e.at, now)) " " code { (e.kind) } " " (e.message)
                            @if let Some(a) = &e.actor { " " span.reason { "by " (a) } }
                        }
                    }
                }
            }
            p { a href=(req.link("/events")) { "Every event →" } }
        }
    }
}

fn breaker_row(req: &Req, b: &BreakerRow, now: UnixMs) -> Markup {
    let path = |cmd: &str| format!("/api/v1/breakers/{}/{cmd}", layout::path_escape(&b.name));
    let (trips, calls, failed, slow, instances) = match (&b.store, &b.local) {
        (Some(s), _) if b.shared => (s.trips, s.calls, s.failures, s.slow, Some(s.instances)),
        (_, Some(l)) if !b.shared => (l.trips, l.calls, l.failures, l.slow, None),
        _ => (0, 0, 0, 0, None),
    };
    let s = &b.settings;
    html! {
        tr data-breaker=(b.name) {
            td {
                a href={ (req.link("/breakers")) "?name=" (layout::query_escape(&b.name)) } { (b.name) }
                br; span.reason { (source_words(b.source)) }
            }
            td.state {
                (badge(b.state.as_str()))
                @if b.shared && b.store.is_none() { " " span.reason { "no record in the store" } }
                @if !b.shared { " " span.reason { "in this process" } }
            }
            td {
                @match (b.state, b.next_probe_at) {
                    (BreakerState::Open, Some(t)) => { "open until " (when(t, now)) }
                    (BreakerState::HalfOpen, _) => { (s.probes) " probes allowed now" }
                    (BreakerState::ForcedOpen | BreakerState::ForcedClosed, _) => "until reset",
                    _ => "–",
                }
            }
            td.num { (trips) }
            td.num { (calls) }
            td.num { (failed) }
            td.num { (slow) }
            td.num { (instances.map_or_else(|| "–".to_string(), |n| n.to_string())) }
            td.reason {
                "opens at " (format!("{:.0}", s.failure_rate)) " % failures"
                @if let Some(r) = s.slow_rate { " or " (format!("{r:.0}")) " % slow" }
                " of " (s.window) " (at least " (s.min_calls) "); open " (layout::span(s.open_ms))
                " ×" (s.backoff) " up to " (layout::span(s.max_open_ms)) "; " (s.from)
            }
            td {
                @if let Some(a) = &b.last_action {
                    (when(a.at, now)) " " span.reason { (a.kind.trim_start_matches("admin.")) }
                } @else { "–" }
            }
            td.actions {
                @if let Some(why) = &b.no_commands {
                    button type="button" disabled title=(why) { "Force open" }
                    " " span.reason { (why) }
                } @else {
                    (layout::action(req, &path("force-open"), "Force open", Some("Every process rejects this breaker's calls until it is reset."), &[]))
                    " "
                    (layout::action(req, &path("force-closed"), "Force closed", Some("Every call goes through, nothing is judged, until it is reset."), &[]))
                    " "
                    (layout::action(req, &path("reset"), "Reset", None, &[]))
                }
            }
        }
    }
}

/// Forces a shared breaker open or closed, or resets it, in the store for every process.
async fn act(req: Req, Path((name, command)): Path<(String, String)>, form: Form) -> Response {
    let outcome = async {
        check_name(&name)?;
        let (cmd, action, words) = match command.as_str() {
            "force-open" => (
                BreakerCommand::ForceOpen,
                "breaker_force_open",
                "forced open",
            ),
            "force-closed" => (
                BreakerCommand::ForceClosed,
                "breaker_force_closed",
                "forced closed",
            ),
            "reset" => (BreakerCommand::Reset, "breaker_reset", "reset"),
            other => {
                return Err(Failure::not_found(format!(
                    "no breaker action `{other}`: force-open, force-closed or reset"
                )))
            }
        };
        if req
            .ctx
            .app
            .registry()
            .get_guard(&name)
            .is_some_and(|g| !g.is_shared())
        {
            return Err(Failure::bad_request(format!(
                "breaker `{name}` is {LOCAL_ONLY}"
            )));
        }
        let (policy, _) = policy_for(&req, &name)?;
        let now = req.ctx.now();
        let state = req
            .timed(BreakerStore::breaker_command(
                req.ctx.store(),
                &name,
                cmd,
                &policy,
                now,
            ))
            .await?;
        let message = format!(
            "breaker {name}: {words} for every process; now {}",
            state.state
        );
        req.audit(action, None, message.clone()).await;
        Ok(Done::new(message))
    }
    .await;
    req.done(&form, outcome)
}
