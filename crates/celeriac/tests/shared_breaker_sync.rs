//! `SharedBreaker::spawn_sync` keeps a local breaker in step with the store on its own.

use celeriac::backend::{BreakerSignal, BreakerStore};
use celeriac::breaker::{BreakerState, CircuitBreaker, SharedBreaker, SharedOptions};
use celeriac::embedded::SqliteBackend;
use celeriac::{Clock, SystemClock};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[tokio::test]
async fn the_sync_task_adopts_a_trip_made_elsewhere() {
    let store = Arc::new(SqliteBackend::memory().await.expect("an in-memory store"));
    let breaker = CircuitBreaker::builder("elsewhere")
        .min_calls(4)
        .open_for(Duration::from_secs(60))
        .build()
        .expect("valid settings");
    let shared = SharedBreaker::new(
        breaker.clone(),
        store.clone(),
        SharedOptions {
            instance: "here".into(),
            sync_interval: Duration::from_millis(10),
            quorum: 1,
            ..SharedOptions::default()
        },
    )
    .expect("valid options");
    let task = shared.spawn_sync();
    // Another process reports failures with the same policy: the store trips.
    let policy = shared.policy();
    let s = store
        .breaker_report(
            "elsewhere",
            BreakerSignal {
                instance: "there".into(),
                calls: 4,
                failures: 4,
                slow: 0,
            },
            &policy,
            SystemClock.now_ms(),
        )
        .await
        .expect("report");
    assert_eq!(s.state, BreakerState::Open);
    // Liveness only: the 10 ms sync picks it up long before this deadline.
    let deadline = Instant::now() + Duration::from_secs(10);
    while breaker.state() != BreakerState::Open {
        assert!(
            Instant::now() < deadline,
            "the sync task never adopted the trip"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(breaker.acquire().is_err(), "this process stopped calling");
    // Dropping the last handle ends the task.
    drop(shared);
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("the sync task ends once the breaker is dropped")
        .expect("it did not panic");
}
