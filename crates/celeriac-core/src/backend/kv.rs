//! [`KvStore`]: keys with values that expire, lease locks, counters and broadcast channels,
//! the cache's second level.

use crate::clock::{StoreClock, UnixMs};
use crate::error::Result;
use std::future::Future;
use std::time::Duration;

/// One value to store under a key, until `ttl` from the call's `now`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KvEntry {
    /// The key.
    pub key: String,
    /// The bytes.
    pub value: Vec<u8>,
    /// How long the store keeps it (above zero).
    pub ttl: Duration,
}

/// How a key-value store's memory stands ([`KvStore::kv_memory`]).
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub struct KvMemory {
    /// Bytes in use: Redis's `used_memory` (everything the server holds, not only the
    /// cache's keys); on SQLite the bytes of the cache's keys and values.
    pub used_bytes: u64,
    /// The most the store may use before it evicts or refuses writes (`maxmemory`, a SQLite
    /// cache file's `max_bytes`); 0 when unbounded.
    pub max_bytes: u64,
    /// What it does when full: Redis's `maxmemory-policy` (`allkeys-lfu`, `noeviction`...);
    /// on SQLite `oldest-written` with a bound, `none` without.
    pub policy: String,
    /// Keys evicted to make room since the store started (Redis's `evicted_keys`; on SQLite
    /// since the file was created).
    pub evicted_keys: u64,
}

impl KvMemory {
    /// A store's memory figures.
    pub fn new(
        used_bytes: u64,
        max_bytes: u64,
        policy: impl Into<String>,
        evicted_keys: u64,
    ) -> Self {
        Self {
            used_bytes,
            max_bytes,
            policy: policy.into(),
            evicted_keys,
        }
    }

    /// Whether writes fail rather than evict when the store is full.
    pub fn refuses_when_full(&self) -> bool {
        self.max_bytes > 0 && self.policy == "noeviction"
    }
}

/// What a subscription to a broadcast channel delivers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KvEvent {
    /// A message published on the channel.
    Message(Vec<u8>),
    /// Messages may have been lost (the subscription was down, or fell behind): whoever keeps
    /// copies on the strength of these messages must drop them.
    Reset,
}

/// A subscription to a broadcast channel: events arrive in order; dropping it unsubscribes.
#[derive(Debug)]
pub struct KvSubscription {
    rx: tokio::sync::mpsc::Receiver<KvEvent>,
}

impl KvSubscription {
    /// A subscription fed by `rx` (for backends).
    pub fn new(rx: tokio::sync::mpsc::Receiver<KvEvent>) -> Self {
        Self { rx }
    }

    /// The next event, or `None` once the backend is closed.
    pub async fn next(&mut self) -> Option<KvEvent> {
        self.rx.recv().await
    }
}

/// Keys with values that expire, lease locks, counters and a broadcast channel: the second
/// level (L2) of the cache, shared by every process.
///
/// Keys are at most [`KvStore::MAX_KEY_LEN`] bytes; callers hash longer ones.
pub trait KvStore: StoreClock {
    /// The longest key a store accepts.
    const MAX_KEY_LEN: usize = 1024;

    /// The values under `keys` (one per key, `None` when absent or expired at `now`).
    fn kv_get(
        &self,
        keys: Vec<String>,
        now: UnixMs,
    ) -> impl Future<Output = Result<Vec<Option<Vec<u8>>>>> + Send;

    /// Stores values, each until its ttl from `now` runs out, replacing what was there.
    fn kv_set(&self, entries: Vec<KvEntry>, now: UnixMs)
        -> impl Future<Output = Result<()>> + Send;

    /// Stores each value whose key is absent (or expired) at `now`, and keeps every key,
    /// present or not before, until at least its ttl from `now` (a longer life it has is
    /// kept; a shorter one is raised). An existing value is never changed. The cache keeps its
    /// tag barriers with it, so that a barrier a store evicted reads as absent and not as
    /// "never raised".
    fn kv_ensure(
        &self,
        entries: Vec<KvEntry>,
        now: UnixMs,
    ) -> impl Future<Output = Result<()>> + Send;

    /// How the store's memory for these keys stands, where it can tell (`None` where it
    /// cannot, such as a Redis that refuses `INFO`).
    fn kv_memory(&self) -> impl Future<Output = Result<Option<KvMemory>>> + Send;

    /// Deletes keys; returns how many existed.
    fn kv_delete(&self, keys: Vec<String>, now: UnixMs)
        -> impl Future<Output = Result<u64>> + Send;

    /// Adds one to the counter under `key` (a missing one counts from 0) and returns the new
    /// value. Counters do not expire.
    fn kv_incr(&self, key: &str, now: UnixMs) -> impl Future<Output = Result<i64>> + Send;

    /// Takes the lock `key` for `token` until `now + ttl` if it is free or expired; returns
    /// whether it was taken.
    fn kv_lock(
        &self,
        key: &str,
        token: &str,
        ttl: Duration,
        now: UnixMs,
    ) -> impl Future<Output = Result<bool>> + Send;

    /// Releases the lock `key` if `token` holds it (compare and delete); returns whether it did.
    fn kv_unlock(&self, key: &str, token: &str) -> impl Future<Output = Result<bool>> + Send;

    /// Publishes a message to every subscriber of `channel`, in every process.
    fn kv_publish(
        &self,
        channel: &str,
        message: Vec<u8>,
    ) -> impl Future<Output = Result<()>> + Send;

    /// Subscribes to `channel`. Delivery is at most once; a [`KvEvent::Reset`] says when
    /// messages may have been lost.
    fn kv_subscribe(&self, channel: &str) -> impl Future<Output = Result<KvSubscription>> + Send;
}

/// Checks a key against the rules every [`KvStore`] applies: not empty, at most `max` bytes.
///
/// # Errors
/// [`Error::Config`](crate::Error::Config) on the setting `kv key`, naming the key's length.
pub fn check_kv_key(key: &str, max: usize) -> Result<()> {
    if key.is_empty() {
        return Err(crate::Error::config(
            "kv key",
            "the key is empty (0 bytes); a key needs at least one byte",
        ));
    }
    if key.len() > max {
        let head: String = key.chars().take(32).collect();
        let more = if head.len() < key.len() { "…" } else { "" };
        return Err(crate::Error::config(
            "kv key",
            format!(
                "the key `{head}{more}` is {} bytes long, more than the {max} bytes a key may have; \
                 hash longer keys",
                key.len()
            ),
        ));
    }
    Ok(())
}

/// Checks each entry's key (at most `max` bytes) and ttl, as [`check_kv_key`] and
/// [`check_kv_ttl`] do.
///
/// # Errors
/// The first of theirs.
pub fn check_kv_entries(entries: &[KvEntry], max: usize) -> Result<()> {
    for e in entries {
        check_kv_key(&e.key, max)?;
        check_kv_ttl(&e.key, e.ttl)?;
    }
    Ok(())
}

/// Checks the ttl of a value or lock under `key`: above zero.
///
/// # Errors
/// [`Error::Config`](crate::Error::Config) on the setting `kv ttl`, naming the key.
pub fn check_kv_ttl(key: &str, ttl: Duration) -> Result<()> {
    if ttl.is_zero() {
        return Err(crate::Error::config(
            "kv ttl",
            format!("the ttl of `{key}` is zero; a value or lock needs a ttl above zero"),
        ));
    }
    Ok(())
}
