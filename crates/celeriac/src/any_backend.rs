//! [`AnyBackend`]: the store an application runs on, chosen by URL at start.

use crate::{Error, Result};
use celeriac_core::backend::{
    BreakerCommand, BreakerPolicy, BreakerSignal, BreakerStore, Broker, CancelReport, ClaimRequest,
    Claimed, Completion, Control, Coordinator, Event, EventLog, History, HistoryEntry,
    HistoryQuery, JobPage, JobQuery, JoinArrival, JoinStatus, KvEntry, KvMemory, KvStore,
    KvSubscription, LeaseRef, ProcessInfo, ProcessRegistry, QueueAdmin, QueueStats, RateLimitStore,
    ReapReport, ResultStore, ScheduleState, SharedBreakerState, StoreFigures, StoreHealth,
    WorkflowEnd, WorkflowRecord, WorkflowStore,
};
use celeriac_core::limit::{Decision, Quota};
use celeriac_core::redact;
use celeriac_core::{Job, JobId, JobInfo, UnixMs};
#[cfg(feature = "sqlite")]
use celeriac_embedded::SqliteBackend;
#[cfg(feature = "redis")]
use celeriac_redis::RedisBackend;
use std::time::Duration;

/// One of the backends, chosen by URL scheme: `sqlite://` (embedded, the default) or
/// `redis://`, `rediss://`, `redis+cluster://`, `redis+sentinel://`.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum AnyBackend {
    /// One SQLite file (the `sqlite` feature, on by default).
    #[cfg(feature = "sqlite")]
    Sqlite(SqliteBackend),
    /// Redis: standalone, Cluster or Sentinel (the `redis` feature).
    #[cfg(feature = "redis")]
    Redis(RedisBackend),
}

#[cfg(not(any(feature = "sqlite", feature = "redis")))]
compile_error!(
    "celeriac needs a backend: enable the `sqlite` feature, the `redis` feature or both"
);

impl AnyBackend {
    /// Opens the backend a URL names.
    ///
    /// # Errors
    /// An unknown scheme, or a store that cannot be opened, with a message naming it.
    /// No message of the error quotes the URL's password: a store's own error that echoes it
    /// has it masked.
    pub async fn connect(url: &str) -> Result<Self> {
        let scheme = url.split(':').next().unwrap_or("");
        let opened = match scheme {
            "sqlite" => Self::sqlite(url).await,
            "redis" | "rediss" | "redis+sentinel" | "rediss+sentinel" | "redis+cluster"
            | "rediss+cluster" => Self::redis(url).await,
            // Text without a `:` is no URL at all, and may be a secret pasted in its place:
            // it is not repeated.
            _ if !url.contains(':') => Err(Error::config(
                "url",
                "the backend URL has no scheme; expected sqlite://path, sqlite::memory:, \
                 redis://, rediss://, redis+cluster:// or redis+sentinel://",
            )),
            _ => Err(Error::config(
                "url",
                format!(
                    "unknown backend URL scheme in `{}`; expected sqlite://path, \
                     sqlite::memory:, redis://, rediss://, redis+cluster:// or redis+sentinel://",
                    redact::url(url)
                ),
            )),
        };
        opened.map_err(|e| redact::error(e, &redact::url_secrets(url)))
    }

    #[cfg(feature = "sqlite")]
    async fn sqlite(url: &str) -> Result<Self> {
        Ok(AnyBackend::Sqlite(SqliteBackend::connect(url).await?))
    }

    #[cfg(not(feature = "sqlite"))]
    async fn sqlite(url: &str) -> Result<Self> {
        Err(not_built(url, "sqlite"))
    }

    #[cfg(feature = "redis")]
    async fn redis(url: &str) -> Result<Self> {
        Ok(AnyBackend::Redis(RedisBackend::connect(url).await?))
    }

    #[cfg(not(feature = "redis"))]
    async fn redis(url: &str) -> Result<Self> {
        Err(not_built(url, "redis"))
    }
}

