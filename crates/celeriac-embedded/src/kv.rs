//! [`KvStore`] on SQLite: values with an expiry, counters, lease locks and a broadcast channel
//! that reaches every process on the file.
//!
//! - **Values** live in `celeriac_kv` with `expires_at` (ms); a row whose `expires_at` is not
//!   after the caller's `now` reads as absent. Expired rows are swept in batches by `reap`
//!   and, a few at a time, by `kv_set`.
//! - **Counters** are rows of the same table without an expiry, whose value is the count in
//!   decimal text (what `kv_get` returns for them, as on Redis).
//! - **Locks** live in `celeriac_kv_locks`, a namespace of their own; one is held while its
//!   `until` is after the caller's `now`.
//! - **Broadcast**: a publish inserts a row in `celeriac_kv_events` and wakes this process's
//!   subscriptions at once. Every subscription also polls for rows past the last one it saw
//!   every [`POLL`] (100 ms): that is how long a message from another process may take. Rows
//!   older than [`RETENTION`] (60 s) are swept; a subscription that finds rows it had not seen
//!   were swept, or whose poll fails, emits [`KvEvent::Reset`].
//!
//! Every call is one transaction on the writer thread, so several processes on one file agree.

use crate::{decode, Inner, SqliteBackend};
use celeriac_core::backend::{
    check_kv_key, check_kv_ttl, KvEntry, KvEvent, KvStore, KvSubscription,
};
use celeriac_core::clock::{duration_ms, Clock, UnixMs};
use celeriac_core::error::{Error, Result};
use rusqlite::{params, Connection, OptionalExtension};
use std::sync::Weak;
use std::time::Duration;
use tokio::sync::mpsc;
use tracing::debug;

/// How often a subscription looks for messages published by other processes.
pub(crate) const POLL: Duration = Duration::from_millis(100);

/// How long broadcast messages are kept for subscriptions to read.
pub(crate) const RETENTION: Duration = Duration::from_secs(60);

/// Rows one sweep deletes at most; `kv_set` sweeps fewer, so writes stay cheap.
const BATCH: i64 = 1000;
const LAZY_BATCH: i64 = 64;

/// Events a subscription buffers before its poller waits for the reader.
const BUFFER: usize = 256;

fn not_a_counter(key: &str) -> rusqlite::Error {
    rusqlite::Error::ToSqlConversionFailure(
        format!("kv_incr: `{key}` holds a value that is not a counter").into(),
    )
}

fn get(c: &Connection, keys: &[String], now: UnixMs) -> rusqlite::Result<Vec<Option<Vec<u8>>>> {
    let mut stmt = c.prepare_cached(
        "SELECT value FROM celeriac_kv \
         WHERE key = ?1 AND (expires_at IS NULL OR expires_at > ?2)",
    )?;
    // A value stored as text or a number (a counter, a hand edit) reads as its bytes.
    keys.iter()
        .map(|k| {
            stmt.query_row(params![k, now], |r| Ok(decode::bytes(r, 0)))
                .optional()
                .map(Option::flatten)
        })
        .collect()
}

fn set(c: &Connection, entries: &[KvEntry], now: UnixMs) -> rusqlite::Result<()> {
    let mut stmt = c.prepare_cached(
        "INSERT INTO celeriac_kv (key, value, expires_at) VALUES (?1, ?2, ?3) \
         ON CONFLICT (key) DO UPDATE SET value = excluded.value, expires_at = excluded.expires_at",
    )?;
    for e in entries {
        let until = now.saturating_add(duration_ms(e.ttl));
        stmt.execute(params![e.key, e.value, until])?;
    }
    sweep_values(c, now, LAZY_BATCH)?;
    Ok(())
}

fn delete(c: &Connection, keys: &[String], now: UnixMs) -> rusqlite::Result<u64> {
    let mut live = c.prepare_cached(
        "DELETE FROM celeriac_kv WHERE key = ?1 AND (expires_at IS NULL OR expires_at > ?2)",
    )?;
    let mut any = c.prepare_cached("DELETE FROM celeriac_kv WHERE key = ?1")?;
    let mut n = 0;
    for k in keys {
        n += live.execute(params![k, now])? as u64;
        // An expired row did not exist for the caller; it goes too.
        any.execute(params![k])?;
    }
    Ok(n)
}

fn incr(c: &Connection, key: &str, now: UnixMs) -> rusqlite::Result<i64> {
    let row: Option<(Vec<u8>, Option<i64>)> = c
        .prepare_cached("SELECT value, expires_at FROM celeriac_kv WHERE key = ?1")?
        .query_row(params![key], |r| {
            Ok((decode::bytes(r, 0).unwrap_or_default(), r.get(1)?))
        })
        .optional()?;
    let next = match row {
        // Absent, or a value that expired: counts from 0.
        None => 1,
        Some((_, Some(until))) if until <= now => 1,
        Some((_, Some(_))) => return Err(not_a_counter(key)),
        Some((value, None)) => std::str::from_utf8(&value)
            .ok()
            .and_then(|s| s.parse::<i64>().ok())
            .and_then(|n| n.checked_add(1))
            .ok_or_else(|| not_a_counter(key))?,
    };
    c.prepare_cached(
        "INSERT INTO celeriac_kv (key, value, expires_at) VALUES (?1, ?2, NULL) \
         ON CONFLICT (key) DO UPDATE SET value = excluded.value, expires_at = NULL",
    )?
    .execute(params![key, next.to_string().into_bytes()])?;
    Ok(next)
}

