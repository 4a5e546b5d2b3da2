//! What the worker shares with its handle: the running tasks, the revoked ids, the messages
//! not yet acknowledged, and the shutdown signal. The seam for remote control (pidbox
//! `revoke`, `inspect active`, `shutdown`) and events.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use celeriac_core::clock::FleetClock;

use crate::control::Revoked;

/// A task message this worker holds: waiting for its ETA, waiting for a slot, or running.
/// What `inspect scheduled`, `reserved` and `active` report.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskInHand {
    /// The task id.
    pub task_id: String,
    /// The task name.
    pub name: String,
    /// Positional arguments.
    pub args: Vec<Value>,
    /// Keyword arguments.
    pub kwargs: Map<String, Value>,
    /// The queue it was taken from.
    pub queue: String,
    /// `delivery_info.exchange` of the message.
    pub exchange: String,
    /// `delivery_info.routing_key` of the message.
    pub routing_key: String,
    /// Its priority step.
    pub priority: u8,
    /// Whether it was delivered before (restored from `unacked`).
    pub redelivered: bool,
    /// Its message's delivery tag (its `unacked` entry).
    pub delivery_tag: String,
    /// Its ETA, when it had one in the future when taken.
    pub eta: Option<DateTime<Utc>>,
    /// When it started running; `None` while waiting.
    pub started_at: Option<DateTime<Utc>>,
    /// Whether its message was acknowledged (early acks).
    pub acknowledged: bool,
}

struct Held {
    info: TaskInHand,
    revoke: CancellationToken,
}

pub(crate) struct Shared {
    pub shutdown: CancellationToken,
    /// Fired when the shutdown grace has passed: running tasks are dropped, their messages
    /// given back.
    pub hard_stop: CancellationToken,
    /// Messages taken and not finished (prefetch); held ETA messages give theirs back.
    pub inflight: Arc<Semaphore>,
    /// Tasks running at once (concurrency).
    pub exec: Arc<Semaphore>,
    /// Future-ETA messages held.
    pub eta_held: Mutex<usize>,
    /// Delivery tags taken and not acknowledged: kept fresh, given back at shutdown.
    tracked: Mutex<HashSet<String>>,
    /// Decoded task messages in hand, by delivery tag.
    held: Mutex<HashMap<String, Held>>,
    /// Revoked ids, shared with the pidbox responder.
    pub revoked: Revoked,
    /// Tasks started so far, by name (`inspect stats` `total`).
    total: Mutex<BTreeMap<String, u64>>,
    /// The queues consumed (`add_consumer` / `cancel_consumer` change them).
    queues: Mutex<Vec<String>>,
    /// When the worker was built (`uptime`).
    pub born: Instant,
    /// The broker's clock: etas and expiry times are compared with it.
    clock: Arc<FleetClock>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Shared {
    pub fn new(
        concurrency: usize,
        prefetch: usize,
        queues: Vec<String>,
        clock: Arc<FleetClock>,
    ) -> Self {
        Shared {
            shutdown: CancellationToken::new(),
            hard_stop: CancellationToken::new(),
            inflight: Arc::new(Semaphore::new(prefetch)),
            exec: Arc::new(Semaphore::new(concurrency)),
            eta_held: Mutex::new(0),
            tracked: Mutex::new(HashSet::new()),
            held: Mutex::new(HashMap::new()),
            revoked: Revoked::default(),
            total: Mutex::new(BTreeMap::new()),
            queues: Mutex::new(queues),
            born: Instant::now(),
            clock,
        }
    }

    /// The fleet's time now (the broker's clock), not this host's.
    pub fn now(&self) -> DateTime<Utc> {
        crate::broker::now_of(&self.clock)
    }

    pub fn track(&self, tag: &str) {
        lock(&self.tracked).insert(tag.to_owned());
    }

    pub fn untrack(&self, tag: &str) {
        lock(&self.tracked).remove(tag);
    }

    pub fn tracked(&self) -> Vec<String> {
        lock(&self.tracked).iter().cloned().collect()
    }

    /// Takes one slot for a held ETA message; `false` when the hold is full.
    pub fn hold_eta(&self, limit: usize) -> bool {
        let mut held = lock(&self.eta_held);
        if *held >= limit {
            return false;
        }
        *held += 1;
        true
    }

    pub fn release_eta(&self) {
        let mut held = lock(&self.eta_held);
        *held = held.saturating_sub(1);
    }

    /// Records a task message in hand; its token fires when the task is revoked.
    pub fn hold(&self, info: TaskInHand) -> CancellationToken {
        let revoke = CancellationToken::new();
        if self.is_revoked(&info.task_id) {
            revoke.cancel();
        }
        lock(&self.held).insert(
            info.delivery_tag.clone(),
            Held {
                info,
                revoke: revoke.clone(),
            },
        );
        revoke
    }

    /// Updates a held task (started, acknowledged).
    pub fn update(&self, tag: &str, f: impl FnOnce(&mut TaskInHand)) {
        if let Some(h) = lock(&self.held).get_mut(tag) {
            f(&mut h.info);
        }
    }

    pub fn release(&self, tag: &str) {
        lock(&self.held).remove(tag);
    }

    /// Counts a task that starts (`total`).
    pub fn count_started(&self, name: &str) {
        *lock(&self.total).entry(name.to_owned()).or_default() += 1;
    }

    /// Tasks started so far, by name.
    pub fn totals(&self) -> BTreeMap<String, u64> {
        lock(&self.total).clone()
    }

    /// The queues consumed now.
    pub fn queues(&self) -> Vec<String> {
        lock(&self.queues).clone()
    }

    /// Adds a queue; `false` when it was consumed already.
    pub fn add_queue(&self, queue: &str) -> bool {
        let mut q = lock(&self.queues);
        if q.iter().any(|x| x == queue) {
            return false;
        }
        q.push(queue.to_owned());
        true
    }

    /// Stops consuming a queue.
    pub fn remove_queue(&self, queue: &str) -> Result<(), String> {
        let mut q = lock(&self.queues);
        if !q.iter().any(|x| x == queue) {
            return Err(format!("not consuming from {queue}"));
        }
        if q.len() == 1 {
            return Err(format!(
                "{queue} is the last queue of this worker: add another before cancelling it"
            ));
        }
        q.retain(|x| x != queue);
        Ok(())
    }

    /// Whether a task id is held here (any state).
    pub fn holds(&self, task_id: &str) -> bool {
        lock(&self.held).values().any(|h| h.info.task_id == task_id)
    }

    pub(crate) fn in_hand(&self, keep: impl Fn(&TaskInHand) -> bool) -> Vec<TaskInHand> {
        let mut all: Vec<TaskInHand> = lock(&self.held)
            .values()
            .map(|h| h.info.clone())
            .filter(|i| keep(i))
            .collect();
        all.sort_by_key(|i| (i.started_at, i.eta));
        all
    }

    pub fn is_revoked(&self, task_id: &str) -> bool {
        self.revoked.contains(task_id)
    }

    /// Revokes an id: remembered, so no message of it runs; a held message waiting for its
    /// ETA is woken to be discarded; with `terminate` a running task is stopped too (without
    /// it a running task finishes, as in Celery). Returns whether it was running here.
    pub fn revoke(&self, task_id: &str, terminate: bool) -> bool {
        self.revoked.insert(task_id);
        let mut running = false;
        for h in lock(&self.held).values() {
            if h.info.task_id == task_id {
                let started = h.info.started_at.is_some();
                if terminate || !started {
                    h.revoke.cancel();
                }
                running |= started;
            }
        }
        running
    }
}

/// A handle on a [`CeleryWorker`](super::CeleryWorker): cheap to clone.
#[derive(Clone)]
pub struct WorkerHandle {
    pub(crate) shared: Arc<Shared>,
}

impl std::fmt::Debug for WorkerHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerHandle").finish_non_exhaustive()
    }
}

