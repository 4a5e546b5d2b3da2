//! The decoders of what other processes wrote into Redis, for property-based fuzzing from
//! outside the crate (`tests/fuzz_decoders.rs`), and the encoders that make real values for
//! their corpora. Not part of the API: hidden from the docs, and free to change.
//!
//! Each decoder is the one the backend uses, unchanged; the samples are built with the
//! backend's own encoders (the enqueue arguments, the key-value envelope, the history fields)
//! and laid out as the scripts lay them out.

use crate::codec::{self, Fields};
use celeriac_core::backend::{
    CancelReport, EndedJob, HistoryEntry, HistoryQuery, JoinStatus, SharedBreakerState,
    WorkflowRecord,
};
use celeriac_core::clock::UnixMs;
use celeriac_core::error::Result;
use celeriac_core::job::{Job, JobId, JobInfo, JobState};
use celeriac_core::limit::{Decision, Quota};
use redis::Value;
use std::collections::HashMap;

/// A job's record as `get` reads it (`listed: None`) or a listing does (the state of the set
/// it was found in).
pub fn job_record(
    id: JobId,
    queue: &str,
    fields: HashMap<String, Vec<u8>>,
    lease_until: Option<UnixMs>,
    listed: Option<JobState>,
) -> Result<Option<JobInfo>> {
    codec::info_from_hash(id, queue, Fields(fields), lease_until, listed)
}

/// A job's record from an `HGETALL` reply as a listing reads it: an error reply or a value of
/// another shape shows as an unreadable job.
pub fn listed_record(id: JobId, queue: &str, reply: Value, state: JobState) -> Result<JobInfo> {
    match codec::record_of(reply) {
        Ok(fields) => Ok(codec::info_from_hash(id, queue, fields, None, Some(state))?
            .unwrap_or_else(|| codec::foreign_info(id, queue, state, "no record"))),
        Err(why) => Ok(codec::foreign_info(id, queue, state, &why)),
    }
}

/// One entry of the claim script's reply on queue `default`: the job and its token; or, for
/// an entry whose record is malformed, its raw id, token and why (it would be
/// dead-lettered); or `None` for an entry of the wrong shape.
#[allow(clippy::type_complexity)]
pub fn claimed(entry: &Value) -> std::result::Result<(Job, u64), Option<(String, u64, String)>> {
    codec::claimed_from(entry, "default")
        .map_err(|bad| bad.map(|b| (b.id, b.token, b.error.to_string())))
}

/// The reap script's reply: its counts (requeued, dead, swept, dropped), the jobs it ended
/// and whether to call again.
pub fn reap_reply(reply: Value) -> Result<([u64; 4], Vec<EndedJob>, bool)> {
    let r = codec::reap_round(reply)?;
    Ok(([r.requeued, r.dead, r.swept, r.dropped], r.ended, r.more))
}

/// The cancel script's reply for job `id`.
pub fn cancel_reply(reply: Value, id: JobId) -> Result<CancelReport> {
    codec::cancel_report(reply, id)
}

/// Decision `i` of a `checkLimits-N` reply (5 little-endian doubles a decision), over the
/// quotas it checked.
pub fn limit_reply(reply: &[u8], i: usize, quotas: &[Quota]) -> Result<Decision> {
    let numbers = crate::rate_limits::answer(&Ok(reply.to_vec()), i)?;
    crate::rate_limits::decision_of(numbers, quotas)
}

/// An `acquirePermit-1` reply.
pub fn permit_reply(reply: &[i64], max: u32, now: UnixMs) -> Result<Decision> {
    crate::rate_limits::permit_decision(reply, max, now)
}

/// A breaker script's state reply.
pub fn breaker_reply(reply: &[i64]) -> Result<SharedBreakerState> {
    crate::breakers::state_of(reply)
}

/// The join script's reply.
pub fn join_reply(reply: Value, join: JobId) -> Result<JoinStatus> {
    crate::workflows::join_status(reply, join)
}

/// A workflow record's hash.
pub fn workflow_record(id: JobId, fields: HashMap<String, Vec<u8>>) -> Result<WorkflowRecord> {
    crate::workflows::record_from_hash(id, fields)
}

/// A stored key-value string at `now`: the value if it is live.
pub fn kv_value(stored: Vec<u8>, now: UnixMs) -> Option<Vec<u8>> {
    crate::kv::unwrap(stored, now)
}

/// A value as the key-value store stores it, live until `until`.
pub fn kv_stored(value: &[u8], until: UnixMs) -> Vec<u8> {
    crate::kv::wrap(value, until)
}

/// The entries of one history bucket's hash.
pub fn history_bucket(
    queue: &str,
    start: UnixMs,
    hash: HashMap<String, String>,
    query: &HistoryQuery,
) -> Vec<HistoryEntry> {
    crate::history::entries_of(queue, start, hash, query)
}

/// The hash fields history entries are stored as (one entry per task: the recording script
/// adds up the fields of several).
pub fn history_fields(entries: &[HistoryEntry]) -> HashMap<String, String> {
    let mut pairs = Vec::new();
    for e in entries {
        crate::history::fields(e, &mut pairs);
    }
    pairs.into_iter().collect()
}

/// An `XRANGE`/`XREVRANGE` reply of the event stream: `(id, body)` of each entry that has one.
pub fn event_entries(reply: Value) -> Vec<(String, Vec<u8>)> {
    crate::events::entries(reply)
}

/// A listing's cursor.
pub fn cursor(text: &str) -> Result<(String, String)> {
    crate::browse::parse_cursor(text)
}

/// A job's record as the enqueue script stores it for `job` (fields `s pr q r a m d p`, and
/// `x`, `tt` when set), with sequence number `seq`.
pub fn job_record_of(job: &Job, seq: u64) -> Result<HashMap<String, Vec<u8>>> {
    let args = codec::enqueue_args(job)?;
    let [_, pr, run_at, expires, max, ttl, spec, payload, _, _, _] = args;
    let mut f: HashMap<String, Vec<u8>> = HashMap::new();
    f.insert("s".into(), b"0".to_vec());
    f.insert("pr".into(), pr);
    f.insert("q".into(), format!("{seq:015}").into_bytes());
    f.insert("r".into(), run_at);
    f.insert("a".into(), b"0".to_vec());
    f.insert("m".into(), max);
    f.insert("d".into(), spec);
    f.insert("p".into(), payload);
    if !expires.is_empty() {
        f.insert("x".into(), expires);
    }
    if !ttl.is_empty() {
        f.insert("tt".into(), ttl);
    }
    Ok(f)
}

/// One entry of the claim script's reply as the script builds it for `job` claimed at `now`
/// with `token` (its attempt counted).
pub fn claim_entry_of(job: &Job, token: u64, now: UnixMs) -> Result<Vec<u8>> {
    let args = codec::enqueue_args(job)?;
    let [id, pr, run_at, expires, max, ttl, spec, payload, _, _, _] = args;
    let mut out = Vec::new();
    for part in [
        id,
        token.to_string().into_bytes(),
        (job.attempts + 1).to_string().into_bytes(),
        max,
        ttl,
        run_at,
        pr,
        expires,
        now.to_string().into_bytes(),
        spec,
    ] {
        out.extend_from_slice(&part);
        out.push(b'\t');
    }
    out.extend_from_slice(&payload);
    Ok(out)
}
