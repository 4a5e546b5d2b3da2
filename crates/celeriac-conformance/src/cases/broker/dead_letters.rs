//! The dead-letter queue: listing, retrying, purging.

use crate::support::{
    claim, claim_only, complete, dead_ids, enqueue, exists, info, job, lease, T0,
};
use celeriac_core::backend::Outcome;
use celeriac_core::backend::QueueAdmin;
use celeriac_core::{Broker, ErrorInfo, JobId, JobState, ResultStore};
use std::sync::Arc;

fn reason(n: u32) -> Outcome {
    Outcome::Dead {
        error: ErrorInfo::new("retries_exhausted", format!("gave up #{n}"), 1),
    }
}

/// Dead letters are listed newest first and per queue, with limit and offset; `retry_dead`
/// puts them back to pending with fresh attempts; `purge_dead` deletes them.
pub async fn dead_letters_list_retry_purge<B: Broker + QueueAdmin + ResultStore>(backend: Arc<B>) {
    let (qa, qb) = ("dlq-a", "dlq-b");
    let (d1, d2, d3, f) = (job(qa, T0), job(qb, T0), job(qa, T0), job(qa, T0));
    let (d1, d2, d3, f): (JobId, JobId, JobId, JobId) = {
        let ids = (d1.id, d2.id, d3.id, f.id);
        enqueue(&*backend, vec![d1, d2, d3, f], T0).await;
        ids
    };
    let claimed = claim(&*backend, &[qa, qb], 10, T0).await;
    assert_eq!(claimed.len(), 4);
    let lease_of = |id: JobId| {
        claimed
            .iter()
            .find(|c| c.job.id == id)
            .map(lease)
            .expect("every job was claimed")
    };
    // They die one millisecond apart, d1 first.
    for (n, id) in [d1, d2, d3].into_iter().enumerate() {
        let n = n as u32 + 1;
        assert!(complete(&*backend, lease_of(id), reason(n), T0 + i64::from(n)).await);
    }
    let failed = Outcome::Failed {
        error: ErrorInfo::new("error", "not a dead letter", 1),
    };
    assert!(complete(&*backend, lease_of(f), failed, T0 + 4).await);

    assert_eq!(
        dead_ids(&*backend, None).await,
        vec![d3, d2, d1],
        "dead letters should be listed newest first (failed jobs are not dead letters)"
    );
    assert_eq!(
        dead_ids(&*backend, Some(qa)).await,
        vec![d3, d1],
        "the queue filter should keep only that queue's dead letters"
    );
    let page = backend
        .dead_letters(None, 1, 1)
        .await
        .expect("dead_letters should succeed");
    assert_eq!(
        page.iter().map(|i| i.job.id).collect::<Vec<_>>(),
        vec![d2],
        "limit 1 offset 1 should return the second newest"
    );
    assert_eq!(page[0].state, JobState::Dead);
    assert_eq!(
        page[0].error.as_ref().map(|e| e.message.as_str()),
        Some("gave up #2"),
        "a dead letter should carry its reason"
    );

    // Retry one by id.
    let now = T0 + 10;
    assert_eq!(
        backend
            .retry_dead(Some(vec![d1]), now)
            .await
            .expect("retry_dead should succeed"),
        1
    );
    let back = info(&*backend, d1).await;
    assert_eq!(
        back.state,
        JobState::Pending,
        "a retried dead letter should be pending"
    );
    assert_eq!(
        back.job.attempts, 0,
        "a retried dead letter should get fresh attempts"
    );
    assert_eq!(dead_ids(&*backend, None).await, vec![d3, d2]);
    let again = claim_only(&*backend, qa, d1, now).await;
    assert_eq!(again.job.attempts, 1);
    assert_eq!(
        backend
            .retry_dead(Some(vec![d1, f]), now)
            .await
            .expect("retry_dead should succeed"),
        0,
        "retry_dead should touch neither active nor failed jobs"
    );

    // Purge one queue's dead letters.
    assert_eq!(
        backend
            .purge_dead(Some(qb.to_string()))
            .await
            .expect("purge_dead should succeed"),
        1
    );
    assert!(
        !exists(&*backend, d2).await,
        "a purged dead letter should be gone"
    );
    assert_eq!(dead_ids(&*backend, None).await, vec![d3]);

    // d1 dies again (now the newest); retry all of them at once.
    assert!(complete(&*backend, lease(&again), reason(4), now + 1).await);
    assert_eq!(dead_ids(&*backend, None).await, vec![d1, d3]);
    assert_eq!(
        backend
            .retry_dead(None, now + 2)
            .await
            .expect("retry_dead should succeed"),
        2,
        "retry_dead(None) should retry every dead letter"
    );
    assert!(dead_ids(&*backend, None).await.is_empty());
    let both = claim(&*backend, &[qa], 10, now + 2).await;
    assert_eq!(
        both.len(),
        2,
        "both retried dead letters should be claimable"
    );
    for c in &both {
        assert_eq!(c.job.attempts, 1);
        assert!(complete(&*backend, lease(c), reason(5), now + 3).await);
    }

    // Purge everything.
    assert_eq!(
        backend
            .purge_dead(None)
            .await
            .expect("purge_dead should succeed"),
        2
    );
    assert!(dead_ids(&*backend, None).await.is_empty());
    assert!(!exists(&*backend, d1).await && !exists(&*backend, d3).await);
    assert_eq!(
        info(&*backend, f).await.state,
        JobState::Failed,
        "purging dead letters should leave failed jobs alone"
    );
}

/// This file's cases, for [`suite!`](crate::suite).
#[doc(hidden)]
#[macro_export]
macro_rules! __cases_broker_dead_letters {
    ($constructor:expr) => {
        $crate::__suite_cases! {
            $constructor;
            dead_letters_list_retry_purge,
        }
    };
}
