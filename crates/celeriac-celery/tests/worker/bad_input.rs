//! Bad input loses nothing: an unknown task and a pickle message are dead-lettered with the
//! reason and acknowledged, never retried; the unknown task's client gets `NotRegistered`.

use celeriac_celery::worker::{CeleriacDeadLetters, DEAD_LETTER_LIST, TASK_ID_HEADER};
use celeriac_core::backend::QueueAdmin;
use celeriac_core::job::JobState;
use serde_json::{json, Value};

use crate::common::{py, World};
use crate::support::Venv;

/// An unknown task name: Celeriac's dead letters (a Celeriac Redis backend on db 2) hold it
/// with the reason, Python's `get()` raises `NotRegistered`, the message is acknowledged.
pub async fn unknown_task_is_dead_lettered(venv: Venv) {
    let world = World::start().await;
    let celeriac = celeriac_redis::RedisBackend::connect(&world.url(2))
        .await
        .expect("the Celeriac backend connects");
    let sink = CeleriacDeadLetters::new(celeriac.clone());
    let worker = world
        .run_worker(world.builder().dead_letters(sink.clone()))
        .await;
    let got = py(
        &venv,
        &world.cfg,
        json!(null),
        r#"
r = app.send_task("tasks.nope", (1, 2))
out([r.id, raised(r), r.state])
"#,
    )
    .await;
    let id = got[0].as_str().expect("id");
    assert_eq!(got[1][0], json!("NotRegistered"), "{venv}: {got}");
    assert!(
        got[1][2][0]
            .as_str()
            .is_some_and(|m| m.contains("tasks.nope")),
        "{got}"
    );
    assert_eq!(got[2], json!("FAILURE"));
    // The FAILURE is stored before the dead letter is recorded and the message acked: a
    // graceful stop waits for that to finish.
    worker.stop().await;
    let dead = celeriac
        .dead_letters(Some(sink.queue_for(&world.queue)), 10, 0)
        .await
        .expect("dead letters");
    assert_eq!(dead.len(), 1, "{dead:?}");
    let letter = &dead[0];
    assert_eq!(letter.state, JobState::Dead);
    assert_eq!(letter.job.task, "tasks.nope");
    assert_eq!(
        letter.job.headers.get(TASK_ID_HEADER).map(String::as_str),
        Some(id)
    );
    let error = letter.error.as_ref().expect("the reason");
    assert_eq!(error.kind, "unknown_task");
    assert!(
        error.message.contains("tasks.nope") && error.message.contains("not registered"),
        "{error:?}"
    );
    let envelope: Value = serde_json::from_slice(&letter.job.payload).expect("the envelope");
    assert_eq!(
        envelope["headers"]["id"],
        json!(id),
        "the message itself is kept"
    );
    assert_eq!(world.unacked().await, 0, "acknowledged");
    assert_eq!(world.waiting().await, 0, "not requeued");
}

/// A pickle message: dead-lettered (default sink: a Redis list on the broker) with the
/// reason, acknowledged, not retried, no result stored (as Python refuses it).
pub async fn pickle_is_dead_lettered(venv: Venv) {
    let world = World::start().await;
    let worker = world
        .run_worker(world.builder().concurrency(1).prefetch(1))
        .await;
    let got = py(
        &venv,
        &world.cfg,
        json!(null),
        r#"
p = add.apply_async((1, 2), serializer="pickle")
after = add.apply_async((2, 2))
out([p.id, after.get(timeout=30)])
"#,
    )
    .await;
    let id = got[0].as_str().expect("id");
    assert_eq!(got[1], json!(4), "{venv}: the next message still runs");
    let letters: Vec<String> = redis::cmd("LRANGE")
        .arg(DEAD_LETTER_LIST)
        .arg(0)
        .arg(-1)
        .query_async(&mut world.redis(0).await)
        .await
        .expect("LRANGE");
    assert_eq!(letters.len(), 1, "{letters:?}");
    let letter: Value = serde_json::from_str(&letters[0]).expect("JSON");
    assert_eq!(letter["kind"], json!("refused_content_type"));
    assert_eq!(letter["task_id"], json!(id));
    assert_eq!(letter["queue"], json!(world.queue));
    let reason = letter["reason"].as_str().expect("reason");
    assert!(
        reason.contains("application/x-python-serialize"),
        "{reason}"
    );
    assert_eq!(
        letter["envelope"]["content-type"],
        json!("application/x-python-serialize")
    );
    assert_eq!(world.meta(id).await, None, "no result, as Python");
    assert_eq!(world.unacked().await, 0, "acknowledged");
    assert_eq!(world.waiting().await, 0, "not requeued");
    worker.stop().await;
}

/// An unknown task inside a workflow fails it as Python's worker does: a chord member fails
/// the body (`ChordError`), a chain step fails the chain's end (`NotRegistered`).
pub async fn unknown_task_fails_its_workflow(venv: Venv) {
    let world = World::start().await;
    let worker = world.run_worker(world.builder()).await;
    let got = py(
        &venv,
        &world.cfg,
        json!(null),
        r#"
c = chord([add.s(1, 1), app.signature("tasks.nope", (1,))], tsum.s())()
ch = chain(app.signature("tasks.nope", (1,)), add.s(1))()
out([raised(app.AsyncResult(c.id)), raised(app.AsyncResult(ch.id))])
"#,
    )
    .await;
    assert_eq!(got[0][0], json!("ChordError"), "{venv}: {got}");
    assert!(
        got[0][2][0]
            .as_str()
            .is_some_and(|m| m.contains("NotRegistered")),
        "{got}"
    );
    assert_eq!(got[1][0], json!("NotRegistered"), "{venv}: {got}");
    worker.stop().await;
    let letters: u64 = redis::cmd("LLEN")
        .arg(DEAD_LETTER_LIST)
        .query_async(&mut world.redis(0).await)
        .await
        .expect("LLEN");
    assert_eq!(letters, 2, "both unknown messages are dead letters");
    assert_eq!(world.unacked().await, 0);
}
