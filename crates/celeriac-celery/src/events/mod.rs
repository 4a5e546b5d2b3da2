//! Celery events (§9): what makes a Rust worker visible to `celery events`, Python's
//! `EventReceiver`/`State` and Flower.
//!
//! - [`EventSender`]: `worker-online`, a `worker-heartbeat` every 2 s, `worker-offline` on
//!   stop or drop, and the task events (`task-received`, `-started`, `-succeeded`, `-failed`,
//!   `-retried`, `-revoked`, `-rejected`) with exactly the fields a Python worker writes,
//!   published on the `celeryev` fanout exchange with routing keys like `task.succeeded`.
//!   Sending never blocks: a bounded queue feeds a background publisher; overflow is counted.
//! - [`Event`]: one event, its envelope ([`Event::encode`]) and the decoding of received
//!   envelopes, batches (`task.multi`) included ([`Event::decode`]).
//! - [`LamportClock`]: the logical clock events and remote-control replies carry.
//!
//! ```no_run
//! # async fn demo(broker: celeriac_celery::broker::KombuBroker) {
//! use celeriac_celery::events::EventSender;
//!
//! let events = EventSender::builder("celeriac@host").start(broker);
//! events.task_started("a6b2...");
//! events.task_succeeded("a6b2...", "5", 0.002);
//! events.stop().await; // worker-offline
//! # }
//! ```

mod clock;
mod event;
mod sender;

pub use clock::LamportClock;
pub use event::{Event, ReceivedTask, EVENT_EXCHANGE};
pub use sender::{
    EventSender, EventSenderBuilder, EventStats, DEFAULT_CAPACITY, DEFAULT_HEARTBEAT,
};
