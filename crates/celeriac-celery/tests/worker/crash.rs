//! Acks late with crash recovery: a Rust worker process killed with SIGKILL mid-task leaves
//! the message in `unacked`; a new Rust worker's visibility sweep restores it and runs it
//! once.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

use crate::common::{py_result, py_watched, World, WAIT};
use crate::support::Venv;
use crate::tasks::runs;

/// `examples/celery_worker.rs`, built by `cargo test` next to the test binaries.
fn example_worker() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile>/deps");
    let path = dir.join("examples").join("celery_worker");
    assert!(
        path.is_file(),
        "{} is missing: `cargo test -p celeriac-celery` builds it (or `cargo build -p celeriac-celery --example celery_worker`)",
        path.display()
    );
    path
}

/// The ids of the messages in `unacked`.
async fn unacked_ids(world: &World) -> Vec<String> {
    let entries: Vec<String> = redis::cmd("HVALS")
        .arg("unacked")
        .query_async(&mut world.redis(0).await)
        .await
        .expect("HVALS");
    entries
        .iter()
        .map(|e| {
            let entry: Value = serde_json::from_str(e).expect("[message, exchange, routing_key]");
            entry[0]["headers"]["id"]
                .as_str()
                .expect("an id")
                .to_owned()
        })
        .collect()
}

pub async fn killed_worker_task_is_restored(venv: Venv) {
    let world = World::start().await;
    let mut child = Command::new(example_worker())
        .env("CELERIAC_BROKER_URL", world.url(0))
        .env("CELERIAC_BACKEND_URL", world.url(1))
        .env("CELERIAC_QUEUE", &world.queue)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("the example worker starts");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let ready = tokio::time::timeout(WAIT, lines.next_line())
        .await
        .expect("the child worker is ready in time")
        .expect("its stdout is readable");
    assert_eq!(ready.as_deref(), Some("READY"));

    let (id, mut channel, _) = py_watched(
        &venv,
        &world,
        "sleep.apply_async((0.2,), task_id=ARGS); out(1)",
    )
    .await;
    let started = channel.next().await;
    assert_eq!(
        started["status"],
        json!("STARTED"),
        "the child runs the task: {started}"
    );
    assert_eq!(started["result"]["hostname"], json!("crashy@celeriac"));
    assert_eq!(
        unacked_ids(&world).await,
        std::slice::from_ref(&id),
        "held unacknowledged while running"
    );

    child.start_kill().expect("SIGKILL");
    tokio::time::timeout(WAIT, child.wait())
        .await
        .expect("the child dies")
        .expect("wait");
    assert_eq!(
        unacked_ids(&world).await,
        std::slice::from_ref(&id),
        "the kill left it in unacked"
    );
    assert!(runs(&id).is_empty(), "not run in this process yet");

    let worker = world
        .run_worker(
            world
                .builder()
                .visibility_timeout(Duration::from_secs(1))
                .sweep_interval(Duration::from_millis(500)),
        )
        .await;
    let statuses = channel.statuses_until_ready().await;
    assert_eq!(
        statuses.last().map(String::as_str),
        Some("SUCCESS"),
        "{statuses:?}"
    );
    let got = py_result(&venv, &world.cfg, &id).await;
    assert_eq!(got, json!(0.2), "{venv}");
    worker.stop().await;
    assert_eq!(runs(&id).len(), 1, "run exactly once after the restore");
    assert_eq!(world.unacked().await, 0);
    assert_eq!(world.waiting().await, 0);
}
