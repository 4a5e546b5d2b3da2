//! Records written by a Python worker, read by Rust.

use std::time::Duration;

use celeriac_celery::pyjson::unwrap_kombu;
use celeriac_celery::results::{ExceptionInfo, PythonClass, ResultMeta, State, Stored};
use serde_json::json;

use crate::common::{new_id, py, World, WAIT};
use crate::support::Venv;

/// Rust waits (subscribed before the task is even sent) for a Python worker's results:
/// a success, a failure with its exception and traceback, and values only Python's JSON has
/// (NaN, a 70-bit integer, a kombu-tagged datetime); `get` reads them afterwards, with the
/// worker's `date_done` in this version's format.
pub async fn rust_waits_for_python_worker_results(venv: Venv) {
    let world = World::start().await;
    let backend = world.backend_for(&venv).await;
    let worker = venv.start_worker(&world.cfg, "hdr").await;
    let (ok, failed, odd) = (new_id(), new_id(), new_id());
    // Subscribed before the tasks exist: the wait must see the publish.
    let waiters = [
        backend.subscribe(&ok).await.expect("subscribes"),
        backend.subscribe(&failed).await.expect("subscribes"),
        backend.subscribe(&odd).await.expect("subscribes"),
    ];
    let waits: Vec<_> = waiters
        .into_iter()
        .map(|w| tokio::spawn(w.wait(WAIT)))
        .collect();
    py(&venv, &world.cfg, json!([ok, failed, odd]), r#"
import datetime
from tasks import add, fail, echo
add.apply_async((2, 3), task_id=ARGS[0])
fail.apply_async(("boom",), task_id=ARGS[1])
echo.apply_async(({"nan": float("nan"), "big": 2**70, "when": datetime.datetime(2024, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc)},), task_id=ARGS[2])
out(True)
"#)
    .await;
    let mut metas = Vec::new();
    for wait in waits {
        metas.push(
            wait.await
                .expect("the wait task runs")
                .expect("a ready result"),
        );
    }

    let success = &metas[0];
    assert_eq!(
        (success.status.clone(), success.result.clone()),
        (State::Success, json!(5)),
        "{venv}"
    );
    assert_eq!(success.task_id, ok);
    assert!(
        success.date_done.is_some(),
        "{venv}: date_done {:?}",
        success.date_done
    );

    let failure = &metas[1];
    assert_eq!(failure.status, State::Failure, "{venv}");
    let exc = failure.exception().expect("an exception dict");
    assert_eq!(
        exc.python_class(),
        PythonClass::Builtin("ValueError".into()),
        "{venv}"
    );
    assert_eq!(exc.message(), "boom");
    assert!(
        failure
            .traceback
            .as_deref()
            .is_some_and(|t| t.contains("ValueError: boom")),
        "{venv}: {:?}",
        failure.traceback
    );

    let odd_meta = &metas[2];
    assert_eq!(odd_meta.status, State::Success, "{venv}");
    assert_eq!(odd_meta.result["nan"], json!("NaN"), "{venv}");
    assert_eq!(
        odd_meta.result["big"],
        json!("1180591620717411303424"),
        "{venv}"
    );
    assert_eq!(
        unwrap_kombu(&odd_meta.result)["when"]
            .as_str()
            .map(|s| s.starts_with("2024-01-02T03:04:05")),
        Some(true),
        "{venv}: {}",
        odd_meta.result
    );

    // `get` reads the same records afterwards.
    let again = backend.get(&ok).await.expect("reads").expect("present");
    assert_eq!(&again, success);
    assert_eq!(backend.state(&failed).await.expect("reads"), State::Failure);
    assert_eq!(backend.get(&new_id()).await.expect("reads"), None);
    worker.stop().await;
}

/// A wait started before the task is sent, on a worker with `task_track_started` and
/// `result_extended`: the STARTED record does not end the wait, the SUCCESS does, and the
/// extended fields the worker wrote are read. A wait on a task nobody runs times out with
/// the last state.
pub async fn rust_wait_skips_started_and_reads_extended(venv: Venv) {
    let world = World::start().await;
    let cfg = world.cfg.clone().track_started(true).result_extended(true);
    let backend = world.backend_for(&venv).await;
    let worker = venv.start_worker(&cfg, "hdr").await;
    let id = new_id();
    let waiter = backend.subscribe(&id).await.expect("subscribes");
    let wait = tokio::spawn(waiter.wait(WAIT));
    py(
        &venv,
        &cfg,
        json!(id),
        r#"
from tasks import mul
mul.apply_async((6, 7), task_id=ARGS)
out(True)
"#,
    )
    .await;
    let meta = wait.await.expect("runs").expect("ready");
    assert_eq!(
        (meta.status.clone(), meta.result.clone()),
        (State::Success, json!(42)),
        "{venv}"
    );
    let ext = meta.extended.clone().expect("extended fields");
    assert_eq!(ext.name.as_deref(), Some("tasks.mul"), "{venv}");
    assert_eq!(ext.args, Some(json!([6, 7])), "{venv}");
    assert_eq!(ext.worker.as_deref(), Some(worker.hostname()), "{venv}");
    assert_eq!(ext.queue.as_deref(), Some("hdr"), "{venv}");
    assert_eq!(ext.retries, Some(0), "{venv}");
    assert!(
        worker
            .log()
            .contains(&format!("Task tasks.mul[{id}] succeeded")),
        "{venv}"
    );

    // A STARTED record alone does not end a wait.
    let stuck = new_id();
    let waiter = backend.subscribe(&stuck).await.expect("subscribes");
    py(
        &venv,
        &cfg,
        json!(stuck),
        r#"
app.backend.store_result(ARGS, {"pid": 1, "hostname": "x"}, "STARTED")
out(True)
"#,
    )
    .await;
    let err = waiter
        .wait(Duration::from_millis(500))
        .await
        .expect_err("not ready");
    assert!(
        err.to_string().contains("last state STARTED"),
        "{venv}: {err}"
    );
    worker.stop().await;
}

/// Celery 5.7's `result_compression = "gzip"` records (magic prefix, content type, zlib
/// stream) are inflated by `get`; Celery 5.3 has no such setting and stores plain JSON.
pub async fn rust_reads_compressed_records(venv: Venv) {
    let world = World::start().await;
    let backend = world.backend_for(&venv).await;
    let cfg = world.cfg.clone().env("CELERIAC_RESULT_COMPRESSION", "gzip");
    let id = new_id();
    py(
        &venv,
        &cfg,
        json!(id),
        r#"
app.backend.store_result(ARGS, {"xs": list(range(100)), "s": "é"}, "SUCCESS")
out(True)
"#,
    )
    .await;
    let mut conn = world.redis(1).await;
    let raw: Vec<u8> = redis::cmd("GET")
        .arg(backend.task_key(&id))
        .query_async(&mut conn)
        .await
        .expect("GET");
    let compressed = raw.starts_with(b"\x00celery-compressed\x00application/x-gzip\x00");
    assert_eq!(
        compressed,
        venv.at_least(5, 7),
        "{venv}: {:?}",
        &raw[..raw.len().min(40)]
    );
    let meta = backend.get(&id).await.expect("reads").expect("present");
    assert_eq!(meta.status, State::Success);
    assert_eq!(meta.result["xs"][99], json!(99), "{venv}");
    assert_eq!(meta.result["s"], json!("é"), "{venv}");

    // The store never replaces a (compressed) SUCCESS, and replaces other compressed records.
    let late = ResultMeta::failure(&id, &ExceptionInfo::runtime_error("late"), "tb");
    assert_eq!(
        backend.store(&late).await.expect("stores"),
        Stored::KeptSuccess,
        "{venv}"
    );
    let started = new_id();
    py(
        &venv,
        &cfg,
        json!(started),
        r#"
app.backend.store_result(ARGS, {"pid": 1, "hostname": "h"}, "STARTED")
out(True)
"#,
    )
    .await;
    let done = ResultMeta::success(&started, json!("done"));
    assert_eq!(
        backend.store(&done).await.expect("stores"),
        Stored::Written,
        "{venv}"
    );
    let got = py(
        &venv,
        &cfg,
        json!([id, started]),
        "out([app.AsyncResult(i).get(timeout=10) for i in ARGS])",
    )
    .await;
    assert_eq!(got[1], json!("done"), "{venv}");
    assert_eq!(got[0]["xs"][1], json!(1), "{venv}");
}
