//! The backend capability traits every store implements, and the values they exchange.
//!
//! Stores never read the clock: every call that depends on time takes `now`.

use crate::clock::{StoreClock, UnixMs};
use crate::error::Result;
use crate::job::{ErrorInfo, Job, JobId, JobInfo, JobState};
use serde::{Deserialize, Serialize};
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

/// Counts for one queue.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueStats {
    /// The queue's name.
    pub queue: String,
    /// Whether claiming from it is paused.
    pub paused: bool,
    /// Jobs per state (absent states are zero).
    pub counts: BTreeMap<String, u64>,
}

impl QueueStats {
    /// The number of jobs in `state`.
    pub fn count(&self, state: JobState) -> u64 {
        self.counts.get(state.as_str()).copied().unwrap_or(0)
    }
}

/// Queues of jobs under fenced leases: the part of a backend workers need.
pub trait Broker: StoreClock {
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

    /// Stops claims from a queue.
    fn pause(&self, queue: &str) -> impl Future<Output = Result<()>> + Send;
    /// Lets claims from a queue resume.
    fn resume(&self, queue: &str) -> impl Future<Output = Result<()>> + Send;
    /// Counts per queue and state.
    fn stats(&self) -> impl Future<Output = Result<Vec<QueueStats>>> + Send;
    /// Deletes the pending and scheduled jobs of a queue; returns how many.
    fn purge(&self, queue: &str) -> impl Future<Output = Result<u64>> + Send;

    /// Dead letters, newest first, optionally of one queue.
    fn dead_letters(
        &self,
        queue: Option<String>,
        limit: usize,
        offset: usize,
    ) -> impl Future<Output = Result<Vec<JobInfo>>> + Send;
    /// Puts dead jobs back to pending with fresh attempts; `None` retries all of them.
    fn retry_dead(
        &self,
        ids: Option<Vec<JobId>>,
        now: UnixMs,
    ) -> impl Future<Output = Result<u64>> + Send;
    /// Deletes dead letters, optionally of one queue.
    fn purge_dead(&self, queue: Option<String>) -> impl Future<Output = Result<u64>> + Send;

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

/// States, results, errors and progress of jobs.
pub trait ResultStore: Send + Sync + 'static {
    /// Everything known about a job, or `None` if it is unknown or its record expired.
    fn get(&self, id: JobId) -> impl Future<Output = Result<Option<JobInfo>>> + Send;

    /// Records progress of a running attempt (ignored if `lease` no longer holds).
    fn set_progress(
        &self,
        lease: LeaseRef,
        fraction: f64,
        message: Option<String>,
    ) -> impl Future<Output = Result<bool>> + Send;

    /// Waits until the job reaches a terminal state, for at most `timeout`.
    ///
    /// # Errors
    /// [`crate::Error::Timeout`] when it did not finish in time, [`crate::Error::NotFound`]
    /// when the job is unknown.
    fn wait(&self, id: JobId, timeout: Duration) -> impl Future<Output = Result<JobInfo>> + Send;
}

/// What one member of a join (the barrier after a group) brings to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JoinInput {
    /// The member's output, as JSON text.
    Output(Vec<u8>),
    /// The member failed; the message names it and says why.
    Failed(String),
}

/// One member arriving at a join.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinArrival {
    /// The join's id (deterministic: derived from the workflow step that opened it).
    pub join: JobId,
    /// The member's place in the group, `0..total`.
    pub index: u32,
    /// How many members the group has (at least 1).
    pub total: u32,
    /// What the member brings.
    pub input: JoinInput,
    /// How long the join's record is kept after its last change.
    pub ttl: Duration,
}

impl JoinArrival {
    /// Refuses an arrival whose index does not fit its group.
    pub fn validate(&self) -> Result<()> {
        if self.total == 0 || self.index >= self.total {
            return Err(crate::Error::config(
                "join arrival",
                format!(
                    "index {} does not fit a group of {} members (join {})",
                    self.index, self.total, self.join
                ),
            ));
        }
        Ok(())
    }
}

/// The state of a join after an arrival.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JoinStatus {
    /// Not every member has arrived yet.
    Waiting {
        /// Members arrived so far (each index counts once).
        arrived: u32,
    },
    /// Every member arrived with an output: the outputs in index order.
    Complete(Vec<Vec<u8>>),
    /// A member failed: the first failure's message. The join never completes.
    Failed(String),
}

