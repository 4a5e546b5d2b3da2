//! `celeriac bench cache`: L1 hits against raw moka, L2 hits against `redis-benchmark`, and a
//! stampede of several processes on one cold key.

use celeriac::backend::KvStore;
use celeriac::cache::Cache;
use celeriac::clock::StoreClock;
use celeriac::{AnyBackend, Error, Result};
use celeriac_core::redact::RedactedUrl;
use serde::Serialize;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What to measure. Its `Debug` output masks the URL's secrets.
#[derive(Clone)]
pub struct CacheBenchConfig {
    /// L1 gets, and L2 gets.
    pub gets: u64,
    /// Concurrent readers in the L2 phase.
    pub concurrency: usize,
    /// Distinct keys read.
    pub keys: u64,
    /// Processes in the stampede.
    pub processes: usize,
    /// Concurrent gets of the cold key in each process.
    pub stampede_gets: usize,
    /// This program, to start the stampede's processes.
    pub exe: PathBuf,
    /// The store's URL, for the stampede's processes.
    pub url: String,
}

impl std::fmt::Debug for CacheBenchConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CacheBenchConfig")
            .field("gets", &self.gets)
            .field("concurrency", &self.concurrency)
            .field("keys", &self.keys)
            .field("processes", &self.processes)
            .field("stampede_gets", &self.stampede_gets)
            .field("exe", &self.exe)
            .field("url", &RedactedUrl(&self.url))
            .finish()
    }
}

/// The figures.
#[derive(Debug, Clone, Serialize)]
pub struct CacheBenchReport {
    /// L1 hits per second through the cache.
    pub l1_hits_per_s: f64,
    /// Gets per second on a raw moka cache with the same settings.
    pub moka_gets_per_s: f64,
    /// The first over the second.
    pub l1_ratio: f64,
    /// L2 hits per second at the configured concurrency (the L1 off).
    pub l2_hits_per_s: f64,
    /// `redis-benchmark` GETs per second at the same concurrency (Redis only, when the tool
    /// is installed).
    pub redis_benchmark_gets_per_s: Option<f64>,
    /// The L2 figure over the `redis-benchmark` one.
    pub l2_ratio: Option<f64>,
    /// Processes in the stampede.
    pub stampede_processes: usize,
    /// Concurrent gets of the cold key in each.
    pub stampede_gets: usize,
    /// Loader calls the stampede caused, across all the processes (1 is right).
    pub stampede_loader_calls: i64,
    /// Stampede processes that found the load lock held by another process and waited for
    /// its value (all but the loader's, when the processes really contended).
    pub stampede_processes_waited: usize,
}

fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 {
        a / b
    } else {
        0.0
    }
}

