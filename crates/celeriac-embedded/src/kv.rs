//! [`KvStore`] on SQLite: values with an expiry, counters, lease locks and a broadcast channel
//! that reaches every process on the file.
//!
//! - **Values** live in `celeriac_kv` with `expires_at` (ms); a row whose `expires_at` is not
//!   after the caller's `now` reads as absent. Expired rows are swept in batches by `reap`
//!   and, a few at a time, by `kv_set`.
//! - **Counters** are rows of the same table without an expiry, whose value is the count in
//!   decimal text (what `kv_get` returns for them, as on Redis).
//! - **Cap** (`?max_bytes=`): the bytes of every row's key and value are kept in `celeriac_meta`
//!   as `kv_bytes` by triggers on the table, so they stay exact whoever writes it. A write
//!   (`kv_set`, `kv_ensure`, `kv_incr`) that leaves the total over the cap deletes, in its own
//!   transaction, expired values first, then the values with the lowest `written` (a sequence
//!   in `celeriac_meta` that every write of a row takes the next number of) until the total is
//!   under the cap, at most [`KV_EVICT_MAX`] of them per write; `kv_evicted` in `celeriac_meta`
//!   counts them. Counters are counted and never evicted.
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
    check_kv_entries, check_kv_key, check_kv_ttl, KvEntry, KvEvent, KvMemory, KvStore,
    KvSubscription,
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

/// Most values one write evicts to bring a capped file under its cap; a write that would need
/// more leaves the rest to the next one, so no write holds the file for long.
pub const KV_EVICT_MAX: usize = 2_000;

/// Values the eviction reads at a time, oldest written first.
const EVICT_CHUNK: usize = 256;

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

/// Takes `n` numbers of the write sequence that orders eviction; returns the first.
fn next_written(c: &Connection, n: usize) -> rusqlite::Result<i64> {
    let n = i64::try_from(n).unwrap_or(i64::MAX);
    let last = c
        .prepare_cached(
            "INSERT INTO celeriac_meta (key, value) VALUES ('kv_written', ?1) \
             ON CONFLICT (key) DO UPDATE SET value = value + excluded.value RETURNING value",
        )?
        .query_row(params![n], |r| Ok(decode::int(r, 0)))?
        .unwrap_or(n);
    Ok(last.saturating_sub(n).saturating_add(1))
}

/// An integer kept in `celeriac_meta`; 0 when absent or not an integer.
fn meta(c: &Connection, key: &str) -> rusqlite::Result<i64> {
    Ok(
        c.prepare_cached("SELECT value FROM celeriac_meta WHERE key = ?1")?
            .query_row(params![key], |r| Ok(decode::int(r, 0)))
            .optional()?
            .flatten()
            .unwrap_or(0),
    )
}

/// After a write: while the byte total is over `cap` (0: none), deletes expired values, then
/// the least recently written ones, at most [`KV_EVICT_MAX`]; counts those in `kv_evicted`.
fn evict(c: &Connection, cap: u64, now: UnixMs) -> rusqlite::Result<()> {
    if cap == 0 {
        return Ok(());
    }
    let cap = i64::try_from(cap).unwrap_or(i64::MAX);
    let mut used = meta(c, "kv_bytes")?;
    if used <= cap {
        return Ok(());
    }
    // Expired values are gone for every reader already: they go first, and are no evictions.
    sweep_values(c, now, LAZY_BATCH)?;
    used = meta(c, "kv_bytes")?;
    let mut oldest = c.prepare_cached(
        "SELECT rowid, length(key) + length(value) FROM celeriac_kv \
         WHERE expires_at IS NOT NULL ORDER BY written LIMIT ?1",
    )?;
    let mut drop_row = c.prepare_cached("DELETE FROM celeriac_kv WHERE rowid = ?1")?;
    let mut evicted = 0usize;
    while used > cap && evicted < KV_EVICT_MAX {
        let chunk = EVICT_CHUNK.min(KV_EVICT_MAX - evicted);
        let rows: Vec<(i64, i64)> = oldest
            .query_map(params![i64::try_from(chunk).unwrap_or(0)], |r| {
                Ok((r.get(0)?, decode::int(r, 1).unwrap_or(0)))
            })?
            .collect::<rusqlite::Result<_>>()?;
        if rows.is_empty() {
            break; // counters alone are over the cap
        }
        // The sizes read here only choose how many go; the total the triggers keep decides.
        let mut excess = used - cap;
        for (rowid, size) in rows {
            evicted += drop_row.execute(params![rowid])?;
            excess -= size.max(1);
            if excess <= 0 {
                break;
            }
        }
        used = meta(c, "kv_bytes")?;
    }
    if evicted > 0 {
        c.prepare_cached(
            "INSERT INTO celeriac_meta (key, value) VALUES ('kv_evicted', ?1) \
             ON CONFLICT (key) DO UPDATE SET value = value + excluded.value",
        )?
        .execute(params![i64::try_from(evicted).unwrap_or(i64::MAX)])?;
    }
    Ok(())
}

