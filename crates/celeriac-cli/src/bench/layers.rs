//! The tower layers in `celeriac bench limits`: what [`RateLimitLayer`] and
//! [`CircuitBreakerLayer`] cost a request to a trivial service called directly (no server,
//! no sockets).
//!
//! Over the store, the layered requests take turns with as many plain store decisions on the
//! same keys, so the two rates compare the store in the same state.
//!
//! Every request carries an `x-api-key` header (one of the bench's keys) and must be answered
//! 200: the quota is generous and the breaker stays closed, so any other status fails the
//! bench rather than give a figure.

use celeriac::breaker::CircuitBreaker;
use celeriac::layer::breaker::CircuitBreakerLayer;
use celeriac::layer::rate_limit::{KeyExtractor, RateLimitLayer, RequestHead};
use celeriac::limit::{FailMode, LocalLimiter, Quota, RateLimiter};
use celeriac::{AnyBackend, Error, ErrorKind, RateLimitStore, Result};
use http::header::{HeaderName, HeaderValue};
use http::{Request, Response, StatusCode};
use serde::Serialize;
use std::convert::Infallible;
use std::fmt::Display;
use std::future::poll_fn;
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tower::{Layer, Service};

/// What the tower layers cost a request.
#[derive(Debug, Clone, Serialize)]
pub struct LayerOverhead {
    /// Requests per round of the one-thread phases (the best of three rounds counts).
    pub requests: u64,
    /// Nanoseconds per request to the trivial service without a layer (building the request
    /// included, as in every figure here).
    pub bare_ns: f64,
    /// Nanoseconds per request through `RateLimitLayer` over a local limiter, one thread.
    pub rate_limit_local_ns: f64,
    /// What that layer adds to a request (ns): layered − bare.
    pub rate_limit_local_overhead_ns: f64,
    /// Requests per second through that layer on one thread.
    pub rate_limit_local_per_s: f64,
    /// Requests through `RateLimitLayer` over the store (after one untimed request per key).
    pub rate_limit_store_requests: u64,
    /// Requests per second through `RateLimitLayer` over the store at the bench's
    /// concurrency.
    pub rate_limit_store_per_s: f64,
    /// Store decisions per second (`check_limits` on the layer's keys, as many, at the same
    /// concurrency), measured in turns with the layered requests: the store's speed changes
    /// as it fills (SQLite most), so the layer is compared with the store of the moment.
    pub store_decisions_per_s: f64,
    /// `rate_limit_store_per_s` over `store_decisions_per_s`: what the layer leaves of a
    /// store's decision rate.
    pub rate_limit_store_ratio: f64,
    /// Nanoseconds per request through an HTTP `CircuitBreakerLayer` (default breaker: count
    /// window, closed), one thread.
    pub breaker_ns: f64,
    /// What that layer adds to a request (ns): layered − bare.
    pub breaker_overhead_ns: f64,
}

const ROUNDS: usize = 3;

/// The header the rate-limit layer keys requests by.
const KEY_HEADER: &str = "x-api-key";

/// The trivial service every phase calls: an empty 200.
fn trivial(
) -> impl Service<Request<()>, Response = Response<String>, Error = Infallible, Future: Send + 'static>
       + Clone
       + Send
       + 'static {
    tower::service_fn(|_req: Request<()>| {
        std::future::ready(Ok::<_, Infallible>(Response::new(String::new())))
    })
}

/// The values of the key header: `bench:0` … `bench:{keys-1}`.
fn key_values(keys: u64) -> Result<Arc<[HeaderValue]>> {
    (0..keys.max(1))
        .map(|k| {
            HeaderValue::from_str(&format!("bench:{k}"))
                .map_err(|e| Error::backend(ErrorKind::GiveUp, e))
        })
        .collect()
}

/// A request with `key` in the key header.
fn request(key: &HeaderValue) -> Request<()> {
    let mut req = Request::new(());
    req.headers_mut()
        .insert(HeaderName::from_static(KEY_HEADER), key.clone());
    req
}

/// Sends one request and checks it was answered 200.
async fn send<S>(svc: &mut S, req: Request<()>, what: &str) -> Result<()>
where
    S: Service<Request<()>, Response = Response<String>>,
    S::Error: Display,
{
    let fail = |e: S::Error| Error::backend(ErrorKind::GiveUp, format!("{what}: {e}"));
    poll_fn(|cx| svc.poll_ready(cx)).await.map_err(fail)?;
    let res = svc.call(black_box(req)).await.map_err(fail)?;
    if res.status() != StatusCode::OK {
        return Err(Error::backend(
            ErrorKind::GiveUp,
            format!(
                "{what}: a request was answered {} ({}), not 200; no figure is given for a \
                 bench whose requests are not all served",
                res.status(),
                res.body().trim()
            ),
        ));
    }
    black_box(res);
    Ok(())
}

