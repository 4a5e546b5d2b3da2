//! Celery's wire protocol for Celeriac: task messages (protocol v2) carried by the kombu Redis
//! transport, and Celery's Redis result backend.
//!
//! - [`protocol`]: the envelope kombu puts on a Redis list, the task message inside it (headers,
//!   `[args, kwargs, embed]` body), signatures and canvas (chains, groups, chords, links), and
//!   the serializers (JSON and msgpack; pickle and YAML are refused).
//! - [`broker`]: the kombu Redis transport: queues as lists with priority sub-queues, the
//!   `unacked` hash and its visibility-timeout restore, fanout over pub/sub.
//! - [`results`]: the Redis result backend: `celery-task-meta-<id>` records, their expiry and the
//!   PUBLISH on completion, exceptions as Python reads them, and the chord join counters.
//! - [`worker`]: a Rust worker serving tasks that Python Celery clients send.
//! - [`client`]: the producer for Python workers: `send_task`, canvas `apply`, `AsyncResult`.
//! - [`events`]: worker and task events (heartbeats) that Celery's monitors and Flower read.
//! - [`control`]: the remote-control (pidbox) responder for `celery inspect` / `control`, and revokes.

pub mod broker;
pub mod client;
pub mod control;
pub mod events;
pub mod protocol;
/// Python-compatible JSON shared by `protocol` and `results`: lenient reading, `json.dumps`, kombu tags, `repr`.
pub mod pyjson;
pub mod results;
pub mod worker;
