//! The commands: a control message to the reply a Python worker would give
//! (`celery/worker/control.py`).

use std::sync::Arc;

use serde_json::{json, Map, Value};

use super::handler::{queue_dict, ControlHandler};
use super::message::ControlMessage;
use super::revoked::Revoked;
use crate::events::{EventSender, LamportClock};
use crate::protocol::repr;

/// What answering a command comes to.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Outcome {
    /// Reply with this value (when the message asks for a reply).
    Reply(Value),
    /// Never reply (`shutdown`: a Python worker exits before replying).
    Silent,
}

/// Everything the commands read or change.
pub(crate) struct Context {
    pub(crate) hostname: String,
    pub(crate) handler: Arc<dyn ControlHandler>,
    pub(crate) revoked: Revoked,
    pub(crate) events: Option<EventSender>,
    pub(crate) clock: Arc<LamportClock>,
    pub(crate) broker_url: String,
    pub(crate) broker_db: i64,
}

fn ok(text: impl Into<String>) -> Value {
    json!({"ok": text.into()})
}

fn nok(text: impl Into<String>) -> Value {
    json!({"error": text.into()})
}

/// Python's `maybe_list`: one id or a list of ids.
fn ids(value: Option<&Value>) -> Vec<String> {
    match value {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect(),
        _ => Vec::new(),
    }
}

/// `repr(set_of_ids)`: `{'a', 'b'}`.
fn set_repr(ids: &[String]) -> String {
    let items: Vec<String> = ids
        .iter()
        .map(|id| repr::value_repr(&Value::from(id.as_str())))
        .collect();
    format!("{{{}}}", items.join(", "))
}

fn flag(args: &Map<String, Value>, name: &str) -> bool {
    args.get(name).is_some_and(|v| match v {
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty(),
        _ => false,
    })
}

impl Context {
    pub(crate) fn dispatch(&self, msg: &ControlMessage) -> Outcome {
        let args = &msg.arguments;
        let h = &self.handler;
        let reply = match msg.method.as_str() {
            "ping" => ok("pong"),
            "active" | "dump_active" => {
                let safe = flag(args, "safe");
                Value::from(
                    h.active()
                        .iter()
                        .map(|t| t.to_value(safe))
                        .collect::<Vec<_>>(),
                )
            }
            "reserved" | "dump_reserved" => Value::from(
                h.reserved()
                    .iter()
                    .map(|t| t.to_value(false))
                    .collect::<Vec<_>>(),
            ),
            "scheduled" | "dump_schedule" => Value::from(
                h.scheduled()
                    .iter()
                    .map(|t| t.to_value())
                    .collect::<Vec<_>>(),
            ),
            "registered" | "dump_tasks" => {
                let mut names = h.registered();
                names.sort();
                Value::from(names)
            }
            "stats" => self.stats(),
            "revoked" | "dump_revoked" => Value::from(self.revoked.ids()),
            "active_queues" => Value::from(
                h.active_queues()
                    .iter()
                    .map(|q| queue_dict(q))
                    .collect::<Vec<_>>(),
            ),
            "query_task" => self.query_task(&ids(args.get("ids"))),
            "conf" => json!({
                "broker_url": self.broker_url,
                "task_serializer": "json",
                "result_serializer": "json",
                "accept_content": ["json"],
                "enable_utc": true,
                "worker_hostname": self.hostname,
            }),
            "report" => ok(format!(
                "\nsoftware -> celeriac-celery:{} (rust)\nplatform -> system:{}\nsettings -> transport:redis\n",
                env!("CARGO_PKG_VERSION"),
                std::env::consts::OS,
            )),
            "clock" => json!({"clock": self.clock.value()}),
            "hello" => {
                let from = args.get("from_node").and_then(Value::as_str).unwrap_or("");
                if from == self.hostname {
                    Value::Null
                } else {
                    for id in ids(args.get("revoked")) {
                        self.revoked.insert(&id);
                    }
                    json!({"revoked": self.revoked.ids(), "clock": self.clock.forward()})
                }
            }
            "revoke" => self.revoke(
                &ids(args.get("task_id")),
                flag(args, "terminate"),
                args.get("signal").and_then(Value::as_str),
            ),
            "terminate" => self.revoke(
                &ids(args.get("task_id")),
                true,
                args.get("signal").and_then(Value::as_str),
            ),
            "shutdown" => {
                tracing::warn!(hostname = %self.hostname, "got shutdown from remote");
                h.shutdown();
                return Outcome::Silent;
            }
            "enable_events" | "disable_events" => {
                let on = msg.method == "enable_events";
                match &self.events {
                    None => nok("event dispatcher unavailable"),
                    Some(ev) => {
                        let was = ev.set_task_events(on);
                        let word = if on { "enabled" } else { "disabled" };
                        if was == on {
                            ok(format!("task events already {word}"))
                        } else {
                            ok(format!("task events {word}"))
                        }
                    }
                }
            }
            "heartbeat" => {
                if let Some(ev) = &self.events {
                    ev.heartbeat_now();
                }
                Value::Null
            }
            "add_consumer" | "cancel_consumer" => {
                let queue = args.get("queue").and_then(Value::as_str).unwrap_or("");
                let adding = msg.method == "add_consumer";
                let done = if adding {
                    h.add_consumer(queue)
                } else {
                    h.cancel_consumer(queue)
                };
                match done {
                    Ok(()) if adding => ok(format!("add consumer {queue}")),
                    Ok(()) => ok(format!("no longer consuming from {queue}")),
                    Err(why) => nok(why),
                }
            }
            "rate_limit" | "time_limit" | "pool_grow" | "pool_shrink" | "pool_restart"
            | "autoscale" | "revoke_by_stamped_headers" | "memsample" | "memdump"
            | "objgraph" | "election" => nok(format!(
                "{} is not supported by this worker (celeriac)",
                msg.method
            )),
            // kombu's Node.dispatch: an unknown command raises KeyError, replied as an error.
            other => nok(format!("KeyError({})", repr::value_repr(&Value::from(other)))),
        };
        Outcome::Reply(reply)
    }

