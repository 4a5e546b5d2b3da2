//! `celeriac bench limits`: limiter decisions per second on the store against the raw
//! `EVALSHA` rate of a trivial script at the same concurrency, local decisions per second on
//! one core, the overhead a closed circuit breaker adds to a call, and what the tower layers
//! ([`crate::bench::layers`]) add to a request.

use crate::bench::breaker::{bench_breaker_overhead, BreakerOverhead};
use crate::bench::layers::{bench_layers, LayerOverhead};
use celeriac::limit::{LocalLimiter, Quota};
use celeriac::{AnyBackend, Error, ErrorKind, RateLimitStore, Result};
use celeriac_core::redact::RedactedUrl;
use serde::Serialize;
use std::sync::Arc;
use std::time::Instant;

/// What to measure. Its `Debug` output masks the URL's secrets.
#[derive(Clone)]
pub struct LimitsBenchConfig {
    /// Decisions on the store.
    pub decisions: u64,
    /// Decisions of the local limiter (per round; the best of three rounds counts).
    pub local_decisions: u64,
    /// Concurrent callers on the store.
    pub concurrency: usize,
    /// Distinct keys.
    pub keys: u64,
    /// Calls per round of the breaker phase ([`BREAKER_CALLS`] in `celeriac bench limits`).
    pub breaker_calls: u64,
    /// Requests per round through each tower layer on one thread.
    pub layer_requests: u64,
    /// Requests through the rate-limit layer on the store at `concurrency` (and as many
    /// store decisions in turns with them).
    pub layer_store_requests: u64,
    /// The store's URL (the raw `EVALSHA` comparison runs on `redis://` only).
    pub url: String,
}

impl std::fmt::Debug for LimitsBenchConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LimitsBenchConfig")
            .field("decisions", &self.decisions)
            .field("local_decisions", &self.local_decisions)
            .field("concurrency", &self.concurrency)
            .field("keys", &self.keys)
            .field("breaker_calls", &self.breaker_calls)
            .field("layer_requests", &self.layer_requests)
            .field("layer_store_requests", &self.layer_store_requests)
            .field("url", &RedactedUrl(&self.url))
            .finish()
    }
}

/// The figures.
#[derive(Debug, Clone, Serialize)]
pub struct LimitsBenchReport {
    /// Limiter decisions per second through the store at the configured concurrency.
    pub store_decisions_per_s: f64,
    /// `EVALSHA` of `return 1` with one key per second at the same concurrency on one
    /// multiplexed connection (Redis only).
    pub raw_evalsha_per_s: Option<f64>,
    /// The store figure over the raw one (the target is at least 0.8).
    pub store_ratio: Option<f64>,
    /// `EVALSHA` of `return 1` sent the same keys and arguments as a decision: what shipping
    /// a decision's arguments costs before any limiter work.
    pub raw_evalsha_same_args_per_s: Option<f64>,
    /// The store figure over that one.
    pub store_ratio_same_args: Option<f64>,
    /// Local limiter decisions per second on one core (one GCRA quota, existing keys).
    pub local_decisions_per_s: f64,
    /// What a closed circuit breaker adds to a call (`celeriac bench breaker`'s figures).
    pub breaker: BreakerOverhead,
    /// What the tower layers add to a request to a trivial service.
    pub layers: LayerOverhead,
    /// Concurrent callers on the store.
    pub concurrency: usize,
}

/// Calls per round of the breaker phase.
pub const BREAKER_CALLS: u64 = 5_000_000;

/// The quota every phase checks: generous, so decisions are mostly allowed and every one
/// writes.
fn bench_quota() -> Quota {
    Quota::per_second(1_000_000).burst(1_000_000).name("bench")
}

/// Runs every phase.
pub async fn run(backend: Arc<AnyBackend>, cfg: &LimitsBenchConfig) -> Result<LimitsBenchReport> {
    let local = local_decisions_per_s(cfg.local_decisions, cfg.keys);
    let store = store_decisions_per_s(&backend, cfg).await?;
    let raw = raw_evalsha_per_s(cfg, false).await?;
    let same = raw_evalsha_per_s(cfg, true).await?;
    let ratio = |raw: Option<f64>| raw.map(|r| if r > 0.0 { store / r } else { 0.0 });
    let breaker = bench_breaker_overhead(cfg.breaker_calls)?;
    let layers = bench_layers(
        &backend,
        bench_quota(),
        cfg.layer_requests,
        cfg.layer_store_requests,
        cfg.concurrency,
        cfg.keys,
    )
    .await?;
    Ok(LimitsBenchReport {
        store_decisions_per_s: store,
        raw_evalsha_per_s: raw,
        store_ratio: ratio(raw),
        raw_evalsha_same_args_per_s: same,
        store_ratio_same_args: ratio(same),
        local_decisions_per_s: local,
        breaker,
        layers,
        concurrency: cfg.concurrency,
    })
}

