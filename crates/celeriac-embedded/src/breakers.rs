//! [`BreakerStore`] on SQLite: each call one transaction on the writer thread, applying the
//! rules of [`SharedRecord`], so every process on the file sees one verdict.

use crate::{decode, SqliteBackend};
use celeriac_core::backend::{
    BreakerCommand, BreakerPolicy, BreakerSignal, BreakerStore, SharedBreakerState,
};
use celeriac_core::breaker::shared::{oldest_epoch, Effects, SharedRecord};
use celeriac_core::breaker::{BreakerState, Counts, MAX_NAME_LEN};
use celeriac_core::clock::UnixMs;
use celeriac_core::error::{Error, Result};
use rusqlite::{params, Connection, OptionalExtension};

/// Rows one sweep deletes at most per table.
const BATCH: i64 = 1000;

fn check_name(name: &str) -> Result<()> {
    if name.is_empty() || name.len() > MAX_NAME_LEN {
        return Err(Error::config(
            "breaker name",
            format!(
                "a breaker name needs 1 to {MAX_NAME_LEN} bytes, this one has {}",
                name.len()
            ),
        ));
    }
    Ok(())
}

fn to_u32(v: i64) -> u32 {
    u32::try_from(v.max(0)).unwrap_or(u32::MAX)
}

/// The live record of `name` (an expired one reads as absent). A field that does not read
/// as an integer reads as its default (a closed breaker, no trips), so a damaged record is
/// judged afresh rather than failing every call of the breaker.
fn load(c: &Connection, name: &str, now: UnixMs) -> rusqlite::Result<Option<SharedRecord>> {
    c.prepare_cached(
        "SELECT state, open_until, trips, generation, since, probe_ok, probe_fail \
         FROM celeriac_breakers WHERE name = ?1 AND expires_at > ?2",
    )?
    .query_row(params![name, now], |r| {
        let int = |i| decode::int(r, i).unwrap_or(0);
        Ok(SharedRecord {
            state: BreakerState::from_code(u8::try_from(int(0)).unwrap_or(0))
                .unwrap_or(BreakerState::Closed),
            open_until: int(1),
            trips: to_u32(int(2)),
            generation: u64::try_from(int(3)).unwrap_or(0),
            since: int(4),
            probe_ok: to_u32(int(5)),
            probe_fail: to_u32(int(6)),
        })
    })
    .optional()
}

fn save(
    c: &Connection,
    name: &str,
    rec: &SharedRecord,
    expires_at: UnixMs,
) -> rusqlite::Result<()> {
    c.prepare_cached(
        "INSERT INTO celeriac_breakers (name, state, open_until, trips, generation, since, \
         probe_ok, probe_fail, expires_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) \
         ON CONFLICT (name) DO UPDATE SET state = ?2, open_until = ?3, trips = ?4, \
         generation = ?5, since = ?6, probe_ok = ?7, probe_fail = ?8, expires_at = ?9",
    )?
    .execute(params![
        name,
        i64::from(rec.state.code()),
        rec.open_until,
        i64::from(rec.trips),
        i64::try_from(rec.generation).unwrap_or(i64::MAX),
        rec.since,
        i64::from(rec.probe_ok),
        i64::from(rec.probe_fail),
        expires_at
    ])?;
    Ok(())
}

fn apply(c: &Connection, name: &str, e: Effects) -> rusqlite::Result<()> {
    if e.clear_probes {
        c.prepare_cached("DELETE FROM celeriac_breaker_probes WHERE name = ?1")?
            .execute(params![name])?;
    }
    if e.clear_signals {
        c.prepare_cached("DELETE FROM celeriac_breaker_signals WHERE name = ?1")?
            .execute(params![name])?;
    }
    Ok(())
}

