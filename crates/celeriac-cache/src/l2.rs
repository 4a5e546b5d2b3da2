//! The L2 as the cache reaches it: every call under a timeout and behind [`L2Guard`], and
//! the read of one key checked against its tags' barriers.

use super::{Envelope, Inner, Slot};
use celeriac_core::backend::KvStore;
use celeriac_core::clock::UnixMs;
use celeriac_core::error::{Error, Result};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tracing::{debug, info, warn};

/// What L2 had for a key.
pub(super) enum L2Read<V> {
    Fresh(Slot<V>),
    Stale(Slot<V>),
    Missing,
}

impl<V, S> Inner<V, S>
where
    V: Clone + Serialize + DeserializeOwned + Send + Sync + 'static,
    S: KvStore,
{
    /// Runs an L2 call under the timeout and the guard.
    pub(super) async fn l2<T>(&self, call: impl Future<Output = Result<T>>) -> Result<T> {
        let now = Instant::now();
        if !self.l2_guard.allows(now) {
            return Err(Error::backend(
                celeriac_core::ErrorKind::Retry,
                "the cache's L2 is unavailable (circuit open)",
            ));
        }
        let r = match tokio::time::timeout(self.cfg.l2_timeout, call).await {
            Ok(r) => r,
            Err(_) => Err(Error::backend(
                celeriac_core::ErrorKind::Retry,
                format!(
                    "the cache's L2 did not answer within {:?}",
                    self.cfg.l2_timeout
                ),
            )),
        };
        match &r {
            Ok(_) => {
                if self.l2_guard.success() {
                    info!(namespace = %self.cfg.namespace, "cache L2 is back");
                }
            }
            // A full store still answers: counted apart, and no reason to stop reading it.
            Err(e) if e.kind() == celeriac_core::ErrorKind::Full => {
                self.stats.l2_full.fetch_add(1, Ordering::Relaxed);
                debug!(namespace = %self.cfg.namespace, error = %e, "cache L2 is full; write refused");
            }
            Err(e) => {
                self.stats.l2_errors.fetch_add(1, Ordering::Relaxed);
                debug!(namespace = %self.cfg.namespace, error = %e, "cache L2 call failed");
                if self.l2_guard.failure(Instant::now()) {
                    warn!(namespace = %self.cfg.namespace, error = %e,
                        "cache L2 unavailable; serving L1 and loaders until it is back");
                }
            }
        }
        r
    }

    /// Reads a key from L2 and checks it against its tags' barriers.
    pub(super) async fn read_l2(&self, part: &str) -> Result<L2Read<V>> {
        let now = self.now();
        let full = self.full_key(part);
        let mut got = self.l2(self.store.kv_get(vec![full], now)).await?;
        let Some(bytes) = got.pop().flatten() else {
            return Ok(L2Read::Missing);
        };
        // A value larger than this namespace writes is refused before it is decompressed.
        let decoded =
            Envelope::from_bytes_within(&bytes, self.cfg.max_value_bytes).and_then(|env| {
                if env.schema != self.cfg.schema {
                    return Err(Error::Codec(format!(
                        "written with schema {}, this cache reads {}",
                        env.schema, self.cfg.schema
                    )));
                }
                let value = match &env.value {
                    Some(b) => Some(env.format.decode::<V>(b)?),
                    None => None,
                };
                let bytes = u32::try_from(env.size()).unwrap_or(u32::MAX);
                Ok((env.meta, value, bytes))
            });
        let (meta, value, bytes) = match decoded {
            Ok(d) => d,
            Err(e) => {
                self.stats.decode_errors.fetch_add(1, Ordering::Relaxed);
                debug!(namespace = %self.cfg.namespace, key = part, error = %e,
                    "cached value does not decode; reloading");
                return Ok(L2Read::Missing);
            }
        };
        if !meta.tags.is_empty() {
            let keys = meta.tags.iter().map(|t| self.barrier_key(t)).collect();
            let barriers = self.l2(self.store.kv_get(keys, now)).await?;
            let mut lost = false;
            for (tag, b) in meta.tags.iter().zip(barriers) {
                let at = b
                    .and_then(|b| String::from_utf8(b).ok())
                    .and_then(|s| s.parse::<UnixMs>().ok());
                match at {
                    Some(at) => self.raise_barrier(tag, at),
                    // Every write of a tagged entry keeps its tags' barriers in L2 at least as
                    // long as the entry: one that is gone was evicted, and whether it had been
                    // raised past this entry is unknown.
                    None => lost = true,
                }
            }
            if lost {
                self.stats.l2_barriers_lost.fetch_add(1, Ordering::Relaxed);
                debug!(namespace = %self.cfg.namespace, key = part,
                    "a tag barrier of this entry is gone from L2; reloading");
                return Ok(L2Read::Missing);
            }
            if self.barred(&meta) {
                return Ok(L2Read::Missing);
            }
        }
        if now >= meta.stale_until {
            return Ok(L2Read::Missing);
        }
        let slot = Slot {
            value,
            epoch: self.barrier_epoch.load(Ordering::Relaxed),
            meta,
            bytes,
        };
        if now < slot.meta.fresh_until {
            Ok(L2Read::Fresh(slot))
        } else {
            Ok(L2Read::Stale(slot))
        }
    }
}

