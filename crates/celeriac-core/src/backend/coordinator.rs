//! [`Coordinator`]: leader leases with fencing tokens and the state of periodic schedules,
//! what the beat needs from a store.

use crate::clock::{StoreClock, UnixMs};
use crate::error::Result;
use serde::{Deserialize, Serialize};
use std::future::Future;
use std::time::Duration;

/// A periodic schedule's stored state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScheduleState {
    /// The schedule's name.
    pub name: String,
    /// The last tick handled (ms): fired, or passed over by the missed-tick policy or while
    /// paused. A beat that first sees a schedule records the moment it saw it, so earlier
    /// ticks are not back-filled.
    pub last_tick: Option<UnixMs>,
    /// Paused schedules do not fire.
    pub paused: bool,
}

/// Leader leases with fencing tokens, and the state of periodic schedules: what the
/// scheduler (`celeriac beat`) needs from a store.
pub trait Coordinator: StoreClock {
    /// Takes the lease `name` for `holder` until `now + ttl` when it is free, expired, or
    /// already held by `holder` (a renewal). Returns the fencing token while held: it grows
    /// each time the lease changes hands and stays the same across renewals.
    fn acquire_leader(
        &self,
        name: &str,
        holder: &str,
        ttl: Duration,
        now: UnixMs,
    ) -> impl Future<Output = Result<Option<u64>>> + Send;

    /// Gives the lease up if `token` still holds it; returns whether it did.
    fn release_leader(&self, name: &str, token: u64) -> impl Future<Output = Result<bool>> + Send;

    /// The stored state of every schedule that has one.
    fn schedule_states(&self) -> impl Future<Output = Result<Vec<ScheduleState>>> + Send;

    /// Records that `schedule` fired `tick`, only while `token` holds the lease `leader` and
    /// `tick` is later than the recorded one; returns whether it was recorded.
    fn record_tick(
        &self,
        leader: &str,
        token: u64,
        schedule: &str,
        tick: UnixMs,
        now: UnixMs,
    ) -> impl Future<Output = Result<bool>> + Send;

    /// Pauses or resumes a schedule.
    fn set_schedule_paused(
        &self,
        schedule: &str,
        paused: bool,
    ) -> impl Future<Output = Result<()>> + Send;
}
