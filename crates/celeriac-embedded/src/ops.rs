//! The SQL of each operation, run on the writer thread inside a transaction.

use crate::counts::Tally;
use crate::decode::{self, bad, column, UNDECODABLE, UNREADABLE_HEADER, UNREADABLE_TASK};
use celeriac_core::backend::{
    CancelOutcome, CancelReport, ClaimRequest, Claimed, Completion, EndedJob, LeaseRef, Outcome,
    QueueStats, ReapReport,
};
use celeriac_core::clock::{duration_ms, UnixMs};
use celeriac_core::job::{
    Encoding, ErrorInfo, Job, JobId, JobInfo, JobState, Priority, Progress, UniqueFor,
};
use celeriac_core::workflow::FLOW_HEADER;
use rusqlite::{params, Connection, OptionalExtension, Row};
use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

/// Bounded work per call: promotions, reaps and sweeps touch at most this many rows.
const BATCH: i64 = 1000;

// State codes (JobState::code) used as SQL parameters; the SQL text spells the others.
const FAILED: u8 = 5;
const DEAD: u8 = 6;

/// Every column a [`JobInfo`] is read from, in [`row_to_info`]'s order.
pub(crate) const COLS: &str =
    "id, queue, task, payload, encoding, priority, attempts, max_attempts, run_at, \
    expires_at, soft_limit_ms, hard_limit_ms, headers, parent_id, root_id, result_ttl_ms, \
    created_at, started_at, finished_at, state, result, error_kind, error_message, \
    error_attempt, progress, progress_message, worker, lease_until, token";

fn conv<E: std::error::Error + Send + Sync + 'static>(e: E) -> rusqlite::Error {
    rusqlite::Error::ToSqlConversionFailure(Box::new(e))
}

fn opt_id(bytes: Option<Vec<u8>>, name: &'static str) -> rusqlite::Result<Option<JobId>> {
    bytes
        .map(|b| JobId::from_slice(&b).map_err(|e| bad(name, e)))
        .transpose()
}

/// The first column, a queue's name returned by a statement: as text, whatever it holds.
fn queue_of(r: &Row<'_>) -> rusqlite::Result<String> {
    Ok(decode::text(r, 0).unwrap_or_default())
}

fn ms_duration(ms: Option<i64>) -> Option<Duration> {
    ms.map(|m| Duration::from_millis(m.max(0) as u64))
}

/// Reads a row selected with [`COLS`]; also returns the fencing token.
///
/// # Errors
/// A [`decode::BadColumn`] naming the first column that does not hold what it should.
pub(crate) fn row_to_info(row: &Row<'_>) -> rusqlite::Result<(JobInfo, Option<u64>)> {
    let id: Vec<u8> = column(row, 0, "id")?;
    let headers: Option<String> = column(row, 12, "headers")?;
    let headers: BTreeMap<String, String> = match headers {
        Some(h) => serde_json::from_str(&h).map_err(|e| bad("headers", e))?,
        None => BTreeMap::new(),
    };
    let priority: i64 = column(row, 5, "priority")?;
    let job = Job {
        id: JobId::from_slice(&id).map_err(|e| bad("id", e))?,
        queue: column(row, 1, "queue")?,
        task: column(row, 2, "task")?,
        payload: column(row, 3, "payload")?,
        encoding: Encoding::from_code(column(row, 4, "encoding")?)
            .map_err(|e| bad("encoding", e))?,
        priority: Priority::new(priority.clamp(0, 9) as u8).map_err(|e| bad("priority", e))?,
        attempts: column(row, 6, "attempts")?,
        max_attempts: column(row, 7, "max_attempts")?,
        run_at: column(row, 8, "run_at")?,
        expires_at: column(row, 9, "expires_at")?,
        soft_time_limit: ms_duration(column(row, 10, "soft_limit_ms")?),
        hard_time_limit: ms_duration(column(row, 11, "hard_limit_ms")?),
        headers,
        parent_id: opt_id(column(row, 13, "parent_id")?, "parent_id")?,
        root_id: opt_id(column(row, 14, "root_id")?, "root_id")?,
        result_ttl: ms_duration(column(row, 15, "result_ttl_ms")?),
        // The key lives in celeriac_unique while it matters; a read job does not carry it.
        unique: None,
        created_at: column(row, 16, "created_at")?,
        started_at: column(row, 17, "started_at")?,
        finished_at: column(row, 18, "finished_at")?,
    };
    let state = JobState::from_code(column(row, 19, "state")?).map_err(|e| bad("state", e))?;
    let error_kind: Option<String> = column(row, 21, "error_kind")?;
    let error = match error_kind {
        Some(kind) => Some(ErrorInfo {
            kind,
            message: column::<Option<String>>(row, 22, "error_message")?.unwrap_or_default(),
            attempt: column::<Option<u32>>(row, 23, "error_attempt")?.unwrap_or(0),
        }),
        None => None,
    };
    let progress = column::<Option<f64>>(row, 24, "progress")?.map(|fraction| Progress {
        fraction,
        message: None,
    });
    let progress = match progress {
        Some(mut p) => {
            p.message = column(row, 25, "progress_message")?;
            Some(p)
        }
        None => None,
    };
    let token: Option<i64> = column(row, 28, "token")?;
    let info = JobInfo {
        job,
        state,
        result: column(row, 20, "result")?,
        error,
        progress,
        worker: column(row, 26, "worker")?,
        lease_until: column(row, 27, "lease_until")?,
    };
    Ok((info, token.map(|t| t as u64)))
}

