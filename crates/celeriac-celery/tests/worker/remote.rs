//! The worker under Celery's own tools: `app.control.inspect()`, `revoke` (with and without
//! `terminate`, before the message arrives), `control shutdown`, a revoked chain step, and
//! Python's `celery.events.state.State` fed by the worker's events.

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};
use std::time::Duration;

use celeriac_celery::worker::{CeleryTask, CeleryTaskOptions, CeleryWorkerBuilder};
use celeriac_core::task::{TaskContext, TaskError};
use serde_json::{json, Value};
use tokio::sync::Notify;

use crate::common::{new_id, py, py_watched, until, World, WAIT};
use crate::support::Venv;

const HOST: &str = "rust@celeriac-test";

/// `tasks.hold`: by task id, whether the run reached its end when its future was dropped
/// (`Some(false)`: dropped mid-way) or finished (`Some(true)`).
static ENDS: LazyLock<Mutex<HashMap<String, bool>>> = LazyLock::new(Default::default);
/// Never notified: `tasks.hold` waits on it until it is dropped.
static NEVER: LazyLock<Notify> = LazyLock::new(Notify::new);

struct EndGuard {
    id: String,
    finished: bool,
}

impl Drop for EndGuard {
    fn drop(&mut self) {
        ENDS.lock()
            .expect("ends")
            .insert(self.id.clone(), self.finished);
    }
}

/// The test tasks plus `tasks.hold(x)`: waits forever, then would mark its end.
fn builder(world: &World) -> CeleryWorkerBuilder {
    world
        .builder()
        .task_track_started(true)
        .heartbeat_interval(Duration::from_millis(500))
        .task(CeleryTask::from_fn(
            "tasks.hold",
            CeleryTaskOptions::default(),
            |ctx: TaskContext, (x,): (i64,)| async move {
                let id = ctx.headers().get("id").cloned().unwrap_or_default();
                let mut guard = EndGuard {
                    id,
                    finished: false,
                };
                NEVER.notified().await;
                guard.finished = true;
                Ok::<_, TaskError>(x)
            },
        ))
}

/// `inspect active` lists a running Rust task (id, name, args), `registered` the Rust tasks,
/// `stats` the totals; `revoke(terminate=True)` drops the running future and Python's
/// `get()` raises `TaskRevokedError`; a revoke before the message arrives stores REVOKED at
/// once and the message, when it comes, is not run.
pub async fn python_inspects_and_revokes(venv: Venv) {
    let world = World::start().await;
    let worker = world.run_worker(builder(&world)).await;
    let (id, mut channel, _) = py_watched(
        &venv,
        &world,
        "add.delay(1, 1).get(timeout=30)\napp.send_task('tasks.hold', (7,), task_id=ARGS)\nout(1)",
    )
    .await;
    assert_eq!(channel.next().await["status"], json!("STARTED"));
    assert!(
        ENDS.lock().expect("ends").get(&id).is_none(),
        "precondition"
    );
    let later = new_id();
    let got = py(
        &venv,
        &world.cfg,
        json!([HOST, id, later]),
        r#"
from celery.exceptions import TaskRevokedError
import time
H, TID, LATER = ARGS
i = app.control.inspect(destination=[H], timeout=10)
res = {'active': i.active(), 'registered': i.registered(), 'stats': i.stats()}
res['revoke'] = app.control.revoke(TID, terminate=True, destination=[H], reply=True, timeout=10)
res['raised'] = raised(app.AsyncResult(TID))
res['state'] = app.AsyncResult(TID).state
# Revoked before it is sent: REVOKED is stored at once, and the message is not run.
res['revoke_later'] = app.control.revoke(LATER, destination=[H], reply=True, timeout=10)
deadline = time.time() + 20
while app.AsyncResult(LATER).state != 'REVOKED' and time.time() < deadline:
    time.sleep(0.05)
res['later_before_send'] = app.AsyncResult(LATER).state
r = add.apply_async((2, 2), task_id=LATER)
res['later_raised'] = raised(r)
res['revoked_list'] = i.revoked()
out(res)
"#,
    )
    .await;
    let active = &got["active"][HOST];
    assert_eq!(active.as_array().map(Vec::len), Some(1), "{venv}: {got}");
    assert_eq!(active[0]["id"], json!(id));
    assert_eq!(active[0]["name"], json!("tasks.hold"));
    assert_eq!(active[0]["args"], json!([7]));
    assert_eq!(active[0]["hostname"], json!(HOST));
    assert!(active[0]["time_start"].as_f64().is_some(), "{active}");
    let registered = got["registered"][HOST].as_array().expect("a list");
    for name in ["tasks.add", "tasks.hold", "tasks.wait_gate"] {
        assert!(registered.contains(&json!(name)), "{name}: {registered:?}");
    }
    let stats = &got["stats"][HOST];
    assert_eq!(stats["total"]["tasks.add"], json!(1), "{stats}");
    assert_eq!(stats["total"]["tasks.hold"], json!(1), "{stats}");
    assert_eq!(stats["pid"], json!(std::process::id()));
    assert!(stats["uptime"].as_u64().is_some(), "{stats}");
    assert_eq!(
        got["revoke"],
        json!([{ HOST: {"ok": format!("terminate: {id}")} }]),
        "{venv}"
    );
    assert_eq!(got["raised"][0], json!("TaskRevokedError"), "{venv}: {got}");
    assert_eq!(got["state"], json!("REVOKED"));
    until("the revoked task's future is dropped", || {
        ENDS.lock().expect("ends").contains_key(&id)
    })
    .await;
    assert_eq!(
        ENDS.lock().expect("ends").get(&id),
        Some(&false),
        "dropped before its end"
    );
    assert_eq!(got["later_before_send"], json!("REVOKED"), "{venv}: {got}");
    assert_eq!(
        got["later_raised"][0],
        json!("TaskRevokedError"),
        "{venv}: {got}"
    );
    // The message came and went: taken, recorded REVOKED, acknowledged; never run.
    let deadline = tokio::time::Instant::now() + WAIT;
    while world.waiting().await + world.unacked().await > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the revoked message is consumed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        crate::tasks::runs(&later).is_empty(),
        "the revoked message was not run"
    );
    let revoked = got["revoked_list"][HOST].as_array().expect("a list");
    assert!(
        revoked.contains(&json!(id)) && revoked.contains(&json!(later)),
        "{revoked:?}"
    );
    assert!(worker.handle.running().is_empty());
    worker.stop().await;
    assert_eq!(world.unacked().await, 0);
}

