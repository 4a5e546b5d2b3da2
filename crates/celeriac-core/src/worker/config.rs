//! How a worker runs: [`WorkerConfig`], its defaults and checks, and the order in which one
//! claim visits the queues.

use crate::error::{Error, Result};
use crate::task::Registry;
use std::time::Duration;

/// How a worker runs.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Queues to take jobs from, most important first. Empty means the queues of the
    /// registered tasks.
    pub queues: Vec<String>,
    /// How to choose between the queues: empty for strict order (a queue is only served when
    /// the ones before it are empty), or one weight per queue: each claim then visits the
    /// queues in an order drawn at random by weight, so `[3, 1]` serves about three jobs of
    /// the first queue for one of the second while both have work, and neither starves.
    pub weights: Vec<u32>,
    /// Jobs running at once.
    pub concurrency: usize,
    /// Most jobs claimed in one call. Never more than the free slots, so no job waits in
    /// this process while another worker is idle.
    pub prefetch: usize,
    /// Each claim's lease; a job whose worker stops heartbeating is redelivered after this.
    /// A worker that could not extend a job's lease for three quarters of it gives the job up
    /// first (see [`Worker`](super::Worker)).
    pub lease: Duration,
    /// How often every held lease is extended (one call for all of them); a heartbeat that
    /// fails or does not answer within this long is tried again after a quarter of it.
    pub heartbeat: Duration,
    /// How long an idle worker waits before looking again when nothing wakes it. Work
    /// enqueued in the same process wakes it at once; on the embedded backend this bounds the
    /// wake-up latency for work enqueued by other processes. On Redis, idle workers block on
    /// the store and wake within a round trip, and look on their own only every
    /// `max(poll_interval, 5 s)`.
    pub poll_interval: Duration,
    /// On shutdown, running jobs get this long to finish before their leases are handed back.
    pub grace_period: Duration,
    /// How often expired leases are reaped and old results swept.
    pub reap_interval: Duration,
    /// This worker's name, shown by `inspect` and in the process registry; unique in the
    /// fleet. Empty (the default) means `host:pid` (see [`crate::process::default_name`]).
    pub worker_id: String,
    /// How often the worker refreshes its entry in the process registry and looks for
    /// commands sent to it (quiet, stop); the entry expires after three missed refreshes.
    pub registry_refresh: Duration,
    /// How often the worker writes its tally of attempts to the store's history
    /// ([`crate::history`]); what a crash loses is at most this long.
    pub history_flush: Duration,
    /// Claims at most this many jobs, then stops claiming, lets them finish (within the grace
    /// period) and returns, as after a graceful shutdown; `None` (the default) runs until shut
    /// down. Under a supervisor that restarts it, a task that leaks memory or handles cannot
    /// grow past a bounded number of jobs (RQ's `--max-jobs`, Celery's
    /// `worker_max_tasks_per_child`).
    pub max_jobs: Option<u64>,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        Self {
            queues: Vec::new(),
            weights: Vec::new(),
            concurrency: 16,
            prefetch: 16,
            lease: Duration::from_secs(30),
            heartbeat: Duration::from_secs(10),
            poll_interval: Duration::from_millis(100),
            grace_period: Duration::from_secs(30),
            reap_interval: Duration::from_secs(1),
            worker_id: String::new(),
            registry_refresh: crate::process::DEFAULT_REFRESH,
            history_flush: crate::history::DEFAULT_FLUSH,
            max_jobs: None,
        }
    }
}

impl WorkerConfig {
    /// These settings as a worker over `registry` runs them: no queues means the queues of
    /// the registered tasks (or the default queue), and prefetch is at most the concurrency.
    ///
    /// # Errors
    /// The first bad setting (see [`WorkerConfig::validate`]).
    pub(super) fn resolved(&self, registry: &Registry) -> Result<WorkerConfig> {
        let mut config = self.clone();
        if config.queues.is_empty() {
            config.queues = registry.queues();
        }
        if config.queues.is_empty() {
            config.queues = vec![crate::job::DEFAULT_QUEUE.to_string()];
        }
        config.prefetch = config.prefetch.min(config.concurrency);
        if config.worker_id.is_empty() {
            config.worker_id = crate::process::default_name(crate::backend::ProcessKind::Worker);
        }
        config.validate()?;
        Ok(config)
    }

