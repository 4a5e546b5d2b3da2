//! Jobs to and from their Redis hash.
//!
//! Fields: `d` the immutable spec (JSON with one- or two-letter names, see `Spec`), `p` payload, `s` state code, `pr` priority, `q`
//! sequence, `r` run_at, `x` expires_at, `a` attempts, `m` max attempts, `tt` result ttl (ms,
//! absent: keep no result), `w` worker, `st` started, `f` finished, `res`
//! result, `ek`/`em`/`ea` last error, `pg`/`pgm` progress.

use celeriac_core::backend::{CancelOutcome, CancelReport, EndedJob};
use celeriac_core::clock::{duration_ms, UnixMs};
use celeriac_core::error::{Error, Result};
use celeriac_core::job::{Encoding, ErrorInfo, Job, JobId, JobInfo, JobState, Priority, Progress};
use celeriac_core::workflow::FLOW_HEADER;
use redis::Value;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

/// The fields of a job that never change after enqueue, as the JSON of field `d`. Names are
/// one or two letters and a JSON encoding (0) is left out, so that for the usual task names
/// the field stays within Redis's 64-byte `hash-max-listpack-value` and the job's hash keeps
/// Redis's compact encoding (about half the memory). The queue is not written: the record's
/// key names it (`<prefix>:{<queue>}:job:<id>`) and readers take it from there. Records
/// written with the long names (`task`, `enc`, `created`...) still read, and the queue some
/// of them carry is passed over.
#[derive(Debug, Serialize, Deserialize)]
struct Spec {
    #[serde(rename = "t", alias = "task")]
    task: String,
    #[serde(rename = "e", alias = "enc", default, skip_serializing_if = "is_zero")]
    enc: u8,
    #[serde(
        rename = "s",
        alias = "soft",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    soft: Option<i64>,
    #[serde(
        rename = "h",
        alias = "hard",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    hard: Option<i64>,
    #[serde(
        rename = "hd",
        alias = "headers",
        default,
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    headers: BTreeMap<String, String>,
    #[serde(
        rename = "pa",
        alias = "parent",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    parent: Option<JobId>,
    #[serde(
        rename = "ro",
        alias = "root",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    root: Option<JobId>,
    #[serde(rename = "c", alias = "created")]
    created: i64,
}

fn is_zero(n: &u8) -> bool {
    *n == 0
}

fn spec_of(job: &Job) -> Result<String> {
    serde_json::to_string(&Spec {
        task: job.task.clone(),
        enc: job.encoding.code(),
        soft: job.soft_time_limit.map(duration_ms),
        hard: job.hard_time_limit.map(duration_ms),
        headers: job.headers.clone(),
        parent: job.parent_id,
        root: job.root_id,
        created: job.created_at,
    })
    .map_err(|e| Error::Codec(e.to_string()))
}

/// A ready job's score: priority first (9 most urgent, lowest score), then due time. The same
/// double arithmetic as `ready_score` in `lua/includes/common.lua`, so both agree to the digit.
fn ready_score(priority: u8, run_at: UnixMs) -> String {
    format!(
        "{:.0}",
        f64::from(9 - i32::from(priority)) * 4_398_046_511_104.0 + run_at as f64
    )
}

/// The enqueue script's ten arguments for one job.
pub(crate) fn enqueue_args(job: &Job) -> Result<[Vec<u8>; 11]> {
    let opt = |v: Option<i64>| v.map(|n| n.to_string()).unwrap_or_default();
    Ok([
        job.id.to_string().into_bytes(),
        job.priority.get().to_string().into_bytes(),
        job.run_at.to_string().into_bytes(),
        opt(job.expires_at).into_bytes(),
        job.max_attempts.to_string().into_bytes(),
        opt(job.result_ttl.map(duration_ms)).into_bytes(),
        spec_of(job)?.into_bytes(),
        job.payload.clone(),
        job.unique
            .as_ref()
            .map(|u| {
                let ms = duration_ms(u.lifetime.duration());
                format!("{}|{ms}|{}", u.lifetime.code(), u.key).into_bytes()
            })
            .unwrap_or_default(),
        ready_score(job.priority.get(), job.run_at).into_bytes(),
        job.task.clone().into_bytes(),
    ])
}

fn ms(d: Option<i64>) -> Option<Duration> {
    d.map(|m| Duration::from_millis(m.max(0) as u64))
}

