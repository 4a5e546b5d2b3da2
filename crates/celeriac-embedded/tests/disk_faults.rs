//! The embedded backend under real storage faults: a disk that fills up in the middle of a
//! group-committed transaction, and a database file made read-only while it is open. Every
//! operation reports exactly what the file holds afterwards (nothing is half-committed), the
//! errors name the condition, and the same backend works again once the fault clears.
//!
//! The faults are real (see `fault_env`): a small tmpfs filled by a filler file, and
//! `chattr +i` on an ext4 file. Both need root; without it the tests fail and say so.

mod fault_env;

use celeriac_core::backend::{ClaimRequest, Completion, LeaseRef, Outcome};
use celeriac_core::{Broker, Error, ErrorKind, Job, JobId, JobState};
use celeriac_embedded::SqliteBackend;
use fault_env::{Immutable, Tmpfs};
use rusqlite::{Connection, OptionalExtension};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::time::Duration;

const T0: i64 = 1_700_000_000_000;
const LEASE: Duration = Duration::from_secs(30);

type Pending = Pin<Box<dyn Future<Output = Result<(), Error>> + Send>>;

fn job(queue: &str, payload: Vec<u8>) -> Job {
    let mut j = Job::new("faults.noop", payload, T0);
    j.queue = queue.into();
    j
}

fn claim_request(queue: &str) -> ClaimRequest {
    ClaimRequest {
        queues: vec![queue.into()],
        limit: 1,
        lease: LEASE,
        worker: "faults".into(),
        now: T0,
        limits: Default::default(),
    }
}

fn succeeded(lease: LeaseRef) -> Completion {
    Completion {
        lease,
        outcome: Outcome::Succeeded {
            result: Some(b"1".to_vec()),
        },
    }
}

async fn open(db: &Path) -> SqliteBackend {
    // A long busy timeout: the full-disk test holds the write lock from another connection.
    SqliteBackend::connect(&format!("sqlite://{}?busy_timeout_ms=120000", db.display()))
        .await
        .expect("the backend opens")
}

/// A job's state, attempts and lease end, read through a connection of its own.
fn row(db: &Path, id: JobId) -> Option<(JobState, i64, Option<i64>)> {
    let conn = Connection::open(db).expect("a read connection");
    conn.query_row(
        "SELECT state, attempts, lease_until FROM celeriac_jobs WHERE id = ?1",
        [id.as_bytes().as_slice()],
        |r| Ok((r.get::<_, i64>(0)?, r.get(1)?, r.get(2)?)),
    )
    .optional()
    .expect("read the job")
    .map(|(s, a, l)| (JobState::from_code(s).expect("a known state"), a, l))
}

/// Claims the one ready job of `queue`.
async fn claim_one(backend: &SqliteBackend, queue: &str) -> LeaseRef {
    let claimed = backend.claim(claim_request(queue)).await.expect("claim");
    assert_eq!(claimed.len(), 1, "one job of {queue} is ready");
    claimed[0].lease()
}

/// Polls `op` once, so that it is queued on the writer in this order, and keeps it.
async fn queue_op(ops: &mut Vec<Pending>, mut op: Pending) {
    tokio::select! {
        biased;
        out = &mut op => panic!("the writer is held, yet an operation finished: {out:?}"),
        _ = std::future::ready(()) => {}
    }
    ops.push(op);
}

