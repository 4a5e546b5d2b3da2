//! Browsing the jobs of a queue in one state, a page at a time, and deleting jobs: the part of
//! [`QueueAdmin`](super::QueueAdmin) a dashboard's job lists and bulk actions stand on.

use crate::clock::UnixMs;
use crate::job::{JobInfo, JobState};
use serde::{Deserialize, Serialize};

/// The most jobs one call of [`QueueAdmin::list_jobs`](super::QueueAdmin::list_jobs) examines:
/// a page with filters that few jobs match comes back short, with a cursor to go on from.
pub const SCAN_MAX: usize = 2000;

/// Which jobs to list: one queue, one state, and optional filters.
///
/// Jobs are listed in the order the store keeps them in for that state, "oldest" first:
/// pending jobs in the order they will be claimed (priority, then since when ready), scheduled
/// and retrying ones by when they are due, active ones by when their lease ends, dead ones by
/// when they died, and finished ones (succeeded, failed, cancelled, expired) by when their
/// record expires. `newest_first` reverses it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobQuery {
    /// The queue.
    pub queue: String,
    /// The state.
    pub state: JobState,
    /// Only jobs of this task.
    #[serde(default)]
    pub task: Option<String>,
    /// Only jobs whose last error's kind or message contains this text (case-insensitive).
    #[serde(default)]
    pub error: Option<String>,
    /// Only jobs created at or after this time.
    #[serde(default)]
    pub created_from: Option<UnixMs>,
    /// Only jobs created before this time.
    #[serde(default)]
    pub created_until: Option<UnixMs>,
    /// Newest first instead of oldest first.
    #[serde(default)]
    pub newest_first: bool,
}

impl JobQuery {
    /// All jobs of `queue` in `state`, oldest first.
    pub fn new(queue: impl Into<String>, state: JobState) -> Self {
        JobQuery {
            queue: queue.into(),
            state,
            task: None,
            error: None,
            created_from: None,
            created_until: None,
            newest_first: false,
        }
    }

    /// Whether `info` passes the filters (the queue and state are the store's to match).
    pub fn matches(&self, info: &JobInfo) -> bool {
        if self.task.as_deref().is_some_and(|t| t != info.job.task) {
            return false;
        }
        if self
            .created_from
            .is_some_and(|from| info.job.created_at < from)
            || self
                .created_until
                .is_some_and(|until| info.job.created_at >= until)
        {
            return false;
        }
        if let Some(text) = &self.error {
            let text = text.to_lowercase();
            let found = info.error.as_ref().is_some_and(|e| {
                e.kind.to_lowercase().contains(&text) || e.message.to_lowercase().contains(&text)
            });
            if !found {
                return false;
            }
        }
        true
    }

    /// Whether any filter is set.
    pub fn is_filtered(&self) -> bool {
        self.task.is_some()
            || self.error.is_some()
            || self.created_from.is_some()
            || self.created_until.is_some()
    }
}

/// One page of a listing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobPage {
    /// The matching jobs, in order.
    pub jobs: Vec<JobInfo>,
    /// Where the next page starts, or `None` at the end.
    pub next: Option<String>,
    /// Jobs examined for this page (more than `jobs` when filters passed some over).
    pub scanned: u64,
}
