//! Fanout exchanges: kombu delivers them over Redis pub/sub, fire and forget.

use super::error::{BrokerError, Result};
use super::KombuBroker;
use futures_util::Stream;
use std::pin::Pin;
use std::task::{Context, Poll};

/// One message received on a fanout subscription.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct FanoutMessage {
    /// The channel it was published on, without the global key prefix (e.g.
    /// `/0.celeryev/worker.heartbeat`).
    pub channel: String,
    /// The envelope as published.
    pub raw: Vec<u8>,
}

/// A stream of the messages published to some fanout exchanges; it has its own connection,
/// closed on drop. The stream ends when the connection is lost (subscribe again).
pub struct FanoutSubscription {
    stream: Pin<Box<redis::aio::PubSubStream>>,
    prefix: String,
}

impl std::fmt::Debug for FanoutSubscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FanoutSubscription")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl Stream for FanoutSubscription {
    type Item = FanoutMessage;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        match self.stream.as_mut().poll_next(cx) {
            Poll::Ready(Some(msg)) => {
                let channel = msg.get_channel_name();
                let channel = channel
                    .strip_prefix(self.prefix.as_str())
                    .unwrap_or(channel);
                Poll::Ready(Some(FanoutMessage {
                    channel: channel.to_owned(),
                    raw: msg.get_payload_bytes().to_vec(),
                }))
            }
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl KombuBroker {
    /// The channel kombu publishes a fanout message of `exchange` with `routing_key` on:
    /// `<global_keyprefix><fanout_prefix><exchange>[/<routing_key>]`, e.g.
    /// `/0.celeryev/worker.heartbeat` or `/0.celery.pidbox`.
    pub fn fanout_channel(&self, exchange: &str, routing_key: &str) -> String {
        self.inner
            .options
            .fanout_topic(self.inner.db, exchange, routing_key)
    }

    /// Publishes an envelope to a fanout exchange (`PUBLISH` on
    /// [`fanout_channel`](Self::fanout_channel)); returns how many subscribers received it.
    ///
    /// # Errors
    /// [`BrokerError::Redis`].
    pub async fn publish_fanout(
        &self,
        exchange: &str,
        routing_key: &str,
        raw: &[u8],
    ) -> Result<u64> {
        redis::cmd("PUBLISH")
            .arg(self.fanout_channel(exchange, routing_key))
            .arg(raw)
            .query_async(&mut self.conn())
            .await
            .map_err(self.err("publish_fanout"))
    }

    /// Subscribes to fanout exchanges as kombu binds a queue to them: each `(exchange,
    /// binding_key)` becomes a `PSUBSCRIBE` of its channel, `#` in the key turned into `*`
    /// (e.g. `("celeryev", "#")` → `/0.celeryev/*`, `("celery.pidbox", "")` →
    /// `/0.celery.pidbox`).
    ///
    /// # Errors
    /// [`BrokerError::Connect`] when the subscription connection fails,
    /// [`BrokerError::Redis`] when a `PSUBSCRIBE` does.
    pub async fn subscribe_fanout(&self, bindings: &[(&str, &str)]) -> Result<FanoutSubscription> {
        let url = &self.inner.url;
        let mut pubsub =
            self.inner
                .client
                .get_async_pubsub()
                .await
                .map_err(|e| BrokerError::Connect {
                    url: url.shown.clone(),
                    kind: super::error::kind_of(&e),
                    message: url.scrub(&e.to_string()),
                })?;
        for (exchange, key) in bindings {
            let pattern = self.fanout_channel(exchange, &key.replace('#', "*"));
            pubsub
                .psubscribe(&pattern)
                .await
                .map_err(self.err("subscribe_fanout"))?;
        }
        Ok(FanoutSubscription {
            stream: Box::pin(pubsub.into_on_message()),
            prefix: self.inner.options.global_keyprefix.clone(),
        })
    }
}
