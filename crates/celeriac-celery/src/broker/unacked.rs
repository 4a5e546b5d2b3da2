//! Kombu's ack emulation: acknowledge, give back, keep alive, and the visibility sweep.

use super::envelope;
use super::error::{BrokerError, Result};
use super::KombuBroker;

/// Which end of a list a restored message goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// `RPUSH`: the consuming end, taken next (kombu's restore).
    Front,
    /// `LPUSH`: the publishing end, behind everything waiting (kombu's reject with requeue).
    Back,
}

/// What one restore did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Restored {
    Yes,
    /// Not there, changed meanwhile, extended meanwhile, or nowhere to go.
    No,
}

/// What a visibility sweep did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SweepReport {
    /// Another process held the `unacked_mutex`: nothing was looked at.
    pub mutex_held: bool,
    /// Messages given back to their queues.
    pub restored: usize,
    /// Stale entries left alone: acknowledged, extended or restored by someone else
    /// meanwhile, or with no queue to go to.
    pub left: usize,
}

impl KombuBroker {
    /// Acknowledges a message: removes its `unacked` entry and index score in one
    /// transaction. Returns whether it was still there (`false`: already acknowledged, or
    /// restored by a sweep — it may then run again elsewhere).
    ///
    /// # Errors
    /// [`BrokerError::Redis`].
    pub async fn ack(&self, delivery_tag: &str) -> Result<bool> {
        let o = &self.inner.options;
        let (removed, deleted): (u64, u64) = self
            .idempotent(|| async {
                redis::pipe()
                    .atomic()
                    .cmd("ZREM")
                    .arg(o.key(&o.unacked_index_key))
                    .arg(delivery_tag)
                    .cmd("HDEL")
                    .arg(o.key(&o.unacked_key))
                    .arg(delivery_tag)
                    .query_async(&mut self.conn())
                    .await
                    .map_err(self.err("ack"))
            })
            .await?;
        Ok(removed + deleted > 0)
    }

    /// Gives a message back to the front of its list (taken next), marked
    /// `redelivered: true` in `headers` and `properties.delivery_info`, and forgets it, in one
    /// atomic step — what kombu does when it restores a message. The list is the one its
    /// stored exchange and routing key and its `properties.priority` name. Returns whether it
    /// was still unacknowledged.
    ///
    /// # Errors
    /// [`BrokerError::Redis`].
    pub async fn requeue(&self, delivery_tag: &str) -> Result<bool> {
        let r = self
            .restore_tag(delivery_tag, End::Front, true, None)
            .await?;
        Ok(r == Restored::Yes)
    }

    /// As [`requeue`](Self::requeue), but to the back of the list (behind every waiting
    /// message), as kombu's `reject(requeue=True)` does.
    ///
    /// # Errors
    /// [`BrokerError::Redis`].
    pub async fn requeue_back(&self, delivery_tag: &str) -> Result<bool> {
        let r = self
            .restore_tag(delivery_tag, End::Back, true, None)
            .await?;
        Ok(r == Restored::Yes)
    }

    /// Gives back every message of `delivery_tags` still unacknowledged (front of their lists,
    /// marked redelivered), as a kombu consumer does on a clean shutdown; returns how many.
    ///
    /// # Errors
    /// [`BrokerError::Redis`]; the messages before the failure are restored.
    pub async fn restore_all<S: AsRef<str>>(&self, delivery_tags: &[S]) -> Result<usize> {
        let mut n = 0;
        for tag in delivery_tags {
            if self
                .restore_tag(tag.as_ref(), End::Front, true, None)
                .await?
                == Restored::Yes
            {
                n += 1;
            }
        }
        Ok(n)
    }

    /// Puts a claimed message back unchanged (it was never handed to anyone).
    pub(crate) async fn give_back(&self, delivery_tag: &str) -> Result<bool> {
        let r = self
            .restore_tag(delivery_tag, End::Front, false, None)
            .await?;
        Ok(r == Restored::Yes)
    }

    /// Refreshes the `unacked_index` score (to the server's clock now) of messages still being
    /// worked on, so no visibility sweep — ours or a Python worker's — gives them back for
    /// another visibility timeout. Returns the tags that are no longer unacknowledged (a sweep
    /// or an ack took them first).
    ///
    /// # Errors
    /// [`BrokerError::Redis`].
    pub async fn extend<S: AsRef<str>>(&self, delivery_tags: &[S]) -> Result<Vec<String>> {
        if delivery_tags.is_empty() {
            return Ok(Vec::new());
        }
        let o = &self.inner.options;
        let mut inv = self.inner.scripts.extend.prepare_invoke();
        inv.key(o.key(&o.unacked_index_key));
        for tag in delivery_tags {
            inv.arg(tag.as_ref());
        }
        self.idempotent(|| async {
            inv.invoke_async(&mut self.conn())
                .await
                .map_err(self.err("extend"))
        })
        .await
    }

    /// The number of unacknowledged messages (entries of the `unacked` hash), of every
    /// process.
    ///
    /// # Errors
    /// [`BrokerError::Redis`].
    pub async fn unacked_len(&self) -> Result<u64> {
        let o = &self.inner.options;
        self.idempotent(|| async {
            redis::cmd("HLEN")
                .arg(o.key(&o.unacked_key))
                .query_async(&mut self.conn())
                .await
                .map_err(self.err("unacked_len"))
        })
        .await
    }

