//! The worker runtime: claims jobs under leases, runs their tasks with limits, heartbeats
//! every lease in one call, fences itself when it cannot, acknowledges in batches, and shuts
//! down gracefully.
//!
//! The files: `config` (the settings), `loops` (the claim loop, the loops beside it and the
//! drain), `run_one` (one job's run: admit, execute, record the outcome, end its workflow
//! step), `lease` (heartbeats and self-fencing), `ack` (acknowledgements in batches).
//! The worker keeps its entry in the process registry fresh and obeys the commands sent
//! there (see [`crate::process`]).

mod ack;
mod config;
mod lease;
mod loops;
mod run_one;

pub use config::WorkerConfig;

use crate::backend::{Broker, EventLog, History, ProcessRegistry, ResultStore, WorkflowStore};
use crate::bounds::Bounds;
use crate::clock::Clock;
use crate::error::Result;
use crate::job::JobId;
use crate::task::Registry;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::oneshot;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::info;

/// What a worker needs of its store, in one name: every capability it uses. Any store with
/// all of them is one.
pub trait WorkerStore:
    Broker + ResultStore + WorkflowStore + ProcessRegistry + EventLog + History
{
}

impl<T: Broker + ResultStore + WorkflowStore + ProcessRegistry + EventLog + History> WorkerStore
    for T
{
}

/// Counters of what a worker did, readable while it runs.
#[derive(Debug, Default)]
pub struct WorkerStats {
    /// Attempts started.
    pub started: AtomicU64,
    /// Jobs that succeeded.
    pub succeeded: AtomicU64,
    /// Attempts that failed and were scheduled again.
    pub retried: AtomicU64,
    /// Jobs that failed permanently.
    pub failed: AtomicU64,
    /// Jobs moved to the dead letters.
    pub dead: AtomicU64,
    /// Jobs that ended as cancelled.
    pub cancelled: AtomicU64,
    /// Completions refused because the lease had moved on (stale fencing token).
    pub stale: AtomicU64,
    /// Leases handed back on shutdown.
    pub released: AtomicU64,
    /// Jobs put back unrun, their attempt not counted, because their breaker was open.
    pub deferred: AtomicU64,
    /// Jobs given up because no heartbeat extended their lease in time: their tokens fired
    /// before the leases could run out at the store (see [`Worker`]).
    pub fenced: AtomicU64,
    /// Registry refreshes that failed since the last one that landed: the worker's heartbeat
    /// to the store (readiness checks read it).
    pub refresh_failing: Arc<AtomicU64>,
    latencies_ms: Mutex<Vec<i64>>,
}

impl WorkerStats {
    /// Jobs finished in any way (succeeded, failed, dead, cancelled).
    pub fn finished(&self) -> u64 {
        self.succeeded.load(Ordering::Relaxed)
            + self.failed.load(Ordering::Relaxed)
            + self.dead.load(Ordering::Relaxed)
            + self.cancelled.load(Ordering::Relaxed)
    }

    /// Enqueue-to-start latencies (milliseconds) of first attempts, in the order they started.
    pub fn start_latencies_ms(&self) -> Vec<i64> {
        self.latencies_ms
            .lock()
            .map(|v| v.clone())
            .unwrap_or_default()
    }

    fn record_latency(&self, ms: i64) {
        if let Ok(mut v) = self.latencies_ms.lock() {
            // Bounded: keep the first million samples, enough for any benchmark run.
            if v.len() < 1_000_000 {
                v.push(ms);
            }
        }
    }
}

/// Stops a running worker.
#[derive(Debug, Clone)]
pub struct Shutdown {
    quiet: CancellationToken,
    /// Set by the claim loop once it stopped claiming for good (quiet or shutting down).
    parked: Arc<std::sync::atomic::AtomicBool>,
    graceful: CancellationToken,
    now: CancellationToken,
}

impl Shutdown {
    /// Stop claiming new jobs and let the running ones finish; the worker stays up (and in
    /// the process registry, as quiet) until it is shut down.
    pub fn quiet(&self) {
        self.quiet.cancel();
    }

    /// True once the worker was told to be quiet and its claim loop stopped claiming.
    pub fn is_quiet(&self) -> bool {
        self.quiet.is_cancelled() && self.parked.load(Ordering::Acquire)
    }

    /// Stop claiming, let running jobs finish within the grace period, hand the rest back.
    pub fn graceful(&self) {
        self.graceful.cancel();
    }

    /// Stop at once: running jobs are dropped and their leases left to expire.
    pub fn immediate(&self) {
        self.graceful.cancel();
        self.now.cancel();
    }

