//! §14 group 2, plain calls: every message variant the call builder makes runs on a Python
//! worker and its result (or failure) reads back in Rust; every message is captured on its
//! list before a worker starts, checked against the fatal shapes and against the key sets of
//! Python's message for the same call.

use std::collections::BTreeMap;
use std::time::Duration;

use celeriac_celery::client::{AsyncResult, ClientError};
use celeriac_celery::protocol::Signature;
use celeriac_celery::results::State;
use chrono::Utc;
use serde::Serialize;
use serde_json::{json, Value};

use crate::common::*;
use crate::support::{Venv, WorkerOptions};

#[derive(Serialize)]
struct AddKwargs {
    x: i64,
    y: i64,
}

/// The same calls from a Python client, each to its own queue nobody serves.
const PYTHON_CALLS: &str = "\
add.apply_async((2, 3), queue='py-args')
add.apply_async(kwargs={'x': 4, 'y': 5}, queue='py-kwargs')
add.apply_async((1,), {'y': 6}, queue='py-both')
add.apply_async((100, 1), countdown=2, queue='py-countdown')
add.apply_async((3, 4), eta=NOW + timedelta(seconds=1), queue='py-eta')
add.apply_async((1, 1), expires=NOW - timedelta(seconds=60), queue='py-expired')
add.apply_async((20, 22), expires=3600, queue='py-expires_future')
add.apply_async((5, 5), priority=5, queue='py-priority')
request_info.apply_async(queue='py-routed')
sleep.apply_async((30,), time_limit=1, queue='py-limit')
add.apply_async((1, 2), ignore_result=True, queue='py-ignored')
add.apply_async((2, 2), link=add.s(10).set(task_id='cb', queue='rq'), queue='py-link')
fail.apply_async(('linked',), link_error=on_err.s().set(task_id='eb', queue='rq'), queue='py-link_error')
fail.apply_async(('boom',), queue='py-fail')
retry_me.apply_async((1,), queue='py-retry')
";

fn revoked(err: &ClientError) -> bool {
    matches!(err, ClientError::Revoked { reason, .. } if reason == "expired")
}

