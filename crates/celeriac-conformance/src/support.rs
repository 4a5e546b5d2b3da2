//! What the cases share: fixed instants, job builders, thin wrappers over the traits that
//! fail with a message naming the call, polling with a deadline ([`wait_for`], public for
//! other crates' tests too), a worker harness and the tasks the worker-driven cases run.

use celeriac_core::backend::QueueAdmin;
use celeriac_core::backend::{ClaimRequest, Claimed, Completion, LeaseRef, Outcome};
use celeriac_core::{
    Backoff, Broker, Clock, Job, JobId, JobInfo, ManualClock, Registry, ResultStore, Shutdown,
    Task, TaskContext, TaskError, TaskOptions, UnixMs, Worker, WorkerConfig,
};
use std::fmt;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::task::JoinHandle;

/// The instant every case starts at (a fixed moment in November 2023).
pub(crate) const T0: UnixMs = 1_700_000_000_000;

/// The lease every direct claim asks for.
pub(crate) const LEASE: Duration = Duration::from_secs(30);

/// [`LEASE`] in milliseconds.
pub(crate) const LEASE_MS: UnixMs = 30_000;

/// How long a case waits for something that should happen soon (generous: slow CI).
pub(crate) const PATIENCE: Duration = Duration::from_secs(10);

/// The task name of jobs that no worker runs in the broker-level cases.
pub(crate) const NOOP: &str = "conformance.noop";

/// A job of [`NOOP`] in `queue`, due at `now`, with the defaults of [`Job::new`].
pub(crate) fn job(queue: &str, now: UnixMs) -> Job {
    let mut job = Job::new(NOOP, b"null".to_vec(), now);
    job.queue = queue.to_string();
    job
}

/// A job of [`NOOP`] in `queue` enqueued at `now`, due at `run_at`.
pub(crate) fn delayed(queue: &str, now: UnixMs, run_at: UnixMs) -> Job {
    let mut job = job(queue, now);
    job.run_at = run_at;
    job
}

/// The ids of jobs or claims, in order.
pub(crate) fn ids_of(jobs: &[Job]) -> Vec<JobId> {
    jobs.iter().map(|j| j.id).collect()
}

/// The ids of claimed jobs, in the order the claim returned them.
pub(crate) fn claimed_ids(claimed: &[Claimed]) -> Vec<JobId> {
    claimed.iter().map(|c| c.job.id).collect()
}

/// The lease a claim holds.
pub(crate) fn lease(c: &Claimed) -> LeaseRef {
    c.lease()
}

/// A successful outcome with `result` as JSON.
pub(crate) fn success(result: &serde_json::Value) -> Outcome {
    Outcome::Succeeded {
        result: Some(serde_json::to_vec(result).expect("a JSON value serializes")),
    }
}

/// Stores `jobs` at `now`, failing the case if the backend refuses.
pub(crate) async fn enqueue<B: Broker>(backend: &B, jobs: Vec<Job>, now: UnixMs) {
    backend
        .enqueue(jobs, now)
        .await
        .expect("enqueue should succeed");
}

/// Claims up to `limit` jobs from `queues` at `now` with a [`LEASE`].
pub(crate) async fn claim<B: Broker>(
    backend: &B,
    queues: &[&str],
    limit: usize,
    now: UnixMs,
) -> Vec<Claimed> {
    backend
        .claim(ClaimRequest {
            queues: queues.iter().map(|q| q.to_string()).collect(),
            limit,
            lease: LEASE,
            worker: "conformance-worker".to_string(),
            now,
            limits: Default::default(),
        })
        .await
        .expect("claim should succeed")
}

/// Claims one job from `queue` at `now` and expects it to be `id`.
pub(crate) async fn claim_only<B: Broker>(
    backend: &B,
    queue: &str,
    id: JobId,
    now: UnixMs,
) -> Claimed {
    let mut got = claim(backend, &[queue], 1, now).await;
    assert_eq!(
        claimed_ids(&got),
        vec![id],
        "claiming one job from `{queue}` at {now} should return the job {id}"
    );
    got.remove(0)
}

