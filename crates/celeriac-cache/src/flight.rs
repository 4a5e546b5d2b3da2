//! The read path past a fresh L1 hit: one flight per key in this process, which reads the
//! L2, takes the cross-process load lock, calls the loader and stores its value (steps 2 to
//! 5 of the [module docs](super)).
//!
//! A flight lands as an [`Outcome`]: a value, nothing, or the loader's error. Flights are
//! keyed by the key and the loader's error type (as moka's are), so every read that joins a
//! flight gets that error as its own type, the same `Arc` for all of them. A read without a
//! loader (`get`) counts as one whose loader cannot fail
//! ([`Infallible`](std::convert::Infallible)), so it shares the flights of `get_with`. Reads
//! of one key with different loader error types load separately in this process, and the
//! cross-process lock still makes the later one wait for the earlier one's value.

use super::l2::L2Read;
use super::Envelope;
use super::{Inner, Meta, Slot};
use celeriac_core::backend::{KvEntry, KvStore};
use celeriac_core::clock::{duration_ms, UnixMs};
use celeriac_core::error::Result;
use futures_util::future::{BoxFuture, FutureExt, Shared};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::fmt::Display;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tracing::warn;

/// When the data of a loaded value was read: its loader's start on the fleet clock, and the
/// barrier epoch then.
#[derive(Debug, Clone, Copy)]
pub(super) struct AsOf {
    at: UnixMs,
    epoch: u64,
}

/// How a flight lands, for each read that waited for it.
pub(super) enum Outcome<V, E> {
    /// A value: fresh, or stale standing in.
    Found(V),
    /// Nothing to serve: no value (or a cached "not found") and no loader to ask, or a
    /// loader that found nothing.
    Missing,
    /// The loader failed and no stale value could stand in.
    Failed(Arc<E>),
}

/// Counts a flight in [`CacheStats::loading`](crate::CacheStats::loading) while it lives.
struct Loading<'a>(&'a AtomicU64);

impl<'a> Loading<'a> {
    fn start(gauge: &'a AtomicU64) -> Self {
        gauge.fetch_add(1, Ordering::Relaxed);
        Self(gauge)
    }
}

impl Drop for Loading<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl<V: Clone, E> Clone for Outcome<V, E> {
    fn clone(&self) -> Self {
        match self {
            Outcome::Found(v) => Outcome::Found(v.clone()),
            Outcome::Missing => Outcome::Missing,
            Outcome::Failed(e) => Outcome::Failed(e.clone()),
        }
    }
}

impl<V, E> Outcome<V, E> {
    /// A stored value: `None` is a cached "not found".
    fn of(value: Option<V>) -> Self {
        value.map_or(Outcome::Missing, Outcome::Found)
    }
}

/// A load under way for one key, shared by every read that waits for it.
pub(super) type Flight<V, E> = Shared<BoxFuture<'static, Outcome<V, E>>>;

/// The flights under way: by key and loader error type, each with its id and its
/// [`Flight`] (of the `V` of the cache and the `E` of the key's `TypeId`).
pub(super) type Flights = Mutex<HashMap<(String, TypeId), (u64, Box<dyn Any + Send + Sync>)>>;

/// A loader, boxed so one flight type serves every caller's closure.
pub(super) type Loader<V, E> =
    Box<dyn FnOnce() -> BoxFuture<'static, std::result::Result<Option<V>, E>> + Send>;

