//! Measures what kept results cost a store and that one reap after their ttl gives it back:
//! drives completions through the store API (enqueue a batch, claim it, complete it, each
//! result kept), then reaps once after the ttl.
//!
//! `cargo run --release -p celeriac --features redis --example retention_soak -- sqlite|redis [completions]`
//!
//! SQLite runs on a file in a temporary directory (bytes on disk: the database and its WAL);
//! Redis on a private `redis-server` the testkit starts (`used_memory` from `INFO memory`).

use celeriac_core::backend::{ClaimRequest, Completion, Outcome};
use celeriac_core::{Broker, Job, QueueAdmin};
use celeriac_testkit::RedisServer;
use std::error::Error;
use std::path::Path;
use std::time::{Duration, Instant};

type Res<T> = Result<T, Box<dyn Error>>;

const T0: i64 = 1_700_000_000_000;
const BATCH: usize = 1_000;
const RESULT_TTL: Duration = Duration::from_secs(3_600);
const QUEUE: &str = "soak";

/// Enqueues, claims and completes `n` jobs at `now`, each keeping a 4-byte result.
async fn complete_many<B: Broker>(backend: &B, n: usize, now: i64) -> Res<()> {
    let mut left = n;
    while left > 0 {
        let size = left.min(BATCH);
        let jobs: Vec<Job> = (0..size)
            .map(|i| {
                let mut j = Job::new("soak.noop", format!("[{i}]").into_bytes(), now);
                j.queue = QUEUE.into();
                j.result_ttl = Some(RESULT_TTL);
                j
            })
            .collect();
        backend.enqueue(jobs, now).await?;
        let mut claimed = Vec::with_capacity(size);
        while claimed.len() < size {
            let got = backend
                .claim(ClaimRequest {
                    queues: vec![QUEUE.into()],
                    limit: size - claimed.len(),
                    lease: Duration::from_secs(30),
                    worker: "soak".into(),
                    now,
                    limits: Default::default(),
                })
                .await?;
            if got.is_empty() {
                return Err("jobs just enqueued could not be claimed".into());
            }
            claimed.extend(got);
        }
        let done = claimed
            .iter()
            .map(|c| Completion {
                lease: c.lease(),
                outcome: Outcome::Succeeded {
                    result: Some(b"null".to_vec()),
                },
            })
            .collect();
        backend.complete(done, now).await?;
        left -= size;
    }
    Ok(())
}

fn file_size(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

/// Bytes on disk (database + WAL), bytes in use (pages not on the free list), rows.
fn sqlite_sizes(db: &Path) -> Res<(u64, u64, i64)> {
    let wal = db.with_extension("db-wal");
    let conn = rusqlite::Connection::open(db)?;
    let used: i64 = conn.query_row(
        "SELECT (page_count - freelist_count) * page_size \
         FROM pragma_page_count(), pragma_freelist_count(), pragma_page_size()",
        [],
        |r| r.get(0),
    )?;
    let rows: i64 = conn.query_row("SELECT count(*) FROM celeriac_jobs", [], |r| r.get(0))?;
    Ok((file_size(db) + file_size(&wal), used.max(0) as u64, rows))
}

async fn sqlite(n: usize) -> Res<()> {
    let dir = tempfile::tempdir()?;
    let db = dir.path().join("soak.db");
    let backend =
        celeriac::embedded::SqliteBackend::connect(&format!("sqlite://{}", db.display())).await?;
    let base = sqlite_sizes(&db)?;
    let started = Instant::now();
    complete_many(&backend, n, T0).await?;
    let filled = started.elapsed();
    let peak = sqlite_sizes(&db)?;
    let started = Instant::now();
    let report = backend.reap(T0 + RESULT_TTL.as_millis() as i64).await?;
    let reaped = started.elapsed();
    // One more write: the WAL starts over after the checkpoint and is truncated.
    backend.resume(QUEUE).await?;
    let after = sqlite_sizes(&db)?;
    println!(
        "sqlite: {n} completions in {filled:.1?}; one reap swept {} in {reaped:.1?}",
        report.swept
    );
    println!(
        "  rows:          base {:>10}  peak {:>10}  after {:>10}",
        base.2, peak.2, after.2
    );
    println!(
        "  on disk (B):   base {:>10}  peak {:>10}  after {:>10}",
        base.0, peak.0, after.0
    );
    println!(
        "  in use (B):    base {:>10}  peak {:>10}  after {:>10}",
        base.1, peak.1, after.1
    );
    let per_1000 = |a: u64, b: u64| a.saturating_sub(b) * 1_000 / n.max(1) as u64;
    println!(
        "  per 1,000 kept results: {} bytes in use, {} bytes on disk (database + WAL)",
        per_1000(peak.1, base.1),
        per_1000(peak.0, base.0)
    );
    Ok(())
}

async fn redis_int(server: &RedisServer, args: &[&str]) -> Res<i64> {
    server
        .command(args)
        .await?
        .as_int()
        .ok_or_else(|| format!("{args:?} did not answer a number").into())
}

async fn used_memory(server: &RedisServer) -> Res<i64> {
    let info = server
        .command(&["INFO", "memory"])
        .await?
        .as_text()
        .unwrap_or_default();
    info.lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| "INFO memory has no used_memory".into())
}

async fn redis(n: usize) -> Res<()> {
    let server = RedisServer::start().await?;
    let backend = celeriac::redis::RedisBackend::connect(&server.url()).await?;
    let index = format!("celeriac:{{{QUEUE}}}:succeeded");
    // The queue's keys and the scripts exist before the baseline is read.
    complete_many(&backend, 1, T0).await?;
    backend.reap(T0 + RESULT_TTL.as_millis() as i64).await?;
    let base = (
        used_memory(&server).await?,
        redis_int(&server, &["ZCARD", &index]).await?,
    );
    let started = Instant::now();
    complete_many(&backend, n, T0).await?;
    let filled = started.elapsed();
    let peak = (
        used_memory(&server).await?,
        redis_int(&server, &["ZCARD", &index]).await?,
    );
    let started = Instant::now();
    let report = backend.reap(T0 + RESULT_TTL.as_millis() as i64).await?;
    let reaped = started.elapsed();
    let after = (
        used_memory(&server).await?,
        redis_int(&server, &["ZCARD", &index]).await?,
    );
    let keys = redis_int(&server, &["DBSIZE"]).await?;
    println!(
        "redis: {n} completions in {filled:.1?}; one reap swept {} in {reaped:.1?}",
        report.swept
    );
    println!(
        "  :succeeded ZCARD: base {:>10}  peak {:>10}  after {:>10}",
        base.1, peak.1, after.1
    );
    println!(
        "  used_memory (B):  base {:>10}  peak {:>10}  after {:>10}",
        base.0, peak.0, after.0
    );
    println!("  keys left: {keys}");
    println!(
        "  per 1,000 kept results: {} bytes of used_memory",
        (peak.0 - base.0) * 1_000 / n.max(1) as i64
    );
    Ok(())
}

#[tokio::main]
async fn main() -> Res<()> {
    let mut args = std::env::args().skip(1);
    let which = args.next().unwrap_or_else(|| "sqlite".into());
    let n: usize = match args.next() {
        Some(v) => v.parse()?,
        None => 1_000_000,
    };
    match which.as_str() {
        "sqlite" => sqlite(n).await,
        "redis" => redis(n).await,
        other => Err(format!("`{other}` is neither sqlite nor redis").into()),
    }
}
