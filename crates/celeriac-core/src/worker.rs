//! The worker runtime: claims jobs under leases, runs their tasks with limits, heartbeats
//! every lease in one call, fences itself when it cannot, acknowledges in batches, and shuts
//! down gracefully.

mod ack;
mod lease;

use crate::backend::{
    Broker, ClaimRequest, Claimed, Completion, LeaseRef, Outcome, ResultStore, WorkflowStore,
};
use crate::breaker::{Admission, Rejected, Verdict};
use crate::clock::{duration_ms, Clock, UnixMs};
use crate::error::{Error, Result};
use crate::job::{ErrorInfo, JobId};
use crate::task::{panic_message, ProgressSink, Registry, RunError, TaskContext};
use crate::workflow::{end_step, StepEnd, StepJob, FLOW_HEADER};
use ack::{ack_loop, Done};
use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use lease::{fence_loop, for_each_running, heartbeat_loop, held_leases, LeaseTiming};
use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch, Notify, OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn, Instrument};

/// How often an idle worker with limited tasks looks again at most.
const LIMITED_POLL: Duration = Duration::from_secs(1);

/// How often an idle worker looks for work on a store that wakes it by itself.
const BLOCKING_POLL: Duration = Duration::from_secs(5);

/// How a worker runs.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Queues to take jobs from, most important first. Empty means the queues of the
    /// registered tasks.
    pub queues: Vec<String>,
    /// How to choose between the queues: empty for strict order (a queue is only served when
    /// the ones before it are empty), or one weight per queue: each claim then visits the
    /// queues in an order drawn at random by weight, so `[3, 1]` serves about three jobs of
    /// the first queue for one of the second while both have work, and neither starves.
    pub weights: Vec<u32>,
    /// Jobs running at once.
    pub concurrency: usize,
    /// Most jobs claimed in one call. Never more than the free slots, so no job waits in
    /// this process while another worker is idle.
    pub prefetch: usize,
    /// Each claim's lease; a job whose worker stops heartbeating is redelivered after this.
    /// A worker that could not extend a job's lease for three quarters of it gives the job up
    /// first (see [`Worker`]).
    pub lease: Duration,
    /// How often every held lease is extended (one call for all of them); a heartbeat that
    /// fails or does not answer within this long is tried again after a quarter of it.
    pub heartbeat: Duration,
    /// How long an idle worker waits before looking again when nothing wakes it. Work
    /// enqueued in the same process wakes it at once; on the embedded backend this bounds the
    /// wake-up latency for work enqueued by other processes. On Redis, idle workers block on
    /// the store and wake within a round trip, and look on their own only every
    /// `max(poll_interval, 5 s)`.
    pub poll_interval: Duration,
    /// On shutdown, running jobs get this long to finish before their leases are handed back.
    pub grace_period: Duration,
    /// How often expired leases are reaped and old results swept.
    pub reap_interval: Duration,
    /// This worker's name, shown by `inspect`.
    pub worker_id: String,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        Self {
            queues: Vec::new(),
            weights: Vec::new(),
            concurrency: 16,
            prefetch: 16,
            lease: Duration::from_secs(30),
            heartbeat: Duration::from_secs(10),
            poll_interval: Duration::from_millis(100),
            grace_period: Duration::from_secs(30),
            reap_interval: Duration::from_secs(1),
            worker_id: default_worker_id(),
        }
    }
}

impl WorkerConfig {
    /// Checks the settings, naming the first bad one.
    pub fn validate(&self) -> Result<()> {
        if self.concurrency == 0 {
            return Err(Error::config("concurrency", "must be at least 1"));
        }
        if self.prefetch == 0 {
            return Err(Error::config("prefetch", "must be at least 1"));
        }
        if self.lease < Duration::from_secs(1) {
            return Err(Error::config("lease", "must be at least one second"));
        }
        if self.heartbeat.is_zero() || self.heartbeat >= self.lease {
            return Err(Error::config(
                "heartbeat",
                "must be above zero and shorter than the lease",
            ));
        }
        if self.poll_interval.is_zero() {
            return Err(Error::config("poll_interval", "must be above zero"));
        }
        if !self.weights.is_empty() && self.weights.len() != self.queues.len() {
            return Err(Error::config(
                "weights",
                format!(
                    "{} weights for {} queues: give one weight per queue, or none for strict order",
                    self.weights.len(),
                    self.queues.len()
                ),
            ));
        }
        if self.weights.contains(&0) {
            return Err(Error::config(
                "weights",
                "a weight of 0 would never serve its queue",
            ));
        }
        if self.reap_interval.is_zero() {
            return Err(Error::config("reap_interval", "must be above zero"));
        }
        Ok(())
    }
}

