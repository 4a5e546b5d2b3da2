//! Shared setup of the client tests: a private redis-server (broker db 0, backend db 1), a
//! Rust client matching a Celery version, capture of the raw envelopes it publishes, the
//! checks every one of them must pass (§4.3/§12.3 fatal shapes), and Python's envelopes for
//! the same calls.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use base64::Engine as _;
use celeriac_celery::client::Client;
use celeriac_celery::results::ChordGeneration;
use celeriac_testkit::RedisServer;
use redis::aio::MultiplexedConnection;
use serde_json::Value;

use crate::support::{CeleryConfig, Venv};

/// How long a Rust `get` may take before the test fails.
pub const WAIT: Duration = Duration::from_secs(30);
/// kombu's priority sub-queue separator.
pub const SEP: &str = "\x06\x16";

/// One test's world: its own redis-server.
pub struct World {
    pub server: RedisServer,
    pub cfg: CeleryConfig,
}

impl World {
    pub async fn start() -> World {
        let server = RedisServer::start().await.expect("redis-server starts");
        let cfg = CeleryConfig::for_server(&server.url());
        World { server, cfg }
    }

    /// A client like `venv`'s workers expect, sending to `queue` by default.
    pub async fn client(&self, venv: &Venv, queue: &str) -> Client {
        let generation = generation_of(venv);
        Client::builder(self.cfg.broker_url.clone())
            .result_backend(self.cfg.backend_url.clone())
            .default_queue(queue)
            .chord_generation(generation)
            .build()
            .await
            .expect("the client connects")
    }

    /// A plain connection to db `db`.
    pub async fn redis(&self, db: u8) -> MultiplexedConnection {
        redis::Client::open(format!("{}/{db}", self.server.url()))
            .expect("valid URL")
            .get_multiplexed_async_connection()
            .await
            .expect("redis connects")
    }

    /// Every raw envelope waiting on `queue` (all four priority lists), oldest first within a
    /// list, as `(list key, raw JSON)`.
    pub async fn lrange(&self, queue: &str) -> Vec<(String, String)> {
        let mut conn = self.redis(0).await;
        let mut all = Vec::new();
        for key in priority_keys(queue) {
            let mut items: Vec<String> = redis::cmd("LRANGE")
                .arg(&key)
                .arg(0)
                .arg(-1)
                .query_async(&mut conn)
                .await
                .expect("LRANGE");
            // LPUSH puts the newest first.
            items.reverse();
            all.extend(items.into_iter().map(|raw| (key.clone(), raw)));
        }
        all
    }
}

/// The chord bookkeeping of `venv`'s workers.
pub fn generation_of(venv: &Venv) -> ChordGeneration {
    if venv.at_least(5, 7) {
        ChordGeneration::Claim
    } else {
        ChordGeneration::Classic
    }
}

/// The four list keys of `queue` (kombu's default priority steps).
pub fn priority_keys(queue: &str) -> Vec<String> {
    vec![
        queue.to_owned(),
        format!("{queue}{SEP}3"),
        format!("{queue}{SEP}6"),
        format!("{queue}{SEP}9"),
    ]
}

/// A raw envelope, parsed: the envelope object and its decoded body.
#[derive(Debug, Clone)]
pub struct Wire {
    pub list: String,
    pub envelope: Value,
    pub body: Value,
}

impl Wire {
    pub fn parse(list: &str, raw: &str) -> Wire {
        let envelope: Value = serde_json::from_str(raw).expect("the envelope is JSON");
        let text = envelope["body"].as_str().expect("body is a string");
        let bytes = match envelope["properties"]["body_encoding"].as_str() {
            Some("base64") => base64::engine::general_purpose::STANDARD
                .decode(text)
                .expect("body is base64"),
            _ => text.as_bytes().to_vec(),
        };
        let body = serde_json::from_slice(&bytes).expect("body is JSON");
        Wire {
            list: list.to_owned(),
            envelope,
            body,
        }
    }

    pub fn id(&self) -> &str {
        self.envelope["headers"]["id"].as_str().expect("headers.id")
    }

    pub fn headers(&self) -> &Value {
        &self.envelope["headers"]
    }

    pub fn key_sets(&self) -> KeySets {
        KeySets {
            envelope: keys(&self.envelope),
            headers: keys(&self.envelope["headers"]),
            properties: keys(&self.envelope["properties"]),
            delivery_info: keys(&self.envelope["properties"]["delivery_info"]),
            embed: keys(&self.body[2]),
        }
    }
}

/// The key sets a message is compared by against Python's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeySets {
    pub envelope: BTreeSet<String>,
    pub headers: BTreeSet<String>,
    pub properties: BTreeSet<String>,
    pub delivery_info: BTreeSet<String>,
    pub embed: BTreeSet<String>,
}

fn keys(v: &Value) -> BTreeSet<String> {
    v.as_object()
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default()
}

/// Every message on `queues`, parsed, by task id.
pub async fn capture(world: &World, queues: &[&str]) -> BTreeMap<String, Wire> {
    let mut out = BTreeMap::new();
    for q in queues {
        for (list, raw) in world.lrange(q).await {
            let wire = Wire::parse(&list, &raw);
            out.insert(wire.id().to_owned(), wire);
        }
    }
    out
}

/// The §4.3 / §12.3 checks: none of the shapes that make a Python worker lose, crash on or
/// mis-handle a message.
pub fn assert_wire_safe(wire: &Wire, what: &str) {
    assert_wire_safe_prefixed(wire, what, "");
}

