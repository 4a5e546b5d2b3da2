//! Health: liveness from a runtime watchdog (never the store), readiness from the store and
//! the processes served, and a deep check that takes a canary job through the store.

use celeriac::backend::{Broker, ClaimRequest, Completion, Outcome, StoreHealth};
use celeriac::{App, Job, Shutdown, WorkerStats};
use serde::Serialize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// How often the watchdog ticks.
const TICK: Duration = Duration::from_millis(250);

/// A tick later than this means the runtime is stuck: `/livez` fails.
pub const STALLED_AFTER: Duration = Duration::from_secs(10);

/// How long a readiness check waits for the store.
pub const STORE_TIMEOUT: Duration = Duration::from_secs(2);

/// Refreshes in a row that may fail before a worker is not ready: its registry entry expires
/// at the third.
const REFRESHES_MISSED: u64 = 2;

/// The queue canary jobs go through.
pub const CANARY_QUEUE: &str = "celeriac.canary";

/// A task on the runtime that notes when it last ran and how late: if the runtime stops
/// running tasks (a blocking call on every thread, a deadlock), its ticks stop.
#[derive(Debug, Clone)]
pub(crate) struct Watchdog {
    started: Instant,
    /// When the last tick ran, in ms since `started`.
    last_tick_ms: Arc<AtomicU64>,
    /// How late it ran, in µs.
    lag_us: Arc<AtomicU64>,
}

impl Watchdog {
    /// Starts ticking until `stop`.
    pub(crate) fn start(
        stop: CancellationToken,
        prometheus: Option<metrics_exporter_prometheus::PrometheusHandle>,
    ) -> Self {
        let dog = Watchdog {
            started: Instant::now(),
            last_tick_ms: Arc::default(),
            lag_us: Arc::default(),
        };
        let ticking = dog.clone();
        tokio::spawn(async move {
            let lag = metrics::gauge!("celeriac_runtime_lag_seconds");
            let mut upkeep = Instant::now();
            loop {
                let asked = Instant::now();
                tokio::select! {
                    _ = tokio::time::sleep(TICK) => {}
                    _ = stop.cancelled() => return,
                }
                let late = asked.elapsed().saturating_sub(TICK);
                ticking.lag_us.store(
                    u64::try_from(late.as_micros()).unwrap_or(u64::MAX),
                    Ordering::Relaxed,
                );
                ticking.last_tick_ms.store(
                    u64::try_from(ticking.started.elapsed().as_millis()).unwrap_or(u64::MAX),
                    Ordering::Relaxed,
                );
                lag.set(late.as_secs_f64());
                // The recorder drains its histograms and drops idle gauges when told to.
                if upkeep.elapsed() >= Duration::from_secs(5) {
                    upkeep = Instant::now();
                    if let Some(p) = &prometheus {
                        p.run_upkeep();
                    }
                }
            }
        });
        dog
    }

    /// How long since the last tick.
    fn since_tick(&self) -> Duration {
        let last = Duration::from_millis(self.last_tick_ms.load(Ordering::Relaxed));
        self.started.elapsed().saturating_sub(last)
    }

    /// How late the last tick ran.
    fn lag(&self) -> Duration {
        Duration::from_micros(self.lag_us.load(Ordering::Relaxed))
    }
}

/// What `/livez` says.
#[derive(Debug, Serialize)]
pub struct Liveness {
    /// Whether the process runs tasks.
    pub live: bool,
    /// Since the watchdog's last tick, ms.
    pub since_tick_ms: u64,
    /// How late that tick ran, ms.
    pub lag_ms: f64,
}

pub(crate) fn liveness(dog: &Watchdog) -> Liveness {
    let since = dog.since_tick();
    Liveness {
        live: since < STALLED_AFTER,
        since_tick_ms: u64::try_from(since.as_millis()).unwrap_or(u64::MAX),
        lag_ms: dog.lag().as_secs_f64() * 1000.0,
    }
}

/// One check of a readiness answer.
#[derive(Debug, Serialize)]
pub struct Check {
    /// What was checked.
    pub name: &'static str,
    /// Whether it passed.
    pub ok: bool,
    /// What was found.
    pub detail: String,
}

impl Check {
    fn new(name: &'static str, ok: bool, detail: impl Into<String>) -> Self {
        Check {
            name,
            ok,
            detail: detail.into(),
        }
    }
}

/// What `/readyz` and `/healthz` say.
#[derive(Debug, Serialize)]
pub struct Readiness {
    /// Whether every check passed.
    pub ready: bool,
    /// The checks, in order.
    pub checks: Vec<Check>,
}

