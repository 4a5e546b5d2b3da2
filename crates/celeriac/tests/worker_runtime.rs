//! The worker runtime against the real embedded SQLite backend: wake-ups, panics, time
//! limits, retries, concurrency, heartbeats, shutdown (graceful, past the grace period and
//! immediate), progress and blocking sections.
//!
//! Every test has its own tasks (and their statics), its own in-memory store and its own
//! worker, so the tests can run in parallel.

use celeriac::{
    App, Clock, ErrorInfo, JobHandle, JobState, ManualClock, Progress, QueueAdmin, Shutdown,
    TaskContext, TaskError, WorkerConfig, WorkerStats,
};
use celeriac_conformance::wait_for;
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

async fn memory_app(register: impl FnOnce(celeriac::AppBuilder) -> celeriac::AppBuilder) -> App {
    register(App::builder().url("sqlite::memory:"))
        .build()
        .await
        .expect("in-memory app")
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
#[celeriac::task(name = "test.echo")]
async fn echo(text: String) -> String {
    text
}

// ---------------------------------------------------------------------------------------
// 1. In-process wake-up without polling
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn idle_worker_is_woken_by_an_enqueue_in_the_same_process() {
    let app = memory_app(|b| b.task::<echo::Task>()).await;
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

    let handle = echo::enqueue(&app, "wake up".to_string())
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

// A small, deterministic backoff (10 ms, no jitter) so the retry comes quickly.
#[celeriac::task(
    name = "test.panics_once",
    retries = 2,
    backoff = "10ms",
    backoff_max = "10ms",
    no_jitter
)]
async fn panics_once(ctx: &TaskContext) -> String {
    if ctx.attempt() == 1 {
        panic!("deliberate panic on the first attempt");
    }
    format!("recovered on attempt {}", ctx.attempt())
}

#[tokio::test]
async fn a_panicking_task_is_a_failed_attempt_and_the_worker_keeps_going() {
    let app = memory_app(|b| b.task::<panics_once::Task>().task::<echo::Task>()).await;
    let worker = start(&app, config());

    let handle = panics_once::enqueue(&app).await.expect("enqueue");
    let info = handle.wait(SOON).await.expect("job finishes");
    assert_eq!(info.state, JobState::Succeeded, "{info:?}");
    assert_eq!(info.job.attempts, 2);
    assert_eq!(
        info.result_as::<String>().expect("decode").as_deref(),
        Some("recovered on attempt 2")
    );
    assert_eq!(worker.stats.retried.load(Ordering::SeqCst), 1);

    // The worker survived the panic and still runs jobs.
    let next = echo::enqueue(&app, "still alive".to_string())
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

#[celeriac::task(
    name = "test.sleeps_past_hard_limit",
    retries = 0,
    time_limit = "200ms"
)]
async fn sleeps_past_hard_limit() {
    let _guard = SetOnDrop(&HARD_FOREVER_DROPPED);
    tokio::time::sleep(FOREVER).await;
}

#[tokio::test]
async fn hard_time_limit_on_the_last_attempt_dead_letters_the_job() {
    let app = memory_app(|b| b.task::<sleeps_past_hard_limit::Task>()).await;
    let worker = start(&app, config());

    let handle = sleeps_past_hard_limit::enqueue(&app)
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

#[celeriac::task(
    name = "test.sleeps_only_on_first_attempt",
    retries = 1,
    time_limit = "200ms",
    backoff = "10ms",
    backoff_max = "10ms",
    no_jitter
)]
async fn sleeps_only_on_first_attempt(ctx: &TaskContext) -> u32 {
    if ctx.attempt() == 1 {
        tokio::time::sleep(FOREVER).await;
    }
    ctx.attempt()
}

