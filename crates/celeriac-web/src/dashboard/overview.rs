//! The overview: a verdict per queue, worst first; throughput and failures over time; the
//! worst latencies; dead letters, workers up, the cache's hit ratio, open breakers and firing
//! alerts; and what the dashboard itself costs the store.

use super::layout::{self, badge, chart, rate, span};
use super::period::{picker, Period, Throughput};
use super::request::{Outcome, Req};
use super::MonitoringCost;
use axum::extract::Query;
use axum::response::{IntoResponse, Response};
use celeriac::alerts::{Alert, AlertStates, Snapshot, Status};
use celeriac::backend::{ProcessKind, ProcessState};
use celeriac::clock::UnixMs;
use celeriac::monitor::QueueFigures;
use celeriac::JobState;
use maud::{html, Markup};
use serde::{Deserialize, Serialize};

/// How a queue is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Verdict {
    /// Jobs wait and nothing takes them.
    Stalled,
    /// Most attempts fail.
    Failing,
    /// Some attempts fail, or jobs wait long.
    Degraded,
    /// Nothing to say.
    Ok,
}

impl Verdict {
    /// The verdict's word.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Verdict::Stalled => "stalled",
            Verdict::Failing => "failing",
            Verdict::Degraded => "degraded",
            Verdict::Ok => "ok",
        }
    }
}

/// A share of failed attempts above this fails a queue.
const FAILING_RATIO: f64 = 0.5;
/// A share above this degrades it.
const DEGRADED_RATIO: f64 = 0.05;
/// Jobs that wait longer than this degrade a queue.
const DEGRADED_LATENCY_MS: u64 = 60_000;

/// One queue's verdict and why.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct QueueHealth {
    /// The queue's figures.
    #[serde(flatten)]
    pub(crate) figures: QueueFigures,
    /// The verdict.
    pub(crate) verdict: Verdict,
    /// Why, in words.
    pub(crate) reason: String,
    /// Failed attempts among all ended over the last minutes (0 when none ended).
    pub(crate) failure_ratio: f64,
}

/// A queue's verdict from its figures.
pub(crate) fn judge(f: QueueFigures) -> QueueHealth {
    let ended = f.succeeded_per_min + f.failed_per_min;
    let ratio = if ended > 0.0 {
        f.failed_per_min / ended
    } else {
        0.0
    };
    let waiting = f.stats.count(JobState::Pending);
    let (verdict, reason) = if f.stats.paused && waiting > 0 {
        (
            Verdict::Stalled,
            format!("paused with {waiting} jobs waiting"),
        )
    } else if waiting > 0 && f.consumers == 0 {
        (
            Verdict::Stalled,
            format!("{waiting} jobs wait and no worker takes from it"),
        )
    } else if ratio > FAILING_RATIO {
        (
            Verdict::Failing,
            format!("{:.0} % of attempts fail", ratio * 100.0),
        )
    } else if ratio > DEGRADED_RATIO {
        (
            Verdict::Degraded,
            format!("{:.0} % of attempts fail", ratio * 100.0),
        )
    } else if f.latency_ms > DEGRADED_LATENCY_MS {
        (
            Verdict::Degraded,
            format!("the oldest job waits {}", span(f.latency_ms as i64)),
        )
    } else if f.stats.paused {
        (Verdict::Ok, "paused, nothing waiting".to_string())
    } else {
        (Verdict::Ok, String::new())
    };
    QueueHealth {
        figures: f,
        verdict,
        reason,
        failure_ratio: ratio,
    }
}

/// Workers and beats up.
#[derive(Debug, Clone, Default, Serialize)]
pub(crate) struct Fleet {
    pub(crate) workers_running: u32,
    pub(crate) workers_quiet: u32,
    pub(crate) workers_draining: u32,
    pub(crate) beats: u32,
}

/// The overview's data (and its JSON twin).
#[derive(Debug, Serialize)]
pub(crate) struct Overview {
    pub(crate) now: UnixMs,
    /// Every queue, worst first.
    pub(crate) queues: Vec<QueueHealth>,
    /// Dead letters in all queues.
    pub(crate) dead: u64,
    pub(crate) fleet: Fleet,
    pub(crate) throughput: Throughput,
    /// Alerts pending or firing.
    pub(crate) alerts: Vec<Alert>,
    /// The caches' hit ratio over every namespace, when any cache published figures.
    pub(crate) cache_hit_ratio: Option<f64>,
    /// Breakers that are open or half-open.
    pub(crate) breakers_open: Vec<String>,
    /// What the dashboard costs the store.
    pub(crate) cost: MonitoringCost,
}

/// The overview's query.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct Q {
    period: Option<String>,
}

