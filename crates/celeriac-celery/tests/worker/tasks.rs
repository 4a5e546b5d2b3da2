//! The Rust tasks the worker tests register under the names of `tests/py/tasks.py`, and
//! what they record (the worker runs in the test process).

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use celeriac_celery::worker::{python_error, CeleryTask, CeleryTaskOptions, CeleryWorkerBuilder};
use celeriac_core::retry::Backoff;
use celeriac_core::task::{Task, TaskContext, TaskError};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::sync::Semaphore;

/// What each run saw, by task id: `{"retries", "eta", "args"}`.
static RUNS: LazyLock<Mutex<HashMap<String, Vec<Value>>>> = LazyLock::new(Default::default);
/// Gates tasks wait on, by name.
static GATES: LazyLock<Mutex<HashMap<String, Arc<Semaphore>>>> = LazyLock::new(Default::default);

fn record(ctx: &TaskContext, args: Value) {
    let h = ctx.headers();
    let id = h.get("id").cloned().unwrap_or_default();
    let run = json!({
        "retries": h.get("retries").and_then(|r| r.parse::<u64>().ok()),
        "eta": h.get("eta"),
        "args": args,
        "attempt": ctx.attempt(),
    });
    RUNS.lock().expect("runs").entry(id).or_default().push(run);
}

/// The runs of task `id` so far.
pub fn runs(id: &str) -> Vec<Value> {
    RUNS.lock()
        .expect("runs")
        .get(id)
        .cloned()
        .unwrap_or_default()
}

fn gate(name: &str) -> Arc<Semaphore> {
    GATES
        .lock()
        .expect("gates")
        .entry(name.to_owned())
        .or_insert_with(|| Arc::new(Semaphore::new(0)))
        .clone()
}

/// Lets the task waiting on gate `name` finish.
pub fn open_gate(name: &str) {
    gate(name).add_permits(1);
}

/// `add(x, y)`: a struct, so keyword arguments bind by name.
pub struct Add;

/// The arguments of `add`.
#[derive(Debug, Deserialize, Serialize)]
pub struct AddArgs {
    x: i64,
    y: i64,
}

impl Task for Add {
    const NAME: &'static str = "tasks.add";
    type Args = AddArgs;
    type Output = i64;
    async fn run(ctx: TaskContext, a: AddArgs) -> Result<i64, TaskError> {
        record(&ctx, json!([a.x, a.y]));
        Ok(a.x + a.y)
    }
}

/// Every task of the tests, on top of `builder`.
pub fn register(builder: CeleryWorkerBuilder) -> CeleryWorkerBuilder {
    let opts = CeleryTaskOptions::default;
    builder
        .task(CeleryTask::of::<Add>("tasks.add"))
        .task(CeleryTask::from_fn(
            "tasks.tsum",
            opts(),
            |_ctx, (xs,): (Vec<i64>,)| async move { Ok::<_, TaskError>(xs.iter().sum::<i64>()) },
        ))
        .task(CeleryTask::from_fn(
            "tasks.fail",
            opts(),
            |_ctx, args: Vec<String>| async move {
                let msg = args.first().cloned().unwrap_or_else(|| "boom".into());
                Err::<i64, _>(python_error("ValueError", msg))
            },
        ))
        .task(CeleryTask::from_fn(
            "tasks.rust_error",
            opts(),
            |_ctx, (msg,): (String,)| async move { Err::<i64, _>(TaskError::msg(msg)) },
        ))
        .task(CeleryTask::from_fn(
            "tasks.panic",
            opts(),
            |_ctx, (msg,): (String,)| async move {
                if !msg.is_empty() {
                    panic!("{msg}");
                }
                Ok::<_, TaskError>(0)
            },
        ))
        .task(CeleryTask::from_fn(
            "tasks.retry_me",
            opts().max_retries(Some(5)),
            |ctx: TaskContext, (n,): (u32,)| async move {
                record(&ctx, json!([n]));
                let retries = ctx.attempt() - 1;
                if retries < n {
                    return Err(TaskError::retry_after(
                        Duration::from_secs(1),
                        "Retry in 1s",
                    ));
                }
                Ok(retries)
            },
        ))
        .task(CeleryTask::from_fn(
            "tasks.retry_forever",
            opts().max_retries(Some(1)),
            |ctx: TaskContext, (): ()| async move {
                record(&ctx, json!([]));
                Err::<u32, _>(TaskError::retry_after(
                    Duration::from_millis(200),
                    "ValueError: still failing",
                ))
            },
        ))
        .task(CeleryTask::from_fn(
            "tasks.flaky",
            CeleryTaskOptions {
                backoff: Backoff {
                    base: Duration::from_millis(100),
                    cap: Duration::from_millis(100),
                    jitter: false,
                },
                ..opts().autoretry(true).max_retries(Some(2))
            },
            |ctx: TaskContext, (fails,): (u32,)| async move {
                record(&ctx, json!([fails]));
                if ctx.attempt() <= fails {
                    return Err(TaskError::msg(format!("flaky run {}", ctx.attempt())));
                }
                Ok(ctx.attempt())
            },
        ))
        .task(CeleryTask::from_fn(
            "tasks.sleep",
            opts(),
            |ctx: TaskContext, (seconds,): (f64,)| async move {
                record(&ctx, json!([seconds]));
                // Ignores the soft limit on purpose: only the hard limit stops it.
                tokio::time::sleep(Duration::from_secs_f64(seconds)).await;
                Ok::<_, TaskError>(seconds)
            },
        ))
        .task(CeleryTask::from_fn(
            "tasks.wait_cancel",
            opts(),
            |ctx: TaskContext, (): ()| async move {
                ctx.cancelled().await;
                Err::<i64, _>(TaskError::fatal("stopped at the soft time limit"))
            },
        ))
        .task(CeleryTask::from_fn(
            "tasks.wait_gate",
            opts(),
            |ctx: TaskContext, (name,): (String,)| async move {
                record(&ctx, json!([name]));
                let g = gate(&name);
                let permit = g.acquire().await.map_err(TaskError::fatal)?;
                permit.forget();
                Ok::<_, TaskError>(name)
            },
        ))
        .task(CeleryTask::from_fn(
            "tasks.on_err",
            opts(),
            |_ctx, (task_id,): (String,)| async move { Ok::<_, TaskError>(task_id) },
        ))
        .task(CeleryTask::from_fn(
            "tasks.echo",
            opts(),
            |_ctx, (value,): (Value,)| async move { Ok::<_, TaskError>(value) },
        ))
}
