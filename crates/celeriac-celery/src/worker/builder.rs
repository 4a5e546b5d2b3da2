//! [`CeleryWorkerBuilder`]: the worker's settings, named after Celery's.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use super::dead_letter::{DeadLetterSink, RedisListDeadLetters, DEAD_LETTER_LIST};
use super::handle::{Shared, WorkerHandle};
use super::task::CeleryTask;
use super::{KombuBroker, WorkerError};
use crate::broker::TransportOptions;
use crate::results::{ChordGeneration, ResultBackend, DEFAULT_RESULT_EXPIRES};

/// Settings of a running worker.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    pub queues: Vec<String>,
    pub concurrency: usize,
    pub prefetch: usize,
    pub hostname: String,
    pub track_started: bool,
    pub acks_late: bool,
    pub default_queue: String,
    pub sweep_interval: Duration,
    pub extend_interval: Duration,
    pub shutdown_grace: Duration,
    pub eta_hold_limit: usize,
    /// Worker events (online, heartbeats, offline) are sent.
    pub events: bool,
    /// Task events are sent from the start (`-E`; `enable_events` / `disable_events`).
    pub task_events: bool,
    /// The heartbeat interval (`freq`).
    pub heartbeat: Duration,
    /// The pidbox responder runs (`inspect`, `control`).
    pub control: bool,
}

/// Options of a [`CeleryWorker`]; see [`CeleryWorker::builder`].
#[must_use]
pub struct CeleryWorkerBuilder {
    broker_url: String,
    backend_url: String,
    transport: TransportOptions,
    visibility_timeout: Option<Duration>,
    result_expires: Option<Duration>,
    result_extended: bool,
    chord_generation: ChordGeneration,
    config: Config,
    tasks: HashMap<String, CeleryTask>,
    dead_letters: Option<Arc<dyn DeadLetterSink>>,
}