pub(crate) async fn load(req: &Req, q: &Q) -> Outcome<Overview> {
    let store = req.ctx.store();
    let now = req.ctx.now();
    let snap = req.timed(Snapshot::read(store, now)).await?;
    // Versions the registry shows for the first time become deploy markers.
    req.timed(celeriac::deploys::observe(store, &snap.processes, now))
        .await?;
    let period = Period::parse(q.period.as_deref());
    let throughput = req
        .timed(Throughput::read(store, period, None, now))
        .await?;
    let alerts = req.timed(AlertStates::load(store, now)).await?;
    let cache_hit_ratio = super::cache::overall_hit_ratio(req).await?;
    let breakers_open = super::breakers::open_names(req).await?;
    let mut fleet = Fleet::default();
    for p in &snap.processes {
        match (p.kind, p.state) {
            (ProcessKind::Worker, ProcessState::Running) => fleet.workers_running += 1,
            (ProcessKind::Worker, ProcessState::Quiet) => fleet.workers_quiet += 1,
            (ProcessKind::Worker, ProcessState::Draining) => fleet.workers_draining += 1,
            (ProcessKind::Beat, _) => fleet.beats += 1,
        }
    }
    let mut queues: Vec<QueueHealth> = snap
        .queues
        .into_iter()
        .filter(|f| f.stats.queue != celeriac_web_canary())
        .map(judge)
        .collect();
    queues.sort_by(|a, b| {
        a.verdict
            .cmp(&b.verdict)
            .then(b.figures.latency_ms.cmp(&a.figures.latency_ms))
            .then(a.figures.stats.queue.cmp(&b.figures.stats.queue))
    });
    let dead = queues
        .iter()
        .map(|q| q.figures.stats.count(JobState::Dead))
        .sum();
    Ok(Overview {
        now,
        queues,
        dead,
        fleet,
        throughput,
        alerts: alerts
            .alerts
            .into_iter()
            .filter(|a| a.status != Status::Resolved)
            .collect(),
        cache_hit_ratio,
        breakers_open,
        cost: req.ctx.cost.read(),
    })
}

fn celeriac_web_canary() -> &'static str {
    crate::CANARY_QUEUE
}

pub(crate) async fn page(req: Req, Query(q): Query<Q>) -> Response {
    let data = load(&req, &q).await;
    req.page("Overview", data, |req, o| {
        html! {
            (layout::live(req, "/live/overview", tiles(req, o)))
            section {
                h2 { "Throughput" }
                (picker(req, &o.throughput.period))
                (chart("Attempts per bucket", &o.throughput.x, &o.throughput.lines(), &o.throughput.markers()))
                @if !o.throughput.deploys.is_empty() {
                    p.deploys #deploys {
                        "Deploys in this period (dashed lines): "
                        @for (i, d) in o.throughput.deploys.iter().enumerate() {
                            @if i > 0 { ", " }
                            strong { (d.version) } " at " (layout::time(d.at))
                        }
                    }
                }
            }
        }
    })
}

pub(crate) async fn api(req: Req, Query(q): Query<Q>) -> Response {
    Req::json(load(&req, &q).await)
}

/// The live part: every figure but the chart.
pub(crate) async fn live(req: Req) -> Response {
    let every = req.ctx.live_every;
    let req = std::sync::Arc::new(req);
    super::live::every(every, move || {
        let req = req.clone();
        async move {
            match load(&req, &Q::default()).await {
                Ok(o) => tiles(&req, &o),
                Err(f) => layout::failure(&f),
            }
        }
    })
    .into_response()
}

