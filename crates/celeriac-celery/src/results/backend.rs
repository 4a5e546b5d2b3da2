//! [`ResultBackend`]: reading and writing `celery-task-meta-<id>` records as Celery's
//! `RedisBackend` does.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use redis::aio::{ConnectionManager, PubSub};
use redis::{Client, Script};

use super::chord::ChordGeneration;
use super::error::{redact_url, Error, Result};
use super::meta::ResultMeta;
use super::state::State;

/// Celery's default `result_expires`: one day.
pub const DEFAULT_RESULT_EXPIRES: Duration = Duration::from_secs(86_400);
/// Celery's default `result_chord_join_timeout`: 3 s.
pub const DEFAULT_CHORD_JOIN_TIMEOUT: Duration = Duration::from_secs(3);
const TASK_PREFIX: &str = "celery-task-meta-";
/// Pauses between attempts to re-subscribe a waiter whose connection was lost.
const RECONNECT_BACKOFF_MIN: Duration = Duration::from_millis(50);
const RECONNECT_BACKOFF_MAX: Duration = Duration::from_secs(1);
/// Conditional writes over a compressed record before giving up.
const STORE_ATTEMPTS: usize = 5;
const GROUP_PREFIX: &str = "celery-taskset-meta-";

/// How `global_keyprefix` is joined to Celery's key prefixes (it changed between versions).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum KeyPrefixStyle {
    /// Celery 5.7: `_` is appended unless the prefix ends in `:`, `_`, `-` or `.`
    /// (`"app:"` → `app:celery-task-meta-<id>`, `"rpfx"` → `rpfx_celery-task-meta-<id>`).
    #[default]
    UnlessSeparator,
    /// Celery 5.3 (and the releases before the change): `_` is always appended
    /// (`"app:"` → `app:_celery-task-meta-<id>`).
    AlwaysUnderscore,
}

/// Whether a store wrote the record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stored {
    /// Written (SETEX or SET) and published on the key's channel.
    Written,
    /// Not written: the key holds a SUCCESS record, which is never replaced (§12.20).
    KeptSuccess,
}

/// Options of a [`ResultBackend`], named after Celery's settings; see
/// [`ResultBackend::builder`].
#[derive(Debug, Clone)]
#[must_use]
pub struct ResultBackendBuilder {
    url: String,
    result_expires: Option<Duration>,
    failure_expires: Option<Option<Duration>>,
    chord_expires: Option<Option<Duration>>,
    global_keyprefix: Option<String>,
    prefix_style: KeyPrefixStyle,
    result_extended: bool,
    chord_generation: ChordGeneration,
    chord_ordered: bool,
    chord_join_timeout: Duration,
}

impl ResultBackendBuilder {
    /// `result_expires`: how long records live (default one day); `None` or zero keeps them
    /// forever. Below one second counts as one second.
    pub fn result_expires(mut self, expires: Option<Duration>) -> Self {
        self.result_expires = expires;
        self
    }

    /// `result_failure_expires` (Celery 5.7): a different lifetime for FAILURE records
    /// (`None` = forever). Default: as `result_expires`.
    pub fn failure_expires(mut self, expires: Option<Duration>) -> Self {
        self.failure_expires = Some(expires);
        self
    }

    /// `result_chord_expires`: lifetime of the chord join keys. Default: as `result_expires`.
    pub fn chord_expires(mut self, expires: Option<Duration>) -> Self {
        self.chord_expires = Some(expires);
        self
    }

    /// `result_backend_transport_options["global_keyprefix"]`, joined per `style`.
    pub fn global_keyprefix(mut self, prefix: impl Into<String>, style: KeyPrefixStyle) -> Self {
        self.global_keyprefix = Some(prefix.into());
        self.prefix_style = style;
        self
    }

    /// `result_extended`: write the extended fields (name, args, kwargs, worker, retries,
    /// queue) of [`ResultMeta::extended`].
    pub fn result_extended(mut self, on: bool) -> Self {
        self.result_extended = on;
        self
    }

    /// Which chord bookkeeping the join uses; see [`ChordGeneration`]. Default: Celery 5.7's.
    pub fn chord_generation(mut self, generation: ChordGeneration) -> Self {
        self.chord_generation = generation;
        self
    }

    /// `result_backend_transport_options["result_chord_ordered"]` (default true): header
    /// results in a zset by group index; false: a list in arrival order.
    pub fn chord_ordered(mut self, ordered: bool) -> Self {
        self.chord_ordered = ordered;
        self
    }

