//! The schema (`schema.sql`) and the migrations of databases written by older versions.

use rusqlite::Connection;

/// The schema version this crate writes (`PRAGMA user_version`).
pub(crate) const SCHEMA_VERSION: i64 = 7;

/// Brings a database written by an older version up to [`SCHEMA_VERSION`].
pub(crate) fn migrate(conn: &Connection, from: i64) -> rusqlite::Result<()> {
    if from == 1 {
        conn.execute_batch(
            "ALTER TABLE celeriac_jobs ADD COLUMN cancel_requested INTEGER NOT NULL DEFAULT 0",
        )?;
    }
    // Version 3 added the celeriac_unique table, version 4 the join and workflow tables,
    // version 5 the key-value tables (celeriac_kv, celeriac_kv_locks, celeriac_kv_events),
    // version 6 the rate limiter tables (celeriac_limits, celeriac_limit_permits) and the
    // shared circuit-breaker tables (celeriac_breakers, celeriac_breaker_signals,
    // celeriac_breaker_probes), version 7 the process registry (celeriac_processes); the schema
    // creates missing tables.
    Ok(())
}
