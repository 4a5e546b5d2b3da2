//! Whole-queue operations: batches, pause and resume, purge, stats.

use crate::support::{
    claim, claim_only, claimed_ids, complete, delayed, enqueue, exists, ids_of, info, job, lease,
    success, T0,
};
use celeriac_core::backend::QueueAdmin;
use celeriac_core::backend::{Outcome, QueueStats};
use celeriac_core::{Broker, ErrorInfo, Job, JobId, JobState, ResultStore};
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::Arc;

/// A batch is stored all or none and every job of it is claimable; a batch that collides
/// with an existing job never overwrites it.
pub async fn batch_enqueue_is_atomic<B: Broker + ResultStore>(backend: Arc<B>) {
    let q = "batch";
    backend
        .enqueue(Vec::new(), T0)
        .await
        .expect("an empty batch should be accepted");

    let batch: Vec<_> = (0..10).map(|_| job(q, T0)).collect();
    let batch_ids = ids_of(&batch);
    enqueue(&*backend, batch, T0).await;
    for id in &batch_ids {
        assert_eq!(info(&*backend, *id).await.state, JobState::Pending);
    }
    assert_eq!(
        claimed_ids(&claim(&*backend, &[q], 100, T0).await),
        batch_ids,
        "every job of a batch should be claimable, in order"
    );

    // A batch whose third job reuses the id of a job that is running.
    let running = job(q, T0);
    let running_id = running.id;
    let running_payload = running.payload.clone();
    enqueue(&*backend, vec![running], T0).await;
    let held = claim_only(&*backend, q, running_id, T0).await;
    let mut clash = job(q, T0 + 1);
    clash.id = running_id;
    clash.payload = b"\"impostor\"".to_vec();
    let (fresh1, fresh2, fresh3) = (job(q, T0 + 1), job(q, T0 + 1), job(q, T0 + 1));
    let fresh = vec![fresh1.id, fresh2.id, fresh3.id];
    let outcome = backend
        .enqueue(vec![fresh1, fresh2, clash, fresh3], T0 + 1)
        .await;
    let mut present = Vec::new();
    for id in &fresh {
        present.push(exists(&*backend, *id).await);
    }
    match &outcome {
        Err(_) => assert_eq!(
            present,
            vec![false; 3],
            "a batch that failed should leave none of its jobs behind"
        ),
        Ok(_) => assert_eq!(
            present,
            vec![true; 3],
            "a batch that was accepted should store all of its jobs"
        ),
    }
    let kept = info(&*backend, running_id).await;
    assert_eq!(
        kept.state,
        JobState::Active,
        "enqueueing a job with an existing id must not reset the running job (got {outcome:?})"
    );
    assert_eq!(
        kept.job.payload, running_payload,
        "the running job must not be overwritten"
    );
    assert!(
        complete(&*backend, lease(&held), success(&json!("ok")), T0 + 2).await,
        "the running job's lease should still hold after the clashing batch"
    );
}

/// A paused queue yields no claims (even one paused before it had jobs) while other queues
/// in the same claim still do; resuming restores claims.
pub async fn pause_and_resume<B: Broker + QueueAdmin + ResultStore>(backend: Arc<B>) {
    let (paused, open) = ("paused", "open");
    backend.pause(paused).await.expect("pause should succeed");
    let jobs = vec![job(paused, T0), job(paused, T0)];
    let paused_ids = ids_of(&jobs);
    enqueue(&*backend, jobs, T0).await;
    let other = job(open, T0);
    let other_id = other.id;
    enqueue(&*backend, vec![other], T0).await;

    assert!(
        claim(&*backend, &[paused], 10, T0).await.is_empty(),
        "a paused queue should yield no claims"
    );
    assert_eq!(
        claimed_ids(&claim(&*backend, &[paused, open], 10, T0).await),
        vec![other_id],
        "pausing one queue should not stop the others"
    );
    let stats = backend.stats().await.expect("stats should succeed");
    let of = |name: &str| stats.iter().find(|s| s.queue == name).cloned();
    let p = of(paused).expect("stats should list the paused queue");
    assert!(p.paused, "stats should show the queue as paused");
    assert_eq!(p.count(JobState::Pending), 2, "paused jobs stay pending");
    assert!(
        !of(open).is_some_and(|s| s.paused),
        "only the paused queue should be paused"
    );

    backend.resume(paused).await.expect("resume should succeed");
    assert_eq!(
        claimed_ids(&claim(&*backend, &[paused], 10, T0 + 1).await),
        paused_ids,
        "resuming should make the queue's jobs claimable again"
    );
    let stats = backend.stats().await.expect("stats should succeed");
    assert!(
        stats
            .iter()
            .filter(|s| s.queue == paused)
            .all(|s| !s.paused),
        "stats should show the queue as running again"
    );
}