/// The widest moment or duration (ms) a record may hold: 2^53, where the scripts' doubles stop
/// counting exactly (about 285,000 years). Beyond it a record is malformed, so no later
/// arithmetic on its times (`now - run_at`) can overflow.
pub(crate) const MAX_MS: i64 = 1 << 53;

/// A count as a `u32`, saturating (negative reads as 0).
fn count(n: i64) -> u32 {
    u32::try_from(n.max(0)).unwrap_or(u32::MAX)
}

/// `Err` naming the field when a time of job `id` lies beyond [`MAX_MS`] either way.
fn check_time(id: JobId, field: &str, value: Option<i64>) -> Result<()> {
    match value {
        Some(v) if !(-MAX_MS..=MAX_MS).contains(&v) => Err(Error::Codec(format!(
            "job {id}: field `{field}` is out of range: {v}"
        ))),
        _ => Ok(()),
    }
}

/// The numeric fields of a job record (absent ones as `None`).
pub(crate) struct Nums {
    attempts: Option<i64>,
    max_attempts: Option<i64>,
    result_ttl: Option<i64>,
    run_at: Option<i64>,
    priority: Option<i64>,
    expires_at: Option<i64>,
    started_at: Option<i64>,
    finished_at: Option<i64>,
}

impl Nums {
    fn of(f: &Fields) -> Self {
        Nums {
            attempts: f.int("a"),
            max_attempts: f.int("m"),
            result_ttl: f.int("tt"),
            run_at: f.int("r"),
            priority: f.int("pr"),
            expires_at: f.int("x"),
            started_at: f.int("st"),
            finished_at: f.int("f"),
        }
    }
}

/// A job from its record's fields; `queue` is the queue whose key holds the record.
fn job_from(id: JobId, queue: &str, spec: &[u8], payload: Vec<u8>, f: &Nums) -> Result<Job> {
    let spec: Spec = serde_json::from_slice(spec)
        .map_err(|e| Error::Codec(format!("job {id}: bad spec: {e}")))?;
    for (field, value) in [
        ("r", f.run_at),
        ("x", f.expires_at),
        ("st", f.started_at),
        ("f", f.finished_at),
        ("tt", f.result_ttl),
        ("created", Some(spec.created)),
        ("soft", spec.soft),
        ("hard", spec.hard),
    ] {
        check_time(id, field, value)?;
    }
    Ok(Job {
        id,
        queue: queue.to_string(),
        task: spec.task,
        payload,
        encoding: Encoding::from_code(i64::from(spec.enc))?,
        priority: Priority::clamped(f.priority.unwrap_or(5).clamp(0, 9) as u8),
        attempts: count(f.attempts.unwrap_or(0)),
        max_attempts: count(f.max_attempts.unwrap_or(1)).max(1),
        run_at: f.run_at.unwrap_or(spec.created),
        expires_at: f.expires_at,
        soft_time_limit: ms(spec.soft),
        hard_time_limit: ms(spec.hard),
        headers: spec.headers,
        parent_id: spec.parent,
        root_id: spec.root,
        result_ttl: ms(f.result_ttl),
        unique: None,
        created_at: spec.created,
        started_at: f.started_at,
        finished_at: f.finished_at,
    })
}

/// A job a script ended (a reap or a cancel), from its id, its new state, its spec (field `d`)
/// and the error the script recorded. A spec that does not read names the task
/// `<unreadable>` and no workflow, as [`info_from_hash`] shows such a record.
pub(crate) fn ended_job(
    id: JobId,
    state: JobState,
    spec: Option<&[u8]>,
    error: Option<ErrorInfo>,
) -> EndedJob {
    let spec = spec.and_then(|s| serde_json::from_slice::<Spec>(s).ok());
    let (task, flow) = match spec {
        Some(mut spec) => (spec.task, spec.headers.remove(FLOW_HEADER)),
        None => ("<unreadable>".to_string(), None),
    };
    EndedJob {
        id,
        task,
        state,
        error,
        flow,
    }
}

/// One entry of the reap script's `ended` list: `{id, state code, spec, error kind, error
/// message, error attempt}`, the spec and the error fields nil when absent.
pub(crate) type EndedEntry = (
    String,
    i64,
    Option<Vec<u8>>,
    Option<String>,
    Option<String>,
    Option<i64>,
);

/// One call of the reap script, decoded: its counts, the jobs it ended, and whether to call
/// again.
#[derive(Debug, Default)]
pub(crate) struct ReapRound {
    pub(crate) requeued: u64,
    pub(crate) dead: u64,
    pub(crate) swept: u64,
    pub(crate) ended: Vec<EndedJob>,
    pub(crate) dropped: u64,
    pub(crate) more: bool,
}