    /// Checks the settings, naming the first bad one.
    pub fn validate(&self) -> Result<()> {
        if self.concurrency == 0 {
            return Err(Error::config("concurrency", "must be at least 1"));
        }
        if self.prefetch == 0 {
            return Err(Error::config("prefetch", "must be at least 1"));
        }
        if self.lease < Duration::from_secs(1) {
            return Err(Error::config("lease", "must be at least one second"));
        }
        if self.heartbeat.is_zero() || self.heartbeat >= self.lease {
            return Err(Error::config(
                "heartbeat",
                "must be above zero and shorter than the lease",
            ));
        }
        if self.poll_interval.is_zero() {
            return Err(Error::config("poll_interval", "must be above zero"));
        }
        if !self.weights.is_empty() && self.weights.len() != self.queues.len() {
            return Err(Error::config(
                "weights",
                format!(
                    "{} weights for {} queues: give one weight per queue, or none for strict order",
                    self.weights.len(),
                    self.queues.len()
                ),
            ));
        }
        if self.weights.contains(&0) {
            return Err(Error::config(
                "weights",
                "a weight of 0 would never serve its queue",
            ));
        }
        if self.reap_interval.is_zero() {
            return Err(Error::config("reap_interval", "must be above zero"));
        }
        if self.registry_refresh.is_zero() {
            return Err(Error::config("registry_refresh", "must be above zero"));
        }
        if self.history_flush.is_zero() {
            return Err(Error::config("history_flush", "must be above zero"));
        }
        Ok(())
    }
}

/// The order in which one claim visits the queues: as configured, or drawn by weight.
pub(super) fn claim_order(queues: &[String], weights: &[u32]) -> Vec<String> {
    if weights.is_empty() || queues.len() < 2 {
        return queues.to_vec();
    }
    let mut rng = rand::rng();
    let mut left: Vec<(usize, u32)> = weights.iter().copied().enumerate().collect();
    let mut order = Vec::with_capacity(queues.len());
    while !left.is_empty() {
        let total: u64 = left.iter().map(|(_, w)| u64::from(*w)).sum();
        let mut pick = rand::Rng::random_range(&mut rng, 0..total.max(1));
        let at = left
            .iter()
            .position(|(_, w)| {
                let w = u64::from(*w);
                if pick < w {
                    true
                } else {
                    pick -= w;
                    false
                }
            })
            .unwrap_or(0);
        let (i, _) = left.remove(at);
        order.push(queues[i].clone());
    }
    order
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strict_order_is_kept() {
        let q = vec!["a".to_string(), "b".to_string()];
        assert_eq!(claim_order(&q, &[]), q);
    }

    #[test]
    fn weighted_order_follows_the_weights() {
        let q = vec!["high".to_string(), "low".to_string()];
        let firsts = (0..4000)
            .filter(|_| claim_order(&q, &[3, 1])[0] == "high")
            .count();
        // Expected 3000; the bounds are more than ten standard deviations (about 27) away.
        assert!((2700..3300).contains(&firsts), "{firsts}");
        assert_eq!(claim_order(&q, &[3, 1]).len(), 2);
    }

    #[test]
    fn weights_must_match_the_queues() {
        let mut c = WorkerConfig {
            queues: vec!["a".into(), "b".into()],
            weights: vec![1],
            ..WorkerConfig::default()
        };
        assert!(c.validate().is_err());
        c.weights = vec![1, 0];
        assert!(c.validate().is_err());
        c.weights = vec![2, 1];
        assert!(c.validate().is_ok());
    }
}
