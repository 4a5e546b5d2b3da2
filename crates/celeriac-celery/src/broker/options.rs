//! Transport options (kombu's `broker_transport_options`) and the key names they give.

use super::error::{BrokerError, Result};
use std::time::Duration;

/// The order in which a consume call visits its queues (kombu's `queue_order_strategy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum QueueOrder {
    /// kombu's default: the queue that just delivered moves to the end of the order.
    #[default]
    RoundRobin,
    /// Queues in the order given, always (kombu's `priority`).
    Priority,
    /// Queues sorted by name, always (kombu's `sorted`).
    Sorted,
}

/// The prefix of fanout (pub/sub) channel names (kombu's `fanout_prefix`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum FanoutPrefix {
    /// `/<db>.`, kombu's default (`fanout_prefix=True`).
    #[default]
    Db,
    /// This text; `{db}` in it is replaced by the database number.
    Custom(String),
    /// No prefix (`fanout_prefix=False`).
    Off,
}

/// Options of [`KombuBroker`](super::KombuBroker), with kombu's defaults.
///
/// ```
/// use celeriac_celery::broker::TransportOptions;
/// use std::time::Duration;
/// let options = TransportOptions::default()
///     .visibility_timeout(Duration::from_secs(600))
///     .global_keyprefix("app:");
/// ```
#[derive(Debug, Clone)]
#[must_use]
pub struct TransportOptions {
    pub(crate) visibility_timeout: Duration,
    pub(crate) priority_steps: Vec<u8>,
    pub(crate) sep: String,
    pub(crate) global_keyprefix: String,
    pub(crate) queue_order: QueueOrder,
    pub(crate) fanout_prefix: FanoutPrefix,
    pub(crate) fanout_patterns: bool,
    pub(crate) unacked_key: String,
    pub(crate) unacked_index_key: String,
    pub(crate) unacked_mutex_key: String,
    pub(crate) unacked_mutex_expire: Duration,
    pub(crate) unacked_restore_limit: usize,
    pub(crate) connect_timeout: Duration,
    pub(crate) response_timeout: Duration,
    pub(crate) block: Duration,
}

impl Default for TransportOptions {
    fn default() -> Self {
        TransportOptions {
            visibility_timeout: Duration::from_secs(3600),
            priority_steps: vec![0, 3, 6, 9],
            sep: "\x06\x16".to_owned(),
            global_keyprefix: String::new(),
            queue_order: QueueOrder::RoundRobin,
            fanout_prefix: FanoutPrefix::Db,
            fanout_patterns: true,
            unacked_key: "unacked".to_owned(),
            unacked_index_key: "unacked_index".to_owned(),
            unacked_mutex_key: "unacked_mutex".to_owned(),
            unacked_mutex_expire: Duration::from_secs(300),
            unacked_restore_limit: 0,
            connect_timeout: Duration::from_secs(5),
            response_timeout: Duration::from_secs(30),
            block: Duration::from_secs(2),
        }
    }
}

impl TransportOptions {
    /// How long a taken message may stay unacknowledged before a sweep gives it back
    /// (`visibility_timeout`, default 3600 s). Use the same value as the Python workers.
    pub fn visibility_timeout(mut self, timeout: Duration) -> Self {
        self.visibility_timeout = timeout;
        self
    }

    /// The priority steps (`priority_steps`, default `[0, 3, 6, 9]`), ascending.
    pub fn priority_steps(mut self, steps: impl Into<Vec<u8>>) -> Self {
        self.priority_steps = steps.into();
        self
    }

    /// The separator between a queue name and its priority step (`sep`, default `"\x06\x16"`).
    pub fn separator(mut self, sep: impl Into<String>) -> Self {
        self.sep = sep.into();
        self
    }

    /// A prefix of every key and channel name (`global_keyprefix`, default none).
    pub fn global_keyprefix(mut self, prefix: impl Into<String>) -> Self {
        self.global_keyprefix = prefix.into();
        self
    }

    /// The queue order of a consume call (`queue_order_strategy`, default round robin).
    pub fn queue_order(mut self, order: QueueOrder) -> Self {
        self.queue_order = order;
        self
    }

    /// The fanout channel prefix (`fanout_prefix`, default `/<db>.`).
    pub fn fanout_prefix(mut self, prefix: FanoutPrefix) -> Self {
        self.fanout_prefix = prefix;
        self
    }

    /// Whether a fanout routing key is part of the channel name (`fanout_patterns`, default
    /// on).
    pub fn fanout_patterns(mut self, on: bool) -> Self {
        self.fanout_patterns = on;
        self
    }

    /// The names of the unacked hash, its index and the sweep mutex (`unacked_key`,
    /// `unacked_index_key`, `unacked_mutex_key`; default `unacked`, `unacked_index`,
    /// `unacked_mutex`).
    pub fn unacked_keys(
        mut self,
        unacked: impl Into<String>,
        index: impl Into<String>,
        mutex: impl Into<String>,
    ) -> Self {
        self.unacked_key = unacked.into();
        self.unacked_index_key = index.into();
        self.unacked_mutex_key = mutex.into();
        self
    }

    /// How long the sweep mutex lasts if its holder dies (`unacked_mutex_expire`, 300 s).
    pub fn unacked_mutex_expire(mut self, expire: Duration) -> Self {
        self.unacked_mutex_expire = expire;
        self
    }

