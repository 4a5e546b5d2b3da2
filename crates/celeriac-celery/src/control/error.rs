//! The remote-control error type.

use crate::broker::BrokerError;
use crate::protocol::ProtocolError;

/// What went wrong in remote control.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ControlError {
    /// The envelope or its body could not be decoded.
    #[error("control message: {0}")]
    Protocol(#[from] ProtocolError),

    /// A field of a control message has the wrong type.
    #[error("control message `{field}`: expected {expected}, got {got}")]
    Field {
        /// The field (`method`, `destination`, `reply_to`, ...).
        field: &'static str,
        /// What was expected.
        expected: &'static str,
        /// A short rendering of the value found.
        got: String,
    },

    /// Subscribing or replying failed.
    #[error("remote control: {0}")]
    Broker(#[from] BrokerError),
}

impl ControlError {
    pub(crate) fn field(
        field: &'static str,
        expected: &'static str,
        got: &serde_json::Value,
    ) -> Self {
        ControlError::Field {
            field,
            expected,
            got: got.to_string().chars().take(80).collect(),
        }
    }
}

/// The result type of remote control.
pub type Result<T, E = ControlError> = std::result::Result<T, E>;
