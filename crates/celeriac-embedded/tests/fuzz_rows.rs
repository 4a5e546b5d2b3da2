//! Fuzzing the SQLite row decoding: rows written straight into a real database file (as
//! another process, an older version, a hand edit or a damaged disk may leave them), with
//! mutated text and blobs, NULLs, values of the wrong type and huge numbers, then the real
//! operations run over them: claim, complete, reap, browse, stats, dead letters, unique keys,
//! limiter, breaker, key-value, history, events, processes, workflows.
//!
//! What must hold: no panic (the writer thread keeps answering), memory bounded by a small
//! multiple of what was stored, a typed error or the job in the dead letters with the reason,
//! and the healthy jobs beside the damaged ones processed as usual.
//!
//! Allocation is measured with a counting global allocator, so the tests of this binary take
//! a lock and run one at a time.

use celeriac_core::backend::{
    BreakerPolicy, BreakerSignal, BreakerStore, ClaimRequest, Claimed, Completion, EventLog,
    History, HistoryEntry, JobQuery, JoinArrival, JoinInput, KvEntry, KvStore, Outcome,
    ProcessRegistry, RateLimitStore, TaskLimits, WorkflowRecord, WorkflowState, WorkflowStore,
};
use celeriac_core::breaker::BreakerState;
use celeriac_core::job::{ErrorInfo, Job, JobId, JobState, Unique, UniqueFor};
use celeriac_core::limit::Quota;
use celeriac_core::sketch::Sketch;
use celeriac_core::{Broker, Error, QueueAdmin, ResultStore};
use celeriac_embedded::SqliteBackend;
use celeriac_testkit::fuzz::{mutated, mutated_text, run};
use proptest::prelude::*;
use rusqlite::types::{ToSqlOutput, Value};
use rusqlite::ToSql;
use stats_alloc::{Region, StatsAlloc, INSTRUMENTED_SYSTEM};
use std::alloc::System;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// One test at a time: the allocation counter is global.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

const NOW: i64 = 1_700_000_000_000;

/// The most one case may allocate: every value written is under a few kilobytes.
const CASE_BUDGET: u64 = 64 * 1024 * 1024;

/// A value written into a column, of any SQLite type.
#[derive(Debug, Clone)]
enum Val {
    Null,
    Int(i64),
    Real(f64),
    Text(String),
    Blob(Vec<u8>),
}

impl ToSql for Val {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::Owned(match self {
            Val::Null => Value::Null,
            Val::Int(i) => Value::Integer(*i),
            Val::Real(f) => Value::Real(*f),
            Val::Text(t) => Value::Text(t.clone()),
            Val::Blob(b) => Value::Blob(b.clone()),
        }))
    }
}

fn sketch_json() -> String {
    let mut s = Sketch::new();
    for i in 1..40 {
        s.add(f64::from(i) * 3.5);
    }
    serde_json::to_string(&s).unwrap_or_default()
}

/// Text as this crate stores it: headers, names, numbers, sketches, events.
fn text_corpus() -> Vec<String> {
    vec![
        r#"{"celeriac-flow":"{\"workflow\":\"0190a0a0-0000-7000-8000-000000000000\",\"step\":1}","traceparent":"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}"#.into(),
        "default".into(),
        "t".into(),
        "0".into(),
        "1700000000000".into(),
        sketch_json(),
        r#"{"id":"3","at":1700000000000,"kind":"dead","message":"gone","queue":"q","task":"t"}"#.into(),
        "quiet,stop".into(),
        "w".into(),
        "lease_expired".into(),
    ]
}

/// Bytes as this crate stores them: job ids, payloads, results.
fn blob_corpus() -> Vec<Vec<u8>> {
    vec![
        JobId::new().as_bytes().to_vec(),
        br#"{"user": 7, "items": [1, 2, 3]}"#.to_vec(),
        vec![0x92, 0x01, 0xa1, b'x'],
        Vec::new(),
    ]
}

fn int_edge() -> impl Strategy<Value = i64> {
    prop_oneof![
        Just(0i64),
        Just(-1),
        Just(i64::MAX),
        Just(i64::MIN),
        Just(u32::MAX as i64 + 1),
        Just(NOW),
        0i64..12,
        any::<i64>(),
    ]
}

fn val() -> impl Strategy<Value = Val> {
    prop_oneof![
        1 => Just(Val::Null),
        3 => int_edge().prop_map(Val::Int),
        1 => prop_oneof![Just(f64::NAN), Just(1e300), Just(-0.5), any::<f64>()].prop_map(Val::Real),
        3 => mutated_text(text_corpus()).prop_map(Val::Text),
        3 => mutated(blob_corpus()).prop_map(Val::Blob),
    ]
}

/// The columns of a job row.
const JOB_COLUMNS: &[&str] = &[
    "id",
    "queue",
    "task",
    "state",
    "priority",
    "run_at",
    "payload",
    "encoding",
    "attempts",
    "max_attempts",
    "expires_at",
    "soft_limit_ms",
    "hard_limit_ms",
    "headers",
    "parent_id",
    "root_id",
    "result_ttl_ms",
    "created_at",
    "started_at",
    "finished_at",
    "token",
    "lease_until",
    "worker",
    "result",
    "error_kind",
    "error_message",
    "error_attempt",
    "progress",
    "progress_message",
    "keep_until",
    "cancel_requested",
];

