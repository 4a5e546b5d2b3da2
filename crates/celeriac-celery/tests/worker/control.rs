//! The worker's own controls: graceful shutdown gives messages back, early acks, revoking a
//! running task through the handle, and arguments that do not fit the task.

use std::time::Duration;

use serde_json::{json, Value};

use crate::common::{new_id, py, py_watched, until, Channel, World};
use crate::support::Venv;

/// A graceful shutdown gives back a held ETA message at once and a running task's message
/// after the grace: both back on the queue marked redelivered, nothing left in `unacked`.
pub async fn shutdown_gives_messages_back(venv: Venv) {
    let world = World::start().await;
    let worker = world
        .run_worker(
            world
                .builder()
                .task_track_started(true)
                .shutdown_grace(Duration::from_millis(200)),
        )
        .await;
    let (_, mut channel, _) = py_watched(
        &venv,
        &world,
        r#"
add.apply_async((1, 1), countdown=3600)
app.send_task("tasks.wait_gate", ("never-opened",), task_id=ARGS)
out(1)
"#,
    )
    .await;
    assert_eq!(channel.next().await["status"], json!("STARTED"));
    // Taken in order: the ETA message first, then the running one.
    assert_eq!(world.unacked().await, 2, "both taken, neither acknowledged");
    assert_eq!(worker.handle.running().len(), 1);
    worker.stop().await;
    assert_eq!(world.unacked().await, 0, "{venv}: everything given back");
    let raw: Vec<String> = redis::cmd("LRANGE")
        .arg(&world.queue)
        .arg(0)
        .arg(-1)
        .query_async(&mut world.redis(0).await)
        .await
        .expect("LRANGE");
    assert_eq!(raw.len(), 2, "{raw:?}");
    for r in &raw {
        let envelope: Value = serde_json::from_str(r).expect("JSON");
        assert_eq!(
            envelope["headers"]["redelivered"],
            json!(true),
            "{envelope}"
        );
    }
    let tasks: Vec<&str> = raw
        .iter()
        .map(|r| {
            if r.contains("tasks.wait_gate") {
                "wait_gate"
            } else {
                "add"
            }
        })
        .collect();
    assert!(
        tasks.contains(&"wait_gate") && tasks.contains(&"add"),
        "{tasks:?}"
    );
}

/// `acks_late = false` acknowledges before running; revoking through the handle stops a
/// running task (REVOKED `terminated`) and discards a held ETA message (REVOKED `revoked`),
/// both raised as `TaskRevokedError` in Python.
pub async fn early_ack_and_revoke(venv: Venv) {
    let world = World::start().await;
    let worker = world
        .run_worker(world.builder().acks_late(false).task_track_started(true))
        .await;
    let id = new_id();
    let held = new_id();
    let mut channel = Channel::open(&world, &id).await;
    py(
        &venv,
        &world.cfg,
        json!([id, held]),
        r#"
add.apply_async((1, 1), countdown=3600, task_id=ARGS[1])
app.send_task('tasks.wait_gate', ('shut',), task_id=ARGS[0])
out(1)
"#,
    )
    .await;
    assert_eq!(channel.next().await["status"], json!("STARTED"));
    let running = worker.handle.running();
    assert_eq!(running.len(), 1);
    let r = &running[0];
    assert_eq!(
        (r.task_id.as_str(), r.name.as_str()),
        (id.as_str(), "tasks.wait_gate")
    );
    assert!(r.acknowledged && r.started_at.is_some(), "{r:?}");
    assert_eq!(r.args, vec![json!("shut")]);
    // Listed once taken (it was taken before the running one).
    until("the ETA message is held", || {
        !worker.handle.scheduled().is_empty()
    })
    .await;
    let scheduled = worker.handle.scheduled();
    assert_eq!(scheduled[0].task_id, held);
    assert!(scheduled[0].eta.is_some() && !scheduled[0].acknowledged);
    assert_eq!(
        world.unacked().await,
        1,
        "only the held ETA message is unacknowledged"
    );
    assert!(worker.handle.revoke(&id), "it was running here");
    assert!(!worker.handle.revoke(&held), "held, not running");
    let got = py(
        &venv,
        &world.cfg,
        json!([id, held]),
        r#"
rs = [app.AsyncResult(i) for i in ARGS]
out([[raised(r), r.state, r.result.args[0] if r.result else None] for r in rs])
"#,
    )
    .await;
    assert_eq!(got[0][0][0], json!("TaskRevokedError"), "{venv}: {got}");
    assert_eq!(
        (got[0][1].clone(), got[0][2].clone()),
        (json!("REVOKED"), json!("terminated"))
    );
    assert_eq!(got[1][0][0], json!("TaskRevokedError"), "{venv}: {got}");
    assert_eq!(
        (got[1][1].clone(), got[1][2].clone()),
        (json!("REVOKED"), json!("revoked"))
    );
    assert!(
        crate::tasks::runs(&held).is_empty(),
        "the held task never ran"
    );
    assert!(worker.handle.running().is_empty() && worker.handle.scheduled().is_empty());
    worker.stop().await;
    assert_eq!(world.unacked().await, 0);
}

