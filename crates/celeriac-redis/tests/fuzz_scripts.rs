//! The queue's Lua scripts fed corrupted records on a real Redis: jobs are enqueued, one of
//! them is brought to a stage (waiting, scheduled, leased, retrying, dead) and its stored
//! record spoiled (fields mutated or deleted, numbers replaced by garbage, huge or negative
//! numbers, its key of another type, its lease or unique key spoiled), then the real
//! operations run on the queue (claim, complete, retry, fail, heartbeat, release, cancel,
//! reap, progress, browse, stats, dead letters and their retry, deletes, more enqueues) and the
//! queue is drained.
//!
//! The properties, every round:
//! - no panic, and no Lua runtime error escapes any operation;
//! - operations on the whole queue or on sound jobs never fail;
//! - the queue never stalls: after the drain nothing waits or runs, and every sound job ended
//!   (the ones nobody cancelled or failed succeeded), untouched by the spoiled one;
//! - the spoiled job never vanishes: it ended in a state its record shows (a malformed one as
//!   a dead letter with the reason), or it is still a dead letter whose key cannot be read.
//!
//! Fewer rounds than the in-process fuzzers (each runs a few dozen commands against Redis):
//! `celeriac_testkit::fuzz::cases()` / 2.

use celeriac_core::backend::{ClaimRequest, Claimed, Completion, JobQuery, LeaseRef, Outcome};
use celeriac_core::job::{ErrorInfo, Job, JobId, JobInfo, JobState, Priority, Unique, UniqueFor};
use celeriac_core::{Broker, QueueAdmin, ResultStore};
use celeriac_redis::RedisBackend;
use celeriac_testkit::fuzz::{cases, mutated, run};
use celeriac_testkit::resp::Connection;
use celeriac_testkit::RedisServer;
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

const NOW: i64 = 1_700_000_000_000;
const QUEUE: &str = "q";
const LEASE: Duration = Duration::from_secs(30);

fn key(id: JobId) -> String {
    format!("celeriac:{{{QUEUE}}}:job:{id}")
}

fn set_key(set: &str) -> String {
    format!("celeriac:{{{QUEUE}}}:{set}")
}

// ---------------------------------------------------------------------------------------------
// A round.

/// How far the spoiled job has come when it is spoiled.
#[derive(Debug, Clone, Copy)]
enum Stage {
    Waiting,
    Scheduled,
    Leased,
    Retrying,
    Dead,
}

