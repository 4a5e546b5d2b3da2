//! §14 group 1 basics: results, priorities, failures, ETA, expiry, ignore_result, time
//! limits, extended results and STARTED.

use serde_json::{json, Value};

use crate::common::{new_id, py, py_result, Channel, World};
use crate::support::Venv;
use crate::tasks::{open_gate, runs};

/// `add.delay(2, 3).get() == 5`, through positional and keyword arguments; the record has
/// Celery's keys in order, a one-day TTL, and was PUBLISHed on its channel.
pub async fn add_result_reaches_python(venv: Venv) {
    let world = World::start().await;
    let id = new_id();
    let mut channel = Channel::open(&world, &id).await;
    let worker = world.run_worker(world.builder()).await;
    let got = py(
        &venv,
        &world.cfg,
        json!(id),
        r#"
r = add.apply_async((2, 3), task_id=ARGS)
out([r.get(timeout=30), add.delay(1, y=5).get(timeout=30),
     add.apply_async(kwargs={"x": 7, "y": 1}).get(timeout=30), r.state])
"#,
    )
    .await;
    assert_eq!(got, json!([5, 6, 8, "SUCCESS"]), "{venv}");
    let published = channel.next().await;
    assert_eq!(published["status"], json!("SUCCESS"));
    assert_eq!(published["result"], json!(5));
    let mut conn = world.redis(1).await;
    let key = format!("celery-task-meta-{id}");
    let raw: String = redis::cmd("GET")
        .arg(&key)
        .query_async(&mut conn)
        .await
        .expect("GET");
    assert!(
        raw.starts_with(r#"{"status": "SUCCESS", "result": 5, "traceback": null, "children": [], "date_done": ""#),
        "Celery's keys in Celery's order: {raw}"
    );
    assert!(raw.ends_with(&format!(r#""task_id": "{id}"}}"#)), "{raw}");
    let meta: Value = serde_json::from_str(&raw).expect("JSON");
    assert_eq!(meta["task_id"], json!(id));
    assert!(meta["date_done"]
        .as_str()
        .is_some_and(|d| d.ends_with("+00:00")));
    let ttl: i64 = redis::cmd("TTL")
        .arg(&key)
        .query_async(&mut conn)
        .await
        .expect("TTL");
    assert!((86_300..=86_400).contains(&ttl), "TTL {ttl}");
    assert_eq!(world.unacked().await, 0, "everything acknowledged");
    worker.stop().await;
}

/// A priority-5 message lands in the `\x06\x163` list and is consumed from there.
pub async fn priority_sub_queue_is_consumed(venv: Venv) {
    let world = World::start().await;
    let id = py(
        &venv,
        &world.cfg,
        json!(null),
        "out(add.apply_async((1, 1), priority=5).id)",
    )
    .await;
    let id = id.as_str().expect("an id").to_owned();
    let len: u64 = redis::cmd("LLEN")
        .arg(format!("{}\x06\x163", world.queue))
        .query_async(&mut world.redis(0).await)
        .await
        .expect("LLEN");
    assert_eq!(len, 1, "{venv}: the message waits in the priority-3 list");
    let worker = world.run_worker(world.builder()).await;
    let got = py_result(&venv, &world.cfg, &id).await;
    assert_eq!(got, json!(2), "{venv}");
    assert_eq!(world.waiting().await, 0);
    worker.stop().await;
}

/// `fail.delay()` raises `ValueError` with its message in Python, with a traceback; a plain
/// Rust error raises `RuntimeError`; a panic raises a synthetic `PanicError`.
pub async fn failures_raise_mapped_classes(venv: Venv) {
    let world = World::start().await;
    let worker = world.run_worker(world.builder()).await;
    let got = py(
        &venv,
        &world.cfg,
        json!(null),
        r#"
r = fail.delay("bad input")
e = raised(r)
r2 = app.send_task("tasks.rust_error", ("disk on fire",))
r3 = app.send_task("tasks.panic", ("index out of bounds",))
out([e, r.state, r.traceback, raised(r2), r.result.args[0], raised(r3)])
"#,
    )
    .await;
    assert_eq!(
        got[0],
        json!(["ValueError", "builtins", ["bad input"]]),
        "{venv}"
    );
    assert_eq!(got[1], json!("FAILURE"));
    let tb = got[2].as_str().expect("a traceback");
    assert!(
        tb.starts_with("Traceback") && tb.contains("ValueError: bad input"),
        "{tb}"
    );
    assert_eq!(
        got[3],
        json!(["RuntimeError", "builtins", ["disk on fire"]])
    );
    assert_eq!(got[4], json!("bad input"));
    assert_eq!(
        got[5],
        json!(["PanicError", "celery.exceptions", ["index out of bounds"]]),
        "a panic is a synthetic PanicError"
    );
    worker.stop().await;
}

/// An ETA in the future is held (unacknowledged) and run after it: the result's
/// `date_done` is not before the ETA, and the task ran once.
pub async fn eta_is_honoured(venv: Venv) {
    let world = World::start().await;
    let worker = world.run_worker(world.builder()).await;
    let got = py(
        &venv,
        &world.cfg,
        json!(null),
        r#"
eta = datetime.now(timezone.utc) + timedelta(seconds=2)
r = add.apply_async((2, 2), eta=eta)
c = add.apply_async((3, 3), countdown=1)
out([r.id, eta.isoformat(), r.get(timeout=30), c.id, c.get(timeout=30)])
"#,
    )
    .await;
    assert_eq!(
        (got[2].clone(), got[4].clone()),
        (json!(4), json!(6)),
        "{venv}"
    );
    let id = got[0].as_str().expect("id");
    let eta = chrono::DateTime::parse_from_rfc3339(got[1].as_str().expect("eta")).expect("eta");
    let meta = world.meta(id).await.expect("a record");
    let done = chrono::DateTime::parse_from_rfc3339(meta["date_done"].as_str().expect("date"))
        .expect("date");
    assert!(done >= eta, "{venv}: done {done} before eta {eta}");
    assert_eq!(runs(id).len(), 1, "ran once");
    let cid = got[3].as_str().expect("id");
    let run = &runs(cid)[0];
    assert!(
        run["eta"].is_string(),
        "the countdown arrived as an eta: {run}"
    );
    worker.stop().await;
}

/// `expires` in the past: REVOKED `TaskRevokedError('expired')`, never run, acknowledged;
/// `ignore_result=True`: no record at all.
pub async fn expired_and_ignored(venv: Venv) {
    let world = World::start().await;
    // One at a time: the ignored task is finished before the next message is taken.
    let worker = world
        .run_worker(world.builder().concurrency(1).prefetch(1))
        .await;
    let got = py(
        &venv,
        &world.cfg,
        json!(null),
        r#"
r = add.apply_async((1, 1), expires=datetime.now(timezone.utc) - timedelta(seconds=30))
e = raised(r)
i = add.apply_async((1, 2), ignore_result=True)
after = add.apply_async((5, 5))
out([r.id, e, r.state, i.id, after.get(timeout=30)])
"#,
    )
    .await;
    let id = got[0].as_str().expect("id");
    assert_eq!(got[1][0], json!("TaskRevokedError"), "{venv}: {got}");
    assert_eq!(got[2], json!("REVOKED"));
    let meta = world.meta(id).await.expect("a record");
    assert_eq!(meta["result"]["exc_message"], json!(["expired"]));
    assert!(runs(id).is_empty(), "an expired task does not run");
    let ignored = got[3].as_str().expect("id");
    assert_eq!(runs(ignored).len(), 1, "the ignored task ran");
    assert_eq!(world.meta(ignored).await, None, "{venv}: no record");
    assert_eq!(got[4], json!(10));
    assert_eq!(world.unacked().await, 0);
    worker.stop().await;
}

/// `time_limit`/`soft_time_limit` from the message: a task ignoring the soft limit is
/// stopped by the hard one (`TimeLimitExceeded`); a task that stops at the soft limit's
/// cancellation fails with `SoftTimeLimitExceeded`.
pub async fn time_limits_from_the_message(venv: Venv) {
    let world = World::start().await;
    let worker = world.run_worker(world.builder()).await;
    let got = py(
        &venv,
        &world.cfg,
        json!(null),
        r#"
r = sleep.apply_async((60,), time_limit=2, soft_time_limit=1)
s = app.send_task("tasks.wait_cancel", soft_time_limit=1)
out([raised(r), raised(s), r.traceback])
"#,
    )
    .await;
    assert_eq!(got[0][0], json!("TimeLimitExceeded"), "{venv}: {got}");
    assert_eq!(got[1][0], json!("SoftTimeLimitExceeded"), "{venv}: {got}");
    assert!(got[2]
        .as_str()
        .is_some_and(|t| t.contains("TimeLimitExceeded")));
    assert!(
        worker.handle.running().is_empty(),
        "the hard limit dropped the task"
    );
    worker.stop().await;
}

/// `result_extended` fields and STARTED (`task_track_started`) are readable from Python,
/// STARTED while the task runs.
pub async fn extended_and_started(venv: Venv) {
    let world = World::start().await;
    let cfg = world.cfg.clone().result_extended(true);
    let worker = world
        .run_worker(
            world
                .builder()
                .result_extended(true)
                .task_track_started(true),
        )
        .await;
    let id = new_id();
    let gate = format!("gate-{id}");
    let mut channel = Channel::open(&world, &id).await;
    py(
        &venv,
        &cfg,
        json!([id, gate]),
        "app.send_task('tasks.wait_gate', (ARGS[1],), task_id=ARGS[0]); out(1)",
    )
    .await;
    let started = channel.next().await;
    assert_eq!(started["status"], json!("STARTED"), "{started}");
    let running = py(
        &venv,
        &cfg,
        json!(id),
        "r = app.AsyncResult(ARGS); out([r.state, r.info])",
    )
    .await;
    assert_eq!(running[0], json!("STARTED"), "{venv}");
    assert_eq!(running[1]["hostname"], json!("rust@celeriac-test"));
    assert!(running[1]["pid"].is_u64());
    assert_eq!(
        worker.handle.running().len(),
        1,
        "it is running while STARTED"
    );
    open_gate(&gate);
    let got = py(
        &venv,
        &cfg,
        json!(id),
        r#"
r = app.AsyncResult(ARGS)
v = r.get(timeout=30)
out([v, r.name, r.args, r.kwargs, r.worker, r.retries, r.queue])
"#,
    )
    .await;
    assert_eq!(
        got,
        json!([
            gate,
            "tasks.wait_gate",
            [gate],
            {},
            "rust@celeriac-test",
            0,
            world.queue
        ]),
        "{venv}"
    );
    worker.stop().await;
}
