//! Building task messages for a producer, and the envelope they travel in (§4.4).

use std::sync::OnceLock;
use std::time::Duration;

use chrono::{DateTime, SubsecRound, Utc};
use serde_json::{Map, Value};

use super::envelope::{DeliveryInfo, Envelope, Properties};
use super::headers::{TaskHeaders, TimeLimit};
use super::message::{Embed, TaskMessage};
use super::signature::Signature;
use crate::pyjson::repr::{args_repr, kwargs_repr};

/// Where a message goes: the `delivery_info` it carries, the queue it is pushed to and its
/// priority.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Route {
    /// The exchange (`""`: Celery's default path, routed by `routing_key` = queue name).
    pub exchange: String,
    /// The routing key (the queue name with the `""` exchange).
    pub routing_key: String,
    /// The queue (Redis list base name) the producer pushes to.
    pub queue: String,
    /// `properties.priority` (0..=9; 0, the default, is served first on Redis).
    pub priority: Option<u8>,
}

impl Route {
    /// Celery's default route to `queue`: exchange `""`, routing key = queue name.
    pub fn queue(queue: impl Into<String>) -> Route {
        let queue = queue.into();
        Route {
            exchange: String::new(),
            routing_key: queue.clone(),
            queue,
            priority: None,
        }
    }

    /// Sets the priority (clamped to 0..=9).
    pub fn with_priority(mut self, priority: u8) -> Route {
        self.priority = Some(priority.min(9));
        self
    }

    /// The route a received message came by (for a retry: same queue, same priority). The
    /// queue is the routing key when the exchange is `""` (or unknown).
    pub fn from_envelope(envelope: &Envelope) -> Route {
        let info = envelope
            .properties
            .delivery_info
            .clone()
            .unwrap_or_default();
        Route {
            queue: info.routing_key.clone(),
            exchange: info.exchange,
            routing_key: info.routing_key,
            priority: envelope.properties.priority,
        }
    }
}

/// This process's node name for `origin`: `rust<pid>@<hostname>`.
pub fn origin() -> &'static str {
    static ORIGIN: OnceLock<String> = OnceLock::new();
    ORIGIN.get_or_init(|| {
        let host = std::env::var("HOSTNAME")
            .ok()
            .filter(|h| !h.is_empty())
            .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
            .map(|h| h.trim().to_owned())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "localhost".to_owned());
        format!("rust{}@{host}", std::process::id())
    })
}

/// Python writes microseconds; keeping only those makes a message equal to its decoding.
fn micros(dt: DateTime<Utc>) -> DateTime<Utc> {
    dt.trunc_subsecs(6)
}

impl TaskMessage {
    /// A message calling `task` with a fresh uuid4 id, no arguments, `lang: "rust"`,
    /// `retries: 0`, `ignore_result: false`, no time limits.
    pub fn new(task: impl Into<String>) -> TaskMessage {
        TaskMessage {
            headers: TaskHeaders {
                lang: Some("rust".into()),
                task: task.into(),
                id: uuid::Uuid::new_v4().to_string(),
                ignore_result: Some(false),
                ..TaskHeaders::default()
            },
            args: Vec::new(),
            kwargs: Map::new(),
            embed: Embed::default(),
        }
    }

    /// Sets the task id.
    pub fn id(mut self, id: impl Into<String>) -> TaskMessage {
        self.headers.id = id.into();
        self
    }

    /// Sets the positional arguments.
    pub fn args(mut self, args: Vec<Value>) -> TaskMessage {
        self.args = args;
        self
    }

    /// Sets the keyword arguments.
    pub fn kwargs(mut self, kwargs: Map<String, Value>) -> TaskMessage {
        self.kwargs = kwargs;
        self
    }

    /// Runs no earlier than `delay` from now by this host's wall clock (sets `eta`). A
    /// [`Client`](crate::client::Client) resolves countdowns against the broker's clock
    /// instead; prefer it, or [`eta`](Self::eta) with a time from
    /// [`KombuBroker::now`](crate::broker::KombuBroker::now), when hosts' clocks may disagree.
    pub fn countdown(self, delay: Duration) -> TaskMessage {
        let delta = chrono::Duration::from_std(delay).unwrap_or(chrono::Duration::MAX);
        let eta = Utc::now()
            .checked_add_signed(delta)
            .unwrap_or(DateTime::<Utc>::MAX_UTC);
        self.eta(eta)
    }

    /// Runs no earlier than `eta`.
    pub fn eta(mut self, eta: DateTime<Utc>) -> TaskMessage {
        self.headers.eta = Some(micros(eta));
        self
    }

    /// Is discarded (REVOKED "expired") when not started by `expires`.
    pub fn expires(mut self, expires: DateTime<Utc>) -> TaskMessage {
        self.headers.expires = Some(micros(expires));
        self
    }

