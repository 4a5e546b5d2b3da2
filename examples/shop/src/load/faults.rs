//! The fault run: the Redis deployment under a steady mix while workers are killed, Redis
//! restarts once and the SMTP server refuses for a while; one verdict per property.

use super::chart::{self, Marker};
use super::emails;
use super::oha::{self, Rec};
use super::run::{limit_summary, mix_classes, premium_keys, user_digits, Catalog};
use super::stats;
use super::topo::{metric_sum, Backend, Plan, Topology};
use super::{parse_duration, say, Common, Env};
use anyhow::Result;
use celeriac::backend::BreakerStore;
use celeriac::breaker::BreakerState;
use celeriac::clock::StoreClock;
use celeriac::Clock;
use clap::Args;
use serde::Serialize;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Options of `shop-load faults`.
#[derive(Args, Debug)]
pub(crate) struct FaultArgs {
    #[command(flatten)]
    pub(crate) common: Common,
    /// The short version (80 s of load; what scripts/test runs).
    #[arg(long)]
    short: bool,
    /// How long the load runs (default 10m; 80s with --short).
    #[arg(long, value_parser = parse_duration)]
    duration: Option<Duration>,
    /// Total arrival rate of the mix (requests/s; default 100: what the Redis deployment
    /// serves steadily on a 2-core machine).
    #[arg(long)]
    rate: Option<f64>,
    /// A worker is killed (kill -9) this often, alternately, and started again at once (a kill
    /// due while the SMTP sink refuses or Redis restarts waits until 5 s after).
    #[arg(long, default_value = "20s", value_parser = parse_duration)]
    kill_every: Duration,
    /// How long Redis stays down after its graceful shutdown.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    redis_down: Duration,
    /// How long the SMTP sink refuses (`POST /fail?seconds=N`).
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    sink_fail: Duration,
    /// How long to wait, after the load, for every order's e-mail and for the breaker to close.
    #[arg(long, default_value = "180s", value_parser = parse_duration)]
    drain_timeout: Duration,
    /// Share of listing answers during the Redis restart that may be errors (not 2xx, not 429).
    #[arg(long, default_value_t = 0.001)]
    listing_error_budget: f64,
}

/// A fault or an observation on the timeline.
#[derive(Clone, Debug, Serialize)]
struct Event {
    /// Seconds since the load started.
    t: f64,
    /// Unix ms.
    at_ms: f64,
    what: String,
}

#[derive(Default)]
struct Timeline(Mutex<Vec<Event>>);

impl Timeline {
    fn add(&self, t0: f64, what: impl Into<String>) {
        let now = oha::now_ms();
        let what = what.into();
        say(format!("t={:>6.1} s  {what}", (now - t0) / 1000.0));
        if let Ok(mut v) = self.0.lock() {
            v.push(Event {
                t: (now - t0) / 1000.0,
                at_ms: now,
                what,
            });
        }
    }
    fn all(&self) -> Vec<Event> {
        self.0.lock().map(|v| v.clone()).unwrap_or_default()
    }
}

/// One verdict line.
#[derive(Clone, Debug, Serialize)]
struct Verdict {
    name: &'static str,
    pass: bool,
    detail: String,
}

/// A kill of a worker.
#[derive(Clone, Debug, Serialize)]
struct Kill {
    t: f64,
    worker: String,
    /// `celeriac_worker_busy_slots` just before the kill.
    busy: Option<f64>,
    /// The breaker was open (jobs deferred) at the time.
    breaker_open: bool,
}

/// A probe: update on instance A, poll instance B until the new price shows.
#[derive(Clone, Debug, Serialize)]
struct Probe {
    t: f64,
    /// ms from the update's answer to the start of the first read on instance B that served
    /// the new price (reads are sent one after the other, 10 ms apart).
    visible_after_ms: Option<f64>,
    /// ms from the update's answer to the start of the last read that served the old price:
    /// the staleness the bound is about.
    last_stale_read_ms: f64,
    /// Redis was down (or restarting) during the probe.
    redis_down: bool,
    put_status: u16,
    /// The run ended while the probe still polled: neither seen nor unseen.
    cut_short: bool,
    /// How stale another instance may be, as the update's answer promised (`stale_for_ms`:
    /// the bound with the broadcast, or without it while this instance saw Redis fail).
    promised_ms: Option<f64>,
}

