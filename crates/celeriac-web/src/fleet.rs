//! The fleet gauges: queue depth, latency, consumers, workers alive, schedules' next fire and
//! the store's own figures, published by one elected process (the holder of the
//! `celeriac-monitor` lease), so a hundred workers do not all read the store for them. A
//! process that stops leading stops setting them, and they leave its output after
//! [`GAUGE_IDLE`](crate::metrics::GAUGE_IDLE).

use celeriac::backend::{ProcessKind, ProcessState, StoreHealth};
use celeriac::{App, Coordinator, JobState, ProcessRegistry};
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::debug;

/// The lease the publishing process holds.
pub const LEASE: &str = "celeriac-monitor";

/// How often the leader publishes; the lease lasts three times this.
pub const EVERY: Duration = Duration::from_secs(15);

const STATES: [JobState; 9] = [
    JobState::Pending,
    JobState::Scheduled,
    JobState::Active,
    JobState::Retrying,
    JobState::Succeeded,
    JobState::Failed,
    JobState::Dead,
    JobState::Cancelled,
    JobState::Expired,
];

/// Competes for the lease every [`EVERY`] and publishes while it holds it, until `stop`.
pub(crate) async fn publish_loop(
    app: App,
    holder: String,
    every: Duration,
    stop: CancellationToken,
) {
    let leading = metrics::gauge!("celeriac_monitor_leader");
    let mut token = None;
    loop {
        let now = app.client().now();
        match app
            .backend()
            .acquire_leader(LEASE, &holder, every * 3, now)
            .await
        {
            Ok(t) => {
                if t.is_some() != token.is_some() {
                    debug!(holder, leading = t.is_some(), "fleet gauges lease");
                }
                token = t;
            }
            Err(e) => {
                debug!(error = %e, "could not renew the fleet gauges lease");
                token = None;
            }
        }
        leading.set(if token.is_some() { 1.0 } else { 0.0 });
        if token.is_some() {
            if let Err(e) = publish(&app).await {
                debug!(error = %e, "could not read the fleet's figures");
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.cancelled() => break,
        }
    }
    if let Some(t) = token {
        let _ = app.backend().release_leader(LEASE, t).await;
    }
}

/// Reads the fleet's figures once and sets the gauges.
pub(crate) async fn publish(app: &App) -> celeriac::Result<()> {
    let backend = app.backend().as_ref();
    let now = app.client().now();
    let figures = celeriac::monitor::queue_figures(backend, now).await?;
    for f in &figures {
        let q = f.stats.queue.clone();
        for state in STATES {
            metrics::gauge!("celeriac_queue_jobs", "queue" => q.clone(), "state" => state.to_string())
                .set(f.stats.count(state) as f64);
        }
        metrics::gauge!("celeriac_queue_latency_seconds", "queue" => q.clone())
            .set(f.latency_ms as f64 / 1000.0);
        metrics::gauge!("celeriac_queue_consumers", "queue" => q.clone())
            .set(f64::from(f.consumers));
        metrics::gauge!("celeriac_queue_paused", "queue" => q).set(if f.stats.paused {
            1.0
        } else {
            0.0
        });
    }
    let alive = backend
        .processes(now)
        .await?
        .iter()
        .filter(|p| p.kind == ProcessKind::Worker && p.state != ProcessState::Draining)
        .count();
    metrics::gauge!("celeriac_workers_alive").set(alive as f64);
    for s in app.schedules() {
        if let Some(next) = s.next_after(now) {
            metrics::gauge!(
                "celeriac_schedule_next_fire_timestamp_seconds",
                "schedule" => s.name().to_string()
            )
            .set(next as f64 / 1000.0);
        }
    }
    let store = backend.store_figures().await?;
    let set = |name: &'static str, v: Option<u64>| {
        if let Some(v) = v {
            metrics::gauge!(name).set(v as f64);
        }
    };
    set("celeriac_store_memory_used_bytes", store.memory_used_bytes);
    set("celeriac_store_memory_max_bytes", store.memory_max_bytes);
    set("celeriac_store_evicted_keys", store.evicted_keys);
    set("celeriac_store_file_bytes", store.file_bytes);
    set("celeriac_store_wal_bytes", store.wal_bytes);
    if let Some(policy) = store.eviction_policy {
        metrics::gauge!("celeriac_store_eviction_policy", "policy" => policy).set(1.0);
    }
    Ok(())
}