    /// True once any shutdown was asked for.
    pub fn is_requested(&self) -> bool {
        self.graceful.is_cancelled()
    }
}

/// A job this worker holds the lease of, from its claim until its completion is recorded or
/// the worker gives it up.
struct Running {
    token: u64,
    queue: Arc<str>,
    cancel: CancellationToken,
    /// Fired when the job was cancelled by a user (as opposed to a time limit or shutdown).
    stop: CancellationToken,
    /// When the lease was last granted or extended, on the monotonic clock: the moment the
    /// claim or heartbeat that did it was sent, since the store started it no earlier.
    granted: Instant,
    /// Told the moment the lease ends when the worker gives the job up.
    fence: Option<oneshot::Sender<Instant>>,
}

type Inflight = Arc<Mutex<HashMap<JobId, Running>>>;

/// A worker over backend `B`.
///
/// # Self-fencing
///
/// A job's lease is good for [`WorkerConfig::lease`] from the moment the claim or heartbeat
/// that granted it was sent. The worker keeps that moment for every job it holds, on the
/// monotonic clock (wall-clock steps do not move it), and gives a job up once no heartbeat
/// has extended its lease for `lease − margin`, where the margin is a quarter of the lease
/// (less if the heartbeat interval leaves too little room), whatever the store does: a
/// paused or partitioned store, or a stall of the worker itself.
///
/// Giving a job up fires its task's cancellation token (the one a lost lease or a soft time
/// limit fires), stops heartbeating it, and logs at warn level which jobs were given up and
/// why (they are counted in [`WorkerStats::fenced`]). The task has until its lease ends to
/// stop; then its future is dropped. A given-up attempt ends as a retry (kind `lease_fenced`),
/// which the store refuses as stale if the job was taken back in the meantime; the task's own
/// return value is not recorded. While leases cannot be extended the worker claims nothing
/// new, retries the heartbeat every quarter interval, and resumes once the store answers.
///
/// The exception is code that never yields to the runtime: a `spawn_blocking` section, or a
/// future that computes without an `.await`. Its token fires, but nothing can interrupt it:
/// it keeps running after its lease ends, possibly while another worker runs the same job.
/// Such code should check [`TaskContext::is_cancelled`](crate::task::TaskContext::is_cancelled)
/// itself.
pub struct Worker<B> {
    backend: Arc<B>,
    registry: Arc<Registry>,
    clock: Arc<dyn Clock>,
    config: WorkerConfig,
    bounds: Bounds,
    shutdown: Shutdown,
    stats: Arc<WorkerStats>,
    history: crate::history::Recorder,
}

impl<B: WorkerStore> Worker<B> {
    /// A worker with default settings and the store's fleet clock.
    pub fn new(backend: Arc<B>, registry: Arc<Registry>) -> Self {
        Self {
            clock: backend.fleet_clock(),
            backend,
            registry,
            config: WorkerConfig::default(),
            bounds: Bounds::default(),
            shutdown: Shutdown {
                quiet: CancellationToken::new(),
                parked: Arc::default(),
                graceful: CancellationToken::new(),
                now: CancellationToken::new(),
            },
            stats: Arc::new(WorkerStats::default()),
            history: crate::history::Recorder::new(),
        }
    }

    /// Uses these settings.
    pub fn config(mut self, config: WorkerConfig) -> Self {
        self.config = config;
        self
    }

    /// Uses an injected clock (tests).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Checks its queue names, the workflow steps it enqueues and the results it stores
    /// against `bounds` (default [`Bounds::default`]; an application passes its own).
    pub fn bounds(mut self, bounds: Bounds) -> Self {
        self.bounds = bounds;
        self
    }

    /// A handle that stops the worker.
    pub fn shutdown_handle(&self) -> Shutdown {
        self.shutdown.clone()
    }

    /// The worker's counters.
    pub fn stats(&self) -> Arc<WorkerStats> {
        self.stats.clone()
    }

    /// Runs until shut down.
    ///
    /// # Errors
    /// Only for invalid configuration (a queue name the bounds refuse, named, among them);
    /// backend errors while running are logged and retried.
    pub async fn run(self) -> Result<()> {
        self.backend.queues_allowed()?;
        let config = self.config.resolved(&self.registry)?;
        self.bounds.validate()?;
        for queue in &config.queues {
            self.bounds.check_queue(queue)?;
        }
        self.registry.check_breakers()?;
        let config = Arc::new(config);
        info!(
            worker = %config.worker_id,
            queues = ?config.queues,
            concurrency = config.concurrency,
            "worker started"
        );
        self.run_loops(config.clone()).await;
        info!(worker = %config.worker_id, "worker stopped");
        Ok(())
    }
}
