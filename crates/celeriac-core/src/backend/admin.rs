//! [`QueueAdmin`]: what an operator does to queues and dead letters, apart from the
//! worker's hot path: the command line and a dashboard use it, workers never do.

use super::{Broker, JobPage, JobQuery};
use crate::clock::UnixMs;
use crate::error::Result;
use crate::job::{JobId, JobInfo, JobState};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::future::Future;

/// Counts for one queue, and the times its latency is computed from. A store answers with
/// work that does not grow with the number of jobs (counts kept incrementally, index seeks).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueStats {
    /// The queue's name.
    pub queue: String,
    /// Whether claiming from it is paused.
    pub paused: bool,
    /// Jobs per state (absent states are zero).
    pub counts: BTreeMap<String, u64>,
    /// When the oldest pending job became ready to run (its `run_at`).
    #[serde(default)]
    pub oldest_pending_at: Option<UnixMs>,
    /// The earliest `run_at` of its scheduled and retrying jobs.
    #[serde(default)]
    pub next_due_at: Option<UnixMs>,
}

impl QueueStats {
    /// The number of jobs in `state`.
    pub fn count(&self, state: JobState) -> u64 {
        self.counts.get(state.as_str()).copied().unwrap_or(0)
    }

    /// Since when the oldest job ready to run at `now` has been ready: the oldest pending
    /// job, or a scheduled or retrying one already due (it becomes pending at the next claim).
    pub fn ready_since(&self, now: UnixMs) -> Option<UnixMs> {
        let due = self.next_due_at.filter(|&at| at <= now);
        match (self.oldest_pending_at, due) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The queue's latency at `now`: how long its oldest ready job has waited, in ms (0 when
    /// no job is ready).
    pub fn latency_ms(&self, now: UnixMs) -> u64 {
        self.ready_since(now)
            .map_or(0, |since| u64::try_from(now - since).unwrap_or(0))
    }
}

/// Pausing, counting and purging queues, and handling dead letters.
pub trait QueueAdmin: Broker {
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

    /// A page of the jobs `query` selects, after `cursor` (the previous page's
    /// [`JobPage::next`]; `None` for the first page): at most `limit` jobs, examining at most
    /// [`SCAN_MAX`](super::SCAN_MAX) (a filter few jobs match gives short pages, each with a cursor to go on
    /// from). Pages cost the same at any depth.
    fn list_jobs(
        &self,
        query: JobQuery,
        cursor: Option<String>,
        limit: usize,
    ) -> impl Future<Output = Result<JobPage>> + Send;

    /// Deletes the jobs of `queue` among `ids` that are not running (a running one is left
    /// alone: cancel it first); returns how many. A unique key a deleted job held is freed.
    fn delete_jobs(&self, queue: &str, ids: Vec<JobId>)
        -> impl Future<Output = Result<u64>> + Send;
}
