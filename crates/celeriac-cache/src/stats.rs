//! A namespace's counters ([`CacheStats`], kept by each cache instance) and their
//! publication: to the [`metrics`] facade, and as a snapshot in the L2 that
//! `celeriac cache stats` sums over the live instances.
//!
//! Every cache publishes every [`DEFAULT_STATS_INTERVAL`] (see
//! [`CacheBuilder::stats_interval`](super::CacheBuilder::stats_interval)), and on
//! [`Cache::publish_stats`](super::Cache::publish_stats):
//!
//! - **metrics**: counters `celeriac_cache_{l1_hits,l2_hits,misses,stale_served,loads,
//!   load_errors,waiters,evictions,decode_errors,l2_errors,l2_full,l2_barriers_lost,too_large}_total`, the gauges
//!   `celeriac_cache_l1_entries` and `celeriac_cache_loading` (loads under way), all labelled
//!   `namespace`; the histogram
//!   `celeriac_cache_load_seconds` is recorded at each load. Counters are incremented by what
//!   happened since the last publication, so several caches of one namespace in a process add
//!   up.
//! - **L2 snapshot**: the instance's counters under `<app>:<namespace>:stats:<instance>`,
//!   kept for [`SNAPSHOT_LIFETIMES`] intervals, so an instance that stops drops out after
//!   that; the live instances listed under `<app>:<namespace>:stats`; and the namespaces of
//!   an application under `<app>:caches`, so the command line lists them without a scan.
//!   Both lists are updated under a short lease lock (`<list key>:lock`); a list write
//!   that loses the race is made at the next publication.

use super::Inner;
use celeriac_core::backend::KvStore;
use celeriac_core::clock::UnixMs;
use celeriac_core::error::{Error, Result};
use celeriac_core::published;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Weak;
use std::time::Duration;
use tracing::debug;

/// How often a cache publishes its counters unless told otherwise.
pub const DEFAULT_STATS_INTERVAL: Duration = Duration::from_secs(10);

/// A snapshot is kept this many publication intervals.
pub const SNAPSHOT_LIFETIMES: u32 = 3;

/// How long the namespace index of an application is kept after its last change; every
/// cache adds its namespace again when it is missing.
const INDEX_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

/// The counters of one namespace summed over its live instances: [`read_stats`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NamespaceStats {
    /// The namespace.
    pub namespace: String,
    /// Instances whose snapshot is live.
    pub instances: u32,
    /// Their counters, summed.
    pub stats: CacheStats,
}

impl NamespaceStats {
    /// Reads answered by L1 or L2 out of all reads (hits and misses), or `None` before any.
    pub fn hit_ratio(&self) -> Option<f64> {
        let s = &self.stats;
        let hits = s.l1_hits + s.l2_hits;
        let all = hits + s.misses;
        (all > 0).then(|| hits as f64 / all as f64)
    }

    /// The mean load time in milliseconds, or `None` before any load.
    pub fn mean_load_ms(&self) -> Option<f64> {
        let s = &self.stats;
        (s.loads > 0).then(|| s.load_ms as f64 / s.loads as f64)
    }
}

/// One instance's published counters.
#[derive(Debug, Serialize, Deserialize)]
struct Snapshot {
    at: UnixMs,
    stats: CacheStats,
}

/// The key of one instance's snapshot.
pub fn snapshot_key(app: &str, namespace: &str, instance: &str) -> String {
    format!("{app}:{namespace}:stats:{instance}")
}

/// The key of a namespace's list of live instances.
pub fn instances_key(app: &str, namespace: &str) -> String {
    format!("{app}:{namespace}:stats")
}

/// The key of an application's namespace index.
pub fn index_key(app: &str) -> String {
    format!("{app}:caches")
}

