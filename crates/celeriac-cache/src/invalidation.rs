//! Invalidation: removing a key, tag barriers, key versions, and the namespace's channel
//! that carries each of them to the other instances (see the [module docs](super)).

use super::{key_part, Cache, Inner, Meta};
use celeriac_core::backend::{KvEntry, KvEvent, KvStore, KvSubscription};
use celeriac_core::clock::UnixMs;
use celeriac_core::error::Result;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::fmt::Display;
use std::sync::atomic::Ordering;
use std::sync::Weak;
use std::time::Duration;
use tracing::debug;

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
pub(super) enum Message {
    Key(String),
    Tag(String, UnixMs),
    Version(u32),
}

impl<K, V, S> Cache<K, V, S>
where
    K: ?Sized + Display,
    V: Clone + Serialize + DeserializeOwned + Send + Sync + 'static,
    S: KvStore,
{
    /// Deletes a key from L1 and L2 and tells other instances to drop it.
    ///
    /// A load of the key that began before the removal, in any instance, does not put its
    /// value back: the removal leaves a mark in L2 (for [`REMOVAL_MARK_TTL`]), and a load
    /// that stores after it finds the mark and takes its value out again, from L2 and from
    /// every instance's L1. Its callers still get the value it loaded.
    pub async fn remove(&self, key: &K) -> Result<()> {
        let part = key_part(key);
        let inner = &self.inner;
        inner.l1_drop(&part);
        let now = inner.now();
        // The mark first: a load that stores after the delete below is sure to find it.
        let mark = KvEntry {
            key: inner.removal_key(&part),
            value: now.to_string().into_bytes(),
            ttl: REMOVAL_MARK_TTL,
        };
        inner.l2(inner.store.kv_set(vec![mark], now)).await?;
        let full = inner.full_key(&part);
        inner.l2(inner.store.kv_delete(vec![full], now)).await?;
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
    /// Returns the new version: above every version this instance knew, even if the store
    /// lost the counter behind it (an evicting store).
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
            .saturating_add(u32::try_from(n).unwrap_or(u32::MAX))
            .max(inner.version.load(Ordering::Relaxed).saturating_add(1));
        let entry = KvEntry {
            key: inner.version_key(),
            value: version.to_string().into_bytes(),
            ttl: VERSION_TTL,
        };
        inner.l2(inner.store.kv_set(vec![entry], now)).await?;
        inner.set_version(version);
        inner.broadcast(Message::Version(version)).await;
        Ok(version)
    }
}

/// How long the namespace's version key is kept after each write.
const VERSION_TTL: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// How long a removal's mark stays in L2: a load that began before a [`Cache::remove`] of its
/// key and stores its value later than this after it is not caught.
pub const REMOVAL_MARK_TTL: Duration = Duration::from_secs(600);

impl<V, S> Inner<V, S>
where
    V: Clone + Serialize + DeserializeOwned + Send + Sync + 'static,
    S: KvStore,
{
    pub(super) fn barred(&self, meta: &Meta) -> bool {
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

    pub(super) fn raise_barrier(&self, tag: &str, at: UnixMs) {
        if let Ok(mut b) = self.barriers.lock() {
            let e = b.entry(tag.to_string()).or_insert(at);
            *e = (*e).max(at);
        }
        self.barrier_epoch.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn set_version(&self, version: u32) {
        if self.version.swap(version, Ordering::Relaxed) != version {
            self.l1_clear();
        }
    }

    /// The key of `part`'s removal mark: `<app>:<namespace>:rm:<key>` (entries are under
    /// `v<version>:`, so no entry's key is a mark's).
    pub(super) fn removal_key(&self, part: &str) -> String {
        format!("{}:rm:{part}", self.prefix)
    }

    /// After a load stored its value under `key`: if `part` was removed since the load
    /// `began` (its mark says so), the value may predate whatever the removal was for, so it
    /// is taken out again, here, from L2 and, by a broadcast, from other instances' L1 (they
    /// may have read it in between).
    pub(super) async fn undo_if_removed_since(&self, part: &str, key: &str, began: UnixMs) {
        let now = self.now();
        let Ok(mut mark) = self
            .l2(self.store.kv_get(vec![self.removal_key(part)], now))
            .await
        else {
            return;
        };
        let removed_at = mark
            .pop()
            .flatten()
            .and_then(|b| String::from_utf8(b).ok())
            .and_then(|s| s.parse::<UnixMs>().ok());
        if removed_at.is_none_or(|at| at < began) {
            return;
        }
        debug!(namespace = %self.cfg.namespace, key = part,
            "the key was removed while its value loaded; taking the value out again");
        self.l1_drop(part);
        if let Err(e) = self
            .l2(self.store.kv_delete(vec![key.to_string()], now))
            .await
        {
            debug!(namespace = %self.cfg.namespace, key = part, error = %e,
                "a value loaded across a removal is still in L2");
        }
        self.broadcast(Message::Key(part.to_string())).await;
    }

    pub(super) fn version_key(&self) -> String {
        format!("{}:version", self.prefix)
    }

    pub(super) async fn refresh_version(&self) {
        let key = self.version_key();
        if let Ok(mut v) = self.l2(self.store.kv_get(vec![key], self.now())).await {
            let stored = v
                .pop()
                .flatten()
                .and_then(|b| String::from_utf8(b).ok())
                .and_then(|s| s.trim().parse::<u32>().ok());
            match stored {
                Some(version) => self.set_version(version.max(self.cfg.schema)),
                None => self.keep_version().await,
            }
        }
    }

    /// Writes the version this instance uses back to L2 if the key is gone (a store that
    /// evicts may drop it), so that an instance starting later does not fall back to the
    /// first version and read entries a bump left behind. A version key that is there is
    /// left alone. Runs at each statistics publication, and when a read finds the key gone.
    pub(super) async fn keep_version(&self) {
        let version = self.version.load(Ordering::Relaxed);
        if version <= self.cfg.schema {
            return;
        }
        let entry = KvEntry {
            key: self.version_key(),
            value: version.to_string().into_bytes(),
            ttl: VERSION_TTL,
        };
        if let Err(e) = self.l2(self.store.kv_ensure(vec![entry], self.now())).await {
            debug!(namespace = %self.cfg.namespace, error = %e, "the cache's version key was not kept");
        }
    }

    pub(super) async fn broadcast(&self, message: Message) {
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

    fn apply(&self, message: Message) {
        match message {
            Message::Key(part) => self.l1_drop(&part),
            Message::Tag(tag, at) => self.raise_barrier(&tag, at),
            Message::Version(v) => self.set_version(v),
        }
    }
}

/// Follows the namespace's invalidation channel while the cache lives, starting with the
/// subscription `build` made if it made one; resubscribes with backoff, and flushes L1
/// whenever messages may have been lost.
pub(super) async fn listen<V, S>(cache: Weak<Inner<V, S>>, mut first: Option<KvSubscription>)
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