/// A real database file, the backend on it, and a second connection that writes rows
/// behind the backend's back.
struct Bench {
    rt: tokio::runtime::Runtime,
    _dir: tempfile::TempDir,
    backend: SqliteBackend,
    raw: rusqlite::Connection,
    cases: AtomicU64,
}

fn bench() -> Bench {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("fuzz.db");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let url = format!("sqlite://{}?synchronous=normal", path.display());
    let backend = rt.block_on(SqliteBackend::connect(&url)).expect("opens");
    let raw = rusqlite::Connection::open(&path).expect("a second connection");
    raw.busy_timeout(Duration::from_secs(10))
        .expect("busy timeout");
    Bench {
        rt,
        _dir: dir,
        backend,
        raw,
        cases: AtomicU64::new(0),
    }
}

/// A failure of the writer thread (it panicked, or stopped) is a finding; any other error
/// is a typed answer.
fn alive<T>(what: &str, r: &celeriac_core::Result<T>) -> Result<(), TestCaseError> {
    if let Err(Error::Closed) = r {
        return Err(TestCaseError::fail(format!(
            "{what}: the writer thread is gone"
        )));
    }
    Ok(())
}

/// `r`, which must be `Ok`: the operation is not stopped by the damaged rows.
fn must<T>(what: &str, r: celeriac_core::Result<T>) -> Result<T, TestCaseError> {
    r.map_err(|e| TestCaseError::fail(format!("{what} failed: {e}")))
}

impl Bench {
    /// Writes `value` into `column` of the rows `filter` selects (with `arg`); a write SQLite
    /// refuses (NOT NULL, UNIQUE) is skipped: such a row cannot exist.
    fn corrupt(&self, table: &str, column: &str, value: &Val, filter: &str, arg: &dyn ToSql) {
        let sql = format!("UPDATE {table} SET {column} = ?1 WHERE {filter}");
        let _ = self.raw.execute(&sql, rusqlite::params![value, arg]);
    }

    fn claim(&self, queue: &str, now: i64) -> celeriac_core::Result<Vec<Claimed>> {
        let mut limits = BTreeMap::new();
        limits.insert(
            "t".to_string(),
            TaskLimits {
                concurrency: Some(100),
                rate: None,
            },
        );
        self.rt.block_on(self.backend.claim(ClaimRequest {
            queues: vec![queue.to_string()],
            limit: 10,
            lease: Duration::from_secs(30),
            worker: "fuzz".into(),
            now,
            limits,
        }))
    }

    fn count(&self, queue: &str, state: i64) -> i64 {
        self.raw
            .query_row(
                "SELECT count(*) FROM celeriac_jobs WHERE queue = ?1 AND state = ?2",
                rusqlite::params![queue, state],
                |r| r.get(0),
            )
            .unwrap_or(-1)
    }

    /// What counts and lists a queue (its dead letters are read by the caller): each must
    /// answer.
    fn look(
        &self,
        queue: &str,
        ids: &[JobId],
        states: &[(usize, bool)],
    ) -> Result<(), TestCaseError> {
        let b = &self.backend;
        must("stats", self.rt.block_on(b.stats()))?;
        for &(state, newest_first) in states {
            let mut q = JobQuery::new(queue, JobState::ALL[state % JobState::ALL.len()]);
            q.newest_first = newest_first;
            must("a listing", self.rt.block_on(b.list_jobs(q, None, 20)))?;
        }
        must("next due", self.rt.block_on(b.next_due(vec![queue.into()])))?;
        for id in ids {
            alive("get", &self.rt.block_on(b.get(*id)))?;
        }
        Ok(())
    }

    /// Deletes what a case left, so the file stays small.
    fn clean(&self, queue: &str, seqs: &[i64]) {
        let _ = self
            .raw
            .execute("DELETE FROM celeriac_jobs WHERE queue = ?1", [queue]);
        for seq in seqs {
            let _ = self
                .raw
                .execute("DELETE FROM celeriac_jobs WHERE seq = ?1", [seq]);
        }
        let _ = self
            .raw
            .execute("DELETE FROM celeriac_unique WHERE queue = ?1", [queue]);
    }
}

/// When the damage is done to the damaged jobs.
#[derive(Debug, Clone, Copy)]
enum Phase {
    Pending,
    Active,
    Dead,
    Succeeded,
}

fn phase() -> impl Strategy<Value = Phase> {
    prop_oneof![
        3 => Just(Phase::Pending),
        2 => Just(Phase::Active),
        2 => Just(Phase::Dead),
        1 => Just(Phase::Succeeded),
    ]
}