/// The window's counts per instance (signals of epochs before `oldest` are left out).
fn per_instance(
    c: &Connection,
    name: &str,
    oldest: i64,
    now: UnixMs,
) -> rusqlite::Result<Vec<Counts>> {
    // total() rather than sum(): a float that never overflows (sum() of large counts fails),
    // and counts of signals that hold no number add nothing.
    let mut stmt = c.prepare_cached(
        "SELECT instance, total(calls), total(failures), total(slow) \
         FROM celeriac_breaker_signals \
         WHERE name = ?1 AND epoch >= ?2 AND expires_at > ?3 GROUP BY instance",
    )?;
    // A float as a count: negative and NaN read as 0, too large as the largest.
    let count = |r: &rusqlite::Row<'_>, i| r.get::<_, f64>(i).map(|f| f as u64);
    let rows = stmt.query_map(params![name, oldest, now], |r| {
        Ok(Counts {
            calls: count(r, 1)?,
            failures: count(r, 2)?,
            slow: count(r, 3)?,
        })
    })?;
    rows.collect()
}

fn state_of(rec: &SharedRecord, per: &[Counts]) -> SharedBreakerState {
    let mut window = Counts::default();
    for c in per {
        window.add(*c);
    }
    SharedBreakerState {
        state: rec.state,
        open_until: rec.open_until,
        trips: rec.trips,
        generation: rec.generation,
        window,
        instances: u32::try_from(per.iter().filter(|c| c.calls > 0).count()).unwrap_or(u32::MAX),
    }
}

/// Loads and settles the record, runs `rule` on it, saves it, and returns the state.
fn update(
    c: &Connection,
    name: &str,
    policy: &BreakerPolicy,
    now: UnixMs,
    rule: impl FnOnce(&Connection, &mut SharedRecord, i64) -> rusqlite::Result<Effects>,
) -> rusqlite::Result<SharedBreakerState> {
    let mut rec = load(c, name, now)?.unwrap_or(SharedRecord {
        since: now,
        ..SharedRecord::default()
    });
    apply(c, name, rec.settle(now))?;
    let oldest = oldest_epoch(policy.window_ms, policy.bucket_ms, now);
    let ruled = rule(c, &mut rec, oldest)?;
    apply(c, name, ruled)?;
    let expires_at = now.saturating_add(policy.ttl_ms());
    save(c, name, &rec, expires_at)?;
    let per = per_instance(c, name, oldest, now)?;
    Ok(state_of(&rec, &per))
}

fn report(
    c: &Connection,
    name: &str,
    signal: &BreakerSignal,
    policy: &BreakerPolicy,
    now: UnixMs,
) -> rusqlite::Result<SharedBreakerState> {
    let bucket = policy.bucket_ms.max(1);
    let expires_at = now.saturating_add(policy.ttl_ms());
    update(c, name, policy, now, |c, rec, oldest| {
        c.prepare_cached("DELETE FROM celeriac_breaker_signals WHERE name = ?1 AND epoch < ?2")?
            .execute(params![name, oldest])?;
        if !signal.instance.is_empty() && signal.calls > 0 {
            let n = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
            c.prepare_cached(
                "INSERT INTO celeriac_breaker_signals (name, epoch, instance, calls, failures, \
                 slow, expires_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) \
                 ON CONFLICT (name, epoch, instance) DO UPDATE SET calls = calls + ?4, \
                 failures = failures + ?5, slow = slow + ?6, expires_at = ?7",
            )?
            .execute(params![
                name,
                now.div_euclid(bucket),
                signal.instance,
                n(signal.calls),
                n(signal.failures),
                n(signal.slow),
                expires_at
            ])?;
        }
        let per = per_instance(c, name, oldest, now)?;
        Ok(rec.judge(&per, policy, now))
    })
}

fn probe(
    c: &Connection,
    name: &str,
    token: &str,
    policy: &BreakerPolicy,
    now: UnixMs,
) -> rusqlite::Result<(bool, SharedBreakerState)> {
    let mut granted = false;
    let state = update(c, name, policy, now, |c, rec, _| {
        if rec.state != BreakerState::HalfOpen {
            return Ok(Effects::default());
        }
        c.prepare_cached(
            "DELETE FROM celeriac_breaker_probes WHERE name = ?1 AND expires_at <= ?2",
        )?
        .execute(params![name, now])?;
        let live: i64 = c
            .prepare_cached("SELECT count(*) FROM celeriac_breaker_probes WHERE name = ?1")?
            .query_row(params![name], |r| r.get(0))?;
        if live < i64::from(policy.probes) {
            granted =
                c.prepare_cached(
                    "INSERT OR IGNORE INTO celeriac_breaker_probes (name, token, expires_at) \
                     VALUES (?1, ?2, ?3)",
                )?
                .execute(params![
                    name,
                    token,
                    now.saturating_add(policy.probe_lease_ms)
                ])? > 0;
        }
        Ok(Effects::default())
    })?;
    Ok((granted, state))
}

