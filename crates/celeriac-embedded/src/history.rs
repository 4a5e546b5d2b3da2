//! [`History`] on SQLite: one row per span (minute or hour), bucket, queue and task in
//! `celeriac_history`. A record adds each entry to its minute and its hour in the writer's
//! transaction, then drops the buckets no longer kept; jobs enqueued are added by the enqueue
//! itself (see `counts.rs`).

use crate::{decode, SqliteBackend};
use celeriac_core::backend::{Counts, History, HistoryEntry, HistoryQuery, Resolution};
use celeriac_core::error::Result;
use celeriac_core::sketch::Sketch;
use celeriac_core::UnixMs;
use rusqlite::{params, Connection, OptionalExtension};

const RESOLUTIONS: [Resolution; 2] = [Resolution::Minute, Resolution::Hour];

/// Adds `counts` and the sketches to the bucket of `res` holding `at`, if it is still kept at
/// `now`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn add(
    conn: &Connection,
    res: Resolution,
    at: UnixMs,
    now: UnixMs,
    queue: &str,
    task: &str,
    counts: &Counts,
    run_ms: &Sketch,
    wait_ms: &Sketch,
) -> rusqlite::Result<()> {
    let start = res.start_of(at);
    if !res.is_kept(start, now) {
        return Ok(());
    }
    let span = res.span_ms();
    let (run, wait) = if run_ms.count() + wait_ms.count() == 0 {
        (None, None)
    } else {
        let stored: Option<(Option<String>, Option<String>)> = conn
            .prepare_cached(
                "SELECT run_ms, wait_ms FROM celeriac_history \
                 WHERE span = ?1 AND start = ?2 AND queue = ?3 AND task = ?4",
            )?
            .query_row(params![span, start, queue, task], |r| {
                Ok((decode::text(r, 0), decode::text(r, 1)))
            })
            .optional()?;
        let (old_run, old_wait) = stored.unwrap_or_default();
        (merged(old_run, run_ms), merged(old_wait, wait_ms))
    };
    let v = counts
        .values()
        .map(|n| i64::try_from(n).unwrap_or(i64::MAX));
    conn.prepare_cached(
        "INSERT INTO celeriac_history (span, start, queue, task, enqueued, started, succeeded, \
         retried, failed, dead, cancelled, run_ms, wait_ms) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13) \
         ON CONFLICT (span, start, queue, task) DO UPDATE SET \
         enqueued = enqueued + excluded.enqueued, started = started + excluded.started, \
         succeeded = succeeded + excluded.succeeded, retried = retried + excluded.retried, \
         failed = failed + excluded.failed, dead = dead + excluded.dead, \
         cancelled = cancelled + excluded.cancelled, \
         run_ms = COALESCE(excluded.run_ms, run_ms), wait_ms = COALESCE(excluded.wait_ms, wait_ms)",
    )?
    .execute(params![
        span, start, queue, task, v[0], v[1], v[2], v[3], v[4], v[5], v[6], run, wait
    ])?;
    Ok(())
}

/// The stored sketch (JSON) with `more` added, as JSON; `None` when both are empty. A stored
/// sketch that cannot be read is replaced (and logged), so one bad row does not stop history.
fn merged(stored: Option<String>, more: &Sketch) -> Option<String> {
    let mut s = match stored.as_deref().map(serde_json::from_str::<Sketch>) {
        Some(Ok(s)) => s,
        Some(Err(e)) => {
            tracing::warn!(error = %e, "replacing a history sketch that cannot be read");
            Sketch::new()
        }
        None => Sketch::new(),
    };
    s.merge(more);
    if s.count() == 0 {
        return None;
    }
    serde_json::to_string(&s).ok()
}

/// Drops the buckets no longer kept at `now`.
fn prune(conn: &Connection, now: UnixMs) -> rusqlite::Result<()> {
    for res in RESOLUTIONS {
        conn.prepare_cached("DELETE FROM celeriac_history WHERE span = ?1 AND start < ?2")?
            .execute(params![
                res.span_ms(),
                now - res.span_ms() - res.kept_ms() + 1
            ])?;
    }
    Ok(())
}