/// Reads the reap script's reply `{requeued, dead, swept, ended, dropped, more}`. An entry of
/// `ended` that does not name a job (an id that does not read) is logged and left out: the
/// script has ended it already, and failing the reply would stop every later reap.
///
/// # Errors
/// A reply of another shape.
pub(crate) fn reap_round(reply: Value) -> Result<ReapRound> {
    type Round = (u64, u64, u64, Vec<EndedEntry>, u64, u8);
    let (requeued, dead, swept, entries, dropped, more): Round = redis::from_redis_value(reply)
        .map_err(|e| {
            Error::backend(
                celeriac_core::error::ErrorKind::GiveUp,
                format!("the reap script answered in an unexpected shape: {e}"),
            )
        })?;
    let mut ended = Vec::with_capacity(entries.len());
    for entry in entries {
        let id = entry.0.clone();
        match ended_from(entry) {
            Ok(job) => ended.push(job),
            Err(e) => {
                tracing::error!(id = %id, error = %e, "the reaper ended a job whose id does not read")
            }
        }
    }
    Ok(ReapRound {
        requeued,
        dead,
        swept,
        ended,
        dropped,
        more: more != 0,
    })
}

/// Reads the cancel script's reply `{answer, spec}` for job `id` (see
/// `lua/cancelJob-12.lua`).
///
/// # Errors
/// A reply of another shape, or a state code that is none.
pub(crate) fn cancel_report(reply: Value, id: JobId) -> Result<CancelReport> {
    let (answer, spec): (String, Option<Vec<u8>>) =
        redis::from_redis_value(reply).map_err(|e| {
            Error::backend(
                celeriac_core::error::ErrorKind::GiveUp,
                format!("the cancel script answered in an unexpected shape: {e}"),
            )
        })?;
    let outcome = match answer.as_str() {
        "cancelled" => CancelOutcome::Cancelled,
        "requested" => CancelOutcome::Requested,
        "missing" => CancelOutcome::NotFound,
        code => CancelOutcome::AlreadyFinished(
            code.parse()
                .map_err(|_| {
                    Error::Codec(format!(
                        "job {id}: field `s` (state) is `{code}`, not a number"
                    ))
                })
                .and_then(JobState::from_code)?,
        ),
    };
    let ended = match outcome {
        CancelOutcome::Cancelled => Some(ended_job(id, JobState::Cancelled, spec.as_deref(), None)),
        _ => None,
    };
    Ok(CancelReport { outcome, ended })
}

/// The job an entry of the reap script's `ended` list names.
pub(crate) fn ended_from(entry: EndedEntry) -> Result<EndedJob> {
    let (id, state, spec, kind, message, attempt) = entry;
    let error = kind.map(|kind| ErrorInfo {
        kind,
        message: message.unwrap_or_default(),
        attempt: count(attempt.unwrap_or(0)),
    });
    Ok(ended_job(
        id.parse()?,
        JobState::from_code(state)?,
        spec.as_deref(),
        error,
    ))
}

/// Hash fields by name.
pub(crate) struct Fields(pub(crate) HashMap<String, Vec<u8>>);

impl Fields {
    fn text(&self, k: &str) -> Option<String> {
        self.0
            .get(k)
            .map(|v| String::from_utf8_lossy(v).into_owned())
    }
    fn int(&self, k: &str) -> Option<i64> {
        self.text(k).and_then(|t| t.parse().ok())
    }
}