pub async fn message_variants_run_on_python_workers(venv: Venv) {
    let world = World::start().await;
    let client = world.client(&venv, "rq").await;
    let add = || client.send_task("tasks.add");
    let mut sent: BTreeMap<&str, AsyncResult> = BTreeMap::new();
    let mut put = |name, r: Result<AsyncResult, ClientError>| {
        sent.insert(
            name,
            r.unwrap_or_else(|e| panic!("{venv}: send {name}: {e}")),
        );
    };

    let own_id = uuid::Uuid::new_v4().to_string();
    put("args", add().args((2, 3)).task_id(&own_id).send().await);
    put(
        "kwargs",
        add().kwargs(AddKwargs { x: 4, y: 5 }).send().await,
    );
    put(
        "both",
        add().args((1,)).kwargs(json!({"y": 6})).send().await,
    );
    // The client resolves countdowns against the broker's clock.
    let before_countdown = client.broker().now();
    put(
        "countdown",
        add()
            .args((100, 1))
            .countdown(Duration::from_secs(2))
            .send()
            .await,
    );
    put(
        "eta",
        add()
            .args((3, 4))
            .eta(Utc::now() + chrono::Duration::seconds(1))
            .send()
            .await,
    );
    put(
        "expired",
        add()
            .args((1, 1))
            .expires(Utc::now() - chrono::Duration::seconds(60))
            .send()
            .await,
    );
    put(
        "expires_future",
        add()
            .args((20, 22))
            .expires(Duration::from_secs(3600))
            .send()
            .await,
    );
    put("priority", add().args((5, 5)).priority(5).send().await);
    put(
        "routed",
        client
            .send_task("tasks.request_info")
            .queue("other")
            .send()
            .await,
    );
    put(
        "limit",
        client
            .send_task("tasks.sleep")
            .args((30,))
            .time_limits(Some(Duration::from_secs(1)), None)
            .queue("other")
            .send()
            .await,
    );
    put(
        "ignored",
        add().args((1, 2)).ignore_result(true).send().await,
    );
    let cb_id = uuid::Uuid::new_v4().to_string();
    let callback = Signature::new("tasks.add")
        .with_args(vec![json!(10)])
        .with_option("task_id", cb_id.clone())
        .with_option("queue", "rq");
    put("link", add().args((2, 2)).link(callback).send().await);
    let eb_id = uuid::Uuid::new_v4().to_string();
    // Without a queue option the worker would send them to its default queue (`celery`).
    let errback = Signature::new("tasks.on_err")
        .with_option("task_id", eb_id.clone())
        .with_option("queue", "rq");
    put(
        "link_error",
        client
            .send_task("tasks.fail")
            .args(("linked",))
            .link_error(errback)
            .send()
            .await,
    );
    put(
        "fail",
        client.send_task("tasks.fail").args(("boom",)).send().await,
    );
    put(
        "retry",
        client.send_task("tasks.retry_me").args((1,)).send().await,
    );

    assert_eq!(sent["args"].id, own_id, "{venv}: task_id");

    // Every message, as it sits on its list before any worker runs.
    let wires = capture(&world, &["rq", "other"]).await;
    assert_eq!(wires.len(), sent.len(), "{venv}: one message per call");
    for (name, r) in &sent {
        let wire = wires
            .get(&r.id)
            .unwrap_or_else(|| panic!("{venv}: {name} ({}) is on a list", r.id));
        assert_wire_safe(wire, &format!("{venv} {name}"));
        assert_eq!(wire.headers()["lang"], "rust", "{venv} {name}");
    }
    let wire = |name: &str| &wires[&sent[name].id];
    assert_eq!(
        wire("priority").list,
        format!("rq{SEP}3"),
        "{venv}: priority 5 is on the step-3 list"
    );
    assert_eq!(wire("priority").envelope["properties"]["priority"], 5);
    assert_eq!(wire("routed").list, "other", "{venv}");
    assert_eq!(wire("limit").headers()["timelimit"], json!([1, null]));
    assert_eq!(wire("expired").envelope["properties"]["expiration"], "0");
    assert_eq!(wire("ignored").headers()["ignore_result"], true);
    assert_eq!(wire("kwargs").body[0], json!([]));
    assert_eq!(wire("kwargs").body[1], json!({"x": 4, "y": 5}));
    assert_eq!(
        wire("link").body[2]["callbacks"][0]["options"]["task_id"],
        json!(cb_id)
    );

    // Python's messages for the same calls: the same key sets.
    let names: Vec<&str> = sent.keys().copied().collect();
    let queues: Vec<String> = names.iter().map(|n| format!("py-{n}")).collect();
    let queue_refs: Vec<&str> = queues.iter().map(String::as_str).collect();
    let python = python_reference(&venv, &world.cfg, PYTHON_CALLS, &world, &queue_refs).await;
    for name in &names {
        let py = &python[&format!("py-{name}")];
        assert_eq!(py.headers()["lang"], "py", "{venv}: Python's message");
        assert_same_keys(wire(name), py, &format!("{venv} {name}"));
        assert_same_values(wire(name), py, &format!("{venv} {name}"));
    }

    // Now the workers: a solo one on `rq`, a prefork one (time limits need it) on `other`.
    let other_options = WorkerOptions::new("other")
        .arg("-P")
        .arg("prefork")
        .arg("-c")
        .arg("1");
    let (main, other) = tokio::join!(
        venv.start_worker(&world.cfg, "rq"),
        venv.start_worker_with(&world.cfg, other_options)
    );
    let logs = || format!("rq:\n{}\nother:\n{}", main.log(), other.log());

    let get_i64 = |name: &str| sent[name].clone();
    for (name, expected) in [
        ("args", 5),
        ("kwargs", 9),
        ("both", 7),
        ("countdown", 101),
        ("eta", 7),
        ("expires_future", 42),
        ("priority", 10),
        ("link", 4),
        ("retry", 1),
    ] {
        let value: i64 = get_i64(name)
            .get(WAIT)
            .await
            .unwrap_or_else(|e| panic!("{venv} {name}: {e}\n{}", logs()));
        assert_eq!(value, expected, "{venv} {name}");
    }

    // countdown and eta: the worker ran each task (date_done, its clock) after its eta (the
    // client's clock; same host).
    for name in ["countdown", "eta"] {
        let eta = wires[&sent[name].id].headers()["eta"]
            .as_str()
            .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
            .unwrap_or_else(|| panic!("{venv} {name}: an RFC 3339 eta"));
        let done = sent[name]
            .meta()
            .await
            .expect("meta")
            .and_then(|m| m.date_done)
            .unwrap_or_else(|| panic!("{venv} {name}: date_done"));
        assert!(done >= eta, "{venv} {name}: ran at {done}, eta {eta}");
        if name == "countdown" {
            let earliest = before_countdown + chrono::Duration::seconds(2);
            assert!(eta >= earliest, "{venv}: eta {eta} is now + countdown");
        }
    }

    // expires in the past: REVOKED, read in Rust.
    let err = sent["expired"].get::<i64>(WAIT).await.expect_err("revoked");
    assert!(revoked(&err), "{venv}: {err}");
    assert_eq!(
        sent["expired"].state().await.expect("state"),
        State::Revoked
    );
    assert!(sent["expired"].ready().await.expect("ready"));

    // queue routing: the worker on `other` ran it.
    let info: Value = sent["routed"].get(WAIT).await.expect("routed ran");
    assert_eq!(info["hostname"], json!(other.hostname()), "{venv}: {info}");
    assert_eq!(
        info["delivery_info"]["routing_key"], "other",
        "{venv}: {info}"
    );
    assert_eq!(info["retries"], 0, "{venv}");

    // The hard time limit killed the sleeping task.
    let err = sent["limit"].get::<Value>(WAIT).await.expect_err("killed");
    let failure = err.failure().unwrap_or_else(|| panic!("{venv}: {err}"));
    assert_eq!(failure.exc_type, "TimeLimitExceeded", "{venv}: {err}");
    assert!(err.to_string().contains("TimeLimitExceeded"), "{err}");

    // ignore_result: it ran, and nothing was stored.
    main.wait_for_log(&format!("Task tasks.add[{}] succeeded", sent["ignored"].id))
        .await;
    assert!(
        sent["ignored"].meta().await.expect("meta").is_none(),
        "{venv}"
    );
    assert_eq!(
        sent["ignored"].state().await.expect("state"),
        State::Pending
    );

    // link: the callback got the result; link_error: the errback got the failed id.
    let cb: i64 = client.result(&cb_id).get(WAIT).await.expect("callback ran");
    assert_eq!(cb, 14, "{venv}");
    let err = sent["link_error"]
        .get::<Value>(WAIT)
        .await
        .expect_err("fails");
    assert_eq!(err.failure().map(|f| f.message.as_str()), Some("linked"));
    let eb: String = client.result(&eb_id).get(WAIT).await.expect("errback ran");
    assert_eq!(eb, sent["link_error"].id, "{venv}: the errback's argument");

    // A Python failure: class, message, traceback.
    let err = sent["fail"].get::<Value>(WAIT).await.expect_err("fails");
    let failure = err.failure().unwrap_or_else(|| panic!("{venv}: {err}"));
    assert_eq!(failure.exc_type, "ValueError");
    assert_eq!(failure.exc_module.as_deref(), Some("builtins"));
    assert_eq!(failure.message, "boom");
    let tb = failure.traceback.as_deref().unwrap_or_default();
    assert!(
        tb.contains("Traceback") && tb.contains("ValueError: boom"),
        "{tb}"
    );
    assert!(sent["fail"].forget().await.expect("forget"), "{venv}");
    assert_eq!(sent["fail"].state().await.expect("state"), State::Pending);

    main.stop().await;
    other.stop().await;
}
