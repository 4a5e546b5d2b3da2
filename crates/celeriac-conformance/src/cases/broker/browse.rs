//! Browsing a queue's jobs by state with cursor paging and filters, deleting jobs, bulk
//! actions over everything a filter selects, and dead letters grouped by error.

use crate::support::{claim, claimed_ids, complete, enqueue, exists, ids_of, info, job, lease, T0};
use celeriac_core::backend::{JobQuery, Outcome, QueueAdmin};
use celeriac_core::bulk::{self, BulkAction};
use celeriac_core::{Broker, ErrorInfo, JobId, JobState, Priority, ResultStore, Unique, UniqueFor};
use std::collections::HashSet;
use std::sync::Arc;

/// Every page of `query`, `limit` at a time, followed to the end.
async fn all_pages<B: QueueAdmin>(b: &B, query: &JobQuery, limit: usize) -> Vec<JobId> {
    let (mut out, mut cursor, mut pages) = (Vec::new(), None, 0);
    loop {
        let page = b
            .list_jobs(query.clone(), cursor.take(), limit)
            .await
            .expect("list_jobs succeeds");
        assert!(page.jobs.len() <= limit, "a page holds at most the limit");
        out.extend(page.jobs.iter().map(|j| j.job.id));
        pages += 1;
        assert!(pages < 1000, "the listing never ends");
        match page.next {
            Some(next) => cursor = Some(next),
            None => return out,
        }
    }
}

/// Moves `n` claimed jobs of `queue` to the dead letters, with `error`, at `now`.
async fn kill<B: Broker>(b: &B, queue: &str, n: usize, kind: &str, message: &str, now: i64) {
    let claimed = claim(b, &[queue], n, now).await;
    assert_eq!(claimed.len(), n, "claimed the jobs to kill");
    for c in &claimed {
        let error = ErrorInfo::new(kind, message, 1);
        assert!(complete(b, lease(c), Outcome::Dead { error }, now).await);
    }
}

/// Pages of pending jobs, followed by their cursors, give every job once, in the order they
/// will be claimed (priority, then age); newest first is the exact reverse. Dead letters page
/// by time of death.
pub async fn listing_pages_through_every_job_once_in_order<B: Broker + QueueAdmin + ResultStore>(
    backend: Arc<B>,
) {
    let b = &*backend;
    let q = "browse-order";
    let mut jobs = Vec::new();
    for i in 0..23 {
        let mut j = job(q, T0 + i);
        j.priority = Priority::new((i % 3 * 4) as u8).expect("a priority");
        jobs.push(j);
    }
    enqueue(b, jobs.clone(), T0 + 100).await;
    let listed = all_pages(b, &JobQuery::new(q, JobState::Pending), 5).await;
    assert_eq!(listed.len(), 23);
    assert_eq!(
        listed.iter().collect::<HashSet<_>>().len(),
        23,
        "no job twice"
    );
    let mut newest = JobQuery::new(q, JobState::Pending);
    newest.newest_first = true;
    let mut reversed = all_pages(b, &newest, 4).await;
    reversed.reverse();
    assert_eq!(reversed, listed, "newest first is the reverse");
    let claimed = claimed_ids(&claim(b, &[q], 23, T0 + 200).await);
    assert_eq!(
        listed, claimed,
        "pending jobs list in the order they are claimed"
    );

    // Dead letters by time of death.
    let dq = "browse-dead";
    let mut died = Vec::new();
    for i in 0..6 {
        let j = job(dq, T0);
        died.push(j.id);
        enqueue(b, vec![j], T0).await;
        kill(b, dq, 1, "error", "boom", T0 + 1_000 * (i + 1)).await;
    }
    let listed = all_pages(b, &JobQuery::new(dq, JobState::Dead), 4).await;
    assert_eq!(listed, died, "dead letters by time of death");
    let empty = all_pages(b, &JobQuery::new(dq, JobState::Scheduled), 4).await;
    assert!(empty.is_empty());
}

