//! Enqueues acknowledged by replicas (`?wait_replicas=N`): the enqueue script and `WAIT` go
//! out as one pipeline on a connection of their own.
//!
//! `WAIT` waits for the writes of the connection that sends it, so it must follow the script
//! on the same connection: one pipeline keeps them together, also when the Sentinel wrapper
//! resends it to a new master (the enqueue is idempotent by id, and the `WAIT` then counts the
//! new master's replicas). On Cluster, redis-rs routes a pipeline by its first keyed command,
//! so the `WAIT` runs on the node of the queue's slot (alone, it would go to every primary).
//! Its own connection, because a `WAIT` holds up every command queued behind it on the same
//! connection: heartbeats and claims must not wait for replicas.

use crate::conn::{map_err, Conn};
use crate::keys::QueueKeys;
use celeriac_core::error::{Error, ErrorKind, Result};
use std::time::Duration;

/// A connection for enqueues that wait for replicas.
pub(crate) struct ReplicaWait {
    conn: Conn,
    replicas: u32,
    timeout: Duration,
}

impl ReplicaWait {
    pub(crate) fn new(conn: Conn, replicas: u32, timeout: Duration) -> Self {
        Self {
            conn,
            replicas,
            timeout,
        }
    }

    /// Runs `script` on the queue's keys and waits until the replicas acknowledged it.
    ///
    /// # Errors
    /// Fewer than the configured replicas acknowledged within the timeout: the script ran, so
    /// the jobs may be stored (and would be lost if the master failed now); the message says
    /// so and that enqueueing the same ids again is safe.
    pub(crate) async fn invoke<T: redis::FromRedisValue>(
        &self,
        script: &redis::Script,
        keys: &QueueKeys,
        args: Vec<Vec<u8>>,
    ) -> Result<T> {
        let mut eval = redis::cmd("EVALSHA");
        eval.arg(script.get_hash())
            .arg(keys.keys.len())
            .arg(&keys.keys)
            .arg(&keys.job_prefix)
            .arg(args);
        let timeout_ms = u64::try_from(self.timeout.as_millis()).unwrap_or(u64::MAX);
        let mut pipe = redis::pipe();
        pipe.add_command(eval)
            .cmd("WAIT")
            .arg(self.replicas)
            .arg(timeout_ms);
        let mut conn = self.conn.clone();
        let reply: redis::RedisResult<(T, u32)> = pipe.query_async(&mut conn).await;
        let (value, acked) = match reply {
            Err(e) if e.code() == Some("NOSCRIPT") => {
                script.load_async(&mut conn).await.map_err(map_err)?;
                pipe.query_async(&mut conn).await.map_err(map_err)?
            }
            other => other.map_err(map_err)?,
        };
        if acked < self.replicas {
            return Err(Error::backend(
                ErrorKind::Retry,
                format!(
                    "only {acked} of {} replicas acknowledged the enqueue within {timeout_ms} ms \
                     (url: wait_replicas, wait_timeout_ms); the jobs may be stored all the same, \
                     but a failover now could lose them: enqueue the same job ids again to retry \
                     (an id already stored is not stored twice)",
                    self.replicas
                ),
            ));
        }
        Ok(value)
    }
}