/// As [`assert_wire_safe`] for a broker with `global_keyprefix` `prefix`.
pub fn assert_wire_safe_prefixed(wire: &Wire, what: &str, prefix: &str) {
    assert_wire_shape(wire, what);
    let e = &wire.envelope;
    let props = &e["properties"];
    let info = &props["delivery_info"];
    // The list it sits on is the one its priority and routing key say (a restore puts it
    // there again).
    let priority = props["priority"].as_u64().expect("priority is an integer");
    let step = [0u64, 3, 6, 9]
        .into_iter()
        .rfind(|s| *s <= priority)
        .unwrap_or(0);
    let rk = info["routing_key"].as_str().unwrap_or_default();
    let expected = if step == 0 {
        format!("{prefix}{rk}")
    } else {
        format!("{prefix}{rk}{SEP}{step}")
    };
    assert_eq!(wire.list, expected, "{what}: list vs priority/routing key");
}

/// The shape checks of [`assert_wire_safe`], without where the message sits (for messages
/// routed through an exchange's bindings).
pub fn assert_wire_shape(wire: &Wire, what: &str) {
    let e = &wire.envelope;
    let body = wire
        .body
        .as_array()
        .unwrap_or_else(|| panic!("{what}: body is not a list: {}", wire.body));
    assert_eq!(
        body.len(),
        3,
        "{what}: body must have 3 elements: {}",
        wire.body
    );
    assert!(body[0].is_array(), "{what}: args is a list: {}", wire.body);
    assert!(
        body[1].is_object(),
        "{what}: kwargs is a map: {}",
        wire.body
    );
    assert!(body[2].is_object(), "{what}: embed is a map: {}", wire.body);
    let props = &e["properties"];
    let info = &props["delivery_info"];
    assert!(info.is_object(), "{what}: delivery_info present: {e}");
    assert!(
        info["exchange"].is_string(),
        "{what}: delivery_info.exchange: {e}"
    );
    assert!(
        info["routing_key"].is_string(),
        "{what}: delivery_info.routing_key: {e}"
    );
    assert!(
        props["delivery_tag"].is_string(),
        "{what}: delivery_tag: {e}"
    );
    assert!(
        e["headers"]["retries"].is_u64(),
        "{what}: retries is an integer: {e}"
    );
    assert!(e["headers"]["lang"].is_string(), "{what}: lang is set: {e}");
    assert!(e["headers"]["task"].is_string(), "{what}: task is set: {e}");
    assert_eq!(
        e["headers"]["id"], props["correlation_id"],
        "{what}: correlation_id = id"
    );
    assert_eq!(e["content-type"], "application/json", "{what}");
}

/// Asserts that a Rust message has the key sets of Python's message for the same call.
pub fn assert_same_keys(rust: &Wire, python: &Wire, what: &str) {
    let (r, p) = (rust.key_sets(), python.key_sets());
    assert_eq!(
        r, p,
        "{what}: key sets differ from Python's\nrust:   {}\npython: {}",
        rust.envelope, python.envelope
    );
}

/// Asserts that a Rust message has Python's values where they do not depend on ids, clocks
/// or the sender: arguments, their reprs, limits, flags, priority, encodings.
pub fn assert_same_values(rust: &Wire, python: &Wire, what: &str) {
    let (r, p) = (&rust.envelope, &python.envelope);
    for field in [
        "shadow",
        "retries",
        "timelimit",
        "argsrepr",
        "kwargsrepr",
        "ignore_result",
        "replaced_task_nesting",
        "stamped_headers",
        "stamps",
    ] {
        assert_eq!(
            r["headers"][field], p["headers"][field],
            "{what}: header {field}\nrust:   {r}\npython: {p}"
        );
    }
    for field in ["eta", "expires", "group", "group_index", "parent_id"] {
        assert_eq!(
            r["headers"][field].is_null(),
            p["headers"][field].is_null(),
            "{what}: header {field} set in one only\nrust:   {r}\npython: {p}"
        );
    }
    for field in ["delivery_mode", "priority", "body_encoding"] {
        assert_eq!(
            r["properties"][field], p["properties"][field],
            "{what}: property {field}"
        );
    }
    for field in ["content-type", "content-encoding"] {
        assert_eq!(r[field], p[field], "{what}: {field}");
    }
    assert_eq!(rust.body[0], python.body[0], "{what}: args");
    assert_eq!(rust.body[1], python.body[1], "{what}: kwargs");
    for field in ["callbacks", "errbacks", "chain", "chord"] {
        assert_eq!(
            rust.body[2][field].is_null(),
            python.body[2][field].is_null(),
            "{what}: embed.{field}\nrust:   {}\npython: {}",
            rust.body,
            python.body
        );
    }
}

/// Runs Python `code` (after `from tasks import *` and the datetime imports) that sends
/// messages to queues nobody serves; returns the one message on each of `queues`.
pub async fn python_reference(
    venv: &Venv,
    cfg: &CeleryConfig,
    code: &str,
    world: &World,
    queues: &[&str],
) -> BTreeMap<String, Wire> {
    let script = format!(
        "from datetime import datetime, timedelta, timezone\n\
         from tasks import app, add, tsum, fail, retry_me, on_err, sleep, request_info\n\
         from celery import chain, chord, group\n\
         NOW = datetime.now(timezone.utc)\n{code}\nprint('SENT', flush=True)\n"
    );
    let out = venv.run(cfg, &script).await;
    out.assert_success();
    let mut refs = BTreeMap::new();
    for q in queues {
        let mut found = world.lrange(q).await;
        assert_eq!(
            found.len(),
            1,
            "{venv}: one Python message on {q}: {found:?}"
        );
        let (list, raw) = found.remove(0);
        refs.insert((*q).to_owned(), Wire::parse(&list, &raw));
    }
    refs
}