/// Keeps the cache off an L2 that keeps failing: opens after three failures in a row, lets
/// one probe through per open period (1 s, doubling up to 30 s), closes on a success.
///
/// It is not a [`celeriac_core::breaker`] circuit breaker, and on purpose: those are named, shared
/// through a store and configured per task, while this one guards the store itself (it
/// cannot keep its state in the L2 it guards), belongs to one cache instance and has nothing
/// to configure. It is timed by the monotonic clock ([`Instant`]), not by the cache's clock:
/// its open periods are a local backoff, so a fleet clock that moves (its offset to the store
/// is measured again) or a test clock that stands still must neither stretch nor shorten them.
#[derive(Debug, Default)]
pub(super) struct L2Guard {
    state: Mutex<GuardState>,
}

#[derive(Debug, Default)]
struct GuardState {
    failures: u32,
    open_until: Option<Instant>,
    open_for: Duration,
}

/// Failures in a row that open the guard.
const OPEN_AFTER: u32 = 3;

impl L2Guard {
    /// Whether a call may go to the L2 at `now`.
    pub(super) fn allows(&self, now: Instant) -> bool {
        self.state
            .lock()
            .map(|s| s.open_until.is_none_or(|u| now >= u))
            .unwrap_or(true)
    }

    /// Records a success; true when this closed an open guard.
    pub(super) fn success(&self) -> bool {
        let Ok(mut s) = self.state.lock() else {
            return false;
        };
        let was_open = s.open_until.is_some();
        *s = GuardState::default();
        was_open
    }

    /// Records a failure; true when this opened the guard.
    pub(super) fn failure(&self, now: Instant) -> bool {
        let Ok(mut s) = self.state.lock() else {
            return false;
        };
        s.failures += 1;
        if s.failures < OPEN_AFTER {
            return false;
        }
        let was_open = s.open_until.is_some();
        s.open_for = if was_open {
            (s.open_for * 2).min(Duration::from_secs(30))
        } else {
            Duration::from_secs(1)
        };
        s.open_until = Some(now + s.open_for);
        !was_open
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_guard_opens_after_failures_and_closes_on_success() {
        let b = L2Guard::default();
        let t = Instant::now();
        assert!(!b.failure(t) && !b.failure(t));
        assert!(b.failure(t), "the third failure opens it");
        assert!(!b.allows(t));
        assert!(
            b.allows(t + Duration::from_millis(1001)),
            "a probe after the open period"
        );
        assert!(
            !b.failure(t + Duration::from_millis(1001)),
            "still open, now for longer"
        );
        assert!(!b.allows(t + Duration::from_millis(2500)));
        assert!(b.success(), "a success closes it");
        assert!(b.allows(t));
    }
}