fn assert_disk_full(what: &str, r: &Result<(), Error>) {
    let e = r
        .as_ref()
        .err()
        .unwrap_or_else(|| panic!("{what} should fail"));
    let msg = e.to_string();
    assert!(
        msg.contains("the disk is full") && msg.contains("nothing of this write was stored"),
        "{what}: the error should say the disk is full and nothing was stored: {msg}"
    );
    assert_eq!(
        e.kind(),
        ErrorKind::Retry,
        "{what}: a full disk may clear: {msg}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disk_that_fills_mid_transaction_fails_the_whole_batch_and_the_backend_recovers() {
    let fs = Tmpfs::mount(16 * 1024 * 1024);
    let db = fs.path().join("q.db");
    let backend = open(&db).await;

    // A ready job to claim, and a claimed one to extend and complete, in the failing batch.
    let ready = job("ready", b"[]".to_vec());
    let ready_id = ready.id;
    backend.enqueue(vec![ready], T0).await.expect("enqueue");
    let held = job("held", b"[]".to_vec());
    let held_id = held.id;
    backend.enqueue(vec![held], T0).await.expect("enqueue");
    let lease = claim_one(&backend, "held").await;
    let held_until = T0 + LEASE.as_millis() as i64;
    assert_eq!(row(&db, held_id).map(|r| r.2), Some(Some(held_until)));

    // Half a MiB left; the big job (3 MiB) outgrows SQLite's page cache (2 MiB), so its
    // insert spills pages to the WAL in the middle of the transaction and hits the full disk.
    let filler = fs.fill(512 * 1024);

    // Hold the write lock, so that the writer waits on the first operation while the rest
    // queue up behind it and then share one transaction.
    let lock = Connection::open(&db).expect("a second connection");
    lock.execute_batch("BEGIN IMMEDIATE")
        .expect("take the write lock");
    let b = backend.clone();
    let first = job("small", b"[0]".to_vec());
    let first_id = first.id;
    let mut ops: Vec<Pending> = Vec::new();
    queue_op(
        &mut ops,
        Box::pin(async move { b.enqueue(vec![first], T0).await.map(drop) }),
    )
    .await;
    // Lets the writer take the first operation alone (the assertions below hold either way).
    tokio::time::sleep(Duration::from_millis(300)).await;

    let b = backend.clone();
    queue_op(
        &mut ops,
        Box::pin(async move { b.claim(claim_request("ready")).await.map(drop) }),
    )
    .await;
    let (b, l) = (backend.clone(), lease.clone());
    let longer = T0 + 5 * LEASE.as_millis() as i64;
    queue_op(
        &mut ops,
        Box::pin(async move { b.heartbeat(vec![l], longer, T0).await.map(drop) }),
    )
    .await;
    let mut enqueued: Vec<(usize, JobId)> = vec![(0, first_id)];
    for (payload, name) in [
        (b"[1]".to_vec(), "before"),
        (vec![b'x'; 3 * 1024 * 1024], "big"),
        (b"[2]".to_vec(), "after"),
    ] {
        let j = job(name, payload);
        enqueued.push((ops.len(), j.id));
        let b = backend.clone();
        queue_op(
            &mut ops,
            Box::pin(async move { b.enqueue(vec![j], T0).await.map(drop) }),
        )
        .await;
    }
    let (b, l) = (backend.clone(), lease.clone());
    queue_op(
        &mut ops,
        Box::pin(async move { b.complete(vec![succeeded(l)], T0).await.map(drop) }),
    )
    .await;
    lock.execute_batch("ROLLBACK")
        .expect("release the write lock");
    let mut results = Vec::new();
    for op in ops {
        results.push(op.await);
    }
    let names = [
        "first",
        "claim",
        "heartbeat",
        "before",
        "big",
        "after",
        "complete",
    ];
    let outcomes: Vec<String> = names
        .iter()
        .zip(&results)
        .map(|(n, r)| format!("{n}: {r:?}"))
        .collect();

    // The fault happened: the big insert found the disk full.
    let big = 4;
    assert_disk_full("the big enqueue", &results[big]);
    // Operations of its transaction that ran before it failed with it, and so did the rest.
    let failed_from = results
        .iter()
        .position(Result::is_err)
        .unwrap_or(results.len());
    assert!(
        failed_from < big,
        "operations that ran before the disk filled should fail with it: {outcomes:#?}"
    );
    for (n, r) in names.iter().zip(&results).skip(failed_from) {
        assert_disk_full(n, r);
    }
    assert!(
        results[..failed_from].iter().all(Result::is_ok),
        "{outcomes:#?}"
    );

    // The file holds exactly what was reported: nothing of the failed batch.
    for &(i, id) in &enqueued {
        assert_eq!(
            row(&db, id).is_some(),
            results[i].is_ok(),
            "{}: the job is stored if and only if its enqueue succeeded",
            names[i]
        );
    }
    let (state, attempts, _) = row(&db, ready_id).expect("the ready job");
    if results[1].is_err() {
        assert_eq!(
            (state, attempts),
            (JobState::Pending, 0),
            "a failed claim took nothing"
        );
    }
    let (state, _, until) = row(&db, held_id).expect("the held job");
    assert_eq!(
        state,
        JobState::Active,
        "the failed completion was not stored"
    );
    assert_eq!(
        until,
        Some(held_until),
        "the failed heartbeat was not stored"
    );

    // Space comes back: the same backend claims, extends, completes and enqueues again.
    filler.remove();
    if results[1].is_err() {
        let again = claim_one(&backend, "ready").await;
        assert_eq!(again.id, ready_id);
        let applied = backend
            .complete(vec![succeeded(again)], T0)
            .await
            .expect("complete after the fault");
        assert_eq!(applied, vec![true]);
    }
    let lost = backend
        .heartbeat(vec![lease.clone()], longer, T0)
        .await
        .expect("heartbeat after the fault");
    assert!(lost.is_empty(), "the lease is still held: {lost:?}");
    assert_eq!(row(&db, held_id).map(|r| r.2), Some(Some(longer)));
    let applied = backend
        .complete(vec![succeeded(lease)], T0)
        .await
        .expect("complete after the fault");
    assert_eq!(applied, vec![true], "the lease survived the failed batch");
    let fresh = job("after-fault", vec![b'y'; 3 * 1024 * 1024]);
    let fresh_id = fresh.id;
    backend
        .enqueue(vec![fresh], T0)
        .await
        .expect("the big enqueue succeeds once there is space");
    let fresh_lease = claim_one(&backend, "after-fault").await;
    backend
        .complete(vec![succeeded(fresh_lease)], T0)
        .await
        .expect("complete");
    assert_eq!(row(&db, held_id).map(|r| r.0), Some(JobState::Succeeded));
    assert_eq!(row(&db, ready_id).map(|r| r.0), Some(JobState::Succeeded));
    assert_eq!(row(&db, fresh_id).map(|r| r.0), Some(JobState::Succeeded));
    drop(backend);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_made_read_only_while_open_fails_writes_clearly_and_recovers() {
    // `chattr +i` on the database and its WAL: even root cannot write them, and the writes of
    // the already-open connection fail too. The `-shm` file stays writable: SQLite maps it
    // into memory, and a write to an immutable mapping would kill the process (SIGBUS).
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("ro.db");
    let backend = open(&db).await;
    let held = job("ro", b"[]".to_vec());
    let held_id = held.id;
    backend.enqueue(vec![held], T0).await.expect("enqueue");
    let lease = claim_one(&backend, "ro").await;
    let wal = PathBuf::from(format!("{}-wal", db.display()));
    assert!(wal.exists(), "the database is in WAL mode");

    let frozen = Immutable::set(&[db.clone(), wal]);
    let blocked = job("ro", b"[1]".to_vec());
    let blocked_id = blocked.id;
    let attempts: Vec<(&str, Result<(), Error>)> = vec![
        (
            "enqueue",
            backend.enqueue(vec![blocked], T0).await.map(drop),
        ),
        (
            "heartbeat",
            backend
                .heartbeat(vec![lease.clone()], T0 + 60_000, T0)
                .await
                .map(drop),
        ),
        (
            "complete",
            backend
                .complete(vec![succeeded(lease.clone())], T0)
                .await
                .map(drop),
        ),
    ];
    for (what, r) in &attempts {
        let e = r
            .as_ref()
            .err()
            .unwrap_or_else(|| panic!("{what} on a read-only file should fail"));
        let msg = e.to_string();
        assert!(
            msg.contains("I/O error")
                && msg.contains("read-only")
                && msg.contains("nothing of this write was stored"),
            "{what}: the error should name the I/O error and say nothing was stored: {msg}"
        );
        assert_eq!(e.kind(), ErrorKind::Retry, "{what}: may clear: {msg}");
    }
    assert!(
        row(&db, blocked_id).is_none(),
        "the failed enqueue stored nothing"
    );
    assert_eq!(
        row(&db, held_id).map(|r| (r.0, r.2)),
        Some((JobState::Active, Some(T0 + LEASE.as_millis() as i64))),
        "the failed heartbeat and completion stored nothing"
    );

    // Writable again: the same backend goes on.
    frozen.clear();
    let applied = backend
        .complete(vec![succeeded(lease)], T0)
        .await
        .expect("complete once the file is writable");
    assert_eq!(applied, vec![true]);
    let next = job("ro", b"[2]".to_vec());
    backend.enqueue(vec![next], T0).await.expect("enqueue");
    let l = claim_one(&backend, "ro").await;
    backend
        .complete(vec![succeeded(l)], T0)
        .await
        .expect("complete");
    assert_eq!(row(&db, held_id).map(|r| r.0), Some(JobState::Succeeded));
}