/// The error for a URL whose backend this build leaves out.
#[cfg(not(all(feature = "sqlite", feature = "redis")))]
fn not_built(url: &str, feature: &str) -> Error {
    Error::config(
        "url",
        format!(
            "`{}` needs the `{feature}` feature of celeriac, which this build leaves out",
            redact::url(url)
        ),
    )
}

/// Forwards each method to the backend in use.
macro_rules! forward {
    ($self:ident, $b:ident => $call:expr) => {
        match $self {
            #[cfg(feature = "sqlite")]
            AnyBackend::Sqlite($b) => $call,
            #[cfg(feature = "redis")]
            AnyBackend::Redis($b) => $call,
        }
    };
}

impl celeriac_core::StoreClock for AnyBackend {
    fn fleet_clock(&self) -> std::sync::Arc<celeriac_core::FleetClock> {
        forward!(self, b => b.fleet_clock())
    }
}

impl Broker for AnyBackend {
    fn queues_allowed(&self) -> Result<()> {
        forward!(self, b => b.queues_allowed())
    }
    async fn enqueue(&self, jobs: Vec<Job>, now: UnixMs) -> Result<Vec<JobId>> {
        forward!(self, b => b.enqueue(jobs, now).await)
    }
    async fn claim(&self, req: ClaimRequest) -> Result<Vec<Claimed>> {
        forward!(self, b => b.claim(req).await)
    }
    async fn heartbeat(
        &self,
        leases: Vec<LeaseRef>,
        until: UnixMs,
        now: UnixMs,
    ) -> Result<Vec<LeaseRef>> {
        forward!(self, b => b.heartbeat(leases, until, now).await)
    }
    async fn complete(&self, done: Vec<Completion>, now: UnixMs) -> Result<Vec<bool>> {
        forward!(self, b => b.complete(done, now).await)
    }
    async fn release(&self, leases: Vec<LeaseRef>, now: UnixMs) -> Result<u64> {
        forward!(self, b => b.release(leases, now).await)
    }
    async fn reap(&self, now: UnixMs) -> Result<ReapReport> {
        forward!(self, b => b.reap(now).await)
    }
    async fn next_due(&self, queues: Vec<String>) -> Result<Option<UnixMs>> {
        forward!(self, b => b.next_due(queues).await)
    }
    async fn wait_for_work(&self, queues: &[String], since: u64, max: Duration) {
        forward!(self, b => b.wait_for_work(queues, since, max).await)
    }
    fn work_epoch(&self) -> u64 {
        forward!(self, b => b.work_epoch())
    }
    fn wakes_across_processes(&self) -> bool {
        forward!(self, b => b.wakes_across_processes())
    }
    async fn cancel(&self, id: JobId, now: UnixMs) -> Result<CancelReport> {
        forward!(self, b => b.cancel(id, now).await)
    }
    async fn cancel_requested(&self, leases: Vec<LeaseRef>) -> Result<Vec<LeaseRef>> {
        forward!(self, b => b.cancel_requested(leases).await)
    }
}

impl QueueAdmin for AnyBackend {
    async fn pause(&self, queue: &str) -> Result<()> {
        forward!(self, b => b.pause(queue).await)
    }
    async fn resume(&self, queue: &str) -> Result<()> {
        forward!(self, b => b.resume(queue).await)
    }
    async fn stats(&self) -> Result<Vec<QueueStats>> {
        forward!(self, b => b.stats().await)
    }
    async fn purge(&self, queue: &str) -> Result<u64> {
        forward!(self, b => b.purge(queue).await)
    }
    async fn dead_letters(
        &self,
        queue: Option<String>,
        limit: usize,
        offset: usize,
    ) -> Result<Vec<JobInfo>> {
        forward!(self, b => b.dead_letters(queue, limit, offset).await)
    }
    async fn retry_dead(&self, ids: Option<Vec<JobId>>, now: UnixMs) -> Result<u64> {
        forward!(self, b => b.retry_dead(ids, now).await)
    }
    async fn purge_dead(&self, queue: Option<String>) -> Result<u64> {
        forward!(self, b => b.purge_dead(queue).await)
    }
    async fn list_jobs(
        &self,
        query: JobQuery,
        cursor: Option<String>,
        limit: usize,
    ) -> Result<JobPage> {
        forward!(self, b => b.list_jobs(query, cursor, limit).await)
    }
    async fn delete_jobs(&self, queue: &str, ids: Vec<JobId>) -> Result<u64> {
        forward!(self, b => b.delete_jobs(queue, ids).await)
    }
}

