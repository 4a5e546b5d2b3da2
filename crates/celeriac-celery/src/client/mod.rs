//! The producer: sends tasks (and chains, groups, chords) to Python Celery workers over the
//! kombu Redis transport and reads their results from Celery's Redis result backend.
//!
//! - [`Client`] (built with [`Client::builder`]): the broker, the result backend and the
//!   defaults Python's `app.conf` would hold (`task_default_queue`, `result_expires`, key
//!   prefixes, and the chord bookkeeping of the workers, [`ChordGeneration`]).
//! - [`Client::send_task`] → [`TaskCall`]: `apply_async` by name. Messages are what Python's
//!   `apply_async` writes (§4.4; `lang` is `"rust"`): every header, a three-element body,
//!   `delivery_info` and a fresh `delivery_tag`, an integer `retries`.
//! - [`Client::apply`]: a [`Signature`] (task, chain, group, chord); a chord's join is set up
//!   in the result backend before its header tasks are published.
//! - [`AsyncResult`] / [`GroupResult`]: state, `get` (subscribe, then read, then wait for the
//!   publish; no polling), `forget`. A FAILURE comes back as [`ClientError::TaskFailed`] with
//!   the Python class, message and traceback.
//!
//! ```no_run
//! # async fn demo() -> celeriac_celery::client::Result<()> {
//! use celeriac_celery::client::Client;
//! use celeriac_celery::protocol::Signature;
//! use serde_json::json;
//! use std::time::Duration;
//!
//! let client = Client::builder("redis://127.0.0.1:6379/0")
//!     .result_backend("redis://127.0.0.1:6379/1")
//!     .build()
//!     .await?;
//! let sum: i64 = client.send_task("tasks.add").args((2, 3)).send().await?
//!     .get(Duration::from_secs(10)).await?;
//! assert_eq!(sum, 5);
//!
//! let chain = Signature::chain(vec![
//!     Signature::new("tasks.add").with_args(vec![json!(1), json!(2)]),
//!     Signature::new("tasks.add").with_args(vec![json!(10)]),
//! ]);
//! let total: i64 = client.apply(chain).await?.into_task().expect("a chain has one result")
//!     .get(Duration::from_secs(10)).await?;
//! assert_eq!(total, 13);
//! # Ok(()) }
//! ```

mod call;
mod error;
mod result;

pub use call::{TaskCall, When};
pub use error::{ClientError, Result, TaskFailure};
pub use result::{Applied, AsyncResult, GroupResult};

use std::sync::Arc;
use std::time::Duration;

use crate::broker::{KombuBroker, TransportOptions};
use crate::protocol::{ApplyContext, Route, Signature, SubtaskType, TaskMessage};
use crate::results::{ChordGeneration, KeyPrefixStyle, ResultBackend, DEFAULT_RESULT_EXPIRES};

/// Settings of a [`Client`], named after Celery's; see [`Client::builder`].
#[derive(Clone)]
#[must_use]
pub struct ClientBuilder {
    broker_url: String,
    backend_url: Option<String>,
    default_queue: String,
    default_exchange: String,
    default_routing_key: Option<String>,
    result_expires: Option<Duration>,
    chord_generation: ChordGeneration,
    transport: TransportOptions,
    backend_prefix: Option<(String, KeyPrefixStyle)>,
}

impl std::fmt::Debug for ClientBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientBuilder")
            .field("broker_url", &redact(&self.broker_url))
            .field("result_backend", &self.backend_url.as_deref().map(redact))
            .field("default_queue", &self.default_queue)
            .field("default_exchange", &self.default_exchange)
            .field("default_routing_key", &self.default_routing_key)
            .field("result_expires", &self.result_expires)
            .field("chord_generation", &self.chord_generation)
            .finish_non_exhaustive()
    }
}

/// `url` with its secrets replaced by `***` (Celeriac's one redacting form).
fn redact(url: &str) -> String {
    celeriac_core::redact::url(url)
}

impl ClientBuilder {
    /// `result_backend`: a Redis URL (`redis://host:port/db`). Without it tasks can be sent
    /// but not awaited, and chords cannot be sent.
    pub fn result_backend(mut self, url: impl Into<String>) -> Self {
        self.backend_url = Some(url.into());
        self
    }

    /// `task_default_queue` (default `celery`): where tasks go without `.queue(..)`.
    ///
    /// Python workers send chain steps, callbacks, errbacks and chord bodies that have no
    /// `queue` option to *their* `task_default_queue`: keep the two equal, or give those
    /// signatures a `queue` option.
    pub fn default_queue(mut self, queue: impl Into<String>) -> Self {
        self.default_queue = queue.into();
        self
    }