/// The order in which one claim visits the queues: as configured, or drawn by weight.
fn claim_order(queues: &[String], weights: &[u32]) -> Vec<String> {
    if weights.is_empty() || queues.len() < 2 {
        return queues.to_vec();
    }
    let mut rng = rand::rng();
    let mut left: Vec<(usize, u32)> = weights.iter().copied().enumerate().collect();
    let mut order = Vec::with_capacity(queues.len());
    while !left.is_empty() {
        let total: u64 = left.iter().map(|(_, w)| u64::from(*w)).sum();
        let mut pick = rand::Rng::random_range(&mut rng, 0..total.max(1));
        let at = left
            .iter()
            .position(|(_, w)| {
                let w = u64::from(*w);
                if pick < w {
                    true
                } else {
                    pick -= w;
                    false
                }
            })
            .unwrap_or(0);
        let (i, _) = left.remove(at);
        order.push(queues[i].clone());
    }
    order
}

fn default_worker_id() -> String {
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "localhost".to_string());
    format!("{host}:{}", std::process::id())
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
    graceful: CancellationToken,
    now: CancellationToken,
}

impl Shutdown {
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

/// How often a worker asks the store whether any of its running jobs were cancelled.
const CANCEL_POLL: Duration = Duration::from_secs(1);
/// How long a cancelled task may take to stop after its token fires before its future is
/// dropped.
const STOP_GRACE: Duration = Duration::from_secs(2);

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
/// Such code should check [`TaskContext::is_cancelled`] itself.
pub struct Worker<B> {
    backend: Arc<B>,
    registry: Arc<Registry>,
    clock: Arc<dyn Clock>,
    config: WorkerConfig,
    shutdown: Shutdown,
    stats: Arc<WorkerStats>,
}

/// The workflows whose steps a worker ends: [`end_step`] over the worker's store, tried again
/// on a transient error.
trait FlowSink: Send + Sync + 'static {
    /// Ends `job`'s step with `end` (nothing for a job outside workflows).
    fn end<'a>(&'a self, job: StepJob<'a>, end: StepEnd, now: UnixMs) -> BoxFuture<'a, Result<()>>;
}

/// The [`FlowSink`] over a store.
struct FlowOver<B>(Arc<B>);

impl<B: Broker + WorkflowStore> FlowSink for FlowOver<B> {
    fn end<'a>(&'a self, job: StepJob<'a>, end: StepEnd, now: UnixMs) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let mut delay = Duration::from_millis(50);
            let mut tries = 0;
            loop {
                match end_step(&*self.0, job, end.clone(), now).await {
                    Ok(()) => return Ok(()),
                    Err(e) if tries < 5 && !matches!(e, Error::Config { .. } | Error::Codec(_)) => {
                        warn!(error = %e, "continuing the workflow failed; retrying in {delay:?}");
                        tokio::time::sleep(delay).await;
                        delay *= 2;
                        tries += 1;
                    }
                    Err(e) => return Err(e),
                }
            }
        })
    }
}

struct ProgressOver<B>(Arc<B>);

impl<B: ResultStore> ProgressSink for ProgressOver<B> {
    fn report(
        &self,
        lease: LeaseRef,
        fraction: f64,
        message: Option<String>,
    ) -> BoxFuture<'static, Result<bool>> {
        let backend = self.0.clone();
        Box::pin(async move { backend.set_progress(lease, fraction, message).await })
    }
}

