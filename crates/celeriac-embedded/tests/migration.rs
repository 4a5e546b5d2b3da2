//! A database written by an earlier version is upgraded in place, keeping its jobs.

use celeriac_core::backend::KvEntry;
use celeriac_core::backend::{
    CancelOutcome, ClaimRequest, JoinArrival, JoinInput, JoinStatus, WorkflowRecord, WorkflowState,
};
use celeriac_core::limit::Quota;
use celeriac_core::{
    Broker, Job, JobId, JobState, KvStore, RateLimitStore, ResultStore, WorkflowStore,
};
use celeriac_embedded::SqliteBackend;
use std::time::Duration;

const NOW: i64 = 1_700_000_000_000;

/// A database file at `version` holding one pending job, written as that version wrote it.
fn old_database(dir: &std::path::Path, schema: &str, version: i64) -> (std::path::PathBuf, JobId) {
    let path = dir.join(format!("v{version}.db"));
    let id = Job::new("t", b"1".to_vec(), NOW).id;
    let conn = rusqlite::Connection::open(&path).expect("open");
    conn.execute_batch(schema).expect("the old schema");
    conn.execute_batch(&format!("PRAGMA user_version = {version}"))
        .expect("version");
    conn.execute(
        "INSERT INTO celeriac_jobs (id, queue, task, state, priority, run_at, payload, \
         encoding, attempts, max_attempts, created_at, result_ttl_ms) \
         VALUES (?1, 'default', 't', 0, 5, ?2, X'31', 0, 0, 4, ?2, 60000)",
        rusqlite::params![&id.as_bytes()[..], NOW],
    )
    .unwrap_or_else(|e| panic!("a job written by version {version}: {e}"));
    (path, id)
}

/// Opens an old database with the current backend.
async fn open(path: &std::path::Path) -> SqliteBackend {
    SqliteBackend::connect(&format!("sqlite://{}", path.display()))
        .await
        .expect("the old database opens")
}

/// Claims one job of the `default` queue.
async fn claim_one(backend: &SqliteBackend) -> Vec<celeriac_core::backend::Claimed> {
    backend
        .claim(ClaimRequest {
            queues: vec!["default".into()],
            limit: 1,
            lease: Duration::from_secs(30),
            worker: "w".into(),
            now: NOW,
            limits: Default::default(),
        })
        .await
        .expect("claim")
}

/// The schema version the file records.
fn recorded_version(path: &std::path::Path) -> i64 {
    rusqlite::Connection::open(path)
        .expect("reopen")
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .expect("version")
}

#[tokio::test]
async fn a_version_1_database_is_upgraded_and_keeps_its_jobs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (path, id) = old_database(dir.path(), include_str!("schema_v1.sql"), 1);
    let backend = open(&path).await;
    let info = backend
        .get(id)
        .await
        .expect("get")
        .expect("the job is kept");
    assert_eq!(info.state, JobState::Pending);
    let claimed = claim_one(&backend).await;
    assert_eq!(claimed.len(), 1);
    assert_eq!(
        backend
            .cancel(id, NOW + 1)
            .await
            .expect("cancel uses the new column")
            .outcome,
        CancelOutcome::Requested
    );
    drop(backend);
    assert_eq!(recorded_version(&path), 9);
}

#[tokio::test]
async fn a_version_3_database_gains_the_workflow_tables_and_keeps_its_jobs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (path, id) = old_database(dir.path(), include_str!("schema_v3.sql"), 3);
    let backend = open(&path).await;
    assert_eq!(
        backend.get(id).await.expect("get").map(|i| i.state),
        Some(JobState::Pending),
        "the job written by version 3 is kept"
    );
    let join = JobId::new();
    let status = backend
        .join_arrive(
            JoinArrival {
                join,
                index: 0,
                total: 1,
                input: JoinInput::Output(b"1".to_vec()),
                ttl: Duration::from_secs(60),
            },
            NOW,
        )
        .await
        .expect("joins work on an upgraded database");
    assert_eq!(status, JoinStatus::Complete(vec![b"1".to_vec()]));
    let wf = JobId::new();
    backend
        .workflow_start(WorkflowRecord {
            id: wf,
            name: "chain(t)".into(),
            state: WorkflowState::Running,
            result: None,
            error: None,
            created_at: NOW,
            finished_at: None,
            ttl: Duration::from_secs(60),
        })
        .await
        .expect("workflow records work on an upgraded database");
    assert!(backend.workflow_get(wf).await.expect("get").is_some());
    drop(backend);
    assert_eq!(recorded_version(&path), 9);
}

