//! Joins (the barrier after a group) and workflow records: what chain, group and chord are
//! built on.

use crate::support::{PATIENCE, T0};
use celeriac_core::backend::{
    JoinArrival, JoinInput, JoinStatus, WorkflowEnd, WorkflowRecord, WorkflowState,
};
use celeriac_core::{Broker, Error, JobId, UnixMs, WorkflowStore};
use std::sync::Arc;
use std::time::Duration;

/// How long the joins of these cases are kept after their last arrival.
const JOIN_TTL: Duration = Duration::from_secs(3600);

/// The output member `index` brings in these cases: JSON text naming it.
fn output(index: u32) -> Vec<u8> {
    format!("{{\"member\":{index}}}").into_bytes()
}

/// Member `index` of a group of `total` arriving at `join` with `input`, at `now`.
async fn arrive<
    B: WorkflowStore
        + celeriac_core::ProcessRegistry
        + celeriac_core::EventLog
        + celeriac_core::History,
>(
    backend: &B,
    join: JobId,
    index: u32,
    total: u32,
    input: JoinInput,
    now: UnixMs,
) -> JoinStatus {
    arrive_kept(backend, join, index, total, input, JOIN_TTL, now).await
}

/// As [`arrive`], with the join kept `ttl` after this arrival.
async fn arrive_kept<
    B: WorkflowStore
        + celeriac_core::ProcessRegistry
        + celeriac_core::EventLog
        + celeriac_core::History,
>(
    backend: &B,
    join: JobId,
    index: u32,
    total: u32,
    input: JoinInput,
    ttl: Duration,
    now: UnixMs,
) -> JoinStatus {
    backend
        .join_arrive(
            JoinArrival {
                join,
                index,
                total,
                input,
                ttl,
            },
            now,
        )
        .await
        .unwrap_or_else(|e| panic!("join_arrive (index {index} of {total}) should succeed: {e}"))
}

/// The outputs of members `0..total`, in index order.
fn outputs(total: u32) -> Vec<Vec<u8>> {
    (0..total).map(output).collect()
}

/// A running workflow record kept `ttl` after it finishes.
fn workflow(ttl: Duration) -> WorkflowRecord {
    WorkflowRecord {
        id: JobId::new(),
        name: "chain(fetch, group(3), report)".to_string(),
        state: WorkflowState::Running,
        result: None,
        error: None,
        created_at: T0,
        finished_at: None,
        ttl,
    }
}

async fn start<
    B: WorkflowStore
        + celeriac_core::ProcessRegistry
        + celeriac_core::EventLog
        + celeriac_core::History,
>(
    backend: &B,
    record: WorkflowRecord,
) {
    backend
        .workflow_start(record)
        .await
        .expect("workflow_start should succeed");
}

async fn finish<
    B: WorkflowStore
        + celeriac_core::ProcessRegistry
        + celeriac_core::EventLog
        + celeriac_core::History,
>(
    backend: &B,
    id: JobId,
    end: WorkflowEnd,
    now: UnixMs,
) -> bool {
    backend
        .workflow_finish(id, end, now)
        .await
        .expect("workflow_finish should succeed")
}

async fn record<
    B: WorkflowStore
        + celeriac_core::ProcessRegistry
        + celeriac_core::EventLog
        + celeriac_core::History,
>(
    backend: &B,
    id: JobId,
) -> Option<WorkflowRecord> {
    backend
        .workflow_get(id)
        .await
        .expect("workflow_get should succeed")
}

/// A join waits until every index arrived, counting each once, and completes with the
/// outputs in index order although they arrived out of order.
pub async fn join_completes_in_index_order<
    B: Broker
        + WorkflowStore
        + celeriac_core::ProcessRegistry
        + celeriac_core::EventLog
        + celeriac_core::History,