fn job(queue: &str, i: usize, unique: Option<&str>) -> Job {
    let mut j = Job::new("t", format!("{{\"n\": {i}}}").into_bytes(), NOW);
    j.queue = queue.to_string();
    j.headers
        .insert("traceparent".into(), format!("00-{i:032x}-{i:016x}-01"));
    j.parent_id = Some(JobId::new());
    j.result_ttl = Some(Duration::from_secs(3600));
    j.unique = unique.map(|k| Unique {
        key: k.to_string(),
        lifetime: UniqueFor::UntilFinished,
    });
    j
}

fn succeed(c: &Claimed) -> Completion {
    Completion {
        lease: c.lease(),
        outcome: Outcome::Succeeded {
            result: Some(b"\"ok\"".to_vec()),
        },
    }
}

/// The healthy jobs among `claimed` succeed.
fn complete_healthy(
    b: &Bench,
    claimed: &[Claimed],
    healthy: &BTreeSet<JobId>,
) -> Result<(), TestCaseError> {
    let done: Vec<Completion> = claimed
        .iter()
        .filter(|c| healthy.contains(&c.job.id))
        .map(succeed)
        .collect();
    prop_assert_eq!(done.len(), healthy.len());
    let applied = must("complete", b.rt.block_on(b.backend.complete(done, NOW + 1)))?;
    prop_assert!(
        applied.iter().all(|d| *d),
        "healthy jobs complete: {:?}",
        applied
    );
    Ok(())
}

/// Three healthy jobs and two damaged ones in a fresh queue; the damage done while the two
/// wait, run, are dead or succeeded; then every operation on the queue.
fn job_case(
    b: &Bench,
    phase: Phase,
    damage: &[(usize, usize, Val)],
    counts: &[(usize, Val)],
    states: &[(usize, bool)],
) -> Result<(), TestCaseError> {
    let n = b.cases.fetch_add(1, Ordering::Relaxed);
    let queue = format!("q{n}");
    let key = format!("u{n}");
    let healthy: Vec<Job> = (0..3).map(|i| job(&queue, i, None)).collect();
    let victims: Vec<Job> = (3..5)
        .map(|i| job(&queue, i, (i == 3).then_some(key.as_str())))
        .collect();
    let healthy_ids: BTreeSet<JobId> = healthy.iter().map(|j| j.id).collect();
    let victim_ids: Vec<JobId> = victims.iter().map(|j| j.id).collect();
    let mut all = victims.clone();
    all.extend(healthy);
    must("enqueue", b.rt.block_on(b.backend.enqueue(all, NOW)))?;
    let seqs: Vec<i64> = victim_ids
        .iter()
        .map(|id| {
            b.raw
                .query_row(
                    "SELECT seq FROM celeriac_jobs WHERE id = ?1",
                    [&id.as_bytes()[..]],
                    |r| r.get(0),
                )
                .unwrap_or(-1)
        })
        .collect();

    let mut claimed: Vec<Claimed> = Vec::new();
    if !matches!(phase, Phase::Pending) {
        // All five run first; the two damaged ones end (or not) before the damage.
        claimed = must("claim", b.claim(&queue, NOW))?;
        prop_assert_eq!(claimed.len(), 5);
        let ends: Vec<Completion> = claimed
            .iter()
            .filter(|c| victim_ids.contains(&c.job.id))
            .filter_map(|c| match phase {
                Phase::Dead => Some(Completion {
                    lease: c.lease(),
                    outcome: Outcome::Dead {
                        error: ErrorInfo::new("boom", "it broke", 1),
                    },
                }),
                Phase::Succeeded => Some(succeed(c)),
                _ => None,
            })
            .collect();
        must("complete", b.rt.block_on(b.backend.complete(ends, NOW)))?;
    }

    for (victim, col, value) in damage {
        let column = JOB_COLUMNS[col % JOB_COLUMNS.len()];
        b.corrupt(
            "celeriac_jobs",
            column,
            value,
            "seq = ?2",
            &seqs[victim % 2],
        );
    }
    for (what, value) in counts {
        let column = ["state", "n", "queue"][what % 3];
        b.corrupt("celeriac_queue_counts", column, value, "queue = ?2", &queue);
    }
    for (what, value) in damage.iter().take(1).map(|d| (d.1, &d.2)) {
        let column = ["job_id", "mode", "until"][what % 3];
        b.corrupt("celeriac_unique", column, value, "key = ?2", &key);
    }

    let region = Region::new(GLOBAL);
    match phase {
        Phase::Pending => {
            // Every ready job is claimed or dead-lettered: nothing is left to stop the queue.
            // One claim takes them all (its limit is above the five jobs).
            claimed = must("claim", b.claim(&queue, NOW))?;
            prop_assert_eq!(b.count(&queue, 0), 0, "ready jobs left behind");
        }
        Phase::Active => {
            // The healthy jobs finish; the damaged jobs' workers are gone: the reaper meets
            // them.
            complete_healthy(b, &claimed, &healthy_ids)?;
            let report = must("reap", b.rt.block_on(b.backend.reap(NOW + 60_000)))?;
            for e in &report.ended {
                if let Some(err) = &e.error {
                    if err.kind == "undecodable_job" {
                        prop_assert!(err.message.contains("cannot be read"), "{}", err.message);
                    }
                }
            }
        }
        Phase::Dead | Phase::Succeeded => {}
    }
    let claimed_ids: BTreeSet<JobId> = claimed.iter().map(|c| c.job.id).collect();
    prop_assert!(
        healthy_ids.is_subset(&claimed_ids),
        "healthy jobs not claimed: {:?}",
        healthy_ids.difference(&claimed_ids).collect::<Vec<_>>()
    );
    if !matches!(phase, Phase::Active) {
        complete_healthy(b, &claimed, &healthy_ids)?;
    }

    for d in must(
        "dead letters",
        b.rt.block_on(b.backend.dead_letters(Some(queue.clone()), 50, 0)),
    )? {
        prop_assert!(!healthy_ids.contains(&d.job.id), "a healthy job died");
        if let Some(e) = d.error.as_ref().filter(|e| e.kind == "undecodable_job") {
            prop_assert!(e.message.contains("cannot be read"), "{}", e.message);
        }
        if d.job.task == "<unreadable>" {
            prop_assert!(d.job.headers.contains_key("celeriac-unreadable"));
        }
    }
    // Damaged dead letters retried come back as dead letters (or run, if they read).
    alive(
        "retry",
        &b.rt
            .block_on(b.backend.retry_dead(Some(victim_ids.clone()), NOW + 2)),
    )?;
    must("claim after retry", b.claim(&queue, NOW + 2))?;
    if !matches!(phase, Phase::Active) {
        // One reap a case: past every lease, retention and key window.
        must("reap", b.rt.block_on(b.backend.reap(NOW + 120_000)))?;
    }
    // The unique key of a damaged job does not stop new jobs of that key.
    let mut again = job(&queue, 9, Some(&key));
    again.id = JobId::new();
    must(
        "enqueue with the key",
        b.rt.block_on(b.backend.enqueue(vec![again], NOW + 3)),
    )?;
    b.look(&queue, &victim_ids, states)?;
    b.clean(&queue, &seqs);
    let used = region.change().bytes_allocated as u64;
    prop_assert!(used <= CASE_BUDGET, "one case allocated {} bytes", used);
    Ok(())
}