    /// `result_chord_join_timeout` (default 3 s): the release claim lasts max(5 s, twice this).
    pub fn chord_join_timeout(mut self, timeout: Duration) -> Self {
        self.chord_join_timeout = timeout;
        self
    }

    /// Connects.
    ///
    /// # Errors
    /// [`Error::Url`] for a URL redis-rs cannot use (password hidden), [`Error::Setting`] for
    /// an empty key prefix, [`Error::Redis`] when the server cannot be reached.
    pub async fn build(self) -> Result<ResultBackend> {
        let shown = redact_url(&self.url);
        let client = Client::open(self.url.as_str()).map_err(|e| Error::Url {
            url: shown.clone(),
            reason: redact_reason(&e.to_string(), &self.url),
        })?;
        let prefix = match self.global_keyprefix.as_deref() {
            None => String::new(),
            Some("") => {
                return Err(Error::Setting {
                    setting: "global_keyprefix",
                    reason: "empty: leave it unset for no prefix".into(),
                })
            }
            Some(p) => match self.prefix_style {
                KeyPrefixStyle::UnlessSeparator if p.ends_with([':', '_', '-', '.']) => p.into(),
                _ => format!("{p}_"),
            },
        };
        let conn = ConnectionManager::new(client.clone())
            .await
            .map_err(Error::redis(format!("connect to {shown}")))?;
        let result_expires = self.result_expires.and_then(secs);
        Ok(ResultBackend {
            inner: Arc::new(Inner {
                client,
                conn,
                shown_url: shown,
                task_prefix: format!("{prefix}{TASK_PREFIX}"),
                group_prefix: format!("{prefix}{GROUP_PREFIX}"),
                result_expires,
                failure_expires: self
                    .failure_expires
                    .map_or(result_expires, |e| e.and_then(secs)),
                chord_expires: self
                    .chord_expires
                    .map_or(result_expires, |e| e.and_then(secs)),
                result_extended: self.result_extended,
                chord_generation: self.chord_generation,
                chord_ordered: self.chord_ordered,
                chord_join_timeout: self.chord_join_timeout,
                store_script: Script::new(include_str!("lua/storeResult-1.lua")),
                chord_scripts: super::chord::ChordScripts::new(),
            }),
        })
    }
}

/// Whole seconds, at least one (Redis expiries are in seconds); zero means no expiry, as
/// Celery's `result_expires = 0`.
fn secs(d: Duration) -> Option<u64> {
    (!d.is_zero()).then(|| d.as_secs().max(1))
}

fn redact_reason(reason: &str, url: &str) -> String {
    let shown = redact_url(url);
    reason.replace(url, &shown)
}

pub(crate) struct Inner {
    client: Client,
    conn: ConnectionManager,
    shown_url: String,
    task_prefix: String,
    group_prefix: String,
    pub(crate) result_expires: Option<u64>,
    failure_expires: Option<u64>,
    pub(crate) chord_expires: Option<u64>,
    result_extended: bool,
    pub(crate) chord_generation: ChordGeneration,
    pub(crate) chord_ordered: bool,
    pub(crate) chord_join_timeout: Duration,
    store_script: Script,
    pub(crate) chord_scripts: super::chord::ChordScripts,
}

/// Celery's Redis result backend: task records (`celery-task-meta-<id>`, SETEX + PUBLISH),
/// their readers and waiters, and the chord join.
///
/// Cheap to clone (one shared connection). The URL is a redis-rs URL with the database as
/// path, e.g. `redis://127.0.0.1:6379/1`, the same as Celery's `result_backend`.
#[derive(Clone)]
pub struct ResultBackend {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for ResultBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResultBackend")
            .field("url", &self.inner.shown_url)
            .field("task_prefix", &self.inner.task_prefix)
            .finish_non_exhaustive()
    }
}

impl ResultBackend {
    /// Options for a backend at `url`: `result_expires` one day, no key prefix,
    /// `result_extended` off, Celery 5.7 chord bookkeeping.
    pub fn builder(url: impl Into<String>) -> ResultBackendBuilder {
        ResultBackendBuilder {
            url: url.into(),
            result_expires: Some(DEFAULT_RESULT_EXPIRES),
            failure_expires: None,
            chord_expires: None,
            global_keyprefix: None,
            prefix_style: KeyPrefixStyle::default(),
            result_extended: false,
            chord_generation: ChordGeneration::default(),
            chord_ordered: true,
            chord_join_timeout: DEFAULT_CHORD_JOIN_TIMEOUT,
        }
    }

    /// A backend at `url` with the default options.
    ///
    /// # Errors
    /// As [`ResultBackendBuilder::build`].
    pub async fn connect(url: impl Into<String>) -> Result<Self> {
        Self::builder(url).build().await
    }