>(
    backend: Arc<B>,
) {
    let join = JobId::new();
    let order = [3u32, 0, 4, 1, 2];
    for (n, &index) in order.iter().enumerate() {
        let status = arrive(
            &*backend,
            join,
            index,
            5,
            JoinInput::Output(output(index)),
            T0 + n as i64,
        )
        .await;
        if n + 1 < order.len() {
            assert_eq!(
                status,
                JoinStatus::Waiting {
                    arrived: n as u32 + 1
                },
                "after {} of 5 members (index {index} last) the join should wait",
                n + 1
            );
        } else {
            assert_eq!(
                status,
                JoinStatus::Complete(outputs(5)),
                "the last member completes the join, with the outputs in index order"
            );
        }
    }
    // A one-member group completes on its only arrival.
    assert_eq!(
        arrive(
            &*backend,
            JobId::new(),
            0,
            1,
            JoinInput::Output(output(0)),
            T0
        )
        .await,
        JoinStatus::Complete(vec![output(0)])
    );
    // Joins are apart: another join's arrivals do not count here.
    let other = JobId::new();
    assert_eq!(
        arrive(&*backend, other, 0, 2, JoinInput::Output(output(0)), T0).await,
        JoinStatus::Waiting { arrived: 1 }
    );
}

/// A member delivered twice counts once, and the output it brought first stays.
pub async fn join_counts_a_repeated_index_once<
    B: Broker
        + WorkflowStore
        + celeriac_core::ProcessRegistry
        + celeriac_core::EventLog
        + celeriac_core::History,
>(
    backend: Arc<B>,
) {
    let join = JobId::new();
    assert_eq!(
        arrive(&*backend, join, 1, 3, JoinInput::Output(output(1)), T0).await,
        JoinStatus::Waiting { arrived: 1 }
    );
    assert_eq!(
        arrive(
            &*backend,
            join,
            1,
            3,
            JoinInput::Output(b"\"redelivered\"".to_vec()),
            T0 + 1
        )
        .await,
        JoinStatus::Waiting { arrived: 1 },
        "a repeated index should not be counted again"
    );
    assert_eq!(
        arrive(
            &*backend,
            join,
            1,
            3,
            JoinInput::Failed("the redelivery failed".into()),
            T0 + 2
        )
        .await,
        JoinStatus::Waiting { arrived: 1 },
        "a failure of an index whose output is recorded should change nothing"
    );
    assert_eq!(
        arrive(&*backend, join, 0, 3, JoinInput::Output(output(0)), T0 + 3).await,
        JoinStatus::Waiting { arrived: 2 }
    );
    assert_eq!(
        arrive(&*backend, join, 2, 3, JoinInput::Output(output(2)), T0 + 4).await,
        JoinStatus::Complete(outputs(3)),
        "the join completes with the first output of the repeated index"
    );
}

/// Every arrival after completion (a member delivered again) answers Complete again, with the
/// same outputs, whatever it brings.
pub async fn join_arrivals_after_completion_stay_complete<
    B: Broker
        + WorkflowStore
        + celeriac_core::ProcessRegistry
        + celeriac_core::EventLog
        + celeriac_core::History,
>(
    backend: Arc<B>,
) {
    let join = JobId::new();
    for index in 0..3 {
        arrive(
            &*backend,
            join,
            index,
            3,
            JoinInput::Output(output(index)),
            T0,
        )
        .await;
    }
    for (n, input) in [
        JoinInput::Output(output(0)),
        JoinInput::Output(b"\"late\"".to_vec()),
        JoinInput::Failed("a late failure".into()),
    ]
    .into_iter()
    .enumerate()
    {
        assert_eq!(
            arrive(&*backend, join, 2, 3, input, T0 + 1 + n as i64).await,
            JoinStatus::Complete(outputs(3)),
            "arrival {n} after completion should answer Complete with the same outputs"
        );
    }
}

