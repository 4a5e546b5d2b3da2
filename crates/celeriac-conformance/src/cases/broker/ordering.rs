//! Which job a claim returns first: FIFO, priority, delays.

use crate::support::{claim, claimed_ids, delayed, enqueue, ids_of, info, job, T0};
use celeriac_core::{Broker, JobId, JobState, Priority, ResultStore};
use std::sync::Arc;

/// Within one priority, jobs are claimed in the order they arrived, whether they came in
/// one batch or in separate calls, and whatever the order of their ids.
pub async fn fifo_within_priority<B: Broker + ResultStore>(backend: Arc<B>) {
    let q = "fifo";
    let batch: Vec<_> = (0..5).map(|_| job(q, T0)).collect();
    let mut expected = ids_of(&batch);
    enqueue(&*backend, batch, T0).await;

    // Separate calls at the same instant, carrying ids made in the reverse order: neither
    // the clock nor the ids can stand in for the order of arrival.
    let mut singles: Vec<_> = (0..3).map(|_| job(q, T0)).collect();
    let mut reversed = ids_of(&singles);
    reversed.reverse();
    for (j, id) in singles.iter_mut().zip(reversed) {
        j.id = id;
    }
    for j in singles {
        expected.push(j.id);
        enqueue(&*backend, vec![j], T0).await;
    }
    let later = job(q, T0 + 1);
    expected.push(later.id);
    enqueue(&*backend, vec![later], T0 + 1).await;

    // One at a time, then the rest in one claim.
    let mut got = Vec::new();
    for _ in 0..3 {
        got.extend(claimed_ids(&claim(&*backend, &[q], 1, T0 + 10).await));
    }
    got.extend(claimed_ids(&claim(&*backend, &[q], 100, T0 + 10).await));
    assert_eq!(
        got, expected,
        "jobs of one priority should be claimed in the order they were enqueued"
    );
}

/// Higher priority first (9 before 5 before 0), FIFO inside each priority, and a more
/// urgent job enqueued later overtakes the less urgent ones still waiting.
pub async fn priority_order<B: Broker + ResultStore>(backend: Arc<B>) {
    let q = "prio";
    let at = |p: u8| {
        let mut j = job(q, T0);
        j.priority = Priority::new(p).expect("0..=9 is a valid priority");
        j
    };
    let (p0a, p5a, p9a) = (at(0), at(5), at(9));
    let (p0b, p9b, p5b, p5c) = (at(0), at(9), at(5), at(5));
    let id = |j: &celeriac_core::Job| j.id;
    let (i0a, i5a, i9a, i0b, i9b, i5b, i5c) = (
        id(&p0a),
        id(&p5a),
        id(&p9a),
        id(&p0b),
        id(&p9b),
        id(&p5b),
        id(&p5c),
    );
    enqueue(&*backend, vec![p0a, p5a, p9a], T0).await;
    enqueue(&*backend, vec![p0b], T0).await;
    enqueue(&*backend, vec![p9b, p5b], T0).await;
    enqueue(&*backend, vec![p5c], T0).await;

    let first = claimed_ids(&claim(&*backend, &[q], 3, T0 + 1).await);
    assert_eq!(
        first,
        vec![i9a, i9b, i5a],
        "priority 9 should come before 5, FIFO inside each priority"
    );

    let p9c = at(9);
    let i9c = p9c.id;
    enqueue(&*backend, vec![p9c], T0 + 2).await;
    let rest = claimed_ids(&claim(&*backend, &[q], 100, T0 + 3).await);
    assert_eq!(
        rest,
        vec![i9c, i5b, i5c, i0a, i0b],
        "a priority-9 job enqueued later should overtake waiting priority-5 and 0 jobs"
    );
}

