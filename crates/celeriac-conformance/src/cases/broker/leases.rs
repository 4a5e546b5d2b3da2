//! Leases and fencing tokens: expiry and redelivery, stale tokens, heartbeats, release.

use crate::support::{
    claim, claim_only, claimed_ids, complete, dead_ids, enqueue, info, job, lease, success,
    LEASE_MS, NOOP, T0,
};
use celeriac_core::backend::QueueAdmin;
use celeriac_core::backend::{Completion, EndedJob, LeaseRef, Outcome, ReapReport};
use celeriac_core::workflow::FLOW_HEADER;
use celeriac_core::{Broker, ErrorInfo, JobState, ResultStore};
use serde_json::json;
use std::sync::Arc;

/// An expired lease is redelivered: reaping before the expiry does nothing, after it puts
/// the job back, and the next claim gets a new token with the attempt counted. Without
/// attempts left, the reaper moves the job to the dead letters as `lease_expired`, and
/// reports the job it ended with its task, error and workflow header.
pub async fn lease_expiry_redelivers<B: Broker + QueueAdmin + ResultStore>(backend: Arc<B>) {
    let q = "leases";
    let mut j = job(q, T0);
    j.max_attempts = 2;
    j.headers
        .insert(FLOW_HEADER.to_string(), "step of the leased job".into());
    let id = j.id;
    enqueue(&*backend, vec![j], T0).await;

    let first = claim_only(&*backend, q, id, T0).await;
    assert_eq!(first.job.attempts, 1, "a claim should count its attempt");
    assert_eq!(
        first.lease_until,
        T0 + LEASE_MS,
        "the lease should run for the lease asked"
    );
    let active = info(&*backend, id).await;
    assert_eq!(active.state, JobState::Active);
    assert_eq!(active.lease_until, Some(T0 + LEASE_MS));
    assert_eq!(
        active.job.started_at,
        Some(T0),
        "started_at is the first claim's time"
    );

    let early = backend
        .reap(first.lease_until - 1)
        .await
        .expect("reap should succeed");
    assert_eq!(
        (early.requeued, early.dead),
        (0, 0),
        "reaping before the lease runs out should leave it alone"
    );
    assert_eq!(info(&*backend, id).await.state, JobState::Active);
    assert!(
        claim(&*backend, &[q], 10, first.lease_until - 1)
            .await
            .is_empty(),
        "a leased job should not be claimable by anyone else"
    );

    let late = backend
        .reap(first.lease_until + 1)
        .await
        .expect("reap should succeed");
    assert_eq!(
        (late.requeued, late.dead),
        (1, 0),
        "reaping after the lease ran out should requeue the job"
    );
    assert!(late.ended.is_empty(), "a requeued job has not ended");
    let requeued = info(&*backend, id).await;
    assert_eq!(requeued.state, JobState::Pending);
    assert_eq!(requeued.job.attempts, 1, "the lost attempt still counts");
    assert_eq!(requeued.lease_until, None, "a pending job holds no lease");

    let second = claim_only(&*backend, q, id, first.lease_until + 1).await;
    assert_ne!(
        second.token, first.token,
        "a redelivery should carry a new fencing token"
    );
    assert_eq!(
        second.job.attempts, 2,
        "the redelivery should count as attempt 2"
    );

    let last = backend
        .reap(second.lease_until + 1)
        .await
        .expect("reap should succeed");
    assert_eq!(
        (last.requeued, last.dead),
        (0, 1),
        "with no attempts left, an expired lease should go to the dead letters"
    );
    let dead = info(&*backend, id).await;
    assert_eq!(dead.state, JobState::Dead);
    let error = dead.error.expect("a dead job should carry its reason");
    assert_eq!(error.kind, "lease_expired");
    assert_eq!(
        error.attempt, 2,
        "the error should name the attempt that was lost"
    );
    assert!(
        dead.job.finished_at.is_some(),
        "a dead job should have finished_at"
    );
    assert_eq!(
        last.ended,
        vec![EndedJob {
            id,
            task: NOOP.to_string(),
            state: JobState::Dead,
            error: Some(error),
            flow: Some("step of the leased job".to_string()),
        }],
        "the reap should report the job it ended, as recorded"
    );
    assert_eq!(dead_ids(&*backend, Some(q)).await, vec![id]);
    assert!(claim(&*backend, &[q], 10, second.lease_until + 2)
        .await
        .is_empty());
}