#[tokio::test]
async fn a_version_4_database_gains_the_kv_tables_and_keeps_its_jobs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (path, id) = old_database(dir.path(), include_str!("schema_v4.sql"), 4);
    let backend = open(&path).await;
    assert_eq!(
        backend.get(id).await.expect("get").map(|i| i.state),
        Some(JobState::Pending),
        "the job written by version 4 is kept"
    );
    backend
        .kv_set(
            vec![KvEntry {
                key: "k".into(),
                value: b"v".to_vec(),
                ttl: Duration::from_secs(60),
            }],
            NOW,
        )
        .await
        .expect("values work on an upgraded database");
    assert_eq!(
        backend.kv_get(vec!["k".into()], NOW).await.expect("get"),
        vec![Some(b"v".to_vec())]
    );
    assert_eq!(backend.kv_incr("n", NOW).await.expect("incr"), 1);
    assert!(backend
        .kv_lock("l", "a", Duration::from_secs(5), NOW)
        .await
        .expect("locks work on an upgraded database"));
    let mut sub = backend.kv_subscribe("c").await.expect("subscribe");
    backend
        .kv_publish("c", b"m".to_vec())
        .await
        .expect("publish works on an upgraded database");
    let got = tokio::time::timeout(Duration::from_secs(10), sub.next())
        .await
        .expect("the message arrives");
    assert_eq!(
        got,
        Some(celeriac_core::backend::KvEvent::Message(b"m".to_vec()))
    );
    drop(backend);
    assert_eq!(recorded_version(&path), 9);
}

#[tokio::test]
async fn a_version_5_database_gains_the_rate_limit_tables_and_keeps_its_jobs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (path, id) = old_database(dir.path(), include_str!("schema_v5.sql"), 5);
    let backend = open(&path).await;
    assert_eq!(
        backend.get(id).await.expect("get").map(|i| i.state),
        Some(JobState::Pending),
        "the job written by version 5 is kept"
    );
    let q = [Quota::per_minute(1)];
    assert!(
        backend
            .check_limits("user", &q, 1, NOW)
            .await
            .expect("limits work on an upgraded database")
            .allowed
    );
    assert!(
        !backend
            .check_limits("user", &q, 1, NOW)
            .await
            .expect("check")
            .allowed
    );
    assert!(
        backend
            .acquire_permit("user", "h", 1, Duration::from_secs(5), NOW)
            .await
            .expect("permits work on an upgraded database")
            .allowed
    );
    drop(backend);
    assert_eq!(recorded_version(&path), 9);
}

#[tokio::test]
async fn a_version_6_database_gains_the_queue_counts_and_the_process_registry() {
    use celeriac_core::{ProcessRegistry, QueueAdmin};
    let dir = tempfile::tempdir().expect("tempdir");
    let (path, id) = old_database(dir.path(), include_str!("schema_v6.sql"), 6);
    let backend = open(&path).await;
    let stats = backend.stats().await.expect("stats");
    let default = stats
        .iter()
        .find(|s| s.queue == "default")
        .expect("the queue of the old job is listed");
    assert_eq!(
        default.count(JobState::Pending),
        1,
        "the counts include the job written by version 6"
    );
    assert_eq!(default.oldest_pending_at, Some(NOW));
    let claimed = claim_one(&backend).await;
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].job.id, id);
    let stats = backend.stats().await.expect("stats");
    let default = stats.iter().find(|s| s.queue == "default").expect("listed");
    assert_eq!(
        (
            default.count(JobState::Pending),
            default.count(JobState::Active)
        ),
        (0, 1),
        "the counts follow the claim"
    );
    assert!(backend
        .processes(NOW)
        .await
        .expect("the registry works on an upgraded database")
        .is_empty());
    drop(backend);
    assert_eq!(recorded_version(&path), 9);
}
