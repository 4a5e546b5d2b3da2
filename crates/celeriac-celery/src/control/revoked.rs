//! [`Revoked`]: the ids of revoked tasks, bounded and expiring like Python's `LimitedSet`.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Celery's `REVOKES_MAX`: how many ids a worker keeps.
pub const REVOKES_MAX: usize = 50_000;
/// Celery's `REVOKE_EXPIRES`: how long an id is kept (3 hours).
pub const REVOKE_EXPIRES: Duration = Duration::from_secs(10_800);

#[derive(Debug, Default)]
struct Inner {
    /// id → when it was (last) added.
    added: HashMap<String, Instant>,
    /// (id, added) oldest first; stale entries (re-added ids) are skipped when popped.
    order: VecDeque<(String, Instant)>,
}

/// Revoked task ids, filled by `revoke` control messages; a worker checks it before running
/// a task. Bounded (the oldest ids go first) and expiring. Cheap to clone (clones share the
/// set); thread-safe.
#[derive(Debug, Clone)]
pub struct Revoked {
    inner: Arc<Mutex<Inner>>,
    max_len: usize,
    expires: Duration,
}

impl Default for Revoked {
    fn default() -> Self {
        Revoked::new(REVOKES_MAX, REVOKE_EXPIRES)
    }
}

impl Revoked {
    /// A set keeping at most `max_len` ids (at least 1), each for `expires`.
    pub fn new(max_len: usize, expires: Duration) -> Self {
        Revoked {
            inner: Arc::default(),
            max_len: max_len.max(1),
            expires,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // The set stays consistent at every step: a panic elsewhere cannot corrupt it.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Adds `id` (again: its expiry restarts).
    pub fn insert(&self, id: &str) {
        self.insert_at(id, Instant::now());
    }

    /// Adds `id` as of `now`.
    pub fn insert_at(&self, id: &str, now: Instant) {
        let mut inner = self.lock();
        inner.added.insert(id.to_owned(), now);
        inner.order.push_back((id.to_owned(), now));
        self.purge_locked(&mut inner, now);
    }

    /// Whether `id` is revoked (and not expired).
    pub fn contains(&self, id: &str) -> bool {
        self.contains_at(id, Instant::now())
    }

    /// Whether `id` is revoked as of `now`.
    pub fn contains_at(&self, id: &str, now: Instant) -> bool {
        let inner = self.lock();
        inner
            .added
            .get(id)
            .is_some_and(|t| now.saturating_duration_since(*t) < self.expires)
    }

    /// The revoked ids, oldest first (expired ones dropped).
    pub fn ids(&self) -> Vec<String> {
        self.ids_at(Instant::now())
    }

    /// The revoked ids as of `now`, oldest first.
    pub fn ids_at(&self, now: Instant) -> Vec<String> {
        let mut inner = self.lock();
        self.purge_locked(&mut inner, now);
        inner
            .order
            .iter()
            .filter(|(id, t)| inner.added.get(id) == Some(t))
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// How many ids are kept.
    pub fn len(&self) -> usize {
        self.lock().added.len()
    }

    /// Whether no id is kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn purge_locked(&self, inner: &mut Inner, now: Instant) {
        while let Some((id, t)) = inner.order.front().cloned() {
            let current = inner.added.get(&id) == Some(&t);
            let expired = now.saturating_duration_since(t) >= self.expires;
            if !current {
                inner.order.pop_front();
            } else if expired || inner.added.len() > self.max_len {
                inner.order.pop_front();
                inner.added.remove(&id);
            } else {
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_oldest_first() {
        let r = Revoked::new(2, Duration::from_secs(60));
        let t = Instant::now();
        r.insert_at("a", t);
        r.insert_at("b", t);
        r.insert_at("a", t + Duration::from_secs(1)); // re-added: now the newest
        r.insert_at("c", t + Duration::from_secs(2)); // evicts the oldest: b
        assert_eq!(r.ids_at(t + Duration::from_secs(2)), vec!["a", "c"]);
        assert!(!r.contains_at("b", t + Duration::from_secs(2)));
        assert_eq!(r.len(), 2);
    }

    #[test]
    fn ids_expire() {
        let r = Revoked::new(10, Duration::from_secs(5));
        let t = Instant::now();
        r.insert_at("a", t);
        r.insert_at("b", t + Duration::from_secs(3));
        assert!(r.contains_at("a", t + Duration::from_secs(4)));
        assert!(!r.contains_at("a", t + Duration::from_secs(5)));
        assert_eq!(r.ids_at(t + Duration::from_secs(6)), vec!["b"]);
        assert_eq!(r.len(), 1);
    }
}