/// After a redelivery, the old token can no longer complete, heartbeat, report progress or
/// release; the new token can. A valid heartbeat extends the lease past its old expiry.
pub async fn stale_token_is_fenced_off<B: Broker + ResultStore>(backend: Arc<B>) {
    let q = "fencing";
    let (a, b) = (job(q, T0), job(q, T0));
    let (a_id, b_id) = (a.id, b.id);
    enqueue(&*backend, vec![a, b], T0).await;
    let old = claim(&*backend, &[q], 2, T0).await;
    assert_eq!(claimed_ids(&old), vec![a_id, b_id]);
    let report = backend
        .reap(T0 + LEASE_MS + 1)
        .await
        .expect("reap should succeed");
    assert_eq!(report.requeued, 2);
    let now = T0 + LEASE_MS + 1;
    let new = claim(&*backend, &[q], 2, now).await;
    assert_eq!(claimed_ids(&new), vec![a_id, b_id]);
    let (stale_a, stale_b) = (lease(&old[0]), lease(&old[1]));
    let (fresh_a, fresh_b) = (lease(&new[0]), lease(&new[1]));

    // One call, one flag per completion: the stale one refused, the fresh one applied.
    let flags = backend
        .complete(
            vec![
                Completion {
                    lease: stale_a.clone(),
                    outcome: success(&json!("stale")),
                },
                Completion {
                    lease: fresh_b.clone(),
                    outcome: success(&json!("fresh")),
                },
            ],
            now + 1,
        )
        .await
        .expect("complete should succeed");
    assert_eq!(
        flags,
        vec![false, true],
        "a stale token should be refused and a current one applied, in the same call"
    );
    assert_eq!(info(&*backend, b_id).await.state, JobState::Succeeded);

    let err = || ErrorInfo::new("error", "stale", 1);
    for outcome in [
        Outcome::Retry {
            at: now + 10,
            error: err(),
        },
        Outcome::Failed { error: err() },
        Outcome::Dead { error: err() },
        Outcome::Cancelled,
    ] {
        assert!(
            !complete(&*backend, stale_a.clone(), outcome.clone(), now + 1).await,
            "a stale token should not be able to record {outcome:?}"
        );
    }
    assert!(
        !complete(&*backend, stale_b, success(&json!("late")), now + 1).await,
        "a stale token should not complete a job another attempt already finished"
    );
    let a_info = info(&*backend, a_id).await;
    assert_eq!(
        a_info.state,
        JobState::Active,
        "refused completions change nothing"
    );
    assert_eq!(a_info.job.attempts, 2);
    assert_eq!(a_info.result, None);
    assert_eq!(a_info.lease_until, Some(new[0].lease_until));
    assert!(
        !backend
            .set_progress(stale_a.clone(), 0.5, None)
            .await
            .expect("set_progress should succeed"),
        "a stale token should not record progress"
    );

    // Heartbeats: the stale lease is reported lost and not extended.
    let extended = new[0].lease_until + 60_000;
    let lost = backend
        .heartbeat(vec![stale_a.clone()], extended, now + 5)
        .await
        .expect("heartbeat should succeed");
    assert_eq!(
        lost,
        vec![stale_a.clone()],
        "a heartbeat with a stale token should report it lost"
    );
    assert_eq!(
        info(&*backend, a_id).await.lease_until,
        Some(new[0].lease_until)
    );
    let lost = backend
        .heartbeat(vec![fresh_a.clone(), fresh_b.clone()], extended, now + 5)
        .await
        .expect("heartbeat should succeed");
    assert_eq!(
        lost,
        vec![fresh_b],
        "a heartbeat should keep the held lease and report the finished one lost"
    );
    assert_eq!(
        info(&*backend, a_id).await.lease_until,
        Some(extended),
        "a heartbeat should extend the lease"
    );
    let report = backend
        .reap(new[0].lease_until + 1)
        .await
        .expect("reap should succeed");
    assert_eq!(
        report,
        ReapReport::default(),
        "reaping at the old expiry should not requeue an extended lease"
    );
    assert_eq!(info(&*backend, a_id).await.state, JobState::Active);

    assert_eq!(
        backend
            .release(vec![stale_a], now + 10)
            .await
            .expect("release should succeed"),
        0,
        "a stale token should not release the lease"
    );
    assert!(
        complete(
            &*backend,
            fresh_a.clone(),
            success(&json!("done")),
            now + 20
        )
        .await,
        "the current token should complete the job"
    );
    assert_eq!(info(&*backend, a_id).await.state, JobState::Succeeded);
    assert!(
        !complete(&*backend, fresh_a, success(&json!("twice")), now + 21).await,
        "an attempt should be completed only once"
    );
}