/// Filters by task, error text (any case) and creation time select exactly the matching
/// jobs, across as many pages as it takes; a bad cursor is refused.
pub async fn listing_filters_by_task_error_and_time<B: Broker + QueueAdmin + ResultStore>(
    backend: Arc<B>,
) {
    let b = &*backend;
    let q = "browse-filter";
    let mut jobs = Vec::new();
    for i in 0..30 {
        let mut j = job(q, T0 + i * 1_000);
        j.task = if i % 3 == 0 { "report" } else { "email" }.to_string();
        jobs.push(j);
    }
    enqueue(b, jobs.clone(), T0 + 60_000).await;
    let reports: Vec<JobId> = jobs
        .iter()
        .filter(|j| j.task == "report")
        .map(|j| j.id)
        .collect();
    let mut by_task = JobQuery::new(q, JobState::Pending);
    by_task.task = Some("report".into());
    let mut found = all_pages(b, &by_task, 3).await;
    found.sort();
    let mut want = reports.clone();
    want.sort();
    assert_eq!(found, want, "the report jobs");

    let mut recent = JobQuery::new(q, JobState::Pending);
    recent.created_from = Some(T0 + 20_000);
    recent.created_until = Some(T0 + 25_000);
    assert_eq!(
        all_pages(b, &recent, 2).await.len(),
        5,
        "created in [20 s, 25 s)"
    );

    let claimed = claim(b, &[q], 30, T0 + 61_000).await;
    for (i, c) in claimed.iter().enumerate() {
        let message = if i % 2 == 0 {
            format!("Timeout after {i} ms")
        } else {
            "card declined".to_string()
        };
        let error = ErrorInfo::new("error", message, 1);
        assert!(complete(b, lease(c), Outcome::Dead { error }, T0 + 62_000).await);
    }
    let mut timeouts = JobQuery::new(q, JobState::Dead);
    timeouts.error = Some("TIMEOUT".into());
    assert_eq!(
        all_pages(b, &timeouts, 4).await.len(),
        15,
        "case-insensitive"
    );
    let err = b
        .list_jobs(JobQuery::new(q, JobState::Dead), Some("nonsense".into()), 5)
        .await;
    assert!(err.is_err(), "a cursor from nowhere is refused");
}

/// Deleting removes waiting, dead and finished jobs of the queue but never a running one,
/// frees the unique key a job held, and leaves other queues alone.
pub async fn deleting_jobs_spares_running_ones<B: Broker + QueueAdmin + ResultStore>(
    backend: Arc<B>,
) {
    let b = &*backend;
    let q = "browse-delete";
    let mut unique = job(q, T0);
    unique.unique = Some(Unique {
        key: "only-one".into(),
        lifetime: UniqueFor::UntilFinished,
    });
    let waiting = vec![unique.clone(), job(q, T0)];
    let mut later = job(q, T0);
    later.run_at = T0 + 60_000;
    enqueue(b, vec![job(q, T0), job(q, T0)], T0).await;
    let running = claim(b, &[q], 2, T0).await;
    assert!(
        complete(
            b,
            lease(&running[1]),
            Outcome::Dead {
                error: ErrorInfo::new("e", "x", 1)
            },
            T0
        )
        .await
    );
    enqueue(b, waiting.clone(), T0 + 1).await;
    enqueue(b, vec![later.clone()], T0 + 1).await;
    let elsewhere = job("browse-delete-other", T0);
    enqueue(b, vec![elsewhere.clone()], T0 + 1).await;

    let mut ids = ids_of(&waiting);
    ids.extend([later.id, running[0].job.id, running[1].job.id, elsewhere.id]);
    let deleted = b.delete_jobs(q, ids).await.expect("delete_jobs succeeds");
    assert_eq!(
        deleted, 4,
        "two pending, one scheduled, one dead; not the running one"
    );
    for id in [waiting[0].id, waiting[1].id, later.id, running[1].job.id] {
        assert!(!exists(b, id).await, "{id} deleted");
    }
    assert_eq!(info(b, running[0].job.id).await.state, JobState::Active);
    assert!(
        exists(b, elsewhere.id).await,
        "another queue's job is untouched"
    );
    let mut again = unique.clone();
    again.id = JobId::new();
    let stored = b
        .enqueue(vec![again.clone()], T0 + 2)
        .await
        .expect("enqueue");
    assert_eq!(stored, vec![again.id], "the unique key was freed");
}

/// A bulk action covers everything a filter selects, across batches, and nothing else:
/// retrying one task's dead letters, then deleting the other task's.
pub async fn bulk_actions_cover_everything_a_filter_selects<
    B: Broker + QueueAdmin + ResultStore + celeriac_core::WorkflowStore,
