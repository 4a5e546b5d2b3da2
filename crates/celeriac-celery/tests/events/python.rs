//! A Python worker's events against the Rust [`EventSender`]'s, and Python's `State` built
//! from the Rust ones.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use celeriac_celery::broker::{FanoutSubscription, KombuBroker, TransportOptions};
use celeriac_celery::events::{Event, EventSender, ReceivedTask};
use celeriac_testkit::RedisServer;
use futures_util::StreamExt;
use serde_json::{json, Value};

use crate::support::{CeleryConfig, Venv};

/// Ceiling for an awaited event (never a synchronization sleep).
const WAIT: Duration = Duration::from_secs(90);

type KeySets = BTreeMap<String, BTreeSet<String>>;

/// Reads events from `sub` until `done` holds of the key sets of `hostname`'s events.
async fn collect(
    sub: &mut FanoutSubscription,
    hostname: &str,
    sets: &mut KeySets,
    done: impl Fn(&KeySets) -> bool,
) {
    let read = async {
        while !done(sets) {
            let msg = sub.next().await.expect("the event subscription stays open");
            assert!(
                msg.channel.starts_with("/0.celeryev/"),
                "events go to the celeryev fanout: {}",
                msg.channel
            );
            for ev in Event::decode(&msg.raw).expect("every event decodes") {
                if ev.hostname() == hostname {
                    sets.entry(ev.event_type().to_owned())
                        .or_default()
                        .extend(ev.fields.keys().cloned());
                }
            }
        }
    };
    if tokio::time::timeout(WAIT, read).await.is_err() {
        panic!("events of {hostname} missing; seen so far: {sets:?}");
    }
}

/// A broker on the Redis at `url` and its subscription to every `celeryev` event.
async fn celeryev(url: &str) -> (KombuBroker, FanoutSubscription) {
    let broker = KombuBroker::connect(url, TransportOptions::default())
        .await
        .expect("the broker connects");
    let sub = broker
        .subscribe_fanout(&[("celeryev", "#")])
        .await
        .expect("subscribes to celeryev");
    (broker, sub)
}

/// The events read from `sub` up to the first `worker-offline` (included).
///
/// # Panics
/// With `what` when none comes within [`WAIT`].
async fn until_offline(sub: &mut FanoutSubscription, what: &str) -> Vec<Event> {
    let mut seen = Vec::new();
    let read = async {
        loop {
            let msg = sub.next().await.expect("the subscription stays open");
            for ev in Event::decode(&msg.raw).expect("decodes") {
                let offline = ev.event_type() == "worker-offline";
                seen.push(ev);
                if offline {
                    return;
                }
            }
        }
    };
    tokio::time::timeout(WAIT, read).await.expect(what);
    seen
}

fn has_all(types: &'static [&'static str]) -> impl Fn(&KeySets) -> bool {
    move |sets| types.iter().all(|t| sets.contains_key(*t))
}

const TASK_TYPES: [&str; 6] = [
    "task-received",
    "task-started",
    "task-succeeded",
    "task-failed",
    "task-retried",
    "task-revoked",
];

