//! What a store is opened for: everything, or caching alone (`?role=cache` in its URL).

use crate::error::{Error, Result};

/// What a store is opened for (`?role=` in its URL).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StoreRole {
    /// Queues, results, schedules, caches: the store must keep every key (`?role=all`, the
    /// default).
    #[default]
    All,
    /// Caches, rate limits and circuit breakers only (`?role=cache`): the store may evict keys
    /// when full, so it refuses queues, whose evicted keys would be lost jobs.
    Cache,
}

impl StoreRole {
    /// Reads the `role` URL parameter (`all` or `cache`).
    ///
    /// # Errors
    /// [`Error::Config`] on `url: role` for any other value.
    pub fn parse(value: &str) -> Result<Self> {
        match value {
            "all" | "queues" => Ok(StoreRole::All),
            "cache" => Ok(StoreRole::Cache),
            other => Err(Error::config(
                "url: role",
                format!("`{other}` is not a role: `all` (the default: queues and caches) or `cache` (caches, rate limits and breakers only, on a store that may evict)"),
            )),
        }
    }

    /// The `Err` a store opened as `self` gives to a queue operation (`what`: "enqueue",
    /// "claim"...), or `Ok` if it holds queues.
    ///
    /// # Errors
    /// [`Error::Config`] on `url: role` for a cache-only store.
    pub fn allow_queues(self, what: &str) -> Result<()> {
        match self {
            StoreRole::All => Ok(()),
            StoreRole::Cache => Err(Error::config(
                "url: role",
                format!(
                    "cannot {what}: this store was opened with ?role=cache, for caches, rate \
                     limits and breakers only; it may evict keys when full, and an evicted job is \
                     a lost job. Run queues on a store URL without role=cache (on Redis, one \
                     with maxmemory-policy noeviction and persistence)"
                ),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::StoreRole;

    #[test]
    fn roles_parse_and_a_cache_store_refuses_queues() {
        assert_eq!(StoreRole::parse("cache").ok(), Some(StoreRole::Cache));
        assert_eq!(StoreRole::parse("all").ok(), Some(StoreRole::All));
        let bad = StoreRole::parse("queue-ish").expect_err("unknown role");
        assert!(bad.to_string().contains("url: role"), "{bad}");
        assert!(StoreRole::All.allow_queues("enqueue").is_ok());
        let refused = StoreRole::Cache
            .allow_queues("enqueue")
            .expect_err("a cache store refuses queues");
        assert!(refused.to_string().contains("role=cache"), "{refused}");
    }
}