/// Reads a row selected with [`COLS`] for showing it: as [`row_to_info`] does, or, when that
/// fails, as a job with the task [`UNREADABLE_TASK`], the reason in its
/// [`UNREADABLE_HEADER`] header, and whatever of its payload, state and error reads (as the
/// Redis backend shows a record that does not read). `None` when not even its id and state
/// read.
pub(crate) fn row_to_shown_info(row: &Row<'_>) -> Option<(JobInfo, Option<u64>)> {
    let why = match row_to_info(row) {
        Ok(read) => return Some(read),
        Err(e) => e,
    };
    let id = decode::bytes(row, 0).and_then(|b| JobId::from_slice(&b).ok())?;
    let state = decode::int(row, 19).and_then(|c| JobState::from_code(c).ok())?;
    let payload = decode::bytes(row, 3).unwrap_or_default();
    let mut job = Job::new(UNREADABLE_TASK, payload, decode::int(row, 8).unwrap_or(0));
    job.id = id;
    job.queue = decode::text(row, 1).unwrap_or_default();
    job.headers.insert(
        UNREADABLE_HEADER.into(),
        format!("the job's row cannot be read: {why}"),
    );
    job.attempts = decode::int(row, 6).map_or(0, |a| a.clamp(0, u32::MAX.into()) as u32);
    job.created_at = decode::int(row, 16).unwrap_or(0);
    job.finished_at = decode::int(row, 18);
    let error = decode::text(row, 21).map(|kind| ErrorInfo {
        kind,
        message: decode::text(row, 22).unwrap_or_default(),
        attempt: decode::int(row, 23).map_or(0, |a| a.clamp(0, u32::MAX.into()) as u32),
    });
    let info = JobInfo {
        job,
        state,
        result: decode::bytes(row, 20),
        error,
        progress: None,
        worker: decode::text(row, 26),
        lease_until: decode::int(row, 27),
    };
    Some((info, decode::int(row, 28).map(|t| t as u64)))
}

/// Moves the job of row `seq`, which cannot be read, to the dead letters with the reason,
/// so it neither stops the queue nor comes back; it was `from` (a state code) in `queue`.
#[allow(clippy::too_many_arguments)]
fn dead_letter_unreadable(
    conn: &Connection,
    seq: i64,
    queue: &str,
    from: i64,
    why: &rusqlite::Error,
    now: UnixMs,
    dead_ttl: Duration,
    tally: &mut Tally,
) -> rusqlite::Result<ErrorInfo> {
    let error = ErrorInfo::new(
        UNDECODABLE,
        format!("the job's row in SQLite cannot be read: {why}"),
        0,
    );
    tracing::error!(queue, seq, error = %error.message, "dead-lettering a job that cannot be read");
    conn.prepare_cached(
        "UPDATE celeriac_jobs SET state = 6, finished_at = ?2, keep_until = ?2 + ?3, \
         token = NULL, lease_until = NULL, worker = NULL, error_kind = ?4, \
         error_message = ?5, error_attempt = 0 WHERE seq = ?1",
    )?
    .execute(params![
        seq,
        now,
        duration_ms(dead_ttl),
        error.kind,
        error.message
    ])?;
    tally.moved(queue, from, i64::from(DEAD));
    Ok(error)
}

/// The job holding a unique key, if the key is still held.
///
/// A key is held while its job is waiting (until started, debounce), while it is not finished
/// (until finished), or until its window ends, so the state change that ends one of those
/// releases the key in the same transaction.
fn live_holder(
    conn: &Connection,
    queue: &str,
    key: &str,
    now: UnixMs,
) -> rusqlite::Result<Option<(JobId, String)>> {
    // A holder that does not read (its job id, mode or state) holds nothing: the key goes
    // to the new job rather than refusing every job of that key.
    type Holder = (Option<Vec<u8>>, Option<String>, Option<i64>);
    let row: Option<Holder> = conn
        .prepare_cached(
            "SELECT job_id, mode, until FROM celeriac_unique WHERE queue = ?1 AND key = ?2",
        )?
        .query_row(params![queue, key], |r| {
            Ok((decode::bytes(r, 0), decode::text(r, 1), decode::int(r, 2)))
        })
        .optional()?;
    let Some((Some(job_id), Some(mode), until)) = row else {
        return Ok(None);
    };
    let Ok(id) = JobId::from_slice(&job_id) else {
        return Ok(None);
    };
    let state: Option<Option<i64>> = conn
        .prepare_cached("SELECT state FROM celeriac_jobs WHERE id = ?1")?
        .query_row([&job_id[..]], |r| Ok(decode::int(r, 0)))
        .optional()?;
    let state = match state {
        None => None,
        Some(code) => match code.map(JobState::from_code) {
            Some(Ok(s)) => Some(s),
            _ => return Ok(None),
        },
    };
    let live = match mode.as_str() {
        "w" => until.is_some_and(|u| u > now),
        "f" => state.is_some_and(|s| !s.is_terminal()),
        _ => matches!(state, Some(JobState::Pending | JobState::Scheduled)),
    };
    Ok(live.then_some((id, mode)))
}

