//! Actions on many jobs at once, done in bounded batches over a listing, and the dead letters
//! grouped by task and error fingerprint.
//!
//! A bulk action pages through the jobs a [`JobQuery`] selects and acts on each page (at most
//! [`BULK_BATCH`] jobs per store call), so the store never holds one long operation and the
//! caller can show progress; jobs that change state while it runs are acted on or passed over
//! as the store finds them.

use crate::backend::{JobQuery, QueueAdmin, ResultStore, WorkflowStore, SCAN_MAX};
use crate::clock::UnixMs;
use crate::error::{Error, Result};
use crate::job::{JobId, JobInfo, JobState};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Jobs acted on per store call.
pub const BULK_BATCH: usize = 500;

/// What to do to each selected job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BulkAction {
    /// Dead letters only: back to pending with fresh attempts.
    Retry,
    /// Waiting jobs end as cancelled; running ones are asked to stop.
    Cancel,
    /// Deleted, unless running.
    Delete,
}

impl BulkAction {
    /// The action's name.
    pub fn as_str(self) -> &'static str {
        match self {
            BulkAction::Retry => "retry",
            BulkAction::Cancel => "cancel",
            BulkAction::Delete => "delete",
        }
    }
}

/// What a bulk action did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BulkReport {
    /// Jobs examined.
    pub scanned: u64,
    /// Jobs the query selected.
    pub matched: u64,
    /// Jobs the action applied to (a job that moved on in the meantime is not counted).
    pub done: u64,
}

/// Applies `action` to every job `query` selects (or, with `only`, to the selected jobs among
/// those ids), page by page, calling `progress` after each batch.
///
/// # Errors
/// `Retry` of anything but dead letters; a store error (what was done before it stays done).
pub async fn bulk<B: QueueAdmin + ResultStore + WorkflowStore>(
    backend: &B,
    query: JobQuery,
    only: Option<&[JobId]>,
    action: BulkAction,
    now: UnixMs,
    mut progress: impl FnMut(&BulkReport),
) -> Result<BulkReport> {
    if action == BulkAction::Retry && query.state != JobState::Dead {
        return Err(Error::config(
            "retry",
            format!(
                "only dead letters are retried by hand; `{}` jobs are not",
                query.state
            ),
        ));
    }
    let mut report = BulkReport::default();
    let mut cursor = None;
    loop {
        let page = backend
            .list_jobs(query.clone(), cursor.take(), BULK_BATCH)
            .await?;
        report.scanned += page.scanned;
        let ids: Vec<JobId> = page
            .jobs
            .iter()
            .map(|j| j.job.id)
            .filter(|id| only.is_none_or(|only| only.contains(id)))
            .collect();
        report.matched += ids.len() as u64;
        if !ids.is_empty() {
            report.done += match action {
                BulkAction::Retry => backend.retry_dead(Some(ids), now).await?,
                BulkAction::Delete => backend.delete_jobs(&query.queue, ids).await?,
                BulkAction::Cancel => {
                    let mut n = 0;
                    for id in ids {
                        // As one cancel does: a cancelled workflow step stops its workflow.
                        let outcome = crate::client::cancel_job(
                            backend,
                            &crate::bounds::Bounds::default(),
                            id,
                            now,
                        )
                        .await?;
                        if matches!(
                            outcome,
                            crate::backend::CancelOutcome::Cancelled
                                | crate::backend::CancelOutcome::Requested
                        ) {
                            n += 1;
                        }
                    }
                    n
                }
            };
        }
        progress(&report);
        match page.next {
            Some(next) => cursor = Some(next),
            None => return Ok(report),
        }
    }
}

/// Dead letters that failed the same way: one task, one error fingerprint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadGroup {
    /// A short name for the group (`celeriac dlq retry --group <id>`).
    pub id: String,
    /// The queue.
    pub queue: String,
    /// The task.
    pub task: String,
    /// The error with its numbers, ids and addresses masked.
    pub fingerprint: String,
    /// One error of the group, as it was.
    pub example: String,
    /// Dead letters in the group.
    pub count: u64,
    /// When the first of them died (ms).
    pub first_seen: UnixMs,
    /// When the last of them died (ms).
    pub last_seen: UnixMs,
}

/// The fingerprint of an error: its kind and message with numbers, addresses and ids masked
/// (a word with more digits than letters, or a run of 8 or more hexadecimal characters), so
/// "timeout after 3012 ms on 10.0.0.7" and "timeout after 2998 ms on 10.0.0.9" group together.
pub fn fingerprint(kind: &str, message: &str) -> String {
    let text = format!("{kind}: {message}");
    let is_part = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == '_';
    let mut out = String::with_capacity(text.len());
    let mut word = String::new();
    let flush = |word: &mut String, out: &mut String| {
        let digits = word.chars().filter(char::is_ascii_digit).count();
        let others = word.chars().filter(|c| c.is_ascii_alphabetic()).count();
        let hex: String = word.chars().filter(|c| *c != '-').collect();
        let hexish = hex.len() >= 8 && hex.chars().all(|c| c.is_ascii_hexdigit());
        if digits > 0 && (digits > others || hexish) {
            // Keep a trailing full stop: it ends the sentence, not the number.
            let dot = word.ends_with('.');
            out.push('#');
            if dot {
                out.push('.');
            }
        } else {
            out.push_str(word);
        }
        word.clear();
    };
    for c in text.chars() {
        if is_part(c) {
            word.push(c);
        } else {
            flush(&mut word, &mut out);
            out.push(c);
        }
    }
    flush(&mut word, &mut out);
    out
}