/// `purge` deletes the pending and scheduled jobs of one queue: not other queues, not
/// running jobs.
pub async fn purge_clears_one_queue<B: Broker + QueueAdmin + ResultStore>(backend: Arc<B>) {
    let (a, b) = ("purge-a", "purge-b");
    let running = job(a, T0);
    let running_id = running.id;
    enqueue(&*backend, vec![running], T0).await;
    let held = claim_only(&*backend, a, running_id, T0).await;
    let doomed = vec![job(a, T0), job(a, T0), delayed(a, T0, T0 + 60_000)];
    let doomed_ids = ids_of(&doomed);
    enqueue(&*backend, doomed, T0).await;
    let spared = vec![job(b, T0), delayed(b, T0, T0 + 60_000)];
    let spared_ids = ids_of(&spared);
    enqueue(&*backend, spared, T0).await;

    assert_eq!(
        backend.purge(a).await.expect("purge should succeed"),
        3,
        "purge should report the two pending and one scheduled jobs it deleted"
    );
    for id in &doomed_ids {
        assert!(
            !exists(&*backend, *id).await,
            "purged job {id} should be gone"
        );
    }
    assert_eq!(
        info(&*backend, running_id).await.state,
        JobState::Active,
        "purge must not delete a running job"
    );
    assert_eq!(
        info(&*backend, spared_ids[0]).await.state,
        JobState::Pending
    );
    assert_eq!(
        info(&*backend, spared_ids[1]).await.state,
        JobState::Scheduled
    );
    assert!(claim(&*backend, &[a], 10, T0 + 120_000).await.is_empty());
    assert_eq!(
        backend.purge(a).await.expect("purge should succeed"),
        0,
        "purging an empty queue deletes nothing"
    );
    assert!(complete(&*backend, lease(&held), success(&json!(1)), T0 + 1).await);
    assert_eq!(
        claim(&*backend, &[b], 10, T0 + 120_000).await.len(),
        2,
        "the other queue keeps its jobs"
    );
}

