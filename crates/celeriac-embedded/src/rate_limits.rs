//! [`RateLimitStore`] on SQLite: each decision is one transaction on the writer thread that
//! reads the key's rows (one per quota, `celeriac_limits`), runs the core maths
//! ([`celeriac_core::limit::maths::decide`]) and writes the new state only when every quota
//! allows the call. Several processes on one file agree, since every write is `BEGIN
//! IMMEDIATE`. Permits are rows of `celeriac_limit_permits` with a lease.

use crate::{decode, SqliteBackend};
use celeriac_core::backend::RateLimitStore;
use celeriac_core::clock::{duration_ms, UnixMs};
use celeriac_core::error::Result;
use celeriac_core::limit::maths::{decide, LimitState};
use celeriac_core::limit::{self, Decision, Quota};
use rusqlite::{params, Connection, OptionalExtension};
use std::time::Duration;

/// Rows one sweep deletes at most.
const BATCH: i64 = 1000;

fn check(
    c: &Connection,
    key: &str,
    quotas: &[Quota],
    cost: u32,
    now: UnixMs,
) -> rusqlite::Result<Decision> {
    let ids: Vec<String> = quotas.iter().map(Quota::state_id).collect();
    let mut read = c.prepare_cached(
        "SELECT a, b, c FROM celeriac_limits WHERE key = ?1 AND quota = ?2 AND expires_at > ?3",
    )?;
    // State that does not read as three integers counts as none (as an expired row): the
    // limiter starts the key afresh rather than failing every call of it.
    let mut states = ids
        .iter()
        .map(|id| {
            read.query_row(params![key, id, now], |r| {
                Ok(
                    match (decode::int(r, 0), decode::int(r, 1), decode::int(r, 2)) {
                        (Some(a), Some(b), Some(c)) => LimitState { a, b, c },
                        _ => LimitState::default(),
                    },
                )
            })
            .optional()
            .map(Option::unwrap_or_default)
        })
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let mut writes = Vec::with_capacity(quotas.len());
    let decision = decide(quotas, &mut states, cost, now, |i, step| {
        writes.push((i, step.state, now.saturating_add(step.ttl_ms)))
    });
    let mut write = c.prepare_cached(
        "INSERT INTO celeriac_limits (key, quota, a, b, c, expires_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (key, quota) DO UPDATE SET \
         a = excluded.a, b = excluded.b, c = excluded.c, expires_at = excluded.expires_at",
    )?;
    for (i, s, until) in writes {
        write.execute(params![key, ids[i], s.a, s.b, s.c, until])?;
    }
    Ok(decision)
}

fn acquire(
    c: &Connection,
    key: &str,
    holder: &str,
    max: u32,
    until: UnixMs,
    now: UnixMs,
) -> rusqlite::Result<Decision> {
    // A permit whose lease is not a time holds nothing: it goes with the expired ones.
    c.prepare_cached(
        "DELETE FROM celeriac_limit_permits WHERE key = ?1 \
         AND (until <= ?2 OR typeof(until) <> 'integer' OR typeof(holder) <> 'text')",
    )?
    .execute(params![key, now])?;
    let mut held: Vec<(String, i64)> = c
        .prepare_cached("SELECT holder, until FROM celeriac_limit_permits WHERE key = ?1")?
        .query_map(params![key], |r| {
            Ok((
                decode::text(r, 0).unwrap_or_default(),
                decode::int(r, 1).unwrap_or(0),
            ))
        })?
        .collect::<rusqlite::Result<_>>()?;
    let decision = limit::acquire_permit(&mut held, holder, max, until, now);
    if decision.allowed {
        c.prepare_cached(
            "INSERT INTO celeriac_limit_permits (key, holder, until) VALUES (?1, ?2, ?3) \
             ON CONFLICT (key, holder) DO UPDATE SET until = excluded.until",
        )?
        .execute(params![key, holder, until])?;
    }
    Ok(decision)
}

fn release(c: &Connection, key: &str, holder: &str, now: UnixMs) -> rusqlite::Result<bool> {
    let live = c
        .prepare_cached(
            "DELETE FROM celeriac_limit_permits WHERE key = ?1 AND holder = ?2 AND until > ?3",
        )?
        .execute(params![key, holder, now])?;
    c.prepare_cached("DELETE FROM celeriac_limit_permits WHERE key = ?1 AND holder = ?2")?
        .execute(params![key, holder])?;
    Ok(live > 0)
}

/// Part of `reap`: limiter rows and permits that no longer matter.
pub(crate) fn sweep(c: &Connection, now: UnixMs) -> rusqlite::Result<()> {
    c.prepare_cached(
        "DELETE FROM celeriac_limits WHERE (key, quota) IN (SELECT key, quota \
         FROM celeriac_limits WHERE expires_at <= ?1 LIMIT ?2)",
    )?
    .execute(params![now, BATCH])?;
    c.prepare_cached(
        "DELETE FROM celeriac_limit_permits WHERE (key, holder) IN (SELECT key, holder \
         FROM celeriac_limit_permits WHERE until <= ?1 LIMIT ?2)",
    )?
    .execute(params![now, BATCH])?;
    Ok(())
}

impl RateLimitStore for SqliteBackend {
    async fn check_limits(
        &self,
        key: &str,
        quotas: &[Quota],
        cost: u32,
        now: UnixMs,
    ) -> Result<Decision> {
        limit::check_request(key, quotas, cost)?;
        if quotas.is_empty() {
            return Ok(Decision::unlimited());
        }
        let key = key.to_string();
        let quotas = quotas.to_vec();
        self.inner
            .writer
            .call(move |c| check(c, &key, &quotas, cost, now))
            .await
    }

    async fn acquire_permit(
        &self,
        key: &str,
        holder: &str,
        max: u32,
        lease: Duration,
        now: UnixMs,
    ) -> Result<Decision> {
        limit::check_permit(key, holder, max, lease)?;
        let (key, holder) = (key.to_string(), holder.to_string());
        let until = now.saturating_add(duration_ms(lease));
        self.inner
            .writer
            .call(move |c| acquire(c, &key, &holder, max, until, now))
            .await
    }

    async fn release_permit(&self, key: &str, holder: &str, now: UnixMs) -> Result<bool> {
        limit::check_release(key, holder)?;
        let (key, holder) = (key.to_string(), holder.to_string());
        self.inner
            .writer
            .call(move |c| release(c, &key, &holder, now))
            .await
    }
}