    /// `task_default_exchange` (default `""`: the anonymous exchange, straight to the queue,
    /// which is what Python writes for its direct queues). A named exchange routes tasks sent
    /// to the default queue through the bindings kombu keeps in Redis, as Python does for
    /// `apply_async(exchange=.., routing_key=..)`. Applies to [`Client::send_task`] calls
    /// without `.queue(..)`; canvas messages go to their queue directly.
    pub fn default_exchange(mut self, exchange: impl Into<String>) -> Self {
        self.default_exchange = exchange.into();
        self
    }

    /// `task_default_routing_key` (default: the queue name).
    pub fn default_routing_key(mut self, routing_key: impl Into<String>) -> Self {
        self.default_routing_key = Some(routing_key.into());
        self
    }

    /// `result_expires` (default one day; `None` or zero: forever): the lifetime of the chord
    /// size key this client writes (the workers set their own records' expiry).
    pub fn result_expires(mut self, expires: Option<Duration>) -> Self {
        self.result_expires = expires;
        self
    }

    /// The chord bookkeeping of the workers that run this client's chords: Celery 5.7
    /// ([`ChordGeneration::Claim`], the default) or 5.1–5.6 ([`ChordGeneration::Classic`]).
    pub fn chord_generation(mut self, generation: ChordGeneration) -> Self {
        self.chord_generation = generation;
        self
    }

    /// `broker_transport_options` (priority steps, separator, `global_keyprefix`, ...).
    pub fn transport_options(mut self, options: TransportOptions) -> Self {
        self.transport = options;
        self
    }

    /// The broker's `global_keyprefix` (kombu 5.2+), prepended to every queue key.
    pub fn broker_keyprefix(mut self, prefix: impl Into<String>) -> Self {
        self.transport = self.transport.global_keyprefix(prefix);
        self
    }

    /// `result_backend_transport_options["global_keyprefix"]`, joined to the key names as
    /// the workers' Celery does (`style`).
    pub fn backend_keyprefix(mut self, prefix: impl Into<String>, style: KeyPrefixStyle) -> Self {
        self.backend_prefix = Some((prefix.into(), style));
        self
    }

    /// Connects to the broker (and the result backend, when set).
    ///
    /// # Errors
    /// [`ClientError::Setting`] for an empty default queue or an unusable URL or option,
    /// [`ClientError::Connect`] when a server cannot be reached; both name the setting
    /// (`broker_url`, `result_backend`) and never show a password.
    pub async fn build(self) -> Result<Client> {
        if self.default_queue.is_empty() {
            return Err(ClientError::Setting {
                setting: "default_queue",
                reason: "is empty".into(),
            });
        }
        let broker = KombuBroker::connect(&self.broker_url, self.transport)
            .await
            .map_err(|e| match e {
                crate::broker::BrokerError::Connect { .. } => ClientError::Connect {
                    setting: "broker_url",
                    reason: e.to_string(),
                },
                other => ClientError::Setting {
                    setting: "broker_url",
                    reason: other.to_string(),
                },
            })?;
        let backend = match self.backend_url {
            None => None,
            Some(url) => {
                let mut b = ResultBackend::builder(url)
                    .result_expires(self.result_expires)
                    .chord_generation(self.chord_generation);
                if let Some((prefix, style)) = self.backend_prefix {
                    b = b.global_keyprefix(prefix, style);
                }
                Some(b.build().await.map_err(|e| match e {
                    crate::results::Error::Redis { .. } => ClientError::Connect {
                        setting: "result_backend",
                        reason: e.to_string(),
                    },
                    other => ClientError::Setting {
                        setting: "result_backend",
                        reason: other.to_string(),
                    },
                })?)
            }
        };
        Ok(Client {
            inner: Arc::new(Inner {
                broker,
                backend,
                default_queue: self.default_queue,
                default_exchange: self.default_exchange,
                default_routing_key: self.default_routing_key,
            }),
        })
    }
}

struct Inner {
    broker: KombuBroker,
    backend: Option<ResultBackend>,
    default_queue: String,
    default_exchange: String,
    default_routing_key: Option<String>,
}

