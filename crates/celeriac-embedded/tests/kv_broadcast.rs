//! Broadcast on SQLite across processes (two backends on one file stand for two processes):
//! a message from another process arrives by polling, a subscription that missed swept
//! messages gets `Reset`, and subscriptions end when their backend is dropped.

use celeriac_core::backend::{KvEvent, KvSubscription};
use celeriac_core::{Broker, KvStore};
use celeriac_embedded::SqliteBackend;
use std::time::Duration;
use tokio::time::{timeout, Instant};

const PATIENCE: Duration = Duration::from_secs(10);

async fn next(sub: &mut KvSubscription, what: &str) -> Option<KvEvent> {
    timeout(PATIENCE, sub.next())
        .await
        .unwrap_or_else(|_| panic!("{what}: nothing within {PATIENCE:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_cross_processes_gaps_reset_and_drops_end_subscriptions() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("kv.db");
    let url = format!("sqlite://{}", path.display());
    let here = SqliteBackend::connect(&url).await.expect("open");
    let there = SqliteBackend::connect(&url).await.expect("open again");

    let mut sub = here.kv_subscribe("inval").await.expect("subscribe");
    there
        .kv_publish("inval", b"from afar".to_vec())
        .await
        .expect("publish");
    assert_eq!(
        next(&mut sub, "a message from another process").await,
        Some(KvEvent::Message(b"from afar".to_vec()))
    );

    // Another process publishes and its sweep removes the row before this one polls.
    {
        let conn = rusqlite::Connection::open(&path).expect("raw connection");
        conn.execute_batch(
            "BEGIN IMMEDIATE;
             INSERT INTO celeriac_kv_events (channel, message, at) VALUES ('inval', X'00', 0);
             UPDATE celeriac_meta SET value = (SELECT max(seq) FROM celeriac_kv_events)
                 WHERE key = 'kv_swept';
             DELETE FROM celeriac_kv_events WHERE at = 0;
             COMMIT;",
        )
        .expect("a publish swept at once");
    }
    assert_eq!(
        next(&mut sub, "the gap").await,
        Some(KvEvent::Reset),
        "a swept message this subscription never saw resets it"
    );
    there
        .kv_publish("inval", b"after the gap".to_vec())
        .await
        .expect("publish");
    assert_eq!(
        next(&mut sub, "after the gap").await,
        Some(KvEvent::Message(b"after the gap".to_vec()))
    );

    // reap sweeps messages past their 60 s retention (judged by reap's now).
    there
        .reap(celeriac_core::clock::system_now_ms() + 120_000)
        .await
        .expect("reap");
    let conn = rusqlite::Connection::open(&path).expect("raw connection");
    let left: i64 = conn
        .query_row("SELECT count(*) FROM celeriac_kv_events", [], |r| r.get(0))
        .expect("count");
    assert_eq!(left, 0, "reap swept the old messages");

    let started = Instant::now();
    drop(here);
    loop {
        match next(&mut sub, "after the drop").await {
            None => break,
            Some(_) => continue,
        }
    }
    assert!(started.elapsed() < PATIENCE);
}
