//! Exchange bindings: kombu keeps only them in Redis (`_kombu.binding.<exchange>`), and uses
//! them to find the queues of a message published to, or restored from, a named exchange.

use super::envelope::{self, UnackedRecord};
use super::error::Result;
use super::KombuBroker;
use serde_json::Value;

impl KombuBroker {
    /// Binds `queue` to a direct `exchange` with `routing_key`, as a Python process does when
    /// it declares the queue: the member `routing_key<sep><sep>queue` in
    /// `_kombu.binding.<exchange>` (and, as kombu ≥ 5.7 also writes for queues without
    /// `x-expires`, in `_kombu.binding_permanent.<exchange>`). Needed only when Python
    /// producers publish to a named exchange; Celery's default path uses the anonymous one.
    ///
    /// # Errors
    /// [`BrokerError::Redis`](super::BrokerError::Redis).
    pub async fn bind_queue(&self, exchange: &str, routing_key: &str, queue: &str) -> Result<()> {
        let o = &self.inner.options;
        let member = format!("{routing_key}{sep}{sep}{queue}", sep = o.sep);
        let _: () = redis::pipe()
            .atomic()
            .cmd("SADD")
            .arg(o.binding_key(exchange))
            .arg(&member)
            .ignore()
            .cmd("SADD")
            .arg(o.key(&format!("_kombu.binding_permanent.{exchange}")))
            .arg(&member)
            .ignore()
            .query_async(&mut self.conn())
            .await
            .map_err(self.err("bind_queue"))?;
        Ok(())
    }

    /// The lists a restored message goes to, as kombu's `_lookup` finds its queues: the
    /// anonymous exchange routes by routing key; a named one through its
    /// `_kombu.binding.<exchange>` set (as a direct exchange: kombu's default for an exchange
    /// it has not declared). Where kombu would find no queue and drop the message, this
    /// falls back to the queue named like the routing key.
    pub(crate) async fn lists_for(&self, record: &UnackedRecord) -> Result<Vec<String>> {
        let text = |v: &Value| match v {
            Value::String(s) => s.clone(),
            Value::Null => String::new(),
            other => other.to_string(),
        };
        let exchange = text(&record.exchange);
        let routing_key = text(&record.routing_key);
        let mut queues = if exchange.is_empty() {
            Vec::new()
        } else {
            self.bound_queues(&exchange, &routing_key, "restore")
                .await?
        };
        if queues.is_empty() && !routing_key.is_empty() {
            queues.push(routing_key);
        }
        let priority = if record.is_object {
            envelope::fields(&record.raw).map_or(0, |f| f.priority)
        } else {
            0
        };
        Ok(queues
            .iter()
            .map(|q| self.list_key_for_priority(q, priority))
            .collect())
    }

    /// The queues bound to a direct `exchange` with `routing_key` (kombu's
    /// `DirectExchange.lookup` over `_kombu.binding.<exchange>`).
    async fn bound_queues(
        &self,
        exchange: &str,
        routing_key: &str,
        op: &'static str,
    ) -> Result<Vec<String>> {
        let o = &self.inner.options;
        let members: Vec<String> = self
            .idempotent(|| async {
                redis::cmd("SMEMBERS")
                    .arg(o.binding_key(exchange))
                    .query_async(&mut self.conn())
                    .await
                    .map_err(self.err(op))
            })
            .await?;
        let mut queues: Vec<String> = Vec::new();
        for m in members {
            let mut parts = m.splitn(3, o.sep.as_str());
            if let (Some(rk), Some(_pattern), Some(queue)) =
                (parts.next(), parts.next(), parts.next())
            {
                if rk == routing_key && !queues.iter().any(|q| q == queue) {
                    queues.push(queue.to_owned());
                }
            }
        }
        Ok(queues)
    }

    /// Publishes an envelope through a direct exchange, as kombu does for a named exchange:
    /// `LPUSH` onto the priority list (from `properties.priority`) of every queue bound to
    /// `exchange` with `routing_key`; the anonymous exchange `""` routes to the queue named
    /// `routing_key`. Returns the number of queues it went to: 0 when none is bound (kombu
    /// then drops the message too). Used for replies to Python clients (e.g. the
    /// `reply.celery.pidbox` exchange); topic exchanges are not supported.
    ///
    /// # Errors
    /// As [`publish`](Self::publish).
    pub async fn publish_to_exchange(
        &self,
        exchange: &str,
        routing_key: &str,
        raw: &[u8],
    ) -> Result<usize> {
        let queues = if exchange.is_empty() {
            vec![routing_key.to_owned()]
        } else {
            self.bound_queues(exchange, routing_key, "publish").await?
        };
        for queue in &queues {
            self.publish(queue, None, raw).await?;
        }
        Ok(queues.len())
    }
}
