//! [`EventLog`]: a capped stream of what matters, kept in the store: jobs failing, dying,
//! cancelled or retried from the dead letters, and every administrative action with who did it.
//! Successful jobs are counted, not streamed.

use crate::clock::{StoreClock, UnixMs};
use crate::error::{Error, Result};
use crate::job::{ErrorInfo, JobId};
use serde::{Deserialize, Serialize};
use std::future::Future;

/// How many events a store keeps; appending more drops the oldest.
pub const EVENTS_KEPT: u64 = 10_000;

/// One event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Its place in the stream, given by the store (empty when appending); later events have
    /// later ids, and [`EventLog::events`] goes on after one.
    #[serde(default)]
    pub id: String,
    /// When it happened (fleet clock, ms).
    pub at: UnixMs,
    /// What happened: `job.failed`, `job.dead`, `job.cancelled`, `dlq.retried`, or for an
    /// administrative action `admin.<action>` (`admin.pause`, `admin.purge`, `admin.bulk`, ...).
    pub kind: String,
    /// The queue it concerns, if one.
    #[serde(default)]
    pub queue: Option<String>,
    /// The job it concerns, if one.
    #[serde(default)]
    pub job: Option<JobId>,
    /// Who did it, for an administrative action (`user@host`).
    #[serde(default)]
    pub actor: Option<String>,
    /// What it was, in words (an error, the action's target and result).
    pub message: String,
}

impl Event {
    /// An event of `kind` at `at`.
    pub fn new(kind: impl Into<String>, at: UnixMs, message: impl Into<String>) -> Self {
        Event {
            id: String::new(),
            at,
            kind: kind.into(),
            queue: None,
            job: None,
            actor: None,
            message: message.into(),
        }
    }

    /// The event of job `id` ending in `kind` (`job.failed`, ...): its error as the message,
    /// or `otherwise` when it has none.
    pub fn job_ended(
        kind: impl Into<String>,
        at: UnixMs,
        id: JobId,
        error: Option<&ErrorInfo>,
        otherwise: &str,
    ) -> Self {
        let message = error.map_or_else(
            || otherwise.to_string(),
            |e| format!("{}: {}", e.kind, e.message),
        );
        let mut e = Event::new(kind, at, message);
        e.job = Some(id);
        e
    }

    /// The event as stores keep it (JSON, without its id).
    pub fn encode(&self) -> Result<String> {
        serde_json::to_string(self).map_err(|e| Error::Codec(format!("event: {e}")))
    }

    /// An event as stored, with the id the store gave it; `None` (logged) when it cannot be
    /// read, so one bad entry does not hide the others.
    pub fn decode_or_skip(id: String, stored: &[u8]) -> Option<Event> {
        match serde_json::from_slice::<Event>(stored) {
            Ok(mut e) => {
                e.id = id;
                Some(e)
            }
            Err(e) => {
                tracing::warn!(event = %id, error = %e, "skipping an event that cannot be read");
                None
            }
        }
    }
}

/// The capped stream of events.
pub trait EventLog: StoreClock {
    /// Appends events, in order; beyond [`EVENTS_KEPT`] the oldest are dropped.
    fn append(&self, events: Vec<Event>) -> impl Future<Output = Result<()>> + Send;

    /// Events oldest first: the newest `limit` when `after` is `None`, else up to `limit`
    /// that came after the event `after`.
    fn events(
        &self,
        after: Option<String>,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<Event>>> + Send;
}

/// Who is acting, for the events of administrative actions: `$USER@host`.
pub fn actor() -> String {
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("USERNAME"))
        .unwrap_or_else(|_| "unknown".to_string());
    format!("{user}@{}", crate::process::hostname())
}
