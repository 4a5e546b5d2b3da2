//! [`StoreHealth`]: whether the store answers, and what it says of its own resources, for
//! readiness checks and the metrics an operator watches (memory near its maximum, keys
//! evicted, a growing file).

use crate::error::Result;
use serde::{Deserialize, Serialize};
use std::future::Future;
use std::time::Duration;

/// What a store says of its resources; each figure is `None` where the store has no such
/// thing or does not tell.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreFigures {
    /// Memory in use (Redis `used_memory`; a capped SQLite cache file: its keys' and values'
    /// bytes), in bytes.
    pub memory_used_bytes: Option<u64>,
    /// The memory limit (Redis `maxmemory`, `Some(0)` for none; a SQLite cache file's
    /// `max_bytes`), in bytes.
    pub memory_max_bytes: Option<u64>,
    /// What the store does when memory runs out (Redis `maxmemory_policy`; a SQLite cache
    /// file `oldest-written`).
    pub eviction_policy: Option<String>,
    /// Keys evicted since the store started (Redis `evicted_keys`; a SQLite cache file: since
    /// it was created).
    pub evicted_keys: Option<u64>,
    /// The database file's size (SQLite), in bytes.
    pub file_bytes: Option<u64>,
    /// The write-ahead log's size (SQLite), in bytes.
    pub wal_bytes: Option<u64>,
}

/// The store's health.
pub trait StoreHealth: Send + Sync {
    /// A round trip to the store that touches no data (Redis `PING`; SQLite a query through
    /// the writer, so a stuck writer shows), and how long it took.
    fn ping(&self) -> impl Future<Output = Result<Duration>> + Send;

    /// The store's figures about itself.
    fn store_figures(&self) -> impl Future<Output = Result<StoreFigures>> + Send;
}