/// The benchmark measures a store, not the cache's outage handling: a slow answer on a busy
/// machine is waited for rather than failed.
const BENCH_L2_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs every phase on `backend`.
pub async fn run(backend: Arc<AnyBackend>, cfg: &CacheBenchConfig) -> Result<CacheBenchReport> {
    let ns = format!("bench-{}", uuid_suffix());
    // L1: one reader, every key warm.
    let cache: Cache<u64, u64, AnyBackend> = Cache::builder(ns.as_str())
        .ttl(Duration::from_secs(3600))
        .l2_timeout(BENCH_L2_TIMEOUT)
        .early_refresh(0.0)
        .l1(cfg.keys.max(1), Duration::from_secs(3600))
        .build(backend.clone())
        .await?;
    for k in 0..cfg.keys {
        cache.set(&k, k).await?;
    }
    let moka: moka::sync::Cache<String, Arc<u64>> = moka::sync::Cache::builder()
        .max_capacity(cfg.keys.max(1))
        .time_to_live(Duration::from_secs(3600))
        .build();
    for k in 0..cfg.keys {
        moka.insert(k.to_string(), Arc::new(k));
    }
    // Alternate the two loops and keep each one's best round: the machine's noise and the
    // order of the runs weigh less.
    let (mut l1, mut raw) = (0f64, 0f64);
    let mut sum = 0u64;
    for _ in 0..3 {
        let started = Instant::now();
        for i in 0..cfg.gets {
            sum = sum.wrapping_add(cache.get(&(i % cfg.keys)).await?.unwrap_or(0));
        }
        l1 = l1.max(cfg.gets as f64 / started.elapsed().as_secs_f64().max(1e-9));
        let started = Instant::now();
        for i in 0..cfg.gets {
            // The same shape as the cache's loop: a key made from a number, an await per get.
            let got = async { moka.get(&(i % cfg.keys).to_string()) }.await;
            sum = sum.wrapping_add(got.map_or(0, |v| *v));
        }
        raw = raw.max(cfg.gets as f64 / started.elapsed().as_secs_f64().max(1e-9));
    }
    std::hint::black_box(sum);

    // L2: the L1 off, `concurrency` readers.
    let l2: Cache<u64, u64, AnyBackend> = Cache::builder(ns.as_str())
        .ttl(Duration::from_secs(3600))
        .l2_timeout(BENCH_L2_TIMEOUT)
        .early_refresh(0.0)
        .l1_off()
        .build(backend.clone())
        .await?;
    let per = (cfg.gets / cfg.concurrency.max(1) as u64).max(1);
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for t in 0..cfg.concurrency.max(1) {
        let l2 = l2.clone();
        let keys = cfg.keys;
        tasks.spawn(async move {
            for i in 0..per {
                l2.get(&((i + t as u64) % keys)).await?;
            }
            Ok::<_, Error>(())
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.map_err(|e| Error::config("bench", e.to_string()))??;
    }
    let l2_rate =
        (per * cfg.concurrency.max(1) as u64) as f64 / started.elapsed().as_secs_f64().max(1e-9);
    let redis_bench = match &*backend {
        #[cfg(feature = "redis")]
        AnyBackend::Redis(_) => redis_benchmark(&cfg.url, cfg.concurrency, cfg.gets).await,
        _ => None,
    };

    let (calls, waited) = stampede(&backend, cfg, &ns).await?;
    Ok(CacheBenchReport {
        l1_hits_per_s: l1,
        moka_gets_per_s: raw,
        l1_ratio: ratio(l1, raw),
        l2_hits_per_s: l2_rate,
        redis_benchmark_gets_per_s: redis_bench,
        l2_ratio: redis_bench.map(|r| ratio(l2_rate, r)),
        stampede_processes: cfg.processes,
        stampede_gets: cfg.stampede_gets,
        stampede_loader_calls: calls,
        stampede_processes_waited: waited,
    })
}

fn uuid_suffix() -> String {
    celeriac::JobId::new().to_string()[24..].to_string()
}

/// The key whose loads the stampede counts.
fn counter_key(ns: &str) -> String {
    format!("{ns}:stampede-loads")
}

/// What a stampede process prints: how often it waited for another process's load.
const WAITED: &str = "stampede waited=";

/// Starts the stampede's processes at one moment; returns the loader calls and how many
/// processes waited for another's load.
async fn stampede(
    backend: &Arc<AnyBackend>,
    cfg: &CacheBenchConfig,
    ns: &str,
) -> Result<(i64, usize)> {
    let start_at = celeriac::clock::Clock::now_ms(&celeriac::SystemClock) + 1_500;
    let mut children = Vec::new();
    for _ in 0..cfg.processes {
        let child = tokio::process::Command::new(&cfg.exe)
            .args(["--log", "error", "bench", "cache"])
            .args(["--stampede-child", ns])
            .args(["--stampede-gets", &cfg.stampede_gets.to_string()])
            .args(["--stampede-start", &start_at.to_string()])
            // In the environment, not on the command line, which every user of the host
            // can read (`ps`): the URL may hold a password.
            .env("CELERIAC_URL", &cfg.url)
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| Error::config("bench", format!("cannot start a stampede process: {e}")))?;
        children.push(child);
    }
    let mut waited = 0;
    for c in children {
        let out = c
            .wait_with_output()
            .await
            .map_err(|e| Error::config("bench", e.to_string()))?;
        if !out.status.success() {
            return Err(Error::config(
                "bench",
                format!("a stampede process failed: {}", out.status),
            ));
        }
        let text = String::from_utf8_lossy(&out.stdout);
        let waits: u64 = text
            .lines()
            .find_map(|l| l.strip_prefix(WAITED))
            .and_then(|n| n.trim().parse().ok())
            .ok_or_else(|| Error::config("bench", format!("a stampede process said {text:?}")))?;
        if waits > 0 {
            waited += 1;
        }
    }
    let now = celeriac::clock::Clock::now_ms(&celeriac::SystemClock);
    let got = backend.kv_get(vec![counter_key(ns)], now).await?;
    let calls = got
        .into_iter()
        .next()
        .flatten()
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|s| s.trim().parse::<i64>().ok())
        .unwrap_or(0);
    Ok((calls, waited))
}