impl std::fmt::Debug for CeleryWorkerBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CeleryWorkerBuilder")
            .field("config", &self.config)
            .field("tasks", &self.tasks.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

fn host_name() -> String {
    crate::protocol::origin()
        .split_once('@')
        .map_or_else(|| "localhost".to_owned(), |(_, h)| h.to_owned())
}

impl CeleryWorkerBuilder {
    fn new(broker_url: String, backend_url: String) -> Self {
        CeleryWorkerBuilder {
            broker_url,
            backend_url,
            transport: TransportOptions::default(),
            visibility_timeout: None,
            result_expires: Some(DEFAULT_RESULT_EXPIRES),
            result_extended: false,
            chord_generation: ChordGeneration::default(),
            config: Config {
                queues: vec!["celery".to_owned()],
                concurrency: 4,
                prefetch: 0,
                hostname: format!("celeriac@{}", host_name()),
                track_started: false,
                acks_late: true,
                default_queue: "celery".to_owned(),
                sweep_interval: Duration::from_secs(100),
                extend_interval: Duration::ZERO,
                shutdown_grace: Duration::from_secs(30),
                eta_hold_limit: 10_000,
                events: true,
                task_events: true,
                heartbeat: crate::events::DEFAULT_HEARTBEAT,
                control: true,
            },
            tasks: HashMap::new(),
            dead_letters: None,
        }
    }

    /// The queues to consume (`-Q`); default `celery`.
    pub fn queues<I, S>(mut self, queues: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.config.queues = queues.into_iter().map(Into::into).collect();
        self
    }

    /// Tasks run at once (default 4).
    pub fn concurrency(mut self, n: usize) -> Self {
        self.config.concurrency = n;
        self
    }

    /// Messages taken but not finished at most (running or waiting for a slot; held ETA
    /// messages do not count, as in Celery). Default: concurrency (no message waits in
    /// this worker while another could run it); never less than concurrency.
    pub fn prefetch(mut self, n: usize) -> Self {
        self.config.prefetch = n;
        self
    }

    /// The node name (`celeriac@<host>` by default): `worker` of extended results, STARTED's
    /// `hostname`.
    pub fn hostname(mut self, name: impl Into<String>) -> Self {
        self.config.hostname = name.into();
        self
    }

    /// The broker's transport options (kombu's `broker_transport_options`).
    pub fn transport_options(mut self, options: TransportOptions) -> Self {
        self.transport = options;
        self
    }

    /// The visibility timeout (default kombu's 3600 s); messages being worked on have their
    /// `unacked` score refreshed at a quarter of it.
    pub fn visibility_timeout(mut self, timeout: Duration) -> Self {
        self.visibility_timeout = Some(timeout);
        self
    }

    /// `result_expires` (default one day; `None`: forever).
    pub fn result_expires(mut self, expires: Option<Duration>) -> Self {
        self.result_expires = expires;
        self
    }

    /// `result_extended`: results carry name, args, kwargs, worker, retries, queue.
    pub fn result_extended(mut self, on: bool) -> Self {
        self.result_extended = on;
        self
    }

    /// `task_track_started`: STARTED is stored before a task runs.
    pub fn task_track_started(mut self, on: bool) -> Self {
        self.config.track_started = on;
        self
    }

    /// `task_acks_late` (default **true**: acknowledged after the result is stored, so a
    /// crash gives the message back); false acknowledges before running.
    pub fn acks_late(mut self, on: bool) -> Self {
        self.config.acks_late = on;
        self
    }

    /// The chord bookkeeping of the Python workers sharing chords with this one (default
    /// Celery 5.7's).
    pub fn chord_generation(mut self, generation: ChordGeneration) -> Self {
        self.chord_generation = generation;
        self
    }

    /// The queue of callbacks, chain steps and chord bodies that name none (default
    /// `celery`, Celery's `task_default_queue`).
    pub fn default_queue(mut self, queue: impl Into<String>) -> Self {
        self.config.default_queue = queue.into();
        self
    }

    /// How often the visibility sweep runs (default 100 s, as kombu).
    pub fn sweep_interval(mut self, every: Duration) -> Self {
        self.config.sweep_interval = every;
        self
    }

    /// How long a shutdown waits for running tasks before it gives their messages back.
    pub fn shutdown_grace(mut self, grace: Duration) -> Self {
        self.config.shutdown_grace = grace;
        self
    }

    /// Future-ETA messages held at most (default 10 000); more are given back to the end of
    /// their queue.
    pub fn eta_hold_limit(mut self, n: usize) -> Self {
        self.config.eta_hold_limit = n;
        self
    }

    /// Whether the worker sends events at all (default true): `worker-online`, a
    /// `worker-heartbeat` every [`heartbeat_interval`](Self::heartbeat_interval),
    /// `worker-offline`, and the task events unless [`task_events`](Self::task_events) is
    /// off. Without events Flower and `celery events` do not see the worker.
    pub fn events(mut self, on: bool) -> Self {
        self.config.events = on;
        self
    }

    /// Whether task events (`task-received`, `-started`, `-succeeded`, ...) are sent from
    /// the start (default true, Celery's `worker -E`); the `enable_events` /
    /// `disable_events` control commands change it while running.
    pub fn task_events(mut self, on: bool) -> Self {
        self.config.task_events = on;
        self
    }

    /// The heartbeat interval (default 2 s, Celery's); monitors take the worker for gone
    /// after about twice this without one.
    pub fn heartbeat_interval(mut self, every: Duration) -> Self {
        self.config.heartbeat = every;
        self
    }

    /// Whether the worker answers remote control (default true): `celery inspect`,
    /// `app.control.revoke`, `shutdown`, Flower.
    pub fn control(mut self, on: bool) -> Self {
        self.config.control = on;
        self
    }

    /// Registers a task (a later one of the same name replaces it).
    pub fn task(mut self, task: CeleryTask) -> Self {
        self.tasks.insert(task.name().to_owned(), task);
        self
    }

    /// Where dead letters go (e.g. [`CeleriacDeadLetters`](super::CeleriacDeadLetters)).
    /// Default: [`RedisListDeadLetters`] on the broker's database, key
    /// [`DEAD_LETTER_LIST`].
    pub fn dead_letters(mut self, sink: impl DeadLetterSink) -> Self {
        self.dead_letters = Some(Arc::new(sink));
        self
    }

    /// Connects to the broker and the result backend.
    ///
    /// # Errors
    /// [`WorkerError::Setting`] for no queue, zero concurrency, a zero visibility timeout or
    /// heartbeat interval;
    /// broker and backend connection errors.
    pub async fn build(mut self) -> Result<CeleryWorker, WorkerError> {
        let bad = |setting, reason: &str| WorkerError::Setting {
            setting,
            reason: reason.to_owned(),
        };
        if self.config.queues.is_empty() {
            return Err(bad("queues", "at least one queue is needed"));
        }
        if self.config.concurrency == 0 {
            return Err(bad("concurrency", "must be at least 1"));
        }
        if self.config.heartbeat.is_zero() {
            return Err(bad("heartbeat_interval", "must be more than zero"));
        }
        self.config.prefetch = self.config.prefetch.max(self.config.concurrency);
        if let Some(vt) = self.visibility_timeout {
            if vt.is_zero() {
                return Err(bad("visibility_timeout", "must be more than zero"));
            }
            self.transport = self.transport.visibility_timeout(vt);
        }
        let broker = KombuBroker::connect(&self.broker_url, self.transport).await?;
        let vt = broker.visibility_timeout();
        self.config.extend_interval =
            (vt / 4).clamp(Duration::from_millis(200), Duration::from_secs(60));
        let backend = ResultBackend::builder(self.backend_url)
            .result_expires(self.result_expires)
            .result_extended(self.result_extended)
            .chord_generation(self.chord_generation)
            .build()
            .await?;
        let dead = match self.dead_letters {
            Some(sink) => sink,
            None => {
                let client = redis::Client::open(self.broker_url.as_str()).map_err(|e| {
                    WorkerError::Setting {
                        setting: "broker_url",
                        reason: format!("{} ({e})", broker.redacted_url()),
                    }
                })?;
                let conn = redis::aio::ConnectionManager::new(client)
                    .await
                    .map_err(|e| WorkerError::Setting {
                        setting: "broker_url",
                        reason: format!("dead letter connection to {}: {e}", broker.redacted_url()),
                    })?;
                Arc::new(RedisListDeadLetters::new(conn, DEAD_LETTER_LIST))
            }
        };
        let shared = Arc::new(Shared::new(
            self.config.concurrency,
            self.config.prefetch,
            self.config.queues.clone(),
            broker.clock(),
        ));
        Ok(CeleryWorker {
            broker,
            backend,
            config: Arc::new(self.config),
            tasks: Arc::new(self.tasks),
            dead,
            shared,
        })
    }
}

/// A Celery worker serving Rust tasks; see the [module docs](super).
pub struct CeleryWorker {
    pub(crate) broker: KombuBroker,
    pub(crate) backend: ResultBackend,
    pub(crate) config: Arc<Config>,
    pub(crate) tasks: Arc<HashMap<String, CeleryTask>>,
    pub(crate) dead: Arc<dyn DeadLetterSink>,
    pub(crate) shared: Arc<Shared>,
}

impl std::fmt::Debug for CeleryWorker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CeleryWorker")
            .field("broker", &self.broker)
            .field("hostname", &self.config.hostname)
            .finish_non_exhaustive()
    }
}

impl CeleryWorker {
    /// Options for a worker on `broker_url` (kombu Redis transport) with results in
    /// `backend_url` (Celery's Redis backend).
    pub fn builder(
        broker_url: impl Into<String>,
        backend_url: impl Into<String>,
    ) -> CeleryWorkerBuilder {
        CeleryWorkerBuilder::new(broker_url.into(), backend_url.into())
    }

    /// A handle: running tasks, revoke, shutdown.
    pub fn handle(&self) -> WorkerHandle {
        WorkerHandle {
            shared: self.shared.clone(),
        }
    }

    /// The node name.
    pub fn hostname(&self) -> &str {
        &self.config.hostname
    }

    /// The broker connection.
    pub fn broker(&self) -> &KombuBroker {
        &self.broker
    }

    /// The result backend.
    pub fn backend(&self) -> &ResultBackend {
        &self.backend
    }
}
