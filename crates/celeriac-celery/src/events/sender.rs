//! [`EventSender`]: a worker's events, published in the background without ever blocking the
//! caller.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::clock::LamportClock;
use super::event::{Event, ReceivedTask, EVENT_EXCHANGE};
use crate::broker::KombuBroker;

/// How a Python worker spaces its heartbeats (`freq`).
pub const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(2);
/// How many events may wait to be published before new ones are dropped.
pub const DEFAULT_CAPACITY: usize = 1024;

/// Counters of an [`EventSender`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct EventStats {
    /// Events published (heartbeats included).
    pub sent: u64,
    /// Events dropped because the queue was full (the publisher lags behind).
    pub dropped: u64,
    /// Events whose `PUBLISH` failed (logged, not retried: events are fire and forget).
    pub failed: u64,
}

/// Builds an [`EventSender`] ([`EventSender::builder`]).
#[derive(Debug, Clone)]
pub struct EventSenderBuilder {
    hostname: String,
    freq: Duration,
    capacity: usize,
    task_events: bool,
    sw_ident: String,
    sw_ver: String,
    clock: Option<Arc<LamportClock>>,
}

impl EventSenderBuilder {
    /// The heartbeat interval (`freq`; default 2 s). Monitors consider the worker gone after
    /// about twice this without a heartbeat.
    pub fn heartbeat_interval(mut self, freq: Duration) -> Self {
        self.freq = freq.max(Duration::from_millis(10));
        self
    }

    /// How many events may wait to be published (default 1024); more are dropped and counted.
    pub fn capacity(mut self, capacity: usize) -> Self {
        self.capacity = capacity.max(1);
        self
    }

    /// Whether task events are sent from the start (default true; `worker -E`). Worker events
    /// (online, heartbeat, offline) are always sent, as in Celery.
    pub fn task_events(mut self, on: bool) -> Self {
        self.task_events = on;
        self
    }

    /// `sw_ident` and `sw_ver` (default `celeriac` and this crate's version).
    pub fn software(mut self, ident: impl Into<String>, version: impl Into<String>) -> Self {
        self.sw_ident = ident.into();
        self.sw_ver = version.into();
        self
    }

    /// Shares a Lamport clock (e.g. with the pidbox responder), as a Python worker shares
    /// `app.clock`.
    pub fn clock(mut self, clock: Arc<LamportClock>) -> Self {
        self.clock = Some(clock);
        self
    }

    /// Starts the publisher: `worker-online` at once, `worker-heartbeat` every interval,
    /// `worker-offline` when the sender is stopped or its last clone dropped.
    ///
    /// # Panics
    /// When called outside a Tokio runtime.
    pub fn start(self, broker: KombuBroker) -> EventSender {
        let (tx, rx) = mpsc::channel(self.capacity);
        let shared = Arc::new(Shared {
            hostname: self.hostname,
            clock: self.clock.unwrap_or_default(),
            freq: self.freq,
            sw_ident: self.sw_ident,
            sw_ver: self.sw_ver,
            pid: std::process::id(),
            active: AtomicU64::new(0),
            processed: AtomicU64::new(0),
            task_events: AtomicBool::new(self.task_events),
            sent: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            failed: AtomicU64::new(0),
        });
        let token = CancellationToken::new();
        let task = tokio::spawn(run(broker, shared.clone(), rx, token.clone()));
        EventSender {
            inner: Arc::new(Inner {
                shared,
                tx,
                token,
                task: Mutex::new(Some(task)),
            }),
        }
    }
}

struct Shared {
    hostname: String,
    clock: Arc<LamportClock>,
    freq: Duration,
    sw_ident: String,
    sw_ver: String,
    pid: u32,
    active: AtomicU64,
    processed: AtomicU64,
    task_events: AtomicBool,
    sent: AtomicU64,
    dropped: AtomicU64,
    failed: AtomicU64,
}

impl Shared {
    /// An event with the common fields `celery.events.EventDispatcher` adds.
    fn event(&self, event_type: &str, mut fields: Map<String, Value>) -> Event {
        fields.insert("hostname".into(), Value::from(self.hostname.as_str()));
        fields.insert("utcoffset".into(), Value::from(utcoffset()));
        fields.insert("pid".into(), Value::from(self.pid));
        fields.insert("clock".into(), Value::from(self.clock.forward()));
        fields.insert("timestamp".into(), Value::from(now()));
        Event::new(event_type, fields)
    }

