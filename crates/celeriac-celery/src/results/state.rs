//! Task states as Celery names them (`celery.states`).

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A task's state: the `status` of a result record.
///
/// `PENDING` is never stored: an absent record means pending (or unknown). Any other string
/// (`update_state(state="PROGRESS")`) is a [`State::Custom`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum State {
    /// Unknown or waiting (the record is absent).
    Pending,
    /// Received by a worker (events only).
    Received,
    /// Started (stored with `task_track_started`).
    Started,
    /// Succeeded; the result is the return value.
    Success,
    /// Failed; the result is an exception dict.
    Failure,
    /// Will be retried; the result is the exception passed to `retry(exc=...)` or null.
    Retry,
    /// Revoked (or expired); the result is a `TaskRevokedError` dict.
    Revoked,
    /// Rejected by the task (`Reject`).
    Rejected,
    /// Ignored by the task (`Ignore`).
    Ignored,
    /// Any other state name.
    Custom(String),
}

impl State {
    /// The name Celery stores (`"SUCCESS"`, ...).
    pub fn as_str(&self) -> &str {
        match self {
            State::Pending => "PENDING",
            State::Received => "RECEIVED",
            State::Started => "STARTED",
            State::Success => "SUCCESS",
            State::Failure => "FAILURE",
            State::Retry => "RETRY",
            State::Revoked => "REVOKED",
            State::Rejected => "REJECTED",
            State::Ignored => "IGNORED",
            State::Custom(name) => name,
        }
    }

    /// The state of this name (unknown names are [`State::Custom`]).
    pub fn parse(name: &str) -> State {
        match name {
            "PENDING" => State::Pending,
            "RECEIVED" => State::Received,
            "STARTED" => State::Started,
            "SUCCESS" => State::Success,
            "FAILURE" => State::Failure,
            "RETRY" => State::Retry,
            "REVOKED" => State::Revoked,
            "REJECTED" => State::Rejected,
            "IGNORED" => State::Ignored,
            other => State::Custom(other.to_owned()),
        }
    }

    /// `READY_STATES`: SUCCESS, FAILURE, REVOKED. A waiter stops at these.
    pub fn is_ready(&self) -> bool {
        matches!(self, State::Success | State::Failure | State::Revoked)
    }

    /// `EXCEPTION_STATES`: RETRY, FAILURE, REVOKED, whose result is an exception dict.
    pub fn is_exception(&self) -> bool {
        matches!(self, State::Retry | State::Failure | State::Revoked)
    }

    /// `PROPAGATE_STATES`: FAILURE, REVOKED (`get()` raises; a chord fails).
    pub fn propagates(&self) -> bool {
        matches!(self, State::Failure | State::Revoked)
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<&str> for State {
    fn from(name: &str) -> Self {
        State::parse(name)
    }
}

impl Serialize for State {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for State {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        Ok(State::parse(&name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_classes_follow_celery_states() {
        for name in [
            "PENDING", "RECEIVED", "STARTED", "SUCCESS", "FAILURE", "RETRY", "REVOKED", "REJECTED",
            "IGNORED", "PROGRESS",
        ] {
            assert_eq!(State::parse(name).as_str(), name);
        }
        assert_eq!(State::parse("PROGRESS"), State::Custom("PROGRESS".into()));
        let ready: Vec<_> = ["SUCCESS", "FAILURE", "REVOKED", "RETRY", "STARTED", "X"]
            .iter()
            .map(|n| State::parse(n).is_ready())
            .collect();
        assert_eq!(ready, [true, true, true, false, false, false]);
        assert!(State::Retry.is_exception() && !State::Retry.propagates());
        assert!(State::Revoked.propagates() && !State::Success.is_exception());
    }
}
