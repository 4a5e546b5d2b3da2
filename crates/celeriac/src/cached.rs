//! The store behind `#[celeriac::cached]` functions, and what their expansion calls.
//!
//! The first [`App`](crate::App) built installs its backend as the store of every
//! `#[cached]` function (or call [`install_cache_store`] yourself). A cached function
//! called before any store is installed runs uncached, and says so once in the log.

use crate::cache::{Cache, CacheBuilder};
use crate::AnyBackend;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use tokio::sync::OnceCell;

static STORE: OnceLock<Arc<AnyBackend>> = OnceLock::new();

/// Makes `backend` the store of `#[cached]` functions; returns false if one was installed
/// already (the first one stays).
pub fn install_cache_store(backend: Arc<AnyBackend>) -> bool {
    STORE.set(backend).is_ok()
}

/// The store of `#[cached]` functions, once installed.
pub fn cache_store() -> Option<Arc<AnyBackend>> {
    STORE.get().cloned()
}

/// The cache of one `#[cached]` function: built on first use over the installed store;
/// `None` (run uncached) while no store is installed or the settings are invalid.
#[doc(hidden)]
pub async fn function_cache<V>(
    cell: &'static OnceCell<Cache<str, V, AnyBackend>>,
    builder: impl FnOnce() -> CacheBuilder<str, V>,
) -> Option<&'static Cache<str, V, AnyBackend>>
where
    V: Clone + Serialize + DeserializeOwned + Send + Sync + 'static,
{
    static WARNED: AtomicBool = AtomicBool::new(false);
    if let Some(c) = cell.get() {
        return Some(c);
    }
    let Some(store) = cache_store() else {
        if !WARNED.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                "a #[cached] function ran before any cache store was installed \
                 (build an App, or call celeriac::install_cache_store); running uncached"
            );
        }
        return None;
    };
    let built = cell
        .get_or_try_init(|| async move { builder().build(store).await })
        .await;
    match built {
        Ok(c) => Some(c),
        Err(e) => {
            tracing::error!(error = %e, "a #[cached] function's cache cannot be built; running uncached");
            None
        }
    }
}
