//! Figures that running instances publish to a store's key-value space, the way caches and
//! rate limiters publish theirs: each instance's snapshot under a key of its own, kept a few
//! publication intervals (an instance that stops drops out after that); the live instances of
//! one thing (a cache namespace, a limiter) listed under one key; and the things of an
//! application listed under another. Readers sum the live snapshots.
//!
//! Both lists are changed read-modify-write under a short lease lock (`<list key>:lock`); a
//! change that loses the race for the lock is made at the next publication.

use crate::backend::{KvEntry, KvStore};
use crate::clock::{duration_ms, UnixMs};
use crate::error::{Error, Result};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::collections::BTreeMap;
use std::time::Duration;

/// Where one thing's figures live.
#[derive(Debug, Clone, Copy)]
pub struct Keys<'a> {
    /// This instance's snapshot.
    pub snapshot: &'a str,
    /// The thing's live instances (a JSON map of instance id to when its snapshot expires).
    pub instances: &'a str,
    /// The application's things (a sorted JSON list of names).
    pub index: &'a str,
}

/// Writes `instance`'s `snapshot` (kept `keep`), lists the instance as live until then, and
/// makes sure `name` is in the index (kept `index_ttl` after its last change).
///
/// # Errors
/// The store's, when a write fails.
#[allow(clippy::too_many_arguments)]
pub async fn publish<K: KvStore>(
    kv: &K,
    keys: Keys<'_>,
    name: &str,
    instance: &str,
    snapshot: Vec<u8>,
    keep: Duration,
    index_ttl: Duration,
    now: UnixMs,
) -> Result<()> {
    kv.kv_set(
        vec![KvEntry {
            key: keys.snapshot.to_string(),
            value: snapshot,
            ttl: keep,
        }],
        now,
    )
    .await?;
    let expires = now + duration_ms(keep);
    update_list::<K, BTreeMap<String, UnixMs>>(kv, keys.instances, keep, now, |live| {
        live.retain(|_, until| *until > now);
        live.insert(instance.to_string(), expires);
        true
    })
    .await?;
    // Listed already (the usual case): no lock taken.
    let listed: Option<Vec<String>> = read_json(kv, keys.index, now).await?;
    if listed.is_some_and(|names| names.iter().any(|n| n == name)) {
        return Ok(());
    }
    update_list::<K, Vec<String>>(kv, keys.index, index_ttl, now, |names| {
        if names.iter().any(|n| n == name) {
            return false;
        }
        names.push(name.to_string());
        names.sort_unstable();
        true
    })
    .await
}

/// The names in the index at `index` (sorted; none when absent).
///
/// # Errors
/// The store's, when it cannot be read.
pub async fn names<K: KvStore>(kv: &K, index: &str, now: UnixMs) -> Result<Vec<String>> {
    Ok(read_json(kv, index, now).await?.unwrap_or_default())
}

/// The snapshots of the live instances listed at `instances`, decoded (one that does not
/// decode is left out); `snapshot_key` gives an instance's snapshot key.
///
/// # Errors
/// The store's, when it cannot be read.
pub async fn live<K: KvStore, T: DeserializeOwned>(
    kv: &K,
    instances: &str,
    snapshot_key: impl Fn(&str) -> String,
    now: UnixMs,
) -> Result<Vec<T>> {
    let live: BTreeMap<String, UnixMs> = read_json(kv, instances, now).await?.unwrap_or_default();
    let keys: Vec<String> = live.keys().map(|id| snapshot_key(id)).collect();
    if keys.is_empty() {
        return Ok(Vec::new());
    }
    Ok(kv
        .kv_get(keys, now)
        .await?
        .into_iter()
        .flatten()
        .filter_map(|bytes| serde_json::from_slice(&bytes).ok())
        .collect())
}

/// Read-modify-write of a JSON value under a short lock; `change` says whether it changed
/// anything. Skipped (to be made at the next publication) when the lock is busy.
async fn update_list<K, T>(
    kv: &K,
    key: &str,
    ttl: Duration,
    now: UnixMs,
    change: impl FnOnce(&mut T) -> bool,
) -> Result<()>
where
    K: KvStore,
    T: Serialize + DeserializeOwned + Default,
{
    let lock = format!("{key}:lock");
    let token = uuid::Uuid::now_v7().to_string();
    let mut taken = false;
    for _ in 0..20 {
        if kv
            .kv_lock(&lock, &token, Duration::from_secs(5), now)
            .await?
        {
            taken = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    if !taken {
        return Ok(());
    }
    let result = async {
        let mut value: T = read_json(kv, key, now).await?.unwrap_or_default();
        if change(&mut value) {
            let bytes = serde_json::to_vec(&value).map_err(|e| Error::Codec(e.to_string()))?;
            kv.kv_set(
                vec![KvEntry {
                    key: key.to_string(),
                    value: bytes,
                    ttl,
                }],
                now,
            )
            .await?;
        }
        Ok(())
    }
    .await;
    let _ = kv.kv_unlock(&lock, &token).await;
    result
}

/// A JSON value; one that does not decode counts as absent (it is rewritten at the next
/// publication).
async fn read_json<K: KvStore, T: DeserializeOwned>(
    kv: &K,
    key: &str,
    now: UnixMs,
) -> Result<Option<T>> {
    let got = kv.kv_get(vec![key.to_string()], now).await?;
    Ok(got
        .into_iter()
        .next()
        .flatten()
        .and_then(|b| serde_json::from_slice(&b).ok()))
}