fn sketch_of(stored: Option<String>) -> Sketch {
    stored
        .and_then(|s| serde_json::from_str(&s).ok())
        .unwrap_or_default()
}

impl History for SqliteBackend {
    async fn record(&self, entries: Vec<HistoryEntry>, now: UnixMs) -> Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        self.inner
            .writer
            .call(move |c| {
                for e in &entries {
                    for res in RESOLUTIONS {
                        add(
                            c, res, e.start, now, &e.queue, &e.task, &e.counts, &e.run_ms,
                            &e.wait_ms,
                        )?;
                    }
                }
                prune(c, now)
            })
            .await
    }

    async fn history(&self, query: HistoryQuery) -> Result<Vec<HistoryEntry>> {
        let starts = query.starts()?;
        let (Some(&first), Some(&last)) = (starts.first(), starts.last()) else {
            return Ok(Vec::new());
        };
        let span = query.resolution.span_ms();
        let rows = self
            .inner
            .reads()
            .call(move |c| {
                let mut stmt = c.prepare_cached(
                    "SELECT start, queue, task, enqueued, started, succeeded, retried, failed, \
                     dead, cancelled, run_ms, wait_ms FROM celeriac_history \
                     WHERE span = ?1 AND start >= ?2 AND start <= ?3 \
                     AND (?4 IS NULL OR queue = ?4) AND (?5 IS NULL OR task = ?5) \
                     ORDER BY start, queue, task",
                )?;
                let rows =
                    stmt.query_map(params![span, first, last, query.queue, query.task], |r| {
                        // History only summarizes: what does not read counts as nothing.
                        let mut e = HistoryEntry::new(
                            r.get(0)?,
                            decode::text(r, 1).unwrap_or_default(),
                            decode::text(r, 2).unwrap_or_default(),
                        );
                        for (i, field) in Counts::FIELDS.iter().enumerate() {
                            let n = decode::int(r, 3 + i).unwrap_or(0);
                            if let Some(c) = e.counts.get_mut(field) {
                                *c = u64::try_from(n).unwrap_or(0);
                            }
                        }
                        e.run_ms = sketch_of(decode::text(r, 10));
                        e.wait_ms = sketch_of(decode::text(r, 11));
                        Ok(e)
                    })?;
                rows.collect::<rusqlite::Result<Vec<_>>>()
            })
            .await?;
        Ok(rows)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use celeriac_core::backend::{HOUR_MS, MINUTES_KEPT_MS, MINUTE_MS};

    async fn rows(b: &SqliteBackend) -> Vec<(i64, i64)> {
        b.inner
            .writer
            .call(|c| {
                c.prepare("SELECT span, start FROM celeriac_history ORDER BY span, start")?
                    .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                    .collect()
            })
            .await
            .expect("rows")
    }

    /// A stored minute is dropped by the first record after it is no longer kept; its hour
    /// stays until its own time comes.
    #[tokio::test]
    async fn stored_buckets_are_dropped_once_no_longer_kept() {
        let b = SqliteBackend::memory().await.expect("opens");
        let t0 = 1_700_000_000_000 - 1_700_000_000_000 % HOUR_MS;
        let mut e = HistoryEntry::new(t0, "q", "t");
        e.counts.succeeded = 1;
        b.record(vec![e.clone()], t0).await.expect("record");
        assert_eq!(rows(&b).await, [(MINUTE_MS, t0), (HOUR_MS, t0)]);
        let later = t0 + MINUTE_MS + MINUTES_KEPT_MS;
        e.start = later;
        b.record(vec![e], later).await.expect("record");
        let left = rows(&b).await;
        assert!(
            !left.contains(&(MINUTE_MS, t0)),
            "the old minute is gone: {left:?}"
        );
        assert!(left.contains(&(HOUR_MS, t0)), "its hour stays: {left:?}");
        assert!(left.contains(&(MINUTE_MS, later)));
    }
}
