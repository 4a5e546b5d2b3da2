//! Property-based fuzzing of every decoder that reads what another process wrote into Redis:
//! job records, claim, reap and cancel replies, limiter, permit and breaker replies, joins and
//! workflow records, key-value values, history buckets, events, listing cursors and URLs.
//!
//! Each decoder gets random bytes and real values (made with the backend's own encoders)
//! mutated. The properties: no panic, no allocation larger than the input implies (measured
//! by this binary's allocator), and a typed error or a sensible value. `CELERIAC_FUZZ_CASES`
//! and `CELERIAC_FUZZ_SECONDS` set how long (see `celeriac_testkit::fuzz`).

use celeriac_core::backend::{HistoryEntry, HistoryQuery, JoinStatus, Resolution};
use celeriac_core::job::{Job, JobId, JobState, Priority, UniqueFor};
use celeriac_core::limit::Quota;
use celeriac_core::Error;
use celeriac_redis::fuzzing;
use celeriac_redis::{RedisConfig, Topology};
use celeriac_testkit::fuzz::{bytes, mutated, mutated_text, run};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use redis::Value;
use stats_alloc::{Region, StatsAlloc, INSTRUMENTED_SYSTEM};
use std::alloc::System;
use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

const NOW: i64 = 1_700_000_000_000;
/// Times a decoded job may hold (see `MAX_MS` in the codec): 2^53 ms either way.
const MAX_MS: i64 = 1 << 53;

// ---------------------------------------------------------------------------------------------
// Allocation accounting: bytes allocated while a decoder runs, one test at a time (the
// counter is global).

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

static SERIAL: Mutex<()> = Mutex::new(());

/// Holds the allocation counter for this test.
fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Bytes allocated (and grown by reallocation) while `f` ran.
fn allocated<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let region = Region::new(GLOBAL);
    let out = f();
    let change = region.change();
    let grown = usize::try_from(change.bytes_reallocated).unwrap_or(0);
    (out, change.bytes_allocated + grown)
}

/// Runs `decode` and fails the case if it allocated more than `input_len` bytes of input can
/// justify: a fixed allowance for small tables and sketches, plus 64 bytes a byte.
fn bounded<T>(input_len: usize, decode: impl FnOnce() -> T) -> Result<T, TestCaseError> {
    let (out, used) = allocated(decode);
    let allowed = (1 << 20) + 64 * input_len;
    prop_assert!(
        used <= allowed,
        "{used} bytes allocated for {input_len} bytes of input"
    );
    Ok(out)
}

