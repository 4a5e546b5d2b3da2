//! Workflows run by a worker: chains feed results forward, groups collect them in order,
//! a chord's callback runs once even when a member is delivered twice, maps fan out over a
//! list, and failures stop the workflow, run its error handler and name the step.

use crate::support::{claim, info, Add, RunningWorker, PATIENCE, T0};
use celeriac_core::backend::WorkflowState;
use celeriac_core::workflow::{end_step, StepEnd};
use celeriac_core::{
    chain, chord, group, map, Client, Flow, JobId, JobState, ManualClock, Registry, ResultStore,
    Step, Task, TaskContext, TaskError, TaskOptions,
};
use serde_json::{json, Value};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

const Q: &str = "default";

/// Doubles a number, after a pause that makes later members of a group finish first.
struct Double;
impl Task for Double {
    const NAME: &'static str = "wf.double";
    type Args = i64;
    type Output = i64;
    async fn run(_: TaskContext, x: i64) -> Result<i64, TaskError> {
        let pause = 30u64.saturating_sub(u64::try_from(x).unwrap_or(0) * 3);
        tokio::time::sleep(Duration::from_millis(pause)).await;
        Ok(x * 2)
    }
}

/// The numbers `0..n`.
struct Range;
impl Task for Range {
    const NAME: &'static str = "wf.range";
    type Args = i64;
    type Output = Vec<i64>;
    async fn run(_: TaskContext, n: i64) -> Result<Vec<i64>, TaskError> {
        Ok((0..n).collect())
    }
}

/// How many times [`Sum`] ran in this test process.
static SUM_RUNS: AtomicU64 = AtomicU64::new(0);

/// Sums a list, counting its runs.
struct Sum;
impl Task for Sum {
    const NAME: &'static str = "wf.sum";
    type Args = Vec<i64>;
    type Output = i64;
    async fn run(_: TaskContext, xs: Vec<i64>) -> Result<i64, TaskError> {
        SUM_RUNS.fetch_add(1, Ordering::SeqCst);
        Ok(xs.iter().sum())
    }
}

/// Fails for good.
struct Refuse;
impl Task for Refuse {
    const NAME: &'static str = "wf.refuse";
    type Args = Value;
    type Output = ();
    async fn run(_: TaskContext, _: Value) -> Result<(), TaskError> {
        Err(TaskError::fatal("the partner said no"))
    }
}

/// Fails with a retryable error, once only: it ends dead.
struct Flaky;
impl Task for Flaky {
    const NAME: &'static str = "wf.flaky";
    type Args = i64;
    type Output = i64;
    fn options() -> TaskOptions {
        TaskOptions {
            max_attempts: 1,
            ..TaskOptions::default()
        }
    }
    async fn run(_: TaskContext, _: i64) -> Result<i64, TaskError> {
        Err(TaskError::msg("connection reset"))
    }
}

/// Records what it was given as its result.
struct Record;
impl Task for Record {
    const NAME: &'static str = "wf.record";
    type Args = Value;
    type Output = Value;
    async fn run(_: TaskContext, v: Value) -> Result<Value, TaskError> {
        Ok(v)
    }
}

fn registry() -> Registry {
    let mut r = Registry::new();
    r.register::<Add>()
        .register::<Double>()
        .register::<Range>()
        .register::<Sum>()
        .register::<Refuse>()
        .register::<Flaky>()
        .register::<Record>();
    r
}

struct Harness<B: celeriac_core::WorkerStore> {
    backend: Arc<B>,
    client: Client<B>,
    worker: RunningWorker,
}

fn harness<B: celeriac_core::WorkerStore>(backend: Arc<B>) -> Harness<B> {
    let clock = ManualClock::new(T0);
    let client = Client::with_clock(backend.clone(), Arc::new(clock.clone()));
    let worker = RunningWorker::start(backend.clone(), registry(), Q, &clock);
    Harness {
        backend,
        client,
        worker,
    }
}

async fn run_to_end<B: celeriac_core::WorkerStore>(
    h: &Harness<B>,
    flow: Flow,
) -> celeriac_core::backend::WorkflowRecord {
    let handle = flow.start(&h.client).await.expect("the workflow starts");
    handle
        .wait(PATIENCE)
        .await
        .expect("the workflow should end within the patience period")
}

