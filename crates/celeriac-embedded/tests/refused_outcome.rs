//! An outcome the store refuses for good ends its job as failed with the store's reason, and
//! the worker goes on: the other completions of its batch are recorded and new jobs run.
//!
//! The refusal is real: a trigger on the SQLite file makes the store reject results above a
//! size, as a store with a size limit would, with its own message. Every wait is bounded by a
//! generous timeout; nothing depends on how fast the machine is.

use celeriac_core::{
    Client, JobHandle, JobState, Registry, Task, TaskContext, TaskError, Worker, WorkerConfig,
};
use celeriac_embedded::SqliteBackend;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

/// Results above this many bytes are refused by the store.
const LIMIT: usize = 1024;
/// Generous bound for one job to finish.
const SOON: Duration = Duration::from_secs(30);

/// Returns a string of `n` bytes.
struct Produce;

impl Task for Produce {
    const NAME: &'static str = "refusal.produce";
    type Args = usize;
    type Output = String;

    async fn run(_ctx: TaskContext, n: usize) -> Result<String, TaskError> {
        Ok("x".repeat(n))
    }
}

/// Waits for a job to finish and returns what the store knows about it.
async fn finished(handle: &JobHandle<SqliteBackend>) -> celeriac_core::JobInfo {
    handle
        .wait(SOON)
        .await
        .unwrap_or_else(|e| panic!("job {} did not finish: {e}", handle.id()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_result_the_store_refuses_ends_its_job_failed_and_the_worker_goes_on() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("refusal.db");
    let backend = Arc::new(
        SqliteBackend::connect(&format!("sqlite://{}", path.display()))
            .await
            .expect("the store opens"),
    );
    let conn = rusqlite::Connection::open(&path).expect("a second connection to the file");
    conn.execute_batch(&format!(
        "CREATE TRIGGER refuse_large_results BEFORE UPDATE OF result ON celeriac_jobs \
         WHEN length(NEW.result) > {LIMIT} \
         BEGIN SELECT RAISE(ABORT, 'result larger than {LIMIT} bytes'); END;"
    ))
    .expect("the trigger");

    let client = Client::new(backend.clone());
    // One oversized result among small ones, claimed together so that their completions can
    // share a batch.
    let mut sizes: Vec<usize> = (1..=11).collect();
    sizes.insert(5, LIMIT * 4);
    let handles = client
        .enqueue_many::<Produce>(sizes.clone())
        .await
        .expect("enqueue");

    let mut registry = Registry::new();
    registry.register::<Produce>();
    let worker = Worker::new(backend.clone(), Arc::new(registry)).config(WorkerConfig {
        concurrency: 4,
        prefetch: 4,
        poll_interval: Duration::from_millis(20),
        worker_id: "refusal-test".into(),
        ..WorkerConfig::default()
    });
    let stats = worker.stats();
    let shutdown = worker.shutdown_handle();
    let run = tokio::spawn(worker.run());

    for (handle, &n) in handles.iter().zip(&sizes) {
        let info = finished(handle).await;
        if n > LIMIT {
            assert_eq!(info.state, JobState::Failed, "the refused job: {info:?}");
            let error = info.error.as_ref().expect("the failure has a reason");
            assert_eq!(error.kind, "outcome_refused", "{error:?}");
            assert!(
                error
                    .message
                    .contains(&format!("result larger than {LIMIT} bytes"))
                    && error.message.contains("result"),
                "the reason should carry the store's own words: {error:?}"
            );
            assert_eq!(error.attempt, 1, "{error:?}");
            assert_eq!(info.job.attempts, 1, "not run again: {info:?}");
            assert!(info.result.is_none(), "no result is kept: {info:?}");
        } else {
            assert_eq!(info.state, JobState::Succeeded, "size {n}: {info:?}");
            let out: Option<String> = info.result_as().expect("the result decodes");
            assert_eq!(out.map(|s| s.len()), Some(n), "size {n}");
        }
    }

    // The worker keeps claiming, running and recording.
    let later = client
        .enqueue_many::<Produce>(vec![7, 8, 9])
        .await
        .expect("enqueue more");
    for handle in &later {
        let info = finished(handle).await;
        assert_eq!(info.state, JobState::Succeeded, "{info:?}");
    }

    // The worker counts an outcome once the store has taken it, just after the result shows.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while stats.succeeded.load(Ordering::Relaxed) < 14 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(stats.failed.load(Ordering::Relaxed), 1);
    assert_eq!(stats.succeeded.load(Ordering::Relaxed), 14);
    assert_eq!(stats.stale.load(Ordering::Relaxed), 0);
    shutdown.graceful();
    tokio::time::timeout(SOON, run)
        .await
        .expect("the worker stops")
        .expect("the worker task did not panic")
        .expect("the worker ran");
}
