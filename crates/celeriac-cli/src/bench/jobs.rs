//! `celeriac bench`: no-op jobs through a real backend — batched enqueue, processing at a
//! given concurrency, enqueue-to-start latency of an idle worker, and peak memory; on Redis,
//! what each phase cost the server per job (CPU, memory, commands), and on a Redis Cluster
//! what it cost each master, the backlog spread over several queues.

use crate::bench::cluster_info::{ClusterMaster, ClusterProbe, NodeCost, NodeReadings};
use crate::bench::redis_info::{CommandCost, PhaseCost, RedisProbe, RedisReading};
use crate::demo::percentile;
use celeriac::QueueAdmin;
use celeriac::{
    App, Client, Enqueue, JobOptions, Task, TaskContext, TaskError, TaskOptions, WorkerConfig,
};
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

/// The queues of a run over `n` queues: `celeriac-bench` alone, or `celeriac-bench-0` ..
/// `celeriac-bench-{n-1}`.
pub fn bench_queues(n: usize) -> Vec<String> {
    let base = Noop::options().queue;
    if n <= 1 {
        vec![base]
    } else {
        (0..n).map(|i| format!("{base}-{i}")).collect()
    }
}

/// Jobs of a backlog of `jobs` dealt round-robin over `queues` queues that land in queue `i`.
fn jobs_in_queue(jobs: u64, queues: usize, i: usize) -> u64 {
    let n = queues.max(1) as u64;
    jobs / n + u64::from((i as u64) < jobs % n)
}

/// How long processing may go without a job succeeding before the run gives up.
const STALL: Duration = Duration::from_secs(30);

/// Benchmark settings.
#[derive(Debug, Clone)]
pub struct BenchConfig {
    /// Jobs to enqueue and process.
    pub jobs: u64,
    /// Queues the backlog is dealt over, round-robin (see [`bench_queues`]); the worker
    /// consumes them all.
    pub queues: usize,
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
    /// Queues the backlog was dealt over.
    pub queues: usize,
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
    /// Redis CPU (user and system) per job of the enqueue phase, µs (`INFO cpu`); on a
    /// Cluster, the CPU of every master together over all the jobs (and so for the other
    /// Redis figures: memory and commands added up over the masters).
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
    /// On a Redis Cluster, what each master cost: its address, the queues it serves, its CPU
    /// in each phase and per job of its queues, in slot order.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis_nodes: Option<Vec<NodeCost>>,
    /// Why the Redis figures are missing on Redis (the user may not run `INFO`, ...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis_note: Option<String>,
}

/// What reads the counters: one server, or every master of a Cluster.
enum Probe {
    One(RedisProbe),
    Cluster(ClusterProbe),
}

/// Readings of a Redis around the phases; the first failure ends them, with its note.
struct Readings {
    probe: Option<Probe>,
    note: Option<String>,
    /// The masters and their queues, once connected to a Cluster (they stay known after a
    /// failed reading).
    masters: Option<(Vec<ClusterMaster>, Vec<Vec<String>>)>,
}

/// One reading of each server read: one, or every master of a Cluster in slot order.
type Reading = Vec<RedisReading>;

impl Readings {
    async fn new(url: Option<&str>, queues: &[String]) -> Self {
        let Some(url) = url else {
            return Readings {
                probe: None,
                note: None,
                masters: None,
            };
        };
        let cluster = matches!(
            url.split(':').next(),
            Some("redis+cluster" | "rediss+cluster")
        );
        let probe = if cluster {
            ClusterProbe::connect(url, queues).await.map(Probe::Cluster)
        } else {
            RedisProbe::connect(url).await.map(Probe::One)
        };
        match probe {
            Ok(p) => Readings {
                masters: match &p {
                    Probe::Cluster(c) => {
                        Some((c.masters().cloned().collect(), c.queues_of_masters()))
                    }
                    Probe::One(_) => None,
                },
                probe: Some(p),
                note: None,
            },
            Err(note) => Readings {
                probe: None,
                note: Some(note),
                masters: None,
            },
        }
    }

    /// A reading now, or `None` once one has failed.
    async fn read(&mut self) -> Option<Reading> {
        let read = match self.probe.as_mut()? {
            Probe::One(p) => p.read().await.map(|r| vec![r]),
            Probe::Cluster(c) => c.read().await,
        };
        match read {
            Ok(r) => Some(r),
            Err(note) => {
                self.probe = None;
                self.note = Some(note);
                None
            }
        }
    }
}

/// The cost of a phase on all the servers read together, when both readings were made.
fn cost(before: &Option<Reading>, after: &Option<Reading>, jobs: u64) -> Option<PhaseCost> {
    let (before, after) = (before.as_ref()?, after.as_ref()?);
    Some(PhaseCost::between(
        &RedisReading::sum(before),
        &RedisReading::sum(after),
        jobs,
    ))
}