/// Where a workflow is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WorkflowState {
    /// Steps are still running or waiting.
    Running,
    /// The last step finished: the workflow's result is its output.
    Succeeded,
    /// A step failed and stopped the workflow.
    Failed,
}

impl WorkflowState {
    /// The lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            WorkflowState::Running => "running",
            WorkflowState::Succeeded => "succeeded",
            WorkflowState::Failed => "failed",
        }
    }

    /// A stable small number for storage.
    pub fn code(self) -> u8 {
        match self {
            WorkflowState::Running => 0,
            WorkflowState::Succeeded => 1,
            WorkflowState::Failed => 2,
        }
    }

    /// The state for a stored code.
    pub fn from_code(code: i64) -> Result<Self> {
        match code {
            0 => Ok(WorkflowState::Running),
            1 => Ok(WorkflowState::Succeeded),
            2 => Ok(WorkflowState::Failed),
            other => Err(crate::Error::Codec(format!(
                "unknown workflow state code {other}"
            ))),
        }
    }
}

/// A workflow's stored record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkflowRecord {
    /// The workflow's id (also the `root_id` of every job in it).
    pub id: JobId,
    /// A short description of its shape, for people (`chain(fetch, group(3), report)`).
    pub name: String,
    /// Where it is.
    pub state: WorkflowState,
    /// The final output as JSON text, once succeeded.
    pub result: Option<Vec<u8>>,
    /// What stopped it, once failed.
    pub error: Option<String>,
    /// When it started.
    pub created_at: UnixMs,
    /// When it finished.
    pub finished_at: Option<UnixMs>,
    /// How long the record is kept after it finishes.
    pub ttl: Duration,
}

/// How a workflow ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WorkflowEnd {
    /// With this output (JSON text).
    Succeeded(Vec<u8>),
    /// With this error.
    Failed(String),
}

/// Joins and workflow records: what workflows (chain, group, chord) need from a store.
pub trait WorkflowStore: Send + Sync + 'static {
    /// Records a member's arrival at a join. Idempotent per index: the first input recorded
    /// for an index stays, so a member delivered twice counts once.
    fn join_arrive(
        &self,
        arrival: JoinArrival,
        now: UnixMs,
    ) -> impl Future<Output = Result<JoinStatus>> + Send;

    /// Stores a new workflow record (state running); does nothing if one with its id exists.
    fn workflow_start(&self, record: WorkflowRecord) -> impl Future<Output = Result<()>> + Send;

    /// Ends a running workflow. Only the first end is applied (the returned flag says whether
    /// this one was); waiters are woken. The record is kept for its `ttl` from `now`.
    fn workflow_finish(
        &self,
        id: JobId,
        end: WorkflowEnd,
        now: UnixMs,
    ) -> impl Future<Output = Result<bool>> + Send;

    /// The record, or `None` if unknown or expired.
    fn workflow_get(
        &self,
        id: JobId,
    ) -> impl Future<Output = Result<Option<WorkflowRecord>>> + Send;

    /// Waits until the workflow is no longer running, for at most `timeout`.
    ///
    /// # Errors
    /// [`crate::Error::Timeout`] when it is still running, [`crate::Error::NotFound`] when it
    /// is unknown.
    fn workflow_wait(
        &self,
        id: JobId,
        timeout: Duration,
    ) -> impl Future<Output = Result<WorkflowRecord>> + Send;
}

/// A periodic schedule's stored state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScheduleState {
    /// The schedule's name.
    pub name: String,
    /// The last tick handled (ms): fired, or passed over by the missed-tick policy or while
    /// paused. A beat that first sees a schedule records the moment it saw it, so earlier
    /// ticks are not back-filled.
    pub last_tick: Option<UnixMs>,
    /// Paused schedules do not fire.
    pub paused: bool,
}

/// Leader leases with fencing tokens, and the state of periodic schedules: what the
/// scheduler (`celeriac beat`) needs from a store.
pub trait Coordinator: StoreClock {
    /// Takes the lease `name` for `holder` until `now + ttl` when it is free, expired, or
    /// already held by `holder` (a renewal). Returns the fencing token while held: it grows
    /// each time the lease changes hands and stays the same across renewals.
    fn acquire_leader(
        &self,
        name: &str,
        holder: &str,
        ttl: Duration,
        now: UnixMs,
    ) -> impl Future<Output = Result<Option<u64>>> + Send;

