//! The Lua scripts, one file per atomic command (`lua/`), each prefixed with
//! `lua/includes/common.lua` (queue scripts) or `lua/includes/flow.lua` (workflow scripts).
//! Called by SHA; redis-rs reloads one on NOSCRIPT.

use redis::Script;

macro_rules! script {
    ($file:literal) => {
        Script::new(concat!(
            include_str!("../lua/includes/common.lua"),
            "\n",
            include_str!(concat!("../lua/", $file))
        ))
    };
}

/// A workflow script: prefixed with `lua/includes/flow.lua` instead of the queue helpers.
macro_rules! flow_script {
    ($file:literal) => {
        Script::new(concat!(
            include_str!("../lua/includes/flow.lua"),
            "\n",
            include_str!(concat!("../lua/", $file))
        ))
    };
}

/// A self-contained script, without the queue prelude (the coordinator's and the key-value
/// store's keys are not a queue's).
macro_rules! plain_script {
    ($file:literal) => {
        Script::new(include_str!(concat!("../lua/", $file)))
    };
}

/// A shared circuit-breaker script: prefixed with `lua/includes/breaker.lua`.
macro_rules! breaker_script {
    ($file:literal) => {
        Script::new(concat!(
            include_str!("../lua/includes/breaker.lua"),
            "\n",
            include_str!(concat!("../lua/", $file))
        ))
    };
}

pub(crate) struct Scripts {
    pub(crate) enqueue: Script,
    pub(crate) claim: Script,
    pub(crate) complete: Script,
    pub(crate) extend: Script,
    pub(crate) release: Script,
    pub(crate) reap: Script,
    pub(crate) purge: Script,
    pub(crate) retry_dead: Script,
    pub(crate) purge_dead: Script,
    pub(crate) delete_jobs: Script,
    pub(crate) progress: Script,
    pub(crate) cancel: Script,
    pub(crate) cancel_requested: Script,
    pub(crate) arrive_join: Script,
    pub(crate) start_workflow: Script,
    pub(crate) finish_workflow: Script,
    pub(crate) acquire_leader: Script,
    pub(crate) release_leader: Script,
    pub(crate) record_tick: Script,
    pub(crate) lock_key: Script,
    pub(crate) ensure_key: Script,
    pub(crate) unlock_key: Script,
    pub(crate) check_limits: Script,
    pub(crate) acquire_permit: Script,
    pub(crate) release_permit: Script,
    pub(crate) report_breaker: Script,
    pub(crate) reserve_probe: Script,
    pub(crate) finish_probe: Script,
    pub(crate) command_breaker: Script,
    pub(crate) status_breaker: Script,
    pub(crate) fleet_time: Script,
    pub(crate) refresh_process: Script,
    pub(crate) control_process: Script,
    pub(crate) record_history: Script,
    pub(crate) read_job: Script,
}

impl Scripts {
    pub(crate) fn new() -> Self {
        Scripts {
            enqueue: script!("enqueueJobs-12.lua"),
            claim: script!("claimJobs-12.lua"),
            complete: script!("completeJobs-12.lua"),
            extend: script!("extendLeases-12.lua"),
            release: script!("releaseJobs-12.lua"),
            reap: script!("reapQueue-12.lua"),
            purge: script!("purgeQueue-12.lua"),
            retry_dead: script!("retryDead-12.lua"),
            purge_dead: script!("purgeDead-12.lua"),
            delete_jobs: script!("deleteJobs-12.lua"),
            progress: script!("setProgress-12.lua"),
            cancel: script!("cancelJob-12.lua"),
            cancel_requested: script!("cancelRequested-12.lua"),
            arrive_join: flow_script!("arriveJoin-1.lua"),
            start_workflow: flow_script!("startWorkflow-1.lua"),
            finish_workflow: flow_script!("finishWorkflow-1.lua"),
            acquire_leader: plain_script!("acquireLeader-1.lua"),
            release_leader: plain_script!("releaseLeader-1.lua"),
            record_tick: plain_script!("recordTick-2.lua"),
            lock_key: plain_script!("lockKey-1.lua"),
            ensure_key: plain_script!("ensureKey-1.lua"),
            unlock_key: plain_script!("unlockKey-1.lua"),
            check_limits: plain_script!("checkLimits-N.lua"),
            acquire_permit: plain_script!("acquirePermit-1.lua"),
            release_permit: plain_script!("releasePermit-1.lua"),
            report_breaker: breaker_script!("reportBreaker-3.lua"),
            reserve_probe: breaker_script!("reserveProbe-3.lua"),
            finish_probe: breaker_script!("finishProbe-3.lua"),
            command_breaker: breaker_script!("commandBreaker-3.lua"),
            status_breaker: breaker_script!("statusBreaker-3.lua"),
            fleet_time: plain_script!("fleetTime-1.lua"),
            refresh_process: plain_script!("refreshProcess-3.lua"),
            record_history: plain_script!("recordHistory-N.lua"),
            control_process: plain_script!("controlProcess-3.lua"),
            read_job: script!("readJob-12.lua"),
        }
    }
}
