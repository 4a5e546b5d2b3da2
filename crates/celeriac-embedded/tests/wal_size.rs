//! The `-wal` file does not keep the size of its largest transaction: once a checkpoint has
//! copied it back, the next write truncates it to `WAL_SIZE_LIMIT`.

use celeriac_core::{Broker, Job};
use celeriac_embedded::{SqliteBackend, WAL_SIZE_LIMIT};
use std::path::Path;

const T0: i64 = 1_700_000_000_000;

fn size(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

fn jobs(n: usize, payload: usize) -> Vec<Job> {
    (0..n)
        .map(|_| Job::new("wal.noop", vec![b'x'; payload], T0))
        .collect()
}

#[tokio::test]
async fn the_wal_shrinks_back_below_its_limit_after_a_checkpoint() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("w.db");
    let wal = dir.path().join("w.db-wal");
    let backend = SqliteBackend::connect(&format!("sqlite://{}", db.display()))
        .await
        .expect("open");

    // One transaction of about 1.5 times the limit: the WAL must hold all of it.
    let payload = 10 * 1024;
    let n = (WAL_SIZE_LIMIT as usize * 3 / 2) / payload;
    backend
        .enqueue(jobs(n, payload), T0)
        .await
        .expect("enqueue");
    let peak = size(&wal);
    assert!(
        peak > WAL_SIZE_LIMIT,
        "the big transaction should have grown the WAL past the limit (it is {peak} bytes)"
    );

    // That commit went past the autocheckpoint threshold, so it was checkpointed; the next
    // writes start the WAL over and truncate it.
    for _ in 0..3 {
        backend.enqueue(jobs(10, 100), T0).await.expect("enqueue");
    }
    let after = size(&wal);
    assert!(
        after <= WAL_SIZE_LIMIT,
        "the WAL should be truncated to at most {WAL_SIZE_LIMIT} bytes, it is {after}"
    );
    assert!(
        size(&db) > 0,
        "the rows were checkpointed into the database"
    );
}
