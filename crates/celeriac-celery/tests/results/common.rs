//! Shared setup of the result backend tests: a private redis-server, the Celery config the
//! Python side uses, a Rust backend of the matching generation, and kombu envelopes by hand.

use std::time::Duration;

use base64::Engine as _;
use celeriac_celery::results::{
    ChordGeneration, KeyPrefixStyle, ResultBackend, ResultBackendBuilder,
};
use celeriac_testkit::RedisServer;
use redis::aio::MultiplexedConnection;
use serde_json::{json, Value};

use crate::support::{CeleryConfig, PyOutput, Venv};

/// How long a Python `get()` or a Rust `wait` may take before the test fails.
pub const WAIT: Duration = Duration::from_secs(20);

/// One test's world: its own redis-server (broker db 0, backend db 1).
pub struct World {
    pub server: RedisServer,
    pub cfg: CeleryConfig,
}

impl World {
    pub async fn start() -> World {
        let server = RedisServer::start().await.expect("redis-server starts");
        let cfg = CeleryConfig::for_server(&server.url()).default_queue("hdr");
        World { server, cfg }
    }

    pub fn backend_url(&self) -> String {
        format!("{}/1", self.server.url())
    }

    /// A Rust backend that behaves like `venv`'s Celery (chord generation, key prefix rule).
    pub fn builder_for(&self, venv: &Venv) -> ResultBackendBuilder {
        ResultBackend::builder(self.backend_url()).chord_generation(generation_of(venv))
    }

    pub async fn backend_for(&self, venv: &Venv) -> ResultBackend {
        self.builder_for(venv)
            .build()
            .await
            .expect("backend connects")
    }

    /// A plain connection to db `db`.
    pub async fn redis(&self, db: u8) -> MultiplexedConnection {
        redis::Client::open(format!("{}/{db}", self.server.url()))
            .expect("valid URL")
            .get_multiplexed_async_connection()
            .await
            .expect("redis connects")
    }
}

/// The chord bookkeeping of `venv`'s Celery.
pub fn generation_of(venv: &Venv) -> ChordGeneration {
    if venv.at_least(5, 7) {
        ChordGeneration::Claim
    } else {
        ChordGeneration::Classic
    }
}

/// How `venv`'s Celery joins `global_keyprefix`.
pub fn prefix_style_of(venv: &Venv) -> KeyPrefixStyle {
    if venv.at_least(5, 7) {
        KeyPrefixStyle::UnlessSeparator
    } else {
        KeyPrefixStyle::AlwaysUnderscore
    }
}

/// Runs a Python snippet with `ARGS` (JSON) decoded into the variable `ARGS`, `app` imported
/// from `tasks`, and `out(value)` printing JSON; returns the printed JSON.
pub async fn py(venv: &Venv, cfg: &CeleryConfig, args: Value, code: &str) -> Value {
    let out = py_raw(venv, cfg, args, code).await;
    out.assert_success();
    out.json()
}

/// As [`py`], without asserting success.
pub async fn py_raw(venv: &Venv, cfg: &CeleryConfig, args: Value, code: &str) -> PyOutput {
    let cfg = cfg.clone().env("ARGS", args.to_string());
    venv.run(&cfg, &with_prelude(code)).await
}

pub fn with_prelude(code: &str) -> String {
    format!(
        "import json, os, sys\nfrom tasks import app\nARGS = json.loads(os.environ['ARGS'])\n\
         def out(value):\n    print(json.dumps(value), flush=True)\n{code}\n"
    )
}

/// A task message as taken off a queue: `(headers, [args, kwargs, embed])`.
pub struct Taken {
    pub headers: Value,
    pub body: Value,
}

impl Taken {
    pub fn id(&self) -> String {
        self.headers["id"].as_str().expect("headers.id").to_owned()
    }
}

