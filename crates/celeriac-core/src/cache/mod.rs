//! A two-level cache: an in-process L1 ([moka], W-TinyLFU) over an L2 shared by every
//! process (any [`KvStore`]: the embedded SQLite file or Redis).
//!
//! ```no_run
//! # use celeriac_core::cache::Cache;
//! # use std::{sync::Arc, time::Duration};
//! # async fn demo<S: celeriac_core::KvStore>(store: Arc<S>) -> celeriac_core::Result<()> {
//! let products: Cache<u64, String, S> = Cache::builder("products")
//!     .ttl(Duration::from_secs(60))
//!     .stale_for(Duration::from_secs(600)) // serve stale while refreshing, or when the loader fails
//!     .build(store)
//!     .await?;
//! let name = products
//!     .entry(&7)
//!     .tags(["catalog"])
//!     .try_get_with(|| async { Ok::<_, std::io::Error>(Some("Celeriac".to_string())) })
//!     .await?;
//! products.invalidate_tag("catalog").await?;
//! # let _ = name; Ok(()) }
//! ```
//!
//! What a read does, in order:
//! 1. **L1**: a fresh value is returned at once. A value past its freshness but within its
//!    stale window is returned at once too, and refreshed once in the background
//!    (stale-while-revalidate). Hot keys are refreshed early, before they expire, with a
//!    probability that grows as expiry nears and with the time the load took (XFetch).
//! 2. **One load per key per process**: concurrent misses of a key share one flight.
//! 3. **L2**: a fresh value there is copied to L1.
//! 4. **One load per key across processes**: the flight takes a short lease lock in L2 (a
//!    token, compare-and-delete release); a process that does not get it waits a bounded
//!    time for the value to appear in L2, then serves the stale value, or loads itself.
//! 5. **The loader**; its value goes to L1 and L2. When it fails and fail-safe is on, the
//!    stale value is served (within its hard expiry) and the loader is not called again for
//!    the fail-safe throttle.
//!
//! **Outages**: every L2 call has a timeout and the L2 sits behind a circuit breaker; with
//! the L2 down, the cache serves L1 and calls the loader (single-flighted), logs the outage
//! once, counts it, and goes back to the L2 by itself once a probe succeeds.
//!
//! **Invalidation**: [`Cache::remove`] deletes a key; [`Cache::invalidate_tag`] writes a tag
//! barrier (a timestamp) so every entry of that tag created before it counts as absent: O(1),
//! no scan; [`Cache::bump_version`] moves the whole namespace to a new key version. Each is
//! broadcast on the namespace's channel, and other instances drop their L1 copies when the
//! message arrives: within a few milliseconds on Redis (pub/sub), within the embedded store's
//! poll interval on SQLite. An instance skips its own messages, so a key it just wrote
//! stays in its L1. When the channel was down, the L1 is flushed.
//!
//! **Keys** are `<app>:<namespace>:v<version>:<key>`; a key part longer than
//! [`MAX_KEY_PART`] bytes is replaced by `#` and its SHA-256 in hex.
//!
//! **Bad data**: a stored value that no longer deserializes (an old schema) is a miss: it is
//! counted and reloaded, never an error to the caller.
//!
//! **Statistics**: [`Cache::stats`] in process; every 10 s each cache publishes them to the
//! `metrics` recorder and to the L2, where `celeriac cache stats` sums the live instances
//! ([`stats`]).
//!
//! **Warming**: [`Cache::warm`], and [`Warmer`]s that `celeriac cache warm` and the
//! `celeriac.cache.warm` job run. **Writing**: [`Cache::write_through`] and [`WriteBehind`]
//! ([`mod@write`]).

mod envelope;
pub mod stats;
mod warm;
pub mod write;

pub use envelope::{Envelope, Format, Meta};
pub use stats::{NamespaceStats, DEFAULT_STATS_INTERVAL};
pub use warm::{CacheWarmer, WarmProgress, Warmer};
pub use write::{write_behind_task, PendingWrite, WriteBehind};

use crate::backend::{KvEntry, KvEvent, KvStore, KvSubscription};
use crate::clock::{duration_ms, Clock, SystemClock, UnixMs};
use crate::error::{Error, Result};
use futures_util::future::{BoxFuture, FutureExt, Shared};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::fmt::{Display, Write as _};
use std::future::Future;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};
use tracing::{debug, info, warn};

/// The longest key part kept as it is; longer ones are hashed.
pub const MAX_KEY_PART: usize = 200;

/// How a cache is built: see [`Cache::builder`].
pub struct CacheBuilder<K: ?Sized, V> {
    cfg: Config,
    clock: Arc<dyn Clock>,
    /// Whether `clock` came from [`CacheBuilder::clock`] (else the store's fleet clock is used).
    custom_clock: bool,
    _types: PhantomData<fn(&K) -> V>,
}

impl<K: ?Sized, V> Clone for CacheBuilder<K, V> {
    fn clone(&self) -> Self {
        Self {
            cfg: self.cfg.clone(),
            clock: self.clock.clone(),
            custom_clock: self.custom_clock,
            _types: PhantomData,
        }
    }
}

#[derive(Debug, Clone)]
struct Config {
    app: String,
    namespace: String,
    ttl: Duration,
    jitter: Duration,
    stale: Duration,
    swr: bool,
    fail_safe: bool,
    fail_safe_throttle: Duration,
    early_refresh: f64,
    negative_ttl: Option<Duration>,
    l1_capacity: u64,
    l1_ttl: Duration,
    l1_on: bool,
    format: Format,
    compress_at: usize,
    schema: u32,
    l2_timeout: Duration,
    lock_ttl: Duration,
    lock_wait: Duration,
    stats_interval: Option<Duration>,
}

