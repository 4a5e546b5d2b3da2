//! Chords between Python clients/workers and the Rust join.

use celeriac_celery::results::{
    ChordGeneration, ChordPart, ChordPartOutcome, ResultBackend, ResultMeta, State, Stored,
};
use serde_json::{json, Value};

use crate::common::{new_id, publish_body, publish_task, py, take_all, Taken, World, WAIT};
use crate::support::{Venv, WorkerOptions};

/// Sends `chord(header, tsum.s().set(queue="body"))` from Python with no worker on the header
/// queue; returns the body id and the header messages taken off the queue.
async fn python_chord(venv: &Venv, world: &World, header: &str) -> (String, Vec<Taken>) {
    let sent = py(
        venv,
        &world.cfg,
        json!(null),
        &format!(
            r#"
from celery import chord
from tasks import add, fail, tsum
r = chord([{header}], tsum.s().set(queue="body")).apply_async()
out(r.id)
"#
        ),
    )
    .await;
    let body_id = sent.as_str().expect("the body id").to_owned();
    let taken = take_all(world, "hdr").await;
    (body_id, taken)
}

/// Runs a header message the way a worker would (add / fail), stores its result and runs
/// the chord join.
async fn finish_member(backend: &ResultBackend, msg: &Taken) -> ChordPartOutcome {
    let id = msg.id();
    let group = msg.headers["group"]
        .as_str()
        .expect("headers.group")
        .to_owned();
    let index = msg.headers["group_index"].as_u64();
    let args = msg.body[0].as_array().expect("args").clone();
    let meta = match msg.headers["task"].as_str() {
        Some("tasks.add") => {
            let sum = args
                .iter()
                .map(|a| a.as_i64().expect("int arg"))
                .sum::<i64>();
            ResultMeta::success(&id, json!(sum))
        }
        Some("tasks.fail") => {
            let exc = celeriac_celery::results::ExceptionInfo::value_error(
                args[0].as_str().expect("msg"),
            );
            ResultMeta::failure(
                &id,
                &exc,
                "Traceback (most recent call last):\nValueError: inchord\n",
            )
        }
        other => panic!("unexpected header task {other:?}"),
    }
    .with_group(&group);
    assert_eq!(backend.store(&meta).await.expect("stores"), Stored::Written);
    backend
        .chord_part_return(ChordPart {
            group_id: &group,
            task_id: &id,
            group_index: index,
            state: &meta.status,
            result: &meta.result,
        })
        .await
        .expect("joins")
}

/// The body signature a header message carries (`embed.chord`).
fn body_sig(msg: &Taken) -> Value {
    msg.body[2]["chord"].clone()
}

/// Python's client sets the chord up (`.s`), Rust computes the header members from the
/// messages it took off the queue, stores them and joins (this version's bookkeeping); the
/// last join releases `[6, 8]` once, the body message Rust publishes runs on a Python worker,
/// and Python's `AsyncResult(body_id).get()` is 14.
pub async fn python_chord_released_by_rust_join(venv: Venv) {
    let world = World::start().await;
    let backend = world.backend_for(&venv).await;
    let (body_id, taken) = python_chord(&venv, &world, "add.s(3, 3), add.s(4, 4)").await;
    assert_eq!(taken.len(), 2, "{venv}: two header messages");
    let gid = taken[0].headers["group"]
        .as_str()
        .expect("group")
        .to_owned();
    assert_eq!(taken[1].headers["group"], json!(gid));
    let sig = body_sig(&taken[0]);
    assert_eq!(sig["task"], json!("tasks.tsum"), "{venv}: {sig}");
    assert_eq!(sig["options"]["task_id"], json!(body_id), "{venv}: {sig}");
    let mut conn = world.redis(1).await;
    let size: Option<String> = redis::cmd("GET")
        .arg(backend.group_key(&gid, ".s"))
        .query_async(&mut conn)
        .await
        .expect("GET");
    assert_eq!(
        size.as_deref(),
        Some("2"),
        "{venv}: the client set the chord size"
    );

    // Header order is group_index order, whatever order the members finish in.
    let mut by_index: Vec<&Taken> = taken.iter().collect();
    by_index.sort_by_key(|m| m.headers["group_index"].as_u64());
    let first = finish_member(&backend, by_index[1]).await;
    assert!(
        matches!(
            first,
            ChordPartOutcome::Pending {
                ready: 1,
                size: Some(2)
            }
        ),
        "{venv}: {first:?}"
    );
    let ChordPartOutcome::Release(release) = finish_member(&backend, by_index[0]).await else {
        panic!("{venv}: the second member releases the body");
    };
    let results = release.outcome.clone().expect("no member failed");
    assert_eq!(results, vec![json!(6), json!(8)], "{venv}");

    // Send the body as the releasing worker does: args [[6, 8]] + body args, group = gid.
    let mut args = vec![Value::Array(results)];
    args.extend(sig["args"].as_array().cloned().unwrap_or_default());
    let body = json!([args, sig["kwargs"].clone(), {"callbacks": null, "errbacks": null, "chain": null, "chord": null}]);
    let last = by_index[0].id();
    publish_body(
        &world,
        "body",
        "tasks.tsum",
        &body_id,
        &body,
        Some(&gid),
        None,
        Some(&last),
    )
    .await;
    assert!(
        backend.chord_finish(&release).await.expect("cleans up"),
        "{venv}"
    );
    let left: i64 = redis::cmd("EXISTS")
        .arg(backend.group_key(&gid, ".j"))
        .arg(backend.group_key(&gid, ".s"))
        .query_async(&mut conn)
        .await
        .expect("EXISTS");
    assert_eq!(left, 0, "{venv}: join state removed");

    let worker = venv.start_worker(&world.cfg, "body").await;
    let got = py(
        &venv,
        &world.cfg,
        json!(body_id),
        "out(app.AsyncResult(ARGS).get(timeout=20))",
    )
    .await;
    assert_eq!(got, json!(14), "{venv}");
    worker.stop().await;
}

