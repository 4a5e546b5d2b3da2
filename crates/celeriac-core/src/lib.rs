//! The core of Celeriac: the model and its rules, and the runtime written against the store
//! traits. No store lives here: the backends (`celeriac-embedded`, `celeriac-redis`) implement
//! the [`backend`] traits, one per capability ([`Broker`], [`QueueAdmin`], [`ResultStore`],
//! [`WorkflowStore`], [`Coordinator`], [`KvStore`], [`RateLimitStore`], [`BreakerStore`],
//! [`ProcessRegistry`], [`EventLog`]).
//!
//! - A [`job::Job`] is one call of a [`task::Task`], stored in a queue. A [`worker::Worker`]
//!   claims jobs under a **lease** with a **fencing token**: only the holder of the current
//!   token can complete the attempt, and an expired lease is redelivered (at least once).
//! - Failed attempts are retried with exponential backoff and full jitter
//!   ([`retry::Backoff`]); jobs that cannot succeed go to the dead letters with a reason.
//! - [`workflow`]s (chain, group, chord, map) continue from each step's end.
//! - Periodic [`schedule::Schedule`]s are fired by [`beat::Beat`], which one process leads at
//!   a time through a [`Coordinator`] lease.
//! - [`limit`]: rate limiters (GCRA, sliding and fixed windows, concurrency permits) over any
//!   [`RateLimitStore`], or in process memory.
//! - [`breaker`]: circuit breakers, alone or shared through a [`BreakerStore`]; tasks that
//!   name one are deferred while it is open, without using an attempt.
//! - [`bounds`]: the largest payload, headers, unique key and names a job may have, checked
//!   before anything reaches the store; error texts kept with failures are capped.
//! - [`duration`]: the one duration grammar (`30s`, `1h30m`) of schedules, quotas, the
//!   command line and the macros.
//!
//! Time is always passed in, as the fleet's clock ([`clock::FleetClock`]): stores never read
//! a clock, and tests drive time with [`clock::ManualClock`]. The cache is the
//! `celeriac-cache` crate, over [`KvStore`].

pub mod alerts;
pub mod backend;
pub mod beat;
pub mod bounds;
pub mod breaker;
pub mod bulk;
pub mod client;
pub mod clock;
pub mod deploys;
pub mod duration;
pub mod error;
pub mod history;
pub mod job;
pub mod limit;
pub mod monitor;
pub mod nesting;
pub mod process;
pub mod published;
pub mod redact;
pub mod retention;
pub mod retry;
pub mod schedule;
pub mod sketch;
pub mod task;
pub mod trace;
pub mod worker;
pub mod workflow;

pub use backend::{
    BreakerStore, Broker, CancelOutcome, CancelReport, Control, Coordinator, EndedJob, Event,
    EventLog, History, KvStore, ProcessInfo, ProcessKind, ProcessRegistry, ProcessState,
    QueueAdmin, Rate, RateLimitStore, ResultStore, StoreHealth, TaskLimits, WorkflowStore,
};
pub use beat::{Beat, BeatConfig};
pub use bounds::Bounds;
pub use client::{AsClient, Client, Enqueue, JobHandle, JobOptions};
pub use clock::{Clock, FleetClock, ManualClock, StoreClock, SystemClock, UnixMs, WarpedClock};
pub use error::{Error, ErrorKind, Result};
pub use job::{
    Encoding, ErrorInfo, Job, JobId, JobInfo, JobState, Priority, Progress, Unique, UniqueFor,
};
pub use retry::Backoff;
pub use schedule::{Missed, Schedule};
pub use task::{Registry, Task, TaskContext, TaskDef, TaskError, TaskOptions};
pub use worker::{Shutdown, Worker, WorkerConfig, WorkerStats, WorkerStore};
pub use workflow::{chain, chord, group, map, Flow, Step, WorkflowHandle};
