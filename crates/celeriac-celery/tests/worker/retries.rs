//! Retries (§7): republished with `retries + 1` and an eta, RETRY then SUCCESS;
//! `max_retries` honoured, then FAILURE.

use serde_json::json;

use crate::common::{new_id, py, Channel, World};
use crate::support::Venv;
use crate::tasks::runs;

/// `retry_me.delay(1)`: RETRY, then SUCCESS with 1; the second run's message had
/// `retries: 1` and an eta after the first run asked for the retry.
pub async fn retry_then_success(venv: Venv) {
    let world = World::start().await;
    let worker = world.run_worker(world.builder()).await;
    let id = new_id();
    let mut channel = Channel::open(&world, &id).await;
    let got = py(
        &venv,
        &world.cfg,
        json!(id),
        "r = retry_me.apply_async((1,), task_id=ARGS); out([r.get(timeout=30), r.state])",
    )
    .await;
    assert_eq!(got, json!([1, "SUCCESS"]), "{venv}");
    assert_eq!(channel.statuses_until_ready().await, ["RETRY", "SUCCESS"]);
    let seen = runs(&id);
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_eq!(seen[0]["retries"], json!(0));
    assert_eq!(seen[1]["retries"], json!(1));
    assert_eq!(seen[1]["attempt"], json!(2));
    let eta = seen[1]["eta"]
        .as_str()
        .expect("the retry message has an eta");
    assert!(chrono::DateTime::parse_from_rfc3339(eta).is_ok(), "{eta}");
    worker.stop().await;
}

/// `max_retries = 1`: RETRY once, then FAILURE with the task's error.
pub async fn max_retries_then_failure(venv: Venv) {
    let world = World::start().await;
    let worker = world.run_worker(world.builder()).await;
    let id = new_id();
    let mut channel = Channel::open(&world, &id).await;
    let got = py(
        &venv,
        &world.cfg,
        json!(id),
        "r = app.send_task('tasks.retry_forever', task_id=ARGS); out([raised(r), r.state])",
    )
    .await;
    assert_eq!(
        got[0],
        json!(["ValueError", "builtins", ["still failing"]]),
        "{venv}"
    );
    assert_eq!(got[1], json!("FAILURE"));
    assert_eq!(channel.statuses_until_ready().await, ["RETRY", "FAILURE"]);
    assert_eq!(runs(&id).len(), 2, "one run and one retry");
    assert_eq!(world.unacked().await, 0);
    worker.stop().await;
}

/// A task with the worker's retry policy (`autoretry`, backoff, `max_retries = 2`): plain
/// errors are retried with the backoff's countdown; two failures then SUCCESS, three
/// failures FAILURE with the last error (`RuntimeError`).
pub async fn autoretry_policy(venv: Venv) {
    let world = World::start().await;
    let worker = world.run_worker(world.builder()).await;
    let (ok, ko) = (new_id(), new_id());
    let mut ok_channel = Channel::open(&world, &ok).await;
    let mut ko_channel = Channel::open(&world, &ko).await;
    let got = py(
        &venv,
        &world.cfg,
        json!([ok, ko]),
        r#"
a = app.send_task("tasks.flaky", (2,), task_id=ARGS[0])
b = app.send_task("tasks.flaky", (5,), task_id=ARGS[1])
out([a.get(timeout=30), raised(b)])
"#,
    )
    .await;
    assert_eq!(
        got,
        json!([3, ["RuntimeError", "builtins", ["flaky run 3"]]]),
        "{venv}"
    );
    assert_eq!(
        ok_channel.statuses_until_ready().await,
        ["RETRY", "RETRY", "SUCCESS"]
    );
    assert_eq!(
        ko_channel.statuses_until_ready().await,
        ["RETRY", "RETRY", "FAILURE"]
    );
    assert_eq!(runs(&ko).len(), 3, "max_retries = 2: three runs in all");
    worker.stop().await;
}