fn set(c: &Connection, entries: &[KvEntry], now: UnixMs, cap: u64) -> rusqlite::Result<()> {
    let first = next_written(c, entries.len())?;
    let mut stmt = c.prepare_cached(
        "INSERT INTO celeriac_kv (key, value, expires_at, written) VALUES (?1, ?2, ?3, ?4) \
         ON CONFLICT (key) DO UPDATE SET value = excluded.value, \
           expires_at = excluded.expires_at, written = excluded.written",
    )?;
    for (e, written) in entries.iter().zip(first..) {
        let until = now.saturating_add(duration_ms(e.ttl));
        stmt.execute(params![e.key, e.value, until, written])?;
    }
    sweep_values(c, now, LAZY_BATCH)?;
    evict(c, cap, now)
}

/// Inserts each entry whose key is absent or expired at `now`; a live one keeps its value and
/// lives at least until its entry's ttl from `now`. Either way the key counts as written now,
/// so a capped file evicts it after the keys written before.
fn ensure(c: &Connection, entries: &[KvEntry], now: UnixMs, cap: u64) -> rusqlite::Result<()> {
    let first = next_written(c, entries.len())?;
    let mut stmt = c.prepare_cached(
        "INSERT INTO celeriac_kv (key, value, expires_at, written) VALUES (?1, ?2, ?3, ?5) \
         ON CONFLICT (key) DO UPDATE SET \
           value = CASE WHEN celeriac_kv.expires_at IS NOT NULL AND celeriac_kv.expires_at <= ?4 \
                        THEN excluded.value ELSE celeriac_kv.value END, \
           expires_at = CASE WHEN celeriac_kv.expires_at IS NULL THEN NULL \
                        WHEN celeriac_kv.expires_at <= ?4 THEN excluded.expires_at \
                        ELSE MAX(celeriac_kv.expires_at, excluded.expires_at) END, \
           written = excluded.written",
    )?;
    for (e, written) in entries.iter().zip(first..) {
        let until = now.saturating_add(duration_ms(e.ttl));
        stmt.execute(params![e.key, e.value, until, now, written])?;
    }
    evict(c, cap, now)
}

/// The byte total and evictions the file keeps, and this backend's cap.
fn memory(c: &Connection, cap: u64) -> rusqlite::Result<KvMemory> {
    let used = u64::try_from(meta(c, "kv_bytes")?).unwrap_or(0);
    let evicted = u64::try_from(meta(c, "kv_evicted")?).unwrap_or(0);
    let policy = if cap > 0 { "oldest-written" } else { "none" };
    Ok(KvMemory::new(used, cap, policy, evicted))
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

fn incr(c: &Connection, key: &str, now: UnixMs, cap: u64) -> rusqlite::Result<i64> {
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
    let written = next_written(c, 1)?;
    c.prepare_cached(
        "INSERT INTO celeriac_kv (key, value, expires_at, written) VALUES (?1, ?2, NULL, ?3) \
         ON CONFLICT (key) DO UPDATE SET value = excluded.value, expires_at = NULL, \
           written = excluded.written",
    )?
    .execute(params![key, next.to_string().into_bytes(), written])?;
    evict(c, cap, now)?;
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

/// How a batch of values is written in one transaction, under the file's cap (`set`, `ensure`).
type WriteEntries = fn(&Connection, &[KvEntry], UnixMs, u64) -> rusqlite::Result<()>;

impl SqliteBackend {
    /// Checks `entries` and writes them with `write` on the writer thread.
    async fn write_entries(
        &self,
        entries: Vec<KvEntry>,
        now: UnixMs,
        write: WriteEntries,
    ) -> Result<()> {
        check_kv_entries(&entries, Self::MAX_KEY_LEN)?;
        if entries.is_empty() {
            return Ok(());
        }
        let cap = self.inner.config.kv_max_bytes;
        self.inner
            .writer
            .call(move |c| write(c, &entries, now, cap))
            .await
    }
}

impl KvStore for SqliteBackend {
    async fn kv_get(&self, keys: Vec<String>, now: UnixMs) -> Result<Vec<Option<Vec<u8>>>> {
        check_keys(keys.iter().map(String::as_str))?;
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        self.inner.reads().call(move |c| get(c, &keys, now)).await
    }

    async fn kv_set(&self, entries: Vec<KvEntry>, now: UnixMs) -> Result<()> {
        self.write_entries(entries, now, set).await
    }

    async fn kv_ensure(&self, entries: Vec<KvEntry>, now: UnixMs) -> Result<()> {
        self.write_entries(entries, now, ensure).await
    }

    async fn kv_memory(&self) -> Result<Option<KvMemory>> {
        let cap = self.inner.config.kv_max_bytes;
        self.inner
            .reads()
            .call(move |c| memory(c, cap))
            .await
            .map(Some)
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
        let cap = self.inner.config.kv_max_bytes;
        self.inner
            .writer
            .call(move |c| incr(c, &key, now, cap))
            .await
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
        let last = self.inner.reads().call(head).await?;
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
            inner.reads().call(move |c| poll(c, &ch, last)).await
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
