//! The core of Celeriac: the job model and its rules, the task registry, the backend
//! capability traits, and the worker runtime written against them. No store lives here:
//! backends (`celeriac-embedded`, `celeriac-redis`) implement [`backend::Broker`] and
//! [`backend::ResultStore`].
//!
//! Core concepts:
//! - a [`job::Job`] is one call of a [`task::Task`], stored in a queue;
//! - a worker claims jobs under a **lease** with a **fencing token**: only the holder of the
//!   current token can complete the attempt, and an expired lease is redelivered
//!   (at-least-once);
//! - failed attempts are retried with exponential backoff and full jitter
//!   ([`retry::Backoff`]), and jobs that cannot succeed go to the dead letters with a reason.
//!
//! - [`limit`]: rate limiters (GCRA, sliding and fixed windows, concurrency permits) over
//!   any [`backend::RateLimitStore`], or in process memory.
//! - a [`breaker::CircuitBreaker`] stops calls to a failing dependency (closed, open,
//!   half-open), alone or shared between processes through a [`backend::BreakerStore`];
//!   tasks that name one are deferred while it is open, without using an attempt;
//!
//! - periodic [`schedule::Schedule`]s are fired by the scheduler loop [`beat::Beat`], which
//!   one process leads at a time through a [`backend::Coordinator`] lease.
//!
//! Time is always passed in: stores never read the clock, so tests drive time with
//! [`clock::ManualClock`].

pub mod backend;
pub mod beat;
pub mod breaker;
pub mod client;
pub mod clock;
pub mod duration;
pub mod error;
pub mod job;
pub mod limit;
pub mod retention;
pub mod retry;
pub mod schedule;
pub mod task;
pub mod worker;
pub mod workflow;

pub use backend::{
    BreakerStore, Broker, CancelOutcome, CancelReport, Coordinator, EndedJob, KvStore, QueueAdmin,
    Rate, RateLimitStore, ResultStore, TaskLimits, WorkflowStore,
};
pub use beat::{Beat, BeatConfig};
pub use client::{AsClient, Client, Enqueue, JobHandle, JobOptions};
pub use clock::{Clock, FleetClock, ManualClock, StoreClock, SystemClock, UnixMs, WarpedClock};
pub use error::{Error, ErrorKind, Result};
pub use job::{
    Encoding, ErrorInfo, Job, JobId, JobInfo, JobState, Priority, Progress, Unique, UniqueFor,
};
pub use retry::Backoff;
pub use schedule::{Missed, Schedule};
pub use task::{Registry, Task, TaskContext, TaskDef, TaskError, TaskOptions};
pub use worker::{Shutdown, Worker, WorkerConfig, WorkerStats};
pub use workflow::{chain, chord, group, map, Flow, Step, WorkflowHandle};