/// Once a member failed the join reports Failed with the first failure's message; later
/// outputs and a second failure change neither.
pub async fn join_failure_is_first_and_final<
    B: Broker
        + WorkflowStore
        + celeriac_core::ProcessRegistry
        + celeriac_core::EventLog
        + celeriac_core::History,
>(
    backend: Arc<B>,
) {
    let join = JobId::new();
    assert_eq!(
        arrive(&*backend, join, 0, 3, JoinInput::Output(output(0)), T0).await,
        JoinStatus::Waiting { arrived: 1 }
    );
    assert_eq!(
        arrive(
            &*backend,
            join,
            1,
            3,
            JoinInput::Failed("member 1: disk full".into()),
            T0 + 1
        )
        .await,
        JoinStatus::Failed("member 1: disk full".into())
    );
    assert_eq!(
        arrive(
            &*backend,
            join,
            2,
            3,
            JoinInput::Failed("member 2: timeout".into()),
            T0 + 2
        )
        .await,
        JoinStatus::Failed("member 1: disk full".into()),
        "a second failure should not replace the first"
    );
    assert_eq!(
        arrive(&*backend, join, 2, 3, JoinInput::Output(output(2)), T0 + 3).await,
        JoinStatus::Failed("member 1: disk full".into()),
        "a failed join never completes"
    );
    assert_eq!(
        arrive(&*backend, join, 1, 3, JoinInput::Output(output(1)), T0 + 4).await,
        JoinStatus::Failed("member 1: disk full".into()),
        "an output for the failed index does not undo the failure"
    );
}

/// A join of 1,000 members arriving concurrently, a tenth of them delivered twice, completes
/// with every first output in index order; no Waiting count exceeds the total.
pub async fn join_of_a_thousand_concurrent_members<
    B: Broker
        + WorkflowStore
        + celeriac_core::ProcessRegistry
        + celeriac_core::EventLog
        + celeriac_core::History,
>(
    backend: Arc<B>,
) {
    const TOTAL: u32 = 1000;
    let join = JobId::new();
    let mut tasks = Vec::new();
    for index in 0..TOTAL {
        let backend = backend.clone();
        tasks.push(tokio::spawn(async move {
            let mut seen = vec![
                arrive(
                    &*backend,
                    join,
                    index,
                    TOTAL,
                    JoinInput::Output(output(index)),
                    T0,
                )
                .await,
            ];
            if index % 10 == 0 {
                seen.push(
                    arrive(
                        &*backend,
                        join,
                        index,
                        TOTAL,
                        JoinInput::Output(b"\"duplicate\"".to_vec()),
                        T0 + 1,
                    )
                    .await,
                );
            }
            seen
        }));
    }
    let expected = outputs(TOTAL);
    let mut completes = 0;
    for task in tasks {
        for status in task.await.expect("an arriving task should not panic") {
            match status {
                JoinStatus::Waiting { arrived } => assert!(
                    (1..TOTAL).contains(&arrived),
                    "a waiting join counts between 1 and {} members, not {arrived}",
                    TOTAL - 1
                ),
                JoinStatus::Complete(got) => {
                    completes += 1;
                    assert!(
                        got == expected,
                        "a complete join should hold the 1,000 first outputs in index order \
                         (got {} outputs)",
                        got.len()
                    );
                }
                JoinStatus::Failed(m) => panic!("no member failed, yet the join reports {m:?}"),
            }
        }
    }
    assert!(completes >= 1, "some arrival should see the join complete");
    assert_eq!(
        arrive(
            &*backend,
            join,
            999,
            TOTAL,
            JoinInput::Output(output(999)),
            T0 + 2
        )
        .await,
        JoinStatus::Complete(expected),
        "after every member arrived the join answers Complete"
    );
}

/// A join is kept its ttl after its last arrival; once that passed it is gone, and an
/// arrival starts it anew.
pub async fn join_expires_after_its_ttl<
    B: Broker
        + WorkflowStore
        + celeriac_core::ProcessRegistry
        + celeriac_core::EventLog
        + celeriac_core::History,
