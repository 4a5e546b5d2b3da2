//! The fleet gauges: queue depth, latency, consumers, workers alive, schedules' next fire and
//! the store's own figures and the cache L2's memory, published by one elected process (the holder of the
//! `celeriac-monitor` lease), so a hundred workers do not all read the store for them.
//!
//! Each publish records them into a fresh recorder of their own and keeps its rendering, which
//! `/metrics` appends while this process leads: a process that stops leading stops showing them
//! at once, and a queue that is gone leaves no stale series.

use crate::alerts::Evaluator;
use celeriac::alerts::Snapshot;
use celeriac::backend::{KvMemory, KvStore, ProcessKind, ProcessState};
use celeriac::{App, Coordinator, JobState};
use metrics_exporter_prometheus::PrometheusBuilder;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use tracing::debug;

/// The lease the publishing process holds.
pub const LEASE: &str = "celeriac-monitor";

/// How often the leader publishes; the lease lasts three times this.
pub const EVERY: Duration = Duration::from_secs(15);

/// The last rendering of the fleet gauges, shown while it is fresh.
#[derive(Debug, Default)]
pub(crate) struct FleetPage {
    page: RwLock<Option<(Instant, String)>>,
}

impl FleetPage {
    /// The rendering, if one was made within three publishing periods.
    pub(crate) fn text(&self) -> Option<String> {
        let page = self.page.read().ok()?;
        let (at, text) = page.as_ref()?;
        (at.elapsed() < EVERY * 3).then(|| text.clone())
    }

    fn set(&self, text: Option<String>) {
        if let Ok(mut page) = self.page.write() {
            *page = text.map(|t| (Instant::now(), t));
        }
    }
}

/// Competes for the lease every `every` and, while it holds it, publishes the gauges and
/// evaluates the alerts, until `stop`. A leader that loses the store keeps evaluating (so
/// "the store is down" can fire) until another process is seen to lead.
pub(crate) async fn publish_loop(
    app: App,
    page: Arc<FleetPage>,
    alerts: Arc<RwLock<Option<Arc<Evaluator>>>>,
    holder: String,
    every: Duration,
    stop: CancellationToken,
) {
    let leading = metrics::gauge!("celeriac_monitor_leader");
    let mut token = None;
    let mut lost_store = None;
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
                lost_store = None;
            }
            Err(e) => {
                debug!(error = %e, "could not renew the fleet gauges lease");
                if token.is_some() || lost_store.is_some() {
                    lost_store = Some(e.to_string());
                }
                token = None;
            }
        }
        leading.set(if token.is_some() { 1.0 } else { 0.0 });
        let evaluator = alerts.read().ok().and_then(|a| a.clone());
        if token.is_some() {
            let snap = match publish(&app, &page).await {
                Ok(snap) => snap,
                Err(e) => {
                    debug!(error = %e, "could not read the fleet's figures");
                    Snapshot::store_down(app.client().now(), e.to_string())
                }
            };
            if let Some(ev) = &evaluator {
                ev.run(&app, &snap).await;
            }
        } else {
            page.set(None);
            if let (Some(ev), Some(e)) = (&evaluator, &lost_store) {
                ev.run(&app, &Snapshot::store_down(app.client().now(), e.clone()))
                    .await;
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.cancelled() => break,
        }
    }
    page.set(None);
    if let Some(t) = token {
        let _ = app.backend().release_leader(LEASE, t).await;
    }
}

/// Reads the fleet's figures once and renders the gauges into `page`; the snapshot is what
/// the alerts are evaluated on.
pub(crate) async fn publish(app: &App, page: &FleetPage) -> celeriac::Result<Snapshot> {
    let snap = Snapshot::read(app.backend().as_ref(), app.client().now()).await?;
    // The chart markers of new versions; a store that refuses it costs the gauges nothing.
    if let Err(e) =
        celeriac::deploys::observe(app.backend().as_ref(), &snap.processes, snap.now).await
    {
        debug!(%e, "deploys not noted");
    }
    // The L2's memory; a store that cannot tell it (or fails to) leaves its gauges out.
    let l2 = match app.backend().kv_memory().await {
        Ok(m) => m,
        Err(e) => {
            debug!(%e, "the L2's memory not read");
            None
        }
    };
    page.set(Some(render(app, &snap, l2.as_ref())));
    Ok(snap)
}

/// The fleet gauges, rendered by a recorder of their own.
fn render(app: &App, fleet: &Snapshot, l2: Option<&KvMemory>) -> String {
    let now = fleet.now;
    let alive = fleet
        .processes
        .iter()
        .filter(|p| p.kind == ProcessKind::Worker && p.state != ProcessState::Draining)
        .count();
    let store = &fleet.store;
    let recorder = PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    metrics::with_local_recorder(&recorder, || {
        describe();
        for f in &fleet.queues {
            let q = f.stats.queue.clone();
            for state in JobState::ALL {
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
        if let Some(policy) = &store.eviction_policy {
            metrics::gauge!("celeriac_store_eviction_policy", "policy" => policy.clone()).set(1.0);
        }
        if let Some(m) = l2 {
            metrics::gauge!("celeriac_cache_l2_used_bytes").set(m.used_bytes as f64);
            metrics::gauge!("celeriac_cache_l2_max_bytes").set(m.max_bytes as f64);
            metrics::gauge!("celeriac_cache_l2_evicted_keys").set(m.evicted_keys as f64);
        }
    });
    handle.render()
}

/// The help text of the fleet gauges.
fn describe() {
    use metrics::{describe_gauge, Unit};
    describe_gauge!("celeriac_queue_jobs", "Jobs per queue and state");
    describe_gauge!(
        "celeriac_queue_latency_seconds",
        Unit::Seconds,
        "How long the oldest ready job of each queue has waited"
    );
    describe_gauge!("celeriac_queue_consumers", "Live running workers per queue");
    describe_gauge!("celeriac_queue_paused", "1 for a paused queue");
    describe_gauge!(
        "celeriac_workers_alive",
        "Live worker processes in the registry"
    );
    describe_gauge!(
        "celeriac_schedule_next_fire_timestamp_seconds",
        Unit::Seconds,
        "When each schedule fires next, in seconds since the epoch"
    );
    describe_gauge!(
        "celeriac_store_memory_used_bytes",
        Unit::Bytes,
        "Redis used_memory"
    );
    describe_gauge!(
        "celeriac_store_memory_max_bytes",
        Unit::Bytes,
        "Redis maxmemory, 0 for none"
    );
    describe_gauge!(
        "celeriac_store_evicted_keys",
        "Keys Redis evicted since it started"
    );
    describe_gauge!(
        "celeriac_store_eviction_policy",
        "Redis maxmemory-policy, as a label; always 1"
    );
    describe_gauge!(
        "celeriac_cache_l2_used_bytes",
        Unit::Bytes,
        "The cache L2's memory in use (Redis used_memory; SQLite the cache's keys and values)"
    );
    describe_gauge!(
        "celeriac_cache_l2_max_bytes",
        Unit::Bytes,
        "The cache L2's bound (Redis maxmemory, a SQLite cache's max_bytes), 0 for none"
    );
    describe_gauge!(
        "celeriac_cache_l2_evicted_keys",
        "Keys the cache L2 evicted to make room since it started (a counter read as a gauge)"
    );
    describe_gauge!(
        "celeriac_store_file_bytes",
        Unit::Bytes,
        "The SQLite file's size"
    );
    describe_gauge!(
        "celeriac_store_wal_bytes",
        Unit::Bytes,
        "The SQLite write-ahead log's size"
    );
}
