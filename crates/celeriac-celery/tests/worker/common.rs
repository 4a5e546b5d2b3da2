//! Setup of the worker tests: a private redis-server (broker db 0, results db 1), a Rust
//! worker in the test process, Python snippets, and watching a result channel.

use std::time::Duration;

use celeriac_celery::worker::{CeleryWorker, CeleryWorkerBuilder, WorkerError, WorkerHandle};
use celeriac_testkit::RedisServer;
use futures_util::StreamExt;
use redis::aio::MultiplexedConnection;
use serde_json::{json, Value};
use tokio::task::JoinHandle;

use crate::support::{CeleryConfig, PyOutput, Venv};

/// Ceiling for anything awaited in a test.
pub const WAIT: Duration = Duration::from_secs(30);

/// One test's world: its own redis-server and a queue name.
pub struct World {
    pub server: RedisServer,
    pub cfg: CeleryConfig,
    pub queue: String,
}

impl World {
    pub async fn start() -> World {
        let server = RedisServer::start().await.expect("redis-server starts");
        let queue = format!("q{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
        let cfg = CeleryConfig::for_server(&server.url()).default_queue(queue.clone());
        World { server, cfg, queue }
    }

    pub fn url(&self, db: u8) -> String {
        format!("{}/{db}", self.server.url())
    }

    /// A plain connection to db `db`.
    pub async fn redis(&self, db: u8) -> MultiplexedConnection {
        redis::Client::open(self.url(db))
            .expect("valid URL")
            .get_multiplexed_async_connection()
            .await
            .expect("redis connects")
    }

    /// A worker builder on this world's queue with every test task registered; callbacks
    /// and chain steps that name no queue go to this queue too.
    pub fn builder(&self) -> CeleryWorkerBuilder {
        crate::tasks::register(
            CeleryWorker::builder(self.url(0), self.url(1))
                .queues([self.queue.clone()])
                .default_queue(self.queue.clone())
                .hostname("rust@celeriac-test"),
        )
    }

    /// Starts a worker in this process.
    pub async fn run_worker(&self, builder: CeleryWorkerBuilder) -> RunningWorker {
        let worker = builder.build().await.expect("the worker connects");
        let handle = worker.handle();
        let join = tokio::spawn(worker.run());
        RunningWorker { handle, join }
    }

    /// `HLEN unacked` on the broker.
    pub async fn unacked(&self) -> u64 {
        redis::cmd("HLEN")
            .arg("unacked")
            .query_async(&mut self.redis(0).await)
            .await
            .expect("HLEN")
    }

    /// Messages waiting in this world's queue (every priority list).
    pub async fn waiting(&self) -> u64 {
        let mut conn = self.redis(0).await;
        let mut n = 0;
        for step in ["", "\x06\x163", "\x06\x166", "\x06\x169"] {
            let len: u64 = redis::cmd("LLEN")
                .arg(format!("{}{step}", self.queue))
                .query_async(&mut conn)
                .await
                .expect("LLEN");
            n += len;
        }
        n
    }

    /// The stored record of `id` (db 1), as JSON.
    pub async fn meta(&self, id: &str) -> Option<Value> {
        let raw: Option<String> = redis::cmd("GET")
            .arg(format!("celery-task-meta-{id}"))
            .query_async(&mut self.redis(1).await)
            .await
            .expect("GET");
        raw.map(|r| serde_json::from_str(&r).expect("the record is JSON"))
    }
}

/// A worker running in the test process.
pub struct RunningWorker {
    pub handle: WorkerHandle,
    join: JoinHandle<Result<(), WorkerError>>,
}

impl RunningWorker {
    /// Graceful shutdown, awaited.
    pub async fn stop(self) {
        self.handle.shutdown();
        tokio::time::timeout(WAIT, self.join)
            .await
            .expect("the worker stops within the ceiling")
            .expect("the worker task does not panic")
            .expect("the worker ends without error");
    }
}

/// The records published on `celery-task-meta-<id>` (db 1), subscribed before the task is
/// sent.
pub struct Channel {
    pubsub: redis::aio::PubSub,
}

impl Channel {
    pub async fn open(world: &World, id: &str) -> Channel {
        let client = redis::Client::open(world.url(1)).expect("valid URL");
        let mut pubsub = client.get_async_pubsub().await.expect("pubsub connects");
        pubsub
            .subscribe(format!("celery-task-meta-{id}"))
            .await
            .expect("SUBSCRIBE");
        Channel { pubsub }
    }

    /// The next published record.
    pub async fn next(&mut self) -> Value {
        let msg = tokio::time::timeout(WAIT, self.pubsub.on_message().next())
            .await
            .expect("a record is published within the ceiling")
            .expect("the subscription is open");
        serde_json::from_slice(msg.get_payload_bytes()).expect("a JSON record")
    }

    /// Statuses published until (and with) the first ready one.
    pub async fn statuses_until_ready(&mut self) -> Vec<String> {
        let mut seen = Vec::new();
        loop {
            let status = self.next().await["status"]
                .as_str()
                .expect("status")
                .to_owned();
            let ready = matches!(status.as_str(), "SUCCESS" | "FAILURE" | "REVOKED");
            seen.push(status);
            if ready {
                return seen;
            }
        }
    }
}

/// Runs a Python snippet (`from tasks import *`, `ARGS` decoded, `out(value)` prints JSON)
/// and returns what it printed last.
pub async fn py(venv: &Venv, cfg: &CeleryConfig, args: Value, code: &str) -> Value {
    let out = py_raw(venv, cfg, args, code).await;
    out.assert_success();
    out.json()
}

/// The result of task `id`, as Python's `AsyncResult(id).get()` returns it.
pub async fn py_result(venv: &Venv, cfg: &CeleryConfig, id: &str) -> Value {
    py(
        venv,
        cfg,
        Value::String(id.to_string()),
        "out(app.AsyncResult(ARGS).get(timeout=30))",
    )
    .await
}

/// As [`py`], without asserting success.
pub async fn py_raw(venv: &Venv, cfg: &CeleryConfig, args: Value, code: &str) -> PyOutput {
    let cfg = cfg.clone().env("ARGS", args.to_string());
    let code = format!(
        "import json, os, sys\nfrom datetime import datetime, timedelta, timezone\n\
         from celery import chain, chord, group\nfrom tasks import *\n\
         ARGS = json.loads(os.environ['ARGS'])\n\
         def out(value):\n    print(json.dumps(value), flush=True)\n\
         def raised(r):\n    try:\n        r.get(timeout=30)\n        return None\n    \
         except Exception as e:\n        return [type(e).__name__, type(e).__module__, \
         [str(a) for a in e.args]]\n{code}\n"
    );
    venv.run(&cfg, &code).await
}

pub fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// Runs a Python snippet (as [`py`]) with `ARGS` a new task id, subscribed first to that
/// task's result channel: returns the id, the channel and what the snippet printed last.
pub async fn py_watched(venv: &Venv, world: &World, code: &str) -> (String, Channel, Value) {
    let id = new_id();
    let channel = Channel::open(world, &id).await;
    let got = py(venv, &world.cfg, json!(id), code).await;
    (id, channel, got)
}

/// Waits (polling in-memory state, which has no event to await) until `pred` holds.
///
/// # Panics
/// With `what` when it does not hold within [`WAIT`].
pub async fn until(what: &str, pred: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !pred() {
        assert!(tokio::time::Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