pub(crate) fn enqueue(
    conn: &Connection,
    jobs: &[Job],
    now: UnixMs,
) -> rusqlite::Result<Vec<JobId>> {
    let mut ids = Vec::with_capacity(jobs.len());
    let mut tally = Tally::default();
    let mut stmt = conn.prepare_cached(
        "INSERT INTO celeriac_jobs (id, queue, task, state, priority, run_at, payload, encoding, \
         attempts, max_attempts, expires_at, soft_limit_ms, hard_limit_ms, headers, parent_id, \
         root_id, result_ttl_ms, created_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18)",
    )?;
    for job in jobs {
        // Enqueueing is idempotent by id: a job that already exists stands for itself.
        let exists: bool = conn
            .prepare_cached("SELECT EXISTS (SELECT 1 FROM celeriac_jobs WHERE id = ?1)")?
            .query_row(params![&job.id.as_bytes()[..]], |r| r.get(0))?;
        if exists {
            ids.push(job.id);
            continue;
        }
        if let Some(u) = &job.unique {
            if let Some((holder, mode)) = live_holder(conn, &job.queue, &u.key, now)? {
                if let (UniqueFor::Debounce(delay), "d") = (u.lifetime, mode.as_str()) {
                    // The waiting holder takes the newest arguments and starts later.
                    let run_at = now.saturating_add(duration_ms(delay));
                    let before: Option<i64> = conn
                        .prepare_cached(
                            "SELECT state FROM celeriac_jobs WHERE id = ?1 AND state IN (0, 1)",
                        )?
                        .query_row([&holder.as_bytes()[..]], |r| r.get(0))
                        .optional()?;
                    conn.prepare_cached(
                        "UPDATE celeriac_jobs SET payload = ?2, run_at = ?3, \
                         state = CASE WHEN ?3 > ?4 THEN 1 ELSE 0 END \
                         WHERE id = ?1 AND state IN (0, 1)",
                    )?
                    .execute(params![
                        &holder.as_bytes()[..],
                        job.payload,
                        run_at,
                        now
                    ])?;
                    if let Some(before) = before {
                        tally.moved(&job.queue, before, i64::from(run_at > now));
                    }
                }
                ids.push(holder);
                continue;
            }
            let until = match u.lifetime {
                UniqueFor::Window(w) => Some(now.saturating_add(duration_ms(w))),
                _ => None,
            };
            conn.prepare_cached(
                "INSERT OR REPLACE INTO celeriac_unique (queue, key, job_id, mode, until) \
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )?
            .execute(params![
                job.queue,
                u.key,
                &job.id.as_bytes()[..],
                u.lifetime.code(),
                until
            ])?;
        }
        ids.push(job.id);
        let headers = if job.headers.is_empty() {
            None
        } else {
            Some(serde_json::to_string(&job.headers).map_err(conv)?)
        };
        tally.add(&job.queue, i64::from(job.initial_state(now).code()), 1);
        tally.enqueued(&job.queue, &job.task, now, 1);
        stmt.execute(params![
            &job.id.as_bytes()[..],
            job.queue,
            job.task,
            job.initial_state(now).code(),
            job.priority.get(),
            job.run_at,
            job.payload,
            job.encoding.code(),
            job.attempts,
            job.max_attempts,
            job.expires_at,
            job.soft_time_limit.map(duration_ms),
            job.hard_time_limit.map(duration_ms),
            headers,
            job.parent_id.map(|p| p.as_bytes().to_vec()),
            job.root_id.map(|p| p.as_bytes().to_vec()),
            job.result_ttl.map(duration_ms),
            job.created_at,
        ])?;
    }
    tally.keep();
    Ok(ids)
}

/// Makes due scheduled and retrying jobs pending (a bounded batch of each).
fn promote(conn: &Connection, now: UnixMs, tally: &mut Tally) -> rusqlite::Result<()> {
    // Most claims find nothing due: one index seek tells.
    let due: bool = conn
        .prepare_cached(
            "SELECT EXISTS (SELECT 1 FROM celeriac_jobs WHERE state IN (1, 3) AND run_at <= ?1)",
        )?
        .query_row([now], |r| r.get(0))?;
    if !due {
        return Ok(());
    }
    for from in [1i64, 3] {
        let mut stmt = conn.prepare_cached(
            "UPDATE celeriac_jobs SET state = 0 WHERE seq IN \
             (SELECT seq FROM celeriac_jobs WHERE state IN (1, 3) AND state = ?3 \
              AND run_at <= ?1 ORDER BY run_at LIMIT ?2) RETURNING queue",
        )?;
        let queues = stmt.query_map(params![now, BATCH, from], queue_of)?;
        for queue in queues {
            tally.moved(&queue?, from, 0);
        }
    }
    Ok(())
}

fn paused_queues(conn: &Connection) -> rusqlite::Result<HashSet<String>> {
    let mut stmt = conn.prepare_cached("SELECT name FROM celeriac_queues WHERE paused = 1")?;
    let rows = stmt.query_map([], queue_of)?;
    rows.collect()
}

/// Reserves `n` fencing tokens; returns the first.
fn reserve_tokens(conn: &Connection, n: usize) -> rusqlite::Result<u64> {
    let last: i64 = conn
        .prepare_cached(
            "UPDATE celeriac_meta SET value = value + ?1 WHERE key = 'fence' RETURNING value",
        )?
        .query_row([n as i64], |r| r.get(0))?;
    Ok((last - n as i64 + 1) as u64)
}

/// A candidate of a claim: its row, and what the claim looks at first (expiry, cancellation,
/// task), or why that does not read.
type Candidate = (i64, rusqlite::Result<(Option<i64>, bool, String)>);

/// Claims ready jobs. A job whose row does not read is moved to the dead letters with the
/// reason (`dead_ttl` is how long they are kept) and the claim goes on.
pub(crate) fn claim(
    conn: &Connection,
    req: &ClaimRequest,
    dead_ttl: Duration,
) -> rusqlite::Result<Vec<Claimed>> {
    let now = req.now;
    let mut tally = Tally::default();
    promote(conn, now, &mut tally)?;
    let paused = paused_queues(conn)?;
    let lease_until = now.saturating_add(duration_ms(req.lease));
    let mut out = Vec::with_capacity(req.limit);
    let mut next_token = 0u64;
    let mut tokens_left = 0usize;
    for queue in &req.queues {
        if out.len() >= req.limit || paused.contains(queue) {
            continue;
        }
        let mut expired_here = 0i64;
        // Jobs a task limit holds back stay waiting; later candidates are looked at past them.
        let mut held = 0i64;
        let mut limiter = Limiter::new(conn, queue, &req.limits, now);
        // Expired jobs are marked as such and do not count against the limit; keep looking
        // until the limit is met, the queue has no more ready jobs, or a bounded number of
        // expired or held-back jobs has been handled in this call.
        while out.len() < req.limit && expired_here + held < BATCH {
            let want = (req.limit - out.len()) as i64;
            let candidates: Vec<Candidate> = {
                let mut stmt = conn.prepare_cached(
                    "SELECT seq, expires_at, cancel_requested, task FROM celeriac_jobs \
                     WHERE queue = ?1 AND state = 0 ORDER BY priority DESC, run_at, seq \
                     LIMIT ?2 OFFSET ?3",
                )?;
                let rows = stmt.query_map(params![queue, want, held], |r| {
                    let read = (|| {
                        Ok((
                            column(r, 1, "expires_at")?,
                            // As the statements read it: asked to stop when it holds 1.
                            decode::int(r, 2) == Some(1),
                            column(r, 3, "task")?,
                        ))
                    })();
                    Ok((r.get(0)?, read))
                })?;
                rows.collect::<rusqlite::Result<_>>()?
            };
            let exhausted = (candidates.len() as i64) < want;
            if candidates.is_empty() {
                break;
            }
            if tokens_left < candidates.len() {
                next_token = reserve_tokens(conn, candidates.len())?;
                tokens_left = candidates.len();
            }
            let mut expire = conn.prepare_cached(
                "UPDATE celeriac_jobs SET state = 8, finished_at = ?2, \
                 keep_until = ?2 + COALESCE(result_ttl_ms, 86400000), error_kind = 'expired', \
                 error_message = 'not started before its expiry', error_attempt = attempts \
                 WHERE seq = ?1",
            )?;
            let mut lease = conn.prepare_cached(&format!(
                "UPDATE celeriac_jobs SET state = 2, attempts = attempts + 1, token = ?2, \
                 lease_until = ?3, worker = ?4, started_at = COALESCE(started_at, ?5), \
                 progress = NULL, progress_message = NULL \
                 WHERE seq = ?1 RETURNING {COLS}"
            ))?;
            for (seq, read) in candidates {
                let (expires_at, cancelled, task) = match read {
                    Ok(read) => read,
                    Err(why) => {
                        dead_letter_unreadable(
                            conn, seq, queue, 0, &why, now, dead_ttl, &mut tally,
                        )?;
                        expired_here += 1;
                        continue;
                    }
                };
                if cancelled {
                    end_cancelled(conn, seq, now, 0, &mut tally)?;
                    expired_here += 1;
                    continue;
                }
                if expires_at.is_some_and(|e| e <= now) {
                    expire.execute(params![seq, now])?;
                    tally.moved(queue, 0, 8);
                    expired_here += 1;
                    continue;
                }
                if !limiter.admit(&task)? {
                    held += 1;
                    continue;
                }
                let token = next_token;
                next_token += 1;
                tokens_left -= 1;
                let leased = lease.query_row(
                    params![seq, token as i64, lease_until, req.worker, now],
                    |r| Ok(row_to_info(r)),
                )?;
                let (info, _) = match leased {
                    Ok(read) => read,
                    Err(why) => {
                        // Leased by the statement that read it: the dead letter replaces that.
                        dead_letter_unreadable(
                            conn, seq, queue, 0, &why, now, dead_ttl, &mut tally,
                        )?;
                        expired_here += 1;
                        continue;
                    }
                };
                tally.moved(queue, 0, 2);
                out.push(Claimed {
                    job: info.job,
                    token,
                    lease_until,
                });
            }
            if exhausted {
                break;
            }
        }
    }
    tally.keep();
    Ok(out)
}

pub(crate) fn heartbeat(
    conn: &Connection,
    leases: &[LeaseRef],
    until: UnixMs,
) -> rusqlite::Result<Vec<LeaseRef>> {
    let mut stmt = conn.prepare_cached(
        "UPDATE celeriac_jobs SET lease_until = ?1 WHERE id = ?2 AND token = ?3 AND state = 2",
    )?;
    let mut lost = Vec::new();
    for l in leases {
        if stmt.execute(params![until, &l.id.as_bytes()[..], l.token as i64])? == 0 {
            lost.push(l.clone());
        }
    }
    Ok(lost)
}

pub(crate) fn complete(
    conn: &Connection,
    done: &[Completion],
    now: UnixMs,
    dead_ttl: Duration,
) -> rusqlite::Result<Vec<bool>> {
    let dead_ttl = duration_ms(dead_ttl);
    let mut out = Vec::with_capacity(done.len());
    let mut tally = Tally::default();
    // Each statement gives the job's new state when it applied (-1: deleted): known in
    // advance, or returned where it depends on the row (RETURNING costs SQLite a temporary
    // table, so the hot statements do without).
    type Args<'a> = &'a [&'a dyn rusqlite::ToSql];
    let fixed = |state: i64, sql: &str, args: Args| -> rusqlite::Result<Option<i64>> {
        Ok((conn.prepare_cached(sql)?.execute(args)? > 0).then_some(state))
    };
    let returned = |sql: &str, args: Args| -> rusqlite::Result<Option<i64>> {
        conn.prepare_cached(sql)?
            .query_row(args, |r| r.get(0))
            .optional()
    };
    for c in done {
        let id = &c.lease.id.as_bytes()[..];
        let token = c.lease.token as i64;
        let ended = match &c.outcome {
            Outcome::Succeeded { result } => {
                // A job that keeps no result leaves no row behind.
                match fixed(
                    -1,
                    "DELETE FROM celeriac_jobs WHERE id = ?1 AND token = ?2 AND state = 2 \
                     AND result_ttl_ms IS NULL",
                    &[&id, &token],
                )? {
                    Some(gone) => Some(gone),
                    None => fixed(
                        4,
                        "UPDATE celeriac_jobs SET state = 4, result = ?3, finished_at = ?4, \
                         keep_until = ?4 + result_ttl_ms, token = NULL, lease_until = NULL, \
                         error_kind = NULL, error_message = NULL, error_attempt = NULL \
                         WHERE id = ?1 AND token = ?2 AND state = 2",
                        &[&id, &token, result, &now],
                    )?,
                }
            }
            Outcome::Retry { at, error } => returned(
                // A job asked to stop does not come back for another attempt.
                "UPDATE celeriac_jobs SET \
                 state = CASE cancel_requested WHEN 1 THEN 7 ELSE 3 END, \
                 run_at = ?3, token = NULL, lease_until = NULL, worker = NULL, \
                 error_kind = ?4, error_message = ?5, error_attempt = ?6, \
                 finished_at = CASE cancel_requested WHEN 1 THEN ?7 END, \
                 keep_until = CASE cancel_requested \
                   WHEN 1 THEN ?7 + COALESCE(result_ttl_ms, 86400000) END \
                 WHERE id = ?1 AND token = ?2 AND state = 2 RETURNING state",
                &[
                    &id,
                    &token,
                    at,
                    &error.kind,
                    &error.message,
                    &error.attempt,
                    &now,
                ],
            )?,
            Outcome::Failed { error } | Outcome::Dead { error } => {
                let (state, keep) = match c.outcome {
                    Outcome::Dead { .. } => (DEAD, dead_ttl),
                    _ => (FAILED, 0),
                };
                fixed(
                    i64::from(state),
                    "UPDATE celeriac_jobs SET state = ?3, finished_at = ?4, \
                     keep_until = ?4 + CASE WHEN ?5 > 0 THEN ?5 ELSE COALESCE(result_ttl_ms, 86400000) END, \
                     token = NULL, lease_until = NULL, error_kind = ?6, error_message = ?7, \
                     error_attempt = ?8 WHERE id = ?1 AND token = ?2 AND state = 2",
                    &[
                        &id,
                        &token,
                        &state,
                        &now,
                        &keep,
                        &error.kind,
                        &error.message,
                        &error.attempt,
                    ],
                )?
            }
            Outcome::Cancelled => fixed(
                7,
                "UPDATE celeriac_jobs SET state = 7, finished_at = ?3, \
                 keep_until = ?3 + COALESCE(result_ttl_ms, 86400000), token = NULL, \
                 lease_until = NULL WHERE id = ?1 AND token = ?2 AND state = 2",
                &[&id, &token, &now],
            )?,
            Outcome::Deferred { at } => returned(
                // Back to scheduled, the attempt not counted; a job asked to stop ends.
                "UPDATE celeriac_jobs SET \
                 state = CASE cancel_requested WHEN 1 THEN 7 ELSE 1 END, \
                 attempts = MAX(attempts - 1, 0), \
                 run_at = ?3, token = NULL, lease_until = NULL, worker = NULL, \
                 finished_at = CASE cancel_requested WHEN 1 THEN ?4 END, \
                 keep_until = CASE cancel_requested \
                   WHEN 1 THEN ?4 + COALESCE(result_ttl_ms, 86400000) END \
                 WHERE id = ?1 AND token = ?2 AND state = 2 RETURNING state",
                &[&id, &token, at, &now],
            )?,
        };
        match ended {
            Some(-1) => tally.add(&c.lease.queue, 2, -1),
            Some(state) => tally.moved(&c.lease.queue, 2, state),
            None => {}
        }
        out.push(ended.is_some());
    }
    tally.keep();
    Ok(out)
}

pub(crate) fn release(conn: &Connection, leases: &[LeaseRef]) -> rusqlite::Result<u64> {
    let mut stmt = conn.prepare_cached(
        "UPDATE celeriac_jobs SET state = 0, attempts = MAX(attempts - 1, 0), token = NULL, \
         lease_until = NULL, worker = NULL WHERE id = ?1 AND token = ?2 AND state = 2",
    )?;
    let mut tally = Tally::default();
    let mut n = 0;
    for l in leases {
        if stmt.execute(params![&l.id.as_bytes()[..], l.token as i64])? > 0 {
            tally.moved(&l.queue, 2, 0);
            n += 1;
        }
    }
    tally.keep();
    Ok(n)
}

/// One bounded round of a reap: what it did, and whether a batch came back full.
#[derive(Debug, Default)]
pub(crate) struct ReapRound {
    pub(crate) report: ReapReport,
    /// Dead letters dropped for the cap, per queue.
    pub(crate) dropped: Vec<(String, u64)>,
    /// A batch came back full: more may be due at the same `now`.
    pub(crate) more: bool,
}

/// Reaps one round: at most [`BATCH`] expired leases, unique keys, finished jobs past their
/// retention and dead letters beyond a queue's cap (`dead_max`), so the transaction stays
/// short; the caller runs rounds until one is not full.
pub(crate) fn reap(
    conn: &Connection,
    now: UnixMs,
    dead_ttl: Duration,
    dead_max: u64,
) -> rusqlite::Result<ReapRound> {
    // A row, its queue and id (if they read), and what the reap needs of it, or why that
    // does not read.
    type Expired = (
        i64,
        String,
        Option<JobId>,
        rusqlite::Result<(u32, u32, bool, JobId, String, Option<String>)>,
    );
    let mut tally = Tally::default();
    let expired: Vec<Expired> = {
        let mut stmt = conn.prepare_cached(
            "SELECT seq, attempts, max_attempts, cancel_requested, id, task, headers, queue \
             FROM celeriac_jobs WHERE state = 2 AND lease_until < ?1 ORDER BY lease_until \
             LIMIT ?2",
        )?;
        let rows = stmt.query_map(params![now, BATCH], |r| {
            let read = (|| {
                let id: Vec<u8> = column(r, 4, "id")?;
                Ok((
                    column(r, 1, "attempts")?,
                    column(r, 2, "max_attempts")?,
                    decode::int(r, 3) == Some(1),
                    JobId::from_slice(&id).map_err(|e| bad("id", e))?,
                    column(r, 5, "task")?,
                    column(r, 6, "headers")?,
                ))
            })();
            let id = decode::bytes(r, 4).and_then(|b| JobId::from_slice(&b).ok());
            Ok((r.get(0)?, decode::text(r, 7).unwrap_or_default(), id, read))
        })?;
        rows.collect::<rusqlite::Result<_>>()?
    };
    let mut more = expired.len() as i64 >= BATCH;
    let mut dropped = Vec::new();
    let mut report = ReapReport::default();
    for (seq, queue, id, read) in expired {
        let (attempts, max, cancelled, id, task, headers) = match read {
            Ok(read) => read,
            Err(why) => {
                let error =
                    dead_letter_unreadable(conn, seq, &queue, 2, &why, now, dead_ttl, &mut tally)?;
                report.dead += 1;
                // Without an id there is nothing to tell the job's waiters or workflow.
                if let Some(id) = id {
                    report.ended.push(EndedJob {
                        id,
                        task: UNREADABLE_TASK.to_string(),
                        state: JobState::Dead,
                        error: Some(error),
                        flow: None,
                    });
                }
                continue;
            }
        };
        let ended = |state, error| EndedJob {
            id,
            task: task.clone(),
            state,
            error,
            flow: flow_header(headers.as_deref()),
        };
        if cancelled {
            end_cancelled(conn, seq, now, 2, &mut tally)?;
            report.ended.push(ended(JobState::Cancelled, None));
        } else if attempts >= max {
            let error = ErrorInfo::new(
                "lease_expired",
                "the worker stopped heartbeating and no attempts are left",
                attempts,
            );
            conn.prepare_cached(
                "UPDATE celeriac_jobs SET state = 6, finished_at = ?2, keep_until = ?2 + ?3, \
                 token = NULL, lease_until = NULL, error_kind = ?4, error_message = ?5, \
                 error_attempt = ?6 WHERE seq = ?1",
            )?
            .execute(params![
                seq,
                now,
                duration_ms(dead_ttl),
                error.kind,
                error.message,
                error.attempt
            ])?;
            tally.moved(&queue, 2, 6);
            report.dead += 1;
            report.ended.push(ended(JobState::Dead, Some(error)));
        } else {
            conn.prepare_cached(
                "UPDATE celeriac_jobs SET state = 0, token = NULL, lease_until = NULL, \
                 worker = NULL, error_kind = 'lease_expired', \
                 error_message = 'the worker stopped heartbeating', error_attempt = attempts \
                 WHERE seq = ?1",
            )?
            .execute([seq])?;
            tally.moved(&queue, 2, 0);
            report.requeued += 1;
        }
    }
    // Unique keys whose window ended or whose job is gone.
    let released = conn
        .prepare_cached(
            "DELETE FROM celeriac_unique WHERE rowid IN (SELECT u.rowid FROM celeriac_unique u \
             LEFT JOIN celeriac_jobs j ON j.id = u.job_id \
             WHERE (u.mode = 'w' AND u.until <= ?1) OR (u.mode <> 'w' AND j.id IS NULL) \
             LIMIT ?2)",
        )?
        .execute(params![now, BATCH])?;
    {
        let mut stmt = conn.prepare_cached(
            "DELETE FROM celeriac_jobs WHERE seq IN \
             (SELECT seq FROM celeriac_jobs WHERE keep_until <= ?1 LIMIT ?2) \
             RETURNING queue, state",
        )?;
        let gone = stmt.query_map(params![now, BATCH], |r| {
            Ok((decode::text(r, 0).unwrap_or_default(), decode::int(r, 1)))
        })?;
        for row in gone {
            let (queue, state) = row?;
            if let Some(state) = state {
                tally.add(&queue, state, -1);
            }
            report.swept += 1;
        }
    }
    more |= released as i64 >= BATCH || report.swept as i64 >= BATCH;
    // The cap on dead letters, per queue: the oldest beyond it go.
    let over: Vec<(Option<String>, i64)> = conn
        .prepare_cached(
            "SELECT queue, COUNT(*) - ?1 FROM celeriac_jobs WHERE state = 6 \
             GROUP BY queue HAVING COUNT(*) > ?1",
        )?
        .query_map([i64::try_from(dead_max).unwrap_or(i64::MAX)], |r| {
            // A queue name that is not text names no queue the statement below can match.
            let queue = match r.get_ref(0)? {
                rusqlite::types::ValueRef::Text(t) => {
                    std::str::from_utf8(t).ok().map(str::to_string)
                }
                _ => None,
            };
            Ok((queue, r.get(1)?))
        })?
        .collect::<rusqlite::Result<Vec<(Option<String>, i64)>>>()?;
    for (queue, excess) in over {
        let Some(queue) = queue else { continue };
        let n = conn
            .prepare_cached(
                "DELETE FROM celeriac_jobs WHERE seq IN (SELECT seq FROM celeriac_jobs \
                 WHERE queue = ?1 AND state = 6 ORDER BY finished_at, seq LIMIT ?2)",
            )?
            .execute(params![queue, excess.min(BATCH)])? as u64;
        tally.add(&queue, 6, -(n as i64));
        report.dead_dropped += n;
        more |= excess > BATCH;
        dropped.push((queue, n));
    }
    // Joins and workflow records past their retention (not counted: `swept` counts jobs).
    crate::workflows::sweep(conn, now)?;
    // Expired key-value rows and locks, and broadcast messages past their retention.
    crate::kv::sweep(conn, now)?;
    crate::rate_limits::sweep(conn, now)?;
    // Shared breaker records, signals and probe reservations past their expiry.
    crate::breakers::sweep(conn, now)?;
    tally.keep();
    Ok(ReapRound {
        report,
        dropped,
        more,
    })
}

pub(crate) fn next_due(conn: &Connection, queues: &[String]) -> rusqlite::Result<Option<UnixMs>> {
    let mut stmt = conn.prepare_cached(
        "SELECT MIN(run_at) FROM celeriac_jobs WHERE queue = ?1 AND state IN (1, 3)",
    )?;
    let mut earliest: Option<UnixMs> = None;
    for q in queues {
        let due: Option<UnixMs> = stmt.query_row([q], |r| Ok(decode::int(r, 0)))?;
        earliest = match (earliest, due) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }
    Ok(earliest)
}

pub(crate) fn set_paused(conn: &Connection, queue: &str, paused: bool) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO celeriac_queues (name, paused) VALUES (?1, ?2) \
         ON CONFLICT (name) DO UPDATE SET paused = excluded.paused",
    )?
    .execute(params![queue, paused])?;
    Ok(())
}