    /// The shared connection (for callers that need other commands on the backend's database).
    pub fn connection(&self) -> ConnectionManager {
        self.inner.conn.clone()
    }

    /// `celery-task-meta-<id>` with the global prefix.
    pub fn task_key(&self, task_id: &str) -> String {
        format!("{}{task_id}", self.inner.task_prefix)
    }

    /// `celery-taskset-meta-<gid><suffix>` with the global prefix (`suffix` `""`, `".j"`, ...).
    pub fn group_key(&self, group_id: &str, suffix: &str) -> String {
        format!("{}{group_id}{suffix}", self.inner.group_prefix)
    }

    /// Which chord bookkeeping [`ResultBackend::chord_part_return`] uses.
    pub fn chord_generation(&self) -> ChordGeneration {
        self.inner.chord_generation
    }

    /// Stores a record: `SETEX` (or `SET` without expiry) and `PUBLISH` of the same JSON on
    /// the key's channel, in one Lua script that first checks that the key does not already
    /// hold a SUCCESS (a SUCCESS is never overwritten). The TTL is `result_expires`
    /// (`failure_expires` for FAILURE). Extended fields are written only with
    /// `result_extended`.
    ///
    /// # Errors
    /// [`Error::Encode`] for a value that is not JSON-serializable, [`Error::Redis`].
    pub async fn store(&self, meta: &ResultMeta) -> Result<Stored> {
        let json = meta.to_json(self.inner.result_extended)?;
        let ttl = if meta.status == State::Failure {
            self.inner.failure_expires
        } else {
            self.inner.result_expires
        };
        let key = self.task_key(&meta.task_id);
        let mut expected: Option<Vec<u8>> = None;
        // A compressed record (Celery 5.7 result_compression) is decoded here and the write
        // made conditional on it being unchanged; a concurrent change means another round.
        for _ in 0..STORE_ATTEMPTS {
            let mut call = self.inner.store_script.key(&key);
            call.arg(&json).arg(ttl.unwrap_or(0));
            if let Some(current) = &expected {
                call.arg(current.as_slice());
            }
            let reply: i64 = call
                .invoke_async(&mut self.connection())
                .await
                .map_err(Error::redis(format!("store {} in {key}", meta.status)))?;
            match reply {
                1 => return Ok(Stored::Written),
                0 => return Ok(Stored::KeptSuccess),
                _ => {
                    let current: Option<Vec<u8>> = redis::cmd("GET")
                        .arg(&key)
                        .query_async(&mut self.connection())
                        .await
                        .map_err(Error::redis(format!("GET {key}")))?;
                    let Some(current) = current else {
                        expected = Some(Vec::new());
                        continue;
                    };
                    let stored = ResultMeta::from_bytes(&current, &key, &meta.task_id)?;
                    if stored.status == State::Success {
                        return Ok(Stored::KeptSuccess);
                    }
                    expected = Some(current);
                }
            }
        }
        Err(Error::Decode {
            key,
            reason: format!("changed under {STORE_ATTEMPTS} conditional writes in a row"),
        })
    }

    /// The stored record; `None` when there is none (the task is PENDING or unknown, or its
    /// record expired or was forgotten).
    ///
    /// # Errors
    /// [`Error::Redis`]; [`Error::Decode`] for a value that is no result record.
    pub async fn get(&self, task_id: &str) -> Result<Option<ResultMeta>> {
        let key = self.task_key(task_id);
        let raw: Option<Vec<u8>> = redis::cmd("GET")
            .arg(&key)
            .query_async(&mut self.connection())
            .await
            .map_err(Error::redis(format!("GET {key}")))?;
        raw.map(|bytes| ResultMeta::from_bytes(&bytes, &key, task_id))
            .transpose()
    }

    /// The task's state: the stored status, or PENDING when there is no record.
    ///
    /// # Errors
    /// As [`ResultBackend::get`].
    pub async fn state(&self, task_id: &str) -> Result<State> {
        Ok(self
            .get(task_id)
            .await?
            .map_or(State::Pending, |meta| meta.status))
    }

    /// Deletes the record (`AsyncResult.forget()`); whether there was one.
    ///
    /// # Errors
    /// [`Error::Redis`].
    pub async fn forget(&self, task_id: &str) -> Result<bool> {
        let key = self.task_key(task_id);
        let deleted: i64 = redis::cmd("DEL")
            .arg(&key)
            .query_async(&mut self.connection())
            .await
            .map_err(Error::redis(format!("DEL {key}")))?;
        Ok(deleted > 0)
    }

