//! [`RateLimitStore`] on Redis: `checkLimits-N` decides (every quota of a key in KEYS, under
//! its one hash tag), one `acquirePermit-1` / `releasePermit-1` call per permit operation.
//! `now` travels in ARGV.
//!
//! Decisions are batched like group commit: while up to [`IN_FLIGHT`] script calls are under
//! way, the decisions that arrive meanwhile gather and go together in the next call (at most
//! [`BATCH`]), made one after the other inside it exactly as separate calls would be. A lone
//! decision is sent at once; under load Redis runs one script per batch rather than one per
//! decision. On Cluster every decision is its own call (the keys of different decisions live
//! on different slots).

use crate::conn::{map_err, Conn};
use crate::keys::{limit_key, permits_key};
use crate::{num, RedisBackend};
use celeriac_core::backend::RateLimitStore;
use celeriac_core::clock::{duration_ms, UnixMs};
use celeriac_core::error::{Error, ErrorKind, Result};
use celeriac_core::limit::{self, Decision, Quota};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, Semaphore};

/// Decisions per script call at most (the script's bound on its work).
pub(crate) const BATCH: usize = 64;
/// Script calls of batched decisions under way at once.
pub(crate) const IN_FLIGHT: usize = 4;

/// What a decision's batch answers it: its five integers, or why not.
type Answer = Result<[i64; 5]>;

/// One decision on its way: its keys, its arguments (n, now, cost, 5 per quota), and where to
/// answer.
pub(crate) struct Pending {
    keys: Vec<String>,
    args: Vec<Vec<u8>>,
    answer: oneshot::Sender<Answer>,
}

/// The queue of decisions waiting for a batch.
pub(crate) type Batches = mpsc::UnboundedSender<Pending>;

/// Sends batches of waiting decisions until the backend is dropped.
async fn send_batches(mut rx: mpsc::UnboundedReceiver<Pending>, conn: Conn, script: redis::Script) {
    let slots = Arc::new(Semaphore::new(IN_FLIGHT));
    while let Some(first) = rx.recv().await {
        // Waiting for a slot lets more decisions gather.
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let mut batch = vec![first];
        while batch.len() < BATCH {
            match rx.try_recv() {
                Ok(p) => batch.push(p),
                Err(_) => break,
            }
        }
        let (mut conn, script) = (conn.clone(), script.clone());
        tokio::spawn(async move {
            let replies =
                invoke(&mut conn, &script, batch.iter().map(|p| (&p.keys, &p.args))).await;
            for (i, p) in batch.into_iter().enumerate() {
                let answer = match &replies {
                    Ok(all) => all
                        .get(i * 5..i * 5 + 5)
                        .and_then(|r| <[i64; 5]>::try_from(r).ok())
                        .ok_or_else(|| reply_error("checkLimits", all)),
                    Err(e) => Err(e.clone()),
                };
                let _ = p.answer.send(answer);
            }
            drop(slot);
        });
    }
}

/// One `checkLimits-N` call for these decisions; the flat reply (5 integers each).
async fn invoke<'a>(
    conn: &mut Conn,
    script: &redis::Script,
    decisions: impl ExactSizeIterator<Item = (&'a Vec<String>, &'a Vec<Vec<u8>>)>,
) -> Result<Vec<i64>> {
    let mut call = script.prepare_invoke();
    call.arg(decisions.len());
    for (keys, args) in decisions {
        for k in keys {
            call.key(k);
        }
        for a in args {
            call.arg(a);
        }
    }
    call.invoke_async(conn).await.map_err(map_err)
}

fn ms(n: i64) -> Duration {
    Duration::from_millis(n.max(0) as u64)
}

fn reply_error(what: &str, reply: &[i64]) -> Error {
    Error::backend(
        ErrorKind::GiveUp,
        format!("{what}: unexpected script reply {reply:?}"),
    )
}