fn lock(
    c: &Connection,
    key: &str,
    token: &str,
    until: UnixMs,
    now: UnixMs,
) -> rusqlite::Result<bool> {
    let changed = c
        .prepare_cached(
            "INSERT INTO celeriac_kv_locks (key, token, until) VALUES (?1, ?2, ?3) \
             ON CONFLICT (key) DO UPDATE SET token = excluded.token, until = excluded.until \
             WHERE celeriac_kv_locks.until <= ?4",
        )?
        .execute(params![key, token, until, now])?;
    Ok(changed > 0)
}

fn unlock(c: &Connection, key: &str, token: &str) -> rusqlite::Result<bool> {
    let n = c
        .prepare_cached("DELETE FROM celeriac_kv_locks WHERE key = ?1 AND token = ?2")?
        .execute(params![key, token])?;
    Ok(n > 0)
}

fn publish(c: &Connection, channel: &str, message: &[u8], at: UnixMs) -> rusqlite::Result<()> {
    c.prepare_cached("INSERT INTO celeriac_kv_events (channel, message, at) VALUES (?1, ?2, ?3)")?
        .execute(params![channel, message, at])?;
    sweep_events(c, at, LAZY_BATCH)
}

/// The sequence number a new subscription starts after: everything published so far, or
/// swept, is behind it.
fn head(c: &Connection) -> rusqlite::Result<i64> {
    c.query_row(
        "SELECT max(COALESCE((SELECT max(seq) FROM celeriac_kv_events), 0), \
                    COALESCE((SELECT value FROM celeriac_meta WHERE key = 'kv_swept'), 0))",
        [],
        |r| r.get(0),
    )
}

/// What one poll finds: the highest swept seq, and the channel's messages after `last`.
struct Poll {
    swept: i64,
    rows: Vec<(i64, Vec<u8>)>,
}

fn poll(c: &Connection, channel: &str, last: i64) -> rusqlite::Result<Poll> {
    let swept: i64 = c
        .prepare_cached("SELECT value FROM celeriac_meta WHERE key = 'kv_swept'")?
        .query_row([], |r| Ok(decode::int(r, 0)))
        .optional()?
        .flatten()
        .unwrap_or(0);
    let mut stmt = c.prepare_cached(
        "SELECT seq, message FROM celeriac_kv_events WHERE channel = ?1 AND seq > ?2 \
         ORDER BY seq LIMIT ?3",
    )?;
    let rows = stmt
        .query_map(params![channel, last, BATCH], |r| {
            Ok((r.get(0)?, decode::bytes(r, 1).unwrap_or_default()))
        })?
        .collect::<rusqlite::Result<_>>()?;
    Ok(Poll { swept, rows })
}

fn sweep_values(c: &Connection, now: UnixMs, limit: i64) -> rusqlite::Result<()> {
    c.prepare_cached(
        "DELETE FROM celeriac_kv WHERE key IN (SELECT key FROM celeriac_kv \
         WHERE expires_at IS NOT NULL AND expires_at <= ?1 LIMIT ?2)",
    )?
    .execute(params![now, limit])?;
    Ok(())
}

/// Deletes messages published before `now - RETENTION` and records the highest seq deleted.
fn sweep_events(c: &Connection, now: UnixMs, limit: i64) -> rusqlite::Result<()> {
    let cutoff = now.saturating_sub(duration_ms(RETENTION));
    let max: Option<i64> = c
        .prepare_cached(
            "SELECT max(seq) FROM (SELECT seq FROM celeriac_kv_events WHERE at < ?1 \
             ORDER BY seq LIMIT ?2)",
        )?
        .query_row(params![cutoff, limit], |r| r.get(0))?;
    let Some(max) = max else { return Ok(()) };
    c.prepare_cached("DELETE FROM celeriac_kv_events WHERE seq <= ?1 AND at < ?2")?
        .execute(params![max, cutoff])?;
    c.prepare_cached("UPDATE celeriac_meta SET value = max(value, ?1) WHERE key = 'kv_swept'")?
        .execute(params![max])?;
    Ok(())
}

/// Part of `reap`: expired values and locks, and messages past their retention.
pub(crate) fn sweep(c: &Connection, now: UnixMs) -> rusqlite::Result<()> {
    sweep_values(c, now, BATCH)?;
    c.prepare_cached(
        "DELETE FROM celeriac_kv_locks WHERE key IN (SELECT key FROM celeriac_kv_locks \
         WHERE until <= ?1 LIMIT ?2)",
    )?
    .execute(params![now, BATCH])?;
    sweep_events(c, now, BATCH)
}

