//! Retention keeps up on a SQLite file: tens of thousands of kept results, all due at once,
//! leave no row behind after one reap, and the WAL stays within its limit throughout.

use celeriac_core::backend::{ClaimRequest, Completion, Outcome};
use celeriac_core::{Broker, Job};
use celeriac_embedded::{SqliteBackend, WAL_SIZE_LIMIT};
use std::path::Path;
use std::time::Duration;

const T0: i64 = 1_700_000_000_000;
const COMPLETIONS: usize = 30_000;
const BATCH: usize = 1_000;
const RESULT_TTL: Duration = Duration::from_secs(600);
const QUEUE: &str = "soak";

fn size(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

fn rows(db: &Path) -> i64 {
    let conn = rusqlite::Connection::open(db).expect("open a second connection");
    conn.query_row("SELECT count(*) FROM celeriac_jobs", [], |r| r.get(0))
        .expect("count the rows")
}

/// Enqueues, claims and completes `n` jobs at `now`, each keeping a small result.
async fn complete_many(backend: &SqliteBackend, n: usize, now: i64) {
    for _ in 0..n / BATCH {
        let jobs: Vec<Job> = (0..BATCH)
            .map(|i| {
                let mut j = Job::new("soak.noop", format!("[{i}]").into_bytes(), now);
                j.queue = QUEUE.into();
                j.result_ttl = Some(RESULT_TTL);
                j
            })
            .collect();
        backend.enqueue(jobs, now).await.expect("enqueue");
        let claimed = backend
            .claim(ClaimRequest {
                queues: vec![QUEUE.into()],
                limit: BATCH,
                lease: Duration::from_secs(30),
                worker: "soak".into(),
                now,
                limits: Default::default(),
            })
            .await
            .expect("claim");
        assert_eq!(claimed.len(), BATCH, "every job just enqueued is claimable");
        let done = claimed
            .iter()
            .map(|c| Completion {
                lease: c.lease(),
                outcome: Outcome::Succeeded {
                    result: Some(b"null".to_vec()),
                },
            })
            .collect();
        let applied = backend.complete(done, now).await.expect("complete");
        assert!(applied.iter().all(|a| *a), "every completion applies");
    }
}

#[tokio::test]
async fn a_reap_after_the_ttl_empties_the_results_table_and_the_wal_stays_bounded() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("soak.db");
    let wal = dir.path().join("soak.db-wal");
    let backend = SqliteBackend::connect(&format!("sqlite://{}", db.display()))
        .await
        .expect("open");

    complete_many(&backend, COMPLETIONS, T0).await;
    assert_eq!(
        rows(&db),
        COMPLETIONS as i64,
        "every completion should have kept its result until the ttl"
    );
    assert!(
        size(&wal) <= WAL_SIZE_LIMIT,
        "the WAL should stay within {WAL_SIZE_LIMIT} bytes while results pile up, it is {}",
        size(&wal)
    );
    let early = backend.reap(T0 + 1_000).await.expect("reap");
    assert_eq!(early.swept, 0, "nothing is due before the ttl");

    let ttl_ms = RESULT_TTL.as_millis() as i64;
    let report = backend.reap(T0 + ttl_ms).await.expect("reap");
    assert_eq!(
        report.swept, COMPLETIONS as u64,
        "one reap after the ttl should sweep every kept result"
    );
    assert_eq!(rows(&db), 0, "the results table should be empty again");
    assert!(
        size(&wal) <= WAL_SIZE_LIMIT,
        "the WAL should stay within {WAL_SIZE_LIMIT} bytes, it is {}",
        size(&wal)
    );
}