/// Arguments that do not fit the task's `Args` fail as Python's `TypeError`, naming the
/// argument.
pub async fn bad_arguments_raise_type_error(venv: Venv) {
    let world = World::start().await;
    let worker = world.run_worker(world.builder()).await;
    let got = py(
        &venv,
        &world.cfg,
        json!(null),
        r#"
# send_task: Python's client checks add's signature itself; the worker must check too.
t = lambda args, kwargs: raised(app.send_task("tasks.add", args, kwargs))
out([t((1, 2), {"z": 3}), t((1,), {}), t((1,), {"x": 2})])
"#,
    )
    .await;
    for (i, needle) in ["'z'", "`y`", "'x'"].iter().enumerate() {
        assert_eq!(got[i][0], json!("TypeError"), "{venv}: {got}");
        let message = got[i][2][0].as_str().expect("a message");
        assert!(
            message.contains(needle) && message.contains("tasks.add"),
            "{message}"
        );
    }
    worker.stop().await;
}

/// With a 1 s visibility timeout, a task running for several timeouts and an ETA message
/// held as long are kept fresh: another process's sweep restores neither, and each runs once.
pub async fn long_tasks_and_held_etas_stay_fresh(venv: Venv) {
    use celeriac_celery::broker::{KombuBroker, TransportOptions};

    let world = World::start().await;
    let vt = Duration::from_secs(1);
    let worker = world
        .run_worker(
            world
                .builder()
                .visibility_timeout(vt)
                .task_track_started(true),
        )
        .await;
    let id = new_id();
    let gate = format!("gate-{id}");
    let mut channel = Channel::open(&world, &id).await;
    let eta_id = py(
        &venv,
        &world.cfg,
        json!([id, gate]),
        r#"
e = add.apply_async((20, 22), countdown=3)
app.send_task("tasks.wait_gate", (ARGS[1],), task_id=ARGS[0])
out(e.id)
"#,
    )
    .await;
    let eta_id = eta_id.as_str().expect("id").to_owned();
    assert_eq!(channel.next().await["status"], json!("STARTED"));
    assert_eq!(world.unacked().await, 2, "both in hand");
    // The subject of the test is time passing: well over two visibility timeouts.
    tokio::time::sleep(vt * 5 / 2).await;
    let sweeper = KombuBroker::connect(
        &world.url(0),
        TransportOptions::default().visibility_timeout(vt),
    )
    .await
    .expect("the sweeper connects");
    let report = sweeper.restore_visible().await.expect("a sweep");
    assert!(!report.mutex_held, "{report:?}");
    assert_eq!(
        report.restored, 0,
        "{venv}: nothing in hand looks stale: {report:?}"
    );
    assert_eq!(world.unacked().await, 2);
    crate::tasks::open_gate(&gate);
    let got = py(
        &venv,
        &world.cfg,
        json!([id, eta_id]),
        "out([app.AsyncResult(i).get(timeout=30) for i in ARGS])",
    )
    .await;
    assert_eq!(got, json!([gate, 42]));
    worker.stop().await;
    assert_eq!(crate::tasks::runs(&id).len(), 1, "the long task ran once");
    assert_eq!(
        crate::tasks::runs(&eta_id).len(),
        1,
        "the held ETA ran once"
    );
    assert_eq!(world.unacked().await, 0);
}