/// The local limiter in a tight loop on this thread: the best of three rounds of
/// `decisions` decisions over `keys` existing keys.
pub fn local_decisions_per_s(decisions: u64, keys: u64) -> f64 {
    let limiter = LocalLimiter::new();
    let quotas = [bench_quota()];
    let keys: Vec<String> = (0..keys.max(1)).map(|k| format!("bench:{k}")).collect();
    let now = celeriac::clock::system_now_ms();
    for k in &keys {
        let _ = limiter.check(k, &quotas, 1, now);
    }
    let mut best = 0f64;
    let mut allowed = 0u64;
    for _ in 0..3 {
        let started = Instant::now();
        for i in 0..decisions {
            let key = &keys[(i % keys.len() as u64) as usize];
            // Time moves a millisecond every 1,024 decisions, as it would under load.
            let now = now + (i >> 10) as i64;
            if let Ok(d) = limiter.check(key, &quotas, 1, now) {
                allowed += u64::from(d.allowed);
            }
        }
        best = best.max(decisions as f64 / started.elapsed().as_secs_f64().max(1e-9));
    }
    std::hint::black_box(allowed);
    best
}

async fn store_decisions_per_s(backend: &Arc<AnyBackend>, cfg: &LimitsBenchConfig) -> Result<f64> {
    let quotas: Arc<[Quota]> = Arc::from(vec![bench_quota()]);
    let concurrency = cfg.concurrency.max(1);
    let per = (cfg.decisions / concurrency as u64).max(1);
    let keys = cfg.keys.max(1);
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for t in 0..concurrency {
        let (backend, quotas) = (backend.clone(), quotas.clone());
        tasks.spawn(async move {
            for i in 0..per {
                let key = format!("bench:{}", (i * concurrency as u64 + t as u64) % keys);
                let now = celeriac::clock::system_now_ms();
                backend.check_limits(&key, &quotas, 1, now).await?;
            }
            Ok::<_, Error>(())
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.map_err(|e| Error::backend(ErrorKind::GiveUp, e))??;
    }
    Ok((per * concurrency as u64) as f64 / started.elapsed().as_secs_f64().max(1e-9))
}

/// Without the Redis backend built in, there is no raw `EVALSHA` to compare with.
#[cfg(not(feature = "redis"))]
async fn raw_evalsha_per_s(_cfg: &LimitsBenchConfig, _same_args: bool) -> Result<Option<f64>> {
    Ok(None)
}

#[cfg(feature = "redis")]
/// `EVALSHA` of `return 1`, `cfg.decisions` times at the same concurrency, on one
/// multiplexed connection (as the backend uses): with one key, or with `same_args` the keys
/// and arguments a decision sends; `None` off plain `redis://`.
async fn raw_evalsha_per_s(cfg: &LimitsBenchConfig, same_args: bool) -> Result<Option<f64>> {
    if !cfg.url.starts_with("redis://") {
        return Ok(None);
    }
    let base = cfg.url.split('?').next().unwrap_or(&cfg.url);
    let fail = |e: redis::RedisError| Error::backend(ErrorKind::GiveUp, e);
    let client = redis::Client::open(base).map_err(fail)?;
    let conn = client
        .get_multiplexed_async_connection()
        .await
        .map_err(fail)?;
    let script = Arc::new(redis::Script::new("return 1"));
    let concurrency = cfg.concurrency.max(1);
    let per = (cfg.decisions / concurrency as u64).max(1);
    let keys = cfg.keys.max(1);
    // Loaded once, so every timed call is an EVALSHA.
    let _: i64 = script
        .key("bench:raw")
        .invoke_async(&mut conn.clone())
        .await
        .map_err(fail)?;
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for t in 0..concurrency {
        let (mut conn, script) = (conn.clone(), script.clone());
        tasks.spawn(async move {
            for i in 0..per {
                let key = format!("bench:raw:{}", (i * concurrency as u64 + t as u64) % keys);
                let mut call = script.key(key);
                if same_args {
                    // A lone decision's arguments as the store encodes them: the quota's
                    // five fields, then n, now, cost and the quota's number, as doubles.
                    let q = bench_quota();
                    let doubles = |xs: &[f64]| -> Vec<u8> {
                        xs.iter().flat_map(|x| x.to_le_bytes()).collect()
                    };
                    call.arg(doubles(&[
                        f64::from(q.algorithm().code()),
                        f64::from(q.limit()),
                        q.window_ms() as f64,
                        q.interval_us() as f64,
                        q.tolerance_us() as f64,
                    ]))
                    .arg(doubles(&[
                        1.0,
                        celeriac::clock::system_now_ms() as f64,
                        1.0,
                        1.0,
                    ]));
                }
                let _: i64 = call.invoke_async(&mut conn).await?;
            }
            Ok::<_, redis::RedisError>(())
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.map_err(|e| Error::backend(ErrorKind::GiveUp, e))?
            .map_err(fail)?;
    }
    Ok(Some(
        (per * concurrency as u64) as f64 / started.elapsed().as_secs_f64().max(1e-9),
    ))
}
