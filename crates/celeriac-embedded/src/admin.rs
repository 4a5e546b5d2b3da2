//! [`QueueAdmin`] for SQLite: pause, resume, counts, purge and the dead letters.

use crate::{browse, ops, SqliteBackend};
use celeriac_core::backend::{JobPage, JobQuery, QueueAdmin, QueueStats};
use celeriac_core::clock::UnixMs;
use celeriac_core::error::Result;
use celeriac_core::job::{JobId, JobInfo};

impl QueueAdmin for SqliteBackend {
    async fn pause(&self, queue: &str) -> Result<()> {
        let q = queue.to_string();
        self.inner
            .writer
            .call(move |c| ops::set_paused(c, &q, true))
            .await
    }

    async fn resume(&self, queue: &str) -> Result<()> {
        let q = queue.to_string();
        self.inner
            .writer
            .call(move |c| ops::set_paused(c, &q, false))
            .await?;
        self.wake_workers();
        Ok(())
    }

    async fn stats(&self) -> Result<Vec<QueueStats>> {
        self.inner.reads().call(ops::stats).await
    }

    async fn purge(&self, queue: &str) -> Result<u64> {
        let q = queue.to_string();
        self.inner.writer.call(move |c| ops::purge(c, &q)).await
    }

    async fn dead_letters(
        &self,
        queue: Option<String>,
        limit: usize,
        offset: usize,
    ) -> Result<Vec<JobInfo>> {
        self.inner
            .reads()
            .call(move |c| ops::dead_letters(c, queue.as_deref(), limit, offset))
            .await
    }

    async fn retry_dead(&self, ids: Option<Vec<JobId>>, now: UnixMs) -> Result<u64> {
        self.inner.config.role.allow_queues("retry dead letters")?;
        let n = self
            .inner
            .writer
            .call(move |c| ops::retry_dead(c, ids.as_deref(), now))
            .await?;
        self.wake_workers();
        Ok(n)
    }

    async fn purge_dead(&self, queue: Option<String>) -> Result<u64> {
        self.inner
            .writer
            .call(move |c| ops::purge_dead(c, queue.as_deref()))
            .await
    }

    async fn list_jobs(
        &self,
        query: JobQuery,
        cursor: Option<String>,
        limit: usize,
    ) -> Result<JobPage> {
        let from = browse::Cursor::of(cursor.as_deref(), query.newest_first)?;
        self.inner
            .reads()
            .call(move |c| browse::list(c, &query, from, limit))
            .await
    }

    async fn delete_jobs(&self, queue: &str, ids: Vec<JobId>) -> Result<u64> {
        let queue = queue.to_string();
        self.inner
            .writer
            .call(move |c| browse::delete(c, &queue, &ids))
            .await
    }
}