/// Removes every message from the list `queue` (db 0) and decodes it.
pub async fn take_all(world: &World, queue: &str) -> Vec<Taken> {
    let mut broker = world.redis(0).await;
    let mut taken = Vec::new();
    loop {
        // Python LPUSHes and workers BRPOP: RPOP takes them in publish order.
        let raw: Option<String> = redis::cmd("RPOP")
            .arg(queue)
            .query_async(&mut broker)
            .await
            .expect("RPOP");
        let Some(raw) = raw else { break };
        taken.push(decode_envelope(&raw));
    }
    taken
}

pub fn decode_envelope(raw: &str) -> Taken {
    let envelope: Value = serde_json::from_str(raw).expect("the envelope is JSON");
    let body = envelope["body"].as_str().expect("body is a string");
    assert_eq!(
        envelope["properties"]["body_encoding"],
        json!("base64"),
        "{envelope}"
    );
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(body)
        .expect("body is base64");
    let body: Value = serde_json::from_slice(&bytes).expect("body is JSON");
    Taken {
        headers: envelope["headers"].clone(),
        body,
    }
}

/// Publishes a protocol-v2 task message the way kombu does (§3, §4.4) to `queue` (db 0).
pub async fn publish_task(
    world: &World,
    queue: &str,
    task: &str,
    id: &str,
    args: Value,
    group: Option<&str>,
    parent_id: Option<&str>,
) {
    let body =
        json!([args, {}, {"callbacks": null, "errbacks": null, "chain": null, "chord": null}]);
    publish_body(world, queue, task, id, &body, group, None, parent_id).await;
}

/// As [`publish_task`] with a full `[args, kwargs, embed]` body and a group index.
#[allow(clippy::too_many_arguments)]
pub async fn publish_body(
    world: &World,
    queue: &str,
    task: &str,
    id: &str,
    body: &Value,
    group: Option<&str>,
    group_index: Option<u64>,
    parent_id: Option<&str>,
) {
    let encoded = base64::engine::general_purpose::STANDARD.encode(body.to_string());
    let envelope = json!({
        "body": encoded,
        "content-encoding": "utf-8",
        "content-type": "application/json",
        "headers": {
            "lang": "py", "task": task, "id": id, "shadow": null, "eta": null, "expires": null,
            "group": group, "group_index": group_index, "retries": 0, "timelimit": [null, null],
            "root_id": parent_id.unwrap_or(id), "parent_id": parent_id,
            "argsrepr": body[0].to_string(), "kwargsrepr": "{}", "origin": "rust-test",
            "ignore_result": false, "replaced_task_nesting": 0, "stamped_headers": null, "stamps": {}
        },
        "properties": {
            "correlation_id": id, "reply_to": "", "delivery_mode": 2,
            "delivery_info": {"exchange": "", "routing_key": queue}, "priority": 0,
            "body_encoding": "base64", "delivery_tag": uuid::Uuid::new_v4().to_string()
        }
    });
    let mut broker = world.redis(0).await;
    let _: i64 = redis::cmd("LPUSH")
        .arg(queue)
        .arg(envelope.to_string())
        .query_async(&mut broker)
        .await
        .expect("LPUSH");
}

pub fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// Asserts that `key` (db 1) expires in `expected` seconds, allowing for the time elapsed
/// since `stored_before` (an instant taken before the write): no fixed slack that a slow
/// machine could exceed.
pub async fn assert_ttl(
    world: &World,
    key: &str,
    expected: i64,
    stored_before: std::time::Instant,
) {
    let mut conn = world.redis(1).await;
    let ttl: i64 = redis::cmd("TTL")
        .arg(key)
        .query_async(&mut conn)
        .await
        .expect("TTL");
    let elapsed = i64::try_from(stored_before.elapsed().as_secs()).expect("seconds") + 1;
    assert!(
        (expected - elapsed..=expected).contains(&ttl),
        "{key}: TTL {ttl}, expected {expected} (less at most {elapsed} s elapsed)"
    );
}