    /// At most this many messages restored per sweep (`unacked_restore_limit`; 0, the
    /// default, is no limit).
    pub fn unacked_restore_limit(mut self, limit: usize) -> Self {
        self.unacked_restore_limit = limit;
        self
    }

    /// How long connecting may take (default 5 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// How long one command or script may take (default 30 s).
    pub fn response_timeout(mut self, timeout: Duration) -> Self {
        self.response_timeout = timeout;
        self
    }

    /// How long one blocking wait of a list watcher lasts before it looks again whether
    /// anyone still waits (default 2 s). Does not bound how quickly a message is seen.
    pub fn block_interval(mut self, block: Duration) -> Self {
        self.block = block;
        self
    }

    pub(crate) fn validate(&self) -> Result<()> {
        let bad = |option, reason: &str| {
            Err(BrokerError::Option {
                option,
                reason: reason.to_owned(),
            })
        };
        if self.priority_steps.is_empty() {
            return bad("priority_steps", "must name at least one step");
        }
        if self.priority_steps.windows(2).any(|w| w[0] >= w[1]) {
            return bad("priority_steps", "must be strictly ascending");
        }
        if self.sep.is_empty() {
            return bad("sep", "must not be empty");
        }
        if self.visibility_timeout.is_zero() {
            return bad("visibility_timeout", "must be more than zero");
        }
        if self.block < Duration::from_millis(10) {
            return bad("block_interval", "must be at least 10 ms");
        }
        let names = [
            ("unacked_key", &self.unacked_key),
            ("unacked_index_key", &self.unacked_index_key),
            ("unacked_mutex_key", &self.unacked_mutex_key),
        ];
        if let Some((option, _)) = names.iter().find(|(_, n)| n.is_empty()) {
            return bad(option, "must not be empty");
        }
        Ok(())
    }

    /// The priority step a message priority goes to: the largest step ≤ `priority` (kombu's
    /// `bisect`; below every step, Python's `steps[-1]`, the last one).
    pub(crate) fn step_for(&self, priority: u8) -> u8 {
        let below = self.priority_steps.partition_point(|s| *s <= priority);
        let i = below
            .checked_sub(1)
            .unwrap_or(self.priority_steps.len() - 1);
        self.priority_steps[i]
    }

    /// A queue's list for a priority step, without the global prefix: `Q`, or `Q<sep><step>`.
    pub(crate) fn list_name(&self, queue: &str, step: u8) -> String {
        if step == 0 {
            queue.to_owned()
        } else {
            format!("{queue}{}{step}", self.sep)
        }
    }

    /// A key with the global prefix.
    pub(crate) fn key(&self, name: &str) -> String {
        format!("{}{name}", self.global_keyprefix)
    }

    /// The binding set of an exchange: `_kombu.binding.<exchange>`, prefixed.
    pub(crate) fn binding_key(&self, exchange: &str) -> String {
        self.key(&format!("_kombu.binding.{exchange}"))
    }

    /// The fanout prefix for database `db`.
    pub(crate) fn fanout_prefix_for(&self, db: i64) -> String {
        match &self.fanout_prefix {
            FanoutPrefix::Db => format!("/{db}."),
            FanoutPrefix::Custom(p) => p.replace("{db}", &db.to_string()),
            FanoutPrefix::Off => String::new(),
        }
    }

    /// The channel (publish) or pattern (subscribe) of an exchange and routing key, prefixed.
    pub(crate) fn fanout_topic(&self, db: i64, exchange: &str, routing_key: &str) -> String {
        let mut topic = format!(
            "{}{}{exchange}",
            self.global_keyprefix,
            self.fanout_prefix_for(db)
        );
        if self.fanout_patterns && !routing_key.is_empty() {
            topic.push('/');
            topic.push_str(routing_key);
        }
        topic
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn priorities_map_to_the_largest_step_below() {
        let o = TransportOptions::default();
        let steps: Vec<u8> = (0..=9).map(|p| o.step_for(p)).collect();
        assert_eq!(steps, [0, 0, 0, 3, 3, 3, 6, 6, 6, 9]);
        assert_eq!(o.list_name("celery", 0), "celery");
        assert_eq!(o.list_name("celery", 3), "celery\x06\x163");
        // Python's steps[-1] when the priority is below every step.
        let odd = TransportOptions::default().priority_steps(vec![2, 5]);
        assert_eq!(odd.step_for(0), 5);
        assert_eq!(odd.step_for(4), 2);
    }

    #[test]
    fn fanout_topics_follow_kombu() {
        let o = TransportOptions::default();
        assert_eq!(
            o.fanout_topic(0, "celeryev", "worker.heartbeat"),
            "/0.celeryev/worker.heartbeat"
        );
        assert_eq!(o.fanout_topic(3, "celery.pidbox", ""), "/3.celery.pidbox");
        let p = TransportOptions::default().global_keyprefix("pfx:");
        assert_eq!(o.key("unacked"), "unacked");
        assert_eq!(
            p.fanout_topic(2, "celeryev", "task.sent"),
            "pfx:/2.celeryev/task.sent"
        );
        let flat = TransportOptions::default()
            .fanout_patterns(false)
            .fanout_prefix(FanoutPrefix::Off);
        assert_eq!(flat.fanout_topic(0, "ev", "rk"), "ev");
    }

    #[test]
    fn invalid_options_name_the_option() {
        let e = TransportOptions::default()
            .priority_steps(vec![3, 0])
            .validate()
            .expect_err("descending steps");
        assert!(e.to_string().contains("priority_steps"), "{e}");
    }
}