/// `release` hands a lease back to pending without counting the attempt; the job can be
/// claimed again at once, and the released token is stale afterwards.
pub async fn release_returns_lease_uncounted<B: Broker + ResultStore>(backend: Arc<B>) {
    let q = "release";
    let mut j = job(q, T0);
    j.max_attempts = 1;
    let id = j.id;
    enqueue(&*backend, vec![j], T0).await;
    let first = claim_only(&*backend, q, id, T0).await;
    assert_eq!(first.job.attempts, 1);

    let released = backend
        .release(vec![lease(&first)], T0 + 10)
        .await
        .expect("release should succeed");
    assert_eq!(
        released, 1,
        "release should report the lease it handed back"
    );
    let pending = info(&*backend, id).await;
    assert_eq!(pending.state, JobState::Pending);
    assert_eq!(
        pending.job.attempts, 0,
        "a released attempt should not count"
    );
    assert_eq!(pending.lease_until, None);
    assert_eq!(
        backend
            .release(vec![lease(&first)], T0 + 11)
            .await
            .expect("release should succeed"),
        0,
        "releasing the same lease twice should do nothing"
    );

    let second = claim_only(&*backend, q, id, T0 + 20).await;
    assert_eq!(
        second.job.attempts, 1,
        "the claim after a release should be attempt 1 again"
    );
    assert_ne!(second.token, first.token);
    assert!(
        !complete(&*backend, lease(&first), success(&json!(1)), T0 + 30).await,
        "the released token should be stale"
    );
    assert!(complete(&*backend, lease(&second), success(&json!(2)), T0 + 30).await);
    assert_eq!(info(&*backend, id).await.state, JobState::Succeeded);
}

/// Heartbeating an unknown job reports it lost rather than failing the call.
pub async fn unknown_leases_are_lost<B: Broker + ResultStore>(backend: Arc<B>) {
    let ghost = LeaseRef {
        id: celeriac_core::JobId::new(),
        token: 1,
        queue: "default".into(),
    };
    let lost = backend
        .heartbeat(vec![ghost.clone()], T0 + LEASE_MS, T0)
        .await
        .expect("heartbeat should succeed");
    assert_eq!(lost, vec![ghost.clone()]);
    assert!(!complete(&*backend, ghost.clone(), success(&json!(null)), T0).await);
    assert_eq!(
        backend
            .release(vec![ghost.clone()], T0)
            .await
            .expect("release should succeed"),
        0
    );
    assert!(!backend
        .set_progress(ghost, 0.1, None)
        .await
        .expect("set_progress should succeed"));
}

/// This file's cases, for [`suite!`](crate::suite).
#[doc(hidden)]
#[macro_export]
macro_rules! __cases_broker_leases {
    ($constructor:expr) => {
        $crate::__suite_cases! {
            $constructor;
            lease_expiry_redelivers,
            stale_token_is_fenced_off,
            release_returns_lease_uncounted,
            unknown_leases_are_lost,
        }
    };
}
