//! What the dashboard costs the store: the time its reads and actions spent waiting on it,
//! shown on the overview so an open tab's load is visible.

use serde::Serialize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// Store time spent by the dashboard since it started.
#[derive(Default)]
pub(crate) struct Cost {
    calls: AtomicU64,
    micros: AtomicU64,
    started: std::sync::OnceLock<Instant>,
}

/// The dashboard's own store time, as its overview shows it.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct MonitoringCost {
    /// Store reads and actions made for pages, their twins and live updates.
    pub calls: u64,
    /// The time they took, in milliseconds.
    pub store_ms: f64,
    /// Since when they are counted, in seconds.
    pub over_s: f64,
    /// The store time as a share of that span, in percent (of one store connection's time).
    pub busy_percent: f64,
}

impl Cost {
    pub(crate) async fn timed<T>(&self, work: impl std::future::Future<Output = T>) -> T {
        self.started.get_or_init(Instant::now);
        let t = Instant::now();
        let out = work.await;
        let us = u64::try_from(t.elapsed().as_micros()).unwrap_or(u64::MAX);
        self.calls.fetch_add(1, Ordering::Relaxed);
        self.micros.fetch_add(us, Ordering::Relaxed);
        out
    }

    pub(crate) fn read(&self) -> MonitoringCost {
        let over_s = self
            .started
            .get()
            .map_or(0.0, |s| s.elapsed().as_secs_f64());
        let store_ms = self.micros.load(Ordering::Relaxed) as f64 / 1000.0;
        MonitoringCost {
            calls: self.calls.load(Ordering::Relaxed),
            store_ms,
            over_s,
            busy_percent: if over_s > 0.0 {
                store_ms / 10.0 / over_s
            } else {
                0.0
            },
        }
    }
}
