//! [`WorkflowStore`] on SQLite: joins and workflow records, run on the writer thread like
//! every other operation.
//!
//! A join is a header row (`celeriac_joins`: total, how many distinct indexes brought an
//! output, the first failure, `keep_until`) and one row per member output
//! (`celeriac_join_members`). An arrival inserts its member row with `INSERT OR IGNORE` and
//! bumps the count only when the row is new, so detecting completion is one comparison; the
//! outputs are read (in index order, straight off the primary key) only when it is complete.
//! Records whose `keep_until` passed are deleted by [`sweep`] (called from `reap`) and treated
//! as gone when an arrival meets one.

use crate::SqliteBackend;
use celeriac_core::backend::{
    JoinArrival, JoinInput, JoinStatus, WorkflowEnd, WorkflowRecord, WorkflowState, WorkflowStore,
};
use celeriac_core::clock::{duration_ms, UnixMs};
use celeriac_core::error::{Error, Result};
use celeriac_core::job::JobId;
use rusqlite::{params, Connection, OptionalExtension, Row};
use std::time::Duration;

/// Rows of each table one sweep deletes at most.
const SWEEP_BATCH: i64 = 1000;

fn conv<E: std::error::Error + Send + Sync + 'static>(e: E) -> rusqlite::Error {
    rusqlite::Error::ToSqlConversionFailure(Box::new(e))
}

