//! What an operator sees of the fleet, built from the stores' figures, the process registry
//! and the history: per queue its counts, latency, consumers and rates.
//!
//! Every figure here costs the store O(number of queues + number of processes), never
//! O(number of jobs).

use crate::backend::{
    History, HistoryEntry, HistoryQuery, ProcessInfo, ProcessKind, ProcessRegistry, ProcessState,
    QueueAdmin, QueueStats, Resolution, MINUTE_MS,
};
use crate::clock::UnixMs;
use crate::error::Result;
use serde::{Deserialize, Serialize};

/// How many complete minutes of history the rates average.
pub const RATE_MINUTES: i64 = 5;

/// One queue as an operator sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QueueFigures {
    /// Counts per state, paused, and the times latency comes from.
    #[serde(flatten)]
    pub stats: QueueStats,
    /// How long the oldest job ready to run has waited, in ms (0 when none is ready).
    pub latency_ms: u64,
    /// Live workers that take from the queue and are not quiet or draining.
    pub consumers: u32,
    /// Their slots in all (each worker's concurrency).
    pub slots: u32,
    /// Attempts that succeeded per minute, over the last [`RATE_MINUTES`] complete minutes.
    pub succeeded_per_min: f64,
    /// Attempts that failed (retried, failed or dead) per minute, over the same minutes.
    pub failed_per_min: f64,
}

/// Every queue's figures at `now`: the store's counts and ready times, the consumers from
/// the process registry, and the rates from the history's last minutes.
pub async fn queue_figures<B: QueueAdmin + ProcessRegistry + History>(
    backend: &B,
    now: UnixMs,
) -> Result<Vec<QueueFigures>> {
    let stats = backend.stats().await?;
    let processes = backend.processes(now).await?;
    let recent = recent_history(backend, now).await?;
    Ok(figures_of(stats, &processes, &recent, now))
}

/// The history of every queue and task over the last [`RATE_MINUTES`] complete minutes
/// before `now` (what the rates, and the alert rules, read).
pub async fn recent_history<B: History>(backend: &B, now: UnixMs) -> Result<Vec<HistoryEntry>> {
    let this_minute = Resolution::Minute.start_of(now);
    backend
        .history(HistoryQuery::new(
            Resolution::Minute,
            this_minute - RATE_MINUTES * MINUTE_MS,
            this_minute,
        ))
        .await
}

/// The figures from what the store said: its stats, the registry's processes and the recent
/// history (as [`recent_history`] reads it).
pub fn figures_of(
    stats: Vec<QueueStats>,
    processes: &[ProcessInfo],
    recent: &[HistoryEntry],
    now: UnixMs,
) -> Vec<QueueFigures> {
    let per_min = |queue: &str, count: fn(&crate::backend::Counts) -> u64| -> f64 {
        let n: u64 = recent
            .iter()
            .filter(|e| e.queue == queue)
            .map(|e| count(&e.counts))
            .sum();
        n as f64 / RATE_MINUTES as f64
    };
    let workers: Vec<_> = processes
        .iter()
        .filter(|p| p.kind == ProcessKind::Worker && p.state == ProcessState::Running)
        .collect();
    stats
        .into_iter()
        .map(|stats| {
            let serving: Vec<_> = workers
                .iter()
                .filter(|w| w.queue_names().any(|q| q == stats.queue))
                .collect();
            QueueFigures {
                latency_ms: stats.latency_ms(now),
                consumers: u32::try_from(serving.len()).unwrap_or(u32::MAX),
                slots: serving.iter().map(|w| w.concurrency).sum(),
                succeeded_per_min: per_min(&stats.queue, |c| c.succeeded),
                failed_per_min: per_min(&stats.queue, |c| c.errors()),
                stats,
            }
        })
        .collect()
}
