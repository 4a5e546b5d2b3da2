//! Waiting for a message without polling: one watcher per list key, each on its own
//! connection, blocking in `BLMOVE key key RIGHT RIGHT` — which moves the list's last element
//! onto itself, so it changes nothing — and waking the waiting consume calls when it returns.
//!
//! A watcher blocks only while some consume call waits on its key, so an idle process holds
//! no server-side waiters, and after a wake-up it blocks again only once a consume call has
//! tried a claim, so a message nobody takes (every waiter just left) cannot make it spin.

use super::options::TransportOptions;
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Client};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::debug;

pub(crate) struct Waker {
    client: Client,
    block: Duration,
    config: AsyncConnectionConfig,
    /// Bumped by a watcher whose list has something.
    wake: watch::Sender<u64>,
    /// Bumped after every claim attempt.
    attempts: watch::Sender<u64>,
    /// The number of consume calls waiting on each key, and the watchers started.
    watched: Mutex<HashMap<String, watch::Sender<usize>>>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl Waker {
    pub(crate) fn new(client: Client, options: &TransportOptions) -> Self {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(options.connect_timeout))
            .set_response_timeout(Some(options.block + options.response_timeout));
        Waker {
            client,
            block: options.block,
            config,
            wake: watch::Sender::new(0),
            attempts: watch::Sender::new(0),
            watched: Mutex::new(HashMap::new()),
            tasks: Mutex::new(Vec::new()),
        }
    }

    /// A receiver that sees every wake-up from now on.
    pub(crate) fn subscribe(&self) -> watch::Receiver<u64> {
        self.wake.subscribe()
    }

    /// Records that a claim was tried (the watchers that woke may block again).
    pub(crate) fn attempted(&self) {
        self.attempts.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Registers a consume call as waiting on `keys` until the returned guard is dropped,
    /// starting the watchers it needs.
    pub(crate) fn interest(&self, keys: &[String]) -> Interest {
        let mut counters = Vec::with_capacity(keys.len());
        let mut watched = self
            .watched
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for key in keys {
            let counter = watched.entry(key.clone()).or_insert_with(|| {
                let counter = watch::Sender::new(0usize);
                let task = tokio::spawn(watch_list(
                    self.client.clone(),
                    self.config.clone(),
                    key.clone(),
                    self.block,
                    counter.subscribe(),
                    self.wake.clone(),
                    self.attempts.subscribe(),
                ));
                self.tasks
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .push(task);
                counter
            });
            counter.send_modify(|n| *n += 1);
            counters.push(counter.clone());
        }
        Interest { counters }
    }
}

impl Drop for Waker {
    fn drop(&mut self) {
        let tasks = self
            .tasks
            .get_mut()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for task in tasks.drain(..) {
            task.abort();
        }
    }
}

/// A consume call waiting on some keys; dropping it (also when the call is cancelled) stops
/// counting it.
pub(crate) struct Interest {
    counters: Vec<watch::Sender<usize>>,
}

impl Drop for Interest {
    fn drop(&mut self) {
        for c in &self.counters {
            c.send_modify(|n| *n = n.saturating_sub(1));
        }
    }
}

async fn watch_list(
    client: Client,
    config: AsyncConnectionConfig,
    key: String,
    block: Duration,
    mut interest: watch::Receiver<usize>,
    wake: watch::Sender<u64>,
    mut attempts: watch::Receiver<u64>,
) {
    const MIN_BACKOFF: Duration = Duration::from_millis(100);
    let mut conn: Option<MultiplexedConnection> = None;
    let mut backoff = MIN_BACKOFF;
    loop {
        if interest.wait_for(|n| *n > 0).await.is_err() {
            return;
        }
        let c = match conn.as_mut() {
            Some(c) => c,
            None => match client
                .get_multiplexed_async_connection_with_config(&config)
                .await
            {
                Ok(c) => conn.insert(c),
                Err(e) => {
                    debug!(error = %e, "list watcher cannot connect; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    continue;
                }
            },
        };
        let moved: redis::RedisResult<Option<Vec<u8>>> = redis::cmd("BLMOVE")
            .arg(&key)
            .arg(&key)
            .arg("RIGHT")
            .arg("RIGHT")
            .arg(block.as_secs_f64())
            .query_async(c)
            .await;
        match moved {
            Ok(Some(_)) => {
                backoff = MIN_BACKOFF;
                attempts.borrow_and_update();
                wake.send_modify(|n| *n = n.wrapping_add(1));
                tokio::select! {
                    r = attempts.changed() => if r.is_err() { return },
                    r = interest.wait_for(|n| *n == 0) => if r.is_err() { return },
                }
            }
            Ok(None) => backoff = MIN_BACKOFF,
            Err(e) => {
                debug!(error = %e, "list watcher failed; reconnecting");
                conn = None;
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}
