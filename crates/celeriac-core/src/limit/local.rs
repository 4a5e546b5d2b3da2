//! [`LocalLimiter`]: the limiter API in process memory.

use super::maths::{check_one, decide, Decision, LimitState};
use super::quota::{Algorithm, Quota};
use super::MAX_QUOTAS;
use crate::backend::RateLimitStore;
use crate::clock::{duration_ms, UnixMs};
use crate::error::Result;
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// The shards keys are spread over, so threads deciding for different keys rarely meet.
const SHARDS: usize = 64;

/// A shard sweeps expired keys when it grows past this many (and then past twice what it
/// kept), so memory follows the keys in use.
const SWEEP_AT: usize = 1024;

/// What a quota's state means, without the name: two quotas alike share state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct QuotaKey {
    algorithm: Algorithm,
    limit: u32,
    window_ms: i64,
    burst: u32,
}

impl QuotaKey {
    fn of(q: &Quota) -> Self {
        QuotaKey {
            algorithm: q.algorithm(),
            limit: q.limit(),
            window_ms: q.window_ms(),
            burst: if q.algorithm() == Algorithm::Gcra {
                q.burst_size()
            } else {
                0
            },
        }
    }
}

/// One key's state. The first GCRA quota a key is seen with keeps its TAT in an atomic, so a
/// single-quota GCRA decision is one compare-and-swap; other quotas live under a mutex.
struct Entry {
    gcra: Option<QuotaKey>,
    tat: AtomicI64,
    others: Mutex<Vec<(QuotaKey, LimitState)>>,
    /// When nothing of this key matters any more (ms).
    expires_at: AtomicI64,
}

impl Entry {
    fn new(first: &Quota) -> Self {
        Entry {
            gcra: (first.algorithm() == Algorithm::Gcra).then(|| QuotaKey::of(first)),
            tat: AtomicI64::new(0),
            others: Mutex::new(Vec::new()),
            expires_at: AtomicI64::new(0),
        }
    }

    fn touch(&self, until: i64) {
        self.expires_at.fetch_max(until, Ordering::Relaxed);
    }

    /// One GCRA quota on the atomic TAT: retried until the swap holds.
    fn decide_fast(&self, quota: &Quota, cost: u32, now: UnixMs) -> Decision {
        let mut current = self.tat.load(Ordering::Acquire);
        loop {
            let step = check_one(
                quota,
                LimitState {
                    a: current,
                    b: 0,
                    c: 0,
                },
                cost,
                now,
            );
            if !step.decision.allowed || step.state.a == current {
                return step.decision;
            }
            match self.tat.compare_exchange_weak(
                current,
                step.state.a,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => {
                    self.touch(now.saturating_add(step.ttl_ms));
                    return step.decision;
                }
                Err(seen) => current = seen,
            }
        }
    }

    fn decide_general(&self, quotas: &[Quota], cost: u32, now: UnixMs) -> Decision {
        // A poisoned lock only means another thread panicked mid-update of plain integers.
        let mut others = self.others.lock().unwrap_or_else(|p| p.into_inner());
        let mut keys = [None::<QuotaKey>; MAX_QUOTAS];
        for (k, q) in keys.iter_mut().zip(quotas) {
            *k = Some(QuotaKey::of(q));
        }
        loop {
            let tat = self.tat.load(Ordering::Acquire);
            let mut states = [LimitState::default(); MAX_QUOTAS];
            for (s, k) in states.iter_mut().zip(keys.iter().flatten()) {
                *s = if Some(*k) == self.gcra {
                    LimitState { a: tat, b: 0, c: 0 }
                } else {
                    others
                        .iter()
                        .find(|(o, _)| o == k)
                        .map(|(_, s)| *s)
                        .unwrap_or_default()
                };
            }
            let n = quotas.len();
            let mut longest = 0i64;
            let decision = decide(quotas, &mut states[..n], cost, now, |_, step| {
                longest = longest.max(step.ttl_ms)
            });
            if !decision.allowed {
                return decision;
            }
            let mut new_tat = tat;
            for (s, k) in states[..n].iter().zip(keys.iter().flatten()) {
                if Some(*k) == self.gcra {
                    new_tat = s.a;
                }
            }
            if new_tat != tat
                && self
                    .tat
                    .compare_exchange(tat, new_tat, Ordering::AcqRel, Ordering::Acquire)
                    .is_err()
            {
                // A single-quota decision moved the TAT meanwhile: decide again.
                continue;
            }
            for (s, k) in states[..n].iter().zip(keys.iter().flatten()) {
                if Some(*k) == self.gcra {
                    continue;
                }
                match others.iter_mut().find(|(o, _)| o == k) {
                    Some(slot) => slot.1 = *s,
                    None => others.push((*k, *s)),
                }
            }
            self.touch(now.saturating_add(longest));
            return decision;
        }
    }
}