impl<K: ?Sized + Display, V> CacheBuilder<K, V>
where
    V: Clone + Serialize + DeserializeOwned + Send + Sync + 'static,
{
    /// The application's name in keys (default `celeriac`).
    pub fn app(mut self, app: impl Into<String>) -> Self {
        self.cfg.app = app.into();
        self
    }
    /// How long a value is fresh (default 60 s). Zero is refused.
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.cfg.ttl = ttl;
        self
    }
    /// Spreads expiries: each value's freshness is shortened by a random part of `jitter`, so
    /// keys loaded together do not expire together (default none).
    pub fn jitter(mut self, jitter: Duration) -> Self {
        self.cfg.jitter = jitter;
        self
    }
    /// How long past its freshness a value may still be served: while it is refreshed in the
    /// background, and when the loader fails (default none: no stale values).
    pub fn stale_for(mut self, window: Duration) -> Self {
        self.cfg.stale = window;
        self
    }
    /// Serves a stale value at once and refreshes it in the background (default on; needs
    /// [`CacheBuilder::stale_for`]).
    pub fn stale_while_revalidate(mut self, on: bool) -> Self {
        self.cfg.swr = on;
        self
    }
    /// Serves the stale value when the loader fails, and calls the loader for that key again
    /// only after `throttle` (default on, 5 s; needs [`CacheBuilder::stale_for`]).
    pub fn fail_safe(mut self, on: bool, throttle: Duration) -> Self {
        self.cfg.fail_safe = on;
        self.cfg.fail_safe_throttle = throttle;
        self
    }
    /// Refreshes hot keys before they expire (XFetch): the larger `beta`, the earlier
    /// (default 1.0; 0 turns it off).
    pub fn early_refresh(mut self, beta: f64) -> Self {
        self.cfg.early_refresh = beta;
        self
    }
    /// Caches "not found" (a loader's `None`) for `ttl` (default: not cached).
    pub fn negative_ttl(mut self, ttl: Duration) -> Self {
        self.cfg.negative_ttl = Some(ttl);
        self
    }
    /// The L1's size in entries and the longest an entry stays in it (default 10,000 and the
    /// hard expiry).
    pub fn l1(mut self, capacity: u64, ttl: Duration) -> Self {
        self.cfg.l1_capacity = capacity;
        self.cfg.l1_ttl = ttl;
        self
    }
    /// Keeps nothing in process: every read goes to the L2 (for values that must not be held
    /// in memory, or to measure the L2).
    pub fn l1_off(mut self) -> Self {
        self.cfg.l1_on = false;
        self
    }
    /// The serialization of values in the L2 (default JSON).
    pub fn format(mut self, format: Format) -> Self {
        self.cfg.format = format;
        self
    }
    /// Values of at least this many bytes are compressed (LZ4) in the L2 (default 1 KiB).
    pub fn compress_at(mut self, bytes: usize) -> Self {
        self.cfg.compress_at = bytes;
        self
    }
    /// The key version: change it when the value's type changes shape, and old entries are
    /// left behind (default 1).
    pub fn version(mut self, version: u32) -> Self {
        self.cfg.schema = version;
        self
    }
    /// The timeout of each L2 call (default 500 ms).
    pub fn l2_timeout(mut self, timeout: Duration) -> Self {
        self.cfg.l2_timeout = timeout;
        self
    }
    /// How long the cross-process load lock lasts, and how long a process waits for another
    /// one's load before serving stale or loading itself (defaults 10 s and 2 s).
    pub fn load_lock(mut self, ttl: Duration, wait: Duration) -> Self {
        self.cfg.lock_ttl = ttl;
        self.cfg.lock_wait = wait;
        self
    }
    /// How often the counters are published to the `metrics` recorder and to the L2 for
    /// `celeriac cache stats` (default [`DEFAULT_STATS_INTERVAL`], 10 s; `None`: only on
    /// [`Cache::publish_stats`]). See [`stats`].
    pub fn stats_interval(mut self, every: Option<Duration>) -> Self {
        self.cfg.stats_interval = every;
        self
    }
    /// Reads time from `clock` (tests).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self.custom_clock = true;
        self
    }

    fn validate(&self) -> Result<()> {
        let c = &self.cfg;
        let name_ok = |s: &str| !s.is_empty() && s.len() <= 100 && !s.contains([':', '{', '}']);
        if !name_ok(&c.app) {
            return Err(Error::config(
                "cache app",
                "must be 1 to 100 bytes without `:`, `{` or `}`",
            ));
        }
        if !name_ok(&c.namespace) {
            return Err(Error::config(
                "cache namespace",
                format!(
                    "`{}` must be 1 to 100 bytes without `:`, `{{` or `}}`",
                    c.namespace
                ),
            ));
        }
        if c.ttl.is_zero() {
            return Err(Error::config(
                format!("cache `{}` ttl", c.namespace),
                "must be longer than zero",
            ));
        }
        if c.jitter >= c.ttl {
            return Err(Error::config(
                format!("cache `{}` jitter", c.namespace),
                "must be shorter than the ttl",
            ));
        }
        if c.negative_ttl.is_some_and(|t| t.is_zero()) {
            return Err(Error::config(
                format!("cache `{}` negative_ttl", c.namespace),
                "must be longer than zero",
            ));
        }
        if c.l1_capacity == 0 || c.l1_ttl.is_zero() {
            return Err(Error::config(
                format!("cache `{}` l1", c.namespace),
                "capacity and ttl must be above zero",
            ));
        }
        if !c.early_refresh.is_finite() || c.early_refresh < 0.0 {
            return Err(Error::config(
                format!("cache `{}` early_refresh", c.namespace),
                "beta must be a finite number, 0 or more",
            ));
        }
        if c.stats_interval.is_some_and(|d| d.is_zero()) {
            return Err(Error::config(
                format!("cache `{}` stats_interval", c.namespace),
                "must be longer than zero (or None for no periodic publication)",
            ));
        }
        if c.l2_timeout.is_zero() || c.lock_ttl.is_zero() {
            return Err(Error::config(
                format!("cache `{}` l2_timeout / load_lock", c.namespace),
                "must be longer than zero",
            ));
        }
        Ok(())
    }

    /// Builds the cache over `store`: reads the namespace's version and subscribes to its
    /// invalidation channel (both retried in the background if the store is down).
    ///
    /// # Errors
    /// A setting that makes no sense (a zero ttl, an empty namespace...), naming it.
    pub async fn build<S: KvStore>(self, store: Arc<S>) -> Result<Cache<K, V, S>> {
        self.validate()?;
        let cfg = self.cfg;
        let stats = Arc::new(Counters::default());
        let l1 = moka::sync::Cache::builder()
            .max_capacity(cfg.l1_capacity)
            .time_to_live(cfg.l1_ttl)
            // No eviction listener: it slows every read down; evictions are counted as
            // what entered and did not leave by our hand (`Inner::stats`).
            .build();
        let inner = Arc::new(Inner {
            prefix: format!("{}:{}", cfg.app, cfg.namespace),
            instance: format!("{}.{}", std::process::id(), uuid::Uuid::now_v7().simple()),
            published: tokio::sync::Mutex::new(stats::Published::new(&cfg.namespace)),
            cfg,
            clock: if self.custom_clock {
                self.clock
            } else {
                store.fleet_clock()
            },
            coarse_hits: (!self.custom_clock).then(|| store.fleet_clock()),
            store,
            l1,
            flights: Mutex::new(HashMap::new()),
            flight_ids: AtomicU64::new(0),
            barriers: Mutex::new(HashMap::new()),
            barrier_epoch: AtomicU64::new(0),
            version: AtomicU32::new(0),
            breaker: Breaker::default(),
            stats,
            listening: AtomicBool::new(false),
        });
        inner.version.store(inner.cfg.schema, Ordering::Relaxed);
        inner.refresh_version().await;
        // Subscribed before the cache is handed out, so an invalidation sent after `build`
        // returns reaches it; if the store cannot be reached now, `listen` keeps trying.
        let first = match tokio::time::timeout(
            inner.cfg.l2_timeout,
            inner.store.kv_subscribe(&inner.prefix),
        )
        .await
        {
            Ok(Ok(sub)) => {
                inner.listening.store(true, Ordering::Relaxed);
                Some(sub)
            }
            Ok(Err(e)) => {
                debug!(error = %e, "cache invalidation channel unavailable; retrying");
                None
            }
            Err(_) => {
                debug!("cache invalidation channel did not answer in time; retrying");
                None
            }
        };
        tokio::spawn(listen(Arc::downgrade(&inner), first));
        if let Some(every) = inner.cfg.stats_interval {
            tokio::spawn(publish_every(Arc::downgrade(&inner), every));
        }
        Ok(Cache {
            inner,
            _types: PhantomData,
        })
    }
}

