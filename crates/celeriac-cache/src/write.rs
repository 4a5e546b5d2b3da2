//! Writing through the cache to the store behind it.
//!
//! **Write-through** ([`Cache::write_through`]): the store is written first, then the cache.
//! When the store's writer fails, nothing changes (the error is returned); when the cache
//! cannot be updated after the store was written, the key is dropped from this process's L1
//! and the call still succeeds: the store holds the value, and the L2 may serve the old one
//! until it expires or is invalidated.
//!
//! **Write-behind** ([`WriteBehind`]): a write updates the cache and is flushed to the store
//! later by a durable job. The job, carrying the value, is enqueued *before* the write
//! returns, so an acknowledged write survives a crash of the writing process: a worker
//! running the namespace's flush task ([`write_behind_task`]) hands it to the store's writer,
//! with retries and backoff until it succeeds. Each write gets a version from a per-key
//! counter in the L2 (increasing across processes); flushes are at least once and may arrive
//! out of order, so the writer keeps, per key, the value of the highest version it has seen
//! (an `UPDATE .. WHERE version < ?`). A batch written with [`WriteBehind::write_many`]
//! is flushed as one batch.
//!
//! Writes are buffered by group commit: while one flush job is being stored, the writes that
//! arrive meanwhile (from any task of the process) gather and go into the next job together,
//! up to [`WriteBehind::max_batch`] writes a job. A write alone is not delayed; under load
//! the store sees one enqueue per batch rather than one per write, and the writer gets the
//! batch in one call.
//!
//! **Size**: a value whose serialized form is over the namespace's
//! [`max_value_bytes`](crate::CacheBuilder::max_value_bytes) is written to L1 only, whichever
//! way it is written (a load, a write-through, a write-behind): the L2 does not get it, its
//! key's older value is removed from the L2, and it is counted
//! ([`CacheStats::too_large`](crate::CacheStats)).

use super::invalidation::Message;
use super::{key_part, Cache, CacheError, Inner};
use celeriac_core::backend::{Broker, KvStore};
use celeriac_core::clock::UnixMs;
use celeriac_core::error::{Error, Result};
use celeriac_core::retry::Backoff;
use celeriac_core::task::{TaskDef, TaskError, TaskOptions};
use celeriac_core::{JobId, JobOptions};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::fmt::Display;
use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::oneshot;
use tracing::debug;

/// One acknowledged write on its way to the store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingWrite<V> {
    /// The key, as its text (`Display`).
    pub key: String,
    /// The write's version: higher for later writes of the key, in every process.
    pub version: u64,
    /// The value.
    pub value: V,
}

/// The arguments of a flush job.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Flush<V> {
    writes: Vec<PendingWrite<V>>,
}

/// The name of the flush task of `namespace`: `celeriac.cache.write_behind.<namespace>`.
pub fn write_behind_task_name(namespace: &str) -> String {
    format!("celeriac.cache.write_behind.{namespace}")
}

/// The flush task's defaults: queue `default`, 20 attempts, backoff from 0.5 s to 60 s.
pub fn write_behind_options() -> TaskOptions {
    TaskOptions {
        max_attempts: 20,
        backoff: Backoff {
            base: Duration::from_millis(500),
            cap: Duration::from_secs(60),
            jitter: true,
        },
        ..TaskOptions::default()
    }
}

