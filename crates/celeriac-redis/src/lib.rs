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
//! - **Both checks run at connect, whatever the backend is used for** (the data nodes of a
//!   Cluster, the current master under Sentinel). A Redis used only as the cache's L2, for rate
//!   limits or for breakers, where an evicted or forgotten key costs nothing, is opened with
//!   `?allow_eviction=true&allow_volatile=true`.
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
//! With the default prefix `celeriac` and a queue `emails`, every key of the queue carries the
//! hash tag `{emails}` (one Cluster slot):
//!
//! | key | type | what |
//! |---|---|---|
//! | `celeriac:{emails}:ready` | ZSET | pending jobs; score `(9 - priority)·2^42 + run_at`, member `<seq>:<id>`: priority, then due time, then FIFO |
//! | `celeriac:{emails}:scheduled` | ZSET | delayed jobs by `run_at` |
//! | `celeriac:{emails}:retry` | ZSET | jobs waiting for their next attempt, by `run_at` |
//! | `celeriac:{emails}:active` | ZSET | leased jobs by lease expiry |
//! | `celeriac:{emails}:leases` | HASH | job id → fencing token of each leased job |
//! | `celeriac:{emails}:meta` | HASH | `paused`, `seq` (FIFO counter), `fence` (token counter) |
//! | `celeriac:{emails}:marker` | ZSET | wake-up marker idle workers block on |
//! | `celeriac:{emails}:dead` | ZSET | dead letters by time of death (records expire after the dead-letter TTL; a reap drops the oldest beyond the cap, `?dead_max=`) |
//! | `celeriac:{emails}:succeeded`, `:failed`, `:cancelled`, `:expired` | ZSET | kept records by expiry, for counting |
//! | `celeriac:{emails}:job:<id>` | HASH | one job: `d` spec (JSON), `p` payload, `s` state, `pr` priority, `q` sequence, `r` run_at, `x` expires_at, `a` attempts, `m` max attempts, `tt` result ttl, `w` worker, `st`/`f` started/finished, `res` result, `ek`/`em`/`ea` last error, `pg`/`pgm` progress; finished ones expire |
//! | `celeriac:{emails}:unique:<key>` | STRING | the job holding a unique key: `<mode>\|<id>` (a window adds `\|<until>`) |
//! | `celeriac:{emails}:guard` | none | never created; declared by every queue script so that none runs while the slot migrates (see Guarantees) |
//! | `celeriac:{emails}:done` | channel | ids of finished jobs |
//! | `celeriac:queues` | SET | queue names (the one key outside any queue's slot) |
//! | `celeriac:{celeriac:beat}:leader:<name>` | HASH | a leader lease (the scheduler's is `beat`): `holder`, `token` (fencing token, grows each time the lease changes hands, never expires), `until` (ms) |
//! | `celeriac:{celeriac:beat}:ticks` | HASH | schedule name → last tick handled (ms) |
//! | `celeriac:{celeriac:beat}:paused` | HASH | schedule name → `1` while paused by `celeriac schedules pause` |
//! | `celeriac:{celeriac:breaker:<name>}:state` | HASH | a shared circuit breaker: state code, open-until, trips, generation, probe results, `exp` (see `lua/includes/breaker.lua`) |
//! | `celeriac:{celeriac:breaker:<name>}:signals` | HASH | `<bucket epoch>\|<instance>` → calls, failures, slow calls |
//! | `celeriac:{celeriac:breaker:<name>}:probes` | ZSET | half-open probe reservations by expiry |
//!
//! Every breaker key has a Redis TTL (twice the longest of its window, open period and probe
//! lease), refreshed by each write; the `exp` field judges expiry by the caller's `now`.
//!
//! Unique keys live in the queue's slot so their scripts stay atomic; cache and limiter keys
//! get their own prefixes (`celeriac:kv:…`, `celeriac:{rl:…}`).
//!
//! Workflows (chain, group, chord) belong to no queue: every key of one join or one workflow
//! carries the hash tag `{wf:<id>}` (ids are UUIDs, so no tag clashes with a queue's), and each
//! of their scripts touches one key:
//!
//! | key | type | what |
//! |---|---|---|
//! | `celeriac:{wf:<join id>}:join` | HASH | a join (the barrier after a group): `<index>` → the member's output, `n` distinct indexes with an output, `t` total, `e` first failure, `x` keep-until; expires its ttl after the last arrival |
//! | `celeriac:{wf:<id>}:rec` | HASH | a workflow record: `n` name, `s` state (0 running, 1 succeeded, 2 failed), `r` result, `e` error, `c` created, `f` finished, `t` ttl; expires its ttl after it finishes |
//! | `celeriac:{wf:<id>}:done` | channel | the id of the workflow once it finished (matched by the completion pattern `celeriac:{*}:done`) |
//!
//! The coordinator's keys (leader leases, schedule state) share the one hash tag
//! `{celeriac:beat}`, so its scripts (`acquireLeader-1`, `releaseLeader-1`, `recordTick-2`) run
//! on one Cluster slot.
//!
//! The key-value store (the cache's L2, [`celeriac_core::KvStore`]) keeps the caller's key intact
//! after its prefix, so a `{hash tag}` in the key chooses the slot (callers co-locate keys that
//! way); keys of one call may lie in many slots, and are grouped by slot on Cluster:
//!
//! | key | type | what |
//! |---|---|---|
//! | `celeriac:kv:<key>` | STRING | a value: byte `0x01`, expiry (ms since the epoch, 8 bytes big-endian), then the value; Redis TTL set to the same moment (`PX`), but reads judge expiry by the caller's `now` against the stored expiry. A counter (`INCR`) is plain decimal text, without expiry |
//! | `celeriac:kv-lock:<key>` | STRING | a lease lock: `<until>\|<token>`, TTL the lease (`lockKey-1`, `unlockKey-1`) |
//! | `celeriac:kv-channel:<channel>` | channel | broadcast messages; each subscription has its own pub/sub connection and gets a `Reset` after it resubscribes |
//!
//! Rate limits ([`celeriac_core::RateLimitStore`]): every key of one limiter key carries the
//! hash tag `{rl:<key>}`, so all its quotas sit on one slot and one `checkLimits-N` call
//! decides them all at once (the `rl:` keeps the tag non-empty whatever the key holds):
//!
//! | key | type | what |
//! |---|---|---|
//! | `celeriac:{rl:<key>}:<state id>` | STRING | one quota's state (see `celeriac_core::limit::maths`) as 4 little-endian doubles: a, b, c, then when the key expires by Redis's clock (ms); the TTL covers how long the state matters plus slack, and is set only when it must grow (`checkLimits-N`). Decimal text `<tat>` / `a:b:c` from older builds is still read |
//! | `celeriac:{rl:<key>}:permits` | ZSET | concurrency permits: holder → lease end (ms); TTL the last lease's end (`acquirePermit-1`, `releasePermit-1`) |
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