/// A job due in the future is scheduled: not claimable before its `run_at`, claimable at
/// it, reported by `next_due`, and ranked by the moment it became due.
pub async fn delayed_jobs_wait_for_run_at<B: Broker + ResultStore>(backend: Arc<B>) {
    let q = "delay";
    let later = delayed(q, T0, T0 + 5_000);
    let sooner = delayed(q, T0, T0 + 3_000);
    let (later_id, sooner_id) = (later.id, sooner.id);
    enqueue(&*backend, vec![later, sooner], T0).await;
    for id in [later_id, sooner_id] {
        assert_eq!(
            info(&*backend, id).await.state,
            JobState::Scheduled,
            "a job enqueued with run_at after now should be scheduled"
        );
    }
    let due = || backend.next_due(vec![q.to_string()]);
    assert_eq!(
        due().await.expect("next_due should succeed"),
        Some(T0 + 3_000),
        "next_due should report the earliest run_at"
    );

    assert!(
        claim(&*backend, &[q], 10, T0 + 2_999).await.is_empty(),
        "no job should be claimable before its run_at"
    );
    assert_eq!(
        claimed_ids(&claim(&*backend, &[q], 10, T0 + 3_000).await),
        vec![sooner_id],
        "a delayed job should be claimable at its run_at, the later one not yet"
    );
    assert_eq!(
        due().await.expect("next_due should succeed"),
        Some(T0 + 5_000),
        "next_due should move on to the next scheduled job"
    );
    assert!(
        claim(&*backend, &[q], 10, T0 + 4_999).await.is_empty(),
        "the later job should not be claimable a millisecond before its run_at"
    );
    assert_eq!(info(&*backend, later_id).await.state, JobState::Scheduled);

    // A job enqueued for immediate running after the delayed one became due runs after it.
    let fresh = job(q, T0 + 5_500);
    let fresh_id = fresh.id;
    enqueue(&*backend, vec![fresh], T0 + 5_500).await;
    assert_eq!(
        claimed_ids(&claim(&*backend, &[q], 10, T0 + 6_000).await),
        vec![later_id, fresh_id],
        "a delayed job that became due first should be claimed first"
    );
    assert_eq!(
        due().await.expect("next_due should succeed"),
        None,
        "nothing should be due once every scheduled job ran"
    );
}

/// `next_due` only looks at the queues it is asked about.
pub async fn next_due_is_per_queue<B: Broker + ResultStore>(backend: Arc<B>) {
    enqueue(&*backend, vec![delayed("due-other", T0, T0 + 1_000)], T0).await;
    let due = |queues: &[&str]| backend.next_due(queues.iter().map(|q| q.to_string()).collect());
    assert_eq!(
        due(&["due-mine"]).await.expect("next_due should succeed"),
        None,
        "next_due(queues) should ignore jobs scheduled in other queues"
    );
    enqueue(&*backend, vec![delayed("due-mine", T0, T0 + 9_000)], T0).await;
    assert_eq!(
        due(&["due-mine"]).await.expect("next_due should succeed"),
        Some(T0 + 9_000),
        "next_due(queues) should report the earliest run_at of those queues only"
    );
    assert_eq!(
        due(&["due-mine", "due-other"])
            .await
            .expect("next_due should succeed"),
        Some(T0 + 1_000),
        "next_due over several queues should report the earliest of them"
    );
}

/// A claim honours `limit` and takes from the queues in the order the request lists them
/// (queue order wins over priority); unknown queues yield nothing.
pub async fn claim_respects_limit_and_queue_order<B: Broker + ResultStore>(backend: Arc<B>) {
    let lowest = |q: &str| {
        let mut j = job(q, T0);
        j.priority = Priority::LOWEST;
        j
    };
    let highest = |q: &str| {
        let mut j = job(q, T0);
        j.priority = Priority::HIGHEST;
        j
    };
    let hi: Vec<_> = (0..2).map(|_| lowest("first")).collect();
    let lo: Vec<_> = (0..3).map(|_| highest("second")).collect();
    let (hi_ids, lo_ids): (Vec<JobId>, Vec<JobId>) = (ids_of(&hi), ids_of(&lo));
    enqueue(&*backend, hi, T0).await;
    enqueue(&*backend, lo, T0).await;

    assert!(
        claim(&*backend, &["first", "second"], 0, T0)
            .await
            .is_empty(),
        "a claim with limit 0 should return nothing"
    );
    assert_eq!(
        claimed_ids(&claim(&*backend, &["first", "second"], 3, T0).await),
        vec![hi_ids[0], hi_ids[1], lo_ids[0]],
        "queues should be drained in the order the request lists them (before priority), \
         up to the limit"
    );
    assert_eq!(
        claimed_ids(&claim(&*backend, &["second", "first"], 1, T0).await),
        vec![lo_ids[1]],
        "a limit of 1 should return one job, from the first queue listed"
    );
    assert!(
        claim(&*backend, &["nowhere"], 10, T0).await.is_empty(),
        "an unknown queue should yield nothing"
    );
    assert_eq!(
        claimed_ids(&claim(&*backend, &["first", "second"], 10, T0).await),
        vec![lo_ids[2]],
        "the last job should be claimable; claimed jobs are not handed out again"
    );
    assert!(claim(&*backend, &["first", "second"], 10, T0)
        .await
        .is_empty());
}

/// This file's cases, for [`suite!`](crate::suite).
#[doc(hidden)]
#[macro_export]
macro_rules! __cases_broker_ordering {
    ($constructor:expr) => {
        $crate::__suite_cases! {
            $constructor;
            fifo_within_priority,
            priority_order,
            delayed_jobs_wait_for_run_at,
            next_due_is_per_queue,
            claim_respects_limit_and_queue_order,
        }
    };
}
