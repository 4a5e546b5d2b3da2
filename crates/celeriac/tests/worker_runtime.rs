//! The worker runtime against the real embedded SQLite backend: wake-ups, panics, time
//! limits, retries, concurrency, heartbeats, shutdown (graceful, past the grace period and
//! immediate), progress and blocking sections.
//!
//! Every test has its own tasks (and their statics), its own in-memory store and its own
//! worker, so the tests can run in parallel.

use celeriac::{
    App, Backoff, Broker, Clock, ErrorInfo, JobHandle, JobState, ManualClock, Progress, Shutdown,
    Task, TaskContext, TaskError, TaskOptions, WorkerConfig, WorkerStats,
};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Generous bound for anything that should happen "soon".
const SOON: Duration = Duration::from_secs(10);
/// Longer than any test runs: a task sleeping this long never finishes by itself.
const FOREVER: Duration = Duration::from_secs(3600);

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

/// A worker spawned on the test's runtime.
struct Running {
    shutdown: Shutdown,
    stats: Arc<WorkerStats>,
    join: tokio::task::JoinHandle<celeriac::Result<()>>,
}

impl Running {
    /// Waits (up to [`SOON`]) for `run()` to return, and checks it returned `Ok`.
    async fn join(self) -> Arc<WorkerStats> {
        tokio::time::timeout(SOON, self.join)
            .await
            .expect("worker.run() returns after shutdown")
            .expect("worker task did not panic")
            .expect("worker.run() returns Ok");
        self.stats
    }

    /// Graceful shutdown, then [`Running::join`].
    async fn stop(self) -> Arc<WorkerStats> {
        self.shutdown.graceful();
        self.join().await
    }
}

fn start(app: &App, config: WorkerConfig) -> Running {
    let worker = app.worker().config(config);
    let shutdown = worker.shutdown_handle();
    let stats = worker.stats();
    let join = tokio::spawn(worker.run());
    Running {
        shutdown,
        stats,
        join,
    }
}

/// Fast-polling defaults for tests.
fn config() -> WorkerConfig {
    WorkerConfig {
        concurrency: 4,
        prefetch: 4,
        poll_interval: Duration::from_millis(50),
        grace_period: SOON,
        worker_id: "worker-runtime-test".into(),
        ..WorkerConfig::default()
    }
}

/// Small, deterministic backoff so retries come quickly.
fn quick_backoff() -> Backoff {
    Backoff {
        base: Duration::from_millis(10),
        cap: Duration::from_millis(10),
        jitter: false,
    }
}

async fn memory_app(register: impl FnOnce(celeriac::AppBuilder) -> celeriac::AppBuilder) -> App {
    register(App::builder().url("sqlite::memory:"))
        .build()
        .await
        .expect("in-memory app")
}