    /// A worker event: the common fields and Celery's heartbeat fields.
    fn worker_event(&self, event_type: &str) -> Event {
        let mut m = Map::new();
        m.insert("freq".into(), Value::from(self.freq.as_secs_f64()));
        m.insert(
            "active".into(),
            Value::from(self.active.load(Ordering::SeqCst)),
        );
        m.insert(
            "processed".into(),
            Value::from(self.processed.load(Ordering::SeqCst)),
        );
        m.insert("loadavg".into(), Value::from(loadavg().to_vec()));
        m.insert("sw_ident".into(), Value::from(self.sw_ident.as_str()));
        m.insert("sw_ver".into(), Value::from(self.sw_ver.as_str()));
        m.insert("sw_sys".into(), Value::from(sw_sys()));
        self.event(event_type, m)
    }
}

struct Inner {
    shared: Arc<Shared>,
    tx: mpsc::Sender<Event>,
    token: CancellationToken,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // The publisher sends what is queued, then worker-offline, then exits.
        self.token.cancel();
    }
}

/// Publishes a worker's events on the `celeryev` fanout exchange as a Python worker does, so
/// `celery events`, `EventReceiver`/`State` and Flower see it. Cheap to clone; sending never
/// blocks or fails: events go through a bounded queue to a background publisher, and are
/// dropped (and counted, [`stats`](Self::stats)) when it is full.
#[derive(Clone)]
pub struct EventSender {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for EventSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventSender")
            .field("hostname", &self.inner.shared.hostname)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl EventSender {
    /// A builder for the worker `hostname` (`name@host`, as `celery worker -n`).
    pub fn builder(hostname: impl Into<String>) -> EventSenderBuilder {
        EventSenderBuilder {
            hostname: hostname.into(),
            freq: DEFAULT_HEARTBEAT,
            capacity: DEFAULT_CAPACITY,
            task_events: true,
            sw_ident: "celeriac".to_owned(),
            sw_ver: env!("CARGO_PKG_VERSION").to_owned(),
            clock: None,
        }
    }

    /// The worker hostname.
    pub fn hostname(&self) -> &str {
        &self.inner.shared.hostname
    }

    /// The Lamport clock the events carry.
    pub fn clock(&self) -> &Arc<LamportClock> {
        &self.inner.shared.clock
    }

    /// The counters.
    pub fn stats(&self) -> EventStats {
        let s = &self.inner.shared;
        EventStats {
            sent: s.sent.load(Ordering::SeqCst),
            dropped: s.dropped.load(Ordering::SeqCst),
            failed: s.failed.load(Ordering::SeqCst),
        }
    }

    /// Whether task events are sent.
    pub fn task_events_enabled(&self) -> bool {
        self.inner.shared.task_events.load(Ordering::SeqCst)
    }

    /// Turns task events on or off (`enable_events` / `disable_events`); returns the previous
    /// setting.
    pub fn set_task_events(&self, on: bool) -> bool {
        self.inner.shared.task_events.swap(on, Ordering::SeqCst)
    }

    /// Sets the heartbeat's `active` (tasks running) and `processed` (tasks accepted so far).
    pub fn set_load(&self, active: u64, processed: u64) {
        let s = &self.inner.shared;
        s.active.store(active, Ordering::SeqCst);
        s.processed.store(processed, Ordering::SeqCst);
    }

    /// Counts a task that starts running: `active` and `processed` up by one.
    pub fn task_accepted(&self) {
        let s = &self.inner.shared;
        s.active.fetch_add(1, Ordering::SeqCst);
        s.processed.fetch_add(1, Ordering::SeqCst);
    }

    /// Counts a task that finished: `active` down by one.
    pub fn task_ready(&self) {
        let _ = self
            .inner
            .shared
            .active
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
    }

    /// Queues an event of `event_type` with `fields` (the common fields are added); returns
    /// whether it was queued (false: dropped, the queue being full or the sender stopped).
    pub fn send(&self, event_type: &str, fields: Map<String, Value>) -> bool {
        let shared = &self.inner.shared;
        let event = shared.event(event_type, fields);
        match self.inner.tx.try_send(event) {
            Ok(()) => true,
            Err(_) => {
                shared.dropped.fetch_add(1, Ordering::SeqCst);
                false
            }
        }
    }

    /// A `worker-heartbeat` now (the `heartbeat` control command).
    pub fn heartbeat_now(&self) -> bool {
        let event = self.inner.shared.worker_event("worker-heartbeat");
        let queued = self.inner.tx.try_send(event).is_ok();
        if !queued {
            self.inner.shared.dropped.fetch_add(1, Ordering::SeqCst);
        }
        queued
    }

    fn task_event(&self, event_type: &str, id: &str, mut fields: Map<String, Value>) -> bool {
        if !self.task_events_enabled() {
            return false;
        }
        fields.insert("uuid".into(), Value::from(id));
        self.send(event_type, fields)
    }

    /// `task-received`.
    pub fn task_received(&self, task: &ReceivedTask) -> bool {
        self.task_event("task-received", &task.id, task.fields())
    }

    /// `task-started`.
    pub fn task_started(&self, id: &str) -> bool {
        self.task_event("task-started", id, Map::new())
    }

    /// `task-succeeded`: `result` is the repr of the return value, `runtime` in seconds.
    pub fn task_succeeded(&self, id: &str, result_repr: &str, runtime: f64) -> bool {
        let mut m = Map::new();
        m.insert("result".into(), Value::from(result_repr));
        m.insert("runtime".into(), Value::from(runtime));
        self.task_event("task-succeeded", id, m)
    }

    /// `task-failed`: `exception` is the repr of the exception (`ValueError('x')`).
    pub fn task_failed(&self, id: &str, exception_repr: &str, traceback: &str) -> bool {
        self.task_event("task-failed", id, exc_fields(exception_repr, traceback))
    }

    /// `task-retried`: `exception` is the repr of the reason.
    pub fn task_retried(&self, id: &str, exception_repr: &str, traceback: &str) -> bool {
        self.task_event("task-retried", id, exc_fields(exception_repr, traceback))
    }

    /// `task-revoked`: whether it was terminated (and by which signal number), or expired.
    pub fn task_revoked(
        &self,
        id: &str,
        terminated: bool,
        signum: Option<i32>,
        expired: bool,
    ) -> bool {
        let mut m = Map::new();
        m.insert("terminated".into(), Value::from(terminated));
        m.insert("signum".into(), signum.map_or(Value::Null, Value::from));
        m.insert("expired".into(), Value::from(expired));
        self.task_event("task-revoked", id, m)
    }

    /// `task-rejected`: whether the message was given back to its queue.
    pub fn task_rejected(&self, id: &str, requeue: bool) -> bool {
        let mut m = Map::new();
        m.insert("requeue".into(), Value::from(requeue));
        self.task_event("task-rejected", id, m)
    }

    /// Stops: publishes what is queued, then `worker-offline`, and returns once done
    /// (clones stop too).
    pub async fn stop(self) {
        self.inner.token.cancel();
        let task = self.inner.task.lock().ok().and_then(|mut t| t.take());
        if let Some(task) = task {
            if let Err(e) = task.await {
                tracing::warn!(error = %e, "event publisher ended abnormally");
            }
        }
    }
}

fn exc_fields(exception_repr: &str, traceback: &str) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("exception".into(), Value::from(exception_repr));
    m.insert("traceback".into(), Value::from(traceback));
    m
}