/// Writes `instance`'s snapshot and makes sure the instance and the namespace are listed.
pub(super) async fn publish<S: KvStore>(
    store: &S,
    app: &str,
    namespace: &str,
    instance: &str,
    stats: CacheStats,
    interval: Duration,
    now: UnixMs,
) -> Result<()> {
    let keep = interval * SNAPSHOT_LIFETIMES;
    let snapshot = serde_json::to_vec(&Snapshot { at: now, stats })
        .map_err(|e| celeriac_core::Error::Codec(e.to_string()))?;
    let keys = published::Keys {
        snapshot: &snapshot_key(app, namespace, instance),
        instances: &instances_key(app, namespace),
        index: &index_key(app),
    };
    published::publish(
        store, keys, namespace, instance, snapshot, keep, INDEX_TTL, now,
    )
    .await
}

/// The namespaces of application `app` whose caches published counters (sorted).
///
/// # Errors
/// The store's, when it cannot be read.
pub async fn namespaces<S: KvStore>(store: &S, app: &str, now: UnixMs) -> Result<Vec<String>> {
    published::names(store, &index_key(app), now).await
}

/// The counters of `namespace` summed over its live instances (none: all zero).
///
/// # Errors
/// The store's, when it cannot be read.
pub async fn read_stats<S: KvStore>(
    store: &S,
    app: &str,
    namespace: &str,
    now: UnixMs,
) -> Result<NamespaceStats> {
    let snapshots: Vec<Snapshot> = published::live(
        store,
        &instances_key(app, namespace),
        |id| snapshot_key(app, namespace, id),
        now,
    )
    .await?;
    let mut out = NamespaceStats {
        namespace: namespace.to_string(),
        ..NamespaceStats::default()
    };
    for s in snapshots {
        out.instances += 1;
        out.stats += s.stats;
    }
    Ok(out)
}

/// Handles into the `metrics` recorder for one namespace, and what was last published.
pub(super) struct Published {
    namespace: String,
    last: CacheStats,
}

impl Published {
    pub(super) fn new(namespace: &str) -> Self {
        Self {
            namespace: namespace.to_string(),
            last: CacheStats::default(),
        }
    }

