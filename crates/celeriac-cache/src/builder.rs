//! Building a cache: [`CacheBuilder`], its settings with their defaults, and the checks
//! that refuse settings that make no sense.

use super::invalidation::listen;
use super::stats::{publish_every, Counters};
use super::{
    stats, Cache, Format, Inner, L2Guard, Slot, DEFAULT_STATS_INTERVAL, L1_ENTRY_OVERHEAD,
};
use celeriac_core::backend::KvStore;
use celeriac_core::clock::{Clock, SystemClock};
use celeriac_core::error::{Error, Result};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::collections::HashMap;
use std::fmt::Display;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tracing::debug;

/// The largest serialized value a namespace writes to its L2 unless told otherwise
/// ([`CacheBuilder::max_value_bytes`]): 1 MiB.
pub const DEFAULT_MAX_VALUE_BYTES: usize = 1 << 20;

/// How a cache is built: see [`Cache::builder`].
pub struct CacheBuilder<K: ?Sized, V> {
    pub(super) cfg: Config,
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

/// A cache's settings (see the [`CacheBuilder`] methods for each one's meaning).
#[derive(Debug, Clone)]
pub(super) struct Config {
    pub(super) app: String,
    pub(super) namespace: String,
    pub(super) ttl: Duration,
    pub(super) jitter: Duration,
    pub(super) stale: Duration,
    pub(super) swr: bool,
    pub(super) fail_safe: bool,
    pub(super) fail_safe_throttle: Duration,
    pub(super) early_refresh: f64,
    pub(super) negative_ttl: Option<Duration>,
    pub(super) l1_capacity: u64,
    pub(super) l1_ttl: Duration,
    pub(super) l1_max_bytes: Option<u64>,
    pub(super) l1_on: bool,
    pub(super) format: Format,
    pub(super) compress_at: usize,
    pub(super) max_value_bytes: usize,
    pub(super) schema: u32,
    pub(super) l2_timeout: Duration,
    pub(super) lock_ttl: Duration,
    pub(super) lock_wait: Duration,
    pub(super) stats_interval: Option<Duration>,
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
                l1_max_bytes: None,
                l1_on: true,
                format: Format::Json,
                compress_at: 1024,
                max_value_bytes: DEFAULT_MAX_VALUE_BYTES,
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
    /// Bounds the L1 in bytes too, next to its bound in entries ([`CacheBuilder::l1`];
    /// default: entries only). An entry weighs its key's bytes, its envelope's
    /// [size](crate::Envelope::size) (the value serialized, uncompressed, with its times and
    /// tags) and [`L1_ENTRY_OVERHEAD`](crate::L1_ENTRY_OVERHEAD), and at least its share of
    /// the bound, `bytes / capacity`: so the weights never add up past `bytes`, and the
    /// entries never outnumber the capacity. An entry heavier than the whole bound is not
    /// kept in L1 (it is still returned, and stored in the L2), and is counted as evicted for
    /// size ([`CacheStats::l1_evicted_size`](crate::CacheStats)).
    ///
    /// `bytes` must be at least the entry capacity (a share of one byte or more), at least
    /// one entry's overhead, and each share at most `u32::MAX` bytes: [`CacheBuilder::build`]
    /// refuses other values, naming the setting.
    pub fn l1_max_bytes(mut self, bytes: u64) -> Self {
        self.cfg.l1_max_bytes = Some(bytes);
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
    /// The largest value, serialized and before compression, written to the L2 (default
    /// [`DEFAULT_MAX_VALUE_BYTES`], 1 MiB; zero is refused). A larger value is still returned
    /// to the caller and kept in this process's L1, but not stored in the L2 (and an older
    /// value of its key is removed from there): other processes miss it and load it
    /// themselves. Each such value is counted ([`CacheStats::too_large`](crate::CacheStats)).
    /// It bounds what every process sharing the namespace may have to read back.
    pub fn max_value_bytes(mut self, bytes: usize) -> Self {
        self.cfg.max_value_bytes = bytes;
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
        if let Some(bytes) = c.l1_max_bytes {
            let setting = || format!("cache `{}` l1_max_bytes", c.namespace);
            if bytes < u64::from(L1_ENTRY_OVERHEAD) {
                return Err(Error::config(
                    setting(),
                    format!(
                        "{bytes} is less than one entry's overhead ({L1_ENTRY_OVERHEAD} bytes): \
                         nothing would fit"
                    ),
                ));
            }
            if bytes < c.l1_capacity {
                return Err(Error::config(
                    setting(),
                    format!(
                        "{bytes} is less than the l1 capacity ({} entries): each entry's share \
                         of the bound must be at least one byte",
                        c.l1_capacity
                    ),
                ));
            }
            if bytes / c.l1_capacity > u64::from(u32::MAX) {
                return Err(Error::config(
                    setting(),
                    format!(
                        "{bytes} over {} entries gives each a share above 4 GiB: raise the \
                         l1 capacity or lower the bound",
                        c.l1_capacity
                    ),
                ));
            }
        }
        if !c.early_refresh.is_finite() || c.early_refresh < 0.0 {
            return Err(Error::config(
                format!("cache `{}` early_refresh", c.namespace),
                "beta must be a finite number, 0 or more",
            ));
        }
        if c.max_value_bytes == 0 {
            return Err(Error::config(
                format!("cache `{}` max_value_bytes", c.namespace),
                "must be above zero",
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
        let counted = stats.clone();
        let l1 = moka::sync::Cache::builder()
            .time_to_live(cfg.l1_ttl)
            // Evictions by cause. Removals by our hand (`Explicit`) are counted where they
            // are made, with their reason; `Replaced` is no departure.
            .eviction_listener(move |_key, _slot, cause| {
                use moka::notification::RemovalCause;
                let counter = match cause {
                    RemovalCause::Size => &counted.l1_evicted_size,
                    RemovalCause::Expired => &counted.l1_expired,
                    RemovalCause::Explicit | RemovalCause::Replaced => return,
                };
                counter.fetch_add(1, Ordering::Relaxed);
            });
        let l1 = match (cfg.l1_max_bytes, cfg.l1_share()) {
            (Some(bytes), Some(share)) => l1
                .max_capacity(bytes)
                .weigher(move |key: &String, slot: &Arc<Slot<V>>| l1_weight(share, key, slot))
                .build(),
            // Unbounded in bytes: every entry weighs 1 and the capacity counts entries.
            _ => l1.max_capacity(cfg.l1_capacity).build(),
        };
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
            l2_guard: L2Guard::default(),
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

impl Config {
    /// Each L1 entry's share of the byte bound (`l1_max_bytes / l1_capacity`), when the L1
    /// is bounded in bytes.
    pub(super) fn l1_share(&self) -> Option<u32> {
        let bytes = self.l1_max_bytes?;
        Some(u32::try_from(bytes / self.l1_capacity.max(1)).unwrap_or(u32::MAX))
    }
}

/// What an L1 entry weighs when the L1 is bounded in bytes: its key, its envelope and
/// [`L1_ENTRY_OVERHEAD`], and at least its `share` of the bound (so that the entry bound
/// holds too).
pub(super) fn l1_weight<V>(share: u32, key: &str, slot: &Slot<V>) -> u32 {
    let key = u32::try_from(key.len()).unwrap_or(u32::MAX);
    L1_ENTRY_OVERHEAD
        .saturating_add(key)
        .saturating_add(slot.bytes)
        .max(share)
}
