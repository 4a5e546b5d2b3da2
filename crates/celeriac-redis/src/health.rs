//! [`StoreHealth`] on Redis: `PING`, and the memory and eviction figures of `INFO memory` and
//! `INFO stats` (on a Cluster, of every primary, summed).

use crate::codec::text_of;
use crate::conn::map_err;
use crate::RedisBackend;
use celeriac_core::backend::{StoreFigures, StoreHealth};
use celeriac_core::error::Result;
use redis::Value;
use std::time::{Duration, Instant};

/// The value of `field` in an `INFO` reply (`field:value` lines).
fn info_field<'a>(info: &'a str, field: &str) -> Option<&'a str> {
    info.lines().find_map(|line| {
        let (name, value) = line.split_once(':')?;
        (name == field).then_some(value.trim())
    })
}

impl RedisBackend {
    /// `INFO <section>` of each node that answers: one on a single Redis, every primary on a
    /// Cluster (which answers with a map of node to text).
    async fn info(&self, section: &str) -> Result<Vec<String>> {
        let reply: Value = redis::cmd("INFO")
            .arg(section)
            .query_async(&mut self.conn())
            .await
            .map_err(map_err)?;
        Ok(match reply {
            Value::Map(nodes) => nodes.into_iter().map(|(_, v)| text_of(&v)).collect(),
            other => vec![text_of(&other)],
        })
    }
}

impl StoreHealth for RedisBackend {
    async fn ping(&self) -> Result<Duration> {
        let sent = Instant::now();
        let _: String = redis::cmd("PING")
            .query_async(&mut self.conn())
            .await
            .map_err(map_err)?;
        Ok(sent.elapsed())
    }

    async fn store_figures(&self) -> Result<StoreFigures> {
        let memory = self.info("memory").await?;
        let stats = self.info("stats").await?;
        // Summed over the nodes that answered (one, except on a Cluster).
        let sum = |infos: &[String], field| -> Option<u64> {
            infos
                .iter()
                .map(|i| info_field(i, field).and_then(|v| v.parse::<u64>().ok()))
                .sum()
        };
        Ok(StoreFigures {
            memory_used_bytes: sum(&memory, "used_memory"),
            memory_max_bytes: sum(&memory, "maxmemory"),
            eviction_policy: memory
                .iter()
                .find_map(|i| info_field(i, "maxmemory_policy"))
                .map(str::to_string),
            evicted_keys: sum(&stats, "evicted_keys"),
            ..StoreFigures::default()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::info_field;

    #[test]
    fn info_fields_are_found_by_name() {
        let info = "# Memory\r\nused_memory:1024\r\nused_memory_human:1K\r\nmaxmemory_policy:noeviction\r\n";
        assert_eq!(info_field(info, "used_memory"), Some("1024"));
        assert_eq!(info_field(info, "maxmemory_policy"), Some("noeviction"));
        assert_eq!(info_field(info, "maxmemory"), None);
    }
}