    fn revoke(&self, ids: &[String], terminate: bool, signal: Option<&str>) -> Value {
        for id in ids {
            self.revoked.insert(id);
        }
        let signal = signal.unwrap_or("SIGTERM");
        let terminated = self.handler.revoke(ids, terminate, signal);
        if terminate {
            if terminated.is_empty() {
                ok("terminate: tasks unknown")
            } else {
                ok(format!("terminate: {}", terminated.join(", ")))
            }
        } else {
            tracing::info!(ids = %ids.join(", "), "tasks flagged as revoked");
            ok(format!("tasks {} flagged as revoked", set_repr(ids)))
        }
    }

    fn query_task(&self, wanted: &[String]) -> Value {
        let h = &self.handler;
        let mut out = Map::new();
        let mut add = |state: &str, task: &super::TaskInfo| {
            if wanted.contains(&task.id) && !out.contains_key(&task.id) {
                out.insert(task.id.clone(), json!([state, task.to_value(false)]));
            }
        };
        for t in h.active() {
            add("active", &t);
        }
        for t in h.reserved() {
            add("reserved", &t);
        }
        for t in h.scheduled() {
            add("scheduled", &t.request);
        }
        Value::Object(out)
    }

    fn stats(&self) -> Value {
        let s = self.handler.stats();
        let pid = std::process::id();
        let (host, port) = host_port(&self.broker_url);
        let processes = if s.processes.is_empty() {
            vec![pid]
        } else {
            s.processes.clone()
        };
        json!({
            "total": s.total,
            "pid": pid,
            "clock": self.clock.value().to_string(),
            "uptime": s.uptime,
            "pool": {
                "implementation": s.pool_implementation,
                "max-concurrency": s.max_concurrency,
                "processes": processes,
                "max-tasks-per-child": null,
                "put-guarded-by-semaphore": false,
                "timeouts": [],
            },
            "broker": {
                "hostname": host,
                "userid": null,
                "virtual_host": self.broker_db.to_string(),
                "port": port,
                "insist": false,
                "ssl": self.broker_url.starts_with("rediss://"),
                "transport": "redis",
                "connect_timeout": 4,
                "transport_options": {},
                "login_method": null,
                "uri_prefix": null,
                "heartbeat": 120.0,
                "failover_strategy": "round-robin",
                "alternates": [],
            },
            "prefetch_count": s.prefetch_count,
            "rusage": "N/A",
        })
    }
}

/// Host and port of a (redacted) Redis URL.
fn host_port(url: &str) -> (String, Option<u16>) {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let rest = rest.rsplit_once('@').map_or(rest, |(_, r)| r);
    let authority = rest.split('/').next().unwrap_or("");
    match authority.rsplit_once(':') {
        Some((h, p)) if !h.is_empty() => (h.to_owned(), p.parse().ok()),
        _ => (authority.to_owned(), Some(6379)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_reprs() {
        assert_eq!(set_repr(&["a".into(), "b".into()]), "{'a', 'b'}");
        assert_eq!(
            host_port("redis://:***@127.0.0.1:6400/0"),
            ("127.0.0.1".to_owned(), Some(6400))
        );
        assert_eq!(ids(Some(&json!("x"))), vec!["x"]);
        assert_eq!(ids(Some(&json!(["x", "y"]))), vec!["x", "y"]);
    }
}