/// A cache namespace of values `V` under keys `K`, over the L2 store `S`. Cheap to clone.
pub struct Cache<K: ?Sized, V, S> {
    inner: Arc<Inner<V, S>>,
    _types: PhantomData<fn(&K)>,
}

impl<K: ?Sized, V, S> Clone for Cache<K, V, S> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            _types: PhantomData,
        }
    }
}

/// An entry in L1: the decoded value (`None`: cached "not found") and its meta data.
struct Slot<V> {
    value: Option<V>,
    meta: Meta,
    /// The barrier epoch when it was checked against the tag barriers.
    epoch: u64,
}

type Flight<V> = Shared<BoxFuture<'static, std::result::Result<Option<V>, String>>>;

struct Inner<V, S> {
    cfg: Config,
    prefix: String,
    store: Arc<S>,
    clock: Arc<dyn Clock>,
    /// L1 hits judged by the fleet clock's coarse reading (the cache was given no clock of
    /// its own).
    coarse_hits: Option<Arc<crate::clock::FleetClock>>,
    l1: moka::sync::Cache<String, Arc<Slot<V>>>,
    flights: Mutex<HashMap<String, (u64, Flight<V>)>>,
    flight_ids: AtomicU64,
    barriers: Mutex<HashMap<String, UnixMs>>,
    barrier_epoch: AtomicU64,
    version: AtomicU32,
    breaker: Breaker,
    stats: Arc<Counters>,
    listening: AtomicBool,
    /// This instance's name in the published statistics.
    instance: String,
    published: tokio::sync::Mutex<stats::Published>,
}

/// Per-namespace counters: [`Cache::stats`].
#[derive(Debug, Default)]
struct Counters {
    l1_hits: AtomicU64,
    l2_hits: AtomicU64,
    misses: AtomicU64,
    stale_served: AtomicU64,
    loads: AtomicU64,
    load_errors: AtomicU64,
    load_ms: AtomicU64,
    waiters: AtomicU64,
    /// Keys that entered the L1 (absent before).
    l1_added: AtomicU64,
    /// Entries taken out of the L1 by the cache itself (invalidation, version, resets).
    l1_removed: AtomicU64,
    decode_errors: AtomicU64,
    l2_errors: AtomicU64,
}

/// A namespace's counters since the cache was built.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct CacheStats {
    /// Reads answered from L1.
    pub l1_hits: u64,
    /// Reads answered from L2.
    pub l2_hits: u64,
    /// Reads that found nothing usable in L1 or L2.
    pub misses: u64,
    /// Stale values served (while refreshing, when a loader failed, or a lock wait ran out).
    pub stale_served: u64,
    /// Loader calls.
    pub loads: u64,
    /// Loader calls that failed.
    pub load_errors: u64,
    /// Milliseconds spent in loaders, in all.
    pub load_ms: u64,
    /// Reads that waited for another process's load.
    pub waiters: u64,
    /// L1 entries evicted for space.
    pub evictions: u64,
    /// Stored values that no longer decode (reloaded).
    pub decode_errors: u64,
    /// L2 calls that failed or timed out.
    pub l2_errors: u64,
    /// Entries in L1 now.
    pub l1_entries: u64,
}

/// What [`Cache::warm`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WarmReport {
    /// Keys now in the cache.
    pub ok: usize,
    /// Keys whose loader failed.
    pub failed: usize,
    /// Loader calls made (keys already fresh were not loaded).
    pub loaded: u64,
    /// The first failure, for the log.
    pub first_error: Option<String>,
}

/// An invalidation message and the cache instance that sent it: an instance skips its own
/// (it applied them already, and a key it just wrote must stay in its L1).
#[derive(Debug, Serialize, Deserialize)]
struct Broadcast {
    from: String,
    message: Message,
}

/// What an invalidation message says.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Message {
    Key(String),
    Tag(String, UnixMs),
    Version(u32),
}

impl<K, V> Cache<K, V, ()>
where
    K: ?Sized + Display,
    V: Clone + Serialize + DeserializeOwned + Send + Sync + 'static,
{
    /// A builder for the namespace `namespace`.
    pub fn builder(namespace: impl Into<String>) -> CacheBuilder<K, V> {
        CacheBuilder {
            cfg: Config {
                app: "celeriac".into(),
                namespace: namespace.into(),
                ttl: Duration::from_secs(60),
                jitter: Duration::ZERO,
                stale: Duration::ZERO,
                swr: true,
                fail_safe: true,
                fail_safe_throttle: Duration::from_secs(5),
                early_refresh: 1.0,
                negative_ttl: None,
                l1_capacity: 10_000,
                l1_ttl: Duration::from_secs(24 * 3600),
                l1_on: true,
                format: Format::Json,
                compress_at: 1024,
                schema: 1,
                l2_timeout: Duration::from_millis(500),
                lock_ttl: Duration::from_secs(10),
                lock_wait: Duration::from_secs(2),
                stats_interval: Some(DEFAULT_STATS_INTERVAL),
            },
            clock: Arc::new(SystemClock),
            custom_clock: false,
            _types: PhantomData,
        }
    }
}

/// One key of a cache, with per-call tags: [`Cache::entry`].
pub struct EntryRef<'a, K: ?Sized, V, S> {
    cache: &'a Cache<K, V, S>,
    key: String,
    tags: Vec<String>,
}

