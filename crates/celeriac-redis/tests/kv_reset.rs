//! A key-value subscription survives a Redis restart: it emits `Reset` once it has
//! resubscribed (messages published meanwhile are lost) and then receives new messages again.
//! Against a `redis-server` the testkit starts (never the shared Redis on 6379); every wait is
//! bounded by a generous timeout.

use celeriac_core::backend::{KvEvent, KvSubscription};
use celeriac_core::KvStore;
use celeriac_redis::RedisBackend;
use celeriac_testkit::RedisServer;
use std::time::Duration;
use tokio::time::{timeout_at, Instant};

const PATIENCE: Duration = Duration::from_secs(30);

async fn next(sub: &mut KvSubscription, deadline: Instant, what: &str) -> KvEvent {
    timeout_at(deadline, sub.next())
        .await
        .unwrap_or_else(|_| panic!("{what}: nothing within {PATIENCE:?}"))
        .unwrap_or_else(|| panic!("{what}: the subscription ended"))
}

/// Publishes until Redis takes it (its connection reconnects after the restart).
async fn publish(backend: &RedisBackend, message: &[u8], deadline: Instant) {
    loop {
        match backend.kv_publish("inval", message.to_vec()).await {
            Ok(()) => return,
            Err(e) if Instant::now() < deadline => {
                eprintln!("publish not yet taken: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("publish never succeeded: {e}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_resets_after_a_redis_restart_and_receives_again() {
    let mut server = RedisServer::start().await.expect("redis-server starts");
    let backend = RedisBackend::connect(&server.url())
        .await
        .expect("connects");
    let mut sub = backend.kv_subscribe("inval").await.expect("subscribe");
    let deadline = Instant::now() + PATIENCE;
    publish(&backend, b"before", deadline).await;
    assert_eq!(
        next(&mut sub, deadline, "before the restart").await,
        KvEvent::Message(b"before".to_vec())
    );

    server.restart().await.expect("redis-server restarts");

    let deadline = Instant::now() + PATIENCE;
    assert_eq!(
        next(&mut sub, deadline, "after the restart").await,
        KvEvent::Reset,
        "the subscription says messages may have been lost"
    );
    publish(&backend, b"after", deadline).await;
    loop {
        match next(&mut sub, deadline, "a message after the restart").await {
            KvEvent::Message(m) => {
                assert_eq!(m, b"after".to_vec());
                break;
            }
            // Another reconnect on the way up is allowed.
            KvEvent::Reset => continue,
        }
    }

    drop(backend);
    let deadline = Instant::now() + PATIENCE;
    loop {
        match timeout_at(deadline, sub.next()).await {
            Ok(None) => break,
            Ok(Some(_)) => continue,
            Err(_) => panic!("the subscription should end once the backend is dropped"),
        }
    }
}
