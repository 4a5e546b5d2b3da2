//! A Rust Celery worker as a process of its own, for the crash-recovery test
//! (`tests/worker/crash.rs` kills it with SIGKILL mid-task).
//!
//! Settings from the environment: `CELERIAC_BROKER_URL`, `CELERIAC_BACKEND_URL`,
//! `CELERIAC_QUEUE`. It serves `tasks.sleep`, which here hangs (ten minutes) whatever its
//! argument, with `task_track_started` on; it prints `READY` once connected.

use std::time::Duration;

use celeriac_celery::worker::{CeleryTask, CeleryTaskOptions, CeleryWorker};
use celeriac_core::task::{TaskContext, TaskError};

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set"))
}

#[tokio::main]
async fn main() {
    let hang = CeleryTask::from_fn(
        "tasks.sleep",
        CeleryTaskOptions::default(),
        |_ctx: TaskContext, (_seconds,): (f64,)| async move {
            tokio::time::sleep(Duration::from_secs(600)).await;
            Ok::<_, TaskError>(0)
        },
    );
    let worker = CeleryWorker::builder(env("CELERIAC_BROKER_URL"), env("CELERIAC_BACKEND_URL"))
        .queues([env("CELERIAC_QUEUE")])
        .hostname("crashy@celeriac")
        .task_track_started(true)
        .task(hang)
        .build()
        .await
        .expect("the worker connects");
    println!("READY");
    worker.run().await.expect("the worker runs");
}