/// `app.control.shutdown()` stops the worker gracefully: its run future ends, nothing is
/// left unacknowledged, and a task sent before it ran.
pub async fn remote_shutdown_is_graceful(venv: Venv) {
    let world = World::start().await;
    let worker = builder(&world).build().await.expect("the worker connects");
    let handle = worker.handle();
    let run = tokio::spawn(worker.run());
    let got = py(
        &venv,
        &world.cfg,
        json!(HOST),
        r#"
v = add.delay(20, 22).get(timeout=30)
pong = app.control.ping(destination=[ARGS], timeout=10)
app.control.shutdown(destination=[ARGS])
out([v, pong])
"#,
    )
    .await;
    assert_eq!(got, json!([42, [{ HOST: {"ok": "pong"} }]]), "{venv}");
    tokio::time::timeout(WAIT, run)
        .await
        .expect("the worker stops after `control shutdown`")
        .expect("no panic")
        .expect("ends without error");
    assert!(handle.is_shutting_down());
    assert_eq!(
        world.unacked().await,
        0,
        "{venv}: nothing left unacknowledged"
    );
}

/// A chain whose running step is revoked with `terminate` is not continued, and its final
/// result is REVOKED (Python's `get()` on the chain raises `TaskRevokedError`), not PENDING.
pub async fn revoked_chain_step_revokes_the_chain(venv: Venv) {
    let world = World::start().await;
    let worker = world.run_worker(builder(&world)).await;
    let (first, mut channel, ids) = py_watched(
        &venv,
        &world,
        r#"
c = chain(app.signature('tasks.hold', (1,), immutable=True).set(task_id=ARGS),
          add.si(1, 2), add.si(3, 4))
r = c.apply_async()
out([r.parent.id, r.id])
"#,
    )
    .await;
    assert_eq!(channel.next().await["status"], json!("STARTED"));
    let (middle, last) = (
        ids[0].as_str().expect("id").to_owned(),
        ids[1].as_str().expect("id").to_owned(),
    );
    assert!(worker.handle.revoke(&first), "the first step was running");
    let got = py(
        &venv,
        &world.cfg,
        json!([first, middle, last]),
        "rs = [app.AsyncResult(i) for i in ARGS]\nout([[raised(r), r.state] for r in rs])",
    )
    .await;
    for (i, step) in got.as_array().expect("a list").iter().enumerate() {
        assert_eq!(
            step[0][0],
            json!("TaskRevokedError"),
            "{venv}: step {i}: {got}"
        );
        assert_eq!(step[1], json!("REVOKED"), "{venv}: step {i}: {got}");
    }
    assert!(crate::tasks::runs(&middle).is_empty() && crate::tasks::runs(&last).is_empty());
    worker.stop().await;
    assert_eq!(world.waiting().await, 0, "no later step was sent");
}