>(
    backend: Arc<B>,
) {
    let ttl = Duration::from_secs(60);
    let join = JobId::new();
    assert_eq!(
        arrive_kept(&*backend, join, 0, 3, JoinInput::Output(output(0)), ttl, T0).await,
        JoinStatus::Waiting { arrived: 1 }
    );
    // Just before the ttl ran out: kept, and this arrival keeps it another ttl.
    let later = T0 + 59_999;
    assert_eq!(
        arrive_kept(
            &*backend,
            join,
            1,
            3,
            JoinInput::Output(output(1)),
            ttl,
            later
        )
        .await,
        JoinStatus::Waiting { arrived: 2 },
        "a join is kept for its ttl after the last arrival"
    );
    backend
        .reap(later + 59_999)
        .await
        .expect("reap should succeed");
    assert_eq!(
        arrive_kept(
            &*backend,
            join,
            1,
            3,
            JoinInput::Output(output(1)),
            ttl,
            later + 59_999
        )
        .await,
        JoinStatus::Waiting { arrived: 2 },
        "a reap before the ttl ran out keeps the join"
    );
    // The last arrival was at later + 59_999: at + ttl the join is gone.
    let gone = later + 59_999 + 60_000;
    backend.reap(gone).await.expect("reap should succeed");
    assert_eq!(
        arrive_kept(
            &*backend,
            join,
            2,
            3,
            JoinInput::Output(output(2)),
            ttl,
            gone
        )
        .await,
        JoinStatus::Waiting { arrived: 1 },
        "a join whose ttl ran out is gone: this arrival starts it anew"
    );
    // The same without a reap in between: the expiry holds on access too.
    let failed = JobId::new();
    assert_eq!(
        arrive_kept(
            &*backend,
            failed,
            0,
            2,
            JoinInput::Failed("boom".into()),
            ttl,
            T0
        )
        .await,
        JoinStatus::Failed("boom".into())
    );
    assert_eq!(
        arrive_kept(
            &*backend,
            failed,
            1,
            2,
            JoinInput::Output(output(1)),
            ttl,
            T0 + 60_000
        )
        .await,
        JoinStatus::Waiting { arrived: 1 },
        "an expired failed join is gone too"
    );
}

/// A second start of a workflow changes nothing, not even a finished record.
pub async fn workflow_start_is_idempotent<
    B: Broker
        + WorkflowStore
        + celeriac_core::ProcessRegistry
        + celeriac_core::EventLog
        + celeriac_core::History,
>(
    backend: Arc<B>,
) {
    let rec = workflow(JOIN_TTL);
    let id = rec.id;
    start(&*backend, rec.clone()).await;
    assert_eq!(
        record(&*backend, id).await,
        Some(rec.clone()),
        "a started workflow is running, as stored"
    );
    let mut again = rec.clone();
    again.name = "something else".into();
    again.created_at = T0 + 5;
    start(&*backend, again.clone()).await;
    assert_eq!(
        record(&*backend, id).await,
        Some(rec.clone()),
        "a second start keeps the first record"
    );
    assert!(
        finish(
            &*backend,
            id,
            WorkflowEnd::Succeeded(b"42".to_vec()),
            T0 + 10
        )
        .await
    );
    start(&*backend, again).await;
    let kept = record(&*backend, id).await.expect("the record is kept");
    assert_eq!(
        kept.state,
        WorkflowState::Succeeded,
        "a start does not reset a finished workflow"
    );
    assert_eq!(kept.result, Some(b"42".to_vec()));
    assert_eq!(kept.name, rec.name);
    assert_eq!(kept.created_at, T0);
}