    /// Sets `timelimit = [hard, soft]` in seconds.
    pub fn time_limits(mut self, hard: Option<f64>, soft: Option<f64>) -> TaskMessage {
        self.headers.timelimit = TimeLimit { hard, soft };
        self
    }

    /// Sets `ignore_result`.
    pub fn ignore_result(mut self, ignore: bool) -> TaskMessage {
        self.headers.ignore_result = Some(ignore);
        self
    }

    /// Sets `root_id` (defaults to the task's own id).
    pub fn root_id(mut self, id: impl Into<String>) -> TaskMessage {
        self.headers.root_id = Some(id.into());
        self
    }

    /// Sets `parent_id`.
    pub fn parent_id(mut self, id: impl Into<String>) -> TaskMessage {
        self.headers.parent_id = Some(id.into());
        self
    }

    /// Makes the task member `index` of group `id`.
    pub fn group(mut self, id: impl Into<String>, index: u32) -> TaskMessage {
        self.headers.group = Some(id.into());
        self.headers.group_index = Some(index);
        self
    }

    /// Sets `shadow` (the display name).
    pub fn shadow(mut self, name: impl Into<String>) -> TaskMessage {
        self.headers.shadow = Some(name.into());
        self
    }

    /// Adds an extra header (visible to a Python task as `self.request.<key>`).
    pub fn header(mut self, key: impl Into<String>, value: Value) -> TaskMessage {
        self.headers.extra.insert(key.into(), value);
        self
    }

    /// Adds a callback (`embed.callbacks`), applied with the result on success.
    pub fn link(mut self, sig: Signature) -> TaskMessage {
        self.embed.callbacks.get_or_insert_with(Vec::new).push(sig);
        self
    }

    /// Adds an errback (`embed.errbacks`), sent with `[task_id]` on failure.
    pub fn link_error(mut self, sig: Signature) -> TaskMessage {
        self.embed.errbacks.get_or_insert_with(Vec::new).push(sig);
        self
    }

    /// The steps to run after this task, in running order; stored reversed in
    /// `embed.chain`, as Python does. Steps without `options.task_id` get one (frozen), so
    /// the caller can read the final id from the last step.
    pub fn chain(mut self, steps: Vec<Signature>) -> TaskMessage {
        let mut steps = steps;
        for step in &mut steps {
            super::canvas::freeze(step);
        }
        steps.reverse();
        self.embed.chain = Some(steps);
        self
    }

    /// Makes the task a chord header member whose body is `body` (`embed.chord`).
    pub fn chord(mut self, body: Signature) -> TaskMessage {
        self.embed.chord = Some(body);
        self
    }

    /// The envelope for this message on `route` (§4.4): JSON body `[args, kwargs, embed]`,
    /// `root_id` (default: own id), `argsrepr`/`kwargsrepr` (Python repr, at most 1024
    /// characters), `origin` filled when unset; `correlation_id` = id, `reply_to` `""`,
    /// `delivery_mode` 2, `delivery_info` from the route, `priority` (default 0), a fresh
    /// uuid4 `delivery_tag`, and `expiration` (ms) when the task expires.
    pub fn to_envelope(&self, route: Route) -> Envelope {
        let mut h = self.headers.clone();
        h.root_id.get_or_insert_with(|| h.id.clone());
        h.argsrepr.get_or_insert_with(|| args_repr(&self.args));
        h.kwargsrepr
            .get_or_insert_with(|| kwargs_repr(&self.kwargs));
        h.origin.get_or_insert_with(|| origin().to_owned());
        let expiration = h.expires.map(|e| {
            let ms = (e - Utc::now()).num_milliseconds().max(0);
            ms.to_string()
        });
        let mut envelope = Envelope::json(self.encode_body());
        envelope.headers = h.to_map();
        envelope.properties = Properties {
            correlation_id: Some(h.id.clone()),
            reply_to: Some(String::new()),
            delivery_mode: Some(2),
            delivery_info: Some(DeliveryInfo {
                exchange: route.exchange,
                routing_key: route.routing_key,
                redelivered: None,
            }),
            priority: Some(route.priority.unwrap_or(0).min(9)),
            delivery_tag: Some(uuid::Uuid::new_v4().to_string()),
            expiration,
            extra: Map::new(),
        };
        envelope
    }

    /// The message `Task.retry()` republishes (§7): same id, arguments, embed and headers,
    /// `retries` and `eta` as given, `parent_id` set to the task's own id when it had none
    /// (Python's quirk); `redelivered` dropped. Publish it on
    /// [`Route::from_envelope`] of the original.
    pub fn for_retry(&self, eta: DateTime<Utc>, retries: u32) -> TaskMessage {
        let mut next = self.clone();
        next.headers.retries = retries;
        next.headers.eta = Some(micros(eta));
        if next.headers.parent_id.is_none() {
            next.headers.parent_id = Some(next.headers.id.clone());
        }
        next.headers.extra.remove("redelivered");
        next
    }
}
