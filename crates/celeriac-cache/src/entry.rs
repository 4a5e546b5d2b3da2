//! One key of a cache: [`EntryRef`], from [`Cache::entry`], reads, loads or sets a key with
//! per-call options (tags).

use super::flight::{Loader, Outcome};
use super::invalidation::Message;
use super::{Cache, CacheError};
use celeriac_core::backend::KvStore;
use celeriac_core::error::Result;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::convert::Infallible;
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
    ///
    /// # Errors
    /// None today: an L2 that cannot be reached reads as a miss.
    pub async fn get(self) -> Result<Option<V>> {
        let inner = &self.cache.inner;
        if let Some(slot) = inner.fresh_hit(&self.key, inner.hit_now()) {
            return Ok(slot.value.clone());
        }
        // Boxed: the slow path's large future stays out of the hit path's. No loader: it
        // shares the flights of `get_with`, whose loaders cannot fail either.
        let read = Box::pin(inner.read::<Infallible>(&self.key, self.tags, None)).await;
        Ok(match read {
            Outcome::Found(v) => Some(v),
            Outcome::Missing => None,
            Outcome::Failed(never) => match *never {},
        })
    }

    /// The value, loaded by `loader` on a miss; a loader's `None` ("not found") is cached
    /// for the negative ttl when one is set.
    ///
    /// # Errors
    /// [`CacheError::Load`] when the loader failed and no stale value could stand in: the
    /// loader's error, shared (as the same `Arc`) with every read that waited for that load.
    pub async fn try_get_opt_with<F, Fut, E>(
        mut self,
        loader: F,
    ) -> std::result::Result<Option<V>, CacheError<E>>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = std::result::Result<Option<V>, E>> + Send + 'static,
        E: Display + Send + Sync + 'static,
    {
        self.load(loader).await
    }

    /// The value, loaded by `loader` on a miss.
    ///
    /// # Errors
    /// [`CacheError::Load`] when the loader failed and no stale value could stand in (the
    /// loader's error, shared with every read that waited for that load);
    /// [`CacheError::NotFound`] when it found nothing.
    pub async fn try_get_with<F, Fut, E>(
        mut self,
        loader: F,
    ) -> std::result::Result<V, CacheError<E>>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = std::result::Result<Option<V>, E>> + Send + 'static,
        E: Display + Send + Sync + 'static,
    {
        match self.load(loader).await? {
            Some(v) => Ok(v),
            None => Err(CacheError::NotFound {
                key: self.cache.inner.label(&self.key),
            }),
        }
    }

    /// The value, loaded by an infallible `loader` on a miss.
    ///
    /// # Errors
    /// [`CacheError::NotFound`] when "not found" is cached for the key, or a concurrent load
    /// of it found nothing.
    pub async fn get_with<F, Fut>(self, loader: F) -> std::result::Result<V, CacheError>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = V> + Send + 'static,
    {
        self.try_get_with(move || async move { Ok::<_, Infallible>(Some(loader().await)) })
            .await
    }

    /// Stores `value` in L1 and L2 (write-through), replacing what was there, and tells other
    /// instances to drop their copies.
    ///
    /// # Errors
    /// The store's, when the L2 could not be written (the L1 holds the value).
    pub async fn set(self, value: V) -> Result<()> {
        let inner = &self.cache.inner;
        inner
            .store_value(&self.key, Some(value), self.tags, 0, None)
            .await?;
        inner.broadcast(Message::Key(self.key)).await;
        Ok(())
    }

    /// A read with a loader: L1 (refreshing early or in the background when due), then the
    /// key's flight.
    async fn load<F, Fut, E>(&mut self, loader: F) -> std::result::Result<Option<V>, CacheError<E>>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = std::result::Result<Option<V>, E>> + Send + 'static,
        E: Display + Send + Sync + 'static,
    {
        let inner = &self.cache.inner;
        let now = inner.now();
        let fresh = inner.fresh_hit(&self.key, now);
        if let Some(slot) = &fresh {
            if !inner.refresh_early(&slot.meta, now) {
                return Ok(slot.value.clone());
            }
        }
        let loader: Loader<V, E> = Box::new(move || Box::pin(loader()));
        let tags = std::mem::take(&mut self.tags);
        if let Some(slot) = fresh {
            inner.refresh_in_background(self.key.clone(), tags, loader, true);
            return Ok(slot.value.clone());
        }
        match inner.read(&self.key, tags, Some(loader)).await {
            Outcome::Found(v) => Ok(Some(v)),
            Outcome::Missing => Ok(None),
            Outcome::Failed(error) => Err(CacheError::Load {
                key: inner.label(&self.key),
                error,
            }),
        }
    }
}
