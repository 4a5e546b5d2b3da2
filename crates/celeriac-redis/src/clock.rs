//! The fleet's clock on Redis: the server's `TIME`, read through a script on one fixed key's
//! slot so that on a Cluster every process reads the same node's clock.

use crate::conn::{map_err, Conn};
use celeriac_core::clock::{TimeSource, UnixMs};
use celeriac_core::error::Result;
use redis::Script;

/// Reads the Redis server's clock.
pub(crate) struct RedisTime {
    conn: Conn,
    script: Script,
    key: String,
}

impl RedisTime {
    pub(crate) fn new(conn: Conn, script: Script, prefix: &str) -> Self {
        Self {
            conn,
            script,
            key: format!("{prefix}:{{celeriac:clock}}"),
        }
    }
}

impl TimeSource for RedisTime {
    async fn store_now(&self) -> Result<UnixMs> {
        let (secs, micros): (i64, i64) = self
            .script
            .key(&self.key)
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(map_err)?;
        celeriac_core::clock::time_reply_ms(secs, micros)
    }

    fn name(&self) -> &'static str {
        "Redis TIME"
    }
}
