//! [`ResultStore`] for SQLite, and the wait for a job or workflow to finish.

use crate::{ops, SqliteBackend};
use celeriac_core::backend::{LeaseRef, ResultStore};
use celeriac_core::error::{Error, Result};
use celeriac_core::job::{JobId, JobInfo};
use std::time::Duration;

impl ResultStore for SqliteBackend {
    async fn get(&self, id: JobId) -> Result<Option<JobInfo>> {
        Ok(self
            .inner
            .reads()
            .call(move |c| ops::get(c, id))
            .await?
            .map(|(info, _)| info))
    }

    async fn set_progress(
        &self,
        lease: LeaseRef,
        fraction: f64,
        message: Option<String>,
    ) -> Result<bool> {
        self.inner
            .writer
            .call(move |c| ops::set_progress(c, lease, fraction, message))
            .await
    }

    async fn wait(&self, id: JobId, timeout: Duration) -> Result<JobInfo> {
        self.wait_until_done(id, timeout, || self.get(id), |i| i.state.is_terminal())
            .await
    }
}

impl SqliteBackend {
    /// Reads `fetch` until `done` holds: a finish in this process wakes the waiter at once;
    /// one made by another process is seen by polling, starting fast and backing off.
    pub(crate) async fn wait_until_done<T, F, Fut>(
        &self,
        id: JobId,
        timeout: Duration,
        fetch: F,
        done: impl Fn(&T) -> bool,
    ) -> Result<T>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<Option<T>>>,
    {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut rx = self.inner.done.subscribe();
        let mut poll = Duration::from_millis(5);
        loop {
            rx.borrow_and_update();
            match fetch().await? {
                Some(value) if done(&value) => return Ok(value),
                Some(_) => {}
                None => return Err(Error::NotFound(id.to_string())),
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Err(Error::Timeout(id.to_string()));
            }
            let nap = poll.min(deadline - now);
            let _ = tokio::time::timeout(nap, rx.changed()).await;
            poll = (poll * 2).min(Duration::from_millis(250));
        }
    }
}
