//! How a Redis process learns of work and of finished jobs without polling: one pub/sub
//! listener for completion messages, blocking watchers on each queue's marker, and the wait
//! for a job or workflow to finish.

use crate::conn::{map_err, Conn};
use crate::keys::{self};
use crate::{RedisBackend, BLOCK_SECS};
use celeriac_core::error::{Error, Result};
use celeriac_core::job::JobId;
use futures_util::StreamExt;
use redis::AsyncCommands;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::sync::broadcast;
use tracing::debug;

impl RedisBackend {
    pub(crate) fn ensure_listener(&self) {
        if self.inner.listening.swap(true, Ordering::SeqCst) {
            return;
        }
        let connector = self.inner.connector.clone();
        let done = self.inner.done.clone();
        let stop = self.inner.stop.clone();
        let pattern = keys::done_pattern(&self.inner.config.prefix);
        tokio::spawn(async move {
            let mut backoff = Duration::from_millis(100);
            while !stop.is_cancelled() {
                let sub = async {
                    let mut ps = connector.pubsub().await?;
                    ps.psubscribe(&pattern).await.map_err(map_err)?;
                    Ok::<_, Error>(ps)
                };
                match sub.await {
                    Ok(ps) => {
                        backoff = Duration::from_millis(100);
                        let mut stream = ps.into_on_message();
                        loop {
                            tokio::select! {
                                msg = stream.next() => match msg {
                                    Some(m) => { let _ = done.send(String::from_utf8_lossy(m.get_payload_bytes()).into_owned()); }
                                    None => break,
                                },
                                _ = stop.cancelled() => return,
                            }
                        }
                        debug!("completion subscription ended; resubscribing");
                    }
                    Err(e) => debug!(error = %e, "cannot subscribe to completions; retrying"),
                }
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = stop.cancelled() => return,
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        });
    }

    pub(crate) fn ensure_watchers(&self, queues: &[String]) {
        let mut watched = match self.inner.watched.lock() {
            Ok(w) => w,
            Err(_) => return,
        };
        for q in queues {
            if !watched.insert(q.clone()) {
                continue;
            }
            let marker = self.keys(q).marker().to_string();
            let connector = self.inner.connector.clone();
            let work = self.inner.work.clone();
            let mut waiting = self.inner.waiting.subscribe();
            let stop = self.inner.stop.clone();
            let timeout = self.inner.config.response_timeout + Duration::from_secs_f64(BLOCK_SECS);
            tokio::spawn(async move {
                let mut conn: Option<Conn> = None;
                let mut backoff = Duration::from_millis(100);
                loop {
                    // Block only while a worker here waits: a busy process must not take the
                    // wake-ups that idle workers elsewhere need.
                    tokio::select! {
                        r = waiting.wait_for(|n| *n > 0) => if r.is_err() { return },
                        _ = stop.cancelled() => return,
                    }
                    if conn.is_none() {
                        match connector.connect(timeout).await {
                            Ok(c) => conn = Some(c),
                            Err(e) => {
                                debug!(error = %e, "marker connection failed");
                                tokio::select! {
                                    _ = tokio::time::sleep(backoff) => {}
                                    _ = stop.cancelled() => return,
                                }
                                backoff = (backoff * 2).min(Duration::from_secs(5));
                                continue;
                            }
                        }
                    }
                    let Some(c) = conn.as_mut() else { continue };
                    let popped: redis::RedisResult<Option<(String, String, f64)>> = tokio::select! {
                        r = c.bzpopmin(&marker, BLOCK_SECS) => r,
                        _ = stop.cancelled() => return,
                    };
                    match popped {
                        Ok(Some(_)) => {
                            backoff = Duration::from_millis(100);
                            work.send_modify(|v| *v = v.wrapping_add(1));
                        }
                        Ok(None) => backoff = Duration::from_millis(100),
                        Err(e) => {
                            debug!(error = %e, "waiting on the marker failed");
                            conn = None;
                            tokio::select! {
                                _ = tokio::time::sleep(backoff) => {}
                                _ = stop.cancelled() => return,
                            }
                            backoff = (backoff * 2).min(Duration::from_secs(5));
                        }
                    }
                }
            });
        }
    }
}

impl RedisBackend {
    /// Reads `fetch` until `done` holds, waking on the id's completion message (jobs and
    /// workflows publish their id when they finish) and re-reading at least every second in
    /// case a message was lost while the subscription reconnected.
    pub(crate) async fn wait_until_done<T, F, Fut>(
        &self,
        id: JobId,
        timeout: Duration,
        fetch: F,
        done: impl Fn(&T) -> bool,
    ) -> Result<T>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<Option<T>>>,
    {
        self.ensure_listener();
        // Subscribed before the first read, so a finish between the read and the nap is seen.
        let mut rx = self.inner.done.subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        let sid = id.to_string();
        loop {
            match fetch().await? {
                Some(value) if done(&value) => return Ok(value),
                Some(_) => {}
                None => return Err(Error::NotFound(sid)),
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Err(Error::Timeout(sid));
            }
            let nap_until = (now + Duration::from_secs(1)).min(deadline);
            loop {
                match tokio::time::timeout_at(nap_until, rx.recv()).await {
                    Ok(Ok(finished)) if finished == sid => break,
                    Ok(Ok(_)) => continue,
                    Ok(Err(broadcast::error::RecvError::Lagged(_))) => break,
                    Ok(Err(broadcast::error::RecvError::Closed)) => {
                        tokio::time::sleep_until(nap_until).await;
                        break;
                    }
                    Err(_) => break,
                }
            }
        }
    }
}
