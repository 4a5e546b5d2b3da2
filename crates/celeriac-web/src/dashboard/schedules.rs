//! Schedules: the application's periodic schedules joined with their stored states (last
//! tick, paused), their next fire times, schedules the store knows that this application does
//! not define, and which beat leads; pause, resume and run one now.

use super::layout::{self, badge, when};
use super::request::{Ctx, Done, Failure, Form, Outcome, Req};
use axum::extract::{Path, Query};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use celeriac::backend::{ProcessKind, ScheduleState};
use celeriac::clock::UnixMs;
use celeriac::{Coordinator, ProcessRegistry, Schedule};
use chrono::TimeZone;
use maud::{html, Markup};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;

/// Upcoming fire times shown per schedule.
const UPCOMING: usize = 3;

/// The schedules page, its JSON twin and actions.
pub(crate) fn routes(r: Router<Arc<Ctx>>) -> Router<Arc<Ctx>> {
    r.route("/schedules", get(page))
        .route("/api/v1/schedules", get(api))
        .route("/api/v1/schedules/{name}/pause", post(pause))
        .route("/api/v1/schedules/{name}/resume", post(resume))
        .route("/api/v1/schedules/{name}/run", post(run_now))
}

/// One schedule: its definition (when this application defines it) and its stored state.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Row {
    pub(crate) name: String,
    /// Whether this application defines it (otherwise only its stored state is known).
    pub(crate) defined: bool,
    /// `every 5m` or `cron 30 2 * * *`.
    pub(crate) spec: Option<String>,
    /// The IANA time zone its cron expression is read in.
    pub(crate) timezone: Option<String>,
    pub(crate) task: Option<String>,
    /// The queue its jobs go to (the schedule's, else the task's).
    pub(crate) queue: Option<String>,
    /// The missed-tick policy.
    pub(crate) missed: Option<String>,
    /// Paused, in its definition or in the store.
    pub(crate) paused: bool,
    /// Paused in its definition (stays paused until the definition changes).
    pub(crate) paused_in_definition: bool,
    /// Paused in the store (`pause` / `resume`).
    pub(crate) paused_in_store: bool,
    /// Whether the store has a state for it (a beat has seen it).
    pub(crate) stored: bool,
    /// The last tick handled (fired, or passed over), when it is a real tick.
    pub(crate) last_tick: Option<UnixMs>,
    /// The moment a beat first saw it, while no tick has come since.
    pub(crate) watched_since: Option<UnixMs>,
    /// The next fire time.
    pub(crate) next: Option<UnixMs>,
    /// The next few fire times.
    pub(crate) upcoming: Vec<UnixMs>,
}

/// A beat process.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct BeatRow {
    pub(crate) id: String,
    pub(crate) host: String,
    pub(crate) state: String,
    /// Whether it leads, as of its last refresh of its registry entry.
    pub(crate) leader: bool,
    pub(crate) seen_at: UnixMs,
}

/// The schedules page's data (and its JSON twin).
#[derive(Debug, Serialize)]
pub(crate) struct Schedules {
    pub(crate) now: UnixMs,
    pub(crate) schedules: Vec<Row>,
    /// The beats in the process registry.
    pub(crate) beats: Vec<BeatRow>,
    /// The beat that leads (fires the schedules), if one says so.
    pub(crate) leader: Option<String>,
}

/// The schedules page's query (none yet).
#[derive(Debug, Default, Deserialize)]
pub(crate) struct Q {}

fn row_of(req: &Req, s: &Schedule, state: Option<&ScheduleState>, now: UnixMs) -> Row {
    let stored_tick = state.and_then(|st| st.last_tick);
    // The stored cursor is the last tick handled, or the moment a beat first saw the schedule
    // when no tick came since (as `celeriac schedules` reads it).
    let (last_tick, watched_since) = match stored_tick {
        Some(t) if s.last_at_or_before(t) == Some(t) => (Some(t), None),
        Some(t) => (None, Some(t)),
        None => (None, None),
    };
    let queue = s.queue().map(str::to_string).or_else(|| {
        req.ctx
            .app
            .registry()
            .get(s.task())
            .map(|d| d.options().queue.clone())
    });
    let paused_in_store = state.is_some_and(|st| st.paused);
    let upcoming = s.upcoming(now, UPCOMING);
    Row {
        name: s.name().to_string(),
        defined: true,
        spec: Some(s.spec().to_string()),
        timezone: Some(s.timezone().name().to_string()),
        task: Some(s.task().to_string()),
        queue,
        missed: Some(s.missed().to_string()),
        paused: s.paused() || paused_in_store,
        paused_in_definition: s.paused(),
        paused_in_store,
        stored: state.is_some(),
        last_tick,
        watched_since,
        next: upcoming.first().copied(),
        upcoming,
    }
}

