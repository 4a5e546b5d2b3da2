//! Taking messages: the claim script in kombu's key order, and the wait between claims.

use super::error::{BrokerError, ErrorKind, Result};
use super::options::QueueOrder;
use super::{envelope, Delivery, KombuBroker};
use std::time::Duration;
use tokio::sync::oneshot;
use tokio::time::Instant;

/// How often one consume call tries a claim again after a passing failure (a lost
/// connection, a timeout) before it reports the error.
const CLAIM_RETRIES: u32 = 3;

impl KombuBroker {
    /// Takes the next message from `queues`, waiting up to `max_wait` for one.
    ///
    /// Lists are visited in kombu's order: each priority step ascending (0 first), within a
    /// step each queue in the queue order (round robin by default: the queue that just
    /// delivered goes last). The message is taken from the right end of its list and recorded
    /// in `unacked`/`unacked_index` (score: the server's clock) in one atomic script, so a
    /// process killed at any instant leaves it either on its list or in `unacked`, where a
    /// sweep gives it back.
    ///
    /// While every list is empty the call waits for a push (see the list watchers, one
    /// connection per list key being waited on); it returns `None` once `max_wait` has passed
    /// (`Duration::ZERO`: one attempt, no wait).
    ///
    /// # Errors
    /// [`BrokerError::Option`] when `queues` is empty; [`BrokerError::Redis`] when the claim
    /// fails (after three more tries for a lost connection or a timeout).
    ///
    /// # Cancel safety
    /// Cancel safe: a claim that completes after the call was dropped puts its message back
    /// at the front of its list, unchanged.
    pub async fn consume<S: AsRef<str>>(
        &self,
        queues: &[S],
        max_wait: Duration,
    ) -> Result<Option<Delivery>> {
        if queues.is_empty() {
            return Err(BrokerError::Option {
                option: "queues",
                reason: "consume needs at least one queue".to_owned(),
            });
        }
        let deadline = Instant::now() + max_wait;
        let mut interest = None;
        let mut failures = 0;
        loop {
            let mut woken = self.inner.waker.subscribe();
            let ordered = self.ordered(queues);
            let claimed = self.claim_detached(ordered.clone()).await;
            self.inner.waker.attempted();
            let claimed = match claimed {
                // A connection lost meanwhile (a server restart) fails the first command
                // and reconnects: try again, a few times. A claim is atomic on the server;
                // one whose answer was lost left its message in unacked, for the sweep.
                Err(e) if e.kind() != ErrorKind::GiveUp && failures < CLAIM_RETRIES => {
                    failures += 1;
                    tracing::debug!(error = %e, "claim failed; trying again");
                    tokio::time::sleep(Duration::from_millis(50) * 2u32.pow(failures)).await;
                    continue;
                }
                other => other,
            };
            failures = 0;
            if let Some(delivery) = claimed? {
                self.rotate(&delivery.queue);
                return Ok(Some(delivery));
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            if interest.is_none() {
                interest = Some(self.inner.waker.interest(&self.consume_keys(&ordered)));
            }
            tokio::select! {
                _ = woken.changed() => {}
                () = tokio::time::sleep_until(deadline) => {}
            }
        }
    }

    /// The queues in the order of this call (deduplicated).
    fn ordered<S: AsRef<str>>(&self, queues: &[S]) -> Vec<String> {
        let mut out: Vec<String> = Vec::with_capacity(queues.len());
        for q in queues {
            if !out.iter().any(|o| o == q.as_ref()) {
                out.push(q.as_ref().to_owned());
            }
        }
        match self.inner.options.queue_order {
            QueueOrder::Priority => {}
            QueueOrder::Sorted => out.sort(),
            QueueOrder::RoundRobin => {
                let mut order = self
                    .inner
                    .order
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                for q in &out {
                    if !order.contains(q) {
                        order.push(q.clone());
                    }
                }
                out.sort_by_key(|q| order.iter().position(|o| o == q));
            }
        }
        out
    }

    /// Round robin: the queue that delivered goes to the end of the order.
    fn rotate(&self, queue: &str) {
        if self.inner.options.queue_order != QueueOrder::RoundRobin {
            return;
        }
        let mut order = self
            .inner
            .order
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(i) = order.iter().position(|q| q == queue) {
            let q = order.remove(i);
            order.push(q);
        }
    }

    /// The list keys of a consume call, in kombu's order: each step × each queue.
    fn consume_keys(&self, ordered: &[String]) -> Vec<String> {
        let steps = &self.inner.options.priority_steps;
        steps
            .iter()
            .flat_map(|step| ordered.iter().map(move |q| self.list_key(q, *step)))
            .collect()
    }

    /// Runs one claim in a task of its own, so that a caller dropped mid-claim cannot strand
    /// the message in `unacked`: the task puts it back if nobody takes the answer.
    async fn claim_detached(&self, ordered: Vec<String>) -> Result<Option<Delivery>> {
        let (tx, rx) = oneshot::channel();
        let broker = self.clone();
        tokio::spawn(async move {
            let claimed = broker.claim(&ordered).await;
            if let Err(Ok(Some(delivery))) = tx.send(claimed) {
                if let Err(e) = broker.give_back(&delivery.delivery_tag).await {
                    tracing::warn!(
                        error = %e,
                        tag = %delivery.delivery_tag,
                        "a cancelled consume could not give its message back; it stays in unacked until a sweep"
                    );
                }
            }
        });
        rx.await.map_err(|_| BrokerError::Reply {
            op: "consume",
            detail: "the claim task ended without an answer".to_owned(),
        })?
    }

    async fn claim(&self, ordered: &[String]) -> Result<Option<Delivery>> {
        let o = &self.inner.options;
        let mut inv = self.inner.scripts.claim.prepare_invoke();
        inv.key(o.key(&o.unacked_key))
            .key(o.key(&o.unacked_index_key));
        for key in self.consume_keys(ordered) {
            inv.key(key);
        }
        for _ in &o.priority_steps {
            for q in ordered {
                inv.arg(q);
            }
        }
        let reply: Option<(usize, String, Vec<u8>)> = inv
            .invoke_async(&mut self.conn())
            .await
            .map_err(self.err("consume"))?;
        let Some((i, tag, raw)) = reply else {
            return Ok(None);
        };
        let at = i
            .checked_sub(1)
            .filter(|at| *at < o.priority_steps.len() * ordered.len());
        let Some(at) = at else {
            return Err(BrokerError::Reply {
                op: "consume",
                detail: format!("the claim script named list {i} of {}", ordered.len()),
            });
        };
        let fields = envelope::fields(&raw).unwrap_or_default();
        Ok(Some(Delivery {
            queue: ordered[at % ordered.len()].clone(),
            priority: o.priority_steps[at / ordered.len()],
            delivery_tag: tag,
            redelivered: fields.redelivered,
            raw,
        }))
    }
}