impl ResultStore for AnyBackend {
    async fn get(&self, id: JobId) -> Result<Option<JobInfo>> {
        forward!(self, b => b.get(id).await)
    }
    async fn set_progress(
        &self,
        lease: LeaseRef,
        fraction: f64,
        message: Option<String>,
    ) -> Result<bool> {
        forward!(self, b => b.set_progress(lease, fraction, message).await)
    }
    async fn wait(&self, id: JobId, timeout: Duration) -> Result<JobInfo> {
        forward!(self, b => b.wait(id, timeout).await)
    }
}

impl WorkflowStore for AnyBackend {
    async fn join_arrive(&self, arrival: JoinArrival, now: UnixMs) -> Result<JoinStatus> {
        forward!(self, b => b.join_arrive(arrival, now).await)
    }
    async fn workflow_start(&self, record: WorkflowRecord) -> Result<()> {
        forward!(self, b => b.workflow_start(record).await)
    }
    async fn workflow_finish(&self, id: JobId, end: WorkflowEnd, now: UnixMs) -> Result<bool> {
        forward!(self, b => b.workflow_finish(id, end, now).await)
    }
    async fn workflow_get(&self, id: JobId) -> Result<Option<WorkflowRecord>> {
        forward!(self, b => b.workflow_get(id).await)
    }
    async fn workflow_wait(&self, id: JobId, timeout: Duration) -> Result<WorkflowRecord> {
        forward!(self, b => b.workflow_wait(id, timeout).await)
    }
}

impl Coordinator for AnyBackend {
    async fn acquire_leader(
        &self,
        name: &str,
        holder: &str,
        ttl: Duration,
        now: UnixMs,
    ) -> Result<Option<u64>> {
        forward!(self, b => b.acquire_leader(name, holder, ttl, now).await)
    }
    async fn release_leader(&self, name: &str, token: u64) -> Result<bool> {
        forward!(self, b => b.release_leader(name, token).await)
    }
    async fn schedule_states(&self) -> Result<Vec<ScheduleState>> {
        forward!(self, b => b.schedule_states().await)
    }
    async fn record_tick(
        &self,
        leader: &str,
        token: u64,
        schedule: &str,
        tick: UnixMs,
        now: UnixMs,
    ) -> Result<bool> {
        forward!(self, b => b.record_tick(leader, token, schedule, tick, now).await)
    }
    async fn set_schedule_paused(&self, schedule: &str, paused: bool) -> Result<()> {
        forward!(self, b => b.set_schedule_paused(schedule, paused).await)
    }
}

impl ProcessRegistry for AnyBackend {
    async fn refresh(&self, info: &ProcessInfo) -> Result<Vec<Control>> {
        forward!(self, b => b.refresh(info).await)
    }
    async fn leave(&self, id: &str) -> Result<()> {
        forward!(self, b => b.leave(id).await)
    }
    async fn processes(&self, now: UnixMs) -> Result<Vec<ProcessInfo>> {
        forward!(self, b => b.processes(now).await)
    }
    async fn control(&self, id: &str, command: Control, now: UnixMs) -> Result<bool> {
        forward!(self, b => b.control(id, command, now).await)
    }
}

impl EventLog for AnyBackend {
    async fn append(&self, events: Vec<Event>) -> Result<()> {
        forward!(self, b => b.append(events).await)
    }
    async fn events(&self, after: Option<String>, limit: usize) -> Result<Vec<Event>> {
        forward!(self, b => b.events(after, limit).await)
    }
}

impl StoreHealth for AnyBackend {
    async fn ping(&self) -> Result<Duration> {
        forward!(self, b => b.ping().await)
    }
    async fn store_figures(&self) -> Result<StoreFigures> {
        forward!(self, b => b.store_figures().await)
    }
}

