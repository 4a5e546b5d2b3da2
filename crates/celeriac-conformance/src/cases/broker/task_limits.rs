//! Global task limits, enforced by the store at claim time: a job held back stays waiting and
//! uses no attempt.

use crate::support::{complete, enqueue, info, job, lease, success, LEASE, LEASE_MS, T0};
use celeriac_core::backend::{ClaimRequest, Claimed, Rate, TaskLimits};
use celeriac_core::{Broker, Job, JobState, ResultStore};
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

fn task_job(queue: &str, task: &str, now: i64) -> Job {
    let mut j = job(queue, now);
    j.task = task.to_string();
    j
}

async fn claim_limited<B: Broker>(
    backend: &B,
    queue: &str,
    limits: &BTreeMap<String, TaskLimits>,
    limit: usize,
    now: i64,
) -> Vec<Claimed> {
    backend
        .claim(ClaimRequest {
            queues: vec![queue.to_string()],
            limit,
            lease: LEASE,
            worker: "conformance-worker".to_string(),
            now,
            limits: limits.clone(),
        })
        .await
        .expect("claim should succeed")
}

/// A concurrency cap lets no more than N jobs of the task run at once; jobs of other tasks
/// behind the held ones are still served; finishing or losing a lease frees a place.
pub async fn concurrency_cap_holds_jobs_back<B: Broker + ResultStore>(backend: Arc<B>) {
    let q = "limit-cap";
    let capped: Vec<Job> = (0..4).map(|_| task_job(q, "capped", T0)).collect();
    let free = task_job(q, "free", T0);
    let free_id = free.id;
    let mut all = capped.clone();
    all.push(free);
    enqueue(&*backend, all, T0).await;
    let limits = BTreeMap::from([(
        "capped".to_string(),
        TaskLimits {
            concurrency: Some(2),
            rate: None,
        },
    )]);

    let got = claim_limited(&*backend, q, &limits, 10, T0).await;
    let capped_running = got.iter().filter(|c| c.job.task == "capped").count();
    assert_eq!(capped_running, 2, "only two of the capped task run");
    assert!(
        got.iter().any(|c| c.job.id == free_id),
        "the other task is served past them"
    );
    for j in &capped[2..] {
        let i = info(&*backend, j.id).await;
        assert_eq!(i.state, JobState::Pending);
        assert_eq!(i.job.attempts, 0, "a held-back job uses no attempt");
    }
    assert!(claim_limited(&*backend, q, &limits, 10, T0 + 1)
        .await
        .is_empty());

    // One finishes: one more may start.
    let first = got
        .iter()
        .find(|c| c.job.task == "capped")
        .expect("a capped job");
    assert!(complete(&*backend, lease(first), success(&json!(1)), T0 + 2).await);
    let next = claim_limited(&*backend, q, &limits, 10, T0 + 3).await;
    assert_eq!(next.len(), 1, "{next:?}");

    // The running ones lose their leases: the reaper gives their places back.
    backend
        .reap(T0 + 3 + LEASE_MS + 1)
        .await
        .expect("reap succeeds");
    let after = claim_limited(&*backend, q, &limits, 10, T0 + LEASE_MS + 10).await;
    let capped_again = after.iter().filter(|c| c.job.task == "capped").count();
    assert_eq!(
        capped_again, 2,
        "the cap counts only jobs that really run: {after:?}"
    );
}

/// A rate spaces starts evenly: 2 per second is one every 500 ms, and no second-long window
/// sees more than 2.
pub async fn rate_spaces_starts<B: Broker + ResultStore>(backend: Arc<B>) {
    let q = "limit-rate";
    let jobs: Vec<Job> = (0..5).map(|_| task_job(q, "paced", T0)).collect();
    enqueue(&*backend, jobs, T0).await;
    let limits = BTreeMap::from([(
        "paced".to_string(),
        TaskLimits {
            concurrency: None,
            rate: Some(Rate {
                count: 2,
                per: Duration::from_secs(1),
            }),
        },
    )]);
    let mut starts = Vec::new();
    for t in (0..=2_000).step_by(100) {
        let now = T0 + t;
        for c in claim_limited(&*backend, q, &limits, 10, now).await {
            assert_eq!(c.job.attempts, 1, "held-back claims used no attempt");
            starts.push(now);
        }
    }
    assert_eq!(
        starts,
        vec![T0, T0 + 500, T0 + 1_000, T0 + 1_500, T0 + 2_000]
    );
    for w in starts.windows(3) {
        assert!(
            w[2] - w[0] >= 1_000,
            "three starts within one second: {starts:?}"
        );
    }
}

/// This file's cases, for [`suite!`](crate::suite).
#[doc(hidden)]
#[macro_export]
macro_rules! __cases_broker_task_limits {
    ($constructor:expr) => {
        $crate::__suite_cases! {
            $constructor;
            concurrency_cap_holds_jobs_back,
            rate_spaces_starts,
        }
    };
}