/// One stampede process: `gets` concurrent reads of one cold key at `start_at`; the loader
/// counts its calls in the store and takes a second, so a process that starts a little late
/// still finds the load in progress. Prints how often it waited for another process's load.
pub async fn stampede_child(
    backend: Arc<AnyBackend>,
    ns: &str,
    gets: usize,
    start_at: i64,
) -> Result<()> {
    let cache: Cache<str, String, AnyBackend> = Cache::builder(ns)
        .ttl(Duration::from_secs(3600))
        .l2_timeout(BENCH_L2_TIMEOUT)
        .early_refresh(0.0)
        .load_lock(Duration::from_secs(10), Duration::from_secs(10))
        .build(backend.clone())
        .await?;
    let wait = start_at - celeriac::clock::Clock::now_ms(&celeriac::SystemClock);
    if wait > 0 {
        tokio::time::sleep(Duration::from_millis(wait as u64)).await;
    }
    let mut tasks = tokio::task::JoinSet::new();
    // A loader call that could not be counted fails the bench rather than undercount.
    let uncounted: Arc<std::sync::Mutex<Option<Error>>> = Arc::default();
    for _ in 0..gets {
        let cache = cache.clone();
        let backend = backend.clone();
        let counter = counter_key(ns);
        let uncounted = uncounted.clone();
        tasks.spawn(async move {
            cache
                .get_with("cold", move || async move {
                    let now = celeriac::clock::Clock::now_ms(&*backend.fleet_clock());
                    if let Err(e) = backend.kv_incr(&counter, now).await {
                        if let Ok(mut slot) = uncounted.lock() {
                            *slot = Some(e);
                        }
                    }
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    "loaded once".to_string()
                })
                .await
                .map_err(|e| Error::config("bench", e))
        });
    }
    while let Some(r) = tasks.join_next().await {
        let v = r.map_err(|e| Error::config("bench", e.to_string()))??;
        if v != "loaded once" {
            return Err(Error::config("bench", format!("unexpected value {v}")));
        }
    }
    if let Some(e) = uncounted.lock().ok().and_then(|mut s| s.take()) {
        return Err(Error::config(
            "bench",
            format!("counting a loader call failed: {e}"),
        ));
    }
    println!("{WAITED}{}", cache.stats().waiters);
    Ok(())
}

#[cfg(feature = "redis")]
/// `redis-benchmark -t get` at `concurrency` against the URL's host and port, if the tool is
/// installed and the URL is a plain `redis://host:port`.
async fn redis_benchmark(url: &str, concurrency: usize, requests: u64) -> Option<f64> {
    let rest = url.strip_prefix("redis://")?;
    let hostport = rest.split(['/', '?']).next()?;
    if hostport.contains('@') {
        return None;
    }
    let (host, port) = hostport.rsplit_once(':').unwrap_or((hostport, "6379"));
    let out = tokio::process::Command::new("redis-benchmark")
        .args(["-h", host, "-p", port, "-t", "get", "--csv"])
        .args(["-c", &concurrency.to_string(), "-n", &requests.to_string()])
        .output()
        .await
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find(|l| l.starts_with("\"GET\""))
        .and_then(|l| l.split(',').nth(1))
        .and_then(|v| v.trim_matches('"').parse().ok())
}