    /// Gives the lease up if `token` still holds it; returns whether it did.
    fn release_leader(&self, name: &str, token: u64) -> impl Future<Output = Result<bool>> + Send;

    /// The stored state of every schedule that has one.
    fn schedule_states(&self) -> impl Future<Output = Result<Vec<ScheduleState>>> + Send;

    /// Records that `schedule` fired `tick`, only while `token` holds the lease `leader` and
    /// `tick` is later than the recorded one; returns whether it was recorded.
    fn record_tick(
        &self,
        leader: &str,
        token: u64,
        schedule: &str,
        tick: UnixMs,
        now: UnixMs,
    ) -> impl Future<Output = Result<bool>> + Send;

    /// Pauses or resumes a schedule.
    fn set_schedule_paused(
        &self,
        schedule: &str,
        paused: bool,
    ) -> impl Future<Output = Result<()>> + Send;
}

/// One value to store under a key, until `ttl` from the call's `now`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KvEntry {
    /// The key.
    pub key: String,
    /// The bytes.
    pub value: Vec<u8>,
    /// How long the store keeps it (above zero).
    pub ttl: Duration,
}

/// What a subscription to a broadcast channel delivers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KvEvent {
    /// A message published on the channel.
    Message(Vec<u8>),
    /// Messages may have been lost (the subscription was down, or fell behind): whoever keeps
    /// copies on the strength of these messages must drop them.
    Reset,
}

/// A subscription to a broadcast channel: events arrive in order; dropping it unsubscribes.
#[derive(Debug)]
pub struct KvSubscription {
    rx: tokio::sync::mpsc::Receiver<KvEvent>,
}

impl KvSubscription {
    /// A subscription fed by `rx` (for backends).
    pub fn new(rx: tokio::sync::mpsc::Receiver<KvEvent>) -> Self {
        Self { rx }
    }

    /// The next event, or `None` once the backend is closed.
    pub async fn next(&mut self) -> Option<KvEvent> {
        self.rx.recv().await
    }
}

/// Keys with values that expire, lease locks, counters and a broadcast channel: the second
/// level (L2) of the cache, shared by every process.
///
/// Keys are at most [`KvStore::MAX_KEY_LEN`] bytes; callers hash longer ones.
pub trait KvStore: StoreClock {
    /// The longest key a store accepts.
    const MAX_KEY_LEN: usize = 1024;

    /// The values under `keys` (one per key, `None` when absent or expired at `now`).
    fn kv_get(
        &self,
        keys: Vec<String>,
        now: UnixMs,
    ) -> impl Future<Output = Result<Vec<Option<Vec<u8>>>>> + Send;

    /// Stores values, each until its ttl from `now` runs out, replacing what was there.
    fn kv_set(&self, entries: Vec<KvEntry>, now: UnixMs)
        -> impl Future<Output = Result<()>> + Send;

    /// Deletes keys; returns how many existed.
    fn kv_delete(&self, keys: Vec<String>, now: UnixMs)
        -> impl Future<Output = Result<u64>> + Send;

    /// Adds one to the counter under `key` (a missing one counts from 0) and returns the new
    /// value. Counters do not expire.
    fn kv_incr(&self, key: &str, now: UnixMs) -> impl Future<Output = Result<i64>> + Send;

    /// Takes the lock `key` for `token` until `now + ttl` if it is free or expired; returns
    /// whether it was taken.
    fn kv_lock(
        &self,
        key: &str,
        token: &str,
        ttl: Duration,
        now: UnixMs,
    ) -> impl Future<Output = Result<bool>> + Send;

    /// Releases the lock `key` if `token` holds it (compare and delete); returns whether it did.
    fn kv_unlock(&self, key: &str, token: &str) -> impl Future<Output = Result<bool>> + Send;

    /// Publishes a message to every subscriber of `channel`, in every process.
    fn kv_publish(
        &self,
        channel: &str,
        message: Vec<u8>,
    ) -> impl Future<Output = Result<()>> + Send;