/// A chain passes each step's output to the next; every job carries the workflow's id.
pub async fn workflow_chain_feeds_each_result_forward<B>(backend: Arc<B>)
where
    B: celeriac_core::WorkerStore,
{
    let h = harness(backend);
    let flow = chain([
        Step::of::<Add>((2, 3)).into(),
        Step::piped::<Double>().into(),
        Step::piped::<Double>().into(),
    ]);
    let handle = flow.start(&h.client).await.expect("the workflow starts");
    let rec = handle.wait(PATIENCE).await.expect("it ends");
    assert_eq!(rec.state, WorkflowState::Succeeded, "{rec:?}");
    assert_eq!(
        handle.result::<i64>(PATIENCE).await.expect("a result"),
        20,
        "(2 + 3) * 2 * 2"
    );
    assert_eq!(rec.name, "chain(conformance.add, wf.double, wf.double)");
    let first = h
        .backend
        .wait(handle.id().derive("r.0"), PATIENCE)
        .await
        .expect("the first step ends");
    assert_eq!(first.state, JobState::Succeeded);
    assert_eq!(first.job.root_id, Some(handle.id()));
    assert_eq!(first.result_as::<i64>().expect("decodes"), Some(5));
    h.worker.stop().await;
}

/// A group runs its members in parallel and collects their outputs in member order, even
/// when later members finish first.
pub async fn workflow_group_collects_results_in_order<B>(backend: Arc<B>)
where
    B: celeriac_core::WorkerStore,
{
    let h = harness(backend);
    let flow = group((0..8).map(|i| Step::of::<Double>(i).into()));
    let rec = run_to_end(&h, flow).await;
    assert_eq!(rec.state, WorkflowState::Succeeded, "{rec:?}");
    let out: Vec<i64> = serde_json::from_slice(rec.result.as_deref().unwrap_or_default())
        .expect("a list of numbers");
    assert_eq!(out, vec![0, 2, 4, 6, 8, 10, 12, 14]);
    h.worker.stop().await;
}

/// A chord's callback runs exactly once with every member's output, and a member that is
/// delivered again after the chord completed does not enqueue the callback again.
pub async fn workflow_chord_callback_runs_once<B>(backend: Arc<B>)
where
    B: celeriac_core::WorkerStore,
{
    let h = harness(backend);
    SUM_RUNS.store(0, Ordering::SeqCst);
    let flow = chord(
        (1..=20).map(|i| Step::of::<Double>(i).into()),
        Step::piped::<Sum>(),
    );
    let handle = flow.start(&h.client).await.expect("the workflow starts");
    let total: i64 = handle.result(PATIENCE).await.expect("the chord ends");
    assert_eq!(total, 2 * (1..=20).sum::<i64>());
    assert_eq!(SUM_RUNS.load(Ordering::SeqCst), 1, "the callback ran once");
    h.worker.stop().await;

    // Deliver two members again, as a worker that lost its lease would: the join counts
    // them once and the callback's id is the one already enqueued.
    for i in [0, 19] {
        let member = info(&*h.backend, handle.member_id(i)).await;
        assert_eq!(member.state, JobState::Succeeded);
        let out = member
            .result_as::<Value>()
            .expect("decodes")
            .unwrap_or(Value::Null);
        end_step(&*h.backend, &member.job, StepEnd::Output(out), T0 + 1)
            .await
            .expect("continuing again succeeds");
    }
    assert!(
        claim(&*h.backend, &[Q], 100, T0 + 2).await.is_empty(),
        "no second callback was enqueued"
    );
    let rec = handle.info().await.expect("the record");
    assert_eq!(rec.state, WorkflowState::Succeeded);
    assert_eq!(SUM_RUNS.load(Ordering::SeqCst), 1);
}

/// `map` fans a step out over the previous output, an empty list included.
pub async fn workflow_map_fans_out_over_a_list<B>(backend: Arc<B>)
where
    B: celeriac_core::WorkerStore,
{
    let h = harness(backend);
    let over = |n: i64| {
        chain([
            Step::of::<Range>(n).into(),
            map(Step::piped::<Double>()),
            Step::piped::<Sum>().into(),
        ])
    };
    let rec = run_to_end(&h, over(6)).await;
    assert_eq!(rec.state, WorkflowState::Succeeded, "{rec:?}");
    assert_eq!(rec.result.as_deref(), Some(&b"30"[..]), "2 * (0+1+..+5)");
    let rec = run_to_end(&h, over(0)).await;
    assert_eq!(rec.state, WorkflowState::Succeeded, "{rec:?}");
    assert_eq!(
        rec.result.as_deref(),
        Some(&b"0"[..]),
        "an empty map sums to 0"
    );
    h.worker.stop().await;
}