/// One spoiling of the job's stored state.
#[derive(Debug, Clone)]
enum Spoil {
    /// A field set to these bytes.
    Set(&'static str, Vec<u8>),
    /// A field deleted.
    Delete(&'static str),
    /// The job's key replaced by a key of another type.
    WrongType(&'static str),
    /// Its entry in the lease table set to these bytes.
    Lease(Vec<u8>),
    /// Its unique key set to these bytes.
    UniqueKey(Vec<u8>),
}

/// What happens to the queue after the spoiling.
#[derive(Debug, Clone)]
enum Op {
    Claim,
    /// Complete every lease held, all the same way.
    Complete(Ending),
    Heartbeat,
    Release,
    /// Move the clock past every lease and reap.
    Reap,
    /// Cancel the spoiled job (true) or a sound one.
    Cancel(bool),
    Progress,
    RetryDead(bool),
    Stats,
    Browse(usize),
    DeadLetters,
    Get(bool),
    /// Enqueue another sound job with the spoiled job's unique key.
    EnqueueUnique,
    /// Delete the spoiled job (true) or a sound one.
    Delete(bool),
}

#[derive(Debug, Clone, Copy)]
enum Ending {
    Succeed,
    Retry,
    Fail,
    Dead,
    Cancelled,
    Defer,
}

#[derive(Debug, Clone)]
struct Round {
    stage: Stage,
    priority: u8,
    max_attempts: u32,
    result_ttl: bool,
    unique: bool,
    spoils: Vec<Spoil>,
    ops: Vec<Op>,
}

const FIELDS: [&str; 22] = [
    "d", "p", "s", "pr", "q", "r", "x", "a", "m", "tt", "w", "st", "f", "res", "ek", "em", "ea",
    "pg", "pgm", "cx", "uk", "um",
];

/// Values a field is set to: mutations of what fields really hold, and the numbers that broke
/// things before (see the regression tests below).
fn values() -> impl Strategy<Value = Vec<u8>> {
    let real: Vec<Vec<u8>> = [
        "0",
        "2",
        "6",
        "5",
        "000000000000017",
        "1700000000000",
        "4",
        "86400000",
        "worker-1",
        r#"{"task":"t","queue":"q","enc":0,"created":1700000000000}"#,
        "[1,2,3]",
        "1",
        "s",
        "f|k",
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect();
    prop_oneof![
        4 => mutated(real),
        3 => prop_oneof![
            Just(b"nan".to_vec()),
            Just(b"-nan".to_vec()),
            Just(b"inf".to_vec()),
            Just(b"-inf".to_vec()),
            Just(b"1e400".to_vec()),
            Just(b"1e300".to_vec()),
            Just(b"-1".to_vec()),
            Just(b"-99999".to_vec()),
            Just(b"99999999999999999999".to_vec()),
            Just(i64::MIN.to_string().into_bytes()),
            Just(i64::MAX.to_string().into_bytes()),
            Just(b"0x10".to_vec()),
            Just(b" 5".to_vec()),
            Just(b"1.5".to_vec()),
            Just(b"".to_vec()),
            Just(b"garbage".to_vec()),
        ],
        1 => celeriac_testkit::fuzz::bytes(16),
    ]
}

fn spoil() -> impl Strategy<Value = Spoil> {
    let field = (0..FIELDS.len()).prop_map(|i| FIELDS[i]);
    prop_oneof![
        8 => (field.clone(), values()).prop_map(|(f, v)| Spoil::Set(f, v)),
        3 => field.prop_map(Spoil::Delete),
        1 => prop_oneof![Just("string"), Just("list"), Just("set"), Just("zset")]
            .prop_map(Spoil::WrongType),
        1 => values().prop_map(Spoil::Lease),
        1 => values().prop_map(Spoil::UniqueKey),
    ]
}

fn ending() -> impl Strategy<Value = Ending> {
    prop_oneof![
        Just(Ending::Succeed),
        Just(Ending::Retry),
        Just(Ending::Fail),
        Just(Ending::Dead),
        Just(Ending::Cancelled),
        Just(Ending::Defer),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => Just(Op::Claim),
        3 => ending().prop_map(Op::Complete),
        1 => Just(Op::Heartbeat),
        1 => Just(Op::Release),
        2 => Just(Op::Reap),
        1 => any::<bool>().prop_map(Op::Cancel),
        1 => Just(Op::Progress),
        1 => any::<bool>().prop_map(Op::RetryDead),
        1 => Just(Op::Stats),
        1 => (0..JobState::ALL.len()).prop_map(Op::Browse),
        1 => Just(Op::DeadLetters),
        1 => any::<bool>().prop_map(Op::Get),
        1 => Just(Op::EnqueueUnique),
        1 => any::<bool>().prop_map(Op::Delete),
    ]
}

fn round() -> impl Strategy<Value = Round> {
    let stage = prop_oneof![
        Just(Stage::Waiting),
        Just(Stage::Scheduled),
        Just(Stage::Leased),
        Just(Stage::Retrying),
        Just(Stage::Dead),
    ];
    (
        stage,
        0u8..10,
        1u32..4,
        any::<bool>(),
        any::<bool>(),
        proptest::collection::vec(spoil(), 1..4),
        proptest::collection::vec(op(), 0..8),
    )
        .prop_map(
            |(stage, priority, max_attempts, result_ttl, unique, spoils, ops)| Round {
                stage,
                priority,
                max_attempts,
                result_ttl,
                unique,
                spoils,
                ops,
            },
        )
}

// ---------------------------------------------------------------------------------------------
// Running a round.

/// What a round keeps track of.
struct State {
    backend: RedisBackend,
    now: i64,
    target: JobId,
    sound: Vec<JobId>,
    held: Vec<Claimed>,
    /// Sound jobs an operation ended on purpose (cancelled, failed, dead): they need not
    /// succeed.
    ended_on_purpose: BTreeSet<JobId>,
    /// Jobs completed as succeeded (their records may be gone since: retention).
    succeeded: BTreeSet<JobId>,
    /// Whether the spoiled job's record was seen in a final state (it may be gone since:
    /// retention).
    seen_ended: bool,
    /// Jobs deleted on purpose.
    deleted: BTreeSet<JobId>,
}

fn claim_req(now: i64) -> ClaimRequest {
    ClaimRequest {
        queues: vec![QUEUE.to_string()],
        limit: 50,
        lease: LEASE,
        worker: "fuzz".into(),
        now,
        limits: Default::default(),
    }
}

/// A Lua runtime error (as opposed to an error a script or Redis raises on purpose, such as
/// WRONGTYPE): `user_script:<line>: ...` (not preceded by `@`), or a bad argument to
/// `redis.call`.
fn lua_runtime_error(message: &str) -> bool {
    message.contains("Lua redis lib")
        || message
            .match_indices("user_script:")
            .any(|(at, _)| !message[..at].ends_with('@'))
}

/// An operation's result: sound operations must succeed, and none may end in a Lua runtime
/// error.
fn judged<T>(
    what: &str,
    r: celeriac_core::Result<T>,
    must: bool,
) -> Result<Option<T>, TestCaseError> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(e) => {
            let message = e.to_string();
            prop_assert!(
                !lua_runtime_error(&message),
                "{what}: a Lua error escaped: {message}"
            );
            prop_assert!(!must, "{what} failed: {message}");
            Ok(None)
        }
    }
}

fn outcome(ending: Ending, now: i64) -> Outcome {
    let error = ErrorInfo::new("boom", "it failed", 1);
    match ending {
        Ending::Succeed => Outcome::Succeeded {
            result: Some(b"\"ok\"".to_vec()),
        },
        Ending::Retry => Outcome::Retry {
            at: now + 1_000,
            error,
        },
        Ending::Fail => Outcome::Failed { error },
        Ending::Dead => Outcome::Dead { error },
        Ending::Cancelled => Outcome::Cancelled,
        Ending::Defer => Outcome::Deferred { at: now + 1_000 },
    }
}

impl State {
    async fn claim(&mut self, must: bool) -> Result<(), TestCaseError> {
        if let Some(got) = judged("claim", self.backend.claim(claim_req(self.now)).await, must)? {
            self.held.extend(got);
        }
        Ok(())
    }

    /// Completes every held lease with `ending`; a sound job ended on purpose is noted.
    async fn complete(&mut self, ending: Ending) -> Result<(), TestCaseError> {
        let held = std::mem::take(&mut self.held);
        let done: Vec<Completion> = held
            .iter()
            .map(|c| Completion {
                lease: c.lease(),
                outcome: outcome(ending, self.now),
            })
            .collect();
        let applied = judged(
            "complete",
            self.backend.complete(done, self.now).await,
            true,
        )?
        .unwrap_or_default();
        for (c, ok) in held.iter().zip(applied) {
            if !ok {
                continue;
            }
            match ending {
                Ending::Succeed => {
                    self.succeeded.insert(c.job.id);
                }
                Ending::Fail | Ending::Dead | Ending::Cancelled => {
                    self.ended_on_purpose.insert(c.job.id);
                }
                Ending::Retry | Ending::Defer => {}
            }
        }
        Ok(())
    }

    fn leases(&self) -> Vec<LeaseRef> {
        self.held.iter().map(Claimed::lease).collect()
    }

    async fn op(&mut self, op: &Op, conn: &mut Connection) -> Result<(), TestCaseError> {
        match op {
            Op::Claim => self.claim(true).await?,
            Op::Complete(ending) => self.complete(*ending).await?,
            Op::Heartbeat => {
                let until = self.now + 60_000;
                judged(
                    "heartbeat",
                    self.backend.heartbeat(self.leases(), until, self.now).await,
                    true,
                )?;
                let asked = self.backend.cancel_requested(self.leases()).await;
                judged("cancel_requested", asked, true)?;
            }
            Op::Release => {
                let leases = self.leases();
                self.held.clear();
                judged(
                    "release",
                    self.backend.release(leases, self.now).await,
                    true,
                )?;
            }
            Op::Reap => {
                self.now += 10 * 60_000;
                self.held.clear();
                judged("reap", self.backend.reap(self.now).await, true)?;
            }
            Op::Cancel(spoiled) => {
                let id = if *spoiled { self.target } else { self.sound[0] };
                let r = self.backend.cancel(id, self.now).await;
                if let Some(report) = judged("cancel", r, !spoiled)? {
                    use celeriac_core::backend::CancelOutcome;
                    if !spoiled
                        && matches!(
                            report.outcome,
                            CancelOutcome::Cancelled | CancelOutcome::Requested
                        )
                    {
                        self.ended_on_purpose.insert(id);
                    }
                }
            }
            Op::Progress => {
                for c in self.held.clone() {
                    let r = self
                        .backend
                        .set_progress(c.lease(), 0.5, Some("half".into()))
                        .await;
                    judged("progress", r, c.job.id != self.target)?;
                }
            }
            Op::RetryDead(all) => {
                let ids = if *all { None } else { Some(vec![self.target]) };
                judged(
                    "retry_dead",
                    self.backend.retry_dead(ids, self.now).await,
                    true,
                )?;
            }
            Op::Stats => {
                judged("stats", self.backend.stats().await, true)?;
            }
            Op::Browse(state) => {
                let q = JobQuery {
                    queue: QUEUE.into(),
                    state: JobState::ALL[*state],
                    task: None,
                    error: None,
                    created_from: None,
                    created_until: None,
                    newest_first: false,
                };
                judged(
                    "list_jobs",
                    self.backend.list_jobs(q, None, 100).await,
                    true,
                )?;
            }
            Op::DeadLetters => {
                judged(
                    "dead_letters",
                    self.backend.dead_letters(None, 100, 0).await,
                    true,
                )?;
            }
            Op::Get(spoiled) => {
                let id = if *spoiled { self.target } else { self.sound[0] };
                judged("get", self.backend.get(id).await, !spoiled)?;
            }
            Op::Delete(spoiled) => {
                let id = if *spoiled { self.target } else { self.sound[0] };
                let r = self.backend.delete_jobs(QUEUE, vec![id]).await;
                if judged("delete_jobs", r, true)? == Some(1) {
                    self.deleted.insert(id);
                }
            }
            Op::EnqueueUnique => {
                let mut job = Job::new("t", b"more".to_vec(), self.now);
                job.queue = QUEUE.into();
                job.unique = Some(Unique {
                    key: "k".into(),
                    lifetime: UniqueFor::UntilFinished,
                });
                let r = self.backend.enqueue(vec![job.clone()], self.now).await;
                if let Some(ids) = judged("enqueue", r, true)? {
                    // A new job is sound and must run; a holder is a job already here.
                    if ids.first() == Some(&job.id) {
                        self.sound.push(job.id);
                    }
                }
            }
        }
        let _ = conn;
        Ok(())
    }

    /// Notes whether the spoiled job's record shows a final state now.
    async fn look(&mut self, conn: &mut Connection) {
        let state = conn.command(&["HGET", &key(self.target), "s"]).await;
        if let Ok(s) = state {
            if matches!(s.as_text().as_deref(), Some("4" | "5" | "6" | "7" | "8")) {
                self.seen_ended = true;
            }
        }
    }

    /// Runs the queue dry: reap past every lease, claim, succeed; until nothing waits or
    /// runs. Every call must succeed.
    async fn drain(&mut self, conn: &mut Connection) -> Result<(), TestCaseError> {
        for _ in 0..40 {
            self.now += LEASE.as_millis() as i64 + 1_000;
            self.held.clear();
            judged("reap (drain)", self.backend.reap(self.now).await, true)?;
            self.look(conn).await;
            self.claim(true).await?;
            self.complete(Ending::Succeed).await?;
            self.look(conn).await;
            if waiting(conn).await? == 0 {
                return Ok(());
            }
        }
        prop_assert!(
            false,
            "the queue did not drain: {} jobs left",
            waiting(conn).await?
        );
        Ok(())
    }
}

/// How many jobs wait or run (ready, scheduled, retrying, leased).
async fn waiting(conn: &mut Connection) -> Result<i64, TestCaseError> {
    let mut n = 0;
    for set in ["ready", "scheduled", "retry", "active"] {
        // Every finite score: the active set's keeper (score +inf) is not a job.
        let card = conn
            .command(&["ZCOUNT", &set_key(set), "-inf", "(+inf"])
            .await
            .map_err(|e| TestCaseError::fail(format!("ZCOUNT: {e}")))?;
        n += card.as_int().unwrap_or(0);
    }
    Ok(n)
}

/// Spoils the job's stored state.
async fn apply(conn: &mut Connection, id: JobId, spoil: &Spoil) -> Result<(), TestCaseError> {
    let k = key(id);
    let fail = |e: celeriac_testkit::Error| TestCaseError::fail(format!("spoiling: {e}"));
    // A field spoiling after the key became another type does not apply.
    let field_fail = |e: celeriac_testkit::Error| {
        if e.to_string().contains("WRONGTYPE") {
            Ok(celeriac_testkit::resp::Value::Nil)
        } else {
            Err(fail(e))
        }
    };
    match spoil {
        Spoil::Set(field, value) => {
            conn.command(&[b"HSET".as_slice(), k.as_bytes(), field.as_bytes(), value])
                .await
                .or_else(field_fail)?;
        }
        Spoil::Delete(field) => {
            conn.command(&["HDEL", &k, field])
                .await
                .or_else(field_fail)?;
        }
        Spoil::WrongType(kind) => {
            conn.command(&["DEL", &k]).await.map_err(fail)?;
            let cmd: &[&str] = match *kind {
                "string" => &["SET", &k, "not a hash"],
                "list" => &["RPUSH", &k, "a", "b"],
                "set" => &["SADD", &k, "a"],
                _ => &["ZADD", &k, "1", "a"],
            };
            conn.command(cmd).await.map_err(fail)?;
        }
        Spoil::Lease(value) => {
            let leases = set_key("leases");
            let held = conn
                .command(&["HEXISTS", &leases, &id.to_string()])
                .await
                .map_err(fail)?;
            if held.as_int() == Some(1) {
                conn.command(&[
                    b"HSET".as_slice(),
                    leases.as_bytes(),
                    id.to_string().as_bytes(),
                    value,
                ])
                .await
                .map_err(fail)?;
            }
        }
        Spoil::UniqueKey(value) => {
            let unique = format!("celeriac:{{{QUEUE}}}:unique:k");
            conn.command(&[b"SET".as_slice(), unique.as_bytes(), value])
                .await
                .map_err(fail)?;
        }
    }
    Ok(())
}

async fn in_set(conn: &mut Connection, set: &str, id: JobId) -> Result<bool, TestCaseError> {
    let score = conn
        .command(&["ZSCORE", &set_key(set), &id.to_string()])
        .await
        .map_err(|e| TestCaseError::fail(format!("ZSCORE: {e}")))?;
    Ok(score.as_text().is_some())
}

/// The job ended; a dead one says why (unless the spoiling rewrote its reason itself).
fn check_ended(info: &JobInfo, what: &str, reason: bool) -> Result<(), TestCaseError> {
    prop_assert!(
        info.state.is_terminal(),
        "{what} is {} after the drain",
        info.state
    );
    if reason && info.state == JobState::Dead {
        let error = info.error.as_ref();
        prop_assert!(
            error.is_some_and(|e| !e.kind.is_empty() && !e.message.is_empty()),
            "{what} is dead without a reason: {:?}",
            info.error
        );
    }
    Ok(())
}

async fn play(
    server: &RedisServer,
    conn: &mut Connection,
    round: &Round,
) -> Result<(), TestCaseError> {
    let fail = |what: &str, e: String| TestCaseError::fail(format!("{what}: {e}"));
    conn.command(&["FLUSHDB"])
        .await
        .map_err(|e| fail("FLUSHDB", e.to_string()))?;
    let backend = RedisBackend::connect(&server.url())
        .await
        .map_err(|e| fail("connect", e.to_string()))?;

    // The spoiled job and two sound ones.
    let delay = if matches!(round.stage, Stage::Scheduled) {
        5_000
    } else {
        0
    };
    let mut target = Job::new("t", b"spoiled".to_vec(), NOW + delay);
    target.queue = QUEUE.into();
    target.priority = Priority::clamped(round.priority);
    target.max_attempts = round.max_attempts;
    if round.result_ttl {
        target.result_ttl = Some(Duration::from_secs(60));
    }
    if round.unique {
        target.unique = Some(Unique {
            key: "k".into(),
            lifetime: UniqueFor::UntilFinished,
        });
    }
    let sound: Vec<Job> = (0..2)
        .map(|i| {
            let mut j = Job::new("t", vec![b'0' + i], NOW);
            j.queue = QUEUE.into();
            j.max_attempts = 5;
            j
        })
        .collect();
    let mut state = State {
        backend,
        now: NOW,
        target: target.id,
        sound: sound.iter().map(|j| j.id).collect(),
        held: Vec::new(),
        ended_on_purpose: BTreeSet::new(),
        succeeded: BTreeSet::new(),
        seen_ended: false,
        deleted: BTreeSet::new(),
    };
    let mut all = vec![target.clone()];
    all.extend(sound);
    judged("enqueue", state.backend.enqueue(all, NOW).await, true)?;

    // Bring the spoiled job to its stage (the sound ones are leased along with it).
    if matches!(round.stage, Stage::Leased | Stage::Retrying | Stage::Dead) {
        state.claim(true).await?;
        let ending = match round.stage {
            Stage::Retrying => Some(Ending::Retry),
            Stage::Dead => Some(Ending::Dead),
            _ => None,
        };
        if let Some(ending) = ending {
            let (mine, others): (Vec<_>, Vec<_>) =
                state.held.drain(..).partition(|c| c.job.id == target.id);
            state.held = mine;
            state.complete(ending).await?;
            // The target's dead ending is the stage, not an operation's choice.
            state.ended_on_purpose.remove(&target.id);
            state.held = others;
        }
    }
    for s in &round.spoils {
        apply(conn, target.id, s).await?;
    }
    state.look(conn).await;
    for op in &round.ops {
        state.op(op, conn).await?;
        state.look(conn).await;
    }
    state.drain(conn).await?;

    // Nothing stalls, every listing reads.
    prop_assert_eq!(waiting(conn).await?, 0);
    judged("stats", state.backend.stats().await, true)?;
    let dead = judged(
        "dead_letters",
        state.backend.dead_letters(None, 1000, 0).await,
        true,
    )?
    .unwrap_or_default();

    // Every sound job ended, untouched by the spoiled one; those nobody ended on purpose
    // succeeded.
    for id in state.sound.clone() {
        if state.deleted.contains(&id) {
            continue;
        }
        let info = judged("get (sound)", state.backend.get(id).await, true)?.flatten();
        let Some(info) = info else {
            prop_assert!(state.succeeded.contains(&id), "sound job {id} vanished");
            continue;
        };
        check_ended(&info, "a sound job", true)?;
        if !state.ended_on_purpose.contains(&id) {
            prop_assert_eq!(
                info.state,
                JobState::Succeeded,
                "sound job {}: {:?}",
                id,
                info.error
            );
        }
        if let Some(e) = &info.error {
            prop_assert!(
                !e.kind.contains("malformed") && !e.kind.contains("undecodable"),
                "a sound job was taken for spoiled: {:?}",
                e
            );
        }
    }

    // The spoiled job did not vanish.
    let target_id = target.id;
    match state.backend.get(target_id).await {
        Ok(Some(info)) => {
            let reason_spoiled = round
                .spoils
                .iter()
                .any(|s| matches!(s, Spoil::Set("ek" | "em", _) | Spoil::Delete("ek" | "em")));
            check_ended(&info, "the spoiled job", !reason_spoiled)?;
            if info.state == JobState::Dead {
                prop_assert!(
                    dead.iter().any(|d| d.job.id == target_id)
                        || !in_set(conn, "dead", target_id).await?,
                    "the spoiled job is dead but the dead letters do not list it"
                );
            }
        }
        // Gone: kept for its retention after it ended (which may have been spoiled to 0).
        Ok(None) => {
            let kept_for_nothing = round.spoils.iter().any(|s| match s {
                Spoil::Set("tt", v) => {
                    std::str::from_utf8(v)
                        .ok()
                        .and_then(|v| v.parse::<i64>().ok())
                        == Some(0)
                }
                _ => false,
            });
            prop_assert!(
                state.succeeded.contains(&target_id)
                    || state.seen_ended
                    || kept_for_nothing
                    || state.deleted.contains(&target_id),
                "the spoiled job vanished"
            );
        }
        Err(e) => {
            prop_assert!(!lua_runtime_error(&e.to_string()), "{e}");
            // Only a dead letter that no script had to touch since it was spoiled (its key of
            // another type, or its state unreadable) is left that way; it is still listed as a
            // dead letter.
            prop_assert!(
                in_set(conn, "dead", target_id).await?,
                "an unreadable job outside the dead letters: {e}"
            );
            prop_assert!(
                dead.iter().any(|d| d.job.id == target_id),
                "the dead letters do not list it"
            );
        }
    }
    Ok(())
}

/// The shared server of this binary's rounds, and a connection to spoil with.
struct Bench {
    rt: tokio::runtime::Runtime,
    server: RedisServer,
    conn: Mutex<Connection>,
}

fn bench() -> Bench {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let (server, conn) = rt.block_on(async {
        let server = RedisServer::start().await.expect("redis-server starts");
        let conn = server.connect().await.expect("connects");
        (server, conn)
    });
    Bench {
        rt,
        server,
        conn: Mutex::new(conn),
    }
}

impl Bench {
    fn play(&self, round: &Round) -> Result<(), TestCaseError> {
        let mut conn = self
            .conn
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        self.rt.block_on(play(&self.server, &mut conn, round))
    }
}

/// Plays one case in [`EVERY`] (each costs a Redis round trip a command): `cases() / EVERY`
/// rounds of Redis a run. Once one fails, every case is played, so the failure shrinks.
const EVERY: u64 = 2;

#[test]
fn fuzz_queue_scripts_on_spoiled_records() {
    let bench = bench();
    let seen = AtomicU64::new(0);
    let played = AtomicU64::new(0);
    let failing = AtomicBool::new(false);
    run("queue scripts", round(), |r| {
        let n = seen.fetch_add(1, Ordering::Relaxed);
        if !n.is_multiple_of(EVERY) && !failing.load(Ordering::Relaxed) {
            return Ok(());
        }
        played.fetch_add(1, Ordering::Relaxed);
        let result = bench.play(&r);
        if result.is_err() {
            failing.store(true, Ordering::Relaxed);
        }
        result
    });
    let played = played.load(Ordering::Relaxed);
    assert!(
        played >= u64::from(cases()) / EVERY,
        "only {played} rounds were played"
    );
    if celeriac_testkit::fuzz::duration().is_some() {
        eprintln!("fuzz `queue scripts`: {played} rounds played on Redis");
    }
}

// ---------------------------------------------------------------------------------------------
// Regression cases: what the fuzzing found, each with its minimal input.

/// A server, a backend on it, and a connection to spoil records with.
async fn setup() -> (RedisServer, RedisBackend, Connection) {
    let server = RedisServer::start().await.expect("redis-server starts");
    let backend = RedisBackend::connect(&server.url())
        .await
        .expect("connects");
    let conn = server.connect().await.expect("connects");
    (server, backend, conn)
}

/// `n` jobs of the test queue, enqueued at `NOW`.
async fn enqueue(backend: &RedisBackend, n: u8) -> Vec<JobId> {
    let jobs: Vec<Job> = (0..n)
        .map(|i| {
            let mut j = Job::new("t", vec![b'0' + i], NOW);
            j.queue = QUEUE.into();
            j
        })
        .collect();
    let ids = jobs.iter().map(|j| j.id).collect();
    backend.enqueue(jobs, NOW).await.expect("enqueue");
    ids
}

async fn hset(conn: &mut Connection, id: JobId, field: &str, value: &str) {
    conn.command(&["HSET", &key(id), field, value])
        .await
        .expect("HSET");
}

async fn claim_all(backend: &RedisBackend, now: i64) -> Vec<Claimed> {
    backend
        .claim(claim_req(now))
        .await
        .expect("the claim succeeds")
}

/// `n` jobs of the test queue, enqueued, claimed and ended as dead letters at `NOW`.
async fn dead_letters(backend: &RedisBackend, n: u8) -> Vec<JobId> {
    let ids = enqueue(backend, n).await;
    let done = claim_all(backend, NOW)
        .await
        .iter()
        .map(|c| Completion {
            lease: c.lease(),
            outcome: Outcome::Dead {
                error: ErrorInfo::new("boom", "dead", 1),
            },
        })
        .collect();
    backend.complete(done, NOW).await.expect("dead");
    ids
}

async fn state_of(backend: &RedisBackend, id: JobId) -> JobInfo {
    backend.get(id).await.expect("get").expect("the job exists")
}

/// The job is a dead letter whose reason names `what` (a field, a type).
async fn assert_dead_naming(backend: &RedisBackend, id: JobId, what: &str) {
    let dead = state_of(backend, id).await;
    assert_eq!(dead.state, JobState::Dead);
    assert!(reason(&dead).contains(what), "{}", reason(&dead));
}

fn reason(info: &JobInfo) -> String {
    info.error
        .as_ref()
        .map(|e| format!("{}: {}", e.kind, e.message))
        .unwrap_or_default()
}

/// `tonumber('nan')` is NaN in Lua, so a priority of `nan` passed the check and made every
/// reap of the queue fail at ZADD ("value is not a valid float"), the expired lease first in
/// line each time: no lease of the queue was ever recovered again.
#[tokio::test]
async fn a_leased_job_with_a_priority_of_nan_does_not_stop_the_reaper() {
    let (_server, backend, mut conn) = setup().await;
    let ids = enqueue(&backend, 2).await;
    assert_eq!(claim_all(&backend, NOW).await.len(), 2);
    hset(&mut conn, ids[0], "pr", "nan").await;
    let later = NOW + 60_000;
    let report = backend.reap(later).await.expect("the reap succeeds");
    assert_eq!((report.dead, report.requeued), (1, 1), "{report:?}");
    assert_dead_naming(&backend, ids[0], "`pr`").await;
    let again = claim_all(&backend, later).await;
    assert_eq!(
        again.iter().map(|c| c.job.id).collect::<Vec<_>>(),
        vec![ids[1]]
    );
}

/// A result ttl of `1e300` (or `nan`) reached PEXPIRE as a number Redis refuses, failing the
/// whole completion batch, the sound jobs' completions with it; a negative one made PEXPIRE
/// delete the record the moment its job succeeded.
#[tokio::test]
async fn a_result_ttl_of_1e300_fails_no_completion_batch() {
    let (_server, backend, mut conn) = setup().await;
    let ids = enqueue(&backend, 3).await;
    let claimed = claim_all(&backend, NOW).await;
    assert_eq!(claimed.len(), 3);
    hset(&mut conn, ids[0], "tt", "1e300").await;
    hset(&mut conn, ids[1], "tt", "-1").await;
    let done = claimed
        .iter()
        .map(|c| Completion {
            lease: c.lease(),
            outcome: Outcome::Succeeded {
                result: Some(b"1".to_vec()),
            },
        })
        .collect();
    let applied = backend
        .complete(done, NOW)
        .await
        .expect("the batch is recorded");
    assert_eq!(applied, vec![true; 3]);
    for id in &ids {
        let info = state_of(&backend, *id).await;
        assert_eq!(info.state, JobState::Succeeded, "{id}");
        assert_eq!(info.result.as_deref(), Some(&b"1"[..]));
    }
}

/// A job's key holding a string (or a list, a set...) instead of a hash made HMGET fail with
/// WRONGTYPE inside the claim script: every claim of the queue failed, every job stalled.
#[tokio::test]
async fn a_job_key_of_another_type_is_dead_lettered_and_the_queue_goes_on() {
    let (_server, backend, mut conn) = setup().await;
    let ids = enqueue(&backend, 3).await;
    conn.command(&["DEL", &key(ids[0])]).await.expect("DEL");
    conn.command(&["SET", &key(ids[0]), "not a hash"])
        .await
        .expect("SET");
    let claimed = claim_all(&backend, NOW).await;
    let mut got: Vec<_> = claimed.iter().map(|c| c.job.id).collect();
    got.sort();
    let mut sound = ids[1..].to_vec();
    sound.sort();
    assert_eq!(got, sound);
    let dead = state_of(&backend, ids[0]).await;
    assert_eq!(dead.state, JobState::Dead);
    assert!(
        reason(&dead).contains("holds a string"),
        "{}",
        reason(&dead)
    );

    // The same while leased: the reaper, the heartbeat's cancel check, release and complete
    // each went on for the other jobs.
    conn.command(&["DEL", &key(ids[1])]).await.expect("DEL");
    conn.command(&["RPUSH", &key(ids[1]), "x"])
        .await
        .expect("RPUSH");
    let leases: Vec<LeaseRef> = claimed.iter().map(Claimed::lease).collect();
    backend
        .cancel_requested(leases.clone())
        .await
        .expect("cancel check");
    let done = claimed
        .iter()
        .map(|c| Completion {
            lease: c.lease(),
            outcome: Outcome::Succeeded {
                result: Some(b"1".to_vec()),
            },
        })
        .collect();
    assert_eq!(
        backend.complete(done, NOW).await.expect("complete"),
        vec![true, true]
    );
    let listed = backend
        .dead_letters(None, 10, 0)
        .await
        .expect("dead letters list");
    assert_eq!(listed.len(), 2, "{listed:?}");
    assert_eq!(state_of(&backend, ids[2]).await.state, JobState::Succeeded);
}

/// Retrying a dead letter whose priority is not a number failed after its first writes (its
/// state already `0`); the next retry then took it out of the dead letters without queueing
/// it: the job vanished.
#[tokio::test]
async fn retrying_a_dead_letter_with_a_garbage_priority_queues_it() {
    let (_server, backend, mut conn) = setup().await;
    let ids = dead_letters(&backend, 1).await;
    hset(&mut conn, ids[0], "pr", "garbage").await;
    assert_eq!(
        backend
            .retry_dead(Some(ids.clone()), NOW)
            .await
            .expect("retry"),
        1
    );
    assert_eq!(backend.retry_dead(None, NOW).await.expect("retry all"), 0);
    let again = claim_all(&backend, NOW + 1).await;
    assert_eq!(again.len(), 1, "the retried job runs");
    assert_eq!(again[0].job.id, ids[0]);
}

/// A dead letter whose record's state was rewritten to pending (`HSET s 0`, nothing else):
/// `get` read it as a pending job although no set would ever give it to a worker. The sets
/// are where the scripts find work, so it reads as dead, saying why, and is listed as one.
#[tokio::test]
async fn a_dead_letter_whose_state_reads_pending_is_reported_dead() {
    let (_server, backend, mut conn) = setup().await;
    let ids = dead_letters(&backend, 1).await;
    assert_eq!(state_of(&backend, ids[0]).await.state, JobState::Dead);
    hset(&mut conn, ids[0], "s", "0").await;
    let info = state_of(&backend, ids[0]).await;
    assert_eq!(info.state, JobState::Dead);
    let note = info
        .job
        .headers
        .get("celeriac-unreadable")
        .cloned()
        .unwrap_or_default();
    assert!(note.contains("dead"), "the discrepancy is named: {note}");
    let listed = backend
        .dead_letters(None, 10, 0)
        .await
        .expect("dead letters list");
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert!(
        claim_all(&backend, NOW + 1).await.is_empty(),
        "nothing runs it"
    );
}

/// An id used again after its dead letter's record expired, while the dead set still names
/// it: the new record, which its own set (ready) holds, is reported as it is.
#[tokio::test]
async fn an_id_used_again_reads_as_its_new_record_says() {
    let (_server, backend, mut conn) = setup().await;
    let ids = dead_letters(&backend, 1).await;
    // The record's retention ran out; the set's entry is swept later.
    conn.command(&["DEL", &key(ids[0])]).await.expect("DEL");
    assert!(backend.get(ids[0]).await.expect("get").is_none());
    let mut again = Job::new("t", b"again".to_vec(), NOW);
    again.queue = QUEUE.into();
    again.id = ids[0];
    backend.enqueue(vec![again], NOW).await.expect("enqueue");
    let dead = conn
        .command(&["ZSCORE", &set_key("dead"), &ids[0].to_string()])
        .await
        .expect("ZSCORE");
    assert!(
        matches!(dead, celeriac_testkit::resp::Value::Bulk(_)),
        "the precondition: the dead set still names the id ({dead:?})"
    );
    let info = state_of(&backend, ids[0]).await;
    assert_eq!(info.state, JobState::Pending);
    assert!(!info.job.headers.contains_key("celeriac-unreadable"));
    let run = claim_all(&backend, NOW + 1).await;
    assert_eq!(run.len(), 1, "it runs");
}

/// A waiting job whose sequence `q` was missing or garbage: cancelling it failed in Lua
/// (`string.format` of nil), or, with `q` deleted, marked it cancelled but left it in line,
/// so a worker claimed and ran the cancelled job. Deleting it failed the same way.
#[tokio::test]
async fn cancelling_a_waiting_job_whose_sequence_is_spoiled_takes_it_out_of_line() {
    let (_server, backend, mut conn) = setup().await;
    let ids = enqueue(&backend, 3).await;
    hset(&mut conn, ids[0], "q", "garbage").await;
    conn.command(&["HDEL", &key(ids[1]), "q"])
        .await
        .expect("HDEL");
    for id in &ids[..2] {
        let report = backend.cancel(*id, NOW).await.expect("cancel");
        assert_eq!(
            report.outcome,
            celeriac_core::backend::CancelOutcome::Cancelled
        );
    }
    let claimed = claim_all(&backend, NOW).await;
    assert_eq!(
        claimed.iter().map(|c| c.job.id).collect::<Vec<_>>(),
        vec![ids[2]]
    );
    assert_eq!(state_of(&backend, ids[0]).await.state, JobState::Cancelled);

    let more = enqueue(&backend, 1).await;
    conn.command(&["HDEL", &key(more[0]), "q"])
        .await
        .expect("HDEL");
    assert_eq!(
        backend
            .delete_jobs(QUEUE, more.clone())
            .await
            .expect("delete"),
        1
    );
    assert!(claim_all(&backend, NOW).await.is_empty());
}

/// Lua's `tonumber` reads `5\t` as 5, so a run-at with a trailing tab passed the claim's check
/// and went into the tab-separated claim reply, shifting its fields: the worker refused the
/// whole reply, and every job of that claim (already leased) waited for its lease to run out,
/// again after each reap.
#[tokio::test]
async fn a_run_at_with_a_trailing_tab_is_dead_lettered_and_the_claim_goes_on() {
    let (_server, backend, mut conn) = setup().await;
    let ids = enqueue(&backend, 3).await;
    hset(&mut conn, ids[0], "r", "1700000000000\t").await;
    let claimed = claim_all(&backend, NOW).await;
    assert_eq!(claimed.len(), 2);
    assert_dead_naming(&backend, ids[0], "`r`").await;
}

/// A unique key holding another type, or a window without its end (`w|<id>`), made every
/// enqueue with that key fail in Lua (WRONGTYPE, arithmetic on nil), and the whole batch
/// with it.
#[tokio::test]
async fn a_spoiled_unique_key_fails_no_enqueue() {
    let (_server, backend, mut conn) = setup().await;
    let unique = format!("celeriac:{{{QUEUE}}}:unique:k");
    for spoil in [
        &["SET", &unique, "w|nowhere"][..],
        &["DEL", &unique],
        &["RPUSH", &unique, "x"],
    ] {
        conn.command(spoil).await.expect("spoil");
        let mut job = Job::new("t", Vec::new(), NOW);
        job.queue = QUEUE.into();
        job.unique = Some(Unique {
            key: "k".into(),
            lifetime: UniqueFor::UntilFinished,
        });
        let sound = enqueue(&backend, 0).await;
        assert!(sound.is_empty());
        let ids = backend
            .enqueue(vec![job.clone()], NOW)
            .await
            .expect("enqueue");
        assert_eq!(
            ids,
            vec![job.id],
            "the spoiled key holds nothing: the job takes it"
        );
        conn.command(&["DEL", &unique]).await.expect("DEL");
    }
}

/// One dead letter whose state field did not read, or whose key held another type, made the
/// whole dead-letter listing (and a listing of the state) fail; one without its spec was not
/// listed at all, though a dead letter with its reason.
#[tokio::test]
async fn one_unreadable_dead_letter_does_not_hide_the_others() {
    let (_server, backend, mut conn) = setup().await;
    let ids = dead_letters(&backend, 4).await;
    hset(&mut conn, ids[0], "s", "garbage").await;
    conn.command(&["DEL", &key(ids[1])]).await.expect("DEL");
    conn.command(&["SADD", &key(ids[1]), "x"])
        .await
        .expect("SADD");
    conn.command(&["HDEL", &key(ids[2]), "d"])
        .await
        .expect("HDEL");
    let listed = backend
        .dead_letters(None, 10, 0)
        .await
        .expect("the listing reads");
    assert_eq!(listed.len(), 4, "{listed:?}");
    for info in &listed {
        assert_eq!(info.state, JobState::Dead);
        if info.job.id != ids[3] {
            assert!(
                info.job.headers.contains_key("celeriac-unreadable"),
                "{info:?}"
            );
        }
    }
    let q = JobQuery {
        queue: QUEUE.into(),
        state: JobState::Dead,
        task: None,
        error: None,
        created_from: None,
        created_until: None,
        newest_first: false,
    };
    let page = backend
        .list_jobs(q, None, 10)
        .await
        .expect("the page reads");
    assert_eq!(page.jobs.len(), 4);
    let no_spec = state_of(&backend, ids[2]).await;
    assert_eq!(reason(&no_spec), "boom: dead");
}

// ---------------------------------------------------------------------------------------------
// Regression cases of the other scripts: breakers, limiters, permits, joins, workflows, the
// leader lease, history and locks.

fn policy() -> celeriac_core::backend::BreakerPolicy {
    celeriac_core::backend::BreakerPolicy {
        window_ms: 60_000,
        bucket_ms: 1_000,
        min_calls: 10,
        quorum: 1,
        failure_rate: 50.0,
        slow_rate: None,
        probes: 1,
        probe_lease_ms: 1_000,
        open_ms: 5_000,
        backoff: 2.0,
        max_open_ms: 60_000,
        jitter_cut: 0.0,
    }
}

/// A breaker state code that is none (`7`, `nan`) came back from every breaker script and
/// failed every call with a codec error until the key's TTL; its state key holding another
/// type failed every call with WRONGTYPE; `nan` in its numbers spread into every reply.
#[tokio::test]
async fn a_spoiled_breaker_state_reads_as_closed() {
    use celeriac_core::backend::BreakerSignal;
    use celeriac_core::breaker::BreakerState;
    use celeriac_core::BreakerStore;
    let (_server, backend, mut conn) = setup().await;
    let state = "celeriac:{celeriac:breaker:b}:state";
    let signals = "celeriac:{celeriac:breaker:b}:signals";
    let signal = BreakerSignal {
        instance: "i".into(),
        calls: 1,
        failures: 0,
        slow: 0,
    };
    for spoil in [
        &["HSET", state, "st", "7", "until", "nan", "exp", "inf"][..],
        &["HSET", state, "st", "nan", "trips", "1e400", "gen", "-inf"],
        &["SET", state, "not a hash"],
        &["SET", signals, "not a hash"],
    ] {
        conn.command(&["DEL", state, signals]).await.expect("DEL");
        conn.command(spoil).await.expect("spoil");
        let s = backend
            .breaker_report("b", signal.clone(), &policy(), NOW)
            .await
            .expect("the report reads");
        assert_eq!(s.state, BreakerState::Closed, "{spoil:?}");
        assert!(s.open_until.abs() < 1 << 53, "{s:?}");
        backend
            .breaker_status("b", NOW)
            .await
            .expect("the status reads");
    }
}

/// A limiter state holding NaN or an infinity (or the text `inf`) denied its key forever: a
/// denial writes nothing, so a key without a TTL never healed. A state key of another type
/// failed every decision of its batch, other keys' too.
#[tokio::test]
async fn a_limiter_state_of_nan_does_not_deny_forever() {
    use celeriac_core::limit::Quota;
    use celeriac_core::RateLimitStore;
    let (_server, backend, mut conn) = setup().await;
    let quota = Quota::per_second(5);
    let key = format!("celeriac:{{rl:k}}:{}", quota.state_id());
    let nan: Vec<u8> = [f64::NAN, 0.0, 0.0, f64::INFINITY]
        .iter()
        .flat_map(|x| x.to_le_bytes())
        .collect();
    for spoil in [nan, b"inf".to_vec(), b"nan".to_vec()] {
        conn.command(&[b"SET".as_slice(), key.as_bytes(), &spoil])
            .await
            .expect("SET");
        let d = backend
            .check_limits("k", std::slice::from_ref(&quota), 1, NOW)
            .await
            .expect("decides");
        assert!(d.allowed, "a spoiled state reads as fresh: {spoil:?}");
    }
    conn.command(&["DEL", &key]).await.expect("DEL");
    conn.command(&["RPUSH", &key, "x"]).await.expect("RPUSH");
    let d = backend
        .check_limits("k", std::slice::from_ref(&quota), 1, NOW)
        .await
        .expect("a key of another type decides too");
    assert!(d.allowed);
}

/// A permit lease ending far in the future (a score of `1e300`) made PEXPIRE refuse the
/// number and every acquire of the key fail; a permits key of another type failed too.
#[tokio::test]
async fn a_permit_lease_far_in_the_future_fails_no_acquire() {
    use celeriac_core::RateLimitStore;
    let (_server, backend, mut conn) = setup().await;
    let permits = "celeriac:{rl:p}:permits";
    conn.command(&["ZADD", permits, "1e300", "ghost"])
        .await
        .expect("ZADD");
    let d = backend
        .acquire_permit("p", "me", 2, Duration::from_secs(10), NOW)
        .await
        .expect("acquires");
    assert!(d.allowed);
    conn.command(&["DEL", permits]).await.expect("DEL");
    conn.command(&["SET", permits, "x"]).await.expect("SET");
    let d = backend
        .acquire_permit("p", "me", 2, Duration::from_secs(10), NOW)
        .await
        .expect("acquires over a key of another type");
    assert!(d.allowed);
    assert!(backend
        .release_permit("p", "me", NOW)
        .await
        .expect("releases"));
}

/// A join whose keep-until `x`, count `n` or total `t` was not a number failed every arrival
/// in Lua (a comparison with nil, HINCRBY on text): the workflow never went on.
#[tokio::test]
async fn a_spoiled_join_still_completes() {
    use celeriac_core::backend::{JoinArrival, JoinInput, JoinStatus};
    use celeriac_core::WorkflowStore;
    let (_server, backend, mut conn) = setup().await;
    let join = JobId::new();
    let arrive = |index: u32| JoinArrival {
        join,
        index,
        total: 2,
        input: JoinInput::Output(format!("{index}").into_bytes()),
        ttl: Duration::from_secs(60),
    };
    let first = backend.join_arrive(arrive(0), NOW).await.expect("arrives");
    assert_eq!(first, JoinStatus::Waiting { arrived: 1 });
    let key = format!("celeriac:{{wf:{join}}}:join");
    conn.command(&["HSET", &key, "x", "nan", "n", "many", "t", "1e400"])
        .await
        .expect("spoil");
    let done = backend.join_arrive(arrive(1), NOW).await.expect("arrives");
    assert_eq!(
        done,
        JoinStatus::Complete(vec![b"0".to_vec(), b"1".to_vec()])
    );
}

/// Finishing a workflow whose ttl `t` was not a number failed in Lua after the record was
/// already marked finished: nothing was published, and waiters slept until their next poll.
#[tokio::test]
async fn finishing_a_workflow_with_a_spoiled_ttl_is_applied() {
    use celeriac_core::backend::{WorkflowEnd, WorkflowRecord, WorkflowState};
    use celeriac_core::WorkflowStore;
    let (_server, backend, mut conn) = setup().await;
    let id = JobId::new();
    backend
        .workflow_start(WorkflowRecord {
            id,
            name: "w".into(),
            state: WorkflowState::Running,
            result: None,
            error: None,
            created_at: NOW,
            finished_at: None,
            ttl: Duration::from_secs(60),
        })
        .await
        .expect("starts");
    let key = format!("celeriac:{{wf:{id}}}:rec");
    conn.command(&["HSET", &key, "t", "1e300"])
        .await
        .expect("spoil");
    let applied = backend
        .workflow_finish(id, WorkflowEnd::Succeeded(b"1".to_vec()), NOW)
        .await
        .expect("finishes");
    assert!(applied);
    let ttl = conn.command(&["PTTL", &key]).await.expect("PTTL").as_int();
    assert!(ttl.is_some_and(|t| t > 0), "the record expires: {ttl:?}");
}

/// A leader lease whose token was not a number made HINCRBY fail on every acquire: no leader
/// (no beat) ever again. A lease key of another type did the same.
#[tokio::test]
async fn a_spoiled_leader_token_does_not_stop_leader_election() {
    use celeriac_core::Coordinator;
    let (_server, backend, mut conn) = setup().await;
    let lease = "celeriac:{celeriac:beat}:leader:beat";
    let first = backend
        .acquire_leader("beat", "a", Duration::from_secs(1), NOW)
        .await
        .expect("acquires")
        .expect("leads");
    conn.command(&["HSET", lease, "token", "garbage", "until", "inf"])
        .await
        .expect("spoil");
    let second = backend
        .acquire_leader("beat", "b", Duration::from_secs(1), NOW + 5_000)
        .await
        .expect("acquires")
        .expect("leads");
    assert!(
        second > first,
        "fencing tokens still grow: {first} then {second}"
    );
    conn.command(&["DEL", lease]).await.expect("DEL");
    conn.command(&["SET", lease, "x"]).await.expect("SET");
    let third = backend
        .acquire_leader("beat", "c", Duration::from_secs(1), NOW + 10_000)
        .await
        .expect("acquires over a key of another type")
        .expect("leads");
    assert!(third > second, "{second} then {third}");
}

/// A history field holding text made HINCRBY fail: nothing more of that minute (and hour)
/// was recorded.
#[tokio::test]
async fn a_spoiled_history_field_does_not_stop_recording() {
    use celeriac_core::backend::{HistoryEntry, HistoryQuery, Resolution};
    use celeriac_core::History;
    let (_server, backend, mut conn) = setup().await;
    let start = Resolution::Minute.start_of(NOW);
    let key = format!("celeriac:{{{QUEUE}}}:hist:m:{start}");
    conn.command(&["HSET", &key, "s|t", "many", "Rs|t", "lots"])
        .await
        .expect("spoil");
    let mut e = HistoryEntry::new(NOW, QUEUE, "t");
    if let Some(c) = e.counts.get_mut("s") {
        *c = 2;
    }
    e.run_ms.add(5.0);
    backend.record(vec![e], NOW).await.expect("records");
    let got = backend
        .history(HistoryQuery::new(Resolution::Minute, NOW, NOW + 1))
        .await
        .expect("reads");
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].counts.values()[1], 2);
}

