//! [`KvStore`] on Redis: values with an expiry, counters, lease locks and a broadcast channel.
//!
//! - **Values** are STRINGs `<prefix>:kv:<key>` holding an envelope: the byte `0x01`, the
//!   expiry in ms since the epoch (8 bytes, big-endian), then the value. Their Redis TTL is
//!   set too (`PX`), so Redis cleans up by itself, but a read compares the stored expiry with
//!   the caller's `now`: time stays an argument. A value without the envelope is a counter
//!   (decimal text, which never starts with `0x01`) and never expires.
//! - **Reads** are one `MGET` on standalone and Sentinel; on Cluster the keys are grouped by
//!   slot and each group's `MGET` runs at once, the answers put back in the caller's order.
//!   Writes and deletes go the same way, one pipeline per slot.
//! - **Counters** are `INCR`.
//! - **Locks** are STRINGs `<prefix>:kv-lock:<key>` holding `<until>|<token>`, taken and
//!   released by `lua/lockKey-1.lua` and `lua/unlockKey-1.lua`.
//! - **Broadcast**: `PUBLISH` on `<prefix>:kv-channel:<channel>`; each subscription has its
//!   own pub/sub connection and task, resubscribes with backoff after a loss and then emits
//!   [`KvEvent::Reset`], since messages published meanwhile are gone. A reader that falls
//!   [`BUFFER`] events behind loses messages and gets a `Reset` too.

use crate::conn::{map_err, Connector};
use crate::keys::{kv_channel, kv_key, kv_lock_key};
use crate::{num, RedisBackend, Topology};
use celeriac_core::backend::{
    check_kv_entries, check_kv_key, check_kv_ttl, KvEntry, KvEvent, KvMemory, KvStore,
    KvSubscription,
};
use celeriac_core::clock::{duration_ms, UnixMs};
use celeriac_core::error::{ErrorKind, Result};
use futures_util::future::try_join_all;
use futures_util::StreamExt;
use redis::aio::PubSub;
use redis::cluster_routing::Slot;
use std::collections::HashMap;
use std::time::Duration;
use tokio::sync::mpsc;
use tracing::debug;

/// The first byte of a stored value (counters, decimal text, never start with it).
const ENVELOPE: u8 = 0x01;
const HEADER: usize = 9;

/// Events a subscription buffers for its reader; a message that finds the buffer full is
/// dropped, and a [`KvEvent::Reset`] goes ahead of the next one that fits.
const BUFFER: usize = 256;

/// Hands `event` to the reader without waiting; false once the subscription is dropped.
fn offer(tx: &mpsc::Sender<KvEvent>, event: KvEvent, lagged: &mut bool) -> bool {
    use mpsc::error::TrySendError;
    if *lagged {
        match tx.try_send(KvEvent::Reset) {
            Ok(()) => *lagged = false,
            Err(TrySendError::Full(_)) => return true,
            Err(TrySendError::Closed(_)) => return false,
        }
    }
    match tx.try_send(event) {
        Ok(()) => true,
        Err(TrySendError::Full(_)) => {
            *lagged = true;
            true
        }
        Err(TrySendError::Closed(_)) => false,
    }
}

pub(crate) fn wrap(value: &[u8], until: UnixMs) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER + value.len());
    out.push(ENVELOPE);
    out.extend_from_slice(&until.to_be_bytes());
    out.extend_from_slice(value);
    out
}

/// The value in a stored string, if it is live at `now`.
pub(crate) fn unwrap(stored: Vec<u8>, now: UnixMs) -> Option<Vec<u8>> {
    if stored.len() >= HEADER && stored[0] == ENVELOPE {
        let mut until = [0u8; 8];
        until.copy_from_slice(&stored[1..HEADER]);
        (i64::from_be_bytes(until) > now).then(|| stored[HEADER..].to_vec())
    } else {
        Some(stored)
    }
}

/// Deletes `keys` (one node's) and counts those live at `now`: `MGET` then `DEL`, in one
/// transaction if `atomic`.
async fn delete_group(
    mut conn: crate::conn::Conn,
    keys: &[&String],
    now: UnixMs,
    atomic: bool,
) -> Result<u64> {
    let mut pipe = redis::pipe();
    if atomic {
        pipe.atomic();
    }
    pipe.cmd("MGET").arg(keys).cmd("DEL").arg(keys).ignore();
    let (values,): (Vec<Option<Vec<u8>>>,) = pipe.query_async(&mut conn).await.map_err(map_err)?;
    Ok(values
        .into_iter()
        .filter(|v| v.clone().and_then(|v| unwrap(v, now)).is_some())
        .count() as u64)
}

