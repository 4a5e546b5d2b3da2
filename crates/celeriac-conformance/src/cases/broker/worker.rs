//! The real [`celeriac_core::Worker`] over the backend, on a [`ManualClock`]: retries,
//! dead letters, and the jobs a worker cannot run.

use crate::support::{
    dead_ids, enqueue, eventually, info, job, Add, AlwaysFails, RunningWorker, PATIENCE, T0,
};
use celeriac_core::backend::QueueAdmin;
use celeriac_core::{Broker, Enqueue, JobState, ManualClock, Registry, ResultStore};
use std::sync::Arc;
use std::time::Duration;

/// A task that always fails (backoff 1 s, no jitter, 3 attempts) is retried at exactly
/// failure time + 1 s, then + 2 s, then dead-lettered with a reason naming the attempts.
pub async fn retry_schedule_follows_backoff<
    B: Broker
        + QueueAdmin
        + ResultStore
        + celeriac_core::WorkflowStore
        + celeriac_core::ProcessRegistry
        + celeriac_core::EventLog
        + celeriac_core::History,
>(
    backend: Arc<B>,
) {
    let q = "retry-schedule";
    let clock = ManualClock::new(T0);
    let j = Enqueue::<AlwaysFails>::new("boom".to_string())
        .queue(q)
        .build(T0)
        .expect("the job should build");
    let id = j.id;
    enqueue(&*backend, vec![j], T0).await;
    let mut registry = Registry::new();
    registry.register::<AlwaysFails>();
    let worker = RunningWorker::start(backend.clone(), registry, q, &clock);

    let first = eventually(&*backend, id, "attempt 1 to fail and be retried", |i| {
        i.state == JobState::Retrying && i.job.attempts == 1
    })
    .await;
    assert_eq!(
        first.job.run_at,
        T0 + 1_000,
        "the first retry should be due one second after the failure"
    );
    let error = first.error.expect("a retrying job shows its error");
    assert_eq!(error.kind, "error");
    assert_eq!(error.attempt, 1);
    assert!(
        error.message.contains("boom"),
        "the task's message is kept: {error}"
    );

    clock.advance(Duration::from_secs(1));
    let second = eventually(&*backend, id, "attempt 2 to fail and be retried", |i| {
        i.state == JobState::Retrying && i.job.attempts == 2
    })
    .await;
    assert_eq!(
        second.job.run_at,
        T0 + 1_000 + 2_000,
        "the second retry should be due two seconds after the second failure"
    );

    clock.advance(Duration::from_secs(2));
    let dead = eventually(&*backend, id, "attempt 3 to fail for good", |i| {
        i.state.is_terminal()
    })
    .await;
    assert_eq!(
        dead.state,
        JobState::Dead,
        "a job out of attempts should be dead"
    );
    assert_eq!(dead.job.attempts, 3);
    assert_eq!(dead.job.finished_at, Some(T0 + 3_000));
    let error = dead.error.expect("a dead job carries its reason");
    assert_eq!(error.kind, "retries_exhausted");
    assert_eq!(error.attempt, 3);
    assert!(
        error.message.contains("boom") && error.message.contains("3 attempts"),
        "the reason should mention the attempts: {error}"
    );
    assert_eq!(dead_ids(&*backend, Some(q)).await, vec![id]);
    worker.stop().await;
}

/// A job whose only attempt fails is dead-lettered by the worker at once, not retried.
pub async fn worker_dead_letters_after_max_attempts<
    B: Broker
        + QueueAdmin
        + ResultStore
        + celeriac_core::WorkflowStore
        + celeriac_core::ProcessRegistry
        + celeriac_core::EventLog
        + celeriac_core::History,
>(
    backend: Arc<B>,
) {
    let q = "max-attempts";
    let clock = ManualClock::new(T0);
    let j = Enqueue::<AlwaysFails>::new("no luck".to_string())
        .queue(q)
        .max_attempts(1)
        .build(T0)
        .expect("the job should build");
    let id = j.id;
    enqueue(&*backend, vec![j], T0).await;
    let mut registry = Registry::new();
    registry.register::<AlwaysFails>();
    let worker = RunningWorker::start(backend.clone(), registry, q, &clock);

    let dead = eventually(&*backend, id, "the only attempt to fail", |i| {
        i.state.is_terminal() || i.state == JobState::Retrying
    })
    .await;
    assert_eq!(
        dead.state,
        JobState::Dead,
        "no attempts left: dead, not retried"
    );
    assert_eq!(dead.job.attempts, 1);
    let error = dead.error.expect("a dead job carries its reason");
    assert_eq!(error.kind, "retries_exhausted");
    assert!(
        error.message.contains("no luck") && error.message.contains("1 attempt"),
        "the reason should keep the message and mention the attempts: {error}"
    );
    assert_eq!(dead_ids(&*backend, None).await, vec![id]);
    worker.stop().await;
}

