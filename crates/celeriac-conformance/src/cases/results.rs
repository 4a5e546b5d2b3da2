//! Results, progress and waiting: the `ResultStore` side of a backend.

use crate::support::{claim_only, complete, enqueue, exists, info, job, lease, success, T0};
use celeriac_core::backend::QueueAdmin;
use celeriac_core::backend::{Completion, Outcome};
use celeriac_core::{Broker, Error, ErrorInfo, JobId, JobState, Progress, ResultStore};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;

/// A succeeded job keeps its result, decodable with [`celeriac_core::JobInfo::result_as`].
pub async fn results_are_stored<B: Broker + ResultStore>(backend: Arc<B>) {
    let q = "results";
    let j = job(q, T0);
    let id = j.id;
    enqueue(&*backend, vec![j], T0).await;
    let c = claim_only(&*backend, q, id, T0).await;
    let value = json!({"sum": 3, "items": ["a", "b"]});
    assert!(complete(&*backend, lease(&c), success(&value), T0 + 10).await);

    let done = info(&*backend, id).await;
    assert_eq!(done.state, JobState::Succeeded);
    assert_eq!(
        done.result_as::<Value>().expect("the result should decode"),
        Some(value),
        "the stored result should decode to the value completed with"
    );
    assert_eq!(done.job.finished_at, Some(T0 + 10));
    assert_eq!(done.job.started_at, Some(T0));
    assert_eq!(done.error, None);
    assert_eq!(done.lease_until, None, "a finished job holds no lease");
}

/// `wait` returns as soon as another task completes the job, and at once for a job that
/// has already finished, whatever the terminal state.
pub async fn wait_returns_when_completed<B: Broker + ResultStore>(backend: Arc<B>) {
    let q = "waiting";
    let (a, b) = (job(q, T0), job(q, T0));
    let (a_id, b_id) = (a.id, b.id);
    enqueue(&*backend, vec![a, b], T0).await;
    let ca = claim_only(&*backend, q, a_id, T0).await;

    let completer = {
        let backend = backend.clone();
        let lease = lease(&ca);
        tokio::spawn(async move {
            // Let the waiter start waiting first (not an assertion: either order must work).
            tokio::time::sleep(Duration::from_millis(50)).await;
            backend
                .complete(
                    vec![Completion {
                        lease,
                        outcome: success(&json!(42)),
                    }],
                    T0 + 1,
                )
                .await
        })
    };
    let got = backend
        .wait(a_id, Duration::from_secs(10))
        .await
        .expect("wait should return once the job completes");
    assert_eq!(got.state, JobState::Succeeded);
    assert_eq!(got.result_as::<i64>().expect("decodes"), Some(42));
    let applied = completer
        .await
        .expect("the completing task should not panic")
        .expect("complete should succeed");
    assert_eq!(applied, vec![true]);

    let cb = claim_only(&*backend, q, b_id, T0 + 2).await;
    let error = ErrorInfo::new("retries_exhausted", "gave up", 1);
    assert!(complete(&*backend, lease(&cb), Outcome::Dead { error }, T0 + 3).await);
    let got = backend
        .wait(b_id, Duration::from_secs(10))
        .await
        .expect("wait on a finished job should return at once");
    assert_eq!(
        got.state,
        JobState::Dead,
        "wait should return for any terminal state"
    );
}

/// `wait` on a job that does not finish gives up with [`Error::Timeout`].
pub async fn wait_times_out<B: Broker + ResultStore>(backend: Arc<B>) {
    let j = job("timeout", T0);
    let id = j.id;
    enqueue(&*backend, vec![j], T0).await;
    match backend.wait(id, Duration::from_millis(100)).await {
        Err(Error::Timeout(_)) => {}
        other => panic!("waiting for a pending job should time out, got {other:?}"),
    }
    assert_eq!(info(&*backend, id).await.state, JobState::Pending);
}

/// An unknown id is `None` for `get` and [`Error::NotFound`] for `wait`.
pub async fn unknown_job_is_not_found<B: Broker + QueueAdmin + ResultStore>(backend: Arc<B>) {
    let ghost = JobId::new();
    assert!(
        backend
            .get(ghost)
            .await
            .expect("get should succeed")
            .is_none(),
        "get of an unknown id should be None"
    );
    match backend.wait(ghost, Duration::from_secs(5)).await {
        Err(Error::NotFound(_)) => {}
        other => panic!("waiting for an unknown job should be NotFound, got {other:?}"),
    }
    assert_eq!(
        backend
            .retry_dead(Some(vec![ghost]), T0)
            .await
            .expect("retry_dead should succeed"),
        0
    );
}