impl RedisBackend {
    fn is_cluster(&self) -> bool {
        matches!(self.inner.config.topology, Topology::Cluster { .. })
    }

    /// The positions of `keys` in groups that one node can serve in one pipeline: all of them
    /// off Cluster, one group per slot on it.
    fn slot_groups(&self, keys: &[String]) -> Vec<Vec<usize>> {
        if !self.is_cluster() {
            return vec![(0..keys.len()).collect()];
        }
        let mut groups: HashMap<Slot, Vec<usize>> = HashMap::new();
        for (i, k) in keys.iter().enumerate() {
            groups.entry(Slot::for_key(k)).or_default().push(i);
        }
        groups.into_values().collect()
    }
}

fn check_keys(keys: &[String]) -> Result<()> {
    for k in keys {
        check_kv_key(k, <RedisBackend as KvStore>::MAX_KEY_LEN)?;
    }
    Ok(())
}

impl KvStore for RedisBackend {
    async fn kv_get(&self, keys: Vec<String>, now: UnixMs) -> Result<Vec<Option<Vec<u8>>>> {
        check_keys(&keys)?;
        let prefix = &self.inner.config.prefix;
        let stored: Vec<String> = keys.iter().map(|k| kv_key(prefix, k)).collect();
        let groups = self.slot_groups(&stored);
        let replies = try_join_all(groups.iter().filter(|g| !g.is_empty()).map(|g| {
            let mut cmd = redis::cmd("MGET");
            for &i in g {
                cmd.arg(&stored[i]);
            }
            let mut conn = self.conn();
            async move {
                cmd.query_async::<Vec<Option<Vec<u8>>>>(&mut conn)
                    .await
                    .map_err(map_err)
                    .map(|values| (g, values))
            }
        }))
        .await?;
        let mut out = vec![None; keys.len()];
        for (g, values) in replies {
            for (&i, v) in g.iter().zip(values) {
                out[i] = v.and_then(|v| unwrap(v, now));
            }
        }
        Ok(out)
    }

    async fn kv_set(&self, entries: Vec<KvEntry>, now: UnixMs) -> Result<()> {
        check_kv_entries(&entries, Self::MAX_KEY_LEN)?;
        let prefix = &self.inner.config.prefix;
        let stored: Vec<String> = entries.iter().map(|e| kv_key(prefix, &e.key)).collect();
        let groups = self.slot_groups(&stored);
        try_join_all(groups.iter().filter(|g| !g.is_empty()).map(|g| {
            let mut pipe = redis::pipe();
            for &i in g {
                let e = &entries[i];
                let ttl = duration_ms(e.ttl).max(1);
                pipe.cmd("SET")
                    .arg(&stored[i])
                    .arg(wrap(&e.value, now.saturating_add(ttl)))
                    .arg("PX")
                    .arg(ttl)
                    .ignore();
            }
            let mut conn = self.conn();
            async move { pipe.query_async::<()>(&mut conn).await.map_err(map_err) }
        }))
        .await?;
        Ok(())
    }

    async fn kv_ensure(&self, entries: Vec<KvEntry>, now: UnixMs) -> Result<()> {
        check_kv_entries(&entries, Self::MAX_KEY_LEN)?;
        let prefix = &self.inner.config.prefix;
        // One script call per key (its own slot on Cluster), all at once.
        try_join_all(entries.iter().map(|e| {
            let ttl = duration_ms(e.ttl).max(1);
            let until = now.saturating_add(ttl);
            let mut inv = self.inner.scripts.ensure_key.prepare_invoke();
            inv.key(kv_key(prefix, &e.key))
                .arg(wrap(&e.value, until))
                .arg(now)
                .arg(until)
                .arg(ttl);
            let mut conn = self.conn();
            async move { inv.invoke_async::<i64>(&mut conn).await.map_err(map_err) }
        }))
        .await?;
        Ok(())
    }

    async fn kv_memory(&self) -> Result<Option<KvMemory>> {
        crate::checks::memory(&self.inner.connector).await
    }

