//! [`ResultStore`] for Redis: a job's state, result and progress, read from its hash.

use crate::codec;
use crate::RedisBackend;
use celeriac_core::backend::{LeaseRef, ResultStore};
use celeriac_core::error::Result;
use celeriac_core::job::{JobId, JobInfo};
use std::time::Duration;

impl ResultStore for RedisBackend {
    async fn get(&self, id: JobId) -> Result<Option<JobInfo>> {
        let Some(found) = self.locate(id).await? else {
            return Ok(None);
        };
        let info = codec::info_from_hash(id, &found.queue, found.fields, found.lease, None)?;
        Ok(info.map(|info| match found.held {
            Some(state) => codec::held_elsewhere(info, state, found.lease),
            None => info,
        }))
    }

    async fn set_progress(
        &self,
        lease: LeaseRef,
        fraction: f64,
        message: Option<String>,
    ) -> Result<bool> {
        let keys = self.keys(&lease.queue);
        let r: i64 = self
            .invoke(
                &self.inner.scripts.progress,
                &keys,
                [
                    lease.id.to_string().into_bytes(),
                    lease.token.to_string().into_bytes(),
                    fraction.to_string().into_bytes(),
                    message.unwrap_or_default().into_bytes(),
                ],
            )
            .await?;
        Ok(r == 1)
    }

    async fn wait(&self, id: JobId, timeout: Duration) -> Result<JobInfo> {
        self.wait_until_done(id, timeout, || self.get(id), |i| i.state.is_terminal())
            .await
    }
}