/// Only the first end of a workflow applies; a second one is refused and the record keeps
/// the first. Unknown workflows are None, and finishing one applies nothing.
pub async fn workflow_finish_applies_once<
    B: Broker
        + WorkflowStore
        + celeriac_core::ProcessRegistry
        + celeriac_core::EventLog
        + celeriac_core::History,
>(
    backend: Arc<B>,
) {
    let ok = workflow(JOIN_TTL);
    let ok_id = ok.id;
    start(&*backend, ok).await;
    assert!(
        finish(
            &*backend,
            ok_id,
            WorkflowEnd::Succeeded(b"{\"total\":6}".to_vec()),
            T0 + 100
        )
        .await,
        "the first end applies"
    );
    assert!(
        !finish(
            &*backend,
            ok_id,
            WorkflowEnd::Failed("too late".into()),
            T0 + 200
        )
        .await,
        "a second end is refused"
    );
    let got = record(&*backend, ok_id).await.expect("the record is kept");
    assert_eq!(got.state, WorkflowState::Succeeded);
    assert_eq!(got.result, Some(b"{\"total\":6}".to_vec()));
    assert_eq!(got.error, None);
    assert_eq!(got.finished_at, Some(T0 + 100));
    assert_eq!(got.ttl, JOIN_TTL);

    let bad = workflow(JOIN_TTL);
    let bad_id = bad.id;
    start(&*backend, bad).await;
    assert!(
        finish(
            &*backend,
            bad_id,
            WorkflowEnd::Failed("step 2: boom".into()),
            T0 + 7
        )
        .await
    );
    assert!(
        !finish(
            &*backend,
            bad_id,
            WorkflowEnd::Succeeded(b"1".to_vec()),
            T0 + 8
        )
        .await
    );
    let got = record(&*backend, bad_id).await.expect("the record is kept");
    assert_eq!(got.state, WorkflowState::Failed);
    assert_eq!(got.error.as_deref(), Some("step 2: boom"));
    assert_eq!(got.result, None);
    assert_eq!(got.finished_at, Some(T0 + 7));

    let unknown = JobId::new();
    assert_eq!(record(&*backend, unknown).await, None);
    assert!(
        !finish(
            &*backend,
            unknown,
            WorkflowEnd::Succeeded(b"1".to_vec()),
            T0
        )
        .await,
        "finishing an unknown workflow applies nothing"
    );
    assert_eq!(
        record(&*backend, unknown).await,
        None,
        "finishing an unknown workflow creates no record"
    );
}

/// A waiter returns when another task finishes the workflow, well before its timeout.
pub async fn workflow_wait_returns_when_finished<
    B: Broker
        + WorkflowStore
        + celeriac_core::ProcessRegistry
        + celeriac_core::EventLog
        + celeriac_core::History,
