//! The testkit's error type.

use std::time::Duration;

/// Why a server could not be started, reached or driven.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// `redis-server` is not installed.
    #[error(
        "redis-server not found on PATH; run scripts/test, which installs it \
         (apt-get install redis-server)"
    )]
    NotInstalled,

    /// A file or process operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What the testkit was doing.
        what: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// A server process did not come up; carries the server's log.
    #[error("redis-server on 127.0.0.1:{port} did not start: {reason}\n--- server log ---\n{log}")]
    Start {
        /// The port it was asked to listen on.
        port: u16,
        /// What went wrong.
        reason: String,
        /// The server's log file content.
        log: String,
    },

    /// A Cluster or Sentinel setup did not reach the expected state in time; carries the
    /// servers' logs.
    #[error("{what} (waited {after:?}){logs}")]
    Setup {
        /// The state that was expected.
        what: String,
        /// How long the testkit waited.
        after: Duration,
        /// The logs of the servers involved.
        logs: String,
    },

    /// Redis answered a command with an error reply (`-ERR ...`, `-WRONGPASS ...`).
    #[error("redis error reply: {0}")]
    Server(String),

    /// The connection broke or the reply was not valid RESP.
    #[error("RESP protocol error: {0}")]
    Protocol(String),

    /// A command or connection attempt did not finish in time.
    #[error("timed out after {after:?}: {what}")]
    Timeout {
        /// What was attempted.
        what: String,
        /// The time limit.
        after: Duration,
    },

    /// The operation does not apply to this server (e.g. the plain-TCP RESP client on a
    /// TLS-only server).
    #[error("{0}")]
    Unsupported(String),

    /// Generating the TLS certificates failed.
    #[error("generating TLS certificates: {0}")]
    Certificate(#[from] rcgen::Error),
}

impl Error {
    pub(crate) fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            what: what.into(),
            source,
        }
    }
}

/// The testkit's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