/// Completes one attempt; returns whether the backend applied it.
pub(crate) async fn complete<B: Broker>(
    backend: &B,
    lease: LeaseRef,
    outcome: Outcome,
    now: UnixMs,
) -> bool {
    let applied = backend
        .complete(vec![Completion { lease, outcome }], now)
        .await
        .expect("complete should succeed");
    assert_eq!(applied.len(), 1, "complete returns one flag per completion");
    applied[0]
}

/// Everything known about `id`; the case fails if the backend does not know it.
pub(crate) async fn info<B: ResultStore>(backend: &B, id: JobId) -> JobInfo {
    backend
        .get(id)
        .await
        .expect("get should succeed")
        .unwrap_or_else(|| panic!("job {id} should be known to the backend"))
}

/// Whether the backend still knows `id`.
pub(crate) async fn exists<B: ResultStore>(backend: &B, id: JobId) -> bool {
    backend.get(id).await.expect("get should succeed").is_some()
}

/// The ids of the dead letters (of `queue`, or of all queues), newest first.
pub(crate) async fn dead_ids<B: Broker + QueueAdmin>(
    backend: &B,
    queue: Option<&str>,
) -> Vec<JobId> {
    backend
        .dead_letters(queue.map(str::to_string), 1000, 0)
        .await
        .expect("dead_letters should succeed")
        .iter()
        .map(|i| i.job.id)
        .collect()
}

/// Polls `check` every few milliseconds until it holds, for at most ten seconds
/// (`PATIENCE`, generous for slow CI); `what` names what is awaited, for the failure message
/// (`timed out after 10s waiting for {what}`).
///
/// ```no_run
/// # async fn example() {
/// use std::sync::atomic::{AtomicBool, Ordering};
/// static STARTED: AtomicBool = AtomicBool::new(false);
/// celeriac_conformance::wait_for("the job to start", || async {
///     STARTED.load(Ordering::SeqCst)
/// })
/// .await;
/// # }
/// ```
///
/// # Panics
/// When `check` still does not hold after ten seconds.
pub async fn wait_for<F, Fut>(what: impl fmt::Display, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {PATIENCE:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Polls `get(id)` until `done` holds, for at most [`PATIENCE`] (see [`wait_for`]); `what`
/// says what the case is waiting for, and the failure message adds the job's last state.
pub(crate) async fn eventually<B: ResultStore>(
    backend: &B,
    id: JobId,
    what: &str,
    done: impl Fn(&JobInfo) -> bool,
) -> JobInfo {
    let last = Mutex::new(None);
    let (seen, done) = (&last, &done);
    let awaited = LastSeen {
        what,
        id,
        last: seen,
    };
    wait_for(awaited, || async move {
        let info = backend.get(id).await.expect("get should succeed");
        let found = info.as_ref().is_some_and(done);
        *seen.lock().unwrap_or_else(PoisonError::into_inner) = info;
        found
    })
    .await;
    let found = last.into_inner().unwrap_or_else(PoisonError::into_inner);
    found.expect("the job was found")
}

/// What [`eventually`] waits for, with the last state it saw of the job.
struct LastSeen<'a> {
    what: &'a str,
    id: JobId,
    last: &'a Mutex<Option<JobInfo>>,
}

impl fmt::Display for LastSeen<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let last = self.last.lock().unwrap_or_else(PoisonError::into_inner);
        let seen = match &*last {
            Some(i) => format!(
                "state {}, attempts {}, run_at {}, error {:?}",
                i.state, i.job.attempts, i.job.run_at, i.error
            ),
            None => "no record".to_string(),
        };
        write!(f, "{} (job {}; last seen: {seen})", self.what, self.id)
    }
}

/// A [`Worker`] running in a spawned task on a [`ManualClock`].
pub(crate) struct RunningWorker {
    shutdown: Shutdown,
    handle: JoinHandle<celeriac_core::Result<()>>,
}

