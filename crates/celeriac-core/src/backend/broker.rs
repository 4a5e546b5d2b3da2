//! [`Broker`]: queues of jobs under fenced leases, the part of a backend workers need, and
//! the values it exchanges.

use crate::clock::{StoreClock, UnixMs};
use crate::error::Result;
use crate::job::{ErrorInfo, Job, JobId, JobState};
use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

/// A request to claim ready jobs.
#[derive(Debug, Clone)]
pub struct ClaimRequest {
    /// Queues to take from, most important first.
    pub queues: Vec<String>,
    /// At most this many jobs.
    pub limit: usize,
    /// The lease each claimed job gets.
    pub lease: Duration,
    /// Who claims (shown by `inspect`).
    pub worker: String,
    /// The current time.
    pub now: UnixMs,
    /// Global limits of the tasks that have them: a job a limit holds back is left waiting
    /// and uses no attempt.
    pub limits: BTreeMap<String, TaskLimits>,
}

/// Limits on one task across every worker, enforced by the store when jobs are claimed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TaskLimits {
    /// At most this many of the task's jobs run at once (per queue).
    pub concurrency: Option<u32>,
    /// At most this many starts per period, spaced evenly (GCRA without burst): no window
    /// of the period's length ever sees more.
    pub rate: Option<Rate>,
}

impl TaskLimits {
    /// True when there is nothing to enforce.
    pub fn is_empty(&self) -> bool {
        self.concurrency.is_none() && self.rate.is_none()
    }
}

/// A rate: `count` per `per`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    /// How many.
    pub count: u32,
    /// In how long.
    pub per: Duration,
}

impl Rate {
    /// The spacing between two starts, in milliseconds (at least 1).
    pub fn interval_ms(&self) -> i64 {
        (crate::clock::duration_ms(self.per) / i64::from(self.count.max(1))).max(1)
    }
}

/// A job claimed under a lease.
#[derive(Debug, Clone)]
pub struct Claimed {
    /// The job, with `attempts` already counting this attempt.
    pub job: Job,
    /// The fencing token: every later call about this attempt must present it.
    pub token: u64,
    /// When the lease runs out unless extended.
    pub lease_until: UnixMs,
}

/// A lease held by a worker: the job, its queue, and the fencing token of its attempt.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LeaseRef {
    /// The job.
    pub id: JobId,
    /// The attempt's fencing token.
    pub token: u64,
    /// The job's queue (stores that keep queues apart, such as Redis, need it).
    pub queue: Arc<str>,
}

impl Claimed {
    /// The lease this claim holds.
    pub fn lease(&self) -> LeaseRef {
        LeaseRef {
            id: self.job.id,
            token: self.token,
            queue: self.job.queue.as_str().into(),
        }
    }
}

/// How an attempt ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The task returned a value (`None` when the job keeps no result).
    Succeeded {
        /// The serialized return value.
        result: Option<Vec<u8>>,
    },
    /// Run again at `at`.
    Retry {
        /// When the next attempt may start.
        at: UnixMs,
        /// Why this attempt failed.
        error: ErrorInfo,
    },
    /// Finished with a permanent error.
    Failed {
        /// The error.
        error: ErrorInfo,
    },
    /// Move to the dead letters with the reason.
    Dead {
        /// The reason.
        error: ErrorInfo,
    },
    /// The job was cancelled while running.
    Cancelled,
    /// Not run (a circuit breaker its task depends on is open): back to waiting until `at`,
    /// the attempt not counted. A job asked to stop ends as cancelled instead.
    Deferred {
        /// When it may start again.
        at: UnixMs,
    },
}

/// The end of one attempt, fenced by its token.
#[derive(Debug, Clone)]
pub struct Completion {
    /// The lease this completes.
    pub lease: LeaseRef,
    /// How it ended.
    pub outcome: Outcome,
}

/// What a reaping pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReapReport {
    /// Expired leases put back to pending.
    pub requeued: u64,
    /// Expired leases whose job had no attempts left, moved to the dead letters.
    pub dead: u64,
    /// Finished jobs whose retention ran out and were deleted.
    pub swept: u64,
    /// Dead letters deleted, oldest first, because their queue held more than its cap.
    pub dead_dropped: u64,
    /// The jobs this pass ended (dead, or cancelled while their lease was out), with what
    /// depends on them (a workflow) needs to learn of it.
    pub ended: Vec<EndedJob>,
}

/// A job a store ended by itself (a reap, or a cancel of a waiting job), as its workflow
/// needs to know it: the store hands these back from the same call, so nothing is read again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndedJob {
    /// The job.
    pub id: JobId,
    /// Its task.
    pub task: String,
    /// How it ended: [`JobState::Dead`] or [`JobState::Cancelled`].
    pub state: JobState,
    /// Why the store dead-lettered it (`lease_expired`, a malformed record); `None` for a
    /// cancelled job.
    pub error: Option<ErrorInfo>,
    /// Its place in a workflow: the job's `celeriac-flow` header
    /// ([`FLOW_HEADER`](crate::workflow::FLOW_HEADER)), `None` outside workflows.
    pub flow: Option<String>,
}