/// A Celery producer; cheap to clone (clones share the connections).
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("broker", &self.inner.broker)
            .field("backend", &self.inner.backend)
            .field("default_queue", &self.inner.default_queue)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// Settings for a client of the broker at `broker_url` (`redis://[user:pass@]host[:port][/db]`),
    /// with Celery's defaults: queue `celery`, exchange `""`, `result_expires` one day, Celery
    /// 5.7 chord bookkeeping, no result backend.
    pub fn builder(broker_url: impl Into<String>) -> ClientBuilder {
        ClientBuilder {
            broker_url: broker_url.into(),
            backend_url: None,
            default_queue: "celery".into(),
            default_exchange: String::new(),
            default_routing_key: None,
            result_expires: Some(DEFAULT_RESULT_EXPIRES),
            chord_generation: ChordGeneration::default(),
            transport: TransportOptions::default(),
            backend_prefix: None,
        }
    }

    /// The broker.
    pub fn broker(&self) -> &KombuBroker {
        &self.inner.broker
    }

    /// The result backend, when configured.
    pub fn backend(&self) -> Option<&ResultBackend> {
        self.inner.backend.as_ref()
    }

    /// `task_default_queue`.
    pub fn default_queue(&self) -> &str {
        &self.inner.default_queue
    }

    pub(crate) fn require_backend(&self, why: &str) -> Result<&ResultBackend> {
        self.inner
            .backend
            .as_ref()
            .ok_or_else(|| ClientError::Setting {
                setting: "result_backend",
                reason: format!("is not configured ({why} needs it)"),
            })
    }

    /// `app.send_task(name, ...)`: a call to configure, then [`TaskCall::send`].
    pub fn send_task(&self, name: impl Into<String>) -> TaskCall<'_> {
        TaskCall::new(self, TaskMessage::new(name))
    }

    /// A handle on the result of the task `id` (sent by anyone).
    pub fn result(&self, id: impl Into<String>) -> AsyncResult {
        AsyncResult::new(self.clone(), id.into())
    }

    /// `sig.apply_async()`: publishes the messages of a signature built with the protocol's
    /// constructors (a task, [`Signature::chain`], [`Signature::group`], [`Signature::chord`]).
    /// For a chord, the join (`celery-taskset-meta-<gid>.s`) is initialised for the workers'
    /// [`ChordGeneration`] before any header task is published. Returns the result of the
    /// last task (chain), of the body (chord), or each member's (group).
    ///
    /// # Errors
    /// [`ClientError::Protocol`] for a malformed or unsupported canvas (nothing is sent),
    /// [`ClientError::Setting`] for a chord without a result backend, [`ClientError::Backend`]
    /// and [`ClientError::Broker`] when Redis fails (messages published before the failure
    /// stay published, as with Python).
    pub async fn apply(&self, sig: Signature) -> Result<Applied> {
        let mut ctx = ApplyContext::new(self.inner.broker.now());
        ctx.default_queue = self.inner.default_queue.clone();
        let is_group = sig.subtask_type == Some(SubtaskType::Group);
        let dispatch = sig.dispatch(&ctx)?;
        if let Some(chord) = &dispatch.chord {
            let backend = self.require_backend("a chord")?;
            let size = u64::try_from(chord.size).unwrap_or(u64::MAX);
            backend.init_chord(&chord.group_id, size).await?;
        }
        let mut ids = Vec::with_capacity(dispatch.messages.len());
        for (message, route) in &dispatch.messages {
            self.publish(message, route.clone()).await?;
            ids.push(message.headers.id.clone());
        }
        Ok(if is_group {
            Applied::Group(GroupResult::new(
                dispatch.result_id,
                ids.into_iter()
                    .map(|id| AsyncResult::new(self.clone(), id))
                    .collect(),
            ))
        } else {
            Applied::Task(AsyncResult::new(self.clone(), dispatch.result_id))
        })
    }

    /// The route of a message to `queue` (default queue when `None`) with the client's
    /// default exchange and routing key.
    pub(crate) fn route(&self, queue: Option<&str>, priority: Option<u8>) -> Route {
        let inner = &self.inner;
        let mut route = match queue {
            Some(q) => Route::queue(q),
            None => {
                let mut r = Route::queue(inner.default_queue.clone());
                r.exchange = inner.default_exchange.clone();
                if let Some(rk) = &inner.default_routing_key {
                    r.routing_key = rk.clone();
                }
                r
            }
        };
        route.priority = priority.map(|p| p.min(9));
        route
    }

    /// Publishes one message on its route: `LPUSH` onto the queue's list for its priority
    /// (anonymous exchange), or through the bindings of a named exchange.
    pub(crate) async fn publish(&self, message: &TaskMessage, route: Route) -> Result<()> {
        let broker = &self.inner.broker;
        let priority = route.priority;
        let (exchange, routing_key, queue) = (
            route.exchange.clone(),
            route.routing_key.clone(),
            route.queue.clone(),
        );
        let raw = message.to_envelope(route).encode();
        if exchange.is_empty() {
            broker.publish(&queue, priority, &raw).await?;
        } else {
            let n = broker
                .publish_to_exchange(&exchange, &routing_key, &raw)
                .await?;
            if n == 0 {
                return Err(ClientError::Unroutable {
                    task_id: message.headers.id.clone(),
                    exchange,
                    routing_key,
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builder_debug_hides_passwords() {
        let b = Client::builder("redis://u:s3cret@h:1/0").result_backend("rediss://tok3n@h:2/1");
        let shown = format!("{b:?}");
        assert!(
            !shown.contains("s3cret") && !shown.contains("tok3n"),
            "{shown}"
        );
        assert!(shown.contains("redis://u:***@h:1/0"), "{shown}");
        assert!(shown.contains("rediss://***@h:2/1"), "{shown}");
        assert_eq!(redact("redis://h:1/0"), "redis://h:1/0");
    }
}
