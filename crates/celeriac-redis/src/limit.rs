//! [`RateLimitStore`] on Redis: `checkLimits-N` decides (every quota of a key in KEYS, under
//! its one hash tag), one `acquirePermit-1` / `releasePermit-1` call per permit operation.
//! `now` travels in ARGV.
//!
//! A decision's numbers travel, and its state rests, as little-endian doubles rather than
//! decimal text (see the script): printing and parsing decimals cost Redis more than the
//! limiter's maths. A state's key keeps its TTL until the state must outlive it, so most
//! writes set no TTL.
//!
//! Decisions are batched like group commit: while up to [`IN_FLIGHT`] script calls are under
//! way, the decisions that arrive meanwhile gather and go together in the next call (at most
//! [`BATCH`]), made one after the other inside it exactly as separate calls would be. The
//! distinct quotas of a batch go once. A lone decision is sent at once; under load Redis runs one script per batch rather than one per
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
/// Script calls of batched decisions under way at once: enough that Redis always has the
/// next batch waiting, few enough that batches stay large.
pub(crate) const IN_FLIGHT: usize = 3;

/// What a decision's batch answers it: its five numbers, or why not.
type Answer = Result<[i64; 5]>;

/// One decision on its way: its keys with their quotas' fields (algorithm, limit, window,
/// interval, tolerance), its now and cost, and where to answer.
pub(crate) struct Pending {
    quotas: Vec<(String, [f64; 5])>,
    now: f64,
    cost: f64,
    answer: oneshot::Sender<Answer>,
}

/// The queue of decisions waiting for a batch.
pub(crate) type Batches = mpsc::UnboundedSender<Pending>;

/// Sends batches of waiting decisions until the backend is dropped.
///
/// Two yields keep batches large under load: one before a batch is gathered, so callers
/// just woken by an answer can queue their next decision first, and one after a batch's
/// answers are sent, before its slot is given back, for the same reason. A lone decision
/// waits for no more than those two turns of the scheduler.
async fn send_batches(mut rx: mpsc::UnboundedReceiver<Pending>, conn: Conn, script: redis::Script) {
    let slots = Arc::new(Semaphore::new(IN_FLIGHT));
    while let Some(first) = rx.recv().await {
        // Waiting for a slot lets more decisions gather.
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        tokio::task::yield_now().await;
        let mut batch = vec![first];
        while batch.len() < BATCH {
            match rx.try_recv() {
                Ok(p) => batch.push(p),
                Err(_) => break,
            }
        }
        let (mut conn, script) = (conn.clone(), script.clone());
        tokio::spawn(async move {
            let replies = invoke(&mut conn, &script, &batch).await;
            for (p, answer) in batch.into_iter().zip(answers(replies)) {
                let _ = p.answer.send(answer);
            }
            tokio::task::yield_now().await;
            drop(slot);
        });
    }
}

/// One `checkLimits-N` call for these decisions: its raw reply (5 doubles each).
async fn invoke(conn: &mut Conn, script: &redis::Script, batch: &[Pending]) -> Result<Vec<u8>> {
    let mut call = script.prepare_invoke();
    let (quotas, decisions) = encode(batch);
    for p in batch {
        for (key, _) in &p.quotas {
            call.key(key);
        }
    }
    call.arg(quotas).arg(decisions);
    call.invoke_async(conn).await.map_err(map_err)
}