fn tiles(req: &Req, o: &Overview) -> Markup {
    let worst: Vec<&QueueHealth> = {
        let mut by_latency: Vec<&QueueHealth> = o.queues.iter().collect();
        by_latency.sort_by_key(|q| std::cmp::Reverse(q.figures.latency_ms));
        by_latency.into_iter().take(5).collect()
    };
    let firing = o
        .alerts
        .iter()
        .filter(|a| a.status == Status::Firing)
        .count();
    html! {
        section.tiles {
            a.tile href=(req.link("/dead")) {
                span.figure #dead-count { (o.dead) } span.label { "dead letters" }
            }
            a.tile href=(req.link("/workers")) {
                span.figure #workers-up { (o.fleet.workers_running) }
                span.label { "workers up" @if o.fleet.workers_quiet > 0 { ", " (o.fleet.workers_quiet) " quiet" } }
            }
            a.tile href=(req.link("/cache")) {
                span.figure { (o.cache_hit_ratio.map_or_else(|| "–".to_string(), |r| format!("{:.1} %", r * 100.0))) }
                span.label { "cache hit ratio" }
            }
            a.tile.bad[!o.breakers_open.is_empty()] href=(req.link("/breakers")) {
                span.figure { (o.breakers_open.len()) } span.label { "breakers open" }
            }
            a.tile.bad[firing > 0] href=(req.link("/alerts")) {
                span.figure #alerts-firing { (firing) } span.label { "alerts firing" }
            }
        }
        section {
            h2 { "Queues" }
            @if o.queues.is_empty() {
                p.empty { "No queue has jobs yet." }
            } @else {
                table.queues #queue-health {
                    thead { tr {
                        th { "Queue" } th { "Health" } th.num { "Waiting" } th.num { "Running" }
                        th.num { "Dead" } th.num { "Latency" } th.num { "OK/min" } th.num { "Err/min" }
                        th.num { "Consumers" }
                    } }
                    tbody {
                        @for q in &o.queues {
                            @let s = &q.figures.stats;
                            tr data-queue=(s.queue) {
                                td { a href=(req.link(&format!("/queues/{}", layout::path_escape(&s.queue)))) { (s.queue) } }
                                td.verdict { (badge(q.verdict.as_str())) @if s.paused { " " (badge("paused")) } " " span.reason { (q.reason) } }
                                td.num.pending { (s.count(JobState::Pending)) }
                                td.num { (s.count(JobState::Active)) }
                                td.num { (s.count(JobState::Dead)) }
                                td.num { (span(q.figures.latency_ms as i64)) }
                                td.num { (rate(q.figures.succeeded_per_min)) }
                                td.num { (rate(q.figures.failed_per_min)) }
                                td.num { (q.figures.consumers) }
                            }
                        }
                    }
                }
            }
        }
        @if worst.iter().any(|q| q.figures.latency_ms > 0) {
            section {
                h2 { "Longest waits" }
                ol.latency {
                    @for q in worst.iter().filter(|q| q.figures.latency_ms > 0) {
                        li { (q.figures.stats.queue) ": " (span(q.figures.latency_ms as i64)) }
                    }
                }
            }
        }
        @if !o.alerts.is_empty() {
            section {
                h2 { "Alerts" }
                ul.alerts {
                    @for a in &o.alerts {
                        li { (badge(match a.status { Status::Firing => "firing", _ => "pending" })) " " (a.summary) }
                    }
                }
            }
        }
        p.cost title="the store time this dashboard's pages and live updates took" {
            "Monitoring cost: " (o.cost.calls) " store reads, "
            (format!("{:.1}", o.cost.store_ms)) " ms in "
            (span((o.cost.over_s * 1000.0) as i64))
            " (" (format!("{:.3}", o.cost.busy_percent)) " % of the time). Updated "
            (layout::time(o.now))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use celeriac::backend::QueueStats;

    fn figures(pending: u64, consumers: u32, ok: f64, err: f64, latency_ms: u64) -> QueueFigures {
        let mut counts = std::collections::BTreeMap::new();
        counts.insert("pending".to_string(), pending);
        QueueFigures {
            stats: QueueStats {
                queue: "q".to_string(),
                paused: false,
                counts,
                oldest_pending_at: None,
                next_due_at: None,
            },
            latency_ms,
            consumers,
            slots: consumers * 8,
            succeeded_per_min: ok,
            failed_per_min: err,
        }
    }

    #[test]
    fn verdicts_name_the_worst_reason() {
        let stalled = judge(figures(5, 0, 0.0, 0.0, 0));
        assert_eq!(stalled.verdict, Verdict::Stalled);
        assert!(stalled.reason.contains("5 jobs wait"), "{}", stalled.reason);

        let failing = judge(figures(0, 1, 10.0, 30.0, 0));
        assert_eq!(failing.verdict, Verdict::Failing);
        assert!((failing.failure_ratio - 0.75).abs() < 1e-9);
        assert_eq!(failing.reason, "75 % of attempts fail");

        assert_eq!(
            judge(figures(0, 1, 90.0, 10.0, 0)).verdict,
            Verdict::Degraded
        );
        let slow = judge(figures(3, 1, 10.0, 0.0, 120_000));
        assert_eq!(slow.verdict, Verdict::Degraded);
        assert!(slow.reason.contains("2m 0s"), "{}", slow.reason);
        assert_eq!(judge(figures(3, 1, 100.0, 1.0, 500)).verdict, Verdict::Ok);

        let mut paused = figures(2, 1, 0.0, 0.0, 0);
        paused.stats.paused = true;
        let p = judge(paused);
        assert_eq!(p.verdict, Verdict::Stalled);
        assert_eq!(p.reason, "paused with 2 jobs waiting");
    }

    #[test]
    fn worse_verdicts_sort_first() {
        let mut v = [
            Verdict::Ok,
            Verdict::Degraded,
            Verdict::Stalled,
            Verdict::Failing,
        ];
        v.sort();
        assert_eq!(
            v,
            [
                Verdict::Stalled,
                Verdict::Failing,
                Verdict::Degraded,
                Verdict::Ok
            ]
        );
    }
}