impl<'a, K, V, S> EntryRef<'a, K, V, S>
where
    K: ?Sized + Display,
    V: Clone + Serialize + DeserializeOwned + Send + Sync + 'static,
    S: KvStore,
{
    /// Tags the value when it is loaded or set here.
    pub fn tags<T: Into<String>>(mut self, tags: impl IntoIterator<Item = T>) -> Self {
        self.tags = tags.into_iter().map(Into::into).collect();
        self
    }

    /// The value if L1 or L2 has one (fresh, or stale within its window); no loader runs.
    pub async fn get(self) -> Result<Option<V>> {
        let inner = &self.cache.inner;
        if let Some(slot) = inner.fresh_hit(&self.key, inner.hit_now()) {
            return Ok(slot.value.clone());
        }
        // Boxed: the slow path's large future stays out of the hit path's.
        Ok(Box::pin(inner.read(self.key, self.tags, None))
            .await?
            .flatten())
    }

    /// The value, loaded by `loader` on a miss; a loader's `None` ("not found") is cached
    /// for the negative ttl when one is set.
    ///
    /// # Errors
    /// [`Error::Load`] when the loader failed and no stale value could stand in.
    pub async fn try_get_opt_with<F, Fut, E>(self, loader: F) -> Result<Option<V>>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = std::result::Result<Option<V>, E>> + Send + 'static,
        E: Display + Send + 'static,
    {
        let inner = &self.cache.inner;
        let now = inner.now();
        let fresh = inner.fresh_hit(&self.key, now);
        if let Some(slot) = &fresh {
            if !inner.refresh_early(&slot.meta, now) {
                return Ok(slot.value.clone());
            }
        }
        let loader: Loader<V> =
            Box::new(move || Box::pin(async move { loader().await.map_err(|e| e.to_string()) }));
        if let Some(slot) = fresh {
            inner.refresh_in_background(self.key, self.tags, loader, true);
            return Ok(slot.value.clone());
        }
        Ok(inner
            .read(self.key, self.tags, Some(loader))
            .await?
            .flatten())
    }

    /// The value, loaded by `loader` on a miss.
    ///
    /// # Errors
    /// [`Error::Load`] when the loader failed (or found nothing) and no stale value could
    /// stand in.
    pub async fn try_get_with<F, Fut, E>(self, loader: F) -> Result<V>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = std::result::Result<Option<V>, E>> + Send + 'static,
        E: Display + Send + 'static,
    {
        let key = format!("{}:{}", self.cache.inner.prefix, self.key);
        self.try_get_opt_with(loader).await?.ok_or(Error::Load {
            key,
            message: "the loader found nothing".into(),
        })
    }

    /// The value, loaded by an infallible `loader` on a miss.
    pub async fn get_with<F, Fut>(self, loader: F) -> Result<V>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = V> + Send + 'static,
    {
        self.try_get_with(
            move || async move { Ok::<_, std::convert::Infallible>(Some(loader().await)) },
        )
        .await
    }

    /// Stores `value` in L1 and L2 (write-through), replacing what was there, and tells other
    /// instances to drop their copies.
    pub async fn set(self, value: V) -> Result<()> {
        let inner = &self.cache.inner;
        inner
            .store_value(&self.key, Some(value), self.tags, 0)
            .await?;
        inner.broadcast(Message::Key(self.key)).await;
        Ok(())
    }
}

impl<K, V, S> Cache<K, V, S>
where
    K: ?Sized + Display,
    V: Clone + Serialize + DeserializeOwned + Send + Sync + 'static,
    S: KvStore,
{
    /// One key, to read, load or set with options (tags).
    pub fn entry(&self, key: &K) -> EntryRef<'_, K, V, S> {
        EntryRef {
            cache: self,
            key: key_part(key),
            tags: Vec::new(),
        }
    }

    /// The value if L1 or L2 has one; no loader runs.
    pub async fn get(&self, key: &K) -> Result<Option<V>> {
        self.entry(key).get().await
    }

    /// The value, loaded by an infallible `loader` on a miss.
    pub async fn get_with<F, Fut>(&self, key: &K, loader: F) -> Result<V>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = V> + Send + 'static,
    {
        self.entry(key).get_with(loader).await
    }

    /// The value, loaded by a fallible `loader` on a miss (see [`EntryRef::try_get_with`]).
    pub async fn try_get_with<F, Fut, E>(&self, key: &K, loader: F) -> Result<V>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = std::result::Result<V, E>> + Send + 'static,
        E: Display + Send + 'static,
    {
        self.entry(key)
            .try_get_with(move || async move { loader().await.map(Some) })
            .await
    }

    /// Stores a value (write-through: see [`EntryRef::set`]).
    pub async fn set(&self, key: &K, value: V) -> Result<()> {
        self.entry(key).set(value).await
    }

    /// Deletes a key from L1 and L2 and tells other instances to drop it.
    pub async fn remove(&self, key: &K) -> Result<()> {
        let part = key_part(key);
        let inner = &self.inner;
        inner.l1_drop(&part);
        let full = inner.full_key(&part);
        inner
            .l2(inner.store.kv_delete(vec![full], inner.now()))
            .await?;
        inner.broadcast(Message::Key(part)).await;
        Ok(())
    }

    /// Invalidates every entry tagged `tag` created until now, in O(1): a barrier timestamp
    /// in L2, and a message to the other instances.
    pub async fn invalidate_tag(&self, tag: &str) -> Result<()> {
        let inner = &self.inner;
        let now = inner.now();
        inner.raise_barrier(tag, now);
        let entry = KvEntry {
            key: inner.barrier_key(tag),
            value: now.to_string().into_bytes(),
            ttl: inner.max_life(),
        };
        inner.l2(inner.store.kv_set(vec![entry], now)).await?;
        inner.broadcast(Message::Tag(tag.to_string(), now)).await;
        Ok(())
    }

    /// Moves the namespace to a new key version: every entry written before is left behind.
    /// Returns the new version.
    pub async fn bump_version(&self) -> Result<u32> {
        let inner = &self.inner;
        let now = inner.now();
        let n = inner
            .l2(inner
                .store
                .kv_incr(&format!("{}:generation", inner.prefix), now))
            .await?;
        let version = inner
            .cfg
            .schema
            .saturating_add(u32::try_from(n).unwrap_or(u32::MAX));
        let entry = KvEntry {
            key: format!("{}:version", inner.prefix),
            value: version.to_string().into_bytes(),
            ttl: Duration::from_secs(10 * 365 * 24 * 3600),
        };
        inner.l2(inner.store.kv_set(vec![entry], now)).await?;
        inner.set_version(version);
        inner.broadcast(Message::Version(version)).await;
        Ok(version)
    }

    /// Loads `keys` ahead of use with at most `concurrency` loads at once; `progress` is
    /// called with (done, total) as keys finish. Keys already fresh in L1 or L2 are not
    /// loaded again.
    pub async fn warm<T, F, Fut, E>(
        &self,
        keys: impl IntoIterator<Item = T>,
        concurrency: usize,
        loader: F,
        mut progress: impl FnMut(usize, usize),
    ) -> WarmReport
    where
        T: std::borrow::Borrow<K> + Send + 'static,
        F: Fn(&T) -> Fut,
        Fut: Future<Output = std::result::Result<V, E>> + Send + 'static,
        E: Display + Send + 'static,
    {
        use futures_util::stream::{self, StreamExt};
        let keys: Vec<T> = keys.into_iter().collect();
        let total = keys.len();
        let loads = self.stats().loads;
        let mut report = WarmReport::default();
        let mut results = stream::iter(keys.into_iter().map(|k| {
            let load = loader(&k);
            let entry = self.entry(k.borrow());
            async move {
                entry
                    .try_get_with(move || async move { load.await.map(Some) })
                    .await
            }
        }))
        .buffer_unordered(concurrency.max(1));
        let mut done = 0;
        while let Some(r) = results.next().await {
            done += 1;
            match r {
                Ok(_) => report.ok += 1,
                Err(e) => {
                    report.failed += 1;
                    if report.first_error.is_none() {
                        report.first_error = Some(e.to_string());
                    }
                }
            }
            progress(done, total);
        }
        report.loaded = self.stats().loads.saturating_sub(loads);
        report
    }

    /// Drops this process's L1 copies (the L2 is untouched).
    pub fn clear_local(&self) {
        self.inner.l1_clear();
    }

    /// The key this cache stores `key` under in L2: `<app>:<namespace>:v<version>:<key>`.
    pub fn storage_key(&self, key: &K) -> String {
        self.inner.full_key(&key_part(key))
    }

    /// The namespace's counters in this instance.
    pub fn stats(&self) -> CacheStats {
        self.inner.stats()
    }

    /// Publishes the counters now (as the cache does every
    /// [`CacheBuilder::stats_interval`]): adds what happened since the last publication to
    /// the `metrics` counters, and writes this instance's snapshot to the L2, where
    /// [`stats::read_stats`] and `celeriac cache stats` sum it with the other live instances'.
    ///
    /// # Errors
    /// The store's, when the snapshot cannot be written.
    pub async fn publish_stats(&self) -> Result<()> {
        self.inner.publish_stats().await
    }

    /// This instance's name in the published statistics (`<pid>.<uuid>`).
    pub fn instance(&self) -> &str {
        &self.inner.instance
    }

    /// Whether the L2 is in use now (false while its circuit breaker is open).
    pub fn l2_available(&self) -> bool {
        self.inner.breaker.allows(Instant::now())
    }

    /// Whether the invalidation channel is subscribed now.
    pub fn listening(&self) -> bool {
        self.inner.listening.load(Ordering::Relaxed)
    }

    /// The namespace.
    pub fn namespace(&self) -> &str {
        &self.inner.cfg.namespace
    }
}