    /// Subscribes to the task's channel now: call it *before* sending the task, then
    /// [`ResultWaiter::wait`] (§6.6: subscribe, send, GET, wait for publishes).
    ///
    /// # Errors
    /// [`Error::Redis`] when the subscription fails.
    pub async fn subscribe(&self, task_id: &str) -> Result<ResultWaiter> {
        let key = self.task_key(task_id);
        let pubsub = self.open_subscription(&key).await?;
        Ok(ResultWaiter {
            backend: self.clone(),
            task_id: task_id.to_owned(),
            key,
            pubsub: Some(pubsub),
        })
    }

    /// Waits for a ready record (SUCCESS, FAILURE, REVOKED): subscribes, reads the key, then
    /// waits for publishes on its channel (no polling).
    ///
    /// # Errors
    /// [`Error::Timeout`] when none arrives within `timeout`; [`Error::Redis`],
    /// [`Error::Decode`].
    pub async fn wait(&self, task_id: &str, timeout: Duration) -> Result<ResultMeta> {
        self.subscribe(task_id).await?.wait(timeout).await
    }

    async fn open_subscription(&self, key: &str) -> Result<PubSub> {
        let mut pubsub = self
            .inner
            .client
            .get_async_pubsub()
            .await
            .map_err(Error::redis(format!(
                "open a subscription to {}",
                self.inner.shown_url
            )))?;
        pubsub
            .subscribe(key)
            .await
            .map_err(Error::redis(format!("SUBSCRIBE {key}")))?;
        Ok(pubsub)
    }
}

/// A subscription to one task's result channel; see [`ResultBackend::subscribe`].
pub struct ResultWaiter {
    backend: ResultBackend,
    task_id: String,
    key: String,
    pubsub: Option<PubSub>,
}

impl std::fmt::Debug for ResultWaiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResultWaiter")
            .field("task_id", &self.task_id)
            .finish_non_exhaustive()
    }
}

impl ResultWaiter {
    /// The task waited for.
    pub fn task_id(&self) -> &str {
        &self.task_id
    }

    /// Waits for a ready record: reads the key (a result stored before the subscription),
    /// then takes the records published on the channel until one is ready. A lost
    /// subscription is re-opened and the key read again (publishes in between are lost, the
    /// record is not).
    ///
    /// # Errors
    /// [`Error::Timeout`] with the last state seen; [`Error::Redis`], [`Error::Decode`].
    pub async fn wait(mut self, timeout: Duration) -> Result<ResultMeta> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut last = State::Pending;
        let mut backoff = RECONNECT_BACKOFF_MIN;
        loop {
            // Subscribed first, then the key: a record stored in between is read, one stored
            // after is published to us.
            let attempt = async {
                let pubsub = match self.pubsub.take() {
                    Some(p) => p,
                    None => self.backend.open_subscription(&self.key).await?,
                };
                let meta = self.backend.get(&self.task_id).await?;
                Ok::<_, Error>((pubsub, meta))
            };
            let (mut pubsub, meta) = match tokio::time::timeout_at(deadline, attempt).await {
                Err(_) => return Err(self.timeout(timeout, &last)),
                Ok(Ok(found)) => found,
                // Redis restarting or failing over: try again until the deadline.
                Ok(Err(e)) if e.is_transient() => {
                    let pause = tokio::time::sleep(backoff);
                    if tokio::time::timeout_at(deadline, pause).await.is_err() {
                        return Err(self.timeout(timeout, &last));
                    }
                    backoff = (backoff * 2).min(RECONNECT_BACKOFF_MAX);
                    continue;
                }
                Ok(Err(e)) => return Err(e),
            };
            backoff = RECONNECT_BACKOFF_MIN;
            if let Some(meta) = meta {
                if meta.status.is_ready() {
                    return Ok(meta);
                }
                last = meta.status;
            }
            let mut stream = pubsub.on_message();
            loop {
                let msg = match tokio::time::timeout_at(deadline, stream.next()).await {
                    Err(_) => return Err(self.timeout(timeout, &last)),
                    // The connection closed: subscribe again and re-read the key.
                    Ok(None) => break,
                    Ok(Some(msg)) => msg,
                };
                let meta =
                    ResultMeta::from_bytes(msg.get_payload_bytes(), &self.key, &self.task_id)?;
                if meta.status.is_ready() {
                    return Ok(meta);
                }
                last = meta.status;
            }
        }
    }

    fn timeout(&self, waited: Duration, last: &State) -> Error {
        Error::Timeout {
            task_id: self.task_id.clone(),
            waited,
            last_state: last.to_string(),
        }
    }
}
