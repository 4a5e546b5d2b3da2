//! [`BreakerStore`]: circuit-breaker state shared by every instance through the store.

use crate::clock::{StoreClock, UnixMs};
use crate::error::Result;
use std::future::Future;

/// How a shared circuit breaker judges the signals of its instances; passed with every
/// [`BreakerStore`] call (the store keeps no settings).
#[derive(Debug, Clone, PartialEq)]
pub struct BreakerPolicy {
    /// Signals older than this (ms) are forgotten.
    pub window_ms: i64,
    /// Signals are summed per slice of time of this length (ms; at least 1).
    pub bucket_ms: i64,
    /// The fewest calls, over every instance, before rates are judged.
    pub min_calls: u64,
    /// The fewest instances that must each see the failure (or slow-call) rate on their own
    /// calls before the breaker opens for everyone: one bad node does not trip the fleet.
    pub quorum: u32,
    /// The failure rate (percent) at or above which it opens.
    pub failure_rate: f64,
    /// The slow-call rate (percent) at or above which it opens, if slow calls count.
    pub slow_rate: Option<f64>,
    /// How many probes half-open lets through across every instance.
    pub probes: u32,
    /// A probe reservation lapses after this long (ms) without a result.
    pub probe_lease_ms: i64,
    /// The first open period (ms).
    pub open_ms: i64,
    /// Each further trip in a row multiplies the open period by this.
    pub backoff: f64,
    /// The open period never exceeds this (ms).
    pub max_open_ms: i64,
    /// If this call opens the breaker, the share (0 to 1) its period is cut by: the caller's
    /// random jitter (stores draw no random numbers).
    pub jitter_cut: f64,
}

impl BreakerPolicy {
    /// The open period (ms) after `trips` trips in a row, jitter applied.
    pub fn open_period_ms(&self, trips: u32) -> i64 {
        let exp = trips.saturating_sub(1).min(64) as i32;
        let full = (self.open_ms as f64 * self.backoff.powi(exp)).min(self.max_open_ms as f64);
        ((full * (1.0 - self.jitter_cut.clamp(0.0, 1.0))) as i64).max(1)
    }

    /// How long (ms) a store keeps a breaker's keys after its last write: long enough to
    /// outlive its window and its longest open period.
    pub fn ttl_ms(&self) -> i64 {
        self.window_ms
            .max(self.max_open_ms)
            .max(self.probe_lease_ms)
            .saturating_mul(2)
            .max(1_000)
    }
}

/// What one instance saw of a shared breaker's calls since its last report.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BreakerSignal {
    /// Who reports (a process's id; empty with no counts for a pure read of the state).
    pub instance: String,
    /// Calls judged.
    pub calls: u64,
    /// Of which failed.
    pub failures: u64,
    /// Of which were slow.
    pub slow: u64,
}

/// A shared breaker's state in the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedBreakerState {
    /// Where the breaker is (an open one whose period ended reads as half-open).
    pub state: crate::breaker::BreakerState,
    /// When the open period ends (meaningful while open).
    pub open_until: UnixMs,
    /// Trips in a row without closing in between.
    pub trips: u32,
    /// Moves at every change of state.
    pub generation: u64,
    /// The signals within the window, over every instance.
    pub window: crate::breaker::Counts,
    /// How many instances reported within the window.
    pub instances: u32,
}

/// A manual override of a shared breaker, for every instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerCommand {
    /// Reject every call until reset.
    ForceOpen,
    /// Let every call through, judging nothing, until reset.
    ForceClosed,
    /// Closed, with no signals and no backoff history.
    Reset,
}

/// Shared circuit-breaker state: instances publish their signals, the store decides trips
/// (with a quorum of instances) and hands out a bounded number of half-open probes with
/// compare-and-set and expiry. Every key of a breaker expires ([`BreakerPolicy::ttl_ms`]
/// after its last write); a forgotten breaker is closed.
pub trait BreakerStore: StoreClock {
    /// Adds an instance's signal to the window of breaker `name` and judges it: a closed
    /// breaker opens when the window holds `min_calls`, reaches a threshold, and `quorum`
    /// instances each reach it too. Returns the state after.
    fn breaker_report(
        &self,
        name: &str,
        signal: BreakerSignal,
        policy: &BreakerPolicy,
        now: UnixMs,
    ) -> impl Future<Output = Result<SharedBreakerState>> + Send;

    /// Reserves one of the half-open probes for `token` until `now + probe_lease_ms`; returns
    /// whether it was granted (only while half-open and fewer than `probes` reservations
    /// are live) and the state.
    fn breaker_probe(
        &self,
        name: &str,
        token: &str,
        policy: &BreakerPolicy,
        now: UnixMs,
    ) -> impl Future<Output = Result<(bool, SharedBreakerState)>> + Send;

    /// Records the result of the probe reserved under `token` (ignored if the reservation
    /// lapsed or the state moved on): enough failures open the breaker again with backoff,
    /// `probes` successes close it.
    fn breaker_probe_done(
        &self,
        name: &str,
        token: &str,
        failed: bool,
        policy: &BreakerPolicy,
        now: UnixMs,
    ) -> impl Future<Output = Result<SharedBreakerState>> + Send;

    /// Forces the breaker open or closed for everyone, or resets it.
    fn breaker_command(
        &self,
        name: &str,
        command: BreakerCommand,
        policy: &BreakerPolicy,
        now: UnixMs,
    ) -> impl Future<Output = Result<SharedBreakerState>> + Send;

    /// The state, without changing anything (the window as of the last report); `None`
    /// when the store has no live record of `name`.
    fn breaker_status(
        &self,
        name: &str,
        now: UnixMs,
    ) -> impl Future<Output = Result<Option<SharedBreakerState>>> + Send;
}