#[derive(Serialize)]
struct Report {
    duration_s: f64,
    rate: f64,
    timeline: Vec<Event>,
    kills: Vec<Kill>,
    probes: Vec<Probe>,
    emails: emails::EmailCheck,
    orders_201: u64,
    listing: stats::RouteStats,
    order: stats::RouteStats,
    listing_during_restart: (u64, u64),
    limits: super::run::LimitSummary,
    breaker_opened_at: Option<f64>,
    breaker_closed_at: Option<f64>,
    verdicts: Vec<Verdict>,
    chart_svg: Option<String>,
    chart_png: Option<String>,
}

async fn busy_slots(topo: &Topology, i: usize) -> Option<f64> {
    let u = format!("http://127.0.0.1:{}/metrics", topo.workers[i].http_port);
    let m = topo.metrics(&u).await.ok()?;
    Some(metric_sum(&m, "celeriac_worker_busy_slots", ""))
}

/// The shared breaker `smtp` as the store has it: (open?, state name).
async fn breaker(backend: &celeriac::AnyBackend) -> Option<BreakerState> {
    let now = backend.fleet_clock().now_ms();
    match tokio::time::timeout(Duration::from_secs(1), backend.breaker_status("smtp", now)).await {
        Ok(Ok(Some(s))) => Some(s.state),
        Ok(Ok(None)) => Some(BreakerState::Closed),
        _ => None,
    }
}

