//! [`TaskCall`]: `app.send_task(name).apply_async(...)` as a builder.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{Map, Value};

use super::error::{ClientError, Result};
use super::result::AsyncResult;
use super::Client;
use crate::protocol::{Route, Signature, TaskMessage};

/// A point in time given as Python's options take it: seconds from now or a date-time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum When {
    /// This long after the call is sent.
    In(Duration),
    /// At this instant.
    At(DateTime<Utc>),
}

impl When {
    fn resolve(self, now: DateTime<Utc>) -> DateTime<Utc> {
        match self {
            When::At(t) => t,
            When::In(d) => chrono::Duration::from_std(d)
                .ok()
                .and_then(|d| now.checked_add_signed(d))
                .unwrap_or(DateTime::<Utc>::MAX_UTC),
        }
    }
}

impl From<Duration> for When {
    fn from(d: Duration) -> Self {
        When::In(d)
    }
}

impl From<DateTime<Utc>> for When {
    fn from(t: DateTime<Utc>) -> Self {
        When::At(t)
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a sequence",
        Value::Object(_) => "a map",
    }
}

/// One call of a task by name, configured like Python's `apply_async` options; nothing is
/// sent before [`TaskCall::send`]. Argument errors are kept and reported by `send`.
#[derive(Debug)]
#[must_use = "a task call does nothing until .send().await"]
pub struct TaskCall<'a> {
    client: &'a Client,
    message: TaskMessage,
    queue: Option<String>,
    priority: Option<u8>,
    countdown: Option<Duration>,
    eta: Option<DateTime<Utc>>,
    expires: Option<When>,
    error: Option<ClientError>,
}

impl<'a> TaskCall<'a> {
    pub(crate) fn new(client: &'a Client, message: TaskMessage) -> Self {
        TaskCall {
            client,
            message,
            queue: None,
            priority: None,
            countdown: None,
            eta: None,
            expires: None,
            error: None,
        }
    }

    fn fail(&mut self, field: &'static str, reason: String) {
        if self.error.is_none() {
            self.error = Some(ClientError::Arguments {
                task: self.message.headers.task.clone(),
                field,
                reason,
            });
        }
    }

    /// Positional arguments: anything that serializes to a sequence (a tuple, array, `Vec`;
    /// `()` for none), e.g. `.args((2, 3))`.
    pub fn args<A: Serialize>(mut self, args: A) -> Self {
        match serde_json::to_value(args) {
            Ok(Value::Array(items)) => self.message.args = items,
            Ok(Value::Null) => self.message.args = Vec::new(),
            Ok(other) => self.fail(
                "args",
                format!(
                    "must serialize to a sequence (tuple, array, Vec), got {}",
                    kind(&other)
                ),
            ),
            Err(e) => self.fail("args", format!("cannot be serialized to JSON: {e}")),
        }
        self
    }

    /// Keyword arguments: anything that serializes to a map with string keys (a struct, a
    /// `HashMap`, `serde_json::json!({..})`).
    pub fn kwargs<K: Serialize>(mut self, kwargs: K) -> Self {
        match serde_json::to_value(kwargs) {
            Ok(Value::Object(map)) => self.message.kwargs = map,
            Ok(Value::Null) => self.message.kwargs = Map::new(),
            Ok(other) => self.fail(
                "kwargs",
                format!(
                    "must serialize to a map (struct, HashMap), got {}",
                    kind(&other)
                ),
            ),
            Err(e) => self.fail("kwargs", format!("cannot be serialized to JSON: {e}")),
        }
        self
    }

    /// `countdown`: run no earlier than this long after sending (sets `eta`).
    pub fn countdown(mut self, delay: Duration) -> Self {
        self.countdown = Some(delay);
        self.eta = None;
        self
    }

    /// `eta`: run no earlier than this.
    pub fn eta(mut self, eta: DateTime<Utc>) -> Self {
        self.eta = Some(eta);
        self.countdown = None;
        self
    }

    /// `expires`: a worker that gets the task after this time (a [`Duration`] from sending,
    /// or a date-time) revokes it instead of running it (state REVOKED).
    pub fn expires(mut self, expires: impl Into<When>) -> Self {
        self.expires = Some(expires.into());
        self
    }

    /// `priority` 0..=9 (values above 9 count as 9; on Redis 0 is served first).
    pub fn priority(mut self, priority: u8) -> Self {
        self.priority = Some(priority.min(9));
        self
    }

    /// `queue`: the queue to send to (default: the client's default queue).
    pub fn queue(mut self, queue: impl Into<String>) -> Self {
        self.queue = Some(queue.into());
        self
    }

    /// `time_limit` (hard: the worker kills the task) and `soft_time_limit` (the task gets
    /// `SoftTimeLimitExceeded`); `None` leaves the task's own limit.
    pub fn time_limits(mut self, hard: Option<Duration>, soft: Option<Duration>) -> Self {
        self.message = self
            .message
            .time_limits(hard.map(|d| d.as_secs_f64()), soft.map(|d| d.as_secs_f64()));
        self
    }

    /// `ignore_result`: the worker stores no result (the state stays PENDING).
    pub fn ignore_result(mut self, ignore: bool) -> Self {
        self.message = self.message.ignore_result(ignore);
        self
    }

    /// `task_id`: the id to use instead of a fresh uuid4.
    pub fn task_id(mut self, id: impl Into<String>) -> Self {
        self.message = self.message.id(id);
        self
    }

    /// `link`: a callback applied with this task's return value on success. Give it
    /// `options.task_id` to await its result.
    pub fn link(mut self, sig: Signature) -> Self {
        self.message = self.message.link(sig);
        self
    }

    /// `link_error`: an errback sent with `[<failed task id>]` (+ its own args) on failure.
    pub fn link_error(mut self, sig: Signature) -> Self {
        self.message = self.message.link_error(sig);
        self
    }

    /// `shadow`: the name shown in the worker's logs and events.
    pub fn shadow(mut self, name: impl Into<String>) -> Self {
        self.message = self.message.shadow(name);
        self
    }

    /// An extra header (`apply_async(headers={..})`), seen by a Python task as
    /// `self.request.<key>`.
    pub fn header(mut self, key: impl Into<String>, value: Value) -> Self {
        self.message = self.message.header(key, value);
        self
    }

    /// The message and route [`send`](Self::send) would publish, with `eta`/`expires`
    /// resolved against `now`.
    ///
    /// # Errors
    /// [`ClientError::Arguments`] for arguments that are not a sequence / map.
    pub fn build(self, now: DateTime<Utc>) -> Result<(TaskMessage, Route)> {
        if let Some(e) = self.error {
            return Err(e);
        }
        let mut message = self.message;
        if let Some(eta) = self.eta {
            message = message.eta(eta);
        } else if let Some(delay) = self.countdown {
            message = message.eta(When::In(delay).resolve(now));
        }
        if let Some(expires) = self.expires {
            message = message.expires(expires.resolve(now));
        }
        let route = self.client.route(self.queue.as_deref(), self.priority);
        Ok((message, route))
    }

    /// Publishes the task; returns the handle on its result.
    ///
    /// # Errors
    /// [`ClientError::Arguments`] for bad arguments (nothing is sent),
    /// [`ClientError::Broker`] when the publish fails.
    pub async fn send(self) -> Result<AsyncResult> {
        let client = self.client;
        let (message, route) = self.build(client.inner.broker.now())?;
        client.publish(&message, route).await?;
        Ok(AsyncResult::new(client.clone(), message.headers.id))
    }
}
