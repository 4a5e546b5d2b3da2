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
//! distinct quotas of a batch go once. A lone decision, finding a call slot free and nothing
//! waiting, goes at once in a call of its own; under load Redis runs one script per batch
//! rather than one per decision. On Cluster every decision is its own call (the keys of
//! different decisions live on different slots).

use crate::conn::{map_err, Conn};
use crate::keys::{limit_key, permits_key};
use crate::{num, RedisBackend};
use celeriac_core::backend::RateLimitStore;
use celeriac_core::clock::{duration_ms, UnixMs};
use celeriac_core::error::{Error, ErrorKind, Result};
use celeriac_core::limit::{self, Decision, Quota};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;
use tokio::sync::{oneshot, OwnedSemaphorePermit, Semaphore};

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

/// Where decisions wait for a batch, and the slots of the script calls under way.
///
/// No task sits waiting for decisions: a caller that finds a slot free and nothing waiting
/// sends its decision itself; otherwise it queues it, and if a slot is free spawns a leader,
/// which sends batches of what waits until nothing does. Every leader gives its slot back
/// before its last look at the queue, and every caller looks for a free slot after queueing,
/// so no decision is left waiting while a slot is free. Leaders are spawned on the caller's
/// runtime, and a leader, not the caller, owns a batch: a caller that gives up (a timeout)
/// takes no one else's decision with it.
pub(crate) struct Batcher {
    waiting: Mutex<VecDeque<Pending>>,
    slots: Arc<Semaphore>,
    /// The connection and `checkLimits-N`, for every call of a decision.
    conn: Conn,
    script: redis::Script,
}

impl Batcher {
    pub(crate) fn new(conn: Conn, script: redis::Script) -> Arc<Batcher> {
        Arc::new(Batcher {
            waiting: Mutex::new(VecDeque::new()),
            slots: Arc::new(Semaphore::new(IN_FLIGHT)),
            conn,
            script,
        })
    }

    fn queue(&self) -> MutexGuard<'_, VecDeque<Pending>> {
        // Nothing panics while holding the lock; a poisoned queue is still a queue.
        self.waiting.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A free slot, if there is one.
    fn slot(self: &Arc<Self>) -> Option<Lead> {
        let slot = self.slots.clone().try_acquire_owned().ok()?;
        Some(Lead {
            slot: Some(slot),
            batcher: self.clone(),
        })
    }

    /// Makes one decision: alone if a slot is free and nothing waits (a lone decision skips
    /// the hop to a leader), otherwise in the next batch.
    async fn decide(self: &Arc<Self>, p: Pending, answered: oneshot::Receiver<Answer>) -> Answer {
        if self.queue().is_empty() {
            if let Some(_held) = self.slot() {
                return alone(&mut self.conn.clone(), &self.script, p).await;
            }
        }
        self.queue().push_back(p);
        self.lead();
        match answered.await {
            Ok(answer) => answer,
            Err(_) => Err(Error::backend(
                ErrorKind::Retry,
                "the rate-limit batch ended without an answer",
            )),
        }
    }

    /// Spawns a leader if a slot is free.
    fn lead(self: &Arc<Self>) {
        if let Some(lead) = self.slot() {
            tokio::spawn(lead.send());
        }
    }
}

/// A slot held for script calls. Dropping it, when its calls are done or its caller gave
/// up, gives the slot back and then looks once more: a decision queued meanwhile by a caller
/// that found every slot taken gets a leader now.
struct Lead {
    slot: Option<OwnedSemaphorePermit>,
    batcher: Arc<Batcher>,
}

impl Lead {
    /// Sends batches until none waits. Two yields before each batch let callers just woken by
    /// an answer queue their next decision first, so batches stay large under load.
    async fn send(self) {
        let mut conn = self.batcher.conn.clone();
        loop {
            tokio::task::yield_now().await;
            tokio::task::yield_now().await;
            let batch: Vec<Pending> = {
                let mut queue = self.batcher.queue();
                let n = queue.len().min(BATCH);
                queue.drain(..n).collect()
            };
            if batch.is_empty() {
                return;
            }
            let replies = invoke(&mut conn, &self.batcher.script, &batch).await;
            for (i, p) in batch.into_iter().enumerate() {
                let _ = p.answer.send(answer(&replies, i));
            }
        }
    }
}