    /// The visibility sweep, compatible with Python workers sweeping the same keys: takes the
    /// `unacked_mutex` (redis-py lock: `SET NX PX`, released by compare-and-delete; skipped
    /// when another holds it), then gives back every message whose index score is older than
    /// the visibility timeout by the server's clock (front of its list, marked redelivered),
    /// each in one atomic step that leaves it alone if it was acknowledged or extended
    /// meanwhile.
    ///
    /// Call it periodically (kombu sweeps about every 100 s); a sweep costs one read of the
    /// stale part of the index plus two round trips per stale message.
    ///
    /// # Errors
    /// [`BrokerError::Redis`]; the mutex is released in any case.
    ///
    /// # Cancel safety
    /// Each message is restored atomically, so a dropped sweep loses none; but the mutex is
    /// then held until it expires (`unacked_mutex_expire`), and sweeps of every process skip
    /// until then.
    pub async fn restore_visible(&self) -> Result<SweepReport> {
        let o = &self.inner.options;
        let mutex = o.key(&o.unacked_mutex_key);
        let token = uuid::Uuid::new_v4().simple().to_string();
        let expire_ms = o.unacked_mutex_expire.as_millis().max(1);
        let taken: Option<String> = redis::cmd("SET")
            .arg(&mutex)
            .arg(&token)
            .arg("NX")
            .arg("PX")
            .arg(expire_ms as u64)
            .query_async(&mut self.conn())
            .await
            .map_err(self.err("restore_visible"))?;
        if taken.is_none() {
            return Ok(SweepReport {
                mutex_held: true,
                ..SweepReport::default()
            });
        }
        let swept = self.sweep().await;
        let released: redis::RedisResult<i64> = self
            .inner
            .scripts
            .release_mutex
            .key(&mutex)
            .arg(&token)
            .invoke_async(&mut self.conn())
            .await;
        if let Err(e) = released {
            tracing::warn!(error = %self.inner.url.scrub(&e.to_string()), "could not release unacked_mutex; it expires by itself");
        }
        swept
    }

    async fn sweep(&self) -> Result<SweepReport> {
        let o = &self.inner.options;
        let mut stale: Vec<String> = self
            .inner
            .scripts
            .stale
            .key(o.key(&o.unacked_index_key))
            .arg(o.visibility_timeout.as_secs_f64())
            .arg(o.unacked_restore_limit)
            .invoke_async(&mut self.conn())
            .await
            .map_err(self.err("restore_visible"))?;
        if stale.is_empty() {
            return Err(BrokerError::Reply {
                op: "restore_visible",
                detail: "the stale-entry script returned no ceiling".to_owned(),
            });
        }
        let ceil = stale.remove(0);
        let mut report = SweepReport::default();
        for tag in stale {
            match self
                .restore_tag(&tag, End::Front, true, Some(&ceil))
                .await?
            {
                Restored::Yes => report.restored += 1,
                Restored::No => report.left += 1,
            }
        }
        Ok(report)
    }

    /// Restores one entry: reads it, works out its lists, then moves it in one script that
    /// checks the entry is unchanged (and, for a sweep, still older than `ceil`).
    async fn restore_tag(
        &self,
        tag: &str,
        end: End,
        mark: bool,
        ceil: Option<&str>,
    ) -> Result<Restored> {
        self.idempotent(|| self.restore_once(tag, end, mark, ceil))
            .await
    }

    async fn restore_once(
        &self,
        tag: &str,
        end: End,
        mark: bool,
        ceil: Option<&str>,
    ) -> Result<Restored> {
        let o = &self.inner.options;
        let entry: Option<Vec<u8>> = redis::cmd("HGET")
            .arg(o.key(&o.unacked_key))
            .arg(tag)
            .query_async(&mut self.conn())
            .await
            .map_err(self.err("restore"))?;
        let (expected, lists, payload) = match entry {
            // An index score without an entry (kombu forgets both together, so only a crash
            // of something else leaves one): drop the score, as kombu's restore does.
            None => (Vec::new(), Vec::new(), Vec::new()),
            Some(entry) => {
                let Some(record) = envelope::unacked_record(&entry) else {
                    tracing::warn!(
                        tag,
                        "an unacked entry is not [message, exchange, routing_key]; left alone"
                    );
                    return Ok(Restored::No);
                };
                let lists = self.lists_for(&record).await?;
                if lists.is_empty() {
                    tracing::warn!(tag, "an unacked message has no exchange or routing key to go back to; left alone");
                    return Ok(Restored::No);
                }
                let payload = if mark && record.is_object {
                    envelope::mark_redelivered(&record.raw)
                } else {
                    record.raw
                };
                (entry, lists, payload)
            }
        };
        let mut inv = self.inner.scripts.restore.prepare_invoke();
        inv.key(o.key(&o.unacked_key))
            .key(o.key(&o.unacked_index_key));
        for list in &lists {
            inv.key(list);
        }
        inv.arg(tag)
            .arg(expected)
            .arg(ceil.unwrap_or("+inf"))
            .arg(if end == End::Back { "left" } else { "right" })
            .arg(payload);
        let n: i64 = inv
            .invoke_async(&mut self.conn())
            .await
            .map_err(self.err("restore"))?;
        Ok(if n == 1 && !lists.is_empty() {
            Restored::Yes
        } else {
            Restored::No
        })
    }
}
