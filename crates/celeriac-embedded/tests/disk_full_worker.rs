//! A worker on a disk that fills up while its jobs run: acknowledgements fail while the disk
//! is full, and once space returns every job ends succeeded, run once, with its result.
//!
//! The fault is real (a filled tmpfs, see `fault_env`; needs root). Waits poll against
//! generous deadlines; nothing depends on how fast the machine is.

mod fault_env;

use celeriac_core::{
    Broker, Client, ErrorKind, Job, JobState, QueueAdmin, Registry, Task, TaskContext, TaskError,
    Worker, WorkerConfig,
};
use celeriac_embedded::SqliteBackend;
use fault_env::Tmpfs;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

const JOBS: usize = 40;
/// Generous bound for anything the test waits for.
const SOON: Duration = Duration::from_secs(60);

/// Runs of each job, by argument.
static RUNS: [AtomicU32; JOBS] = [const { AtomicU32::new(0) }; JOBS];
/// Set while the disk is full.
static FULL: AtomicBool = AtomicBool::new(false);
/// Jobs that finished running while the disk was full.
static FINISHED_WHILE_FULL: AtomicUsize = AtomicUsize::new(0);

/// Doubles its argument after a short while, counting its runs.
struct Double;

impl Task for Double {
    const NAME: &'static str = "faults.double";
    type Args = usize;
    type Output = usize;

    async fn run(_ctx: TaskContext, n: usize) -> Result<usize, TaskError> {
        RUNS[n].fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(50)).await;
        if FULL.load(Ordering::SeqCst) {
            FINISHED_WHILE_FULL.fetch_add(1, Ordering::SeqCst);
        }
        Ok(n * 2)
    }
}

/// Polls `done` every 20 ms until it holds, or panics after [`SOON`] naming `what`.
async fn until(what: &str, done: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + SOON;
    while !done() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_recovers_once_the_disk_has_space_again_and_runs_every_job_once() {
    let fs = Tmpfs::mount(32 * 1024 * 1024);
    let db = fs.path().join("w.db");
    let backend = Arc::new(
        SqliteBackend::connect(&format!("sqlite://{}", db.display()))
            .await
            .expect("the backend opens"),
    );
    let client = Client::new(backend.clone());
    let handles = client
        .enqueue_many::<Double>((0..JOBS).collect::<Vec<_>>())
        .await
        .expect("enqueue");

    let mut registry = Registry::new();
    registry.register::<Double>();
    let worker = Worker::new(backend.clone(), Arc::new(registry)).config(WorkerConfig {
        concurrency: 4,
        prefetch: 4,
        poll_interval: Duration::from_millis(20),
        worker_id: "disk-full-test".into(),
        ..WorkerConfig::default()
    });
    let stats = worker.stats();
    let shutdown = worker.shutdown_handle();
    let run = tokio::spawn(worker.run());

    until("the first jobs to succeed", || {
        stats.succeeded.load(Ordering::SeqCst) >= 4
    })
    .await;
    let filler = fs.fill(0);
    FULL.store(true, Ordering::SeqCst);
    // The fault is real: the store refuses writes now.
    let probe = backend
        .enqueue(vec![Job::new("faults.probe", b"[]".to_vec(), 0)], 0)
        .await
        .expect_err("an enqueue on the full disk fails");
    assert!(
        probe.to_string().contains("the disk is full") && probe.kind() == ErrorKind::Retry,
        "{probe}"
    );
    let recorded = stats.succeeded.load(Ordering::SeqCst);
    until("jobs to finish while the disk is full", || {
        FINISHED_WHILE_FULL.load(Ordering::SeqCst) >= 2
    })
    .await;
    assert_eq!(
        stats.succeeded.load(Ordering::SeqCst),
        recorded,
        "no acknowledgement can be stored while the disk is full"
    );
    assert!(
        recorded < JOBS as u64,
        "jobs were left when the disk filled"
    );

    filler.remove();
    FULL.store(false, Ordering::SeqCst);
    for (n, handle) in handles.iter().enumerate() {
        let info = handle
            .wait(SOON)
            .await
            .unwrap_or_else(|e| panic!("job {n} did not finish: {e}"));
        assert_eq!(info.state, JobState::Succeeded, "job {n}: {info:?}");
        assert_eq!(info.job.attempts, 1, "job {n} ran in one attempt: {info:?}");
        let out: Option<usize> = info.result_as().expect("the result decodes");
        assert_eq!(out, Some(n * 2), "job {n}");
        assert_eq!(RUNS[n].load(Ordering::SeqCst), 1, "job {n} ran once");
    }
    // The worker counts an outcome once the store has taken it, just after the result shows.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while stats.succeeded.load(Ordering::SeqCst) < JOBS as u64
        && std::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(stats.succeeded.load(Ordering::SeqCst), JOBS as u64);
    assert_eq!(stats.stale.load(Ordering::SeqCst), 0);
    assert_eq!(stats.failed.load(Ordering::SeqCst), 0);
    assert!(
        backend.stats().await.is_ok(),
        "the backend answers after the fault"
    );
    shutdown.graceful();
    tokio::time::timeout(SOON, run)
        .await
        .expect("the worker stops")
        .expect("the worker task joins")
        .expect("the worker ends cleanly");
}
