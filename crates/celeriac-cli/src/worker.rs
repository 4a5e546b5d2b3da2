//! `celeriac worker`, `celeriac beat` and `celeriac schedules`: running the fleet's processes
//! and the periodic schedules.

use crate::args::{BeatArgs, SchedulesCommand, WorkerArgs};
use crate::support::{CliError, CliResult};
use celeriac::{App, WorkerConfig};
use tokio_util::sync::CancellationToken;

pub(crate) async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Why a worker does not run as root, and what to do instead.
#[cfg(unix)]
const AS_ROOT: &str = "refusing to run a worker as root: the tasks it runs would have every \
     privilege on this host. Run it as an unprivileged user (in a container, a `USER` line in \
     the Dockerfile), or pass --allow-root (CELERIAC_ALLOW_ROOT=true) to run it as root anyway";

/// Refuses to go on as root (effective user id 0) unless `allow_root` says so: a worker runs
/// application code on data from the store.
pub(crate) fn refuse_root(allow_root: bool) -> CliResult {
    #[cfg(unix)]
    if nix::unistd::geteuid().is_root() {
        if !allow_root {
            return Err(CliError(AS_ROOT.into()));
        }
        tracing::warn!(
            "running as root (--allow-root): every task has every privilege on this host"
        );
    }
    #[cfg(not(unix))]
    let _ = allow_root;
    Ok(())
}

pub(crate) async fn worker(app: App, args: WorkerArgs) -> CliResult {
    let (queues, weights) = split_weights(&args.queues)?;
    let mut config = WorkerConfig {
        queues,
        weights,
        concurrency: args.concurrency,
        prefetch: args.prefetch.unwrap_or(args.concurrency),
        lease: args.lease,
        heartbeat: args.heartbeat.unwrap_or(args.lease / 3),
        poll_interval: args.poll_interval,
        grace_period: args.grace_period,
        registry_refresh: args.beat_args.registry_refresh,
        history_flush: args.history_flush,
        max_jobs: args.max_jobs,
        ..WorkerConfig::default()
    };
    if let Some(id) = args.worker_id {
        config.worker_id = id;
    }
    config.validate()?;
    let scheduler = if args.beat {
        Some(make_beat(&app, &args.beat_args)?)
    } else {
        None
    };
    let worker = app.worker().config(config);
    let http_stop = CancellationToken::new();
    let http = match args.beat_args.http {
        Some(addr) => {
            let alerting = crate::alerts::settings(
                args.beat_args.alert_rules.as_deref(),
                args.beat_args.alert_webhook.clone(),
            )?;
            let mut http = celeriac_web::Http::new(app.clone())
                .map_err(|e| CliError(format!("--http: {e}")))?
                .alerting(alerting)
                .watch_worker(&worker);
            if let Some(b) = &scheduler {
                http = http.watch_beat(b);
            }
            Some(crate::health::serve(http, addr, http_stop.clone()).await?)
        }
        None => None,
    };
    let board = match args.beat_args.dashboard {
        Some(bind) => {
            let rules = rules_given(&args.beat_args)?;
            Some(crate::dashboard::spawn(&app, bind, rules, http_stop.clone()).await?)
        }
        None => None,
    };
    let shutdown = worker.shutdown_handle();
    let stats = worker.stats();
    let beat_stop = scheduler.as_ref().map(|b| b.shutdown_handle());
    let beat_stop_after = beat_stop.clone();
    let beat_task = scheduler.map(|b| tokio::spawn(b.run()));
    tokio::spawn(async move {
        wait_for_signal().await;
        eprintln!("shutting down: finishing running jobs (signal again to stop now)");
        if let Some(stop) = &beat_stop {
            stop.cancel();
        }
        shutdown.graceful();
        wait_for_signal().await;
        eprintln!("stopping now; unfinished jobs will be redelivered when their leases expire");
        shutdown.immediate();
    });
    worker.run().await?;
    // Stopped by a command through the store (`celeriac workers stop`), the beat stops too.
    if let Some(stop) = &beat_stop_after {
        stop.cancel();
    }
    if let Some(task) = beat_task {
        task.await
            .map_err(|e| CliError(format!("the scheduler failed: {e}")))??;
    }
    http_stop.cancel();
    for server in [http, board].into_iter().flatten() {
        let _ = server.await;
    }
    use std::sync::atomic::Ordering::Relaxed;
    println!(
        "worker stopped: started={} succeeded={} retried={} failed={} dead={} cancelled={} stale={} released={}",
        stats.started.load(Relaxed),
        stats.succeeded.load(Relaxed),
        stats.retried.load(Relaxed),
        stats.failed.load(Relaxed),
        stats.dead.load(Relaxed),
        stats.cancelled.load(Relaxed),
        stats.stale.load(Relaxed),
        stats.released.load(Relaxed),
    );
    Ok(())
}