/// ARGV of a batch: its distinct quotas, and its decisions numbering them (see the script).
fn encode(batch: &[Pending]) -> (Vec<u8>, Vec<u8>) {
    let mut distinct: Vec<[f64; 5]> = Vec::new();
    let mut decisions = Vec::with_capacity(batch.len() * 32);
    let put = |buf: &mut Vec<u8>, x: f64| buf.extend_from_slice(&x.to_le_bytes());
    for p in batch {
        put(&mut decisions, p.quotas.len() as f64);
        put(&mut decisions, p.now);
        put(&mut decisions, p.cost);
        for (_, fields) in &p.quotas {
            let same = |q: &[f64; 5]| {
                q.iter()
                    .zip(fields)
                    .all(|(a, b)| a.to_bits() == b.to_bits())
            };
            let at = match distinct.iter().position(same) {
                Some(at) => at,
                None => {
                    distinct.push(*fields);
                    distinct.len() - 1
                }
            };
            put(&mut decisions, (at + 1) as f64);
        }
    }
    let mut quotas = Vec::with_capacity(distinct.len() * 40);
    for x in distinct.iter().flatten() {
        put(&mut quotas, *x);
    }
    (quotas, decisions)
}

/// Each decision's answer from a batch's reply, in order (as many as the reply holds; a
/// decision without one is told so).
fn answers(reply: Result<Vec<u8>>) -> impl Iterator<Item = Answer> {
    let mut at = 0;
    std::iter::from_fn(move || {
        Some(match &reply {
            Err(e) => Err(e.clone()),
            Ok(bytes) => {
                let got = bytes.get(at..at + 40).map(decode);
                at += 40;
                got.ok_or_else(|| reply_error("checkLimits", bytes.len()))
            }
        })
    })
}

/// Five little-endian doubles as integers.
fn decode(bytes: &[u8]) -> [i64; 5] {
    std::array::from_fn(|i| {
        let mut x = [0u8; 8];
        x.copy_from_slice(&bytes[i * 8..i * 8 + 8]);
        f64::from_le_bytes(x) as i64
    })
}

fn ms(n: i64) -> Duration {
    Duration::from_millis(n.max(0) as u64)
}

fn reply_error(what: &str, reply: impl std::fmt::Debug) -> Error {
    Error::backend(
        ErrorKind::GiveUp,
        format!("{what}: unexpected script reply {reply:?}"),
    )
}

impl RedisBackend {
    /// One decision's five numbers: through the batches, or alone on Cluster.
    async fn decide(&self, pending: Pending, answered: oneshot::Receiver<Answer>) -> Answer {
        let script = &self.inner.scripts.check_limits;
        if matches!(self.inner.conn, Conn::Cluster(_)) {
            return alone(&mut self.conn(), script, pending).await;
        }
        let batches = self.inner.limit_batches.get_or_init(|| {
            let (tx, rx) = mpsc::unbounded_channel();
            tokio::spawn(send_batches(rx, self.conn(), script.clone()));
            tx
        });
        if let Err(mpsc::error::SendError(p)) = batches.send(pending) {
            // The batching task is gone (its runtime ended): decide alone.
            return alone(&mut self.conn(), script, p).await;
        }
        match answered.await {
            Ok(answer) => answer,
            Err(_) => Err(Error::backend(
                ErrorKind::Retry,
                "the rate-limit batch ended without an answer",
            )),
        }
    }
}

/// One decision in a call of its own.
async fn alone(conn: &mut Conn, script: &redis::Script, p: Pending) -> Answer {
    let batch = [p];
    let reply = invoke(conn, script, &batch).await;
    answers(reply)
        .next()
        .unwrap_or_else(|| Err(reply_error("checkLimits", "none")))
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
        let (answer, answered) = oneshot::channel();
        let pending = Pending {
            quotas: quotas
                .iter()
                .map(|q| {
                    let fields = [
                        f64::from(q.algorithm().code()),
                        f64::from(q.limit()),
                        q.window_ms() as f64,
                        q.interval_us() as f64,
                        q.tolerance_us() as f64,
                    ];
                    (limit_key(prefix, key, &q.state_id()), fields)
                })
                .collect(),
            now: now as f64,
            cost: f64::from(cost),
            answer,
        };
        let reply = self.decide(pending, answered).await?;
        let [allowed, index, remaining, reset, retry] = reply;
        let quota = usize::try_from(index)
            .ok()
            .filter(|i| *i < quotas.len())
            .ok_or_else(|| reply_error("checkLimits", reply))?;
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
