//! Against real Python Celery: routing shared with Python (named exchanges and their
//! bindings, the global key prefix, fanout events).

use std::time::Duration;

use celeriac_celery::broker::TransportOptions;
use serde_json::json;

use crate::common::*;
use crate::support::{CeleryConfig, Venv};

#[tokio::test]
async fn named_exchange_messages_go_back_through_their_bindings() {
    let server = server().await;
    let b = broker(&server, TransportOptions::default()).await;
    let mut conn = raw_conn(&server, 0).await;
    b.bind_queue("named", "rk1", "bound").await.expect("bind");
    let members: Vec<String> = redis::cmd("SMEMBERS")
        .arg("_kombu.binding.named")
        .query_async(&mut conn)
        .await
        .expect("SMEMBERS");
    assert_eq!(
        members,
        [format!("rk1{SEP}{SEP}bound")],
        "kombu's member format"
    );

    b.publish("src", None, &envelope_via("n1", "named", "rk1"))
        .await
        .expect("publish");
    b.publish("src", None, &envelope_via("n2", "named", "unbound"))
        .await
        .expect("publish");
    let bound = take(&b, &["src"]).await;
    let unbound = take(&b, &["src"]).await;
    assert!(b.requeue(&bound.delivery_tag).await.expect("requeue"));
    assert!(b.requeue(&unbound.delivery_tag).await.expect("requeue"));
    assert_eq!(b.queue_len("src").await.expect("len"), 0);
    assert_eq!(
        id_of(&take(&b, &["bound"]).await),
        "n1",
        "through the binding"
    );
    // kombu would drop a message no binding matches; it goes to its routing key's queue.
    assert_eq!(id_of(&take(&b, &["unbound"]).await), "n2");

    // A Python producer routes through the binding we wrote.
    let venv = Venv::newest();
    let cfg = CeleryConfig::for_server(&server.url());
    let out = python(
        &venv,
        &cfg,
        "import json\nfrom kombu import Exchange\nfrom tasks import app\n\
         ex = Exchange('named', type='direct')\n\
         with app.producer_or_acquire() as p:\n    \
             p.publish({'x': 1}, exchange=ex, routing_key='rk1', declare=[ex], serializer='json')\n\
         print(json.dumps({'ok': True}))",
    )
    .await;
    assert_eq!(out, json!({"ok": true}));
    assert_eq!(
        b.queue_len("bound").await.expect("len"),
        1,
        "Python found our binding"
    );

    // And we route through a binding a Python process declared.
    let out = python(
        &venv,
        &cfg,
        "import json\nfrom kombu import Exchange, Queue\nfrom tasks import app\n\
         q = Queue('pyq', Exchange('pyex', type='direct'), routing_key='k')\n\
         with app.connection_for_write() as conn:\n    \
             q(conn.default_channel).declare()\n\
         print(json.dumps({'ok': True}))",
    )
    .await;
    assert_eq!(out, json!({"ok": true}));
    let raw = envelope_via("x1", "pyex", "k");
    assert_eq!(
        b.publish_to_exchange("pyex", "k", &raw)
            .await
            .expect("publish"),
        1
    );
    assert_eq!(b.queue_len("pyq").await.expect("len"), 1);
    assert_eq!(
        b.publish_to_exchange("pyex", "nobody", &raw)
            .await
            .expect("publish"),
        0
    );
    assert_eq!(
        b.publish_to_exchange("", "direct-q", &raw)
            .await
            .expect("publish"),
        1
    );
    assert_eq!(b.queue_len("direct-q").await.expect("len"), 1);
}

#[tokio::test]
async fn the_global_keyprefix_matches_pythons() {
    let server = server().await;
    let venv = Venv::newest();
    let cfg = CeleryConfig::for_server(&server.url()).broker_prefix("pfx:");
    let sent = python(
        &venv,
        &cfg,
        "import json\nfrom tasks import add\n\
         r = add.apply_async((5, 6), queue='pq', priority=9)\n\
         print(json.dumps({'id': r.id}))",
    )
    .await;
    let id = sent["id"].as_str().expect("task id");
    let b = broker(
        &server,
        TransportOptions::default().global_keyprefix("pfx:"),
    )
    .await;
    let d = take(&b, &["pq"]).await;
    assert_eq!(
        (id_of(&d).as_str(), d.queue.as_str(), d.priority),
        (id, "pq", 9)
    );
    assert!(b.requeue(&d.delivery_tag).await.expect("requeue"));
    let worker = venv.start_worker(&cfg, "pq").await;
    worker
        .wait_for_log(&format!("Task tasks.add[{id}] succeeded"))
        .await;
    let log = worker.stop().await;
    assert!(log.contains(": 11"), "{log}");
    assert_eq!(
        b.unacked_len().await.expect("HLEN"),
        0,
        "Python acked in pfx:unacked"
    );
    assert_eq!(b.queue_len("pq").await.expect("len"), 0);
}

#[tokio::test]
async fn we_receive_a_python_workers_events_on_kombus_fanout_channel() {
    use futures_util::StreamExt;
    let server = server().await;
    let venv = Venv::newest();
    let cfg = CeleryConfig::for_server(&server.url());
    let b = broker(&server, TransportOptions::default()).await;
    let mut events = b
        .subscribe_fanout(&[("celeryev", "#")])
        .await
        .expect("subscribe");
    let worker = venv.start_worker(&cfg, "ev").await;
    let m = tokio::time::timeout(Duration::from_secs(60), events.next())
        .await
        .expect("an event within a minute")
        .expect("the subscription is open");
    assert!(
        m.channel.starts_with("/0.celeryev/worker."),
        "{}",
        m.channel
    );
    let envelope = json_of(&m.raw);
    assert_eq!(
        envelope["properties"]["delivery_info"]["exchange"],
        json!("celeryev")
    );
    drop(worker);
}
