//! Cache warming as a job: the built-in task `celeriac.cache.warm` runs the [`Warmer`]
//! registered for a namespace (see [`AppBuilder::cache_warmer`](crate::AppBuilder::cache_warmer)),
//! so a worker can warm a cache on a schedule:
//!
//! ```toml
//! [[schedule]]
//! name = "warm-products"
//! every = "15m"
//! task = "celeriac.cache.warm"
//! args = { namespace = "products" }   # keys = ["1", "2"] warms only those
//! ```
//!
//! `celeriac cache warm <namespace>` runs the same warmer in process, with a progress bar.
//! Warmers are registered per process: every process that runs the job (workers) or the
//! command must register them, as it registers its tasks.

use crate::cache::{WarmProgress, WarmReport, Warmer};
use crate::{AnyBackend, Task, TaskContext, TaskError, TaskOptions};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock, RwLock};

/// The warmers of this process, by namespace.
type Warmers = RwLock<BTreeMap<String, Arc<dyn Warmer<AnyBackend>>>>;

fn warmers() -> &'static Warmers {
    static WARMERS: OnceLock<Warmers> = OnceLock::new();
    WARMERS.get_or_init(Default::default)
}

/// Registers `warmer` for its namespace in this process (a later one replaces an earlier
/// one of the same namespace).
pub fn register_cache_warmer(warmer: impl Warmer<AnyBackend>) {
    if let Ok(mut w) = warmers().write() {
        w.insert(warmer.namespace().to_string(), Arc::new(warmer));
    }
}

/// The warmer registered for `namespace`.
pub fn cache_warmer(namespace: &str) -> Option<Arc<dyn Warmer<AnyBackend>>> {
    warmers().read().ok()?.get(namespace).cloned()
}

/// The namespaces with a registered warmer, sorted.
pub fn cache_warmer_namespaces() -> Vec<String> {
    warmers()
        .read()
        .map(|w| w.keys().cloned().collect())
        .unwrap_or_default()
}

/// The arguments of a `celeriac.cache.warm` job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WarmArgs {
    /// The namespace to warm.
    pub namespace: String,
    /// The keys to warm (default: every key the warmer lists).
    #[serde(default)]
    pub keys: Option<Vec<String>>,
    /// Loads at once (default 8).
    #[serde(default)]
    pub concurrency: Option<usize>,
}

/// Loads at once when a warm does not say.
pub const DEFAULT_WARM_CONCURRENCY: usize = 8;

/// The built-in task that warms a namespace with its registered warmer, over the store of
/// `#[cached]` functions (the application's backend).
pub struct WarmCache;

impl Task for WarmCache {
    const NAME: &'static str = "celeriac.cache.warm";
    type Args = WarmArgs;
    type Output = WarmReport;

    fn options() -> TaskOptions {
        TaskOptions::default()
    }

    async fn run(ctx: TaskContext, args: WarmArgs) -> Result<WarmReport, TaskError> {
        let warmer = cache_warmer(&args.namespace).ok_or_else(|| {
            TaskError::fatal(format!(
                "no cache warmer for namespace `{}` in this process (registered: {:?})",
                args.namespace,
                cache_warmer_namespaces()
            ))
        })?;
        let store = crate::cache_store().ok_or_else(|| {
            TaskError::fatal("no cache store installed in this process (build an App first)")
        })?;
        let concurrency = args.concurrency.unwrap_or(DEFAULT_WARM_CONCURRENCY);
        let progress_ctx = ctx.clone();
        let last = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let progress: WarmProgress = Arc::new(move |done, total| {
            // Progress is stored about every tenth of the way, not at every key.
            let step = (total / 10).max(1);
            if done == total || done >= last.load(std::sync::atomic::Ordering::Relaxed) + step {
                last.store(done, std::sync::atomic::Ordering::Relaxed);
                let ctx = progress_ctx.clone();
                let fraction = done as f64 / total.max(1) as f64;
                tokio::spawn(async move {
                    let _ = ctx.progress(fraction, format!("{done}/{total} keys")).await;
                });
            }
        });
        let report = warmer
            .warm(store, args.keys, concurrency, progress)
            .await
            .map_err(TaskError::msg)?;
        if report.failed > 0 {
            tracing::warn!(namespace = %args.namespace, failed = report.failed,
                first_error = ?report.first_error, "some keys did not warm");
        }
        Ok(report)
    }
}