    /// Adds what happened since the last call to the `metrics` counters.
    pub(super) fn record(&mut self, now: CacheStats) {
        let ns = self.namespace.clone();
        let last = std::mem::replace(&mut self.last, now);
        let counters: [(&'static str, u64, u64); 17] = [
            ("celeriac_cache_l1_hits_total", now.l1_hits, last.l1_hits),
            ("celeriac_cache_l2_hits_total", now.l2_hits, last.l2_hits),
            ("celeriac_cache_misses_total", now.misses, last.misses),
            (
                "celeriac_cache_stale_served_total",
                now.stale_served,
                last.stale_served,
            ),
            ("celeriac_cache_loads_total", now.loads, last.loads),
            (
                "celeriac_cache_load_errors_total",
                now.load_errors,
                last.load_errors,
            ),
            ("celeriac_cache_waiters_total", now.waiters, last.waiters),
            (
                "celeriac_cache_evictions_total",
                now.evictions,
                last.evictions,
            ),
            ("celeriac_cache_l1_added_total", now.l1_added, last.l1_added),
            (
                "celeriac_cache_l1_evicted_size_total",
                now.l1_evicted_size,
                last.l1_evicted_size,
            ),
            (
                "celeriac_cache_l1_expired_total",
                now.l1_expired,
                last.l1_expired,
            ),
            (
                "celeriac_cache_l1_removed_total",
                now.l1_removed,
                last.l1_removed,
            ),
            (
                "celeriac_cache_decode_errors_total",
                now.decode_errors,
                last.decode_errors,
            ),
            (
                "celeriac_cache_l2_errors_total",
                now.l2_errors,
                last.l2_errors,
            ),
            ("celeriac_cache_l2_full_total", now.l2_full, last.l2_full),
            (
                "celeriac_cache_l2_barriers_lost_total",
                now.l2_barriers_lost,
                last.l2_barriers_lost,
            ),
            (
                "celeriac_cache_too_large_total",
                now.too_large,
                last.too_large,
            ),
        ];
        for (name, now, last) in counters {
            let delta = now.saturating_sub(last);
            if delta > 0 {
                metrics::counter!(name, "namespace" => ns.clone()).increment(delta);
            }
        }
        // Gauges move by this instance's change, so instances of a namespace add up.
        let gauges = [
            ("celeriac_cache_l1_entries", now.l1_entries, last.l1_entries),
            ("celeriac_cache_loading", now.loading, last.loading),
            (
                "celeriac_cache_l1_weighted_bytes",
                now.l1_weighted_bytes,
                last.l1_weighted_bytes,
            ),
            (
                "celeriac_cache_l1_max_bytes",
                now.l1_max_bytes,
                last.l1_max_bytes,
            ),
        ];
        for (name, now, last) in gauges {
            if now != last {
                metrics::gauge!(name, "namespace" => ns.clone())
                    .increment(now as f64 - last as f64);
            }
        }
    }
}

impl std::ops::AddAssign for CacheStats {
    fn add_assign(&mut self, o: Self) {
        self.l1_hits += o.l1_hits;
        self.l2_hits += o.l2_hits;
        self.misses += o.misses;
        self.stale_served += o.stale_served;
        self.loads += o.loads;
        self.load_errors += o.load_errors;
        self.load_ms += o.load_ms;
        self.waiters += o.waiters;
        self.loading += o.loading;
        self.evictions += o.evictions;
        self.decode_errors += o.decode_errors;
        self.l2_errors += o.l2_errors;
        self.l2_full += o.l2_full;
        self.l2_barriers_lost += o.l2_barriers_lost;
        self.too_large += o.too_large;
        self.l1_entries += o.l1_entries;
        self.l1_added += o.l1_added;
        self.l1_evicted_size += o.l1_evicted_size;
        self.l1_expired += o.l1_expired;
        self.l1_removed += o.l1_removed;
        self.l1_weighted_bytes += o.l1_weighted_bytes;
        self.l1_max_bytes += o.l1_max_bytes;
    }
}

/// Per-namespace counters: [`Cache::stats`].
#[derive(Debug, Default)]
pub(super) struct Counters {
    pub(super) l1_hits: AtomicU64,
    pub(super) l2_hits: AtomicU64,
    pub(super) misses: AtomicU64,
    pub(super) stale_served: AtomicU64,
    pub(super) loads: AtomicU64,
    pub(super) load_errors: AtomicU64,
    pub(super) load_ms: AtomicU64,
    pub(super) waiters: AtomicU64,
    /// Loads under way now: each key's flight, counted while it runs.
    pub(super) loading: AtomicU64,
    /// Keys that entered the L1 (absent before).
    pub(super) l1_added: AtomicU64,
    /// Entries taken out of the L1 by the cache itself (invalidation, version, resets).
    pub(super) l1_removed: AtomicU64,
    /// Entries evicted from the L1 for space (moka's `Size`), or too heavy to be kept.
    pub(super) l1_evicted_size: AtomicU64,
    /// Entries that left the L1 expired: moka's `l1` time to live, or found past their hard
    /// expiry on a read.
    pub(super) l1_expired: AtomicU64,
    pub(super) decode_errors: AtomicU64,
    pub(super) l2_errors: AtomicU64,
    /// Writes the L2 refused because it was full.
    pub(super) l2_full: AtomicU64,
    /// Tagged L2 entries read as absent because a barrier of theirs was gone.
    pub(super) l2_barriers_lost: AtomicU64,
    pub(super) too_large: AtomicU64,
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
    /// Loads under way now, each key's single flight once (its loader, or its wait for
    /// another process's load, and its writes), background refreshes included.
    pub loading: u64,
    /// L1 entries evicted: for space or expired (`l1_evicted_size + l1_expired`).
    pub evictions: u64,
    /// Stored values that no longer decode (reloaded).
    pub decode_errors: u64,
    /// L2 calls that failed or timed out (not counting writes refused for space).
    pub l2_errors: u64,
    /// Writes the L2 refused because it was full (Redis `OOM` under `noeviction`): the value
    /// is served and kept in L1, and the key's old L2 value deleted, so no stale copy stays.
    pub l2_full: u64,
    /// Tagged entries read from L2 and taken as absent because one of their tags' barriers
    /// was no longer in L2 (evicted by the store, so whether it had been raised is unknown);
    /// each is reloaded. Non-zero only on a store that evicts.
    pub l2_barriers_lost: u64,
    /// Values kept out of L2 because they were over the namespace's
    /// [`max_value_bytes`](crate::CacheBuilder::max_value_bytes) (returned, and kept in L1).
    pub too_large: u64,
    /// Entries in L1 now.
    pub l1_entries: u64,
    /// Entries that entered the L1 (their key absent before). Each is still there or left
    /// for one counted cause: `l1_added = l1_entries + l1_evicted_size + l1_expired +
    /// l1_removed`, give or take reads racing with writes.
    pub l1_added: u64,
    /// L1 entries evicted for space (by the entry or the byte bound), including values too
    /// heavy for a byte-bounded L1, which are not kept in it.
    pub l1_evicted_size: u64,
    /// L1 entries that expired (the L1's time to live, or the value's hard expiry).
    pub l1_expired: u64,
    /// L1 entries taken out by the cache itself (removal, invalidation, a new version,
    /// [`Cache::clear_local`](crate::Cache::clear_local)); not evictions.
    pub l1_removed: u64,
    /// The L1's weighted size in bytes now, when it is bounded in bytes
    /// ([`CacheBuilder::l1_max_bytes`](crate::CacheBuilder::l1_max_bytes)): each entry's
    /// weight, at least its share of the bound; 0 when it is not.
    pub l1_weighted_bytes: u64,
    /// The L1's byte bound (0: bounded in entries only). Summed over instances, it is the
    /// most their L1s may weigh together.
    pub l1_max_bytes: u64,
}

impl<V, S> Inner<V, S>
where
    V: Clone + Serialize + DeserializeOwned + Send + Sync + 'static,
    S: KvStore,
{
    pub(super) fn stats(&self) -> CacheStats {
        let c = &self.stats;
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        // Pending evictions done first, so that the counts and the weighted size agree.
        self.l1.run_pending_tasks();
        let bounded = self.cfg.l1_max_bytes.is_some();
        CacheStats {
            l1_hits: l(&c.l1_hits),
            l2_hits: l(&c.l2_hits),
            misses: l(&c.misses),
            stale_served: l(&c.stale_served),
            loads: l(&c.loads),
            load_errors: l(&c.load_errors),
            load_ms: l(&c.load_ms),
            waiters: l(&c.waiters),
            loading: l(&c.loading),
            evictions: l(&c.l1_evicted_size) + l(&c.l1_expired),
            decode_errors: l(&c.decode_errors),
            l2_errors: l(&c.l2_errors),
            l2_full: l(&c.l2_full),
            l2_barriers_lost: l(&c.l2_barriers_lost),
            too_large: l(&c.too_large),
            l1_entries: self.l1.entry_count(),
            l1_added: l(&c.l1_added),
            l1_evicted_size: l(&c.l1_evicted_size),
            l1_expired: l(&c.l1_expired),
            l1_removed: l(&c.l1_removed),
            l1_weighted_bytes: if bounded { self.l1.weighted_size() } else { 0 },
            l1_max_bytes: self.cfg.l1_max_bytes.unwrap_or(0),
        }
    }

    pub(super) async fn publish_stats(&self) -> Result<()> {
        // One publication at a time, so the metrics deltas are counted once.
        let mut published = self.published.lock().await;
        let now = self.stats();
        published.record(now);
        let every = self.cfg.stats_interval.unwrap_or(DEFAULT_STATS_INTERVAL);
        let write = publish(
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
                celeriac_core::ErrorKind::Retry,
                "the cache's statistics were not written in time",
            )),
        }
    }
}