/// The key part of a key: its text, or `#` and the SHA-256 of a long one.
fn key_part<K: ?Sized + Display>(key: &K) -> String {
    // `to_string` has fast paths for strings and integers that `write!` lacks.
    let s = key.to_string();
    if s.len() <= MAX_KEY_PART {
        return s;
    }
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(s.as_bytes());
    let mut out = String::with_capacity(65);
    out.push('#');
    for b in digest {
        let _ = write!(out, "{b:02x}");
    }
    out
}

type Loader<V> =
    Box<dyn FnOnce() -> BoxFuture<'static, std::result::Result<Option<V>, String>> + Send>;

/// What L2 had for a key.
enum L2Read<V> {
    Fresh(Slot<V>),
    Stale(Slot<V>),
    Missing,
}

impl<V, S> Inner<V, S>
where
    V: Clone + Serialize + DeserializeOwned + Send + Sync + 'static,
    S: KvStore,
{
    fn now(&self) -> UnixMs {
        self.clock.now_ms()
    }

    /// Now, for judging an L1 hit: the coarse clock (an atomic load, at most about a
    /// millisecond behind) unless the cache was given a clock.
    fn hit_now(&self) -> UnixMs {
        match &self.coarse_hits {
            Some(fleet) => fleet.coarse_now_ms(),
            None => self.clock.now_ms(),
        }
    }

    fn stats(&self) -> CacheStats {
        let c = &self.stats;
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        self.l1.run_pending_tasks();
        CacheStats {
            l1_hits: l(&c.l1_hits),
            l2_hits: l(&c.l2_hits),
            misses: l(&c.misses),
            stale_served: l(&c.stale_served),
            loads: l(&c.loads),
            load_errors: l(&c.load_errors),
            load_ms: l(&c.load_ms),
            waiters: l(&c.waiters),
            // What entered and is neither there nor taken out by the cache was evicted
            // (capacity or expiry).
            evictions: l(&c.l1_added)
                .saturating_sub(l(&c.l1_removed))
                .saturating_sub(self.l1.entry_count()),
            decode_errors: l(&c.decode_errors),
            l2_errors: l(&c.l2_errors),
            l1_entries: self.l1.entry_count(),
        }
    }

    async fn publish_stats(&self) -> Result<()> {
        // One publication at a time, so the metrics deltas are counted once.
        let mut published = self.published.lock().await;
        let now = self.stats();
        published.record(now);
        let every = self.cfg.stats_interval.unwrap_or(DEFAULT_STATS_INTERVAL);
        let write = stats::publish(
            &*self.store,
            &self.cfg.app,
            &self.cfg.namespace,
            &self.instance,
            now,
            every,
            self.now(),
        );
        // Not through the breaker: publishing must not count as cache traffic.
        match tokio::time::timeout(self.cfg.l2_timeout * 4, write).await {
            Ok(r) => r,
            Err(_) => Err(Error::backend(
                crate::ErrorKind::Retry,
                "the cache's statistics were not written in time",
            )),
        }
    }

    fn l1_put(&self, part: String, slot: Arc<Slot<V>>) {
        if self.cfg.l1_on {
            if !self.l1.contains_key(&part) {
                self.stats.l1_added.fetch_add(1, Ordering::Relaxed);
            }
            self.l1.insert(part, slot);
        }
    }

    /// Takes `part` out of the L1 (not an eviction).
    fn l1_drop(&self, part: &str) {
        if self.l1.remove(part).is_some() {
            self.stats.l1_removed.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Empties the L1 (not evictions).
    fn l1_clear(&self) {
        self.l1.run_pending_tasks();
        self.stats
            .l1_removed
            .fetch_add(self.l1.entry_count(), Ordering::Relaxed);
        self.l1.invalidate_all();
    }

    fn full_key(&self, part: &str) -> String {
        format!(
            "{}:v{}:{part}",
            self.prefix,
            self.version.load(Ordering::Relaxed)
        )
    }

    fn barrier_key(&self, tag: &str) -> String {
        format!("{}:tag:{}", self.prefix, key_part(tag))
    }

    /// The longest an entry lives: its freshness and its stale window.
    fn max_life(&self) -> Duration {
        self.cfg.ttl
            + self
                .cfg
                .stale
                .max(self.cfg.negative_ttl.unwrap_or_default())
    }

    /// Runs an L2 call under the timeout and the breaker.
    async fn l2<T>(&self, call: impl Future<Output = Result<T>>) -> Result<T> {
        let now = Instant::now();
        if !self.breaker.allows(now) {
            return Err(Error::backend(
                crate::ErrorKind::Retry,
                "the cache's L2 is unavailable (circuit open)",
            ));
        }
        let r = match tokio::time::timeout(self.cfg.l2_timeout, call).await {
            Ok(r) => r,
            Err(_) => Err(Error::backend(
                crate::ErrorKind::Retry,
                format!(
                    "the cache's L2 did not answer within {:?}",
                    self.cfg.l2_timeout
                ),
            )),
        };
        match &r {
            Ok(_) => {
                if self.breaker.success() {
                    info!(namespace = %self.cfg.namespace, "cache L2 is back");
                }
            }
            Err(e) => {
                self.stats.l2_errors.fetch_add(1, Ordering::Relaxed);
                if self.breaker.failure(Instant::now()) {
                    warn!(namespace = %self.cfg.namespace, error = %e,
                        "cache L2 unavailable; serving L1 and loaders until it is back");
                }
            }
        }
        r
    }

    fn barred(&self, meta: &Meta) -> bool {
        if meta.tags.is_empty() {
            return false;
        }
        let Ok(barriers) = self.barriers.lock() else {
            return false;
        };
        meta.tags
            .iter()
            .any(|t| barriers.get(t).is_some_and(|b| *b >= meta.created))
    }

    fn raise_barrier(&self, tag: &str, at: UnixMs) {
        if let Ok(mut b) = self.barriers.lock() {
            let e = b.entry(tag.to_string()).or_insert(at);
            *e = (*e).max(at);
        }
        self.barrier_epoch.fetch_add(1, Ordering::Relaxed);
    }

    fn set_version(&self, version: u32) {
        if self.version.swap(version, Ordering::Relaxed) != version {
            self.l1_clear();
        }
    }

    async fn refresh_version(&self) {
        let key = format!("{}:version", self.prefix);
        if let Ok(mut v) = self.l2(self.store.kv_get(vec![key], self.now())).await {
            let stored = v
                .pop()
                .flatten()
                .and_then(|b| String::from_utf8(b).ok())
                .and_then(|s| s.trim().parse::<u32>().ok());
            if let Some(version) = stored {
                self.set_version(version.max(self.cfg.schema));
            }
        }
    }

    async fn broadcast(&self, message: Message) {
        let sent = Broadcast {
            from: self.instance.clone(),
            message,
        };
        let Ok(bytes) = serde_json::to_vec(&sent) else {
            return;
        };
        if let Err(e) = self.l2(self.store.kv_publish(&self.prefix, bytes)).await {
            debug!(error = %e, "cache invalidation not broadcast");
        }
    }

    /// The L1 slot for `part` if it is usable: not barred by a tag, not hard-expired.
    fn l1_slot(&self, part: &str, now: UnixMs) -> Option<Arc<Slot<V>>> {
        let slot = self.l1.get(part)?;
        let epoch = self.barrier_epoch.load(Ordering::Relaxed);
        if (slot.epoch != epoch && self.barred(&slot.meta)) || now >= slot.meta.stale_until {
            self.l1_drop(part);
            return None;
        }
        Some(slot)
    }

    /// XFetch: refresh early with a probability that grows as expiry nears.
    fn refresh_early(&self, meta: &Meta, now: UnixMs) -> bool {
        if self.cfg.early_refresh <= 0.0 || meta.fresh_until <= now {
            return false;
        }
        let delta = f64::from(meta.load_ms.max(1));
        // Far from expiry the chance is below e^-30: skip the draw.
        if (meta.fresh_until - now) as f64 > delta * self.cfg.early_refresh * 30.0 {
            return false;
        }
        let r: f64 = rand::random::<f64>().max(f64::MIN_POSITIVE);
        let early = -delta * self.cfg.early_refresh * r.ln();
        now as f64 + early >= meta.fresh_until as f64
    }

    /// A fresh L1 value, counted as a hit: the fast path of every read.
    fn fresh_hit(&self, part: &str, now: UnixMs) -> Option<Arc<Slot<V>>> {
        let slot = self.l1_slot(part, now)?;
        if now < slot.meta.fresh_until {
            self.stats.l1_hits.fetch_add(1, Ordering::Relaxed);
            Some(slot)
        } else {
            None
        }
    }

    /// A read: L1, then one flight per key (L2, the lock, the loader).
    async fn read(
        self: &Arc<Self>,
        part: String,
        tags: Vec<String>,
        loader: Option<Loader<V>>,
    ) -> Result<Option<Option<V>>> {
        let now = self.hit_now();
        if let Some(slot) = self.l1_slot(&part, now) {
            if now < slot.meta.fresh_until {
                self.stats.l1_hits.fetch_add(1, Ordering::Relaxed);
                if let Some(l) = loader {
                    if self.refresh_early(&slot.meta, now) {
                        self.refresh_in_background(part, tags, l, true);
                    }
                }
                return Ok(Some(slot.value.clone()));
            }
            if self.cfg.swr {
                if let Some(l) = loader {
                    self.stats.stale_served.fetch_add(1, Ordering::Relaxed);
                    self.refresh_in_background(part, tags, l, false);
                    return Ok(Some(slot.value.clone()));
                }
            }
        }
        let out = self.flight(part.clone(), tags, loader, false).await;
        match out {
            Ok(v) => Ok(Some(v)),
            Err(message) if message == MISSING => Ok(None),
            Err(message) => Err(Error::Load {
                key: format!("{}:{part}", self.prefix),
                message,
            }),
        }
    }

    /// The flight of `part`: the one under way, or a new one. A flight removes itself from
    /// the map when it lands.
    fn flight(
        self: &Arc<Self>,
        part: String,
        tags: Vec<String>,
        loader: Option<Loader<V>>,
        reload: bool,
    ) -> Flight<V> {
        let Ok(mut flights) = self.flights.lock() else {
            let me = self.clone();
            return async move { me.fly(part, tags, loader, reload).await }
                .boxed()
                .shared();
        };
        if let Some((_, f)) = flights.get(&part) {
            return f.clone();
        }
        let id = self.flight_ids.fetch_add(1, Ordering::Relaxed);
        let me = self.clone();
        let key = part.clone();
        let f = async move {
            let out = me.clone().fly(key.clone(), tags, loader, reload).await;
            if let Ok(mut flights) = me.flights.lock() {
                if flights.get(&key).is_some_and(|(fid, _)| *fid == id) {
                    flights.remove(&key);
                }
            }
            out
        }
        .boxed()
        .shared();
        flights.insert(part, (id, f.clone()));
        f
    }

    /// Refreshes `part` without waiting for it (unless a flight for it is under way).
    fn refresh_in_background(
        self: &Arc<Self>,
        part: String,
        tags: Vec<String>,
        loader: Loader<V>,
        reload: bool,
    ) {
        let f = self.flight(part, tags, Some(loader), reload);
        tokio::spawn(f);
    }

    /// The shared part of a miss: L2, then the lock and the loader.
    async fn fly(
        self: Arc<Self>,
        part: String,
        tags: Vec<String>,
        loader: Option<Loader<V>>,
        reload: bool,
    ) -> std::result::Result<Option<V>, String> {
        let stale_l1 = self.l1.get(&part);
        let read = if reload {
            Ok(L2Read::Missing)
        } else {
            self.read_l2(&part).await
        };
        let stale = match read {
            Ok(L2Read::Fresh(slot)) => {
                self.stats.l2_hits.fetch_add(1, Ordering::Relaxed);
                let value = slot.value.clone();
                self.l1_put(part, Arc::new(slot));
                return Ok(value);
            }
            Ok(L2Read::Stale(slot)) => Some(slot),
            Ok(L2Read::Missing) | Err(_) => stale_l1.map(|s| Slot {
                value: s.value.clone(),
                meta: s.meta.clone(),
                epoch: s.epoch,
            }),
        };
        let Some(loader) = loader else {
            return match stale {
                Some(s) => {
                    self.stats.stale_served.fetch_add(1, Ordering::Relaxed);
                    Ok(s.value)
                }
                None => {
                    self.stats.misses.fetch_add(1, Ordering::Relaxed);
                    Err(MISSING.to_string())
                }
            };
        };
        if stale.is_none() {
            self.stats.misses.fetch_add(1, Ordering::Relaxed);
        }
        self.reload(&part, tags, loader, stale).await
    }

    /// Loads a key under the cross-process lock and stores it; on failure serves `stale`.
    async fn reload(
        self: &Arc<Self>,
        part: &str,
        tags: Vec<String>,
        loader: Loader<V>,
        stale: Option<Slot<V>>,
    ) -> std::result::Result<Option<V>, String> {
        let full = self.full_key(part);
        let lock_key = format!("{full}:lock");
        let token = uuid::Uuid::now_v7().to_string();
        let locked = self
            .l2(self
                .store
                .kv_lock(&lock_key, &token, self.cfg.lock_ttl, self.now()))
            .await;
        if let Ok(false) = locked {
            // Another process loads it: wait for its value, a bounded time.
            self.stats.waiters.fetch_add(1, Ordering::Relaxed);
            let deadline = Instant::now() + self.cfg.lock_wait;
            let mut nap = Duration::from_millis(5);
            while Instant::now() < deadline {
                tokio::time::sleep(nap).await;
                nap = (nap * 2).min(Duration::from_millis(100));
                if let Ok(L2Read::Fresh(slot)) = self.read_l2(part).await {
                    let value = slot.value.clone();
                    self.l1_put(part.to_string(), Arc::new(slot));
                    return Ok(value);
                }
            }
            if let Some(s) = stale {
                self.stats.stale_served.fetch_add(1, Ordering::Relaxed);
                return Ok(s.value);
            }
        }
        let started = Instant::now();
        self.stats.loads.fetch_add(1, Ordering::Relaxed);
        let loaded = loader().await;
        let took = started.elapsed();
        metrics::histogram!("celeriac_cache_load_seconds", "namespace" => self.cfg.namespace.clone())
            .record(took.as_secs_f64());
        let load_ms = u32::try_from(took.as_millis()).unwrap_or(u32::MAX);
        self.stats
            .load_ms
            .fetch_add(u64::from(load_ms), Ordering::Relaxed);
        let out = match loaded {
            Ok(value) => {
                if value.is_none() && self.cfg.negative_ttl.is_none() {
                    self.l1_drop(part);
                    Err(MISSING.to_string())
                } else {
                    let _ = self.store_value(part, value.clone(), tags, load_ms).await;
                    Ok(value)
                }
            }
            Err(e) => {
                self.stats.load_errors.fetch_add(1, Ordering::Relaxed);
                match stale {
                    Some(s) if self.cfg.fail_safe && self.now() < s.meta.stale_until => {
                        warn!(namespace = %self.cfg.namespace, key = part, error = %e,
                            "loader failed; serving the stale value (fail-safe)");
                        self.stats.stale_served.fetch_add(1, Ordering::Relaxed);
                        // Not called again for this key until the throttle ends.
                        let mut meta = s.meta.clone();
                        meta.fresh_until = (self.now() + duration_ms(self.cfg.fail_safe_throttle))
                            .min(meta.stale_until);
                        let value = s.value.clone();
                        self.l1_put(
                            part.to_string(),
                            Arc::new(Slot {
                                value: s.value,
                                meta,
                                epoch: self.barrier_epoch.load(Ordering::Relaxed),
                            }),
                        );
                        Ok(value)
                    }
                    _ => Err(e),
                }
            }
        };
        if let Ok(true) = locked {
            let _ = self.l2(self.store.kv_unlock(&lock_key, &token)).await;
        }
        out
    }

    /// Writes a value to L1 and L2 with fresh times.
    async fn store_value(
        &self,
        part: &str,
        value: Option<V>,
        tags: Vec<String>,
        load_ms: u32,
    ) -> Result<()> {
        let now = self.now();
        let life = match &value {
            Some(_) => {
                let jitter = duration_ms(self.cfg.jitter);
                let cut = if jitter > 0 {
                    rand::random::<u64>() % (jitter as u64 + 1)
                } else {
                    0
                };
                duration_ms(self.cfg.ttl) - cut as i64
            }
            None => duration_ms(self.cfg.negative_ttl.unwrap_or(self.cfg.ttl)),
        };
        let fresh_until = now + life;
        let meta = Meta {
            created: now,
            fresh_until,
            stale_until: fresh_until + duration_ms(self.cfg.stale),
            load_ms,
            tags,
        };
        let bytes = match &value {
            Some(v) => Some(self.cfg.format.encode(v)?),
            None => None,
        };
        let envelope = Envelope {
            meta: meta.clone(),
            schema: self.cfg.schema,
            format: self.cfg.format,
            value: bytes,
        };
        self.l1_put(
            part.to_string(),
            Arc::new(Slot {
                value,
                meta: meta.clone(),
                epoch: self.barrier_epoch.load(Ordering::Relaxed),
            }),
        );
        let ttl = Duration::from_millis(u64::try_from(meta.stale_until - now).unwrap_or(1).max(1));
        let entry = KvEntry {
            key: self.full_key(part),
            value: envelope.to_bytes(self.cfg.compress_at),
            ttl,
        };
        self.l2(self.store.kv_set(vec![entry], now)).await
    }

    /// Reads a key from L2 and checks it against its tags' barriers.
    async fn read_l2(&self, part: &str) -> Result<L2Read<V>> {
        let now = self.now();
        let full = self.full_key(part);
        let mut got = self.l2(self.store.kv_get(vec![full], now)).await?;
        let Some(bytes) = got.pop().flatten() else {
            return Ok(L2Read::Missing);
        };
        let decoded = Envelope::from_bytes(&bytes).and_then(|env| {
            if env.schema != self.cfg.schema {
                return Err(Error::Codec(format!(
                    "written with schema {}, this cache reads {}",
                    env.schema, self.cfg.schema
                )));
            }
            let value = match &env.value {
                Some(b) => Some(env.format.decode::<V>(b)?),
                None => None,
            };
            Ok((env.meta, value))
        });
        let (meta, value) = match decoded {
            Ok(d) => d,
            Err(e) => {
                self.stats.decode_errors.fetch_add(1, Ordering::Relaxed);
                debug!(namespace = %self.cfg.namespace, key = part, error = %e,
                    "cached value does not decode; reloading");
                return Ok(L2Read::Missing);
            }
        };
        if !meta.tags.is_empty() {
            let keys = meta.tags.iter().map(|t| self.barrier_key(t)).collect();
            let barriers = self.l2(self.store.kv_get(keys, now)).await?;
            for (tag, b) in meta.tags.iter().zip(barriers) {
                let at = b
                    .and_then(|b| String::from_utf8(b).ok())
                    .and_then(|s| s.parse::<UnixMs>().ok());
                if let Some(at) = at {
                    self.raise_barrier(tag, at);
                }
            }
            if self.barred(&meta) {
                return Ok(L2Read::Missing);
            }
        }
        if now >= meta.stale_until {
            return Ok(L2Read::Missing);
        }
        let slot = Slot {
            value,
            epoch: self.barrier_epoch.load(Ordering::Relaxed),
            meta,
        };
        if now < slot.meta.fresh_until {
            Ok(L2Read::Fresh(slot))
        } else {
            Ok(L2Read::Stale(slot))
        }
    }

    fn apply(&self, message: Message) {
        match message {
            Message::Key(part) => self.l1_drop(&part),
            Message::Tag(tag, at) => self.raise_barrier(&tag, at),
            Message::Version(v) => self.set_version(v),
        }
    }
}

/// The flight result that stands for "nothing there".
const MISSING: &str = "\u{0}missing";

/// Follows the namespace's invalidation channel while the cache lives, starting with the
/// subscription `build` made if it made one; resubscribes with backoff, and flushes L1
/// whenever messages may have been lost.
async fn listen<V, S>(cache: Weak<Inner<V, S>>, mut first: Option<KvSubscription>)
where
    V: Clone + Serialize + DeserializeOwned + Send + Sync + 'static,
    S: KvStore,
{
    let mut backoff = Duration::from_millis(100);
    loop {
        let mut sub = match first.take() {
            Some(sub) => sub,
            None => {
                let Some(inner) = cache.upgrade() else { return };
                match inner.store.kv_subscribe(&inner.prefix).await {
                    Ok(sub) => {
                        backoff = Duration::from_millis(100);
                        // Messages sent while unsubscribed are lost: start over.
                        inner.l1_clear();
                        inner.refresh_version().await;
                        inner.listening.store(true, Ordering::Relaxed);
                        sub
                    }
                    Err(e) => {
                        debug!(error = %e, "cache invalidation channel unavailable; retrying");
                        drop(inner);
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(5));
                        continue;
                    }
                }
            }
        };
        loop {
            // Wake now and then to notice that the cache is gone.
            let event = tokio::time::timeout(Duration::from_secs(1), sub.next()).await;
            let Some(inner) = cache.upgrade() else { return };
            match event {
                Err(_) => continue,
                Ok(None) => {
                    inner.listening.store(false, Ordering::Relaxed);
                    break;
                }
                Ok(Some(KvEvent::Message(bytes))) => {
                    match serde_json::from_slice::<Broadcast>(&bytes) {
                        Ok(b) if b.from == inner.instance => {}
                        Ok(b) => inner.apply(b.message),
                        // A bare message (from an older build).
                        Err(_) => {
                            if let Ok(m) = serde_json::from_slice::<Message>(&bytes) {
                                inner.apply(m);
                            }
                        }
                    }
                }
                Ok(Some(KvEvent::Reset)) => {
                    inner.l1_clear();
                    inner.refresh_version().await;
                }
            }
        }
    }
}

/// Publishes the counters every `every` while the cache lives.
async fn publish_every<V, S>(cache: Weak<Inner<V, S>>, every: Duration)
where
    V: Clone + Serialize + DeserializeOwned + Send + Sync + 'static,
    S: KvStore,
{
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(inner) = cache.upgrade() else { return };
        if let Err(e) = inner.publish_stats().await {
            debug!(namespace = %inner.cfg.namespace, error = %e, "cache statistics not published");
        }
    }
}

