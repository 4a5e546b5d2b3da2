//! What an operator sees of the fleet, built from the stores' figures and the process
//! registry: per queue its counts, latency and consumers.
//!
//! Every figure here costs the store O(number of queues + number of processes), never
//! O(number of jobs).

use crate::backend::{ProcessKind, ProcessRegistry, ProcessState, QueueAdmin, QueueStats};
use crate::clock::UnixMs;
use crate::error::Result;
use serde::{Deserialize, Serialize};

/// One queue as an operator sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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
}

/// Every queue's figures at `now`: the store's counts and ready times, and the consumers from
/// the process registry.
pub async fn queue_figures<B: QueueAdmin + ProcessRegistry>(
    backend: &B,
    now: UnixMs,
) -> Result<Vec<QueueFigures>> {
    let stats = backend.stats().await?;
    let processes = backend.processes(now).await?;
    let workers: Vec<_> = processes
        .iter()
        .filter(|p| p.kind == ProcessKind::Worker && p.state == ProcessState::Running)
        .collect();
    Ok(stats
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
                stats,
            }
        })
        .collect())
}
