//! The task events a worker sends at each point of a task's life (§9), as a Python worker
//! does: received, started, then succeeded, failed, retried or revoked; rejected for a
//! message it cannot use.

use crate::events::{EventSender, ReceivedTask};
use crate::protocol::{repr, TaskMessage};

use super::finish::Outcome;

/// What the event for an outcome says, taken before the outcome is consumed.
pub(crate) enum OutcomeEvent {
    Succeeded {
        result: String,
        runtime: f64,
    },
    Failed {
        exception: String,
        traceback: String,
    },
    Retried {
        exception: String,
        traceback: String,
    },
    Revoked {
        terminated: bool,
        expired: bool,
    },
}

/// `SIGTERM`'s number: what Celery reports for a terminated task.
const SIGTERM: i32 = 15;

impl OutcomeEvent {
    pub fn of(outcome: &Outcome, runtime: f64) -> Self {
        match outcome {
            Outcome::Success(value) => OutcomeEvent::Succeeded {
                result: repr::value_repr(value),
                runtime,
            },
            Outcome::Failure { exc, traceback } => OutcomeEvent::Failed {
                exception: exc.py_repr(),
                traceback: traceback.clone(),
            },
            Outcome::Retry { exc, traceback, .. } => OutcomeEvent::Retried {
                exception: exc.py_repr(),
                traceback: traceback.clone(),
            },
            Outcome::Revoked(reason) => OutcomeEvent::Revoked {
                terminated: reason == "terminated",
                expired: reason == "expired",
            },
        }
    }

    pub fn send(&self, events: &EventSender, id: &str) {
        match self {
            OutcomeEvent::Succeeded { result, runtime } => {
                events.task_succeeded(id, result, *runtime)
            }
            OutcomeEvent::Failed {
                exception,
                traceback,
            } => events.task_failed(id, exception, traceback),
            OutcomeEvent::Retried {
                exception,
                traceback,
            } => events.task_retried(id, exception, traceback),
            OutcomeEvent::Revoked {
                terminated,
                expired,
            } => events.task_revoked(id, *terminated, terminated.then_some(SIGTERM), *expired),
        };
    }
}

/// `task-received` of a message.
pub(crate) fn received(events: &EventSender, msg: &TaskMessage) {
    let h = &msg.headers;
    events.task_received(&ReceivedTask {
        id: h.id.clone(),
        name: h.task.clone(),
        args_repr: h
            .argsrepr
            .clone()
            .unwrap_or_else(|| repr::args_repr(&msg.args)),
        kwargs_repr: h
            .kwargsrepr
            .clone()
            .unwrap_or_else(|| repr::kwargs_repr(&msg.kwargs)),
        retries: u64::from(h.retries),
        eta: h.eta.map(|e| e.to_rfc3339()),
        expires: h.expires.map(|e| e.to_rfc3339()),
        root_id: h.root_id.clone(),
        parent_id: h.parent_id.clone(),
    });
}