#[test]
fn fuzz_job_rows() {
    let _serial = serial();
    let b = bench();
    let n = run(
        "sqlite job rows",
        (
            phase(),
            proptest::collection::vec((0usize..2, 0usize..JOB_COLUMNS.len(), val()), 1..5),
            proptest::collection::vec((0usize..3, val()), 0..2),
            proptest::collection::vec((0usize..9, any::<bool>()), 2),
        ),
        |(phase, damage, counts, states)| job_case(&b, phase, &damage, &counts, &states),
    );
    assert!(n > 0);
}

fn policy() -> BreakerPolicy {
    BreakerPolicy {
        window_ms: 60_000,
        bucket_ms: 1_000,
        min_calls: 2,
        quorum: 1,
        failure_rate: 50.0,
        slow_rate: Some(80.0),
        probes: 2,
        probe_lease_ms: 30_000,
        open_ms: 1_000,
        backoff: 2.0,
        max_open_ms: 60_000,
        jitter_cut: 0.0,
    }
}

/// Limiter state and permits, breaker records, signals and probes: damaged rows are read
/// as no state, the calls go on.
fn limit_case(b: &Bench, damage: &[(usize, usize, Val)]) -> Result<(), TestCaseError> {
    let n = b.cases.fetch_add(1, Ordering::Relaxed);
    let key = format!("k{n}");
    let name = format!("b{n}");
    let quotas: Vec<Quota> = [
        "10/s; burst=5",
        "100/minute; algorithm=sliding_window",
        "3/2s; algorithm=fixed_window",
    ]
    .iter()
    .map(|q| q.parse().expect("parses"))
    .collect();
    let be = &b.backend;
    must(
        "check",
        b.rt.block_on(be.check_limits(&key, &quotas, 1, NOW)),
    )?;
    must(
        "acquire",
        b.rt.block_on(be.acquire_permit(&key, "h1", 2, Duration::from_secs(30), NOW)),
    )?;
    let signal = BreakerSignal {
        instance: "i1".into(),
        calls: 10,
        failures: 9,
        slow: 1,
    };
    must(
        "report",
        b.rt.block_on(be.breaker_report(&name, signal.clone(), &policy(), NOW)),
    )?;
    for (table, col, value) in damage {
        let (table, columns, filter, arg): (&str, &[&str], &str, &dyn ToSql) = match table % 5 {
            0 => (
                "celeriac_limits",
                &["a", "b", "c", "expires_at", "quota"],
                "key = ?2",
                &key,
            ),
            1 => (
                "celeriac_limit_permits",
                &["holder", "until"],
                "key = ?2",
                &key,
            ),
            2 => (
                "celeriac_breakers",
                &[
                    "state",
                    "open_until",
                    "trips",
                    "generation",
                    "since",
                    "probe_ok",
                    "probe_fail",
                    "expires_at",
                ],
                "name = ?2",
                &name,
            ),
            3 => (
                "celeriac_breaker_signals",
                &[
                    "epoch",
                    "instance",
                    "calls",
                    "failures",
                    "slow",
                    "expires_at",
                ],
                "name = ?2",
                &name,
            ),
            _ => (
                "celeriac_breaker_probes",
                &["token", "expires_at"],
                "name = ?2",
                &name,
            ),
        };
        b.corrupt(table, columns[col % columns.len()], value, filter, arg);
    }
    let region = Region::new(GLOBAL);
    for now in [NOW + 1, NOW + 5_000] {
        let d = must(
            "check",
            b.rt.block_on(be.check_limits(&key, &quotas, 1, now)),
        )?;
        prop_assert!(d.allowed || d.retry_after.is_some());
        must(
            "acquire",
            b.rt.block_on(be.acquire_permit(&key, "h2", 2, Duration::from_secs(30), now)),
        )?;
        must("release", b.rt.block_on(be.release_permit(&key, "h1", now)))?;
        must(
            "report",
            b.rt.block_on(be.breaker_report(&name, signal.clone(), &policy(), now)),
        )?;
        must(
            "probe",
            b.rt.block_on(be.breaker_probe(&name, "p1", &policy(), now)),
        )?;
        must(
            "probe done",
            b.rt.block_on(be.breaker_probe_done(&name, "p1", false, &policy(), now)),
        )?;
        must("status", b.rt.block_on(be.breaker_status(&name, now)))?;
    }
    must("reap", b.rt.block_on(be.reap(NOW + 10_000_000)))?;
    let used = region.change().bytes_allocated as u64;
    prop_assert!(used <= CASE_BUDGET, "one case allocated {} bytes", used);
    Ok(())
}

