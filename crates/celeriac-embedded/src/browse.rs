//! Browsing a queue's jobs in one state a page at a time (keyset paging over the indexes each
//! state already has, so a page costs the same at any depth), and deleting jobs.

use crate::decode;
use crate::ops::{row_to_shown_info, COLS};
use celeriac_core::backend::{JobPage, JobQuery, SCAN_MAX};
use celeriac_core::error::{Error, Result};
use celeriac_core::job::{JobId, JobInfo, JobState};
use rusqlite::{params, Connection};

/// Where a listing stands: the last job examined, by the state's order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Cursor {
    /// Its priority (pending jobs only).
    priority: i64,
    /// Its time in the state's order.
    at: i64,
    /// Its row (insertion order), the tie-breaker.
    seq: i64,
}

impl Cursor {
    /// Where a listing resumes: after `cursor`, or at the start.
    pub(crate) fn of(cursor: Option<&str>, newest_first: bool) -> Result<Cursor> {
        match cursor {
            Some(c) => Cursor::parse(c),
            None => Ok(Cursor::start(newest_first)),
        }
    }

    fn parse(s: &str) -> Result<Cursor> {
        let bad = || Error::config("cursor", format!("`{s}` is not a cursor of this listing"));
        let mut parts = s.split(':').map(|p| p.parse::<i64>().map_err(|_| bad()));
        let cursor = Cursor {
            priority: parts.next().ok_or_else(bad)??,
            at: parts.next().ok_or_else(bad)??,
            seq: parts.next().ok_or_else(bad)??,
        };
        if parts.next().is_some() {
            return Err(bad());
        }
        Ok(cursor)
    }

    fn text(&self) -> String {
        format!("{}:{}:{}", self.priority, self.at, self.seq)
    }

    /// Before the first job, in either direction.
    fn start(newest_first: bool) -> Cursor {
        if newest_first {
            Cursor {
                priority: -1,
                at: i64::MAX,
                seq: i64::MAX,
            }
        } else {
            Cursor {
                priority: 10,
                at: i64::MIN,
                seq: i64::MIN,
            }
        }
    }
}

/// A row's time in the state's order, as the cursor holds it: SQLite orders text and blobs
/// after every number, so a row holding one is placed after them all, and paging past it
/// never comes back to the numbers.
fn place_at(v: rusqlite::types::ValueRef<'_>) -> i64 {
    use rusqlite::types::ValueRef;
    match v {
        ValueRef::Null => 0,
        ValueRef::Integer(i) => i,
        ValueRef::Real(f) => f as i64,
        ValueRef::Text(_) | ValueRef::Blob(_) => i64::MAX,
    }
}

/// A row of a listing: the job (`None` when not even its id and state read), its queue and
/// state code, and its place.
type Found = (Option<JobInfo>, String, i64, Cursor);