>(
    backend: Arc<B>,
) {
    let rec = workflow(JOIN_TTL);
    let id = rec.id;
    start(&*backend, rec).await;
    let waiter = {
        let backend = backend.clone();
        tokio::spawn(async move { backend.workflow_wait(id, PATIENCE).await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        !waiter.is_finished(),
        "the waiter should wait while the workflow runs"
    );
    assert!(
        finish(
            &*backend,
            id,
            WorkflowEnd::Succeeded(b"\"done\"".to_vec()),
            T0 + 1
        )
        .await
    );
    let got = tokio::time::timeout(PATIENCE, waiter)
        .await
        .expect("the waiter should return soon after the finish")
        .expect("the waiting task should not panic")
        .expect("workflow_wait should return the finished record");
    assert_eq!(got.state, WorkflowState::Succeeded);
    assert_eq!(got.result, Some(b"\"done\"".to_vec()));
    // A finished workflow is returned at once.
    let again = backend
        .workflow_wait(id, Duration::from_millis(1))
        .await
        .expect("waiting on a finished workflow returns it");
    assert_eq!(again.state, WorkflowState::Succeeded);
}

/// Waiting on an unknown workflow is NotFound.
pub async fn workflow_wait_on_unknown_is_not_found<
    B: Broker
        + WorkflowStore
        + celeriac_core::ProcessRegistry
        + celeriac_core::EventLog
        + celeriac_core::History,
>(
    backend: Arc<B>,
) {
    match backend
        .workflow_wait(JobId::new(), Duration::from_secs(1))
        .await
    {
        Err(Error::NotFound(_)) => {}
        other => panic!("waiting on an unknown workflow should be NotFound, got {other:?}"),
    }
}

/// Waiting on a workflow that keeps running ends with Timeout.
pub async fn workflow_wait_times_out<
    B: Broker
        + WorkflowStore
        + celeriac_core::ProcessRegistry
        + celeriac_core::EventLog
        + celeriac_core::History,
>(
    backend: Arc<B>,
) {
    let rec = workflow(JOIN_TTL);
    let id = rec.id;
    start(&*backend, rec).await;
    let began = tokio::time::Instant::now();
    match backend.workflow_wait(id, Duration::from_millis(300)).await {
        Err(Error::Timeout(_)) => {}
        other => panic!("waiting on a running workflow should time out, got {other:?}"),
    }
    assert!(
        began.elapsed() >= Duration::from_millis(300),
        "the wait should last its timeout"
    );
    assert_eq!(
        record(&*backend, id).await.map(|r| r.state),
        Some(WorkflowState::Running)
    );
}

/// A finished record is gone once its ttl passed (a reap sweeps it where the store needs
/// one); a running record is kept however late it is.
///
/// The ttl is one real second, because Redis expires keys on its own clock.
pub async fn finished_workflow_expires_after_its_ttl<
    B: Broker
        + WorkflowStore
        + celeriac_core::ProcessRegistry
        + celeriac_core::EventLog
        + celeriac_core::History,
>(
    backend: Arc<B>,
) {
    let ttl = Duration::from_secs(1);
    let running = workflow(ttl);
    let running_id = running.id;
    start(&*backend, running).await;
    let done = workflow(ttl);
    let done_id = done.id;
    start(&*backend, done).await;
    let finished = T0 + 500;
    assert!(
        finish(
            &*backend,
            done_id,
            WorkflowEnd::Succeeded(b"1".to_vec()),
            finished
        )
        .await
    );
    assert!(
        record(&*backend, done_id).await.is_some(),
        "a finished record is kept for its ttl"
    );
    backend
        .reap(finished + 999)
        .await
        .expect("reap should succeed");
    assert!(
        record(&*backend, done_id).await.is_some(),
        "a reap before the ttl ran out keeps the record"
    );
    tokio::time::sleep(ttl + Duration::from_millis(300)).await;
    backend
        .reap(finished + 1_000)
        .await
        .expect("reap should succeed");
    assert_eq!(
        record(&*backend, done_id).await,
        None,
        "a finished record is gone after its ttl"
    );
    backend
        .reap(T0 + 365 * 24 * 3600 * 1000)
        .await
        .expect("reap should succeed");
    assert_eq!(
        record(&*backend, running_id).await.map(|r| r.state),
        Some(WorkflowState::Running),
        "a running record is never swept"
    );
}

/// This file's cases, for [`suite!`](crate::suite).
#[doc(hidden)]
#[macro_export]
macro_rules! __cases_workflows_store {
    ($constructor:expr) => {
        $crate::__suite_cases! {
            $constructor;
            join_completes_in_index_order,
            join_counts_a_repeated_index_once,
            join_arrivals_after_completion_stay_complete,
            join_failure_is_first_and_final,
            join_of_a_thousand_concurrent_members,
            join_expires_after_its_ttl,
            workflow_start_is_idempotent,
            workflow_finish_applies_once,
            workflow_wait_returns_when_finished,
            workflow_wait_on_unknown_is_not_found,
            workflow_wait_times_out,
            finished_workflow_expires_after_its_ttl,
        }
    };
}