/// Parts nest: a group of chains inside a chain, a chord inside a group.
pub async fn workflow_parts_nest<B>(backend: Arc<B>)
where
    B: celeriac_core::WorkerStore,
{
    let h = harness(backend);
    let flow = chain([
        Step::of::<Add>((1, 1)).into(),
        group([
            chain([
                Step::piped::<Double>().into(),
                Step::piped::<Double>().into(),
            ]),
            chord(
                [
                    Step::piped::<Double>().into(),
                    Step::of::<Add>((10, 0)).into(),
                ],
                Step::piped::<Sum>(),
            ),
            Step::piped::<Record>().into(),
        ]),
        Step::piped::<Record>().into(),
    ]);
    let rec = run_to_end(&h, flow).await;
    assert_eq!(rec.state, WorkflowState::Succeeded, "{rec:?}");
    let out: Value =
        serde_json::from_slice(rec.result.as_deref().unwrap_or_default()).expect("JSON");
    assert_eq!(out, json!([8, 14, 2]), "[2*2*2, 2*2 + 10, 2]");
    h.worker.stop().await;
}

/// A failing step stops its chain (the next step never runs), runs the error handler with a
/// description of the failure, and fails the workflow naming the step.
pub async fn workflow_failing_step_stops_the_chain<B>(backend: Arc<B>)
where
    B: celeriac_core::WorkerStore,
{
    let h = harness(backend);
    let flow = chain([
        Step::of::<Add>((1, 2)).into(),
        Step::piped::<Refuse>().into(),
        Step::piped::<Double>().into(),
    ])
    .on_error(Step::piped::<Record>());
    let handle = flow.start(&h.client).await.expect("the workflow starts");
    let rec = handle.wait(PATIENCE).await.expect("it ends");
    assert_eq!(rec.state, WorkflowState::Failed, "{rec:?}");
    let error = rec.error.clone().unwrap_or_default();
    assert!(
        error.contains("`wf.refuse`") && error.contains("the partner said no"),
        "the error names the step and its error: {error}"
    );
    let err = handle.result::<i64>(PATIENCE).await.expect_err("failed");
    assert!(err.to_string().contains("wf.refuse"), "{err}");
    // The step after the failure was never enqueued.
    let refused = handle.id().derive("r.0").derive("n.0");
    // The workflow ends before the step's own acknowledgement lands: wait for that too.
    let step = h
        .backend
        .wait(refused, PATIENCE)
        .await
        .expect("the step ends");
    assert_eq!(step.state, JobState::Failed);
    assert!(
        h.backend
            .get(refused.derive("n"))
            .await
            .expect("get")
            .is_none(),
        "the step after the failure never ran"
    );
    // The handler ran once with what failed.
    let handler = wait_for_task(&*h.backend, refused, "wf.record").await;
    let about = handler
        .result_as::<Value>()
        .expect("decodes")
        .unwrap_or_default();
    assert_eq!(about["task"], "wf.refuse");
    assert_eq!(about["workflow"], handle.id().to_string());
    assert!(about["error"]
        .as_str()
        .unwrap_or_default()
        .contains("the partner said no"));
    h.worker.stop().await;
}

/// A chord member that ends dead fails the chord with an error naming the member; the
/// callback never runs.
pub async fn workflow_dead_member_fails_the_chord<B>(backend: Arc<B>)
where
    B: celeriac_core::WorkerStore,
{
    let h = harness(backend);
    SUM_RUNS.store(0, Ordering::SeqCst);
    let mut members: Vec<Flow> = (0..5).map(|i| Step::of::<Double>(i).into()).collect();
    members[3] = Step::of::<Flaky>(3).into();
    let rec = run_to_end(&h, chord(members, Step::piped::<Sum>())).await;
    assert_eq!(rec.state, WorkflowState::Failed, "{rec:?}");
    let error = rec.error.unwrap_or_default();
    assert!(
        error.contains("member 3 of 5") && error.contains("`wf.flaky`") && error.contains("dead"),
        "the error names the member: {error}"
    );
    // Let the other members finish; the callback must still not run.
    for i in [0, 1, 2, 4] {
        let id = rec.id.derive(&format!("r.{i}"));
        let done = h.backend.wait(id, PATIENCE).await.expect("the member ends");
        assert_eq!(done.state, JobState::Succeeded);
    }
    assert_eq!(SUM_RUNS.load(Ordering::SeqCst), 0, "the callback never ran");
    h.worker.stop().await;
}