/// Waits (up to [`SOON`]) until `cond` holds.
async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + SOON;
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Waits (up to [`SOON`]) until the job is in `state`, and returns what is known about it.
async fn wait_for_state(
    handle: &JobHandle<celeriac::AnyBackend>,
    state: JobState,
) -> celeriac::JobInfo {
    let deadline = tokio::time::Instant::now() + SOON;
    loop {
        let info = handle.info().await.expect("job info");
        if info.state == state {
            return info;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "job never reached {state}; last seen: {info:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Sets a flag when dropped: proves a task's future was dropped (or finished).
struct SetOnDrop(&'static AtomicBool);

impl Drop for SetOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// A task that echoes its argument (used to show a worker is still alive).
struct Echo;

impl Task for Echo {
    const NAME: &'static str = "test.echo";
    type Args = String;
    type Output = String;

    async fn run(_ctx: TaskContext, args: String) -> Result<String, TaskError> {
        Ok(args)
    }
}

// ---------------------------------------------------------------------------------------
// 1. In-process wake-up without polling
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn idle_worker_is_woken_by_an_enqueue_in_the_same_process() {
    let app = memory_app(|b| b.task::<Echo>()).await;
    let worker = start(
        &app,
        WorkerConfig {
            poll_interval: FOREVER,
            ..config()
        },
    );
    // Let the worker make its first (empty) claim and go to sleep for its poll interval.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(worker.stats.started.load(Ordering::SeqCst), 0);

    let handle = app
        .client()
        .enqueue::<Echo>("wake up".to_string())
        .await
        .expect("enqueue");
    // With polling alone this would take an hour.
    let info = handle
        .wait(SOON)
        .await
        .expect("job finishes without polling");
    assert_eq!(info.state, JobState::Succeeded);
    assert_eq!(
        info.result_as::<String>().expect("decode").as_deref(),
        Some("wake up")
    );

    let stats = worker.stop().await;
    assert_eq!(stats.started.load(Ordering::SeqCst), 1);
    assert_eq!(stats.succeeded.load(Ordering::SeqCst), 1);
}

// ---------------------------------------------------------------------------------------
// 2. A panicking task is a failed attempt, not a dead worker
// ---------------------------------------------------------------------------------------

struct PanicsOnce;

impl Task for PanicsOnce {
    const NAME: &'static str = "test.panics_once";
    type Args = ();
    type Output = String;

    fn options() -> TaskOptions {
        TaskOptions {
            max_attempts: 3,
            backoff: quick_backoff(),
            ..TaskOptions::default()
        }
    }

    async fn run(ctx: TaskContext, _args: ()) -> Result<String, TaskError> {
        if ctx.attempt() == 1 {
            panic!("deliberate panic on the first attempt");
        }
        Ok(format!("recovered on attempt {}", ctx.attempt()))
    }
}

#[tokio::test]
async fn a_panicking_task_is_a_failed_attempt_and_the_worker_keeps_going() {
    let app = memory_app(|b| b.task::<PanicsOnce>().task::<Echo>()).await;
    let worker = start(&app, config());

    let handle = app
        .client()
        .enqueue::<PanicsOnce>(())
        .await
        .expect("enqueue");
    let info = handle.wait(SOON).await.expect("job finishes");
    assert_eq!(info.state, JobState::Succeeded, "{info:?}");
    assert_eq!(info.job.attempts, 2);
    assert_eq!(
        info.result_as::<String>().expect("decode").as_deref(),
        Some("recovered on attempt 2")
    );
    assert_eq!(worker.stats.retried.load(Ordering::SeqCst), 1);

    // The worker survived the panic and still runs jobs.
    let next = app
        .client()
        .enqueue::<Echo>("still alive".to_string())
        .await
        .expect("enqueue");
    let info = next.wait(SOON).await.expect("second job finishes");
    assert_eq!(info.state, JobState::Succeeded);
    assert_eq!(
        info.result_as::<String>().expect("decode").as_deref(),
        Some("still alive")
    );

    let stats = worker.stop().await;
    assert_eq!(stats.started.load(Ordering::SeqCst), 3);
    assert_eq!(stats.succeeded.load(Ordering::SeqCst), 2);
    assert_eq!(stats.retried.load(Ordering::SeqCst), 1);
    assert_eq!(stats.dead.load(Ordering::SeqCst), 0);
}

// ---------------------------------------------------------------------------------------
// 3. Hard time limit
// ---------------------------------------------------------------------------------------

static HARD_FOREVER_DROPPED: AtomicBool = AtomicBool::new(false);

struct SleepsPastHardLimit;

impl Task for SleepsPastHardLimit {
    const NAME: &'static str = "test.sleeps_past_hard_limit";
    type Args = ();
    type Output = ();

    fn options() -> TaskOptions {
        TaskOptions {
            max_attempts: 1,
            hard_time_limit: Some(Duration::from_millis(200)),
            ..TaskOptions::default()
        }
    }

    async fn run(_ctx: TaskContext, _args: ()) -> Result<(), TaskError> {
        let _guard = SetOnDrop(&HARD_FOREVER_DROPPED);
        tokio::time::sleep(FOREVER).await;
        Ok(())
    }
}

#[tokio::test]
async fn hard_time_limit_on_the_last_attempt_dead_letters_the_job() {
    let app = memory_app(|b| b.task::<SleepsPastHardLimit>()).await;
    let worker = start(&app, config());

    let handle = app
        .client()
        .enqueue::<SleepsPastHardLimit>(())
        .await
        .expect("enqueue");
    let info = handle.wait(SOON).await.expect("job ends at its hard limit");
    assert_eq!(info.state, JobState::Dead, "{info:?}");
    assert_eq!(info.job.attempts, 1);
    let error = info.error.expect("an error is recorded");
    assert_eq!(error.kind, "retries_exhausted", "{error}");
    assert!(error.message.contains("time_limit"), "{error}");
    assert_eq!(error.attempt, 1);
    assert!(
        HARD_FOREVER_DROPPED.load(Ordering::SeqCst),
        "the task's future is dropped at the hard limit"
    );

    let dead = app
        .backend()
        .dead_letters(None, 10, 0)
        .await
        .expect("dead letters");
    assert_eq!(
        dead.iter().map(|d| d.job.id).collect::<Vec<_>>(),
        vec![handle.id()]
    );

    let stats = worker.stop().await;
    assert_eq!(stats.dead.load(Ordering::SeqCst), 1);
}

struct SleepsOnlyOnFirstAttempt;

impl Task for SleepsOnlyOnFirstAttempt {
    const NAME: &'static str = "test.sleeps_only_on_first_attempt";
    type Args = ();
    type Output = u32;

    fn options() -> TaskOptions {
        TaskOptions {
            max_attempts: 2,
            hard_time_limit: Some(Duration::from_millis(200)),
            backoff: quick_backoff(),
            ..TaskOptions::default()
        }
    }

    async fn run(ctx: TaskContext, _args: ()) -> Result<u32, TaskError> {
        if ctx.attempt() == 1 {
            tokio::time::sleep(FOREVER).await;
        }
        Ok(ctx.attempt())
    }
}

#[tokio::test]
async fn hard_time_limit_with_attempts_left_is_retried() {
    let app = memory_app(|b| b.task::<SleepsOnlyOnFirstAttempt>()).await;
    let worker = start(&app, config());

    let handle = app
        .client()
        .enqueue::<SleepsOnlyOnFirstAttempt>(())
        .await
        .expect("enqueue");
    let info = handle.wait(SOON).await.expect("job finishes");
    assert_eq!(info.state, JobState::Succeeded, "{info:?}");
    assert_eq!(info.job.attempts, 2);
    assert_eq!(info.result_as::<u32>().expect("decode"), Some(2));

    let stats = worker.stop().await;
    assert_eq!(stats.retried.load(Ordering::SeqCst), 1);
    assert_eq!(stats.succeeded.load(Ordering::SeqCst), 1);
}

// ---------------------------------------------------------------------------------------
// 4. Soft time limit
// ---------------------------------------------------------------------------------------

struct StopsWhenAsked;

impl Task for StopsWhenAsked {
    const NAME: &'static str = "test.stops_when_asked";
    type Args = ();
    type Output = String;

    fn options() -> TaskOptions {
        TaskOptions {
            max_attempts: 1,
            soft_time_limit: Some(Duration::from_millis(100)),
            hard_time_limit: None,
            ..TaskOptions::default()
        }
    }

    async fn run(ctx: TaskContext, _args: ()) -> Result<String, TaskError> {
        if ctx.is_cancelled() {
            return Err(TaskError::fatal(
                "cancelled before the soft limit could pass",
            ));
        }
        ctx.cancelled().await;
        Ok("stopped politely".to_string())
    }
}

#[tokio::test]
async fn soft_time_limit_cancels_the_token_and_the_task_returns_normally() {
    let app = memory_app(|b| b.task::<StopsWhenAsked>()).await;
    let worker = start(&app, config());

    let handle = app
        .client()
        .enqueue::<StopsWhenAsked>(())
        .await
        .expect("enqueue");
    let info = handle
        .wait(SOON)
        .await
        .expect("the soft limit fires the token");
    assert_eq!(info.state, JobState::Succeeded, "{info:?}");
    assert_eq!(info.job.attempts, 1);
    assert_eq!(
        info.result_as::<String>().expect("decode").as_deref(),
        Some("stopped politely")
    );
    worker.stop().await;
}

// ---------------------------------------------------------------------------------------
// 5. TaskError::retry_after, on a manual clock
// ---------------------------------------------------------------------------------------

static RETRY_AFTER_RUNS: AtomicU32 = AtomicU32::new(0);

struct RetriesAfter300ms;

impl Task for RetriesAfter300ms {
    const NAME: &'static str = "test.retries_after_300ms";
    type Args = ();
    type Output = u32;

    async fn run(ctx: TaskContext, _args: ()) -> Result<u32, TaskError> {
        RETRY_AFTER_RUNS.fetch_add(1, Ordering::SeqCst);
        if ctx.attempt() == 1 {
            return Err(TaskError::retry_after(
                Duration::from_millis(300),
                "not yet",
            ));
        }
        Ok(ctx.attempt())
    }
}

#[tokio::test]
async fn retry_after_schedules_the_next_attempt_exactly_that_much_later() {
    const T0: i64 = 1_700_000_000_000;
    let clock = ManualClock::new(T0);
    let app = App::builder()
        .url("sqlite::memory:")
        .clock(Arc::new(clock.clone()))
        .task::<RetriesAfter300ms>()
        .build()
        .await
        .expect("app");
    let worker = start(&app, config());

    let handle = app
        .client()
        .enqueue::<RetriesAfter300ms>(())
        .await
        .expect("enqueue");
    let info = wait_for_state(&handle, JobState::Retrying).await;
    assert_eq!(info.job.attempts, 1);
    assert_eq!(
        info.job.run_at,
        T0 + 300,
        "run_at is now + the requested delay"
    );
    assert_eq!(info.error, Some(ErrorInfo::new("error", "not yet", 1)));

    // The clock stands still, so the retry never becomes due, however long we wait.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let info = handle.info().await.expect("info");
    assert_eq!(info.state, JobState::Retrying, "{info:?}");
    assert_eq!(RETRY_AFTER_RUNS.load(Ordering::SeqCst), 1);

    clock.advance(Duration::from_millis(300));
    assert_eq!(clock.now_ms(), T0 + 300);
    let info = handle.wait(SOON).await.expect("retry runs once due");
    assert_eq!(info.state, JobState::Succeeded, "{info:?}");
    assert_eq!(info.job.attempts, 2);
    assert_eq!(info.result_as::<u32>().expect("decode"), Some(2));
    assert_eq!(RETRY_AFTER_RUNS.load(Ordering::SeqCst), 2);

    let stats = worker.stop().await;
    assert_eq!(stats.retried.load(Ordering::SeqCst), 1);
    assert_eq!(stats.succeeded.load(Ordering::SeqCst), 1);
}

// ---------------------------------------------------------------------------------------
// 6. Fatal errors
// ---------------------------------------------------------------------------------------

struct FailsFatally;

impl Task for FailsFatally {
    const NAME: &'static str = "test.fails_fatally";
    type Args = ();
    type Output = ();

    async fn run(_ctx: TaskContext, _args: ()) -> Result<(), TaskError> {
        Err(TaskError::fatal("bad input, retrying cannot help"))
    }
}

#[tokio::test]
async fn a_fatal_error_fails_the_job_at_once_without_dead_lettering_it() {
    let app = memory_app(|b| b.task::<FailsFatally>()).await;
    let worker = start(&app, config());

    let handle = app
        .client()
        .enqueue::<FailsFatally>(())
        .await
        .expect("enqueue");
    let info = handle.wait(SOON).await.expect("job finishes");
    assert_eq!(info.state, JobState::Failed, "{info:?}");
    assert_eq!(info.job.attempts, 1);
    assert!(
        info.job.max_attempts > 1,
        "attempts were left, yet none was used"
    );
    assert_eq!(
        info.error,
        Some(ErrorInfo::new(
            "error",
            "bad input, retrying cannot help",
            1
        ))
    );
    let dead = app
        .backend()
        .dead_letters(None, 10, 0)
        .await
        .expect("dead letters");
    assert!(dead.is_empty(), "{dead:?}");

    let stats = worker.stop().await;
    assert_eq!(stats.failed.load(Ordering::SeqCst), 1);
    assert_eq!(stats.retried.load(Ordering::SeqCst), 0);
    assert_eq!(stats.dead.load(Ordering::SeqCst), 0);
}

// ---------------------------------------------------------------------------------------
// 7. Concurrency limit
// ---------------------------------------------------------------------------------------

static HOLD_IN_FLIGHT: AtomicUsize = AtomicUsize::new(0);
static HOLD_MAX_IN_FLIGHT: AtomicUsize = AtomicUsize::new(0);

struct Holds100ms;

impl Task for Holds100ms {
    const NAME: &'static str = "test.holds_100ms";
    type Args = u32;
    type Output = u32;

    async fn run(_ctx: TaskContext, i: u32) -> Result<u32, TaskError> {
        let now = HOLD_IN_FLIGHT.fetch_add(1, Ordering::SeqCst) + 1;
        HOLD_MAX_IN_FLIGHT.fetch_max(now, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(100)).await;
        HOLD_IN_FLIGHT.fetch_sub(1, Ordering::SeqCst);
        Ok(i)
    }
}

#[tokio::test]
async fn no_more_than_concurrency_jobs_run_at_once() {
    let app = memory_app(|b| b.task::<Holds100ms>()).await;
    let handles = app
        .client()
        .enqueue_many::<Holds100ms>(0..12)
        .await
        .expect("enqueue");
    // Prefetch above the concurrency must not let more jobs run.
    let worker = start(
        &app,
        WorkerConfig {
            concurrency: 3,
            prefetch: 16,
            ..config()
        },
    );
    for (i, h) in handles.iter().enumerate() {
        let info = h.wait(SOON).await.expect("job finishes");
        assert_eq!(info.state, JobState::Succeeded, "{info:?}");
        assert_eq!(info.result_as::<u32>().expect("decode"), Some(i as u32));
    }
    assert_eq!(
        HOLD_MAX_IN_FLIGHT.load(Ordering::SeqCst),
        3,
        "at most 3 jobs at once, and 3 are reached"
    );
    let stats = worker.stop().await;
    assert_eq!(stats.started.load(Ordering::SeqCst), 12);
    assert_eq!(stats.succeeded.load(Ordering::SeqCst), 12);
}

// ---------------------------------------------------------------------------------------
// 8. Heartbeats keep a long job's lease
// ---------------------------------------------------------------------------------------

static LONG_RUNS: AtomicU32 = AtomicU32::new(0);

struct Runs3s;

impl Task for Runs3s {
    const NAME: &'static str = "test.runs_3s";
    type Args = ();
    type Output = String;

    fn options() -> TaskOptions {
        TaskOptions {
            max_attempts: 3,
            ..TaskOptions::default()
        }
    }

    async fn run(_ctx: TaskContext, _args: ()) -> Result<String, TaskError> {
        LONG_RUNS.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_secs(3)).await;
        Ok("done".to_string())
    }
}

/// A short lease, frequent heartbeats and an eager reaper.
fn short_lease_config() -> WorkerConfig {
    WorkerConfig {
        lease: Duration::from_secs(1),
        heartbeat: Duration::from_millis(250),
        reap_interval: Duration::from_millis(100),
        ..config()
    }
}

/// Waits until the active job's lease was pushed past its first expiry (claim time + 1 s).
async fn wait_for_extended_lease(handle: &JobHandle<celeriac::AnyBackend>) {
    let deadline = tokio::time::Instant::now() + SOON;
    loop {
        let info = handle.info().await.expect("info");
        if info.state == JobState::Active {
            let claimed_at = info.job.started_at.expect("started_at while active");
            let until = info.lease_until.expect("lease_until while active");
            if until > claimed_at + 1000 {
                return;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the lease was never extended while the job ran: {info:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn heartbeats_keep_the_lease_of_a_job_longer_than_the_lease() {
    let app = memory_app(|b| b.task::<Runs3s>()).await;
    let worker = start(&app, short_lease_config());

    let handle = app.client().enqueue::<Runs3s>(()).await.expect("enqueue");
    wait_for_extended_lease(&handle).await;
    let info = handle.wait(SOON).await.expect("job finishes");
    assert_eq!(info.state, JobState::Succeeded, "{info:?}");
    assert_eq!(
        info.job.attempts, 1,
        "the reaper must not requeue a heartbeating job"
    );
    assert_eq!(LONG_RUNS.load(Ordering::SeqCst), 1);

    let stats = worker.stop().await;
    assert_eq!(stats.started.load(Ordering::SeqCst), 1);
    assert_eq!(stats.stale.load(Ordering::SeqCst), 0);
    assert_eq!(stats.succeeded.load(Ordering::SeqCst), 1);
}

// ---------------------------------------------------------------------------------------
// 9. Graceful shutdown lets running jobs finish
// ---------------------------------------------------------------------------------------

static GRACEFUL_STARTED: AtomicBool = AtomicBool::new(false);
static GRACEFUL_FINISHED: AtomicBool = AtomicBool::new(false);

struct Runs500ms;

impl Task for Runs500ms {
    const NAME: &'static str = "test.runs_500ms";
    type Args = ();
    type Output = String;

    async fn run(_ctx: TaskContext, _args: ()) -> Result<String, TaskError> {
        GRACEFUL_STARTED.store(true, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(500)).await;
        GRACEFUL_FINISHED.store(true, Ordering::SeqCst);
        Ok("finished".to_string())
    }
}

#[tokio::test]
async fn graceful_shutdown_lets_a_running_job_finish() {
    let app = memory_app(|b| b.task::<Runs500ms>()).await;
    let worker = start(&app, config());

    let handle = app
        .client()
        .enqueue::<Runs500ms>(())
        .await
        .expect("enqueue");
    eventually("the job started", || {
        GRACEFUL_STARTED.load(Ordering::SeqCst)
    })
    .await;
    assert!(!GRACEFUL_FINISHED.load(Ordering::SeqCst));

    let stats = worker.stop().await;
    assert!(
        GRACEFUL_FINISHED.load(Ordering::SeqCst),
        "the job ran to its end"
    );
    let info = handle.info().await.expect("info");
    assert_eq!(info.state, JobState::Succeeded, "{info:?}");
    assert_eq!(info.job.attempts, 1);
    assert_eq!(
        info.result_as::<String>().expect("decode").as_deref(),
        Some("finished")
    );
    assert_eq!(stats.succeeded.load(Ordering::SeqCst), 1);
    assert_eq!(stats.released.load(Ordering::SeqCst), 0);
}

// ---------------------------------------------------------------------------------------
// 10. Past the grace period, running jobs are handed back
// ---------------------------------------------------------------------------------------

static GRACE_STARTED: AtomicBool = AtomicBool::new(false);
static GRACE_DROPPED: AtomicBool = AtomicBool::new(false);

struct OutlivesGrace;

impl Task for OutlivesGrace {
    const NAME: &'static str = "test.outlives_grace";
    type Args = ();
    type Output = ();

    async fn run(_ctx: TaskContext, _args: ()) -> Result<(), TaskError> {
        let _guard = SetOnDrop(&GRACE_DROPPED);
        GRACE_STARTED.store(true, Ordering::SeqCst);
        tokio::time::sleep(FOREVER).await;
        Ok(())
    }
}

#[tokio::test]
async fn past_the_grace_period_running_jobs_are_handed_back_uncounted() {
    let app = memory_app(|b| b.task::<OutlivesGrace>()).await;
    let worker = start(
        &app,
        WorkerConfig {
            grace_period: Duration::from_millis(200),
            ..config()
        },
    );

    let handle = app
        .client()
        .enqueue::<OutlivesGrace>(())
        .await
        .expect("enqueue");
    eventually("the job started", || GRACE_STARTED.load(Ordering::SeqCst)).await;
    assert_eq!(handle.state().await.expect("state"), JobState::Active);

    let stats = worker.stop().await;
    assert!(GRACE_DROPPED.load(Ordering::SeqCst), "the task was stopped");
    let info = handle.info().await.expect("info");
    assert_eq!(info.state, JobState::Pending, "{info:?}");
    assert_eq!(info.job.attempts, 0, "a handed-back attempt is not counted");
    assert_eq!(info.lease_until, None);
    assert_eq!(info.worker, None);
    assert_eq!(stats.released.load(Ordering::SeqCst), 1);
    assert_eq!(stats.finished(), 0);
    assert_eq!(stats.retried.load(Ordering::SeqCst), 0);
}

// ---------------------------------------------------------------------------------------
// 11. Progress
// ---------------------------------------------------------------------------------------

static PROGRESS_REPORTED: AtomicBool = AtomicBool::new(false);
static PROGRESS_RELEASE: AtomicBool = AtomicBool::new(false);

struct ReportsHalfway;

impl Task for ReportsHalfway {
    const NAME: &'static str = "test.reports_halfway";
    type Args = ();
    type Output = String;

    async fn run(ctx: TaskContext, _args: ()) -> Result<String, TaskError> {
        ctx.progress(0.5, Some("half".to_string()))
            .await
            .map_err(TaskError::msg)?;
        PROGRESS_REPORTED.store(true, Ordering::SeqCst);
        while !PROGRESS_RELEASE.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        Ok("all done".to_string())
    }
}

#[tokio::test]
async fn progress_reported_by_a_running_task_is_visible_through_its_handle() {
    let app = memory_app(|b| b.task::<ReportsHalfway>()).await;
    let worker = start(&app, config());

    let handle = app
        .client()
        .enqueue::<ReportsHalfway>(())
        .await
        .expect("enqueue");
    eventually("progress was reported", || {
        PROGRESS_REPORTED.load(Ordering::SeqCst)
    })
    .await;
    let info = handle.info().await.expect("info");
    assert_eq!(info.state, JobState::Active, "{info:?}");
    assert_eq!(
        info.progress,
        Some(Progress {
            fraction: 0.5,
            message: Some("half".to_string()),
        })
    );

    PROGRESS_RELEASE.store(true, Ordering::SeqCst);
    let info = handle.wait(SOON).await.expect("job finishes");
    assert_eq!(info.state, JobState::Succeeded, "{info:?}");
    assert_eq!(
        info.result_as::<String>().expect("decode").as_deref(),
        Some("all done")
    );
    worker.stop().await;
}

// ---------------------------------------------------------------------------------------
// 12. Immediate shutdown
// ---------------------------------------------------------------------------------------

static IMMEDIATE_STARTED: AtomicBool = AtomicBool::new(false);
static IMMEDIATE_DROPPED: AtomicBool = AtomicBool::new(false);

struct RunsForAnHour;

impl Task for RunsForAnHour {
    const NAME: &'static str = "test.runs_for_an_hour";
    type Args = ();
    type Output = ();

    async fn run(_ctx: TaskContext, _args: ()) -> Result<(), TaskError> {
        let _guard = SetOnDrop(&IMMEDIATE_DROPPED);
        IMMEDIATE_STARTED.store(true, Ordering::SeqCst);
        tokio::time::sleep(FOREVER).await;
        Ok(())
    }
}

#[tokio::test]
async fn immediate_shutdown_returns_at_once_and_leaves_the_lease_to_expire() {
    let app = memory_app(|b| b.task::<RunsForAnHour>()).await;
    // The default grace period (10 s in these tests) must not be waited out.
    let worker = start(&app, config());

    let handle = app
        .client()
        .enqueue::<RunsForAnHour>(())
        .await
        .expect("enqueue");
    eventually("the job started", || {
        IMMEDIATE_STARTED.load(Ordering::SeqCst)
    })
    .await;

    worker.shutdown.immediate();
    let stats = tokio::time::timeout(Duration::from_secs(5), worker.join())
        .await
        .expect("immediate() does not wait for the grace period");
    assert!(
        IMMEDIATE_DROPPED.load(Ordering::SeqCst),
        "the task was dropped"
    );

    let info = handle.info().await.expect("info");
    assert_eq!(
        info.state,
        JobState::Active,
        "nothing is acknowledged: {info:?}"
    );
    assert_eq!(info.job.attempts, 1);
    assert!(info.lease_until.is_some(), "the lease is left to expire");
    assert_eq!(stats.released.load(Ordering::SeqCst), 0);
    assert_eq!(stats.finished(), 0);
    assert_eq!(stats.retried.load(Ordering::SeqCst), 0);
}

// ---------------------------------------------------------------------------------------
// 13. CPU-heavy work in ctx.blocking
// ---------------------------------------------------------------------------------------

/// Longer than the 1 s lease, so the job only keeps its lease if heartbeats keep flowing
/// while the CPU work runs.
const BUSY_FOR: Duration = Duration::from_millis(1500);

struct BurnsCpu;

impl Task for BurnsCpu {
    const NAME: &'static str = "test.burns_cpu";
    type Args = ();
    type Output = u64;

    fn options() -> TaskOptions {
        TaskOptions {
            max_attempts: 3,
            ..TaskOptions::default()
        }
    }

    async fn run(ctx: TaskContext, _args: ()) -> Result<u64, TaskError> {
        ctx.blocking(|| {
            let start = std::time::Instant::now();
            let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
            let mut rounds = 0u64;
            while start.elapsed() < BUSY_FOR {
                for _ in 0..10_000 {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                }
                rounds += 1;
            }
            std::hint::black_box(x);
            rounds
        })
        .await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cpu_heavy_work_in_blocking_keeps_heartbeats_flowing() {
    let app = memory_app(|b| b.task::<BurnsCpu>()).await;
    let worker = start(&app, short_lease_config());

    let handle = app.client().enqueue::<BurnsCpu>(()).await.expect("enqueue");
    wait_for_extended_lease(&handle).await;
    let info = handle.wait(SOON).await.expect("job finishes");
    assert_eq!(info.state, JobState::Succeeded, "{info:?}");
    assert_eq!(info.job.attempts, 1);
    assert!(info
        .result_as::<u64>()
        .expect("decode")
        .is_some_and(|r| r > 0));

    let stats = worker.stop().await;
    assert_eq!(stats.started.load(Ordering::SeqCst), 1);
    assert_eq!(stats.stale.load(Ordering::SeqCst), 0);
    assert_eq!(stats.succeeded.load(Ordering::SeqCst), 1);
}

// ---------------------------------------------------------------------------------------
// Extra: documented behaviour the runtime does not have (see the report)
// ---------------------------------------------------------------------------------------

static TOKEN_BLOCKING_STARTED: AtomicBool = AtomicBool::new(false);
static TOKEN_SEEN_CANCELLED: AtomicBool = AtomicBool::new(false);

struct BlockingUntilCancelled;

impl Task for BlockingUntilCancelled {
    const NAME: &'static str = "test.blocking_until_cancelled";
    type Args = ();
    type Output = bool;

    async fn run(ctx: TaskContext, _args: ()) -> Result<bool, TaskError> {
        let token = ctx.cancellation_token();
        ctx.blocking(move || {
            TOKEN_BLOCKING_STARTED.store(true, Ordering::SeqCst);
            // Bounded, so a missing cancellation fails the test instead of hanging it.
            let give_up = std::time::Instant::now() + SOON + Duration::from_secs(2);
            while std::time::Instant::now() < give_up {
                if token.is_cancelled() {
                    TOKEN_SEEN_CANCELLED.store(true, Ordering::SeqCst);
                    return true;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            false
        })
        .await
    }
}

/// `TaskContext::is_cancelled` promises the token fires when "the worker is shutting down
/// past its grace period": work the worker cannot drop (a blocking section, a task spawned
/// with the token) relies on it to stop.
#[tokio::test]
async fn past_the_grace_period_the_tasks_cancellation_token_fires() {
    let app = memory_app(|b| b.task::<BlockingUntilCancelled>()).await;
    let worker = start(
        &app,
        WorkerConfig {
            grace_period: Duration::from_millis(200),
            ..config()
        },
    );
    let handle = app
        .client()
        .enqueue::<BlockingUntilCancelled>(())
        .await
        .expect("enqueue");
    eventually("the blocking section started", || {
        TOKEN_BLOCKING_STARTED.load(Ordering::SeqCst)
    })
    .await;

    let stats = worker.stop().await;
    assert_eq!(stats.released.load(Ordering::SeqCst), 1);
    assert_eq!(handle.state().await.expect("state"), JobState::Pending);
    eventually(
        "the blocking section saw its cancellation token fire after the grace period",
        || TOKEN_SEEN_CANCELLED.load(Ordering::SeqCst),
    )
    .await;
}

/// Bad intervals are configuration errors returned by `run()`, like a zero heartbeat or
/// poll interval, not a panic inside the worker's reaper task.
#[tokio::test]
async fn a_zero_reap_interval_is_a_configuration_error() {
    let app = memory_app(|b| b.task::<Echo>()).await;
    let worker = app.worker().config(WorkerConfig {
        reap_interval: Duration::ZERO,
        ..config()
    });
    let shutdown = worker.shutdown_handle();
    let outcome = tokio::time::timeout(Duration::from_secs(2), worker.run()).await;
    shutdown.immediate();
    match outcome {
        Ok(Err(e)) => assert!(e.to_string().contains("reap_interval"), "{e}"),
        Ok(Ok(())) => panic!("run() returned Ok without being shut down"),
        Err(_) => panic!(
            "run() accepted reap_interval = 0 and kept running (its reaper task panicked, \
             so this worker never reaps expired leases)"
        ),
    }
}

// ---------------------------------------------------------------------------------------
// Several queues: strict and weighted
// ---------------------------------------------------------------------------------------

static SERVED: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

/// Notes which queue each job came from, in the order they ran.
struct NoteQueue;

impl Task for NoteQueue {
    const NAME: &'static str = "test.note_queue";
    type Args = ();
    type Output = ();

    async fn run(ctx: TaskContext, _: ()) -> Result<(), TaskError> {
        if let Ok(mut v) = SERVED.lock() {
            v.push(ctx.queue().to_string());
        }
        Ok(())
    }
}

async fn serve_two_queues(high: &str, low: &str, weights: Vec<u32>) -> Vec<String> {
    let app = App::builder()
        .url("sqlite::memory:")
        .task::<NoteQueue>()
        .build()
        .await
        .expect("app");
    for q in [high, low] {
        let jobs: Vec<_> = (0..60)
            .map(|_| {
                celeriac::Enqueue::<NoteQueue>::new(())
                    .queue(q)
                    .build(app.client().now())
                    .expect("job")
            })
            .collect();
        app.client().push(jobs).await.expect("enqueue");
    }
    let running = start(
        &app,
        WorkerConfig {
            queues: vec![high.to_string(), low.to_string()],
            weights,
            concurrency: 1,
            prefetch: 1,
            ..config()
        },
    );
    let deadline = tokio::time::Instant::now() + SOON;
    loop {
        let served: Vec<String> = SERVED
            .lock()
            .map(|v| {
                v.iter()
                    .filter(|q| *q == high || *q == low)
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        if served.len() >= 120 {
            running.stop().await;
            return served;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "only {} jobs ran",
            served.len()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn strict_queues_serve_the_first_until_it_is_empty() {
    let served = serve_two_queues("strict-high", "strict-low", vec![]).await;
    assert!(
        served[..60].iter().all(|q| q == "strict-high"),
        "{served:?}"
    );
    assert!(served[60..].iter().all(|q| q == "strict-low"), "{served:?}");
}

#[tokio::test]
async fn weighted_queues_serve_both_in_proportion() {
    let served = serve_two_queues("weighted-high", "weighted-low", vec![3, 1]).await;
    let first = &served[..40];
    let high = first.iter().filter(|q| *q == "weighted-high").count();
    // 3:1 gives about 30 of the first 40 to the high queue; the low one is served too.
    assert!(high >= 20, "{high} of 40: {served:?}");
    assert!(high < 40, "the low queue must not starve: {served:?}");
}

// ---------------------------------------------------------------------------------------
// Global task limits reach the store through the worker's registry
// ---------------------------------------------------------------------------------------

static CAPPED_NOW: AtomicUsize = AtomicUsize::new(0);
static CAPPED_MAX: AtomicUsize = AtomicUsize::new(0);

/// At most one of these runs at once across all workers, whatever their concurrency.
struct OneAtATime;

impl Task for OneAtATime {
    const NAME: &'static str = "test.one_at_a_time";
    type Args = ();
    type Output = ();

    fn options() -> TaskOptions {
        TaskOptions {
            limits: celeriac::TaskLimits {
                concurrency: Some(1),
                rate: None,
            },
            ..TaskOptions::default()
        }
    }

    async fn run(_ctx: TaskContext, _: ()) -> Result<(), TaskError> {
        let now = CAPPED_NOW.fetch_add(1, Ordering::SeqCst) + 1;
        CAPPED_MAX.fetch_max(now, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(50)).await;
        CAPPED_NOW.fetch_sub(1, Ordering::SeqCst);
        Ok(())
    }
}

#[tokio::test]
async fn a_task_concurrency_cap_holds_even_with_free_slots() {
    let app = memory_app(|b| b.task::<OneAtATime>()).await;
    let handles = app
        .client()
        .enqueue_many::<OneAtATime>(vec![(); 6])
        .await
        .expect("enqueue");
    let running = start(&app, config());
    for h in &handles {
        let done = h.wait(SOON).await.expect("finishes");
        assert_eq!(done.state, JobState::Succeeded);
        assert_eq!(done.job.attempts, 1, "held-back claims use no attempt");
    }
    running.stop().await;
    assert_eq!(CAPPED_MAX.load(Ordering::SeqCst), 1, "never two at once");
}
