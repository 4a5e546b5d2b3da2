//! `celeriac bench`: no-op jobs through a real backend — batched enqueue, processing at a
//! given concurrency, enqueue-to-start latency of an idle worker, and peak memory; on Redis,
//! what each phase cost the server per job (CPU, memory, commands).

use crate::bench::redis_info::{CommandCost, PhaseCost, RedisProbe, RedisReading};
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
    /// The backend's Redis URL, to read the server's counters (`INFO`) just before and just
    /// after the enqueue and the processing phases; `None` measures no Redis figures.
    pub redis_url: Option<String>,
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
    /// Redis CPU (user and system) per job of the enqueue phase, µs (`INFO cpu`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis_cpu_us_per_job_enqueue: Option<f64>,
    /// Redis CPU per job of the processing phase (claim, run, complete), µs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis_cpu_us_per_job_process: Option<f64>,
    /// Redis `used_memory` with the whole backlog queued minus before the enqueue, per job,
    /// bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis_bytes_per_queued_job: Option<f64>,
    /// The commands Redis ran in the enqueue phase (`INFO commandstats`), costliest first.
    /// A script's (or a transaction's) commands are counted in its `evalsha` (`exec`) line
    /// and again on their own.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis_commandstats_enqueue: Option<Vec<CommandCost>>,
    /// The commands Redis ran in the processing phase, costliest first.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis_commandstats_process: Option<Vec<CommandCost>>,
    /// Why the Redis figures are missing on Redis (the user may not run `INFO`, ...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis_note: Option<String>,
}

/// Readings of a Redis around the phases; the first failure ends them, with its note.
struct Readings {
    probe: Option<RedisProbe>,
    note: Option<String>,
}

impl Readings {
    async fn new(url: Option<&str>) -> Self {
        match url {
            None => Readings {
                probe: None,
                note: None,
            },
            Some(url) => match RedisProbe::connect(url).await {
                Ok(p) => Readings {
                    probe: Some(p),
                    note: None,
                },
                Err(note) => Readings {
                    probe: None,
                    note: Some(note),
                },
            },
        }
    }

    /// A reading now, or `None` once one has failed.
    async fn read(&mut self) -> Option<RedisReading> {
        let probe = self.probe.as_mut()?;
        match probe.read().await {
            Ok(r) => Some(r),
            Err(note) => {
                self.probe = None;
                self.note = Some(note);
                None
            }
        }
    }
}

/// The cost of a phase, when both readings were made.
fn cost(
    before: &Option<RedisReading>,
    after: &Option<RedisReading>,
    jobs: u64,
) -> Option<PhaseCost> {
    Some(PhaseCost::between(before.as_ref()?, after.as_ref()?, jobs))
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

    let mut readings = Readings::new(config.redis_url.as_deref()).await;

    // 1. Batched enqueue of the whole backlog, no worker running.
    let enqueue_before = readings.read().await;
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
    let enqueue_after = readings.read().await;

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
    let process_before = readings.read().await;
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
    let process_after = readings.read().await;
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
    let enqueue_cost = cost(&enqueue_before, &enqueue_after, config.jobs);
    let process_cost = cost(&process_before, &process_after, config.jobs);
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
        redis_cpu_us_per_job_enqueue: enqueue_cost.as_ref().map(|c| c.cpu_us_per_job),
        redis_cpu_us_per_job_process: process_cost.as_ref().map(|c| c.cpu_us_per_job),
        redis_bytes_per_queued_job: enqueue_cost.as_ref().and_then(|c| c.bytes_per_job),
        redis_commandstats_enqueue: enqueue_cost.map(|c| c.commands),
        redis_commandstats_process: process_cost.map(|c| c.commands),
        redis_note: readings.note,
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