#[tokio::test]
async fn hard_time_limit_with_attempts_left_is_retried() {
    let app = memory_app(|b| b.task::<sleeps_only_on_first_attempt::Task>()).await;
    let worker = start(&app, config());

    let handle = sleeps_only_on_first_attempt::enqueue(&app)
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

// A soft limit and no hard one.
#[celeriac::task(name = "test.stops_when_asked", retries = 0, soft_time_limit = "100ms")]
async fn stops_when_asked(ctx: &TaskContext) -> Result<String, TaskError> {
    if ctx.is_cancelled() {
        return Err(TaskError::fatal(
            "cancelled before the soft limit could pass",
        ));
    }
    ctx.cancelled().await;
    Ok("stopped politely".to_string())
}

#[tokio::test]
async fn soft_time_limit_cancels_the_token_and_the_task_returns_normally() {
    let app = memory_app(|b| b.task::<stops_when_asked::Task>()).await;
    let worker = start(&app, config());

    let handle = stops_when_asked::enqueue(&app).await.expect("enqueue");
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

#[celeriac::task(name = "test.retries_after_300ms")]
async fn retries_after_300ms(ctx: &TaskContext) -> Result<u32, TaskError> {
    RETRY_AFTER_RUNS.fetch_add(1, Ordering::SeqCst);
    if ctx.attempt() == 1 {
        return Err(TaskError::retry_after(
            Duration::from_millis(300),
            "not yet",
        ));
    }
    Ok(ctx.attempt())
}

#[tokio::test]
async fn retry_after_schedules_the_next_attempt_exactly_that_much_later() {
    const T0: i64 = 1_700_000_000_000;
    let clock = ManualClock::new(T0);
    let app = App::builder()
        .url("sqlite::memory:")
        .clock(Arc::new(clock.clone()))
        .task::<retries_after_300ms::Task>()
        .build()
        .await
        .expect("app");
    let worker = start(&app, config());

    let handle = retries_after_300ms::enqueue(&app).await.expect("enqueue");
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

#[celeriac::task(name = "test.fails_fatally")]
async fn fails_fatally() -> Result<(), TaskError> {
    Err(TaskError::fatal("bad input, retrying cannot help"))
}

#[tokio::test]
async fn a_fatal_error_fails_the_job_at_once_without_dead_lettering_it() {
    let app = memory_app(|b| b.task::<fails_fatally::Task>()).await;
    let worker = start(&app, config());

    let handle = fails_fatally::enqueue(&app).await.expect("enqueue");
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

#[tokio::test]
async fn a_result_over_max_result_bytes_fails_the_job_instead_of_being_stored() {
    let bounds = celeriac::Bounds {
        max_result_bytes: 64,
        ..celeriac::Bounds::default()
    };
    let app = memory_app(|b| b.task::<echo::Task>().bounds(bounds)).await;
    let worker = start(&app, config());

    // Under the bound: stored as usual (so the bound, not the result path, decides below).
    let small = echo::enqueue(&app, "ok".to_string())
        .await
        .expect("enqueue");
    let info = small.wait(SOON).await.expect("job finishes");
    assert_eq!(info.state, JobState::Succeeded, "{info:?}");
    assert_eq!(
        info.result_as::<String>().expect("decode").as_deref(),
        Some("ok")
    );

    let big = echo::enqueue(&app, "x".repeat(1000))
        .await
        .expect("enqueue");
    let info = big.wait(SOON).await.expect("job finishes");
    assert_eq!(info.state, JobState::Failed, "{info:?}");
    assert_eq!(info.job.attempts, 1, "not retried: {info:?}");
    assert!(info.result.is_none(), "nothing stored: {info:?}");
    let error = info.error.expect("the reason");
    assert_eq!(error.kind, "result_too_large");
    assert!(
        error.message.contains("max_result_bytes (64)") && error.message.contains("test.echo"),
        "{}",
        error.message
    );

    let stats = worker.stop().await;
    assert_eq!(stats.succeeded.load(Ordering::SeqCst), 1);
    assert_eq!(stats.failed.load(Ordering::SeqCst), 1);
    assert_eq!(stats.retried.load(Ordering::SeqCst), 0);
}

// ---------------------------------------------------------------------------------------
// 7. Concurrency limit
// ---------------------------------------------------------------------------------------

static HOLD_IN_FLIGHT: AtomicUsize = AtomicUsize::new(0);
static HOLD_MAX_IN_FLIGHT: AtomicUsize = AtomicUsize::new(0);

#[celeriac::task(name = "test.holds_100ms")]
async fn holds_100ms(i: u32) -> u32 {
    let now = HOLD_IN_FLIGHT.fetch_add(1, Ordering::SeqCst) + 1;
    HOLD_MAX_IN_FLIGHT.fetch_max(now, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(100)).await;
    HOLD_IN_FLIGHT.fetch_sub(1, Ordering::SeqCst);
    i
}

#[tokio::test]
async fn no_more_than_concurrency_jobs_run_at_once() {
    let app = memory_app(|b| b.task::<holds_100ms::Task>()).await;
    let handles = holds_100ms::enqueue_many(&app, 0..12)
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

#[celeriac::task(name = "test.runs_3s", retries = 2)]
async fn runs_3s() -> String {
    LONG_RUNS.fetch_add(1, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(3)).await;
    "done".to_string()
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
    let app = memory_app(|b| b.task::<runs_3s::Task>()).await;
    let worker = start(&app, short_lease_config());

    let handle = runs_3s::enqueue(&app).await.expect("enqueue");
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

#[celeriac::task(name = "test.runs_500ms")]
async fn runs_500ms() -> String {
    GRACEFUL_STARTED.store(true, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(500)).await;
    GRACEFUL_FINISHED.store(true, Ordering::SeqCst);
    "finished".to_string()
}

#[tokio::test]
async fn graceful_shutdown_lets_a_running_job_finish() {
    let app = memory_app(|b| b.task::<runs_500ms::Task>()).await;
    let worker = start(&app, config());

    let handle = runs_500ms::enqueue(&app).await.expect("enqueue");
    wait_for("the job to start", || async {
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

#[celeriac::task(name = "test.outlives_grace")]
async fn outlives_grace() {
    let _guard = SetOnDrop(&GRACE_DROPPED);
    GRACE_STARTED.store(true, Ordering::SeqCst);
    tokio::time::sleep(FOREVER).await;
}

#[tokio::test]
async fn past_the_grace_period_running_jobs_are_handed_back_uncounted() {
    let app = memory_app(|b| b.task::<outlives_grace::Task>()).await;
    let worker = start(
        &app,
        WorkerConfig {
            grace_period: Duration::from_millis(200),
            ..config()
        },
    );

    let handle = outlives_grace::enqueue(&app).await.expect("enqueue");
    wait_for("the job to start", || async {
        GRACE_STARTED.load(Ordering::SeqCst)
    })
    .await;
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

#[celeriac::task(name = "test.reports_halfway")]
async fn reports_halfway(ctx: &TaskContext) -> Result<String, TaskError> {
    ctx.progress(0.5, Some("half".to_string()))
        .await
        .map_err(TaskError::msg)?;
    PROGRESS_REPORTED.store(true, Ordering::SeqCst);
    while !PROGRESS_RELEASE.load(Ordering::SeqCst) {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok("all done".to_string())
}

#[tokio::test]
async fn progress_reported_by_a_running_task_is_visible_through_its_handle() {
    let app = memory_app(|b| b.task::<reports_halfway::Task>()).await;
    let worker = start(&app, config());

    let handle = reports_halfway::enqueue(&app).await.expect("enqueue");
    wait_for("progress to be reported", || async {
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

#[celeriac::task(name = "test.runs_for_an_hour")]
async fn runs_for_an_hour() {
    let _guard = SetOnDrop(&IMMEDIATE_DROPPED);
    IMMEDIATE_STARTED.store(true, Ordering::SeqCst);
    tokio::time::sleep(FOREVER).await;
}

#[tokio::test]
async fn immediate_shutdown_returns_at_once_and_leaves_the_lease_to_expire() {
    let app = memory_app(|b| b.task::<runs_for_an_hour::Task>()).await;
    // The default grace period (10 s in these tests) must not be waited out.
    let worker = start(&app, config());

    let handle = runs_for_an_hour::enqueue(&app).await.expect("enqueue");
    wait_for("the job to start", || async {
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

#[celeriac::task(name = "test.burns_cpu", retries = 2)]
async fn burns_cpu(ctx: &TaskContext) -> Result<u64, TaskError> {
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cpu_heavy_work_in_blocking_keeps_heartbeats_flowing() {
    let app = memory_app(|b| b.task::<burns_cpu::Task>()).await;
    let worker = start(&app, short_lease_config());

    let handle = burns_cpu::enqueue(&app).await.expect("enqueue");
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

#[celeriac::task(name = "test.blocking_until_cancelled")]
async fn blocking_until_cancelled(ctx: &TaskContext) -> Result<bool, TaskError> {
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

/// `TaskContext::is_cancelled` promises the token fires when "the worker is shutting down
/// past its grace period": work the worker cannot drop (a blocking section, a task spawned
/// with the token) relies on it to stop.
#[tokio::test]
async fn past_the_grace_period_the_tasks_cancellation_token_fires() {
    let app = memory_app(|b| b.task::<blocking_until_cancelled::Task>()).await;
    let worker = start(
        &app,
        WorkerConfig {
            grace_period: Duration::from_millis(200),
            ..config()
        },
    );
    let handle = blocking_until_cancelled::enqueue(&app)
        .await
        .expect("enqueue");
    wait_for("the blocking section to start", || async {
        TOKEN_BLOCKING_STARTED.load(Ordering::SeqCst)
    })
    .await;

    let stats = worker.stop().await;
    assert_eq!(stats.released.load(Ordering::SeqCst), 1);
    assert_eq!(handle.state().await.expect("state"), JobState::Pending);
    wait_for(
        "the blocking section to see its cancellation token fire after the grace period",
        || async { TOKEN_SEEN_CANCELLED.load(Ordering::SeqCst) },
    )
    .await;
}

/// Bad intervals are configuration errors returned by `run()`, like a zero heartbeat or
/// poll interval, not a panic inside the worker's reaper task.
#[tokio::test]
async fn a_zero_reap_interval_is_a_configuration_error() {
    let app = memory_app(|b| b.task::<echo::Task>()).await;
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
#[celeriac::task(name = "test.note_queue")]
async fn note_queue(ctx: &TaskContext) {
    if let Ok(mut v) = SERVED.lock() {
        v.push(ctx.queue().to_string());
    }
}

async fn serve_two_queues(high: &str, low: &str, weights: Vec<u32>) -> Vec<String> {
    let app = App::builder()
        .url("sqlite::memory:")
        .task::<note_queue::Task>()
        .build()
        .await
        .expect("app");
    for q in [high, low] {
        let jobs: Vec<_> = (0..60)
            .map(|_| {
                note_queue::with()
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
#[celeriac::task(name = "test.one_at_a_time", concurrency_limit = 1)]
async fn one_at_a_time() {
    let now = CAPPED_NOW.fetch_add(1, Ordering::SeqCst) + 1;
    CAPPED_MAX.fetch_max(now, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(50)).await;
    CAPPED_NOW.fetch_sub(1, Ordering::SeqCst);
}

#[tokio::test]
async fn a_task_concurrency_cap_holds_even_with_free_slots() {
    let app = memory_app(|b| b.task::<one_at_a_time::Task>()).await;
    let handles = one_at_a_time::enqueue_many(&app, vec![(); 6])
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