/// A lock whose until was `inf` (or `nan`, or 400 digits) was held forever; a lock key of
/// another type failed every lock and unlock with WRONGTYPE.
#[tokio::test]
async fn a_spoiled_lock_is_free() {
    use celeriac_core::KvStore;
    let (_server, backend, mut conn) = setup().await;
    let lock = "celeriac:kv-lock:l";
    for spoil in [
        &["SET", lock, "inf|ghost"][..],
        &["SET", lock, "nan|ghost"],
        &["RPUSH", lock, "x"],
    ] {
        conn.command(&["DEL", lock]).await.expect("DEL");
        conn.command(spoil).await.expect("spoil");
        let taken = backend
            .kv_lock("l", "me", Duration::from_secs(5), NOW)
            .await
            .expect("locks");
        assert!(taken, "{spoil:?}");
        assert!(backend.kv_unlock("l", "me").await.expect("unlocks"));
    }
}

/// A leased job whose attempts field `a` was gone, completed as a retry (or a failure): HSET
/// got `false` for the error's attempt and the whole completion batch failed ("Lua redis lib
/// command arguments must be strings or integers"). Found by `fuzz_queue_scripts_on_spoiled_records`.
#[tokio::test]
async fn completing_a_job_whose_attempts_field_is_gone_records_the_batch() {
    let (_server, backend, mut conn) = setup().await;
    let ids = enqueue(&backend, 2).await;
    let claimed = claim_all(&backend, NOW).await;
    conn.command(&["HDEL", &key(ids[0]), "a"])
        .await
        .expect("HDEL");
    let done = claimed
        .iter()
        .map(|c| Completion {
            lease: c.lease(),
            outcome: Outcome::Retry {
                at: NOW + 1_000,
                error: ErrorInfo::new("boom", "again", 1),
            },
        })
        .collect();
    let applied = backend
        .complete(done, NOW)
        .await
        .expect("the batch is recorded");
    assert_eq!(applied, vec![true, true]);
    // The next claim dead-letters the malformed one and runs the other.
    let again = claim_all(&backend, NOW + 2_000).await;
    assert_eq!(
        again.iter().map(|c| c.job.id).collect::<Vec<_>>(),
        vec![ids[1]]
    );
    assert_dead_naming(&backend, ids[0], "`a`").await;
}