#[test]
fn fuzz_limiter_and_breaker_rows() {
    let _serial = serial();
    let b = bench();
    let n = run(
        "sqlite limiter and breaker rows",
        proptest::collection::vec((0usize..5, 0usize..8, val()), 1..5),
        |damage| limit_case(&b, &damage),
    );
    assert!(n > 0);
}

/// Cached values, broadcast messages, history buckets, events, process entries, workflow
/// records and joins, damaged: read leniently where they only summarize, a typed error
/// where they are the answer.
fn misc_case(b: &Bench, damage: &[(usize, usize, Val)]) -> Result<(), TestCaseError> {
    let n = b.cases.fetch_add(1, Ordering::Relaxed);
    let be = &b.backend;
    let key = format!("kv{n}");
    let queue = format!("h{n}");
    let proc_id = format!("p{n}");
    let wf = JobId::new();
    let join = JobId::new();
    must(
        "kv set",
        b.rt.block_on(be.kv_set(
            vec![KvEntry {
                key: key.clone(),
                value: b"v".to_vec(),
                ttl: Duration::from_secs(60),
            }],
            NOW,
        )),
    )?;
    must("publish", b.rt.block_on(be.kv_publish(&key, b"m".to_vec())))?;
    let mut entry = HistoryEntry::new(NOW, queue.clone(), "t");
    entry.counts.succeeded = 3;
    entry.run_ms.add(12.0);
    must("record", b.rt.block_on(be.record(vec![entry.clone()], NOW)))?;
    must(
        "workflow",
        b.rt.block_on(be.workflow_start(WorkflowRecord {
            id: wf,
            name: "w".into(),
            state: WorkflowState::Running,
            result: None,
            error: None,
            created_at: NOW,
            finished_at: None,
            ttl: Duration::from_secs(60),
        })),
    )?;
    let arrival = |index| JoinArrival {
        join,
        index,
        total: 2,
        input: JoinInput::Output(b"1".to_vec()),
        ttl: Duration::from_secs(60),
    };
    must("join", b.rt.block_on(be.join_arrive(arrival(0), NOW)))?;
    b.raw
        .execute(
            "INSERT INTO celeriac_processes (id, info, expires_at, commands) VALUES (?1, '{}', ?2, '')",
            rusqlite::params![proc_id, i64::MAX],
        )
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    b.raw
        .execute(
            "INSERT INTO celeriac_events (body) VALUES (?1)",
            [r#"{"id":"","at":1700000000000,"kind":"dead","message":"m"}"#],
        )
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    let wf_bytes = wf.as_bytes().to_vec();
    let join_bytes = join.as_bytes().to_vec();
    let last_event: i64 = b
        .raw
        .query_row("SELECT max(seq) FROM celeriac_events", [], |r| r.get(0))
        .unwrap_or(0);
    for (table, col, value) in damage {
        let (table, columns, filter, arg): (&str, &[&str], &str, &dyn ToSql) = match table % 8 {
            0 => ("celeriac_kv", &["value", "expires_at"], "key = ?2", &key),
            1 => (
                "celeriac_kv_events",
                &["message", "at", "channel"],
                "channel = ?2",
                &key,
            ),
            2 => (
                "celeriac_history",
                &[
                    "run_ms",
                    "wait_ms",
                    "succeeded",
                    "enqueued",
                    "task",
                    "start",
                ],
                "queue = ?2",
                &queue,
            ),
            3 => ("celeriac_events", &["body"], "seq = ?2", &last_event),
            4 => (
                "celeriac_processes",
                &["info", "commands", "expires_at"],
                "id = ?2",
                &proc_id,
            ),
            5 => (
                "celeriac_workflows",
                &[
                    "name",
                    "state",
                    "result",
                    "error",
                    "created_at",
                    "finished_at",
                    "ttl_ms",
                    "keep_until",
                ],
                "id = ?2",
                &wf_bytes,
            ),
            6 => (
                "celeriac_joins",
                &["total", "arrived", "failure", "keep_until"],
                "id = ?2",
                &join_bytes,
            ),
            _ => (
                "celeriac_join_members",
                &["idx", "output"],
                "join_id = ?2",
                &join_bytes,
            ),
        };
        b.corrupt(table, columns[col % columns.len()], value, filter, arg);
    }
    let region = Region::new(GLOBAL);
    let got = must(
        "kv get",
        b.rt.block_on(be.kv_get(vec![key.clone()], NOW + 1)),
    )?;
    prop_assert_eq!(got.len(), 1);
    alive("kv incr", &b.rt.block_on(be.kv_incr(&key, NOW + 1)))?;
    let sub = must("subscribe", b.rt.block_on(be.kv_subscribe(&key)))?;
    drop(sub);
    must("record", b.rt.block_on(be.record(vec![entry], NOW + 1)))?;
    let mut q = celeriac_core::backend::HistoryQuery::new(
        celeriac_core::backend::Resolution::Minute,
        NOW - 600_000,
        NOW + 60_000,
    );
    q.queue = Some(queue.clone());
    must("history", b.rt.block_on(be.history(q)))?;
    must("events", b.rt.block_on(be.events(None, 100)))?;
    must(
        "events after",
        b.rt.block_on(be.events(Some((last_event - 1).to_string()), 10)),
    )?;
    must("processes", b.rt.block_on(be.processes(NOW)))?;
    alive(
        "control",
        &b.rt
            .block_on(be.control(&proc_id, celeriac_core::backend::Control::Quiet, NOW)),
    )?;
    alive("workflow get", &b.rt.block_on(be.workflow_get(wf)))?;
    alive(
        "workflow finish",
        &b.rt.block_on(be.workflow_finish(
            wf,
            celeriac_core::backend::WorkflowEnd::Succeeded(b"1".to_vec()),
            NOW + 1,
        )),
    )?;
    alive("join", &b.rt.block_on(be.join_arrive(arrival(1), NOW + 1)))?;
    must("reap", b.rt.block_on(be.reap(NOW + 10_000_000)))?;
    // Each case sees its own damage only: what the reap does not sweep goes here.
    let _ = b
        .raw
        .execute("DELETE FROM celeriac_processes WHERE id = ?1", [&proc_id]);
    let _ = b
        .raw
        .execute("DELETE FROM celeriac_events WHERE seq = ?1", [last_event]);
    let used = region.change().bytes_allocated as u64;
    prop_assert!(used <= CASE_BUDGET, "one case allocated {} bytes", used);
    Ok(())
}

#[test]
fn fuzz_kv_history_and_workflow_rows() {
    let _serial = serial();
    let b = bench();
    let n = run(
        "sqlite kv, history, events, processes and workflow rows",
        proptest::collection::vec((0usize..8, 0usize..8, val()), 1..5),
        |damage| misc_case(&b, &damage),
    );
    assert!(n > 0);
}

// Regression cases: each found by the fuzz tests above on the code before it was fixed.

/// A fresh bench with one queue of jobs `n` jobs of task `t`; returns their ids.
fn queue_of_jobs(b: &Bench, queue: &str, n: usize) -> Vec<JobId> {
    let jobs: Vec<Job> = (0..n).map(|i| job(queue, i, None)).collect();
    let ids = jobs.iter().map(|j| j.id).collect();
    b.rt.block_on(b.backend.enqueue(jobs, NOW))
        .expect("enqueue");
    ids
}

fn set(b: &Bench, sql: &str, id: JobId) {
    let n = b
        .raw
        .execute(sql, [&id.as_bytes()[..]])
        .expect("the damage is written");
    assert_eq!(n, 1, "{sql}");
}

/// Headers that are not JSON (or a limit that is text) stopped every claim of the queue;
/// now the job is a dead letter with the reason, and the others are claimed.
#[test]
fn a_job_row_that_does_not_read_is_dead_lettered_and_the_queue_goes_on() {
    let _serial = serial();
    let b = bench();
    let ids = queue_of_jobs(&b, "q", 4);
    set(
        &b,
        "UPDATE celeriac_jobs SET headers = '{not json' WHERE id = ?1",
        ids[0],
    );
    set(
        &b,
        "UPDATE celeriac_jobs SET max_attempts = 'many' WHERE id = ?1",
        ids[1],
    );
    let claimed = b.claim("q", NOW).expect("the claim goes on");
    let got: BTreeSet<JobId> = claimed.iter().map(|c| c.job.id).collect();
    assert_eq!(got, ids[2..].iter().copied().collect(), "the readable jobs");
    let dead =
        b.rt.block_on(b.backend.dead_letters(Some("q".into()), 10, 0))
            .expect("dead letters list, unreadable rows and all");
    assert_eq!(dead.len(), 2, "{dead:?}");
    for d in &dead {
        let e = d.error.as_ref().expect("a reason");
        assert_eq!(e.kind, "undecodable_job");
        assert!(e.message.contains("cannot be read"), "{}", e.message);
    }
    let headers = dead.iter().find(|d| d.job.id == ids[0]).expect("listed");
    assert_eq!(headers.job.task, "<unreadable>");
    let why = &headers.job.headers["celeriac-unreadable"];
    assert!(
        why.contains("`headers`"),
        "the reason names the column: {why}"
    );
    let attempts = dead.iter().find(|d| d.job.id == ids[1]).expect("listed");
    let e = attempts.error.as_ref().expect("a reason");
    assert!(
        e.message.contains("`max_attempts` holds text"),
        "{}",
        e.message
    );
    let info =
        b.rt.block_on(b.backend.get(ids[0]))
            .expect("get")
            .expect("kept");
    assert_eq!(info.state, JobState::Dead);
    assert!(
        b.claim("q", NOW).expect("claim").is_empty(),
        "it does not come back"
    );
    b.rt.block_on(b.backend.stats()).expect("stats");
}

/// A leased job whose row stopped reading stopped every reap (of every queue); now it is a
/// dead letter with the reason, and the other expired leases are reaped.
#[test]
fn a_leased_row_that_does_not_read_is_dead_lettered_by_the_reaper() {
    let _serial = serial();
    let b = bench();
    let ids = queue_of_jobs(&b, "q", 3);
    assert_eq!(b.claim("q", NOW).expect("claim").len(), 3);
    set(
        &b,
        "UPDATE celeriac_jobs SET max_attempts = -3 WHERE id = ?1",
        ids[0],
    );
    set(
        &b,
        "UPDATE celeriac_jobs SET task = x'00ff' WHERE id = ?1",
        ids[1],
    );
    let report =
        b.rt.block_on(b.backend.reap(NOW + 60_000))
            .expect("the reap goes on");
    assert_eq!((report.dead, report.requeued), (2, 1), "{report:?}");
    for e in &report.ended {
        let err = e.error.as_ref().expect("a reason");
        assert_eq!(
            (err.kind.as_str(), e.task.as_str()),
            ("undecodable_job", "<unreadable>")
        );
    }
    let again = b.claim("q", NOW + 60_001).expect("claim");
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].job.id, ids[2]);
}

