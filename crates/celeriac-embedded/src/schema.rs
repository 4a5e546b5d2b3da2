//! The schema (`schema.sql`) and the migrations of databases written by older versions.

use rusqlite::Connection;

/// The schema version this crate writes (`PRAGMA user_version`).
pub(crate) const SCHEMA_VERSION: i64 = 9;

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
    // celeriac_breaker_probes), version 7 the process registry (celeriac_processes) and the
    // counts per queue and state (celeriac_queue_counts, see `after_setup`) and the events
    // (celeriac_events), version 8 the history (celeriac_history), version 9 the column
    // celeriac_kv.written (see `before_setup`), its index, the byte total's triggers and the
    // key-value figures in celeriac_meta; the schema creates missing tables, indexes and
    // triggers.
    Ok(())
}

/// Runs before the schema, in the same transaction: gives a `celeriac_kv` written before
/// version 9 its `written` column (the order a cap evicts in; the rows' insertion order
/// stands in for it), which the schema's index needs. Idempotent: it looks at the table, not
/// at the version, so two processes upgrading one file at once agree.
pub(crate) fn before_setup(conn: &Connection) -> rusqlite::Result<()> {
    let columns: Vec<String> = conn
        .prepare("SELECT name FROM pragma_table_info('celeriac_kv')")?
        .query_map([], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    if !columns.is_empty() && !columns.iter().any(|c| c == "written") {
        conn.execute_batch(
            "ALTER TABLE celeriac_kv ADD COLUMN written INTEGER NOT NULL DEFAULT 0;
             UPDATE celeriac_kv SET written = rowid;",
        )?;
    }
    Ok(())
}

/// Runs once the schema is in place, in the same transaction: fills the counts per queue and
/// state of a database written before its triggers kept them (version 7), and the key-value
/// byte total and write sequence of one written before version 9. Idempotent, so two
/// processes upgrading one file at once agree.
pub(crate) fn after_setup(conn: &Connection, from: i64) -> rusqlite::Result<()> {
    if from < 7 {
        conn.execute_batch(
            "DELETE FROM celeriac_queue_counts;
             INSERT INTO celeriac_queue_counts (queue, state, n)
                 SELECT queue, state, COUNT(*) FROM celeriac_jobs GROUP BY queue, state;",
        )?;
    }
    if from < 9 {
        conn.execute_batch(
            "UPDATE celeriac_meta SET value = (SELECT COALESCE(SUM(
                 COALESCE(length(CAST(key AS BLOB)), 0) + COALESCE(length(CAST(value AS BLOB)), 0)
             ), 0) FROM celeriac_kv) WHERE key = 'kv_bytes';
             UPDATE celeriac_meta SET value = max(value, (SELECT COALESCE(MAX(written), 0)
                 FROM celeriac_kv)) WHERE key = 'kv_written';",
        )?;
    }
    Ok(())
}
