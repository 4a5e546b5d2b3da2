//! Warmers: what `celeriac cache warm` and the `celeriac.cache.warm` job run for a namespace.
//!
//! A [`Warmer`] knows a namespace's keys and how to load one; [`CacheWarmer`] makes one from
//! a cache builder and two functions. Warming loads, with bounded concurrency, the keys that
//! are not fresh in L1 or L2 ([`Cache::warm`]), then publishes the counters so
//! `celeriac cache stats` shows the loads.

use super::{Cache, CacheBuilder, CacheError};
use celeriac_core::backend::KvStore;
use futures_util::future::BoxFuture;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::fmt::Display;
use std::future::Future;
use std::sync::Arc;

/// Called with (keys done, keys in all) as a warm goes on.
pub type WarmProgress = Arc<dyn Fn(usize, usize) + Send + Sync>;

/// Loads a namespace's keys ahead of use, over the store `S`.
pub trait Warmer<S: KvStore>: Send + Sync + 'static {
    /// The namespace it fills.
    fn namespace(&self) -> &str;

    /// Warms `keys` (all the warmer's keys when `None`) with at most `concurrency` loads at
    /// once.
    ///
    /// # Errors
    /// [`CacheError::Store`] when the cache cannot be built, [`CacheError::KeyList`] when the
    /// key list cannot be read; a key whose loader fails is counted in the report instead.
    fn warm(
        &self,
        store: Arc<S>,
        keys: Option<Vec<String>>,
        concurrency: usize,
        progress: WarmProgress,
    ) -> BoxFuture<'static, Result<WarmReport, CacheError>>;
}

/// A [`Warmer`] from a cache builder, a function listing every key, and a loader.
///
/// ```no_run
/// # use celeriac_cache::{Cache, CacheWarmer};
/// let products = CacheWarmer::new(
///     Cache::<str, String, ()>::builder("products"),
///     || async { Ok::<_, std::io::Error>(vec!["1".to_string(), "2".to_string()]) },
///     |key: String| async move { Ok::<_, std::io::Error>(format!("product {key}")) },
/// );
/// # let _ = products;
/// ```
pub struct CacheWarmer<V, KF, LF> {
    builder: CacheBuilder<str, V>,
    namespace: String,
    keys: Arc<KF>,
    load: Arc<LF>,
}

impl<V, KF, LF> CacheWarmer<V, KF, LF> {
    /// A warmer of the cache `builder` makes: `keys` lists every key (for a warm of all),
    /// `load` loads one.
    pub fn new(builder: CacheBuilder<str, V>, keys: KF, load: LF) -> Self {
        let namespace = builder.cfg.namespace.clone();
        Self {
            builder,
            namespace,
            keys: Arc::new(keys),
            load: Arc::new(load),
        }
    }
}

impl<S, V, KF, KFut, LF, LFut, E> Warmer<S> for CacheWarmer<V, KF, LF>
where
    S: KvStore,
    V: Clone + Serialize + DeserializeOwned + Send + Sync + 'static,
    KF: Fn() -> KFut + Send + Sync + 'static,
    KFut: Future<Output = std::result::Result<Vec<String>, E>> + Send + 'static,
    LF: Fn(String) -> LFut + Send + Sync + 'static,
    LFut: Future<Output = std::result::Result<V, E>> + Send + 'static,
    E: Display + Send + Sync + 'static,
{
    fn namespace(&self) -> &str {
        &self.namespace
    }

    fn warm(
        &self,
        store: Arc<S>,
        keys: Option<Vec<String>>,
        concurrency: usize,
        progress: WarmProgress,
    ) -> BoxFuture<'static, Result<WarmReport, CacheError>> {
        // The warm's own cache publishes once, at its end, not on a timer.
        let builder = self.builder.clone().stats_interval(None);
        let (list, load) = (self.keys.clone(), self.load.clone());
        let namespace = self.namespace.clone();
        Box::pin(async move {
            let cache: Cache<str, V, S> = builder.build(store).await?;
            let keys = match keys {
                Some(k) => k,
                None => list().await.map_err(|e| CacheError::KeyList {
                    namespace: namespace.clone(),
                    message: e.to_string(),
                })?,
            };
            let report = cache
                .warm(
                    keys,
                    concurrency,
                    |k: &String| load(k.clone()),
                    |done, total| progress(done, total),
                )
                .await;
            if let Err(e) = cache.publish_stats().await {
                tracing::debug!(namespace, error = %e, "warm statistics not published");
            }
            Ok(report)
        })
    }
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

impl<K, V, S> Cache<K, V, S>
where
    K: ?Sized + Display,
    V: Clone + Serialize + DeserializeOwned + Send + Sync + 'static,
    S: KvStore,
{
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
        E: Display + Send + Sync + 'static,
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
}