/// Deleting a job whose record held a unique key `uk` but had lost its mode `um` failed in
/// Lua (concatenating nil).
#[tokio::test]
async fn deleting_a_job_whose_unique_mode_is_gone() {
    let (_server, backend, mut conn) = setup().await;
    let mut job = Job::new("t", Vec::new(), NOW);
    job.queue = QUEUE.into();
    job.unique = Some(Unique {
        key: "k".into(),
        lifetime: UniqueFor::UntilStarted,
    });
    let id = job.id;
    backend.enqueue(vec![job], NOW).await.expect("enqueue");
    conn.command(&["HDEL", &key(id), "um"]).await.expect("HDEL");
    assert_eq!(
        backend.delete_jobs(QUEUE, vec![id]).await.expect("delete"),
        1
    );
    assert!(backend.get(id).await.expect("get").is_none());
}

// ---------------------------------------------------------------------------------------------
// Breaker and limiter state spoiled on Redis: the scripts that read them repair, never fail.

/// One spoiling of a breaker's or a limiter's stored state.
#[derive(Debug, Clone)]
enum StateSpoil {
    /// A field of the breaker's state hash.
    Breaker(&'static str, Vec<u8>),
    /// A field of the breaker's signals hash: `<epoch>|<instance>` -> `c|f|s`.
    Signal(Vec<u8>, Vec<u8>),
    /// The limiter state's bytes (real states mutated, or text).
    Limiter(Vec<u8>),
    /// A key of another type in place of one of them.
    WrongType(usize),
}

fn state_spoil() -> impl Strategy<Value = StateSpoil> {
    const BREAKER: [&str; 8] = [
        "st", "until", "trips", "gen", "since", "pok", "pfail", "exp",
    ];
    let real_states: Vec<Vec<u8>> = [
        [1.7e15, 0.0, 0.0, 1.7e12],
        [1.7e12, 3.0, 0.0, 1.7e12],
        [f64::NAN, f64::INFINITY, -0.0, 1e300],
    ]
    .iter()
    .map(|s| s.iter().flat_map(|x| x.to_le_bytes()).collect())
    .collect();
    let signals: Vec<Vec<u8>> = [
        &b"1700000000|i"[..],
        b"1|2|0",
        b"-5|x",
        b"99999999999999999999|1|1",
    ]
    .iter()
    .map(|s| s.to_vec())
    .collect();
    prop_oneof![
        3 => ((0..BREAKER.len()).prop_map(|i| BREAKER[i]), values())
            .prop_map(|(f, v)| StateSpoil::Breaker(f, v)),
        2 => (mutated(signals.clone()), mutated(signals)).prop_map(|(k, v)| StateSpoil::Signal(k, v)),
        3 => prop_oneof![mutated(real_states), values()].prop_map(StateSpoil::Limiter),
        1 => (0usize..3).prop_map(StateSpoil::WrongType),
    ]
}

#[test]
fn fuzz_breaker_and_limiter_scripts_on_spoiled_state() {
    use celeriac_core::backend::BreakerSignal;
    use celeriac_core::limit::Quota;
    use celeriac_core::{BreakerStore, RateLimitStore};
    let bench = bench();
    let backend = bench
        .rt
        .block_on(RedisBackend::connect(&bench.server.url()))
        .expect("connects");
    let quota = Quota::per_second(5);
    let limiter = format!("celeriac:{{rl:k}}:{}", quota.state_id());
    let state = "celeriac:{celeriac:breaker:b}:state".to_string();
    let signals = "celeriac:{celeriac:breaker:b}:signals".to_string();
    let strategy = (
        proptest::collection::vec(state_spoil(), 1..5),
        0i64..120_000,
    );
    let seen = AtomicU64::new(0);
    let failing = AtomicBool::new(false);
    run("breaker and limiter state", strategy, |(spoils, later)| {
        let n = seen.fetch_add(1, Ordering::Relaxed);
        if !n.is_multiple_of(EVERY) && !failing.load(Ordering::Relaxed) {
            return Ok(());
        }
        let mut conn = bench
            .conn
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let result = bench.rt.block_on(async {
            let fail = |e: celeriac_testkit::Error| TestCaseError::fail(format!("spoiling: {e}"));
            conn.command(&["DEL", &limiter, &state, &signals])
                .await
                .map_err(fail)?;
            // Real state first: one decision, one report.
            let signal = BreakerSignal {
                instance: "i".into(),
                calls: 3,
                failures: 1,
                slow: 0,
            };
            let _ = backend
                .check_limits("k", std::slice::from_ref(&quota), 1, NOW)
                .await;
            let _ = backend
                .breaker_report("b", signal.clone(), &policy(), NOW)
                .await;
            for s in &spoils {
                let r = match s {
                    StateSpoil::Breaker(f, v) => {
                        conn.command(&[b"HSET".as_slice(), state.as_bytes(), f.as_bytes(), v])
                            .await
                    }
                    StateSpoil::Signal(k, v) => {
                        conn.command(&[b"HSET".as_slice(), signals.as_bytes(), k, v])
                            .await
                    }
                    StateSpoil::Limiter(v) => {
                        conn.command(&[b"SET".as_slice(), limiter.as_bytes(), v])
                            .await
                    }
                    StateSpoil::WrongType(i) => {
                        let k = [&limiter, &state, &signals][*i];
                        conn.command(&["DEL", k]).await.map_err(fail)?;
                        conn.command(&["RPUSH", k, "x"]).await
                    }
                };
                if let Err(e) = r {
                    prop_assert!(e.to_string().contains("WRONGTYPE"), "spoiling: {e}");
                }
            }
            let now = NOW + later;
            let d = backend
                .check_limits("k", std::slice::from_ref(&quota), 1, now)
                .await;
            let d = judged("check_limits", d, true)?.unwrap_or_else(|| unreachable!());
            // A spoiled state denies no longer than a real one can: the quota's own window,
            // plus the hour of slack the script grants clocks that disagree.
            if let Some(retry) = d.retry_after {
                prop_assert!(retry <= Duration::from_secs(3601), "denied for {retry:?}");
            }
            for _ in 0..2 {
                let s = backend
                    .breaker_report("b", signal.clone(), &policy(), now)
                    .await;
                let s = judged("breaker_report", s, true)?.unwrap_or_else(|| unreachable!());
                prop_assert!(s.open_until.abs() <= 1 << 53, "{s:?}");
                judged(
                    "breaker_status",
                    backend.breaker_status("b", now).await,
                    true,
                )?;
                judged(
                    "breaker_probe",
                    backend.breaker_probe("b", "t", &policy(), now).await,
                    true,
                )?;
            }
            Ok(())
        });
        if result.is_err() {
            failing.store(true, Ordering::Relaxed);
        }
        result
    });
}

/// A limiter state whose TAT lay far in the future (`1e300`, written as text or as a double)
/// denied its key until then, that is forever. Found by
/// `fuzz_breaker_and_limiter_scripts_on_spoiled_state`.
#[tokio::test]
async fn a_limiter_state_far_in_the_future_does_not_deny_forever() {
    use celeriac_core::limit::{Algorithm, Quota};
    use celeriac_core::RateLimitStore;
    let (_server, backend, mut conn) = setup().await;
    for quota in [
        Quota::per_second(5),
        Quota::per_second(5).with_algorithm(Algorithm::FixedWindow),
        Quota::per_second(5).with_algorithm(Algorithm::SlidingWindow),
    ] {
        let key = format!("celeriac:{{rl:k}}:{}", quota.state_id());
        let far: Vec<u8> = [1e300, 1e9, 1e9, 0.0]
            .iter()
            .flat_map(|x: &f64| x.to_le_bytes())
            .collect();
        for spoil in [b"1e300".to_vec(), far] {
            conn.command(&[b"SET".as_slice(), key.as_bytes(), &spoil])
                .await
                .expect("SET");
            let d = backend
                .check_limits("k", std::slice::from_ref(&quota), 1, NOW)
                .await
                .expect("decides");
            assert!(d.allowed, "{quota:?} over {spoil:?}: {d:?}");
        }
    }
}

/// Found by `fuzz_queue_scripts_on_spoiled_records` (a leased job whose state was spoiled to
/// "scheduled", then a delete and a progress): the delete trusted the record's state and
/// removed a running job, and the progress of its attempt, whose lease still held, wrote to the
/// missing record, leaving a hash of progress alone: unreadable, outside the dead letters, kept
/// forever.
#[tokio::test]
async fn a_running_job_whose_state_is_spoiled_is_not_deleted_and_progress_never_makes_a_record() {
    let (_server, backend, mut conn) = setup().await;
    let ids = enqueue(&backend, 1).await;
    let held = claim_all(&backend, NOW).await;
    assert_eq!(held.len(), 1);
    hset(&mut conn, ids[0], "s", "1").await;
    let deleted = backend
        .delete_jobs(QUEUE, vec![ids[0]])
        .await
        .expect("the delete succeeds");
    assert_eq!(deleted, 0, "a job under a lease is left alone");
    assert!(backend
        .set_progress(held[0].lease(), 0.5, None)
        .await
        .expect("progress"));
    assert!(backend.get(ids[0]).await.expect("still readable").is_some());

    // A record gone while its lease holds (deleted by hand): progress does not bring back a
    // hash that holds nothing else.
    conn.command(&["DEL", &key(ids[0])]).await.expect("DEL");
    let recorded = backend
        .set_progress(held[0].lease(), 0.75, Some("late".into()))
        .await
        .expect("progress");
    assert!(!recorded, "nothing to record progress on");
    let exists = conn
        .command(&["EXISTS", &key(ids[0])])
        .await
        .expect("EXISTS");
    assert_eq!(exists.as_int(), Some(0), "no key made");
}