struct Shard {
    map: FastMap<Box<str>, Entry>,
    sweep_at: usize,
}

/// The limiter API in process memory: the same maths and decisions as the stores, for one
/// process (a fallback while a store is down, or limits that need not be shared).
///
/// Keys are spread over 64 shards behind read-write locks; a decision for a known key takes a
/// shared lock, and for a single GCRA quota is one compare-and-swap, without allocating. Keys
/// whose state no longer matters are swept as shards grow.
pub struct LocalLimiter {
    shards: Box<[RwLock<Shard>]>,
    hasher: foldhash::fast::RandomState,
    permits: Mutex<HashMap<String, Vec<(String, i64)>>>,
}

impl std::fmt::Debug for LocalLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalLimiter")
            .field("keys", &self.len())
            .finish_non_exhaustive()
    }
}

impl Default for LocalLimiter {
    fn default() -> Self {
        Self::new()
    }
}

impl LocalLimiter {
    /// An empty limiter.
    pub fn new() -> Self {
        LocalLimiter {
            shards: (0..SHARDS)
                .map(|_| {
                    RwLock::new(Shard {
                        map: FastMap::default(),
                        sweep_at: SWEEP_AT,
                    })
                })
                .collect(),
            hasher: foldhash::fast::RandomState::default(),
            permits: Mutex::new(HashMap::new()),
        }
    }

    /// How many keys hold state (some may have expired and not been swept yet).
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.read().map(|s| s.map.len()).unwrap_or(0))
            .sum()
    }

    /// True when no key holds state.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Checks `quotas` for `key` at `now` and charges `cost` to all of them if all allow it.
    ///
    /// # Errors
    /// [`crate::Error::Config`] for a bad key, quota or cost (see
    /// [`super::check_request`]).
    pub fn check(&self, key: &str, quotas: &[Quota], cost: u32, now: UnixMs) -> Result<Decision> {
        super::check_request(key, quotas, cost)?;
        let Some(first) = quotas.first() else {
            return Ok(Decision::unlimited());
        };
        let shard = &self.shards[(self.hasher.hash_one(key) as usize) % SHARDS];
        {
            let guard = shard.read().unwrap_or_else(|p| p.into_inner());
            if let Some(entry) = guard.map.get(key) {
                return Ok(Self::decide(entry, quotas, cost, now));
            }
        }
        let mut guard = shard.write().unwrap_or_else(|p| p.into_inner());
        if guard.map.len() >= guard.sweep_at {
            guard
                .map
                .retain(|_, e| e.expires_at.load(Ordering::Relaxed) > now);
            guard.sweep_at = (guard.map.len() * 2).max(SWEEP_AT);
        }
        let entry = guard
            .map
            .entry(Box::from(key))
            .or_insert_with(|| Entry::new(first));
        Ok(Self::decide(entry, quotas, cost, now))
    }

    fn decide(entry: &Entry, quotas: &[Quota], cost: u32, now: UnixMs) -> Decision {
        match quotas {
            [q] if entry.gcra == Some(QuotaKey::of(q)) => entry.decide_fast(q, cost, now),
            _ => entry.decide_general(quotas, cost, now),
        }
    }

    /// Takes (or renews) a concurrency permit of `key` for `holder` until `now + lease`.
    ///
    /// # Errors
    /// [`crate::Error::Config`] for a bad key, holder, limit or lease.
    pub fn acquire(
        &self,
        key: &str,
        holder: &str,
        max: u32,
        lease: Duration,
        now: UnixMs,
    ) -> Result<Decision> {
        super::check_permit(key, holder, max, lease)?;
        let mut permits = self.permits.lock().unwrap_or_else(|p| p.into_inner());
        let held = permits.entry(key.to_string()).or_default();
        let until = now.saturating_add(duration_ms(lease));
        let d = super::acquire_permit(held, holder, max, until, now);
        if held.is_empty() {
            permits.remove(key);
        }
        Ok(d)
    }

    /// Gives `holder`'s permit of `key` back; returns whether it held one (a lease that ran
    /// out by `now` is not held).
    ///
    /// # Errors
    /// [`crate::Error::Config`] for a bad key or holder.
    pub fn release(&self, key: &str, holder: &str, now: UnixMs) -> Result<bool> {
        super::check_release(key, holder)?;
        let mut permits = self.permits.lock().unwrap_or_else(|p| p.into_inner());
        let Some(held) = permits.get_mut(key) else {
            return Ok(false);
        };
        let before = held.iter().any(|(h, u)| h == holder && *u > now);
        held.retain(|(h, u)| h != holder && *u > now);
        if held.is_empty() {
            permits.remove(key);
        }
        Ok(before)
    }
}

