//! The kombu Redis transport: how Celery's messages sit in Redis, taken and given back the way
//! Python's kombu does it, so Rust and Python processes share queues.
//!
//! - A queue `Q` is one list per priority step: `Q`, `Q\x06\x163`, `Q\x06\x166`, `Q\x06\x169`;
//!   a message is pushed on the left ([`KombuBroker::publish`]) and taken from the right, lower
//!   step first ([`KombuBroker::consume`]).
//! - A taken message is recorded in the `unacked` hash and the `unacked_index` zset until it
//!   is acknowledged ([`KombuBroker::ack`]) or given back ([`KombuBroker::requeue`],
//!   [`KombuBroker::restore_all`]); entries older than the visibility timeout are given back
//!   by a sweep ([`KombuBroker::restore_visible`]) — by ours or by any Python worker's.
//!   Unlike kombu, taking and recording are one atomic step (a Lua script), so a process
//!   killed at any instant loses no message.
//! - Fanout exchanges (events, remote control) are pub/sub channels
//!   ([`KombuBroker::publish_fanout`], [`KombuBroker::subscribe_fanout`]).
//! - Named exchanges route through bindings kept in Redis ([`KombuBroker::bind_queue`]);
//!   Celery's default publish path uses the anonymous exchange and needs none.
//!
//! Waiting for a message does not poll: while a consume call waits, one connection per list
//! key it consumes blocks in `BLMOVE key key RIGHT RIGHT` (which leaves the list unchanged)
//! and wakes it when something arrives; it then claims with the script.
//!
//! The transport moves envelopes as raw bytes: it reads only the few fields it needs
//! (`properties.priority`, `delivery_tag`, `delivery_info`) and never re-serializes a message.
//!
//! ```no_run
//! # async fn demo(envelope: Vec<u8>) -> celeriac_celery::broker::Result<()> {
//! use celeriac_celery::broker::{KombuBroker, TransportOptions};
//! use std::time::Duration;
//!
//! let broker = KombuBroker::connect("redis://127.0.0.1:6379/0", TransportOptions::default()).await?;
//! broker.publish("celery", None, &envelope).await?;
//! if let Some(delivery) = broker.consume(&["celery"], Duration::from_secs(1)).await? {
//!     // ... run the task ...
//!     broker.ack(&delivery.delivery_tag).await?;
//! }
//! # Ok(()) }
//! ```

mod bindings;
mod clock;
mod consume;
mod envelope;
mod error;
mod fanout;
mod options;
mod unacked;
mod waker;

pub use error::{BrokerError, ErrorKind, Result};
pub use fanout::{FanoutMessage, FanoutSubscription};
pub use options::{FanoutPrefix, QueueOrder, TransportOptions};
pub use unacked::SweepReport;

use celeriac_core::clock::{FleetClock, RESYNC_EVERY};
use chrono::{DateTime, Utc};
pub(crate) use clock::now_of;
use error::RedactedUrl;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Client, Script};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// One message taken by [`KombuBroker::consume`]; it stays in `unacked` until
/// [`KombuBroker::ack`] or a restore.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Delivery {
    /// The envelope exactly as it was on the list.
    pub raw: Vec<u8>,
    /// The queue it was taken from (without the global key prefix).
    pub queue: String,
    /// The priority step of the list it was taken from (0 is served first).
    pub priority: u8,
    /// The key of its `unacked` entry: `properties.delivery_tag` (see the claim script for
    /// the rare messages without one).
    pub delivery_tag: String,
    /// Whether it was given back before (`headers.redelivered` or
    /// `properties.delivery_info.redelivered`).
    pub redelivered: bool,
}

/// The Lua scripts, one file per atomic step (`lua/`), each opening with its contract.
struct Scripts {
    claim: Script,
    restore: Script,
    stale: Script,
    extend: Script,
    release_mutex: Script,
}

impl Scripts {
    fn new() -> Self {
        Scripts {
            claim: Script::new(include_str!("lua/claimMessage-N.lua")),
            restore: Script::new(include_str!("lua/restoreMessage-N.lua")),
            stale: Script::new(include_str!("lua/staleUnacked-1.lua")),
            extend: Script::new(include_str!("lua/extendUnacked-1.lua")),
            release_mutex: Script::new(include_str!("lua/releaseMutex-1.lua")),
        }
    }
}