/// Counts per queue and state from the counts the triggers keep, and each queue's oldest
/// pending job (one index seek per priority) and next due job (one seek): no scan of the jobs.
pub(crate) fn stats(conn: &Connection) -> rusqlite::Result<Vec<QueueStats>> {
    let mut by_queue: BTreeMap<String, QueueStats> = BTreeMap::new();
    let blank = |queue: String| QueueStats {
        queue,
        ..QueueStats::default()
    };
    {
        let mut stmt = conn.prepare_cached("SELECT name, paused FROM celeriac_queues")?;
        let rows = stmt.query_map([], |r| {
            Ok((
                decode::text(r, 0).unwrap_or_default(),
                decode::int(r, 1) == Some(1),
            ))
        })?;
        for row in rows {
            let (name, paused) = row?;
            by_queue
                .entry(name.clone())
                .or_insert_with(|| blank(name))
                .paused = paused;
        }
    }
    let mut stmt = conn.prepare_cached("SELECT queue, state, n FROM celeriac_queue_counts")?;
    // Counts are kept by this crate's own statements; a row that does not read (an unknown
    // state, a count that is no integer) is left out rather than failing every queue's stats.
    let rows = stmt.query_map([], |r| {
        Ok((
            decode::text(r, 0).unwrap_or_default(),
            decode::int(r, 1).and_then(|s| JobState::from_code(s).ok()),
            decode::int(r, 2).unwrap_or(0),
        ))
    })?;
    for row in rows {
        let (queue, state, n) = row?;
        let Some(state) = state else {
            tracing::warn!(queue, "a job count of an unknown state is left out");
            continue;
        };
        let entry = by_queue
            .entry(queue.clone())
            .or_insert_with(|| blank(queue));
        if n > 0 {
            entry.counts.insert(state.as_str().to_string(), n as u64);
        }
    }
    let mut oldest = conn.prepare_cached(
        "SELECT run_at FROM celeriac_jobs WHERE queue = ?1 AND state = 0 AND priority = ?2
         ORDER BY run_at LIMIT 1",
    )?;
    let mut due = conn.prepare_cached(
        "SELECT MIN(run_at) FROM celeriac_jobs WHERE queue = ?1 AND state IN (1, 3)",
    )?;
    for q in by_queue.values_mut() {
        if q.count(JobState::Pending) > 0 {
            for priority in 0..=9i64 {
                let at: Option<i64> = oldest
                    .query_row(params![q.queue, priority], |r| Ok(decode::int(r, 0)))
                    .optional()?
                    .flatten();
                q.oldest_pending_at = match (q.oldest_pending_at, at) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
            }
        }
        if q.count(JobState::Scheduled) + q.count(JobState::Retrying) > 0 {
            q.next_due_at = due.query_row([&q.queue], |r| Ok(decode::int(r, 0)))?;
        }
    }
    Ok(by_queue.into_values().collect())
}