/// The flush task of `namespace`'s write-behind: calls `writer` with each batch of
/// acknowledged writes; a writer error retries the batch with backoff. Register it in the
/// worker's registry (and give [`WriteBehind::queue`] the same queue if `options` changes it).
pub fn write_behind_task<V, F, Fut, E>(namespace: &str, options: TaskOptions, writer: F) -> TaskDef
where
    V: DeserializeOwned + Send + 'static,
    F: Fn(Vec<PendingWrite<V>>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = std::result::Result<(), E>> + Send + 'static,
    E: Display + Send + 'static,
{
    let writer = std::sync::Arc::new(writer);
    TaskDef::from_fn(
        write_behind_task_name(namespace),
        options,
        move |_ctx, flush: Flush<V>| {
            let writer = writer.clone();
            async move {
                writer(flush.writes)
                    .await
                    .map_err(|e| TaskError::msg(format!("the store's writer failed: {e}")))
            }
        },
    )
}

/// Writes per flush job at most, by default.
pub const DEFAULT_MAX_BATCH: usize = 500;

/// What a waiting write learns of its flush job: stored, or why not.
type Stored = Result<()>;

/// The writes waiting for the next flush job, and whether a flusher is running.
struct Buffer<V> {
    writes: Vec<PendingWrite<V>>,
    /// One per waiting call: how many of `writes` are its own, and where to answer.
    waiting: Vec<(usize, oneshot::Sender<Stored>)>,
    flushing: bool,
}

/// The writing side of a write-behind cache: see the [module docs](self). Clones share one
/// buffer.
pub struct WriteBehind<K: ?Sized, V, B> {
    cache: Cache<K, V, B>,
    task: String,
    queue: String,
    max_batch: usize,
    buffer: Arc<Mutex<Buffer<V>>>,
}

impl<K: ?Sized, V, B> Clone for WriteBehind<K, V, B> {
    fn clone(&self) -> Self {
        Self {
            cache: self.cache.clone(),
            task: self.task.clone(),
            queue: self.queue.clone(),
            max_batch: self.max_batch,
            buffer: self.buffer.clone(),
        }
    }
}

impl<K, V, B> WriteBehind<K, V, B>
where
    K: ?Sized + Display,
    V: Clone + Serialize + DeserializeOwned + Send + Sync + 'static,
    B: Broker + KvStore,
{
    /// Writes behind `cache`: its flush jobs go to the queue of [`write_behind_options`].
    pub fn new(cache: Cache<K, V, B>) -> Self {
        let task = write_behind_task_name(cache.namespace());
        Self {
            cache,
            task,
            queue: write_behind_options().queue,
            max_batch: DEFAULT_MAX_BATCH,
            buffer: Arc::new(Mutex::new(Buffer {
                writes: Vec::new(),
                waiting: Vec::new(),
                flushing: false,
            })),
        }
    }

    /// The most writes gathered into one flush job (default [`DEFAULT_MAX_BATCH`]; at least
    /// 1). One `write_many` call is never split, so its job may hold more.
    pub fn max_batch(mut self, writes: usize) -> Self {
        self.max_batch = writes.max(1);
        self
    }

    /// The queue of the flush jobs (the flush task's queue).
    pub fn queue(mut self, queue: impl Into<String>) -> Self {
        self.queue = queue.into();
        self
    }

    /// The cache written to.
    pub fn cache(&self) -> &Cache<K, V, B> {
        &self.cache
    }

    /// Writes `value` under `key`: enqueues its flush job (durably), then updates L1 and L2
    /// and tells other instances. Returns the write's version once the job is stored.
    ///
    /// # Errors
    /// The flush job could not be stored (after three tries): the write is not
    /// acknowledged, and the cache is unchanged.
    pub async fn write(&self, key: &K, value: V) -> Result<u64> {
        let versions = self.write_many([(key, value)]).await?;
        versions.first().copied().ok_or(Error::Closed)
    }

    /// Writes several values in one flush job (one batch for the store's writer); returns
    /// their versions, in order.
    ///
    /// # Errors
    /// As [`WriteBehind::write`].
    pub async fn write_many<'k>(
        &self,
        entries: impl IntoIterator<Item = (&'k K, V)>,
    ) -> Result<Vec<u64>>
    where
        K: 'k,
    {
        let inner = &self.cache.inner;
        let mut writes = Vec::new();
        let mut parts = Vec::new();
        for (key, value) in entries {
            let part = key_part(key);
            let counter = format!("{}:wb:{part}", inner.prefix);
            let version = inner.store.kv_incr(&counter, inner.now()).await?;
            writes.push(PendingWrite {
                key: key.to_string(),
                version: u64::try_from(version).unwrap_or_default(),
                value,
            });
            parts.push(part);
        }
        if writes.is_empty() {
            return Ok(Vec::new());
        }
        let versions: Vec<u64> = writes.iter().map(|w| w.version).collect();
        let values: Vec<V> = writes.iter().map(|w| w.value.clone()).collect();
        let (tx, rx) = oneshot::channel();
        let start_flusher = {
            let mut buffer = self.buffer.lock().map_err(|_| Error::Closed)?;
            buffer.waiting.push((writes.len(), tx));
            buffer.writes.extend(writes);
            !std::mem::replace(&mut buffer.flushing, true)
        };
        if start_flusher {
            // Its own task, so a caller that stops waiting does not strand the others.
            tokio::spawn(flush_buffer(
                self.buffer.clone(),
                inner.store.clone(),
                inner.clock.clone(),
                self.task.clone(),
                self.queue.clone(),
                self.max_batch,
            ));
        }
        match rx.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(e),
            Err(_) => return Err(Error::Closed),
        }
        // Acknowledged from here on: the cache is updated as well as it can be.
        for (part, value) in parts.into_iter().zip(values) {
            if inner
                .store_value(&part, Some(value), Vec::new(), 0, None)
                .await
                .is_err()
            {
                inner.l1_drop(&part);
            }
            inner.broadcast(Message::Key(part)).await;
        }
        Ok(versions)
    }
}