/// `shop-load faults`.
pub(crate) async fn run(env: &Env, a: &FaultArgs) -> Result<bool> {
    let d = a.duration.unwrap_or(if a.short {
        Duration::from_secs(80)
    } else {
        Duration::from_secs(600)
    });
    let rate = a.rate.unwrap_or(100.0);
    let dsec = d.as_secs_f64();
    let sink_at = (dsec * 0.1).max(5.0);
    let sink_for = a.sink_fail.as_secs_f64();
    let redis_at = (sink_at + sink_for + 10.0).max(dsec * 0.55);
    let down_for = a.redis_down.as_secs_f64();
    if redis_at + down_for + 8.0 > dsec {
        anyhow::bail!(
            "--duration {dsec:.0}s is too short for the faults (at least {:.0}s)",
            redis_at + down_for + 8.0
        );
    }
    let template = super::topo::seed_template(&env.shop, &env.work.join("template"))?;
    let dir = env.work.join("faults");
    say("faults: starting Redis (AOF), 2 instances, 2 workers, the SMTP sink (200 ms)");
    let plan = Plan {
        backend: Backend::Redis,
        cache: true,
        instances: 2,
        workers: 2,
        smtp_delay: "200ms".into(),
        premium_keys: premium_keys(),
    };
    let mut topo = Topology::start(&env.shop, &template, &dir, &plan).await?;
    let cat = Catalog::read(&topo.shop_db)?;
    let store = Arc::new(celeriac::AnyBackend::connect(&topo.url).await?);
    let catalog_opts = crate::catalog::CatalogOptions::new(true);
    let bound_up = catalog_opts.bound_with_broadcast().as_secs_f64() * 1000.0;
    let bound_down = catalog_opts.bound_without_broadcast().as_secs_f64() * 1000.0;
    let classes = mix_classes(
        &topo,
        &cat,
        rate,
        &dir,
        user_digits(rate * 0.8, env.common.limit_per_minute),
    )?;
    // The probe's product: one the mix does not update.
    let updated = cat.sample_ids(200);
    let probe_id = cat
        .product_ids
        .iter()
        .rev()
        .find(|id| !updated.contains(id))
        .copied()
        .unwrap_or(cat.product_ids[0]);

    let tl = Arc::new(Timeline::default());
    let mut running = Vec::new();
    let t0 = oha::now_ms();
    for c in classes {
        running.push(oha::spawn(&env.oha, c, dsec, &dir, "faults")?);
    }
    tl.add(t0, format!("load starts: {rate:.0} req/s for {dsec:.0} s"));

    // The probe and the breaker watcher run beside the fault schedule.
    let redis_down_flag = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop = tokio_util::sync::CancellationToken::new();
    let a_base = topo.instances[0].base();
    let b_base = topo.instances[1].base();
    let probe_task = {
        let http = topo.http.clone();
        let stop = stop.clone();
        let down = redis_down_flag.clone();
        tokio::spawn(async move {
            let mut probes = Vec::new();
            let mut n: u64 = 0;
            while !stop.is_cancelled() {
                n += 1;
                let price = 100_000 + n as i64;
                let t = (oha::now_ms() - t0) / 1000.0;
                let was_down = down.load(std::sync::atomic::Ordering::SeqCst);
                let put = http
                    .put(format!(
                        "{a_base}/products/{probe_id}?api_key=probe-{:02}",
                        n % 10
                    ))
                    .json(&serde_json::json!({ "price_cents": price }))
                    .send()
                    .await;
                let status = put.as_ref().map(|r| r.status().as_u16()).unwrap_or(0);
                let answered = Instant::now();
                let promised_ms =
                    match put {
                        Ok(r) => r.json::<serde_json::Value>().await.ok().and_then(|v| {
                            v.get("stale_for_ms").and_then(serde_json::Value::as_f64)
                        }),
                        Err(_) => None,
                    };
                let mut seen = None;
                let mut last_stale = 0.0f64;
                if (200..300).contains(&status) {
                    let mut k: u64 = 0;
                    while answered.elapsed() < Duration::from_secs(30) && !stop.is_cancelled() {
                        k += 1;
                        // A read that starts now and still shows the old price was stale
                        // this long after the update answered.
                        let sent = answered.elapsed().as_secs_f64() * 1000.0;
                        let r = http
                            .get(format!(
                                "{b_base}/products/{probe_id}?api_key=probe-{:02}",
                                10 + k % 10
                            ))
                            .send()
                            .await;
                        if let Ok(r) = r {
                            if let Ok(v) = r.json::<serde_json::Value>().await {
                                if v.get("price_cents").and_then(serde_json::Value::as_i64)
                                    == Some(price)
                                {
                                    seen = Some(sent);
                                    break;
                                }
                                if v.get("price_cents").is_some() {
                                    last_stale = sent;
                                }
                            }
                        }
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
                probes.push(Probe {
                    t,
                    visible_after_ms: seen,
                    last_stale_read_ms: last_stale,
                    redis_down: was_down || down.load(std::sync::atomic::Ordering::SeqCst),
                    put_status: status,
                    cut_short: seen.is_none() && stop.is_cancelled(),
                    promised_ms,
                });
                tokio::select! {
                    _ = stop.cancelled() => {}
                    _ = tokio::time::sleep(Duration::from_millis(1500)) => {}
                }
            }
            probes
        })
    };
    let breaker_task = {
        let store = store.clone();
        let stop = stop.clone();
        let tl = tl.clone();
        tokio::spawn(async move {
            let mut last: Option<BreakerState> = None;
            let mut changes: Vec<(f64, BreakerState)> = Vec::new();
            while !stop.is_cancelled() {
                if let Some(s) = breaker(&store).await {
                    if last != Some(s) {
                        if last.is_some() || s != BreakerState::Closed {
                            tl.add(t0, format!("breaker smtp: {s}"));
                        }
                        changes.push(((oha::now_ms() - t0) / 1000.0, s));
                        last = Some(s);
                    }
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            changes
        })
    };

    // The fault schedule.
    let start = Instant::now();
    let at = |s: f64| async move {
        let left = s - start.elapsed().as_secs_f64();
        if left > 0.0 {
            tokio::time::sleep(Duration::from_secs_f64(left)).await;
        }
    };
    let mut kills = Vec::new();
    let mut next_kill = (a.kill_every.as_secs_f64() - 10.0).max(5.0);
    let (mut sink_done, mut redis_done) = (false, false);
    let (mut sink_span, mut redis_span) = ((0.0, 0.0), (0.0, 0.0));
    let mut next_worker = 0usize;
    let mut postponed = 0usize;
    let mut last_progress = Instant::now();
    loop {
        let now = start.elapsed().as_secs_f64();
        if now >= dsec {
            break;
        }
        if last_progress.elapsed() > Duration::from_secs(15) {
            last_progress = Instant::now();
            say(format!(
                "faults: {now:.0}/{dsec:.0} s of load, {:.0} s left",
                dsec - now
            ));
        }
        if !sink_done && now >= sink_at {
            sink_done = true;
            topo.sink_control(&format!("/fail?seconds={}", sink_for.round() as u64))
                .await?;
            sink_span = (now, now + sink_for);
            tl.add(
                t0,
                format!("SMTP sink refuses for {sink_for:.0} s (POST /fail)"),
            );
            continue;
        }
        if !redis_done && now >= redis_at {
            redis_done = true;
            redis_down_flag.store(true, std::sync::atomic::Ordering::SeqCst);
            let down_at = start.elapsed().as_secs_f64();
            if let Some(r) = topo.redis.as_mut() {
                tl.add(t0, "Redis: graceful SHUTDOWN (AOF flushed)");
                r.shutdown().await?;
                tokio::time::sleep(a.redis_down).await;
                tl.add(t0, "Redis: starting again with the same AOF");
                r.restart().await?;
                tl.add(t0, "Redis: answering PING");
            }
            redis_span = (down_at, start.elapsed().as_secs_f64());
            // Clients reconnect with a backoff; the flag covers the probes of that time too.
            let flag = redis_down_flag.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_secs(6)).await;
                flag.store(false, std::sync::atomic::Ordering::SeqCst);
            });
            continue;
        }
        // A process that exited on its own (not killed by us) is started again, and said.
        for i in 0..topo.workers.len() {
            if !topo.workers[i].proc.running() {
                let name = topo.workers[i].proc.name.clone();
                tl.add(
                    t0,
                    format!("{name} had exited on its own; starting it again"),
                );
                topo.workers[i].proc.start()?;
            }
        }
        topo.check_alive()?;
        // No kill while Redis restarts (a worker that starts meanwhile would only wait for it).
        if redis_done && now < redis_span.1 + 5.0 && next_kill <= now {
            next_kill = redis_span.1 + 5.0;
        }
        // Nor while the SMTP sink refuses: the breaker defers every e-mail job then, so a
        // kill would find no job running.
        if next_kill >= sink_at - 1.0 && next_kill <= sink_at + sink_for + 5.0 {
            next_kill = sink_at + sink_for + 5.0;
        }
        if !redis_done && next_kill >= redis_at - 3.0 && next_kill <= redis_at + down_for + 5.0 {
            next_kill = redis_at + down_for + 5.0;
        }
        if now >= next_kill && now < dsec - 3.0 {
            let i = next_worker % topo.workers.len();
            next_worker += 1;
            let open = matches!(breaker(&store).await, Some(s) if s != BreakerState::Closed);
            // Wait (a little) for the worker to be running jobs, then kill it at once.
            let mut busy = None;
            let wait = Instant::now();
            while wait.elapsed() < Duration::from_secs(6) {
                busy = busy_slots(&topo, i).await;
                if busy.unwrap_or(0.0) > 0.0 {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let name = topo.workers[i].proc.name.clone();
            if busy.unwrap_or(0.0) <= 0.0 {
                // The death of an idle worker proves nothing about redelivery: the other
                // worker is tried in 2 s.
                postponed += 1;
                tl.add(t0, format!("{name} idle for 6 s: its kill is postponed"));
                next_kill = start.elapsed().as_secs_f64() + 2.0;
                continue;
            }
            next_kill = start.elapsed().as_secs_f64() + a.kill_every.as_secs_f64();
            topo.workers[i].proc.kill9();
            tl.add(
                t0,
                format!(
                    "kill -9 {name} ({} jobs running{})",
                    busy.map_or("?".into(), |b| format!("{b:.0}")),
                    if open { ", breaker open" } else { "" }
                ),
            );
            kills.push(Kill {
                t: (oha::now_ms() - t0) / 1000.0,
                worker: name.clone(),
                busy,
                breaker_open: open,
            });
            topo.workers[i].proc.start()?;
            continue;
        }
        let next = [
            next_kill,
            if sink_done { f64::MAX } else { sink_at },
            if redis_done { f64::MAX } else { redis_at },
            dsec,
        ]
        .into_iter()
        .fold(f64::MAX, f64::min);
        at(next.min(now + 1.0)).await;
    }
    tl.add(t0, "load ends");
    let mut outcomes = Vec::new();
    for r in running {
        outcomes.push(r.finish().await?);
    }

    // Drain: every order's e-mail, and the breaker closed.
    say(format!(
        "faults: waiting for every order's e-mail and a closed breaker (at most {:?})",
        a.drain_timeout
    ));
    let drain_start = Instant::now();
    emails::drain(&topo.shop_db, a.drain_timeout, |all, left| {
        say(format!(
            "faults: {left} of {all} orders still without their e-mail"
        ));
    })
    .await?;
    while drain_start.elapsed() < a.drain_timeout {
        if breaker(&store).await == Some(BreakerState::Closed) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    tl.add(
        t0,
        format!("drained after {:.1} s", drain_start.elapsed().as_secs_f64()),
    );
    stop.cancel();
    let probes = probe_task.await.unwrap_or_default();
    let changes = breaker_task.await.unwrap_or_default();
    let email = emails::check(&topo.shop_db, &topo.mail_log)?;
    topo.stop();

    // Figures.
    let all: Vec<&Rec> = outcomes.iter().flat_map(|o| o.recs.iter()).collect();
    let route =
        |name: &str| -> Vec<&Rec> { all.iter().copied().filter(|r| r.route == name).collect() };
    let errors_of = |name: &str| -> u64 {
        outcomes
            .iter()
            .filter(|o| o.class.route == name)
            .flat_map(|o| o.errors.iter())
            .map(|e| e.1)
            .sum()
    };
    let end = t0 + dsec * 1000.0;
    let listing = stats::route_stats("browse", &route("browse"), t0, end, errors_of("browse"));
    let order = stats::route_stats("order", &route("order"), t0, end, errors_of("order"));
    let orders_201 = route("order")
        .iter()
        .filter(|r| r.status == 201 || r.status == 200)
        .count() as u64;
    // The Redis restart window: from the shutdown to 6 s after it answered again.
    let (w_from, w_to) = (
        t0 + redis_span.0 * 1000.0,
        t0 + (redis_span.1 + 6.0) * 1000.0,
    );
    let in_window: Vec<&Rec> = route("browse")
        .into_iter()
        .chain(route("overlimit"))
        .filter(|r| r.sent_ms >= w_from && r.sent_ms < w_to)
        .collect();
    let bad_in_window = in_window
        .iter()
        .filter(|r| !(200..300).contains(&r.status) && r.status != 429)
        .count() as u64;
    let listing_errors_total = errors_of("browse") + errors_of("overlimit");
    // Limits: while Redis was down each instance decided alone from its local fallback, a
    // fresh bucket per key the first time: at most 1 + burst + outage / interval per instance.
    let outage_ms = (redis_span.1 + 6.0 - redis_span.0) * 1000.0;
    let common: &Common = &env.common;
    let limits = limit_summary(&all, common, 3.0, |key| {
        let q = common.quota_of(key);
        let t = q.window_ms() as f64 / f64::from(q.limit().max(1));
        2 * (1 + u64::from(q.burst_size()) + (outage_ms / t).ceil() as u64)
    });
    let opened = changes
        .iter()
        .find(|(t, s)| *s == BreakerState::Open && *t >= sink_span.0 - 1.0)
        .map(|c| c.0);
    let closed = opened.and_then(|o| {
        changes
            .iter()
            .find(|(t, s)| *t > o && *s == BreakerState::Closed)
            .map(|c| c.0)
    });

    // Verdicts.
    let mut v = Vec::new();
    v.push(Verdict {
        name: "every-order-emailed",
        pass: email.orders > 0 && email.missing == 0 && email.marked_sent == email.orders && email.orders >= orders_201,
        detail: format!(
            "{} orders stored ({} answered 201), {} with their e-mail delivered, {} marked sent, {} missing{}",
            email.orders,
            orders_201,
            email.exactly_one + email.delivered_twice,
            email.marked_sent,
            email.missing,
            if email.missing_examples.is_empty() { String::new() } else { format!(" (e.g. {})", email.missing_examples.join(", ")) }
        ),
    });
    v.push(Verdict {
        name: "no-email-twice",
        pass: email.delivered_twice == 0 && email.unknown == 0,
        detail: format!(
            "{} orders delivered twice, {} deliveries of unknown orders; SMTP-level resends the sink caught by Message-ID: {}",
            email.delivered_twice, email.unknown, email.smtp_resends_caught
        ),
    });
    let budget = (in_window.len() as f64 * a.listing_error_budget).floor() as u64;
    v.push(Verdict {
        name: "listings-during-redis-restart",
        pass: !in_window.is_empty() && bad_in_window + listing_errors_total <= budget,
        detail: format!(
            "{} listing requests sent from the shutdown to 6 s after Redis answered ({:.1} s): {} answered with an error, plus {} without an answer over the whole run (budget {budget})",
            in_window.len(),
            outage_ms / 1000.0,
            bad_in_window,
            listing_errors_total
        ),
    });
    // Each update is judged by what its answer promised: the bound with the broadcast, or,
    // while the updating instance had recently seen Redis fail, the bound without it.
    let promised_broadcast = |p: &Probe| p.promised_ms.is_some_and(|ms| ms <= bound_up);
    let up: Vec<f64> = probes
        .iter()
        .filter(|p| promised_broadcast(p) && p.visible_after_ms.is_some())
        .map(|p| p.last_stale_read_ms)
        .collect();
    let down: Vec<f64> = probes
        .iter()
        .filter(|p| !promised_broadcast(p) && p.visible_after_ms.is_some())
        .map(|p| p.last_stale_read_ms)
        .collect();
    let during_restart = probes.iter().filter(|p| p.redis_down).count();
    let unpromised = probes
        .iter()
        .filter(|p| (200..300).contains(&p.put_status) && p.promised_ms.is_none())
        .count();
    let median_visible = {
        let mut v: Vec<f64> = probes.iter().filter_map(|p| p.visible_after_ms).collect();
        v.sort_by(f64::total_cmp);
        stats::quantile(&v, 0.5)
    };
    for p in probes
        .iter()
        .filter(|p| p.last_stale_read_ms > p.promised_ms.unwrap_or(bound_up))
    {
        say(format!(
            "probe at t={:.1} s: a read {:.0} ms after the update still served the old price, \
             over the {:.0} ms its answer promised{}",
            p.t,
            p.last_stale_read_ms,
            p.promised_ms.unwrap_or(bound_up),
            if p.redis_down {
                " (Redis restarting)"
            } else {
                ""
            }
        ));
    }
    let unseen = probes
        .iter()
        .filter(|p| {
            (200..300).contains(&p.put_status) && p.visible_after_ms.is_none() && !p.cut_short
        })
        .count();
    let put_failed = probes
        .iter()
        .filter(|p| !(200..300).contains(&p.put_status))
        .count();
    let max_up = up.iter().copied().fold(0.0, f64::max);
    let max_down = down.iter().copied().fold(0.0, f64::max);
    v.push(Verdict {
        name: "update-visible-across-instances",
        pass: !up.is_empty()
            && during_restart > 0
            && unseen == 0
            && unpromised == 0
            && max_up <= bound_up
            && max_down <= bound_down,
        detail: format!(
            "{} probes (PUT on A, then GET on B every 10 ms; {} while Redis restarted), each judged by the bound its answer promised: latest stale read after the update answered: promised the broadcast {:.0} ms (bound {:.0} ms, {} probes), promised without it {:.0} ms (bound {:.0} ms, {} probes); median time to the first fresh read {} ms; {} never seen, {} answers without a bound, {} updates refused",
            probes.len(),
            during_restart,
            max_up,
            bound_up,
            up.len(),
            max_down,
            bound_down,
            down.len(),
            super::run::fmt_ms(median_visible),
            unseen,
            unpromised,
            put_failed
        ),
    });
    v.push(Verdict {
        name: "breaker-opened-and-closed",
        pass: opened.is_some_and(|o| o <= sink_span.1 + 5.0) && closed.is_some(),
        detail: format!(
            "SMTP refused {:.0}–{:.0} s; breaker smtp opened at {}, closed at {}",
            sink_span.0,
            sink_span.1,
            opened.map_or("never".into(), |o| format!("{o:.1} s")),
            closed.map_or("never".into(), |c| format!("{c:.1} s"))
        ),
    });
    let over_ok = limits.overlimit.iter().all(|k| k.ok) && !limits.overlimit.is_empty();
    v.push(Verdict {
        name: "rate-limits-held",
        pass: over_ok && limits.keys_off == 0,
        detail: format!(
            "over-limit clients allowed/expected (hard max): {}; fallback allowance per key {} (2 instances × a fresh local bucket + {:.1} s of refills); keys outside tolerance {} of {}",
            limits
                .overlimit
                .iter()
                .map(|k| format!("{} {}/{} ({})", k.key, k.allowed, k.expected_allowed, k.hard_max))
                .collect::<Vec<_>>()
                .join(", "),
            limits.overlimit.first().map_or(0, |k| k.fallback_allowance),
            outage_ms / 1000.0,
            limits.keys_off,
            limits.keys_checked
        ),
    });
    // A kill is made only once the worker reports running jobs (else it is postponed), so
    // every kill should hit some; the count of postponed kills says how often a worker idled.
    let hit = kills.iter().filter(|k| k.busy.unwrap_or(0.0) > 0.0).count();
    v.push(Verdict {
        name: "kills-hit-running-jobs",
        pass: !kills.is_empty() && hit == kills.len(),
        detail: format!(
            "{} kills, {} with jobs running ({} while the breaker was open); {} postponed because the worker was idle for 6 s",
            kills.len(),
            hit,
            kills.iter().filter(|k| k.breaker_open).count(),
            postponed
        ),
    });

    // Chart.
    let mut markers = vec![
        Marker {
            from: sink_span.0,
            to: sink_span.1,
            label: "SMTP refusing".into(),
        },
        Marker {
            from: redis_span.0,
            to: redis_span.1,
            label: "Redis down".into(),
        },
    ];
    for k in &kills {
        markers.push(Marker {
            from: k.t,
            to: k.t,
            label: format!("kill {}", k.worker),
        });
    }
    if let (Some(o), Some(c)) = (opened, closed) {
        markers.push(Marker {
            from: o,
            to: c,
            label: "breaker open".into(),
        });
    }
    let series = vec![
        (
            "listing".to_string(),
            stats::per_second(&route("browse"), t0),
        ),
        ("orders".to_string(), stats::per_second(&route("order"), t0)),
    ];
    let (svg, png) = chart::render(
        &env.docs,
        "shop-faults",
        &format!("Fault run: Redis, 2 instances, 2 workers, {rate:.0} req/s, {dsec:.0} s"),
        &series,
        &markers,
    )?;

    let report = Report {
        duration_s: dsec,
        rate,
        timeline: tl.all(),
        kills,
        probes,
        emails: email,
        orders_201,
        listing,
        order,
        listing_during_restart: (in_window.len() as u64, bad_in_window),
        limits,
        breaker_opened_at: opened,
        breaker_closed_at: closed,
        verdicts: v.clone(),
        chart_svg: Some(svg.display().to_string()),
        chart_png: png.as_ref().map(|p| p.display().to_string()),
    };
    let pass = v.iter().all(|x| x.pass);
    if env.common.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!();
        println!("== Timeline (seconds from the start of the load; UTC)");
        for e in &report.timeline {
            let secs = (e.at_ms / 1000.0) as i64;
            let hms = chrono::DateTime::from_timestamp(secs, 0)
                .map_or(String::new(), |d| d.format("%H:%M:%S").to_string());
            println!("{:>7.1} s  {hms}  {}", e.t, e.what);
        }
        println!();
        println!(
            "listing: p50 {} p99 {} p99.9 {} ms over the whole run ({:.0} req/s); orders: p50 {} p99 {} p99.9 {} ms",
            super::run::fmt_ms(report.listing.p50_ms),
            super::run::fmt_ms(report.listing.p99_ms),
            super::run::fmt_ms(report.listing.p999_ms),
            report.listing.rps,
            super::run::fmt_ms(report.order.p50_ms),
            super::run::fmt_ms(report.order.p99_ms),
            super::run::fmt_ms(report.order.p999_ms)
        );
        if let Some(p) = &report.chart_png {
            println!("chart: {p}");
        } else if let Some(p) = &report.chart_svg {
            println!("chart: {p}");
        }
        println!();
    }
    for x in &v {
        // One line per property, on stderr too when stdout carries JSON.
        let line = format!(
            "verdict: {} {} — {}",
            if x.pass { "PASS" } else { "FAIL" },
            x.name,
            x.detail
        );
        if env.common.json {
            eprintln!("{line}");
        } else {
            println!("{line}");
        }
    }
    Ok(pass)
}