pub(crate) fn purge(conn: &Connection, queue: &str) -> rusqlite::Result<u64> {
    let mut tally = Tally::default();
    let mut n = 0;
    {
        let mut stmt = conn.prepare_cached(
            "DELETE FROM celeriac_jobs WHERE queue = ?1 AND state IN (0, 1, 3) RETURNING state",
        )?;
        for state in stmt.query_map([queue], |r| Ok(decode::int(r, 0)))? {
            if let Some(state) = state? {
                tally.add(queue, state, -1);
            }
            n += 1;
        }
    }
    tally.keep();
    Ok(n)
}

pub(crate) fn get(
    conn: &Connection,
    id: JobId,
) -> rusqlite::Result<Option<(JobInfo, Option<u64>)>> {
    let shown = conn
        .prepare_cached(&format!("SELECT {COLS} FROM celeriac_jobs WHERE id = ?1"))?
        .query_row([&id.as_bytes()[..]], |r| {
            Ok(row_to_shown_info(r).ok_or_else(|| row_to_info(r).err()))
        })
        .optional()?;
    match shown {
        None => Ok(None),
        Some(Ok(info)) => Ok(Some(info)),
        // Not even its state reads: the reason, as an error.
        Some(Err(why)) => Err(why.unwrap_or_else(|| bad("state", "does not read"))),
    }
}

