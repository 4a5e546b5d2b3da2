//! [`RateLimitStore`]: atomic rate-limit decisions and concurrency permits.

use crate::clock::{StoreClock, UnixMs};
use crate::error::Result;
use std::future::Future;
use std::time::Duration;

/// Atomic rate-limit decisions and concurrency permits, shared by every process on the store.
///
/// Keys are at most [`crate::limit::MAX_KEY_LEN`] bytes and not empty; a bad key, quota or
/// cost is an [`Error::Config`](crate::Error::Config), never a panic (see
/// [`crate::limit::check_request`]). `now` is passed in: stores never read the clock.
pub trait RateLimitStore: StoreClock {
    /// Checks every quota for `key` at `now` and, only if all of them allow it, charges `cost`
    /// to each, in one atomic step. Returns the most restrictive quota's decision.
    fn check_limits(
        &self,
        key: &str,
        quotas: &[crate::limit::Quota],
        cost: u32,
        now: UnixMs,
    ) -> impl Future<Output = Result<crate::limit::Decision>> + Send;

    /// Takes one of `max` concurrency permits of `key` for `holder` until `now + lease`, or
    /// renews `holder`'s own. Leases that ran out by `now` no longer count, so a holder that
    /// died frees its permit when its lease ends.
    fn acquire_permit(
        &self,
        key: &str,
        holder: &str,
        max: u32,
        lease: Duration,
        now: UnixMs,
    ) -> impl Future<Output = Result<crate::limit::Decision>> + Send;

    /// Gives `holder`'s permit of `key` back; returns whether it held one at `now`.
    fn release_permit(
        &self,
        key: &str,
        holder: &str,
        now: UnixMs,
    ) -> impl Future<Output = Result<bool>> + Send;
}