/// The L2's circuit breaker: opens after consecutive failures, probes once per open period
/// (doubling up to 30 s), closes on a success.
#[derive(Debug, Default)]
struct Breaker {
    state: Mutex<BreakerState>,
}

#[derive(Debug, Default)]
struct BreakerState {
    failures: u32,
    open_until: Option<Instant>,
    open_for: Duration,
}

const BREAKER_THRESHOLD: u32 = 3;

impl Breaker {
    fn allows(&self, now: Instant) -> bool {
        self.state
            .lock()
            .map(|s| s.open_until.is_none_or(|u| now >= u))
            .unwrap_or(true)
    }

    /// Records a success; true when this closed an open breaker.
    fn success(&self) -> bool {
        let Ok(mut s) = self.state.lock() else {
            return false;
        };
        let was_open = s.open_until.is_some();
        *s = BreakerState::default();
        was_open
    }

    /// Records a failure; true when this opened the breaker.
    fn failure(&self, now: Instant) -> bool {
        let Ok(mut s) = self.state.lock() else {
            return false;
        };
        s.failures += 1;
        if s.failures < BREAKER_THRESHOLD {
            return false;
        }
        let was_open = s.open_until.is_some();
        s.open_for = if was_open {
            (s.open_for * 2).min(Duration::from_secs(30))
        } else {
            Duration::from_secs(1)
        };
        s.open_until = Some(now + s.open_for);
        !was_open
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_keys_are_hashed_and_short_ones_kept() {
        assert_eq!(key_part("product:7"), "product:7");
        let long = "x".repeat(MAX_KEY_PART + 1);
        let h = key_part(long.as_str());
        assert!(h.starts_with('#') && h.len() == 65, "{h}");
        assert_eq!(h, key_part(long.as_str()), "stable");
        assert_ne!(h, key_part(format!("{long}y").as_str()));
    }

    #[test]
    fn the_breaker_opens_after_failures_and_closes_on_success() {
        let b = Breaker::default();
        let t = Instant::now();
        assert!(!b.failure(t) && !b.failure(t));
        assert!(b.failure(t), "the third failure opens it");
        assert!(!b.allows(t));
        assert!(
            b.allows(t + Duration::from_millis(1001)),
            "a probe after the open period"
        );
        assert!(
            !b.failure(t + Duration::from_millis(1001)),
            "still open, now for longer"
        );
        assert!(!b.allows(t + Duration::from_millis(2500)));
        assert!(b.success(), "a success closes it");
        assert!(b.allows(t));
    }
}