pub(crate) fn set_progress(
    conn: &Connection,
    lease: LeaseRef,
    fraction: f64,
    message: Option<String>,
) -> rusqlite::Result<bool> {
    Ok(conn
        .prepare_cached(
            "UPDATE celeriac_jobs SET progress = ?3, progress_message = ?4 \
             WHERE id = ?1 AND token = ?2 AND state = 2",
        )?
        .execute(params![
            &lease.id.as_bytes()[..],
            lease.token as i64,
            fraction,
            message
        ])?
        > 0)
}

pub(crate) fn dead_letters(
    conn: &Connection,
    queue: Option<&str>,
    limit: usize,
    offset: usize,
) -> rusqlite::Result<Vec<JobInfo>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {COLS} FROM celeriac_jobs WHERE state = 6 AND (?1 IS NULL OR queue = ?1) \
         ORDER BY finished_at DESC, seq DESC LIMIT ?2 OFFSET ?3"
    ))?;
    let rows = stmt.query_map(params![queue, limit as i64, offset as i64], |r| {
        Ok(row_to_shown_info(r).map(|(info, _)| info))
    })?;
    // A row whose id does not read cannot be listed (nor retried by id); it is logged.
    let mut out = Vec::new();
    for row in rows {
        match row? {
            Some(info) => out.push(info),
            None => tracing::warn!("a dead letter whose id does not read is left out"),
        }
    }
    Ok(out)
}