impl<B: Broker + ResultStore + WorkflowStore> Worker<B> {
    /// A worker with default settings and the store's fleet clock.
    pub fn new(backend: Arc<B>, registry: Arc<Registry>) -> Self {
        Self {
            clock: backend.fleet_clock(),
            backend,
            registry,
            config: WorkerConfig::default(),
            shutdown: Shutdown {
                graceful: CancellationToken::new(),
                now: CancellationToken::new(),
            },
            stats: Arc::new(WorkerStats::default()),
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
    /// Only for invalid configuration; backend errors while running are logged and retried.
    pub async fn run(self) -> Result<()> {
        let mut config = self.config.clone();
        if config.queues.is_empty() {
            config.queues = self.registry.queues();
        }
        if config.queues.is_empty() {
            config.queues = vec![crate::job::DEFAULT_QUEUE.to_string()];
        }
        config.prefetch = config.prefetch.min(config.concurrency);
        config.validate()?;
        self.registry.check_breakers()?;
        let config = Arc::new(config);
        let timing = LeaseTiming::new(&config);
        info!(
            worker = %config.worker_id,
            queues = ?config.queues,
            concurrency = config.concurrency,
            "worker started"
        );

        let inflight: Inflight = Arc::new(Mutex::new(HashMap::new()));
        let slots = Arc::new(Semaphore::new(config.concurrency));
        // Finished jobs waiting for their acknowledgement: a bounded backlog, so a store that
        // refuses acknowledgements stops the claiming too.
        let unacked = Arc::new(Semaphore::new(config.concurrency * 2));
        let (done_tx, done_rx) = mpsc::unbounded_channel::<Done>();
        let (release_tx, mut release_rx) = mpsc::unbounded_channel::<LeaseRef>();
        let tracker = TaskTracker::new();
        let abandon = CancellationToken::new();
        let aux_stop = CancellationToken::new();
        let progress: Arc<dyn ProgressSink> = Arc::new(ProgressOver(self.backend.clone()));
        let flow: Arc<dyn FlowSink> = Arc::new(FlowOver(self.backend.clone()));
        // Whether held leases can be extended: no claims while they cannot.
        let (extending_tx, mut extending) = watch::channel(true);
        // Wakes the fence check when jobs are claimed.
        let held = Arc::new(Notify::new());

        let acker = tokio::spawn(ack_loop(
            self.backend.clone(),
            self.clock.clone(),
            done_rx,
            inflight.clone(),
            self.stats.clone(),
            self.shutdown.now.clone(),
        ));
        let heartbeat = tokio::spawn(heartbeat_loop(
            self.backend.clone(),
            self.clock.clone(),
            config.clone(),
            timing,
            inflight.clone(),
            extending_tx,
            aux_stop.clone(),
        ));
        let fencer = tokio::spawn(fence_loop(
            timing,
            inflight.clone(),
            held.clone(),
            self.stats.clone(),
            aux_stop.clone(),
        ));
        let stopper = tokio::spawn(stop_loop(
            self.backend.clone(),
            inflight.clone(),
            aux_stop.clone(),
        ));
        let reaper = tokio::spawn(reap_loop(
            self.backend.clone(),
            self.clock.clone(),
            config.clone(),
            flow.clone(),
            aux_stop.clone(),
        ));

        let limits = self.registry.limits();
        let mut error_backoff = Duration::from_millis(50);
        loop {
            if self.shutdown.graceful.is_cancelled() {
                break;
            }
            let first = tokio::select! {
                p = acquire_slot(&slots, &unacked) => match p { Some(p) => p, None => break },
                _ = self.shutdown.graceful.cancelled() => break,
            };
            // No new leases while the held ones cannot be extended (at once when they can,
            // and also once the heartbeat loop is gone).
            tokio::select! {
                _ = extending.wait_for(|ok| *ok) => {}
                _ = self.shutdown.graceful.cancelled() => break,
            }
            let mut permits = vec![first];
            take_free_slots(&slots, &unacked, &mut permits, config.prefetch);
            let epoch = self.backend.work_epoch();
            let now = self.clock.now_ms();
            let req = ClaimRequest {
                queues: claim_order(&config.queues, &config.weights),
                limits: limits.clone(),
                limit: permits.len(),
                lease: config.lease,
                worker: config.worker_id.clone(),
                now,
            };
            let sent = Instant::now();
            let claimed = match self.backend.claim(req).await {
                Ok(c) => {
                    error_backoff = Duration::from_millis(50);
                    c
                }
                Err(e) => {
                    warn!(error = %e, "claim failed; retrying in {:?}", error_backoff);
                    drop(permits);
                    tokio::select! {
                        _ = tokio::time::sleep(error_backoff) => {}
                        _ = self.shutdown.graceful.cancelled() => break,
                    }
                    error_backoff = (error_backoff * 2).min(Duration::from_secs(5));
                    continue;
                }
            };
            if claimed.is_empty() {
                drop(permits);
                let mut wait = self.idle_wait(&config, now).await;
                // Jobs a limit holds back are not announced when the limit lets them go: look
                // again as soon as the tightest rate allows, and at least every second.
                if !limits.is_empty() {
                    let step = limits
                        .values()
                        .filter_map(|l| l.rate.map(|r| r.interval_ms()))
                        .min()
                        .map_or(LIMITED_POLL, |ms| Duration::from_millis(ms as u64));
                    wait = wait.min(step.min(LIMITED_POLL));
                }
                tokio::select! {
                    _ = self.backend.wait_for_work(&config.queues, epoch, wait) => {}
                    _ = self.shutdown.graceful.cancelled() => break,
                }
                continue;
            }
            if Instant::now() >= sent + timing.window {
                // Answered so late that these leases are already due to be given up: hand the
                // jobs back unrun, their attempt not counted.
                drop(permits);
                let leases: Vec<LeaseRef> = claimed.iter().map(Claimed::lease).collect();
                warn!(
                    jobs = leases.len(),
                    waited = ?sent.elapsed(),
                    "a claim was answered too late to run its jobs within their leases; \
                     handing them back"
                );
                if let Err(e) = self.backend.release(leases, self.clock.now_ms()).await {
                    warn!(error = %e, "could not hand the leases back; they will expire");
                }
                continue;
            }
            for (job, permit) in claimed.into_iter().zip(permits) {
                let cancel = CancellationToken::new();
                let stop = CancellationToken::new();
                let (fence, fenced) = oneshot::channel();
                if let Ok(mut map) = inflight.lock() {
                    map.insert(
                        job.job.id,
                        Running {
                            token: job.token,
                            queue: job.job.queue.as_str().into(),
                            cancel: cancel.clone(),
                            stop: stop.clone(),
                            granted: sent,
                            fence: Some(fence),
                        },
                    );
                }
                let span = tracing::info_span!(
                    "job",
                    id = %job.job.id,
                    task = %job.job.task,
                    queue = %job.job.queue,
                    attempt = job.job.attempts
                );
                let run = RunOne {
                    registry: self.registry.clone(),
                    clock: self.clock.clone(),
                    stats: self.stats.clone(),
                    progress: progress.clone(),
                    flow: flow.clone(),
                    kill: self.shutdown.now.clone(),
                    abandon: abandon.clone(),
                    done: done_tx.clone(),
                    release: release_tx.clone(),
                    stop,
                    fence_window: timing.window,
                };
                tracker.spawn(run.run(job, cancel, fenced, permit).instrument(span));
            }
            held.notify_one();
        }

        // Shutdown: no more claims. Let running jobs finish within the grace period.
        tracker.close();
        let running = tracker.len();
        if running > 0 {
            info!(running, grace = ?config.grace_period, "worker stopping; waiting for running jobs");
        }
        tokio::select! {
            _ = tracker.wait() => {}
            _ = tokio::time::sleep(config.grace_period) => {
                warn!("grace period over; handing the remaining jobs back");
                abandon.cancel();
                tracker.wait().await;
            }
            _ = self.shutdown.now.cancelled() => {
                tracker.wait().await;
            }
        }
        aux_stop.cancel();
        drop(done_tx);
        drop(release_tx);
        let mut to_release = Vec::new();
        while let Ok(lease) = release_rx.try_recv() {
            to_release.push(lease);
        }
        // Acks already produced are flushed even on an immediate stop: they are finished work.
        let _ = tokio::time::timeout(Duration::from_secs(10), acker).await;
        if !to_release.is_empty() && !self.shutdown.now.is_cancelled() {
            match self.backend.release(to_release, self.clock.now_ms()).await {
                Ok(n) => {
                    self.stats.released.fetch_add(n, Ordering::Relaxed);
                }
                Err(e) => warn!(error = %e, "could not hand leases back; they will expire"),
            }
        }
        let _ = heartbeat.await;
        let _ = fencer.await;
        let _ = reaper.await;
        let _ = stopper.await;
        info!(worker = %config.worker_id, "worker stopped");
        Ok(())
    }

    async fn idle_wait(&self, config: &WorkerConfig, now: UnixMs) -> Duration {
        // A store that wakes idle workers itself only needs an occasional safety-net look.
        let poll = if self.backend.wakes_across_processes() {
            config.poll_interval.max(BLOCKING_POLL)
        } else {
            config.poll_interval
        };
        match self.backend.next_due(config.queues.clone()).await {
            Ok(Some(due)) if due > now => Duration::from_millis((due - now) as u64).min(poll),
            Ok(Some(_)) => Duration::from_millis(1),
            _ => poll,
        }
    }
}

/// Everything one job's run needs, moved into its task.
struct RunOne {
    registry: Arc<Registry>,
    clock: Arc<dyn Clock>,
    stats: Arc<WorkerStats>,
    progress: Arc<dyn ProgressSink>,
    flow: Arc<dyn FlowSink>,
    kill: CancellationToken,
    abandon: CancellationToken,
    done: mpsc::UnboundedSender<Done>,
    release: mpsc::UnboundedSender<LeaseRef>,
    stop: CancellationToken,
    /// How long after its last extension a lease is given up (for the reason recorded).
    fence_window: Duration,
}

/// A job's place in the worker: a running slot, freed when its task ends, and a place in the
/// bounded backlog of attempts waiting for their acknowledgement, freed when it lands.
struct Slot {
    run: OwnedSemaphorePermit,
    unacked: OwnedSemaphorePermit,
}

/// Waits for a free running slot and a place in the acknowledgement backlog.
async fn acquire_slot(slots: &Arc<Semaphore>, unacked: &Arc<Semaphore>) -> Option<Slot> {
    let unacked = unacked.clone().acquire_owned().await.ok()?;
    let run = slots.clone().acquire_owned().await.ok()?;
    Some(Slot { run, unacked })
}

/// Takes free slots without waiting, up to `max` in all.
fn take_free_slots(
    slots: &Arc<Semaphore>,
    unacked: &Arc<Semaphore>,
    into: &mut Vec<Slot>,
    max: usize,
) {
    while into.len() < max {
        let Ok(unacked) = unacked.clone().try_acquire_owned() else {
            break;
        };
        let Ok(run) = slots.clone().try_acquire_owned() else {
            break;
        };
        into.push(Slot { run, unacked });
    }
}

/// Waits for a timer if there is one, forever otherwise.
async fn until(timer: &mut Option<Pin<Box<Sleep>>>) {
    match timer {
        Some(t) => t.as_mut().await,
        None => std::future::pending().await,
    }
}

enum Ended {
    Ran(std::thread::Result<Result<Option<Vec<u8>>, RunError>>),
    HardLimit(Duration),
    Stopped,
    Killed,
    Abandoned,
    /// Given up by self-fencing and still running when its lease ended.
    Fenced,
}

impl RunOne {
    /// Puts a job back unrun, its attempt not counted, until its breaker may let it through.
    fn defer(
        &self,
        breaker: &str,
        rejected: &Rejected,
        started: UnixMs,
        lease: LeaseRef,
        attempt: u32,
        permit: OwnedSemaphorePermit,
    ) {
        let at = self
            .clock
            .now_ms()
            .saturating_add(duration_ms(rejected.retry_after));
        debug!(
            breaker,
            state = %rejected.state,
            retry_in_ms = at - started,
            "breaker open; job deferred"
        );
        let _ = self.done.send(Done {
            completion: Completion {
                lease,
                outcome: Outcome::Deferred { at },
            },
            attempt,
            permit,
        });
    }

    async fn run(
        self,
        claimed: Claimed,
        cancel: CancellationToken,
        mut fenced: oneshot::Receiver<Instant>,
        slot: Slot,
    ) {
        let Slot {
            run,
            unacked: permit,
        } = slot;
        let lease = claimed.lease();
        let Claimed { job, token, .. } = claimed;
        let started = self.clock.now_ms();
        self.stats.started.fetch_add(1, Ordering::Relaxed);
        if job.attempts == 1 {
            let waited = (started - job.run_at).max(0);
            self.stats.record_latency(waited);
            metrics::histogram!("celeriac_job_wait_seconds", "queue" => job.queue.clone())
                .record(waited as f64 / 1000.0);
        }
        let attempt = job.attempts;
        let Some(def) = self.registry.get(&job.task).cloned() else {
            let error = ErrorInfo::new(
                "unknown_task",
                format!("no task named `{}` is registered in this worker", job.task),
                attempt,
            );
            warn!(%error, "job dead-lettered");
            let outcome = Outcome::Dead { error };
            if job.headers.contains_key(FLOW_HEADER) {
                if let Some(end) = StepEnd::after_attempt(&job, &outcome, None) {
                    if let Err(e) = self.flow.end((&job).into(), end, self.clock.now_ms()).await {
                        warn!(error = %e, "could not record the failure in its workflow");
                    }
                }
            }
            let _ = self.done.send(Done {
                completion: Completion { lease, outcome },
                attempt,
                permit,
            });
            return;
        };
        // A task behind an open breaker waits out the open period without using an attempt.
        let breaker = match def.options().breaker.as_deref() {
            Some(name) => match self.registry.get_guard(name).map(|g| g.admit()) {
                Some(Ok(admission)) => {
                    let admitted = match admission {
                        Admission::Ready(permit) => Ok(permit),
                        // A half-open shared breaker: one of the store's probes, or wait.
                        Admission::Reserve(reserve) => reserve.await,
                    };
                    match admitted {
                        Ok(permit) => Some(permit),
                        Err(rejected) => {
                            self.defer(name, &rejected, started, lease, attempt, permit);
                            return;
                        }
                    }
                }
                Some(Err(rejected)) => {
                    self.defer(name, &rejected, started, lease, attempt, permit);
                    return;
                }
                // Checked when the worker starts: a task's breaker is registered.
                None => None,
            },
            None => None,
        };
        let ctx = TaskContext::new(
            job.id,
            token,
            &job.task,
            &job.queue,
            attempt,
            job.max_attempts,
            job.headers.clone(),
            cancel.clone(),
            Some(self.progress.clone()),
        );
        // Whether the worker gave the job up, and whether it may still do so.
        let mut given_up = false;
        let mut watch_fence = true;
        // The task's future lives in this block only: it is dropped as soon as it ends.
        let ended = {
            let fut =
                AssertUnwindSafe(def.call(ctx, job.payload.clone(), job.encoding)).catch_unwind();
            tokio::pin!(fut);
            let soft = job.soft_time_limit;
            let hard = job.hard_time_limit;
            // Timers only for the limits a job has: most have none, and a timer inline would
            // make every job's task larger (and cache-line aligned) for nothing.
            let mut soft_sleep = soft.map(|d| Box::pin(tokio::time::sleep(d)));
            let mut hard_sleep = hard.map(|d| Box::pin(tokio::time::sleep(d)));
            let mut soft_armed = soft.is_some();
            let mut stop_grace: Option<Pin<Box<Sleep>>> = None;
            // Set when the worker gives the job up: the task may run until its lease ends.
            let mut lease_end: Option<Pin<Box<Sleep>>> = None;
            loop {
                tokio::select! {
                    r = &mut fut => break Ended::Ran(r),
                    _ = self.stop.cancelled(), if stop_grace.is_none() => {
                        info!("job cancelled; asking the task to stop");
                        cancel.cancel();
                        stop_grace = Some(Box::pin(tokio::time::sleep(STOP_GRACE)));
                    }
                    _ = until(&mut stop_grace), if stop_grace.is_some() => break Ended::Stopped,
                    _ = until(&mut soft_sleep), if soft_armed => {
                        soft_armed = false;
                        debug!("soft time limit reached; cancelling the task's token");
                        cancel.cancel();
                    }
                    _ = until(&mut hard_sleep), if hard.is_some() => break Ended::HardLimit(hard.unwrap_or_default()),
                    end = &mut fenced, if watch_fence => {
                        watch_fence = false;
                        // An error only means the job was never given up.
                        if let Ok(end) = end {
                            debug!("lease not extended in time; asking the task to stop");
                            cancel.cancel();
                            given_up = true;
                            lease_end = Some(Box::pin(tokio::time::sleep_until(end)));
                        }
                    }
                    _ = until(&mut lease_end), if lease_end.is_some() => break Ended::Fenced,
                    // Either way the future is dropped; the token tells blocking sections and
                    // spawned helpers holding it to stop too.
                    _ = self.kill.cancelled() => {
                        cancel.cancel();
                        break Ended::Killed;
                    }
                    _ = self.abandon.cancelled() => {
                        cancel.cancel();
                        break Ended::Abandoned;
                    }
                }
            }
        };
        drop(run);
        // Given up while it ran (or as it ended): its lease may be someone else's by now.
        given_up = given_up || (watch_fence && fenced.try_recv().is_ok());
        let now = self.clock.now_ms();
        let backoff = def.options().backoff;
        let retry_or_dead = |kind: &str, message: String, delay: Option<Duration>| {
            if attempt < job.max_attempts {
                let delay = delay.unwrap_or_else(|| backoff.delay(attempt));
                Outcome::Retry {
                    at: now.saturating_add(duration_ms(delay)),
                    error: ErrorInfo::new(kind, message, attempt),
                }
            } else {
                Outcome::Dead {
                    error: ErrorInfo::new(
                        "retries_exhausted",
                        format!("gave up after {attempt} attempts; last error ({kind}): {message}"),
                        attempt,
                    ),
                }
            }
        };
        // A cancelled job ends as cancelled, whatever its task returned once asked to stop.
        let cancelled = self.stop.is_cancelled();
        let in_flow = job.headers.contains_key(FLOW_HEADER);
        let mut output = None;
        // The task's own errors, panics and time limits are the breaker's failures; a payload
        // that does not decode or a stopped run says nothing about the partner.
        let verdict = match &ended {
            Ended::Ran(Ok(Ok(_))) => Verdict::Success,
            Ended::Ran(Ok(Err(RunError::Task(_)))) | Ended::Ran(Err(_)) | Ended::HardLimit(_) => {
                Verdict::Failure
            }
            _ => Verdict::Ignore,
        };
        let mut outcome = match ended {
            Ended::Killed => return,
            Ended::Abandoned if !cancelled => {
                let _ = self.release.send(lease);
                return;
            }
            _ if cancelled => Outcome::Cancelled,
            // Whatever the task returned once asked to stop, the attempt did not finish.
            _ if given_up => retry_or_dead(
                "lease_fenced",
                format!(
                    "the worker could not extend the lease within {:?} and stopped the attempt \
                     before the lease could run out",
                    self.fence_window
                ),
                Some(Duration::ZERO),
            ),
            Ended::Stopped | Ended::Abandoned | Ended::Fenced => Outcome::Cancelled,
            // The job's own retention decides whether a result is kept.
            Ended::Ran(Ok(Ok(result))) => {
                if in_flow {
                    output.clone_from(&result);
                }
                Outcome::Succeeded {
                    result: job.result_ttl.and(result),
                }
            }
            Ended::Ran(Ok(Err(RunError::Decode(msg)))) => Outcome::Dead {
                error: ErrorInfo::new(
                    "undecodable_payload",
                    format!(
                        "payload does not decode into the arguments of `{}`: {msg}",
                        job.task
                    ),
                    attempt,
                ),
            },
            Ended::Ran(Ok(Err(RunError::Task(e)))) if e.is_fatal() => Outcome::Failed {
                error: ErrorInfo::new("error", e.message(), attempt),
            },
            Ended::Ran(Ok(Err(RunError::Task(e)))) => {
                retry_or_dead("error", e.message().to_string(), e.requested_delay())
            }
            Ended::Ran(Err(panic)) => retry_or_dead(
                "panic",
                format!("task panicked: {}", panic_message(panic)),
                None,
            ),
            Ended::HardLimit(limit) => retry_or_dead(
                "time_limit",
                format!("hard time limit of {limit:?} exceeded"),
                None,
            ),
        };
        if let Some(permit) = breaker {
            permit
                .record(if cancelled || given_up {
                    Verdict::Ignore
                } else {
                    verdict
                })
                .await;
        }
        match &outcome {
            Outcome::Succeeded { .. } => debug!("job succeeded"),
            Outcome::Retry { error, at } => {
                debug!(%error, retry_in_ms = at - now, "attempt failed; will retry")
            }
            Outcome::Failed { error } => warn!(%error, "job failed"),
            Outcome::Dead { error } => warn!(%error, "job dead-lettered"),
            Outcome::Cancelled => info!("job cancelled"),
            Outcome::Deferred { .. } => debug!("job deferred"),
        }
        if in_flow {
            // What follows in the workflow is enqueued before the job is acknowledged: a crash
            // in between runs the job again, and the ids of what follows do not change.
            if let Some(end) = StepEnd::after_attempt(&job, &outcome, output.as_deref()) {
                if let Err(e) = self.flow.end((&job).into(), end, now).await {
                    warn!(error = %e, "could not continue the workflow");
                    if matches!(outcome, Outcome::Succeeded { .. }) {
                        outcome = retry_or_dead(
                            "workflow",
                            format!("could not continue the workflow: {e}"),
                            None,
                        );
                    }
                }
            }
        }
        let _ = self.done.send(Done {
            completion: Completion { lease, outcome },
            attempt,
            permit,
        });
    }
}

async fn stop_loop<B: Broker>(backend: Arc<B>, inflight: Inflight, stop: CancellationToken) {
    let mut tick = tokio::time::interval(CANCEL_POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.cancelled() => return,
        }
        let leases = held_leases(&inflight, |r| !r.stop.is_cancelled());
        if leases.is_empty() {
            continue;
        }
        match backend.cancel_requested(leases).await {
            Ok(stopped) => for_each_running(&inflight, &stopped, |r| r.stop.cancel()),
            Err(e) => debug!(error = %e, "checking for cancelled jobs failed"),
        }
    }
}

async fn reap_loop<B: Broker>(
    backend: Arc<B>,
    clock: Arc<dyn Clock>,
    config: Arc<WorkerConfig>,
    flow: Arc<dyn FlowSink>,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval(config.reap_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.cancelled() => return,
        }
        match backend.reap(clock.now_ms()).await {
            Ok(r) => {
                if r.requeued + r.dead > 0 {
                    info!(
                        requeued = r.requeued,
                        dead = r.dead,
                        "reaped expired leases"
                    );
                }
                // Jobs the store ended on its own still end their workflow's step, from what
                // the reap reported (nothing is read back).
                for job in r.ended.iter().filter(|j| j.flow.is_some()) {
                    let end = StepEnd::by_store(job);
                    if let Err(e) = flow.end(job.into(), end, clock.now_ms()).await {
                        warn!(error = %e, job = %job.id, "could not record the failure in its workflow");
                    }
                }
            }
            Err(e) => debug!(error = %e, "reaping failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strict_order_is_kept() {
        let q = vec!["a".to_string(), "b".to_string()];
        assert_eq!(claim_order(&q, &[]), q);
    }

    #[test]
    fn weighted_order_follows_the_weights() {
        let q = vec!["high".to_string(), "low".to_string()];
        let firsts = (0..4000)
            .filter(|_| claim_order(&q, &[3, 1])[0] == "high")
            .count();
        // Expected 3000; the bounds are more than ten standard deviations (about 27) away.
        assert!((2700..3300).contains(&firsts), "{firsts}");
        assert_eq!(claim_order(&q, &[3, 1]).len(), 2);
    }

    #[test]
    fn weights_must_match_the_queues() {
        let mut c = WorkerConfig {
            queues: vec!["a".into(), "b".into()],
            weights: vec![1],
            ..WorkerConfig::default()
        };
        assert!(c.validate().is_err());
        c.weights = vec![1, 0];
        assert!(c.validate().is_err());
        c.weights = vec![2, 1];
        assert!(c.validate().is_ok());
    }
}