/// A Python worker's events (captured here) and the Rust sender's have the same field sets
/// per type; Python's `EventReceiver` + `State` see the Rust worker alive at its heartbeat,
/// gone after `worker-offline`, and every task in the state its events give.
pub(crate) async fn rust_events_match_a_python_worker_and_feed_python_state(venv: Venv) {
    let server = RedisServer::start().await.expect("redis-server starts");
    let cfg = CeleryConfig::for_server(&server.url()).default_queue("pyq");
    let (broker, mut sub) = celeryev(&cfg.broker_url).await;

    // 1. A Python worker's events.
    let worker = venv.start_worker(&cfg, "pyq").await;
    let py_host = worker.hostname().to_owned();
    let out = venv
        .run(
            &cfg,
            &format!(
                r#"
from tasks import app, add, fail, retry_me
from celery.exceptions import TaskRevokedError
assert add.delay(2, 3).get(timeout=30) == 5
try:
    fail.delay('x').get(timeout=30)
except ValueError:
    pass
assert retry_me.delay(1).get(timeout=30) == 1
app.control.revoke('revoked-1', destination=[{py_host:?}], reply=True, timeout=10)
try:
    add.apply_async((1, 1), task_id='revoked-1').get(timeout=30)
except TaskRevokedError:
    pass
print('done')
"#
            ),
        )
        .await;
    out.assert_success();
    let mut python = KeySets::new();
    collect(&mut sub, &py_host, &mut python, |sets| {
        has_all(&["worker-online", "worker-heartbeat"])(sets)
            && TASK_TYPES.iter().all(|t| sets.contains_key(*t))
    })
    .await;
    worker.stop().await;
    collect(
        &mut sub,
        &py_host,
        &mut python,
        has_all(&["worker-offline"]),
    )
    .await;

    // 2. Python's receiver, subscribed before the Rust worker starts.
    let host = "celeriac@events-test";
    // `sub` holds the first pattern subscription (`/0.celeryev/*`), the receiver the second.
    let receiver = venv.state_receiver(&cfg, host, 2).await;

    // 3. The Rust worker's events.
    let events = EventSender::builder(host)
        .heartbeat_interval(Duration::from_millis(500))
        .start(broker.clone());
    let received = |id: &str| ReceivedTask {
        id: id.into(),
        name: "tasks.add".into(),
        args_repr: "(2, 3)".into(),
        kwargs_repr: "{}".into(),
        retries: 0,
        root_id: Some(id.into()),
        ..ReceivedTask::default()
    };
    assert!(events.task_received(&received("r-ok")));
    assert!(events.task_started("r-ok"));
    events.task_accepted();
    assert!(events.task_succeeded("r-ok", "5", 0.25));
    events.task_ready();
    assert!(events.task_received(&received("r-fail")));
    assert!(events.task_started("r-fail"));
    events.task_accepted();
    assert!(events.task_failed(
        "r-fail",
        "ValueError('x')",
        "Traceback ...\nValueError: x\n"
    ));
    events.task_ready();
    assert!(events.task_received(&received("r-retry")));
    assert!(events.task_retried("r-retry", "Retry('again')", ""));
    assert!(events.task_received(&received("r-revoked")));
    assert!(events.task_revoked("r-revoked", false, None, false));
    // No task-received first: Python's State ranks REJECTED below RECEIVED (precedence) and
    // would keep RECEIVED, for a Python worker's events too.
    assert!(events.task_rejected("r-rejected", false));
    let mut rust = KeySets::new();
    collect(&mut sub, host, &mut rust, has_all(&["worker-heartbeat"])).await;
    events.clone().stop().await;
    collect(&mut sub, host, &mut rust, |sets| {
        sets.contains_key("worker-offline") && TASK_TYPES.iter().all(|t| sets.contains_key(*t))
    })
    .await;
    let stats = events.stats();
    assert_eq!(stats.dropped, 0, "nothing dropped: {stats:?}");
    assert!(stats.sent >= 13, "every event published: {stats:?}");

    // Field sets: exactly a Python worker's, type by type.
    for (ty, keys) in &python {
        assert_eq!(
            rust.get(ty),
            Some(keys),
            "{venv}: fields of {ty}: Rust {:?} vs Python {keys:?}",
            rust.get(ty)
        );
    }
    let common: BTreeSet<String> = [
        "type",
        "hostname",
        "pid",
        "clock",
        "timestamp",
        "utcoffset",
        "uuid",
    ]
    .into_iter()
    .map(str::to_owned)
    .collect();
    let rejected: BTreeSet<String> = common
        .iter()
        .cloned()
        .chain(["requeue".to_owned()])
        .collect();
    assert_eq!(
        rust["task-rejected"], rejected,
        "task-rejected as Celery's request.reject sends it"
    );

    // Python's State, built from the Rust events.
    let out = receiver.finish().await;
    out.assert_success();
    let state = out.json();
    assert_eq!(state["alive_at_heartbeat"], json!(true), "{venv}: {state}");
    assert_eq!(
        state["alive_after_offline"],
        json!(false),
        "{venv}: {state}"
    );
    assert_eq!(state["processed"], 2);
    assert_eq!(state["active"], 0);
    assert_eq!(state["freq"], json!(0.5));
    let types: Vec<&Value> = state["seen"]
        .as_array()
        .expect("seen")
        .iter()
        .map(|e| &e[0])
        .collect();
    assert_eq!(types.first(), Some(&&json!("worker-online")), "{state}");
    assert_eq!(types.last(), Some(&&json!("worker-offline")), "{state}");
    let tasks = &state["tasks"];
    for (id, st) in [
        ("r-ok", "SUCCESS"),
        ("r-fail", "FAILURE"),
        ("r-retry", "RETRY"),
        ("r-revoked", "REVOKED"),
        ("r-rejected", "REJECTED"),
    ] {
        assert_eq!(tasks[id]["state"], st, "{venv}: {id}: {state}");
        assert_eq!(tasks[id]["worker"], host, "{id}");
        if id != "r-rejected" {
            assert_eq!(tasks[id]["name"], "tasks.add", "{id}");
        }
    }
    assert_eq!(tasks["r-ok"]["result"], "5");
    assert_eq!(tasks["r-fail"]["exception"], "ValueError('x')");
}