/// The alert rules of `--alert-rules`, for the dashboard's alerts page.
fn rules_given(args: &BeatArgs) -> Result<Option<Vec<celeriac::alerts::Rule>>, CliError> {
    match &args.alert_rules {
        Some(path) => Ok(Some(crate::alerts::settings(Some(path), None)?.rules)),
        None => Ok(None),
    }
}

/// The scheduler of `celeriac beat` and `celeriac worker --beat`.
fn make_beat(app: &App, args: &BeatArgs) -> Result<celeriac::Beat<celeriac::AnyBackend>, CliError> {
    if app.schedules().is_empty() {
        return Err(CliError(
            "no schedules to run: give a TOML file of [[schedule]] tables with --schedules or \
             CELERIAC_SCHEDULES, or define schedules in code with AppBuilder::schedule"
                .into(),
        ));
    }
    let mut config = celeriac::BeatConfig::default().with_lease(args.beat_lease);
    config.late_after = args.beat_late_after;
    config.registry_refresh = args.registry_refresh;
    if let Some(id) = &args.beat_id {
        config.holder = id.clone();
    }
    config
        .validate()
        .map_err(|e| CliError(format!("--beat-lease/--beat-id: {e}")))?;
    let mut beat = app.beat()?.config(config)?;
    if let Some(warped) = args.warp.clock()? {
        beat = beat.clock(warped.clock);
    }
    Ok(beat)
}

pub(crate) async fn beat(app: App, args: BeatArgs) -> CliResult {
    let beat = make_beat(&app, &args)?;
    let http_stop = CancellationToken::new();
    let http = match args.http {
        Some(addr) => {
            let alerting =
                crate::alerts::settings(args.alert_rules.as_deref(), args.alert_webhook.clone())?;
            let http = celeriac_web::Http::new(app.clone())
                .map_err(|e| CliError(format!("--http: {e}")))?
                .alerting(alerting)
                .watch_beat(&beat);
            Some(crate::health::serve(http, addr, http_stop.clone()).await?)
        }
        None => None,
    };
    let board = match args.dashboard {
        Some(bind) => {
            let rules = rules_given(&args)?;
            Some(crate::dashboard::spawn(&app, bind, rules, http_stop.clone()).await?)
        }
        None => None,
    };
    let stop = beat.shutdown_handle();
    let stats = beat.stats();
    tokio::spawn(async move {
        wait_for_signal().await;
        eprintln!("shutting down the scheduler");
        stop.cancel();
    });
    beat.run().await?;
    http_stop.cancel();
    for server in [http, board].into_iter().flatten() {
        let _ = server.await;
    }
    use std::sync::atomic::Ordering::Relaxed;
    println!(
        "beat stopped: fired={} skipped={} acquired={} lost={}",
        stats.fired.load(Relaxed),
        stats.skipped.load(Relaxed),
        stats.acquired.load(Relaxed),
        stats.lost.load(Relaxed),
    );
    Ok(())
}

