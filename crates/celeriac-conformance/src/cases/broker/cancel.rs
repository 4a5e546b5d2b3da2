//! Cancellation: waiting jobs never run, running ones are asked to stop, and a job asked to
//! stop never comes back.

use crate::support::{
    claim, claim_only, complete, delayed, enqueue, info, job, lease, RunningWorker, LEASE_MS, NOOP,
    PATIENCE, T0,
};
use celeriac_core::backend::{CancelOutcome, CancelReport, EndedJob, Outcome};
use celeriac_core::workflow::FLOW_HEADER;
use celeriac_core::{
    ErrorInfo, JobId, JobState, ManualClock, Registry, Task, TaskContext, TaskError,
};
use std::sync::Arc;

/// A pending, a scheduled and a retrying job are cancelled at once and never claimed; each
/// cancel reports the job it ended with its task and workflow header, and a cancel that ends
/// nothing reports no job.
pub async fn cancel_waiting_jobs_never_run<B: celeriac_core::WorkerStore>(backend: Arc<B>) {
    let q = "cancel-waiting";
    let mut pending = job(q, T0);
    // The store keeps the header as it is: it need not be a real continuation here.
    pending
        .headers
        .insert(FLOW_HEADER.to_string(), "step of the pending job".into());
    let later = delayed(q, T0, T0 + 5_000);
    let retrying = job(q, T0);
    let keep = job(q, T0);
    let (p, l, r, k) = (pending.id, later.id, retrying.id, keep.id);
    enqueue(&*backend, vec![retrying], T0).await;
    let c = claim_only(&*backend, q, r, T0).await;
    let error = ErrorInfo::new("error", "try again", 1);
    let at = T0 + 1_000;
    assert!(complete(&*backend, lease(&c), Outcome::Retry { at, error }, T0).await);
    enqueue(&*backend, vec![pending, later, keep], T0).await;

    for id in [p, l, r] {
        let report = backend.cancel(id, T0 + 1).await.expect("cancel succeeds");
        assert_eq!(report.outcome, CancelOutcome::Cancelled, "job {id}");
        let flow = (id == p).then(|| "step of the pending job".to_string());
        assert_eq!(
            report.ended,
            Some(EndedJob {
                id,
                task: NOOP.to_string(),
                state: JobState::Cancelled,
                error: None,
                flow,
            }),
            "the cancel reports the job it ended"
        );
        let i = info(&*backend, id).await;
        assert_eq!(i.state, JobState::Cancelled, "job {id}");
        assert_eq!(i.job.finished_at, Some(T0 + 1));
    }
    let got = claim(&*backend, &[q], 10, T0 + 10_000).await;
    let ids: Vec<JobId> = got.iter().map(|c| c.job.id).collect();
    assert_eq!(ids, vec![k], "only the job nobody cancelled runs");
    assert_eq!(
        backend.cancel(p, T0 + 2).await.expect("cancel succeeds"),
        CancelReport {
            outcome: CancelOutcome::AlreadyFinished(JobState::Cancelled),
            ended: None,
        },
        "a cancel that ends nothing reports no job"
    );
    assert_eq!(
        backend
            .cancel(JobId::new(), T0)
            .await
            .expect("cancel succeeds"),
        CancelReport {
            outcome: CancelOutcome::NotFound,
            ended: None,
        }
    );
}

/// A running job is flagged, reported to its worker, and ends as cancelled; a retry it asks
/// for after that does not happen.
pub async fn cancel_running_job_is_reported_and_never_retried<B: celeriac_core::WorkerStore>(
    backend: Arc<B>,
) {
    let q = "cancel-running";
    let (a, b) = (job(q, T0), job(q, T0));
    let (ia, ib) = (a.id, b.id);
    enqueue(&*backend, vec![a, b], T0).await;
    let got = claim(&*backend, &[q], 2, T0).await;
    assert_eq!(got.len(), 2);
    let leases: Vec<_> = got.iter().map(lease).collect();
    assert!(backend
        .cancel_requested(leases.clone())
        .await
        .expect("check succeeds")
        .is_empty());

    assert_eq!(
        backend.cancel(ia, T0 + 1).await.expect("cancel succeeds"),
        CancelReport {
            outcome: CancelOutcome::Requested,
            ended: None,
        },
        "a running job is not ended by the cancel itself"
    );
    assert_eq!(
        info(&*backend, ia).await.state,
        JobState::Active,
        "still running"
    );
    let flagged = backend
        .cancel_requested(leases.clone())
        .await
        .expect("check succeeds");
    let flagged_ids: Vec<JobId> = flagged.iter().map(|l| l.id).collect();
    assert_eq!(flagged_ids, vec![ia], "only the cancelled job is reported");

    // The task failed before it noticed: its retry must not happen.
    let la = leases
        .iter()
        .find(|l| l.id == ia)
        .cloned()
        .expect("lease of a");
    let error = ErrorInfo::new("error", "boom", 1);
    assert!(complete(&*backend, la, Outcome::Retry { at: T0 + 2, error }, T0 + 2).await);
    assert_eq!(info(&*backend, ia).await.state, JobState::Cancelled);
    assert!(claim(&*backend, &[q], 10, T0 + 60_000).await.is_empty());

    let lb = leases
        .iter()
        .find(|l| l.id == ib)
        .cloned()
        .expect("lease of b");
    assert!(complete(&*backend, lb, Outcome::Cancelled, T0 + 3).await);
    assert_eq!(info(&*backend, ib).await.state, JobState::Cancelled);
}

