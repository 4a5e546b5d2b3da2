//! Celery remote control (§10): a Rust worker that `celery inspect`, `celery control`,
//! `app.control` and Flower can see and steer.
//!
//! - [`PidboxResponder`]: listens on the `celery.pidbox` fanout for its hostname and replies
//!   as kombu's `Mailbox` node does (`{hostname: reply}` with the ticket, through
//!   `reply.celery.pidbox`). Commands: `ping`; inspect `active`, `reserved`, `scheduled`,
//!   `registered`, `stats`, `revoked`, `active_queues`, `query_task`, `conf` (minimal),
//!   `report`, `clock`; control `revoke`/`terminate`, `shutdown`, `enable_events`,
//!   `disable_events`, `heartbeat`, `add_consumer`, `cancel_consumer`, `hello` (mingle).
//!   `rate_limit`, `time_limit`, pool and autoscale commands answer
//!   `{"error": "... is not supported ..."}`.
//! - [`ControlHandler`]: what the worker provides (its tasks, names, stats, revoke,
//!   shutdown, queues); [`InMemoryHandler`] answers from plain data, for tests.
//! - [`Revoked`]: revoked task ids, bounded and expiring like Python's `LimitedSet`, filled
//!   by `revoke` for the worker to check before running a task.
//! - [`ControlMessage`]: decoding (and encoding) of the messages themselves.
//!
//! ```no_run
//! # async fn demo(broker: celeriac_celery::broker::KombuBroker) -> celeriac_celery::control::Result<()> {
//! use celeriac_celery::control::{InMemoryHandler, PidboxResponder};
//! use std::sync::Arc;
//!
//! let handler = Arc::new(InMemoryHandler::with_tasks(["tasks.add"], &["celery"]));
//! let pidbox = PidboxResponder::builder("celeriac@host", handler).start(broker).await?;
//! // `celery -A proj inspect ping` now lists celeriac@host: {"ok": "pong"}
//! pidbox.stop().await;
//! # Ok(()) }
//! ```

mod dispatch;
mod error;
mod handler;
mod memory;
mod message;
mod responder;
mod revoked;

pub use error::{ControlError, Result};
pub use handler::{ControlHandler, ScheduledTask, TaskDelivery, TaskInfo, WorkerStats};
pub use memory::{InMemoryHandler, MemoryState, RevokeCall};
pub use message::{reply_envelope, ControlMessage, ReplyTo, PIDBOX_EXCHANGE, REPLY_EXCHANGE};
pub use responder::{PidboxBuilder, PidboxResponder};
pub use revoked::{Revoked, REVOKES_MAX, REVOKE_EXPIRES};
