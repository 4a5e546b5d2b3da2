//! Celeriac's Redis backend: standalone (`redis://`, `rediss://`), Cluster
//! (`redis+cluster://`) and Sentinel (`redis+sentinel://`).
//!
//! ```no_run
//! # async fn demo() -> celeriac_core::Result<()> {
//! let backend = celeriac_redis::RedisBackend::connect("redis://127.0.0.1:6379").await?;
//! # Ok(()) }
//! ```
//!
//! # Guarantees
//! - **At least once, fenced.** One Lua script promotes due jobs, picks ready ones, and leases
//!   them with a fresh fencing token; nothing is popped and recorded afterwards. Heartbeats,
//!   acknowledgements, progress and releases check the token; a stale one changes nothing.
//!   Expired leases go back to ready (or to the dead letters without attempts left).
//! - **No job in no set, whatever a script meets.** A Lua error keeps the writes made before
//!   it, so every queue script decides before it writes, and moves a job by adding it to its
//!   new set before removing it from the old one. A record of the wrong shape (a count missing
//!   or not a number, a spec that is not JSON where task limits need it) raises nothing: the
//!   claim or reap that meets it sends that job to the dead letters (`malformed_job`, naming
//!   the field) and goes on with the rest.
//! - **Cluster resharding loses nothing.** A script may touch only keys of its own slot, and
//!   only while every key of that slot is on the node running it. Job and unique keys are
//!   found inside the scripts, so they cannot be declared in `KEYS`; instead every queue script
//!   also declares the queue's `guard` key, which never exists. While the slot migrates Redis
//!   refuses a multi-key command on a node missing one of its keys (TRYAGAIN, or ASK then
//!   TRYAGAIN) before it runs, so no queue script runs on either node until the slot has
//!   moved; the client retries TRYAGAIN and follows MOVED/ASK, and a claim that still fails is
//!   retried by the worker. Other scripts declare every key they touch.
//! - **Bounded work per call.** No script moves, reaps or deletes more than 1,000 jobs at once
//!   and none scans a whole set; every `unpack` is sliced. A reap calls its script again
//!   while a batch came back full, so it leaves nothing due behind however fast jobs finish.
//! - **Refuses evicting memory policies.** Queues are not run on a Redis whose
//!   `maxmemory-policy` is not `noeviction` (an evicted job is a lost job) unless the URL says
//!   `?allow_eviction=true`.
//! - **Refuses a Redis that persists nothing.** Queues are not run on a Redis with neither the
//!   append-only file nor an RDB save point (`CONFIG GET appendonly` and `save`; where
//!   `CONFIG` is refused, `INFO persistence` must show the AOF on), because its restart loses
//!   every job, result and schedule, unless the URL says `?allow_volatile=true`. What a crash
//!   of the server (kill -9, power loss) loses depends on the setting: nothing acknowledged
//!   with `appendfsync always`; about the last second of acknowledged writes with `everysec`
//!   (the usual setting); everything since the last snapshot with RDB only.
//! - **Both checks run at connect** (the data nodes of a Cluster, the current master under
//!   Sentinel), unless the URL says `?role=cache`: a Redis used only for the cache's L2, rate
//!   limits and breakers, where an evicted or forgotten key costs a reload, may have any
//!   policy (`allkeys-lfu` is the one to choose; a warning is logged for `noeviction`, under
//!   which writes fail once it is full) and no persistence. Such a backend refuses queue
//!   operations (enqueue, claim, schedules, workflows) with an error saying why, and a worker
//!   on it fails at start.
//! - **An unplanned failover loses what was not replicated.** Replication is asynchronous: when
//!   a master dies (crash, kill -9, lost host) and Sentinel or Cluster promotes a replica, the
//!   writes the old master acknowledged but had not sent on are gone. A lost enqueue loses the
//!   job; a lost completion, claim or heartbeat leaves the job ready or leased on the new
//!   master, so it runs again (at least once holds). A planned failover (`SENTINEL FAILOVER`)
//!   waits for the replica and loses nothing.
//! - **`?wait_replicas=N` makes enqueues survive a failover.** Each enqueue script call is
//!   followed, in one pipeline on a connection of its own, by `WAIT N timeout`
//!   (`?wait_timeout_ms=`, default 1000): an enqueue returns Ok only once N replicas have its
//!   jobs, so a promoted replica among them has them too (Sentinel promotes the most up-to-date
//!   replica; with N equal to the number of replicas any of them will do). On Cluster the `WAIT`
//!   runs on the node of the queue's slot. Fewer acknowledgements within the timeout fail the
//!   enqueue with an error saying so; its jobs may be stored all the same, and pushing the same
//!   jobs (same ids) again is safe, because enqueueing is idempotent by id. Completions do not
//!   wait (a lost one only runs the job again). The cost: a replication round trip per enqueue
//!   call, shared by a batch, and enqueues of one process wait their turn on that connection.
//! - **Idle workers block.** Each waiting process blocks (`BZPOPMIN`, one dedicated connection
//!   per queue) on a per-queue marker that enqueues set, so a job enqueued into an idle queue
//!   starts within about one round trip. A delayed job starts close to its time: the worker
//!   sleeps until the earliest due time it knows of, and an enqueue wakes it to look again.
//! - **Results over pub/sub.** Finished jobs are published on their queue's channel;
//!   [`celeriac_core::ResultStore::wait`] returns on the message (and re-checks every second in
//!   case a message was lost while reconnecting). Finished workflows are published the same
//!   way, on a channel the same pattern matches, and
//!   [`celeriac_core::WorkflowStore::workflow_wait`] wakes on that subscription too.
//!
//! # Clock
//! `now` comes from the caller in ARGV: the same contract as every store (tests drive time),
//! and scripts stay deterministic. The caller's clock is the fleet's
//! ([`celeriac_core::clock::FleetClock`]): the server's `TIME`, read at connect (best of five
//! round trips) and every ten seconds after, carried forward on the monotonic clock in
//! between. So workers whose hosts' wall clocks disagree, or step, still agree on `now` to
//! within half a round trip; what remains is a step of the Redis server's own clock, which
//! every process follows at its next reading.
//!
//! # Key layout
//! Every key, its type and what it holds: see the `keys` module (`src/keys.rs`).
//!
//! # Client
//! redis-rs: multiplexed, pipelined connections; Cluster (slot routing, MOVED/ASK handling);
//! Sentinel; TLS through rustls; reconnect with backoff (`ConnectionManager`); a response
//! timeout on every call. Scripts run by SHA with a reload on NOSCRIPT.
//!
//! Why redis-rs rather than fred: both cover multiplexing, Cluster, Sentinel, TLS and
//! reconnects; redis-rs adds a script type that handles EVALSHA/NOSCRIPT for us, exposes one
//! `ConnectionLike` trait over standalone, Cluster and our Sentinel wrapper (so every script
//! call is written once), builds with rustls on `ring` (no C toolchain beyond what SQLite
//! already needs), and is the client most Rust services already depend on.