impl Drop for Lead {
    fn drop(&mut self) {
        drop(self.slot.take());
        if !self.batcher.queue().is_empty() {
            self.batcher.lead();
        }
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

/// Decision `i`'s answer from a batch's reply (a decision the reply has no room for is told
/// so).
pub(crate) fn answer(reply: &Result<Vec<u8>>, i: usize) -> Answer {
    let bytes = reply.as_ref().map_err(Error::clone)?;
    bytes
        .get(i * 40..i * 40 + 40)
        .map(decode)
        .ok_or_else(|| reply_error("checkLimits", bytes.len()))
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

/// A decision from `checkLimits-N`'s five numbers for it, over the quotas it checked.
///
/// # Errors
/// A reported quota index that is not one of `quotas`.
pub(crate) fn decision_of(reply: [i64; 5], quotas: &[Quota]) -> Result<Decision> {
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

/// A decision from `acquirePermit-1`'s reply `{allowed, live, first end, last end}`. The ends
/// are times another process may have written (a lease far in the future, or past what a
/// Lua number turns into an integer), so their distance from `now` saturates.
///
/// # Errors
/// A reply that is not four integers.
pub(crate) fn permit_decision(reply: &[i64], max: u32, now: UnixMs) -> Result<Decision> {
    let [allowed, live, first, last] = reply[..] else {
        return Err(reply_error("acquirePermit", reply));
    };
    Ok(Decision {
        allowed: allowed == 1,
        limit: max,
        remaining: max.saturating_sub(u32::try_from(live).unwrap_or(u32::MAX)),
        reset_after: ms(last.saturating_sub(now)),
        retry_after: (allowed != 1).then(|| ms(first.saturating_sub(now))),
        quota: 0,
    })
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
        if matches!(self.inner.conn, Conn::Cluster(_)) {
            let script = &self.inner.scripts.check_limits;
            return alone(&mut self.conn(), script, pending).await;
        }
        self.inner.limit_batches.decide(pending, answered).await
    }
}

/// One decision in a call of its own.
async fn alone(conn: &mut Conn, script: &redis::Script, p: Pending) -> Answer {
    let batch = [p];
    answer(&invoke(conn, script, &batch).await, 0)
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
        decision_of(reply, quotas)
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
        permit_decision(&reply, max, now)
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

#[cfg(test)]
mod tests {
    use super::*;
    use celeriac_core::limit::Algorithm;
    use celeriac_testkit::RedisServer;

    /// The race a [`Lead`]'s drop closes: a decision queued while every slot was taken, just
    /// after the leaders' last look, is sent when a leader gives its slot back.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_decision_queued_while_every_slot_is_taken_is_sent_when_one_frees() {
        let server = RedisServer::start().await.expect("redis-server starts");
        let backend = RedisBackend::connect(&server.url())
            .await
            .expect("connects");
        let batcher = backend.inner.limit_batches.clone();
        let mut held: Vec<OwnedSemaphorePermit> = (0..IN_FLIGHT)
            .map(|_| {
                batcher
                    .slots
                    .clone()
                    .try_acquire_owned()
                    .expect("a free slot")
            })
            .collect();
        let caller = {
            let backend = backend.clone();
            tokio::spawn(async move {
                let quota = Quota::per_hour(10).with_algorithm(Algorithm::FixedWindow);
                backend
                    .check_limits("race", std::slice::from_ref(&quota), 1, 1_000)
                    .await
            })
        };
        while batcher.queue().is_empty() {
            tokio::task::yield_now().await;
        }
        // Every slot is taken, so nobody leads yet; a leader now finishes its last batch.
        let slot = held.pop().expect("a held slot");
        drop(Lead {
            slot: Some(slot),
            batcher: batcher.clone(),
        });
        let decision = tokio::time::timeout(Duration::from_secs(30), caller)
            .await
            .expect("the queued decision is answered")
            .expect("the caller's task")
            .expect("a decision");
        assert!(decision.allowed);
        assert_eq!(decision.remaining, 9);
    }
}