    /// Subscribes to `channel`. Delivery is at most once; a [`KvEvent::Reset`] says when
    /// messages may have been lost.
    fn kv_subscribe(&self, channel: &str) -> impl Future<Output = Result<KvSubscription>> + Send;
}

/// Checks a key against the rules every [`KvStore`] applies: not empty, at most `max` bytes.
///
/// # Errors
/// [`Error::Config`](crate::Error::Config) on the setting `kv key`, naming the key's length.
pub fn check_kv_key(key: &str, max: usize) -> Result<()> {
    if key.is_empty() {
        return Err(crate::Error::config(
            "kv key",
            "the key is empty (0 bytes); a key needs at least one byte",
        ));
    }
    if key.len() > max {
        let head: String = key.chars().take(32).collect();
        let more = if head.len() < key.len() { "…" } else { "" };
        return Err(crate::Error::config(
            "kv key",
            format!(
                "the key `{head}{more}` is {} bytes long, more than the {max} bytes a key may have; \
                 hash longer keys",
                key.len()
            ),
        ));
    }
    Ok(())
}

/// Checks the ttl of a value or lock under `key`: above zero.
///
/// # Errors
/// [`Error::Config`](crate::Error::Config) on the setting `kv ttl`, naming the key.
pub fn check_kv_ttl(key: &str, ttl: Duration) -> Result<()> {
    if ttl.is_zero() {
        return Err(crate::Error::config(
            "kv ttl",
            format!("the ttl of `{key}` is zero; a value or lock needs a ttl above zero"),
        ));
    }
    Ok(())
}

/// Atomic rate-limit decisions and concurrency permits, shared by every process on the store.
///
/// Keys are at most [`crate::limit::MAX_KEY_LEN`] bytes and not empty; a bad key, quota or
/// cost is an [`Error::Config`](crate::Error::Config), never a panic (see
/// [`crate::limit::check_request`]). `now` is passed in: stores never read the clock.
pub trait RateLimitStore: StoreClock {
    /// Checks every quota for `key` at `now` and, only if all of them allow it, charges `cost`
    /// to each, in one atomic step. Returns the most restrictive quota's decision.
    fn check_limits(
        &self,
        key: &str,
        quotas: &[crate::limit::Quota],
        cost: u32,
        now: UnixMs,
    ) -> impl Future<Output = Result<crate::limit::Decision>> + Send;

    /// Takes one of `max` concurrency permits of `key` for `holder` until `now + lease`, or
    /// renews `holder`'s own. Leases that ran out by `now` no longer count, so a holder that
    /// died frees its permit when its lease ends.
    fn acquire_permit(
        &self,
        key: &str,
        holder: &str,
        max: u32,
        lease: Duration,
        now: UnixMs,
    ) -> impl Future<Output = Result<crate::limit::Decision>> + Send;

    /// Gives `holder`'s permit of `key` back; returns whether it held one at `now`.
    fn release_permit(
        &self,
        key: &str,
        holder: &str,
        now: UnixMs,
    ) -> impl Future<Output = Result<bool>> + Send;
}

/// How a shared circuit breaker judges the signals of its instances; passed with every
/// [`BreakerStore`] call (the store keeps no settings).
#[derive(Debug, Clone, PartialEq)]
pub struct BreakerPolicy {
    /// Signals older than this (ms) are forgotten.
    pub window_ms: i64,
    /// Signals are summed per slice of time of this length (ms; at least 1).
    pub bucket_ms: i64,
    /// The fewest calls, over every instance, before rates are judged.
    pub min_calls: u64,
    /// The fewest instances that must each see the failure (or slow-call) rate on their own
    /// calls before the breaker opens for everyone: one bad node does not trip the fleet.
    pub quorum: u32,
    /// The failure rate (percent) at or above which it opens.
    pub failure_rate: f64,
    /// The slow-call rate (percent) at or above which it opens, if slow calls count.
    pub slow_rate: Option<f64>,
    /// How many probes half-open lets through across every instance.
    pub probes: u32,
    /// A probe reservation lapses after this long (ms) without a result.
    pub probe_lease_ms: i64,
    /// The first open period (ms).
    pub open_ms: i64,
    /// Each further trip in a row multiplies the open period by this.
    pub backoff: f64,
    /// The open period never exceeds this (ms).
    pub max_open_ms: i64,
    /// If this call opens the breaker, the share (0 to 1) its period is cut by: the caller's
    /// random jitter (stores draw no random numbers).
    pub jitter_cut: f64,
}