pub mod acl;
mod admin;
mod breakers;
mod broker;
mod browse;
mod checks;
mod clock;
mod codec;
mod config;
mod conn;
mod coordinator;
mod events;
#[doc(hidden)]
pub mod fuzzing;
mod health;
mod history;
mod keys;
mod kv;
mod notify;
mod processes;
mod rate_limits;
mod replicas;
mod results;
mod scripts;
mod workflows;

pub use config::{RedisConfig, Topology};

use celeriac_core::backend::StoreRole;
use celeriac_core::clock::{duration_ms, FleetClock, StoreClock, UnixMs, RESYNC_EVERY};
use celeriac_core::error::{Error, Result};
use celeriac_core::job::JobId;
use celeriac_core::redact;
use codec::Fields;
use conn::{map_err, Conn, Connector};
use keys::QueueKeys;
use redis::AsyncCommands;
use replicas::ReplicaWait;
use scripts::Scripts;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{broadcast, watch};
use tokio_util::sync::CancellationToken;

/// Jobs per enqueue script call: a batch of this many per queue is stored atomically.
const ENQUEUE_CHUNK: usize = 5000;
/// How long one blocking wait on a marker lasts before it is renewed.
const BLOCK_SECS: f64 = 1.0;
/// How long a process trusts that a queue name it added is still in the set of queues.
const REREGISTER_EVERY: Duration = Duration::from_secs(10);
/// Most reap script calls per queue in one reap (each handles a bounded batch).
const REAP_ROUNDS: usize = 10_000;