/// `stats` counts jobs per state and per queue.
pub async fn stats_count_states_per_queue<B: Broker + QueueAdmin + ResultStore>(backend: Arc<B>) {
    let (a, b) = ("stats-a", "stats-b");
    // Queue a: four claimed, of which one succeeds, one dies, one fails; two more pending;
    // one scheduled.
    let first = vec![job(a, T0), job(a, T0), job(a, T0), job(a, T0)];
    enqueue(&*backend, first, T0).await;
    let claimed = claim(&*backend, &[a], 4, T0).await;
    assert_eq!(claimed.len(), 4);
    let err = || ErrorInfo::new("error", "boom", 1);
    assert!(complete(&*backend, lease(&claimed[0]), success(&json!(1)), T0 + 1).await);
    assert!(
        complete(
            &*backend,
            lease(&claimed[1]),
            Outcome::Dead { error: err() },
            T0 + 1
        )
        .await
    );
    assert!(
        complete(
            &*backend,
            lease(&claimed[2]),
            Outcome::Failed { error: err() },
            T0 + 1
        )
        .await
    );
    enqueue(
        &*backend,
        vec![
            job(a, T0 + 2),
            job(a, T0 + 2),
            delayed(a, T0 + 2, T0 + 60_000),
        ],
        T0 + 2,
    )
    .await;
    // Queue b: one retrying, one pending.
    enqueue(&*backend, vec![job(b, T0)], T0).await;
    let retried = claim(&*backend, &[b], 1, T0).await;
    assert_eq!(retried.len(), 1);
    let retry = Outcome::Retry {
        at: T0 + 60_000,
        error: err(),
    };
    assert!(complete(&*backend, lease(&retried[0]), retry, T0 + 1).await);
    enqueue(&*backend, vec![job(b, T0 + 2)], T0 + 2).await;

    let stats = backend.stats().await.expect("stats should succeed");
    let of = |name: &str| -> QueueStats {
        stats
            .iter()
            .find(|s| s.queue == name)
            .cloned()
            .unwrap_or_else(|| panic!("stats should list queue `{name}`: {stats:?}"))
    };
    let (sa, sb) = (of(a), of(b));
    let counts = |s: &QueueStats| {
        JobState::ALL
            .iter()
            .map(|st| (st.as_str(), s.count(*st)))
            .filter(|(_, n)| *n > 0)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        counts(&sa),
        vec![
            ("pending", 2),
            ("scheduled", 1),
            ("active", 1),
            ("succeeded", 1),
            ("failed", 1),
            ("dead", 1),
        ],
        "counts of queue `{a}`"
    );
    assert_eq!(
        counts(&sb),
        vec![("pending", 1), ("retrying", 1)],
        "counts of queue `{b}`"
    );
    assert!(!sa.paused && !sb.paused);
    assert_eq!(
        stats.iter().filter(|s| s.queue == a).count(),
        1,
        "each queue should appear once"
    );
}

/// The counts of one queue as `stats` gives them, without zeros.
async fn counted<B: QueueAdmin>(backend: &B, queue: &str) -> BTreeMap<String, u64> {
    backend
        .stats()
        .await
        .expect("stats should succeed")
        .into_iter()
        .find(|s| s.queue == queue)
        .map(|s| s.counts.into_iter().filter(|(_, n)| *n > 0).collect())
        .unwrap_or_default()
}

/// The states of the jobs among `ids` that still exist, counted.
async fn truth<B: ResultStore>(backend: &B, ids: &[JobId]) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for id in ids {
        if let Some(i) = backend.get(*id).await.expect("get should succeed") {
            *out.entry(i.state.as_str().to_string()).or_insert(0) += 1;
        }
    }
    out
}

/// `stats` counts stay exact through every change a job goes through (stores that keep the
/// counts incrementally must follow each one): enqueue, claim, each outcome, cancel, purge,
/// a retry from the dead letters, a lease that expires, and the deletion of kept records.
pub async fn stats_counts_match_the_jobs_through_every_change<
    B: Broker + QueueAdmin + ResultStore,
