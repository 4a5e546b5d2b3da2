//! Retention that keeps up: a reap sweeps everything due however much is due, and the
//! dead letters of a queue are capped.

use crate::support::{claim, enqueue, exists, job, lease, success, T0};
use celeriac_core::backend::QueueAdmin;
use celeriac_core::backend::{Completion, Outcome};
use celeriac_core::retention::DEFAULT_DEAD_MAX;
use celeriac_core::{Broker, ErrorInfo, JobId, JobState, ResultStore};
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;

/// Jobs per enqueue, claim and complete call while filling a store.
const CHUNK: usize = 500;

/// Puts `n` jobs of `queue` through enqueue, claim and complete, all finishing at `at` with
/// `outcome`; returns their ids in enqueue order.
async fn finish_many<B: Broker>(
    backend: &B,
    queue: &str,
    n: usize,
    result_ttl: Duration,
    outcome: &Outcome,
    at: i64,
) -> Vec<JobId> {
    let mut ids = Vec::with_capacity(n);
    while ids.len() < n {
        let jobs: Vec<_> = (0..CHUNK.min(n - ids.len()))
            .map(|_| {
                let mut j = job(queue, T0);
                j.result_ttl = Some(result_ttl);
                j
            })
            .collect();
        let want = jobs.len();
        ids.extend(jobs.iter().map(|j| j.id));
        enqueue(backend, jobs, T0).await;
        let mut claimed = Vec::with_capacity(want);
        while claimed.len() < want {
            let got = claim(backend, &[queue], want - claimed.len(), at).await;
            assert!(
                !got.is_empty(),
                "every job just enqueued in `{queue}` should be claimable"
            );
            claimed.extend(got);
        }
        let done: Vec<Completion> = claimed
            .iter()
            .map(|c| Completion {
                lease: lease(c),
                outcome: outcome.clone(),
            })
            .collect();
        let applied = backend
            .complete(done, at)
            .await
            .expect("complete should succeed");
        assert!(
            applied.iter().all(|a| *a),
            "every completion of a held lease should apply"
        );
    }
    ids
}

/// How many jobs of `queue` are in `state`, by [`Broker::stats`].
async fn count<B: Broker + QueueAdmin>(backend: &B, queue: &str, state: JobState) -> u64 {
    backend
        .stats()
        .await
        .expect("stats should succeed")
        .iter()
        .find(|s| s.queue == queue)
        .and_then(|s| s.counts.get(state.as_str()).copied())
        .unwrap_or(0)
}

fn dead_outcome() -> Outcome {
    Outcome::Dead {
        error: ErrorInfo::new("retries_exhausted", "gave up", 1),
    }
}

/// One reap sweeps every finished job past its retention even when several batches' worth
/// (well over 1,000 per set) fell due at once, and nothing before its time.
pub async fn reap_sweeps_every_due_result_in_one_call<B: Broker + QueueAdmin + ResultStore>(
    backend: Arc<B>,
) {
    let q = "retention-sweep";
    let ttl = Duration::from_secs(60);
    let finished = T0 + 10;
    let ok = finish_many(&*backend, q, 2_600, ttl, &success(&json!(1)), finished).await;
    let failed = Outcome::Failed {
        error: ErrorInfo::new("error", "no", 1),
    };
    let bad = finish_many(&*backend, q, 1_300, ttl, &failed, finished).await;
    assert_eq!(count(&*backend, q, JobState::Succeeded).await, 2_600);
    assert_eq!(count(&*backend, q, JobState::Failed).await, 1_300);

    let early = backend
        .reap(finished + 59_999)
        .await
        .expect("reap should succeed");
    assert_eq!(early.swept, 0, "nothing should be swept before its ttl");
    assert_eq!(count(&*backend, q, JobState::Succeeded).await, 2_600);

    let due = backend
        .reap(finished + 60_000)
        .await
        .expect("reap should succeed");
    assert_eq!(
        due.swept, 3_900,
        "one reap should sweep every record whose ttl passed, over several batches"
    );
    assert_eq!(count(&*backend, q, JobState::Succeeded).await, 0);
    assert_eq!(count(&*backend, q, JobState::Failed).await, 0);
    for id in [ok[0], ok[ok.len() - 1], bad[0], bad[bad.len() - 1]] {
        assert!(
            !exists(&*backend, id).await,
            "swept job {id} should be gone"
        );
    }
    let again = backend
        .reap(finished + 60_000)
        .await
        .expect("reap should succeed");
    assert_eq!(again.swept, 0, "a second reap should find nothing left");
}

/// A queue keeps at most [`DEFAULT_DEAD_MAX`] dead letters: a reap drops the oldest beyond
/// it (several batches' worth in one call) and counts them; another queue's dead letters
/// are not touched.
pub async fn dead_letter_cap_drops_the_oldest<B: Broker + QueueAdmin + ResultStore>(
    backend: Arc<B>,
) {
    let (q, other) = ("retention-dlq", "retention-dlq-other");
    let ttl = Duration::from_secs(60);
    let dead = dead_outcome();
    let cap = usize::try_from(DEFAULT_DEAD_MAX).expect("the cap fits in usize");
    // 1,500 old dead letters (three times 500, a millisecond apart), then `cap` newer ones.
    let mut old = Vec::new();
    for k in 0..3 {
        old.extend(finish_many(&*backend, q, 500, ttl, &dead, T0 + 1 + k).await);
    }
    let mut newer = Vec::new();
    let mut at = T0 + 1_000;
    while newer.len() < cap {
        let n = (cap - newer.len()).min(10_000);
        newer.extend(finish_many(&*backend, q, n, ttl, &dead, at).await);
        at += 1;
    }
    let apart = finish_many(&*backend, other, 10, ttl, &dead, T0).await;
    assert_eq!(
        count(&*backend, q, JobState::Dead).await,
        DEFAULT_DEAD_MAX + 1_500,
        "the queue should hold the cap and 1,500 more dead letters before the reap"
    );

    let report = backend.reap(at + 1).await.expect("reap should succeed");
    assert_eq!(
        report.dead_dropped, 1_500,
        "the reap should drop every dead letter beyond the cap, and count them"
    );
    assert_eq!(report.swept, 0, "no dead letter's ttl has passed");
    assert_eq!(count(&*backend, q, JobState::Dead).await, DEFAULT_DEAD_MAX);
    assert_eq!(
        count(&*backend, other, JobState::Dead).await,
        10,
        "the cap counts per queue"
    );
    for id in [old[0], old[749], old[1_499]] {
        assert!(
            !exists(&*backend, id).await,
            "the oldest dead letters should be dropped ({id})"
        );
    }
    for id in [newer[0], newer[cap - 1], apart[0]] {
        assert!(
            exists(&*backend, id).await,
            "dead letters within the cap should be kept ({id})"
        );
    }
    let again = backend.reap(at + 2).await.expect("reap should succeed");
    assert_eq!(
        again.dead_dropped, 0,
        "a queue at its cap loses nothing more"
    );
}

/// This file's cases, for [`suite!`](crate::suite).
#[doc(hidden)]
#[macro_export]
macro_rules! __cases_broker_retention {
    ($constructor:expr) => {
        $crate::__suite_cases! {
            $constructor;
            reap_sweeps_every_due_result_in_one_call,
            dead_letter_cap_drops_the_oldest,
        }
    };
}
