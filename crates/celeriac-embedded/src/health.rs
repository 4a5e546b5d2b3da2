//! [`StoreHealth`] on SQLite: a query through the writer, the sizes of the database file and
//! its write-ahead log, and for a cache file with a cap (`?role=cache&max_bytes=`) its bytes in
//! use, its cap and the values it evicted.

use crate::SqliteBackend;
use celeriac_core::backend::{KvStore, StoreFigures, StoreHealth};
use celeriac_core::error::Result;
use std::time::{Duration, Instant};

impl StoreHealth for SqliteBackend {
    async fn ping(&self) -> Result<Duration> {
        let sent = Instant::now();
        self.inner
            .writer
            .call(|c| c.query_row("SELECT 1", [], |r| r.get::<_, i64>(0)))
            .await?;
        Ok(sent.elapsed())
    }

    async fn store_figures(&self) -> Result<StoreFigures> {
        let Some(path) = self.inner.config.path.clone() else {
            return Ok(StoreFigures::default());
        };
        let size = |p: &std::path::Path| std::fs::metadata(p).ok().map(|m| m.len());
        let mut wal = path.clone().into_os_string();
        wal.push("-wal");
        let mut figures = StoreFigures {
            file_bytes: size(&path),
            wal_bytes: Some(size(std::path::Path::new(&wal)).unwrap_or(0)),
            ..StoreFigures::default()
        };
        // A capped cache file is bounded like a Redis with `maxmemory`: say how full it is.
        if self.inner.config.kv_max_bytes > 0 {
            if let Some(m) = self.kv_memory().await? {
                figures.memory_used_bytes = Some(m.used_bytes);
                figures.memory_max_bytes = Some(m.max_bytes);
                figures.eviction_policy = Some(m.policy);
                figures.evicted_keys = Some(m.evicted_keys);
            }
        }
        Ok(figures)
    }
}