/// Progress recorded with the current lease is visible through `get`; the latest wins.
pub async fn progress_is_visible<B: Broker + ResultStore>(backend: Arc<B>) {
    let q = "progress";
    let j = job(q, T0);
    let id = j.id;
    enqueue(&*backend, vec![j], T0).await;
    assert_eq!(
        info(&*backend, id).await.progress,
        None,
        "no progress before running"
    );
    let c = claim_only(&*backend, q, id, T0).await;

    let set = |fraction: f64, message: Option<&str>| {
        backend.set_progress(lease(&c), fraction, message.map(str::to_string))
    };
    assert!(set(0.5, Some("half way"))
        .await
        .expect("set_progress should succeed"));
    assert_eq!(
        info(&*backend, id).await.progress,
        Some(Progress {
            fraction: 0.5,
            message: Some("half way".to_string())
        })
    );
    assert!(set(0.75, None).await.expect("set_progress should succeed"));
    assert_eq!(
        info(&*backend, id).await.progress,
        Some(Progress {
            fraction: 0.75,
            message: None
        }),
        "the latest progress report should replace the previous one"
    );
    assert!(complete(&*backend, lease(&c), success(&json!(null)), T0 + 1).await);
    assert!(
        !set(0.9, None).await.expect("set_progress should succeed"),
        "progress of a finished attempt should be refused"
    );
}

/// A finished job's record is kept for its `result_ttl` and swept by `reap` after it.
pub async fn result_ttl_sweeps_finished_jobs<B: Broker + ResultStore>(backend: Arc<B>) {
    let q = "ttl";
    let mut j = job(q, T0);
    j.result_ttl = Some(Duration::from_secs(60));
    let id = j.id;
    enqueue(&*backend, vec![j], T0).await;
    let c = claim_only(&*backend, q, id, T0).await;
    let finished = T0 + 100;
    assert!(complete(&*backend, lease(&c), success(&json!("kept")), finished).await);

    let early = backend
        .reap(finished + 59_999)
        .await
        .expect("reap should succeed");
    assert_eq!(
        early.swept, 0,
        "nothing should be swept before the result's ttl"
    );
    assert!(
        exists(&*backend, id).await,
        "the result is kept until its ttl"
    );
    let due = backend
        .reap(finished + 60_000)
        .await
        .expect("reap should succeed");
    assert!(
        due.swept >= 1,
        "reap at finished_at + ttl should sweep the record"
    );
    assert!(
        !exists(&*backend, id).await,
        "the record should be gone once its ttl passed"
    );
}

/// A job that keeps no result (`result_ttl: None`) leaves no record when it succeeds; when
/// it dies it is still kept as a dead letter.
pub async fn ignored_result_leaves_no_row<B: Broker + ResultStore>(backend: Arc<B>) {
    let q = "ignored";
    let mut ok = job(q, T0);
    ok.result_ttl = None;
    let mut bad = job(q, T0);
    bad.result_ttl = None;
    let (ok_id, bad_id) = (ok.id, bad.id);
    enqueue(&*backend, vec![ok, bad], T0).await;
    let c = claim_only(&*backend, q, ok_id, T0).await;
    assert!(
        complete(
            &*backend,
            lease(&c),
            Outcome::Succeeded { result: None },
            T0 + 1
        )
        .await
    );
    assert!(
        !exists(&*backend, ok_id).await,
        "a succeeded job that keeps no result should leave no record"
    );

    let c = claim_only(&*backend, q, bad_id, T0 + 2).await;
    let error = ErrorInfo::new("retries_exhausted", "gave up", 1);
    assert!(complete(&*backend, lease(&c), Outcome::Dead { error }, T0 + 3).await);
    assert_eq!(
        info(&*backend, bad_id).await.state,
        JobState::Dead,
        "ignoring results must not lose dead letters"
    );
}

/// This file's cases, for [`suite!`](crate::suite).
#[doc(hidden)]
#[macro_export]
macro_rules! __cases_results {
    ($constructor:expr) => {
        $crate::__suite_cases! {
            $constructor;
            results_are_stored,
            wait_returns_when_completed,
            wait_times_out,
            unknown_job_is_not_found,
            progress_is_visible,
            result_ttl_sweeps_finished_jobs,
            ignored_result_leaves_no_row,
        }
    };
}