/// A count of a state no version has, or of a queue name that is a blob, failed the stats
/// of every queue; a scheduled job whose time is text failed them too.
#[test]
fn counts_and_times_that_do_not_read_leave_the_stats_working() {
    let _serial = serial();
    let b = bench();
    let mut later = job("q", 0, None);
    later.run_at = NOW + 60_000;
    let id = later.id;
    b.rt.block_on(b.backend.enqueue(vec![later], NOW))
        .expect("enqueue");
    queue_of_jobs(&b, "q", 1);
    b.raw
        .execute(
            "INSERT INTO celeriac_queue_counts (queue, state, n) VALUES ('q', 99, 1), \
             (x'ff', 0, 'many')",
            [],
        )
        .expect("write");
    set(
        &b,
        "UPDATE celeriac_jobs SET run_at = 'soon' WHERE id = ?1",
        id,
    );
    let stats = b.rt.block_on(b.backend.stats()).expect("stats");
    let q = stats.iter().find(|s| s.queue == "q").expect("the queue");
    assert_eq!(q.count(JobState::Pending), 1);
    b.rt.block_on(b.backend.next_due(vec!["q".into()]))
        .expect("next due");
    let page =
        b.rt.block_on(
            b.backend
                .list_jobs(JobQuery::new("q", JobState::Scheduled), None, 10),
        )
        .expect("listing");
    assert_eq!(page.jobs.len(), 1);
}