/// Python's `EventReceiver` + `State` from the worker's events: the worker alive at its
/// heartbeat, a task through received/started/succeeded with its result, a failed one with
/// its exception, the worker gone after `worker-offline`.
pub async fn python_state_follows_the_worker(venv: Venv) {
    let world = World::start().await;
    let mut receiver = venv.state_receiver(&world.cfg, HOST, 1).await;
    let worker = world.run_worker(builder(&world)).await;
    let ids = py(
        &venv,
        &world.cfg,
        json!(null),
        r#"
a = add.delay(2, 3)
assert a.get(timeout=30) == 5
f = fail.delay('x')
out([a.id, f.id, raised(f)])
"#,
    )
    .await;
    let (ok, failed) = (
        ids[0].as_str().expect("id").to_owned(),
        ids[1].as_str().expect("id").to_owned(),
    );
    assert_eq!(ids[2][0], json!("ValueError"));
    // A heartbeat seen (every 500 ms), then worker-offline ends the capture.
    receiver.wait_for_line("HEARTBEAT").await;
    worker.stop().await;
    let out = receiver.finish().await;
    out.assert_success();
    let got: Value = out.json();
    assert_eq!(got["alive_at_heartbeat"], json!(true), "{venv}: {got}");
    assert_eq!(got["alive_after_offline"], json!(false), "{venv}: {got}");
    let types_of = |id: &str| -> Vec<String> {
        got["seen"]
            .as_array()
            .expect("a list")
            .iter()
            .filter(|e| e[1] == json!(id))
            .map(|e| e[0].as_str().unwrap_or("").to_owned())
            .collect()
    };
    assert_eq!(
        types_of(&ok),
        ["task-received", "task-started", "task-succeeded"],
        "{venv}: {got}"
    );
    assert_eq!(
        types_of(&failed),
        ["task-received", "task-started", "task-failed"],
        "{venv}: {got}"
    );
    let t = &got["tasks"][&ok];
    assert_eq!(t["state"], json!("SUCCESS"), "{t}");
    assert_eq!(t["name"], json!("tasks.add"));
    assert_eq!(t["result"], json!("5"));
    assert_eq!(t["args"], json!("(2, 3)"));
    assert_eq!(t["worker"], json!(HOST));
    let t = &got["tasks"][&failed];
    assert_eq!(t["state"], json!("FAILURE"), "{t}");
    assert_eq!(t["exception"], json!("ValueError('x')"), "{t}");
}

/// `add_consumer` makes the worker consume another queue at once (`active_queues` lists it,
/// a task sent there runs); `cancel_consumer` stops it, and refuses the last queue.
/// `disable_events` / `enable_events` reach the worker's event sender.
pub async fn consumers_are_added_and_cancelled(venv: Venv) {
    let world = World::start().await;
    let worker = world.run_worker(builder(&world)).await;
    let extra = format!("{}-extra", world.queue);
    let got = py(
        &venv,
        &world.cfg,
        json!([HOST, extra, world.queue]),
        r#"
H, Q, MAIN = ARGS
res = {}
res['add'] = app.control.add_consumer(Q, destination=[H], reply=True, timeout=10)
i = app.control.inspect(destination=[H], timeout=10)
res['queues'] = sorted(q['name'] for q in i.active_queues()[H])
res['value'] = add.apply_async((5, 6), queue=Q).get(timeout=30)
res['cancel'] = app.control.cancel_consumer(Q, destination=[H], reply=True, timeout=10)
res['queues_after'] = sorted(q['name'] for q in i.active_queues()[H])
res['cancel_last'] = app.control.cancel_consumer(MAIN, destination=[H], reply=True, timeout=10)
res['events'] = [app.control.disable_events(destination=[H], reply=True, timeout=10),
                 app.control.disable_events(destination=[H], reply=True, timeout=10),
                 app.control.enable_events(destination=[H], reply=True, timeout=10)]
out(res)
"#,
    )
    .await;
    assert_eq!(
        got["add"][0][HOST]["ok"],
        json!(format!("add consumer {extra}")),
        "{got}"
    );
    let mut both = vec![world.queue.clone(), extra.clone()];
    both.sort();
    assert_eq!(got["queues"], json!(both), "{venv}: {got}");
    assert_eq!(got["value"], json!(11), "{venv}: {got}");
    assert!(got["cancel"][0][HOST]["ok"].is_string(), "{got}");
    assert_eq!(got["queues_after"], json!([world.queue]), "{venv}: {got}");
    assert!(
        got["cancel_last"][0][HOST]["error"]
            .as_str()
            .is_some_and(|e| e.contains("last queue")),
        "{got}"
    );
    assert_eq!(
        got["events"],
        json!([
            [{ HOST: {"ok": "task events disabled"} }],
            [{ HOST: {"ok": "task events already disabled"} }],
            [{ HOST: {"ok": "task events enabled"} }],
        ]),
        "{venv}"
    );
    assert_eq!(worker.handle.queues(), vec![world.queue.clone()]);
    worker.stop().await;
}