>(
    backend: Arc<B>,
) {
    let b = &*backend;
    let q = "browse-bulk";
    let n = bulk::BULK_BATCH * 2;
    let jobs: Vec<_> = (0..n)
        .map(|i| {
            let mut j = job(q, T0);
            j.task = if i % 4 == 0 { "a" } else { "b" }.to_string();
            j
        })
        .collect();
    for chunk in jobs.chunks(200) {
        enqueue(b, chunk.to_vec(), T0).await;
    }
    for _ in 0..n.div_ceil(200) {
        let left = claim(b, &[q], 200, T0 + 1).await;
        for c in &left {
            let error = ErrorInfo::new("error", "boom", 1);
            assert!(complete(b, lease(c), Outcome::Dead { error }, T0 + 2).await);
        }
    }
    let mut dead_b = JobQuery::new(q, JobState::Dead);
    dead_b.task = Some("b".into());
    let report = bulk::bulk(b, dead_b.clone(), None, BulkAction::Retry, T0 + 3, |_| {})
        .await
        .expect("bulk retry");
    let bs = jobs.iter().filter(|j| j.task == "b").count() as u64;
    assert!(bs > bulk::BULK_BATCH as u64, "more than one batch");
    assert_eq!((report.matched, report.done), (bs, bs));
    let s = b.stats().await.expect("stats");
    let s = s.iter().find(|s| s.queue == q).expect("listed");
    assert_eq!(s.count(JobState::Pending), bs);
    assert_eq!(s.count(JobState::Dead), n as u64 - bs);

    let refused = bulk::bulk(
        b,
        JobQuery::new(q, JobState::Pending),
        None,
        BulkAction::Retry,
        T0,
        |_| {},
    )
    .await;
    assert!(refused.is_err(), "only dead letters are retried");
    let report = bulk::bulk(
        b,
        JobQuery::new(q, JobState::Dead),
        None,
        BulkAction::Delete,
        T0 + 4,
        |_| {},
    )
    .await
    .expect("bulk delete");
    assert_eq!(report.done, n as u64 - bs);
    let one = jobs.iter().find(|j| j.task == "b").expect("a b job").id;
    let report = bulk::bulk(
        b,
        JobQuery::new(q, JobState::Pending),
        Some(&[one]),
        BulkAction::Cancel,
        T0 + 5,
        |_| {},
    )
    .await
    .expect("bulk cancel of a selection");
    assert_eq!((report.matched, report.done), (1, 1));
    assert_eq!(info(b, one).await.state, JobState::Cancelled);
}

/// Dead letters group by queue, task and error with numbers masked; a group is retried as
/// one action and only its jobs go back.
pub async fn dead_letters_group_by_task_and_error<B: Broker + QueueAdmin + ResultStore>(
    backend: Arc<B>,
) {
    let b = &*backend;
    let q = "browse-groups";
    enqueue(b, (0..7).map(|_| job(q, T0)).collect(), T0).await;
    kill(b, q, 2, "timeout", "after 3012 ms", T0 + 10).await;
    kill(b, q, 3, "timeout", "after 20 ms", T0 + 20).await;
    kill(b, q, 2, "declined", "card 4242 declined", T0 + 30).await;
    let groups = bulk::dead_groups(b, Some(q.into())).await.expect("groups");
    let shape: Vec<(u64, &str)> = groups
        .iter()
        .map(|g| (g.count, g.fingerprint.as_str()))
        .collect();
    assert_eq!(
        shape,
        vec![(5, "timeout: after # ms"), (2, "declined: card # declined")]
    );
    assert_eq!(
        (groups[0].first_seen, groups[0].last_seen),
        (T0 + 10, T0 + 20)
    );
    let n = bulk::retry_dead_group(b, &groups[1].id, T0 + 40)
        .await
        .expect("retry the group");
    assert_eq!(n, 2);
    let s = b.stats().await.expect("stats");
    let s = s.iter().find(|s| s.queue == q).expect("listed");
    assert_eq!(
        (s.count(JobState::Pending), s.count(JobState::Dead)),
        (2, 5)
    );
    assert!(bulk::retry_dead_group(b, "nogroup", T0).await.is_err());
}

/// This file's cases, for [`suite!`](crate::suite).
#[doc(hidden)]
#[macro_export]
macro_rules! __cases_broker_browse {
    ($constructor:expr) => {
        $crate::__suite_cases! {
            $constructor;
            listing_pages_through_every_job_once_in_order,
            listing_filters_by_task_error_and_time,
            deleting_jobs_spares_running_ones,
            bulk_actions_cover_everything_a_filter_selects,
            dead_letters_group_by_task_and_error,
        }
    };
}
