//! [`InMemoryHandler`]: a [`ControlHandler`] over plain data, for tests and examples.

use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::watch;

use super::handler::{ControlHandler, ScheduledTask, TaskInfo, WorkerStats};

/// One `revoke` the handler received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevokeCall {
    /// The ids.
    pub ids: Vec<String>,
    /// Whether running tasks were to be terminated.
    pub terminate: bool,
    /// The signal name.
    pub signal: String,
}

/// What an [`InMemoryHandler`] answers with, and what it was asked to do.
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct MemoryState {
    /// Answer to `active`.
    pub active: Vec<TaskInfo>,
    /// Answer to `reserved`.
    pub reserved: Vec<TaskInfo>,
    /// Answer to `scheduled`.
    pub scheduled: Vec<ScheduledTask>,
    /// Answer to `registered`.
    pub registered: Vec<String>,
    /// Answer to `stats`.
    pub stats: WorkerStats,
    /// Answer to `active_queues`; `add_consumer`/`cancel_consumer` change it.
    pub queues: Vec<String>,
    /// Every handler method called, in order (`active`, `revoke`, ...).
    pub calls: Vec<&'static str>,
    /// Every `revoke`.
    pub revokes: Vec<RevokeCall>,
    /// How many times `shutdown` was called.
    pub shutdowns: u32,
}

/// A [`ControlHandler`] that answers from a [`MemoryState`] and records every call; tests
/// can wait for a call ([`wait_until`](Self::wait_until)). `revoke` with `terminate` reports
/// the ids found in `active` as terminated and removes them.
#[derive(Debug)]
pub struct InMemoryHandler {
    state: Mutex<MemoryState>,
    changed: watch::Sender<u64>,
}

impl Default for InMemoryHandler {
    fn default() -> Self {
        InMemoryHandler::new(MemoryState::default())
    }
}

impl InMemoryHandler {
    /// A handler answering from `state`.
    pub fn new(state: MemoryState) -> Self {
        InMemoryHandler {
            state: Mutex::new(state),
            changed: watch::channel(0).0,
        }
    }

    /// A handler with these registered task names and queues, nothing running.
    pub fn with_tasks<I, S>(registered: I, queues: &[&str]) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        InMemoryHandler::new(MemoryState {
            registered: registered.into_iter().map(Into::into).collect(),
            queues: queues.iter().map(|q| (*q).to_owned()).collect(),
            ..MemoryState::default()
        })
    }

    fn lock(&self) -> MutexGuard<'_, MemoryState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A copy of the state.
    pub fn snapshot(&self) -> MemoryState {
        self.lock().clone()
    }

    /// Changes the state.
    pub fn update(&self, f: impl FnOnce(&mut MemoryState)) {
        f(&mut self.lock());
        self.changed.send_modify(|v| *v += 1);
    }

    fn record<T>(&self, call: &'static str, f: impl FnOnce(&mut MemoryState) -> T) -> T {
        let out = {
            let mut s = self.lock();
            s.calls.push(call);
            f(&mut s)
        };
        self.changed.send_modify(|v| *v += 1);
        out
    }

    /// Waits until `pred` holds of the state (checked now and after every call); `false`
    /// when `timeout` passes first.
    pub async fn wait_until(&self, pred: impl Fn(&MemoryState) -> bool, timeout: Duration) -> bool {
        let mut rx = self.changed.subscribe();
        let wait = async {
            loop {
                if pred(&self.lock()) {
                    return;
                }
                if rx.changed().await.is_err() {
                    return;
                }
            }
        };
        tokio::time::timeout(timeout, wait).await.is_ok() && pred(&self.lock())
    }
}

impl ControlHandler for InMemoryHandler {
    fn active(&self) -> Vec<TaskInfo> {
        self.record("active", |s| s.active.clone())
    }

    fn reserved(&self) -> Vec<TaskInfo> {
        self.record("reserved", |s| s.reserved.clone())
    }

    fn scheduled(&self) -> Vec<ScheduledTask> {
        self.record("scheduled", |s| s.scheduled.clone())
    }

    fn registered(&self) -> Vec<String> {
        self.record("registered", |s| s.registered.clone())
    }

    fn stats(&self) -> WorkerStats {
        self.record("stats", |s| s.stats.clone())
    }

    fn revoke(&self, ids: &[String], terminate: bool, signal: &str) -> Vec<String> {
        self.record("revoke", |s| {
            s.revokes.push(RevokeCall {
                ids: ids.to_vec(),
                terminate,
                signal: signal.to_owned(),
            });
            if !terminate {
                return Vec::new();
            }
            let stopped: Vec<String> = s
                .active
                .iter()
                .filter(|t| ids.contains(&t.id))
                .map(|t| t.id.clone())
                .collect();
            s.active.retain(|t| !stopped.contains(&t.id));
            stopped
        })
    }

    fn shutdown(&self) {
        self.record("shutdown", |s| s.shutdowns += 1);
    }

    fn active_queues(&self) -> Vec<String> {
        self.record("active_queues", |s| s.queues.clone())
    }

    fn add_consumer(&self, queue: &str) -> Result<(), String> {
        self.record("add_consumer", |s| {
            if !s.queues.iter().any(|q| q == queue) {
                s.queues.push(queue.to_owned());
            }
            Ok(())
        })
    }

    fn cancel_consumer(&self, queue: &str) -> Result<(), String> {
        self.record("cancel_consumer", |s| {
            s.queues.retain(|q| q != queue);
            Ok(())
        })
    }
}