impl RedisBackend {
    /// One decision's five integers: through the batches, or alone on Cluster.
    async fn decide(&self, keys: Vec<String>, args: Vec<Vec<u8>>) -> Result<[i64; 5]> {
        let script = &self.inner.scripts.check_limits;
        let alone = |reply: Vec<i64>| {
            <[i64; 5]>::try_from(&reply[..]).map_err(|_| reply_error("checkLimits", &reply))
        };
        if matches!(self.inner.conn, Conn::Cluster(_)) {
            return alone(invoke(&mut self.conn(), script, std::iter::once((&keys, &args))).await?);
        }
        let batches = self.inner.limit_batches.get_or_init(|| {
            let (tx, rx) = mpsc::unbounded_channel();
            tokio::spawn(send_batches(rx, self.conn(), script.clone()));
            tx
        });
        let (answer, answered) = oneshot::channel();
        if let Err(mpsc::error::SendError(p)) = batches.send(Pending { keys, args, answer }) {
            // The batching task is gone (its runtime ended): decide alone.
            return alone(
                invoke(
                    &mut self.conn(),
                    script,
                    std::iter::once((&p.keys, &p.args)),
                )
                .await?,
            );
        }
        match answered.await {
            Ok(Ok(reply)) => Ok(reply),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(Error::backend(
                ErrorKind::Retry,
                "the rate-limit batch ended without an answer",
            )),
        }
    }
}

impl RateLimitStore for RedisBackend {
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
        let prefix = &self.inner.config.prefix;
        let keys: Vec<String> = quotas
            .iter()
            .map(|q| limit_key(prefix, key, &q.state_id()))
            .collect();
        let mut args = Vec::with_capacity(3 + quotas.len() * 5);
        args.push(num(quotas.len() as i64));
        args.push(num(now));
        args.push(num(i64::from(cost)));
        for q in quotas {
            args.push(num(i64::from(q.algorithm().code())));
            args.push(num(i64::from(q.limit())));
            args.push(num(q.window_ms()));
            args.push(num(q.interval_us()));
            args.push(num(q.tolerance_us()));
        }
        let reply = self.decide(keys, args).await?;
        let [allowed, index, remaining, reset, retry] = reply;
        let quota = usize::try_from(index)
            .ok()
            .filter(|i| *i < quotas.len())
            .ok_or_else(|| reply_error("checkLimits", &reply))?;
        Ok(Decision {
            allowed: allowed == 1,
            limit: quotas[quota].limit(),
            remaining: remaining.clamp(0, i64::from(u32::MAX)) as u32,
            reset_after: ms(reset),
            retry_after: (allowed != 1).then(|| ms(retry)),
            quota,
        })
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
        let until = now.saturating_add(duration_ms(lease));
        let reply: Vec<i64> = self
            .inner
            .scripts
            .acquire_permit
            .key(permits_key(&self.inner.config.prefix, key))
            .arg(holder)
            .arg(max)
            .arg(num(now))
            .arg(num(until))
            .invoke_async(&mut self.conn())
            .await
            .map_err(map_err)?;
        let [allowed, live, first, last] = reply[..] else {
            return Err(reply_error("acquirePermit", &reply));
        };
        Ok(Decision {
            allowed: allowed == 1,
            limit: max,
            remaining: max.saturating_sub(u32::try_from(live).unwrap_or(u32::MAX)),
            reset_after: ms(last - now),
            retry_after: (allowed != 1).then(|| ms(first - now)),
            quota: 0,
        })
    }

    async fn release_permit(&self, key: &str, holder: &str, now: UnixMs) -> Result<bool> {
        limit::check_release(key, holder)?;
        let released: i64 = self
            .inner
            .scripts
            .release_permit
            .key(permits_key(&self.inner.config.prefix, key))
            .arg(holder)
            .arg(num(now))
            .invoke_async(&mut self.conn())
            .await
            .map_err(map_err)?;
        Ok(released == 1)
    }
}