/// With a queue of one and a server that answers nothing (paused), sends return at once, the
/// overflow is counted, and what was queued goes out once the server is back.
pub(crate) async fn a_full_queue_drops_and_counts_without_blocking() {
    let server = RedisServer::start().await.expect("redis-server starts");
    let (broker, mut sub) = celeryev(&format!("{}/0", server.url())).await;
    server.pause();
    let host = "celeriac@full";
    // The publisher blocks on worker-online; the queue of one then takes one event.
    let events = EventSender::builder(host).capacity(1).start(broker);
    let queued: Vec<bool> = (0..200)
        .map(|i| events.task_started(&format!("t{i}")))
        .collect();
    let stats = events.stats();
    server.resume();
    assert_eq!(
        queued.iter().filter(|q| **q).count(),
        1,
        "one fits: {stats:?}"
    );
    assert!(queued[0], "the first one fits");
    assert_eq!(stats.dropped, 199, "every other one is counted: {stats:?}");
    events.set_task_events(false);
    assert!(!events.task_started("off"), "task events can be turned off");
    assert_eq!(events.stats().dropped, 199, "disabled is not dropped");
    events.stop().await;
    let order: Vec<Value> = until_offline(&mut sub, "worker-offline once the server is back")
        .await
        .iter()
        .filter(|ev| ev.event_type() == "task-started")
        .map(|ev| ev.fields["uuid"].clone())
        .collect();
    assert_eq!(order, vec![json!("t0")], "the queued event went out, once");
}

/// Dropping the last clone of a sender (without `stop`) still ends with `worker-offline`,
/// after the events queued before it; heartbeats come at the configured interval.
pub(crate) async fn dropping_the_sender_sends_worker_offline() {
    let server = RedisServer::start().await.expect("redis-server starts");
    let (broker, mut sub) = celeryev(&format!("{}/0", server.url())).await;
    let host = "celeriac@drop-test";
    let events = EventSender::builder(host)
        .heartbeat_interval(Duration::from_millis(100))
        .start(broker);
    let clone = events.clone();
    let mut seen = KeySets::new();
    collect(
        &mut sub,
        host,
        &mut seen,
        has_all(&["worker-online", "worker-heartbeat"]),
    )
    .await;
    assert!(events.task_started("last-one"));
    drop(events);
    assert!(!seen.contains_key("worker-offline"), "a clone still lives");
    drop(clone);
    let order: Vec<String> = until_offline(&mut sub, "worker-offline after the last drop")
        .await
        .iter()
        .map(|ev| ev.event_type().to_owned())
        .collect();
    let started = order.iter().position(|t| t == "task-started");
    assert!(
        started.is_some_and(|i| i + 1 < order.len()),
        "the queued event goes out before worker-offline: {order:?}"
    );
}