/// A failing header member: the join releases a failure; the body's FAILURE record carries
/// the same ChordError Python's join would write, and Python's `get()` raises it.
pub async fn python_chord_with_failing_member(venv: Venv) {
    let world = World::start().await;
    let backend = world.backend_for(&venv).await;
    let (body_id, taken) = python_chord(&venv, &world, r#"add.s(1, 1), fail.s("inchord")"#).await;
    assert_eq!(taken.len(), 2, "{venv}");
    let mut outcomes = Vec::new();
    for msg in &taken {
        outcomes.push(finish_member(&backend, msg).await);
    }
    let failing = taken
        .iter()
        .find(|m| m.headers["task"] == json!("tasks.fail"))
        .expect("fail member")
        .id();
    let Some(ChordPartOutcome::Release(release)) = outcomes.pop() else {
        panic!("{venv}: the last member releases: {outcomes:?}");
    };
    let failure = release.outcome.clone().expect_err("the chord failed");
    assert_eq!(failure.task_id, failing);
    assert_eq!(failure.state, State::Failure);
    let message = format!("Dependency {failing} raised ValueError('inchord')");
    assert_eq!(failure.error.message(), message);
    backend
        .store(&failure.body_meta(&body_id))
        .await
        .expect("stores");
    backend.chord_finish(&release).await.expect("cleans up");

    let got = py(
        &venv,
        &world.cfg,
        json!(body_id),
        r#"
r = app.AsyncResult(ARGS)
try:
    r.get(timeout=10)
    out(None)
except Exception as e:
    out([type(e).__module__, type(e).__name__, list(e.args), bool(r.traceback)])
"#,
    )
    .await;
    assert_eq!(
        got,
        json!(["celery.exceptions", "ChordError", [message], true]),
        "{venv}"
    );
}

/// The producer side: Rust sets the chord up (`init_chord`, both generations) and publishes
/// the header messages; a Python worker of this version runs the members, joins, and runs
/// the body; Rust waits for the body's result.
pub async fn rust_chord_runs_on_python_workers(venv: Venv) {
    let world = World::start().await;
    let worker = venv
        .start_worker_with(&world.cfg, WorkerOptions::new("hdr").queue("body"))
        .await;
    for generation in [ChordGeneration::Claim, ChordGeneration::Classic] {
        let backend = ResultBackend::builder(world.backend_url())
            .chord_generation(generation)
            .build()
            .await
            .expect("connects");
        let (gid, body_id) = (new_id(), new_id());
        let waiter = backend.subscribe(&body_id).await.expect("subscribes");
        backend
            .init_chord(&gid, 3)
            .await
            .expect("sets the chord up");
        let body_sig = json!({"task": "tasks.tsum", "args": [], "kwargs": {},
            "options": {"task_id": body_id, "group_id": gid, "queue": "body"},
            "subtask_type": null, "immutable": false});
        for (i, (x, y)) in [(1, 2), (3, 4), (5, 6)].into_iter().enumerate() {
            let body = json!([[x, y], {}, {"callbacks": null, "errbacks": null, "chain": null, "chord": body_sig}]);
            let index = u64::try_from(i).expect("small");
            publish_body(
                &world,
                "hdr",
                "tasks.add",
                &new_id(),
                &body,
                Some(&gid),
                Some(index),
                None,
            )
            .await;
        }
        let meta = waiter.wait(WAIT).await.expect("the body ran");
        assert_eq!(
            meta.result,
            json!(21),
            "{venv} {generation:?}: {}",
            worker.log()
        );
    }
    // A plain task too: the Python worker accepts the hand-built envelope.
    let id = new_id();
    let backend = world.backend_for(&venv).await;
    let waiter = backend.subscribe(&id).await.expect("subscribes");
    publish_task(&world, "hdr", "tasks.add", &id, json!([20, 22]), None, None).await;
    assert_eq!(waiter.wait(WAIT).await.expect("ran").result, json!(42));
    worker.stop().await;
}

/// Rust and Python workers finish members of one chord together (same bookkeeping): Rust
/// records two members, the Python worker the other two and releases the body itself; in the
/// second round Python finishes first and the Rust join releases.
pub async fn rust_and_python_workers_share_a_chord(venv: Venv) {
    let world = World::start().await;
    let backend = world.backend_for(&venv).await;

    // Round 1: Rust first, Python releases.
    let (body_id, taken) = python_chord(
        &venv,
        &world,
        "add.s(1, 1), add.s(2, 2), add.s(3, 3), add.s(4, 4)",
    )
    .await;
    assert_eq!(taken.len(), 4, "{venv}");
    for msg in &taken[..2] {
        let outcome = finish_member(&backend, msg).await;
        assert!(
            matches!(outcome, ChordPartOutcome::Pending { .. }),
            "{venv}: {outcome:?}"
        );
    }
    for msg in &taken[2..] {
        // Put Python's share back (as the client sent them).
        let sig = body_sig(msg);
        let index = msg.headers["group_index"].as_u64();
        let group = msg.headers["group"].as_str().map(str::to_owned);
        let body = json!([msg.body[0], msg.body[1], {"callbacks": null, "errbacks": null, "chain": null, "chord": sig}]);
        publish_body(
            &world,
            "hdr",
            "tasks.add",
            &msg.id(),
            &body,
            group.as_deref(),
            index,
            None,
        )
        .await;
    }
    let worker = venv
        .start_worker_with(&world.cfg, WorkerOptions::new("hdr").queue("body"))
        .await;
    let got = py(
        &venv,
        &world.cfg,
        json!(body_id),
        "out(app.AsyncResult(ARGS).get(timeout=20))",
    )
    .await;
    assert_eq!(got, json!(20), "{venv}: {}", worker.log());
    worker.stop().await;

    // Round 2: Python first (its worker stopped before the Rust share), Rust releases.
    let (_body_id, taken) =
        python_chord(&venv, &world, "add.s(5, 5), add.s(6, 6), add.s(7, 7)").await;
    assert_eq!(taken.len(), 3, "{venv}");
    let python_ids: Vec<String> = taken[1..].iter().map(Taken::id).collect();
    for msg in &taken[1..] {
        let sig = body_sig(msg);
        let body = json!([msg.body[0], msg.body[1], {"callbacks": null, "errbacks": null, "chain": null, "chord": sig}]);
        let group = msg.headers["group"].as_str().map(str::to_owned);
        publish_body(
            &world,
            "hdr",
            "tasks.add",
            &msg.id(),
            &body,
            group.as_deref(),
            msg.headers["group_index"].as_u64(),
            None,
        )
        .await;
    }
    let worker = venv.start_worker(&world.cfg, "hdr").await;
    for id in &python_ids {
        let meta = backend
            .wait(id, WAIT)
            .await
            .expect("the Python worker ran it");
        assert_eq!(meta.status, State::Success);
    }
    // The Python worker's join ran after its store; ours comes last and releases.
    for id in &python_ids {
        worker
            .wait_for_log(&format!("Task tasks.add[{id}] succeeded"))
            .await;
    }
    worker.stop().await;
    let ChordPartOutcome::Release(release) = finish_member(&backend, &taken[0]).await else {
        panic!("{venv}: the Rust join completes the chord");
    };
    assert_eq!(
        release.outcome.clone().expect("no failure"),
        vec![json!(10), json!(12), json!(14)],
        "{venv}"
    );
    assert!(
        backend.chord_finish(&release).await.expect("cleans up"),
        "{venv}"
    );
}