/// A worker readiness watches: how to tell it drains, and its heartbeat failures.
pub(crate) type WatchedWorker = (Shutdown, Arc<WorkerStats>);

/// What readiness watches besides the store: the worker and beat this process runs.
#[derive(Clone, Default)]
pub(crate) struct Served {
    pub(crate) workers: Arc<Mutex<Vec<WatchedWorker>>>,
    pub(crate) beats: Arc<Mutex<Vec<CancellationToken>>>,
}

/// The store answers a ping within [`STORE_TIMEOUT`]; each worker's registry refreshes land
/// and none is draining; no beat is stopping.
pub(crate) async fn readiness(app: &App, served: &Served) -> Readiness {
    let mut checks = Vec::new();
    match tokio::time::timeout(STORE_TIMEOUT, app.backend().ping()).await {
        Ok(Ok(rtt)) => checks.push(Check::new(
            "store",
            true,
            format!("answered in {:.2} ms", rtt.as_secs_f64() * 1000.0),
        )),
        Ok(Err(e)) => checks.push(Check::new("store", false, e.to_string())),
        Err(_) => checks.push(Check::new(
            "store",
            false,
            format!("no answer within {STORE_TIMEOUT:?}"),
        )),
    }
    let workers = served.workers.lock().map(|w| w.clone()).unwrap_or_default();
    for (shutdown, stats) in &workers {
        let failing = stats.refresh_failing.load(Ordering::Relaxed);
        checks.push(Check::new(
            "heartbeat",
            failing <= REFRESHES_MISSED,
            match failing {
                0 => "the registry entry is fresh".to_string(),
                n => format!("the last {n} registry refreshes failed"),
            },
        ));
        checks.push(Check::new(
            "draining",
            !shutdown.is_requested(),
            if shutdown.is_requested() {
                "the worker is shutting down"
            } else if shutdown.is_quiet() {
                "quiet: claims nothing new"
            } else {
                "running"
            },
        ));
    }
    let beats = served.beats.lock().map(|b| b.clone()).unwrap_or_default();
    for stop in &beats {
        checks.push(Check::new(
            "beat",
            !stop.is_cancelled(),
            if stop.is_cancelled() {
                "the beat is stopping"
            } else {
                "running"
            },
        ));
    }
    Readiness {
        ready: checks.iter().all(|c| c.ok),
        checks,
    }
}

/// A canary job through the store: enqueued, claimed and completed on [`CANARY_QUEUE`] by
/// this process, in the store's own operations; the check fails if any step fails or the
/// whole takes longer than `limit`.
pub(crate) async fn canary(app: &App, limit: Duration) -> Check {
    let started = Instant::now();
    match tokio::time::timeout(limit, canary_round_trip(app)).await {
        Ok(Ok(())) => Check::new(
            "canary",
            true,
            format!(
                "enqueued, claimed and completed in {:.2} ms",
                started.elapsed().as_secs_f64() * 1000.0
            ),
        ),
        Ok(Err(e)) => Check::new("canary", false, e),
        Err(_) => Check::new("canary", false, format!("no round trip within {limit:?}")),
    }
}

async fn canary_round_trip(app: &App) -> Result<(), String> {
    let backend = app.backend();
    let now = app.client().now();
    let mut job = Job::new("celeriac.canary", b"null".to_vec(), now);
    job.queue = CANARY_QUEUE.to_string();
    let id = job.id;
    backend
        .enqueue(vec![job], now)
        .await
        .map_err(|e| format!("enqueue: {e}"))?;
    // Other canaries may wait in the queue (another process's, or one left by a timeout):
    // take a few and complete each.
    let mut found = false;
    for _ in 0..10 {
        let claimed = backend
            .claim(ClaimRequest {
                queues: vec![CANARY_QUEUE.to_string()],
                limit: 16,
                lease: Duration::from_secs(10),
                worker: "celeriac-web canary".to_string(),
                now: app.client().now(),
                limits: Default::default(),
            })
            .await
            .map_err(|e| format!("claim: {e}"))?;
        if claimed.is_empty() {
            break;
        }
        found |= claimed.iter().any(|c| c.job.id == id);
        let done: Vec<Completion> = claimed
            .iter()
            .map(|c| Completion {
                lease: c.lease(),
                outcome: Outcome::Succeeded { result: None },
            })
            .collect();
        backend
            .complete(done, app.client().now())
            .await
            .map_err(|e| format!("complete: {e}"))?;
        if found {
            return Ok(());
        }
    }
    Err("the canary was not claimed (is its queue paused?)".to_string())
}