/// A job's full record from its hash (and its lease expiry from the active set); `None` when
/// the hash is empty (no such job). `listed` is the state of the set the record was found in,
/// for a listing: a record whose own state field does not read is then shown in that state
/// rather than failing the whole page.
///
/// A record that no longer reads as a job (no spec, a spec that is not JSON, a time out of
/// range) is still shown: task `<unreadable>`, the raw payload, its state and error, and the
/// reason in the header `celeriac-unreadable`, so a dead letter of that kind can be inspected.
///
/// # Errors
/// A state field that is missing or not a state code, when `listed` is `None`.
pub(crate) fn info_from_hash(
    id: JobId,
    queue: &str,
    fields: Fields,
    lease_until: Option<UnixMs>,
    listed: Option<JobState>,
) -> Result<Option<JobInfo>> {
    if fields.0.is_empty() {
        return Ok(None);
    }
    let payload = fields.0.get("p").cloned().unwrap_or_default();
    let decoded = match fields.0.get("d") {
        Some(spec) => job_from(id, queue, spec, payload.clone(), &Nums::of(&fields)),
        None => Err(Error::Codec(format!(
            "job {id}: field `d` (spec) is missing"
        ))),
    };
    let mut problems = Vec::new();
    let mut job = match decoded {
        Ok(job) => job,
        Err(e) => {
            let run_at = fields
                .int("r")
                .filter(|r| (-MAX_MS..=MAX_MS).contains(r))
                .unwrap_or(0);
            let mut job = Job::new("<unreadable>", payload, run_at);
            job.id = id;
            job.queue = queue.to_string();
            job.attempts = count(fields.int("a").unwrap_or(0));
            job.finished_at = fields.int("f").filter(|f| (-MAX_MS..=MAX_MS).contains(f));
            problems.push(e.to_string());
            job
        }
    };
    let state = match fields.int("s").map(JobState::from_code) {
        Some(Ok(state)) => state,
        bad => {
            let why = match bad {
                Some(Err(e)) => format!("job {id}: field `s` (state): {e}"),
                _ => format!("job {id}: field `s` (state) is missing or not a number"),
            };
            let Some(state) = listed else {
                return Err(Error::Codec(why));
            };
            problems.push(why);
            state
        }
    };
    if !problems.is_empty() {
        job.headers
            .insert("celeriac-unreadable".into(), problems.join("; "));
    }
    let error = fields.text("ek").map(|kind| ErrorInfo {
        kind,
        message: fields.text("em").unwrap_or_default(),
        attempt: count(fields.int("ea").unwrap_or(0)),
    });
    let progress = fields
        .text("pg")
        .and_then(|p| p.parse::<f64>().ok())
        .filter(|f| f.is_finite())
        .map(|fraction| Progress {
            fraction,
            message: fields.text("pgm"),
        });
    Ok(Some(JobInfo {
        result: fields.0.get("res").cloned(),
        job,
        state,
        error,
        progress,
        worker: fields.text("w"),
        lease_until: if state == JobState::Active {
            lease_until
        } else {
            None
        },
    }))
}

/// A job whose record says it waits or runs, found in the set of another state (its record
/// changed by hand): reported in that state, the sets being where the scripts find work,
/// with the discrepancy in the header `celeriac-unreadable`.
pub(crate) fn held_elsewhere(mut info: JobInfo, held: JobState, lease: Option<UnixMs>) -> JobInfo {
    let note = format!(
        "job {}: its record's state is {} but the set of {} jobs holds it",
        info.job.id, info.state, held
    );
    let header = info
        .job
        .headers
        .entry("celeriac-unreadable".into())
        .or_default();
    if !header.is_empty() {
        header.push_str("; ");
    }
    header.push_str(&note);
    info.state = held;
    info.lease_until = if held == JobState::Active {
        lease
    } else {
        None
    };
    info
}

/// A job record from an `HGETALL` reply, or why it is none: an error reply (a key of another
/// type) or `Nil` (what a listing makes of one) give `Err`, with the reason.
pub(crate) fn record_of(reply: Value) -> std::result::Result<Fields, String> {
    match reply {
        Value::Nil => Err("the key holds another type than a hash".into()),
        Value::ServerError(e) => Err(e.to_string()),
        other => redis::from_redis_value::<HashMap<String, Vec<u8>>>(other)
            .map(Fields)
            .map_err(|e| e.to_string()),
    }
}

/// What a listing shows for a job whose key holds something other than a hash: task
/// `<unreadable>`, in the state of the set it was found in, the reason in the header
/// `celeriac-unreadable`.
pub(crate) fn foreign_info(id: JobId, queue: &str, state: JobState, why: &str) -> JobInfo {
    let mut job = Job::new("<unreadable>", Vec::new(), 0);
    job.id = id;
    job.queue = queue.to_string();
    job.headers.insert(
        "celeriac-unreadable".into(),
        format!("job {id}: the key does not hold a job record: {why}"),
    );
    JobInfo {
        job,
        state,
        result: None,
        error: None,
        progress: None,
        worker: None,
        lease_until: None,
    }
}

fn bytes(v: &Value) -> Option<Vec<u8>> {
    match v {
        Value::BulkString(b) => Some(b.clone()),
        Value::SimpleString(s) => Some(s.clone().into_bytes()),
        Value::Int(i) => Some(i.to_string().into_bytes()),
        _ => None,
    }
}

fn int(v: &Value) -> Option<i64> {
    match v {
        Value::Int(i) => Some(*i),
        other => bytes(other).and_then(|b| String::from_utf8_lossy(&b).parse().ok()),
    }
}

