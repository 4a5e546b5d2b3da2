//! A two-level cache: an in-process L1 ([moka], W-TinyLFU) over an L2 shared by every
//! process (any [`KvStore`]: the embedded SQLite file or Redis).
//!
//! ```no_run
//! # use celeriac_cache::Cache;
//! # use std::{sync::Arc, time::Duration};
//! # async fn demo<S: celeriac_core::KvStore>(store: Arc<S>) -> Result<(), Box<dyn std::error::Error>> {
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
//! 2. **One load per key per process**: concurrent misses of a key share one flight, and
//!    each gets what it brings back: the value, or the loader's error as the same `Arc<E>`
//!    ([`CacheError::Load`]).
//! 3. **L2**: a fresh value there is copied to L1.
//! 4. **One load per key across processes**: the flight takes a short lease lock in L2 (a
//!    token, compare-and-delete release); a process that does not get it waits a bounded
//!    time for the value to appear in L2, then serves the stale value, or loads itself.
//! 5. **The loader**; its value goes to L1 and L2. When it fails and fail-safe is on, the
//!    stale value is served (within its hard expiry) and the loader is not called again for
//!    the fail-safe throttle.
//!
//! **Outages**: every L2 call has a timeout and the L2 sits behind a small circuit breaker
//! of the cache's own (three failures open it for 1 s, doubling up to 30 s); with
//! the L2 down, the cache serves L1 and calls the loader (single-flighted), logs the outage
//! once, counts it, and goes back to the L2 by itself once a probe succeeds.
//!
//! **Invalidation**: [`Cache::remove`] deletes a key, and leaves a mark so that a load of it
//! already running anywhere takes its value back out once stored; [`Cache::invalidate_tag`] writes a tag
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
//! **L1 size**: bounded in entries ([`CacheBuilder::l1`]) and, optionally, in bytes too
//! ([`CacheBuilder::l1_max_bytes`]: each entry weighs its key, its envelope and
//! [`L1_ENTRY_OVERHEAD`], and at least its share of the bound). What leaves the L1 is counted
//! by cause: evicted for size, expired, or removed by the cache ([`CacheStats`]).
//!
//! **Statistics**: [`Cache::stats`] in process; every 10 s each cache publishes them to the
//! `metrics` recorder and to the L2, where `celeriac cache stats` sums the live instances
//! ([`stats`]).
//!
//! **Warming**: [`Cache::warm`], and [`Warmer`]s that `celeriac cache warm` and the
//! `celeriac.cache.warm` job run. **Writing**: [`Cache::write_through`] and [`WriteBehind`]
//! ([`mod@write`]).
//!
//! Where each part lives: [`CacheBuilder`] and its settings in `builder`, the per-key API
//! ([`EntryRef`]) in `entry`, the read path and its single flight in `flight`, the guarded
//! L2 calls in `l2`, invalidation and its channel in `invalidation`.

mod builder;
mod entry;
mod envelope;
mod error;
mod flight;
mod invalidation;
mod l2;
pub mod stats;
mod warm;
pub mod write;

pub use builder::{CacheBuilder, DEFAULT_MAX_VALUE_BYTES};
pub use entry::EntryRef;
pub use envelope::{Envelope, Format, Meta, MAX_VALUE_BYTES};
pub use error::CacheError;
pub use invalidation::REMOVAL_MARK_TTL;
pub use stats::{CacheStats, NamespaceStats, DEFAULT_STATS_INTERVAL};
pub use warm::{CacheWarmer, WarmProgress, WarmReport, Warmer};
pub use write::{write_behind_task, PendingWrite, WriteBehind};

use builder::Config;
use celeriac_core::backend::KvStore;
use celeriac_core::clock::{Clock, UnixMs};
use celeriac_core::error::Result;
use flight::Flights;
use l2::L2Guard;
use serde::de::DeserializeOwned;
use serde::Serialize;
use stats::Counters;
use std::collections::HashMap;
use std::fmt::{Display, Write as _};
use std::future::Future;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The longest key part kept as it is; longer ones are hashed.
pub const MAX_KEY_PART: usize = 200;

/// What an L1 entry weighs beyond its key's bytes and its envelope's
/// [size](Envelope::size) when the L1 is bounded in bytes
/// ([`CacheBuilder::l1_max_bytes`]): the key's `String` and the `Arc<Slot>` with its
/// times, tags vector and epoch (about 120 bytes on 64-bit targets), and moka's own
/// bookkeeping per entry (its hash-table node, access-order and write-order deque nodes and
/// entry info, about 130 bytes). Rounded up, so that many tiny values cannot hold far more
/// memory than the bound says.
pub const L1_ENTRY_OVERHEAD: u32 = 256;

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
    /// Its envelope's [size](Envelope::size): what it weighs in a byte-bounded L1.
    bytes: u32,
}