/// A workflow is running until its last step ends; starting it twice under one id runs it
/// once; bad definitions are refused before anything is stored.
pub async fn workflow_status_and_bad_definitions<B>(backend: Arc<B>)
where
    B: celeriac_core::WorkerStore,
{
    let clock = ManualClock::new(T0);
    let client = Client::with_clock(backend.clone(), Arc::new(clock.clone()));
    let id = JobId::new();
    let flow = chain([
        Step::of::<Add>((1, 2)).into(),
        Step::piped::<Double>().into(),
    ]);
    let handle = flow
        .clone()
        .start_with_id(&client, id)
        .await
        .expect("starts");
    flow.start_with_id(&client, id).await.expect("starts again");
    let rec = handle.info().await.expect("a record");
    assert_eq!(rec.state, WorkflowState::Running);
    assert_eq!(
        claim(&*backend, &[Q], 10, T0).await.len(),
        1,
        "starting twice enqueued the first step once"
    );
    let err = handle
        .wait(Duration::from_millis(50))
        .await
        .expect_err("nothing runs it");
    assert!(matches!(err, celeriac_core::Error::Timeout(_)), "{err}");

    let bad = chain([Step::piped::<Double>().into()]);
    let err = bad.start(&client).await.expect_err("refused").to_string();
    assert!(err.contains("`wf.double`"), "{err}");
    assert!(claim(&*backend, &[Q], 10, T0).await.is_empty());
}

/// Waits for the job of `task` derived from `origin` as an error handler.
async fn wait_for_task<B: ResultStore>(
    backend: &B,
    origin: JobId,
    task: &str,
) -> celeriac_core::JobInfo {
    // The handler of a chain guarded as a whole sits two frames below the failed step.
    for depth in 1..=4 {
        let id = origin.derive(&format!("e{depth}"));
        if backend.get(id).await.expect("get").is_some() {
            let done = backend.wait(id, PATIENCE).await.expect("the handler ends");
            assert_eq!(done.job.task, task);
            return done;
        }
    }
    panic!("no error handler `{task}` was enqueued for {origin}");
}

/// Steps the store ends on its own also end their workflow: a waiting step cancelled through
/// the client, and a step whose lease ran out with no attempts left (reaped by a worker).
pub async fn workflow_steps_ended_by_the_store_fail_it<B>(backend: Arc<B>)
where
    B: celeriac_core::WorkerStore,
{
    let clock = ManualClock::new(T0);
    let client = Client::with_clock(backend.clone(), Arc::new(clock.clone()));
    let two_steps = || {
        chain([
            Step::of::<Add>((1, 2)).max_attempts(1).into(),
            Step::piped::<Double>().into(),
        ])
    };

    let cancelled = two_steps().start(&client).await.expect("starts");
    let first = cancelled.id().derive("r.0");
    assert_eq!(
        client.cancel(first).await.expect("cancel"),
        celeriac_core::CancelOutcome::Cancelled
    );
    let rec = cancelled.info().await.expect("the record");
    assert_eq!(rec.state, WorkflowState::Failed, "{rec:?}");
    assert!(
        rec.error
            .as_deref()
            .unwrap_or_default()
            .contains("cancelled"),
        "{rec:?}"
    );

    let abandoned = two_steps().start(&client).await.expect("starts");
    let first = abandoned.id().derive("r.0");
    let held = claim(&*backend, &[Q], 1, T0).await;
    assert_eq!(
        held.len(),
        1,
        "the first step is claimed and then abandoned"
    );
    assert_eq!(held[0].job.id, first);
    // A worker whose clock is past the lease reaps it: no attempts are left, so it is dead.
    clock.set(T0 + crate::support::LEASE_MS + 1);
    let worker = RunningWorker::start(backend.clone(), registry(), Q, &clock);
    let rec = abandoned.wait(PATIENCE).await.expect("the workflow ends");
    assert_eq!(rec.state, WorkflowState::Failed, "{rec:?}");
    let error = rec.error.unwrap_or_default();
    assert!(
        error.contains("`conformance.add`") && error.contains("lease_expired"),
        "{error}"
    );
    worker.stop().await;
}

/// This file's cases, for [`suite!`](crate::suite).
#[doc(hidden)]
#[macro_export]
macro_rules! __cases_workflows_runs {
    ($constructor:expr) => {
        $crate::__suite_cases! {
            $constructor;
            workflow_chain_feeds_each_result_forward,
            workflow_group_collects_results_in_order,
            workflow_chord_callback_runs_once,
            workflow_map_fans_out_over_a_list,
            workflow_parts_nest,
            workflow_failing_step_stops_the_chain,
            workflow_dead_member_fails_the_chord,
            workflow_status_and_bad_definitions,
            workflow_steps_ended_by_the_store_fail_it,
        }
    };
}
