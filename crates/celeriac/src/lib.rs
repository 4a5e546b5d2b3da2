//! Celeriac: background jobs for Rust services — typed tasks, workers with leases and
//! retries, results, dead letters — on an embedded SQLite file by default.
//!
//! ```no_run
//! use celeriac::prelude::*;
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Serialize, Deserialize)]
//! struct Email { to: String, subject: String }
//!
//! #[celeriac::task(queue = "emails", retries = 5)]
//! async fn send_email(ctx: &TaskContext, email: Email) -> Result<(), TaskError> {
//!     println!("attempt {} sending to {}", ctx.attempt(), email.to);
//!     Ok(())
//! }
//!
//! # async fn run() -> celeriac::Result<()> {
//! let app = App::builder().url("sqlite://celeriac.db").task::<send_email::Task>().build().await?;
//! let job = send_email::enqueue(&app, Email { to: "a@example.com".into(), subject: "hi".into() }).await?;
//! // In a worker process: app.worker().run().await?
//! let info = job.wait(std::time::Duration::from_secs(30)).await?;
//! println!("{}", info.state);
//! # Ok(()) }
//! # fn main() {}
//! ```
//!
//! Concepts: a **task** is a named async function; a **job** is one call of it stored in a
//! **queue**; a **worker** claims jobs under a lease with a fencing token, runs them, retries
//! failures with backoff, and moves jobs that cannot succeed to the **dead letters** with the
//! reason. Everything is at-least-once: a job whose worker dies is redelivered when its lease
//! runs out.
//!
//! Beyond jobs: a two-level [`cache`] (`#[cached]`), rate limiters ([`limit`]) and circuit
//! breakers ([`breaker`]) that share state through the same store, and tower layers
//! ([`layer`], feature `tower`).
//!
//! Features: `sqlite` (on by default) builds the embedded backend, `redis` the Redis one;
//! [`AnyBackend`] is whichever a URL names. `tower` (on by default) builds the layers. The
//! command line is the `celeriac-cli` crate.

mod any_backend;
mod app;
mod cache_warm;
mod cached;
#[cfg(feature = "tower")]
pub mod layer;

pub use app::{AnyBackend, App, AppBuilder, DEFAULT_URL};
pub use cache_warm::{
    cache_warmer, cache_warmer_namespaces, register_cache_warmer, WarmArgs, WarmCache,
    DEFAULT_WARM_CONCURRENCY,
};
pub use cached::{cache_store, install_cache_store};
pub use celeriac_cache as cache;
/// Celery's protocol: a Rust worker for Python clients (`celery::worker`), a Rust producer for
/// Python workers (`celery::client::Client`), over the kombu Redis transport and Celery's
/// Redis result backend.
#[cfg(feature = "celery")]
pub use celeriac_celery as celery;
pub use celeriac_core::breaker;
pub use celeriac_core::duration;
pub use celeriac_core::limit;
pub use celeriac_core::RateLimitStore;
pub use celeriac_core::{
    alerts, backend, beat, bounds, bulk, client, clock, deploys, error, history, job, monitor,
    process, retry, schedule, sketch, task, trace, worker, AsClient, Backoff, Beat, BeatConfig,
    Bounds, Broker, CancelOutcome, Client, Clock, Coordinator, Encoding, Enqueue, Error, ErrorInfo,
    ErrorKind, Event, EventLog, History, Job, JobHandle, JobId, JobInfo, JobOptions, JobState,
    ManualClock, Missed, Priority, ProcessInfo, ProcessRegistry, Progress, QueueAdmin, Rate,
    Registry, Result, ResultStore, Schedule, Shutdown, SystemClock, Task, TaskContext, TaskDef,
    TaskError, TaskLimits, TaskOptions, Unique, UniqueFor, WarpedClock, Worker, WorkerConfig,
    WorkerStats,
};
pub use celeriac_core::{chain, chord, group, map, workflow, Flow, Step, WorkflowHandle};
#[cfg(feature = "sqlite")]
pub use celeriac_embedded as embedded;
pub use celeriac_macros::cached;
pub use celeriac_macros::task;
#[cfg(feature = "redis")]
pub use celeriac_redis as redis;

/// What most applications need: `use celeriac::prelude::*;`.
pub mod prelude {
    pub use crate::{
        chain, chord, group, map, App, AsClient, Encoding, Flow, JobHandle, JobId, JobState,
        Missed, Priority, Schedule, Step, Task, TaskContext, TaskError, Worker, WorkerConfig,
    };
}

#[doc(hidden)]
pub mod __private {
    pub use crate::cached::function_cache;
    pub use serde;
    pub use tokio;
}