struct Inner {
    url: RedactedUrl,
    client: Client,
    conn: ConnectionManager,
    db: i64,
    options: TransportOptions,
    scripts: Scripts,
    /// The round-robin order of every queue consumed so far.
    order: Mutex<Vec<String>>,
    waker: waker::Waker,
    /// The server's clock as this process reads it (see [`KombuBroker::now`]).
    clock: Arc<FleetClock>,
}

/// A connection to one Redis database used as a kombu broker; cheap to clone (clones share
/// the connection and the list watchers).
#[derive(Clone)]
pub struct KombuBroker {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for KombuBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KombuBroker")
            .field("url", &self.inner.url.shown)
            .field("db", &self.inner.db)
            .finish_non_exhaustive()
    }
}

impl KombuBroker {
    /// Connects to `redis://[user:pass@]host[:port][/db]` (or `rediss://` for TLS); the
    /// database number defaults to 0 and is part of fanout channel names.
    ///
    /// # Errors
    /// [`BrokerError::Option`] for an invalid option, [`BrokerError::Url`] for a URL that is
    /// not a Redis URL, [`BrokerError::Connect`] when the server cannot be reached or refuses
    /// the credentials. No message contains the password.
    pub async fn connect(url: &str, options: TransportOptions) -> Result<Self> {
        options.validate()?;
        let redacted = RedactedUrl::new(url);
        let scheme = url.split_once("://").map(|(s, _)| s);
        if !matches!(scheme, Some("redis" | "rediss" | "unix" | "redis+unix")) {
            return Err(BrokerError::Url {
                url: redacted.shown.clone(),
                reason: "must start with redis://, rediss:// or unix://".to_owned(),
            });
        }
        let client = Client::open(url).map_err(|e| BrokerError::Url {
            url: redacted.shown.clone(),
            reason: redacted.scrub(&e.to_string()),
        })?;
        let db = client.get_connection_info().redis_settings().db();
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(options.connect_timeout))
            .set_response_timeout(Some(options.response_timeout))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_millis(500));
        let conn = ConnectionManager::new_with_config(client.clone(), config)
            .await
            .map_err(|e| BrokerError::Connect {
                url: redacted.shown.clone(),
                kind: error::kind_of(&e),
                message: redacted.scrub(&e.to_string()),
            })?;
        let waker = waker::Waker::new(client.clone(), &options);
        let source = clock::BrokerTime { conn: conn.clone() };
        let fleet = Arc::new(FleetClock::unsynced());
        fleet
            .sync(&source, 3)
            .await
            .map_err(|e| BrokerError::Connect {
                url: redacted.shown.clone(),
                kind: ErrorKind::Retry,
                message: redacted.scrub(&e.to_string()),
            })?;
        // Ends when the last clone of this broker (and of its clock) is dropped.
        fleet.spawn_sync(
            source,
            RESYNC_EVERY,
            tokio_util::sync::CancellationToken::new(),
        );
        Ok(KombuBroker {
            inner: Arc::new(Inner {
                url: redacted,
                client,
                conn,
                db,
                options,
                scripts: Scripts::new(),
                order: Mutex::new(Vec::new()),
                waker,
                clock: fleet,
            }),
        })
    }

    /// The database number of the URL.
    pub fn db(&self) -> i64 {
        self.inner.db
    }

    /// The options in force.
    pub fn options(&self) -> &TransportOptions {
        &self.inner.options
    }

    /// The visibility timeout in force: extend messages well within it
    /// ([`extend`](Self::extend)).
    pub fn visibility_timeout(&self) -> Duration {
        self.inner.options.visibility_timeout
    }

    /// The fleet's time now: the Redis server's clock as this process reads it (measured at
    /// connect and every 10 s after), whatever this host's wall clock says. Etas, expiry
    /// times and countdowns are compared with it.
    pub fn now(&self) -> DateTime<Utc> {
        clock::now_of(&self.inner.clock)
    }

    /// The fleet's clock behind [`now`](Self::now).
    pub fn clock(&self) -> Arc<FleetClock> {
        self.inner.clock.clone()
    }

    /// The URL, password replaced by `***`.
    pub fn redacted_url(&self) -> &str {
        &self.inner.url.shown
    }

    fn conn(&self) -> ConnectionManager {
        self.inner.conn.clone()
    }

    /// Runs an idempotent operation, trying again (three times, backing off from 100 ms) when
    /// it fails for a passing reason: a connection lost meanwhile fails the first command
    /// after it and reconnects.
    async fn idempotent<T, F, Fut>(&self, mut op: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        let mut failures = 0u32;
        loop {
            match op().await {
                Err(e) if e.kind() != ErrorKind::GiveUp && failures < 3 => {
                    failures += 1;
                    tracing::debug!(error = %e, "broker operation failed; trying again");
                    tokio::time::sleep(Duration::from_millis(50) * 2u32.pow(failures)).await;
                }
                other => return other,
            }
        }
    }

    fn err(&self, op: &'static str) -> impl Fn(redis::RedisError) -> BrokerError + '_ {
        move |e| BrokerError::redis(op, &self.inner.url, &e)
    }

    /// The Redis key (prefixed) of `queue`'s list for priority step `step`.
    pub fn list_key(&self, queue: &str, step: u8) -> String {
        let o = &self.inner.options;
        o.key(&o.list_name(queue, step))
    }

    /// The Redis key (prefixed) of the list a message of `priority` goes to.
    pub fn list_key_for_priority(&self, queue: &str, priority: u8) -> String {
        self.list_key(queue, self.inner.options.step_for(priority.min(9)))
    }

    /// Publishes an envelope to `queue` as kombu does: `LPUSH` onto the list of its priority
    /// step. The priority is `priority` when given (clamped to 9), else the envelope's
    /// `properties.priority` read as kombu reads it (missing or invalid: 0). Keep the two
    /// equal: a restore puts the message where its `properties.priority` says.
    ///
    /// # Errors
    /// [`BrokerError::Envelope`] when the envelope is not a JSON object or lacks
    /// `properties.delivery_tag` or `properties.delivery_info` (a Python worker would lose it);
    /// [`BrokerError::Redis`] when the push fails.
    pub async fn publish(&self, queue: &str, priority: Option<u8>, raw: &[u8]) -> Result<()> {
        let fields = envelope::fields(raw).ok_or(BrokerError::Envelope {
            field: "envelope",
            reason: "is not a JSON object",
        })?;
        if fields.delivery_tag.is_none() {
            return Err(BrokerError::Envelope {
                field: "properties.delivery_tag",
                reason: "is missing or not a string (a Python worker would drop the message)",
            });
        }
        if !fields.has_delivery_info {
            return Err(BrokerError::Envelope {
                field: "properties.delivery_info",
                reason: "is missing or not an object (a Python worker would drop the message)",
            });
        }
        let key = self.list_key_for_priority(queue, priority.unwrap_or(fields.priority));
        let _: i64 = redis::cmd("LPUSH")
            .arg(&key)
            .arg(raw)
            .query_async(&mut self.conn())
            .await
            .map_err(self.err("publish"))?;
        Ok(())
    }

    /// The number of messages waiting in `queue`, over all its priority lists (taken but
    /// unacknowledged messages are not counted, as in kombu).
    ///
    /// # Errors
    /// [`BrokerError::Redis`].
    pub async fn queue_len(&self, queue: &str) -> Result<u64> {
        let mut pipe = redis::pipe();
        for step in &self.inner.options.priority_steps {
            pipe.cmd("LLEN").arg(self.list_key(queue, *step));
        }
        let lens: Vec<u64> = self
            .idempotent(|| async {
                pipe.query_async(&mut self.conn())
                    .await
                    .map_err(self.err("queue_len"))
            })
            .await?;
        Ok(lens.iter().sum())
    }

    /// Deletes every waiting message of `queue` (all priority lists, atomically); returns how
    /// many there were. Unacknowledged messages stay.
    ///
    /// # Errors
    /// [`BrokerError::Redis`].
    pub async fn purge(&self, queue: &str) -> Result<u64> {
        let steps = &self.inner.options.priority_steps;
        let mut pipe = redis::pipe();
        pipe.atomic();
        for step in steps {
            pipe.cmd("LLEN").arg(self.list_key(queue, *step));
        }
        for step in steps {
            pipe.cmd("DEL").arg(self.list_key(queue, *step)).ignore();
        }
        let lens: Vec<u64> = pipe
            .query_async(&mut self.conn())
            .await
            .map_err(self.err("purge"))?;
        Ok(lens.iter().sum())
    }
}
