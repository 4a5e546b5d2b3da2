//! Operations that only read never wait for the write lock: while another connection holds
//! it mid-transaction (another process's writer, held up by a slow disk or a starved CPU),
//! a job, the counts, the listings, events, processes, schedules, breakers and cache values
//! still read, from the last committed state, and the next commit is seen at once.

use celeriac_core::backend::{BreakerStore, Coordinator, JobQuery, KvEntry, KvStore, QueueAdmin};
use celeriac_core::{Broker, EventLog, Job, JobState, ProcessRegistry, ResultStore};
use celeriac_embedded::SqliteBackend;
use rusqlite::Connection;
use std::time::Duration;

const T0: i64 = 1_700_000_000_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_go_on_while_another_connection_holds_the_write_lock() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("r.db");
    // A write waits at most this long for the lock, then fails.
    let backend = SqliteBackend::connect(&format!("sqlite://{}?busy_timeout_ms=300", db.display()))
        .await
        .expect("open");
    let job = Job::new("reads.noop", b"payload".to_vec(), T0);
    let id = job.id;
    backend.enqueue(vec![job], T0).await.expect("enqueue");
    let entry = KvEntry {
        key: "k".into(),
        value: b"v".to_vec(),
        ttl: Duration::from_secs(60),
    };
    backend.kv_set(vec![entry], T0).await.expect("kv set");

    let other = Connection::open(&db).expect("a second connection");
    other
        .execute_batch("BEGIN IMMEDIATE; UPDATE celeriac_jobs SET attempts = 7;")
        .expect("the second connection takes the write lock");
    // The precondition: the lock is really held, a write through the backend cannot commit.
    let refused = backend
        .enqueue(vec![Job::new("reads.noop", Vec::new(), T0)], T0)
        .await;
    assert!(
        refused.is_err(),
        "a write had to wait for the lock and give up"
    );

    let info = backend.get(id).await.expect("get").expect("the job");
    assert_eq!(info.state, JobState::Pending);
    assert_eq!(info.job.attempts, 0, "the uncommitted change is not read");
    let pending: u64 = backend
        .stats()
        .await
        .expect("stats")
        .iter()
        .map(|q| q.count(JobState::Pending))
        .sum();
    assert_eq!(pending, 1, "the refused enqueue left nothing");
    let page = backend
        .list_jobs(JobQuery::new("default", JobState::Pending), None, 10)
        .await
        .expect("list");
    assert_eq!(page.jobs.len(), 1);
    backend
        .dead_letters(None, 10, 0)
        .await
        .expect("dead letters");
    backend.events(None, 10).await.expect("events");
    backend.processes(T0).await.expect("processes");
    let values = backend.kv_get(vec!["k".into()], T0).await.expect("kv get");
    assert_eq!(values, vec![Some(b"v".to_vec())]);
    backend.kv_memory().await.expect("kv memory");
    backend.schedule_states().await.expect("schedule states");
    let breaker = backend
        .breaker_status("payments", T0)
        .await
        .expect("breaker status");
    assert!(breaker.is_none(), "no such breaker");

    other.execute_batch("COMMIT").expect("commit");
    let info = backend.get(id).await.expect("get").expect("the job");
    assert_eq!(info.job.attempts, 7, "the next read sees the commit");
}