/// The readings of server `i` around a phase, when both were made.
fn node_pair<'a>(
    before: &'a Option<Reading>,
    after: &'a Option<Reading>,
    i: usize,
) -> Option<(&'a RedisReading, &'a RedisReading)> {
    Some((before.as_ref()?.get(i)?, after.as_ref()?.get(i)?))
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
    let queues = bench_queues(config.queues);
    for q in &queues {
        QueueAdmin::purge(app.backend().as_ref(), q).await?;
    }
    if let Ok(mut v) = LATENCIES_US.lock() {
        v.clear();
    }

    let mut readings = Readings::new(config.redis_url.as_deref(), &queues).await;
    let options = Noop::options();

    // 1. Batched enqueue of the whole backlog, no worker running.
    let enqueue_before = readings.read().await;
    let start = Instant::now();
    let mut sent = 0u64;
    while sent < config.jobs {
        let n = (config.jobs - sent).min(config.batch as u64);
        let ts = now_us();
        let now = client.now();
        let jobs = (sent..sent + n)
            .map(|i| {
                let queue = &queues[(i % queues.len() as u64) as usize];
                JobOptions {
                    queue: Some(queue.clone()),
                    ..JobOptions::default()
                }
                .build(Noop::NAME, &options, &ts, now)
            })
            .collect::<celeriac::Result<Vec<_>>>()?;
        client.push(jobs).await?;
        sent += n;
        progress(Phase::Enqueue, sent, config.jobs);
    }
    let enqueue_secs = start.elapsed().as_secs_f64();
    let enqueue_after = readings.read().await;

    // 2. Process it.
    let base = RAN.load(Ordering::Acquire);
    let worker = app.worker().config(WorkerConfig {
        queues: queues.clone(),
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
    let (mut last_done, mut last_change) = (0, Instant::now());
    loop {
        let done = stats.succeeded.load(Ordering::Relaxed);
        progress(Phase::Process, done.min(config.jobs), config.jobs);
        if done >= config.jobs {
            break;
        }
        if handle.is_finished() {
            return Err(celeriac::Error::Closed);
        }
        // A no-op job only ever succeeds: one that failed or went to the dead letters (the
        // store could not read it back, say) would never be counted, and the run never end.
        let lost = stats.failed.load(Ordering::Relaxed) + stats.dead.load(Ordering::Relaxed);
        if done != last_done {
            (last_done, last_change) = (done, Instant::now());
        }
        if lost > 0 || last_change.elapsed() > STALL {
            shutdown.graceful();
            return Err(celeriac::Error::Timeout(format!(
                "the benchmark's jobs stopped succeeding: {done} of {} succeeded, {lost} \
                 failed or dead, the last {} s ago (`celeriac dlq list` shows why)",
                config.jobs,
                last_change.elapsed().as_secs()
            )));
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
        Enqueue::<Noop>::new(now_us())
            .queue(queues[0].clone())
            .enqueue(client)
            .await?;
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
    let redis_nodes = readings.masters.as_ref().map(|(masters, owned)| {
        masters
            .iter()
            .zip(owned)
            .enumerate()
            .map(|(i, (master, own))| {
                let jobs = queues
                    .iter()
                    .enumerate()
                    .filter(|(_, q)| own.contains(q))
                    .map(|(k, _)| jobs_in_queue(config.jobs, queues.len(), k))
                    .sum();
                let r = NodeReadings {
                    enqueue: node_pair(&enqueue_before, &enqueue_after, i),
                    process: node_pair(&process_before, &process_after, i),
                };
                NodeCost::of(master, own.clone(), jobs, r)
            })
            .collect()
    });
    Ok(BenchReport {
        url: app.redacted_url(),
        jobs: config.jobs,
        batch: config.batch,
        concurrency: config.concurrency,
        queues: queues.len(),
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
        redis_nodes,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_backlog_is_dealt_round_robin_over_the_queues() {
        assert_eq!(bench_queues(1), ["celeriac-bench"]);
        assert_eq!(bench_queues(0), ["celeriac-bench"]);
        assert_eq!(
            bench_queues(3),
            ["celeriac-bench-0", "celeriac-bench-1", "celeriac-bench-2"]
        );
        let per: Vec<u64> = (0..4).map(|i| jobs_in_queue(10, 4, i)).collect();
        assert_eq!(per, [3, 3, 2, 2]);
        assert_eq!(jobs_in_queue(10, 1, 0), 10);
        let spread: u64 = (0..12).map(|i| jobs_in_queue(100_000, 12, i)).sum();
        assert_eq!(spread, 100_000);
    }
}