pub(crate) async fn load(req: &Req, _q: &Q) -> Outcome<Schedules> {
    let store = req.ctx.store();
    let now = req.ctx.now();
    let mut states: BTreeMap<String, ScheduleState> = req
        .timed(store.schedule_states())
        .await?
        .into_iter()
        .map(|s| (s.name.clone(), s))
        .collect();
    let mut schedules: Vec<Row> = req
        .ctx
        .app
        .schedules()
        .iter()
        .map(|s| {
            let state = states.remove(s.name());
            row_of(req, s, state.as_ref(), now)
        })
        .collect();
    // Stored but not defined here: another application's, or one since removed.
    schedules.extend(states.into_values().map(|st| Row {
        name: st.name,
        defined: false,
        spec: None,
        timezone: None,
        task: None,
        queue: None,
        missed: None,
        paused: st.paused,
        paused_in_definition: false,
        paused_in_store: st.paused,
        stored: true,
        last_tick: st.last_tick,
        watched_since: None,
        next: None,
        upcoming: Vec::new(),
    }));
    let beats: Vec<BeatRow> = req
        .timed(store.processes(now))
        .await?
        .into_iter()
        .filter(|p| p.kind == ProcessKind::Beat)
        .map(|p| BeatRow {
            id: p.id,
            host: p.host,
            state: p.state.as_str().to_string(),
            leader: p.leader,
            seen_at: p.seen_at,
        })
        .collect();
    let leader = beats.iter().find(|b| b.leader).map(|b| b.id.clone());
    Ok(Schedules {
        now,
        schedules,
        beats,
        leader,
    })
}

pub(crate) async fn page(req: Req, Query(q): Query<Q>) -> Response {
    let data = load(&req, &q).await;
    req.page("Schedules", data, body)
}

pub(crate) async fn api(req: Req, Query(q): Query<Q>) -> Response {
    Req::json(load(&req, &q).await)
}

/// A moment in the schedule's time zone, when that is not UTC.
fn local(req: &Req, name: &str, at: UnixMs) -> Option<String> {
    let s = req.ctx.app.schedules().iter().find(|s| s.name() == name)?;
    let tz = s.timezone();
    if tz.name() == "UTC" {
        return None;
    }
    tz.timestamp_millis_opt(at)
        .single()
        .map(|t| t.format("%Y-%m-%d %H:%M:%S %Z").to_string())
}

fn moment(req: &Req, name: &str, at: UnixMs, now: UnixMs) -> Markup {
    html! {
        span.moment {
            (layout::time(at))
            @if let Some(l) = local(req, name, at) { " (" (l) ")" }
            br;
            span.reason { (when(at, now)) }
        }
    }
}

fn beats(d: &Schedules) -> Markup {
    html! {
        p #beat-leader {
            @if d.beats.is_empty() {
                "No beat is running: none is in the process registry, so no schedule fires."
            } @else if let Some(l) = &d.leader {
                "Leading beat: " strong { (l) } " (as of its last refresh of its registry entry)."
            } @else {
                (d.beats.len()) " beat(s) running, none leads right now: another takes over once the \
                 leader lease expires."
            }
        }
        @if !d.beats.is_empty() {
            ul.beats {
                @for b in &d.beats {
                    li {
                        code { (b.id) } " on " (b.host) " " (badge(&b.state))
                        @if b.leader { " " (badge("leader")) }
                        " seen " (when(b.seen_at, d.now))
                    }
                }
            }
        }
    }
}