pub(crate) fn retry_dead(
    conn: &Connection,
    ids: Option<&[JobId]>,
    now: UnixMs,
) -> rusqlite::Result<u64> {
    // A dead letter retried by hand runs, whatever its original expiry said.
    const RESET: &str = "UPDATE celeriac_jobs SET state = 0, attempts = 0, run_at = ?1, \
         cancel_requested = 0, \
         expires_at = NULL, finished_at = NULL, keep_until = NULL, token = NULL, lease_until = NULL, worker = NULL \
         WHERE state = 6";
    let mut tally = Tally::default();
    let mut n = 0;
    let mut count = |queue: rusqlite::Result<String>| -> rusqlite::Result<()> {
        tally.moved(&queue?, 6, 0);
        n += 1;
        Ok(())
    };
    match ids {
        None => {
            let mut stmt = conn.prepare_cached(&format!("{RESET} RETURNING queue"))?;
            for queue in stmt.query_map([now], queue_of)? {
                count(queue)?;
            }
        }
        Some(ids) => {
            let mut stmt = conn.prepare_cached(&format!("{RESET} AND id = ?2 RETURNING queue"))?;
            for id in ids {
                for queue in stmt.query_map(params![now, &id.as_bytes()[..]], queue_of)? {
                    count(queue)?;
                }
            }
        }
    }
    tally.keep();
    Ok(n)
}

pub(crate) fn purge_dead(conn: &Connection, queue: Option<&str>) -> rusqlite::Result<u64> {
    let mut tally = Tally::default();
    let mut n = 0;
    {
        let mut stmt = conn.prepare_cached(
            "DELETE FROM celeriac_jobs WHERE state = 6 AND (?1 IS NULL OR queue = ?1) \
             RETURNING queue",
        )?;
        for q in stmt.query_map([queue], queue_of)? {
            tally.add(&q?, 6, -1);
            n += 1;
        }
    }
    tally.keep();
    Ok(n)
}