pub(crate) async fn schedules(
    app: App,
    command: Option<SchedulesCommand>,
    next: usize,
    json: bool,
) -> CliResult {
    use celeriac::Coordinator;
    let known = |name: &str| -> CliResult {
        if app.schedules().iter().any(|s| s.name() == name) {
            return Ok(());
        }
        let names: Vec<&str> = app.schedules().iter().map(|s| s.name()).collect();
        Err(CliError(format!(
            "no schedule `{name}`; defined schedules: {} (give the file with --schedules or \
             CELERIAC_SCHEDULES)",
            if names.is_empty() {
                "none".to_string()
            } else {
                names.join(", ")
            }
        )))
    };
    match command {
        Some(SchedulesCommand::Pause { name }) => {
            known(&name)?;
            app.backend().set_schedule_paused(&name, true).await?;
            crate::events::audit(
                &app,
                "schedule_pause",
                None,
                format!("paused schedule {name}"),
            )
            .await;
            println!("paused schedule {name}");
            return Ok(());
        }
        Some(SchedulesCommand::Resume { name }) => {
            known(&name)?;
            app.backend().set_schedule_paused(&name, false).await?;
            crate::events::audit(
                &app,
                "schedule_resume",
                None,
                format!("resumed schedule {name}"),
            )
            .await;
            let still = app
                .schedules()
                .iter()
                .any(|s| s.name() == name && s.paused());
            if still {
                println!("resumed schedule {name}, but its definition says paused = true");
            } else {
                println!("resumed schedule {name}");
            }
            return Ok(());
        }
        Some(SchedulesCommand::List) | None => {}
    }
    let states: std::collections::HashMap<String, celeriac::backend::ScheduleState> = app
        .backend()
        .schedule_states()
        .await?
        .into_iter()
        .map(|s| (s.name.clone(), s))
        .collect();
    let now = app.client().now();
    let fmt = |s: &celeriac::Schedule, t: i64| -> String {
        use chrono::TimeZone;
        s.timezone()
            .timestamp_millis_opt(t)
            .single()
            .map(|d| d.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true))
            .unwrap_or_else(|| t.to_string())
    };
    let mut rows = Vec::new();
    for s in app.schedules() {
        let state = states.get(s.name());
        let paused = s.paused() || state.is_some_and(|st| st.paused);
        let upcoming: Vec<String> = s.upcoming(now, next).iter().map(|&t| fmt(s, t)).collect();
        // The stored cursor is the last tick handled (fired, or passed over by the missed-tick
        // policy), or the moment a beat first saw the schedule when no tick came since.
        let last = state.and_then(|st| st.last_tick).map(|t| {
            if s.last_at_or_before(t) == Some(t) {
                fmt(s, t)
            } else {
                format!("none yet (watched since {})", fmt(s, t))
            }
        });
        rows.push(serde_json::json!({
            "name": s.name(),
            "spec": s.spec().to_string(),
            "timezone": s.timezone().name(),
            "task": s.task(),
            "missed": s.missed().to_string(),
            "paused": paused,
            "next": upcoming,
            "last_tick": last,
        }));
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    if rows.is_empty() {
        println!("no schedules (give a TOML file with --schedules or CELERIAC_SCHEDULES)");
        return Ok(());
    }
    for r in &rows {
        let text = |k: &str| r[k].as_str().unwrap_or("").to_string();
        println!(
            "{}  {}  tz={}  task={}  missed={}{}",
            text("name"),
            text("spec"),
            text("timezone"),
            text("task"),
            text("missed"),
            if r["paused"].as_bool().unwrap_or(false) {
                "  PAUSED"
            } else {
                ""
            }
        );
        println!(
            "    last tick: {}",
            r["last_tick"]
                .as_str()
                .unwrap_or("none (no beat has run it)")
        );
        if let Some(next) = r["next"].as_array() {
            let list: Vec<&str> = next.iter().filter_map(|v| v.as_str()).collect();
            println!("    next: {}", list.join(", "));
        }
    }
    Ok(())
}

/// Splits `name:weight` queue arguments into names and weights (all or none weighted).
fn split_weights(args: &[String]) -> Result<(Vec<String>, Vec<u32>), CliError> {
    let mut names = Vec::new();
    let mut weights = Vec::new();
    for a in args {
        match a.rsplit_once(':') {
            Some((name, w)) => {
                let w: u32 = w.parse().map_err(|_| {
                    CliError(format!(
                        "--queues: `{a}`: the weight after `:` must be a whole number"
                    ))
                })?;
                names.push(name.to_string());
                weights.push(w);
            }
            None => names.push(a.clone()),
        }
    }
    if !weights.is_empty() && weights.len() != names.len() {
        return Err(CliError(
            "--queues: give every queue a weight (high:3,low:1) or none (strict order)".into(),
        ));
    }
    Ok((names, weights))
}
