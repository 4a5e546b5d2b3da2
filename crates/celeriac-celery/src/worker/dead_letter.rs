//! Where messages the worker cannot run go, with the reason: never dropped silently, never
//! requeued forever.
//!
//! - [`CeleriacDeadLetters`]: Celeriac's own dead letters (any [`Broker`] backend), listed by
//!   `QueueAdmin::dead_letters` and the `celeriac` command line under the queue
//!   `celery.<queue>`.
//! - [`RedisListDeadLetters`]: a Redis list of JSON records, the default when the worker has
//!   no Celeriac backend (on the broker's database, key `celeriac.celery.dead_letters`).

use std::time::Duration;

use base64::Engine as _;
use celeriac_core::backend::{Broker, ClaimRequest, Completion, Outcome};
use celeriac_core::clock::Clock;
use celeriac_core::job::{ErrorInfo, Job};
use futures_util::future::BoxFuture;
use redis::aio::ConnectionManager;
use serde_json::{json, Value};

/// The key of [`RedisListDeadLetters`] by default.
pub const DEAD_LETTER_LIST: &str = "celeriac.celery.dead_letters";
/// The header of a Celeriac dead letter holding the reason's kind.
pub const KIND_HEADER: &str = "celery-dead-kind";
/// The header of a Celeriac dead letter holding the reason.
pub const REASON_HEADER: &str = "celery-dead-reason";
/// The header of a Celeriac dead letter holding the Celery task id, when readable.
pub const TASK_ID_HEADER: &str = "celery-task-id";

/// A message the worker gives up on.
#[derive(Debug, Clone, PartialEq)]
pub struct DeadLetter {
    /// The queue it was taken from.
    pub queue: String,
    /// The task name, when readable.
    pub task: Option<String>,
    /// The task id, when readable.
    pub task_id: Option<String>,
    /// A short kind: `unknown_task`, `undecodable_envelope`, `undecodable_message`,
    /// `refused_content_type`.
    pub kind: &'static str,
    /// Why, for people.
    pub reason: String,
    /// The envelope exactly as it was on the list.
    pub raw: Vec<u8>,
}

impl DeadLetter {
    /// The envelope as JSON when it is JSON, else its bytes as a base64 string.
    fn raw_value(&self) -> Value {
        serde_json::from_slice::<Value>(&self.raw).unwrap_or_else(|_| {
            Value::String(base64::engine::general_purpose::STANDARD.encode(&self.raw))
        })
    }
}

/// Records dead letters. Object-safe, so a worker holds any store.
pub trait DeadLetterSink: Send + Sync + 'static {
    /// Records one; the worker acknowledges the message only after this succeeded.
    fn record(&self, letter: DeadLetter) -> BoxFuture<'static, Result<(), String>>;
}

/// Celeriac's dead letters on any [`Broker`] backend.
///
/// The backend has no call to insert a dead letter directly, so one is made in three
/// ordinary steps on a queue only this sink uses (`celery.<queue>`): the message is
/// enqueued (at most one attempt, the reason in its headers), claimed and completed as
/// [`Outcome::Dead`] with the reason. Each claim completes whatever it got with the reason in
/// that job's own headers, so concurrent workers never mix reasons up, and a crash in between
/// leaves a job whose lease expires into the dead letters too.
#[derive(Debug, Clone)]
pub struct CeleriacDeadLetters<B> {
    backend: B,
    prefix: String,
}

impl<B: Broker + Clone> CeleriacDeadLetters<B> {
    /// Dead letters of queue `Q` go to the Celeriac queue `celery.Q`.
    pub fn new(backend: B) -> Self {
        CeleriacDeadLetters {
            backend,
            prefix: "celery.".to_owned(),
        }
    }

    /// The Celeriac queue dead letters of the Celery queue `queue` are listed under.
    pub fn queue_for(&self, queue: &str) -> String {
        format!("{}{queue}", self.prefix)
    }
}