fn group_id(queue: &str, task: &str, fingerprint: &str) -> String {
    // FNV-1a: short, stable across versions and platforms.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in [queue, "\u{1f}", task, "\u{1f}", fingerprint]
        .iter()
        .flat_map(|s| s.bytes())
    {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{:08x}", h >> 32)
}

/// A dead letter's group id and error fingerprint.
fn group_of(info: &JobInfo) -> (String, String) {
    let (kind, message) = info
        .error
        .as_ref()
        .map_or(("", ""), |e| (e.kind.as_str(), e.message.as_str()));
    let print = fingerprint(kind, message);
    (group_id(&info.job.queue, &info.job.task, &print), print)
}

/// Every dead letter of `queues`, page by page.
async fn each_dead<B: QueueAdmin>(
    backend: &B,
    queues: &[String],
    mut each: impl FnMut(&JobInfo),
) -> Result<()> {
    for queue in queues {
        let mut cursor = None;
        loop {
            let page = backend
                .list_jobs(
                    JobQuery::new(queue.clone(), JobState::Dead),
                    cursor,
                    SCAN_MAX,
                )
                .await?;
            page.jobs.iter().for_each(&mut each);
            match page.next {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
    }
    Ok(())
}

async fn queues_of<B: QueueAdmin>(backend: &B, queue: Option<String>) -> Result<Vec<String>> {
    Ok(match queue {
        Some(q) => vec![q],
        None => backend
            .stats()
            .await?
            .into_iter()
            .filter(|s| s.count(JobState::Dead) > 0)
            .map(|s| s.queue)
            .collect(),
    })
}

/// The dead letters (of one queue, or of all) grouped by queue, task and error fingerprint,
/// largest group first. Reads every dead letter once: their number is capped per queue.
pub async fn dead_groups<B: QueueAdmin>(
    backend: &B,
    queue: Option<String>,
) -> Result<Vec<DeadGroup>> {
    let queues = queues_of(backend, queue).await?;
    let mut groups: BTreeMap<String, DeadGroup> = BTreeMap::new();
    each_dead(backend, &queues, |info| {
        let (id, print) = group_of(info);
        let died = info.job.finished_at.unwrap_or(0);
        let g = groups.entry(id.clone()).or_insert_with(|| DeadGroup {
            id,
            queue: info.job.queue.clone(),
            task: info.job.task.clone(),
            fingerprint: print,
            example: info
                .error
                .as_ref()
                .map(|e| format!("{}: {}", e.kind, e.message))
                .unwrap_or_default(),
            count: 0,
            first_seen: died,
            last_seen: died,
        });
        g.count += 1;
        g.first_seen = g.first_seen.min(died);
        g.last_seen = g.last_seen.max(died);
    })
    .await?;
    let mut out: Vec<DeadGroup> = groups.into_values().collect();
    out.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.id.cmp(&b.id)));
    Ok(out)
}

/// The ids of the dead letters in `group` now: its queue's dead letters of its task, read a
/// page at a time, that fail the group's way.
///
/// # Errors
/// A store error.
pub async fn dead_group_ids<B: QueueAdmin>(backend: &B, group: &DeadGroup) -> Result<Vec<JobId>> {
    let mut query = JobQuery::new(group.queue.clone(), JobState::Dead);
    query.task = Some(group.task.clone());
    let mut ids = Vec::new();
    let mut cursor = None;
    loop {
        let page = backend
            .list_jobs(query.clone(), cursor.take(), SCAN_MAX)
            .await?;
        ids.extend(
            page.jobs
                .iter()
                .filter(|info| group_of(info).0 == group.id)
                .map(|info| info.job.id),
        );
        match page.next {
            Some(next) => cursor = Some(next),
            None => return Ok(ids),
        }
    }
}

/// Retries every dead letter of group `id` (see [`dead_groups`]) as one action; returns how
/// many went back to pending.
///
/// # Errors
/// No dead letter is in such a group.
pub async fn retry_dead_group<B: QueueAdmin>(backend: &B, id: &str, now: UnixMs) -> Result<u64> {
    let queues = queues_of(backend, None).await?;
    let mut ids = Vec::new();
    each_dead(backend, &queues, |info| {
        if group_of(info).0 == id {
            ids.push(info.job.id);
        }
    })
    .await?;
    if ids.is_empty() {
        return Err(Error::config(
            "group",
            format!("no dead letters in group `{id}` (see `celeriac dlq groups`)"),
        ));
    }
    let mut n = 0;
    for chunk in ids.chunks(BULK_BATCH) {
        n += backend.retry_dead(Some(chunk.to_vec()), now).await?;
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_mask_numbers_and_ids_but_keep_words() {
        let a = fingerprint("timeout", "after 3012 ms on 10.0.0.7");
        let b = fingerprint("timeout", "after 2998 ms on 10.0.0.9");
        assert_eq!(a, b);
        assert_eq!(a, "timeout: after # ms on #");
        let c = fingerprint(
            "error",
            "order 01933b6e-8f2a-7c4e-9d1b-5a6f7e8d9c0b not found",
        );
        assert_eq!(c, "error: order # not found");
        assert_ne!(
            fingerprint("error", "user not found"),
            fingerprint("error", "card declined")
        );
        assert_eq!(fingerprint("http", "503 from s3"), "http: # from s3");
    }

    #[test]
    fn group_ids_are_stable_and_distinct() {
        assert_eq!(group_id("q", "t", "f"), group_id("q", "t", "f"));
        assert_ne!(group_id("q", "t", "f"), group_id("q", "t", "g"));
        assert_eq!(group_id("q", "t", "f").len(), 8);
    }
}