/// One round of `requests` requests through `svc` on this task (every future is ready at
/// once, so it never leaves this thread): how long it took.
async fn round<S>(svc: &mut S, keys: &[HeaderValue], requests: u64, what: &str) -> Result<Duration>
where
    S: Service<Request<()>, Response = Response<String>>,
    S::Error: Display,
{
    let started = Instant::now();
    let mut served = 0u64;
    for i in 0..requests {
        send(svc, request(&keys[(i % keys.len() as u64) as usize]), what).await?;
        served += 1;
    }
    let took = started.elapsed();
    black_box(served);
    Ok(took)
}

/// A limiter with `quota` over `store` that denies (429) rather than pass when the store
/// fails, so a failure cannot pass for a decision.
fn limiter<S: RateLimitStore>(store: Arc<S>, quota: Quota) -> Result<RateLimiter<S>> {
    RateLimiter::builder(store)
        .name("bench")
        .quota(quota)
        .fail_mode(FailMode::Closed)
        .timeout(Duration::from_secs(30))
        .build()
}

/// Measures the layers: `requests` requests per round on one thread over `keys` keys for
/// the local limiter and the breaker, then `store_requests` requests through the
/// rate-limit layer over `backend` from `concurrency` tasks, in turns with as many store
/// decisions on the same keys.
///
/// # Errors
/// A request not answered 200, a store failure, or a bench setting refused by a builder.
pub async fn bench_layers(
    backend: &Arc<AnyBackend>,
    quota: Quota,
    requests: u64,
    store_requests: u64,
    concurrency: usize,
    keys: u64,
) -> Result<LayerOverhead> {
    let values = key_values(keys)?;
    let key = KeyExtractor::header(KEY_HEADER);

    let n = requests.max(1);
    let mut bare = trivial();
    let local = limiter(Arc::new(LocalLimiter::new()), quota.clone())?;
    let mut limited = RateLimitLayer::new(local, key.clone()).layer(trivial());
    let breaker = CircuitBreaker::builder("bench-layer").build()?;
    let mut guarded = CircuitBreakerLayer::http(breaker).layer(trivial());
    // The three take turns in each round, so a busy spell on the machine slows one round of
    // each rather than every round of one; the best round of each counts.
    let mut best = [Duration::MAX; 3];
    for _ in 0..ROUNDS {
        let took = [
            round(&mut bare, &values, n, "bare service").await?,
            round(&mut limited, &values, n, "rate-limit layer, local limiter").await?,
            round(&mut guarded, &values, n, "breaker layer").await?,
        ];
        for (b, t) in best.iter_mut().zip(took) {
            *b = (*b).min(t);
        }
    }
    let [bare_ns, rate_limit_local_ns, breaker_ns] = best.map(|d| d.as_nanos() as f64 / n as f64);

    let store = limiter(backend.clone(), quota.clone())?;
    let layered = RateLimitLayer::new(store, key.clone()).layer(trivial());
    let store = StorePhase {
        backend: backend.clone(),
        quotas: Arc::from(vec![quota]),
        keys: layer_keys(&key, &values)?,
        values,
        concurrency: concurrency.max(1),
    };
    let (rate_limit_store_requests, rate_limit_store_per_s, store_decisions_per_s) =
        store.run(layered, store_requests).await?;

    Ok(LayerOverhead {
        requests: n,
        bare_ns,
        rate_limit_local_ns,
        rate_limit_local_overhead_ns: (rate_limit_local_ns - bare_ns).max(0.0),
        rate_limit_local_per_s: 1e9 / rate_limit_local_ns.max(1e-9),
        rate_limit_store_requests,
        rate_limit_store_per_s,
        store_decisions_per_s,
        rate_limit_store_ratio: if store_decisions_per_s > 0.0 {
            rate_limit_store_per_s / store_decisions_per_s
        } else {
            0.0
        },
        breaker_ns,
        breaker_overhead_ns: (breaker_ns - bare_ns).max(0.0),
    })
}

/// The rate-limit keys the layer makes of the requests with `values` in the key header.
fn layer_keys(key: &KeyExtractor, values: &[HeaderValue]) -> Result<Arc<[String]>> {
    values
        .iter()
        .map(|v| {
            let req = request(v);
            let head = RequestHead {
                method: req.method(),
                uri: req.uri(),
                headers: req.headers(),
                extensions: req.extensions(),
            };
            key.extract(&head).ok_or_else(|| {
                Error::backend(ErrorKind::GiveUp, "a bench request has no rate-limit key")
            })
        })
        .collect()
}

