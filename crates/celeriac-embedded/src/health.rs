//! [`StoreHealth`] on SQLite: a query through the writer, and the sizes of the database file
//! and its write-ahead log.

use crate::SqliteBackend;
use celeriac_core::backend::{StoreFigures, StoreHealth};
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
        Ok(StoreFigures {
            file_bytes: size(&path),
            wal_bytes: Some(size(std::path::Path::new(&wal)).unwrap_or(0)),
            ..StoreFigures::default()
        })
    }
}