fn body(req: &Req, d: &Schedules) -> Markup {
    html! {
        (beats(d))
        @if d.schedules.is_empty() {
            p.empty { "No schedules: define them with AppBuilder::schedule or a schedules file." }
        } @else {
            table #schedules {
                thead { tr {
                    th { "Schedule" } th { "When" } th { "Task → queue" } th { "Last tick" }
                    th { "Next fire" } th { "State" } th { "" }
                } }
                tbody {
                    @for s in &d.schedules {
                        @let path = layout::path_escape(&s.name);
                        tr data-schedule=(s.name) {
                            td { strong { (s.name) } }
                            td {
                                @if let Some(spec) = &s.spec { (spec) } @else { span.reason { "not defined in this application" } }
                                @if let Some(tz) = &s.timezone { br; span.reason { (tz) } }
                                @if let Some(m) = &s.missed { br; span.reason { "missed: " (m) } }
                            }
                            td {
                                @if let Some(t) = &s.task { (t) }
                                @if let Some(q) = &s.queue {
                                    " → " a href=(req.link(&format!("/queues/{}", layout::path_escape(q)))) { (q) }
                                }
                            }
                            td.last {
                                @if let Some(t) = s.last_tick {
                                    (moment(req, &s.name, t, d.now))
                                } @else if let Some(t) = s.watched_since {
                                    "none yet" br; span.reason { "watched since " (layout::time(t)) }
                                } @else {
                                    span.reason { "none (no beat has run it)" }
                                }
                            }
                            td.next {
                                @if let Some(t) = s.next {
                                    (moment(req, &s.name, t, d.now))
                                    @if s.paused { br; span.reason { "(paused: it will not fire)" } }
                                } @else {
                                    span.reason { "–" }
                                }
                            }
                            td {
                                @if s.paused { (badge("paused")) } @else { (badge("active")) }
                                @if s.paused_in_definition { br; span.reason { "paused in its definition" } }
                            }
                            td.ops {
                                @if s.paused_in_store {
                                    (layout::action(req, &format!("/api/v1/schedules/{path}/resume"), "Resume", None, &[]))
                                } @else {
                                    (layout::action(req, &format!("/api/v1/schedules/{path}/pause"), "Pause", None, &[]))
                                }
                                @if s.defined {
                                    " "
                                    (layout::action(req, &format!("/api/v1/schedules/{path}/run"), "Run now",
                                        Some("Enqueue this schedule's job now?"), &[]))
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Whether `name` is defined here or stored.
async fn known(req: &Req, name: &str) -> Outcome<()> {
    if req.ctx.app.schedules().iter().any(|s| s.name() == name) {
        return Ok(());
    }
    let states = req.timed(req.ctx.store().schedule_states()).await?;
    if states.iter().any(|s| s.name == name) {
        return Ok(());
    }
    Err(Failure::not_found(format!(
        "no schedule `{name}`: neither defined in this application nor stored"
    )))
}

async fn set_paused(req: &Req, name: &str, paused: bool) -> Outcome<Done> {
    known(req, name).await?;
    req.timed(req.ctx.store().set_schedule_paused(name, paused))
        .await?;
    let (action, verb) = if paused {
        ("schedule_pause", "paused")
    } else {
        ("schedule_resume", "resumed")
    };
    req.audit(action, None, format!("{verb} schedule {name}"))
        .await;
    let still = !paused
        && req
            .ctx
            .app
            .schedules()
            .iter()
            .any(|s| s.name() == name && s.paused());
    Ok(Done::new(if still {
        format!("resumed schedule {name}, but its definition says paused: it stays paused")
    } else {
        format!("{verb} schedule {name}")
    }))
}

/// Pauses a schedule (in the store).
pub(crate) async fn pause(req: Req, Path(name): Path<String>, form: Form) -> Response {
    let outcome = set_paused(&req, &name, true).await;
    req.done(&form, outcome)
}

/// Resumes a schedule (in the store).
pub(crate) async fn resume(req: Req, Path(name): Path<String>, form: Form) -> Response {
    let outcome = set_paused(&req, &name, false).await;
    req.done(&form, outcome)
}

/// Enqueues the job the beat would fire for a tick now.
async fn run(req: &Req, name: &str) -> Outcome<Done> {
    let app = &req.ctx.app;
    let Some(s) = app.schedules().iter().find(|s| s.name() == name) else {
        known(req, name).await?;
        return Err(Failure::bad_request(format!(
            "schedule `{name}` is only stored: this application does not define it, so it \
             cannot build its job"
        )));
    };
    let now = req.ctx.now();
    // The beat's own recipe: its job for a tick at `now` (id and unique key from the tick).
    let window = celeriac::BeatConfig::default().unique_window;
    let job = celeriac::beat::tick_job(Some(app.registry()), s, now, now, window)?;
    let (queue, task) = (job.queue.clone(), job.task.clone());
    let handles = req.timed(app.client().push(vec![job])).await?;
    let id = handles
        .first()
        .map(|h| h.id().to_string())
        .unwrap_or_default();
    req.audit(
        "schedule_run",
        Some(&queue),
        format!("ran schedule {name} now: job {id} of {task} on {queue}"),
    )
    .await;
    Ok(Done::counted(
        format!("enqueued job {id} of {task} on {queue} for schedule {name}"),
        1,
    ))
}

/// Runs a schedule now.
pub(crate) async fn run_now(req: Req, Path(name): Path<String>, form: Form) -> Response {
    let outcome = run(&req, &name).await;
    req.done(&form, outcome)
}