impl BreakerPolicy {
    /// The open period (ms) after `trips` trips in a row, jitter applied.
    pub fn open_period_ms(&self, trips: u32) -> i64 {
        let exp = trips.saturating_sub(1).min(64) as i32;
        let full = (self.open_ms as f64 * self.backoff.powi(exp)).min(self.max_open_ms as f64);
        ((full * (1.0 - self.jitter_cut.clamp(0.0, 1.0))) as i64).max(1)
    }

    /// How long (ms) a store keeps a breaker's keys after its last write: long enough to
    /// outlive its window and its longest open period.
    pub fn ttl_ms(&self) -> i64 {
        self.window_ms
            .max(self.max_open_ms)
            .max(self.probe_lease_ms)
            .saturating_mul(2)
            .max(1_000)
    }
}

/// What one instance saw of a shared breaker's calls since its last report.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BreakerSignal {
    /// Who reports (a process's id; empty with no counts for a pure read of the state).
    pub instance: String,
    /// Calls judged.
    pub calls: u64,
    /// Of which failed.
    pub failures: u64,
    /// Of which were slow.
    pub slow: u64,
}

/// A shared breaker's state in the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedBreakerState {
    /// Where the breaker is (an open one whose period ended reads as half-open).
    pub state: crate::breaker::BreakerState,
    /// When the open period ends (meaningful while open).
    pub open_until: UnixMs,
    /// Trips in a row without closing in between.
    pub trips: u32,
    /// Moves at every change of state.
    pub generation: u64,
    /// The signals within the window, over every instance.
    pub window: crate::breaker::Counts,
    /// How many instances reported within the window.
    pub instances: u32,
}

/// A manual override of a shared breaker, for every instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerCommand {
    /// Reject every call until reset.
    ForceOpen,
    /// Let every call through, judging nothing, until reset.
    ForceClosed,
    /// Closed, with no signals and no backoff history.
    Reset,
}

/// Shared circuit-breaker state: instances publish their signals, the store decides trips
/// (with a quorum of instances) and hands out a bounded number of half-open probes with
/// compare-and-set and expiry. Every key of a breaker expires ([`BreakerPolicy::ttl_ms`]
/// after its last write); a forgotten breaker is closed.
pub trait BreakerStore: StoreClock {
    /// Adds an instance's signal to the window of breaker `name` and judges it: a closed
    /// breaker opens when the window holds `min_calls`, reaches a threshold, and `quorum`
    /// instances each reach it too. Returns the state after.
    fn breaker_report(
        &self,
        name: &str,
        signal: BreakerSignal,
        policy: &BreakerPolicy,
        now: UnixMs,
    ) -> impl Future<Output = Result<SharedBreakerState>> + Send;

    /// Reserves one of the half-open probes for `token` until `now + probe_lease_ms`; returns
    /// whether it was granted (only while half-open and fewer than `probes` reservations
    /// are live) and the state.
    fn breaker_probe(
        &self,
        name: &str,
        token: &str,
        policy: &BreakerPolicy,
        now: UnixMs,
    ) -> impl Future<Output = Result<(bool, SharedBreakerState)>> + Send;

    /// Records the result of the probe reserved under `token` (ignored if the reservation
    /// lapsed or the state moved on): enough failures open the breaker again with backoff,
    /// `probes` successes close it.
    fn breaker_probe_done(
        &self,
        name: &str,
        token: &str,
        failed: bool,
        policy: &BreakerPolicy,
        now: UnixMs,
    ) -> impl Future<Output = Result<SharedBreakerState>> + Send;

    /// Forces the breaker open or closed for everyone, or resets it.
    fn breaker_command(
        &self,
        name: &str,
        command: BreakerCommand,
        policy: &BreakerPolicy,
        now: UnixMs,
    ) -> impl Future<Output = Result<SharedBreakerState>> + Send;

    /// The state, without changing anything (the window as of the last report); `None`
    /// when the store has no live record of `name`.
    fn breaker_status(
        &self,
        name: &str,
        now: UnixMs,
    ) -> impl Future<Output = Result<Option<SharedBreakerState>>> + Send;
}
