//! What each kind of completion does to a job.

use crate::support::{claim, claim_only, complete, dead_ids, enqueue, info, job, lease, T0};
use celeriac_core::backend::Outcome;
use celeriac_core::backend::QueueAdmin;
use celeriac_core::{Broker, ErrorInfo, JobState, ResultStore};
use std::sync::Arc;

/// `Dead` moves a job to the dead letters with its reason, `Failed` finishes it with its
/// error (not a dead letter), `Retry` schedules the next attempt at `at`, `Cancelled` ends it.
pub async fn completion_outcomes_set_state<B: Broker + QueueAdmin + ResultStore>(backend: Arc<B>) {
    let q = "outcomes";
    let jobs: Vec<_> = (0..4).map(|_| job(q, T0)).collect();
    let ids: Vec<_> = jobs.iter().map(|j| j.id).collect();
    enqueue(&*backend, jobs, T0).await;
    let claimed = claim(&*backend, &[q], 4, T0).await;
    assert_eq!(claimed.len(), 4);
    let now = T0 + 100;

    let gave_up = ErrorInfo::new("retries_exhausted", "gave up after 1 attempt", 1);
    assert!(
        complete(
            &*backend,
            lease(&claimed[0]),
            Outcome::Dead {
                error: gave_up.clone()
            },
            now
        )
        .await
    );
    let dead = info(&*backend, ids[0]).await;
    assert_eq!(dead.state, JobState::Dead);
    assert_eq!(
        dead.error,
        Some(gave_up),
        "the dead letter should keep its reason"
    );
    assert_eq!(dead.job.finished_at, Some(now));
    assert_eq!(dead.lease_until, None, "a finished job holds no lease");

    let fatal = ErrorInfo::new("error", "bad input", 1);
    assert!(
        complete(
            &*backend,
            lease(&claimed[1]),
            Outcome::Failed {
                error: fatal.clone()
            },
            now
        )
        .await
    );
    let failed = info(&*backend, ids[1]).await;
    assert_eq!(failed.state, JobState::Failed);
    assert_eq!(failed.error, Some(fatal));
    assert_eq!(failed.job.finished_at, Some(now));
    assert_eq!(
        dead_ids(&*backend, None).await,
        vec![ids[0]],
        "only the dead job is a dead letter, not the failed one"
    );

    let flaky = ErrorInfo::new("error", "try again", 1);
    let at = now + 5_000;
    assert!(
        complete(
            &*backend,
            lease(&claimed[2]),
            Outcome::Retry {
                at,
                error: flaky.clone()
            },
            now
        )
        .await
    );
    let retrying = info(&*backend, ids[2]).await;
    assert_eq!(retrying.state, JobState::Retrying);
    assert_eq!(
        retrying.job.run_at, at,
        "a retry should be due at the time asked"
    );
    assert_eq!(
        retrying.error,
        Some(flaky),
        "a retrying job shows its last error"
    );
    assert_eq!(retrying.lease_until, None);
    assert_eq!(
        backend
            .next_due(vec![q.to_string()])
            .await
            .expect("next_due should succeed"),
        Some(at),
        "next_due should count retrying jobs"
    );
    assert!(
        claim(&*backend, &[q], 10, at - 1).await.is_empty(),
        "a retry should not run before its time"
    );
    let again = claim_only(&*backend, q, ids[2], at).await;
    assert_eq!(again.job.attempts, 2, "the retry should be attempt 2");

    assert!(complete(&*backend, lease(&claimed[3]), Outcome::Cancelled, now).await);
    let cancelled = info(&*backend, ids[3]).await;
    assert_eq!(cancelled.state, JobState::Cancelled);
    assert!(cancelled.state.is_terminal());
}

/// This file's cases, for [`suite!`](crate::suite).
#[doc(hidden)]
#[macro_export]
macro_rules! __cases_broker_completion {
    ($constructor:expr) => {
        $crate::__suite_cases! {
            $constructor;
            completion_outcomes_set_state,
        }
    };
}