mod breaker;
mod checks;
mod clock;
mod codec;
mod config;
mod conn;
mod coord;
mod flow;
mod keys;
mod kv;
mod limit;
mod replicas;
mod scripts;

pub use config::{RedisConfig, Topology};

use celeriac_core::backend::{
    Broker, CancelOutcome, CancelReport, ClaimRequest, Claimed, Completion, LeaseRef, Outcome,
    QueueStats, ReapReport, ResultStore,
};
use celeriac_core::clock::{duration_ms, FleetClock, StoreClock, UnixMs, RESYNC_EVERY};
use celeriac_core::error::{Error, ErrorKind, Result};
use celeriac_core::job::{Job, JobId, JobInfo, JobState};
use codec::Fields;
use conn::{map_err, Conn, Connector};
use futures_util::StreamExt;
use keys::QueueKeys;
use redis::{AsyncCommands, Value};
use replicas::ReplicaWait;
use scripts::Scripts;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{broadcast, watch};
use tokio_util::sync::CancellationToken;
use tracing::debug;

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
    limit_batches: Arc<limit::Batcher>,
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
    pub async fn connect(url: &str) -> Result<Self> {
        Self::open(RedisConfig::from_url(url)?).await
    }

    /// Connects with these settings.
    ///
    /// # Errors
    /// Redis unreachable (after the connect timeout), authentication refused, an evicting
    /// `maxmemory-policy` without `allow_eviction`, or no persistence at all without
    /// `allow_volatile`: each with a message saying which.
    pub async fn open(config: RedisConfig) -> Result<Self> {
        let config = Arc::new(config);
        let connector = Connector::new(config.clone())?;
        let conn = connector
            .connect(config.response_timeout)
            .await
            .map_err(|e| {
                Error::backend(
                    e.kind(),
                    format!("cannot connect to Redis ({:?}): {e}", config.topology),
                )
            })?;
        // Redis accepts a connection before authentication matters; the first command tells.
        let pong: redis::RedisResult<String> =
            redis::cmd("PING").query_async(&mut conn.clone()).await;
        if let Err(e) = pong {
            return Err(auth_or_backend(e, &config));
        }
        if !config.allow_eviction {
            checks::check_policy(&connector).await?;
        }
        if !config.allow_volatile {
            checks::check_persistence(&connector).await?;
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
        let limit_batches = limit::Batcher::new(conn.clone(), scripts.check_limits.clone());
        let stop = CancellationToken::new();
        let fleet = Arc::new(FleetClock::unsynced());
        let time = clock::RedisTime::new(conn.clone(), scripts.fleet_time.clone(), &config.prefix);
        fleet.sync(&time, 5).await.map_err(|e| {
            Error::backend(
                e.kind(),
                format!("cannot read the Redis server's clock: {e}"),
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

    /// Reaps one queue: one script call per batch, again while a batch came back full (at
    /// most [`REAP_ROUNDS`] calls, so records that keep falling due at `now` cannot hold the
    /// reaper on one queue; the next reap goes on).
    async fn reap_queue(&self, queue: &str, now: UnixMs, report: &mut ReapReport) -> Result<()> {
        let keys = self.keys(queue);
        let dead_ttl = duration_ms(self.inner.config.dead_ttl);
        let dead_max = i64::try_from(self.inner.config.dead_max).unwrap_or(i64::MAX);
        for _ in 0..REAP_ROUNDS {
            type Round = (u64, u64, u64, Vec<codec::EndedEntry>, u64, u8);
            let (requeued, dead, swept, ended, dropped, more): Round = self
                .invoke(
                    &self.inner.scripts.reap,
                    &keys,
                    [
                        num(now),
                        num(dead_ttl),
                        keys.channel.clone().into_bytes(),
                        num(dead_max),
                    ],
                )
                .await?;
            report.requeued += requeued;
            report.dead += dead;
            report.swept += swept;
            report.dead_dropped += dropped;
            celeriac_core::retention::count_dead_letters_dropped(queue, dropped);
            for entry in ended {
                report.ended.push(codec::ended_from(entry)?);
            }
            if more == 0 {
                break;
            }
        }
        Ok(())
    }

    fn ensure_listener(&self) {
        if self.inner.listening.swap(true, Ordering::SeqCst) {
            return;
        }
        let connector = self.inner.connector.clone();
        let done = self.inner.done.clone();
        let stop = self.inner.stop.clone();
        let pattern = keys::done_pattern(&self.inner.config.prefix);
        tokio::spawn(async move {
            let mut backoff = Duration::from_millis(100);
            while !stop.is_cancelled() {
                let sub = async {
                    let mut ps = connector.pubsub().await?;
                    ps.psubscribe(&pattern).await.map_err(map_err)?;
                    Ok::<_, Error>(ps)
                };
                match sub.await {
                    Ok(ps) => {
                        backoff = Duration::from_millis(100);
                        let mut stream = ps.into_on_message();
                        loop {
                            tokio::select! {
                                msg = stream.next() => match msg {
                                    Some(m) => { let _ = done.send(String::from_utf8_lossy(m.get_payload_bytes()).into_owned()); }
                                    None => break,
                                },
                                _ = stop.cancelled() => return,
                            }
                        }
                        debug!("completion subscription ended; resubscribing");
                    }
                    Err(e) => debug!(error = %e, "cannot subscribe to completions; retrying"),
                }
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = stop.cancelled() => return,
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        });
    }

    fn ensure_watchers(&self, queues: &[String]) {
        let mut watched = match self.inner.watched.lock() {
            Ok(w) => w,
            Err(_) => return,
        };
        for q in queues {
            if !watched.insert(q.clone()) {
                continue;
            }
            let marker = self.keys(q).marker().to_string();
            let connector = self.inner.connector.clone();
            let work = self.inner.work.clone();
            let mut waiting = self.inner.waiting.subscribe();
            let stop = self.inner.stop.clone();
            let timeout = self.inner.config.response_timeout + Duration::from_secs_f64(BLOCK_SECS);
            tokio::spawn(async move {
                let mut conn: Option<Conn> = None;
                let mut backoff = Duration::from_millis(100);
                loop {
                    // Block only while a worker here waits: a busy process must not take the
                    // wake-ups that idle workers elsewhere need.
                    tokio::select! {
                        r = waiting.wait_for(|n| *n > 0) => if r.is_err() { return },
                        _ = stop.cancelled() => return,
                    }
                    if conn.is_none() {
                        match connector.connect(timeout).await {
                            Ok(c) => conn = Some(c),
                            Err(e) => {
                                debug!(error = %e, "marker connection failed");
                                tokio::select! {
                                    _ = tokio::time::sleep(backoff) => {}
                                    _ = stop.cancelled() => return,
                                }
                                backoff = (backoff * 2).min(Duration::from_secs(5));
                                continue;
                            }
                        }
                    }
                    let Some(c) = conn.as_mut() else { continue };
                    let popped: redis::RedisResult<Option<(String, String, f64)>> = tokio::select! {
                        r = c.bzpopmin(&marker, BLOCK_SECS) => r,
                        _ = stop.cancelled() => return,
                    };
                    match popped {
                        Ok(Some(_)) => {
                            backoff = Duration::from_millis(100);
                            work.send_modify(|v| *v = v.wrapping_add(1));
                        }
                        Ok(None) => backoff = Duration::from_millis(100),
                        Err(e) => {
                            debug!(error = %e, "waiting on the marker failed");
                            conn = None;
                            tokio::select! {
                                _ = tokio::time::sleep(backoff) => {}
                                _ = stop.cancelled() => return,
                            }
                            backoff = (backoff * 2).min(Duration::from_secs(5));
                        }
                    }
                }
            });
        }
    }

    /// Finds the queue holding job `id` by looking in every known queue (there are few).
    async fn locate(&self, id: JobId) -> Result<Option<(String, Fields, Option<i64>)>> {
        let sid = id.to_string();
        for queue in self.all_queues().await? {
            let k = self.keys(&queue);
            let (fields, lease): (HashMap<String, Vec<u8>>, Option<f64>) = redis::pipe()
                .hgetall(k.job(&sid))
                .zscore(k.active(), &sid)
                .query_async(&mut self.conn())
                .await
                .map_err(map_err)?;
            if !fields.is_empty() {
                return Ok(Some((queue, Fields(fields), lease.map(|l| l as i64))));
            }
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

/// Names authentication problems as such; everything else is a backend error.
pub(crate) fn auth_or_backend(e: redis::RedisError, config: &RedisConfig) -> Error {
    match e.code() {
        Some("NOAUTH" | "WRONGPASS" | "NOPERM") => Error::config(
            "url",
            format!(
                "Redis refused authentication ({e}); put the user and password in the URL, as in \
                 redis://user:password@host:6379 (user: {}, password given: {})",
                config.username.as_deref().unwrap_or("default"),
                config.password.is_some()
            ),
        ),
        _ => {
            let message = format!("Redis did not answer PING: {e}");
            Error::backend(map_err(e).kind(), message)
        }
    }
}

fn group_by_queue<T>(
    items: Vec<T>,
    queue_of: impl Fn(&T) -> &str,
) -> BTreeMap<String, Vec<(usize, T)>> {
    let mut groups: BTreeMap<String, Vec<(usize, T)>> = BTreeMap::new();
    for (i, item) in items.into_iter().enumerate() {
        groups
            .entry(queue_of(&item).to_string())
            .or_default()
            .push((i, item));
    }
    groups
}

/// The `id, token` argument pairs of leases.
fn lease_args(group: &[(usize, LeaseRef)]) -> Vec<Vec<u8>> {
    group
        .iter()
        .flat_map(|(_, l)| {
            [
                l.id.to_string().into_bytes(),
                l.token.to_string().into_bytes(),
            ]
        })
        .collect()
}

fn num(n: i64) -> Vec<u8> {
    n.to_string().into_bytes()
}

impl StoreClock for RedisBackend {
    fn fleet_clock(&self) -> Arc<FleetClock> {
        self.inner.clock.clone()
    }
}

impl Broker for RedisBackend {
    async fn enqueue(&self, jobs: Vec<Job>, now: UnixMs) -> Result<Vec<JobId>> {
        if jobs.is_empty() {
            return Ok(Vec::new());
        }
        let total = jobs.len();
        for job in &jobs {
            if job.queue.contains(['{', '}']) {
                return Err(Error::config(
                    "queue",
                    format!("`{}`: Redis queue names cannot contain braces", job.queue),
                ));
            }
        }
        let groups = group_by_queue(jobs, |j| &j.queue);
        self.remember_queues(groups.keys().map(String::as_str))
            .await?;
        let mut ids: Vec<Option<JobId>> = vec![None; total];
        for (queue, jobs) in groups {
            let keys = self.keys(&queue);
            for chunk in jobs.chunks(ENQUEUE_CHUNK) {
                let mut args = vec![num(now)];
                for (_, job) in chunk {
                    args.extend(codec::enqueue_args(job)?);
                }
                // Only the jobs another job stands for come back: `position, holder` pairs.
                let script = &self.inner.scripts.enqueue;
                let others: Vec<(usize, String)> = match &self.inner.replica_wait {
                    Some(wait) => wait.invoke(script, &keys, args).await?,
                    None => self.invoke(script, &keys, args).await?,
                };
                for (at, job) in chunk {
                    ids[*at] = Some(job.id);
                }
                for (pos, holder) in others {
                    let (at, _) = chunk.get(pos.wrapping_sub(1)).ok_or_else(|| {
                        Error::backend(
                            ErrorKind::GiveUp,
                            format!("the enqueue script named job {pos} of {}", chunk.len()),
                        )
                    })?;
                    ids[*at] = Some(holder.parse()?);
                }
            }
        }
        self.bump_work();
        ids.into_iter().map(|id| id.ok_or(Error::Closed)).collect()
    }

    async fn claim(&self, req: ClaimRequest) -> Result<Vec<Claimed>> {
        let lease_until = req.now.saturating_add(duration_ms(req.lease));
        let dead_ttl = duration_ms(self.inner.config.dead_ttl);
        let limits: String = req
            .limits
            .iter()
            .map(|(task, l)| {
                let cap = l.concurrency.map(|c| c.to_string()).unwrap_or_default();
                let interval = l
                    .rate
                    .map(|r| r.interval_ms().to_string())
                    .unwrap_or_default();
                format!("{task}\t{cap}\t{interval}\n")
            })
            .collect();
        let mut out = Vec::with_capacity(req.limit);
        for queue in &req.queues {
            if out.len() >= req.limit {
                break;
            }
            let keys = self.keys(queue);
            let reply: Vec<Value> = self
                .invoke(
                    &self.inner.scripts.claim,
                    &keys,
                    [
                        num(req.now),
                        num((req.limit - out.len()) as i64),
                        num(lease_until),
                        req.worker.clone().into_bytes(),
                        keys.channel.clone().into_bytes(),
                        limits.clone().into_bytes(),
                        num(dead_ttl),
                    ],
                )
                .await?;
            let mut poisoned = Vec::new();
            for v in &reply {
                match codec::claimed_from(v) {
                    Ok((job, token)) => out.push(Claimed {
                        job,
                        token,
                        lease_until,
                    }),
                    Err(Some(bad)) => poisoned.push(bad),
                    Err(None) => {
                        return Err(Error::backend(
                            ErrorKind::GiveUp,
                            format!("the claim script answered in an unexpected shape: {v:?}"),
                        ))
                    }
                }
            }
            if !poisoned.is_empty() {
                self.dead_letter_undecodable(&keys, poisoned, req.now)
                    .await?;
            }
        }
        Ok(out)
    }

    async fn heartbeat(
        &self,
        leases: Vec<LeaseRef>,
        until: UnixMs,
        _now: UnixMs,
    ) -> Result<Vec<LeaseRef>> {
        self.leases_answered(&self.inner.scripts.extend, leases, vec![num(until)])
            .await
    }

    async fn complete(&self, done: Vec<Completion>, now: UnixMs) -> Result<Vec<bool>> {
        let total = done.len();
        let mut applied = vec![false; total];
        let dead_ttl = duration_ms(self.inner.config.dead_ttl);
        for (queue, group) in group_by_queue(done, |c| &c.lease.queue) {
            let keys = self.keys(&queue);
            let mut args = vec![num(now), num(dead_ttl), keys.channel.clone().into_bytes()];
            for (_, c) in &group {
                args.push(c.lease.id.to_string().into_bytes());
                args.push(c.lease.token.to_string().into_bytes());
                let (kind, v1, v2, v3): (&[u8], Vec<u8>, Vec<u8>, Vec<u8>) = match &c.outcome {
                    Outcome::Succeeded { result } => (
                        b"s",
                        result.clone().unwrap_or_default(),
                        if result.is_some() {
                            b"1".to_vec()
                        } else {
                            b"0".to_vec()
                        },
                        Vec::new(),
                    ),
                    Outcome::Retry { at, error } => (
                        b"r",
                        num(*at),
                        error.kind.clone().into_bytes(),
                        error.message.clone().into_bytes(),
                    ),
                    Outcome::Failed { error } => (
                        b"f",
                        Vec::new(),
                        error.kind.clone().into_bytes(),
                        error.message.clone().into_bytes(),
                    ),
                    Outcome::Dead { error } => (
                        b"d",
                        Vec::new(),
                        error.kind.clone().into_bytes(),
                        error.message.clone().into_bytes(),
                    ),
                    Outcome::Cancelled => (b"c", Vec::new(), Vec::new(), Vec::new()),
                    Outcome::Deferred { at } => (b"e", num(*at), Vec::new(), Vec::new()),
                };
                args.push(kind.to_vec());
                args.extend([v1, v2, v3]);
            }
            let flags: Vec<i64> = self
                .invoke(&self.inner.scripts.complete, &keys, args)
                .await?;
            for ((i, _), flag) in group.iter().zip(flags) {
                applied[*i] = flag == 1;
            }
        }
        Ok(applied)
    }

    async fn release(&self, leases: Vec<LeaseRef>, _now: UnixMs) -> Result<u64> {
        let mut n = 0;
        for (queue, group) in group_by_queue(leases, |l| &l.queue) {
            let keys = self.keys(&queue);
            let args = lease_args(&group);
            let k: i64 = self
                .invoke(&self.inner.scripts.release, &keys, args)
                .await?;
            n += k as u64;
        }
        if n > 0 {
            self.bump_work();
        }
        Ok(n)
    }

    async fn reap(&self, now: UnixMs) -> Result<ReapReport> {
        let mut report = ReapReport::default();
        for queue in self.all_queues().await? {
            self.reap_queue(&queue, now, &mut report).await?;
        }
        if report.requeued > 0 {
            self.bump_work();
        }
        Ok(report)
    }

    async fn next_due(&self, queues: Vec<String>) -> Result<Option<UnixMs>> {
        let mut earliest: Option<UnixMs> = None;
        for queue in queues {
            let keys = self.keys(&queue);
            type Heads = Vec<(String, f64)>;
            let (a, b): (Heads, Heads) = redis::pipe()
                .zrange_withscores(keys.scheduled(), 0, 0)
                .zrange_withscores(keys.retry(), 0, 0)
                .query_async(&mut self.conn())
                .await
                .map_err(map_err)?;
            for (_, score) in a.into_iter().chain(b) {
                let t = score as i64;
                earliest = Some(earliest.map_or(t, |e| e.min(t)));
            }
        }
        Ok(earliest)
    }

    async fn wait_for_work(&self, queues: &[String], since: u64, max: Duration) {
        let mut rx = self.inner.work.subscribe();
        if *rx.borrow_and_update() != since {
            return;
        }
        self.ensure_watchers(queues);
        self.inner.waiting.send_modify(|n| *n += 1);
        let _ = tokio::time::timeout(max, rx.changed()).await;
        self.inner.waiting.send_modify(|n| *n = n.saturating_sub(1));
    }

    fn work_epoch(&self) -> u64 {
        *self.inner.work.borrow()
    }

    fn wakes_across_processes(&self) -> bool {
        true
    }

    async fn pause(&self, queue: &str) -> Result<()> {
        self.remember_queues([queue]).await?;
        let _: () = self
            .conn()
            .hset(self.keys(queue).meta(), "paused", "1")
            .await
            .map_err(map_err)?;
        Ok(())
    }

    async fn resume(&self, queue: &str) -> Result<()> {
        self.remember_queues([queue]).await?;
        let keys = self.keys(queue);
        let _: () = redis::pipe()
            .hset(keys.meta(), "paused", "0")
            .zadd(keys.marker(), "w", 0)
            .query_async(&mut self.conn())
            .await
            .map_err(map_err)?;
        self.bump_work();
        Ok(())
    }

    async fn stats(&self) -> Result<Vec<QueueStats>> {
        let mut out = Vec::new();
        for queue in self.all_queues().await? {
            let k = self.keys(&queue);
            let mut pipe = redis::pipe();
            for key in [
                k.ready(),
                k.scheduled(),
                k.retry(),
                k.active(),
                k.dead(),
                &k.keys[7],
                &k.keys[8],
                &k.keys[9],
                &k.keys[10],
            ] {
                pipe.zcard(key);
            }
            pipe.hget(k.meta(), "paused");
            let (counts, paused): (Vec<u64>, Option<String>) = {
                let mut all: Vec<Value> =
                    pipe.query_async(&mut self.conn()).await.map_err(map_err)?;
                let paused = all.pop().map(|v| codec::text_of(&v));
                (
                    all.iter().map(|v| codec::int_of(v).max(0) as u64).collect(),
                    paused,
                )
            };
            let states = [
                JobState::Pending,
                JobState::Scheduled,
                JobState::Retrying,
                JobState::Active,
                JobState::Dead,
                JobState::Succeeded,
                JobState::Failed,
                JobState::Cancelled,
                JobState::Expired,
            ];
            let counts = states
                .iter()
                .zip(counts)
                .filter(|(_, n)| *n > 0)
                .map(|(s, n)| (s.as_str().to_string(), n))
                .collect();
            out.push(QueueStats {
                queue,
                paused: paused.as_deref() == Some("1"),
                counts,
            });
        }
        Ok(out)
    }

    async fn purge(&self, queue: &str) -> Result<u64> {
        let keys = self.keys(queue);
        self.loop_script(&self.inner.scripts.purge, &keys, Vec::new())
            .await
    }

    async fn dead_letters(
        &self,
        queue: Option<String>,
        limit: usize,
        offset: usize,
    ) -> Result<Vec<JobInfo>> {
        let queues = match queue {
            Some(q) => vec![q],
            None => self.all_queues().await?,
        };
        let mut entries: Vec<(f64, String, String)> = Vec::new();
        let want = (offset + limit) as isize;
        for q in queues {
            let k = self.keys(&q);
            let ids: Vec<(String, f64)> = self
                .conn()
                .zrevrange_withscores(k.dead(), 0, want - 1)
                .await
                .map_err(map_err)?;
            entries.extend(ids.into_iter().map(|(id, score)| (score, q.clone(), id)));
        }
        entries.sort_by(|a, b| b.0.total_cmp(&a.0).then_with(|| b.2.cmp(&a.2)));
        let mut out = Vec::new();
        for (_, q, id) in entries.into_iter().skip(offset).take(limit) {
            let k = self.keys(&q);
            let fields: HashMap<String, Vec<u8>> =
                self.conn().hgetall(k.job(&id)).await.map_err(map_err)?;
            let jid: JobId = id.parse()?;
            if let Some(info) = codec::info_from_hash(jid, &q, Fields(fields), None)? {
                out.push(info);
            }
        }
        Ok(out)
    }

    async fn retry_dead(&self, ids: Option<Vec<JobId>>, now: UnixMs) -> Result<u64> {
        let mut retried = 0u64;
        for queue in self.all_queues().await? {
            let keys = self.keys(&queue);
            match &ids {
                None => loop {
                    let r: Vec<i64> = self
                        .invoke(
                            &self.inner.scripts.retry_dead,
                            &keys,
                            [num(now), b"*".to_vec()],
                        )
                        .await?;
                    retried += r.first().copied().unwrap_or(0) as u64;
                    if r.get(1).copied().unwrap_or(0) == 0 {
                        break;
                    }
                },
                Some(ids) => {
                    for chunk in ids.chunks(500) {
                        let mut args = vec![num(now)];
                        args.extend(chunk.iter().map(|i| i.to_string().into_bytes()));
                        let r: Vec<i64> = self
                            .invoke(&self.inner.scripts.retry_dead, &keys, args)
                            .await?;
                        retried += r.first().copied().unwrap_or(0) as u64;
                    }
                }
            }
        }
        if retried > 0 {
            self.bump_work();
        }
        Ok(retried)
    }

    async fn purge_dead(&self, queue: Option<String>) -> Result<u64> {
        let queues = match queue {
            Some(q) => vec![q],
            None => self.all_queues().await?,
        };
        let mut n = 0;
        for q in queues {
            n += self
                .loop_script(&self.inner.scripts.purge_dead, &self.keys(&q), Vec::new())
                .await?;
        }
        Ok(n)
    }

    async fn cancel(&self, id: JobId, now: UnixMs) -> Result<CancelReport> {
        self.cancel_job(id, now).await
    }

    async fn cancel_requested(&self, leases: Vec<LeaseRef>) -> Result<Vec<LeaseRef>> {
        self.leases_answered(&self.inner.scripts.cancel_requested, leases, Vec::new())
            .await
    }
}

impl RedisBackend {
    async fn cancel_job(&self, id: JobId, now: UnixMs) -> Result<CancelReport> {
        let Some((queue, _, _)) = self.locate(id).await? else {
            return Ok(CancelReport {
                outcome: CancelOutcome::NotFound,
                ended: None,
            });
        };
        let keys = self.keys(&queue);
        let (answer, spec): (String, Option<Vec<u8>>) = self
            .invoke(
                &self.inner.scripts.cancel,
                &keys,
                [
                    id.to_string().into_bytes(),
                    num(now),
                    keys.channel.clone().into_bytes(),
                ],
            )
            .await?;
        let outcome = match answer.as_str() {
            "cancelled" => CancelOutcome::Cancelled,
            "requested" => CancelOutcome::Requested,
            "missing" => CancelOutcome::NotFound,
            code => {
                CancelOutcome::AlreadyFinished(JobState::from_code(code.parse().unwrap_or(-1))?)
            }
        };
        let ended = match outcome {
            CancelOutcome::Cancelled => Some(codec::ended_job(
                id,
                JobState::Cancelled,
                spec.as_deref(),
                None,
            )),
            _ => None,
        };
        Ok(CancelReport { outcome, ended })
    }

    /// Runs a per-queue script over leases (`id, token` pairs after `head`) that answers with
    /// ids, and returns the leases it named.
    async fn leases_answered(
        &self,
        script: &redis::Script,
        leases: Vec<LeaseRef>,
        head: Vec<Vec<u8>>,
    ) -> Result<Vec<LeaseRef>> {
        let mut out = Vec::new();
        for (queue, group) in group_by_queue(leases, |l| &l.queue) {
            let keys = self.keys(&queue);
            let mut args = head.clone();
            args.extend(lease_args(&group));
            let named: Vec<String> = self.invoke(script, &keys, args).await?;
            let named: HashSet<String> = named.into_iter().collect();
            out.extend(
                group
                    .into_iter()
                    .map(|(_, l)| l)
                    .filter(|l| named.contains(&l.id.to_string())),
            );
        }
        Ok(out)
    }
}

impl RedisBackend {
    /// Reads `fetch` until `done` holds, waking on the id's completion message (jobs and
    /// workflows publish their id when they finish) and re-reading at least every second in
    /// case a message was lost while the subscription reconnected.
    pub(crate) async fn wait_until_done<T, F, Fut>(
        &self,
        id: JobId,
        timeout: Duration,
        fetch: F,
        done: impl Fn(&T) -> bool,
    ) -> Result<T>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<Option<T>>>,
    {
        self.ensure_listener();
        // Subscribed before the first read, so a finish between the read and the nap is seen.
        let mut rx = self.inner.done.subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        let sid = id.to_string();
        loop {
            match fetch().await? {
                Some(value) if done(&value) => return Ok(value),
                Some(_) => {}
                None => return Err(Error::NotFound(sid)),
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Err(Error::Timeout(sid));
            }
            let nap_until = (now + Duration::from_secs(1)).min(deadline);
            loop {
                match tokio::time::timeout_at(nap_until, rx.recv()).await {
                    Ok(Ok(finished)) if finished == sid => break,
                    Ok(Ok(_)) => continue,
                    Ok(Err(broadcast::error::RecvError::Lagged(_))) => break,
                    Ok(Err(broadcast::error::RecvError::Closed)) => {
                        tokio::time::sleep_until(nap_until).await;
                        break;
                    }
                    Err(_) => break,
                }
            }
        }
    }
}

impl ResultStore for RedisBackend {
    async fn get(&self, id: JobId) -> Result<Option<JobInfo>> {
        match self.locate(id).await? {
            Some((queue, fields, lease)) => codec::info_from_hash(id, &queue, fields, lease),
            None => Ok(None),
        }
    }

    async fn set_progress(
        &self,
        lease: LeaseRef,
        fraction: f64,
        message: Option<String>,
    ) -> Result<bool> {
        let keys = self.keys(&lease.queue);
        let r: i64 = self
            .invoke(
                &self.inner.scripts.progress,
                &keys,
                [
                    lease.id.to_string().into_bytes(),
                    lease.token.to_string().into_bytes(),
                    fraction.to_string().into_bytes(),
                    message.unwrap_or_default().into_bytes(),
                ],
            )
            .await?;
        Ok(r == 1)
    }

    async fn wait(&self, id: JobId, timeout: Duration) -> Result<JobInfo> {
        self.wait_until_done(id, timeout, || self.get(id), |i| i.state.is_terminal())
            .await
    }
}