/// The Redis backend; cheap to clone.
#[derive(Clone)]
pub struct RedisBackend {
    inner: Arc<Inner>,
}

struct Inner {
    config: Arc<RedisConfig>,
    connector: Connector,
    conn: Conn,
    scripts: Scripts,
    /// Enqueues wait for replicas on this connection (`?wait_replicas=N`).
    replica_wait: Option<ReplicaWait>,
    /// Queues this process added to the set of queue names, and when (see `remember_queues`).
    known_queues: Mutex<HashMap<String, std::time::Instant>>,
    /// Moves whenever this process may have work: an enqueue here, or a marker popped.
    work: watch::Sender<u64>,
    /// How many workers of this process wait for work right now.
    waiting: watch::Sender<usize>,
    watched: Mutex<HashSet<String>>,
    done: broadcast::Sender<String>,
    listening: AtomicBool,
    stop: CancellationToken,
    /// Where rate-limit decisions wait for their batch.
    limit_batches: Arc<rate_limits::Batcher>,
    /// The fleet's clock: the server's `TIME`, read again every [`RESYNC_EVERY`].
    clock: Arc<FleetClock>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl std::fmt::Debug for RedisBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBackend")
            .field("topology", &self.inner.config.topology)
            .field("prefix", &self.inner.config.prefix)
            .finish_non_exhaustive()
    }
}

impl RedisBackend {
    /// Connects to the Redis a URL names and checks it is safe for queues.
    ///
    /// # Errors
    /// As [`RedisConfig::from_url`] and [`RedisBackend::open`]; no message quotes the password.
    pub async fn connect(url: &str) -> Result<Self> {
        Self::open(RedisConfig::from_url(url)?)
            .await
            .map_err(|e| redact::error(e, &redact::url_secrets(url)))
    }

    /// Connects with these settings.
    ///
    /// # Errors
    /// Redis unreachable (after the connect timeout), authentication refused, an evicting
    /// `maxmemory-policy` without `allow_eviction`, or no persistence at all without
    /// `allow_volatile`: each with a message saying which, and none quoting the password.
    pub async fn open(config: RedisConfig) -> Result<Self> {
        let config = Arc::new(config);
        let connector = Connector::new(config.clone())?;
        let conn = connector
            .connect(config.response_timeout)
            .await
            .map_err(|e| {
                // The client library's words are quoted: scrubbed of the password.
                let said = redact::text(&words_of(&e), &secrets_of(&config));
                Error::backend(
                    e.kind(),
                    format!("cannot connect to Redis ({:?}): {said}", config.topology),
                )
            })?;
        // Redis accepts a connection before authentication matters; the first command tells.
        let pong: redis::RedisResult<String> =
            redis::cmd("PING").query_async(&mut conn.clone()).await;
        if let Err(e) = pong {
            return Err(auth_or_backend(e, &config));
        }
        if config.role == StoreRole::Cache {
            checks::warn_if_refusing_when_full(&connector).await;
        } else {
            if !config.allow_eviction {
                checks::check_policy(&connector).await?;
            }
            if !config.allow_volatile {
                checks::check_persistence(&connector).await?;
            }
        }
        let replica_wait = if config.wait_replicas > 0 {
            let conn = connector
                .connect(config.response_timeout + config.wait_timeout)
                .await?;
            Some(ReplicaWait::new(
                conn,
                config.wait_replicas,
                config.wait_timeout,
            ))
        } else {
            None
        };
        let (done, _) = broadcast::channel(4096);
        let scripts = Scripts::new();
        let limit_batches = rate_limits::Batcher::new(conn.clone(), scripts.check_limits.clone());
        let stop = CancellationToken::new();
        let fleet = Arc::new(FleetClock::unsynced());
        let time = clock::RedisTime::new(conn.clone(), scripts.fleet_time.clone(), &config.prefix);
        fleet.sync(&time, 5).await.map_err(|e| {
            Error::backend(
                e.kind(),
                format!("cannot read the Redis server's clock: {}", words_of(&e)),
            )
        })?;
        fleet.spawn_sync(time, RESYNC_EVERY, stop.clone());
        Ok(Self {
            inner: Arc::new(Inner {
                config,
                connector,
                conn,
                scripts,
                replica_wait,
                known_queues: Mutex::new(HashMap::new()),
                work: watch::Sender::new(0),
                waiting: watch::Sender::new(0),
                watched: Mutex::new(HashSet::new()),
                done,
                listening: AtomicBool::new(false),
                stop,
                limit_batches,
                clock: fleet,
            }),
        })
    }