impl RunningWorker {
    /// Starts a worker over `backend` for `queue` with `registry`, reading `clock`.
    pub(crate) fn start<B: celeriac_core::WorkerStore>(
        backend: Arc<B>,
        registry: Registry,
        queue: &str,
        clock: &ManualClock,
    ) -> Self {
        Self::start_as(backend, registry, queue, clock, "conformance-worker")
    }

    /// Like [`RunningWorker::start`], with its worker id (for several workers on one store).
    pub(crate) fn start_as<B: celeriac_core::WorkerStore>(
        backend: Arc<B>,
        registry: Registry,
        queue: &str,
        clock: &ManualClock,
        worker_id: &str,
    ) -> Self {
        let clock: Arc<dyn Clock> = Arc::new(clock.clone());
        let worker = Worker::new(backend, Arc::new(registry))
            .config(WorkerConfig {
                queues: vec![queue.to_string()],
                concurrency: 4,
                prefetch: 4,
                poll_interval: Duration::from_millis(5),
                worker_id: worker_id.to_string(),
                ..WorkerConfig::default()
            })
            .clock(clock);
        let shutdown = worker.shutdown_handle();
        let handle = tokio::spawn(worker.run());
        Self { shutdown, handle }
    }

    /// Stops the worker gracefully and checks that it stopped cleanly.
    pub(crate) async fn stop(self) {
        self.shutdown.graceful();
        tokio::time::timeout(PATIENCE, self.handle)
            .await
            .expect("the worker should stop within the patience period")
            .expect("the worker task should not panic")
            .expect("the worker should stop without an error");
    }
}

/// A task that always fails with a retryable error: three attempts in all, backoff from one
/// second without jitter (so retries land at exactly +1 s, then +2 s).
pub(crate) struct AlwaysFails;

impl Task for AlwaysFails {
    const NAME: &'static str = "conformance.always_fails";
    type Args = String;
    type Output = ();

    fn options() -> TaskOptions {
        TaskOptions {
            max_attempts: 3,
            backoff: Backoff {
                base: Duration::from_secs(1),
                cap: Duration::from_secs(600),
                jitter: false,
            },
            ..TaskOptions::default()
        }
    }

    async fn run(_ctx: TaskContext, message: String) -> Result<(), TaskError> {
        Err(TaskError::msg(message))
    }
}

/// A task that adds two numbers.
pub(crate) struct Add;

impl Task for Add {
    const NAME: &'static str = "conformance.add";
    type Args = (i64, i64);
    type Output = i64;

    async fn run(_ctx: TaskContext, (a, b): (i64, i64)) -> Result<i64, TaskError> {
        Ok(a + b)
    }
}

/// A gate that gated tasks wait at until the case opens it.
#[derive(Default)]
pub(crate) struct Gate {
    entered: std::sync::atomic::AtomicUsize,
    open: tokio::sync::Notify,
    opened: std::sync::atomic::AtomicBool,
}

/// The gates by name (one per case run, so cases on several backends keep apart).
pub(crate) fn gate(name: &str) -> Arc<Gate> {
    static GATES: std::sync::LazyLock<
        std::sync::Mutex<std::collections::HashMap<String, Arc<Gate>>>,
    > = std::sync::LazyLock::new(Default::default);
    let mut gates = GATES
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    gates.entry(name.to_string()).or_default().clone()
}

impl Gate {
    pub(crate) async fn pass(&self) {
        self.entered
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        loop {
            let notified = self.open.notified();
            if self.opened.load(std::sync::atomic::Ordering::SeqCst) {
                return;
            }
            notified.await;
        }
    }

    pub(crate) fn entered(&self) -> usize {
        self.entered.load(std::sync::atomic::Ordering::SeqCst)
    }

    pub(crate) fn release(&self) {
        self.opened.store(true, std::sync::atomic::Ordering::SeqCst);
        self.open.notify_waiters();
    }
}
