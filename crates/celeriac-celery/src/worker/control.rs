//! The worker's [`ControlHandler`]: `celery inspect` / `control` answered from the worker's
//! own state (tasks in hand, names, totals, queues), revokes and shutdown carried out on it.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};

use super::builder::Config;
use super::handle::{Shared, TaskInHand};
use super::task::CeleryTask;
use crate::control::{ControlHandler, ScheduledTask, TaskDelivery, TaskInfo, WorkerStats};
use crate::results::{ResultBackend, ResultMeta, State};

/// Remote control over a running [`CeleryWorker`](super::CeleryWorker).
pub(crate) struct WorkerControl {
    pub shared: Arc<Shared>,
    pub config: Arc<Config>,
    pub tasks: Arc<HashMap<String, CeleryTask>>,
    pub backend: ResultBackend,
}

fn epoch(at: DateTime<Utc>) -> f64 {
    // Microseconds: exact in an f64 for any date a worker sees.
    #[allow(clippy::cast_precision_loss)]
    let micros = at.timestamp_micros() as f64;
    micros / 1e6
}

impl WorkerControl {
    fn info(&self, t: &TaskInHand) -> TaskInfo {
        TaskInfo {
            id: t.task_id.clone(),
            name: t.name.clone(),
            args: t.args.clone(),
            kwargs: t.kwargs.clone(),
            hostname: self.config.hostname.clone(),
            time_start: t.started_at.map(epoch),
            acknowledged: t.acknowledged,
            delivery_info: TaskDelivery {
                exchange: t.exchange.clone(),
                routing_key: t.routing_key.clone(),
                priority: Some(t.priority),
                redelivered: t.redelivered,
            },
            worker_pid: t.started_at.map(|_| std::process::id()),
        }
    }
}

impl ControlHandler for WorkerControl {
    fn active(&self) -> Vec<TaskInfo> {
        self.shared
            .in_hand(|t| t.started_at.is_some())
            .iter()
            .map(|t| self.info(t))
            .collect()
    }

    fn reserved(&self) -> Vec<TaskInfo> {
        let now = self.shared.now();
        self.shared
            .in_hand(|t| t.started_at.is_none() && t.eta.is_none_or(|e| e <= now))
            .iter()
            .map(|t| self.info(t))
            .collect()
    }

    fn scheduled(&self) -> Vec<ScheduledTask> {
        let now = self.shared.now();
        self.shared
            .in_hand(|t| t.started_at.is_none() && t.eta.is_some_and(|e| e > now))
            .iter()
            .map(|t| ScheduledTask {
                eta: t.eta.map(|e| e.to_rfc3339()),
                priority: t.priority,
                request: self.info(t),
            })
            .collect()
    }

    fn registered(&self) -> Vec<String> {
        let mut names: Vec<String> = self.tasks.keys().cloned().collect();
        names.sort();
        names
    }

    fn stats(&self) -> WorkerStats {
        WorkerStats {
            total: self.shared.totals(),
            uptime: self.shared.born.elapsed().as_secs(),
            pool_implementation: "celeriac:tokio".to_owned(),
            max_concurrency: u32::try_from(self.config.concurrency).unwrap_or(u32::MAX),
            processes: vec![std::process::id()],
            prefetch_count: u32::try_from(self.config.prefetch).unwrap_or(u32::MAX),
        }
    }

    fn revoke(&self, ids: &[String], terminate: bool, signal: &str) -> Vec<String> {
        let mut stopped = Vec::new();
        let mut absent = Vec::new();
        for id in ids {
            let held = self.shared.holds(id);
            if self.shared.revoke(id, terminate) && terminate {
                stopped.push(id.clone());
            }
            if !held {
                absent.push(id.clone());
            }
        }
        if terminate && !stopped.is_empty() {
            tracing::info!(ids = %stopped.join(", "), signal, "terminating revoked tasks");
        }
        if !absent.is_empty() {
            // As a Python worker with a result backend: a revoked id it does not hold is
            // recorded REVOKED while nothing else is known of it, so waiting clients wake up.
            let backend = self.backend.clone();
            tokio::spawn(async move {
                for id in absent {
                    match backend.state(&id).await {
                        Ok(State::Pending | State::Received | State::Retry | State::Rejected) => {
                            if let Err(e) =
                                backend.store(&ResultMeta::revoked(&id, "revoked")).await
                            {
                                tracing::warn!(error = %e, task_id = %id, "could not store REVOKED");
                            }
                        }
                        Ok(_) => {}
                        Err(e) => {
                            tracing::warn!(error = %e, task_id = %id, "could not read a revoked task's state")
                        }
                    }
                }
            });
        }
        stopped
    }

    fn shutdown(&self) {
        self.shared.shutdown.cancel();
    }

    fn active_queues(&self) -> Vec<String> {
        self.shared.queues()
    }

    fn add_consumer(&self, queue: &str) -> Result<(), String> {
        if queue.is_empty() {
            return Err("add_consumer: no queue given".to_owned());
        }
        if !self.shared.add_queue(queue) {
            tracing::info!(queue, "add_consumer: already consuming");
        }
        Ok(())
    }

    fn cancel_consumer(&self, queue: &str) -> Result<(), String> {
        self.shared.remove_queue(queue)
    }
}