impl History for AnyBackend {
    async fn record(&self, entries: Vec<HistoryEntry>, now: UnixMs) -> Result<()> {
        forward!(self, b => b.record(entries, now).await)
    }
    async fn history(&self, query: HistoryQuery) -> Result<Vec<HistoryEntry>> {
        forward!(self, b => b.history(query).await)
    }
}

impl KvStore for AnyBackend {
    async fn kv_get(&self, keys: Vec<String>, now: UnixMs) -> Result<Vec<Option<Vec<u8>>>> {
        forward!(self, b => b.kv_get(keys, now).await)
    }
    async fn kv_set(&self, entries: Vec<KvEntry>, now: UnixMs) -> Result<()> {
        forward!(self, b => b.kv_set(entries, now).await)
    }
    async fn kv_delete(&self, keys: Vec<String>, now: UnixMs) -> Result<u64> {
        forward!(self, b => b.kv_delete(keys, now).await)
    }
    async fn kv_ensure(&self, entries: Vec<KvEntry>, now: UnixMs) -> Result<()> {
        forward!(self, b => b.kv_ensure(entries, now).await)
    }
    async fn kv_memory(&self) -> Result<Option<KvMemory>> {
        forward!(self, b => b.kv_memory().await)
    }
    async fn kv_incr(&self, key: &str, now: UnixMs) -> Result<i64> {
        forward!(self, b => b.kv_incr(key, now).await)
    }
    async fn kv_lock(&self, key: &str, token: &str, ttl: Duration, now: UnixMs) -> Result<bool> {
        forward!(self, b => b.kv_lock(key, token, ttl, now).await)
    }
    async fn kv_unlock(&self, key: &str, token: &str) -> Result<bool> {
        forward!(self, b => b.kv_unlock(key, token).await)
    }
    async fn kv_publish(&self, channel: &str, message: Vec<u8>) -> Result<()> {
        forward!(self, b => b.kv_publish(channel, message).await)
    }
    async fn kv_subscribe(&self, channel: &str) -> Result<KvSubscription> {
        forward!(self, b => b.kv_subscribe(channel).await)
    }
}

impl RateLimitStore for AnyBackend {
    async fn check_limits(
        &self,
        key: &str,
        quotas: &[Quota],
        cost: u32,
        now: UnixMs,
    ) -> Result<Decision> {
        forward!(self, b => b.check_limits(key, quotas, cost, now).await)
    }
    async fn acquire_permit(
        &self,
        key: &str,
        holder: &str,
        max: u32,
        lease: Duration,
        now: UnixMs,
    ) -> Result<Decision> {
        forward!(self, b => b.acquire_permit(key, holder, max, lease, now).await)
    }
    async fn release_permit(&self, key: &str, holder: &str, now: UnixMs) -> Result<bool> {
        forward!(self, b => b.release_permit(key, holder, now).await)
    }
}

impl BreakerStore for AnyBackend {
    async fn breaker_report(
        &self,
        name: &str,
        signal: BreakerSignal,
        policy: &BreakerPolicy,
        now: UnixMs,
    ) -> Result<SharedBreakerState> {
        forward!(self, b => b.breaker_report(name, signal, policy, now).await)
    }

    async fn breaker_probe(
        &self,
        name: &str,
        token: &str,
        policy: &BreakerPolicy,
        now: UnixMs,
    ) -> Result<(bool, SharedBreakerState)> {
        forward!(self, b => b.breaker_probe(name, token, policy, now).await)
    }

    async fn breaker_probe_done(
        &self,
        name: &str,
        token: &str,
        failed: bool,
        policy: &BreakerPolicy,
        now: UnixMs,
    ) -> Result<SharedBreakerState> {
        forward!(self, b => b.breaker_probe_done(name, token, failed, policy, now).await)
    }

    async fn breaker_command(
        &self,
        name: &str,
        command: BreakerCommand,
        policy: &BreakerPolicy,
        now: UnixMs,
    ) -> Result<SharedBreakerState> {
        forward!(self, b => b.breaker_command(name, command, policy, now).await)
    }

    async fn breaker_status(&self, name: &str, now: UnixMs) -> Result<Option<SharedBreakerState>> {
        forward!(self, b => b.breaker_status(name, now).await)
    }
}
