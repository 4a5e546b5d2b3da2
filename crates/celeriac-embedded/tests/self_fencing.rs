//! Self-fencing on the embedded store: another connection holds the SQLite write lock, so the
//! worker's heartbeats hang. The worker must give its job up anyway, on its own timer, and a
//! task that ignores its token is dropped when the lease ends, all while the lock is held.
//!
//! Every wait is bounded by a deadline; nothing depends on how fast the machine is.

use celeriac_core::{
    Client, JobState, Registry, Task, TaskContext, TaskError, Worker, WorkerConfig,
};
use celeriac_embedded::SqliteBackend;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long the other connection holds the write lock: several leases.
const LOCKED: Duration = Duration::from_secs(4);
const LEASE: Duration = Duration::from_secs(1);

static STARTED: AtomicBool = AtomicBool::new(false);
static DROPPED: AtomicBool = AtomicBool::new(false);

/// Sets [`DROPPED`] when dropped: proves a task's future was dropped.
struct SetOnDrop;

impl Drop for SetOnDrop {
    fn drop(&mut self) {
        DROPPED.store(true, Ordering::SeqCst);
    }
}

/// Its first attempt sleeps forever and never looks at its token; later attempts return.
struct Deaf;

impl Task for Deaf {
    const NAME: &'static str = "fencing.deaf";
    type Args = u32;
    type Output = u32;

    async fn run(ctx: TaskContext, n: u32) -> Result<u32, TaskError> {
        if ctx.attempt() == 1 {
            let _guard = SetOnDrop;
            STARTED.store(true, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_secs(3600)).await;
        }
        Ok(n)
    }
}

async fn until(what: &str, within: Duration, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + within;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_locked_store_makes_the_worker_drop_a_deaf_task_when_its_lease_ends() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("fencing.db");
    let backend = Arc::new(
        SqliteBackend::connect(&format!("sqlite://{}", path.display()))
            .await
            .expect("the store opens"),
    );
    let handle = Client::new(backend.clone())
        .enqueue::<Deaf>(7)
        .await
        .expect("enqueue");

    let mut registry = Registry::new();
    registry.register::<Deaf>();
    let worker = Worker::new(backend.clone(), Arc::new(registry)).config(WorkerConfig {
        concurrency: 1,
        prefetch: 1,
        lease: LEASE,
        heartbeat: Duration::from_millis(250),
        poll_interval: Duration::from_millis(20),
        worker_id: "fencing-test".into(),
        ..WorkerConfig::default()
    });
    let stats = worker.stats();
    let shutdown = worker.shutdown_handle();
    let run = tokio::spawn(worker.run());

    until("the task runs", Duration::from_secs(30), || {
        STARTED.load(Ordering::SeqCst)
    })
    .await;
    // Heartbeats keep the lease while the store answers (precondition).
    tokio::time::sleep(LEASE * 2).await;
    assert!(
        !DROPPED.load(Ordering::SeqCst),
        "dropped while the store answered"
    );
    assert_eq!(stats.fenced.load(Ordering::Relaxed), 0);

    // Another connection takes the write lock: heartbeats wait for it and never land.
    let conn = rusqlite::Connection::open(&path).expect("a second connection");
    conn.execute_batch("BEGIN EXCLUSIVE")
        .expect("the write lock");
    let locked_at = Instant::now();
    until(
        "the worker gives the job up and drops the task",
        LOCKED,
        || DROPPED.load(Ordering::SeqCst),
    )
    .await;
    assert_eq!(stats.fenced.load(Ordering::Relaxed), 1);
    eprintln!("dropped {:?} after the lock", locked_at.elapsed());
    tokio::time::sleep(LOCKED.saturating_sub(locked_at.elapsed())).await;
    conn.execute_batch("COMMIT").expect("the lock is released");

    // Once the store answers, the job runs again and succeeds.
    let info = handle
        .wait(Duration::from_secs(60))
        .await
        .expect("the job finishes");
    assert_eq!(info.state, JobState::Succeeded, "{info:?}");
    assert_eq!(info.result_as::<u32>().expect("decodes"), Some(7));
    assert_eq!(info.job.attempts, 2, "{info:?}");
    // The worker counts an outcome once the store has taken it, just after the result shows.
    until(
        "the worker counts the success",
        Duration::from_secs(10),
        || stats.succeeded.load(Ordering::Relaxed) > 0,
    )
    .await;
    assert_eq!(stats.succeeded.load(Ordering::Relaxed), 1);

    shutdown.graceful();
    tokio::time::timeout(Duration::from_secs(30), run)
        .await
        .expect("the worker stops")
        .expect("the worker task did not panic")
        .expect("the worker ran");
}