/// A cancelled running job whose worker died ends as cancelled when its lease expires,
/// instead of going back to the queue; the reap reports it with its task and workflow header.
pub async fn cancelled_job_with_expired_lease_is_not_redelivered<B: celeriac_core::WorkerStore>(
    backend: Arc<B>,
) {
    let q = "cancel-reap";
    let mut j = job(q, T0);
    j.headers
        .insert(FLOW_HEADER.to_string(), "step of the reaped job".into());
    let id = j.id;
    enqueue(&*backend, vec![j], T0).await;
    claim_only(&*backend, q, id, T0).await;
    assert_eq!(
        backend
            .cancel(id, T0 + 1)
            .await
            .expect("cancel succeeds")
            .outcome,
        CancelOutcome::Requested
    );
    let report = backend
        .reap(T0 + LEASE_MS + 1)
        .await
        .expect("reap succeeds");
    assert_eq!(info(&*backend, id).await.state, JobState::Cancelled);
    assert_eq!(
        report.ended,
        vec![EndedJob {
            id,
            task: NOOP.to_string(),
            state: JobState::Cancelled,
            error: None,
            flow: Some("step of the reaped job".to_string()),
        }],
        "the reap reports the job it ended"
    );
    assert!(claim(&*backend, &[q], 10, T0 + LEASE_MS + 2)
        .await
        .is_empty());
}

/// A task that waits until it is asked to stop.
pub(crate) struct WaitsForCancel;

impl Task for WaitsForCancel {
    const NAME: &'static str = "conformance.waits_for_cancel";
    type Args = ();
    type Output = String;

    async fn run(ctx: TaskContext, _: ()) -> Result<String, TaskError> {
        ctx.cancelled().await;
        Ok("stopped".into())
    }
}

/// A real worker running a job: cancelling it fires the task's token, and the job ends as
/// cancelled (not succeeded, though the task returned normally).
pub async fn worker_stops_a_cancelled_job<B: celeriac_core::WorkerStore>(backend: Arc<B>) {
    let q = "cancel-worker";
    let clock = ManualClock::new(T0);
    let j = celeriac_core::Enqueue::<WaitsForCancel>::new(())
        .queue(q)
        .build(T0)
        .expect("the job builds");
    let id = j.id;
    enqueue(&*backend, vec![j], T0).await;
    let mut registry = Registry::new();
    registry.register::<WaitsForCancel>();
    let worker = RunningWorker::start(backend.clone(), registry, q, &clock);
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while info(&*backend, id).await.state != JobState::Active {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the job never started"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(
        backend
            .cancel(id, T0)
            .await
            .expect("cancel succeeds")
            .outcome,
        CancelOutcome::Requested
    );
    let done = backend.wait(id, PATIENCE).await.expect("the job ends");
    assert_eq!(done.state, JobState::Cancelled);
    assert!(done.result.is_none(), "a cancelled job keeps no result");
    worker.stop().await;
}

/// This file's cases, for [`suite!`](crate::suite).
#[doc(hidden)]
#[macro_export]
macro_rules! __cases_broker_cancel {
    ($constructor:expr) => {
        $crate::__suite_cases! {
            $constructor;
            cancel_waiting_jobs_never_run,
            cancel_running_job_is_reported_and_never_retried,
            cancelled_job_with_expired_lease_is_not_redelivered,
            worker_stops_a_cancelled_job,
        }
    };
}
