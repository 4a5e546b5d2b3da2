//! The cache keeps answering while its Redis is down (L1 for what it holds, the loader for
//! the rest, single-flighted), and goes back to the L2 by itself once Redis returns.
//! Against a `redis-server` the testkit starts, killed and restarted on purpose.

use celeriac::cache::Cache;
use celeriac_core::KvStore;
use celeriac_redis::RedisBackend;
use celeriac_testkit::RedisServer;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const PATIENCE: Duration = Duration::from_secs(30);

/// A private redis-server and a backend on it.
async fn redis() -> (RedisServer, Arc<RedisBackend>) {
    let server = RedisServer::start().await.expect("redis-server starts");
    let backend = RedisBackend::connect(&server.url())
        .await
        .expect("connects");
    (server, Arc::new(backend))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cache_serves_through_a_redis_outage_and_returns_to_its_l2() {
    let (mut server, backend) = redis().await;
    let cache: Cache<str, String, RedisBackend> = Cache::builder("outage")
        .ttl(Duration::from_secs(600))
        .l2_timeout(Duration::from_millis(200))
        .build(backend.clone())
        .await
        .expect("builds");
    let loads = Arc::new(AtomicU64::new(0));
    let loader = |value: &str| {
        let loads = loads.clone();
        let value = value.to_string();
        move || async move {
            loads.fetch_add(1, Ordering::SeqCst);
            value
        }
    };
    assert_eq!(
        cache.get_with("held", loader("v1")).await.expect("loads"),
        "v1"
    );

    server.kill();
    // What L1 holds is served; a new key is loaded, once for many concurrent readers.
    for _ in 0..20 {
        assert_eq!(
            cache.get_with("held", loader("other")).await.expect("L1"),
            "v1"
        );
    }
    let mut readers = tokio::task::JoinSet::new();
    for _ in 0..50 {
        let cache = cache.clone();
        let load = loader("fresh");
        readers.spawn(async move {
            cache
                .get_with("new", move || async move {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    load().await
                })
                .await
        });
    }
    while let Some(r) = readers.join_next().await {
        assert_eq!(r.expect("task").expect("answered without Redis"), "fresh");
    }
    assert_eq!(
        loads.load(Ordering::SeqCst),
        2,
        "one load of the new key, single-flighted"
    );
    assert!(cache.stats().l2_errors > 0, "the outage was counted");
    assert!(!cache.l2_available(), "the L2 breaker is open");

    server.restart().await.expect("redis-server restarts");
    // Back on L2 by itself: a value written through the cache reaches Redis.
    let deadline = Instant::now() + PATIENCE;
    let mut n = 0;
    loop {
        n += 1;
        let key = format!("after-{n}");
        cache
            .get_with(key.as_str(), loader("back"))
            .await
            .expect("answers");
        let stored = backend
            .kv_get(
                vec![cache.storage_key(key.as_str())],
                celeriac_core::clock::system_now_ms(),
            )
            .await;
        if matches!(stored.as_deref(), Ok([Some(_)])) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the cache never went back to its L2"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(cache.l2_available());
}

/// A cache built while Redis is down is not yet subscribed to invalidations. Once it
/// subscribes, it drops whatever its L1 took in meanwhile, since a change made elsewhere in
/// that time sent a message it could not hear.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cache_built_during_an_outage_drops_what_it_held_once_it_subscribes() {
    let (mut server, backend) = redis().await;
    let build = || async {
        let cache: Cache<str, String, RedisBackend> = Cache::builder("late")
            .ttl(Duration::from_secs(600))
            .l2_timeout(Duration::from_millis(200))
            .build(backend.clone())
            .await
            .expect("builds");
        cache
    };
    server.kill();
    let cache = build().await;
    assert!(
        !cache.listening(),
        "nothing to subscribe to while Redis is down"
    );
    let stale = cache
        .get_with("k", || async { "stale".to_string() })
        .await
        .expect("loaded without Redis");
    assert_eq!(stale, "stale");

    server.restart().await.expect("redis-server restarts");
    let other = build().await;
    assert!(
        other.listening(),
        "a cache built with Redis up is subscribed at once"
    );
    other.set("k", "fresh".into()).await.expect("set");

    let deadline = Instant::now() + PATIENCE;
    while !cache.listening() {
        assert!(Instant::now() < deadline, "the cache never subscribed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The L1 copy is gone; the value comes from Redis once the L2 breaker lets reads by.
    loop {
        let seen = cache.get("k").await.expect("read");
        assert_ne!(
            seen.as_deref(),
            Some("stale"),
            "the copy taken during the outage is gone"
        );
        if seen.as_deref() == Some("fresh") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the cache never read Redis again"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