fn probe_done(
    c: &Connection,
    name: &str,
    token: &str,
    failed: bool,
    policy: &BreakerPolicy,
    now: UnixMs,
) -> rusqlite::Result<SharedBreakerState> {
    update(c, name, policy, now, |c, rec, _| {
        let held = c
            .prepare_cached(
                "DELETE FROM celeriac_breaker_probes WHERE name = ?1 AND token = ?2 AND expires_at > ?3",
            )?
            .execute(params![name, token, now])?
            > 0;
        if !held {
            return Ok(Effects::default());
        }
        Ok(rec.probe_result(failed, policy, now))
    })
}

/// Part of `reap`: breaker rows past their expiry.
pub(crate) fn sweep(c: &Connection, now: UnixMs) -> rusqlite::Result<()> {
    c.prepare_cached(
        "DELETE FROM celeriac_breakers WHERE name IN (SELECT name FROM celeriac_breakers \
         WHERE expires_at <= ?1 LIMIT ?2)",
    )?
    .execute(params![now, BATCH])?;
    c.prepare_cached(
        "DELETE FROM celeriac_breaker_signals WHERE (name, epoch, instance) IN \
         (SELECT name, epoch, instance FROM celeriac_breaker_signals WHERE expires_at <= ?1 LIMIT ?2)",
    )?
    .execute(params![now, BATCH])?;
    c.prepare_cached(
        "DELETE FROM celeriac_breaker_probes WHERE (name, token) IN \
         (SELECT name, token FROM celeriac_breaker_probes WHERE expires_at <= ?1 LIMIT ?2)",
    )?
    .execute(params![now, BATCH])?;
    Ok(())
}

impl BreakerStore for SqliteBackend {
    async fn breaker_report(
        &self,
        name: &str,
        signal: BreakerSignal,
        policy: &BreakerPolicy,
        now: UnixMs,
    ) -> Result<SharedBreakerState> {
        check_name(name)?;
        let (name, policy) = (name.to_string(), policy.clone());
        self.inner
            .writer
            .call(move |c| report(c, &name, &signal, &policy, now))
            .await
    }

    async fn breaker_probe(
        &self,
        name: &str,
        token: &str,
        policy: &BreakerPolicy,
        now: UnixMs,
    ) -> Result<(bool, SharedBreakerState)> {
        check_name(name)?;
        let (name, token, policy) = (name.to_string(), token.to_string(), policy.clone());
        self.inner
            .writer
            .call(move |c| probe(c, &name, &token, &policy, now))
            .await
    }

    async fn breaker_probe_done(
        &self,
        name: &str,
        token: &str,
        failed: bool,
        policy: &BreakerPolicy,
        now: UnixMs,
    ) -> Result<SharedBreakerState> {
        check_name(name)?;
        let (name, token, policy) = (name.to_string(), token.to_string(), policy.clone());
        self.inner
            .writer
            .call(move |c| probe_done(c, &name, &token, failed, &policy, now))
            .await
    }

    async fn breaker_command(
        &self,
        name: &str,
        command: BreakerCommand,
        policy: &BreakerPolicy,
        now: UnixMs,
    ) -> Result<SharedBreakerState> {
        check_name(name)?;
        let (name, policy) = (name.to_string(), policy.clone());
        self.inner
            .writer
            .call(move |c| {
                update(c, &name, &policy, now, |_, rec, _| {
                    Ok(rec.command(command, now))
                })
            })
            .await
    }

    async fn breaker_status(&self, name: &str, now: UnixMs) -> Result<Option<SharedBreakerState>> {
        check_name(name)?;
        let name = name.to_string();
        self.inner
            .reads()
            .call(move |c| {
                let Some(mut rec) = load(c, &name, now)? else {
                    return Ok(None);
                };
                rec.settle(now);
                // Reports drop signals older than the window, so the live ones are the window
                // as of the last report.
                let per = per_instance(c, &name, i64::MIN, now)?;
                Ok(Some(state_of(&rec, &per)))
            })
            .await
    }
}
