//! `celeriac bench`: no-op jobs through a real backend — batched enqueue, processing at a
//! given concurrency, enqueue-to-start latency of an idle worker, and peak memory.

use crate::demo::percentile;
use celeriac::QueueAdmin;
use celeriac::{App, Client, Task, TaskContext, TaskError, TaskOptions, WorkerConfig};
use serde::Serialize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tokio::sync::Notify;

static LATENCIES_US: Mutex<Vec<u64>> = Mutex::new(Vec::new());
static RAN: AtomicU64 = AtomicU64::new(0);
static RAN_NOTIFY: Notify = Notify::const_new();

fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// The benchmark's task: does nothing but note when it started. Its argument is the
/// enqueue time in microseconds, so the latency is measured to the microsecond.
pub struct Noop;

impl Task for Noop {
    const NAME: &'static str = "celeriac.noop";
    type Args = u64;
    type Output = ();

    fn options() -> TaskOptions {
        TaskOptions {
            queue: "celeriac-bench".into(),
            ignore_result: true,
            ..TaskOptions::default()
        }
    }

    async fn run(_ctx: TaskContext, enqueued_us: u64) -> Result<(), TaskError> {
        let waited = now_us().saturating_sub(enqueued_us);
        if let Ok(mut v) = LATENCIES_US.lock() {
            v.push(waited);
        }
        RAN.fetch_add(1, Ordering::Release);
        RAN_NOTIFY.notify_waiters();
        Ok(())
    }
}

/// Benchmark settings.
#[derive(Debug, Clone)]
pub struct BenchConfig {
    /// Jobs to enqueue and process.
    pub jobs: u64,
    /// Jobs per enqueue call.
    pub batch: usize,
    /// Worker concurrency.
    pub concurrency: usize,
    /// Single jobs sent to an idle worker to measure start latency.
    pub latency_samples: u64,
}

/// The figures.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    /// The backend URL, its secrets masked.
    pub url: String,
    /// Jobs enqueued and processed.
    pub jobs: u64,
    /// Jobs per enqueue call.
    pub batch: usize,
    /// Worker concurrency.
    pub concurrency: usize,
    /// Enqueued jobs per second (batched).
    pub enqueue_jobs_per_sec: f64,
    /// Processed jobs per second, from a full queue.
    pub process_jobs_per_sec: f64,
    /// Median enqueue-to-start latency of an idle worker, microseconds.
    pub latency_p50_us: u64,
    /// 99th percentile enqueue-to-start latency of an idle worker, microseconds.
    pub latency_p99_us: u64,
    /// Peak resident memory of this process, KiB.
    pub peak_rss_kib: Option<u64>,
}

/// Phases of a run, for progress display.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Enqueueing the backlog.
    Enqueue,
    /// Processing the backlog.
    Process,
    /// Single jobs to an idle worker.
    Latency,
}

/// Runs the benchmark on `app`'s backend. `progress` gets (phase, done, total).
pub async fn run(
    app: &App,
    config: &BenchConfig,
    mut progress: impl FnMut(Phase, u64, u64),
) -> celeriac::Result<BenchReport> {
    let client: &Client<celeriac::AnyBackend> = app.client();
    QueueAdmin::purge(app.backend().as_ref(), &Noop::options().queue).await?;
    if let Ok(mut v) = LATENCIES_US.lock() {
        v.clear();
    }

    // 1. Batched enqueue of the whole backlog, no worker running.
    let start = Instant::now();
    let mut sent = 0u64;
    while sent < config.jobs {
        let n = (config.jobs - sent).min(config.batch as u64);
        let ts = now_us();
        client.enqueue_many::<Noop>((0..n).map(|_| ts)).await?;
        sent += n;
        progress(Phase::Enqueue, sent, config.jobs);
    }
    let enqueue_secs = start.elapsed().as_secs_f64();

    // 2. Process it.
    let base = RAN.load(Ordering::Acquire);
    let worker = app.worker().config(WorkerConfig {
        queues: vec![Noop::options().queue],
        concurrency: config.concurrency,
        prefetch: config.concurrency,
        poll_interval: Duration::from_millis(20),
        ..WorkerConfig::default()
    });
    let shutdown = worker.shutdown_handle();
    let stats = worker.stats();
    let handle = tokio::spawn(worker.run());
    let start = Instant::now();
    loop {
        let done = stats.succeeded.load(Ordering::Relaxed);
        progress(Phase::Process, done.min(config.jobs), config.jobs);
        if done >= config.jobs {
            break;
        }
        if handle.is_finished() {
            return Err(celeriac::Error::Closed);
        }
        // The clock stops at the first look after the last job: look every millisecond (the
        // timer's resolution) so the run is not rounded up to a coarser step.
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let process_secs = start.elapsed().as_secs_f64();
    debug_assert!(RAN.load(Ordering::Acquire) - base >= config.jobs);

    // 3. Latency: one job at a time into an idle queue.
    if let Ok(mut v) = LATENCIES_US.lock() {
        v.clear();
    }
    for i in 0..config.latency_samples {
        let before = RAN.load(Ordering::Acquire);
        let notified = RAN_NOTIFY.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        client.enqueue::<Noop>(now_us()).await?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while RAN.load(Ordering::Acquire) == before && Instant::now() < deadline {
            let _ = tokio::time::timeout(Duration::from_millis(50), notified.as_mut()).await;
            notified.set(RAN_NOTIFY.notified());
            notified.as_mut().enable();
        }
        progress(Phase::Latency, i + 1, config.latency_samples);
    }
    shutdown.graceful();
    let _ = handle.await;

    let mut lat = LATENCIES_US.lock().map(|v| v.clone()).unwrap_or_default();
    lat.sort_unstable();
    Ok(BenchReport {
        url: app.redacted_url(),
        jobs: config.jobs,
        batch: config.batch,
        concurrency: config.concurrency,
        enqueue_jobs_per_sec: config.jobs as f64 / enqueue_secs.max(1e-9),
        process_jobs_per_sec: config.jobs as f64 / process_secs.max(1e-9),
        latency_p50_us: percentile(&lat, 0.50),
        latency_p99_us: percentile(&lat, 0.99),
        peak_rss_kib: peak_rss_kib(),
    })
}

/// The process's peak resident set size (Linux), KiB.
pub fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|n| n.parse().ok())
}