/// A unique key whose holder does not read (its id is not 16 bytes) refused every job of
/// that key; now it holds nothing.
#[test]
fn a_unique_key_whose_holder_does_not_read_holds_nothing() {
    let _serial = serial();
    let b = bench();
    let first = job("q", 0, Some("k"));
    b.rt.block_on(b.backend.enqueue(vec![first], NOW))
        .expect("enqueue");
    b.raw
        .execute(
            "UPDATE celeriac_unique SET job_id = x'0102' WHERE key = 'k'",
            [],
        )
        .expect("write");
    let second = job("q", 1, Some("k"));
    let id = second.id;
    let got =
        b.rt.block_on(b.backend.enqueue(vec![second], NOW))
            .expect("enqueue with the key");
    assert_eq!(got, vec![id], "the key went to the new job");
}

/// Limiter state that is text failed every decision of the key, and a count at the largest
/// integer overflowed; breaker signals too large to sum failed every report.
#[test]
fn damaged_limiter_and_breaker_rows_are_read_as_no_state() {
    let _serial = serial();
    let b = bench();
    let be = &b.backend;
    let quotas: Vec<Quota> = vec!["3/2s; algorithm=fixed_window".parse().expect("parses")];
    b.rt.block_on(be.check_limits("k", &quotas, 1, NOW))
        .expect("check");
    b.raw
        .execute("UPDATE celeriac_limits SET b = 'x' WHERE key = 'k'", [])
        .expect("write");
    let d =
        b.rt.block_on(be.check_limits("k", &quotas, 1, NOW + 1))
            .expect("check");
    assert!(d.allowed);
    b.raw
        .execute(
            "UPDATE celeriac_limits SET b = ?1 WHERE key = 'k'",
            [i64::MAX],
        )
        .expect("write");
    let d =
        b.rt.block_on(be.check_limits("k", &quotas, 1, NOW + 2))
            .expect("check");
    assert!(!d.allowed, "a full window");

    let signal = BreakerSignal {
        instance: "i1".into(),
        calls: 10,
        failures: 1,
        slow: 0,
    };
    let state =
        b.rt.block_on(be.breaker_report("b", signal.clone(), &policy(), NOW))
            .expect("report");
    assert_eq!(state.window.calls, 10);
    b.raw
        .execute(
            "INSERT INTO celeriac_breaker_signals VALUES ('b', ?1, 'i2', ?2, ?2, 0, ?3)",
            rusqlite::params![NOW / 1000, i64::MAX, i64::MAX],
        )
        .expect("write");
    b.raw
        .execute(
            "UPDATE celeriac_breakers SET open_until = 'later', trips = -1 WHERE name = 'b'",
            [],
        )
        .expect("write");
    let state =
        b.rt.block_on(be.breaker_report("b", signal, &policy(), NOW + 1))
            .expect("report");
    // The other instance's failures, too many to sum as integers, count: it opens.
    assert_eq!(state.state, BreakerState::Open, "{state:?}");
}