/// A typed error says what was wrong: it is a codec, configuration or backend error with a
/// message.
fn typed(e: &Error) -> Result<(), TestCaseError> {
    prop_assert!(
        !e.to_string().trim().is_empty(),
        "an error without a message"
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Corpora: real values made with the backend's encoders.

fn jobs() -> Vec<Job> {
    let mut out = Vec::new();
    let mut plain = Job::new("send_email", br#"{"to":"a@example.com"}"#.to_vec(), NOW);
    plain.queue = "emails".into();
    out.push(plain);
    let mut full = Job::new("resize", vec![0, 1, 2, 255, b'\t', b'"'], NOW + 5_000);
    full.priority = Priority::clamped(9);
    full.max_attempts = 7;
    full.expires_at = Some(NOW + 60_000);
    full.result_ttl = Some(Duration::from_secs(3600));
    full.soft_time_limit = Some(Duration::from_secs(10));
    full.hard_time_limit = Some(Duration::from_secs(20));
    full.headers.insert("trace".into(), "abc\tdef".into());
    full.parent_id = Some(JobId::new());
    full.root_id = Some(JobId::new());
    out.push(full);
    let mut unique = Job::new("t", Vec::new(), NOW);
    unique.priority = Priority::clamped(0);
    unique.unique = Some(celeriac_core::job::Unique {
        key: "k".into(),
        lifetime: UniqueFor::Window(Duration::from_secs(5)),
    });
    out.push(unique);
    out
}

/// Job records as the enqueue script stores them, and as later scripts leave them (leased,
/// retried, dead, succeeded with a result and progress).
fn job_records() -> Vec<(JobId, HashMap<String, Vec<u8>>)> {
    let mut out = Vec::new();
    for (i, job) in jobs().into_iter().enumerate() {
        let fresh = fuzzing::job_record_of(&job, i as u64 + 1).expect("encodes");
        out.push((job.id, fresh.clone()));
        let set = |extra: &[(&str, &str)]| {
            let mut r = fresh.clone();
            for (k, v) in extra {
                r.insert((*k).to_string(), v.as_bytes().to_vec());
            }
            r
        };
        out.push((
            job.id,
            set(&[
                ("s", "2"),
                ("a", "1"),
                ("w", "worker-1"),
                ("st", "1700000000100"),
            ]),
        ));
        out.push((
            job.id,
            set(&[
                ("s", "6"),
                ("a", "4"),
                ("f", "1700000000900"),
                ("ek", "panic"),
                ("em", "boom"),
                ("ea", "4"),
            ]),
        ));
        out.push((
            job.id,
            set(&[
                ("s", "4"),
                ("a", "1"),
                ("res", "{\"ok\":true}"),
                ("pg", "0.5"),
                ("pgm", "half"),
                ("f", "1700000001000"),
            ]),
        ));
    }
    out
}

/// Claim-reply entries as the claim script builds them.
fn claim_entries() -> Vec<Vec<u8>> {
    jobs()
        .iter()
        .enumerate()
        .map(|(i, j)| fuzzing::claim_entry_of(j, i as u64 + 1, NOW).expect("encodes"))
        .collect()
}

/// A RESP2 encoding of a reply, for corpora of whole replies (parsed back by redis-rs).
fn resp(v: &Value, out: &mut Vec<u8>) {
    match v {
        Value::Nil => out.extend_from_slice(b"$-1\r\n"),
        Value::Int(i) => out.extend_from_slice(format!(":{i}\r\n").as_bytes()),
        Value::BulkString(b) => {
            out.extend_from_slice(format!("${}\r\n", b.len()).as_bytes());
            out.extend_from_slice(b);
            out.extend_from_slice(b"\r\n");
        }
        Value::SimpleString(s) => out.extend_from_slice(format!("+{s}\r\n").as_bytes()),
        Value::Okay => out.extend_from_slice(b"+OK\r\n"),
        Value::Array(items) => {
            out.extend_from_slice(format!("*{}\r\n", items.len()).as_bytes());
            for i in items {
                resp(i, out);
            }
        }
        other => panic!("no RESP2 form for {other:?}"),
    }
}

fn encoded(v: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    resp(v, &mut out);
    out
}

fn bulk(s: impl AsRef<[u8]>) -> Value {
    Value::BulkString(s.as_ref().to_vec())
}

/// A reply parsed from bytes, or `None` when they are no RESP.
fn parsed(b: &[u8]) -> Option<Value> {
    redis::parse_redis_value(b).ok()
}

/// Reply bytes: random, or real replies mutated.
fn replies(corpus: Vec<Value>) -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        1 => bytes(200),
        4 => mutated(corpus.iter().map(encoded).collect()),
    ]
}

// ---------------------------------------------------------------------------------------------
// Job records.

const JOB_FIELDS: [&str; 22] = [
    "d", "p", "s", "pr", "q", "r", "x", "a", "m", "tt", "w", "st", "f", "res", "ek", "em", "ea",
    "pg", "pgm", "cx", "uk", "um",
];

/// Edits to a record: which field (or a random name), and its new value or none.
#[derive(Debug, Clone)]
enum Edit {
    Set(String, Vec<u8>),
    Delete(String),
}

fn edits(values: Vec<Vec<u8>>) -> impl Strategy<Value = Vec<Edit>> {
    let field = prop_oneof![
        8 => (0..JOB_FIELDS.len()).prop_map(|i| JOB_FIELDS[i].to_string()),
        1 => "[a-z]{1,3}",
    ];
    let value = prop_oneof![
        4 => mutated(values),
        1 => bytes(24),
        2 => prop_oneof![
            Just(b"nan".to_vec()),
            Just(b"inf".to_vec()),
            Just(b"-inf".to_vec()),
            Just(b"1e400".to_vec()),
            Just(b"-1".to_vec()),
            Just(b"99999999999999999999".to_vec()),
            Just(i64::MIN.to_string().into_bytes()),
            Just(i64::MAX.to_string().into_bytes()),
            Just(b"0x10".to_vec()),
            Just(b" 5".to_vec()),
            Just(b"".to_vec()),
        ],
    ];
    proptest::collection::vec(
        prop_oneof![
            3 => (field.clone(), value).prop_map(|(f, v)| Edit::Set(f, v)),
            1 => field.prop_map(Edit::Delete),
        ],
        1..6,
    )
}

fn apply(record: &mut HashMap<String, Vec<u8>>, edits: &[Edit]) {
    for e in edits {
        match e {
            Edit::Set(f, v) => {
                record.insert(f.clone(), v.clone());
            }
            Edit::Delete(f) => {
                record.remove(f);
            }
        }
    }
}

fn size(record: &HashMap<String, Vec<u8>>) -> usize {
    record.iter().map(|(k, v)| k.len() + v.len()).sum()
}

#[test]
fn real_job_records_read_back_as_their_jobs() {
    let _serial = serial();
    let jobs = jobs();
    for (i, job) in jobs.iter().enumerate() {
        let record = fuzzing::job_record_of(job, i as u64).expect("encodes");
        let info = fuzzing::job_record(job.id, &job.queue, record, None, None)
            .expect("reads")
            .expect("a record");
        assert_eq!(info.state, JobState::Pending);
        let got = &info.job;
        assert_eq!(
            (
                &got.task,
                &got.queue,
                &got.payload,
                got.priority,
                got.run_at
            ),
            (
                &job.task,
                &job.queue,
                &job.payload,
                job.priority,
                job.run_at
            )
        );
        assert_eq!(
            (
                got.max_attempts,
                got.expires_at,
                got.result_ttl,
                &got.headers
            ),
            (
                job.max_attempts,
                job.expires_at,
                job.result_ttl,
                &job.headers
            )
        );
        let entry = fuzzing::claim_entry_of(job, 7, NOW).expect("encodes");
        let (claimed, token) = fuzzing::claimed(&bulk(&entry)).expect("a claim entry reads");
        assert_eq!(token, 7);
        assert_eq!((claimed.id, &claimed.payload), (job.id, &job.payload));
        assert_eq!(claimed.attempts, 1);
        assert_eq!(claimed.started_at, Some(NOW));
    }
}

#[test]
fn fuzz_job_records() {
    let _serial = serial();
    let corpus = job_records();
    let values: Vec<Vec<u8>> = corpus
        .iter()
        .flat_map(|(_, r)| r.values().cloned())
        .collect();
    let strategy = (0..corpus.len(), edits(values), any::<u8>());
    let n = run("job records", strategy, |(at, edits, pick)| {
        let (id, mut record) = corpus[at].clone();
        apply(&mut record, &edits);
        let len = size(&record);
        let listed = JobState::ALL[usize::from(pick) % JobState::ALL.len()];
        // As `get` reads it: a record, or a typed error only for a state that does not read.
        match bounded(len, || {
            fuzzing::job_record(id, "q", record.clone(), Some(NOW), None)
        })? {
            Ok(Some(info)) => check_info(&info, id)?,
            Ok(None) => prop_assert!(record.is_empty()),
            Err(e) => {
                typed(&e)?;
                prop_assert!(e.to_string().contains("`s`"), "{e}");
            }
        }
        // As a listing reads it: never an error, whatever the record holds.
        let info = bounded(len, || {
            fuzzing::job_record(id, "q", record.clone(), None, Some(listed))
        })?;
        match info {
            Ok(Some(info)) => check_info(&info, id)?,
            Ok(None) => prop_assert!(record.is_empty()),
            Err(e) => prop_assert!(false, "a listing failed on one record: {e}"),
        }
        Ok(())
    });
    assert!(n > 0);
}

/// What every decoded record satisfies: its own id, times within range, and a reason
/// whenever it could not be read as a job.
fn check_info(info: &celeriac_core::job::JobInfo, id: JobId) -> Result<(), TestCaseError> {
    let job = &info.job;
    prop_assert_eq!(job.id, id);
    for t in [
        Some(job.run_at),
        Some(job.created_at),
        job.expires_at,
        job.started_at,
    ]
    .into_iter()
    .chain([job.finished_at])
    .flatten()
    {
        prop_assert!(
            (-MAX_MS..=MAX_MS).contains(&t),
            "a time out of range: {}",
            t
        );
    }
    prop_assert!(job.max_attempts >= 1);
    if job.task == "<unreadable>" {
        prop_assert!(job.headers.contains_key("celeriac-unreadable"));
    }
    if let Some(p) = &info.progress {
        prop_assert!(p.fraction.is_finite());
    }
    Ok(())
}

#[test]
fn fuzz_listed_records_of_any_reply() {
    let _serial = serial();
    let corpus: Vec<Value> = job_records()
        .into_iter()
        .map(|(_, r)| {
            Value::Array(
                r.into_iter()
                    .flat_map(|(k, v)| [bulk(k), Value::BulkString(v)])
                    .collect(),
            )
        })
        .collect();
    let id = JobId::new();
    let n = run("listed records", replies(corpus), |b| {
        let Some(reply) = parsed(&b) else {
            return Ok(());
        };
        let info = bounded(b.len(), || {
            fuzzing::listed_record(id, "q", reply, JobState::Dead)
        })?;
        match info {
            Ok(info) => check_info(&info, id),
            Err(e) => typed(&e),
        }
    });
    assert!(n > 0);
}

// ---------------------------------------------------------------------------------------------
// Claim, reap and cancel replies.

/// Regression (found by `fuzz_claim_entries`): a token above `i64::MAX` read as no token, so
/// the entry counted as the wrong shape (failing the whole claim) rather than as one job to
/// dead-letter.
#[test]
fn a_claim_entry_with_a_token_above_i64_is_read() {
    let entry = b"01a249ef-6783-7518-b8cf-43e886400000\t17000001700000000000\t62\t\
        {\"task\":\"t\",\"queue\":\"default\",\"enc\":0,\"created\":1700000000000}";
    match fuzzing::claimed(&bulk(entry)) {
        Err(Some((id, token, why))) => {
            assert_eq!(id, "01a249ef-6783-7518-b8cf-43e886400000");
            assert_eq!(token, 17_000_001_700_000_000_000);
            assert!(why.contains("cut short"), "{why}");
        }
        other => panic!("expected an entry to dead-letter, got {other:?}"),
    }
}

#[test]
fn fuzz_claim_entries() {
    let _serial = serial();
    let strategy = prop_oneof![1 => bytes(300), 6 => mutated(claim_entries())];
    let n = run("claim entries", strategy, |b| {
        let decoded = bounded(b.len(), || fuzzing::claimed(&bulk(&b)))?;
        match decoded {
            Ok((job, _)) => {
                let info = celeriac_core::job::JobInfo {
                    job: job.clone(),
                    state: JobState::Active,
                    result: None,
                    error: None,
                    progress: None,
                    worker: None,
                    lease_until: None,
                };
                check_info(&info, job.id)?;
            }
            Err(Some((_, _, why))) => prop_assert!(!why.is_empty()),
            // The wrong shape only when not even an id and a token read.
            Err(None) => {
                let mut parts = b.splitn(3, |&c| c == b'\t');
                let _id = parts.next();
                let token = parts
                    .next()
                    .and_then(|t| std::str::from_utf8(t).ok())
                    .and_then(|t| t.parse::<u64>().ok());
                prop_assert!(
                    token.is_none() || parts.next().is_none(),
                    "an entry with an id and a token was called the wrong shape"
                );
            }
        }
        Ok(())
    });
    assert!(n > 0);
}

#[test]
fn fuzz_claim_replies_of_any_shape() {
    let _serial = serial();
    let corpus: Vec<Value> = claim_entries()
        .into_iter()
        .map(|e| Value::Array(vec![bulk(e)]))
        .collect();
    let n = run("claim replies", replies(corpus), |b| {
        if let Some(Value::Array(items)) = parsed(&b) {
            for item in &items {
                let _ = bounded(b.len(), || fuzzing::claimed(item))?;
            }
        }
        Ok(())
    });
    assert!(n > 0);
}

fn reap_corpus() -> Vec<Value> {
    let spec =
        String::from_utf8(fuzzing::job_record_of(&jobs()[1], 1).expect("encodes")["d"].clone())
            .expect("JSON");
    let id = JobId::new().to_string();
    vec![
        Value::Array(vec![
            Value::Int(1),
            Value::Int(2),
            Value::Int(3),
            Value::Array(vec![
                Value::Array(vec![
                    bulk(&id),
                    bulk("6"),
                    bulk(&spec),
                    bulk("lease_expired"),
                    bulk("the worker stopped heartbeating"),
                    bulk("3"),
                ]),
                Value::Array(vec![
                    bulk(&id),
                    bulk("7"),
                    Value::Nil,
                    Value::Nil,
                    Value::Nil,
                    Value::Nil,
                ]),
            ]),
            Value::Int(0),
            Value::Int(1),
        ]),
        Value::Array(vec![
            Value::Int(0),
            Value::Int(0),
            Value::Int(0),
            Value::Array(vec![]),
            Value::Int(0),
            Value::Int(0),
        ]),
    ]
}

#[test]
fn fuzz_reap_replies() {
    let _serial = serial();
    let n = run("reap replies", replies(reap_corpus()), |b| {
        let Some(reply) = parsed(&b) else {
            return Ok(());
        };
        match bounded(b.len(), || fuzzing::reap_reply(reply))? {
            Ok((_, ended, _)) => {
                for e in ended {
                    prop_assert!(!e.task.is_empty());
                }
            }
            Err(e) => typed(&e)?,
        }
        Ok(())
    });
    assert!(n > 0);
}

#[test]
fn fuzz_cancel_replies() {
    let _serial = serial();
    let spec = fuzzing::job_record_of(&jobs()[0], 1).expect("encodes")["d"].clone();
    let corpus = vec![
        Value::Array(vec![bulk("cancelled"), Value::BulkString(spec)]),
        Value::Array(vec![bulk("requested"), Value::Nil]),
        Value::Array(vec![bulk("missing"), Value::Nil]),
        Value::Array(vec![bulk("4"), Value::Nil]),
    ];
    let id = JobId::new();
    let n = run("cancel replies", replies(corpus), |b| {
        let Some(reply) = parsed(&b) else {
            return Ok(());
        };
        if let Err(e) = bounded(b.len(), || fuzzing::cancel_reply(reply, id))? {
            typed(&e)?;
        }
        Ok(())
    });
    assert!(n > 0);
}

// ---------------------------------------------------------------------------------------------
// Rate limits, permits, breakers.

fn quotas() -> Vec<Quota> {
    vec![Quota::per_second(10), Quota::per_hour(1000)]
}

#[test]
fn fuzz_limit_replies() {
    let _serial = serial();
    let real =
        |numbers: [f64; 5]| -> Vec<u8> { numbers.iter().flat_map(|x| x.to_le_bytes()).collect() };
    let corpus = vec![
        real([1.0, 0.0, 9.0, 100.0, -1.0]),
        [
            real([0.0, 1.0, 0.0, 3_600_000.0, 1200.0]),
            real([1.0, 0.0, 5.0, 1.0, -1.0]),
        ]
        .concat(),
    ];
    let strategy = (
        prop_oneof![1 => bytes(120), 4 => mutated(corpus)],
        0usize..3,
    );
    let quotas = quotas();
    let n = run("limit replies", strategy, |(b, i)| {
        match bounded(b.len(), || fuzzing::limit_reply(&b, i, &quotas))? {
            Ok(d) => {
                prop_assert!(d.quota < quotas.len());
                prop_assert_eq!(d.limit, quotas[d.quota].limit());
            }
            Err(e) => typed(&e)?,
        }
        Ok(())
    });
    assert!(n > 0);
}

fn extreme_ints() -> impl Strategy<Value = i64> {
    prop_oneof![
        Just(i64::MIN),
        Just(i64::MAX),
        Just(-1),
        Just(0),
        Just(1),
        Just(NOW),
        Just(NOW + 30_000),
        any::<i64>(),
    ]
}

/// Regression: a permit set holding a lease end far in the future (a Lua number past what an
/// integer reply holds comes back as `i64::MIN`) overflowed `last - now`.
#[test]
fn a_permit_reply_with_a_lease_end_beyond_integers_does_not_overflow() {
    let d = fuzzing::permit_reply(&[0, 1, i64::MIN, i64::MIN], 1, NOW).expect("reads");
    assert_eq!(d.reset_after, Duration::ZERO);
    let d = fuzzing::permit_reply(&[1, 1, i64::MAX, i64::MAX], 1, -NOW).expect("reads");
    assert!(d.reset_after > Duration::from_secs(1 << 40));
}

#[test]
fn fuzz_permit_replies() {
    let _serial = serial();
    let strategy = (
        proptest::collection::vec(extreme_ints(), 0..6),
        any::<u32>(),
        extreme_ints(),
    );
    let n = run("permit replies", strategy, |(reply, max, now)| {
        match fuzzing::permit_reply(&reply, max, now) {
            Ok(d) => prop_assert!(d.remaining <= max),
            Err(e) => typed(&e)?,
        }
        Ok(())
    });
    assert!(n > 0);
}

#[test]
fn fuzz_breaker_replies() {
    let _serial = serial();
    let strategy = proptest::collection::vec(extreme_ints(), 0..10);
    let n = run("breaker replies", strategy, |reply| {
        match fuzzing::breaker_reply(&reply) {
            Ok(s) => prop_assert!(reply.len() >= 8 && (0..=4).contains(&reply[0]), "{s:?}"),
            Err(e) => typed(&e)?,
        }
        Ok(())
    });
    assert!(n > 0);
}

// ---------------------------------------------------------------------------------------------
// Workflows.

#[test]
fn fuzz_join_replies() {
    let _serial = serial();
    let join = JobId::new();
    let complete = Value::Array(vec![
        bulk("c"),
        Value::Array(vec![
            bulk("t"),
            bulk("2"),
            bulk("n"),
            bulk("2"),
            bulk("1"),
            bulk("{\"b\":2}"),
            bulk("0"),
            bulk("{\"a\":1}"),
            bulk("x"),
            bulk("1700000060000"),
        ]),
    ]);
    let corpus = vec![
        complete,
        Value::Array(vec![bulk("w"), Value::Int(1)]),
        Value::Array(vec![bulk("f"), bulk("member 1 failed: boom")]),
    ];
    let n = run("join replies", replies(corpus), |b| {
        let Some(reply) = parsed(&b) else {
            return Ok(());
        };
        match bounded(b.len(), || fuzzing::join_reply(reply, join))? {
            Ok(JoinStatus::Complete(outputs)) => {
                prop_assert!(
                    outputs.len() <= b.len(),
                    "more outputs than the reply holds"
                )
            }
            Ok(_) => {}
            Err(e) => typed(&e)?,
        }
        Ok(())
    });
    assert!(n > 0);
}

#[test]
fn fuzz_workflow_records() {
    let _serial = serial();
    let record = |extra: &[(&str, &str)]| -> HashMap<String, Vec<u8>> {
        let mut r: HashMap<String, Vec<u8>> = [
            ("n", "nightly"),
            ("s", "0"),
            ("c", "1700000000000"),
            ("t", "86400000"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
        .collect();
        for (k, v) in extra {
            r.insert((*k).to_string(), v.as_bytes().to_vec());
        }
        r
    };
    let corpus = [
        record(&[]),
        record(&[("s", "1"), ("r", "{\"ok\":1}"), ("f", "1700000001000")]),
        record(&[("s", "2"), ("e", "boom"), ("f", "1700000001000")]),
    ];
    let values: Vec<Vec<u8>> = corpus.iter().flat_map(|r| r.values().cloned()).collect();
    let id = JobId::new();
    let n = run(
        "workflow records",
        (0..corpus.len(), edits(values)),
        |(at, edits)| {
            let mut r = corpus[at].clone();
            apply(&mut r, &edits);
            let len = size(&r);
            if let Err(e) = bounded(len, || fuzzing::workflow_record(id, r))? {
                typed(&e)?;
            }
            Ok(())
        },
    );
    assert!(n > 0);
}

// ---------------------------------------------------------------------------------------------
// Key-value values, history, events, cursors.

#[test]
fn fuzz_kv_values() {
    let _serial = serial();
    let corpus = vec![
        fuzzing::kv_stored(b"{\"user\":1}", NOW + 1000),
        fuzzing::kv_stored(b"", NOW - 1),
        fuzzing::kv_stored(&[1, 0, 0, 0], i64::MAX),
        b"42".to_vec(),
    ];
    let strategy = (
        prop_oneof![1 => bytes(64), 4 => mutated(corpus)],
        extreme_ints(),
    );
    let n = run("kv values", strategy, |(stored, now)| {
        let value = bounded(stored.len(), || fuzzing::kv_value(stored.clone(), now))?;
        if let Some(v) = value {
            if stored.len() >= 9 && stored[0] == 1 {
                prop_assert_eq!(&v[..], &stored[9..]);
            } else {
                prop_assert_eq!(v, stored);
            }
        }
        Ok(())
    });
    assert!(n > 0);
}

fn history_corpus() -> Vec<HashMap<String, String>> {
    let mut a = HistoryEntry::new(NOW, "q", "send");
    if let Some(c) = a.counts.get_mut("s") {
        *c = 12;
    }
    for ms in [0.0, 0.5, 3.0, 250.0, 9_000.0, 1e9] {
        a.run_ms.add(ms);
        a.wait_ms.add(ms / 2.0);
    }
    let mut b = HistoryEntry::new(NOW, "q", "other|task");
    if let Some(c) = b.counts.get_mut("e") {
        *c = 3;
    }
    b.run_ms.add(1.0);
    vec![
        fuzzing::history_fields(&[a.clone()]),
        fuzzing::history_fields(&[a, b]),
    ]
}

/// Regression: a history bucket holding two sketch buckets far apart (`R-2000000000` and
/// `R2000000000`, written by another process) made the reader allocate the whole span between
/// them (about 30 GB), and a count of `u64::MAX` overflowed the sketch's total.
#[test]
fn a_history_bucket_with_sketch_indexes_far_apart_reads_in_bounded_memory() {
    let hash: HashMap<String, String> = [
        ("R-2000000000|t", "1"),
        ("R2000000000|t", "1"),
        ("R3|t", &*u64::MAX.to_string()),
        ("R4|t", &*u64::MAX.to_string()),
        ("Rz|t", &*u64::MAX.to_string()),
        ("s|t", &*u64::MAX.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let query = HistoryQuery::new(Resolution::Minute, NOW, NOW + 60_000);
    let _serial = serial();
    let (entries, used) = allocated(|| fuzzing::history_bucket("q", NOW, hash, &query));
    assert!(used < 1 << 20, "{used} bytes allocated");
    assert_eq!(entries.len(), 1);
    let mut merged = entries[0].clone();
    for _ in 0..1000 {
        merged.merge(&entries[0]);
    }
    assert!(merged.run_ms.count() > 0);
}

#[test]
fn fuzz_history_buckets() {
    let _serial = serial();
    let corpus = history_corpus();
    let texts: Vec<Vec<u8>> = corpus
        .iter()
        .flat_map(|h| {
            h.iter()
                .flat_map(|(k, v)| [k.clone().into_bytes(), v.clone().into_bytes()])
        })
        .collect();
    let text = prop_oneof![
        4 => mutated(texts).prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
        1 => Just(u64::MAX.to_string()),
        1 => Just("R2147483647|send".to_string()),
        1 => Just("R-2147483648|send".to_string()),
    ];
    let strategy = (
        0..corpus.len(),
        proptest::collection::vec((text.clone(), text, any::<bool>()), 1..8),
    );
    let query = HistoryQuery::new(Resolution::Minute, NOW, NOW + 60_000);
    let n = run("history buckets", strategy, |(at, changes)| {
        let mut hash = corpus[at].clone();
        for (field, value, insert) in changes {
            if insert {
                hash.insert(field, value);
            } else {
                hash.remove(&field);
            }
        }
        let len: usize = hash.iter().map(|(k, v)| k.len() + v.len()).sum();
        let entries = bounded(len, || {
            fuzzing::history_bucket("q", NOW, hash.clone(), &query)
        })?;
        // Months of such buckets add up without overflow.
        for e in &entries {
            let mut total = e.clone();
            for _ in 0..200 {
                total.merge(e);
            }
            prop_assert!(total.run_ms.count() >= e.run_ms.count());
        }
        Ok(())
    });
    assert!(n > 0);
}

#[test]
fn fuzz_event_entries() {
    let _serial = serial();
    let event = |kind: &str| {
        let mut e = celeriac_core::backend::Event::new(kind, NOW, "boom");
        e.job = Some(JobId::new());
        e.queue = Some("q".into());
        e.encode().expect("encodes")
    };
    let corpus = vec![Value::Array(vec![
        Value::Array(vec![
            bulk("1700000000000-0"),
            Value::Array(vec![bulk("e"), bulk(event("job.failed"))]),
        ]),
        Value::Array(vec![
            bulk("1700000000001-0"),
            Value::Array(vec![bulk("e"), bulk(event("admin.purge"))]),
        ]),
    ])];
    let n = run("event entries", replies(corpus), |b| {
        let Some(reply) = parsed(&b) else {
            return Ok(());
        };
        let entries = bounded(b.len(), || fuzzing::event_entries(reply))?;
        for (id, body) in entries {
            let _ = bounded(body.len(), || {
                celeriac_core::backend::Event::decode_or_skip(id, &body)
            })?;
        }
        Ok(())
    });
    assert!(n > 0);
}

#[test]
fn fuzz_listing_cursors() {
    let _serial = serial();
    let corpus = vec![
        format!("{NOW}|000000000000012:{}", JobId::new()),
        format!("{NOW}|{}", JobId::new()),
        "1e308|x".to_string(),
    ];
    let n = run("cursors", mutated_text(corpus), |text| {
        match fuzzing::cursor(&text) {
            Ok((score, member)) => {
                prop_assert!(score.parse::<f64>().is_ok());
                prop_assert_eq!(format!("{score}|{member}"), text);
            }
            Err(e) => typed(&e)?,
        }
        Ok(())
    });
    assert!(n > 0);
}

// ---------------------------------------------------------------------------------------------
// URLs.

/// A URL for `c` in canonical form: what parsing it must give back.
fn url_of(c: &RedisConfig) -> String {
    let enc = |s: &str| -> String {
        s.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect()
    };
    let tls = if c.tls { "s" } else { "" };
    let auth = match (&c.username, &c.password) {
        (Some(u), Some(p)) => format!("{}:{}@", enc(u), enc(p)),
        (None, Some(p)) => format!(":{}@", enc(p)),
        (Some(u), None) => format!("{}@", enc(u)),
        (None, None) => String::new(),
    };
    let (scheme, place) = match &c.topology {
        Topology::Standalone { addr, db } => ("redis", format!("{addr}/{db}")),
        Topology::Cluster { nodes } => ("redis+cluster", nodes.join(",")),
        Topology::Sentinel { sentinels, service } => (
            "redis+sentinel",
            format!("{}/{service}", sentinels.join(",")),
        ),
    };
    let scheme = scheme.replacen("redis", &format!("redis{tls}"), 1);
    let mut query = vec![
        format!("prefix={}", c.prefix),
        format!("response_timeout_ms={}", c.response_timeout.as_millis()),
        format!("connect_timeout_ms={}", c.connect_timeout.as_millis()),
        format!("allow_eviction={}", c.allow_eviction),
        format!("allow_volatile={}", c.allow_volatile),
        format!("wait_replicas={}", c.wait_replicas),
        format!("wait_timeout_ms={}", c.wait_timeout.as_millis()),
        format!("dead_ttl_s={}", c.dead_ttl.as_secs()),
        format!("dead_max={}", c.dead_max),
    ];
    if let Some(ca) = &c.ca_file {
        query.push(format!("ca={}", enc(&ca.to_string_lossy())));
    }
    format!("{scheme}://{auth}{place}?{}", query.join("&"))
}

/// The settings that must survive a round trip through [`url_of`].
fn fields_of(c: &RedisConfig) -> String {
    format!(
        "{:?} tls={} ca={:?} user={:?} password={:?} prefix={:?} rt={:?} ct={:?} ev={} vol={} \
         wr={} wt={:?} dead={:?}/{}",
        c.topology,
        c.tls,
        c.ca_file,
        c.username,
        c.password,
        c.prefix,
        c.response_timeout,
        c.connect_timeout,
        c.allow_eviction,
        c.allow_volatile,
        c.wait_replicas,
        c.wait_timeout,
        c.dead_ttl,
        c.dead_max
    )
}

#[test]
fn fuzz_redis_urls() {
    let _serial = serial();
    let corpus: Vec<String> = [
        "redis://127.0.0.1:6379",
        "redis://app:s%40cret@127.0.0.1:7000/2?prefix=jobs",
        "rediss://:p%C3%A4ss%25word@cache.example.com:6380/0?ca=/etc/ssl/ca%20file.pem",
        "redis+cluster://u:p@a:7000,b:7001,c?tls=true&response_timeout_ms=250",
        "rediss+sentinel://:pw@s1:26379,s2:26380/mymaster?wait_replicas=1&wait_timeout_ms=500",
        "redis://[::1]:6379/3?allow_eviction=true&allow_volatile=1&dead_ttl_s=60&dead_max=10",
        "redis://h?connect_timeout_ms=1000&response_timeout_ms=2000&prefix=a:b",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    let n = run("redis urls", mutated_text(corpus), |url| {
        let parsed = bounded(url.len(), || RedisConfig::from_url(&url))?;
        let c = match parsed {
            Ok(c) => c,
            Err(e) => return typed(&e),
        };
        let addrs: Vec<&String> = match &c.topology {
            Topology::Standalone { addr, .. } => vec![addr],
            Topology::Cluster { nodes } => nodes.iter().collect(),
            Topology::Sentinel {
                sentinels, service, ..
            } => {
                prop_assert!(!service.is_empty());
                sentinels.iter().collect()
            }
        };
        prop_assert!(!addrs.is_empty());
        for a in addrs {
            let port = a.rsplit_once(':').map(|(_, p)| p.parse::<u16>());
            prop_assert!(matches!(port, Some(Ok(_))), "no port in {a:?}");
        }
        prop_assert!(
            !c.prefix.is_empty() && !c.prefix.contains(['{', '}']),
            "prefix {:?}",
            c.prefix
        );
        prop_assert!(!c.response_timeout.is_zero() && !c.connect_timeout.is_zero());
        prop_assert!(c.dead_max > 0);
        // The canonical URL of what was parsed parses to the same settings.
        let again = url_of(&c);
        match RedisConfig::from_url(&again) {
            Ok(d) => prop_assert_eq!(fields_of(&c), fields_of(&d), "{}", again),
            Err(e) => prop_assert!(false, "{again} does not parse again: {e}"),
        }
        Ok(())
    });
    assert!(n > 0);
}
