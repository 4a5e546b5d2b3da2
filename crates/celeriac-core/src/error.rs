//! The crate's error type and the portable classification backends attach to their errors.

use std::fmt;

/// What a caller should do about a failed backend call.
///
/// Breakers and fail-open paths branch on this, never on message strings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// A transient condition (lock contention, a timeout): the same call may succeed soon.
    Retry,
    /// The connection is gone: reconnect, then retry.
    Reconnect,
    /// Retrying will not help (corrupt file, bad configuration, a bug).
    GiveUp,
    /// The store is full and refuses writes (Redis's `OOM` under `maxmemory-policy
    /// noeviction`): reads still work; a write succeeds again once space is freed.
    Full,
}

/// Errors of the Celeriac core and of the backends built on it.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A backend call failed.
    #[error("backend error: {message}")]
    Backend {
        /// What to do about it.
        kind: ErrorKind,
        /// The backend's own description.
        message: String,
    },
    /// A setting is missing or invalid; `setting` names it.
    #[error("invalid configuration `{setting}`: {message}")]
    Config {
        /// The name of the setting, as the user wrote it (builder method or URL part).
        setting: String,
        /// What is wrong with it.
        message: String,
    },
    /// A payload or result could not be encoded or decoded.
    #[error("codec error: {0}")]
    Codec(String),
    /// No job with this id is known (it never existed, or its result expired).
    #[error("job {0} not found")]
    NotFound(String),
    /// Waiting for a job ran out of time.
    #[error("timed out waiting for job {0}")]
    Timeout(String),
    /// The backend has been shut down.
    #[error("the backend is closed")]
    Closed,
}

impl Error {
    /// A backend error of the given kind.
    pub fn backend(kind: ErrorKind, message: impl fmt::Display) -> Self {
        Error::Backend {
            kind,
            message: message.to_string(),
        }
    }

    /// A configuration error naming the setting.
    pub fn config(setting: impl Into<String>, message: impl fmt::Display) -> Self {
        Error::Config {
            setting: setting.into(),
            message: message.to_string(),
        }
    }

    /// What to do about this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Backend { kind, .. } => *kind,
            Error::Timeout(_) => ErrorKind::Retry,
            Error::Closed => ErrorKind::Reconnect,
            _ => ErrorKind::GiveUp,
        }
    }
}

/// `Result` with the core [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
