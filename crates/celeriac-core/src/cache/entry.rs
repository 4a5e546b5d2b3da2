//! One key of a cache: [`EntryRef`], from [`Cache::entry`], reads, loads or sets a key with
//! per-call options (tags).

use super::flight::Loader;
use super::invalidation::Message;
use super::Cache;
use crate::backend::KvStore;
use crate::error::{Error, Result};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::fmt::Display;
use std::future::Future;

/// One key of a cache, with per-call tags: [`Cache::entry`].
pub struct EntryRef<'a, K: ?Sized, V, S> {
    pub(super) cache: &'a Cache<K, V, S>,
    pub(super) key: String,
    pub(super) tags: Vec<String>,
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