impl<V> Slot<V> {
    /// A slot for `envelope`'s value, decoded as `value`.
    fn new(value: Option<V>, envelope: &Envelope, epoch: u64) -> Self {
        Self {
            value,
            meta: envelope.meta.clone(),
            epoch,
            bytes: u32::try_from(envelope.size()).unwrap_or(u32::MAX),
        }
    }
}

struct Inner<V, S> {
    cfg: Config,
    prefix: String,
    store: Arc<S>,
    clock: Arc<dyn Clock>,
    /// L1 hits judged by the fleet clock's coarse reading (the cache was given no clock of
    /// its own).
    coarse_hits: Option<Arc<celeriac_core::clock::FleetClock>>,
    l1: moka::sync::Cache<String, Arc<Slot<V>>>,
    flights: Flights,
    flight_ids: AtomicU64,
    barriers: Mutex<HashMap<String, UnixMs>>,
    barrier_epoch: AtomicU64,
    version: AtomicU32,
    l2_guard: L2Guard,
    stats: Arc<Counters>,
    listening: AtomicBool,
    /// This instance's name in the published statistics.
    instance: String,
    published: tokio::sync::Mutex<stats::Published>,
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
    ///
    /// # Errors
    /// As [`EntryRef::get_with`].
    pub async fn get_with<F, Fut>(&self, key: &K, loader: F) -> std::result::Result<V, CacheError>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = V> + Send + 'static,
    {
        self.entry(key).get_with(loader).await
    }

    /// The value, loaded by a fallible `loader` on a miss.
    ///
    /// # Errors
    /// [`CacheError::Load`] when the loader failed and no stale value could stand in: its
    /// error, shared (the same `Arc`) with every read of the key that waited for that load;
    /// see [`EntryRef::try_get_with`].
    pub async fn try_get_with<F, Fut, E>(
        &self,
        key: &K,
        loader: F,
    ) -> std::result::Result<V, CacheError<E>>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = std::result::Result<V, E>> + Send + 'static,
        E: Display + Send + Sync + 'static,
    {
        self.entry(key)
            .try_get_with(move || async move { loader().await.map(Some) })
            .await
    }

    /// Stores a value (write-through: see [`EntryRef::set`]).
    pub async fn set(&self, key: &K, value: V) -> Result<()> {
        self.entry(key).set(value).await
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
        self.inner.l2_guard.allows(Instant::now())
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

    fn l1_put(&self, part: String, slot: Arc<Slot<V>>) {
        if !self.cfg.l1_on {
            return;
        }
        let fresh = !self.l1.contains_key(&part);
        if fresh {
            self.stats.l1_added.fetch_add(1, Ordering::Relaxed);
        }
        if let (Some(max), Some(share)) = (self.cfg.l1_max_bytes, self.cfg.l1_share()) {
            if u64::from(builder::l1_weight(share, &part, &slot)) > max {
                // Larger than the whole L1: it enters and is evicted for size at once (as
                // moka would do on its next maintenance), and an older value of the key
                // leaves with it, so the L1 never serves one.
                if !fresh {
                    if self.l1.remove(&part).is_some() {
                        self.stats.l1_removed.fetch_add(1, Ordering::Relaxed);
                    }
                    self.stats.l1_added.fetch_add(1, Ordering::Relaxed);
                }
                self.stats.l1_evicted_size.fetch_add(1, Ordering::Relaxed);
                return;
            }
        }
        self.l1.insert(part, slot);
    }

    /// Takes `part` out of the L1 because it is past its hard expiry (an expiry, not a
    /// removal).
    fn l1_expire(&self, part: &str) {
        if self.l1.remove(part).is_some() {
            self.stats.l1_expired.fetch_add(1, Ordering::Relaxed);
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

    /// The name of a key in errors and logs: `<app>:<namespace>:<key>`.
    fn label(&self, part: &str) -> String {
        format!("{}:{part}", self.prefix)
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

    /// The L1 slot for `part` if it is usable: not barred by a tag, not hard-expired.
    fn l1_slot(&self, part: &str, now: UnixMs) -> Option<Arc<Slot<V>>> {
        let slot = self.l1.get(part)?;
        let epoch = self.barrier_epoch.load(Ordering::Relaxed);
        if now >= slot.meta.stale_until {
            self.l1_expire(part);
            return None;
        }
        if slot.epoch != epoch && self.barred(&slot.meta) {
            self.l1_drop(part);
            return None;
        }
        Some(slot)
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
}
