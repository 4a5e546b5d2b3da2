//! Jobs with an `expires_at` that nobody started in time.

use crate::support::{claim, claimed_ids, delayed, enqueue, info, job, T0};
use celeriac_core::{Broker, JobState, ResultStore};
use std::sync::Arc;
use std::time::Duration;

/// A job whose `expires_at` passed before any claim is not returned and ends as expired;
/// one that has not expired yet is claimed as usual.
pub async fn expired_jobs_are_not_claimed<B: Broker + ResultStore>(backend: Arc<B>) {
    let q = "expiry";
    let mut stale = job(q, T0);
    stale.expires_at = Some(T0 + 100);
    let mut late = delayed(q, T0, T0 + 1_000);
    late.expires_at = Some(T0 + 1_500);
    let mut live = job(q, T0);
    live.expires_at = Some(T0 + 100_000);
    let (stale_id, late_id, live_id) = (stale.id, late.id, live.id);
    enqueue(&*backend, vec![stale, late, live], T0).await;

    assert_eq!(
        claimed_ids(&claim(&*backend, &[q], 10, T0 + 200).await),
        vec![live_id],
        "a job past its expires_at should not be claimed; one before it should"
    );
    let expired = info(&*backend, stale_id).await;
    assert_eq!(expired.state, JobState::Expired);
    assert!(expired.state.is_terminal());
    assert_eq!(
        expired.job.attempts, 0,
        "an expired job never started an attempt"
    );

    // A delayed job that became due but expired before anyone claimed it.
    assert!(
        claim(&*backend, &[q], 10, T0 + 2_000).await.is_empty(),
        "a delayed job past its expiry should not be claimed"
    );
    assert_eq!(info(&*backend, late_id).await.state, JobState::Expired);
    let waited = backend
        .wait(stale_id, Duration::from_secs(5))
        .await
        .expect("wait on an expired job should return");
    assert_eq!(waited.state, JobState::Expired);
}

/// Expired jobs at the head of a queue do not use up the claim's limit: the ready job
/// behind them is returned by the same claim.
pub async fn expired_jobs_do_not_use_up_the_claim_limit<B: Broker + ResultStore>(backend: Arc<B>) {
    let q = "expiry-limit";
    let stale: Vec<_> = (0..3)
        .map(|_| {
            let mut j = job(q, T0);
            j.expires_at = Some(T0 + 10);
            j
        })
        .collect();
    let stale_ids: Vec<_> = stale.iter().map(|j| j.id).collect();
    let live = job(q, T0);
    let live_id = live.id;
    enqueue(&*backend, stale, T0).await;
    enqueue(&*backend, vec![live], T0).await;

    assert_eq!(
        claimed_ids(&claim(&*backend, &[q], 1, T0 + 100).await),
        vec![live_id],
        "a claim with limit 1 should skip the expired jobs and return the ready one behind them"
    );
    for id in stale_ids {
        assert_eq!(info(&*backend, id).await.state, JobState::Expired);
    }
}

/// This file's cases, for [`suite!`](crate::suite).
#[doc(hidden)]
#[macro_export]
macro_rules! __cases_broker_expiry {
    ($constructor:expr) => {
        $crate::__suite_cases! {
            $constructor;
            expired_jobs_are_not_claimed,
            expired_jobs_do_not_use_up_the_claim_limit,
        }
    };
}