/// Stores the buffered writes as flush jobs, one batch after another, until the buffer is
/// empty; answers each waiting call when the job holding its writes is stored.
async fn flush_buffer<V, B>(
    buffer: Arc<Mutex<Buffer<V>>>,
    store: Arc<B>,
    clock: Arc<dyn celeriac_core::clock::Clock>,
    task: String,
    queue: String,
    max_batch: usize,
) where
    V: Serialize + Send + 'static,
    B: Broker,
{
    loop {
        let (writes, waiting) = {
            let Ok(mut b) = buffer.lock() else { return };
            if b.waiting.is_empty() {
                b.flushing = false;
                return;
            }
            // Whole calls, up to `max_batch` writes (at least one call).
            let (mut calls, mut count) = (0, 0);
            for (n, _) in &b.waiting {
                if calls > 0 && count + n > max_batch {
                    break;
                }
                calls += 1;
                count += n;
            }
            let writes: Vec<PendingWrite<V>> = b.writes.drain(..count).collect();
            let waiting: Vec<_> = b.waiting.drain(..calls).map(|(_, tx)| tx).collect();
            (writes, waiting)
        };
        let stored = store_flush(&*store, &*clock, &task, &queue, Flush { writes }).await;
        for tx in waiting {
            let _ = tx.send(stored.clone());
        }
    }
}

/// Stores one flush job, trying up to three times under one id (a try that was stored though
/// its answer was lost is not stored twice).
async fn store_flush<V: Serialize, B: Broker>(
    store: &B,
    clock: &dyn celeriac_core::clock::Clock,
    task: &str,
    queue: &str,
    flush: Flush<V>,
) -> Result<()> {
    let options = TaskOptions {
        queue: queue.to_string(),
        ..write_behind_options()
    };
    let job = JobOptions {
        id: Some(JobId::new()),
        ..JobOptions::default()
    }
    .build(task, &options, &flush, clock.now_ms())?;
    let mut tries = 0;
    loop {
        tries += 1;
        match store.enqueue(vec![job.clone()], clock.now_ms()).await {
            Ok(_) => return Ok(()),
            Err(e) if tries < 3 && e.kind() != celeriac_core::ErrorKind::GiveUp => {
                tokio::time::sleep(Duration::from_millis(50 * tries)).await;
            }
            Err(e) => return Err(e),
        }
    }
}

impl<K, V, S> Cache<K, V, S>
where
    K: ?Sized + Display,
    V: Clone + Serialize + DeserializeOwned + Send + Sync + 'static,
    S: KvStore,
{
    /// Write-through: calls `writer` with the value (the store first), then stores it in L1
    /// and L2 and tells other instances. See the [module docs](crate::write) for
    /// what happens on failure.
    ///
    /// # Errors
    /// [`CacheError::Write`] when the writer failed, with its error: the cache was not
    /// touched.
    pub async fn write_through<F, Fut, E>(
        &self,
        key: &K,
        value: V,
        writer: F,
    ) -> std::result::Result<(), CacheError<E>>
    where
        F: FnOnce(V) -> Fut,
        Fut: Future<Output = std::result::Result<(), E>>,
        E: Display,
    {
        let part = key_part(key);
        let inner = &self.inner;
        if let Err(error) = writer(value.clone()).await {
            return Err(CacheError::Write {
                key: inner.label(&part),
                error,
            });
        }
        if inner
            .store_value(&part, Some(value), Vec::new(), 0, None)
            .await
            .is_err()
        {
            inner.l1_drop(&part);
        }
        inner.broadcast(Message::Key(part)).await;
        Ok(())
    }
}

impl<V, S> Inner<V, S>
where
    V: Clone + Serialize + DeserializeOwned + Send + Sync + 'static,
    S: KvStore,
{
    /// Keeps a value of `len` serialized bytes, over the namespace's `max_value_bytes`, out
    /// of the L2: counts it, and removes the key's older value there, so no instance serves
    /// it in place of the new one. The caller has it in L1 already.
    pub(super) async fn keep_out_of_l2(&self, part: &str, len: usize, now: UnixMs) -> Result<()> {
        self.stats.too_large.fetch_add(1, Ordering::Relaxed);
        debug!(
            namespace = %self.cfg.namespace,
            key = part,
            bytes = len,
            max_value_bytes = self.cfg.max_value_bytes,
            "cached value over max_value_bytes; kept in L1 only"
        );
        self.l2(self.store.kv_delete(vec![self.full_key(part)], now))
            .await
            .map(|_| ())
    }
}