    async fn kv_delete(&self, keys: Vec<String>, now: UnixMs) -> Result<u64> {
        check_keys(&keys)?;
        let prefix = &self.inner.config.prefix;
        let stored: Vec<String> = keys.iter().map(|k| kv_key(prefix, k)).collect();
        let groups = self.slot_groups(&stored);
        let atomic = !self.is_cluster();
        let counts = try_join_all(groups.iter().filter(|g| !g.is_empty()).map(|g| {
            let group: Vec<&String> = g.iter().map(|&i| &stored[i]).collect();
            let conn = self.conn();
            async move {
                match delete_group(conn.clone(), &group, now, atomic).await {
                    // A full Redis refuses every command queued in MULTI, DEL too; outside
                    // one, DEL is allowed: the count may then include a value written between
                    // the two commands.
                    Err(e) if atomic && e.kind() == ErrorKind::Full => {
                        delete_group(conn, &group, now, false).await
                    }
                    other => other,
                }
            }
        }))
        .await?;
        Ok(counts.into_iter().sum())
    }

    async fn kv_incr(&self, key: &str, _now: UnixMs) -> Result<i64> {
        check_kv_key(key, Self::MAX_KEY_LEN)?;
        redis::cmd("INCR")
            .arg(kv_key(&self.inner.config.prefix, key))
            .query_async(&mut self.conn())
            .await
            .map_err(map_err)
    }

    async fn kv_lock(&self, key: &str, token: &str, ttl: Duration, now: UnixMs) -> Result<bool> {
        check_kv_key(key, Self::MAX_KEY_LEN)?;
        check_kv_ttl(key, ttl)?;
        let ttl = duration_ms(ttl).max(1);
        let taken: i64 = self
            .inner
            .scripts
            .lock_key
            .key(kv_lock_key(&self.inner.config.prefix, key))
            .arg(token)
            .arg(num(now))
            .arg(num(now.saturating_add(ttl)))
            .arg(num(ttl))
            .invoke_async(&mut self.conn())
            .await
            .map_err(map_err)?;
        Ok(taken == 1)
    }

    async fn kv_unlock(&self, key: &str, token: &str) -> Result<bool> {
        check_kv_key(key, Self::MAX_KEY_LEN)?;
        let released: i64 = self
            .inner
            .scripts
            .unlock_key
            .key(kv_lock_key(&self.inner.config.prefix, key))
            .arg(token)
            .invoke_async(&mut self.conn())
            .await
            .map_err(map_err)?;
        Ok(released == 1)
    }

    async fn kv_publish(&self, channel: &str, message: Vec<u8>) -> Result<()> {
        let _: i64 = redis::cmd("PUBLISH")
            .arg(kv_channel(&self.inner.config.prefix, channel))
            .arg(message)
            .query_async(&mut self.conn())
            .await
            .map_err(map_err)?;
        Ok(())
    }

    async fn kv_subscribe(&self, channel: &str) -> Result<KvSubscription> {
        let channel = kv_channel(&self.inner.config.prefix, channel);
        // Subscribed before returning: whatever is published after this call is delivered.
        let connector = self.inner.connector.clone();
        let first = subscribe(&connector, &channel).await?;
        let (tx, rx) = mpsc::channel(BUFFER);
        let stop = self.inner.stop.clone();
        tokio::spawn(async move {
            let mut ps = Some(first);
            // True once a message was dropped because the reader fell behind.
            let mut lagged = false;
            let mut backoff = Duration::from_millis(100);
            loop {
                if let Some(p) = ps.take() {
                    let mut stream = p.into_on_message();
                    loop {
                        tokio::select! {
                            m = stream.next() => match m {
                                Some(m) => {
                                    let event = KvEvent::Message(m.get_payload_bytes().to_vec());
                                    if !offer(&tx, event, &mut lagged) {
                                        return;
                                    }
                                }
                                None => break,
                            },
                            _ = tx.closed() => return,
                            _ = stop.cancelled() => return,
                        }
                    }
                    debug!(channel = %channel, "kv subscription lost; resubscribing");
                }
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = tx.closed() => return,
                    _ = stop.cancelled() => return,
                }
                match subscribe(&connector, &channel).await {
                    Ok(p) => {
                        backoff = Duration::from_millis(100);
                        ps = Some(p);
                        // Whatever was published while we were away is lost.
                        lagged = false;
                        if tx.send(KvEvent::Reset).await.is_err() {
                            return;
                        }
                    }
                    Err(e) => {
                        debug!(error = %e, channel = %channel, "cannot resubscribe; retrying");
                        backoff = (backoff * 2).min(Duration::from_secs(5));
                    }
                }
            }
        });
        Ok(KvSubscription::new(rx))
    }
}

async fn subscribe(connector: &Connector, channel: &str) -> Result<PubSub> {
    let mut ps = connector.pubsub().await?;
    ps.subscribe(channel).await.map_err(map_err)?;
    Ok(ps)
}