/// The rate-limit layer over the store, and store decisions on the same keys.
struct StorePhase {
    backend: Arc<AnyBackend>,
    quotas: Arc<[Quota]>,
    /// The keys the layer checks, one per header value.
    keys: Arc<[String]>,
    values: Arc<[HeaderValue]>,
    concurrency: usize,
}

impl StorePhase {
    /// One untimed request per key through `svc`, then `requests` requests through it and
    /// as many store decisions, each in two halves taking turns: the layered requests sent,
    /// their rate and the decisions' rate (per second).
    async fn run<S>(&self, svc: S, requests: u64) -> Result<(u64, f64, f64)>
    where
        S: Service<Request<()>, Response = Response<String>> + Clone + Send + 'static,
        S::Error: Display,
        S::Future: Send,
    {
        let c = self.concurrency as u64;
        self.layered(&svc, (self.keys.len() as u64).div_ceil(c))
            .await?;
        let per = (requests / c / 2).max(1);
        let (mut layered, mut decided) = ((0u64, Duration::ZERO), (0u64, Duration::ZERO));
        for _ in 0..2 {
            let (n, took) = self.decisions(per).await?;
            decided = (decided.0 + n, decided.1 + took);
            let (n, took) = self.layered(&svc, per).await?;
            layered = (layered.0 + n, layered.1 + took);
        }
        let rate = |(n, took): (u64, Duration)| n as f64 / took.as_secs_f64().max(1e-9);
        Ok((layered.0, rate(layered), rate(decided)))
    }

    /// The key index of a caller's `i`th call (as the store phase spreads its keys).
    fn key(&self, t: usize, i: u64) -> usize {
        ((i * self.concurrency as u64 + t as u64) % self.keys.len() as u64) as usize
    }

    /// `per` requests through `svc` from each of `concurrency` tasks, each with its own
    /// clone: the requests served and how long they took.
    async fn layered<S>(&self, svc: &S, per: u64) -> Result<(u64, Duration)>
    where
        S: Service<Request<()>, Response = Response<String>> + Clone + Send + 'static,
        S::Error: Display,
        S::Future: Send,
    {
        let what = "rate-limit layer, store limiter (a store failure answers 429 here)";
        let started = Instant::now();
        let mut tasks = tokio::task::JoinSet::new();
        for t in 0..self.concurrency {
            let mut svc = svc.clone();
            let values = self.values.clone();
            let ks: Vec<usize> = (0..per).map(|i| self.key(t, i)).collect();
            tasks.spawn(async move {
                for k in &ks {
                    send(&mut svc, request(&values[*k]), what).await?;
                }
                Ok::<_, Error>(ks.len() as u64)
            });
        }
        let served = join(tasks).await?;
        Ok((served, started.elapsed()))
    }

    /// `per` store decisions from each of `concurrency` tasks on the layer's keys: the
    /// decisions made and how long they took.
    async fn decisions(&self, per: u64) -> Result<(u64, Duration)> {
        let started = Instant::now();
        let mut tasks = tokio::task::JoinSet::new();
        for t in 0..self.concurrency {
            let (backend, quotas, keys) =
                (self.backend.clone(), self.quotas.clone(), self.keys.clone());
            let ks: Vec<usize> = (0..per).map(|i| self.key(t, i)).collect();
            tasks.spawn(async move {
                for k in &ks {
                    let now = celeriac::clock::system_now_ms();
                    let d = backend.check_limits(&keys[*k], &quotas, 1, now).await?;
                    if !d.allowed {
                        return Err(Error::backend(
                            ErrorKind::GiveUp,
                            format!(
                                "store decisions beside the rate-limit layer: `{}` was denied; \
                                 no figure is given for a bench whose decisions are not all \
                                 allowed",
                                keys[*k]
                            ),
                        ));
                    }
                }
                Ok::<_, Error>(ks.len() as u64)
            });
        }
        let decided = join(tasks).await?;
        Ok((decided, started.elapsed()))
    }
}

/// Waits for every task; the requests they served.
async fn join(mut tasks: tokio::task::JoinSet<Result<u64>>) -> Result<u64> {
    let mut served = 0u64;
    while let Some(done) = tasks.join_next().await {
        served += done.map_err(|e| Error::backend(ErrorKind::GiveUp, e))??;
    }
    Ok(served)
}
