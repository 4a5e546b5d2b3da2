//! [`ControlHandler`]: what remote control asks of a worker, and the shapes Python parses.

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};

use crate::protocol::repr;

/// Where a task message came from: `delivery_info` of Python's `Request.info()`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TaskDelivery {
    /// The exchange (`""` for Celery's default path).
    pub exchange: String,
    /// The routing key (the queue on the default path).
    pub routing_key: String,
    /// The message priority.
    pub priority: Option<u8>,
    /// Whether it was delivered before.
    pub redelivered: bool,
}

/// A task a worker holds, as `inspect active`/`reserved` report it (Python's
/// `Request.info()`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TaskInfo {
    /// The task id.
    pub id: String,
    /// The task name.
    pub name: String,
    /// Positional arguments.
    pub args: Vec<Value>,
    /// Keyword arguments.
    pub kwargs: Map<String, Value>,
    /// The worker hostname.
    pub hostname: String,
    /// When it started (UNIX seconds); `None` while not started.
    pub time_start: Option<f64>,
    /// Whether its message was acknowledged.
    pub acknowledged: bool,
    /// Where its message came from.
    pub delivery_info: TaskDelivery,
    /// The process running it.
    pub worker_pid: Option<u32>,
}

impl TaskInfo {
    /// The dict Python's `Request.info(safe)` returns (`safe`: arguments as repr strings).
    pub fn to_value(&self, safe: bool) -> Value {
        let (args, kwargs) = if safe {
            (
                Value::from(repr::args_repr(&self.args)),
                Value::from(repr::kwargs_repr(&self.kwargs)),
            )
        } else {
            (
                Value::from(self.args.clone()),
                Value::Object(self.kwargs.clone()),
            )
        };
        let d = &self.delivery_info;
        json!({
            "id": self.id,
            "name": self.name,
            "args": args,
            "kwargs": kwargs,
            "type": self.name,
            "hostname": self.hostname,
            "time_start": self.time_start,
            "acknowledged": self.acknowledged,
            "delivery_info": {
                "exchange": d.exchange,
                "routing_key": d.routing_key,
                "priority": d.priority,
                "redelivered": d.redelivered,
            },
            "worker_pid": self.worker_pid,
        })
    }
}

/// A task held for its ETA, as `inspect scheduled` reports it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ScheduledTask {
    /// The ETA, ISO 8601.
    pub eta: Option<String>,
    /// The message priority.
    pub priority: u8,
    /// The task.
    pub request: TaskInfo,
}

impl ScheduledTask {
    /// `{"eta", "priority", "request"}` as Python writes it.
    pub fn to_value(&self) -> Value {
        json!({"eta": self.eta, "priority": self.priority, "request": self.request.to_value(false)})
    }
}

/// What `inspect stats` reports of a worker (the responder adds `pid`, `clock` and `broker`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WorkerStats {
    /// Tasks accepted so far, by name.
    pub total: BTreeMap<String, u64>,
    /// Seconds since the worker started.
    pub uptime: u64,
    /// `pool.implementation` (e.g. `celeriac:tokio`).
    pub pool_implementation: String,
    /// `pool.max-concurrency`.
    pub max_concurrency: u32,
    /// `pool.processes`: the pids of the processes running tasks.
    pub processes: Vec<u32>,
    /// `prefetch_count`.
    pub prefetch_count: u32,
}

/// The worker's side of remote control: the pidbox responder
/// ([`PidboxResponder`](super::PidboxResponder)) calls it to answer `inspect` and carry out
/// `control` commands. Calls are synchronous and should return quickly (snapshot shared
/// state; start long work in the background).
pub trait ControlHandler: Send + Sync + 'static {
    /// Tasks running now (`inspect active`).
    fn active(&self) -> Vec<TaskInfo>;

    /// Tasks taken but not started (`inspect reserved`).
    fn reserved(&self) -> Vec<TaskInfo> {
        Vec::new()
    }

    /// Tasks held for their ETA (`inspect scheduled`).
    fn scheduled(&self) -> Vec<ScheduledTask> {
        Vec::new()
    }

    /// The task names this worker serves (`inspect registered`).
    fn registered(&self) -> Vec<String>;

    /// Statistics (`inspect stats`).
    fn stats(&self) -> WorkerStats;

    /// `revoke`: the ids are already in the responder's [`Revoked`](super::Revoked) set. With
    /// `terminate`, stop those of them that are running (`signal` is e.g. `SIGTERM`) and
    /// return the ids stopped. A Python worker also stores REVOKED for the ids it does not
    /// hold whose state is still PENDING/RECEIVED/RETRY/REJECTED; do that here too.
    fn revoke(&self, ids: &[String], terminate: bool, signal: &str) -> Vec<String>;

    /// `shutdown`: begin a warm shutdown (return at once).
    fn shutdown(&self);

    /// The queues consumed (`inspect active_queues`).
    fn active_queues(&self) -> Vec<String>;

    /// `add_consumer`: start consuming `queue`; `Err` says why not.
    ///
    /// # Errors
    /// By default: not supported.
    fn add_consumer(&self, queue: &str) -> Result<(), String> {
        let _ = queue;
        Err("add_consumer is not supported by this worker".to_owned())
    }

    /// `cancel_consumer`: stop consuming `queue`; `Err` says why not.
    ///
    /// # Errors
    /// By default: not supported.
    fn cancel_consumer(&self, queue: &str) -> Result<(), String> {
        let _ = queue;
        Err("cancel_consumer is not supported by this worker".to_owned())
    }
}

/// `queue.as_dict(recurse=True)` of a plain durable direct queue, as `inspect active_queues`
/// lists it.
pub(crate) fn queue_dict(name: &str) -> Value {
    json!({
        "name": name,
        "exchange": {"name": name, "type": "direct", "arguments": null, "durable": true,
                     "passive": false, "auto_delete": false, "delivery_mode": null,
                     "no_declare": false},
        "routing_key": name,
        "queue_arguments": null, "binding_arguments": null, "consumer_arguments": null,
        "durable": true, "exclusive": false, "auto_delete": false, "no_ack": false,
        "alias": null, "bindings": [], "no_declare": null, "expires": null,
        "message_ttl": null, "max_length": null, "max_length_bytes": null, "max_priority": null,
    })
}