/// Publishes the counters every `every` while the cache lives.
pub(super) async fn publish_every<V, S>(cache: Weak<Inner<V, S>>, every: Duration)
where
    V: Clone + Serialize + DeserializeOwned + Send + Sync + 'static,
    S: KvStore,
{
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(inner) = cache.upgrade() else { return };
        inner.keep_version().await;
        if let Err(e) = inner.publish_stats().await {
            debug!(namespace = %inner.cfg.namespace, error = %e, "cache statistics not published");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use metrics::{
        Counter, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit,
    };
    use std::collections::BTreeMap;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::{Arc, Mutex};

    /// Keeps every counter and gauge it is asked for, by name and labels.
    #[derive(Default)]
    struct Kept {
        counters: Mutex<BTreeMap<String, Arc<AtomicU64>>>,
        gauges: Mutex<BTreeMap<String, Arc<AtomicU64>>>,
    }

    fn name(key: &Key) -> String {
        let labels: Vec<String> = key
            .labels()
            .map(|l| format!("{}={}", l.key(), l.value()))
            .collect();
        format!("{}{{{}}}", key.name(), labels.join(","))
    }

    impl Recorder for Kept {
        fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
            let mut c = self.counters.lock().expect("lock");
            Counter::from_arc(c.entry(name(key)).or_default().clone())
        }
        fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
            let mut g = self.gauges.lock().expect("lock");
            Gauge::from_arc(g.entry(name(key)).or_default().clone())
        }
        fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> Histogram {
            Histogram::noop()
        }
    }

    #[test]
    fn metrics_get_what_happened_since_the_last_publication() {
        let kept = Kept::default();
        let mut a = Published::new("products");
        let mut b = Published::new("products");
        let at = |l1_hits, loads, l1_entries| CacheStats {
            l1_hits,
            loads,
            l1_entries,
            ..CacheStats::default()
        };
        metrics::with_local_recorder(&kept, || {
            a.record(at(10, 2, 5));
            a.record(at(15, 2, 3));
            // A second cache of the namespace in the process adds to the same counters.
            b.record(at(1, 1, 1));
        });
        let counter = |n: &str| {
            kept.counters
                .lock()
                .expect("lock")
                .get(&format!("{n}{{namespace=products}}"))
                .map(|c| c.load(Ordering::Relaxed))
        };
        assert_eq!(counter("celeriac_cache_l1_hits_total"), Some(16));
        assert_eq!(counter("celeriac_cache_loads_total"), Some(3));
        assert_eq!(
            counter("celeriac_cache_misses_total"),
            None,
            "nothing to add"
        );
        let entries = kept
            .gauges
            .lock()
            .expect("lock")
            .get("celeriac_cache_l1_entries{namespace=products}")
            .map(|g| f64::from_bits(g.load(Ordering::Relaxed)));
        assert_eq!(entries, Some(4.0), "3 in a and 1 in b");
    }

    #[test]
    fn l1_departures_and_weight_reach_the_metrics() {
        let kept = Kept::default();
        let mut a = Published::new("pages");
        let at = |l1_evicted_size, l1_expired, l1_weighted_bytes| CacheStats {
            l1_evicted_size,
            l1_expired,
            l1_weighted_bytes,
            l1_max_bytes: 1 << 20,
            ..CacheStats::default()
        };
        metrics::with_local_recorder(&kept, || {
            a.record(at(4, 1, 900_000));
            a.record(at(10, 1, 700_000));
        });
        let counter = |n: &str| {
            kept.counters
                .lock()
                .expect("lock")
                .get(&format!("{n}{{namespace=pages}}"))
                .map(|c| c.load(Ordering::Relaxed))
        };
        let gauge = |n: &str| {
            kept.gauges
                .lock()
                .expect("lock")
                .get(&format!("{n}{{namespace=pages}}"))
                .map(|g| f64::from_bits(g.load(Ordering::Relaxed)))
        };
        assert_eq!(counter("celeriac_cache_l1_evicted_size_total"), Some(10));
        assert_eq!(counter("celeriac_cache_l1_expired_total"), Some(1));
        assert_eq!(
            counter("celeriac_cache_l1_removed_total"),
            None,
            "nothing removed"
        );
        assert_eq!(gauge("celeriac_cache_l1_weighted_bytes"), Some(700_000.0));
        assert_eq!(
            gauge("celeriac_cache_l1_max_bytes"),
            Some(f64::from(1 << 20))
        );
    }
}