impl<B: Broker + Clone> DeadLetterSink for CeleriacDeadLetters<B> {
    fn record(&self, letter: DeadLetter) -> BoxFuture<'static, Result<(), String>> {
        let backend = self.backend.clone();
        let queue = self.queue_for(&letter.queue);
        Box::pin(async move {
            let now = backend.fleet_clock().now_ms();
            let payload = serde_json::to_vec(&letter.raw_value()).map_err(|e| e.to_string())?;
            let name = letter
                .task
                .clone()
                .unwrap_or_else(|| "celery.unknown".into());
            let mut job = Job::new(name, payload, now);
            job.queue = queue.clone();
            job.max_attempts = 1;
            job.result_ttl = None;
            job.headers.insert(KIND_HEADER.into(), letter.kind.into());
            job.headers
                .insert(REASON_HEADER.into(), letter.reason.clone());
            if let Some(id) = &letter.task_id {
                job.headers.insert(TASK_ID_HEADER.into(), id.clone());
            }
            let id = job.id;
            backend
                .enqueue(vec![job], now)
                .await
                .map_err(|e| format!("enqueue dead letter: {e}"))?;
            // Ours may be taken by another worker's claim, which dead-letters it the same way.
            for _ in 0..64 {
                let now = backend.fleet_clock().now_ms();
                let claimed = backend
                    .claim(ClaimRequest {
                        queues: vec![queue.clone()],
                        limit: 16,
                        lease: Duration::from_secs(60),
                        worker: "celeriac-celery dead letters".into(),
                        now,
                        limits: Default::default(),
                    })
                    .await
                    .map_err(|e| format!("claim dead letter: {e}"))?;
                if claimed.is_empty() {
                    return Ok(());
                }
                let ours = claimed.iter().any(|c| c.job.id == id);
                let done = claimed
                    .into_iter()
                    .map(|c| {
                        let kind = c.job.headers.get(KIND_HEADER).cloned();
                        let reason = c.job.headers.get(REASON_HEADER).cloned();
                        Completion {
                            lease: c.lease(),
                            outcome: Outcome::Dead {
                                error: ErrorInfo::new(
                                    kind.unwrap_or_else(|| "celery".into()),
                                    reason.unwrap_or_else(|| "dead letter".into()),
                                    1,
                                ),
                            },
                        }
                    })
                    .collect();
                backend
                    .complete(done, now)
                    .await
                    .map_err(|e| format!("complete dead letter: {e}"))?;
                if ours {
                    return Ok(());
                }
            }
            Ok(())
        })
    }
}

/// Dead letters as JSON records `{"queue", "task", "task_id", "kind", "reason", "at",
/// "envelope"}` pushed on a Redis list (newest first).
#[derive(Clone)]
pub struct RedisListDeadLetters {
    conn: ConnectionManager,
    key: String,
}

impl std::fmt::Debug for RedisListDeadLetters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisListDeadLetters")
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

impl RedisListDeadLetters {
    /// Records on the list `key` through `conn`.
    pub fn new(conn: ConnectionManager, key: impl Into<String>) -> Self {
        RedisListDeadLetters {
            conn,
            key: key.into(),
        }
    }
}

impl DeadLetterSink for RedisListDeadLetters {
    fn record(&self, letter: DeadLetter) -> BoxFuture<'static, Result<(), String>> {
        let mut conn = self.conn.clone();
        let key = self.key.clone();
        Box::pin(async move {
            let record = json!({
                "queue": letter.queue,
                "task": letter.task,
                "task_id": letter.task_id,
                "kind": letter.kind,
                "reason": letter.reason,
                "at": chrono::Utc::now().to_rfc3339(),
                "envelope": letter.raw_value(),
            });
            redis::cmd("LPUSH")
                .arg(&key)
                .arg(record.to_string())
                .query_async::<i64>(&mut conn)
                .await
                .map(drop)
                .map_err(|e| format!("LPUSH {key}: {e}"))
        })
    }
}