impl crate::clock::StoreClock for LocalLimiter {
    /// The host's wall clock: a local limiter's state lives in this process alone.
    fn fleet_clock(&self) -> Arc<crate::clock::FleetClock> {
        Arc::new(crate::clock::FleetClock::host())
    }
}

impl RateLimitStore for LocalLimiter {
    async fn check_limits(
        &self,
        key: &str,
        quotas: &[Quota],
        cost: u32,
        now: UnixMs,
    ) -> Result<Decision> {
        self.check(key, quotas, cost, now)
    }

    async fn acquire_permit(
        &self,
        key: &str,
        holder: &str,
        max: u32,
        lease: Duration,
        now: UnixMs,
    ) -> Result<Decision> {
        self.acquire(key, holder, max, lease, now)
    }

    async fn release_permit(&self, key: &str, holder: &str, now: UnixMs) -> Result<bool> {
        self.release(key, holder, now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: i64 = 1_700_000_000_000;

    #[test]
    fn fast_and_general_paths_share_the_gcra_state() {
        let l = LocalLimiter::new();
        let minute = Quota::per_minute(2);
        let both = [minute.clone(), Quota::per_hour(100).name("hourly")];
        assert!(l.check("k", &both, 1, T0).expect("ok").allowed);
        assert!(
            l.check("k", std::slice::from_ref(&minute), 1, T0 + 30_000)
                .expect("ok")
                .allowed
        );
        let d = l.check("k", &both, 1, T0 + 30_001).expect("ok");
        assert!(!d.allowed, "the minute quota is spent by both paths");
        assert_eq!(d.retry_after, Some(Duration::from_millis(29_999)));
    }

    #[test]
    fn expired_keys_are_swept_as_shards_grow() {
        let l = LocalLimiter::new();
        let q = [Quota::per_second(1)];
        for i in 0..(SWEEP_AT * SHARDS * 2) {
            l.check(&format!("k{i}"), &q, 1, T0 + i as i64 * 10)
                .expect("ok");
        }
        assert!(l.len() < SWEEP_AT * SHARDS * 2, "{} keys kept", l.len());
    }

    #[test]
    fn permits_expire_and_release() {
        let l = LocalLimiter::new();
        let lease = Duration::from_secs(10);
        assert!(l.acquire("p", "a", 1, lease, T0).expect("ok").allowed);
        let d = l.acquire("p", "b", 1, lease, T0 + 1).expect("ok");
        assert!(!d.allowed);
        assert_eq!(d.retry_after, Some(Duration::from_millis(9_999)));
        assert!(
            l.acquire("p", "b", 1, lease, T0 + 10_000)
                .expect("ok")
                .allowed
        );
        assert!(!l.release("p", "a", T0 + 10_000).expect("ok"));
        assert!(l.release("p", "b", T0 + 10_001).expect("ok"));
        assert!(l.check("", &[Quota::per_second(1)], 1, T0).is_err());
        assert!(l.acquire("p", "a", 0, lease, T0).is_err());
    }
}
