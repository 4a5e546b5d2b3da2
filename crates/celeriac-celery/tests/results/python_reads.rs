//! Records written by Rust, read by Python's `AsyncResult`.

use celeriac_celery::results::{
    ExceptionInfo, ExtendedMeta, ResultBackend, ResultMeta, State, Stored,
};
use serde_json::{json, Value};

use crate::common::{assert_ttl, new_id, prefix_style_of, py, py_raw, with_prelude, World};
use crate::support::Venv;

/// SUCCESS records of any JSON value come back from `get()` as that value; the record has
/// Celery's fields, a date, and the TTL `result_expires` (one day by default).
pub async fn python_gets_success_values(venv: Venv) {
    let world = World::start().await;
    let backend = world.backend_for(&venv).await;
    let values = [
        json!(5),
        json!({"a": [1, 2], "b": "é"}),
        json!([1, "x", null]),
        json!(2.5),
        Value::Null,
    ];
    let mut ids = Vec::new();
    let started = std::time::Instant::now();
    for value in &values {
        let id = new_id();
        let stored = backend
            .store(&ResultMeta::success(&id, value.clone()))
            .await
            .expect("stores");
        assert_eq!(stored, Stored::Written);
        ids.push(id);
    }
    let got = py(
        &venv,
        &world.cfg,
        json!(ids),
        r#"
rs = [app.AsyncResult(i) for i in ARGS]
out([[r.get(timeout=10), r.state, r.successful(), r.date_done is not None] for r in rs])
"#,
    )
    .await;
    for (value, row) in values.iter().zip(got.as_array().expect("a list")) {
        assert_eq!(row, &json!([value, "SUCCESS", true, true]), "{venv}");
    }
    assert_ttl(&world, &backend.task_key(&ids[0]), 86_400, started).await;
    let mut conn = world.redis(1).await;
    let raw: String = redis::cmd("GET")
        .arg(format!("celery-task-meta-{}", ids[0]))
        .query_async(&mut conn)
        .await
        .expect("GET");
    assert!(raw.starts_with(r#"{"status": "SUCCESS", "result": 5, "traceback": null, "children": [], "date_done": ""#), "{raw}");
    assert!(
        raw.ends_with(&format!(r#""task_id": "{}"}}"#, ids[0])),
        "{raw}"
    );
}

/// A Python waiter that subscribed and read the key (still pending) before the store is
/// woken by the store: only a PUBLISH can do that, since the Redis result consumer does not
/// poll. The control: a record written with a plain SET (no PUBLISH) leaves the same waiter
/// hanging until its timeout.
pub async fn python_waiter_is_woken_by_the_publish(venv: Venv) {
    let world = World::start().await;
    let backend = world.backend_for(&venv).await;
    let waiter_code = r#"
import tasks
tasks.announce_when_waiting()
r = app.AsyncResult(ARGS["id"])
try:
    out({"value": r.get(timeout=ARGS["timeout"])})
except Exception as e:
    out({"error": type(e).__name__})
"#;
    let spawn = |id: &str, timeout: u64| {
        let cfg = world
            .cfg
            .clone()
            .env("ARGS", json!({"id": id, "timeout": timeout}).to_string());
        venv.spawn(&cfg, &with_prelude(waiter_code))
    };

    let id = new_id();
    let mut waiter = spawn(&id, 20);
    waiter.wait_for_line(&format!("WAITING {id}")).await;
    backend
        .store(&ResultMeta::success(&id, json!({"ok": 1})))
        .await
        .expect("stores");
    let out = waiter.finish().await;
    out.assert_success();
    assert_eq!(out.json(), json!({"value": {"ok": 1}}), "{venv}");

    // Control: SET without PUBLISH is not seen by a waiter that already read the key.
    let id = new_id();
    let mut waiter = spawn(&id, 2);
    waiter.wait_for_line(&format!("WAITING {id}")).await;
    let record = ResultMeta::success(&id, json!(1))
        .to_json(false)
        .expect("encodes");
    let mut conn = world.redis(1).await;
    let _: () = redis::cmd("SET")
        .arg(backend.task_key(&id))
        .arg(record)
        .query_async(&mut conn)
        .await
        .expect("SET");
    let out = waiter.finish().await;
    out.assert_success();
    assert_eq!(out.json(), json!({"error": "TimeoutError"}), "{venv}");
}

/// FAILURE records raise the mapped class with its args in Python, with the traceback text:
/// a builtin, a Celery exception, a custom name (synthetic class) and a class of a module
/// the reader has imported (`tasks.CustomError`).
pub async fn python_raises_stored_failures(venv: Venv) {
    let world = World::start().await;
    let backend = world.backend_for(&venv).await;
    let cases = [
        (
            ExceptionInfo::value_error("bad input"),
            "builtins",
            "ValueError",
        ),
        (
            ExceptionInfo::builtin("KeyError", vec![json!("k"), json!(2)]).expect("builtin"),
            "builtins",
            "KeyError",
        ),
        // celery.exceptions re-exports billiard's class.
        (
            ExceptionInfo::time_limit_exceeded("hard limit 5s"),
            "billiard.exceptions",
            "TimeLimitExceeded",
        ),
        (
            ExceptionInfo::custom("PanicError", vec![json!("thread panicked")]).expect("custom"),
            "celery.exceptions",
            "PanicError",
        ),
        (
            ExceptionInfo::with_module("tasks", "CustomError", vec![json!("mine")])
                .expect("module"),
            "tasks",
            "CustomError",
        ),
    ];
    let mut ids = Vec::new();
    for (exc, _, _) in &cases {
        let id = new_id();
        let tb = format!(
            "Traceback (most recent call last):\n  rust\n{}: {}\n",
            exc.exc_type,
            exc.message()
        );
        backend
            .store(&ResultMeta::failure(&id, exc, tb))
            .await
            .expect("stores");
        ids.push(id);
    }
    let got = py(&venv, &world.cfg, json!(ids), r#"
import tasks
rows = []
for i in ARGS:
    r = app.AsyncResult(i)
    try:
        r.get(timeout=10)
        rows.append(None)
    except Exception as e:
        rows.append([type(e).__module__, type(e).__name__, list(e.args), r.state, r.failed(), bool(r.traceback), isinstance(e, Exception)])
out(rows)
"#)
    .await;
    for ((exc, module, name), row) in cases.iter().zip(got.as_array().expect("a list")) {
        assert_eq!(
            row,
            &json!([module, name, exc.args(), "FAILURE", true, true, true]),
            "{venv}"
        );
    }
}

/// RETRY, REVOKED, STARTED and a custom state as Python sees them (`state`, `info`,
/// `ready()`), and a REVOKED `get()` raising `TaskRevokedError`.
pub async fn python_sees_other_states(venv: Venv) {
    let world = World::start().await;
    let backend = world.backend_for(&venv).await;
    let retry = new_id();
    let revoked = new_id();
    let started = new_id();
    let custom = new_id();
    let retry_exc = ExceptionInfo::value_error("try again");
    let metas = [
        ResultMeta::retry(
            &retry,
            Some(&retry_exc),
            "Traceback ...\ncelery.exceptions.Retry: Retry in 1s\n",
        ),
        ResultMeta::revoked(&revoked, "expired"),
        ResultMeta::started(&started, 4242, "rust@host"),
        ResultMeta::new(
            &custom,
            State::Custom("PROGRESS".into()),
            json!({"done": 3, "of": 5}),
        ),
    ];
    for meta in &metas {
        assert_eq!(backend.store(meta).await.expect("stores"), Stored::Written);
    }
    let got = py(&venv, &world.cfg, json!([retry, revoked, started, custom]), r#"
def info(r):
    i = r.info
    return [type(i).__name__, list(i.args)] if isinstance(i, BaseException) else i
rows = [[app.AsyncResult(i).state, info(app.AsyncResult(i)), app.AsyncResult(i).ready()] for i in ARGS]
try:
    app.AsyncResult(ARGS[1]).get(timeout=10)
    rows.append(None)
except Exception as e:
    rows.append([type(e).__name__, list(e.args)])
out(rows)
"#)
    .await;
    assert_eq!(
        got,
        json!([
            ["RETRY", ["ValueError", ["try again"]], false],
            ["REVOKED", ["TaskRevokedError", ["expired"]], true],
            ["STARTED", {"pid": 4242, "hostname": "rust@host"}, false],
            ["PROGRESS", {"done": 3, "of": 5}, false],
            ["TaskRevokedError", ["expired"]]
        ]),
        "{venv}"
    );
}

/// With `result_extended`, Python reads name, args, kwargs, worker, retries, queue; the
/// group and parent ids are stored too.
pub async fn python_reads_extended_fields(venv: Venv) {
    let world = World::start().await;
    let backend = world
        .builder_for(&venv)
        .result_extended(true)
        .build()
        .await
        .expect("connects");
    let id = new_id();
    let meta = ResultMeta::success(&id, json!(42))
        .with_group("g-1")
        .with_parent("p-1")
        .with_extended(ExtendedMeta {
            name: Some("tasks.mul".into()),
            args: Some(json!([6, 7])),
            kwargs: Some(json!({"z": 1})),
            worker: Some("rust@host".into()),
            retries: Some(2),
            queue: Some("ext".into()),
        });
    backend.store(&meta).await.expect("stores");
    let cfg = world.cfg.clone().result_extended(true);
    let got = py(&venv, &cfg, json!(id), r#"
r = app.AsyncResult(ARGS)
m = r._get_task_meta()
out([r.get(timeout=10), r.name, r.args, r.kwargs, r.worker, r.retries, r.queue, m.get("group_id"), m.get("parent_id"), r.date_done.utcoffset() is None or r.date_done.utcoffset().total_seconds() == 0])
"#)
    .await;
    assert_eq!(
        got,
        json!([42, "tasks.mul", [6, 7], {"z": 1}, "rust@host", 2, "ext", "g-1", "p-1", true]),
        "{venv}"
    );
}

/// A SUCCESS is never replaced: neither by a later Rust FAILURE/RETRY nor over a SUCCESS a
/// Python worker stored; Python still reads the success.
pub async fn success_is_never_overwritten(venv: Venv) {
    let world = World::start().await;
    let backend = world.backend_for(&venv).await;
    let id = new_id();
    assert_eq!(
        backend
            .store(&ResultMeta::success(&id, json!("first")))
            .await
            .expect("stores"),
        Stored::Written
    );
    let late = ResultMeta::failure(&id, &ExceptionInfo::runtime_error("late"), "tb");
    assert_eq!(
        backend.store(&late).await.expect("stores"),
        Stored::KeptSuccess
    );
    let retry = ResultMeta::retry(&id, None, "tb");
    assert_eq!(
        backend.store(&retry).await.expect("stores"),
        Stored::KeptSuccess
    );
    // Non-success records are replaced as usual.
    let other = new_id();
    backend
        .store(&ResultMeta::started(&other, 1, "h"))
        .await
        .expect("stores");
    assert_eq!(
        backend
            .store(&ResultMeta::success(&other, json!(2)))
            .await
            .expect("stores"),
        Stored::Written
    );

    // A SUCCESS written by Python (store_result, as its worker does).
    let py_id = new_id();
    py(
        &venv,
        &world.cfg,
        json!(py_id),
        r#"
app.backend.store_result(ARGS, {"n": float("nan"), "big": 2**70}, "SUCCESS")
out(True)
"#,
    )
    .await;
    assert_eq!(
        backend
            .store(&late.clone_for(&py_id))
            .await
            .expect("stores"),
        Stored::KeptSuccess
    );

    let got = py(
        &venv,
        &world.cfg,
        json!([id, py_id]),
        r#"
a = app.AsyncResult(ARGS[0]).get(timeout=10)
b = app.AsyncResult(ARGS[1]).get(timeout=10)
out([a, b["big"], b["n"] != b["n"]])
"#,
    )
    .await;
    // Python still reads its own success and the first Rust one.
    assert_eq!(got[0], json!("first"), "{venv}");
    assert_eq!(got[1].as_f64(), Some(2f64.powi(70)), "{venv}");
    assert_eq!(got[2], json!(true), "{venv}");
    let meta = backend.get(&py_id).await.expect("reads").expect("present");
    assert_eq!(meta.status, State::Success);
    assert_eq!(
        meta.result["big"],
        json!("1180591620717411303424"),
        "{venv}"
    );
    assert_eq!(meta.result["n"], json!("NaN"), "{venv}");
}

/// `forget` deletes the record: Python sees PENDING again.
pub async fn python_sees_forgotten_as_pending(venv: Venv) {
    let world = World::start().await;
    let backend = world.backend_for(&venv).await;
    let id = new_id();
    backend
        .store(&ResultMeta::success(&id, json!(1)))
        .await
        .expect("stores");
    assert!(backend.forget(&id).await.expect("forgets"));
    assert!(!backend.forget(&id).await.expect("forgets"));
    assert_eq!(backend.state(&id).await.expect("reads"), State::Pending);
    let got = py(
        &venv,
        &world.cfg,
        json!(id),
        "out(app.AsyncResult(ARGS).state)",
    )
    .await;
    assert_eq!(got, json!("PENDING"), "{venv}");
}

/// `global_keyprefix` joined as this Celery version joins it: Python finds the record under
/// its own prefixed key (and would not under the other rule's key).
pub async fn python_reads_with_global_keyprefix(venv: Venv) {
    let world = World::start().await;
    let backend = world
        .builder_for(&venv)
        .global_keyprefix("app:", prefix_style_of(&venv))
        .build()
        .await
        .expect("connects");
    let id = new_id();
    backend
        .store(&ResultMeta::success(&id, json!("prefixed")))
        .await
        .expect("stores");
    let expected_key = if venv.at_least(5, 7) {
        format!("app:celery-task-meta-{id}")
    } else {
        format!("app:_celery-task-meta-{id}")
    };
    assert_eq!(backend.task_key(&id), expected_key);
    let cfg = world.cfg.clone().backend_prefix("app:");
    let got = py(
        &venv,
        &cfg,
        json!(id),
        r#"
out([app.AsyncResult(ARGS).get(timeout=10), app.backend.get_key_for_task(ARGS).decode()])
"#,
    )
    .await;
    assert_eq!(got, json!(["prefixed", expected_key]), "{venv}");
}

/// `result_expires` and `failure_expires` set the TTLs; no expiry keeps the record.
pub async fn expiry_options_set_the_ttl(venv: Venv) {
    let world = World::start().await;
    let backend = world
        .builder_for(&venv)
        .result_expires(Some(std::time::Duration::from_secs(600)))
        .failure_expires(Some(std::time::Duration::from_secs(60)))
        .build()
        .await
        .expect("connects");
    let forever = ResultBackend::builder(world.backend_url())
        .result_expires(None)
        .build()
        .await
        .expect("connects");
    let (ok, failed, kept) = (new_id(), new_id(), new_id());
    let started = std::time::Instant::now();
    backend
        .store(&ResultMeta::success(&ok, json!(1)))
        .await
        .expect("stores");
    backend
        .store(&ResultMeta::failure(
            &failed,
            &ExceptionInfo::value_error("x"),
            "tb",
        ))
        .await
        .expect("stores");
    forever
        .store(&ResultMeta::success(&kept, json!(1)))
        .await
        .expect("stores");
    assert_ttl(&world, &backend.task_key(&ok), 600, started).await;
    assert_ttl(&world, &backend.task_key(&failed), 60, started).await;
    let mut conn = world.redis(1).await;
    let kept_ttl: i64 = redis::cmd("TTL")
        .arg(backend.task_key(&kept))
        .query_async(&mut conn)
        .await
        .expect("TTL");
    assert_eq!(kept_ttl, -1, "no expiry");
    let got = py_raw(
        &venv,
        &world.cfg,
        json!(ok),
        "out(app.AsyncResult(ARGS).get(timeout=10))",
    )
    .await;
    got.assert_success();
    assert_eq!(got.json(), json!(1));
}

/// Helper: the same record under another id.
trait CloneFor {
    fn clone_for(&self, id: &str) -> Self;
}

impl CloneFor for ResultMeta {
    fn clone_for(&self, id: &str) -> Self {
        let mut meta = self.clone();
        meta.task_id = id.to_owned();
        meta
    }
}