impl<V, S> Inner<V, S>
where
    V: Clone + Serialize + DeserializeOwned + Send + Sync + 'static,
    S: KvStore,
{
    /// XFetch: refresh early with a probability that grows as expiry nears.
    pub(super) fn refresh_early(&self, meta: &Meta, now: UnixMs) -> bool {
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

    /// A read: L1, then one flight per key (L2, the lock, the loader).
    pub(super) async fn read<E>(
        self: &Arc<Self>,
        part: &str,
        tags: Vec<String>,
        loader: Option<Loader<V, E>>,
    ) -> Outcome<V, E>
    where
        E: Display + Send + Sync + 'static,
    {
        let now = self.hit_now();
        if let Some(slot) = self.l1_slot(part, now) {
            if now < slot.meta.fresh_until {
                self.stats.l1_hits.fetch_add(1, Ordering::Relaxed);
                if let Some(l) = loader {
                    if self.refresh_early(&slot.meta, now) {
                        self.refresh_in_background(part.to_string(), tags, l, true);
                    }
                }
                return Outcome::of(slot.value.clone());
            }
            if self.cfg.swr {
                if let Some(l) = loader {
                    self.stats.stale_served.fetch_add(1, Ordering::Relaxed);
                    self.refresh_in_background(part.to_string(), tags, l, false);
                    return Outcome::of(slot.value.clone());
                }
            }
        }
        self.flight(part.to_string(), tags, loader, false).await
    }

    /// The flight of `part` for loaders that fail with `E`: the one under way, or a new one.
    /// A flight removes itself from the map when it lands.
    fn flight<E>(
        self: &Arc<Self>,
        part: String,
        tags: Vec<String>,
        loader: Option<Loader<V, E>>,
        reload: bool,
    ) -> Flight<V, E>
    where
        E: Display + Send + Sync + 'static,
    {
        let Ok(mut flights) = self.flights.lock() else {
            let me = self.clone();
            return async move { me.fly(part, tags, loader, reload).await }
                .boxed()
                .shared();
        };
        let key = (part, TypeId::of::<E>());
        // The key's `TypeId` makes the downcast succeed; were it ever to fail, a new flight
        // takes the entry's place.
        if let Some(f) = flights
            .get(&key)
            .and_then(|(_, f)| f.downcast_ref::<Flight<V, E>>())
        {
            return f.clone();
        }
        let id = self.flight_ids.fetch_add(1, Ordering::Relaxed);
        let me = self.clone();
        let k = key.clone();
        let f = async move {
            // Counted until the flight has left the map, or is dropped unfinished.
            let _loading = Loading::start(&me.stats.loading);
            let out = me.clone().fly(k.0.clone(), tags, loader, reload).await;
            if let Ok(mut flights) = me.flights.lock() {
                if flights.get(&k).is_some_and(|(fid, _)| *fid == id) {
                    flights.remove(&k);
                }
            }
            out
        }
        .boxed()
        .shared();
        flights.insert(key, (id, Box::new(f.clone())));
        f
    }

    /// Refreshes `part` without waiting for it (unless a flight for it is under way).
    pub(super) fn refresh_in_background<E>(
        self: &Arc<Self>,
        part: String,
        tags: Vec<String>,
        loader: Loader<V, E>,
        reload: bool,
    ) where
        E: Display + Send + Sync + 'static,
    {
        let f = self.flight(part, tags, Some(loader), reload);
        tokio::spawn(f);
    }

    /// The shared part of a miss: L2, then the lock and the loader.
    async fn fly<E>(
        self: Arc<Self>,
        part: String,
        tags: Vec<String>,
        loader: Option<Loader<V, E>>,
        reload: bool,
    ) -> Outcome<V, E>
    where
        E: Display + Send + Sync + 'static,
    {
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
                return Outcome::of(value);
            }
            Ok(L2Read::Stale(slot)) => Some(slot),
            Ok(L2Read::Missing) | Err(_) => stale_l1.map(|s| Slot {
                value: s.value.clone(),
                meta: s.meta.clone(),
                epoch: s.epoch,
                bytes: s.bytes,
            }),
        };
        let Some(loader) = loader else {
            return match stale {
                Some(s) => {
                    self.stats.stale_served.fetch_add(1, Ordering::Relaxed);
                    Outcome::of(s.value)
                }
                None => {
                    self.stats.misses.fetch_add(1, Ordering::Relaxed);
                    Outcome::Missing
                }
            };
        };
        if stale.is_none() {
            self.stats.misses.fetch_add(1, Ordering::Relaxed);
        }
        self.reload(&part, tags, loader, stale).await
    }

    /// Loads a key under the cross-process lock and stores it; on failure serves `stale`.
    async fn reload<E>(
        self: &Arc<Self>,
        part: &str,
        tags: Vec<String>,
        loader: Loader<V, E>,
        stale: Option<Slot<V>>,
    ) -> Outcome<V, E>
    where
        E: Display + Send + Sync + 'static,
    {
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
                    return Outcome::of(value);
                }
            }
            if let Some(s) = stale {
                self.stats.stale_served.fetch_add(1, Ordering::Relaxed);
                return Outcome::of(s.value);
            }
        }
        let started = Instant::now();
        // What the loader reads is as of now: a tag barrier raised while it runs bars it.
        let as_of = AsOf {
            at: self.now(),
            epoch: self.barrier_epoch.load(Ordering::Relaxed),
        };
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
                    Outcome::Missing
                } else {
                    let _ = self
                        .store_value(part, value.clone(), tags, load_ms, Some(as_of))
                        .await;
                    Outcome::of(value)
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
                                bytes: s.bytes,
                            }),
                        );
                        Outcome::of(value)
                    }
                    _ => Outcome::Failed(Arc::new(e)),
                }
            }
        };
        if let Ok(true) = locked {
            let _ = self.l2(self.store.kv_unlock(&lock_key, &token)).await;
        }
        out
    }

    /// Writes a value to L1 and L2 with fresh times. A loaded value is created `as_of` its
    /// loader's start (a value written directly, `None`, as of now), so that a tag
    /// invalidated while the loader ran bars it, in this process and in every other.
    pub(super) async fn store_value(
        &self,
        part: &str,
        value: Option<V>,
        tags: Vec<String>,
        load_ms: u32,
        as_of: Option<AsOf>,
    ) -> Result<()> {
        let now = self.now();
        // When a load began: a removal of the key since then takes its value out again.
        let loaded_since = as_of.as_ref().map(|a| a.at);
        let as_of = as_of.unwrap_or(AsOf {
            at: now,
            epoch: self.barrier_epoch.load(Ordering::Relaxed),
        });
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
            created: as_of.at.min(now),
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
            // The epoch the load began in: a barrier raised since is checked on read.
            Arc::new(Slot::new(value, &envelope, as_of.epoch)),
        );
        let key = self.full_key(part);
        let stored = self.write_l2(part, &key, &meta, &envelope, now).await;
        if let Some(began) = loaded_since {
            self.undo_if_removed_since(part, &key, began).await;
        }
        stored
    }

    /// Writes an envelope to L2 under `key`, with its tags' barriers first; one too large
    /// for L2 is kept out of it (its older L2 value goes).
    async fn write_l2(
        &self,
        part: &str,
        key: &str,
        meta: &Meta,
        envelope: &Envelope,
        now: UnixMs,
    ) -> Result<()> {
        if let Some(len) = envelope.value.as_ref().map(Vec::len) {
            if len > self.cfg.max_value_bytes {
                return self.keep_out_of_l2(part, len, now).await;
            }
        }
        let ttl = Duration::from_millis(u64::try_from(meta.stale_until - now).unwrap_or(1).max(1));
        let written = async {
            // The tags' barriers first, kept at least as long as the entry: a barrier then
            // goes missing only if the store evicts it, and the entry reads as absent. One
            // created here bars only entries older than this one's load.
            if !meta.tags.is_empty() {
                let barriers = meta
                    .tags
                    .iter()
                    .map(|t| KvEntry {
                        key: self.barrier_key(t),
                        value: (meta.created - 1).to_string().into_bytes(),
                        ttl: self.max_life().max(ttl),
                    })
                    .collect();
                self.l2(self.store.kv_ensure(barriers, now)).await?;
            }
            let entry = KvEntry {
                key: key.to_string(),
                value: envelope.to_bytes(self.cfg.compress_at),
                ttl,
            };
            self.l2(self.store.kv_set(vec![entry], now)).await
        };
        match written.await {
            // Refused for space: served and kept in L1; the key's older L2 value goes, so no
            // instance reads it in place of this one.
            Err(e) if e.kind() == celeriac_core::ErrorKind::Full => self
                .l2(self.store.kv_delete(vec![key.to_string()], now))
                .await
                .map(|_| ()),
            other => other,
        }
    }
}