/// The next `window` rows after `from` in the state's order, with each one's place. Rows of
/// other queues or states may come back where the state's index spans them (active jobs, and
/// finished ones, whose indexes are shared); the caller skips those.
fn window(
    conn: &Connection,
    q: &JobQuery,
    from: Cursor,
    window: usize,
) -> rusqlite::Result<Vec<Found>> {
    let (op, dir) = if q.newest_first {
        ("<", "DESC")
    } else {
        (">", "ASC")
    };
    let state = i64::from(q.state.code());
    let key = match q.state {
        JobState::Pending => "run_at",
        JobState::Scheduled | JobState::Retrying => "run_at",
        JobState::Active => "lease_until",
        JobState::Dead => "finished_at",
        _ => "keep_until",
    };
    let select = format!("SELECT {COLS}, queue, state, priority, {key}, seq FROM celeriac_jobs");
    let order = format!("ORDER BY {key} {dir}, seq {dir}");
    let read = |sql: &str, args: &[&dyn rusqlite::ToSql]| -> rusqlite::Result<Vec<Found>> {
        let mut stmt = conn.prepare_cached(sql)?;
        // Every row is placed, even one that does not read, so paging moves past it.
        let rows = stmt.query_map(args, |r| {
            let info = row_to_shown_info(r).map(|(info, _)| info);
            let queue = decode::text(r, 29).unwrap_or_default();
            let state = decode::int(r, 30).unwrap_or(-1);
            let place = Cursor {
                priority: decode::int(r, 31).unwrap_or(0),
                at: place_at(r.get_ref(32)?),
                seq: r.get(33)?,
            };
            Ok((info, queue, state, place))
        })?;
        rows.collect()
    };
    let mut out = Vec::new();
    let n = window as i64;
    match q.state {
        JobState::Pending => {
            // The claim order is priority (high first), then time, then row: the rest of the
            // cursor's priority, then the priorities after it, each an index seek.
            out.extend(read(
                &format!(
                    "{select} WHERE queue = ?1 AND state = 0 AND priority = ?2 \
                     AND (run_at, seq) {op} (?3, ?4) {order} LIMIT ?5"
                ),
                &[&q.queue, &from.priority, &from.at, &from.seq, &n],
            )?);
            let left = n - out.len() as i64;
            if left > 0 {
                let (next, pdir) = if q.newest_first {
                    (">", "ASC")
                } else {
                    ("<", "DESC")
                };
                out.extend(read(
                    &format!(
                        "{select} WHERE queue = ?1 AND state = 0 AND priority {next} ?2 \
                         ORDER BY priority {pdir}, run_at {dir}, seq {dir} LIMIT ?3"
                    ),
                    &[&q.queue, &from.priority, &left],
                )?);
            }
        }
        JobState::Scheduled | JobState::Retrying => {
            out = read(
                // `state IN (1, 3)` names the partial index on (queue, run_at).
                &format!(
                    "{select} WHERE queue = ?1 AND state IN (1, 3) AND state = ?2 \
                 AND (run_at, seq) {op} (?3, ?4) {order} LIMIT ?5"
                ),
                &[&q.queue, &state, &from.at, &from.seq, &n],
            )?
        }
        JobState::Active => {
            out = read(
                &format!(
                "{select} WHERE state = 2 AND (lease_until, seq) {op} (?1, ?2) {order} LIMIT ?3"
            ),
                &[&from.at, &from.seq, &n],
            )?
        }
        JobState::Dead => {
            out = read(
                &format!(
                    "{select} WHERE queue = ?1 AND state = 6 \
                 AND (finished_at, seq) {op} (?2, ?3) {order} LIMIT ?4"
                ),
                &[&q.queue, &from.at, &from.seq, &n],
            )?
        }
        _ => {
            out = read(
                &format!(
                    "{select} WHERE keep_until IS NOT NULL \
                 AND (keep_until, seq) {op} (?1, ?2) {order} LIMIT ?3"
                ),
                &[&from.at, &from.seq, &n],
            )?
        }
    }
    Ok(out)
}

/// A page of the jobs `q` selects after `cursor`: at most `limit`, examining at most
/// [`SCAN_MAX`] rows (or `limit` when the state's index holds only this queue's jobs in this
/// state and no filter is set).
pub(crate) fn list(
    conn: &Connection,
    q: &JobQuery,
    from: Cursor,
    limit: usize,
) -> rusqlite::Result<JobPage> {
    let exact = matches!(
        q.state,
        JobState::Pending | JobState::Scheduled | JobState::Retrying | JobState::Dead
    );
    let size = if exact && !q.is_filtered() {
        limit.max(1)
    } else {
        SCAN_MAX.max(limit)
    };
    let rows = window(conn, q, from, size)?;
    let (total, full) = (rows.len() as u64, rows.len() == size);
    let state = i64::from(q.state.code());
    let mut page = JobPage {
        jobs: Vec::new(),
        next: None,
        scanned: 0,
    };
    let mut last = None;
    for (info, queue, row_state, place) in rows {
        page.scanned += 1;
        last = Some(place);
        let Some(info) = info else {
            tracing::warn!(queue, "a job whose id or state does not read is left out");
            continue;
        };
        if queue == q.queue && row_state == state && q.matches(&info) {
            page.jobs.push(info);
            if page.jobs.len() == limit {
                break;
            }
        }
    }
    // More may follow when the page stopped before the rows ran out, or the rows filled the
    // window.
    if page.scanned < total || full {
        page.next = last.map(|c| c.text());
    }
    Ok(page)
}

/// Deletes the jobs of `queue` among `ids` that are not running; returns how many (a unique
/// key is held while its job's state says so, so deleting the job frees it).
pub(crate) fn delete(conn: &Connection, queue: &str, ids: &[JobId]) -> rusqlite::Result<u64> {
    let mut stmt = conn.prepare_cached(
        "DELETE FROM celeriac_jobs WHERE id = ?1 AND queue = ?2 AND state <> 2 RETURNING state",
    )?;
    let mut tally = crate::counts::Tally::default();
    let mut n = 0;
    for id in ids {
        let states = stmt.query_map(params![&id.as_bytes()[..], queue], |r| {
            Ok(crate::decode::int(r, 0))
        })?;
        for state in states {
            if let Some(state) = state? {
                tally.add(queue, state, -1);
            }
            n += 1;
        }
    }
    tally.keep();
    Ok(n)
}