/// A job for a task this worker does not know goes to the dead letters as `unknown_task`
/// on its first attempt.
pub async fn unknown_task_is_dead_lettered<
    B: Broker
        + QueueAdmin
        + ResultStore
        + celeriac_core::WorkflowStore
        + celeriac_core::ProcessRegistry
        + celeriac_core::EventLog
        + celeriac_core::History,
>(
    backend: Arc<B>,
) {
    let q = "unknown-task";
    let clock = ManualClock::new(T0);
    let mut j = job(q, T0);
    j.task = "conformance.nobody_knows_me".to_string();
    let id = j.id;
    enqueue(&*backend, vec![j], T0).await;
    let worker = RunningWorker::start(backend.clone(), Registry::new(), q, &clock);

    let dead = eventually(&*backend, id, "the unknown task to be dead-lettered", |i| {
        i.state.is_terminal() || i.state == JobState::Retrying
    })
    .await;
    assert_eq!(dead.state, JobState::Dead);
    assert_eq!(
        dead.job.attempts, 1,
        "an unknown task should not be retried"
    );
    let error = dead.error.expect("a dead job carries its reason");
    assert_eq!(error.kind, "unknown_task");
    assert!(
        error.message.contains("conformance.nobody_knows_me"),
        "the reason should name the task: {error}"
    );
    assert_eq!(dead_ids(&*backend, Some(q)).await, vec![id]);
    worker.stop().await;
}

/// A payload that does not decode into the task's arguments goes to the dead letters as
/// `undecodable_payload`, with a message naming the task; nothing is lost.
pub async fn undecodable_payload_is_dead_lettered<B: celeriac_core::WorkerStore>(backend: Arc<B>) {
    let q = "undecodable";
    let clock = ManualClock::new(T0);
    let mut j = job(q, T0);
    j.task = "conformance.add".to_string();
    j.payload = b"{this is not json".to_vec();
    let id = j.id;
    enqueue(&*backend, vec![j], T0).await;
    let mut registry = Registry::new();
    registry.register::<Add>();
    let worker = RunningWorker::start(backend.clone(), registry, q, &clock);

    let dead = eventually(&*backend, id, "the bad payload to be dead-lettered", |i| {
        i.state.is_terminal() || i.state == JobState::Retrying
    })
    .await;
    assert_eq!(dead.state, JobState::Dead);
    assert_eq!(
        dead.job.attempts, 1,
        "an undecodable payload should not be retried"
    );
    assert_eq!(
        dead.job.payload,
        b"{this is not json".to_vec(),
        "the payload should be kept for inspection"
    );
    let error = dead.error.expect("a dead job carries its reason");
    assert_eq!(error.kind, "undecodable_payload");
    assert!(
        error.message.contains("conformance.add"),
        "the reason should name the task: {error}"
    );
    worker.stop().await;
}

/// The worker runs a task to success; `wait` returns its decodable result.
pub async fn worker_runs_a_task_to_success<B: celeriac_core::WorkerStore>(backend: Arc<B>) {
    let q = "success";
    let clock = ManualClock::new(T0);
    let j = Enqueue::<Add>::new((2, 3))
        .queue(q)
        .build(T0)
        .expect("the job should build");
    let id = j.id;
    enqueue(&*backend, vec![j], T0).await;
    let mut registry = Registry::new();
    registry.register::<Add>();
    let worker = RunningWorker::start(backend.clone(), registry, q, &clock);

    let done = backend
        .wait(id, PATIENCE)
        .await
        .expect("the job should finish within the patience period");
    assert_eq!(done.state, JobState::Succeeded);
    assert_eq!(
        done.result_as::<i64>().expect("the result decodes"),
        Some(5)
    );
    assert_eq!(done.job.attempts, 1);
    assert_eq!(done.job.started_at, Some(T0));
    assert_eq!(done.job.finished_at, Some(T0));
    assert_eq!(info(&*backend, id).await.state, JobState::Succeeded);
    worker.stop().await;
}

/// This file's cases, for [`suite!`](crate::suite).
#[doc(hidden)]
#[macro_export]
macro_rules! __cases_broker_worker {
    ($constructor:expr) => {
        $crate::__suite_cases! {
            $constructor;
            retry_schedule_follows_backoff,
            worker_dead_letters_after_max_attempts,
            unknown_task_is_dead_lettered,
            undecodable_payload_is_dead_lettered,
            worker_runs_a_task_to_success,
        }
    };
}
