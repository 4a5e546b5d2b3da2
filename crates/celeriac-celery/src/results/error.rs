//! Errors of the result backend.

use std::time::Duration;

/// What went wrong in the result backend; every message names the key, task or setting.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The backend URL is not usable (the password is never shown).
    #[error("result backend URL {url}: {reason}")]
    Url {
        /// The URL without its password.
        url: String,
        /// Why.
        reason: String,
    },
    /// A setting is out of range.
    #[error("result backend setting {setting}: {reason}")]
    Setting {
        /// The setting (`result_expires`, `global_keyprefix`, ...).
        setting: &'static str,
        /// Why.
        reason: String,
    },
    /// Redis refused or the connection failed.
    #[error("redis {action}: {source}")]
    Redis {
        /// What was being done (`GET celery-task-meta-<id>`).
        action: String,
        /// The client's error.
        #[source]
        source: redis::RedisError,
    },
    /// A stored value is not a result record Celery could have written.
    #[error("cannot decode {key}: {reason}")]
    Decode {
        /// The Redis key (or channel) it came from.
        key: String,
        /// Why.
        reason: String,
    },
    /// A value cannot be serialized as JSON.
    #[error("cannot encode {what}: {source}")]
    Encode {
        /// What (`result of task <id>`).
        what: String,
        /// The serializer's error.
        #[source]
        source: serde_json::Error,
    },
    /// An exception description that Python would not read back as an exception class.
    #[error("exception {field}: {reason}")]
    Exception {
        /// `exc_type` or `exc_module`.
        field: &'static str,
        /// Why.
        reason: String,
    },
    /// No ready state arrived in time.
    #[error("task {task_id}: not ready after {waited:?} (last state {last_state})")]
    Timeout {
        /// The task waited for.
        task_id: String,
        /// How long.
        waited: Duration,
        /// The last state seen (`PENDING` when there was none).
        last_state: String,
    },
}

impl Error {
    /// Whether trying again later may succeed (a lost connection, a timeout, a server that is
    /// loading or read-only), as opposed to a value or setting that stays wrong.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Redis { source, .. } => {
                source.is_timeout()
                    || source.is_io_error()
                    || source.is_connection_dropped()
                    || source.is_connection_refusal()
                    || matches!(
                        source.code(),
                        Some("READONLY" | "TRYAGAIN" | "LOADING" | "MASTERDOWN" | "BUSY")
                    )
            }
            Error::Timeout { .. } => true,
            _ => false,
        }
    }

    pub(crate) fn redis(action: impl Into<String>) -> impl FnOnce(redis::RedisError) -> Error {
        let action = action.into();
        move |source| Error::Redis { action, source }
    }
}

/// The result backend's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The URL with its secrets replaced by `***` (Celeriac's one redacting form).
pub(crate) fn redact_url(url: &str) -> String {
    celeriac_core::redact::url(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_passwords() {
        assert_eq!(redact_url("redis://:s3cret@h:1/2"), "redis://:***@h:1/2");
        assert_eq!(redact_url("redis://u:s3cret@h:1"), "redis://u:***@h:1");
        assert_eq!(redact_url("rediss://tok@h:1/0"), "rediss://***@h:1/0");
        assert_eq!(redact_url("redis://h:1/0"), "redis://h:1/0");
    }
}