fn check_keys<'a>(keys: impl IntoIterator<Item = &'a str>) -> Result<()> {
    for k in keys {
        check_kv_key(k, <SqliteBackend as KvStore>::MAX_KEY_LEN)?;
    }
    Ok(())
}

impl KvStore for SqliteBackend {
    async fn kv_get(&self, keys: Vec<String>, now: UnixMs) -> Result<Vec<Option<Vec<u8>>>> {
        check_keys(keys.iter().map(String::as_str))?;
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        self.inner.writer.call(move |c| get(c, &keys, now)).await
    }

    async fn kv_set(&self, entries: Vec<KvEntry>, now: UnixMs) -> Result<()> {
        for e in &entries {
            check_kv_key(&e.key, Self::MAX_KEY_LEN)?;
            check_kv_ttl(&e.key, e.ttl)?;
        }
        if entries.is_empty() {
            return Ok(());
        }
        self.inner.writer.call(move |c| set(c, &entries, now)).await
    }

    async fn kv_delete(&self, keys: Vec<String>, now: UnixMs) -> Result<u64> {
        check_keys(keys.iter().map(String::as_str))?;
        if keys.is_empty() {
            return Ok(0);
        }
        self.inner.writer.call(move |c| delete(c, &keys, now)).await
    }

    async fn kv_incr(&self, key: &str, now: UnixMs) -> Result<i64> {
        check_kv_key(key, Self::MAX_KEY_LEN)?;
        let key = key.to_string();
        self.inner.writer.call(move |c| incr(c, &key, now)).await
    }

    async fn kv_lock(&self, key: &str, token: &str, ttl: Duration, now: UnixMs) -> Result<bool> {
        check_kv_key(key, Self::MAX_KEY_LEN)?;
        check_kv_ttl(key, ttl)?;
        let (key, token) = (key.to_string(), token.to_string());
        let until = now.saturating_add(duration_ms(ttl));
        self.inner
            .writer
            .call(move |c| lock(c, &key, &token, until, now))
            .await
    }

    async fn kv_unlock(&self, key: &str, token: &str) -> Result<bool> {
        check_kv_key(key, Self::MAX_KEY_LEN)?;
        let (key, token) = (key.to_string(), token.to_string());
        self.inner
            .writer
            .call(move |c| unlock(c, &key, &token))
            .await
    }

    async fn kv_publish(&self, channel: &str, message: Vec<u8>) -> Result<()> {
        let channel = channel.to_string();
        // The trait gives no `now`: the stamp only serves the retention of the events table,
        // never a deadline a caller relies on.
        let at = self.inner.clock.now_ms();
        self.inner
            .writer
            .call(move |c| publish(c, &channel, &message, at))
            .await?;
        self.inner.kv_wake.send_modify(|v| *v = v.wrapping_add(1));
        Ok(())
    }

    async fn kv_subscribe(&self, channel: &str) -> Result<KvSubscription> {
        let last = self.inner.writer.call(head).await?;
        let (tx, rx) = mpsc::channel(BUFFER);
        tokio::spawn(run_subscription(
            std::sync::Arc::downgrade(&self.inner),
            channel.to_string(),
            last,
            tx,
        ));
        Ok(KvSubscription::new(rx))
    }
}

/// Feeds one subscription until it is dropped or the backend is.
async fn run_subscription(
    inner: Weak<Inner>,
    channel: String,
    mut last: i64,
    tx: mpsc::Sender<KvEvent>,
) {
    let Some(mut wake) = inner.upgrade().map(|i| i.kv_wake.subscribe()) else {
        return;
    };
    // True while polls fail: one Reset per outage.
    let mut failing = false;
    loop {
        tokio::select! {
            _ = tx.closed() => return,
            woke = tokio::time::timeout(POLL, wake.changed()) => {
                if let Ok(Err(_)) = woke {
                    return; // the backend was dropped
                }
            }
        }
        let found = {
            let Some(inner) = inner.upgrade() else { return };
            let ch = channel.clone();
            inner.writer.call(move |c| poll(c, &ch, last)).await
        };
        match found {
            Ok(p) => {
                let mut events = Vec::with_capacity(p.rows.len() + 1);
                if p.swept > last {
                    events.push(KvEvent::Reset);
                }
                failing = false;
                last = last.max(p.swept);
                for (seq, message) in p.rows {
                    last = last.max(seq);
                    events.push(KvEvent::Message(message));
                }
                for e in events {
                    if tx.send(e).await.is_err() {
                        return;
                    }
                }
            }
            Err(Error::Closed) => return,
            Err(e) => {
                debug!(error = %e, channel = %channel, "kv subscription poll failed");
                if !failing {
                    failing = true;
                    if tx.send(KvEvent::Reset).await.is_err() {
                        return;
                    }
                }
            }
        }
    }
}
