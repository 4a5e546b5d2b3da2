//! [`ResultStore`]: the states, results, errors and progress of jobs.

use super::LeaseRef;
use crate::error::Result;
use crate::job::{JobId, JobInfo};
use std::future::Future;
use std::time::Duration;

/// States, results, errors and progress of jobs.
pub trait ResultStore: Send + Sync + 'static {
    /// Everything known about a job, or `None` if it is unknown or its record expired.
    fn get(&self, id: JobId) -> impl Future<Output = Result<Option<JobInfo>>> + Send;

    /// Records progress of a running attempt (ignored if `lease` no longer holds).
    fn set_progress(
        &self,
        lease: LeaseRef,
        fraction: f64,
        message: Option<String>,
    ) -> impl Future<Output = Result<bool>> + Send;

    /// Waits until the job reaches a terminal state, for at most `timeout`.
    ///
    /// # Errors
    /// [`crate::Error::Timeout`] when it did not finish in time, [`crate::Error::NotFound`]
    /// when the job is unknown.
    fn wait(&self, id: JobId, timeout: Duration) -> impl Future<Output = Result<JobInfo>> + Send;
}
