//! The key layout. Every key of a queue shares the hash tag `{<queue>}`, so one queue lives
//! on one Cluster slot and its scripts are atomic there; every key of one join or workflow
//! shares the tag `{wf:<id>}`.
//!
//! With the default prefix `celeriac` and a queue `emails`, every key of the queue carries the
//! hash tag `{emails}` (one Cluster slot):
//!
//! | key | type | what |
//! |---|---|---|
//! | `celeriac:{emails}:ready` | ZSET | pending jobs; score `(9 - priority)·2^42 + run_at`, member `<seq>:<id>`: priority, then due time, then FIFO |
//! | `celeriac:{emails}:scheduled` | ZSET | delayed jobs by `run_at` |
//! | `celeriac:{emails}:retry` | ZSET | jobs waiting for their next attempt, by `run_at` |
//! | `celeriac:{emails}:active` | ZSET | leased jobs by lease expiry, and the keeper (score `+inf`) |
//! | `celeriac:{emails}:leases` | HASH | job id → fencing token of each leased job, and the keeper (value `keeper`) |
//! | `celeriac:{emails}:meta` | HASH | `paused`, `seq` (FIFO counter), `fence` (token counter) |
//! | `celeriac:{emails}:marker` | ZSET | wake-up marker idle workers block on |
//! | `celeriac:{emails}:dead` | ZSET | dead letters by time of death (records expire after the dead-letter TTL; a reap drops the oldest beyond the cap, `?dead_max=`) |
//! | `celeriac:{emails}:succeeded`, `:failed`, `:cancelled`, `:expired` | ZSET | kept records by expiry, for counting |
//! | `celeriac:{emails}:job:<id>` | HASH | one job: `d` spec (JSON: `t` task, `c` created, and when set `e` encoding, `s`/`h` time limits, `hd` headers, `pa`/`ro` parent and root), `p` payload, `s` state, `pr` priority, `q` sequence, `r` run_at, `x` expires_at, `a` attempts, `m` max attempts, `tt` result ttl, `w` worker, `st`/`f` started/finished, `res` result, `ek`/`em`/`ea` last error, `pg`/`pgm` progress; finished ones expire |
//! | `celeriac:{emails}:unique:<key>` | STRING | the job holding a unique key: `<mode>\|<id>` (a window adds `\|<until>`) |
//! | `celeriac:{emails}:hist:m:<start>`, `:hist:h:<start>` | HASH | history of a minute or an hour starting at `<start>` (ms): `<code>\|<task>` → counts `e s o r f d c` (enqueued, started, succeeded, retried, failed, dead, cancelled), and run and wait time sketches (`R`/`W` then a bucket index, or `z` zeros, `s` sum, `l` min, `h` max); expires 48 hours (minutes) or 90 days (hours) after the bucket ends |
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
//! The keeper is one 256-byte entry (`~not-a-job~…`) that keeps `active` and `leases` in Redis's
//! hash-table encodings at any size: in the compact listpack encoding Redis uses below 128
//! entries, every lease added, checked or removed scans them whole (see `KEEPER` in
//! `lua/includes/common.lua`). It is not a job: counts and listings pass over it.
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
//! The process registry (live workers and beats) shares the one hash tag `{<prefix>:procs}`,
//! so its scripts (`refreshProcess-3`, `controlProcess-3`) run on one Cluster slot:
//!
//! | key | type | what |
//! |---|---|---|
//! | `celeriac:{celeriac:procs}:seen` | ZSET | process id → when its entry expires (ms, fleet clock) |
//! | `celeriac:{celeriac:procs}:info` | HASH | process id → its entry (JSON, `celeriac_core::ProcessInfo`) |
//! | `celeriac:{celeriac:procs}:control` | HASH | process id → commands waiting for its next refresh (`quiet`, `stop`) |
//!
//! The events (`celeriac_core::EventLog`) are one stream, `celeriac:events`, of entries with one
//! field `e` (the event as JSON), trimmed to about ten thousand on append (`XADD MAXLEN ~`).
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

/// How the keeper entry of `active` and `leases` begins (no job id does): see the module doc.
pub(crate) const KEEPER_MARK: &str = "~not-a-job~";

/// The keys every script of a queue receives (its twelve data keys, then the migration
/// guard), and its job-key prefix and channel.
#[derive(Debug, Clone)]
pub(crate) struct QueueKeys {
    pub(crate) keys: [String; 13],
    pub(crate) job_prefix: String,
    pub(crate) channel: String,
}

impl QueueKeys {
    pub(crate) fn new(prefix: &str, queue: &str) -> Self {
        let base = format!("{prefix}:{{{queue}}}");
        let k = |s: &str| format!("{base}:{s}");
        QueueKeys {
            keys: [
                k("ready"),
                k("scheduled"),
                k("retry"),
                k("active"),
                k("meta"),
                k("marker"),
                k("dead"),
                k("succeeded"),
                k("failed"),
                k("cancelled"),
                k("expired"),
                k("leases"),
                // Never created: while the slot migrates, a command declaring a key the node
                // lacks is refused (TRYAGAIN) before it runs, so no queue script runs on either
                // node until every key of the slot is on one (`lua/includes/common.lua`).
                k("guard"),
            ],
            job_prefix: k("job:"),
            channel: k("done"),
        }
    }

