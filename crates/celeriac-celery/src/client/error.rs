//! The client's error type.

use std::time::Duration;

use serde_json::Value;

use crate::broker::BrokerError;
use crate::protocol::ProtocolError;
use crate::results::{self, ExceptionInfo};

/// A task that ended in FAILURE, as its result record says (what a Python client raises from
/// `AsyncResult.get()`).
#[derive(Debug, Clone, PartialEq)]
pub struct TaskFailure {
    /// The task whose record this is (for a chain: the id waited on).
    pub task_id: String,
    /// `exc_type`: the Python exception class (`"ValueError"`, `"TimeLimitExceeded"`,
    /// `"ChordError"`).
    pub exc_type: String,
    /// `exc_module`: where Python finds the class (`"builtins"`), if stored.
    pub exc_module: Option<String>,
    /// `str(exc)` as Python prints it.
    pub message: String,
    /// The exception's args.
    pub args: Vec<Value>,
    /// The Python traceback text, if stored.
    pub traceback: Option<String>,
    /// The stored exception dict.
    pub exception: ExceptionInfo,
}

impl TaskFailure {
    pub(crate) fn new(task_id: &str, exception: ExceptionInfo, traceback: Option<String>) -> Self {
        TaskFailure {
            task_id: task_id.to_owned(),
            exc_type: exception.exc_type.clone(),
            exc_module: exception.exc_module.clone(),
            message: exception.message(),
            args: exception.args(),
            traceback,
            exception,
        }
    }

    /// `module.Class` (or just `Class` without a module).
    pub fn class_path(&self) -> String {
        match &self.exc_module {
            Some(m) => format!("{m}.{}", self.exc_type),
            None => self.exc_type.clone(),
        }
    }
}

/// What went wrong in the client; messages name the setting, task or field, never a password.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// A client setting is missing or invalid.
    #[error("client setting {setting}: {reason}")]
    Setting {
        /// The setting (`broker_url`, `result_backend`, `default_queue`, ...).
        setting: &'static str,
        /// Why.
        reason: String,
    },
    /// Connecting to the broker or the result backend failed.
    #[error("client setting {setting}: cannot connect: {reason}")]
    Connect {
        /// `broker_url` or `result_backend`.
        setting: &'static str,
        /// The underlying error's message (password redacted).
        reason: String,
    },
    /// No queue is bound to the exchange with the routing key: the message was not sent
    /// (kombu would drop it silently).
    #[error("task {task_id}: no queue is bound to exchange `{exchange}` with routing key `{routing_key}`; not sent")]
    Unroutable {
        /// The task.
        task_id: String,
        /// The exchange.
        exchange: String,
        /// The routing key.
        routing_key: String,
    },
    /// A call's arguments cannot be sent.
    #[error("task {task}: {field} {reason}")]
    Arguments {
        /// The task name.
        task: String,
        /// `args` or `kwargs`.
        field: &'static str,
        /// Why.
        reason: String,
    },
    /// A signature or message could not be built.
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
    /// Publishing failed.
    #[error(transparent)]
    Broker(#[from] BrokerError),
    /// The result backend failed (other than a timeout).
    #[error(transparent)]
    Backend(results::Error),
    /// The task failed (state FAILURE).
    #[error("task {} failed: {}: {}", .0.task_id, .0.class_path(), .0.message)]
    TaskFailed(Box<TaskFailure>),
    /// The task was revoked (state REVOKED), e.g. because it expired.
    #[error("task {task_id} was revoked: {reason}")]
    Revoked {
        /// The task.
        task_id: String,
        /// The stored reason (`"expired"`, `"revoked"`).
        reason: String,
    },
    /// No ready state arrived in time.
    #[error("task {task_id}: not ready after {waited:?} (last state {last_state})")]
    Timeout {
        /// The task.
        task_id: String,
        /// How long was waited.
        waited: Duration,
        /// The last state seen.
        last_state: String,
    },
    /// The task succeeded but its result does not deserialize into the requested type.
    #[error("task {task_id}: result {result} does not fit the requested type: {reason}")]
    Decode {
        /// The task.
        task_id: String,
        /// The result as stored (shortened).
        result: String,
        /// The deserializer's message.
        reason: String,
    },
}

impl From<results::Error> for ClientError {
    fn from(e: results::Error) -> Self {
        match e {
            results::Error::Timeout {
                task_id,
                waited,
                last_state,
            } => ClientError::Timeout {
                task_id,
                waited,
                last_state,
            },
            other => ClientError::Backend(other),
        }
    }
}

impl ClientError {
    /// The failure, when the task failed.
    pub fn failure(&self) -> Option<&TaskFailure> {
        match self {
            ClientError::TaskFailed(f) => Some(f),
            _ => None,
        }
    }
}

/// The client's result type.
pub type Result<T, E = ClientError> = std::result::Result<T, E>;