/// What a cancel request did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CancelReport {
    /// What it found.
    pub outcome: CancelOutcome,
    /// The job it ended: `Some` exactly when `outcome` is [`CancelOutcome::Cancelled`].
    pub ended: Option<EndedJob>,
}

/// What a cancel request found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelOutcome {
    /// The job was waiting (pending, scheduled or retrying) and is now cancelled: it never runs.
    Cancelled,
    /// The job is running: its worker is asked to stop it (its context's cancellation token
    /// fires within about a second) and it ends as cancelled.
    Requested,
    /// The job had already finished, in this state.
    AlreadyFinished(JobState),
    /// No such job (or its record expired).
    NotFound,
}

/// Queues of jobs under fenced leases: the part of a backend workers need.
pub trait Broker: StoreClock {
    /// Whether this store may hold queues: an error naming the setting for a store opened
    /// for caching alone (a URL with `?role=cache`), whose evictions would lose jobs. A worker
    /// checks it at start; enqueues and claims refuse with the same error.
    fn queues_allowed(&self) -> Result<()> {
        Ok(())
    }

    /// Stores jobs atomically (all or none). A job whose `run_at` is after `now` is scheduled.
    ///
    /// Returns, for each job, the id of the job that stands for it: its own, or for a unique
    /// job whose key is held, the holder's (nothing new is stored; a debounced holder that has
    /// not started takes the new arguments and start time).
    ///
    /// Enqueueing is idempotent by id: a job whose id already exists in its queue is not
    /// stored again, and the existing job stands for it. Workflows and schedules rely on this
    /// with ids derived from what they stand for.
    fn enqueue(
        &self,
        jobs: Vec<Job>,
        now: UnixMs,
    ) -> impl Future<Output = Result<Vec<JobId>>> + Send;

    /// Claims up to `limit` ready jobs and leases them, in one atomic step.
    ///
    /// Due scheduled and retrying jobs are promoted first (a bounded batch). Jobs past their
    /// `expires_at` are marked expired instead of being returned. Paused queues are skipped.
    fn claim(&self, req: ClaimRequest) -> impl Future<Output = Result<Vec<Claimed>>> + Send;

    /// Extends every lease in `leases` to `until`; returns the ones no longer held.
    fn heartbeat(
        &self,
        leases: Vec<LeaseRef>,
        until: UnixMs,
        now: UnixMs,
    ) -> impl Future<Output = Result<Vec<LeaseRef>>> + Send;

    /// Records the end of attempts. Each is applied only if its token still holds the lease;
    /// the returned flags say which were applied (a stale token is refused, not an error).
    fn complete(
        &self,
        done: Vec<Completion>,
        now: UnixMs,
    ) -> impl Future<Output = Result<Vec<bool>>> + Send;

    /// Hands leased jobs back to pending without counting their attempt (graceful shutdown).
    fn release(
        &self,
        leases: Vec<LeaseRef>,
        now: UnixMs,
    ) -> impl Future<Output = Result<u64>> + Send;

    /// Moves expired leases back to pending (or dead, without attempts left), deletes
    /// finished jobs past their retention and drops the oldest dead letters beyond each
    /// queue's cap. It works in bounded batches (each one short for the store) and goes on
    /// while a batch came back full, so one call leaves nothing due at `now`.
    fn reap(&self, now: UnixMs) -> impl Future<Output = Result<ReapReport>> + Send;

    /// The earliest `run_at` of a scheduled or retrying job in these queues.
    fn next_due(&self, queues: Vec<String>) -> impl Future<Output = Result<Option<UnixMs>>> + Send;

    /// Waits until work may have arrived in `queues`, or `max` has passed.
    ///
    /// Returns at once if something was enqueued in this process since `since` (a value from
    /// [`Broker::work_epoch`]), so a wake-up between a claim and this call is not lost.
    /// Backends that can block on the store (Redis) also wake for work other processes add.
    fn wait_for_work(
        &self,
        queues: &[String],
        since: u64,
        max: Duration,
    ) -> impl Future<Output = ()> + Send;

    /// A counter that moves whenever work is added in this process.
    fn work_epoch(&self) -> u64;

    /// True when [`Broker::wait_for_work`] also wakes for work other processes add (the store
    /// can block, as Redis can), so idle workers need not poll often.
    fn wakes_across_processes(&self) -> bool {
        false
    }

    /// Cancels a job: a waiting one ends as cancelled at once; a running one is flagged, and
    /// a flagged job that comes back (lease expired, retry due) ends as cancelled instead of
    /// running again. A job it ends at once comes back in [`CancelReport::ended`].
    fn cancel(&self, id: JobId, now: UnixMs) -> impl Future<Output = Result<CancelReport>> + Send;

    /// The leases among `leases` whose jobs were asked to stop.
    fn cancel_requested(
        &self,
        leases: Vec<LeaseRef>,
    ) -> impl Future<Output = Result<Vec<LeaseRef>>> + Send;
}