async fn run(
    broker: KombuBroker,
    shared: Arc<Shared>,
    mut rx: mpsc::Receiver<Event>,
    token: CancellationToken,
) {
    let publish = |event: Event| {
        let broker = broker.clone();
        let shared = shared.clone();
        async move {
            let raw = event.encode(&shared.hostname);
            match broker
                .publish_fanout(EVENT_EXCHANGE, &event.routing_key(), &raw)
                .await
            {
                Ok(_) => shared.sent.fetch_add(1, Ordering::SeqCst),
                Err(e) => {
                    tracing::warn!(error = %e, event = event.event_type(), "cannot publish event");
                    shared.failed.fetch_add(1, Ordering::SeqCst)
                }
            };
        }
    };
    publish(shared.worker_event("worker-online")).await;
    let start = tokio::time::Instant::now() + shared.freq;
    let mut beat = tokio::time::interval_at(start, shared.freq);
    beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            () = token.cancelled() => break,
            event = rx.recv() => match event {
                Some(event) => publish(event).await,
                None => break,
            },
            _ = beat.tick() => publish(shared.worker_event("worker-heartbeat")).await,
        }
    }
    rx.close();
    while let Ok(event) = rx.try_recv() {
        publish(event).await;
    }
    publish(shared.worker_event("worker-offline")).await;
}

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Hours west of UTC, as Celery's `utcoffset()` (`time.timezone / 3600`): 0.0 on UTC hosts.
fn utcoffset() -> f64 {
    let east = chrono::Local::now().offset().local_minus_utc();
    -f64::from(east) / 3600.0
}

/// `os.getloadavg()` rounded to two decimals; zeros where it is unavailable.
fn loadavg() -> [f64; 3] {
    let mut out = [0.0; 3];
    if let Ok(text) = std::fs::read_to_string("/proc/loadavg") {
        for (slot, field) in out.iter_mut().zip(text.split_whitespace()) {
            *slot = field
                .parse::<f64>()
                .map_or(0.0, |v| (v * 100.0).round() / 100.0);
        }
    }
    out
}

/// `platform.system()`: `Linux`, `Darwin`, `Windows`, ...
fn sw_sys() -> String {
    match std::env::consts::OS {
        "linux" => "Linux".to_owned(),
        "macos" => "Darwin".to_owned(),
        "windows" => "Windows".to_owned(),
        other => {
            let mut chars = other.chars();
            chars.next().map_or_else(String::new, |c| {
                c.to_uppercase().chain(chars).collect::<String>()
            })
        }
    }
}
