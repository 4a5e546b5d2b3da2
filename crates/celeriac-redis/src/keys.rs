//! The key layout. Every key of a queue shares the hash tag `{<queue>}`, so one queue lives
//! on one Cluster slot and its scripts are atomic there; every key of one join or workflow
//! shares the tag `{wf:<id>}`.

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