/// Records one arrival and answers with the join's state after it.
fn join_arrive(conn: &Connection, a: &JoinArrival, now: UnixMs) -> rusqlite::Result<JoinStatus> {
    let id = &a.join.as_bytes()[..];
    let keep_until = now.saturating_add(duration_ms(a.ttl));
    let kept: Option<i64> = conn
        .prepare_cached("SELECT keep_until FROM celeriac_joins WHERE id = ?1")?
        .query_row([id], |r| r.get(0))
        .optional()?;
    if kept.is_some_and(|k| k <= now) {
        // Its retention ran out before a sweep came by: it is gone, this arrival starts anew.
        delete_join(conn, id)?;
    }
    conn.prepare_cached(
        "INSERT INTO celeriac_joins (id, total, arrived, failure, keep_until) \
         VALUES (?1, ?2, 0, NULL, ?3) ON CONFLICT (id) DO UPDATE SET keep_until = ?3",
    )?
    .execute(params![id, a.total, keep_until])?;
    match &a.input {
        JoinInput::Output(output) => {
            let new = conn
                .prepare_cached(
                    "INSERT OR IGNORE INTO celeriac_join_members (join_id, idx, output) \
                     VALUES (?1, ?2, ?3)",
                )?
                .execute(params![id, a.index, output])?;
            if new == 1 {
                conn.prepare_cached(
                    "UPDATE celeriac_joins SET arrived = arrived + 1 WHERE id = ?1",
                )?
                .execute([id])?;
            }
        }
        JoinInput::Failed(message) => {
            // The first input of an index stays: a failure of a member whose output is already
            // recorded (a redelivery that failed) changes nothing.
            let had_output: bool = conn
                .prepare_cached(
                    "SELECT EXISTS (SELECT 1 FROM celeriac_join_members \
                     WHERE join_id = ?1 AND idx = ?2)",
                )?
                .query_row(params![id, a.index], |r| r.get(0))?;
            if !had_output {
                conn.prepare_cached(
                    "UPDATE celeriac_joins SET failure = COALESCE(failure, ?2) WHERE id = ?1",
                )?
                .execute(params![id, message])?;
            }
        }
    }
    let (total, arrived, failure): (u32, u32, Option<String>) = conn
        .prepare_cached("SELECT total, arrived, failure FROM celeriac_joins WHERE id = ?1")?
        .query_row([id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
    if let Some(message) = failure {
        return Ok(JoinStatus::Failed(message));
    }
    if arrived < total {
        return Ok(JoinStatus::Waiting { arrived });
    }
    let outputs: Vec<Vec<u8>> = conn
        .prepare_cached(
            "SELECT output FROM celeriac_join_members WHERE join_id = ?1 AND idx < ?2 \
             ORDER BY idx",
        )?
        .query_map(params![id, total], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    if outputs.len() != total as usize {
        return Err(conv(Error::Codec(format!(
            "join {} counts {arrived} of {total} members but holds {} outputs below {total}",
            a.join,
            outputs.len()
        ))));
    }
    Ok(JoinStatus::Complete(outputs))
}

fn delete_join(conn: &Connection, id: &[u8]) -> rusqlite::Result<()> {
    conn.prepare_cached("DELETE FROM celeriac_join_members WHERE join_id = ?1")?
        .execute([id])?;
    conn.prepare_cached("DELETE FROM celeriac_joins WHERE id = ?1")?
        .execute([id])?;
    Ok(())
}

/// Deletes joins and finished workflow records whose retention ran out; bounded work per
/// call (a join with more members than a batch loses them over several calls, its header
/// last). Returns how many joins and workflow records were deleted.
pub(crate) fn sweep(conn: &Connection, now: UnixMs) -> rusqlite::Result<u64> {
    conn.prepare_cached(
        "DELETE FROM celeriac_join_members WHERE rowid IN (SELECT m.rowid \
         FROM celeriac_joins j JOIN celeriac_join_members m ON m.join_id = j.id \
         WHERE j.keep_until <= ?1 LIMIT ?2)",
    )?
    .execute(params![now, SWEEP_BATCH])?;
    let joins = conn
        .prepare_cached(
            "DELETE FROM celeriac_joins WHERE id IN (SELECT j.id FROM celeriac_joins j \
             WHERE j.keep_until <= ?1 AND NOT EXISTS \
             (SELECT 1 FROM celeriac_join_members m WHERE m.join_id = j.id) LIMIT ?2)",
        )?
        .execute(params![now, SWEEP_BATCH])?;
    let workflows = conn
        .prepare_cached(
            "DELETE FROM celeriac_workflows WHERE id IN (SELECT id FROM celeriac_workflows \
             WHERE keep_until <= ?1 LIMIT ?2)",
        )?
        .execute(params![now, SWEEP_BATCH])?;
    Ok((joins + workflows) as u64)
}

fn workflow_start(conn: &Connection, r: &WorkflowRecord) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT OR IGNORE INTO celeriac_workflows \
         (id, name, state, result, error, created_at, finished_at, ttl_ms, keep_until) \
         VALUES (?1, ?2, ?3, NULL, NULL, ?4, NULL, ?5, NULL)",
    )?
    .execute(params![
        &r.id.as_bytes()[..],
        r.name,
        WorkflowState::Running.code(),
        r.created_at,
        duration_ms(r.ttl),
    ])?;
    Ok(())
}

fn workflow_finish(
    conn: &Connection,
    id: JobId,
    end: &WorkflowEnd,
    now: UnixMs,
) -> rusqlite::Result<bool> {
    let (state, result, error) = match end {
        WorkflowEnd::Succeeded(output) => (WorkflowState::Succeeded, Some(output), None),
        WorkflowEnd::Failed(message) => (WorkflowState::Failed, None, Some(message)),
    };
    let n = conn
        .prepare_cached(
            "UPDATE celeriac_workflows SET state = ?2, result = ?3, error = ?4, \
             finished_at = ?5, keep_until = ?5 + ttl_ms WHERE id = ?1 AND state = ?6",
        )?
        .execute(params![
            &id.as_bytes()[..],
            state.code(),
            result,
            error,
            now,
            WorkflowState::Running.code(),
        ])?;
    Ok(n == 1)
}

fn row_to_record(row: &Row<'_>) -> rusqlite::Result<WorkflowRecord> {
    let id: Vec<u8> = row.get(0)?;
    let ttl: i64 = row.get(7)?;
    Ok(WorkflowRecord {
        id: JobId::from_slice(&id).map_err(conv)?,
        name: row.get(1)?,
        state: WorkflowState::from_code(row.get(2)?).map_err(conv)?,
        result: row.get(3)?,
        error: row.get(4)?,
        created_at: row.get(5)?,
        finished_at: row.get(6)?,
        ttl: Duration::from_millis(ttl.max(0) as u64),
    })
}

fn workflow_get(conn: &Connection, id: JobId) -> rusqlite::Result<Option<WorkflowRecord>> {
    conn.prepare_cached(
        "SELECT id, name, state, result, error, created_at, finished_at, ttl_ms \
         FROM celeriac_workflows WHERE id = ?1",
    )?
    .query_row([&id.as_bytes()[..]], row_to_record)
    .optional()
}

impl WorkflowStore for SqliteBackend {
    async fn join_arrive(&self, arrival: JoinArrival, now: UnixMs) -> Result<JoinStatus> {
        self.inner.config.role.allow_queues("join a workflow")?;
        arrival.validate()?;
        self.inner
            .writer
            .call(move |c| join_arrive(c, &arrival, now))
            .await
    }

    async fn workflow_start(&self, record: WorkflowRecord) -> Result<()> {
        self.inner.config.role.allow_queues("start a workflow")?;
        self.inner
            .writer
            .call(move |c| workflow_start(c, &record))
            .await
    }

    async fn workflow_finish(&self, id: JobId, end: WorkflowEnd, now: UnixMs) -> Result<bool> {
        let applied = self
            .inner
            .writer
            .call(move |c| workflow_finish(c, id, &end, now))
            .await?;
        if applied {
            self.wake_waiters();
        }
        Ok(applied)
    }

    async fn workflow_get(&self, id: JobId) -> Result<Option<WorkflowRecord>> {
        self.inner.writer.call(move |c| workflow_get(c, id)).await
    }

    async fn workflow_wait(&self, id: JobId, timeout: Duration) -> Result<WorkflowRecord> {
        self.wait_until_done(
            id,
            timeout,
            || self.workflow_get(id),
            |r| r.state != WorkflowState::Running,
        )
        .await
    }
}