>(
    backend: Arc<B>,
) {
    let b = &*backend;
    let q = "counted";
    let mut all: Vec<Job> = (0..8).map(|_| job(q, T0)).collect();
    for j in &mut all {
        j.result_ttl = Some(std::time::Duration::from_secs(60));
    }
    all.push(delayed(q, T0, T0 + 5_000));
    let ids = ids_of(&all);
    let check = |stage: &'static str| {
        let ids = ids.clone();
        async move {
            let truth = truth(b, &ids).await;
            assert_eq!(counted(b, q).await, truth, "counts after {stage}");
            truth
        }
    };
    enqueue(b, all, T0).await;
    assert_eq!(check("enqueue").await.get("pending"), Some(&8));

    let c = claim(b, &[q], 6, T0).await;
    assert_eq!(c.len(), 6);
    check("claim").await;
    let err = || ErrorInfo::new("error", "boom", 1);
    let outcomes = [
        success(&json!(1)),
        Outcome::Failed { error: err() },
        Outcome::Dead { error: err() },
        Outcome::Retry {
            at: T0 + 1_000,
            error: err(),
        },
    ];
    for (claimed, outcome) in c.iter().zip(outcomes) {
        assert!(complete(b, lease(claimed), outcome, T0 + 1).await);
    }
    check("outcomes").await;
    backend
        .cancel(ids[7], T0 + 2)
        .await
        .expect("cancel should succeed");
    check("cancel").await;
    assert_eq!(
        backend.retry_dead(None, T0 + 3).await.expect("retry_dead"),
        1
    );
    check("a retry from the dead letters").await;
    // The two claims never completed expire and go back to pending.
    backend
        .reap(T0 + 31_000)
        .await
        .expect("reap should succeed");
    let after = check("expired leases").await;
    assert_eq!(after.get("active"), None, "{after:?}");
    backend.purge(q).await.expect("purge should succeed");
    let after = check("purge").await;
    assert_eq!(after.get("pending"), None, "{after:?}");
    // Records kept a minute, cancelled and failed ones their own time: all gone a year on.
    backend
        .reap(T0 + 365 * 24 * 3_600_000)
        .await
        .expect("reap should succeed");
    check("the deletion of kept records").await;
}

/// `stats` tells when the oldest ready job became ready, across priorities (an old job of low
/// priority is older than a new urgent one), and the next due scheduled or retrying job: the
/// queue's latency at any moment comes from the two.
pub async fn stats_report_how_long_the_oldest_ready_job_waited<
    B: Broker + QueueAdmin + ResultStore,
>(
    backend: Arc<B>,
) {
    let b = &*backend;
    let q = "latency";
    let of = || async {
        b.stats()
            .await
            .expect("stats should succeed")
            .into_iter()
            .find(|s| s.queue == q)
            .expect("the queue is listed")
    };
    let mut old_low = job(q, T0);
    old_low.priority = celeriac_core::Priority::new(1).expect("a priority");
    let mut new_high = job(q, T0 + 4_000);
    new_high.priority = celeriac_core::Priority::new(9).expect("a priority");
    let later = delayed(q, T0, T0 + 10_000);
    enqueue(b, vec![old_low.clone()], T0).await;
    enqueue(b, vec![new_high.clone(), later], T0 + 4_000).await;
    let s = of().await;
    assert_eq!(s.oldest_pending_at, Some(T0), "the old low-priority job");
    assert_eq!(s.next_due_at, Some(T0 + 10_000));
    assert_eq!(s.latency_ms(T0 + 6_000), 6_000);
    assert_eq!(s.latency_ms(T0 + 12_000), 12_000);

    // The urgent job is claimed first; the old one still waits.
    let c = claim(b, &[q], 1, T0 + 6_000).await;
    assert_eq!(claimed_ids(&c), vec![new_high.id]);
    assert_eq!(of().await.oldest_pending_at, Some(T0));
    let c = claim(b, &[q], 1, T0 + 7_000).await;
    assert_eq!(claimed_ids(&c), vec![old_low.id]);
    let s = of().await;
    assert_eq!(s.oldest_pending_at, None, "nothing pending");
    assert_eq!(s.latency_ms(T0 + 8_000), 0, "nothing ready yet");
    assert_eq!(
        s.latency_ms(T0 + 10_500),
        500,
        "the scheduled job is ready once due, before any claim promotes it"
    );
}

/// This file's cases, for [`suite!`](crate::suite).
#[doc(hidden)]
#[macro_export]
macro_rules! __cases_broker_queues {
    ($constructor:expr) => {
        $crate::__suite_cases! {
            $constructor;
            batch_enqueue_is_atomic,
            pause_and_resume,
            purge_clears_one_queue,
            stats_count_states_per_queue,
            stats_counts_match_the_jobs_through_every_change,
            stats_report_how_long_the_oldest_ready_job_waited,
        }
    };
}