impl WorkerHandle {
    /// The tasks running now, oldest first (`inspect active`).
    pub fn running(&self) -> Vec<TaskInHand> {
        self.shared.in_hand(|t| t.started_at.is_some())
    }

    /// Messages held for a future ETA (`inspect scheduled`), soonest first.
    pub fn scheduled(&self) -> Vec<TaskInHand> {
        let now = self.shared.now();
        self.shared
            .in_hand(|t| t.started_at.is_none() && t.eta.is_some_and(|e| e > now))
    }

    /// Messages taken and due, waiting for a free slot (`inspect reserved`).
    pub fn reserved(&self) -> Vec<TaskInHand> {
        let now = self.shared.now();
        self.shared
            .in_hand(|t| t.started_at.is_none() && t.eta.is_none_or(|e| e <= now))
    }

    /// Revokes a task id: a running task is stopped (its future dropped) and ends REVOKED
    /// `terminated`; a held or later message of this id is not run (REVOKED `revoked`,
    /// acknowledged). Returns whether it was running here.
    pub fn revoke(&self, task_id: &str) -> bool {
        self.shared.revoke(task_id, true)
    }

    /// Revokes a task id as `app.control.revoke(id, terminate=...)` does: without
    /// `terminate` a running task finishes (held and later messages are still not run).
    /// Returns whether it was running here.
    pub fn revoke_with(&self, task_id: &str, terminate: bool) -> bool {
        self.shared.revoke(task_id, terminate)
    }

    /// The revoked ids (shared with the worker's pidbox responder).
    pub fn revoked(&self) -> Revoked {
        self.shared.revoked.clone()
    }

    /// The queues consumed now.
    pub fn queues(&self) -> Vec<String> {
        self.shared.queues()
    }

    /// Starts a graceful shutdown: no more messages are taken, held and waiting ones are
    /// given back, running tasks get the shutdown grace to finish.
    pub fn shutdown(&self) {
        self.shared.shutdown.cancel();
    }

    /// Whether a shutdown was asked for.
    pub fn is_shutting_down(&self) -> bool {
        self.shared.shutdown.is_cancelled()
    }
}
