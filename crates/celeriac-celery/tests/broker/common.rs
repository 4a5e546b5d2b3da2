//! Helpers of the broker tests: a private server, connections, Celery-shaped envelopes.

use std::time::Duration;

use celeriac_celery::broker::{Delivery, KombuBroker, TransportOptions};
use celeriac_testkit::RedisServer;
use redis::aio::MultiplexedConnection;
use serde_json::{json, Value};

use crate::support::{CeleryConfig, Venv};

pub(crate) const SEP: &str = "\x06\x16";

pub(crate) const HOUR: f64 = 3600.0;

pub(crate) async fn server() -> RedisServer {
    RedisServer::start().await.expect("redis-server starts")
}

pub(crate) fn db_url(server: &RedisServer, db: u8) -> String {
    format!("{}/{db}", server.url())
}

pub(crate) async fn broker(server: &RedisServer, options: TransportOptions) -> KombuBroker {
    KombuBroker::connect(&db_url(server, 0), options)
        .await
        .expect("connects")
}

pub(crate) async fn raw_conn(server: &RedisServer, db: u8) -> MultiplexedConnection {
    redis::Client::open(db_url(server, db))
        .expect("url")
        .get_multiplexed_async_connection()
        .await
        .expect("raw connection")
}

/// An envelope shaped as Celery 5.7 writes it, with a fresh delivery tag.
pub(crate) fn envelope(id: &str, queue: &str, priority: u8) -> Vec<u8> {
    let tag = uuid::Uuid::new_v4().to_string();
    serde_json::to_vec(&json!({
        "body": "W1syLCAzXSwge30sIHsiY2FsbGJhY2tzIjogbnVsbCwgImVycmJhY2tzIjogbnVsbCwgImNoYWluIjogbnVsbCwgImNob3JkIjogbnVsbH1d",
        "content-encoding": "utf-8",
        "content-type": "application/json",
        "headers": {"lang": "py", "task": "tasks.add", "id": id, "retries": 0,
                    "timelimit": [null, null], "root_id": id, "parent_id": null},
        "properties": {"correlation_id": id, "reply_to": "", "delivery_mode": 2,
                       "delivery_info": {"exchange": "", "routing_key": queue},
                       "priority": priority, "body_encoding": "base64", "delivery_tag": tag}
    }))
    .expect("serializable")
}

pub(crate) fn json_of(raw: &[u8]) -> Value {
    serde_json::from_slice(raw).expect("the message is JSON")
}

pub(crate) fn id_of(d: &Delivery) -> String {
    json_of(&d.raw)["headers"]["id"]
        .as_str()
        .expect("headers.id")
        .to_owned()
}

pub(crate) async fn take(b: &KombuBroker, queues: &[&str]) -> Delivery {
    b.consume(queues, Duration::ZERO)
        .await
        .expect("consume works")
        .expect("a message is waiting")
}

pub(crate) async fn server_time(conn: &mut MultiplexedConnection) -> f64 {
    let (s, us): (f64, f64) = redis::cmd("TIME").query_async(conn).await.expect("TIME");
    s + us / 1e6
}

/// Moves an unacked entry's index score `seconds` into the past (as if taken that long ago).
pub(crate) async fn age(conn: &mut MultiplexedConnection, tag: &str, seconds: f64) {
    let score: f64 = redis::cmd("ZSCORE")
        .arg("unacked_index")
        .arg(tag)
        .query_async(conn)
        .await
        .expect("the tag is in unacked_index");
    let changed: i64 = redis::cmd("ZADD")
        .arg("unacked_index")
        .arg("XX")
        .arg("CH")
        .arg(score - seconds)
        .arg(tag)
        .query_async(conn)
        .await
        .expect("ZADD");
    assert_eq!(changed, 1, "aged {tag}");
}

pub(crate) async fn llen(conn: &mut MultiplexedConnection, key: &str) -> i64 {
    redis::cmd("LLEN")
        .arg(key)
        .query_async(conn)
        .await
        .expect("LLEN")
}

pub(crate) async fn hexists(conn: &mut MultiplexedConnection, tag: &str) -> bool {
    redis::cmd("HEXISTS")
        .arg("unacked")
        .arg(tag)
        .query_async(conn)
        .await
        .expect("HEXISTS")
}

/// Runs a Python snippet with the app of `tests/py/tasks.py` and returns its last JSON line.
pub(crate) async fn python(venv: &Venv, cfg: &CeleryConfig, code: &str) -> Value {
    venv.run(cfg, code).await.assert_success().json()
}

/// An envelope published through a named exchange.
pub(crate) fn envelope_via(id: &str, exchange: &str, routing_key: &str) -> Vec<u8> {
    let mut msg = json_of(&envelope(id, routing_key, 0));
    msg["properties"]["delivery_info"] = json!({"exchange": exchange, "routing_key": routing_key});
    serde_json::to_vec(&msg).expect("JSON")
}

/// Waits until the server has `n` clients blocked (a consume call's list watchers in
/// BLMOVE): the precondition of the wake-up tests. No event tells it, so this looks every
/// 20 ms, for at most 10 s.
pub(crate) async fn wait_blocked(server: &RedisServer, n: u32) {
    let mut blocked = 0;
    for _ in 0..500 {
        let info = server.command(&["INFO", "clients"]).await.expect("INFO");
        let text = match info {
            celeriac_testkit::resp::Value::Bulk(b) => String::from_utf8_lossy(&b).into_owned(),
            other => panic!("INFO replied {other:?}"),
        };
        blocked = text
            .lines()
            .find_map(|l| l.trim().strip_prefix("blocked_clients:"))
            .and_then(|n| n.parse::<u32>().ok())
            .unwrap_or(0);
        if blocked >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("only {blocked} of {n} clients blocked after 10 s");
}