/// A cached value stored as text failed every read of the key (and counted against the
/// cache's L2); a history sketch whose buckets span the index range grew by gigabytes.
#[test]
fn a_text_value_reads_as_bytes_and_a_wild_sketch_stays_small() {
    let _serial = serial();
    let b = bench();
    let be = &b.backend;
    b.raw
        .execute(
            "INSERT INTO celeriac_kv (key, value, expires_at) VALUES ('k', 'text', NULL)",
            [],
        )
        .expect("write");
    let got =
        b.rt.block_on(be.kv_get(vec!["k".into()], NOW))
            .expect("kv get");
    assert_eq!(got, vec![Some(b"text".to_vec())]);

    let mut entry = HistoryEntry::new(NOW, "q", "t");
    entry.run_ms.add(5.0);
    b.rt.block_on(be.record(vec![entry.clone()], NOW))
        .expect("record");
    b.raw
        .execute(
            r#"UPDATE celeriac_history SET run_ms = '{"offset":-2147483648,"counts":[1],"zeros":0,"count":1,"sum":1.0,"min":1.0,"max":1.0}'"#,
            [],
        )
        .expect("write");
    let region = Region::new(GLOBAL);
    b.rt.block_on(be.record(vec![entry], NOW)).expect("record");
    let q = celeriac_core::backend::HistoryQuery::new(
        celeriac_core::backend::Resolution::Minute,
        NOW - 60_000,
        NOW + 60_000,
    );
    let rows = b.rt.block_on(be.history(q)).expect("history");
    let used = region.change().bytes_allocated;
    assert!(used < 16 * 1024 * 1024, "allocated {used} bytes");
    assert!(rows.iter().all(|r| r.run_ms.count() <= 2), "{rows:?}");
}

/// A task rate's reservation at the largest integer overflowed the claim (and held the task
/// for ever); now it counts as none.
#[test]
fn a_task_rate_reservation_out_of_reach_counts_as_none() {
    let _serial = serial();
    let b = bench();
    let ids = queue_of_jobs(&b, "q", 1);
    b.raw
        .execute(
            "INSERT INTO celeriac_rates (key, tat) VALUES ('q' || char(31) || 't', ?1)",
            [i64::MAX],
        )
        .expect("write");
    let mut limits = BTreeMap::new();
    limits.insert(
        "t".to_string(),
        TaskLimits {
            concurrency: None,
            rate: Some(celeriac_core::backend::Rate {
                count: 1,
                per: Duration::from_secs(1),
            }),
        },
    );
    let claimed =
        b.rt.block_on(b.backend.claim(ClaimRequest {
            queues: vec!["q".into()],
            limit: 10,
            lease: Duration::from_secs(30),
            worker: "w".into(),
            now: NOW,
            limits,
        }))
        .expect("claim");
    assert_eq!(claimed.iter().map(|c| c.job.id).collect::<Vec<_>>(), ids);
}