    pub(crate) fn ready(&self) -> &str {
        &self.keys[0]
    }
    pub(crate) fn scheduled(&self) -> &str {
        &self.keys[1]
    }
    pub(crate) fn retry(&self) -> &str {
        &self.keys[2]
    }
    pub(crate) fn active(&self) -> &str {
        &self.keys[3]
    }
    pub(crate) fn meta(&self) -> &str {
        &self.keys[4]
    }
    pub(crate) fn marker(&self) -> &str {
        &self.keys[5]
    }
    pub(crate) fn dead(&self) -> &str {
        &self.keys[6]
    }
    pub(crate) fn job(&self, id: &str) -> String {
        format!("{}{id}", self.job_prefix)
    }
}

/// The set of queue names (a global key, outside any queue's slot).
pub(crate) fn queues_key(prefix: &str) -> String {
    format!("{prefix}:queues")
}

/// A history bucket of `queue`: resolution code (`m`, `h`) and start (ms).
pub(crate) fn history_key(prefix: &str, queue: &str, resolution: &str, start: i64) -> String {
    format!("{prefix}:{{{queue}}}:hist:{resolution}:{start}")
}

/// The pattern matching every queue's completion channel, and every workflow's.
pub(crate) fn done_pattern(prefix: &str) -> String {
    format!("{prefix}:{{*}}:done")
}

/// The hash tag of one join or workflow: every key of it lives in that slot.
fn flow_base(prefix: &str, id: &str) -> String {
    format!("{prefix}:{{wf:{id}}}")
}

/// A join's hash (see `lua/includes/flow.lua` for its fields).
pub(crate) fn join_key(prefix: &str, join: &str) -> String {
    format!("{}:join", flow_base(prefix, join))
}

/// A workflow's record (a hash).
pub(crate) fn workflow_key(prefix: &str, id: &str) -> String {
    format!("{}:rec", flow_base(prefix, id))
}

/// The channel a finished workflow's id is published on; [`done_pattern`] matches it.
pub(crate) fn workflow_channel(prefix: &str, id: &str) -> String {
    format!("{}:done", flow_base(prefix, id))
}

/// The keys of the coordinator (leader leases, schedule state): all under the one hash tag
/// `{celeriac:beat}`, so its scripts run on one Cluster slot.
pub(crate) struct CoordKeys {
    base: String,
}

impl CoordKeys {
    pub(crate) fn new(prefix: &str) -> Self {
        CoordKeys {
            base: format!("{prefix}:{{celeriac:beat}}"),
        }
    }
    /// The lease `name`: HASH holder, token, until.
    pub(crate) fn leader(&self, name: &str) -> String {
        format!("{}:leader:{name}", self.base)
    }
    /// HASH schedule name -> last tick handled.
    pub(crate) fn ticks(&self) -> String {
        format!("{}:ticks", self.base)
    }
    /// HASH schedule name -> 1 while paused.
    pub(crate) fn paused(&self) -> String {
        format!("{}:paused", self.base)
    }
}

/// The keys of the process registry: `[seen, info, control]`, on one slot.
pub(crate) fn process_keys(prefix: &str) -> [String; 3] {
    let base = format!("{prefix}:{{{prefix}:procs}}");
    [
        format!("{base}:seen"),
        format!("{base}:info"),
        format!("{base}:control"),
    ]
}

/// A value or counter of the key-value store: the caller's key kept intact after the prefix,
/// so a `{hash tag}` in it chooses the Cluster slot.
pub(crate) fn kv_key(prefix: &str, key: &str) -> String {
    format!("{prefix}:kv:{key}")
}

/// A lease lock of the key-value store (a namespace apart from values).
pub(crate) fn kv_lock_key(prefix: &str, key: &str) -> String {
    format!("{prefix}:kv-lock:{key}")
}

/// The pub/sub channel of a key-value broadcast channel.
pub(crate) fn kv_channel(prefix: &str, channel: &str) -> String {
    format!("{prefix}:kv-channel:{channel}")
}

/// The common part of every key of one rate-limit key: its hash tag `{rl:<key>}` (non-empty
/// whatever the key holds, and the same for all its quotas, so they share a slot).
fn limit_base(prefix: &str, key: &str) -> String {
    format!("{prefix}:{{rl:{key}}}")
}

/// One quota's state for a rate-limit key.
pub(crate) fn limit_key(prefix: &str, key: &str, state_id: &str) -> String {
    format!("{}:{state_id}", limit_base(prefix, key))
}

/// The concurrency permits of a rate-limit key.
pub(crate) fn permits_key(prefix: &str, key: &str) -> String {
    format!("{}:permits", limit_base(prefix, key))
}

/// The keys of one shared circuit breaker, under its own hash tag
/// `{celeriac:breaker:<name>}` (see `lua/includes/breaker.lua`).
pub(crate) fn breaker_keys(prefix: &str, name: &str) -> [String; 3] {
    let base = format!("{prefix}:{{celeriac:breaker:{name}}}");
    [
        format!("{base}:state"),
        format!("{base}:signals"),
        format!("{base}:probes"),
    ]
}
