//! A Rust worker serving tasks that Python Celery clients send (§11.A of the spec).
//!
//! - [`CeleryTask`]: a Rust task (a Celeriac [`Task`](celeriac_core::task::Task) or a
//!   function) registered under a Celery name; its `Args` are bound from the message's
//!   `(args, kwargs)` ([`CallArgs`]) and its output stored as JSON.
//! - [`CeleryWorker`]: consumes with [`KombuBroker::consume`], runs up to `concurrency` tasks,
//!   keeps their `unacked` scores fresh, sweeps stale `unacked` entries (once at start, then
//!   about every 100 s), and on each outcome does what a Python worker does: callbacks, the
//!   next chain step, SETEX+PUBLISH of the result, the chord join; FAILURE along the chain,
//!   errbacks with `[task_id]`; retries republished with `retries + 1` and an eta.
//! - Bad input loses nothing: an unknown task, an undecodable message or a refused
//!   serializer is recorded with the reason by a [`DeadLetterSink`] (Celeriac's dead letters
//!   with [`CeleriacDeadLetters`]), then acknowledged; an unknown task also gets Celery's
//!   FAILURE `NotRegistered`, so Python's `get()` raises.
//! - [`WorkerHandle`]: the tasks in hand (running, scheduled for an ETA, reserved), revoking
//!   one, shutting down.
//! - Remote control (on by default, [`CeleryWorkerBuilder::control`]): a
//!   [`PidboxResponder`](crate::control::PidboxResponder) answers `inspect active`,
//!   `reserved`, `scheduled`, `registered`, `stats`, `active_queues`, ... from the worker's
//!   state; `revoke` (with `terminate`: the running task's future is dropped, REVOKED
//!   `terminated`), `shutdown` (graceful), `add_consumer` / `cancel_consumer`.
//! - Events (on by default, [`CeleryWorkerBuilder::events`]): `worker-online`, heartbeats,
//!   `worker-offline`, and task events at every point of a task's life (received, started,
//!   succeeded, failed, retried, revoked, rejected), toggled by
//!   [`CeleryWorkerBuilder::task_events`] and the `enable_events` / `disable_events`
//!   commands.
//! - A revoked chain step ends its chain: the remaining steps are stored REVOKED.
//!
//! ```no_run
//! use celeriac_celery::worker::{CeleryTask, CeleryWorker};
//! use celeriac_core::task::{Task, TaskContext, TaskError};
//!
//! struct Add;
//! impl Task for Add {
//!     const NAME: &'static str = "add";
//!     type Args = (i64, i64);
//!     type Output = i64;
//!     async fn run(_: TaskContext, (x, y): (i64, i64)) -> Result<i64, TaskError> {
//!         Ok(x + y)
//!     }
//! }
//!
//! # async fn demo() -> Result<(), celeriac_celery::worker::WorkerError> {
//! let worker = CeleryWorker::builder("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/1")
//!     .queues(["celery"])
//!     .task(CeleryTask::of::<Add>("tasks.add"))
//!     .build()
//!     .await?;
//! let handle = worker.handle();
//! tokio::spawn(async move { tokio::signal::ctrl_c().await.ok(); handle.shutdown() });
//! worker.run().await
//! # }
//! ```

mod args;
mod builder;
mod control;
mod dead_letter;
mod exception;
mod finish;
mod handle;
mod message;
mod notify;
mod run;
mod task;

pub use args::CallArgs;
pub use builder::{CeleryWorker, CeleryWorkerBuilder};
pub use dead_letter::{
    CeleriacDeadLetters, DeadLetter, DeadLetterSink, RedisListDeadLetters, DEAD_LETTER_LIST,
    KIND_HEADER, REASON_HEADER, TASK_ID_HEADER,
};
pub use exception::{exception_of, python_error};
pub use handle::{TaskInHand, WorkerHandle};
pub use task::{CeleryTask, CeleryTaskOptions};

/// What stops a worker.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WorkerError {
    /// A setting is unusable.
    #[error("worker setting `{setting}`: {reason}")]
    Setting {
        /// The builder method / Celery setting.
        setting: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// The broker failed.
    #[error(transparent)]
    Broker(#[from] crate::broker::BrokerError),
    /// The result backend failed.
    #[error(transparent)]
    Results(#[from] crate::results::Error),
    /// Remote control could not start.
    #[error(transparent)]
    Control(#[from] crate::control::ControlError),
}

use crate::broker::KombuBroker;