    /// The settings in use.
    pub fn config(&self) -> &RedisConfig {
        &self.inner.config
    }

    fn conn(&self) -> Conn {
        self.inner.conn.clone()
    }

    fn keys(&self, queue: &str) -> QueueKeys {
        QueueKeys::new(&self.inner.config.prefix, queue)
    }

    fn bump_work(&self) {
        self.inner.work.send_modify(|v| *v = v.wrapping_add(1));
    }

    /// Adds queue names to the set every process lists queues from (stats, reaps, cancels).
    /// A name this process added less than [`REREGISTER_EVERY`] ago is not sent again; after
    /// that it is, so a set lost with the store's data (a restart without persistence, a
    /// failover that lost the last writes) is rebuilt by the next enqueues.
    async fn remember_queues(&self, queues: impl IntoIterator<Item = &str>) -> Result<()> {
        let now = std::time::Instant::now();
        let new: Vec<String> = {
            let known = self.inner.known_queues.lock().map_err(|_| Error::Closed)?;
            queues
                .into_iter()
                .filter(|q| {
                    known
                        .get(*q)
                        .is_none_or(|at| now.duration_since(*at) >= REREGISTER_EVERY)
                })
                .map(str::to_string)
                .collect()
        };
        if new.is_empty() {
            return Ok(());
        }
        let _: () = self
            .conn()
            .sadd(keys::queues_key(&self.inner.config.prefix), &new)
            .await
            .map_err(map_err)?;
        if let Ok(mut known) = self.inner.known_queues.lock() {
            known.extend(new.into_iter().map(|q| (q, now)));
        }
        Ok(())
    }

    /// Every queue ever used with this prefix.
    async fn all_queues(&self) -> Result<Vec<String>> {
        let mut queues: Vec<String> = self
            .conn()
            .smembers(keys::queues_key(&self.inner.config.prefix))
            .await
            .map_err(map_err)?;
        queues.sort();
        Ok(queues)
    }

    async fn invoke<T: redis::FromRedisValue>(
        &self,
        script: &redis::Script,
        keys: &QueueKeys,
        args: impl IntoIterator<Item = Vec<u8>>,
    ) -> Result<T> {
        let mut inv = script.prepare_invoke();
        for k in &keys.keys {
            inv.key(k);
        }
        inv.arg(&keys.job_prefix);
        for a in args {
            inv.arg(a);
        }
        inv.invoke_async(&mut self.conn()).await.map_err(map_err)
    }

    /// Finds the queue holding job `id` by looking in every known queue (there are few), and
    /// reads its record, its lease and the set that holds it in one step (`readJob-12.lua`).
    async fn locate(&self, id: JobId) -> Result<Option<Found>> {
        let sid = id.to_string();
        for queue in self.all_queues().await? {
            let k = self.keys(&queue);
            let reply: Vec<redis::Value> = self
                .invoke(&self.inner.scripts.read_job, &k, [sid.clone().into_bytes()])
                .await?;
            let mut parts = reply.into_iter();
            let Some(record) = parts.next() else {
                continue;
            };
            let fields = codec::record_of(record).map_err(|why| {
                Error::Codec(format!("job {id}: its record does not read: {why}"))
            })?;
            let lease = parts
                .next()
                .and_then(|v| redis::from_redis_value::<Option<f64>>(v).ok().flatten());
            let held = parts
                .next()
                .and_then(|v| redis::from_redis_value::<i64>(v).ok())
                .and_then(|code| celeriac_core::JobState::from_code(code).ok());
            return Ok(Some(Found {
                queue,
                fields,
                lease: lease.map(|l| l as i64),
                held,
            }));
        }
        Ok(None)
    }

