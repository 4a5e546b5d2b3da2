//! The transport's error type.

/// What a caller should do about a failed broker operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// A passing condition (a timeout, a server loading or failing over): try again.
    Retry,
    /// The connection was lost or refused: the next call reconnects.
    Reconnect,
    /// Retrying cannot help (a wrong URL, option, password or message).
    GiveUp,
}

/// What went wrong in the kombu Redis transport.
///
/// No variant ever holds a password: URLs are shown with the password replaced by `***`, and
/// server messages are scrubbed of it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BrokerError {
    /// The broker URL cannot be used.
    #[error("broker url `{url}`: {reason}")]
    Url {
        /// The URL, password redacted.
        url: String,
        /// What is wrong with it.
        reason: String,
    },

    /// A transport option has an invalid value.
    #[error("transport option `{option}`: {reason}")]
    Option {
        /// The option's name (kombu's `broker_transport_options` key).
        option: &'static str,
        /// What is wrong with the value.
        reason: String,
    },

    /// Connecting to the server failed.
    #[error("cannot connect to the broker at `{url}`: {message}")]
    Connect {
        /// The URL, password redacted.
        url: String,
        /// What to do about it.
        kind: ErrorKind,
        /// The client's message, scrubbed of the password.
        message: String,
    },

    /// A command or script failed.
    #[error("broker {op} on `{url}` failed: {message}")]
    Redis {
        /// The transport operation (`publish`, `consume`, `ack`, ...).
        op: &'static str,
        /// The URL, password redacted.
        url: String,
        /// What to do about it.
        kind: ErrorKind,
        /// The client's message, scrubbed of the password.
        message: String,
    },

    /// A message to publish lacks what a Python worker requires of it.
    #[error("cannot publish the envelope: `{field}` {reason}")]
    Envelope {
        /// The field's path in the envelope, e.g. `properties.delivery_tag`.
        field: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },

    /// The server answered in a shape the transport does not expect.
    #[error("broker {op}: unexpected reply: {detail}")]
    Reply {
        /// The transport operation.
        op: &'static str,
        /// What came back.
        detail: String,
    },
}

impl BrokerError {
    /// Whether to retry, reconnect or give up.
    pub fn kind(&self) -> ErrorKind {
        match self {
            BrokerError::Connect { kind, .. } | BrokerError::Redis { kind, .. } => *kind,
            _ => ErrorKind::GiveUp,
        }
    }

    /// Maps a client error of operation `op`.
    pub(crate) fn redis(op: &'static str, url: &RedactedUrl, e: &redis::RedisError) -> Self {
        BrokerError::Redis {
            op,
            url: url.shown.clone(),
            kind: kind_of(e),
            message: url.scrub(&e.to_string()),
        }
    }
}

/// The portable kind of a redis-rs error.
pub(crate) fn kind_of(e: &redis::RedisError) -> ErrorKind {
    if e.is_timeout() {
        ErrorKind::Retry
    } else if e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal() {
        ErrorKind::Reconnect
    } else if matches!(
        e.code(),
        Some("READONLY" | "TRYAGAIN" | "LOADING" | "MASTERDOWN" | "BUSY")
    ) {
        ErrorKind::Retry
    } else {
        ErrorKind::GiveUp
    }
}

/// A result of the transport.
pub type Result<T, E = BrokerError> = std::result::Result<T, E>;

/// A URL as it may be shown, and the secrets to keep out of messages (the store's rules:
/// [`celeriac_core::redact`]).
#[derive(Debug, Clone)]
pub(crate) struct RedactedUrl {
    pub(crate) shown: String,
    secrets: Vec<String>,
}

impl RedactedUrl {
    /// Splits `url` into what may be shown (password replaced by `***`) and its secrets.
    pub(crate) fn new(url: &str) -> Self {
        if !url.contains("://") {
            // Not URL-shaped: nothing can be told apart from a secret, so show only its length.
            return RedactedUrl {
                shown: format!("<{} characters, not a URL>", url.len()),
                secrets: (!url.is_empty())
                    .then(|| url.to_owned())
                    .into_iter()
                    .collect(),
            };
        }
        RedactedUrl {
            shown: celeriac_core::redact::url(url),
            secrets: celeriac_core::redact::url_secrets(url),
        }
    }

    /// `text` with every occurrence of a secret (as written and percent-decoded) replaced.
    pub(crate) fn scrub(&self, text: &str) -> String {
        celeriac_core::redact::text(text, &self.secrets)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_passwords() {
        let u = RedactedUrl::new("redis://user:p%40ss@host:6379/2");
        assert_eq!(u.shown, "redis://user:***@host:6379/2");
        assert_eq!(u.scrub("bad p@ss and p%40ss"), "bad *** and ***");
        let lone = RedactedUrl::new("rediss://:secret@h/0");
        assert_eq!(lone.shown, "rediss://:***@h/0");
        assert!(!lone.scrub("x secret y").contains("secret"));
        assert_eq!(RedactedUrl::new("redis://h:1/0").shown, "redis://h:1/0");
        assert!(!RedactedUrl::new("garbage:pw").shown.contains("pw"));
    }
}
