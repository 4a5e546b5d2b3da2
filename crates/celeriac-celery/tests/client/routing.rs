//! Routing settings: global key prefixes shared with Python workers (broker and result
//! backend, both prefix rules), and named exchanges through kombu's bindings.

use celeriac_celery::client::{Client, ClientError};
use celeriac_celery::protocol::Signature;
use celeriac_celery::results::KeyPrefixStyle;
use serde_json::json;

use crate::common::*;
use crate::support::Venv;

/// A client and a Python worker with `global_keyprefix` on both the broker and the backend:
/// a task and a chord (its size key under the prefixed name) complete.
pub async fn key_prefixes_match_python(venv: Venv) {
    let world = World::start().await;
    let prefix = "app:";
    let cfg = world
        .cfg
        .clone()
        .broker_prefix(prefix)
        .backend_prefix(prefix)
        .default_queue("pq");
    let style = if venv.at_least(5, 7) {
        KeyPrefixStyle::UnlessSeparator
    } else {
        KeyPrefixStyle::AlwaysUnderscore
    };
    let client = Client::builder(cfg.broker_url.clone())
        .result_backend(cfg.backend_url.clone())
        .default_queue("pq")
        .broker_keyprefix(prefix)
        .backend_keyprefix(prefix, style)
        .chord_generation(generation_of(&venv))
        .build()
        .await
        .expect("connects");
    let task = client
        .send_task("tasks.add")
        .args((20, 22))
        .send()
        .await
        .expect("sent");
    let chord = client
        .apply(Signature::chord(
            vec![
                Signature::new("tasks.add").with_args(vec![json!(1), json!(2)]),
                Signature::new("tasks.add").with_args(vec![json!(3), json!(4)]),
            ],
            Signature::new("tasks.tsum"),
        ))
        .await
        .expect("sent")
        .into_task()
        .expect("one result");

    let wires = capture(&world, &["app:pq"]).await;
    assert_eq!(wires.len(), 3, "{venv}: on the prefixed list");
    assert!(
        world.lrange("pq").await.is_empty(),
        "{venv}: nothing unprefixed"
    );
    for (id, wire) in &wires {
        assert_wire_safe_prefixed(wire, &format!("{venv} {id}"), prefix);
        // delivery_info names the queue, not the key (a restore adds the prefix again).
        assert_eq!(
            wire.envelope["properties"]["delivery_info"]["routing_key"],
            "pq"
        );
    }

    let worker = venv.start_worker(&cfg, "pq").await;
    let sum: i64 = task
        .get(WAIT)
        .await
        .unwrap_or_else(|e| panic!("{venv}: {e}\n{}", worker.log()));
    assert_eq!(sum, 42, "{venv}");
    let total: i64 = chord
        .get(WAIT)
        .await
        .unwrap_or_else(|e| panic!("{venv}: {e}\n{}", worker.log()));
    assert_eq!(total, 10, "{venv}");
    // The records are where Python's prefix rule puts them.
    let key = match style {
        KeyPrefixStyle::UnlessSeparator => format!("app:celery-task-meta-{}", task.id),
        _ => format!("app:_celery-task-meta-{}", task.id),
    };
    let mut backend = world.redis(1).await;
    let exists: bool = redis::cmd("EXISTS")
        .arg(&key)
        .query_async(&mut backend)
        .await
        .expect("EXISTS");
    assert!(exists, "{venv}: {key}");
    worker.stop().await;
}

#[tokio::test]
async fn named_exchange_routes_through_bindings() {
    let world = World::start().await;
    let client = Client::builder(world.cfg.broker_url.clone())
        .default_queue("dq")
        .default_exchange("named")
        .default_routing_key("rk")
        .build()
        .await
        .expect("connects");
    let err = client
        .send_task("tasks.add")
        .args((1, 2))
        .send()
        .await
        .expect_err("nothing is bound yet");
    assert!(
        matches!(&err, ClientError::Unroutable { exchange, routing_key, .. }
            if exchange == "named" && routing_key == "rk"),
        "{err:?}"
    );
    client
        .broker()
        .bind_queue("named", "rk", "bound")
        .await
        .expect("bind");
    let r = client
        .send_task("tasks.add")
        .args((1, 2))
        .send()
        .await
        .expect("sent");
    // An explicit queue bypasses the exchange.
    let direct = client
        .send_task("tasks.add")
        .queue("direct")
        .send()
        .await
        .expect("sent");
    let bound = capture(&world, &["bound"]).await;
    assert_eq!(bound.len(), 1);
    let wire = &bound[&r.id];
    assert_wire_shape(wire, "through the exchange");
    assert_eq!(wire.list, "bound");
    let info = &wire.envelope["properties"]["delivery_info"];
    assert_eq!(info["exchange"], "named");
    assert_eq!(info["routing_key"], "rk");
    let direct_wires = capture(&world, &["direct"]).await;
    assert_wire_safe(&direct_wires[&direct.id], "explicit queue");
    assert!(world.lrange("dq").await.is_empty());
}