    /// Moves leased jobs whose records cannot be read to the dead letters, with the reason, so
    /// one malformed record neither blocks a worker nor comes back forever.
    async fn dead_letter_undecodable(
        &self,
        keys: &QueueKeys,
        bad: Vec<codec::Undecodable>,
        now: UnixMs,
    ) -> Result<()> {
        let dead_ttl = duration_ms(self.inner.config.dead_ttl);
        let mut args = vec![num(now), num(dead_ttl), keys.channel.clone().into_bytes()];
        for b in &bad {
            tracing::error!(id = %b.id, error = %b.error, "job record cannot be read; dead-lettering it");
            args.extend([
                b.id.clone().into_bytes(),
                b.token.to_string().into_bytes(),
                b"d".to_vec(),
                Vec::new(),
                b"undecodable_job".to_vec(),
                format!("the job's record in Redis cannot be read: {}", b.error).into_bytes(),
            ]);
        }
        let _: Vec<i64> = self
            .invoke(&self.inner.scripts.complete, keys, args)
            .await?;
        Ok(())
    }

    async fn loop_script(
        &self,
        script: &redis::Script,
        keys: &QueueKeys,
        args: Vec<Vec<u8>>,
    ) -> Result<u64> {
        let mut total = 0u64;
        loop {
            let n: i64 = self.invoke(script, keys, args.clone()).await?;
            if n <= 0 {
                return Ok(total);
            }
            total += n as u64;
        }
    }
}

/// What an error says without its kind's prefix, to quote in another error of that kind
/// (not "backend error: cannot connect ...: backend error: ...").
fn words_of(e: &Error) -> String {
    match e {
        Error::Backend { message, .. } => message.clone(),
        other => other.to_string(),
    }
}

/// Names authentication problems as such; everything else is a backend error.
pub(crate) fn auth_or_backend(e: redis::RedisError, config: &RedisConfig) -> Error {
    // The server's reply is quoted, so whatever it echoes is scrubbed of the password.
    let secrets = secrets_of(config);
    let said = redact::text(&e.to_string(), &secrets);
    match e.code() {
        Some("NOAUTH" | "WRONGPASS" | "NOPERM") => {
            // A user name without a password may be a password written where the user goes
            // (`redis://secret@host`): then it is not repeated.
            let user = match (&config.username, &config.password) {
                (Some(u), Some(_)) => u.as_str(),
                (Some(_), None) => "given, with no password",
                (None, _) => "default",
            };
            Error::config(
                "url",
                format!(
                    "Redis refused authentication ({said}); put the user and password in the \
                     URL, as in redis://user:password@host:6379 (user: {user}, password given: {})",
                    config.password.is_some()
                ),
            )
        }
        _ => Error::backend(
            map_err(e).kind(),
            format!("Redis did not answer PING: {said}"),
        ),
    }
}

/// The password of `config` as it may be quoted: as given and percent-encoded (as in the URL
/// handed to the client library). A user name without a password counts too, since it may be
/// a password written where the user goes.
fn secrets_of(config: &RedisConfig) -> Vec<String> {
    redact::url_secrets(&config.node_url("host", 0))
}

impl StoreClock for RedisBackend {
    fn fleet_clock(&self) -> Arc<FleetClock> {
        self.inner.clock.clone()
    }
}

/// A number as a script argument.
fn num(n: i64) -> Vec<u8> {
    n.to_string().into_bytes()
}

/// A job as [`RedisBackend::locate`] found it.
struct Found {
    /// The queue whose keys hold it.
    queue: String,
    /// Its record.
    fields: Fields,
    /// Its lease deadline, when `active` holds it.
    lease: Option<i64>,
    /// The state of the set that holds it, when its record's state (waiting or running)
    /// names a set that does not.
    held: Option<celeriac_core::JobState>,
}
