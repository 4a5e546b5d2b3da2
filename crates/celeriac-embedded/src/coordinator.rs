//! [`Coordinator`] on SQLite: leader leases with fencing tokens and schedule state, each call
//! one transaction on the writer thread (so several processes on one file agree).

use crate::SqliteBackend;
use celeriac_core::backend::{Coordinator, ScheduleState};
use celeriac_core::clock::{duration_ms, UnixMs};
use celeriac_core::error::Result;
use rusqlite::{params, Connection, OptionalExtension};
use std::time::Duration;

fn acquire(
    c: &Connection,
    name: &str,
    holder: &str,
    until: UnixMs,
    now: UnixMs,
) -> rusqlite::Result<Option<u64>> {
    let row: Option<(String, i64, i64)> = c
        .query_row(
            "SELECT holder, token, until FROM celeriac_leaders WHERE name = ?1",
            params![name],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .optional()?;
    let token = match row {
        None => {
            c.execute(
                "INSERT INTO celeriac_leaders (name, holder, token, until) VALUES (?1, ?2, 1, ?3)",
                params![name, holder, until],
            )?;
            1
        }
        // A renewal: the lease never changed hands, so the token stays.
        Some((h, token, _)) if h == holder => {
            c.execute(
                "UPDATE celeriac_leaders SET until = ?2 WHERE name = ?1",
                params![name, until],
            )?;
            token
        }
        Some((_, _, held_until)) if held_until > now => return Ok(None),
        Some((_, token, _)) => {
            let token = token + 1;
            c.execute(
                "UPDATE celeriac_leaders SET holder = ?2, token = ?3, until = ?4 WHERE name = ?1",
                params![name, holder, token, until],
            )?;
            token
        }
    };
    Ok(Some(u64::try_from(token).unwrap_or(0)))
}

fn holds(c: &Connection, name: &str, token: u64, now: UnixMs) -> rusqlite::Result<bool> {
    let token = i64::try_from(token).unwrap_or(-1);
    Ok(c.query_row(
        "SELECT count(*) FROM celeriac_leaders
         WHERE name = ?1 AND token = ?2 AND holder <> '' AND until > ?3",
        params![name, token, now],
        |r| r.get::<_, i64>(0),
    )? > 0)
}

impl Coordinator for SqliteBackend {
    async fn acquire_leader(
        &self,
        name: &str,
        holder: &str,
        ttl: Duration,
        now: UnixMs,
    ) -> Result<Option<u64>> {
        let (name, holder) = (name.to_string(), holder.to_string());
        let until = now.saturating_add(duration_ms(ttl));
        self.inner
            .writer
            .call(move |c| acquire(c, &name, &holder, until, now))
            .await
    }

    async fn release_leader(&self, name: &str, token: u64) -> Result<bool> {
        let name = name.to_string();
        let token = i64::try_from(token).unwrap_or(-1);
        self.inner
            .writer
            .call(move |c| {
                Ok(c.execute(
                    "UPDATE celeriac_leaders SET holder = '', until = ?3
                     WHERE name = ?1 AND token = ?2 AND holder <> ''",
                    params![name, token, i64::MIN],
                )? > 0)
            })
            .await
    }

    async fn schedule_states(&self) -> Result<Vec<ScheduleState>> {
        self.inner
            .reads()
            .call(|c| {
                let mut stmt = c.prepare_cached(
                    "SELECT name, last_tick, paused FROM celeriac_schedules ORDER BY name",
                )?;
                let rows = stmt.query_map([], |r| {
                    Ok(ScheduleState {
                        name: r.get(0)?,
                        last_tick: r.get(1)?,
                        paused: r.get::<_, i64>(2)? != 0,
                    })
                })?;
                rows.collect()
            })
            .await
    }

    async fn record_tick(
        &self,
        leader: &str,
        token: u64,
        schedule: &str,
        tick: UnixMs,
        now: UnixMs,
    ) -> Result<bool> {
        self.inner.config.role.allow_queues("run schedules")?;
        let (leader, schedule) = (leader.to_string(), schedule.to_string());
        self.inner
            .writer
            .call(move |c| {
                if !holds(c, &leader, token, now)? {
                    return Ok(false);
                }
                let changed = c.execute(
                    "INSERT INTO celeriac_schedules (name, last_tick) VALUES (?1, ?2)
                     ON CONFLICT (name) DO UPDATE SET last_tick = excluded.last_tick
                     WHERE last_tick IS NULL OR last_tick < excluded.last_tick",
                    params![schedule, tick],
                )?;
                Ok(changed > 0)
            })
            .await
    }

    async fn set_schedule_paused(&self, schedule: &str, paused: bool) -> Result<()> {
        let schedule = schedule.to_string();
        self.inner
            .writer
            .call(move |c| {
                c.execute(
                    "INSERT INTO celeriac_schedules (name, paused) VALUES (?1, ?2)
                     ON CONFLICT (name) DO UPDATE SET paused = excluded.paused",
                    params![schedule, i64::from(paused)],
                )?;
                Ok(())
            })
            .await
    }
}