/// Ends a job in state `from` as cancelled (it was asked to stop before it could run again).
fn end_cancelled(
    conn: &Connection,
    seq: i64,
    now: UnixMs,
    from: i64,
    tally: &mut Tally,
) -> rusqlite::Result<()> {
    let queue: Option<String> = conn
        .prepare_cached(
            "UPDATE celeriac_jobs SET state = 7, finished_at = ?2, \
             keep_until = ?2 + COALESCE(result_ttl_ms, 86400000), token = NULL, \
             lease_until = NULL WHERE seq = ?1 RETURNING queue",
        )?
        .query_row(params![seq, now], queue_of)
        .optional()?;
    if let Some(queue) = queue {
        tally.moved(&queue, from, 7);
    }
    Ok(())
}

pub(crate) fn cancel(conn: &Connection, id: JobId, now: UnixMs) -> rusqlite::Result<CancelReport> {
    let found: Option<(i64, i64, String, Option<String>)> = conn
        .prepare_cached("SELECT seq, state, task, headers FROM celeriac_jobs WHERE id = ?1")?
        .query_row([&id.as_bytes()[..]], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
        })
        .optional()?;
    let report = |outcome| CancelReport {
        outcome,
        ended: None,
    };
    let Some((seq, state, task, headers)) = found else {
        return Ok(report(CancelOutcome::NotFound));
    };
    let state = JobState::from_code(state).map_err(conv)?;
    Ok(match state {
        JobState::Pending | JobState::Scheduled | JobState::Retrying => {
            let mut tally = Tally::default();
            end_cancelled(conn, seq, now, i64::from(state.code()), &mut tally)?;
            tally.keep();
            CancelReport {
                outcome: CancelOutcome::Cancelled,
                ended: Some(EndedJob {
                    id,
                    task,
                    state: JobState::Cancelled,
                    error: None,
                    flow: flow_header(headers.as_deref()),
                }),
            }
        }
        JobState::Active => {
            conn.prepare_cached("UPDATE celeriac_jobs SET cancel_requested = 1 WHERE seq = ?1")?
                .execute([seq])?;
            report(CancelOutcome::Requested)
        }
        done => report(CancelOutcome::AlreadyFinished(done)),
    })
}

/// A job's [`FLOW_HEADER`] from its stored headers (JSON); headers that do not read as JSON
/// have none (the job's record still shows them as they are).
fn flow_header(headers: Option<&str>) -> Option<String> {
    let mut headers: BTreeMap<String, String> = serde_json::from_str(headers?).ok()?;
    headers.remove(FLOW_HEADER)
}

pub(crate) fn cancel_requested(
    conn: &Connection,
    leases: &[LeaseRef],
) -> rusqlite::Result<Vec<LeaseRef>> {
    let mut stmt = conn.prepare_cached(
        "SELECT 1 FROM celeriac_jobs WHERE id = ?1 AND token = ?2 AND state = 2 \
         AND cancel_requested = 1",
    )?;
    let mut out = Vec::new();
    for l in leases {
        if stmt
            .query_row(params![&l.id.as_bytes()[..], l.token as i64], |_| Ok(()))
            .optional()?
            .is_some()
        {
            out.push(l.clone());
        }
    }
    Ok(out)
}

/// Applies the task limits of one claim: concurrency caps count the task's running jobs in
/// the queue, rates space starts evenly (GCRA without burst, the theoretical arrival time of
/// each task kept in `celeriac_rates`).
struct Limiter<'a> {
    conn: &'a Connection,
    queue: &'a str,
    limits: &'a std::collections::BTreeMap<String, celeriac_core::backend::TaskLimits>,
    now: UnixMs,
    running: std::collections::HashMap<String, i64>,
}

impl<'a> Limiter<'a> {
    fn new(
        conn: &'a Connection,
        queue: &'a str,
        limits: &'a std::collections::BTreeMap<String, celeriac_core::backend::TaskLimits>,
        now: UnixMs,
    ) -> Self {
        Self {
            conn,
            queue,
            limits,
            now,
            running: Default::default(),
        }
    }

    /// Whether a job of `task` may start now; counts it if so.
    fn admit(&mut self, task: &str) -> rusqlite::Result<bool> {
        let Some(limits) = self.limits.get(task) else {
            return Ok(true);
        };
        if let Some(cap) = limits.concurrency {
            let running = match self.running.get(task) {
                Some(n) => *n,
                None => self
                    .conn
                    .prepare_cached(
                        "SELECT COUNT(*) FROM celeriac_jobs WHERE queue = ?1 AND task = ?2 AND state = 2",
                    )?
                    .query_row(params![self.queue, task], |r| r.get(0))?,
            };
            if running >= i64::from(cap) {
                self.running.insert(task.to_string(), running);
                return Ok(false);
            }
            self.running.insert(task.to_string(), running + 1);
        }
        if let Some(rate) = limits.rate {
            let key = format!("{}\u{1f}{task}", self.queue);
            // A time that does not read, or that no rate could have set (more than an
            // interval and an hour ahead: processes' clocks differ by far less), counts as
            // none, so the task is not held back for ever. A bound of one interval would let
            // a process whose clock is a few milliseconds behind ignore the others' state.
            let horizon = self
                .now
                .saturating_add(rate.interval_ms())
                .saturating_add(3_600_000);
            let tat: i64 = self
                .conn
                .prepare_cached("SELECT tat FROM celeriac_rates WHERE key = ?1")?
                .query_row([&key], |r| Ok(decode::int(r, 0)))
                .optional()?
                .flatten()
                .filter(|t| *t <= horizon)
                .unwrap_or(i64::MIN);
            if tat > self.now {
                if let Some(n) = self.running.get_mut(task) {
                    *n -= 1;
                }
                return Ok(false);
            }
            self.conn
                .prepare_cached(
                    "INSERT INTO celeriac_rates (key, tat) VALUES (?1, ?2) \
                     ON CONFLICT (key) DO UPDATE SET tat = excluded.tat",
                )?
                .execute(params![
                    key,
                    tat.max(self.now).saturating_add(rate.interval_ms())
                ])?;
        }
        Ok(true)
    }
}