/// A claimed entry whose record cannot be turned into a job: its raw id and token, so it can
/// be dead-lettered, and why.
pub(crate) struct Undecodable {
    pub(crate) id: String,
    pub(crate) token: u64,
    pub(crate) error: Error,
}

/// One entry of the claim script's reply: one bulk string,
/// `id \t token \t attempts \t max \t tt \t run_at \t pr \t x \t started \t spec \t payload`
/// (the spec is JSON, which holds no raw tab; the payload may hold any byte).
///
/// # Errors
/// `Err(Some(..))` for a leased entry whose record is malformed, as soon as its id and token
/// read (it must be dead-lettered); `Err(None)` when not even those do (the reply itself has
/// the wrong shape).
pub(crate) fn claimed_from(
    v: &Value,
    queue: &str,
) -> std::result::Result<(Job, u64), Option<Undecodable>> {
    let Value::BulkString(b) = v else {
        return Err(None);
    };
    let mut fields = b.splitn(3, |&c| c == b'\t');
    let raw_id = String::from_utf8_lossy(fields.next().unwrap_or_default()).into_owned();
    let token = fields
        .next()
        .and_then(|t| std::str::from_utf8(t).ok()?.parse::<u64>().ok())
        .ok_or(None)?;
    let bad = |why: String| {
        Some(Undecodable {
            id: raw_id.clone(),
            token,
            error: Error::Codec(format!("job {raw_id}: {why}")),
        })
    };
    // Seven numbers, then the spec (JSON, so no raw tab in it) and the payload, which may hold
    // any byte: the tab after the spec is the last separator.
    let mut head: [&[u8]; 8] = [&[]; 8];
    let mut rest: &[u8] = fields.next().unwrap_or_default();
    for slot in head.iter_mut() {
        let tab = rest
            .iter()
            .position(|&c| c == b'\t')
            .ok_or_else(|| bad("the claim reply is cut short".into()))?;
        *slot = &rest[..tab];
        rest = &rest[tab + 1..];
    }
    let (spec, payload) = (head[7], rest);
    let [attempts, max_attempts, result_ttl, run_at, priority, expires_at, started_at, _] =
        head.map(parse_int);
    let nums = Nums {
        attempts,
        max_attempts,
        result_ttl,
        run_at,
        priority,
        expires_at,
        started_at,
        finished_at: None,
    };
    raw_id
        .parse::<JobId>()
        .and_then(|id| job_from(id, queue, spec, payload.to_vec(), &nums))
        .map(|job| (job, token))
        .map_err(|error| {
            Some(Undecodable {
                id: raw_id.clone(),
                token,
                error,
            })
        })
}

/// A decimal integer field; empty or malformed reads as absent.
fn parse_int(b: &[u8]) -> Option<i64> {
    std::str::from_utf8(b).ok()?.parse().ok()
}

/// An integer reply element.
pub(crate) fn int_of(v: &Value) -> i64 {
    int(v).unwrap_or(0)
}

/// A text reply element.
pub(crate) fn text_of(v: &Value) -> String {
    bytes(v)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A job of the usual shape writes a spec within Redis's 64-byte listpack value, and a
    /// spec written with the long names of earlier versions reads the same.
    #[test]
    fn the_spec_is_short_and_old_specs_still_read() {
        let mut job = Job::new("emails.send", b"{}".to_vec(), 1_765_000_000_000);
        job.queue = "emails".into();
        let spec = spec_of(&job).expect("encodes");
        assert!(spec.len() <= 64, "{} bytes: {spec}", spec.len());
        let nums = Nums {
            attempts: Some(0),
            max_attempts: Some(3),
            result_ttl: None,
            run_at: Some(job.run_at),
            priority: Some(5),
            expires_at: None,
            started_at: None,
            finished_at: None,
        };
        assert!(
            !spec.contains("emails\""),
            "the key names the queue: {spec}"
        );
        let new = job_from(job.id, "emails", spec.as_bytes(), Vec::new(), &nums).expect("reads");
        let old = br#"{"task":"emails.send","queue":"emails","enc":0,"created":1765000000000}"#;
        let old = job_from(job.id, "emails", old, Vec::new(), &nums).expect("an old spec reads");
        for j in [&new, &old] {
            assert_eq!(
                (j.task.as_str(), j.queue.as_str(), j.created_at),
                ("emails.send", "emails", 1_765_000_000_000)
            );
        }
    }
}
