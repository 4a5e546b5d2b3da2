//! What the Redis fault tests share: waiting for a worker's acknowledgements and for jobs to
//! succeed while the store recovers, the worker's counters for failure messages, and
//! connecting (or failing to) within a bounded time.

#![allow(dead_code)]

use celeriac::{App, JobId, JobState, ResultStore, Task, WorkerConfig, WorkerStats};
use celeriac_redis::RedisBackend;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The worker's counters, for failure messages.
pub fn counters(stats: &WorkerStats) -> String {
    let n = |c: &AtomicU64| c.load(Ordering::Relaxed);
    format!(
        "worker: started={} succeeded={} retried={} dead={} stale={}",
        n(&stats.started),
        n(&stats.succeeded),
        n(&stats.retried),
        n(&stats.dead),
        n(&stats.stale)
    )
}

/// Waits until the worker has acknowledged `n` successes.
pub async fn wait_for_acks(stats: &WorkerStats, n: u64, within: Duration) {
    let deadline = Instant::now() + within;
    while stats.succeeded.load(Ordering::Relaxed) < n {
        assert!(
            Instant::now() < deadline,
            "the worker acknowledged only {} of {n} jobs in time; {}",
            stats.succeeded.load(Ordering::Relaxed),
            counters(stats)
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Waits until every job of `ids` is Succeeded in the store; store errors while it recovers,
/// and jobs not found yet, are tried again until `within` runs out.
pub async fn wait_until_succeeded(app: &App, ids: &[JobId], within: Duration, stats: &WorkerStats) {
    let deadline = Instant::now() + within;
    let mut pending: Vec<JobId> = ids.to_vec();
    let mut last = String::new();
    while !pending.is_empty() {
        let mut still = Vec::new();
        for id in &pending {
            match app.backend().get(*id).await {
                Ok(Some(info)) if info.state == JobState::Succeeded => {}
                Ok(Some(info)) => {
                    last = format!("{id}: {} (attempts {})", info.state, info.job.attempts);
                    still.push(*id);
                }
                Ok(None) => {
                    last = format!("{id}: not in the store");
                    still.push(*id);
                }
                Err(e) => {
                    last = format!("{id}: {e}");
                    still.push(*id);
                }
            }
        }
        pending = still;
        if pending.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {} jobs did not succeed in time; e.g. {last}; {}",
            pending.len(),
            ids.len(),
            counters(stats)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Connecting to `url` must fail (not hang, not panic); returns the error's message.
pub async fn connect_error(url: &str) -> String {
    match tokio::time::timeout(Duration::from_secs(30), RedisBackend::connect(url)).await {
        Ok(Ok(backend)) => panic!("connecting to {url} should fail, got {backend:?}"),
        Ok(Err(e)) => {
            eprintln!("{url}: {e}");
            e.to_string()
        }
        Err(_) => panic!("connecting to {url} neither failed nor succeeded within 30 s"),
    }
}

/// Connecting to `url` must succeed.
pub async fn connects(url: &str) {
    match tokio::time::timeout(Duration::from_secs(30), RedisBackend::connect(url)).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => panic!("connecting to {url} failed: {e}"),
        Err(_) => panic!("connecting to {url} did not finish within 30 s"),
    }
}

/// Enqueues one job of `T` (argument 42) on `app`, runs a worker with `config` until it
/// finishes, and checks it succeeded with 42 as its result.
pub async fn round_trip_with<T: Task<Args = u32, Output = u32>>(app: &App, config: WorkerConfig) {
    let worker = app.worker().config(config);
    let shutdown = worker.shutdown_handle();
    let run = tokio::spawn(worker.run());
    let handle = app.client().enqueue::<T>(42).await.expect("enqueue");
    let info = handle
        .wait(Duration::from_secs(30))
        .await
        .expect("the job finishes");
    assert_eq!(info.state, JobState::Succeeded, "{info:?}");
    assert_eq!(info.result_as::<u32>().expect("result decodes"), Some(42));
    shutdown.graceful();
    run.await.expect("worker task").expect("worker ran");
}
